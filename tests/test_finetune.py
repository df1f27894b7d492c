"""Fine-tuning with ONNX Runtime training: learning, the graph it gives back, options, resume,
one-line data errors (API and CLI), the ``finetune`` pass at the end of a spec, and the demo job.

All models are tiny ``models.Builder`` graphs with a fixed [1, 2, 4, 4] input (``finetune`` makes
the batch axis symbolic); all data is seeded and synthetic."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import cli
import models
import pipeline
from passes.finetune import DataError, TrainConfig, evaluate, finetune

N_CLASSES = 3


# --------------------------------------------------------------------------- helpers
def tiny_classifier(bn: bool = True, seed: int = 0) -> onnx.ModelProto:
    """conv -> [bn] -> relu -> GlobalAveragePool -> Flatten -> Gemm to 3 classes."""
    b = models.Builder(seed, name="tiny")
    x = b.input("x", [1, 2, 4, 4])
    y = b.conv(x, 2, 4)
    if bn:
        y = b.bn(y, 4)
    y = b.relu(y)
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    return b.build([b.gemm(y, 4, N_CLASSES)])


def regression_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 targets shaped like the [N, 3] output: channel means and their difference."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 4, 4)).astype(np.float32)
    m = x.mean(axis=(2, 3))
    y = np.stack([m[:, 0], m[:, 1], m[:, 0] - m[:, 1]], axis=1).astype(np.float32) * 2
    return x, y


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def names_of(model: onnx.ModelProto, op_type: str, port: int) -> list[str]:
    return [n.input[port] for n in model.graph.node if n.op_type == op_type]


def logits_of(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Plain ONNX Runtime inference, one sample at a time (the model's batch axis is fixed at 1)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


class StopAfter:
    """A progress stream that records epoch lines and raises KeyboardInterrupt on line ``n``."""

    def __init__(self, n: int):
        self.n, self.lines = n, []

    def write(self, text: str) -> None:
        if len(self.lines) + 1 == self.n:
            raise KeyboardInterrupt(f"interrupted at epoch line {self.n}")
        self.lines.append(text)

    def flush(self) -> None:
        pass


@pytest.fixture(scope="module")
def train_val():
    return models.channel_task(192, seed=1), models.channel_task(96, seed=2)


@pytest.fixture(scope="module")
def trained(train_val):
    """One 4-epoch run on the BN classifier, shared by the learning and structure tests."""
    train, val = train_val
    model = tiny_classifier(bn=True)
    before = model.SerializeToString()
    config = TrainConfig(epochs=4, lr=0.03, batch_size=16, seed=0, schedule="constant")
    result = finetune(model, train, val, config, stream=io.StringIO())
    return model, before, result


# --------------------------------------------------------------------------- 1. learning
def test_training_learns_and_inference_agrees_with_history(train_val, trained):
    train, val = train_val
    model, _, result = trained
    start_acc = evaluate(model, val)
    hist = result.history
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    assert hist[-1]["loss"] < hist[0]["loss"]
    accs = [r["val_acc"] for r in hist]
    assert max(accs) > start_acc
    assert max(accs) > 0.6, f"no better than chance (1/3): {accs}"
    # the best epoch is the first with the highest validation accuracy, and its weights are kept
    assert result.best_epoch == 1 + accs.index(max(accs))
    best = hist[result.best_epoch - 1]
    acc = evaluate(result.model, val)
    assert abs(acc - best["val_acc"]) <= 1 / len(val[1]), (acc, best)
    # stronger: the validation loss of the written-back graph in plain inference (BatchNormalization
    # as an ONNX BatchNormalization node) is the one training measured for that epoch
    loss = cross_entropy(logits_of(result.model, val[0]), val[1])
    assert loss == pytest.approx(best["val_loss"], rel=1e-4, abs=1e-5)


def test_keep_start_keeps_a_start_that_training_only_makes_worse(train_val, trained):
    """keep_start: the model as handed in is epoch 0, scored in inference mode like the epochs
    (on validation data, or on the training data when there is none); an lr that wrecks a trained
    model leaves it unchanged, and best_epoch says 0. Without it the wrecked epoch is written."""
    train, val = train_val
    start = trained[2].model
    wreck = dict(epochs=1, lr=1.0, batch_size=16, seed=0, optimizer="adamw", schedule="constant")
    plain = finetune(start, train, val, TrainConfig(**wreck), stream=io.StringIO())
    assert plain.best_epoch == 1 and evaluate(plain.model, val) < evaluate(start, val)
    for held_out in (val, None):
        kept = finetune(start, train, held_out, TrainConfig(keep_start=True, **wreck), stream=io.StringIO())
        assert kept.best_epoch == 0, kept.history
        assert inits(kept.model).keys() == inits(start).keys()
        for name, w in inits(start).items():
            np.testing.assert_array_equal(inits(kept.model)[name], w)
    # a start that training improves is not kept: the first test's run, with keep_start
    model = tiny_classifier(bn=True)
    improved = finetune(model, train, None, TrainConfig(epochs=2, lr=0.03, batch_size=16, seed=0, keep_start=True),
                        stream=io.StringIO())
    assert improved.best_epoch >= 1 and all("train_score" in row for row in improved.history)


def test_learning_without_batchnorm(train_val):
    train, val = train_val
    model = tiny_classifier(bn=False, seed=3)
    result = finetune(model, train, val, TrainConfig(epochs=3, lr=0.03, batch_size=16, seed=1),
                      stream=io.StringIO())
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert evaluate(result.model, val) > evaluate(model, val)


def test_progress_stream_gets_one_line_per_epoch(train_val):
    train, val = train_val
    stream = io.StringIO()
    result = finetune(tiny_classifier(), train, val, TrainConfig(epochs=2, lr=0.01, batch_size=32), stream=stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1 ") and lines[1].startswith("epoch 2 ")
    assert "val_acc" in lines[1] and len(result.history) == 2


# --------------------------------------------------------------------------- 2. structure
def test_output_keeps_the_graph_and_changes_only_float_weights(trained):
    model, before, result = trained
    out = result.model
    assert model.SerializeToString() == before, "finetune modified its input model"
    onnx.checker.check_model(out)
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]
    assert [n.name for n in out.graph.node] == [n.name for n in model.graph.node]
    assert [i.name for i in out.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert [i.type for i in out.graph.input] == [i.type for i in model.graph.input]
    assert [o.type for o in out.graph.output] == [o.type for o in model.graph.output]
    assert {(o.domain, o.version) for o in out.opset_import} == {(o.domain, o.version) for o in model.opset_import}
    assert out.ir_version == model.ir_version
    a, b = inits(model), inits(out)
    assert set(b) == set(a)
    for name in a:
        assert b[name].shape == a[name].shape and b[name].dtype == a[name].dtype, name
    # the trainable weights moved; BatchNormalization's running statistics did not
    for name in names_of(model, "Conv", 1) + names_of(model, "Gemm", 1) + names_of(model, "BatchNormalization", 1):
        assert not np.array_equal(a[name], b[name]), f"{name} was not trained"
    for name in names_of(model, "BatchNormalization", 3) + names_of(model, "BatchNormalization", 4):
        np.testing.assert_array_equal(b[name], a[name], err_msg=f"running statistic {name} changed")


def test_frozen_initializers_and_nodes_stay_unchanged(train_val):
    train, val = train_val
    model = tiny_classifier(bn=True)
    conv_w = names_of(model, "Conv", 1)[0]
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    config = TrainConfig(epochs=2, lr=0.05, batch_size=16, freeze=(conv_w, gemm.name))
    result = finetune(model, train, val, config, stream=io.StringIO())
    a, b = inits(model), inits(result.model)
    for name in (conv_w, gemm.input[1], gemm.input[2]):
        np.testing.assert_array_equal(b[name], a[name], err_msg=f"frozen {name} changed")
    conv_b = names_of(model, "Conv", 2)[0]
    assert not np.array_equal(a[conv_b], b[conv_b]), "the unfrozen conv bias was not trained"


# --------------------------------------------------------------------------- 3. options
def test_mse_loss_on_a_regression_target_falls():
    train, val = regression_task(192, 5), regression_task(64, 6)
    result = finetune(tiny_classifier(bn=False, seed=4), train, val,
                      TrainConfig(epochs=4, lr=0.03, batch_size=16, loss="mse", schedule="constant"),
                      stream=io.StringIO())
    hist = result.history
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert all("acc" not in r and "val_acc" not in r for r in hist)


def test_sgd_with_step_schedule(train_val):
    train, val = train_val
    model = tiny_classifier()
    config = TrainConfig(epochs=4, lr=0.05, batch_size=16, optimizer="sgd", schedule="step",
                         step_size=2, gamma=0.5, seed=2)
    result = finetune(model, train, val, config, stream=io.StringIO())
    assert [r["lr"] for r in result.history] == pytest.approx([0.05, 0.05, 0.025, 0.025])
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    adamw = finetune(model, train, val, dataclasses.replace(config, optimizer="adamw"),
                     stream=io.StringIO())
    w = names_of(model, "Conv", 1)[0]
    assert not np.allclose(inits(result.model)[w], inits(adamw.model)[w]), "optimizer option ignored"


def test_scheduled_learning_rate_is_the_one_training_uses():
    """After one step of gamma=1e-6 the second epoch barely moves the weights: a 2-epoch run ends
    where a 1-epoch run does (were the schedule only reported, epoch 2 would train at full lr)."""
    train = regression_task(128, 8)
    model = tiny_classifier(bn=False, seed=5)
    base = dict(lr=0.05, batch_size=16, loss="mse", optimizer="sgd", schedule="step", step_size=1, seed=4)
    one = finetune(model, train, None, TrainConfig(epochs=1, gamma=0.5, **base), stream=io.StringIO())
    two = finetune(model, train, None, TrainConfig(epochs=2, gamma=1e-6, **base), stream=io.StringIO())
    assert [r["lr"] for r in two.history] == pytest.approx([0.05, 0.05e-6])
    assert two.best_epoch == 2, two.history  # mse without validation: the lower training loss wins
    a, b, start = inits(one.model), inits(two.model), inits(model)
    w = names_of(model, "Conv", 1)[0]
    assert not np.allclose(a[w], start[w], atol=1e-3), "the first epoch did not train"
    for name in a:
        assert np.allclose(a[name], b[name], atol=1e-5), f"{name} moved at lr 5e-8"


def test_cosine_schedule_decreases(train_val):
    train, val = train_val
    config = TrainConfig(epochs=4, lr=0.02, batch_size=32, schedule="cosine")
    result = finetune(tiny_classifier(), train, None, config, stream=io.StringIO())
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] == pytest.approx(0.02)
    assert all(a > b for a, b in zip(lrs, lrs[1:])), lrs
    assert lrs == pytest.approx([0.02 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert all("val_acc" not in r for r in result.history)


# --------------------------------------------------------------------------- 4. resume
def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, train_val):
    train, val = train_val
    model = tiny_classifier()
    config = TrainConfig(epochs=4, lr=0.03, batch_size=16, seed=7)
    ck = tmp_path / "ck"

    stop = StopAfter(3)  # the third epoch's line: epochs 1 and 2 are done and checkpointed
    with pytest.raises(KeyboardInterrupt):
        finetune(model, train, val, config, checkpoint=ck, stream=stop)
    assert len(stop.lines) == 2

    stream = io.StringIO()
    resumed = finetune(model, train, val, config, checkpoint=ck, stream=stream)
    full = finetune(model, train, val, config, stream=io.StringIO())

    assert resumed.resumed_from == 2
    assert full.resumed_from == 0
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    # the first two rows are the interrupted run's, as printed then
    printed = [line.strip() for line in stop.lines]
    again = io.StringIO()
    for row in resumed.history[:2]:
        again.write(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()) + "\n")
    assert again.getvalue().splitlines() == printed
    # only the remaining epochs were trained (and printed) by the resumed run
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["3", "4"]
    for got, want in zip(resumed.history, full.history):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-6), (k, got, want)
    assert resumed.best_epoch == full.best_epoch
    a, b = inits(resumed.model), inits(full.model)
    for name in a:
        assert np.allclose(a[name], b[name], atol=1e-5), f"{name} differs after resume"


def test_finished_checkpoint_is_reused_and_a_new_config_is_refused_unless_restarted(tmp_path, train_val):
    train, val = train_val
    model = tiny_classifier()
    ck = tmp_path / "ck"
    config = TrainConfig(epochs=2, lr=0.03, batch_size=32, seed=1)
    first = finetune(model, train, val, config, checkpoint=ck, stream=io.StringIO())
    assert first.resumed_from == 0 and len(first.history) == 2
    again = finetune(model, train, val, config, checkpoint=ck, stream=io.StringIO())
    assert again.resumed_from == 2 and again.history == first.history
    a, b = inits(first.model), inits(again.model)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    from passes.finetune import CheckpointError
    with pytest.raises(CheckpointError, match="--epochs 2, this run has 3"):
        finetune(model, train, val, TrainConfig(epochs=3, lr=0.01, batch_size=32, seed=1),
                 checkpoint=ck, stream=io.StringIO())
    other = finetune(model, train, val, TrainConfig(epochs=3, lr=0.01, batch_size=32, seed=1),
                     checkpoint=ck, stream=io.StringIO(), restart=True)
    assert other.resumed_from == 0 and len(other.history) == 3
    assert other.history[0]["lr"] == pytest.approx(0.01)


# --------------------------------------------------------------------------- 5. bad data
def _good(n=32, seed=9):
    return models.channel_task(n, seed)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


class _Unpickle:
    """Unpickling this creates ``marker``: proof that an object array was unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _bad_file(kind: str, tmp: Path) -> Path:
    x, y = _good()
    if kind == "missing":
        return tmp / "missing.npz"
    if kind == "no-y":
        return _npz(tmp / "no_y.npz", x=x)
    if kind == "text":
        path = tmp / "text.npz"
        path.write_text("x,y\n1,2\n")
        return path
    if kind == "empty":
        path = tmp / "empty.npz"
        path.write_bytes(b"")
        return path
    if kind == "npy":
        path = tmp / "plain.npy"
        np.save(path, x)
        return path
    if kind == "object":
        objs = np.empty(len(y), dtype=object)
        objs[:] = [_Unpickle(tmp / "UNPICKLED") for _ in range(len(y))]
        return _npz(tmp / "object.npz", x=objs, y=y)
    if kind == "float64":
        return _npz(tmp / "float64.npz", x=x.astype(np.float64), y=y)
    if kind == "spatial":
        return _npz(tmp / "spatial.npz", x=np.zeros((len(y), 2, 5, 5), np.float32), y=y)
    if kind == "range":
        return _npz(tmp / "range.npz", x=x, y=np.where(y == 2, N_CLASSES, y))
    if kind == "float-labels":
        return _npz(tmp / "float_labels.npz", x=x, y=y.astype(np.float32))
    if kind == "lengths":
        return _npz(tmp / "lengths.npz", x=x, y=y[:-1])
    raise AssertionError(kind)


