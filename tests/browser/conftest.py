"""The browser tier: `pcsync serve --simulator` (devhost.testing.start_serve) driven by the Debian
Chromium through Playwright. Screenshots of each step go under test-output/browser/<test>/
(git-ignored). With CI=true a missing browser or Playwright fails the run instead of skipping."""
from __future__ import annotations

import os
import pathlib
import re
import shutil

import pytest

from tests.conftest import unavailable

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "browser"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")


def chromium_path() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def serve(tmp_path_factory):
    """One playground for the browser tests: Azurite with data under a temporary folder, the
    simulator and the function app on a free port."""
    from devhost.testing import ServeFailed, start_serve

    try:
        process = start_serve(tmp_path_factory.mktemp("serve"), simulator=True)
    except ServeFailed as exc:
        unavailable(f"pcsync serve --simulator did not start: {exc}")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def browser():
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium; `make test` does it as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.count = 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def __call__(self, page, step: str) -> pathlib.Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(request):
    return Shots(OUTPUT / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name))


@pytest.fixture
def context(browser):
    """A fresh browser context (cookies and sessionStorage of its own: a private window)."""
    created = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    created.set_default_timeout(20_000)
    try:
        yield created
    finally:
        created.close()
