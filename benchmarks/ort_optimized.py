"""Models as ONNX Runtime saves them after its offline optimization, pruned beside the originals.

    .venv/bin/python benchmarks/ort_optimized.py [--models resnet50,bert,...] [--timeout 600]
                                                 [--out benchmarks/out/latest/ort_optimized.md] [--update-tracked]

A user who followed ONNX Runtime's advice for start-up time hands us the file ORT wrote with
``SessionOptions.optimized_model_filepath`` at the "extended" level: convolutions and Gemms fused
with their activation (``com.microsoft.FusedConv`` / ``FusedGemm``), MatMul with a scale or a
transpose (``FusedMatMul``), an encoder's Gelus and residual LayerNorms (``BiasGelu``, ``Gelu``,
``QuickGelu``, ``SkipLayerNormalization``). ``passes/contrib.py`` writes those back as standard
ops, checked in ORT. For each model (torchvision classifiers at 224 px, ``benchmarks/zoo.py``'s
exports; the Hugging Face zoo's tiny models with their inputs, ``benchmarks/hf_zoo.py``), the
optimized file is made once (cached in ``$ONNXPRUNER_ZOO_CACHE/ort-extended``), then both files
are pruned from the command line, one at a time in a child process:

    onnxpruner prune MODEL.onnx -o OUT.onnx --ratio 0.3 --report R.json --no-latency [--inputs MODEL.npz]

Printed per model: the contrib ops ORT's optimization wrote, and for the original and the
optimized file the groups pruned, the share of float parameters removed and the proof.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import outputs  # noqa: E402

ZOO = Path(os.environ.get("ONNXPRUNER_ZOO_CACHE", Path.home() / ".cache" / "onnxpruner-zoo"))
CACHE = ZOO / "ort-extended"
TORCHVISION = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "densenet121")
HF = ("roberta", "distilbert", "electra", "deit", "swin", "segformer", "convnext", "mobilevit", "whisper-encoder",
      "wav2vec2", "t5-encoder", "clip-text")


def source(name: str) -> tuple[Path, Path | None]:
    """The model's file as exported (made when missing) and its inputs, if it needs its own."""
    if name in TORCHVISION:
        import zoo

        return zoo.export(name, 224), None
    import hf_zoo

    return hf_zoo.export(name)


def optimized(path: Path) -> Path:
    """The file ORT writes for ``path`` at its extended level (cached)."""
    import onnxruntime as ort

    out = CACHE / f"{path.stem}.ort-extended.onnx"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return out


def prune(path: Path, feeds: Path | None, timeout: float) -> dict:
    rep, stderr, _ = outputs.cli_prune(path, 0.3, timeout, feeds)
    return outputs.report_fields(rep) if rep is not None else {"error": outputs.last_line(stderr)}


def measure(name: str, timeout: float) -> dict:
    import onnx

    path, feeds = source(name)
    fast = optimized(path)
    from passes.contrib import ORT_DEFAULT_DOMAIN

    fused = collections.Counter(n.op_type for n in onnx.load(str(fast), load_external_data=False).graph.node
                                if n.domain.startswith("com.microsoft") or n.op_type in ORT_DEFAULT_DOMAIN)
    return {"model": name, "fused": ", ".join(f"{op} x{n}" for op, n in sorted(fused.items())) or "-",
            "original": prune(path, feeds, timeout), "optimized": prune(fast, feeds, timeout)}


HEADER = ("| model | ORT's fused ops | original: groups pruned, removed, verified "
          "| ORT-optimized: groups pruned, removed, verified |\n|---|---|---|---|")


def _cell(r: dict) -> str:
    if "error" in r:
        return f"**failed**: {r['error']}"
    return f"{r['pruned']}/{r['groups']}, {r['removed']:.1%}, {'yes' if r['verified'] else '**no**'}"


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | - | **failed**: {r['error']} | - |"
    return f"| {r['model']} | {r['fused']} | {_cell(r['original'])} | {_cell(r['optimized'])} |"


def totals(rows: list[dict]) -> str:
    ok = [r for r in rows if "error" not in r and "error" not in r["optimized"] and "error" not in r["original"]]
    same = sum(abs(r["optimized"]["removed"] - r["original"]["removed"]) < 0.005 for r in ok)
    more = sum(r["optimized"]["removed"] >= r["original"]["removed"] - 0.005 for r in ok)
    return (f"{len(ok)} of {len(rows)} pairs ran; the optimized file verified in "
            f"{sum(r['optimized']['verified'] for r in ok)}/{len(ok)}; removes as much as the original "
            f"(within half a point) or more in {more}/{len(ok)} ({same} within half a point)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(TORCHVISION + HF))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per prune")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "ort_optimized.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [n for n in names if n not in TORCHVISION + HF]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(TORCHVISION + HF)}")
    outputs.check([args.out], args.update_tracked)
    outputs.zoo_sweep(names, outputs.within(measure, args.timeout), row, args.out, [HEADER], totals=totals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
