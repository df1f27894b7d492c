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

from .folding import ancestors, constant_value, evaluate, topo_index

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# elementwise ops whose every operand may be computed from initializers (BEiT's qkv bias is
# Concat(q_bias, zeros, v_bias); a relative-position bias is a Gather of a table): read as the
# constants they are, cut like any constant operand
OPERAND_OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean")
# normalizations whose per-channel parameters (these ports) may be computed from initializers (the
# ONNX test zoo's "light" models write them as ConstantOfShape): read as the constants they are
PARAM_PORTS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}
# ops whose value is not a function of their inputs: a chain through them is never folded
NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                    "Multinomial", "Bernoulli", "Dropout")
MAX_CHAIN_NODES = 1024  # BEiT's relative-position bias: 546 nodes (DINOv2's position embedding: 65)
# a weight computed from integers (Cast(int8) × scale, a chain through DequantizeLinear) is
# quantized: pruning it would dequantize it, so such chains stay as they are (their nodes are
# barriers); a DequantizeLinear of constants alone is a constant (``op_rules.quantized``)
QUANTIZED = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear")
INTEGER_DATA_LIMIT = 64   # integer initializers up to this size are shape / axes operands; larger
# ones of 8 or 16 bits are quantized data, of 32 or 64 bits indices (BEiT's relative-position index)

_CACHE: "weakref.WeakKeyDictionary[Graph, tuple[int, dict]]" = weakref.WeakKeyDictionary()


def _leaf(graph: Graph, v: str):
    """A chain's leaf: an initializer's array (None for a Constant node, walked as a node of the
    chain); False for 8- or 16-bit integer data larger than a shape or axes operand (quantized)."""
    prod = graph.producer(v)
    if graph.initializer(v) is None and (prod is None or prod.op_type != "Constant"):
        return None
    arr = graph.const_array(v)
    if arr is None or (arr.dtype.kind not in "fc" and arr.size > INTEGER_DATA_LIMIT and arr.dtype.itemsize < 4):
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
    from_inputs = _from_inputs(graph)
    for node in graph.nodes():
        if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHT_OPS + OPERAND_OPS + tuple(PARAM_PORTS):
            continue
        ins = graph.inputs_of(node)
        ports = PARAM_PORTS.get(node.op_type)
        operands = [ins[p] for p in ports if p < len(ins)] if ports else ins[1:2] if node.op_type in WEIGHT_OPS else ins
        for w in operands:
            if w is None or w.name in targets or w.name in from_inputs or graph.const_array(w) is not None:
                continue
            found = ancestors(graph, [w.name], _qualifies, lambda v: _leaf(graph, v), MAX_CHAIN_NODES)
            if found and found[0] and (node.op_type in WEIGHT_OPS or not any(
                    n.op_type in WEIGHT_OPS for n in found[0])):  # an operand from a Gemm of constants
                targets.append(w.name)                           # (SwinV2-CR's position MLP) has roots
                nodes.update((n.name, n) for n in found[0])
                leaves.update(found[1])
    values = {}
    if targets:
        order = topo_index(graph)
        out = evaluate(graph, sorted(nodes.values(), key=lambda n: order[n.name]), leaves, targets) or []
        for name, arr in zip(targets, out):
            arr.flags.writeable = False
            values[name] = arr
    _CACHE[graph] = (graph.version, values)
    return values


def _from_inputs(graph: Graph) -> set[str]:
    """Values computed from a graph input (or an outer scope's value): no chain of constants
    gives them, so ``ancestors`` need not walk up from each (up to ``MAX_CHAIN_NODES`` nodes per
    residual Add of ResNet-50). One pass in graph order."""
    produced, out = set(), set()
    for node in graph.topo_nodes():
        outs = [o.name for o in graph.outputs_of(node) if o is not None]
        if any(i is not None and (i.name in out or i.name not in produced and graph.initializer(i.name) is None)
               for i in graph.inputs_of(node)):
            out.update(outs)
        produced.update(outs)
    return out


