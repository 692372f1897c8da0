"""Which HTTP requests a fault proxy spoils, and how. Pure: no sockets, no clock.

A ``HttpFaultPlan`` holds rules. Every rule counts the requests that match its filter
(method and path prefix, e.g. artifact downloads); a rule *fires* for a matching request
chosen by position (``nth``: the 1st, 3rd, ... matching request), period (``every``: each
k-th), or chance (``probability``, from the plan's seeded generator), at most ``limit``
times. The first rule that fires decides the request's ``HttpAction``; otherwise it passes.

``ResponseMangler`` applies TRUNCATE and CORRUPT to the bytes of one response as they stream
through: it finds the end of the response head and counts body bytes from there.
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass, field
from http import HTTPStatus

ARTIFACT_PREFIX = "/api/v1/artifacts/"
HEAD_END = b"\r\n\r\n"


class HttpFaultKind(enum.StrEnum):
    PASS = "pass"
    ERROR = "error"  # answer with ``status`` at once; the upstream never sees the request
    TRUNCATE = "truncate"  # deliver ``body_bytes`` of the body, then close the connection
    CORRUPT = "corrupt"  # flip every bit of the body byte at offset ``body_bytes`` (same length, wrong bytes)
    STALL = "stall"  # deliver ``body_bytes`` of the body, then nothing more (the client's stall timeout must act)


@dataclass(frozen=True)
class HttpAction:
    kind: HttpFaultKind
    status: int = 503
    body_bytes: int = 0

    def describe(self) -> str:
        if self.kind is HttpFaultKind.ERROR:
            return f"error {self.status}"
        if self.kind is HttpFaultKind.PASS:
            return "pass"
        return f"{self.kind.value} at body byte {self.body_bytes}"


PASS = HttpAction(HttpFaultKind.PASS)


@dataclass
class HttpFaultRule:
    action: HttpAction
    path_prefix: str = ARTIFACT_PREFIX
    method: str | None = "GET"
    nth: frozenset[int] = frozenset()  # 1-based positions among the matching requests
    every: int = 0  # fire on every k-th matching request (0: off)
    probability: float = 0.0  # fire with this chance (0: off)
    limit: int | None = None  # fire at most this many times
    matched: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or method.upper() == self.method) and path.startswith(self.path_prefix)

    def selects(self, position: int, draw: float) -> bool:
        if self.limit is not None and self.fired >= self.limit:
            return False
        return (position in self.nth or (self.every > 0 and position % self.every == 0)
                or draw < self.probability)


@dataclass(frozen=True)
class HttpDecision:
    method: str
    path: str
    action: HttpAction


@dataclass
class HttpFaultPlan:
    rules: list[HttpFaultRule]
    seed: int = 0
    decisions: list[HttpDecision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def decide(self, method: str, path: str) -> HttpAction:
        """The action for one request (recorded in ``decisions``)."""
        with self._lock:
            chosen = PASS
            for rule in self.rules:
                if not rule.matches(method, path):
                    continue
                rule.matched += 1
                draw = self._rng.random() if rule.probability > 0 else 1.0
                if chosen is PASS and rule.selects(rule.matched, draw):
                    rule.fired += 1
                    chosen = rule.action
            self.decisions.append(HttpDecision(method, path, chosen))
            return chosen

    def counts(self) -> dict[str, int]:
        """How many requests got each kind of action."""
        with self._lock:
            result: dict[str, int] = {}
            for decision in self.decisions:
                result[decision.action.kind.value] = result.get(decision.action.kind.value, 0) + 1
            return result


def parse_request_line(head: bytes) -> tuple[str, str]:
    """(method, path) of an HTTP/1.x request head; ("", "") when it is not one."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "", ""
    return parts[0].upper(), parts[1]


def error_response(status: int) -> bytes:
    reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Injected Fault"
    body = f'{{"detail":"injected fault: HTTP {status}"}}'.encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


class ResponseMangler:
    """Applies one TRUNCATE / CORRUPT / STALL action to a response stream, chunk by chunk."""

    def __init__(self, action: HttpAction) -> None:
        self.action = action
        self._head = b""
        self._in_body = False
        self._body_seen = 0
        self.done = False  # TRUNCATE/STALL reached its byte: send nothing more

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to forward for ``chunk`` (after ``done`` turns true, forward nothing more)."""
        if self.done or self.action.kind is HttpFaultKind.PASS:
            return b"" if self.done else chunk
        out = b""
        if not self._in_body:
            self._head += chunk
            end = self._head.find(HEAD_END)
            if end < 0:
                return b""
            out = self._head[: end + len(HEAD_END)]
            chunk = self._head[end + len(HEAD_END):]
            self._in_body = True
        return out + self._body(chunk)

    def _body(self, chunk: bytes) -> bytes:
        start = self._body_seen
        self._body_seen += len(chunk)
        target = self.action.body_bytes
        if self.action.kind is HttpFaultKind.CORRUPT:
            if start <= target < self._body_seen:
                data = bytearray(chunk)
                data[target - start] ^= 0xFF
                return bytes(data)
            return chunk
        if self._body_seen >= target:  # TRUNCATE / STALL
            self.done = True
            return chunk[: target - start]
        return chunk
