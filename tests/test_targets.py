"""Targets for the mask pass: global ranking across groups (normalised scores, a per-group
maximum ratio), per-node ratio plans from JSON, and FLOPs/parameter reductions met within one
point by the real count after slicing (API and CLI), with one-line errors for bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import cli
import ir
import models
import pipeline
from passes.analyses import Masks, Patterns, Scores, Trees
from passes.base import PassContext
from passes.cost import count_flops, count_params
from passes.infer_shapes import value_shapes
from passes.mask import MaskPass
from passes.targets import CostModel
from torchvision_models import export


def analysed(model, spec="tag,trees,classify,score"):
    graph = ir.lower(model)
    ctx = PassContext(original=model)
    pipeline.Pipeline.parse(spec).run(graph, ctx)
    return graph, ctx


def chain_with_hand_scores():
    """models.chain: group 0 = the 8-channel conv, group 1 = the 6-channel conv (the head reaches
    the graph output). Scores: group 0 = 1..8, group 1 = 10, 20, .., 60."""
    graph, ctx = analysed(models.chain())
    groups = [g for g in ctx.get(Patterns).groups if not g.blocked]
    assert [g.channels for g in groups] == [8, 6]
    ctx.put(Scores("hand", "node", {groups[0].id: np.arange(1, 9, dtype=float),
                                    groups[1].id: 10.0 * np.arange(1, 7)}))
    return graph, ctx, groups


def kept_counts(mask: MaskPass):
    graph, ctx, groups = chain_with_hand_scores()
    mask.run(graph, ctx)
    kept = ctx.get(Masks).kept
    return [len(kept[g.id]) for g in groups]


# --------------------------------------------------------------------------- global ranking
def test_global_ranking_normalised_by_max_by_hand():
    # normalised: g0 = k/8, g1 = k/6. 14 channels at 0.5 -> the 7 lowest go:
    # .125 g0, .167 g1, .25 g0, .333 g1, .375 g0, .5 g0 (tie: lower group first), .5 g1
    assert kept_counts(MaskPass(ratio=0.5, rank="global")) == [8 - 4, 6 - 3]


def test_global_ranking_normalised_by_sum_by_hand():
    # g0 = k/36, g1 = k/21: .028 g0, .048 g1, .056 g0, .083 g0, .095 g1, .111 g0, .139 g0
    assert kept_counts(MaskPass(ratio=0.5, rank="global", normalize="sum")) == [8 - 5, 6 - 2]


def test_global_ranking_never_empties_a_group():
    # at 0.95 of 14 channels, 13 would go: the caps floor(0.9 n) = 7 and 5 stop it
    assert kept_counts(MaskPass(ratio=0.95, rank="global")) == [1, 1]
    assert kept_counts(MaskPass(ratio=0.95, rank="global", max_ratio=0.5)) == [4, 3]


def test_per_node_ratios_win_over_the_global_ranking():
    graph, ctx, groups = chain_with_hand_scores()
    root0 = groups[0].roots[0]
    MaskPass(ratio=0.5, rank="global", ratios={root0: 0.25}).run(graph, ctx)
    kept = ctx.get(Masks).kept
    # group 0 at its own 0.25 keeps 6; the global half of the free channels (6 of group 1) is 3
    assert [len(kept[g.id]) for g in groups] == [6, 3]


def test_the_lowest_channels_of_each_group_go_under_global_ranking():
    graph, ctx, groups = chain_with_hand_scores()
    MaskPass(ratio=0.5, rank="global").run(graph, ctx)
    assert ctx.get(Masks).kept[groups[0].id] == (4, 5, 6, 7)
    assert ctx.get(Masks).kept[groups[1].id] == (3, 4, 5)


@pytest.mark.parametrize("bad", ["rank=both", "normalize=mean", "max-ratio=1", "max-ratio=0",
                                 "target-flops=1", "target-params=-0.1",
                                 "target-flops=0.5 target-params=0.5"])
def test_mask_rejects_bad_target_options(bad):
    with pytest.raises(pipeline.SpecError):
        pipeline.Pipeline.parse(f"tag,trees,classify,score,mask{{{bad}}}")


# --------------------------------------------------------------------------- cost model
@pytest.mark.parametrize("name", sorted(models.PATTERNS))
@pytest.mark.parametrize("kind", ["flops", "params"])
def test_cost_model_predicts_the_sliced_count(name, kind):
    model = models.PATTERNS[name]()
    spec = "tag,trees,classify,score,mask{ratio=0.5}"
    graph, ctx = analysed(model, spec)
    shapes = value_shapes(graph)
    counted = [ir_node for ir_node in graph.nodes() if ir_node.op_type in ("Conv", "Gemm", "MatMul")]
    if any(not all(isinstance(d, int) for d in shapes.get(graph.outputs_of(n)[0].name) or (None,))
           for n in counted):
        # count_flops takes unknown dims as 1 before slicing (a Slice with computed ends):
        # the counts before and after are not comparable, so neither is the prediction
        pytest.skip(f"{name}: output shapes not static before slicing")
    masks, patterns = ctx.get(Masks), ctx.get(Patterns)
    drops = {gid: patterns.groups[gid].channels - len(k) for gid, k in masks.kept.items()}
    predicted = CostModel.build(graph, ctx.get(Trees), patterns, ctx.get(Scores)).cost(kind, drops)
    result = pipeline.prune(model, passes=spec + ",slice,infer-shapes,validate")
    real = result.report[f"{kind}_after"]
    assert predicted == pytest.approx(real, rel=0.02), (predicted, real)


def test_a_target_that_cannot_be_met_is_one_clear_error():
    with pytest.raises(pipeline.PipelineError, match="target-flops 0.99 cannot be met"):
        pipeline.prune(models.chain(), target_flops=0.99)


# --------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export("resnet18", tmp_path_factory.mktemp("tv"))


@pytest.mark.parametrize("kind, goal", [("flops", 0.5), ("flops", 0.3), ("params", 0.5)])
def test_resnet18_target_is_met_within_one_point(resnet18, kind, goal):
    result = pipeline.prune(str(resnet18), **{f"target_{kind}": goal})
    rep = result.report
    achieved = 1 - rep[f"{kind}_after"] / rep[f"{kind}_before"]
    assert abs(achieved - goal) <= 0.01, achieved
    assert rep["verified"]
    assert rep["target"]["met"] and rep["target"]["achieved"] == pytest.approx(achieved, abs=1e-6)
    graph = ir.lower(result.model)   # the counts in the report are the model's
    assert (count_flops(graph) if kind == "flops" else count_params(graph)) == rep[f"{kind}_after"]


def test_resnet18_layer_rank_target_solves_a_uniform_ratio(resnet18):
    result = pipeline.prune(str(resnet18), target_flops=0.4, rank="layer")
    rep = result.report
    assert abs(1 - rep["flops_after"] / rep["flops_before"] - 0.4) <= 0.01
    ratios = [1 - g["channels_after"] / g["channels_before"] for g in rep["groups"] if g.get("pruned")]
    assert max(ratios) - min(ratios) < 0.1      # one ratio for all (floors differ by a channel)


def test_global_ranking_prunes_groups_unevenly(resnet18):
    rep = pipeline.prune(str(resnet18), ratio=0.5, rank="global").report
    ratios = {round(1 - g["channels_after"] / g["channels_before"], 2) for g in rep["groups"] if g.get("pruned")}
    assert len(ratios) > 2 and rep["verified"]
    assert all(g["channels_after"] >= 1 for g in rep["groups"])


# --------------------------------------------------------------------------- command line
@pytest.fixture
def chain_file(tmp_path) -> Path:
    path = tmp_path / "chain.onnx"
    onnx.save(models.chain(), str(path))
    return path


def root_names(model) -> list[str]:
    _, ctx = analysed(model)
    return [g.roots[0] for g in ctx.get(Patterns).groups if not g.blocked]


def test_cli_ratio_plan_sets_per_node_ratios(tmp_path, chain_file, capsys):
    r0, r1 = root_names(models.chain())
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"budget": 1.0, "ratios": {r0: 0.25, r1: 0.5}}))
    out, report = tmp_path / "out.onnx", tmp_path / "rep.json"
    code = cli.main(["prune", str(chain_file), "-o", str(out), "--ratios", str(plan),
                     "--ratio", "0", "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    groups = {g["roots"][0]: g for g in json.loads(report.read_text())["groups"]}
    assert (groups[r0]["channels_after"], groups[r1]["channels_after"]) == (6, 3)


@pytest.mark.parametrize("content, words", [
    ("{not json", ["not JSON"]),
    ('{"ratios": {"Conv3": 1.5}}', ["Conv3", "[0, 1)"]),
    ('[0.5]', ["node -> ratio"]),
    ('{"no_such_node": 0.5}', ["no_such_node", "not in"]),
])
def test_cli_bad_ratio_plan_is_one_line_exit_2_nothing_written(tmp_path, chain_file, capsys, content, words):
    plan = tmp_path / "plan.json"
    plan.write_text(content)
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(chain_file), "-o", str(out), "--ratios", str(plan)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err
    for w in words:
        assert w in err
    assert not out.exists()


def test_cli_target_flops(tmp_path, chain_file, capsys):
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(chain_file), "-o", str(out), "--target-flops", "0.5"])
    text = capsys.readouterr().out
    assert code == 0
    assert "target: remove 0.5 of the flops" in text and "met within 1 point" in text
    before, after = count_flops(ir.lower(models.chain())), count_flops(ir.lower(onnx.load(str(out))))
    assert abs(1 - after / before - 0.5) <= 0.01


@pytest.mark.parametrize("argv, words", [
    (["--target-flops", "1.5"], ["--target-flops", "[0, 1)"]),
    (["--target-flops", "0.5", "--target-params", "0.5"], ["not both"]),
    (["--target-flops", "0.5", "--max-ratio", "1.0"], ["max-ratio"]),
])
def test_cli_bad_targets_are_usage_errors(tmp_path, chain_file, capsys, argv, words):
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(chain_file), "-o", str(out)] + argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err
    assert not out.exists()


def test_cli_unreachable_target_is_exit_1(tmp_path, chain_file, capsys):
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(chain_file), "-o", str(out), "--target-params", "0.99"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1 and "cannot be met" in err
    assert not out.exists()


# --------------------------------------------------------------------------- issue 15.3: every group has a reason
def test_a_group_the_global_ranking_keeps_whole_says_why():
    # at 0.1 of 14 channels one goes: g0's 1/8 ranks lowest, so g1 keeps all 6
    graph, ctx, groups = chain_with_hand_scores()
    MaskPass(ratio=0.1, rank="global").run(graph, ctx)
    masks = ctx.get(Masks)
    assert len(masks.kept[groups[1].id]) == 6 and groups[1].id in masks.whole
    assert "global ranking" in masks.whole[groups[1].id]
    assert groups[0].id not in masks.whole           # it lost a channel: nothing to explain


@pytest.mark.parametrize("name", sorted(models.PATTERNS))
@pytest.mark.parametrize("options", [dict(target_flops=0.1), dict(ratio=0.1, rank="global"),
                                     dict(ratio=0.05)])
def test_every_group_left_whole_has_a_reason(name, options):
    try:
        report = pipeline.prune(models.PATTERNS[name](), **options).report
    except pipeline.PipelineError as exc:    # a target some tiny models cannot meet
        assert "cannot be met" in str(exc)
        return
    for g in report["groups"]:
        if not g["pruned"]:
            assert g.get("reason"), g
    whole = [g for g in report["groups"] if not g["pruned"]]
    summary = cli._summary(report)
    assert f"{len(whole)} left alone" in summary
