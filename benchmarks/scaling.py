"""How the passes scale with depth: synthetic residual CNNs of N blocks and decoder language models
of L layers, passes without validate.

    .venv/bin/python benchmarks/scaling.py [--blocks 10,20,40,80,160,320] [--repeat 3]
    .venv/bin/python benchmarks/scaling.py --decoders [--layers 2,4,8,16,32,64] [--kinds llama-gqa,gpt2]

Each block is conv-bn-relu-conv-bn + identity skip + relu at 16 channels on an 8x8 map (weights
are negligible: the graph's size is what grows). One row per N: lower + the default passes up to
``infer-shapes`` (no validate) + raise, in process, sizes interleaved round by round, medians.
The marginal cost per block of blocks 160..320 is compared with that of blocks 40..160 (start-up
cancels out); a linear pipeline gives a ratio near 1.

``--decoders``: the tiny decoders of ``tests/decoder_models.py`` (hidden 32, 4 query heads, MLP 64;
Llama with rotary embeddings and GQA, 2 KV heads; GPT-2), exported with a static KV cache at each
depth L (once, into ``~/.cache/onnxpruner/scaling``), timed the same way (ms per layer), the
marginal cost per layer of layers 16..64 against 4..16, per pass too; then the whole
``onnxpruner prune`` command (with the proof) at the largest L as a fresh process, beside
``--no-latency`` and the ``onnx.load`` + ``onnx.save`` floor of the same file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import ir  # noqa: E402
import pipeline  # noqa: E402
from models import Builder  # noqa: E402
from passes.base import PassContext  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_CACHE", Path.home() / ".cache" / "onnxpruner")) / "scaling"
SPEC = "tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},slice,infer-shapes"


def residual_cnn(blocks: int, width: int = 16, size: int = 8):
    b = Builder(blocks, name=f"residual{blocks}")
    x = b.relu(b.bn(b.conv(b.input("x", [1, 3, size, size]), 3, width), width))
    for _ in range(blocks):
        y = b.relu(b.bn(b.conv(x, width, width, bias=False), width))
        y = b.bn(b.conv(y, width, width, bias=False), width)
        x = b.relu(b.op("Add", [x, y]))
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    return b.build([b.gemm(x, width, 10)])


class CpuTiming(pipeline.Instrument):
    """Each pass's CPU seconds (this process, all threads): what the work costs, where wall time
    on a shared machine also counts the waits for a core."""

    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    def before(self, p, graph, ctx):
        self.start = time.process_time()

    def after(self, p, graph, ctx, result, seconds):
        self.rows.append((p.name, time.process_time() - self.start))


def once(model, passes, cpu: bool = False) -> tuple[float, dict[str, float]]:
    timing = CpuTiming() if cpu else pipeline.TimingInstrument()
    clock = time.process_time if cpu else time.perf_counter
    start = clock()
    graph = ir.lower(model)
    pipeline.Pipeline.parse(passes).run(graph, PassContext(), instruments=[timing])
    ir.raise_model(graph)
    return clock() - start, dict(timing.rows)


def interleaved(models: dict, repeat: int, cpu: bool = False) -> tuple[dict[int, float], dict[int, dict[str, float]]]:
    """Median seconds per size and per pass, sizes interleaved round by round."""
    sizes = list(models)
    once(models[sizes[0]], SPEC, cpu)  # warm-up
    totals = {n: [] for n in sizes}
    passes = {n: {} for n in sizes}
    for _ in range(repeat):
        for n in sizes:  # interleaved: every size sees the same machine load
            t, rows = once(models[n], SPEC, cpu)
            totals[n].append(t)
            for name, s in rows.items():
                passes[n].setdefault(name, []).append(s)
    return ({n: statistics.median(v) for n, v in totals.items()},
            {n: {p: statistics.median(v) for p, v in passes[n].items()} for n in sizes})


def table(unit: str, med: dict[int, float], passes: dict[int, dict[str, float]], repeat: int,
          cpu: bool = False) -> None:
    sizes = list(med)
    names = list(passes[sizes[0]])
    print(f"passes: {SPEC} (lower + passes + raise, median of {repeat}{', CPU time' if cpu else ''})")
    print(f"{unit + 's':>6} {'total s':>8} {'ms/' + unit:>9} " + " ".join(f"{p[:8]:>8}" for p in names))
    for n in sizes:
        per = " ".join(f"{passes[n][p] * 1000 / n:8.2f}" for p in names)
        print(f"{n:>6} {med[n]:8.3f} {med[n] * 1000 / n:9.2f} {per}")
    print(f"(per-pass columns: ms per {unit})")


def marginal(unit: str, med: dict[int, float], passes: dict[int, dict[str, float]], a: int, b: int, c: int,
             per_pass: bool = False) -> None:
    """The cost per ``unit`` of units b..c against a..b (start-up cancels out)."""
    if not {a, b, c} <= set(med):
        return
    low = (med[b] - med[a]) / (b - a)
    high = (med[c] - med[b]) / (c - b)
    print(f"marginal cost per {unit}: {unit}s {a}-{b} {low * 1000:.2f} ms, {b}-{c} {high * 1000:.2f} ms, "
          f"ratio {high / low:.2f}x (target <= 1.3x)")
    if per_pass:
        cols = []
        for p in passes[a]:
            lo = (passes[b][p] - passes[a][p]) / (b - a)
            hi = (passes[c][p] - passes[b][p]) / (c - b)
            cols.append(f"{p} {lo * 1000:.2f}->{hi * 1000:.2f}")
        print(f"  per pass, ms per {unit} ({a}-{b} -> {b}-{c}): " + ", ".join(cols))


def decoder(kind: str, layers: int) -> Path:
    """The decoder ``kind`` of ``layers`` layers with a static KV cache, exported once."""
    import warnings

    import decoder_models

    CACHE.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return decoder_models.export(kind, CACHE, cache=True, layers=layers)


def command_times(path: Path, repeat: int) -> None:
    """The ``onnxpruner prune`` command on ``path`` as fresh processes, medians, commands in turn."""
    import tempfile

    from bench_pipeline import FLOOR, timed_process

    exe = str(Path(sys.executable).parent / "onnxpruner")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.onnx")
        cmds = {"load+save (floor)": [sys.executable, "-c", FLOOR, str(path), out],
                "prune (with proof)": [exe, "prune", str(path), "-o", out, "--ratio", "0.5"],
                "prune --no-latency": [exe, "prune", str(path), "-o", out, "--ratio", "0.5", "--no-latency"]}
        rows = {k: [] for k in cmds}
        for cmd in cmds.values():  # warm-up: bytecode compiled, the file in the page cache
            timed_process(cmd)
        for _ in range(repeat):
            for k, cmd in cmds.items():
                rows[k].append(timed_process(cmd)[0])
    floor_s = statistics.median(rows["load+save (floor)"])
    for k, runs in rows.items():
        t = statistics.median(runs)
        print(f"  {k:<22} {t:7.2f} s  {t / floor_s:6.2f}x floor")


def decoders_main(kinds: list[str], layers: list[int], repeat: int, cpu: bool = False, command: bool = True) -> None:
    import onnx

    for kind in kinds:
        paths = {n: decoder(kind, n) for n in layers}
        models = {n: onnx.load(str(p)) for n, p in paths.items()}
        print(f"{kind} with a KV cache ({sum(1 for _ in models[layers[-1]].graph.node)} nodes at "
              f"L={layers[-1]}, {paths[layers[-1]].stat().st_size / 2**20:.1f} MiB)")
        med, passes = interleaved(models, repeat, cpu)
        table("layer", med, passes, repeat, cpu)
        marginal("layer", med, passes, 4, 16, 64, per_pass=True)
        if len(layers) >= 3 and not {4, 16, 64} <= set(layers):  # the deepest three (--layers 16,64,256)
            marginal("layer", med, passes, *layers[-3:], per_pass=True)
        if command:
            print(f"onnxpruner prune {paths[layers[-1]].name} (L={layers[-1]}), fresh processes, wall time, "
                  f"median of {repeat}:")
            command_times(paths[layers[-1]], repeat)
        print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", default="10,20,40,80,160,320")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--decoders", action="store_true", help="the decoder series instead of the CNN series")
    ap.add_argument("--layers", default="2,4,8,16,32,64", help="with --decoders: depths L")
    ap.add_argument("--kinds", default="llama-gqa,gpt2", help="with --decoders: tests/decoder_models.py kinds")
    ap.add_argument("--cpu", action="store_true", help="CPU time of this process instead of wall time "
                    "(a busy shared machine stretches wall time, not CPU time)")
    ap.add_argument("--no-command", action="store_true", help="with --decoders: skip the prune command's times")
    args = ap.parse_args()
    if args.decoders:
        decoders_main(args.kinds.split(","), [int(s) for s in args.layers.split(",")], args.repeat, args.cpu,
                      not args.no_command)
        return
    sizes = [int(s) for s in args.blocks.split(",")]
    med, passes = interleaved({n: residual_cnn(n) for n in sizes}, args.repeat, args.cpu)
    table("block", med, passes, args.repeat, args.cpu)
    marginal("block", med, passes, 40, 160, 320)


if __name__ == "__main__":
    main()
