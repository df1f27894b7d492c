"""onnxpruner's passes against Torch-Pruning 1.6.1 on seven torchvision architectures.

    .venv/bin/python -m pip install --no-deps torch-pruning==1.6.1   # the `bench` extra
    .venv/bin/python benchmarks/vs_torch_pruning.py [--models resnet50,vgg16,...] [--repeat 3]

Same architecture, random init, input 224, ratio 0.5 of the channels of every prunable layer,
l1 magnitude:

- Torch-Pruning: ``DependencyGraph`` build + prune (``MetaPruner(..., pruning_ratio=0.5)`` and
  ``step()``, the classifier ignored, ViT's attention heads pruned as its example does) on the
  torch module already in memory;
- onnxpruner: ``ir.lower`` + tag, trees, classify, score, mask, slice, infer-shapes (no validate)
  + ``ir.raise_model`` on the ONNX model already in memory (exported once, cached).

Also printed, from the onnxpruner worker: the floor, what any l1 pruner handed that
``ModelProto`` and giving one back must do at least, done the cheapest way we know: every float
weight's bytes read out of protobuf (upb has no zero-copy read: ``raw_data`` is a copy) and |W|
summed once (a block at a time into one reused buffer, float32 ``einsum``), then the weights the
pruned model changed written into new ``TensorProto`` s (upb's setter takes ``bytes`` only: the
array's bytes, then protobuf's own copy); no graph work at all. The bound is Torch-Pruning's time
over the floor: the speed-up no pruner of the in-memory ``ModelProto`` could exceed.

Each (tool, model) runs in a process of its own (``--worker``), the two tools of a model one after
the other, models in turn; inside a worker the timed step runs ``--repeat`` times on a fresh copy
and the median is taken. Also printed: the parameter share each removed (ONNX: float initializer
elements, BatchNorm statistics included; torch: ``parameters()``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CACHE = Path(os.environ.get("ONNXPRUNER_CACHE", Path.home() / ".cache" / "onnxpruner"))
MODELS = {"resnet50": "resnet50", "vgg16": "vgg16", "mobilenet_v2": "mobilenet_v2",
          "densenet121": "densenet121", "efficientnet_b0": "efficientnet_b0",
          "convnext_tiny": "convnext_tiny", "vit_b_16": "vit_b_16"}
CNNS = ("resnet50", "vgg16", "mobilenet_v2", "densenet121", "efficientnet_b0", "convnext_tiny")
SPEC = "tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},slice,infer-shapes"


def onnx_file(name: str) -> Path:
    from torchvision_models import export

    CACHE.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export(name, CACHE, size=224)


def _onnx_params(model) -> int:
    import numpy as np
    from onnx import TensorProto

    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer
               if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE))


def worker_ours(name: str, repeat: int) -> dict:
    import onnx

    import ir
    import pipeline
    from passes.base import PassContext

    model = onnx.load(str(onnx_file(name)))
    before = _onnx_params(model)
    times, after = [], before

    def once():
        graph = ir.lower(model)
        pipeline.Pipeline.parse(SPEC).run(graph, PassContext())
        return ir.raise_model(graph)

    once()  # warm-up: imports, first-touch allocations
    for _ in range(repeat):
        start = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - start)
        after = _onnx_params(out)
        del out
    written = _changed_weights(model, once())
    floors = []
    for _ in range(repeat):
        start = time.perf_counter()
        _read_every_weight(model)
        _write_weights(written)
        floors.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "removed": 1 - after / before, "floor": statistics.median(floors)}


def _read_every_weight(model) -> None:
    """What any l1 pruner handed this ModelProto must read at least: every float weight's bytes
    out of protobuf (``raw_data`` is a copy) and |W| summed once, 4 MiB at a time into one buffer."""
    import numpy as np
    from onnx import TensorProto

    buf = np.empty(1 << 20, np.float32)
    for t in model.graph.initializer:
        if t.data_type == TensorProto.FLOAT and t.HasField("raw_data"):
            w = np.frombuffer(t.raw_data, np.float32)
            for s in range(0, len(w), len(buf)):
                part = w[s:s + len(buf)]
                np.einsum("i->", np.abs(part, out=buf[:len(part)]))


def _changed_weights(model, pruned) -> list:
    """The float weights of ``pruned`` that differ from ``model``'s (by name and bytes), as arrays
    (read outside the timing): what a pruner must write back."""
    import numpy as np
    from onnx import TensorProto

    given = {t.name: t for t in model.graph.initializer}
    out = []
    for t in pruned.graph.initializer:
        if t.data_type == TensorProto.FLOAT and t.HasField("raw_data"):
            old = given.get(t.name)
            if old is None or list(old.dims) != list(t.dims) or old.raw_data != t.raw_data:
                out.append(np.frombuffer(t.raw_data, np.float32).copy())
    return out


def _write_weights(arrays: list) -> None:
    """Each array into a new TensorProto: its bytes, then protobuf's copy of them."""
    from onnx import TensorProto

    for a in arrays:
        TensorProto(data_type=TensorProto.FLOAT, dims=a.shape).raw_data = a.tobytes()


