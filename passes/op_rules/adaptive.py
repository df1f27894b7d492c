"""A Reshape to a computed target that adapts by itself (a recognizer's ``x.reshape(b, c * h, w)``
with a dynamic batch and width): its channel entry is read from the Shape of the Reshape's own
input, as the product of that input's dims including the channel axis, so once channels go the
graph computes the new entry (``K · h``) itself; nothing needs rewriting. The other entries are
each a symbolic dim of the input: the one at the same index is read as 0 (copied), one other as -1
(inferred). The channel map is computed with two different sizes for the symbolic dims and must
not depend on them.

Example: ``h [N, 8, 4, W] -> Reshape(h, Concat(Shape(h)[0], Shape(h)[1] * Shape(h)[2], Shape(h)[3]))``:
target read as ``[0, 32, -1]``; channel c owns positions 4c..4c+3 of axis 1.
"""

from __future__ import annotations

import numpy as np

from ..analyses import ChannelMap
from .shape_values import ShapeValue
from .views import Effect, NodeView, blocked

TRIAL_SIZES = (7, 11)   # two sizes for the symbolic dims: the channel map must not change


def aliased(sv, source: str, m: ChannelMap, known: dict):
    """``(sv, couplings)``: ``sv`` with each read of another value's channel axis renamed as a read
    of ``source``'s, where that value carries as many tracked channels as ``m`` on that axis, and
    the couplings that keep the two counts equal once channels go (position by position). GPT-2's
    ``ln_f(h).view(-1, S, h.size(-1))`` reads the count off the residual stream ``h`` before its
    LayerNorm, not off the reshaped value."""
    if sv is None or sv.value is None or isinstance(sv.taint, frozenset) or not known:
        return sv, []
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def same(a, b) -> bool:
        other = known.get(a) if a is not None and a != source else None
        if other is None or b != other.axis or len(other) != len(m) or np.any(other.ids < 0) \
                or np.any(m.ids < 0):
            return False
        pairs[a] = (other.ids, m.ids)
        return True

    taint = np.empty(sv.taint.shape, object)
    for i, t in enumerate(sv.taint.flat):
        taint.flat[i] = frozenset((source, m.axis) if same(a, b) else (a, b) for a, b in t)
    return ShapeValue(sv.value, taint), list(pairs.values())


def _classify(sv, shape, counts=None) -> list | None:
    """Per target element: an int, 0 (the input's own symbolic dim at that index), or None (a
    symbolic dim of the input elsewhere, or with ``counts`` any element not static that does not
    count the channels (``counts(taint)`` false: tf2onnx's Tensordot merges the batch into
    ``Prod(Shape[:3])``): inferred as -1, at most one. A valid target with one unknown element
    is fixed by the others, so -1 reshapes as it does)."""
    if sv is None or sv.value is None or sv.value.ndim != 1 or isinstance(sv.taint, frozenset):
        return None
    out, inferred = [], 0
    for i, (v, taint) in enumerate(zip(sv.value.tolist(), sv.taint)):
        marks = {b for a, b in taint if a is None}
        if not marks:
            out.append(int(v))
        elif i < len(shape) and isinstance(shape[i], str) and marks == {f"={shape[i]}"}:
            out.append(0)
        elif len(marks) == 1 and next(iter(marks)).startswith("=") and next(iter(marks))[1:] in \
                [d for d in shape if isinstance(d, str)]:
            out.append(None)
            inferred += 1
        elif counts is not None and not counts(taint):
            out.append(None)
            inferred += 1
        else:
            return None
    return out if inferred <= 1 else None


def self_adapting_entry(sv, source: str, shape, channel_axis: int, out_axis: int) -> bool:
    """The target's element at ``out_axis`` is the product of static dims of ``source`` that
    include its channel axis, and no other element reads that channel axis."""
    if out_axis >= len(sv.taint):
        return False
    for i, taint in enumerate(sv.taint):
        reads_channels = (source, channel_axis) in taint
        if i != out_axis and reads_channels:
            return False
    taint = sv.taint[out_axis]
    if (source, channel_axis) not in taint or any(a != source for a, _ in taint):
        return False
    dims = sorted(b for _, b in taint)
    if any(not isinstance(shape[d], int) for d in dims):
        return False
    return int(sv.value[out_axis]) == int(np.prod([shape[d] for d in dims], dtype=np.int64))


