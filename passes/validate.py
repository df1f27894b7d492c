"""validate: prove the pruned model computes what the masked original computes.

Reads: ``SliceRecord`` when a slice ran. Provides nothing; records ``verified`` and
``max_abs_diff`` in the run's report. Three checks:

1. ``onnx.checker`` with ``full_check`` (types and shapes must agree);
2. ONNX Runtime loads and runs the model (``ort=false`` skips 2 and 3);
3. the mask-equivalence check: the original model with the removed channels zeroed in every
   leaf's input weights, run on the same seeded random inputs, gives the same outputs
   (``|pruned - masked| <= atol + rtol·|masked|``, atol scaled by the output's magnitude).

Example: ResNet-18 at 0.5: ``max_abs_diff ≈ 1e-6``; a slicing bug shows up as a mismatch here,
never as a shipped model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ir import Graph, lower, raise_model

from .analyses import SliceRecord
from .base import Pass, PassContext, PassError, PassResult
from .op_rules import Rewriter
from .tag import opset_of


class EquivalenceError(PassError):
    """The pruned model's outputs differ from the masked original's."""


# sizes tried, in order, for symbolic non-batch dims until the original model runs on them (a
# detector's FPN needs sides divisible by 32, a text recognizer a minimum width)
SYMBOLIC_SIZES = (16, 32, 64, 128, 224)


def has_symbolic_dims(model: onnx.ModelProto) -> bool:
    inits = {t.name for t in model.graph.initializer}
    return any(not (d.HasField("dim_value") and d.dim_value > 0)
               for vi in model.graph.input if vi.name not in inits
               for i, d in enumerate(vi.type.tensor_type.shape.dim) if i > 0)


def sample_inputs(model: onnx.ModelProto, seed: int, size: int = SYMBOLIC_SIZES[0]) -> dict[str, np.ndarray]:
    """Seeded inputs for every real graph input: symbolic batch 2, other symbolic dims ``size``
    (a dim written as -1 or 0, as Paddle's exporter does, is symbolic)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = []
        for i, d in enumerate(tt.shape.dim):
            known = d.HasField("dim_value") and d.dim_value > 0
            dims.append(d.dim_value if known else (2 if i == 0 else size))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(dims, dtype)
    return feeds


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], quiet: bool = False,
              consume: bool = False) -> list[np.ndarray]:
    """``quiet``: ORT logs no error of its own (a probe whose failure is expected and reported).
    ``consume``: ``model`` is a temporary the caller drops; a large one gives its weights up."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4 if quiet else 3
    threads = int(os.environ.get("ONNXPRUNER_THREADS", "0") or 0)
    if threads > 0:  # batch workers share the machine: each takes its part of the cores
        opts.intra_op_num_threads = threads
    # graph optimizations off: compare the models as written, not as ORT fuses them
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # one run per session: no pre-packed second copy of the weights, no arena kept for reuse
    opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.enable_cpu_mem_arena = False
    return ort_session(model, opts, consume).run(None, feeds)


FILE_SESSION_BYTES = 256 * 2**20  # larger models reach ORT through a file: no serialized copy


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in model.graph.initializer if t.data_type != onnx.TensorProto.STRING)


def ort_session(model: onnx.ModelProto, opts=None, consume: bool = False):
    """An ONNX Runtime CPU session on ``model``. A large model (over ``FILE_SESSION_BYTES`` of
    weights, and any over protobuf's 2 GiB: ViT-H/14, RegNetY-128GF) reaches ORT through a
    temporary file that its weights are moved to and then read back from, so no serialized copy
    is held beside it; ``model`` is as it was afterwards, unless ``consume``: then its weights
    stay in the file (the memory they held is given back as they are written)."""
    import onnxruntime as ort

    data = None
    if _weight_bytes(model) < FILE_SESSION_BYTES:
        try:
            data = model.SerializeToString()
        except Exception:
            data = None
    if data is not None:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
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
            return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        finally:  # the weights back into the caller's model
            if consume:
                spans = []
            with open(os.path.join(tmp, "weights.bin"), "rb") if spans else contextlib.nullcontext() as f:
                for t, offset, length in spans:
                    f.seek(offset)
                    t.raw_data = f.read(length)
                    del t.external_data[:]
                    t.data_location = onnx.TensorProto.DEFAULT


def masked_original(original: onnx.ModelProto, record: SliceRecord | None) -> onnx.ModelProto:
    """The original model with each removed channel zeroed in its leaves' input weights."""
    if record is None or not record.zeroings:
        return original
    g = lower(original)
    opset = opset_of(g)
    for z in record.zeroings:
        rw = Rewriter(g, g.node(z.node), opset)
        w = np.array(rw.const(z.weight_port), copy=True)
        index = [slice(None)] * w.ndim
        index[z.weight_axis] = list(z.positions)
        w[tuple(index)] = 0
        rw.set_const(z.weight_port, w)
    return raise_model(g)


@dataclass(frozen=True)
class ValidatePass(Pass):
    name: ClassVar[str] = "validate"
    preserves: ClassVar[tuple[type, ...]] = (SliceRecord,)
    ort: bool = True
    equivalence: bool = True
    rtol: float = 1e-3
    atol: float = 1e-4

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        try:  # weights stay out of the checker's copy: it checks structure, types and shapes
            onnx.checker.check_model(raise_model(ir, light=True), full_check=True)
        except Exception as exc:
            raise PassError(f"onnx.checker rejects the result: {str(exc).strip().splitlines()[0]}") from None
        stats: dict = {"checker": True}
        ctx.report["verified"] = False
        ctx.report["max_abs_diff"] = None
        if not self.ort:
            return PassResult(False, stats)
        model = raise_model(ir)
        check = self.equivalence and ctx.original is not None
        probe = masked_original(ctx.original, ctx.analyses.get(SliceRecord)) if check else model
        feeds, reference = ctx.sample_inputs, None
        if feeds is None:  # the first symbolic size the model before pruning runs on
            sizes = SYMBOLIC_SIZES if has_symbolic_dims(model) else SYMBOLIC_SIZES[:1]
            for size in sizes:
                feeds = sample_inputs(model, ctx.seed, size)
                try:  # the masked original is a temporary: on its last try a large one gives its weights up
                    reference = run_model(probe, feeds, quiet=True, consume=check and size == sizes[-1])
                    break
                except Exception as exc:
                    failure = str(exc).strip().splitlines()[0]
            else:
                which = "the model before pruning" if check else "the result"
                raise PassError(f"ONNX Runtime cannot run {which} on seeded inputs (symbolic dims "
                                f"tried: {', '.join(map(str, sizes))}); pass sample inputs of the "
                                f"right shape: {failure}")
        try:
            pruned = reference if not check and reference is not None else run_model(model, feeds, consume=True)
        except Exception as exc:
            raise PassError(f"ONNX Runtime cannot run the result: {str(exc).strip().splitlines()[0]}") from None
        stats["ort"] = True
        if not check:
            return PassResult(False, stats)
        if reference is None:
            reference = run_model(probe, feeds, consume=True)
        worst = 0.0
        for out, got, want in zip(model.graph.output, pruned, reference):
            if got.shape != want.shape:
                raise EquivalenceError(f"output {out.name!r} has shape {got.shape}, masked original {want.shape}")
            if got.dtype.kind not in "fc":
                if not np.array_equal(got, want):
                    raise EquivalenceError(f"output {out.name!r} differs from the masked original")
                continue
            diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
            worst = max(worst, diff)
            scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
            if not np.allclose(got, want, rtol=self.rtol, atol=self.atol * scale):
                raise EquivalenceError(f"mask-equivalence check failed on output {out.name!r}: "
                                       f"max abs diff {diff:.3g}")
        ctx.report["verified"] = True
        ctx.report["max_abs_diff"] = worst
        stats.update(equivalent=True, max_abs_diff=worst)
        return PassResult(False, stats)
