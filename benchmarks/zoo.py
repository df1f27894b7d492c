"""The torchvision zoo as a benchmark: export, prune at 0.5 (l1, tree scope), prove, measure.

    .venv/bin/python benchmarks/zoo.py [--models shufflenet_v2_x0_5,regnet_x_400mf] [--size 224]
                                       [--max-params 100e6] [--out benchmarks/out/zoo.md]

Every classification model of ``torchvision.models.list_models(module=torchvision.models)`` and
every segmentation model (FCN, DeepLabV3, LR-ASPP) is exported with the legacy exporter at opset 17
(random init, perturbed as in ``tests/torchvision_models.py``; segmentation models return their
dict as a tuple), cached outside the repository (``$ONNXPRUNER_ZOO_CACHE``, default
``~/.cache/onnxpruner-zoo``), pruned with the default pipeline (mask-equivalence check included),
and written as one markdown table row: ops, groups prunable/total, share of conv+linear
parameters removed, FLOPs and ONNX Runtime latency before/after, max abs diff, seconds, and what
blocks the groups left alone (the classifier head feeding the graph output is not listed).
A model that fails to export or prune gets a row saying so; the others go on.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import outputs  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_ZOO_CACHE", Path.home() / ".cache" / "onnxpruner-zoo"))
SEGMENTATION = ("fcn", "deeplabv3", "lraspp")
# models whose definition needs a given input side (fixed position embeddings, adaptive pools
# the legacy exporter only handles as identities, Inception's stem)
MIN_SIZE = {"inception_v3": 299, "vit_": 224, "maxvit_": 224, "vgg": 224, "alexnet": 224}
WEIGHTS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def model_names(module: str = "") -> list[str]:
    from torchvision_models import import_torchvision

    tv = import_torchvision()
    names = list(tv.models.list_models(module=tv.models))
    return names + list(tv.models.list_models(module=tv.models.segmentation))


def is_segmentation(name: str) -> bool:
    return name.startswith(SEGMENTATION)


def input_side(name: str, size: int) -> int:
    for prefix, side in MIN_SIZE.items():
        if name.startswith(prefix):
            return max(size, side) if prefix != "vit_" and prefix != "maxvit_" else side
    return size


def export(name: str, size: int = 224, folder: Path = CACHE, opset: int = 17) -> Path:
    """Export ``name`` (cached as ``folder/name_SIZE.onnx``, or ``folder/name_SIZE/model.onnx``
    with its weights beside it when over 2 GiB); random init, perturbed weights."""
    import torch

    side = input_side(name, size)
    folder.mkdir(parents=True, exist_ok=True)
    path, big = folder / f"{name}_{side}.onnx", folder / f"{name}_{side}" / "model.onnx"
    for cached in (path, big):
        if cached.exists():
            return cached
    from torchvision_models import seeded

    model = seeded(name, 0, **({"weights_backbone": None, "num_classes": 21} if is_segmentation(name) else {}))

    class Tupled(torch.nn.Module):  # segmentation models return a dict
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return tuple(self.inner(x).values())

    net = Tupled(model) if is_segmentation(name) else model
    if sum(p.numel() for p in model.parameters()) * 4 > 1.8 * 2**30:
        # over protobuf's 2 GiB the exporter writes one file per weight beside the model: a folder
        path = big
        path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two runs sharing the cache never collide
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.randn(1, 3, side, side), str(tmp), dynamo=False,
                          opset_version=opset, do_constant_folding=False, input_names=["input"])
    tmp.replace(path)
    return path


def weight_params(model: onnx.ModelProto) -> int:
    """Elements of the initializers that Conv, ConvTranspose, Gemm, MatMul read as weight or bias,
    directly or through constant-only nodes (the legacy exporter writes Linear as Transpose(W))."""
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer
             if t.data_type in (1, 10, 11, 16)}  # floating point: shape constants are not weights
    producer = {o: n for n in model.graph.node for o in n.output}
    found, stack = set(), [i for n in model.graph.node if n.op_type in WEIGHTS for i in n.input[1:3]]
    while stack:
        name = stack.pop()
        if name in found or not name:
            continue
        found.add(name)
        node = producer.get(name)
        if node is not None and node.op_type in ("Transpose", "Identity", "Cast", "Reshape", "Unsqueeze"):
            stack.extend(node.input)
    return sum(sizes.get(n, 0) for n in found)


def flops(model: onnx.ModelProto) -> int:
    import ir
    from passes.cost import count_flops

    return count_flops(ir.lower(model))


def latency_ms(model: onnx.ModelProto, feeds: dict, repeat: int = 10) -> float:
    import onnxruntime as ort

    from passes.runtime import ort_session

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort_session(model, opts)  # over 2 GiB too
    session.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


MASK_CHOICES = ("reaches graph output", "not selected", "ratio ", "its ratio ", "the global ranking",
                "ignored by request", "not scored", "the mask pass")


def blockers(groups: list[dict]) -> str:
    """What blocks the groups left alone, node names taken out, most frequent first."""
    counts = collections.Counter()
    for g in groups:
        reason = g.get("reason") or ""
        if g.get("pruned") or reason.startswith(MASK_CHOICES):   # the mask's choice, not a blocker
            continue
        reason = re.sub(r" \(node '[^']*'\)", "", reason)
        reason = re.sub(r"'[^']*'", "…", reason)
        counts[reason] += 1
    return "; ".join(f"{n}× {r}" for r, n in counts.most_common(3)) or "-"


def measure(name: str, size: int, repeat: int = 10) -> dict:
    import pipeline
    from passes.inputs import sample_inputs

    path = export(name, size)
    original = onnx.load(str(path))
    start = time.perf_counter()
    result = pipeline.prune(path, ratio=0.5, criterion="l1", scope="tree")
    seconds = time.perf_counter() - start
    rep = result.report
    feeds = sample_inputs(original, 0)
    groups = rep["groups"]
    before, after = weight_params(original), weight_params(result.model)
    return {
        "model": name, "ops": len(original.graph.node),
        "groups": f"{sum(1 for g in groups if g.get('pruned'))}/{len(groups)}",
        "removed": 1 - after / before if before else 0.0,
        "flops": (flops(original), flops(result.model)),
        "latency": (latency_ms(original, feeds, repeat), latency_ms(result.model, feeds, repeat)),
        "diff": rep["max_abs_diff"], "verified": rep["verified"], "seconds": seconds,
        "blockers": blockers(groups),
    }


HEADER = ("| model | ops | groups pruned/total | conv+linear params removed | GFLOPs before → after "
          "| ORT ms before → after | max abs diff | s | blockers of groups left alone |\n"
          "|---|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | - | - | - | - | - | - | - | **failed**: {r['error']} |"
    fb, fa = r["flops"]
    lb, la = r["latency"]
    diff = "-" if r["diff"] is None else f"{r['diff']:.1e}"
    return (f"| {r['model']} | {r['ops']} | {r['groups']} | {r['removed']:.1%} | {fb / 1e9:.3f} → {fa / 1e9:.3f} "
            f"| {lb:.1f} → {la:.1f} | {diff}{'' if r['verified'] else ' (unverified)'} "
            f"| {r['seconds']:.1f} | {r['blockers']} |")


def measure_isolated(name: str, size: int, repeat: int) -> dict:
    """``measure`` in a process of its own: the memory a 600M-parameter model took is given back
    before the next one (a process's heap does not shrink), and an out-of-memory kill is one
    failed row."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(measure, name, size, repeat).result()
        except BrokenProcessPool:
            raise RuntimeError("the worker process died (out of memory?)") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names (default: the whole zoo)")
    ap.add_argument("--size", type=int, default=224, help="input side (some models need more)")
    ap.add_argument("--max-params", type=float, default=0, help="skip models with more parameters")
    ap.add_argument("--repeat", type=int, default=10, help="latency runs per model (median)")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "zoo.md")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    outputs.check([args.out], args.update_tracked)
    names = args.models.split(",") if args.models else model_names()
    rows, skipped = [], []
    for name in names:
        if args.max_params:
            from torchvision_models import import_torchvision

            tv = import_torchvision()
            kw = {"weights_backbone": None} if is_segmentation(name) else {}
            n = sum(p.numel() for p in tv.models.get_model(name, weights=None, **kw).parameters())
            if n > args.max_params:
                skipped.append(f"{name} ({n / 1e6:.0f}M)")
                continue
        try:
            r = measure_isolated(name, args.size, args.repeat)
        except Exception as exc:  # one model's failure never stops the others
            traceback.print_exc(file=sys.stderr)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            r = {"model": name, "error": msg[:200]}
        rows.append(r)
        print(row(r), flush=True)
    ok = [r for r in rows if "error" not in r]
    command = "benchmarks/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# torchvision zoo pruned at 0.5 (l1, tree scope), opset 17, input {args.size}\n",
             f"`{command.strip()}`: {'a subset, ' if args.models else ''}{len(rows)} models; "
             f"ORT CPU latency is the median of {args.repeat} runs at batch 1.\n",
             f"{sum(r['verified'] for r in ok)}/{len(rows)} verified by the mask-equivalence check; "
             f"{sum(r['removed'] > 0.5 for r in ok)} with more than half of conv+linear parameters "
             "removed.\n", HEADER, *[row(r) for r in rows]]
    if skipped:
        lines.append(f"\nSkipped (--max-params {args.max_params:.0f}): {', '.join(skipped)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0 if all("error" not in r and r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
