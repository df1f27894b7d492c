"""What the runtime behind the proof runs: checked before any pass, one line naming what is not.

onnxpruner proves a pruning by running the model in ONNX Runtime (training build 1.19.2). A model
outside what it runs cannot be proven, so it is refused up front: an IR version above 10, a
default-domain opset outside 7..21, or a node of a domain ONNX Runtime has no kernels for (a
custom op of another runtime), unless the model defines that op as a local function, or a graph
input or output the proof cannot exchange with it (bfloat16, float8, int4: numpy has no dtype for
them; an input that is a sequence, map or optional: the proof feeds tensors).

Example: a jax2onnx export at opset 23 ->
``model.onnx: default-domain opset 23 is outside what ONNX Runtime 1.19.2 runs (opset 7..21);
re-export it at an opset in 7..21``.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx.version_converter

from ir import ModelLoadError, filled, skeleton

from .runtime import unrunnable

RUNTIME = "ONNX Runtime 1.19.2"
OPSETS = (7, 21)
MAX_IR_VERSION = 10
# domains with kernels in ONNX Runtime's CPU build
RUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                             "com.microsoft.experimental", "ai.onnx.training",
                             "ai.onnx.preview.training", "com.ms.internal.nhwc"})


# element types without a numpy dtype: ONNX Runtime's Python API can neither take nor return them
# ("No corresponding Numpy type for Tensor Type"), so a model reading or writing one cannot run
NO_NUMPY_TYPES = frozenset(getattr(onnx.TensorProto, t) for t in (
    "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, t))


NOT_TENSORS = {"sequence_type": "a sequence", "optional_type": "an optional", "map_type": "a map",
               "sparse_tensor_type": "a sparse tensor", "opaque_type": "an opaque value"}


class UnsupportedModelError(ModelLoadError):
    """A model outside what the runtime behind the proof runs; the message is one line."""


def check_supported(model: onnx.ModelProto, where: str, runs: bool = True) -> None:
    """Refuse a model the runtime cannot load; ``runs``: also one it cannot run (an op of a
    domain without kernels), for commands that run the model (an analysis alone need not)."""
    if model.ir_version > MAX_IR_VERSION:
        raise UnsupportedModelError(
            f"{where}: IR version {model.ir_version} is above what {RUNTIME} loads (IR version "
            f"<= {MAX_IR_VERSION}); save it with ir_version {MAX_IR_VERSION} or lower")
    default = _default_opset(model)
    lo, hi = OPSETS
    if default is not None and not lo <= default <= hi:
        raise UnsupportedModelError(
            f"{where}: default-domain opset {default} is outside what {RUNTIME} runs (opset "
            f"{lo}..{hi}); re-export it at an opset in {lo}..{hi}")
    if not runs:
        return
    check_interface_types(model, where)
    local = {(f.domain, f.name) for f in model.functions}
    for node in _all_nodes(model.graph):
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            raise UnsupportedModelError(
                f"{where}: node {node.name or node.op_type!r} is op {node.domain}.{node.op_type}, "
                f"which {RUNTIME} has no kernel for (it runs the default domain at opset {lo}..{hi}, "
                f"ai.onnx.ml and com.microsoft); a pruning of it could not be proven")


CONVERTED_KEY = "onnxpruner.converted_from_opset"


def upgraded(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """A model whose default-domain opset is below what the runtime runs (old PyTorch and Caffe2
    exports at opset 6), converted up to opset 7 by ``onnx.version_converter``, else ``model``.

    The converter is not trusted: the model as given runs in ``onnx.reference`` and the converted
    one in ONNX Runtime on default inputs, and their outputs must agree (its adapters change a
    multi-slope PRelu-6 into a PRelu-7 that broadcasts along the wrong axis). What fails either
    way is refused in one line. The converted model records the opset it came from in its
    metadata (``onnxpruner.converted_from_opset``); the proof then covers the converted model."""
    default, (lo, hi) = _default_opset(model), OPSETS
    if default is None or default >= lo or model.ir_version > MAX_IR_VERSION:
        return model
    refuse = (f"{where}: default-domain opset {default} is below what {RUNTIME} runs (opset {lo}..{hi})"
              f" and onnx.version_converter's opset {lo}")
    hint = f"; re-export it at an opset in {lo}..{hi}"
    try:
        converted = onnx.version_converter.convert_version(model, lo)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise UnsupportedModelError(f"{refuse} conversion fails ({_first(exc)}){hint}") from None
    from onnx.reference import ReferenceEvaluator

    from .inputs import make_inputs
    from .runtime import run_model

    feeds = make_inputs(model).feeds
    try:
        want = ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:
        raise UnsupportedModelError(f"{refuse} conversion cannot be checked: onnx.reference does not run "
                                    f"the model as given ({_first(exc)}){hint}") from None
    try:
        got = run_model(converted, feeds, quiet=True)
    except Exception as exc:
        raise UnsupportedModelError(f"{refuse} conversion does not run in {RUNTIME} ({_first(exc)}){hint}") from None
    for out, a, b in zip(model.graph.output, want, got):
        a, b = np.asarray(a), np.asarray(b)
        finite = np.abs(a[np.isfinite(a)]) if a.dtype.kind in "fc" else np.zeros(0)
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        if a.shape != b.shape or not (np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
                                      if a.dtype.kind in "fc" else np.array_equal(a, b)):
            raise UnsupportedModelError(f"{refuse} conversion computes another output {out.name!r} than the "
                                        f"model as given (onnx.reference){hint}")
    converted.metadata_props.add(key=CONVERTED_KEY, value=str(default))
    return converted


def opened(open_model):
    """``ir.open_model`` whose model, when its opset is below what the runtime runs, comes back
    converted up (``upgraded``; a hollow read's weights put back first: such models are small)."""
    def open_upgraded(model_or_path, hollowed: bool = False):
        model, external, where, weights = open_model(model_or_path, hollowed=hollowed)
        below = (_default_opset(model) or OPSETS[0]) < OPSETS[0]
        converted = upgraded(filled(model, weights) if weights and below else model, where)
        return (model, external, where, weights) if converted is model else (converted, external, where, {})
    return open_upgraded


def _default_opset(model: onnx.ModelProto) -> int | None:
    opsets = {o.domain or "": o.version for o in model.opset_import}
    return opsets.get("", opsets.get("ai.onnx"))


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_interface_types(model: onnx.ModelProto, where: str) -> None:
    """Refuse a graph input or output the proof cannot exchange with ONNX Runtime: an element
    type numpy has no dtype for (bfloat16, float8, int4), or an input that is not a tensor (a
    sequence, map or optional: ``--inputs`` holds arrays and defaults are tensors)."""
    inits = {t.name for t in model.graph.initializer}
    for role, values in (("input", [v for v in model.graph.input if v.name not in inits]),
                         ("output", list(model.graph.output))):
        for vi in values:
            kind = vi.type.WhichOneof("value")
            if kind == "tensor_type" and vi.type.tensor_type.elem_type in NO_NUMPY_TYPES:
                name = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
                raise UnsupportedModelError(
                    f"{where}: graph {role} {vi.name!r} is {name}, which numpy has no dtype for: "
                    f"{RUNTIME}'s Python API cannot {'take' if role == 'input' else 'return'} it, so no "
                    f"pruning of this model could be proven")
            if role == "input" and kind is not None and kind != "tensor_type":
                raise UnsupportedModelError(
                    f"{where}: graph input {vi.name!r} is {NOT_TENSORS.get(kind, kind)}, not a tensor: "
                    f"onnxpruner feeds the model tensors only (--inputs is an .npz of arrays), so no pruning "
                    f"of this model could be proven")


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from _all_nodes(sub)


def check_model_input(model: onnx.ModelProto, where: str, runs: bool = True) -> None:
    """Before any pass: ``check_supported``, then onnx.checker on the model's structure, its first
    complaint named as the input's, with the node; then ``runtime.unrunnable`` (an empty weight,
    a tensor over the memory budget). Large weights are declared as typed inputs instead of being
    serialized into the check (their dims and types are checked when lowered)."""
    check_supported(model, where, runs)
    try:
        onnx.checker.check_model(skel := skeleton(model))
    except Exception as exc:
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        bad = re.search(r"Bad node spec for node\. Name: (\S*) OpType: (\S+)", str(exc))
        node = f"; node {bad.group(1)!r} ({bad.group(2)})" if bad else ""
        raise ModelLoadError(f"{where}: invalid ONNX model (the input fails onnx.checker: {first}{node})") from None
    if problem := unrunnable(model, skel):
        raise ModelLoadError(f"{where}: {problem}")
