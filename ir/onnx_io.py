"""Lower ONNX to the IR and raise it back: the only place that converts.

``raise_model(lower(m))`` keeps opset imports, metadata, doc strings, value_info, node attributes
(subgraph bodies opaque), functions, initializers bit-identical (an untouched initializer raises
to its original TensorProto) and which initializers lived in external data.

Example::

    m = onnx.load("model.onnx")
    g = lower(m)
    m2 = raise_model(g)          # runs in ONNX Runtime with the same outputs as m
"""

from __future__ import annotations

import mmap
import os
import sys
import weakref
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, numpy_helper, serialization

from . import bodies, files, wire
from .bodies import free_names as _free_names, implicit_inputs as _implicit_inputs  # noqa: F401
from .collection import fewer_collections
from .graph import _RAW_DTYPES, Graph, Initializer, ModelProps, Node, Value, known_type


class ModelLoadError(ValueError):
    """A file or proto that is not a usable ONNX model; the message is one line for the user."""


def load(path: str | os.PathLike) -> tuple[onnx.ModelProto, frozenset[str]]:
    """Read a model file with its external data; returns the model and the names of
    initializers that were stored externally. External data is read only from regular files
    inside the model's folder (symlinks resolved first): anything else is one error naming the
    tensor. The file is parsed from a private map of it (``_map``), never written through."""
    path = _checked(Path(path))
    model = _parsed(path, _map(path))
    return model, _external(model, path)


