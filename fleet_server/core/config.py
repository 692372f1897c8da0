"""Server settings from ``EDGEFLEET_*`` environment variables (pydantic-settings).

Paths default to locations inside ``data_dir`` so that setting only
``EDGEFLEET_DATA_DIR`` gives a complete, self-contained installation.
"""

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet_server.core.telemetry_config import TelemetryConfig
from fleet_server.errors import ConfigurationError

MIB = 1024 * 1024


class Settings(BaseSettings, TelemetryConfig):  # telemetry/drift/alert fields: core/telemetry_config.py
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", extra="ignore")

    data_dir: Path = Path("./edgefleet-data")
    database_url: str = ""  # empty: SQLite file data_dir/edgefleet.db
    mqtt_url: str = ""  # empty: embedded amqtt broker in-process
    # $share/edgefleet/... on an external broker: set it for two or more replicas. Off by default because
    # Mosquitto 2.0 drops a persistent session's $share subscriptions when it restarts, so what devices
    # publish before the server re-subscribes would be acknowledged and lost; plain ones are restored.
    mqtt_shared_subscription: bool = False
    device_mqtt_url: str = ""  # broker URL handed to devices when it differs from mqtt_url
    embedded_mqtt_host: str = "127.0.0.1"
    embedded_mqtt_port: int = Field(default=1883, ge=0, le=65535)  # 0: pick a free port
    key_dir: Path | None = None  # default data_dir/keys
    artifact_dir: Path | None = None  # default data_dir/artifacts
    public_base_url: str = ""
    artifact_base_url: str | None = None  # returned at enrollment when set
    bootstrap_token: str = ""  # multi-use provisioning token, development/demo only; empty: single-use tokens only
    admin_token: str = ""  # empty: generated into data_dir/admin_token
    session_secret: str = ""  # signs dashboard sessions; empty: generated into data_dir/session_secret
    max_upload_bytes: int = Field(default=512 * MIB, gt=0)
    device_cert_days: float = Field(default=7.0, gt=0, le=365)  # lifetime of device MQTT client certificates
    mqtt_ca_file: Path | None = None  # mqtts:// broker: CA that signed it (default: the fleet CA)
    mqtt_cert_file: Path | None = None  # mqtts:// broker: the server's client certificate (default: fleet CA issued)
    mqtt_key_file: Path | None = None
    directive_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    release_ttl_days: int = Field(default=365, gt=0)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    rollout_tick_s: float = Field(default=1.0, gt=0)  # how often the rollout controller acts
    rollout_lease_ttl_s: float = Field(default=15.0, gt=0)  # another replica takes over after this long
    rollout_health_interval_s: float = Field(default=5.0, gt=0)  # how often health gates read telemetry
    replica_heartbeat_s: float = Field(default=5.0, gt=0)  # replicas on an external broker beat this often
    replica_stale_s: float = Field(default=30.0, gt=0)  # silent this long: its MQTT session is drained

    @field_validator("public_base_url", "mqtt_url", "device_mqtt_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.strip().rstrip("/")

    @field_validator("artifact_base_url")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        value = (value or "").strip().rstrip("/")
        return value or None

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_key_dir(self) -> Path:
        return (self.key_dir or self.resolved_data_dir / "keys").expanduser().resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.resolved_data_dir / "artifacts").expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'edgefleet.db'}"

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.mqtt_url


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus explicit overrides (None values are ignored).

    Raises ``ConfigurationError`` naming the offending variable instead of a
    pydantic traceback.
    """
    values = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or "?"
        raise ConfigurationError(f"invalid setting EDGEFLEET_{field.upper()}: {first.get('msg')}") from None
