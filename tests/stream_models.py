"""Small seeded models of residual streams read by normalizations (``models.Builder``).

- ``vit_stream``: a patch-embedding Conv, a class token (Expand of a constant) concatenated on the
  token axis, a position embedding added, a pre-norm block (LayerNorm → MLP → residual Add), a
  post-norm block (the LayerNorm's output is the stream), a final LayerNorm, the class token's
  row picked by Gather, a Gemm head.
- ``convnext_stream``: ConvNeXt's channels-last block: depthwise Conv → Transpose → LayerNorm
  (last axis) → MatMul → Relu → MatMul → layer-scale Mul → Transpose → residual Add.
"""

from __future__ import annotations

import numpy as np
import onnx

from models import Builder, _ints


def _layernorm(b: Builder, x: str, c: int, axis: int = -1) -> str:
    scale = b.const((b.rng.random(c) + 0.5).astype(np.float32), "ln_scale")
    bias = b.const(b.rng.standard_normal(c).astype(np.float32) * 0.1, "ln_bias")
    return b.op("LayerNormalization", [x, scale, bias], axis=axis, epsilon=1e-5)


def _linear(b: Builder, x: str, cin: int, cout: int) -> str:
    return b.op("Add", [b.op("MatMul", [x, b.weight(cin, cout)]), b.weight(cout, prefix="b")])


def vit_stream(opset: int = 17) -> onnx.ModelProto:
    b = Builder(21, opset=opset, name="vit_stream")
    c, tokens = 8, 4
    x = b.input("x", [1, 3, 8, 8])
    patches = b.op("Conv", [x, b.weight(c, 3, 4, 4), b.weight(c, prefix="b")], kernel_shape=[4, 4], strides=[4, 4])
    seq = b.op("Transpose", [b.op("Reshape", [patches, _ints(b, [1, c, tokens], "shape")])], perm=[0, 2, 1])
    cls = b.op("Expand", [b.weight(1, 1, c, prefix="cls"), _ints(b, [1, 1, 1], "shape")])
    s = b.op("Add", [b.op("Concat", [cls, seq], axis=1), b.weight(1, tokens + 1, c, prefix="pos")])
    # pre-norm block: s + MLP(LN(s))
    h = b.relu(_linear(b, _layernorm(b, s, c), c, 16))
    s = b.op("Add", [s, _linear(b, h, 16, c)])
    # post-norm block: LN(s + MLP(s))
    h = b.relu(_linear(b, s, c, 12))
    s = _layernorm(b, b.op("Add", [s, _linear(b, h, 12, c)]), c)
    cls_out = b.op("Gather", [_layernorm(b, s, c), b.const(np.array(0, np.int64), "i")], axis=1)
    return b.build([b.gemm(cls_out, c, 5)])


def convnext_stream() -> onnx.ModelProto:
    b = Builder(22, name="convnext_stream")
    c = 8
    x = b.input("x", [1, 3, 8, 8])
    stem = b.op("Conv", [x, b.weight(c, 3, 2, 2), b.weight(c, prefix="b")], kernel_shape=[2, 2], strides=[2, 2])
    s = b.op("Transpose", [_layernorm(b, b.op("Transpose", [stem], perm=[0, 2, 3, 1]), c)], perm=[0, 3, 1, 2])
    for _ in range(2):
        dw = b.conv(s, c, c, k=3, group=c)
        t = _layernorm(b, b.op("Transpose", [dw], perm=[0, 2, 3, 1]), c)
        h = _linear(b, b.relu(_linear(b, t, c, 16)), 16, c)
        gamma = b.const((b.rng.random(c) + 0.5).astype(np.float32), "layer_scale")
        s = b.op("Add", [s, b.op("Transpose", [b.op("Mul", [h, gamma])], perm=[0, 3, 1, 2])])
    pooled = b.op("ReduceMean", [s], axes=[2, 3], keepdims=0)
    return b.build([b.gemm(_layernorm(b, pooled, c), c, 5)])


