"""Typed, immutable analysis results that passes put into and read from the ``PassContext``.

Every channel of every pruned (root) node gets a global integer id. A ``ChannelMap`` says which id
each position along a value's channel axis carries (-1: data that no root produces). Couplings
(residual Add, elementwise Mul of two branches) make ids equivalent; an equivalence class is one
*channel* of a *group*, and a group's channels are pruned together.

Worked example: ``a = Conv(x); b = Conv(x); s = Add(a, b); y = Conv(Relu(s))`` with 4 channels each.

- ``Tags``: conv ``a``, ``b`` are ``pruned``, ``y`` is ``pruned`` and ``stop-process``, Relu is
  ``next-no-process``, Add is ``next-process``.
- ``Trees``: root ``a`` gets ids 0..3, ``b`` ids 4..7 (``y`` 8..). ``maps["s"] = ChannelMap(axis=1,
  ids=[0, 1, 2, 3])``; couplings pair 0~4, 1~5, 2~6, 3~7; leaf ``y`` reads ids [0..3] through
  weight axis 1. Tree of ``a``: a → Add → Relu → y (leaf).
- ``Patterns``: one group {a, b} → leaf {y}: many-to-one, channels = 4 classes {0,4} {1,5} ...
- ``Scores``: per class, ``(|W_a^i| + |W_b^i|) × Σ_k |W_y^{k,i}|`` (paper Eq. 3).
- ``Masks``: at ratio 0.5 the two lowest classes are removed: ``removed_ids`` = their ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np


def unique_ids(ids: np.ndarray) -> np.ndarray:
    """``np.unique`` of a 1-D integer array (sorted distinct values), by sorting: numpy 2.4's
    hash-based ``np.unique`` takes 260 us on 2048 ids where a sort takes 20 (the classify pass
    calls it once per value)."""
    s = np.sort(np.ravel(ids))
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


def in_sorted(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``np.isin(values, members)`` for ``members`` sorted and distinct (``unique_ids``), by
    binary search: numpy 2.4's ``np.isin`` hashes both sides on every call (ViT-B/16's slice
    called it 1,900 times: 0.37 s, now 0.02 s)."""
    values = np.asarray(values)
    if len(members) == 0:
        return np.zeros(values.shape, bool)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[at] == values


def _frozen(arr) -> np.ndarray:
    arr = np.array(arr, dtype=np.int64, copy=True)
    arr.flags.writeable = False
    return arr


ROLES = ("pruned", "next-no-process", "next-process", "stop-process", "barrier")


@dataclass(frozen=True)
class NodeTag:
    """The paper's node attribute (Table II) for one node, decided from its op and operands.

    ``role`` is the attribute used for tree building; ``root`` / ``leaf`` say whether the node
    produces prunable channels / consumes channels through its weights (Conv is both).
    ``reason`` explains a barrier."""

    node: str
    op_type: str
    role: str
    root: bool = False
    leaf: bool = False
    reason: str = ""


@dataclass(frozen=True)
class Tags:
    """Tags by node name, and the value shapes (from ONNX shape inference) they were decided on."""

    by_node: Mapping[str, NodeTag]
    shapes: Mapping[str, tuple] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "by_node", MappingProxyType(dict(self.by_node)))
        object.__setattr__(self, "shapes", MappingProxyType(dict(self.shapes)))

    def roots(self) -> list[str]:
        return [n for n, t in self.by_node.items() if t.root]


@dataclass(frozen=True, eq=False)
class ChannelMap:
    """Which channel id each position along ``axis`` of a value carries (-1: untracked)."""

    axis: int
    rank: int
    ids: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "ids", _frozen(self.ids))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Root:
    """A pruned node: channel ``c`` of its output is id ``first_id + c``."""

    node: str
    output: str          # the value it writes channels into
    weight_port: int
    weight_axis: int     # the weight axis indexing its output channels
    channels: int
    first_id: int


@dataclass(frozen=True, eq=False)
class Leaf:
    """A node that consumes channels through its weights (stop-process): the input at
    ``data_port`` carries ``ids``, position ``p`` of which is read by ``weight[.., p, ..]`` along
    ``weight_axis``; ``filter_axis`` indexes the leaf's own output filters (k in Eq. 1)."""

    node: str
    data_port: int
    weight_port: int
    weight_axis: int
    filter_axis: int
    ids: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "ids", _frozen(self.ids))


@dataclass(frozen=True)
class AssociationTree:
    """One pruned node's association tree (paper Algorithm 1): every node its channels reach,
    with the edge it was reached by. ``kinds`` maps node -> root / next / leaf / barrier /
    output (a graph output is named ``output:<value>``)."""

    root: str
    edges: tuple[tuple[str, str], ...]
    kinds: Mapping[str, str]
    leaves: tuple[str, ...]
    blockers: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "kinds", MappingProxyType(dict(self.kinds)))


