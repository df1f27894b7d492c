"""A user's files are sacred: what is refused, what is never overwritten or read, what an
interrupt, a dead worker or a diverging training run leaves behind. Each test is a case a user
could hit (issue 12); the command-line ones run ``main`` in-process or the console script."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import external_data_helper

import batch
import ir
import models
from ir import files
from passes.finetune import CheckpointError, DataError, TrainConfig, finetune
from passes.base import PassError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_finetune import tiny_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _external_model(folder: Path, name: str = "m.onnx", location: str = "weights.bin") -> Path:
    """The chain model with every initializer in one external file ``location``."""
    m = models.chain()
    external_data_helper.convert_model_to_external_data(m, all_tensors_to_one_file=True,
                                                        location=location, size_threshold=0)
    onnx.save(m, str(folder / name))
    return folder / name


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- reading
def test_external_data_through_a_symlink_out_of_the_folder_is_refused_naming_the_tensor(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    path = _external_model(folder)
    (folder / "weights.bin").unlink()
    (folder / "weights.bin").symlink_to(secret)
    with pytest.raises(ir.ModelLoadError, match=r"tensor '\w+'.*outside the model's folder"):
        ir.load(path)


def test_external_data_that_is_a_fifo_or_a_folder_is_refused(tmp_path):
    path = _external_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    os.mkfifo(tmp_path / "weights.bin")   # reading it would hang for ever
    with pytest.raises(ir.ModelLoadError, match="a FIFO, not a regular file"):
        ir.load(path)
    (tmp_path / "weights.bin").unlink()
    (tmp_path / "weights.bin").mkdir()
    with pytest.raises(ir.ModelLoadError, match="a folder, not a regular file"):
        ir.load(path)


def test_external_data_inside_the_folder_through_a_symlink_still_loads(tmp_path):
    path = _external_model(tmp_path, location="link.bin")
    (tmp_path / "link.bin").rename(tmp_path / "real.bin")
    (tmp_path / "link.bin").symlink_to("real.bin")
    model, external = ir.load(path)
    assert external and all(not external_data_helper.uses_external_data(t) for t in model.graph.initializer)


def test_truncated_external_data_is_one_error_naming_the_tensor(tmp_path):
    path = _external_model(tmp_path)
    data = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(data[:10])
    with pytest.raises(ir.ModelLoadError, match="tensor .* too short"):
        ir.load(path)


# --------------------------------------------------------------------------- the write rule
def test_outputs_that_resolve_to_an_input_are_refused(tmp_path):
    path = _external_model(tmp_path)
    reads = {"model": files.model_files(path), "--calib": str(tmp_path / "calib.npz")}
    (tmp_path / "calib.npz").write_bytes(b"x")
    (tmp_path / "alias.onnx").symlink_to(path)
    for writes, word in [({"-o": tmp_path / "weights.bin"}, "weights.bin"),             # its external data
                         (files.model_writes("-o", tmp_path / "w.onnx"), None),           # fine
                         ({"-o": tmp_path / "alias.onnx"}, "alias.onnx"),                # a symlink to it
                         ({"--report": tmp_path / "calib.npz"}, "calib.npz")]:
        if word is None:
            files.check_writes(writes, reads)
            continue
        with pytest.raises(files.FileRefused, match=word):
            files.check_writes(writes, reads)
    # OUT.onnx.data would be the input's external data file
    (tmp_path / "x.onnx.data").write_bytes(b"")
    path2 = _external_model(tmp_path, "n.onnx", "x.onnx.data")
    with pytest.raises(files.FileRefused, match="external data"):
        files.check_writes(files.model_writes("-o", tmp_path / "x.onnx"), {"model": files.model_files(path2)})


def test_two_outputs_on_one_path_and_non_regular_targets_are_refused(tmp_path):
    with pytest.raises(files.FileRefused, match="is also -o"):
        files.check_writes({"-o": tmp_path / "a.onnx", "--report": tmp_path / "a.onnx"})
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(files.FileRefused, match="FIFO"):
        files.check_writes({"-o": tmp_path / "fifo"})
    with pytest.raises(files.FileRefused, match="a folder"):
        files.check_writes({"-o": tmp_path})
    with pytest.raises(files.FileRefused, match="a device"):
        files.check_writes({"-o": "/dev/null"})
    with pytest.raises(files.FileRefused, match="does not exist"):
        files.check_writes({"-o": tmp_path / "no" / "a.onnx"})


def test_a_failed_part_leaves_every_target_as_it_was(tmp_path):
    (tmp_path / "out.onnx").write_bytes(b"old model")
    with pytest.raises(OSError, match="cannot write .*nowhere/report.json"):
        with files.Staged() as staged:
            staged.write_bytes(tmp_path / "out.onnx", b"new model")
            staged.write_bytes(tmp_path / "nowhere" / "report.json", b"{}")
    assert (tmp_path / "out.onnx").read_bytes() == b"old model"
    assert _temporaries(tmp_path) == []


def test_a_failed_rename_puts_back_the_parts_already_renamed(tmp_path):
    (tmp_path / "out.onnx").write_bytes(b"old model")
    (tmp_path / "report.json").mkdir()          # renaming a file onto a folder fails
    with pytest.raises(OSError, match="report.json"):
        with files.Staged() as staged:
            staged.write_bytes(tmp_path / "out.onnx", b"new model")
            staged.write_bytes(tmp_path / "report.json", b"{}")
    assert (tmp_path / "out.onnx").read_bytes() == b"old model"
    assert _temporaries(tmp_path) == []


def test_stale_temporaries_are_never_appended_and_dead_ones_are_swept(tmp_path):
    path = _external_model(tmp_path)
    model, external = ir.load(path)
    out = tmp_path / "out.onnx"
    (tmp_path / "out.onnx.data.tmp").write_bytes(b"garbage from an old version" * 100)
    dead = tmp_path / ".out.onnx.data.999999999.deadbeef.tmp"   # a killed run's (no such pid)
    dead.write_bytes(b"garbage")
    ir.save(model, out, external)
    ir.save(model, out, external)            # twice: a second save must not grow the data file
    again, _ = ir.load(out)
    assert [t.raw_data for t in again.graph.initializer] == [t.raw_data for t in model.graph.initializer]
    assert (tmp_path / "out.onnx.data").stat().st_size == sum(len(t.raw_data) for t in model.graph.initializer)
    assert not dead.exists()


def test_safe_component_refuses_paths():
    for bad in ("../../x", "/etc/passwd", "a/b", ".hidden", "..", "", "a\nb", None, 3):
        with pytest.raises(files.FileRefused):
            files.safe_component(bad, "variant name")
    assert files.safe_component("resnet50 v1.5", "model name") == "resnet50 v1.5"


# --------------------------------------------------------------------------- training
@pytest.fixture
def task():
    return models.channel_task(64, 1)


def test_nan_in_the_training_data_is_refused_before_training(task):
    x, y = task
    x = x.copy()
    x[5, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="non-finite value .*sample 5"):
        finetune(tiny_classifier(), (x, y), None, TrainConfig(epochs=1), stream=io.StringIO())


def test_a_diverging_loss_keeps_the_best_finite_epoch_or_writes_nothing(task):
    x, y = task
    config = TrainConfig(epochs=4, lr=1e10, optimizer="adamw", schedule="constant")
    r = finetune(tiny_classifier(), (x, y), (x, y), config, stream=io.StringIO())
    assert r.stopped and "epoch 4, step 2" in r.stopped and r.best_epoch >= 1
    assert all(np.isfinite(onnx.numpy_helper.to_array(t)).all() for t in r.model.graph.initializer)
    with pytest.raises(PassError, match="training diverged: loss nan at epoch 1.*nothing written"):
        finetune(tiny_classifier(), (x, y), (x, y), TrainConfig(epochs=2, lr=1e6, optimizer="sgd"),
                 stream=io.StringIO())


def test_a_damaged_progress_file_and_other_settings_are_refused_naming_why(tmp_path, task):
    x, y = task
    ck = tmp_path / "ck"
    config = TrainConfig(epochs=1, lr=0.01)
    finetune(tiny_classifier(), (x, y), None, config, checkpoint=ck, stream=io.StringIO())
    assert _temporaries(ck) == [] and (ck / "progress.json").is_file()
    with pytest.raises(CheckpointError, match="--lr 0.01, this run has 0.02"):
        finetune(tiny_classifier(), (x, y), None, TrainConfig(epochs=1, lr=0.02), checkpoint=ck,
                 stream=io.StringIO())
    with pytest.raises(CheckpointError, match="different training data"):
        finetune(tiny_classifier(), (x[:32], y[:32]), None, config, checkpoint=ck, stream=io.StringIO())
    text = (ck / "progress.json").read_text()
    (ck / "progress.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="progress.json: damaged checkpoint.*--force"):
        finetune(tiny_classifier(), (x, y), None, config, checkpoint=ck, stream=io.StringIO())
    r = finetune(tiny_classifier(), (x, y), None, config, checkpoint=ck, stream=io.StringIO(), restart=True)
    assert r.resumed_from == 0 and len(r.history) == 1


# --------------------------------------------------------------------------- batch
@pytest.fixture
def two_models(tmp_path):
    for name in ("chain", "concat"):
        onnx.save(models.PATTERNS[name](), str(tmp_path / f"{name}.onnx"))
    return tmp_path


def test_plan_names_that_are_paths_are_plan_errors(two_models):
    for models_, variants in ([[{"path": str(two_models / "chain.onnx"), "name": "../../x"}], []],
                              [[str(two_models / "chain.onnx")], [{"name": "../../x", "ratio": 0.3}]],
                              [[str(two_models / "chain.onnx")], [{"name": "/tmp/abs", "ratio": 0.3}]]):
        with pytest.raises(batch.PlanError, match="not a safe folder name"):
            batch.make_jobs(models_, variants)


def test_batch_output_that_is_an_input_is_refused(two_models):
    jobs = batch.make_jobs([str(two_models / "chain.onnx")], [{"name": "r", "ratio": 0.3}])
    target = two_models / "out" / "chain" / "r"
    target.mkdir(parents=True)
    (target / "model.onnx").symlink_to(two_models / "chain.onnx")
    with pytest.raises(batch.PlanError, match="refusing to overwrite an input"):
        batch.run_batch(jobs, two_models / "out")


def test_resume_rechecks_each_output_against_its_sha256(two_models):
    jobs = batch.make_jobs([str(two_models / "chain.onnx")], [{"name": "r", "ratio": 0.3}])
    first = batch.run_batch(jobs, two_models / "out", stream=io.StringIO())
    out = two_models / "out" / "chain" / "r" / "model.onnx"
    good = out.read_bytes()
    assert batch.run_batch(jobs, two_models / "out", stream=io.StringIO()).skipped == 1
    out.write_bytes(good[:100])                      # damaged since: run again
    again = batch.run_batch(jobs, two_models / "out", stream=io.StringIO())
    assert again.skipped == 0 and out.read_bytes() == good
    assert batch.comparable(again.rows) == batch.comparable(first.rows)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_a_killed_worker_is_its_jobs_failed_row_and_the_others_finish(two_models):
    out = two_models / "out"
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "onnxpruner"), "batch", two_models / "chain.onnx",
                             two_models / "concat.onnx", "-o", out, "--ratio", "0.3", "0.5", "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    victims: list[int] = []
    while time.time() < deadline and not victims:   # the spawn workers (not the resource tracker)
        victims = [c for c in _children(proc.pid)
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        time.sleep(0.05)
    assert victims, "no worker started"
    os.kill(victims[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)
    assert "Traceback" not in stderr and "BrokenProcessPool" not in stderr + stdout
    rows = list(__import__("csv").DictReader((out / "summary.csv").open()))
    assert len(rows) == 4
    died = [r for r in rows if r["error"]]
    assert [r["error"] for r in died] == ["worker died: signal 9"]
    assert all(r["verified"] == "True" for r in rows if not r["error"])
    assert proc.returncode == 1 and _temporaries(out) == []
