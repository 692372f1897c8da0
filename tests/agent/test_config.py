"""Agent configuration: defaults, TOML, EDGEFLEET_AGENT_* overrides, CLI overrides, and errors."""

from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    config = load_config(None, env={}, overrides={"data_dir": tmp_path})
    assert config.data_dir == tmp_path
    assert (config.inference_host, config.inference_port) == ("127.0.0.1", 8080)
    assert config.heartbeat_interval_s == 30.0
    assert config.mqtt_url is None and config.artifact_base_url is None
    assert config.tags == () and config.runtimes is None


def test_toml_values_are_read_and_relative_data_dir_is_next_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
data_dir = "state"
inference_port = 9000
heartbeat_interval_s = 5
download_retry_base_s = 0.5
tags = ["kitchen", "floor-2"]
arch = "armv7l"
ram_mb = 512
runtimes = ["tflite"]
mqtt_url = "mqtt://broker.local:1883/"
log_level = "debug"
""")
    config = load_config(path, env={})
    assert config.data_dir == tmp_path / "state"
    assert config.inference_port == 9000
    assert config.heartbeat_interval_s == 5.0
    assert config.tags == ("kitchen", "floor-2")
    assert (config.arch, config.ram_mb, config.runtimes) == ("armv7l", 512, ("tflite",))
    assert config.mqtt_url == "mqtt://broker.local:1883"
    assert config.log_level == "DEBUG"


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'inference_port = 9000\nheartbeat_interval_s = 10\ntags = ["a"]\n')
    env = {"EDGEFLEET_AGENT_INFERENCE_PORT": "9100", "EDGEFLEET_AGENT_TAGS": "x, y",
           "EDGEFLEET_AGENT_DATA_DIR": str(tmp_path / "env-dir"), "EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "2.5"}
    config = load_config(path, env=env, overrides={"inference_port": 0, "log_level": None})
    assert config.inference_port == 0
    assert config.heartbeat_interval_s == 2.5
    assert config.tags == ("x", "y")
    assert config.data_dir == tmp_path / "env-dir"


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "inference_port = 9300\n")
    assert load_config(None, env={"EDGEFLEET_AGENT_CONFIG": str(path)}).inference_port == 9300


def test_empty_environment_value_unsets_an_optional_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'mqtt_url = "mqtt://a:1"\n')
    assert load_config(path, env={"EDGEFLEET_AGENT_MQTT_URL": ""}).mqtt_url is None


@pytest.mark.parametrize(("text", "env", "message"), [
    ("inference_port = 'eighty'\n", {}, "inference_port .* must be an integer"),
    ("inference_port = 70000\n", {}, "inference_port must be between 0 and 65535"),
    ("heartbeat_interval_s = 0\n", {}, "heartbeat_interval_s must be > 0"),
    ("colour = 'blue'\n", {}, "unknown field.*colour"),
    ("tags = 'kitchen'\n", {}, "tags .* must be a list"),
    ("device_id = 'Bad_ID'\n", {}, "device_id .* invalid device id"),
    ("mqtt_url = 'http://x'\n", {}, "mqtt_url .* must be a URL starting with mqtt://"),
    ("download_retry_base_s = 5\ndownload_retry_max_s = 1\n", {}, "download_retry_max_s must be >="),
    ("runtimes = ['tensorrt']\n", {}, "runtimes must only name onnxruntime, tflite"),
    ("log_level = 'LOUD'\n", {}, "log_level must be a logging level"),
    ("", {"EDGEFLEET_AGENT_RAM_MB": "lots"}, "EDGEFLEET_AGENT_RAM_MB must be an integer"),
    ("inference_port = [\n", {}, "not valid TOML"),
])
def test_bad_values_raise_one_error_naming_the_field(tmp_path: Path, text: str, env: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env=env)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_config_is_an_immutable_dataclass(tmp_path: Path) -> None:
    config = load_config(None, env={}, overrides={"data_dir": tmp_path})
    assert isinstance(config, AgentConfig)
    with pytest.raises(AttributeError):
        config.inference_port = 1  # type: ignore[misc]
