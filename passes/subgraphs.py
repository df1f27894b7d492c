"""Control flow: a network that sits inside the branches of an ``If`` prunes inside them.

An If whose branches read a value computed in the enclosing graph is lowered into the IR
(``ir/bodies.py``: channels cross its bodies) and is not handled here, nor is the loop-invariant
head of a Loop / Scan body that reads such a value (lowered the same way). Other bodies stay
opaque in the IR, and a value read inside one blocks the channels it carries (trees). The step past
that: a branch body that reads nothing from the enclosing graph but the graph's inputs and
weights (or one lowering leaves opaque: a name defined twice in the model) is a model of its
own: what it reads becomes its inputs, its outputs its outputs. It is pruned as such by the same
pipeline, so the mask-equivalence check proves it on its own, and the pruned body goes back in
place of the original. Both branches are pruned apart; whatever leaves a branch (its outputs)
stays whole, so the two always agree on the shapes they return. The If then selects between two
proven bodies: the model computes what the original computes with each body masked.

Example: Silero VAD (``If(sr == 16000)``, one network per sample rate, each reading only the
``input`` and ``state`` graph inputs): each branch's encoder convolutions prune, with the proof
run on the branch.

Used by ``pipeline.prune``, which hands it ``prune`` as a callable (as ``reruns`` gets its run):
nothing here imports upward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from ir import lower
from ir.bodies import lowered_ifs

from .cost import body_flops, count_params
from .infer_shapes import value_shapes
from .inputs import SYMBOLIC_SIZES
from .runtime import run_model


@dataclass
class Branch:
    """One body pruned (or left whole): where it is, its report, or the reason it stayed."""

    node: str
    attr: str
    report: dict | None = None
    reason: str | None = None


def outer_names(body: onnx.GraphProto) -> set[str]:
    """Names a body (with the bodies nested in it) reads from the scopes around it."""
    defined = {t.name for t in body.initializer} | {i.name for i in body.input} \
        | {t.name for t in body.sparse_initializer}
    used: set[str] = set()
    for node in body.node:
        used |= {i for i in node.input if i and i not in defined}
        for a in node.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                      list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
                used |= outer_names(g) - defined
        defined |= {o for o in node.output if o}
    return used


def branch_bodies(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    """The top-level If nodes' branch attributes, but those of an If lowering puts into the
    graph (its branches read a value computed outside: channels cross into them, ir/bodies.py)."""
    lowered = lowered_ifs(model)
    return [(n, a.name) for i, n in enumerate(model.graph.node) if n.op_type == "If" and n.domain in ("", "ai.onnx")
            and i not in lowered for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]


def _computed(model: onnx.ModelProto, names: list[str], sample_inputs: dict | None,
              input_shapes: dict | None = None):
    """Values of the enclosing graph a body reads, as the original computes them on the given
    inputs (seeded ones of the given shapes without): their types for the body's standalone
    inputs, their arrays for its proof; or the reason they cannot be had. The channels they
    carry stay blocked."""
    from .inputs import make_inputs

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    try:
        feeds = sample_inputs if sample_inputs is not None else make_inputs(model, 0, None, input_shapes).feeds
        values = run_model(probe, feeds, quiet=True)[len(model.graph.output):]
    except Exception as exc:
        return f"which the model does not compute on the sample inputs ({str(exc).strip().splitlines()[0]})"
    if any(not isinstance(v, np.ndarray) for v in values):
        return "which is not a tensor"
    infos = {n: onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape))
             for n, v in zip(names, values)}
    return infos, dict(zip(names, values)), dict(feeds)


def _standalone(model: onnx.ModelProto, body: onnx.GraphProto, reads: list[str],
                weights: list[onnx.TensorProto] = (), computed: dict | None = None) -> onnx.ModelProto:
    inputs = {i.name: i for i in model.graph.input} | dict(computed or {})
    graph = onnx.helper.make_graph(list(body.node), body.name or "branch", [inputs[n] for n in reads],
                                   list(body.output), list(body.initializer) + list(weights),
                                   value_info=list(body.value_info))
    out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                                 producer_name=model.producer_name)
    out.functions.extend(model.functions)
    return out


def _runnable_feeds(model: onnx.ModelProto, feeds: dict | None) -> dict | None:
    """The given inputs select one branch; another may not run on them (Silero's 8 kHz body on
    a 16 kHz frame). Then the same inputs with their last dim, where it is symbolic, resized to
    each size validate tries for symbolic dims (other dims kept: a state's batch stays the
    input's), the first the body runs on; None (validate's own seeded inputs) otherwise."""
    if not feeds:
        return feeds
    declared = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
    rng = np.random.default_rng(0)
    candidates = [feeds]
    for size in SYMBOLIC_SIZES + (256, 512):
        variant = dict(feeds)
        for name, arr in feeds.items():
            dims = declared.get(name)
            if dims and arr.ndim == len(dims) and not dims[-1].HasField("dim_value") and arr.dtype.kind == "f":
                variant[name] = (rng.standard_normal(arr.shape[:-1] + (size,)) * float(np.std(arr) or 1.0)).astype(arr.dtype)
        candidates.append(variant)
    for candidate in candidates:
        try:
            run_model(model, candidate, quiet=True)
            return candidate
        except Exception:
            continue
    return None


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    for n in graph.node:
        names |= set(n.output)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _all_names(a.g)
    return names


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every read of ``old`` in a body (nested bodies included) reads ``new``."""
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename(a.g, old, new)


