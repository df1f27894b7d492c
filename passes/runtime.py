"""The ONNX Runtime runner that the passes share: tag's shape discovery (``runtime_shapes``), the
data criteria's feature maps and the proof in ``validate`` all run models through it.

Reads and provides no analysis; it works on ``onnx.ModelProto`` and imports nothing of the project
but ``passes.ort`` (ONNX Runtime imported without torch).
- ``run_model(model, feeds)``: one run, graph optimizations off (the model as written).
- ``ort_session(model, opts)``: a CPU session; a model over ``FILE_SESSION_BYTES`` of weights
  reaches ORT through a temporary file instead of a serialized copy.
- ``unrunnable(model)``: why a model must be refused before it runs (an empty weight, a tensor
  declared over the memory budget), or None.
- ``session_options()``: the threads a batch worker was given (``ONNXPRUNER_THREADS``).

What it is fed comes from ``passes.inputs``. Example: ``run_model(m, sample_inputs(m, 0))`` on a
ResNet-18 with a symbolic batch runs it on a [2, 3, 224, 224] input and returns its logits, [2, 1000].
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import threading

import numpy as np
import onnx

from ir import files

from .ort import import_ort  # ONNX Runtime's inference part, without torch


MEMORY_BUDGET_GIB = 4.0   # the largest single tensor we allocate; ONNXPRUNER_MEMORY_BUDGET (GiB) changes it
WEIGHT_PORTS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def unrunnable(model: onnx.ModelProto, skeleton: onnx.ModelProto | None = None) -> str | None:
    """Why the model must be refused before anything runs, or None: a layer with an empty weight
    (naming the node), or a tensor whose declared size is over the memory budget (naming it; a
    model 10^9 pixels tall would otherwise take 100+ GiB before failing). ``skeleton``: the model
    without its large weights, for shape inference."""
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        port = WEIGHT_PORTS.get(node.op_type)
        if port is not None and node.domain in ("", "ai.onnx") and len(node.input) > port:
            dims = shapes.get(node.input[port])
            if dims is not None and 0 in dims:
                return (f"node {node.name or node.op_type!r} ({node.op_type}) has an empty weight "
                        f"{node.input[port]!r} of shape {dims}; nothing to prune")
    try:
        budget = float(os.environ.get("ONNXPRUNER_MEMORY_BUDGET", MEMORY_BUDGET_GIB))
    except ValueError:
        budget = MEMORY_BUDGET_GIB
    skeleton = skeleton if skeleton is not None else model
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton).graph
        values = list(inferred.input) + list(inferred.value_info) + list(inferred.output)
    except Exception:  # shape inference is a help here, not a requirement
        values = list(skeleton.graph.input) + list(skeleton.graph.output)
    inputs = {i.name for i in model.graph.input}
    for vi in values:
        if vi.name in shapes or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        except Exception:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 2 for d in tt.shape.dim]
        size = itemsize * math.prod(dims)
        if size > budget * 2**30:
            return (f"{'input' if vi.name in inputs else 'tensor'} {vi.name!r} declares shape {dims}: "
                    f"{size / 2**30:.1f} GiB, over the memory budget of {budget:g} GiB (ONNXPRUNER_MEMORY_BUDGET)")
    return None



def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], quiet: bool = False,
              consume: bool = False, reuse: bool = False) -> list[np.ndarray]:
    """``quiet``: ORT logs no error of its own (a probe whose failure is expected and reported).
    ``consume``: ``model`` is a temporary the caller drops; a large one gives its weights up.
    ``reuse``: ``model`` is light (its weights are fed): inside ``reused_sessions`` a session made
    for the same model bytes is run again instead of made anew."""
    try:
        if not (reuse and _reused()["depth"]):
            return _run_session(model, quiet, consume).run(None, feeds)
        key = (model.SerializeToString(), 4 if quiet else 3, os.environ.get("ONNXPRUNER_THREADS", ""))
        kept = _reused()["sessions"]
        session = kept.pop(key, None) or _run_session(model, quiet, False)
        kept[key] = session  # the most recent last
        while len(kept) > REUSED_SESSIONS:
            kept.pop(next(iter(kept)))
        return session.run(None, feeds)
    except Exception:
        files.reraise_interrupt()  # Ctrl-C inside ORT comes back as ORT's own error
        raise


# ``reused_sessions``: the sessions kept for the last light models run with ``reuse``, until
# ``release_session``. The input probe's run of the model before pruning and validate's of the
# masked original differ only in the weights they are fed, tag's runs at two sizes only in their
# inputs; tag's run comes between the other two, hence two kept. Per thread: an embedding may
# prune in several at once.
REUSED_SESSIONS = 2
_THREAD = threading.local()


def _reused() -> dict:
    if not hasattr(_THREAD, "reused"):
        _THREAD.reused = {"depth": 0, "sessions": {}}
    return _THREAD.reused


def release_session(model: onnx.ModelProto) -> None:
    """Drop the sessions kept for ``model`` (``run_model(..., reuse=True)``): its runs are over."""
    data = model.SerializeToString()
    kept = _reused()["sessions"]
    for key in [k for k in kept if k[0] == data]:
        del kept[key]


@contextlib.contextmanager
def reused_sessions():
    """While inside (``pipeline.prune``; nested calls share it), ``run_model(..., reuse=True)`` of
    the same light model bytes runs one ONNX Runtime session; those kept are dropped on the way out."""
    state = _reused()
    state["depth"] += 1
    try:
        yield
    finally:
        state["depth"] -= 1
        if not state["depth"]:
            state["sessions"].clear()


def _run_session(model: onnx.ModelProto, quiet: bool, consume: bool):
    ort = import_ort()
    if FIX_MMAP_THRESHOLD:
        fix_mmap_threshold()

    opts = session_options(4 if quiet else 3)
    # graph optimizations off: compare the models as written, not as ORT fuses them
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # one run per session: no pre-packed second copy of the weights, no arena kept for reuse
    opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.enable_cpu_mem_arena = False
    # no buffer-reuse plan: its planner grows faster than the graph (a 64-layer decoder's session
    # took 3.0 s to set up, 1.1 s without; 128 layers 19.5 s, 3.9 s; the prune command at 64 layers
    # 16.0 -> 10.1 s); a value's buffer is still freed after its last reader, and a single run's
    # peak and time were unchanged (ResNet-50, ViT-B/16; the command's peak the same to 0.1%)
    opts.enable_mem_reuse = False
    try:
        return ort_session(model, opts, consume)
    except Exception:
        files.reraise_interrupt()  # Ctrl-C during set-up comes back as ORT's own error
        raise


def agree(a, b) -> bool:
    """Whether two outputs of one model computed two ways (a converted or rewritten model against
    the one given) are the same: equal shapes, floats within ``rtol`` 1e-4 and ``atol`` 1e-5 of the
    largest finite magnitude (NaN where NaN), anything else equal."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc":
        return bool(np.array_equal(a, b))
    finite = np.abs(a[np.isfinite(a)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))


