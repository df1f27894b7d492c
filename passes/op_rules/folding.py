"""Values the graph computes from constants alone, and the one evaluator that reads them.

Two kinds of rule read such values:

- ``constant_value``: PyTorch's exporter (without constant folding) writes an LSTM's W as
  Unsqueeze(Concat(Slice(weight_ih), ..)) to reorder its gates. Such a value is a constant of the
  model; rules may read it and slice may replace it by an initializer it cuts (the computing chain
  then dies). Only re-indexing ops and casts qualify (``FOLDABLE``): arithmetic on weights is not
  folded here.
- ``computed.computed_weights``: a weight computed by arithmetic from initializers (weight
  standardization), read as the constant it is and frozen when sliced.

Both walk the value's ancestors (``ancestors``: the nodes computing it and the constant leaves
it starts from, under each caller's rule for which producers qualify) and evaluate the chain with
ONNX's reference evaluator (``evaluate``: a model of just those nodes, the leaves as
initializers)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from ir import Graph

from .views import DEFAULT_DOMAINS

FOLDABLE = ("Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Gather", "Identity",
            "Cast", "Split", "Constant")
LIMIT = 64   # nodes in one folded chain


def ancestors(graph: Graph, names: list[str], qualifies: Callable, leaf: Callable,
              limit: int = LIMIT) -> tuple[list, dict[str, np.ndarray]] | None:
    """The nodes computing ``names`` (graph order) and the constant leaves they start from, or None.

    ``leaf(name)`` returns the leaf's array, None to walk on to its producer, or False when the
    value makes the chain unusable; every producer walked must satisfy ``qualifies(node)`` and
    read no outer-scope value, and at most ``limit`` nodes are walked."""
    nodes, leaves, stack, seen = [], {}, list(names), set()
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        arr = leaf(v)
        if arr is False:
            return None
        if arr is not None:
            leaves[v] = arr
            continue
        node = graph.producer(v)
        if node is None or node.domain not in DEFAULT_DOMAINS or not qualifies(node) \
                or graph.implicit_inputs_of(node):
            return None
        if node not in nodes:
            nodes.append(node)
            if len(nodes) > limit:
                return None
        stack += [i.name for i in graph.inputs_of(node) if i is not None]
    order = topo_index(graph)
    return sorted(nodes, key=lambda n: order[n.name]), leaves


def topo_index(graph: Graph) -> dict[str, int]:
    """Node name -> position in ``graph.topo_nodes()``, kept in ``graph.memo`` until the graph
    changes: ``ancestors`` sorts each chain it finds by it, and building it for each chain cost
    the whole graph per chain (a 128-layer decoder: 517 chains, 7.5 s)."""
    cached = graph.memo.get("topo_index")
    if cached is not None and cached[0] == graph.version:
        return cached[1]
    order = {n.name: i for i, n in enumerate(graph.topo_nodes())}
    graph.memo["topo_index"] = (graph.version, order)
    return order


def evaluate(graph: Graph, nodes: list, leaves: dict[str, np.ndarray],
             outputs: list[str]) -> list[np.ndarray] | None:
    """The arrays of ``outputs`` computed by ``nodes`` (graph order) from ``leaves``, by ONNX's
    reference evaluator; None when it cannot (an op or form it does not know)."""
    protos = []
    for node in nodes:
        proto = onnx.helper.make_node(node.op_type, [i.name if i is not None else "" for i in graph.inputs_of(node)],
                                      [o.name if o is not None else "" for o in graph.outputs_of(node)],
                                      name=node.name)
        proto.attribute.extend(node.attrs.values())
        protos.append(proto)
    try:
        from onnx.reference import ReferenceEvaluator

        inits = [onnx.numpy_helper.from_array(np.asarray(a), n) for n, a in sorted(leaves.items())]
        opsets = graph.props.opset_imports or {"": 17}
        model = onnx.helper.make_model(
            onnx.helper.make_graph(protos, "fold", [], [onnx.helper.make_value_info(n, onnx.TypeProto())
                                                        for n in outputs], inits),
            opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()])
        return [np.asarray(a) for a in ReferenceEvaluator(model).run(None, {})]
    except Exception:  # a form the evaluator does not know: not a constant we may read
        return None


def constant_value(graph: Graph, value) -> np.ndarray | None:
    """The value's array when it is a constant or computed from constants only, else None."""
    if value is None:
        return None
    arr = graph.const_array(value)
    if arr is not None:
        return arr
    name = value if isinstance(value, str) else value.name
    found = ancestors(graph, [name], lambda n: n.op_type in FOLDABLE, graph.const_array)
    if found is None:
        return None
    out = evaluate(graph, *found, [name])
    return out[0] if out else None
