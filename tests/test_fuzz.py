"""The random-graph fuzzer (tests/fuzz_graphs.py) in CI: a few dozen seeded DAGs pruned, every
invariant checked; and through the command line, that nothing but ``-o`` and ``--report`` is
written and the input is unchanged. ``benchmarks/fuzz.py --n 500`` is the longer run."""

from __future__ import annotations

import hashlib

import onnx
import pytest

import cli
import fuzz_graphs


@pytest.mark.parametrize("start", range(0, 40, 10))
def test_random_graphs_keep_every_invariant(start):
    problems = [p for seed in range(start, start + 10) for p in fuzz_graphs.check(seed)]
    assert problems == []


@pytest.mark.parametrize("seed", [3, 7, 11])
def test_command_line_writes_only_its_outputs_and_never_the_input(tmp_path, capsys, seed):
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    onnx.save(fuzz_graphs.random_model(seed), str(src))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["prune", str(src), "-o", str(out / "p.onnx"), "--report", str(out / "r.json"),
                          "--ratio", "0.5"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in src.parent.iterdir()) == ["m.onnx"]
    listing = sorted(p.name for p in out.iterdir())
    assert listing == (["p.onnx", "r.json"] if code == 0 else []), (code, err)
