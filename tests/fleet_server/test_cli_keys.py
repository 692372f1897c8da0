"""``edgefleet keys init`` and ``edgefleet keys show``, through the real entry point."""

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.protocol.canonical import parse_json
from agent.protocol.metadata import Role
from fleet_server.cli import main
from fleet_server.keyring import load_keyring


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgefleet", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_keys_init_creates_a_verifiable_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "keys"
    code, out, err = run_cli(monkeypatch, capsys, "keys", "init", str(directory), "--root-keys", "3",
                             "--threshold", "2")
    assert code == 0, err
    for name in ("root-1.pem", "root-2.pem", "root-3.pem", "release.pem", "rollout.pem"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    keyring = load_keyring(directory)
    assert keyring.root.roles[Role.ROOT].threshold == 2
    for spec in keyring.root.roles.values():
        for keyid in spec.keyids:
            assert keyid in out
    assert "2 of 3" in out


def test_keys_show_prints_key_ids_as_a_table_and_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(monkeypatch, capsys, "keys", "init", str(tmp_path / "keys"))
    (tmp_path / "keys" / "release.pem").unlink()
    root = load_keyring(tmp_path / "keys").root

    code, out, _ = run_cli(monkeypatch, capsys, "keys", "show", str(tmp_path / "keys"))
    assert code == 0
    assert "version 1" in out
    for role, spec in root.roles.items():
        line = next(line for line in out.splitlines() if spec.keyids[0] in line)
        assert line.startswith(role.value)
        assert line.endswith("no" if role is Role.RELEASE else "yes")

    code, out, _ = run_cli(monkeypatch, capsys, "keys", "show", str(tmp_path / "keys"), "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["version"] == 1
    assert shown["roles"]["rollout"]["keys"] == [{"keyid": root.roles[Role.ROLLOUT].keyids[0],
                                                   "private_key_here": True}]
    assert shown["roles"]["release"]["keys"][0]["private_key_here"] is False
    assert shown["expires"] == parse_json((tmp_path / "keys" / "root.json").read_bytes())["signed"]["expires"]


@pytest.mark.parametrize("args", [
    ("keys", "init", "{existing}"),
    ("keys", "init", "{file}/keys"),
    ("keys", "init", "{new}", "--threshold", "2"),
    ("keys", "show", "{new}"),
])
def test_errors_are_one_line_and_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("keep me")
    (tmp_path / "file").write_text("a file")
    paths = {"existing": tmp_path / "existing", "file": tmp_path / "file", "new": tmp_path / "new"}
    code, out, err = run_cli(monkeypatch, capsys, *(arg.format(**paths) for arg in args))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert (tmp_path / "existing" / "notes.txt").read_text() == "keep me"


def test_existing_directory_error_through_the_console_script(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "root.json").write_text("{}")
    result = subprocess.run([sys.executable, "-m", "fleet_server.cli", "keys", "init", str(tmp_path / "keys")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    expected = f"error: {tmp_path / 'keys'} already holds files; refusing to overwrite keys"
    hint = "hint: choose a new or empty directory: existing keys are never overwritten"
    assert result.stderr.splitlines() == [expected, hint]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
