"""onnxpruner: structured channel pruning of ONNX models as a compiler pass pipeline.

The whole story::

    model ──ir.lower──▶ Graph ──▶ tag ▶ trees ▶ classify ▶ score ▶ mask ▶ slice ▶ infer-shapes ▶ validate ──ir.raise──▶ model
                                  └────────── analyses (typed, in PassContext) ─────┘ └ transforms ┘  └ proof ┘

- A spec names the passes and their options, MLIR style:
  ``tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},slice,infer-shapes,validate``.
  ``Pipeline.parse(spec).spec()`` prints it back in canonical form (every option, defaults too).
- Before anything runs, each pass's ``requires`` must be provided by an earlier pass.
- Instruments wrap every pass: timing, IR dumps (``--dump-after``), and ``ir.verify`` after each
  pass (on by default). A failing pass is reported with the passes that ran before it.
- ``prune()`` and ``inspect()`` are the API; the ``onnxpruner`` command line around them is
  ``cli.py``, and the jobs that run many pipelines (batch, demo, sensitivity, schedules) are in
  ``workflows/``: this module imports neither.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import onnx

import ir
from passes.analyses import Patterns, SliceRecord, Tags, Trees, render
from passes import plugins, subgraphs
from passes.base import (Pass, PassContext, PassError, PassResult, PipelineError, SpecError, fewer_collections,
                         format_option, option_fields, option_types, parse_option)
from passes.classify import ClassifyPass
from passes.cost import count_flops, count_params
from passes.finetune import FinetunePass
from passes.infer_shapes import InferShapesPass, lower_input
from passes.inputs import resolve_inputs, run_inputs
from passes.mask import MaskPass
from passes.recover import RecoverPass, with_recover
from passes.runtime import reused_sessions
from passes.reruns import check_ratios, check_tuning, has_mask, meet_target, unproven_groups, with_ignored, with_mask_options
from passes.score import ScorePass
from passes.slice import SlicePass, group_reports, inspect_reports, interface_shapes
from passes.tag import TagPass
from passes.support import check_model_input as check_input, opened  # the API: cli and workflows check inputs
from passes.trees import TreesPass
from passes.validate import EquivalenceError, ValidatePass, original_probe

DEFAULT_SPEC = ("tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},"
                "slice,infer-shapes,validate")
ANALYSIS_SPEC = "tag,trees,classify"
SPEC_METADATA_KEY = "onnxpruner.spec"


# --------------------------------------------------------------------------- registry
REGISTRY: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Make a Pass subclass usable by its ``name`` in specs (works as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Pass)) or not cls.name:
        raise TypeError("register() takes a Pass subclass with a non-empty `name`")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"pass {cls.name!r} must be a dataclass (its fields are its options)")
    REGISTRY[cls.name] = cls
    return cls


for _cls in (TagPass, TreesPass, ClassifyPass, ScorePass, MaskPass, SlicePass, InferShapesPass,
             ValidatePass, RecoverPass, FinetunePass):
    register(_cls)


# --------------------------------------------------------------------------- spec
def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced '}}' in spec {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise SpecError(f"unbalanced '{{' in spec {text!r}")
    parts.append("".join(cur))
    return parts


def parse_pass(item: str) -> Pass:
    item = item.strip()
    name, brace, rest = item.partition("{")
    name = name.strip()
    if name not in REGISTRY:   # a plugin package's pass (entry point group onnxpruner.passes)
        plugins.load("passes", register)
    if name not in REGISTRY:
        raise SpecError(f"unknown pass {name!r}; known passes: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    fields = option_fields(cls)
    hints = option_types(cls, fields)
    kwargs: dict[str, Any] = {}
    if brace:
        if not rest.endswith("}"):
            raise SpecError(f"pass {name!r}: options must end with '}}'")
        for opt in rest[:-1].split():
            key, eq, val = opt.partition("=")
            attr = key.replace("-", "_")
            if not eq or attr not in fields:
                known = ", ".join(f.replace("_", "-") for f in fields) or "none"
                raise SpecError(f"pass {name!r} has no option {key!r}; its options: {known}")
            kwargs[attr] = parse_option(val, hints[attr], f"{name}{{{key}}}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"pass {name!r}: {exc}") from None


def print_pass(p: Pass) -> str:
    opts = [f"{f.replace('_', '-')}={format_option(getattr(p, f))}" for f in option_fields(type(p))]
    return p.name + ("{" + " ".join(opts) + "}" if opts else "")


# --------------------------------------------------------------------------- instruments
class Instrument:
    """Hooks around each pass; override what you need."""

    def before(self, p: Pass, graph: ir.Graph, ctx: PassContext) -> None: ...

    def after(self, p: Pass, graph: ir.Graph, ctx: PassContext, result: PassResult, seconds: float) -> None: ...

    def failed(self, p: Pass, graph: ir.Graph, ctx: PassContext, exc: BaseException) -> None: ...


class VerifyInstrument(Instrument):
    def after(self, p, graph, ctx, result, seconds):  # not again on a graph whose version did not move
        if getattr(self, "sound", None) != (graph, graph.version) and (problems := ir.verify(graph)):
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise PassError("IR verification failed: " + "; ".join(problems[:3]) + more)
        self.sound = (graph, graph.version)  # found sound (every change goes through a Graph method that bumps it)


class TimingInstrument(Instrument):
    def __init__(self, stream=None):
        self.stream = stream
        self.rows: list[tuple[str, float]] = []

    def after(self, p, graph, ctx, result, seconds):
        self.rows.append((p.name, seconds))
        if self.stream is not None:
            print(f"  {p.name:<14} {seconds * 1000:9.1f} ms", file=self.stream)


class DumpInstrument(Instrument):
    def __init__(self, names: Iterable[str], folder: str | os.PathLike):
        self.names = set(names)
        self.folder = Path(folder)
        self.count = 0

    def after(self, p, graph, ctx, result, seconds):
        self.count += 1
        if p.name in self.names:
            self.folder.mkdir(parents=True, exist_ok=True)
            text = ir.dump(graph)
            for kind in p.provides:  # the analyses this pass decided, after the IR
                if ctx.has(kind):
                    text += f"\n# {kind.__name__}\n" + render(ctx.get(kind))
            ir.save_bytes(text.encode(), self.folder / f"{self.count:02d}-{p.name}.txt")


# --------------------------------------------------------------------------- pipeline
@dataclass
class Pipeline:
    passes: list[Pass]

    @classmethod
    def parse(cls, spec: str) -> "Pipeline":
        items = [i for i in _split_top(spec.strip(), ",") if i.strip()]
        if not items:
            raise SpecError("empty pass spec")
        return cls([parse_pass(i) for i in items])

    def spec(self) -> str:
        return ",".join(print_pass(p) for p in self.passes)

    def check(self, available: Iterable[type] = ()) -> None:
        """Every pass's requirements must be provided by an earlier pass (or be available)."""
        have = set(available)
        for i, p in enumerate(self.passes):
            for need in p.requires:
                if need not in have:
                    providers = sorted(n for n, c in REGISTRY.items() if need in c.provides)
                    hint = f"; add {' or '.join(repr(x) for x in providers)} before it" if providers else ""
                    raise SpecError(f"pass {p.name!r} requires {need.__name__}, which no earlier pass provides{hint}")
            have.update(p.provides)

    def run(self, graph: ir.Graph, ctx: PassContext | None = None,
            instruments: Iterable[Instrument] = (), verify: bool = True) -> PassContext:
        ctx = ctx or PassContext()
        self.check(ctx.analyses.keys())
        hooks = list(instruments) + ([VerifyInstrument()] if verify else [])
        ctx.report.setdefault("passes", [])
        done: list[str] = []
        with fewer_collections():  # passes/base.py
            for p in self.passes:
                for h in hooks:
                    h.before(p, graph, ctx)
                start = time.perf_counter()
                try:
                    result = p.run(graph, ctx)
                    seconds = time.perf_counter() - start
                    if result.changed:
                        ctx.invalidate(keep=p.provides + p.preserves)
                    for h in hooks:
                        h.after(p, graph, ctx, result, seconds)
                except Exception as exc:
                    for h in hooks:
                        h.failed(p, graph, ctx, exc)
                    before = ", ".join(done) if done else "none"
                    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise PipelineError(f"pass {p.name!r} failed (after: {before}): {msg}") from exc
                ctx.report["passes"].append({"name": p.name, "seconds": round(seconds, 6),
                                             "changed": result.changed, "stats": result.stats,
                                             "notes": result.notes})
                done.append(p.name)
        return ctx


