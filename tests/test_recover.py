"""The recover pass and the recon criterion, on hand-built graphs whose effect is computable."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ir
import pipeline
from passes.base import PassContext
from passes.criteria import get_criterion
from passes.recover import RecoverPass, im2col
from passes.validate import run_model
from tests import models


def _model(nodes, inits, x_shape, out, out_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def constant_channel_conv(pads: int = 0):
    """conv a (1x1, 1 -> 2): channel 0 = 2x, channel 1 = the constant 3 (zero weight: l1 removes
    it); conv b (3x3, 2 -> 2, no bias) reads both."""
    rng = np.random.default_rng(0)
    wb = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wb"], ["y"], name="b", kernel_shape=[3, 3], pads=[pads] * 4)]
    side = 6 if pads == 0 else 8
    return _model(nodes, {"wa": [[[[2.0]]], [[[0.0]]]], "ba": [0.0, 3.0], "wb": wb},
                  ["N", 1, 8, 8], "y", ["N", 2, side, side]), wb


def calib(n=64, shape=(1, 8, 8), seed=1):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _prune(model, **kw):
    return pipeline.prune(model, ratio=0.5, criterion="l1", scope="node", **kw)


def test_bias_compensates_a_constant_channel_exactly():
    model, wb = constant_channel_conv(pads=0)
    x = calib()
    plain = _prune(model)
    rec = _prune(model, calib_data=x, recover="bias")
    want = run_model(model, {"x": x})[0]
    assert not np.allclose(run_model(plain.model, {"x": x})[0], want, atol=1e-3)
    np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], want, rtol=1e-5, atol=1e-4)
    b = {t.name: numpy_helper.to_array(t) for t in rec.model.graph.initializer}
    node_b = next(n for n in rec.model.graph.node if n.name == "b")
    assert len(node_b.input) == 3  # a bias was added where there was none
    np.testing.assert_allclose(b[node_b.input[2]], 3.0 * wb[:, 1].sum(axis=(1, 2)), rtol=1e-5)
    assert rec.report["verified"] and rec.report["recovery"]["biases_folded"] == 1
    assert rec.report["recovery"]["heldout_error_after"] < 1e-5 < rec.report["recovery"]["heldout_error_before"]
    onnx.checker.check_model(rec.model, full_check=True)


def test_bias_with_zero_padding_is_exact_inside_and_the_spatial_mean_overall():
    model, wb = constant_channel_conv(pads=1)
    x = calib()
    rec = _prune(model, calib_data=x, recover="bias")
    got, want = run_model(rec.model, {"x": x})[0], run_model(model, {"x": x})[0]
    np.testing.assert_allclose(got[:, :, 1:-1, 1:-1], want[:, :, 1:-1, 1:-1] + (got - want)[:, :, 1:-1, 1:-1].mean(
        axis=(0, 2, 3), keepdims=True), atol=1e-4)
    # the border loses part of the constant: the bias is the mean over positions of the exact map
    ones = np.pad(np.full((1, 1, 8, 8), 3.0), ((0, 0), (0, 0), (1, 1), (1, 1)))
    exact = np.stack([sum(ones[0, 0, i:i + 8, j:j + 8] * wb[o, 1, i, j] for i in range(3) for j in range(3))
                      for o in range(2)])
    np.testing.assert_allclose((got - run_model(_prune(model).model, {"x": x})[0]).mean(axis=(0, 2, 3)),
                               exact.mean(axis=(1, 2)), rtol=1e-4)


def test_gemm_bias_compensation_is_exact():
    wa = np.array([[1.0, 0.5], [0.0, 0.0], [-1.0, 2.0]], np.float32)   # row 1: constant 4 from the bias
    wb = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "wa", "ba"], ["a"], name="a", transB=1),
             helper.make_node("Gemm", ["a", "wb", "bb"], ["y"], name="b", transB=1)]
    model = _model(nodes, {"wa": wa, "ba": [0.0, 4.0, 0.0], "wb": wb, "bb": [0.5, -0.5]}, ["N", 2], "y", ["N", 2])
    x = calib(32, (2,))
    rec = pipeline.prune(model, ratio=0.34, criterion="l1", scope="node", calib_data=x, recover="bias")
    assert rec.report["groups"][0]["kept"] == [0, 2]
    np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], run_model(model, {"x": x})[0], atol=1e-4)


def mlp(bias_b: bool = True, shape=("N", 2)):
    """MatMul a (2 -> 3) + Add: channel 1 is the constant 4 (zero column, smallest l1: removed);
    MatMul b (3 -> 2), + Add when ``bias_b`` — a transformer MLP's layout, on [N, 2] or [N, T, 2]."""
    wa = np.array([[1.0, 0.0, -1.0], [0.5, 0.0, 2.0]], np.float32)
    wb = np.random.default_rng(3).standard_normal((3, 2)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["a0"], name="a"),
             helper.make_node("Add", ["a0", "ba"], ["a"], name="a_bias"),
             helper.make_node("MatMul", ["a", "wb"], ["b0" if bias_b else "y"], name="b")]
    inits = {"wa": wa, "ba": [0.0, 4.0, 0.0], "wb": wb}
    if bias_b:
        nodes.append(helper.make_node("Add", ["bb", "b0"], ["y"], name="b_bias"))   # constant first
        inits["bb"] = [0.5, -0.5]
    return _model(nodes, inits, list(shape), "y", [*shape[:-1], 2]), wb


