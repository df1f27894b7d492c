"""What jax2onnx 0.17.1 writes for flax.nnx models (found by benchmarks/jax_zoo.py), each idiom
built by hand here in a few nodes.

A flatten of an NHWC tensor before a Dense, ``x.reshape(x.shape[0], -1)`` with a dynamic batch, is

    Reshape(x, Concat(Unsqueeze(Squeeze(Gather(Shape(x), [0]), [0]), [0]), [H·W·C]))

the batch read off the tensor, the flattened size a plain constant. Before, the VGG's last conv
group stayed whole ("channel entry cannot be rewritten"): that constant is now frozen and rewritten
to the kept positions, the batch computed again at run time (``op_rules.adaptive``)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import pipeline
from models import Builder, _ints


def flatten_nhwc(b: Builder, x: str, flat: int) -> str:
    """jax2onnx's ``x.reshape(x.shape[0], -1)``: the batch read by Shape, the rest a constant."""
    batch = b.op("Squeeze", [b.op("Gather", [b.op("Shape", [x]), _ints(b, [0])], axis=0), _ints(b, [0])])
    target = b.op("Concat", [b.op("Unsqueeze", [batch, _ints(b, [0])]), _ints(b, [flat])], axis=0)
    return b.op("Reshape", [x, target])


def flatten_head() -> onnx.ModelProto:
    """NCHW Conv 3->8 -> Relu -> NHWC -> flatten [B, 4·4·8] -> MatMul 128->5 + bias; batch "B"."""
    b = Builder(43, name="jax_flatten_head")
    x = b.input("in_0", ["B", 3, 4, 4])
    h = b.op("Transpose", [b.relu(b.conv(x, 3, 8))], perm=[0, 2, 3, 1])
    y = b.op("Add", [b.op("MatMul", [flatten_nhwc(b, h, 4 * 4 * 8), b.weight(128, 5)]), b.weight(5, prefix="b")])
    return b.build([y])


def test_jax2onnx_flatten_of_nhwc_prunes_the_conv_and_keeps_the_dynamic_batch():
    model = flatten_head()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    got = [(g["channels_before"], g.get("channels_after"), g.get("reason")) for g in rep["groups"]]
    assert (8, 4, None) in got, got
    onnx.checker.check_model(result.model, full_check=True)
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "B"
    before = ort.InferenceSession(model.SerializeToString())
    after = ort.InferenceSession(result.model.SerializeToString())
    for batch in (1, 3):  # the batch entry is computed at run time, the flattened size rewritten (64)
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        assert after.run(None, {"in_0": x})[0].shape == before.run(None, {"in_0": x})[0].shape == (batch, 5)


def test_a_flatten_constant_that_is_not_the_flattened_size_stays_whole():
    """[B, 64, 2] from [B, 4, 4, 8]: the constant 64 is not the size of the axis holding the
    channels (they land on two axes' worth of positions), so nothing is rewritten."""
    b = Builder(44, name="jax_flatten_other")
    x = b.input("in_0", ["B", 3, 4, 4])
    h = b.op("Transpose", [b.relu(b.conv(x, 3, 8))], perm=[0, 2, 3, 1])
    batch = b.op("Squeeze", [b.op("Gather", [b.op("Shape", [h]), _ints(b, [0])], axis=0), _ints(b, [0])])
    target = b.op("Concat", [b.op("Unsqueeze", [batch, _ints(b, [0])]), _ints(b, [64, 2])], axis=0)
    y = b.op("ReduceSum", [b.op("Reshape", [h, target]), _ints(b, [2])], keepdims=0)
    model = b.build([b.op("MatMul", [y, b.weight(64, 5)])])
    rep = pipeline.prune(model, ratio=0.5).report
    assert rep["verified"] is True
    conv = next(g for g in rep["groups"] if g["channels_before"] == 8)
    assert not conv.get("pruned") and "Reshape" in conv["reason"], conv


