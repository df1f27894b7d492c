"""What the runtime behind the proof runs: checked before any pass, one line naming what is not.

onnxpruner proves a pruning by running the model in ONNX Runtime (training build 1.19.2). A model
outside what it runs cannot be proven, so it is refused up front: an IR version above 10, a
default-domain opset outside 7..21, or a node of a domain ONNX Runtime has no kernels for (a
custom op of another runtime), unless the model defines that op as a local function.

Example: a jax2onnx export at opset 23 ->
``model.onnx: default-domain opset 23 is outside what ONNX Runtime 1.19.2 runs (opset 7..21);
re-export it at an opset in 7..21``.
"""

from __future__ import annotations

import re

import onnx

from ir import ModelLoadError, skeleton

from .runtime import unrunnable

RUNTIME = "ONNX Runtime 1.19.2"
OPSETS = (7, 21)
MAX_IR_VERSION = 10
# domains with kernels in ONNX Runtime's CPU build
RUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                             "com.microsoft.experimental", "ai.onnx.training",
                             "ai.onnx.preview.training", "com.ms.internal.nhwc"})


class UnsupportedModelError(ModelLoadError):
    """A model outside what the runtime behind the proof runs; the message is one line."""


def check_supported(model: onnx.ModelProto, where: str, runs: bool = True) -> None:
    """Refuse a model the runtime cannot load; ``runs``: also one it cannot run (an op of a
    domain without kernels), for commands that run the model (an analysis alone need not)."""
    if model.ir_version > MAX_IR_VERSION:
        raise UnsupportedModelError(
            f"{where}: IR version {model.ir_version} is above what {RUNTIME} loads (IR version "
            f"<= {MAX_IR_VERSION}); save it with ir_version {MAX_IR_VERSION} or lower")
    opsets = {o.domain or "": o.version for o in model.opset_import}
    default = opsets.get("", opsets.get("ai.onnx"))
    lo, hi = OPSETS
    if default is not None and not lo <= default <= hi:
        raise UnsupportedModelError(
            f"{where}: default-domain opset {default} is outside what {RUNTIME} runs (opset "
            f"{lo}..{hi}); re-export it at an opset in {lo}..{hi}")
    if not runs:
        return
    local = {(f.domain, f.name) for f in model.functions}
    for node in _all_nodes(model.graph):
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            raise UnsupportedModelError(
                f"{where}: node {node.name or node.op_type!r} is op {node.domain}.{node.op_type}, "
                f"which {RUNTIME} has no kernel for (it runs the default domain at opset {lo}..{hi}, "
                f"ai.onnx.ml and com.microsoft); a pruning of it could not be proven")


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
