"""What the command line shows that is more than a line: Graphviz trees, the op-type table
before/after, per-group widths, and the per-layer width chart (``prune --plot``). Text and files
from the API's results; no printing here (``cli.py`` prints)."""

from __future__ import annotations

import math
import os
import re
from collections import Counter

import onnx

from passes import progress
from passes.inputs import InputsError, make_inputs
from passes.runtime import WEIGHT_PORTS
from passes.contrib import CONTRIB, DEFUSED_KEY
from passes.support import CONVERTED_KEY, IR_KEY
from workflows import figures

ROLE_STYLE = {   # fill colour and shape by role in an association tree
    "root": ("#8ecae6", "box"),
    "leaf": ("#b7e4c7", "box"),
    "blocker": ("#f4a6a6", "octagon"),
    "inner": ("#ffffff", "ellipse"),
}


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def trees_to_dot(info: dict) -> str:
    """``inspect``'s trees as Graphviz: one cluster per group (coupled trees, which share their
    channels, in the same cluster, its label saying so; a blocked group outlined in red), one
    sub-cluster per tree; roots blue, leaves green, blockers red octagons, a legend."""
    def role(node: str, t: dict) -> str:   # in this tree (a leaf here may be another tree's root)
        if node in t["blockers"]:
            return "blocker"
        return "root" if node == t["root"] else "leaf" if node in t["leaves"] else "inner"

    lines = ["digraph trees {", "  rankdir=LR;", "  compound=true;",
             '  node [style=filled, fontsize=10, fontname="Helvetica"];', '  edge [color="#555555"];']
    group_of = {r: g for g in info.get("groups", []) for r in g["roots"]}
    by_group: dict = {}
    for i, t in enumerate(info["trees"]):
        g = group_of.get(t["root"])
        by_group.setdefault(g["id"] if g else None, []).append((i, t))
    groups = {g["id"]: g for g in info.get("groups", [])}
    for gid, trees in by_group.items():
        indent = "  "
        if gid is not None:
            g = groups[gid]
            coupled = f"coupled: {len(g['roots'])} trees share these {g['channels_before']} channels" \
                if len(g["roots"]) > 1 else f"{g['channels_before']} channels"
            state = "prunable" if g.get("prunable", g.get("reason") is None) else f"left alone: {g['reason']}"
            colour = "#1d3557" if state == "prunable" else "#d62828"
            lines.append(f"  subgraph cluster_group_{gid} {{")
            label = f"group {gid} ({g['pattern']}); {coupled}; {state}"
            lines.append(f"    label={_q(label)};")
            lines.append(f'    color="{colour}"; penwidth={2 if len(g["roots"]) > 1 else 1}; style=rounded;')
            indent = "    "
        for i, t in trees:
            label = f"tree {t['root']} ({t['pattern']})"
            lines.append(f'{indent}subgraph cluster_{i} {{ label={_q(label)}; style=dashed; color="#999999";')
            nodes = {t["root"], *t["leaves"], *t["blockers"]} | {n for e in t["edges"] for n in e}
            for n in sorted(nodes):
                fill, shape = ROLE_STYLE[role(n, t)]
                lines.append(f'{indent}  {_q(str(i) + ":" + n)} [label={_q(n)}, fillcolor="{fill}", shape={shape}];')
            for a, b in t["edges"]:
                lines.append(f"{indent}  {_q(str(i) + ':' + a)} -> {_q(str(i) + ':' + b)};")
            lines.append(f"{indent}}}")
        if gid is not None:
            lines.append("  }")
    lines.append("  subgraph cluster_legend { label=\"legend\"; style=solid; color=\"#cccccc\";")
    for name in ROLE_STYLE:
        fill, shape = ROLE_STYLE[name]
        lines.append(f'    "legend:{name}" [label="{name}", fillcolor="{fill}", shape={shape}];')
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def op_table(before: onnx.ModelProto, after: onnx.ModelProto, extra: list[tuple[str, str, str]] = ()) -> str:
    """An onnxsim-style table: each op type's count in the original and the result, then the
    ``extra`` rows (name, before, after) such as parameters and FLOPs."""
    a, b = op_counts(before), op_counts(after)
    rows = [(op, str(a.get(op, 0)), str(b.get(op, 0))) for op in sorted(set(a) | set(b))] + list(extra)
    w0 = max([len("op type")] + [len(r[0]) for r in rows])
    w1 = max([len("original")] + [len(r[1]) for r in rows])
    w2 = max([len("pruned")] + [len(r[2]) for r in rows])
    rule = f"+{'-' * (w0 + 2)}+{'-' * (w1 + 2)}+{'-' * (w2 + 2)}+"
    out = [rule, f"| {'op type':<{w0}} | {'original':>{w1}} | {'pruned':>{w2}} |", rule]
    for i, (name, x, y) in enumerate(rows):
        if i == len(rows) - len(extra) and extra:
            out.append(rule)
        out.append(f"| {name:<{w0}} | {x:>{w1}} | {y:>{w2}} |")
    out.append(rule)
    return "\n".join(out)


