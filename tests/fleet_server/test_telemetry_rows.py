"""Batch row building for telemetry ingest: the same values the ORM reads back as the windows carried,
quantiles identical to ``histogram_quantiles``, duplicates and unknown devices counted, on both backends."""

import json
import random
import time

from sqlalchemy import Engine
from sqlmodel import Session, select

from agent.protocol.telemetry import LATENCY_EDGES_MS, ModelRef, ShadowSummary, SystemMetrics, histogram_quantiles
from fleet_server.core.types import from_unix
from fleet_server.models.device import Device
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.services.telemetry_rows import QUANTILES, json_count_rows, json_counts, latency_quantiles, sqlite_time
from fleet_server.services.telemetry_store import TelemetryStore
from tests.fleet_server.telemetry_helpers import make_profile, make_window


def test_batch_quantiles_equal_the_per_window_ones() -> None:
    rng = random.Random(7)
    histograms = []
    for index in range(400):
        counts = [0] * (len(LATENCY_EDGES_MS) + 1)
        for _ in range(rng.choice([0, 1, 2, 5, 60, 600])):
            counts[min(len(counts) - 1, int(abs(rng.gauss(20, 15))))] += 1
        counts[0] += 3 if index % 7 == 0 else 0  # underflow
        counts[-1] += 5 if index % 11 == 0 else 0  # overflow
        histograms.append(tuple(counts))
    assert latency_quantiles(histograms) == [histogram_quantiles(h, QUANTILES) for h in histograms]
    assert latency_quantiles([(1, 2), (0, 0, 3)]) == [histogram_quantiles((1, 2), QUANTILES),
                                                      histogram_quantiles((0, 0, 3), QUANTILES)]
    assert latency_quantiles([]) == []


def test_count_columns_are_the_json_encoders_text() -> None:
    rng = random.Random(3)
    for _ in range(300):  # more shapes than the format caches hold
        rows = tuple(tuple(rng.choice([0, 1, 59, 2**32 - 1, 2**53 - 1]) for _ in range(rng.randint(1, 14)))
                     for _ in range(rng.randint(1, 30)))
        assert json_count_rows(rows) == json.dumps(rows, separators=(",", ":"))
        assert json_counts(rows[0]) == json.dumps(rows[0], separators=(",", ":"))
    assert json_counts(()) == "[]"


def test_sqlite_time_is_sqlalchemys_text_form() -> None:
    for seconds in (0.0, 1.5, 1_700_000_000.0, 1_795_914_656.944, time.time()):
        assert sqlite_time(seconds) == from_unix(seconds).strftime("%Y-%m-%d %H:%M:%S.%f")


def test_stored_rows_read_back_as_the_windows(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session:
        session.add(Device(device_id="rows-1", credential_hash="0" * 64, arch="x86_64", ram_mb=1))
        session.commit()
    profile = make_profile()
    start = 1_700_000_000.25
    plain = make_window("rows-1", 1, start, profile, errors=3)
    bare = make_window("rows-1", 2, start + 60, None, model=None)
    shadowed = make_window("rows-1", 3, start + 120, profile)
    shadowed = type(shadowed)(**{**shadowed.__dict__, "system": SystemMetrics(12.5, 2048, 41.0, 10**9),
                                 "shadow": ShadowSummary(ModelRef("cand", 2), 100, 0.97, 1.0, 1.2), "evicted": 4})
    store = TelemetryStore(migrated_engine)
    result = store.store([plain, bare, shadowed, plain, make_window("nobody", 1, start, profile)])
    assert (result.stored, result.duplicates, result.unknown_device) == (3, 1, 1)
    assert store.store([plain, bare]).duplicates == 2
    with Session(migrated_engine) as session:
        rows = list(session.exec(select(TelemetryWindowRecord).order_by(TelemetryWindowRecord.seq)))
    assert [row.seq for row in rows] == [1, 2, 3]
    first, second, third = rows
    assert first.window_start == from_unix(start) and first.window_end == from_unix(plain.end)
    assert (first.model_name, first.model_version, first.requests, first.errors) == ("tele-model", 1, 300, 3)
    assert (first.latency_p50_ms, first.latency_p95_ms, first.latency_p99_ms) == histogram_quantiles(
        plain.latency_ms, QUANTILES)
    assert first.latency_counts == list(plain.latency_ms)
    assert first.feature_counts == [list(row) for row in plain.features.counts]
    assert first.feature_missing == list(plain.features.missing)
    assert first.predictions == plain.predictions.to_dict() and first.profile_sha256 == profile.sha256()
    assert second.model_name is None and second.feature_counts is None and second.predictions is None
    assert (third.cpu_percent, third.rss_bytes, third.temperature_c, third.disk_free_bytes) == (12.5, 2048, 41.0,
                                                                                                10**9)
    assert third.shadow == shadowed.shadow.to_dict() and third.shadow_agreement == 0.97 and third.evicted == 4
