"""What the command line shows that is more than a line: Graphviz trees, the op-type table
before/after, per-group widths, and the per-layer width chart (``prune --plot``). Text and files
from the API's results; no printing here (``cli.py`` prints)."""

from __future__ import annotations

import os
from collections import Counter

import onnx

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    if keep:
        return fig
    plt.close(fig)
    return None
