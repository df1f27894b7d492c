"""Small float models quantized to ONNX's QDQ form by ONNX Runtime's static quantizer
(``onnxruntime.quantization.quantize_static``, ``QuantFormat.QDQ``), for the QDQ pruning tests.

Each float model is built with ``onnx.helper`` (random weights, seeded) and calibrated on a few
seeded random inputs: a residual CNN (Conv/BatchNorm-free, Relu, a residual Add, a Gemm head), a
depthwise-separable block (MobileNet-like: depthwise Conv, pointwise Conv) and an MLP (MatMul,
Add, Relu). Nothing is committed: the tests write them into their tmp dirs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(rng, name, shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    arr = rng.standard_normal(shape).astype(np.float32) * (scale if scale is not None else (2.0 / fan_in) ** 0.5)
    return numpy_helper.from_array(arr, name)


def residual_cnn(seed: int = 0, width: int = 16) -> onnx.ModelProto:
    """x [1,3,16,16] -> Conv-Relu -> (Conv-Relu-Conv) + skip -> Relu -> GAP -> Flatten -> Gemm(10)."""
    rng = np.random.default_rng(seed)
    c = width
    inits = [_init(rng, "w0", [c, 3, 3, 3]), _init(rng, "b0", [c], 0.1),
             _init(rng, "w1", [c, c, 3, 3]), _init(rng, "b1", [c], 0.1),
             _init(rng, "w2", [c, c, 3, 3]), _init(rng, "b2", [c], 0.1),
             _init(rng, "w3", [2 * c, c, 1, 1]), _init(rng, "b3", [2 * c], 0.1),
             _init(rng, "fc_w", [10, 2 * c]), _init(rng, "fc_b", [10], 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], "conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"], "relu0"),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r0"], ["s"], "add"),
             helper.make_node("Relu", ["s"], ["r2"], "relu2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], "conv3"),
             helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
             helper.make_node("GlobalAveragePool", ["r3"], ["g"], "gap"),
             helper.make_node("Flatten", ["g"], ["f"], "flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], "fc", transB=1)]
    graph = helper.make_graph(nodes, "residual_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def depthwise_cnn(seed: int = 1, width: int = 16) -> onnx.ModelProto:
    """MobileNet-like: Conv-Relu -> depthwise Conv 3x3 (group=C)-Relu -> pointwise Conv-Relu -> GAP -> Gemm."""
    rng = np.random.default_rng(seed)
    c = width
    inits = [_init(rng, "w0", [c, 3, 3, 3]), _init(rng, "b0", [c], 0.1),
             _init(rng, "dw", [c, 1, 3, 3]), _init(rng, "db", [c], 0.1),
             _init(rng, "pw", [2 * c, c, 1, 1]), _init(rng, "pb", [2 * c], 0.1),
             _init(rng, "fc_w", [10, 2 * c]), _init(rng, "fc_b", [10], 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], "conv0", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c0"], ["r0"], "relu0"),
             helper.make_node("Conv", ["r0", "dw", "db"], ["c1"], "dwconv", pads=[1, 1, 1, 1], group=c),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "pw", "pb"], ["c2"], "pwconv"),
             helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], "gap"),
             helper.make_node("Flatten", ["g"], ["f"], "flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], "fc", transB=1)]
    graph = helper.make_graph(nodes, "depthwise_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def mlp(seed: int = 2, hidden: int = 32) -> onnx.ModelProto:
    """x [4,20] -> MatMul-Add-Relu -> MatMul-Add-Relu -> MatMul-Add (5)."""
    rng = np.random.default_rng(seed)
    h = hidden
    inits = [_init(rng, "w0", [20, h], (1 / 20) ** 0.5), _init(rng, "b0", [h], 0.1),
             _init(rng, "w1", [h, h], (1 / h) ** 0.5), _init(rng, "b1", [h], 0.1),
             _init(rng, "w2", [h, 5], (1 / h) ** 0.5), _init(rng, "b2", [5], 0.1)]
    nodes = []
    x = "x"
    for i in range(3):
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], f"matmul{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], f"add{i}")]
        x = f"a{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], f"relu{i}"))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"], "out"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


FLOAT_MODELS = {"residual_cnn": residual_cnn, "depthwise_cnn": depthwise_cnn, "mlp": mlp}


class _Reader:
    """A CalibrationDataReader of seeded random inputs."""

    def __init__(self, model: onnx.ModelProto, n: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        inp = model.graph.input[0]
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        self.items = iter([{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)])

    def get_next(self):
        return next(self.items, None)


def quantized(name: str, folder: Path, per_channel: bool, **options) -> Path:
    """The float model ``name`` quantized to QDQ (int8 weights, uint8 activations unless
    ``options`` say otherwise), written into ``folder``; returns its path."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    folder = Path(folder)
    model = FLOAT_MODELS[name]()
    src = folder / f"{name}_float.onnx"
    onnx.save(model, src)
    out = folder / f"{name}_qdq_{'pc' if per_channel else 'pt'}.onnx"
    quantize_static(str(src), str(out), _Reader(model), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=options.pop("activation_type", QuantType.QUInt8),
                    weight_type=options.pop("weight_type", QuantType.QInt8), **options)
    return out
