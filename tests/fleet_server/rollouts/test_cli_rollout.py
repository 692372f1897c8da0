"""``edgefleet rollout ...`` through typer's CliRunner against a real server (uvicorn in a thread)."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from typer.testing import CliRunner

from fleet_server.cli import app
from fleet_server.cli_context import CliUsageError
from fleet_server.cli_rollout_args import parse_duration, parse_phases, parse_release, parse_start_at, parse_target
from tests.fleet_server.conftest import ADMIN_TOKEN, BOOTSTRAP_TOKEN, build_onnx_model
from tests.fleet_server.test_cli_operator import LiveServer


def test_release_target_phase_and_duration_spellings() -> None:
    assert parse_release("digits@3") == {"name": "digits", "version": 3}
    assert parse_target(["tag:line-3", "id:pi-1,pi-2", "arch:aarch64", "min-ram:512", "runtime:tflite"]) == {
        "tags": ["line-3"], "device_ids": ["pi-1", "pi-2"], "arch": ["aarch64"], "min_ram_mb": 512,
        "runtimes": ["tflite"]}
    assert parse_target(["all"]) == {"all": True}
    assert parse_phases("1,10%,100%", 5.0, 0.8) == [
        {"count": 1, "bake_s": 5.0, "success_threshold": 0.8}, {"share": 0.1, "bake_s": 5.0, "success_threshold": 0.8},
        {"share": 1.0, "bake_s": 5.0, "success_threshold": 0.8}]
    assert [parse_duration(text, "x") for text in ("90", "90s", "1.5m", "2h", "1d")] == [90, 90, 90, 7200, 86400]


@pytest.mark.parametrize(("call", "args"), [
    (parse_release, ("digits",)), (parse_release, ("digits@v3",)), (parse_target, (["arch:aarch64"],)),
    (parse_target, (["size:3"],)), (parse_target, (["min-ram:lots"],)), (parse_phases, ("10%,abc", 1, 1)),
    (parse_phases, ("150%", 1, 1)), (parse_phases, ("", 1, 1)), (parse_duration, ("soon", "x")),
])
def test_bad_spellings_are_usage_errors(call, args) -> None:
    with pytest.raises(CliUsageError):
        call(*args)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("cli-rollout-server")
    server = LiveServer(directory / "data").start()
    with httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        for index in range(4):
            body = {"device_id": f"clr-{index}", "bootstrap_token": BOOTSTRAP_TOKEN, "arch": "aarch64",
                    "ram_mb": 1024, "runtimes": ["onnxruntime"], "tags": ["line-3"]}
            assert http.post("/devices/enroll", json=body).status_code == 201
        with open(build_onnx_model(directory / "model.onnx"), "rb") as handle:
            assert http.post("/models", files={"file": ("model.onnx", handle)},
                             data={"name": "clr-model"}).status_code == 201
        assert http.post("/releases", json={"model": "clr-model", "version": 1}).status_code == 201
    try:
        yield server
    finally:
        server.stop()


def run(live: LiveServer, *args: str) -> object:
    return CliRunner().invoke(app, list(args), env={"EDGEFLEET_SERVER": live.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN,
                                                    "EDGEFLEET_CONFIG": "/nonexistent/cli.json"})


def test_create_with_defaults_then_operate_and_watch(live: LiveServer) -> None:
    created = run(live, "rollout", "create", "clr-model@1", "--target", "tag:line-3", "--draft", "--json")
    assert created.exit_code == 0, created.output
    rollout = json.loads(created.output)
    assert rollout["state"] == "draft" and [p["share"] for p in rollout["phase_details"]] == [0.1, 0.5, 1.0]
    assert rollout["phase_details"][0]["bake_s"] == 60 and rollout["criteria"]["auto_rollback"] is True
    rollout_id = str(rollout["id"])

    table = run(live, "rollout", "show", rollout_id)
    assert table.exit_code == 0 and "install clr-model v1, draft (phase 1 of 3)" in table.output
    assert "10%" in table.output and "4 pending" in table.output
    assert run(live, "rollout", "start", rollout_id).exit_code == 0
    assert "paused" in run(live, "rollout", "pause", rollout_id).output
    refused = run(live, "rollout", "pause", rollout_id)
    assert refused.exit_code == 1 and "cannot pause" in refused.output and "hint:" in refused.output
    assert run(live, "rollout", "resume", rollout_id).exit_code == 0
    assert run(live, "rollout", "abort", rollout_id).exit_code == 0
    listed = run(live, "rollout", "list", "--state", "aborted")
    assert listed.exit_code == 0 and "aborted by" in listed.output
    assert [r["id"] for r in json.loads(run(live, "rollout", "list", "--json").output)] == [rollout["id"]]

    watched = run(live, "rollout", "watch", rollout_id, "--interval", "0.1")
    assert watched.exit_code == 1 and "aborted" in watched.output  # ended, but not successfully


def test_usage_errors_exit_2_with_a_hint(live: LiveServer) -> None:
    for args in (["clr-model", "--target", "tag:line-3"], ["clr-model@1", "--target", "size:3"],
                 ["clr-model@1", "--target", "tag:line-3", "--phases", "10%,half"],
                 ["clr-model@1", "--target", "tag:line-3", "--bake", "soon"]):
        result = run(live, "rollout", "create", *args)
        assert result.exit_code == 2 and "hint:" in result.output, (args, result.output)
    missing = run(live, "rollout", "show", "999999")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_start_at_spellings() -> None:
    now = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    assert parse_start_at("+2h", now) == "2026-12-01T03:00:00+00:00"
    assert parse_start_at("2026-12-01T02:00+01:00") == "2026-12-01T02:00:00+01:00"
    local = datetime.fromisoformat(parse_start_at("2026-12-01T02:00"))
    assert local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2026, 12, 1, 2, 0)
    for bad in ("tomorrow", "+soon", "2026-13-01T00:00"):
        with pytest.raises(CliUsageError):
            parse_start_at(bad)


def test_create_scheduled_then_cancel(live: LiveServer) -> None:
    created = run(live, "rollout", "create", "clr-model@1", "--target", "tag:line-3", "--start-at", "+3h")
    assert created.exit_code == 0, created.output
    assert "starts at " in created.output
    rollout = json.loads(run(live, "rollout", "list", "--json").output)[0]
    assert rollout["state"] == "draft"
    starts = datetime.fromisoformat(rollout["start_at"]) - datetime.now(UTC)
    assert timedelta(hours=2, minutes=55) < starts <= timedelta(hours=3)
    assert run(live, "rollout", "abort", str(rollout["id"])).exit_code == 0
    past = run(live, "rollout", "create", "clr-model@1", "--target", "tag:line-3", "--start-at",
               "2020-01-01T00:00+00:00")
    assert past.exit_code == 1 and "is in the past" in past.output