def session_options(log_severity: int = 3):
    """ONNX Runtime session options: ORT's own log at ``log_severity`` (3 errors, 4 nothing), and
    the threads of a batch worker (``ONNXPRUNER_THREADS``; 0 or unset: all cores)."""
    ort = import_ort()

    opts = ort.SessionOptions()
    opts.log_severity_level = log_severity
    threads = int(os.environ.get("ONNXPRUNER_THREADS", "0") or 0)
    if threads > 0:  # batch workers share the machine: each takes its part of the cores
        opts.intra_op_num_threads = threads
    return opts


FILE_SESSION_BYTES = 256 * 2**20  # larger models reach ORT through a file: no serialized copy


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in model.graph.initializer if t.data_type != onnx.TensorProto.STRING)


def _session(ort, source, opts):
    try:
        return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception:
        files.reraise_interrupt()  # Ctrl-C during set-up comes back as "initialization failed"
        raise


def ort_session(model: onnx.ModelProto, opts=None, consume: bool = False):
    """An ONNX Runtime CPU session on ``model``. A large model (over ``FILE_SESSION_BYTES`` of
    weights, and any over protobuf's 2 GiB: ViT-H/14, RegNetY-128GF) reaches ORT through a
    temporary file that its weights are moved to and then read back from, so no serialized copy
    is held beside it; ``model`` is as it was afterwards, unless ``consume``: then its weights
    stay in the file (the memory they held is given back as they are written)."""
    ort = import_ort()

    data = None
    if _weight_bytes(model) < FILE_SESSION_BYTES:
        try:
            data = model.SerializeToString()
        except Exception:
            data = None
    if data is not None:
        return _session(ort, data, opts)
    from onnx.external_data_helper import set_external_data

    big = [t for t in model.graph.initializer if len(t.raw_data) > 1024]
    with tempfile.TemporaryDirectory(prefix="onnxpruner-run-") as tmp:
        spans = []
        try:
            with open(os.path.join(tmp, "weights.bin"), "wb") as f:
                for t in big:
                    offset = f.tell()
                    f.write(t.raw_data)
                    spans.append((t, offset, f.tell() - offset))
                    set_external_data(t, "weights.bin", offset, f.tell() - offset)
                    t.ClearField("raw_data")
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(model.SerializeToString())
            return _session(ort, path, opts)
        finally:  # the weights back into the caller's model
            if consume:
                spans = []
            with open(os.path.join(tmp, "weights.bin"), "rb") if spans else contextlib.nullcontext() as f:
                for t, offset, length in spans:
                    f.seek(offset)
                    t.raw_data = f.read(length)
                    del t.external_data[:]
                    t.data_location = onnx.TensorProto.DEFAULT


