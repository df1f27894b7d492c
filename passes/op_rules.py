"""The node attribute library: what each ONNX op does to the channel axis, as data.

Four tables, keyed by op type (default ONNX domain only; any other domain is a barrier):

- ``CHANNEL_RULES``: op -> ``ChannelRule``: its paper Table II attribute (``role``), and how channel
  ids on its inputs become ids on its outputs (``propagate``), or why it blocks them.
- ``ROOT_RULES``: op -> function giving the ``RootSpec`` of a pruned node (the weight axis that
  indexes its output channels), or None when this instance is not prunable.
- ``SLICE_RULES``: op -> function that shrinks the node's constants and attributes once channels
  are removed from its inputs and outputs.
- ``SHAPE_RULES``: op -> numpy evaluation of integer shape values (Shape→Gather→Concat, a Slice
  end as Shape[1] // 2), so computed Reshape targets / Slice bounds / Split sizes / Resize sizes
  read as numbers, with the Shape dims each element counted (``fold_shapes``; ``SHAPE_OPERANDS``
  are the operands slice may rewrite).

**An op not in CHANNEL_RULES is a barrier**: channels that reach it are never removed. The effects
are the op's real semantics on the channel axis: elementwise ops preserve it (and couple two
tracked inputs), weight ops consume it, Concat / Flatten / Reshape / Transpose / Split / Slice
re-index it, and Softmax / reductions over that axis and LRN mix it (a barrier, but only over that
axis). A grouped Conv (ResNeXt, RegNet, depthwise) passes channels through by whole groups; a
Reshape that spreads channels over several axes (ShuffleNet's [N,g,C/g,H,W]) couples them so each
class varies along one axis only; ``Shape`` ends channels (its numbers are checked by trees).

Example: ``CHANNEL_RULES["Relu"].role == "next-no-process"``; a Conv's ``propagate`` with channel
ids on input 0 returns a leaf consumption through weight axis 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ir import Graph, Node

from .analyses import ChannelMap

DEFAULT_DOMAINS = ("", "ai.onnx")


# ----------------------------------------------------------------------------- views
@dataclass
class NodeView:
    """What a rule may look at: the node, its operands' constants and shapes, channel maps."""

    graph: Graph
    node: Node
    maps: list[ChannelMap | None]
    shapes: dict[str, tuple]
    opset: int
    static: dict[str, np.ndarray] = field(default_factory=dict)  # computed shape operands, folded
    shape_values: dict = field(default_factory=dict)  # name -> ShapeValue, partly known ones too

    def input_name(self, port: int) -> str | None:
        ins = self.graph.inputs_of(self.node)
        return ins[port].name if port < len(ins) and ins[port] is not None else None

    def const(self, port: int) -> np.ndarray | None:
        name = self.input_name(port)
        return None if name is None else self.graph.const_array(name)

    def static_value(self, port: int) -> np.ndarray | None:
        """A constant, or an integer operand computed from constants and static shapes (a
        Shape→Gather→Concat target): its value in the original model."""
        arr = self.const(port)
        if arr is not None:
            return arr
        name = self.input_name(port)
        return None if name is None else self.static.get(name)

    def shape(self, port: int) -> tuple | None:
        name = self.input_name(port)
        if name is None:
            return None
        arr = self.graph.const_array(name)
        if arr is not None:
            return tuple(arr.shape)
        return self.shapes.get(name)

    def rank(self, port: int) -> int | None:
        m = self.maps[port] if port < len(self.maps) else None
        if m is not None:
            return m.rank
        s = self.shape(port)
        return None if s is None else len(s)

    def n_inputs(self) -> int:
        return len(self.maps)

    def n_outputs(self) -> int:
        return len(self.graph.outputs_of(self.node))

    def output_used(self, port: int) -> bool:
        outs = self.graph.outputs_of(self.node)
        if port >= len(outs) or outs[port] is None:
            return False
        v = outs[port]
        return bool(self.graph.consumers(v)) or self.graph.is_graph_output(v)

    def labeled(self) -> list[int]:
        return [p for p, m in enumerate(self.maps) if m is not None]


@dataclass
class Effect:
    """A rule's answer: output maps by port, id pairs made equivalent, a leaf consumption
    ``(data_port, weight_port, weight_axis, filter_axis)``, or a block reason."""

    outputs: dict[int, ChannelMap] = field(default_factory=dict)
    couplings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    leaf: tuple[int, int, int, int] | None = None
    block: str | None = None
    heads: bool = False     # the output map's positions are attention heads (a class = one head)


def blocked(reason: str) -> Effect:
    return Effect(block=reason)


@dataclass(frozen=True)
class RootSpec:
    weight_port: int
    weight_axis: int
    out_axis: int
    out_rank: int
    channels: int


@dataclass(frozen=True)
class ChannelRule:
    role: str                                   # Table II attribute
    propagate: Callable[[NodeView], Effect]
    mixes: str = ""                             # what it mixes, for docs and `inspect`


# ----------------------------------------------------------------------------- helpers
def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _attr_or_input(view: NodeView, attr: str, port: int, since: int):
    """Read an operand that moved from an attribute to an input at opset ``since``."""
    if view.opset < since:
        value = view.node.attr(attr)
        return None if value is None else np.asarray(value, dtype=np.int64), True
    if port >= view.n_inputs() or view.input_name(port) is None:
        return None, True
    arr = view.const(port)
    return (None, False) if arr is None else (np.asarray(arr).astype(np.int64), True)


def _only(view: NodeView, port: int = 0) -> ChannelMap | None:
    """The single tracked input, when it is ``port``; None if other inputs are tracked too."""
    labeled = view.labeled()
    return view.maps[port] if labeled == [port] else None


def _same_all(view: NodeView, m: ChannelMap) -> Effect:
    return Effect(outputs={p: m for p in range(view.n_outputs())})


