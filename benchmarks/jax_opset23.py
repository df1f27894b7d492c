"""flax.nnx models exported by jax2onnx at its default opset (23), which ONNX Runtime 1.19.2 does not
run: converted down to 21 by onnxpruner (``support.downgraded``), pruned at 0.5 and proven.

    nice -n 19 .venv/bin/python benchmarks/jax_opset23.py [--out FILE.md]    # default benchmarks/out/latest/

A child process running the jax venv (``$ONNXPRUNER_JAX_PYTHON``, default /work/venvs/jax/bin/python:
jax2onnx 0.17.1, flax 0.12.8, onnx 1.23.2, onnxruntime 1.32.0) builds each model with random init,
every weight perturbed, exports it with ``jax2onnx.to_onnx`` at its default opset, and runs the
export AS WRITTEN (opset 23) in ONNX Runtime 1.32 on seeded inputs: those outputs are the
reference. Exports live in a temporary folder, never committed. Then, in this venv, for each:
``pipeline.prune(path, ratio=0.5)``; the model as converted down (``pipeline.open_model``) run in
ONNX Runtime 1.19.2 must reproduce the reference (an independent check of the relabelling: another
runtime, running the newer opset's semantics); one row with the opset, the ops, groups pruned,
parameters, the proof, and the first reason of a group left whole.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import outputs  # noqa: E402

JAX_PYTHON = Path(os.environ.get("ONNXPRUNER_JAX_PYTHON", "/work/venvs/jax/bin/python"))

EXPORT = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np, onnx, onnxruntime as ort
from flax import nnx
from jax2onnx import to_onnx

out = sys.argv[1]

class CNN(nnx.Module):
    def __init__(self, rngs):
        self.c1 = nnx.Conv(3, 16, (3, 3), rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, use_running_average=True, rngs=rngs)
        self.c2 = nnx.Conv(16, 32, (3, 3), strides=(2, 2), rngs=rngs)
        self.bn2 = nnx.BatchNorm(32, use_running_average=True, rngs=rngs)
        self.c3 = nnx.Conv(32, 32, (3, 3), rngs=rngs)
        self.fc = nnx.Linear(32, 10, rngs=rngs)
    def __call__(self, x):
        x = nnx.relu(self.bn1(self.c1(x)))
        x = nnx.relu(self.bn2(self.c2(x)))
        x = nnx.relu(self.c3(x)).mean(axis=(1, 2))
        return self.fc(x)

class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1, self.l2, self.l3 = nnx.Linear(32, 64, rngs=rngs), nnx.Linear(64, 48, rngs=rngs), nnx.Linear(48, 8, rngs=rngs)
    def __call__(self, x):
        return self.l3(nnx.gelu(self.l2(nnx.relu(self.l1(x)))))

class ResBlock(nnx.Module):
    def __init__(self, rngs):
        self.stem = nnx.Conv(3, 24, (3, 3), rngs=rngs)
        self.a = nnx.Conv(24, 32, (3, 3), rngs=rngs)
        self.bna = nnx.BatchNorm(32, use_running_average=True, rngs=rngs)
        self.b = nnx.Conv(32, 24, (3, 3), rngs=rngs)
        self.bnb = nnx.BatchNorm(24, use_running_average=True, rngs=rngs)
        self.head = nnx.Linear(24, 10, rngs=rngs)
    def __call__(self, x):
        x = nnx.relu(self.stem(x))
        y = nnx.relu(self.bna(self.a(x)))
        x = nnx.relu(x + self.bnb(self.b(y)))
        return self.head(x.mean(axis=(1, 2)))

class Block(nnx.Module):
    def __init__(self, rngs):
        self.ln1 = nnx.LayerNorm(32, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=4, in_features=32, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(32, rngs=rngs)
        self.up, self.down = nnx.Linear(32, 64, rngs=rngs), nnx.Linear(64, 32, rngs=rngs)
    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(nnx.gelu(self.up(self.ln2(x))))

def perturb(net):
    key = jax.random.PRNGKey(11)
    for path, var in nnx.iter_graph(net):
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            key, sub = jax.random.split(key)
            noise = jax.random.normal(sub, var.value.shape) * 0.1
            var.value = jnp.abs(var.value + noise) + 0.5 if path[-1] == "var" else var.value + noise

rows = []
for name, net, shape in (("cnn", CNN(nnx.Rngs(0)), (2, 16, 16, 3)), ("mlp", MLP(nnx.Rngs(1)), (2, 32)),
                         ("resblock", ResBlock(nnx.Rngs(2)), (2, 16, 16, 3)), ("block", Block(nnx.Rngs(3)), (2, 8, 32))):
    perturb(net)
    model = to_onnx(net, [shape])
    path = f"{out}/jax_{name}.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = {model.graph.input[0].name: x}
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    np.savez(f"{out}/jax_{name}.npz", **feeds)
    np.savez(f"{out}/jax_{name}.want.npz", *want)
    rows.append({"name": name, "path": path, "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                 "ir": model.ir_version, "ops": sorted({n.op_type for n in model.graph.node})})
print(json.dumps({"rows": rows, "versions": {m.__name__: m.__version__ for m in (onnx, ort)}}))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "jax_opset23.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args()
    outputs.check([args.out], args.update_tracked)
    import onnx
    import onnxruntime as ort

    import pipeline

    with tempfile.TemporaryDirectory(prefix="jax-opset23-") as tmp:
        proc = subprocess.run([str(JAX_PYTHON), "-c", EXPORT, tmp], capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            print(f"error: the export in {JAX_PYTHON} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        exported = json.loads(proc.stdout.strip().splitlines()[-1])
        lines = [f"jax2onnx exports (onnx {exported['versions']['onnx']}, reference run in onnxruntime "
                 f"{exported['versions']['onnxruntime']}) converted down and pruned at 0.5 with onnx {onnx.__version__}, "
                 f"onnxruntime {ort.__version__}", "",
                 "| model | opset / IR | ops | converted = reference | groups | params | verified | first reason left whole |",
                 "|---|---|---|---|---|---|---|---|"]
        for row in exported["rows"]:
            path = Path(row["path"])
            feeds = dict(np.load(path.with_suffix(".npz")))
            want = list(np.load(path.with_suffix(".want.npz")).values())
            try:
                converted, *_ = pipeline.open_model(path)
                got = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
                same = all(np.allclose(g, w, rtol=1e-5, atol=1e-5) for g, w in zip(got, want)) and len(got) == len(want)
                diff = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
                result = pipeline.prune(path, ratio=0.5, sample_inputs=feeds)
                rep = result.report
                groups = rep["groups"]
                cut = sum(1 for g in groups if g.get("pruned"))
                reason = next((g["reason"] for g in groups if not g.get("pruned") and g.get("reason")), "-")
                cells = [f"{same} (max abs diff {diff:.1e})", f"{cut}/{len(groups)}",
                         f"{rep['params_before']:,} -> {rep['params_after']:,}", str(rep["verified"]), reason[:90]]
            except Exception as exc:  # noqa: BLE001 - a row with its one-line error
                cells = ["-", "-", "-", "-", f"error: {str(exc).splitlines()[0][:150]}"]
            ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            lines.append(f"| {row['name']} | {row['opset']} / {row['ir']} | {len(ops)} kinds: "
                         f"{', '.join(sorted(ops))[:80]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
