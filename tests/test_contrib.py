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


def fused_model(activation: str = "LeakyRelu", params=(0.1,), gemm_activation: str = "Relu",
                width: int = 8) -> onnx.ModelProto:
    """x[N,3,8,8] -> FusedConv(width, act) -> FusedConv(width, Relu, Z = the first) -> pool ->
    Flatten -> FusedGemm(6, act) -> Gemm(4): two groups behind fused nodes, one residual (Z)."""
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
    inits = [_w("w1", width, 3, 3, 3), _w("b1", width), _w("w2", width, width, 3, 3), _w("b2", width),
             _w("w3", 6, width), _w("b3", 6), _w("w4", 4, 6), _w("b4", 4)]
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


def test_a_node_with_an_activation_it_does_not_know_stays_as_it_is():
    model = fused_model(gemm_activation="Softplus")  # not one of ORT's fused activations here
    out = contrib.defused(model)
    assert [n.op_type for n in out.graph.node if n.domain == "com.microsoft"] == ["FusedGemm"]
    assert {o.domain for o in out.opset_import} == {"", "com.microsoft"}
    result = pipeline.prune(model, ratio=0.5)  # the FusedGemm stays a barrier; the convolutions prune
    assert result.report["verified"]
    assert dict((p.key, p.value) for p in result.model.metadata_props)[contrib.DEFUSED_KEY] == "FusedConv:2"


def test_a_defusing_that_computes_something_else_is_not_used(monkeypatch):
    """The rewrite is checked in ONNX Runtime: a wrong one (here: a FusedConv's Z input dropped)
    keeps the model as given."""
    real = contrib._standard

    def wrong(node, *args):
        if node.op_type == "FusedConv" and len(node.input) > 3:
            node = onnx.NodeProto()
            node.CopyFrom(wrong.node)
            del node.input[3:]
        return real(node, *args)

    model = fused_model()
    wrong.node = next(n for n in model.graph.node if n.name == "fc2")
    monkeypatch.setattr(contrib, "_standard", wrong)
    assert contrib.defused(model) is model


def test_a_model_ort_saved_at_the_extended_level_prunes_with_a_note(tmp_path):
    """The real source: ONNX Runtime's own offline optimization fuses Conv + Relu into FusedConv
    (16 wide: a weight over 1,024 elements, which the command reads apart and the check feeds)."""
    model = fused_model(width=16)
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


def encoder_mlps(opset: int = 17, sum_output: bool = False) -> onnx.ModelProto:
    """What ONNX Runtime's transformer optimizer writes into an encoder: x[B,S,8] -> MatMul ->
    BiasGelu -> MatMul -> SkipLayerNormalization(skip = x, bias), then MLPs through FastGelu (with
    bias), QuickGelu and com.microsoft's Gelu; inner widths 16, 12, 10."""
    ms = "com.microsoft"
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], "mm1"),
             helper.make_node("BiasGelu", ["h1", "b1"], ["g1"], "bg", domain=ms),
             helper.make_node("MatMul", ["g1", "w2"], ["h2"], "mm2"),
             helper.make_node("SkipLayerNormalization", ["h2", "x", "gamma", "beta", "b2"],
                              ["s", "", "", "sum"] if sum_output else ["s"], "sln", domain=ms, epsilon=1e-5),
             helper.make_node("MatMul", ["s", "w3"], ["h3"], "mm3"),
             helper.make_node("FastGelu", ["h3", "b3"], ["g3"], "fg", domain=ms),
             helper.make_node("MatMul", ["g3", "w4"], ["h4"], "mm4"),
             helper.make_node("QuickGelu", ["h4"], ["q4"], "qg", domain=ms, alpha=1.5),
             helper.make_node("MatMul", ["q4", "w5"], ["h5"], "mm5"),
             helper.make_node("Gelu", ["h5"], ["g5"], "ge", domain=ms),
             helper.make_node("MatMul", ["g5", "w6"], ["y"], "mm6")]
    inits = [_w("w1", 8, 16), _w("b1", 16), _w("w2", 16, 8), _w("gamma", 8), _w("beta", 8), _w("b2", 8),
             _w("w3", 8, 12), _w("b3", 12), _w("w4", 12, 8), _w("w5", 8, 10), _w("w6", 10, 4)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 4])]
    if sum_output:
        outputs.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["B", "S", 8]))
    graph = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 8])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ms, 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("sum_output", [False, True])