def test_matmul_bias_goes_into_its_add_and_compensates_a_constant_channel_exactly():
    model, wb = mlp()
    x = calib(32, (2,))
    rec = pipeline.prune(model, ratio=0.34, criterion="l1", scope="node", calib_data=x, recover="bias")
    assert rec.report["groups"][0]["kept"] == [0, 2] and rec.report["recovery"]["biases_folded"] == 1
    np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], run_model(model, {"x": x})[0], atol=1e-4)
    b = {t.name: numpy_helper.to_array(t) for t in rec.model.graph.initializer}
    add = next(n for n in rec.model.graph.node if n.name == "b_bias")
    np.testing.assert_allclose(b[add.input[0]], [0.5, -0.5] + 4.0 * wb[1], rtol=1e-5)
    assert [n.op_type for n in rec.model.graph.node] == ["MatMul", "Add", "MatMul", "Add"]


def test_matmul_without_a_bias_gets_an_add_on_a_sequence_input():
    model, wb = mlp(bias_b=False, shape=("N", 5, 2))
    x = calib(16, (5, 2))
    plain = pipeline.prune(model, ratio=0.34, criterion="l1", scope="node")
    rec = pipeline.prune(model, ratio=0.34, criterion="l1", scope="node", calib_data=x, recover="bias")
    want = run_model(model, {"x": x})[0]
    np.testing.assert_allclose(run_model(plain.model, {"x": x})[0] + 4.0 * wb[1], want, atol=1e-4)
    np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], want, atol=1e-4)
    assert [n.op_type for n in rec.model.graph.node] == ["MatMul", "Add", "MatMul", "Add"]
    assert rec.model.graph.output[0].name == "y"
    onnx.checker.check_model(rec.model, full_check=True)


def test_matmul_ls_refit_reconstructs_a_removed_channel_that_is_a_combination_of_kept_ones():
    # a: ch0 = 2 x0, ch1 = 2 x1, ch2 = 0.1 (x0 + x1) + 1 = 0.05 (ch0 + ch1) + 1 (smallest l1: removed)
    wa = np.array([[2.0, 0.0, 0.1], [0.0, 2.0, 0.1]], np.float32)
    wb = np.random.default_rng(5).standard_normal((3, 2)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["a0"], name="a"),
             helper.make_node("Add", ["a0", "ba"], ["a"], name="a_bias"),
             helper.make_node("MatMul", ["a", "wb"], ["b0"], name="b"),
             helper.make_node("Add", ["b0", "bb"], ["y"], name="b_bias")]
    model = _model(nodes, {"wa": wa, "ba": [0.0, 0.0, 1.0], "wb": wb, "bb": [0.25, 0.75]},
                   ["N", 4, 2], "y", ["N", 4, 2])
    x = calib(64, (4, 2))
    for method in ("ls", "bias,bn,ls"):   # the bias step's fold is replaced, not added twice
        spec = ("tag,trees,classify,score{criterion=l1 scope=node},mask{ratio=0.34},slice,infer-shapes,validate,"
                f"recover{{method={method} ridge=0}}")
        rec = pipeline.prune(model, passes=spec, calib_data=x)
        w = {t.name: numpy_helper.to_array(t) for t in rec.model.graph.initializer}
        node_b = next(n for n in rec.model.graph.node if n.name == "b")
        add_b = next(n for n in rec.model.graph.node if n.name == "b_bias")
        np.testing.assert_allclose(w[node_b.input[1]], wb[:2] + 0.05 * wb[2:], atol=1e-4)
        np.testing.assert_allclose(w[add_b.input[1]], [0.25, 0.75] + wb[2], atol=1e-4)
        np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], run_model(model, {"x": x})[0], atol=1e-4)
        assert rec.report["recovery"]["consumers_refit"] == 1


