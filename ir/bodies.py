"""If branches lowered into the graph, so channels cross the body boundary.

A top-level If whose branches read a value computed in the enclosing graph (not only graph
inputs and weights: those bodies are pruned as models of their own, ``passes/subgraphs.py``) is
lowered with its branch nodes as nodes of the graph: the If node then reads ``[cond] + the then
branch's outputs + the else branch's outputs`` (so a channel map flows out of both branches into
the If's outputs, where the op rule requires the two to agree), and a body node reads an outer
value as any node does (so its consumers are leaves of the outer group, sliced in place).
``ModelProps.bodies`` records which nodes belong to which branch; raising puts them back into
their bodies (a node a pass added that reads a body's value goes with it), the If reading
``cond`` alone; a weight only one branch reads goes back into it (any other, and every weight
a light raise declares as an input, stays in the enclosing graph: a body may read it from
there). A raised model is equivalent, not byte-identical, to the input.

Only Ifs whose every name is unique in the model are lowered so (no shadowing to resolve),
with no body inputs (If bodies have none) and no sparse initializers; others stay opaque.

Example: ``t = Conv(x); y = If(c, then: Relu(t) -> a, else: Conv(t) -> b)`` lowers to nodes
``Conv(x) -> t``, ``Relu(t) -> a``, ``Conv(t) -> b``, ``If(c, a, b) -> y``.

Loop and Scan bodies (``hoisted_nodes``): the body nodes that read a value computed in the
enclosing graph and depend on nothing of the body's own (no body input, no value another
iteration changes: loop-invariant, e.g. ``MatMul(Relu(t), W)`` on an outer ``t``), with the
Constants and body weights they read, are lowered as nodes of the graph ahead of the Loop / Scan,
which reads what they produce as outer values (recorded as the body's ``"body"`` branch). The
rest of the body stays opaque: a channel read there (or by the Loop / Scan itself) is a barrier.
So an outer value's channels reach leaves inside the body, sliced in place; raising puts the
lowered nodes back at the head of the body, where they run every iteration as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

BRANCHES = ("then_branch", "else_branch")


@dataclass(frozen=True)
class Branch:
    """Where a lowered branch's nodes came from: its graph's name and doc string and the IR
    names of its nodes, in their body order."""

    name: str
    doc_string: str
    nodes: tuple[str, ...]


def all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph``, each followed by the nodes of the bodies in its attributes (If,
    Loop, Scan), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from all_nodes(sub)


def implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope names a node's subgraph attributes read without declaring them."""
    names: set[str] = set()
    for attr in node.attribute:
        if attr.graphs or attr.HasField("g"):  # most attributes hold no graph: no lists built for them
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                names |= free_names(sub)
    return names


def free_names(graph: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for n in graph.node:
        used.update(i for i in n.input if i and i not in defined)
        used |= implicit_inputs(n) - defined
        defined.update(n.output)
    used.update(o.name for o in graph.output if o.name not in defined)
    return used - defined


def _defined(graph: onnx.GraphProto, counts: dict[str, int]) -> None:
    """Counts every name each scope defines, nested bodies included."""
    for name in [i.name for i in graph.input] + [t.name for t in graph.initializer] + \
            [o for n in graph.node for o in n.output if o]:
        counts[name] = counts.get(name, 0) + 1
    for n in graph.node:
        for a in n.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                        list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
                _defined(sub, counts)


def lowered_ifs(model: onnx.ModelProto) -> set[int]:
    """Positions of the top-level If nodes lowered into the graph (see the module docstring)."""
    g = model.graph
    if not any(n.op_type == "If" for n in g.node):
        return set()
    computed = {o for n in g.node for o in n.output if o}
    counts: dict[str, int] = {}
    _defined(g, counts)
    out = set()
    for i, n in enumerate(g.node):
        if n.op_type != "If" or n.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: a for a in n.attribute}
        if not all(b in attrs and attrs[b].type == onnx.AttributeProto.GRAPH for b in BRANCHES):
            continue
        bodies = [attrs[b].g for b in BRANCHES]
        if any(body.input or body.sparse_initializer or len(body.output) != len(n.output) for body in bodies):
            continue
        reads = set().union(*(free_names(body) for body in bodies))
        if not reads & computed:
            continue
        own = [name for body in bodies for name in [t.name for t in body.initializer]
               + [o for bn in body.node for o in bn.output if o]]
        if any(counts.get(name, 0) != 1 for name in own):
            continue
        out.add(i)
    return out


