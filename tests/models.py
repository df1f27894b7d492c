"""Small seeded ONNX models, one per pruning pattern, built with ``onnx.helper``.

Each factory returns an ``onnx.ModelProto`` that runs in ONNX Runtime 1.19 (opset <= 21).
``Builder`` keeps them short: ``b.conv(x, 8)`` adds a Conv with seeded weights and returns its
output name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    def __init__(self, seed: int = 0, opset: int = 17, ir_version: int = 8, name: str = "m"):
        self.rng = np.random.default_rng(seed)
        self.opset, self.ir_version, self.name = opset, ir_version, name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def input(self, name: str, shape, dtype=TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape, prefix: str = "w") -> str:
        return self.const(self.rng.standard_normal(shape).astype(np.float32) * 0.5, prefix)

    def op(self, op_type: str, inputs, n_out: int = 1, domain: str = "", **attrs):
        outs = [self.fresh(op_type.lower() + "_") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self.fresh(op_type),
                                           domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, group: int = 1, **attrs) -> str:
        ins = [x, self.weight(cout, cin // group, k, k)]
        if bias:
            ins.append(self.weight(cout, prefix="b"))
        return self.op("Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4, group=group, **attrs)

    def bn(self, x: str, c: int) -> str:
        scale = self.const((self.rng.random(c) + 0.5).astype(np.float32), "bn_scale")
        bias = self.const(self.rng.standard_normal(c).astype(np.float32) * 0.1, "bn_bias")
        mean = self.const(self.rng.standard_normal(c).astype(np.float32) * 0.1, "bn_mean")
        var = self.const((self.rng.random(c) + 0.5).astype(np.float32), "bn_var")
        return self.op("BatchNormalization", [x, scale, bias, mean, var])

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def gemm(self, x: str, k: int, n: int) -> str:
        return self.op("Gemm", [x, self.weight(n, k), self.weight(n, prefix="b")], transB=1)

    def build(self, outputs: list[str], value_info: bool = False, shapes: dict | None = None) -> onnx.ModelProto:
        """The model; output types come from shape inference (or ``shapes``, for ops it does not
        know), and so does value_info when asked."""
        inputs = list(self.inputs)
        if self.ir_version < 4:  # IR version 3: every initializer is also a graph input
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        graph = helper.make_graph(self.nodes, self.name, inputs, [], self.inits)
        graph.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
        domains = sorted({n.domain for n in self.nodes if n.domain not in ("", "ai.onnx")})
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in domains]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=self.ir_version,
                                  producer_name="tests")
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {vi.name: vi.type for vi in inferred.graph.value_info}
        for name, shape in (shapes or {}).items():
            types[name] = helper.make_tensor_type_proto(TensorProto.FLOAT, shape)
        for out in model.graph.output:
            out.type.CopyFrom(types[out.name])
        if value_info:
            model.graph.value_info.extend(vi for vi in inferred.graph.value_info if vi.name not in outputs)
        return model


def chain() -> onnx.ModelProto:
    """one-to-one: conv -> bn -> relu -> conv -> relu -> conv(head)."""
    b = Builder(1, name="chain")
    x = b.input("x", [1, 3, 8, 8])
    y = b.relu(b.bn(b.conv(x, 3, 8), 8))
    y = b.relu(b.conv(y, 8, 6))
    return b.build([b.conv(y, 6, 4, k=1)])


def one_to_many() -> onnx.ModelProto:
    """one root feeding two convs whose results are concatenated (SqueezeNet fire)."""
    b = Builder(2, name="one_to_many")
    x = b.input("x", [1, 3, 8, 8])
    s = b.relu(b.conv(x, 3, 8, k=1))
    e1 = b.relu(b.conv(s, 8, 6, k=1))
    e3 = b.relu(b.conv(s, 8, 6, k=3))
    cat = b.op("Concat", [e1, e3], axis=1)
    return b.build([b.conv(cat, 12, 4, k=1)])


def many_to_one() -> onnx.ModelProto:
    """two roots added (residual) into one conv."""
    b = Builder(3, name="many_to_one")
    x = b.input("x", [1, 3, 8, 8])
    a = b.bn(b.conv(x, 3, 8, bias=False), 8)
    c = b.conv(x, 3, 8, k=1)
    s = b.relu(b.op("Add", [a, c]))
    return b.build([b.conv(s, 8, 4)])


def many_to_many() -> onnx.ModelProto:
    """a residual stream (three roots) read by two convs and a pooled Gemm head."""
    b = Builder(4, name="many_to_many")
    x = b.input("x", [1, 3, 8, 8])
    s0 = b.relu(b.conv(x, 3, 8))
    r1 = b.conv(b.relu(b.conv(s0, 8, 8)), 8, 8)
    s1 = b.relu(b.op("Add", [s0, r1]))
    r2 = b.conv(b.relu(b.conv(s1, 8, 8)), 8, 8)
    s2 = b.relu(b.op("Sum", [s1, r2]))
    side = b.conv(s2, 8, 4, k=1)
    pooled = b.op("Flatten", [b.op("GlobalAveragePool", [s2])], axis=1)
    return b.build([b.gemm(pooled, 8, 5), side], value_info=True)


def concat() -> onnx.ModelProto:
    """two independent roots concatenated with offsets, plus an untracked branch."""
    b = Builder(5, name="concat")
    x = b.input("x", [1, 3, 8, 8])
    a = b.relu(b.conv(x, 3, 6))
    c = b.relu(b.conv(x, 3, 4, k=1))
    pool = b.op("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
    cat = b.op("Concat", [a, pool, c], axis=1)
    return b.build([b.conv(cat, 13, 4, k=1)])


def depthwise() -> onnx.ModelProto:
    """MobileNet block: pointwise -> depthwise (group=C) -> pointwise."""
    b = Builder(6, name="depthwise")
    x = b.input("x", [1, 3, 8, 8])
    p = b.op("Clip", [b.bn(b.conv(x, 3, 8, k=1), 8), b.const(np.array(0, np.float32), "lo"),
                      b.const(np.array(6, np.float32), "hi")])
    d = b.relu(b.bn(b.conv(p, 8, 8, group=8, bias=False), 8))
    return b.build([b.conv(d, 8, 4, k=1)])


def flatten_gemm() -> onnx.ModelProto:
    """VGG head: conv -> relu -> maxpool -> flatten -> gemm -> relu -> gemm."""
    b = Builder(7, name="flatten_gemm")
    x = b.input("x", [1, 3, 8, 8])
    c = b.op("MaxPool", [b.relu(b.conv(x, 3, 6))], kernel_shape=[2, 2], strides=[2, 2])
    f = b.op("Flatten", [c], axis=1)
    h = b.relu(b.gemm(f, 6 * 4 * 4, 16))
    return b.build([b.gemm(h, 16, 5)], value_info=True)


def graph_output() -> onnx.ModelProto:
    """a feature map that is both a graph output and read by the next conv."""
    b = Builder(8, name="graph_output")
    x = b.input("x", [1, 3, 8, 8])
    feat = b.relu(b.conv(x, 3, 8))
    y = b.relu(b.conv(feat, 8, 6))
    return b.build([feat, b.conv(y, 6, 4, k=1)])


def barrier() -> onnx.ModelProto:
    """an op outside the table (ONNX Runtime's com.microsoft.Trilu) between two convs, and an
    LRN (mixes channels)."""
    b = Builder(9, name="barrier")
    x = b.input("x", [1, 3, 8, 8])
    a = b.relu(b.conv(x, 3, 8))
    # ORT runs it; it keeps the channels, but it is not in the table: it must stay a barrier
    # (com.microsoft.Gelu was the example until passes/contrib.py learnt to write it as standard ops)
    odd = b.op("Trilu", [a], domain="com.microsoft")
    c = b.relu(b.conv(odd, 8, 6))
    n = b.op("LRN", [c], size=3)
    d = b.relu(b.conv(n, 6, 6))
    y = b.conv(d, 6, 4, k=1)
    return b.build([y], shapes={y: [1, 4, 8, 8]})


def caffe_style_opset9() -> onnx.ModelProto:
    """Caffe2-era export: opset 9, IR version 3 (weights listed as inputs), Sum, LRN, Dropout,
    scale layers as Mul/Add by per-channel constants."""
    b = Builder(10, opset=9, ir_version=3, name="caffe_style")
    x = b.input("data", [1, 3, 8, 8])
    c1 = b.conv(x, 3, 8)
    scaled = b.op("Add", [b.op("Mul", [c1, b.weight(8, 1, 1, prefix="scale")]), b.weight(8, 1, 1, prefix="shift")])
    r1 = b.relu(scaled)
    drop = b.op("Dropout", [r1], ratio=0.5)
    c2 = b.conv(drop, 8, 8, k=1)
    c3 = b.conv(drop, 8, 8, k=3)
    s = b.relu(b.op("Sum", [c2, c3, b.conv(x, 3, 8, k=1)]))
    n = b.op("LRN", [s], size=3)
    c4 = b.relu(b.conv(n, 8, 6))
    pooled = b.op("Reshape", [b.op("AveragePool", [c4], kernel_shape=[8, 8]),
                              b.const(np.array([1, 6], np.int64), "shape")])
    return b.build([b.gemm(pooled, 6, 5)])


PATTERNS = {
    "chain": chain,
    "one_to_many": one_to_many,
    "many_to_one": many_to_one,
    "many_to_many": many_to_many,
    "concat": concat,
    "depthwise": depthwise,
    "flatten_gemm": flatten_gemm,
    "graph_output": graph_output,
    "barrier": barrier,
    "caffe_style_opset9": caffe_style_opset9,
}


def _ints(b: Builder, values, prefix: str = "k") -> str:
    return b.const(np.array(values, np.int64), prefix)


def grouped_conv() -> onnx.ModelProto:
    """ResNeXt block: 1x1 -> grouped 3x3 (group=4, 2 in / 3 out per group) -> 1x1, residual Add,
    then a grouped ConvTranspose (group=2) upsampling head."""
    b = Builder(11, name="grouped_conv")
    x = b.input("x", [1, 3, 8, 8])
    s0 = b.relu(b.conv(x, 3, 8))
    a = b.relu(b.bn(b.conv(s0, 8, 8, k=1, bias=False), 8))
    g = b.relu(b.bn(b.conv(a, 8, 12, group=4, bias=False), 12))
    c = b.bn(b.conv(g, 12, 8, k=1, bias=False), 8)
    s1 = b.relu(b.op("Add", [s0, c]))
    up = b.op("ConvTranspose", [s1, b.weight(8, 4, 2, 2), b.weight(8, prefix="b")],
              kernel_shape=[2, 2], strides=[2, 2], group=2)
    return b.build([b.conv(b.relu(up), 8, 4, k=1)])


def _shuffle(b: Builder, x: str, shape5, shape4) -> str:
    """ShuffleNet channel shuffle: Reshape [N,g,C/g,H,W] -> Transpose -> Reshape [N,C,H,W]."""
    r = b.op("Reshape", [x, shape5 if isinstance(shape5, str) else _ints(b, shape5, "shape")])
    t = b.op("Transpose", [r], perm=[0, 2, 1, 3, 4])
    return b.op("Reshape", [t, shape4 if isinstance(shape4, str) else _ints(b, shape4, "shape")])


def channel_shuffle() -> onnx.ModelProto:
    """ShuffleNetV2 units: two branches concatenated and shuffled (constant targets), then a
    unit that splits the channels in halves (Split), keeps one and convolves the other."""
    b = Builder(12, name="channel_shuffle")
    x = b.input("x", [1, 3, 8, 8])
    left = b.relu(b.conv(x, 3, 4, k=1))
    right = b.relu(b.conv(x, 3, 4))
    s = _shuffle(b, b.op("Concat", [left, right], axis=1), [1, 2, 4, 8, 8], [1, 8, 8, 8])
    x1, x2 = b.op("Split", [s, _ints(b, [4, 4], "split")], n_out=2, axis=1)
    branch = b.relu(b.bn(b.conv(b.relu(b.conv(x2, 4, 6, k=1)), 6, 4, k=1), 4))
    s2 = _shuffle(b, b.op("Concat", [x1, branch], axis=1), [1, 2, 4, 8, 8], [1, 8, 8, 8])
    return b.build([b.conv(s2, 8, 4, k=1)])


def channel_slice() -> onnx.ModelProto:
    """ShuffleNet chunk as the legacy exporter writes it (Slice ends from Shape→Gather→Div), then
    Swin-style patch merging: strided spatial Slices concatenated on the channel axis."""
    b = Builder(13, name="channel_slice")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 8))
    count = b.op("Gather", [b.op("Shape", [c]), _ints(b, [1], "idx")], axis=0)
    half = b.op("Div", [b.op("Add", [count, _ints(b, [1], "one")]), _ints(b, [2], "two")])
    end = b.op("Mul", [half, _ints(b, [2], "two")])
    axes = _ints(b, [1], "axes")
    x1 = b.op("Slice", [c, _ints(b, [0], "start"), half, axes])
    x2 = b.op("Slice", [c, half, end, axes])
    y = b.op("Concat", [x1, b.relu(b.conv(x2, 4, 4, k=1))], axis=1)
    big = np.iinfo(np.int64).max
    parts = [b.op("Slice", [y, _ints(b, [i, j], "start"), _ints(b, [big, big], "end"),
                            _ints(b, [2, 3], "axes"), _ints(b, [2, 2], "steps")])
             for i, j in ((0, 0), (1, 0), (0, 1), (1, 1))]
    merged = b.op("Concat", parts, axis=1)
    return b.build([b.conv(merged, 32, 4, k=1)])


def shape_reshape() -> onnx.ModelProto:
    """Shape→Gather→Unsqueeze→Concat→Reshape: ``x.view(x.size(0), -1)`` before a Gemm, and a
    channel shuffle whose targets are computed from Shape (C // 2 names the channel count)."""
    b = Builder(14, name="shape_reshape")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 8))
    shp = b.op("Shape", [c])
    dims = [b.op("Gather", [shp, b.const(np.array(i, np.int64), "i")], axis=0) for i in range(4)]
    n, ch, h, w = (b.op("Unsqueeze", [d, _ints(b, [0], "axes")]) for d in dims)
    groups = _ints(b, [2], "g")
    per = b.op("Div", [ch, groups])
    s = _shuffle(b, c, b.op("Concat", [n, groups, per, h, w], axis=0),
                 b.op("Concat", [n, ch, h, w], axis=0))
    d = b.relu(b.conv(s, 8, 6))
    pooled = b.op("GlobalAveragePool", [d])
    batch = b.op("Unsqueeze", [b.op("Gather", [b.op("Shape", [pooled]), b.const(np.array(0, np.int64), "i")],
                                    axis=0), _ints(b, [0], "axes")])
    flat = b.op("Reshape", [pooled, b.op("Concat", [batch, _ints(b, [-1], "rest")], axis=0)])
    return b.build([b.gemm(flat, 6, 5)])


