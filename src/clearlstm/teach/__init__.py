"""The seed's worked example: StatQuest's unit and the companies' sequences (`seed`), a unit's
weights by name (`unit`) and the stage-by-stage walkthrough (`explain`). May import
`clearlstm.nn` and below.
"""
