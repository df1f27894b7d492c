"""Control flow: the channel rule of an If whose branches were lowered into the graph.

``ir/bodies.py`` lowers such an If to a node reading ``[cond] + then outputs + else outputs``;
an If left opaque reads ``cond`` alone (its bodies' outer reads are implicit: trees blocks them).
Output ``i`` is the then branch's output ``i`` or the else branch's: both must carry the same
channel layout (axis, rank, length) and their ids are coupled, so a channel goes from both
branches or from neither; one branch tracked and the other not is a barrier (their shapes
would differ once it is cut).

Example: ``If(c, a, b)`` with ``a`` carrying ids 0..7 on axis 1 and ``b`` ids 8..15: the output
carries 0..7 on axis 1, and 0~8, 1~9, … are coupled (one group).
"""

from __future__ import annotations

from .views import Effect, NodeView, blocked


def _if(view: NodeView) -> Effect:
    maps = view.maps
    if maps[0] is not None:
        return blocked("If condition carries channels")
    k = (len(maps) - 1) // 2
    if k == 0 or len(maps) != 1 + 2 * k:
        return blocked("If whose branches were not lowered")
    outputs, couplings = {}, []
    for i in range(k):
        a, b = maps[1 + i], maps[1 + k + i]
        if a is None and b is None:
            continue
        if a is None or b is None or a.axis != b.axis or a.rank != b.rank or len(a) != len(b) \
                or bool(((a.ids >= 0) != (b.ids >= 0)).any()):
            return blocked(f"If branches return different channels as output {i}")
        both = a.ids >= 0
        outputs[i] = a
        couplings.append((a.ids[both], b.ids[both]))
    return Effect(outputs=outputs, couplings=couplings)
