"""Recurrent networks: LSTM, GRU and RNN, where a hidden unit is a prunable channel.

A unit ``j`` owns the rows ``j, H+j, .., (G-1)·H+j`` of W [D, G·H, I] and R [D, G·H, H] (its
gates: LSTM i,o,f,c, GRU z,r,h, RNN one), the matching entries of B [D, 2·G·H] and of the LSTM
peepholes P [D, 3·H], and entry ``j`` of ``initial_h`` / ``initial_c``. Its state feeds every
unit's gates through R's column ``j``: the node is a leaf of its own channels there (R's axis 2),
so the masked original (R's column zeroed) computes the kept units exactly as the pruned node
does. Y [seq, D, batch, H] (layout 1: [batch, seq, D, H]), Y_h and Y_c [D, batch, H] (layout 1:
[batch, D, H]) carry the unit on their last axis; a bidirectional node's units pair by direction
(unit ``j`` of the forward and of the reverse pass are one channel), so its Y, transposed and
reshaped to [seq, batch, 2·H], carries every id twice. The input size is consumed through W's
axis 2: a leaf of the group feeding X.

An initial state that is not a constant (a graph input, a computed value) keeps its shape: the
pruned node reads the kept units through a Gather, so the user's interface is unchanged (the
removed units' initial values never reach a kept unit, see above).

Example: ``LSTM(hidden_size=4)`` with W [1, 16, 3]: removing unit 1 keeps W rows
[0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15], R's same rows and columns [0, 2, 3], B's 24 entries
less 6, and writes ``hidden_size=3``.
"""

from __future__ import annotations

import numpy as np

from ir import Initializer, Node

from .folding import constant_value
from .views import Effect, NodeView, RootSpec, blocked

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
STATE_PORTS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
OUTPUT_PORTS = {"LSTM": (0, 1, 2), "GRU": (0, 1), "RNN": (0, 1)}
PEEPHOLE_PORT = 7  # LSTM only
RECURRENT_LEAF = (5, 2, 2, 1)  # (the state port, R, R's unit axis, R's gate-row axis)
RECURRENT_ROWS = (2, 3, 5, 6, 7)  # R, B, initial_h, initial_c, P: indexed by the unit like W's rows


def _recurrent(view: NodeView) -> Effect:
    """Channels on X's feature axis are read by W's columns (a leaf); anywhere else they block."""
    op = view.node.op_type
    if view.labeled() != [0]:
        return blocked(f"channels reach the weights, sequence lengths or initial state of {op}")
    m = view.maps[0]
    if m.rank != 3 or m.axis != 2:
        return blocked(f"{op} reads channels on its sequence or batch axis")
    w = _const(view, 1)
    if w is None or w.ndim != 3:
        return blocked(f"{op} weight is not a constant")
    return Effect(leaf=(0, 1, 2, 1))


def _recurrent_root(view: NodeView) -> RootSpec | None:
    """Hidden units as channels: weight W, its gate-row axis 1 (``criteria.root_weight`` reads
    the G blocks of H rows as one channel each); every present output carries them."""
    node, op = view.node, view.node.op_type
    gates = GATES[op]
    w, r = _const(view, 1), _const(view, 2)
    if w is None or r is None or w.ndim != 3 or r.ndim != 3:
        return None
    hidden = int(r.shape[2])
    if node.attr("hidden_size", hidden) != hidden or w.shape[1] != gates * hidden \
            or r.shape[1] != gates * hidden or w.shape[0] != r.shape[0]:
        return None
    extra = [3] + ([PEEPHOLE_PORT] if op == "LSTM" else [])
    if any(view.input_name(p) is not None and _const(view, p) is None for p in extra):
        return None  # a computed bias or peephole: nothing to slice it by
    outs = view.graph.outputs_of(node)
    present = [p for p in OUTPUT_PORTS[op] if p < len(outs) and outs[p] is not None]
    if not present:
        return None
    ports = tuple((p, 3 if p == 0 else 2, 4 if p == 0 else 3) for p in present)
    _, axis, rank = ports[0]
    return RootSpec(1, 1, axis, rank, hidden, outputs=ports[1:], self_leaf=RECURRENT_LEAF)


def _const(view, port: int) -> np.ndarray | None:
    """A constant operand, or one computed from constants (PyTorch's gate reordering)."""
    ins = view.graph.inputs_of(view.node)
    return None if port >= len(ins) else constant_value(view.graph, ins[port])


def _slice_recurrent(rw, ins, outs) -> None:
    """W, R, B, P lose the removed units' gate rows, R its columns, the initial states their
    entries (a non-constant state through a Gather); X's removed features leave W's columns."""
    op = rw.node.op_type
    gates = GATES[op]
    unit = next((outs[p][1] for p in OUTPUT_PORTS[op] if p in outs), None)
    w = _const(rw, 1)
    if unit is not None:
        rows = np.tile(unit, gates)
        w = np.compress(rows, w, axis=1)
        rw.set_const(2, np.compress(rows, np.compress(unit, _const(rw, 2), axis=2), axis=1))
        if _const(rw, 3) is not None:
            rw.set_const(3, np.compress(np.tile(unit, 2 * gates), _const(rw, 3), axis=1))
        if op == "LSTM" and _const(rw, PEEPHOLE_PORT) is not None:
            rw.set_const(PEEPHOLE_PORT, np.compress(np.tile(unit, 3), _const(rw, PEEPHOLE_PORT), axis=1))
        for port in STATE_PORTS[op]:
            _slice_state(rw, port, unit)
        rw.set_attr("hidden_size", int(unit.sum()))
    if 0 in ins:
        w = np.compress(ins[0][1], w, axis=2)
    if unit is not None or 0 in ins:
        rw.set_const(1, w)


def _slice_state(rw, port: int, unit: np.ndarray) -> None:
    ins = rw.graph.inputs_of(rw.node)
    if port >= len(ins) or ins[port] is None:
        return
    state = _const(rw, port)
    if state is not None:
        rw.set_const(port, np.compress(unit, state, axis=2))
        return
    g = rw.graph
    index = g.unique_name(f"{rw.node.name}.state{port}.kept")
    g.add_initializer(Initializer.from_array(index, np.nonzero(unit)[0].astype(np.int64)))
    kept = g.unique_name(f"{ins[port].name}.kept")
    gather = Node(g.unique_name(f"{rw.node.name}.state{port}.gather", "n"), "Gather",
                  attrs={"axis": _int_attr("axis", 2)})
    g.add_node(gather, [ins[port].name, index], [kept])
    g.set_input(rw.node, port, kept)


def _int_attr(key: str, value: int):
    import onnx

    return onnx.helper.make_attribute(key, value)
