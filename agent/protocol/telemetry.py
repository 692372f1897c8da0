"""Telemetry windows: what a device reports about its served model, one window at a time.

A window covers ``[start, end)`` (unix seconds, device clock) and carries counts
only, never raw inputs: requests and errors, a latency histogram on the fixed
log-spaced ``LATENCY_EDGES_MS``, per-feature bin counts on the edges of the
release's reference profile (plus NaN counts per feature), a prediction
histogram (class counts and, for classifiers with scores, a confidence
histogram on ``CONFIDENCE_EDGES``), data-quality counts, system metrics, the
number of older windows the device's queue had to evict since the previous
window, and optionally what a shadow model did.

Windows carry ``(device_id, start, seq)``; ``seq`` increases by one per window
and device, so the server deduplicates redeliveries and sees gaps. On the
wire a window is zlib-compressed canonical JSON; ``decode`` caps both the
compressed and the inflated size and parses strictly.

Histograms follow the one binning rule of ``agent.binning``: for edges
e_0..e_k, bin 0 is underflow (< e_0), bin i is [e_{i-1}, e_i), bin k+1 overflow.
"""

import itertools
import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from agent.protocol import fields as f
from agent.protocol.canonical import canonical_bytes
from agent.protocol.errors import DocumentTooLargeError, MalformedDocumentError
from agent.protocol.profile import MAX_BINS, MAX_PROFILE_FEATURES, PredictionKind
from agent.protocol.topics import validate_device_id

SPEC_VERSION = 1
MAX_TELEMETRY_MESSAGE_BYTES = 64 * 1024  # compressed, as published
MAX_TELEMETRY_JSON_BYTES = 512 * 1024  # inflated
MAX_WINDOW_SECONDS = 24 * 3600
MAX_CLASSES = MAX_BINS
COMPRESSION_LEVEL = 6
_INT_ONLY = {int}

# 0.01 ms .. ~21 s in steps of 2**(1/3) (+26%): 64 edges, 65 bins.
LATENCY_EDGES_MS: tuple[float, ...] = tuple(0.01 * 2 ** (k / 3) for k in range(64))
# Classifier confidence (top score) in tenths: 11 edges, so bins 1..10 hold [0, .1) .. [.9, 1].
CONFIDENCE_EDGES: tuple[float, ...] = tuple(k / 10 for k in range(11))


def _count(obj: dict[str, Any], key: str, what: str) -> int:
    return f.integer(obj, key, what, 0)


def _counts(value: Any, what: str, expected: int | None = None, max_items: int = MAX_BINS + 1) -> tuple[int, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= max_items:
        raise MalformedDocumentError(f"{what} must be a list of 1..{max_items} counts")
    if expected is not None and len(value) != expected:
        raise MalformedDocumentError(f"{what} must hold {expected} counts, got {len(value)}")
    if not set(map(type, value)) <= _INT_ONLY or min(value) < 0 or max(value) > f.MAX_INT:  # bool is not int here
        raise MalformedDocumentError(f"{what} must contain integers >= 0")
    return tuple(value)


def _number(obj: dict[str, Any], key: str, what: str, minimum: float = 0.0,
            maximum: float = 1e18) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedDocumentError(f"{what}.{key} must be a number")
    if not minimum <= value <= maximum:
        raise MalformedDocumentError(f"{what}.{key}={value} is outside [{minimum}, {maximum}]")
    return float(value)


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    @classmethod
    def from_dict(cls, obj: Any, what: str) -> "ModelRef":
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"name", "version"}, what)
        return cls(f.string(obj, "name", what, f.NAME_PATTERN), f.integer(obj, "version", what, 1))


@dataclass(frozen=True)
class FeatureCounts:
    """Per input feature: counts on the profile's bins (len(edges) + 1) and NaNs, which no bin holds."""

    profile_sha256: str
    counts: tuple[tuple[int, ...], ...]
    missing: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"profile_sha256": self.profile_sha256, "counts": [list(c) for c in self.counts],
                "missing": list(self.missing)}

    @classmethod
    def from_dict(cls, obj: Any) -> "FeatureCounts":
        what = "telemetry.features"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"profile_sha256", "counts", "missing"}, what)
        rows = f.get(obj, "counts", what)
        if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_PROFILE_FEATURES:
            raise MalformedDocumentError(f"{what}.counts must list 1..{MAX_PROFILE_FEATURES} features")
        if any(not isinstance(row, list) or not 1 <= len(row) <= MAX_BINS + 1 for row in rows):
            raise MalformedDocumentError(f"{what}.counts[] must be lists of 1..{MAX_BINS + 1} counts")
        _counts(list(itertools.chain.from_iterable(rows)), f"{what}.counts[]", max_items=len(rows) * (MAX_BINS + 1))
        counts = tuple(tuple(row) for row in rows)
        missing = _counts(f.get(obj, "missing", what), f"{what}.missing", len(counts), MAX_PROFILE_FEATURES)
        return cls(f.sha256_hex(obj, "profile_sha256", what), counts, missing)


