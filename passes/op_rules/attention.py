"""Decoder attention: rotary embeddings, grouped-query attention (GQA) and the KV cache.

- **Rotary** (``q·cos + rotate_half(q)·sin``; rotate_half as Slice/Neg/Concat halves or
  Split/Neg/Concat along the head dim): the head split's lookahead (``channels.feeds_batched_matmul``)
  sees through these ops (``channels.toward_heads``), so the split keeps its ids on the head axis and a
  class is a whole head. Then Slice/Split/Concat work along the head dim (not the channel axis),
  and cos/sin broadcast over the head axis (their dim there is 1): the existing rules carry the
  heads through, and a head's D channels (its rotary pairs among them) stay one class.
- **GQA** (repeat_kv: ``k[:, :, None].expand(B, KV, n_rep, T, D).reshape(B, H, T, D)``):
  ``Expand`` broadcasts along non-channel axes only (``streams._expand_like``); the merging Reshape then
  repeats each KV head's id n_rep times on the head axis, and Q·Kᵀ / A·V couple every query head
  with the KV head it reads: a class is one KV group (its KV head and its n_rep query heads),
  removed whole. The Expand's target (computed, folded, frozen) names the KV head count: it is
  rewritten to the kept count (``streams._slice_expand``). With ``trees{gqa=queries}`` every KV
  head stays and query heads go evenly from each group instead (``gqa``).
- **KV cache**: see ``trees`` (``adopt_inputs``): a graph input joined elementwise with tracked
  channels (``Concat(past_key, k)`` along the sequence) is adopted, it takes the same ids, and the
  graph output carrying exactly those ids (``present_key``) may shrink with it.
"""

from __future__ import annotations

from ir import Graph

from .views import DEFAULT_DOMAINS, NodeView, _axis


# ----------------------------------------------------------------------------- the KV cache
def adoptable_input(graph: Graph, value) -> list | None:
    """The chain ``[graph input, .., value]`` when ``value`` is a real graph input (a KV cache's
    ``past_*``), or one passed on only by single-input Concat / Identity links, and every value of
    the chain is read by nothing but the next link (Shape reads aside: their numbers are checked
    like any other Shape read). None otherwise."""
    chain = [value]
    while True:
        v = chain[0]
        if graph.is_graph_input(v):
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
