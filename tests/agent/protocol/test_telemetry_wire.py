"""Telemetry spec version 2 (binary): round trips, v1 compatibility, and strict decoding of every defect."""

import math
import struct
import zlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.protocol.errors import DocumentTooLargeError, InvalidDeviceIdError, MalformedDocumentError
from agent.protocol.profile import PredictionKind
from agent.protocol.telemetry import (
    MAX_TELEMETRY_INFLATED_BYTES,
    MAX_TELEMETRY_MESSAGE_BYTES,
    MAX_WINDOW_SECONDS,
    FeatureCounts,
    ModelRef,
    PredictionCounts,
    ShadowSummary,
    SystemMetrics,
    TelemetryWindow,
)
from agent.protocol.telemetry_wire import _HEADER, FLAG_MODEL, FLAG_NARROW, V2_PREFIX, encode_v1, inflate
from tests.agent.protocol.test_telemetry import window

HEADER_FIELDS = ("flags", "n_device", "n_name", "n_features", "n_latency", "n_labels", "n_counts", "n_confidence",
                 "n_shadow", "seq", "start", "end", "requests", "errors", "evicted", "schema_violations",
                 "out_of_range", "nan", "cpu_percent", "rss_bytes", "temperature_c", "disk_free_bytes", "version")
BARE = TelemetryWindow("dev-1", 1, 10.0, 11.0, None)


def make(**changes: object) -> TelemetryWindow:
    """The full window of the v1 tests with ``changes``."""
    return replace(window(), **changes)  # type: ignore[arg-type]


def body_of(w: TelemetryWindow) -> bytes:
    payload = w.encode()
    assert payload.startswith(V2_PREFIX)
    return inflate(payload[len(V2_PREFIX):])


def v2(body: bytes) -> bytes:
    return V2_PREFIX + zlib.compress(body)


def with_header(w: TelemetryWindow, **changes: float) -> bytes:
    body = body_of(w)
    header = dict(zip(HEADER_FIELDS, _HEADER.unpack_from(body), strict=True))
    header.update(changes)
    return v2(_HEADER.pack(*header.values()) + body[_HEADER.size:])


@pytest.mark.parametrize("changes", [
    {},
    {"features": None, "predictions": None, "shadow": None},
    {"model": None, "system": SystemMetrics()},
    {"system": SystemMetrics(cpu_percent=0.0)},
    {"system": SystemMetrics(rss_bytes=1, disk_free_bytes=0)},
    {"system": SystemMetrics(temperature_c=-20.5)},
    {"predictions": PredictionCounts(PredictionKind.CLASSES, (0.0, 1.0, 7.5), (4, 5, 6))},
    {"predictions": PredictionCounts(PredictionKind.CLASSES, (), ())},
    {"predictions": PredictionCounts(PredictionKind.VALUES, (), (1, 2, 3, 4, 0))},
    {"predictions": PredictionCounts(PredictionKind.VALUES, (), (9,), (0,) * 12)},
    {"shadow": ShadowSummary(ModelRef("price", 2), 40, 0.75, 1.5, 2.5, mean_abs_diff=0.125)},
    {"features": FeatureCounts("cd" * 32, ((1,), (0,) * 257, (2**32 - 1, 0)), (3, 0, 2**32 - 1))},
    {"quality": make().quality, "evicted": 12, "requests": 2**53 - 1, "errors": 2**53 - 1},
])
def test_windows_round_trip_in_version_2_and_decode_as_their_version_1_form(changes: dict) -> None:
    original = make(**changes)
    payload = original.encode()
    assert payload.startswith(V2_PREFIX)
    assert TelemetryWindow.decode(payload) == original
    assert TelemetryWindow.decode(encode_v1(original)) == original
    assert TelemetryWindow.decode(BARE.encode()) == BARE


def test_times_and_system_metrics_are_rounded_as_version_1_rounds_them() -> None:
    original = make(start=100.12345, end=160.98765, system=SystemMetrics(cpu_percent=12.345, temperature_c=40.06))
    assert TelemetryWindow.decode(original.encode()) == TelemetryWindow.decode(encode_v1(original))
    assert TelemetryWindow.decode(original.encode()).start == 100.123


