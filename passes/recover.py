"""recover: make a pruned model work again before any fine-tuning, from unlabeled calibration data.

Runs after ``validate`` (the proof is a statement about the surgery; recovery changes weights on
purpose, so it comes after it and the report shows both). Reads: ``SliceRecord`` (what was
removed, in the original model's coordinates), ``PassContext.original`` and
``PassContext.calib_data`` (``--calib x.npz``: an array ``x``, labels ``y`` optional). Without
calibration data it changes nothing and says so. Steps (``method``, in this order):

1. ``bias``: each leaf consumer (Conv 2-D with group 1, Gemm, MatMul with a 2-D constant weight:
   a transformer's MLP and projections) loses the contribution of the channels removed from its
   input. Their mean activation, from the ORIGINAL model on the calibration data, times the
   removed weights, is folded into the consumer's bias (a bias is added where there is none; a
   MatMul's bias is the constant operand of the Add that alone reads its output, or a new Add).
   Grouped and depthwise Convs are never such consumers: they lose whole groups, input and output
   together (``op_rules.channels``), so what they lose reaches the next consumer, compensated
   there. Conv padding: a constant channel convolved with zero padding is
   not constant at the borders, so the contribution is computed exactly per output position
   (the removed weights convolved with the per-position mean map, padding included) and the bias
   takes its spatial mean, the best constant in least squares; only a border-free case
   (no padding, a Gemm, a MatMul) is compensated exactly.
   Ahead of ``bn`` this step changes nothing on a consumer whose output a BatchNormalization reads
   (``bn`` re-centres it anyway: the two are the same up to rounding); it matters where nothing
   renormalizes the output, a classifier head above all. There the mean is the best constant in
   least squares, but not for the argmax: measured on the digits benchmark it costs top-1 (see
   the README), which is why ``--recover`` means ``bias,bn,ls``: ``ls`` refits those consumers'
   weights and bias.
2. ``bn``: the running mean and variance of every BatchNormalization downstream of a changed
   node are re-estimated by running the pruned model in ONNX Runtime, upstream ones first (a
   BatchNormalization's input depends on those before it). They are set so that the pruned
   model's input, normalized, has the per-channel mean and spread the original's had on the same
   data: ``σ'/σ`` scales ``√(var+ε)`` and ``mean' = μ' − (μ − mean)·σ'/σ`` (μ, σ: the input's
   statistics in the original, μ', σ' in the pruned model). When the stored statistics are the
   data's (``mean = μ``, ``var = σ²``) this is adaptive BN as in EagleEye (``mean' = μ'``,
   ``var' ≈ σ'²``); a model trained with BatchNormalization frozen (ONNX Runtime training, as
   ``finetune`` and the demo do) keeps the statistics it was trained with as its reference
   instead of being renormalized to the data.
   BatchNormalization is the only standard op with stored statistics; InstanceNormalization
   and LayerNormalization compute theirs per sample.
3. ``ls`` (optional): per consumer, in graph order, a ridge least-squares fit of its kept
   weights and bias to the original consumer's outputs, on the pruned model's own inputs to it
   (ThiNet / He et al.'s channel pruning reconstruction); ``bn`` runs again afterwards.

A part of the calibration samples (``holdout``, the last ones) is kept out of the fit; the report
(``recovery``) gives the relative output error against the original on them before and after
recovery (``‖f_pruned(x) − f(x)‖ / ‖f(x)‖``, first output), and top-1 when the data has labels.

Example: ``a -> b`` with channel 1 of ``a`` removed and that channel constant 3.0 on the data:
``b``'s bias gains ``3.0 × Σ_k W_b[o, 1, k]`` (no padding) and its output is restored exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from ir import Graph, Initializer, Node, lower

from .analyses import SliceRecord
from .base import Pass, PassContext, PassError, PassResult, SpecError
from .criteria import conv_attrs, gather, im2col, load_calib
from .finetune import RECOVERED_METADATA_KEY, Batches
from .op_rules import Rewriter
from .tag import opset_of

STEPS = ("bias", "bn", "ls")
# what ``--recover`` (and ``recover=True``-like defaults) mean: ls is cheap (seconds on the
# benchmarks) and the only setting that brings the digits models within 2 points of unpruned at 0.5
# (README, "Recovery without labels"); bias alone is a no-op ahead of bn on Conv->BN consumers
DEFAULT_STEPS = "bias,bn,ls"
NO_CALIB = ("no calibration data (--calib CALIB.npz, or calib_data= in prune()): "
            "the model is left as pruned")
MAX_ROWS = 20000   # rows of one least-squares fit (output positions × samples), sampled beyond


def with_recover(passes: list, methods: str | None) -> list:
    """``passes`` with a ``recover{method=…}`` pass right after the last ``validate`` (before a
    ``finetune``); ``methods`` None or empty: unchanged."""
    from .validate import ValidatePass

    if not methods:
        return list(passes)
    try:
        rec = RecoverPass(method=tuple(m.strip() for m in str(methods).split(",") if m.strip()))
    except ValueError as exc:
        raise SpecError(f"pass 'recover': {exc}") from None
    passes = [p for p in passes if not isinstance(p, RecoverPass)]
    at = max((i for i, p in enumerate(passes) if isinstance(p, ValidatePass)), default=len(passes) - 1)
    return passes[:at + 1] + [rec] + passes[at + 1:]


# ----------------------------------------------------------------------------- small numerics
def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-12))


def _concat_x(calib: Batches) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.concatenate([b[0] for b in calib.batches])
    ys = [b[1] for b in calib.batches]
    y = None if any(v is None for v in ys) else np.concatenate(ys)
    return x, y


def _batches(x: np.ndarray, where: str, size: int = 64, others=None) -> Batches:
    return Batches([(x[i:i + size], None) for i in range(0, len(x), size)], where, others=others)


def collect(g: Graph, values: list[str], x: np.ndarray, others=None) -> dict[str, np.ndarray]:
    """The named values of ``g`` on all of ``x`` (ONNX Runtime); ``others``: (the run's inputs,
    seed) feeding a model's other inputs, sized to each batch (a state, a mask, a scalar)."""
    return gather(g, values, _batches(x, "calibration data", others=others))


