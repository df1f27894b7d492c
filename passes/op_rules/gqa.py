"""GQA query heads thinned within their KV groups (``trees{gqa=queries}``, CLI ``--gqa queries``).

By default repeat_kv couples each KV head with its query heads (``attention``), so a KV group goes
whole. With ``gqa=queries`` every KV head stays and each group loses the same number of query heads:

- ``repeat_merge`` (trees): the Reshape that merges repeat_kv's broadcast copies,
  ``Expand(k [.., KV, 1, T, D] -> [.., KV, n_rep, T, D])`` then ``Reshape -> [.., KV·n_rep, T, D]``,
  gives its head axis fresh ids, one per (KV head, copy) position. Q·Kᵀ and A·V couple each with
  the query head at that position, so a class is one query head; the KV ids it read end there,
  kept whole (K, V, their rotary and cache). Only that exact shape is recognized: the Expand's
  input has 1 on the copy axis (the copies are identical, so which copy a query reads does not
  matter), and the Reshape merges exactly the KV and copy axes.
- ``Trees.repeats`` gives each fresh id's KV group (position // n_rep); ``classify`` gives a group
  of query heads its ``blocks`` and ``mask`` removes the same number from every block.
- ``_slice_repeat`` (slice): the Reshape's own target loses the removed heads (``_slice_reshape``);
  the Expand's copy count becomes the kept heads per group, n_rep -> n_rep'. Computed targets are
  frozen to their values first (``Trees.frozen``, always), and with dynamic axes their entries that
  follow a symbolic dim are computed again at run time (``slice.keep_live``).

Example: Llama-GQA, 4 query heads over 2 KV heads, ``--heads 0.5 --gqa queries``: q_proj keeps 2 of
4 heads (one per KV group), o_proj their columns, k/v_proj and the KV cache keep their shapes, the
Expand target [B, 2, 2, T, 8] -> [B, 2, 1, T, 8], the merge [B, 4, T, 8] -> [B, 2, T, 8].
"""

from __future__ import annotations

import numpy as np

from ..analyses import ChannelMap
from .slices import Keeps, Rewriter, _slice_reshape
from .views import DEFAULT_DOMAINS, Effect, NodeView

MODES = ("groups", "queries")


def repeat_merge(view: NodeView) -> tuple[Effect, str, int] | None:
    """``(effect, Expand node, n_rep)`` when ``view`` is repeat_kv's merging Reshape whose input
    carries KV ids on the KV axis: the effect's output ids are placeholders ``0..KV·n_rep-1``
    (trees gives them fresh ids). None for any other node (its own rule applies)."""
    node, graph = view.node, view.graph
    if node.op_type != "Reshape" or node.domain not in DEFAULT_DOMAINS:
        return None
    m = view.maps[0] if view.maps else None
    if m is None or any(p != 0 and view.maps[p] is not None for p in range(len(view.maps))):
        return None
    src = graph.inputs_of(node)[0]
    expand = graph.producer(src)
    if expand is None or expand.op_type != "Expand" or expand.domain not in DEFAULT_DOMAINS \
            or len(graph.consumers(src)) != 1:
        return None
    e_in = graph.inputs_of(expand)
    e_map = view.known.get(e_in[0].name) if e_in and e_in[0] is not None else None
    if e_map is None or e_map.axis != m.axis or e_map.rank != m.rank or not np.array_equal(e_map.ids, m.ids):
        return None
    a, kv = m.axis, len(m)
    e_shape = view.shapes.get(e_in[0].name)
    e_target = _static(view, e_in[1]) if len(e_in) > 1 and e_in[1] is not None else None
    target = view.static_value(1)
    if e_shape is None or e_target is None or target is None or len(e_shape) != m.rank \
            or len(e_target) != m.rank or a + 1 >= m.rank or e_shape[a + 1] != 1:
        return None
    n_rep = int(e_target[a + 1])
    if n_rep < 2 or int(e_target[a]) not in (1, kv):
        return None
    target = [int(t) for t in np.ravel(target)]
    if node.attr("allowzero", 0) and 0 in target:  # without a 0, allowzero changes nothing (dynamo sets it)
        return None
    shape = view.shape(0)
    if shape is None or len(shape) != m.rank:
        return None
    lead = m.rank - 1 - len(target)  # static 1s before the KV axis merged with it (dynamo's [KV·n, T, D])
    if lead < 0 or lead > a or any(not isinstance(d, int) or d != 1 for d in shape[a - lead:a]):
        return None
    a -= lead
    if target[a] != kv * n_rep:
        return None
    for i, t in enumerate(target):  # every other axis copied as it is
        d = shape[i] if i < a else shape[i + 1 + lead] if i > a else None
        if i != a and not (t == d or (t == 0 and i < len(shape) and i < a) or
                           (not isinstance(d, int) and t > 0)):
            return None
    out = ChannelMap(a, len(target), np.arange(kv * n_rep, dtype=np.int64))
    return Effect(outputs={0: out}, heads=True), expand.name, n_rep


