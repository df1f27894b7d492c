"""trees: one node association tree per pruned node (paper Algorithm 1), with the channel map
carried along every edge.

Reads: ``Tags``. Provides: ``Trees``. Walks the graph once in topological order: every pruned
node gives its output channels fresh ids; every other node maps the ids on its inputs to ids on
its outputs by its rule in ``op_rules`` (Concat offsets, Flatten's C×H×W expansion, Transpose's
axis move), records a leaf when it consumes them through weights, couples ids when it joins two
tracked inputs (Add), or blocks them with a reason (barrier op, channel-mixing op, graph output).
A tree is then the part of the graph each root's channels (or channels coupled to them) reach,
walked when read (``LazyTrees``): the pass itself is linear in the graph's size.
Shape sub-graphs are folded to numbers (``op_rules.fold_shapes``): a computed Reshape target or
Slice end the rules need is read as its value, and slice replaces it by a constant it rewrites; a
number counted from a channel axis that flows anywhere else blocks those channels.

Example: ``c1 = Conv(x); r = Relu(c1); f = Flatten(r); y = Gemm(f)``: ``c1`` gets ids 0..C-1,
``maps["f"].ids`` repeats each id H×W times, ``Gemm`` is a leaf reading them through weight axis 1
(transB=1); the tree of ``c1`` is c1 → Relu → Flatten → Gemm(leaf): one-to-one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ir import Graph, opset_of

from .analyses import AssociationTree, ChannelMap, Leaf, Root, Tags, Trees, unique_ids
from .base import Pass, PassContext, PassResult
from .op_rules import CHANNEL_RULES, ROOT_RULES, SHAPE_OPERANDS, NodeView, fold_shapes
from .op_rules.views import FRESH
from .op_rules.adaptive import adapts as adapts_by_itself
from .op_rules.attention import adopt
from .op_rules.computed import computed_weights
from .op_rules.gqa import MODES as GQA_MODES, regroups_heads, repeat_merge


@dataclass(frozen=True)
class TreesPass(Pass):
    name: ClassVar[str] = "trees"
    requires: ClassVar[tuple[type, ...]] = (Tags,)
    provides: ClassVar[tuple[type, ...]] = (Trees,)
    # never change a graph input's or output's shape (a KV cache's past_*/present_* stay whole)
    keep_io: bool = False
    # GQA: "groups" removes KV groups whole; "queries" keeps every KV head and thins the query
    # heads of each group evenly (``op_rules.gqa``)
    gqa: str = "groups"

    def __post_init__(self):
        if self.gqa not in GQA_MODES:
            raise ValueError(f"gqa must be one of {', '.join(GQA_MODES)}, got {self.gqa!r}")

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        tags = ctx.get(Tags)
        shapes = dict(tags.shapes)
        opset = opset_of(ir)
        maps: dict[str, ChannelMap] = {}
        roots: list[Root] = []
        leaves: list[Leaf] = []
        pairs_a: list[np.ndarray] = []
        pairs_b: list[np.ndarray] = []
        blocked: dict[int, str] = {}
        # per node: (tracked input ports, leaf ports, block reason)
        seen: dict[str, tuple[tuple[int, ...], tuple[int, ...], str]] = {}
        folded = fold_shapes(ir, shapes, opset)
        frozen: dict[str, dict[int, tuple[np.ndarray, bool]]] = {}  # node -> port -> (value, always)
        head_ids: list[np.ndarray] = []
        adapts: set[tuple[str, int]] = set()  # (node, port): a channel count read off its own input
        adopted: dict[str, ChannelMap] = {}    # graph input -> its map (a KV cache's past_*)
        interface: dict[str, str] = {}
        stream_ids: list[np.ndarray] = []
        repeats: list[tuple[np.ndarray, int]] = []  # gqa=queries: fresh ids of repeat_kv, n_rep
        padded: list[np.ndarray] = []  # fresh ids of zeros a Pad adds to the channel axis
        head_set: set[int] = set()
        next_id = 0
        computed = computed_weights(ir)  # weights computed from initializers: frozen when cut

        def block(ids: np.ndarray, reason: str) -> None:
            for i in ids[ids >= 0].tolist():
                blocked.setdefault(i, reason)

        for node in ir.topo_nodes():
            ins = ir.inputs_of(node)
            in_maps = [maps.get(v.name) if v is not None else None for v in ins]
            for v in ir.implicit_inputs_of(node):
                if v.name in maps:
                    block(maps[v.name].ids, f"read inside a subgraph of {node.op_type} node {node.name!r}")
            tag = tags.by_node[node.name]
            view = NodeView(ir, node, in_maps, shapes, opset, folded.static, folded.values, computed, maps)
            for p, v in enumerate(ins):  # computed weights and operands: constants where cut
                if v is not None and v.name in computed:
                    frozen.setdefault(node.name, {}).setdefault(p, (computed[v.name], False))
            tracked = tuple(p for p, m in enumerate(in_maps) if m is not None)
            io_block = ""
            if tracked and tag.role != "barrier":
                chains = adopt(view)
                if chains and self.keep_io:
                    names = ", ".join(repr(c[0].name) for c in chains.values())
                    io_block = f"pruning would change the shape of graph input {names} (keep-io)"
                    chains = {}
                for p, chain in chains.items():  # a KV cache input: same ids
                    m = in_maps[tracked[0]]
                    for v in chain:
                        maps[v.name] = m
                    in_maps[p] = m
                    adopted[chain[0].name] = m
                    interface[chain[0].name] = "input"
                tracked = tuple(p for p, m in enumerate(in_maps) if m is not None)
            if tracked:
                if tag.role == "barrier" or io_block:
                    effect_block = tag.reason if tag.role == "barrier" else io_block
                    effect = None
                else:
                    merge = repeat_merge(view) if self.gqa == "queries" else None
                    if merge is not None:  # the KV ids end here, whole; its heads get fresh ids
                        effect, expand, n_rep = merge
                        block(in_maps[0].ids, f"gqa=queries keeps every KV head (repeat_kv {node.name!r})")
                        fresh = effect.outputs[0]
                        effect.outputs[0] = type(fresh)(fresh.axis, fresh.rank, fresh.ids + next_id)
                        repeats.append((fresh.ids + next_id, n_rep))
                        next_id += len(fresh)
                        for port, (value, _) in list(frozen.get(expand, {}).items()):
                            frozen[expand][port] = (value, True)  # its copy count is rewritten
                    else:
                        effect = CHANNEL_RULES[node.op_type].propagate(view)
                        if self.gqa == "queries" and not effect.block and head_set:
                            effect.block = regroups_heads(in_maps[tracked[0]], effect, head_set)
                    effect_block = effect.block
                if effect_block:
                    reason = f"{effect_block} (node {node.name!r})"
                    for p in tracked:
                        block(in_maps[p].ids, reason)
                    seen[node.name] = (tracked, (), reason)
                else:
                    outs = ir.outputs_of(node)
                    if effect.fresh:  # zero channels a Pad adds (op_rules.reindex._channel_padding)
                        next_id = _fresh_ids(effect, next_id, padded)
                    for port, m in effect.outputs.items():
                        if port < len(outs) and outs[port] is not None:
                            maps[outs[port].name] = m
                    for a, b in effect.couplings:
                        pairs_a.append(a)
                        pairs_b.append(b)
                    if effect.heads:
                        head_ids += [m.ids for m in effect.outputs.values()]
                        head_set.update(i for m in effect.outputs.values() for i in m.ids.tolist())
                    if effect.stream:
                        stream_ids += [in_maps[p].ids for p in tracked]
                    leaf_ports: tuple[int, ...] = ()
                    if effect.leaf is not None:
                        data_port, weight_port, weight_axis, filter_axis = effect.leaf
                        leaves.append(Leaf(node.name, data_port, weight_port, weight_axis,
                                           filter_axis, in_maps[data_port].ids))
                        leaf_ports = (data_port,)
                    seen[node.name] = (tracked, leaf_ports, "")
                    adapts.update((node.name, p) for p in effect.adapts)
                    for port in effect.freeze:  # a computed target with symbolic elements (op_rules.adaptive)
                        sv = folded.values.get(ins[port].name) if ins[port] is not None else None
                        if sv is not None and sv.value is not None:
                            frozen.setdefault(node.name, {}).setdefault(port, (sv.value, False))
                    for port in SHAPE_OPERANDS.get(node.op_type, ()):  # its slice rule rewrites them
                        if port < len(ins) and ins[port] is not None and ins[port].name in folded.static \
                                and ir.const_array(ins[port]) is None:
                            frozen.setdefault(node.name, {}).setdefault(
                                port, (folded.static[ins[port].name], False))
            if tag.root:
                spec = ROOT_RULES[node.op_type](view)
                outs = ir.outputs_of(node)
                carried = [] if spec is None else [
                    (outs[p], axis, rank) for p, axis, rank in ((0, spec.out_axis, spec.out_rank),) + spec.outputs
                    if p < len(outs) and outs[p] is not None]
                if carried:
                    ids = np.arange(next_id, next_id + spec.channels, dtype=np.int64)
                    roots.append(Root(node.name, carried[0][0].name, spec.weight_port, spec.weight_axis,
                                      spec.channels, next_id))
                    for out, axis, rank in carried:
                        maps[out.name] = ChannelMap(axis, rank, ids)
                    if spec.self_leaf is not None:  # a recurrent state: its own weights read it back
                        leaves.append(Leaf(node.name, *spec.self_leaf, ids))
                    next_id += spec.channels
        carried_in = {_map_key(a) for a in adopted.values()}  # one lookup per output, not one per pair
        for name in ir.output_names:
            if name not in maps:
                continue
            m = maps[name]
            if _map_key(m) in carried_in:
                interface[name] = "output"  # a present_* carrying its past_*'s channels
            else:
                block(m.ids, f"reaches graph output {name!r}")
        _check_shape_values(ir, maps, folded, frozen, block, seen, adapts, shapes)
        for x, y in tied(ir, roots, leaves):
            pairs_a.append(x)
            pairs_b.append(y)

        a = np.concatenate(pairs_a) if pairs_a else np.zeros(0, np.int64)
        b = np.concatenate(pairs_b) if pairs_b else np.zeros(0, np.int64)
        rep = union_find(next_id, a, b)
        pad_ids = np.concatenate(padded) if padded else np.zeros(0, np.int64)
        _block_classes(pad_ids, rep, blocked)
        trees = LazyTrees(ir, tuple(roots), maps, rep, seen)
        ctx.put(Trees(tuple(roots), maps, tuple(leaves), a, b, blocked, trees, next_id, rep,
                      {n: tuple((p, v, always) for p, (v, always) in sorted(ports.items()))
                       for n, ports in frozen.items()},
                      unique_ids(np.concatenate(head_ids)) if head_ids else np.zeros(0, np.int64),
                      _ids_of(stream_ids), interface, tuple(repeats), pad_ids))
        return PassResult(False, {"roots": len(roots), "leaves": len(leaves),
                                  "channels": next_id, "blocked_channels": len(blocked)})


def tied(ir: Graph, roots: Sequence[Root], leaves: Sequence[Leaf]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Couplings of the readers of one weight (ALBERT's layers sharing theirs, an RNN cell unrolled
    over time, a Linear applied twice): each reader cuts the weight, and readers cutting it
    differently leave a copy per reader, none smaller (``slices.retie`` shares equal copies
    again). Roots reading one initializer (through Identity) along one axis: their channels
    coupled position by position; leaves likewise, where both read tracked channels."""
    readers: dict[tuple, list[np.ndarray]] = {}
    for r in roots:
        if (w := _source_weight(ir, r.node, r.weight_port)) is not None:
            readers.setdefault(("root", w, r.weight_axis, r.channels), []).append(
                np.arange(r.first_id, r.first_id + r.channels, dtype=np.int64))
    for lf in leaves:
        if (w := _source_weight(ir, lf.node, lf.weight_port)) is not None:
            readers.setdefault(("leaf", w, lf.weight_axis, len(lf.ids)), []).append(lf.ids)
    out = []
    for ids in readers.values():
        for other in ids[1:]:
            both = (ids[0] >= 0) & (other >= 0)
            if both.any():
                out.append((ids[0][both], other[both]))
    return out


