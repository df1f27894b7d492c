"""A stable text dump of the IR for golden tests and ``--dump-after``.

One line per node in deterministic topological order, with input and output names, value shapes
and attributes; initializers as name, dtype and shape with a short checksum (never the data).

Example::

    %y[1,4,8,8] = Conv(%x[1,3,8,8], @w[4,3,1,1]) {kernel_shape=[1,1]}  # conv
"""

from __future__ import annotations

import zlib

import numpy as np
import onnx

from .graph import Graph, Initializer, Value


def dump(graph: Graph) -> str:
    lines = [f"graph {graph.name}"]
    for name, init in graph.initializers.items():
        arr = np.ascontiguousarray(init.array)
        crc = zlib.crc32(arr.tobytes()) & 0xFFFFFFFF
        lines.append(f"  @{name}: {arr.dtype}{list(arr.shape)} crc={crc:08x}")
    for v in graph.inputs:
        if not isinstance(v, Initializer):
            lines.append(f"  input %{v.name}{_shape(v)}")
    for node in graph.topo_nodes():
        ins = ", ".join(_ref(v) for v in graph.inputs_of(node))
        outs = ", ".join(_ref(v) for v in graph.outputs_of(node))
        attrs = " ".join(f"{k}={_attr(node.attrs[k])}" for k in sorted(node.attrs))
        dom = f"{node.domain}." if node.domain else ""
        lines.append(f"  {outs} = {dom}{node.op_type}({ins})" + (f" {{{attrs}}}" if attrs else "")
                     + f"  # {node.name}")
    lines.append("  return " + ", ".join(_ref(v) for v in graph.outputs))
    return "\n".join(lines) + "\n"


def _ref(v: Value | None) -> str:
    if v is None:
        return "_"
    if isinstance(v, Initializer):
        return f"@{v.name}"
    return f"%{v.name}{_shape(v)}"


def _shape(v: Value) -> str:
    shape = v.shape
    if shape is None:
        return ""
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _attr(proto: onnx.AttributeProto) -> str:
    if proto.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return "<graph>"
    if proto.type == onnx.AttributeProto.TENSOR:
        t = proto.t
        return f"<tensor {list(t.dims)}>"
    value = onnx.helper.get_attribute_value(proto)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in value) + "]"
    return str(value)
