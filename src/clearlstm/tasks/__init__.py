"""What users train LSTMs on: series and text data, bundled datasets, the forecasting and
character models, the classical baselines and the series and text runs. May import
`clearlstm.teach`, `clearlstm.train`, `clearlstm.nn` and below.
"""