def _source_weight(ir: Graph, node: str, port: int) -> str | None:
    """The initializer a node reads at ``port``, through Identity nodes (PyTorch's exporter shares
    a deduplicated weight that way); None when it reads anything else."""
    ins = ir.inputs_of(node)
    value = ins[port] if port < len(ins) else None
    for _ in range(16):
        if value is None:
            return None
        if ir.initializer(value.name) is not None:
            return value.name
        prod = ir.producer(value)
        if prod is None or prod.op_type != "Identity" or prod.domain not in ("", "ai.onnx"):
            return None
        value = ir.inputs_of(prod)[0]
    return None


def _fresh_ids(effect, next_id: int, padded: list) -> int:
    """Give the FRESH positions of ``effect``'s output maps new ids (from ``next_id``), recorded in
    ``padded``; the next free id."""
    for port, m in list(effect.outputs.items()):
        where = m.ids == FRESH
        if where.any():
            ids = m.ids.copy()
            ids[where] = np.arange(next_id, next_id + int(where.sum()), dtype=np.int64)
            padded.append(ids[where])
            next_id += int(where.sum())
            effect.outputs[port] = ChannelMap(m.axis, m.rank, ids)
    return next_id


def _block_classes(fresh: np.ndarray, rep: np.ndarray, blocked: dict) -> None:
    """A block on a fresh id (no root's: classify checks roots' ids) blocks every id of its class."""
    hit = [i for i in fresh.tolist() if i in blocked]
    for i in hit:
        for j in np.nonzero(rep == rep[i])[0].tolist():
            blocked.setdefault(j, blocked[i])