# ----------------------------------------------------------------------------- the pass
@dataclass(frozen=True)
class RecoverPass(Pass):
    name: ClassVar[str] = "recover"
    requires: ClassVar[tuple[type, ...]] = (SliceRecord,)
    preserves: ClassVar[tuple[type, ...]] = (SliceRecord,)
    method: tuple[str, ...] = tuple(DEFAULT_STEPS.split(","))
    holdout: float = 0.25     # fraction of the calibration samples kept out of the fit, for the report
    ridge: float = 1e-3       # ls: λ relative to the mean diagonal of XᵀX

    def __post_init__(self):
        bad = [m for m in self.method if m not in STEPS]
        if bad or not self.method:
            raise ValueError(f"unknown recovery method {bad[0] if bad else '(none)'!r}; known: {', '.join(STEPS)}")
        if not (0.0 <= self.holdout < 1.0):
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be non-negative, got {self.ridge}")

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        if ctx.calib_data is None:
            ctx.report["recovery"] = {"applied": False, "reason": NO_CALIB}
            return PassResult(False, {"applied": False}, [f"recover: {NO_CALIB}"])
        if ctx.original is None:
            raise PassError("recover needs the model before pruning (run it through prune())")
        record: SliceRecord = ctx.get(SliceRecord)
        x, y = _concat_x(load_calib(ctx.calib_data))
        others = (ctx.inputs, ctx.seed) if ctx.inputs is not None else None  # as criteria.calib_batches
        n_hold = int(round(len(x) * self.holdout)) if len(x) >= 4 else 0
        fit_x, hold_x = x[:len(x) - n_hold], x[len(x) - n_hold:]
        hold_y = None if y is None or not n_hold else y[len(x) - n_hold:]
        original = lower(ctx.original, ctx.weights)
        out_name = ir.outputs[0].name
        before = collect(ir, [out_name], hold_x, others)[out_name] if n_hold else None
        notes: list[str] = []
        stats: dict = {"bias": 0, "bn": 0, "ls": 0, "skipped": 0}
        leaves = replace(record, zeroings=tuple(z for z in record.zeroings if z.data_port is not None))
        if len(leaves.zeroings) < len(record.zeroings):
            notes.append(f"recover: {len(record.zeroings) - len(leaves.zeroings)} residual-stream zeroings "
                         "not compensated (bias and ls work on leaves' input channels only)")
        if record.zeroings:
            if "bias" in self.method:
                stats["bias"] = self._fold_bias(ir, original, leaves, fit_x, notes, others)
            if "bn" in self.method:
                stats["bn"] = self._reestimate_bn(ir, original, record, fit_x, others)
            if "ls" in self.method:
                stats["ls"] = self._least_squares(ir, original, leaves, fit_x, notes, others)
                if "bn" in self.method:
                    self._reestimate_bn(ir, original, record, fit_x, others)
        stats["skipped"] = len(notes)
        summary = {"applied": True, "method": list(self.method), "fit_samples": len(fit_x),
                   "heldout_samples": n_hold, "biases_folded": stats["bias"],
                   "batchnorms_reestimated": stats["bn"], "consumers_refit": stats["ls"], "notes": notes}
        if n_hold:
            ref = collect(original, [out_name], hold_x, others)[out_name]
            after = collect(ir, [out_name], hold_x, others)[out_name]
            summary.update(heldout_error_before=relative_error(before, ref),
                           heldout_error_after=relative_error(after, ref))
            summary["helped"] = summary["heldout_error_after"] < summary["heldout_error_before"]
            if hold_y is not None and ref.ndim == 2 and hold_y.dtype.kind in "iu":
                summary.update(heldout_top1_original=float((ref.argmax(1) == hold_y).mean()),
                               heldout_top1_before=float((before.argmax(1) == hold_y).mean()),
                               heldout_top1_after=float((after.argmax(1) == hold_y).mean()))
            if not summary["helped"]:
                notes.append("recover: the held-out output error did not go down "
                             f"({summary['heldout_error_before']:.4g} -> {summary['heldout_error_after']:.4g})")
        ctx.report["recovery"] = summary
        changed = bool(stats["bias"] or stats["bn"] or stats["ls"])
        if changed:   # read by finetune's start=auto (finetune.is_recovered)
            ir.props.metadata_props[RECOVERED_METADATA_KEY] = json.dumps(
                {"method": ",".join(self.method), "heldout_error": summary.get("heldout_error_after")})
        return PassResult(changed, stats, notes)

    # ------------------------------------------------------------------ 1. bias
    def _fold_bias(self, ir: Graph, original: Graph, record: SliceRecord, x: np.ndarray,
                   notes: list[str], others=None) -> int:
        todo = []
        for z in record.zeroings:
            node = original.node(z.node)
            data = original.inputs_of(node)[z.data_port]
            if _kind(original, node, z) is None:
                notes.append(f"recover: bias of {z.node} ({node.op_type}) not compensated: "
                             f"only {SUPPORTED} are")
                continue
            todo.append((z, node, data.name))
        if not todo:
            return 0
        acts = collect(original, sorted({d for _, _, d in todo}), x, others)
        done = 0
        for z, node, data in todo:
            mean = acts[data].astype(np.float64).mean(axis=0, keepdims=True)   # per position
            w = np.asarray(original.const_array(original.inputs_of(node)[z.weight_port]), np.float64)
            removed = np.zeros_like(w)
            index = [slice(None)] * w.ndim
            index[z.weight_axis] = list(z.positions)
            removed[tuple(index)] = w[tuple(index)]
            delta = _contribution(original, node, mean, removed)
            if _add_bias(ir, z.node, delta, record):
                done += 1
        return done

    # ------------------------------------------------------------------ 2. batch norm
    def _reestimate_bn(self, ir: Graph, original: Graph, record: SliceRecord, x: np.ndarray, others=None) -> int:
        changed = {z.node for z in record.zeroings}
        tainted: set[str] = set()
        bn_before: dict[str, set[str]] = {}   # BN -> target BNs upstream of it
        upstream: dict[str, set[str]] = {}
        targets: list[str] = []
        for node in ir.topo_nodes():
            prods = [ir.producer(v) for v in ir.inputs_of(node) if v is not None]
            prods = [p for p in prods if p is not None]
            up = set().union(*(upstream[p.name] for p in prods)) if prods else set()
            if node.name in changed or any(p.name in tainted for p in prods):
                tainted.add(node.name)
            if node.op_type == "BatchNormalization" and node.name in tainted and node.name not in changed:
                targets.append(node.name)
                bn_before[node.name] = set(up)
                up = up | {node.name}
            upstream[node.name] = up
        if not targets:
            return 0
        names = {b: ir.inputs_of(b)[0].name for b in targets}
        inputs = collect(original, sorted(set(names.values())), x, others)   # the original's, once
        reference = {b: _channel_stats(inputs[names[b]]) for b in targets}
        done: set[str] = set()
        opset = opset_of(ir)
        while len(done) < len(targets):
            ready = [b for b in targets if b not in done and bn_before[b] <= done]
            acts = collect(ir, sorted({names[b] for b in ready}), x, others)
            for b in ready:
                node = ir.node(b)
                rw = Rewriter(ir, node, opset)
                keep = record.keeps.get(names[b])
                mu, sd = reference[b]
                if keep is not None:
                    mu, sd = mu[keep[1]], sd[keep[1]]
                new_mu, new_sd = _channel_stats(acts[names[b]])
                m, v = np.asarray(rw.const(3), np.float64), np.asarray(rw.const(4), np.float64)
                eps = float(node.attr("epsilon", 1e-5))
                ratio = np.where(sd > 1e-8, new_sd / np.maximum(sd, 1e-8), 1.0)
                # the pruned input, normalized, gets the mean and spread the original's had
                var = np.maximum(ratio ** 2 * (v + eps) - eps, 0.0)
                mean = np.where(sd > 1e-8, new_mu - (mu - m) * ratio, m + new_mu - mu)
                rw.set_const(3, mean.astype(np.float32))
                rw.set_const(4, var.astype(np.float32))
                done.add(b)
        return len(targets)

    # ------------------------------------------------------------------ 3. least squares
    def _least_squares(self, ir: Graph, original: Graph, record: SliceRecord, x: np.ndarray,
                       notes: list[str], others=None) -> int:
        names = [n.name for n in ir.topo_nodes()]
        leaves = sorted({z.node for z in record.zeroings}, key=names.index)
        rng = np.random.default_rng(0)
        opset = opset_of(ir)
        done = 0
        for leaf in leaves:
            z = next(z for z in record.zeroings if z.node == leaf)
            node = ir.node(leaf)
            kind = _kind(ir, node, z)
            if kind is None:
                notes.append(f"recover: {leaf} ({node.op_type}) not refit: only {SUPPORTED} are")
                continue
            data = ir.inputs_of(node)[z.data_port].name
            out = original.outputs_of(original.node(leaf))[0].name   # a MatMul's may be renamed here
            inp = collect(ir, [data], x, others)[data]
            target = collect(original, [out], x, others)[out]
            keep = record.keeps.get(out)
            if keep is not None:
                target = np.compress(keep[1], target, axis=keep[0])
            w = ir.const_array(ir.inputs_of(node)[1])
            if kind == "conv":
                a = conv_attrs(node, w.shape)
                cols = im2col(inp, a["kernel"], a["strides"], a["dilations"], a["pads"])
                rows = cols.reshape(-1, cols.shape[-1])
                t = target.transpose(0, 2, 3, 1).reshape(-1, target.shape[1])
            elif kind == "matmul":   # [..., K] @ [K, N]: every leading position is a row
                rows, t = inp.reshape(-1, inp.shape[-1]), target.reshape(-1, target.shape[-1])
            else:
                rows, t = inp.reshape(len(inp), -1), target.reshape(len(target), -1)
            if len(rows) > MAX_ROWS:
                pick = rng.choice(len(rows), MAX_ROWS, replace=False)
                rows, t = rows[pick], t[pick]
            theta = _ridge(rows.astype(np.float64), t.astype(np.float64), self.ridge)
            weights, bias = theta[:-1].T, theta[-1]               # [O, K], [O]
            rw = Rewriter(ir, node, opset)
            if kind == "conv":
                rw.set_const(1, weights.reshape(w.shape).astype(w.dtype))
                _set_bias(ir, leaf, bias.astype(w.dtype), 2)
            elif kind == "matmul":   # the fit's target has no bias: the original's Add adds it back
                rw.set_const(1, weights.T.reshape(w.shape).astype(w.dtype))
                before = _matmul_bias(original, original.node(leaf), target.shape[-1] if keep is None
                                      else len(keep[1]))
                if keep is not None:
                    before = before[keep[1]]
                _set_matmul_bias(ir, leaf, before + bias)
            else:
                alpha = float(node.attr("alpha", 1.0) or 1.0)
                beta = float(node.attr("beta", 1.0))
                b = weights / alpha if node.attr("transB", 0) else (weights / alpha).T
                rw.set_const(1, b.reshape(w.shape).astype(w.dtype))
                if beta == 0:
                    notes.append(f"recover: {leaf} (Gemm with beta=0): bias not refit")
                else:
                    _set_bias(ir, leaf, (bias / beta).astype(w.dtype), 2)
            done += 1
        return done


