"""Guessed inputs that must never reach a kernel: where a defaulted integer (or boolean) graph input's
zeros (``passes.inputs``: an integer input the caller did not give is fed zeros) would reach an
operator port on which ONNX Runtime 1.19.2 dies in native code (SIGFPE: no Python handler can turn
it into an error line, and in a batch it ends every model after it) or computes from memory it
never wrote. Such an input is refused in one line naming it and the port, before anything runs.

The ports, each found by ``benchmarks/guess_audit.py`` (one single-op model per port that takes a
size, shape, count, step, length, axis or index, that port a graph input, run through the
command): every other port it audits either runs on zeros or ONNX Runtime rejects them with a
message (Range's zero delta, Slice's zero step, Resize's zero sizes...), which ``inputs.rejection``
turns into a line naming the input.

Value flow: a zero reaches a port through ops whose output holds zeros wherever their input's
all-zeros does (``ZERO_KEEPING``: Identity, Cast to an integer type, Squeeze, Concat, Gather of
it, Mul, ReduceSum...). Arithmetic that may turn zeros into other numbers (Add, Sub, Max, a Cast
to float) stops the flow: token ids (Gather of an embedding table) and attention masks (cast to
float, then divided) are not refused.

Example: ``block_shape`` int64[2] -> Col2Im port 2: "input 'block_shape' of m.onnx sets the block
shape of Col2Im 'fold'; its values cannot be guessed (zeros kill ONNX Runtime with SIGFPE): give
them with --inputs FILE.npz".
"""

from __future__ import annotations

import onnx

DEFAULT_DOMAINS = ("", "ai.onnx")
INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                 onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}

# (op, port) -> (what the port is, what zeros do there). A port listed here is refused when a
# guessed zero reaches it; ``integer_only``: only when the value there is an integer (a float
# division by zero is an infinity, which the proof handles).
KILLERS: dict[tuple[str, int], tuple[str, str]] = {
    ("Col2Im", 2): ("the block shape", "zeros kill ONNX Runtime with SIGFPE"),
    ("STFT", 3): ("the frame length", "zeros kill ONNX Runtime with SIGFPE"),
    ("Div", 1): ("the integer divisor", "zeros kill ONNX Runtime with SIGFPE"),
    ("Mod", 1): ("the integer divisor", "zeros kill ONNX Runtime with SIGFPE"),
    ("ReverseSequence", 1): ("the sequence lengths", "on zeros ONNX Runtime returns memory it never wrote"),
}


def _kills(node: onnx.NodeProto, port: int) -> bool:
    if (node.op_type, port) not in KILLERS:
        return False
    if node.op_type == "Mod":   # fmod=1 divides in floating point: a zero gives NaN, no signal
        return not any(a.name == "fmod" and a.i for a in node.attribute)
    return True


def _keeps_zeros(node: onnx.NodeProto, port: int) -> bool:
    """Whether ``node``'s outputs hold only zeros (or nothing) when its input at ``port`` is all
    zeros: the value flows on unchanged, or is selected from, or multiplied."""
    op = node.op_type
    if op in ("Identity", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Concat", "Neg", "Abs", "Mul",
              "ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "Split", "Expand", "Tile",
              "Slice", "Gather", "GatherElements", "GatherND", "Reshape", "Compress", "DepthToSpace",
              "SpaceToDepth", "Sign"):
        # data ports only: Reshape's target, Slice's bounds, Gather's indices are not what flows on
        return port == 0 or op in ("Concat", "Mul")
    if op == "Cast":   # to an integer type: zeros stay zeros; to float, the flow ends (no integer division)
        return any(a.name == "to" and a.i in INTEGER_TYPES for a in node.attribute)
    return False


def _nodes(graph: onnx.GraphProto):
    """Every node, those of If / Loop / Scan bodies too (a body reads outer values by name)."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            for body in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                         list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
                yield from _nodes(body)


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else f"the unnamed {node.op_type} (node {index})"


def unguessable(model: onnx.ModelProto, names) -> dict[str, str]:
    """Graph input name -> why its guessed zeros cannot be run (the port they reach), for those of
    ``names`` (defaulted integer or boolean inputs) whose zeros reach a ``KILLERS`` port."""
    names = list(names)
    if not names:
        return {}
    nodes = [n for n in _nodes(model.graph) if n.domain in DEFAULT_DOMAINS]
    consumers: dict[str, list[tuple[int, onnx.NodeProto, int]]] = {}
    for i, node in enumerate(nodes):
        for port, value in enumerate(node.input):
            if value:
                consumers.setdefault(value, []).append((i, node, port))
    found = {}
    for name in names:
        seen, todo = {name}, [name]
        while todo and name not in found:
            for i, node, port in consumers.get(todo.pop(), ()):
                if _kills(node, port):
                    what, effect = KILLERS[(node.op_type, port)]
                    via = "" if node.input[port] == name else f" (through {node.input[port]!r})"
                    found[name] = f"sets {what} of {_label(node, i)}{via}; its values cannot be guessed ({effect})"
                    break
                if _keeps_zeros(node, port):
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            todo.append(out)
    return found

