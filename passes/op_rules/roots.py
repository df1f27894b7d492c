"""Root rules: the weight axis that indexes a pruned node's output channels (``RootSpec``), or None
when this instance is not prunable."""

from __future__ import annotations

from .channels import pointwise_along
from .views import NodeView, RootSpec


# ----------------------------------------------------------------------------- roots
def _conv_root(view: NodeView) -> RootSpec | None:
    w = view.const(1)
    if w is None or w.ndim < 3 or view.node.attr("group", 1) != 1:
        return None
    m = view.maps[0] if view.maps else None
    if m is not None and m.axis != 1 and pointwise_along(view, m.axis):
        return None   # channels pass along a spatial axis: the output carries them, not filters
    rank = view.rank(0) or w.ndim
    if view.node.op_type == "ConvTranspose":
        return RootSpec(1, 1, 1, rank, int(w.shape[1]))
    return RootSpec(1, 0, 1, rank, int(w.shape[0]))


def _gemm_root(view: NodeView) -> RootSpec | None:
    w = view.const(1)
    if w is None or w.ndim != 2:
        return None
    if view.input_name(2) is not None and view.const(2) is None:
        return None
    trans_b = view.node.attr("transB", 0)
    return RootSpec(1, 0 if trans_b else 1, 1, 2, int(w.shape[0] if trans_b else w.shape[1]))


def _matmul_root(view: NodeView) -> RootSpec | None:
    w = view.const(1)
    rank = view.rank(0)
    if w is None or w.ndim != 2 or rank is None or rank < 2 or view.const(0) is not None:
        return None
    m = view.maps[0] if view.maps else None
    if m is not None and m.axis < m.rank - 1:
        return None   # channels pass along its rows (``channels._matmul``): the output carries them
    return RootSpec(1, 1, rank - 1, rank, int(w.shape[1]))


def _embedding_root(view: NodeView) -> RootSpec | None:
    """An embedding lookup: ``Gather(table [V, C], ids)`` along axis 0 with computed ids (token
    ids, position ids). Its output ``[..., C]`` carries the table's columns, the hidden channels of
    the residual stream a decoder starts from; the table's columns are its filters. A Gather of
    anything else (a tracked tensor, constant ids, another axis) moves data (``reindex._gather``)."""
    table = view.const(0)
    if table is None or table.ndim != 2 or view.node.attr("axis", 0) not in (0, -2):
        return None
    if view.maps[0] is not None or view.const(1) is not None:
        return None
    rank = view.rank(1)
    if rank is None:
        return None
    return RootSpec(0, 1, rank, rank + 1, int(table.shape[1]))