def _channel_stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (axis 1) mean and standard deviation over every other axis."""
    flat = np.moveaxis(np.asarray(a, np.float64), 1, 0).reshape(a.shape[1], -1)
    return flat.mean(axis=1), flat.std(axis=1)


def _ridge(a: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
    """argmin ‖[a 1]θ − t‖² + λ·mean(diag(aᵀa))·‖θ_w‖²: the last row of θ is the bias."""
    a1 = np.concatenate([a, np.ones((len(a), 1))], axis=1)
    gram = a1.T @ a1
    reg = lam * float(np.mean(np.diag(gram)[:-1])) if a.shape[1] else 0.0
    gram[np.arange(a.shape[1]), np.arange(a.shape[1])] += reg
    return np.linalg.solve(gram, a1.T @ t) if np.linalg.matrix_rank(gram) == len(gram) \
        else np.linalg.lstsq(gram, a1.T @ t, rcond=None)[0]


SUPPORTED = "2-D Conv with group 1, Gemm and MatMul with a 2-D constant weight"


def _kind(g: Graph, node, z) -> str | None:
    """'conv', 'gemm' or 'matmul' when ``recover`` can work on this leaf, else None."""
    w = g.const_array(g.inputs_of(node)[z.weight_port]) if z.weight_port < g.input_arity(node) else None
    if w is None:
        return None
    if node.op_type == "Conv" and z.weight_port == 1 and z.data_port == 0 and z.weight_axis == 1 \
            and conv_attrs(node, w.shape) is not None:
        return "conv"
    if node.op_type == "Gemm" and z.weight_port == 1 and z.data_port == 0 and not node.attr("transA", 0) \
            and w.ndim == 2:
        return "gemm"
    if node.op_type == "MatMul" and z.weight_port == 1 and z.data_port == 0 and z.weight_axis == 0 and w.ndim == 2:
        return "matmul"
    return None


def _contribution(g: Graph, node, mean: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The removed channels' expected contribution to each output channel, averaged over
    output positions: ``mean`` is the batch mean of the input ([1, C, H, W] or [1, K])."""
    if node.op_type == "Conv":
        a = conv_attrs(node, removed.shape)
        cols = im2col(mean, a["kernel"], a["strides"], a["dilations"], a["pads"])   # [1, H', W', CK]
        per_position = cols.reshape(-1, cols.shape[-1]) @ removed.reshape(len(removed), -1).T
        return per_position.mean(axis=0)
    if node.op_type == "MatMul":   # no mixing across positions: the mean over all of them
        return mean.reshape(-1, mean.shape[-1]).mean(axis=0) @ removed
    alpha = float(node.attr("alpha", 1.0) or 1.0)
    b = removed.T if node.attr("transB", 0) else removed        # [K, N]
    beta = float(node.attr("beta", 1.0))
    return alpha * (mean.reshape(1, -1) @ b)[0] / (beta if beta else 1.0)