def adaptive_reshape(view: NodeView, m: ChannelMap, shape, reshape_effect) -> Effect:
    source = view.input_name(0)
    sv, pairs = aliased(view.shape_values.get(view.input_name(1) or ""), source, m, view.known)

    def counts(taint) -> bool:
        return any(_reads_channels(a, b, source, m, view.known) for a, b in taint)

    elems = _classify(sv, shape, counts) if shape is not None and not view.node.attr("allowzero", 0) else None
    if elems is None:
        return blocked("Reshape to a computed shape that does not fold to a constant")
    target = [-1 if e is None else e for e in elems]
    effects = []
    for size in TRIAL_SIZES:
        trial = tuple(shape[:1]) + tuple(d if isinstance(d, int) else size for d in shape[1:])
        effects.append(reshape_effect(view, m, trial, target))
    first, second = effects
    if first.block or second.block or first.couplings or second.couplings:
        return blocked("Reshape to a computed shape whose channel map depends on symbolic dims")
    a, b = first.outputs[0], second.outputs[0]
    if a.axis != b.axis or not np.array_equal(a.ids, b.ids):
        return blocked("Reshape to a computed shape whose channel map depends on symbolic dims")
    axis = a.axis
    copied = target[axis] == 0 and axis == m.axis
    if not copied and not self_adapting_entry(sv, source, shape, m.axis, axis):
        if not _constant_entry(sv, axis, len(a), counts):
            return blocked("Reshape to a computed shape whose channel entry cannot be rewritten")
        # the channel entry is a plain number among symbolic dims (tf2onnx's Tensordot back to
        # [N, H, W, 384]; jax2onnx's flatten of NHWC, [B, 768] = [B, H·W·C]): frozen to its folded
        # value, the entry rewritten by slice (to the kept positions of that axis), the symbolic
        # elements computed again at run time (slice.keep_live)
        return Effect(outputs=first.outputs, couplings=pairs + list(first.couplings), freeze=(1,))
    return Effect(outputs=first.outputs, couplings=pairs) if pairs else first


def _reads_channels(a, b, source: str, m: ChannelMap, known: dict) -> bool:
    """A Shape read ``(value a, axis b)`` is of a tracked channel axis: ``source``'s own (map
    ``m``) or any other value's (``known``)."""
    return a is not None and (a == source or a in known) and b in ((m.axis if a == source else known[a].axis), "*")


def _constant_entry(sv, axis: int, positions: int, counts) -> bool:
    """The target's element ``axis`` is a constant, the size of the output axis that carries the
    channels (``positions``: the channel count, or its product with static dims flattened with
    it), read from no Shape, and no element counts channels: freezing the target and rewriting
    that entry is exact."""
    if axis >= len(sv.taint) or sv.taint[axis] or int(sv.value[axis]) != positions:
        return False
    return not any(counts(t) for t in sv.taint)


def adapts(graph, node, sv, maps, shapes) -> bool:
    """For trees' shape-value check: ``node`` is a Reshape whose computed target (``sv``, port 1)
    adapts by itself to its pruned input (see the module doc)."""
    ins, outs = graph.inputs_of(node), graph.outputs_of(node)
    if node.op_type != "Reshape" or len(ins) < 2 or ins[0] is None or outs[0] is None:
        return False
    m_in, m_out = maps.get(ins[0].name), maps.get(outs[0].name)
    shape = shapes.get(ins[0].name)
    if m_in is None or m_out is None or shape is None or sv.value is None or isinstance(sv.taint, frozenset):
        return False
    sv, _ = aliased(sv, ins[0].name, m_in, maps)  # counts read off a value coupled to the input (the rule coupled them)
    for taint in sv.taint:  # channel axes read from other values: those counts change elsewhere
        for a, b in taint:
            if a is not None and a != ins[0].name and a in maps and b in (maps[a].axis, "*"):
                return False
    return self_adapting_entry(sv, ins[0].name, shape, m_in.axis, m_out.axis) or \
        (m_in.axis == m_out.axis and not any((ins[0].name, m_in.axis) in t for t in sv.taint))


def computed_sizes(view: NodeView, m: ChannelMap) -> Effect:
    """Resize to sizes computed from Shape reads (paddle2onnx's nearest interpolate writes
    ``Resize(x, sizes=Concat(Shape(x)[:2], Shape(y)[2:]))`` with every dim symbolic): the channel
    entry is ``x``'s own channel count (or a count read off a value carrying as many tracked
    channels, coupled with it) and no other entry reads a tracked channel axis. Once channels go,
    Shape reads the kept count: the sizes adapt by themselves and nothing is rewritten."""
    src = view.input_name(0)
    sv, pairs = aliased(view.shape_values.get(view.input_name(3) or ""), src, m, view.known)
    if sv is None or sv.value is None or isinstance(sv.taint, frozenset) or sv.value.shape != (m.rank,):
        return blocked("Resize to sizes computed by more than Shape reads")
    for i, taint in enumerate(sv.taint):
        if i == m.axis and taint != frozenset({(src, m.axis)}):
            return blocked("Resize to computed sizes whose channel entry is not its input's channel count")
        if i != m.axis and any(_reads_channels(a, b, src, m, view.known) for a, b in taint):
            return blocked("Resize to computed sizes that read a channel count off the channel axis")
    return Effect(outputs={0: m}, adapts=(3,), couplings=pairs)
