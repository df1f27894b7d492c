"""Per-pass time and peak memory of the default pipeline on an exported ResNet-50, next to the
I/O floor (``onnx.load`` + ``onnx.save`` of the same file), as a ratio.

    .venv/bin/python benchmarks/bench_pipeline.py [--model M.onnx] [--repeat 5]
    .venv/bin/python benchmarks/bench_pipeline.py --process [--models resnet50,vit_b_16] [--repeat 3]

``--process`` measures the command as a user runs it: fresh processes, in turn per round, each
timed from start to exit with its own peak RSS (``os.wait4``): the floor (``python -c`` onnx.load +
onnx.save), ``onnxpruner prune M --ratio 0.5`` (with the proof: the mask-equivalence check in ONNX
Runtime; the default screen times the models only up to 2 GFLOPs per run, so not these), the same without
validate (``--passes`` ending at infer-shapes), and ``--latency``, whose screen also times both models in
ONNX Runtime (up to 2 s each, by design); medians, of the wall time and of the CPU time (user + system,
which a busy machine moves less). Each
command runs once first (bytecode compiled and cached as an installed package has it; the
environment's PYTHONDONTWRITEBYTECODE is dropped for the children; the file in the page cache).

The pipeline is measured from file to file: ``ir.load`` + lower + tag ... validate + raise +
``ir.save``, with ``validate{ort=false}`` (onnx.checker full check, no ONNX Runtime run). Floor and
pipeline alternate in one process and the medians are compared (these machines are noisy).
Peak memory comes from a separate run under tracemalloc (numpy and Python allocations).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import onnx  # noqa: E402

import ir  # noqa: E402
import pipeline  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_CACHE", Path.home() / ".cache" / "onnxpruner"))


def resnet50() -> Path:
    from torchvision_models import export

    CACHE.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export("resnet50", CACHE, size=224)


def floor(path: Path, out: Path) -> float:
    start = time.perf_counter()
    onnx.save(onnx.load(str(path)), str(out))
    return time.perf_counter() - start


def prune_file(path: Path, out: Path, instruments=()) -> float:
    start = time.perf_counter()
    result = pipeline.prune(path, ratio=0.5, passes=pipeline.build_spec(0.5, ort=False),
                            instruments=instruments)
    ir.save(result.model, out, result.external)
    return time.perf_counter() - start


FLOOR = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"
NO_VALIDATE = "tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},slice,infer-shapes"


def timed_process(cmd: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds (user + system) of one fresh process."""
    import subprocess

    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed: cached bytecode
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd[:3])}... failed: {proc.stderr.read().decode()[-500:]}")
    return seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def process_main(names: list[str], repeat: int) -> None:
    from torchvision_models import export

    exe = str(Path(sys.executable).parent / "onnxpruner")
    py = sys.executable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = {n: export(n, CACHE, size=224) for n in names}
    print(f"fresh processes, ratio 0.5, l1, tree scope; median of {repeat} rounds, commands in turn")
    print(f"{'model':<12} {'MiB':>5} {'command':<24} {'seconds':>8} {'x floor':>8} {'peak RSS MiB':>13} {'x file':>7}"
          f" {'CPU s':>6} {'x floor':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out.onnx")
        for name, path in paths.items():
            size = path.stat().st_size
            prune = [exe, "prune", str(path), "-o", out]
            cmds = {"load+save (floor)": [py, "-c", FLOOR, str(path), out],
                    "prune (with proof)": prune + ["--ratio", "0.5"],
                    "prune (no validate)": prune + ["--passes", NO_VALIDATE],
                    "prune (+latency table)": prune + ["--ratio", "0.5", "--latency"]}
            rows = {k: [] for k in cmds}
            for cmd in cmds.values():  # warm-up: bytecode compiled, the file in the page cache
                timed_process(cmd)
            for _ in range(repeat):
                for k, cmd in cmds.items():
                    rows[k].append(timed_process(cmd))
            floor_s = statistics.median(t for t, _, _ in rows["load+save (floor)"])
            floor_cpu = statistics.median(c for _, _, c in rows["load+save (floor)"])
            for k, runs in rows.items():
                t, cpu = statistics.median(t for t, _, _ in runs), statistics.median(c for _, _, c in runs)
                rss = max(r for _, r, _ in runs)
                print(f"{name:<12} {size / 2**20:5.0f} {k:<24} {t:8.2f} {t / floor_s:7.2f}x "
                      f"{rss / 2**20:13.0f} {rss / size:6.2f}x {cpu:6.2f} {cpu / floor_cpu:7.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an ONNX file (default: ResNet-50 exported from torchvision)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--process", action="store_true", help="time the command as fresh processes")
    ap.add_argument("--models", default="resnet50", help="with --process: torchvision models, exported at 224")
    args = ap.parse_args()
    if args.process:
        process_main(args.models.split(","), args.repeat)
        return
    path = args.model or resnet50()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.onnx"
        floors, totals, per_pass = [], [], {}
        prune_file(path, out)  # warm-up: imports, first-touch allocations
        for _ in range(args.repeat):
            floors.append(floor(path, out))
            timing = pipeline.TimingInstrument()
            totals.append(prune_file(path, out, [timing]))
            for name, seconds in timing.rows:
                per_pass.setdefault(name, []).append(seconds)
        tracemalloc.start()
        prune_file(path, out)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    size = path.stat().st_size / 2**20
    f, t = statistics.median(floors), statistics.median(totals)
    print(f"model: {path.name} ({size:.1f} MiB), ratio 0.5, l1, tree scope, validate{{ort=false}}; "
          f"median of {args.repeat} alternating runs")
    print(f"{'pass':<14} {'seconds':>8}")
    for name, values in per_pass.items():
        print(f"{name:<14} {statistics.median(values):8.3f}")
    print(f"{'pipeline':<14} {t:8.3f}   (file to file: load, lower, passes, raise, save)")
    print(f"{'load+save':<14} {f:8.3f}   (onnx.load + onnx.save, the I/O floor)")
    print(f"ratio pipeline / floor: {t / f:.2f}x")
    print(f"peak traced memory: {peak / 2**20:.0f} MiB (model file {size:.0f} MiB)")


if __name__ == "__main__":
    main()
