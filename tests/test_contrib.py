"""ONNX Runtime's fused contrib ops (``passes/contrib.py``): a model saved after ORT's offline
optimization has FusedConv / FusedGemm, which are written back as the standard ops they fuse,
checked in ORT against the model as given, then pruned and proven like any other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import pipeline
from passes import contrib

RNG = np.random.default_rng(0)


def _w(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32) * 0.3, name)


def fused_model(activation: str = "LeakyRelu", params=(0.1,), gemm_activation: str = "Relu") -> onnx.ModelProto:
    """x[N,3,8,8] -> FusedConv(8, act) -> FusedConv(8, Relu, Z = the first) -> pool -> Flatten
    -> FusedGemm(6, act) -> Gemm(4): two groups behind fused nodes, one residual (Z)."""
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    act = dict(activation=activation, **({"activation_params": list(params)} if params else {})) if activation else {}
    nodes = [
        helper.make_node("FusedConv", ["x", "w1", "b1"], ["c1"], "fc1", domain="com.microsoft", **conv, **act),
        helper.make_node("FusedConv", ["c1", "w2", "b2", "c1"], ["c2"], "fc2", domain="com.microsoft", **conv,
                         activation="Relu"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], "pool"),
        helper.make_node("Flatten", ["p"], ["f"], "flat"),
        helper.make_node("FusedGemm", ["f", "w3", "b3"], ["g"], "fg", domain="com.microsoft", transB=1,
                         activation=gemm_activation),
        helper.make_node("Gemm", ["g", "w4", "b4"], ["y"], "head", transB=1),
    ]
    inits = [_w("w1", 8, 3, 3, 3), _w("b1", 8), _w("w2", 8, 8, 3, 3), _w("b2", 8), _w("w3", 6, 8), _w("b3", 6),
             _w("w4", 4, 6), _w("b4", 4)]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("activation, params", [("LeakyRelu", (0.1,)), ("Clip", (-0.5, 0.7)),
                                                ("HardSigmoid", (0.2, 0.5)), ("Tanh", ()), ("", ())])
def test_fused_convs_and_gemms_are_written_as_standard_ops_and_prune(activation, params):
    model = fused_model(activation, params)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    out = contrib.defused(model)
    assert model == before  # the model as given is never changed
    assert not any(n.domain == "com.microsoft" for n in out.graph.node)
    assert {o.domain for o in out.opset_import} == {""}
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    opts = ort.SessionOptions()  # as written (ORT's NCHWc rewrite of a FusedConv whose Z is its X fails)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = [ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for m in (model, out)]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-5, atol=1e-5)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    assert sum(g["channels_after"] < g["channels_before"] for g in result.report["groups"]) >= 2, result.report["groups"]
    assert dict((p.key, p.value) for p in result.model.metadata_props)[contrib.DEFUSED_KEY] == "FusedConv:2,FusedGemm:1"
    assert not any(n.domain == "com.microsoft" for n in result.model.graph.node)


def test_an_activation_it_does_not_know_leaves_the_model_as_given():
    model = fused_model(gemm_activation="Softplus")  # not one of ORT's fused activations here
    assert contrib.defused(model) is model
    result = pipeline.prune(model, ratio=0.5)  # the fused nodes stay barriers: nothing behind them pruned
    assert result.report["verified"]
    assert any(n.domain == "com.microsoft" for n in result.model.graph.node)


def test_a_defusing_that_computes_something_else_is_not_used(monkeypatch):
    """The rewrite is checked in ONNX Runtime: a wrong one (here: the Z input dropped) keeps the
    model as given."""
    real = contrib._standard

    def wrong(node, opset, taken, initializers):
        if len(node.input) > 3:
            node = onnx.NodeProto(); node.CopyFrom(wrong.node); del node.input[3:]  # noqa: E702
        return real(node, opset, taken, initializers)

    model = fused_model()
    wrong.node = next(n for n in model.graph.node if n.name == "fc2")
    monkeypatch.setattr(contrib, "_standard", lambda node, *a: wrong(node, *a) if node.name == "fc2" else real(node, *a))
    assert contrib.defused(model) is model


def test_a_model_ort_saved_at_the_extended_level_prunes_with_a_note(tmp_path):
    """The real source: ONNX Runtime's own offline optimization fuses Conv + Relu into FusedConv."""
    model = fused_model()
    plain = contrib.defused(model)
    del plain.metadata_props[:]
    src = tmp_path / "plain.onnx"
    onnx.save(plain, str(src))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert any(n.op_type == "FusedConv" for n in optimized.graph.node)
    exe = Path(sys.executable).parent / "onnxpruner"
    run = subprocess.run([str(exe), "prune", str(tmp_path / "optimized.onnx"), "-o", str(tmp_path / "out.onnx"),
                          "--ratio", "0.5", "--no-latency"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "note: ONNX Runtime's fused ops written as the standard ops they fuse (FusedConv x" in run.stdout + run.stderr
    assert "verified True" in run.stdout
    assert not any(n.domain == "com.microsoft" for n in onnx.load(str(tmp_path / "out.onnx")).graph.node)
