"""Parameters and FLOPs of a model, for the report (not a pass).

Parameters: elements of floating-point initializers and Constant nodes. FLOPs: 2 ×
multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (the ops pruning shrinks), from static
shapes with a symbolic or unknown dim (batch, sequence) taken as 1; of LSTM, GRU and RNN (each step's input
and recurrent products, ``recurrent_flops``); and of the ops inside If, Loop and Scan bodies
(``body_flops``): an If counts its larger branch (one of the two runs), a Loop its body × the trip
count when that is a constant (once otherwise: a lower bound), a Scan its body × the scan axis's
length (once when unknown); a Loop / Scan body's head lowered into the graph (``ir/bodies.py``)
is counted with it, as many times. A body's shapes come from ONNX shape inference, with what it reads
from the enclosing graph typed by the enclosing graph's shapes.

Example: ``Conv(x[1,3,8,8], W[4,3,3,3], pads=1)`` -> 2 × 4·8·8 × 3·3·3 = 13,824 FLOPs;
``LSTM(X[T=5,B=1,I=8], W[1,4·16,8], R[1,4·16,16])`` -> 2 × 5·1 × 64·(8 + 16) = 15,360.
"""

from __future__ import annotations

import numpy as np
import onnx

from ir import Graph, lower, opset_of
from ir.constants import constant_node_value
from ir.bodies import free_names

from .infer_shapes import value_shapes
from .op_rules.computed import weight_array
from .tag import static_shapes


def count_params(ir: Graph) -> int:
    """Float elements of initializers and of Constant nodes (Paddle's exporter writes weights as
    Constant nodes), and the integers a QDQ model dequantizes (``DequantizeLinear``'s data)."""
    held = sum(init.size for init in ir.initializers.values() if _is_float(init.elem_type))
    held += sum(init.size for init in _dequantized(ir) if not _is_float(init.elem_type))
    for node in ir.nodes():
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            arr = constant_node_value(node)
            if arr is not None and arr.dtype.kind == "f":
                held += arr.size
        if node.name not in ir.props.bodies or node.op_type != "If":  # a lowered If's branches: counted
            held += sum(_body_params(a) for a in node.attrs.values())
    return int(held)


def _dequantized(ir: Graph) -> list:
    """The initializers ``DequantizeLinear`` nodes read as their data, once each."""
    seen = {}
    for node in ir.nodes():
        if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx"):
            ins = ir.inputs_of(node)
            init = ir.initializer(ins[0].name) if ins and ins[0] is not None else None
            if init is not None:
                seen[init.name] = init
    return list(seen.values())


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


def count_flops(ir: Graph, shapes: dict | None = None, ctx=None) -> int:
    """FLOPs on ``shapes``, by default the static shapes ``tag`` decides on (inference completed
    through folded shape sub-graphs, and by ONNX Runtime where the inputs are static): plain
    inference leaves ShuffleNet's convolutions after a computed Slice at size 1. ``ctx`` (a
    PassContext): the runs that complete the shapes take its inputs (the ones the proof ran on),
    not fresh guesses a model may not run on (a batch of 2 where a Reshape writes 1)."""
    if shapes is None:
        shapes = static_shapes(ir, opset_of(ir), ctx=ctx)
    return _total(ir, shapes)


def _total(ir: Graph, shapes: dict) -> int:
    per_node = flops_by_node(ir, shapes)
    per_node.update({name: sum(parts) for name, parts in recurrent_flops(ir, shapes).items()})
    skipped = smaller_branches(ir, per_node)
    return int(sum(f for name, f in per_node.items() if name not in skipped) + sum(body_flops(ir, shapes).values()))


def smaller_branches(ir: Graph, per_node: dict[str, int]) -> set[str]:
    """The nodes of the branch with fewer FLOPs of each If lowered into the graph
    (``ir/bodies.py``): one branch runs, the larger is counted."""
    from ir.bodies import body_scopes

    if not ir.props.bodies:
        return set()
    sums: dict[tuple[str, str], int] = {}
    members: dict[tuple[str, str], list[str]] = {}
    for name, where in body_scopes(ir, ir.topo_nodes()).items():
        sums[where] = sums.get(where, 0) + per_node.get(name, 0)
        members.setdefault(where, []).append(name)
    out: set[str] = set()
    for if_name in ir.props.bodies:
        if "then_branch" not in ir.props.bodies[if_name]:  # a Loop / Scan's lowered head: it runs
            continue
        then, other = (if_name, "then_branch"), (if_name, "else_branch")
        out.update(members.get(other if sums.get(then, 0) >= sums.get(other, 0) else then, []))
    return out


def recurrent_flops(ir: Graph, shapes: dict) -> dict[str, tuple[int, int]]:
    """FLOPs of each LSTM / GRU / RNN node by name: (input products X·Wᵀ, recurrent products
    H·Rᵀ) over every step and direction: 2·T·B·D·G·H·I and 2·T·B·D·G·H·H (G gates, H units)."""
    out: dict[str, tuple[int, int]] = {}
    for node in ir.nodes():
        if node.op_type not in ("LSTM", "GRU", "RNN") or node.domain not in ("", "ai.onnx"):
            continue
        ins = ir.inputs_of(node)
        if len(ins) < 3 or any(v is None for v in ins[:3]):
            continue
        x, w, r = (_shape_or_const(ir, shapes, v) for v in ins[:3])
        if w is None or r is None or len(w) != 3 or len(r) != 3:
            continue
        # [T, B] or [B, T] (layout 1): the product either way; unknown dims count as 1
        steps_batch = _numel(x[:2]) if x is not None and len(x) == 3 else 1
        rows = _numel(w[:2])         # D · G · H
        if not isinstance(w[2], int) or not isinstance(r[2], int):
            continue
        out[node.name] = (2 * steps_batch * rows * w[2], 2 * steps_batch * rows * r[2])
    return out


