"""Quantized models in QDQ form (``onnxruntime.quantization.quantize_static``, ``QuantFormat.QDQ``):
their weight layers prune, cut as integers, and are proven (``tests/qdq_models.py`` builds them)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from passes.analyses import SliceRecord
from passes.validate import masked_original
from qdq_models import FLOAT_MODELS, quantized

CASES = [(name, pc) for name in FLOAT_MODELS for pc in (False, True)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qdq")
    return {(name, pc): quantized(name, folder, pc) for name, pc in CASES}


def _prune(model, ratio=0.5):
    """The pruning result and the slice record validate masked the original by."""
    seen = {}

    class Keep(pipeline.Instrument):
        def after(self, p, graph, ctx, result, seconds):
            if p.name == "slice":
                seen["record"] = ctx.get(SliceRecord)

    result = pipeline.prune(model, ratio=ratio, instruments=[Keep()])
    return result, seen.get("record")


def _run(model: onnx.ModelProto, feeds: dict, optimized: bool) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _feeds(model: onnx.ModelProto, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    inp = model.graph.input[0]
    return {inp.name: rng.standard_normal([d.dim_value for d in inp.type.tensor_type.shape.dim]).astype(np.float32)}


def _integers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The integer data each DequantizeLinear of an initializer reads."""
    inits = {i.name: i for i in model.graph.initializer}
    return {n.input[0]: numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits}


@pytest.mark.parametrize("name,per_channel", CASES, ids=[f"{n}-{'pc' if pc else 'pt'}" for n, pc in CASES])
def test_qdq_model_prunes_as_integers_and_is_proven(models, name, per_channel):
    """Its groups prune (> 0 removed), the check proves it, the weights stay 8-bit behind
    DequantizeLinear (none frozen to floats), and ONNX Runtime, fusing the Q/DQ pairs into its
    integer kernels, gives the masked original's outputs; the masked original differs from the
    original (the check is not vacuous)."""
    path = models[(name, per_channel)]
    original = onnx.load(str(path))
    result, record = _prune(original)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] is not None
    assert sum(1 for g in rep["groups"] if g.get("pruned")) >= 1
    assert rep["params_after"] < 0.7 * rep["params_before"]
    pruned = result.model
    before, after = _integers(original), _integers(pruned)
    assert sum(a.size for a in after.values() if a.dtype.itemsize == 1) < sum(  # int8 / uint8 weights
        a.size for a in before.values() if a.dtype.itemsize == 1)
    floats = [i.name for i in pruned.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) > 1]
    assert floats == [], f"weights frozen to floats: {floats}"
    kinds = {n.op_type for n in pruned.graph.node}
    assert "DequantizeLinear" in kinds and "QuantizeLinear" in kinds
    masked = masked_original(original, record)
    feeds = _feeds(original)
    for optimized in (False, True):
        want, got = _run(masked, feeds, optimized), _run(pruned, feeds, optimized)
        for w, g in zip(want, got):
            assert w.shape == g.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    assert not np.allclose(_run(original, feeds, False)[0], _run(masked, feeds, False)[0])


def test_masked_original_sets_removed_integers_to_their_zero_point(models):
    """The proof's masked original keeps the QDQ form: a leaf's removed input channels hold its
    zero point (they dequantize to exact zeros), every other integer as it was."""
    original = onnx.load(str(models[("residual_cnn", True)]))
    _, record = _prune(original)
    masked = masked_original(original, record)
    before, after = _integers(original), _integers(masked)
    assert before.keys() == after.keys()
    inits = {i.name: numpy_helper.to_array(i) for i in masked.graph.initializer}
    changed = 0
    for node in masked.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in before:
            continue
        q0, q1 = before[node.input[0]], after[node.input[0]]
        diff = q0 != q1
        if diff.any():
            changed += 1
            zp = inits[node.input[2]]
            assert np.all(q1[diff] == np.broadcast_to(zp.reshape([-1] + [1] * (q1.ndim - 1)), q1.shape)[diff])
    assert changed >= 2