def expanded_carry(declared: bool = True) -> onnx.ModelProto:
    """An unrolled recurrent cell's first step as jax2onnx writes it: the zero carry
    ``jnp.zeros((x.shape[0], 6))`` is ``Expand(scalar, Concat(Shape(x)[0], [6]))``, combined with a
    gate elementwise. Here: Gemm 8->6 -> Mul(·, Expand(0.5, [B, 6])) + Expand(c[1, 6]) -> Relu -> Gemm 6->3."""
    b = Builder(45, name="jax_expanded_carry")
    x = b.input("in_0", ["B", 8])
    batch = b.op("Gather", [b.op("Shape", [x]), _ints(b, [0])], axis=0)
    target = b.op("Concat", [batch, _ints(b, [6])], axis=0)
    half = b.op("Expand", [b.const(np.array(0.5, np.float32), "half"), target])
    row = b.op("Expand", [b.const(np.random.default_rng(1).standard_normal((1, 1)).astype(np.float32), "c"), target])
    h = b.op("Add", [b.op("Mul", [b.gemm(x, 8, 6), half]), row])
    model = b.build([b.gemm(b.relu(h), 6, 3)])
    if declared:  # jax2onnx declares every value's shape, the Expand's [B, 6] included
        model.graph.value_info.extend(onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, ["B", 6])
                                      for v in (half, row))
    return model


def test_a_constant_expanded_along_the_channels_is_gathered_per_reader():
    model = expanded_carry()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-5
    got = [(g["channels_before"], g.get("channels_after"), g.get("reason")) for g in rep["groups"]]
    assert (6, 3, None) in got, got
    before = ort.InferenceSession(model.SerializeToString())
    after = ort.InferenceSession(result.model.SerializeToString())
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        assert after.run(None, {"in_0": x})[0].shape == before.run(None, {"in_0": x})[0].shape == (batch, 3)


def test_an_expanded_constant_of_undeclared_extent_stays_untracked_data():
    """Without the Expand's declared shape slice could not tell its extent: the group stays whole."""
    rep = pipeline.prune(expanded_carry(declared=False), ratio=0.5).report
    six = next(g for g in rep["groups"] if g["channels_before"] == 6)
    assert rep["verified"] is True and not six.get("pruned") and "untracked data" in six["reason"], six


def test_an_expanded_operand_that_varies_along_the_channels_is_still_untracked_data():
    """An Expand of data (a graph input [1, 6]), not of a constant: the Mul blocks as before."""
    b = Builder(46, name="jax_expanded_data")
    x = b.input("in_0", ["B", 8])
    g = b.input("gate", [1, 6])
    batch = b.op("Gather", [b.op("Shape", [x]), _ints(b, [0])], axis=0)
    gate = b.op("Expand", [g, b.op("Concat", [batch, _ints(b, [6])], axis=0)])
    model = b.build([b.gemm(b.relu(b.op("Mul", [b.gemm(x, 8, 6), gate])), 6, 3)])
    rep = pipeline.prune(model, ratio=0.5).report
    six = next(g for g in rep["groups"] if g["channels_before"] == 6)
    assert not six.get("pruned") and "untracked data" in six["reason"], six


def _dense3(b: Builder, x: str, lead: str, cin: int, out: list[int]) -> str:
    """jax2onnx's nnx.Linear on [B, S, cin]: ``Reshape(Gemm(Reshape(x, [-1, cin]), W, b), Concat(lead, out))``
    with ``lead = Shape(x)[0:2]``; ``out`` is [cout] or a head split [H, D]."""
    cout = int(np.prod(out))
    flat = b.op("Reshape", [x, _ints(b, [-1, cin])])
    y = b.op("Gemm", [flat, b.weight(cin, cout), b.weight(cout, prefix="b")])
    return b.op("Reshape", [y, b.op("Concat", [lead, _ints(b, out)], axis=0)])


