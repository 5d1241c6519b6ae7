"""The package's shape: stage subpackages, the allowed import direction between them, no import cycles.

Every ``import`` / ``from ... import`` statement counts, also those inside functions (a function-level import
hides a cycle; it does not remove it).
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "segsweep"
SHARED = {"errors", "io", "lazy", "paths", "registry", "labels", "study", "runner"}
# A stage may import shared modules and stages of a lower rank; `plan` composes every stage's registry to
# check a config, so it sits on top and no stage imports it. `apply` (predict on new series) uses the trained
# model, the analysis' model selection and the report's colours; nothing but plan may import it.
RANK = {"shared": 0, "data": 1, "training": 2, "analysis": 3, "report": 4, "apply": 5, "plan": 6}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """segsweep modules imported anywhere in a file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when it exists
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("segsweep") and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def stage(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1 or parts[1] in SHARED:
        return "shared"
    return parts[1]


def test_stage_subpackages_and_top_level_modules():
    stages = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert set(RANK) - {"shared"} <= set(stages), stages
    top = sorted(p.stem for p in PKG.glob("*.py"))
    assert len(top) <= 9, top
    assert set(top) - {"__init__"} == SHARED, top


def test_every_module_belongs_to_a_known_stage():
    unknown = sorted(n for n in modules() if stage(n) not in RANK)
    assert not unknown, unknown


@pytest.mark.parametrize("name", sorted(modules()))
def test_import_direction(name):
    """data never imports training/analysis/report/plan; training never imports analysis/report/plan; ..."""
    g = graph()
    mine = RANK[stage(name)]
    bad = sorted(t for t in g[name] if stage(t) != stage(name) and RANK[stage(t)] >= mine)
    assert not bad, f"{name} (stage {stage(name)}) must not import {bad}"


def test_no_import_cycles():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    # a package __init__ importing its own submodules (registry discovery) is not a cycle unless they
    # import the __init__ back, which the component check above catches
    assert not cycles, cycles


def test_the_check_sees_function_level_imports(tmp_path):
    """Guard against a checker that only reads module-level imports."""
    src = "def f():\n    from segsweep.report import render\n"
    path = tmp_path / "x.py"
    path.write_text(src)
    known = set(modules())
    assert "segsweep.report.render" in imports_of("segsweep.data.x", path, known)


# The training modules analysis and report may use, directly or through each other: torch-free (torch and OpenCV
# are imported on first use), so the aggregate and report rules run in envs/report.yaml (docs/architecture.md).
TORCH_FREE_TRAINING = {
    "segsweep.training",
    "segsweep.training.record",
    "segsweep.training.evaluate",
    "segsweep.training.metrics",
    "segsweep.training.native_predictions",
}


def test_analysis_and_report_reach_only_torch_free_training_modules():
    g = graph()
    todo = [t for n, ts in g.items() if stage(n) in ("analysis", "report") for t in ts if stage(t) == "training"]
    reached: set[str] = set()
    while todo:
        t = todo.pop()
        if t not in reached:
            reached.add(t)
            todo += [u for u in g[t] if stage(u) == "training"]
    assert reached <= TORCH_FREE_TRAINING, sorted(reached - TORCH_FREE_TRAINING)
