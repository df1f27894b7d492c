"""score: channel importance per group, criterion × scope.

Reads: ``Trees``, ``Patterns``. Provides: ``Scores``. For channel ``i`` of a group (a class of
coupled ids), with ``n(.)`` the criterion's norm:

- scope ``node`` (the single-node baseline): ``Σ_roots n(W_root^i)``;
- scope ``tree`` (the paper's Eq. 1–4): ``Σ_roots n(W_root^i) × Σ_leaves Σ_k n(W_leaf^{k,i})``,
  where ``W_leaf^{k,i}`` is leaf filter ``k``'s weights on the input positions carrying channel
  ``i`` (H×W columns of a Gemm after Flatten). One root and one leaf is Eq. 1, more leaves Eq. 2,
  more roots Eq. 3, both Eq. 4. A group with no leaf scores by its roots alone.

Criteria are the classes of ``passes/criteria.py`` (``l1``, ``l2``, ``fpgm``, ``random``,
``hrank``, ``hrank-star``, ``taylor``, ``recon``, and any registered with ``register_criterion``): each gives
the root term of every root; the leaf term uses the criterion's ``leaf_norm`` (l1 or l2). Data
criteria read ``PassContext.calib_data``.

Example: one-to-one Conv W_a [2,1,1,1] = [[1],[3]] feeding Conv W_b [1,2,1,1] = [[2, 1]]:
l1 tree scores = [1×2, 3×1] = [2, 3]; node scores = [1, 3].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir import Graph

from .analyses import Group, Patterns, Scores, Trees
from .base import Pass, PassContext, PassError, PassResult
from .criteria import CRITERIA, L1, calib_batches, get_criterion
from .op_rules.computed import weight_array
from .op_rules.slices import memory_order

SCOPES = ("tree", "node")


def filter_norms(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """Norm of each slice of ``w`` along ``axis`` (one per output channel): ``l1`` or ``l2``."""
    return get_criterion(criterion)().channel_scores(w, axis)


def leaf_norms(w: np.ndarray, filter_axis: int, in_axis: int, positions_class: np.ndarray,
               n_classes: int, criterion: str) -> np.ndarray:
    """Σ_k n(W^{k,i}) for each class i; ``positions_class[p]`` is the class of input position
    ``p`` (-1: not in this group)."""
    out = np.zeros(n_classes)
    valid = positions_class >= 0
    if not valid.any():
        return out
    arr = np.moveaxis(np.asarray(w), (filter_axis, in_axis), (0, 1))
    arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
    if criterion == "l1":
        per_pos = np.abs(arr).sum(axis=(0, 2), dtype=np.float64)
        np.add.at(out, positions_class[valid], per_pos[valid])
        return out
    sq = np.square(arr).sum(axis=2, dtype=np.float64)      # [K, P]
    pos = np.nonzero(valid)[0]
    cls = positions_class[pos]
    order = np.argsort(cls, kind="stable")
    pos, cls = pos[order], cls[order]
    starts = np.concatenate(([0], np.nonzero(np.diff(cls))[0] + 1))
    per_class = np.add.reduceat(sq[:, pos], starts, axis=1)  # [K, classes present]
    out[cls[starts]] += np.sqrt(per_class).sum(axis=0)
    return out


@dataclass(frozen=True)
class ScorePass(Pass):
    name: ClassVar[str] = "score"
    requires: ClassVar[tuple[type, ...]] = (Trees, Patterns)
    provides: ClassVar[tuple[type, ...]] = (Scores,)
    criterion: str = "l1"
    scope: str = "tree"

    def __post_init__(self):
        get_criterion(self.criterion)  # ValueError naming the known criteria
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; known: {', '.join(SCOPES)}")

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        trees, patterns = ctx.get(Trees), ctx.get(Patterns)
        groups = [g for g in patterns.groups if not g.blocked]
        leaves_by_node: dict[str, list] = {}
        for lf in trees.leaves:
            leaves_by_node.setdefault(lf.node, []).append(lf)
        leaf_norm = CRITERIA[self.criterion].leaf_norm
        l1 = _L1Norms(ir)
        if self.scope == "tree" and leaf_norm == "l1":  # the leaf sums each weight will give
            for name in {name for g in groups for name in g.leaves}:
                for lf in leaves_by_node[name]:
                    l1.leaf_axes.setdefault((name, lf.weight_port), set()).add((lf.filter_axis, lf.weight_axis))
        root_terms = self._root_terms(ir, ctx, trees, groups, l1)
        n = max(trees.num_ids, 1)  # every id is in at most one group: one class table for all
        group_of, chan_of = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        for group in groups:  # each id is in one class: one assignment per group, not per class
            if group.members:
                every = np.concatenate(group.members)
                group_of[every] = group.id
                chan_of[every] = np.repeat(np.arange(len(group.members)), list(map(len, group.members)))
        roots = {r.node: r for r in trees.roots}
        scores = {}
        for group in groups:
            score = _group_root_term(group, roots, chan_of, root_terms)
            if self.scope == "tree" and group.leaves:
                score = score * _group_leaf_term(ir, group, group_of, chan_of, leaves_by_node,
                                                 leaf_norm, l1)
            scores[group.id] = score
        ctx.put(Scores(self.criterion, self.scope, scores))
        return PassResult(False, {"groups_scored": len(scores)})

    def _root_terms(self, ir: Graph, ctx: PassContext, trees: Trees, groups: list[Group],
                    l1: "_L1Norms") -> dict[str, np.ndarray]:
        """The criterion's per-channel scores of every root of a prunable group."""
        criterion = get_criterion(self.criterion)(seed=ctx.seed)
        wanted = {name for g in groups for name in g.roots}
        roots = [r for r in trees.roots if r.node in wanted]
        if not roots:
            return {}
        terms: dict[str, np.ndarray] = {}
        if type(criterion) is L1:  # |W| once per weight, shared with its leaf term
            plain = [r for r in roots if _weight(ir, r.node, r.weight_port).shape[r.weight_axis] == r.channels]
            terms = {r.node: l1.root(r.node, r.weight_port, r.weight_axis) for r in plain}
            roots = [r for r in roots if r.node not in terms]  # gate blocks (LSTM): the criterion's own
        if roots:
            calib = calib_batches(ctx, self.criterion) if criterion.needs_data else None
            terms.update(criterion.root_scores(ir, roots, trees, calib))
        for r in roots:
            got = np.shape(terms.get(r.node))
            if got != (r.channels,):
                raise PassError(f"criterion {self.criterion!r} gave node {r.node!r} scores of shape "
                                f"{list(got)}, expected [{r.channels}]")
        return terms


