"""``LSTM`` and ``LSTMCell``: drop-in replacements for torch.nn.LSTM / nn.LSTMCell.

Same constructor, parameter names, shapes, initialisation and return values, so a torch
state_dict loads as it is. What they add: ``lengths=`` for padded batches, ``trace=True``
for every gate at every step (:class:`~clearlstm.core.trace.Trace`), and errors that say what is
wrong. The math lives in :mod:`clearlstm.cell`; these classes hold parameters, check
arguments and call :func:`clearlstm.nn.functional.lstm` once per forward (a one-layer,
one-direction ``LSTM`` first offers the call to
:func:`clearlstm.nn.functional.one_layer_forward`, the fused kernels with nothing around them).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from clearlstm.core.cell import CellStep, lstm_cell
from clearlstm.core.records import LayerRecord, LayerWeights, step_mask
from clearlstm.core.trace import Trace
from clearlstm.nn import checks
from clearlstm.nn.functional import BACKENDS, Backend, lstm, one_layer_forward
from clearlstm.nn.streaming import Stream

State = tuple[Tensor, Tensor]


def _check_dtype(owner: str, dtype: torch.dtype | None) -> None:
    if dtype is not None and not dtype.is_floating_point:
        raise TypeError(f"{owner}: dtype must be a floating-point dtype; got {dtype}")


def _check_finite_weights(owner: str, module: nn.Module) -> None:
    """NaN/Inf in any parameter raise. Checked on every call: a cache keyed on the tensors'
    version counters misses writes through ``param.data``, which bump no counter."""
    # Without submodules (parametrizations add some) the module's own dict lists them all.
    params = module.named_parameters() if module._modules else module._parameters.items()
    named = (("parameter " + n, p.detach()) for n, p in params if p is not None)
    checks.check_finite(owner, named)


class LSTM(nn.Module):
    r"""A multi-layer LSTM over sequences, compatible with :class:`torch.nn.LSTM`.

    Each step of each layer runs the seed's unit (:mod:`clearlstm.cell`): the forget gate
    sets how much long-term memory is retained, the input gate how much potential memory is
    added, the output gate how much of ``tanh(c)`` becomes the short-term memory.

    ============  =====================================================================
    ``T``         sequence length           ``B``  batch size
    ``I``         ``input_size``            ``H``  ``hidden_size``
    ``P``         ``proj_size`` or ``H``    ``D``  2 if bidirectional else 1
    ``L``         ``num_layers``
    ============  =====================================================================

    Call ``lstm(input, hx=None, *, lengths=None, trace=False)``:

    - ``input``: ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, unbatched ``(T, I)``, or a
      :class:`~torch.nn.utils.rnn.PackedSequence`.
    - ``hx``: optional ``(h_0, c_0)`` of shapes ``(L*D, B, P)`` and ``(L*D, B, H)``
      (without the ``B`` axis for unbatched input).
    - ``lengths``: valid steps per sequence of a padded batch; padded steps neither change
      the state nor appear in the output (they are zero there).
    - ``trace``: also return a :class:`~clearlstm.core.trace.Trace` of every gate at every step.

    Returns ``output, (h_n, c_n)`` — plus the trace with ``trace=True`` — where ``output`` is
    ``(T, B, D*P)`` (or packed, or batch-first, like the input).

    Extra keyword-only arguments: ``check_finite`` (default True: NaN/Inf in the input, the
    state or the weights raise an error; False lets them through) and ``backend``
    (``"auto"``, ``"reference"``, ``"fused"`` or ``"torch"``; see
    :mod:`clearlstm.functional` for which path ``"auto"`` takes).

    >>> import torch, clearlstm
    >>> lstm = clearlstm.LSTM(input_size=3, hidden_size=5, num_layers=2)
    >>> output, (h_n, c_n), trace = lstm(torch.randn(7, 2, 3), trace=True)
    >>> output.shape, h_n.shape, trace[1, 0].forget_gate.shape
    (torch.Size([7, 2, 5]), torch.Size([2, 2, 5]), torch.Size([7, 2, 5]))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        check_finite: bool = True,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        owner = "LSTM"
        checks.check_size(owner, "input_size", input_size)
        checks.check_size(owner, "hidden_size", hidden_size)
        checks.check_size(owner, "num_layers", num_layers)
        checks.check_size(owner, "proj_size", proj_size, minimum=0)
        if proj_size >= hidden_size:
            raise ValueError(
                f"LSTM: proj_size must be smaller than hidden_size ({hidden_size}); got {proj_size}"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"LSTM: dropout must be a number in [0, 1]; got {dropout!r}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"LSTM: dropout must be in [0, 1]; got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "LSTM: dropout applies between layers, so it has no effect with num_layers=1",
                stacklevel=2,
            )
        if backend not in BACKENDS:
            raise ValueError(f"LSTM: backend must be one of {BACKENDS}; got {backend!r}")
        _check_dtype(owner, dtype)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.check_finite = check_finite
        self.backend = backend

        factory = {"device": device, "dtype": dtype}
        gates, out_size = 4 * hidden_size, proj_size or hidden_size
        for layer in range(num_layers):
            for direction in range(self.num_directions):
                layer_in = input_size if layer == 0 else out_size * self.num_directions
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                # Registration order equals torch's, so the same seed gives the same weights.
                self._add(f"weight_ih{sfx}", (gates, layer_in), factory)
                self._add(f"weight_hh{sfx}", (gates, out_size), factory)
                if bias:
                    self._add(f"bias_ih{sfx}", (gates,), factory)
                    self._add(f"bias_hh{sfx}", (gates,), factory)
                if proj_size:
                    self._add(f"weight_hr{sfx}", (proj_size, hidden_size), factory)
        self.reset_parameters()

    def _add(self, name: str, shape: tuple[int, ...], factory: dict) -> None:
        self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter uniform in ``±1/sqrt(H)``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn.LSTM (which needs it for cuDNN)."""

    def layer_weights(self, layer: int, direction: int = 0) -> LayerWeights:
        """The parameters of one layer-direction in torch's layout."""
        sfx = f"_l{layer}" + ("_reverse" if direction else "")
        params = self._parameters  # read directly: nn.Module.__getattr__ costs ~0.5 µs a name

        def get(name: str) -> Tensor | None:
            name += sfx  # parametrized weights (torch.nn.utils.parametrize) are properties
            return params[name] if name in params else getattr(self, name, None)

        return LayerWeights(
            get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")
        )

    def stream(self, hx: State | None = None) -> Stream:
        """A stateful stepper for step-at-a-time inference: ``y = stream.step(x_t)``.

        ``hx``: optional ``(h_0 (L, B, P), c_0 (L, B, H))``. Snapshots the current weights;
        see :class:`clearlstm.nn.streaming.Stream`.
        """
        return Stream(self, hx)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0}
        defaults |= {"bidirectional": False, "proj_size": 0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text

    @classmethod
    def from_torch(cls, module: nn.LSTM, **kwargs) -> LSTM:
        """A clearlstm.LSTM with the configuration and weights of a torch.nn.LSTM."""
        weight = module.weight_ih_l0
        new = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            module.dropout,
            module.bidirectional,
            module.proj_size,
            device=weight.device,
            dtype=weight.dtype,
            **kwargs,
        )
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    def to_torch(self) -> nn.LSTM:
        """A torch.nn.LSTM with this module's configuration and weights."""
        weight = self.weight_ih_l0
        module = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            self.proj_size,
            device=weight.device,
            dtype=weight.dtype,
        )
        module.load_state_dict(self.state_dict())
        return module.train(self.training)

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        *,
        lengths: Tensor | list[int] | None = None,
        trace: bool = False,
    ) -> tuple[Tensor | PackedSequence, State] | tuple[Tensor | PackedSequence, State, Trace]:
        owner = "LSTM"
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(
                    "LSTM: pass lengths= only with a padded tensor, not with a PackedSequence"
                )
            x, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
            batched = True
        else:
            x = checks.check_tensor(owner, "input", input)
            batched = x.dim() == 3
            if x.dim() not in (2, 3):
                raise ValueError(
                    f"LSTM: expected input of shape (T, B, {self.input_size}), batch-first "
                    f"(B, T, {self.input_size}) or unbatched (T, {self.input_size}); got a "
                    f"{x.dim()}-D tensor of shape {tuple(x.shape)}"
                )
            x = (x.transpose(0, 1) if self.batch_first else x) if batched else x.unsqueeze(1)
        steps, batch, features = x.shape
        layout = "(B, T, I)" if self.batch_first and batched and not packed else "(T, B, I)"
        if features != self.input_size:
            raise ValueError(
                f"LSTM: expected input with {self.input_size} features (input_size), laid out "
                f"{layout if batched else '(T, I)'}; got {features} features in shape "
                f"{tuple(input.data.shape if packed else input.shape)}"
            )
        if steps == 0 or batch == 0:
            raise ValueError(
                f"LSTM: input is empty: needs at least one step and one sequence; got "
                f"{steps} step(s) and {batch} sequence(s)"
            )
        reference = self.weight_ih_l0
        checks.check_like(owner, "input", x, reference, "the weights")
        if lengths is not None:
            lengths = checks.check_lengths(owner, lengths, batch, steps)
        h0, c0 = (None, None) if hx is None else self._initial_state(hx, x, batch, batched)
        direct = self._one_layer_forward(x, h0, c0, lengths, trace)
        if direct is not None:
            output, h_n, c_n, record = direct
            records = [[record]]
        else:
            output, h_n, c_n, records = self._general(x, hx, h0, c0, lengths, batched, trace)

        if packed:
            order = input.sorted_indices
            sorted_out = output if order is None else output.index_select(1, order)
            sorted_lengths = lengths if order is None else lengths[order.cpu()]
            data = pack_padded_sequence(sorted_out, sorted_lengths).data
            output = PackedSequence(
                data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
        elif not batched:
            output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        elif self.batch_first:
            output = output.transpose(0, 1)
        if not trace:
            return output, (h_n, c_n)
        all_steps = torch.full((batch,), steps, dtype=torch.int64) if lengths is None else lengths
        return output, (h_n, c_n), Trace(tuple(tuple(r) for r in records), all_steps)

    def _one_layer_forward(
        self,
        x: Tensor,
        h0: Tensor | None,
        c0: Tensor | None,
        lengths: Tensor | None,
        trace: bool,
    ) -> tuple[Tensor, Tensor, Tensor, LayerRecord | None] | None:
        """A one-layer, one-direction call straight to the fused kernels
        (:func:`~clearlstm.nn.functional.one_layer_forward`): ``(output (T, B, H), h_n, c_n
        (1, B, H), record or None)``; None for any other call. ``x (T, B, I)``."""
        # _modules: parametrized weights (torch.nn.utils.parametrize) are computed properties
        if self.num_layers > 1 or self.bidirectional or self.proj_size or self._modules:
            return None
        state = (None, None) if h0 is None else (h0[0], c0[0])
        p = self._parameters  # no parametrizations: every weight is here
        weights = LayerWeights(
            p["weight_ih_l0"], p["weight_hh_l0"], p.get("bias_ih_l0"), p.get("bias_hh_l0"), None
        )
        args = (lengths, trace, self.backend, self.check_finite)
        return one_layer_forward(x, *state, weights, *args)

    def _general(self, x, hx, h0, c0, lengths, batched, trace):
        """Any call: checks, then :func:`~clearlstm.nn.functional.lstm` over every layer."""
        steps, batch, _ = x.shape
        if h0 is None:
            h0, c0 = self._initial_state(None, x, batch, batched)
        if self.check_finite:
            # Only the steps the LSTM reads: padding may hold anything.
            valid = x if lengths is None else x[step_mask(lengths, steps)]
            named = [("input", valid.detach())]
            if hx is not None:  # the default zeros need no check
                named += [("h_0", h0.detach()), ("c_0", c0.detach())]
            checks.check_finite("LSTM", named)
            _check_finite_weights("LSTM", self)
        weights = [
            self.layer_weights(layer, direction)
            for layer in range(self.num_layers)
            for direction in range(self.num_directions)
        ]
        return lstm(
            x,
            h0,
            c0,
            weights,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            lengths=lengths,
            record=trace,
            backend=self.backend,
        )

    def _initial_state(self, hx: State | None, x: Tensor, batch: int, batched: bool) -> State:
        """``(h_0 (L*D, B, P), c_0 (L*D, B, H))``, zeros when ``hx`` is None."""
        stacked = self.num_layers * self.num_directions
        out_size = self.proj_size or self.hidden_size
        if hx is None:
            h0 = x.new_zeros(stacked, batch, out_size)
            return h0, x.new_zeros(stacked, batch, self.hidden_size)
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(
                f"LSTM: hx must be a tuple (h_0, c_0) of two tensors; got {type(hx).__name__}"
            )
        h0 = checks.check_tensor("LSTM", "h_0", hx[0])
        c0 = checks.check_tensor("LSTM", "c_0", hx[1])
        what = "(num_layers * num_directions, batch, size)"
        expected_h, expected_c = (stacked, batch, out_size), (stacked, batch, self.hidden_size)
        if not batched:
            expected_h, expected_c = (stacked, out_size), (stacked, self.hidden_size)
            what = "(num_layers * num_directions, size) for unbatched input"
        checks.check_shape("LSTM", "h_0", h0, expected_h, what)
        checks.check_shape("LSTM", "c_0", c0, expected_c, what)
        checks.check_like("LSTM", "h_0", h0, x, "input")
        checks.check_like("LSTM", "c_0", c0, x, "input")
        if not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        return h0, c0


class LSTMCell(nn.Module):
    r"""One LSTM step, compatible with :class:`torch.nn.LSTMCell`.

    ``cell(input, hx=None, *, trace=False)``: ``input (B, I)`` or ``(I,)``; ``hx = (h, c)``
    each ``(B, H)`` or ``(H,)``. Returns ``(h_1, c_1)``; with ``trace=True`` also the step's
    :class:`~clearlstm.core.cell.CellStep` (every gate and pre-activation, detached).
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
    ) -> None:
        super().__init__()
        checks.check_size("LSTMCell", "input_size", input_size)
        checks.check_size("LSTMCell", "hidden_size", hidden_size)
        _check_dtype("LSTMCell", dtype)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.check_finite = check_finite
        factory = {"device": device, "dtype": dtype}
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates, **factory)) if bias else None
        self.reset_parameters()

    reset_parameters = LSTM.reset_parameters

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    @classmethod
    def from_torch(cls, module: nn.LSTMCell, **kwargs) -> LSTMCell:
        w = module.weight_ih
        new = cls(module.input_size, module.hidden_size, module.bias, w.device, w.dtype, **kwargs)
        new.load_state_dict(module.state_dict())
        return new

    def to_torch(self) -> nn.LSTMCell:
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
            checks.check_finite(
                owner, [("input", x.detach()), ("h", h.detach()), ("c", c.detach())]
            )
            _check_finite_weights(owner, self)
        step = lstm_cell(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        h1, c1 = (step.h, step.c) if batched else (step.h[0], step.c[0])
        if not trace:
            return h1, c1
        return (h1, c1), CellStep(*(v.detach() for v in step))
