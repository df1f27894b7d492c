"""Write passes/newer_opsets.py: what each default-domain opset above 21 changed, op by op.

    /work/venvs/jax/bin/python tools/newer_opsets.py [--check]      # a newer onnx (1.23.2: opset 28, IR 14)

ONNX Runtime 1.19.2 (the proof) runs opset <= 21; the project's onnx 1.17 knows schemas up to 22.
The knowledge of 22..28 comes from the newer onnx running this script: for every default-domain
op with a ``since_version`` in 22..MAX, its schema is compared with the version before it
(inputs and outputs: names, options, type strings; attributes: names, types, required, defaults;
type constraints; min/max arity) and the spec texts (the doc, the descriptions of attributes,
inputs and outputs) are diffed. A bump is

- ``"new"``: the op does not exist at 21 (nor at any version before this one);
- ``"types"``: only element types were added to (or removed from) its type constraints, or only a
  function body was added, and its spec text changed at most in the type constraints' wording;
- ``"attribute NAME"``: reviewed by a person (REVIEWED below, with why): NAME was added and its
  absence keeps the old semantics; a node that sets it is refused. ``"attribute NAME=V"``: NAME
  existed, and only a node that sets it to anything but V sees the change;
- ``"changed"``: anything else, including every bump whose spec text changed and that no person
  reviewed: refused.

A bump the automatic diff does not call ``"types"``, or whose spec text changed outside the type
constraints, must be in REVIEWED, or the script stops: a newer onnx adds bumps nobody has read.
``--check`` writes nothing and exits 1 when the committed module differs from what it would write.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import onnx
import onnx.defs

BASE = 21  # the highest opset ONNX Runtime 1.19.2 runs
OUT = Path(__file__).resolve().parent.parent / "passes" / "newer_opsets.py"

# (op, version) -> (decision, why). Every entry was decided after reading both versions' spec
# text in onnx 1.23.2 (onnx.defs.get_schema(op, v).doc and the attribute/input descriptions).
REVIEWED: dict[tuple[str, int], tuple[str, str]] = {
    # pooling: the text adds "Sliding windows that would start in the right padded region are
    # ignored", and onnx's shape inference agrees (kernel 2, stride 2, pads [0,1], ceil_mode=1 on
    # 4 elements: 3 outputs at 21, 2 at 22; LpPool too, though its text says nothing): a change of
    # the output shape under ceil_mode=1 only
    ("AveragePool", 22): ("attribute ceil_mode=0", "with ceil_mode=1 a window starting in the right padding is dropped"),
    ("MaxPool", 22): ("attribute ceil_mode=0", "with ceil_mode=1 a window starting in the right padding is dropped"),
    ("LpPool", 22): ("attribute ceil_mode=0", "with ceil_mode=1 a window starting in the right padding is dropped"),
    # the text now defines shifts by >= the bit width and adds signed types (arithmetic shift):
    # what 11 left undefined is defined now
    ("BitShift", 28): ("changed", "shifts by the bit width or more are defined now, 11 left them undefined"),
    # round_mode applies only to casts to float8e8m0 (a type <= 21 lacks, refused anyway); the
    # saturation of +-Inf to the FNUZ float8 types changed from NaN to +-FLT_MAX: TYPES_CHANGED
    ("Cast", 24): ("attribute round_mode", "round_mode is for float8e8m0"),
    ("CastLike", 24): ("attribute round_mode", "round_mode is for float8e8m0"),
    # only the types constraint's wording ("float32 tensors" -> "float tensors": double, float16,
    # bfloat16 added) and a function body for the new types
    ("Celu", 28): ("types", ""),
    # no text change: a context-dependent function body was added (runtimes without a kernel
    # can expand it); the semantics are the same
    ("DepthToSpace", 28): ("types", ""),
    # output_dtype absent: "the output type is the same as x_scale", as at 21
    ("DequantizeLinear", 23): ("attribute output_dtype", "output_dtype sets the output type, the old op took x_scale's"),
    # the ratio input's text drops "If this input was not set" from the copy case; not set, it
    # defaults to 0.5 at 13 too (and inference mode is a copy at both)
    ("Dropout", 22): ("types", ""),
    # a garbled sentence about a missing input removed (the input is required at both)
    ("EyeLike", 22): ("types", ""),
    # a typo ("hidde_size")
    ("LSTM", 22): ("types", ""),
    # fmod=0 on floating-point inputs is defined now (floor division); 13 constrained fmod=0 to
    # integers. The rest reads the same, but which types a node sees is not known here: refused
    ("Mod", 28): ("changed", "fmod=0 on floating-point inputs is defined now (13 allowed integers only)"),
    # x and y_scale may differ in type now (strict shape inference at 21 refuses a node that
    # uses it: T1 binds both); precision absent: "the same as the type of y_scale", as at 21
    ("QuantizeLinear", 23): ("attribute precision", "precision sets the division's type, the old op used y_scale's"),
    ("QuantizeLinear", 24): ("types", ""),  # a missing space
    ("QuantizeLinear", 25): ("types", ""),  # the ranges of int2/uint2 listed
    ("QuantizeLinear", 28): ("types", ""),  # saturate: no effect on the new float4/float6 types
    # stash_type defaults to 1 (float): float16 ranges now accumulate in float32, which 11 did
    # not; absent, the new semantics apply, so an absent attribute is no proof
    ("Range", 27): ("changed", "float16 ranges accumulate in float32 by default now (stash_type)"),
    # integer types removed from the constraint; an integer node at 28 is invalid there
    ("ReduceLogSum", 28): ("types", ""),
    ("ReduceLogSumExp", 28): ("types", ""),
    # mode added, "DCR (the default)", which is what 13 does; set (even to DCR), the checker at 21 rejects it
    ("SpaceToDepth", 28): ("attribute mode", "mode=CRD orders the blocks column-row-depth (DCR, the default, is 13's)"),
    # "List of integers" -> "1D tensor of integers" for the axes input (it is a tensor at 21 too)
    ("Squeeze", 23): ("types", ""),
    ("Unsqueeze", 23): ("types", ""),
    # perm's text: "each value must be in the range [0, rank-1]" (it was a permutation at 21 too)
    ("Transpose", 25): ("types", ""),
}

# element types whose semantics changed from an opset on, in any op (a model at that opset using
# one anywhere is refused): Cast 24 saturates +-Inf to +-FLT_MAX for the FNUZ float8 types where
# 21 gave NaN (the text's first table), and Cast's table is what QuantizeLinear's saturate means
TYPES_CHANGED = {24: ("FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ")}

IR10_TYPES = 22  # INT4: the last element type of IR 10 (onnx 1.17)

_TYPE_WORDS = ("TC ",)


def signature(s) -> dict:
    return {
        "inputs": [(i.name, int(i.option), i.type_str, i.is_homogeneous) for i in s.inputs],
        "outputs": [(o.name, int(o.option), o.type_str, o.is_homogeneous) for o in s.outputs],
        "attributes": {k: (int(a.type), a.required, a.default_value.SerializeToString()) for k, a in s.attributes.items()},
        "arity": (s.min_input, s.max_input, s.min_output, s.max_output),
    }


def types_of(s) -> dict:
    return {t.type_param_str: sorted(t.allowed_type_strs) for t in s.type_constraints}


def text(s) -> list[str]:
    return ((s.doc or "").splitlines() + [f"ATTR {k}: {a.description}" for k, a in sorted(s.attributes.items())]
            + [f"IN {i.name}: {i.description}" for i in s.inputs] + [f"OUT {o.name}: {o.description}" for o in s.outputs]
            + [f"TC {t.type_param_str}: {t.description}" for t in s.type_constraints])


def bumps(top: int) -> dict[str, dict[int, str]]:
    """op -> {version: decision} for every default-domain bump in BASE+1..top."""
    names = sorted({s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == ""})
    out: dict[str, dict[int, str]] = {}
    unread = []
    for name in names:
        for v in range(BASE + 1, top + 1):
            try:
                s = onnx.defs.get_schema(name, v, "")
            except onnx.defs.SchemaError:
                continue
            if s.since_version != v:
                continue
            try:
                prev = onnx.defs.get_schema(name, v - 1, "")
            except onnx.defs.SchemaError:
                prev = None
            if prev is None or prev.deprecated:
                out.setdefault(name, {})[v] = "new"
                continue
            if out.get(name, {}) and "new" in out[name].values():
                out[name][v] = "new"
                continue
            same = signature(prev) == signature(s)
            words = [ln for ln in difflib.unified_diff(text(prev), text(s), lineterm="", n=0)
                     if not ln.startswith(("---", "+++", "@@")) and not ln[1:].startswith(_TYPE_WORDS)]
            if (name, v) in REVIEWED:
                out.setdefault(name, {})[v] = REVIEWED[name, v][0]
            elif same and not words:
                out.setdefault(name, {})[v] = "types"
            else:
                unread.append(f"{name} {prev.since_version}->{v}" + ("" if same else " (schema)") + (" (text)" if words else ""))
    stale = sorted(f"{op} {v}" for op, v in REVIEWED if v not in out.get(op, {}))
    if stale:
        raise SystemExit("REVIEWED names bumps this onnx does not have: " + ", ".join(stale))
    if unread:
        raise SystemExit("bumps nobody has reviewed (add them to REVIEWED after reading the spec text): " + ", ".join(unread))
    return out


PROTOS = ("ModelProto", "GraphProto", "NodeProto", "AttributeProto", "ValueInfoProto", "FunctionProto",
          "OperatorSetIdProto", "TypeProto")


def fields() -> dict[str, dict[int, str]]:
    """message -> {field number: name} of the messages whose unknown fields support.py looks for."""
    from onnx import onnx_ml_pb2

    return {m: {f.number: f.name for f in onnx_ml_pb2.DESCRIPTOR.message_types_by_name[m].fields} for m in PROTOS}


def wrapped(head: str, items: list[str], tail: str, width: int = 110) -> str:
    """``head`` + the items joined by ", " in lines of at most ``width`` + ``tail``."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "")
        if len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = " " * 8
        line += piece
    return "\n".join(lines + [line + tail])


