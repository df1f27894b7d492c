"""The retry path's cost with and without ORT session reuse: ResNet-50 at 0.5 with a broken
BatchNormalization slice rule (it keeps the wrong entries, as ``tests/test_passes.py`` does on a
small model), so every group through a BN fails the proof and ``passes.reruns.unproven_groups``
tries each pruned group alone. Every trial runs the masked original, the same graph each time
with other weights fed by reference: ``runtime.reuse_sessions`` runs it in one ONNX Runtime
session; ``REUSED_SESSIONS = 0`` turns the reuse off. The two alternate in one process; medians.

    .venv/bin/python benchmarks/reruns.py [--model resnet50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import onnx  # noqa: E402

import pipeline  # noqa: E402
from passes import op_rules, runtime  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", help="a torchvision model, exported at 224")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from bench_pipeline import CACHE
    from torchvision_models import export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnx.load(str(export(args.model, CACHE, size=224)))
    good = op_rules.SLICE_RULES["BatchNormalization"]

    def reversed_bn(rw, ins, outs):
        axis, keep, rank = ins[0]
        good(rw, {0: (axis, keep[::-1].copy(), rank)}, outs)

    op_rules.SLICE_RULES["BatchNormalization"] = reversed_bn
    times: dict[str, list[float]] = {"reuse": [], "no reuse": []}
    reports = {}
    for _ in range(args.repeat):
        for label, keep in (("no reuse", 0), ("reuse", 3)):
            runtime.REUSED_SESSIONS = keep
            start = time.perf_counter()
            result = pipeline.prune(model, ratio=0.5)
            times[label].append(time.perf_counter() - start)
            reports[label] = result.report
    left = [g for g in reports["reuse"]["groups"] if "mask-equivalence" in (g.get("reason") or "")]
    same = reports["reuse"]["groups"] == reports["no reuse"]["groups"]
    print(f"{args.model}, ratio 0.5, broken BN slice rule: {len(left)} groups left alone after "
          f"{len(reports['reuse']['groups'])} trials; median of {args.repeat}, alternating; same report: {same}")
    base = statistics.median(times["no reuse"])
    for label, values in times.items():
        t = statistics.median(values)
        print(f"{label:<9} {t:8.2f} s  {base / t:5.2f}x")


if __name__ == "__main__":
    main()
