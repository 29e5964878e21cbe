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
        if self._fast:  # numpy snapshots laid out for the kernel
            from clearlstm.fused import step_kernels  # numba loads on first use

            first = step_kernels.stream_step_f32 if self.dtype == torch.float32 else None
            self._kernels = first or step_kernels.stream_step_f64, step_kernels.stream_step
            self._packed = [_pack(w, step_kernels.pack_stream_weights) for w in self._weights]
            self._first_at = self._packed[0].ctypes.data  # the array stays in self._packed
            self._sizes = input_size, self._weights[0].w_hh.shape[1]
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
        if self._fast:  # owned (2, B, H) numpy arrays per layer, advanced in place
            self._h = [np.stack([h.numpy(), c.numpy()]) for h, c in zip(h0, c0, strict=True)]
            self._c = None
            self._state_at = self._h[0].ctypes.data  # the first layer's, kept in self._h
        else:
            self._h, self._c = list(h0.clone()), list(c0.clone())

    @property
    def state(self) -> tuple[Tensor, Tensor]:
        """``(h (L, B, P), c (L, B, H))`` after the last step (copies)."""
        if self._h is None:
            raise RuntimeError("LSTM.stream: no state yet; call step() first or pass hx")
        if self._fast:
            h, c = (torch.from_numpy(np.stack([s[k] for s in self._h])) for k in (0, 1))
            return h, c
        return torch.stack(self._h), torch.stack(self._c)

    def step(self, x: Tensor) -> Tensor:
        """Advance one step: ``x (B, I)`` or ``(I,)`` -> ``h`` of the top layer."""
        # Every check reads an attribute (tens of ns): at H = 64 a whole step takes ~5 µs.
        batched = x.ndim == 2
        if x.shape[-1] != self.input_size or not 1 <= x.ndim <= 2 or x.dtype != self.dtype:
            raise ValueError(
                f"LSTM.stream: expected a step of shape (B, {self.input_size}) or "
                f"({self.input_size},) with dtype {self.dtype}; got shape {tuple(x.shape)}, "
                f"dtype {x.dtype}"
            )
        batch = x.shape[0] if batched else 1
        if self._h is None:
            hidden = [(w.w_hh.shape[1], w.w_hh.shape[0] // 4) for w in self._weights]
            h0 = torch.stack([x.new_zeros(batch, p, device=self.device) for p, _ in hidden])
            c0 = torch.stack([x.new_zeros(batch, h, device=self.device) for _, h in hidden])
            self._set_state(h0, c0)
        if self._fast:
            y = self._step_fast(x, batch)
            return torch.from_numpy(y if batched else y[0])
        if not batched:
            x = x[None]
        y = self._step_reference(x)
        return y if batched else y[0]

    def _step_fast(self, x: Tensor, batch: int) -> np.ndarray:
        """The layers' kernels, the first reading ``x`` in place: ``h (B, H)`` of the top."""
        states = self._h
        if states[0].shape[1] != batch:
            raise ValueError(
                f"LSTM.stream: expected a batch of {states[0].shape[1]} (the state's); got {batch}"
            )
        if not x.is_cpu or x.layout != torch.strided:
            raise ValueError(
                f"LSTM.stream: expected a dense CPU step like the weights; got a {x.layout} "
                f"tensor on {x.device}"
            )
        if not x.is_contiguous():
            x = x.contiguous()
        first, step = self._kernels
        inputs, hidden = self._sizes
        y = first(x.data_ptr(), self._first_at, self._state_at, batch, inputs, hidden)
        for layer in range(1, self.num_layers):
            y = step(y, self._packed[layer], states[layer])
        return y

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


def _pack(w: LayerWeights, pack) -> np.ndarray:
    """The layer's weights as one numpy snapshot for the kernel (``pack``)."""
    w_ih, w_hh = w.w_ih.detach(), w.w_hh.detach()
    bias = combined_bias(w.b_ih, w.b_hh)
    bias = w_ih.new_zeros(w_ih.shape[0]) if bias is None else bias.detach()
    return pack(w_ih.numpy(), w_hh.numpy(), bias.numpy())  # a copy: later changes unseen
