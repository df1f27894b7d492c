"""Sensitivity analysis: per-group accuracy at each ratio (pruning that group alone, as an
independent prune + evaluate gives it), the plan for a budget (by hand), the command line's table,
plot and plan (which ``prune --ratios`` takes), and one-line errors with nothing written."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import cli
import models
import pipeline
from workflows import sensitivity
from passes.finetune import evaluate

N_CLASSES = 3


def two_conv_classifier() -> onnx.ModelProto:
    """conv(2->6) -> relu -> conv(6->6) -> relu -> GlobalAveragePool -> Flatten -> Gemm(3): two
    prunable groups (the Gemm's output is the graph output)."""
    b = models.Builder(3, name="two_conv")
    x = b.input("x", [1, 2, 4, 4])
    y = b.relu(b.conv(x, 2, 6))
    y = b.relu(b.conv(y, 6, 6))
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    return b.build([b.gemm(y, 6, N_CLASSES)])


@pytest.fixture(scope="module")
def analysed():
    model = two_conv_classifier()
    val = models.channel_task(90, 1)
    return model, val, sensitivity.analyze(model, val, steps=(0.2, 0.5, 0.8))


def test_each_cell_is_that_group_pruned_alone_and_evaluated(analysed):
    model, val, result = analysed
    assert result.baseline == evaluate(model, val)
    assert len(result.groups) == 2 and [g["channels"] for g in result.groups] == [6, 6]
    g = result.groups[1]
    pruned = pipeline.prune(model, ratio=0.0, ratios={r: 0.5 for r in g["roots"]})
    assert pruned.report["verified"]
    assert g["accuracy"][0.5] == evaluate(pruned.model, val)
    changed = [x for x in pruned.report["groups"] if x.get("pruned")]
    assert [x["roots"] for x in changed] == [g["roots"]]     # that group alone
    assert changed[0]["channels_after"] == 3


def test_plan_takes_the_largest_ratio_within_the_budget_by_hand():
    result = sensitivity.Sensitivity(
        baseline=0.90, steps=(0.1, 0.3, 0.5),
        groups=[{"id": 0, "roots": ["a"], "channels": 8, "accuracy": {0.1: 0.90, 0.3: 0.895, 0.5: 0.85}},
                {"id": 1, "roots": ["b", "c"], "channels": 8, "accuracy": {0.1: 0.88, 0.3: 0.90, 0.5: 0.90}},
                {"id": 2, "roots": ["d"], "channels": 8, "accuracy": {0.1: 0.91, 0.3: 0.89, 0.5: 0.80}}])
    # drops in points: a [0, 0.5, 5], b [2, 0, 0], d [-1, 1, 10]
    plan = sensitivity.plan(result, budget=1.0)
    assert plan["ratios"] == {"a": 0.3, "b": 0.0, "c": 0.0, "d": 0.3}   # b: 2 points at 0.1 -> kept whole
    assert sensitivity.plan(result, budget=2.0)["ratios"] == {"a": 0.3, "b": 0.5, "c": 0.5, "d": 0.3}
    assert sensitivity.plan(result, budget=0.0)["ratios"] == {"a": 0.1, "b": 0.0, "c": 0.0, "d": 0.1}


def test_cli_table_plot_and_plan_that_prune_takes(tmp_path, capsys):
    model_path = tmp_path / "m.onnx"
    onnx.save(two_conv_classifier(), str(model_path))
    x, y = models.channel_task(90, 1)
    np.savez(tmp_path / "val.npz", x=x, y=y)
    plan, png = tmp_path / "plan.json", tmp_path / "sens.png"
    code = cli.main(["sensitivity", str(model_path), "--val", str(tmp_path / "val.npz"), "-o", str(plan),
                     "--budget", "100", "--plot", str(png), "--steps", "0.3", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "baseline top-1" in out and "plan for a budget of 100 points" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(plan.read_text())
    assert data["budget"] == 100 and len(data["ratios"]) == 2 and set(data["ratios"].values()) == {0.5}
    pruned, report = tmp_path / "p.onnx", tmp_path / "r.json"
    assert cli.main(["prune", str(model_path), "-o", str(pruned), "--ratios", str(plan), "--ratio", "0",
                     "--report", str(report)]) == 0
    groups = [g for g in json.loads(report.read_text())["groups"] if g.get("pruned")]
    assert [g["channels_after"] for g in groups] == [3, 3]


def test_a_group_over_budget_is_kept_whole_by_the_plan_not_pruned_at_the_default(tmp_path, capsys):
    model_path = tmp_path / "m.onnx"
    onnx.save(two_conv_classifier(), str(model_path))
    result = sensitivity.Sensitivity(0.9, (0.5,), [])
    model = two_conv_classifier()
    from passes.analyses import Patterns
    import ir
    ctx = pipeline.Pipeline.parse(pipeline.ANALYSIS_SPEC).run(ir.lower(model), pipeline.PassContext())
    groups = [g for g in ctx.get(Patterns).groups if not g.blocked]
    result.groups = [{"id": g.id, "roots": list(g.roots), "channels": g.channels, "accuracy": {0.5: acc}}
                     for g, acc in zip(groups, (0.9, 0.5))]           # the second drops 40 points
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(sensitivity.plan(result, budget=1.0)))
    report = tmp_path / "r.json"
    assert cli.main(["prune", str(model_path), "-o", str(tmp_path / "p.onnx"), "--ratios", str(plan),
                     "--report", str(report)]) == 0                # default --ratio 0.5 elsewhere
    after = {g["roots"][0]: g["channels_after"] for g in json.loads(report.read_text())["groups"]}
    assert after[groups[0].roots[0]] == 3 and after[groups[1].roots[0]] == 6


@pytest.mark.parametrize("case, code_want, words", [
    ("missing_val", 1, ["no such data file"]),
    ("labels", 1, ["labels span", "3 classes"]),
    ("budget", 2, ["--budget"]),
    ("steps", 2, ["--steps"]),
    ("criterion", 2, ["unknown criterion"]),
    ("not_classifier", 1, ["[N, classes]"]),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, code_want, words):
    model = models.chain() if case == "not_classifier" else two_conv_classifier()
    model_path = tmp_path / "m.onnx"
    onnx.save(model, str(model_path))
    x, y = models.channel_task(30, 0)
    if case == "labels":
        y = y + 1
    if case == "not_classifier":
        x = np.zeros((4, 3, 8, 8), np.float32)
    val = tmp_path / "val.npz"
    if case != "missing_val":
        np.savez(val, x=x, y=y)
    argv = ["sensitivity", str(model_path), "--val", str(val), "-o", str(tmp_path / "plan.json"),
            "--plot", str(tmp_path / "s.png")]
    argv += {"budget": ["--budget", "-1"], "steps": ["--steps", "1.0"],
             "criterion": ["--criterion", "nope"]}.get(case, [])
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == code_want
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in err
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "s.png").exists()


# --------------------------------------------------------------------------- issue 15.9: a baseline at chance
def test_a_zero_or_chance_baseline_is_warned_about_and_a_real_one_is_not():
    model = two_conv_classifier()
    x, y = models.channel_task(90, 1)
    batches = sensitivity.as_batches((x, y), 256, "validation data")
    for baseline in (0.0, 1 / N_CLASSES, 1 / N_CLASSES + 0.04):
        assert "chance" in sensitivity.chance_warning(model, batches, baseline) or baseline == 0
        assert sensitivity.chance_warning(model, batches, baseline)
    assert sensitivity.chance_warning(model, batches, 0.9) is None
    # the most frequent label's share is chance too: all labels 0 -> 1.0 is chance
    ones = sensitivity.as_batches((x, np.zeros_like(y)), 256, "validation data")
    assert sensitivity.chance_warning(model, ones, 0.95) is not None


def test_cli_warns_when_the_labels_are_wrong(tmp_path, capsys):
    model_path = tmp_path / "m.onnx"
    onnx.save(two_conv_classifier(), str(model_path))
    x, y = models.channel_task(60, 1)
    np.savez(tmp_path / "val.npz", x=x, y=y)
    code = cli.main(["sensitivity", str(model_path), "--val", str(tmp_path / "val.npz"), "--steps", "0.5",
                     "-o", str(tmp_path / "plan.json")])
    captured = capsys.readouterr()
    assert code == 0
    baseline = json.loads((tmp_path / "plan.json").read_text())["baseline"]
    assert baseline <= 1 / N_CLASSES + sensitivity.NEAR_CHANCE      # an untrained model
    assert "warning:" in captured.err and "chance" in captured.err
    assert "WARNING" in captured.out and "warning" in json.loads((tmp_path / "plan.json").read_text())


def test_plot_colours_never_repeat_and_the_legend_is_outside(tmp_path):
    for n in (5, 15, 40):
        colours = [sensitivity.group_colour(i, n) for i in range(n)]
        assert len({tuple(round(c, 3) for c in col) for col in colours}) == n
    steps = (0.5,)
    result = sensitivity.Sensitivity(0.9, steps, [{"id": i, "roots": [f"/g{i}/Conv"], "channels": 8,
                                                   "accuracy": {0.5: 0.9 - i / 100}} for i in range(30)])
    png = tmp_path / "s.png"
    fig = sensitivity.plot(result, png, keep=True)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1          # beside the data, not over it
    colours = {tuple(line.get_color()) for line in ax.get_lines()[:-1]}
    assert len(colours) == 30
    from PIL import Image
    w, h = Image.open(png).size
    assert w < 3000 and h < 1500
