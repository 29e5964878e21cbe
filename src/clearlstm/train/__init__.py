"""Training runs: the loop (`loop`), checkpoints saved and loaded safely (`checkpoint`) and
several processes (`distributed`). May import `clearlstm.nn` and below.
"""
