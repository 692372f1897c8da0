"""The A/B install layout: links switched atomically, state files, confirm and revert."""

import fcntl
import json
import os
from pathlib import Path

import pytest

from agent.errors import SelfUpdateError
from agent.selfupdate.layout import CONFIRMED, CURRENT, InstallLayout, InstallSettings, detect_layout
from agent.selfupdate.trial import Trial

TRIAL = Trial(5, "edgefleet-agent v2", "0.2.0", "b", "a", 30.0, 3, 1)


def make_layout(root: Path) -> InstallLayout:
    layout = InstallLayout(root)
    for slot in ("a", "b"):
        (root / "slots" / slot / "bin").mkdir(parents=True)
    layout.write_settings(InstallSettings("/usr/bin/python3", "agent"))
    layout.switch(CURRENT, "a")
    layout.switch(CONFIRMED, "a")
    return layout


def test_switch_points_a_relative_link_at_a_slot(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    layout.switch(CURRENT, "b")
    assert os.readlink(tmp_path / "current") == "slots/b" and layout.target(CURRENT) == "b"
    assert layout.target(CONFIRMED) == "a"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["confirmed", "current", "install.json", "slots"]


def test_foreign_or_missing_links_have_no_target(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    (tmp_path / "current").unlink()
    assert layout.target(CURRENT) is None
    (tmp_path / "current").symlink_to("/usr")
    assert layout.target(CURRENT) is None
    with pytest.raises(SelfUpdateError):
        layout.switch(CURRENT, "c")


def test_slot_of_and_detect_layout_recognise_a_slot_prefix(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    assert layout.slot_of(tmp_path / "current") == "a" and layout.slot_of(tmp_path / "slots" / "b") == "b"
    assert layout.slot_of(tmp_path) is None
    found = detect_layout(tmp_path / "slots" / "b")
    assert found is not None and found[0].root == tmp_path and found[1] == "b"
    assert detect_layout(tmp_path / "elsewhere") is None
    (tmp_path / "install.json").unlink()
    assert detect_layout(tmp_path / "slots" / "b") is None  # slots without install.json: not an A/B install


def test_settings_round_trip_and_errors(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    assert layout.read_settings() == InstallSettings("/usr/bin/python3", "agent")
    (tmp_path / "install.json").write_text(json.dumps({"python": 3}))
    with pytest.raises(SelfUpdateError, match="install.json"):
        layout.read_settings()
    (tmp_path / "install.json").unlink()
    with pytest.raises(SelfUpdateError, match="not an A/B agent install"):
        layout.read_settings()


def test_unreadable_state_files_raise(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    assert layout.read_trial() is None and layout.read_result() is None
    (tmp_path / "trial.json").write_text("{not json")
    with pytest.raises(SelfUpdateError):
        layout.read_trial()
    (tmp_path / "result.json").write_text(json.dumps({"outcome": "confirmed"}))
    with pytest.raises(SelfUpdateError):
        layout.read_result()


def test_confirm_only_the_current_candidate_of_that_trial(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    layout.write_trial(TRIAL)
    assert layout.confirm("b", 5, 1.0) is None  # current still points at a
    layout.switch(CURRENT, "b")
    assert layout.confirm("a", 5, 1.0) is None and layout.confirm("b", 6, 1.0) is None
    assert layout.read_trial() == TRIAL and layout.target(CONFIRMED) == "a"
    result = layout.confirm("b", 5, 2.0)
    assert result is not None and (result.outcome, result.slot, result.version) == ("confirmed", "b", "0.2.0")
    assert layout.target(CONFIRMED) == "b" and layout.read_trial() is None and layout.read_result() == result


def test_revert_makes_the_previous_slot_current_and_confirmed(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    layout.write_trial(TRIAL)
    layout.switch(CURRENT, "b")
    layout.switch(CONFIRMED, "b")  # e.g. a crash between confirming and clearing the trial
    result = layout.revert(TRIAL, "gave up", 3.0)
    assert (result.outcome, result.slot, result.reason) == ("rolled_back", "a", "gave up")
    assert (layout.target(CURRENT), layout.target(CONFIRMED)) == ("a", "a")
    assert layout.read_trial() is None and layout.read_result() == result


def test_the_lock_is_exclusive_between_processes(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    with layout.lock():
        with open(tmp_path / "guard.lock", "a+b") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "guard.lock", "a+b") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
