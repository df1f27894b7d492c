"""finetune: recover accuracy with ONNX Runtime training, no framework in the loop.

Reads: the IR and training data (the pass's ``data``/``val`` options, or ``PassContext``'s
``train_data``/``val_data``). Provides nothing; records the history in the report. The trainable
parameters are the float weights and biases of Conv, ConvTranspose, Gemm, MatMul and the scale
and bias of BatchNormalization, InstanceNormalization, LayerNormalization (and PRelu slopes);
running statistics and anything named in ``freeze`` stay frozen (BatchNormalization runs in
inference form, as the model was exported). ONNX Runtime training artifacts are generated from
the model, trained with a seeded shuffle, evaluated after each epoch, and the best epoch's
weights are written back into the very same graph: input and output names, opsets and structure
are unchanged. A ``checkpoint`` folder makes an interrupted run resume where it stopped.

Example::

    finetune{epochs=5 lr=0.001 batch-size=32 loss=ce optimizer=adamw schedule=cosine data=train.npz val=val.npz}

Data: ``.npz`` files with ``x`` (float32, the model's input layout) and ``y`` (int64 labels for
``ce``, float targets for ``mse``), read with ``allow_pickle=False``; the API also takes
``(x, y)`` arrays or any iterable of ``(x, y)`` batches. Mismatches are one-line ``DataError``s
raised before training starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import onnx

from ir import Graph, Initializer, lower, raise_model

from .analyses import SliceRecord
from . import progress
from .base import Pass, PassContext, PassError, PassResult
from .checkpoints import CheckpointError, read_progress, save_epoch, settings_of  # noqa: F401 (re-exported)
from .train_data import (Batches, DataError, _fits, _show, _split, as_batches, check_data,  # noqa: F401 (re-exported)
                         input_dtype, load_npz, refuse_non_finite, split_holdout)

LOSSES = ("ce", "mse")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")

# op -> input ports holding trainable parameters
TRAINABLE_PORTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,),
                   "BatchNormalization": (1, 2), "InstanceNormalization": (1, 2),
                   "LayerNormalization": (1, 2), "PRelu": (1,)}


class Diverged(PassError):
    """The loss became NaN or infinite; training stops there (one line naming epoch and step)."""

    def __init__(self, epoch: int, step: int | str, value: float):
        where = f"step {step + 1}" if isinstance(step, int) else step
        super().__init__(f"training diverged: loss {value} at epoch {epoch + 1}, {where} "
                         f"(lower --lr, or check the data)")
        self.epoch, self.step, self.value = epoch, step, value


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    loss: str = "ce"
    optimizer: str = "adamw"
    schedule: str = "cosine"
    step_size: int = 10          # epochs per step of the `step` schedule
    gamma: float = 0.1
    seed: int = 0
    freeze: tuple[str, ...] = ()
    # the model as handed in is a candidate "epoch 0", scored like the epochs in inference mode (on
    # the validation data, or on the training data after each epoch when there is none): a start
    # that training only makes worse (a recovered model, measured in benchmarks/accuracy.py) is kept
    keep_start: bool = False
    # without validation data: hold this fraction of the training data out of training (a seeded
    # draw) and keep the epoch (or, with keep_start, the start) of the lowest mean loss on it,
    # in inference mode. 0: the best epoch on training accuracy, as measured during the epoch
    holdout: float = 0.0
    # epochs of linear warm-up: the lr rises step by step from lr/steps to the schedule's value
    # over the first ``warmup`` epochs (AdamW's first steps move every weight by about the lr,
    # whatever its gradient: a start already near an optimum is thrown off by them). 0: none
    warmup: float = 0.0

    def __post_init__(self):
        for value, known, what in ((self.loss, LOSSES, "loss"), (self.optimizer, OPTIMIZERS, "optimizer"),
                                   (self.schedule, SCHEDULES, "schedule")):
            if value not in known:
                raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
        if self.epochs < 1 or self.batch_size < 1 or self.step_size < 1:
            raise ValueError("epochs, batch-size and step-size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not 0.0 <= self.warmup <= self.epochs:
            raise ValueError(f"warmup must be in [0, epochs], got {self.warmup}")

    def lr_at(self, epoch: int) -> float:
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        if self.schedule == "step":
            return self.lr * self.gamma ** (epoch // self.step_size)
        return self.lr

    def lr_at_step(self, epoch: int, step: int, steps: int) -> float:
        """The lr of ``step`` (of ``steps``) in ``epoch``: the schedule's, times the warm-up ramp."""
        lr = self.lr_at(epoch)
        if self.warmup > 0:
            lr *= min(1.0, (epoch + (step + 1) / max(steps, 1)) / self.warmup)
        return lr