# --------------------------------------------------------------------------- API
@dataclass
class PruneResult:
    model: onnx.ModelProto
    report: dict
    external: frozenset[str] = frozenset()
    original: onnx.ModelProto | None = None  # the model as read (a caller compares without reading it again)
    weights: dict = dataclasses.field(default_factory=dict)  # original's large weights when it holds none (ir.hollow)


open_model = opened(ir.open_model)  # the API's (cli, workflows); below ORT's opsets: converted up


def build_spec(ratio: float = 0.5, criterion: str = "l1", scope: str = "tree", ort: bool = True) -> str:
    validate = "validate" if ort else "validate{ort=false}"
    return (f"tag,trees,classify,score{{criterion={criterion} scope={scope}}},"
            f"mask{{ratio={ratio!r}}},slice,infer-shapes,{validate}")


@reused_sessions()  # one ONNX Runtime session for the runs of one light model (passes/runtime.py)
def prune(model_or_path, ratio: float = 0.5, criterion: str = "l1", scope: str = "tree",
          passes: str | None = None, verify: bool = True, seed: int = 0,
          instruments: Iterable[Instrument] = (), sample_inputs: dict | None = None,
          train_data=None, val_data=None, calib_data=None, ratios: dict | None = None,
          target_flops: float = 0.0, target_params: float = 0.0, rank: str | None = None,
          max_ratio: float | None = None, heads: float | None = None, stream: float | None = None,
          round_to: int | None = None, input_shapes: dict | None = None, recover: str | None = None,
          keep_io: bool = False, gqa: str | None = None) -> PruneResult:
    """Prune a model (``onnx.ModelProto`` or a path). Returns the pruned model and the report.

    ``passes`` (a spec) replaces the default pipeline built from ratio/criterion/scope; ``train_data`` /
    ``val_data`` feed a ``finetune`` pass: appended to the default one, required in a given spec; ``calib_data``
    feeds data criteria (hrank, hrank-star, taylor, recon) and ``recover`` ("bias,bn[,ls]": a pass after
    ``validate``, fit without labels). ``ratios`` (root -> ratio, e.g. a sensitivity plan), ``target_flops``
    / ``target_params`` (fraction to remove), ``rank`` (layer/global), ``max_ratio``, ``heads``, ``stream``
    (attention heads', residual-stream ratios) and ``round_to`` set every ``mask`` pass. A target is checked
    by the real count after slicing; off by >0.5%, the mask is re-solved (at most 3 times); ``target`` says
    what was met. Nothing unproven is shipped: if the mask-equivalence check fails, the groups that fail it
    alone are left whole (with the reason), the rest pruned again. ``sample_inputs`` / ``input_shapes``
    feed every run (``passes.inputs``); ``keep_io`` refuses changing an input or output shape; ``gqa`` (trees)."""
    tune = ",finetune" if train_data is not None and passes is None else ""  # default pipeline, then tuning
    pipe = Pipeline.parse(passes if passes is not None else build_spec(ratio, criterion, scope) + tune)
    check_tuning(pipe.passes, train_data, val_data)
    pipe = Pipeline(with_recover(with_mask_options(pipe.passes, ratios, target_flops, target_params, rank,
                                                   max_ratio, heads, stream, round_to, keep_io, gqa), recover))
    given, external, where, weights = open_model(model_or_path, hollowed=True)  # large weights never decoded
    runs = any(isinstance(p, ValidatePass) and p.ort for p in pipe.passes)
    check_input(given, where, runs)
    check_ratios(given, ratios, where)
    if weights and subgraphs.branch_bodies(given):  # bodies are cut out of the whole model
        given, weights = ir.filled(given, weights), {}
    model, branches = subgraphs.prune_branches(given, lambda body, feeds, shapes: prune(  # If bodies: models of their own
        body, ratio, criterion, scope, passes, verify, seed, sample_inputs=feeds, target_flops=target_flops,
        target_params=target_params, rank=rank, max_ratio=max_ratio, heads=heads, stream=stream,
        round_to=round_to, input_shapes=shapes, keep_io=keep_io, gqa=gqa), sample_inputs, input_shapes)
    model, weights = (model, weights) if model is given and weights else ir.hollow(model)  # one copy, shared
    given = given if branches or given is model_or_path else model  # a file's: its whole proto freed now
    sample_inputs = resolve_inputs(model, where, seed, sample_inputs, input_shapes, probe=runs,
                                   run=original_probe(model, weights))  # a session validate's run reuses
    run, analyse = _runner(model, weights, seed, sample_inputs, list(instruments), verify, (train_data, val_data, calib_data))
    try:
        graph, ctx = run(pipe.passes)
        unproven: dict[str, str] = {}
    except PipelineError as exc:
        if not isinstance(exc.__cause__, EquivalenceError) or not has_mask(pipe.passes):
            raise
        unproven = unproven_groups(pipe.passes, run, analyse, exc)
        pipe = Pipeline(with_ignored(pipe.passes, sorted(unproven)))
        graph, ctx = run(pipe.passes)
    graph, ctx, kept, target = meet_target(pipe.passes, model, run, graph, ctx, weights)
    pipe = Pipeline(kept)
    graph.props.metadata_props[SPEC_METADATA_KEY] = pipe.spec()
    out = ir.raise_model(graph)
    record = ctx.analyses.get(SliceRecord)
    if record is not None:
        groups = [dict(g) for g in record.groups]
    elif Patterns in ctx.analyses and Trees in ctx.analyses:
        groups = list(group_reports(ctx.get(Patterns), None, ctx.get(Trees)))
    else:
        groups = []
    for g in groups:
        why = [unproven[r] for r in g["roots"] if r in unproven]
        if why:
            g["reason"] = why[0]
    before = ir.lower(model, weights)
    report = {
        "model": where,
        "spec": pipe.spec(),
        "params_before": count_params(before), "params_after": count_params(graph),
        "flops_before": count_flops(before, ctx.original_shapes), "flops_after": count_flops(graph, ctx=ctx),
        "groups": groups,
        "passes": ctx.report["passes"],
        "verified": ctx.report["verified"],
        "max_abs_diff": ctx.report["max_abs_diff"], **interface_shapes(model, out),  # a KV cache that shrank
        **({} if any(p.name == "validate" for p in pipe.passes) else {"verified": None, "proof": "not run"}),
        "inputs": sample_inputs.report(),
    }
    report.update({k: ctx.report[k] for k in ("recovery", "finetune") if k in ctx.report})
    report.update({"target": target} if target is not None else {})
    return PruneResult(out, subgraphs.merge_reports(report, branches, out), external & set(graph.initializers),
                       given, weights if given is model else {})