@dataclass(frozen=True)
class Trees:
    """Channel ids on every value, couplings, leaves, blocked ids, and per-root trees."""

    roots: tuple[Root, ...]
    maps: Mapping[str, ChannelMap]
    leaves: tuple[Leaf, ...]
    couple_a: np.ndarray
    couple_b: np.ndarray
    blocked: Mapping[int, str]          # id -> first reason it cannot be removed
    trees: Sequence[AssociationTree]  # walked when read (trees.LazyTrees)
    num_ids: int
    rep: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # class representative per id
    # computed shape operands slice replaces by constants: node -> ((port, folded value, always),
    # ..); ``always`` when the value counts pruned channels, else only when the node is cut
    frozen: Mapping[str, tuple[tuple[int, np.ndarray, bool], ...]] = field(default_factory=dict)
    head_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ids split into heads
    stream_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ids a normalization reads
    # graph inputs and outputs whose channels may go (a KV cache): name -> "input" | "output"
    interface: Mapping[str, str] = field(default_factory=dict)
    # gqa=queries: repeat_kv's fresh query-head ids (KV group = position // n_rep), n_rep
    repeats: tuple[tuple[np.ndarray, int], ...] = ()
    # fresh ids of zero channels a Pad adds to the channel axis: cut with the class they joined
    padded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self):
        object.__setattr__(self, "frozen", MappingProxyType(dict(self.frozen)))
        object.__setattr__(self, "interface", MappingProxyType(dict(self.interface)))
        object.__setattr__(self, "head_ids", _frozen(self.head_ids))
        object.__setattr__(self, "stream_ids", _frozen(self.stream_ids))
        object.__setattr__(self, "padded", _frozen(self.padded))
        object.__setattr__(self, "rep", _frozen(self.rep))
        object.__setattr__(self, "maps", MappingProxyType(dict(self.maps)))
        object.__setattr__(self, "blocked", MappingProxyType(dict(self.blocked)))
        object.__setattr__(self, "couple_a", _frozen(self.couple_a))
        object.__setattr__(self, "couple_b", _frozen(self.couple_b))

    def root_of(self, channel_id: int) -> tuple[Root, int]:
        starts = [r.first_id for r in self.roots]
        i = int(np.searchsorted(starts, channel_id, side="right")) - 1
        root = self.roots[i]
        return root, channel_id - root.first_id


PATTERNS = ("one-to-one", "one-to-many", "many-to-one", "many-to-many")


@dataclass(frozen=True)
class Group:
    """Roots whose channels are coupled, pruned together. Channel ``k`` of the group is the
    equivalence class ``members[k]`` (ids from one or more roots), ordered by smallest id."""

    id: int
    pattern: str
    roots: tuple[str, ...]
    leaves: tuple[str, ...]
    members: tuple[np.ndarray, ...]
    blocked: str | None = None      # why the group is left alone, or None
    # channel sets of which one must stay: a value carrying part of the group (a Slice or Split
    # output, a root coupled to part of it) must not be cut to zero width
    nonempty: tuple[tuple[int, ...], ...] = ()
    heads: bool = False             # its channels are attention heads (``mask{heads=R}``)
    stream: bool = False            # a normalization reads its channels' statistics (``mask{stream=R}``)
    # gqa=queries: the KV group of each channel (a query head); mask removes as many from each
    blocks: tuple[int, ...] = ()

    @property
    def channels(self) -> int:
        return len(self.members)

    def spare(self, drop: np.ndarray, order: np.ndarray) -> np.ndarray:
        """``drop`` (channel indices to remove; ``order`` ranks channels lowest first) with,
        for every ``nonempty`` set it would empty, that set's best-ranked channel kept."""
        if not self.nonempty or len(drop) == 0:
            return drop
        dropped = set(np.asarray(drop).tolist())
        rank = {int(c): i for i, c in enumerate(np.asarray(order).tolist())}
        for channels in self.nonempty:
            if all(c in dropped for c in channels):
                dropped.discard(max(channels, key=rank.__getitem__))
        return np.array(sorted(dropped), dtype=np.asarray(drop).dtype)


@dataclass(frozen=True)
class Patterns:
    groups: tuple[Group, ...]


@dataclass(frozen=True)
class Scores:
    """Importance of each channel (class) of each prunable group; higher is kept first."""

    criterion: str
    scope: str
    by_group: Mapping[int, np.ndarray]

    def __post_init__(self):
        object.__setattr__(self, "by_group", MappingProxyType(dict(self.by_group)))


