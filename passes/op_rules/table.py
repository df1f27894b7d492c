"""The op table: what each ONNX op does to the channel axis, one line per op.

``CHANNEL_RULES`` (Table II role + channel rule), ``ROOT_RULES`` (which ops are pruned and along
which weight axis), ``SLICE_RULES`` (how constants shrink), ``WEIGHT_BEARING`` (ops that need a
slice rule; a test checks the tables agree). **An op not in CHANNEL_RULES is a barrier.**
"""

from __future__ import annotations

from typing import Callable

from .channels import (_batchnorm, _broadcast, _channel_pool, _conv, _einsum, _gemm, _instancenorm,
                       _lrn, _matmul, _prelu, _reduce, _softmax, _unary, _where)
from .reindex import (_concat, _constant_operands_only, _flatten, _gather, _gathernd, _pad, _resize, _shape, _slice,
                      _split, _squeeze, _transpose)
from .quantized import quantize_rule, slice_quantize
from .reshapes import _reshape
from .scatter import _scatter_elements, _slice_scatter_elements
from .norms import (STAT_REDUCES, _groupnorm, _instancenorm_one_group, _layernorm, _reduce as _reduce_stats,
                    _slice_groupnorm, _slice_instancenorm, _slice_layernorm, _slice_reduce)
from .control import _if
from .gqa import slice_reshape
from .recurrent import _recurrent, _recurrent_root, _slice_recurrent
from .roots import _conv_root, _embedding_root, _gemm_root, _matmul_root
from .streams import _concat as _concat_tokens, _expand_like, _slice_concat, _slice_expand
from .slices import (Keeps, Rewriter, _slice_broadcast_constants, _slice_conv, _slice_embedding, _slice_gemm, _slice_matmul,
                     _slice_pad, _slice_per_channel_params, _slice_resize, _slice_slice, _slice_split)
from .views import DEFAULT_DOMAINS, ChannelRule, NodeView, RootSpec


UNARY = ["Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Cast", "Identity", "Dropout",
         "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
         "ThresholdedRelu", "Neg", "Abs", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round",
         "Sign", "Sin", "Cos", "Not", "IsNaN", "IsInf", "Mish", "Gelu", "Shrink", "CastLike"]
BROADCAST = ["Add", "Sub", "Mul", "Div", "Pow", "Sum", "Max", "Min", "Mean", "Equal", "Less",
             "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod"]