def open_model(model_or_path, hollowed: bool = False) -> tuple[onnx.ModelProto, frozenset[str], str, dict]:
    """A model or a file's: the model, its externally stored initializers' names, how to name it in
    messages, and (``hollowed``, a file) the model is ``read_hollow``'s, its large weights apart."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, frozenset(), "<model>", {}
    if hollowed:
        model, weights, external = read_hollow(model_or_path)
        return model, external, str(model_or_path), weights
    model, external = load(model_or_path)
    return model, external, str(model_or_path), {}


def read_hollow(path: str | os.PathLike) -> tuple[onnx.ModelProto, dict[str, np.ndarray], frozenset[str]]:
    """``hollow(load(path))``, the large weights never decoded: ``wire.excised`` cuts their data
    out of the file's bytes before the rest is parsed, and each array is a read-only view of its
    data in the file's private map. Returns the hollow model, the arrays by name, and the names
    of initializers that were stored externally (hollowed after they are read, as ``hollow``)."""
    path = _checked(Path(path))
    source = _map(path)
    cut = wire.excised(source, _ITEMSIZES, LIGHT_LIMIT) if source is not None and sys.byteorder == "little" else None
    if cut is None:
        model, external = load(path)
        return (*hollow(model), external)
    model = _parsed(path, cut[0])
    weights = {}
    for name, dims, dtype, (start, end) in cut[1]:
        arr = np.frombuffer(source, _RAW_DTYPES[dtype], (end - start) // _ITEMSIZES[dtype], start).reshape(dims)
        arr.flags.writeable = False
        weights[name] = arr
    external = _external(model, path)
    if external:
        model, more = hollow(model)
        weights.update(more)
    return model, weights, external


_ITEMSIZES = {k: np.dtype(v).itemsize for k, v in _RAW_DTYPES.items()}


def _checked(path: Path) -> Path:
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not an ONNX file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file")
    return path


def _map(path: Path) -> "mmap.mmap | None":
    """A private map of the file (pages of the page cache, not a copy read into fresh memory);
    None for a text-format extension, an empty file or one that cannot be mapped."""
    if serialization.registry.get_format_from_file_extension(path.suffix) not in (None, "protobuf"):
        return None
    try:
        with open(path, "rb") as fh:
            source = mmap.mmap(fh.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    except (OSError, ValueError, TypeError, AttributeError):  # empty, unmappable, or no POSIX mmap
        return None
    if sys.platform == "linux":  # its pages mapped in one call (MAP_POPULATE would copy them: the map is writable)
        try:
            source.madvise(getattr(mmap, "MADV_POPULATE_READ", 22))
        except (OSError, ValueError):  # before Linux 5.14: each page mapped when first read
            pass
        _MAPS.add(source)
    return source


_MAPS: "weakref.WeakSet[mmap.mmap]" = weakref.WeakSet()  # private file maps whose pages revert() re-reads


def revert(arr: np.ndarray, dry_run: bool = False) -> bool:
    """Put back what the file holds under ``arr``, an array ``read_hollow`` took from a file's
    private map (Linux): its pages' private copies are dropped (``MADV_DONTNEED``) and read from
    the file again, so whatever was written into them (validate's zeroing) is undone without a
    copy of the values kept. The pages it shares with a neighbouring array revert too (the only
    writes into these arrays are that zeroing, undone together). False, and nothing done, for
    any other array; ``dry_run``: only whether it would be put back."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    source = base.obj if isinstance(base, memoryview) else None
    if source is None or source not in _MAPS or arr.size == 0:
        return False
    if not dry_run:
        start = arr.__array_interface__["data"][0] - np.frombuffer(source, np.uint8).__array_interface__["data"][0]
        first = start // mmap.PAGESIZE * mmap.PAGESIZE
        source.madvise(mmap.MADV_DONTNEED, first, start + arr.nbytes - first)
    return True


def _parsed(path: Path, data) -> onnx.ModelProto:
    """The model in ``data`` (the file read as ``onnx.load`` reads it when None); one error line."""
    try:
        if data is None:
            model = onnx.load(str(path), load_external_data=False)
        else:
            model = onnx.ModelProto()
            decoded = model.ParseFromString(memoryview(data))
            if decoded is not None and decoded != len(data):  # as onnx.load checks
                raise ValueError(f"protobuf decoding consumed too few bytes: {decoded} out of {len(data)}")
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError...
        raise ModelLoadError(f"{path}: not an ONNX model ({_first_line(exc)})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError(f"{path}: not an ONNX model (no graph)")
    return model


def _external(model: onnx.ModelProto, path: Path) -> frozenset[str]:
    """Read every tensor stored outside the file into it; their names."""
    tensors = [t for t in external_data_helper._get_all_tensors(model)
               if external_data_helper.uses_external_data(t)]
    for tensor in tensors:
        _read_external(tensor, path)
    return frozenset(t.name for t in tensors)


def _read_external(tensor: onnx.TensorProto, path: Path) -> None:
    """Fill ``tensor`` from its external-data file, checked by ``files.inside_folder``."""
    what = f"{path}: tensor {tensor.name!r}"
    info = {e.key: e.value for e in tensor.external_data}
    try:
        real = files.inside_folder(path.parent, info.get("location", ""), what)
        offset, length = int(info.get("offset", 0) or 0), info.get("length")
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    size = os.path.getsize(real)
    length = size - offset if length in (None, "") else int(length)
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelLoadError(f"{what}: external data {info.get('location')!r} is too short "
                             f"({size} bytes, needs {offset + length})")
    with open(real, "rb") as fh:
        fh.seek(offset)
        tensor.raw_data = fh.read(length)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def save_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write a file atomically (temporary file beside it, then rename), with the permissions an
    ordinary ``open()`` would give."""
    files.write_bytes(path, data)


def save(model: onnx.ModelProto, path: str | os.PathLike, external: frozenset[str] = frozenset(),
         staged: "files.Staged | None" = None) -> None:
    """Write atomically: into temporaries beside ``path``, then rename. Initializers named in
    ``external`` go to ``<path>.data`` (as they were in the input), written fresh (never appended
    to a file already there). With ``staged``, the parts join that commit (model + data + report
    renamed together) instead of being renamed now."""
    if staged is None:
        with files.Staged() as own:
            save(model, path, external, own)
        return
    path = Path(path)
    external = external & {t.name for t in model.graph.initializer}
    if not external:
        staged.write_chunks(path, serialized(model))
        return
    out = _without_initializers(model)  # their entries added below, the data of those apart
    data_name = path.name + ".data"

    def chunks():  # each tensor's bytes, written as they are made: one at a time in memory
        offset = 0
        for src in model.graph.initializer:
            tensor = out.graph.initializer.add()
            if src.name not in external or src.data_type == onnx.TensorProto.STRING:
                tensor.CopyFrom(src)
                continue
            raw = src.raw_data if src.HasField("raw_data") else \
                numpy_helper.from_array(numpy_helper.to_array(src)).raw_data
            _copy_fields(src, tensor, skip=_DATA_FIELDS)
            tensor.raw_data = b""  # set_external_data asks for the field
            external_data_helper.set_external_data(tensor, data_name, offset, len(raw))
            tensor.ClearField("raw_data")
            offset += len(raw)
            yield raw

    staged.write_chunks(path.parent / data_name, chunks())
    staged.write_bytes(path, out.SerializeToString())


def serialized(model: onnx.ModelProto):
    """``model.SerializeToString()`` in pieces: the model without its initializers' contents
    serialized once (each an empty entry), and each initializer serialized in its place, one at a
    time; so the whole file is never one more buffer in memory."""
    hollow = _without_initializers(model)
    for _ in model.graph.initializer:
        hollow.graph.initializer.add()
    data = hollow.SerializeToString()
    tensors = iter(model.graph.initializer)
    for field, wire_type, value, first, end in wire.every_field(data, 0, len(data)):
        if field != 7 or wire_type != 2:
            yield data[first:end]
            continue
        # the graph's length, each tensor sized alone (the graph's ByteSize() encodes all of it at once)
        sizes = [t.ByteSize() for t in model.graph.initializer]
        length = value[1] - value[0] + sum(len(wire.encode(n)) + n - 1 for n in sizes)  # each entry was b"\x2a\x00"
        yield b"\x3a" + wire.encode(length)
        for gfield, gwire, gvalue, gfirst, gend in wire.every_field(data, *value):
            if gfield == 5 and gwire == 2:
                tensor = next(tensors).SerializeToString()
                yield b"\x2a" + wire.encode(len(tensor))
                yield tensor
            else:
                yield data[gfirst:gend]


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data", "external_data", "data_location")


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model for structural checks: initializers of more than ``LIGHT_LIMIT``
    elements become typed graph inputs (not copied); everything else is kept."""
    out = _without_initializers(model)
    src, g = model.graph, out.graph
    listed = {i.name for i in src.input}
    for t in src.initializer:
        n = 1
        for d in t.dims:
            n *= d
        if n > LIGHT_LIMIT and t.data_location != onnx.TensorProto.EXTERNAL:
            if t.name not in listed:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    return out


def hollow(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A copy of ``model`` whose graph initializers of more than ``LIGHT_LIMIT`` elements hold no
    data (name, type, dims and doc string kept), and that data as read-only arrays by name:
    ``lower(copy, arrays)`` is ``lower(model)`` with every lowering sharing one decoded copy of
    the weights. The copy is a message of its own, so once the caller drops ``model`` its
    weights' memory is freed (a message's fields live in its arena, which clearing a field does
    not shrink). ``model`` is not changed. Kept whole: a tensor with anything beyond those fields
    and little-endian ``raw_data`` of a plain numeric type, or whose bytes do not fit its dims.
    ``filled(copy, arrays)`` is the whole model again. (``read_hollow`` does this for a file
    without decoding the weights.)"""
    out = _without_initializers(model)
    arrays: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        dtype = _RAW_DTYPES.get(t.data_type)
        n = 1
        for d in t.dims:
            n *= d
        plain = dtype is not None and n > LIGHT_LIMIT and sys.byteorder == "little" and t.HasField("raw_data") \
            and not t.HasField("segment") and not t.external_data and not getattr(t, "metadata_props", ()) \
            and t.data_location == onnx.TensorProto.DEFAULT and t.name not in arrays
        # the array's own memory (validate zeroes the masked original's weights in place, then
        # restores them), taken before the bytes are read: freed at once, the bytes leave no hole
        arr = np.empty(tuple(t.dims), dtype=dtype) if plain else None
        raw = t.raw_data if plain else b""
        if arr is None or len(raw) != arr.nbytes:
            out.graph.initializer.append(t)
            continue
        arr.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
        del raw
        arr.flags.writeable = False
        arrays[t.name] = arr
        h = out.graph.initializer.add()
        h.name = t.name
        h.dims.extend(t.dims)
        h.data_type = t.data_type
        if t.doc_string:
            h.doc_string = t.doc_string
    return out, arrays


def filled(model: onnx.ModelProto, weights: dict[str, np.ndarray] | None) -> onnx.ModelProto:
    """The whole model that ``hollow`` made ``model`` and ``weights`` from (a new message; ``model``
    itself when there are no weights)."""
    if not weights:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in weights and not t.HasField("raw_data"):
            t.raw_data = weights[t.name].tobytes()
    return out


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A new message: ``model`` with every field copied but its graph's initializers."""
    out = onnx.ModelProto()
    _copy_fields(model, out, skip=("graph",))
    _copy_fields(model.graph, out.graph, skip=("initializer",))
    return out


def _copy_fields(src, dst, skip: tuple[str, ...]) -> None:
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(dst, field.name).extend(value)
        elif field.message_type:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


@fewer_collections()  # tens of thousands of containers built: the collector need not walk them as they come
def lower(model: onnx.ModelProto, weights: dict[str, np.ndarray] | None = None) -> Graph:
    """ONNX ModelProto -> IR. Node names are made unique (an empty or repeated name gets
    ``<op>_<index>``); nothing else is renamed. ``weights``: the arrays of a model ``hollow``
    made (its graph initializers read them, shared, instead of their protos)."""
    g = model.graph
    external = frozenset(t.name for t in g.initializer if external_data_helper.uses_external_data(t))
    if external:
        raise ModelLoadError("model has external data that was not loaded; use ir.load(path)")
    init_names = {t.name for t in g.initializer}
    props = ModelProps(
        ir_version=model.ir_version, opset_imports={o.domain: o.version for o in model.opset_import},
        producer_name=model.producer_name, producer_version=model.producer_version,
        domain=model.domain, model_version=model.model_version, doc_string=model.doc_string,
        metadata_props={p.key: p.value for p in model.metadata_props},
        functions=list(model.functions),
        training_info=list(model.training_info),
        graph_doc_string=g.doc_string,
        sparse_initializers=list(g.sparse_initializer),
        quantization_annotation=list(g.quantization_annotation),
        initializer_inputs=frozenset(i.name for i in g.input if i.name in init_names),
        initializers_as_inputs=bool(init_names) and (
            model.ir_version < 4 or init_names <= {i.name for i in g.input}),
    )
    graph = Graph(g.name, props)
    for t in g.initializer:
        arr = weights.get(t.name) if weights else None
        graph.add_initializer(Initializer.from_proto(t) if arr is None else Initializer(
            t.name, known_type(t.data_type, t.dims), t.doc_string, proto=t, source=arr))
    for vi in g.input:
        if vi.name in init_names:  # IR<4: an initializer listed as an input keeps its place
            graph.add_input(graph.value(vi.name))
            continue
        graph.add_input(Value(vi.name, _type(vi), vi.doc_string))
    for vi in g.value_info:
        if graph.has_value(vi.name):
            continue
        graph.add_value(Value(vi.name, _type(vi), vi.doc_string))
        graph.value_info_names.add(vi.name)
    taken = {n.name for n in g.node if n.name}   # names already in the file stay as they are
    used: set[str] = set()

    def unique(name: str, base: str) -> str:
        if not name or name in used:
            base = name or base
            name, k = base, 0
            while name in taken or name in used:
                k += 1
                name = f"{base}_{k}"
        used.add(name)
        return name

    lowered = bodies.lowered_ifs(model)
    hoisted = bodies.hoisted_nodes(model)
    for i, n in enumerate(g.node):
        if i in lowered:  # its branches' nodes first, the If reading their outputs (ir/bodies.py)
            branches, outs = {}, []
            for attr in bodies.BRANCHES:
                body = next(a.g for a in n.attribute if a.name == attr)
                for t in body.initializer:
                    graph.add_initializer(Initializer.from_proto(t))
                for vi in list(body.value_info) + list(body.output):
                    if not graph.has_value(vi.name):
                        graph.add_value(Value(vi.name, _type(vi), vi.doc_string))
                        graph.value_info_names.add(vi.name)
                names = []
                for j, bn in enumerate(body.node):
                    names.append(unique(bn.name, f"{bn.op_type}_{i}_{attr}_{j}"))
                    graph.add_node(Node(names[-1], bn.op_type, bn.domain, {a.name: a for a in bn.attribute},
                                        bn.doc_string), list(bn.input), list(bn.output),
                                   implicit_inputs=_implicit_inputs(bn))
                branches[attr] = bodies.Branch(body.name, body.doc_string, tuple(names))
                outs += [o.name for o in body.output]
            name = unique(n.name, f"{n.op_type}_{i}")
            props.bodies[name] = branches
            graph.add_node(Node(name, n.op_type, n.domain, {a.name: a for a in n.attribute}, n.doc_string),
                           list(n.input[:1]) + outs, list(n.output))
            continue
        if i in hoisted:  # its loop-invariant head first, read from the body as outer values
            keep, moved = hoisted[i]
            n, head = _hoist(graph, n, keep, moved, lambda bn, j: unique(bn.name, f"{bn.op_type}_{i}_body_{j}"))
        name = unique(n.name, f"{n.op_type}_{i}")
        if i in hoisted:
            props.bodies[name] = {"body": head}
        node = Node(name, n.op_type, n.domain, {a.name: a for a in n.attribute}, n.doc_string)
        graph.add_node(node, list(n.input), list(n.output), implicit_inputs=_implicit_inputs(n))
    for vi in g.output:
        if not graph.has_value(vi.name):
            graph.add_value(Value(vi.name, _type(vi), vi.doc_string))
        elif graph.value(vi.name).type is None and not isinstance(graph.value(vi.name), Initializer):
            graph.set_value_type(vi.name, _type(vi), vi.doc_string)
    graph.set_outputs([vi.name for vi in g.output])
    return graph


def _hoist(graph: Graph, n: onnx.NodeProto, keep: list[int], moved: list[str], unique):
    """Lowers a Loop / Scan body's loop-invariant head (``bodies.hoisted_nodes``) into the graph:
    the node with the rest of its body, and the head's record."""
    out = onnx.NodeProto()
    out.CopyFrom(n)
    body = next(a.g for a in out.attribute if a.name == "body")
    lowered = [body.node[j] for j in keep]
    produced = {o for bn in lowered for o in bn.output if o}
    for t in body.initializer:
        if t.name in moved:
            graph.add_initializer(Initializer.from_proto(t))
    for vi in body.value_info:
        if vi.name in produced and not graph.has_value(vi.name):
            graph.add_value(Value(vi.name, _type(vi), vi.doc_string))
            graph.value_info_names.add(vi.name)
    names = []
    for j, bn in zip(keep, lowered):
        names.append(unique(bn, j))
        graph.add_node(Node(names[-1], bn.op_type, bn.domain, {a.name: a for a in bn.attribute}, bn.doc_string),
                       list(bn.input), list(bn.output))
    rest = [bn for j, bn in enumerate(body.node) if j not in set(keep)]
    inits = [t for t in body.initializer if t.name not in moved]
    infos = [vi for vi in body.value_info if vi.name not in produced]
    for field, items in ((body.node, rest), (body.initializer, inits), (body.value_info, infos)):
        del field[:]
        field.extend(items)
    return out, bodies.Branch(body.name, body.doc_string, tuple(names))


def raise_model(graph: Graph, light: bool = False, floats: bool = False) -> onnx.ModelProto:
    """IR -> ONNX ModelProto (nodes in deterministic topological order).

    ``light=True`` is for analyses (shape inference): initializers of more than
    ``LIGHT_LIMIT`` elements become typed graph inputs instead of being copied; with ``floats``
    float ones of more than one element too (a run fed other weights is the same model)."""
    props = graph.props
    topo = graph.topo_nodes()
    nodes = []
    scopes = bodies.body_scopes(graph, topo) if props.bodies else {}
    members: dict[str, dict[str, list[onnx.NodeProto]]] = {}
    made_at: dict[str, int] = {}  # value -> its producer's place in topo (value_info's order)
    ports = {node.name: (ins, outs) for node, ins, outs, _ in graph.port_table()}
    for i, node in enumerate(topo):
        ins, outs = ports[node.name]
        ins = list(ins)
        while ins and ins[-1] == "":  # a trailing omitted optional input is the same as none
            ins.pop()
        made_at.update((o, i) for o in outs if o)
        proto = onnx.NodeProto(op_type=node.op_type, name=node.name, domain=node.domain,
                               input=ins, output=outs, doc_string=node.doc_string)
        proto.attribute.extend(node.attrs[k] for k in node.attrs)
        if node.name in scopes:  # raised into its If's body (ir/bodies.py)
            if_name, attr = scopes[node.name]
            members.setdefault(if_name, {}).setdefault(attr, []).append(proto)
            continue
        nodes.append(proto)
    in_bodies = {o for branch in members.values() for protos in branch.values() for n in protos for o in n.output}
    inputs = [_value_info(graph.value(name)) for name in graph.input_names]
    outputs = [_value_info(graph.value(name)) for name in graph.output_names]
    inits = list(graph.initializers.values())
    listed = set(graph.input_names)
    if props.ir_version < 4 or props.initializers_as_inputs:
        # the old style (IR 3 requires it): every initializer a graph input, each listed once
        # under its final name, also those that slicing copied or renamed
        inputs += [_value_info(i) for i in inits if i.name not in listed]
        listed |= {i.name for i in inits}
    if light:
        fed = {i.name for i in inits if i.name not in listed and (i.size > LIGHT_LIMIT or floats and i.size > 1
                                                                  and _elem_type(i) in _FLOAT_TYPES)}
        inputs += [_value_info(i) for i in inits if i.name in fed]
        inits = [i for i in inits if i.name not in fed and i.size <= LIGHT_LIMIT]
    homes = bodies.weight_homes(graph, scopes) if scopes and not props.initializers_as_inputs \
        and props.ir_version >= 4 else {}
    held: dict[tuple[str, str], list[onnx.TensorProto]] = {}  # weights only one branch reads go in it
    for init in inits:
        if init.name in homes:
            held.setdefault(homes[init.name], []).append(init.to_proto())
    inits = [i for i in inits if i.name not in homes]
    for node, proto in zip([n for n in topo if n.name not in scopes], nodes):
        if node.name in props.bodies:  # after every member is known (a dead one may come later)
            raised = bodies.raised_body if node.op_type in bodies.BODY_OPS else bodies.raised_if
            raised(graph, node, proto, members.get(node.name, {}), _value_info, held)
    value_info = []
    for name in sorted(graph.value_info_names, key=lambda name: (made_at.get(name, -1), name)):
        if graph.has_value(name) and name not in in_bodies:
            value = graph.value(name)
            if value.type is not None and not isinstance(value, Initializer):
                value_info.append(_value_info(value))
    model = onnx.ModelProto(ir_version=props.ir_version, producer_name=props.producer_name,
                            producer_version=props.producer_version, domain=props.domain,
                            model_version=props.model_version, doc_string=props.doc_string)
    g = model.graph  # filled in place: copying a GraphProto would copy every weight again
    g.name = graph.name
    g.doc_string = props.graph_doc_string
    g.node.extend(nodes)
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.value_info.extend(value_info)
    for init in inits:  # each written in place: extending with built protos would copy every weight
        _fill_initializer(init, g.initializer.add())
    if not light:
        g.sparse_initializer.extend(props.sparse_initializers)
        g.quantization_annotation.extend(props.quantization_annotation)
    for domain, version in props.opset_imports.items():
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))
    for key, value in props.metadata_props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.functions.extend(props.functions)
    model.training_info.extend(props.training_info)
    return model


