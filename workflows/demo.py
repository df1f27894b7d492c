"""The embedded default job behind ``make demo`` / ``onnxpruner demo``, offline.

The digits dataset that ships inside scikit-learn (1,797 8×8 images, a seeded train/validation
split), a small residual CNN defined in PyTorch and exported to ONNX, trained from scratch with
ONNX Runtime training, pruned at 0.5 (l1, tree scope, proven by the mask-equivalence check),
fine-tuned with ONNX Runtime, and a report: validation accuracy unpruned / pruned / fine-tuned,
parameters, FLOPs, ORT latency with their ratios, and a PNG plot of channels per layer. Beside the
plain pruned model, the same pruning with the ``recover`` pass on 256 unlabeled training images
("pruned + recovered") and that model fine-tuned ("recovered + fine-tuned").

A workflow (not a pass): a job built on the API, shared by ``benchmarks/accuracy.py``; it
imports PyTorch only to define and export the model.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

import ir
from ir import files
import pipeline
from passes.finetune import TrainConfig, evaluate, finetune, is_recovered, start_config
from passes.recover import DEFAULT_STEPS
from workflows import figures


def digits_split(seed: int = 0, val_fraction: float = 0.2):
    """``((x_train, y_train), (x_val, y_val))``: digits as float32 [N, 1, 8, 8] in [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = y.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def residual_block(c: int):
    """A PyTorch basic residual block of ``c`` channels: conv-BN-ReLU-conv-BN, + input, ReLU."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    return Block()


def small_resnet(width: int = 32):
    """The demo's small residual CNN for 1×8×8 inputs, as a PyTorch module (random init)."""
    import torch
    from torch import nn

    Block = residual_block

    class SmallResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.stage1 = Block(width)
            self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(2 * width), nn.ReLU())
            self.stage2 = Block(2 * width)
            self.head = nn.Linear(2 * width * 4 * 4, 10)

        def forward(self, x):
            x = self.stage2(self.down(self.stage1(self.stem(x))))
            return self.head(torch.flatten(x, 1))

    return SmallResNet()


def seeded_small_resnet(seed: int = 0, width: int = 32):
    """``small_resnet`` with seeded weights, perturbed so that no two tensors are identical
    (the exporter would otherwise share fresh BatchNorm tensors)."""
    import torch

    torch.manual_seed(seed)
    net = small_resnet(width).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net


def export_small_resnet(path: str | os.PathLike, seed: int = 0, width: int = 32, net=None) -> Path:
    """A small residual CNN for 8×8 inputs (``net``, or ``seeded_small_resnet(seed, width)``),
    exported with a dynamic batch axis."""
    import torch

    net = seeded_small_resnet(seed, width) if net is None else net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 1, 8, 8), str(path), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return Path(path)


