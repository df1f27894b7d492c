"""The node attribute library: what each ONNX op does to the channel axis, as data.

Four tables, keyed by op type (``table.py``: the op table on one screen) (default ONNX domain only; any other domain is a barrier):

- ``CHANNEL_RULES``: op -> ``ChannelRule``: its paper Table II attribute (``role``), and how channel
  ids on its inputs become ids on its outputs (``propagate``), or why it blocks them.
- ``ROOT_RULES``: op -> function giving the ``RootSpec`` of a pruned node (the weight axis that
  indexes its output channels), or None when this instance is not prunable.
- ``SLICE_RULES``: op -> function that shrinks the node's constants and attributes once channels
  are removed from its inputs and outputs.
- ``SHAPE_RULES``: op -> numpy evaluation of integer shape values (Shape→Gather→Concat, a Slice
  end as Shape[1] // 2), so computed Reshape targets / Slice bounds / Split sizes / Resize sizes
  read as numbers, with the Shape dims each element counted (``fold_shapes``; ``SHAPE_OPERANDS``
  are the operands slice may rewrite).

**An op not in CHANNEL_RULES is a barrier**: channels that reach it are never removed. The effects
are the op's real semantics on the channel axis: elementwise ops preserve it (and couple two
tracked inputs), weight ops consume it, Concat / Flatten / Reshape / Transpose / Split / Slice
re-index it, and Softmax / reductions over that axis and LRN mix it (a barrier, but only over that
axis). A grouped Conv (ResNeXt, RegNet, depthwise) passes channels through by whole groups; a
Reshape that spreads channels over several axes (ShuffleNet's [N,g,C/g,H,W]) couples them so each
class varies along one axis only; ``Shape`` ends channels (its numbers are checked by trees).

Example: ``CHANNEL_RULES["Relu"].role == "next-no-process"``; a Conv's ``propagate`` with channel

The package keeps one concern per module: ``views`` (what a rule sees and answers), ``channels``
(rules of ops that keep the channel axis in place), ``reindex`` and ``reshapes`` (rules of ops that move it),
``roots``, ``slices`` (the rewriter and slice rules), ``shape_values`` (the integer evaluator),
``derived`` (operands whose channels come only from constants: tf2onnx's LayerNorm scale),
and ``table`` (the four tables).
"""

from .channels import conv_group_widths, feeds_batched_matmul
from .folding import constant_value
from .shape_values import SHAPE_OPERANDS, SHAPE_RULES, FoldedShapes, ShapeValue, fold_shapes
from .slices import Keeps, Rewriter
from .table import BROADCAST, CHANNEL_RULES, CONDITIONAL_ROOTS, ROOT_RULES, SLICE_RULES, UNARY, WEIGHT_BEARING, role_of
from .views import DEFAULT_DOMAINS, ChannelRule, Effect, NodeView, RootSpec, blocked

__all__ = ["BROADCAST", "CHANNEL_RULES", "CONDITIONAL_ROOTS", "DEFAULT_DOMAINS", "ROOT_RULES", "SHAPE_OPERANDS", "SHAPE_RULES",
           "SLICE_RULES", "UNARY", "WEIGHT_BEARING", "ChannelRule", "Effect", "FoldedShapes", "Keeps",
           "NodeView", "Rewriter", "RootSpec", "ShapeValue", "blocked", "conv_group_widths",
           "constant_value", "feeds_batched_matmul", "fold_shapes", "role_of"]
