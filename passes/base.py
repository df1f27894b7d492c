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

from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from ir import Graph


@dataclass
class PassResult:
    changed: bool = False
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class PassError(RuntimeError):
    """A pass could not do its job on this model; the message is one line for the user."""


@dataclass
class PassContext:
    """Typed analyses by type, the model as it was before any pass (for validation), and
    the options of the run that are not a pass's (seed, sample inputs)."""

    original: onnx.ModelProto | None = None
    seed: int = 0
    sample_inputs: dict | None = None
    train_data: Any = None     # for `finetune`: a path, (x, y) arrays, or (x, y) batches
    val_data: Any = None
    calib_data: Any = None     # for data criteria (hrank, taylor): a .npz path (x, optional y) or arrays
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
