"""The paper's Table III protocol (accuracy after pruning and after fine-tuning, node vs tree scope)
and its Fig. 5 (Eq. 5 overlap of the removed filter indices), measured with our own code.

    .venv/bin/python benchmarks/accuracy.py [--quick] [--seeds 0 1 2] [--ratios 0.3 0.5 0.7 0.9]
        [--epochs 10] [--data-dir CIFAR_DIR] [--model M.onnx] [--out-dir benchmarks/out]
        [--criteria l1 l2 fpgm hrank hrank-star taylor random]

Default: digits (sklearn, 1,797 8x8 images, ``demo.digits_split(seed)``: 80% train / 20%
validation, a different split per seed); the demo's small residual CNN
(``demo.export_small_resnet``) trained from scratch with ONNX Runtime training (``finetune``,
30 epochs, lr 3e-3, batch 64) once per seed: that is the unpruned baseline, reused by every cell
of the seed. Each cell (layerwise ratio × criterion l1/l2 × scope node/tree) is pruned with
``pipeline.prune`` (the mask-equivalence check must pass: ``verified`` is asserted), its
validation top-1 measured, then fine-tuned ``--epochs`` epochs at lr 1e-3 (cosine schedule,
AdamW, batch 64) and measured again. Tables: mean ± sample std over seeds, in percentage points.

``--criteria``: the rows (default l1 l2); data criteria (hrank, hrank-star, taylor, recon) get the
seed's first 256 training samples (with labels) as calibration data, never validation samples.

``--recover STEPS`` (default ``bias,bn,ls``, the ``--recover`` default; ``none`` skips it): every cell is also pruned with the
``recover`` pass on the same 256 training images WITHOUT their labels, measured ("pruned +
recovered") and fine-tuned the way ``finetune`` fine-tunes a model ``recover`` changed
(``passes.finetune.recovered_config`` where recover left a held-out output error of at most 0.25:
a tenth of ``--lr``, the start kept unless an epoch beats it on the loss of a tenth of the
training data held out of training; otherwise like the plain cell; ``--recovered-start fresh``:
exactly like the plain cell) with the plain cell's seed (same split, same batch order): "recovered
+ fine-tuned", compared with the plain columns seed by seed, and with fine-tuning's own spread (the
plain cell fine-tuned again with another batch order, seed + 1000).

Model selection: ``finetune`` keeps its best epoch on the data it is given for validation. Here it
is given none (``--select-on-val`` changes that), so the epoch kept is the best on training
accuracy and the validation set is only ever used for the numbers reported: no selection on it.

``--data-dir DIR``: CIFAR-10 from the user's own python-pickle folder (``data_batch_1..5``,
``test_batch``; never downloaded), inputs scaled to [0, 1] and standardized with the usual
per-channel CIFAR-10 mean/std; the model is a small residual CNN for 32x32 defined here and
trained from scratch, or ``--model M.onnx`` (a classifier taking [N, C, H, W] float32 of the
data's shape) used as the unpruned baseline as it is (no training; the same for every seed).

Fig. 5: for the first seed, per pruned group (labelled by its first root) and criterion, Eq. 5
``|removed(tree) ∩ removed(node)| / |removed(node)|`` from the ``Masks`` analysis of
``tag,trees,classify,score{criterion=C scope=S},mask{ratio=R}`` on the trained model. Written to
``OUT/fig5_overlap.png``; the tables to ``OUT/accuracy.md``.
"""

from __future__ import annotations

import argparse
import io
import math
import pickle
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import outputs  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import ir  # noqa: E402
import pipeline  # noqa: E402
from passes.analyses import Masks, Patterns  # noqa: E402
from passes.finetune import (RECOVERED_HOLDOUT, RECOVERED_LR_SCALE, RECOVERED_MAX_ERROR,  # noqa: E402
                             TrainConfig, evaluate, finetune, is_recovered, start_config)
from passes.recover import DEFAULT_STEPS  # noqa: E402
from workflows import demo  # noqa: E402

