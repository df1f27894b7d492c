"""Structural invariants of the IR, every problem at once.

``verify(graph)`` returns a list of one-line problems (empty when the graph is sound):
every node input is produced, initialised or a graph input; no value has two producers; the
graph is acyclic; outputs exist; initializer types agree with their arrays. It never raises for
a broken graph, so a pass manager can report all problems of a failing pass together.

Example::

    problems = verify(g)      # [] or ["node 'conv2' input 1 'w2' has no producer", ...]
"""

from __future__ import annotations

from .graph import Graph, GraphError, Initializer


def verify(graph: Graph) -> list[str]:
    problems: list[str] = []
    defined = set(graph.input_names) | set(graph.initializers)
    for node in graph.nodes():
        for out in graph.outputs_of(node):
            if out is not None:
                defined.add(out.name)
    for node in graph.nodes():
        for port, value in enumerate(graph.inputs_of(node)):
            if value is not None and value.name not in defined:
                problems.append(f"node {node.name!r} input {port} {value.name!r} has no producer")
        for value in graph.implicit_inputs_of(node):
            if value.name not in defined:
                problems.append(f"node {node.name!r} subgraph reads {value.name!r}, which nothing defines")
    for name in graph.output_names:
        if name not in defined:
            problems.append(f"graph output {name!r} has no producer")
    for name, init in graph.initializers.items():
        if graph.producer(name) is not None:
            problems.append(f"initializer {name!r} is also produced by node {graph.producer(name).name!r}")
        if not isinstance(graph.value(name), Initializer):
            problems.append(f"initializer {name!r} is not registered as one")
        shape = init.shape
        if shape is not None and tuple(shape) != tuple(init.dims):
            problems.append(f"initializer {name!r} type {shape} disagrees with its data {init.dims}")
    try:
        graph.topo_nodes()
    except GraphError as exc:
        problems.append(str(exc))
    return problems