def _check_shape_values(ir: Graph, maps, folded, frozen, block, seen, adapts=frozenset(),
                        shapes=None) -> None:
    """A number read by Shape on a channel axis changes once channels go. It may only reach an
    operand that slice rewrites (frozen to its folded value, then cut: a Reshape target, Slice
    bounds, Split sizes, Resize sizes); anywhere else the channels it counted are blocked."""

    def relevant(taint) -> set[str]:
        out = set()
        for value, axis in taint:
            m = maps.get(value)
            if m is not None and (axis == "*" or axis == m.axis) and bool((m.ids >= 0).any()):
                out.add(value)
        return out

    def stop(sources: set[str], where: str) -> None:
        for value in sorted(sources):
            reason = f"its channel count, read by Shape, reaches {where}"
            block(maps[value].ids, reason)
            for node, _ in ir.consumers(value):
                if node.op_type == "Shape":
                    tracked = seen.get(node.name, ((0,), (), ""))[0]
                    seen[node.name] = (tracked, (), reason)

    for name, sv in folded.values.items():
        sources = relevant(sv.union())
        if not sources:
            continue
        if ir.is_graph_output(name):
            stop(sources, f"graph output {name!r}")
        for node, port in ir.consumers(name):
            if node.name in folded.nodes or (node.name, port) in adapts:
                continue  # more shape arithmetic (the taint follows it), or a count that adapts
            if port in SHAPE_OPERANDS.get(node.op_type, ()) and name in folded.static \
                    and (node.op_type != "Expand" or ir.inputs_of(node)[0].name in maps):
                # an Expand's target is rewritten only with its tracked input (a class token's
                # constant cut by its Concat would not match the frozen count)
                frozen.setdefault(node.name, {})[port] = (folded.static[name], True)
            elif port == 1 and adapts_by_itself(ir, node, sv, maps, shapes or {}):
                continue  # a computed Reshape target that follows its pruned input by itself
            elif node.op_type in _NUMBER_USES and name in folded.static and folded.static[name].size == 1 \
                    and _counts_channels_only(sv.union(), maps):
                # a channel count used as a number (Swin's (C // heads) ** -0.5): the masked original
                # computes it from all its channels, so the pruned model keeps that number
                frozen.setdefault(node.name, {})[port] = (folded.static[name], True)
            else:
                stop(sources, f"a {node.op_type} that cannot be rewritten (node {node.name!r})")