# ----------------------------------------------------------------------------- rules
def _unary(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach a non-data input of {view.node.op_type}")
    return _same_all(view, m)


def _broadcast(view: NodeView) -> Effect:
    """Elementwise with numpy broadcasting: tracked inputs must agree position by position
    (they are coupled); untracked inputs must broadcast along the channel axis or be constants
    (sliced later)."""
    ranks = [view.rank(p) for p in range(view.n_inputs()) if view.input_name(p) is not None]
    if any(r is None for r in ranks):
        return blocked(f"{view.node.op_type} operand of unknown rank")
    out_rank = max(ranks)
    axis, length, base = None, None, None
    couplings = []
    for p in view.labeled():
        m = view.maps[p]
        a = m.axis + out_rank - m.rank
        if axis is None:
            axis, length, base = a, len(m), m.ids
            continue
        if a != axis or len(m) != length:
            return blocked(f"{view.node.op_type} combines channels on different axes")
        both = (base >= 0) & (m.ids >= 0)
        if np.any((base >= 0) != (m.ids >= 0)):
            return blocked(f"{view.node.op_type} adds pruned channels to untracked data")
        couplings.append((base[both], m.ids[both]))
    for p in range(view.n_inputs()):
        if view.maps[p] is not None or view.input_name(p) is None:
            continue
        shape = view.shape(p)
        if shape is None:
            return blocked(f"{view.node.op_type} operand {view.input_name(p)!r} of unknown shape")
        a = axis - (out_rank - len(shape))
        if a < 0 or shape[a] == 1:
            continue
        if view.const(p) is None or shape[a] != length:
            return blocked(f"{view.node.op_type} mixes pruned channels with untracked data "
                           f"{view.input_name(p)!r}")
    m = ChannelMap(axis, out_rank, base)
    return Effect(outputs={p: m for p in range(view.n_outputs())}, couplings=couplings)


def _prelu(view: NodeView) -> Effect:
    if view.maps[1] is not None:
        return blocked("PRelu slope carries channels")
    return _broadcast(view)


def _where(view: NodeView) -> Effect:
    return _broadcast(view)


def _conv(view: NodeView) -> Effect:
    m = view.maps[0]
    if m is None or view.labeled() != [0]:
        return blocked(f"channels reach the weights of {view.node.op_type}")
    w = view.const(1)
    if w is None:
        return blocked(f"{view.node.op_type} weight is not a constant")
    if m.axis != 1:
        return blocked(f"{view.node.op_type} reads channels on axis {m.axis}, not 1")
    group = view.node.attr("group", 1)
    transposed = view.node.op_type == "ConvTranspose"
    if group == 1:
        # Conv W [O, I, k..]: input channels on axis 1; ConvTranspose W [I, O, k..]: axis 0
        return Effect(leaf=(0, 1, 0 if transposed else 1, 1 if transposed else 0))
    return _grouped_conv(view, m, w)


def conv_group_widths(node: Node, w: np.ndarray) -> tuple[int, int, int]:
    """(group, input channels per group, output channels per group) of a Conv/ConvTranspose."""
    group = node.attr("group", 1)
    if node.op_type == "ConvTranspose":  # W [C_in, C_out / group, k..]
        return group, w.shape[0] // group, w.shape[1]
    return group, w.shape[1], w.shape[0] // group        # W [C_out, C_in / group, k..]


def _grouped_conv(view: NodeView, m: ChannelMap, w: np.ndarray) -> Effect:
    """Grouped Conv (depthwise included) prunes whole groups, so every group left keeps its
    full width and ``group`` becomes the number of groups kept: the input channels of group g
    are coupled into one class, and its output channels carry that class."""
    group, w_in, w_out = conv_group_widths(view.node, w)
    if len(m) != group * w_in:
        return blocked(f"grouped {view.node.op_type} (group={group}) reads {len(m)} channels, "
                       f"its weight expects {group * w_in}")
    ids = m.ids.reshape(group, w_in)
    tracked = ids >= 0
    if np.any(tracked.any(axis=1) & ~tracked.all(axis=1)):
        return blocked(f"grouped {view.node.op_type} (group={group}) mixes pruned channels with "
                       "untracked data inside one group")
    couplings = []
    if w_in > 1:
        keep = tracked[:, 1:]
        first = np.broadcast_to(ids[:, :1], (group, w_in - 1))
        couplings.append((first[keep], ids[:, 1:][keep]))
    # output j of group g carries an id of input group g (all of them are one class)
    out = ids[:, np.arange(w_out) % w_in].reshape(-1)
    return Effect(outputs={0: ChannelMap(1, m.rank, out)}, couplings=couplings)


def _gemm(view: NodeView) -> Effect:
    m = view.maps[0]
    if m is None or view.labeled() != [0]:
        return blocked("channels reach the weights or bias of Gemm")
    if view.const(1) is None:
        return blocked("Gemm weight is not a constant")
    want = 0 if view.node.attr("transA", 0) else 1
    if m.axis != want or m.rank != 2:
        return blocked("Gemm reads channels on its row axis")
    trans_b = view.node.attr("transB", 0)
    return Effect(leaf=(0, 1, 1 if trans_b else 0, 0 if trans_b else 1))


def _matmul(view: NodeView) -> Effect:
    m = view.maps[0]
    w = view.const(1)
    if m is not None and view.labeled() == [0] and w is not None and w.ndim == 2:
        if m.axis != m.rank - 1 or m.rank < 2:
            return blocked("MatMul reads channels on a batch or row axis")
        return Effect(leaf=(0, 1, 0, 1))
    if w is not None or view.const(0) is not None:
        return blocked("MatMul weight is not a 2-D constant, or channels reach it")
    return _batched_matmul(view)


def _paired(keyed: list[tuple[object, ChannelMap]], mismatch: str):
    """Tracked operands read position by position along one axis (a batched MatMul's head axis,
    an Einsum letter): they must agree on the axis (``key``), the length, and where ids are
    tracked. Returns ``(key, ids, couplings)``, or the blocking Effect."""
    key, base = keyed[0][0], keyed[0][1].ids
    couplings = []
    for k, m in keyed[1:]:
        if k != key or len(m) != len(base) or np.any((base >= 0) != (m.ids >= 0)):
            return blocked(mismatch)
        couplings.append((base[base >= 0], m.ids[m.ids >= 0]))
    return key, base, couplings


def _batched_matmul(view: NodeView) -> Effect:
    """MatMul of two activations (attention's Q·Kᵀ and A·V): channels on a batch axis (the
    heads) pass through elementwise, and the two operands' channels there are coupled; channels
    on the two matrix axes are contracted or mixed, which blocks them."""
    ranks = [view.rank(0), view.rank(1)]
    if any(r is None or r < 2 for r in ranks):
        return blocked("MatMul of activations of unknown rank, or of a vector")
    out_rank = max(ranks)
    if any(view.maps[p].axis >= view.maps[p].rank - 2 for p in view.labeled()):
        return blocked("MatMul of two activations contracts or mixes the channel axis")
    paired = _paired([(view.maps[p].axis + out_rank - view.maps[p].rank, view.maps[p])
                      for p in view.labeled()], "MatMul pairs channels on different axes or with untracked data")
    if isinstance(paired, Effect):
        return paired
    axis, base, couplings = paired
    for p in (0, 1):
        if view.maps[p] is not None:
            continue
        shape = view.shape(p)
        if shape is None:
            return blocked("MatMul operand of unknown shape")
        a = axis - (out_rank - len(shape))
        if a >= 0 and shape[a] != 1:
            return blocked("MatMul pairs pruned channels with untracked data")
    return Effect(outputs={0: ChannelMap(axis, out_rank, base)}, couplings=couplings)


def _einsum(view: NodeView) -> Effect:
    """Einsum (MaxViT's ``BGHID,BGHJD->BGHIJ``): the channel axis's letter must reach the output
    (a contracted or summed letter mixes channels); operands sharing that letter are paired
    position by position, so tracked ones are coupled and an untracked one blocks."""
    eq = (view.node.attr("equation") or b"")
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if not arrow or "." in eq or len(terms) != view.n_inputs():
        return blocked("Einsum without an explicit output, or with an ellipsis")
    keyed = []
    for p in view.labeled():
        m = view.maps[p]
        if len(terms[p]) != m.rank:
            return blocked("Einsum term and operand rank disagree")
        here = terms[p][m.axis]
        if here not in out:
            return blocked("Einsum contracts the channel axis")
        if terms[p].count(here) != 1:
            return blocked("Einsum takes a diagonal along the channel axis")
        keyed.append((here, m))
    paired = _paired(keyed, "Einsum pairs channels on different letters or with untracked data")
    if isinstance(paired, Effect):
        return paired
    letter, base, couplings = paired
    for p, term in enumerate(terms):
        if view.maps[p] is None and letter in term:
            return blocked("Einsum pairs pruned channels with untracked data")
    return Effect(outputs={0: ChannelMap(out.index(letter), len(out), base)}, couplings=couplings)


def feeds_batched_matmul(graph: Graph, value, shapes: dict, depth: int = 6) -> bool:
    """Whether ``value`` reaches, through Transposes, identities and scalings by a scalar, a MatMul whose
    other operand is an activation: a Reshape that splits channels into attention heads. (Only a
    choice of representation rides on it; either choice is exact.)"""

    def scalar(v) -> bool:
        c = graph.const_array(v)
        shape = c.shape if c is not None else shapes.get(v.name)
        return shape is not None and all(d == 1 for d in shape)

    frontier = [value]
    for _ in range(depth):
        nxt = []
        for v in frontier:
            for node, port in graph.consumers(v):
                ins = graph.inputs_of(node)
                if node.op_type == "MatMul" and node.domain in DEFAULT_DOMAINS and len(ins) == 2:
                    if graph.const_array(ins[1 - port]) is None:
                        return True
                elif node.op_type == "Einsum" and node.domain in DEFAULT_DOMAINS and len(ins) == 2:
                    if graph.const_array(ins[1 - port]) is None:
                        return True
                elif node.op_type in ("Transpose", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Gather") or (
                        node.op_type == "Concat" and len(ins) == 1) or (  # GPT-2's empty KV cache
                        node.op_type in ("Mul", "Div") and len(ins) == 2 and scalar(ins[1 - port])):
                    nxt += [o for o in graph.outputs_of(node) if o is not None]
        frontier = nxt
    return False


def _batchnorm(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach BatchNormalization parameters")
    if m.axis != 1:
        return blocked("BatchNormalization normalizes axis 1, channels are elsewhere")
    if any(view.output_used(p) for p in range(1, view.n_outputs())):
        return blocked("BatchNormalization in training mode")
    params = [view.const(p) for p in range(1, min(5, view.n_inputs()))]
    if any(a is None for a in params):
        return blocked("BatchNormalization parameters are not constants")
    if any(a.ndim != 1 or len(a) != len(m) for a in params):  # opset < 9 `spatial=0` form
        return blocked("BatchNormalization with per-element (non-spatial) parameters")
    return Effect(outputs={0: m})


def _instancenorm(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None or m.axis != 1:
        return blocked("InstanceNormalization sees channels off axis 1")
    return Effect(outputs={0: m})


def _layernorm(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach LayerNormalization parameters")
    start = _axis(view.node.attr("axis", -1), m.rank)
    if m.axis >= start:
        return blocked("LayerNormalization normalizes over the channel axis (mixes channels)")
    return _same_all(view, m)


def _channel_pool(view: NodeView) -> Effect:
    """Pools keep axis 1 and mix only spatial axes."""
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach a parameter of {view.node.op_type}")
    if m.axis != 1:
        return blocked(f"{view.node.op_type} mixes the axis channels are on")
    if view.node.op_type == "MaxPool" and view.output_used(1):
        return blocked("MaxPool indices encode the channel position")
    return Effect(outputs={0: m})


def _lrn(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is not None and m.axis != 1:
        return Effect(outputs={0: m})
    return blocked("LRN normalizes across neighbouring channels (mixes channels)")


def _softmax(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach Softmax")
    if view.opset >= 13:
        axis = _axis(view.node.attr("axis", -1), m.rank)
        mixes = m.axis == axis
    else:  # opset < 13 coerces the input to 2-D at `axis` and normalizes the whole tail
        axis = _axis(view.node.attr("axis", 1), m.rank)
        mixes = m.axis >= axis
    if mixes:
        return blocked(f"{view.node.op_type} over the channel axis mixes channels")
    return Effect(outputs={0: m})


def _reduce(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach the axes input of {view.node.op_type}")
    since = 13 if view.node.op_type == "ReduceSum" else 18
    axes, known = _attr_or_input(view, "axes", 1, since)
    if not known:
        return blocked(f"{view.node.op_type} axes are not constant")
    if axes is None or len(axes) == 0:
        if view.node.attr("noop_with_empty_axes", 0):
            return Effect(outputs={0: m})
        axes = np.arange(m.rank)
    axes = sorted({_axis(int(a), m.rank) for a in np.ravel(axes)})
    if m.axis in axes:
        return blocked(f"{view.node.op_type} reduces over the channel axis (mixes channels)")
    keep = view.node.attr("keepdims", 1)
    new_axis = m.axis if keep else m.axis - sum(1 for a in axes if a < m.axis)
    new_rank = m.rank if keep else m.rank - len(axes)
    return Effect(outputs={0: ChannelMap(new_axis, new_rank, m.ids)})


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


def _reshape(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach the shape input of Reshape")
    target = view.static_value(1) if view.opset >= 5 else np.asarray(view.node.attr("shape", []))
    shape = view.shape(0)
    dynamic = target is None
    if dynamic:
        target = _symbolic_target(view, shape)
        if target is None:
            return blocked("Reshape to a computed shape that does not fold to a constant")
    target = [int(t) for t in np.ravel(target)]
    effect = _reshape_effect(view, m, shape, target)
    if dynamic and effect.block is None:  # nothing rewrites a computed target: it must adapt
        axis = effect.outputs[0].axis
        if not (target[axis] == -1 or (target[axis] == 0 and axis == m.axis)) or \
                (m.axis < len(target) and target[m.axis] == 0 and axis != m.axis):
            return blocked("Reshape to a computed shape whose channel entry cannot be rewritten")
    return effect


def _symbolic_target(view: NodeView, shape) -> list[int] | None:
    """A computed target whose unknown entries are each exactly the input's own symbolic dim at
    that index (``x.view(x.size(0), -1)`` with a dynamic batch), read with those entries as 0
    (copy the input dim, which pruning never changes); None for anything else."""
    sv = view.shape_values.get(view.input_name(1) or "")
    if sv is None or sv.value is None or sv.value.ndim != 1 or shape is None \
            or view.node.attr("allowzero", 0):
        return None
    out = []
    for i, (v, taint) in enumerate(zip(sv.value.tolist(), sv.taint)):
        marks = {b for a, b in taint if a is None}
        if not marks:
            out.append(int(v))
        elif i < len(shape) and isinstance(shape[i], str) and marks == {f"={shape[i]}"}:
            out.append(0)
        else:
            return None
    return out


def _reshape_effect(view: NodeView, m: ChannelMap, shape, target: list[int]) -> Effect:
    """The channel map of a Reshape of ``m`` (input ``shape``) to ``target`` (0 copies, -1 infers)."""
    out = _resolve_reshape(shape, target, view.node.attr("allowzero", 0))
    if out is not None and m.axis != 0:
        offset, full = 1, np.broadcast_to(  # per sample: the batch axis stays apart
            m.ids.reshape([len(m) if i == m.axis - 1 else 1 for i in range(len(shape) - 1)]),
            shape[1:]).reshape(out[1:])
    else:  # a fully static reshape may move the batch axis (GPT-2's [B·S, C] -> [B, S, C])
        out = _resolve_static_reshape(shape, target, view.node.attr("allowzero", 0))
        if out is None:
            return blocked("Reshape with an unknown per-sample shape or one that moves the batch axis")
        offset, full = 0, np.broadcast_to(
            m.ids.reshape([len(m) if i == m.axis else 1 for i in range(len(shape))]), shape).reshape(out)
    found = _single_axis(full)
    if found is not None:
        axis, ids = found
        if axis + offset == 0:
            return blocked("Reshape moves the channels onto the batch axis")
        return Effect(outputs={0: ChannelMap(axis + offset, len(out), ids)})
    heads = feeds_batched_matmul(view.graph, view.graph.outputs_of(view.node)[0], view.shapes)
    return _reshape_split(full, len(out), heads, offset)


def _resolve_static_reshape(shape, target, allowzero) -> list | None:
    """The output shape of Reshape when every input dim is known (batch included)."""
    if shape is None or not all(isinstance(d, int) for d in shape) or not target:
        return None
    out = [shape[i] if t == 0 and not allowzero and i < len(shape) else t for i, t in enumerate(target)]
    total = int(np.prod(shape, dtype=np.int64))
    if out.count(-1) == 1:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            return None
        out[out.index(-1)] = total // known
    if -1 in out or int(np.prod(out, dtype=np.int64)) != total:
        return None
    return out


def _reshape_split(full: np.ndarray, out_rank: int, heads: bool = False, offset: int = 1) -> Effect:
    """Channels spread over several axes (ShuffleNet's [N,C,H,W]→[N,g,C/g,H,W], heads): keep
    them on the largest varying axis and couple each position with the one at index 0 of the
    others, so one class is removed from every row alike (channel j of each of the g parts).
    Exact for any reshape: input and output then lose the same flat positions, in order.
    ``heads`` (the split feeds attention's per-head MatMuls, [B,S,C]→[B,S,H,D]): keep them on
    the head axis (the varying axis before the last) instead, so a class is a whole head, its D
    channels (and, from a packed [3, H, D] projection, its Q, K and V) coupled."""
    varying = [a for a in range(full.ndim)
               if not np.array_equal(np.broadcast_to(np.take(full, [0], axis=a), full.shape), full)]
    if heads and varying:  # the axis before the head dim: H of [.., H, D], also of Swin's [.., 3, H, D]
        axis = varying[-2] if len(varying) > 1 else varying[0]
    else:
        axis = max(varying or range(full.ndim), key=lambda a: (full.shape[a], a))  # none: one id
    if axis + offset == 0:
        return blocked("Reshape moves the channels onto the batch axis")
    ref = full[tuple(slice(None) if i == axis else slice(0, 1) for i in range(full.ndim))]
    ref_full = np.broadcast_to(ref, full.shape)
    if np.any((ref_full >= 0) != (full >= 0)):
        return blocked("Reshape spreads channels over several axes, mixed with untracked data")
    pairs = np.unique(np.stack([ref_full[full >= 0], full[full >= 0]], axis=1), axis=0)
    return Effect(outputs={0: ChannelMap(axis + offset, out_rank, ref.reshape(-1))},
                  couplings=[(pairs[:, 0], pairs[:, 1])] if len(pairs) else [],
                  heads=heads and bool(varying))


def _resolve_reshape(shape, target, allowzero) -> list | None:
    """Output shape of Reshape with the batch axis kept apart; None if it cannot be known."""
    if shape is None or len(target) == 0 or any(not isinstance(d, int) for d in shape[1:]):
        return None
    if not isinstance(shape[0], int) and target[0] > 0:
        # the target fixes the batch (a folded Shape read of a static input) where shape
        # inference lost it; a wrong guess would fail the mask-equivalence check, never ship
        shape = (target[0],) + tuple(shape[1:])
    out = list(target)
    for i, t in enumerate(out):
        if t == 0 and not allowzero:
            if i >= len(shape):
                return None
            out[i] = shape[i]
    if out[0] not in (-1, shape[0]) and not (target[0] == 0):
        return None
    per_sample = int(np.prod(shape[1:], dtype=np.int64))
    rest = out[1:]
    if out[0] == -1:  # -1 on the batch axis: the rest must be the whole sample
        if -1 in rest or int(np.prod(rest, dtype=np.int64)) != per_sample:
            return None
    elif rest.count(-1) == 1:
        known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
        if known == 0 or per_sample % known:
            return None
        rest[rest.index(-1)] = per_sample // known
    elif rest.count(-1) > 1 or int(np.prod(rest, dtype=np.int64)) != per_sample:
        return None
    return [shape[0]] + rest


def _single_axis(full: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The one axis along which channel ids vary in ``full`` (all others constant)."""
    varying = []
    for a in range(full.ndim):
        first = np.take(full, [0], axis=a)
        if not np.array_equal(np.broadcast_to(first, full.shape), full):
            varying.append(a)
    if len(varying) != 1:
        return None
    a = varying[0]
    ids = full[tuple(slice(None) if i == a else 0 for i in range(full.ndim))]
    return a, np.asarray(ids)


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
        pads = view.const(1)
    if pads is None:
        return blocked("Pad with non-constant pads")
    pads = np.ravel(pads).astype(np.int64)
    axes = list(range(m.rank))
    if view.opset >= 18 and view.n_inputs() > 3 and view.input_name(3) is not None:
        given = view.const(3)
        if given is None:
            return blocked("Pad with non-constant axes")
        axes = [_axis(int(a), m.rank) for a in np.ravel(given)]
    n = len(axes)
    if m.axis in axes:
        i = axes.index(m.axis)
        if pads[i] != 0 or pads[i + n] != 0:
            return blocked("Pad pads the channel axis")
    return Effect(outputs={0: m})


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
        sizes = view.static_value(3) if view.n_inputs() > 3 and view.input_name(3) else None
    if view.node.attr("axes") is not None:
        return blocked(f"{op} with an axes attribute is not supported yet")
    if sizes is not None:
        if int(np.ravel(sizes)[m.axis]) != len(m):
            return blocked(f"{op} resizes the channel axis")
        return Effect(outputs={0: m})
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
        return blocked("Gather picks along the channel axis")
    q = view.rank(1)
    if q is None:
        return blocked("Gather indices of unknown rank")
    new_axis = m.axis if m.axis < axis else m.axis + q - 1
    return Effect(outputs={0: ChannelMap(new_axis, m.rank + q - 1, m.ids)})


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
    if split is None:  # equal parts: an explicit list is needed once they shrink unevenly
        return None
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
        return blocked("Split along the channel axis without an explicit list of sizes")
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


UNARY = ["Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Cast", "Identity", "Dropout",
         "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
         "ThresholdedRelu", "Neg", "Abs", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round",
         "Sign", "Sin", "Cos", "Not", "IsNaN", "IsInf", "Mish", "Gelu", "Shrink", "CastLike"]
BROADCAST = ["Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "Equal", "Less",
             "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod"]

CHANNEL_RULES: dict[str, ChannelRule] = {
    **{op: ChannelRule("next-no-process", _unary) for op in UNARY},
    **{op: ChannelRule("next-process", _broadcast) for op in BROADCAST},
    "Clip": ChannelRule("next-no-process", _broadcast),  # opset 11+: min/max are scalar inputs
    "Where": ChannelRule("next-process", _where),
    "PRelu": ChannelRule("next-process", _prelu),
    "Conv": ChannelRule("stop-process", _conv),
    "ConvTranspose": ChannelRule("stop-process", _conv),
    "Gemm": ChannelRule("stop-process", _gemm),
    "MatMul": ChannelRule("stop-process", _matmul),
    "Einsum": ChannelRule("next-process", _einsum),
    "BatchNormalization": ChannelRule("next-process", _batchnorm),
    "InstanceNormalization": ChannelRule("next-process", _instancenorm),
    "LayerNormalization": ChannelRule("next-no-process", _layernorm, mixes="axes from `axis` on"),
    "MaxPool": ChannelRule("next-no-process", _channel_pool),
    "AveragePool": ChannelRule("next-no-process", _channel_pool),
    "LpPool": ChannelRule("next-no-process", _channel_pool),
    "GlobalAveragePool": ChannelRule("next-no-process", _channel_pool),
    "GlobalMaxPool": ChannelRule("next-no-process", _channel_pool),
    "GlobalLpPool": ChannelRule("next-no-process", _channel_pool),
    "LRN": ChannelRule("next-no-process", _lrn, mixes="the channel axis"),
    "Softmax": ChannelRule("next-no-process", _softmax, mixes="its `axis`"),
    "LogSoftmax": ChannelRule("next-no-process", _softmax, mixes="its `axis`"),
    "Hardmax": ChannelRule("next-no-process", _softmax, mixes="its `axis`"),
    **{op: ChannelRule("next-no-process", _reduce, mixes="its reduced axes")
       for op in ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1",
                  "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]},
    "Transpose": ChannelRule("next-no-process", _transpose),
    "Flatten": ChannelRule("next-no-process", _flatten),
    "Reshape": ChannelRule("next-process", _reshape),
    "Squeeze": ChannelRule("next-no-process", _squeeze),
    "Unsqueeze": ChannelRule("next-no-process", _squeeze),
    "Concat": ChannelRule("next-process", _concat),
    "Pad": ChannelRule("next-no-process", _pad),
    "Resize": ChannelRule("next-process", _resize),
    "Upsample": ChannelRule("next-process", _resize),
    "Gather": ChannelRule("next-process", _gather),
    "Slice": ChannelRule("next-process", _slice),
    "Split": ChannelRule("next-process", _split),
    "Shape": ChannelRule("next-no-process", _shape),
    "Constant": ChannelRule("next-no-process", _constant_operands_only),
}


# ----------------------------------------------------------------------------- shape values
# Integer sub-graphs that compute shapes (Shape→Gather→Concat→Reshape, a Slice's end as
# Shape[1] // 2). Each value is folded to its number in the original model when every input is a
# constant or a static shape, and every element carries its *taint*: the (value, axis) dims of
# the Shape nodes it was computed from. After pruning a dim on a channel axis changes, so a
# tainted element is only right where a slice rule rewrites it (SHAPE_OPERANDS); anywhere else
# the channels of that value are blocked (see trees).

Taint = frozenset  # of (value name, axis); axis "*" when the Shape's rank is unknown
_NO_TAINT: Taint = frozenset()
# markers in a taint (value name None): the element is not static; (None, "=N") when it is exactly
# the symbolic dim N (a dynamic batch read by Shape, moved by Gather/Concat but not computed on)
UNKNOWN = (None, "?")


def _blur(taint: np.ndarray) -> np.ndarray:
    """After arithmetic an element equal to a symbolic dim is just unknown."""
    fix = np.frompyfunc(lambda t: frozenset(UNKNOWN if a is None else (a, b) for a, b in t), 1, 1)
    return np.asarray(fix(taint), object).reshape(np.shape(taint)) if np.size(taint) else taint


def _known(taint: Taint) -> bool:
    return not any(a is None for a, _ in taint)
_union = np.frompyfunc(lambda a, b: a | b, 2, 1)
SHAPE_VALUE_LIMIT = 1024  # larger integer tensors are data, not shapes


@dataclass
class ShapeValue:
    """A folded integer tensor (``value`` None when it is not static) and its per-element taint
    (an object array of frozensets, or one frozenset for the whole value when not static)."""

    value: np.ndarray | None
    taint: np.ndarray | Taint

    def union(self) -> Taint:
        if isinstance(self.taint, frozenset):
            return self.taint
        return frozenset().union(*self.taint.ravel()) if self.taint.size else _NO_TAINT

    def static(self) -> bool:
        return self.value is not None and _known(self.union())


def _untainted(value: np.ndarray) -> ShapeValue:
    taint = np.empty(value.shape, object)
    taint.fill(_NO_TAINT)
    return ShapeValue(value, taint)


def _shape_of(node: Node, ins: list, shape, name: str, opset: int) -> ShapeValue:
    if shape is None:
        return ShapeValue(None, frozenset({(name, "*"), UNKNOWN}))
    rank = len(shape)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start, end = (max(0, min(rank, _axis(a, rank))) for a in (start, end))
    taint = np.empty(max(0, end - start), object)
    for i, a in enumerate(range(start, end)):
        d = shape[a]
        mark = set() if isinstance(d, int) else {(None, f"={d}") if isinstance(d, str) and d else UNKNOWN}
        taint[i] = frozenset({(name, a)} | mark)
    value = [d if isinstance(d, int) else 1 for d in shape[start:end]]  # 1: a placeholder
    return ShapeValue(np.asarray(value, np.int64), taint)


def _elementwise(fn):
    def rule(node, ins, opset):
        arrays = [sv.value for sv in ins]
        out = fn(*arrays)
        taints = np.broadcast_arrays(*[np.asarray(sv.taint, object) for sv in ins])
        t = taints[0]
        for other in taints[1:]:
            t = _union(t, other)
        return ShapeValue(np.asarray(out), _blur(np.asarray(t, object).reshape(np.shape(out))))
    return rule


def _int_div(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):  # ONNX integer Div truncates toward zero
        q = np.abs(a) // np.maximum(np.abs(b), 1)
        return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))
    return np.true_divide(a, b)


def _fold_gather(node, ins, opset):
    axis = node.attr("axis", 0)
    idx = ins[1].value
    return ShapeValue(np.take(ins[0].value, idx, axis=axis), np.take(ins[0].taint, idx, axis=axis))


def _fold_axes(node, ins, opset, since=13):
    axes = node.attr("axes") if opset < since else (ins[1].value if len(ins) > 1 else None)
    return None if axes is None else [int(a) for a in np.ravel(axes)]


def _fold_unsqueeze(node, ins, opset):
    axes = _fold_axes(node, ins, opset)
    v, t = ins[0].value, ins[0].taint
    rank = v.ndim + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        v, t = np.expand_dims(v, a), np.expand_dims(t, a)
    return ShapeValue(v, t)


def _fold_squeeze(node, ins, opset):
    axes = _fold_axes(node, ins, opset)
    v, t = ins[0].value, ins[0].taint
    axes = tuple(i for i, d in enumerate(v.shape) if d == 1) if axes is None else \
        tuple(_axis(a, v.ndim) for a in axes)
    return ShapeValue(np.squeeze(v, axes), np.squeeze(t, axes))


def _fold_concat(node, ins, opset):
    axis = node.attr("axis", 0)
    return ShapeValue(np.concatenate([sv.value for sv in ins], axis=axis),
                      np.concatenate([np.asarray(sv.taint, object) for sv in ins], axis=axis))


def _fold_slice(node, ins, opset):
    v, t = ins[0].value, ins[0].taint
    if opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends = ins[1].value, ins[2].value
        axes = ins[3].value if len(ins) > 3 and ins[3] is not None else None
        steps = ins[4].value if len(ins) > 4 and ins[4] is not None else None
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * v.ndim
    for a, b, e, st in zip(np.ravel(axes), np.ravel(starts), np.ravel(ends), np.ravel(steps)):
        index[_axis(int(a), v.ndim)] = slice(int(b), int(e), int(st))
    return ShapeValue(v[tuple(index)], t[tuple(index)])


def _fold_cast(node, ins, opset):
    import onnx  # local: only this rule needs the type table

    dtype = onnx.helper.tensor_dtype_to_np_dtype(node.attr("to"))
    return ShapeValue(ins[0].value.astype(dtype), ins[0].taint)


def _whole(fn):
    """An op whose output shape depends on its operands' values (Range, ConstantOfShape,
    Expand): every output element carries the taint of every input."""
    def rule(node, ins, opset):
        out = np.asarray(fn(node, *[None if sv is None else sv.value for sv in ins]))
        taint = frozenset().union(*(sv.union() for sv in ins if sv is not None))
        t = np.empty(out.shape, object)
        t.fill(taint)
        return ShapeValue(out, _blur(t))
    return rule


def _constant_of_shape(node, shape):
    import onnx  # local: only this rule reads a tensor attribute

    value = node.attr("value")
    fill = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    if int(np.prod(shape)) > SHAPE_VALUE_LIMIT:
        raise ValueError("too large to be a shape value")
    return np.full([int(d) for d in shape], fill.reshape(-1)[0], fill.dtype)


def _fold_reshape(node, ins, opset):
    v, t = ins[0].value, ins[0].taint
    target = [int(d) for d in np.ravel(ins[1].value)]
    if not node.attr("allowzero", 0):
        target = [v.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return ShapeValue(v.reshape(target), np.asarray(t, object).reshape(target))


def _fold_transpose(node, ins, opset):
    perm = node.attr("perm") or list(range(ins[0].value.ndim))[::-1]
    return ShapeValue(np.transpose(ins[0].value, perm), np.transpose(ins[0].taint, perm))


def _mod(node, a, b):
    return np.fmod(a, b) if node.attr("fmod", 0) else np.mod(a, b)


SHAPE_RULES: dict[str, Callable] = {
    "Identity": lambda node, ins, opset: ins[0],
    "Cast": _fold_cast,
    "Gather": _fold_gather,
    "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze,
    "Concat": _fold_concat,
    "Slice": _fold_slice,
    "Reshape": _fold_reshape,
    "Transpose": _fold_transpose,
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _elementwise(_int_div),
    "Floor": _elementwise(np.floor),
    "Ceil": _elementwise(np.ceil),
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Max": _elementwise(np.maximum),
    "Min": _elementwise(np.minimum),
    "Equal": _elementwise(np.equal),
    "Less": _elementwise(np.less),
    "Greater": _elementwise(np.greater),
    "Not": _elementwise(np.logical_not),
    "Where": _elementwise(np.where),
    "Mod": _whole(_mod),
    "Range": _whole(lambda node, start, limit, delta: np.arange(start, limit, delta)),
    "ConstantOfShape": _whole(_constant_of_shape),
    "Expand": _whole(lambda node, x, shape: x * np.ones([int(d) for d in shape], x.dtype)),
}

# Operands a slice rule rewrites as constants (a computed one is frozen to its folded value
# first, then rewritten for the channels removed): op -> ports.
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Resize": (1, 2, 3),
}


@dataclass
class FoldedShapes:
    """Shape values of a graph: folded (static) ones by value name, taints of every shape value,
    and the nodes that computed them."""

    static: dict[str, np.ndarray]
    values: dict[str, ShapeValue]
    nodes: set[str]


def fold_shapes(graph: Graph, shapes: dict[str, tuple], opset: int) -> FoldedShapes:
    values: dict[str, ShapeValue] = {}
    nodes: set[str] = set()

    def lookup(v) -> ShapeValue | None:
        if v is None:
            return None
        if v.name in values:
            return values[v.name]
        arr = graph.const_array(v)
        if arr is not None and np.issubdtype(arr.dtype, np.integer) and arr.size <= SHAPE_VALUE_LIMIT:
            return _untainted(np.asarray(arr))
        return None

    for node in graph.topo_nodes():
        if node.domain not in DEFAULT_DOMAINS:
            continue
        outs = graph.outputs_of(node)
        if not outs or outs[0] is None:
            continue
        if node.op_type == "Shape":
            src = graph.inputs_of(node)[0]
            values[outs[0].name] = _shape_of(node, [], shapes.get(src.name), src.name, opset)
            nodes.add(node.name)
            continue
        rule = SHAPE_RULES.get(node.op_type)
        if rule is None or len(outs) != 1:
            continue
        ins = [lookup(v) for v in graph.inputs_of(node)]
        present = [sv for v, sv in zip(graph.inputs_of(node), ins) if v is not None]
        if not present or any(sv is None for sv in present):
            continue  # reads data that is not a shape value: an ordinary op
        unknown = frozenset().union(*(sv.union() for sv in present)) | {UNKNOWN}
        if any(sv.value is None for sv in present):
            out = ShapeValue(None, unknown)
        else:
            try:
                out = rule(node, ins, opset)
            except Exception:  # an operand form this folder does not know: not static
                out = ShapeValue(None, unknown)
            if out.value is not None and out.value.size > SHAPE_VALUE_LIMIT:
                out = ShapeValue(None, out.union() | {UNKNOWN})
        values[outs[0].name] = out
        nodes.add(node.name)
    static = {k: sv.value for k, sv in values.items() if sv.static()}
    return FoldedShapes(static, values, nodes)


# ----------------------------------------------------------------------------- roots
def _conv_root(view: NodeView) -> RootSpec | None:
    w = view.const(1)
    if w is None or w.ndim < 3 or view.node.attr("group", 1) != 1:
        return None
    rank = view.rank(0) or w.ndim
    if view.node.op_type == "ConvTranspose":
        return RootSpec(1, 1, 1, rank, int(w.shape[1]))
    return RootSpec(1, 0, 1, rank, int(w.shape[0]))


def _gemm_root(view: NodeView) -> RootSpec | None:
    w = view.const(1)
    if w is None or w.ndim != 2:
        return None
    if view.input_name(2) is not None and view.const(2) is None:
        return None
    trans_b = view.node.attr("transB", 0)
    return RootSpec(1, 0 if trans_b else 1, 1, 2, int(w.shape[0] if trans_b else w.shape[1]))


def _matmul_root(view: NodeView) -> RootSpec | None:
    w = view.const(1)
    rank = view.rank(0)
    if w is None or w.ndim != 2 or rank is None or rank < 2 or view.const(0) is not None:
        return None
    return RootSpec(1, 1, rank - 1, rank, int(w.shape[1]))


ROOT_RULES: dict[str, Callable[[NodeView], RootSpec | None]] = {
    "Conv": _conv_root,
    "ConvTranspose": _conv_root,
    "Gemm": _gemm_root,
    "MatMul": _matmul_root,
}


# ----------------------------------------------------------------------------- slicing
@dataclass
class Rewriter:
    """What a slice rule may change on one node: its constant inputs and its attributes.
    Constants are never written in place when shared: the node gets its own copy."""

    graph: Graph
    node: Node
    opset: int

    def const(self, port: int) -> np.ndarray | None:
        ins = self.graph.inputs_of(self.node)
        return None if port >= len(ins) or ins[port] is None else self.graph.const_array(ins[port])

    def set_const(self, port: int, array: np.ndarray) -> None:
        from ir import Initializer  # local: only transforms build initializers

        value = self.graph.inputs_of(self.node)[port]
        if self._write_through(value, np.asarray(array)):
            return
        uses = self.graph.consumers(value)
        init = self.graph.initializer(value.name)
        if init is not None and len(uses) == 1 and not self.graph.is_graph_output(value) \
                and value.name not in self.graph.input_names:
            self.graph.replace_initializer(Initializer.from_array(value.name, array.astype(init.array.dtype)))
            return
        name = self.graph.unique_name(f"{value.name}.{self.node.name}" if init is not None
                                      else f"{self.node.name}.in{port}")
        old = self.graph.const_array(value)  # None for a computed operand being frozen
        dtype = array.dtype if old is None else old.dtype
        self.graph.add_initializer(Initializer.from_array(name, np.asarray(array).astype(dtype)))
        self.graph.set_input(self.node, port, name)

    def _write_through(self, value, array: np.ndarray) -> bool:
        """A weight behind single-use Transpose / Cast links from an initializer (PyTorch's
        MatMul(x, Transpose(W)), a float16 weight behind a Cast): undo each link and rewrite the
        initializer itself, so the model keeps its layout and its dtype."""
        from ir import Initializer  # local: only transforms build initializers

        g = self.graph
        if g.initializer(value.name) is not None:
            return False  # a plain initializer: set_const's own path
        while g.initializer(value.name) is None:
            prod = g.producer(value)
            if prod is None or prod.domain not in DEFAULT_DOMAINS or prod.op_type not in ("Transpose", "Cast") \
                    or len(g.consumers(value)) != 1 or g.is_graph_output(value):
                return False
            if prod.op_type == "Transpose":
                perm = prod.attr("perm") or list(range(array.ndim))[::-1]
                array = np.transpose(array, np.argsort(perm))
            value = g.inputs_of(prod)[0]  # a Cast is undone below: the values came from its source
            if value is None:
                return False
        init = g.initializer(value.name)
        if len(g.consumers(value)) != 1 or g.is_graph_output(value) or value.name in g.input_names:
            return False
        g.replace_initializer(Initializer.from_array(value.name, array.astype(init.array.dtype)))
        return True

    def set_attr(self, key: str, value) -> None:
        self.node = self.node.with_attr(key, value)
        self.graph.replace_node(self.node)


Keeps = dict[int, tuple[int, np.ndarray, int]]   # port -> (axis, keep mask along it, rank)


def _take(arr: np.ndarray, axis: int, keep: np.ndarray) -> np.ndarray:
    return np.compress(keep, arr, axis=axis)


def _slice_conv(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    w = rw.const(1)
    transposed = rw.node.op_type == "ConvTranspose"
    out_axis, in_axis = (1, 0) if transposed else (0, 1)
    group = rw.node.attr("group", 1)
    new_w = w
    if group > 1:  # whole groups go: output filters (Conv) or input rows (ConvTranspose)
        _, w_in, _ = conv_group_widths(rw.node, w)
        keep_in = ins[0][1] if 0 in ins else np.ones(group * w_in, bool)
        per_group = keep_in.reshape(group, w_in)
        assert np.all(per_group.all(axis=1) | ~per_group.any(axis=1)), "a group is cut partly"
        new_w = _take(w, 0, keep_in) if transposed else _take(w, 0, outs[0][1]) if 0 in outs else w
        if new_w is not w:
            rw.set_const(1, new_w)
        rw.set_attr("group", int(per_group.all(axis=1).sum()))
    else:
        if 0 in outs:
            new_w = _take(new_w, out_axis, outs[0][1])
        if 0 in ins:
            new_w = _take(new_w, in_axis, ins[0][1])
        if new_w is not w:
            rw.set_const(1, new_w)
    if 0 in outs and rw.const(2) is not None:
        rw.set_const(2, _take(rw.const(2), 0, outs[0][1]))


def _slice_gemm(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    w = rw.const(1)
    trans_b = rw.node.attr("transB", 0)
    new_w = w
    if 0 in outs:
        new_w = _take(new_w, 0 if trans_b else 1, outs[0][1])
        c = rw.const(2)
        if c is not None and c.ndim >= 1 and c.shape[-1] == len(outs[0][1]) and c.shape[-1] > 1:
            rw.set_const(2, _take(c, c.ndim - 1, outs[0][1]))
    if 0 in ins:
        new_w = _take(new_w, 1 if trans_b else 0, ins[0][1])
    if new_w is not w:
        rw.set_const(1, new_w)


def _slice_matmul(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    w = rw.const(1)
    if w is None or w.ndim != 2 or rw.const(0) is not None:
        return  # a MatMul of two activations (attention heads): nothing of its own to cut
    new_w = w
    if 0 in outs:
        new_w = _take(new_w, 1, outs[0][1])
    if 0 in ins:
        new_w = _take(new_w, 0, ins[0][1])
    if new_w is not w:
        rw.set_const(1, new_w)


def _slice_per_channel_params(first: int, last: int):
    """BatchNormalization / InstanceNormalization: 1-D parameters indexed by channel."""
    def rule(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
        keep = ins[0][1]
        for port in range(first, last + 1):
            arr = rw.const(port)
            if arr is not None and arr.ndim == 1 and len(arr) == len(keep):
                rw.set_const(port, arr[keep])
    return rule


def _slice_broadcast_constants(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Per-channel constants of an elementwise op (Caffe-style scale, PRelu slope, ...)."""
    if 0 not in outs:
        return
    axis, keep, out_rank = outs[0]
    for port, value in enumerate(rw.graph.inputs_of(rw.node)):
        if value is None or port in ins:
            continue
        arr = rw.const(port)
        if arr is None:
            continue
        a = axis - (out_rank - arr.ndim)
        if a >= 0 and arr.shape[a] == len(keep) and arr.shape[a] > 1:
            rw.set_const(port, _take(arr, a, keep))


def _slice_reshape(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 not in outs:
        return
    axis, keep, _ = outs[0]
    in_axis = ins[0][0] if 0 in ins else None
    zero_copies = not rw.node.attr("allowzero", 0)
    if rw.opset < 5:
        target = np.array(rw.node.attr("shape"), dtype=np.int64)
    elif rw.const(1) is None:
        return  # a computed target the channel rule found right as it is (a -1 on the channels)
    else:
        target = np.array(rw.const(1), dtype=np.int64).copy()
    if zero_copies and in_axis is not None and in_axis < len(target) and target[in_axis] == 0:
        target[in_axis] = len(ins[0][1])  # a 0 there copied the input's channel count: keep it
    if target[axis] != -1:
        target[axis] = int(keep.sum())
    if rw.opset < 5:
        rw.set_attr("shape", [int(t) for t in target])
    else:
        rw.set_const(1, target)


def _slice_slice(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Channel-axis bounds move to the kept positions: start' = kept before start, end' = kept
    before end (step 1 only; see ``_slice``)."""
    if 0 not in ins:
        return
    axis, keep, rank = ins[0]
    if rw.opset < 10:
        starts, ends, axes = (list(rw.node.attr(k)) if rw.node.attr(k) is not None else None
                              for k in ("starts", "ends", "axes"))
    else:
        starts, ends = [np.array(rw.const(p), dtype=np.int64).copy() for p in (1, 2)]
        axes = rw.const(3)
    axes = list(range(len(starts))) if axes is None else [_axis(int(a), rank) for a in np.ravel(axes)]
    if axis not in axes:
        return
    i = axes.index(axis)
    start, end = _clamp_range(int(starts[i]), int(ends[i]), len(keep))
    starts[i], ends[i] = int(keep[:start].sum()), int(keep[:max(start, end)].sum())
    if rw.opset < 10:
        rw.set_attr("starts", [int(v) for v in starts])
        rw.set_attr("ends", [int(v) for v in ends])
    else:
        rw.set_const(1, np.asarray(starts))
        rw.set_const(2, np.asarray(ends))


def _slice_split(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 not in ins:
        return
    axis, keep, rank = ins[0]
    if _axis(rw.node.attr("axis", 0), rank) != axis:
        return
    sizes = rw.node.attr("split") if rw.opset < 13 else rw.const(1)
    offsets = np.concatenate(([0], np.cumsum(np.ravel(sizes))))
    new = [int(keep[offsets[p]:offsets[p + 1]].sum()) for p in range(len(offsets) - 1)]
    if rw.opset < 13:
        rw.set_attr("split", new)
    else:
        rw.set_const(1, np.asarray(new, dtype=np.int64))


def _slice_resize(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if rw.node.op_type != "Resize" or rw.opset < 11:
        return
    ins_list = rw.graph.inputs_of(rw.node)
    if len(ins_list) > 3 and ins_list[3] is not None:
        axis, keep, _ = outs[0]
        sizes = np.array(rw.const(3), dtype=np.int64).copy()
        sizes[axis] = int(keep.sum())
        rw.set_const(3, sizes)


SLICE_RULES: dict[str, Callable[[Rewriter, Keeps, Keeps], None]] = {
    "Conv": _slice_conv,
    "ConvTranspose": _slice_conv,
    "Gemm": _slice_gemm,
    "MatMul": _slice_matmul,
    "BatchNormalization": _slice_per_channel_params(1, 4),
    "InstanceNormalization": _slice_per_channel_params(1, 2),
    **{op: _slice_broadcast_constants for op in BROADCAST + ["Clip", "Where", "PRelu"]},
    "Reshape": _slice_reshape,
    "Slice": _slice_slice,
    "Split": _slice_split,
    "Resize": _slice_resize,
    "Upsample": _slice_resize,
}

# Ops whose channel-carrying behaviour involves constants that must shrink: each needs a
# SLICE_RULES entry (a test checks the two tables agree).
WEIGHT_BEARING = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
                  "InstanceNormalization", "PRelu")


def role_of(op_type: str, domain: str = "") -> str:
    """The Table II attribute of an op type, ``barrier`` when it is not in the table."""
    if domain not in DEFAULT_DOMAINS or op_type not in CHANNEL_RULES:
        return "barrier"
    if op_type in ROOT_RULES:
        return "pruned"
    return CHANNEL_RULES[op_type].role
