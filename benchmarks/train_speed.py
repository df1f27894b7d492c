"""One training step of the same model in ONNX Runtime training and in PyTorch eager, on CPU:
the medians side by side and their ratio, measured in one run (rounds interleaved, since these
machines are noisy).

    .venv/bin/python benchmarks/train_speed.py [--batch-size 64] [--threads 1] [--rounds 20] [--steps 10]

The model is the demo's small residual CNN (``demo.seeded_small_resnet``) on digits-shaped input
([N, 1, 8, 8], 10 classes). Both sides compute the same thing: cross-entropy loss, AdamW (lr 1e-3),
BatchNormalization in inference form (PyTorch: the BatchNorm modules in eval mode; ONNX Runtime:
how ``finetune`` trains it). A step is forward, backward and the optimizer update. The ORT side is
built exactly as ``passes.finetune`` builds it (same training copy, same trainable set).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import ir  # noqa: E402
from passes.finetune import TrainConfig, trainable_names, write_artifacts  # noqa: E402
from workflows import demo  # noqa: E402


def ort_step_fn(model: onnx.ModelProto, folder: Path, threads: int):
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    ort.set_default_logger_severity(3)
    graph = ir.lower(model)
    names = trainable_names(graph)
    frozen = [n for n, init in graph.initializers.items()
              if n not in names and init.elem_type == onnx.TensorProto.FLOAT]
    write_artifacts(model, names, frozen, TrainConfig(loss="ce", optimizer="adamw"), folder,
                    graph.output_names[0])
    state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    module = Module(str(folder / "training_model.onnx"), state, str(folder / "eval_model.onnx"),
                    device="cpu", session_options=opts)
    optimizer = Optimizer(str(folder / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(1e-3)
    module.train()

    def step(x, y):
        loss, _ = module(x, y)
        optimizer.step()
        module.lazy_reset_grad()
        return float(loss)

    return step, len(names)


def torch_step_fn(net):
    import torch

    net.eval()  # BatchNorm in inference form, as ORT trains it; gradients still flow
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, len(params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads on both sides")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    (x_train, y_train), _ = demo.digits_split(0)
    x_np, y_np = x_train[: args.batch_size], y_train[: args.batch_size]
    x_t, y_t = torch.from_numpy(x_np), torch.from_numpy(y_np)

    net = demo.seeded_small_resnet(0, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = demo.export_small_resnet(Path(tmp) / "m.onnx", net=net)
        model = onnx.load(str(path))
        (Path(tmp) / "art").mkdir()
        ort_step, n_ort = ort_step_fn(model, Path(tmp) / "art", args.threads)
        torch_step, n_torch = torch_step_fn(net)
        for _ in range(5):  # warm-up: allocations, kernel selection
            ort_step(x_np, y_np)
            torch_step(x_t, y_t)
        times = {"ort": [], "torch": []}
        for _ in range(args.rounds):
            for side, fn, xs in (("ort", ort_step, (x_np, y_np)), ("torch", torch_step, (x_t, y_t))):
                for _ in range(args.steps):
                    start = time.perf_counter()
                    fn(*xs)
                    times[side].append(time.perf_counter() - start)

    ort_ms = statistics.median(times["ort"]) * 1000
    torch_ms = statistics.median(times["torch"]) * 1000
    print(f"model: demo small residual CNN, width {args.width}, {sum(p.numel() for p in net.parameters()):,} "
          f"parameters ({n_ort} trainable tensors in ORT, {n_torch} in PyTorch)")
    print(f"batch {args.batch_size} of [1, 8, 8], {args.threads} thread(s), "
          f"{args.rounds} interleaved rounds x {args.steps} steps per side")
    print(f"{'side':<28}{'median ms/step':>16}{'p10':>10}{'p90':>10}")
    for side, label in (("ort", "ONNX Runtime training"), ("torch", "PyTorch eager")):
        q = np.percentile(np.array(times[side]) * 1000, [10, 90])
        print(f"{label:<28}{statistics.median(times[side]) * 1000:>16.3f}{q[0]:>10.3f}{q[1]:>10.3f}")
    print(f"ratio ORT / PyTorch (medians): {ort_ms / torch_ms:.2f}x")


if __name__ == "__main__":
    main()