def module() -> str:
    top = onnx.defs.onnx_opset_version()
    ops = bumps(top)
    why = {f"{op} {v}": reason for (op, v), (_, reason) in sorted(REVIEWED.items()) if reason}
    lines = [
        '"""What each default-domain opset above 21 changed, op by op: written by tools/newer_opsets.py',
        f"under onnx {onnx.__version__} (opset {top}, IR version {onnx.IR_VERSION}); do not edit, re-run it.",
        "",
        'op -> {version: change}: "types" (only element types added or removed), "new" (no such op at 21),',
        '"attribute NAME" (added; a node that sets it is refused), "attribute NAME=V" (a node that sets it to',
        'anything but V is refused), "changed" (refused). WHY: the reason of each reviewed refusal; TYPES_CHANGED:',
        'element types whose semantics changed from an opset on (a model at that opset using one is refused)."""',
        "",
        f"SOURCE = {('onnx ' + onnx.__version__)!r}",
        f"MAX_OPSET = {top}",
        f"MAX_IR_VERSION = {onnx.IR_VERSION}",
        f"TYPES_CHANGED = {TYPES_CHANGED!r}",
        "",
        "# element type numbers -> names, for the types onnx 1.17 (IR 10) does not know",
        f"TYPE_NAMES = {dict(sorted((v, k) for k, v in onnx.TensorProto.DataType.items() if v > IR10_TYPES))!r}",
        "",
        "# the protos' fields by number, to name one that onnx 1.17 (IR 10) reads as unknown",
        "FIELDS = {",
        *(wrapped(f"    {m!r}: {{", [f"{n}: {name!r}" for n, name in sorted(f.items())], "},")
          for m, f in fields().items()),
        "}",
        "",
        "OPS = {",
    ]
    for op in sorted(ops):
        lines.append(f"    {op!r}: {{" + ", ".join(f"{v}: {d!r}" for v, d in sorted(ops[op].items())) + "},")
    lines += ["}", "", "WHY = {"]
    lines += [f"    {k!r}: {v!r}," for k, v in why.items()]
    lines += ["}", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed module; write nothing")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    text_ = module()
    if args.check:
        same = args.out.exists() and args.out.read_text() == text_
        print("up to date" if same else f"{args.out} differs from what onnx {onnx.__version__} gives")
        return 0 if same else 1
    args.out.write_text(text_)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
