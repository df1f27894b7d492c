"""What the runtime behind the proof runs: checked before any pass, one line naming what is not.

onnxpruner proves a pruning by running the model in ONNX Runtime (training build 1.19.2). A model
outside what it runs cannot be proven, so it is refused up front: an IR version above 10, a
default-domain opset outside 7..21, or a node of a domain ONNX Runtime has no kernels for (a
custom op of another runtime), unless the model defines that op as a local function, or a graph
input or output the proof cannot exchange with it (bfloat16, float8, int4: numpy has no dtype for
them; an input that is a sequence, map or optional: the proof feeds tensors).

Before that, ``opened`` converts what it can: a model below opset 7 up (``upgraded``), and one at
opset 22..28 or IR version 11..14 down (``downgraded``) when the newer opsets and IR versions
change nothing it uses (``passes/newer_opsets.py``, written from a newer onnx's schemas).

Example: a jax2onnx export at opset 23 using RMSNormalization ->
``model.onnx: node 'rms' is op RMSNormalization, which exists from opset 23 on; ONNX Runtime
1.19.2 runs opset 7..21, so the model cannot be converted down to 21; re-export it at an opset in 7..21``.
"""

from __future__ import annotations

import re

import onnx
import onnx.shape_inference
import onnx.version_converter

from ir import ModelLoadError, filled, skeleton
from ir.bodies import all_nodes as _all_nodes

from . import newer_opsets as newer
from .contrib import defused
from .runtime import agree, unrunnable

RUNTIME = "ONNX Runtime 1.19.2"
OPSETS = (7, 21)
MAX_IR_VERSION = 10
MAX_ML_OPSET = 5  # ai.onnx.ml: onnx 1.17 and 1.23 both end at 5, which ONNX Runtime 1.19.2 runs
# domains with kernels in ONNX Runtime's CPU build
RUNTIME_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                             "com.microsoft.experimental", "ai.onnx.training",
                             "ai.onnx.preview.training", "com.ms.internal.nhwc"})


