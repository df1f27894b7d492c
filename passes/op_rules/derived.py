"""Operands whose channel axis comes from constants only: a per-channel constant scaled or shifted
by values that do not vary along the channels.

tf2onnx writes Keras' LayerNormalization (ConvNeXt's, over the channel axis after its transpose
optimizer) with the scale folded into the inverse standard deviation before it meets the data:

    m  = Mul(Reciprocal(Sqrt(Add(var, eps))), gamma[1, C, 1, 1])     # [N, C, H, W], no data channel
    y  = Add(Mul(x, m), Add(Mul(Neg(mean), m), beta[1, C, 1, 1]))

``m`` and the shift carry C channels, but only because ``gamma`` and ``beta`` do: every other
operand of the elementwise nodes computing them has extent 1 on the channel axis (the statistics).
Channel ``c`` of such an operand is a function of channel ``c`` of its constants alone, so a reader
that keeps channels ``K`` of its data reads channels ``K`` of the operand: ``slice`` has the reader
Gather them (``computed.gather_kept``; the operand's own nodes stay as they are, whoever else reads
them), and the proof's masked original zeroes the removed channels in those constants
(``streams.stream_zeroings``), so the operand is zero there as a plain per-channel constant is.

Anything else in the chain (a tracked value, an operand varying along the channels without a
constant behind it, an op outside ``ELEMENTWISE``) and the operand is untracked data, as before.
"""

from __future__ import annotations

import numpy as np
import onnx

from ir import Graph

from .views import DEFAULT_DOMAINS

# elementwise ops whose output channel c is a function of their inputs' channel c (or of an input
# broadcast along the channels)
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Neg", "Reciprocal", "Sqrt", "Identity")
MAX_VALUES = 32


def derived_constants(graph: Graph, value: str, axis: int, out_rank: int, length: int,
                      shapes: dict | None = None, maps: dict | None = None) -> list[tuple] | None:
    """``(node, port, array, array_axis)`` of each constant with ``length`` entries on the channel
    axis (``axis`` of a reader of rank ``out_rank``) in the elementwise chain computing ``value``,
    when that chain's other leaves have extent 1 on it and no value in it is tracked (``maps``);
    None otherwise. ``shapes`` (value -> shape) checks the extent of the non-constant leaves; the
    slice and proof phases pass None: the rule checked them before any node changed."""
    found: list[tuple] = []
    seen: set[str] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        if len(seen) > MAX_VALUES or (maps is not None and v in maps):
            return None
        prod = graph.producer(v)
        if prod is None or prod.domain not in DEFAULT_DOMAINS or prod.op_type not in ELEMENTWISE:
            if shapes is not None and not _one_along(shapes.get(v), axis, out_rank):
                return None   # a leaf that varies along the channels: data, not a constant's
            continue
        for port, inp in enumerate(graph.inputs_of(prod)):
            if inp is None:
                continue
            arr = graph.const_array(inp)
            if arr is None:
                stack.append(inp.name)
                continue
            a = axis - (out_rank - arr.ndim)
            if a < 0 or arr.shape[a] == 1:
                continue
            if arr.shape[a] != length:
                return None
            found.append((prod, port, arr, a))
    return found or None


def _one_along(shape, axis: int, out_rank: int) -> bool:
    if shape is None:
        return False
    a = axis - (out_rank - len(shape))
    return a < 0 or shape[a] == 1


def channels_from_constants(view, port: int, axis: int, out_rank: int, length: int) -> bool:
    """The rule's check: operand ``port`` of ``view``'s node is such a derived operand."""
    name = view.input_name(port)
    return name is not None and length > 1 and derived_constants(
        view.graph, name, axis, out_rank, length, view.shapes, view.known) is not None


def gather_derived(graph: Graph, node, port: int, value, axis: int, keep: np.ndarray, out_rank: int) -> bool:
    """``slice``: the reader ``node`` Gathers its kept channels from derived operand ``port``."""
    from .computed import gather_kept

    shape = graph.value(value.name).shape
    rank = len(shape) if shape is not None else out_rank
    a = axis - (out_rank - rank)
    if a < 0 or len(keep) < 2 or derived_constants(graph, value.name, axis, out_rank, len(keep)) is None:
        return False
    gather_kept(graph, node, port, a, keep)
    return True


# ----------------------------------------------------------------------------- cut in place
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
    from .slices import Rewriter, _take

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
