"""What a compression run builds and how strictly it judges: variants, calibration, gate thresholds."""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from compression.errors import CompressionError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


class InvalidSettingsError(CompressionError):
    """A compression setting is out of range."""

    hint = "see 'edgefleet model push --help' for the accepted values"


@dataclass(frozen=True)
class GateThresholds:
    """A variant passes only if every applicable check holds (fractions, not percent)."""

    min_top1_agreement: float = 0.99  # share of rows whose predicted class equals the original's
    max_accuracy_drop: float = 0.01  # 1 point: original accuracy - variant accuracy, with labels
    min_sqnr_db: float | None = None  # optional floor on every float output's SQNR
    max_relative_error: float = 0.05  # value outputs (no classes): mean |error| / mean |original|

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_top1_agreement <= 1.0, "min_top1_agreement must be within 0..1")
        _check(0.0 <= self.max_accuracy_drop <= 1.0, "max_accuracy_drop must be within 0..1")
        _check(self.max_relative_error >= 0.0, "max_relative_error must be >= 0")


@dataclass(frozen=True)
class CompressionSettings:
    variants: tuple[str, ...] | None = None  # None: every variant the source supports
    calibration_method: str = "minmax"
    max_calibration_rows: int = 512
    max_evaluation_rows: int = 5000
    latency_runs: int = 100
    latency_warmup: int = 10
    ram_budget_mb: int = 256  # Raspberry Pi-class: flag variants that need more
    thresholds: GateThresholds = field(default_factory=GateThresholds)

    def __post_init__(self) -> None:
        _check(self.calibration_method in CALIBRATION_METHODS,
               f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}")
        _check(1 <= self.max_calibration_rows <= 100_000, "max_calibration_rows must be within 1..100000")
        _check(1 <= self.max_evaluation_rows <= 1_000_000, "max_evaluation_rows must be within 1..1000000")
        _check(1 <= self.latency_runs <= 100_000, "latency_runs must be within 1..100000")
        _check(0 <= self.latency_warmup <= 10_000, "latency_warmup must be within 0..10000")
        _check(1 <= self.ram_budget_mb <= 1 << 20, "ram_budget_mb must be >= 1")
        _check(self.variants is None or len(self.variants) > 0, "variants must not be empty")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["variants"] = None if self.variants is None else list(self.variants)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompressionSettings":
        known = {item.name for item in fields(cls)}
        unknown = set(data) - known
        _check(not unknown, f"unknown compression settings {sorted(unknown)}")
        values = dict(data)
        if values.get("variants") is not None:
            values["variants"] = tuple(values["variants"])
        if isinstance(values.get("thresholds"), dict):
            values["thresholds"] = GateThresholds(**values["thresholds"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidSettingsError(f"invalid compression settings: {exc}") from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSettingsError(message)