def test_an_encoders_fused_gelus_and_skip_layernorm_are_written_as_standard_ops_and_prune(sum_output):
    model = encoder_mlps(sum_output=sum_output)
    out = contrib.defused(model)
    assert not any(n.domain == "com.microsoft" for n in out.graph.node)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    widths = {g["channels_before"]: g["channels_after"] for g in result.report["groups"]}
    assert widths[16] < 16 and widths[12] < 12 and widths[10] < 10, widths
    assert dict((p.key, p.value) for p in result.model.metadata_props)[contrib.DEFUSED_KEY] == \
        "BiasGelu:1,FastGelu:1,Gelu:1,QuickGelu:1,SkipLayerNormalization:1"


def test_skip_layernorm_below_opset_17_stays_as_it_is():
    out = contrib.defused(encoder_mlps(opset=16))  # no LayerNormalization to write it with
    assert [n.op_type for n in out.graph.node if n.domain == "com.microsoft"] == ["SkipLayerNormalization"]


@pytest.mark.parametrize("attrs", [dict(alpha=0.5, transB=1), dict(transA=1), dict(), dict(transBatchB=1)])
def test_fused_matmul_is_a_matmul_of_the_transposed_operands_scaled(attrs):
    """``FusedMatMul`` (ORT's MatMul + Transpose / scale fusion): ``alpha · A' @ B'``; a batch
    transpose is not written (the node stays)."""
    ms = "com.microsoft"
    a_shape = [2, 8, 5] if attrs.get("transA") else [2, 5, 8]
    w = RNG.standard_normal((6, 8) if attrs.get("transB") else (8, 6)).astype(np.float32)
    nodes = [helper.make_node("FusedMatMul", ["x", "w"], ["h"], "fm", domain=ms, **attrs),
             helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], "head")]
    graph = helper.make_graph(nodes, "fm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, a_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 3])],
                              [numpy_helper.from_array(w, "w"), _w("w2", 6, 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    model.ir_version = 8
    out = contrib.defused(model)
    if attrs.get("transBatchB"):
        assert out is model
        return
    assert not any(n.domain == ms for n in out.graph.node)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] and result.report["groups"][0]["channels_after"] < 6


@pytest.mark.parametrize("skip", [False, True])
def test_rms_norms_ort_writes_are_written_as_standard_ops(skip):
    """T5's and Llama's RMS norm as ORT's optimizer writes it: ``SimplifiedLayerNormalization`` in
    the default domain (onnx.checker knows no such op: the file was refused as invalid), with an
    unread ``saved_inv_std_var`` output; ``SkipSimplifiedLayerNormalization`` adds the residual."""
    ms = "com.microsoft"
    norm = (helper.make_node("SkipSimplifiedLayerNormalization", ["h", "x", "scale"], ["n"], "sn", domain=ms,
                             epsilon=1e-6) if skip else
            helper.make_node("SimplifiedLayerNormalization", ["h", "scale"], ["n", "saved_inv_std_var"], "sn",
                             axis=-1, epsilon=1e-6, stash_type=1))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], "mm1"), norm,
             helper.make_node("MatMul", ["n", "w2"], ["m"], "mm2"), helper.make_node("Relu", ["m"], ["r"], "relu"),
             helper.make_node("MatMul", ["r", "w3"], ["y"], "mm3")]
    graph = helper.make_graph(nodes, "rms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 5, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 5, 3])],
                              [_w("w1", 8, 8), _w("scale", 8), _w("w2", 8, 12), _w("w3", 12, 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    model.ir_version = 8
    out = contrib.defused(model)
    assert not any("Simplified" in n.op_type for n in out.graph.node)
    onnx.checker.check_model(out)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    assert {g["channels_before"]: g["channels_after"] for g in result.report["groups"]}[12] < 12
