"""How the passes scale with depth: synthetic residual CNNs of N blocks, passes without validate.

    .venv/bin/python benchmarks/scaling.py [--blocks 10,20,40,80,160,320] [--repeat 3]

Each block is conv-bn-relu-conv-bn + identity skip + relu at 16 channels on an 8x8 map (weights
are negligible: the graph's size is what grows). One row per N: lower + the default passes up to
``infer-shapes`` (no validate) + raise, in process, sizes interleaved round by round, medians.
The marginal cost per block of blocks 160..320 is compared with that of blocks 40..160 (start-up
cancels out); a linear pipeline gives a ratio near 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import ir  # noqa: E402
import pipeline  # noqa: E402
from models import Builder  # noqa: E402
from passes.base import PassContext  # noqa: E402

SPEC = "tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},slice,infer-shapes"


def residual_cnn(blocks: int, width: int = 16, size: int = 8):
    b = Builder(blocks, name=f"residual{blocks}")
    x = b.relu(b.bn(b.conv(b.input("x", [1, 3, size, size]), 3, width), width))
    for _ in range(blocks):
        y = b.relu(b.bn(b.conv(x, width, width, bias=False), width))
        y = b.bn(b.conv(y, width, width, bias=False), width)
        x = b.relu(b.op("Add", [x, y]))
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    return b.build([b.gemm(x, width, 10)])


def once(model, passes) -> tuple[float, dict[str, float]]:
    timing = pipeline.TimingInstrument()
    start = time.perf_counter()
    graph = ir.lower(model)
    pipeline.Pipeline.parse(passes).run(graph, PassContext(), instruments=[timing])
    ir.raise_model(graph)
    return time.perf_counter() - start, dict(timing.rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", default="10,20,40,80,160,320")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.blocks.split(",")]
    models = {n: residual_cnn(n) for n in sizes}
    once(models[sizes[0]], SPEC)  # warm-up
    totals = {n: [] for n in sizes}
    passes = {n: {} for n in sizes}
    for _ in range(args.repeat):
        for n in sizes:  # interleaved: every size sees the same machine load
            t, rows = once(models[n], SPEC)
            totals[n].append(t)
            for name, s in rows.items():
                passes[n].setdefault(name, []).append(s)
    med = {n: statistics.median(v) for n, v in totals.items()}
    names = list(passes[sizes[0]])
    print(f"passes: {SPEC} (lower + passes + raise, median of {args.repeat})")
    print(f"{'blocks':>6} {'total s':>8} {'ms/block':>9} " + " ".join(f"{p[:8]:>8}" for p in names))
    for n in sizes:
        per = " ".join(f"{statistics.median(passes[n][p]) * 1000 / n:8.2f}" for p in names)
        print(f"{n:>6} {med[n]:8.3f} {med[n] * 1000 / n:9.2f} {per}")
    print("(per-pass columns: ms per block)")
    if {40, 160, 320} <= set(sizes):
        low = (med[160] - med[40]) / 120
        high = (med[320] - med[160]) / 160
        print(f"marginal cost per block: blocks 40-160 {low * 1000:.2f} ms, 160-320 {high * 1000:.2f} ms, "
              f"ratio {high / low:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
