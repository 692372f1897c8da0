"""The device clock: a configured offset skews every expiry decision the agent makes."""

from datetime import UTC, datetime, timedelta

from agent.clock import DeviceClock
from agent.config import load_config


def test_offset_moves_the_device_clock() -> None:
    before = datetime.now(UTC)
    ahead = DeviceClock(3600).now()
    behind = DeviceClock(-86400).now()
    after = datetime.now(UTC)
    assert before + timedelta(hours=1) <= ahead <= after + timedelta(hours=1)
    assert before - timedelta(days=1) <= behind <= after - timedelta(days=1)
    assert ahead.tzinfo is UTC


def test_offset_comes_from_the_environment(tmp_path) -> None:
    config = load_config(env={"EDGEFLEET_AGENT_DATA_DIR": str(tmp_path), "EDGEFLEET_AGENT_CLOCK_OFFSET_S": "-90.5"})
    assert config.clock_offset_s == -90.5
    assert load_config(env={"EDGEFLEET_AGENT_DATA_DIR": str(tmp_path)}).clock_offset_s == 0.0
