"""The LSTM's math and what it records: the reference cell (`cell`), the reference layer that
steps it (`reference`), the record types of one layer-direction (`records`) and the `Trace`
built from them (`trace`). Imports only torch; no other clearlstm package.
"""