CHANNEL_RULES: dict[str, ChannelRule] = {
    **{op: ChannelRule("next-no-process", _unary) for op in UNARY},
    **{op: ChannelRule("next-process", _broadcast) for op in BROADCAST},
    "Clip": ChannelRule("next-no-process", _broadcast),  # opset 11+: min/max are scalar inputs
    "Where": ChannelRule("next-process", _where),
    # QDQ activations: per tensor each element on its own; per axis only along the channels
    "QuantizeLinear": ChannelRule("next-process", quantize_rule),
    "DequantizeLinear": ChannelRule("next-process", quantize_rule),
    "PRelu": ChannelRule("next-process", _prelu),
    "Conv": ChannelRule("stop-process", _conv),
    "ConvTranspose": ChannelRule("stop-process", _conv),
    "Gemm": ChannelRule("stop-process", _gemm),
    "MatMul": ChannelRule("stop-process", _matmul),
    "Einsum": ChannelRule("next-process", _einsum),
    "BatchNormalization": ChannelRule("next-process", _batchnorm),
    "InstanceNormalization": ChannelRule("next-process", lambda view: _instancenorm_one_group(view, _instancenorm)),
    "LayerNormalization": ChannelRule("next-no-process", _layernorm, mixes="axes from `axis` on"),
    "GroupNormalization": ChannelRule("next-process", _groupnorm),
    "MaxPool": ChannelRule("next-no-process", _channel_pool),
    "AveragePool": ChannelRule("next-no-process", _channel_pool),
    "LpPool": ChannelRule("next-no-process", _channel_pool),
    "GlobalAveragePool": ChannelRule("next-no-process", _channel_pool),
    "GlobalMaxPool": ChannelRule("next-no-process", _channel_pool),
    "GlobalLpPool": ChannelRule("next-no-process", _channel_pool),
    "LRN": ChannelRule("next-no-process", _lrn, mixes="the channel axis"),
    "Softmax": ChannelRule("next-no-process", _softmax, mixes="its `axis`"),
    "LogSoftmax": ChannelRule("next-no-process", _softmax, mixes="its `axis`"),
    "Hardmax": ChannelRule("next-no-process", _softmax, mixes="its `axis`"),
    **{op: ChannelRule("next-no-process", (lambda view: _reduce_stats(view, _reduce)) if op in STAT_REDUCES
                       else _reduce, mixes="its reduced axes")
       for op in ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1",
                  "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]},
    "Transpose": ChannelRule("next-no-process", _transpose),
    "Flatten": ChannelRule("next-no-process", _flatten),
    "Reshape": ChannelRule("next-process", _reshape),
    "Squeeze": ChannelRule("next-no-process", _squeeze),
    "Unsqueeze": ChannelRule("next-no-process", _squeeze),
    "Concat": ChannelRule("next-process", lambda view: _concat_tokens(view, _concat)),
    "Expand": ChannelRule("next-no-process", _expand_like),
    "Tile": ChannelRule("next-no-process", _expand_like),
    "Pad": ChannelRule("next-process", _pad),  # zeros added on the channel axis: their count shrinks
    "Resize": ChannelRule("next-process", _resize),
    "Upsample": ChannelRule("next-process", _resize),
    "Gather": ChannelRule("next-process", _gather),
    "GatherND": ChannelRule("next-no-process", _gathernd),  # rows copied whole: channels after the indexed axes
    "ScatterElements": ChannelRule("next-process", _scatter_elements),  # into zeros, off the channel axis
    "Slice": ChannelRule("next-process", _slice),
    "Split": ChannelRule("next-process", _split),
    "Shape": ChannelRule("next-no-process", _shape),
    "Constant": ChannelRule("next-no-process", _constant_operands_only),
    **{op: ChannelRule("stop-process", _recurrent) for op in ("LSTM", "GRU", "RNN")},
    "If": ChannelRule("next-process", _if),  # branches lowered into the graph (ir/bodies.py)
}


ROOT_RULES: dict[str, Callable[[NodeView], RootSpec | None]] = {
    "Conv": _conv_root,
    "ConvTranspose": _conv_root,
    "Gemm": _gemm_root,
    "MatMul": _matmul_root,
    "Gather": _embedding_root,   # only a constant table looked up by computed ids
    **{op: _recurrent_root for op in ("LSTM", "GRU", "RNN")},
}


SLICE_RULES: dict[str, Callable[[Rewriter, Keeps, Keeps], None]] = {
    "Conv": _slice_conv,
    "ConvTranspose": _slice_conv,
    "Gemm": _slice_gemm,
    "MatMul": _slice_matmul,
    "Gather": _slice_embedding,
    "BatchNormalization": _slice_per_channel_params(1, 4),
    "InstanceNormalization": _slice_instancenorm,
    **{op: _slice_broadcast_constants for op in BROADCAST + ["Clip", "Where", "PRelu"]},
    "Reshape": slice_reshape,  # and repeat_kv's Expand before it (gqa=queries)
    "Slice": _slice_slice,
    "Split": _slice_split,
    "Pad": _slice_pad,
    "Resize": _slice_resize,
    "Upsample": _slice_resize,
    **{op: _slice_recurrent for op in ("LSTM", "GRU", "RNN")},
    "LayerNormalization": _slice_layernorm,
    "Concat": _slice_concat,
    "Expand": _slice_expand,
    "ReduceMean": _slice_reduce,
    "GroupNormalization": _slice_groupnorm,
    "ScatterElements": _slice_scatter_elements,
    "QuantizeLinear": slice_quantize,
    "DequantizeLinear": slice_quantize,
}

# Ops that are roots only in one form (an embedding table's Gather), else their channel rule's role.
CONDITIONAL_ROOTS = ("Gather",)

# Ops whose channel-carrying behaviour involves constants that must shrink: each needs a
# SLICE_RULES entry (a test checks the two tables agree).
WEIGHT_BEARING = ("Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
                  "InstanceNormalization", "PRelu", "LSTM", "GRU", "RNN", "GroupNormalization")


def role_of(op_type: str, domain: str = "") -> str:
    """The Table II attribute of an op type, ``barrier`` when it is not in the table."""
    if domain not in DEFAULT_DOMAINS or op_type not in CHANNEL_RULES:
        return "barrier"
    if op_type in ROOT_RULES and op_type not in CONDITIONAL_ROOTS:
        return "pruned"
    return CHANNEL_RULES[op_type].role
