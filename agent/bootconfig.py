"""``edgefleet.toml`` on the boot partition: what a freshly flashed device enrolls with. Pure.

The boot partition (``/boot/firmware`` on Raspberry Pi OS bookworm) is FAT and
readable from any computer, so an operator writes this file after flashing::

    server_url = "https://fleet.example:8000"
    bootstrap_token = "the server's EDGEFLEET_BOOTSTRAP_TOKEN"
    tags = ["line-3", "camera"]      # optional
    device_id = "cam-17"             # optional: default from the host name or machine id

After a successful enrollment the ``bootstrap_token`` line is removed
(``strip_token``) so the token does not stay readable on the card.
"""

import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from agent.errors import ConfigError
from agent.facts import sanitized_hostname
from agent.protocol.errors import InvalidDeviceIdError
from agent.protocol.topics import validate_device_id

FIELDS = ("server_url", "bootstrap_token", "tags", "device_id")
GENERIC_HOSTNAMES = frozenset({"", "localhost", "raspberrypi", "raspberry", "debian", "pi", "device"})
TOKEN_LINE = re.compile(r"^\s*(bootstrap_token|\"bootstrap_token\"|'bootstrap_token')\s*=.*$\n?", re.MULTILINE)


@dataclass(frozen=True)
class BootConfig:
    server_url: str
    bootstrap_token: str | None  # None once used
    tags: tuple[str, ...] = ()
    device_id: str | None = None


def _string(document: dict[str, Any], name: str, origin: str) -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{origin}: {name} must be a non-empty string")
    return value.strip()


def parse_boot_config(text: str, origin: str = "edgefleet.toml") -> BootConfig:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML: {exc}") from None
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{origin} has unknown field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    server_url = _string(document, "server_url", origin)
    if server_url is None or not server_url.startswith(("http://", "https://")):
        raise ConfigError(f"{origin}: server_url must be an http(s) URL of the fleet server")
    tags = document.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag.strip() for tag in tags):
        raise ConfigError(f"{origin}: tags must be a list of non-empty strings")
    device_id = _string(document, "device_id", origin)
    if device_id is not None:
        try:
            validate_device_id(device_id)
        except InvalidDeviceIdError as exc:
            raise ConfigError(f"{origin}: device_id {exc}") from None
    return BootConfig(server_url.rstrip("/"), _string(document, "bootstrap_token", origin),
                      tuple(tag.strip() for tag in tags), device_id)


def render_boot_config(config: BootConfig) -> str:
    """The file for ``config`` (TOML basic strings accept JSON's escapes)."""
    lines = [f"server_url = {json.dumps(config.server_url)}"]
    if config.bootstrap_token is not None:
        lines.append(f"bootstrap_token = {json.dumps(config.bootstrap_token)}")
    if config.tags:
        lines.append(f"tags = [{', '.join(json.dumps(tag) for tag in config.tags)}]")
    if config.device_id is not None:
        lines.append(f"device_id = {json.dumps(config.device_id)}")
    return "\n".join(lines) + "\n"


def strip_token(text: str, origin: str = "edgefleet.toml") -> str:
    """``text`` without the bootstrap token: its line removed (comments kept), else the file re-rendered."""
    stripped = TOKEN_LINE.sub("", text)
    try:
        if parse_boot_config(stripped, origin).bootstrap_token is None:
            return stripped
    except ConfigError:
        pass  # e.g. a multi-line token string: fall back to re-rendering without it
    config = parse_boot_config(text, origin)
    return render_boot_config(BootConfig(config.server_url, None, config.tags, config.device_id))


def choose_device_id(configured: str | None, hostname: str, machine_id: str) -> str:
    """The device id to enroll with: the configured one, else the host name unless it is a stock one
    (every card flashed from one image has the same), else ``edgefleet-`` and the machine id's start."""
    if configured:
        return configured
    name = sanitized_hostname(hostname)
    if name not in GENERIC_HOSTNAMES:
        return name
    machine = re.sub(r"[^a-f0-9]", "", machine_id.lower())[:12]
    return f"edgefleet-{machine}" if machine else "edgefleet-device"
