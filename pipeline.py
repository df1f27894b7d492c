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
- ``prune()`` is the API; ``main()`` the ``onnxpruner`` command line (exit 0 ok, 2 usage, 1 other
  failure, one ``error:`` line, nothing written at ``-o`` on failure, the input never modified).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import onnx

import ir
from passes.analyses import Masks, Patterns, SliceRecord, Tags, Trees, render
from passes.base import Pass, PassContext, PassError, PassResult
from passes.classify import ClassifyPass
from passes.finetune import DataError, FinetunePass, TrainConfig, finetune
from passes.cost import count_flops, count_params
from passes.infer_shapes import InferShapesPass
from passes.mask import MaskPass
from passes.score import ScorePass
from passes.slice import SlicePass, group_reports
from passes.tag import TagPass
from passes.trees import TreesPass
from passes.validate import EquivalenceError, ValidatePass

DEFAULT_SPEC = ("tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5},"
                "slice,infer-shapes,validate")
ANALYSIS_SPEC = "tag,trees,classify"
SPEC_METADATA_KEY = "onnxpruner.spec"


class SpecError(ValueError):
    """A malformed spec, unknown pass or option, or an option value out of range (exit 2)."""


class PipelineError(RuntimeError):
    """A pass failed on this model; the message names it and the passes before it (exit 1)."""


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
             ValidatePass, FinetunePass):
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


