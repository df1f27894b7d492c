"""One-shot vs iterative vs soft filter pruning on digits, the same fine-tuning budget for each.

    .venv/bin/python benchmarks/schedules.py [--seeds 0 1 2] [--ratio 0.5] [--epochs 6] [--steps 3]
        [--out benchmarks/out/schedules.md]

Per seed: the demo's small residual CNN trained from scratch with ONNX Runtime training (30
epochs, lr 3e-3, batch 64, ``demo.digits_split(seed)``), then three ways to reach ``--ratio``
(layerwise), each with ``--epochs`` epochs of training in all (lr 1e-3, cosine, AdamW, batch 64),
validation top-1 of the final pruned model (no selection on validation):

- one-shot: ``prune`` (l1, tree scope) then ``finetune`` for all the epochs;
- iterative: ``--steps`` rounds of prune -> fine-tune (``epochs / steps`` each), linear schedule;
- soft (SFP): ``soft_filter_prune`` (l2, node scope, as SFP) for all the epochs, pruned at the end,
  no fine-tuning after the hard prune.
"""

from __future__ import annotations

import argparse
import io
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import outputs  # noqa: E402

import onnx  # noqa: E402

import pipeline  # noqa: E402
from passes.finetune import TrainConfig, evaluate, finetune  # noqa: E402
from workflows import demo  # noqa: E402
from workflows.schedules import iterative_prune, soft_filter_prune  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "schedules.md")
    outputs.add_argument(ap)
    args = ap.parse_args()
    outputs.check([args.out], args.update_tracked)
    if args.epochs % args.steps:
        ap.error("--epochs must be a multiple of --steps (the same budget for every method)")
    rows: dict[str, list] = {"unpruned": [], "one-shot": [], "iterative": [], "soft": []}
    params: dict[str, list] = {k: [] for k in rows}
    seconds: dict[str, list] = {k: [] for k in rows}
    quiet = io.StringIO
    for seed in args.seeds:
        train, val = demo.digits_split(seed)
        with tempfile.TemporaryDirectory() as tmp:
            exported = onnx.load(str(demo.export_small_resnet(Path(tmp) / "m.onnx", seed)))
        base = finetune(exported, train, None, TrainConfig(epochs=30, lr=3e-3, batch_size=64, seed=seed),
                        stream=quiet()).model
        rows["unpruned"].append(evaluate(base, val))
        cfg = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=64, seed=seed)
        step_cfg = TrainConfig(epochs=args.epochs // args.steps, lr=1e-3, batch_size=64, seed=seed)

        t = time.perf_counter()
        pruned = pipeline.prune(base, ratio=args.ratio, seed=seed)
        assert pruned.report["verified"]
        one = finetune(pruned.model, train, None, cfg, stream=quiet()).model
        seconds["one-shot"].append(time.perf_counter() - t)
        rows["one-shot"].append(evaluate(one, val))
        params["one-shot"].append(pruned.report["params_after"] / pruned.report["params_before"])

        t = time.perf_counter()
        it = iterative_prune(base, train, None, ratio=args.ratio, steps=args.steps, config=step_cfg,
                             seed=seed, stream=quiet())
        seconds["iterative"].append(time.perf_counter() - t)
        rows["iterative"].append(evaluate(it.model, val))
        params["iterative"].append(it.report["params_after"] / it.report["params_before"])

        t = time.perf_counter()
        soft = soft_filter_prune(base, train, None, ratio=args.ratio, config=cfg, seed=seed)
        seconds["soft"].append(time.perf_counter() - t)
        assert soft.report["soft"]["removed_match_last_mask"] and soft.report["verified"]
        rows["soft"].append(evaluate(soft.model, val))
        params["soft"].append(soft.report["params_after"] / soft.report["params_before"])
        print(f"seed {seed}: " + ", ".join(f"{k} {100 * v[-1]:.2f}" for k, v in rows.items()), flush=True)

    def fmt(values):
        m = statistics.fmean(values)
        s = statistics.stdev(values) if len(values) > 1 else None
        return f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")

    lines = [f"Command: `.venv/bin/python {shlex.join(sys.argv)}`", "",
             f"# One-shot vs iterative vs soft pruning — digits, layerwise ratio {args.ratio:g}, "
             f"{args.epochs} training epochs each, seeds {' '.join(map(str, args.seeds))}", "",
             "| method | validation top-1 % | params after/before | seconds |", "|---|---|---|---|"]
    for k in rows:
        lines.append(f"| {k} | {fmt([100 * v for v in rows[k]])} | "
                     f"{fmt(params[k]) if params[k] else '1'} | {fmt(seconds[k]) if seconds[k] else ''} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
