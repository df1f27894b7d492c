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

from ir import Graph

from .folding import ancestors, constant_value, evaluate

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


def _leaf(graph: Graph, v: str):
    """A chain's leaf: an initializer's array (None for a Constant node, walked as a node of the
    chain); False for integer data larger than a shape or axes operand."""
    prod = graph.producer(v)
    if graph.initializer(v) is None and (prod is None or prod.op_type != "Constant"):
        return None
    arr = graph.const_array(v)
    if arr is None or (arr.dtype.kind not in "fc" and arr.size > INTEGER_DATA_LIMIT):
        return False
    return arr if graph.initializer(v) is not None else None


def _qualifies(node) -> bool:
    return node.op_type not in NONDETERMINISTIC + QUANTIZED + ("If", "Loop", "Scan")


def computed_weights(graph: Graph) -> dict[str, np.ndarray]:
    """Value name -> computed array, for the weight operands of Conv/ConvTranspose/Gemm/MatMul
    that are computed from initializers only (cached per graph version)."""
    hit = _CACHE.get(graph)
    if hit is not None and hit[0] == graph.version:
        return hit[1]
    targets: list[str] = []
    nodes: dict[str, object] = {}
    leaves: dict[str, np.ndarray] = {}
    for node in graph.nodes():
        if node.op_type not in WEIGHT_OPS or node.domain not in ("", "ai.onnx"):
            continue
        ins = graph.inputs_of(node)
        w = ins[1] if len(ins) > 1 else None
        if w is None or w.name in targets or graph.const_array(w) is not None:
            continue
        found = ancestors(graph, [w.name], _qualifies, lambda v: _leaf(graph, v), MAX_CHAIN_NODES)
        if found and found[0]:
            targets.append(w.name)
            nodes.update((n.name, n) for n in found[0])
            leaves.update(found[1])
    values = {}
    if targets:
        order = {n.name: i for i, n in enumerate(graph.topo_nodes())}
        out = evaluate(graph, sorted(nodes.values(), key=lambda n: order[n.name]), leaves, targets) or []
        for name, arr in zip(targets, out):
            arr.flags.writeable = False
            values[name] = arr
    _CACHE[graph] = (graph.version, values)
    return values


def weight_array(graph: Graph, value) -> np.ndarray | None:
    """A weight operand's value: a constant (folded through Slice/Concat/.., ``constant_value``),
    or a weight computed from initializers."""
    arr = constant_value(graph, value)
    if arr is None and value is not None:
        arr = computed_weights(graph).get(value if isinstance(value, str) else value.name)
    return arr