# ops that use a Shape-read number as a number (not as a shape): freezing it keeps the masked
# original's arithmetic exactly
_NUMBER_USES = frozenset({"Cast", "Pow", "Sqrt", "Reciprocal", "Mul", "Div", "Add", "Sub"})


def _counts_channels_only(taint, maps) -> bool:
    """Every dim the number was computed from is a tracked value's channel axis (a static count,
    never a batch or sequence length that may differ at run time)."""
    return bool(taint) and all(a in maps and b == maps[a].axis for a, b in taint)


def _map_key(m) -> tuple:
    """Equal for two channel maps exactly when their axis, rank and ids (``np.array_equal``) are."""
    return m.axis, m.rank, m.ids.shape, np.asarray(m.ids, np.int64).tobytes()


def _ids_of(parts: list[np.ndarray]) -> np.ndarray:
    ids = unique_ids(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return ids[ids >= 0]


def union_find(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Representative (smallest member) of each id's equivalence class under pairs a~b."""
    rep = np.arange(n, dtype=np.int64)
    if len(a) == 0:
        return rep
    while True:
        ra, rb = rep[a], rep[b]
        low = np.minimum(ra, rb)
        if np.array_equal(ra, rb):
            break
        np.minimum.at(rep, ra, low)
        np.minimum.at(rep, rb, low)
        while True:  # pointer jumping until every id points at a root
            nxt = rep[rep]
            if np.array_equal(nxt, rep):
                break
            rep = nxt
    return rep


class LazyTrees(Sequence):
    """The per-root association trees, each walked when first read (``inspect``, dumps, golden
    files); pruning itself reads only the maps, couplings and leaves. A residual chain makes the
    trees together quadratic in depth (each root's tree runs to the chain's end), so the pass
    keeps only what a walk needs, in time linear in the graph: each tracked value's consumers and
    the classes it carries (computed once per value, shared by every walk)."""

    def __init__(self, ir: Graph, roots: tuple[Root, ...], maps, rep: np.ndarray, seen):
        self._roots, self._maps, self._rep, self._seen = roots, maps, rep, seen
        self._outputs = frozenset(ir.output_names)
        self._consumers: dict[str, tuple[tuple[str, int], ...]] = {}
        self._outs: dict[str, tuple[str, ...]] = {}
        for value in maps:
            uses = tuple((node.name, port) for node, port in ir.consumers(value))
            self._consumers[value] = uses
            for node, _ in uses:
                if node not in self._outs:
                    self._outs[node] = tuple(o.name for o in ir.outputs_of(node) if o is not None)
        for root in roots:  # a root may carry its ids on several outputs (a recurrent state)
            self._outs[root.node] = tuple(o.name for o in ir.outputs_of(root.node) if o is not None)
        self._classes: dict[str, frozenset[int]] = {}
        self._trees: dict[int, AssociationTree] = {}

    def __len__(self) -> int:
        return len(self._roots)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        i = range(len(self))[i]
        if i not in self._trees:
            self._trees[i] = self._walk(self._roots[i])
        return self._trees[i]

    def classes(self, value: str) -> frozenset[int]:
        got = self._classes.get(value)
        if got is None:
            m = self._maps.get(value)
            ids = m.ids[m.ids >= 0] if m is not None else np.zeros(0, np.int64)
            got = self._classes[value] = frozenset(unique_ids(self._rep[ids]).tolist())
        return got

    def _walk(self, root: Root) -> AssociationTree:
        own = frozenset(unique_ids(self._rep[root.first_id:root.first_id + root.channels]).tolist())
        kinds = {root.node: "root"}
        edges: list[tuple[str, str]] = []
        leaves: list[str] = []
        blockers: list[str] = []
        queue = deque((root.node, v) for v in self._outs[root.node] if not own.isdisjoint(self.classes(v)))
        while queue:
            parent, value = queue.popleft()
            if value in self._outputs:
                key = f"output:{value}"
                edges.append((parent, key))
                if key not in kinds:
                    kinds[key] = "output"
                    blockers.append(key)
            for node, port in self._consumers.get(value, ()):
                tracked, leaf_ports, reason = self._seen.get(node, ((), (), ""))
                edges.append((parent, node))
                if node in kinds:
                    continue
                if reason:
                    kinds[node] = "barrier"
                    blockers.append(node)
                elif port in leaf_ports:
                    kinds[node] = "leaf"
                    leaves.append(node)
                else:
                    kinds[node] = "next"
                    for out in self._outs.get(node, ()):
                        if not own.isdisjoint(self.classes(out)):
                            queue.append((node, out))
        return AssociationTree(root.node, tuple(dict.fromkeys(edges)), kinds, tuple(leaves), tuple(blockers))
