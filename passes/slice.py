"""slice: physically remove the chosen channels.

Reads: ``Trees``, ``Patterns``, ``Masks``. Provides: ``SliceRecord`` (what the mask-equivalence
check needs once the analyses are gone). Every value whose channel map carries a removed id gets a
keep mask along its channel axis; each node touching such a value applies its rule from
``op_rules.SLICE_RULES``: roots lose output filters (and bias), leaves lose input columns,
BatchNormalization and per-channel constants lose entries, grouped Conv its ``group``, Reshape
its target size, Slice its bounds, Split its sizes. Computed shape operands (``Trees.frozen``) are
first replaced by constants of their original value, so the rules can rewrite them. A constant shared with another node is copied first, never cut in place; dead
Identity/Constant nodes and unused initializers are removed at the end.

Example: removing channels {1, 3} of conv ``a`` (4 channels) in ``a -> BN -> Relu -> b``:
``W_a[[0, 2]]``, BN's four vectors ``[[0, 2]]``, ``W_b[:, [0, 2]]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ir import Graph, Initializer, Node, opset_of

from .analyses import LeafZeroing, Masks, Patterns, SliceRecord, Tags, Trees, in_sorted
from .base import Pass, PassContext, PassResult
from .infer_shapes import value_shapes
from .op_rules import SLICE_RULES, Rewriter, fold_shapes
from .op_rules.slices import cut_in_place, retie, share_zero_fed, weight_sources
from .op_rules.computed import OPERAND_OPS, select_kept
from .op_rules.streams import stream_zeroings


def group_reports(patterns: Patterns, masks: Masks | None, trees: Trees) -> tuple[dict, ...]:
    """The report's ``groups`` entries: id, pattern, roots, leaves, channels, kept or reason."""
    out = []
    for g in patterns.groups:
        entry = {"id": g.id, "pattern": g.pattern, "roots": list(g.roots), "leaves": list(g.leaves),
                 "channels_before": g.channels}
        if g.heads:  # its channels are whole attention heads
            entry["heads"] = True
        if g.stream:  # a normalization reads its channels: they are zeroed at its writers in the proof
            entry["stream"] = True
        if g.blocked:
            entry.update(channels_after=g.channels, pruned=False, reason=g.blocked)
        elif masks is None:
            entry.update(channels_after=g.channels, pruned=False, reason="not selected (no mask pass ran)")
        elif g.id not in masks.kept:
            entry.update(channels_after=g.channels, pruned=False,
                         reason=masks.whole.get(g.id, "not selected by the mask pass"))
        else:
            kept = list(masks.kept[g.id])
            entry.update(channels_after=len(kept), pruned=len(kept) < g.channels, kept=kept)
            if len(kept) == g.channels:
                entry["reason"] = masks.whole.get(g.id, "the mask pass removed none of its channels")
        out.append(entry)
    return tuple(out)


def inspect_reports(patterns: Patterns, trees: Trees) -> tuple[dict, ...]:
    """The groups as ``inspect`` shows them: ``prunable``, or not with the ``reason`` (what blocks
    it); nothing was pruned, so no ``pruned`` or ``channels_after``."""
    out = []
    for g in group_reports(patterns, None, trees):
        blocked = patterns.groups[g["id"]].blocked or None
        g = {k: v for k, v in g.items() if k not in ("pruned", "reason", "channels_after")}
        out.append(dict(g, prunable=blocked is None, reason=blocked))
    return tuple(out)


