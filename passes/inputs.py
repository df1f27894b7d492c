"""Proof inputs: what every run of the model is fed (shape discovery, data criteria, the proof).

A caller may give arrays by exact input name (``sample_inputs``, ``--inputs FILE.npz``) and
shapes that fix symbolic dims (``input_shapes``, ``--input-shape NAME:D1,D2``). Every other input
gets a default: a fixed-shape input as declared; a symbolic dim one value per dim *name* (dims that
share a name share a value, also with the given arrays), the batch axis 2, the others ``size``
(tried 16, 32, 64, 128, 224 until the model runs); floats seeded normal, integers and booleans
zeros, but an ``attention_mask`` / ``input_mask`` ones (Hugging Face's meaning: 1 attends; zeros
would mask every token, and a mean pooling over that mask gives zeros a proof cannot read). When ONNX Runtime rejects the model on them, one line names the input it rejected and says
to pass ``--inputs``. An integer input whose zeros would reach a port where ONNX Runtime dies in
native code (Col2Im's block shape, an integer divisor: ``guesses.KILLERS``) gets no default: one
line names it and the port before anything runs (``refuse_guesses``).

Example: ``x[batch, 3, H, W]`` and ``state[2, batch, 64]`` with ``input_shapes={"x": [1, 3, 32,
32]}`` -> ``x`` float32 [1, 3, 32, 32] (normal), ``state`` float32 [2, 1, 64]: ``batch`` is 1 for
both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx

from ir import filled

from .base import PassError
from .guesses import unguessable, zero_given

# sizes tried, in order, for symbolic non-batch dims until the original model runs on them (a
# detector's FPN needs sides divisible by 32, a text recognizer a minimum width)
SYMBOLIC_SIZES = (16, 32, 64, 128, 224)
BATCH = 2
INPUTS_HINT = "pass the inputs it needs with --inputs FILE.npz (arrays by input name) or --input-shape NAME:D1,D2,..."


class InputsError(PassError):
    """Given inputs that do not fit the model, or a model ONNX Runtime cannot run on its inputs."""


@dataclass(frozen=True)
class ProofInputs:
    """The feeds every run uses, and where each came from (``given``, ``input-shape``, ``default``)."""

    feeds: dict[str, np.ndarray]
    origin: dict[str, str] = field(default_factory=dict)
    size: int = SYMBOLIC_SIZES[0]     # the value of symbolic non-batch dims the caller left open

    def given(self) -> dict[str, np.ndarray]:
        return {n: a for n, a in self.feeds.items() if self.origin.get(n) == "given"}

    def shapes(self) -> dict[str, list[int]]:
        return {n: list(np.shape(a)) for n, a in self.feeds.items() if self.origin.get(n) == "input-shape"}

    def report(self) -> dict:
        """The report's ``inputs``: name -> shape, dtype and where it came from."""
        return {name: {"shape": [int(d) for d in np.shape(a)], "dtype": str(np.asarray(a).dtype),
                       "from": self.origin.get(name, "default")}
                for name, a in self.feeds.items()}

    def describe(self) -> str:
        return ", ".join(f"{n} {np.asarray(a).dtype}[{','.join(map(str, np.shape(a)))}]"
                         + ((" ones" if attends(n) else " zeros")
                            if self.origin.get(n) == "default" and np.asarray(a).dtype.kind in "iub" else "")
                         for n, a in self.feeds.items())


