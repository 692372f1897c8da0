"""System metrics from /proc and /sys (fake files) and the real machine."""

from pathlib import Path

from agent.telemetry.system import SystemSampler, read_cpu_times, read_temperature_c


def write_stat(path: Path, user: int, idle: int) -> None:
    path.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")


def test_cpu_share_between_samples(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, 100, 900)
    sampler = SystemSampler(tmp_path, proc_stat=stat, thermal=tmp_path / "none")
    write_stat(stat, 130, 970)  # 30 busy of 100
    metrics = sampler.sample()
    assert metrics.cpu_percent == 30.0
    assert metrics.temperature_c is None
    assert metrics.disk_free_bytes is not None and metrics.disk_free_bytes > 0


def test_hottest_plausible_thermal_zone(tmp_path: Path) -> None:
    for index, value in enumerate(("41000", "55500", "-1000000", "garbage")):
        zone = tmp_path / f"thermal_zone{index}"
        zone.mkdir()
        (zone / "temp").write_text(value + "\n")
    assert read_temperature_c(tmp_path) == 55.5


def test_missing_files_give_none(tmp_path: Path) -> None:
    assert read_cpu_times(tmp_path / "missing") is None
    metrics = SystemSampler(tmp_path / "missing", proc_stat=tmp_path / "missing").sample()
    assert metrics.cpu_percent is None and metrics.disk_free_bytes is None


def test_the_real_machine() -> None:
    sampler = SystemSampler(Path("."))
    metrics = sampler.sample()
    assert metrics.rss_bytes is not None and metrics.rss_bytes > 1_000_000