def interface_shapes(before: onnx.ModelProto, after: onnx.ModelProto) -> dict:
    """The report's ``interface`` (none when nothing changed): graph inputs and outputs whose shape
    pruning changed (a KV cache's past_*/present_*, API ``keep_io`` refuses it): a list of
    ``{"name", "kind", "shape_before", "shape_after"}``."""
    def shapes(model, kind):
        values = model.graph.input if kind == "input" else model.graph.output
        return {v.name: [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in values}
    out = []
    for kind in ("input", "output"):
        old, new = shapes(before, kind), shapes(after, kind)
        out += [{"name": n, "kind": kind, "shape_before": old[n], "shape_after": new[n]}
                for n in old if n in new and old[n] != new[n]]
    return {"interface": out} if out else {}


def live_entries(ir: Graph, ctx: PassContext, trees: Trees, opset: int) -> dict:
    """The elements of each frozen shape operand that follow a symbolic dim of the model (a
    dynamic batch, sequence or cache length read by Shape, no channel count in them): ``{(node,
    port): (computed value, frozen value, mask)}``. Given inputs fix every size for the analyses,
    so a computed Reshape target folds to the sample's numbers; those elements stay computed
    (``keep_live``) and the pruned file keeps its dynamic axes."""
    if not trees.frozen or not ctx.has(Tags):
        return {}
    declared = [v for v in ir.inputs if ir.initializer(v.name) is None]
    if all(v.shape is not None and all(isinstance(d, int) for d in v.shape) for v in declared):
        return {}
    inferred = value_shapes(ir)
    folded = fold_shapes(ir, ctx.get(Tags).shapes, opset)

    def symbolic(a, b) -> bool:
        shape = inferred.get(a)
        return isinstance(b, int) and shape is not None and b < len(shape) and not isinstance(shape[b], int)

    out = {}
    for name, operands in trees.frozen.items():
        ins = ir.inputs_of(ir.node(name))
        for port, value, _ in operands:
            v = ins[port] if port < len(ins) else None
            sv = folded.values.get(v.name) if v is not None else None
            value = np.asarray(value)
            if sv is None or isinstance(sv.taint, frozenset) or sv.taint.shape != value.shape \
                    or not np.issubdtype(value.dtype, np.integer):
                continue
            mask = np.zeros(value.shape, bool)
            for i, taint in enumerate(sv.taint.flat):
                reads = [(a, b) for a, b in taint if a is not None]
                counts = any(a in trees.maps and b in (trees.maps[a].axis, "*") for a, b in reads)
                mask.flat[i] = not counts and any(symbolic(a, b) for a, b in reads)
            if mask.any():
                out[(name, port)] = (v.name, value, mask)
    return out


def keep_live(ir: Graph, name: str, port: int, computed: str, value: np.ndarray, mask: np.ndarray) -> None:
    """``Where(mask, computed, rewritten)`` into the operand: the elements the slice rules left
    as they were frozen, and that follow a symbolic dim, are computed again at run time."""
    node = ir.node(name)
    cur = ir.inputs_of(node)[port]
    new = ir.const_array(cur) if cur is not None else None
    if new is None or new.shape != mask.shape or ir.value(computed) is None:
        return
    mask = mask & (new == value)
    if not mask.any():
        return
    cond = ir.unique_name(f"{name}/live_mask")
    ir.add_initializer(Initializer.from_array(cond, mask))
    out = ir.unique_name(f"{name}/live_shape")
    ir.add_node(Node(ir.unique_name(f"{name}/live_shape", kind="n"), "Where", "", {},
                     "onnxpruner: symbolic dims computed at run time, pruned counts constant"),
                [cond, computed, cur.name], [out])
    ir.set_input(node, port, out)


def _kept_by_gather(ir, node, port: int, value: np.ndarray, outs) -> bool:
    """A computed operand of an elementwise node cut along its output's channels: a Gather after
    its chain (``select_kept``) when that is smaller than the frozen cut value; nothing to cut
    when it broadcasts along them."""
    if node.op_type not in OPERAND_OPS or 0 not in outs:
        return False
    axis, keep, rank = outs[0]
    a = axis - (rank - value.ndim)
    if a < 0 or value.shape[a] == 1:
        return False
    return value.shape[a] == len(keep) and select_kept(ir, node, port, value, a, keep)


@dataclass(frozen=True)
class SlicePass(Pass):
    name: ClassVar[str] = "slice"
    requires: ClassVar[tuple[type, ...]] = (Trees, Patterns, Masks)
    provides: ClassVar[tuple[type, ...]] = (SliceRecord,)

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        trees, patterns, masks = ctx.get(Trees), ctx.get(Patterns), ctx.get(Masks)
        removed = masks.removed_ids
        groups = group_reports(patterns, masks, trees)
        zeroings = []
        padded = trees.padded[np.isin(trees.rep[trees.padded], trees.rep[removed])] if len(trees.padded) \
            else removed[:0]  # zeros a Pad added on the channel axis go with the class they joined
        read = np.union1d(removed, padded) if len(padded) else removed
        for lf in trees.leaves:
            pos = np.nonzero(in_sorted(lf.ids, read))[0]
            if len(pos):
                zeroings.append(LeafZeroing(lf.node, lf.weight_port, lf.weight_axis,
                                            tuple(pos.tolist()), lf.data_port))
        stream = [m for g in patterns.groups if g.stream for m in g.members]
        zeroings += stream_zeroings(ir, trees, removed[np.isin(removed, np.concatenate(stream))] if stream
                                    else removed[:0])
        cut = removed
        if trees.repeats:  # gqa=queries: repeat_kv's fresh ids go with the query heads coupled to them
            fresh = np.concatenate([ids for ids, _ in trees.repeats])
            cut = np.union1d(removed, fresh[np.isin(trees.rep[fresh], trees.rep[removed])])
        if len(padded):
            cut = np.union1d(cut, padded)
        keeps: dict[str, tuple[int, np.ndarray, int]] = {}
        kept: dict[bytes, np.ndarray] = {}  # by id map: the values along a stream share one
        for name, m in trees.maps.items():
            if (key := m.ids.tobytes()) not in kept:
                kept[key] = ~in_sorted(m.ids, cut)
                kept[key].flags.writeable = False  # shared by values: never changed in place
            keep = kept[key]
            if not keep.all():
                keeps[name] = (m.axis, keep, m.rank)
        interface = tuple((name, kind, keeps[name][0], tuple(np.nonzero(keeps[name][1])[0].tolist()))
                          for name, kind in sorted(trees.interface.items()) if name in keeps)
        ctx.put(SliceRecord(tuple(zeroings), groups, {k: (a, keep) for k, (a, keep, _) in keeps.items()},
                            interface))
        if len(removed) == 0:
            return PassResult(False, {"values_sliced": 0})
        opset = opset_of(ir)
        shapes = ctx.analyses[Tags].shapes if Tags in ctx.analyses else {}  # what the rules decided on
        live = live_entries(ir, ctx, trees, opset)
        for name, operands in trees.frozen.items():  # computed shape operands become constants
            node = ir.node(name)
            cut = any(v is not None and v.name in keeps
                      for v in ir.inputs_of(node) + ir.outputs_of(node))
            rw = Rewriter(ir, node, opset)
            outs = {p: keeps[v.name] for p, v in enumerate(ir.outputs_of(node)) if v is not None and v.name in keeps}
            for port, value, always in operands:
                v = ir.inputs_of(node)[port]
                if not always and v is not None and v.name in keeps:  # cut where it is made (ALBERT's
                    continue                   # token-type Gather of a table is a root): not cut twice
                if always or (cut and not _kept_by_gather(ir, node, port, np.asarray(value), outs)):
                    rw.set_const(port, np.asarray(value))
        chains = cut_in_place(ir, keeps, opset)  # tf2onnx's LayerNorm scale: its constants cut
        before = set(ir.initializers)
        shared = {n for n in before if ir.num_consumers(n) > 1}
        sources = weight_sources(ir)
        touched = 0
        for node in ir.topo_nodes():
            ins = {p: keeps[v.name] for p, v in enumerate(ir.inputs_of(node))
                   if v is not None and v.name in keeps}
            outs = {p: keeps[v.name] for p, v in enumerate(ir.outputs_of(node))
                    if v is not None and v.name in keeps}
            if not ins and not outs:
                continue
            rule = SLICE_RULES.get(node.op_type)
            if rule is not None:
                rule(Rewriter(ir, node, opset, shapes), ins, outs)
                touched += 1
        for name, (axis, keep, _) in keeps.items():
            value = ir.value(name)
            if isinstance(value, Initializer) or value.shape is None:
                continue
            dims = list(value.shape)
            dims[axis] = int(keep.sum())
            ir.set_value_type(name, onnx.helper.make_tensor_type_proto(value.elem_type, dims))
        for (name, port), (computed, value, mask) in live.items():
            keep_live(ir, name, port, computed, value, mask)
        retied = retie(ir, shared, before) + share_zero_fed(ir, keeps, sources)
        dead = ir.remove_dead()
        return PassResult(True, {"values_sliced": len(keeps), "nodes_rewritten": touched, "chains_cut": chains,
                                 "retied": retied, "dead_removed": dead})
