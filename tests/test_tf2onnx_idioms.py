"""What tf2onnx writes for Keras layers on NHWC tensors (found by benchmarks/exporters_zoo.py on
Keras' ConvNeXtTiny, 0 of 41 groups before): a Dense on a rank-4 tensor is a Tensordot,

    r = Reshape(Transpose(x), Cast(Concat(Unsqueeze(ReduceProd(Gather(s, [0, 1, 2]))),
                                          Unsqueeze(ReduceProd(Gather(s, [3]))))))   # [N·H·W, C]
    y = Reshape(MatMul(r, W), Cast(Concat(Gather(s', [0, 1, 2]), [K])))                # [N, H, W, K]

with ``s`` the (Gather-permuted) Shape of the tensor, a dynamic batch in both. The channel count
C of the first target is read off the tensor's own channel axis (it adapts by itself once channels
go); the batch entry N·H·W is not static but counts no channel (read as -1); the second target's
K is a plain number among symbolic dims: frozen, rewritten, its batch computed again at run time.
Built by hand here (a few nodes), with the LayerNorm tf2onnx writes (``stream_models``)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import pipeline
from models import Builder, _ints
from passes.op_rules.shape_values import SHAPE_RULES, ShapeValue


def _tensordot(b: Builder, x: str, cin: int, cout: int) -> str:
    """tf2onnx's Dense on an NHWC tensor ``x`` (shape read off ``x`` itself)."""
    shape = b.op("Cast", [b.op("Shape", [x])], to=onnx.TensorProto.INT32)
    rows = b.op("Unsqueeze", [b.op("ReduceProd", [b.op("Gather", [shape, _ints(b, [0, 1, 2])], axis=0)],
                                   axes=[0], keepdims=0), _ints(b, [0])])
    cols = b.op("Unsqueeze", [b.op("ReduceProd", [b.op("Gather", [shape, _ints(b, [3])], axis=0)],
                                   axes=[0], keepdims=0), _ints(b, [0])])
    flat = b.op("Reshape", [x, b.op("Cast", [b.op("Concat", [rows, cols], axis=0)], to=onnx.TensorProto.INT64)])
    mm = b.op("MatMul", [flat, b.weight(cin, cout)])
    lead = b.op("Gather", [shape, _ints(b, [0, 1, 2])], axis=0)
    back = b.op("Cast", [b.op("Concat", [lead, b.const(np.array([cout], np.int32), "k")], axis=0)],
                to=onnx.TensorProto.INT64)
    return b.op("Add", [b.op("Reshape", [mm, back]), b.weight(cout, prefix="b")])


def tensordot_block() -> onnx.ModelProto:
    """NCHW Conv -> NHWC -> Dense 8->16 -> Relu -> Dense 16->8 -> NCHW -> Conv head; batch "N"."""
    b = Builder(41, name="tensordot_block")
    x = b.input("image", ["N", 3, 6, 6])
    h = b.op("Transpose", [b.conv(x, 3, 8)], perm=[0, 2, 3, 1])
    h = _tensordot(b, b.relu(_tensordot(b, h, 8, 16)), 16, 8)
    y = b.conv(b.relu(b.op("Transpose", [h], perm=[0, 3, 1, 2])), 8, 4)
    return b.build([y])


def test_reduce_prod_of_a_shape_folds_with_the_taint_of_what_it_multiplied():
    node = onnx.helper.make_node("ReduceProd", ["s"], ["p"], axes=[0], keepdims=0)
    from ir.graph import Node

    n = Node("p", "ReduceProd", "", {a.name: a for a in node.attribute}, "")
    taint = np.empty(3, object)
    taint[:] = [frozenset({("x", 0), (None, "=N")}), frozenset({("x", 2)}), frozenset({("x", 3)})]
    out = SHAPE_RULES["ReduceProd"](n, [ShapeValue(np.array([2, 6, 6], np.int64), taint)], 13)
    assert int(out.value) == 72 and out.value.shape == ()
    # arithmetic on a symbolic dim is just unknown; the dims it read stay recorded
    assert out.taint.item() == frozenset({("x", 0), ("x", 2), ("x", 3), (None, "?")})


