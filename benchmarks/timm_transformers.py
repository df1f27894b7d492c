"""timm's transformer families at full width (issue 11): heads, MLP and residual stream at ratio 0.5.

    .venv/bin/python benchmarks/timm_transformers.py [--models vit_tiny_patch16_224,swin_tiny_...]
                                                     [--timeout 900] [--out benchmarks/out/timm.md]

Each model is built from timm's own definition as a user would get it (``timm.create_model(name)``,
random init, weights perturbed so the exporter keeps them distinct), exported with the legacy
exporter at opset 17 at its default input size (``pretrained_cfg['input_size']``), cached outside
the repository (``$ONNXPRUNER_ZOO_CACHE/timm``), then pruned with the default pipeline at
``ratio=0.5`` (so heads, MLP and stream at 0.5; l1, tree scope, mask-equivalence check included).
Every model runs in a child process of its own, one at a time (memory; a crash or a time-out is a
row, the others go on). Printed per model: parameters before, the share of all parameters
removed, the share of conv+linear weights removed (``zoo.weight_params``), the proof, groups
pruned/total, and what blocks the groups left alone; then the median share removed.

timm is not a dependency: ``pip install --no-deps timm==1.0.29`` (its own needs, torch,
torchvision, pyyaml, safetensors and huggingface_hub, are already there; no weights are fetched).
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
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

CACHE = Path(os.environ.get("ONNXPRUNER_ZOO_CACHE", Path.home() / ".cache" / "onnxpruner-zoo")) / "timm"

# the smallest registered variant of each family (timm 1.0.29 names); mvitv2_tiny is left out:
# its prune ran past 600 s on the shared 2-core machine
MODELS = [
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
    "deit3_small_patch16_224", "beit_base_patch16_224", "beitv2_base_patch16_224",
    "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_ns_224", "davit_tiny", "focalnet_tiny_srf",
    "coat_lite_tiny", "coat_tiny", "pvt_v2_b0", "convit_tiny", "crossvit_tiny_240",
    "eva02_tiny_patch14_224", "cait_xxs24_224", "xcit_nano_12_p16_224", "poolformer_s12",
    "poolformerv2_s12", "convformer_s18", "caformer_s18", "maxvit_rmlp_pico_rw_256",
    "levit_128s", "efficientformer_l1", "efficientformerv2_s0", "mobilevit_xxs", "mobilevitv2_050",
    "tnt_s_patch16_224", "twins_svt_small", "twins_pcpvt_small", "pit_ti_224", "tiny_vit_5m_224",
    "gcvit_xxtiny", "nest_tiny", "visformer_tiny", "edgenext_xx_small", "efficientvit_m0",
    "fastvit_t8", "hiera_tiny_224", "mixer_s32_224", "resmlp_12_224", "gmlp_ti16_224",
]


def export(name: str, folder: Path = CACHE) -> Path:
    """``folder/NAME.onnx``: timm's definition, random init (seed 0), perturbed, opset 17."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    if path.exists():
        return path
    import torch

    from torchvision_models import import_torchvision

    import_torchvision()  # the torchvision op schemas first: timm imports torchvision
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    try:
        _export(model, path)
    except Exception:  # F.scaled_dot_product_attention the legacy exporter refuses (EVA's is_causal
        from timm.layers import set_fused_attn  # as a tensor): timm's own switch to plain attention

        set_fused_attn(False)
        torch.manual_seed(0)
        _export(timm.create_model(name, pretrained=False).eval(), path)
    return path


def _export(model, path: Path) -> None:
    import torch

    with torch.no_grad():  # distinct weights (fresh LayerNorm tensors would be deduplicated)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    side = model.pretrained_cfg.get("input_size", (3, 224, 224))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, *side), str(tmp), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"])
    tmp.replace(path)


def measure(name: str) -> dict:
    import onnx

    import pipeline
    import zoo

    start = time.perf_counter()
    path = export(name)
    exported = time.perf_counter() - start
    original = onnx.load(str(path))
    start = time.perf_counter()
    result = pipeline.prune(path, ratio=0.5, criterion="l1", scope="tree")
    rep = result.report
    before, after = zoo.weight_params(original), zoo.weight_params(result.model)
    groups = rep["groups"]
    return {
        "model": name, "params": rep["params_before"],
        "removed": 1 - rep["params_after"] / rep["params_before"],
        "removed_weights": 1 - after / before if before else 0.0,
        "verified": bool(rep["verified"]), "diff": rep["max_abs_diff"],
        "groups": f"{sum(1 for g in groups if g.get('pruned'))}/{len(groups)}",
        "blockers": zoo.blockers(groups), "seconds": time.perf_counter() - start, "export_s": exported,
    }


def child(name: str, timeout: float) -> dict:
    """``measure(name)`` in a process of its own: its memory goes back when it ends."""
    code = f"import sys, json; sys.path[:0] = {[str(ROOT / 'benchmarks')]!r}; import timm_transformers as t; " \
           f"print('RESULT ' + json.dumps(t.measure({name!r})))"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"over {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
    return {"model": name, "error": tail[0][:200]}


HEADER = ("| model | params | params removed | conv+linear removed | proven | groups pruned/total "
          "| prune s | blockers of groups left alone |\n|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | - | - | - | - | - | - | **failed**: {r['error']} |"
    proven = "yes" if r["verified"] else "**no**"
    return (f"| {r['model']} | {r['params'] / 1e6:.1f}M | {r['removed']:.1%} | {r['removed_weights']:.1%} "
            f"| {proven} | {r['groups']} | {r['seconds']:.0f} | {r['blockers']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per model (export and prune)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    rows = []
    print(HEADER, flush=True)
    for name in [m for m in args.models.split(",") if m]:
        r = child(name, args.timeout)
        rows.append(r)
        print(row(r), flush=True)
    ok = [r for r in rows if "error" not in r]
    lines = [HEADER, *map(row, rows)]
    if ok:
        lines.append(f"\nmedian params removed {statistics.median(r['removed'] for r in ok):.1%}, "
                     f"median conv+linear removed {statistics.median(r['removed_weights'] for r in ok):.1%} "
                     f"over {len(ok)} models; proven {sum(r['verified'] for r in ok)}/{len(ok)}; "
                     f"failed {len(rows) - len(ok)}")
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