# Set by the command line, which owns its process: ``run_model`` fixes glibc's mmap threshold
# before it runs ONNX Runtime (``fix_mmap_threshold``). An embedding's allocator is left alone.
FIX_MMAP_THRESHOLD = False
_threshold_fixed = False


def fix_mmap_threshold() -> None:
    """glibc: every block over 128 KiB (its default threshold) is mapped on its own and unmapped
    when freed, for the rest of the process. Left dynamic, the threshold rises to the largest such
    block freed: once the input's protos are dropped (``ir.hollow``), the activations of ONNX
    Runtime's runs come from the heap, whose holes the run then grows (ViT-B/16's masked original:
    +30 to +160 MiB at the peak, varying run to run). Fixed before the first run, not earlier: a
    block mapped afresh costs page faults (on ResNet-50 without validate, 0.1 s of 0.7). Once per
    process; a no-op off glibc."""
    global _threshold_fixed
    if _threshold_fixed:
        return
    _threshold_fixed = True
    _libc("mallopt", -3, 128 << 10)  # M_MMAP_THRESHOLD


GIVE_BACK_MIN = 16 << 20   # weight bytes under which a collection costs more than it frees


def give_back_memory(weight_bytes: int | None = None) -> None:
    """Free what only cycles still hold (a lowered graph holds none since ``ir.Graph`` stopped
    using networkx's edge and degree views, which point back at their graph; what a pass's
    objects may still hold) and hand freed memory back to the system (glibc keeps freed blocks for reuse), so
    what comes next does not stack on top of it. Called by validate once the masked original is
    dropped and by the command line before the save; the hand-back is a no-op off glibc.
    With ``weight_bytes`` under ``GIVE_BACK_MIN`` nothing is done: a full collection takes ~0.1 s
    in a process holding many objects (a test run, an embedding), more than a small model frees."""
    import gc

    if weight_bytes is not None and weight_bytes < GIVE_BACK_MIN:
        return
    gc.collect()
    _libc("malloc_trim", 0)


def _libc(function: str, *args) -> None:
    """Call glibc's ``function``; off glibc (no libc.so.6, or no such function) nothing happens."""
    import ctypes

    try:
        getattr(ctypes.CDLL("libc.so.6"), function)(*args)
    except (OSError, AttributeError):
        return

