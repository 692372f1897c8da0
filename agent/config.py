"""Agent configuration: defaults < TOML file < ``EDGEFLEET_AGENT_*`` environment < CLI flags.

The TOML file holds flat top-level keys named like the ``AgentConfig`` fields
(``inference_port = 8080``); the environment variable of a field is its name
upper-cased behind ``EDGEFLEET_AGENT_`` (``EDGEFLEET_AGENT_INFERENCE_PORT``),
lists there are comma-separated and an empty value means "unset". A relative
``data_dir`` in the file is resolved against the file's directory. Any bad
value raises one ``ConfigError`` naming the field and where it came from.
"""

import dataclasses
import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.protocol.errors import InvalidDeviceIdError
from agent.protocol.metadata import Runtime
from agent.protocol.topics import validate_device_id

ENV_PREFIX = "EDGEFLEET_AGENT_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
MIB = 1024 * 1024


def default_data_dir() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/edgefleet-agent")
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "edgefleet-agent"


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    server_url: str | None = None  # set by enrollment; here only to override
    device_id: str | None = None  # enrollment default (else the sanitized hostname)
    mqtt_url: str | None = None  # overrides the URL the server handed out at enrollment
    artifact_base_url: str | None = None  # overrides the enrollment's artifact base URL
    inference_host: str = "127.0.0.1"
    inference_port: int = 8080  # 0: pick a free port, written to <data_dir>/inference_port
    heartbeat_interval_s: float = 30.0
    download_timeout_s: float = 30.0  # a transfer with no bytes for this long is retried
    download_retry_base_s: float = 1.0
    download_retry_max_s: float = 60.0
    download_max_attempts: int = 0  # failed attempts in a row without progress; 0: until the directive expires
    health_check_latency_ms: float = 2000.0
    self_update_report_timeout_s: float = 120.0  # a new agent must connect and report within this after a start
    self_update_max_starts: int = 3  # starts of a new agent without a report before the previous one comes back
    max_request_bytes: int = 16 * MIB
    telemetry_window_s: float = 60.0  # a telemetry window closes after this long ...
    telemetry_max_inferences: int = 0  # ... or after this many requests (0: no limit)
    telemetry_queue_max_bytes: int = 8 * MIB  # windows kept while offline; the oldest are evicted beyond
    tags: tuple[str, ...] = ()
    arch: str | None = None  # fact overrides, for tests and simulation
    ram_mb: int | None = None
    runtimes: tuple[str, ...] | None = None
    log_level: str = "INFO"
    clock_offset_s: float = 0.0  # test-only: simulated clock skew for expiry checks (agent.clock)


