"""What a channel rule sees and answers: ``NodeView`` (a node, its operands' constants, shapes
and channel maps), ``Effect`` (output maps, couplings, a leaf consumption or a block reason),
``RootSpec`` and ``ChannelRule``, and the small helpers every rule shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ir import Graph, Node

from ..analyses import ChannelMap


DEFAULT_DOMAINS = ("", "ai.onnx")


# ----------------------------------------------------------------------------- views
@dataclass
class NodeView:
    """What a rule may look at: the node, its operands' constants and shapes, channel maps."""

    graph: Graph
    node: Node
    maps: list[ChannelMap | None]
    shapes: dict[str, tuple]
    opset: int
    static: dict[str, np.ndarray] = field(default_factory=dict)  # computed shape operands, folded
    shape_values: dict = field(default_factory=dict)  # name -> ShapeValue, partly known ones too
    computed: dict[str, np.ndarray] = field(default_factory=dict)  # weights computed from initializers
    known: dict[str, ChannelMap] = field(default_factory=dict)  # every value's channel map so far (trees)

    def input_name(self, port: int) -> str | None:
        ins = self.graph.inputs_of(self.node)
        return ins[port].name if port < len(ins) and ins[port] is not None else None

    def const(self, port: int) -> np.ndarray | None:
        name = self.input_name(port)
        if name is None:
            return None
        arr = self.graph.const_array(name)
        return self.computed.get(name) if arr is None else arr

    def static_value(self, port: int) -> np.ndarray | None:
        """A constant, or an integer operand computed from constants and static shapes (a
        Shape→Gather→Concat target): its value in the original model."""
        arr = self.const(port)
        if arr is not None:
            return arr
        name = self.input_name(port)
        return None if name is None else self.static.get(name)

    def shape(self, port: int) -> tuple | None:
        name = self.input_name(port)
        if name is None:
            return None
        arr = self.graph.const_array(name)
        if arr is not None:
            return tuple(arr.shape)
        return self.shapes.get(name)

    def rank(self, port: int) -> int | None:
        m = self.maps[port] if port < len(self.maps) else None
        if m is not None:
            return m.rank
        s = self.shape(port)
        return None if s is None else len(s)

    def n_inputs(self) -> int:
        return len(self.maps)

    def n_outputs(self) -> int:
        return len(self.graph.outputs_of(self.node))

    def output_used(self, port: int) -> bool:
        outs = self.graph.outputs_of(self.node)
        if port >= len(outs) or outs[port] is None:
            return False
        v = outs[port]
        return bool(self.graph.consumers(v)) or self.graph.is_graph_output(v)

    def labeled(self) -> list[int]:
        return [p for p, m in enumerate(self.maps) if m is not None]


@dataclass
class Effect:
    """A rule's answer: output maps by port, id pairs made equivalent, a leaf consumption
    ``(data_port, weight_port, weight_axis, filter_axis)``, or a block reason."""

    outputs: dict[int, ChannelMap] = field(default_factory=dict)
    couplings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    leaf: tuple[int, int, int, int] | None = None
    block: str | None = None
    heads: bool = False     # the output map's positions are attention heads (a class = one head)
    adapts: tuple[int, ...] = ()  # shape operands that count channels yet adapt by themselves
    freeze: tuple[int, ...] = ()  # computed shape operands frozen to their folded value (symbolic
                                  # elements kept live by slice), then rewritten
    stream: bool = False    # the node reads statistics over the channels (a normalization): removed
                            # channels must be exactly zero at its input (roots zeroed in the proof)
    fresh: bool = False     # positions marked FRESH in the output maps get new ids: zero channels a
                            # Pad adds to the channel axis, removed with the class they join (an Add)


FRESH = -2  # an output position that gets a new id (``Effect.fresh``)


def blocked(reason: str) -> Effect:
    return Effect(block=reason)


@dataclass(frozen=True)
class RootSpec:
    weight_port: int
    weight_axis: int
    out_axis: int
    out_rank: int
    channels: int
    outputs: tuple[tuple[int, int, int], ...] = ()  # more outputs carrying them: (port, axis, rank)
    self_leaf: tuple[int, int, int, int] | None = None  # its own channels read back (a recurrent state)


@dataclass(frozen=True)
class ChannelRule:
    role: str                                   # Table II attribute
    propagate: Callable[[NodeView], Effect]
    mixes: str = ""                             # what it mixes, for docs and `inspect`


# ----------------------------------------------------------------------------- helpers
def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def landing_axis(ins, outs, c: int) -> int | None:
    """The axis of a reshape's output shape ``outs`` that is axis ``c`` of its input shape ``ins``
    whole: the same size after as many elements (where a one-channel map varies along no axis).
    Of size 1 (one channel, at every element), any output axis of size 1 holds it as well: the
    first (tf2onnx writes the transposes of a one-channel tensor as Reshapes, [1, T] -> [T, 1])."""
    if any(not isinstance(d, (int, np.integer)) for d in (*ins, *outs)) or not 0 <= c < len(ins):
        return None
    before = int(np.prod(ins[:c], dtype=np.int64))
    exact = next((a for a in range(len(outs))
                  if int(np.prod(outs[:a], dtype=np.int64)) == before and outs[a] == ins[c]), None)
    return exact if exact is not None or ins[c] != 1 else next((a for a, d in enumerate(outs) if d == 1), None)


def _attr_or_input(view: NodeView, attr: str, port: int, since: int):
    """Read an operand that moved from an attribute to an input at opset ``since``."""
    if view.opset < since:
        value = view.node.attr(attr)
        return None if value is None else np.asarray(value, dtype=np.int64), True
    if port >= view.n_inputs() or view.input_name(port) is None:
        return None, True
    arr = view.static_value(port)  # a constant, or folded from constants and static shapes
    return (None, False) if arr is None else (np.asarray(arr).astype(np.int64), True)


def _only(view: NodeView, port: int = 0) -> ChannelMap | None:
    """The single tracked input, when it is ``port``; None if other inputs are tracked too."""
    labeled = view.labeled()
    return view.maps[port] if labeled == [port] else None


def _same_all(view: NodeView, m: ChannelMap) -> Effect:
    return Effect(outputs={p: m for p in range(view.n_outputs())})


def fed_input(graph: Graph, name: str) -> bool:
    """A graph input a caller may feed: a real input, or an initializer listed among the inputs of
    a new-style model (an overridable default). In the old style (every initializer listed, IR 3)
    a listed initializer is just a weight, rewritten in place under its own name."""
    if not graph.is_graph_input(name):
        return False
    return graph.initializer(name) is None or not graph.props.initializers_as_inputs


def own_constant(graph: Graph, node, port: int, array: np.ndarray, name: str) -> None:
    """``node`` reads ``array`` at ``port`` from now on: the initializer there rewritten in place
    when ``node`` is its one reader (not a graph output, not an input a caller may feed), else a
    new initializer named after ``name`` (made unique), which only ``node`` reads."""
    from ir import Initializer  # local: only transforms build initializers

    value = graph.inputs_of(node)[port]
    if graph.initializer(value.name) is not None and graph.num_consumers(value) == 1 \
            and not graph.is_graph_output(value) and not fed_input(graph, value.name):
        graph.replace_initializer(Initializer.from_array(value.name, array))
        return
    name = graph.unique_name(name)
    graph.add_initializer(Initializer.from_array(name, array))
    graph.set_input(node, port, name)
