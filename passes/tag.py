"""tag: the node attribute library applied to each node (paper Table II).

Reads: the IR. Provides: ``Tags`` (role per node, which nodes are pruned roots and leaves, and the
value shapes every later analysis uses). An op outside ``op_rules.CHANNEL_RULES`` or outside the
default ONNX domain is tagged ``barrier`` with the reason; nothing is pruned through it.

Example: ``Conv(group=1) -> BatchNormalization -> Relu -> Conv`` tags
``pruned+stop-process, next-process, next-no-process, pruned+stop-process``; a grouped Conv
(depthwise, ResNeXt) is ``next-process`` (whole groups are pruned through it); a ``Foo`` node of
domain ``com.acme`` is ``barrier: op com.acme.Foo is not in the node attribute library``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ir import Graph, opset_of, shape_of
from ir.bodies import body_values

from .analyses import NodeTag, Tags
from .base import Pass, PassContext, PassResult
from .infer_shapes import light_model, value_shapes
from .op_rules import (CHANNEL_RULES, CONDITIONAL_ROOTS, DEFAULT_DOMAINS, ROOT_RULES, NodeView,
                       conv_group_widths, fold_shapes)
from .op_rules.computed import computed_weights
from .validate import Runnable  # weights by reference, as the proof runs them


@dataclass(frozen=True)
class TagPass(Pass):
    name: ClassVar[str] = "tag"
    provides: ClassVar[tuple[type, ...]] = (Tags,)

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        opset = opset_of(ir)
        shapes = static_shapes(ir, opset, ctx=ctx)
        tags = {}
        computed = computed_weights(ir)
        for node in ir.topo_nodes():
            view = NodeView(ir, node, [None] * ir.input_arity(node), shapes, opset, computed=computed)
            tags[node.name] = _tag(view)
        counts: dict[str, int] = {}
        for t in tags.values():
            counts[t.role] = counts.get(t.role, 0) + 1
        ctx.put(Tags(tags, shapes))
        barriers = sorted({f"{t.op_type}" for t in tags.values() if t.role == "barrier"})
        notes = [f"barrier ops: {', '.join(barriers)}"] if barriers else []
        return PassResult(False, {**counts, "roots": sum(t.root for t in tags.values())}, notes)


def _static(shape) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _more_known(new, old) -> bool:
    """``new`` (same rank) knows more dims than ``old``, and agrees with it where both know."""
    if new is None:
        return False
    if old is None:
        return any(isinstance(d, int) for d in new)
    if len(new) != len(old) or any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(new, old)):
        return False
    return sum(isinstance(d, int) for d in new) > sum(isinstance(d, int) for d in old)


def static_shapes(ir: Graph, opset: int, rounds: int = 3, ctx: PassContext | None = None) -> dict[str, tuple]:
    """Value shapes from ONNX shape inference, completed where a computed shape operand (a
    Slice end from Shape // 2, a Reshape target built by Concat) folds to a number: inference
    runs again with those operands as constants, so the values after them get static shapes.
    Where inference still leaves a shape unknown or a dim symbolic, the shape ONNX Runtime
    produces is taken (``runtime_shapes``), unless the folded shape values already answer: a
    shape vector folded to known numbers has their length (ViT's attention reshapes: 36 vectors
    inference leaves of unknown length, no run needed)."""
    shapes = _reshape_targets(ir, _folded_static_shapes(ir, opset, rounds), opset)
    for name, sv in fold_shapes(ir, shapes, opset).values.items():
        if sv.static() and not _static(shapes.get(name)):
            shapes[name] = tuple(int(d) for d in np.shape(sv.value))
    return runtime_shapes(ir, shapes, ctx)


def _reshape_targets(ir: Graph, shapes: dict[str, tuple], opset: int) -> dict[str, tuple]:
    """A Reshape that inference left unknown, whose computed target folds to numbers and exact
    symbolic dims (``x.view(x.size(0), 1, c * h)`` on a sequence of symbolic length), has that
    shape: a later Shape read of it then names which axis it reads."""
    folded = None
    for node in ir.topo_nodes():
        if node.op_type != "Reshape" or node.domain not in DEFAULT_DOMAINS or node.attr("allowzero", 0):
            continue
        ins, out = ir.inputs_of(node), ir.outputs_of(node)[0]
        if out is None or shapes.get(out.name) is not None or len(ins) < 2 or ins[1] is None:
            continue
        folded = folded or fold_shapes(ir, shapes, opset)
        sv = folded.values.get(ins[1].name)
        if sv is None or sv.value is None or sv.value.ndim != 1 or isinstance(sv.taint, frozenset):
            continue
        dims = []
        for v, taint in zip(sv.value.tolist(), sv.taint):
            marks = [b for a, b in taint if a is None]
            if not marks and v > 0:
                dims.append(int(v))
            elif len(marks) == 1 and marks[0].startswith("="):
                dims.append(marks[0][1:])
            else:
                break
        else:
            shapes[out.name] = tuple(dims)
    return shapes


def runtime_shapes(ir: Graph, shapes: dict[str, tuple], ctx: PassContext | None = None) -> dict[str, tuple]:
    """Shapes inference left unknown or symbolic (BERT's attention reshapes after an Expand of a
    computed mask; everything after an ``ai.onnx.ml`` Scaler or a custom op), read from ONNX
    Runtime runs on the run's inputs (``inputs.context_inputs``). With every input's shape
    known (declared static, given, or fixed by ``input_shapes``) one run tells every shape; with
    a symbolic input a second run at other sizes keeps the dims both runs agree on and leaves
    the others symbolic (None). Advisory: any failure keeps ``shapes``."""
    from .inputs import InputsError, all_fixed, context_inputs, make_inputs, refuse_guesses

    if not [v for v in ir.inputs if ir.initializer(v.name) is None]:
        return shapes
    inside = body_values(ir)  # a lowered If branch's values: no run returns them
    inits = ir.initializers
    missing = sorted(v.name for v in ir.values()
                     if not _static(shapes.get(v.name)) and v.name not in inits and v.name not in inside
                     and ir.producer(v.name) is not None)
    if not missing:
        return shapes
    # the weights by reference: large initializers are graph inputs of the raised model (no copy
    # of them in it), fed as the IR's own arrays (the whole model when ORT needs one as a constant)
    model = Runnable(ir, tuple(missing), kept=True)  # a second size runs in the same session
    ctx = ctx or PassContext()
    try:   # no feeds (an input whose zeros no run may take: inputs.refuse_guesses) is no run
        refuse_guesses(model.model, ctx.sample_inputs)
        proof = context_inputs(ctx, model.inputs)
        runs = [proof.feeds]
        if not all_fixed(model.inputs, ctx.sample_inputs, ctx.input_shapes):
            other = make_inputs(model.inputs, ctx.seed + 1, ctx.sample_inputs, ctx.input_shapes,
                                size=2 * proof.size, batch=3)
            runs.append(other.feeds)
    except InputsError:
        return shapes
    outputs = [o.name for o in model.model.graph.output]
    seen: list[dict[str, tuple]] = []
    try:
        for feeds in runs:
            values = model.run(feeds, quiet=True)
            seen.append({name: tuple(int(d) for d in arr.shape)
                         for name, arr in zip(outputs, values)
                         if name in missing and isinstance(arr, np.ndarray)})
    except Exception:
        return shapes
    finally:
        model.release()
    out = dict(shapes)
    for name, shape in seen[0].items():
        others = [s.get(name) for s in seen[1:]]
        if any(o is None or len(o) != len(shape) for o in others):
            continue
        merged = tuple(d if all(o[k] == d for o in others) else None for k, d in enumerate(shape))
        old = shapes.get(name)
        if old is not None and len(old) == len(merged):  # keep what inference knew (a dim name)
            merged = tuple(o if n is None else n for o, n in zip(old, merged))
        out[name] = merged
    return out


def _folded_static_shapes(ir: Graph, opset: int, rounds: int) -> dict[str, tuple]:
    shapes = value_shapes(ir)
    last = None
    for _ in range(rounds):
        folded = fold_shapes(ir, shapes, opset)
        if folded is last:  # the fold did not change (it read no shape the last round improved):
            return shapes   # inference would run on the same model and tell what it told
        last = folded
        drop = {n for n in folded.nodes
                if all(v is None or v.name in folded.static for v in ir.outputs_of(n))}
        if not drop:
            return shapes
        model = light_model(ir)
        kept = [n for n in model.graph.node if n.name not in drop]
        used = {i for n in kept for i in n.input} | {o.name for o in model.graph.output}
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.initializer.extend(onnx.numpy_helper.from_array(np.asarray(folded.static[v]), v)
                                       for v in sorted(used) if v in folded.static)
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # inference is advisory
            return shapes
        better = 0
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            new = shape_of(vi.type) if vi.HasField("type") else None
            if _more_known(new, shapes.get(vi.name)):  # a dynamic batch keeps others symbolic
                shapes[vi.name] = new
                better += 1
        if not better:
            return shapes
    return shapes


def _tag(view: NodeView) -> NodeTag:
    node = view.node
    name, op = node.name, node.op_type
    if node.domain not in DEFAULT_DOMAINS or op not in CHANNEL_RULES:
        dom = f"{node.domain}." if node.domain not in DEFAULT_DOMAINS else ""
        return NodeTag(name, op, "barrier", reason=f"op {dom}{op} is not in the node attribute library")
    if op in ROOT_RULES:
        spec = ROOT_RULES[op](view)
        if spec is not None:
            return NodeTag(name, op, "pruned", root=True, leaf=True)
        if op in CONDITIONAL_ROOTS:  # not the form that is a root (a Gather that moves data)
            return NodeTag(name, op, CHANNEL_RULES[op].role)
        w = view.const(1)
        if op in ("Conv", "ConvTranspose") and w is not None and node.attr("group", 1) > 1:
            # grouped (depthwise included): whole groups are pruned through it, see op_rules
            group, w_in, _ = conv_group_widths(node, w)
            shape = view.shape(0)
            channels = shape[1] if shape is not None and len(shape) > 1 else None
            if isinstance(channels, int) and channels == group * w_in and w.ndim >= 3:
                return NodeTag(name, op, "next-process")
            return NodeTag(name, op, "barrier", reason=f"grouped {op} (group={group}) whose input "
                           f"channel count is unknown or disagrees with its weight")
        if w is None and op == "MatMul" and view.const(0) is None:
            # two activations (attention's Q·Kᵀ, A·V): channels on a batch axis (heads) pass
            return NodeTag(name, op, "next-process")
        if w is None:
            return NodeTag(name, op, "barrier", reason=f"{op} weight is not a constant")
        return NodeTag(name, op, "stop-process", leaf=True)
    return NodeTag(name, op, CHANNEL_RULES[op].role)