# fine-tuning a start `recover` already brought back (benchmarks/recovered_start.py, README
# "Recovery"): such a start sits where plain fine-tuning ends, and AdamW's first steps move every
# weight by about lr whatever its gradient. Hence a tenth of the lr, and the start kept unless an
# epoch beats it on the loss on a tenth of the training data held out of training. That slice is
# held out of fine-tuning, not of the original's training: where the original was trained on the
# same data its loss there is near zero (2e-5 to 2e-4 on the digits benchmark), and the start is
# kept unless training lowers it. That keeps the original's generalization (the point), and is
# the limit: where plain fine-tuning would generalize beyond the original, no measure on training
# data shows it (benchmarks/recovered_start.py: seed 2)
RECOVERED_LR_SCALE = 0.1
RECOVERED_HOLDOUT = 0.1
STARTS = ("auto", "fresh", "recovered")
# stamped by `recover` on a model it changed: JSON {"method": "bias,bn,ls", "heldout_error": 0.057}
RECOVERED_METADATA_KEY = "onnxpruner.recovered"
# a recovered start is one whose outputs recover brought within this relative error of the
# original's (its held-out calibration samples): there the original's own fine-tuned optimum is
# near. Measured (README "Recovery"): bias,bn,ls leaves 0.03-0.10 on the digits benchmark, bn
# alone 0.19 at ratio 0.3 but 0.45-0.61 at 0.5-0.7, where a tenth of the lr under-trains it
RECOVERED_MAX_ERROR = 0.25


def recovery_metadata(model: onnx.ModelProto | Graph) -> dict | None:
    """What ``recover`` wrote into the model's metadata (None: it did not change the model)."""
    props = model.props.metadata_props if isinstance(model, Graph) else {p.key: p.value for p in model.metadata_props}
    if RECOVERED_METADATA_KEY not in props:
        return None
    try:
        value = json.loads(props[RECOVERED_METADATA_KEY])
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {}


def is_recovered(model: onnx.ModelProto | Graph) -> bool:
    """A recovered start: ``recover`` changed the model and its held-out output error against the
    original is at most ``RECOVERED_MAX_ERROR`` (no error measured: not one)."""
    error = (recovery_metadata(model) or {}).get("heldout_error")
    return isinstance(error, (int, float)) and error <= RECOVERED_MAX_ERROR


def recovered_config(config: TrainConfig) -> TrainConfig:
    """How a recovered start is fine-tuned: ``config`` with a tenth of its lr, ``keep_start`` and
    (unless it holds out more) ``RECOVERED_HOLDOUT`` of the training data to choose on when no
    validation data is given."""
    return replace(config, lr=config.lr * RECOVERED_LR_SCALE, keep_start=True,
                   holdout=config.holdout or RECOVERED_HOLDOUT)


def start_config(config: TrainConfig, start: str, recovered: bool) -> tuple[TrainConfig, str]:
    """``(config, "fresh" or "recovered")`` for ``start``: ``fresh`` (``config`` as it is),
    ``recovered`` (``recovered_config``) or ``auto``: recovered when ``recovered`` (``is_recovered``:
    ``recover`` brought the model within ``RECOVERED_MAX_ERROR`` of the original)."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; known: {', '.join(STARTS)}")
    if start == "recovered" or (start == "auto" and recovered):
        return recovered_config(config), "recovered"
    return config, "fresh"


@dataclass
class FinetuneResult:
    model: onnx.ModelProto
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    resumed_from: int = 0
    stopped: str | None = None    # why training stopped early (a diverged loss), kept best epoch


class Progress:
    """A bar per epoch (``passes.progress``: tqdm on a terminal, JSON lines, or nothing) and one
    line per finished epoch: on ``stream`` when one is given, else on stderr unless progress is
    off (``--quiet``); in json mode the epoch's numbers are a ``note`` event instead."""

    def __init__(self, epochs: int, steps: int, stream=None):
        self.epochs, self.steps = epochs, steps
        self.stream = stream
        self._task = None

    def step(self, epoch: int, step: int, loss: float, acc: float | None) -> None:
        if self._task is None:
            self._task = progress.task(f"epoch {epoch + 1}/{self.epochs}", self.steps, unit="batch")
        info = {"loss": loss} if acc is None else {"loss": loss, "acc": acc}
        self._task.update(1, **info)
        if step + 1 >= self.steps:
            self._task.close()
            self._task = None

    def warn(self, text: str) -> None:
        """A warning line, even under --quiet (the bar of the epoch closed first)."""
        if self._task is not None:
            self._task.close()
            self._task = None
        out = self.stream if self.stream is not None else progress.stream()
        out.write(text + "\n")
        out.flush()

    def epoch(self, row: dict) -> None:
        if self._task is not None:
            self._task.close()
            self._task = None
        text = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()
        elif progress.mode() == "json":
            progress.note("finetune", **row)
        elif not progress.quiet():   # a log line, terminal or not
            progress.stream().write(text + "\n")
            progress.stream().flush()