def _add_bias(ir: Graph, name: str, delta: np.ndarray, record: SliceRecord) -> bool:
    """Add ``delta`` (original output channels) to the pruned node's bias (port 2)."""
    node = ir.node(name)
    if node.op_type == "Gemm" and float(node.attr("beta", 1.0)) == 0:
        return False
    out = ir.outputs_of(node)[0].name
    keep = record.keeps.get(out)
    if keep is not None:
        delta = delta[keep[1]]
    if node.op_type == "MatMul":
        _set_matmul_bias(ir, name, _matmul_bias(ir, node, len(delta)) + delta)
        return True
    w = ir.const_array(ir.inputs_of(node)[1])
    ins = ir.inputs_of(node)
    old = ir.const_array(ins[2]) if len(ins) > 2 and ins[2] is not None else None
    if old is None and len(ins) > 2 and ins[2] is not None:
        return False   # a computed bias: leave it
    current = np.zeros(len(delta)) if old is None else np.broadcast_to(np.asarray(old, np.float64).reshape(-1)
                                                                       if np.size(old) > 1 else old, delta.shape)
    _set_bias(ir, name, (current + delta).astype(w.dtype), 2)
    return True


def _set_bias(ir: Graph, name: str, bias: np.ndarray, port: int) -> None:
    node = ir.node(name)
    ins = ir.inputs_of(node)
    if len(ins) > port and ins[port] is not None:
        Rewriter(ir, node, opset_of(ir)).set_const(port, bias)
        return
    value = ir.unique_name(f"{name}.bias")
    ir.add_initializer(Initializer.from_array(value, bias))
    if len(ins) > port:
        ir.set_input(node, port, value)
    else:  # the node again with one more input (same name, attributes and outputs)
        names = [v.name if v is not None else "" for v in ins] + [""] * (port - len(ins)) + [value]
        outs = [v.name if v is not None else "" for v in ir.outputs_of(node)]
        ir.remove_node(node)
        ir.add_node(node, names, outs)