@dataclass(frozen=True)
class PredictionCounts:
    """Classes: ``labels`` and one count each (plus ``confidence`` for scored classifiers).
    Values: counts on the reference profile's prediction edges (``labels`` empty)."""

    kind: PredictionKind
    labels: tuple[float, ...]
    counts: tuple[int, ...]
    confidence: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "labels": list(self.labels), "counts": list(self.counts),
                "confidence": None if self.confidence is None else list(self.confidence)}

    @classmethod
    def from_dict(cls, obj: Any) -> "PredictionCounts":
        what = "telemetry.predictions"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"kind", "labels", "counts", "confidence"}, what)
        try:
            kind = PredictionKind(f.get(obj, "kind", what))
        except ValueError:
            raise MalformedDocumentError(f"{what}.kind must be 'classes' or 'values'") from None
        labels = f.get(obj, "labels", what)
        if not isinstance(labels, list) or len(labels) > MAX_CLASSES or any(
                isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in labels):
            raise MalformedDocumentError(f"{what}.labels must be a list of <= {MAX_CLASSES} finite numbers")
        if kind is PredictionKind.CLASSES:
            if len(set(labels)) != len(labels):
                raise MalformedDocumentError(f"{what}.labels must be distinct")
            counts = _counts(f.get(obj, "counts", what), f"{what}.counts", len(labels), MAX_CLASSES) \
                if labels else _empty(f.get(obj, "counts", what), f"{what}.counts")
        else:
            if labels:
                raise MalformedDocumentError(f"{what}.labels must be empty for values")
            counts = _counts(f.get(obj, "counts", what), f"{what}.counts")
        confidence = obj.get("confidence")
        return cls(kind, tuple(float(v) for v in labels), counts,
                   None if confidence is None else _counts(confidence, f"{what}.confidence",
                                                           len(CONFIDENCE_EDGES) + 1))


def _empty(value: Any, what: str) -> tuple[int, ...]:
    if value != []:
        raise MalformedDocumentError(f"{what} must be empty when there are no labels")
    return ()


@dataclass(frozen=True)
class DataQuality:
    schema_violations: int = 0  # requests refused because they do not match the model's input schema
    out_of_range: int = 0  # input values outside the reference range (underflow + overflow bins)
    nan: int = 0  # NaN input values

    def to_dict(self) -> dict[str, Any]:
        return {"schema_violations": self.schema_violations, "out_of_range": self.out_of_range, "nan": self.nan}

    @classmethod
    def from_dict(cls, obj: Any) -> "DataQuality":
        what = "telemetry.quality"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"schema_violations", "out_of_range", "nan"}, what)
        return cls(_count(obj, "schema_violations", what), _count(obj, "out_of_range", what),
                   _count(obj, "nan", what))


@dataclass(frozen=True)
class SystemMetrics:
    cpu_percent: float | None = None  # whole device, busy share of all CPUs during the window
    rss_bytes: int | None = None  # the agent process
    temperature_c: float | None = None  # hottest /sys/class/thermal zone
    disk_free_bytes: int | None = None  # file system of the agent's data directory

    def to_dict(self) -> dict[str, Any]:
        return {"cpu_percent": _round(self.cpu_percent, 1), "rss_bytes": self.rss_bytes,
                "temperature_c": _round(self.temperature_c, 1), "disk_free_bytes": self.disk_free_bytes}

    @classmethod
    def from_dict(cls, obj: Any) -> "SystemMetrics":
        what = "telemetry.system"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"cpu_percent", "rss_bytes", "temperature_c", "disk_free_bytes"}, what)
        rss, disk = obj.get("rss_bytes"), obj.get("disk_free_bytes")
        return cls(
            cpu_percent=_number(obj, "cpu_percent", what, 0.0, 100.0),
            rss_bytes=None if rss is None else f.integer(obj, "rss_bytes", what),
            temperature_c=_number(obj, "temperature_c", what, -273.15, 1000.0),
            disk_free_bytes=None if disk is None else f.integer(obj, "disk_free_bytes", what),
        )


