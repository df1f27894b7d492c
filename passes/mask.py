"""mask: choose which channels of each group to remove.

Reads: ``Patterns``, ``Scores``. Provides: ``Masks``. Each prunable group loses the
``floor(ratio × channels)`` lowest-scoring channels (ties: the lower index goes first), then
``min-keep`` and ``round-to`` (kept count rounded up to a multiple) are applied. ``round-to``
defaults to -1: 8 for a group wider than 32 channels (widths a CPU's vector kernels run whole:
ResNet-50 at 0.7 keeps 24 of 64, not 19), none for narrower ones (attention heads, small
layers); ``round-to=1`` turns rounding off, any other value applies to every group. ``ratios`` sets a
ratio per root node (a group takes the smallest ratio named for its roots); ``ignore`` keeps the
output channels of the named nodes: their groups are left alone (their inputs may still shrink).

Example: ``mask{ratio=0.5 round-to=8}`` on a 20-channel group keeps 16 (10 rounded up to 16).

Targets (``passes/targets.py``):

- ``rank=global``: one ranking across groups. Each group's scores are normalised (``normalize=max``:
  divided by the group's largest score, so every group's best channel is 1; ``normalize=sum``:
  divided by the group's total) and the ``floor(ratio × channels)`` lowest channels of all the
  free groups go, at most ``max-ratio`` of any one group (no layer is emptied).
- ``target-flops=F`` / ``target-params=P``: remove that fraction of the model's FLOPs / parameters.
  The global threshold (``rank=global``) or the uniform ratio (``rank=layer``) is solved by
  bisection on a cost model of the channel maps (each Conv/Gemm/MatMul's FLOPs scale with its
  kept output and input channel fractions); ``prune()`` then checks the real count after slicing.
- Groups whose roots are named in ``ratios`` keep their own ratio in every mode, and so do
  attention-head groups (a channel is a whole head) when ``heads`` is set: ``mask{ratio=0.3
  heads=0.5}`` removes half the heads of every attention and 30% of the other channels; likewise
  residual-stream groups (a normalization reads their channels) when ``stream`` is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ir import Graph

from .analyses import Group, Masks, Patterns, Scores, Trees
from .base import Pass, PassContext, PassError, PassResult
from .op_rules.gqa import even_drop
from .targets import CostModel, global_candidates, solve_level

RANKS = ("layer", "global")
NORMALIZE = ("max", "sum")


def _check_ratio(value: float, what: str) -> None:
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{what} must be in [0, 1), got {value}")


def n_drop_for_ratio(n: int, ratio: float, min_keep: int) -> int:
    """Channels a group of ``n`` loses at ``ratio`` (before round-to)."""
    n_keep = n - math.floor(ratio * n + 1e-9)
    return n - max(n_keep, min(min_keep, n))


ROUND_TO_DEFAULT, ROUND_WIDER_THAN = 8, 32


def round_for(n: int, round_to: int) -> int:
    """The multiple a group of ``n`` channels keeps: ``round_to``, or for -1 (the default) 8 when
    ``n`` is over 32, else 1."""
    if round_to >= 1:
        return round_to
    return ROUND_TO_DEFAULT if n > ROUND_WIDER_THAN else 1


def apply_round_to(n: int, n_drop: int, round_to: int) -> int:
    """The kept count rounded up to a multiple of ``round_to`` (never above ``n``): the new drop.
    ``round_to`` -1: the default (``round_for``)."""
    round_to = round_for(n, round_to)
    n_keep = min(n, math.ceil((n - n_drop) / round_to) * round_to)
    return n - n_keep


@dataclass(frozen=True)
class MaskPass(Pass):
    name: ClassVar[str] = "mask"
    requires: ClassVar[tuple[type, ...]] = (Patterns, Scores)
    provides: ClassVar[tuple[type, ...]] = (Masks,)
    ratio: float = 0.5
    ratios: dict[str, float] = field(default_factory=dict)
    round_to: int = -1      # -1: 8 for groups wider than 32 channels, else 1 (round_for)
    min_keep: int = 1
    ignore: tuple[str, ...] = ()
    rank: str = "layer"
    normalize: str = "max"
    max_ratio: float = 0.9
    target_flops: float = 0.0
    target_params: float = 0.0
    heads: float = -1.0     # ratio of attention heads removed per attention group; < 0: `ratio`
    stream: float = -1.0    # ratio of residual-stream channels removed (groups a normalization reads); < 0: `ratio`

    def __post_init__(self):
        _check_ratio(self.ratio, "ratio")
        for node, r in self.ratios.items():
            _check_ratio(r, f"ratio of {node!r}")
        if self.round_to < 1 and self.round_to != -1:
            raise ValueError(f"round-to must be at least 1 (or -1, the default: 8 for groups wider "
                             f"than 32 channels), got {self.round_to}")
        if self.min_keep < 1:
            raise ValueError(f"min-keep must be at least 1, got {self.min_keep}")
        if self.rank not in RANKS:
            raise ValueError(f"unknown rank {self.rank!r}; known: {', '.join(RANKS)}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"unknown normalize {self.normalize!r}; known: {', '.join(NORMALIZE)}")
        if not (0.0 < self.max_ratio < 1.0):
            raise ValueError(f"max-ratio must be in (0, 1), got {self.max_ratio}")
        if self.heads >= 0:
            _check_ratio(self.heads, "heads")
        if self.stream >= 0:
            _check_ratio(self.stream, "stream")
        _check_ratio(self.target_flops, "target-flops")
        _check_ratio(self.target_params, "target-params")
        if self.target_flops and self.target_params:
            raise ValueError("give target-flops or target-params, not both")

    def __hash__(self):
        return hash((self.ratio, tuple(sorted(self.ratios.items())), self.round_to,
                     self.min_keep, self.ignore, self.rank, self.normalize, self.max_ratio,
                     self.target_flops, self.target_params, self.heads, self.stream))

    @property
    def target(self) -> tuple[str, float] | None:
        if self.target_flops:
            return "flops", self.target_flops
        if self.target_params:
            return "params", self.target_params
        return None

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        patterns, scores = ctx.get(Patterns), ctx.get(Scores)
        notes: list[str] = []
        ignore = set(self.ignore)
        unknown = sorted(n for n in set(self.ratios) | ignore if not ir.has_node(n))
        if unknown:
            notes.append(f"no such node(s) for ratios/ignore: {', '.join(unknown)}")
        fixed: dict[int, int] = {}     # group id -> channels dropped, by ratio or ratios
        free: list[Group] = []
        whole: dict[int, str] = {}     # group id -> why it keeps every channel
        for group in patterns.groups:
            if group.blocked:
                continue
            if group.id not in scores.by_group:
                whole[group.id] = "not scored (the criterion gave its channels no score)"
                continue
            if ignore & set(group.roots):
                notes.append(f"group {group.id} ignored by request")
                whole[group.id] = "ignored by request (mask ignore=)"
                continue
            named = [self.ratios[r] for r in group.roots if r in self.ratios]
            if not named and group.heads and self.heads >= 0:
                named = [self.heads]
            elif not named and group.stream and self.stream >= 0:
                named = [self.stream]
            if named:
                whole[group.id] = (f"its ratio {min(named):g} removes none of its {group.channels} channels "
                                   f"(min-keep {self.min_keep}, round-to {self.round_to})")
                fixed[group.id] = apply_round_to(
                    group.channels, n_drop_for_ratio(group.channels, min(named), self.min_keep), self.round_to)
            else:
                free.append(group)
        stats: dict = {}
        decide = self._decider(free, scores)
        level = self.ratio
        if self.target is None:
            drops = decide(self.ratio)
        else:
            kind, goal = self.target
            if not ctx.has(Trees):
                raise PassError("a FLOPs/params target needs the Trees analysis (run trees before mask)")
            model = CostModel.build(ir, ctx.get(Trees), patterns, scores)
            level, predicted = solve_level(lambda lv: model.ratio(kind, {**fixed, **decide(lv)}), goal)
            if level >= 1.0 and predicted > 1.0 - goal + 0.01:  # even the most pruning misses it
                raise PassError(f"target-{kind} {goal:g} cannot be met: at most "
                                f"{1.0 - predicted:.3f} of the {kind} can go (max-ratio "
                                f"{self.max_ratio:g}, blocked or ignored groups stay)")
            drops = decide(level)
            stats.update({f"target_{kind}": goal, f"predicted_{kind}_ratio": round(predicted, 6)})
            ctx.report["target"] = {"kind": kind, "reduction": goal, "predicted_ratio": predicted,
                                    "level": level, "rank": self.rank}
        for group in free:
            whole[group.id] = self._why_whole(group, level)
        drops = {**fixed, **drops}
        masks, n_removed = self._masks(patterns, scores, drops, notes, whole)
        ctx.put(masks)
        stats.update({"groups_pruned": sum(1 for g, k in masks.kept.items()
                                           if len(k) < patterns.groups[g].channels),
                      "channels_removed": n_removed})
        return PassResult(False, stats, notes)

    def _decider(self, free: list[Group], scores: Scores):
        """``level -> {group id: channels dropped}`` for the free groups: the layer ratio
        (``rank=layer``) or the global fraction of their channels (``rank=global``)."""
        if self.rank == "layer":
            cap = self.max_ratio if self.target is not None else 1.0

            def layer(level: float) -> dict[int, int]:
                r = min(level, cap)
                return {g.id: apply_round_to(g.channels, n_drop_for_ratio(g.channels, r, self.min_keep),
                                             self.round_to) for g in free}
            return layer
        order = global_candidates(free, scores, self.normalize, self.max_ratio, self.min_keep)
        total = sum(g.channels for g in free)

        def global_(level: float) -> dict[int, int]:
            k = min(len(order), math.floor(level * total + 1e-9))
            drops = {g.id: 0 for g in free}
            for gid in order[:k]:
                drops[gid] += 1
            size = {g.id: g.channels for g in free}
            return {gid: apply_round_to(size[gid], d, self.round_to) for gid, d in drops.items()}
        return global_

    def _why_whole(self, group: Group, level: float) -> str:
        """Why a free group may keep every channel (used only when it does)."""
        goal = f" for target-{self.target[0]} {self.target[1]:g}" if self.target else ""
        if self.rank == "global":
            return (f"the global ranking{goal} cut none of its {group.channels} channels "
                    f"(its normalised scores rank above the threshold; max-ratio {self.max_ratio:g})")
        return (f"ratio {level:.3g}{goal} removes none of its {group.channels} channels "
                f"(min-keep {self.min_keep}, round-to {self.round_to})")

    def _masks(self, patterns: Patterns, scores: Scores, drops: dict[int, int],
               notes: list[str], whole: dict[int, str] | None = None) -> tuple[Masks, int]:
        kept: dict[int, tuple[int, ...]] = {}
        removed: list[np.ndarray] = []
        n_removed = 0
        for group in patterns.groups:
            if group.id not in drops:
                continue
            n = group.channels
            order = np.argsort(scores.by_group[group.id], kind="stable")
            if group.blocks:  # gqa=queries: as many query heads from each KV group
                drop = even_drop(group.blocks, scores.by_group[group.id], drops[group.id])
            else:
                drop = group.spare(np.sort(order[:drops[group.id]]), order)  # no zero-width value
            keep = np.ones(n, bool)
            keep[np.asarray(drop, dtype=np.int64)] = False
            kept[group.id] = tuple(np.flatnonzero(keep).tolist())  # setdiff1d's sorted rest, without its hashing
            removed += [group.members[k] for k in np.asarray(drop).tolist()]
            n_removed += len(drop)
        removed_ids = np.concatenate(removed) if removed else np.zeros(0, np.int64)
        whole = {g: why for g, why in (whole or {}).items() if len(kept.get(g, ())) == patterns.groups[g].channels
                 or g not in kept}
        return Masks(kept, removed_ids, tuple(notes), whole), n_removed
