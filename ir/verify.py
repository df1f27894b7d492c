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
    table = graph.port_table()  # names by port, read once (the pipeline verifies after every changing pass)
    inits = graph.initializers
    defined = set(graph.input_names) | set(inits)
    for _, _, outs, _ in table:
        defined.update(outs)
    defined.discard("")  # an omitted output
    for node, ins, _, implicit in table:
        for port, name in enumerate(ins):
            if name and name not in defined:
                problems.append(f"node {node.name!r} input {port} {name!r} has no producer")
        for name in implicit:
            if name not in defined:
                problems.append(f"node {node.name!r} subgraph reads {name!r}, which nothing defines")
    for name in graph.output_names:
        if name not in defined:
            problems.append(f"graph output {name!r} has no producer")
    for name, init in inits.items():
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
