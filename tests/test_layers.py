"""The package's layers point one way: each top-level package imports only packages of a lower
layer, so there are no cycles, `text/` does not reach `checkpoints/`, and `search/` and `app/` do
not reach `training/`. Imports are read from the source (function-level ones included)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "clipforge"
# Lower numbers sit lower; a package may import packages of strictly lower layers only.
LAYERS = {
    "core": 0,
    "text": 1, "images": 1,
    "models": 2, "data": 2,
    "checkpoints": 3,
    "evaluation": 4,
    "training": 5, "search": 5,
    "applications": 5,
    "app": 6,
    "cli": 7,
}


def imported_packages(path: Path) -> set[str]:
    """The clipforge top-level packages one module imports, relative imports resolved; a bare
    `import clipforge` counts as what the top-level `__init__` imports."""
    module_parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(module_parts[: len(module_parts) - node.level]) if node.level else ""
            target = ".".join(part for part in (base, node.module) if part)
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts == ["clipforge"] and path != PACKAGE / "__init__.py":
                found |= imported_packages(PACKAGE / "__init__.py")
            elif parts[0] == "clipforge" and len(parts) > 1:
                found.add(parts[1])
    return found


def package_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def dependency_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        own = package_of(path)
        if own in ("__init__", "__main__"):
            continue
        graph[own] |= imported_packages(path) - {own}
    return graph


def test_every_package_has_a_layer():
    assert set(dependency_graph()) <= set(LAYERS), set(dependency_graph()) - set(LAYERS)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_package_imports_only_lower_layers(package):
    upward = sorted(other for other in dependency_graph().get(package, ())
                    if LAYERS.get(other, 99) >= LAYERS[package])
    assert not upward, f"clipforge.{package} imports {upward}, which are not below it"


def test_named_rules_hold():
    graph = dependency_graph()
    assert "checkpoints" not in graph["text"]
    assert "training" not in graph["search"] and "training" not in graph["app"]
    assert not graph["core"], "core imports nothing else of clipforge"


def test_the_reader_resolves_relative_imports():
    module = PACKAGE / "training" / "trainer.py"
    assert {"checkpoints", "data", "evaluation", "models", "core"} <= imported_packages(module)
