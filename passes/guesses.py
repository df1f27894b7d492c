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

Value flow: a guess is all zeros, and its zeros reach a port through ops whose output holds them
(Identity, Cast to an integer type, Squeeze, Unsqueeze, Concat, Mul...: ``_CARRY``) or is all zeros
when their input is (Gather of it, ReduceSum, Slice...: ``_SELECT``). Arithmetic that may turn zeros
into other numbers (Add, Sub, Max, a Cast to float) ends the flow: token ids (Gather of an
embedding table) and attention masks (cast to float, then divided) are not refused. A caller's
integer array holding a zero that reaches such a port through ``_CARRY`` ops is refused too
(``zero_given``): ONNX Runtime would die on it the same way.

Example: ``block_shape`` int64[2] -> Col2Im port 2: "input 'block_shape' of m.onnx sets the block
shape of Col2Im 'fold'; its values cannot be guessed (zeros kill ONNX Runtime with SIGFPE): give
them with --inputs FILE.npz".
"""

from __future__ import annotations

import numpy as np
import onnx

from ir.bodies import all_nodes

DEFAULT_DOMAINS = ("", "ai.onnx")
INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                 onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}

# (op, port) -> (what the port is, what zeros do there). A port listed here is refused when a
# guessed zero reaches it; Div and Mod only for an integer type ORT has that kernel for (a float
# division by zero is an infinity, which the proof handles): ``_kills``.
KILLERS: dict[tuple[str, int], tuple[str, str]] = {
    ("Col2Im", 2): ("the block shape", "zeros kill ONNX Runtime with SIGFPE"),
    ("STFT", 3): ("the frame length", "zeros kill ONNX Runtime with SIGFPE"),
    ("Div", 1): ("the integer divisor", "zeros kill ONNX Runtime with SIGFPE"),
    ("Mod", 1): ("the integer divisor", "zeros kill ONNX Runtime with SIGFPE"),
    ("ReverseSequence", 1): ("the sequence lengths", "on zeros ONNX Runtime returns memory it never wrote"),
}


_KILLER_OPS = {op for op, _ in KILLERS}


def _kills(node: onnx.NodeProto, port: int, elem_type: int) -> bool:
    """Whether a zero of ``elem_type`` at ``node``'s input ``port`` kills ONNX Runtime."""
    if (node.op_type, port) not in KILLERS:
        return False
    if node.op_type == "Div":   # ORT's CPU Div has int32 and int64 kernels; another integer type does not load
        return elem_type in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    if node.op_type == "Mod":   # fmod=1 divides in floating point: a zero gives NaN, no signal
        return elem_type in INTEGER_TYPES and not any(a.name == "fmod" and a.i for a in node.attribute)
    return True


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


# ops whose output holds every element of the input at ``port`` (a zero in stays a zero out)
_CARRY = {"Identity": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Flatten": (0,), "Transpose": (0,), "Reshape": (0,),
          "Expand": (0,), "Tile": (0,), "Concat": None, "Neg": (0,), "Abs": (0,), "Mul": None, "Sign": (0,),
          "DepthToSpace": (0,), "SpaceToDepth": (0,)}
# ops whose output is all zeros (or empty) when their input at ``port`` is all zeros: they select
# from it or reduce it
_SELECT = {"ReduceSum": (0,), "ReduceMax": (0,), "ReduceMin": (0,), "ReduceMean": (0,), "ReduceProd": (0,),
           "Split": (0,), "Slice": (0,), "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Compress": (0,)}


def _flows(node: onnx.NodeProto, port: int, all_zeros: bool) -> bool:
    """Whether a zero at ``node``'s input ``port`` is still a zero in its outputs: every zero
    (``_CARRY``: data ports only, Reshape's target or Gather's indices are not what flows on), or,
    when the input is all zeros (a guess), the whole output (``_SELECT``). A Cast carries zeros to
    an integer type; to float the flow ends (no integer division follows)."""
    op = node.op_type
    if op == "Cast":
        return _cast_to(node) in INTEGER_TYPES
    for table in (_CARRY, _SELECT) if all_zeros else (_CARRY,):
        if op in table:
            return table[op] is None or port in table[op]
    return False


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else f"the unnamed {node.op_type} (node {index})"


def _reached(model: onnx.ModelProto, names, all_zeros: bool) -> dict[str, tuple[str, str]]:
    """Input name -> the ``KILLERS`` port its zeros reach (the first found, and through what),
    and what zeros do there. The element type is followed along (a Cast changes it)."""
    nodes = [n for n in all_nodes(model.graph) if n.domain in DEFAULT_DOMAINS]  # bodies read outer values by name
    if not any(n.op_type in _KILLER_OPS for n in nodes):   # most models: no trail to follow
        return {}
    consumers: dict[str, list[tuple[int, onnx.NodeProto, int]]] = {}
    for i, node in enumerate(nodes):
        for port, value in enumerate(node.input):
            if value:
                consumers.setdefault(value, []).append((i, node, port))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    found = {}
    for name in names:
        seen, todo = {name}, [(name, types.get(name, 0))]
        while todo and name not in found:
            value, elem_type = todo.pop()
            for i, node, port in consumers.get(value, ()):
                if _kills(node, port, elem_type):
                    what, effect = KILLERS[(node.op_type, port)]
                    via = "" if node.input[port] == name else f" (through {node.input[port]!r})"
                    found[name] = (f"sets {what} of {_label(node, i)}{via}", effect)
                    break
                if _flows(node, port, all_zeros):
                    out_type = _cast_to(node) if node.op_type == "Cast" else elem_type
                    for out in node.output:
                        if out and out not in seen:
                            seen.add(out)
                            todo.append((out, out_type))
    return found


def unguessable(model: onnx.ModelProto, names) -> dict[str, str]:
    """Graph input name -> why its guessed zeros cannot be run (the port they reach), for those of
    ``names`` (defaulted integer or boolean inputs) whose zeros reach a ``KILLERS`` port."""
    names = list(names)
    if not names:
        return {}
    return {name: f"{where}; its values cannot be guessed ({effect})"
            for name, (where, effect) in _reached(model, names, all_zeros=True).items()}


def zero_given(model: onnx.ModelProto, given: dict) -> dict[str, str]:
    """Given input name -> why it cannot be run: an integer array holding a zero that reaches a
    ``KILLERS`` port unchanged (through Identity, Cast to an integer, Unsqueeze, Concat, Mul...)."""
    zeros = [n for n, a in given.items()
             if np.asarray(a).dtype.kind in "iub" and np.asarray(a).size and not np.asarray(a).all()]
    if not zeros:
        return {}
    return {name: f"{where}, and it holds a zero there ({effect})"
            for name, (where, effect) in _reached(model, zeros, all_zeros=False).items()}