def test_tf2onnx_tensordot_prunes_with_a_dynamic_batch_and_is_proven():
    model = tensordot_block()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    got = sorted((g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned"))
    assert got == [(8, 4), (8, 4), (16, 8)], [g.get("reason") for g in rep["groups"]]
    onnx.checker.check_model(result.model, full_check=True)
    session = ort.InferenceSession(result.model.SerializeToString())
    before = ort.InferenceSession(model.SerializeToString())
    for batch in (1, 3):  # the batch entries are computed at run time, the channel entries rewritten
        x = np.random.default_rng(batch).standard_normal((batch, 3, 6, 6)).astype(np.float32)
        assert session.run(None, {"image": x})[0].shape == before.run(None, {"image": x})[0].shape == (batch, 4, 6, 6)


def test_without_the_reduce_prod_rule_the_tensordot_blocks(monkeypatch):
    """The fold is what lets the Tensordot's target be read: without it the groups stay whole."""
    monkeypatch.delitem(SHAPE_RULES, "ReduceProd")
    rep = pipeline.prune(tensordot_block(), ratio=0.5).report
    assert rep["verified"] is True
    reasons = [g.get("reason") or "" for g in rep["groups"] if not g.get("pruned")]
    assert len(reasons) == 3 and any("computed shape" in r for r in reasons)


def one_channel_filter() -> onnx.ModelProto:
    """basic-pitch's constant-Q transform as tf2onnx writes it (``third_party``): a one-channel
    Conv1D low-pass filter, its NCW -> NWC transpose written as a Reshape ([N, 1, T] -> [N, T, 1]),
    a reflect Pad along time, back to [N, 1, 1, T] by Unsqueeze and Reshape, the next filter."""
    b = Builder(5, opset=15, name="one_channel_filter")
    x = b.input("audio", ["N", 1, 1, 64])
    c = b.op("Reshape", [b.op("Conv", [x, b.weight(1, 1, 1, 8)], kernel_shape=[1, 8]), _ints(b, [-1, 1, 57])])
    nwc = b.op("Reshape", [c, _ints(b, [-1, 57, 1])])
    p = b.op("Pad", [nwc, _ints(b, [0, 4, 0, 0, 4, 0])], mode="reflect")  # time is axis 1 of [N, T, 1]
    back = b.op("Reshape", [b.op("Unsqueeze", [p, _ints(b, [-3])]), _ints(b, [-1, 1, 1, 65])])
    return b.build([b.op("Conv", [back, b.weight(3, 1, 1, 5)], kernel_shape=[1, 5])])


def test_a_one_channel_map_through_reshapes_stays_on_an_axis_of_size_one():
    """One channel varies along no axis of a Reshape's output; it was put on the largest (time),
    and the Pad along time, then the next Conv, were blamed for reading the channel axis. Now
    it lands on an axis of size one, and the group says why it keeps its one channel."""
    rep = pipeline.prune(one_channel_filter(), ratio=0.5).report
    assert rep["verified"] is True
    group = next(g for g in rep["groups"] if g["channels_before"] == 1)
    assert "removes none of its 1 channels" in group["reason"], group["reason"]


def one_channel_squeezed_by_a_computed_target() -> onnx.ModelProto:
    """basic-pitch's note head as tf2onnx writes it from the ``.tflite`` file (``nmp.tflite``, README
    TFLite): a one-channel Conv's Sigmoid, NCHW -> NHWC written as a Reshape ([N, 1, T, F] ->
    [-1, T, F, 1]), then tflite's Reshape to [N, T, F] with a computed target
    ``Cast(Concat(Slice(Cast(Gather(Shape(y), [0, 2, 3, 1])), 0:1), [T], [F]))``: it drops the
    channel axis (a tail of ones)."""
    b = Builder(7, opset=17, name="one_channel_squeezed")
    x = b.input("spec", ["N", 2, 6, 4])
    h = b.relu(b.conv(x, 2, 8))
    y = b.op("Sigmoid", [b.conv(h, 8, 1)])
    nhwc = b.op("Reshape", [y, _ints(b, [-1, 6, 4, 1])])
    shape = b.op("Cast", [b.op("Gather", [b.op("Shape", [y]), _ints(b, [0, 2, 3, 1])], axis=0)],
                 to=onnx.TensorProto.INT32)
    lead = b.op("Slice", [shape, _ints(b, [0]), _ints(b, [1]), _ints(b, [0])])
    target = b.op("Concat", [lead, b.const(np.array([6], np.int32), "t"), b.const(np.array([4], np.int32), "f")],
                  axis=0)
    return b.build([b.op("Reshape", [nhwc, b.op("Cast", [target], to=onnx.TensorProto.INT64)])])


def test_a_computed_reshape_that_drops_a_one_channel_axis_blocks_without_a_crash():
    """The computed-target path read the target's tail after the channel axis as empty (a tail of
    ones) and crashed ('max() arg is an empty sequence', pass trees) on nmp.tflite converted. Now
    the one-channel group stays whole with a reason; the 8-channel group prunes and is proven."""
    rep = pipeline.prune(one_channel_squeezed_by_a_computed_target(), ratio=0.5).report
    assert rep["verified"] is True
    pruned = [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")]
    assert pruned == [(8, 4)], [g.get("reason") for g in rep["groups"]]
    one = next(g for g in rep["groups"] if g["channels_before"] == 1)
    assert not one.get("pruned") and one["reason"]
