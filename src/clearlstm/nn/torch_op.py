"""The ``"torch"`` backend: one layer-direction on torch's own fused CPU op (``torch.lstm``,
oneDNN/MKL); padded batches through its packed variant. No trace.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from clearlstm.core.records import LayerResult, LayerWeights, reverse_within_lengths


def torch_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    lengths: Tensor | None,
    reverse: bool,
) -> LayerResult:
    """A layer-direction on torch's fused op (``torch.lstm``), one layer, one direction.

    Padded batches go through the op's packed variant, so padded steps neither change the
    state nor appear in the output; a reverse direction reads each sequence reversed within
    its length.
    """
    w_ih, w_hh, b_ih, b_hh, w_hr = weights[:5]
    has_biases = b_ih is not None or b_hh is not None
    params = [w_ih, w_hh]
    if has_biases:
        zeros = w_ih.new_zeros(w_ih.shape[0])
        params += [zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh]
    if w_hr is not None:
        params.append(w_hr)
    steps = x.shape[0]
    if lengths is not None and bool((lengths == steps).all()):
        lengths = None  # nothing padded: the plain op is faster than the packed one
    hx = (h0[None], c0[None])
    if reverse:
        x = reverse_within_lengths(x, lengths)
    if lengths is None:
        output, h_n, c_n = torch.lstm(x, hx, params, has_biases, 1, 0.0, False, False, False)
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        order = packed.sorted_indices
        hx = (hx[0].index_select(1, order), hx[1].index_select(1, order))
        data, h_n, c_n = torch.lstm(
            packed.data, packed.batch_sizes, hx, params, has_biases, 1, 0.0, False, False
        )
        back = packed.unsorted_indices
        packed_out = PackedSequence(data, packed.batch_sizes, order, back)
        output = pad_packed_sequence(packed_out, total_length=steps)[0]
        h_n, c_n = h_n.index_select(1, back), c_n.index_select(1, back)
    if reverse:
        output = reverse_within_lengths(output, lengths)
    return LayerResult(output, h_n[0], c_n[0], None)