def fed_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs a caller feeds: not initializers (an initializer listed among the inputs is
    a weight in old-style files and an overridable default in new ones: either way not fed)."""
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits]


def _declared(vi: onnx.ValueInfoProto) -> list:
    """Declared dims: an int, a dim name, or None (unnamed; -1 or 0 as Paddle writes it)."""
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _dtype(vi: onnx.ValueInfoProto) -> np.dtype | None:
    if not vi.type.HasField("tensor_type"):
        return None
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))


def _show(dims) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def check_given(model: onnx.ModelProto, given: dict | None, shapes: dict | None, where: str = "the model") -> None:
    """Refuse, in one line, a given array or shape for an input the model does not have, of the
    wrong dtype or rank, or disagreeing with a fixed dim the model declares."""
    inputs = {vi.name: vi for vi in fed_inputs(model)}
    known = ", ".join(inputs) or "none"
    for kind, table in (("inputs", given), ("input shape", shapes)):
        for name in table or {}:
            if name not in inputs:
                raise InputsError(f"{kind}: {where} has no input {name!r}; its inputs: {known}")
    for name, dims in (shapes or {}).items():
        dims = list(dims)
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
            raise InputsError(f"input shape {name!r}: dims must be non-negative integers, got {dims}")
        _check_dims(name, dims, _declared(inputs[name]), "input shape", "given")
    for name, arr in (given or {}).items():
        arr = np.asarray(arr)
        want = _dtype(inputs[name])
        if want is not None and arr.dtype != want and not (arr.dtype.kind in "US" and want == object):
            raise InputsError(f"inputs: {name!r} has dtype {arr.dtype}, {where} takes {want}")
        _check_dims(name, list(arr.shape), _declared(inputs[name]), "inputs", "has")
        if shapes and name in shapes and list(shapes[name]) != list(arr.shape):
            raise InputsError(f"inputs: {name!r} has shape {list(arr.shape)}, its --input-shape says {list(shapes[name])}")


def _check_dims(name: str, dims: list, declared, kind: str, verb: str) -> None:
    if declared is None:
        return
    if len(dims) != len(declared):
        raise InputsError(f"{kind}: {name!r} {verb} rank {len(dims)} (shape {dims}), the model takes "
                          f"rank {len(declared)} {_show(declared)}")
    for got, want in zip(dims, declared):
        if isinstance(want, int) and got != want:
            raise InputsError(f"{kind}: {name!r} {verb} shape {dims}, the model takes {_show(declared)}")


def make_inputs(model: onnx.ModelProto, seed: int = 0, given: dict | None = None,
                shapes: dict | None = None, size: int = SYMBOLIC_SIZES[0], batch: int = BATCH,
                where: str = "the model") -> ProofInputs:
    """Feeds for every fed input (see the module docstring); ``given`` and ``shapes`` are
    assumed checked (``check_given``). An integer input whose zeros would reach a port where
    ONNX Runtime dies on them (``guesses.KILLERS``: Col2Im's block shape, an integer divisor...)
    is refused in one ``InputsError`` line naming it and the port: no feeds, so no run."""
    given, shapes = dict(given or {}), dict(shapes or {})
    refuse_guesses(model, given, where)
    inputs = fed_inputs(model)
    named: dict[str, int] = {}   # dim name -> value, from given arrays and shapes first
    for vi in inputs:
        declared = _declared(vi) or []
        fixed = list(np.shape(given[vi.name])) if vi.name in given else shapes.get(vi.name)
        if fixed is not None:
            for d, v in zip(declared, fixed):
                if isinstance(d, str):
                    named.setdefault(d, int(v))
    for vi in inputs:  # a name on some input's batch axis is the batch everywhere
        declared = _declared(vi) or []
        if declared and isinstance(declared[0], str):
            named.setdefault(declared[0], batch)
    rng = np.random.default_rng(seed)
    feeds, origin = {}, {}
    for vi in inputs:
        if vi.name in given:
            feeds[vi.name], origin[vi.name] = np.asarray(given[vi.name]), "given"
            continue
        declared = _declared(vi)
        if vi.name in shapes:
            dims, origin[vi.name] = [int(d) for d in shapes[vi.name]], "input-shape"
        else:
            dims, origin[vi.name] = [], "default"
            for i, d in enumerate(declared or []):
                if isinstance(d, int):
                    dims.append(d)
                elif isinstance(d, str):
                    dims.append(named.setdefault(d, batch if i == 0 else size))
                else:
                    dims.append(batch if i == 0 else size)
        dtype = _dtype(vi) or np.dtype(np.float32)
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype.kind == "c":
            feeds[vi.name] = (rng.standard_normal(dims) + 1j * rng.standard_normal(dims)).astype(dtype)
        elif dtype == object:
            feeds[vi.name] = np.full(dims, "", dtype=object)
        elif attends(vi.name):  # Hugging Face's attention mask: every token attended
            feeds[vi.name] = np.ones(dims, dtype)
        else:  # integers (token ids, lengths, a sample rate) and booleans: zeros
            feeds[vi.name] = np.zeros(dims, dtype)
    return ProofInputs(feeds, origin, size)


_ATTENDS = re.compile(r"(^|[_./:])(attention|input)_mask(s)?$", re.I)


def attends(name: str) -> bool:
    """An integer or boolean input named as Hugging Face names its attention mask (1: attend), which
    is guessed as ones."""
    return bool(_ATTENDS.search(name))


def refuse_guesses(model: onnx.ModelProto, given: dict | None = None, where: str = "the model") -> None:
    """One ``InputsError`` line for the first integer or boolean input not in ``given`` whose
    zeros reach a port where ONNX Runtime dies on them (``guesses.unguessable``), or a given
    array whose zero reaches one unchanged (``guesses.zero_given``). ``model`` must hold the
    nodes (a model of inputs alone has no port to reach)."""
    given = given or {}
    zeros = [vi.name for vi in fed_inputs(model)
             if vi.name not in given and _dtype(vi) is not None and _dtype(vi).kind in "iub" and not attends(vi.name)]
    for name, why in unguessable(model, zeros).items():
        raise InputsError(f"input {name!r} of {where} {why}: give its values with --inputs FILE.npz "
                          f"(arrays by input name)")
    for name, why in zero_given(model, given).items():
        raise InputsError(f"inputs: {name!r} of {where} {why}: give values without zeros there")


def sample_inputs(model: onnx.ModelProto, seed: int = 0, size: int = SYMBOLIC_SIZES[0]) -> dict[str, np.ndarray]:
    """The default feeds alone (``make_inputs`` with nothing given)."""
    return make_inputs(model, seed, size=size).feeds


def context_inputs(ctx, model: onnx.ModelProto) -> ProofInputs:
    """The feeds of this run: those ``prune`` resolved, else made from the caller's arrays and
    shapes (no run: a pipeline run directly)."""
    if ctx.inputs is not None:
        return ctx.inputs
    return make_inputs(model, ctx.seed, ctx.sample_inputs, ctx.input_shapes)


def all_fixed(model: onnx.ModelProto, given: dict | None = None, shapes: dict | None = None) -> bool:
    """Whether every fed input's shape is known: declared static, given, or fixed by a shape."""
    given, shapes = given or {}, shapes or {}
    return all(vi.name in given or vi.name in shapes or
               (_declared(vi) is not None and all(isinstance(d, int) for d in _declared(vi)))
               for vi in fed_inputs(model))


def symbolic(model: onnx.ModelProto, given: dict | None = None, shapes: dict | None = None) -> bool:
    """Whether a defaulted input has a dim that takes the tried ``size``: a symbolic dim off
    the batch axis whose name (if any) no given array or shape and no batch axis fixes."""
    given, shapes = given or {}, shapes or {}
    fixed = set()
    for vi in fed_inputs(model):
        for i, d in enumerate(_declared(vi) or []):
            if isinstance(d, str) and (i == 0 or vi.name in given or vi.name in shapes):
                fixed.add(d)
    return any(not isinstance(d, int) and d not in fixed
               for vi in fed_inputs(model) if vi.name not in given and vi.name not in shapes
               for d in (_declared(vi) or [])[1:])


def probe_inputs(model: onnx.ModelProto, seed: int = 0, given: dict | None = None,
                 shapes: dict | None = None, where: str = "the model before pruning",
                 run=None) -> tuple[ProofInputs, list | None]:
    """The first default inputs ``model`` runs on in ONNX Runtime (sizes tried for symbolic
    dims), with the outputs of that run; one ``InputsError`` line naming what ORT rejected when
    it runs on none. ``run(model, feeds)`` defaults to ``runtime.run_model`` (quiet)."""
    if run is None:
        from .runtime import run_model

        def run(m, feeds):
            return run_model(m, feeds, quiet=True)
    sizes = SYMBOLIC_SIZES if symbolic(model, given, shapes) else SYMBOLIC_SIZES[:1]
    first = None
    for size in sizes:
        proof = make_inputs(model, seed, given, shapes, size, where=where)
        try:
            return proof, run(model, proof.feeds)
        except Exception as exc:
            first = first or (proof, ort_message(exc))
    raise InputsError(rejection(model, first[0], first[1], where, sizes if len(sizes) > 1 else None))


LOAD_FAILURES = ("is not a registered function/op", "Could not find an implementation", "Load model from",
                 "Failed to load model", "Type Error:", "ValidateOpsetForDomain",
                 "[ShapeInferenceError]", "[TypeInferenceError]")  # at load: no feed seen yet


def _load_failure(message: str) -> bool:
    return any(p in message for p in LOAD_FAILURES) and "while running" not in message


def _short(message: str) -> str:
    message = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", message)
    return message if len(message) <= 300 else message[:297] + "..."


def ort_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _names_input(message: str, name: str) -> bool:
    """Whether ORT's message names this input: quoted, or as ``input: NAME`` / ``Name:NAME``
    (not just the word, which an input called ``input`` shares with every message)."""
    n = re.escape(name)
    return re.search(rf"(?:[Ii]nput:\s*{n}|Name:\s*{n}|'{n}'|\"{n}\"|\[{n}\])(?![\w./:-])", message) is not None


def rejection(model: onnx.ModelProto, proof: ProofInputs, message: str, where: str, sizes=None) -> str:
    """One line: the input ORT rejected (named in its message, else the inputs that were
    defaulted), what it was fed, ORT's reason, and the hint to pass ``--inputs``; or, when the
    model does not load at all (no inputs' fault), that it cannot be loaded."""
    if _load_failure(message):
        return f"ONNX Runtime cannot load {where}: {_short(message)}"
    names = [n for n in proof.feeds if _names_input(message, n)]
    tried = f"; symbolic sizes tried: {', '.join(map(str, sizes))}" if sizes else ""
    message = _short(message)
    if names:
        name = names[0]
        arr = np.asarray(proof.feeds[name])
        fed = f"{arr.dtype}[{','.join(map(str, arr.shape))}]" + ((" ones" if attends(name) else " zeros")
                                                                if proof.origin.get(name) == "default"
                                                                and arr.dtype.kind in "iub" else "")
        return (f"ONNX Runtime rejects input {name!r} of {where} ({proof.origin.get(name, 'default')} "
                f"{fed}{tried}): {message}; {INPUTS_HINT}")
    return (f"ONNX Runtime cannot run {where} on the inputs {proof.describe()}{tried}: {message}; "
            f"{INPUTS_HINT}")


# ----------------------------------------------------------------------------- the command line's words
class InputsUsageError(ValueError):
    """A malformed ``--input-shape`` (a usage error, exit 2)."""


def load_inputs(path) -> dict[str, np.ndarray]:
    """``--inputs FILE.npz``: arrays by exact input name, read with ``allow_pickle=False``."""
    from pathlib import Path

    if not Path(path).is_file():
        raise InputsError(f"{path}: no such inputs file (.npz with one array per input name)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("a single .npy array, not an .npz of arrays by input name")
            return {name: npz[name] for name in npz.files}
    except Exception as exc:
        raise InputsError(f"{path}: not an .npz of arrays by input name ({ort_message(exc)})") from None


def parse_input_shapes(items) -> dict[str, list[int]]:
    """``--input-shape NAME:D1,D2,...`` (repeatable; the last colon splits, so a name may hold
    colons, as tf2onnx's ``input:0``; ``NAME:`` is a scalar)."""
    shapes: dict[str, list[int]] = {}
    for text in items or ():
        name, colon, dims = text.rpartition(":")
        if not colon or not name:
            raise InputsUsageError(f"--input-shape {text!r}: expected NAME:D1,D2,... (e.g. x:1,3,224,224)")
        try:
            values = [int(d) for d in dims.split(",") if d.strip()] if dims.strip() else []
        except ValueError:
            raise InputsUsageError(f"--input-shape {text!r}: dims must be integers, e.g. {name}:1,3,224,224") from None
        if any(v < 0 for v in values):
            raise InputsUsageError(f"--input-shape {text!r}: dims must be non-negative")
        if name in shapes:
            raise InputsUsageError(f"--input-shape names {name!r} twice")
        shapes[name] = values
    return shapes


def resolve_inputs(model: onnx.ModelProto, where: str, seed: int = 0, given: dict | None = None,
                   shapes: dict | None = None, probe: bool = True, weights: dict | None = None,
                   run=None) -> ProofInputs:
    """The feeds of every run of a ``prune``: the caller's arrays and shapes checked (one line
    naming the input), the rest defaulted. With ``probe``, where a default is a guess (a size for
    a symbolic dim, zeros for an integer input) the model runs on them once now: a size is chosen,
    and an input ONNX Runtime rejects is named before any pass runs. Float inputs of known shape
    need no such run (a large model is not run once more; validate names a rejection then).
    ``weights``: the large weights of a ``hollow`` model, put back for that run; ``run(model,
    feeds)`` runs it instead (``probe_inputs``)."""
    check_given(model, given, shapes, where)
    if not probe or not guessed(model, given, shapes):
        return make_inputs(model, seed, given, shapes, where=where)
    return probe_inputs(model if run is not None else filled(model, weights), seed, given, shapes, where, run)[0]


def guessed(model: onnx.ModelProto, given: dict | None = None, shapes: dict | None = None) -> bool:
    """Whether some default is a guess: a size tried for a symbolic dim, or a non-float input."""
    given = given or {}
    return symbolic(model, given, shapes) or any(
        vi.name not in given and (_dtype(vi) is None or _dtype(vi).kind not in "fc") for vi in fed_inputs(model))


def run_inputs(inputs) -> dict:
    """``PassContext`` fields for a run fed ``inputs`` (a ``ProofInputs``, or a caller's dict)."""
    if isinstance(inputs, ProofInputs):
        return {"inputs": inputs, "sample_inputs": inputs.given(), "input_shapes": inputs.shapes()}
    return {"sample_inputs": inputs}
