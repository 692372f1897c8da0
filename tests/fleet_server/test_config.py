"""Settings: everything defaults into the data directory; env names are EDGEFLEET_*."""

from pathlib import Path

import pytest

from fleet_server.core.config import Settings, load_settings
from fleet_server.errors import ConfigurationError


def test_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'edgefleet.db'}"
    assert settings.resolved_key_dir == tmp_path.resolve() / "keys"
    assert settings.resolved_artifact_dir == tmp_path.resolve() / "artifacts"
    assert settings.uses_embedded_broker and settings.embedded_mqtt_port == 1883
    assert settings.max_upload_bytes == 512 * 1024 * 1024
    assert settings.artifact_base_url is None


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEFLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EDGEFLEET_MQTT_URL", "mqtt://broker:1884/")
    monkeypatch.setenv("EDGEFLEET_ARTIFACT_BASE_URL", "https://cdn.example.org/")
    monkeypatch.setenv("EDGEFLEET_KEY_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("EDGEFLEET_DIRECTIVE_TTL_S", "60")
    settings = load_settings(data_dir=None)
    assert settings.resolved_data_dir == tmp_path.resolve()
    assert settings.mqtt_url == "mqtt://broker:1884" and not settings.uses_embedded_broker
    assert settings.artifact_base_url == "https://cdn.example.org"
    assert settings.resolved_key_dir == tmp_path.resolve() / "elsewhere"
    assert settings.directive_ttl_s == 60
    assert load_settings(data_dir=tmp_path / "cli").resolved_data_dir == (tmp_path / "cli").resolve()


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFLEET_EMBEDDED_MQTT_PORT", "70000")
    with pytest.raises(ConfigurationError, match="EDGEFLEET_EMBEDDED_MQTT_PORT"):
        load_settings()
