"""Transformers and ConvNeXt at full width (issue 11): heads, MLP and residual stream at ratio 0.5.

    .venv/bin/python benchmarks/full_width.py vit_b_16 convnext_tiny

Each model is exported as ``benchmarks/zoo.py`` exports it (torchvision, random init, 224×224,
cached outside the repo), pruned with the default pipeline, and its share of parameters kept,
the proof, the stream groups (channels before -> after) and the groups left whole are printed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import pipeline  # noqa: E402
import zoo  # noqa: E402


def main(names: list[str]) -> None:
    captured = {}
    prune = pipeline.prune

    def keeping(*args, **kwargs):  # zoo.measure prunes through the API: keep the report it got
        result = prune(*args, **kwargs)
        captured["report"] = result.report
        return result

    pipeline.prune = keeping
    try:
        for name in names:
            start = time.time()
            row = zoo.measure(name, 224, repeat=3)
            rep = captured["report"]
            print(zoo.row(row))
            streams = [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("stream")]
            whole = [g.get("reason") for g in rep["groups"] if not g.get("pruned")]
            print(f"{name}: params {rep['params_before']:,} -> {rep['params_after']:,} "
                  f"kept {rep['params_after'] / rep['params_before']:.3f}; verified {rep['verified']} "
                  f"max abs diff {rep['max_abs_diff']:.2e}; stream groups {streams}; left whole: {whole}; "
                  f"{time.time() - start:.0f} s", flush=True)
    finally:
        pipeline.prune = prune


if __name__ == "__main__":
    main(sys.argv[1:] or ["vit_b_16", "convnext_tiny"])