def worker_tp(name: str, repeat: int) -> dict:
    import torch
    import torch_pruning as tp

    from torchvision_models import seeded

    example = torch.randn(1, 3, 224, 224)

    def build():
        model = seeded(name)
        ignored, heads = [], {}
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == 1000:
                ignored.append(m)  # the classifier keeps its classes
            if isinstance(m, torch.nn.MultiheadAttention):
                heads[m] = m.num_heads
        kwargs = {"num_heads": heads, "prune_num_heads": True, "prune_head_dims": False,
                  "head_pruning_ratio": 0.5} if heads else {}
        return model, ignored, kwargs

    def once():
        model, ignored, kwargs = build()
        count = sum(p.numel() for p in model.parameters())
        start = time.perf_counter()
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=0.5, ignored_layers=ignored, **kwargs)
        pruner.step()
        seconds = time.perf_counter() - start
        return seconds, 1 - sum(p.numel() for p in model.parameters()) / count

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        once()  # warm-up
        runs = [once() for _ in range(repeat)]
    return {"seconds": statistics.median(s for s, _ in runs), "removed": runs[-1][1]}


def run_worker(tool: str, name: str, repeat: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", tool, name, "--repeat", str(repeat)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--worker", nargs=2, metavar=("TOOL", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        tool, name = args.worker
        result = (worker_ours if tool == "ours" else worker_tp)(name, args.repeat)
        print(json.dumps(result))
        return
    names = args.models.split(",")
    for name in names:  # exported once, outside the timing
        onnx_file(name)
    print(f"ratio 0.5, l1, input 224, median of {args.repeat} in each worker process; "
          f"onnxpruner: lower + {SPEC} + raise (no validate)")
    print(f"{'model':<16} {'Torch-Pruning s':>15} {'removed':>8} {'onnxpruner s':>13} {'removed':>8} {'speed-up':>9}"
          f"  {'floor s':>7} {'bound':>6}")
    for name in names:
        tp_row = run_worker("tp", name, args.repeat)
        ours = run_worker("ours", name, args.repeat)
        if "error" in tp_row or "error" in ours:
            print(f"{name:<16} TP: {tp_row.get('error', 'ok')}  ours: {ours.get('error', 'ok')}")
            continue
        speed = tp_row["seconds"] / ours["seconds"]
        target = 5.0 if name in CNNS else 1.0
        bound = tp_row["seconds"] / ours["floor"]  # the speed-up of a pruner that did only the floor
        print(f"{name:<16} {tp_row['seconds']:15.3f} {tp_row['removed']:8.1%} {ours['seconds']:13.3f} "
              f"{ours['removed']:8.1%} {speed:8.1f}x  {ours['floor']:7.3f} {bound:5.1f}x"
              + ("" if speed >= target else f"  (target {target:g}x)"), flush=True)


if __name__ == "__main__":
    main()
