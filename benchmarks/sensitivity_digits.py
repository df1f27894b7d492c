"""Sensitivity analysis on digits, end to end through the command line, and the plan it gives.

    .venv/bin/python benchmarks/sensitivity_digits.py [--budget 1.0] [--seed 0] [--out-dir benchmarks/out/sensitivity]

The demo's small residual CNN is trained from scratch with ONNX Runtime training (30 epochs,
lr 3e-3, batch 64, seeded digits split as ``demo.digits_split``), then
``onnxpruner sensitivity MODEL --val val.npz -o plan.json --budget B --plot sensitivity.png`` runs,
and ``onnxpruner prune MODEL --ratios plan.json --ratio 0`` applies the plan: the validation top-1
of the plan's model (no fine-tuning) is reported next to the per-group drops, since the drops
were measured one group at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import outputs  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import cli  # noqa: E402
import ir  # noqa: E402
from passes.finetune import TrainConfig, evaluate, finetune  # noqa: E402
from workflows import demo  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=outputs.LATEST / "sensitivity")
    outputs.add_argument(ap)
    args = ap.parse_args()
    outputs.check([args.out_dir / n for n in ("plan.json", "sensitivity.png", "sensitivity.md")], args.update_tracked)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    train, val = demo.digits_split(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        exported = onnx.load(str(demo.export_small_resnet(Path(tmp) / "m.onnx", args.seed)))
        model = finetune(exported, train, None, TrainConfig(epochs=30, lr=3e-3, batch_size=64, seed=args.seed),
                         stream=io.StringIO()).model
        model_path, val_path = Path(tmp) / "digits_resnet.onnx", Path(tmp) / "val.npz"
        ir.save(model, model_path)
        np.savez(val_path, x=val[0], y=val[1])
        plan, png = out / "plan.json", out / "sensitivity.png"
        argv = ["sensitivity", str(model_path), "--val", str(val_path), "-o", str(plan),
                "--budget", f"{args.budget:g}", "--plot", str(png)]
        text = io.StringIO()
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(argv)
        if code:
            return code
        pruned_path = Path(tmp) / "planned.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["prune", str(model_path), "-o", str(pruned_path), "--ratios", str(plan),
                             "--ratio", "0", "--report", str(Path(tmp) / "r.json")])
        if code:
            return code
        rep = json.loads((Path(tmp) / "r.json").read_text())
        acc = evaluate(onnx.load(str(pruned_path)), val)
    lines = [f"Command: `.venv/bin/python benchmarks/sensitivity_digits.py --budget {args.budget:g} --seed {args.seed}`",
             "", "```", "onnxpruner " + " ".join(a if "/" not in a else Path(a).name for a in argv),
             text.getvalue().rstrip(), "```", "",
             f"Plan applied (`prune --ratios plan.json --ratio 0`, no fine-tuning): validation top-1 "
             f"{100 * acc:.2f}% (unpruned {100 * json.loads(plan.read_text())['baseline']:.2f}%), "
             f"params x{rep['params_after'] / rep['params_before']:.3f}, FLOPs x{rep['flops_after'] / rep['flops_before']:.3f}, "
             f"verified {rep['verified']}."]
    (out / "sensitivity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
