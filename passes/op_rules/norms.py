"""Normalizations over the channel axis (the residual stream of transformers and ConvNeXt).

A LayerNormalization whose normalized axis is the channel axis mixes channels through its
statistics, so it used to block them. It need not: when every writer of a stream channel is
removed (the roots adding into the stream, the constants added or concatenated to it), that
channel is exactly zero in the masked original (``streams.stream_zeroings`` zeroes them there,
with the normalization's own scale and bias, so its output is zero there too). The pruned
normalization then computes what the original computes on a stream with zeros in it: its
statistics keep the original channel count. With ``K`` of ``C`` channels kept, ``r = K / C``:

    mean = r · mean_K(x)                      (the zeros add nothing to the sum)
    var  = r · mean_K((x - mean)²) + (1 - r) · mean²   (each zero channel adds mean²)

so ``slice`` rewrites the node into that decomposed form (``_slice_layernorm``). The channel
rule passes the ids on unchanged and marks them ``stream``: ``classify`` flags the group,
``mask{stream=R}`` sets its ratio, ``slice`` records the extra zeroings for the proof.

Example: ViT's ``ln_1(x)`` with x [N, 17, 768] and half the stream removed: ReduceMean over 384
channels × 0.5, then the variance as above, then scale and bias cut to the 384 kept channels.
"""

from __future__ import annotations

import numpy as np
import onnx

from ir import Graph, Initializer, Node

from .slices import Keeps, Rewriter, _slice_per_channel_params
from .views import DEFAULT_DOMAINS, Effect, NodeView, _axis, _only, _same_all, blocked


# ----------------------------------------------------------------------------- channel rules
def _layernorm(view: NodeView) -> Effect:
    op = view.node.op_type
    m = _only(view, 0)
    if m is None:
        return blocked(f"channels reach {op} parameters")
    start = _axis(view.node.attr("axis", -1), m.rank)
    if m.axis < start:  # it normalizes other axes only: channels pass untouched
        return _same_all(view, m)
    if start != m.rank - 1:
        return blocked(f"{op} normalizes the channel axis together with other axes")
    if any(view.output_used(p) for p in range(1, view.n_outputs())):
        return blocked(f"{op}'s mean / inverse std outputs are read")
    for port in (1, 2):
        if port >= view.n_inputs() or view.input_name(port) is None:
            continue
        arr = view.const(port)
        if arr is None:
            return blocked(f"{op} scale or bias is not a constant")
        if arr.ndim > 1 and int(np.prod(arr.shape[:-1])) != 1:
            return blocked(f"{op} scale or bias varies along other axes")
    return Effect(outputs={0: m}, stream=True)


# ----------------------------------------------------------------------------- slicing
class _Emit:
    """Adds the nodes of a rewritten normalization next to ``node`` (unique names, constants
    as initializers of ``dtype``)."""

    def __init__(self, graph: Graph, node: Node, opset: int, dtype):
        self.graph, self.base, self.opset, self.dtype = graph, node.name, opset, dtype
        self.made: dict[str, str] = {}

    def const(self, tag: str, value) -> str:
        if tag in self.made:  # one initializer per tag (the kept fraction is used twice)
            return self.made[tag]
        name = self.made[tag] = self.graph.unique_name(f"{self.base}/{tag}")
        arr = np.asarray(value)
        arr = arr.astype(self.dtype) if arr.dtype.kind == "f" else arr
        self.graph.add_initializer(Initializer.from_array(name, arr))
        return name

    def op(self, op_type: str, inputs: list[str], tag: str, out: str | None = None, doc: str = "", **attrs) -> str:
        name = self.graph.unique_name(f"{self.base}/{tag}", kind="n")
        out = out or self.graph.unique_name(f"{self.base}/{tag}_output")
        node = Node(name, op_type, "", {k: onnx.helper.make_attribute(k, v) for k, v in attrs.items()}, doc)
        self.graph.add_node(node, inputs, [out])
        return out

    def mean(self, x: str, axes: list[int], tag: str) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const("stream_axes", np.asarray(axes, np.int64))], tag,
                           keepdims=1)
        return self.op("ReduceMean", [x], tag, axes=axes, keepdims=1)


