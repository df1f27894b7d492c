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
from .criteria import CRITERIA, calib_batches, get_criterion
from .op_rules.computed import weight_array

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
        root_terms = self._root_terms(ir, ctx, trees, groups)
        leaves_by_node: dict[str, list] = {}
        for lf in trees.leaves:
            leaves_by_node.setdefault(lf.node, []).append(lf)
        leaf_norm = CRITERIA[self.criterion].leaf_norm
        scores = {}
        for group in groups:
            cls = _classes(group, trees.num_ids)
            score = _group_root_term(group, trees, cls, root_terms)
            if self.scope == "tree" and group.leaves:
                score = score * _group_leaf_term(ir, group, cls, leaves_by_node, leaf_norm)
            scores[group.id] = score
        ctx.put(Scores(self.criterion, self.scope, scores))
        return PassResult(False, {"groups_scored": len(scores)})

    def _root_terms(self, ir: Graph, ctx: PassContext, trees: Trees, groups: list[Group]) -> dict[str, np.ndarray]:
        """The criterion's per-channel scores of every root of a prunable group."""
        criterion = get_criterion(self.criterion)(seed=ctx.seed)
        wanted = {name for g in groups for name in g.roots}
        roots = [r for r in trees.roots if r.node in wanted]
        if not roots:
            return {}
        calib = calib_batches(ctx, self.criterion) if criterion.needs_data else None
        terms = criterion.root_scores(ir, roots, trees, calib)
        for r in roots:
            got = np.shape(terms.get(r.node))
            if got != (r.channels,):
                raise PassError(f"criterion {self.criterion!r} gave node {r.node!r} scores of shape "
                                f"{list(got)}, expected [{r.channels}]")
        return terms


def _classes(group: Group, num_ids: int) -> np.ndarray:
    """Channel id -> the group's channel (class) index, -1 outside the group."""
    cls = np.full(num_ids, -1, np.int64)
    for k, members in enumerate(group.members):
        cls[members] = k
    return cls


def _group_root_term(group: Group, trees: Trees, cls: np.ndarray, root_terms: dict) -> np.ndarray:
    roots = {r.node: r for r in trees.roots}
    term = np.zeros(group.channels)
    for name in group.roots:
        root = roots[name]
        np.add.at(term, cls[root.first_id:root.first_id + root.channels],
                  np.asarray(root_terms[name], np.float64))
    return term


def _group_leaf_term(ir: Graph, group: Group, cls: np.ndarray, leaves_by_node: dict,
                     norm: str) -> np.ndarray:
    term = np.zeros(group.channels)
    for name in group.leaves:
        for lf in leaves_by_node[name]:
            w = _weight(ir, name, lf.weight_port)
            pos_cls = np.where(lf.ids >= 0, cls[np.maximum(lf.ids, 0)], -1)
            term += leaf_norms(w, lf.filter_axis, lf.weight_axis, pos_cls, group.channels, norm)
    return term


def _weight(ir: Graph, node: str, port: int) -> np.ndarray:
    w = weight_array(ir, ir.inputs_of(node)[port])
    if w is None:
        raise PassError(f"weight of node {node!r} is not a constant")
    return w