def tiny_vit() -> onnx.ModelProto:
    """jax2onnx's ViT in miniature: NCHW patch Conv 3->8 -> NHWC -> Reshape(Concat(B, [4, 8])), a
    class token ``Expand(cls[1, 1, 8], Concat(B, [1, 8]))`` concatenated before the patches, one
    residual attention block (Dense q/k/v split as ``Concat(Shape(x)[0:2], [2, 4])``, per-head
    MatMuls, merged back with the static ``[-1, 8]``, Dense out), mean over tokens, head 8->3."""
    b = Builder(47, name="jax_tiny_vit")
    x = b.input("in_0", ["B", 3, 4, 4])
    patches = b.op("Conv", [x, b.weight(8, 3, 2, 2), b.weight(8, prefix="b")], kernel_shape=[2, 2], strides=[2, 2])
    p = b.op("Transpose", [patches], perm=[0, 2, 3, 1])
    batch = b.op("Unsqueeze", [b.op("Squeeze", [b.op("Gather", [b.op("Shape", [p]), _ints(b, [0])], axis=0),
                                                _ints(b, [0])]), _ints(b, [0])])
    tokens = b.op("Reshape", [p, b.op("Concat", [batch, _ints(b, [4, 8])], axis=0)])
    cls_target = b.op("Concat", [batch, _ints(b, [1, 8])], axis=0)
    cls = b.op("Expand", [b.const(np.random.default_rng(2).standard_normal((1, 1, 8)).astype(np.float32), "cls"),
                          cls_target])
    h = b.op("Concat", [cls, tokens], axis=1)                                    # [B, 5, 8]
    lead = b.op("Slice", [b.op("Shape", [h]), _ints(b, [0]), _ints(b, [2])])    # [B, 5]
    q, k, v = (b.op("Transpose", [_dense3(b, h, lead, 8, [2, 4])], perm=[0, 2, 1, 3]) for _ in range(3))
    att = b.op("Softmax", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])], axis=3)
    o = b.op("Transpose", [b.op("MatMul", [att, v])], perm=[0, 2, 1, 3])           # [B, 5, 2, 4]
    o = b.op("Gemm", [b.op("Reshape", [o, _ints(b, [-1, 8])]), b.weight(8, 8), b.weight(8, prefix="b")])
    h = b.op("Add", [h, b.op("Reshape", [o, b.op("Concat", [lead, _ints(b, [8])], axis=0)])])
    y = b.op("ReduceMean", [h], axes=[1], keepdims=0)
    model = b.build([b.gemm(y, 8, 3)])
    model.graph.value_info.extend([onnx.helper.make_tensor_value_info(cls, onnx.TensorProto.FLOAT, ["B", 1, 8]),
                                   onnx.helper.make_tensor_value_info(cls_target, onnx.TensorProto.INT64, [3])])
    return model


def test_jax2onnx_vit_prunes_its_stream_and_heads_through_rank_2_dense_layers():
    """Before: the stream stopped at the patch Reshape (a constant channel entry), the heads at
    the split of a [B·S, C] Gemm output by ``Concat(Shape(x)[0:2], [H, D])`` and at the static
    merge ``[-1, H·D]`` (the batch and sequence regrouped before the channels)."""
    model = tiny_vit()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    got = sorted((g["channels_before"], g.get("channels_after")) for g in rep["groups"] if g.get("pruned"))
    assert got == [(2, 1), (8, 4)], [(g["channels_before"], g.get("reason")) for g in rep["groups"]]
    onnx.checker.check_model(result.model, full_check=True)
    # the class token is cut where it is stored; its Expand's target is made 1 on the channels
    assert [list(i.dims) for i in result.model.graph.initializer if i.name.startswith("cls")] == [[1, 1, 4]]
    before = ort.InferenceSession(model.SerializeToString())
    after = ort.InferenceSession(result.model.SerializeToString())
    for batch in (1, 3):  # the frozen targets' batch entries are computed at run time
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        assert after.run(None, {"in_0": x})[0].shape == before.run(None, {"in_0": x})[0].shape == (batch, 3)


