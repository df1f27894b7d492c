"""Residual streams: what writes into them, and what the proof must zero there.

- ``Concat`` along an axis other than the channel axis with a constant operand (ViT's class token,
  an ``Expand`` of an initializer to the batch): the constant is one more writer of the stream's
  channels; it is cut along the channel axis with them (``_slice_concat``).
- ``Expand`` and ``Tile`` of a tracked tensor along other axes pass channels through; an Expand
  target computed from shapes (GQA's repeat_kv) is rewritten when the channels go.
- ``stream_zeroings``: for groups a normalization reads (``Group.stream``), the masked original
  of the proof zeroes the removed channels at every writer, not only in the leaves' input
  weights: the roots' output filters and biases, constants added, multiplied or concatenated into
  the stream, a grouped (depthwise) Conv's filters and bias, the normalizations' scale and bias.
  Those channels are then exactly zero wherever a normalization reads them, which is what the
  pruned normalization (``norms``) assumes. What is missed shows up as a failed proof, never as a
  shipped model: the group is then left alone with that reason.

Example: ViT's ``Concat(Expand(class_token [1, 1, C]), patches [N, 196, C], axis=1)``: the
output keeps the patches' channel map; ``class_token`` loses the removed channels.
"""

from __future__ import annotations

import numpy as np

from ir import Graph

from ..analyses import ChannelMap, LeafZeroing, in_sorted, unique_ids
from .computed import computed_weights, expanded_constant, gather_kept
from .derived import derived_constants
from .reshapes import _entries
from .slices import Keeps, Rewriter, _take
from .views import Effect, NodeView, _axis, _only, blocked


# ----------------------------------------------------------------------------- constants
def _concat(view: NodeView, fallback) -> Effect:
    """Concat along another axis than the channels' (tokens): tracked inputs are coupled
    position by position, a constant one (or an Expand of one) is cut with the channels."""
    labeled = view.labeled()
    m = view.maps[labeled[0]]
    axis = _axis(view.node.attr("axis"), m.rank)
    if m.axis == axis or any(view.maps[p].axis != m.axis or view.maps[p].rank != m.rank for p in labeled):
        return fallback(view)
    couplings = []
    for p in labeled[1:]:
        other = view.maps[p]
        if len(other) != len(m) or np.any((m.ids >= 0) != (other.ids >= 0)):
            return blocked("Concat joins pruned channels with untracked data")
        both = m.ids >= 0
        couplings.append((m.ids[both], other.ids[both]))
    for p in range(view.n_inputs()):
        if view.maps[p] is not None:
            continue
        const = expanded_constant(view.graph, view.graph.inputs_of(view.node)[p], shared=True)
        shape = view.shape(p)
        if const is None or shape is None or len(shape) != m.rank:
            return blocked(f"Concat mixes pruned channels with untracked data {view.input_name(p)!r}")
        arr = const[2]
        a = m.axis - (m.rank - arr.ndim)
        if a < 0 or arr.shape[a] != len(m):
            return blocked(f"Concat operand {view.input_name(p)!r} is broadcast along the channel axis")
    return Effect(outputs={0: ChannelMap(m.axis, m.rank, m.ids)}, couplings=couplings)