class _L1Norms:
    """ℓ1 sums of each weight, |W| read once: a weight that is both a root (its filters' sums)
    and a leaf (its input positions' sums: a VGG conv, a Gemm after Flatten) or a leaf of several
    groups (a DenseNet conv after Concat) is read once, not once per use; |W| is taken a block of
    filters at a time (no temporary as large as the weight). The sums are those of
    ``L1.channel_scores`` and ``leaf_norms`` up to the order of additions and, within a row of
    a float32 weight, float32 accumulation (``_row_sums``: relative differences of 1e-7 to 1e-6)."""

    BLOCK = 1 << 20  # elements of |W| in one block (4 MiB of float32: it stays in cache for both sums)

    def __init__(self, ir: Graph):
        self.ir = ir
        self.leaf_axes: dict[tuple[str, int], set[tuple[int, int]]] = {}  # (node, port) -> (filter, in)
        self.roots: dict[tuple[str, int, int], np.ndarray] = {}
        self.leaves: dict[tuple[str, int, int, int], np.ndarray] = {}
        self.scratch: dict[np.dtype, np.ndarray] = {}   # dtype -> the one buffer every block's |W| is taken into

    def _buffer(self, w: np.ndarray, rows: int) -> np.ndarray | None:
        """A buffer for a block of ``rows`` filters' |W| of a float weight, shared by every weight
        of the pass: fresh memory per weight costs its page faults (~3000 on ResNet-50, now ~140)."""
        if w.dtype.kind != "f":
            return None
        shape = (min(rows, w.shape[0]),) + w.shape[1:]
        size = int(np.prod(shape))
        if self.scratch.get(w.dtype) is None or self.scratch[w.dtype].size < size:
            self.scratch[w.dtype] = np.empty(max(size, self.BLOCK), w.dtype)
        return self.scratch[w.dtype][:size].reshape(shape)

    def _fill(self, node: str, port: int, root_axis: int | None) -> None:
        w = np.asarray(_weight(self.ir, node, port))
        keys = [(f, i) for f, i in sorted(self.leaf_axes.get((node, port), ()))
                if (node, port, f, i) not in self.leaves]
        axis = list(range(w.ndim))  # the weight's axis -> the axis it is read along
        if (perm := memory_order(w)) is not None:  # a transposed view: read in memory order
            w, axis = w.transpose(perm), [perm.index(a) for a in range(w.ndim)]
        leaf_keys = [(axis[f], axis[i]) for f, i in keys]
        root_axis = None if root_axis is None else axis[root_axis]
        if w.ndim == 0 or w.shape[0] == 0:
            a = np.abs(w)
            blocks = [(0, a)]
        else:
            rows = max(1, self.BLOCK // max(1, w[0].size))
            blocks = ((r, _abs(w[r:r + rows], buf)) for buf in [self._buffer(w, rows)]
                      for r in range(0, w.shape[0], rows))
        root = np.zeros(w.shape[root_axis]) if root_axis is not None else None
        leaves = {k: np.zeros(w.shape[k[1]]) for k in leaf_keys}
        for start, a in blocks:  # a: |W| of filters start.. along axis 0
            if root_axis == 0:
                root[start:start + len(a)] = _row_sums(a.reshape(len(a), -1))
            elif root_axis is not None:
                root += np.moveaxis(a, root_axis, 0).reshape(a.shape[root_axis], -1).sum(axis=1, dtype=np.float64)
            for (filter_axis, in_axis), acc in leaves.items():
                if (filter_axis, in_axis) == (0, 1) and a.ndim >= 2:  # a Conv's or Gemm's inputs
                    acc += _column_sums(a.reshape(len(a), -1)).reshape(a.shape[1], -1).sum(axis=1)
                    continue
                arr = np.moveaxis(a, (filter_axis, in_axis), (0, 1))
                arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
                if in_axis == 0:
                    acc[start:start + arr.shape[1]] += arr.sum(axis=(0, 2), dtype=np.float64)
                else:
                    acc += arr.sum(axis=(0, 2), dtype=np.float64)
        for (filter_axis, in_axis), acc in zip(keys, leaves.values()):
            self.leaves[(node, port, filter_axis, in_axis)] = acc
        if root_axis is not None:
            self.roots[(node, port, axis.index(root_axis))] = root

    def root(self, node: str, port: int, axis: int) -> np.ndarray:
        key = (node, port, axis)
        if key not in self.roots:
            self._fill(node, port, axis)
        return self.roots[key]

    def leaf(self, node: str, port: int, filter_axis: int, in_axis: int) -> np.ndarray:
        key = (node, port, filter_axis, in_axis)
        if key not in self.leaves:
            self.leaf_axes.setdefault((node, port), set()).add((filter_axis, in_axis))
            self._fill(node, port, None)
        return self.leaves[key]


def _row_sums(a: np.ndarray) -> np.ndarray:
    """Each row's sum, in float64: of a float32 block, summed in float32 by ``einsum`` (6x the
    speed of numpy's float64-accumulating sum, one thread: a BLAS product is as fast idle, but its
    threads spin on a busy machine); anything else by numpy in float64."""
    if a.dtype == np.float32 and a.ndim == 2:
        return np.einsum("ij->i", a).astype(np.float64)
    return a.sum(axis=1, dtype=np.float64)


def _column_sums(a: np.ndarray) -> np.ndarray:
    """Each column's sum, in float64 (``_row_sums`` of the other side)."""
    if a.dtype == np.float32 and a.ndim == 2:
        return np.einsum("ij->j", a).astype(np.float64)
    return a.sum(axis=0, dtype=np.float64)


def _abs(block: np.ndarray, buf: np.ndarray | None) -> np.ndarray:
    return np.abs(block) if buf is None else np.abs(block, out=buf[:len(block)])


def _group_root_term(group: Group, roots: dict, chan_of: np.ndarray, root_terms: dict) -> np.ndarray:
    term = np.zeros(group.channels)
    for name in group.roots:
        root = roots[name]
        np.add.at(term, chan_of[root.first_id:root.first_id + root.channels],
                  np.asarray(root_terms[name], np.float64))
    return term


def _group_leaf_term(ir: Graph, group: Group, group_of: np.ndarray, chan_of: np.ndarray,
                     leaves_by_node: dict, norm: str, l1: _L1Norms) -> np.ndarray:
    term = np.zeros(group.channels)
    for name in group.leaves:
        for lf in leaves_by_node[name]:
            safe = np.maximum(lf.ids, 0)
            pos_cls = np.where((lf.ids >= 0) & (group_of[safe] == group.id), chan_of[safe], -1)
            if norm == "l1":  # per position sums, shared by every group the leaf reads
                per_pos = l1.leaf(name, lf.weight_port, lf.filter_axis, lf.weight_axis)
                valid = pos_cls >= 0
                if valid.any():
                    np.add.at(term, pos_cls[valid], per_pos[valid])
                continue
            w = _weight(ir, name, lf.weight_port)
            term += leaf_norms(w, lf.filter_axis, lf.weight_axis, pos_cls, group.channels, norm)
    return term


def _weight(ir: Graph, node: str, port: int) -> np.ndarray:
    w = weight_array(ir, ir.inputs_of(node)[port])
    if w is None:
        raise PassError(f"weight of node {node!r} is not a constant")
    return w