@dataclass(frozen=True)
class ShadowSummary:
    """A candidate model run on the same inputs as the served one (filled by the shadow runner)."""

    candidate: ModelRef
    compared: int
    agreement: float  # share of compared requests where both models agreed, 0..1
    serving_p50_ms: float
    candidate_p50_ms: float
    mean_abs_diff: float | None = None  # models that are not classifiers: mean |serving - candidate| per element

    def to_dict(self) -> dict[str, Any]:
        document = {"candidate": self.candidate.to_dict(), "compared": self.compared,
                    "agreement": round(self.agreement, 6), "serving_p50_ms": round(self.serving_p50_ms, 4),
                    "candidate_p50_ms": round(self.candidate_p50_ms, 4)}
        if self.mean_abs_diff is not None:
            document["mean_abs_diff"] = self.mean_abs_diff
        return document

    @classmethod
    def from_dict(cls, obj: Any) -> "ShadowSummary":
        what = "telemetry.shadow"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"candidate", "compared", "agreement", "serving_p50_ms", "candidate_p50_ms",
                          "mean_abs_diff"}, what)
        values = {key: _number(obj, key, what, 0.0, 1.0 if key == "agreement" else 1e9)
                  for key in ("agreement", "serving_p50_ms", "candidate_p50_ms")}
        if any(value is None for value in values.values()):
            raise MalformedDocumentError(f"{what} needs agreement, serving_p50_ms and candidate_p50_ms")
        return cls(ModelRef.from_dict(f.get(obj, "candidate", what), f"{what}.candidate"),
                   _count(obj, "compared", what), values["agreement"] or 0.0, values["serving_p50_ms"] or 0.0,
                   values["candidate_p50_ms"] or 0.0, _number(obj, "mean_abs_diff", what, 0.0, 1e18))


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class TelemetryWindow:
    device_id: str
    seq: int  # 1, 2, 3, ... per device
    start: float  # unix seconds, device clock
    end: float
    model: ModelRef | None  # the model served in this window (None: none installed)
    requests: int = 0
    errors: int = 0
    latency_ms: tuple[int, ...] = field(default=(0,) * (len(LATENCY_EDGES_MS) + 1))  # successful requests
    features: FeatureCounts | None = None  # None without a reference profile
    predictions: PredictionCounts | None = None
    quality: DataQuality = field(default_factory=DataQuality)
    system: SystemMetrics = field(default_factory=SystemMetrics)
    evicted: int = 0  # windows the device's queue dropped (oldest first) since the previous window
    shadow: ShadowSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "telemetry",
            "v": SPEC_VERSION,
            "device_id": self.device_id,
            "seq": self.seq,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "model": None if self.model is None else self.model.to_dict(),
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms": list(self.latency_ms),
            "features": None if self.features is None else self.features.to_dict(),
            "predictions": None if self.predictions is None else self.predictions.to_dict(),
            "quality": self.quality.to_dict(),
            "system": self.system.to_dict(),
            "evicted": self.evicted,
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
        }

    def encode(self) -> bytes:
        return zlib.compress(canonical_bytes(self.to_dict()), COMPRESSION_LEVEL)

    @classmethod
    def from_dict(cls, obj: Any) -> "TelemetryWindow":
        what = "telemetry"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"type", "v", "device_id", "seq", "start", "end", "model", "requests", "errors",
                          "latency_ms", "features", "predictions", "quality", "system", "evicted", "shadow"}, what)
        if obj.get("type") != "telemetry" or obj.get("v") != SPEC_VERSION:
            raise MalformedDocumentError(f"telemetry must have type 'telemetry' and v {SPEC_VERSION}")
        start, end = _number(obj, "start", what, 0.0, 1e11), _number(obj, "end", what, 0.0, 1e11)
        if start is None or end is None or not start <= end <= start + MAX_WINDOW_SECONDS:
            raise MalformedDocumentError(f"{what} needs start <= end <= start + {MAX_WINDOW_SECONDS} s")
        requests, errors = _count(obj, "requests", what), _count(obj, "errors", what)
        latency = _counts(f.get(obj, "latency_ms", what), f"{what}.latency_ms", len(LATENCY_EDGES_MS) + 1,
                          len(LATENCY_EDGES_MS) + 1)
        if errors > requests or sum(latency) > requests:
            raise MalformedDocumentError(f"{what}: errors and latency samples cannot exceed requests")
        model, features, predictions, shadow = (obj.get(key) for key in ("model", "features", "predictions",
                                                                         "shadow"))
        return cls(
            device_id=validate_device_id(f.get(obj, "device_id", what)),
            seq=f.integer(obj, "seq", what, 1),
            start=start,
            end=end,
            model=None if model is None else ModelRef.from_dict(model, f"{what}.model"),
            requests=requests,
            errors=errors,
            latency_ms=latency,
            features=None if features is None else FeatureCounts.from_dict(features),
            predictions=None if predictions is None else PredictionCounts.from_dict(predictions),
            quality=DataQuality.from_dict(f.get(obj, "quality", what)),
            system=SystemMetrics.from_dict(f.get(obj, "system", what)),
            evicted=_count(obj, "evicted", what),
            shadow=None if shadow is None else ShadowSummary.from_dict(shadow),
        )

    @classmethod
    def decode(cls, payload: bytes) -> "TelemetryWindow":
        """Inflate and parse a published window; any defect raises a ``MalformedDocumentError``."""
        return cls.from_dict(parse_window_json(inflate(payload)))


