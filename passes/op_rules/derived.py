"""Operands whose channel axis comes from constants only: a per-channel constant scaled or shifted
by values that do not vary along the channels.

tf2onnx writes Keras' LayerNormalization (ConvNeXt's, over the channel axis after its transpose
optimizer) with the scale folded into the inverse standard deviation before it meets the data:

    m  = Mul(Reciprocal(Sqrt(Add(var, eps))), gamma[1, C, 1, 1])     # [N, C, H, W], no data channel
    y  = Add(Mul(x, m), Add(Mul(Neg(mean), m), beta[1, C, 1, 1]))

``m`` and the shift carry C channels, but only because ``gamma`` and ``beta`` do: every other
operand of the elementwise nodes computing them has extent 1 on the channel axis (the statistics).
Channel ``c`` of such an operand is a function of channel ``c`` of its constants alone, so a reader
that keeps channels ``K`` of its data reads channels ``K`` of the operand: ``slice`` cuts the
constants in place when only the chain's own nodes and readers keeping the same channels read its
wide values (``slices.cut_in_place``), else has each reader Gather them (``gather_derived``; the
chain stays as it is for whoever else reads it), and the proof's masked original zeroes the
removed channels in those constants
(``streams.stream_zeroings``), so the operand is zero there as a plain per-channel constant is.

Anything else in the chain (a tracked value, an operand varying along the channels without a
constant behind it, an op outside ``ELEMENTWISE``) and the operand is untracked data, as before.
"""

from __future__ import annotations

import numpy as np

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
