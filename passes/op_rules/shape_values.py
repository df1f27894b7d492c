"""The integer shape-value evaluator: folds Shape→Gather→Concat sub-graphs to numbers, each element
carrying its taint (the Shape dims it was computed from), so computed Reshape targets, Slice
bounds, Split and Resize sizes read as numbers and are rewritten where they must change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ir import Graph, Node

from .views import DEFAULT_DOMAINS, _axis


# ----------------------------------------------------------------------------- shape values
# Integer sub-graphs that compute shapes (Shape→Gather→Concat→Reshape, a Slice's end as
# Shape[1] // 2). Each value is folded to its number in the original model when every input is a
# constant or a static shape, and every element carries its *taint*: the (value, axis) dims of
# the Shape nodes it was computed from. After pruning a dim on a channel axis changes, so a
# tainted element is only right where a slice rule rewrites it (SHAPE_OPERANDS); anywhere else
# the channels of that value are blocked (see trees).

Taint = frozenset  # of (value name, axis); axis "*" when the Shape's rank is unknown
_NO_TAINT: Taint = frozenset()
# markers in a taint (value name None): the element is not static; (None, "=N") when it is exactly
# the symbolic dim N (a dynamic batch read by Shape, moved by Gather/Concat but not computed on)
UNKNOWN = (None, "?")


def _blur(taint: np.ndarray) -> np.ndarray:
    """After arithmetic an element equal to a symbolic dim is just unknown."""
    fix = np.frompyfunc(lambda t: frozenset(UNKNOWN if a is None else (a, b) for a, b in t), 1, 1)
    return np.asarray(fix(taint), object).reshape(np.shape(taint)) if np.size(taint) else taint


def _known(taint: Taint) -> bool:
    return not any(a is None for a, _ in taint)
_union = np.frompyfunc(lambda a, b: a | b, 2, 1)
SHAPE_VALUE_LIMIT = 1024  # larger integer tensors are data, not shapes


@dataclass
class ShapeValue:
    """A folded integer tensor (``value`` None when it is not static) and its per-element taint
    (an object array of frozensets, or one frozenset for the whole value when not static)."""

    value: np.ndarray | None
    taint: np.ndarray | Taint

    def union(self) -> Taint:
        if isinstance(self.taint, frozenset):
            return self.taint
        return frozenset().union(*self.taint.ravel()) if self.taint.size else _NO_TAINT

    def static(self) -> bool:
        return self.value is not None and _known(self.union())


def _untainted(value: np.ndarray) -> ShapeValue:
    taint = np.empty(value.shape, object)
    taint.fill(_NO_TAINT)
    return ShapeValue(value, taint)


def _shape_of(node: Node, ins: list, shape, name: str, opset: int) -> ShapeValue:
    if shape is None:
        return ShapeValue(None, frozenset({(name, "*"), UNKNOWN}))
    rank = len(shape)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start, end = (max(0, min(rank, _axis(a, rank))) for a in (start, end))
    taint = np.empty(max(0, end - start), object)
    for i, a in enumerate(range(start, end)):
        d = shape[a]
        mark = set() if isinstance(d, int) else {(None, f"={d}") if isinstance(d, str) and d else UNKNOWN}
        taint[i] = frozenset({(name, a)} | mark)
    value = [d if isinstance(d, int) else 1 for d in shape[start:end]]  # 1: a placeholder
    return ShapeValue(np.asarray(value, np.int64), taint)


def _elementwise(fn):
    def rule(node, ins, opset):
        arrays = [sv.value for sv in ins]
        out = fn(*arrays)
        taints = np.broadcast_arrays(*[np.asarray(sv.taint, object) for sv in ins])
        t = taints[0]
        for other in taints[1:]:
            t = _union(t, other)
        return ShapeValue(np.asarray(out), _blur(np.asarray(t, object).reshape(np.shape(out))))
    return rule


def _int_div(a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):  # ONNX integer Div truncates toward zero
        q = np.abs(a) // np.maximum(np.abs(b), 1)
        return (np.sign(a) * np.sign(b) * q).astype(np.result_type(a, b))
    return np.true_divide(a, b)


def _fold_gather(node, ins, opset):
    axis = node.attr("axis", 0)
    idx = ins[1].value
    return ShapeValue(np.take(ins[0].value, idx, axis=axis), np.take(ins[0].taint, idx, axis=axis))


def _fold_axes(node, ins, opset, since=13):
    axes = node.attr("axes") if opset < since else (ins[1].value if len(ins) > 1 else None)
    return None if axes is None else [int(a) for a in np.ravel(axes)]


def _fold_unsqueeze(node, ins, opset):
    axes = _fold_axes(node, ins, opset)
    v, t = ins[0].value, ins[0].taint
    rank = v.ndim + len(axes)
    shape = list(v.shape)
    for a in sorted(_axis(a, rank) for a in axes):  # np.expand_dims one axis at a time, as a shape
        if not -len(shape) - 1 <= a <= len(shape):
            raise np.exceptions.AxisError(a, len(shape) + 1)
        shape.insert(a if a >= 0 else a + len(shape) + 1, 1)
    return ShapeValue(v.reshape(shape), np.reshape(t, shape))


def _fold_squeeze(node, ins, opset):
    axes = _fold_axes(node, ins, opset)
    v, t = ins[0].value, ins[0].taint
    axes = tuple(i for i, d in enumerate(v.shape) if d == 1) if axes is None else \
        tuple(_axis(a, v.ndim) for a in axes)
    return ShapeValue(np.squeeze(v, axes), np.squeeze(t, axes))


def _fold_concat(node, ins, opset):
    axis = node.attr("axis", 0)
    return ShapeValue(np.concatenate([sv.value for sv in ins], axis=axis),
                      np.concatenate([np.asarray(sv.taint, object) for sv in ins], axis=axis))


def _fold_slice(node, ins, opset):
    v, t = ins[0].value, ins[0].taint
    if opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    else:
        starts, ends = ins[1].value, ins[2].value
        axes = ins[3].value if len(ins) > 3 and ins[3] is not None else None
        steps = ins[4].value if len(ins) > 4 and ins[4] is not None else None
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * v.ndim
    for a, b, e, st in zip(np.ravel(axes), np.ravel(starts), np.ravel(ends), np.ravel(steps)):
        index[_axis(int(a), v.ndim)] = slice(int(b), int(e), int(st))
    return ShapeValue(v[tuple(index)], t[tuple(index)])


def _fold_cast(node, ins, opset):
    import onnx  # local: only this rule needs the type table

    dtype = onnx.helper.tensor_dtype_to_np_dtype(node.attr("to"))
    return ShapeValue(ins[0].value.astype(dtype), ins[0].taint)


def _whole(fn):
    """An op whose output shape depends on its operands' values (Range, ConstantOfShape,
    Expand): every output element carries the taint of every input."""
    def rule(node, ins, opset):
        out = np.asarray(fn(node, *[None if sv is None else sv.value for sv in ins]))
        taint = frozenset().union(*(sv.union() for sv in ins if sv is not None))
        t = np.empty(out.shape, object)
        t.fill(taint)
        return ShapeValue(out, _blur(t))
    return rule


def _constant_of_shape(node, shape):
    import onnx  # local: only this rule reads a tensor attribute

    value = node.attr("value")
    fill = onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    if int(np.prod(shape)) > SHAPE_VALUE_LIMIT:
        raise ValueError("too large to be a shape value")
    return np.full([int(d) for d in shape], fill.reshape(-1)[0], fill.dtype)


def _fold_reshape(node, ins, opset):
    v, t = ins[0].value, ins[0].taint
    target = [int(d) for d in np.ravel(ins[1].value)]
    if not node.attr("allowzero", 0):
        target = [v.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return ShapeValue(v.reshape(target), np.asarray(t, object).reshape(target))


def _fold_transpose(node, ins, opset):
    perm = node.attr("perm") or list(range(ins[0].value.ndim))[::-1]
    return ShapeValue(np.transpose(ins[0].value, perm), np.transpose(ins[0].taint, perm))


def _fold_reduce(fn, since: int = 18):
    """ReduceProd / ReduceSum / ReduceMax / ReduceMin of a shape value (tf2onnx's Tensordot
    target ``[Prod(Shape[:3]), Prod(Shape[3:])]``): each output element carries the taints of
    the elements it reduced, blurred (arithmetic on a symbolic dim is just unknown)."""
    def rule(node, ins, opset):
        v, t = ins[0].value, np.asarray(ins[0].taint, object)
        axes = _fold_axes(node, ins, opset, since)
        if axes is None or len(axes) == 0:
            if node.attr("noop_with_empty_axes", 0):
                return ins[0]
            axes = list(range(v.ndim))
        axes = sorted({_axis(a, v.ndim) for a in axes})
        if any(v.shape[a] == 0 for a in axes):
            raise ValueError("an empty reduction is no shape value")
        keep = bool(node.attr("keepdims", 1))
        out = fn(v, axis=tuple(axes), keepdims=keep)
        for a in reversed(axes):
            t = _union.reduce(t, axis=a, keepdims=keep)
        return ShapeValue(np.asarray(out, v.dtype), _blur(np.asarray(t, object).reshape(np.shape(out))))
    return rule


def _mod(node, a, b):
    return np.fmod(a, b) if node.attr("fmod", 0) else np.mod(a, b)


SHAPE_RULES: dict[str, Callable] = {
    "Identity": lambda node, ins, opset: ins[0],
    "Cast": _fold_cast,
    "Gather": _fold_gather,
    "Unsqueeze": _fold_unsqueeze,
    "Squeeze": _fold_squeeze,
    "Concat": _fold_concat,
    "Slice": _fold_slice,
    "Reshape": _fold_reshape,
    "Transpose": _fold_transpose,
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _elementwise(_int_div),
    "Floor": _elementwise(np.floor),
    "Ceil": _elementwise(np.ceil),
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Max": _elementwise(np.maximum),
    "Min": _elementwise(np.minimum),
    "Equal": _elementwise(np.equal),
    "Less": _elementwise(np.less),
    "Greater": _elementwise(np.greater),
    "Not": _elementwise(np.logical_not),
    "Where": _elementwise(np.where),
    "ReduceProd": _fold_reduce(np.prod),
    "ReduceSum": _fold_reduce(np.sum, since=13),
    "ReduceMax": _fold_reduce(np.max),
    "ReduceMin": _fold_reduce(np.min),
    "Mod": _whole(_mod),
    "Range": _whole(lambda node, start, limit, delta: np.arange(start, limit, delta)),
    "ConstantOfShape": _whole(_constant_of_shape),
    "Expand": _whole(lambda node, x, shape: x * np.ones([int(d) for d in shape], x.dtype)),
}

# Operands a slice rule rewrites as constants (a computed one is frozen to its folded value
# first, then rewritten for the channels removed): op -> ports.
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Resize": (1, 2, 3),
    "Expand": (1,),   # repeat_kv's target: its channel entry becomes the kept count (streams._slice_expand)
}


@dataclass
class FoldedShapes:
    """Shape values of a graph: folded (static) ones by value name, taints of every shape value,
    and the nodes that computed them."""

    static: dict[str, np.ndarray]
    values: dict[str, ShapeValue]
    nodes: set[str]


def fold_shapes(graph: Graph, shapes: dict[str, tuple], opset: int) -> FoldedShapes:
    """The graph's shape values folded; remembered on the graph until it changes or is asked with
    other shapes for a value a Shape node reads (tag, trees and slice each ask; on ViT-B/16 a fold
    is ~30 ms). Callers read the result and never change it."""
    cached = graph.memo.get("fold_shapes")
    if cached is not None and cached[0] == (graph.version, opset) and \
            all(shapes.get(name) == shape for name, shape in cached[1].items()):
        return cached[2]
    read: dict[str, tuple | None] = {}
    folded = _fold_shapes(graph, shapes, opset, read)
    graph.memo["fold_shapes"] = ((graph.version, opset), read, folded)
    return folded


def _fold_shapes(graph: Graph, shapes: dict[str, tuple], opset: int, read: dict) -> FoldedShapes:
    """``read``: filled with the entries of ``shapes`` the fold read (a Shape node's input's),
    the only ones its result depends on."""
    values: dict[str, ShapeValue] = {}
    nodes: set[str] = set()

    def lookup(v) -> ShapeValue | None:
        if v is None:
            return None
        if v.name in values:
            return values[v.name]
        init = graph.initializer(v.name)
        if init is not None and init.size > SHAPE_VALUE_LIMIT:
            return None  # a weight: never a shape value, and not decoded here
        arr = graph.const_array(v)
        if arr is not None and np.issubdtype(arr.dtype, np.integer) and arr.size <= SHAPE_VALUE_LIMIT:
            return _untainted(np.asarray(arr))
        return None

    for node in graph.topo_nodes():
        if node.domain not in DEFAULT_DOMAINS or (node.op_type != "Shape" and node.op_type not in SHAPE_RULES):
            continue
        outs = graph.outputs_of(node)
        if not outs or outs[0] is None:
            continue
        if node.op_type == "Shape":
            src = graph.inputs_of(node)[0]
            read[src.name] = shapes.get(src.name)
            values[outs[0].name] = _shape_of(node, [], read[src.name], src.name, opset)
            nodes.add(node.name)
            continue
        rule = SHAPE_RULES.get(node.op_type)
        if rule is None or len(outs) != 1:
            continue
        inputs = graph.inputs_of(node)
        ins = []
        for v in inputs:  # up to the first that is not a shape value (an ordinary op's data)
            ins.append(lookup(v))
            if v is not None and ins[-1] is None:
                break
        present = [sv for v, sv in zip(inputs, ins) if v is not None]
        if not present or any(sv is None for sv in present):
            continue  # reads data that is not a shape value: an ordinary op
        unknown = frozenset().union(*(sv.union() for sv in present)) | {UNKNOWN}
        if any(sv.value is None for sv in present):
            out = ShapeValue(None, unknown)
        else:
            try:
                out = rule(node, ins, opset)
            except Exception:  # an operand form this folder does not know: not static
                out = ShapeValue(None, unknown)
            if out.value is not None and out.value.size > SHAPE_VALUE_LIMIT:
                out = ShapeValue(None, out.union() | {UNKNOWN})
        values[outs[0].name] = out
        nodes.add(node.name)
    static = {k: sv.value for k, sv in values.items() if sv.static()}
    return FoldedShapes(static, values, nodes)
