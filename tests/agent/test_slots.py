"""Model slots: staging, the atomic switch, roll back, and recovery after a crash at every step."""

import hashlib
import os
from pathlib import Path

import pytest

from agent.errors import SlotError
from agent.protocol.metadata import TensorSpec
from agent.slots import CURRENT, PREVIOUS, SLOT_FILE, STAGING, SlotInfo, SlotStore


class PowerCut(Exception):
    pass


def info(data: bytes, version: int) -> SlotInfo:
    return SlotInfo("digits", version, "onnx-fp32", "onnxruntime", "model.onnx", hashlib.sha256(data).hexdigest(),
                    len(data), (TensorSpec("input", "float32", (None, 64)),),
                    (TensorSpec("label", "int64", (None,)),), sequence=version)


def install(store: SlotStore, tmp_path: Path, data: bytes, version: int) -> SlotInfo:
    source = tmp_path / f"v{version}.bin"
    source.write_bytes(data)
    slot = info(data, version)
    store.stage(slot, source)
    store.promote()
    return slot


def versions(store: SlotStore) -> dict[str, int | None]:
    return {name: (slot.release_version if (slot := store.read(name)) else None)
            for name in (CURRENT, PREVIOUS, STAGING)}


def test_promote_shifts_current_to_previous(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    assert versions(store) == {CURRENT: 1, PREVIOUS: None, STAGING: None}
    install(store, tmp_path, b"two" * 100, 2)
    assert versions(store) == {CURRENT: 2, PREVIOUS: 1, STAGING: None}
    install(store, tmp_path, b"three" * 100, 3)
    assert versions(store) == {CURRENT: 3, PREVIOUS: 2, STAGING: None}
    current = store.read(CURRENT)
    assert current is not None
    assert store.artifact_path(CURRENT, current).read_bytes() == b"three" * 100
    assert not list((tmp_path / "slots").glob(".trash-*"))


def test_roll_back_restores_previous_and_drops_current(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    install(store, tmp_path, b"two" * 100, 2)
    restored = store.roll_back()
    assert restored is not None and restored.release_version == 1
    assert versions(store) == {CURRENT: 1, PREVIOUS: None, STAGING: None}


def test_roll_back_without_previous_leaves_no_current(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    assert store.roll_back() is None
    assert versions(store) == {CURRENT: None, PREVIOUS: None, STAGING: None}


def test_incomplete_slots_are_not_taken_for_complete(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    slot = install(store, tmp_path, b"one" * 100, 1)
    artifact = store.artifact_path(CURRENT, slot)
    artifact.write_bytes(b"one" * 50)  # truncated
    assert store.read(CURRENT) is None
    (store.slot_dir(CURRENT) / SLOT_FILE).write_text("{not json")
    assert store.read(CURRENT) is None


def test_promote_refuses_an_incomplete_staging(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    (store.slot_dir(STAGING)).mkdir()
    with pytest.raises(SlotError, match="staging slot is not complete"):
        store.promote()


def test_staged_file_is_a_copy(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    source = tmp_path / "src.bin"
    source.write_bytes(b"abc" * 10)
    store.stage(info(b"abc" * 10, 1), source)
    source.unlink()
    assert store.read(STAGING) is not None


def crash_after(monkeypatch: pytest.MonkeyPatch, renames: int) -> None:
    """Let ``renames`` renames of the slot store happen, then cut the power."""
    real_rename = os.rename
    count = {"n": 0}

    def rename(source: object, target: object) -> None:
        if count["n"] >= renames:
            raise PowerCut()
        count["n"] += 1
        real_rename(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr("agent.slots.os.rename", rename)


# renames done before the cut -> (current, previous) after recovery
PROMOTE_CUTS = {0: (2, 1), 1: (2, None), 2: (3, 2)}
ROLL_BACK_CUTS = {0: (2, 1), 1: (1, None)}


@pytest.mark.parametrize(("renames", "expected"), PROMOTE_CUTS.items())
def test_power_cut_during_promote_leaves_old_or_new_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            renames: int, expected: tuple[int, int | None]) -> None:
    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    install(store, tmp_path, b"two" * 100, 2)
    source = tmp_path / "v3.bin"
    source.write_bytes(b"three" * 100)
    store.stage(info(b"three" * 100, 3), source)
    crash_after(monkeypatch, renames)
    with pytest.raises(PowerCut):
        store.promote()
    monkeypatch.undo()

    recovered = SlotStore(tmp_path / "slots").recover()

    assert recovered is not None
    after = versions(store)
    assert (after[CURRENT], after[PREVIOUS]) == expected
    assert not list((tmp_path / "slots").glob(".trash-*"))


@pytest.mark.parametrize(("renames", "expected"), ROLL_BACK_CUTS.items())
def test_power_cut_during_roll_back_leaves_a_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     renames: int, expected: tuple[int, int | None]) -> None:
    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    install(store, tmp_path, b"two" * 100, 2)
    crash_after(monkeypatch, renames)
    with pytest.raises(PowerCut):
        store.roll_back()
    monkeypatch.undo()

    recovered = SlotStore(tmp_path / "slots").recover()

    assert recovered is not None
    after = versions(store)
    assert (after[CURRENT], after[PREVIOUS]) == expected


def test_power_cut_while_copying_into_staging_keeps_current(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    staging = store.slot_dir(STAGING)
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"thr")  # half a copy, no slot.json yet

    recovered = SlotStore(tmp_path / "slots").recover()

    assert recovered is not None and recovered.release_version == 1
    assert not staging.exists()


def test_recover_on_an_empty_store_is_a_no_op(tmp_path: Path) -> None:
    assert SlotStore(tmp_path / "slots").recover() is None


def test_the_shadow_slot_stays_out_of_every_switch(tmp_path: Path) -> None:
    from agent.slots import SHADOW

    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    source = tmp_path / "candidate.bin"
    source.write_bytes(b"two" * 100)
    store.stage(info(b"two" * 100, 2), source, SHADOW)
    install(store, tmp_path, b"three" * 100, 3)
    store.roll_back()

    assert versions(store) == {CURRENT: 1, PREVIOUS: None, STAGING: None}
    assert store.read(SHADOW).release_version == 2  # type: ignore[union-attr]
    store.discard_shadow()
    assert store.read(SHADOW) is None and not store.slot_dir(SHADOW).exists()
    with pytest.raises(SlotError):
        store.stage(info(b"two" * 100, 2), source, CURRENT)


def test_recover_discards_a_half_written_shadow_slot(tmp_path: Path) -> None:
    from agent.slots import SHADOW

    store = SlotStore(tmp_path / "slots")
    install(store, tmp_path, b"one" * 100, 1)
    shadow = store.slot_dir(SHADOW)
    shadow.mkdir()
    (shadow / "model.onnx").write_bytes(b"tw")  # power cut while copying: no slot.json

    assert SlotStore(tmp_path / "slots").recover().release_version == 1  # type: ignore[union-attr]
    assert not shadow.exists()