def _shape_or_const(ir: Graph, shapes: dict, value) -> tuple | None:
    got = shapes.get(value.name)
    if got is None:
        arr = weight_array(ir, value)
        got = tuple(arr.shape) if arr is not None else None
    return got


def body_flops(ir: Graph, shapes: dict, heads: bool = True) -> dict[str, int]:
    """FLOPs inside the bodies of each If / Loop / Scan node by name (see the module docstring);
    bodies nested in bodies are counted the same way, recursively. ``heads=False``: without the
    runs of a lowered head past its first (``head_times`` scales its nodes instead)."""
    out: dict[str, int] = {}
    for name, (flops, times) in _body_counts(ir, shapes).items():
        out[name] = flops + ((max(times, 0) - 1) * _head_flops(ir, shapes, name)
                             if heads and name in ir.props.bodies else 0)
    return out


def head_times(ir: Graph, shapes: dict) -> dict[str, int]:
    """Node -> how many times it runs, for the nodes of a Loop / Scan body's head lowered into
    the graph (``ir/bodies.py``): its Loop's constant trip count, its Scan's length (1 unknown)."""
    from ir.bodies import body_scopes

    loops = {name: times for name, (_, times) in _body_counts(ir, shapes).items() if name in ir.props.bodies}
    if not loops:
        return {}
    return {n: max(loops[owner], 0) for n, (owner, _) in body_scopes(ir, ir.topo_nodes()).items() if owner in loops}


def _body_counts(ir: Graph, shapes: dict) -> dict[str, tuple[int, int]]:
    """Node -> (FLOPs of its bodies, times its body runs: 1 for an If)."""
    out: dict[str, tuple[int, int]] = {}
    for node in ir.nodes():
        if node.op_type not in ("If", "Loop", "Scan") or node.domain not in ("", "ai.onnx") \
                or node.name in ir.props.bodies and node.op_type == "If":  # branches are nodes of the graph
            continue
        ins = ir.inputs_of(node)
        if node.op_type == "If":
            counts = [_graph_flops(ir, shapes, node.attr(a), {}) for a in ("then_branch", "else_branch")
                      if node.attr(a) is not None]
            out[node.name] = (max(counts, default=0), 1)
            continue
        body = node.attr("body")
        if body is None:
            continue
        if node.op_type == "Loop":  # body inputs: iteration, cond, carried (typed as their initial values)
            given = {b.name: shapes.get(v.name) for b, v in zip(body.input[2:], ins[2:]) if v is not None}
            trips = ir.const_array(ins[0]) if ins and ins[0] is not None else None
            times = int(trips.reshape(-1)[0]) if trips is not None and trips.size == 1 else 1
        else:  # Scan (opset 9+): states, then one slice of each scan input
            states = len(body.input) - int(node.attr("num_scan_inputs", 0))
            axes = list(node.attr("scan_input_axes", []) or [])
            given, times = {}, None
            for i, (b, v) in enumerate(zip(body.input, ins)):
                s = shapes.get(v.name) if v is not None else None
                if i >= states and s is not None:
                    axis = axes[i - states] if i - states < len(axes) else 0
                    axis = axis % len(s) if s else 0
                    times = times or (s[axis] if s and isinstance(s[axis], int) else None)
                    s = s[:axis] + s[axis + 1:]
                given[b.name] = s
            times = times or 1
        out[node.name] = (max(times, 0) * _graph_flops(ir, shapes, body, given), times)
    return out


def _head_flops(ir: Graph, shapes: dict, name: str) -> int:
    """FLOPs of the nodes of a Loop / Scan body lowered into the graph (``ir/bodies.py``)."""
    from ir.bodies import body_scopes

    per_node = flops_by_node(ir, shapes)
    return sum(per_node.get(n, 0) for n, (owner, _) in body_scopes(ir, ir.topo_nodes()).items() if owner == name)


def _graph_flops(ir: Graph, shapes: dict, body: onnx.GraphProto, given: dict) -> int:
    """FLOPs of one body as a model of its own: its inputs typed as declared (or by ``given``
    where it declares no shape), what it reads from the enclosing graph as inputs of the
    enclosing graph's types and shapes."""
    inputs = []
    for b in body.input:
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(b)
        if given.get(b.name) is not None and not vi.type.tensor_type.HasField("shape"):
            _set_shape(vi, given[b.name])
        inputs.append(vi)
    for name in sorted(free_names(body)):  # lowering's own reading of a body's outer names
        if not ir.has_value(name):
            continue
        value = ir.value(name)
        elem = value.elem_type or onnx.TensorProto.FLOAT
        inputs.append(onnx.helper.make_tensor_value_info(name, elem, None))
        dims = shapes.get(name) if shapes.get(name) is not None else value.shape
        if dims is not None:
            _set_shape(inputs[-1], dims)
    graph = onnx.helper.make_graph(list(body.node), body.name or "body", inputs, list(body.output),
                                   list(body.initializer), value_info=list(body.value_info))
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in
                                                         ir.props.opset_imports.items()],
                                   ir_version=ir.props.ir_version)
    model.functions.extend(ir.props.functions)
    try:
        inner = lower(model)
    except Exception:  # a body this cannot stand alone (counted as nothing rather than guessed)
        return 0
    return _total(inner, value_shapes(inner))


def _set_shape(vi: onnx.ValueInfoProto, dims) -> None:
    shape = vi.type.tensor_type.shape
    shape.Clear()
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif isinstance(d, str):
            dim.dim_param = d


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
