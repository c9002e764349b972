"""Dependencies point down only, read from the imports of every production module:

    entry points (function_app, bootstrap, cli, demo, devservices)
      -> admin/, auth/, sync/  ->  shared/

``shared/`` imports no feature; ``sync/`` and ``admin/`` do not import ``auth/`` (the token
source is a protocol in shared/, injected by bootstrap.py); ``auth/`` imports neither ``sync/``
nor ``admin/``; no production package imports the composition root, the simulator, dev tools
(devservices, the local host ``devhost/``) or tests. Imports inside functions count too: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
PACKAGES = ("shared", "sync", "auth", "admin")
ENTRY_POINTS = {"bootstrap", "function_app", "cli", "demo", "devservices"}
DEV_ONLY = {"simulator", "devhost", "tests", "benchmarks"}
FORBIDDEN = {
    "shared": {"sync", "auth", "admin"},
    "sync": {"auth", "admin"},
    "admin": {"auth", "sync"},
    "auth": {"sync", "admin"},
}


def imported_top_levels(path: pathlib.Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def production_modules():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_down(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name, line in imported_top_levels(path):
            if name in FORBIDDEN[package] | ENTRY_POINTS - {"bootstrap"} | DEV_ONLY:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == []


def test_only_blueprints_import_the_composition_root():
    # the blueprints reach the one Services at invocation time; no service or adapter does
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in production_modules()
                 for name, line in imported_top_levels(path)
                 if name == "bootstrap" and path.name != "functions.py"]
    assert offenders == []


def test_the_layer_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from auth.tokens import TokenProviders\n")
    assert ("auth", 2) in imported_top_levels(module)
