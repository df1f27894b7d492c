"""Issue 15: a plugin package's criterion and pass, declared as entry points
(``onnxpruner.criteria``, ``onnxpruner.passes``), are usable by name from the command line.

The plugin is "installed" the way pip leaves a package: a module and a ``*.dist-info`` folder with
``entry_points.txt``, in a temporary folder put on ``PYTHONPATH`` of a subprocess (the test venv
is never changed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

import models

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
import numpy as np
from dataclasses import dataclass
from typing import ClassVar
from passes.base import Pass, PassResult
from passes.criteria import Criterion


class ReverseIndex(Criterion):
    """Keeps the highest-indexed channels: the first ones go (easy to recognise in a report)."""
    name = "reverse-index"

    def channel_scores(self, w, axis):
        return np.arange(w.shape[axis], dtype=np.float64)


@dataclass(frozen=True)
class CountNodes(Pass):
    name: ClassVar[str] = "count-nodes"

    def run(self, ir, ctx):
        return PassResult(False, {"nodes": len(list(ir.nodes()))})
'''


def install(folder: Path, entry_points: str) -> dict:
    (folder / "tiny_plugin.py").write_text(PLUGIN)
    info = folder / "tiny_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))
    return env


ENTRY_POINTS = """\
    [onnxpruner.criteria]
    reverse-index = tiny_plugin:ReverseIndex

    [onnxpruner.passes]
    count-nodes = tiny_plugin:CountNodes
"""


def onnxpruner(env, *argv):
    return subprocess.run([sys.executable, "-m", "cli", *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_plugin_criterion_and_pass_are_usable_by_name(tmp_path):
    model = tmp_path / "chain.onnx"
    onnx.save(models.chain(), str(model))
    env = install(tmp_path, ENTRY_POINTS)
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    run = onnxpruner(env, "prune", model, "-o", out, "--criterion", "reverse-index", "--scope", "node", "--ratio", "0.5",
                     "--report", report)
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    assert "criterion=reverse-index" in data["spec"]
    pruned = [g for g in data["groups"] if g["pruned"]]
    assert pruned and all(g["kept"] == list(range(g["channels_before"] - len(g["kept"]), g["channels_before"]))
                          for g in pruned)          # the first channels went: the plugin scored them
    spec = "tag,trees,classify,score,mask,slice,infer-shapes,validate,count-nodes"
    run = onnxpruner(env, "prune", model, "-o", out, "--passes", spec, "--report", report)
    assert run.returncode == 0, run.stderr
    last = json.loads(report.read_text())["passes"][-1]
    assert last["name"] == "count-nodes" and last["stats"]["nodes"] > 0
    # without the plugin on the path the same names are unknown: usage errors naming them
    bare = dict(os.environ, PYTHONPATH=str(ROOT))
    run = onnxpruner(bare, "prune", model, "-o", out, "--criterion", "reverse-index")
    assert run.returncode == 2 and "unknown criterion 'reverse-index'" in run.stderr


@pytest.mark.parametrize("entry, words", [
    ("[onnxpruner.criteria]\nreverse-index = tiny_plugin:Missing\n", ["reverse-index", "cannot be imported"]),
    ("[onnxpruner.criteria]\nother-name = tiny_plugin:ReverseIndex\n", ["other-name", "class's name"]),
])
def test_a_broken_plugin_is_one_clear_error(tmp_path, entry, words):
    model = tmp_path / "chain.onnx"
    onnx.save(models.chain(), str(model))
    env = install(tmp_path, entry)
    run = onnxpruner(env, "prune", model, "-o", tmp_path / "p.onnx", "--criterion", "something")
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("error:"), run.stderr
    for w in words:
        assert w in run.stderr
    assert not (tmp_path / "p.onnx").exists()