def emit_normalize(e: _Emit, x: str, axes: list[int], r: float, eps: float, centered: bool) -> str:
    """``(x - mean) / sqrt(var + eps)`` (``centered``) or ``x / sqrt(mean(x²) + eps)`` over
    ``axes``, whose statistics count a fraction ``1 - r`` of zero channels that are gone."""
    if centered:
        m = e.op("Mul", [e.mean(x, axes, "stream_mean_kept"), e.const("stream_kept_fraction", r)], "stream_mean")
        d = e.op("Sub", [x, m], "stream_centered")
        q = e.op("Mul", [e.mean(e.op("Mul", [d, d], "stream_sq"), axes, "stream_sq_mean_kept"),
                         e.const("stream_kept_fraction", r)], "stream_sq_mean")
        gone = e.op("Mul", [e.op("Mul", [m, m], "stream_mean_sq"), e.const("stream_gone_fraction", 1.0 - r)],
                    "stream_gone_var")
        var = e.op("Add", [q, gone], "stream_var")
    else:
        d = x
        var = e.op("Mul", [e.mean(e.op("Mul", [x, x], "stream_sq"), axes, "stream_sq_mean_kept"),
                           e.const("stream_kept_fraction", r)], "stream_sq_mean")
    std = e.op("Sqrt", [e.op("Add", [var, e.const("stream_epsilon", eps)], "stream_var_eps")], "stream_std")
    return e.op("Div", [d, std], "stream_normalized"), d


def _param(rw: Rewriter, port: int, keep: np.ndarray) -> np.ndarray | None:
    arr = rw.const(port)
    if arr is None:
        return None
    return np.compress(keep, arr, axis=arr.ndim - 1) if arr.shape[-1] == len(keep) and len(keep) > 1 else arr


