"""local.settings.json as `func start` reads it, the local function key, queue bodies and timer
schedules."""
from __future__ import annotations

import base64
import json
import stat
from datetime import datetime, timezone

import pytest
from azure.functions.timer import TimerRequest

from devhost import local_settings
from devhost.index import QueueOptions, TimerFunction
from devhost.queue_pump import connection_string, decode_body
from devhost.timers import describe, fire, schedule


def _settings(tmp_path, values):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def test_values_go_into_the_environment_where_not_already_set(tmp_path):
    path = _settings(tmp_path, {"A": "from file", "B": 2})
    environ = {"A": "from environment"}
    local_settings.load_into(path, environ)
    assert environ == {"A": "from environment", "B": "2"}


def test_a_missing_function_key_is_generated_and_written_back(tmp_path):
    path = _settings(tmp_path, {"A": "1"})
    environ: dict[str, str] = {}
    key = local_settings.ensure_function_key(path, environ)
    assert len(key) >= 32 and environ[local_settings.FUNCTION_KEY_SETTING] == key
    assert local_settings.function_key(path) == key
    assert json.loads(path.read_text())["Values"]["A"] == "1"   # the rest of the file is kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_settings.ensure_function_key(path, {}) == key   # and read back next time


def test_the_environment_s_function_key_wins(tmp_path):
    path = _settings(tmp_path, {})
    assert local_settings.ensure_function_key(path, {local_settings.FUNCTION_KEY_SETTING: "env-key"}) == "env-key"
    assert local_settings.function_key(path) == ""


@pytest.mark.parametrize("text, message", [(None, "not found"), ("{", "not a readable"),
                                           ('{"Values": []}', "must be an object"),
                                           ('{"IsEncrypted": true, "Values": {}}', "encrypted")])
def test_an_unusable_settings_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "local.settings.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(local_settings.LocalSettingsError, match=message):
        local_settings.read(path)


def test_queue_bodies_are_base64_decoded_as_host_json_says():
    assert decode_body(base64.b64encode(b'{"a":1}').decode(), QueueOptions()) == b'{"a":1}'
    assert decode_body("{not base64}", QueueOptions()) is None
    assert decode_body("plain", QueueOptions(base64=False)) == b"plain"


def test_the_trigger_connection_is_an_app_setting():
    assert connection_string("S", {"S": " cs "}) == "cs"
    assert connection_string("S", {"S__connectionString": "cs2"}) == "cs2"
    with pytest.raises(KeyError):
        connection_string("S", {})


def _timer(calls: list, schedule_text: str = "%SCHEDULE%", fail: bool = False) -> TimerFunction:
    def tick(timer: TimerRequest) -> None:
        calls.append(timer.past_due)
        if fail:
            raise RuntimeError("boom")

    return TimerFunction("tick", schedule_text, False, "timer", tick)


def test_a_schedule_resolves_from_the_settings_and_shows_its_next_occurrences():
    timer = schedule(_timer([]), {"SCHEDULE": "0 0 */4 * * *"})
    shown = describe(timer, now=datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc))
    assert shown == ("Timer tick: '0 0 */4 * * *', next 2026-01-01T04:00:00Z, 2026-01-01T08:00:00Z, "
                     "2026-01-01T12:00:00Z")


@pytest.mark.parametrize("environ, message", [({}, "SCHEDULE is not set"),
                                              ({"SCHEDULE": "0 */5 * * *"}, "NCRONTAB has six"),
                                              ({"SCHEDULE": "0 0 H * * *"}, "not a valid NCRONTAB")])
def test_a_bad_schedule_is_refused_with_the_reason(environ, message):
    with pytest.raises(ValueError, match=message):
        schedule(_timer([]), environ)


def test_firing_passes_a_timer_request_and_survives_a_failure():
    calls: list = []
    assert fire(schedule(_timer(calls), {"SCHEDULE": "0 0 * * * *"}), past_due=True)
    assert not fire(schedule(_timer(calls, fail=True), {"SCHEDULE": "0 0 * * * *"}), past_due=False)
    assert calls == [True, False]
