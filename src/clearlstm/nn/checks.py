"""Argument checks with errors a user can act on: who, which argument, expected, received."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from numbers import Integral

import torch
from torch import Tensor

from clearlstm.core.records import LayerWeights, step_mask


def check_size(owner: str, name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}; got {value!r}")
    return value


def check_dtype(owner: str, dtype: torch.dtype | None) -> None:
    if dtype is not None and not dtype.is_floating_point:
        raise TypeError(f"{owner}: dtype must be a floating-point dtype; got {dtype}")


def check_tensor(owner: str, name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor; got {type(value).__name__}")
    return value


def check_shape(owner: str, name: str, tensor: Tensor, expected: Sequence[int], what: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(
            f"{owner}: expected {name} of shape {tuple(expected)} {what}; "
            f"got shape {tuple(tensor.shape)}"
        )


def check_like(owner: str, name: str, tensor: Tensor, reference: Tensor, reference_name: str):
    """Same dtype and device as ``reference``: clearlstm never converts silently."""
    if tensor.dtype != reference.dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {tensor.dtype} but the dtype of {reference_name} is "
            f"{reference.dtype}; convert one of them (e.g. module.to({tensor.dtype}))"
        )
    if tensor.device != reference.device:
        raise ValueError(
            f"{owner}: {name} is on device {tensor.device} but the device of {reference_name} "
            f"is {reference.device}; move them to the same device"
        )


# Up to this many entries a numba pass (~1 µs a tensor) beats torch's sum + isfinite (~4 µs);
# above it torch's multi-threaded reduction is faster.
_NUMBA_MAX_NUMEL = 1 << 18
_NUMBA_DTYPES = (torch.float32, torch.float64)


@cache
def _kernels():
    """:mod:`clearlstm.fused.kernels`, imported on first use (numba loads slowly)."""
    from clearlstm.fused import kernels

    return kernels


def _count_nonfinite(tensor: Tensor) -> int:
    small = tensor.is_cpu and tensor.dtype in _NUMBA_DTYPES and tensor.numel() <= _NUMBA_MAX_NUMEL
    if small:
        return _kernels().count_nonfinite(tensor.numpy())
    # A finite sum proves every entry finite (NaN and Inf propagate) in one fast reduction;
    # only a non-finite sum (which may also be an overflow) needs the elementwise test.
    if bool(torch.isfinite(tensor.sum())):
        return 0
    return int((~torch.isfinite(tensor)).sum())


def check_finite(owner: str, named: Iterable[tuple[str, Tensor]]) -> None:
    """Raise on NaN/Inf in any of the ``(name, detached tensor)`` pairs."""
    for name, tensor in named:
        bad = _count_nonfinite(tensor)
        if bad:
            raise ValueError(
                f"{owner}: {name} contains {bad} non-finite value(s) (NaN or Inf); "
                "clean the data, or pass check_finite=False to the module to allow them"
            )


def check_call_finite(
    owner: str,
    x: Tensor,
    lengths: Tensor | None,
    h0: Tensor | None,
    c0: Tensor | None,
    weights: Sequence[LayerWeights],
    directions: int = 1,
) -> None:
    """The NaN/Inf policy of one forward call: raise naming the first of the input (only the
    steps the LSTM reads, ``x (T, B, I)``), the initial state and the weights (named as the
    module's parameters, ``weight_ih_l0`` ...) that holds NaN or Inf."""
    valid = x if lengths is None else x[step_mask(lengths.to(x.device), x.shape[0])]
    named = [("input", valid.detach())]
    if h0 is not None:  # the default zeros need no check
        named += [("h_0", h0.detach()), ("c_0", c0.detach())]
    for k, layer_weights in enumerate(weights):
        suffix = f"_l{k // directions}" + ("_reverse" if k % directions else "")
        for name, w in zip(_WEIGHT_NAMES, layer_weights[:6], strict=True):
            if w is not None:
                named.append((f"parameter {name}{suffix}", w.detach()))
        for name, w in zip(_LN_NAMES, layer_weights.layer_norm or (), strict=False):
            named.append((f"parameter {name}{suffix}", w.detach()))
    check_finite(owner, named)


_WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr", "weight_peephole")
_LN_NAMES = tuple("ln_" + n for n in ("weight_ih", "bias_ih", "weight_hh", "bias_hh", "weight_c",
                                      "bias_c"))  # fmt: skip


def check_lengths(owner: str, lengths: object, batch: int, steps: int) -> Tensor:
    """``lengths`` as an int64 CPU tensor ``(B,)`` with every entry in ``[1, T]``."""
    if isinstance(lengths, Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"{owner}: lengths must hold integers; got dtype {lengths.dtype}")
        values = lengths.detach().to("cpu", torch.int64)
    else:
        items = list(lengths) if isinstance(lengths, Iterable) else None
        # Integral also admits numpy's integers (a NumPy array of lengths); bool is no length.
        integers = items is not None and all(
            isinstance(v, Integral) and not isinstance(v, bool) for v in items
        )
        if not integers:
            raise TypeError(
                f"{owner}: lengths must be a 1-D integer tensor or a list of ints; got {lengths!r}"
            )
        values = torch.tensor(items, dtype=torch.int64)
    if values.dim() != 1 or values.numel() != batch:
        raise ValueError(
            f"{owner}: expected lengths with one entry per sequence ({batch}); "
            f"got shape {tuple(values.shape)}"
        )
    if bool((values < 1).any()) or bool((values > steps).any()):
        raise ValueError(
            f"{owner}: every length must be between 1 and the sequence length {steps}; "
            f"got {values.tolist()}"
        )
    return values
