"""The fast CPU backend: numba kernels for the whole sequence, per step, for tiny calls and
split across threads, the deterministic choice between them (`dispatch`), the GEMMs around
them and their autograd Functions. May import `clearlstm.core` only; the kernel modules
import no autograd module.
"""

KERNELS = ("small", "sequence", "split", "blas")  # the names LSTM(kernel=...) accepts