def trainable_names(graph: Graph, freeze: Iterable[str] = (), output: str | None = None) -> list[str]:
    """Float weights of weight-bearing and normalisation nodes upstream of ``output`` (the first
    graph output by default; others cannot get a gradient from its loss), minus ``freeze``."""
    frozen = set(freeze)
    upstream = _upstream_nodes(graph, output or graph.output_names[0])
    names = []
    for node in graph.topo_nodes():
        if node.name not in upstream:
            continue
        for port in TRAINABLE_PORTS.get(node.op_type, ()):
            ins = graph.inputs_of(node)
            if port >= len(ins) or ins[port] is None:
                continue
            name = _source_initializer(graph, ins[port].name)
            init = graph.initializer(name) if name else None
            if init is None or init.elem_type != onnx.TensorProto.FLOAT:
                continue
            if name not in frozen and node.name not in frozen and name not in names:
                names.append(name)
    return names


def _upstream_nodes(graph: Graph, value: str) -> set[str]:
    seen: set[str] = set()
    stack = [value]
    while stack:
        prod = graph.producer(stack.pop())
        if prod is None or prod.name in seen:
            continue
        seen.add(prod.name)
        stack += [v.name for v in graph.inputs_of(prod) if v is not None]
    return seen


def _source_initializer(graph: Graph, name: str) -> str | None:
    for _ in range(16):
        if graph.initializer(name) is not None:
            return name
        prod = graph.producer(name)
        if prod is None or prod.op_type != "Identity":
            return None
        name = graph.inputs_of(prod)[0].name
    return None


