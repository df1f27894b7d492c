"""passes.ort.import_ort: ONNX Runtime's inference part without torch, training still reachable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import numpy as np
import models
from passes.ort import import_ort
ort = import_ort()
assert "torch" not in sys.modules, "torch imported with onnxruntime"
assert "onnxruntime.training.ortmodule" not in sys.modules
assert import_ort() is ort
s = ort.InferenceSession(models.chain().SerializeToString(), providers=["CPUExecutionProvider"])
(y,) = s.run(None, {{"x": np.ones((1, 3, 8, 8), np.float32)}})
assert y.shape == (1, 4, 8, 8)
from onnxruntime.training import artifacts  # training paths still import (torch with them)
from onnxruntime.training.api import CheckpointState, Module
print("ok", "torch" in sys.modules)
"""


def test_inference_without_torch_then_training():
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok", "True"]
