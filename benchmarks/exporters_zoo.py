"""Real architectures written by OTHER exporters: Keras applications through tf2onnx, paddle.vision
models through paddle2onnx, and a few of those after onnxsim / onnxslim, pruned at 0.5 and proven.

    .venv/bin/python benchmarks/exporters_zoo.py [--models keras:MobileNetV2,paddle:resnet18,...]
                                                 [--timeout 900] [--out FILE.md]

Each model is built from its framework's own definition with random init (no pretrained weights),
every weight perturbed (BatchNorm statistics included) so no exporter deduplicates equal tensors,
exported by a child process running the exporter's OWN venv (never the project's):

    /work/venvs/tf      tensorflow-cpu 2.21.0 + tf2onnx 1.17.0  (tf2onnx.convert.from_keras, opset 17, NHWC)
    /work/venvs/paddle  paddlepaddle 3.3.1 + paddle2onnx 2.1.0 (paddle.jit.save + paddle2onnx.export, opset 13)
    /work/venvs/sim     onnxsim 0.8.1, onnxslim                 (simplify an export above)

(override with $ONNXPRUNER_TF_PYTHON, $ONNXPRUNER_PADDLE_PYTHON, $ONNXPRUNER_SIM_PYTHON). Exports
are cached outside the repository (``$ONNXPRUNER_EXPORTERS_CACHE``, default
``~/.cache/onnxpruner-exporters``), never committed. Then each model is pruned in a process of its
own, one at a time, with the default pipeline at ``ratio=0.5`` (l1, tree scope, mask-equivalence
check included). One row per model: ops, groups pruned/total, share of float parameters removed
(initializers and Constant nodes, as the report counts them), the proof, seconds, and the first
blocker of the largest group left whole (the mask's own choices and the head feeding the graph
output are not blockers). A model that fails to export or prune is a row with its one-line error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import outputs  # noqa: E402
CACHE = Path(os.environ.get("ONNXPRUNER_EXPORTERS_CACHE", Path.home() / ".cache" / "onnxpruner-exporters"))
PYTHON = {
    "keras": os.environ.get("ONNXPRUNER_TF_PYTHON", "/work/venvs/tf/bin/python"),
    "paddle": os.environ.get("ONNXPRUNER_PADDLE_PYTHON", "/work/venvs/paddle/bin/python"),
    "onnxsim": os.environ.get("ONNXPRUNER_SIM_PYTHON", "/work/venvs/sim/bin/python"),
    "onnxslim": os.environ.get("ONNXPRUNER_SIM_PYTHON", "/work/venvs/sim/bin/python"),
}
SIDE = {"keras": 96, "paddle": 64}
KERAS_SIDE = {"InceptionV3": 96, "Xception": 96, "NASNetMobile": 96}
PADDLE_SIDE = {"googlenet": 224, "inception_v3": 299}  # fixed-size Linear heads

MODELS = [
    "keras:MobileNetV2", "keras:MobileNetV3Small", "keras:EfficientNetB0", "keras:EfficientNetV2B0",
    "keras:ResNet50V2", "keras:DenseNet121", "keras:ConvNeXtTiny", "keras:Xception",
    "keras:NASNetMobile", "keras:InceptionV3", "keras:MobileNetV3Large", "keras:MobileNet", "keras:ResNet50",
    "paddle:resnet18", "paddle:mobilenet_v2", "paddle:mobilenet_v3_small", "paddle:shufflenet_v2_x0_5",
    "paddle:squeezenet1_0", "paddle:densenet121", "paddle:googlenet", "paddle:resnext50_32x4d",
    "paddle:mobilenet_v1", "paddle:shufflenet_v2_swish", "paddle:inception_v3",
    "paddle:mobilenet_v3_large",
    "onnxsim:keras:MobileNetV2", "onnxslim:keras:EfficientNetB0", "onnxsim:keras:ConvNeXtTiny",
    "onnxslim:keras:ConvNeXtTiny", "onnxsim:paddle:resnet18", "onnxslim:paddle:mobilenet_v3_small",
]


def cached(spec: str) -> Path:
    return CACHE / (spec.replace(":", "__") + ".onnx")


# ------------------------------------------------------------------ run inside the exporter venvs
def _export_keras(name: str, path: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    if name.startswith("ConvNeXt"):
        # Keras 3 runs grouped convolutions (ConvNeXt's depthwise 7x7) under tf.function(jit_compile=True)
        # on CPU, which tf2onnx leaves as an unconverted StatefulPartitionedCall: trace them plainly
        plain = tf.function
        tf.function = lambda *a, jit_compile=None, **k: plain(*a, **k)
        # and TF 2.21's exact gelu is written with Erfc, which tf2onnx emits as a non-ONNX op: use Erf
        tf.nn.gelu = lambda x, approximate=False, name=None: 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))
    tf.keras.utils.set_random_seed(0)
    side = KERAS_SIDE.get(name, SIDE["keras"])
    model = getattr(tf.keras.applications, name)(weights=None, input_shape=(side, side, 3))
    rng = np.random.default_rng(7)
    for layer in model.layers:  # distinct weights; BatchNorm variances stay positive
        ws = layer.get_weights()
        if not ws:
            continue
        if layer.__class__.__name__ == "BatchNormalization" and len(ws) == 4:
            ws = [w + rng.standard_normal(w.shape).astype(w.dtype) * 0.1 for w in ws[:3]] + \
                 [ws[3] + rng.random(ws[3].shape).astype(ws[3].dtype)]
        elif layer.__class__.__name__ == "Normalization":  # EfficientNet's fixed input statistics
            continue
        else:
            ws = [w + rng.standard_normal(w.shape).astype(w.dtype) * 0.05 for w in ws]
        layer.set_weights(ws)
    spec = (tf.TensorSpec((None, side, side, 3), tf.float32, name="image"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(path))


def _export_paddle(name: str, path: Path) -> None:
    import tempfile

    import numpy as np
    import paddle
    import paddle2onnx
    from paddle import nn

    paddle.seed(0)
    net = getattr(paddle.vision.models, name)(pretrained=False)
    rng = np.random.default_rng(5)
    for p in net.parameters():
        p.set_value(p.numpy() + rng.standard_normal(p.shape).astype("float32") * 0.05)
    for layer in net.sublayers():
        if isinstance(layer, (nn.BatchNorm2D, nn.BatchNorm)):
            layer._mean.set_value(rng.standard_normal(layer._mean.shape).astype("float32") * 0.1)
            layer._variance.set_value(rng.random(layer._variance.shape).astype("float32") + 0.5)
    net.eval()
    side = PADDLE_SIDE.get(name, SIDE["paddle"])
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"{tmp}/{name}"
        paddle.jit.save(net, prefix, input_spec=[paddle.static.InputSpec([None, 3, side, side], "float32", "x")])
        model_file = next(p for p in (f"{prefix}.json", f"{prefix}.pdmodel") if Path(p).exists())
        paddle2onnx.export(model_file, f"{prefix}.pdiparams", str(path), opset_version=13)


def _simplify(tool: str, source: Path, path: Path) -> None:
    import onnx

    model = onnx.load(str(source))
    if tool == "onnxsim":
        from onnxsim import simplify

        model, ok = simplify(model)
        assert ok, "onnxsim could not validate its result"
    else:
        import onnxslim

        model = onnxslim.slim(model)
    onnx.save(model, str(path))


def export(spec: str, timeout: float = 900) -> Path:
    """``spec``'s cached export, made by a child process in the exporter's venv when missing."""
    path = cached(spec)
    if path.exists():
        return path
    tool, rest = spec.split(":", 1)
    if tool in ("onnxsim", "onnxslim"):
        export(rest, timeout)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import exporters_zoo as z; "
            f"z._export_in_venv({spec!r}, {str(tmp)!r})")
    done = subprocess.run([PYTHON[tool], "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    if done.returncode or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"export failed: {last_error(done.stderr)}")
    tmp.replace(path)
    return path


def last_error(stderr: str) -> str:
    """The last line of ``stderr`` that names an error (exporters print warnings after it)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    named = [ln for ln in lines if re.search(r"(Error|Exception|error:)", ln)]
    return ((named or lines)[-1:] or ["no output"])[0][:200]


