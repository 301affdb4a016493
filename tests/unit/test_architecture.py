"""The library's layout rules, checked on its source: no import cycles (imports inside
functions included), no Prefect, flows or tasks, no sys.path edits, few top-level modules."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO_ROOT

LIBRARY = REPO_ROOT / "src" / "visionloop"
MAX_TOP_LEVEL_MODULES = 12
FORBIDDEN = ("prefect", "flows", "tasks")


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def imported_names(path: Path) -> list[str]:
    """Every module an import statement anywhere in the file names (in functions too).

    `from package import submodule` depends on the submodule (its package's __init__ only
    runs first); `from module import name` depends on the module.
    """
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.append(submodule if submodule in MODULES else node.module)
    return names


def library_edges() -> dict[str, set[str]]:
    """module -> the library modules it imports (a name that is not a module is skipped)."""
    return {
        name: {target for target in imported_names(path) if target in MODULES and target != name}
        for name, path in MODULES.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_in_the_library():
    assert cycles(library_edges()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_prefect_flows_or_tasks():
    offenders = {
        name: target
        for name, path in MODULES.items()
        for target in imported_names(path)
        if target.split(".")[0] in FORBIDDEN
    }
    assert offenders == {}


# MLflow's entry file for the registered model: never imported by the library, it runs
# where the model is loaded and puts the package's archive (the model's code/) on sys.path.
MODEL_ENTRY_FILE = "visionloop.promotion.mlflow_model_code"


def test_the_library_never_edits_sys_path():
    offenders = []
    for name, path in MODULES.items():
        if name == MODEL_ENTRY_FILE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "path"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                offenders.append(name)
    assert offenders == []


def test_few_modules_sit_directly_in_the_package():
    top_level = sorted(p.name for p in LIBRARY.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, top_level