def test_a_20_feature_window_is_well_under_4_kb_and_smaller_than_version_1() -> None:
    payload = window(features=20).encode()
    assert len(payload) < 1024
    assert len(payload) < len(encode_v1(window(features=20)))


def test_a_window_version_2_cannot_carry_falls_back_to_version_1() -> None:
    huge = make(latency_ms=(2**32,) + (0,) * 64, requests=2**33)
    assert huge.encode()[:1] == b"\x78"
    assert TelemetryWindow.decode(huge.encode()) == huge
    shouting = window(features=1)
    shouting = replace(shouting, features=replace(shouting.features, profile_sha256="AB" * 32))  # type: ignore
    assert shouting.encode()[:1] == b"\x78"
    with pytest.raises(MalformedDocumentError, match="profile_sha256"):
        TelemetryWindow.decode(shouting.encode())


def test_every_truncation_of_a_window_is_rejected() -> None:
    payload, body = make().encode(), body_of(make())
    for cut in range(len(payload)):
        with pytest.raises(MalformedDocumentError):
            TelemetryWindow.decode(payload[:cut])
    for cut in range(len(body)):
        with pytest.raises(MalformedDocumentError):
            TelemetryWindow.decode(v2(body[:cut]))


@pytest.mark.parametrize(("payload", "message"), [
    (v2(body_of(make()) + b"\x00"), "extra bytes"),
    (make().encode() + b"\x00", "extra bytes"),
    (b"EFT\x03" + make().encode()[4:], "version 03 is not supported"),
    (b"EFT", "version missing is not supported"),
    (b"EFX\x02" + make().encode()[4:], "not zlib"),
    (V2_PREFIX + b"garbage", "not zlib"),
    (with_header(make(), flags=2**15), "unknown flags"),
    (with_header(make(model=None), n_name=0, version=3), "without a model"),
    (with_header(make(), flags=FLAG_MODEL, n_features=0, n_labels=0, n_counts=0, n_confidence=0, n_shadow=0),
     "truncated|extra"),
    (with_header(make(system=SystemMetrics()), rss_bytes=5), "system metrics without their flags"),
    (with_header(make(), seq=2**53), "integers"),
    (with_header(make(), cpu_percent=math.nan), "cpu_percent"),
    (with_header(make(), start=math.inf), "start"),
    (with_header(make(), n_latency=64, n_shadow=0), "truncated|extra"),
])
def test_malformed_version_2_payloads_are_rejected_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(MalformedDocumentError, match=message):
        TelemetryWindow.decode(payload)


PROFILE = "ab" * 32


@pytest.mark.parametrize(("changes", "message"), [
    ({"seq": 0}, "seq"),
    ({"errors": 601}, "cannot exceed requests"),
    ({"latency_ms": (601,) + (0,) * 64}, "cannot exceed requests"),
    ({"latency_ms": (0,) * 64}, "latency_ms must hold 65"),
    ({"start": 20.0, "end": 10.0}, "start <= end"),
    ({"end": 1_800_000_000.0 + MAX_WINDOW_SECONDS + 1}, "start <= end"),
    ({"start": -1.0}, "start"),
    ({"model": ModelRef("bad name", 1)}, "model"),
    ({"model": ModelRef("digits", 0)}, "model"),
    ({"requests": 2**53}, "9007199254740991"),
    ({"features": FeatureCounts(PROFILE, (), ())}, "1..1024 features"),
    ({"features": FeatureCounts(PROFILE, ((1,), ()), (0, 0))}, "1..257 counts"),
    ({"features": FeatureCounts(PROFILE, ((1,) * 258,), (0,))}, "1..257 counts"),
    ({"features": FeatureCounts(PROFILE, ((1,),), (0, 0))}, "truncated|extra"),
    ({"predictions": PredictionCounts(PredictionKind.CLASSES, (1.0, 1.0), (1, 2))}, "distinct"),
    ({"predictions": PredictionCounts(PredictionKind.CLASSES, (1.0, math.nan), (1, 2))}, "finite"),
    ({"predictions": PredictionCounts(PredictionKind.CLASSES, (1.0, math.inf), (1, 2))}, "finite"),
    ({"predictions": PredictionCounts(PredictionKind.CLASSES, tuple(map(float, range(257))), (1,) * 257)}, "<= 256"),
    ({"predictions": PredictionCounts(PredictionKind.CLASSES, (1.0, 2.0), (1,))}, "one count per label"),
    ({"predictions": PredictionCounts(PredictionKind.VALUES, (1.0,), (1,))}, "empty for values"),
    ({"predictions": PredictionCounts(PredictionKind.VALUES, (), ())}, "1..257"),
    ({"predictions": PredictionCounts(PredictionKind.CLASSES, (1.0,), (1,), (1,) * 5)}, "confidence must hold 12"),
    ({"system": SystemMetrics(cpu_percent=101.0)}, "cpu_percent"),
    ({"system": SystemMetrics(temperature_c=-300.0)}, "temperature_c"),
    ({"shadow": ShadowSummary(ModelRef("m", 1), 1, 1.5, 1.0, 1.0)}, "agreement"),
])
def test_version_2_enforces_the_rules_of_version_1(changes: dict, message: str) -> None:
    bad = make(**changes)
    payload = bad.encode()
    assert payload.startswith(V2_PREFIX)
    with pytest.raises(MalformedDocumentError, match=message):
        TelemetryWindow.decode(payload)
    if message != "truncated|extra":  # v1 names lengths itself; everything else is the same rule
        with pytest.raises(MalformedDocumentError, match=f"{message}|canonical JSON"):  # v1 cannot carry NaN
            TelemetryWindow.decode(encode_v1(bad))


