"""Scripted batch optimization: many models × variants, on local processes or a Ray cluster.

A plan lists models and the variants to produce (JSON or YAML)::

    {"models": ["resnet18.onnx", {"path": "vgg.onnx", "name": "vgg"}],
     "variants": [{"name": "r30", "ratio": 0.3},
                  {"name": "r50-node", "ratio": 0.5, "scope": "node", "criterion": "l2"},
                  {"name": "custom", "passes": "tag,trees,classify,score,mask{ratio=0.4},slice,infer-shapes,validate"},
                  {"name": "tuned", "ratio": 0.5, "finetune": {"data": "train.npz", "val": "val.npz", "epochs": 3}},
                  {"name": "taylor", "ratio": 0.5, "criterion": "taylor", "calib": "calib.npz"}]}

Every job (model × variant) writes ``OUT/<model>/<variant>/model.onnx`` and ``report.json``;
``OUT/summary.csv`` and ``summary.md`` get one row per job (params and FLOPs before/after,
verified, max diff, the pruned model's sha256, seconds, error). A failing model never stops the
others: its row carries the one-line error. Re-running a plan skips the jobs already done (``force`` redoes them). Each job is
exactly ``pipeline.prune`` on that model, so its output is byte-identical to a single run.

Executors: ``local`` (at most ``jobs`` worker processes; ``jobs=1`` runs in this process) and
``ray`` (``address`` of a cluster, or a local instance). Models of at most ``SHIP_LIMIT`` bytes
travel to Ray workers as bytes; larger ones are read where the worker runs (shared storage).
At most ``jobs`` jobs run at a time, which bounds memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable

import onnx

import ir
from passes import progress
from ir import files

SHIP_LIMIT = 64 * 2**20
COLUMNS = ["model", "variant", "params_before", "params_after", "flops_before", "flops_after",
           "verified", "max_abs_diff", "sha256", "seconds", "error"]


class PlanError(ValueError):
    """A plan that cannot be read or run; one line for the user."""


@dataclass(frozen=True)
class Variant:
    name: str
    ratio: float = 0.5
    criterion: str = "l1"
    scope: str = "tree"
    passes: str | None = None
    finetune: dict | None = None
    calib: str | None = None        # calibration data (.npz) for hrank / hrank-star / taylor
    mask: dict | None = None        # mask options by field name (round_to, min_keep, ignore, normalize,
                                    # rank, max_ratio, target_flops, target_params), as in the spec


@dataclass(frozen=True)
class Job:
    model: str          # display name (folder name)
    path: str           # where the model file is
    variant: Variant
    inputs: str | None = None           # --inputs: an .npz of arrays by input name
    input_shape: tuple[str, ...] = ()   # --input-shape NAME:D1,D2,... items

    @property
    def key(self) -> str:
        """Changes whenever the job would produce something else."""
        stat = Path(self.path).stat() if Path(self.path).exists() else None
        text = json.dumps([self.path, stat.st_size if stat else None, stat.st_mtime_ns if stat else None,
                           asdict(self.variant)] + ([self.inputs, list(self.input_shape)]
                                                    if self.inputs or self.input_shape else []), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- plans
def read_plan(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: no such plan file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            plan = yaml.safe_load(text)
        else:
            plan = json.loads(text)
    except Exception as exc:
        raise PlanError(f"{path}: cannot parse plan ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(plan, dict) or "models" not in plan:
        raise PlanError(f"{path}: a plan needs a 'models' list (and optionally 'variants')")
    base = path.parent
    models = []
    for m in plan["models"]:
        entry = {"path": m} if isinstance(m, str) else dict(m)
        if "path" not in entry:
            raise PlanError(f"{path}: model entry {m!r} has no 'path'")
        for key in ("path", "inputs"):
            if isinstance(entry.get(key), str) and not os.path.isabs(entry[key]):
                entry[key] = str(base / entry[key])
        models.append(entry)
    plan["models"] = models
    for v in plan.get("variants", []):  # data files are relative to the plan too
        ft = v.get("finetune") if isinstance(v, dict) else None
        for k in ("data", "val"):
            if ft and isinstance(ft.get(k), str) and not os.path.isabs(ft[k]):
                ft[k] = str(base / ft[k])
        if isinstance(v, dict) and isinstance(v.get("calib"), str) and not os.path.isabs(v["calib"]):
            v["calib"] = str(base / v["calib"])
    return plan


MODEL_KEYS = {"path", "name", "inputs", "input_shape"}


def make_jobs(models: Iterable[dict | str], variants: Iterable[dict], defaults: dict | None = None) -> list[Job]:
    """Jobs of every model × variant. A model entry may give its own ``inputs`` (an .npz path) and
    ``input_shape`` (a list of ``NAME:D1,D2,...``, the command line's words); ``defaults`` (the
    command line's ``--inputs`` / ``--input-shape``) apply where it does not."""
    defaults = defaults or {}
    jobs, names = [], set()
    variants = [Variant(**_variant(v)) for v in variants] or [Variant("r0.5")]
    if len({v.name for v in variants}) != len(variants):
        raise PlanError("variant names must be unique")
    for m in models:
        entry = {"path": m} if isinstance(m, str) else m
        unknown = set(entry) - MODEL_KEYS
        if unknown:
            raise PlanError(f"model {entry.get('path')!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(MODEL_KEYS))}")
        name = _safe(entry.get("name") or Path(str(entry["path"])).stem, "model name")
        if name in names:
            raise PlanError(f"two models are named {name!r}; give one a 'name'")
        names.add(name)
        shapes = entry.get("input_shape", defaults.get("input_shape") or ())
        if isinstance(shapes, str):
            shapes = [shapes]
        if not isinstance(shapes, (list, tuple)) or not all(isinstance(t, str) for t in shapes):
            raise PlanError(f"model {name!r}: input_shape is a list of NAME:D1,D2,... strings")
        inputs = entry.get("inputs", defaults.get("inputs"))
        jobs += [Job(name, str(entry["path"]), v, inputs, tuple(shapes)) for v in variants]
    return jobs


def _variant(v: dict) -> dict:
    known = {"name", "ratio", "criterion", "scope", "passes", "finetune", "calib", "mask"}
    unknown = set(v) - known
    if unknown:
        raise PlanError(f"variant {v.get('name', v)!r}: unknown key(s) {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(known))}")
    out = dict(v)
    out.setdefault("name", f"{v.get('criterion', 'l1')}-{v.get('scope', 'tree')}-r{v.get('ratio', 0.5)}")
    out["name"] = _safe(out["name"], "variant name")
    return out


def _safe(name, what: str) -> str:
    """Model and variant names become folder names under -o: one safe path component each."""
    try:
        return files.safe_component(name, what)
    except files.FileRefused as exc:
        raise PlanError(str(exc)) from None


def job_outputs(job: Job, out_dir: str | os.PathLike) -> dict[str, str]:
    """Every file a job may write, labelled for ``files.check_writes``."""
    folder = Path(out_dir) / job.model / job.variant.name
    name = f"{job.model}/{job.variant.name}"
    return {f"{name}/{f}": str(folder / f) for f in ("model.onnx", "model.onnx.data", "report.json", "job.json")}


def job_inputs(job: Job) -> dict[str, list[str]]:
    """Every file a job reads: its model (with external data), calibration and training data."""
    v = job.variant
    reads = {f"model {job.model}": files.model_files(job.path)}
    data = [v.calib] + [v.finetune.get(k) for k in ("data", "val")] if v.finetune else [v.calib]
    reads[f"data of {job.model}/{v.name}"] = [d for d in data if isinstance(d, str)]
    return reads


# ----------------------------------------------------------------------------- one job
def run_job(job: Job, out_dir: str, model_bytes: bytes | None = None, threads: int = 0) -> dict:
    """Prune one model with one variant; never raises: failures become the row's error.
    ``threads``: ONNX Runtime threads for this job's validation (0: all cores)."""
    if threads:
        os.environ["ONNXPRUNER_THREADS"] = str(threads)
    import pipeline
    from passes.finetune import DataError
    from passes.inputs import InputsUsageError, load_inputs, parse_input_shapes

    start = time.perf_counter()
    row: dict[str, Any] = {"model": job.model, "variant": job.variant.name}
    folder = Path(out_dir) / job.model / job.variant.name
    try:
        v = job.variant
        passes = v.passes
        train = val = None
        if v.finetune:
            ft = dict(v.finetune)
            train, val = ft.pop("data", None), ft.pop("val", None)
            opts = " ".join(f"{k.replace('_', '-')}={val_}" for k, val_ in sorted(ft.items()))
            base = passes or pipeline.build_spec(v.ratio, v.criterion, v.scope)
            passes = base + (f",finetune{{{opts}}}" if opts else ",finetune")
        model: Any = job.path
        shipped = _parse(model_bytes) if model_bytes is not None else None
        if shipped is not None:
            if not any(onnx.external_data_helper.uses_external_data(t) for t in shipped.graph.initializer):
                model = shipped  # external weights stay where the worker can read them by path
        if v.mask:
            from passes.reruns import set_mask_options
            changes = {k.replace("-", "_"): tuple(x) if isinstance(x, list) else x for k, x in v.mask.items()}
            base = passes or pipeline.build_spec(v.ratio, v.criterion, v.scope)
            passes = pipeline.Pipeline(set_mask_options(pipeline.Pipeline.parse(base).passes, changes)).spec()
        result = pipeline.prune(model, ratio=v.ratio, criterion=v.criterion, scope=v.scope, passes=passes,
                                train_data=train, val_data=val, calib_data=v.calib,
                                sample_inputs=load_inputs(job.inputs) if job.inputs else None,
                                input_shapes=parse_input_shapes(job.input_shape) or None)
        report = result.report
        report["model"] = job.path
        row.update({k: report[k] for k in ("params_before", "params_after", "flops_before", "flops_after",
                                            "verified", "max_abs_diff")})
        folder.mkdir(parents=True, exist_ok=True)
        with files.Staged() as staged:  # model, its data, report and job.json land together
            ir.save(result.model, folder / "model.onnx", result.external, staged)
            staged.write_bytes(folder / "report.json", (json.dumps(report, indent=2) + "\n").encode())
            digests = {Path(target).name: _sha256(tmp) for tmp, target in staged.parts}
            row["sha256"] = digests["model.onnx"][:16]
            row["error"] = ""
            row["seconds"] = round(time.perf_counter() - start, 3)
            staged.write_bytes(folder / "job.json", json.dumps({"key": job.key, "row": row,
                                                                "sha256": digests}).encode())
        return row
    except (ir.ModelLoadError, pipeline.PipelineError, pipeline.SpecError, pipeline.PassError, DataError,
            OSError, ValueError, InputsUsageError) as exc:
        row["error"] = str(exc).strip().splitlines()[0]
    except Exception as exc:  # a bug of ours must not stop the other jobs either
        text = str(exc).strip().splitlines()
        row["error"] = f"internal error ({type(exc).__name__}: {text[0] if text else ''})"
    row["seconds"] = round(time.perf_counter() - start, 3)
    _write_failed(job, out_dir, row)
    return row


def _write_failed(job: Job, out_dir: str, row: dict) -> None:
    folder = Path(out_dir) / job.model / job.variant.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files.write_bytes(folder / "job.json", json.dumps({"key": job.key, "row": row}).encode())
    except OSError:
        pass  # the row in the summary still says what failed


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _parse(data: bytes) -> onnx.ModelProto | None:
    """Shipped bytes as a model; None (read the path instead, for its usual error) if they aren't."""
    try:
        return onnx.ModelProto.FromString(data)
    except Exception:
        return None


def _done_row(job: Job, out_dir: str) -> dict | None:
    folder = Path(out_dir) / job.model / job.variant.name
    try:
        saved = json.loads((folder / "job.json").read_text())
        if saved.get("key") != job.key or saved["row"].get("error"):
            return None  # changed or failed last time: run it again
        digests = saved["sha256"]
        if not digests or any(_sha256(folder / name) != digest for name, digest in digests.items()):
            return None  # an output was damaged or removed since: run it again
        return saved["row"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# ----------------------------------------------------------------------------- executors
def _local(jobs: list[Job], out_dir: str, n: int, tick) -> list[dict]:
    if n <= 1:
        rows = []
        for job in jobs:
            rows.append(run_job(job, out_dir))
            tick(rows[-1])
        return rows
    # Our own workers, one job at a time each, instead of ProcessPoolExecutor: a worker that dies
    # (out of memory, kill -9) then costs only its job (that row says so) and is replaced; a pool
    # would break and abort every job. spawn: a forked child would inherit ORT's thread pools.
    from multiprocessing.connection import wait

    ctx = get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n)
    rows: list[dict | None] = [None] * len(jobs)
    queue = list(enumerate(jobs))
    busy: dict = {}     # connection -> (process, job index)

    def hand_out(conn, proc) -> None:
        i, job = queue.pop(0)
        conn.send(job)
        busy[conn] = (proc, i)

    def start() -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, out_dir, threads), daemon=True)
        # a worker is born ignoring Ctrl-C (SIG_IGN survives exec, and Python keeps it): the
        # parent handles it, and a worker still importing must not die of it with a traceback
        main = threading.current_thread() is threading.main_thread()
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            proc.start()
        finally:
            if main:
                signal.signal(signal.SIGINT, handler)
        child.close()
        hand_out(parent, proc)

    try:
        for _ in range(min(n, len(queue))):
            start()
        while busy:
            ready = wait(list(busy) + [proc.sentinel for proc, _ in busy.values()])
            for conn in list(busy):
                proc, i = busy[conn]
                row = None
                if conn in ready or proc.sentinel in ready:
                    try:
                        row = conn.recv() if conn.poll() else None
                    except (EOFError, OSError):
                        row = None
                    if row is None and proc.is_alive():
                        continue
                else:
                    continue
                del busy[conn]
                if row is None:  # the worker died with this job
                    proc.join()
                    code = proc.exitcode
                    why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    row = {"model": jobs[i].model, "variant": jobs[i].variant.name,
                           "error": f"worker died: {why}"}
                    folder = Path(out_dir) / jobs[i].model / jobs[i].variant.name
                    files.remove_stale(folder)
                    _write_failed(jobs[i], out_dir, row)
                    conn.close()
                    rows[i] = row
                    tick(row)
                    if queue:
                        start()
                    continue
                rows[i] = row
                tick(row)
                if queue:
                    hand_out(conn, proc)
                else:
                    conn.send(None)
                    conn.close()
                    proc.join()
    finally:  # an interrupt: workers get SIGTERM and remove their temporaries
        for conn, (proc, _) in busy.items():
            if proc.is_alive():
                proc.terminate()
        for conn, (proc, i) in busy.items():
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            files.remove_stale(Path(out_dir) / jobs[i].model / jobs[i].variant.name)
    return rows  # type: ignore[return-value]


