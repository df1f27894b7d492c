"""What ``prune()`` runs again after a first run of the pipeline (not a pass): a FLOPs/parameter
target re-solved by the real count, and groups left alone when their pruning fails the proof.
Also the API's mask options, set on every ``mask`` pass of a spec.

Both work on lists of passes and a ``run(passes, quiet=False) -> (graph, ctx)`` the pass manager
gives them (a fresh lowering of the model each time; ``quiet``: no instruments, ``ir.verify`` on),
which raises ``PipelineError`` when a pass fails.

- ``meet_target``: the cost model predicts the FLOPs/parameters a mask leaves; the real count
  after slicing decides. When they differ by more than half of ``TARGET_TOLERANCE``, the mask is
  solved again for the target corrected by the miss (at most 3 times); the closest run is kept.
- ``unproven_groups``: when the mask-equivalence check fails, each pruned group is tried alone;
  those that fail it are named with the reason, to be left alone (``with_ignored``). When every
  group passes alone (only the combination fails), the first failure stands: nothing unproven ships.

Example: a target of 0.5 of the FLOPs whose first run measures 0.47 removed asks the mask for
0.53 next; the run closest to 0.5 is kept and reported as ``{"kind": "flops", "reduction": 0.5,
"achieved": ..., "predicted_reduction": ..., "met": ...}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import onnx

from ir import Graph, lower

from .analyses import Masks, Patterns
from .base import Pass, PassContext, PipelineError, SpecError
from .cost import count_flops, count_params
from .mask import MaskPass
from .slice import SlicePass
from .trees import TreesPass
from .validate import EquivalenceError

Run = Callable[..., tuple[Graph, PassContext]]
TARGET_TOLERANCE = 0.01   # a target is met when |achieved - asked| <= 1 point of the original


def with_mask_options(passes: list[Pass], ratios, target_flops, target_params, rank, max_ratio,
                      heads=None, stream=None, round_to=None,
                      keep_io: bool = False, gqa: str | None = None) -> list[Pass]:
    """Every ``mask`` pass with the API's/CLI's ratio table, target and ranking (when given);
    every ``trees`` pass with ``keep-io`` when ``keep_io``, with ``gqa`` when given."""
    if keep_io:
        passes = [dataclasses.replace(p, keep_io=True) if isinstance(p, TreesPass) else p for p in passes]
    if gqa is not None:
        try:
            passes = [dataclasses.replace(p, gqa=gqa) if isinstance(p, TreesPass) else p for p in passes]
        except ValueError as exc:
            raise SpecError(f"pass 'trees': {exc}") from None
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
    if stream is not None:
        changes["stream"] = float(stream)
    if round_to is not None:
        changes["round_to"] = int(round_to)
    if not changes:
        return passes
    try:
        return [dataclasses.replace(p, **changes) if isinstance(p, MaskPass) else p for p in passes]
    except (ValueError, TypeError) as exc:
        raise SpecError(f"pass 'mask': {exc}") from None


def check_tuning(passes: list[Pass], train_data, val_data) -> None:
    """``prune()``'s training data must reach a finetune pass: never a silent no-op."""
    if val_data is not None and train_data is None:
        raise SpecError("val_data= needs train_data= (validation is for fine-tuning)")
    if train_data is not None and not any(p.name == "finetune" for p in passes):
        raise SpecError("train_data= is given but the spec has no finetune pass: add finetune{...} "
                        "at its end (or leave passes= out for the default pipeline and fine-tuning)")


def check_ratios(model: onnx.ModelProto, ratios: dict | None, where: str) -> None:
    """``prune(ratios=...)`` names nodes of the model (a sensitivity plan made for another is refused)."""
    missing = sorted(set(ratios or ()) - {n.name for n in model.graph.node})
    if missing:
        raise SpecError(f"ratios name node(s) not in {where}: {', '.join(missing[:5])}"
                        + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))


