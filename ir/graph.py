"""The typed IR: a bipartite networkx graph of nodes and values.

This is the only module that imports networkx. Nodes and values are both vertices, keyed
``("n", name)`` and ``("v", name)`` because ONNX node names and tensor names are separate
namespaces. An edge value→node or node→value carries its port as the multigraph key, so
``Add(x, x)`` is two edges. IR objects are frozen and compare by identity; the graph is changed
only through ``Graph`` methods, each of which bumps ``graph.version``.

Example::

    g = Graph(name="g")
    x = g.add_input(Value("x", tensor_type(np.float32, [1, 3, 8, 8])))
    w = g.add_initializer(Initializer.from_array("w", np.ones((4, 3, 1, 1), np.float32)))
    conv = g.add_node(Node("conv", "Conv"), inputs=["x", "w"], outputs=["y"])
    g.set_outputs(["y"])
    [c.name for c, _ in g.consumers("x")]   # ['conv']
"""

from __future__ import annotations

import functools
import heapq
import math
import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import networkx as nx
import numpy as np
import onnx
from onnx import numpy_helper

from .constants import follow_constants

_RAW_DTYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
               onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
               onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
               onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_}

# Implicit uses of an outer-scope value from inside a subgraph attribute (If/Loop/Scan bodies)
# are edges with this port, so `consumers` sees them.
IMPLICIT_PORT = -1


@dataclass(frozen=True, eq=False)
class Value:
    """A tensor name with its ONNX type (``onnx.TypeProto``, or None when unknown)."""

    name: str
    type: onnx.TypeProto | None = None
    doc_string: str = ""

    @property
    def shape(self) -> tuple[int | str | None, ...] | None:
        """Dims as ints, symbolic names, or None; None when the rank is unknown."""
        return shape_of(self.type)

    @property
    def elem_type(self) -> int:
        if self.type is None or not self.type.HasField("tensor_type"):
            return 0
        return self.type.tensor_type.elem_type


@dataclass(frozen=True, eq=False)
class Initializer(Value):
    """A constant tensor. The array is read-only and decoded lazily from ``proto``.

    An initializer built from an unchanged TensorProto raises back to that very proto, so weights
    that no pass touched stay bit-identical (external-data location included).
    """

    proto: onnx.TensorProto | None = None
    source: np.ndarray | None = None
    external: bool = False

    @classmethod
    def from_array(cls, name: str, array: np.ndarray, external: bool = False) -> "Initializer":
        array = np.ascontiguousarray(array)
        array.flags.writeable = False
        elem = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
        return cls(name, known_type(elem, array.shape), source=array, external=external)

    @classmethod
    def from_proto(cls, proto: onnx.TensorProto, external: bool = False) -> "Initializer":
        return cls(proto.name, known_type(proto.data_type, proto.dims), doc_string=proto.doc_string,
                   proto=proto, external=external)

    @functools.cached_property
    def array(self) -> np.ndarray:
        if self.source is not None:
            return self.source
        proto = self.proto
        if proto.HasField("raw_data") and proto.data_type in _RAW_DTYPES and sys.byteorder == "little":
            # a read-only view of the proto's bytes: no decode, no copy
            arr = np.frombuffer(proto.raw_data, dtype=_RAW_DTYPES[proto.data_type]).reshape(tuple(proto.dims))
        else:
            arr = numpy_helper.to_array(proto)
        arr.flags.writeable = False
        return arr

    @property
    def dims(self) -> tuple[int, ...]:
        if self.proto is not None and self.source is None:
            return tuple(self.proto.dims)
        return tuple(self.array.shape)

    @property
    def size(self) -> int:
        return math.prod(self.dims)

    def to_proto(self) -> onnx.TensorProto:
        if self.proto is not None and self.source is None:
            return self.proto
        proto = numpy_helper.from_array(self.array, self.name)
        if self.doc_string:
            proto.doc_string = self.doc_string
        return proto


@dataclass(frozen=True, eq=False)
class Node:
    """An operator. ``attrs`` maps attribute names to ``onnx.AttributeProto`` kept verbatim
    (subgraph bodies stay opaque)."""

    name: str
    op_type: str
    domain: str = ""
    attrs: dict[str, onnx.AttributeProto] = field(default_factory=dict)
    doc_string: str = ""

    def attr(self, key: str, default=None):
        proto = self.attrs.get(key)
        if proto is None:
            return default
        return onnx.helper.get_attribute_value(proto)

    def with_attr(self, key: str, value) -> "Node":
        """A copy with one attribute set (the graph swaps it in with ``replace_node``)."""
        attrs = dict(self.attrs)
        attrs[key] = onnx.helper.make_attribute(key, value)
        return Node(self.name, self.op_type, self.domain, attrs, self.doc_string)


