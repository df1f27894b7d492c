"""The channel rule of Reshape: a channel axis carried through a head split, a channel shuffle, a
flatten of trailing axes, or a target computed from Shape reads (symbolic dims), each landing the
channel ids on the output axis that holds them; anything it cannot follow blocks. Used by the
table (``_reshape``) and by the stream rules (``_entries``)."""

from __future__ import annotations

import numpy as np

from ..analyses import ChannelMap
from .adaptive import _classify, adaptive_reshape, aliased, self_adapting_entry
from .channels import feeds_batched_matmul, feeds_group_norm
from .views import Effect, NodeView, _only, blocked, landing_axis


def _reshape(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach the shape input of Reshape")
    target = view.static_value(1) if view.opset >= 5 else np.asarray(view.node.attr("shape", []))
    shape = view.shape(0)
    dynamic = target is None
    if dynamic:
        target = _symbolic_target(view, shape)
        if target is None:  # one that names its own size, adapts by itself to the pruned input,
            # or whose symbolic dims (a dynamic batch, sequence, cache length) stay apart
            self_sized = _self_sized(view, m, shape)
            if self_sized is not None:
                return self_sized
            effect = adaptive_reshape(view, m, shape, _reshape_effect)
            if effect.block:
                other = symbolic_reshape(view, m, shape)
                if other.block:
                    return _counted(view, m, shape) or _regrouped_lead(view, m, shape) or effect
                return other
            return effect
    target = [int(t) for t in np.ravel(target)]
    effect = _reshape_effect(view, m, shape, target)
    if effect.block and not dynamic:  # [B, S, H, D] -> [-1, H·D] with a symbolic batch
        return _regrouped_lead(view, m, shape, target) or effect
    if dynamic and effect.block is None:  # nothing rewrites a computed target: it must adapt
        axis = effect.outputs[0].axis
        if not (target[axis] == -1 or (target[axis] == 0 and axis == m.axis)) or \
                (m.axis < len(target) and target[m.axis] == 0 and axis != m.axis):
            return _self_sized(view, m, shape) or _counted(view, m, shape) or _frozen(view, m, shape)
    return effect


def _frozen(view: NodeView, m: ChannelMap, shape) -> Effect:
    """A computed target whose symbolic elements are copies (0) and whose channel entry is a plain
    constant (jax2onnx's ``x.reshape(x.shape[0], -1)`` of NHWC: ``Concat(Shape(x)[0], [768])``):
    frozen and rewritten as ``adaptive_reshape`` does, or blocked."""
    effect = adaptive_reshape(view, m, shape, _reshape_effect)
    return effect if effect.block is None and effect.freeze else \
        blocked("Reshape to a computed shape whose channel entry cannot be rewritten")


def _counted(view: NodeView, m: ChannelMap, shape) -> Effect | None:
    """A computed target that regroups only the axes before the channel axis (GPT-2's
    ``ln_f(h).view(-1, S, h.size(-1))``, its batch and sequence symbolic): the channel axis and
    the static axes after it keep their sizes, so the map is the input's whatever the leading
    sizes. The channel entry is the count read by Shape off the input, or off a value carrying as
    many channels (``adaptive.aliased``, coupled with it); the leading entries read no channel
    count and copy (0) no axis from the channel axis on. After pruning the Shape reads the kept
    count: the target adapts by itself."""
    out = view.graph.outputs_of(view.node)[0]
    out_shape = view.shapes.get(out.name) if out is not None else None
    if shape is None or out_shape is None or view.node.attr("allowzero", 0):
        return None
    k = len(shape) - m.axis
    tail = tuple(shape[m.axis:])
    if len(out_shape) < k or any(not isinstance(d, int) for d in tail) or tuple(out_shape[len(out_shape) - k:]) != tail:
        return None
    axis = len(out_shape) - k
    src = view.input_name(0)
    sv, pairs = aliased(view.shape_values.get(view.input_name(1) or ""), src, m, view.known)
    if sv is None or sv.value is None or isinstance(sv.taint, frozenset) or sv.value.shape != (len(out_shape),):
        return None
    for i, (v, taint) in enumerate(zip(sv.value.tolist(), sv.taint)):
        counts = [(a, b) for a, b in taint if a is not None and a in view.known
                  and b in (view.known[a].axis, "*")]
        if i < axis and (counts or (not taint and v == 0 and i >= m.axis)):
            return None
        if i > axis and (taint or v != out_shape[i]):
            return None
    if not self_adapting_entry(sv, src, shape, m.axis, axis):
        return None
    return Effect(outputs={0: ChannelMap(axis, len(out_shape), m.ids)}, adapts=(1,), couplings=pairs)


def _regrouped_lead(view: NodeView, m: ChannelMap, shape, static: list[int] | None = None) -> Effect | None:
    """A computed target that regroups the axes before the channel axis and splits the channel
    axis (with the static axes after it) by plain constants: jax2onnx's Dense on [B, S, C] is
    ``Gemm(Reshape(x, [-1, C]))``, and attention's head split of its [B·S, C] output is
    ``Reshape(y, Concat(Shape(x)[0:2], [H, D]))``. The leading entries read no channel count and
    copy (0) no axis from the channel axis on, so they never change with pruning; the tail is
    mapped as a static reshape would map it ([C] -> [H, D]), the target frozen, its channel entry
    rewritten by slice and its symbolic entries computed again at run time (``slice.keep_live``).
    A ``static`` target (the merge back after attention, ``[-1, H·D]``) is mapped the same way,
    nothing frozen."""
    from .adaptive import _reads_channels

    src = view.input_name(0)
    if static is not None:
        sv, pairs = None, []
        values, taints = list(static), [frozenset()] * len(static)
    else:
        sv, pairs = aliased(view.shape_values.get(view.input_name(1) or ""), src, m, view.known)
        if sv is None or sv.value is None or isinstance(sv.taint, frozenset) or sv.value.ndim != 1:
            return None
        values, taints = sv.value.tolist(), list(sv.taint)
    if shape is None or view.node.attr("allowzero", 0) or m.axis == 0:
        return None
    tail = list(shape[m.axis:])
    if any(not isinstance(d, int) for d in tail):
        return None
    j = len(values)  # the target's tail: plain positive constants whose product is the input's tail
    while j > 0 and not taints[j - 1] and values[j - 1] > 0 and \
            int(np.prod(values[j - 1:], dtype=np.int64)) <= int(np.prod(tail, dtype=np.int64)):
        j -= 1
        if int(np.prod(values[j:], dtype=np.int64)) == int(np.prod(tail, dtype=np.int64)):
            break
    if j == 0 or j == len(values) or int(np.prod(values[j:], dtype=np.int64)) != int(np.prod(tail, dtype=np.int64)):
        return None  # j == len(values): a tail of ones ([B, T, F, 1] -> [B, T, F]) drops the channel axis
    for i in range(j):
        if any(_reads_channels(a, b, src, m, view.known) for a, b in taints[i]):
            return None
        if not taints[i] and values[i] == 0 and i >= m.axis:
            return None  # a 0 copying the input's channel axis or one after it
    full = np.broadcast_to(m.ids.reshape([len(m)] + [1] * (len(tail) - 1)), tail).reshape(values[j:])
    effect = _carried(view, full, len(values), j)
    if effect.block:
        return None
    return Effect(outputs=effect.outputs, couplings=pairs + list(effect.couplings),
                  freeze=(1,) if static is None else ())


def _self_sized(view: NodeView, m: ChannelMap, shape) -> Effect | None:
    """A computed target read off the input itself, ``x.view(T * B, x.size(2))`` before a
    recognizer's classifier: entries computed from the input's symbolic dims (one at most, read
    as -1) and its own channel count, which sits on the output's channel axis. After pruning the
    Shape reads the kept count, so the target adapts by itself (``Effect.adapts``)."""
    name = view.input_name(1) or ""
    src = view.input_name(0)
    sv, pairs = aliased(view.shape_values.get(name), src, m, view.known)
    if sv is None or sv.value is None or sv.value.ndim != 1 or shape is None or view.node.attr("allowzero", 0) \
            or not isinstance(shape[m.axis], int):
        return None
    # the channel count, or its product with the static dims after it (``c * h`` of [.., C, H])
    spans = {frozenset((src, a) for a in range(m.axis, j)): int(np.prod(shape[m.axis:j], dtype=np.int64))
             for j in range(m.axis + 1, len(shape) + 1) if all(isinstance(d, int) for d in shape[m.axis:j])}
    target, own = [], None
    for i, (v, taint) in enumerate(zip(sv.value.tolist(), sv.taint)):
        reads = {(a, b) for a, b in taint if a is not None}
        unknown = any(a is None for a, _ in taint)
        if not unknown and all(a == src and b != m.axis for a, b in reads):
            target.append(int(v))  # a constant, or static dims pruning never changes
        elif not unknown and spans.get(frozenset(reads)) == v and own is None:
            own = i
            target.append(int(v))
        elif unknown and all(a == src and b != m.axis for a, b in reads) and -1 not in target:
            target.append(-1)
        else:
            return None
    if own is None:
        return None
    effect = _reshape_effect(view, m, shape, target)
    if effect.block is not None or effect.couplings or effect.outputs[0].axis != own:
        return None
    return Effect(outputs=effect.outputs, adapts=(1,), couplings=pairs)


def _symbolic_target(view: NodeView, shape) -> list[int] | None:
    """A computed target whose unknown entries are each exactly the input's own symbolic dim at
    that index (``x.view(x.size(0), -1)`` with a dynamic batch), read with those entries as 0
    (copy the input dim, which pruning never changes); None for anything else."""
    if shape is None or view.node.attr("allowzero", 0):
        return None
    out = _classify(view.shape_values.get(view.input_name(1) or ""), shape)
    return None if out is None or None in out else out  # an inferred (-1) entry is adaptive's case


def _entries(view: NodeView, port: int) -> tuple[list, list] | None:
    """A computed shape operand element by element: an int where its value is known, the symbolic
    dim's name where it is exactly that dim; and per element whether a Shape read feeds it (its
    value then follows the pruned model's shapes at run time); None for an unknown element."""
    sv = view.shape_values.get(view.input_name(port) or "")
    if sv is None or sv.value is None or sv.value.ndim != 1:
        return None
    out, read = [], []
    for v, taint in zip(sv.value.tolist(), sv.taint):
        marks = {b for a, b in taint if a is None}
        if not marks:
            out.append(int(v))
        elif len(marks) == 1 and next(iter(marks)).startswith("="):
            out.append(next(iter(marks))[1:])
        else:
            out.append(None)  # unknown
        read.append(any(a is not None for a, _ in taint))
    return out, read


def symbolic_reshape(view: NodeView, m: ChannelMap, shape) -> Effect:
    """Reshape to a computed target with symbolic dims (a dynamic batch, sequence, cache length):
    leading and trailing dims the target copies from the input (0, the same number, or exactly the
    same symbolic dim) stay apart; the static middle, the channel axis in it, is reshaped as a
    static one would be. The channel entry must adapt by itself: -1, or a 0 copying it (a number
    read from the channels' own shape would too, but nothing proves yet which axis it was read
    from: blocked, as ``trees`` blocks such reads)."""
    got = _entries(view, 1)
    if got is None or shape is None or view.node.attr("allowzero", 0) or any(d is None for d in shape):
        return blocked("Reshape to a computed shape that does not fold to a constant")
    raw, read = got
    target = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(raw)]
    k = 0
    while k < min(len(shape), len(target), m.axis) and target[k] == shape[k]:
        k += 1
    j = 0
    while len(shape) - 1 - j > m.axis and len(target) - 1 - j >= k and target[-1 - j] == shape[-1 - j]:
        j += 1
    mid_in, mid_out = list(shape[k:len(shape) - j]), list(target[k:len(target) - j])
    if k == 0 or not all(isinstance(d, int) and not isinstance(d, bool) for d in mid_in + mid_out) \
            or mid_out.count(-1) > 1 or any(t is None for t in raw):
        return blocked("Reshape with an unknown per-sample shape or one that moves the batch axis")
    total = int(np.prod(mid_in, dtype=np.int64))
    if -1 in mid_out:
        known = int(np.prod([d for d in mid_out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            return blocked("Reshape to a computed shape that does not fit its input")
        mid_out[mid_out.index(-1)] = total // known
    if int(np.prod(mid_out, dtype=np.int64)) != total:
        return blocked("Reshape to a computed shape that does not fit its input")
    full = np.broadcast_to(m.ids.reshape([len(m) if i == m.axis - k else 1 for i in range(len(mid_in))]),
                           mid_in).reshape(mid_out)
    effect = _carried(view, full, len(target), k, mid_in, m.axis - k)
    if effect.block:
        return effect
    axis = effect.outputs[0].axis
    if not (raw[axis] == -1 or (raw[axis] == 0 and axis == m.axis)):
        return blocked("Reshape to a computed shape whose channel entry cannot be rewritten")
    return effect


def _reshape_effect(view: NodeView, m: ChannelMap, shape, target: list[int]) -> Effect:
    """The channel map of a Reshape of ``m`` (input ``shape``) to ``target`` (0 copies, -1 infers)."""
    out = _resolve_reshape(shape, target, view.node.attr("allowzero", 0))
    if out is not None and m.axis != 0:
        offset, full = 1, np.broadcast_to(  # per sample: the batch axis stays apart
            m.ids.reshape([len(m) if i == m.axis - 1 else 1 for i in range(len(shape) - 1)]),
            shape[1:]).reshape(out[1:])
    else:  # a fully static reshape may move the batch axis (GPT-2's [B·S, C] -> [B, S, C])
        out = _resolve_static_reshape(shape, target, view.node.attr("allowzero", 0))
        tail = None if out is not None else _resolve_tail(shape, target, view.node.attr("allowzero", 0), m.axis)
        if out is None and tail is None:
            return _outer_axes_kept(view, m, shape, target) or \
                blocked("Reshape with an unknown per-sample shape or one that moves the batch axis")
        if tail is not None:  # symbolic leading dims copied as they are ([B, S, C] -> [0, 0, -1, D])
            offset, out = tail
            full = np.broadcast_to(m.ids.reshape([len(m) if i == m.axis else 1 for i in range(offset, len(shape))]),
                                   shape[offset:]).reshape(out[offset:])
        else:
            offset, full = 0, np.broadcast_to(
                m.ids.reshape([len(m) if i == m.axis else 1 for i in range(len(shape))]), shape).reshape(out)
    found = _single_axis(full, tuple(shape[offset:]), m.axis - offset)
    if found is not None:
        axis, ids = found
        if axis + offset == 0 and not _batch_of_one(shape, m.axis):
            return blocked("Reshape moves the channels onto the batch axis")
        return Effect(outputs={0: ChannelMap(axis + offset, len(out), ids)})
    value = view.graph.outputs_of(view.node)[0]
    heads = feeds_batched_matmul(view.graph, value, view.shapes)
    if not heads and feeds_group_norm(view.graph, value):  # torch's GroupNorm: [N, C, ..] -> [N, G, -1]
        effect = _reshape_split(full, len(out), True, offset)
        effect.heads = False  # a class is one group of channels, normalized together
        return effect
    return _reshape_split(full, len(out), heads, offset)


def _carried(view: NodeView, full: np.ndarray, rank: int, offset: int, ins=(), c: int = -1) -> Effect:
    """The ids ``full`` (the reshaped part of the output, from axis ``offset``) on one axis, or
    split over several (heads, ``_reshape_split``)."""
    found = _single_axis(full, ins, c)
    if found is not None:
        return Effect(outputs={0: ChannelMap(found[0] + offset, rank, found[1])})
    heads = feeds_batched_matmul(view.graph, view.graph.outputs_of(view.node)[0], view.shapes)
    return _reshape_split(full, rank, heads, offset)


def _batch_of_one(shape, axis: int) -> bool:
    """Every axis before the channel axis is a static 1: a fully static Reshape that merges them
    with it (the dynamo exporter's Kᵀ: [1, H, S, D] -> [-1, S, D] -> Transpose -> [1, H, D, S])
    puts exactly the channels on axis 0, and nothing there is a sample of a batch."""
    return axis > 0 and all(isinstance(d, int) and not isinstance(d, bool) and d == 1 for d in shape[:axis])


def _outer_axes_kept(view: NodeView, m: ChannelMap, shape, target: list[int]) -> Effect | None:
    """Sequence-first tensors (an RNN's [T, B, 2, H]) whose leading dims are symbolic: a Reshape
    acts on each outer position alike when its target copies the leading axes (0 entries: they
    act as one batch axis) or keeps the trailing static dims as they are (identical trailing
    dims of equal total size map one to one: ``[T, B, C] -> [-1, C]``)."""
    if shape is None or view.node.attr("allowzero", 0):
        return None
    lead = next((i for i, t in enumerate(target) if t != 0), len(target))
    lead = min(lead, len(shape) - 1)
    if lead > 1 and m.axis >= lead:
        inner = _reshape_effect(view, ChannelMap(m.axis - lead + 1, m.rank - lead + 1, m.ids),
                                ("outer",) + tuple(shape[lead:]), [0] + list(target[lead:]))
        if inner.block is not None:
            return None
        return Effect(outputs={p: ChannelMap(c.axis + lead - 1, c.rank + lead - 1, c.ids)
                               for p, c in inner.outputs.items()},
                      couplings=inner.couplings, heads=inner.heads)
    same = 0
    while same < min(len(shape), len(target)) - 1 and isinstance(shape[-1 - same], int) \
            and shape[-1 - same] > 0 and target[-1 - same] == shape[-1 - same]:
        same += 1
    if same and m.axis >= len(shape) - same and target.count(-1) <= 1:
        return Effect(outputs={0: ChannelMap(len(target) - (len(shape) - m.axis), len(target), m.ids)})
    return None


def _resolve_tail(shape, target, allowzero, channel_axis: int) -> tuple[int, list] | None:
    """``(k, output shape)`` of a Reshape whose first ``k`` entries copy the input's leading dims
    (0, or the same number) — symbolic ones (a dynamic batch and sequence) included — and whose
    dims from ``k`` on, the channel axis among them, are static on the input side."""
    if shape is None or allowzero or not target:
        return None
    k = 0
    while k < min(len(shape), len(target), channel_axis) and (
            target[k] == 0 or (isinstance(shape[k], int) and target[k] == shape[k])):
        k += 1
    if k == 0 or any(not isinstance(d, int) for d in shape[k:]):
        return None
    rest = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(target) if i >= k]
    total = int(np.prod(shape[k:], dtype=np.int64))
    if rest.count(-1) == 1:
        known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            return None
        rest[rest.index(-1)] = total // known
    if -1 in rest or int(np.prod(rest, dtype=np.int64)) != total:
        return None
    return k, list(shape[:k]) + rest


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
    if full.ndim == 0:
        return blocked("Reshape drops the channel axis")
    varying = _varying(full)
    if heads and varying:  # the axis before the head dim: H of [.., H, D], also of Swin's [.., 3, H, D]
        axis = varying[-2] if len(varying) > 1 else varying[0]
    else:
        axis = max(varying or range(full.ndim), key=lambda a: (full.shape[a], a))  # none: one id
    if axis + offset == 0:
        return blocked("Reshape moves the channels onto the batch axis")
    ref = full[tuple(slice(None) if i == axis else slice(0, 1) for i in range(full.ndim))]
    core = _core(full, axis)  # the same ids, each position pair once per broadcast copy
    ref_full = np.broadcast_to(ref, core.shape)
    if np.any((ref_full >= 0) != (core >= 0)):
        return blocked("Reshape spreads channels over several axes, mixed with untracked data")
    tracked = core >= 0
    firsts, others = _distinct_pairs(ref_full[tracked], core[tracked])
    return Effect(outputs={0: ChannelMap(axis + offset, out_rank, ref.reshape(-1))},
                  couplings=[(firsts, others)] if len(firsts) else [],
                  heads=heads and bool(varying))


def _distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pairs ``(a[i], b[i])`` of non-negative ids, ordered by ``a`` then ``b``:
    ``np.unique(np.stack([a, b], 1), axis=0)``'s columns, by one sort of ``a * (max(b) + 1) + b``
    (``np.unique`` along an axis sorts rows as records: ViT-B/16's 48 head splits, 151k rows each,
    took 14 ms that way)."""
    dtype = np.result_type(a, b)
    if not len(a):
        return np.zeros(0, dtype), np.zeros(0, dtype)
    base = int(b.max()) + 1
    keys = np.sort(a.astype(np.int64) * base + b.astype(np.int64))
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return (keys // base).astype(dtype), (keys % base).astype(dtype)


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


def _core(full: np.ndarray, keep: int = -1) -> np.ndarray:
    """``full`` at position 0 of each axis it is broadcast along (stride 0, so every position
    holds the same ids; ``keep`` excepted): what varies in it and which id pairs it holds are
    those of ``full`` (ViT-B/16's [S, H, D] head splits compare 768 positions, not 151k)."""
    if 0 in full.shape:
        return full
    return full[tuple(slice(0, 1) if st == 0 and a != keep else slice(None) for a, st in enumerate(full.strides))]


def _varying(full: np.ndarray) -> list[int]:
    """The axes along which the ids in ``full`` vary (``_varies``), read on ``_core(full)``."""
    core = _core(full)
    return [a for a in range(full.ndim) if _varies(core, a)]


def _varies(full: np.ndarray, a: int) -> bool:
    """The ids in ``full`` differ along axis ``a`` (from its first position). The first position
    is a view: ``np.take`` copied the whole (broadcast, strided) ``full`` first (ViT-B/16's 109
    reshapes, 40 ms)."""
    if not full.shape[a]:
        np.take(full, [0], axis=a)  # an empty axis has no first position: IndexError, as before
    first = full[(slice(None),) * a + (slice(0, 1),)]
    return not np.array_equal(np.broadcast_to(first, full.shape), full)


def _single_axis(full: np.ndarray, ins=(), c: int = -1) -> tuple[int, np.ndarray] | None:
    """The one axis along which ids vary in ``full``; if none (one channel): input axis ``c`` of ``ins``'s."""
    varying = _varying(full)
    if not varying and ins:
        varying = [a for a in (landing_axis(ins, full.shape, c),) if a is not None]
    if len(varying) != 1:
        return None
    a = varying[0]
    ids = full[tuple(slice(None) if i == a else 0 for i in range(full.ndim))]
    return a, np.asarray(ids)
