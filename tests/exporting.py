"""How the tests make ONNX files from PyTorch modules: weights perturbed first (the exporter shares
identical tensors, and fresh LayerNorm/BatchNorm parameters are all identical), then the legacy
exporter at opset 17 without constant folding (it works offline and keeps the graph as written),
its warnings silenced."""

from __future__ import annotations

import warnings
from pathlib import Path


def perturb(module, scale: float, seed: int | None = None):
    """Add N(0, scale^2) noise to every parameter of ``module`` in place (after
    ``torch.manual_seed(seed)`` when a seed is given); returns the module."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module


def export(module, args, path, opset: int = 17, **kwargs) -> Path:
    """``torch.onnx.export`` of ``module`` on ``args`` to ``path`` (legacy exporter, opset ``opset``,
    no constant folding; ``kwargs``: input_names, output_names, dynamic_axes); returns the path."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                          do_constant_folding=False, **kwargs)
    return Path(path)
