"""Measure a model file against the original: size, wire size, latency, memory,
fidelity (top-1 agreement, absolute error, SQNR per output) and accuracy.

Every model runs through ``agent.runtimes.load_model`` with one thread, the
same code and runtime a device uses.
"""

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.errors import AgentError
from agent.protocol.metadata import Runtime, TensorSpec
from agent.runtimes import LoadedModel
from compression.context import batch_size
from compression.data import DataSet
from compression.errors import UnsupportedModelError, VariantBuildError, short_message
from compression.source import load_checked

logger = logging.getLogger(__name__)

EVAL_BATCH = 256
ZSTD_LEVEL = 10
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Target:
    """Which output carries the prediction, and whether it is a class."""

    output: str
    classes: bool
    argmax: bool  # class = argmax over the last axis (else the output holds class ids)

    def predictions(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        values = outputs[self.output]
        if self.argmax:
            return np.argmax(values, axis=-1).reshape(len(values))
        return values.reshape(len(values), -1)[:, 0] if self.classes else values


def find_target(outputs: dict[str, np.ndarray]) -> Target:
    """Class ids (an integer [N] output, else argmax of a float [N, C] output) or plain values."""
    for name, values in outputs.items():
        if values.dtype.kind in "iu" and (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            return Target(name, classes=True, argmax=False)
    for name, values in outputs.items():
        if values.dtype.kind == "f" and values.ndim == 2 and values.shape[1] >= 2:
            return Target(name, classes=True, argmax=True)
    name = next(iter(outputs))
    return Target(name, classes=False, argmax=False)


@dataclass(frozen=True)
class Measurement:
    size_bytes: int
    wire_bytes: int | None
    ram_mb: float
    outputs: dict[str, np.ndarray]


def measure(path: Path, runtime: Runtime, specs: tuple[TensorSpec, ...], data: DataSet) -> Measurement:
    """Load ``path`` and run every row of ``data`` through it (latency is timed separately, interleaved)."""
    before = _rss_bytes()
    model = load_checked(path, runtime)
    try:
        model.predict(data.row(0))
    except AgentError as exc:
        raise UnsupportedModelError(f"{path.name} loads but does not run: {short_message(exc)}") from None
    ram_mb = max(_rss_bytes() - before, path.stat().st_size) / (1 << 20)
    outputs = run_all(model, specs, data)
    return Measurement(path.stat().st_size, wire_size(path), round(ram_mb, 3), outputs)


def interleaved_latency(models: dict[str, tuple[Path, Runtime]], data: DataSet, runs: int,
                        warmup: int) -> dict[str, tuple[float, float]]:
    """Single-row latency p50/p95 (ms) per model, the models taking turns row by row.

    Timing each model in its own block lets machine noise (other processes, frequency changes) land on
    one model and skew the ratios; round robin spreads it over all of them.
    """
    loaded = {key: load_checked(path, runtime) for key, (path, runtime) in models.items()}
    timings: dict[str, list[float]] = {key: [] for key in loaded}
    keys = list(loaded)
    for run in range(warmup + runs):
        row = data.row(run % data.rows)
        shift = run % len(keys)  # rotate who goes first: no model always runs on a cache another one evicted
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter_ns()
            loaded[key].predict(row)
            if run >= warmup:
                timings[key].append((time.perf_counter_ns() - start) / 1e6)
    return {key: (float(np.percentile(values, 50)), float(np.percentile(values, 95)))
            for key, values in timings.items()}


def run_all(model: LoadedModel, specs: tuple[TensorSpec, ...], data: DataSet) -> dict[str, np.ndarray]:
    """Every row through ``model``, batched (fixed batch dimensions are padded, then trimmed)."""
    size, fixed = batch_size(specs, EVAL_BATCH)
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, data.rows, size):
        batch = {name: array[start:start + size] for name, array in data.inputs.items()}
        rows = len(next(iter(batch.values())))
        if fixed and rows < size:
            batch = {name: np.concatenate([array, np.repeat(array[-1:], size - rows, axis=0)])
                     for name, array in batch.items()}
        try:
            result = model.predict(batch)
        except AgentError as exc:
            raise VariantBuildError(f"inference failed: {short_message(exc)}") from None
        for name, values in result.items():
            chunks.setdefault(name, []).append(np.asarray(values)[:rows])
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def wire_size(path: Path) -> int | None:
    """zstd-compressed bytes (what a transfer-compressed download costs); None without zstandard."""
    try:
        import zstandard
    except ImportError:
        return None
    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(path.read_bytes()))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class OutputFidelity:
    name: str
    max_abs_error: float | None  # float outputs
    mean_abs_error: float | None
    sqnr_db: float | None  # None when identical (infinite) or not a float output
    agreement: float | None  # integer outputs: share of equal elements

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "sqnr_db": self.sqnr_db, "agreement": self.agreement}


def output_fidelity(name: str, reference: np.ndarray, candidate: np.ndarray) -> OutputFidelity:
    if reference.shape != candidate.shape:
        raise VariantBuildError(f"output {name!r} has shape {list(candidate.shape)}, the original "
                                f"{list(reference.shape)}")
    if reference.dtype.kind != "f":
        return OutputFidelity(name, None, None, None, float(np.mean(reference == candidate)))
    ref = reference.astype(np.float64)
    error = np.abs(candidate.astype(np.float64) - ref)
    if not np.all(np.isfinite(error)):
        return OutputFidelity(name, math.inf, math.inf, -math.inf, None)
    noise = float(np.sum(error ** 2))
    signal = float(np.sum(ref ** 2))
    sqnr = None if noise == 0.0 else (10.0 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return OutputFidelity(name, float(error.max(initial=0.0)), float(error.mean()) if error.size else 0.0,
                          None if sqnr is None else round(sqnr, 2), None)


def accuracy(target: Target, outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> float | None:
    if labels is None or not target.classes or labels.dtype.kind not in "iu":
        return None
    return float(np.mean(target.predictions(outputs).astype(np.int64) == labels))


def relative_error(target: Target, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> float:
    """Mean |error| / mean |original| on the prediction output (value models)."""
    ref = reference[target.output].astype(np.float64)
    err = np.abs(candidate[target.output].astype(np.float64) - ref)
    scale = float(np.mean(np.abs(ref)))
    mean_error = float(np.mean(err))
    if not math.isfinite(mean_error):
        return math.inf
    return mean_error / scale if scale > 0 else (0.0 if mean_error == 0 else math.inf)
