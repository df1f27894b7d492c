"""The ONNX project's own test models, swept end to end through the command line as a user runs it.

    nice -n 19 .venv/bin/python benchmarks/onnx_testdata.py [--folders light,pytorch-converted,...]
                                [--match SUBSTR] [--opset N] [--timeout 300] [--out FILE.md] [--jsonl FILE]

The ``onnx`` wheel in the venv ships, under ``onnx/backend/test/data/``: ``light/`` (Caffe2-era
model-zoo CNNs with their float initializers replaced by ConstantOfShape nodes), ``pytorch-converted/``,
``pytorch-operator/``, ``simple/`` and ``node/`` (one model per operator and attribute corner). No
network: nothing else is read. For each model, one at a time, in a fresh temporary folder holding a
copy of the model (and, beside it in a folder of its own, its ``test_data_set_0`` inputs as an .npz
when they are plain tensors), the CLI runs

    onnxpruner prune model.onnx -o out.onnx --ratio 0.5 --report report.json [--inputs inputs.npz]
    onnxpruner inspect model.onnx [--inputs inputs.npz]

each in its own process with a timeout, and the outcome is classified:

- ``pruned``: exit 0, ``verified`` true, at least one group cut;
- ``nothing prunable``: exit 0, proven, nothing cut (the first group's reason, or "no groups");
- ``error``: a non-zero exit with exactly one ``error: ...`` line on stderr and no traceback;
- ``BUG``: anything else: a traceback or an ``internal error``, a crash or a hang, an unproven
  output, a file written outside ``out.onnx`` / ``report.json`` or a changed input, a refused
  ``inspect`` of a model ``prune`` accepted (or the other way round), or a model where nothing was
  cut whose written file computes something else than the input on its test inputs, or (a model
  converted to another opset) something else than the test's own expected outputs.

Whether an ``error`` blames the right party is read by a person from the table's distinct first
lines. Prints (and writes to ``--out``) a table of outcomes by folder, the distinct first lines of
each error and BUG with how many models gave it and one example, and one JSON line per model to
``--jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import outputs  # noqa: E402

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
FOLDERS = ("light", "pytorch-converted", "pytorch-operator", "simple", "node")
OUTCOMES = ("pruned", "nothing prunable", "error", "BUG")


def models(folders, match: str = "", opset: int | None = None) -> list[tuple[str, str, Path, Path | None]]:
    """(folder, name, model path, test_data_set_0 folder or None), sorted; ``opset``: only models
    whose default-domain opset is that."""
    out = []
    for folder in folders:
        base = DATA / folder
        if folder == "light":
            for p in sorted(base.glob("*.onnx")):
                out.append((folder, p.stem, p, None))
        else:
            for d in sorted(base.iterdir()):
                if (d / "model.onnx").exists():
                    data = d / "test_data_set_0"
                    out.append((folder, d.name, d / "model.onnx", data if data.is_dir() else None))
    out = [m for m in out if match in m[1]]
    if opset is not None:
        out = [m for m in out if {o.domain or "": o.version for o in onnx.load(
            str(m[2]), load_external_data=False).opset_import}.get("") == opset]
    return out


def expected_outputs(data: Path | None) -> list[np.ndarray] | None:
    """The test's own expected outputs (``output_*.pb``) when all are plain tensors, else None."""
    if data is None:
        return None
    out = []
    for f in sorted(data.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
        t = onnx.TensorProto()
        try:
            t.ParseFromString(f.read_bytes())
            arr = numpy_helper.to_array(t)
        except Exception:  # a sequence, map or optional
            return None
        if arr.dtype == object:
            return None
        out.append(arr)
    return out or None


RANDOM = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli")


def random(path: Path) -> bool:
    """Whether the model draws random numbers (two runtimes, or two runs, need not agree)."""
    model = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in RANDOM or n.op_type == "Dropout" and len(n.input) > 2 and n.input[2] for n in model.graph.node)


