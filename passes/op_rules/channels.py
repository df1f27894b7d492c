"""Channel rules of ops that keep the channel axis where it is: elementwise and broadcasting ops,
the weight ops (Conv, Gemm, MatMul, Einsum: they consume channels as leaves), normalizations,
pooling, and the ops that mix along an axis (LRN, Softmax, reductions: barriers over that axis)."""

from __future__ import annotations

import numpy as np

from ir import Graph, Node

from ..analyses import ChannelMap
from .computed import expanded_constant, zero_filled
from .derived import channels_from_constants
from .views import DEFAULT_DOMAINS, Effect, NodeView, _attr_or_input, _axis, _only, _same_all, blocked


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
    for p in _without_gates(view, out_rank):
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
        if shape[a] != length or (view.const(p) is None and not _expanded_rows(view, p, a, len(shape))
                                  and not _zero_state(view, p)
                                  and not channels_from_constants(view, p, axis, out_rank, length)):
            return blocked(f"{view.node.op_type} mixes pruned channels with untracked data "
                           f"{view.input_name(p)!r}")
    m = ChannelMap(axis, out_rank, base)
    return Effect(outputs={p: m for p in range(view.n_outputs())}, couplings=couplings)


def _without_gates(view: NodeView, out_rank: int) -> list[int]:
    """The tracked operands, less those with one channel broadcast over another's many on the
    same axis (FocalNet's ``ctx * gates[:, l:l+1]``): that channel is a per-position scalar
    here, coupled to nothing. It is never removed: a value carrying part of a group (the
    one-channel slice) keeps at least one of its channels (``classify``'s non-empty sets), and a
    group of one channel keeps it."""
    labeled = view.labeled()
    lengths = [len(view.maps[p]) for p in labeled]
    axes = {view.maps[p].axis + out_rank - view.maps[p].rank for p in labeled}
    if len(axes) != 1 or max(lengths) == 1 or min(lengths) != 1:
        return labeled
    return [p for p, n in zip(labeled, lengths) if n > 1]


def _expanded_rows(view: NodeView, p: int, a: int, rank: int) -> bool:
    """Operand ``p`` is a constant Expand-ed to the batch whose channel axis ``a`` is its own
    (CaiT's class token, added to the class stream it also starts), or one the Expand broadcasts
    along that axis (jax2onnx's zero carry of an unrolled GRU, ``Expand(0.0, [B, 24])``: every
    channel the same value): cut per reader by a Gather."""
    const = expanded_constant(view.graph, view.input_name(p), shared=True)
    if const is None or const[0] is None:
        return False
    arr = const[2]
    k = a - (rank - arr.ndim)
    if k >= 0 and arr.shape[k] == (view.shape(p) or [None] * rank)[a]:
        return True
    # broadcast by the Expand: slice reads the extent off the declared shape (jax2onnx declares it)
    declared = view.graph.value(view.input_name(p)).shape
    return (k < 0 or arr.shape[k] == 1) and declared is not None and len(declared) == rank \
        and declared[a] == (view.shape(p) or [None] * rank)[a]


def _zero_state(view: NodeView, p: int) -> bool:
    """Operand ``p`` is zeros of a computed shape (``ConstantOfShape``: PyTorch's unrolled LSTMCell
    starts its cell state so, ``f * c0``) read by an op that keeps a zero channel zero: removed
    channels stay exact zeros in the masked original; cut per reader by a Gather."""
    return view.node.op_type in ("Add", "Sub", "Mul") and zero_filled(view.graph, view.input_name(p))


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
        if pointwise_along(view, m.axis):
            return Effect(outputs={0: m})
        return blocked(f"{view.node.op_type} reads channels on axis {m.axis}, not 1")
    group = view.node.attr("group", 1)
    transposed = view.node.op_type == "ConvTranspose"
    if group == 1:
        # Conv W [O, I, k..]: input channels on axis 1; ConvTranspose W [I, O, k..]: axis 0
        return Effect(leaf=(0, 1, 0 if transposed else 1, 1 if transposed else 0))
    return _grouped_conv(view, m, w)


