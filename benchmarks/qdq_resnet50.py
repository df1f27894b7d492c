"""ONNX Runtime's static QDQ ResNet-50 (torchvision's definition, random init, 224×224), pruned.

Exports ResNet-50 with the legacy exporter (``tests/torchvision_models.py``), quantizes it with
``onnxruntime.quantization.quantize_static`` (``QuantFormat.QDQ``, int8 weights per channel or per
tensor, uint8 activations, MinMax calibration on a few seeded random images), prunes it at a ratio
and prints params, FLOPs, the groups pruned, the proof and the seconds each step took.

    nice -n 19 .venv/bin/python benchmarks/qdq_resnet50.py OUT_DIR [--ratio 0.5] [--per-tensor]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class _Reader:
    def __init__(self, n: int, size: int):
        rng = np.random.default_rng(0)
        self.items = iter([{"input": rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self.items, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--per-tensor", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torchvision_models as tvm
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    import pipeline

    t = time.perf_counter()
    fp = tvm.export("resnet50", args.out, size=args.size)
    print(f"exported {fp} in {time.perf_counter() - t:.1f} s")
    reader = _Reader(args.calib, args.size)  # tests/torchvision_models.py names the input "input"
    q = args.out / f"resnet50_qdq_{'pt' if args.per_tensor else 'pc'}.onnx"
    t = time.perf_counter()
    quantize_static(str(fp), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=not args.per_tensor,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    print(f"quantized {q} in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    rep = pipeline.prune(str(q), ratio=args.ratio).report
    pruned = [g for g in rep["groups"] if g.get("pruned")]
    print(f"pruned at {args.ratio} in {time.perf_counter() - t:.1f} s: params {rep['params_before']:,} -> "
          f"{rep['params_after']:,} ({100 * (1 - rep['params_after'] / rep['params_before']):.1f}% removed), "
          f"FLOPs {rep['flops_before']:,} -> {rep['flops_after']:,}, groups {len(pruned)}/{len(rep['groups'])}, "
          f"verified {rep['verified']} (max abs diff {rep['max_abs_diff']})")
    reasons = sorted({g.get("reason") for g in rep["groups"] if not g.get("pruned")})
    for r in reasons:
        print("  left whole:", r)


if __name__ == "__main__":
    main()
