"""score: channel importance per group, criterion × scope.

Reads: ``Trees``, ``Patterns``. Provides: ``Scores``. For channel ``i`` of a group (a class of
coupled ids), with ``n(.)`` the criterion's norm:

- scope ``node`` (the single-node baseline): ``Σ_roots n(W_root^i)``;
- scope ``tree`` (the paper's Eq. 1–4): ``Σ_roots n(W_root^i) × Σ_leaves Σ_k n(W_leaf^{k,i})``,
  where ``W_leaf^{k,i}`` is leaf filter ``k``'s weights on the input positions carrying channel
  ``i`` (H×W columns of a Gemm after Flatten). One root and one leaf is Eq. 1, more leaves Eq. 2,
  more roots Eq. 3, both Eq. 4. A group with no leaf scores by its roots alone.

Criteria: ``l1`` (sum of absolute values), ``l2`` (Euclidean norm).

Example: one-to-one Conv W_a [2,1,1,1] = [[1],[3]] feeding Conv W_b [1,2,1,1] = [[2, 1]]:
l1 tree scores = [1×2, 3×1] = [2, 3]; node scores = [1, 3].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir import Graph

from .analyses import Patterns, Scores, Trees
from .base import Pass, PassContext, PassError, PassResult

CRITERIA = ("l1", "l2")
SCOPES = ("tree", "node")


def filter_norms(w: np.ndarray, axis: int, criterion: str) -> np.ndarray:
    """Norm of each slice of ``w`` along ``axis`` (one per output channel)."""
    flat = np.moveaxis(np.asarray(w), axis, 0).reshape(w.shape[axis], -1)
    if criterion == "l1":  # float64 accumulation without a float64 copy of the weights
        return np.abs(flat).sum(axis=1, dtype=np.float64)
    return np.sqrt(np.square(flat).sum(axis=1, dtype=np.float64))


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
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {self.criterion!r}; known: {', '.join(CRITERIA)}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; known: {', '.join(SCOPES)}")

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        trees, patterns = ctx.get(Trees), ctx.get(Patterns)
        roots = {r.node: r for r in trees.roots}
        leaves_by_node: dict[str, list] = {}
        for lf in trees.leaves:
            leaves_by_node.setdefault(lf.node, []).append(lf)
        scores = {}
        for group in patterns.groups:
            if group.blocked:
                continue
            cls = np.full(trees.num_ids, -1, np.int64)
            for k, members in enumerate(group.members):
                cls[members] = k
            root_term = np.zeros(group.channels)
            for name in group.roots:
                root = roots[name]
                w = _weight(ir, name, root.weight_port)
                norms = filter_norms(w, root.weight_axis, self.criterion)
                np.add.at(root_term, cls[root.first_id:root.first_id + root.channels], norms)
            score = root_term
            if self.scope == "tree" and group.leaves:
                leaf_term = np.zeros(group.channels)
                for name in group.leaves:
                    for lf in leaves_by_node[name]:
                        w = _weight(ir, name, lf.weight_port)
                        pos_cls = np.where(lf.ids >= 0, cls[np.maximum(lf.ids, 0)], -1)
                        leaf_term += leaf_norms(w, lf.filter_axis, lf.weight_axis, pos_cls,
                                                group.channels, self.criterion)
                score = root_term * leaf_term
            scores[group.id] = score
        ctx.put(Scores(self.criterion, self.scope, scores))
        return PassResult(False, {"groups_scored": len(scores)})


def _weight(ir: Graph, node: str, port: int) -> np.ndarray:
    w = ir.const_array(ir.inputs_of(node)[port])
    if w is None:
        raise PassError(f"weight of node {node!r} is not a constant")
    return w