CRITERIA = ("l1", "l2")   # --criteria replaces it (e.g. l1 l2 fpgm hrank hrank-star taylor random)
DATA_CRITERIA = ("hrank", "hrank-star", "taylor")
RESEED = 1000            # --recover: the plain cell fine-tuned again with seed + RESEED (batch order)
CALIB_SAMPLES = 256       # data criteria: the first training samples of the seed's split
SCOPES = ("node", "tree")
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)


# --------------------------------------------------------------------------- data and models
def load_cifar10(folder: Path):
    """``((x_train, y_train), (x_test, y_test))`` from the python-pickle CIFAR-10 folder."""
    def read(name):
        path = folder / name
        if not path.is_file():
            raise SystemExit(f"error: {path}: missing (expected data_batch_1..5 and test_batch)")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d[b"labels"], np.int64)

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    xt, yt = read("test_batch")

    def norm(x):
        return ((x.astype(np.float32) / 255.0 - CIFAR_MEAN) / CIFAR_STD).astype(np.float32)

    return ((norm(np.concatenate([p[0] for p in parts])), np.concatenate([p[1] for p in parts])),
            (norm(xt), yt))


def export_cifar_resnet(path: Path, seed: int = 0, width: int = 32) -> Path:
    """A small residual CNN for 32x32 RGB (three stages, global average pooling), exported like
    the demo's model (opset 17, dynamic batch, no constant folding)."""
    import warnings

    import torch
    from torch import nn

    Block = demo.residual_block

    def down(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU())

    class CifarResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.stage1, self.down1 = Block(width), down(width, 2 * width)          # 32x32 -> 16x16
            self.stage2, self.down2 = Block(2 * width), down(2 * width, 4 * width)  # 16x16 -> 8x8
            self.stage3 = Block(4 * width)
            self.head = nn.Linear(4 * width, 10)

        def forward(self, x):
            x = self.stage3(self.down2(self.stage2(self.down1(self.stage1(self.stem(x))))))
            return self.head(torch.flatten(torch.mean(x, dim=(2, 3), keepdim=True), 1))

    torch.manual_seed(seed)
    net = CifarResNet().eval()
    with torch.no_grad():  # distinct weights: identical fresh BatchNorm tensors would be shared
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return path


