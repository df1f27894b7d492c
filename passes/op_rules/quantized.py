"""Quantized models in ONNX's QDQ form (ONNX Runtime's static quantizer, TFLite int8 via tf2onnx).

A weight layer reads ``DequantizeLinear(W_int8, scale, zero_point[, axis])`` of constants: the IR
reads it as the float weight it dequantizes to (``ir.constants.dequantize``), so it is a root and a
leaf like any other and is scored on its dequantized values. It is cut in its integer form: the
rules cut the float array with ``slices._take_axes``, which records the flat positions each kept
element came from (``note_take``); ``write`` cuts the integer tensor by those positions, and a
per-axis scale and zero point with it along their axis (per-tensor ones stay). An int32 bias
``DequantizeLinear(b_int32, x_scale·w_scale, 0, axis=0)`` is cut the same way. A value the rules
built otherwise is quantized again only where that gives back its exact values; else the operand is
frozen to the float constant (exact; the mask-equivalence check still runs).

ONNX Runtime's quantizer writes a weight behind a Transpose (PyTorch's ``MatMul(x, Transpose(W))``)
as ``DequantizeLinear(QuantizeLinear(Transpose(W)))``, quantized at run time: read the same way
(``ir.constants.quantize``), it is cut in its float constant ``W`` (through the Transpose) and a
per-axis scale and zero point on both sides; its mask zeroes ``W``, which quantizes to the zero point.

The proof (``validate``) zeroes a removed channel in a leaf's integer weight by setting it to its
zero point (``mask``): it dequantizes to exact zeros, and the masked original keeps its QDQ form,
so ONNX Runtime fuses both models' Q/DQ pairs alike.

Activations: ``QuantizeLinear`` / ``DequantizeLinear`` with a per-tensor scale and zero point
quantize each element on its own (0 goes to the zero point and back to 0): channels pass. Per axis
along the channel axis, the scale and zero point are cut with the channels; per axis along any
other axis, blocked quantization, or a scale that is not a constant: a barrier.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import onnx

from ir import Graph, Node
from ir.constants import QUANTIZED_TYPES, dequantizable, dequantize, quant_axis

from .views import DEFAULT_DOMAINS, Effect, NodeView, blocked, own_constant


@dataclass(frozen=True)
class QWeight:
    """A ``DequantizeLinear`` of constants: its node, the integers, scale, zero point (None when
    absent) and the axis the scale runs along (None: per tensor)."""
    node: Node
    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int | None
    fake: Node | None = None   # the QuantizeLinear of a float constant the integers come from


def qdq_weight(graph: Graph, value) -> QWeight | None:
    """The ``DequantizeLinear`` of constants that makes ``value``, or None."""
    if value is None:
        return None
    prod = graph.producer(value)
    if prod is None or prod.op_type != "DequantizeLinear" or prod.domain not in DEFAULT_DOMAINS:
        return None
    ins = graph.inputs_of(prod)
    if not ins or ins[0] is None or (ins[0].elem_type and ins[0].elem_type not in QUANTIZED_TYPES):
        return None
    arrs = [graph.const_array(v) if v is not None else None for v in ins[:3]]
    if len(ins) < 2 or arrs[0] is None or arrs[1] is None or (len(ins) > 2 and ins[2] is not None and arrs[2] is None):
        return None
    zp = arrs[2] if len(arrs) > 2 else None
    if not dequantizable(arrs[0], arrs[1], zp, prod.attr("axis", 1), prod.attr("block_size", 0)):
        return None
    axis = quant_axis(arrs[0], arrs[1], prod.attr("axis", 1))
    fake = graph.producer(ins[0]) if graph.initializer(ins[0].name) is None else None
    fake = fake if fake is not None and fake.op_type == "QuantizeLinear" else None  # else a constant's link
    if fake is not None and not _fake_quantized(graph, prod, fake, arrs, axis):
        return None
    return QWeight(prod, arrs[0], arrs[1], zp, axis, fake)


def _fake_quantized(graph: Graph, dq: Node, q: Node, arrs: list, axis: int | None) -> bool:
    """``DequantizeLinear(QuantizeLinear(W float constant, s, zp), s, zp)`` (ONNX Runtime's quantizer
    on a weight behind a Transpose): read alone by the one weight layer, the same scale and zero
    point on both sides, so the float constant is what is cut."""
    if q.op_type != "QuantizeLinear" or q.domain not in DEFAULT_DOMAINS or q.attr("block_size", 0):
        return False
    out, q_out = graph.outputs_of(dq)[0], graph.outputs_of(q)[0]
    if graph.num_consumers(q_out) != 1 or graph.is_graph_output(q_out) or graph.num_consumers(out) != 1 \
            or graph.is_graph_output(out):
        return False
    ins = graph.inputs_of(q)
    x = graph.const_array(ins[0]) if ins and ins[0] is not None else None
    s = graph.const_array(ins[1]) if len(ins) > 1 and ins[1] is not None else None
    zp = graph.const_array(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    if x is None or s is None or x.shape != arrs[0].shape or not np.array_equal(s, arrs[1]) \
            or (zp is None) != (arrs[2] is None if len(arrs) > 2 else True) \
            or (zp is not None and not np.array_equal(zp, arrs[2])):
        return False
    return quant_axis(x, s, q.attr("axis", 1)) == axis


# ----------------------------------------------------------------------------- cut positions
# id(float array a rule holds) -> (that array, the DequantizeLinear's name, flat positions into its
# integers or None for all of them in order). Cleared for each Rewriter (one node's rule); one table
# per thread (prune() may run in several threads of one process).
_LOCAL = threading.local()


def _taken() -> dict[int, tuple[np.ndarray, str, np.ndarray | None]]:
    table = getattr(_LOCAL, "taken", None)
    if table is None:
        table = _LOCAL.taken = {}
    return table


def forget() -> None:
    _taken().clear()


def note_read(graph: Graph, value, arr: np.ndarray | None) -> None:
    """``arr`` (what a rule read at an operand) is a QDQ weight's dequantized values: remember it."""
    if arr is None or value is None:
        return
    prod = graph.producer(value)
    if prod is not None and prod.op_type == "DequantizeLinear":
        _taken()[id(arr)] = (arr, prod.name, None)