def set_mask_options(passes: list[Pass], changes: dict[str, Any]) -> list[Pass]:
    """Every ``mask`` pass with ``changes`` (field name -> value; None values are left out):
    the command line's mask flags, named as the spec's options."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        return passes
    if not any(isinstance(p, MaskPass) for p in passes):
        raise SpecError(f"{', '.join('--' + k.replace('_', '-') for k in changes)} set mask options, "
                        f"but the spec has no mask pass")
    try:
        return [dataclasses.replace(p, **changes) if isinstance(p, MaskPass) else p for p in passes]
    except (ValueError, TypeError) as exc:
        raise SpecError(f"pass 'mask': {exc}") from None


def meet_target(passes: list[Pass], model: onnx.ModelProto, run: Run, graph: Graph, ctx: PassContext,
                weights: dict | None = None):
    """Check a mask target by the real count after slicing; re-solve with the error corrected
    when the cost model's prediction missed by more than half the tolerance. Returns the
    (graph, ctx, passes) kept and the report's ``target`` (None without a target). ``weights``: the
    model's arrays (``ir.hollow``)."""
    masks = [p for p in passes if isinstance(p, MaskPass) and p.target is not None]
    if not masks or not any(isinstance(p, SlicePass) for p in passes):
        return graph, ctx, passes, None
    kind, goal = masks[-1].target
    count = count_flops if kind == "flops" else count_params
    original = lower(model, weights)
    total = count_flops(original, ctx.original_shapes) if kind == "flops" else count_params(original)

    def achieved(g) -> float:
        return 1.0 - count(g) / total if total else 0.0

    best = (abs(achieved(graph) - goal), graph, ctx, passes)
    asked = goal
    for _ in range(3):
        if best[0] <= TARGET_TOLERANCE / 2:
            break
        asked = min(0.999, max(0.0, asked + goal - achieved(best[1])))
        field_name = f"target_{kind}"
        trial = [dataclasses.replace(p, **{field_name: asked}) if isinstance(p, MaskPass) else p
                 for p in passes]
        try:
            g2, c2 = run(trial)
        except PipelineError:
            break
        if abs(achieved(g2) - goal) < best[0]:
            best = (abs(achieved(g2) - goal), g2, c2, trial)
    _, graph, ctx, passes = best
    got = achieved(graph)
    predicted = ctx.report.get("target", {}).get("predicted_ratio")
    target = {"kind": kind, "reduction": goal, "achieved": round(got, 6),
              "predicted_reduction": None if predicted is None else round(1.0 - predicted, 6),
              "met": abs(got - goal) <= TARGET_TOLERANCE}
    return graph, ctx, passes, target


def has_mask(passes: list[Pass]) -> bool:
    return any(isinstance(p, MaskPass) for p in passes)


def with_ignored(passes: list[Pass], roots: list[str]) -> list[Pass]:
    """Every ``mask`` pass leaving these roots' groups alone."""
    return [dataclasses.replace(p, ignore=tuple(dict.fromkeys(p.ignore + tuple(roots))))
            if isinstance(p, MaskPass) else p for p in passes]


def unproven_groups(passes: list[Pass], run: Run, analyse: Callable[[list[Pass]], PassContext],
                    failure: PipelineError) -> dict[str, str]:
    """Root -> reason for every group whose pruning alone fails the mask-equivalence check.
    ``analyse(passes)``: the context after the passes up to the last ``mask``."""
    last_mask = max(i for i, p in enumerate(passes) if isinstance(p, MaskPass))
    ctx = analyse(passes[:last_mask + 1])
    patterns, masks = ctx.get(Patterns), ctx.get(Masks)
    pruned = [g for g in patterns.groups if g.id in masks.kept and len(masks.kept[g.id]) < g.channels]
    all_roots = [r for g in pruned for r in g.roots]
    unproven: dict[str, str] = {}
    for g in pruned:
        others = [r for r in all_roots if r not in g.roots]
        try:
            run(with_ignored(passes, others), quiet=True)
        except PipelineError as exc:
            if not isinstance(exc.__cause__, EquivalenceError):
                raise
            reason = f"left alone: pruning it fails the mask-equivalence check ({exc.__cause__})"
            unproven.update({r: reason for r in g.roots})
    if not unproven:  # only the combination fails: nothing can be shipped as proven
        raise failure
    return unproven