def _reduce_mean(b: Builder, x: str) -> str:
    if b.opset >= 18:
        return b.op("ReduceMean", [x, _ints(b, [-1], "axes")], keepdims=1)
    return b.op("ReduceMean", [x], axes=[-1], keepdims=1)


def _decomposed_norm(b: Builder, x: str, c: int, rms: bool) -> str:
    """LayerNorm as tf2onnx / jax2onnx write it (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt,
    Div, Mul, Add), or RMSNorm as torch exports Llama's (Pow, ReduceMean, Add, Sqrt,
    Reciprocal, Mul, Mul)."""
    eps = b.const(np.array(1e-5, np.float32), "eps")
    two = b.const(np.array(2.0, np.float32), "two")
    scale = b.const((b.rng.random(c) + 0.5).astype(np.float32), "norm_scale")
    if rms:
        var = _reduce_mean(b, b.op("Pow", [x, two]))
        inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, eps])])])
        return b.op("Mul", [scale, b.op("Mul", [x, inv])])
    d = b.op("Sub", [x, _reduce_mean(b, x)])
    var = _reduce_mean(b, b.op("Pow", [d, two]))
    n = b.op("Div", [d, b.op("Sqrt", [b.op("Add", [var, eps])])])
    return b.op("Add", [b.op("Mul", [n, scale]), b.const(b.rng.standard_normal(c).astype(np.float32) * 0.1, "norm_bias")])


def decoder_stream(rms: bool = False, opset: int = 17) -> onnx.ModelProto:
    """A token stream: an input projection, two pre-norm MLP blocks, a final norm, a head; the
    norms decomposed (``_decomposed_norm``)."""
    b = Builder(23 + rms, opset=opset, name="rms_stream" if rms else "decomposed_stream")
    c = 8
    x = b.input("x", [1, 5, 6])
    s = b.op("MatMul", [x, b.weight(6, c)])
    for width in (16, 12):
        h = b.relu(b.op("MatMul", [_decomposed_norm(b, s, c, rms), b.weight(c, width)]))
        s = b.op("Add", [s, b.op("MatMul", [h, b.weight(width, c)])])
    return b.build([b.op("MatMul", [_decomposed_norm(b, s, c, rms), b.weight(c, 5)])])


def groupnorm_block(opset: int = 18) -> onnx.ModelProto:
    """A UNet-style residual block with GroupNormalization (opset 18: per-group scale and bias;
    opset 21: per-channel), SiLU, and a residual Add."""
    b = Builder(25, opset=opset, name=f"groupnorm_block_op{opset}")
    c, groups = 8, 4
    x = b.input("x", [1, 3, 8, 8])

    def gn_silu(h: str, width: int = c) -> str:
        n = groups if opset < 21 else width
        scale = b.const((b.rng.random(n) + 0.5).astype(np.float32), "gn_scale")
        bias = b.const(b.rng.standard_normal(n).astype(np.float32) * 0.1, "gn_bias")
        y = b.op("GroupNormalization", [h, scale, bias], num_groups=groups, epsilon=1e-5)
        return b.op("Mul", [y, b.op("Sigmoid", [y])])

    s = b.conv(x, 3, c)
    h = b.conv(gn_silu(b.conv(gn_silu(s), c, 12), 12), 12, c)
    out = b.conv(gn_silu(b.op("Add", [s, h])), c, 5, k=1)
    return b.build([out], shapes={out: [1, 5, 8, 8]})  # onnx 1.17 infers no GroupNormalization shapes


