"""The reference profile a release carries for drift detection.

Per input feature: sorted bin edges (deciles of the calibration data: min,
p10..p90, max) and the reference count per bin, where bin 0 is underflow
(< edges[0]), bins 1..len(edges)-1 are the interior bins and the last bin is
overflow (> edges[-1]). Plus the reference distribution of predictions. The
signed release holds ``sha256()`` of the canonical profile; devices fetch the
profile as a content-addressed artifact and check that hash.
"""

import enum
import math
from dataclasses import dataclass
from typing import Any

from agent.protocol import fields as f
from agent.protocol.canonical import canonical_bytes, canonical_sha256, parse_json
from agent.protocol.errors import MalformedDocumentError

MAX_PROFILE_FEATURES = 1024
MAX_BINS = 256
MAX_PROFILE_BYTES = 4 * 1024 * 1024


class PredictionKind(enum.StrEnum):
    CLASSES = "classes"  # labels_or_edges: class labels; one count per class
    VALUES = "values"  # labels_or_edges: bin edges; len(edges) + 1 counts, as for features


def _finite_floats(obj: dict[str, Any], key: str, what: str, max_items: int) -> tuple[float, ...]:
    value = f.get(obj, key, what)
    if not isinstance(value, list) or not 1 <= len(value) <= max_items:
        raise MalformedDocumentError(f"{what}.{key} must be a list of 1..{max_items} numbers")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise MalformedDocumentError(f"{what}.{key} must contain finite numbers")
    return tuple(float(item) for item in value)


def _counts(obj: dict[str, Any], key: str, what: str, expected: int) -> tuple[int, ...]:
    value = f.get(obj, key, what)
    if not isinstance(value, list) or len(value) != expected:
        raise MalformedDocumentError(f"{what}.{key} must list {expected} counts")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= f.MAX_INT:
            raise MalformedDocumentError(f"{what}.{key} must contain integers >= 0")
    return tuple(value)


@dataclass(frozen=True)
class FeatureProfile:
    index: int
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "edges": list(self.edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, obj: Any) -> "FeatureProfile":
        what = "profile.features[]"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"index", "edges", "counts"}, what)
        edges = _finite_floats(obj, "edges", what, MAX_BINS)
        if any(b < a for a, b in zip(edges, edges[1:], strict=False)):
            raise MalformedDocumentError(f"{what}.edges must be sorted")
        return cls(f.integer(obj, "index", what, 0, MAX_PROFILE_FEATURES - 1), edges,
                   _counts(obj, "counts", what, len(edges) + 1))


@dataclass(frozen=True)
class PredictionProfile:
    kind: PredictionKind
    labels_or_edges: tuple[float, ...]
    counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "labels_or_edges": list(self.labels_or_edges), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, obj: Any) -> "PredictionProfile":
        what = "profile.predictions"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"kind", "labels_or_edges", "counts"}, what)
        try:
            kind = PredictionKind(f.get(obj, "kind", what))
        except ValueError:
            raise MalformedDocumentError(f"{what}.kind must be 'classes' or 'values'") from None
        labels = _finite_floats(obj, "labels_or_edges", what, MAX_BINS)
        expected = len(labels) if kind is PredictionKind.CLASSES else len(labels) + 1
        return cls(kind, labels, _counts(obj, "counts", what, expected))


@dataclass(frozen=True)
class ReferenceProfile:
    input_name: str
    features: tuple[FeatureProfile, ...]
    predictions: PredictionProfile | None
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": "reference_profile",
            "spec_version": 1,
            "input_name": self.input_name,
            "features": [feature.to_dict() for feature in self.features],
            "predictions": None if self.predictions is None else self.predictions.to_dict(),
            "samples": self.samples,
        }

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def sha256(self) -> str:
        return canonical_sha256(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> "ReferenceProfile":
        what = "profile"
        obj = f.mapping(obj, what)
        f.only_keys(obj, {"_type", "spec_version", "input_name", "features", "predictions", "samples"}, what)
        if obj.get("_type") != "reference_profile" or obj.get("spec_version") != 1:
            raise MalformedDocumentError("profile must have _type 'reference_profile' and spec_version 1")
        features = tuple(FeatureProfile.from_dict(item)
                         for item in f.object_list(obj, "features", what, MAX_PROFILE_FEATURES))
        if [feature.index for feature in features] != list(range(len(features))):
            raise MalformedDocumentError("profile.features must be indexed 0..n-1 in order")
        predictions = obj.get("predictions")
        return cls(
            input_name=f.string(obj, "input_name", what, max_len=256),
            features=features,
            predictions=None if predictions is None else PredictionProfile.from_dict(predictions),
            samples=f.integer(obj, "samples", what, 1),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReferenceProfile":
        return cls.from_dict(parse_json(data, MAX_PROFILE_BYTES))
