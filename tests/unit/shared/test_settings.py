import pytest

from shared.settings import DEFAULT_PARTNER_CENTER_URL, Settings, SettingsError


def test_defaults_point_at_the_public_cloud():
    settings = Settings.from_environment({"PCSYNC_STORAGE": "UseDevelopmentStorage=true"})
    assert settings.partner_center_url == DEFAULT_PARTNER_CENTER_URL
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.graph_url == "https://graph.microsoft.com"
    assert settings.calls_per_minute == 450 and settings.shared_budget is True


def test_storage_falls_back_to_the_host_storage_setting():
    settings = Settings.from_environment({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"


def test_missing_storage_is_a_clear_error():
    with pytest.raises(SettingsError, match="PCSYNC_STORAGE"):
        Settings.from_environment({})


@pytest.mark.parametrize("name", ["PCSYNC_PARTNER_CENTER_URL", "PCSYNC_AUTHORITY_HOST", "PCSYNC_GRAPH_URL", "PCSYNC_KEY_VAULT_URL"])
def test_service_urls_must_be_https(name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_environment({"PCSYNC_STORAGE": "x", name: "http://example.test"})


def test_sovereign_cloud_urls_are_taken_as_given():
    settings = Settings.from_environment({
        "PCSYNC_STORAGE": "x",
        "PCSYNC_PARTNER_CENTER_URL": "https://partner.partnercenterapi.microsoftonline.cn/",
        "PCSYNC_AUTHORITY_HOST": "https://login.chinacloudapi.cn",
    })
    assert settings.partner_center_url == "https://partner.partnercenterapi.microsoftonline.cn"
    assert settings.authority_host == "https://login.chinacloudapi.cn"


def test_call_budget_settings():
    settings = Settings.from_environment({"PCSYNC_STORAGE": "x", "PCSYNC_CALLS_PER_MINUTE": "300"})
    assert settings.calls_per_minute == 300 and settings.customer_calls_per_minute is None
    with pytest.raises(SettingsError, match="PCSYNC_CUSTOMER_CALLS_PER_MINUTE"):
        Settings.from_environment({"PCSYNC_STORAGE": "x", "PCSYNC_CUSTOMER_CALLS_PER_MINUTE": "-5"})


def test_shared_budget_setting():
    assert Settings.from_environment({"PCSYNC_STORAGE": "x"}).shared_budget is True
    assert Settings.from_environment({"PCSYNC_STORAGE": "x", "PCSYNC_SHARED_BUDGET": "False"}).shared_budget is False
    assert Settings.from_environment({"PCSYNC_STORAGE": "x", "PCSYNC_SHARED_BUDGET": "true"}).shared_budget is True
    with pytest.raises(SettingsError, match="PCSYNC_SHARED_BUDGET"):
        Settings.from_environment({"PCSYNC_STORAGE": "x", "PCSYNC_SHARED_BUDGET": "yes"})


# -- PCSYNC_STORAGE: connection string or identity-based ---------------------------------------

ACCOUNT = {"PCSYNC_STORAGE__accountName": "stpcsyncabc123"}
URIS = {"PCSYNC_STORAGE__tableServiceUri": "https://127.0.0.1:10002/devstoreaccount1/",
        "PCSYNC_STORAGE__queueServiceUri": "https://127.0.0.1:10001/devstoreaccount1"}


def test_connection_string_form():
    storage = Settings.from_environment({"PCSYNC_STORAGE": "UseDevelopmentStorage=true"}).storage
    assert not storage.identity_based
    assert storage.table_service_uri == storage.queue_service_uri == ""
    assert "UseDevelopmentStorage" not in repr(storage)  # a real connection string holds the account key


def test_account_name_form_uses_the_public_cloud_endpoints():
    storage = Settings.from_environment(ACCOUNT).storage
    assert storage.identity_based and not storage.connection_string
    assert storage.table_service_uri == "https://stpcsyncabc123.table.core.windows.net"
    assert storage.queue_service_uri == "https://stpcsyncabc123.queue.core.windows.net"
    assert not storage.managed_identity and storage.client_id == ""


def test_service_uri_form_is_taken_as_given():
    storage = Settings.from_environment(URIS).storage
    assert storage.table_service_uri == "https://127.0.0.1:10002/devstoreaccount1"
    assert storage.queue_service_uri == "https://127.0.0.1:10001/devstoreaccount1"


def test_user_assigned_managed_identity():
    storage = Settings.from_environment({**ACCOUNT, "PCSYNC_STORAGE__credential": "managedidentity",
                                         "PCSYNC_STORAGE__clientId": "0b6b7a3c-0000-4000-8000-000000000001"}).storage
    assert storage.managed_identity and storage.client_id == "0b6b7a3c-0000-4000-8000-000000000001"
    system_assigned = Settings.from_environment({**ACCOUNT, "PCSYNC_STORAGE__credential": "ManagedIdentity"}).storage
    assert system_assigned.managed_identity and system_assigned.client_id == ""


def test_identity_form_wins_over_the_host_storage_fallback():
    storage = Settings.from_environment({**ACCOUNT, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}).storage
    assert storage.identity_based


def test_no_storage_names_every_form():
    with pytest.raises(SettingsError) as err:
        Settings.from_environment({"PCSYNC_STORAGE": "  "})
    for name in ("PCSYNC_STORAGE", "PCSYNC_STORAGE__accountName", "PCSYNC_STORAGE__tableServiceUri",
                 "PCSYNC_STORAGE__queueServiceUri", "AzureWebJobsStorage"):
        assert name in str(err.value)


def test_connection_string_and_identity_settings_conflict():
    with pytest.raises(SettingsError, match=r"PCSYNC_STORAGE \(a connection string\) and PCSYNC_STORAGE__accountName"):
        Settings.from_environment({"PCSYNC_STORAGE": "UseDevelopmentStorage=true", **ACCOUNT})
    with pytest.raises(SettingsError, match="PCSYNC_STORAGE__credential"):
        Settings.from_environment({"PCSYNC_STORAGE": "x", "PCSYNC_STORAGE__credential": "managedidentity"})


def test_account_name_and_service_uris_conflict():
    with pytest.raises(SettingsError, match="PCSYNC_STORAGE__accountName and PCSYNC_STORAGE__tableServiceUri"):
        Settings.from_environment({**ACCOUNT, "PCSYNC_STORAGE__tableServiceUri": URIS["PCSYNC_STORAGE__tableServiceUri"]})


@pytest.mark.parametrize("env, missing", [
    ({"PCSYNC_STORAGE__tableServiceUri": "https://a.table.core.windows.net"}, "PCSYNC_STORAGE__queueServiceUri"),
    ({"PCSYNC_STORAGE__queueServiceUri": "https://a.queue.core.windows.net"}, "PCSYNC_STORAGE__tableServiceUri"),
    ({"PCSYNC_STORAGE__credential": "managedidentity"}, "PCSYNC_STORAGE__tableServiceUri and PCSYNC_STORAGE__queueServiceUri"),
])
def test_identity_form_needs_both_endpoints(env, missing):
    with pytest.raises(SettingsError, match=f"needs {missing}"):
        Settings.from_environment(env)


@pytest.mark.parametrize("name", ["PCSYNC_STORAGE__tableServiceUri", "PCSYNC_STORAGE__queueServiceUri"])
def test_service_uris_must_be_https(name):
    with pytest.raises(SettingsError, match=f"{name} must be an https URL"):
        Settings.from_environment({**URIS, name: "http://127.0.0.1:10002/devstoreaccount1"})


@pytest.mark.parametrize("name", ["https://stpcsync.table.core.windows.net", "St", "UPPER", "a" * 25])
def test_account_name_must_be_a_storage_account_name(name):
    with pytest.raises(SettingsError, match="PCSYNC_STORAGE__accountName must be a storage account name"):
        Settings.from_environment({"PCSYNC_STORAGE__accountName": name})


def test_credential_and_client_id_follow_the_functions_rules():
    with pytest.raises(SettingsError, match="PCSYNC_STORAGE__credential must be 'managedidentity'"):
        Settings.from_environment({**ACCOUNT, "PCSYNC_STORAGE__credential": "clientsecret"})
    with pytest.raises(SettingsError, match="PCSYNC_STORAGE__clientId needs PCSYNC_STORAGE__credential=managedidentity"):
        Settings.from_environment({**ACCOUNT, "PCSYNC_STORAGE__clientId": "0b6b7a3c-0000-4000-8000-000000000001"})


def test_storage_settings_refuse_both_or_neither_form_when_built_directly():
    from shared.settings import StorageSettings

    with pytest.raises(SettingsError):
        StorageSettings()
    with pytest.raises(SettingsError):
        StorageSettings(connection_string="x", table_service_uri="https://a", queue_service_uri="https://b")
    with pytest.raises(SettingsError):
        StorageSettings(table_service_uri="https://a")


# -- Runtime: which credential the storage clients get ----------------------------------------

class RecordingManagedIdentity:
    """Replaces azure.identity.ManagedIdentityCredential to see how the runtime builds it (there
    is no managed identity endpoint here)."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        RecordingManagedIdentity.built.append(kwargs)

    def get_token(self, *scopes, **kwargs):  # pragma: no cover - never called
        raise AssertionError("no token expected")


def test_runtime_uses_the_user_assigned_identity_for_storage(monkeypatch):
    import azure.identity

    from bootstrap import Services

    RecordingManagedIdentity.built.clear()
    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", RecordingManagedIdentity)
    settings = Settings.from_environment({**ACCOUNT, "PCSYNC_STORAGE__credential": "managedidentity",
                                          "PCSYNC_STORAGE__clientId": "client-1"})
    runtime = Services(settings)
    assert RecordingManagedIdentity.built == []  # storage clients are built on first use
    assert isinstance(runtime.tables._service.credential, RecordingManagedIdentity)
    assert RecordingManagedIdentity.built == [{"client_id": "client-1"}]
    assert runtime.tables._service.url.startswith("https://stpcsyncabc123.table.core.windows.net")
    assert runtime.queues._service.url.startswith("https://stpcsyncabc123.queue.core.windows.net")
    assert runtime._credential is None  # Key Vault still gets the runtime's own credential, built lazily


def test_runtime_shares_its_credential_with_storage_without_managed_identity_setting():
    from bootstrap import Services

    class Token:
        def get_token(self, *scopes, **kwargs):  # pragma: no cover - never called
            raise AssertionError("no token expected")

    credential = Token()
    runtime = Services(Settings.from_environment(ACCOUNT), credential=credential)
    assert runtime.tables._service.credential is credential and runtime.queues._service.credential is credential


def test_runtime_builds_default_azure_credential_for_storage_when_none_is_given():
    from azure.identity import DefaultAzureCredential

    from bootstrap import Services

    runtime = Services(Settings.from_environment(ACCOUNT))
    assert isinstance(runtime.credential, DefaultAzureCredential)  # reused for Key Vault
    assert runtime.tables._service.credential is runtime.credential


# -- the app's credential: AZURE_* read into the typed settings --------------------------------

SERVICE_PRINCIPAL = {"PCSYNC_STORAGE": "x", "AZURE_TENANT_ID": "cd613e30-d8f1-4adf-91b7-584a2265b1f5",
                     "AZURE_CLIENT_ID": "35bf992d-c9e9-4616-a12e-7696a6cecc1b", "AZURE_CLIENT_SECRET": "s3cr3t-value~x"}


def test_credential_settings_come_from_the_given_mapping_and_hide_the_secret():
    settings = Settings.from_environment(SERVICE_PRINCIPAL)
    identity = settings.azure_credential
    assert identity.uses_client_secret and identity.tenant_id == SERVICE_PRINCIPAL["AZURE_TENANT_ID"]
    assert "s3cr3t-value~x" not in repr(settings)
    assert settings.credential_authority_host == settings.authority_host  # AZURE_AUTHORITY_HOST not set
    sovereign = Settings.from_environment(SERVICE_PRINCIPAL | {"AZURE_AUTHORITY_HOST": "https://login.microsoftonline.us/"})
    assert sovereign.credential_authority_host == "https://login.microsoftonline.us"


@pytest.mark.parametrize("missing", ["AZURE_TENANT_ID", "AZURE_CLIENT_ID"])
def test_a_client_secret_without_its_app_is_a_clear_error(missing):
    incomplete = {k: v for k, v in SERVICE_PRINCIPAL.items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        Settings.from_environment(incomplete)
    with pytest.raises(SettingsError, match="AZURE_AUTHORITY_HOST"):
        Settings.from_environment(SERVICE_PRINCIPAL | {"AZURE_AUTHORITY_HOST": "http://login.example"})


def test_runtime_builds_a_client_secret_credential_from_the_settings():
    from azure.identity import ClientSecretCredential

    from bootstrap import Services

    runtime = Services(Settings.from_environment(SERVICE_PRINCIPAL | {"PCSYNC_AUTHORITY_HOST": "https://127.0.0.1:8443"}))
    credential = runtime.credential
    assert isinstance(credential, ClientSecretCredential)
    assert credential._authority == "https://127.0.0.1:8443" and credential._instance_discovery is False


def test_runtime_passes_a_user_assigned_identity_to_default_azure_credential():
    from azure.identity import DefaultAzureCredential

    from bootstrap import app_credential

    credential = app_credential(Settings.from_environment({"PCSYNC_STORAGE": "x", "AZURE_CLIENT_ID": "mi-client"}))
    assert isinstance(credential, DefaultAzureCredential)
