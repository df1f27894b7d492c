"""Decoder attention: rotary embeddings, grouped-query attention (GQA) and the KV cache.

- **Rotary** (``q·cos + rotate_half(q)·sin``; rotate_half as Slice/Neg/Concat halves or
  Split/Neg/Concat along the head dim): the head split's lookahead (``feeds_batched_matmul``)
  sees through these ops (``toward_heads``), so the split keeps its ids on the head axis and a
  class is a whole head. Then Slice/Split/Concat work along the head dim (not the channel axis),
  and cos/sin broadcast over the head axis (their dim there is 1): the existing rules carry the
  heads through, and a head's D channels (its rotary pairs among them) stay one class.
- **GQA** (repeat_kv: ``k[:, :, None].expand(B, KV, n_rep, T, D).reshape(B, H, T, D)``):
  ``Expand`` broadcasts along non-channel axes only (``_expand``); the merging Reshape then
  repeats each KV head's id n_rep times on the head axis, and Q·Kᵀ / A·V couple every query head
  with the KV head it reads: a class is one KV group (its KV head and its n_rep query heads),
  removed whole. The Expand's target (computed, folded) is rewritten with 1 on the channel axis
  (broadcasting keeps whatever width the input has).
- **KV cache**: see ``trees`` (``adopt_inputs``): a graph input joined elementwise with tracked
  channels (``Concat(past_key, k)`` along the sequence) is adopted, it takes the same ids, and the
  graph output carrying exactly those ids (``present_key``) may shrink with it.
"""

from __future__ import annotations

import numpy as np

from ir import Graph, Node

from ..analyses import ChannelMap
from .views import DEFAULT_DOMAINS, Effect, NodeView, _axis, _only, blocked

# ops a head split's lookahead passes through on its way to Q·Kᵀ / A·V (rotary arithmetic, the
# cache Concat, repeat_kv's Expand); only where the split keeps its ids rides on it
TOWARD_HEADS = ("Mul", "Add", "Sub", "Neg", "Slice", "Split", "Concat", "Expand", "Cast", "Where")


def toward_heads(graph: Graph, node: Node, port: int) -> bool:
    """Whether the head split's lookahead goes on through ``node`` (reached on input ``port``)."""
    if node.domain not in DEFAULT_DOMAINS or node.op_type not in TOWARD_HEADS:
        return False
    if node.op_type in ("Slice", "Split", "Expand", "Neg", "Cast"):
        return port == 0
    if node.op_type == "Where":
        return port in (1, 2)
    return True


def _expand(view: NodeView) -> Effect:
    """Expand broadcasts its input to a target shape: channels pass when the channel axis is not
    broadcast (the target there is 1 or the channel count), the output's rank may grow."""
    m = _only(view, 0)
    if m is None:
        return blocked("channels reach the shape input of Expand")
    target = view.static_value(1)
    if target is None:
        return expand_entry_adapts(view, m) or blocked("Expand to a computed shape that does not fold to a constant")
    target = [int(t) for t in np.ravel(target)]
    out_rank = max(m.rank, len(target))
    axis = m.axis + out_rank - m.rank
    t_axis = axis - (out_rank - len(target))
    if t_axis >= 0 and target[t_axis] not in (1, len(m)):
        return blocked("Expand broadcasts along the channel axis")
    return Effect(outputs={0: ChannelMap(axis, out_rank, m.ids)})


def _slice_expand(rw, ins, outs) -> None:
    """The channel entry of Expand's target becomes 1: broadcasting keeps the input's width."""
    if 0 not in ins or rw.const(1) is None:
        return
    axis, _, rank = ins[0]
    target = np.array(rw.const(1), dtype=np.int64).copy()
    t_axis = axis + len(target) - max(rank, len(target))
    if t_axis >= 0 and target[t_axis] != 1:
        target[t_axis] = 1
        rw.set_const(1, target)


# ----------------------------------------------------------------------------- the KV cache
def adoptable_input(graph: Graph, value) -> list | None:
    """The chain ``[graph input, .., value]`` when ``value`` is a real graph input (a KV cache's
    ``past_*``), or one passed on only by single-input Concat / Identity links, and every value of
    the chain is read by nothing but the next link (Shape reads aside: their numbers are checked
    like any other Shape read). None otherwise."""
    chain = [value]
    while True:
        v = chain[0]
        if v.name in graph.input_names:
            break
        prod = graph.producer(v)
        ins = graph.inputs_of(prod) if prod is not None else []
        if prod is None or prod.domain not in DEFAULT_DOMAINS or prod.op_type not in ("Concat", "Identity") \
                or len(ins) != 1 or ins[0] is None:
            return None
        chain.insert(0, ins[0])
    head = chain[0]
    if graph.initializer(head.name) is not None:
        return None
    for i, v in enumerate(chain):
        if graph.is_graph_output(v):
            return None
        readers = [n for n, _ in graph.consumers(v) if n.op_type != "Shape"]
        if i + 1 < len(chain) and [graph.producer(chain[i + 1])] != readers:
            return None
        if i + 1 == len(chain) and len(readers) != 1:
            return None
    return chain