def _option_fields(cls: type[Pass]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


_PLAIN_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _option_types(cls: type[Pass], fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    """Option types of a pass; a user's pass defined where its string annotations cannot be
    resolved (a script, exec'd code) still gets its plain types."""
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {n: _PLAIN_TYPES.get(f.type, f.type) if isinstance(f.type, str) else f.type
                for n, f in fields.items()}


def _convert(text: str, hint, where: str):
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if hint in (int, float, str):
            return hint(text)
        if origin is tuple:
            return tuple(t for t in text.split(",") if t)
        if origin is dict:
            out = {}
            for item in (t for t in text.split(",") if t):
                key, _, val = item.rpartition(":")
                if not key:
                    raise ValueError(item)
                out[key] = float(val)
            return out
    except ValueError:
        raise SpecError(f"{where}: cannot read {text!r} as {getattr(hint, '__name__', hint)}") from None
    raise SpecError(f"{where}: unsupported option type {hint}")


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v:g}" for k, v in sorted(value.items()))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parse_pass(item: str) -> Pass:
    item = item.strip()
    name, brace, rest = item.partition("{")
    name = name.strip()
    if name not in REGISTRY:
        raise SpecError(f"unknown pass {name!r}; known passes: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    fields = _option_fields(cls)
    hints = _option_types(cls, fields)
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
            kwargs[attr] = _convert(val, hints[attr], f"{name}{{{key}}}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"pass {name!r}: {exc}") from None


def print_pass(p: Pass) -> str:
    opts = [f"{f.replace('_', '-')}={_format(getattr(p, f))}" for f in _option_fields(type(p))]
    return p.name + ("{" + " ".join(opts) + "}" if opts else "")


# --------------------------------------------------------------------------- instruments
class Instrument:
    """Hooks around each pass; override what you need."""

    def before(self, p: Pass, graph: ir.Graph, ctx: PassContext) -> None: ...

    def after(self, p: Pass, graph: ir.Graph, ctx: PassContext, result: PassResult, seconds: float) -> None: ...

    def failed(self, p: Pass, graph: ir.Graph, ctx: PassContext, exc: BaseException) -> None: ...


class VerifyInstrument(Instrument):
    def after(self, p, graph, ctx, result, seconds):
        problems = ir.verify(graph)
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise PassError("IR verification failed: " + "; ".join(problems[:3]) + more)


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
            (self.folder / f"{self.count:02d}-{p.name}.txt").write_text(text)


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


def _open(model_or_path) -> tuple[onnx.ModelProto, frozenset[str], str]:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, frozenset(), "<model>"
    model, external = ir.load(model_or_path)
    return model, external, str(model_or_path)


def check_input(model: onnx.ModelProto, where: str) -> None:
    """onnx.checker on the model's structure. Large weights are declared as typed inputs instead
    of being serialized into the check (their dims and types are still checked when lowered)."""
    try:
        onnx.checker.check_model(ir.skeleton(model))
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ir.ModelLoadError(f"{where}: invalid ONNX model ({text[0] if text else type(exc).__name__})") from None


def build_spec(ratio: float = 0.5, criterion: str = "l1", scope: str = "tree", ort: bool = True) -> str:
    validate = "validate" if ort else "validate{ort=false}"
    return (f"tag,trees,classify,score{{criterion={criterion} scope={scope}}},"
            f"mask{{ratio={ratio!r}}},slice,infer-shapes,{validate}")


def prune(model_or_path, ratio: float = 0.5, criterion: str = "l1", scope: str = "tree",
          passes: str | None = None, verify: bool = True, seed: int = 0,
          instruments: Iterable[Instrument] = (), sample_inputs: dict | None = None,
          train_data=None, val_data=None, calib_data=None, ratios: dict | None = None,
          target_flops: float = 0.0, target_params: float = 0.0, rank: str | None = None,
          max_ratio: float | None = None, heads: float | None = None) -> PruneResult:
    """Prune a model (``onnx.ModelProto`` or a path). Returns the pruned model and the report.

    ``passes`` (a spec) replaces the default pipeline built from ratio/criterion/scope;
    ``train_data`` / ``val_data`` feed a ``finetune`` pass at the end of it; ``calib_data``
    feeds data criteria (hrank, hrank-star, taylor). ``ratios`` (root node -> ratio, e.g. a
    sensitivity plan), ``target_flops`` / ``target_params`` (fraction to remove), ``rank``
    (layer/global), ``max_ratio`` and ``heads`` (the ratio of attention heads removed, apart
    from the channel ratio) set the options of every ``mask`` pass. A target is
    checked by the real count after slicing; when the prediction is off by more than 0.5%,
    the mask is re-solved for the corrected target (at most 3 times) and the report's
    ``target`` says what was met.
    Nothing unproven is shipped: if the mask-equivalence check fails, each pruned group is tried
    alone, the groups that fail it are left alone (their reason goes in the report), and the rest
    is pruned again and re-checked."""
    pipe = Pipeline.parse(passes if passes is not None else build_spec(ratio, criterion, scope))
    pipe = _with_mask_options(pipe, ratios, target_flops, target_params, rank, max_ratio, heads)
    model, external, where = _open(model_or_path)
    check_input(model, where)
    if ratios:
        missing = sorted(set(ratios) - {n.name for n in model.graph.node})
        if missing:
            raise SpecError(f"ratios name node(s) not in {where}: {', '.join(missing[:5])}"
                            + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    instruments = list(instruments)
    data = (train_data, val_data, calib_data)
    try:
        graph, ctx = _run(pipe, model, seed, sample_inputs, instruments, verify, data)
        unproven: dict[str, str] = {}
    except PipelineError as exc:
        if not isinstance(exc.__cause__, EquivalenceError) or not _has_mask(pipe):
            raise
        unproven = _unproven_groups(pipe, model, seed, sample_inputs, exc, data)
        pipe = _with_ignored(pipe, sorted(unproven))
        graph, ctx = _run(pipe, model, seed, sample_inputs, instruments, verify, data)
    graph, ctx, pipe, target = _meet_target(pipe, model, seed, sample_inputs, instruments, verify,
                                            data, graph, ctx)
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
    before = ir.lower(model)
    report = {
        "model": where,
        "spec": pipe.spec(),
        "params_before": count_params(before), "params_after": count_params(graph),
        "flops_before": count_flops(before), "flops_after": count_flops(graph),
        "groups": groups,
        "passes": ctx.report["passes"],
        "verified": ctx.report["verified"],
        "max_abs_diff": ctx.report["max_abs_diff"],
    }
    if "finetune" in ctx.report:
        report["finetune"] = ctx.report["finetune"]
    if target is not None:
        report["target"] = target
    return PruneResult(out, report, external & set(graph.initializers))


def _with_mask_options(pipe: Pipeline, ratios, target_flops, target_params, rank, max_ratio,
                       heads=None) -> Pipeline:
    """Every ``mask`` pass with the API's/CLI's ratio table, target and ranking (when given)."""
    changes: dict[str, Any] = {}
    if ratios:
        changes["ratios"] = {str(k): float(v) for k, v in ratios.items()}
    if target_flops:
        changes["target_flops"] = float(target_flops)
    if target_params:
        changes["target_params"] = float(target_params)
    if rank is not None:
        changes["rank"] = rank
    elif target_flops or target_params:
        changes["rank"] = "global"
    if max_ratio is not None:
        changes["max_ratio"] = float(max_ratio)
    if heads is not None:
        changes["heads"] = float(heads)
    if not changes:
        return pipe
    try:
        return Pipeline([dataclasses.replace(p, **changes) if isinstance(p, MaskPass) else p
                         for p in pipe.passes])
    except (ValueError, TypeError) as exc:
        raise SpecError(f"pass 'mask': {exc}") from None


TARGET_TOLERANCE = 0.01   # a target is met when |achieved - asked| <= 1 point of the original


def _meet_target(pipe, model, seed, sample_inputs, instruments, verify, data, graph, ctx):
    """Check a mask target by the real count after slicing; re-solve with the error corrected
    when the cost model's prediction missed by more than half the tolerance."""
    masks = [p for p in pipe.passes if isinstance(p, MaskPass) and p.target is not None]
    if not masks or not _sliced(pipe):
        return graph, ctx, pipe, None
    kind, goal = masks[-1].target
    count = count_flops if kind == "flops" else count_params
    total = count(ir.lower(model))

    def achieved(g) -> float:
        return 1.0 - count(g) / total if total else 0.0

    best = (abs(achieved(graph) - goal), graph, ctx, pipe)
    asked = goal
    for _ in range(3):
        if best[0] <= TARGET_TOLERANCE / 2:
            break
        asked = min(0.999, max(0.0, asked + goal - achieved(best[1])))
        field_name = f"target_{kind}"
        trial = Pipeline([dataclasses.replace(p, **{field_name: asked}) if isinstance(p, MaskPass) else p
                          for p in pipe.passes])
        try:
            g2, c2 = _run(trial, model, seed, sample_inputs, instruments, verify, data)
        except PipelineError:
            break
        if abs(achieved(g2) - goal) < best[0]:
            best = (abs(achieved(g2) - goal), g2, c2, trial)
    _, graph, ctx, pipe = best
    got = achieved(graph)
    predicted = ctx.report.get("target", {}).get("predicted_ratio")
    target = {"kind": kind, "reduction": goal, "achieved": round(got, 6),
              "predicted_reduction": None if predicted is None else round(1.0 - predicted, 6),
              "met": abs(got - goal) <= TARGET_TOLERANCE}
    return graph, ctx, pipe, target


def _sliced(pipe: Pipeline) -> bool:
    return any(isinstance(p, SlicePass) for p in pipe.passes)


def _run(pipe: Pipeline, model, seed, sample_inputs, instruments, verify, data=(None, None, None)):
    graph = ir.lower(model)
    ctx = PassContext(original=model, seed=seed, sample_inputs=sample_inputs,
                      train_data=data[0], val_data=data[1], calib_data=data[2])
    ctx.report.update(verified=False, max_abs_diff=None)
    pipe.run(graph, ctx, instruments, verify=verify)
    return graph, ctx


def _has_mask(pipe: Pipeline) -> bool:
    return any(isinstance(p, MaskPass) for p in pipe.passes)


def _with_ignored(pipe: Pipeline, roots: list[str]) -> Pipeline:
    return Pipeline([dataclasses.replace(p, ignore=tuple(dict.fromkeys(p.ignore + tuple(roots))))
                     if isinstance(p, MaskPass) else p for p in pipe.passes])


def _unproven_groups(pipe: Pipeline, model, seed, sample_inputs, failure: PipelineError,
                     data=(None, None, None)) -> dict[str, str]:
    """Root -> reason for every group whose pruning alone fails the mask-equivalence check."""
    graph = ir.lower(model)
    last_mask = max(i for i, p in enumerate(pipe.passes) if isinstance(p, MaskPass))
    ctx = Pipeline(pipe.passes[:last_mask + 1]).run(graph, PassContext(original=model, seed=seed,
                                                                       calib_data=data[2]))
    patterns, masks = ctx.get(Patterns), ctx.get(Masks)
    pruned = [g for g in patterns.groups if g.id in masks.kept and len(masks.kept[g.id]) < g.channels]
    all_roots = [r for g in pruned for r in g.roots]
    unproven: dict[str, str] = {}
    for g in pruned:
        others = [r for r in all_roots if r not in g.roots]
        try:
            _run(_with_ignored(pipe, others), model, seed, sample_inputs, [], True, data)
        except PipelineError as exc:
            if not isinstance(exc.__cause__, EquivalenceError):
                raise
            reason = f"left alone: pruning it fails the mask-equivalence check ({exc.__cause__})"
            unproven.update({r: reason for r in g.roots})
    if not unproven:  # only the combination fails: nothing can be shipped as proven
        raise failure
    return unproven


def prune_graphsurgeon(graph, **kwargs):
    """The adapter for compilers that hold an onnx-graphsurgeon ``Graph``: prune it (same keyword
    arguments as ``prune``) and get a new ``Graph`` back, plus the report."""
    import onnx_graphsurgeon as gs

    result = prune(gs.export_onnx(graph), **kwargs)
    return gs.import_onnx(result.model), result.report


def inspect(model_or_path) -> dict:
    """Tags, trees with their pattern, groups, and what blocks each group left alone."""
    model, _, where = _open(model_or_path)
    check_input(model, where)
    graph = ir.lower(model)
    ctx = Pipeline.parse(ANALYSIS_SPEC).run(graph, PassContext())
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
        "groups": list(group_reports(patterns, None, trees)),
    }


def trees_to_dot(info: dict) -> str:
    lines = ["digraph trees {", "  rankdir=LR;"]
    for i, t in enumerate(info["trees"]):
        lines.append(f'  subgraph cluster_{i} {{ label="{t["root"]} ({t["pattern"]})";')
        for a, b in t["edges"]:
            lines.append(f'    "{i}:{a}" -> "{i}:{b}";')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line
class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="onnxpruner", description="Structured channel pruning for ONNX models.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("prune", help="prune a model")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--criterion", default="l1")
    p.add_argument("--scope", default="tree", choices=["tree", "node"])
    p.add_argument("--passes", help="a pass spec replacing the default pipeline")
    p.add_argument("--report", help="write the report JSON here")
    p.add_argument("--no-verify", action="store_true", help="skip ir.verify after each pass")
    p.add_argument("--time-passes", action="store_true")
    p.add_argument("--dump-after", default="", help="comma-separated pass names")
    p.add_argument("--dump-dir", default="onnxpruner-dumps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib", help="calibration data for hrank/hrank-star/taylor: .npz with x (and y)")
    p.add_argument("--ratios", help="a JSON ratio plan: node -> ratio (e.g. from `sensitivity -o`)")
    p.add_argument("--target-flops", type=float, default=0.0, help="remove this fraction of the FLOPs")
    p.add_argument("--target-params", type=float, default=0.0, help="remove this fraction of the parameters")
    p.add_argument("--rank", choices=["layer", "global"], help="per-layer ratio or one global ranking "
                   "(default: layer; global with a target)")
    p.add_argument("--max-ratio", type=float, help="global ranking/targets: most of one group removed (0.9)")
    p.add_argument("--heads", type=float, help="ratio of attention heads removed (default: --ratio)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    s = sub.add_parser("sensitivity", help="accuracy per group at ratios 0.1..0.9, and a ratio plan")
    s.add_argument("model")
    s.add_argument("--val", required=True, help="validation data: .npz with x (float32) and y (int64)")
    s.add_argument("-o", "--output", help="write the ratio plan (JSON) for --budget here")
    s.add_argument("--budget", type=float, default=1.0, help="accuracy drop allowed per group, in points")
    s.add_argument("--plot", help="write a PNG plot of accuracy against ratio per group")
    s.add_argument("--criterion", default="l1")
    s.add_argument("--scope", default="tree", choices=["tree", "node"])
    s.add_argument("--calib", help="calibration data for data criteria")
    s.add_argument("--steps", type=float, nargs="+", default=None, help="ratios to try (default 0.1 .. 0.9)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sc = sub.add_parser("schedule", help="iterative pruning (prune -> fine-tune, N steps) or soft filter pruning")
    sc.add_argument("model")
    sc.add_argument("-o", "--output", required=True)
    sc.add_argument("--mode", default="iterative", choices=["iterative", "soft"])
    sc.add_argument("--data", required=True, help="training data: .npz with x (float32) and y")
    sc.add_argument("--val", help="validation data (.npz): accuracy per step/epoch")
    sc.add_argument("--ratio", type=float, default=0.5, help="final ratio (iterative: cumulative)")
    sc.add_argument("--target-flops", type=float, default=0.0, help="iterative: final FLOPs reduction instead of a ratio")
    sc.add_argument("--steps", type=int, default=3, help="iterative: prune -> fine-tune rounds")
    sc.add_argument("--schedule", default="linear", choices=["linear", "agp"], help="iterative: ratio growth")
    sc.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per step (soft: in all)")
    sc.add_argument("--lr", type=float, default=1e-3)
    sc.add_argument("--batch-size", type=int, default=32)
    sc.add_argument("--criterion", default=None, help="default: l1 (iterative), l2 (soft)")
    sc.add_argument("--scope", default=None, choices=["tree", "node"], help="default: tree (iterative), node (soft)")
    sc.add_argument("--calib", help="calibration data for data criteria")
    sc.add_argument("--report", help="write the history and last prune report (JSON) here")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i = sub.add_parser("inspect", help="show tags, association trees and groups")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.add_argument("--dot", help="write the association trees as Graphviz")
    i.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    f = sub.add_parser("finetune", help="fine-tune a model with ONNX Runtime training")
    f.add_argument("model")
    f.add_argument("--data", required=True, help="training data: .npz with x (float32) and y")
    f.add_argument("--val", help="validation data (.npz); the best epoch on it is kept")
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--epochs", type=int, default=3)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--loss", default="ce", choices=["ce", "mse"])
    f.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    f.add_argument("--schedule", default="cosine", choices=["cosine", "step", "constant"])
    f.add_argument("--freeze", default="", help="comma-separated initializer or node names kept fixed")
    f.add_argument("--checkpoint", help="a folder: an interrupted run resumes from it")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    b = sub.add_parser("batch", help="prune many models × variants, locally or on Ray")
    b.add_argument("models", nargs="*", help="model files (or use --plan)")
    b.add_argument("--plan", help="a JSON or YAML plan of models and variants")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--ratio", type=float, nargs="+", default=[0.5])
    b.add_argument("--criterion", nargs="+", default=["l1"])
    b.add_argument("--scope", nargs="+", default=["tree"], choices=["tree", "node"])
    b.add_argument("--jobs", type=int, default=1, help="jobs run at once (processes or Ray tasks)")
    b.add_argument("--executor", default="local", choices=["local", "ray"])
    b.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    b.add_argument("--force", action="store_true", help="redo jobs that are already done")
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    d = sub.add_parser("demo", help="digits: train a small residual CNN with ORT, prune at 0.5, fine-tune, report")
    d.add_argument("--out-dir", default="demo-output", help="where the models, report and plot go")
    d.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return ap


def _check_output(path: str, model: str | None = None) -> None:
    folder = Path(path).parent if Path(path).parent != Path("") else Path(".")
    if not folder.is_dir():
        raise UsageError(f"output folder {str(folder)!r} does not exist")
    if Path(path).is_dir():
        raise UsageError(f"{path}: is a folder, not a file path")
    if model is not None and Path(model).exists() and Path(path).resolve() == Path(model).resolve():
        raise UsageError(f"{path}: output would overwrite the input model")


def _write_text_atomic(path: str, text: str) -> None:
    ir.save_bytes(text.encode(), path)


def _cmd_prune(args) -> int:
    _check_output(args.output, args.model)
    if args.report:
        _check_output(args.report, args.model)
    if args.passes is None and not (0.0 <= args.ratio < 1.0):
        raise UsageError(f"--ratio must be in [0, 1), got {args.ratio}")
    for flag, value in (("--target-flops", args.target_flops), ("--target-params", args.target_params)):
        if not (0.0 <= value < 1.0):
            raise UsageError(f"{flag} must be in [0, 1), got {value}")
    if args.target_flops and args.target_params:
        raise UsageError("give --target-flops or --target-params, not both")
    ratios = None
    if args.ratios:
        from passes.sensitivity import PlanError, read_plan
        try:
            ratios = read_plan(args.ratios)
        except PlanError as exc:
            raise UsageError(str(exc)) from None
    if args.calib and not Path(args.calib).is_file():
        raise DataError(f"{args.calib}: no such data file")
    instruments: list[Instrument] = []
    if args.time_passes:
        instruments.append(TimingInstrument(sys.stderr))
    if args.dump_after:
        instruments.append(DumpInstrument(args.dump_after.split(","), args.dump_dir))
    result = prune(args.model, ratio=args.ratio, criterion=args.criterion, scope=args.scope,
                   passes=args.passes, verify=not args.no_verify, seed=args.seed,
                   instruments=instruments, calib_data=args.calib, ratios=ratios,
                   target_flops=args.target_flops, target_params=args.target_params,
                   rank=args.rank, max_ratio=args.max_ratio, heads=args.heads)
    ir.save(result.model, args.output, result.external)
    if args.report:
        try:
            _write_text_atomic(args.report, json.dumps(result.report, indent=2) + "\n")
        except OSError:  # all or nothing: no model at -o without its report
            Path(args.output).unlink(missing_ok=True)
            Path(args.output + ".data").unlink(missing_ok=True)
            raise
    print(_summary(result.report))
    return 0


def _summary(report: dict) -> str:
    def ratio(a, b):
        return f"{b / a:.3f}" if a else "n/a"

    pruned = sum(1 for g in report["groups"] if g.get("pruned"))
    left = [g for g in report["groups"] if not g.get("pruned") and g.get("reason")]
    lines = [f"params {report['params_before']:,} -> {report['params_after']:,} "
             f"(x{ratio(report['params_before'], report['params_after'])})",
             f"FLOPs  {report['flops_before']:,} -> {report['flops_after']:,} "
             f"(x{ratio(report['flops_before'], report['flops_after'])})",
             f"groups {pruned} pruned of {len(report['groups'])}; {len(left)} left alone",
             f"verified {report['verified']} (max abs diff {report['max_abs_diff']})"]
    if report.get("target"):
        t = report["target"]
        lines.append(f"target: remove {t['reduction']:g} of the {t['kind']}; achieved {t['achieved']:.4f} "
                     f"({'met' if t['met'] else 'NOT met'} within 1 point; predicted {t['predicted_reduction']})")
    for g in left[:10]:
        lines.append(f"  group {g['id']} ({', '.join(g['roots'][:3])}): {g['reason']}")
    if len(left) > 10:
        lines.append(f"  ... {len(left) - 10} more in the report")
    return "\n".join(lines)


def _cmd_finetune(args) -> int:
    _check_output(args.output, args.model)
    try:
        config = TrainConfig(args.epochs, args.lr, args.batch_size, args.loss, args.optimizer,
                             args.schedule, seed=args.seed, freeze=tuple(n for n in args.freeze.split(",") if n))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, external, where = _open(args.model)
    check_input(model, where)
    result = finetune(model, args.data, args.val, config, args.checkpoint)
    ir.save(result.model, args.output, external)
    last = result.history[-1] if result.history else {}
    print(f"fine-tuned {len(result.history)} epochs (resumed after {result.resumed_from}); "
          f"best epoch {result.best_epoch}; last: " +
          ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items()))
    return 0


def _cmd_batch(args) -> int:
    import batch

    if bool(args.models) == bool(args.plan):
        raise UsageError("give model files or --plan, not both (and not neither)")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    for r in args.ratio:
        if not (0.0 <= r < 1.0):
            raise UsageError(f"--ratio must be in [0, 1), got {r}")
    parent = Path(args.output).resolve().parent
    if not parent.is_dir():
        raise UsageError(f"output folder's parent {str(parent)!r} does not exist")
    try:
        if args.plan:
            plan = batch.read_plan(args.plan)
            jobs = batch.make_jobs(plan["models"], plan.get("variants", []))
        else:
            variants = [{"name": f"{c}-{s}-r{r:g}", "ratio": r, "criterion": c, "scope": s}
                        for r in args.ratio for c in args.criterion for s in args.scope]
            jobs = batch.make_jobs(args.models, variants)
    except batch.PlanError as exc:
        raise UsageError(str(exc)) from None
    result = batch.run_batch(jobs, args.output, args.executor, args.jobs, args.address, args.force)
    print(Path(result.summary_md).read_text(), end="")
    failed = sum(1 for r in result.rows if r.get("error"))
    print(f"{len(result.rows)} jobs: {len(result.rows) - failed} done, {failed} failed, "
          f"{result.skipped} already done; {result.seconds:.1f} s; summary in {result.summary_csv}")
    return 1 if failed else 0


def _cmd_inspect(args) -> int:
    if args.dot:
        _check_output(args.dot)
    info = inspect(args.model)
    if args.dot:
        _write_text_atomic(args.dot, trees_to_dot(info))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['model']}: " + ", ".join(f"{k} {v}" for k, v in sorted(info["roles"].items())))
    for b in info["barriers"]:
        print(f"  barrier {b['node']} ({b['op']}): {b['reason']}")
    for t in info["trees"]:
        blocked = f"; blocked at {', '.join(t['blockers'])}" if t["blockers"] else ""
        print(f"  tree {t['root']} ({t['pattern']}): leaves {', '.join(t['leaves']) or '-'}{blocked}")
    for g in info["groups"]:
        state = "prunable" if g.get("reason") is None or g["reason"].startswith("not selected") \
            else f"left alone: {g['reason']}"
        print(f"  group {g['id']} {g['pattern']} roots={','.join(g['roots'])} "
              f"leaves={','.join(g['leaves']) or '-'} channels={g['channels_before']} {state}")
    return 0


def _cmd_sensitivity(args) -> int:
    from passes import sensitivity

    if args.output:
        _check_output(args.output, args.model)
    if args.plot:
        _check_output(args.plot, args.model)
    if not (args.budget >= 0):
        raise UsageError(f"--budget must be a non-negative number of points, got {args.budget}")
    steps = tuple(args.steps) if args.steps else sensitivity.STEPS
    bad = [r for r in steps if not (0.0 < r < 1.0)]
    if bad:
        raise UsageError(f"--steps must be in (0, 1), got {bad[0]}")
    try:
        ScorePass(criterion=args.criterion, scope=args.scope)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, _, where = _open(args.model)
    check_input(model, where)
    result = sensitivity.analyze(model, args.val, steps, args.criterion, args.scope, args.seed,
                                 args.calib, stream=sys.stderr)
    the_plan = sensitivity.plan(result, args.budget)
    if args.plot:
        tmp = args.plot + ".tmp.png"
        sensitivity.plot(result, tmp)
        os.replace(tmp, args.plot)
    if args.output:
        _write_text_atomic(args.output, json.dumps(the_plan, indent=2) + "\n")
    print(sensitivity.format_table(result, the_plan))
    print(f"plan for a budget of {args.budget:g} points: " +
          (", ".join(f"{k} {v:g}" for k, v in the_plan["ratios"].items() if v > 0) or "nothing can be pruned"))
    return 0


def _cmd_schedule(args) -> int:
    from passes import schedules

    _check_output(args.output, args.model)
    if args.report:
        _check_output(args.report, args.model)
    if not (0.0 <= args.ratio < 1.0) or not (0.0 <= args.target_flops < 1.0):
        raise UsageError("--ratio and --target-flops must be in [0, 1)")
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.mode == "soft" and args.target_flops:
        raise UsageError("--target-flops is for --mode iterative; soft pruning takes --ratio")
    criterion = args.criterion or ("l2" if args.mode == "soft" else "l1")
    scope = args.scope or ("node" if args.mode == "soft" else "tree")
    try:
        ScorePass(criterion=criterion, scope=scope)
        config = TrainConfig(args.epochs, args.lr, args.batch_size, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model, external, where = _open(args.model)
    check_input(model, where)
    if args.mode == "iterative":
        result = schedules.iterative_prune(model, args.data, args.val, args.ratio, args.steps, args.schedule,
                                           config, criterion, scope, args.seed, args.calib,
                                           target_flops=args.target_flops, stream=sys.stderr)
    else:
        result = schedules.soft_filter_prune(model, args.data, args.val, args.ratio, config, criterion, scope,
                                             args.seed, args.calib, stream=sys.stderr)
    report = dict(result.report, schedule={"mode": args.mode, "history": result.history})
    ir.save(result.model, args.output, external & {t.name for t in result.model.graph.initializer})
    if args.report:
        try:
            _write_text_atomic(args.report, json.dumps(report, indent=2, default=str) + "\n")
        except OSError:
            Path(args.output).unlink(missing_ok=True)
            Path(args.output + ".data").unlink(missing_ok=True)
            raise
    for row in result.history:
        print("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    print(_summary(result.report))
    soft = result.report.get("soft")
    if soft is not None:
        acc = soft.get("val_acc_pruned")
        print(f"soft pruning: removed channels {'are' if soft['removed_match_last_mask'] else 'are NOT'} the last "
              f"epoch's zeroed filters" + (f"; pruned validation top-1 {acc:.4f}" if acc is not None else ""))
    return 0


def _cmd_demo(args) -> int:
    import demo

    report = demo.run(args.out_dir)
    print(demo.format_report(report))
    print(f"wrote {args.out_dir}/digits_resnet.onnx, digits_resnet.pruned.onnx, demo-report.json, demo-channels.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"prune": _cmd_prune, "inspect": _cmd_inspect, "finetune": _cmd_finetune,
                "batch": _cmd_batch, "demo": _cmd_demo, "sensitivity": _cmd_sensitivity,
                "schedule": _cmd_schedule}
    try:
        return commands[args.command](args)
    except (UsageError, SpecError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ir.ModelLoadError, PipelineError, PassError, DataError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours: still one line, the traceback behind --debug
        if args.debug:
            raise
        text = str(exc).strip().splitlines()
        print(f"error: internal error ({type(exc).__name__}: {text[0] if text else ''}); "
              f"rerun with --debug for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