def _worker(conn, out_dir: str, threads: int) -> None:
    """A local worker: jobs from ``conn`` until None. Ctrl-C is the parent's to handle; SIGTERM
    (the parent stopping us) removes our temporaries on the way out."""
    files.interrupts()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while True:
            job = conn.recv()
            if job is None:
                return
            conn.send(run_job(job, out_dir, None, threads))
    except (files.Interrupted, EOFError, OSError):
        files.remove_temporaries()


def _ray(jobs: list[Job], out_dir: str, n: int, address: str | None, tick) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise PlanError("--executor ray needs Ray: pip install 'onnxpruner[ray]'") from None
    started = False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": max(n, 1)}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_job)
        rows: list[dict | None] = [None] * len(jobs)
        pending: dict = {}
        queue = list(enumerate(jobs))
        while queue or pending:
            while queue and len(pending) < max(n, 1):  # at most n at a time bounds memory
                i, job = queue.pop(0)
                size = Path(job.path).stat().st_size if Path(job.path).is_file() else None
                ship = Path(job.path).read_bytes() if size is not None and size <= SHIP_LIMIT else None
                pending[remote.remote(job, out_dir, ship, 1)] = i  # one CPU per Ray task
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    rows[i] = ray.get(ref)
                except Exception as exc:  # the worker died (WorkerCrashedError, OOM): this job's row
                    text = str(exc).strip().splitlines()
                    rows[i] = {"model": jobs[i].model, "variant": jobs[i].variant.name,
                               "error": f"worker died: {text[0] if text else type(exc).__name__}"}
                    _write_failed(jobs[i], out_dir, rows[i])
                tick(rows[i])
        return rows
    finally:
        if started:
            ray.shutdown()