FILE_CASES = ["missing", "no-y", "text", "empty", "npy", "object", "float64", "spatial", "range",
              "float-labels", "lengths"]


def _check_data_error(exc: DataError, where: str) -> None:
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    assert where in text, f"{where!r} not named in {text!r}"


@pytest.mark.parametrize("kind", FILE_CASES)
def test_bad_data_file_is_one_data_error_before_training(tmp_path, kind):
    path = _bad_file(kind, tmp_path)
    stream, ck = io.StringIO(), tmp_path / "ck"
    with pytest.raises(DataError) as info:
        finetune(tiny_classifier(), path, None, TrainConfig(epochs=1), checkpoint=ck, stream=stream)
    _check_data_error(info.value, path.name)
    assert not ck.exists(), "training was set up before the data was checked"
    assert stream.getvalue() == ""
    assert not (tmp_path / "UNPICKLED").exists(), "the data file was unpickled"


def _bad_arrays(kind: str):
    x, y = _good()
    return {
        "float64": (x.astype(np.float64), y),
        "spatial": (np.zeros((len(y), 2, 5, 5), np.float32), y),
        "rank": (x.reshape(len(y), -1), y),
        "range": (x, np.where(y == 2, N_CLASSES, y)),
        "negative-label": (x, np.where(y == 2, -1, y)),
        "float-labels": (x, y.astype(np.float32)),
        "2d-labels": (x, y[:, None]),
        "lengths": (x, y[:-1]),
        "batch-lengths": [(x[:8], y[:8]), (x[8:16], y[8:15])],
        "not-a-pair": [(x[:8], y[:8]), (x[8:16],)],
        "no-batches": [],
    }[kind]