def _training_copy(model: onnx.ModelProto, freeze_bn: bool = False) -> onnx.ModelProto:
    """The model with a symbolic batch axis and no stale value_info (shapes are re-derived).

    ``freeze_bn``: BatchNormalization written out in its inference form over the same
    initializers. ONNX Runtime training would otherwise switch it to batch statistics and drop
    the running-statistics update, so training and inference would disagree."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if freeze_bn:
        _inference_form_batchnorm(m)
    _sum_as_adds(m)
    del m.graph.value_info[:]
    inits = {t.name for t in m.graph.initializer}
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "N"
    return m


def _inference_form_batchnorm(m: onnx.ModelProto) -> None:
    from onnx import helper

    opset = {o.domain: o.version for o in m.opset_import}.get("", 1)
    inferred = onnx.shape_inference.infer_shapes(m)
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    nodes = []
    for i, n in enumerate(m.graph.node):
        if n.op_type != "BatchNormalization" or n.domain not in ("", "ai.onnx") or len(n.output) != 1 \
                or n.input[0] not in ranks:
            nodes.append(n)
            continue
        x, scale, bias, mean, var = n.input[:5]
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        p = f"{n.name or 'bn'}_{i}_frozen"
        axes = list(range(1, ranks[n.input[0]] - 1))
        eps_name = p + "_eps"
        m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(eps, np.float32), eps_name))
        nodes += [helper.make_node("Add", [var, eps_name], [p + "_ve"]),
                  helper.make_node("Sqrt", [p + "_ve"], [p + "_std"]),
                  helper.make_node("Div", [scale, p + "_std"], [p + "_k"]),
                  helper.make_node("Mul", [mean, p + "_k"], [p + "_mk"]),
                  helper.make_node("Sub", [bias, p + "_mk"], [p + "_b"])]
        k, b = p + "_k", p + "_b"
        if axes:
            if opset >= 13:
                axes_name = p + "_axes"
                m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes, np.int64), axes_name))
                nodes += [helper.make_node("Unsqueeze", [k, axes_name], [k + "u"]),
                          helper.make_node("Unsqueeze", [b, axes_name], [b + "u"])]
            else:
                nodes += [helper.make_node("Unsqueeze", [k], [k + "u"], axes=axes),
                          helper.make_node("Unsqueeze", [b], [b + "u"], axes=axes)]
            k, b = k + "u", b + "u"
        nodes += [helper.make_node("Mul", [x, k], [p + "_y"]),
                  helper.make_node("Add", [p + "_y", b], [n.output[0]])]
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def _sum_as_adds(m: onnx.ModelProto) -> None:
    """Sum(a, b, c) -> Add(Add(a, b), c): ONNX Runtime training has no gradient for Sum."""
    from onnx import helper

    nodes = []
    for i, n in enumerate(m.graph.node):
        if n.op_type != "Sum" or n.domain not in ("", "ai.onnx") or len(n.input) < 2:
            nodes.append(n)
            continue
        acc = n.input[0]
        for j, term in enumerate(n.input[1:], start=1):
            out = n.output[0] if j == len(n.input) - 1 else f"{n.name or 'sum'}_{i}_add{j}"
            nodes.append(helper.make_node("Add", [acc, term], [out]))
            acc = out
    del m.graph.node[:]
    m.graph.node.extend(nodes)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence native writes to stderr (file descriptor 2) inside the block: ORT's gradient
    graph builder logs every graph transformer at info level whatever the logger severity says.
    Its failures still arrive as Python exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_artifacts(model: onnx.ModelProto, names: list[str], frozen: list[str], config: "TrainConfig",
                    folder: Path, output: str, optimizer: bool = True) -> None:
    """ONNX Runtime training artifacts for ``model`` in ``folder``: ``names`` trained, the loss
    of ``config`` on ``output`` alone (not on every output), BatchNorm in inference form; no
    optimizer model when only gradients are wanted (``optimizer=False``)."""
    from onnxruntime.training import artifacts

    loss = artifacts.LossType.CrossEntropyLoss if config.loss == "ce" else artifacts.LossType.MSELoss
    optim = None if not optimizer else (
        artifacts.OptimType.AdamW if config.optimizer == "adamw" else artifacts.OptimType.SGD)
    with quiet_native_stderr():
        artifacts.generate_artifacts(_training_copy(model, freeze_bn=True), requires_grad=names,
                                     frozen_params=frozen, loss=loss, optimizer=optim,
                                     artifact_directory=str(folder), additional_output_names=[output],
                                     loss_input_names=[output])


def train_epoch(module, optimizer, batches: Batches, config: "TrainConfig", epoch: int, bar: "Progress") -> dict:
    """One epoch of ORT training at the scheduled learning rate, batches in a seeded order;
    returns the mean ``loss`` and, for cross-entropy, the training ``acc``."""
    optimizer.set_learning_rate(config.lr_at(epoch))
    module.train()
    order = np.random.default_rng([config.seed, epoch]).permutation(len(batches.batches))
    losses, correct, seen = [], 0, 0
    warming = config.warmup > epoch
    for step, b in enumerate(order):
        x, y = batches.batches[b]
        if warming:
            optimizer.set_learning_rate(config.lr_at_step(epoch, step, len(order)))
        loss_value, out = module(x, y)
        optimizer.step()
        module.lazy_reset_grad()
        losses.append(float(loss_value))
        if not math.isfinite(losses[-1]):
            raise Diverged(epoch, step, losses[-1])
        if config.loss == "ce":
            correct += int((np.asarray(out).argmax(1) == y).sum())
            seen += len(y)
        bar.step(epoch, step, float(np.mean(losses)), correct / seen if seen else None)
    row = {"loss": float(np.mean(losses))}
    if config.loss == "ce":
        row["acc"] = correct / max(seen, 1)
    return row


def inference_pass(module, batches: Batches, config: "TrainConfig") -> tuple[float, int, int]:
    """The summed loss, the count right (ce) and the count seen of the module's current weights
    in inference mode."""
    module.eval()
    loss, correct, seen = 0.0, 0, 0
    for x, y in batches.batches:
        value, out = module(x, y)
        loss += float(value) * len(y)
        seen += len(y)
        if config.loss == "ce":
            correct += int((np.asarray(out).argmax(1) == y).sum())
    return loss, correct, seen


def inference_score(module, batches: Batches, config: "TrainConfig", by_loss: bool = False) -> float:
    """Accuracy (ce, unless ``by_loss``) or minus the mean loss of the module's current weights in
    inference mode."""
    loss, correct, seen = inference_pass(module, batches, config)
    return correct / max(seen, 1) if config.loss == "ce" and not by_loss else -loss / max(seen, 1)


def finetune(model: onnx.ModelProto, train: Any, val: Any = None, config: TrainConfig = TrainConfig(),
             checkpoint: str | os.PathLike | None = None, stream=None, restart: bool = False) -> FinetuneResult:
    """Fine-tune ``model`` with ONNX Runtime training; returns the same graph with the best
    epoch's weights. ``checkpoint``: a folder that makes an interrupted run resume (``restart``
    ignores what is in it). A NaN or infinite loss stops training: the best finite epoch so far is
    returned (``result.stopped`` says where it stopped), or ``Diverged`` is raised if there is none."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # ORT training logs every graph transformer at info level
    graph = lower(model)
    real_inputs = [v for v in graph.inputs if graph.initializer(v.name) is None]
    if len(real_inputs) != 1:
        raise PassError(f"finetune needs a model with one data input, this one has {len(real_inputs)}")
    in_shape = real_inputs[0].shape or ()
    in_dtype = input_dtype(real_inputs[0])  # token ids: int64
    out_value = graph.outputs[0]
    out_shape = out_value.shape or ()
    n_classes = out_shape[1] if config.loss == "ce" and len(out_shape) == 2 and isinstance(out_shape[1], int) else None
    if config.loss == "ce" and len(out_shape) != 2:
        raise PassError(f"loss ce needs [N, classes] logits; output {out_value.name!r} has shape {list(out_shape)}")
    train_b = as_batches(train, config.batch_size, "training data")
    check_data(train_b, in_shape, n_classes, config.loss, out_shape, in_dtype)
    val_b = None
    if val is not None:
        val_b = as_batches(val, config.batch_size, "validation data")
        check_data(val_b, in_shape, n_classes, config.loss, out_shape, in_dtype)
    elif config.holdout > 0:   # chosen on held-out training data, by loss ("val_loss" in the history)
        train_b, val_b = split_holdout(train_b, config.holdout, config.seed, config.batch_size)
    names = trainable_names(graph, config.freeze, out_value.name)
    if not names:
        raise PassError("finetune found no trainable weights in the model")
    frozen = [n for n, init in graph.initializers.items()
              if n not in names and init.elem_type == onnx.TensorProto.FLOAT]

    settings = settings_of(model, config, train_b, val_b)
    if checkpoint:
        folder, saved = Path(checkpoint), read_progress(Path(checkpoint), settings, restart)
    else:
        folder, saved = Path(tempfile.mkdtemp(prefix="onnxpruner-ft-")), None
    try:
        return _train(graph, model, names, frozen, config, train_b, val_b, folder, saved, settings,
                      out_value.name, stream, by_loss=val is None and config.holdout > 0)
    finally:  # an interrupt too: no temporary folder left behind
        if not checkpoint:
            shutil.rmtree(folder, ignore_errors=True)


