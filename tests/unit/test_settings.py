import pytest

from shared.settings import DEFAULT_PARTNER_CENTER_URL, Settings, SettingsError


def test_defaults_point_at_the_public_cloud():
    settings = Settings.from_environment({"PCSYNC_STORAGE": "UseDevelopmentStorage=true"})
    assert settings.partner_center_url == DEFAULT_PARTNER_CENTER_URL
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.graph_url == "https://graph.microsoft.com"
    assert settings.schedules["customers"]


def test_storage_falls_back_to_the_host_storage_setting():
    settings = Settings.from_environment({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert settings.storage_connection == "UseDevelopmentStorage=true"


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