class _Bar:
    """Jobs done so far: a ``passes.progress`` bar (tqdm on a terminal, JSON lines); without a
    bar, one log line a job on ``stream`` (stderr by default; none under ``--quiet``)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream
        self.task = progress.task("batch", total, unit="job") if total else None

    def __call__(self, row: dict) -> None:
        self.done += 1
        self.failed += bool(row.get("error"))
        state = "failed" if row.get("error") else "done"
        if self.task is not None and self.task.mode != "off":
            self.task.update(1, job=f"{row['model']}/{row['variant']}", state=state, failed=self.failed)
        elif self.stream is not None or not progress.quiet():
            out = self.stream if self.stream is not None else progress.stream()
            out.write(f"[{self.done}/{self.total}] {row['model']}/{row['variant']} {state}\n")
            out.flush()
        if self.done == self.total and self.task is not None:
            self.task.close()


@dataclass
class BatchResult:
    rows: list[dict]
    skipped: int = 0
    seconds: float = 0.0
    summary_csv: str = ""
    summary_md: str = ""
    notes: list[str] = field(default_factory=list)


def run_batch(jobs: list[Job], out_dir: str | os.PathLike, executor: str = "local", n_jobs: int = 1,
              address: str | None = None, force: bool = False, stream=None) -> BatchResult:
    out_dir = str(out_dir)
    check_outputs(jobs, out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[dict | None] = [None if force else _done_row(j, out_dir) for j in jobs]
    todo = [j for j, r in zip(jobs, rows) if r is None]
    bar = _Bar(len(todo), stream)
    if todo:
        if executor == "local":
            fresh = _local(todo, out_dir, n_jobs, bar)
        elif executor == "ray":
            fresh = _ray(todo, out_dir, n_jobs, address, bar)
        else:
            raise PlanError(f"unknown executor {executor!r}; known: local, ray")
        it = iter(fresh)
        rows = [r if r is not None else next(it) for r in rows]
    result = BatchResult(rows, len(jobs) - len(todo), time.perf_counter() - start)
    result.summary_csv, result.summary_md = write_summary(rows, out_dir)
    return result


def check_outputs(jobs: list[Job], out_dir: str, extra_reads: dict | None = None) -> None:
    """The file rule for a whole batch: no output of any job may be a file some job reads (a
    model, its external data, calibration or training data, the plan) or a non-regular file."""
    reads: dict[str, list[str]] = dict(extra_reads or {})
    writes: dict[str, str] = {"summary.csv": str(Path(out_dir) / "summary.csv"),
                              "summary.md": str(Path(out_dir) / "summary.md")}
    for job in jobs:
        for label, paths in job_inputs(job).items():
            reads.setdefault(label, [])
            reads[label] = reads[label] + [p for p in paths if p not in reads[label]]
        writes.update(job_outputs(job, out_dir))
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise PlanError(f"-o {out_dir}: exists and is not a folder")
    try:
        files.check_writes(writes, reads, new_folders=True)
    except files.FileRefused as exc:
        raise PlanError(str(exc)) from None


def write_summary(rows: list[dict], out_dir: str) -> tuple[str, str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in COLUMNS})
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        md.append("| " + " | ".join(_cell(r.get(k, "")) for k in COLUMNS) + " |")
    csv_path, md_path = Path(out_dir) / "summary.csv", Path(out_dir) / "summary.md"
    with files.Staged() as staged:
        staged.write_bytes(csv_path, buf.getvalue().encode())
        staged.write_bytes(md_path, ("\n".join(md) + "\n").encode())
    return str(csv_path), str(md_path)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def comparable(rows: list[dict]) -> list[dict]:
    """What must agree between executors: everything but the seconds and ``max_abs_diff``. The
    pruned model itself must be the same bytes (``sha256``); the diff is a measurement that ORT
    makes with the job's thread count, and float sums taken in another order differ in the last
    bits (e.g. 4.8e-07 serially, 3.3e-07 with --jobs 2 on ResNet-18)."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "max_abs_diff")} for r in rows]