LIGHT_LIMIT = 1024
_RAW_TYPES = frozenset(_RAW_DTYPES.values())


def _fill_initializer(init: Initializer, out: onnx.TensorProto) -> None:
    """Write ``init.to_proto()``'s message into ``out``, an empty one already in place: a numeric
    array's bytes are set there once, not built apart and copied in (a copy of every new weight)."""
    arr = init.array if init.proto is None or init.source is not None else None
    if arr is None or type(arr) is not np.ndarray or arr.dtype.type not in _RAW_TYPES \
            or not arr.dtype.isnative or sys.byteorder != "little":
        out.CopyFrom(init.to_proto())
        return
    out.dims.extend(arr.shape)  # the fields numpy_helper.from_array sets
    if init.name:
        out.name = init.name
    out.data_type = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
    out.raw_data = arr.tobytes()
    if init.doc_string:
        out.doc_string = init.doc_string


_FLOAT_TYPES = frozenset((1, 10, 11, 16))  # TensorProto's FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _elem_type(init: Initializer) -> int:
    return init.proto.data_type if init.source is None else onnx.helper.np_dtype_to_tensor_dtype(init.array.dtype)


def _value_info(value: Value) -> onnx.ValueInfoProto:
    vi = onnx.ValueInfoProto(name=value.name, doc_string=value.doc_string)
    if isinstance(value, Initializer):
        vi.type.CopyFrom(known_type(_elem_type(value), value.dims))
    elif value.type is not None:
        vi.type.CopyFrom(value.type)
    return vi


def _type(vi: onnx.ValueInfoProto) -> onnx.TypeProto | None:
    return vi.type if vi.HasField("type") else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