def _text(value: Any, from_env: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _integer(value: Any, from_env: bool) -> int:
    if from_env:
        try:
            return int(value)
        except ValueError:
            raise ValueError("must be an integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _number(value: Any, from_env: bool) -> float:
    if from_env:
        try:
            return float(value)
        except ValueError:
            raise ValueError("must be a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return float(value)


def _text_list(value: Any, from_env: bool) -> tuple[str, ...]:
    if from_env:
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) and item for item in value):
        raise ValueError("must be a list of non-empty strings")
    return tuple(value)


def _url(schemes: tuple[str, ...]) -> Callable[[Any, bool], str]:
    def parse(value: Any, from_env: bool) -> str:
        text = _text(value, from_env)
        if not text.startswith(tuple(f"{scheme}://" for scheme in schemes)) or len(text) <= len(schemes[0]) + 3:
            raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return text.rstrip("/")
    return parse


def _device_id(value: Any, from_env: bool) -> str:
    try:
        return validate_device_id(_text(value, from_env))
    except InvalidDeviceIdError as exc:
        raise ValueError(str(exc)) from None


def _path(value: Any, from_env: bool) -> Path:
    return Path(_text(str(value) if isinstance(value, Path) else value, from_env)).expanduser()


PARSERS: dict[str, Callable[[Any, bool], Any]] = {
    "data_dir": _path,
    "server_url": _url(("http", "https")),
    "device_id": _device_id,
    "mqtt_url": _url(("mqtt", "mqtts")),
    "artifact_base_url": _url(("http", "https")),
    "inference_host": _text,
    "inference_port": _integer,
    "heartbeat_interval_s": _number,
    "download_timeout_s": _number,
    "download_retry_base_s": _number,
    "download_retry_max_s": _number,
    "download_max_attempts": _integer,
    "health_check_latency_ms": _number,
    "self_update_report_timeout_s": _number,
    "self_update_max_starts": _integer,
    "max_request_bytes": _integer,
    "telemetry_window_s": _number,
    "telemetry_max_inferences": _integer,
    "telemetry_queue_max_bytes": _integer,
    "tags": _text_list,
    "arch": _text,
    "ram_mb": _integer,
    "runtimes": _text_list,
    "log_level": _text,
    "clock_offset_s": _number,
}
OPTIONAL_FIELDS = frozenset({"server_url", "device_id", "mqtt_url", "artifact_base_url", "arch", "ram_mb", "runtimes"})


def _check_ranges(config: AgentConfig) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("inference_port", 0 <= config.inference_port <= 65535, "must be between 0 and 65535"),
        ("heartbeat_interval_s", config.heartbeat_interval_s > 0, "must be > 0"),
        ("download_timeout_s", config.download_timeout_s > 0, "must be > 0"),
        ("download_retry_base_s", config.download_retry_base_s > 0, "must be > 0"),
        ("download_retry_max_s", config.download_retry_max_s >= config.download_retry_base_s,
         "must be >= download_retry_base_s"),
        ("download_max_attempts", config.download_max_attempts >= 0, "must be >= 0"),
        ("health_check_latency_ms", config.health_check_latency_ms > 0, "must be > 0"),
        ("self_update_report_timeout_s", 0 < config.self_update_report_timeout_s <= 3600, "must be in (0, 3600]"),
        ("self_update_max_starts", config.self_update_max_starts >= 1, "must be >= 1"),
        ("max_request_bytes", config.max_request_bytes >= 1024, "must be >= 1024"),
        ("telemetry_window_s", config.telemetry_window_s > 0, "must be > 0"),
        ("telemetry_max_inferences", config.telemetry_max_inferences >= 0, "must be >= 0"),
        ("telemetry_queue_max_bytes", config.telemetry_queue_max_bytes >= 64 * 1024, "must be >= 65536"),
        ("ram_mb", config.ram_mb is None or config.ram_mb > 0, "must be > 0"),
        ("runtimes", config.runtimes is None or set(config.runtimes) <= {r.value for r in Runtime},
         f"must only name {', '.join(r.value for r in Runtime)}"),
        ("log_level", config.log_level.upper() in logging.getLevelNamesMapping(), "must be a logging level name"),
    ]
    for name, ok, message in checks:
        if not ok:
            raise ConfigError(f"config field {name} {message} (got {getattr(config, name)!r})")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - set(PARSERS))
    if unknown:
        raise ConfigError(f"config file {path} has unknown field(s) {', '.join(unknown)}")
    return document


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> AgentConfig:
    """Build the configuration; ``overrides`` (CLI flags, ``None`` = not given) win over everything."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    values: dict[str, Any] = {}
    sources: list[tuple[str, Mapping[str, Any], bool]] = []
    if path is not None:
        sources.append((f"config file {path}", _read_toml(Path(path)), False))
    sources.append(("environment", {name: env[ENV_PREFIX + name.upper()] for name in PARSERS
                                    if ENV_PREFIX + name.upper() in env}, True))
    sources.append(("command line", {k: v for k, v in (overrides or {}).items() if v is not None}, False))
    for origin, raw, from_env in sources:
        for name, value in raw.items():
            if name not in PARSERS:
                raise ConfigError(f"unknown config field {name} from {origin}")
            if from_env and value.strip() == "" and name in OPTIONAL_FIELDS:
                values[name] = None
                continue
            try:
                values[name] = PARSERS[name](value, from_env)
            except ValueError as exc:
                where = f"{ENV_PREFIX}{name.upper()}" if from_env else f"{name} in {origin}"
                raise ConfigError(f"config field {where} {exc} (got {value!r})") from None
            if name == "data_dir" and path is not None and origin.startswith("config file"):
                values[name] = (Path(path).parent / values[name]) if not values[name].is_absolute() else values[name]
    config = AgentConfig(**values)
    _check_ranges(config)
    return dataclasses.replace(config, log_level=config.log_level.upper())
