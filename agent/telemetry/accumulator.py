"""Per-inference accounting for telemetry windows, vectorised with numpy.

``TelemetryAccumulator`` is an ``InferenceService`` observer. Per request it
only counts and copies: the latency, the request's input rows (as float64, the
flattening ``agent.binning.feature_matrix`` uses) and the read predictions go
into preallocated buffers. When a buffer fills, or the window closes, the
buffers are binned at once with ``agent.binning.FeatureBinner`` on the
reference profile's edges (all features in a few numpy calls) and
``bin_counts`` on ``LATENCY_EDGES_MS`` and ``CONFIDENCE_EDGES``, which keeps
the cost per inference to a few microseconds (``bench/agent_overhead.py``).

A window belongs to one served model: when a different model answers, the
running window is finished (``drain`` returns it) and a new one begins.
Failed requests count as errors (schema violations separately) and add no
latency or bins. Without a reference profile feature bins are omitted.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.binning import FeatureBinner, bin_counts
from agent.errors import InvalidInferenceRequestError
from agent.inference import ServedModel
from agent.protocol.profile import PredictionKind, ReferenceProfile
from agent.protocol.telemetry import (
    CONFIDENCE_EDGES,
    LATENCY_EDGES_MS,
    MAX_CLASSES,
    DataQuality,
    FeatureCounts,
    ModelRef,
    PredictionCounts,
    ShadowSummary,
)
from agent.telemetry.outputs import OutputReader
from agent.telemetry.pending import feature_rows, numpy_dtype, prediction_rows

log = logging.getLogger(__name__)

BUFFER_REQUESTS = 256
LATENCY = np.asarray(LATENCY_EDGES_MS)
CONFIDENCE = np.asarray(CONFIDENCE_EDGES)

ProfileLookup = Callable[[ServedModel], tuple[str, ReferenceProfile] | None]
ShadowSource = Callable[[], "ShadowSummary | dict[str, Any] | None"]


@dataclass(frozen=True)
class WindowReport:
    """A finished window's counts (the service adds device id, sequence, system metrics, evictions)."""

    start: float
    end: float
    model: ModelRef | None
    requests: int
    errors: int
    latency_ms: tuple[int, ...]
    features: FeatureCounts | None
    predictions: PredictionCounts | None
    quality: DataQuality
    shadow: ShadowSummary | None


class _Binding:
    """How the requests of one served model are counted."""

    def __init__(self, served: ServedModel | None, profile: tuple[str, ReferenceProfile] | None) -> None:
        self.sha256 = served.sha256 if served else None
        self.model = ModelRef(served.name, served.version) if served else None
        self.profile_sha256: str | None = profile[0] if profile else None
        self.profile: ReferenceProfile | None = profile[1] if profile else None
        self.reader = OutputReader.for_model(served.outputs, self.profile) if served else OutputReader(None)
        self.input_name: str | None = None
        self.edges: list[np.ndarray] = []
        # requests whose input has the schema's dtype and sample shape are kept as bytes (cheaper than an array)
        self.input_dtype: np.dtype | None = None
        self.sample_shape: tuple[int, ...] | None = None
        if served is not None and self.profile is not None:
            names = [spec.name for spec in served.inputs]
            self.input_name = self.profile.input_name if self.profile.input_name in names else names[0]
            self.edges = [np.asarray(feature.edges, dtype=np.float64) for feature in self.profile.features]
            spec = served.inputs[names.index(self.input_name)]
            dims = tuple(size for size in spec.shape[1:] if size is not None)
            if len(spec.shape) >= 1 and len(dims) == len(spec.shape) - 1:
                self.input_dtype, self.sample_shape = numpy_dtype(spec.dtype), dims
        self.binner = FeatureBinner(self.edges) if self.edges else None
        predictions = self.profile.predictions if self.profile is not None else None
        self.value_edges = np.asarray(predictions.labels_or_edges, dtype=np.float64) \
            if predictions is not None and predictions.kind is PredictionKind.VALUES else None


