"""Weights computed in the graph from initializers (NFNet's weight standardization, weight norm,
a scale Mul): a Conv / ConvTranspose / Gemm / MatMul whose weight operand is the output of a
chain of nodes that reads only initializers and constants.

The chain is evaluated once (``onnx.reference``, numpy) and the rules see the weight as the
constant it is (``NodeView.const``), so the node is a root and a leaf like any other; its
scores read the computed weight. ``trees`` records the operand as frozen: when ``slice`` cuts the
node, the operand becomes an initializer holding the computed weight, which is then cut (the
chain, now unread, is removed). This is exact where slicing the chain itself would not be: a
per-filter standardization reduces over the input channels, so cutting its initializer's input
columns would change the statistics of every kept filter. The mask-equivalence check zeroes
the computed weight the same way (``validate.masked_original``).

Example: timm's ScaledStdConv2d: ``Conv(x, Reshape(BatchNormalization(Reshape(W, [1, O, -1]),
gain·scale, 0, mean, var, training_mode=1), Shape(W)))``: the Conv is a root over O filters.
"""

from __future__ import annotations

import weakref

import numpy as np
import onnx

from ir import Graph

from .folding import constant_value

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# ops whose value is not a function of their inputs: a chain through them is never folded
NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                    "Multinomial", "Bernoulli", "Dropout")
MAX_CHAIN_NODES = 64
# a weight computed from integers (Cast(int8) × scale, DequantizeLinear) is quantized: pruning it
# would dequantize it, so such chains stay as they are (their nodes are barriers)
QUANTIZED = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear")
INTEGER_DATA_LIMIT = 64   # integer initializers up to this size are shape / axes operands

_CACHE: "weakref.WeakKeyDictionary[Graph, tuple[int, dict]]" = weakref.WeakKeyDictionary()


def _chain(graph: Graph, name: str) -> list | None:
    """The nodes computing ``name`` from initializers and constants only, or None."""
    nodes, seen, stack = [], set(), [name]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        prod = graph.producer(v)
        if graph.initializer(v) is not None or (prod is not None and prod.op_type == "Constant"):
            arr = graph.const_array(v)
            if arr is None or (arr.dtype.kind not in "fc" and arr.size > INTEGER_DATA_LIMIT):
                return None
            if graph.initializer(v) is not None:
                continue
        if prod is None or prod.domain not in ("", "ai.onnx") or prod.op_type in NONDETERMINISTIC + QUANTIZED \
                or prod.op_type in ("If", "Loop", "Scan") or graph.implicit_inputs_of(prod):
            return None
        if prod not in nodes:
            nodes.append(prod)
            if len(nodes) > MAX_CHAIN_NODES:
                return None
        stack += [i.name for i in graph.inputs_of(prod) if i is not None]
    return nodes


def computed_weights(graph: Graph) -> dict[str, np.ndarray]:
    """Value name -> computed array, for the weight operands of Conv/ConvTranspose/Gemm/MatMul
    that are computed from initializers only (cached per graph version)."""
    hit = _CACHE.get(graph)
    if hit is not None and hit[0] == graph.version:
        return hit[1]
    targets: dict[str, list] = {}
    for node in graph.nodes():
        if node.op_type not in WEIGHT_OPS or node.domain not in ("", "ai.onnx"):
            continue
        ins = graph.inputs_of(node)
        w = ins[1] if len(ins) > 1 else None
        if w is None or w.name in targets or graph.const_array(w) is not None:
            continue
        chain = _chain(graph, w.name)
        if chain:
            targets[w.name] = chain
    values = _evaluate(graph, targets) if targets else {}
    _CACHE[graph] = (graph.version, values)
    return values


def _evaluate(graph: Graph, targets: dict[str, list]) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    from ir import raise_model

    needed = {n.name for chain in targets.values() for n in chain}
    model = raise_model(graph)
    nodes = [n for n in model.graph.node if n.name in needed]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    sub = onnx.helper.make_graph(nodes, "computed_weights", [], [onnx.ValueInfoProto(name=t) for t in targets],
                                 inits)
    sub_model = onnx.helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        out = ReferenceEvaluator(sub_model).run(None, {})
    except Exception:  # an op the reference evaluator does not know: those weights stay computed
        return {}
    values = {}
    for name, arr in zip(targets, out):
        arr = np.asarray(arr)
        arr.flags.writeable = False
        values[name] = arr
    return values


def weight_array(graph: Graph, value) -> np.ndarray | None:
    """A weight operand's value: a constant (folded through Slice/Concat/.., ``constant_value``),
    or a weight computed from initializers."""
    arr = constant_value(graph, value)
    if arr is None and value is not None:
        arr = computed_weights(graph).get(value if isinstance(value, str) else value.name)
    return arr
