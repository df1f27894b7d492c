"""ONNX Runtime's fused contrib ops written back as the standard ops they fuse.

A model saved after ONNX Runtime's offline optimization (``SessionOptions.optimized_model_filepath``
at the "extended" level) has its convolutions and Gemms fused with the activation after them:
``com.microsoft.FusedConv`` (a Conv, an optional ``Z`` added to it, then the activation) and
``FusedGemm``; its transformer optimizer (``onnxruntime.transformers``, run by optimum) fuses an
encoder's MLP and residual into ``BiasGelu``, ``FastGelu``, ``Gelu``, ``QuickGelu`` and
``SkipLayerNormalization``. Ops of that domain are not in the op table, so every group of such a
model stopped there (a ResNet-50 saved that way: 0 of 5 groups pruned). ``defused`` writes each
as its standard ops (``Conv``, ``Add``, ``Relu``, ``Erf``, ``LayerNormalization``...), by ONNX
Runtime's contrib-op definitions; a node it cannot write stays as it is (a barrier).

The rewrite is not trusted: the model as given and the defused one both run in ONNX Runtime on
the same default inputs and must agree (as ``support.upgraded`` checks a version conversion);
where that cannot be shown the model is kept as given, its fused nodes barriers as before. The
output is then plain ONNX where every fused node was written (ONNX Runtime fuses it again when
it loads it), and its metadata says what was (``onnxpruner.defused``: "FusedConv:33"), which the
command prints as a note.

Example: ``FusedConv(x, W, B, activation="LeakyRelu", activation_params=[0.1])`` ->
``LeakyRelu(Conv(x, W, B), alpha=0.1)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ir import filled, skeleton
from ir.bodies import all_nodes

CONTRIB = ("com.microsoft",)
FUSED = {"FusedConv": "Conv", "FusedGemm": "Gemm"}
DEFUSED_KEY = "onnxpruner.defused"
# ONNX Runtime's fused activations (contrib_ops/cpu/fused_activation.cc): the op and its attributes
# from ``activation_params`` (FusedConv) or ``activation_alpha`` / ``activation_beta`` (FusedGemm)
ACTIVATIONS = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
               "Clip": ("min", "max")}
FUSION_ATTRIBUTES = ("activation", "activation_params", "activation_alpha", "activation_beta", "activation_gamma")


def defused(model: onnx.ModelProto, weights: dict | None = None) -> onnx.ModelProto:
    """``model`` with every top-level fused contrib op this knows written as standard ops,
    checked against the model as given in ONNX Runtime; ``model`` itself when it has none, or
    when the check fails or cannot run. A node this cannot write (an activation it does not know,
    an opset without the op it needs) stays as it is. ``weights``: the arrays of a ``hollow``
    model, put back for the check."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    nodes = [n for n in model.graph.node if _rewritable(n, opset)]
    if not nodes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    types, used = _element_types(out), _used(out.graph)
    taken = {o for n in out.graph.node for o in n.output} | {i.name for i in out.graph.input} \
        | {t.name for t in out.graph.initializer}
    written, counts = [], {}
    for node in out.graph.node:
        if not _rewritable(node, opset):
            written.append(node)
            continue
        made = _standard(node, opset, taken, out.graph.initializer, types, used)
        if made is None:  # a form this does not write (a FusedMatMul of unknown rank)
            written.append(node)
            continue
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        written += made
    if not counts:
        return model
    del out.graph.node[:]
    out.graph.node.extend(written)
    if not any(n.domain in CONTRIB for n in all_nodes(out.graph)):
        kept = [o for o in out.opset_import if o.domain not in CONTRIB]
        del out.opset_import[:]
        out.opset_import.extend(kept)
    if not _agrees(model, out, weights):
        return model
    out.metadata_props.add(key=DEFUSED_KEY, value=",".join(f"{op}:{n}" for op, n in sorted(counts.items())))
    return out


def _rewritable(node: onnx.NodeProto, opset: int) -> bool:
    ours = node.domain in CONTRIB or node.domain in ("", "ai.onnx") and node.op_type in ORT_DEFAULT_DOMAIN
    return ours and node.op_type in REWRITES and opset >= MIN_OPSET.get(node.op_type, 7) \
        and (node.op_type not in FUSED or _activation(node) is not None)


