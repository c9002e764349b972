"""Cold start: importing the Functions app loads no Azure SDK, MSAL, requests or rich. The host
imports function_app before the first invocation of any function, so whatever it loads delays
every cold start; the services (and their SDKs) load inside the first invocation that needs them."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from tests.unit.project.test_project_files import EXPECTED_FUNCTIONS

ROOT = pathlib.Path(__file__).resolve().parents[3]

HEAVY = ("azure.core", "azure.data.tables", "azure.storage.queue", "azure.storage.blob", "azure.identity",
         "azure.keyvault.secrets", "msal", "requests", "urllib3", "rich", "cryptography", "jwt")

# azure.functions is imported first and what it loads by itself is not counted: the app cannot do
# without it (today it loads none of HEAVY, so nothing is excused)
_SCRIPT = f"""
import json, sys
heavy = {HEAVY!r}
import azure.functions
before = {{name for name in heavy if name in sys.modules}}
import function_app
print(json.dumps({{
    "loaded": sorted(name for name in heavy if name in sys.modules and name not in before),
    "functions": len(function_app.app.get_functions()),
}}))
"""


def _import_app_in_empty_environment() -> dict:
    result = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_app_registers_every_function_and_loads_no_sdk():
    outcome = _import_app_in_empty_environment()
    # all of them (18 today): the blueprints register while their services stay unloaded
    assert outcome["functions"] == len(EXPECTED_FUNCTIONS)
    assert outcome["loaded"] == []
