"""The code's shape: no import cycles, no imports hidden in functions, no huge modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "studies"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "migrations" not in path.parts
}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The hub modules an import statement runs (a name from a package may be a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    if node.level or not node.module:
        return []
    found = []
    for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        if submodule in MODULES:
            found.append(submodule)
        elif node.module in MODULES:
            found.append(node.module)
    return found


def imports_of(path: Path) -> tuple[set[str], list[str]]:
    """(hub modules imported at module level, imports of hub modules inside functions)."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    hidden: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and is_type_checking(child):
                continue  # never runs: type hints only
            if isinstance(child, ast.Import | ast.ImportFrom):
                names = imported(child)
                if in_function:
                    hidden.extend(f"{path.relative_to(ROOT)}:{child.lineno} {n}" for n in names)
                else:
                    top.update(names)
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return top, hidden


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_no_module_imports_the_hub_inside_a_function():
    hidden = [line for _, found in GRAPH.values() for line in found]
    assert hidden == []


def test_the_hub_modules_import_each_other_without_a_cycle():
    edges = {name: top for name, (top, _) in GRAPH.items()}
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def walk(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append([*visiting[visiting.index(name) :], name])
            return
        visiting.append(name)
        for target in sorted(edges.get(name, ())):
            walk(target)
        visiting.pop()
        done.add(name)

    for name in sorted(edges):
        walk(name)
    assert cycles == []


def test_models_import_nothing_of_the_hub_above_them():
    above = ("studies.storage", "studies.jobs", "studies.objectives", "studies.api")
    above += ("studies.views", "studies.charts", "studies.actions", "studies.forms")
    for name, (top, _) in GRAPH.items():
        if name.startswith("studies.models"):
            assert not [t for t in top if t.startswith(above)], name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_much_over_500_lines(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines"