def test_depthwise_conv_passes_its_lost_group_to_the_next_consumer_compensated_exactly():
    """conv a (1x1, 1 -> 3; channel 1 the constant 3) -> depthwise conv (group 3, 1x1, bias) ->
    conv b (1x1, 3 -> 2): the depthwise conv loses group 1 whole (input and output), and conv b
    gets 3·w_dw[1] + b_dw[1] times its weights of channel 1 as bias — exact (no padding)."""
    wdw = np.array([1.5, -2.0, 0.5], np.float32).reshape(3, 1, 1, 1)
    wb = np.random.default_rng(7).standard_normal((2, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wdw", "bdw"], ["d"], name="dw", kernel_shape=[1, 1], group=3),
             helper.make_node("Conv", ["d", "wb"], ["y"], name="b", kernel_shape=[1, 1])]
    inits = {"wa": [[[[2.0]]], [[[0.0]]], [[[-1.0]]]], "ba": [0.0, 3.0, 0.0], "wdw": wdw, "bdw": [0.1, 0.2, 0.3],
             "wb": wb}
    model = _model(nodes, inits, ["N", 1, 4, 4], "y", ["N", 2, 4, 4])
    x = calib(16, (1, 4, 4))
    rec = pipeline.prune(model, ratio=0.34, criterion="l1", scope="node", calib_data=x, recover="bias")
    assert rec.report["groups"][0]["kept"] == [0, 2]
    dw = next(n for n in rec.model.graph.node if n.name == "dw")
    assert helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 2
    b = {t.name: numpy_helper.to_array(t) for t in rec.model.graph.initializer}
    node_b = next(n for n in rec.model.graph.node if n.name == "b")
    np.testing.assert_allclose(b[node_b.input[2]], (3.0 * -2.0 + 0.2) * wb[:, 1, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], run_model(model, {"x": x})[0], atol=1e-4)


def bn_model():
    """conv a (1x1, 1 -> 2) -> conv b (1x1, 2 -> 2) -> BatchNormalization (statistics of the data)."""
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wb"], ["c"], name="b", kernel_shape=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["y"], name="bn")]
    wb = np.array([[[[1.0]], [[1.0]]], [[[2.0]], [[-1.0]]]], np.float32)
    x = calib(128)
    c = np.einsum("oc,nchw->nohw", wb[:, :, 0, 0], np.einsum("oc,nchw->nohw", [[1.0], [0.2]], x))
    inits = {"wa": [[[[1.0]]], [[[0.2]]]], "wb": wb, "s": [1.5, 0.5], "t": [0.1, -0.2],
             "m": c.mean(axis=(0, 2, 3)), "v": c.var(axis=(0, 2, 3))}
    return _model(nodes, inits, ["N", 1, 8, 8], "y", ["N", 2, 8, 8]), x


def test_bn_statistics_give_the_pruned_input_the_original_normalized_spread():
    model, x = bn_model()
    rec = pipeline.prune(model, ratio=0.5, criterion="l1", scope="node", calib_data=x,
                         passes="tag,trees,classify,score{criterion=l1 scope=node},mask{ratio=0.5},"
                                "slice,infer-shapes,validate,recover{method=bn holdout=0}")
    assert rec.report["recovery"]["batchnorms_reestimated"] == 1
    want, got = run_model(model, {"x": x})[0], run_model(rec.model, {"x": x})[0]
    # channel 1 of a (0.2 x) is gone: c = x and 2x instead of 1.2x and 1.8x; the BN output's
    # per-channel mean and standard deviation are those of the original again
    np.testing.assert_allclose(got.mean(axis=(0, 2, 3)), want.mean(axis=(0, 2, 3)), atol=1e-4)
    np.testing.assert_allclose(got.std(axis=(0, 2, 3)), want.std(axis=(0, 2, 3)), rtol=1e-3)
    np.testing.assert_allclose(got, want, atol=1e-3)   # here the removed channel was proportional


def test_ls_refit_reconstructs_a_removed_channel_that_is_a_combination_of_kept_ones():
    # a: ch0 = 2 x0, ch1 = 2 x1, ch2 = 0.1 (x0 + x1) = 0.05 (ch0 + ch1) (smallest l1: removed)
    wa = np.array([[2.0, 0.0], [0.0, 2.0], [0.1, 0.1]], np.float32).reshape(3, 2, 1, 1)
    wb = np.random.default_rng(5).standard_normal((2, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="a", kernel_shape=[1, 1]),
             helper.make_node("Conv", ["a", "wb"], ["y"], name="b", kernel_shape=[1, 1])]
    model = _model(nodes, {"wa": wa, "wb": wb}, ["N", 2, 4, 4], "y", ["N", 2, 4, 4])
    x = calib(64, (2, 4, 4))
    spec = ("tag,trees,classify,score{criterion=l1 scope=node},mask{ratio=0.34},slice,infer-shapes,validate,"
            "recover{method=ls ridge=0}")
    rec = pipeline.prune(model, passes=spec, calib_data=x)
    w = {t.name: numpy_helper.to_array(t) for t in rec.model.graph.initializer}
    node_b = next(n for n in rec.model.graph.node if n.name == "b")
    np.testing.assert_allclose(w[node_b.input[1]][:, :, 0, 0], wb[:, :2, 0, 0] + 0.05 * wb[:, 2:, 0, 0], atol=1e-4)
    np.testing.assert_allclose(run_model(rec.model, {"x": x})[0], run_model(model, {"x": x})[0], atol=1e-4)


def test_no_calibration_data_leaves_the_model_untouched():
    model, _ = constant_channel_conv()
    plain, rec = _prune(model), _prune(model, recover="bias,bn,ls")
    assert [numpy_helper.to_array(t).tolist() for t in plain.model.graph.initializer] == \
           [numpy_helper.to_array(t).tolist() for t in rec.model.graph.initializer]
    assert [n.SerializeToString() for n in plain.model.graph.node] == [n.SerializeToString() for n in rec.model.graph.node]
    assert rec.report["recovery"]["applied"] is False
    assert "no calibration data" in rec.report["recovery"]["reason"]


def test_recovered_residual_model_passes_the_checker_and_runs():
    model = models.many_to_many()
    x = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    x_one = x[:1]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):   # a symbolic batch for calibration
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del m.graph.value_info[:]
    rec = pipeline.prune(m, ratio=0.5, calib_data=x, recover="bias,bn,ls")
    onnx.checker.check_model(rec.model, full_check=True)
    outs = run_model(rec.model, {"x": x_one})
    assert [o.shape for o in outs] == [o.shape for o in run_model(m, {"x": x_one})]
    r = rec.report["recovery"]
    assert r["applied"] and r["consumers_refit"] > 0 and r["heldout_samples"] == 10
    assert r["heldout_error_after"] < r["heldout_error_before"]


