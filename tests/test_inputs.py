"""Any ONNX file a user brings (issue 10): old-style graphs whose initializers are graph inputs,
proof inputs under the user's control, the input's faults blamed on the input, outputs of any
ONNX type, and the up-front checks."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import models
import cli
import pipeline


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# ----------------------------------------------------------------------------- old-style graphs
@pytest.mark.parametrize("factory", [models.caffe_style_wide, models.caffe_style_opset9])
def test_old_style_result_lists_every_initializer_once_under_its_final_name(factory):
    model = factory()
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    listed = collections.Counter(i.name for i in result.model.graph.input)
    assert max(listed.values()) == 1
    inits = {t.name for t in result.model.graph.initializer}
    assert inits <= set(listed)                       # the input's style: every weight listed
    assert set(listed) - inits == {"data"}
    onnx.checker.check_model(result.model, full_check=True)
    assert result.report["params_after"] < result.report["params_before"]


def test_old_style_keeps_names_of_weights_used_once():
    result = pipeline.prune(models.caffe_style_wide(), ratio=0.5)
    names = [i.name for i in result.model.graph.input]
    # every weight keeps its name; the one two convs share is cut once for both (trees.tied
    # couples their channels), not copied under a new name
    assert [n for n in names if "." in n] == []
    assert names[:4] == ["data", "w1", "b2", "w7"]
    assert [n.input[1] for n in result.model.graph.node if n.op_type == "Conv"].count("w7") == 2


def test_new_style_export_with_initializers_as_inputs_keeps_that_style():
    model = models.caffe_style_wide()
    model.ir_version = 8
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    listed = collections.Counter(i.name for i in result.model.graph.input)
    assert max(listed.values()) == 1
    assert {t.name for t in result.model.graph.initializer} <= set(listed)


def test_old_style_with_planted_dead_channels_prunes_them_and_keeps_the_output():
    model = models.caffe_style_wide()
    half = range(0, 32, 2)
    planted = models.plant_dead_channels(model, "Conv4", half)
    planted = models.plant_dead_channels(planted, "Conv9", half)      # the shared weight: Conv13 too
    planted = models.plant_dead_channels(planted, "Conv19", half)
    planted = models.plant_dead_channels(planted, "Conv27", range(8))
    result = pipeline.prune(planted, ratio=0.5)
    assert result.report["verified"]
    kept = {g["roots"][0]: g.get("kept") for g in result.report["groups"]}
    assert kept["Conv4"] == list(range(1, 32, 2))
    assert kept["Conv27"] == list(range(8, 16))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want, = _run(planted, {"data": x})
    got, = _run(result.model, {"data": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- proof inputs
def test_defaults_share_one_value_per_dim_name_and_integers_are_zeros():
    from passes.inputs import make_inputs

    proof = make_inputs(models.stateful_scalar(), seed=0)
    assert proof.feeds["x"].shape == (2, 8)
    assert proof.feeds["h"].shape == (1, 2, 16)          # 'batch' at position 1 is x's batch
    assert proof.feeds["sr"].dtype == np.int64 and proof.feeds["sr"].shape == () and proof.feeds["sr"] == 0
    proof = make_inputs(models.stateful_scalar(), seed=0, shapes={"h": [1, 5, 16]})
    assert proof.feeds["x"].shape == (5, 8)              # a shape given for one input fixes the name


def test_a_model_ort_rejects_on_defaults_is_named_before_any_pass_with_the_hint():
    with pytest.raises(pipeline.PassError) as info:
        pipeline.prune(models.stateful_scalar(), ratio=0.5)
    msg = str(info.value)
    assert "\n" not in msg and "sr int64[] zeros" in msg and "--inputs" in msg
    assert "pass '" not in msg                           # up front, not from inside a pass


def test_sample_inputs_given_for_some_inputs_prove_a_stateful_model():
    result = pipeline.prune(models.stateful_scalar(), ratio=0.5, sample_inputs={"sr": np.array(8, np.int64)})
    assert result.report["verified"]
    assert result.report["inputs"] == {
        "x": {"shape": [2, 8], "dtype": "float32", "from": "default"},
        "h": {"shape": [1, 2, 16], "dtype": "float32", "from": "default"},
        "sr": {"shape": [], "dtype": "int64", "from": "given"}}
    assert any(g["pruned"] for g in result.report["groups"])
    feeds = {"x": np.ones((3, 8), np.float32), "h": np.zeros((1, 3, 16), np.float32), "sr": np.array(8, np.int64)}
    got = _run(result.model, feeds)
    want = _run(models.stateful_scalar(), feeds)
    assert [g.shape for g in got] == [w.shape for w in want]


def test_input_shapes_fix_symbolic_dims_a_model_runs_only_at():
    with pytest.raises(pipeline.PassError, match="symbolic sizes tried: 16, 32"):
        pipeline.prune(models.fixed_size_symbolic(), ratio=0.5)
    result = pipeline.prune(models.fixed_size_symbolic(), ratio=0.5, input_shapes={"x": [1, 3, 8, 8]})
    assert result.report["verified"]
    assert result.report["inputs"]["x"] == {"shape": [1, 3, 8, 8], "dtype": "float32", "from": "input-shape"}
    x_dims = [d.dim_param or d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim]
    assert x_dims == ["N", 3, "H", "W"]                  # the model's own declaration is kept


@pytest.mark.parametrize("given, shapes, words", [
    ({"nope": np.zeros(1, np.float32)}, None, ["'nope'", "its inputs: x, h, sr"]),
    ({"sr": np.array(8, np.int32)}, None, ["'sr'", "int32", "int64"]),
    ({"x": np.zeros((2, 8, 1), np.float32)}, None, ["'x'", "rank 3"]),
    ({"x": np.zeros((2, 7), np.float32)}, None, ["'x'", "[2, 7]"]),
    (None, {"h": [1, 2]}, ["'h'", "rank 2"]),
    (None, {"bad": [1]}, ["'bad'"]),
])
def test_given_inputs_that_do_not_fit_are_one_line_naming_the_input(given, shapes, words):
    with pytest.raises(pipeline.PassError) as info:
        pipeline.prune(models.stateful_scalar(), ratio=0.5, sample_inputs=given, input_shapes=shapes)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_inspect_takes_the_same_inputs_and_reports_them():
    info = pipeline.inspect(models.fixed_size_symbolic(), input_shapes={"x": [1, 3, 8, 8]})
    assert info["inputs"]["x"]["shape"] == [1, 3, 8, 8]


# ----------------------------------------------------------------------------- the input's faults
def _with_bad_value_info() -> onnx.ModelProto:
    model = models.chain()
    outs = [n.output[0] for n in model.graph.node]
    model.graph.value_info.append(onnx.ValueInfoProto(name=outs[1]))                   # no type
    for name, c in ((outs[2], 8), (outs[3], 6)):  # NHWC dims written on NCHW tensors, as jax2onnx does
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 8, 8, c]))
    return model


def test_stale_and_untyped_value_info_of_the_input_is_recomputed_not_carried():
    model = _with_bad_value_info()
    onnx.checker.check_model(model)                     # the plain check passes, the full one does not
    with pytest.raises(Exception):
        onnx.checker.check_model(model, full_check=True)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    onnx.checker.check_model(result.model, full_check=True)
    assert all(vi.HasField("type") for vi in result.model.graph.value_info)


def test_an_input_failing_the_checker_is_named_as_the_input_with_the_node():
    model = models.chain()
    model.graph.node[1].attribute.append(onnx.helper.make_attribute("bogus", 3))
    with pytest.raises(pipeline.ir.ModelLoadError) as info:
        pipeline.prune(model, ratio=0.5)
    msg = str(info.value)
    assert "the input fails onnx.checker" in msg and repr(model.graph.node[1].name) in msg and "\n" not in msg


# ----------------------------------------------------------------------------- outputs of any type
def test_ai_onnx_ml_scaler_keeps_shapes_flowing_to_the_mlp_behind_it():
    model = models.scaler_mlp()
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    groups = result.report["groups"]
    assert [g["channels_after"] for g in groups if g["pruned"]] == [8, 6]
    info = pipeline.inspect(model)
    assert len(info["groups"]) == 3
    assert any(b["op"] == "Scaler" and b["reason"] for b in info["barriers"])


def test_a_zipmap_output_sequence_of_maps_is_compared_element_by_element():
    model = models.scaler_mlp(zipmap=True)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] and any(g["pruned"] for g in result.report["groups"])
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    label, maps = _run(result.model, {"X": x})
    assert len(maps) == 4 and sorted(maps[0]) == [0, 1, 2]


def test_a_zipmap_that_differs_fails_the_proof():
    from passes.validate import EquivalenceError, ValidatePass

    check = ValidatePass()
    want = [{0: 0.5, 1: 0.5}, {0: 0.25, 1: 0.75}]
    assert check._compare("'z'", [dict(m) for m in want], want) == 0.0
    with pytest.raises(EquivalenceError, match=r"'z'\[1\]\[1\]"):
        check._compare("'z'", [{0: 0.5, 1: 0.5}, {0: 0.25, 1: 0.5}], want)
    with pytest.raises(EquivalenceError, match="elements"):
        check._compare("'z'", want[:1], want)


@pytest.mark.parametrize("factory", [models.chain, models.scaler_mlp, models.caffe_style_opset9,
                                     models.barrier, models.stateful_scalar])
def test_every_group_left_whole_has_a_reason_in_report_and_inspect(factory):
    model = factory()
    given = {"sr": np.array(8, np.int64)} if factory is models.stateful_scalar else None
    result = pipeline.prune(model, ratio=0.5, sample_inputs=given)
    for g in result.report["groups"]:
        assert g["pruned"] or g.get("reason")
    for g in pipeline.inspect(model)["groups"]:
        assert g.get("reason") is None or g["reason"].strip()


# ----------------------------------------------------------------------------- up-front checks
def _opset(version: int, ir_version: int = 8) -> onnx.ModelProto:
    model = models.chain()
    model.opset_import[0].version = version
    model.ir_version = ir_version
    return model


@pytest.mark.parametrize("model, words", [
    (_opset(29, 10), ["opset 29", "7..21", "22..28"]),  # 22..28 are converted down (tests/test_newer_opsets.py)
    (_opset(6), ["opset 6", "7..21"]),
    (_opset(17, 15), ["IR version 15", "<= 10", "11..14"]),
])
def test_models_the_runtime_cannot_load_are_refused_before_any_pass(model, words):
    from passes.support import UnsupportedModelError

    with pytest.raises(UnsupportedModelError) as info:
        pipeline.prune(model, ratio=0.5)
    for w in words:
        assert w in str(info.value)
    with pytest.raises(UnsupportedModelError):
        pipeline.inspect(model)


def test_a_custom_op_without_a_runtime_kernel_is_refused_when_the_model_must_run():
    from passes.support import UnsupportedModelError

    model = models.barrier()
    node = next(n for n in model.graph.node if n.domain == "com.microsoft")
    node.domain = "com.acme"
    model.opset_import.append(onnx.helper.make_opsetid("com.acme", 1))
    with pytest.raises(UnsupportedModelError, match=rf"'{node.name}' is op com.acme.{node.op_type}.*7..21"):
        pipeline.prune(model, ratio=0.5)
    assert pipeline.inspect(model)["barriers"]                  # analysing it needs no runtime
    result = pipeline.prune(model, ratio=0.5, passes="tag,trees,classify,score,mask,slice,infer-shapes,validate{ort=false}")
    assert result.report["params_after"] < result.report["params_before"]


# ----------------------------------------------------------------------------- the command line
def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, *words: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def stateful_file(tmp_path):
    path = tmp_path / "vad.onnx"
    onnx.save(models.stateful_scalar(), str(path))
    return path


def test_cli_prune_with_inputs_npz_proves_a_stateful_model(tmp_path, stateful_file, capsys):
    np.savez(tmp_path / "in.npz", sr=np.array(8, np.int64), h=np.zeros((1, 3, 16), np.float32))
    out = tmp_path / "out.onnx"
    code, stdout, err = _main(capsys, "prune", stateful_file, "-o", out, "--ratio", "0.3",
                              "--inputs", tmp_path / "in.npz", "--report", tmp_path / "r.json")
    assert code == 0, err
    assert "verified True" in stdout
    import json
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["inputs"]["x"]["shape"] == [3, 8] and report["inputs"]["h"]["from"] == "given"


def test_cli_prune_without_the_inputs_it_needs_is_one_line_and_writes_nothing(tmp_path, stateful_file, capsys):
    out = tmp_path / "out.onnx"
    code, _, err = _main(capsys, "prune", stateful_file, "-o", out)
    assert code == 1 and not out.exists()
    _one_error_line(err, "sr int64[] zeros", "--inputs")


@pytest.mark.parametrize("arrays, words", [
    ({"sr": np.array(8, np.int64), "state": np.zeros(3, np.float32)}, ["'state'", "its inputs"]),
    ({"sr": np.array(8.0, np.float32)}, ["'sr'", "float32", "int64"]),
    ({"sr": np.array(8, np.int64), "x": np.zeros((2, 8, 1), np.float32)}, ["'x'", "rank 3"]),
])
def test_cli_inputs_that_do_not_fit_are_one_line(tmp_path, stateful_file, capsys, arrays, words):
    np.savez(tmp_path / "in.npz", **arrays)
    code, _, err = _main(capsys, "prune", stateful_file, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "in.npz")
    assert code == 1
    _one_error_line(err, *words)


def test_cli_inputs_file_missing_or_pickled_is_one_line(tmp_path, stateful_file, capsys):
    code, _, err = _main(capsys, "prune", stateful_file, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "no.npz")
    assert code == 1
    _one_error_line(err, "no.npz")
    np.savez(tmp_path / "obj.npz", sr=np.array([{"a": 1}], dtype=object))
    code, _, err = _main(capsys, "prune", stateful_file, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "obj.npz")
    assert code == 1
    _one_error_line(err, "obj.npz")


@pytest.mark.parametrize("command", ["prune", "inspect"])
def test_cli_input_shape_fixes_symbolic_dims(tmp_path, capsys, command):
    path = tmp_path / "fixed.onnx"
    onnx.save(models.fixed_size_symbolic(), str(path))
    extra = ["-o", tmp_path / "o.onnx"] if command == "prune" else ["--json"]
    code, out, err = _main(capsys, command, path, *extra, "--input-shape", "x:1,3,8,8")
    assert code == 0, err
    if command == "inspect":
        import json
        assert json.loads(out)["inputs"]["x"]["shape"] == [1, 3, 8, 8]


@pytest.mark.parametrize("text", ["x", "x:1,a", ":1,2", "x:-1"])
def test_cli_malformed_input_shape_is_a_usage_error(tmp_path, stateful_file, capsys, text):
    code, _, err = _main(capsys, "prune", stateful_file, "-o", tmp_path / "o.onnx", "--input-shape", text)
    assert code == 2
    _one_error_line(err, "--input-shape")


def test_batch_plan_gives_inputs_per_model(tmp_path, stateful_file, capsys):
    import json

    np.savez(tmp_path / "vad.npz", sr=np.array(8, np.int64))
    fixed = tmp_path / "fixed.onnx"
    onnx.save(models.fixed_size_symbolic(), str(fixed))
    plan = {"models": [{"path": "vad.onnx", "inputs": "vad.npz"},
                       {"path": "fixed.onnx", "input_shape": ["x:1,3,8,8"]},
                       {"path": "vad.onnx", "name": "bare"}],
            "variants": [{"name": "r30", "ratio": 0.3}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    code, out, err = _main(capsys, "batch", "--plan", tmp_path / "plan.json", "-o", tmp_path / "out")
    assert code == 1                                     # the model given no inputs fails, alone
    rows = {r["model"]: r for r in __import__("csv").DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert rows["vad"]["verified"] == "True" and rows["fixed"]["verified"] == "True"
    assert "--inputs" in rows["bare"]["error"]


@pytest.mark.parametrize("command", ["sensitivity", "schedule"])
def test_sensitivity_and_schedule_take_the_same_words(tmp_path, capsys, command):
    path = tmp_path / "fixed.onnx"
    onnx.save(models.fixed_size_symbolic(), str(path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((8, 3, 8, 8)).astype(np.float32),
             y=rng.integers(0, 4, 8).astype(np.int64))
    if command == "sensitivity":
        argv = ["sensitivity", path, "--val", tmp_path / "val.npz", "--steps", "0.5"]
    else:
        argv = ["schedule", path, "-o", tmp_path / "o.onnx", "--data", tmp_path / "val.npz",
                "--steps", "1", "--epochs", "1", "--ratio", "0.5"]
    code, _, err = _main(capsys, *argv)
    assert code == 1
    _one_error_line(err, "--input-shape")
    code, _, err = _main(capsys, *argv, "--input-shape", "x:1,3,8,8")
    assert code == 0, err


def test_data_criteria_feed_the_other_inputs_sized_to_each_calibration_batch():
    from passes import criteria
    from passes.base import PassContext
    from passes.inputs import make_inputs

    model = models.stateful_scalar()
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    result = pipeline.prune(model, ratio=0.5, criterion="hrank", calib_data=x,
                            sample_inputs={"sr": np.array(8, np.int64)})
    assert result.report["verified"]
    assert [len(g["kept"]) for g in result.report["groups"] if g.get("pruned")] == [6]
    graph = pipeline.ir.lower(model)
    ctx = PassContext(seed=0, inputs=make_inputs(model, 0, {"sr": np.array(8, np.int64)}), calib_data=x)
    calib = criteria.calib_batches(ctx, "hrank")
    maps = next(criteria.feature_maps(graph, ["relu_25"], calib))
    assert maps["relu_25"].shape == (20, 12)            # h was made [1, 20, 16] for this batch


def test_an_op_the_runtime_does_not_know_in_its_own_domain_is_a_load_error_not_an_inputs_one():
    model = models.barrier()
    next(n for n in model.graph.node if n.domain == "com.microsoft").op_type = "NoSuchOp"
    with pytest.raises((pipeline.PassError, pipeline.PipelineError)) as info:
        pipeline.prune(model, ratio=0.5)
    msg = str(info.value)
    assert "cannot load" in msg and "com.microsoft:NoSuchOp" in msg and "--inputs" not in msg


def test_the_model_before_pruning_is_one_session_for_the_probe_and_the_proof(monkeypatch):
    """The input probe runs the model before pruning as validate runs its masked form (weights
    fed): the probe's sizes and the proof's masked run share one ONNX Runtime session, and none is
    kept once ``prune`` returns."""
    from passes import runtime

    made, runs = [], []
    real = runtime._run_session

    def counted(model, quiet, consume):
        made.append(model.SerializeToString())
        session = real(model, quiet, consume)
        return collections.namedtuple("S", "run")(lambda *a: runs.append(made[-1]) or session.run(*a))

    b = models.Builder(17, name="sized")  # x[N, 3, H, W] that runs at 16×16 only: the probe finds it
    c = b.relu(b.conv(b.relu(b.conv(b.input("x", ["N", 3, "H", "W"]), 3, 8)), 8, 8))
    model = b.build([b.gemm(b.op("Flatten", [c], axis=1), 8 * 16 * 16, 4)], shapes={})
    monkeypatch.setattr(runtime, "_run_session", counted)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] and result.report["inputs"]["x"]["shape"] == [2, 3, 16, 16]
    assert len(made) == len(set(made)), "a model was made into a session twice"
    assert max(collections.Counter(runs).values()) >= 2  # the probe's run, then the masked original's
    assert runtime._reused()["sessions"] == {}


def test_an_attention_mask_is_guessed_as_ones_other_integers_as_zeros():
    """Hugging Face's attention_mask (1: attend) gets ones: zeros would mask every token, and a mean
    pooling over that mask gives zeros everywhere, which the proof cannot read. Other integer inputs
    (token ids, a key_padding_mask, where 1 means padding) keep zeros."""
    from onnx import TensorProto, helper

    from passes.inputs import attends, make_inputs

    names = ("input_ids", "attention_mask", "token_type_ids", "key_padding_mask", "encoder/attention_mask")
    graph = helper.make_graph([helper.make_node("Identity", [n], [n + "_out"]) for n in names], "g",
                              [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in names],
                              [helper.make_tensor_value_info(n + "_out", TensorProto.INT64, ["batch", "seq"])
                               for n in names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proof = make_inputs(model)
    assert {n: int(proof.feeds[n].min()) for n in names} == {
        "input_ids": 0, "attention_mask": 1, "token_type_ids": 0, "key_padding_mask": 0, "encoder/attention_mask": 1}
    assert "attention_mask int64[2,16] ones" in proof.describe() and "input_ids int64[2,16] zeros" in proof.describe()
    assert not attends("attention_mask_scale") and attends("input_mask")
