"""The pass protocol.

A pass is a frozen dataclass whose fields are its options, so a textual spec parses into it and
prints back from it for free: ``mask{ratio=0.5 round-to=8}`` is ``MaskPass(ratio=0.5, round_to=8)``.
Analyses (``requires`` / ``provides``) are typed objects kept in the ``PassContext``; a pass that
changed the IR drops every analysis except those it provides.

Example::

    @dataclass(frozen=True)
    class CountConvs(Pass):
        name: ClassVar[str] = "count-convs"
        def run(self, ir, ctx):
            n = sum(1 for node in ir.nodes() if node.op_type == "Conv")
            return PassResult(changed=False, stats={"convs": n})
"""

from __future__ import annotations

import dataclasses
import typing
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from ir import Graph
from ir.collection import fewer_collections  # noqa: F401  (passes and pipeline take it from here)


@dataclass
class PassResult:
    changed: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class PassError(RuntimeError):
    """A pass could not do its job on this model; the message is one line for the user."""


class SpecError(ValueError):
    """A malformed spec, unknown pass or option, or an option value out of range (exit 2)."""


class PipelineError(RuntimeError):
    """A pass failed on this model; the message names it and the passes before it (exit 1)."""


@dataclass
class PassContext:
    """Typed analyses by type, the model as it was before any pass (for validation), and
    the options of the run that are not a pass's (seed, sample inputs)."""

    original: onnx.ModelProto | None = None
    weights: dict | None = None    # the original's large weights when it holds none (``ir.hollow``)
    seed: int = 0
    sample_inputs: dict | None = None   # the caller's arrays by input name (all or some)
    input_shapes: dict | None = None    # the caller's shapes by input name (fix symbolic dims)
    inputs: Any = None                  # ``inputs.ProofInputs``: the feeds every run uses
    train_data: Any = None     # for `finetune`: a path, (x, y) arrays, or (x, y) batches
    val_data: Any = None
    calib_data: Any = None     # for data criteria (hrank, taylor): a .npz path (x, optional y) or arrays
    # the static shapes `tag` established on the model as given (before any transform): the
    # report's FLOPs of the original read them instead of computing them again
    original_shapes: Any = None
    analyses: dict[type, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)

    def get(self, kind: type):
        if kind not in self.analyses:
            raise PassError(f"analysis {kind.__name__} is not available")
        return self.analyses[kind]

    def has(self, kind: type) -> bool:
        return kind in self.analyses

    def put(self, analysis: Any) -> None:
        self.analyses[type(analysis)] = analysis

    def invalidate(self, keep: tuple[type, ...] = ()) -> None:
        self.analyses = {k: v for k, v in self.analyses.items() if k in keep}


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""
    requires: ClassVar[tuple[type, ...]] = ()
    provides: ClassVar[tuple[type, ...]] = ()
    # analyses that survive this pass even when it changed the IR (besides those it provides)
    preserves: ClassVar[tuple[type, ...]] = ()

    def run(self, ir: Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError(f"pass {self.name!r} does not implement run()")


# --------------------------------------------------------------------------- options as text
def option_fields(cls: type[Pass]) -> dict[str, dataclasses.Field]:
    """A pass's options: its init fields, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


_PLAIN_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def option_types(cls: type[Pass], fields: dict[str, dataclasses.Field]) -> dict[str, Any]:
    """Option types of a pass; a user's pass defined where its string annotations cannot be
    resolved (a script, exec'd code) still gets its plain types. Resolved once per class (every spec parse asks)."""
    if cls in _HINTS:
        return _HINTS[cls]
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {n: _PLAIN_TYPES.get(f.type, f.type) if isinstance(f.type, str) else f.type
                 for n, f in fields.items()}
    _HINTS[cls] = hints
    return hints


_HINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def parse_option(text: str, hint, where: str):
    """An option's value from its text in a spec (``where`` names it in the error)."""
    origin = typing.get_origin(hint)
    try:
        if hint is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if hint in (int, float, str):
            return hint(text)
        if origin is tuple:
            return tuple(t for t in text.split(",") if t)
        if origin is dict:
            out = {}
            for item in (t for t in text.split(",") if t):
                key, _, val = item.rpartition(":")
                if not key:
                    raise ValueError(item)
                out[key] = float(val)
            return out
    except ValueError:
        raise SpecError(f"{where}: cannot read {text!r} as {getattr(hint, '__name__', hint)}") from None
    raise SpecError(f"{where}: unsupported option type {hint}")


def format_option(value) -> str:
    """An option's value as a spec writes it (``parse_option`` reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v:g}" for k, v in sorted(value.items()))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)