PATTERNS.update({
    "grouped_conv": grouped_conv,
    "channel_shuffle": channel_shuffle,
    "channel_slice": channel_slice,
    "shape_reshape": shape_reshape,
})


def channel_task(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 3-class task on [n, 2, 4, 4] inputs: class 0 has channel 0 bright, class 1
    channel 1, class 2 neither (the fine-tuning, schedule and sensitivity tests learn it)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 2, 4, 4)) * 0.5).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    x[y == 0, 0] += 1.5
    x[y == 1, 1] += 1.5
    return x, y


# ----------------------------------------------------------------------------- recurrent networks
def _recurrent(b: Builder, op: str, x: str, inputs: int, hidden: int, directions: int = 1,
               state: list[str] | None = None, peepholes: bool = False, **attrs) -> list[str]:
    """An LSTM / GRU / RNN node with seeded W, R, B (and P), all its outputs named."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    ins = [x, b.weight(directions, gates * hidden, inputs), b.weight(directions, gates * hidden, hidden),
           b.weight(directions, 2 * gates * hidden, prefix="b")] + list(state or [])
    if peepholes:
        ins += [""] * (7 - len(ins)) + [b.weight(directions, 3 * hidden, prefix="p")]
    outs = 3 if op == "LSTM" else 2
    return b.op(op, ins, n_out=outs, hidden_size=hidden,
                direction={1: "forward", 2: "bidirectional"}[directions] if "direction" not in attrs else attrs.pop("direction"),
                **attrs)


def lstm_chain() -> onnx.ModelProto:
    """MatMul -> Relu -> LSTM (peepholes, sequence lengths, constant initial states) -> Squeeze
    -> MatMul: the MatMul's features are the LSTM's input (W's columns), its units the head's rows."""
    b = Builder(21, name="lstm_chain")
    x = b.input("x", [5, 2, 6])
    f = b.relu(b.op("MatMul", [x, b.weight(6, 8)]))
    lens = b.const(np.array([5, 3], np.int32), "lens")
    h0 = b.weight(1, 2, 6, prefix="h0")
    c0 = b.weight(1, 2, 6, prefix="c0")
    y, _, _ = _recurrent(b, "LSTM", f, 8, 6, state=[lens, h0, c0], peepholes=True)
    seq = b.op("Squeeze", [y, _ints(b, [1], "axes")])
    return b.build([b.op("MatMul", [seq, b.weight(6, 3)])])


def gru_bidirectional(layout: int = 0) -> onnx.ModelProto:
    """A bidirectional GRU (linear_before_reset): Y [T, 2, B, H] transposed and reshaped to
    [T, B, 2·H] (the directions concatenated, as PyTorch writes it) feeds a second GRU, Y_h
    [2, B, H] the same way a Gemm; a unit is removed from both directions. ``layout=1`` (batch
    first: Y [B, T, 2, H], Y_h [B, 2, H]) needs no Transpose; ONNX Runtime's CPU kernels do not
    run it."""
    b = Builder(22, name="gru_bidirectional" + ("_layout1" if layout else ""))
    x = b.input("x", [2, 4, 5] if layout else [4, 2, 5])
    y, yh = _recurrent(b, "GRU", x, 5, 6, directions=2, linear_before_reset=1, **({"layout": 1} if layout else {}))
    if not layout:
        y = b.op("Transpose", [y], perm=[0, 2, 1, 3])
        yh = b.op("Transpose", [yh], perm=[1, 0, 2])
    seq = b.op("Reshape", [y, _ints(b, [2, 4, 12] if layout else [4, 2, 12], "shape")])
    y2, _ = _recurrent(b, "GRU", seq, 12, 4, **({"layout": 1} if layout else {}))
    last = b.op("Reshape", [yh, _ints(b, [2, 12], "shape")])
    return b.build([b.op("MatMul", [y2, b.weight(4, 3)]), b.gemm(last, 12, 3)])


def rnn_reverse_state_input() -> onnx.ModelProto:
    """A reverse RNN whose initial state is a graph input: the pruned node reads the kept units
    through a Gather, the input keeps its shape."""
    b = Builder(23, name="rnn_reverse_state_input")
    x = b.input("x", [4, 2, 3])
    h0 = b.input("h0", [1, 2, 6])
    _, yh = _recurrent(b, "RNN", x, 3, 6, state=["", h0], direction="reverse")
    last = b.op("Squeeze", [yh, _ints(b, [0], "axes")])
    return b.build([b.gemm(b.op("Tanh", [last]), 6, 2)])


def lstm_state_output() -> onnx.ModelProto:
    """An LSTM whose final states are graph outputs (a streaming model's state): its units are
    the user's interface and stay; the features feeding it still prune."""
    b = Builder(24, name="lstm_state_output")
    x = b.input("x", [3, 1, 4])
    f = b.relu(b.op("MatMul", [x, b.weight(4, 8)]))
    y, yh, yc = _recurrent(b, "LSTM", f, 8, 5)
    return b.build([b.op("MatMul", [y, b.weight(5, 2)]), yh, yc])


RECURRENT = {
    "lstm_chain": lstm_chain,
    "gru_bidirectional": gru_bidirectional,
    "rnn_reverse_state_input": rnn_reverse_state_input,
    "lstm_state_output": lstm_state_output,
}


# ----------------------------------------------------------------------------- control flow
def _branch(seed: int, x: str, width: int, name: str) -> onnx.GraphProto:
    """A body reading the graph input ``x`` [1, 3, 8, 8] from the enclosing scope: conv ->
    relu -> conv -> relu -> global pool -> Flatten -> Gemm to [1, 4], its weights inside it."""
    b = Builder(seed, name=name)
    b.count = 100 * seed  # names apart from the other branch's
    y = b.relu(b.conv(b.relu(b.conv(x, 3, width)), width, width))
    out = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [y])]), width, 4)
    return helper.make_graph(b.nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4])],
                             b.inits)