def widths_plot(report: dict, path: str | os.PathLike, keep: bool = False):
    """Per group (its first root), channels before and after as side-by-side bars; groups left
    whole are drawn grey with their reason's first words in the legend's place (the axis label)."""
    plt = figures.pyplot()
    import numpy as np

    groups = report["groups"]
    n = max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 0.28 * n + 2.5)), 4.8))
    xs = np.arange(len(groups))
    before = [g["channels_before"] for g in groups]
    after = [g.get("channels_after", g["channels_before"]) for g in groups]
    ax.bar(xs - 0.2, before, width=0.4, color="#adb5bd", label="original")
    ax.bar(xs + 0.2, after, width=0.4, color=["#1d7874" if g.get("pruned") else "#e9c46a" for g in groups],
           label="pruned")
    step = max(1, -(-len(groups) // 40))
    ax.set_xticks(xs[::step], [f"{g['id']}: {g['roots'][0].strip('/').replace('/', '.')[-20:]}"
                               for g in groups][::step], rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("channels")
    ax.set_title(f"{os.path.basename(str(report.get('model', '')))}: channels per group, original vs pruned "
                 f"(params x{report['params_after'] / max(report['params_before'], 1):.3f})", fontsize=9)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color="#adb5bd", label="original"), Patch(color="#1d7874", label="pruned"),
                       Patch(color="#e9c46a", label="left whole (see the report's reason)")],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return figures.finish(fig, path, keep)


# The default screen times both models only up to this many FLOPs per run (the original's count): a
# timing creates two ONNX Runtime sessions and runs each up to 2 s, which on ResNet-50 (8 GFLOPs)
# more than doubled the whole command (issue 13); ``--latency`` times any model, ``--no-latency`` none.
LATENCY_AUTO_FLOPS = 2e9


def times_latency(report: dict, latency: str = "auto") -> bool:
    """Whether the screen times both models in ONNX Runtime: ``latency`` "on", or "auto" and the
    original runs at most ``LATENCY_AUTO_FLOPS``."""
    return latency == "on" or (latency == "auto" and report["flops_before"] <= LATENCY_AUTO_FLOPS)


def latency_feeds(original: onnx.ModelProto, seed: int, given: dict | None, inputs: dict | None) -> dict:
    """The proof's feeds again for timing: the caller's arrays as given, the rest defaulted at the
    shapes the proof ran on (the report's ``inputs``). Fresh defaults would ignore ``--inputs``:
    ONNX Runtime then ran a model on zeros where it needs real values (a Col2Im block shape of 0
    killed the process with SIGFPE after the output was written)."""
    given = dict(given or {})
    shapes = {n: e["shape"] for n, e in (inputs or {}).items() if n not in given and "shape" in e}
    return make_inputs(original, seed, given, shapes).feeds


def prune_screen(model_path: str, output: str, original: onnx.ModelProto, result, seed: int,
                 latency: str = "auto", given: dict | None = None) -> str:
    """What a deployment engineer wants on one screen: the op-type table before/after with
    parameters, FLOPs and ORT latency, per-group widths, every group left whole (largest first).
    ``latency``: "on", "off", or "auto" (timed when the original runs at most LATENCY_AUTO_FLOPS);
    ``given``: the caller's input arrays, timed as the proof ran them."""
    rep = result.report

    def x(a, b):
        return f" (x{b / a:.3f})" if a else ""
    extra = [("parameters", f"{rep['params_before']:,}", f"{rep['params_after']:,}{x(rep['params_before'], rep['params_after'])}"),
             ("FLOPs", f"{rep['flops_before']:,}", f"{rep['flops_after']:,}{x(rep['flops_before'], rep['flops_after'])}")]
    if latency == "auto" and not times_latency(rep, latency):
        extra.append(("ORT latency (ms)", "not timed", f"{rep['flops_before'] / 1e9:.1f} GFLOPs per run: --latency times it"))
    elif times_latency(rep, latency):
        try:
            feeds = latency_feeds(original, seed, given, rep.get("inputs"))
            with progress.task("latency: ONNX Runtime", 2, unit="model") as bar:
                t0 = latency_ms(original, feeds)
                bar.update(1)
                t1 = latency_ms(result.model, feeds)
                bar.update(1)
            extra.append(("ORT latency (ms)", f"{t0:.3f}", f"{t1:.3f}{x(t0, t1)}"))
        except Exception as exc:  # a timing is a nicety: say why it is missing, never fail the prune
            extra.append(("ORT latency (ms)", "n/a", f"n/a ({type(exc).__name__})"))
    lines = [f"{model_path} -> {output}", op_table(original, result.model, extra)]
    lines[1:1] = conversion_notes(result.model)
    groups = rep["groups"]
    pruned = [g for g in groups if g.get("pruned")]
    held = {g["id"]: group_params(original, g["roots"]) for g in groups if not g.get("pruned")}
    whole = sorted((g for g in groups if not g.get("pruned")), key=lambda g: -held[g["id"]])
    lines.append(f"groups {len(pruned)} pruned of {len(groups)}; {len(whole)} left alone")
    if not groups:
        lines.append(f"  {no_groups_reason(original)}")
    if pruned:
        cells = [f"{g['id']}:{g['channels_before']}->{g['channels_after']}" for g in pruned]
        lines.append("widths (group:before->after): " + wrap(cells, 100, indent=2))
    shown = whole[:25]
    for g in shown:
        lines.append(f"  group {g['id']} ({', '.join(g['roots'][:2])}{', ...' if len(g['roots']) > 2 else ''}; "
                     f"{held[g['id']]:,} params): {g.get('reason') or '?'}")
    if len(whole) > len(shown):
        lines.append(f"  ... {len(whole) - len(shown)} smaller groups left alone: see --report")
    for e in rep.get("interface", []):  # a KV cache that shrank: the runtime must follow
        lines.append(f"{e['kind']} {e['name']}: {e['shape_before']} -> {e['shape_after']}")
    lines.append(f"verified {rep['verified']} (max abs diff {rep['max_abs_diff']})")
    lines += recovery_lines(rep.get("recovery"))
    if rep.get("target"):
        lines.append(target_line(rep["target"]))
    return "\n".join(lines)


def recovery_lines(rec: dict | None) -> list[str]:
    """What the ``recover`` pass bought, or why it did nothing."""
    if rec is None:
        return []
    if not rec["applied"]:
        return [f"recovery: not applied ({rec['reason']})"]
    if "heldout_error_before" not in rec:
        return [f"recovery ({','.join(rec['method'])}): applied; too few calibration samples to hold any out"]
    line = (f"recovery ({','.join(rec['method'])}): held-out output error vs original "
            f"{rec['heldout_error_before']:.4f} -> {rec['heldout_error_after']:.4f} on {rec['heldout_samples']} samples")
    if "heldout_top1_after" in rec:
        line += (f"; top-1 {rec['heldout_top1_before']:.4f} -> {rec['heldout_top1_after']:.4f} "
                 f"(original {rec['heldout_top1_original']:.4f})")
    return [line + ("" if rec["helped"] else "; it did NOT help")]


def wrap(cells: list[str], width: int, indent: int) -> str:
    out, line = [], ""
    for c in cells:
        if line and len(line) + len(c) + 1 > width:
            out.append(line)
            line = ""
        line = f"{line} {c}" if line else c
    out.append(line)
    return ("\n" + " " * indent).join(out)


WEIGHT_LAYERS = {**WEIGHT_PORTS, "LSTM": 1, "GRU": 1, "RNN": 1}  # runtime's weight ports, the recurrent ones too
INTEGER_LAYERS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
                  "MatMulIntegerToFloat", "QGemm")


