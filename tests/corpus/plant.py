"""Dead channels planted in a model, independently of the pruner's own analysis.

``plant(model, root, channels)`` zeroes the given output channels of a Conv / Gemm / MatMul
(its weights and bias) and then follows the chain of single consumers after it — bias Add/Sub,
BatchNormalization (scale and shift zeroed, so a running mean cannot bring the channel back),
Mul/Div by a constant, ReLU-like activations that map 0 to 0, pooling, Transpose (the channel
axis follows the permutation) — zeroing every per-channel constant that would make those
channels non-zero again. It returns the planted model and the tensors of the chain, so that a
test can check, by running the planted model in ONNX Runtime, that the channels really are
exactly zero where the chain ends.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

ZERO_PRESERVING = {"Relu", "LeakyRelu", "HardSwish", "Tanh", "Identity", "Dropout", "MaxPool", "AveragePool",
                   "GlobalAveragePool", "GlobalMaxPool", "PRelu", "Elu", "Selu", "Softsign", "Sin", "Neg",
                   "Abs", "Sqrt", "Floor", "Ceil", "Round", "Sign", "Relu6", "Gelu"}
# what may read the dead channels where the chain ends: each adds nothing for a zero channel
# (a Conv / Gemm / MatMul reading it as an input channel, or a reshape/concat/reduction of it)
ENDS = {"Conv", "Gemm", "MatMul", "Flatten", "Reshape", "Concat", "Squeeze", "Unsqueeze", "GlobalAveragePool",
        "GlobalMaxPool", "ReduceMean", "ReduceSum", "MaxPool", "AveragePool", "Transpose", "Identity"}


class Constants:
    """Read and write a tensor that is a constant: an initializer, a Constant node's value, or
    either of them through Identity / Reshape / Unsqueeze / Squeeze / Cast (a new array of the
    same number of elements is written back in the source's shape)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}

    def _source(self, name: str):
        seen = 0
        while name not in self.inits and seen < 8:
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == "Constant":
                return next((a.t for a in node.attribute if a.name == "value"), None)
            if node.op_type not in ("Identity", "Reshape", "Unsqueeze", "Squeeze", "Cast"):
                return None
            name, seen = node.input[0], seen + 1
        return self.inits.get(name)

    def get(self, name: str) -> np.ndarray | None:
        src = self._source(name)
        if src is None:
            return None
        value = numpy_helper.to_array(src)
        node = self.producer.get(name)
        if node is not None and node.op_type != "Constant" and value.size:
            shaped = self._shape_of(name, value)
            return value.reshape(shaped) if shaped is not None else None
        return value

    def _shape_of(self, name: str, value: np.ndarray):
        """The shape the constant has at ``name`` (through reshapes of known constant shape)."""
        node = self.producer.get(name)
        if node is None or node.op_type == "Constant" or name in self.inits:
            return value.shape
        inner = self._shape_of(node.input[0], value)
        if inner is None:
            return None
        if node.op_type in ("Identity", "Cast"):
            return inner
        if node.op_type == "Reshape":
            target = self.get(node.input[1])
            if target is None:
                return None
            target = [int(d) if d != 0 else inner[i] for i, d in enumerate(target)]
            return np.empty(inner).reshape(target).shape
        axes = self.get(node.input[1]) if len(node.input) > 1 else next(
            (list(a.ints) for a in node.attribute if a.name == "axes"), None)
        if node.op_type == "Unsqueeze":
            return np.expand_dims(np.empty(inner), tuple(int(a) for a in axes)).shape
        return np.squeeze(np.empty(inner), tuple(int(a) for a in axes) if axes is not None else None).shape

    def set(self, name: str, value: np.ndarray) -> None:
        src = self._source(name)
        new = numpy_helper.from_array(np.asarray(value).reshape(tuple(src.dims)).astype(
            onnx.helper.tensor_dtype_to_np_dtype(src.data_type)), src.name)
        src.CopyFrom(new)


def weight_and_axes(node: onnx.NodeProto, consts: Constants):
    """(weight input name, axis of the weight that holds output channels, channel axis of the output)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        assert node.op_type == "Conv", "ConvTranspose roots are not planted"
        return node.input[1], 0, 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return node.input[1], 0 if trans_b else 1, 1
    if node.op_type == "MatMul":
        return node.input[1], -1, -1
    raise ValueError(f"cannot plant on {node.op_type}")


def plant(model: onnx.ModelProto, root: str, channels, rank: int):
    """A copy of ``model`` whose ``root`` output ``channels`` are exactly zero along the chain
    after it. ``rank``: the rank of the root's output (from a run; the chain keeps it).
    Returns (model, chain tensors, the channel axis at the chain's end)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    consts = Constants(model)
    nodes = {n.name: n for n in model.graph.node}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in set(n.input):
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    node = nodes[root]
    w_name, w_axis, axis = weight_and_axes(node, consts)
    w = consts.get(w_name)
    assert w is not None, f"{root}: weight {w_name!r} is not a constant"
    idx = [slice(None)] * w.ndim
    idx[w_axis] = list(channels)
    w = w.copy()
    w[tuple(idx)] = 0
    consts.set(w_name, w)
    if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 and node.input[2]:
        b = consts.get(node.input[2]).copy()
        if b.ndim == 1 or node.op_type == "Conv":
            b.reshape(-1)[list(channels)] = 0
        else:  # Gemm's C broadcast to [N, M]
            b[..., list(channels)] = 0
        consts.set(node.input[2], b)
    tensor = node.output[0]
    axis %= rank
    chain = [tensor]
    while tensor not in outputs:
        users = consumers.get(tensor, [])
        if len(users) == 2 and {u.op_type for u in users} & {"Mul"}:
            # x * f(x) (Hardswish as HardSigmoid + Mul, SiLU as Sigmoid + Mul): zero stays zero
            mul = next(u for u in users if u.op_type == "Mul")
            f = next(u for u in users if u is not mul)
            if f.output[0] in mul.input and consumers.get(f.output[0]) == [mul]:
                tensor = mul.output[0]
                chain.append(tensor)
                continue
        if len(users) != 1:
            break
        nxt = users[0]
        op = nxt.op_type
        if op == "Conv" and nxt.input[0] == tensor and _depthwise(nxt, consts):
            # a depthwise conv keeps channels apart: its weights and bias of those channels too
            for k in (1, 2):
                if len(nxt.input) > k and nxt.input[k]:
                    v = consts.get(nxt.input[k]).copy()
                    v[list(channels)] = 0
                    consts.set(nxt.input[k], v)
        elif op in ("Add", "Sub"):
            other = next(i for i in nxt.input if i != tensor)
            c = consts.get(other)
            if c is None:
                break
            caxis = axis - (rank - c.ndim)
            if caxis >= 0 and c.shape[caxis] > 1:
                c = c.copy()
                sl = [slice(None)] * c.ndim
                sl[caxis] = list(channels)
                c[tuple(sl)] = 0
                consts.set(other, c)
            elif np.any(c != 0):
                break  # a bias shared by all channels: the channels stop being zero here
        elif op in ("Mul", "Div"):
            if nxt.input[0] != tensor and op == "Div" or consts.get(next(i for i in nxt.input if i != tensor)) is None:
                break
        elif op == "BatchNormalization":
            for k in (1, 2):
                v = consts.get(nxt.input[k]).copy()
                v[list(channels)] = 0
                consts.set(nxt.input[k], v)
        elif op == "Clip":
            lo = consts.get(nxt.input[1]) if len(nxt.input) > 1 and nxt.input[1] else None
            hi = consts.get(nxt.input[2]) if len(nxt.input) > 2 and nxt.input[2] else None
            if (lo is not None and lo > 0) or (hi is not None and hi < 0):
                break
        elif op == "Transpose":
            perm = next(list(a.ints) for a in nxt.attribute if a.name == "perm")
            axis = perm.index(axis)
        elif op not in ZERO_PRESERVING:
            break
        tensor = nxt.output[0]
        chain.append(tensor)
    ends = [u.op_type for u in consumers.get(tensor, [])]
    assert tensor in outputs or ends and all(op in ENDS and not (op == "Conv" and _depthwise(u, consts))
                                             for op, u in zip(ends, consumers[tensor])), \
        f"planted channels of {root} are not dead at {ends} after {chain[-1]!r}"
    return model, chain, axis


def _depthwise(node: onnx.NodeProto, consts: Constants) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    w = consts.get(node.input[1])
    return group > 1 and w is not None and w.shape[1] == 1 and w.shape[0] == group
