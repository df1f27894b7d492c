"""The same pruned bytes across refactorings: sha256 of the pruned model (and its report's counts)
for a few hand-built and torchvision models, pinned in ``tests/golden/pruned_sha256.txt``.

A change here means the pruned output changed. When that is the intent (a better rule, a new
default), rewrite the file with ``--update-golden`` and say why in the commit; a move of code
must leave it as it is. The input's digest is listed too, so an exporter that writes different
bytes is told apart from a pruner that does.
"""

from __future__ import annotations

import hashlib
import warnings

import onnx

import models
import pipeline
from torchvision_models import export

HAND_BUILT = [("chain", {}), ("concat", {}), ("channel_shuffle", {}), ("shape_reshape", {}),
              ("grouped_conv", {"criterion": "l2", "scope": "node", "ratio": 0.3})]
TORCHVISION = [("resnet18", {}), ("mobilenet_v2", {}), ("squeezenet1_1", {"ratio": 0.3})]


def _digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString()).hexdigest()[:16]


def _line(name: str, model: onnx.ModelProto, options: dict) -> str:
    result = pipeline.prune(model, **options)
    r = result.report
    assert r["verified"] is True
    opts = " ".join(f"{k}={v}" for k, v in sorted(options.items())) or "default"
    return (f"{name} [{opts}] in {_digest(model)} out {_digest(result.model)} params {r['params_before']}->"
            f"{r['params_after']} flops {r['flops_before']}->{r['flops_after']}\n")


def test_pruned_bytes_are_pinned(tmp_path, golden):
    lines = [_line(name, getattr(models, name)(), options) for name, options in HAND_BUILT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, options in TORCHVISION:
            lines.append(_line(name, onnx.load(str(export(name, tmp_path))), options))
    golden("pruned_sha256", "".join(lines))