def computed_weights() -> onnx.ModelProto:
    """Convolutions whose weights are computed from initializers: weight standardization
    (ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div over each filter) and a per-filter gain
    (weight · gain), then a plain head."""
    b = Builder(26, name="computed_weights")
    x = b.input("x", [1, 3, 8, 8])
    w = b.weight(8, 3, 3, 3)
    mean = b.op("ReduceMean", [w], axes=[1, 2, 3], keepdims=1)
    d = b.op("Sub", [w, mean])
    var = b.op("ReduceMean", [b.op("Mul", [d, d])], axes=[1, 2, 3], keepdims=1)
    std_w = b.op("Div", [d, b.op("Sqrt", [b.op("Add", [var, b.const(np.array(1e-5, np.float32), "eps")])])])
    h = b.relu(b.op("Conv", [x, std_w, b.weight(8, prefix="b")], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    gain_w = b.op("Mul", [b.weight(6, 8, 1, 1), b.weight(6, 1, 1, 1, prefix="gain")])
    h = b.relu(b.op("Conv", [h, gain_w], kernel_shape=[1, 1]))
    return b.build([b.conv(h, 6, 4, k=1)])


def small_blockers(opset: int = 18) -> onnx.ModelProto:
    """Ops that pass channels along other axes: Expand of a tracked tensor (a broadcast row),
    Tile (repeats spatially), Pad with zero channel pads (axes given, opset 18), ReduceSum and
    ReduceMin over spatial axes (axes as an input)."""
    b = Builder(27, opset=opset, name="small_blockers")
    x = b.input("x", [1, 3, 4, 4])
    c = b.relu(b.conv(x, 3, 8))
    row = b.op("ReduceSum", [c, _ints(b, [2], "axes")], keepdims=1)               # [1, 8, 1, 4]
    wide = b.op("Expand", [row, _ints(b, [1, 1, 4, 1], "shape")])                   # [1, 8, 4, 4]
    tiled = b.op("Tile", [b.op("Add", [c, wide]), _ints(b, [1, 1, 2, 2], "repeats")])  # [1, 8, 8, 8]
    padded = b.op("Pad", [tiled, _ints(b, [1, 1, 1, 1], "pads"), b.const(np.array(0.0, np.float32), "value"),
                          _ints(b, [2, 3], "axes")])                                 # [1, 8, 10, 10]
    low = b.op("ReduceMin", [padded, _ints(b, [3], "axes")], keepdims=1)           # [1, 8, 10, 1]
    d = b.relu(b.conv(b.op("Sub", [padded, low]), 8, 6))
    return b.build([b.conv(d, 6, 4, k=1)])


def computed_operands() -> onnx.ModelProto:
    """BEiT's attention: a fused qkv MatMul whose bias is computed from initializers,
    ``Concat(q_bias, ConstantOfShape(Shape(v_bias)), v_bias)``, and a relative-position bias
    gathered from a [R, H] table by a constant index (Gather → Reshape → Transpose → Unsqueeze)
    added to the scores; then softmax · V, the output projection, an MLP, a head."""
    b = Builder(28, name="computed_operands")
    c, heads, seq = 8, 4, 10
    d = c // heads
    x = b.input("x", [1, seq, c])
    v_bias = b.weight(c, prefix="v_bias")
    zeros = b.op("ConstantOfShape", [b.op("Shape", [v_bias])], value=onnx.helper.make_tensor("z", 1, [1], [0.0]))
    qkv_bias = b.op("Concat", [b.weight(c, prefix="q_bias"), zeros, v_bias], axis=0)
    qkv = b.op("Add", [b.op("MatMul", [x, b.weight(c, 3 * c)]), qkv_bias])
    split = b.op("Transpose", [b.op("Reshape", [qkv, _ints(b, [1, seq, 3, heads, d], "shape")])], perm=[2, 0, 3, 1, 4])
    q, k, v = (b.op("Gather", [split, b.const(np.array(i, np.int64), "i")], axis=0) for i in range(3))
    scores = b.op("Div", [b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])]),
                          b.const(np.array(np.sqrt(d), np.float32), "scale")])
    table = b.weight(2 * seq - 1, heads, prefix="rel_table")
    index = np.add.outer(np.arange(seq), seq - 1 - np.arange(seq)).reshape(-1).astype(np.int64)
    idx = b.op("Constant", [], value=onnx.numpy_helper.from_array(index, "idx"))
    rel = b.op("Reshape", [b.op("Gather", [table, idx], axis=0), _ints(b, [seq, seq, heads], "shape")])
    rel = b.op("Unsqueeze", [b.op("Transpose", [rel], perm=[2, 0, 1]), _ints(b, [0], "axes")])
    probs = b.op("Softmax", [b.op("Add", [scores, rel])], axis=-1)
    ctx = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    y = _linear(b, b.op("Reshape", [ctx, _ints(b, [1, seq, c], "shape")]), c, c)
    h = _linear(b, b.relu(_linear(b, b.relu(y), c, 16)), 16, 6)
    return b.build([h])