def _slice_layernorm(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """A LayerNormalization over the channel axis becomes its decomposed form with the
    statistics of the original width (see the module doc); over other axes it is untouched."""
    if 0 not in ins:
        return
    axis, keep, rank = ins[0]
    g, node = rw.graph, rw.node
    if _axis(node.attr("axis", -1), rank) != axis:
        return
    scale, bias = _param(rw, 1, keep), _param(rw, 2, keep)
    x = g.inputs_of(node)[0].name
    y = g.outputs_of(node)[0].name
    dtype = (scale if scale is not None else np.zeros(0, np.float32)).dtype
    g.remove_node(node)
    e = _Emit(g, node, rw.opset, dtype)
    r = float(keep.sum()) / len(keep)
    n, _ = emit_normalize(e, x, [-1], r, float(node.attr("epsilon", 1e-5)),
                          centered=node.op_type == "LayerNormalization")
    if bias is None:
        e.op("Mul", [n, e.const("stream_scale", scale)], "stream_scaled", out=y)
    else:
        s = e.op("Mul", [n, e.const("stream_scale", scale)], "stream_scaled")
        e.op("Add", [s, e.const("stream_bias", bias)], "stream_shifted", out=y)


# ----------------------------------------------------------------------------- decomposed forms
# Reductions over the channel axis that a decomposed normalization computes (tf2onnx, jax2onnx and
# torch write LayerNorm and RMSNorm as ReduceMean/Sub/Pow/Sqrt/Div): on a stream with zeros in the
# removed channels a sum is unchanged and a mean scales by kept/original; the mean of a centered
# square (x - mean(x))² also misses the removed channels' mean² each.
STAT_REDUCES = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2")


def reduced_axes(graph: Graph, node: Node, rank: int, opset: int) -> list[int] | None:
    """The axes a Reduce* node reduces (sorted, non-negative), None when they are not constant."""
    since = 13 if node.op_type == "ReduceSum" else 18
    if opset < since:
        axes = node.attr("axes")
    else:
        ins = graph.inputs_of(node)
        if len(ins) < 2 or ins[1] is None:
            axes = None
        else:
            axes = graph.const_array(ins[1])
            if axes is None:
                return None
    if axes is None or len(np.ravel(axes)) == 0:
        if node.attr("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted({_axis(int(a), rank) for a in np.ravel(axes)})


SCALED_MEAN = "onnxpruner: a mean over a pruned stream, scaled by kept/original"


def centered_mean(graph: Graph, value) -> str | None:
    """The mean ``m`` when ``value`` is ``(x - m)²`` (Pow(d, 2) or Mul(d, d), d = Sub(x, m)) with
    ``m`` a ReduceMean of ``x``; else None."""
    prod = graph.producer(value)
    if prod is None or prod.domain not in DEFAULT_DOMAINS:
        return None
    ins = graph.inputs_of(prod)
    if prod.op_type == "Pow":
        e = graph.const_array(ins[1]) if len(ins) > 1 and ins[1] is not None else None
        if e is None or e.size != 1 or float(np.ravel(e)[0]) != 2.0:
            return None
        d = ins[0]
    elif prod.op_type == "Mul" and len(ins) == 2 and ins[0] is not None and ins[1] is not None \
            and ins[0].name == ins[1].name:
        d = ins[0]
    else:
        return None
    sub = graph.producer(d) if d is not None else None
    if sub is None or sub.op_type != "Sub":
        return None
    x, m = graph.inputs_of(sub)
    mean = mean_node(graph, m.name) if m is not None else None
    if mean is None or mean.op_type != "ReduceMean" or graph.inputs_of(mean)[0] is None \
            or graph.inputs_of(mean)[0].name != x.name:
        return None
    return m.name


# what tf2onnx leaves between a mean and its Sub when its transpose optimizer moved the mean
# from NHWC to NCHW: a Reshape of the [N, 1, H, W] statistic (a value constant along the channels
# in any layout the Sub accepts; the correction below holds for any such value)
MEAN_VIEWS = ("Reshape", "Identity", "Unsqueeze", "Squeeze")


def mean_node(graph: Graph, value: str):
    """The node computing the mean ``value`` (through ``MEAN_VIEWS`` of it and a correction
    slice already applied), or None."""
    mean = graph.producer(value)
    for _ in range(4):
        if mean is None:
            return None
        if mean.doc_string == SCALED_MEAN:  # a mean slice already corrected
            mean = graph.producer(graph.inputs_of(mean)[0])
        elif mean.op_type in MEAN_VIEWS and mean.domain in DEFAULT_DOMAINS and graph.inputs_of(mean)[0] is not None:
            mean = graph.producer(graph.inputs_of(mean)[0])
        else:
            return mean
    return None


def _reduce(view: NodeView, fallback) -> Effect:
    """A reduction over the channel axis of a stream (a decomposed normalization's statistics):
    the statistic has no channel axis left, and the reduced ids become a stream. Over other
    axes: ``fallback`` (the plain reduction rule)."""
    m = _only(view, 0)
    if m is None:
        return fallback(view)
    axes = reduced_axes(view.graph, view.node, m.rank, view.opset)
    if axes is None or m.axis not in axes:
        return fallback(view)
    op = view.node.op_type
    if op not in STAT_REDUCES:
        return blocked(f"{op} over the channel axis mixes channels")
    centered = centered_mean(view.graph, view.input_name(0))
    if centered is not None and op != "ReduceMean":
        return blocked(f"{op} of a centered square over the channel axis")
    if centered is not None and _reduced_elsewhere(view, centered, axes, m.rank):
        return blocked("a centered square reduced over other axes than its mean")
    return Effect(outputs={}, stream=True)


def _reduced_elsewhere(view: NodeView, mean_value: str, axes: list[int], rank: int) -> bool:
    node = mean_node(view.graph, mean_value)
    return reduced_axes(view.graph, node, rank, view.opset) != axes


def _slice_reduce(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """A mean over the channel axis of a stream scales by kept/original; the mean of a centered
    square adds the removed channels' ``(1 - r)·mean²``; sums are unchanged."""
    if 0 not in ins or rw.node.op_type != "ReduceMean":
        return
    axis, keep, rank = ins[0]
    g, node = rw.graph, rw.node
    if axis not in (reduced_axes(g, node, rank, rw.opset) or []):
        return
    r = float(keep.sum()) / len(keep)
    x = g.inputs_of(node)[0].name
    centered = centered_mean(g, x)
    inputs = [v.name if v is not None else "" for v in g.inputs_of(node)]
    y = g.outputs_of(node)[0].name
    g.remove_node(node)
    kept = g.unique_name(f"{y}/kept")
    g.add_node(Node(node.name, node.op_type, node.domain, dict(node.attrs), node.doc_string), inputs, [kept])
    dtype = _value_dtype(g, y)
    e = _Emit(g, node, rw.opset, dtype)
    if centered is None:
        e.op("Mul", [kept, e.const("stream_kept_fraction", r)], "stream_scaled_mean", out=y, doc=SCALED_MEAN)
        return
    q = e.op("Mul", [kept, e.const("stream_kept_fraction", r)], "stream_scaled_mean")
    gone = e.op("Mul", [e.op("Mul", [centered, centered], "stream_mean_sq"),
                        e.const("stream_gone_fraction", 1.0 - r)], "stream_gone_var")
    e.op("Add", [q, gone], "stream_var", out=y)


def _value_dtype(graph: Graph, name: str):
    value = graph.value(name)
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(value.elem_type)
    except Exception:
        return np.float32


# ----------------------------------------------------------------------------- group norms
def _instancenorm_one_group(view: NodeView, fallback) -> Effect:
    """torch's GroupNorm with one group (PoolFormer's GroupNorm1: a LayerNorm over C×H×W) is
    ``InstanceNormalization(Reshape(x, [N, 1, -1]))``: the channels sit on the last axis, each
    repeated H×W times, normalized together. That is a LayerNorm over the last axis with one
    scale and bias for all of it: a stream, pruned with the same correction (``r`` = kept
    elements / original ones = kept channels / original ones). Otherwise: ``fallback``."""
    m = _only(view, 0)
    shape = view.shape(0)
    if m is None or m.axis != m.rank - 1 or m.rank != 3 or shape is None or shape[1] != 1:
        return fallback(view)
    for port in (1, 2):
        arr = view.const(port)
        if arr is None or arr.size != 1:
            return blocked("InstanceNormalization scale or bias is not a constant of its one group")
    return Effect(outputs={0: m}, stream=True)


def _slice_instancenorm(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """One group over the last axis (``_instancenorm_one_group``): the decomposed form with the
    original statistics, its scalar scale and bias as they were; else per-channel parameters."""
    if 0 not in ins or ins[0][0] != ins[0][2] - 1:
        return _slice_per_channel_params(1, 2)(rw, ins, outs)
    _, keep, _ = ins[0]
    g, node = rw.graph, rw.node
    scale, bias = rw.const(1), rw.const(2)
    x, y = g.inputs_of(node)[0].name, g.outputs_of(node)[0].name
    g.remove_node(node)
    e = _Emit(g, node, rw.opset, scale.dtype)
    n, _ = emit_normalize(e, x, [-1], float(keep.sum()) / len(keep), float(node.attr("epsilon", 1e-5)), True)
    s = e.op("Mul", [n, e.const("stream_scale", scale.reshape(1, 1, 1))], "stream_scaled")
    e.op("Add", [s, e.const("stream_bias", bias.reshape(1, 1, 1))], "stream_shifted", out=y)



def _groupnorm(view: NodeView) -> Effect:
    """GroupNormalization (opset 18): the channels of a group are normalized together, so a
    group is one class (whole groups go; no other group's statistics change)."""
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach GroupNormalization parameters")
    if m.axis != 1:
        return blocked("GroupNormalization sees channels off axis 1")
    groups = int(view.node.attr("num_groups", 0) or 0)
    if groups < 1 or len(m) % groups:
        return blocked(f"GroupNormalization of {len(m)} channels in {groups} groups")
    for port in (1, 2):
        if view.const(port) is None:
            return blocked("GroupNormalization scale or bias is not a constant")
    ids = m.ids.reshape(groups, -1)
    tracked = ids >= 0
    if np.any(tracked.any(axis=1) & ~tracked.all(axis=1)):
        return blocked("GroupNormalization mixes pruned channels with untracked data in one group")
    first = np.broadcast_to(ids[:, :1], ids.shape)
    couplings = [(first[tracked], ids[tracked])]
    return Effect(outputs={0: m}, couplings=couplings)


def _slice_groupnorm(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 not in ins:
        return
    _, keep, _ = ins[0]
    groups = int(rw.node.attr("num_groups"))
    per_group = keep.reshape(groups, -1).all(axis=1)
    for port in (1, 2):
        arr = rw.const(port)
        if arr is not None and arr.ndim == 1 and len(arr) in (groups, len(keep)):
            rw.set_const(port, arr[per_group] if len(arr) == groups and groups != len(keep) else arr[keep])
    rw.set_attr("num_groups", int(per_group.sum()))