class _OriginalShapes(Instrument):
    """Keeps the shapes ``tag`` established while the graph was still the model as given, so the
    report counts the original's FLOPs on them (one source for shapes, no second ORT run)."""

    def __init__(self, version: int):
        self.version = version

    def after(self, p, graph, ctx, result, seconds):
        if ctx.original_shapes is None and isinstance(p, TagPass) and graph.version == self.version:
            ctx.original_shapes = ctx.get(Tags).shapes


def _runner(model, weights, seed, sample_inputs, instruments, verify, data):
    """``run(passes, quiet=False)``: the passes on a fresh lowering of ``model`` (its ``weights`` shared),
    with this call's options; ``quiet``: no instruments, ``ir.verify`` on (a trial of ``passes.reruns``)."""
    def run(passes, quiet=False):
        graph = lower_input(model, weights)
        ctx = PassContext(original=model, weights=weights, seed=seed, **run_inputs(sample_inputs),
                          train_data=data[0], val_data=data[1], calib_data=data[2])
        ctx.report.update(verified=False, max_abs_diff=None)
        hooks = [_OriginalShapes(graph.version)] + ([] if quiet else instruments)
        Pipeline(list(passes)).run(graph, ctx, hooks, verify=quiet or verify)
        return graph, ctx

    def analyse(passes):
        return Pipeline(list(passes)).run(lower_input(model, weights), PassContext(
            original=model, weights=weights, seed=seed, **run_inputs(sample_inputs), calib_data=data[2]))
    return run, analyse


