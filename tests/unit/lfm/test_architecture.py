"""The package graph points one way and has no cycles (imports parsed from the source, function-level ones too).

Layers, bottom up (a package may import its own modules and any package of a *lower* layer, nothing else):
    0 lfm           config, names, errors, logs, the contract (table names, T_D, the export spec)
    1 lakehouse     Delta access, record tables, releases, locks
    2 models        PyTorch models, training, the registry
    3 inference     extraction and decay kernels over Arrow batches
    4 spark_jobs | validation | feature_repo   (siblings never import each other)
    5 serving       register, materialize, training sets, online, retrieval
    6 pipeline      the only orchestration
    7 cli | orchestration   the `lfm` verbs; the Dagster integration (an optional extra): nothing imports either
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAYERS = {"lfm": 0, "lakehouse": 1, "models": 2, "inference": 3, "spark_jobs": 4, "validation": 4,
          "feature_repo": 4, "serving": 5, "pipeline": 6, "cli": 7,
          "orchestration": 7}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def our_modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for path in (REPO / pkg).rglob("*.py"):
            out[module_name(path)] = path
    return out


MODULES = our_modules()
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def test_every_import_points_down():
    bad = []
    for name, targets in GRAPH.items():
        src = name.split(".")[0]
        for target in targets:
            dst = target.split(".")[0]
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                bad.append(f"{name} -> {target} ({src} layer {LAYERS[src]}, {dst} layer {LAYERS[dst]})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_packages_exist_and_document_themselves(package):
    init = REPO / package / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{package}/__init__.py needs a docstring"
