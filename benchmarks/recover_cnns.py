"""Recovery right after pruning, no fine-tuning, on small VGG- and ResNet-style CNNs trained on digits.

    .venv/bin/python benchmarks/recover_cnns.py [--out-dir benchmarks/out/recover]

Digits (sklearn, ``demo.digits_split(0)``: 1,437 training / 360 held-out images). Four models:
a VGG-style CNN (4 conv-BN-ReLU, 2 max-pools, two Linear layers) trained with ONNX Runtime
training (BatchNormalization frozen, as ``finetune`` trains) and with PyTorch (BatchNormalization
statistics of the data), the demo's residual CNN trained with PyTorch, and the demo's model trained
with ONNX Runtime training as the demo trains it (its best epoch picked on the held-out images, so that
row's held-out set is not fully unseen). Each is pruned at 0.3 / 0.5 / 0.7 (tree scope) by l1 and by recon, and
measured on the held-out images: as pruned, and with ``recover`` steps bn, bias,bn (the default
of ``--recover`` before) and bias,bn,ls (the default now), calibrated on the first 256 training images without labels.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from workflows import demo  # noqa: E402
import pipeline  # noqa: E402
from passes.finetune import TrainConfig, evaluate, finetune  # noqa: E402

RATIOS = (0.3, 0.5, 0.7)
CRITERIA = ("l1", "recon")
RECOVER = (None, "bn", "bias,bn", "bias,bn,ls")


def vgg(width: int = 32):
    from torch import nn

    w = width
    return nn.Sequential(nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                         nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
                         nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * w * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def export(net, path: Path) -> onnx.ModelProto:
    import torch

    torch.manual_seed(0)
    with torch.no_grad():  # distinct tensors: the exporter would share identical ones
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), torch.randn(1, 1, 8, 8), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return onnx.load(str(path))


def torch_train(net, train, epochs: int = 30):
    import torch
    from torch import nn

    torch.manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    x, y = torch.tensor(train[0]), torch.tensor(train[1])
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "out" / "recover")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, val = demo.digits_split(0)
    calib = train[0][:256]           # images only: recover never sees a label
    quiet = TrainConfig(epochs=30, lr=3e-3, batch_size=64, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        models = {"VGG, ORT-trained (BN frozen)": finetune(export(vgg(), tmp / "a.onnx"), train, None, quiet,
                                                           stream=io.StringIO()).model}
        torch.manual_seed(0)
        models["VGG, PyTorch-trained"] = export(torch_train(vgg(), train), tmp / "b.onnx")
        torch.manual_seed(0)
        models["ResNet, PyTorch-trained"] = export(torch_train(demo.small_resnet(), train), tmp / "c.onnx")
        models["ResNet (demo), ORT-trained"] = finetune(
            onnx.load(str(demo.export_small_resnet(tmp / "d.onnx", 0))), train, val,
            TrainConfig(epochs=30, lr=3e-3, batch_size=64, seed=0), stream=io.StringIO()).model
    lines = ["# Recovery right after pruning (no fine-tuning), held-out digits top-1 %", "",
             f"Calibration: the first 256 training images, no labels. Held out: {len(val[0])} images never "
             "used for training or calibration. Tree scope. Columns: as pruned / recover bn / bias,bn "
             "(the --recover default) / bias,bn,ls.", "",
             "| model | unpruned | criterion | " + " | ".join(f"{r:g}" for r in RATIOS) + " |",
             "|---|---|---|" + "---|" * len(RATIOS)]
    for name, model in models.items():
        base = 100 * evaluate(model, val)
        for c in CRITERIA:
            cells = []
            for r in RATIOS:
                accs = [100 * evaluate(pipeline.prune(model, ratio=r, criterion=c, calib_data=calib,
                                                      recover=rec).model, val) for rec in RECOVER]
                cells.append(" / ".join(f"{a:.1f}" for a in accs))
            lines.append(f"| {name} | {base:.1f} | {c} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    lines += ["", f"Total: {time.perf_counter() - start:.0f} s."]
    text = "\n".join(lines) + "\n"
    (args.out_dir / "recover_cnns.md").write_text("Command: `.venv/bin/python benchmarks/recover_cnns.py`\n\n" + text)
    print(text, end="")


if __name__ == "__main__":
    main()