# --------------------------------------------------------------------------- statistics and formatting
def mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def fmt_acc(values: list[float]) -> str:
    m, s = mean_std([100 * v for v in values])
    return f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def fmt_count(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def row_label(criterion: str, scope: str) -> str:
    return f"{criterion} {scope}" + (" (ONNXPruner)" if scope == "tree" else "")


# --------------------------------------------------------------------------- Fig. 5
def removed_by_group(model: onnx.ModelProto, criterion: str, scope: str, ratio: float, calib=None):
    """{group id: (label, removed class indices)} and the groups, from the Masks analysis."""
    from passes.base import PassContext

    spec = f"tag,trees,classify,score{{criterion={criterion} scope={scope}}},mask{{ratio={ratio!r}}}"
    ctx = pipeline.Pipeline.parse(spec).run(ir.lower(model), PassContext(calib_data=calib))
    patterns, masks = ctx.get(Patterns), ctx.get(Masks)
    out = {}
    for g in patterns.groups:
        if g.id not in masks.kept:
            continue
        removed = frozenset(range(g.channels)) - frozenset(masks.kept[g.id])
        out[g.id] = (g.roots[0], removed, masks.kept[g.id])
    return out


def overlap_table(model: onnx.ModelProto, ratios: list[float], calib=None):
    """{criterion: {ratio: [(label, overlap or None, n removed)]}} (Eq. 5)."""
    table: dict = {}
    for c in CRITERIA:
        table[c] = {}
        for r in ratios:
            node, tree = removed_by_group(model, c, "node", r, calib), removed_by_group(model, c, "tree", r, calib)
            rows = []
            for gid, (label, rem_node, _) in node.items():
                rem_tree = tree[gid][1]
                ov = len(rem_tree & rem_node) / len(rem_node) if rem_node else None
                rows.append((label, ov, len(rem_node)))
            table[c][r] = rows
    return table


def plot_overlap(table: dict, ratios: list[float], path: Path, title: str, keep: bool = False):
    """One panel per criterion, at most 2 across; each panel at most 9 inches wide whatever the
    number of layers (labels thinned to fit), the legend below the panels, never over the data:
    a readable figure of at most ~2200 px across at 120 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    criteria = list(table)
    labels = [lab for lab, _, _ in table[criteria[0]][ratios[0]]]
    xs = np.arange(len(labels))
    cols = min(2, len(criteria))
    rows = math.ceil(len(criteria) / cols)
    width = min(9.0, max(4.5, 0.22 * len(labels) + 2.0))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.4 * rows + 0.9), sharey=True, squeeze=False)
    step = max(1, math.ceil(len(labels) / 30))        # at most 30 tick labels a panel
    for ax, c in zip(axes.flat, criteria):
        for r in ratios:
            ys = [np.nan if ov is None else 100 * ov for _, ov, _ in table[c][r]]
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, label=f"ratio {r:g}")
        ax.set_xticks(xs[::step], [lab.strip("/").replace("/", ".")[-22:] for lab in labels][::step],
                      rotation=60, ha="right", fontsize=6)
        ax.set_ylim(0, 105)
        ax.set_title(f"ONNXPruner ({c}) vs {c}-norm", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(criteria):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("overlap (%)")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(ratios), fontsize=8, frameon=False)
    fig.suptitle(title + " — Eq. 5 overlap of removed indices", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    if keep:
        return fig
    plt.close(fig)
    return None


# --------------------------------------------------------------------------- recovery
def _recovery_lines(cells: dict, ratios: list[float], baseline_acc: list[float], recover: str) -> list[str]:
    """What recovery bought, paired by seed: recovered − pruned, recovered + fine-tuned −
    fine-tuned (points, mean over criteria × scopes × seeds, worst cell), the held-out output error."""
    lines = [f"What recovery ({recover}) bought (percentage points, paired by seed; mean over every criterion, "
             "scope and seed, then the worst cell):", "",
             "| | " + " | ".join(f"{r:g}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
    rows = {"recovered − pruned": (f"recovered:{recover}", "pruned"),
            "recovered + fine-tuned − fine-tuned": (f"recovered_finetuned:{recover}", "finetuned"),
            "recovered (no fine-tuning) − fine-tuned": (f"recovered:{recover}", "finetuned"),
            f"fine-tuning's own spread: fine-tuned again (batch-order seed + {RESEED}) − fine-tuned":
                ("finetuned_reseed", "finetuned")}
    for label, (a, b) in rows.items():
        row = []
        for r in ratios:
            diffs = [100 * (d[a] - d[b]) for key, ds in cells.items() if key[0] == r for d in ds]
            row.append(f"{statistics.fmean(diffs):+.2f} (worst {min(diffs):+.2f})")
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    row = []
    for r in ratios:   # each cell against its own seed's unpruned model (cells list seeds in order)
        diffs = [100 * (d[f"recovered:{recover}"] - b) for key, ds in cells.items() if key[0] == r
                 for d, b in zip(ds, baseline_acc)]
        row.append(f"{statistics.fmean(diffs):+.2f} (worst {min(diffs):+.2f})")
    lines.append("| pruned + recovered − unpruned | " + " | ".join(row) + " |")
    row = []
    for r in ratios:
        errs = [d[f"heldout_error:{recover}"] for key, ds in cells.items() if key[0] == r for d in ds]
        row.append(f"{statistics.fmean(e[0] for e in errs):.3f} → {statistics.fmean(e[1] for e in errs):.3f}")
    lines.append("| held-out output error vs unpruned (64 of the 256 images) | " + " | ".join(row) + " |")
    lines.append("")
    # every cell, seed by seed: what the mean and the worst cell above summarize
    lines += [f"Every cell ({recover}), seed by seed (percentage points): pruned + recovered − unpruned; "
              "recovered + fine-tuned − fine-tuned; fine-tuned again (another batch order) − fine-tuned:", "",
              "| criterion scope | " + " | ".join(f"{r:g}" for r in ratios) + " |", "|---|" + "---|" * len(ratios)]
    worse = []
    for c, sc in sorted({(k[1], k[2]) for k in cells}, key=lambda k: (list(CRITERIA).index(k[0]), k[1])):
        row = []
        for r in ratios:
            ds = cells[(r, c, sc)]
            rec = " ".join(f"{100 * d[f'recovered:{recover}'] - 100 * b:+.2f}" for d, b in zip(ds, baseline_acc))
            ft = " ".join(f"{100 * (d[f'recovered_finetuned:{recover}'] - d['finetuned']):+.2f}" for d in ds)
            ft += "; " + " ".join(f"{100 * (d['finetuned_reseed'] - d['finetuned']):+.2f}" for d in ds)
            worse += [(r, c, sc, d["seed"], 100 * (d[f"recovered_finetuned:{recover}"] - d["finetuned"]))
                      for d in ds if d[f"recovered_finetuned:{recover}"] < d["finetuned"]]
            row.append(f"{rec}; {ft}")
        lines.append(f"| {c} {sc} | " + " | ".join(row) + " |")
    total = sum(len(ds) for ds in cells.values())
    spread = [100 * (d["finetuned_reseed"] - d["finetuned"]) for ds in cells.values() for d in ds]
    lines += ["", f"Recovered + fine-tuned below fine-tuned in {len(worse)} of {total} cells"
              + (": " + ", ".join(f"{r:g} {c} {sc} seed {sd} ({v:+.2f})" for r, c, sc, sd, v in worse) if worse else "")
              + f". Fine-tuned again from the same pruned model with another batch order: below the first run in "
              f"{sum(v < 0 for v in spread)} of {total} cells, by up to {max(0.0, -min(spread)):.2f} points "
              f"(|difference| {statistics.fmean(abs(v) for v in spread):.2f} on the mean).", ""]
    paired = {name: [100 * (d[key] - d["finetuned"]) for ds in cells.values() for d in ds] for name, key in
              (("recovered + fine-tuned − fine-tuned", f"recovered_finetuned:{recover}"),
               ("recovered (no fine-tuning) − fine-tuned", f"recovered:{recover}"),
               ("fine-tuned again − fine-tuned", "finetuned_reseed"))}
    noise = max(abs(v) for v in spread)
    lines += ["The paired differences against fine-tuning's own spread (points, every cell; one validation image = "
              f"{100 / max(1, cells_val_size(cells)):.2f}):", "", "| difference | mean | std | below 0 | "
              f"below −{noise:.2f} (the largest batch-order difference) | worst |", "|---|---|---|---|---|---|"]
    for name, vs in paired.items():
        lines.append(f"| {name} | {statistics.fmean(vs):+.2f} | {statistics.stdev(vs) if len(vs) > 1 else 0:.2f} | "
                     f"{sum(v < -1e-9 for v in vs)} of {len(vs)} | {sum(v < -noise - 1e-9 for v in vs)} | "
                     f"{min(vs):+.2f} |")
    lines.append("")
    # by seed, each cell against its own seed's unpruned model: where recovered + fine-tuned loses
    seeds = [d["seed"] for d in next(iter(cells.values()))]
    lines += [f"By seed ({recover}; points against the seed's unpruned model, mean over its cells; the last "
              "column counts its cells where recovered + fine-tuned is below fine-tuned):", "",
              "| seed | unpruned | fine-tuned | fine-tuned again (another batch order) | pruned + recovered | "
              "recovered + fine-tuned | below |", "|---|---|---|---|---|---|---|"]
    for i, (seed, b) in enumerate(zip(seeds, baseline_acc)):
        ds = [cs[i] for cs in cells.values()]

        def vs(key):
            return f"{statistics.fmean(100 * (d[key] - b) for d in ds):+.2f}"
        below = sum(d[f"recovered_finetuned:{recover}"] < d["finetuned"] for d in ds)
        lines.append(f"| {seed} | {100 * b:.2f} | {vs('finetuned')} | {vs('finetuned_reseed')} | "
                     f"{vs(f'recovered:{recover}')} | {vs(f'recovered_finetuned:{recover}')} | {below} of {len(ds)} |")
    lines.append("")
    return lines


def cells_val_size(cells: dict) -> int:
    """The validation set's size (each cell records it)."""
    return max((d.get("val_size", 0) for ds in cells.values() for d in ds), default=0)


# --------------------------------------------------------------------------- main
def main() -> None:
    global CRITERIA, SCOPES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criteria", nargs="+", default=list(CRITERIA),
                    help="criteria to compare (registered names: l1 l2 fpgm hrank hrank-star taylor random); "
                         f"data criteria get the first {CALIB_SAMPLES} training samples as calibration data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    ap.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    ap.add_argument("--train-epochs", type=int, default=30, help="epochs of the from-scratch baseline")
    ap.add_argument("--train-lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--select-on-val", action="store_true",
                    help="let finetune keep its best epoch on the validation set (optimistic)")
    ap.add_argument("--data-dir", type=Path, help="CIFAR-10 python-pickle folder (default: digits)")
    ap.add_argument("--model", type=Path, help="an ONNX classifier used as the unpruned baseline (no training)")
    ap.add_argument("--out-dir", type=Path, default=outputs.LATEST)
    outputs.add_argument(ap)
    ap.add_argument("--keep-start", action="store_true",
                    help="fine-tuning after pruning keeps the model it was handed when no epoch beats it "
                         "(TrainConfig.keep_start: scored in inference mode, on training data unless --select-on-val)")
    ap.add_argument("--recover", nargs="+", default=[DEFAULT_STEPS],
                    help="recovery steps for the 'pruned + recovered' rows, one set of rows per setting "
                         "(e.g. bias,bn bias,bn,ls; 'none': no such rows)")
    ap.add_argument("--recovered-start", choices=["auto", "fresh"], default="auto",
                    help="how a recovered model is fine-tuned: auto (finetune's default for it: "
                         "passes.finetune.recovered_config) or fresh (exactly like the plain cells)")
    ap.add_argument("--scopes", nargs="+", default=list(SCOPES), choices=list(SCOPES),
                    help="pruning scopes to compare (default: node tree)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2 ratios, 2 fine-tuning epochs")
    ap.add_argument("--verbose", action="store_true", help="show finetune's per-epoch lines")
    args = ap.parse_args()
    outputs.check([args.out_dir / "accuracy.md", args.out_dir / "fig5_overlap.png"], args.update_tracked)
    from passes.criteria import CRITERIA as KNOWN
    unknown = [c for c in args.criteria if c not in KNOWN]
    if unknown:
        ap.error(f"unknown criterion {unknown[0]!r}; known: {', '.join(sorted(KNOWN))}")
    CRITERIA = tuple(args.criteria)
    if args.quick:
        args.seeds = args.seeds[:1]
        args.ratios = [args.ratios[0], args.ratios[-1]] if len(args.ratios) > 1 else args.ratios
        args.epochs = 2
    for r in args.ratios:
        if not 0.0 <= r < 1.0:
            ap.error(f"ratios must be in [0, 1), got {r}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start_all = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start_all:7.1f} s] {msg}", file=sys.stderr, flush=True)

    def quiet():
        return None if args.verbose else io.StringIO()

    SCOPES = tuple(s for s in ("node", "tree") if s in args.scopes)
    recovers = [r for r in args.recover if r not in ("", "none")]

    def tune_config(seed: int) -> TrainConfig:   # every fine-tuning after pruning
        return TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=seed,
                           keep_start=args.keep_start)
    cifar = load_cifar10(args.data_dir) if args.data_dir else None
    user_model = onnx.load(str(args.model)) if args.model else None
    if cifar:
        dataset = "CIFAR-10 (50,000 train / 10,000 test_batch as validation)"
    else:
        dataset = "digits (sklearn, 1,797 8x8 images; seeded 80/20 train/validation split per seed)"
    if user_model is not None:
        model_text = f"{args.model.name} (user model, not trained here)"
    elif cifar:
        model_text = (f"small residual CNN for 32x32 (defined in this script), trained from scratch: "
                      f"{args.train_epochs} epochs, lr {args.train_lr:g}, batch {args.batch_size}")
    else:
        model_text = (f"demo small residual CNN (demo.export_small_resnet), trained from scratch: "
                      f"{args.train_epochs} epochs, lr {args.train_lr:g}, batch {args.batch_size}")

    # cells[(ratio, criterion, scope)] = list over seeds of dicts
    cells: dict = {}
    baseline_acc, base_params, base_flops = [], set(), set()
    overlap = None
    notes: list[str] = []
    for seed in args.seeds:
        train, val = cifar if cifar else demo.digits_split(seed)
        select = val if args.select_on_val else None
        if user_model is not None:
            base = user_model
        else:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                exported = onnx.load(str(export_cifar_resnet(path, seed) if cifar
                                         else demo.export_small_resnet(path, seed)))
            log(f"seed {seed}: training the baseline from scratch ({args.train_epochs} epochs)")
            base = finetune(exported, train, select,
                            TrainConfig(epochs=args.train_epochs, lr=args.train_lr,
                                        batch_size=args.batch_size, seed=seed), stream=quiet()).model
        calib = (train[0][:CALIB_SAMPLES], train[1][:CALIB_SAMPLES])
        acc0 = evaluate(base, val)
        baseline_acc.append(acc0)
        log(f"seed {seed}: unpruned validation top-1 {100 * acc0:.2f}")
        for ratio in args.ratios:
            for c in CRITERIA:
                for s in SCOPES:
                    res = pipeline.prune(base, ratio=ratio, criterion=c, scope=s, seed=seed, calib_data=calib)
                    rep = res.report
                    assert rep["verified"] is True, f"prune not verified: seed {seed} {ratio} {c} {s}"
                    left = [g for g in rep["groups"] if g.get("reason", "").startswith("left alone")]
                    if left:
                        notes.append(f"seed {seed}, ratio {ratio:g}, {c} {s}: {len(left)} group(s) left "
                                     f"alone by the equivalence check ({left[0]['roots'][0]}: {left[0]['reason']})")
                    acc_p = evaluate(res.model, val)
                    tuned = finetune(res.model, train, select,
                                     tune_config(seed), stream=quiet()).model
                    acc_f = evaluate(tuned, val)
                    extra = {}
                    if recovers:   # fine-tuning's own spread: the same start, another batch order
                        again = finetune(res.model, train, select,
                                         tune_config(seed + RESEED), stream=quiet()).model
                        extra["finetuned_reseed"] = evaluate(again, val)
                    for recover in recovers:
                        # labels ride along for the report's held-out top-1; recover fits on x alone
                        rec = pipeline.prune(base, ratio=ratio, criterion=c, scope=s, seed=seed,
                                             calib_data=calib, recover=recover)
                        assert rec.report["verified"] is True
                        # the default path: a model recover changed is fine-tuned as a recovered start
                        rec_config, kind = start_config(tune_config(seed), args.recovered_start,
                                                        is_recovered(rec.model))
                        tuned_r = finetune(rec.model, train, select, rec_config, stream=quiet()).model
                        extra.update({f"recovered:{recover}": evaluate(rec.model, val), f"start:{recover}": kind,
                                      f"recovered_finetuned:{recover}": evaluate(tuned_r, val),
                                      f"heldout_error:{recover}": (rec.report["recovery"]["heldout_error_before"],
                                                                   rec.report["recovery"]["heldout_error_after"])})
                    base_params.add(rep["params_before"])
                    base_flops.add(rep["flops_before"])
                    cells.setdefault((ratio, c, s), []).append({
                        "seed": seed, "pruned": acc_p, "finetuned": acc_f, "val_size": len(val[1]),
                        "sparsity": 1 - rep["params_after"] / rep["params_before"],
                        "speedup": rep["flops_before"] / rep["flops_after"],
                        "kept": {g["id"]: tuple(g["kept"]) for g in rep["groups"] if g.get("pruned")}, **extra})
                    log(f"seed {seed} ratio {ratio:g} {c} {s}: pruned {100 * acc_p:.2f}, "
                        f"fine-tuned {100 * acc_f:.2f} (max abs diff {rep['max_abs_diff']:.1e})"
                        + "".join(f"; recovered ({r}) {100 * extra[f'recovered:{r}']:.2f}, + fine-tuned "
                                  f"{100 * extra[f'recovered_finetuned:{r}']:.2f}" for r in recovers))
        if seed == args.seeds[0]:
            overlap = overlap_table(base, args.ratios, calib)
            # the Masks analysis run piecewise must be the decision prune() shipped
            for r in args.ratios:
                for c in CRITERIA:
                    for s in SCOPES:
                        masks = {gid: kept for gid, (_, _, kept) in removed_by_group(base, c, s, r, calib).items()}
                        shipped = cells[(r, c, s)][-1]["kept"]
                        for gid, kept in shipped.items():
                            if tuple(masks.get(gid, ())) != kept:
                                notes.append(f"mismatch: group {gid} at {r:g} {c} {s}: Masks kept "
                                             f"{masks.get(gid)} but prune() kept {kept}")
    total = time.perf_counter() - start_all

    # ------------------------------------------------------------------ tables
    ratios, n = args.ratios, len(args.seeds)
    lines = [f"# Table III protocol — {dataset}", "",
             f"Model: {model_text}. Seeds: {', '.join(map(str, args.seeds))} (mean ± sample std over "
             f"{n} seed{'s' if n > 1 else ''}, validation top-1 in %). Fine-tuning after pruning: "
             f"{args.epochs} epochs, lr {args.lr:g}, cosine, AdamW, batch {args.batch_size} (ONNX Runtime "
             f"training). Epoch kept by finetune: best on "
             f"{'validation accuracy (optimistic)' if args.select_on_val else 'training accuracy (validation not used for selection)'}"
             f"{', the model as handed in included (--keep-start, inference mode)' if args.keep_start else ''}.",
             "",
             f"Unpruned acc. {fmt_acc(baseline_acc)}, Params: {fmt_count(statistics.fmean(base_params))}, "
             f"FLOPs: {fmt_count(statistics.fmean(base_flops))} (per image)", ""]

    def per_ratio(key, fmt):
        out = []
        for r in ratios:
            vals = [d[key] for c in CRITERIA for s in SCOPES for d in cells[(r, c, s)]]
            lo, hi = min(vals), max(vals)
            out.append(fmt(lo) if math.isclose(lo, hi, rel_tol=1e-9) else f"{fmt(lo)}–{fmt(hi)}")
        return out

    header = "| Layerwise PR | " + " | ".join(f"{r:g}" for r in ratios) + " |"
    sep = "|---|" + "---|" * len(ratios)
    lines += [header, sep,
              "| Sparsity (params) | " + " | ".join(per_ratio("sparsity", lambda v: f"{100 * v:.2f}%")) + " |",
              "| Speed-up (FLOPs) | " + " | ".join(per_ratio("speedup", lambda v: f"{v:.2f}×")) + " |"]
    stages = [("pruned", "after pruning, no fine-tuning"),
              ("finetuned", f"after fine-tuning ({args.epochs} epochs, lr {args.lr:g})")]
    for i, recover in enumerate(recovers):
        stages.insert(1 + i, (f"recovered:{recover}",
                              f"pruned + recovered ({recover}, {CALIB_SAMPLES} unlabeled training images)"))
        on = ("validation accuracy" if args.select_on_val
              else f"the loss of {RECOVERED_HOLDOUT:g} of the training data held out")
        n_rec = sum(d[f"start:{recover}"] == "recovered" for ds in cells.values() for d in ds)
        how = (f"{args.epochs} epochs; {n_rec} of {sum(map(len, cells.values()))} cells as a recovered start (held-out "
               f"output error at most {RECOVERED_MAX_ERROR:g}): lr {args.lr * RECOVERED_LR_SCALE:g}, the start kept "
               f"unless an epoch beats it on {on}; the others as the plain cells" if args.recovered_start == "auto"
               else f"{args.epochs} epochs")
        stages.append((f"recovered_finetuned:{recover}", f"recovered ({recover}) + fine-tuned ({how})"))
    for key, title in stages:
        lines.append(f"| **{title}** |" + " |" * len(ratios))
        for c in CRITERIA:
            for s in SCOPES:
                row = []
                for r in ratios:
                    text = fmt_acc([d[key] for d in cells[(r, c, s)]])
                    if s == "tree" and "node" in SCOPES:
                        delta = 100 * (statistics.fmean(d[key] for d in cells[(r, c, "tree")])
                                       - statistics.fmean(d[key] for d in cells[(r, c, "node")]))
                        text += f" ({'↑' if delta > 0 else '↓' if delta < 0 else '='}{abs(delta):.2f})"
                    row.append(text)
                lines.append(f"| {row_label(c, s)} | " + " | ".join(row) + " |")
    lines.append("")

    for recover in recovers:
        lines += _recovery_lines(cells, ratios, baseline_acc, recover)

    # paired tree - node differences and the verdict per ratio
    if len(SCOPES) < 2:
        return _finish(args, lines, overlap, notes, total, cells, n, user_model, cifar, ratios)
    lines += ["Tree − node, paired by seed (percentage points, mean ± std; wins/ties/losses of tree over seeds):", "",
              "| stage | criterion | " + " | ".join(f"{r:g}" for r in ratios) + " |",
              "|---|---|" + "---|" * len(ratios)]
    verdict: dict = {}
    for key, stage in (("pruned", "after pruning"), ("finetuned", "after fine-tuning")):
        for c in CRITERIA:
            row = []
            for r in ratios:
                diffs = [100 * (t[key] - nd[key]) for t, nd in zip(cells[(r, c, "tree")], cells[(r, c, "node")])]
                m, s = mean_std(diffs)
                w = sum(d > 1e-12 for d in diffs)
                lo = sum(d < -1e-12 for d in diffs)
                row.append(f"{m:+.2f}" + (f" ± {s:.2f}" if s is not None else "") + f" ({w}/{n - w - lo}/{lo})")
                verdict.setdefault((key, r), []).append((c, m))
            lines.append(f"| {stage} | {c} | " + " | ".join(row) + " |")
    lines.append("")
    for key, stage in (("pruned", "after pruning"), ("finetuned", "after fine-tuning")):
        parts = []
        for r in ratios:
            items = ", ".join(f"{c} {'yes' if m > 0 else 'tie' if m == 0 else 'no'} ({m:+.2f})"
                              for c, m in verdict[(key, r)])
            parts.append(f"{r:g}: {items}")
        lines.append(f"Did tree beat node on the mean, {stage}? " + "; ".join(parts) + ".")
    lines.append("")

    return _finish(args, lines, overlap, notes, total, cells, n, user_model, cifar, ratios)