@dataclass(frozen=True)
class Masks:
    """The decision: for each group, the kept channel indices; ``removed_ids`` all root channel
    ids that go (sorted)."""

    kept: Mapping[int, tuple[int, ...]]
    removed_ids: np.ndarray
    notes: tuple[str, ...] = field(default=())
    whole: Mapping[int, str] = field(default_factory=dict)  # group id -> why it keeps every channel

    def __post_init__(self):
        object.__setattr__(self, "kept", MappingProxyType(dict(self.kept)))
        object.__setattr__(self, "whole", MappingProxyType(dict(self.whole)))
        object.__setattr__(self, "removed_ids", _frozen(unique_ids(self.removed_ids)))


@dataclass(frozen=True)
class LeafZeroing:
    """For the mask-equivalence check: zero ``positions`` of ``node``'s weight input along
    ``weight_axis`` in the original model."""

    node: str
    weight_port: int
    weight_axis: int
    positions: tuple[int, ...]
    # the leaf's input carrying those channels (what ``recover`` measures); None: not a leaf's
    # input channels but a residual-stream writer (``op_rules.streams``), which ``recover`` leaves be
    data_port: int | None = 0


@dataclass(frozen=True)
class SliceRecord:
    """What ``slice`` removed, in the original model's coordinates: provided after the IR
    changed, so ``validate`` can rebuild the masked original."""

    zeroings: tuple[LeafZeroing, ...]
    groups: tuple[dict, ...]
    # value -> (channel axis, keep mask) for every value that lost channels (``recover`` maps
    # original channels to the pruned model's with it)
    keeps: Mapping[str, tuple[int, np.ndarray]] = field(default_factory=dict)
    # graph inputs/outputs that lost channels (a KV cache): (name, "input" | "output", axis,
    # kept positions along it); validate feeds/compares the kept part of the original's
    interface: tuple[tuple[str, str, int, tuple[int, ...]], ...] = ()


def render(analysis) -> str:
    """A stable text form of an analysis, for golden tests and ``--dump-after``."""
    lines: list[str] = []
    if isinstance(analysis, Tags):
        for t in analysis.by_node.values():
            flags = "".join((" root" if t.root else "", " leaf" if t.leaf else ""))
            lines.append(f"{t.node}: {t.op_type} {t.role}{flags}" + (f" ({t.reason})" if t.reason else ""))
    elif isinstance(analysis, Trees):
        for r in analysis.roots:
            lines.append(f"root {r.node} -> {r.output}: {r.channels} channels, ids {r.first_id}..{r.first_id + r.channels - 1}")
        for name in sorted(analysis.maps):
            m = analysis.maps[name]
            lines.append(f"map {name}: axis {m.axis}/{m.rank} ids {_ids(m.ids)}")
        for lf in analysis.leaves:
            lines.append(f"leaf {lf.node}: input {lf.data_port} -> weight {lf.weight_port} axis {lf.weight_axis} ids {_ids(lf.ids)}")
        for t in analysis.trees:
            lines.append(f"tree {t.root}: " + " ".join(f"{a}->{b}[{t.kinds.get(b, '?')}]" for a, b in t.edges))
        for i in sorted(analysis.blocked):
            lines.append(f"blocked {i}: {analysis.blocked[i]}")
    elif isinstance(analysis, Patterns):
        for g in analysis.groups:
            members = " ".join("{" + ",".join(str(i) for i in m.tolist()) + "}" for m in g.members)
            lines.append(f"group {g.id} {g.pattern} roots={','.join(g.roots)} leaves={','.join(g.leaves)}"
                         + (f" blocked: {g.blocked}" if g.blocked else f" channels {members}")
                         + "".join(f" nonempty {list(c)}" for c in g.nonempty if not g.blocked))
    elif isinstance(analysis, Scores):
        for gid, s in analysis.by_group.items():
            lines.append(f"group {gid} {analysis.criterion}/{analysis.scope}: " + " ".join(f"{x:.6g}" for x in s))
    elif isinstance(analysis, Masks):
        for gid, kept in analysis.kept.items():
            lines.append(f"group {gid} kept {list(kept)}")
        lines.append(f"removed ids {_ids(analysis.removed_ids)}")
        lines += [f"note {n}" for n in analysis.notes]
    elif isinstance(analysis, SliceRecord):
        for z in analysis.zeroings:
            lines.append(f"zero {z.node} weight {z.weight_port} axis {z.weight_axis} at {list(z.positions)}")
    else:
        lines.append(repr(analysis))
    return "\n".join(lines) + "\n"


def _ids(ids: np.ndarray) -> str:
    ids = np.asarray(ids)
    if len(ids) > 24:
        return "[" + " ".join(str(i) for i in ids[:12].tolist()) + f" ... ({len(ids)} positions)]"
    return "[" + " ".join(str(i) for i in ids.tolist()) + "]"
