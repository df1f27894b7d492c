"""Files of the torch dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's default since
2.9) across a zoo, pruned from the command line.

    .venv/bin/python benchmarks/dynamo_zoo.py [--models resnet50,bert,...] [--timeout 600]
                                              [--out benchmarks/out/latest/dynamo_zoo.md] [--update-tracked]

torchvision classifiers (random init, perturbed as in ``tests/torchvision_models.py``, 64 px; ViT
at 64 px with its position embedding sized for it) and tiny ``transformers`` models from config
(``benchmarks/hf_zoo.py``'s sizes and inputs: token ids with a padded attention mask, pixels, mel
features, raw audio) are exported with the dynamo exporter at torch's default opset (20 with torch
2.13) and a few again at ``opset_version=23`` (onnxpruner converts it down when nothing used
changed), into a cache outside the repository (``$ONNXPRUNER_ZOO_CACHE/dynamo``). Then, one model
at a time in a child process:

    onnxpruner prune MODEL.onnx -o OUT.onnx --ratio 0.3 --report R.json --no-latency [--inputs MODEL.npz]

Printed per model: the opset written, groups pruned/total, the share of float parameters removed,
the proof, the prune's seconds, the first blocker of the largest group left whole (by channels) and
the most frequent blockers of the others (``zoo.blockers``). A model torch cannot export is a row
saying so (the exporter's last line); a prune that fails is a row with its one-line error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import outputs  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_ZOO_CACHE", Path.home() / ".cache" / "onnxpruner-zoo")) / "dynamo"
SIDE = 64
TORCHVISION = {"resnet50": {}, "mobilenet_v3_small": {}, "efficientnet_b0": {}, "densenet121": {},
               "convnext_tiny": {}, "regnet_y_400mf": {}, "shufflenet_v2_x0_5": {}, "squeezenet1_1": {},
               "vit_b_16": {"image_size": SIDE}, "swin_t": {}}
_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=40)
HF = {
    "bert": lambda hf: (hf.BertModel(hf.BertConfig(**_TEXT)), "text"),
    "vit": lambda hf: (hf.ViTModel(hf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=64)), ("image", 32)),
    "gpt2": lambda hf: (hf.GPT2Model(hf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=40)),
                        "text"),
    "llama": lambda hf: (hf.LlamaModel(hf.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=4,
                                                      num_key_value_heads=2, max_position_embeddings=40)), "text"),
}
HF_FROM_HF_ZOO = ("whisper-encoder", "wav2vec2")
# (name, opset or None for torch's default)
MODELS = ([(m, None) for m in TORCHVISION] + [(m, None) for m in [*HF, *HF_FROM_HF_ZOO]]
          + [("mobilenet_v3_small", 23), ("convnext_tiny", 23), ("shufflenet_v2_x0_5", 23), ("bert", 23)])


def key(name: str, opset: int | None) -> str:
    return name if opset is None else f"{name}@{opset}"


def parse(k: str) -> tuple[str, int | None]:
    name, _, opset = k.partition("@")
    return name, (int(opset) if opset else None)


def build(name: str):
    """(torch module in eval mode, perturbed; example inputs by name as numpy arrays)."""
    import numpy as np
    import torch

    import exporting
    import hf_zoo
    from torchvision_models import import_torchvision, seeded

    if name in TORCHVISION:
        rng = np.random.default_rng(0)
        return seeded(name, 0, **TORCHVISION[name]), {"input": rng.standard_normal((1, 3, SIDE, SIDE),
                                                                                    dtype=np.float32)}
    import_torchvision()  # the torchvision op schemas first: transformers imports torchvision
    import transformers as hf

    torch.manual_seed(0)
    model, kind = (HF[name] if name in HF else hf_zoo.BUILDERS[name])(hf)
    feeds = hf_zoo.inputs(kind)
    return exporting.perturb(hf_zoo._First(model.eval(), list(feeds)).eval(), 0.01), feeds


def export(k: str, folder: Path = CACHE) -> tuple[Path, Path]:
    """``folder/KEY.onnx`` and ``folder/KEY.npz`` (its inputs), built and exported when missing."""
    import warnings

    import numpy as np
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path, feeds_path = folder / f"{k}.onnx", folder / f"{k}.npz"
    if path.exists() and feeds_path.exists():
        return path, feeds_path
    name, opset = parse(k)
    model, feeds = build(name)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, tuple(torch.from_numpy(v) for v in feeds.values()), dynamo=True,
                                    input_names=list(feeds), output_names=["output"], verbose=False,
                                    **({} if opset is None else {"opset_version": opset}))
    program.save(str(tmp))
    np.savez(feeds_path, **feeds)
    tmp.replace(path)
    return path, feeds_path


def measure(k: str, timeout: float) -> dict:
    """Export (cached, in a child process), then the CLI's prune in a child process; the row's fields."""
    import onnx

    code = (f"import sys; sys.path[:0] = {[str(ROOT / 'benchmarks')]!r}; import dynamo_zoo; "
            f"dynamo_zoo.export({k!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode:
        return {"model": k, "error": "torch export: " + _root_cause(done.stderr)}
    path, feeds = CACHE / f"{k}.onnx", CACHE / f"{k}.npz"
    model = onnx.load(str(path), load_external_data=False)
    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    rep, stderr, seconds = outputs.cli_prune(path, 0.3, timeout, feeds)
    if rep is None:
        return {"model": k, "opset": opset, "error": outputs.last_line(stderr), "traceback": "Traceback" in stderr}
    return {"model": k, "opset": opset, **outputs.report_fields(rep), "seconds": seconds}


def _root_cause(text: str) -> str:
    """The first ``SomeError: message`` line of a chained traceback (the root cause), else the last."""
    import re

    found = re.search(r"^[\w.]*(?:Error|Exception): .+$", text, flags=re.M)
    return found.group(0)[:240].replace("|", "/") if found else outputs.last_line(text)


HEADER = ("| model | opset | params | groups pruned/total | float params removed | verified | prune s "
          "| first blocker of the largest group left whole | blockers of the others |\n"
          "|---|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | {r.get('opset', '-')} | - | - | - | - | - | **failed**: {r['error']} | - |"
    return (f"| {r['model']} | {r['opset']} | {r['params']:,} | {r['pruned']}/{r['groups']} | {r['removed']:.1%} "
            f"| {'yes' if r['verified'] else '**no**'} | {r['seconds']:.0f} | {str(r['blocker']).replace('|', '/')} "
            f"| {str(r['others']).replace('|', '/')} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(key(*m) for m in MODELS),
                    help="comma-separated; NAME@23 exports at opset 23")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model, export and prune each")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "dynamo_zoo.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    keys = [m for m in args.models.split(",") if m]
    known = [*TORCHVISION, *HF, *HF_FROM_HF_ZOO]
    unknown = [k for k in keys if parse(k)[0] not in known]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(known)}")
    outputs.check([args.out], args.update_tracked)

    outputs.zoo_sweep(keys, outputs.within(measure, args.timeout), row, args.out, [HEADER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