BODY_OPS = ("Loop", "Scan")
# what a head may hold: the leaves (their input channels), elementwise and unary ops before them,
# Constants; anything else (a Shape of a pruned value, say) stays in the body, a barrier there
HEAD_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Constant", "Identity", "Cast", "Add", "Sub", "Mul", "Div",
            "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Gelu",
            "Softplus", "Softsign", "Clip", "Neg", "Abs", "Exp", "Erf", "Sqrt", "BatchNormalization"}


def hoisted_nodes(model: onnx.ModelProto) -> dict[int, tuple[list[int], list[str]]]:
    """Top-level Loop / Scan position -> (positions of the body nodes lowered into the graph,
    names of the body weights moved with them); see the module docstring. Only bodies whose
    lowered names are unique in the model, and only nodes of the default domain in
    ``HEAD_OPS``."""
    g = model.graph
    if not any(n.op_type in BODY_OPS for n in g.node):
        return {}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    computed = {o for n in g.node for o in n.output if o}
    counts: dict[str, int] = {}
    _defined(g, counts)
    out = {}
    for i, n in enumerate(g.node):
        if n.op_type not in BODY_OPS or n.domain not in ("", "ai.onnx") or n.op_type == "Scan" and opset < 9:
            continue  # Scan 8 (batched, sequence_lens) is left opaque
        body = next((a.g for a in n.attribute if a.name == "body" and a.type == onnx.AttributeProto.GRAPH), None)
        if body is None or body.sparse_initializer:
            continue
        weights = {t.name for t in body.initializer}
        local = {i.name for i in body.input} | weights | {o for bn in body.node for o in bn.output if o}
        invariant: set[str] = set()   # values of the body no iteration changes
        tainted: set[str] = set()     # invariant values computed from an outer computed value
        candidates = []
        for j, bn in enumerate(body.node):
            ok = bn.domain in ("", "ai.onnx") and bn.op_type in HEAD_OPS and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in bn.attribute)
            reads = [x for x in bn.input if x]
            if ok and all(x in invariant or x in weights or x not in local for x in reads):
                invariant.update(o for o in bn.output if o)
                candidates.append(j)
                if any(x in tainted or (x not in local and x in computed) for x in reads):
                    tainted.update(o for o in bn.output if o)
        if not tainted:
            continue
        needed = set(tainted)  # and the invariant values they read (a Constant), back to front
        keep = []
        for j in reversed(candidates):
            bn = body.node[j]
            if any(o in needed for o in bn.output):
                keep.append(j)
                needed.update(x for x in bn.input if x)
        keep.reverse()
        moved = sorted(w for w in weights if w in needed)
        names = moved + [o for j in keep for o in body.node[j].output if o]
        if any(counts.get(name, 0) != 1 for name in names):
            continue
        out[i] = (keep, moved)
    return out


def body_scopes(graph, topo) -> dict[str, tuple[str, str]]:
    """Node name -> (If node, branch) for each node raised into a body: the recorded ones, and a
    node a pass added that reads a value one of them produces."""
    bodies = graph.props.bodies
    scope: dict[str, tuple[str, str]] = {}
    for if_name, branches in bodies.items():
        if not graph.has_node(if_name):
            continue
        for attr, branch in branches.items():
            for name in branch.nodes:
                if graph.has_node(name):
                    scope[name] = (if_name, attr)
    if not scope:
        return scope
    for node in topo:
        if node.name in scope or node.name in bodies:
            continue
        for v in graph.inputs_of(node):
            producer = graph.producer(v.name) if v is not None else None
            if producer is not None and producer.name in scope:
                scope[node.name] = scope[producer.name]
                break
    return scope