def _train(graph, model, names, frozen, config, train_b, val_b, folder: Path, saved, settings, output, stream,
           by_loss: bool = False):
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    art = folder / "artifacts"
    try:
        if saved is None:
            for stale in ("progress.json", "checkpoint", "best.npz"):   # another run's, or --force
                (folder / stale).unlink(missing_ok=True)
            shutil.rmtree(art, ignore_errors=True)
            art.mkdir(parents=True)
            write_artifacts(model, names, frozen, config, art, output)
        state_path = folder / "checkpoint" if saved is not None else art / "checkpoint"
        state = CheckpointState.load_checkpoint(str(state_path))
        device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        module = Module(str(art / "training_model.onnx"), state, str(art / "eval_model.onnx"), device=device)
        optimizer = Optimizer(str(art / "optimizer_model.onnx"), module)
    except DataError:
        raise
    except Exception as exc:
        raise PassError(f"ONNX Runtime training cannot take this model: {str(exc).strip().splitlines()[0]}") from None

    history = saved["history"] if saved else []
    best = saved["best"] if saved else {"epoch": -1, "score": -math.inf}
    start = len(history)
    if config.keep_start and saved is None:
        best = {"epoch": 0, "score": inference_score(module, val_b or train_b, config, by_loss)}
        save_epoch(folder, state, {n: np.array(state.parameters[n].data) for n in names}, settings, history, best)
    bar = Progress(config.epochs, len(train_b.batches), stream)
    best_file = folder / "best.npz"
    stopped = None
    for epoch in range(start, config.epochs):
        try:
            row: dict = {"epoch": epoch + 1, "lr": config.lr_at(epoch),
                         **train_epoch(module, optimizer, train_b, config, epoch, bar)}
            if val_b is not None:
                v_loss, v_correct, v_seen = inference_pass(module, val_b, config)
                if not math.isfinite(v_loss):
                    raise Diverged(epoch, "on the validation data", v_loss)
                row["val_loss"] = v_loss / v_seen
                if config.loss == "ce":
                    row["val_acc"] = v_correct / v_seen
            weights = {n: np.array(state.parameters[n].data) for n in names}
            bad = next((n for n, w in weights.items() if not np.isfinite(w).all()), None)
            if bad is not None:
                raise Diverged(epoch, f"end of epoch (weight {bad!r} is not finite)", float("nan"))
        except Diverged as exc:
            if best["epoch"] < 0:   # -1: no epoch kept (0: the start, with keep_start)
                raise PassError(f"{exc}; no finite epoch to keep, nothing written") from None
            stopped = str(exc)
            bar.warn(f"warning: {exc}; keeping epoch {best['epoch']}")
            break
        if config.keep_start and val_b is None:   # scored as the start was: inference mode
            row["train_score"] = inference_score(module, train_b, config)
        if by_loss:
            score = -row["val_loss"]
        elif val_b is not None:
            score = row.get("val_acc", -row["val_loss"])
        else:
            score = row["train_score"] if config.keep_start else row.get("acc", -row["loss"])
        history.append(row)
        bar.epoch(row)
        improved = score > best["score"]
        if improved:
            best = {"epoch": epoch + 1, "score": score}
        save_epoch(folder, state, weights if improved else None, settings, history, best)

    with np.load(best_file, allow_pickle=False) as weights:
        for name in names:
            old = graph.initializer(name)
            graph.replace_initializer(Initializer.from_array(name, weights[name].astype(old.array.dtype)
                                                             .reshape(old.dims)))
    return FinetuneResult(raise_model(graph), history, best["epoch"], start, stopped)


