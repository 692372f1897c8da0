"""Telemetry windows as database rows, built a batch at a time for the driver's ``executemany``.

Row building was about half of the writer's time per window: SQLAlchemy's
per-row bind processing, one ``json.dumps`` (and its encoder set-up) per JSON
column, ``strftime`` per timestamp, the latency quantiles in a Python loop. Here
a batch becomes a list of plain tuples in ``COLUMNS`` order: JSON columns
as compact text (the count columns through one cached ``%d`` format per shape,
twice as fast as the JSON encoder; the rest from one shared encoder), timestamps as the dialect stores them
(SQLAlchemy's SQLite text form, or aware datetimes for PostgreSQL), the
received-at time formatted once per batch, and the latency quantiles' bins
found for the whole batch at once with numpy (the interpolation within the bin
is the same arithmetic as ``histogram_quantiles``, so the values are identical).
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import numpy as np

from agent.protocol.telemetry import LATENCY_EDGES_MS, TelemetryWindow, histogram_quantiles

QUANTILES = (0.50, 0.95, 0.99)
COLUMNS = ("device_id", "window_start", "seq", "window_end", "received_at", "model_name", "model_version",
           "requests", "errors", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_counts",
           "profile_sha256", "feature_counts", "feature_missing", "predictions", "schema_violations",
           "out_of_range", "nan_count", "cpu_percent", "rss_bytes", "temperature_c", "disk_free_bytes", "evicted",
           "shadow", "shadow_agreement")
TimeFormat = Callable[[float], Any]

_json = json.JSONEncoder(separators=(",", ":")).encode  # tuples encode as lists
_EDGES = LATENCY_EDGES_MS
_LAST_INNER_BIN = len(_EDGES) - 1
_MAX_FORMATS = 256
_formats: dict[int | tuple[int, ...], str] = {}  # list length, or the lengths of nested rows -> format


def _list_format(length: int) -> str:
    return "[" + ",".join(["%d"] * length) + "]"


def _format(shape: int | tuple[int, ...]) -> str:
    """The ``%d`` format of ``shape``, built once: shapes repeat (the latency bins, a profile's features)."""
    text = _formats.get(shape)
    if text is None:
        if len(_formats) >= _MAX_FORMATS:
            _formats.clear()
        text = _formats[shape] = (_list_format(shape) if isinstance(shape, int)
                                  else "[" + ",".join(map(_list_format, shape)) + "]")
    return text


def json_counts(counts: Sequence[int]) -> str:
    """``_json(counts)`` for a sequence of ints (decoded windows hold nothing else), without the encoder."""
    return _format(len(counts)) % tuple(counts)


def json_count_rows(rows: Sequence[Sequence[int]]) -> str:
    """``_json(rows)`` for rows of ints, through one format per shape (a profile's, so it repeats)."""
    return _format(tuple(map(len, rows))) % tuple(chain.from_iterable(rows))


def sqlite_time(seconds: float) -> str:
    """A unix time the way SQLAlchemy's SQLite dialect stores a UTC ``DATETIME`` (naive, microseconds)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(" ", "microseconds")[:26]


def aware_time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def latency_quantiles(latencies: Sequence[tuple[int, ...]]) -> list[tuple[float | None, ...]]:
    """``histogram_quantiles(counts, QUANTILES)`` for every histogram of a batch (equal bin counts)."""
    if not latencies:
        return []
    if any(len(histogram) != len(_EDGES) + 1 for histogram in latencies):  # not from decode: one at a time
        return [histogram_quantiles(histogram, QUANTILES) for histogram in latencies]
    counts = np.asarray(latencies, dtype=np.int64)
    cumulative = np.cumsum(counts, axis=1)
    totals = cumulative[:, -1]
    ranks = np.multiply.outer(totals.astype(np.float64), QUANTILES)  # rows x quantiles
    # The bin holding each rank: the first whose cumulative count reaches it (it is never empty).
    bins = (cumulative[:, :, None] < ranks[:, None, :]).sum(axis=1)
    result: list[tuple[float | None, ...]] = []
    for row, (total, row_bins, row_ranks) in enumerate(zip(totals.tolist(), bins.tolist(), ranks.tolist(),
                                                           strict=True)):
        if total <= 0:
            result.append((None,) * len(QUANTILES))
            continue
        values: list[float] = []
        for index, rank in zip(row_bins, row_ranks, strict=True):
            if index == 0:
                values.append(_EDGES[0])
            elif index > _LAST_INNER_BIN:
                values.append(_EDGES[-1])
            else:
                count = int(counts[row, index])
                seen = int(cumulative[row, index]) - count
                low, high = _EDGES[index - 1], _EDGES[index]
                fraction = min(1.0, max(0.0, (rank - seen) / count))
                values.append(low * (high / low) ** fraction if low > 0 else low + (high - low) * fraction)
        result.append(tuple(values))
    return result


def window_rows(windows: Sequence[TelemetryWindow], received_at: float,
                time_format: TimeFormat) -> list[tuple[Any, ...]]:
    """One tuple per window in ``COLUMNS`` order, JSON columns as text."""
    received = time_format(received_at)
    rows = []
    for window, quantiles in zip(windows, latency_quantiles([w.latency_ms for w in windows]), strict=True):
        features, predictions, shadow, model = window.features, window.predictions, window.shadow, window.model
        quality, system = window.quality, window.system
        rows.append((
            window.device_id, time_format(window.start), window.seq, time_format(window.end), received,
            model.name if model else None, model.version if model else None, window.requests, window.errors,
            *quantiles, json_counts(window.latency_ms),
            features.profile_sha256 if features else None,
            json_count_rows(features.counts) if features else None,
            json_counts(features.missing) if features else None,
            _json(predictions.to_dict()) if predictions else None,
            quality.schema_violations, quality.out_of_range, quality.nan,
            system.cpu_percent, system.rss_bytes, system.temperature_c, system.disk_free_bytes, window.evicted,
            _json(shadow.to_dict()) if shadow else None, shadow.agreement if shadow else None,
        ))
    return rows


@dataclass(frozen=True)
class RowBatch:
    """Rows ready for the insert (timestamps as text for SQLite), with what the store checks first:
    each row's device id, and the reference profiles the rows were binned on."""

    device_ids: list[str]
    profiles: frozenset[str]
    rows: list[tuple[Any, ...]]

    def __len__(self) -> int:
        return len(self.rows)

    def halves(self) -> tuple["RowBatch", "RowBatch"]:
        middle = len(self.rows) // 2
        return (RowBatch(self.device_ids[:middle], self.profiles, self.rows[:middle]),
                RowBatch(self.device_ids[middle:], self.profiles, self.rows[middle:]))


def row_batch(windows: Sequence[TelemetryWindow], sqlite: bool, received_at: float) -> RowBatch:
    return RowBatch([window.device_id for window in windows],
                    frozenset(window.features.profile_sha256 for window in windows if window.features),
                    window_rows(windows, received_at, sqlite_time if sqlite else aware_time))
