"""The telemetry window message in its version 1 form (canonical JSON): round trip, strict decoding, size caps,
quantiles. Version 2 (binary): ``test_telemetry_wire``."""

import math
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.protocol.canonical import canonical_bytes
from agent.protocol.errors import DocumentTooLargeError, InvalidDeviceIdError, MalformedDocumentError
from agent.protocol.profile import PredictionKind
from agent.protocol.telemetry import (
    CONFIDENCE_EDGES,
    LATENCY_EDGES_MS,
    MAX_TELEMETRY_JSON_BYTES,
    MAX_TELEMETRY_MESSAGE_BYTES,
    DataQuality,
    FeatureCounts,
    ModelRef,
    PredictionCounts,
    ShadowSummary,
    SystemMetrics,
    TelemetryWindow,
    histogram_quantile,
)

PROFILE = "ab" * 32
LATENCY_BINS = len(LATENCY_EDGES_MS) + 1


def window(features: int = 20, **changes: object) -> TelemetryWindow:
    latency = [0] * LATENCY_BINS
    latency[30], latency[31] = 590, 5
    fields: dict[str, object] = dict(
        device_id="dev-1", seq=7, start=1_800_000_000.0, end=1_800_000_060.0, model=ModelRef("digits", 3),
        requests=600, errors=5, latency_ms=tuple(latency),
        features=FeatureCounts(PROFILE, tuple((0, 57, 61, 66, 58, 60, 59, 63, 61, 55, 60, 0) for _ in range(features)),
                               (0,) * features),
        predictions=PredictionCounts(PredictionKind.CLASSES, tuple(float(c) for c in range(10)), (59,) * 10,
                                     (0, 0, 0, 0, 0, 10, 20, 30, 90, 440, 0, 0)),
        quality=DataQuality(schema_violations=2, out_of_range=0, nan=0),
        system=SystemMetrics(cpu_percent=12.5, rss_bytes=80_000_000, temperature_c=51.3, disk_free_bytes=10**10),
        evicted=0,
        shadow=ShadowSummary(ModelRef("digits", 4), 595, 0.98, 0.4, 0.5),
    )
    fields.update(changes)
    return TelemetryWindow(**fields)  # type: ignore[arg-type]


def test_a_window_round_trips_and_20_features_stay_well_under_4_kb() -> None:
    original = window()
    payload = original.encode()
    assert TelemetryWindow.decode(payload) == original
    assert len(payload) < 1024


def test_optional_sections_may_be_absent() -> None:
    bare = TelemetryWindow("dev-1", 1, 10.0, 11.0, None)
    assert TelemetryWindow.decode(bare.encode()) == bare


def test_the_latency_edges_are_log_spaced_and_the_confidence_edges_cover_0_to_1() -> None:
    ratios = {round(b / a, 9) for a, b in zip(LATENCY_EDGES_MS, LATENCY_EDGES_MS[1:], strict=False)}
    assert ratios == {round(2 ** (1 / 3), 9)}
    assert LATENCY_EDGES_MS[0] == 0.01 and LATENCY_EDGES_MS[-1] > 10_000
    assert CONFIDENCE_EDGES[0] == 0.0 and CONFIDENCE_EDGES[-1] == 1.0


def encode_dict(document: dict) -> bytes:
    return zlib.compress(canonical_bytes(document))


@pytest.mark.parametrize("change", [
    {"seq": 0}, {"seq": "1"}, {"requests": -1}, {"errors": 601}, {"start": 20.0, "end": 10.0},
    {"latency_ms": [0] * 3}, {"latency_ms": [700] + [0] * (LATENCY_BINS - 1)}, {"type": "status"}, {"v": 2},
    {"extra": 1}, {"model": {"name": "x"}}, {"quality": {"nan": -1, "out_of_range": 0, "schema_violations": 0}},
    {"system": {"cpu_percent": 101}}, {"features": {"profile_sha256": "zz", "counts": [[1]], "missing": [0]}},
    {"features": {"profile_sha256": PROFILE, "counts": [[1, 2]], "missing": [0, 0]}},
    {"predictions": {"kind": "classes", "labels": [1, 1], "counts": [1, 2], "confidence": None}},
    {"predictions": {"kind": "values", "labels": [1], "counts": [1], "confidence": None}},
    {"shadow": {"candidate": {"name": "m", "version": 1}, "compared": 1, "agreement": 1.5,
                "serving_p50_ms": 1, "candidate_p50_ms": 1}},
])
def test_wrong_fields_are_rejected(change: dict) -> None:
    document = window().to_dict()
    document.update(change)
    with pytest.raises(MalformedDocumentError):
        TelemetryWindow.decode(encode_dict(document))


