"""The compression report: one entry per variant (passed or rejected, with the
reasons), the original's figures, and a plain-text comparison table.

``CompressionReport.to_dict()`` is the JSON stored with the release; the table
functions work on that dict so the CLI renders what the server stored.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.protocol.metadata import Compatibility, Runtime
from compression.evaluate import OutputFidelity

REPORT_SCHEMA = 1
PASSED = "passed"
REJECTED = "rejected"


def finite(value: float | None, digits: int = 6) -> float | None:
    """JSON has no infinities: non-finite figures become null (the reasons say why)."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


@dataclass
class VariantResult:
    name: str
    runtime: Runtime
    precision: str
    description: str
    path: Path | None = None  # the built file (kept only when the variant passed)
    gate: str = REJECTED
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compatibility: Compatibility = field(default_factory=Compatibility)
    size_bytes: int | None = None
    wire_bytes: int | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    ram_mb: float | None = None
    exceeds_ram_budget: bool = False
    top1_agreement: float | None = None
    accuracy: float | None = None
    accuracy_drop: float | None = None
    relative_error: float | None = None
    outputs: list[OutputFidelity] = field(default_factory=list)
    build_seconds: float | None = None
    tier: int = 2

    @property
    def passed(self) -> bool:
        return self.gate == PASSED

    def to_dict(self, original_size: int, original_wire: int | None, original_p50: float) -> dict[str, Any]:
        def ratio(value: float | None, base: float | None) -> float | None:
            return finite(value / base, 4) if value is not None and base else None

        return {
            "name": self.name,
            "runtime": self.runtime.value,
            "precision": self.precision,
            "description": self.description,
            "file": None if self.path is None else self.path.name,
            "gate": self.gate,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
            "compatibility": self.compatibility.to_dict(),
            "size_bytes": self.size_bytes,
            "size_ratio": ratio(self.size_bytes, original_size),
            "wire_bytes": self.wire_bytes,
            "wire_ratio": ratio(self.wire_bytes, original_wire),
            "latency_ms_p50": finite(self.latency_ms_p50, 4),
            "latency_ms_p95": finite(self.latency_ms_p95, 4),
            "latency_ratio": ratio(self.latency_ms_p50, original_p50),
            "ram_mb": self.ram_mb,
            "exceeds_ram_budget": self.exceeds_ram_budget,
            "top1_agreement": finite(self.top1_agreement),
            "accuracy": finite(self.accuracy),
            "accuracy_drop": finite(self.accuracy_drop),
            "relative_error": finite(self.relative_error),
            "outputs": [_fidelity_dict(output) for output in self.outputs],
            "build_seconds": finite(self.build_seconds, 3),
        }


def _fidelity_dict(output: OutputFidelity) -> dict[str, Any]:
    return {"name": output.name, "max_abs_error": finite(output.max_abs_error),
            "mean_abs_error": finite(output.mean_abs_error), "sqnr_db": finite(output.sqnr_db, 2),
            "agreement": finite(output.agreement)}


def release_order(results: list[VariantResult]) -> list[VariantResult]:
    """Passing variants in preference order: int8, then fp16, then fp32; faster first within a tier."""
    passing = [result for result in results if result.passed]
    return sorted(passing, key=lambda r: (r.tier, r.latency_ms_p50 if r.latency_ms_p50 is not None else math.inf,
                                          r.size_bytes or 0, r.name))


# -- table ---------------------------------------------------------------------------------------------------

TABLE_COLUMNS = ("variant", "gate", "size", "ratio", "zstd", "p50 ms", "p95 ms", "lat x", "top-1", "acc", "RAM MB")


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per model file: the original first, then the variants in report order."""
    original = report["original"]
    rows = [["original", "reference", _size(original["size_bytes"]), "1.00", _size(original.get("wire_bytes")),
             _number(original.get("latency_ms_p50"), ".3f"), _number(original.get("latency_ms_p95"), ".3f"), "1.00",
             "100.0%", _percent(original.get("accuracy")),
             _number(original.get("ram_mb"), ".1f") + ("!" if original.get("exceeds_ram_budget") else "")]]
    for variant in report["variants"]:
        rows.append([
            variant["name"], variant["gate"], _size(variant.get("size_bytes")),
            _number(variant.get("size_ratio"), ".2f"), _size(variant.get("wire_bytes")),
            _number(variant.get("latency_ms_p50"), ".3f"), _number(variant.get("latency_ms_p95"), ".3f"),
            _number(variant.get("latency_ratio"), ".2f"), _percent(variant.get("top1_agreement")),
            _percent(variant.get("accuracy")),
            _number(variant.get("ram_mb"), ".1f") + ("!" if variant.get("exceeds_ram_budget") else ""),
        ])
    return rows


def _size(value: Any) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_table(report: dict[str, Any]) -> str:
    """The comparison table as aligned plain text, rejection reasons below it."""
    rows = [list(TABLE_COLUMNS), *table_rows(report)]
    widths = [max(len(row[index]) for row in rows) for index in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    for variant in report["variants"]:
        for reason in variant.get("reasons", []):
            lines.append(f"{variant['name']}: rejected: {reason}")
    if any(v.get("exceeds_ram_budget") for v in [report["original"], *report["variants"]]):
        lines.append(f"! exceeds the RAM budget of {report['settings']['ram_budget_mb']} MB")
    return "\n".join(lines)