def evaluate(model: onnx.ModelProto, data: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of a classifier in ONNX Runtime inference."""
    import onnxruntime as ort

    batches = as_batches(data, batch_size, "evaluation data")
    session = ort.InferenceSession(_training_copy(model).SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = seen = 0
    for x, y in batches.batches:
        logits = session.run(None, {name: x})[0]
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


# ----------------------------------------------------------------------------- the pass
@dataclass(frozen=True)
class FinetunePass(Pass):
    name: ClassVar[str] = "finetune"
    # it changes weight values only: what slice recorded (the report's groups) still holds
    preserves: ClassVar[tuple[type, ...]] = (SliceRecord,)
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 32
    loss: str = "ce"
    optimizer: str = "adamw"
    schedule: str = "cosine"
    seed: int = 0
    freeze: tuple[str, ...] = ()
    data: str = ""
    val: str = ""
    checkpoint: str = ""
    keep_start: bool = False
    holdout: float = 0.0
    warmup: float = 0.0
    start: str = "auto"   # auto: `recovered` (recovered_config) when is_recovered(model), else fresh

    def __post_init__(self):
        self.config()  # option errors surface when the spec is parsed
        start_config(self.config(), self.start, False)

    def config(self) -> TrainConfig:
        return TrainConfig(self.epochs, self.lr, self.batch_size, self.loss, self.optimizer,
                           self.schedule, seed=self.seed, freeze=self.freeze, keep_start=self.keep_start,
                           holdout=self.holdout, warmup=self.warmup)

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        train = self.data or ctx.train_data
        val = self.val or ctx.val_data
        if train is None or (isinstance(train, str) and not train):
            raise PassError("finetune needs training data: data=TRAIN.npz in the spec, or train_data= in prune()")
        recovered = is_recovered(ir)
        config, kind = start_config(self.config(), self.start, recovered)
        result = finetune(raise_model(ir), train, val or None, config, self.checkpoint or None)
        trained = lower(result.model)
        for name, init in trained.initializers.items():
            if ir.initializer(name) is not None:
                ir.replace_initializer(init)
        ctx.report["finetune"] = {"history": result.history, "best_epoch": result.best_epoch,
                                  "start": kind, "lr": config.lr,
                                  "keep_start": config.keep_start, "holdout": config.holdout if val is None else 0.0}
        if result.stopped:
            ctx.report["finetune"]["stopped"] = result.stopped
        last = result.history[-1] if result.history else {}
        return PassResult(True, {"epochs": len(result.history), "best_epoch": result.best_epoch,
                                 **{k: v for k, v in last.items() if k != "epoch"}})
