"""Fine-tuning a start that is already good (issue 17): the epoch chosen on training data held out
of training (``holdout``), the start kept unless an epoch beats it, and a model ``recover``
changed fine-tuned as a recovered start by default (API, spec, CLI).

Tiny seeded models and data only (``test_finetune``'s classifier and channel task)."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest

import cli
import models
import pipeline
from passes.finetune import (RECOVERED_MAX_ERROR, RECOVERED_METADATA_KEY, TrainConfig, finetune, is_recovered,
                             recovered_config, recovery_metadata, start_config)
from passes.train_data import Batches, split_holdout
from test_finetune import cross_entropy, inits, logits_of, tiny_classifier


def symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    del m.graph.value_info[:]
    return m


@pytest.fixture(scope="module")
def task():
    return models.channel_task(192, seed=1)


def test_split_holdout_is_seeded_disjoint_and_complete(task):
    x, y = task
    data = Batches([(x[i:i + 16], y[i:i + 16]) for i in range(0, len(x), 16)], "training data")
    kept, held = split_holdout(data, 0.25, seed=3, batch_size=16)
    xs = np.concatenate([b[0] for b in kept.batches])
    xh = np.concatenate([b[0] for b in held.batches])
    assert len(xh) == 48 and len(xs) == 144 and held.where == "training data (held out)"
    rows = {r.tobytes() for r in x}
    assert {r.tobytes() for r in xs} | {r.tobytes() for r in xh} == rows
    assert not {r.tobytes() for r in xs} & {r.tobytes() for r in xh}
    again = split_holdout(data, 0.25, seed=3, batch_size=16)[1]
    other = split_holdout(data, 0.25, seed=4, batch_size=16)[1]
    assert np.array_equal(np.concatenate([b[0] for b in again.batches]), xh)
    assert not np.array_equal(np.concatenate([b[0] for b in other.batches]), xh)
    # batches of their own shapes are held out whole
    ragged = Batches([(x[:10], y[:10]), (x[10:30, :, :2], y[10:30]), (x[30:50], y[30:50])], "stream")
    kept, held = split_holdout(ragged, 0.3, seed=0, batch_size=16)
    assert len(kept.batches) == 2 and len(held.batches) == 1


def test_holdout_keeps_the_epoch_or_start_of_the_lowest_held_out_loss(task):
    """The held-out rows are not trained on (the epoch's training accuracy counts 144 of 192), each
    epoch's val_loss is the held-out loss, and the kept one is the lowest, the start included."""
    model = tiny_classifier(bn=True)
    config = TrainConfig(epochs=3, lr=0.03, batch_size=16, seed=0, keep_start=True, holdout=0.25)
    result = finetune(model, task, None, config, stream=io.StringIO())
    held = split_holdout(Batches([task], "training data"), 0.25, seed=0, batch_size=16)[1]
    hx, hy = np.concatenate([b[0] for b in held.batches]), np.concatenate([b[1] for b in held.batches])
    start_loss = cross_entropy(logits_of(model, hx), hy)
    losses = [start_loss] + [row["val_loss"] for row in result.history]
    assert result.best_epoch == int(np.argmin(losses)), losses
    for row in result.history:
        assert round(row["acc"] * 144) == pytest.approx(row["acc"] * 144, abs=1e-6)
    best = cross_entropy(logits_of(result.model, hx), hy)
    assert best == pytest.approx(min(losses), rel=1e-4, abs=1e-5)
    # a learning rate that wrecks the model: every epoch's held-out loss is worse, the start is kept
    wreck = TrainConfig(epochs=1, lr=5.0, batch_size=16, seed=0, schedule="constant", keep_start=True, holdout=0.25)
    kept = finetune(result.model, task, None, wreck, stream=io.StringIO())
    assert kept.best_epoch == 0, kept.history
    for name, w in inits(result.model).items():
        np.testing.assert_array_equal(inits(kept.model)[name], w)


def test_recovered_config_and_start_choices():
    base = TrainConfig(epochs=2, lr=1e-3, seed=5)
    rec = recovered_config(base)
    assert (rec.lr, rec.keep_start, rec.holdout, rec.epochs, rec.seed) == (pytest.approx(1e-4), True, 0.1, 2, 5)
    assert recovered_config(TrainConfig(holdout=0.3)).holdout == 0.3
    assert start_config(base, "auto", False) == (base, "fresh")
    assert start_config(base, "auto", True) == (rec, "recovered")
    assert start_config(base, "recovered", False) == (rec, "recovered")
    assert start_config(base, "fresh", True) == (base, "fresh")
    with pytest.raises(ValueError, match="unknown start 'warm'"):
        start_config(base, "warm", True)
    with pytest.raises(ValueError, match="holdout must be in"):
        TrainConfig(holdout=1.0)


def test_a_recovered_start_is_one_recover_brought_close_to_the_original():
    """is_recovered reads recover's metadata: its held-out output error at most RECOVERED_MAX_ERROR;
    a model recover left far from the original (bn alone at a high ratio), or one without a
    measured error, is fine-tuned fresh."""
    def marked(value):
        m = tiny_classifier()
        if value is not None:
            m.metadata_props.append(onnx.StringStringEntryProto(key=RECOVERED_METADATA_KEY, value=value))
        return m
    assert recovery_metadata(marked(None)) is None and not is_recovered(marked(None))
    assert is_recovered(marked(json.dumps({"method": "bias,bn,ls", "heldout_error": 0.06})))
    assert is_recovered(marked(json.dumps({"method": "bn", "heldout_error": RECOVERED_MAX_ERROR})))
    assert not is_recovered(marked(json.dumps({"method": "bn", "heldout_error": 0.45})))
    assert not is_recovered(marked(json.dumps({"method": "bn", "heldout_error": None})))
    assert not is_recovered(marked("not json")) and recovery_metadata(marked("not json")) == {}


def test_prune_with_recover_fine_tunes_a_recovered_start(task):
    """API: prune(recover=, calib_data=, train_data=) marks the recovered model and its finetune
    pass trains it as a recovered start; without recovery (or with start=fresh) it is fresh."""
    model = symbolic_batch(tiny_classifier(bn=True))
    x, y = task
    rec = pipeline.prune(model, ratio=0.5, calib_data=x[:64], recover="bias,bn", train_data=task)
    ft = rec.report["finetune"]
    assert rec.report["recovery"]["applied"] is True and is_recovered(rec.model)
    assert (ft["start"], ft["lr"], ft["keep_start"], ft["holdout"]) == ("recovered", pytest.approx(1e-4), True, 0.1)
    assert all("val_loss" in row for row in ft["history"])
    plain = pipeline.prune(model, ratio=0.5, calib_data=x[:64], train_data=task)
    assert plain.report["finetune"]["start"] == "fresh" and plain.report["finetune"]["lr"] == pytest.approx(1e-3)
    assert not is_recovered(plain.model)
    spec = pipeline.build_spec(0.5) + ",recover{method=bias,bn},finetune{epochs=1 start=fresh}"
    fresh = pipeline.prune(model, passes=spec, calib_data=x[:64], train_data=task)
    assert fresh.report["finetune"]["start"] == "fresh" and is_recovered(fresh.model)
    # recover without calibration data changes nothing, marks nothing
    assert not is_recovered(pipeline.prune(model, ratio=0.5, recover="bias,bn").model)


def test_finetune_spec_options_round_trip_and_are_checked():
    spec = pipeline.build_spec(0.5) + ",finetune{epochs=1 start=recovered keep-start=true holdout=0.2}"
    text = pipeline.Pipeline.parse(spec).spec()
    assert "start=recovered" in text and "keep-start=true" in text and "holdout=0.2" in text
    with pytest.raises(pipeline.SpecError, match="start"):
        pipeline.Pipeline.parse(pipeline.build_spec(0.5) + ",finetune{start=warm}")


def test_cli_finetune_of_a_recovered_model_is_a_recovered_start(tmp_path, task, capsys):
    x, y = task
    path, pruned, out = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "o.onnx"
    onnx.save(symbolic_batch(tiny_classifier(bn=True)), str(path))
    np.savez(tmp_path / "calib.npz", x=x[:64])
    np.savez(tmp_path / "train.npz", x=x, y=y)
    assert cli.main(["prune", str(path), "-o", str(pruned), "--calib", str(tmp_path / "calib.npz"),
                     "--recover", "bias,bn"]) == 0
    capsys.readouterr()
    meta = json.loads({p.key: p.value for p in onnx.load(str(pruned)).metadata_props}[RECOVERED_METADATA_KEY])
    assert meta["method"] == "bias,bn" and 0 <= meta["heldout_error"] <= RECOVERED_MAX_ERROR
    argv = ["finetune", str(pruned), "--data", str(tmp_path / "train.npz"), "-o", str(out), "--epochs", "1"]
    assert cli.main(argv) == 0
    assert "recovered start: lr 0.0001, the start kept unless an epoch beats it on the loss of 0.1 of --data " \
           "held out" in capsys.readouterr().err
    assert cli.main(argv + ["--start", "fresh"]) == 0
    assert "recovered start" not in capsys.readouterr().err
    assert cli.main(argv + ["--holdout", "1.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "holdout" in err


def test_warmup_ramps_the_lr_step_by_step_then_follows_the_schedule():
    """TrainConfig.warmup: over the first ``warmup`` epochs each step's lr is the schedule's times
    (steps done so far) / (warm-up steps); after it, the schedule's lr for the whole epoch."""
    from passes.finetune import Progress, train_epoch

    class Recorder:   # the optimizer and module train_epoch drives, recording the lr of each step
        def __init__(self):
            self.lr, self.steps = None, []

        def set_learning_rate(self, lr):
            self.lr = lr

        def step(self):
            self.steps.append(self.lr)

        def train(self):
            pass

        def lazy_reset_grad(self):
            pass

        def __call__(self, x, y):
            return np.float32(1.0), np.zeros((len(y), 2), np.float32)

    batches = Batches([(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))] * 4, "training data")
    config = TrainConfig(epochs=3, lr=0.1, schedule="constant", warmup=1.5)
    rec = Recorder()
    for epoch in range(3):
        train_epoch(rec, rec, batches, config, epoch, Progress(3, 4, io.StringIO()))
    ramp = [0.1 * (k + 1) / 6 for k in range(6)]
    assert rec.steps == pytest.approx(ramp + [0.1] * 6)
    cosine = TrainConfig(epochs=2, lr=0.1, warmup=1.0)
    assert cosine.lr_at_step(0, 1, 4) == pytest.approx(0.1 * 2 / 4)
    assert cosine.lr_at_step(1, 0, 4) == pytest.approx(cosine.lr_at(1))
    assert TrainConfig(epochs=2, lr=0.1).lr_at_step(0, 0, 4) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="warmup must be in"):
        TrainConfig(epochs=2, warmup=3)
    spec = pipeline.build_spec(0.5) + ",finetune{epochs=2 warmup=0.5}"
    assert "warmup=0.5" in pipeline.Pipeline.parse(spec).spec()
    with pytest.raises(pipeline.SpecError, match="warmup"):
        pipeline.Pipeline.parse(pipeline.build_spec(0.5) + ",finetune{epochs=2 warmup=3}")
