"""The rules that keep the package's data flow readable (docs/architecture.md), checked by reading the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "avatar4d"

LAYERS: list[set[str]] = [
    {"errors", "atomic", "progress", "environment", "configs", "samples", "images", "validation", "geometry"},
    {"video"},
    {"tracking"},
    {"dataset"},
    {"preparation"},
    {"field", "render"},
    {"avatar"},
    {"evaluation"},
    {"training"},
    {"novel_views", "reenact", "mesh", "viewer"},
    {"demo", "batch"},
    {"cli", "__init__", "__main__"},
]
"""Lower layers first. A module may import its own room (top-level module or subpackage) and rooms of lower
layers; rooms side by side in one layer do not import each other, except on the ground floor (small building blocks
that may use one another, without cycles) and at the front door (the CLI and the package's entry points)."""
OPEN_LAYERS = {0, len(LAYERS) - 1}

LAYER_OF = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}
LAZY_IMPORTS_ALLOWED = {"cli", "__init__"}
"""The command line and the package's front door import lazily, to start fast."""


def room_of(module: str) -> str:
    """``avatar4d.render.renderer`` -> ``render``; ``avatar4d.avatar`` -> ``avatar``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__" and len(parts) > 2:
        parts = parts[:-1]
    return ".".join(parts)


def package_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported avatar4d module, imported inside a function) for every import of the package in a file."""
    tree = ast.parse(path.read_text())
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(sub) for sub in ast.walk(node) if sub is not node)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("avatar4d"):
            targets = [node.module]
            if node.module.count(".") <= 1:  # "from avatar4d.training import presets" names a module
                targets = [f"{node.module}.{alias.name}" if (PACKAGE / node.module.split(".", 1)[-1] /
                                                              f"{alias.name}.py").exists() else node.module
                           for alias in node.names]
            found += [(target, id(node) in inside) for target in targets]
        elif isinstance(node, ast.Import):
            found += [(alias.name, id(node) in inside) for alias in node.names if alias.name.startswith("avatar4d")]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer():
    rooms = {room_of(module_name(path)) for path in SOURCES}
    assert rooms - set(LAYER_OF) == set(), "add the new room to LAYERS and to docs/architecture.md"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path: Path):
    here = room_of(module_name(path))
    rank = LAYER_OF[here]

    def allowed(target: str) -> bool:
        there = LAYER_OF[room_of(target)]
        return room_of(target) == here or there < rank or (there == rank and rank in OPEN_LAYERS)

    wrong = [target for target, _ in package_imports(path) if not allowed(target)]
    assert wrong == [], f"{path.relative_to(PACKAGE)} ({here}) imports rooms of its own layer or above: {wrong}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_package_import_inside_a_function(path: Path):
    here = room_of(module_name(path))
    lazy = [target for target, in_function in package_imports(path) if in_function]
    assert here in LAZY_IMPORTS_ALLOWED or lazy == [], f"{path.relative_to(PACKAGE)} imports inside functions: {lazy}"


def test_no_import_cycle_between_modules():
    graph = {module_name(path): {t for t, _ in package_imports(path)} for path in SOURCES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for child in sorted(graph.get(node, ())):
            if child not in graph:
                continue
            if state.get(child) == 1:
                return trail + [node, child]
            if child not in state and (cycle := visit(child, trail + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            assert visit(start, []) is None


def test_the_renderer_knows_no_field_internals():
    for path in (PACKAGE / "render").glob("*.py"):
        assert all(room_of(t) != "field" for t, _ in package_imports(path)), path


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_short(path: Path):
    text = path.read_text()
    assert len(text.splitlines()) <= 450, f"{path.relative_to(PACKAGE)} has {len(text.splitlines())} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert long == [], f"{path.relative_to(PACKAGE)}: functions over 60 lines: {long}"