class _Counts:
    def __init__(self, binding: _Binding, start: float) -> None:
        self.start = start
        self.requests = self.errors = self.schema_violations = self.out_of_range = self.nan = 0
        self.latency = np.zeros(len(LATENCY_EDGES_MS) + 1, dtype=np.int64)
        self.features = np.zeros((len(binding.edges), max(binding.binner.widths) if binding.binner else 0), np.int64)
        self.missing = np.zeros(len(binding.edges), dtype=np.int64)
        self.classes: Counter[float] = Counter()
        self.values = None if binding.value_edges is None else np.zeros(len(binding.value_edges) + 1, np.int64)
        self.confidence = np.zeros(len(CONFIDENCE_EDGES) + 1, dtype=np.int64)
        self.scored = False


class TelemetryAccumulator:
    def __init__(self, profile_lookup: ProfileLookup, max_inferences: int = 0,
                 on_full: Callable[[], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._lookup = profile_lookup
        self._max_inferences = max_inferences
        self._on_full = on_full
        self._clock = clock
        self._lock = threading.Lock()
        self._shadow_source: ShadowSource | None = None
        self._binding = _Binding(None, None)
        self._counts = _Counts(self._binding, clock())
        self._finished: list[WindowReport] = []
        self._latencies: list[float] = []  # pending, binned together every BUFFER_REQUESTS requests
        self._inputs: list[np.ndarray] = []  # copies of inputs of another dtype or shape
        self._raw: list[bytes] = []  # inputs of the schema's dtype and sample shape
        self._outputs: list[Mapping[str, np.ndarray]] = []

    def set_shadow_source(self, source: ShadowSource | None) -> None:
        """``source()`` gives the shadow section of the window being finished (None: no shadow)."""
        self._shadow_source = source

    # -- per request (the InferenceService observer) ----------------------------

    def __call__(self, served: ServedModel, inputs: Mapping[str, np.ndarray],
                 outputs: dict[str, np.ndarray] | None, latency_ms: float, error: Exception | None) -> None:
        with self._lock:  # the common case: a few appends, no numpy beyond one copy
            binding = self._binding
            if served.sha256 != binding.sha256:
                self._rebind(served)
                binding = self._binding
            counts = self._counts
            counts.requests += 1
            if error is None and outputs is not None:
                latencies = self._latencies
                latencies.append(latency_ms)
                if binding.input_name is not None:
                    batch = inputs.get(binding.input_name)
                    if batch is not None:  # copied: the caller may reuse its buffer
                        dtype = batch.dtype
                        if (dtype is binding.input_dtype or dtype == binding.input_dtype) \
                                and batch.shape[1:] == binding.sample_shape:
                            self._raw.append(batch.tobytes())
                        else:
                            self._inputs.append(batch.copy())
                if binding.reader.kind is not None:
                    self._outputs.append(outputs)  # runtimes return fresh arrays
                if len(latencies) >= BUFFER_REQUESTS:
                    self._flush()
            else:
                counts.errors += 1
                if isinstance(error, InvalidInferenceRequestError):
                    counts.schema_violations += 1
            full = self._max_inferences and counts.requests >= self._max_inferences
        if full and self._on_full is not None:
            self._on_full()

    # -- binning ------------------------------------------------------------------

    def _flush(self) -> None:
        counts = self._counts
        if self._latencies:
            counts.latency += bin_counts(LATENCY, np.asarray(self._latencies, dtype=np.float64))
            self._latencies = []
        if self._raw:
            binding = self._binding
            assert binding.input_dtype is not None and binding.sample_shape is not None
            joined = np.frombuffer(b"".join(self._raw), binding.input_dtype)
            self._inputs.append(joined.reshape(-1, *binding.sample_shape))
            self._raw = []
        if self._inputs:
            rows = feature_rows(self._inputs, len(self._binding.edges))
            self._inputs = []
            if rows is not None and self._binding.binner is not None:
                self._bin_rows(self._binding.binner, rows)
        if self._outputs:
            predictions, scores = prediction_rows(self._binding.reader, self._outputs)
            self._outputs = []
            self._bin_predictions(predictions, scores)

    def _bin_rows(self, binner: FeatureBinner, rows: np.ndarray) -> None:
        counts = self._counts
        binned, nan = binner.counts(rows)
        counts.features += binned
        counts.missing += nan
        counts.nan += int(nan.sum())
        counts.out_of_range += int(binned[:, 0].sum() + binned[binner.rows, binner.overflow].sum())

    def _bin_predictions(self, predictions: np.ndarray | None, scores: np.ndarray | None) -> None:
        counts = self._counts
        reader = self._binding.reader
        if predictions is None and scores is not None and reader.kind is PredictionKind.CLASSES:
            predictions = scores.argmax(axis=1).astype(np.float64)
        if predictions is not None:
            predictions = predictions[~np.isnan(predictions)]
            if reader.kind is PredictionKind.CLASSES:
                labels, numbers = np.unique(predictions, return_counts=True)
                counts.classes.update(dict(zip(labels.tolist(), numbers.tolist(), strict=True)))
            elif counts.values is not None and self._binding.value_edges is not None:
                counts.values += bin_counts(self._binding.value_edges, predictions)
        if scores is not None and len(scores):
            counts.confidence += bin_counts(CONFIDENCE, scores.max(axis=1))
            counts.scored = True

    # -- windows --------------------------------------------------------------------

    def watch(self, served: ServedModel | None) -> None:
        """Bind the running window to the model being served (called at every window boundary)."""
        with self._lock:
            if served is not None and served.sha256 != self._binding.sha256:
                self._rebind(served)

    def _rebind(self, served: ServedModel) -> None:
        now = self._clock()
        if self._counts.requests:
            self._finished.append(self._finish(now))
        try:
            profile = self._lookup(served)
        except Exception:
            log.exception("event=telemetry_profile_lookup_failed model=%s", served.name)
            profile = None
        self._binding = _Binding(served, profile)
        self._counts = _Counts(self._binding, now if self._counts.requests else self._counts.start)
        log.info("event=telemetry_model model=%s version=%d profile=%s features=%d", served.name, served.version,
                 (self._binding.profile_sha256 or "-")[:12], len(self._binding.edges))

    def _finish(self, now: float) -> WindowReport:
        self._flush()
        counts, binding = self._counts, self._binding
        features = None
        if binding.profile_sha256 is not None and binding.edges:
            assert binding.binner is not None
            features = FeatureCounts(binding.profile_sha256,
                                     tuple(tuple(row[:width]) for row, width in
                                           zip(counts.features.tolist(), binding.binner.widths, strict=True)),
                                     tuple(counts.missing.tolist()))
        predictions = None
        if binding.reader.kind is PredictionKind.CLASSES:
            top = sorted(counts.classes.items(), key=lambda item: -item[1])[:MAX_CLASSES]
            labels = sorted(label for label, _ in top)
            predictions = PredictionCounts(PredictionKind.CLASSES, tuple(labels),
                                           tuple(counts.classes[label] for label in labels),
                                           tuple(counts.confidence.tolist()) if counts.scored else None)
        elif counts.values is not None:
            predictions = PredictionCounts(PredictionKind.VALUES, (), tuple(counts.values.tolist()))
        return WindowReport(
            start=counts.start, end=max(now, counts.start), model=binding.model, requests=counts.requests,
            errors=counts.errors, latency_ms=tuple(counts.latency.tolist()), features=features,
            predictions=predictions,
            quality=DataQuality(counts.schema_violations, counts.out_of_range, counts.nan),
            shadow=self._take_shadow(),
        )

    def _take_shadow(self) -> ShadowSummary | None:
        if self._shadow_source is None:
            return None
        try:
            report = self._shadow_source()
            return ShadowSummary.from_dict(report) if isinstance(report, dict) else report
        except Exception as exc:  # a malformed section (ProtocolError) or a failing source
            log.warning("event=telemetry_shadow_dropped error=%r", str(exc))
            return None

    def drain(self, close_current: bool) -> list[WindowReport]:
        """Windows finished by a model change, plus the running one if ``close_current``."""
        with self._lock:
            finished, self._finished = self._finished, []
            if close_current:
                now = self._clock()
                finished.append(self._finish(now))
                self._counts = _Counts(self._binding, now)
            return finished

    @property
    def requests(self) -> int:
        with self._lock:
            return self._counts.requests