# element types without a numpy dtype: ONNX Runtime's Python API can neither take nor return them
# ("No corresponding Numpy type for Tensor Type"), so a model reading or writing one cannot run
NO_NUMPY_TYPES = frozenset(getattr(onnx.TensorProto, t) for t in (
    "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, t))


NOT_TENSORS = {"sequence_type": "a sequence", "optional_type": "an optional", "map_type": "a map",
               "sparse_tensor_type": "a sparse tensor", "opaque_type": "an opaque value"}


class UnsupportedModelError(ModelLoadError):
    """A model outside what the runtime behind the proof runs; the message is one line."""


def check_supported(model: onnx.ModelProto, where: str, runs: bool = True) -> None:
    """Refuse a model the runtime cannot load; ``runs``: also one it cannot run (an op of a
    domain without kernels), for commands that run the model (an analysis alone need not)."""
    if model.ir_version > MAX_IR_VERSION:
        raise UnsupportedModelError(
            f"{where}: IR version {model.ir_version} is above what {RUNTIME} loads (IR version "
            f"<= {MAX_IR_VERSION}) and what onnxpruner saves down ({MAX_IR_VERSION + 1}..{newer.MAX_IR_VERSION}, "
            f"from {newer.SOURCE}); save it with ir_version {MAX_IR_VERSION} or lower")
    default = _default_opset(model)
    lo, hi = OPSETS
    if default is not None and not lo <= default <= hi:
        down = f" and what onnxpruner converts down ({hi + 1}..{newer.MAX_OPSET})" if default > hi else ""
        raise UnsupportedModelError(
            f"{where}: default-domain opset {default} is outside what {RUNTIME} runs (opset "
            f"{lo}..{hi}){down}; re-export it at an opset in {lo}..{hi}")
    ml = {o.domain: o.version for o in model.opset_import}.get("ai.onnx.ml")
    if ml is not None and ml > MAX_ML_OPSET:
        raise UnsupportedModelError(f"{where}: opset {ml} of ai.onnx.ml is above what {RUNTIME} runs "
                                    f"(<= {MAX_ML_OPSET}); re-export it at ai.onnx.ml opset {MAX_ML_OPSET} or lower")
    if not runs:
        return
    check_interface_types(model, where)
    local = {(f.domain, f.name) for f in model.functions}
    for node in _all_nodes(model.graph):
        if node.domain not in RUNTIME_DOMAINS and (node.domain, node.op_type) not in local:
            raise UnsupportedModelError(
                f"{where}: node {node.name or node.op_type!r} is op {node.domain}.{node.op_type}, "
                f"which {RUNTIME} has no kernel for (it runs the default domain at opset {lo}..{hi}, "
                f"ai.onnx.ml and com.microsoft); a pruning of it could not be proven")


CONVERTED_KEY = "onnxpruner.converted_from_opset"


def upgraded(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """A model whose default-domain opset is below what the runtime runs (old PyTorch and Caffe2
    exports at opset 6), converted up to opset 7 by ``onnx.version_converter``, else ``model``.

    The converter is not trusted: the model as given runs in ``onnx.reference`` and the converted
    one in ONNX Runtime on default inputs, and their outputs must agree (its adapters change a
    multi-slope PRelu-6 into a PRelu-7 that broadcasts along the wrong axis). What fails either
    way is refused in one line. The converted model records the opset it came from in its
    metadata (``onnxpruner.converted_from_opset``); the proof then covers the converted model."""
    default, (lo, hi) = _default_opset(model), OPSETS
    if default is None or default >= lo or model.ir_version > MAX_IR_VERSION:
        return model
    refuse = (f"{where}: default-domain opset {default} is below what {RUNTIME} runs (opset {lo}..{hi})"
              f" and onnx.version_converter's opset {lo}")
    hint = f"; re-export it at an opset in {lo}..{hi}"
    try:
        converted = onnx.version_converter.convert_version(model, lo)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise UnsupportedModelError(f"{refuse} conversion fails ({_first(exc)}){hint}") from None
    from onnx.reference import ReferenceEvaluator

    from .inputs import make_inputs
    from .runtime import run_model

    feeds = make_inputs(model, where=where).feeds   # an input no guess may feed is refused, naming the file
    try:
        want = ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:
        raise UnsupportedModelError(f"{refuse} conversion cannot be checked: onnx.reference does not run "
                                    f"the model as given ({_first(exc)}){hint}") from None
    try:
        got = run_model(converted, feeds, quiet=True)
    except Exception as exc:
        raise UnsupportedModelError(f"{refuse} conversion does not run in {RUNTIME} ({_first(exc)}){hint}") from None
    for out, a, b in zip(model.graph.output, want, got):
        if not agree(a, b):
            raise UnsupportedModelError(f"{refuse} conversion computes another output {out.name!r} than the "
                                        f"model as given (onnx.reference){hint}")
    converted.metadata_props.add(key=CONVERTED_KEY, value=str(default))
    return converted


def opened(open_model):
    """``ir.open_model`` whose model, when its opset is below what the runtime runs, comes back
    converted up (``upgraded``; a hollow read's weights put back first: such models are small), and
    when its opset or IR version is above, converted down (``downgraded``: the model read is
    relabelled in place, weights untouched; a caller's ModelProto is copied first, never changed);
    either way ONNX Runtime's FusedConv / FusedGemm come back as standard ops (``contrib.defused``)."""
    def open_upgraded(model_or_path, hollowed: bool = False):
        model, external, where, weights = open_model(model_or_path, hollowed=hollowed)
        if _newer(model):
            if external and model.ir_version > MAX_IR_VERSION:  # a hollow copy keeps known fields only:
                _check_fields(onnx.load(where, load_external_data=False), where)  # the file holds no weights
            model = downgraded(model, where, in_place=model is not model_or_path)
        else:
            below = (_default_opset(model) or OPSETS[0]) < OPSETS[0]
            converted = upgraded(filled(model, weights) if weights and below else model, where)
            model, weights = (model, weights) if converted is model else (converted, {})
        return defused(model, weights), external, where, weights  # ORT's fused ops as standard ones
    return open_upgraded


IR_KEY = "onnxpruner.converted_from_ir_version"
KNOWN_TYPES = frozenset(onnx.TensorProto.DataType.values())  # onnx 1.17's: IR 10's element types
TYPE_ATTRIBUTES = frozenset({"to", "dtype", "output_dtype"})  # INT attributes that name an element type


def _newer(model: onnx.ModelProto) -> bool:
    """Whether the model (or a local function) is at an opset or IR version ``downgraded`` handles."""
    opsets = [_default_opset(model)] + [_default_opset(f) for f in model.functions]
    return (MAX_IR_VERSION < model.ir_version <= newer.MAX_IR_VERSION
            or any(v is not None and OPSETS[1] < v <= newer.MAX_OPSET for v in opsets))


def downgraded(model: onnx.ModelProto, where: str, in_place: bool = False) -> onnx.ModelProto:
    """A model at default-domain opset 22..28 or IR version 11..14 relabelled as opset 21 / IR 10,
    when nothing it uses changed after them; else one line saying what did (``UnsupportedModelError``).

    Opsets 22..28 mostly add element types to an op's constraints; for a model that uses none of
    them, the opset import relabelled is the same model (``passes/newer_opsets.py`` says what each
    bump changed, from a newer onnx's schemas and spec text). Refused: an op new after 21, an op
    whose semantics changed, a reviewed attribute set, an element type IR 10 lacks (anywhere: a
    tensor, a value's type, Cast's ``to``) or whose semantics changed, a proto field IR 11+ added
    (multi-device configurations). The relabelled skeleton must pass onnx.checker and strict shape
    inference at 21 (its inner value_info dropped: the passes recompute it, and exporters leave it stale). Recorded in the metadata (``onnxpruner.converted_from_opset`` and
    ``onnxpruner.converted_from_ir_version``); the proof then covers the converted model.
    ``in_place``: relabel ``model`` itself (a hollow read's: no weight is copied)."""
    if not _newer(model):
        return model
    opset, ir_version = _default_opset(model), model.ir_version
    hint = f"; re-export it at an opset in {OPSETS[0]}..{OPSETS[1]}"
    if ir_version > MAX_IR_VERSION:
        _check_fields(model, where)
    for scope, version, nodes in _scopes(model):
        if version is not None and version > OPSETS[1]:
            _check_ops(nodes, version, where, scope, hint)
    top = max([v for v in [opset] + [_default_opset(f) for f in model.functions] if v is not None] or [0])
    _check_types(model, where, top, hint)
    out = model if in_place else _copy(model)
    for imports in [out.opset_import] + [f.opset_import for f in out.functions]:
        for o in imports:
            if o.domain in ("", "ai.onnx") and o.version > OPSETS[1]:
                o.version = OPSETS[1]
    out.ir_version = min(out.ir_version, MAX_IR_VERSION)
    what = f"opset {top}" if top > OPSETS[1] else f"IR version {ir_version}"
    try:
        skel = skeleton(out)
        onnx.checker.check_model(skel)
        del skel.graph.value_info[:]  # recomputed before any pass, never trusted (jax2onnx's go stale)
        inferred = onnx.shape_inference.infer_shapes(skel, check_type=True, strict_mode=True)
    except Exception as exc:
        raise UnsupportedModelError(f"{where}: the model converted down from {what} to opset {OPSETS[1]}, IR version "
                                    f"{MAX_IR_VERSION} fails onnx's checks there ({_first(exc)}){hint}") from None
    _check_types(inferred, where, top, hint)  # values whose types only inference knows (CastLike's)
    if top > OPSETS[1]:
        _set_meta(out, CONVERTED_KEY, str(top))
    if ir_version > MAX_IR_VERSION:
        _set_meta(out, IR_KEY, str(ir_version))
    return out


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _set_meta(model: onnx.ModelProto, key: str, value: str) -> None:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return
    model.metadata_props.add(key=key, value=value)


def _scopes(model: onnx.ModelProto):
    """(what to call it, its default opset, its nodes with those of their subgraphs) for the main
    graph and each local function (which carries its own opset imports)."""
    yield "", _default_opset(model), list(_all_nodes(model.graph))
    for f in model.functions:
        yield f" (in function {f.domain}.{f.name})", _default_opset(f), [n for node in f.node for n in _node_and_bodies(node)]


def _node_and_bodies(node: onnx.NodeProto):
    yield node
    for attr in node.attribute:
        for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
            yield from _all_nodes(sub)


def _check_ops(nodes, version: int, where: str, scope: str, hint: str) -> None:
    """Refuse a node whose op is new after 21, or changed, or sets a reviewed attribute, by ``version``."""
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        bumps = sorted((v, c) for v, c in newer.OPS.get(node.op_type, {}).items() if v <= version)
        name = f"node {node.name or node.op_type!r}{scope}"
        for v, change in bumps:
            why = newer.WHY.get(f"{node.op_type} {v}", "")
            if change == "new":
                raise UnsupportedModelError(
                    f"{where}: {name} is op {node.op_type}, which exists from opset {v} on; {RUNTIME} runs "
                    f"opset {OPSETS[0]}..{OPSETS[1]}, so the model cannot be converted down to {OPSETS[1]}{hint}")
            if change == "changed":
                raise UnsupportedModelError(
                    f"{where}: {name} is op {node.op_type}, which changed at opset {v} ({why}): the model at "
                    f"opset {version} cannot be converted down to {OPSETS[1]} unchanged{hint}")
            if change.startswith("attribute "):
                attr, _, default = change[len("attribute "):].partition("=")
                found = next((a for a in node.attribute if a.name == attr), None)
                value = None if found is None else onnx.helper.get_attribute_value(found)
                value = value.decode() if isinstance(value, bytes) else value
                if found is not None and (not default or str(value) != default):
                    raise UnsupportedModelError(
                        f"{where}: {name} ({node.op_type}) sets {attr}={value}, which means something at opset "
                        f"{v} that opset {OPSETS[1]} does not have ({why}): the model cannot be converted down "
                        f"to {OPSETS[1]}{hint}")


def _check_types(model: onnx.ModelProto, where: str, opset: int, hint: str) -> None:
    """Refuse an element type IR 10 does not have, or whose semantics changed by ``opset``."""
    changed = {getattr(onnx.TensorProto, t) for v, ts in newer.TYPES_CHANGED.items() if v <= opset for t in ts}
    for what, elem in _element_types(model):
        if elem not in KNOWN_TYPES:
            name = newer.TYPE_NAMES.get(elem, f"element type {elem}").lower()
            raise UnsupportedModelError(f"{where}: {what} is {name}, a type that opset {OPSETS[1]} and IR version "
                                        f"{MAX_IR_VERSION} do not have ({RUNTIME} runs those){hint}")
        if elem in changed:
            first = min(v for v, ts in newer.TYPES_CHANGED.items() if onnx.TensorProto.DataType.Name(elem) in ts)
            raise UnsupportedModelError(
                f"{where}: {what} is {onnx.TensorProto.DataType.Name(elem).lower()}, whose casts changed at opset "
                f"{first} (+-Inf saturates to +-max, not NaN): the model at opset {opset} cannot be converted "
                f"down to {OPSETS[1]} unchanged{hint}")


def _element_types(model: onnx.ModelProto):
    """(what, element type) of every tensor, value and type-naming attribute of the model."""
    def of_type(what: str, tp: onnx.TypeProto):
        kind = tp.WhichOneof("value")
        if kind in ("tensor_type", "sparse_tensor_type"):
            yield what, getattr(tp, kind).elem_type
        elif kind in ("sequence_type", "optional_type"):
            yield from of_type(what, getattr(tp, kind).elem_type)
        elif kind == "map_type":
            yield what, tp.map_type.key_type
            yield from of_type(what, tp.map_type.value_type)

    def of_nodes(nodes):
        for node in nodes:
            name = f"node {node.name or node.op_type!r}"
            for a in node.attribute:
                for t in ([a.t] if a.HasField("t") else []) + list(a.tensors):
                    yield f"{name}'s attribute {a.name}", t.data_type
                for t in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                    yield f"{name}'s attribute {a.name}", t.values.data_type
                if a.type == onnx.AttributeProto.INT and a.name in TYPE_ATTRIBUTES and a.i:
                    yield f"{name}'s attribute {a.name}", a.i
                for tp in ([a.tp] if a.HasField("tp") else []) + list(a.type_protos):
                    yield from of_type(f"{name}'s attribute {a.name}", tp)
                for sub in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                    yield from of_graph(sub)

    def of_graph(g: onnx.GraphProto):
        for t in g.initializer:
            yield f"initializer {t.name!r}", t.data_type
        for t in g.sparse_initializer:
            yield f"initializer {t.values.name!r}", t.values.data_type
        for role, values in (("graph input", g.input), ("graph output", g.output), ("value", g.value_info)):
            for vi in values:
                yield from of_type(f"{role} {vi.name!r}", vi.type)
        yield from of_nodes(g.node)

    yield from of_graph(model.graph)
    for f in model.functions:
        for vi in f.value_info:
            yield from of_type(f"value {vi.name!r} of function {f.name}", vi.type)
        yield from of_nodes(f.node)


def _check_fields(model: onnx.ModelProto, where: str) -> None:
    """Refuse a proto field IR 10 does not have (read by onnx 1.17 as an unknown field): on the
    model, its graphs, nodes, attributes, values and functions; never on tensors (their data)."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    def messages():
        yield "the model", "ModelProto", model
        yield from ((f"opset import {o.domain!r}", "OperatorSetIdProto", o) for o in model.opset_import)
        graphs = [("the graph", model.graph)]
        for f in model.functions:
            yield f"function {f.name}", "FunctionProto", f
            yield from ((f"value {v.name!r}", "ValueInfoProto", v) for v in f.value_info)
            nodes = list(f.node)
            while nodes:
                node = nodes.pop()
                yield f"node {node.name or node.op_type!r}", "NodeProto", node
                for a in node.attribute:
                    yield f"attribute {a.name} of node {node.name or node.op_type!r}", "AttributeProto", a
                    graphs += [(f"a subgraph of node {node.name or node.op_type!r}", g)
                               for g in list(a.graphs) + ([a.g] if a.HasField("g") else [])]
        while graphs:
            what, g = graphs.pop()
            yield what, "GraphProto", g
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                yield f"value {vi.name!r}", "ValueInfoProto", vi
                yield f"the type of value {vi.name!r}", "TypeProto", vi.type
            for node in g.node:
                yield f"node {node.name or node.op_type!r}", "NodeProto", node
                for a in node.attribute:
                    yield f"attribute {a.name} of node {node.name or node.op_type!r}", "AttributeProto", a
                    graphs += [(f"a subgraph of node {node.name or node.op_type!r}", sub)
                               for sub in list(a.graphs) + ([a.g] if a.HasField("g") else [])]

    for what, kind, message in messages():
        for field in UnknownFieldSet(message):
            name = newer.FIELDS.get(kind, {}).get(field.field_number, f"number {field.field_number}")
            raise UnsupportedModelError(
                f"{where}: {what} has field {name} ({kind} field {field.field_number}), which IR version "
                f"{MAX_IR_VERSION} does not have ({RUNTIME} loads IR <= {MAX_IR_VERSION}); the model cannot be "
                f"saved down from IR version {model.ir_version} without it")


def _default_opset(model) -> int | None:
    """The default domain's opset of a model or a function (None when it imports none)."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    return opsets.get("", opsets.get("ai.onnx"))


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_interface_types(model: onnx.ModelProto, where: str) -> None:
    """Refuse a graph input or output the proof cannot exchange with ONNX Runtime: an element
    type numpy has no dtype for (bfloat16, float8, int4), or an input that is not a tensor (a
    sequence, map or optional: ``--inputs`` holds arrays and defaults are tensors)."""
    inits = {t.name for t in model.graph.initializer}
    for role, values in (("input", [v for v in model.graph.input if v.name not in inits]),
                         ("output", list(model.graph.output))):
        for vi in values:
            kind = vi.type.WhichOneof("value")
            if kind == "tensor_type" and vi.type.tensor_type.elem_type in NO_NUMPY_TYPES:
                name = onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()
                raise UnsupportedModelError(
                    f"{where}: graph {role} {vi.name!r} is {name}, which numpy has no dtype for: "
                    f"{RUNTIME}'s Python API cannot {'take' if role == 'input' else 'return'} it, so no "
                    f"pruning of this model could be proven")
            if role == "input" and kind is not None and kind != "tensor_type":
                raise UnsupportedModelError(
                    f"{where}: graph input {vi.name!r} is {NOT_TENSORS.get(kind, kind)}, not a tensor: "
                    f"onnxpruner feeds the model tensors only (--inputs is an .npz of arrays), so no pruning "
                    f"of this model could be proven")


def check_model_input(model: onnx.ModelProto, where: str, runs: bool = True) -> None:
    """Before any pass: ``check_supported``, then onnx.checker on the model's structure, its first
    complaint named as the input's, with the node; then ``runtime.unrunnable`` (an empty weight,
    a tensor over the memory budget). Large weights are declared as typed inputs instead of being
    serialized into the check (their dims and types are checked when lowered)."""
    check_supported(model, where, runs)
    try:
        onnx.checker.check_model(skel := skeleton(model))
    except Exception as exc:
        text = str(exc).strip().splitlines()
        first = text[0] if text else type(exc).__name__
        bad = re.search(r"Bad node spec for node\. Name: (\S*) OpType: (\S+)", str(exc))
        node = f"; node {bad.group(1)!r} ({bad.group(2)})" if bad else ""
        raise ModelLoadError(f"{where}: invalid ONNX model (the input fails onnx.checker: {first}{node})") from None
    if problem := unrunnable(model, skel):
        raise ModelLoadError(f"{where}: {problem}")