def _placed(pruned: onnx.GraphProto, name: str, inits: dict, weights: set[str], readers: dict,
            taken: set[str]) -> onnx.GraphProto:
    """The pruned standalone graph as a body again: no inputs (it reads the enclosing scope).
    A weight copied in from the enclosing graph that only this body reads stays in it; one that
    others read too is read from there again when unchanged, else kept in the body under a fresh
    name. The enclosing graph then drops the weights no one reads any more."""
    body = onnx.helper.make_graph(list(pruned.node), name, [], list(pruned.output), [],
                                  value_info=list(pruned.value_info))
    for t in pruned.initializer:
        shared = t.name in weights and readers.get(t.name, 0) > 2
        if shared and t.SerializeToString() == inits[t.name].SerializeToString():
            continue
        if shared:
            fresh = next(f"{t.name}.{name}_{i}" for i in range(len(taken) + 1) if f"{t.name}.{name}_{i}" not in taken)
            taken.add(fresh)
            _rename(body, t.name, fresh)
            for o in body.output:
                if o.name == t.name:
                    o.name = fresh
            t = onnx.TensorProto.FromString(t.SerializeToString())
            t.name = fresh
        body.initializer.append(t)
    return body


@dataclass
class Branches:
    """The bodies pruned apart, and the parameters of the model before (bodies included) and
    the FLOPs of its bodies (``bodies_flops``)."""

    params_before: int
    items: list[Branch]
    flops_before: int = 0


def bodies_flops(model: onnx.ModelProto) -> int:
    """FLOPs inside the model's bodies (``cost.body_flops``; an If: its larger branch), on the
    shapes ONNX shape inference gives: what the top-level count of the model after its bodies
    were pruned is corrected by, for the count before."""
    graph = lower(model)
    return int(sum(body_flops(graph, value_shapes(graph)).values()))