def _element_types(model: onnx.ModelProto) -> dict[str, tuple[int, int | None]]:
    """(element type, rank or None) by value name, as far as ONNX shape inference tells (contrib
    ops it does not know end what it tells)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model)).graph
    except Exception:
        inferred = model.graph
    out = {t.name: (t.data_type, len(t.dims)) for t in model.graph.initializer}
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is not None and tt.elem_type:
            out[vi.name] = (tt.elem_type, len(tt.shape.dim) if tt.HasField("shape") else None)
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


def _standard(node: onnx.NodeProto, opset: int, taken: set, initializers, types: dict,
              used: set) -> list[onnx.NodeProto] | None:
    """The standard nodes computing what ``node`` (a fused contrib op) computes, its outputs keeping
    their names; None for a form this does not write. ``types``: (element type, rank) by value
    name, as far as inference tells (constants are made in the input's element type); ``used``:
    the names something reads (an optional output nothing reads need not be written)."""
    elem, _ = types.get(node.input[0], (onnx.TensorProto.FLOAT, None))
    emit = _Emit(node, taken, initializers, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)), types, used)
    return REWRITES[node.op_type](emit, node, opset)


class _Emit:
    """Builds a chain of standard nodes for one contrib node: fresh names from its own, constants
    as initializers of the input's element type, the last node writing the node's output."""

    def __init__(self, node: onnx.NodeProto, taken: set, initializers, dtype: np.dtype, types: dict, used: set):
        self.node, self.taken, self.initializers, self.dtype = node, taken, initializers, dtype
        self.types, self.used = types, used
        self.base = node.name or node.output[0]
        self.nodes: list[onnx.NodeProto] = []

    def const(self, value, key: str, dtype=None) -> str:
        """An initializer holding ``value``, in the input's element type unless ``dtype``."""
        name = _fresh(f"{self.base}::{key}", self.taken)
        self.initializers.append(onnx.numpy_helper.from_array(np.array(value, dtype or self.dtype), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, outputs: list[str] | None = None,
           **attrs) -> str:
        """One node; ``out``: its output's name (a fresh one when None); ``outputs``: all of them."""
        outputs = outputs or [out or _fresh(f"{self.base}::{op.lower()}", self.taken)]
        first = not self.nodes
        made = helper.make_node(op, inputs, outputs, name=self.node.name if first and self.node.name
                                else _fresh(f"{self.base}/{op}", self.taken), **attrs)
        self.nodes.append(made)
        return outputs[0]


def _conv_or_gemm(emit: _Emit, node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto]:
    act, params = _activation(node)
    ins = list(node.input)
    z = ins[3] if node.op_type == "FusedConv" and len(ins) > 3 and ins[3] else None
    kept = [a for a in node.attribute if a.name not in FUSION_ATTRIBUTES]
    steps = 1 + (z is not None) + bool(act)
    made = emit.op(FUSED[node.op_type], ins[:3] if node.op_type == "FusedConv" else ins,
                   node.output[0] if steps == 1 else None)
    emit.nodes[-1].attribute.extend(kept)
    if z is not None:
        made = emit.op("Add", [made, z], node.output[0] if steps == 2 else None)
    if act:
        extra = []
        if act == "Clip" and opset >= 11:  # min and max are inputs from opset 11 on
            extra = [emit.const(params.pop(key), f"clip_{key}") for key in ("min", "max")]
        emit.op(act, [made] + extra, node.output[0], **params)
    return emit.nodes


def _gelu(emit: _Emit, x: str, out: str, tanh: bool) -> None:
    """Gelu of ``x`` into ``out``: erf-based (Gelu, BiasGelu) or the tanh form (FastGelu),
    ``0.5·x·(1 + erf(x/√2))`` / ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``."""
    if tanh:
        cube = emit.op("Mul", [emit.op("Mul", [x, x]), x])
        inner = emit.op("Add", [x, emit.op("Mul", [cube, emit.const(0.044715, "c")])])
        core = emit.op("Tanh", [emit.op("Mul", [inner, emit.const(0.7978845608028654, "sqrt_2_pi")])])
    else:
        core = emit.op("Erf", [emit.op("Mul", [x, emit.const(0.7071067811865476, "rsqrt2")])])
    emit.op("Mul", [emit.op("Mul", [x, emit.op("Add", [core, emit.const(1.0, "one")])]),
                    emit.const(0.5, "half")], out)


def _biased(emit: _Emit, node: onnx.NodeProto) -> str:
    """The node's input plus its optional bias (input 1)."""
    ins = list(node.input)
    return emit.op("Add", ins[:2]) if len(ins) > 1 and ins[1] else ins[0]


def _gelus(emit: _Emit, node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto]:
    _gelu(emit, _biased(emit, node), node.output[0], tanh=node.op_type == "FastGelu")
    return emit.nodes


def _quick_gelu(emit: _Emit, node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto]:
    alpha = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "alpha"), 1.702)
    x = node.input[0]
    emit.op("Mul", [x, emit.op("Sigmoid", [emit.op("Mul", [x, emit.const(alpha, "alpha")])])], node.output[0])
    return emit.nodes


def _skip_layernorm(emit: _Emit, node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto]:
    """``LayerNormalization(input + skip + bias)`` over the last axis; its optional outputs (mean,
    inverse std, the sum) kept where named."""
    ins = list(node.input) + [""] * (5 - len(node.input))
    outs = list(node.output) + [""] * (4 - len(node.output))
    eps = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
    total = emit.op("Add", ins[:2], outs[3] if not ins[4] and outs[3] else None)
    if ins[4]:
        total = emit.op("Add", [total, ins[4]], outs[3] or None)
    stats = [o for o in outs[1:3]]
    while stats and not stats[-1]:
        stats.pop()
    emit.op("LayerNormalization", [total, ins[2]] + ([ins[3]] if ins[3] else []), outputs=[outs[0]] + stats,
            axis=-1, epsilon=float(eps))
    return emit.nodes


