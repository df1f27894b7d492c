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
    Squeeze, Gather, Transpose, Cast and DequantizeLinear (of constants) links to an initializer's or a Constant's data; None otherwise."""
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
        if prod.op_type == "DequantizeLinear" and prod.domain in ("", "ai.onnx"):
            # a QDQ model's weight: integers, a scale and a zero point, all constants
            ins = graph.inputs_of(prod)
            if not ins or ins[0] is None or (ins[0].elem_type and ins[0].elem_type not in QUANTIZED_TYPES):
                return None  # 4-bit data reads as int8
            arrs = [graph.const_array(v) if v is not None else None for v in ins[:3]]
            if len(ins) < 2 or any(a is None for a in arrs[:2]) or (len(ins) > 2 and ins[2] is not None
                                                                   and arrs[2] is None):
                return None
            out = dequantize(arrs[0], arrs[1], arrs[2] if len(arrs) > 2 else None, prod.attr("axis", 1),
                             prod.attr("block_size", 0))
            if out is not None:
                out.flags.writeable = False
            return out
        if prod.op_type == "QuantizeLinear" and prod.domain in ("", "ai.onnx"):
            # a float weight quantized in the graph (ONNX Runtime's quantizer on MatMul(x, Transpose(W)))
            ins = graph.inputs_of(prod)
            if len(ins) < 2 or ins[0] is None or ins[1] is None or (len(ins) > 2 and ins[2] is not None and (
                    ins[2].elem_type not in QUANTIZED_TYPES or graph.const_array(ins[2]) is None)):
                return None
            x, scale = graph.const_array(ins[0]), graph.const_array(ins[1])
            zp = graph.const_array(ins[2]) if len(ins) > 2 and ins[2] is not None else None
            out = None if x is None or scale is None else quantize(x, scale, zp, prod.attr("axis", 1),
                                                                   prod.attr("block_size", 0))
            if out is not None:
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


QUANTIZED_KINDS = ("int8", "uint8", "int16", "uint16", "int32")
QUANTIZED_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
                   onnx.TensorProto.INT32)


def quant_axis(q: np.ndarray, scale: np.ndarray, axis: int) -> int | None:
    """The axis a DequantizeLinear's scale runs along (``axis`` normalized), None when it is
    per-tensor (a scalar scale, or one of a single element: ONNX Runtime reads it so)."""
    if scale.size == 1:
        return None
    return axis + q.ndim if axis < 0 else axis


def dequantizable(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
                  block_size: int = 0) -> bool:
    """Whether ``dequantize`` reads these operands (checked from shapes and dtypes alone)."""
    if block_size or q.dtype.name not in QUANTIZED_KINDS or scale.dtype.kind != "f" or scale.ndim > 1 \
            or (zero_point is not None and (zero_point.size != scale.size or zero_point.dtype != q.dtype)):
        return False
    a = quant_axis(q, scale, axis)
    return a is None or (0 <= a < q.ndim and q.shape[a] == scale.size)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray | None:
    """``DequantizeLinear`` as ONNX Runtime computes it: ``float(int32(q) - int32(zp)) * scale``,
    per tensor or along ``axis``; None for what it is not (blocked quantization, 4-bit or float8
    data, a scale that does not fit)."""
    if not dequantizable(q, scale, zero_point, axis, block_size):
        return None
    a = quant_axis(q, scale, axis)
    shape = [1] * q.ndim
    if a is not None:
        shape[a] = scale.size
    s = scale.reshape(shape)
    diff = q.astype(np.int64) if q.dtype.name == "int32" else q.astype(np.int32)
    if zero_point is not None:
        diff = diff - zero_point.reshape(shape).astype(diff.dtype)
    return diff.astype(scale.dtype) * s


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
             block_size: int = 0) -> np.ndarray | None:
    """``QuantizeLinear`` of a constant: ``saturate(rint(x / scale) + zp)``, ties to even, divided
    in the scale's float type; uint8 without a zero point. None for what it is not (blocked
    quantization, float8 or 4-bit output, a scale that does not fit)."""
    dtype = zero_point.dtype if zero_point is not None else np.dtype(np.uint8)
    if block_size or x.dtype.kind != "f" or x.dtype != scale.dtype or dtype.name not in QUANTIZED_KINDS[:4] \
            or scale.ndim > 1 or (zero_point is not None and zero_point.size != scale.size):
        return None
    a = quant_axis(x, scale, axis)
    shape = [1] * x.ndim
    if a is not None:
        if not 0 <= a < x.ndim or x.shape[a] != scale.size:
            return None
        shape[a] = scale.size
    with np.errstate(all="ignore"):
        q = np.rint(x / scale.reshape(shape)).astype(np.float64)
    if zero_point is not None:
        q = q + zero_point.reshape(shape).astype(np.float64)
    info = np.iinfo(dtype)
    return np.clip(np.nan_to_num(q), info.min, info.max).astype(dtype)
