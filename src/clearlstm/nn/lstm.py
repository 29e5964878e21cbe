"""``LSTM``: a drop-in replacement for torch.nn.LSTM.

Same constructor, parameter names, shapes, initialisation and return values, so a torch
state_dict loads as it is. What it adds: ``lengths=`` for padded batches, ``trace=True`` for
every gate at every step (:class:`~clearlstm.core.trace.Trace`), a public choice of path
(``backend=``, ``kernel=``) and errors that say what is wrong. The math lives in
:mod:`clearlstm.core.cell`; this class holds parameters, checks arguments and calls
:func:`clearlstm.nn.functional.lstm`, the one forward entry, once per forward.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from clearlstm.core.records import LayerWeights
from clearlstm.core.trace import Trace
from clearlstm.nn import checks, variants
from clearlstm.nn.functional import Backend, Kernel, check_choice, lstm
from clearlstm.nn.streaming import Stream

State = tuple[Tensor, Tensor]
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")  # LayerWeights' order


class LSTM(variants.VariantArguments, nn.Module):
    r"""A multi-layer LSTM over sequences, compatible with :class:`torch.nn.LSTM`.

    Each step of each layer runs the seed's unit (:mod:`clearlstm.core.cell`): the forget gate
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
    state or the weights raise an error; False lets them through), ``backend``
    (``"auto"``, ``"reference"``, ``"fused"`` or ``"torch"``; see
    :mod:`clearlstm.nn.functional` for which path ``"auto"`` takes) and ``kernel`` (``"auto"``,
    or one of ``"small"``, ``"sequence"``, ``"split"``, ``"blas"`` to run that fused kernel;
    see :mod:`clearlstm.fused.dispatch`). Both are attributes that may be changed later.

    Variants (defaults: torch's LSTM; math in :mod:`clearlstm.core.cell`, sources in
    :mod:`clearlstm.nn.variants`): ``forget_bias`` and ``init="chrono"`` with
    ``chrono_max_steps`` change only the initial gate biases; ``peephole=True`` adds
    ``weight_peephole_l{k}[_reverse] (3, H)``, rows ``p_i, p_f, p_o`` (ONNX's ``P`` is ordered
    i, o, f); ``coupled_input_forget=True`` sets ``i = 1 - f`` (the input gate's rows of the
    weights and biases stay, are unused, and get zero gradients); ``cell_clip`` clips every
    gate pre-activation to ``[-cell_clip, cell_clip]``; ``layer_norm=True`` adds the gains
    and biases ``ln_weight_ih_l{k}``, ``ln_bias_ih_l{k}`` ``(4H,)`` (LN on ``W_ih x``),
    ``ln_weight_hh_l{k}``, ``ln_bias_hh_l{k}`` (on ``W_hh h``), ``ln_weight_c_l{k}``,
    ``ln_bias_c_l{k}`` ``(H,)`` (on ``c`` before ``tanh``); ``zoneout_h``, ``zoneout_c``: in
    training each unit keeps its previous value with that probability at each step, in
    evaluation the expectation; ``recurrent_dropout``, ``input_dropout``: variational dropout
    (one mask per sequence and layer-direction) on ``h`` before the recurrent product and on
    each layer's input, training only. Masks come from torch's default generator
    (``torch.manual_seed`` reproduces them). A variant model runs on the reference or the
    fused ``"sequence"`` kernel, never torch's op.

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
        kernel: Kernel = "auto",
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
        owner = "LSTM"
        self._variant = variants.check_variant(
            owner, peephole, coupled_input_forget, cell_clip, layer_norm, zoneout_h=zoneout_h,
            zoneout_c=zoneout_c, recurrent_dropout=recurrent_dropout, input_dropout=input_dropout,
        )  # fmt: skip
        variants.check_init(owner, forget_bias, init, chrono_max_steps, bias)
        self.forget_bias, self.init, self.chrono_max_steps = forget_bias, init, chrono_max_steps
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
        check_choice(owner, backend, kernel)
        checks.check_dtype(owner, dtype)
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
        self.kernel = kernel

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
        self._register_variant_parameters(self._suffixes(), hidden_size, factory)
        self._weight_names = [  # per layer-direction, in LayerWeights' order
            tuple(f"{name}_l{layer}" + ("_reverse" if direction else "") for name in _NAMES)
            for layer in range(num_layers)
            for direction in range(self.num_directions)
        ]
        self.reset_parameters()

    def _add(self, name: str, shape: tuple[int, ...], factory: dict) -> None:
        self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))

    def _suffixes(self) -> list[str]:
        """``_l{layer}[_reverse]`` of every layer-direction, in LayerWeights' order."""
        d = self.num_directions
        return [f"_l{k // d}" + ("_reverse" if k % d else "") for k in range(self.num_layers * d)]

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """torch's initialisation: every parameter uniform in ``±1/sqrt(H)`` (peepholes too);
        then the gate biases of ``forget_bias`` or ``init="chrono"``
        (:func:`clearlstm.nn.variants.init_gate_biases`)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        self._reset_layer_norm(self._suffixes())  # gains 1, biases 0
        if self.bias and (self.forget_bias is not None or self.init == "chrono"):
            for names in self._weight_names:
                variants.init_gate_biases(
                    getattr(self, names[2]), getattr(self, names[3]), self.forget_bias,
                    self.init, self.chrono_max_steps,
                )  # fmt: skip

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
            get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr"),
            get("weight_peephole"), self._variant, self._layer_norm_weights(sfx),
        )  # fmt: skip

    def all_weights(self) -> list[LayerWeights]:
        """Every layer-direction's parameters, layer by layer, forward direction first."""
        params, names = self._parameters, self._weight_names
        if self._modules or names[0][0] not in params or self._variant is not None:
            return [self.layer_weights(k // self.num_directions, k % self.num_directions)
                    for k in range(len(names))]  # fmt: skip
        get = params.get  # a plain loop: this runs on every call (~0.5 µs a layer saved)
        return [LayerWeights(get(a), get(b), get(c), get(d), get(e)) for a, b, c, d, e in names]

    def stream(self, hx: State | None = None) -> Stream:
        """A stateful stepper for step-at-a-time inference: ``y = stream.step(x_t)``.

        ``hx``: optional ``(h_0 (L, B, P), c_0 (L, B, H))``. Snapshots the current weights;
        see :class:`clearlstm.nn.streaming.Stream`.
        """
        return Stream(self.all_weights(), self.input_size, self.bidirectional, hx)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0}
        defaults |= {"bidirectional": False, "proj_size": 0}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text + self._variant_repr()

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
        if self._variant is not None:
            raise NotImplementedError(
                f"LSTM.to_torch: torch.nn.LSTM has no {self._variant}; only a plain LSTM converts"
            )
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
        output, h_n, c_n, records = lstm(
            x,
            h0,
            c0,
            self.all_weights(),
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            training=self.training,
            lengths=lengths,
            record=trace,
            backend=self.backend,
            kernel=self.kernel,
            check_finite=self.check_finite,
            owner=owner,
        )
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

    def _initial_state(self, hx: State, x: Tensor, batch: int, batched: bool) -> State:
        """``hx`` checked and batched: ``(h_0 (L*D, B, P), c_0 (L*D, B, H))``."""
        stacked = self.num_layers * self.num_directions
        out_size = self.proj_size or self.hidden_size
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
