"""First boot: enroll from the boot partition's edgefleet.toml through the agent CLI, retry while the
server cannot be reached, forget the token. (The chroot test runs it for real as root.)"""

import json
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.firstboot import first_boot, main, run_enroll_as

BOOT = """# edgefleet.toml
server_url = "http://127.0.0.1:9"
bootstrap_token = "tok-123"
tags = ["line-3"]
device_id = "cam-17"
"""


class FakeEnroll:
    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.calls: list[tuple[str | None, list[str]]] = []

    def __call__(self, user: str | None, argv: list[str]) -> int:
        self.calls.append((user, argv))
        return self.codes.pop(0)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    boot = tmp_path / "edgefleet.toml"
    boot.write_text(BOOT)
    config = tmp_path / "agent.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return boot, config, tmp_path / "data"


def test_enrolls_through_the_cli_and_then_removes_the_token(files: tuple[Path, Path, Path]) -> None:
    boot, config, _ = files
    enroll, sleeps = FakeEnroll(1, 1, 0), []
    assert first_boot(boot, config, "edgefleet", 0, 2.0, 3.0, enroll, sleeps.append) == 0
    assert sleeps == [2.0, 3.0]  # backoff, capped
    user, argv = enroll.calls[-1]
    assert user == "edgefleet" and argv == ["--config", str(config), "enroll", "--server", "http://127.0.0.1:9",
                                            "--token", "tok-123", "--device-id", "cam-17", "--tag", "line-3"]
    text = boot.read_text()
    assert "tok-123" not in text and text.startswith("# edgefleet.toml\n") and 'device_id = "cam-17"' in text


def test_a_usage_error_stops_at_once_and_keeps_the_token(files: tuple[Path, Path, Path]) -> None:
    boot, config, _ = files
    enroll = FakeEnroll(2)
    assert first_boot(boot, config, None, 0, 1.0, 1.0, enroll, lambda s: None) == 2
    assert len(enroll.calls) == 1 and "tok-123" in boot.read_text()


def test_gives_up_after_the_attempts(files: tuple[Path, Path, Path]) -> None:
    boot, config, _ = files
    enroll = FakeEnroll(1, 1, 1)
    assert first_boot(boot, config, None, 3, 0.1, 0.1, enroll, lambda s: None) == 1
    assert len(enroll.calls) == 3 and "tok-123" in boot.read_text()


def test_an_enrolled_device_only_forgets_the_token(files: tuple[Path, Path, Path]) -> None:
    boot, config, data = files
    data.mkdir()
    (data / "enrollment.json").write_text("{}")
    enroll = FakeEnroll()
    assert first_boot(boot, config, None, 0, 1.0, 1.0, enroll, lambda s: None) == 0
    assert enroll.calls == [] and "tok-123" not in boot.read_text()


def test_no_token_and_no_enrollment_is_a_config_error(files: tuple[Path, Path, Path]) -> None:
    boot, config, _ = files
    boot.write_text('server_url = "http://127.0.0.1:9"\n')
    with pytest.raises(ConfigError, match="no bootstrap_token"):
        first_boot(boot, config, None, 0, 1.0, 1.0, FakeEnroll(), lambda s: None)


def test_the_enrollment_runs_the_real_cli_in_a_child(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run_enroll_as(None, ["--data-dir", str(tmp_path), "status"]) == 0
    assert json.loads(capfd.readouterr().out)["enrolled"] is False
    assert run_enroll_as(None, ["enroll", "--server", "ftp://nowhere", "--token", "t"]) == 2
    assert "not an http(s) URL" in capfd.readouterr().err


def test_main_reports_a_missing_boot_config_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--boot-config", str(tmp_path / "none.toml")]) == 2
    assert "hint: write edgefleet.toml" in capsys.readouterr().err


def test_main_reports_a_bad_boot_config(files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    boot, config, _ = files
    boot.write_text('server_url = "gopher://x"\n')
    assert main(["--boot-config", str(boot), "--config", str(config)]) == 2
    assert "server_url must be an http(s) URL" in capsys.readouterr().err


def test_main_refuses_an_unknown_user(files: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    boot, config, _ = files
    assert main(["--boot-config", str(boot), "--config", str(config), "--user", "no-such-user-xyz"]) == 2
    assert "no user" in capsys.readouterr().err
