"""The PyTorch-compatible modules `LSTM` and `LSTMCell`, the one forward entry they call
(`functional.lstm`: backend choice, padding, NaN/Inf policy, initial states), their argument
checks and step-by-step streaming. May import `clearlstm.fused` and `clearlstm.core`.
"""