def note_take(arr: np.ndarray, out: np.ndarray, take) -> None:
    """``out = take(arr)`` (a cut along axes): when ``arr`` is a remembered QDQ weight (or a cut of
    one), remember which of its integers ``out`` holds."""
    hit = _taken().get(id(arr))
    if hit is None or hit[0] is not arr:
        return
    pos = hit[2] if hit[2] is not None else np.arange(arr.size, dtype=np.int64).reshape(arr.shape)
    cut = take(pos)
    if cut.shape == out.shape:
        _taken()[id(out)] = (out, hit[1], cut)


def _positions(qw: QWeight, array: np.ndarray):
    """``(flat positions into the integers, the scale's kept entries)`` the rule's cut kept
    (``note_take``; ``(None, None)``: all, uncut; the entries None when per tensor); None when
    ``array`` is no remembered cut of this weight, False when a per-axis cut mixes scale entries."""
    hit = _taken().get(id(array))
    if hit is None or hit[0] is not array or hit[1] != qw.node.name:
        return None
    if hit[2] is None:
        return None, None
    if qw.axis is None:
        return hit[2], None
    along = np.moveaxis(np.unravel_index(hit[2], qw.q.shape)[qw.axis], qw.axis, 0)
    along = along.reshape(along.shape[0], -1)
    if not along.shape[1] or not np.all(along == along[:, :1]):
        return False
    return hit[2], along[:, 0]


