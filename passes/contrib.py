"""ONNX Runtime's fused contrib ops written back as the standard ops they fuse.

A model saved after ONNX Runtime's offline optimization (``SessionOptions.optimized_model_filepath``
at the "extended" level) has its convolutions and Gemms fused with the activation after them:
``com.microsoft.FusedConv`` (a Conv, an optional ``Z`` added to it, then the activation) and
``com.microsoft.FusedGemm``. Ops of that domain are not in the op table, so every group of such a
model stopped there (a ResNet-50 saved that way: 0 of 5 groups pruned). ``defused`` writes each
as its standard ops (``Conv``, ``Add``, ``Relu``...), by ONNX Runtime's contrib-op definition.

The rewrite is not trusted: the model as given and the defused one both run in ONNX Runtime on
the same default inputs and must agree (as ``support.upgraded`` checks a version conversion);
where that cannot be shown the model is kept as given, its fused nodes barriers as before. The
output is then plain ONNX (ONNX Runtime fuses it again when it loads it), and its metadata says
what was defused (``onnxpruner.defused``: "FusedConv:33"), which the command prints as a note.

Example: ``FusedConv(x, W, B, activation="LeakyRelu", activation_params=[0.1])`` ->
``LeakyRelu(Conv(x, W, B), alpha=0.1)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ir import filled

CONTRIB = ("com.microsoft",)
FUSED = {"FusedConv": "Conv", "FusedGemm": "Gemm"}
DEFUSED_KEY = "onnxpruner.defused"
# ONNX Runtime's fused activations (contrib_ops/cpu/fused_activation.cc): the op and its attributes
# from ``activation_params`` (FusedConv) or ``activation_alpha`` / ``activation_beta`` (FusedGemm)
ACTIVATIONS = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
               "Clip": ("min", "max")}
FUSION_ATTRIBUTES = ("activation", "activation_params", "activation_alpha", "activation_beta", "activation_gamma")


def defused(model: onnx.ModelProto, weights: dict | None = None) -> onnx.ModelProto:
    """``model`` with every top-level FusedConv / FusedGemm written as standard ops, checked
    against the model as given in ONNX Runtime; ``model`` itself when it has none, or when one
    uses an activation this does not know, or when the check fails or cannot run. ``weights``:
    the arrays of a ``hollow`` model, put back for the check."""
    nodes = [n for n in model.graph.node if n.domain in CONTRIB and n.op_type in FUSED]
    if not nodes or any(_activation(n) is None for n in nodes):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = max((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), default=0)
    taken = {o for n in out.graph.node for o in n.output} | {i.name for i in out.graph.input} \
        | {t.name for t in out.graph.initializer}
    written, counts = [], {}
    for node in out.graph.node:
        if node.domain not in CONTRIB or node.op_type not in FUSED:
            written.append(node)
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        written += _standard(node, opset, taken, out.graph.initializer)
    del out.graph.node[:]
    out.graph.node.extend(written)
    if not any(n.domain in CONTRIB for n in _all_nodes(out.graph)):
        kept = [o for o in out.opset_import if o.domain not in CONTRIB]
        del out.opset_import[:]
        out.opset_import.extend(kept)
    if not _agrees(model, out, weights):
        return model
    out.metadata_props.add(key=DEFUSED_KEY, value=",".join(f"{op}:{n}" for op, n in sorted(counts.items())))
    return out


def _activation(node: onnx.NodeProto) -> tuple[str, dict] | None:
    """(op, attributes) of the node's fused activation; ("", {}) for none; None if unknown."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    name = attrs.get("activation", b"")
    name = name.decode() if isinstance(name, bytes) else name
    if not name:
        return "", {}
    if name not in ACTIVATIONS:
        return None
    if node.op_type == "FusedConv":
        params = list(attrs.get("activation_params", []))
    else:
        params = [attrs[k] for k in ("activation_alpha", "activation_beta") if k in attrs]
    names = ACTIVATIONS[name]
    if len(params) < len(names):
        return None
    return name, dict(zip(names, (float(p) for p in params)))


def _standard(node: onnx.NodeProto, opset: int, taken: set, initializers) -> list[onnx.NodeProto]:
    """The standard nodes computing what ``node`` (a FusedConv / FusedGemm) computes."""
    act, params = _activation(node)
    base = node.name or node.output[0]
    ins = list(node.input)
    z = ins[3] if node.op_type == "FusedConv" and len(ins) > 3 and ins[3] else None
    kept = [a for a in node.attribute if a.name not in FUSION_ATTRIBUTES]
    steps = [(FUSED[node.op_type], ins[:3] if node.op_type == "FusedConv" else ins, kept)]
    if z is not None:
        steps.append(("Add", [None, z], []))
    if act:
        extra = []
        if act == "Clip" and opset >= 11:  # min and max are inputs from opset 11 on
            for key in ("min", "max"):
                name = _fresh(f"{base}::clip_{key}", taken)
                initializers.append(onnx.numpy_helper.from_array(np.array(params.pop(key), np.float32), name))
                extra.append(name)
        steps.append((act, [None] + extra, [helper.make_attribute(k, v) for k, v in params.items()]))
    out, prev = [], None
    for i, (op, inputs, attrs) in enumerate(steps):
        last = i == len(steps) - 1
        result = node.output[0] if last else _fresh(f"{base}::{op.lower()}", taken)
        made = helper.make_node(op, [prev if x is None else x for x in inputs], [result],
                                name=node.name if i == 0 else _fresh(f"{base}/{op}", taken))
        made.attribute.extend(attrs)
        out.append(made)
        prev = result
    return out


def _fresh(name: str, taken: set) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def _all_nodes(graph: onnx.GraphProto):
    for n in graph.node:
        yield n
        for a in n.attribute:
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                yield from _all_nodes(g)


def _agrees(given: onnx.ModelProto, defused: onnx.ModelProto, weights: dict | None) -> bool:
    """Whether both run in ONNX Runtime on the same default inputs and give the same outputs."""
    from .inputs import make_inputs
    from .runtime import run_model

    try:
        feeds = make_inputs(given).feeds
        want = run_model(filled(given, weights), feeds, quiet=True)
        got = run_model(filled(defused, weights), feeds, quiet=True)
    except Exception:
        return False
    for a, b in zip(want, got):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        finite = np.abs(a[np.isfinite(a)]) if a.dtype.kind in "fc" else np.zeros(0)
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        if not (np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True) if a.dtype.kind in "fc"
                else np.array_equal(a, b)):
            return False
    return True
