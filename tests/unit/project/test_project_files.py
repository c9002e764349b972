"""The project's own files say what the foundation promises."""
import json
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_readme_opens_with_exactly_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:sh|bash)?\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert text.index("make demo") < 200


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_azurite_is_pinned_in_package_json_and_lockfile():
    assert json.loads((ROOT / "package.json").read_text())["devDependencies"]["azurite"] == "3.35.0"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/azurite"]["version"] == "3.35.0"


def test_requirements_txt_matches_the_runtime_dependencies():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert sorted(listed) == sorted(declared)


def test_host_json_uses_bundle_v4_and_explicit_queue_settings():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    queues = host["extensions"]["queues"]
    assert {"batchSize", "maxDequeueCount", "visibilityTimeout"} <= set(queues)
    assert "functionTimeout" in host and "logLevel" in host["logging"]


# every function the app registers: a new one is added here on purpose, not by accident
EXPECTED_FUNCTIONS = {
    "consent_callback", "consent_link", "import_invoice_queue", "partner_center_webhook", "provider_item",
    "providers_list", "sync_customer_queue", "sync_customers_timer", "sync_delta_timer", "sync_invoices_timer", "verify_connectivity",
    "writebacks_dismiss", "writebacks_get", "writebacks_list", "writebacks_queue", "writebacks_retry",
    "writebacks_submit", "writebacks_timer",
    # the admin page (admin/functions.py) and its reads (sync/functions.py)
    "admin_api", "admin_consent_start", "admin_page", "admin_shell", "admin_static", "alerts_list", "invoices_list",
    "provider_health",
    # issue 10: the invoice side
    "invoices_accept", "invoices_report", "sync_unbilled_timer", "budgets_list", "budgets_put",
}


def test_importing_the_app_reads_no_settings_and_builds_no_client():
    # an empty environment would make any import-time settings read or client construction fail
    script = (
        "import function_app, bootstrap;"
        "assert bootstrap._services is None;"
        "print(','.join(sorted(f.get_function_name() for f in function_app.app.get_functions())))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={"PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.strip().split(",")) == EXPECTED_FUNCTIONS


def test_local_settings_json_is_not_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if tracked:  # not a git checkout (e.g. an sdist): nothing to check
        assert "local.settings.json" not in tracked
        assert not [f for f in tracked if f.endswith((".pem", ".pfx", ".key"))]


def test_the_write_back_delivery_limit_is_the_hosts_max_dequeue_count():
    # the last delivery records the failure before the host moves the message to writebacks-poison
    from sync.writeback.service import MAX_DELIVERIES

    host = json.loads((ROOT / "host.json").read_text())
    assert MAX_DELIVERIES == host["extensions"]["queues"]["maxDequeueCount"]


def test_the_deployed_package_leaves_out_what_only_development_needs():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines() if line.strip()}
    assert {"tests", "simulator", "benchmarks", "devservices.py", "demo.py", ".venv", "node_modules"} <= ignored
