"""Every app setting the code or a binding uses is in local.settings.json.sample, and the reverse.

One exception, by design: the identity-based PCSYNC_STORAGE__* settings are the alternative to the
PCSYNC_STORAGE connection string (setting both is an error), and the sample uses the
connection-string form for Azurite; they are documented in the README instead."""
import json
import pathlib
import re

from shared.settings import (
    HOST_AND_SDK_SETTINGS,
    SCHEDULE_SETTINGS,
    STORAGE_IDENTITY_SETTINGS,
    Settings,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def settings_named_in_code() -> set[str]:
    text = (ROOT / "shared" / "settings.py").read_text()
    names = set(re.findall(r'"((?:PCSYNC|AZURE)_[A-Za-z0-9_]+)"', text)) | {"AzureWebJobsStorage"}
    names |= set(SCHEDULE_SETTINGS)
    return names


def settings_named_in_bindings(functions) -> set[str]:
    names = set()
    for function in functions:
        for binding in json.loads(function.get_function_json())["bindings"]:
            for value in binding.values():
                if isinstance(value, str):
                    names |= set(re.findall(r"%([A-Za-z0-9_]+)%", value))
            if binding.get("connection"):
                names.add(binding["connection"])
    return names


def test_sample_and_code_name_the_same_settings(registered_functions):
    sample = json.loads((ROOT / "local.settings.json.sample").read_text())["Values"]
    used = settings_named_in_code() | settings_named_in_bindings(registered_functions.values())
    assert set(STORAGE_IDENTITY_SETTINGS) <= used  # the regex sees them, so the exemption below is explicit
    assert used - set(sample) - set(STORAGE_IDENTITY_SETTINGS) == set(), \
        "used by the code but missing from local.settings.json.sample"
    assert set(sample) - used - set(HOST_AND_SDK_SETTINGS) == set(), "in the sample but read by nothing"


def test_sample_uses_the_connection_string_form_of_storage():
    sample = json.loads((ROOT / "local.settings.json.sample").read_text())["Values"]
    assert not set(STORAGE_IDENTITY_SETTINGS) & set(sample)
    assert not Settings.from_environment(sample).storage.identity_based


def test_no_module_but_settings_reads_the_environment():
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT)
        # devhost is the local stand-in for the Functions host: putting app settings into the
        # environment is its job, as it is the host's
        if rel.parts[0] in ("tests", "simulator", "devhost", "benchmarks", ".venv", "node_modules") \
                or rel.name == "settings.py":
            continue
        if re.search(r"os\.environ|os\.getenv", path.read_text()):
            offenders.append(str(rel))
    assert offenders == [], offenders


def test_sample_local_values_match_the_default_simulator(simulator):
    """`python -m simulator --port 8443 --seed 1` serves the identities the sample names."""
    sample = json.loads((ROOT / "local.settings.json.sample").read_text())["Values"]
    assert sample["PCSYNC_CLIENT_ID"] == sample["AZURE_CLIENT_ID"] == simulator.client_id
    assert sample["AZURE_TENANT_ID"] == simulator.tenant_id
    assert sample["AZURE_CLIENT_SECRET"] == simulator.client_secret