def coat_blockers() -> onnx.ModelProto:
    """CoaT's cross-scale parts: a Resize whose float scales are a Concat of Constants
    (F.interpolate(scale_factor=2)), and the aggregate ``Conv1d(2, 1, 1)`` over
    ``stack([x_a, x_b], 1)`` [1, 2, C] whose spatial axis carries the channels, then Squeeze and
    the head."""
    b = Builder(29, name="coat_blockers")
    x = b.input("x", [1, 3, 4, 4])
    a = b.relu(b.conv(x, 3, 8))
    ones = b.op("Constant", [], value=onnx.numpy_helper.from_array(np.ones(2, np.float32), "ones"))
    twos = b.op("Constant", [], value=onnx.numpy_helper.from_array(np.full(2, 2.0, np.float32), "twos"))
    up = b.op("Resize", [a, "", b.op("Concat", [ones, twos], axis=0)], mode="linear")      # [1, 8, 8, 8]
    c = b.relu(b.conv(up, 8, 8))
    pooled = [b.op("Unsqueeze", [b.op("Flatten", [b.op("GlobalAveragePool", [t])]), _ints(b, [1], "axes")])
              for t in (a, c)]                                                              # [1, 1, 8] each
    agg = b.op("Conv", [b.op("Concat", pooled, axis=1), b.weight(1, 2, 1), b.weight(1, prefix="b")],
               kernel_shape=[1])                                                            # [1, 1, 8]
    return b.build([b.gemm(b.op("Squeeze", [agg, _ints(b, [1], "axes")]), 8, 5)])


def poolformer_stream() -> onnx.ModelProto:
    """PoolFormer's blocks: torch's GroupNorm(1, C) written as Reshape [N, 1, -1] →
    InstanceNormalization (scale and bias of its one group) → Reshape to Shape(x) → per-channel
    Mul/Add; the pooling token mixer ``pool(y) - y``, a layer scale, the residual Add; a 1×1 MLP
    block; then a pooled head."""
    b = Builder(30, name="poolformer_stream")
    c = 8
    x = b.input("x", [1, 3, 8, 8])

    def group_norm1(t: str) -> str:
        flat = b.op("Reshape", [t, _ints(b, [1, 1, -1], "shape")])
        n = b.op("InstanceNormalization", [flat, b.const(np.array([1.1], np.float32), "in_scale"),
                                           b.const(np.array([0.1], np.float32), "in_bias")], epsilon=1e-5)
        n = b.op("Reshape", [n, b.op("Shape", [t])])
        n = b.op("Mul", [n, b.const((b.rng.random((c, 1, 1)) + 0.5).astype(np.float32), "gn_weight")])
        return b.op("Add", [n, b.const(b.rng.standard_normal((c, 1, 1)).astype(np.float32) * 0.1, "gn_bias")])

    def layer_scale(t: str) -> str:
        return b.op("Mul", [t, b.const((b.rng.random((c, 1, 1)) + 0.5).astype(np.float32), "layer_scale")])

    s = b.conv(x, 3, c)
    y = group_norm1(s)
    mixed = b.op("Sub", [b.op("AveragePool", [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
                               count_include_pad=0), y])
    s = b.op("Add", [s, layer_scale(mixed)])
    s = b.op("Add", [s, layer_scale(b.conv(b.relu(b.conv(group_norm1(s), c, 16, k=1)), 16, c, k=1))])
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [group_norm1(s)])])
    return b.build([b.gemm(pooled, c, 5)])