def test_recover_options_are_checked():
    with pytest.raises(ValueError, match="unknown recovery method 'magic'"):
        RecoverPass(method=("magic",))
    with pytest.raises(pipeline.SpecError, match="recover"):
        pipeline.prune(constant_channel_conv()[0], recover="bias,magic")
    assert pipeline.Pipeline.parse("tag,trees,classify,score,mask,slice,validate,recover{method=bias,bn,ls}").spec() \
        .endswith("recover{method=bias,bn,ls holdout=0.25 ridge=0.001}")


def test_im2col_matches_conv():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 1], pads=[1, 0, 1, 2],
                              dilations=[1, 2])]
    model = _model(nodes, {"w": w}, [2, 3, 7, 6], "y", None)
    want = run_model(model, {"x": x})[0]
    cols = im2col(x, (3, 3), (2, 1), (1, 2), [1, 0, 1, 2])
    np.testing.assert_allclose(np.moveaxis(cols @ w.reshape(4, -1).T, 3, 1), want, atol=1e-4)


def test_recon_criterion_is_the_mean_compensated_error_at_the_consumer():
    # Gemm leaf: error of channel c = Var(a_c) · Σ_o W_b[o, c]²
    wa = np.array([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]], np.float32)
    wb = np.array([[1.0, 1.0, 2.0], [0.0, 1.0, -1.0]], np.float32)
    nodes = [helper.make_node("Gemm", ["x", "wa"], ["a"], name="a", transB=1),
             helper.make_node("Gemm", ["a", "wb"], ["y"], name="b", transB=1)]
    model = _model(nodes, {"wa": wa, "wb": wb}, ["N", 2], "y", ["N", 2])
    x = calib(50, (2,))
    a = x @ wa.T
    want = a.var(axis=0) * (wb ** 2).sum(axis=0)
    ctx = pipeline.Pipeline.parse("tag,trees,classify,score{criterion=recon scope=node}").run(
        ir.lower(model), PassContext(calib_data=x))
    from passes.analyses import Scores
    np.testing.assert_allclose(ctx.get(Scores).by_group[0], want, rtol=1e-6)
    tree = pipeline.Pipeline.parse("tag,trees,classify,score{criterion=recon scope=tree}").run(
        ir.lower(model), PassContext(calib_data=x))
    np.testing.assert_allclose(tree.get(Scores).by_group[0], want * np.abs(wb).sum(axis=0), rtol=1e-6)
    assert get_criterion("recon").needs_data