def prune_graphsurgeon(graph, **kwargs):
    """onnx-graphsurgeon ``Graph`` in (``prune``'s keywords), a new ``Graph`` and the report out."""
    import onnx_graphsurgeon as gs

    result = prune(gs.export_onnx(graph), **kwargs)
    return gs.import_onnx(result.model), result.report


def inspect(model_or_path, sample_inputs: dict | None = None, input_shapes: dict | None = None, seed: int = 0) -> dict:
    """Tags, trees with their pattern, groups, and what blocks each group left alone (inputs as in ``prune``)."""
    model, _, where, weights = open_model(model_or_path, hollowed=True)
    check_input(model, where, runs=False)
    proof = resolve_inputs(model, where, seed, sample_inputs, input_shapes, probe=False)
    ctx = Pipeline.parse(ANALYSIS_SPEC).run(lower_input(model, weights), PassContext(seed=seed, **run_inputs(proof)))
    tags, trees, patterns = ctx.get(Tags), ctx.get(Trees), ctx.get(Patterns)
    pattern_of = {r: g.pattern for g in patterns.groups for r in g.roots}
    roles: dict[str, int] = {}
    for t in tags.by_node.values():
        roles[t.role] = roles.get(t.role, 0) + 1
    return {
        "model": where,
        "roles": roles,
        "tags": {t.node: {"op": t.op_type, "role": t.role, "root": t.root, "leaf": t.leaf}
                 for t in tags.by_node.values()},
        "barriers": [{"node": t.node, "op": t.op_type, "reason": t.reason}
                     for t in tags.by_node.values() if t.role == "barrier"],
        "trees": [{"root": t.root, "pattern": pattern_of.get(t.root), "leaves": list(t.leaves),
                   "blockers": list(t.blockers), "edges": [list(e) for e in t.edges]}
                  for t in trees.trees],
        "groups": list(inspect_reports(patterns, trees)),
        "inputs": proof.report(),
    }
