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

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ir import Graph, lower, opset_of, raise_model, skeleton

from .analyses import SliceRecord
from .base import Pass, PassContext, PassError, PassResult
from . import progress
from .inputs import InputsError, ort_message, probe_inputs, rejection
from .op_rules import Rewriter
from .op_rules.computed import weight_array
from .runtime import run_model


class EquivalenceError(PassError):
    """The pruned model's outputs differ from the masked original's."""


LARGE = 10_000_000    # weights (elements) from which validation shows progress: ORT runs take seconds


def _large(ir: Graph) -> bool:
    return sum(int(np.prod(i.dims, dtype=np.int64)) for i in ir.initializers.values()) >= LARGE


class _NoTask:
    def update(self, n=1, **info):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _full_check_failure(model: onnx.ModelProto | None) -> str | None:
    if model is None:
        return None
    try:
        onnx.checker.check_model(skeleton(model), full_check=True)
    except Exception as exc:
        return str(exc).strip().splitlines()[0]
    return None


def masked_original(original: onnx.ModelProto, record: SliceRecord | None) -> onnx.ModelProto:
    """The original model with each removed channel zeroed in its leaves' input weights."""
    if record is None or not record.zeroings:
        return original
    g = lower(original)
    opset = opset_of(g)
    for z in record.zeroings:
        rw = Rewriter(g, g.node(z.node), opset)
        w = np.array(weight_array(g, g.inputs_of(z.node)[z.weight_port]), copy=True)
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
            mine = str(exc).strip().splitlines()[0]
            theirs = _full_check_failure(ctx.original)
            if theirs is not None:  # the input's fault, carried: blame the input
                raise PassError(f"the input fails onnx.checker's full check (so the result does too): {theirs}") from None
            raise PassError(f"onnx.checker rejects the result: {mine}") from None
        stats: dict = {"checker": True}
        ctx.report["verified"] = False
        ctx.report["max_abs_diff"] = None
        if not self.ort:
            return PassResult(False, stats)
        with progress.task("validate: ONNX Runtime", 2, unit="run") if _large(ir) else _NoTask() as bar:
            return self._run_ort(ir, ctx, stats, bar)

    def _run_ort(self, ir: Graph, ctx: PassContext, stats: dict, bar) -> PassResult:
        model = raise_model(ir)
        check = self.equivalence and ctx.original is not None
        probe = masked_original(ctx.original, ctx.analyses.get(SliceRecord)) if check else model
        reference = None
        if ctx.inputs is not None:
            feeds = ctx.inputs.feeds
            try:  # the masked original is a temporary: a large one gives its weights up
                reference = run_model(probe, feeds, quiet=True, consume=check)
            except Exception as exc:  # prune() ran the original on these: only a direct run gets here
                raise InputsError(rejection(probe, ctx.inputs, ort_message(exc),
                                            "the model before pruning" if check else "the result")) from None
        else:  # a pipeline run directly: the first symbolic size the model before pruning runs on
            proof, reference = probe_inputs(probe, ctx.seed, ctx.sample_inputs, ctx.input_shapes,
                                            "the model before pruning" if check else "the result")
            feeds = proof.feeds
        bar.update(1)
        try:
            pruned = reference if not check else run_model(model, feeds, consume=True)
        except Exception as exc:
            raise PassError(f"ONNX Runtime cannot run the result: {str(exc).strip().splitlines()[0]}") from None
        stats["ort"] = True
        bar.update(1)
        if not check:
            return PassResult(False, stats)
        worst = 0.0
        for out, got, want in zip(model.graph.output, pruned, reference):
            worst = max(worst, self._compare(repr(out.name), got, want))
        ctx.report["verified"] = True
        ctx.report["max_abs_diff"] = worst
        stats.update(equivalent=True, max_abs_diff=worst)
        return PassResult(False, stats)

    def _compare(self, where: str, got, want) -> float:
        """The largest difference between an output of the result and the masked original's;
        sequences and maps (a classifier's ZipMap) compared element by element."""
        if isinstance(want, dict):
            if not isinstance(got, dict) or sorted(map(repr, got)) != sorted(map(repr, want)):
                raise EquivalenceError(f"output {where} has other keys than the masked original's")
            return max((self._compare(f"{where}[{k!r}]", got[k], want[k]) for k in want), default=0.0)
        if isinstance(want, (list, tuple)):
            if not isinstance(got, (list, tuple)) or len(got) != len(want):
                raise EquivalenceError(f"output {where} has {len(got) if isinstance(got, (list, tuple)) else 'no'} "
                                       f"elements, masked original {len(want)}")
            return max((self._compare(f"{where}[{i}]", g, w) for i, (g, w) in enumerate(zip(got, want))),
                       default=0.0)
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            raise EquivalenceError(f"output {where} has shape {got.shape}, masked original {want.shape}")
        if got.dtype.kind not in "fc" or want.dtype.kind not in "fc":
            if not np.array_equal(got, want):
                raise EquivalenceError(f"output {where} differs from the masked original")
            return 0.0
        diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        if not np.allclose(got, want, rtol=self.rtol, atol=self.atol * scale):
            raise EquivalenceError(f"mask-equivalence check failed on output {where}: max abs diff {diff:.3g}")
        return diff
