"""Pruning schedules on top of ``prune`` and ONNX Runtime training: iterative pruning and soft
filter pruning (SFP, the paper's Table V setting). Jobs built on the API, not passes.

Iterative (``iterative_prune``): ``steps`` rounds of prune -> fine-tune. The *cumulative* ratio
after step ``k`` of ``N`` follows the schedule (``linear``: ``R·k/N``; ``agp``, the cubic
schedule of Zhu & Gupta: ``R·(1 − (1 − k/N)³)``, big steps first); step ``k`` prunes the
already-pruned model by ``1 − (1 − R_k)/(1 − R_{k−1})`` so the kept fractions multiply up to
``1 − R`` (each step floors per group, so the final count can be a channel or two above one-shot
pruning's). With ``target_flops`` / ``target_params`` the cumulative *reduction* follows the
schedule instead and each step's target is taken relative to the current model's real count.
Every step is a verified ``prune`` (mask-equivalence check).

Soft (``soft_filter_prune``, He et al. 2018): fine-tune with ONNX Runtime training; after each
epoch the model's current weights are scored (any criterion and scope) and masked at ``ratio``,
and the lowest filters' root weights are set to zero in the training state. They keep being
trained, so a filter zeroed after one epoch can come back in the next. After the last epoch
the model is pruned for real: ``score{criterion=l1 scope=node}`` ranks exactly the zeroed
filters last (their l1 is 0), so the channels removed are the last epoch's soft mask; the result
records whether they matched. Deviation from SFP's paper: BatchNormalization runs in inference
form (as ``finetune`` trains it), so a zeroed filter still emits its BN bias until it is removed;
the history reports the accuracy of the zeroed model and the report that of the pruned one.
No checkpoint/resume for the soft schedule.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import pipeline
from ir import Graph, Initializer, lower, raise_model
from passes import progress
from passes.analyses import Masks, Patterns, Trees
from passes.base import PassContext, PassError
from passes.cost import count_flops, count_params
from passes.finetune import (Progress, TrainConfig, _source_initializer, as_batches, check_data, evaluate,
                             finetune, input_dtype, train_epoch, trainable_names, write_artifacts)

SCHEDULES = ("linear", "agp")


@dataclass
class ScheduleResult:
    model: onnx.ModelProto
    history: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=dict)     # the last prune's report


def cumulative(final: float, steps: int, schedule: str) -> list[float]:
    """Cumulative ratio (or reduction) after each of ``steps`` steps, ending at ``final``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if schedule == "linear":
        return [final * k / steps for k in range(1, steps + 1)]
    return [final * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


def step_ratios(cum: list[float]) -> list[float]:
    """Per-step ratios of the current model whose kept fractions multiply to ``1 - cum[-1]``."""
    out, prev = [], 0.0
    for c in cum:
        out.append(1 - (1 - c) / (1 - prev))
        prev = c
    return out


def iterative_prune(model: onnx.ModelProto, train: Any, val: Any = None, ratio: float = 0.5, steps: int = 3,
                    schedule: str = "linear", config: TrainConfig = TrainConfig(), criterion: str = "l1",
                    scope: str = "tree", seed: int = 0, calib_data: Any = None, target_flops: float = 0.0,
                    target_params: float = 0.0, stream=None, checkpoint=None, sample_inputs: dict | None = None,
                    input_shapes: dict | None = None) -> ScheduleResult:
    """``checkpoint``: a folder; each step's fine-tuning resumes from its own subfolder."""
    kind = "flops" if target_flops else "params" if target_params else None
    final = target_flops or target_params or ratio
    cum = cumulative(final, steps, schedule)
    count = {"flops": count_flops, "params": count_params}.get(kind)
    start_count = count(lower(model)) if count else None
    base = lower(model)
    params0, flops0 = count_params(base), count_flops(base)
    current, history, report, first = model, [], {}, None
    bar = progress.task("schedule", steps, unit="step")
    for k, c in enumerate(cum):
        if kind is None:
            r = step_ratios(cum)[k]
            pruned = pipeline.prune(current, ratio=r, criterion=criterion, scope=scope, seed=seed,
                                    calib_data=calib_data, sample_inputs=sample_inputs, input_shapes=input_shapes)
        else:
            now = count(lower(current))
            r = min(0.999, max(0.0, 1 - (1 - c) * start_count / now))
            pruned = pipeline.prune(current, ratio=0.0, criterion=criterion, scope=scope, seed=seed,
                                    calib_data=calib_data, sample_inputs=sample_inputs, input_shapes=input_shapes,
                                    **{f"target_{kind}": r} if r > 0 else {})
        report = pruned.report
        first = first or report
        if not report["verified"]:
            raise PassError(f"step {k + 1}: the pruned model failed the mask-equivalence check")
        tuned = finetune(pruned.model, train, val, config, stream=stream,
                         checkpoint=Path(checkpoint) / f"step-{k + 1}" if checkpoint else None)
        current = tuned.model
        row = {"step": k + 1, "step_ratio": round(r, 6), "cumulative": round(c, 6),
               "params": report["params_after"], "flops": report["flops_after"],
               "params_vs_original": round(report["params_after"] / params0, 6) if params0 else None,
               "flops_vs_original": round(report["flops_after"] / flops0, 6) if flops0 else None,
               "pruned_val_acc": evaluate(pruned.model, val) if val is not None else None,
               "val_acc": evaluate(current, val) if val is not None else None}
        history.append(row)
        bar.update(1, **{k_: v for k_, v in row.items() if k_ in ("step", "params", "val_acc")})
        if stream is not None:
            print(" ".join(f"{k_}={v}" for k_, v in row.items()), file=stream, flush=True)
    bar.close()
    return ScheduleResult(current, history, whole_run(first, report, params0, flops0, kind, final,
                                                      count(lower(current)) / start_count if count else None, steps))


def whole_run(first: dict, last: dict, params0: int, flops0: int, kind: str | None, goal: float,
              kept_fraction: float | None, steps: int) -> dict:
    """The report of a whole iterative run: totals from the original model, each group's
    channels from the original to the last step's result (pruned if any step pruned it; the
    last step's reason otherwise), and the target as the whole run met it (a step's own target
    is only its share)."""
    before = {tuple(g["roots"]): g["channels_before"] for g in first["groups"]}
    groups = []
    for g in last["groups"]:
        g = {k: v for k, v in g.items() if k != "kept"}   # indices of the last step's input
        g["channels_before"] = before.get(tuple(g["roots"]), g["channels_before"])
        g["pruned"] = g["channels_after"] < g["channels_before"]
        if g["pruned"]:
            g.pop("reason", None)
        else:
            g["reason"] = g.get("reason") or "no step removed any of its channels"
        groups.append(g)
    report = dict(last, params_before=params0, flops_before=flops0, groups=groups, steps=steps)
    report.pop("target", None)
    if kind is not None:
        achieved = 1.0 - kept_fraction
        report["target"] = {"kind": kind, "reduction": goal, "achieved": round(achieved, 6),
                            "met": abs(achieved - goal) <= 0.01, "predicted_reduction": None,
                            "steps": steps}
    return report


# ----------------------------------------------------------------------------- soft filter pruning
def soft_filter_prune(model: onnx.ModelProto, train: Any, val: Any = None, ratio: float = 0.3,
                      config: TrainConfig = TrainConfig(), criterion: str = "l2", scope: str = "node",
                      seed: int = 0, calib_data: Any = None, stream=None, sample_inputs: dict | None = None,
                      input_shapes: dict | None = None) -> ScheduleResult:
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    ort.set_default_logger_severity(3)
    graph = lower(model)
    real = [v for v in graph.inputs if graph.initializer(v.name) is None]
    if len(real) != 1:
        raise PassError(f"soft pruning needs a model with one data input, this one has {len(real)}")
    out_value = graph.outputs[0]
    out_shape = out_value.shape or ()
    if config.loss == "ce" and len(out_shape) != 2:
        raise PassError(f"loss ce needs [N, classes] logits; output {out_value.name!r} has shape {list(out_shape)}")
    n_classes = out_shape[1] if config.loss == "ce" and isinstance(out_shape[1], int) else None
    train_b = as_batches(train, config.batch_size, "training data")
    check_data(train_b, real[0].shape or (), n_classes, config.loss, out_shape, input_dtype(real[0]))
    val_b = None
    if val is not None:
        val_b = as_batches(val, config.batch_size, "validation data")
        check_data(val_b, real[0].shape or (), n_classes, config.loss, out_shape, input_dtype(real[0]))
    names = trainable_names(graph, config.freeze, out_value.name)
    if not names:
        raise PassError("soft pruning found no trainable weights in the model")
    frozen = [n for n, init in graph.initializers.items() if n not in names and init.elem_type == onnx.TensorProto.FLOAT]
    spec = f"tag,trees,classify,score{{criterion={criterion} scope={scope}}},mask{{ratio={ratio!r}}}"
    analysis = pipeline.Pipeline.parse(spec)
    folder = Path(tempfile.mkdtemp(prefix="onnxpruner-sfp-"))
    try:
        try:
            write_artifacts(model, names, frozen, config, folder, out_value.name)
            state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
            module = Module(str(folder / "training_model.onnx"), state, str(folder / "eval_model.onnx"),
                            device="cpu")
            optimizer = Optimizer(str(folder / "optimizer_model.onnx"), module)
        except Exception as exc:
            raise PassError(f"ONNX Runtime training cannot take this model: {str(exc).strip().splitlines()[0]}") from None
        history: list[dict] = []
        bar = Progress(config.epochs, len(train_b.batches), stream)
        masks = None
        for epoch in range(config.epochs):
            trained = train_epoch(module, optimizer, train_b, config, epoch, bar)
            _pull(graph, state, names)
            masks, zeroed = _zero_lowest(graph, analysis, seed, calib_data)
            for name, arr in zeroed.items():
                if name in names:
                    state.parameters[name].data = arr
            row = {"epoch": epoch + 1, "lr": config.lr_at(epoch), "loss": trained["loss"],
                   "filters_zeroed": int(sum(len(v) for v in masks.values()))}
            if val_b is not None and config.loss == "ce":
                row["val_acc_zeroed"] = evaluate(raise_model(graph), val_b)
            history.append(row)
            bar.epoch(row)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    soft = raise_model(graph)
    hard = pipeline.prune(soft, ratio=ratio, criterion="l1", scope="node", seed=seed,
                          sample_inputs=sample_inputs, input_shapes=input_shapes)
    if not hard.report["verified"]:
        raise PassError("the hard prune after soft pruning failed the mask-equivalence check")
    removed = {tuple(g["roots"]): g["channels_before"] - g["channels_after"] for g in hard.report["groups"]}
    matched = all(removed.get(tuple(roots), 0) == len(chans) for roots, chans in masks.items())
    report = dict(hard.report, soft={"history": history, "removed_match_last_mask": matched})
    if val_b is not None and config.loss == "ce":
        report["soft"]["val_acc_pruned"] = evaluate(hard.model, val_b)
    return ScheduleResult(hard.model, history, report)


def _pull(graph: Graph, state, names: list[str]) -> None:
    """The training state's current weights into the graph."""
    for name in names:
        old = graph.initializer(name)
        graph.replace_initializer(Initializer.from_array(
            name, np.asarray(state.parameters[name].data).astype(old.array.dtype).reshape(old.dims)))


def _zero_lowest(graph: Graph, analysis, seed: int, calib_data) -> tuple[dict, dict[str, np.ndarray]]:
    """Score and mask the graph's current weights; zero the removed filters of every root in the
    graph. Returns ``{group roots: removed channel indices}`` and the new arrays by initializer."""
    current = raise_model(graph)
    ctx = PassContext(original=current, seed=seed, calib_data=calib_data)
    analysis.run(lower(current), ctx)
    trees, masks, patterns = ctx.get(Trees), ctx.get(Masks), ctx.get(Patterns)
    by_root: dict[str, list[int]] = {}
    for i in masks.removed_ids.tolist():
        root, ch = trees.root_of(i)
        by_root.setdefault(root.node, []).append(ch)
    roots = {r.node: r for r in trees.roots}
    zeroed: dict[str, np.ndarray] = {}
    for node, chans in by_root.items():
        r = roots[node]
        v = graph.inputs_of(node)[r.weight_port]
        name = _source_initializer(graph, v.name) if v is not None else None
        if name is None:
            continue
        w = np.array(zeroed.get(name, graph.initializer(name).array), copy=True)
        index = [slice(None)] * w.ndim
        rows = w.shape[r.weight_axis]  # gate blocks (an LSTM's i,o,f,c): the unit's row in each
        index[r.weight_axis] = [c + k * r.channels for k in range(max(1, rows // r.channels)) for c in chans]
        w[tuple(index)] = 0
        zeroed[name] = w
        graph.replace_initializer(Initializer.from_array(name, w))
    soft = {tuple(g.roots): sorted(set(range(g.channels)) - set(masks.kept[g.id]))
            for g in patterns.groups if g.id in masks.kept}
    return soft, zeroed