def cait_stream() -> onnx.ModelProto:
    """CaiT's class token: ``cls_token.expand(x.shape[0], -1, -1)`` (its target computed from a
    Shape) is read twice: concatenated before the patch tokens for class attention, and added
    to that attention's output (the class stream's residual); a second class-attention block
    concatenates the class stream itself. Then a final LayerNorm and a head."""
    b = Builder(31, name="cait_stream")
    c, tokens = 8, 4
    x = b.input("x", [1, 3, 8, 8])
    patches = b.op("Conv", [x, b.weight(c, 3, 4, 4), b.weight(c, prefix="b")], kernel_shape=[4, 4], strides=[4, 4])
    seq = b.op("Transpose", [b.op("Reshape", [patches, _ints(b, [1, c, tokens], "shape")])], perm=[0, 2, 1])
    seq = b.op("Add", [seq, _linear(b, b.relu(_linear(b, _layernorm(b, seq, c), c, 16)), 16, c)])
    batch = b.op("Gather", [b.op("Shape", [seq]), b.const(np.array([0], np.int64), "i")], axis=0)
    cls = b.op("Expand", [b.weight(1, 1, c, prefix="cls"), b.op("Concat", [batch, _ints(b, [1, 1], "ones")], axis=0)])
    patches = _layernorm(b, seq, c)
    for _ in range(2):  # two class-attention blocks: the second couples the class stream to the patches'
        u = b.op("Concat", [cls, patches], axis=1)                                  # [1, 5, C]
        h = _linear(b, b.relu(_linear(b, _layernorm(b, u, c), c, 12)), 12, c)
        first = b.op("Slice", [h, _ints(b, [0], "starts"), _ints(b, [1], "ends"), _ints(b, [1], "axes")])
        cls = b.op("Add", [cls, first])                                             # [1, 1, C]
    out = b.op("Reshape", [_layernorm(b, cls, c), _ints(b, [1, c], "shape")])
    return b.build([b.gemm(out, c, 5)])


def focal_gates() -> onnx.ModelProto:
    """FocalNet's focal modulation: one 1×1 Conv makes q, ctx and one gate per level (Split
    [C, C, 2]); each level's context is multiplied by its one-channel gate ``gates[:, l:l+1]``
    (broadcast over the channels), summed, turned into a modulator by another 1×1 Conv, which
    multiplies q; then a projection and a head."""
    b = Builder(32, name="focal_gates")
    c = 8
    x = b.input("x", [1, 3, 6, 6])
    f = b.conv(b.relu(b.conv(x, 3, c)), c, 2 * c + 2, k=1)
    q, ctx, gates = b.op("Split", [f, _ints(b, [c, c, 2], "split")], n_out=3, axis=1)
    total = None
    for level in range(2):
        ctx = b.relu(b.conv(ctx, c, c, group=c))
        gate = b.op("Slice", [gates, _ints(b, [level], "starts"), _ints(b, [level + 1], "ends"), _ints(b, [1], "axes")])
        term = b.op("Mul", [ctx, gate])
        total = term if total is None else b.op("Add", [total, term])
    out = b.conv(b.op("Mul", [q, b.conv(total, c, c, k=1)]), c, 6, k=1)
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [out])])
    return b.build([b.gemm(pooled, 6, 4)])


