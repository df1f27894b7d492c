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

from workflows import batch
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


def _with_big_weights(nodes, inits, name: str = "g") -> onnx.GraphProto:
    """A graph y = x (Identity) beside ``nodes``, whose initializers ``inits`` are large enough
    for the file rule's scan to walk them and whose bytes spell ``location`` (b"location" * 1024)."""
    spelled = np.frombuffer(b"location" * 1024, dtype=np.float32).copy()
    big = [onnx.numpy_helper.from_array(spelled, f"{name}_w{i}") for i in range(3)]
    io = ([onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
          [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    return onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])] + nodes, name,
                                  *io, initializer=big + inits)


def test_the_write_rule_finds_external_data_wherever_a_tensor_may_hold_it(tmp_path, monkeypatch):
    """``model_files`` parses a model only when ``location`` occurs outside the tensors' numeric
    data, and then names every external-data file: an initializer's, a Constant's (a node's
    attribute), a Loop body's initializer's; weights whose bytes spell ``location`` alone cause no
    parse, and bytes that are not a model are searched whole."""
    parsed = []
    load = onnx.load
    monkeypatch.setattr(onnx, "load", lambda *a, **k: parsed.append(a[0]) or load(*a, **k))

    def external(name: str, location: str) -> onnx.TensorProto:
        t = onnx.numpy_helper.from_array(np.arange(2048, dtype=np.float32), name)
        external_data_helper.set_external_data(t, location)
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.doc_string = "long enough to be walked, not searched whole " * 100
        return t

    def save(graph: onnx.GraphProto, name: str) -> Path:
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        (tmp_path / name).write_bytes(model.SerializeToString())
        return tmp_path / name

    plain = save(_with_big_weights([], []), "plain.onnx")
    assert files.model_files(plain) == [str(plain)] and parsed == []
    init = save(_with_big_weights([], [external("e", "init.bin")]), "init.onnx")
    const = onnx.helper.make_node("Constant", [], ["c"], value=external("c", "const.bin"))
    in_node = save(_with_big_weights([const], []), "node.onnx")
    body = _with_big_weights([], [external("b", "body.bin")], "body")
    loop = onnx.helper.make_node("Loop", ["", ""], [], body=body)
    in_body = save(_with_big_weights([loop], []), "body.onnx")
    for path, data in [(init, "init.bin"), (in_node, "const.bin"), (in_body, "body.bin")]:
        assert files.model_files(path) == [str(path), str(tmp_path / data)], path.name
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff" * 100 + b"location")
    parsed.clear()
    assert files.model_files(garbage) == [str(garbage)] and parsed == [str(garbage)]


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


# --------------------------------------------------------------------------- the command line
def _main(capsys, *argv):
    import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _one_line(err: str, *names: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture
def ext(tmp_path):
    """A model with external data, and a calibration file and ratio plan beside it."""
    path = _external_model(tmp_path)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    (tmp_path / "ratios.json").write_text(json.dumps({"ratios": {}}))
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("argv, name", [
    (["-o", "{d}/weights.bin"], "weights.bin"),                      # the input's external data
    (["-o", "{d}/out.onnx", "--report", "{d}/out.onnx"], "out.onnx"),  # the report on the model
    (["-o", "{d}/out.onnx", "--report", "{d}/calib.npz", "--criterion", "hrank", "--calib", "{d}/calib.npz"],
     "calib.npz"),
    (["-o", "{d}/out.onnx", "--report", "{d}/ratios.json", "--ratios", "{d}/ratios.json"], "ratios.json"),
    (["-o", "{d}/m.onnx"], "m.onnx"),
])
def test_prune_refuses_outputs_that_are_inputs_and_changes_nothing(capsys, ext, argv, name):
    d = ext.parent
    argv = [a.format(d=d) for a in argv]
    before = _digests(d)
    code, _, err = _main(capsys, "prune", ext, *argv)
    assert code == 2
    _one_line(err, name)
    assert _digests(d) == before


def test_output_whose_data_file_is_the_inputs_external_data_is_refused(capsys, tmp_path):
    path = _external_model(tmp_path, "m.onnx", "out.onnx.data")
    before = _digests(tmp_path)
    code, _, err = _main(capsys, "prune", path, "-o", tmp_path / "out.onnx")
    assert code == 2
    _one_line(err, "out.onnx.data")
    assert _digests(tmp_path) == before


def test_inspect_finetune_and_sensitivity_never_write_their_inputs(capsys, tmp_path, task):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_classifier(), str(model))
    x, y = task
    np.savez(tmp_path / "d.npz", x=x, y=y)
    before = _digests(tmp_path)
    for argv, name in [(["inspect", model, "--dot", model], "m.onnx"),
                       (["finetune", model, "--data", tmp_path / "d.npz", "-o", tmp_path / "d.npz"], "d.npz"),
                       (["sensitivity", model, "--val", tmp_path / "d.npz", "-o", tmp_path / "d.npz"], "d.npz"),
                       (["sensitivity", model, "--val", tmp_path / "d.npz", "--plot", model], "m.onnx")]:
        code, _, err = _main(capsys, *argv)
        assert code == 2, argv
        _one_line(err, name)
    assert _digests(tmp_path) == before


