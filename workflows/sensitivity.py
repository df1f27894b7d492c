"""Sensitivity analysis: how much validation accuracy each group costs when pruned alone.

For every prunable group and every ratio of a grid (0.1 … 0.9), the model is pruned with only
that group's roots at that ratio (``pipeline.prune`` with ``ratios``, proven by the
mask-equivalence check like any prune) and its top-1 accuracy measured (``finetune.evaluate``),
without fine-tuning. A *plan* for an accuracy budget gives each group the largest ratio of the
grid whose drop, and the drop of every smaller ratio, stays within ``budget`` points of the
unpruned accuracy (0 when even the smallest is over: the plan names it, so ``prune``'s default
ratio does not apply to it); ``prune --ratios plan.json`` takes it. The drops are measured one group at a
time: pruning all groups at once by the plan can lose more than the budget.

Plan file (JSON)::

    {"budget": 1.0, "baseline": 0.9805, "criterion": "l1", "scope": "tree",
     "ratios": {"/stem/Conv": 0.5, ...}, "groups": [{"id": 0, "roots": [...], "accuracy": {...}}]}

``read_plan`` also takes a flat ``{"node": ratio}`` object.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import ir
import pipeline
from passes import progress
from passes.analyses import Patterns
from passes.base import PassError
from passes.finetune import as_batches, check_data, evaluate, input_dtype
from passes.infer_shapes import lower_input
from passes.inputs import resolve_inputs, run_inputs
from workflows import figures

STEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class PlanError(ValueError):
    """A ratio plan file that cannot be used; the message is one line."""


@dataclass
class Sensitivity:
    baseline: float
    steps: tuple[float, ...]
    groups: list[dict] = field(default_factory=list)   # id, pattern, roots, channels, accuracy {step: acc}
    criterion: str = "l1"
    scope: str = "tree"
    warning: str | None = None    # the baseline is at or near chance: its drops mean nothing


def check_val(model: onnx.ModelProto, val: Any):
    """Validation batches, checked against the classifier's input and output before any work."""
    graph = ir.lower(model)
    real = [v for v in graph.inputs if graph.initializer(v.name) is None]
    out_shape = graph.outputs[0].shape or ()
    if len(out_shape) != 2:
        raise PassError(f"sensitivity needs a classifier with [N, classes] logits; output "
                        f"{graph.outputs[0].name!r} has shape {list(out_shape)}")
    batches = as_batches(val, 256, "validation data")
    n_classes = out_shape[1] if isinstance(out_shape[1], int) else None
    check_data(batches, real[0].shape or () if real else (), n_classes, "ce", out_shape,
               input_dtype(real[0]) if real else np.float32)
    return batches


def analyze(model: onnx.ModelProto, val: Any, steps: tuple[float, ...] = STEPS, criterion: str = "l1",
            scope: str = "tree", seed: int = 0, calib_data: Any = None, stream=None,
            sample_inputs: dict | None = None, input_shapes: dict | None = None) -> Sensitivity:
    """Each group pruned alone at each ratio; ``sample_inputs`` / ``input_shapes`` feed every
    run of the model (as in ``pipeline.prune``)."""
    batches = check_val(model, val)
    baseline = evaluate(model, batches)
    proof = resolve_inputs(model, "the model", seed, sample_inputs, input_shapes, probe=False)
    ctx = pipeline.Pipeline.parse(pipeline.ANALYSIS_SPEC).run(lower_input(model),
                                                              pipeline.PassContext(seed=seed, **run_inputs(proof)))
    result = Sensitivity(baseline, tuple(steps), [], criterion, scope, chance_warning(model, batches, baseline))
    groups = [g for g in ctx.get(Patterns).groups if not g.blocked]
    with progress.task("sensitivity", len(groups) * len(steps), unit="prune") as bar:
        for g in groups:
            row = {"id": g.id, "pattern": g.pattern, "roots": list(g.roots), "channels": g.channels,
                   "accuracy": {}}
            for r in steps:
                pruned = pipeline.prune(model, ratio=0.0, criterion=criterion, scope=scope, seed=seed,
                                        calib_data=calib_data, ratios={root: r for root in g.roots},
                                        sample_inputs=sample_inputs, input_shapes=input_shapes)
                assert pruned.report["verified"], "sensitivity: a prune failed the mask-equivalence check"
                row["accuracy"][r] = evaluate(pruned.model, batches)
                bar.update(1, group=g.id, ratio=r)
            result.groups.append(row)
            if stream is not None:
                print(f"  group {g.id} ({g.roots[0]}): " + " ".join(f"{row['accuracy'][r]:.3f}" for r in steps),
                      file=stream, flush=True)
    return result


NEAR_CHANCE = 0.05   # a baseline within 5 points of chance is no baseline