def test_a_bad_device_id_is_rejected_in_version_2() -> None:
    with pytest.raises(InvalidDeviceIdError):
        TelemetryWindow.decode(make(device_id="Bad/Id").encode())
    with pytest.raises(InvalidDeviceIdError):
        TelemetryWindow.decode(make(device_id="dév-1").encode())


def test_oversized_and_bomb_version_2_payloads_are_rejected() -> None:
    with pytest.raises(DocumentTooLargeError):
        TelemetryWindow.decode(V2_PREFIX + b"\x00" * MAX_TELEMETRY_MESSAGE_BYTES)
    bomb = v2(b"\x00" * (MAX_TELEMETRY_INFLATED_BYTES * 4))
    assert len(bomb) < MAX_TELEMETRY_MESSAGE_BYTES
    with pytest.raises(DocumentTooLargeError):
        TelemetryWindow.decode(bomb)


def test_a_shadow_fragment_must_be_json() -> None:
    body = body_of(make(shadow=ShadowSummary(ModelRef("m", 1), 1, 0.5, 1.0, 1.0)))
    fragment = body.index(b'{"agreement"')
    with pytest.raises(MalformedDocumentError, match="not valid JSON"):
        TelemetryWindow.decode(v2(body[:fragment] + b"[" + body[fragment + 1:]))
    with pytest.raises(MalformedDocumentError, match="non-finite number NaN"):
        TelemetryWindow.decode(v2(body[:fragment] + b"NaN" + body[fragment + 3:]))
    with pytest.raises(MalformedDocumentError, match="shadow must be an object"):
        TelemetryWindow.decode(v2(body[:fragment] + b"[" + b" " * (len(body) - fragment - 2) + b"]"))


@given(st.binary(max_size=400), st.integers(0, 2**16 - 1))
def test_random_version_2_bodies_raise_only_malformed_document_errors(data: bytes, flags: int) -> None:
    for body in (data, struct.pack("<H", flags) + body_of(make())[2:][:len(data)] + data):
        try:
            TelemetryWindow.decode(v2(body))
        except MalformedDocumentError:
            pass


def test_counts_take_two_bytes_while_they_fit_and_four_beyond() -> None:
    narrow, wide = body_of(make()), body_of(make(requests=70_000, latency_ms=(70_000,) + (0,) * 64))
    assert _HEADER.unpack_from(narrow)[0] & FLAG_NARROW and not _HEADER.unpack_from(wide)[0] & FLAG_NARROW
    assert len(wide) - len(narrow) == 2 * (65 + 20 * 12 + 20 + 10 + 12)
    assert TelemetryWindow.decode(v2(wide)).latency_ms[0] == 70_000