# ----------------------------------------------------------------------------- MatMul's bias
def _bias_add(g: Graph, node) -> tuple | None:
    """(the Add, its constant port) that holds MatMul ``node``'s bias: the Add alone reads the
    MatMul's output (not a graph output) and its other operand is a constant that varies along the
    last axis only; None when there is no such Add."""
    out = g.outputs_of(node)[0]
    uses = g.consumers(out)
    if len(uses) != 1 or g.is_graph_output(out):
        return None
    add, port = uses[0]
    if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or g.input_arity(add) != 2 or port > 1:
        return None
    c = g.const_array(g.inputs_of(add)[1 - port])
    if c is None or c.dtype.kind != "f" or any(d != 1 for d in c.shape[:-1]):
        return None
    return add, 1 - port


def _matmul_bias(g: Graph, node, n: int) -> np.ndarray:
    """MatMul ``node``'s bias as ``n`` float64 values (zeros without a bias Add)."""
    slot = _bias_add(g, node)
    if slot is None:
        return np.zeros(n)
    c = np.asarray(g.const_array(g.inputs_of(slot[0])[slot[1]]), np.float64).reshape(-1)
    return np.broadcast_to(c, (n,)).copy()


def _set_matmul_bias(ir: Graph, name: str, bias: np.ndarray) -> None:
    """Make MatMul ``name``'s bias ``bias`` ([N]): written into its bias Add's constant (a copy
    when shared), or a new ``Add(MatMul(...), bias)`` that takes over the MatMul's output name."""
    node = ir.node(name)
    w = ir.const_array(ir.inputs_of(node)[1])
    slot = _bias_add(ir, node)
    if slot is not None:
        add, port = slot
        old = ir.const_array(ir.inputs_of(add)[port])
        shape = (len(bias),) if old.ndim <= 1 else old.shape[:-1] + (len(bias),)
        Rewriter(ir, add, opset_of(ir)).set_const(port, bias.reshape(shape).astype(old.dtype))
        return
    out = ir.outputs_of(node)[0].name
    pre = ir.unique_name(f"{out}.matmul")
    ins = [v.name if v is not None else "" for v in ir.inputs_of(node)]
    ir.remove_node(node)
    ir.add_node(node, ins, [pre])
    value = ir.unique_name(f"{name}.bias")
    ir.add_initializer(Initializer.from_array(value, bias.astype(w.dtype)))
    ir.add_node(Node(ir.unique_name(f"{name}.bias_add", kind="n"), "Add"), [pre, value], [out])
