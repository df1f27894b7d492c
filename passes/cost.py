"""Parameters and FLOPs of a model, for the report (not a pass).

Parameters: elements of floating-point initializers and Constant nodes. FLOPs: 2 ×
multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (the ops pruning shrinks), from static
shapes with a symbolic batch taken as 1.

Example: ``Conv(x[1,3,8,8], W[4,3,3,3], pads=1)`` -> 2 × 4·8·8 × 3·3·3 = 13,824 FLOPs.
"""

from __future__ import annotations

import numpy as np
import onnx

from ir import Graph, opset_of
from ir.graph import constant_node_value

from .infer_shapes import value_shapes
from .op_rules.computed import weight_array
from .tag import static_shapes


def count_params(ir: Graph) -> int:
    """Float elements of initializers and of Constant nodes (Paddle's exporter writes weights as
    Constant nodes)."""
    held = sum(init.size for init in ir.initializers.values() if _is_float(init.elem_type))
    for node in ir.nodes():
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            arr = constant_node_value(node)
            if arr is not None and arr.dtype.kind == "f":
                held += arr.size
        held += sum(_body_params(a) for a in node.attrs.values())
    return int(held)


def _body_params(attr: onnx.AttributeProto) -> int:
    """Float weights held inside subgraph bodies (If / Loop / Scan): initializers and Constants."""
    graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else \
        list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else []
    held = 0
    for g in graphs:
        held += sum(int(np.prod(t.dims, dtype=np.int64)) for t in g.initializer if _is_float(t.data_type))
        for n in g.node:
            for a in n.attribute:
                if n.op_type == "Constant" and a.name == "value" and _is_float(a.t.data_type):
                    held += int(np.prod(a.t.dims, dtype=np.int64))
                held += _body_params(a)
    return held


def _is_float(elem_type: int) -> bool:
    return elem_type in (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _numel(shape) -> int | None:
    if shape is None:
        return None
    dims = [d if isinstance(d, int) else 1 for d in shape]  # symbolic dims (batch) count as 1
    return int(np.prod(dims, dtype=np.int64))


def count_flops(ir: Graph, shapes: dict | None = None) -> int:
    """FLOPs on ``shapes``, by default the static shapes ``tag`` decides on (inference completed
    through folded shape sub-graphs, and by ONNX Runtime where the inputs are static): plain
    inference leaves ShuffleNet's convolutions after a computed Slice at size 1."""
    if shapes is None:
        shapes = static_shapes(ir, opset_of(ir))
    return int(sum(flops_by_node(ir, shapes).values()))


def flops_by_node(ir: Graph, shapes: dict | None = None) -> dict[str, int]:
    """FLOPs of each counted node (Conv, ConvTranspose, Gemm, MatMul) by name."""
    shapes = value_shapes(ir) if shapes is None else shapes
    out: dict[str, int] = {}
    for node in ir.nodes():
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        ins = ir.inputs_of(node)
        outs = ir.outputs_of(node)
        if len(ins) < 2 or ins[1] is None or outs[0] is None:
            continue
        w = weight_array(ir, ins[1]) if not shapes.get(ins[1].name) else None
        w_shape = shapes.get(ins[1].name) or (tuple(w.shape) if w is not None else None)
        out_n = _numel(shapes.get(outs[0].name))
        in_shape = shapes.get(ins[0].name)
        if w_shape is None or out_n is None:
            continue
        if op == "Conv":
            macs = out_n * int(np.prod(w_shape[1:], dtype=np.int64))
        elif op == "ConvTranspose":
            in_n = _numel(in_shape)
            if in_n is None:
                continue
            macs = in_n * int(np.prod(w_shape[1:], dtype=np.int64))
        elif op == "Gemm":
            k = w_shape[1] if node.attr("transB", 0) else w_shape[0]
            macs = out_n * int(k)
        else:
            if in_shape is None or not isinstance(in_shape[-1], int):
                continue
            macs = out_n * int(in_shape[-1])
        out[node.name] = 2 * int(macs)
    return out
