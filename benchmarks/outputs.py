"""Where a benchmark writes. ``benchmarks/out/`` holds the committed results the README quotes;
a run writes under ``benchmarks/out/latest/`` (ignored by git) by default, and a file git tracks is
replaced only when asked: ``--update-tracked``. Comparing a new run with the committed one is
then a ``diff benchmarks/out/latest/X benchmarks/out/X``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LATEST = ROOT / "benchmarks" / "out" / "latest"


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--update-tracked", action="store_true",
                    help="allow replacing committed results (files git tracks, e.g. under benchmarks/out/)")


def tracked(path: Path) -> bool:
    """Whether git tracks ``path`` (False outside a git checkout)."""
    path = Path(path).resolve()
    try:
        run = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return run.returncode == 0


def check(paths, update_tracked: bool) -> None:
    """Exit 2 with one ``error:`` line before any work when a path to write is tracked by git and
    ``--update-tracked`` was not given; otherwise make the folders."""
    for p in map(Path, paths):
        if tracked(p) and not update_tracked:
            print(f"error: {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p} is a committed "
                             f"result (tracked by git); pass --update-tracked to replace it, or --out/--out-dir "
                             f"elsewhere (default {LATEST.relative_to(ROOT)}/)", file=sys.stderr)
            raise SystemExit(2)
    for p in map(Path, paths):
        p.parent.mkdir(parents=True, exist_ok=True)


def last_line(text: str) -> str:
    """A subprocess's last non-empty line, for a table cell (at most 240 characters, no ``|``)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:240].replace("|", "/")


def zoo_totals(rows: list[dict]) -> str:
    """The line under a zoo table (hf_zoo, jax_zoo, dynamo_zoo): models that ran, verified,
    groups pruned, the median share of float parameters removed, failures."""
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return f"0 of {len(rows)} models pruned"
    removed = sorted(r["removed"] for r in ok)
    return (f"{len(ok)} of {len(rows)} models ran; verified {sum(r['verified'] for r in ok)}/{len(ok)}; "
            f"groups pruned {sum(r['pruned'] for r in ok)}/{sum(r['groups'] for r in ok)}; "
            f"median float params removed {removed[len(removed) // 2]:.1%}; failed {len(rows) - len(ok)}")


def zoo_sweep(names, measure, row, out: Path, lines: list[str], notes=lambda rows: [],
              totals=zoo_totals) -> list[dict]:
    """Each model measured in turn (``measure(name)`` -> its row's dict), its row printed and the
    table rewritten at ``out`` after each (``lines``: what stands above the rows, the header
    last; the summary ``totals(rows)`` and ``notes(rows)`` below): a long sweep stopped midway
    keeps what it measured."""
    rows: list[dict] = []
    print(lines[-1], flush=True)
    for name in names:
        rows.append(measure(name))
        lines.append(row(rows[-1]))
        print(lines[-1], flush=True)
        out.write_text("\n".join([*lines, "", totals(rows), *notes(rows)]) + "\n")
    print("\n" + totals(rows), *notes(rows), sep="\n", flush=True)
    return rows


def within(measure, timeout: float):
    """``measure(name, timeout)`` as ``measure(name)``: a child process over ``timeout`` is a row
    saying so."""
    def measured(name: str) -> dict:
        try:
            return measure(name, timeout)
        except subprocess.TimeoutExpired:
            return {"model": name, "error": f"over {timeout:.0f} s"}
    return measured


def cli_prune(path: Path, ratio: float, timeout: float, feeds: Path | None = None) -> tuple[dict | None, str, float]:
    """``onnxpruner prune PATH -o OUT --ratio R --report R.json --no-latency [--inputs FEEDS]`` in a
    child process, in a temporary folder: (the report, or None when it failed; its stderr; seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [str(Path(sys.executable).parent / "onnxpruner"), "prune", str(path), "-o", str(Path(tmp) / "out.onnx"),
               "--ratio", str(ratio), "--report", str(report), "--no-latency"]
        if feeds is not None:
            cmd += ["--inputs", str(feeds)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp)
        seconds = time.perf_counter() - start
        if done.returncode or not report.exists():
            return None, done.stderr, seconds
        return json.loads(report.read_text()), done.stderr, seconds


def report_fields(rep: dict) -> dict:
    """A zoo row's fields from a prune's report: groups pruned and in all, the share of float
    parameters removed, parameters, the proof, the first blocker of the largest group left whole
    and the most frequent blockers of the others (``zoo.blockers``)."""
    import zoo

    groups = rep["groups"]
    whole = [g for g in groups if not g.get("pruned")]
    largest = max(whole, key=lambda g: g.get("channels_before", 0), default=None)
    return {"pruned": sum(1 for g in groups if g.get("pruned")), "groups": len(groups),
            "removed": 1 - rep["params_after"] / rep["params_before"] if rep["params_before"] else 0.0,
            "params": rep["params_before"], "verified": bool(rep["verified"]), "diff": rep.get("max_abs_diff"),
            "blocker": (f"{largest.get('channels_before')} ch: {largest.get('reason')}" if largest else "-"),
            "others": zoo.blockers([g for g in groups if g is not largest])}