def shape_of(tp: onnx.TypeProto | None) -> tuple[int | str | None, ...] | None:
    if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _touched(g: nx.MultiDiGraph) -> None:
    """What networkx's add_node and add_edge do after writing its dicts: drop the graph's cache of
    converted graphs (networkx 3.3+; ``nx._clear_cache`` is private, so not called)."""
    cache = getattr(g, "__networkx_cache__", None)
    if cache:
        cache.clear()


def known_type(elem: int, dims: Iterable[int]) -> onnx.TypeProto:
    """``onnx.helper.make_tensor_type_proto(elem, dims)`` (the same message) for int dims, in half its time."""
    tp = onnx.TypeProto()
    tp.tensor_type.elem_type = elem
    shape = tp.tensor_type.shape.dim
    shape.extend([])  # an empty shape is present (a scalar), as make_tensor_type_proto leaves it
    for d in dims:
        shape.add(dim_value=d)
    return tp


def tensor_type(dtype, shape: Iterable[int | str | None]) -> onnx.TypeProto:
    elem = dtype if isinstance(dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return onnx.helper.make_tensor_type_proto(elem, list(shape))


@dataclass
class ModelProps:
    """Everything about the model that passes never interpret, kept for a lossless raise."""

    ir_version: int = 8
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 17})
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    functions: list[onnx.FunctionProto] = field(default_factory=list)
    training_info: list[onnx.TrainingInfoProto] = field(default_factory=list)
    graph_doc_string: str = ""
    sparse_initializers: list[onnx.SparseTensorProto] = field(default_factory=list)
    quantization_annotation: list[onnx.TensorAnnotation] = field(default_factory=list)
    initializer_inputs: frozenset[str] = frozenset()  # graph inputs that are initializers too (IR < 4)
    initializers_as_inputs: bool = False  # the old style: every initializer also a graph input
    bodies: dict = field(default_factory=dict)  # If -> branch -> bodies.Branch: lowered into the graph


def opset_of(graph: Graph) -> int:
    """The default-domain opset the graph is written for (the op rules depend on it)."""
    props = graph.props.opset_imports
    return props.get("", props.get("ai.onnx", 1))


class GraphError(ValueError):
    """A mutation that would break the IR's structure."""


