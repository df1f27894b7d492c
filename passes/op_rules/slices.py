"""Slice rules: how a node's constants and attributes shrink once channels leave its inputs and
outputs. ``Rewriter`` is all a rule may change (constants un-shared first, written through
Transpose/Cast links so the stored layout and dtype are kept)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from ir import Graph, Node

from . import quantized
from .channels import conv_group_widths
from .computed import expanded_constant, gather_kept, select_kept, zero_filled
from .derived import ELEMENTWISE, derived_constants, gather_derived
from .reindex import _clamp_range
from .views import DEFAULT_DOMAINS, _axis, fed_input, own_constant


# ----------------------------------------------------------------------------- slicing
@dataclass
class Rewriter:
    """What a slice rule may change on one node: its constant inputs and its attributes.
    Constants are never written in place when shared: the node gets its own copy."""

    graph: Graph
    node: Node
    opset: int
    shapes: Mapping[str, tuple] = field(default_factory=dict)  # tag's value shapes (slice's rules)

    def __post_init__(self) -> None:
        quantized.forget()  # the QDQ weights the previous node's rule read

    def const(self, port: int) -> np.ndarray | None:
        ins = self.graph.inputs_of(self.node)
        if port >= len(ins) or ins[port] is None:
            return None
        arr = self.graph.const_array(ins[port])
        quantized.note_read(self.graph, ins[port], arr)  # a QDQ weight: cut as integers (set_const)
        return arr

    def set_const(self, port: int, array: np.ndarray) -> None:

        if quantized.write(self.graph, self.node, port, array,
                           lambda node, p, arr: Rewriter(self.graph, node, self.opset).set_const(p, arr)):
            return  # a QDQ weight: its integers (or the float constant quantized) cut, its form kept
        value = self.graph.inputs_of(self.node)[port]
        if self._write_through(value, np.asarray(array)):
            return
        init = self.graph.initializer(value.name)
        old = init.array if init is not None else self.graph.const_array(value)  # None: a computed operand frozen
        dtype = array.dtype if old is None else old.dtype
        own_constant(self.graph, self.node, port, np.asarray(array).astype(dtype, copy=False),
                     f"{value.name}.{self.node.name}" if init is not None else f"{self.node.name}.in{port}")

    def _write_through(self, value, array: np.ndarray) -> bool:
        """A weight behind single-use Transpose / Cast links from an initializer (PyTorch's
        MatMul(x, Transpose(W)), a float16 weight behind a Cast): undo each link and rewrite the
        initializer itself, so the model keeps its layout and its dtype."""
        from ir import Initializer  # local: only transforms build initializers

        g = self.graph
        if g.initializer(value.name) is not None:
            return False  # a plain initializer: set_const's own path
        while g.initializer(value.name) is None:
            prod = g.producer(value)
            if prod is None or prod.domain not in DEFAULT_DOMAINS or prod.op_type not in ("Transpose", "Cast") \
                    or g.num_consumers(value) != 1 or g.is_graph_output(value):
                return False
            if prod.op_type == "Transpose":
                perm = prod.attr("perm") or list(range(array.ndim))[::-1]
                array = np.transpose(array, np.argsort(perm))
            value = g.inputs_of(prod)[0]  # a Cast is undone below: the values came from its source
            if value is None:
                return False
        init = g.initializer(value.name)
        if g.num_consumers(value) != 1 or g.is_graph_output(value) or fed_input(g, value.name):
            return False
        g.replace_initializer(Initializer.from_array(value.name, array.astype(init.array.dtype)))
        return True

    def set_attr(self, key: str, value) -> None:
        self.node = self.node.with_attr(key, value)
        self.graph.replace_node(self.node)


Keeps = dict[int, tuple[int, np.ndarray, int]]   # port -> (axis, keep mask along it, rank)


RUN_COPY_MIN = 1 << 20   # elements of a weight from which kept runs are copied as blocks


def _runs(arr: np.ndarray, axis: int, keep: np.ndarray) -> list[tuple[int, int, int]] | None:
    """``(start, end, source)``: kept positions ``source..`` along ``axis`` land at ``start:end``;
    None unless ``arr`` is a large weight, ``axis`` an inner one and the kept positions come in
    runs of 16 or more on average (VGG's first Linear reads 49 positions per channel)."""
    if axis == 0 or arr.size < RUN_COPY_MIN or len(keep) != arr.shape[axis]:
        return None
    idx = np.flatnonzero(keep)
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    if not len(idx) or (len(breaks) + 1) * 16 > len(idx):
        return None
    starts, ends = [0] + breaks.tolist(), breaks.tolist() + [len(idx)]
    return [(s, e, int(idx[s])) for s, e in zip(starts, ends)]


def _take(arr: np.ndarray, axis: int, keep: np.ndarray) -> np.ndarray:
    """``np.compress(keep, arr, axis)``; kept runs (``_runs``) copied one block per run:
    ``compress`` copies one element at a time along an inner axis (0.25 s for VGG-16's 25088
    inputs)."""
    return _take_axes(arr, [(axis, keep)])


def memory_order(arr: np.ndarray) -> tuple[int, ...] | None:
    """The axes of ``arr`` outermost first in memory, when they are not its own order and
    ``arr.transpose`` of them is C-contiguous (PyTorch's ``MatMul(x, Transpose(W))``: the weight a
    rule reads is a transposed view of W); else None."""
    if arr.ndim < 2 or arr.flags.c_contiguous:
        return None
    perm = tuple(int(a) for a in np.argsort([-s for s in arr.strides], kind="stable"))
    return perm if arr.transpose(perm).flags.c_contiguous else None


def _take_axes(arr: np.ndarray, takes: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """``_take_cut``; a cut of a QDQ weight's values remembers which integers it kept."""
    out = _take_cut(arr, takes)
    quantized.note_take(arr, out, lambda pos: _take_cut(pos, takes))
    return out


def _take_cut(arr: np.ndarray, takes: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """``_take`` along each ``(axis, keep)`` (distinct axes) in turn; a take along axis 0 with one
    in runs along an inner axis in one pass, without the intermediate (half of VGG-16's first
    Linear, 205 MB: 0.4 s against 0.08). A transposed view is cut in its memory order (a gather
    along the strided axis of a transposed ViT weight: 0.15 s of 1.2)."""
    if (perm := memory_order(arr)) is not None:
        out = _take_cut(arr.transpose(perm), [(perm.index(axis), keep) for axis, keep in takes])
        return out.transpose(np.argsort(perm))
    takes = sorted(takes, key=lambda t: t[0])
    rows = None
    if takes and takes[0][0] == 0 and len(takes) == 2 and len(takes[0][1]) == arr.shape[0]:
        rows = np.flatnonzero(takes[0][1])
        takes = takes[1:]
    runs = _runs(arr, *takes[0]) if len(takes) == 1 else None
    if runs is None:
        if rows is not None:
            arr = np.take(arr, rows, axis=0)
        for axis, keep in takes:
            arr = np.compress(keep, arr, axis=axis)
        return arr
    axis = takes[0][0]
    kept = runs[-1][1]
    out = np.empty((len(rows) if rows is not None else arr.shape[0],) + arr.shape[1:axis] + (kept,)
                   + arr.shape[axis + 1:], arr.dtype)
    head = (slice(None),) * axis
    first = (rows,) + head[1:] if rows is not None else head
    for s, e, src in runs:
        out[head + (slice(s, e),)] = arr[first + (slice(src, src + e - s),)]
    return out


def _slice_conv(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 in outs and outs[0][0] != 1:
        return  # channels passing along a spatial axis of a pointwise Conv (``pointwise_along``)
    w = rw.const(1)
    transposed = rw.node.op_type == "ConvTranspose"
    out_axis, in_axis = (1, 0) if transposed else (0, 1)
    group = rw.node.attr("group", 1)
    new_w = w
    if group > 1:  # whole groups go: output filters (Conv) or input rows (ConvTranspose)
        _, w_in, _ = conv_group_widths(rw.node, w)
        keep_in = ins[0][1] if 0 in ins else np.ones(group * w_in, bool)
        per_group = keep_in.reshape(group, w_in)
        assert np.all(per_group.all(axis=1) | ~per_group.any(axis=1)), "a group is cut partly"
        new_w = _take(w, 0, keep_in) if transposed else _take(w, 0, outs[0][1]) if 0 in outs else w
        if new_w is not w:
            rw.set_const(1, new_w)
        rw.set_attr("group", int(per_group.all(axis=1).sum()))
    else:
        takes = ([(out_axis, outs[0][1])] if 0 in outs else []) + ([(in_axis, ins[0][1])] if 0 in ins else [])
        if takes:
            rw.set_const(1, _take_axes(w, takes))
    if 0 in outs and rw.const(2) is not None:
        rw.set_const(2, _take(rw.const(2), 0, outs[0][1]))


def _slice_gemm(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    w = rw.const(1)
    trans_b = rw.node.attr("transB", 0)
    takes = []
    if 0 in outs:
        takes.append((0 if trans_b else 1, outs[0][1]))
        c = rw.const(2)
        if c is not None and c.ndim >= 1 and c.shape[-1] == len(outs[0][1]) and c.shape[-1] > 1:
            rw.set_const(2, _take(c, c.ndim - 1, outs[0][1]))
    if 0 in ins:
        takes.append((1 if trans_b else 0, ins[0][1]))
    if takes:
        rw.set_const(1, _take_axes(w, takes))


def _slice_matmul(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    w = rw.const(1)
    if w is None or w.ndim != 2 or rw.const(0) is not None:
        return  # a MatMul of two activations (attention heads): nothing of its own to cut
    if 0 in ins and ins[0][0] != ins[0][2] - 1:
        return  # channels on a row or batch axis pass (``channels._matmul``): the weight stays
    takes = ([(1, outs[0][1])] if 0 in outs else []) + ([(0, ins[0][1])] if 0 in ins else [])
    if takes:
        rw.set_const(1, _take_axes(w, takes))


def weight_sources(graph: Graph) -> dict[str, str]:
    """Each Gemm's weight initializer before slicing (for ``share_zero_fed``)."""
    out = {}
    for node in graph.nodes():
        ins = graph.inputs_of(node)
        if node.op_type == "Gemm" and len(ins) > 1 and ins[1] is not None \
                and graph.initializer(ins[1].name) is not None:
            out[node.name] = ins[1].name
    return out


def share_zero_fed(graph: Graph, keeps: dict, sources: dict[str, str]) -> int:
    """A Gemm fed zeros (an unrolled cell's first step: ``Gemm(Expand(0.0, [B, 24]), R)``, R the
    recurrent weight the later steps share and cut the rows of) computes its bias whatever its
    weight's rows: it Gathers the kept columns of its zero input and reads the weight the others
    cut, where that weight equals its own on the kept rows. Returns how many were."""
    count = 0
    for name, source in sorted(sources.items()):
        if not graph.has_node(name):
            continue
        node = graph.node(name)
        ins = graph.inputs_of(node)
        if node.attr("transA", 0) or ins[0] is None or ins[0].name in keeps:
            continue
        const = expanded_constant(graph, ins[0], shared=True)
        own = graph.const_array(ins[1]) if ins[1] is not None else None
        if const is None or own is None or np.any(const[2] != 0) or not np.all(np.isfinite(own)):
            continue
        k_axis = 1 if node.attr("transB", 0) else 0
        for other in sorted(n for n, src in sources.items() if src == source and n != name):
            if not graph.has_node(other):
                continue
            o = graph.node(other)
            o_ins = graph.inputs_of(o)
            if o.attr("transA", 0) or o.attr("transB", 0) != node.attr("transB", 0) \
                    or o_ins[0] is None or o_ins[0].name not in keeps or keeps[o_ins[0].name][0] != 1:
                continue
            keep, cut = keeps[o_ins[0].name][1], graph.const_array(o_ins[1])
            declared = graph.value(ins[0].name).shape
            if cut is None or len(keep) != own.shape[k_axis] or declared is None or len(declared) != 2 \
                    or declared[1] != len(keep) or not np.array_equal(_take(own, k_axis, keep), cut):
                continue
            gather_kept(graph, node, 0, 1, keep)
            graph.set_input(node, 1, o_ins[1].name)
            count += 1
            break
    return count


def retie(graph: Graph, shared: set[str], before: set[str]) -> int:
    """Share again what slicing un-shared (``Rewriter.set_const`` copies a shared constant before
    cutting it): a new initializer equal to a once-shared one (a tied lm_head: the embedding
    table's columns cut by its Gather, the same columns by the Transpose behind the lm_head) is
    replaced by it. Returns how many were."""
    inits = graph.initializers
    originals = [inits[n] for n in sorted(shared) if n in inits]
    count = 0
    for name in sorted(set(inits) - before):
        copy = inits[name]
        for orig in originals:
            if orig.array.shape == copy.array.shape and orig.array.dtype == copy.array.dtype \
                    and np.array_equal(orig.array, copy.array) and not graph.is_graph_output(name):
                for node, port in graph.consumers(name):
                    graph.set_input(node, port, orig.name)
                count += 1
                break
    return count


def _slice_embedding(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """An embedding table (``roots._embedding_root``) loses the columns of removed channels; a
    Gather along the channel axis (``reindex._gather_channels``) loses their indices."""
    if 0 in ins and _axis(rw.node.attr("axis", 0), ins[0][2]) == ins[0][0]:
        _slice_gather(rw, ins[0][1])
        return
    table = rw.const(0)
    if 0 in ins or 0 not in outs or table is None or table.ndim != 2 or len(outs[0][1]) != table.shape[1]:
        return
    rw.set_const(0, _take(table, 1, outs[0][1]))


def _slice_gather(rw: Rewriter, keep: np.ndarray) -> None:
    idx = np.asarray(rw.const(1), dtype=np.int64)
    idx = np.where(idx < 0, idx + len(keep), idx)
    spread = next(i for i, d in enumerate(idx.shape) if d > 1)
    kept = np.compress(keep[idx.ravel()], idx.ravel())
    renumber = np.cumsum(keep) - 1
    shape = list(idx.shape)
    shape[spread] = len(kept)
    rw.set_const(1, renumber[kept].reshape(shape).astype(rw.const(1).dtype))


def _slice_per_channel_params(first: int, last: int):
    """BatchNormalization / InstanceNormalization: 1-D parameters indexed by channel."""
    def rule(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
        keep = ins[0][1]
        for port in range(first, last + 1):
            arr = rw.const(port)
            if arr is not None and arr.ndim == 1 and len(arr) == len(keep):
                rw.set_const(port, arr[keep])
    return rule


def _slice_broadcast_constants(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Per-channel constants of an elementwise op (Caffe-style scale, PRelu slope, ...)."""
    if 0 not in outs:
        return
    axis, keep, out_rank = outs[0]
    for port, value in enumerate(rw.graph.inputs_of(rw.node)):
        if value is None or port in ins:
            continue
        arr = rw.const(port)
        if arr is None:
            if not gather_derived(rw.graph, rw.node, port, value, axis, keep, out_rank):
                _slice_expanded(rw, port, value, axis, keep, out_rank)
            continue
        a = axis - (out_rank - arr.ndim)
        if a >= 0 and arr.shape[a] == len(keep) and arr.shape[a] > 1 \
                and not select_kept(rw.graph, rw.node, port, arr, a, keep):
            rw.set_const(port, _take(arr, a, keep))


def _slice_expanded(rw: Rewriter, port: int, value, axis: int, keep: np.ndarray, out_rank: int) -> None:
    """A constant Expand-ed to the batch (``channels._expanded_rows``): this reader Gathers its
    kept channels from the Expand's output (other readers may cut it differently); zeros of a
    computed shape (``channels._zero_state``) likewise."""
    if zero_filled(rw.graph, value):
        shape = rw.shapes.get(value.name) or rw.graph.value(value.name).shape
        a = axis - (out_rank - len(shape)) if shape is not None else -1
        if len(keep) > 1 and 0 <= a < len(shape) and shape[a] == len(keep):
            gather_kept(rw.graph, rw.node, port, a, keep)
        return
    const = expanded_constant(rw.graph, value, shared=True)
    if const is None or const[0] is None:
        return
    arr, shape = const[2], rw.graph.value(value.name).shape
    rank = len(shape) if shape is not None else arr.ndim   # the Expand's output rank
    a = axis - (out_rank - rank)
    k = a - (rank - arr.ndim)
    wide = shape is not None and 0 <= a < rank and shape[a] == len(keep)  # broadcast along the channels
    if len(keep) > 1 and ((k >= 0 and arr.shape[k] == len(keep)) or (wide and (k < 0 or arr.shape[k] == 1))):
        gather_kept(rw.graph, rw.node, port, a, keep)


def _slice_reshape(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 not in outs:
        return
    axis, keep, _ = outs[0]
    in_axis = ins[0][0] if 0 in ins else None
    zero_copies = not rw.node.attr("allowzero", 0)
    if rw.opset < 5:
        target = np.array(rw.node.attr("shape"), dtype=np.int64)
    elif rw.const(1) is None:
        return  # a computed target the channel rule found right as it is (a -1 on the channels)
    else:
        target = np.array(rw.const(1), dtype=np.int64).copy()
    if zero_copies and in_axis is not None and in_axis < len(target) and target[in_axis] == 0:
        target[in_axis] = len(ins[0][1])  # a 0 there copied the input's channel count: keep it
    if target[axis] != -1:
        target[axis] = int(keep.sum())
    if rw.opset < 5:
        rw.set_attr("shape", [int(t) for t in target])
    else:
        rw.set_const(1, target)


def _slice_slice(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Channel-axis bounds move to the kept positions: start' = kept before start, end' = kept
    before end (step 1 only; see ``_slice``)."""
    if 0 not in ins:
        return
    axis, keep, rank = ins[0]
    if rw.opset < 10:
        starts, ends, axes = (list(rw.node.attr(k)) if rw.node.attr(k) is not None else None
                              for k in ("starts", "ends", "axes"))
    else:
        starts, ends = [np.array(rw.const(p), dtype=np.int64).copy() for p in (1, 2)]
        axes = rw.const(3)
    axes = list(range(len(starts))) if axes is None else [_axis(int(a), rank) for a in np.ravel(axes)]
    if axis not in axes:
        return
    i = axes.index(axis)
    start, end = _clamp_range(int(starts[i]), int(ends[i]), len(keep))
    starts[i], ends[i] = int(keep[:start].sum()), int(keep[:max(start, end)].sum())
    if rw.opset < 10:
        rw.set_attr("starts", [int(v) for v in starts])
        rw.set_attr("ends", [int(v) for v in ends])
    else:
        rw.set_const(1, np.asarray(starts))
        rw.set_const(2, np.asarray(ends))


def _slice_pad(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    """Zeros added on the channel axis (``reindex._channel_padding``): as many as are kept of them
    before and after the input's channels (the input's own kept channels say where those start)."""
    if 0 not in outs:
        return
    axis, keep, rank = outs[0]
    width = len(ins[0][1]) if 0 in ins else None
    if width == len(keep):
        return  # nothing added on the channel axis (a spatial Pad): its pads stay
    if rw.opset < 11:
        pads = list(rw.node.attr("pads") or rw.node.attr("paddings"))
    else:
        pads = np.array(rw.const(1), dtype=np.int64).ravel().copy()
    axes = list(range(rank))
    if rw.opset >= 18 and len(rw.graph.inputs_of(rw.node)) > 3 and rw.graph.inputs_of(rw.node)[3] is not None:
        axes = [_axis(int(a), rank) for a in np.ravel(rw.const(3))]
    if axis not in axes:
        return
    i, n = axes.index(axis), len(axes)
    before, after = int(pads[i]), int(pads[i + n])
    width = len(keep) - before - after if width is None else width
    pads[i], pads[i + n] = int(keep[:before].sum()), int(keep[before + width:].sum())
    if rw.opset < 11:
        rw.set_attr("pads" if rw.node.attr("pads") is not None else "paddings", [int(v) for v in pads])
    else:
        rw.set_const(1, np.asarray(pads, dtype=np.int64))


def _slice_split(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if 0 not in ins:
        return
    axis, keep, rank = ins[0]
    if _axis(rw.node.attr("axis", 0), rank) != axis:
        return
    sizes = rw.node.attr("split") if rw.opset < 13 else rw.const(1)
    explicit = sizes is not None
    if not explicit:  # equal parts (reindex._split_sizes checked they are): written out below
        parts = len(rw.graph.outputs_of(rw.node))
        if rw.opset >= 18 and rw.node.attr("num_outputs") is not None:
            parts = int(rw.node.attr("num_outputs"))
        sizes = [len(keep) // parts] * parts
    offsets = np.concatenate(([0], np.cumsum(np.ravel(sizes))))
    new = [int(keep[offsets[p]:offsets[p + 1]].sum()) for p in range(len(offsets) - 1)]
    if rw.opset < 13:
        rw.set_attr("split", new)
    elif explicit:
        rw.set_const(1, np.asarray(new, dtype=np.int64))
    elif len(set(new)) > 1:  # the parts shrank unevenly: Split-13/18 takes an explicit list instead
        from ir import Initializer  # local: only transforms build initializers

        node = rw.node
        attrs = {k: v for k, v in node.attrs.items() if k != "num_outputs"}
        rw.node = type(node)(node.name, node.op_type, node.domain, attrs, node.doc_string)
        rw.graph.replace_node(rw.node)
        name = rw.graph.unique_name(f"{node.name}.split")
        rw.graph.add_initializer(Initializer.from_array(name, np.asarray(new, dtype=np.int64)))
        rw.graph.set_input(rw.node, 1, name)  # port 1: an empty name in its place, or a new port


def _slice_resize(rw: Rewriter, ins: Keeps, outs: Keeps) -> None:
    if rw.node.op_type != "Resize" or rw.opset < 11:
        return
    ins_list = rw.graph.inputs_of(rw.node)
    if len(ins_list) > 3 and ins_list[3] is not None:
        axis, keep, _ = outs[0]
        if rw.const(3) is None:
            return  # computed sizes that adapt by themselves (adaptive.computed_sizes)
        sizes = np.array(rw.const(3), dtype=np.int64).copy()
        sizes[axis] = int(keep.sum())
        rw.set_const(3, sizes)


# ----------------------------------------------------------------------------- derived chains cut in place
# (op_rules/derived.py: operands whose channels come only from constants)
READERS = ("Add", "Sub", "Mul", "Div")


def _walk(graph: Graph, value: str, axis: int, out_rank: int, length: int):
    """The chain behind a derived operand: ``(constants, nodes, wide values)``, wide values being
    those of extent ``length`` on the channel axis (the others do not change when it is cut)."""
    consts = derived_constants(graph, value, axis, out_rank, length)
    if consts is None:
        return None
    wide: dict[str, bool] = {}

    def is_wide(v: str) -> bool:
        if v not in wide:
            wide[v] = False
            prod = graph.producer(v)
            if prod is not None and prod.domain in DEFAULT_DOMAINS and prod.op_type in ELEMENTWISE \
                    and graph.const_array(v) is None:
                below = [is_wide(i.name) for i in graph.inputs_of(prod)   # every input walked: no short cut
                         if i is not None and graph.const_array(i) is None]
                wide[v] = any(p.name == prod.name for p, *_ in consts) or any(below)
        return wide[v]

    is_wide(value)
    values = {v for v, w in wide.items() if w}
    return consts, {graph.producer(v).name for v in values}, values


def cut_in_place(graph: Graph, keeps: dict, opset: int) -> int:
    """Before the slice rules: a derived operand chain (tf2onnx's LayerNorm scale and shift) whose
    wide values are read only by its own nodes and by readers that all keep the same channels has
    its constants cut in place, so it computes only the kept channels (the readers then find
    nothing to Gather). Any other chain is left to ``gather_derived``. Returns the chains cut."""
    entries = []
    for node in graph.topo_nodes():
        outs = graph.outputs_of(node)
        if node.op_type not in READERS or node.domain not in DEFAULT_DOMAINS or not outs or outs[0] is None \
                or outs[0].name not in keeps:
            continue
        axis, keep, rank = keeps[outs[0].name]
        for v in graph.inputs_of(node):
            if v is None or v.name in keeps or graph.const_array(v) is not None or len(keep) < 2:
                continue
            walk = _walk(graph, v.name, axis, rank, len(keep))
            if walk is not None and walk[2]:
                entries.append((node.name, keep, walk, axis, rank))
    components: list[list] = []
    for entry in entries:  # chains sharing a node are cut together or not at all
        joined = [c for c in components if any(entry[2][1] & e[2][1] for e in c)]
        merged = [entry] + [e for c in joined for e in c]
        components = [c for c in components if not any(c is j for j in joined)] + [merged]
    cut = 0
    for comp in components:
        keep = comp[0][1]
        if any(not np.array_equal(e[1], keep) for e in comp):
            continue
        nodes = set().union(*(e[2][1] for e in comp))
        wide = set().union(*(e[2][2] for e in comp))
        readers = {e[0] for e in comp}
        if any(graph.is_graph_output(w) or any(c.name not in nodes | readers for c, _ in graph.consumers(w))
               for w in wide):
            continue
        done = set()
        for _, _, (consts, _, _), _, _ in comp:
            for owner, port, arr, a in consts:
                if (owner.name, port) not in done:
                    done.add((owner.name, port))
                    Rewriter(graph, owner, opset).set_const(port, _take(arr, a, keep))
        axis, rank = comp[0][3], comp[0][4]
        for w in wide:  # their declared shapes follow
            value = graph.value(w)
            if value is None or value.shape is None:
                continue
            dims = list(value.shape)
            a = axis - (rank - len(dims))
            if 0 <= a < len(dims) and dims[a] == len(keep):
                dims[a] = int(keep.sum())
                graph.set_value_type(w, onnx.helper.make_tensor_type_proto(value.elem_type, dims))
        cut += 1
    return cut
