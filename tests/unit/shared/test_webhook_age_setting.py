"""PCSYNC_WEBHOOK_MAX_AGE_DAYS: the webhook age window (issue 9 point 15), default 7 days."""
import pytest

from shared.settings import Settings, SettingsError

BASE = {"PCSYNC_STORAGE": "UseDevelopmentStorage=true"}


def test_default_and_given():
    assert Settings.from_environment(BASE).webhook_max_age_days == 7
    assert Settings.from_environment(BASE | {"PCSYNC_WEBHOOK_MAX_AGE_DAYS": " 30 "}).webhook_max_age_days == 30


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "week"])
def test_not_a_whole_number_of_days_is_refused(raw):
    with pytest.raises(SettingsError, match="PCSYNC_WEBHOOK_MAX_AGE_DAYS"):
        Settings.from_environment(BASE | {"PCSYNC_WEBHOOK_MAX_AGE_DAYS": raw})