class Graph:
    """Bipartite graph of ``Node`` and ``Value`` vertices with ordered inputs and outputs."""

    def __init__(self, name: str = "graph", props: ModelProps | None = None):
        self.name = name
        self.props = props or ModelProps()
        self.version = 0
        self._g = nx.MultiDiGraph()
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._output_set: frozenset[str] = frozenset()  # of _outputs: a decoder's cache has 2 per layer
        self._input_set: set[str] = set()  # of _inputs (IR < 4 lists every initializer)
        self._initializers: dict[str, Initializer] = {}
        self.value_info_names: set[str] = set()  # had a value_info entry: infer-shapes refreshes these
        self._order: dict[str, int] = {}  # node name -> insertion index, for deterministic order
        self._next_order = 0
        self._topo_cache: tuple[int, list[Node]] | None = None  # (version, order)
        self.memo: dict[str, object] = {}  # analyses' results, each stored with the version it was computed at

    # ---------------------------------------------------------------- queries
    def value(self, name: str) -> Value:
        return self._g.nodes[("v", name)]["obj"]

    def has_value(self, name: str) -> bool:
        return ("v", name) in self._g

    def node(self, name: str) -> Node:
        return self._g.nodes[("n", name)]["obj"]

    def has_node(self, name: str) -> bool:
        return ("n", name) in self._g

    @property
    def inputs(self) -> list[Value]:
        return [self.value(n) for n in self._inputs]

    @property
    def outputs(self) -> list[Value]:
        return [self.value(n) for n in self._outputs]

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def initializers(self) -> dict[str, Initializer]:
        return dict(self._initializers)

    def initializer(self, name: str) -> Initializer | None:
        return self._initializers.get(name)

    def nodes(self) -> Iterator[Node]:
        for key, data in self._g.nodes(data=True):
            if key[0] == "n":
                yield data["obj"]

    def values(self) -> Iterator[Value]:
        for key, data in self._g.nodes(data=True):
            if key[0] == "v":
                yield data["obj"]

    def num_nodes(self) -> int:
        return len(self._order)

    # accessors read networkx's own dicts (``_node``, ``_pred``, ``_succ``): its views cost more than the lookup
    def input_arity(self, node: Node | str) -> int:
        return len(self._g._node[("n", _name(node))]["ins"])

    def inputs_of(self, node: Node | str) -> list[Value | None]:
        """Explicit inputs by port; None where an optional input is omitted."""
        nodes = self._g._node  # _name inlined here and below: the passes call these thousands of times
        key = ("n", node if isinstance(node, str) else node.name)
        return [nodes[("v", n)]["obj"] if n else None for n in nodes[key]["ins"]]

    def implicit_inputs_of(self, node: Node | str) -> list[Value]:
        nodes = self._g._node  # "imp": the names add_node linked at IMPLICIT_PORT, sorted (no other method adds one)
        return [nodes[("v", n)]["obj"] for n in nodes[("n", _name(node))]["imp"]]

    def port_table(self) -> list[tuple[Node, list[str], list[str], tuple[str, ...]]]:
        """Every node (insertion order) with its input and output names by port ("" where omitted) and
        implicit input names: one read for whole-graph walks (verify, raise). The graph's own lists: read only."""
        return [(d["obj"], d["ins"], d["outs"], d["imp"]) for k, d in self._g._node.items() if k[0] == "n"]

    def outputs_of(self, node: Node | str) -> list[Value | None]:
        nodes = self._g._node
        key = ("n", node if isinstance(node, str) else node.name)
        return [nodes[("v", n)]["obj"] if n else None for n in nodes[key]["outs"]]

    def producer(self, value: Value | str) -> Node | None:
        for p in self._g._pred[("v", value if isinstance(value, str) else value.name)]:
            return self._g._node[p]["obj"]
        return None

    def producer_port(self, value: Value | str) -> int | None:
        for ports in self._g._pred[("v", _name(value))].values():
            for port in ports:
                return port
        return None

    def consumers(self, value: Value | str) -> list[tuple[Node, int]]:
        """``(node, port)`` pairs reading the value, sorted by graph order then port;
        port ``IMPLICIT_PORT`` marks a use from inside a subgraph attribute."""
        nodes, succ = self._g._node, self._g._succ[("v", _name(value))]
        uses = [(nodes[dst]["obj"], port) for dst, ports in succ.items() for port in ports]
        if len(uses) > 1:
            uses.sort(key=lambda u: (self._order[u[0].name], u[1]))
        return uses

    def num_consumers(self, value: Value | str) -> int:
        """``len(consumers(value))`` without building and sorting the list (a value every layer
        reads, a decoder's mask or rotary table, has thousands of uses)."""
        return sum(len(ports) for ports in self._g._succ[("v", _name(value))].values())

    def is_graph_output(self, value: Value | str) -> bool:
        return _name(value) in self._output_set

    def is_graph_input(self, value: Value | str) -> bool:
        return _name(value) in self._input_set

    def topo_nodes(self) -> list[Node]:
        """Nodes in a deterministic topological order (ties broken by original order);
        cached until the next mutation."""
        if self._topo_cache is not None and self._topo_cache[0] == self.version:
            return list(self._topo_cache[1])
        order = self._topo_sort()
        self._topo_cache = (self.version, order)
        return list(order)

    def _topo_sort(self) -> list[Node]:
        """Kahn's algorithm, the smallest original order first among the ready nodes (what
        networkx's lexicographical sort gives, on plain dicts: 3x faster on a 2,000-node ViT)."""
        nodes, pred, succ, order = self._g._node, self._g._pred, self._g._succ, self._order
        waits, readers = dict.fromkeys(order, 0), {n: [] for n in order}
        for key in nodes:
            if key[0] == "v" and pred[key]:
                src = next(iter(pred[key]))[1]
                for dst in succ[key]:
                    readers[src].append(dst[1])
                    waits[dst[1]] += 1
        ready = [(order[n], n) for n, w in waits.items() if w == 0]
        heapq.heapify(ready)
        out = []
        while ready:
            name = heapq.heappop(ready)[1]
            out.append(nodes[("n", name)]["obj"])
            for dst in readers[name]:
                waits[dst] -= 1
                if waits[dst] == 0:
                    heapq.heappush(ready, (order[dst], dst))
        if len(out) != len(order):
            raise GraphError("graph has a cycle")
        return out

    # -------------------------------------------------------------- mutation
    def _bump(self) -> None:
        self.version += 1

    def _ensure_value(self, name: str) -> None:
        if ("v", name) not in self._g:
            self._g.add_node(("v", name), obj=Value(name))

    def add_value(self, value: Value) -> Value:
        key = ("v", value.name)
        if key in self._g:
            raise GraphError(f"value {value.name!r} already exists")
        self._g.add_node(key, obj=value)
        self._bump()
        return value

    def add_input(self, value: Value) -> Value:
        """Append a graph input (an existing initializer may be listed too, as IR<4 does)."""
        if not self.has_value(value.name):
            self.add_value(value)
        elif self.value(value.name) is not value:
            raise GraphError(f"value {value.name!r} already exists")
        self._inputs.append(value.name)
        self._input_set.add(value.name)
        self._bump()
        return value

    def set_outputs(self, names: Iterable[str]) -> None:
        names = list(names)
        for n in names:
            self._ensure_value(n)
        self._outputs, self._output_set = names, frozenset(names)
        self._bump()

    def add_initializer(self, init: Initializer) -> Initializer:
        key, nodes = ("v", init.name), self._g._node
        if key in nodes:
            old = nodes[key]["obj"]
            if old.name in self._initializers or self.producer(old.name) is not None:
                raise GraphError(f"value {init.name!r} already exists")
            nodes[key]["obj"] = init
        else:  # networkx's add_node on its dicts, as add_node does
            self._g._succ[key], self._g._pred[key], nodes[key] = {}, {}, {"obj": init}
            _touched(self._g)
        self._initializers[init.name] = init
        self._bump()
        return init

    def replace_initializer(self, init: Initializer) -> Initializer:
        """Swap the data of an existing initializer (same name)."""
        if init.name not in self._initializers:
            raise GraphError(f"no initializer {init.name!r}")
        self._initializers[init.name] = init
        self._g.nodes[("v", init.name)]["obj"] = init
        self._bump()
        return init

    def set_value_type(self, name: str, tp: onnx.TypeProto | None, doc_string: str | None = None) -> None:
        old = self.value(name)
        if isinstance(old, Initializer):
            raise GraphError(f"{name!r} is an initializer; its type follows its array")
        doc = old.doc_string if doc_string is None else doc_string
        self._g.nodes[("v", name)]["obj"] = Value(name, tp, doc)
        self._bump()

    def add_node(self, node: Node, inputs: Iterable[str], outputs: Iterable[str],
                 implicit_inputs: Iterable[str] = ()) -> Node:
        key, nodes, succ, pred = ("n", node.name), self._g._node, self._g._succ, self._g._pred
        if key in nodes:
            raise GraphError(f"node {node.name!r} already exists")
        inputs, outputs = list(inputs), list(outputs)
        for name in outputs:  # refuse before changing anything
            if name and (name in self._initializers or pred.get(("v", name))):
                raise GraphError(f"value {name!r} has two producers ({node.name!r})")
        if len(set(o for o in outputs if o)) != len([o for o in outputs if o]):
            raise GraphError(f"node {node.name!r} writes one value twice")
        implicit = tuple(sorted(set(implicit_inputs)))
        succ[key], pred[key], nodes[key] = {}, {}, {"obj": node, "ins": inputs, "outs": outputs, "imp": implicit}
        self._order[node.name] = self._next_order
        self._next_order += 1
        # networkx's add_node and add_edge on its own dicts (what MultiDiGraph's do): lowering links
        # thousands of ports, and each call there costs more than the link
        for port, name in [(p, n) for p, n in enumerate(inputs) if n] + [(IMPLICIT_PORT, n) for n in implicit]:
            v = ("v", name)
            if v not in nodes:
                succ[v], pred[v], nodes[v] = {}, {}, {"obj": Value(name)}
            keys = succ[v].get(key)
            if keys is None:
                keys = succ[v][key] = pred[key][v] = {}
            keys[port] = {}
        for port, name in enumerate(outputs):
            if name:
                v = ("v", name)
                if v not in nodes:
                    succ[v], pred[v], nodes[v] = {}, {}, {"obj": Value(name)}
                keys = succ[key].get(v)
                if keys is None:
                    keys = succ[key][v] = pred[v][key] = {}
                keys[port] = {}
        _touched(self._g)
        self._bump()
        return node

    def replace_node(self, new: Node) -> None:
        """Swap a node's attributes (same name, same edges)."""
        key = ("n", new.name)
        if key not in self._g:
            raise GraphError(f"no node {new.name!r}")
        self._g.nodes[key]["obj"] = new
        self._bump()

    def set_input(self, node: Node | str, port: int, value_name: str) -> None:
        """Rewire one input port of a node to another value (the next port: a new operand)."""
        key = ("n", _name(node))
        ins = self._g.nodes[key]["ins"]
        if port > len(ins):
            raise GraphError(f"node {_name(node)!r} has no input port {port}")
        ins.extend([""] * (port + 1 - len(ins)))
        for src in [src for src, ports in self._g._pred[key].items() if port in ports]:
            self._g.remove_edge(src, key, key=port)
        if value_name:
            self._ensure_value(value_name)
            self._g.add_edge(("v", value_name), key, key=port)
        ins[port] = value_name
        self._bump()

    def remove_node(self, node: Node | str) -> None:
        key = ("n", _name(node))
        outs = list(self._g._succ[key])
        self._g.remove_node(key)
        del self._order[_name(node)]
        for dst in outs:  # values it produced and nobody else references go too
            if (not self._g._pred[dst] and not self._g._succ[dst]
                    and dst[1] not in self._output_set and dst[1] not in self._input_set):
                self._g.remove_node(dst)
        self._bump()

    def remove_value(self, name: str) -> None:
        key = ("v", name)
        if self._g._succ[key] or name in self._output_set:
            raise GraphError(f"value {name!r} is still used")
        if self._g._pred[key]:
            raise GraphError(f"value {name!r} is still produced")
        self._g.remove_node(key)
        self._initializers.pop(name, None)
        if name in self._input_set:
            self._inputs.remove(name)
            if name not in self._inputs:
                self._input_set.discard(name)
        self._bump()

    def remove_dead(self) -> int:
        """Remove nodes whose outputs nobody reads (standard ops only: a custom domain's may matter) and
        unused initializers; the count. A worklist: a removal looks again only at its inputs' producers."""
        nodes, succ = self._g._node, self._g._succ

        def dead(node: Node) -> bool:
            key = ("n", node.name)
            if key not in nodes or node.domain not in ("", "ai.onnx") or node.op_type in ("If", "Loop", "Scan"):
                return False
            outs = [n for n in nodes[key]["outs"] if n]  # unread: no use at all (a shared value's uses are not counted)
            return bool(outs) and all(not succ[("v", n)] and n not in self._output_set for n in outs)
        removed, work = 0, [node for node in self.nodes() if dead(node)]
        while work:
            node = work.pop()
            if dead(node):
                feeding = [self.producer(v) for v in self.inputs_of(node) if v is not None]
                self.remove_node(node)
                removed += 1
                work += [p for p in feeding if p is not None]
        for name in list(self._initializers):
            if not self._g._succ[("v", name)] and name not in self._output_set:
                self.remove_value(name)
                removed += 1
        return removed

    def unique_name(self, base: str, kind: str = "v") -> str:
        if (kind, base) not in self._g:
            return base
        i = 1
        while (kind, f"{base}_{i}") in self._g:
            i += 1
        return f"{base}_{i}"

    # -------------------------------------------------------------- constants
    def const_array(self, value: Value | str | None) -> np.ndarray | None:
        """The value's data when it is a constant: an initializer, a Constant node's output, or
        an Identity, Transpose, Cast, Reshape, Unsqueeze, Squeeze, Gather or DequantizeLinear of constants (PyTorch shares
        deduplicated weights through Identity nodes). ``Rewriter.set_const`` writes a new value
        back through Transpose and Cast links, and replaces the others by a new initializer."""
        if value is None:
            return None
        name = _name(value)
        if (init := self._initializers.get(name)) is not None:  # the walk's first step: nothing to remember
            return init.array
        memo = self.memo.get("const_array")
        if memo is None or memo[0] != self.version:  # remembered until the graph changes
            memo = self.memo["const_array"] = (self.version, {})
        if name in memo[1]:
            return memo[1][name]
        out = follow_constants(self, name)
        if out is None or out.size <= 4096 or not out.flags.owndata:  # not a large array of its own (a Cast)
            memo[1][name] = out
        return out


def _name(obj) -> str:
    return obj if isinstance(obj, str) else obj.name
