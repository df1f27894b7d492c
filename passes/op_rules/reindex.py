"""Channel rules of ops that move or re-index the channel axis: Transpose, Flatten, Squeeze/Unsqueeze,
Concat, Pad, Resize, Gather, Slice, Split, and Shape (which ends channels). Reshape (head splits,
channel shuffle, symbolic targets) has a module of its own: ``reshapes.py``."""

from __future__ import annotations

import numpy as np

from ..analyses import ChannelMap
from .adaptive import computed_sizes
from .channels import _broadcast
from .folding import constant_value
from .views import FRESH, Effect, NodeView, _attr_or_input, _axis, _only, _same_all, blocked


def _transpose(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach Transpose")
    perm = view.node.attr("perm") or list(range(m.rank))[::-1]
    return Effect(outputs={0: ChannelMap(list(perm).index(m.axis), m.rank, m.ids)})


def _flatten(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach Flatten")
    axis = _axis(view.node.attr("axis", 1), m.rank)
    if m.axis < axis:
        return blocked("Flatten merges the channel axis into the batch axis")
    shape = view.shape(0)
    tail = shape[axis:] if shape is not None else None
    if tail is None or any(not isinstance(d, int) for d in tail):
        return blocked("Flatten of a tensor whose per-sample shape is unknown")
    # position p of the flattened axis reads channel index p // inner, where inner is the
    # product of the dims after the channel axis (C×H×W columns: channel c owns H×W of them)
    inner = int(np.prod(shape[m.axis + 1:], dtype=np.int64))
    outer = int(np.prod(shape[axis:m.axis], dtype=np.int64))
    ids = np.tile(np.repeat(m.ids, inner), outer)
    return Effect(outputs={0: ChannelMap(1, 2, ids)})


def _squeeze(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach the axes input of {view.node.op_type}")
    axes, known = _attr_or_input(view, "axes", 1, 13)
    if not known:
        return blocked(f"{view.node.op_type} axes are not constant")
    if view.node.op_type == "Unsqueeze":
        if axes is None:
            return blocked("Unsqueeze without axes")
        out_rank = m.rank + len(axes)
        axes = sorted(_axis(int(a), out_rank) for a in axes)
        pos = [i for i in range(out_rank) if i not in axes]
        return Effect(outputs={0: ChannelMap(pos[m.axis], out_rank, m.ids)})
    if axes is None:
        shape = view.shape(0)
        if shape is None:
            return blocked("Squeeze without axes on an unknown shape")
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = sorted(_axis(int(a), m.rank) for a in axes)
    if m.axis in axes:
        return blocked("Squeeze removes the channel axis")
    return Effect(outputs={0: ChannelMap(m.axis - sum(a < m.axis for a in axes),
                                         m.rank - len(axes), m.ids)})


def _concat(view: NodeView) -> Effect:
    labeled = view.labeled()
    rank = view.maps[labeled[0]].rank
    axis = _axis(view.node.attr("axis"), rank)
    if any(view.maps[p].axis != view.maps[labeled[0]].axis for p in labeled):
        return blocked("Concat of inputs with channels on different axes")
    if view.maps[labeled[0]].axis != axis:
        return _broadcast(view)  # concatenating along another axis: like an elementwise join
    parts = []
    for p in range(view.n_inputs()):
        if view.maps[p] is not None:
            parts.append(view.maps[p].ids)
            continue
        shape = view.shape(p)
        if shape is None or not isinstance(shape[axis], int):
            return blocked(f"Concat operand {view.input_name(p)!r} of unknown size")
        parts.append(np.full(shape[axis], -1, np.int64))
    return Effect(outputs={0: ChannelMap(axis, rank, np.concatenate(parts))})


def _pad(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach the pads of Pad")
    if view.opset < 11:
        pads = view.node.attr("pads") or view.node.attr("paddings")
        pads = None if pads is None else np.asarray(pads)
    else:
        pads = view.static_value(1)  # torch writes F.pad's pads as a small constant sub-graph
    if pads is None:
        return blocked("Pad with non-constant pads")
    pads = np.ravel(pads).astype(np.int64)
    axes = list(range(m.rank))
    if view.opset >= 18 and view.n_inputs() > 3 and view.input_name(3) is not None:
        given = view.static_value(3)
        if given is None:
            return blocked("Pad with non-constant axes")
        axes = [_axis(int(a), m.rank) for a in np.ravel(given)]
    n = len(axes)
    if m.axis in axes:
        i = axes.index(m.axis)
        if pads[i] != 0 or pads[i + n] != 0:
            return _channel_padding(view, m, int(pads[i]), int(pads[i + n]))
    return Effect(outputs={0: m})


def _channel_padding(view: NodeView, m: ChannelMap, before: int, after: int) -> Effect:
    """Zeros added on the channel axis (BlazeFace's ``channel_padding`` before a residual Add whose
    other branch is wider: ``Add(Pad(x, [0, 0, 0, 0, 0, 4, 0, 0]), Conv(..))``, mediapipe's face
    and palm detectors, face, iris and hand landmarks): each added channel is a constant zero, a
    fresh id the Add couples with the wider branch's channel. Removing that class removes the
    branch's filter and one added zero (``slices._slice_pad`` counts the kept ones); in the masked
    model both are zero already. Only zeros (mode constant, value 0) and no cropping."""
    mode = view.node.attr("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    computed = view.opset >= 11 and (view.const(1) is None or (
        view.opset >= 18 and view.n_inputs() > 3 and view.input_name(3) is not None and view.const(3) is None))
    if mode != "constant" or before < 0 or after < 0 or computed:
        return blocked("Pad pads the channel axis")  # reflect/edge copy channels; computed pads, axes
    if view.opset < 11:
        value = view.node.attr("value", 0.0)
    elif view.n_inputs() > 2 and view.input_name(2) is not None:
        value = view.static_value(2)
    else:
        value = 0.0
    if value is None or np.any(np.asarray(value) != 0):
        return blocked("Pad pads the channel axis with a value other than zero")
    ids = np.concatenate([np.full(before, FRESH, np.int64), m.ids, np.full(after, FRESH, np.int64)])
    return Effect(outputs={0: ChannelMap(m.axis, m.rank, ids)}, fresh=True)


def _resize(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach the scales of {view.node.op_type}")
    op = view.node.op_type
    if op == "Upsample" and view.opset < 9:
        scales = np.asarray(view.node.attr("scales", []))
        sizes = None
    elif op == "Upsample":
        scales, sizes = view.static_value(1), None
    elif view.opset < 11:
        scales, sizes = view.static_value(1), None
    else:
        scales = view.static_value(2) if view.input_name(2) else None
        if scales is None and view.input_name(2):  # float scales Concat-ed from Constants (CoaT's interpolate)
            scales = constant_value(view.graph, view.input_name(2))
        sizes = view.static_value(3) if view.n_inputs() > 3 and view.input_name(3) else None
    if view.node.attr("axes") is not None:
        return blocked(f"{op} with an axes attribute is not supported yet")
    if sizes is not None:
        if int(np.ravel(sizes)[m.axis]) != len(m):
            return blocked(f"{op} resizes the channel axis")
        return Effect(outputs={0: m})
    if op == "Resize" and view.opset >= 11 and view.n_inputs() > 3 and view.input_name(3):
        return computed_sizes(view, m)  # sizes given, not static: read off Shape, they may adapt
    if scales is None or np.ravel(scales).size != m.rank:
        return blocked(f"{op} with computed scales")
    if float(np.ravel(scales)[m.axis]) != 1.0:
        return blocked(f"{op} resizes the channel axis")
    return Effect(outputs={0: m})


def _gather(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels used as Gather indices")
    axis = _axis(view.node.attr("axis", 0), m.rank)
    if axis == m.axis:
        return _gather_channels(view, m)
    q = view.rank(1)
    if q is None:
        return blocked("Gather indices of unknown rank")
    new_axis = m.axis if m.axis < axis else m.axis + q - 1
    return Effect(outputs={0: ChannelMap(new_axis, m.rank + q - 1, m.ids)})


def _gathernd(view: NodeView) -> Effect:
    """GatherND(data, indices, batch_dims=b), channels on a data axis after the b batch axes and
    the k = indices.shape[-1] indexed ones: whole rows are copied (a graph network's
    ``x[edge_index]``). The output is indices.shape[:-1] + data.shape[b + k:], so data axis a
    lands on q - 1 + a - b - k (q: the indices' rank). Channels on a batch or indexed axis, in
    the indices, or indices whose last dim is not a number, block."""
    m = _only(view, 0)
    if m is None:
        return blocked("channels used as GatherND indices")
    shape = view.shape(1)
    if shape is None or not shape or not isinstance(shape[-1], int):
        return blocked("GatherND indices whose last dim is unknown")
    b, k, q = int(view.node.attr("batch_dims", 0)), int(shape[-1]), len(shape)
    if m.axis < b + k:
        return blocked("GatherND indexes the channel axis (or one of its batch axes)")
    return Effect(outputs={0: ChannelMap(q - 1 + m.axis - b - k, q - 1 + m.rank - b - k, m.ids)})


def _gather_channels(view: NodeView, m: ChannelMap) -> Effect:
    """Gather along the channel axis by constant indices that pick distinct channels along one
    axis of the indices (the dynamo exporter's ``as_strided``: Reshape to [-1], then Gather by
    ``arange(C)`` shaped [1, C, 1, 1]): the picked ids land on that axis; slicing drops the
    removed channels' entries and renumbers the rest (``slices._slice_gather``)."""
    idx = view.const(1)
    if idx is None or not np.issubdtype(np.asarray(idx).dtype, np.integer):
        return blocked("Gather picks along the channel axis by computed indices")
    idx = np.asarray(idx, dtype=np.int64)
    idx = np.where(idx < 0, idx + len(m), idx)
    spread = [i for i, d in enumerate(idx.shape) if d > 1]
    if np.any((idx < 0) | (idx >= len(m))) or len(spread) != 1 or len(np.unique(idx)) != idx.size:
        return blocked("Gather picks along the channel axis other than distinct channels along one axis")
    return Effect(outputs={0: ChannelMap(m.axis + spread[0], m.rank + idx.ndim - 1, m.ids[idx.ravel()])})


def _slice_bounds(view: NodeView):
    """(starts, ends, axes, steps) of a Slice as int lists, or None when one does not fold."""
    if view.opset < 10:
        starts, ends = view.node.attr("starts"), view.node.attr("ends")
        axes, steps = view.node.attr("axes"), None
    else:
        starts, ends = view.static_value(1), view.static_value(2)
        axes = steps = None
        if view.n_inputs() > 3 and view.input_name(3) is not None:
            axes = view.static_value(3)
            if axes is None:
                return None
        if view.n_inputs() > 4 and view.input_name(4) is not None:
            steps = view.static_value(4)
            if steps is None:
                return None
    if starts is None or ends is None:
        return None
    starts, ends = [int(v) for v in np.ravel(starts)], [int(v) for v in np.ravel(ends)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.ravel(steps)]
    return starts, ends, axes, steps


def _clamp_range(start: int, end: int, dim: int) -> tuple[int, int]:
    """ONNX Slice bounds for step 1: negatives count from the end, then clamped to [0, dim]."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    return max(0, min(dim, start)), max(0, min(dim, end))


def _slice(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach the bounds of Slice")
    bounds = _slice_bounds(view)
    if bounds is None:
        return blocked("Slice with bounds that do not fold to constants")
    starts, ends, axes, steps = bounds
    axes = [_axis(a, m.rank) for a in axes]
    if m.axis not in axes:
        return Effect(outputs={0: m})
    i = axes.index(m.axis)
    if steps[i] != 1:
        return blocked("strided Slice along the channel axis")
    start, end = _clamp_range(starts[i], ends[i], len(m))
    return Effect(outputs={0: ChannelMap(m.axis, m.rank, m.ids[start:max(start, end)])})


def _split_sizes(view: NodeView, length: int) -> list[int] | None:
    if view.opset < 13:
        split = view.node.attr("split")
    elif view.n_inputs() > 1 and view.input_name(1) is not None:
        split = view.static_value(1)
        if split is None:
            return None
    else:
        split = None
    if split is None:  # equal parts (num_outputs from 18, the outputs' count before): slicing
        parts = view.n_outputs()  # writes them out as an explicit list (slices._slice_split)
        if view.opset >= 18 and view.node.attr("num_outputs") is not None:
            parts = int(view.node.attr("num_outputs"))
        if parts < 1 or length % parts:  # uneven: the spec's last-chunk rule is left alone
            return None
        return [length // parts] * parts
    return [int(v) for v in np.ravel(split)]


def _split(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach the sizes of Split")
    axis = _axis(view.node.attr("axis", 0), m.rank)
    if axis != m.axis:
        return _same_all(view, m)
    sizes = _split_sizes(view, len(m))
    if sizes is None or sum(sizes) != len(m) or len(sizes) != view.n_outputs():
        return blocked("Split along the channel axis into unequal parts without an explicit list of sizes")
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    return Effect(outputs={p: ChannelMap(axis, m.rank, m.ids[offsets[p]:offsets[p + 1]])
                           for p in range(len(sizes))})


def _shape(view: NodeView) -> Effect:
    """Shape reads no channel data: channels end here. The numbers it gives are checked apart
    (``fold_shapes`` taints, enforced in trees): they must reach only rewritten operands."""
    if _only(view, 0) is None:
        return blocked("channels reach a parameter of Shape")
    return Effect()


def _constant_operands_only(view: NodeView) -> Effect:
    return blocked(f"{view.node.op_type} is not expected to see channels")