def test_recon_conv_error_uses_the_patch_covariance():
    model, wb = constant_channel_conv(pads=1)
    x = calib(20)
    ctx = pipeline.Pipeline.parse("tag,trees,classify,score{criterion=recon scope=node}").run(
        ir.lower(model), PassContext(calib_data=x))
    from passes.analyses import Scores
    scores = ctx.get(Scores).by_group[0]
    a0 = 2.0 * x[:, 0]
    cols = im2col((a0 - a0.mean())[:, None], (3, 3), (1, 1), (1, 1), [1, 1, 1, 1]).reshape(-1, 9)
    want0 = sum(float(np.mean((cols @ wb[o, 0].reshape(-1)) ** 2)) for o in range(2))
    assert scores[1] == pytest.approx(0.0, abs=1e-9)   # a constant channel: nothing to lose
    assert scores[0] == pytest.approx(want0, rel=1e-4)


def test_cli_recover(tmp_path, capsys):
    import cli

    model, _ = constant_channel_conv()
    path, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "calib.npz", x=calib(40))
    argv = ["prune", str(path), "-o", str(out), "--criterion", "l1", "--scope", "node"]
    assert cli.main(argv + ["--calib", str(tmp_path / "calib.npz"), "--recover"]) == 0
    text = capsys.readouterr().out
    assert "recovery (bias,bn,ls): held-out output error vs original" in text and "on 10 samples" in text
    assert cli.main(argv + ["--recover", "bias,bn,ls"]) == 0
    assert "recovery: not applied (no calibration data" in capsys.readouterr().out
    assert cli.main(argv + ["--calib", str(tmp_path / "calib.npz"), "--recover", "bias,magic"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: pass 'recover': unknown recovery method 'magic'")


def test_recover_leaves_residual_stream_writers_be():
    """A stream group's zeroings (roots, biases, constants written into the stream) are not a
    leaf's input channels: recover says so and compensates only the leaves, after the proof."""
    import stream_models

    x = np.random.default_rng(3).standard_normal((8, 3, 8, 8)).astype(np.float32)
    result = pipeline.prune(stream_models.vit_stream(), ratio=0.5, calib_data=x, recover="bias,bn,ls")
    rep = result.report
    assert rep["verified"] is True and any(g.get("stream") and g.get("pruned") for g in rep["groups"])
    assert rep["recovery"]["applied"] is True
    notes = [n for p in rep["passes"] if p["name"] == "recover" for n in p["notes"]]
    assert any("residual-stream zeroings not compensated" in n for n in notes)
    onnx.checker.check_model(result.model, full_check=True)


def test_pytorch_transformer_mlp_is_recovered_through_its_transposed_weight_and_bias_add(tmp_path):
    """nn.Linear on [N, T, d] exports as MatMul(x, Transpose(W)) and Add(b, ·): the hidden
    channels fc1 loses are folded into fc2's Add and fc2 is refit, with no node added."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc1, self.fc2, self.head = nn.LayerNorm(16), nn.Linear(16, 64), nn.Linear(64, 16), nn.Linear(16, 5)

        def forward(self, x):
            return self.head((x + self.fc2(torch.relu(self.fc1(self.ln(x))))).mean(1))

    path = tmp_path / "mlp.onnx"
    from exporting import export

    export(Mlp().eval(), torch.randn(1, 6, 16), path, input_names=["x"], output_names=["y"],
           dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = onnx.load(str(path))
    x = np.random.default_rng(0).standard_normal((200, 6, 16)).astype(np.float32)
    errors = {}
    for method in ("bias", "bias,bn,ls"):
        rec = pipeline.prune(model, ratio=0.5, calib_data=x, recover=method, stream=0.0)
        r = rec.report["recovery"]
        assert rec.report["verified"] and r["biases_folded"] == 1 and r["consumers_refit"] == (method != "bias")
        assert [n.op_type for n in rec.model.graph.node] == [n.op_type for n in model.graph.node]
        onnx.checker.check_model(rec.model, full_check=True)
        errors[method] = (r["heldout_error_before"], r["heldout_error_after"])
    assert errors["bias,bn,ls"][1] < errors["bias"][1] < errors["bias"][0]