def _export_in_venv(spec: str, out: str) -> None:
    tool, rest = spec.split(":", 1)
    if tool == "keras":
        _export_keras(rest, Path(out))
    elif tool == "paddle":
        _export_paddle(rest, Path(out))
    else:
        _simplify(tool, cached(rest), Path(out))


# ------------------------------------------------------------------ run in the project's venv
MASK_CHOICES = ("reaches graph output", "not selected", "ratio ", "its ratio ", "the global ranking",
                "ignored by request", "not scored", "the mask pass")


def first_blocker(groups: list[dict]) -> str:
    """The reason of the largest group left whole for a reason other than the mask's choice."""
    whole = [g for g in groups if not g.get("pruned") and not (g.get("reason") or "").startswith(MASK_CHOICES)]
    if not whole:
        return "-"
    g = max(whole, key=lambda g: g.get("params") or g.get("channels") or 0)
    return f"{g.get('channels_before', '?')} ch: {(g.get('reason') or 'no reason given')[:160]}"


def measure(spec: str) -> dict:
    sys.path[:0] = [str(ROOT)]
    import onnx

    import pipeline

    path = export(spec)
    ops = len(onnx.load(str(path), load_external_data=False).graph.node)
    start = time.perf_counter()
    result = pipeline.prune(path, ratio=0.5, criterion="l1", scope="tree")
    seconds = time.perf_counter() - start
    rep = result.report
    groups = rep["groups"]
    return {
        "model": spec, "ops": ops, "groups": f"{sum(1 for g in groups if g.get('pruned'))}/{len(groups)}",
        "removed": 1 - rep["params_after"] / rep["params_before"] if rep["params_before"] else 0.0,
        "verified": bool(rep["verified"]), "diff": rep["max_abs_diff"], "seconds": seconds,
        "blocker": first_blocker(groups),
    }


