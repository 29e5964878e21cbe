"""Pictures and reports of what a model computes: figures, the HTML report (with a saved
model's analysis: ranked cells, gate saturation, attributions), and the subjects they show (a
unit, or a saved model on a sequence). May import `clearlstm.tasks` and below.
"""
