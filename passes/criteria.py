"""Importance criteria for the ``score`` pass, one small class each, behind one interface.

A criterion gives every output channel of every root (pruned node) a *root term*; the ``score``
pass sums the root terms of a group's coupled roots and, in ``tree`` scope, multiplies by the
*leaf term* ``Σ_leaves Σ_k n(W_leaf^{k,i})`` (paper Eq. 1–4) where ``n`` is the criterion's
``leaf_norm``. Register your own with ``register_criterion`` and name it in a spec::

    @register_criterion
    class MaxAbs(Criterion):
        name = "max-abs"
        def channel_scores(self, w, axis):          # w: the root's weight, axis: output channels
            return np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(1)

    pipeline.prune(model, passes="tag,trees,classify,score{criterion=max-abs scope=tree},mask,...")

Weight criteria (no data): ``l1``, ``l2``, ``fpgm``, ``random``. Data criteria need calibration
data (``PassContext.calib_data``: an ``.npz`` path with ``x`` and optional ``y``, ``x`` or
``(x, y)`` arrays, or ``(x, y)`` batches; ``--calib`` on the command line): ``hrank``,
``hrank-star`` (the paper's Hrank*), ``taylor``, ``recon`` (the output reconstruction error at the
consumers, ThiNet-style; see ``recover``).

Choice for data criteria in ``tree`` scope: the root term is the data-driven per-channel value
(average feature-map rank, or Σ|w·g|); the leaf term stays the leaves' input-channel weight norm
(l1), exactly as for the weight criteria. The tree then still weighs a channel by how strongly its
consumers read it, and the node scope is the criterion unchanged.

Hand-checkable examples (the tests compute them):

- ``fpgm``: filters [0,0], [1,0], [0,1] -> distances summed to the others: [2, 1+√2, 1+√2].
- ``hrank``: channel maps diag(1,0), diag(1,1), 0 -> ranks [1, 2, 0].
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from ir import Graph, raise_model
from ir.bodies import body_values

from .analyses import Root, Trees
from . import plugins
from .base import PassContext, PassError
from .infer_shapes import inferred_types
from .inputs import make_inputs
from .op_rules.computed import weight_array
from .finetune import (Batches, DataError, TrainConfig, _fits, _show, _source_initializer,
                       refuse_non_finite, _training_copy, check_data, input_dtype, load_npz, trainable_names,
                       write_artifacts)
from .runtime import ort_session, session_options


# ----------------------------------------------------------------------------- interface
class Criterion:
    """Per-channel importance of each root's output channels; higher is kept first.

    Override ``channel_scores(w, axis)`` for a weight criterion, or ``root_scores`` for anything
    that needs the whole model or data (set ``needs_data = True`` to get calibration batches)."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    leaf_norm: ClassVar[str] = "l1"   # the norm of the leaf term in tree scope: "l1" or "l2"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def channel_scores(self, w: np.ndarray, axis: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError(f"criterion {self.name!r} implements neither channel_scores nor root_scores")

    def root_scores(self, ir: Graph, roots: list[Root], trees: Trees,
                    calib: Batches | None) -> dict[str, np.ndarray]:
        return {r.node: np.asarray(self.channel_scores(root_weight(ir, r), r.weight_axis), np.float64)
                for r in roots}