def token_mixing() -> onnx.ModelProto:
    """ResMLP's block: an affine per-channel norm (alpha·x + beta), token mixing as a Linear over
    the transposed tokens (the channels on the MatMul's row axis), a layer scale, the residual
    Add; a channel MLP; then a mean over the tokens and a head."""
    b = Builder(33, name="token_mixing")
    c, tokens = 8, 4
    x = b.input("x", [1, tokens, 6])
    s = _linear(b, x, 6, c)

    def affine(t: str) -> str:
        return b.op("Add", [b.op("Mul", [t, b.weight(c, prefix="alpha")]), b.weight(c, prefix="beta")])

    mixed = _linear(b, b.op("Transpose", [affine(s)], perm=[0, 2, 1]), tokens, tokens)   # [1, C, T]
    s = b.op("Add", [s, b.op("Mul", [b.op("Transpose", [mixed], perm=[0, 2, 1]), b.weight(c, prefix="ls")])])
    s = b.op("Add", [s, _linear(b, b.relu(_linear(b, affine(s), c, 16)), 16, c)])
    pooled = b.op("ReduceMean", [affine(s)], axes=[1], keepdims=0)
    return b.build([b.gemm(pooled, c, 5)])


def tf2onnx_channel_norm() -> onnx.ModelProto:
    """Keras' LayerNormalization over the channels as tf2onnx writes it after its transpose
    optimizer (benchmarks/exporters_zoo.py's ConvNeXtTiny): the scale folded into the inverse std
    before it meets the data, the mean moved to NCHW by a Reshape,

        m = Mul(Reciprocal(Sqrt(Add(ReduceMean(Mul(d, d)), eps))), gamma[1, C, 1, 1])
        y = Add(Mul(x, m), Add(Mul(Neg(mean), m), beta[1, C, 1, 1]))

    on a residual stream: stem Conv, LN, two blocks (depthwise Conv, LN, 1x1 Convs, added back)."""
    b = Builder(31, name="tf2onnx_channel_norm")
    c = 8

    def norm(x: str) -> str:
        mean = b.op("ReduceMean", [x], axes=[1], keepdims=1)
        neg = b.op("Neg", [mean])
        moved = b.op("Reshape", [mean, b.const(np.array([-1, 1, 4, 4], np.int64), "shape")])
        d = b.op("Sub", [x, moved])
        var = b.op("ReduceMean", [b.op("Mul", [d, d])], axes=[1], keepdims=1)
        eps = b.const(np.full([1, 1, 1, 1], 1e-3, np.float32), "eps")
        inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [var, eps])])])
        m = b.op("Mul", [inv, b.const((b.rng.random([1, c, 1, 1]) + 0.5).astype(np.float32), "gamma")])
        shift = b.op("Add", [b.op("Mul", [neg, m]),
                             b.const(b.rng.standard_normal([1, c, 1, 1]).astype(np.float32) * 0.1, "beta")])
        return b.op("Add", [b.op("Mul", [x, m]), shift])

    x = b.input("image", [1, 3, 8, 8])
    s = norm(b.op("Conv", [x, b.weight(c, 3, 2, 2), b.weight(c, prefix="b")], kernel_shape=[2, 2], strides=[2, 2]))
    for _ in range(2):
        t = norm(b.conv(s, c, c, k=3, group=c))
        s = b.op("Add", [s, b.conv(b.relu(b.conv(t, c, 16, k=1)), 16, c, k=1)])
    pooled = b.op("ReduceMean", [norm(s)], axes=[2, 3], keepdims=0)
    return b.build([b.gemm(pooled, c, 5)])


STREAMS = {"vit_stream": vit_stream, "convnext_stream": convnext_stream,
           "decomposed_stream": decoder_stream, "rms_stream": lambda: decoder_stream(rms=True),
           "groupnorm_block": groupnorm_block, "computed_weights": computed_weights,
           "small_blockers": small_blockers, "computed_operands": computed_operands,
           "coat_blockers": coat_blockers, "poolformer_stream": poolformer_stream,
           "cait_stream": cait_stream, "focal_gates": focal_gates,
           "token_mixing": token_mixing}
