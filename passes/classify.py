"""classify: merge trees that share channels into groups and name each group's pattern.

Reads: ``Trees``. Provides: ``Patterns``. Roots whose channel ids are coupled (residual Add,
elementwise Mul of branches) form one group pruned together; a group's channel ``k`` is one
equivalence class of ids. The pattern follows the paper's Fig. 4 from the number of roots and of
leaves: one-to-one, one-to-many, many-to-one, many-to-many. A group any of whose channels is
blocked (reaches a graph output, a barrier or a channel-mixing op) is left alone with that reason.
A value that carries only some of a group's channels (a Slice or Split output) gives the group a
``nonempty`` set: mask keeps one of them, so no tensor is cut to zero width.

Example: a ResNet stage whose block outputs are added to a downsample conv: roots
{downsample, conv3 of each block}, leaves {next blocks' conv1, next stage}: many-to-many.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ir import Graph

from .analyses import Group, Patterns, Trees, unique_ids
from .base import Pass, PassContext, PassResult
from .op_rules.gqa import block_of, class_blocks


def pattern_name(n_roots: int, n_leaves: int) -> str:
    one_root, one_leaf = n_roots <= 1, n_leaves <= 1
    if one_root:
        return "one-to-one" if one_leaf else "one-to-many"
    return "many-to-one" if one_leaf else "many-to-many"


@dataclass(frozen=True)
class ClassifyPass(Pass):
    name: ClassVar[str] = "classify"
    requires: ClassVar[tuple[type, ...]] = (Trees,)
    provides: ClassVar[tuple[type, ...]] = (Patterns,)

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        trees = ctx.get(Trees)
        rep = trees.rep
        n_roots = len(trees.roots)
        # roots sharing any class representative belong to one group (union over roots)
        parent = list(range(n_roots))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in _sharing(rep, trees.roots):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        members_of: dict[int, list[int]] = {}
        for r in range(n_roots):
            members_of.setdefault(find(r), []).append(r)

        blocked_ids = np.array(sorted(trees.blocked), dtype=np.int64)
        ordered = sorted(members_of.values(), key=lambda rs: rs[0])
        group_of_rep = np.full(max(trees.num_ids, 1), -1, np.int64)
        for gid, root_idx in enumerate(ordered):
            for r in root_idx:
                root = trees.roots[r]
                group_of_rep[rep[root.first_id:root.first_id + root.channels]] = gid
        leaves_of: dict[int, dict[str, None]] = {}  # insertion-ordered sets
        for lf in trees.leaves:  # each leaf joins every group whose channels it reads
            for gid in unique_ids(group_of_rep[rep[lf.ids[lf.ids >= 0]]]).tolist():
                if gid >= 0:
                    leaves_of.setdefault(gid, {})[lf.node] = None
        groups = []
        counts = dict.fromkeys(("one-to-one", "one-to-many", "many-to-one", "many-to-many", "blocked"), 0)
        is_blocked = np.zeros(max(trees.num_ids, 1), bool)
        is_blocked[blocked_ids] = True
        head_class = np.zeros(max(trees.num_ids, 1), bool)  # by class representative
        head_class[rep[trees.head_ids]] = True
        stream_class = np.zeros(max(trees.num_ids, 1), bool)
        stream_class[rep[trees.stream_ids]] = True
        kv_block = block_of(rep, trees.repeats)  # gqa=queries: class -> its KV group
        for gid, root_idx in enumerate(ordered):
            ids = np.concatenate([np.arange(trees.roots[r].first_id,
                                            trees.roots[r].first_id + trees.roots[r].channels)
                                  for r in root_idx])
            reps = rep[ids]
            order = np.lexsort((ids, reps))   # by class, then id: each class's ids come sorted
            classes = unique_ids(reps)
            by_class = ids[order]
            starts = np.searchsorted(reps[order], classes)
            ends = np.append(starts[1:], len(by_class))
            first = np.argsort(by_class[starts], kind="stable")   # classes by their first id
            members = tuple(by_class[a:b] for a, b in zip(starts[first].tolist(), ends[first].tolist()))
            leaves = tuple(leaves_of.get(gid, ()))
            reason = None
            hit = ids[is_blocked[ids]]
            if len(hit):
                reason = trees.blocked[int(hit.min())]
            roots = tuple(trees.roots[r].node for r in root_idx)
            pattern = pattern_name(len(roots), len(leaves))
            heads = bool(head_class[reps].any())
            stream = bool(stream_class[reps].any())
            blocks, uneven = class_blocks([int(rep[m[0]]) for m in members], kv_block) if kv_block else ((), None)
            reason = reason or uneven
            groups.append(Group(gid, pattern, roots, leaves, members, reason, heads=heads, stream=stream,
                                blocks=blocks))
            counts["blocked" if reason else pattern] += 1
        groups = _with_nonempty(groups, trees)
        ctx.put(Patterns(tuple(groups)))
        return PassResult(False, {"groups": len(groups), **counts})


def _sharing(rep: np.ndarray, roots) -> list[tuple[int, int]]:
    """The distinct pairs (first root carrying a class, a later root carrying it too), by root
    index: unioned, they join the roots that share any class representative (one pair per root
    and class walked in Python cost ViT-B/16 37k dictionary probes)."""
    spans = [rep[r.first_id:r.first_id + r.channels] for r in roots]
    if not spans:
        return []
    classes = np.concatenate(spans).astype(np.int64)
    index = np.repeat(np.arange(len(spans), dtype=np.int64), [len(s) for s in spans])
    order = np.lexsort((index, classes))
    classes, index = classes[order], index[order]
    start = np.concatenate(([True], classes[1:] != classes[:-1])) if len(classes) else np.zeros(0, bool)
    owner = index[start][np.cumsum(start) - 1]   # the first root of each element's class
    later = owner != index
    base = len(spans)
    keys = unique_ids(owner[later] * base + index[later])
    return list(zip((keys // base).tolist(), (keys % base).tolist()))


def _with_nonempty(groups: list[Group], trees: Trees) -> list[Group]:
    """Each prunable group gets the channel sets that some value carries only part of (a Slice or
    Split output, ShuffleNet's kept half): mask keeps one channel of each, so no tensor is cut to
    zero width (a zero-channel Conv that ONNX Runtime's optimizer divides by)."""
    n = max(trees.num_ids, 1)
    group_of, chan_of = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    for g in groups:
        if g.blocked or not g.members:
            continue
        every = np.concatenate(g.members)
        group_of[every] = g.id
        sizes = np.fromiter(map(len, g.members), np.int64, len(g.members))
        chan_of[every] = np.repeat(np.arange(len(g.members)), sizes)
    sets: dict[int, set[tuple[int, ...]]] = {}
    seen: set[bytes] = set()  # the values along a stream carry the same ids: each id set once
    for m in trees.maps.values():
        if (key := m.ids.tobytes()) in seen:
            continue
        seen.add(key)
        ids = unique_ids(m.ids[m.ids >= 0])
        gids = group_of[ids]
        for gid in unique_ids(gids[gids >= 0]).tolist():
            chans = tuple(unique_ids(chan_of[ids[gids == gid]]).tolist())
            if len(chans) < groups[gid].channels:
                sets.setdefault(gid, set()).add(chans)
    return [replace(g, nonempty=tuple(sorted(sets[g.id]))) if g.id in sets else g for g in groups]
