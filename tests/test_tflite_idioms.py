"""What tf2onnx writes for mediapipe's ``.tflite`` models (README "TFLite models"): BlazeFace's
residual blocks widen the stream by padding the shortcut's channel axis with zeros,

    y = Relu(Add(Pad(x, pads=[0, 0, 0, 0, 0, 4, 0, 0]), Conv(DepthwiseConv(x))))    # 24 -> 28

(``channel_padding``; mediapipe's face and palm detectors, face, iris and hand landmarks). Each
added channel is a constant zero: it gets a fresh id the Add couples with the wider branch's
channel, so that class removes the branch's filter and one added zero together. Built by hand
here: the tests need no tensorflow."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import pipeline
from models import Builder, _ints


def _block(b: Builder, x: str, cin: int, cout: int, value: str | None = None, **pad_attrs) -> str:
    """BlazeBlock: depthwise 3x3 -> 1x1 to ``cout``, plus the shortcut padded to ``cout``."""
    branch = b.conv(b.conv(x, cin, cin, group=cin), cin, cout, k=1)
    short = x
    if cout != cin:
        pads = [x, _ints(b, [0, 0, 0, 0, 0, cout - cin, 0, 0])] + ([value] if value is not None else [])
        short = b.op("Pad", pads, **pad_attrs)
    return b.relu(b.op("Add", [short, branch]))


def blaze_stack(pad_value: float | None = None, mode: str | None = None) -> onnx.ModelProto:
    """stem 3 -> 8, a block 8 -> 8, a block 8 -> 12 (channel pad), a block 12 -> 12, a 1x1 head."""
    b = Builder(11, opset=17, name="blaze_stack")
    x = b.input("image", ["N", 3, 8, 8])
    h = b.relu(b.conv(x, 3, 8))
    h = _block(b, h, 8, 8)
    value = None if pad_value is None else b.const(np.array(pad_value, np.float32), "v")
    h = _block(b, h, 8, 12, value, **({} if mode is None else {"mode": mode}))
    h = _block(b, h, 12, 12)
    return b.build([b.conv(h, 12, 2, k=1)])


def test_zeros_padded_on_the_channel_axis_prune_with_the_wider_branch_and_are_proven():
    model = blaze_stack()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    stream = next(g for g in rep["groups"] if g["channels_before"] == 12)
    assert stream.get("pruned") and stream["channels_after"] == 6, stream.get("reason")
    onnx.checker.check_model(result.model, full_check=True)
    pads = [n for n in result.model.graph.node if n.op_type == "Pad"]
    kept = onnx.numpy_helper.to_array(next(i for i in result.model.graph.initializer if i.name == pads[0].input[1]))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = ort.InferenceSession(result.model.SerializeToString()).run(None, {"image": x})[0]
    assert out.shape == (2, 2, 8, 8)
    assert 0 <= kept[5] <= 4 and kept.sum() == kept[5]   # only the zeros after the channels, fewer or as many


def test_reflect_or_nonzero_channel_padding_stays_a_barrier():
    for model in (blaze_stack(mode="reflect"), blaze_stack(pad_value=1.0)):
        rep = pipeline.prune(model, ratio=0.5).report
        assert rep["verified"] is True
        stem = next(g for g in rep["groups"] if g["channels_before"] == 8)
        assert not stem.get("pruned") and "Pad pads the channel axis" in (stem["reason"] or ""), stem
        assert not any(g.get("pruned") for g in rep["groups"] if g["channels_before"] == 12)


def test_zero_valued_pad_constant_is_accepted():
    rep = pipeline.prune(blaze_stack(pad_value=0.0), ratio=0.5).report
    assert rep["verified"] is True
    assert next(g for g in rep["groups"] if g["channels_before"] == 12).get("pruned")


def _padded_both_sides(opset: int) -> onnx.ModelProto:
    """Zeros added before and after the channels (2 + 2: 8 -> 12), as an input (opset 11+) or as
    the attribute of opset 10."""
    b = Builder(12, opset=opset, name="padded_both_sides")
    x = b.input("image", ["N", 3, 8, 8])
    h = b.relu(b.conv(x, 3, 8))
    pads = [0, 2, 0, 0, 0, 2, 0, 0]
    short = b.op("Pad", [h, _ints(b, pads)]) if opset >= 11 else b.op("Pad", [h], pads=pads)
    h = b.relu(b.op("Add", [short, b.conv(b.conv(h, 8, 8, group=8), 8, 12, k=1)]))
    return b.build([b.conv(h, 12, 2, k=1)])


def test_zeros_padded_before_the_channels_shrink_by_the_kept_ones():
    for opset in (10, 17):
        model = _padded_both_sides(opset)
        result = pipeline.prune(model, ratio=0.5)
        assert result.report["verified"] is True, opset
        stream = next(g for g in result.report["groups"] if g["channels_before"] == 12)
        assert stream.get("pruned") and stream["channels_after"] == 6, (opset, stream.get("reason"))
        pad = next(n for n in result.model.graph.node if n.op_type == "Pad")
        pads = list(next(a.ints for a in pad.attribute if a.name == "pads")) if opset < 11 else \
            onnx.numpy_helper.to_array(next(i for i in result.model.graph.initializer if i.name == pad.input[1])).tolist()
        inferred = onnx.shape_inference.infer_shapes(result.model)
        width = next(v.type.tensor_type.shape.dim[1].dim_value for v in inferred.graph.value_info
                     if v.name == pad.input[0])
        assert width + pads[1] + pads[5] == 6 and pads[1] <= 2 and pads[5] <= 2, (opset, width, pads)
        x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
        assert ort.InferenceSession(result.model.SerializeToString()).run(None, {"image": x})[0].shape == (1, 2, 8, 8)