def test_a_file_whose_value_info_contradicts_its_graph_is_a_load_error_not_an_inputs_one(tmp_path):
    """jax2onnx 0.17.1's ResNet declares NHWC shapes for values its layout pass made NCHW; ONNX
    Runtime's load-time inference then refuses the file (``[ShapeInferenceError] Incompatible
    dimensions``) before any input is fed: the file is at fault, no ``--inputs`` can help."""
    from onnx import helper as h, numpy_helper

    def info(name, shape):
        return h.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)

    nodes = [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Max", ["c", "z"], ["m"]),
             h.make_node("Add", ["c", "m"], ["a"]), h.make_node("Relu", ["a"], ["r"]),
             h.make_node("Conv", ["r", "w"], ["c2"]), h.make_node("Add", ["c2", "r"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.float32), "z")]
    graph = h.make_graph(nodes, "stale", [info("x", ["B", 2, 3, 3])], [info("y", ["B", 2, 3, 3])], inits,
                         value_info=[info(v, ["B", 3, 3, 2]) for v in ("m", "a", "r")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "stale.onnx"
    onnx.save(model, str(path))
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "onnxpruner"
    run = subprocess.run([str(exe), "prune", str(path), "-o", str(tmp_path / "out.onnx")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and not (tmp_path / "out.onnx").exists()
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {path}: ONNX Runtime cannot load"), line
    assert "ShapeInferenceError" in line and "--inputs" not in line and "Traceback" not in run.stderr


def unrolled_cell() -> onnx.ModelProto:
    """Two steps of a tanh cell as jax2onnx unrolls them: ``h0 = Expand(0.0, Concat(Shape(x)[0], [6]))``,
    ``h1 = Tanh(Gemm(x, Wx, b) + Gemm(h0, R))``, ``h2 = Tanh(Gemm(x, Wx, b) + Gemm(h1, R))``, head 6->3;
    the recurrent weight R is one initializer both steps read."""
    b = Builder(49, name="jax_unrolled_cell")
    x = b.input("in_0", ["B", 4])
    target = b.op("Concat", [b.op("Gather", [b.op("Shape", [x]), _ints(b, [0])], axis=0), _ints(b, [6])], axis=0)
    h = b.op("Expand", [b.const(np.array(0.0, np.float32), "zero"), target])
    h0 = h
    wx, bias, r = b.weight(4, 6), b.weight(6, prefix="b"), b.weight(6, 6, prefix="r")
    for _ in range(2):
        h = b.op("Tanh", [b.op("Add", [b.op("Gemm", [x, wx, bias]), b.op("Gemm", [h, r])])])
    model = b.build([b.gemm(h, 6, 3)])
    model.graph.value_info.append(onnx.helper.make_tensor_value_info(h0, onnx.TensorProto.FLOAT, ["B", 6]))
    return model


def test_the_first_step_fed_zeros_shares_the_cut_recurrent_weight():
    """Before: the Gemm reading the zero carry kept its own uncut copy of R (the GRU/LSTM of the
    sweep lost 12% of their parameters; now 46%)."""
    model = unrolled_cell()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-5
    # the two steps' Gemm(x, Wx) read one weight: one group (trees.tied), cut once for both
    assert [(g["channels_before"], g.get("channels_after")) for g in rep["groups"] if g.get("pruned")] == [(6, 3)]
    shapes = sorted(tuple(i.dims) for i in result.model.graph.initializer if len(i.dims) == 2)
    assert shapes == [(3, 3), (3, 3), (4, 3)], shapes  # R cut once and shared, no 6-row copy left
    before = ort.InferenceSession(model.SerializeToString())
    after = ort.InferenceSession(result.model.SerializeToString())
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        assert after.run(None, {"in_0": x})[0].shape == before.run(None, {"in_0": x})[0].shape == (batch, 3)
