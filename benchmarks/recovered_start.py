"""How to fine-tune a model ``recover`` already brought back (issue 17): fine-tuning variants of the
recovered model against plain fine-tuning of the same pruning, cell by cell, paired by seed, and
every cell in detail (why a recovered start loses where it loses).

    .venv/bin/python benchmarks/recovered_start.py [--seeds 0 1 2] [--ratios 0.3 0.5 0.7]
        [--criteria l1 taylor random recon] [--epochs 2] [--out benchmarks/out/latest/recovered_start.md]

The protocol of ``benchmarks/accuracy.py`` (digits, the demo's residual CNN trained from scratch
per seed, tree scope, 256 unlabeled training images for ``recover`` bias,bn,ls, fine-tuning at lr
1e-3, cosine, AdamW, batch 64, no validation data given to ``finetune``), with every variant of
the recovered cell fine-tuned from the same recovered model with the plain cell's seed (same
split, same batch order). The validation split only ever gives the numbers reported. Rows:
each variant minus plain fine-tuning, in percentage points over the cells: mean, std, how many
cells below 0, the worst; "plain again" is plain fine-tuning with other batch orders (seed +
1000, + 2000): fine-tuning's own spread. Both arms over the three batch orders, mean per cell:
whether a gap is the batch order's noise. Per cell: unpruned, pruned, recovered, each arm's
epoch kept, and the default's held-out loss curve (start, then each epoch)."""

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
from passes.train_data import Batches, split_holdout  # noqa: E402
from workflows import demo  # noqa: E402

ORDERS = (0, 1000, 2000)   # batch-order seeds (added to the cell's seed) for the both-arms means
DEFAULT = "lr 1e-4, keep start, held-out 0.1 loss (recovered_config, the default)"
# name -> (arm, TrainConfig changes, or "default": recovered_config; None: no fine-tuning)
VARIANTS = {
    "plain again (batch order seed + 1000)": ("plain", {"seed+": 1000}),
    "plain again (batch order seed + 2000)": ("plain", {"seed+": 2000}),
    "plain, keep start, held-out 0.1 loss (the recovered arm's selection)": (
        "plain", {"keep_start": True, "holdout": 0.1}),
    "recovered, no fine-tuning": ("recovered", None),
    DEFAULT: ("recovered", "default"),
    "recovered + fine-tuned as plain (lr 1e-3, best training accuracy; --start fresh)": ("recovered", {}),
    "lr 1e-3, keep start, held-out 0.1 loss": ("recovered", {"keep_start": True, "holdout": 0.1}),
    "lr 1e-3, held-out 0.1 loss (start not a candidate)": ("recovered", {"holdout": 0.1}),
    "lr 1e-3, 1 epoch warm-up, best training accuracy": ("recovered", {"warmup": 1.0}),
    "lr 1e-3, 1 epoch warm-up, held-out 0.1 loss": ("recovered", {"warmup": 1.0, "holdout": 0.1}),
}


def pts(v: float) -> str:
    return f"{100 * v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--criteria", nargs="+", default=["l1", "taylor", "random", "recon"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "recovered_start.md")
    outputs.add_argument(ap)
    args = ap.parse_args()
    outputs.check([args.out], args.update_tracked)
    start_all = time.perf_counter()
    cells = []
    n_val = 0
    for seed in args.seeds:
        train, val = demo.digits_split(seed)
        n_val = len(val[1])
        with tempfile.TemporaryDirectory() as tmp:
            exported = onnx.load(str(demo.export_small_resnet(Path(tmp) / "m.onnx", seed)))
        base = finetune(exported, train, None, TrainConfig(epochs=30, lr=3e-3, batch_size=64, seed=seed),
                        stream=io.StringIO()).model
        unpruned = evaluate(base, val)
        calib = (train[0][:256], train[1][:256])
        plain_config = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=64, seed=seed)
        for r in args.ratios:
            for c in args.criteria:
                models = {arm: pipeline.prune(base, ratio=r, criterion=c, scope="tree", seed=seed, calib_data=calib,
                                              recover=rec).model
                          for arm, rec in (("plain", None), ("recovered", "bias,bn,ls"))}
                cell = {"seed": seed, "ratio": r, "criterion": c, "unpruned": unpruned,
                        "pruned": evaluate(models["plain"], val), "acc": {}, "epoch": {}, "history": {}}

                def run(name, arm, config):
                    result = finetune(models[arm], train, None, config, stream=io.StringIO())
                    cell["acc"][name] = evaluate(result.model, val)
                    cell["epoch"][name] = result.best_epoch
                    cell["history"][name] = result.history

                run("plain", "plain", plain_config)
                for name, (arm, change) in VARIANTS.items():
                    if change is None:
                        cell["acc"][name] = evaluate(models[arm], val)
                    elif change == "default":
                        run(name, arm, recovered_config(plain_config))
                    else:
                        run(name, arm, replace(plain_config, seed=seed + change.get("seed+", 0),
                                               **{k: v for k, v in change.items() if k != "seed+"}))
                for shift in ORDERS[1:]:   # the default over the other batch orders (the plain arm's are above)
                    run(f"default {shift}", "recovered", recovered_config(replace(plain_config, seed=seed + shift)))
                # the held-out loss of the start, as keep_start scores it (the same 0.1 slice)
                held = split_holdout(Batches([train], "training data"), 0.1, seed, 64)[1]
                cell["start_loss"] = finetune_start_loss(models["recovered"], held)
                cell["pruned_loss"] = finetune_start_loss(models["plain"], held)
                cell["unpruned_loss"] = finetune_start_loss(base, held)
                cells.append(cell)
                print(f"[{time.perf_counter() - start_all:6.0f} s] seed {seed} ratio {r:g} {c}", file=sys.stderr)
    lines = report(args, cells, n_val)
    lines += ["", f"Total: {time.perf_counter() - start_all:.0f} s."]
    args.out.write_text(f"Command: `.venv/bin/python {shlex.join(sys.argv)}`\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


def finetune_start_loss(model: onnx.ModelProto, held: Batches) -> float:
    """Mean cross-entropy of ``model`` on the held-out batches, in inference (what keep_start scores)."""
    import numpy as np
    import onnxruntime as ort

    from passes.finetune import _training_copy

    session = ort.InferenceSession(_training_copy(model).SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    total, seen = 0.0, 0
    for x, y in held.batches:
        z = session.run(None, {name: x})[0].astype(np.float64)
        z -= z.max(1, keepdims=True)
        total += float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).sum())
        seen += len(y)
    return total / seen


