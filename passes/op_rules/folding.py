"""Weights the graph computes from constants alone: PyTorch's exporter (without constant folding)
writes an LSTM's W as Unsqueeze(Concat(Slice(weight_ih), ..)) to reorder its gates. Such a
value is a constant of the model: ``constant_value`` evaluates it (ONNX's reference evaluator on
the sub-graph of its ancestors), so rules may read it and slice may replace it by an initializer
it cuts (the computing chain then dies). Only re-indexing ops and casts qualify: arithmetic on
weights is not folded here."""

from __future__ import annotations

import numpy as np
import onnx

from ir import Graph

from .views import DEFAULT_DOMAINS

FOLDABLE = ("Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Gather", "Identity",
            "Cast", "Split", "Constant")
LIMIT = 64   # nodes in one folded chain


def constant_value(graph: Graph, value) -> np.ndarray | None:
    """The value's array when it is a constant or computed from constants only, else None."""
    if value is None:
        return None
    arr = graph.const_array(value)
    if arr is not None:
        return arr
    name = value if isinstance(value, str) else value.name
    nodes, leaves, stack, seen = [], {}, [name], set()
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        arr = graph.const_array(v)
        if arr is not None:
            leaves[v] = arr
            continue
        node = graph.producer(v)
        if node is None or node.domain not in DEFAULT_DOMAINS or node.op_type not in FOLDABLE \
                or graph.implicit_inputs_of(node) or len(nodes) >= LIMIT:
            return None
        if node not in nodes:
            nodes.append(node)
        stack += [i.name for i in graph.inputs_of(node) if i is not None]
    order = {n.name: i for i, n in enumerate(graph.topo_nodes())}
    protos = []
    for node in sorted(nodes, key=lambda n: order[n.name]):
        proto = onnx.helper.make_node(node.op_type, [i.name if i is not None else "" for i in graph.inputs_of(node)],
                                      [o.name if o is not None else "" for o in graph.outputs_of(node)],
                                      name=node.name)
        proto.attribute.extend(node.attrs.values())
        protos.append(proto)
    try:
        from onnx.reference import ReferenceEvaluator

        inits = [onnx.numpy_helper.from_array(np.asarray(a), n) for n, a in sorted(leaves.items())]
        model = onnx.helper.make_model(
            onnx.helper.make_graph(protos, "fold", [], [onnx.helper.make_value_info(name, onnx.TypeProto())], inits),
            opset_imports=[onnx.helper.make_opsetid("", graph.props.opset_imports.get("", 17))])
        return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
    except Exception:  # a form the evaluator does not know: not a constant we may read
        return None
