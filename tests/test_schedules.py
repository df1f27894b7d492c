"""Schedules: iterative prune -> fine-tune (ratios by hand, channel counts, FLOPs target per step)
and soft filter pruning (zeroed filters each epoch, exactly those removed at the end), API and CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest

import cli
import models
import pipeline
from workflows import schedules
from passes.finetune import TrainConfig

N_CLASSES = 3


def classifier(width: int = 6) -> onnx.ModelProto:
    b = models.Builder(5, name="sched")
    x = b.input("x", [1, 2, 4, 4])
    y = b.relu(b.conv(x, 2, width))
    y = b.relu(b.conv(y, width, width))
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    return b.build([b.gemm(y, width, N_CLASSES)])


def test_cumulative_schedules_by_hand():
    assert schedules.cumulative(0.5, 2, "linear") == [0.25, 0.5]
    assert schedules.cumulative(0.5, 2, "agp") == [0.5 * (1 - 0.5 ** 3), 0.5]
    steps = schedules.step_ratios([0.25, 0.5])
    assert steps == pytest.approx([0.25, 1 / 3])
    assert np.prod([1 - r for r in steps]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        schedules.cumulative(0.5, 0, "linear")
    with pytest.raises(ValueError):
        schedules.cumulative(0.5, 2, "cubic")


def test_iterative_prunes_and_fine_tunes_each_step():
    model = classifier()
    result = schedules.iterative_prune(model, models.channel_task(96, 0), models.channel_task(48, 1),
                                       ratio=0.5, steps=2, config=TrainConfig(epochs=1, batch_size=32),
                                       stream=io.StringIO())
    assert [row["step"] for row in result.history] == [1, 2]
    assert result.report["verified"]
    # 6 channels: step 1 at 0.25 removes floor(1.5) = 1 -> 5; step 2 at 1/3 removes floor(5/3) = 1 -> 4
    kept = [g["channels_after"] for g in result.report["groups"] if g.get("pruned")]
    assert kept == [4, 4]
    convs = [t for t in result.model.graph.initializer if len(t.dims) == 4]
    assert [t.dims[0] for t in convs] == [4, 4]
    assert result.history[-1]["val_acc"] is not None
    assert result.report["params_before"] == pipeline.prune(model, ratio=0.0).report["params_before"]


def test_iterative_flops_target_is_met_against_the_original():
    model = classifier(width=16)
    result = schedules.iterative_prune(model, models.channel_task(64, 0), None, steps=2, schedule="agp",
                                       target_flops=0.5, config=TrainConfig(epochs=1, batch_size=32),
                                       stream=io.StringIO())
    assert result.history[-1]["flops_vs_original"] == pytest.approx(0.5, abs=0.02)
    assert result.history[0]["flops_vs_original"] > result.history[-1]["flops_vs_original"]


def test_soft_pruning_zeroes_each_epoch_and_removes_exactly_those_filters():
    model = classifier(width=8)
    result = schedules.soft_filter_prune(model, models.channel_task(96, 0), models.channel_task(48, 1), ratio=0.25,
                                         config=TrainConfig(epochs=2, batch_size=32))
    assert [row["filters_zeroed"] for row in result.history] == [4, 4]   # floor(0.25 * 8) per group, 2 groups
    assert result.report["soft"]["removed_match_last_mask"] is True
    assert result.report["verified"]
    assert [g["channels_after"] for g in result.report["groups"] if g.get("pruned")] == [6, 6]
    assert 0.0 <= result.report["soft"]["val_acc_pruned"] <= 1.0


def test_cli_schedule_iterative_and_its_report(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(classifier(), str(path))
    x, y = models.channel_task(64, 0)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    out, report = tmp_path / "out.onnx", tmp_path / "rep.json"
    code = cli.main(["schedule", str(path), "-o", str(out), "--data", str(tmp_path / "train.npz"),
                     "--steps", "2", "--epochs", "1", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "step 2" in captured.out and "verified True" in captured.out
    data = json.loads(report.read_text())
    assert data["schedule"]["mode"] == "iterative" and len(data["schedule"]["history"]) == 2
    assert onnx.load(str(out)).graph.output[0].name == classifier().graph.output[0].name


@pytest.mark.parametrize("argv, code_want, words", [
    (["--steps", "0"], 2, ["--steps"]),
    (["--ratio", "1.2"], 2, ["--ratio"]),
    (["--mode", "soft", "--target-flops", "0.5"], 2, ["--target-flops"]),
    (["--criterion", "nope"], 2, ["unknown criterion"]),
    (["--data", "missing.npz"], 1, ["no such data file"]),
])
def test_cli_schedule_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, code_want, words):
    path = tmp_path / "m.onnx"
    onnx.save(classifier(), str(path))
    x, y = models.channel_task(16, 0)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    out = tmp_path / "out.onnx"
    base = ["schedule", str(path), "-o", str(out)]
    if "--data" not in argv:
        base += ["--data", str(tmp_path / "train.npz")]
    else:
        argv = ["--data", str(tmp_path / "missing.npz")]
    code = cli.main(base + argv)
    err = capsys.readouterr().err
    assert code == code_want
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in err
    assert not out.exists()


def test_cli_schedule_summary_is_the_whole_run_printed_once(tmp_path, capsys):
    """Issue 15.8: the summary described only the last step ("groups 1 pruned of 5", the last step's
    share of the target), the step table came twice, and the report said "model": "<model>"."""
    path = tmp_path / "m.onnx"
    onnx.save(classifier(width=16), str(path))
    x, y = models.channel_task(64, 0)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    out, report = tmp_path / "out.onnx", tmp_path / "rep.json"
    code = cli.main(["schedule", str(path), "-o", str(out), "--data", str(tmp_path / "train.npz"),
                     "--steps", "3", "--epochs", "1", "--target-flops", "0.5", "--report", str(report)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    both = captured.out + captured.err
    assert both.count("step 2,") == 1, both                    # one step table
    assert "target: remove 0.5 of the flops over 3 steps" in captured.out
    data = json.loads(report.read_text())
    assert data["model"] == str(path)
    original = pipeline.prune(classifier(width=16), ratio=0.0).report
    assert data["flops_before"] == original["flops_before"]
    assert data["target"]["achieved"] == pytest.approx(1 - data["flops_after"] / data["flops_before"], abs=1e-6)
    pruned = [g for g in data["groups"] if g["pruned"]]
    assert len(pruned) == 2 and all(g["channels_before"] == 16 for g in pruned)
    assert f"groups 2 pruned of {len(data['groups'])}" in captured.out
    assert all(g.get("reason") for g in data["groups"] if not g["pruned"])