def _activation_model(axis: int) -> onnx.ModelProto:
    """Conv(DQ weight) -> QuantizeLinear / DequantizeLinear per axis ``axis`` -> Conv(DQ weight)."""
    rng = np.random.default_rng(3)
    c, h = 6, 5
    length = c if axis == 1 else h
    inits = [numpy_helper.from_array(rng.integers(-100, 100, (c, 3, 1, 1)).astype(np.int8), "wq"),
             numpy_helper.from_array(np.full(c, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(c, np.int8), "wz"),
             numpy_helper.from_array(rng.integers(-100, 100, (4, c, 1, 1)).astype(np.int8), "vq"),
             numpy_helper.from_array(np.float32(0.02), "vs"),
             numpy_helper.from_array(np.int8(0), "vz"),
             numpy_helper.from_array((rng.random(length) * 0.05 + 0.01).astype(np.float32), "as"),
             numpy_helper.from_array(rng.integers(100, 150, length).astype(np.uint8), "az")]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], "dqw", axis=0),
             helper.make_node("Conv", ["x", "w"], ["c0"], "conv0"),
             helper.make_node("QuantizeLinear", ["c0", "as", "az"], ["q"], "q", axis=axis),
             helper.make_node("DequantizeLinear", ["q", "as", "az"], ["d"], "dq", axis=axis),
             helper.make_node("DequantizeLinear", ["vq", "vs", "vz"], ["v"], "dqv"),
             helper.make_node("Conv", ["d", "v"], ["y"], "conv1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, h, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_activation_quantized_along_the_channel_axis_prunes_with_its_scale():
    """Per-axis activation Q/DQ along the channels: each channel's scale and zero point are its
    own, cut with it."""
    result, _ = _prune(_activation_model(axis=1))
    rep = result.report
    assert rep["verified"] is True
    group = next(g for g in rep["groups"] if "conv0" in g["roots"])
    assert group.get("pruned"), group
    inits = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    q = next(n for n in result.model.graph.node if n.op_type == "QuantizeLinear")
    assert inits[q.input[1]].shape == (3,) and inits[q.input[2]].shape == (3,)


def test_activation_quantized_off_the_channel_axis_stays_whole_and_says_why():
    """Per-axis activation Q/DQ along another axis (rows): one scale per row mixes every channel
    of the row: a barrier, the group left whole with the reason."""
    result, _ = _prune(_activation_model(axis=2))
    rep = result.report
    assert rep["verified"] is True and rep["params_after"] == rep["params_before"]
    group = next(g for g in rep["groups"] if "conv0" in g["roots"])
    assert not group.get("pruned") and "QuantizeLinear per axis 2, off the channel axis 1" in group["reason"], group


def test_shared_scales_and_zero_points_are_copied_not_cut_under_another_reader():
    """tf2onnx's TFLite int8 form: layers of one width share a zero-point initializer, and a bias's
    int32 zeros serve as its data and its zero point at once. Each layer's cut gets its own copy;
    the result is proven, and matches the masked original in ONNX Runtime, fused or not."""
    rng = np.random.default_rng(5)
    c = 6
    inits = [numpy_helper.from_array(rng.integers(-100, 100, (c, 3, 1, 1)).astype(np.int8), "wq0"),
             numpy_helper.from_array(rng.integers(-100, 100, (c, c, 1, 1)).astype(np.int8), "wq1"),
             numpy_helper.from_array(rng.integers(-100, 100, (4, c, 1, 1)).astype(np.int8), "wq2"),
             numpy_helper.from_array((rng.random(c) * 0.01 + 0.005).astype(np.float32), "ws0"),
             numpy_helper.from_array((rng.random(c) * 0.01 + 0.005).astype(np.float32), "ws1"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws2"),
             numpy_helper.from_array(np.zeros(c, np.int8), "zp"),          # shared by two layers
             numpy_helper.from_array(np.zeros(c, np.int32), "zeros32"),    # bias data and zero point
             numpy_helper.from_array((rng.random(c) * 1e-4).astype(np.float32), "bs")]
    nodes = [helper.make_node("DequantizeLinear", ["wq0", "ws0", "zp"], ["w0"], "dq0", axis=0),
             helper.make_node("DequantizeLinear", ["wq1", "ws1", "zp"], ["w1"], "dq1", axis=0),
             helper.make_node("DequantizeLinear", ["wq2", "ws2"], ["w2"], "dq2", axis=0),
             helper.make_node("DequantizeLinear", ["zeros32", "bs", "zeros32"], ["b"], "dqb", axis=0),
             helper.make_node("Conv", ["x", "w0", "b"], ["c0"], "conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], "relu0"),
             helper.make_node("Conv", ["r0", "w1", "b"], ["c1"], "conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], "conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result, record = _prune(model)
    rep = result.report
    assert rep["verified"] is True
    assert {r for g in rep["groups"] if g.get("pruned") for r in g["roots"]} == {"conv0", "conv1"}
    onnx.checker.check_model(result.model, full_check=True)
    inits_after = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    for node in result.model.graph.node:
        if node.op_type == "DequantizeLinear":
            q, s = inits_after[node.input[0]], inits_after[node.input[1]]
            assert s.shape == (q.shape[0],) and all(inits_after[n].shape == s.shape for n in node.input[2:])
    masked = masked_original(model, record)
    feeds = _feeds(model)
    for optimized in (False, True):
        np.testing.assert_allclose(_run(result.model, feeds, optimized)[0], _run(masked, feeds, optimized)[0],
                                   rtol=1e-5, atol=1e-6)


def _transposed_mlp(folder, per_axis: bool):
    """PyTorch's Linear on 3-D input, ``MatMul(x, Transpose(W))``: ONNX Runtime's quantizer writes
    the weight as ``DequantizeLinear(QuantizeLinear(Transpose(W)))`` (per tensor: it quantizes per
    channel only an initializer); ``per_axis`` writes that pair by hand along the output axis."""
    rng = np.random.default_rng(4)
    w0 = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    w1 = (rng.standard_normal((4, 16)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["w0"], ["w0t"], "t0", perm=[1, 0]),
             helper.make_node("MatMul", ["x", "w0t"], ["h"], "mm0"),
             helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("Transpose", ["w1"], ["w1t"], "t1", perm=[1, 0]),
             helper.make_node("MatMul", ["r", "w1t"], ["y"], "mm1")]
    inits = [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")]
    if per_axis:
        for i, (w, n) in enumerate(((w0, 16), (w1, 4))):
            inits += [numpy_helper.from_array((np.abs(w).max(axis=1) / 127).astype(np.float32), f"s{i}"),
                      numpy_helper.from_array(np.zeros(n, np.int8), f"z{i}")]
        nodes = nodes[:1] + [helper.make_node("QuantizeLinear", ["w0t", "s0", "z0"], ["w0q"], "q0", axis=1),
                             helper.make_node("DequantizeLinear", ["w0q", "s0", "z0"], ["w0d"], "d0", axis=1),
                             helper.make_node("MatMul", ["x", "w0d"], ["h"], "mm0"), nodes[2], nodes[3],
                             helper.make_node("QuantizeLinear", ["w1t", "s1", "z1"], ["w1q"], "q1", axis=1),
                             helper.make_node("DequantizeLinear", ["w1q", "s1", "z1"], ["w1d"], "d1", axis=1),
                             helper.make_node("MatMul", ["r", "w1d"], ["y"], "mm1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if per_axis:
        return model
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, out = folder / "tmm.onnx", folder / "tmm_qdq.onnx"
    onnx.save(model, src)

    class Reader:
        items = iter([{"x": rng.standard_normal((2, 3, 8)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return onnx.load(str(out))


@pytest.mark.parametrize("per_axis", [False, True], ids=["ort-quantizer", "per-axis"])
def test_a_weight_quantized_at_run_time_behind_a_transpose_is_cut_in_its_float_constant(tmp_path, per_axis):
    """``DequantizeLinear(QuantizeLinear(Transpose(W)))``: W is cut through the Transpose, a
    per-axis scale and zero point on both sides; the form stays (no weight frozen to a float
    output of the pair), proven, and ONNX Runtime agrees with the masked original."""
    model = _transposed_mlp(tmp_path, per_axis)
    result, record = _prune(model)
    rep = result.report
    assert rep["verified"] is True and rep["params_after"] < rep["params_before"]
    pruned = result.model
    assert [n.op_type for n in pruned.graph.node].count("Transpose") == 2
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    assert inits["w0"].shape == (8, 8) and inits["w1"].shape == (4, 8)
    for node in pruned.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in inits and per_axis:
            assert inits[node.input[1]].size in (8, 4), (node.name, inits[node.input[1]].shape)
    masked = masked_original(model, record)
    feeds = _feeds(model)
    np.testing.assert_allclose(_run(pruned, feeds, False)[0], _run(masked, feeds, False)[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(_run(model, feeds, False)[0], _run(masked, feeds, False)[0])
