"""Constants the IR reads without running anything: a Constant node's value, and a Reshape /
Unsqueeze / Squeeze of a constant (``Graph.const_array`` follows chains of them)."""

from __future__ import annotations

import weakref
import numpy as np
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
