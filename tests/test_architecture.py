"""The shape of the code (issue: one data path): import floors, one lake, MLflow at the edge.

Static checks over the source (AST), so they hold for every code path, not only the ones a
test happens to run. An import inside a function counts; one under ``if TYPE_CHECKING:``
does not (it never runs).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "tasks", "flows", "bench", "testkit", "expectations")
LAYER_NAME = re.compile(r"^(0[1-8]_[a-z]+|quarantine|_SUCCESS)$")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


@cache
def tree(name: str) -> ast.Module:
    t = ast.parse(modules()[name].read_text())
    for node in ast.walk(t):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    return t


def imported(name: str) -> set[str]:
    """Every module of ours ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    mods, out = modules(), set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
            targets = subs if len(subs) == len(node.names) else [node.module, *subs]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def floors(names: set[str]) -> tuple[dict[str, int], list[list[str]]]:
    """Import floor of each module within ``names`` (0 = imports none of them; else 1 + the
    highest floor it imports) and the import circles found."""
    graph = {n: imported(n) & names for n in names}
    floor, circles = {}, []

    def visit(n: str, path: list[str]) -> int:
        if n in path:
            circles.append(path[path.index(n) :] + [n])
            return 0
        if n not in floor:
            floor[n] = 1 + max((visit(d, [*path, n]) for d in graph[n]), default=-1)
        return floor[n]

    for n in sorted(names):
        visit(n, [])
    return floor, circles


def test_components_have_at_most_five_import_floors_and_no_circle():
    comp = {m for m in modules() if m.startswith("components")}
    floor, circles = floors(comp)
    assert not circles, circles
    assert max(floor.values()) <= 5, sorted(floor.items(), key=lambda x: -x[1])[:5]


def test_the_whole_project_has_at_most_eight_import_floors():
    floor, circles = floors(set(modules()))
    assert not circles, circles
    assert max(floor.values()) <= 8, sorted(floor.items(), key=lambda x: -x[1])[:5]


def test_the_mlflow_module_imports_nothing_of_ours_and_is_the_only_one_importing_mlflow():
    assert imported("components.tracking") == set()
    for name in modules():
        if name.startswith(("bench", "testkit")) or name == "components.tracking":
            continue
        for node in ast.walk(tree(name)):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for m in mods:
                if m.split(".")[0] != "mlflow":
                    continue
                # The pyfunc wrapper may subclass PythonModel; it logs and loads through tracking.
                ok = (
                    name == "components.pyfunc"
                    and m == "mlflow.pyfunc"
                    and [a.name for a in node.names] == ["PythonModel"]
                )
                assert ok, f"{name} imports {m}"


def test_only_the_lake_module_names_layers_or_writes_their_marker():
    for name in modules():
        if name in ("components.lake",) or not name.startswith(("components", "tasks", "flows")):
            continue
        for node in ast.walk(tree(name)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not LAYER_NAME.match(node.value.strip("/")), f"{name} names the layer {node.value!r}"
            if isinstance(node, ast.Attribute) and node.attr == "MARKER":
                raise AssertionError(f"{name} touches the layer marker")


def test_no_prefect_in_components_and_no_secret_lookup_there():
    for name in (m for m in modules() if m.startswith("components")):
        src = modules()[name].read_text()
        assert "prefect" not in {n.split(".")[0] for n in imported_names(name)}, name
        assert "Secret.load" not in src, f"{name}: secret lookups belong to tasks/ (tasks/ingest.py)"


def imported_names(name: str) -> set[str]:
    out = set()
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_getattr_capability_probes_on_families():
    """The family contract is a base class with defaults (components/models/contract.py)."""
    probes = re.compile(r"getattr\([^)]*[\"'](uses_text|fit_score|max_len)[\"']")
    for name, path in modules().items():
        assert not probes.search(path.read_text()), name
