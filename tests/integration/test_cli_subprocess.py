"""The installed ``edgefleet`` executable against the real server process: what a
script sees (stdout JSON, exit codes, stderr lines) and shell completion."""

import json
import os
import subprocess

import pytest

from fleet_server.localfleet import BIN_DIR
from fleet_server.processes import free_port
from tests.integration.conftest import MODELS, publish_release, unique_model

pytestmark = pytest.mark.slow
EDGEFLEET = str(BIN_DIR / "edgefleet")


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("EDGEFLEET_")}
    return subprocess.run([EDGEFLEET, *args], capture_output=True, text=True, timeout=60, env={**clean, **env})


def test_scripts_get_json_and_exit_codes(server, agents, tmp_path):
    agent = agents()
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": server.admin_token,
           "EDGEFLEET_CONFIG": str(tmp_path / "cli.json")}
    listed = run("device", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    devices = {device["device_id"]: device for device in json.loads(listed.stdout)["devices"]}
    assert devices[agent.device_id]["online"] is True

    refused = run("device", "list", **{**env, "EDGEFLEET_TOKEN": "wrong"})
    assert refused.returncode == 1 and refused.stdout == ""
    error, hint = refused.stderr.splitlines()
    assert error.startswith("error: GET /devices -> 401") and hint.startswith("hint: check the token")
    down = run("model", "list", **{**env, "EDGEFLEET_SERVER": f"http://127.0.0.1:{free_port()}"})
    assert down.returncode == 3 and "Traceback" not in down.stderr and len(down.stderr.splitlines()) == 2
    usage = run("device", "list", "--limit", "0", **env)
    assert usage.returncode == 2


def test_deployment_create_waits_with_a_progress_bar(server, client, agents, tmp_path):
    agent = agents()
    version = publish_release(client, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "cli-deploy"), "cli-deploy")
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": server.admin_token, "COLUMNS": "120",
           "EDGEFLEET_CONFIG": str(tmp_path / "cli.json")}
    done = run("deployment", "create", f"cli-deploy:{version}", "--device", agent.device_id, "--wait", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1/1" in done.stdout and "succeeded 1" in done.stdout
    assert "downloading" in done.stdout and agent.device_id in done.stdout  # the final table with the history


def test_shell_completion_is_installable_and_completes_commands(tmp_path):
    script = run("--show-completion", "bash")
    assert script.returncode == 0 and "_edgefleet_completion" in script.stdout
    installed = subprocess.run([EDGEFLEET, "--install-completion", "bash"], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"})
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / ".bash_completions" / "edgefleet.sh").exists()
    assert "edgefleet.sh" in (tmp_path / ".bashrc").read_text()
    completed = run(COMP_WORDS="edgefleet device l", COMP_CWORD="2", _EDGEFLEET_COMPLETE="complete_bash")
    assert "list" in completed.stdout.split()