def converted_outputs(out: Path, data: Path | None, feeds) -> str | None:
    """Why a written file converted to another opset computes something else than the test's
    expected outputs on its inputs (None when it computes them, or nothing to compare). The
    tolerance is the ONNX backend runner's rtol (1e-3), with atol 1e-4: onnx.reference itself is
    8e-5 off RoiAlign's expected outputs."""
    want = expected_outputs(data)
    meta = {p.key for p in onnx.load(str(out), load_external_data=False).metadata_props}
    if want is None or feeds is None or "onnxpruner.converted_from_opset" not in meta:
        return None
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        got = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - reported as the row's finding
        return f"the written file does not run: {str(exc).strip().splitlines()[0][:200]}"
    if len(got) != len(want):
        return "another number of outputs than the test expects"
    for i, (x, y) in enumerate(zip(want, got)):
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"output {i}: the test expects {x.dtype}{list(x.shape)}, got {y.dtype}{list(y.shape)}"
        close = np.allclose(x, y, rtol=1e-3, atol=1e-4, equal_nan=True) if x.dtype.kind in "fc" else np.array_equal(x, y)
        if not close:
            return f"output {i} is not the test's expected output"
    return None


def test_inputs(model_path: Path, data: Path | None) -> dict[str, np.ndarray] | None:
    """The test's inputs by graph input name, when every one is a plain tensor (else None)."""
    if data is None:
        return None
    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    files = sorted(data.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    if len(files) != len(names):
        return None
    out = {}
    for name, f in zip(names, files):
        t = onnx.TensorProto()
        try:
            t.ParseFromString(f.read_bytes())
            arr = numpy_helper.to_array(t)
        except Exception:  # a sequence, map or optional: the pruner makes its own inputs
            return None
        if arr.dtype == object:  # strings: an .npz holds them as a unicode array (no pickle)
            if not all(isinstance(x, (str, bytes)) for x in arr.flat):
                return None
            arr = np.array([x.decode() if isinstance(x, bytes) else x for x in arr.flat], dtype=str).reshape(arr.shape)
        out[name] = arr
    return out


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(args: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, str, float]:
    """(exit code or None on timeout, stdout, stderr, seconds) of one ``onnxpruner`` process."""
    exe = Path(sys.executable).parent / "onnxpruner"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys, cli; sys.exit(cli.main())"]
    start = time.perf_counter()
    try:
        run = subprocess.run(cmd + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return None, text(exc.stdout), text(exc.stderr), time.perf_counter() - start
    return run.returncode, run.stdout, run.stderr, time.perf_counter() - start


def judge_failure(rc: int | None, stderr: str, timeout: float) -> tuple[str, str]:
    """(outcome, first line) of a run that did not exit 0."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if rc is None:
        return "BUG", f"hang: no exit within {timeout:.0f} s"
    if rc < 0:
        return "BUG", f"crash: killed by signal {-rc}"
    if "Traceback (most recent call last)" in stderr:
        last = [ln for ln in lines if not ln.startswith(" ")]
        return "BUG", f"traceback: {last[-1] if last else '?'}"
    errors = [ln for ln in lines if ln.startswith("error:")]
    if len(errors) != 1:
        return "BUG", f"exit {rc} without one error line: {(lines or ['(nothing on stderr)'])[-1]}"
    if "internal error" in errors[0]:
        return "BUG", errors[0]
    return "error", errors[0]


def same_outputs(a: Path, b: Path, feeds: dict[str, np.ndarray]) -> str | None:
    """None when ONNX Runtime computes the same outputs from ``a`` and ``b`` on ``feeds`` (``a`` in
    onnx.reference when ONNX Runtime does not run it), else why."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3

    def run(path):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    try:
        want = run(a)
    except Exception:  # noqa: BLE001 - an input ORT does not run (opset 6: the pruner converted it)
        from onnx.reference import ReferenceEvaluator
        try:
            want = ReferenceEvaluator(str(a)).run(None, feeds)
        except Exception:  # noqa: BLE001 - nothing to compare with
            return None
    try:
        got = [want, run(b)]
    except Exception as exc:  # noqa: BLE001 - reported as the row's finding
        return f"the written file does not run: {str(exc).strip().splitlines()[0][:200]}"
    return next((why for i, (x, y) in enumerate(zip(*got)) if (why := _differs(x, y, f"output {i}"))), None)


def _differs(x, y, where: str) -> str | None:
    """Why two run results differ (tensors; sequences element by element; maps), else None."""
    if isinstance(x, (list, tuple)) or isinstance(y, (list, tuple)):
        if not isinstance(x, (list, tuple)) or not isinstance(y, (list, tuple)) or len(x) != len(y):
            return f"{where}: a sequence changed length or kind"
        return next((why for i, (a, b) in enumerate(zip(x, y)) if (why := _differs(a, b, f"{where}[{i}]"))), None)
    if isinstance(x, dict) or isinstance(y, dict):
        return None if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys() and all(
            _differs(x[k], y[k], where) is None for k in x) else f"{where}: a map changed"
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape or x.dtype != y.dtype:
        return f"{where}: {x.dtype}{list(x.shape)} became {y.dtype}{list(y.shape)}"
    if x.dtype.kind in "fc":
        if not np.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True):
            return f"{where} changed (max abs diff {float(np.nanmax(np.abs(x - y))):.3g})"
    elif not np.array_equal(x, y):
        return f"{where} changed"
    return None


def sweep_one(folder: str, name: str, path: Path, data: Path | None, timeout: float, options=()) -> dict:
    """One model through ``prune`` and ``inspect`` (``options``: more ``prune`` flags), classified."""
    row = {"folder": folder, "model": name}
    with tempfile.TemporaryDirectory(prefix="onnx-testdata-") as tmp:
        tmp = Path(tmp)
        (tmp / "model").mkdir()
        (tmp / "inputs").mkdir()
        (tmp / "work").mkdir()
        model = tmp / "model" / "model.onnx"
        shutil.copyfile(path, model)
        feeds = test_inputs(path, data)
        extra = []
        if feeds is not None:
            np.savez(tmp / "inputs" / "inputs.npz", **feeds)
            extra = ["--inputs", str(tmp / "inputs" / "inputs.npz")]
        row["inputs"] = "test_data_set_0" if feeds is not None else "default"
        before, files_before = digest(model), listing(tmp)
        rc, out, err, secs = cli(["prune", str(model), "-o", "out.onnx", "--ratio", "0.5", "--report",
                                  "report.json", *extra, *options], tmp / "work", timeout)
        row["seconds"] = round(secs, 2)
        row["exit"] = rc
        written = listing(tmp) - files_before
        allowed = {"work/out.onnx", "work/report.json"} if rc == 0 else set()
        if rc == 0:
            report_path = tmp / "work" / "report.json"
            if not report_path.exists() or not (tmp / "work" / "out.onnx").exists():
                row["outcome"], row["line"] = "BUG", "exit 0 without the output or the report"
            else:
                report = json.loads(report_path.read_text())
                groups = report.get("groups", [])
                cut = [g for g in groups if g.get("pruned")]
                row["groups"] = f"{len(cut)}/{len(groups)}"
                row["params"] = f"{report.get('params_before')} -> {report.get('params_after')}"
                if report.get("verified") is not True:
                    row["outcome"], row["line"] = "BUG", f"exit 0 but verified is {report.get('verified')!r}"
                elif cut:
                    row["outcome"], row["line"] = "pruned", ""
                else:
                    reasons = [g.get("reason") for g in groups if g.get("reason")]
                    row["outcome"] = "nothing prunable"
                    row["line"] = reasons[0] if reasons else "no groups"
                    if feeds is not None and not random(model):
                        why = same_outputs(model, tmp / "work" / "out.onnx", feeds)
                        if why:
                            row["outcome"], row["line"] = "BUG", f"nothing cut, yet {why}"
                        elif why := converted_outputs(tmp / "work" / "out.onnx", data, feeds):
                            row["outcome"], row["line"] = "BUG", f"converted, yet {why}"
        else:
            row["outcome"], row["line"] = judge_failure(rc, err, timeout)
        if written - allowed:
            left = f"wrote outside the named outputs: {sorted(written - allowed)}"
            row["line"] = f"{row['line']}; {left}" if row["outcome"] == "BUG" else left
            row["outcome"] = "BUG"
        if digest(model) != before:
            row["outcome"], row["line"] = "BUG", "the input file changed"
        # inspect: the analysis alone; it must agree with prune about whether the input is usable
        rc2, _, err2, _ = cli(["inspect", str(model), *extra], tmp / "work", timeout)
        if rc2 != 0:
            what, line = judge_failure(rc2, err2, timeout)
            row["inspect"] = line
            if what == "BUG":
                row["outcome"], row["line"] = "BUG", f"inspect: {line}"
            elif row["outcome"] in ("pruned", "nothing prunable"):
                row["outcome"], row["line"] = "BUG", f"inspect refused what prune accepted: {line}"
        else:  # inspect need not run the model: it may accept what prune refuses to run
            row["inspect"] = "ok"
    return row


def generalize(line: str) -> str:
    """A first line with model paths and quoted names replaced, so alike errors count together."""
    line = re.sub(r"/\S*/model/model\.onnx", "MODEL", line)
    line = re.sub(r"'[^']*'", "'…'", line)
    return re.sub(r"\d+(\.\d+)?", "N", line)


def table(rows: list[dict]) -> str:
    by_folder: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_folder[r["folder"]][r["outcome"]] += 1
    lines = ["| folder | models | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---|" * len(OUTCOMES)]
    total = Counter()
    for folder in FOLDERS:
        if folder in by_folder:
            c = by_folder[folder]
            total += c
            lines.append(f"| {folder} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
    for outcome in ("BUG", "error", "nothing prunable"):
        seen: dict[tuple[str, str], list[str]] = defaultdict(list)
        first: dict[tuple[str, str], str] = {}
        for r in rows:
            if r["outcome"] == outcome:
                key = (r["folder"], generalize(r["line"]))
                seen[key].append(r["model"])
                first.setdefault(key, r["line"])
        if not seen:
            continue
        lines += ["", f"{outcome}: distinct first lines (folder, models, one example)", ""]
        for key, names in sorted(seen.items(), key=lambda kv: (FOLDERS.index(kv[0][0]), -len(kv[1]))):
            example = re.sub(r"/\S*/model/model\.onnx", "MODEL", first[key]).replace("|", "\\|")
            more = f" (+{len(names) - 1})" if len(names) > 1 else ""
            lines.append(f"- {key[0]}, {len(names)}: `{names[0]}`{more}: {example[:300]}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folders", default=",".join(FOLDERS))
    ap.add_argument("--match", default="", help="only models whose name contains this")
    ap.add_argument("--opset", type=int, default=None, help="only models at this default-domain opset")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per command")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "onnx_testdata.md", help="write the table here")
    ap.add_argument("--jsonl", type=Path, default=outputs.LATEST / "onnx_testdata.jsonl",
                    help="one JSON line per model")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --jsonl, run the rest")
    outputs.add_argument(ap)
    args = ap.parse_args()
    outputs.check([args.out, args.jsonl], args.update_tracked)
    folders = [f for f in args.folders.split(",") if f]
    unknown = sorted(set(folders) - set(FOLDERS))
    if unknown:
        print(f"error: --folders: unknown {', '.join(unknown)} (known: {', '.join(FOLDERS)})", file=sys.stderr)
        return 2
    todo = models(folders, args.match, args.opset)
    start, rows = time.perf_counter(), []
    if args.resume and args.jsonl.exists():  # rows of an interrupted run of the same models: kept
        rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line.strip()]
    done = {(r["folder"], r["model"]) for r in rows}
    with open(args.jsonl, "a" if args.resume else "w") as jl:
        for i, (folder, name, path, data) in enumerate(todo, 1):
            if (folder, name) in done:
                continue
            row = sweep_one(folder, name, path, data, args.timeout)
            rows.append(row)
            jl.write(json.dumps(row) + "\n")
            jl.flush()
            print(f"[{i}/{len(todo)}] {folder}/{name}: {row['outcome']}"
                  + (f" - {row['line'][:160]}" if row["line"] else "") + f" ({row['seconds']} s)", flush=True)
    text = (f"onnx {onnx.__version__} backend test data, {len(rows)} models, "
            f"{sum(r['seconds'] for r in rows) / 60:.0f} min of prune commands "
            f"({time.perf_counter() - start:.0f} s this run)\n\n" + table(rows) + "\n")
    args.out.write_text(text)
    print(text)
    return 1 if any(r["outcome"] == "BUG" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
