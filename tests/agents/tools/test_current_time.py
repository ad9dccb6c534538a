import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings

from agents.tools import ToolScope, ToolSet
from agents.tools.current_time import TOOL


def call(tmp_path, **arguments):
    scope = ToolScope(owner_id=1, thread_id=1, agent_id=1, workspace=tmp_path)
    return ToolSet([TOOL], scope).call("current_time", json.dumps(arguments))


def test_it_tells_the_time_in_a_named_zone(tmp_path):
    result = call(tmp_path, timezone="Asia/Kolkata")

    answer = json.loads(result.content)
    moment = datetime.fromisoformat(answer["iso"])
    assert not result.is_error
    assert answer["timezone"] == "Asia/Kolkata"
    assert answer["utc_offset"] == "+05:30"
    assert moment.utcoffset() == timedelta(hours=5, minutes=30)
    assert answer["weekday"] == moment.strftime("%A")
    assert abs(moment - datetime.now(ZoneInfo("UTC"))) < timedelta(seconds=5)


def test_it_follows_daylight_saving_time(tmp_path):
    answer = json.loads(call(tmp_path, timezone="America/New_York").content)

    expected = datetime.now(ZoneInfo("America/New_York")).utcoffset()
    assert datetime.fromisoformat(answer["iso"]).utcoffset() == expected
    assert answer["abbreviation"] in ("EST", "EDT")


@pytest.mark.parametrize("arguments", [{}, {"timezone": ""}])
@override_settings(TIME_ZONE="Europe/Berlin")
def test_it_uses_the_owners_zone_by_default(tmp_path, arguments):
    answer = json.loads(call(tmp_path, **arguments).content)

    assert answer["timezone"] == "Europe/Berlin"
    assert answer["utc_offset"] in ("+01:00", "+02:00")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "europe/berlin", "../etc/passwd", "/etc/localtime"])
def test_it_refuses_an_unknown_zone_naming_an_example(tmp_path, zone):
    result = call(tmp_path, timezone=zone)

    assert result.is_error
    assert "Unknown time zone" in result.error
    assert "Europe/Berlin" in result.error


def test_it_refuses_arguments_it_does_not_take(tmp_path):
    result = call(tmp_path, timezone="UTC", format="unix")

    assert result.is_error
    assert "format" in result.error