def prune_branches(model: onnx.ModelProto, prune: Callable, sample_inputs: dict | None,
                   input_shapes: dict | None = None) -> tuple[onnx.ModelProto, Branches | None]:
    """The model with every top-level If branch pruned as a model of its own by
    ``prune(model, sample_inputs, input_shapes)`` (a ``PruneResult``): what it reads from outside
    becomes its inputs (values computed outside sampled from the model's own run); the caller's
    input shapes go with the graph inputs a body reads (those it is not fed already); bodies
    that fail stay, with why."""
    bodies = branch_bodies(model)
    if not bodies:
        return model, None
    before = count_params(lower(model))
    flops_before = bodies_flops(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - set(inits)
    readers: dict[str, int] = {}  # how many bodies and top-level nodes read each name
    for n in model.graph.node:
        names = set(n.input) | set().union(*(outer_names(a.g) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH))
        for name in names:
            readers[name] = readers.get(name, 0) + 1
    for node, attr in bodies:  # a body reading a name counts once more than its If node did
        for name in outer_names(next(a for a in node.attribute if a.name == attr).g):
            readers[name] = readers.get(name, 0) + 1
    results: list[Branch] = []
    taken = _all_names(model.graph)
    computed = None  # (value infos, sampled values, the graph inputs they came from), or why not
    for node, attr in bodies:
        target = next(n for n in out.graph.node if n is not None and n.name == node.name and n.output == node.output)
        slot = next(a for a in target.attribute if a.name == attr)
        reads = sorted(outer_names(slot.g))
        weights = [r for r in reads if r in inits and r not in graph_inputs]  # copied in, see below
        reads = [r for r in reads if r not in weights]
        foreign = [r for r in reads if r not in graph_inputs]
        branch = Branch(node.name or node.output[0], attr)
        results.append(branch)
        given = sample_inputs
        if foreign:  # values computed outside: inputs of their own, sampled from the model's run
            if computed is None:
                computed = _computed(model, sorted({r for n, a in bodies for r in outer_names(
                    next(x for x in n.attribute if x.name == a).g)} - graph_inputs - set(inits)), sample_inputs, input_shapes)
            if isinstance(computed, str):
                branch.reason = f"reads {foreign[0]!r} from the enclosing graph, {computed}"
                continue
            given = {**computed[1], **computed[2]}
        standalone = _standalone(model, slot.g, reads, [inits[r] for r in weights],
                                 computed[0] if foreign else {})
        feeds = None if given is None else {k: v for k, v in given.items() if k in reads}
        feeds = _runnable_feeds(standalone, feeds)
        shapes = {k: v for k, v in (input_shapes or {}).items() if k in reads and k not in (feeds or {})}
        try:
            result = prune(standalone, feeds, shapes or None)
        except Exception as exc:  # the branch stays as it was: the rest may still prune
            branch.reason = f"pruning it as a model of its own failed: {str(exc).strip().splitlines()[0]}"
            continue
        if not result.report.get("verified"):
            branch.reason = "its pruning is not proven"
            continue
        body = _placed(result.model.graph, slot.g.name, inits, set(weights), readers, taken)
        slot.g.CopyFrom(body)
        branch.report = result.report
    used = set().union(*(set(n.input) | set().union(*(outer_names(a.g) for a in n.attribute
                                                       if a.type == onnx.AttributeProto.GRAPH))
                         for n in out.graph.node)) | {o.name for o in out.graph.output}
    gone = {t.name for t in out.graph.initializer if t.name not in used}  # weights moved into a body
    kept = [t for t in out.graph.initializer if t.name not in gone]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    infos = [vi for vi in out.graph.value_info if vi.name not in gone]  # their old shapes too
    del out.graph.value_info[:]
    out.graph.value_info.extend(infos)
    return out, Branches(before, results, flops_before)


def merge_reports(report: dict, branches: Branches | None, pruned: onnx.ModelProto | None = None) -> dict:
    """The top-level report with each pruned body's groups (roots named ``IF/branch:node``),
    the parameter and FLOP counts before (bodies as they were: the top-level count saw them
    pruned), and the proof of every body."""
    if branches is None:
        return report
    params_before = branches.params_before
    if pruned is not None and report.get("flops_before") is not None:
        report = {**report, "flops_before": report["flops_before"] + branches.flops_before - bodies_flops(pruned)}
    groups = list(report["groups"])
    next_id = max((g["id"] for g in groups), default=-1) + 1
    entries = []
    worst = report.get("max_abs_diff") or 0.0
    verified = bool(report.get("verified"))
    for b in branches.items:
        where = f"{b.node}/{b.attr}"
        entry = {"node": b.node, "branch": b.attr}
        if b.report is None:
            entries.append({**entry, "pruned": False, "reason": b.reason})
            continue
        entries.append({**entry, "pruned": True, "params_before": b.report["params_before"],
                        "params_after": b.report["params_after"], "verified": b.report["verified"],
                        "max_abs_diff": b.report["max_abs_diff"], "inputs": b.report.get("inputs", {})})
        verified = verified and bool(b.report["verified"])
        worst = max(worst, b.report["max_abs_diff"] or 0.0)
        for g in b.report["groups"]:
            g = {**g, "id": next_id, "roots": [f"{where}:{r}" for r in g["roots"]],
                 "leaves": [f"{where}:{r}" for r in g["leaves"]]}
            if str(g.get("reason", "")).startswith("reaches graph output"):  # the body's output
                g["reason"] = g["reason"].replace("reaches graph output", f"leaves {where} as its output")
            groups.append(g)
            next_id += 1
    return {**report, "params_before": params_before, "groups": groups, "branches": entries,
            "verified": verified, "max_abs_diff": float(np.float64(worst)) if verified else report.get("max_abs_diff")}