def _fused_matmul(emit: _Emit, node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto] | None:
    """``alpha · A' @ B'``, ``'`` swapping an operand's last two axes where ``transA`` / ``transB``
    say (a Transpose needs the operand's rank); batch transposes (``transBatchA/B``) are not written."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transBatchA", 0) or attrs.get("transBatchB", 0):
        return None
    operands = []
    for name, flag in zip(node.input[:2], ("transA", "transB")):
        if attrs.get(flag, 0):
            rank = emit.types.get(name, (None, None))[1]
            if rank is None or rank < 2:
                return None
            operands.append((name, list(range(rank - 2)) + [rank - 1, rank - 2]))
        else:
            operands.append((name, None))
    ins = [emit.op("Transpose", [name], perm=perm) if perm else name for name, perm in operands]
    alpha = float(attrs.get("alpha", 1.0))
    made = emit.op("MatMul", ins, node.output[0] if alpha == 1.0 else None)
    if alpha != 1.0:
        emit.op("Mul", [made, emit.const(alpha, "alpha")], node.output[0])
    return emit.nodes


def _rms(emit: _Emit, x: str, scale: str, eps: float, out: str, opset: int) -> None:
    """``x / sqrt(mean(x²) + eps) · scale`` over the last axis, into ``out``."""
    square = emit.op("Mul", [x, x])
    if opset >= 18:  # ReduceMean's axes an input from opset 18 on
        mean = emit.op("ReduceMean", [square, emit.const([-1], "axes", np.int64)], keepdims=1)
    else:
        mean = emit.op("ReduceMean", [square], axes=[-1], keepdims=1)
    root = emit.op("Sqrt", [emit.op("Add", [mean, emit.const(eps, "epsilon")])])
    emit.op("Mul", [emit.op("Div", [x, root]), scale], out)


def _simplified_layernorm(emit: _Emit, node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto] | None:
    """RMS normalization over the last axis (ORT's SimplifiedLayerNormalization, T5's and Llama's
    norm, which ORT writes in the default domain; SkipSimplifiedLayerNormalization adds the
    residual and a bias first). Its statistics outputs are not written (the node stays if named)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    outs = [o if o in emit.used or i == 0 else "" for i, o in enumerate(node.output)] + [""] * 4
    skip = node.op_type.startswith("Skip")
    if attrs.get("axis", -1) != -1 or any(outs[1:3] if skip else outs[1:]):
        return None
    eps = float(attrs.get("epsilon", 1e-5))
    ins = list(node.input) + [""] * 4
    x, scale = ins[0], ins[2] if skip else ins[1]
    if skip:
        x = emit.op("Add", ins[:2], outs[3] if outs[3] and not ins[3] else None)
        if ins[3]:
            x = emit.op("Add", [x, ins[3]], outs[3] or None)
    _rms(emit, x, scale, eps, node.output[0], opset)
    return emit.nodes


# the rewrites by op; the opset each needs at least (LayerNormalization: 17), from _rewritable
REWRITES = {"FusedConv": _conv_or_gemm, "FusedGemm": _conv_or_gemm, "BiasGelu": _gelus, "FastGelu": _gelus,
            "Gelu": _gelus, "QuickGelu": _quick_gelu, "SkipLayerNormalization": _skip_layernorm,
            "FusedMatMul": _fused_matmul, "SimplifiedLayerNormalization": _simplified_layernorm,
            "SkipSimplifiedLayerNormalization": _simplified_layernorm}
# ORT's own ops it registers in the default domain (no ONNX op of that name): written like the others
ORT_DEFAULT_DOMAIN = ("SimplifiedLayerNormalization",)
MIN_OPSET = {"SkipLayerNormalization": 17}


def _fresh(name: str, taken: set) -> str:
    out, i = name, 1
    while out in taken:
        out, i = f"{name}_{i}", i + 1
    taken.add(out)
    return out


def _used(graph: onnx.GraphProto) -> set[str]:
    """Names read by a node (of any subgraph too) or given out as a graph output."""
    return {i for n in all_nodes(graph) for i in n.input} | {o.name for o in graph.output}




def _agrees(given: onnx.ModelProto, defused: onnx.ModelProto, weights: dict | None) -> bool:
    """Whether both run in ONNX Runtime on the same default inputs and give the same outputs."""
    from .inputs import make_inputs
    from .runtime import agree, run_model

    def run(model: onnx.ModelProto, feeds: dict) -> list:
        try:  # a hollow model's weights fed as inputs (``skeleton``), where numpy holds them: no copy
            return run_model(skeleton(model), {**feeds, **weights}, quiet=True) if weights else \
                run_model(model, feeds, quiet=True)
        except Exception:  # a kernel that needs one of them as a constant: the whole model
            return run_model(filled(model, weights), feeds, quiet=True)

    try:
        feeds = make_inputs(given).feeds
        want, got = run(given, feeds), run(defused, feeds)
    except Exception:
        return False
    return all(np.asarray(a).dtype == np.asarray(b).dtype and agree(a, b) for a, b in zip(want, got))