def _source_size(graph: Graph, name: str) -> int | None:
    """Elements of the initializers and Constant nodes a computed value is made from."""
    total, seen, stack = 0, set(), [name]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        init = graph.initializer(v)
        prod = graph.producer(v)
        if init is not None or (prod is not None and prod.op_type == "Constant"):
            arr = graph.const_array(v)
            total += 0 if arr is None else arr.size
            continue
        if prod is None or len(seen) > 4 * MAX_CHAIN_NODES:
            return None
        stack += [i.name for i in graph.inputs_of(prod) if i is not None]
    return total


def expanded_constant(graph: Graph, value, shared: bool = False) -> tuple[object, int, np.ndarray] | None:
    """``(node, port, array)`` of the constant behind ``value``: the value itself (its consumer
    rewrites it), or the input of an ``Expand`` whose other operand is any shape (the constant
    broadcast to the batch: ViT's and CaiT's class token). An Expand read by several nodes
    (CaiT's class token: concatenated to the patches and added to the class stream) only with
    ``shared``: each reader then picks its kept channels with a Gather (``gather_kept``)."""
    if value is None:
        return None
    arr = graph.const_array(value)
    if arr is not None:
        return None, -1, arr
    prod = graph.producer(value)
    if prod is not None and prod.op_type == "Expand" and prod.domain in ("", "ai.onnx"):
        src = graph.inputs_of(prod)[0]
        arr = graph.const_array(src) if src is not None else None
        if arr is not None and (shared or len(graph.consumers(value)) == 1):
            return prod, 0, arr
    return None


def zero_filled(graph: Graph, value) -> bool:
    """``value`` is ``ConstantOfShape`` of zero (its default) of any shape, computed or not: every
    element 0 (PyTorch's unrolled LSTMCell starts from ``ConstantOfShape([B, H])``; a scatter's
    target)."""
    name = value if isinstance(value, str) or value is None else value.name
    prod = graph.producer(name) if name is not None else None
    if prod is None or prod.op_type != "ConstantOfShape" or prod.domain not in ("", "ai.onnx"):
        return False
    fill = prod.attr("value")  # a one-element TensorProto; absent: a float zero
    return fill is None or not np.any(onnx.numpy_helper.to_array(fill))


def gather_kept(graph: Graph, node, port: int, axis: int, keep: np.ndarray) -> None:
    """``node`` reads ``Gather(its input, kept positions, axis)`` at ``port`` from now on."""
    from ir import Initializer, Node

    value = graph.inputs_of(node)[port]
    index = graph.unique_name(f"{node.name}.in{port}/kept")
    graph.add_initializer(Initializer.from_array(index, np.nonzero(keep)[0].astype(np.int64)))
    out = graph.unique_name(f"{node.name}.in{port}/kept_output")
    graph.add_node(Node(graph.unique_name(f"{node.name}.in{port}/kept", kind="n"), "Gather", "",
                        {"axis": onnx.helper.make_attribute("axis", axis)}, ""), [value.name, index], [out])
    graph.set_input(node, port, out)


def select_kept(graph: Graph, node, port: int, arr: np.ndarray, axis: int, keep: np.ndarray) -> bool:
    """A constant operand computed in the graph (a relative-position bias [1, H, N, N] gathered
    from a [(2W-1)², H] table by Gather/Reshape/Transpose, folded by ``Graph.const_array``, or
    a chain ``computed_weights`` evaluated) that ``slice`` cuts along ``axis``: when the cut
    value would be larger than what it is computed from, the chain stays and a Gather after it
    picks the kept channels, so the model does not grow. False (freeze it to the cut constant
    instead) for an initializer, or when the cut constant is as small (BEiT's qkv bias
    ``Concat(q_bias, zeros, v_bias)``)."""
    value = graph.inputs_of(node)[port]
    if value is None or graph.initializer(value.name) is not None or graph.producer(value) is None \
            or graph.producer(value).op_type in ("Constant", "Identity", "Transpose", "Cast"):
        return False
    size = _source_size(graph, value.name)
    if size is None or arr.size * keep.sum() / len(keep) <= size:
        return False
    gather_kept(graph, node, port, axis, keep)
    return True


def weight_array(graph: Graph, value) -> np.ndarray | None:
    """A weight operand's value: a constant (folded through Slice/Concat/.., ``constant_value``),
    or a weight computed from initializers."""
    arr = constant_value(graph, value)
    if arr is None and value is not None:
        arr = computed_weights(graph).get(value if isinstance(value, str) else value.name)
    return arr