def report(args, cells: list, n_val: int) -> list[str]:
    def diffs(name, ref="plain", only=None):
        return [100 * (c["acc"][name] - c["acc"][ref]) for c in cells if only is None or only(c)]

    def stats(ds):
        std = statistics.stdev(ds) if len(ds) > 1 else 0.0
        return f"{statistics.fmean(ds):+.2f} | {std:.2f} | {sum(d < -1e-9 for d in ds)} of {len(ds)} | {min(ds):+.2f}"

    lines = [f"# Fine-tuning a recovered start — digits, seeds {', '.join(map(str, args.seeds))}, "
             f"ratios {' '.join(f'{r:g}' for r in args.ratios)}, criteria {' '.join(args.criteria)}, tree scope, "
             f"{args.epochs} epochs", "",
             "Each variant's validation top-1 minus plain fine-tuning's (lr 1e-3, best epoch on training accuracy) "
             f"of the same pruning, same seed; percentage points over the cells (one image = {100 / n_val:.2f}).", "",
             "| variant | mean | std | below 0 | worst |", "|---|---|---|---|---|"]
    for name in VARIANTS:
        lines.append(f"| {name} | {stats(diffs(name))} |")
    lines += ["", "By seed (mean over the seed's cells, points; cells below plain fine-tuning in brackets):", "",
              "| seed | unpruned | plain fine-tuned − unpruned | recovered − unpruned | "
              + " | ".join(n.split(" (")[0] if n != DEFAULT else "the default" for n in VARIANTS
                           if VARIANTS[n][0] == "recovered" and VARIANTS[n][1] is not None) + " |",
              "|---|---|---|---|" + "---|" * sum(VARIANTS[n][0] == "recovered" and VARIANTS[n][1] is not None
                                                 for n in VARIANTS)]
    for seed in args.seeds:
        mine = [c for c in cells if c["seed"] == seed]
        row = [pts(mine[0]["unpruned"]),
               f"{statistics.fmean(100 * (c['acc']['plain'] - c['unpruned']) for c in mine):+.2f}",
               f"{statistics.fmean(100 * (c['acc']['recovered, no fine-tuning'] - c['unpruned']) for c in mine):+.2f}"]
        for name, (arm, change) in VARIANTS.items():
            if arm == "recovered" and change is not None:
                ds = diffs(name, only=lambda c: c["seed"] == seed)
                row.append(f"{statistics.fmean(ds):+.2f} ({sum(d < -1e-9 for d in ds)})")
        lines.append(f"| {seed} | " + " | ".join(row) + " |")
    # both arms over three batch orders: the gap against fine-tuning's own noise
    plain_names = ["plain", "plain again (batch order seed + 1000)", "plain again (batch order seed + 2000)"]
    rec_names = [DEFAULT] + [f"default {s}" for s in ORDERS[1:]]
    for c in cells:
        c["plain3"] = statistics.fmean(c["acc"][n] for n in plain_names)
        c["default3"] = statistics.fmean(c["acc"][n] for n in rec_names)
    lines += ["", f"Both arms over {len(ORDERS)} batch orders (seed + {', '.join(map(str, ORDERS))}), mean per cell: "
              "the default minus plain fine-tuning (points):", "",
              "| seed | mean | std | below 0 | worst |", "|---|---|---|---|---|"]
    for seed in args.seeds + ["all"]:
        ds = [100 * (c["default3"] - c["plain3"]) for c in cells if seed == "all" or c["seed"] == seed]
        lines.append(f"| {seed} | {stats(ds)} |")
    lines += ["", "Every cell: validation top-1 (%); the epoch each arm kept in brackets (0: the start); the "
              "default's held-out loss (mean cross-entropy on the 0.1 of the training data it holds out): the "
              "unpruned and the pruned model on the same slice, then the recovered start and each epoch; plain and "
              "the default over the three batch orders.", "",
              "| seed | ratio | criterion | unpruned | pruned | recovered | plain fine-tuned | default | "
              "held-out loss: unpruned, pruned; recovered start → epochs | plain, 3 orders | default, 3 orders |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        curve = " → ".join(f"{v:.1e}" for v in [c["start_loss"]] + [h["val_loss"] for h in c["history"][DEFAULT]])
        lines.append(f"| {c['seed']} | {c['ratio']:g} | {c['criterion']} | {pts(c['unpruned'])} | {pts(c['pruned'])} | "
                     f"{pts(c['acc']['recovered, no fine-tuning'])} | {pts(c['acc']['plain'])} ({c['epoch']['plain']}) | "
                     f"{pts(c['acc'][DEFAULT])} ({c['epoch'][DEFAULT]}) | "
                     f"{c['unpruned_loss']:.1e}, {c['pruned_loss']:.1e}; {curve} | "
                     f"{' '.join(pts(c['acc'][n]) for n in plain_names)} | "
                     f"{' '.join(pts(c['acc'][n]) for n in rec_names)} |")
    return lines


if __name__ == "__main__":
    main()