def _cut(qw: QWeight, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """The integers, scale and zero point that dequantize to ``array``: by the positions the rule's
    cut kept (``note_take``), else by quantizing it again where that is exact; None otherwise."""
    found = _positions(qw, array)
    if found is False:
        return None
    if found is not None:
        pos, along = found
        if pos is None:
            return qw.q, qw.scale, qw.zero_point
        q = qw.q.reshape(-1)[pos]
        if along is None:
            return q, qw.scale, qw.zero_point
        return q, qw.scale[along], None if qw.zero_point is None else qw.zero_point[along]
    if array.dtype != qw.scale.dtype or (qw.axis is not None and (array.ndim != qw.q.ndim
                                                                   or array.shape[qw.axis] != qw.q.shape[qw.axis])):
        return None
    shape = [1] * array.ndim
    if qw.axis is not None:
        shape[qw.axis] = -1
    zp = np.zeros((), np.int64) if qw.zero_point is None else qw.zero_point.astype(np.int64).reshape(shape)
    with np.errstate(all="ignore"):
        q = np.rint(array.astype(np.float64) / qw.scale.astype(np.float64).reshape(shape)) + zp
    info = np.iinfo(qw.q.dtype)
    if not np.all(np.isfinite(q)) or q.min(initial=0) < info.min or q.max(initial=0) > info.max:
        return None
    q = q.astype(qw.q.dtype)
    back = dequantize(q, qw.scale, qw.zero_point, qw.node.attr("axis", 1))
    if back is None or back.shape != array.shape or not np.array_equal(back, array):
        return None
    return q, qw.scale, qw.zero_point


def write(graph: Graph, node: Node, port: int, array: np.ndarray, write_float=None) -> bool:
    """``node`` reads ``array`` at ``port`` from now on, kept in its QDQ form: the integers (and a
    per-axis scale and zero point) of the ``DequantizeLinear`` behind it replaced; for a float
    constant quantized in the graph, that constant cut (``write_float(node, port, array)``: the
    caller's ``Rewriter.set_const``) and the scales of both sides. False when the operand is no QDQ
    weight, or ``array`` cannot be written as integers on its grid."""
    value = graph.inputs_of(node)[port]
    qw = qdq_weight(graph, value)
    if qw is None:
        return False
    if qw.fake is not None:
        found = _positions(qw, np.asarray(array))
        if not found or write_float is None:
            return False
        _cut_float(graph, qw, found[0], found[1], write_float)
        return True
    cut = _cut(qw, np.asarray(array))
    if cut is None:
        return False
    q, scale, zp = cut
    dq, out = _own_dequantize(graph, node, port, qw.node)
    for i, (old, new) in enumerate(((qw.q, q), (qw.scale, scale), (qw.zero_point, zp))):
        if new is not old:
            _set_const(graph, dq, i, new)
    if out.shape is not None:
        graph.set_value_type(out.name, onnx.helper.make_tensor_type_proto(out.elem_type, list(q.shape)))
    return True


def _cut_float(graph: Graph, qw: QWeight, pos, along, write_float) -> None:
    """The float constant behind ``QuantizeLinear`` cut to the kept positions (in its layout, the
    integers'), and a per-axis scale and zero point on both sides to the kept entries."""
    if pos is None:
        return
    x = graph.const_array(graph.inputs_of(qw.fake)[0])
    held = dict(_taken())  # write_float starts a Rewriter of its own, which forgets
    write_float(qw.fake, 0, x.reshape(-1)[pos])
    _taken().update(held)
    if along is not None:
        for n in (qw.fake, qw.node):
            for port in (1, 2):
                v = graph.inputs_of(n)[port] if port < len(graph.inputs_of(n)) else None
                arr = graph.const_array(v) if v is not None else None
                if arr is not None and arr.ndim == 1 and arr.size > 1:
                    _set_const(graph, n, port, arr[along])
    out = graph.outputs_of(qw.node)[0]
    if out.shape is not None:
        shape = graph.const_array(graph.inputs_of(qw.fake)[0]).shape
        graph.set_value_type(out.name, onnx.helper.make_tensor_type_proto(out.elem_type, list(shape)))


def _set_const(graph: Graph, node: Node, port: int, array: np.ndarray) -> None:
    own_constant(graph, node, port, array, f"{graph.inputs_of(node)[port].name}.{node.name}")


# ----------------------------------------------------------------------------- the proof
def mask(graph: Graph, node: Node, port: int, axis: int, positions, write_float=None) -> bool:
    """The masked original: ``positions`` along ``axis`` of the QDQ weight ``node`` reads at
    ``port`` set to their zero point (exact zeros once dequantized), the QDQ form kept; for a float
    constant quantized in the graph, that constant's positions set to 0 (quantized to the zero
    point). False when the operand is no QDQ weight."""
    value = graph.inputs_of(node)[port]
    qw = qdq_weight(graph, value)
    if qw is None or (qw.fake is not None and write_float is None):
        return False
    index = [slice(None)] * qw.q.ndim
    index[axis] = list(positions)
    if qw.fake is not None:
        x = np.array(graph.const_array(graph.inputs_of(qw.fake)[0]), copy=True)
        x[tuple(index)] = 0
        write_float(qw.fake, 0, x)
        return True
    q = np.array(qw.q, copy=True)
    if qw.zero_point is None:
        q[tuple(index)] = 0
    else:
        shape = [1] * q.ndim
        if qw.axis is not None:
            shape[qw.axis] = -1
        zp = np.broadcast_to(qw.zero_point.reshape(shape), q.shape)
        q[tuple(index)] = zp[tuple(index)]
    _set_const(graph, _own_dequantize(graph, node, port, qw.node)[0], 0, q)
    return True


def _own_dequantize(graph: Graph, node: Node, port: int, dq: Node):
    """``(the DequantizeLinear node reads at port, its output)``: a copy of its own when others
    read it too, so what is written to it changes no other reader."""
    out = graph.outputs_of(dq)[0]
    if graph.num_consumers(out) == 1 and not graph.is_graph_output(out):
        return dq, out
    ins = [v.name if v is not None else "" for v in graph.inputs_of(dq)]
    name = graph.unique_name(f"{out.name}.{node.name}")
    dq = Node(graph.unique_name(f"{dq.name}.{node.name}", kind="n"), dq.op_type, dq.domain, dict(dq.attrs), "")
    graph.add_node(dq, ins, [name])
    graph.set_input(node, port, name)
    return dq, graph.value(name)


# ----------------------------------------------------------------------------- activations
def _scale_and_zero_point(view: NodeView):
    scale = view.const(1)
    zp = view.const(2) if view.n_inputs() > 2 and view.input_name(2) is not None else None
    if scale is None or (view.n_inputs() > 2 and view.input_name(2) is not None and zp is None):
        return None
    return scale, zp


def quantize_rule(view: NodeView) -> Effect:
    """QuantizeLinear / DequantizeLinear of an activation: per tensor, each element on its own (the
    channels pass); per axis, only along the channel axis (its scale and zero point cut with them)."""
    from .channels import _unary

    op = view.node.op_type
    if view.node.attr("block_size", 0):
        return blocked(f"{op} with block_size: blocked quantization mixes channels in a block")
    params = _scale_and_zero_point(view)
    if params is None:
        return blocked(f"{op} whose scale or zero point is not a constant")
    scale, _ = params
    m = view.maps[0]
    if m is None:
        return blocked(f"channels reach a non-data input of {op}")
    if scale.size == 1:  # a scalar, or a single element (ONNX Runtime reads it per tensor)
        return _unary(view)
    axis = view.node.attr("axis", 1)
    axis = axis + m.rank if axis < 0 else axis
    if scale.ndim != 1 or axis != m.axis or scale.size != len(m):
        return blocked(f"{op} per axis {view.node.attr('axis', 1)}, off the channel axis {m.axis}: "
                       f"each channel's scale is not its own")
    return _unary(view)


def slice_quantize(rw, ins, outs) -> None:
    """Per-axis scale and zero point of an activation's QuantizeLinear / DequantizeLinear, cut with
    the channels (``quantize_rule`` allowed them only along the channel axis)."""
    if 0 not in ins:
        return
    keep = ins[0][1]
    for port in (1, 2):
        arr = rw.const(port)
        if arr is not None and arr.ndim == 1 and arr.size == len(keep) and arr.size > 1:
            rw.set_const(port, arr[keep])