def _reject_constant(name: str) -> Any:
    raise MalformedDocumentError(f"non-finite number {name} is not allowed")


def parse_window_json(data: bytes) -> Any:
    """JSON of a window, parsed at C speed (ingest handles thousands per second).

    Lighter than ``canonical.parse_json`` because nothing here is signed: NaN and
    Infinity are rejected, a repeated key keeps its last value, and every string
    that matters is checked against a pattern by ``from_dict`` (which also
    rejects overflowing floats and out-of-range integers).
    """
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MalformedDocumentError(f"telemetry is not UTF-8: {exc}") from None
    except RecursionError:
        raise MalformedDocumentError("telemetry is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers over the int-to-str digit limit
        raise MalformedDocumentError(f"telemetry is not valid JSON: {exc}") from None


def inflate(payload: bytes) -> bytes:
    """zlib-decompress ``payload`` with caps on both sizes (no decompression bombs, no trailing bytes)."""
    if not isinstance(payload, bytes | bytearray):
        raise MalformedDocumentError(f"expected bytes, got {type(payload).__name__}")
    if len(payload) > MAX_TELEMETRY_MESSAGE_BYTES:
        raise DocumentTooLargeError(f"telemetry message is {len(payload)} bytes, cap is {MAX_TELEMETRY_MESSAGE_BYTES}")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(bytes(payload), MAX_TELEMETRY_JSON_BYTES + 1)
    except zlib.error as exc:
        raise MalformedDocumentError(f"telemetry is not zlib data: {exc}") from None
    if len(data) > MAX_TELEMETRY_JSON_BYTES:
        raise DocumentTooLargeError(f"telemetry inflates to more than {MAX_TELEMETRY_JSON_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise MalformedDocumentError("telemetry zlib stream is truncated or followed by extra bytes")
    return data


def histogram_quantile(counts: tuple[int, ...] | list[int], q: float,
                       edges: tuple[float, ...] = LATENCY_EDGES_MS) -> float | None:
    """The ``q`` quantile (0..1) of a histogram on ``edges``, interpolated geometrically within a bin.

    Samples in the underflow bin count as ``edges[0]``, in the overflow bin as ``edges[-1]``.
    None for an empty histogram.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == 0:
                return edges[0]
            if index > len(edges) - 1:
                return edges[-1]
            low, high = edges[index - 1], edges[index]
            fraction = min(1.0, max(0.0, (rank - seen) / count))
            if low > 0:
                return low * (high / low) ** fraction
            return low + (high - low) * fraction
        seen += count
    return edges[-1]


def histogram_quantiles(counts: tuple[int, ...] | list[int], qs: tuple[float, ...],
                        edges: tuple[float, ...] = LATENCY_EDGES_MS) -> tuple[float | None, ...]:
    """``histogram_quantile`` for several ``qs`` (ascending) in one pass over the bins."""
    total = sum(counts)
    if total <= 0:
        return (None,) * len(qs)
    found: list[float] = []
    seen = 0
    for index, count in enumerate(counts):
        while count and len(found) < len(qs) and seen + count >= qs[len(found)] * total:
            rank = qs[len(found)] * total
            if index == 0:
                found.append(edges[0])
            elif index > len(edges) - 1:
                found.append(edges[-1])
            else:
                low, high = edges[index - 1], edges[index]
                fraction = min(1.0, max(0.0, (rank - seen) / count))
                found.append(low * (high / low) ** fraction if low > 0 else low + (high - low) * fraction)
        seen += count
    return tuple(found) + (edges[-1],) * (len(qs) - len(found))