def test_fifo_folder_and_device_outputs_are_refused(capsys, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(model))
    os.mkfifo(tmp_path / "fifo")
    for target, word in ((tmp_path / "fifo", "FIFO"), (tmp_path, "folder"), ("/dev/null", "device")):
        code, _, err = _main(capsys, "prune", model, "-o", target)
        assert code == 2
        _one_line(err, word)
    assert (tmp_path / "fifo").is_fifo() and Path("/dev/null").is_char_device()


def test_a_failed_report_write_keeps_the_old_model_and_names_the_report(capsys, tmp_path, monkeypatch):
    import errno

    model = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(model))
    (tmp_path / "out.onnx").write_bytes(b"the previous result")
    real = files.Staged.write_bytes

    def full_disk(self, target, data):
        if str(target).endswith("r.json"):
            raise files._write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), target)
        return real(self, target, data)

    monkeypatch.setattr(files.Staged, "write_bytes", full_disk)
    code, _, err = _main(capsys, "prune", model, "-o", tmp_path / "out.onnx", "--report", tmp_path / "r.json")
    assert code == 1
    _one_line(err, "r.json", "No space left on device")
    assert ".tmp" not in err
    assert (tmp_path / "out.onnx").read_bytes() == b"the previous result"
    assert _temporaries(tmp_path) == [] and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("argv, option", [
    (["--heads", "nan"], "--heads"), (["--ratio", "nan"], "--ratio"), (["--ratio", "1.5"], "--ratio"),
    (["--dump-after", "bogus"], "bogus"), (["--max-ratio", "inf"], "--max-ratio"),
    (["--target-flops", "-0.1"], "--target-flops"), (["--seed", "-1"], "--seed"),
])
def test_options_are_range_checked_before_anything_runs(capsys, tmp_path, argv, option):
    model = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(model))
    code, _, err = _main(capsys, "prune", model, "-o", tmp_path / "out.onnx", *argv)
    assert code == 2
    _one_line(err, option)
    assert not (tmp_path / "out.onnx").exists()


def test_training_options_are_range_checked(capsys, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_classifier(), str(model))
    for argv, option in ((["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--epochs", "0"], "--epochs"),
                         (["--batch-size", "0"], "--batch-size")):
        code, _, err = _main(capsys, "finetune", model, "--data", tmp_path / "d.npz", "-o", tmp_path / "o.onnx", *argv)
        assert code == 2
        _one_line(err, option)


def test_passes_without_validate_warn_and_report_no_proof(capsys, tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(model))
    code, _, err = _main(capsys, "prune", model, "-o", tmp_path / "o.onnx", "--report", tmp_path / "r.json",
                         "--passes", "tag,trees,classify,score,mask{ratio=0.5},slice,infer-shapes")
    assert code == 0 and "warning:" in err and "NOT proven" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verified"] is None and report["proof"] == "not run"