def if_branches(read_outer: bool = False) -> onnx.ModelProto:
    """A model whose network sits inside the two branches of an If selected by a scalar int64
    input ``sr`` (Silero VAD's form: one network per sample rate). ``read_outer``: the else
    branch reads a value computed outside it (a Conv of the enclosing graph) instead."""
    b = Builder(31, name="if_branches" + ("_read_outer" if read_outer else ""))
    x = b.input("x", [1, 3, 8, 8])
    sr = b.input("sr", [], TensorProto.INT64)
    cond = b.op("Equal", [sr, b.const(np.array(16000, np.int64), "rate")])
    then_g = _branch(32, x, 8, "k16")
    outer = b.relu(b.conv(x, 3, 4)) if read_outer else x
    else_g = _branch(33, outer, 6, "k8")
    if read_outer:  # the body's first conv now reads the 4-channel outer value
        w = next(t for t in else_g.initializer if list(t.dims) == [6, 3, 3, 3])
        w.CopyFrom(numpy_helper.from_array(b.rng.standard_normal((6, 4, 3, 3)).astype(np.float32), w.name))
    y = b.op("If", [cond], then_branch=then_g, else_branch=else_g)
    return b.build([y], shapes={y: [1, 4]})


def if_crossing() -> onnx.ModelProto:
    """Channels crossing an If's bodies: an outer conv ``t`` read by both branches (then: conv ->
    relu -> conv; else: conv), the branches' last convs returned as the If's output, which an
    outer conv reads (its input columns a leaf of both). Lowered into the graph (ir/bodies.py)."""
    b = Builder(34, name="if_crossing")
    x = b.input("x", [1, 3, 8, 8])
    sr = b.input("sr", [], TensorProto.INT64)
    cond = b.op("Equal", [sr, b.const(np.array(16000, np.int64), "rate")])
    t = b.relu(b.conv(x, 3, 8))
    branches = []
    for seed, layers in ((35, [8, 6, 5]), (36, [8, 5])):
        inner = Builder(seed, name=f"branch{seed}")
        inner.count = 100 * seed
        y = t
        for i, (cin, cout) in enumerate(zip(layers, layers[1:])):
            y = inner.conv(y, cin, cout)
            y = inner.relu(y) if i < len(layers) - 2 else y
        branches.append(helper.make_graph(inner.nodes, f"branch{seed}", [],
                                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 5, 8, 8])],
                                          inner.inits))
    y = b.op("If", [cond], then_branch=branches[0], else_branch=branches[1])
    head = b.op("Flatten", [b.op("GlobalAveragePool", [b.relu(b.conv(y, 5, 4))])])
    return b.build([head], shapes={head: [1, 4]})


