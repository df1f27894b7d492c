"""The ``onnxpruner`` command line: exit codes, one-line errors, what is (not) written, reports,
instruments and ``inspect``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import cli
import ir
import models
import pipeline

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = ROOT / ".venv" / "bin" / "onnxpruner"
DEFAULT_PASSES = ["tag", "trees", "classify", "score", "mask", "slice", "infer-shapes", "validate"]


# --------------------------------------------------------------------------- helpers
def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _run_main(capsys, argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_error_line(err: str, *names: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got: {err!r}"
    assert lines[0].startswith("error:"), lines[0]
    for name in names:
        assert name in lines[0], f"{name!r} not named in {lines[0]!r}"
    return lines[0]


def _ort_outputs(model: onnx.ModelProto | str, x: np.ndarray):
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


@pytest.fixture
def chain_file(tmp_path) -> Path:
    return _save(models.chain(), tmp_path / "chain.onnx")


# --------------------------------------------------------------------------- prune: success
def test_prune_writes_a_smaller_model_and_a_full_report(tmp_path, chain_file, capsys):
    before = _sha(chain_file)
    out, report_path = tmp_path / "out.onnx", tmp_path / "report.json"
    code, stdout, err = _run_main(capsys, ["prune", chain_file, "-o", out, "--report", report_path])
    assert code == 0, err
    assert "error" not in err
    assert "params" in stdout  # a summary for the user
    assert _sha(chain_file) == before

    src, pruned = onnx.load(str(chain_file)), onnx.load(str(out))
    onnx.checker.check_model(pruned, full_check=True)
    assert _params(pruned) < _params(src)
    meta = {p.key: p.value for p in pruned.metadata_props}
    assert pipeline.SPEC_METADATA_KEY in meta
    assert meta[pipeline.SPEC_METADATA_KEY].startswith("tag,trees{keep-io=false gqa=groups},classify,score")
    assert "mask{ratio=0.5" in meta[pipeline.SPEC_METADATA_KEY]

    # the pruned model runs and keeps the model's interface
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (y_src,), (y_out,) = _ort_outputs(src, x), _ort_outputs(pruned, x)
    assert y_out.shape == y_src.shape
    assert [i.name for i in pruned.graph.input] == [i.name for i in src.graph.input]
    assert [o.name for o in pruned.graph.output] == [o.name for o in src.graph.output]

    report = json.loads(report_path.read_text())
    assert report["params_before"] == _params(src)
    assert report["params_after"] == _params(pruned)
    assert report["params_after"] < report["params_before"]
    assert 0 < report["flops_after"] < report["flops_before"]
    assert report["verified"] is True
    assert isinstance(report["max_abs_diff"], (int, float)) and report["max_abs_diff"] >= 0
    assert meta[pipeline.SPEC_METADATA_KEY] == report["spec"]

    groups = report["groups"]
    assert groups
    assert sorted(g["id"] for g in groups) == list(range(len(groups)))
    node_names = {n.name for n in src.graph.node}
    for g in groups:
        for key in ("id", "pattern", "roots", "leaves", "channels_before", "channels_after"):
            assert key in g, (key, g)
        assert set(g["roots"]) <= node_names and set(g["leaves"]) <= node_names
        assert "kept" in g or "reason" in g, g
        if "kept" in g:
            kept = g["kept"]
            assert len(kept) == g["channels_after"] <= g["channels_before"]
            assert kept == sorted(set(kept)) and all(0 <= k < g["channels_before"] for k in kept)
        else:
            assert isinstance(g["reason"], str) and g["reason"]
            assert g["channels_after"] == g["channels_before"]
    assert any("kept" in g and g["channels_after"] < g["channels_before"] for g in groups)

    passes = report["passes"]
    assert [p["name"] for p in passes] == DEFAULT_PASSES
    for p in passes:
        assert isinstance(p["seconds"], (int, float)) and p["seconds"] >= 0
        assert isinstance(p["changed"], bool)
        assert isinstance(p["stats"], dict)
    assert any(p["changed"] for p in passes if p["name"] == "slice")


def test_prune_ratio_zero_keeps_every_channel(tmp_path, chain_file, capsys):
    out, report_path = tmp_path / "out.onnx", tmp_path / "r.json"
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", out, "--ratio", "0",
                                      "--report", report_path])
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["params_after"] == report["params_before"]
    assert all(g["channels_after"] == g["channels_before"] for g in report["groups"])
    assert "mask{ratio=0 " in report["spec"] or "mask{ratio=0.0 " in report["spec"]


def test_time_passes_prints_a_row_per_pass(tmp_path, chain_file, capsys):
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", tmp_path / "o.onnx", "--time-passes"])
    assert code == 0, err
    rows = [line.split() for line in err.splitlines() if line.strip()]
    assert [r[0] for r in rows] == DEFAULT_PASSES, err
    for r in rows:
        assert r[-1] == "ms" and float(r[1]) >= 0


def test_dump_after_writes_one_file_per_named_pass(tmp_path, chain_file, capsys):
    dumps = tmp_path / "dumps"
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", tmp_path / "o.onnx",
                                      "--dump-after", "mask,slice", "--dump-dir", dumps])
    assert code == 0, err
    files = _listing(dumps)
    assert len(files) == 2, files
    assert files[0].endswith("-mask.txt") and files[1].endswith("-slice.txt")
    mask_text, slice_text = (dumps / files[0]).read_text(), (dumps / files[1]).read_text()
    conv_names = [n.name for n in models.chain().graph.node if n.op_type == "Conv"]
    for text in (mask_text, slice_text):
        assert text.startswith("graph ")
        assert all(f"# {name}" in text for name in conv_names)
    assert mask_text != slice_text  # slicing changed the weights' shapes


def test_console_script_prunes_with_real_exit_code(tmp_path, chain_file):
    out = tmp_path / "out.onnx"
    proc = subprocess.run([str(CONSOLE), "prune", str(chain_file), "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _params(onnx.load(str(out))) < _params(models.chain())


# --------------------------------------------------------------------------- prune: bad input
def _bad_input_files(tmp_path: Path) -> dict[str, Path]:
    real = models.chain().SerializeToString()
    files = {}
    files["junk"] = tmp_path / "junk.onnx"
    files["junk"].write_bytes(np.random.default_rng(0).integers(0, 256, 2048, np.uint8).tobytes())
    files["text"] = tmp_path / "text.onnx"
    files["text"].write_text("this is not an onnx model\n")
    files["truncated"] = tmp_path / "truncated.onnx"
    files["truncated"].write_bytes(real[: len(real) // 2])
    bad = models.chain()
    bad.graph.node[2].input[0] = "never_defined"
    files["checker"] = _save(bad, tmp_path / "undefined_input.onnx")
    files["empty"] = tmp_path / "empty.onnx"
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize("kind", ["missing", "junk", "text", "truncated", "checker", "empty"])
def test_prune_rejects_a_bad_model_file(tmp_path, capsys, kind):
    if kind == "missing":
        model = tmp_path / "absent.onnx"
    else:
        model = _bad_input_files(tmp_path)[kind]
    hash_before = _sha(model) if model.exists() else None
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, report = out_dir / "pruned.onnx", out_dir / "report.json"
    code, _, err = _run_main(capsys, ["prune", model, "-o", out, "--report", report])
    assert code == 1
    _assert_one_error_line(err, str(model))
    assert _listing(out_dir) == []  # neither model, report nor temporary files
    if hash_before is None:
        assert not model.exists()
    else:
        assert _sha(model) == hash_before


@pytest.mark.parametrize("args,names", [
    (["--passes", "tag,trees,prune-it"], ["prune-it"]),
    (["--passes", "tag,trees,classify,score,mask{fraction=0.5},slice"], ["fraction", "mask"]),
    (["--passes", "tag,trees,classify,score,mask{ratio=0.5,slice"], []),
    (["--passes", "tag,trees,classify,mask{ratio=0.5},slice"], ["mask", "score"]),
    (["--ratio", "1.0"], ["--ratio", "1.0"]),
    (["--ratio", "-0.1"], ["--ratio", "-0.1"]),
    (["--ratio", "1.5"], ["--ratio"]),
    (["--ratio", "half"], ["--ratio", "half"]),
    (["--ratio", "nan"], ["--ratio"]),
    (["--criterion", "l7"], ["l7"]),
    (["--scope", "everything"], ["--scope", "everything"]),
    (["--no-such-flag"], ["--no-such-flag"]),
])
def test_prune_usage_errors_exit_2(tmp_path, chain_file, capsys, args, names):
    hash_before = _sha(chain_file)
    out = tmp_path / "out.onnx"
    with_exit = None
    try:
        code, _, err = _run_main(capsys, ["prune", chain_file, "-o", out] + args)
    except SystemExit as exc:  # argparse-level errors exit through SystemExit
        with_exit = exc.code
        _, err = capsys.readouterr()
        code = with_exit
    assert code == 2
    _assert_one_error_line(err, *names)
    assert _listing(tmp_path) == ["chain.onnx"]
    assert _sha(chain_file) == hash_before


def test_prune_failure_keeps_an_existing_output_file(tmp_path, capsys):
    junk = _bad_input_files(tmp_path)["truncated"]
    out = tmp_path / "previous.onnx"
    _save(models.one_to_many(), out)
    hash_before = _sha(out)
    files_before = _listing(tmp_path)
    code, _, err = _run_main(capsys, ["prune", junk, "-o", out])
    assert code == 1
    _assert_one_error_line(err, str(junk))
    assert _sha(out) == hash_before
    assert _listing(tmp_path) == files_before


def test_prune_report_that_cannot_be_written_leaves_no_output(tmp_path, chain_file, capsys):
    # the report path is an existing folder: the command fails, and then nothing may be
    # left at -o (and no temporary files either)
    report = tmp_path / "report_folder"
    report.mkdir()
    out = tmp_path / "out.onnx"
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", out, "--report", report])
    assert code != 0
    _assert_one_error_line(err, "report_folder")
    assert not out.exists()
    assert _listing(tmp_path) == ["chain.onnx", "report_folder"]
    assert _listing(report) == []


def test_written_files_get_ordinary_permissions(tmp_path, chain_file, capsys):
    # atomic writing must not change what the user gets: files are created with the mode a
    # plain open() would give under the current umask, like any other tool's output
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    out, report, dot = tmp_path / "out.onnx", tmp_path / "r.json", tmp_path / "t.dot"
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", out, "--report", report])
    assert code == 0, err
    code, _, err = _run_main(capsys, ["inspect", chain_file, "--dot", dot])
    assert code == 0, err
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (out, report, dot)}
    assert modes == {p.name: oct(expected) for p in (out, report, dot)}


def test_prune_model_with_external_data(tmp_path, capsys):
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = src_dir / "m.onnx"
    onnx.save(models.chain(), str(src), save_as_external_data=True, all_tensors_to_one_file=True,
              size_threshold=0, location="w.data")
    hashes = {p.name: _sha(p) for p in src_dir.iterdir()}
    out = out_dir / "p.onnx"
    code, _, err = _run_main(capsys, ["prune", src, "-o", out])
    assert code == 0, err
    assert _listing(out_dir) == ["p.onnx", "p.onnx.data"]
    assert {p.name: _sha(p) for p in src_dir.iterdir()} == hashes
    pruned = onnx.load(str(out))
    assert _params(pruned) < _params(models.chain())
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (y,) = _ort_outputs(str(out), x)
    assert y.shape == (1, 4, 8, 8)


def test_prune_missing_output_folder_exits_2(tmp_path, chain_file, capsys):
    hash_before = _sha(chain_file)
    out = tmp_path / "no" / "such" / "folder" / "out.onnx"
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", out])
    assert code == 2
    _assert_one_error_line(err, str(out.parent))
    assert not (tmp_path / "no").exists()
    assert _sha(chain_file) == hash_before


def test_prune_missing_report_folder_writes_nothing(tmp_path, chain_file, capsys):
    out = tmp_path / "out.onnx"
    report = tmp_path / "missing" / "r.json"
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", out, "--report", report])
    assert code == 2
    _assert_one_error_line(err, str(report.parent))
    assert _listing(tmp_path) == ["chain.onnx"]  # not even the model


def test_prune_to_a_folder_fails_cleanly(tmp_path, chain_file, capsys):
    target = tmp_path / "a_folder"
    target.mkdir()
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", target])
    assert code == 2  # refused before any work, like a missing output folder
    _assert_one_error_line(err)
    assert "is a folder" in err
    assert target.is_dir() and _listing(target) == []
    assert _listing(tmp_path) == ["a_folder", "chain.onnx"]


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "relative"])
def test_output_equal_to_input_is_refused(tmp_path, chain_file, capsys, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    hash_before = _sha(chain_file)
    mtime = chain_file.stat().st_mtime_ns
    src, dst = {"same": (chain_file, chain_file),
                "dot-slash": ("chain.onnx", "./chain.onnx"),
                "relative": (chain_file, "chain.onnx")}[spelling]
    code, _, err = _run_main(capsys, ["prune", src, "-o", dst])
    assert code != 0
    _assert_one_error_line(err, "chain.onnx")
    assert _sha(chain_file) == hash_before and chain_file.stat().st_mtime_ns == mtime
    assert _listing(tmp_path) == ["chain.onnx"]


def test_report_equal_to_input_is_refused(tmp_path, chain_file, capsys):
    hash_before = _sha(chain_file)
    code, _, err = _run_main(capsys, ["prune", chain_file, "-o", tmp_path / "o.onnx",
                                      "--report", chain_file])
    assert code != 0
    _assert_one_error_line(err, "chain.onnx")
    assert _sha(chain_file) == hash_before
    assert _listing(tmp_path) == ["chain.onnx"]


def test_debug_after_the_command_raises(tmp_path, capsys):
    missing = tmp_path / "absent.onnx"
    with pytest.raises(ir.ModelLoadError, match="absent.onnx"):
        cli.main(["prune", str(missing), "-o", str(tmp_path / "o.onnx"), "--debug"])
    assert _listing(tmp_path) == []


def test_debug_before_the_command_raises(tmp_path, capsys):
    # `onnxpruner --debug prune ...`: the top-level --debug ("show tracebacks") must work too
    missing = tmp_path / "absent.onnx"
    with pytest.raises(ir.ModelLoadError, match="absent.onnx"):
        cli.main(["--debug", "prune", str(missing), "-o", str(tmp_path / "o.onnx")])
    assert _listing(tmp_path) == []


def test_console_script_errors_and_debug_traceback(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01\x02 definitely not protobuf \xff\xfe")
    hash_before = _sha(junk)
    out = tmp_path / "out.onnx"

    proc = subprocess.run([str(CONSOLE), "prune", str(junk), "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    _assert_one_error_line(proc.stderr, str(junk))

    proc = subprocess.run([str(CONSOLE), "prune", str(junk), "-o", str(out), "--passes", "tag,nope"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    _assert_one_error_line(proc.stderr, "nope")

    proc = subprocess.run([str(CONSOLE), "prune", str(junk), "-o", str(out), "--debug"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr

    assert not out.exists() and _listing(tmp_path) == ["junk.onnx"]
    assert _sha(junk) == hash_before


# --------------------------------------------------------------------------- inspect
def test_inspect_prints_groups_and_barrier_reasons(tmp_path, capsys):
    model = models.barrier()
    path = _save(model, tmp_path / "barrier.onnx")
    hash_before = _sha(path)
    odd = next(n for n in model.graph.node if n.op_type == "Trilu")
    code, out, err = _run_main(capsys, ["inspect", path])
    assert code == 0, err
    lines = out.splitlines()
    barrier_lines = [line for line in lines if line.strip().startswith("barrier ")]
    assert len(barrier_lines) == 1, out
    assert odd.name in barrier_lines[0] and "com.microsoft.Trilu" in barrier_lines[0]
    group_lines = [line for line in lines if line.strip().startswith("group ")]
    info = pipeline.inspect(model)
    assert len(group_lines) == len(info["groups"]) >= 2
    # a group blocked by the Trilu says so
    assert any("left alone" in line and odd.name in line for line in group_lines), out
    assert any("prunable" in line for line in group_lines), out
    assert _sha(path) == hash_before


def test_inspect_json_and_dot(tmp_path, capsys):
    model = models.barrier()
    path = _save(model, tmp_path / "barrier.onnx")
    dot = tmp_path / "trees.dot"
    code, out, err = _run_main(capsys, ["inspect", path, "--json", "--dot", dot])
    assert code == 0, err
    info = json.loads(out)
    for key in ("roles", "barriers", "trees", "groups"):
        assert key in info, key
    odd = next(n for n in model.graph.node if n.op_type == "Trilu")
    assert [b["node"] for b in info["barriers"]] == [odd.name]
    assert info["barriers"][0]["reason"]
    assert info["roles"].get("barrier") == 1
    assert sum(info["roles"].values()) == len(model.graph.node)
    conv_names = {n.name for n in model.graph.node if n.op_type == "Conv"}
    roots = {t["root"] for t in info["trees"]}
    assert roots and roots <= conv_names
    for g in info["groups"]:
        assert {"id", "pattern", "roots", "leaves", "channels_before", "prunable", "reason"} <= set(g)
        assert "pruned" not in g
        assert g["prunable"] == (g["reason"] is None)
    # issue 15.7: the JSON agrees with the text, group by group
    _, text_out, _ = _run_main(capsys, ["inspect", path])
    lines = [line for line in text_out.splitlines() if line.strip().startswith("group ")]
    assert len(lines) == len(info["groups"])
    assert any(g["prunable"] for g in info["groups"]) and any(not g["prunable"] for g in info["groups"])
    for g, line in zip(info["groups"], lines):
        assert line.strip().startswith(f"group {g['id']} ")
        assert ("prunable" in line) == g["prunable"], (line, g)
        if not g["prunable"]:
            assert g["reason"] in line

    text = dot.read_text()
    assert text.startswith("digraph")
    assert text.count("{") == text.count("}")
    for root in roots:
        assert root in text


@pytest.mark.parametrize("kind", ["missing", "junk", "checker"])
def test_inspect_bad_input_one_line(tmp_path, capsys, kind):
    path = tmp_path / "absent.onnx" if kind == "missing" else _bad_input_files(tmp_path)[kind]
    dot = tmp_path / "out" / "t.dot"
    dot.parent.mkdir()
    code, out, err = _run_main(capsys, ["inspect", path, "--dot", dot])
    assert code == 1
    _assert_one_error_line(err, str(path))
    assert _listing(dot.parent) == []


def test_inspect_dot_into_missing_folder_exits_2(tmp_path, capsys):
    path = _save(models.chain(), tmp_path / "chain.onnx")
    code, _, err = _run_main(capsys, ["inspect", path, "--dot", tmp_path / "nope" / "t.dot"])
    assert code == 2
    _assert_one_error_line(err, "nope")


def test_dot_colours_roots_leaves_blockers_and_shows_coupled_groups(tmp_path, capsys):
    """Issue 15.10: DOT trees had no colour for root, leaf or blocker and did not show coupled groups."""
    from workflows.show import ROLE_STYLE, trees_to_dot
    info = pipeline.inspect(models.many_to_one())
    text = trees_to_dot(info)
    coupled = [g for g in info["groups"] if len(g["roots"]) > 1]
    assert coupled
    for g in coupled:   # one cluster holds all the coupled trees, its label says so
        start = text.index(f"subgraph cluster_group_{g['id']} {{")
        block = text[start:text.index("subgraph cluster_group_", start + 1)]
        assert f"coupled: {len(g['roots'])} trees share these {g['channels_before']} channels" in block
        for r in g["roots"]:
            assert f'label="{r}", fillcolor="{ROLE_STYLE["root"][0]}"' in block
        for lf in g["leaves"]:
            assert f'label="{lf}", fillcolor="{ROLE_STYLE["leaf"][0]}"' in block
    barrier = trees_to_dot(pipeline.inspect(models.barrier()))
    odd = next(n.name for n in models.barrier().graph.node if n.op_type == "Trilu")
    assert f'label="{odd}", fillcolor="{ROLE_STYLE["blocker"][0]}", shape=octagon' in barrier
    assert "left alone" in barrier and barrier.count("{") == barrier.count("}")


def test_round_to_option(tmp_path, capsys):
    b = models.Builder(5, name="wide")
    y = b.relu(b.conv(b.input("x", [1, 3, 4, 4]), 3, 64))
    src = _save(b.build([b.conv(y, 64, 2, k=1)]), tmp_path / "wide.onnx")
    kept = {}
    for flag in ([], ["--round-to", "1"]):
        out = tmp_path / f"out{len(flag)}.onnx"
        code, _, _ = _run_main(capsys, ["prune", str(src), "-o", str(out), "--ratio", "0.7", *flag])
        assert code == 0
        kept[tuple(flag)] = [list(t.dims) for t in onnx.load(str(out)).graph.initializer][0][0]
    assert kept == {(): 24, ("--round-to", "1"): 20}  # 20 kept by the ratio, rounded up to 24 by default
    code, _, err = _run_main(capsys, ["prune", str(src), "-o", str(tmp_path / "x.onnx"), "--round-to", "0"])
    assert code == 2 and not (tmp_path / "x.onnx").exists()
    _assert_one_error_line(err, "round-to")