def _static(view: NodeView, value) -> np.ndarray | None:
    arr = view.graph.const_array(value)
    if arr is None:
        arr = view.static.get(value.name)
    return None if arr is None else np.ravel(np.asarray(arr))


def block_of(rep: np.ndarray, repeats) -> dict[int, tuple[int, int]]:
    """Class representative -> (KV group, n_rep) of the fresh ids coupled into it (the keys' and
    the values' repeats agree position by position), (-1, -1) where they disagree."""
    out: dict[int, set] = {}
    for ids, n_rep in repeats:
        for pos, i in enumerate(np.asarray(ids).tolist()):
            out.setdefault(int(rep[i]), set()).add((pos // n_rep, n_rep))
    return {c: next(iter(s)) if len(s) == 1 else (-1, -1) for c, s in out.items()}


def class_blocks(reps: list[int], blocks: dict[int, tuple[int, int]]) -> tuple[tuple[int, ...], str | None]:
    """The KV group of each class of a group (``()`` when none reads a repeat), or why the group
    cannot lose query heads evenly."""
    got = [blocks.get(int(c)) for c in reps]
    if all(b is None for b in got):
        return (), None
    if any(b is None or b[0] < 0 for b in got) or len({b[1] for b in got}) != 1:
        return (), "gqa=queries: its query heads do not map one to one onto KV groups"
    keys = sorted(set(got))
    sizes = {k: got.count(k) for k in keys}
    if len(set(sizes.values())) != 1:
        return (), "gqa=queries: its KV groups have different numbers of query heads"
    index = {k: i for i, k in enumerate(keys)}
    return tuple(index[b] for b in got), None


def even_drop(blocks: tuple[int, ...], scores: np.ndarray, n_drop: int) -> np.ndarray:
    """The channels to remove: ``n_drop`` rounded down to a multiple of the number of KV groups,
    the same count from each, the lowest-scored within each group (never all of a group)."""
    blocks_arr = np.asarray(blocks)
    groups = np.unique(blocks_arr)
    size = len(blocks_arr) // len(groups)
    per = min(n_drop // len(groups), size - 1)
    if per <= 0:
        return np.zeros(0, np.int64)
    drop = []
    for b in groups:
        members = np.nonzero(blocks_arr == b)[0]
        order = members[np.argsort(scores[members], kind="stable")]
        drop += order[:per].tolist()
    return np.sort(np.asarray(drop, np.int64))


def _slice_repeat(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """repeat_kv's merge lost query heads, its input none: the Expand before it repeats each KV
    head n_rep' times, n_rep' the kept heads per KV group (equal in each, ``even_drop``)."""
    if 0 not in outs or 0 in ins:
        return
    graph = rw.graph
    expand = graph.producer(graph.inputs_of(rw.node)[0])
    if expand is None or expand.op_type != "Expand":
        return
    erw = Rewriter(graph, expand, rw.opset)
    target = erw.const(1)
    axis, keep, rank = outs[0]
    if target is None:
        return
    axis += len(np.ravel(target)) - 1 - rank  # the KV axis of the Expand (static 1s merged before it)
    if axis + 1 >= len(np.ravel(target)):
        return
    n_rep = int(np.ravel(target)[axis + 1])
    if n_rep < 2 or len(keep) % n_rep:
        return
    per = keep.reshape(-1, n_rep).sum(axis=1)
    if len(set(per.tolist())) != 1:
        return  # uneven: left as it is, the proof fails and the group stays whole
    new = np.array(target, dtype=np.int64).copy()
    new[axis + 1] = int(per[0])
    erw.set_const(1, new)


def slice_reshape(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Reshape's slice rule, then repeat_kv's Expand when the Reshape is its merge."""
    _slice_reshape(rw, ins, outs)
    _slice_repeat(rw, ins, outs)


def regroups_heads(m: ChannelMap, effect: Effect, heads: set[int]) -> str | None:
    """gqa=queries: why an effect on a map of attention heads (``m``, its ids all heads) cannot
    keep every KV head while query heads go: it repeats heads along a batch axis of attention (a
    repeat_kv form ``repeat_merge`` does not recognize, any other shape of it), or couples
    heads into one class (query heads regrouped onto the KV axis, SDPA's grouped-query form).
    None when it does neither."""
    ids = m.ids[m.ids >= 0]
    if not len(ids) or not heads.issuperset(ids.tolist()):
        return None
    for out in effect.outputs.values():
        if out.axis > out.rank - 3:
            continue  # the head dim or a merged [.., H·D] axis: not a head axis any more
        own = out.ids[out.ids >= 0]
        if len(np.unique(own)) < len(own):
            return "gqa=queries: heads repeated in a form other than repeat_kv's Expand + Reshape"
        for a, b in effect.couplings:
            a, b = np.asarray(a), np.asarray(b)
            if np.any((a != b) & np.isin(a, ids) & np.isin(b, ids)):
                return "gqa=queries: query heads regrouped onto the KV heads (grouped-query SDPA form)"
    return None
