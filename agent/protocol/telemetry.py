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
and device, so the server deduplicates redeliveries and sees gaps.

On the wire (``agent.protocol.telemetry_wire``) ``encode`` writes spec version 2:
``b"EFT\\x02"`` and a zlib-compressed binary body, about 4x cheaper to decode than
version 1, which was the zlib-compressed canonical JSON of ``to_dict`` (first
byte 0x78). ``decode`` takes both (old agents, and windows already queued on
devices), caps the compressed and the inflated size and parses strictly: both
formats enforce the same rules (``agent.protocol.telemetry_rules``).

Histograms follow the one binning rule of ``agent.binning``: for edges
e_0..e_k, bin 0 is underflow (< e_0), bin i is [e_{i-1}, e_i), bin k+1 overflow
(quantiles: ``agent.protocol.telemetry_histogram``).
"""

from dataclasses import dataclass, field
from typing import Any

from agent.protocol import fields as f
from agent.protocol.errors import MalformedDocumentError
from agent.protocol.profile import PredictionKind
from agent.protocol.telemetry_histogram import histogram_quantile, histogram_quantiles
from agent.protocol.telemetry_rules import (
    CONFIDENCE_BINS,
    CONFIDENCE_EDGES,
    CPU_PERCENT_RANGE,
    LATENCY_BINS,
    LATENCY_EDGES_MS,
    MAX_CLASSES,
    MAX_TELEMETRY_INFLATED_BYTES,
    MAX_TELEMETRY_MESSAGE_BYTES,
    MAX_TIME,
    MAX_WINDOW_SECONDS,
    TEMPERATURE_RANGE,
    check_feature_shape,
    check_predictions,
    check_range,
    check_span,
    check_totals,
)
from agent.protocol.topics import validate_device_id

SPEC_VERSION = 2  # what ``encode`` writes; ``decode`` also reads version 1
JSON_SPEC_VERSION = 1  # the "v" of the ``to_dict`` document, version 1's wire format
MAX_TELEMETRY_JSON_BYTES = MAX_TELEMETRY_INFLATED_BYTES  # the version 1 name of the inflated cap
COMPRESSION_LEVEL = 6
_INT_ONLY = {int}

__all__ = [
    "CONFIDENCE_BINS", "CONFIDENCE_EDGES", "COMPRESSION_LEVEL", "JSON_SPEC_VERSION", "LATENCY_BINS",
    "LATENCY_EDGES_MS", "MAX_CLASSES", "MAX_TELEMETRY_INFLATED_BYTES", "MAX_TELEMETRY_JSON_BYTES",
    "MAX_TELEMETRY_MESSAGE_BYTES", "MAX_WINDOW_SECONDS", "SPEC_VERSION", "DataQuality", "FeatureCounts",
    "ModelRef", "PredictionCounts", "ShadowSummary", "SystemMetrics", "TelemetryWindow", "histogram_quantile",
    "histogram_quantiles",
]


def _count(obj: dict[str, Any], key: str, what: str) -> int:
    return f.integer(obj, key, what, 0)


def _counts(value: Any, what: str) -> tuple[int, ...]:
    """A JSON list of integers 0..MAX_INT (bool is not int here); the rules check its length."""
    if not isinstance(value, list) or value and (
            not set(map(type, value)) <= _INT_ONLY or min(value) < 0 or max(value) > f.MAX_INT):
        raise MalformedDocumentError(f"{what} must be a list of integers >= 0")
    return tuple(value)


def _number(obj: dict[str, Any], key: str, what: str, minimum: float = 0.0,
            maximum: float = 1e18) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedDocumentError(f"{what}.{key} must be a number")
    return float(check_range(value, f"{what}.{key}", minimum, maximum))  # in range: a huge int cannot overflow


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
        rows, missing = f.get(obj, "counts", what), f.get(obj, "missing", what)
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows) \
                or not isinstance(missing, list):
            raise MalformedDocumentError(f"{what}.counts must be a list of lists, {what}.missing a list")
        check_feature_shape([len(row) for row in rows], len(missing), what)
        _counts([count for row in rows for count in row], f"{what}.counts[]")
        return cls(f.sha256_hex(obj, "profile_sha256", what), tuple(tuple(row) for row in rows),
                   _counts(missing, f"{what}.missing"))


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
                isinstance(v, bool) or not isinstance(v, int | float) for v in labels):
            raise MalformedDocumentError(f"{what}.labels must be a list of <= {MAX_CLASSES} finite numbers")
        try:
            floats = tuple(map(float, labels))
        except OverflowError:  # an integer literal beyond the float range
            raise MalformedDocumentError(f"{what}.labels must be finite numbers") from None
        counts = _counts(f.get(obj, "counts", what), f"{what}.counts")
        confidence = obj.get("confidence")
        confidence = None if confidence is None else _counts(confidence, f"{what}.confidence")
        check_predictions(kind, floats, len(counts), None if confidence is None else len(confidence), what)
        return cls(kind, floats, counts, confidence)


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
            cpu_percent=_number(obj, "cpu_percent", what, *CPU_PERCENT_RANGE),
            rss_bytes=None if rss is None else f.integer(obj, "rss_bytes", what),
            temperature_c=_number(obj, "temperature_c", what, *TEMPERATURE_RANGE),
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
            "v": JSON_SPEC_VERSION,
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
        """The published form: spec version 2 (``telemetry_wire``), or version 1 for a window version 2
        cannot represent (a histogram count over 2**32 - 1, or a value ``decode`` rejects anyway)."""
        return _wire().encode_window(self)

    @classmethod
    def from_dict(cls, obj: Any) -> "TelemetryWindow":
        what = "telemetry"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"type", "v", "device_id", "seq", "start", "end", "model", "requests", "errors",
                          "latency_ms", "features", "predictions", "quality", "system", "evicted", "shadow"}, what)
        if obj.get("type") != "telemetry" or obj.get("v") != JSON_SPEC_VERSION:
            raise MalformedDocumentError(f"telemetry must have type 'telemetry' and v {JSON_SPEC_VERSION}")
        start, end = _number(obj, "start", what, 0.0, MAX_TIME), _number(obj, "end", what, 0.0, MAX_TIME)
        if start is None or end is None:
            raise MalformedDocumentError(f"{what} needs start and end")
        check_span(start, end, what)
        requests, errors = _count(obj, "requests", what), _count(obj, "errors", what)
        latency = _counts(f.get(obj, "latency_ms", what), f"{what}.latency_ms")
        check_totals(requests, errors, latency, what)
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
        """Inflate and parse a published window of either spec version; any defect raises a
        ``MalformedDocumentError`` (``DocumentTooLargeError`` over a size cap)."""
        return _wire().decode_window(payload)


def _wire() -> Any:
    """``telemetry_wire`` builds on the classes above, so it is imported on first use (then cached)."""
    global _wire_module
    if _wire_module is None:
        from agent.protocol import telemetry_wire
        _wire_module = telemetry_wire
    return _wire_module


_wire_module: Any = None