@pytest.mark.parametrize("kind", ["float64", "spatial", "rank", "range", "negative-label", "float-labels",
                                  "2d-labels", "lengths", "batch-lengths", "not-a-pair", "no-batches"])
def test_bad_training_arrays_are_one_data_error_before_training(tmp_path, kind):
    stream, ck = io.StringIO(), tmp_path / "ck"
    with pytest.raises(DataError) as info:
        finetune(tiny_classifier(), _bad_arrays(kind), None, TrainConfig(epochs=1), checkpoint=ck, stream=stream)
    _check_data_error(info.value, "training data")
    assert not ck.exists() and stream.getvalue() == ""


def test_bad_validation_data_is_named_as_such(tmp_path):
    ck = tmp_path / "ck"
    x, y = _good()
    with pytest.raises(DataError) as info:
        finetune(tiny_classifier(), (x, y), (x.astype(np.float64), y), TrainConfig(epochs=1), checkpoint=ck)
    _check_data_error(info.value, "validation data")
    assert not ck.exists()


def test_mse_targets_must_fit_the_output(tmp_path):
    x, _ = _good()
    for y in (np.zeros((len(x), 4), np.float32), np.zeros((len(x), 3), np.float64)):
        with pytest.raises(DataError) as info:
            finetune(tiny_classifier(), (x, y), None, TrainConfig(epochs=1, loss="mse"), checkpoint=tmp_path / "ck")
        _check_data_error(info.value, "training data")
    assert not (tmp_path / "ck").exists()


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_classifier(), str(path))
    return path


