"""``LSTMCell``: a drop-in replacement for torch.nn.LSTMCell, one step of the seed's unit
(:func:`clearlstm.core.cell.lstm_cell`), with its gates on request.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clearlstm.core.cell import CellStep, lstm_cell
from clearlstm.nn import checks, variants

State = tuple[Tensor, Tensor]


class LSTMCell(nn.Module):
    r"""One LSTM step, compatible with :class:`torch.nn.LSTMCell`.

    ``cell(input, hx=None, *, trace=False)``: ``input (B, I)`` or ``(I,)``; ``hx = (h, c)``
    each ``(B, H)`` or ``(H,)``. Returns ``(h_1, c_1)``; with ``trace=True`` also the step's
    :class:`~clearlstm.core.cell.CellStep` (every gate and pre-activation, detached).

    The variant keywords are ``LSTM``'s (:mod:`clearlstm.nn.variants`); with ``peephole`` the
    cell holds ``weight_peephole (3, H)``, rows ``p_i, p_f, p_o``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        check_finite: bool = True,
        forget_bias: float | None = None,
        init: str = "torch",
        chrono_max_steps: int | None = None,
        peephole: bool = False,
        coupled_input_forget: bool = False,
        cell_clip: float | None = None,
    ) -> None:
        super().__init__()
        owner = "LSTMCell"
        checks.check_size(owner, "input_size", input_size)
        checks.check_size(owner, "hidden_size", hidden_size)
        checks.check_dtype(owner, dtype)
        self._variant = variants.check_variant(owner, peephole, coupled_input_forget, cell_clip)
        variants.check_init(owner, forget_bias, init, chrono_max_steps, bias)
        self.forget_bias, self.init, self.chrono_max_steps = forget_bias, init, chrono_max_steps
        self.peephole, self.coupled_input_forget = peephole, coupled_input_forget
        self.cell_clip = self._variant and self._variant.cell_clip
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.check_finite = check_finite
        factory = {"device": device, "dtype": dtype}
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        if peephole:  # rows p_i, p_f, p_o (see clearlstm.core.cell)
            self.weight_peephole = nn.Parameter(torch.empty(3, hidden_size, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter uniform in ``±1/sqrt(H)`` (the peepholes
        too), then ``forget_bias`` or ``init="chrono"`` (:mod:`clearlstm.nn.variants`)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        if self.bias and (self.forget_bias is not None or self.init == "chrono"):
            variants.init_gate_biases(
                self.bias_ih, self.bias_hh, self.forget_bias, self.init, self.chrono_max_steps
            )

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
        for name, default in variants.DEFAULTS.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text

    def variant_config(self) -> dict:
        """The variant and initialisation arguments of the constructor (JSON-ready)."""
        return {name: getattr(self, name) for name in variants.DEFAULTS}

    @classmethod
    def from_torch(cls, module: nn.LSTMCell, **kwargs) -> LSTMCell:
        w = module.weight_ih
        new = cls(module.input_size, module.hidden_size, module.bias, w.device, w.dtype, **kwargs)
        new.load_state_dict(module.state_dict())
        return new

    def to_torch(self) -> nn.LSTMCell:
        if self._variant is not None:
            raise NotImplementedError(
                f"LSTMCell.to_torch: torch.nn.LSTMCell has no {self._variant}; only a plain "
                "cell converts"
            )
        w = self.weight_ih
        module = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, w.device, w.dtype)
        module.load_state_dict(self.state_dict())
        return module

    def forward(
        self, input: Tensor, hx: State | None = None, *, trace: bool = False
    ) -> State | tuple[State, CellStep]:
        owner = "LSTMCell"
        x = checks.check_tensor(owner, "input", input)
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"LSTMCell: expected input of shape (B, {self.input_size}) or "
                f"({self.input_size},); got shape {tuple(x.shape)}"
            )
        if x.dim() == 2 and x.shape[0] == 0:
            raise ValueError("LSTMCell: input is empty: got a batch of 0 sequences")
        checks.check_like(owner, "input", x, self.weight_ih, "the weights")
        batched = x.dim() == 2
        x = x if batched else x.unsqueeze(0)
        if hx is None:
            h = c = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"LSTMCell: hx must be a tuple (h, c); got {type(hx).__name__}")
            expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
            what = "(batch, hidden_size)" if batched else "(hidden_size,) for unbatched input"
            for name, state in zip(("h", "c"), hx, strict=True):
                checks.check_tensor(owner, name, state)
                checks.check_shape(owner, name, state, expected, what)
                checks.check_like(owner, name, state, x, "input")
            h, c = (s if batched else s.unsqueeze(0) for s in hx)
        if self.check_finite:
            named = [("input", x), ("h", h), ("c", c)]
            named += [("parameter " + n, p) for n, p in self.named_parameters()]
            checks.check_finite(owner, [(name, t.detach()) for name, t in named])
        args = (x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if self._variant is None:
            step = lstm_cell(*args)
        else:
            v = self._variant
            step = lstm_cell(
                *args,
                peephole=self.weight_peephole if v.peephole else None,
                coupled_input_forget=v.coupled_input_forget,
                cell_clip=v.cell_clip,
            )
        h1, c1 = (step.h, step.c) if batched else (step.h[0], step.c[0])
        if not trace:
            return h1, c1
        return (h1, c1), CellStep(*(v.detach() for v in step))
