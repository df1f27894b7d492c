"""Global ranking and FLOPs / parameter targets for the ``mask`` pass (not a pass itself).

- ``global_candidates``: the order in which channels of the free groups go under ``rank=global``:
  scores normalised per group (``max``: divided by the group's largest score; ``sum``: by its
  total), a group contributing at most ``floor(max_ratio × channels)`` (and keeping ``min_keep``).
- ``CostModel``: the FLOPs and parameters a set of removed channels leaves, without slicing.
  It reads the channel maps of ``Trees``: every Conv/ConvTranspose/Gemm/MatMul costs its FLOPs
  (``cost.flops_by_node``) × the kept fraction of its output's channel map × the kept fraction of
  its leaf input's positions; every float initializer costs its size × the kept fraction of each
  axis that slicing shrinks (a root's weight along its output axis, a leaf's along its input axis,
  per-channel vectors such as biases and BatchNormalization along the node's output map).
  ``prune()`` checks the prediction against the real count after slicing.
- ``solve_level``: bisection for the level (global fraction or layer ratio) meeting a target.

Example: Conv a [8,3,3,3] -> Conv b [8,8,3,3] on 8×8: removing 4 of a's channels halves a's FLOPs
and b's (its input positions), so the FLOPs ratio is 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ir import Graph

from .analyses import Group, Patterns, Scores, Trees
from .cost import (body_flops, count_flops, count_params, flops_by_node, head_times, recurrent_flops,
                   smaller_branches, _is_float)
from .infer_shapes import value_shapes
from .op_rules.folding import FOLDABLE
from .op_rules.recurrent import GATES, RECURRENT_ROWS

NORM_OPS = ("BatchNormalization", "InstanceNormalization")


def normalised(scores: np.ndarray, how: str) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    denom = s.max() if how == "max" else s.sum()
    return s / denom if denom > 0 else np.zeros_like(s)


def global_candidates(free: list[Group], scores: Scores, how: str, max_ratio: float,
                      min_keep: int) -> list[int]:
    """Group ids, one entry per removable channel, in global removal order (lowest normalised
    score first; ties: lower group id, then the group's own order)."""
    rows = []
    for g in free:
        s = normalised(scores.by_group[g.id], how)
        order = np.argsort(scores.by_group[g.id], kind="stable")
        n = g.channels
        cap = min(math.floor(max_ratio * n + 1e-9), n - min(min_keep, n))
        rows += [(float(s[order[j]]), g.id, j) for j in range(max(cap, 0))]
    rows.sort()
    return [gid for _, gid, _ in rows]


def _frac(ids: np.ndarray, keep: np.ndarray) -> float:
    if len(ids) == 0:
        return 1.0
    tracked = ids >= 0
    kept = np.where(tracked, keep[np.maximum(ids, 0)], True)
    return float(kept.mean())


@dataclass
class CostModel:
    num_ids: int
    flops_terms: list[tuple[int, tuple[np.ndarray, ...]]]
    params_terms: list[tuple[int, tuple[np.ndarray, ...]]]
    flops_total: int
    params_total: int
    drop_order: dict[int, tuple[np.ndarray, np.ndarray]]   # group -> (ids in drop order, offsets)

    @classmethod
    def build(cls, ir: Graph, trees: Trees, patterns: Patterns, scores: Scores) -> "CostModel":
        shapes = value_shapes(ir)
        leaves = {}
        for lf in trees.leaves:
            leaves.setdefault(lf.node, []).append(lf)
        roots = {r.node: r for r in trees.roots}

        def out_map(node) -> tuple[np.ndarray, ...]:
            outs = ir.outputs_of(node)
            m = trees.maps.get(outs[0].name) if outs and outs[0] is not None else None
            return (m.ids,) if m is not None else ()

        flops_terms = []
        per_node = flops_by_node(ir, shapes)
        runs = head_times(ir, shapes)  # a Loop / Scan body's head lowered into the graph runs each iteration
        smaller = smaller_branches(ir, {**per_node, **{n: sum(p) for n, p in recurrent_flops(ir, shapes).items()}})
        for name, base in per_node.items():
            if name in smaller:  # the other branch of a lowered If is the one counted
                continue
            ins = tuple(lf.ids for lf in leaves.get(name, ()) if lf.data_port == 0)
            flops_terms.append((base * runs.get(name, 1), out_map(ir.node(name)) + ins[:1]))
        for name, (by_input, by_state) in recurrent_flops(ir, shapes).items():  # X·Wᵀ and H·Rᵀ
            if name in smaller:
                continue
            root = roots.get(name)
            units = (np.arange(root.first_id, root.first_id + root.channels),) if root is not None else ()
            ins = tuple(lf.ids for lf in leaves.get(name, ()) if lf.data_port == 0)
            flops_terms += [(by_input, units + ins[:1]), (by_state, units + units)]
        flops_terms += [(base, ()) for base in body_flops(ir, shapes, heads=False).values()]  # bodies stay
        params_terms = []
        for name, init in ir.initializers.items():
            if not _is_float(init.elem_type):
                continue
            factors: tuple[np.ndarray, ...] = ()
            consumers = ir.consumers(name)
            if consumers:
                node, port = _past_folding(ir, *consumers[0])
                factors = _init_factors(ir, trees, node, port, init.dims, roots, leaves, out_map)
            params_terms.append((init.size, factors))
        drop_order = {}
        for g in patterns.groups:
            if g.id not in scores.by_group:
                continue
            order = np.argsort(scores.by_group[g.id], kind="stable")
            members = [np.asarray(g.members[k]) for k in order]
            ids = np.concatenate(members) if members else np.zeros(0, np.int64)
            offsets = np.concatenate(([0], np.cumsum([len(m) for m in members])))
            drop_order[g.id] = (ids, offsets)
        return cls(trees.num_ids, flops_terms, params_terms, count_flops(ir, shapes),
                   count_params(ir), drop_order)

    def keep_vector(self, drops: dict[int, int]) -> np.ndarray:
        keep = np.ones(max(self.num_ids, 1), bool)
        for gid, d in drops.items():
            ids, offsets = self.drop_order[gid]
            keep[ids[:offsets[d]]] = False
        return keep

    def cost(self, kind: str, drops: dict[int, int]) -> float:
        keep = self.keep_vector(drops)
        terms = self.flops_terms if kind == "flops" else self.params_terms
        return float(sum(base * math.prod(_frac(f, keep) for f in factors) for base, factors in terms))

    def ratio(self, kind: str, drops: dict[int, int]) -> float:
        """Predicted FLOPs (or parameters) after / before."""
        total = self.flops_total if kind == "flops" else self.params_total
        return self.cost(kind, drops) / total if total else 1.0


def _past_folding(ir, node, port, steps: int = 8):
    """The op a weight really feeds when the exporter re-indexes it first (PyTorch's
    Unsqueeze(Concat(Slice(W))) of an LSTM's gates): the first consumer down a folded chain."""
    for _ in range(steps):
        if node.op_type not in FOLDABLE or node.op_type == "Constant":
            break
        outs = [v for v in ir.outputs_of(node) if v is not None]
        uses = ir.consumers(outs[0]) if outs else []
        if not uses:
            break
        node, port = uses[0]
    return node, port


def _init_factors(ir, trees, node, port, dims, roots, leaves, out_map) -> tuple[np.ndarray, ...]:
    factors: list[np.ndarray] = []
    root = roots.get(node.name)
    if root is not None and (root.weight_port == port or (node.op_type in GATES and port in RECURRENT_ROWS)):
        factors.append(np.arange(root.first_id, root.first_id + root.channels))
    factors += [lf.ids for lf in leaves.get(node.name, ()) if lf.weight_port == port]
    if factors:
        return tuple(factors)
    m = out_map(node)
    if not m or not dims:
        return ()
    outs = ir.outputs_of(node)
    cmap = trees.maps[outs[0].name]
    n = len(cmap.ids)
    if len(dims) == 1 and dims[0] == n and (node.op_type in NORM_OPS or root is not None):
        return m
    if node.op_type in ("Conv", "ConvTranspose") and port == 1 and dims[0] == n:
        return m   # a depthwise (grouped) weight carried through: sliced along its first axis
    axis = len(dims) - (cmap.rank - cmap.axis)  # broadcasting from the right
    if 0 <= axis < len(dims) and dims[axis] == n and node.op_type not in NORM_OPS:
        return m
    return ()


def solve_level(ratio_at: Callable[[float], float], reduction: float,
                iterations: int = 40) -> tuple[float, float]:
    """The level in [0, 1] whose predicted ratio (after/before, non-increasing in the level) is
    closest to ``1 - reduction``; returns ``(level, predicted ratio)``."""
    goal = 1.0 - reduction
    lo, hi = 0.0, 1.0
    r_lo, r_hi = ratio_at(lo), ratio_at(hi)
    if r_hi >= goal:
        return hi, r_hi
    if r_lo <= goal:
        return lo, r_lo
    for _ in range(iterations):
        mid = (lo + hi) / 2
        r = ratio_at(mid)
        if r > goal:
            lo, r_lo = mid, r
        else:
            hi, r_hi = mid, r
    return (lo, r_lo) if abs(r_lo - goal) <= abs(r_hi - goal) else (hi, r_hi)