CRITERIA: dict[str, type[Criterion]] = {}


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Make a Criterion subclass usable by its ``name`` in ``score{criterion=NAME}``."""
    if not (isinstance(cls, type) and issubclass(cls, Criterion)) or not cls.name:
        raise TypeError("register_criterion() takes a Criterion subclass with a non-empty `name`")
    if cls.leaf_norm not in ("l1", "l2"):
        raise TypeError(f"criterion {cls.name!r}: leaf_norm must be 'l1' or 'l2'")
    CRITERIA[cls.name] = cls
    return cls


def get_criterion(name: str) -> type[Criterion]:
    if name not in CRITERIA:   # a plugin package's criterion (entry point group onnxpruner.criteria)
        plugins.load("criteria", register_criterion)
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; known: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]


def root_weight(ir: Graph, root: Root) -> np.ndarray:
    w = weight_array(ir, ir.inputs_of(root.node)[root.weight_port])
    if w is None:
        raise PassError(f"weight of node {root.node!r} is not a constant")
    rows = w.shape[root.weight_axis]
    if rows != root.channels and rows % root.channels == 0:
        # gate blocks (LSTM's i,o,f,c rows of each unit): channel j owns rows j, H+j, 2H+j, ..
        blocks = w.reshape(w.shape[:root.weight_axis] + (rows // root.channels, root.channels)
                           + w.shape[root.weight_axis + 1:])
        return np.moveaxis(blocks, root.weight_axis + 1, root.weight_axis)
    return w


def _flat(w: np.ndarray, axis: int) -> np.ndarray:
    w = np.asarray(w)
    return np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)


# ----------------------------------------------------------------------------- weight criteria
@register_criterion
class L1(Criterion):
    """Σ|w| of each filter (Li et al., the paper's ℓ1-norm baseline)."""
    name = "l1"

    def channel_scores(self, w, axis):  # float64 accumulation without a float64 copy
        return np.abs(_flat(w, axis)).sum(axis=1, dtype=np.float64)


@register_criterion
class L2(Criterion):
    """‖w‖₂ of each filter."""
    name = "l2"
    leaf_norm = "l2"

    def channel_scores(self, w, axis):
        return np.sqrt(np.square(_flat(w, axis)).sum(axis=1, dtype=np.float64))


@register_criterion
class FPGM(Criterion):
    """Filter pruning via geometric median (He et al.): a filter close to the geometric median
    of its node's filters is replaceable by the others. As FPGM computes it, the score of filter
    ``i`` is ``Σ_j ‖w_i − w_j‖₂`` over the node's other filters (low: near the median: pruned)."""
    name = "fpgm"
    leaf_norm = "l2"

    def channel_scores(self, w, axis):
        f = _flat(w, axis).astype(np.float64)
        sq = np.square(f).sum(axis=1)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (f @ f.T)
        return np.sqrt(np.maximum(d2, 0.0)).sum(axis=1)


@register_criterion
class Random(Criterion):
    """Uniform random scores, seeded by the run's seed and the node's name: the floor every
    criterion must beat. In tree scope it is multiplied by the leaf term like any root term."""
    name = "random"

    def root_scores(self, ir, roots, trees, calib):
        return {r.node: np.random.default_rng([self.seed, zlib.crc32(r.node.encode())]).random(r.channels)
                for r in roots}


# ----------------------------------------------------------------------------- calibration data
def load_calib(data: Any, batch_size: int = 32, where: str = "calibration data") -> Batches:
    """Calibration data -> ``Batches`` of ``(x, y)`` (``y`` is None when absent). Same rules as
    training data: ``.npz`` read with ``allow_pickle=False``, one-line ``DataError`` otherwise;
    NaN or inf in ``x`` is refused here (it would surface as 'SVD did not converge')."""
    batches = _load_calib(data, batch_size, where)
    for i, (x, _) in enumerate(batches.batches):
        refuse_non_finite(np.asarray(x), "x", batches, i)
    return batches


def _load_calib(data: Any, batch_size: int, where: str) -> Batches:
    if isinstance(data, Batches):
        return data
    if isinstance(data, (str, os.PathLike)):
        x, y = load_npz(data, need_y=False)
        return _calib_split(np.asarray(x), None if y is None else np.asarray(y), batch_size, str(data))
    if isinstance(data, np.ndarray):
        return _calib_split(data, None, batch_size, where)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        return _calib_split(data[0], None if data[1] is None else np.asarray(data[1]), batch_size, where)
    batches = []
    for i, item in enumerate(data):
        if isinstance(item, np.ndarray):
            item = (item, None)
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise DataError(f"{where}: batch {i} is not x or an (x, y) pair")
        x, y = np.asarray(item[0]), None if item[1] is None else np.asarray(item[1])
        if y is not None and len(x) != len(y):
            raise DataError(f"{where}: batch {i} has {len(x)} inputs but {len(y)} targets")
        batches.append((x, y))
    if not batches:
        raise DataError(f"{where}: no batches")
    return Batches(batches, where)


def _calib_split(x: np.ndarray, y: np.ndarray | None, batch_size: int, where: str) -> Batches:
    if y is not None and len(x) != len(y):
        raise DataError(f"{where}: {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise DataError(f"{where}: empty")
    return Batches([(x[i:i + batch_size], None if y is None else y[i:i + batch_size])
                    for i in range(0, len(x), batch_size)], where)


def calib_batches(ctx: PassContext, name: str) -> Batches:
    if ctx.calib_data is None:
        raise PassError(f"criterion {name!r} needs calibration data: --calib CALIB.npz "
                        "(array x, optionally y), or calib_data= in prune()")
    batches = load_calib(ctx.calib_data)
    if ctx.inputs is not None:  # the other inputs of a model with a state or a scalar input
        batches = dataclasses.replace(batches, others=(ctx.inputs, ctx.seed))
    return batches


def _data_input(ir: Graph, calib: Batches | None = None):
    """The input ``x`` feeds: the only one, or (the run's inputs feeding the others) the first
    input whose shape fits the calibration batches, one of x's dtype first (token ids feed an
    int64 input)."""
    real = [v for v in ir.inputs if ir.initializer(v.name) is None]
    if len(real) == 1:
        return real[0]
    if calib is not None and calib.others is not None:
        x = calib.batches[0][0]
        fitting = [v for v in real if _fits(x.shape, v.shape or ())]
        if fitting:  # the first of x's dtype, else the first (its dtype then refused by name)
            return min(fitting, key=lambda v: input_dtype(v) != x.dtype)
        raise PassError(f"{calib.where}: x of shape {list(x.shape)} fits none of the model's inputs "
                        f"({', '.join(f'{v.name} {input_dtype(v)}{_show(v.shape or ())}' for v in real)})")
    raise PassError(f"data criteria need a model with one data input, this one has {len(real)}")


def _check_x(calib: Batches, ir: Graph) -> str:
    value = _data_input(ir, calib)
    shape, dtype = value.shape or (), input_dtype(value)
    for x, _ in calib.batches:
        if x.dtype != dtype:
            raise DataError(f"{calib.where}: x has dtype {x.dtype}, the model's input {value.name!r} takes {dtype}")
        if not _fits(x.shape, shape):
            raise DataError(f"{calib.where}: x has shape {list(x.shape)}, the model takes {_show(shape)}")
    return value.name


def _feeds(ir: Graph, in_name: str, x: np.ndarray, calib: Batches) -> dict[str, np.ndarray]:
    """One batch's feeds: ``x``, and the other inputs as the run's, sized to this batch (a
    state's batch axis shares the name of x's)."""
    if calib.others is None:
        return {in_name: x}
    proof, seed = calib.others
    model = onnx.ModelProto()  # the inputs as the model declares them (the training copy's batch axis is not)
    model.graph.input.extend(onnx.helper.make_value_info(v.name, v.type) for v in ir.inputs
                             if ir.initializer(v.name) is None and v.type is not None)
    given = {k: v for k, v in proof.given().items() if k != in_name}
    shapes = {k: v for k, v in proof.shapes().items() if k != in_name}
    # every other input's symbolic batch axis takes this batch's size, as the defaults give all
    # of them one value (tf2onnx names each input's batch dim apart: unk__330, unk__331)
    return make_inputs(model, seed, {**given, in_name: x}, shapes, batch=len(x)).feeds


# ----------------------------------------------------------------------------- data criteria
def feature_maps(ir: Graph, values: list[str], calib: Batches):
    """Yield, per calibration batch, ``{value: array}`` for the named intermediate values, from
    ONNX Runtime with them exposed as extra graph outputs (symbolic batch axis)."""
    in_name = _check_x(calib, ir)
    inside = sorted(set(values) & body_values(ir))  # ORT returns no value of an If branch
    if inside:
        from ir.bodies import body_scopes

        owner = next(ir.node(o) for n, (o, _) in body_scopes(ir, ir.topo_nodes()).items()
                     if any(v is not None and v.name == inside[0] for v in ir.outputs_of(n)))
        where = "a branch of an If" if owner.op_type == "If" else f"the body of {owner.op_type} {owner.name!r}"
        raise PassError(f"data criteria read feature maps, and {inside[0]!r} is computed inside {where} "
                        f"lowered into the graph (ONNX Runtime cannot return it): use a weight criterion (l1, l2)")
    model = _training_copy(raise_model(ir))
    present = {o.name for o in model.graph.output}
    types = None
    for name in values:
        if name in present:
            continue
        elem = ir.value(name).elem_type
        if not elem:  # no stated type: ONNX shape inference's
            types = inferred_types(ir) if types is None else types
            tp = types.get(name)
            elem = tp.tensor_type.elem_type if tp is not None else onnx.TensorProto.FLOAT
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
        present.add(name)
    try:
        session = ort_session(model, session_options(4))  # a failed run is reported in one line below
    except Exception as exc:
        raise PassError(f"ONNX Runtime cannot run the model for calibration: {str(exc).strip().splitlines()[0]}") from None
    for x, _ in calib.batches:
        try:
            outs = [session.run(values, _feeds(ir, in_name, x, calib))]
        except Exception as exc:
            if len(x) == 1:
                raise PassError(f"ONNX Runtime cannot run the model on calibration data: "
                                f"{str(exc).strip().splitlines()[0]}") from None
            # a model written for a fixed batch (e.g. Reshape to [1, -1]): one sample at a time
            try:
                outs = [session.run(values, _feeds(ir, in_name, x[i:i + 1], calib)) for i in range(len(x))]
            except Exception as one:
                raise PassError(f"ONNX Runtime cannot run the model on calibration data: "
                                f"{str(exc).strip().splitlines()[0]} (one sample at a time: "
                                f"{str(one).strip().splitlines()[0]})") from None
        yield {v: np.concatenate([o[k] for o in outs]) for k, v in enumerate(values)}


def map_ranks(arr: np.ndarray, axis: int) -> np.ndarray:
    """Rank of each (sample, channel) feature map: ``arr`` [N, .., C, ..] with channels on
    ``axis`` -> [N, C]. Spatial dims fold into an H×W matrix (the last dim is W); a value with
    no spatial dims is a 1×1 map (rank 1 if non-zero)."""
    a = np.moveaxis(np.asarray(arr, np.float32), axis, 1)
    n, c = a.shape[:2]
    spatial = a.shape[2:]
    w = spatial[-1] if spatial else 1
    a = a.reshape(n, c, -1, w)
    return np.linalg.matrix_rank(a).astype(np.float64)


@register_criterion
class HRank(Criterion):
    """HRank (Lin et al.): the average rank of each channel's feature maps over the calibration
    samples; low-rank maps carry little information and go first. The maps are the root's own
    output (before any BatchNormalization/ReLU after it: the value whose channels are pruned);
    HRank's code reads them after the ReLU, where a map can lose rank to clipping."""
    name = "hrank"
    needs_data = True

    def use_rank(self, ir: Graph, root: Root, trees: Trees) -> bool:
        return True

    def root_scores(self, ir, roots, trees, calib):
        rank_roots = [r for r in roots if self.use_rank(ir, r, trees)]
        out = {r.node: L1().channel_scores(root_weight(ir, r), r.weight_axis)
               for r in roots if r not in rank_roots}
        if not rank_roots:
            return out
        if calib is None:
            raise PassError(f"criterion {self.name!r} needs calibration data")
        values = list(dict.fromkeys(r.output for r in rank_roots))
        sums = {v: None for v in values}
        seen = 0
        for maps in feature_maps(ir, values, calib):
            for v in values:
                ranks = map_ranks(maps[v], _axis(trees, v)).sum(axis=0)
                sums[v] = ranks if sums[v] is None else sums[v] + ranks
            seen += len(next(iter(maps.values())))
        for r in rank_roots:
            out[r.node] = sums[r.output] / max(seen, 1)
        return out


def _axis(trees: Trees, value: str) -> int:
    m = trees.maps.get(value)
    return m.axis if m is not None else 1


@register_criterion
class HRankStar(HRank):
    """The paper's Hrank*: feature-map rank for convolutions, ℓ1-norm for fully connected layers
    (Gemm, MatMul, and any root whose output has no spatial dims)."""
    name = "hrank-star"

    def use_rank(self, ir, root, trees):
        if ir.node(root.node).op_type not in ("Conv", "ConvTranspose"):
            return False
        m = trees.maps.get(root.output)
        return m is None or m.rank > 2


@register_criterion
class Taylor(Criterion):
    """First-order Taylor (Molchanov et al.): ``Σ |w ⊙ ∂L/∂w|`` over each output channel's
    weights, the gradient averaged over the calibration batches, computed by ONNX Runtime
    training (the artifacts ``finetune`` builds: BatchNormalization in inference form, loss on
    the first output). The loss is cross-entropy for [N, classes] logits with int64 labels,
    MSE for float32 targets; labels ``y`` are required. A root whose weight gets no gradient
    from that loss (not upstream of the first output) scores 0."""
    name = "taylor"
    needs_data = True

    def root_scores(self, ir, roots, trees, calib):
        if calib is None or any(y is None for _, y in calib.batches):
            raise PassError("criterion 'taylor' needs labels: calibration data with an array y")
        grads = weight_gradients(ir, {r.node: root_weight_name(ir, r) for r in roots}, calib)
        out = {}
        for r in roots:
            w = root_weight(ir, r)
            g = grads.get(root_weight_name(ir, r))
            if g is None:
                out[r.node] = np.zeros(r.channels)
                continue
            prod = np.abs(np.asarray(w, np.float64) * g.reshape(w.shape))
            out[r.node] = _flat(prod, r.weight_axis).sum(axis=1)
        return out


def root_weight_name(ir: Graph, root: Root) -> str | None:
    v = ir.inputs_of(root.node)[root.weight_port]
    return _source_initializer(ir, v.name) if v is not None else None


def weight_gradients(ir: Graph, wanted: dict[str, str | None], calib: Batches) -> dict[str, np.ndarray]:
    """``∂L/∂w`` averaged over the calibration batches for the wanted initializers that are
    trainable (float, upstream of the first output), from ONNX Runtime training."""
    from .ort import import_ort

    ort = import_ort()
    from onnxruntime.training.api import CheckpointState, Module

    ort.set_default_logger_severity(3)
    in_name = _check_x(calib, ir)
    out_value = ir.outputs[0]
    out_shape = out_value.shape or ()
    first_y = calib.batches[0][1]
    loss = "ce" if len(out_shape) == 2 and first_y.dtype.kind in "iu" else "mse"
    n_classes = out_shape[1] if loss == "ce" and isinstance(out_shape[1], int) else None
    check_data(calib, ir.value(in_name).shape or (), n_classes, loss, out_shape, input_dtype(ir.value(in_name)))
    trainable = set(trainable_names(ir, (), out_value.name))
    names = [n for n in dict.fromkeys(wanted.values()) if n in trainable]
    if not names:
        return {}
    frozen = [n for n, init in ir.initializers.items()
              if n not in names and init.elem_type == onnx.TensorProto.FLOAT]
    folder = Path(tempfile.mkdtemp(prefix="onnxpruner-taylor-"))
    try:
        try:
            write_artifacts(raise_model(ir), names, frozen, TrainConfig(loss=loss), folder, out_value.name,
                            optimizer=False)
            state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            module = Module(str(folder / "training_model.onnx"), state, device="cpu", session_options=opts)
        except Exception as exc:
            raise PassError(f"ONNX Runtime training cannot take this model: {str(exc).strip().splitlines()[0]}") from None
        module.train()
        module.lazy_reset_grad()
        batches = calib.batches
        try:
            module(*batches[0])
        except Exception as exc:
            if len(batches[0][0]) == 1:
                raise PassError(f"ONNX Runtime training cannot run the model on calibration data: "
                                f"{str(exc).strip().splitlines()[0]}") from None
            # a model written for a fixed batch: one sample at a time (same mean gradient)
            module.lazy_reset_grad()
            batches = [(x[i:i + 1], y[i:i + 1]) for x, y in calib.batches for i in range(len(x))]
            module(*batches[0])
        for x, y in batches[1:]:
            module(x, y)  # forward + backward; gradients accumulate until reset
        return {name: np.array(state.parameters[name].grad, np.float64) / len(batches) for name in names}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- reconstruction error
RECON_ROWS = 4096   # output positions (samples × H' × W') a leaf's patch covariance is estimated on


@register_criterion
class Reconstruction(Criterion):
    """The output reconstruction error a channel's removal causes at its consumers (ThiNet's
    objective, He et al.'s channel pruning), with the removed channel's mean folded into the
    consumer's bias as the ``recover`` pass does: for leaf ``b`` reading channel ``c``,
    ``E‖W_b[:, c] ∗ (x_c − μ_c)‖²`` on the calibration data, summed over the leaves that read it.
    A 2-D Conv with group 1 uses the covariance of ``x_c``'s k×k patches (padding included), so
    the error is exact for one channel removed alone; any other leaf uses ``Var(x_c) · ‖W_b[:, c]‖²``
    (exact for a Gemm or a 1×1 Conv). It scores channels one at a time (ThiNet's greedy picks them
    jointly; the independent sum is its first step). A root whose channels reach no leaf (a graph
    output) scores by the variance of its own output. Tree scope multiplies by the leaf term like
    every criterion; node scope is the error alone (it already looks at the consumers)."""
    name = "recon"
    needs_data = True

    def root_scores(self, ir, roots, trees, calib):
        by_id = np.zeros(trees.num_ids)
        leaves = [lf for lf in trees.leaves if ir.inputs_of(lf.node)[lf.data_port] is not None]
        data = sorted({ir.inputs_of(lf.node)[lf.data_port].name for lf in leaves})
        plain = sorted({r.output for r in roots})
        acts = gather(ir, data + [v for v in plain if v not in data], calib)
        rng = np.random.default_rng(self.seed)
        for lf in leaves:
            node = ir.node(lf.node)
            w = ir.const_array(ir.inputs_of(node)[lf.weight_port])
            x = acts[ir.inputs_of(node)[lf.data_port].name]
            if w is None:
                continue
            err = leaf_errors(node, np.asarray(w, np.float64), lf, x, rng)
            if err is None:
                continue
            valid = lf.ids >= 0
            np.add.at(by_id, lf.ids[valid], err[valid])
        out = {}
        for r in roots:
            score = by_id[r.first_id:r.first_id + r.channels].copy()
            if not score.any():  # no leaf reads it: its own output's spread
                m = trees.maps.get(r.output)
                a = acts[r.output]
                axis = m.axis if m is not None else 1
                score = np.moveaxis(a.astype(np.float64), axis, 0).reshape(a.shape[axis], -1).var(axis=1)
            out[r.node] = score
        return out


def gather(ir: Graph, values: list[str], calib: Batches) -> dict[str, np.ndarray]:
    """``feature_maps`` over every calibration batch, concatenated."""
    parts: dict[str, list] = {v: [] for v in values}
    for got in feature_maps(ir, values, calib):
        for v in values:
            parts[v].append(got[v])
    return {v: np.concatenate(p) for v, p in parts.items()}


def conv_attrs(node, w_shape: tuple) -> dict | None:
    """Kernel, stride, padding and dilation of a 2-D Conv with group 1, or None when unsupported."""
    if len(w_shape) != 4 or (node.attr("group", 1) or 1) != 1:
        return None
    if (node.attr("auto_pad", "NOTSET") or "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
        return None
    pads = list(node.attr("pads", None) or [0, 0, 0, 0])
    return {"kernel": tuple(w_shape[2:]), "strides": tuple(node.attr("strides", None) or (1, 1)),
            "dilations": tuple(node.attr("dilations", None) or (1, 1)), "pads": pads}


def im2col(x: np.ndarray, kernel, strides, dilations, pads) -> np.ndarray:
    """[N, C, H, W] -> [N, H', W', C·kh·kw] patches, zero padding as ONNX Conv pads."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    n, c, h, w = x.shape
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, oh, ow, c, kh, kw), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[..., i, j] = x[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                j * dw:j * dw + sw * (ow - 1) + 1:sw].transpose(0, 2, 3, 1)
    return cols.reshape(n, oh, ow, c * kh * kw)


def leaf_errors(node, w: np.ndarray, leaf, x: np.ndarray, rng) -> np.ndarray | None:
    """Per input position of ``leaf``'s weight: the mean-compensated output error of zeroing it."""
    n_pos = w.shape[leaf.weight_axis]
    if node.op_type == "Conv" and leaf.weight_axis == 1 and w.ndim == 4 and x.ndim == 4 \
            and (node.attr("group", 1) or 1) == 1 and x.shape[1] == n_pos:
        a = conv_attrs(node, w.shape)
        if a is not None:
            xc = x.astype(np.float64) - x.mean(axis=(0, 2, 3), keepdims=True)
            cols = im2col(xc, a["kernel"], a["strides"], a["dilations"], a["pads"])
            kk = a["kernel"][0] * a["kernel"][1]
            cols = cols.reshape(-1, n_pos, kk)                      # [rows, C, k·k]
            if len(cols) > RECON_ROWS:
                cols = cols[rng.choice(len(cols), RECON_ROWS, replace=False)]
            cov = np.einsum("rci,rcj->cij", cols, cols) / len(cols)  # [C, kk, kk]
            wc = w.reshape(w.shape[0], n_pos, kk)                     # [O, C, kk]
            return np.einsum("oci,cij,ocj->c", wc, cov, wc)
    axis = 1 if x.ndim > 1 and x.shape[1] == n_pos else x.ndim - 1
    if x.shape[axis] != n_pos:
        return None
    var = np.moveaxis(x.astype(np.float64), axis, 0).reshape(n_pos, -1).var(axis=1)
    return var * np.square(_flat(w, leaf.weight_axis)).sum(axis=1)
