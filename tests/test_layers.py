"""The house's layers: every project module imports only the layers below it, and no import
cycle exists (function-local imports count: a cycle hidden in a function is still a cycle).

    cli  →  workflows  →  pipeline  →  passes  →  ir

The imports are read with ``ast`` from the files, so the rule keeps holding as the code changes;
``tests/`` and ``benchmarks/`` may import anything and are not read. The checker itself is tested
on small fake trees, so a planted upward import or cycle is known to fail it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("cli", "workflows", "pipeline", "passes", "ir")   # top to bottom
FREE = {"tests", "benchmarks", "tools", "build", "dist"}      # may import anything; not read
ONLY_IMPORTER = {"networkx": "ir.graph"}                      # a third-party module one module owns
MAX_LINES = 600                                               # a room's size; README names any exception
# the exceptions the README's Layout section names, each with its own ceiling
OVERSIZE = {"cli": 700, "passes.finetune": 650}


def project_modules(root: Path) -> dict[str, Path]:
    """Module name -> file for every .py of the project under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in FREE or any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """Project modules (and owned third-party top names) that ``name`` imports -> a line number."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        while target and target not in modules and target.split(".")[0] not in ONLY_IMPORTER:
            target = target.rpartition(".")[0]   # `import a.b.c` -> the deepest module that exists
        if target and target != name:
            found.setdefault(target if target in modules else target.split(".")[0], line)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:   # `from passes import sensitivity` imports a module
                sub = f"{source}.{alias.name}" if source else alias.name
                add(sub if sub in modules else source, node.lineno)
    return found


def layer_of(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def check(root: Path) -> list[str]:
    """Every breach of the layering under ``root``, one line each (empty: the house stands)."""
    modules = project_modules(root)
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    problems = []
    for m, targets in sorted(graph.items()):
        where = modules[m].relative_to(root)
        if layer_of(m) is None:
            problems.append(f"{where}: module {m!r} is in no layer ({' → '.join(LAYERS)})")
            continue
        for t, line in sorted(targets.items()):
            if t in ONLY_IMPORTER:
                if m != ONLY_IMPORTER[t]:
                    problems.append(f"{where}:{line}: imports {t}, which only {ONLY_IMPORTER[t]} may import")
            elif layer_of(t) is not None and layer_of(t) < layer_of(m):
                problems.append(f"{where}:{line}: upward import of {t} ({LAYERS[layer_of(m)]} is below "
                                f"{LAYERS[layer_of(t)]})")
    for cycle in _cycles({m: [t for t in ts if t in modules] for m, ts in graph.items()}):
        problems.append("import cycle: " + " → ".join(cycle + [cycle[0]]))
    return problems


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each in a stable order."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(_path_round(graph, set(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _path_round(graph: dict[str, list[str]], comp: set[str]) -> list[str]:
    """One import path from the component's first module back to itself (shortest, by BFS)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if w in comp and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


# ----------------------------------------------------------------------------- the project
def test_the_project_imports_only_downward_and_has_no_cycle():
    assert check(ROOT) == []


def test_no_module_is_over_the_size_limit():
    sizes = {m: len(p.read_text().splitlines()) for m, p in project_modules(ROOT).items()}
    assert {m: n for m, n in sizes.items() if n > OVERSIZE.get(m, MAX_LINES)} == {}
    assert len(ROOT.joinpath("pipeline.py").read_text().splitlines()) < 400   # the story on one screen


def test_every_layer_is_read():
    """The checker sees the project (a wrong ROOT would pass vacuously)."""
    modules = project_modules(ROOT)
    assert {"cli", "pipeline", "ir.graph", "passes.validate", "passes.runtime", "workflows.batch",
            "passes.op_rules"} <= set(modules)
    assert {layer_of(m) for m in modules} == set(range(len(LAYERS)))
    assert "pipeline" in imports_of("cli", modules["cli"], modules)


# ----------------------------------------------------------------------------- the checker
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


CLEAN = {
    "cli.py": "import pipeline\nfrom workflows import batch\n",
    "workflows/__init__.py": "",
    "workflows/batch.py": "import pipeline\nfrom passes.base import Pass\n",
    "pipeline.py": "import ir\nfrom passes import base\nfrom passes.sub import rules\n",
    "passes/__init__.py": "",
    "passes/base.py": "from ir import Graph\nfrom .sub import rules\n",
    "passes/sub/__init__.py": "from .rules import X\n",
    "passes/sub/rules.py": "from ..analyses import A\nimport numpy\nX = 1\n",
    "passes/analyses.py": "",
    "ir/__init__.py": "from .graph import Graph\n",
    "ir/graph.py": "import networkx as nx\nGraph = object\n",
    "tests/test_x.py": "import cli\n",          # tests may import anything
    "benchmarks/b.py": "import cli\n",
}


def test_checker_passes_a_clean_tree(tmp_path):
    assert check(_tree(tmp_path, CLEAN)) == []


def test_checker_catches_a_planted_upward_import(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "passes/analyses.py": "def f():\n    import pipeline\n"})
    problems = check(root)
    assert any("passes/analyses.py:2: upward import of pipeline" in p for p in problems), problems


def test_checker_catches_upward_relative_and_from_package_imports(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "pipeline.py": "from workflows import batch\n",
                            "ir/graph.py": "from passes.sub import rules\n"})
    problems = check(root)
    assert any("pipeline.py:1: upward import of workflows.batch" in p for p in problems), problems
    assert any("ir/graph.py:1: upward import of passes.sub.rules" in p for p in problems), problems


def test_checker_catches_a_cycle_within_a_layer(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "passes/analyses.py": "def f():\n    from .base import Pass\n"})
    problems = check(root)
    assert problems == ["import cycle: passes.analyses → passes.base → passes.sub.rules → passes.analyses"]


def test_checker_catches_a_module_in_no_layer_and_a_second_networkx_importer(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "helpers.py": "", "passes/analyses.py": "import networkx\n"})
    problems = check(root)
    assert any("module 'helpers' is in no layer" in p for p in problems), problems
    assert any("passes/analyses.py:1: imports networkx, which only ir.graph may import" in p
               for p in problems), problems
