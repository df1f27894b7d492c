"""infer-shapes: recompute the shapes in value_info after a transform; drop stale ones.

Reads: the IR. Provides nothing new; keeps ``SliceRecord``. Only values that had a value_info
entry keep one (with the re-inferred type, or none where inference cannot tell), so a pruned
model carries no shape that disagrees with its weights.

``value_shapes(ir)`` is the shared helper analyses use: ONNX shape inference on a light copy of
the model (large initializers declared as typed inputs instead of copied).

Example: after slicing ``conv1`` from 64 to 32 channels, value_info ``relu1: [1,64,56,56]``
becomes ``[1,32,56,56]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx

import ir
from ir import Graph, raise_model, shape_of

from .analyses import SliceRecord
from .base import Pass, PassContext, PassResult, fewer_collections


def light_model(ir: Graph) -> onnx.ModelProto:
    """``raise_model(ir, light=True)``, a fresh copy the caller may change: the raise is remembered
    per graph version as bytes (tag asks up to four times on one version; a raise of ViT-B/16's
    2,250 nodes is ~30 ms, a parse of its bytes ~3)."""
    return onnx.ModelProto.FromString(_light_bytes(ir))


def _light_bytes(ir: Graph) -> bytes:
    """``light_model``'s serialized form, remembered per graph version."""
    cached = ir.memo.get("light_model")
    if cached is None or cached[0] != ir.version:
        cached = ir.memo["light_model"] = (ir.version, raise_model(ir, light=True).SerializeToString())
    return cached[1]


def inferred_types(ir: Graph, stated: bool = True) -> dict[str, onnx.TypeProto]:
    """ONNX shape inference's types by value name; ``stated=False`` infers from the nodes alone,
    ignoring the model's own value_info (which may be stale or wrong)."""
    model: onnx.ModelProto | bytes = _light_bytes(ir)  # inference reads bytes: no parse to write them again
    if not stated:
        model = onnx.ModelProto.FromString(model)
        del model.graph.value_info[:]
        for body, only in _lowered_bodies(ir, model):
            kept = [vi for vi in body.value_info if only is not None and vi.name not in only]
            del body.value_info[:]
            body.value_info.extend(kept)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference is advisory: an op it cannot handle leaves shapes unknown
        return {}
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input) \
            + [vi for body, only in _lowered_bodies(ir, inferred) for vi in list(body.value_info) + list(body.output)
               if only is None or vi.name in only]:
        if vi.HasField("type"):
            types[vi.name] = vi.type
    return types


def _lowered_bodies(ir: Graph, model: onnx.ModelProto) -> list[tuple[onnx.GraphProto, set | None]]:
    """The branches of the Ifs lowered into the IR (``ir/bodies.py``): their values are IR values
    (``None``); of a Loop / Scan body, only its lowered head's, named (the rest may reuse an
    outer name)."""
    from ir.bodies import BODY_OPS, body_values

    out, head = [], None
    for n in model.graph.node:
        if n.name in ir.props.bodies:
            if n.op_type in BODY_OPS and head is None:
                head = body_values(ir)
            out += [(a.g, head if n.op_type in BODY_OPS else None) for a in n.attribute
                    if a.type == onnx.AttributeProto.GRAPH]
    return out


def value_shapes(ir: Graph) -> dict[str, tuple]:
    shapes = {}
    for name, tp in inferred_types(ir).items():
        s = shape_of(tp)
        if s is not None:
            shapes[name] = s
    for value in ir.values():  # types the model states win over inferred ones
        if value.shape is not None and ir.initializer(value.name) is None:
            shapes.setdefault(value.name, value.shape)
    return shapes


def refresh_value_info(ir: Graph) -> int:
    """The input's value_info recomputed, not carried (before any pass): an entry shape inference
    gives a type for takes that type (jax2onnx writes NHWC shapes into the value_info of NCHW
    tensors); an entry with no type is dropped; the rest (after an op inference does not know)
    is kept. Returns how many entries changed."""
    fresh = inferred_types(ir, stated=False)
    changed = 0
    for name in sorted(ir.value_info_names):
        if not ir.has_value(name) or ir.initializer(name) is not None:
            continue
        old, new = ir.value(name).type, fresh.get(name)
        if new is not None and shape_of(new) is not None and new != old:
            ir.set_value_type(name, new)
            changed += 1
        elif old is None or not old.HasField("tensor_type") and not old.ListFields():
            ir.value_info_names.discard(name)
            changed += 1
    return changed


def lower_input(model: onnx.ModelProto, weights: dict | None = None) -> Graph:
    """The input as the passes see it: lowered, its own value_info recomputed (never carried stale).
    ``weights``: the arrays of a model ``ir.hollow`` made, shared by every lowering. The collector
    runs as seldom as while passes run (``fewer_collections``): a 128-layer decoder's lowering
    spent half its time in it."""
    with fewer_collections():
        graph = ir.lower(model, weights)
        refresh_value_info(graph)
    return graph


@dataclass(frozen=True)
class InferShapesPass(Pass):
    name: ClassVar[str] = "infer-shapes"
    preserves: ClassVar[tuple[type, ...]] = (SliceRecord,)

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:
        types = inferred_types(ir, stated=False)
        changed = dropped = 0
        for name in sorted(ir.value_info_names):
            if not ir.has_value(name) or ir.initializer(name) is not None:
                continue
            old = ir.value(name).type
            new = types.get(name)
            if new is not None and shape_of(new) is None:
                new = None
            if (old is None) != (new is None) or (old is not None and old != new):
                ir.set_value_type(name, new)
                changed += 1
                dropped += new is None
        return PassResult(changed > 0, {"updated": changed - dropped, "dropped": dropped})
