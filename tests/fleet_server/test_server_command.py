"""``edgefleet server``: starts under uvicorn, answers health, stops on SIGTERM; bad settings are one line."""

import json
import os
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

from fleet_server.processes import free_port, wait_until

EDGEFLEET = Path(sys.executable).parent / "edgefleet"


def clean_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGEFLEET_")}
    env.update(values)
    return env


def http_json(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def test_serves_health_and_stops_cleanly(managed_process, tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = clean_env(EDGEFLEET_DATA_DIR=str(data_dir), EDGEFLEET_EMBEDDED_MQTT_PORT="0",
                    EDGEFLEET_BOOTSTRAP_TOKEN="boot")
    server = managed_process("server", [EDGEFLEET, "server", "--host", "127.0.0.1", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}/api/v1"

    def healthy() -> bool:
        server.check_alive()
        status, body = http_json(f"{base}/health")
        return status == 200 and body.get("mqtt_connected") is True

    wait_until(healthy, 60, "the server's health endpoint")
    token_file = data_dir / "admin_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert http_json(f"{base}/models", token) == (200, [])
    assert http_json(f"{base}/models")[0] == 401
    assert (data_dir / "keys" / "root.json").exists()
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful shutdown
    log = server.log_text()
    assert "server event=stopped" in log and "embedded_broker_stopped" in log
    assert token not in log and "boot" not in log.replace("bootstrap", "")


def run_server_command(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGEFLEET, "server", "--port", str(free_port())], capture_output=True, text=True, timeout=60,
        env=clean_env(EDGEFLEET_DATA_DIR=str(tmp_path / "data"), EDGEFLEET_EMBEDDED_MQTT_PORT="0", **env),
    )


def test_bad_mqtt_url_is_one_error_line(tmp_path: Path) -> None:
    result = run_server_command(tmp_path, EDGEFLEET_MQTT_URL="http://broker:1883")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error, hint = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: MQTT URL must start with mqtt://") and hint.startswith("hint: ")


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    result = run_server_command(tmp_path, EDGEFLEET_MAX_UPLOAD_BYTES="lots")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: invalid setting EDGEFLEET_MAX_UPLOAD_BYTES" in result.stderr


def test_unusable_database_is_one_error_line(tmp_path: Path) -> None:
    result = run_server_command(tmp_path, EDGEFLEET_DATABASE_URL="nosuchdb://x")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: invalid EDGEFLEET_DATABASE_URL" in result.stderr
    port = free_port()  # nothing listens there
    result = run_server_command(tmp_path, EDGEFLEET_DATABASE_URL=f"postgresql+psycopg://u:secretpw@127.0.0.1:{port}/db")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: cannot open or migrate the database" in result.stderr
    assert "secretpw" not in result.stderr
