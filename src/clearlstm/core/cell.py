"""The LSTM cell, written once. Every other path in clearlstm is tested against this file.

One step of one unit, in the words of the seed article (``Understanding LSTMs``, Part 4)
and StatQuest's worked example (shared reference ``seed-walkthrough.md``)::

    x-axis values   z   = (W_ih x + b_ih) + (W_hh h + b_hh)      # (B, 4H), gates i, f, g, o
    forget gate     f   = sigmoid(z_f)    # fraction of the long-term memory retained
    input gate      i   = sigmoid(z_i)    # fraction of the potential memory added
    potential mem.  g   = tanh(z_g)       # potential long-term memory
    output gate     o   = sigmoid(z_o)    # fraction of the potential short-term memory kept
    long-term       c'  = f * c + i * g   # new long-term memory (cell state)
    short-term      h'  = o * tanh(c')    # new short-term memory (hidden state, the output)
    projection      h'  = W_hr h'         # only when proj_size > 0

Shapes: ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` projection size
(``P = H`` without projection). Weights use torch.nn.LSTM's layout: ``w_ih (4H, I)``,
``w_hh (4H, P)``, ``b_ih, b_hh (4H,)``, ``w_hr (P, H)``, gate blocks in the order i, f, g, o.

The input-to-hidden product does not depend on the recurrence, so a sequence computes it
for all steps at once (:func:`input_projection`) and only :func:`cell_step` runs per step.

Variants (keyword arguments, all off by default = torch.nn.LSTM), as in ONNX's LSTM::

    peepholes       z_i += p_i * c,  z_f += p_f * c,  z_o += p_o * c'   # Gers & Schmidhuber 2000
    coupled gates   i = 1 - f          # ONNX input_forget=1; z_i (and its weights) unused
    cell clip       z = clip(z, -clip, clip) before the activations     # ONNX clip
    layer norm      z = LN_ih(W_ih x) + LN_hh(W_hh h) + b_ih + b_hh,
                    h' = o * tanh(LN_c(c'))     # Ba, Kiros & Hinton 2016, "Layer Normalization",
                                                # placed as haste's LayerNormLSTM
    rec. dropout    W_hh (m_h * h), x -> m_x * x    # Gal & Ghahramani 2016, "A Theoretically
                                                # Grounded Application of Dropout in RNNs"
    zoneout         c' <- d_c c + (1 - d_c) c',  h' <- d_h h + (1 - d_h) h'   # Krueger et al.
                    2016, "Zoneout: Regularizing RNNs by Randomly Preserving Hidden Activations"

Each LayerNorm ``LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5) * gain + bias`` (biased variance
over the last axis, torch.nn.LayerNorm's) has its own learnable gain and bias
(:class:`~clearlstm.core.records.LayerNormWeights`). The variational dropout masks ``m`` are
drawn once per sequence (the same at every step, training only); the zoneout masks ``d``
(1: the unit keeps its previous value) are drawn per unit and step in training; in evaluation
``d`` is the rate itself, the expectation ``z prev + (1 - z) new``. The new ``h`` uses the
memory before its zoneout (Krueger et al., eq. for the LSTM), and the zoned-out ``c`` and
``h`` are the state the next step reads, the output and what the trace records.

The gates then see the memory itself: the forget and input gates the old long-term memory,
the output gate the new one. The recorded pre-activation is what each activation received
(peephole terms added, clipped). The clip's gradient is zero on and beyond the bound.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from clearlstm.core.records import LN_EPS, LayerNormWeights


class CellStep(NamedTuple):
    """Everything one step computes. Gate tensors are ``(B, H)``; ``h`` is ``(B, P)``."""

    pre_activation: Tensor  # (B, 4H) the seed's "x-axis values", gate order i, f, g, o
    input_gate: Tensor  # (B, H) i
    forget_gate: Tensor  # (B, H) f
    potential_memory: Tensor  # (B, H) g
    output_gate: Tensor  # (B, H) o
    c: Tensor  # (B, H) new long-term memory
    h: Tensor  # (B, P) new short-term memory


def input_projection(
    x: Tensor, w_ih: Tensor, b_ih: Tensor | None, layer_norm: LayerNormWeights | None = None
) -> Tensor:
    """``x (..., I) -> (..., 4H)``: the input's share of every gate's x-axis value (with
    ``layer_norm``, ``LN_ih(W_ih x) + b_ih``)."""
    xw = x @ w_ih.T
    if layer_norm is not None:
        xw = layer_norm_of(xw, layer_norm.weight_ih, layer_norm.bias_ih)
    return xw if b_ih is None else xw + b_ih


def layer_norm_of(v: Tensor, gain: Tensor, bias: Tensor) -> Tensor:
    """``LN(v)`` over the last axis (module docstring), written out: torch.layer_norm's kernel
    took 12 ms a call on tiny tensors on a busy machine (its thread pool)."""
    mean = v.mean(-1, keepdim=True)
    centred = v - mean
    var = (centred * centred).mean(-1, keepdim=True)
    return centred * torch.rsqrt(var + LN_EPS) * gain + bias


def long_term_memory(forget_gate: Tensor, c: Tensor, input_gate: Tensor, g: Tensor) -> Tensor:
    """New long-term memory: the retained part of the old plus the admitted potential memory."""
    return forget_gate * c + input_gate * g


def short_term_memory(output_gate: Tensor, c_new: Tensor, w_hr: Tensor | None) -> Tensor:
    """New short-term memory ``(B, P)``: the output gate's share of ``tanh(c')``, projected."""
    h = output_gate * torch.tanh(c_new)
    return h if w_hr is None else h @ w_hr.T


def clip(z: Tensor, bound: float | None) -> Tensor:
    """``z`` clipped to ``[-bound, bound]`` (ONNX's cell clip); gradient zero on and beyond the
    bound (where torch.clamp's would be one on it), so the fused kernels can tell from the
    clipped value alone. NaN stays NaN."""
    if bound is None:
        return z
    return torch.where(z.abs() < bound, z, torch.sign(z) * bound)


def cell_step(
    xw: Tensor,
    h: Tensor,
    c: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None = None,
    *,
    peephole: Tensor | None = None,
    coupled_input_forget: bool = False,
    cell_clip: float | None = None,
    layer_norm: LayerNormWeights | None = None,
    recurrent_mask: Tensor | None = None,
    zoneout: tuple[Tensor | float, Tensor | float] | None = None,
) -> CellStep:
    """One LSTM step from the precomputed input projection ``xw (B, 4H)`` (with
    ``layer_norm``: :func:`input_projection`'s ``LN_ih(W_ih x) + b_ih``).

    ``h (B, P)`` is the previous short-term memory, ``c (B, H)`` the previous long-term memory.
    The variants (module docstring): ``peephole (3, H)`` rows ``p_i, p_f, p_o``;
    ``coupled_input_forget``; ``cell_clip``; ``layer_norm``; ``recurrent_mask (B, P)`` the
    dropout mask on ``h``; ``zoneout = (d_h, d_c)``, masks ``(B, P)``, ``(B, H)`` or rates.
    """
    h_in = h if recurrent_mask is None else h * recurrent_mask
    rh = h_in @ w_hh.T  # (B, 4H)
    if layer_norm is not None:
        rh = layer_norm_of(rh, layer_norm.weight_hh, layer_norm.bias_hh)
    pre = xw + rh
    if b_hh is not None:
        pre = pre + b_hh
    if layer_norm is not None or zoneout is not None:
        step = _variant_step(pre, c, None, peephole, coupled_input_forget, cell_clip, layer_norm)
        c_new, h_new = step.c, step.h
        if w_hr is not None:
            h_new = h_new @ w_hr.T
        if zoneout is not None:  # a unit keeps its previous value where d = 1
            d_h, d_c = zoneout
            c_new = d_c * c + (1 - d_c) * c_new
            h_new = d_h * h + (1 - d_h) * h_new
        return step._replace(c=c_new, h=h_new)
    if peephole is not None or coupled_input_forget or cell_clip is not None:
        return _variant_step(pre, c, w_hr, peephole, coupled_input_forget, cell_clip)
    z_i, z_f, z_g, z_o = pre.chunk(4, dim=-1)  # (B, H) each
    i = torch.sigmoid(z_i)  # fraction of the potential memory to add
    f = torch.sigmoid(z_f)  # fraction of the long-term memory to retain
    g = torch.tanh(z_g)  # potential long-term memory
    o = torch.sigmoid(z_o)  # fraction of the potential short-term memory to output
    c_new = long_term_memory(f, c, i, g)
    h_new = short_term_memory(o, c_new, w_hr)
    return CellStep(pre, i, f, g, o, c_new, h_new)


def _variant_step(pre, c, w_hr, peephole, coupled, bound, layer_norm=None) -> CellStep:
    """:func:`cell_step` from ``pre (B, 4H)`` with peepholes, coupled gates, a cell clip or
    the cell's layer norm (before ``tanh``)."""
    z_i, z_f, z_g, z_o = pre.chunk(4, dim=-1)
    if peephole is not None:  # the forget and input gates look at the old memory
        z_i = z_i + peephole[0] * c
        z_f = z_f + peephole[1] * c
    z_i, z_f, z_g = clip(z_i, bound), clip(z_f, bound), clip(z_g, bound)
    f = torch.sigmoid(z_f)
    i = 1 - f if coupled else torch.sigmoid(z_i)  # coupled: admit what is forgotten
    g = torch.tanh(z_g)
    c_new = long_term_memory(f, c, i, g)
    if peephole is not None:  # the output gate looks at the new memory
        z_o = z_o + peephole[2] * c_new
    z_o = clip(z_o, bound)
    o = torch.sigmoid(z_o)
    c_out = c_new if layer_norm is None else layer_norm_of(c_new, layer_norm.weight_c,
                                                          layer_norm.bias_c)  # fmt: skip
    h_new = short_term_memory(o, c_out, w_hr)
    return CellStep(torch.cat([z_i, z_f, z_g, z_o], dim=-1), i, f, g, o, c_new, h_new)


def lstm_cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    w_hr: Tensor | None = None,
    *,
    peephole: Tensor | None = None,
    coupled_input_forget: bool = False,
    cell_clip: float | None = None,
    layer_norm: LayerNormWeights | None = None,
    recurrent_mask: Tensor | None = None,
    zoneout: tuple[Tensor | float, Tensor | float] | None = None,
    input_mask: Tensor | None = None,
) -> CellStep:
    """One LSTM step from the raw input ``x (B, I)``; the variants as in :func:`cell_step`,
    ``input_mask (B, I)`` the variational dropout mask on ``x``.

    >>> import torch
    >>> w_ih = torch.tensor([[1.65], [1.63], [0.94], [-0.19]], dtype=torch.float64)
    >>> w_hh = torch.tensor([[2.00], [2.70], [1.41], [4.38]], dtype=torch.float64)
    >>> b_ih = torch.tensor([0.62, 1.62, -0.32, 0.59], dtype=torch.float64)
    >>> one = torch.ones(1, 1, dtype=torch.float64)
    >>> step = lstm_cell(one, one, 2 * one, w_ih, w_hh, b_ih)
    >>> round(step.forget_gate.item(), 6), round(step.c.item(), 6), round(step.h.item(), 6)
    (0.997401, 2.947567, 0.986229)
    """
    if input_mask is not None:
        x = x * input_mask
    return cell_step(
        input_projection(x, w_ih, b_ih, layer_norm), h, c, w_hh, b_hh, w_hr,
        peephole=peephole, coupled_input_forget=coupled_input_forget, cell_clip=cell_clip,
        layer_norm=layer_norm, recurrent_mask=recurrent_mask, zoneout=zoneout,
    )  # fmt: skip
