"""Step-at-a-time inference: ``stream = lstm.stream(); y = stream.step(x_t)``.

A :class:`Stream` snapshots an :class:`~clearlstm.LSTM`'s weights (``weights``, one
:class:`~clearlstm.core.records.LayerWeights` per layer) and carries ``(h, c)``
from one call to the next, so feeding a sequence one step per call gives the outputs of the
whole-sequence call (within float rounding). On CPU with float32/float64 and no projection
each step is one small numba call per layer (:func:`clearlstm.fused.step_kernels.stream_step`);
otherwise it steps the reference cell (:func:`clearlstm.core.cell.cell_step`) with torch.

Streaming is inference: no autograd, no dropout (as in ``eval()``), no NaN checks, and only
one direction (a reverse direction needs the whole sequence). Weights changed after
``lstm.stream()`` are not seen; make a new stream.

>>> import torch, clearlstm
>>> lstm = clearlstm.LSTM(3, 5, num_layers=2)
>>> x = torch.randn(4, 2, 3)
>>> stream = lstm.stream()
>>> ys = torch.stack([stream.step(x_t) for x_t in x])
>>> torch.testing.assert_close(ys, lstm(x)[0].detach())
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from clearlstm.core.cell import cell_step, input_projection
from clearlstm.core.records import LayerWeights, combined_bias


class Stream:
    """A stateful stepper over an LSTM's layers. ``step(x_t)``: ``x_t (B, I)`` or ``(I,)``
    gives the top layer's ``h (B, P)`` or ``(P,)``.

    ``hx``: optional ``(h_0 (L, B, P), c_0 (L, B, H))``; zeros of the first step's batch
    size otherwise. :attr:`state` is the current ``(h, c)``, :meth:`reset` starts over.
    """

    def __init__(
        self,
        weights: Sequence[LayerWeights],
        input_size: int,
        bidirectional: bool = False,
        hx: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        if bidirectional:
            raise NotImplementedError(
                "LSTM.stream: a bidirectional LSTM cannot stream, its reverse direction needs "
                "the whole sequence; call the module on the full sequence instead"
            )
        self.input_size, self.num_layers = input_size, len(weights)
        self._weights = list(weights)
        first = self._weights[0].w_ih
        self.dtype, self.device = first.dtype, first.device
        self._fast = (
            self.device.type == "cpu"
            and self.dtype in (torch.float32, torch.float64)
            and self._weights[0].w_hr is None
            and self._weights[0].variant is None  # variants step on the reference cell
        )
        if self._fast:  # numpy snapshots laid out for the kernel's axpys
            from clearlstm.fused.step_kernels import stream_step  # numba loads on first use

            self._kernel = stream_step
            self._packed = [_pack(w) for w in self._weights]
        self.reset(hx)

    def reset(self, hx: tuple[Tensor, Tensor] | None = None) -> None:
        """Start over from ``hx`` (or zeros at the next step)."""
        self._h: list | None = None
        self._c: list | None = None
        if hx is not None:
            h0, c0 = (s.detach().to(self.device, self.dtype) for s in hx)
            if h0.dim() != 3 or h0.shape[0] != self.num_layers:
                raise ValueError(
                    f"LSTM.stream: expected h_0 of shape ({self.num_layers}, B, P); got "
                    f"{tuple(h0.shape)}"
                )
            self._set_state(h0, c0)

    def _set_state(self, h0: Tensor, c0: Tensor) -> None:
        if self._fast:  # owned numpy arrays, advanced in place by the kernel
            self._h = [h.numpy().copy() for h in h0]
            self._c = [c.numpy().copy() for c in c0]
        else:
            self._h, self._c = list(h0.clone()), list(c0.clone())

    @property
    def state(self) -> tuple[Tensor, Tensor]:
        """``(h (L, B, P), c (L, B, H))`` after the last step (copies)."""
        if self._h is None:
            raise RuntimeError("LSTM.stream: no state yet; call step() first or pass hx")
        if self._fast:
            return torch.from_numpy(np.stack(self._h)), torch.from_numpy(np.stack(self._c))
        return torch.stack(self._h), torch.stack(self._c)

    def step(self, x: Tensor) -> Tensor:
        """Advance one step: ``x (B, I)`` or ``(I,)`` -> ``h`` of the top layer."""
        batched = x.dim() == 2
        if x.shape[-1] != self.input_size or not 1 <= x.dim() <= 2 or x.dtype != self.dtype:
            raise ValueError(
                f"LSTM.stream: expected a step of shape (B, {self.input_size}) or "
                f"({self.input_size},) with dtype {self.dtype}; got shape {tuple(x.shape)}, "
                f"dtype {x.dtype}"
            )
        if not batched:
            x = x[None]
        if self._h is None:
            hidden = [(w.w_hh.shape[1], w.w_hh.shape[0] // 4) for w in self._weights]
            h0 = torch.stack([x.new_zeros(x.shape[0], p) for p, _ in hidden])
            c0 = torch.stack([x.new_zeros(x.shape[0], h) for _, h in hidden])
            self._set_state(h0, c0)
        y = self._step_fast(x) if self._fast else self._step_reference(x)
        return y if batched else y[0]

    def _step_fast(self, x: Tensor) -> Tensor:
        step = self._kernel
        layer_in = np.ascontiguousarray(x.detach().numpy())
        if layer_in.shape[0] != self._h[0].shape[0]:
            raise ValueError(
                f"LSTM.stream: expected a batch of {self._h[0].shape[0]} (the state's); got "
                f"{layer_in.shape[0]}"
            )
        for layer, (w_ih_t, whh_t, bias, z) in enumerate(self._packed):
            h = self._h[layer]
            out = np.empty((1, *h.shape), h.dtype)
            if z.shape[0] != h.shape[0]:
                z = self._packed[layer][3] = np.empty((h.shape[0], z.shape[1]), z.dtype)
            step(layer_in, w_ih_t, whh_t, bias, h, self._c[layer], z, out)
            layer_in = out[0]
        return torch.from_numpy(layer_in)

    def _step_reference(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            layer_in = x
            for layer, w in enumerate(self._weights):
                xw = input_projection(layer_in, w.w_ih, w.b_ih, w.layer_norm)
                s = cell_step(xw, self._h[layer], self._c[layer], w.w_hh, w.b_hh, w.w_hr,
                              **w.cell_kwargs())  # fmt: skip
                self._h[layer], self._c[layer] = s.h, s.c
                layer_in = s.h
        return layer_in


def _pack(w) -> list:
    """``[w_ih.T (I, G), w_hh.T (H, G), b_ih + b_hh (G,), scratch (1, G)]`` as numpy."""
    w_ih, w_hh = w.w_ih.detach(), w.w_hh.detach()
    gates = w_ih.shape[0]
    bias = combined_bias(w.b_ih, w.b_hh)
    bias = w_ih.new_zeros(gates) if bias is None else bias.detach().clone()  # a snapshot
    return [
        w_ih.t().contiguous().numpy(),
        w_hh.t().contiguous().numpy(),
        bias.numpy(),
        np.empty((1, gates), w_ih.numpy().dtype),
    ]
