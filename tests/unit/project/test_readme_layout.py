"""The README's Layout table names every production module, and every path it names exists."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[3]
PACKAGES = ("admin", "auth", "shared", "sync", "devhost")


def layout_paths() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## Settings")]
    return {part for cell in re.findall(r"^\| (.*?) \|", layout, re.M) for part in re.findall(r"`([^`]+)`", cell)}


def test_every_module_is_in_the_layout_table():
    modules = {str(p.relative_to(ROOT)) for package in PACKAGES for p in (ROOT / package).rglob("*.py")
               if p.name != "__init__.py"}
    top_level = {p.name for p in ROOT.glob("*.py")}
    assert modules - layout_paths() == set()
    assert top_level - {name for entry in layout_paths() for name in entry.split(", ")} == set()


def test_every_path_in_the_layout_table_exists():
    missing = [path for path in layout_paths() if "<" not in path and not (ROOT / path.rstrip("/")).exists()]
    assert missing == []