def test_leaky_messages_name_the_node_the_input_or_the_file(capsys, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    empty = numpy_helper.from_array(np.zeros((0, 3, 3, 3), np.float32), "w")
    w2 = numpy_helper.from_array(np.ones((4, 0, 1, 1), np.float32), "w2")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv0"),
                           helper.make_node("Conv", ["y", "w2"], ["z"], name="conv1")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 6, 6])], [empty, w2])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "zero.onnx"))
    code, _, err = _main(capsys, "prune", tmp_path / "zero.onnx", "-o", tmp_path / "o.onnx")
    assert code == 1
    _one_line(err, "conv0", "empty weight")

    b = models.Builder(0, name="tall")
    y = b.conv(b.input("x", [1, 3, 10**9, 1]), 3, 4)
    onnx.save(b.build([b.conv(b.relu(y), 4, 4)]), str(tmp_path / "tall.onnx"))
    start = time.perf_counter()
    code, _, err = _main(capsys, "prune", tmp_path / "tall.onnx", "-o", tmp_path / "o.onnx")
    assert code == 1 and time.perf_counter() - start < 30
    _one_line(err, "'x'", "memory budget")

    onnx.save(models.chain(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "nan.npz", x=np.full((4, 3, 8, 8), np.nan, np.float32))
    code, _, err = _main(capsys, "prune", tmp_path / "m.onnx", "-o", tmp_path / "o.onnx",
                         "--criterion", "hrank", "--calib", tmp_path / "nan.npz")
    assert code == 1
    _one_line(err, "nan.npz", "non-finite")
    assert "SVD" not in err and not (tmp_path / "o.onnx").exists()


def test_finetune_never_writes_a_nan_model(capsys, tmp_path, task):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_classifier(), str(model))
    x, y = task
    np.savez(tmp_path / "d.npz", x=x, y=y)
    code, _, err = _main(capsys, "finetune", model, "--data", tmp_path / "d.npz", "--val", tmp_path / "d.npz",
                         "-o", tmp_path / "o.onnx", "--lr", "1e6", "--optimizer", "sgd", "--epochs", "2")
    assert code == 1
    _one_line(err, "training diverged", "epoch 1")
    assert not (tmp_path / "o.onnx").exists()
    x = x.copy()
    x[3] = np.inf
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    code, _, err = _main(capsys, "finetune", model, "--data", tmp_path / "bad.npz", "-o", tmp_path / "o.onnx")
    assert code == 1
    _one_line(err, "bad.npz", "non-finite")


def test_a_batch_plan_that_names_paths_is_a_plan_error(capsys, two_models):
    plan = two_models / "plan.json"
    plan.write_text(json.dumps({"models": ["chain.onnx"], "variants": [{"name": "../../x", "ratio": 0.3}]}))
    code, _, err = _main(capsys, "batch", "--plan", plan, "-o", two_models / "out")
    assert code == 2
    _one_line(err, "../../x")
    assert not (two_models / "out").exists() and not (two_models.parent / "x").exists()


# --------------------------------------------------------------------------- interrupts
def _slow_model(path: Path) -> Path:
    """Big enough that the passes after ``tag`` take a while (so a signal lands mid-run: the
    proof's two ORT runs take seconds, not the ~0.1 s the analyses after ``tag`` take)."""
    b = models.Builder(0, name="slow")
    y = b.input("x", [1, 64, 64, 64])
    for _ in range(24):
        y = b.relu(b.conv(y, 64, 64))
    onnx.save(b.build([y]), str(path))
    return path


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_prune_says_one_word_and_leaves_nothing(tmp_path, sig, code):
    model = _slow_model(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    (out / "o.onnx").write_bytes(b"previous")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "onnxpruner"), "prune", model, "-o", out / "o.onnx",
                             "--report", out / "r.json", "--time-passes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()            # the first pass finished: work is under way
    assert first.strip(), "no timing line"
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == code, rest
    assert rest.strip().splitlines()[-1] == "interrupted" and "Traceback" not in rest
    assert sorted(p.name for p in out.iterdir()) == ["o.onnx"] and (out / "o.onnx").read_bytes() == b"previous"


