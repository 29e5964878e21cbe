"""``LSTMCell``: a drop-in replacement for torch.nn.LSTMCell, one step of the seed's unit
(:func:`clearlstm.core.cell.lstm_cell`), with its gates on request.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from clearlstm.core.cell import CellStep, lstm_cell
from clearlstm.core.records import LayerMasks, LayerWeights, Variant, draw_masks
from clearlstm.nn import checks, variants

State = tuple[Tensor, Tensor]


class LSTMCell(variants.VariantArguments, nn.Module):
    r"""One LSTM step, compatible with :class:`torch.nn.LSTMCell`.

    ``cell(input, hx=None, *, trace=False)``: ``input (B, I)`` or ``(I,)``; ``hx = (h, c)``
    each ``(B, H)`` or ``(H,)``. Returns ``(h_1, c_1)``; with ``trace=True`` also the step's
    :class:`~clearlstm.core.cell.CellStep` (every gate and pre-activation, detached).

    The variant keywords are ``LSTM``'s (:mod:`clearlstm.nn.variants`); with ``peephole`` the
    cell holds ``weight_peephole (3, H)``, rows ``p_i, p_f, p_o``; with ``layer_norm``
    ``ln_weight_ih``, ``ln_bias_ih``, ``ln_weight_hh``, ``ln_bias_hh`` ``(4H,)`` and
    ``ln_weight_c``, ``ln_bias_c`` ``(H,)``. In training, zoneout draws its masks at every
    call; the variational dropout masks must stay the same over a sequence, so a training
    call with ``recurrent_dropout`` or ``input_dropout`` takes them: ``masks =
    cell.draw_masks(batch)`` once per sequence, then ``cell(x_t, hx, masks=masks)``.
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
        layer_norm: bool = False,
        zoneout_h: float = 0.0,
        zoneout_c: float = 0.0,
        recurrent_dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        owner = "LSTMCell"
        checks.check_size(owner, "input_size", input_size)
        checks.check_size(owner, "hidden_size", hidden_size)
        checks.check_dtype(owner, dtype)
        self._variant = variants.check_variant(
            owner, peephole, coupled_input_forget, cell_clip, layer_norm, zoneout_h=zoneout_h,
            zoneout_c=zoneout_c, recurrent_dropout=recurrent_dropout, input_dropout=input_dropout,
        )  # fmt: skip
        variants.check_init(owner, forget_bias, init, chrono_max_steps, bias)
        self.forget_bias, self.init, self.chrono_max_steps = forget_bias, init, chrono_max_steps
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.check_finite = check_finite
        factory = {"device": device, "dtype": dtype}
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self._register_variant_parameters([""], hidden_size, factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter uniform in ``±1/sqrt(H)`` (the peepholes
        too), then ``forget_bias`` or ``init="chrono"`` (:mod:`clearlstm.nn.variants`)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        self._reset_layer_norm([""])
        if self.bias and (self.forget_bias is not None or self.init == "chrono"):
            variants.init_gate_biases(
                self.bias_ih, self.bias_hh, self.forget_bias, self.init, self.chrono_max_steps
            )

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
        return text + self._variant_repr()

    def draw_masks(self, batch: int) -> LayerMasks:
        """A sequence's variational dropout masks (input ``(B, I)``, recurrent ``(B, H)``),
        from torch's default generator; pass them as ``masks=`` at each of its steps."""
        v = self._variant or Variant()
        w = self.weight_ih
        return draw_masks(v, 1, batch, self.input_size, self.hidden_size, self.hidden_size, w)

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
        self,
        input: Tensor,
        hx: State | None = None,
        *,
        trace: bool = False,
        masks: LayerMasks | None = None,
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
            step = lstm_cell(*args, **self._step_kwargs(x, masks))
        h1, c1 = (step.h, step.c) if batched else (step.h[0], step.c[0])
        if not trace:
            return h1, c1
        return (h1, c1), CellStep(*(v.detach() for v in step))

    def _step_kwargs(self, x: Tensor, masks: LayerMasks | None) -> dict:
        """:func:`clearlstm.core.cell.lstm_cell`'s variant keywords for this call."""
        v = self._variant
        kwargs = LayerWeights(self.weight_ih, self.weight_hh, None, None, None,
                              getattr(self, "weight_peephole", None), v,
                              self._layer_norm_weights("")).cell_kwargs()  # fmt: skip
        if not self.training:
            return kwargs
        needs = v.recurrent_dropout or v.input_dropout
        if needs and masks is None:
            raise ValueError(
                "LSTMCell: in training, recurrent_dropout and input_dropout use one mask per "
                "sequence: draw it with masks = cell.draw_masks(batch) and pass masks=masks "
                "at every step of the sequence; got masks=None"
            )
        if needs:
            batch = x.shape[0]
            for name, mask, size in (
                ("input", masks.input, self.input_size),
                ("recurrent", masks.recurrent, self.hidden_size),
            ):
                if mask is not None and tuple(mask.shape) != (batch, size):
                    raise ValueError(
                        f"LSTMCell: masks.{name} must have shape ({batch}, {size}); got "
                        f"{tuple(mask.shape)}"
                    )  # fmt: skip
            kwargs["recurrent_mask"] = masks.recurrent
            kwargs["input_mask"] = masks.input
        if kwargs.get("zoneout") is not None:  # a fresh mask per unit at every step
            kwargs["zoneout"] = tuple(
                r if not r else torch.bernoulli(torch.full((x.shape[0], self.hidden_size), r,
                                                           dtype=x.dtype, device=x.device))
                for r in kwargs["zoneout"]
            )  # fmt: skip
        return kwargs
