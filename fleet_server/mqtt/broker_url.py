"""Parse ``mqtt://[user:password@]host[:port]`` (``mqtts://`` for TLS)."""

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from fleet_server.errors import BrokerUrlError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # TLS: CA to verify the broker (None: the system's)
    cert_file: str | None = None  # TLS: client certificate (mutual TLS)
    key_file: str | None = None

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log and to hand to devices)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"BrokerAddress({self.url!r}, username={self.username!r})"

    def tls_context(self) -> ssl.SSLContext:
        """The client TLS context: verifies the broker's certificate and host name, presents ours if set."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.ca_file:
            context.load_verify_locations(self.ca_file)
        else:
            context.load_default_certs()
        return context

    def open_socket(self, timeout: float) -> socket.socket:
        """A non-blocking TCP connection to the broker, TLS-wrapped (handshake done) for ``mqtts``."""
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            try:
                sock = self.tls_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        sock.setblocking(False)
        return sock


def parse_mqtt_url(url: str) -> BrokerAddress:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"invalid MQTT URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise BrokerUrlError(f"MQTT URL must start with mqtt:// or mqtts://, got {parts.scheme or 'no scheme'!r}")
    if not parts.hostname:
        raise BrokerUrlError("MQTT URL has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerUrlError("MQTT URL must not have a path, query or fragment")
    return BrokerAddress(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        tls=parts.scheme == "mqtts",
        username=None if parts.username is None else unquote(parts.username),
        password=None if parts.password is None else unquote(parts.password),
    )
