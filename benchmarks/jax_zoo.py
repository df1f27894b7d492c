"""flax.nnx architectures written by jax2onnx, pruned from the command line as a user would.

    .venv/bin/python benchmarks/jax_zoo.py [--models mlp,vgg,...] [--ratio 0.3] [--timeout 600]
                                           [--out benchmarks/out/latest/jax_zoo.md] [--update-tracked]

Each model is built from code with flax.nnx (random init, seeded, every parameter and BatchNorm
statistic perturbed so no exporter shares equal tensors; no weights downloaded), NHWC / NWC as JAX
writes them, and exported by a child process in jax2onnx's OWN venv (``/work/venvs/jax``: jax,
flax, jax2onnx 0.17.1 with its newer onnx; override with ``$ONNXPRUNER_JAX_PYTHON``) with
``jax2onnx.to_onnx(model, [shape])`` at its default opset (23) and a dynamic batch ``B``, then
converted down to opset 21 with that venv's ``onnx.version_converter`` (as ``tests/corpus`` was):
ONNX Runtime 1.19.2 runs opsets up to 21 (the tool now converts 22..28 down itself: both are
pruned). Both files and the example inputs (``.npz``) are cached
outside the repository (``$ONNXPRUNER_ZOO_CACHE/jax``, default ``~/.cache/onnxpruner-zoo/jax``).
Then, one model at a time, the command line:

    onnxpruner prune M_opset21.onnx -o OUT.onnx --ratio 0.3 [--inputs M.npz] --report R.json --no-latency
    onnxpruner prune M_opset23.onnx -o OUT.onnx --ratio 0.3 ...     (its groups and share, or its error)

``--inputs`` only where the defaults do not fit (token ids below the vocabulary). One row per
model: ops, groups pruned/total, share of float parameters removed, the proof, seconds, the
largest group left whole with its reason, the other groups' blockers (``zoo.blockers``), and what
the tool said of the opset-23 file. A model that fails to build, export or prune is a row with its
one-line error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import outputs  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_ZOO_CACHE", Path.home() / ".cache" / "onnxpruner-zoo")) / "jax"
PYTHON = os.environ.get("ONNXPRUNER_JAX_PYTHON", "/work/venvs/jax/bin/python")

# name -> (input shape with the dynamic batch "B", dtype, what the model is)
MODELS = {
    "mlp": (("B", 32), "float32", "MLP 32-64-48-10, ReLU and GELU"),
    "vgg": (("B", 32, 32, 3), "float32", "VGG-ish: 3x3 Conv+BatchNorm+ReLU, max_pool, dense head"),
    "resnet": (("B", 32, 32, 3), "float32", "ResNet: BasicBlocks with BatchNorm, 1x1 projection shortcuts"),
    "mobilenet": (("B", 32, 32, 3), "float32", "depthwise-separable CNN (feature_group_count), ReLU6"),
    "convnext": (("B", 32, 32, 3), "float32",
                 "ConvNeXt blocks: depthwise 7x7, LayerNorm, Linear on NHWC, GELU, layer scale"),
    "vit": (("B", 32, 32, 3), "float32", "ViT: patch Conv, class token, position embedding, MultiHeadAttention, MLP"),
    "mixer": (("B", 32, 32, 3), "float32", "MLP-Mixer: patch Conv, token-mixing MLP on swapped axes, channel MLP"),
    "audio1d": (("B", 400, 1), "float32", "1-D conv audio net (NWC): strided Conv1D+BatchNorm, dilated blocks, mean"),
    "gru": (("B", 12, 8), "float32",
            "GRUCell unrolled over 12 steps (nnx.RNN: jax2onnx cannot trace its scan), last step to a dense head"),
    "lstm": (("B", 12, 8), "float32", "OptimizedLSTMCell unrolled over 12 steps, last step to a dense head"),
    "text": (("B", 16), "int32", "text encoder: Embed tokens + positions, 2 pre-LN attention blocks, mean-pool head"),
}
VOCAB = 100


# ------------------------------------------------------------------ run inside the jax venv
def _build(name: str):
    """``name``'s flax.nnx module (random init, seed 0)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    rngs = nnx.Rngs(0)

    class MLP(nnx.Module):
        def __init__(self):
            self.l1, self.l2 = nnx.Linear(32, 64, rngs=rngs), nnx.Linear(64, 48, rngs=rngs)
            self.l3 = nnx.Linear(48, 10, rngs=rngs)

        def __call__(self, x):
            return self.l3(nnx.gelu(self.l2(nnx.relu(self.l1(x)))))

    class CBR(nnx.Module):
        def __init__(self, cin, cout, k=3, s=1, groups=1, act=nnx.relu, bias=False):
            self.conv = nnx.Conv(cin, cout, (k, k), strides=(s, s), feature_group_count=groups, use_bias=bias,
                                 rngs=rngs)
            self.bn = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)
            self.act = act

        def __call__(self, x):
            y = self.bn(self.conv(x))
            return self.act(y) if self.act else y

    class VGG(nnx.Module):
        def __init__(self):
            self.stages = nnx.List([nnx.List([CBR(3, 16), CBR(16, 16)]), nnx.List([CBR(16, 32), CBR(32, 32)]),
                                    nnx.List([CBR(32, 48)])])
            self.fc1, self.fc2 = nnx.Linear(48 * 4 * 4, 64, rngs=rngs), nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            for stage in self.stages:
                for layer in stage:
                    x = layer(x)
                x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))  # jax2onnx patches it keyword-only
            x = x.reshape(x.shape[0], -1)
            return self.fc2(nnx.relu(self.fc1(x)))

    class Basic(nnx.Module):
        def __init__(self, cin, cout, s):
            self.a, self.b = CBR(cin, cout, s=s), CBR(cout, cout, act=None)
            self.proj = CBR(cin, cout, k=1, s=s, act=None) if (cin != cout or s != 1) else None

        def __call__(self, x):
            short = self.proj(x) if self.proj is not None else x
            return nnx.relu(self.b(self.a(x)) + short)

    class ResNet(nnx.Module):
        def __init__(self):
            self.stem = CBR(3, 16)
            self.blocks = nnx.List([Basic(16, 16, 1), Basic(16, 16, 1), Basic(16, 32, 2), Basic(32, 32, 1),
                                    Basic(32, 64, 2)])
            self.fc = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            x = self.stem(x)
            for b in self.blocks:
                x = b(x)
            return self.fc(x.mean(axis=(1, 2)))

    relu6 = lambda x: jnp.clip(x, 0.0, 6.0)  # noqa: E731

    class Mobile(nnx.Module):
        def __init__(self):
            chans = [(16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 96, 2)]
            self.stem = CBR(3, 16, s=2, act=relu6)
            self.dw = nnx.List([CBR(cin, cin, s=s, groups=cin, act=relu6) for cin, _, s in chans])
            self.pw = nnx.List([CBR(cin, cout, k=1, act=relu6) for cin, cout, _ in chans])
            self.fc = nnx.Linear(96, 10, rngs=rngs)

        def __call__(self, x):
            x = self.stem(x)
            for dw, pw in zip(self.dw, self.pw):
                x = pw(dw(x))
            return self.fc(x.mean(axis=(1, 2)))

    class NeXtBlock(nnx.Module):
        def __init__(self, c):
            self.dw = nnx.Conv(c, c, (7, 7), feature_group_count=c, rngs=rngs)
            self.ln = nnx.LayerNorm(c, epsilon=1e-6, rngs=rngs)
            self.up, self.down = nnx.Linear(c, 4 * c, rngs=rngs), nnx.Linear(4 * c, c, rngs=rngs)
            self.gamma = nnx.Param(jnp.full((c,), 0.5))

        def __call__(self, x):
            return x + self.gamma * self.down(nnx.gelu(self.up(self.ln(self.dw(x)))))

    class ConvNeXt(nnx.Module):
        def __init__(self):
            self.stem, self.stem_ln = nnx.Conv(3, 24, (4, 4), strides=(4, 4), rngs=rngs), nnx.LayerNorm(24, rngs=rngs)
            self.s1 = nnx.List([NeXtBlock(24), NeXtBlock(24)])
            self.down_ln, self.down = nnx.LayerNorm(24, rngs=rngs), nnx.Conv(24, 48, (2, 2), strides=(2, 2), rngs=rngs)
            self.s2 = nnx.List([NeXtBlock(48)])
            self.head_ln, self.head = nnx.LayerNorm(48, rngs=rngs), nnx.Linear(48, 10, rngs=rngs)

        def __call__(self, x):
            x = self.stem_ln(self.stem(x))
            for b in self.s1:
                x = b(x)
            x = self.down(self.down_ln(x))
            for b in self.s2:
                x = b(x)
            return self.head(self.head_ln(x.mean(axis=(1, 2))))

    class Block(nnx.Module):
        """Pre-LN transformer block: attention and MLP, each residual."""

        def __init__(self, d, heads, hidden):
            self.ln1, self.ln2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=d, qkv_features=d, decode=False, rngs=rngs)
            self.fc1, self.fc2 = nnx.Linear(d, hidden, rngs=rngs), nnx.Linear(hidden, d, rngs=rngs)

        def __call__(self, x, mask=None):
            x = x + self.attn(self.ln1(x), mask=mask)
            return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))

    class ViT(nnx.Module):
        def __init__(self, d=32):
            self.patch = nnx.Conv(3, d, (8, 8), strides=(8, 8), rngs=rngs)
            self.cls = nnx.Param(jax.random.normal(jax.random.PRNGKey(1), (1, 1, d)) * 0.02)
            self.pos = nnx.Param(jax.random.normal(jax.random.PRNGKey(2), (1, 17, d)) * 0.02)
            self.blocks = nnx.List([Block(d, 4, 64), Block(d, 4, 64)])
            self.ln, self.head = nnx.LayerNorm(d, rngs=rngs), nnx.Linear(d, 10, rngs=rngs)

        def __call__(self, x):
            x = self.patch(x)
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            cls = jnp.broadcast_to(self.cls.value, (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1) + self.pos.value
            for b in self.blocks:
                x = b(x)
            return self.head(self.ln(x[:, 0]))

    class MixerBlock(nnx.Module):
        def __init__(self, tokens, d, tok_hidden, ch_hidden):
            self.ln1, self.ln2 = nnx.LayerNorm(d, rngs=rngs), nnx.LayerNorm(d, rngs=rngs)
            self.t1, self.t2 = nnx.Linear(tokens, tok_hidden, rngs=rngs), nnx.Linear(tok_hidden, tokens, rngs=rngs)
            self.c1, self.c2 = nnx.Linear(d, ch_hidden, rngs=rngs), nnx.Linear(ch_hidden, d, rngs=rngs)

        def __call__(self, x):
            y = jnp.swapaxes(self.ln1(x), 1, 2)
            x = x + jnp.swapaxes(self.t2(nnx.gelu(self.t1(y))), 1, 2)
            return x + self.c2(nnx.gelu(self.c1(self.ln2(x))))

    class Mixer(nnx.Module):
        def __init__(self, d=32):
            self.patch = nnx.Conv(3, d, (4, 4), strides=(4, 4), rngs=rngs)
            self.blocks = nnx.List([MixerBlock(64, d, 32, 64), MixerBlock(64, d, 32, 64)])
            self.ln, self.head = nnx.LayerNorm(d, rngs=rngs), nnx.Linear(d, 10, rngs=rngs)

        def __call__(self, x):
            x = self.patch(x)
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            for b in self.blocks:
                x = b(x)
            return self.head(self.ln(x).mean(axis=1))

    class CBR1(nnx.Module):
        def __init__(self, cin, cout, k, s=1, d=1):
            self.conv = nnx.Conv(cin, cout, (k,), strides=(s,), kernel_dilation=(d,), use_bias=False, rngs=rngs)
            self.bn = nnx.BatchNorm(cout, use_running_average=True, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.bn(self.conv(x)))

    class Audio(nnx.Module):
        def __init__(self):
            self.front = nnx.List([CBR1(1, 16, 9, s=4), CBR1(16, 32, 5, s=2)])
            self.blocks = nnx.List([CBR1(32, 32, 3, d=2), CBR1(32, 32, 3, d=4)])
            self.proj = CBR1(32, 48, 1)
            self.fc = nnx.Linear(48, 6, rngs=rngs)

        def __call__(self, x):
            for layer in self.front:
                x = layer(x)
            for b in self.blocks:
                x = x + b(x)
            return self.fc(self.proj(x).mean(axis=1))

    class Recurrent(nnx.Module):
        def __init__(self, cell):
            self.front = nnx.Linear(8, 16, rngs=rngs)
            self.lstm = cell is nnx.OptimizedLSTMCell
            self.cell = cell(16, 24, rngs=rngs)
            self.fc1, self.fc2 = nnx.Linear(24, 16, rngs=rngs), nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            zeros = jnp.zeros((x.shape[0], 24), x.dtype)  # an explicit carry: its initializer draws from rngs
            carry, x = (zeros, zeros) if self.lstm else zeros, nnx.relu(self.front(x))
            for t in range(x.shape[1]):  # unrolled: jax2onnx cannot trace nnx.RNN's nnx.scan
                carry, y = self.cell(carry, x[:, t])
            return self.fc2(nnx.relu(self.fc1(y)))

    class Text(nnx.Module):
        def __init__(self, d=32):
            self.tok = nnx.Embed(VOCAB, d, rngs=rngs)
            self.pos = nnx.Param(jax.random.normal(jax.random.PRNGKey(3), (16, d)) * 0.02)
            self.blocks = nnx.List([Block(d, 4, 64), Block(d, 4, 64)])
            self.ln, self.head = nnx.LayerNorm(d, rngs=rngs), nnx.Linear(d, 3, rngs=rngs)

        def __call__(self, ids):
            x = self.tok(ids) + self.pos.value[None]
            for b in self.blocks:
                x = b(x)
            return self.head(self.ln(x).mean(axis=1))

    return {"mlp": MLP, "vgg": VGG, "resnet": ResNet, "mobilenet": Mobile, "convnext": ConvNeXt, "vit": ViT,
            "mixer": Mixer, "audio1d": Audio, "gru": lambda: Recurrent(nnx.GRUCell),
            "lstm": lambda: Recurrent(nnx.OptimizedLSTMCell), "text": Text}[name]()


def _perturb(net) -> None:
    """Every parameter and BatchNorm statistic moved by seeded noise (variances kept positive)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    key = jax.random.PRNGKey(11)
    for path, var in nnx.iter_graph(net):
        if isinstance(var, (nnx.Param, nnx.BatchStat)):
            key, sub = jax.random.split(key)
            noise = jax.random.normal(sub, var.value.shape) * 0.1
            var.value = jnp.abs(var.value + noise) + 0.5 if path[-1] == "var" else var.value + noise


def _export_in_venv(name: str, folder: str) -> None:
    """Write ``folder/NAME_opset23.onnx``, ``NAME_opset21.onnx`` and ``NAME.npz`` (run in the jax venv)."""
    import numpy as np
    import onnx
    from jax2onnx import to_onnx

    shape, dtype, _ = MODELS[name]
    net = _build(name)
    _perturb(net)
    import jax

    dims = ", ".join(map(str, shape))  # "B, 16": the batch stays symbolic, whatever the dtype
    model = to_onnx(net, [jax.ShapeDtypeStruct(jax.export.symbolic_shape(dims), np.dtype(dtype))])
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    out = Path(folder)
    note = ""
    if not _loads(model):  # jax2onnx 0.17.1's ResNet: value_info with the NHWC shapes of values its
        del model.graph.value_info[:]  # layout pass made NCHW; ORT refuses the file as written
        if _loads(model):
            note = "value_info dropped (jax2onnx declared NHWC shapes for NCHW values: ORT refused the file)"
    (out / f"{name}.note").write_text(note)
    onnx.save(model, str(out / f"{name}_opset{opset}.onnx"))
    down = onnx.version_converter.convert_version(model, 21)
    down.ir_version = min(down.ir_version, 10)
    onnx.save(down, str(out / f"{name}_opset21.onnx"))
    rng = np.random.default_rng(0)
    dims = [2 if isinstance(d, str) else d for d in shape]
    feed = rng.integers(0, VOCAB, dims).astype(np.int32) if dtype == "int32" else \
        rng.standard_normal(dims).astype(np.float32)
    np.savez(out / f"{name}.npz", **{model.graph.input[0].name: feed})
    (out / f"{name}.opset").write_text(str(opset))


def _loads(model) -> bool:
    """Whether ONNX Runtime (the jax venv's) loads ``model``."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any refusal
        return False
    return True


# ------------------------------------------------------------------ run in the project's venv
def export(name: str, timeout: float = 600, folder: Path = CACHE) -> dict[int, Path]:
    """``{opset: path}`` of ``name``'s exports (made in the jax venv when missing), its ``.npz`` beside."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{name}.opset"
    if not marker.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import jax_zoo as z; "
                    f"z._export_in_venv({name!r}, {tmp!r})")
            done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                                  env={**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""})
            if done.returncode or not (Path(tmp) / marker.name).exists():
                raise RuntimeError(f"export: {_last_error(done.stderr)}")
            for part in sorted(Path(tmp).iterdir(), key=lambda p: p.name == marker.name):  # the marker last
                part.replace(folder / part.name)
    opset = int(marker.read_text())
    return {v: folder / f"{name}_opset{v}.onnx" for v in sorted({21, opset})}


def _last_error(stderr: str) -> str:
    """The last line naming an error (JAX prints its traceback note after it), else the last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    named = [ln for ln in lines if "Error" in ln or "error:" in ln or "Exception" in ln]
    return ((named or lines)[-1:] or ["no output"])[0][:240].replace("|", "/")


def prune(path: Path, feeds: Path | None, ratio: float, timeout: float) -> tuple[dict | None, str, float]:
    """The command line's prune of ``path``: (report or None, its one-line error, seconds)."""
    rep, stderr, seconds = outputs.cli_prune(path, ratio, timeout, feeds)
    if rep is None:
        return None, _last_error(stderr) + (" (with a traceback)" if "Traceback" in stderr else ""), seconds
    return rep, "", seconds


def measure(name: str, ratio: float, timeout: float) -> dict:
    """Export (cached), then prune the opset-21 copy and try the opset-23 one; the row's fields."""
    try:
        paths = export(name, timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"export over {timeout:.0f} s"}
    except RuntimeError as exc:
        return {"model": name, "error": str(exc)}
    import onnx

    down = paths[21]
    ops = len(onnx.load(str(down), load_external_data=False).graph.node)
    feeds = down.parent / f"{name}.npz" if MODELS[name][1] != "float32" else None  # token ids below the vocabulary
    rep, error, seconds = prune(down, feeds, ratio, timeout)
    newest = max(paths)
    if newest > 21:
        rep23, error23, _ = prune(paths[newest], feeds, ratio, timeout)
        error23 = error23.replace(f"error: {paths[newest]}: ", "error: ")
        verdict = error23 or "not verified"
        if rep23 and rep23["verified"]:
            g23 = rep23["groups"]
            verdict = (f"{sum(1 for g in g23 if g.get('pruned'))}/{len(g23)} groups, "
                       f"{1 - rep23['params_after'] / rep23['params_before']:.1%}, verified")
        says23 = f"opset {newest}: {verdict}"
    else:
        says23 = "-"
    note_file = down.parent / f"{name}.note"
    note = note_file.read_text().strip() if note_file.exists() else ""
    if rep is None:
        return {"model": name, "ops": ops, "error": error.replace(f"error: {down}: ", "error: "), "opset23": says23,
                "note": note}
    return {"model": name, "ops": ops, **outputs.report_fields(rep), "seconds": seconds, "opset23": says23,
            "note": note}


HEADER = ("| model | ops | params | groups pruned/total | float params removed | verified | prune s "
          "| largest group left whole, and why | blockers of the others | the opset-23 file |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    cell = lambda v: str(v).replace("|", "/")  # noqa: E731
    if "error" in r:
        return f"| {r['model']} | {r.get('ops', '-')} | - | - | - | - | - | **failed**: {cell(r['error'])} | - " \
               f"| {cell(r.get('opset23', '-'))} |"
    return (f"| {r['model']} | {r['ops']} | {r['params']:,} | {r['pruned']}/{r['groups']} | {r['removed']:.1%} "
            f"| {'yes' if r['verified'] else '**no**'} | {r['seconds']:.0f} | {cell(r['blocker'])} "
            f"| {cell(r['others'])} | {cell(r['opset23'])} |")


def notes(rows: list[dict]) -> list[str]:
    """What the export changed in a file before the prune (an exporter's fault worked around)."""
    return [f"- {r['model']}: {r['note']}" for r in rows if r.get("note")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model, export and prune each")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "jax_zoo.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    outputs.check([args.out], args.update_tracked)
    command = "benchmarks/jax_zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = outputs.zoo_sweep(names, lambda name: measure(name, args.ratio, args.timeout), row, args.out,
                             [f"`{command.strip()}`", "", HEADER], notes)
    return 0 if rows and all("error" not in r and r["verified"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