def _slice_concat(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 not in outs:
        return
    axis, keep, rank = outs[0]
    if _axis(rw.node.attr("axis"), rank) == axis:
        return
    for p, value in enumerate(rw.graph.inputs_of(rw.node)):
        if p in ins or value is None:
            continue
        const = expanded_constant(rw.graph, value, shared=True)
        if const is None:
            continue
        node, port, arr = const
        a = axis - (rank - arr.ndim)
        if a < 0 or arr.shape[a] != len(keep):
            continue
        if node is not None and (len(rw.graph.consumers(value)) > 1 or not _target_one(rw, node, axis, rank)):
            gather_kept(rw.graph, rw.node, p, axis, keep)  # read elsewhere too: this Concat picks its
            continue                                       # kept channels
        target = rw if node is None else Rewriter(rw.graph, node, rw.opset)
        target.set_const(p if node is None else port, _take(arr, a, keep))


def _target_one(rw: Rewriter, expand, axis: int, rank: int) -> bool:
    """The Expand's target made 1 at the channel axis, so the cut constant's own extent stands
    there (jax2onnx writes the class token's ``Concat(B, [1, 32])``, naming the count torch's
    ``expand(B, -1, -1)`` leaves at 1): a constant target is rewritten, a computed one of known
    length goes through ``Where(axis mask, 1, target)``. False (nothing changed) when its
    length is unknown."""
    from ir import Initializer, Node

    graph = rw.graph
    target = graph.inputs_of(expand)[1]
    arr = graph.const_array(target)
    if arr is not None:
        a = axis - (rank - len(arr))
        if a >= 0 and int(arr[a]) != 1:
            Rewriter(graph, expand, rw.opset).set_const(1, np.where(np.arange(len(arr)) == a, 1, arr))
        return True
    shape = graph.value(target.name).shape
    if shape is None or len(shape) != 1 or not isinstance(shape[0], int):
        return False
    a = axis - (rank - shape[0])
    if a < 0:
        return True
    mask, one = graph.unique_name(f"{expand.name}/axis_mask"), graph.unique_name(f"{expand.name}/one")
    graph.add_initializer(Initializer.from_array(mask, np.arange(shape[0]) == a))
    graph.add_initializer(Initializer.from_array(one, np.ones(1, np.int64)))
    out = graph.unique_name(f"{expand.name}/target_one")
    graph.add_node(Node(graph.unique_name(f"{expand.name}/target_one", kind="n"), "Where", "", {}, ""),
                   [mask, one, target.name], [out])
    graph.set_input(expand, 1, out)
    return True


def _expand_like(view: NodeView) -> Effect:
    """Expand / Tile of a tracked tensor: channels pass when their axis is neither broadcast nor
    repeated (its entry is 1, or for Expand its own length). An Expand target may be computed:
    folded to numbers, it is frozen and rewritten like a Reshape target (``SHAPE_OPERANDS``; GQA's
    repeat_kv names the KV head count there); one that does not fold passes when its channel entry
    is 1 (only other axes broadcast)."""
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach the shape operand of {view.node.op_type}")
    target = view.static_value(1)
    if target is None:
        if view.node.op_type == "Expand":
            got = _entries(view, 1)
            if got is not None:
                return _expand_effect(m, list(got[0]), ones_only=True)
        return blocked(f"{view.node.op_type} to a computed shape that does not fold")
    target = [int(t) for t in np.ravel(target)]
    if view.node.op_type == "Tile":
        if len(target) != m.rank or target[m.axis] != 1:
            return blocked("Tile repeats the channel axis")
        return Effect(outputs={0: m})
    return _expand_effect(m, target)


def _expand_effect(m: ChannelMap, target: list, ones_only: bool = False) -> Effect:
    out_rank = max(m.rank, len(target))
    axis = m.axis + out_rank - m.rank
    t = axis - (out_rank - len(target))
    if t >= 0 and target[t] not in ((1,) if ones_only else (1, len(m))):
        return blocked("Expand broadcasts the channel axis")
    return Effect(outputs={0: ChannelMap(axis, out_rank, m.ids)})


def _slice_expand(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """The channel entry of Expand's target, when it names the channel count (constant, or a
    computed one frozen to its value), becomes the kept count."""
    if rw.node.op_type != "Expand" or 0 not in outs:
        return
    axis, keep, rank = outs[0]
    shape = rw.const(1)
    if shape is None:  # a computed target with 1 on the channel axis: it adapts
        return
    t = axis - (rank - len(shape))
    if t >= 0 and int(shape[t]) == len(keep) and len(keep) > 1:
        new = np.array(shape, dtype=np.int64).copy()
        new[t] = int(keep.sum())
        rw.set_const(1, new)


# ----------------------------------------------------------------------------- the proof
ZERO_ADDITIVE = {"Add", "Sub", "Sum", "Mul", "Max", "Min", "Mean"}   # f(0, 0) == 0: zero the constant
ZERO_PARAMS = {"LayerNormalization": (1, 2), "BatchNormalization": (1, 2),
               "InstanceNormalization": (1, 2),
               "GroupNormalization": (1, 2)}


def stream_zeroings(graph: Graph, trees, removed: np.ndarray) -> list[LeafZeroing]:
    """The zeroings that make each removed stream channel exactly zero in the masked original
    (``removed``: ids of stream groups that go): at the roots and every constant written into
    the stream (see the module doc)."""
    if len(removed) == 0:
        return []
    removed = unique_ids(removed)
    out: list[LeafZeroing] = []
    roots = {r.node: r for r in trees.roots}
    computed = computed_weights(graph)

    def gone(name: str):
        m = trees.maps.get(name)
        if m is None:
            return None
        pos = np.nonzero(in_sorted(m.ids, removed))[0]
        return (m, pos) if len(pos) else None

    def zero(node, port: int, axis: int, pos) -> None:
        out.append(LeafZeroing(node.name, port, axis, tuple(np.asarray(pos).tolist()), None))

    for node in graph.topo_nodes():
        outs = graph.outputs_of(node)
        hit = gone(outs[0].name) if outs and outs[0] is not None else None
        if hit is None:
            continue
        m, pos = hit
        ins = graph.inputs_of(node)
        root = roots.get(node.name)
        if root is not None and root.output == outs[0].name:
            zero(node, root.weight_port, root.weight_axis, pos)
            bias = graph.const_array(ins[2]) if len(ins) > 2 and ins[2] is not None else None
            if bias is not None and bias.ndim >= 1 and bias.shape[-1] == root.channels:
                zero(node, 2, bias.ndim - 1, pos)
            continue
        op = node.op_type
        if op in ("Conv", "ConvTranspose") and node.attr("group", 1) > 1:  # depthwise: whole filters
            if op == "Conv":
                zero(node, 1, 0, pos)
            if len(ins) > 2 and ins[2] is not None and graph.const_array(ins[2]) is not None:
                zero(node, 2, 0, pos)
        elif op in ZERO_PARAMS:
            for port in ZERO_PARAMS[op]:
                arr = graph.const_array(ins[port]) if port < len(ins) and ins[port] is not None else None
                if arr is None:
                    continue
                a = 0 if op in ("BatchNormalization", "InstanceNormalization") else arr.ndim - 1
                if arr.shape[a] == len(m) and len(m) > 1:
                    zero(node, port, a, pos)
        elif op in ZERO_ADDITIVE or op == "Where" or op == "Concat":
            for port, value in enumerate(ins):
                if value is None or value.name in trees.maps or (op == "Where" and port == 0):
                    continue
                arr = graph.const_array(value)
                arr = computed.get(value.name) if arr is None else arr   # computed from initializers
                const = (None, -1, arr) if arr is not None else expanded_constant(graph, value, shared=True)
                if const is None:  # a per-channel constant scaled by statistics (tf2onnx's LayerNorm)
                    for owner, owner_port, _, a in derived_constants(graph, value.name, m.axis, m.rank, len(m)) or ():
                        zero(owner, owner_port, a, pos)
                    continue
                owner, owner_port, arr = const
                a = m.axis - (m.rank - arr.ndim)
                if a >= 0 and arr.shape[a] == len(m) and len(m) > 1:
                    zero(owner or node, port if owner is None else owner_port, a, pos)
    return out
