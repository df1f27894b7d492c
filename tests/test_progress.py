"""Issue 15.5: progress on long work. One switch (``passes.progress``): tqdm bars on a terminal,
one JSON object a line for scripts, nothing when stderr is not a terminal or with ``--quiet``."""

from __future__ import annotations

import io
import json

import pytest

import models
import pipeline
from passes import progress, validate
from passes.finetune import TrainConfig, finetune
from workflows import sensitivity


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def restore():
    yield
    progress.configure("auto", None)


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]   # every line is one JSON object


def _classifier():
    b = models.Builder(3, name="c")
    x = b.input("x", [1, 2, 4, 4])
    y = b.relu(b.conv(x, 2, 6))
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    return b.build([b.gemm(y, 6, 3)])


def test_json_mode_reports_validation_of_a_large_model(monkeypatch):
    buf = io.StringIO()
    progress.configure("json", buf)
    monkeypatch.setattr(validate, "LARGE", 0)           # every model counts as large
    pipeline.prune(models.chain(), ratio=0.5)
    events = [e for e in _events(buf.getvalue()) if e["task"] == "validate: ONNX Runtime"]
    assert [e["event"] for e in events] == ["start", "update", "update", "end"]
    assert events[-1]["done"] == events[-1]["total"] == 2 and events[-1]["seconds"] >= 0


def test_a_small_model_validates_without_a_bar():
    buf = io.StringIO()
    progress.configure("json", buf)
    pipeline.prune(models.chain(), ratio=0.5)
    assert buf.getvalue() == ""


def test_fine_tuning_epochs_and_sensitivity_sweeps_report_progress():
    buf = io.StringIO()
    progress.configure("json", buf)
    train = models.channel_task(64, 1)
    finetune(_classifier(), train, None, TrainConfig(epochs=2, batch_size=16))
    events = _events(buf.getvalue())
    assert [e["task"] for e in events if e["event"] == "start"] == ["epoch 1/2", "epoch 2/2"]
    updates = [e for e in events if e["event"] == "update" and e["task"] == "epoch 1/2"]
    assert len(updates) == 4 and "loss" in updates[-1]
    assert [e["epoch"] for e in events if e["event"] == "note"] == [1, 2]
    buf.truncate(0), buf.seek(0)
    sensitivity.analyze(_classifier(), models.channel_task(30, 2), steps=(0.3, 0.6))
    sweep = [e for e in _events(buf.getvalue()) if e["task"] == "sensitivity"]
    assert sweep[0] == {"event": "start", "task": "sensitivity", "total": 2}
    assert sweep[-1]["event"] == "end" and sweep[-1]["done"] == 2


def test_a_bar_on_a_terminal_and_nothing_on_a_pipe():
    train = models.channel_task(64, 1)
    tty = Tty()
    progress.configure("auto", tty)
    finetune(_classifier(), train, None, TrainConfig(epochs=1, batch_size=16))
    assert "epoch 1/1" in tty.getvalue() and "batch" in tty.getvalue()      # tqdm's line
    pipe = io.StringIO()
    progress.configure("auto", pipe)
    with progress.task("x", 3) as t:
        t.update(3)
    assert pipe.getvalue() == ""
    quiet = Tty()
    progress.configure("off", quiet)
    finetune(_classifier(), train, None, TrainConfig(epochs=1, batch_size=16))
    assert quiet.getvalue() == ""


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown progress mode"):
        progress.configure("loud")
