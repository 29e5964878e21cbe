"""What a trained model learned: units that track a feature (`cells`), spans where units
switch on together (`spans`), gate statistics (`gates`) and attributions of an output to
past inputs (`attribution`). Computed from `Trace`s on our kernels. May import `clearlstm.nn`
and below.
"""
