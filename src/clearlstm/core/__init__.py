"""The LSTM's math and what it records: the reference cell (`cell`), the record types of one
layer-direction (`records`) and the `Trace` built from them (`trace`). Imports only torch
(and `clearlstm.errors`).
"""
