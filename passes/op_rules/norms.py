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

from .slices import Keeps, Rewriter
from .views import Effect, NodeView, _axis, _only, _same_all, blocked


# ----------------------------------------------------------------------------- channel rules
def _layernorm(view: NodeView) -> Effect:
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach LayerNormalization parameters")
    start = _axis(view.node.attr("axis", -1), m.rank)
    if m.axis < start:  # it normalizes other axes only: channels pass untouched
        return _same_all(view, m)
    if start != m.rank - 1:
        return blocked("LayerNormalization normalizes the channel axis together with other axes")
    if any(view.output_used(p) for p in (1, 2)):
        return blocked("LayerNormalization's mean / inverse std outputs are read")
    for port in (1, 2):
        if port >= view.n_inputs() or view.input_name(port) is None:
            continue
        arr = view.const(port)
        if arr is None:
            return blocked("LayerNormalization scale or bias is not a constant")
        if arr.ndim > 1 and int(np.prod(arr.shape[:-1])) != 1:
            return blocked("LayerNormalization scale or bias varies along other axes")
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

    def op(self, op_type: str, inputs: list[str], tag: str, out: str | None = None, **attrs) -> str:
        name = self.graph.unique_name(f"{self.base}/{tag}", kind="n")
        out = out or self.graph.unique_name(f"{self.base}/{tag}_output")
        node = Node(name, op_type, "", {k: onnx.helper.make_attribute(k, v) for k, v in attrs.items()})
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
    n, _ = emit_normalize(e, x, [-1], r, float(node.attr("epsilon", 1e-5)), centered=True)
    if bias is None:
        e.op("Mul", [n, e.const("stream_scale", scale)], "stream_scaled", out=y)
    else:
        s = e.op("Mul", [n, e.const("stream_scale", scale)], "stream_scaled")
        e.op("Add", [s, e.const("stream_bias", bias)], "stream_shifted", out=y)
