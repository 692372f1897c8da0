"""The limits of a telemetry window and the value rules both wire formats enforce.

A window arrives as v1 (zlib-compressed canonical JSON, parsed by
``TelemetryWindow.from_dict``) or v2 (the binary layout of
``agent.protocol.telemetry_wire``). Each decoder checks what its encoding
leaves open about types (a JSON number may be a bool or a string; a struct
field is always an int or a float) and then calls the same functions here for
the rules about values, so a window valid in one format is valid in the other.
Every function raises ``MalformedDocumentError`` naming the rule.
"""

import math
from collections.abc import Sequence

from agent.protocol.errors import MalformedDocumentError
from agent.protocol.profile import MAX_BINS, MAX_PROFILE_FEATURES, PredictionKind

MAX_TELEMETRY_MESSAGE_BYTES = 64 * 1024  # compressed, as published (either format)
MAX_TELEMETRY_INFLATED_BYTES = 512 * 1024  # the inflated JSON document or binary body
MAX_WINDOW_SECONDS = 24 * 3600
MAX_TIME = 1e11  # unix seconds (year 5138): start and end lie in [0, MAX_TIME]
MAX_CLASSES = MAX_BINS
MAX_FEATURE_BINS = MAX_BINS + 1  # len(edges) + 1 bins per feature and for value predictions
CPU_PERCENT_RANGE = (0.0, 100.0)
TEMPERATURE_RANGE = (-273.15, 1000.0)

# 0.01 ms .. ~21 s in steps of 2**(1/3) (+26%): 64 edges, 65 bins.
LATENCY_EDGES_MS: tuple[float, ...] = tuple(0.01 * 2 ** (k / 3) for k in range(64))
LATENCY_BINS = len(LATENCY_EDGES_MS) + 1
# Classifier confidence (top score) in tenths: 11 edges, so bins 1..10 hold [0, .1) .. [.9, 1].
CONFIDENCE_EDGES: tuple[float, ...] = tuple(k / 10 for k in range(11))
CONFIDENCE_BINS = len(CONFIDENCE_EDGES) + 1

_isfinite = math.isfinite


def check_range(value: float, what: str, minimum: float, maximum: float) -> float:
    """``value`` (already a number) must be finite and within [minimum, maximum]."""
    if not minimum <= value <= maximum:  # NaN fails every comparison, infinities the bounds
        raise MalformedDocumentError(f"{what}={value} is outside [{minimum}, {maximum}]")
    return value


def check_span(start: float, end: float, what: str = "telemetry") -> None:
    if not 0.0 <= start <= end <= start + MAX_WINDOW_SECONDS or not end <= MAX_TIME:
        raise MalformedDocumentError(f"{what} needs 0 <= start <= end <= start + {MAX_WINDOW_SECONDS} s "
                                     f"<= {MAX_TIME:.0f}, got start={start} end={end}")


def check_totals(requests: int, errors: int, latency: Sequence[int], what: str = "telemetry") -> None:
    """The latency histogram has its fixed bins; errors and latency samples fit in the requests."""
    if len(latency) != LATENCY_BINS:
        raise MalformedDocumentError(f"{what}.latency_ms must hold {LATENCY_BINS} counts, got {len(latency)}")
    if errors > requests or sum(latency) > requests:
        raise MalformedDocumentError(f"{what}: errors and latency samples cannot exceed requests")


def check_feature_shape(bins: Sequence[int], missing: int, what: str = "telemetry.features") -> None:
    """``bins``: the number of counts per feature; ``missing``: how many NaN counts came with them."""
    if not 1 <= len(bins) <= MAX_PROFILE_FEATURES:
        raise MalformedDocumentError(f"{what}.counts must list 1..{MAX_PROFILE_FEATURES} features")
    if min(bins) < 1 or max(bins) > MAX_FEATURE_BINS:
        raise MalformedDocumentError(f"{what}.counts[] must be lists of 1..{MAX_FEATURE_BINS} counts")
    if missing != len(bins):
        raise MalformedDocumentError(f"{what}.missing must hold {len(bins)} counts, got {missing}")


def check_predictions(kind: PredictionKind, labels: Sequence[float], counts: int, confidence: int | None,
                      what: str = "telemetry.predictions") -> None:
    """``counts`` and ``confidence``: the lengths of those histograms (None: no confidence histogram)."""
    if len(labels) > MAX_CLASSES or not all(map(_isfinite, labels)):
        raise MalformedDocumentError(f"{what}.labels must be a list of <= {MAX_CLASSES} finite numbers")
    if kind is PredictionKind.CLASSES:
        if len(set(labels)) != len(labels):
            raise MalformedDocumentError(f"{what}.labels must be distinct")
        if counts != len(labels):
            raise MalformedDocumentError(f"{what}.counts must hold one count per label ({len(labels)}), "
                                         f"got {counts}")
    else:
        if labels:
            raise MalformedDocumentError(f"{what}.labels must be empty for values")
        if not 1 <= counts <= MAX_FEATURE_BINS:
            raise MalformedDocumentError(f"{what}.counts must be a list of 1..{MAX_FEATURE_BINS} counts")
    if confidence is not None and confidence != CONFIDENCE_BINS:
        raise MalformedDocumentError(f"{what}.confidence must hold {CONFIDENCE_BINS} counts, got {confidence}")