def latency_ms(model: onnx.ModelProto, batch: np.ndarray, repeat: int = 50) -> float:
    """Median ORT inference time of one batch, in milliseconds (one thread: comparable runs)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(5):
        session.run(None, {name: batch})
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def channels_per_layer(model: onnx.ModelProto) -> dict[str, int]:
    """Output channels of every Conv/Gemm, by node name, in graph order."""
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            out[n.name] = inits[n.input[1]][0]
        elif n.op_type == "Gemm" and n.input[1] in inits:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            out[n.name] = inits[n.input[1]][0 if trans_b else 1]
    return out


def plot_channels(before: dict[str, int], after: dict[str, int], path: str | os.PathLike, title: str) -> None:
    plt = figures.pyplot()

    names = list(before)
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(names)), 4))
    ax.bar(xs - 0.2, [before[n] for n in names], 0.4, label="before")
    ax.bar(xs + 0.2, [after.get(n, 0) for n in names], 0.4, label="after")
    ax.set_xticks(xs, [n.strip("/").replace("/", ".")[:24] for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("output channels")
    ax.set_title(title)
    ax.legend()
    figures.finish(fig, path, tight_box=False)


OUTPUTS = ("digits_resnet.onnx", "digits_resnet.pruned.onnx", "demo-channels.png", "demo-report.json")


def run(out_dir: str | os.PathLike = ".", ratio: float = 0.5, seed: int = 0, epochs: int = 30,
        finetune_epochs: int = 15, stream=None, recover: str = DEFAULT_STEPS) -> dict:
    """The whole job; returns the report (also written to ``out_dir/demo-report.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val = digits_split(seed)
    with tempfile.TemporaryDirectory() as tmp:
        exported = onnx.load(str(export_small_resnet(Path(tmp) / "small_resnet.onnx", seed)))
    start = time.perf_counter()
    trained = finetune(exported, train, val, TrainConfig(epochs=epochs, lr=3e-3, batch_size=64, seed=seed),
                       stream=stream).model
    train_seconds = time.perf_counter() - start
    pruned = pipeline.prune(trained, ratio=ratio, criterion="l1", scope="tree", seed=seed)
    start = time.perf_counter()
    tuned = finetune(pruned.model, train, val, TrainConfig(epochs=finetune_epochs, lr=1e-3, batch_size=64, seed=seed),
                     stream=stream).model
    tune_seconds = time.perf_counter() - start
    recovered = pipeline.prune(trained, ratio=ratio, criterion="l1", scope="tree", seed=seed,
                               calib_data=train[0][:256], recover=recover)  # images only, no labels
    tune_recovered, _ = start_config(TrainConfig(epochs=finetune_epochs, lr=1e-3, batch_size=64, seed=seed), "auto",
                                     is_recovered(recovered.model))   # a recovered start: finetune's default for it
    recovered_tuned = finetune(recovered.model, train, val, tune_recovered, stream=stream).model
    before, after = channels_per_layer(trained), channels_per_layer(tuned)
    batch = val[0][:64]
    rep = pruned.report
    report = {
        "accuracy": {"unpruned": evaluate(trained, val), "pruned": evaluate(pruned.model, val),
                     "finetuned": evaluate(tuned, val), "recovered": evaluate(recovered.model, val),
                     "recovered_finetuned": evaluate(recovered_tuned, val)},
        "recover": recover, "recovery": recovered.report.get("recovery"),
        "params": [rep["params_before"], rep["params_after"]],
        "flops": [rep["flops_before"], rep["flops_after"]],
        "latency_ms_batch64": [latency_ms(trained, batch), latency_ms(tuned, batch)],
        "verified": rep["verified"], "max_abs_diff": rep["max_abs_diff"],
        "seconds": {"train": train_seconds, "finetune": tune_seconds},
        "groups": rep["groups"],
    }
    names = {n: out_dir / n for n in OUTPUTS}
    files.check_writes(names)
    with files.Staged() as staged:  # the four files land together
        ir.save(trained, names["digits_resnet.onnx"], staged=staged)
        ir.save(tuned, names["digits_resnet.pruned.onnx"], staged=staged)
        with open(staged.path_for(names["demo-channels.png"]), "wb") as fh:
            plot_channels(before, after, fh, f"channels per layer, ratio {ratio} (l1, tree scope)")
        staged.write_bytes(names["demo-report.json"], (__import__("json").dumps(report, indent=2) + "\n").encode())
    return report


def format_report(report: dict) -> str:
    acc = report["accuracy"]

    def ratio(pair):
        return f"x{pair[1] / pair[0]:.3f}" if pair[0] else "n/a"

    lines = [
        "digits (sklearn, 1,797 8x8 images; 20% validation), small residual CNN, ONNX Runtime training",
        f"validation top-1   unpruned {acc['unpruned']:.4f}   pruned {acc['pruned']:.4f}   "
        f"fine-tuned {acc['finetuned']:.4f}   (fine-tuned - unpruned: {100 * (acc['finetuned'] - acc['unpruned']):+.2f} points)",
        f"with recovery ({report['recover']}, 256 unlabeled training images): pruned + recovered "
        f"{acc['recovered']:.4f}   recovered + fine-tuned {acc['recovered_finetuned']:.4f}",
        f"parameters         {report['params'][0]:,} -> {report['params'][1]:,}  ({ratio(report['params'])})",
        f"FLOPs              {report['flops'][0]:,} -> {report['flops'][1]:,}  ({ratio(report['flops'])})",
        f"ORT latency, batch 64, 1 thread: {report['latency_ms_batch64'][0]:.3f} ms -> "
        f"{report['latency_ms_batch64'][1]:.3f} ms  ({ratio(report['latency_ms_batch64'])})",
        f"mask-equivalence verified: {report['verified']} (max abs diff {report['max_abs_diff']:.2e})",
        f"training {report['seconds']['train']:.1f} s, fine-tuning {report['seconds']['finetune']:.1f} s",
    ]
    for g in report["groups"]:
        state = f"{g['channels_before']} -> {g['channels_after']}" if g.get("pruned") else f"left alone: {g['reason']}"
        lines.append(f"  group {g['id']} {g['pattern']:<13} {', '.join(g['roots'])}: {state}")
    return "\n".join(lines)
