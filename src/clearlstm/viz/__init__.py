"""Pictures and reports of what a model computes: figures, the HTML report, and the subjects
they show (a unit, or a saved model on a sequence). May import `clearlstm.tasks` and below.
"""