def adopt(view: NodeView) -> dict[int, list]:
    """Untracked operands of a Concat along another axis than the tracked channels' (the KV cache
    join ``Concat(past_key, k, axis=seq)``) that are graph inputs (``adoptable_input``) of the
    same width on the channel axis: port -> chain. They take the tracked operand's ids, so the
    cache input shrinks with the heads (``trees`` refuses it under ``keep-io``)."""
    node = view.node
    if node.op_type != "Concat" or node.domain not in DEFAULT_DOMAINS:
        return {}
    labeled = view.labeled()
    if not labeled:
        return {}
    m = view.maps[labeled[0]]
    if _axis(node.attr("axis"), m.rank) == m.axis:
        return {}
    out = {}
    for p in range(view.n_inputs()):
        if view.maps[p] is not None or view.input_name(p) is None:
            continue
        shape = view.shape(p)
        if shape is None or len(shape) != m.rank or shape[m.axis] != len(m):
            continue
        chain = adoptable_input(view.graph, view.graph.inputs_of(node)[p])
        if chain is not None:
            out[p] = chain
    return out


# ----------------------------------------------------------------------------- dynamic axes
def _entries(view: NodeView, port: int) -> tuple[list, list] | None:
    """A computed shape operand element by element: an int where its value is known, the symbolic
    dim's name where it is exactly that dim; and per element whether a Shape read feeds it (its
    value then follows the pruned model's shapes at run time); None for an unknown element."""
    sv = view.shape_values.get(view.input_name(port) or "")
    if sv is None or sv.value is None or sv.value.ndim != 1:
        return None
    out, read = [], []
    for v, taint in zip(sv.value.tolist(), sv.taint):
        marks = {b for a, b in taint if a is None}
        if not marks:
            out.append(int(v))
        elif len(marks) == 1 and next(iter(marks)).startswith("="):
            out.append(next(iter(marks))[1:])
        else:
            out.append(None)  # unknown
        read.append(any(a is not None for a, _ in taint))
    return out, read


def symbolic_reshape(view: NodeView, m: ChannelMap, shape) -> Effect:
    """Reshape to a computed target with symbolic dims (a dynamic batch, sequence, cache length):
    leading and trailing dims the target copies from the input (0, the same number, or exactly the
    same symbolic dim) stay apart; the static middle, the channel axis in it, is reshaped as a
    static one would be. The channel entry must adapt by itself: -1, or a 0 copying it (a number
    read from the channels' own shape would too, but nothing proves yet which axis it was read
    from: blocked, as ``trees`` blocks such reads)."""
    from .reindex import _reshape_split, _single_axis  # local: reindex imports this module's users

    got = _entries(view, 1)
    if got is None or shape is None or view.node.attr("allowzero", 0) or any(d is None for d in shape):
        return blocked("Reshape to a computed shape that does not fold to a constant")
    raw, read = got
    target = [shape[i] if t == 0 and i < len(shape) else t for i, t in enumerate(raw)]
    k = 0
    while k < min(len(shape), len(target), m.axis) and target[k] == shape[k]:
        k += 1
    j = 0
    while len(shape) - 1 - j > m.axis and len(target) - 1 - j >= k and target[-1 - j] == shape[-1 - j]:
        j += 1
    mid_in, mid_out = list(shape[k:len(shape) - j]), list(target[k:len(target) - j])
    if k == 0 or not all(isinstance(d, int) and not isinstance(d, bool) for d in mid_in + mid_out) \
            or mid_out.count(-1) > 1 or any(t is None for t in raw):
        return blocked("Reshape with an unknown per-sample shape or one that moves the batch axis")
    total = int(np.prod(mid_in, dtype=np.int64))
    if -1 in mid_out:
        known = int(np.prod([d for d in mid_out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            return blocked("Reshape to a computed shape that does not fit its input")
        mid_out[mid_out.index(-1)] = total // known
    if int(np.prod(mid_out, dtype=np.int64)) != total:
        return blocked("Reshape to a computed shape that does not fit its input")
    full = np.broadcast_to(m.ids.reshape([len(m) if i == m.axis - k else 1 for i in range(len(mid_in))]),
                           mid_in).reshape(mid_out)
    found = _single_axis(full)
    if found is not None:
        effect = Effect(outputs={0: ChannelMap(found[0] + k, len(target), found[1])})
    else:
        from .channels import feeds_batched_matmul

        heads = feeds_batched_matmul(view.graph, view.graph.outputs_of(view.node)[0], view.shapes)
        effect = _reshape_split(full, len(target), heads, k)
        if effect.block:
            return effect
    axis = effect.outputs[0].axis
    if not (raw[axis] == -1 or (raw[axis] == 0 and axis == m.axis)):
        return blocked("Reshape to a computed shape whose channel entry cannot be rewritten")
    return effect


def expand_entry_adapts(view: NodeView, m: ChannelMap) -> Effect | None:
    """Expand to a computed target: its channel entry must be 1 (a number read from the channels'
    own shape would adapt too, but is blocked like every such read, see ``trees``); the other
    entries broadcast other axes."""
    got = _entries(view, 1)
    if got is None:
        return None
    target, read = got
    out_rank = max(m.rank, len(target))
    axis = m.axis + out_rank - m.rank
    t_axis = axis - (out_rank - len(target))
    if t_axis >= 0 and target[t_axis] != 1:
        return blocked("Expand broadcasts along the channel axis")
    return Effect(outputs={0: ChannelMap(axis, out_rank, m.ids)})
