"""Batch runs (local processes and Ray), and embedding: thread safety, the graphsurgeon adapter,
and the README's custom-pass example."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import onnx
import pytest

import cli
import models
import pipeline
from workflows import batch

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def plan_dir(tmp_path):
    for name in ("chain", "concat", "many_to_many"):
        onnx.save(models.PATTERNS[name](), str(tmp_path / f"{name}.onnx"))
    (tmp_path / "broken.onnx").write_bytes(b"this is not an onnx model")
    plan = {"models": ["chain.onnx", {"path": "concat.onnx", "name": "cat"}, "broken.onnx"],
            "variants": [{"name": "r30", "ratio": 0.3}, {"name": "r50-node-l2", "ratio": 0.5,
                                                          "scope": "node", "criterion": "l2"}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    return tmp_path


def _jobs(folder):
    plan = batch.read_plan(folder / "plan.json")
    return batch.make_jobs(plan["models"], plan["variants"])


def test_ray_runs_a_plan_with_a_bad_model_and_matches_local(plan_dir):
    ray = pytest.importorskip("ray")
    jobs = _jobs(plan_dir)
    assert len(jobs) == 6
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = batch.run_batch(jobs, plan_dir / "ray", executor="ray", n_jobs=2)
    finally:
        ray.shutdown()
    local = batch.run_batch(jobs, plan_dir / "local", executor="local", n_jobs=1)
    assert batch.comparable(on_ray.rows) == batch.comparable(local.rows)
    failed = [r for r in on_ray.rows if r["error"]]
    assert [(r["model"], r["variant"]) for r in failed] == [("broken", "r30"), ("broken", "r50-node-l2")]
    assert all("broken.onnx: not an ONNX model" in r["error"] for r in failed)
    done = [r for r in on_ray.rows if not r["error"]]
    assert len(done) == 4 and all(r["verified"] is True for r in done)
    # each output is exactly what `prune` gives for that model alone
    alone = pipeline.prune(plan_dir / "concat.onnx", ratio=0.5, scope="node", criterion="l2")
    for where in ("ray", "local"):
        got = (plan_dir / where / "cat" / "r50-node-l2" / "model.onnx").read_bytes()
        assert got == alone.model.SerializeToString()
    summary = (plan_dir / "ray" / "summary.csv").read_text().splitlines()
    assert summary[0].split(",") == batch.COLUMNS and len(summary) == 7


def test_local_processes_match_one_process_and_resume_skips_done_jobs(plan_dir):
    jobs = _jobs(plan_dir)
    two = batch.run_batch(jobs, plan_dir / "out", executor="local", n_jobs=2)
    one = batch.run_batch(jobs, plan_dir / "serial", executor="local", n_jobs=1)
    assert batch.comparable(two.rows) == batch.comparable(one.rows)
    again = batch.run_batch(jobs, plan_dir / "out", n_jobs=1)
    assert again.skipped == 4                      # the two failed jobs are tried again
    assert batch.comparable(again.rows) == batch.comparable(two.rows)
    forced = batch.run_batch(jobs, plan_dir / "out", n_jobs=1, force=True)
    assert forced.skipped == 0


def test_yaml_plan_and_plan_errors(plan_dir):
    (plan_dir / "plan.yaml").write_text("models:\n  - chain.onnx\nvariants:\n  - {name: a, ratio: 0.25}\n")
    plan = batch.read_plan(plan_dir / "plan.yaml")
    jobs = batch.make_jobs(plan["models"], plan["variants"])
    assert [(j.model, j.variant.name, j.variant.ratio) for j in jobs] == [("chain", "a", 0.25)]
    (plan_dir / "bad.json").write_text("{not json")
    with pytest.raises(batch.PlanError, match="bad.json: cannot parse plan"):
        batch.read_plan(plan_dir / "bad.json")
    with pytest.raises(batch.PlanError, match="unknown key"):
        batch.make_jobs(["x.onnx"], [{"name": "v", "ratoi": 0.5}])


def test_batch_command_line(plan_dir, capsys):
    code = cli.main(["batch", str(plan_dir / "chain.onnx"), str(plan_dir / "concat.onnx"),
                     "-o", str(plan_dir / "cli"), "--ratio", "0.3", "0.5"])
    out = capsys.readouterr().out
    assert code == 0 and "4 jobs: 4 done, 0 failed" in out
    assert (plan_dir / "cli" / "chain" / "l1-tree-r0.5" / "report.json").exists()
    code = cli.main(["batch", "--plan", str(plan_dir / "plan.json"), "-o", str(plan_dir / "cli2")])
    assert code == 1  # a job failed: the exit code says so, the summary has every row
    assert "6 jobs: 4 done, 2 failed" in capsys.readouterr().out
    assert cli.main(["batch", "-o", str(plan_dir / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:")
    assert cli.main(["batch", "--plan", str(plan_dir / "nope.json"), "-o", str(plan_dir / "x")]) == 2


def test_two_threads_prune_two_models_like_one_after_the_other():
    a, b = models.many_to_many(), models.concat()
    serial = [pipeline.prune(a, ratio=0.5).model.SerializeToString(),
              pipeline.prune(b, ratio=0.3, scope="node").model.SerializeToString()]
    got: dict[int, bytes] = {}

    def work(i, model, **kw):
        for _ in range(3):
            got[i] = pipeline.prune(model, **kw).model.SerializeToString()

    threads = [threading.Thread(target=work, args=(0, a), kwargs={"ratio": 0.5}),
               threading.Thread(target=work, args=(1, b), kwargs={"ratio": 0.3, "scope": "node"})]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[0], got[1]] == serial


def test_graphsurgeon_adapter_takes_and_returns_a_graph():
    gs = pytest.importorskip("onnx_graphsurgeon")
    graph = gs.import_onnx(models.chain())
    pruned, report = pipeline.prune_graphsurgeon(graph, ratio=0.5)
    assert isinstance(pruned, gs.Graph) and report["verified"] is True
    assert report["params_after"] < report["params_before"]
    conv = [n for n in pruned.nodes if n.op == "Conv"][0]
    assert conv.inputs[1].values.shape[0] == 4


def test_readme_custom_pass_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = [b for b in blocks if "pipeline.register(" in b]
    assert example, "the README lost its custom-pass example"
    onnx.save(models.chain(), str(tmp_path / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(example[0], "README.md", "exec", dont_inherit=True), namespace)
    finally:
        pipeline.REGISTRY.pop("spare-narrow", None)
    report = namespace["result"].report
    assert report["verified"] is True
    spared = [p for p in report["passes"] if p["name"] == "spare-narrow"][0]["stats"]["spared"]
    assert spared == [1]                       # the 6-channel group is narrower than 8
    assert [g for g in report["groups"] if g["id"] == 1][0]["channels_after"] == 6


def test_a_plan_variant_can_fine_tune(tmp_path):
    import numpy as np

    onnx.save(models.many_to_many(), str(tmp_path / "mm.onnx"))   # first output: [1, 5] logits
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x=rng.standard_normal((40, 3, 8, 8)).astype(np.float32),
             y=rng.integers(0, 5, 40).astype(np.int64))
    plan = {"models": ["mm.onnx"],
            "variants": [{"name": "ft", "ratio": 0.5, "finetune": {"data": "train.npz", "epochs": 2, "lr": 0.01}}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    plan = batch.read_plan(tmp_path / "plan.json")
    result = batch.run_batch(batch.make_jobs(plan["models"], plan["variants"]), tmp_path / "out")
    row = result.rows[0]
    assert row["error"] == "" and row["verified"] is True
    report = json.loads((tmp_path / "out" / "mm" / "ft" / "report.json").read_text())
    assert len(report["finetune"]["history"]) == 2
    assert "finetune{" in report["spec"]


def test_a_plan_variant_can_use_a_data_criterion_with_its_calibration_file(tmp_path):
    import numpy as np

    onnx.save(models.chain(), str(tmp_path / "chain.onnx"))
    x = np.random.default_rng(0).standard_normal((4, *sample_shape(tmp_path / "chain.onnx"))).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    plan = {"models": ["chain.onnx"],
            "variants": [{"name": "hrank", "criterion": "hrank", "calib": "calib.npz"},
                         {"name": "no-calib", "criterion": "hrank"}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    plan = batch.read_plan(tmp_path / "plan.json")
    rows = batch.run_batch(batch.make_jobs(plan["models"], plan["variants"]), tmp_path / "out").rows
    assert rows[0]["error"] == "" and rows[0]["verified"] is True
    report = json.loads((tmp_path / "out" / "chain" / "hrank" / "report.json").read_text())
    assert "criterion=hrank" in report["spec"]
    assert "calib" in rows[1]["error"]  # a data criterion without data: that row's one-line error


def sample_shape(path) -> tuple:
    """The model's input shape without the batch axis."""
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims[1:])
