"""How to fine-tune a model ``recover`` already brought back (issue 17): fine-tuning variants of the
recovered model against plain fine-tuning of the same pruning, cell by cell, paired by seed.

    .venv/bin/python benchmarks/recovered_start.py [--seeds 0 1 2] [--ratios 0.5]
        [--criteria l1 l2 fpgm taylor random recon] [--epochs 2] [--out benchmarks/out/latest/recovered_start.md]

The protocol of ``benchmarks/accuracy.py`` (digits, the demo's residual CNN trained from scratch
per seed, tree scope, 256 unlabeled training images for ``recover`` bias,bn,ls, fine-tuning at lr
1e-3, cosine, AdamW, batch 64, no validation data given to ``finetune``), with every variant of
the recovered cell fine-tuned from the same recovered model with the plain cell's seed (same
split, same batch order). The validation split only ever gives the numbers reported. Rows:
each variant minus plain fine-tuning, in percentage points over the cells: mean, std, how many
cells below 0, the worst; "plain again" is plain fine-tuning with another batch order (seed +
1000): fine-tuning's own spread."""

from __future__ import annotations

import argparse
import io
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import outputs  # noqa: E402

import onnx  # noqa: E402

import pipeline  # noqa: E402
from passes.finetune import TrainConfig, evaluate, finetune, recovered_config  # noqa: E402
from workflows import demo  # noqa: E402

# name -> (arm, TrainConfig changes; "seed+" shifts the seed): what was compared
VARIANTS = {
    "plain again (batch order seed + 1000)": ("plain", {"seed+": 1000}),
    "recovered, no fine-tuning": ("recovered", None),
    "recovered + fine-tuned as plain (lr 1e-3, best training accuracy)": ("recovered", {}),
    "+ keep start (scored on training accuracy)": ("recovered", {"keep_start": True}),
    "+ keep start, held-out 0.2 loss": ("recovered", {"keep_start": True, "holdout": 0.2}),
    "lr 1e-4": ("recovered", {"lr": 1e-4}),
    "lr 1e-4, keep start, held-out 0.1 loss (recovered_config, the default)": ("recovered", "default"),
    "lr 1e-4, keep start, held-out 0.2 loss": ("recovered", {"lr": 1e-4, "keep_start": True, "holdout": 0.2}),
    "lr 3e-4, keep start, held-out 0.1 loss": ("recovered", {"lr": 3e-4, "keep_start": True, "holdout": 0.1}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    ap.add_argument("--criteria", nargs="+", default=["l1", "l2", "fpgm", "taylor", "random", "recon"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "recovered_start.md")
    outputs.add_argument(ap)
    args = ap.parse_args()
    outputs.check([args.out], args.update_tracked)
    start_all = time.perf_counter()
    diffs: dict = {(r, name): [] for r in args.ratios for name in VARIANTS}
    for seed in args.seeds:
        train, val = demo.digits_split(seed)
        with tempfile.TemporaryDirectory() as tmp:
            exported = onnx.load(str(demo.export_small_resnet(Path(tmp) / "m.onnx", seed)))
        base = finetune(exported, train, None, TrainConfig(epochs=30, lr=3e-3, batch_size=64, seed=seed),
                        stream=io.StringIO()).model
        calib = (train[0][:256], train[1][:256])
        plain_config = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=64, seed=seed)
        for r in args.ratios:
            for c in args.criteria:
                models = {arm: pipeline.prune(base, ratio=r, criterion=c, scope="tree", seed=seed, calib_data=calib,
                                              recover=rec).model
                          for arm, rec in (("plain", None), ("recovered", "bias,bn,ls"))}
                plain = evaluate(finetune(models["plain"], train, None, plain_config, stream=io.StringIO()).model, val)
                for name, (arm, change) in VARIANTS.items():
                    if change is None:
                        acc = evaluate(models[arm], val)
                    else:
                        config = recovered_config(plain_config) if change == "default" else replace(
                            plain_config, seed=seed + change.get("seed+", 0),
                            **{k: v for k, v in change.items() if k != "seed+"})
                        acc = evaluate(finetune(models[arm], train, None, config, stream=io.StringIO()).model, val)
                    diffs[(r, name)].append(100 * (acc - plain))
                print(f"[{time.perf_counter() - start_all:6.0f} s] seed {seed} ratio {r:g} {c}", file=sys.stderr)
    lines = [f"Command: `.venv/bin/python {shlex.join(sys.argv)}`", "",
             f"# Fine-tuning a recovered start — digits, seeds {', '.join(map(str, args.seeds))}, "
             f"criteria {' '.join(args.criteria)}, tree scope, {args.epochs} epochs", "",
             "Each variant's validation top-1 minus plain fine-tuning's (lr 1e-3, best epoch on training accuracy) "
             "of the same pruning, same seed; percentage points over the cells (one image = "
             f"{100 / len(val[1]):.2f}).", "",
             "| ratio | variant | mean | std | below 0 | worst |", "|---|---|---|---|---|---|"]
    for (r, name), ds in diffs.items():
        std = statistics.stdev(ds) if len(ds) > 1 else 0.0
        lines.append(f"| {r:g} | {name} | {statistics.fmean(ds):+.2f} | {std:.2f}"
                     f" | {sum(d < -1e-9 for d in ds)} of {len(ds)} | {min(ds):+.2f} |")
    lines += ["", f"Total: {time.perf_counter() - start_all:.0f} s."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
