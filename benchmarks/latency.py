"""Does pruning's FLOPs reduction reach ONNX Runtime's latency? Per model and ratio: ORT latency
before and after (1 thread, batch 1, ORT's default graph optimizations) next to the FLOPs ratio.

    .venv/bin/python benchmarks/latency.py [--models resnet50,mobilenet_v2] [--ratios 0.3,0.5,0.7]
                                           [--round-to -1,1] [--repeat 30]

Models are torchvision definitions (random init) exported at 224 (cached). Each pruned variant
comes from the default pipeline (l1, tree scope, checker only). The original's and the pruned
model's sessions run in turn, ``--repeat`` times each, and the medians are compared; ``speed-up /
FLOPs`` is the share of the FLOPs reduction the latency shows (1.0: all of it); the last column
compares the fastest run of each instead (the least disturbed on a shared machine). ``--round-to``
lists the mask's round-to values compared (-1: the default, 8 for groups wider than 32
channels; 1: no rounding).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pipeline  # noqa: E402
from passes.ort import import_ort  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_CACHE", Path.home() / ".cache" / "onnxpruner"))


def session(model):
    ort = import_ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def interleaved_ms(sessions, feed, repeat: int) -> list[tuple[float, float]]:
    """(median, fastest) ms of each session, runs interleaved: on a shared machine the fastest run
    is the least disturbed one, the median what a busy machine gives."""
    name = sessions[0].get_inputs()[0].name
    for s in sessions:  # warm-up
        for _ in range(3):
            s.run(None, {name: feed})
    times = [[] for _ in sessions]
    for _ in range(repeat):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, {name: feed})
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t) * 1000, min(t) * 1000) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--ratios", default="0.3,0.5,0.7")
    ap.add_argument("--round-to", default="-1,1")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    import onnx

    from torchvision_models import export

    CACHE.mkdir(parents=True, exist_ok=True)
    feed = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    print(f"ORT CPU, 1 thread, batch 1, input 224; median of {args.repeat} interleaved runs")
    print(f"{'model':<14} {'ratio':>5} {'round-to':>8} {'before ms':>9} {'after ms':>9} "
          f"{'speed-up':>8} {'FLOPs x':>8} {'speed-up/FLOPs':>14} {'fastest runs: speed-up/FLOPs':>28}")
    for name in args.models.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = onnx.load(str(export(name, CACHE, size=224)))
        before = session(model)
        for ratio in (float(r) for r in args.ratios.split(",")):
            for rt in (int(r) for r in args.round_to.split(",")):
                spec = pipeline.build_spec(ratio, ort=False).replace(
                    f"mask{{ratio={ratio!r}}}", f"mask{{ratio={ratio!r} round-to={rt}}}")
                result = pipeline.prune(model, ratio=ratio, passes=spec)
                rep = result.report
                flops_x = rep["flops_before"] / rep["flops_after"]
                (t_before, f_before), (t_after, f_after) = interleaved_ms([before, session(result.model)],
                                                                          feed, args.repeat)
                speed = t_before / t_after
                print(f"{name:<14} {ratio:5.2f} {rt:>8} {t_before:9.2f} {t_after:9.2f} {speed:7.2f}x "
                      f"{flops_x:7.2f}x {speed / flops_x:14.2f} {f_before / f_after / flops_x:28.2f}", flush=True)


if __name__ == "__main__":
    main()