def test_a_bad_device_id_is_rejected() -> None:
    document = window().to_dict()
    document["device_id"] = "Bad/Id"
    with pytest.raises(InvalidDeviceIdError):
        TelemetryWindow.decode(encode_dict(document))


@pytest.mark.parametrize("payload", [b"", b"{}", b"not zlib", zlib.compress(b"{\"a\": 1"),
                                     zlib.compress(b"[]"), zlib.compress(b"{}") + b"trailing",
                                     zlib.compress(b"{}")[:-3]])
def test_garbage_is_rejected(payload: bytes) -> None:
    with pytest.raises(MalformedDocumentError):
        TelemetryWindow.decode(payload)


def test_oversized_and_bomb_payloads_are_rejected_before_parsing() -> None:
    with pytest.raises(DocumentTooLargeError):
        TelemetryWindow.decode(b"x" * (MAX_TELEMETRY_MESSAGE_BYTES + 1))
    bomb = zlib.compress(b" " * (MAX_TELEMETRY_JSON_BYTES * 4), 9)
    assert len(bomb) < MAX_TELEMETRY_MESSAGE_BYTES
    with pytest.raises(DocumentTooLargeError):
        TelemetryWindow.decode(bomb)


@given(st.binary(max_size=600))
def test_random_bytes_raise_only_malformed_document_errors(data: bytes) -> None:
    for payload in (data, zlib.compress(data)):
        try:
            TelemetryWindow.decode(payload)
        except MalformedDocumentError:
            pass


def test_histogram_quantiles() -> None:
    counts = [0] * LATENCY_BINS
    assert histogram_quantile(counts, 0.95) is None
    counts[10] = 100  # every sample in [edges[9], edges[10])
    low, high = LATENCY_EDGES_MS[9], LATENCY_EDGES_MS[10]
    assert histogram_quantile(counts, 0.0) == pytest.approx(low)
    assert histogram_quantile(counts, 1.0) == pytest.approx(high)
    assert histogram_quantile(counts, 0.5) == pytest.approx(math.sqrt(low * high))  # geometric midpoint
    counts[20] = 900
    p95 = histogram_quantile(counts, 0.95)
    assert p95 is not None and LATENCY_EDGES_MS[19] < p95 < LATENCY_EDGES_MS[20]
    under, over = [5] + [0] * (LATENCY_BINS - 1), [0] * (LATENCY_BINS - 1) + [5]
    assert histogram_quantile(under, 0.5) == LATENCY_EDGES_MS[0]
    assert histogram_quantile(over, 0.5) == LATENCY_EDGES_MS[-1]


def test_a_shadow_section_may_carry_the_mean_absolute_difference() -> None:
    regression = window(shadow=ShadowSummary(ModelRef("price", 2), 40, 0.75, 1.5, 2.5, mean_abs_diff=0.125))
    assert TelemetryWindow.decode(regression.encode()) == regression
    assert window().shadow.to_dict().keys() == {"candidate", "compared", "agreement", "serving_p50_ms",  # type: ignore
                                                "candidate_p50_ms"}


@pytest.mark.parametrize("change", [
    {"start": 10**400}, {"system": {"cpu_percent": 10**400}},
    {"predictions": {"kind": "classes", "labels": [10**400], "counts": [1], "confidence": None}},
])
def test_integers_beyond_the_float_range_are_malformed_not_overflow_errors(change: dict) -> None:
    document = window().to_dict()
    document.update(change)
    with pytest.raises(MalformedDocumentError):
        TelemetryWindow.decode(encode_dict(document))
