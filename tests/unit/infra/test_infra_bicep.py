"""infra/: every .bicep file parses (pycep-parser: syntax only, no type check; `bicep build` and
what-if cannot run here) and declares the resources and settings the deployment relies on."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator

import pytest
from pycep import BicepParser

ROOT = pathlib.Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings in local.settings.json.sample that do not belong in Azure, and why.
NOT_IN_AZURE = {
    "PCSYNC_CA_BUNDLE": "only for the local simulator's self-signed certificate",
}
ROLE_IDS = {
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    return {p.relative_to(INFRA).as_posix(): BicepParser().parse(file_path=p) for p in BICEP_FILES}


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def resources(parsed, type_: str) -> list[dict[str, Any]]:
    """Resource configs of a type across all files (loops and conditions unwrapped)."""
    found = []
    for doc in parsed.values():
        for resource in doc.get("resources", {}).values():
            if resource["type"].lower() == type_.lower() and not resource.get("existing"):
                config = resource["config"]
                while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
                    config = config["config"]
                found.append(config)
    return found


def one(parsed, type_: str) -> dict[str, Any]:
    found = resources(parsed, type_)
    assert len(found) == 1, f"expected one {type_}, found {len(found)}"
    return found[0]


def app_setting_names(parsed) -> set[str]:
    doc = parsed["modules/functionapp.bicep"]
    return {n["name"] for n in walk(doc.get("variables", {})) if isinstance(n, dict) and {"name", "value"} <= set(n)}


def test_every_bicep_file_parses(parsed):
    assert {"main.bicep", "modules/functionapp.bicep", "modules/storage.bicep", "modules/keyvault.bicep",
            "modules/roles.bicep", "modules/monitoring.bicep", "modules/network.bicep", "modules/alerts.bicep"} <= set(parsed)


def test_main_wires_every_module(parsed):
    modules = {m["detail"]["path"] for m in parsed["main.bicep"]["modules"].values()}
    assert modules == {f"modules/{name}.bicep" for name in ("monitoring", "storage", "keyvault", "roles", "functionapp",
                                                             "network", "alerts")}
    for path in modules:
        assert (INFRA / path).exists()


def test_flex_consumption_python_function_app(parsed):
    plan = one(parsed, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"} and plan["properties"]["reserved"] is True
    site = one(parsed, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2" and props["siteConfig"]["ftpsState"] == "Disabled"
    assert props["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    deployment = props["functionAppConfig"]["deployment"]["storage"]
    assert deployment["type"] == "blobContainer" and deployment["authentication"]["type"] == "UserAssignedIdentity"
    assert site["identity"]["type"] == "UserAssigned"
    assert props["keyVaultReferenceIdentity"] == "identityId"
    assert "azd-service-name" in json.dumps(site["tags"])


def test_storage_is_locked_down(parsed):
    props = one(parsed, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    # off by default: PCSYNC_STORAGE is identity-based unless identityBasedStorage=false
    assert props["allowSharedKeyAccess"] == "allowSharedKeyAccess"
    main = parsed["main.bicep"]
    assert main["parameters"]["identityBasedStorage"]["default"] is True
    storage_params = main["modules"]["storage"]["config"]["params"]
    assert storage_params["allowSharedKeyAccess"]["operator"]["type"] == "not"


def test_key_vault_rbac_soft_delete_purge_protection(parsed):
    props = one(parsed, "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True and props["enablePurgeProtection"] is True


def test_monitoring(parsed):
    one(parsed, "Microsoft.OperationalInsights/workspaces")
    insights = one(parsed, "Microsoft.Insights/components")
    assert insights["properties"]["WorkspaceResourceId"]
    assert {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"} <= app_setting_names(parsed)


def test_managed_identity_and_least_privilege_roles(parsed):
    one(parsed, "Microsoft.ManagedIdentity/userAssignedIdentities")
    roles = parsed["modules/roles.bicep"]
    role_vars = roles["variables"]["roleIds"]["value"]
    for key, guid in ROLE_IDS.items():
        assert role_vars[key] == guid
    assignments = roles["resources"]
    scopes = {}
    for name, resource in assignments.items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        config = config.get("config", config) if ("loop_type" in config or "condition" in config) else config
        role = json.dumps(config["properties"]["roleDefinitionId"])
        scope = config["scope"]
        for key in ROLE_IDS:
            if f"roleIds.{key}" in role or key in role:
                scopes.setdefault(key, set()).add(json.dumps(scope))
    assert scopes["storageTableDataContributor"] == {'"storage"'}
    assert scopes["storageQueueDataContributor"] == {'"storage"'}
    assert "hostContainers" in next(iter(scopes["storageBlobDataOwner"]))  # containers, never the account
    # the invoice CSV reports (identity-based storage): Contributor on that container only
    assert "dataContainers" in next(iter(scopes["storageBlobDataContributor"]))
    main_roles = parsed["main.bicep"]["modules"]["roles"]["config"]["params"]
    assert "reportsContainerName" in json.dumps(main_roles["dataContainerNames"])
    assert scopes["keyVaultSecretsOfficer"] == {'"vault"'}
    # every assignment names its scope (a missing scope would mean the whole resource group)
    for doc in parsed.values():
        for name, resource in doc.get("resources", {}).items():
            if resource["type"] == "Microsoft.Authorization/roleAssignments":
                config = resource["config"]
                assert "scope" in config.get("config", config), name


def test_every_pcsync_setting_of_the_sample_is_set_in_azure(parsed):
    sample = json.loads((ROOT / "local.settings.json.sample").read_text())["Values"]
    wanted = {name for name in sample if name.startswith("PCSYNC_")} - set(NOT_IN_AZURE)
    names = app_setting_names(parsed)
    missing = [n for n in sorted(wanted) if n not in names and f"{n}__accountName" not in names]
    assert not missing, f"app settings missing from infra/modules/functionapp.bicep: {missing}"
    # both PCSYNC_STORAGE forms exist: identity-based (default) and the Key Vault reference
    assert {"PCSYNC_STORAGE", "PCSYNC_STORAGE__accountName", "AzureWebJobsStorage__accountName"} <= names
    # Flex Consumption refuses FUNCTIONS_WORKER_RUNTIME; the simulator CA never goes to Azure
    assert "FUNCTIONS_WORKER_RUNTIME" not in names and "PCSYNC_CA_BUNDLE" not in names
    assert "AZURE_CLIENT_SECRET" not in names and "AZURE_CLIENT_ID" in names


def setting_list(parsed, variable: str) -> dict[str, Any]:
    return {n["name"]: n["value"] for n in parsed["modules/functionapp.bicep"]["variables"][variable]["value"]}


def test_pcsync_storage_is_identity_based_by_default(parsed):
    """The default path: the user-assigned identity reaches our tables and queues (and the queue
    triggers) through the names shared/settings.py and the Functions host both read."""
    assert setting_list(parsed, "identityStorageSettings") == {
        "PCSYNC_STORAGE__accountName": "storageAccountName",
        "PCSYNC_STORAGE__credential": "managedidentity",
        "PCSYNC_STORAGE__clientId": "identityClientId",
    }
    site = one(parsed, "Microsoft.Web/sites")
    chosen = site["properties"]["siteConfig"]["appSettings"]["function"]["parameters"]["arg_2"]["operator"]
    assert chosen["type"] == "conditional"
    assert chosen["operands"] == {"condition": "identityBasedStorage", "true_value": "identityStorageSettings",
                                  "false_value": "keyVaultStorageSettings"}
    # the connection-string secret is written only on the non-default path
    keyvault = parsed["main.bicep"]["modules"]["keyVault"]["config"]["params"]
    assert keyvault["storeStorageConnection"]["operator"]["type"] == "not"
    secret = parsed["modules/keyvault.bicep"]["resources"]["storageConnection"]["config"]
    assert secret["condition"] == "storeStorageConnection"


def test_identity_settings_parse_as_the_app_reads_them(parsed):
    """What infra sets is accepted by Settings (with placeholder values for the parameters)."""
    from shared.settings import Settings

    values = {"storageAccountName": "stpcsyncabc123", "identityClientId": "0b6b7a3c-0000-4000-8000-000000000001"}
    env = {name: values.get(value, value) for name, value in setting_list(parsed, "identityStorageSettings").items()}
    storage = Settings.from_environment(env).storage
    assert storage.managed_identity and storage.client_id == values["identityClientId"]
    assert storage.table_service_uri == "https://stpcsyncabc123.table.core.windows.net"


def test_pcsync_storage_key_vault_reference(parsed):
    """The non-default path (identityBasedStorage=false)."""
    doc = parsed["modules/functionapp.bicep"]
    [setting] = [n for n in walk(doc["variables"]) if isinstance(n, dict) and n.get("name") == "PCSYNC_STORAGE"]
    assert setting["value"].startswith("@Microsoft.KeyVault(VaultName=")
    secret = one(parsed, "Microsoft.KeyVault/vaults/secrets")
    assert "listKeys()" in secret["properties"]["value"]
    outputs = json.dumps({k: v for doc in parsed.values() for k, v in doc.get("outputs", {}).items()})
    assert "listKeys" not in outputs and "AccountKey" not in outputs


def test_key_vault_audit_logs_go_to_log_analytics(parsed):
    [setting] = [r["config"] for r in parsed["modules/keyvault.bicep"]["resources"].values()
                 if r["type"] == "Microsoft.Insights/diagnosticSettings"]
    assert setting["scope"] == "vault" and setting["properties"]["workspaceId"] == "workspaceId"
    assert {"categoryGroup": "audit", "enabled": True} in setting["properties"]["logs"]
    params = parsed["main.bicep"]["modules"]["keyVault"]["config"]["params"]
    wired = json.dumps(params["workspaceId"])
    assert '"monitoring"' in wired and '"workspaceId"' in wired


def test_vnet_integration_is_optional_and_off_by_default(parsed):
    main = parsed["main.bicep"]
    assert main["parameters"]["vnetEnabled"]["default"] is False
    network = main["modules"]["network"]
    assert network["config"]["condition"] == "vnetEnabled"
    doc = parsed["modules/network.bicep"]
    vnet = one({"n": doc}, "Microsoft.Network/virtualNetworks")
    [app_subnet] = [s for s in vnet["properties"]["subnets"] if s["name"] == "app"]
    assert app_subnet["properties"]["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    groups = {e["name"] for e in doc["variables"]["endpoints"]["value"]}
    assert groups == {"blob", "queue", "table", "vault"}
    site = one(parsed, "Microsoft.Web/sites")
    assert "appSubnetId" in json.dumps(site["properties"]["virtualNetworkSubnetId"])
    # with the VNet the storage account and the vault close their public side
    storage = one(parsed, "Microsoft.Storage/storageAccounts")["properties"]
    assert "vnetEnabled" in json.dumps(storage["publicNetworkAccess"]) and "Deny" in json.dumps(storage["networkAcls"])
    vault = one(parsed, "Microsoft.KeyVault/vaults")["properties"]
    assert "vnetEnabled" in json.dumps(vault["networkAcls"]["defaultAction"])


def test_azure_yaml_at_the_root_and_readme():
    assert not (INFRA / "azure.yaml").exists()
    text = (ROOT / "azure.yaml").read_text()
    for line in ("provider: bicep", "path: infra", "module: main", "project: .", "host: function", "language: python"):
        assert f"  {line}\n" in text, line
    readme = (INFRA / "README.md").read_text()
    assert "bicep build" in readme and "what-if" in readme and "identityBasedStorage" in readme
