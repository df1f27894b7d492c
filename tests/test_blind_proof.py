"""A proof on inputs that make an output NaN or infinite everywhere compares nothing of it.

swift-f0's pitch estimator (tests/test_corpus.py ``TRAINED``) takes scalar ``fmin`` / ``fmax``;
guessed as seeded normals they were negative, its ``pitch`` output was NaN everywhere and its
``confidence`` 0 (masked by that NaN), and the pruned model shipped as "verified True (max abs
diff 0.0)": the mask-equivalence check had compared no value the pruned channels reach. Now the
run stops with one line naming the output and the inputs, and the hint to pass ``--inputs``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import cli
import pipeline
from passes.inputs import InputsError


def _scaled_by_sqrt() -> onnx.ModelProto:
    """x[1, 4, 8] -> Conv1d 4->8 -> Relu -> Conv1d 8->3 -> Mul(Sqrt(s)) -> y; ``s`` a scalar input
    (a negative ``s`` makes ``y`` NaN everywhere)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 4, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((3, 8, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c"], name="conv2"),
             helper.make_node("Sqrt", ["s"], ["g"], name="sqrt"),
             helper.make_node("Mul", ["c", "g"], ["y"], name="scale")]
    graph = helper.make_graph(nodes, "blind", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, 8]),
                                               helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _feeds(s: float) -> dict:
    return {"x": np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32), "s": np.array(s, np.float32)}


def test_an_output_nan_everywhere_on_the_proof_inputs_is_not_verified():
    with pytest.raises(pipeline.PipelineError) as info:
        pipeline.prune(_scaled_by_sqrt(), ratio=0.5, sample_inputs=_feeds(-1.0))
    assert isinstance(info.value.__cause__, InputsError), repr(info.value)
    text = str(info.value.__cause__)
    assert "output 'y'" in text and "NaN or infinite everywhere" in text and "--inputs" in text, text
    assert "x float32[1,4,8], s float32[]" in text, text


def test_the_same_model_on_inputs_with_finite_outputs_is_pruned_and_proven():
    result = pipeline.prune(_scaled_by_sqrt(), ratio=0.5, sample_inputs=_feeds(2.0))
    assert result.report["verified"] is True
    assert result.report["params_after"] < result.report["params_before"]


def test_nothing_cut_needs_no_proof_and_is_not_refused():
    result = pipeline.prune(_scaled_by_sqrt(), ratio=0.0, sample_inputs=_feeds(-1.0))
    assert result.report["params_after"] == result.report["params_before"]


def test_command_line_says_so_in_one_line_and_writes_nothing(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(_scaled_by_sqrt(), str(model))
    before = model.read_bytes()
    np.savez(tmp_path / "in.npz", **_feeds(-1.0))
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(model), "-o", str(out), "--ratio", "0.5", "--inputs", str(tmp_path / "in.npz")])
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 1 and not out.exists() and model.read_bytes() == before
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    assert "m.onnx" in lines[0] and "output 'y'" in lines[0] and "--inputs" in lines[0], lines[0]
    np.savez(tmp_path / "in.npz", **_feeds(2.0))
    assert cli.main(["prune", str(model), "-o", str(out), "--ratio", "0.5", "--inputs", str(tmp_path / "in.npz")]) == 0
    assert "verified True" in capsys.readouterr().out and out.exists()


def test_an_output_no_cut_channel_reaches_may_be_infinite_everywhere():
    """Only outputs downstream of a cut count: a mask output of -inf everywhere beside them is no
    reason to refuse (it is compared as it is: the same infinities in both)."""
    model = _scaled_by_sqrt()
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    model.graph.initializer.append(zero)
    model.graph.node.extend([helper.make_node("Mul", ["s", "zero"], ["s0"], name="zeroed"),
                             helper.make_node("Log", ["s0"], ["mask"], name="log")])
    model.graph.output.append(helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, []))
    result = pipeline.prune(model, ratio=0.5, sample_inputs=_feeds(2.0))
    assert result.report["verified"] is True
    assert result.report["params_after"] < result.report["params_before"]


def _saturated(shift: float) -> onnx.ModelProto:
    """``_scaled_by_sqrt`` with ``y`` = Sigmoid(conv2 + shift): a shift of -200 underflows it to
    0 everywhere (any logits below about -88 give the same 0)."""
    model = _scaled_by_sqrt()
    model.graph.initializer.append(numpy_helper.from_array(np.array(shift, np.float32), "shift"))
    model.graph.node.extend([helper.make_node("Add", ["y", "shift"], ["z"], name="shifted"),
                             helper.make_node("Sigmoid", ["z"], ["p"], name="sigmoid")])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, [1, 3, 8]))
    return model


def test_an_output_one_value_everywhere_on_the_proof_inputs_is_not_verified():
    """PP-OCRv4's text detector (npm, tests/test_corpus.py) on random images: its Sigmoid is 0
    everywhere in the masked original and the result, and "verified True (max abs diff 0.0)"
    proved nothing about the channels cut before it."""
    with pytest.raises(pipeline.PipelineError) as info:
        pipeline.prune(_saturated(-200.0), ratio=0.5, sample_inputs=_feeds(2.0))
    assert isinstance(info.value.__cause__, InputsError), repr(info.value)
    text = str(info.value.__cause__)
    assert "output 'p'" in text and "the same value (0) everywhere" in text and "--inputs" in text, text
    result = pipeline.prune(_saturated(0.0), ratio=0.5, sample_inputs=_feeds(2.0))
    assert result.report["verified"] is True
    assert result.report["params_after"] < result.report["params_before"]