def _weight_layer(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in WEIGHT_LAYERS and len(node.input) > WEIGHT_LAYERS[node.op_type]


def _inside_bodies(model: onnx.ModelProto) -> str | None:
    """The weight layers of a model that has none in its main graph but some inside the bodies of
    its If / Loop / Scan nodes (a Keras LSTM as tf2onnx writes it without its LSTM rewrite: a Loop
    whose body does the cell's MatMuls): which, and where; None when the bodies have none either."""
    from ir.bodies import all_nodes

    holders, counts = [], Counter()
    for node in model.graph.node:
        inner = Counter(n.op_type for attr in node.attribute
                        for body in list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
                        for n in all_nodes(body) if _weight_layer(n))  # its bodies' nodes, read in place
        if inner:
            holders.append(f"{node.op_type} '{node.name}'")
            counts += inner
    if not holders:
        return None
    what = ", ".join(f"{k} {op}" for op, k in sorted(counts.items()))
    where = ", ".join(holders[:3]) + (f" and {len(holders) - 3} more" if len(holders) > 3 else "")
    return (f"nothing to cut in the main graph: its weight layers ({what}) are inside the bodies of {where}, "
            f"which stay whole: `onnxpruner inspect` names the barrier")


def no_groups_reason(model: onnx.ModelProto) -> str:
    """Why a model has no group at all, from its layers: none with weights, or every one
    quantized (an integer op such as QLinearConv or MatMulInteger: a barrier; or a weight
    dequantized from integers that none of its channels could be cut through), or (else) see
    ``inspect``."""
    made = {o: n for n in model.graph.node for o in n.output}
    layers = [n for n in model.graph.node if _weight_layer(n)]
    integer = sorted({n.op_type for n in model.graph.node if n.op_type in INTEGER_LAYERS})
    dequantized = [n for n in layers if getattr(made.get(n.input[WEIGHT_LAYERS[n.op_type]]), "op_type", "")
                   == "DequantizeLinear"]
    if not layers and not integer:
        return _inside_bodies(model) or "nothing to cut: no Conv, ConvTranspose, Gemm, MatMul or recurrent layer"
    if not layers:
        return (f"nothing to cut: every weight layer is an integer op ({', '.join(integer)}), a barrier: "
                f"quantize to the QDQ form (DequantizeLinear weights), which prunes, or prune the float model, "
                f"then quantize it")
    if len(dequantized) == len(layers):
        more = f"; integer ops ({', '.join(integer)}) are barriers" if integer else ""
        return (f"nothing to cut: every weight layer reads a weight dequantized from integers "
                f"({len(layers)} DequantizeLinear) and no channel could be followed to a cut{more}: a QDQ weight "
                f"of constants prunes (8/16/32-bit, per tensor or per axis); blocked or 4-bit quantization, a "
                f"scale computed at run time or an op without a rule is a barrier: `onnxpruner inspect` names each")
    return "no layer's channels could be followed to a cut: `onnxpruner inspect` lists each barrier and why"


def summary(report: dict) -> str:
    def ratio(a, b):
        return f"{b / a:.3f}" if a else "n/a"

    pruned = sum(1 for g in report["groups"] if g.get("pruned"))
    left = [g for g in report["groups"] if not g.get("pruned") and g.get("reason")]
    lines = [f"params {report['params_before']:,} -> {report['params_after']:,} "
             f"(x{ratio(report['params_before'], report['params_after'])})",
             f"FLOPs  {report['flops_before']:,} -> {report['flops_after']:,} "
             f"(x{ratio(report['flops_before'], report['flops_after'])})",
             f"groups {pruned} pruned of {len(report['groups'])}; {len(left)} left alone",
             f"verified {report['verified']} (max abs diff {report['max_abs_diff']})"]
    lines += recovery_lines(report.get("recovery"))
    if report.get("target"):
        lines.append(target_line(report["target"]))
    for g in left[:10]:
        lines.append(f"  group {g['id']} ({', '.join(g['roots'][:3])}): {g['reason']}")
    if len(left) > 10:
        lines.append(f"  ... {len(left) - 10} more in the report")
    return "\n".join(lines)


def target_line(t: dict) -> str:
    predicted = f"; predicted {t['predicted_reduction']}" if t.get("predicted_reduction") is not None else ""
    over = f" over {t['steps']} steps" if t.get("steps") else ""
    return (f"target: remove {t['reduction']:g} of the {t['kind']}{over}; achieved {t['achieved']:.4f} "
            f"({'met' if t['met'] else 'NOT met'} within 1 point{predicted})")


def latency_ms(model: onnx.ModelProto, feeds: dict, budget_s: float = 2.0, max_runs: int = 20) -> float:
    """Median ORT latency of one run on ``feeds`` (ms): default graph optimizations (as deployed),
    one warm-up run, then runs until ``max_runs`` or ``budget_s`` seconds (at least 3)."""
    import statistics
    import time

    from passes.runtime import ort_session, session_options

    session = ort_session(model, session_options(3))
    session.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def group_params(model: onnx.ModelProto, roots) -> int:
    """The parameters a group holds in the original: its roots' initializer inputs (weight, bias).
    A root inside an If branch pruned as a model of its own (``subgraphs``) is named
    ``NODE/ATTR:ROOT``: it is looked up in that body, its weights among the body's initializers and
    those of the graphs around it; weights written as Constant nodes count too (Silero VAD's
    branch groups, and paddle2onnx's Constant weights, read "0 params" before)."""
    total = 0
    for root in roots:
        graph, scopes = model.graph, [model.graph]
        while (m := re.match(r"(.+?)/(then_branch|else_branch|body):(.+)$", root)) is not None:
            holder = next((n for n in graph.node if n.name == m[1]), None)
            body = next((a.g for a in getattr(holder, "attribute", ()) if a.name == m[2] and a.HasField("g")), None)
            if body is None:
                break
            graph, root = body, m[3]
            scopes.append(body)
        sizes = {t.name: math.prod(t.dims) for g in scopes for t in g.initializer}
        sizes.update({n.output[0]: math.prod(a.t.dims) for g in scopes for n in g.node  # weights as Constant nodes
                      if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
        total += sum(sizes.get(i, 0) for n in graph.node if n.name == root for i in n.input)
    return total


def error_line(exc: BaseException, model=None) -> str:
    """The one line a failure prints. A pass that found the input itself at fault (ONNX Runtime
    cannot load or run the model before pruning: a kernel it lacks for a type; the input fails
    onnx.checker's full check) blames the file, not the pass:
    ``MODEL: ONNX Runtime cannot load the model before pruning: ...``."""
    from pipeline import PipelineError

    text = str(exc).strip().splitlines()
    cause = exc.__cause__
    if isinstance(exc, PipelineError) and isinstance(cause, InputsError) and isinstance(model, str) \
            and ("the model before pruning" in str(cause) or str(cause).startswith("the input ")):
        return f"{model}: {str(cause).strip().splitlines()[0]}"
    return text[0] if text else type(exc).__name__


def conversion_notes(model) -> list[str]:
    """The ``note:`` lines of a model ``support.opened`` converted: up by onnx.version_converter,
    down by relabelling its opset imports and IR version."""
    meta = {p.key: p.value for p in model.metadata_props}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    notes = []
    if (converted := meta.get(CONVERTED_KEY)) is not None:
        if converted.isdigit() and int(converted) > opset:
            notes.append(f"note: converted from opset {converted} to {opset} by relabelling its opset import "
                         f"(opsets {opset + 1}..{converted} change nothing this model uses: "
                         f"passes/newer_opsets.py); the output is at opset {opset}")
        else:
            notes.append(f"note: converted from opset {converted} to {opset} by onnx.version_converter (checked "
                         f"against onnx.reference); the output is at that opset")
    if (fused := meta.get(DEFUSED_KEY)) is not None:
        left = sorted({n.op_type for n in model.graph.node if n.domain in CONTRIB})
        notes.append(f"note: ONNX Runtime's fused ops written as the standard ops they fuse "
                     f"({fused.replace(':', ' x').replace(',', ', ')}; checked in ONNX Runtime); "
                     + (f"{', '.join(left)} stayed as given (barriers)" if left else "the output is plain ONNX"))
    if (ir := meta.get(IR_KEY)) is not None:
        notes.append(f"note: IR version {ir} saved as {model.ir_version} (the model uses no field a later IR "
                     f"version added)")
    return notes