def _finish(args, lines, overlap, notes, total, cells, n, user_model, cifar, ratios) -> None:
    # Fig. 5 table
    seed0 = args.seeds[0]
    lines += [f"## Fig. 5 — Eq. 5 overlap |removed(tree) ∩ removed(node)| / |removed(node)|, seed {seed0}", "",
              "| criterion | group (first root) | channels removed | " + " | ".join(f"{r:g}" for r in ratios) + " |",
              "|---|---|---|" + "---|" * len(ratios)]
    for c in CRITERIA:
        labels = [lab for lab, _, _ in overlap[c][ratios[0]]]
        for i, lab in enumerate(labels):
            removed = "/".join(str(overlap[c][r][i][2]) for r in ratios)
            vals = [overlap[c][r][i][1] for r in ratios]
            lines.append(f"| {c} | {lab} | {removed} | " +
                         " | ".join("n/a" if v is None else f"{100 * v:.1f}%" for v in vals) + " |")
        means = []
        for r in ratios:
            vs = [ov for _, ov, _ in overlap[c][r] if ov is not None]
            means.append(f"{100 * statistics.fmean(vs):.1f}%" if vs else "n/a")
        lines.append(f"| {c} | mean over groups | | " + " | ".join(means) + " |")
    lines.append("")
    if notes:
        lines += ["Notes:", ""] + [f"- {t}" for t in notes] + [""]
    lines.append(f"Total: {total:.1f} s ({len(cells) * n} pruned + fine-tuned cells, "
                 f"{0 if user_model is not None else n} baseline trainings).")
    text = "\n".join(lines) + "\n"

    plot_overlap(overlap, ratios, args.out_dir / "fig5_overlap.png",
                 f"Eq. 5 overlap of removed channel indices, tree vs node scope, seed {seed0} "
                 f"({'CIFAR-10' if cifar else 'digits'})")
    (args.out_dir / "accuracy.md").write_text(
        f"Command: `.venv/bin/python {shlex.join(sys.argv)}`\n\n" + text)
    print(text, end="")
    print(f"wrote {args.out_dir / 'accuracy.md'} and {args.out_dir / 'fig5_overlap.png'}")
    print(f"total seconds: {total:.1f}")


if __name__ == "__main__":
    main()