def chance_warning(model: onnx.ModelProto, batches, baseline: float) -> str | None:
    """A warning when the unpruned accuracy is zero or at most 5 points above chance (the larger
    of 1/classes and the most frequent label's share): the model is untrained or the labels are
    not its classes, so every drop is ~0 and a plan would allow the most pruning everywhere."""
    labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in batches.batches])
    n_classes = ir.lower(model).outputs[0].shape[1]
    counts = np.bincount(labels.astype(np.int64)) if labels.size else np.zeros(1)
    chance = max(1.0 / n_classes if isinstance(n_classes, int) and n_classes > 0 else 0.0,
                 counts.max() / max(labels.size, 1))
    if baseline > 0 and baseline > chance + NEAR_CHANCE:
        return None
    return (f"baseline top-1 {baseline:.4f} is {'zero' if baseline == 0 else 'at or near chance'} "
            f"(chance {chance:.4f}): the model looks untrained or the labels are not its classes; "
            f"the accuracy drops below mean nothing and a plan from them allows the most pruning everywhere")


def plan(result: Sensitivity, budget: float) -> dict:
    """Per root, the largest grid ratio whose accuracy drop (and every smaller ratio's) is
    within ``budget`` percentage points."""
    ratios: dict[str, float] = {}
    for g in result.groups:
        best = 0.0
        for r in sorted(result.steps):
            if 100.0 * (result.baseline - g["accuracy"][r]) > budget + 1e-9:
                break
            best = r
        ratios.update({root: best for root in g["roots"]})  # 0: kept whole, not the default ratio
    return {"budget": budget, "baseline": result.baseline, "criterion": result.criterion,
            "scope": result.scope, "ratios": ratios, **({"warning": result.warning} if result.warning else {}),
            "groups": [{**g, "accuracy": {f"{r:g}": a for r, a in g["accuracy"].items()}}
                       for g in result.groups]}


def format_table(result: Sensitivity, the_plan: dict | None = None) -> str:
    head = f"{'group':<6} {'first root':<28} {'ch':>4} " + " ".join(f"{r:>6g}" for r in result.steps)
    if the_plan is not None:
        head += "   plan"
    lines = ([f"WARNING: {result.warning}"] if result.warning else []) + [
        f"baseline top-1 {result.baseline:.4f} ({result.criterion}, {result.scope} scope); "
        f"accuracy drop in points when pruning one group alone:", head]
    for g in result.groups:
        drops = [100.0 * (result.baseline - g["accuracy"][r]) for r in result.steps]
        line = f"{g['id']:<6} {g['roots'][0][-28:]:<28} {g['channels']:>4} " + " ".join(f"{d:>6.2f}" for d in drops)
        if the_plan is not None:
            line += f"   {the_plan['ratios'].get(g['roots'][0], 0.0):g}"
        lines.append(line)
    return "\n".join(lines)


def plot(result: Sensitivity, path, keep: bool = False):
    """A PNG of accuracy against ratio, a line per group, to ``path`` (a path or a binary file);
    ``keep``: return the figure (for tests)."""
    plt = figures.pyplot()

    n = max(len(result.groups), 1)
    fig, ax = plt.subplots(figsize=(7 + 2.5 * (1 + (n - 1) // 24), 4.5))
    for i, g in enumerate(result.groups):   # n distinct colours, never repeating; marker by decade
        ax.plot(result.steps, [100 * g["accuracy"][r] for r in result.steps], color=group_colour(i, n),
                marker="os^vD<>ph*"[(i // 10) % 10], markersize=4, linewidth=1.2,
                label=f"{g['id']}: {g['roots'][0].strip('/').replace('/', '.')[:28]}")
    ax.axhline(100 * result.baseline, color="k", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel("ratio of the group's channels removed (that group alone)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"sensitivity ({result.criterion}, {result.scope} scope, no fine-tuning)")
    ax.grid(alpha=0.3)
    # the legend beside the axes, never over the lines
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              ncol=1 + (n - 1) // 24, frameon=False)
    return figures.finish(fig, path, keep)


def group_colour(i: int, n: int) -> tuple:
    """The ``i``-th of ``n`` colours, all distinct: tab10/tab20 while they last, then evenly
    spaced hues (HSV) with alternating lightness."""
    import matplotlib

    if n <= 10:
        return matplotlib.colormaps["tab10"](i)
    if n <= 20:
        return matplotlib.colormaps["tab20"](i)
    import colorsys
    h = (i * 0.618033988749895) % 1.0          # golden-ratio hues: neighbours far apart
    r, g, b = colorsys.hls_to_rgb(h, 0.35 + 0.25 * (i % 3) / 2, 0.8)
    return (r, g, b, 1.0)


def read_plan(path: str | os.PathLike) -> dict[str, float]:
    """Root node -> ratio from a plan file (``{"ratios": {...}}`` or a flat object)."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: no such ratio plan file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not JSON ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("ratios"), dict):
        data = data["ratios"]
    if not isinstance(data, dict):
        raise PlanError(f"{path}: expected an object of node -> ratio (or {{\"ratios\": {{...}}}})")
    out: dict[str, float] = {}
    for node, r in data.items():
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 <= r < 1:
            raise PlanError(f"{path}: ratio of {node!r} must be a number in [0, 1), got {r!r}")
        out[str(node)] = float(r)
    return out
