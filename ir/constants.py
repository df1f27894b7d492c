"""Constants the IR reads without running anything: a Constant node's value, a Reshape /
Unsqueeze / Squeeze of a constant (``Graph.const_array`` follows chains of them)."""

from __future__ import annotations

import weakref

import numpy as np
import onnx
from onnx import numpy_helper

# a Constant node's value, decoded once per node (IR nodes are immutable: a changed one is a new object)
_VALUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fold_shape_op(node, arr: np.ndarray, operand: np.ndarray | None) -> np.ndarray | None:
    """Reshape / Unsqueeze / Squeeze of a constant (the operand as an input, or an attribute
    before opsets 5 / 13); None when it cannot be read."""
    try:
        if node.op_type == "Reshape":
            target = operand if operand is not None else node.attr("shape")
            if target is None:
                return None
            target = [int(t) for t in np.ravel(target)]
            if not node.attr("allowzero", 0):
                target = [arr.shape[i] if t == 0 and i < arr.ndim else t for i, t in enumerate(target)]
            return np.reshape(arr, target)
        axes = operand if operand is not None else node.attr("axes")
        if node.op_type == "Squeeze":
            return np.squeeze(arr) if axes is None else np.squeeze(arr, axis=tuple(int(a) for a in np.ravel(axes)))
        if axes is None:
            return None
        axes = [int(a) for a in np.ravel(axes)]
        rank = arr.ndim + len(axes)
        return np.expand_dims(arr, tuple(sorted(a + rank if a < 0 else a for a in axes)))
    except (ValueError, TypeError):
        return None


def constant_node_value(node) -> np.ndarray | None:
    """The value of a Constant node's attribute (read-only), or None."""
    if node in _VALUES:
        return _VALUES[node]
    _VALUES[node] = value = _constant_value(node)
    return value


def _constant_value(node) -> np.ndarray | None:
    for key, proto in sorted(node.attrs.items()):
        if key == "value":
            arr = numpy_helper.to_array(proto.t)
        elif key == "value_float":
            arr = np.array(proto.f, np.float32)
        elif key == "value_floats":
            arr = np.array(list(proto.floats), np.float32)
        elif key == "value_int":
            arr = np.array(proto.i, np.int64)
        elif key == "value_ints":
            arr = np.array(list(proto.ints), np.int64)
        else:
            continue
        arr.flags.writeable = False
        return arr
    return None


def follow_constants(graph, name: str) -> np.ndarray | None:
    """``Graph.const_array``'s walk (unremembered): through Identity, Constant, Reshape, Unsqueeze,
    Squeeze, Gather, Transpose and Cast links to an initializer's or a Constant's data; None otherwise."""
    seen = 0
    while seen < 64:
        seen += 1
        init = graph.initializer(name)
        if init is not None:
            return init.array
        prod = graph.producer(name)
        if prod is None:
            return None
        if prod.op_type == "Identity" and prod.domain in ("", "ai.onnx"):
            src = graph.inputs_of(prod)[0]
            if src is None:
                return None
            name = src.name
            continue
        if prod.op_type == "Constant" and prod.domain in ("", "ai.onnx"):
            return constant_node_value(prod)
        if prod.op_type in ("Reshape", "Unsqueeze", "Squeeze") and prod.domain in ("", "ai.onnx"):
            # Paddle's exporter adds a bias as Add(y, Reshape(b, [1, C, 1, 1]))
            ins = graph.inputs_of(prod)
            arr = graph.const_array(ins[0]) if ins and ins[0] is not None else None
            operand = graph.const_array(ins[1]) if len(ins) > 1 and ins[1] is not None else None
            out = fold_shape_op(prod, arr, operand) if arr is not None else None
            if out is not None:
                out.flags.writeable = False
            return out
        if prod.op_type == "Gather" and prod.domain in ("", "ai.onnx"):
            # Swin's relative position bias: a table gathered by a constant index
            ins = graph.inputs_of(prod)
            if len(ins) != 2 or ins[0] is None or ins[1] is None:
                return None
            table, index = graph.const_array(ins[0]), graph.const_array(ins[1])
            if table is None or index is None or index.dtype.kind not in "iu":
                return None
            try:
                out = np.take(table, index, axis=prod.attr("axis", 0))
            except IndexError:
                return None
            out.flags.writeable = False
            return out
        if prod.op_type in ("Transpose", "Cast") and prod.domain in ("", "ai.onnx"):
            # PyTorch without constant folding exports Linear on 3-D input as MatMul(x,
            # Transpose(W)); other exporters store float16 weights behind a Cast
            src = graph.inputs_of(prod)[0]
            arr = graph.const_array(src) if src is not None else None
            if arr is None:
                return None
            if prod.op_type == "Transpose":
                out = np.transpose(arr, prod.attr("perm"))  # no perm: reversed axes, as ONNX says
            else:
                out = arr.astype(onnx.helper.tensor_dtype_to_np_dtype(prod.attr("to")))
            out.flags.writeable = False
            return out
        return None
    return None