@pytest.mark.parametrize("kind", FILE_CASES)
def test_cli_bad_data_exits_1_with_one_error_line(tmp_path, model_file, capfd, kind):
    bad = _bad_file(kind, tmp_path)
    out = tmp_path / "out.onnx"
    code = cli.main(["finetune", str(model_file), "--data", str(bad), "-o", str(out), "--epochs", "1"])
    stdout, err = capfd.readouterr()
    assert code == 1, (stdout, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got {err!r}"
    assert lines[0].startswith("error:")
    assert bad.name in lines[0], lines[0]
    assert "internal error" not in lines[0], lines[0]
    assert not out.exists()
    assert not (tmp_path / "UNPICKLED").exists()


# --------------------------------------------------------------------------- 6. the pass
@pytest.fixture(scope="module")
def pruned_plain():
    return pipeline.prune(tiny_classifier(), passes=pipeline.build_spec(0.5))


def test_finetune_pass_at_the_end_of_a_spec(train_val, pruned_plain):
    train, val = train_val
    spec = pipeline.build_spec(0.5) + ",finetune{epochs=2 lr=0.01}"
    result = pipeline.prune(tiny_classifier(), passes=spec, train_data=train, val_data=val)
    report = result.report
    assert report["verified"] is True
    assert [p["name"] for p in report["passes"]][-2:] == ["validate", "finetune"]
    assert len(report["finetune"]["history"]) == 2
    assert report["finetune"]["best_epoch"] in (1, 2)
    assert "val_acc" in report["finetune"]["history"][-1]
    assert report["params_after"] < report["params_before"]
    # the pruned shapes are kept and only the weights were trained after pruning
    a, b = inits(pruned_plain.model), inits(result.model)
    assert {n: v.shape for n, v in a.items()} == {n: v.shape for n, v in b.items()}
    conv_w = names_of(result.model, "Conv", 1)[0]
    assert b[conv_w].shape[0] == 2
    assert not np.array_equal(a[conv_w], b[conv_w])
    assert evaluate(result.model, val) == pytest.approx(
        report["finetune"]["history"][report["finetune"]["best_epoch"] - 1]["val_acc"], abs=1 / len(val[1]))


def test_finetune_pass_keeps_the_group_report(train_val, pruned_plain):
    """Issue 15.2: a finetune pass after slice used to wipe the groups ("groups 0 pruned of 0")."""
    train, val = train_val
    spec = pipeline.build_spec(0.5) + ",finetune{epochs=1 lr=0.01}"
    report = pipeline.prune(tiny_classifier(), passes=spec, train_data=train, val_data=val).report
    assert report["groups"] and report["groups"] == pruned_plain.report["groups"]
    assert any(g["pruned"] for g in report["groups"])


def test_api_train_data_fine_tunes_the_default_pipeline(train_val, pruned_plain):
    """Issue 15.1: prune(train_data=, val_data=) without a spec runs fine-tuning (it used to do nothing)."""
    train, val = train_val
    result = pipeline.prune(tiny_classifier(), ratio=0.5, train_data=train, val_data=val)
    report = result.report
    assert [p["name"] for p in report["passes"]][-2:] == ["validate", "finetune"]
    assert report["verified"] is True and len(report["finetune"]["history"]) == 3
    a, b = inits(pruned_plain.model), inits(result.model)
    assert {n: v.shape for n, v in a.items()} == {n: v.shape for n, v in b.items()}
    assert any(not np.array_equal(a[n], b[n]) for n in a)


def test_api_train_data_with_a_spec_lacking_finetune_is_refused(train_val):
    train, val = train_val
    with pytest.raises(pipeline.SpecError, match="no finetune pass"):
        pipeline.prune(tiny_classifier(), passes=pipeline.build_spec(0.5), train_data=train)
    with pytest.raises(pipeline.SpecError, match="needs train_data"):
        pipeline.prune(tiny_classifier(), val_data=val)


def test_finetune_pass_reads_data_from_spec_paths(tmp_path, train_val):
    (x, y), (xv, yv) = train_val
    tr, va = _npz(tmp_path / "train.npz", x=x, y=y), _npz(tmp_path / "val.npz", x=xv, y=yv)
    spec = pipeline.build_spec(0.5) + f",finetune{{epochs=1 lr=0.01 data={tr} val={va}}}"
    result = pipeline.prune(tiny_classifier(), passes=spec)
    assert result.report["verified"] is True
    hist = result.report["finetune"]["history"]
    assert len(hist) == 1 and "val_acc" in hist[0]


def test_finetune_pass_without_data_fails_clearly():
    spec = pipeline.build_spec(0.5) + ",finetune{epochs=1}"
    with pytest.raises(pipeline.PipelineError) as info:
        pipeline.prune(tiny_classifier(), passes=spec)
    text = str(info.value)
    assert "finetune" in text and "training data" in text, text


def test_finetune_pass_with_bad_spec_data_fails_clearly(tmp_path):
    spec = pipeline.build_spec(0.5) + f",finetune{{epochs=1 data={tmp_path / 'nope.npz'}}}"
    with pytest.raises(pipeline.PipelineError) as info:
        pipeline.prune(tiny_classifier(), passes=spec)
    assert "nope.npz" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- 7. the CLI
def test_cli_finetune_writes_a_model_and_a_summary(tmp_path, model_file, train_val, capsys):
    (x, y), (xv, yv) = train_val
    tr, va = _npz(tmp_path / "train.npz", x=x, y=y), _npz(tmp_path / "val.npz", x=xv, y=yv)
    out = tmp_path / "tuned.onnx"
    source = model_file.read_bytes()
    code = cli.main(["finetune", str(model_file), "--data", str(tr), "--val", str(va), "-o", str(out),
                     "--epochs", "2", "--lr", "0.01"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert model_file.read_bytes() == source, "the input model was modified"
    tuned = onnx.load(str(out))
    onnx.checker.check_model(tuned)
    original = onnx.load(str(model_file))
    assert [i.name for i in tuned.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in tuned.graph.output] == [o.name for o in original.graph.output]
    assert [n.op_type for n in tuned.graph.node] == [n.op_type for n in original.graph.node]
    assert "fine-tuned 2 epochs" in stdout and "best epoch" in stdout, stdout
    w = names_of(original, "Conv", 1)[0]
    assert not np.array_equal(inits(original)[w], inits(tuned)[w])
    assert 0.0 <= evaluate(tuned, (xv, yv)) <= 1.0


def test_cli_finetune_freeze_and_checkpoint(tmp_path, model_file, train_val, capsys):
    (x, y), _ = train_val
    tr = _npz(tmp_path / "train.npz", x=x, y=y)
    original = onnx.load(str(model_file))
    w = names_of(original, "Conv", 1)[0]
    argv = ["finetune", str(model_file), "--data", str(tr), "-o", str(tmp_path / "o.onnx"), "--epochs", "1",
            "--freeze", w, "--checkpoint", str(tmp_path / "ck")]
    assert cli.main(argv) == 0
    assert "resumed after 0" in capsys.readouterr().out
    np.testing.assert_array_equal(inits(onnx.load(str(tmp_path / "o.onnx")))[w], inits(original)[w])
    assert cli.main(argv) == 0
    assert "resumed after 1" in capsys.readouterr().out


def test_cli_finetune_bad_option_is_a_usage_error(tmp_path, model_file, train_val, capsys):
    (x, y), _ = train_val
    tr = _npz(tmp_path / "train.npz", x=x, y=y)
    out = tmp_path / "o.onnx"
    code = cli.main(["finetune", str(model_file), "--data", str(tr), "-o", str(out), "--epochs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
    assert not out.exists()


# --------------------------------------------------------------------------- 8. the demo job
def test_demo_on_a_small_budget(tmp_path):
    report = demo_run(tmp_path)
    acc = report["accuracy"]
    for key in ("unpruned", "pruned", "finetuned", "recovered", "recovered_finetuned"):
        assert 0.0 <= acc[key] <= 1.0, acc
    assert report["recovery"]["applied"] and report["recovery"]["heldout_samples"] == 64
    assert report["params"][1] < report["params"][0]
    assert report["flops"][1] < report["flops"][0]
    assert report["verified"] is True
    png = tmp_path / "demo-channels.png"
    assert png.read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "demo-report.json").read_text())
    assert saved["accuracy"] == pytest.approx(acc)
    assert saved["params"] == report["params"] and saved["flops"] == report["flops"]
    for name in ("digits_resnet.onnx", "digits_resnet.pruned.onnx"):
        onnx.checker.check_model(onnx.load(str(tmp_path / name)))
    # issue 15.6: the README's demo block is the demo's whole standard output (numbers aside)
    import re
    from workflows import demo
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("$ .venv/bin/onnxpruner demo\n", 1)[1].split("```", 1)[0].rstrip("\n").splitlines()
    printed = (demo.format_report(report) + "\nwrote demo-output/digits_resnet.onnx, digits_resnet.pruned.onnx, "
               "demo-report.json, demo-channels.png").splitlines()

    def shape(line):
        return re.sub(r"-?\d[\d,]*(\.\d+)?(e[-+]\d+)?", "N", line)
    assert [shape(x) for x in block] == [shape(x) for x in printed]


def demo_run(out_dir: Path) -> dict:
    from workflows import demo

    return demo.run(out_dir, epochs=2, finetune_epochs=1, stream=io.StringIO())


def test_a_checkpoint_from_before_a_setting_existed_resumes_under_its_old_value(tmp_path, train_val):
    import json

    train, val = train_val
    model = tiny_classifier()
    ck = tmp_path / "ck"
    config = TrainConfig(epochs=2, lr=0.03, batch_size=32, seed=1)
    first = finetune(model, train, val, config, checkpoint=ck, stream=io.StringIO())
    saved = json.loads((ck / "progress.json").read_text())
    for key in ("warmup", "holdout", "keep-start"):  # as a checkpoint written before them has it
        del saved["settings"][key]
    (ck / "progress.json").write_text(json.dumps(saved))
    again = finetune(model, train, val, config, checkpoint=ck, stream=io.StringIO())
    assert again.resumed_from == 2 and again.history == first.history
    from passes.finetune import CheckpointError
    with pytest.raises(CheckpointError, match="--warmup 0.0, this run has 1.0"):
        finetune(model, train, val, TrainConfig(epochs=2, lr=0.03, batch_size=32, seed=1, warmup=1.0),
                 checkpoint=ck, stream=io.StringIO())