def loop_reading_outer(kind: str = "Loop", trips: int | None = 3) -> onnx.ModelProto:
    """A Loop (``trips`` iterations, a graph input when None) or a Scan (over the 5 rows of
    ``seq`` [5, 1, 8]) whose body reads two outer values: ``t`` = Relu(MatMul(x, W[8, 16])),
    through Relu into a MatMul by a body weight [16, 8] (a leaf inside the body), and ``v`` =
    MatMul(x, W[8, 8]), added to the body's state (a barrier). The state [1, 8] ends in a Gemm."""
    rng = np.random.default_rng(41)

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    f = TensorProto.FLOAT
    state = [helper.make_tensor_value_info("s", f, [1, 8])]
    head = [helper.make_node("Relu", ["t"], ["t_relu"]), helper.make_node("MatMul", ["t_relu", "w_in"], ["u"]),
            helper.make_node("Add", ["s", "v"], ["sv"])]
    if kind == "Loop":
        ins = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
               helper.make_tensor_value_info("c", TensorProto.BOOL, [])] + state
        nodes = head + [helper.make_node("Add", ["sv", "u"], ["su"]), helper.make_node("Tanh", ["su"], ["s_out"]),
                        helper.make_node("Identity", ["c"], ["c_out"])]
        outs = [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("s_out", f, [1, 8])]
    else:
        ins = state + [helper.make_tensor_value_info("row", f, [1, 8])]
        nodes = head + [helper.make_node("MatMul", ["row", "w_row"], ["r"]), helper.make_node("Add", ["sv", "r"], ["a"]),
                        helper.make_node("Add", ["a", "u"], ["au"]), helper.make_node("Tanh", ["au"], ["s_out"]),
                        helper.make_node("Identity", ["a"], ["row_out"])]
        outs = [helper.make_tensor_value_info("s_out", f, [1, 8]), helper.make_tensor_value_info("row_out", f, [1, 8])]
    weights = [w("w_in", 16, 8)] + ([w("w_row", 8, 8)] if kind == "Scan" else [])
    body = helper.make_graph(nodes, f"{kind.lower()}_body", ins, outs, weights)
    inputs = [helper.make_tensor_value_info("x", f, [1, 8])]
    inits = [w("w_t", 8, 16), w("w_v", 8, 8), w("w_head", 8, 4)]
    top = [helper.make_node("MatMul", ["x", "w_t"], ["t_mm"], name="MatMul_t"),
           helper.make_node("Relu", ["t_mm"], ["t"], name="Relu_t"),
           helper.make_node("MatMul", ["x", "w_v"], ["v"], name="MatMul_v")]
    if kind == "Loop":
        inits.append(numpy_helper.from_array(np.array(True), "go"))
        if trips is None:
            inputs.append(helper.make_tensor_value_info("trips", TensorProto.INT64, []))
        else:
            inits.append(numpy_helper.from_array(np.array(trips, np.int64), "trips"))
        top.append(helper.make_node("Loop", ["trips", "go", "x"], ["s_final"], name="Loop_0", body=body))
        extra = []
    else:
        inputs.append(helper.make_tensor_value_info("seq", f, [5, 1, 8]))
        top.append(helper.make_node("Scan", ["x", "seq"], ["s_final", "rows"], name="Scan_0", body=body,
                                    num_scan_inputs=1))
        extra = [helper.make_tensor_value_info("rows", f, [5, 1, 8])]
    top.append(helper.make_node("MatMul", ["s_final", "w_head"], ["y"], name="MatMul_head"))
    graph = helper.make_graph(top, f"{kind.lower()}_reading_outer", inputs,
                              [helper.make_tensor_value_info("y", f, [1, 4])] + extra, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


CONTROL_FLOW = {"if_branches": if_branches, "if_branches_read_outer": lambda: if_branches(read_outer=True),
                "if_crossing": if_crossing, "loop_reading_outer": loop_reading_outer,
                "scan_reading_outer": lambda: loop_reading_outer("Scan")}


def caffe_style_wide() -> onnx.ModelProto:
    """IR version 3, opset 9, weights listed as inputs and large enough (over 1,024 elements) that
    analyses declare them rather than copy them; one weight shared by two convs (un-shared by
    slicing, so a renamed copy must be listed too)."""
    b = Builder(12, opset=9, ir_version=3, name="caffe_wide")
    x = b.input("data", [1, 3, 8, 8])
    c1 = b.relu(b.conv(x, 3, 32))
    shared = b.weight(32, 32, 1, 1)
    e1 = b.relu(b.op("Conv", [c1, shared], kernel_shape=[1, 1]))
    e2 = b.relu(b.op("Conv", [c1, shared], kernel_shape=[1, 1]))
    cat = b.op("Concat", [e1, b.relu(b.conv(e2, 32, 32))], axis=1)
    pooled = b.op("GlobalAveragePool", [b.relu(b.conv(cat, 64, 16, k=1))])
    flat = b.op("Flatten", [pooled], axis=1)
    return b.build([b.gemm(flat, 16, 5)])


def plant_dead_channels(model: onnx.ModelProto, node_name: str, channels) -> onnx.ModelProto:
    """A copy of ``model`` whose Conv/Gemm ``node_name`` has the given output channels dead: their
    filters and bias zeroed, so (behind a Relu) they are exactly zero downstream."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = next(n for n in out.graph.node if n.name == node_name)
    inits = {t.name: t for t in out.graph.initializer}
    for port in (1, 2)[:len(node.input) - 1]:
        t = inits[node.input[port]]
        arr = numpy_helper.to_array(t).copy()
        arr[list(channels)] = 0
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return out


def stateful_scalar() -> onnx.ModelProto:
    """A voice-activity-style model: ``x[batch, 8]``, a recurrent state ``h[1, batch, 16]`` (the
    batch at position 1, sharing the name) and a scalar ``sr`` (int64, must be 8: it slices ``x``);
    outputs the prediction and the next state."""
    b = Builder(21, name="stateful")
    x = b.input("x", ["batch", 8])
    h = b.input("h", [1, "batch", 16])
    sr = b.input("sr", [], TensorProto.INT64)
    end = b.op("Unsqueeze", [sr, _ints(b, [0])])
    xs = b.op("Slice", [x, _ints(b, [0]), end, _ints(b, [1])])
    a = b.relu(b.gemm(xs, 8, 16))
    s = b.relu(b.op("Add", [a, b.op("Squeeze", [h, _ints(b, [0])])]))
    hidden = b.relu(b.gemm(s, 16, 12))
    y = b.gemm(hidden, 12, 4)
    state = b.op("Unsqueeze", [s, _ints(b, [0])])
    return b.build([y, state], shapes={y: ["batch", 4], state: [1, "batch", 16]})


def fixed_size_symbolic() -> onnx.ModelProto:
    """Declares ``x[N, 3, H, W]`` but runs only at 8×8 (Flatten -> Gemm of 8·8·8 columns)."""
    b = Builder(22, name="fixed_size")
    x = b.input("x", ["N", 3, "H", "W"])
    c = b.relu(b.conv(x, 3, 8))
    c = b.relu(b.conv(c, 8, 8))
    flat = b.op("Flatten", [c], axis=1)
    return b.build([b.gemm(flat, 8 * 8 * 8, 4)], shapes={})


def scaler_mlp(zipmap: bool = False) -> onnx.ModelProto:
    """scikit-learn style: ``ai.onnx.ml.Scaler`` in front of an MLP (ONNX shape inference gives
    nothing after it), optionally a ZipMap output (a sequence of maps) beside the label."""
    b = Builder(23, name="scaler_mlp")
    x = b.input("X", [None, 8])
    s = b.op("Scaler", [x], domain="ai.onnx.ml", offset=[0.5] * 8, scale=[2.0] * 8)
    h = b.relu(b.op("Add", [b.op("MatMul", [s, b.weight(8, 16)]), b.weight(16, prefix="b")]))
    h = b.relu(b.op("Add", [b.op("MatMul", [h, b.weight(16, 12)]), b.weight(12, prefix="b")]))
    logits = b.op("Add", [b.op("MatMul", [h, b.weight(12, 3)]), b.weight(3, prefix="b")])
    if not zipmap:
        return b.build([logits], shapes={logits: [None, 3]})
    probs = b.op("Softmax", [logits], axis=1)
    label = b.op("ArgMax", [probs], axis=1, keepdims=0)
    zm = b.op("ZipMap", [probs], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])
    graph = helper.make_graph(b.nodes, b.name, b.inputs, [
        helper.make_tensor_value_info(label, TensorProto.INT64, [None]),
        helper.make_value_info(zm, helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
        b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)],
                             ir_version=8, producer_name="tests")