def child(spec: str, timeout: float) -> dict:
    """Export (in its venv), then ``measure(spec)`` in a process of its own."""
    try:
        export(spec, timeout)
    except subprocess.TimeoutExpired:
        return {"model": spec, "error": f"export over {timeout:.0f} s"}
    except Exception as exc:  # noqa: BLE001 - one model's failure is a row
        return {"model": spec, "error": str(exc).splitlines()[0][:200]}
    code = (f"import sys, json; sys.path[:0] = {[str(ROOT / 'benchmarks')]!r}; import exporters_zoo as z; "
            f"print('RESULT ' + json.dumps(z.measure({spec!r})))")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": spec, "error": f"prune over {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"model": spec, "error": last_error(done.stderr)}


HEADER = ("| model | exporter | ops | groups pruned/total | float params removed | proven | s "
          "| first blocker of the largest group left whole |\n|---|---|---|---|---|---|---|---|")
EXPORTER = {"keras": "tf2onnx 1.17 (opset 17)", "paddle": "paddle2onnx 2.1 (opset 13)"}


def exporter_of(spec: str) -> str:
    parts = spec.split(":")
    base = EXPORTER[parts[-2]]
    return f"{base} + {parts[0]}" if len(parts) == 3 else base


def row(r: dict) -> str:
    spec = r["model"]
    name, exp = spec.split(":")[-1], exporter_of(spec)
    if "error" in r:
        return f"| {name} | {exp} | - | - | - | - | - | **failed**: {r['error']} |"
    proven = "yes" if r["verified"] else "**no**"
    return (f"| {name} | {exp} | {r['ops']} | {r['groups']} | {r['removed']:.1%} | {proven} "
            f"| {r['seconds']:.0f} | {r['blocker']} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated tool:name specs")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per export and per prune")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "exporters_zoo.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    outputs.check([args.out], args.update_tracked)
    print(HEADER, flush=True)
    rows = []
    for spec in [m for m in args.models.split(",") if m]:
        r = child(spec, args.timeout)
        rows.append(r)
        print(row(r), flush=True)
    ok = [r for r in rows if "error" not in r]
    summary = (f"\n{sum(r['verified'] for r in ok)}/{len(rows)} proven; {len(rows) - len(ok)} failed; "
               f"{sum(r['removed'] > 0.5 for r in ok)} with more than half of the float parameters removed")
    print(summary, flush=True)
    command = "benchmarks/exporters_zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([f"`{command.strip()}`\n", HEADER, *map(row, rows), summary]) + "\n")
    print(f"wrote {args.out}")
    return 0 if len(ok) == len(rows) and all(r["verified"] for r in ok) else 1


if __name__ == "__main__":
    sys.exit(main())