def weight_homes(graph, scope: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Initializer -> (If, branch) for a weight read only by nodes of one lowered branch (as
    exporters write them): it goes back into that body; any other stays in the enclosing graph."""
    from .graph import IMPLICIT_PORT

    out = {}
    interface = set(graph.output_names) | set(graph.input_names)
    for name in graph.initializers:
        uses = graph.consumers(name)
        wheres = {scope.get(n.name) for n, _ in uses}
        if name not in interface and len(wheres) == 1 and None not in wheres \
                and all(port != IMPLICIT_PORT for _, port in uses):
            out[name] = wheres.pop()
    return out


def raised_if(graph, node, proto: onnx.NodeProto, members: dict[str, list[onnx.NodeProto]],
              value_info, weights: dict[tuple[str, str], list[onnx.TensorProto]]) -> None:
    """The If's proto reading ``cond`` alone, its branches rebuilt from their members' protos.
    A body output is declared with its element type alone: its shape may have changed since
    lowering, and inference reads it off the body."""
    branches = graph.props.bodies[node.name]
    ins = [v.name if v is not None else "" for v in graph.inputs_of(node)]
    k = (len(ins) - 1) // 2
    outputs = {"then_branch": ins[1:1 + k], "else_branch": ins[1 + k:]}
    del proto.input[1:]
    attrs = []
    for a in proto.attribute:
        if a.name not in branches:
            attrs.append(a)
            continue
        branch = branches[a.name]
        body_nodes = members.get(a.name, [])
        produced = {o for n in body_nodes for o in n.output if o}
        outs = []
        for name in outputs[a.name]:
            declared = a.g.output[len(outs)]
            elem = graph.value(name).elem_type or (declared.type.tensor_type.elem_type
                                                   if declared.type.HasField("tensor_type") else 0)
            outs.append(onnx.helper.make_tensor_value_info(name, elem, None) if elem else
                        onnx.ValueInfoProto(name=name))  # an exporter may leave it untyped (PyTorch)
        infos = [value_info(graph.value(n)) for n in sorted(produced) if n in graph.value_info_names
                 and graph.has_value(n) and graph.value(n).type is not None]
        body = onnx.helper.make_graph(body_nodes, branch.name, [], outs, weights.get((node.name, a.name), []),
                                      value_info=infos, doc_string=branch.doc_string)
        attrs.append(onnx.helper.make_attribute(a.name, body))
    del proto.attribute[:]
    proto.attribute.extend(attrs)


def raised_body(graph, node, proto: onnx.NodeProto, members: dict[str, list[onnx.NodeProto]],
                value_info, weights: dict[tuple[str, str], list[onnx.TensorProto]]) -> None:
    """The Loop / Scan's body with its lowered nodes back at its head (they read only outer
    values and each other), and the weights only they read."""
    nodes = members.get("body", [])
    produced = {o for n in nodes for o in n.output if o}
    attrs = []
    for a in proto.attribute:
        if a.name != "body" or a.type != onnx.AttributeProto.GRAPH:
            attrs.append(a)
            continue
        body = onnx.GraphProto()
        body.CopyFrom(a.g)
        rest = list(body.node)
        del body.node[:]
        body.node.extend(nodes + rest)
        body.initializer.extend(weights.get((node.name, "body"), []))
        body.value_info.extend(value_info(graph.value(n)) for n in sorted(produced) if n in graph.value_info_names
                               and graph.has_value(n) and graph.value(n).type is not None)
        attrs.append(onnx.helper.make_attribute("body", body))
    del proto.attribute[:]
    proto.attribute.extend(attrs)


def body_values(graph) -> set[str]:
    """Values produced inside lowered branches: a run cannot return them as graph outputs."""
    if not graph.props.bodies:
        return set()
    scope = body_scopes(graph, graph.topo_nodes())
    return {v.name for name in scope for v in graph.outputs_of(name) if v is not None}
