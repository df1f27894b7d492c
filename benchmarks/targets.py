"""FLOPs and parameter targets on torchvision ResNet-50: the reduction asked, the one the cost
model predicted, and the one the real count of the sliced model gives (``count_flops`` /
``count_params`` on the pruned graph), with the time of the whole ``prune`` (including the
mask-equivalence check in ONNX Runtime) and whether it was verified.

    .venv/bin/python benchmarks/targets.py [--size 224] [--targets flops:0.5 params:0.5 ...]
        [--rank global] [--out benchmarks/out/targets.md]

The model is ``tests/torchvision_models.export("resnet50", ...)`` (random init, perturbed),
exported at ``--size`` (default 224, the FLOPs people quote). A target is met when
``|achieved - asked| <= 0.01``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import outputs  # noqa: E402

import pipeline  # noqa: E402
from torchvision_models import export  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--targets", nargs="+", default=["flops:0.5", "flops:0.3", "flops:0.7", "params:0.5"])
    ap.add_argument("--rank", default="global", choices=["global", "layer"])
    ap.add_argument("--out", default=str(outputs.LATEST / "targets.md"))
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    outputs.check([args.out], args.update_tracked)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export(args.model, Path(tmp), size=args.size)
        for item in args.targets:
            kind, _, goal = item.partition(":")
            goal = float(goal)
            start = time.perf_counter()
            result = pipeline.prune(str(path), rank=args.rank, **{f"target_{kind}": goal})
            seconds = time.perf_counter() - start
            rep = result.report
            achieved = 1 - rep[f"{kind}_after"] / rep[f"{kind}_before"]
            t = rep["target"]
            rows.append((kind, goal, t["predicted_reduction"], achieved, abs(achieved - goal) <= 0.01,
                         rep["verified"], rep[f"{kind}_before"], rep[f"{kind}_after"], seconds))
            print(f"{kind} {goal:g}: predicted {t['predicted_reduction']:.4f}, achieved {achieved:.4f}, "
                  f"verified {rep['verified']}, {seconds:.1f} s", flush=True)
    command = " ".join([".venv/bin/python benchmarks/targets.py", shlex.join(argv or sys.argv[1:])]).strip()
    lines = [f"Command: `{command}`",
             "", f"# Targets on torchvision {args.model} ({args.size}x{args.size}, random init), rank={args.rank}", "",
             "| target | asked | predicted | achieved (real count) | met (±0.01) | verified | before | after | prune s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind, goal, pred, got, met, ver, before, after, sec in rows:
        lines.append(f"| {kind} | {goal:g} | {pred:.4f} | {got:.4f} | {met} | {ver} | {before:,} | {after:,} | {sec:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r[4] and r[5] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