def test_an_interrupted_batch_says_how_to_resume_and_leaves_no_temporaries(two_models):
    # 18 jobs; the signal goes as soon as the first job's model is written, so it lands while the
    # others run however fast the machine is (a fixed 0.5 s wait saw all 18 finish on an idle one)
    ratios = [f"0.{i}" for i in range(1, 10)]
    out = two_models / "out"
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "onnxpruner"), "batch", two_models / "chain.onnx",
                             two_models / "concat.onnx", "-o", out, "--ratio", *ratios, "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None \
            and not (out.exists() and any(p.suffix == ".onnx" for p in out.rglob("*"))):
        time.sleep(0.01)
    assert proc.poll() is None, "the batch ended before its first job was seen"
    os.killpg(proc.pid, signal.SIGINT)        # Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("interrupted; run the same command to resume")
    assert _temporaries(out) == [] if out.exists() else True


@pytest.mark.parametrize("checkpoint, hint", [(True, "run the same command to resume from --checkpoint"),
                                              (False, "--checkpoint DIR makes a run resumable")])
def test_an_interrupted_finetune_says_how_to_resume(capsys, tmp_path, task, monkeypatch, checkpoint, hint):
    import cli

    model = tmp_path / "m.onnx"
    onnx.save(tiny_classifier(), str(model))
    x, y = task
    np.savez(tmp_path / "d.npz", x=x, y=y)

    def stopped(*args, **kwargs):        # SIGTERM arriving in the middle of training
        raise files.Interrupted(signal.SIGTERM)

    monkeypatch.setattr(cli, "finetune", stopped)
    extra = ["--checkpoint", tmp_path / "ck"] if checkpoint else []
    code, _, err = _main(capsys, "finetune", model, "--data", tmp_path / "d.npz", "-o", tmp_path / "o.onnx", *extra)
    assert code == 143
    assert err.strip().splitlines() == [err.strip()] and err.startswith("interrupted;") and hint in err
    assert not (tmp_path / "o.onnx").exists()


def test_ctrl_c_while_the_program_is_still_starting_is_one_line(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(model))
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "onnxpruner"), "prune", model, "-o", tmp_path / "o.onnx"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.2)                            # still importing numpy, onnx, ONNX Runtime
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_signal_landing_in_a_weakref_callback_is_raised_again_without_a_traceback(capsys, monkeypatch):
    """The handler runs wherever the program is, also inside a weakref callback (a WeakSet's, when
    an object it held is freed), from which Python cannot propagate: it printed "Exception ignored
    in ..." with a traceback and the interrupt was lost (a batch run's stderr in CI). Now the
    signal is raised again and lands where the program is, silently."""
    import gc
    import weakref

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # put back after the test
    try:
        files.interrupts()

        class Held:
            pass

        def landed(_):  # as if SIGTERM's handler ran inside this callback
            raise files.Interrupted(signal.SIGTERM)

        obj = Held()
        ref = weakref.ref(obj, landed)
        with pytest.raises(files.Interrupted) as info:
            del obj                                    # the callback runs here; its exception cannot leave it
            gc.collect()
            time.sleep(1)                              # the signal raised again: the handler raises here
        assert info.value.exit_code == 143 and ref() is None
        err = capsys.readouterr().err
        assert "Traceback" not in err and "Exception ignored" not in err, err
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_ctrl_c_that_onnx_runtime_swallows_is_still_an_interrupt(monkeypatch):
    """A signal that lands inside ONNX Runtime's native code (importing its extension, setting up a
    session) comes back as ORT's own error ("initialization failed"), which validate would blame on
    the inputs: the handler remembers it, and the ORT entry points raise ``Interrupted`` again."""
    from passes import runtime

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        files.interrupts()
        files.reraise_interrupt()                      # nothing received yet: no-op
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)                              # the handler raises here
        except files.Interrupted:
            pass                                       # what ORT's native code does with it

        def swallowed(*args, **kwargs):
            raise RuntimeError("initialization failed")
        monkeypatch.setattr(runtime, "ort_session", swallowed)
        with pytest.raises(files.Interrupted) as info:
            runtime.run_model(models.chain(), {"x": np.zeros((1, 3, 8, 8), np.float32)})
        assert info.value.exit_code == 130
        files.interrupts()                             # a new command starts clean
        with pytest.raises(RuntimeError, match="initialization failed"):
            runtime.run_model(models.chain(), {"x": np.zeros((1, 3, 8, 8), np.float32)})
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
