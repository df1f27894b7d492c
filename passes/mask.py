"""mask: choose which channels of each group to remove.

Reads: ``Patterns``, ``Scores``. Provides: ``Masks``. Each prunable group loses the
``floor(ratio × channels)`` lowest-scoring channels (ties: the lower index goes first), then
``min-keep`` and ``round-to`` (kept count rounded up to a multiple) are applied. ``ratios`` sets a
ratio per root node (a group takes the smallest ratio named for its roots); ``ignore`` keeps the
output channels of the named nodes: their groups are left alone (their inputs may still shrink).

Example: ``mask{ratio=0.5 round-to=8}`` on a 20-channel group keeps 16 (10 rounded up to 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ir import Graph

from .analyses import Masks, Patterns, Scores
from .base import Pass, PassContext, PassResult


def _check_ratio(value: float, what: str) -> None:
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{what} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class MaskPass(Pass):
    name: ClassVar[str] = "mask"
    requires: ClassVar[tuple[type, ...]] = (Patterns, Scores)
    provides: ClassVar[tuple[type, ...]] = (Masks,)
    ratio: float = 0.5
    ratios: dict[str, float] = field(default_factory=dict)
    round_to: int = 1
    min_keep: int = 1
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        _check_ratio(self.ratio, "ratio")
        for node, r in self.ratios.items():
            _check_ratio(r, f"ratio of {node!r}")
        if self.round_to < 1:
            raise ValueError(f"round-to must be at least 1, got {self.round_to}")
        if self.min_keep < 1:
            raise ValueError(f"min-keep must be at least 1, got {self.min_keep}")

    def __hash__(self):
        return hash((self.ratio, tuple(sorted(self.ratios.items())), self.round_to,
                     self.min_keep, self.ignore))

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        patterns, scores = ctx.get(Patterns), ctx.get(Scores)
        kept: dict[int, tuple[int, ...]] = {}
        removed: list[np.ndarray] = []
        notes: list[str] = []
        ignore = set(self.ignore)
        unknown = sorted(n for n in set(self.ratios) | ignore if not ir.has_node(n))
        if unknown:
            notes.append(f"no such node(s) for ratios/ignore: {', '.join(unknown)}")
        n_removed = 0
        for group in patterns.groups:
            if group.blocked or group.id not in scores.by_group:
                continue
            if ignore & set(group.roots):
                notes.append(f"group {group.id} ignored by request")
                continue
            named = [self.ratios[r] for r in group.roots if r in self.ratios]
            ratio = min(named) if named else self.ratio
            n = group.channels
            n_keep = n - math.floor(ratio * n + 1e-9)
            n_keep = max(n_keep, min(self.min_keep, n))
            n_keep = min(n, math.ceil(n_keep / self.round_to) * self.round_to)
            order = np.argsort(scores.by_group[group.id], kind="stable")
            drop = np.sort(order[: n - n_keep])
            kept[group.id] = tuple(int(i) for i in np.setdiff1d(np.arange(n), drop))
            for k in drop:
                removed.append(group.members[k])
            n_removed += len(drop)
        removed_ids = np.concatenate(removed) if removed else np.zeros(0, np.int64)
        ctx.put(Masks(kept, removed_ids, tuple(notes)))
        return PassResult(False, {"groups_pruned": sum(1 for g, k in kept.items()
                                                       if len(k) < patterns.groups[g].channels),
                                  "channels_removed": n_removed}, notes)