def pointwise_along(view: NodeView, axis: int) -> bool:
    """A Conv that maps each position of spatial ``axis`` to the same position: kernel 1, stride 1,
    no padding there (CoaT's aggregate: Conv1d(3, 1, 1) over torch.stack([x2, x3, x4], 1), whose
    spatial axis is the embedding). Channel ids on that axis pass unchanged; the node is then no
    root (its output carries them, not its own filters)."""
    node, w = view.node, view.const(1)
    if node.op_type != "Conv" or w is None or axis < 2 or axis >= w.ndim:
        return False
    k = axis - 2
    strides = node.attr("strides") or [1] * (w.ndim - 2)
    pads = node.attr("pads") or [0] * (2 * (w.ndim - 2))
    auto_pad = node.attr("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return w.shape[axis] == 1 and strides[k] == 1 and pads[k] == 0 and pads[k + w.ndim - 2] == 0 \
        and auto_pad in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


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
        if m.rank >= 2 and m.axis < m.rank - 1:  # each row is multiplied on its own (MLP-Mixer's
            return Effect(outputs={0: m})         # token MLP over transposed channels): they pass
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


# ops a head split's lookahead passes through on its way to Q·Kᵀ / A·V (rotary arithmetic, the
# cache Concat, repeat_kv's Expand); only where the split keeps its ids rides on it
TOWARD_HEADS = ("Mul", "Add", "Sub", "Neg", "Slice", "Split", "Concat", "Expand", "Cast", "Where")


def toward_heads(graph: Graph, node: Node, port: int) -> bool:
    """Whether the head split's lookahead goes on through ``node`` (reached on input ``port``)."""
    if node.domain not in DEFAULT_DOMAINS or node.op_type not in TOWARD_HEADS:
        return False
    if node.op_type in ("Slice", "Split", "Expand", "Neg", "Cast"):
        return port == 0
    if node.op_type == "Where":
        return port in (1, 2)
    return True


def feeds_batched_matmul(graph: Graph, value, shapes: dict, depth: int = 6) -> bool:
    """Whether ``value`` reaches, through Transposes, identities and scalings by a scalar, a MatMul whose
    other operand is an activation: a Reshape that splits channels into attention heads. Rotary
    arithmetic, a KV-cache Concat and repeat_kv's Expand on the way (``toward_heads``), and the
    Reshape that merges the Expand's copies (the dynamo exporter merges them with the batch for its
    3-D Kᵀ: [1, KV, n, S, D] -> [KV·n, S, D]) are passed without counting against ``depth`` (at
    most 4 × depth nodes in all).
    (Only a choice of representation rides on it; either choice is exact.)"""

    def scalar(v) -> bool:
        c = graph.const_array(v)
        shape = c.shape if c is not None else shapes.get(v.name)
        return shape is not None and all(d == 1 for d in shape)

    frontier = [(value, 0)]
    seen: set[tuple[str, int]] = set()
    for _ in range(4 * depth):
        nxt = []
        for v, used in frontier:
            for node, port in graph.consumers(v):
                ins = graph.inputs_of(node)
                if node.op_type == "MatMul" and node.domain in DEFAULT_DOMAINS and len(ins) == 2:
                    if graph.const_array(ins[1 - port]) is None:
                        return True
                    continue
                if node.op_type == "Einsum" and node.domain in DEFAULT_DOMAINS and len(ins) == 2:
                    if graph.const_array(ins[1 - port]) is None:
                        return True
                    continue
                prod = graph.producer(v)
                if node.op_type == "Reshape" and port == 0 and prod is not None and prod.op_type == "Expand" \
                        and prod.domain in DEFAULT_DOMAINS:
                    cost = 0  # repeat_kv's merge
                elif node.op_type in ("Mul", "Div") and len(ins) == 2 and scalar(ins[1 - port]) or \
                        node.op_type in ("Transpose", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Gather") or (
                        node.op_type == "Concat" and len(ins) == 1):  # GPT-2's empty KV cache
                    cost = 1
                elif toward_heads(graph, node, port):
                    cost = 0
                else:
                    continue
                if used + cost >= depth:
                    continue
                for o in graph.outputs_of(node):
                    if o is not None and (o.name, used + cost) not in seen:
                        seen.add((o.name, used + cost))
                        nxt.append((o, used + cost))
        frontier = nxt
        if not frontier:
            break
    return False


def feeds_group_norm(graph: Graph, value) -> bool:
    """Whether ``value`` (a Reshape's output) is normalized per row of axis 1 by an
    InstanceNormalization: torch's GroupNorm, ``[N, C, H, W] -> [N, G, C/G·H·W]``. Its channels
    then stay on the group axis, each group one class (whole groups go, whose statistics no other
    group reads: nothing to correct)."""
    return any(node.op_type == "InstanceNormalization" and node.domain in ("", "ai.onnx") and port == 0
               for node, port in graph.consumers(value))


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
