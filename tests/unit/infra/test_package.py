"""The deployed package: the repository root minus what `.funcignore` lists, as `azd deploy` and
`func azure functionapp publish` build it (gitignore-style patterns). Flex Consumption then installs
requirements.txt remotely, so only the app's own files go up."""
from __future__ import annotations

import fnmatch
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def funcignore_patterns(root: pathlib.Path = ROOT) -> list[str]:
    lines = (root / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(relative: str, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore matching for the forms .funcignore uses: `name`, `*.ext` (any depth), `name/`
    (directories only) and `/name` or `a/b` (from the root)."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        if "/" in pattern:
            if fnmatch.fnmatchcase(relative, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def package_files(root: pathlib.Path = ROOT) -> set[str]:
    """Every file that goes into the package, relative to the root; an ignored directory is not
    entered (as git does, so nothing below it can come back)."""
    patterns = funcignore_patterns(root)
    files = set()
    for folder, dirs, names in os.walk(root):
        base = pathlib.Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not ignored(prefix + d, True, patterns)]
        files.update(prefix + n for n in names if not ignored(prefix + n, False, patterns))
    return files


@pytest.fixture(scope="module")
def package() -> set[str]:
    return package_files()


def test_funcignore_uses_only_the_pattern_forms_the_check_understands():
    # negation and ** would need a full gitignore matcher; fail here rather than check wrongly
    assert not [p for p in funcignore_patterns() if p.startswith("!") or "**" in p or "\\" in p]


def test_the_app_is_in_the_package(package):
    for name in ("function_app.py", "bootstrap.py", "cli.py", "host.json", "requirements.txt"):
        assert name in package, name
    for folder in ("admin", "auth", "shared", "sync"):
        sources = {p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts}
        assert sources, folder
        missing = {p.relative_to(ROOT).as_posix() for p in sources} - package
        assert not missing, f"left out of the package: {sorted(missing)}"
        assert f"{folder}/__init__.py" in package


def test_what_only_development_needs_is_not(package):
    for name in ("devservices.py", "devworkers.py", "demo.py", "local.settings.json", "local.settings.json.sample",
                 "pyproject.toml", "Makefile", "package.json", "azure.yaml"):
        assert name not in package, name
    for folder in ("tests", "simulator", "devhost", "benchmarks", "node_modules", ".venv", ".git", "infra", ".ci",
                   ".pcsync-local"):
        assert not [p for p in package if p.startswith(folder + "/")], folder
    assert not [p for p in package if "__pycache__" in p.split("/") or p.endswith((".pyc", ".pem", ".pfx", ".key"))]


def test_the_matcher_follows_gitignore_semantics(tmp_path):
    """The walk itself, on a small tree: a bare name matches at any depth, `dir/` only
    directories, `/name` only at the root, and an ignored directory hides all below it."""
    for path in ("app.py", "tests/test_a.py", "pkg/tests/x.py", "pkg/mod.py", "pkg/notes.md", "build",
                 "pkg/build/out.py", "cache/x.py", "pkg/cache/y.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / ".funcignore").write_text("# comment\ntests\n*.md\nbuild/\n/cache\n.funcignore\n")
    assert package_files(tmp_path) == {"app.py", "pkg/mod.py", "build", "pkg/cache/y.py"}


CLI_ONLY = ("rich", "croniter")


def test_the_deployed_requirements_leave_out_what_only_the_cli_needs():
    # requirements.txt is what the Functions build installs; the operator's CLI gets the `cli` extra
    deployed = {line.split("~")[0].split("[")[0].split(">")[0].strip().lower()
                for line in (ROOT / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert deployed.isdisjoint(CLI_ONLY)


def test_no_module_the_function_app_imports_needs_the_cli_extra():
    # every function app module imports with the CLI-only packages blocked (the CLI modules
    # themselves are not imported by the app)
    import subprocess
    import sys

    script = (
        "import sys\n"
        f"for name in {CLI_ONLY!r}: sys.modules[name] = None\n"
        "import function_app, bootstrap\n"
        "import sync.engine, sync.invoices.service, sync.writeback.service, sync.webhooks.service\n"
        "import auth.consent, auth.tokens, auth.verify, admin.providers\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
