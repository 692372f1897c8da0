"""The compression run: open the source, load the data, measure the original,
build and measure every variant, gate them, build the reference profile, and
write the report.

A variant that fails to build or to run is rejected (kept in the report with
its reason); a bad source or bad data stops the run with one clear error
before anything is built. Files go to ``workdir`` only; callers publish them
(``compress_to_directory`` renames a finished run into place, the server
commits the passing files as artifacts).
"""

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent.binning import build_profile
from agent.protocol.metadata import Compatibility
from agent.protocol.profile import ReferenceProfile
from agent.storage import atomic_write_bytes, atomic_write_json, fsync_directory
from compression.context import BuildContext
from compression.data import DataSet, load_dataset
from compression.errors import CompressionCancelledError, CompressionError, DataError, short_message
from compression.evaluate import (
    Measurement,
    Target,
    accuracy,
    find_target,
    interleaved_latency,
    measure,
    output_fidelity,
    relative_error,
    run_all,
)
from compression.gate import gate_reasons
from compression.host import HostInfo, detect_host, u8s8_arch
from compression.report import PASSED, REPORT_SCHEMA, VariantResult, finite, release_order
from compression.settings import CompressionSettings
from compression.source import SourceModel, load_checked, open_source
from compression.variants import VariantSpec, select_variants

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, float], None]
PROFILE_FILE = "reference_profile.json"
REPORT_FILE = "report.json"
VARIANTS_DIR = "variants"


@dataclass
class CompressionResult:
    source: SourceModel
    results: list[VariantResult]
    profile: ReferenceProfile
    report: dict[str, Any]
    workdir: Path

    @property
    def release_variants(self) -> list[VariantResult]:
        """Passing variants in release preference order (the original goes after them)."""
        return release_order(self.results)

    @property
    def profile_path(self) -> Path:
        return self.workdir / PROFILE_FILE


def compress_model(model: Path, calibration: Path, workdir: Path, *, validation: Path | None = None,
                   settings: CompressionSettings | None = None, base: Compatibility | None = None,
                   progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                   host: HostInfo | None = None) -> CompressionResult:
    """Compress ``model`` into ``workdir`` (created if needed; should be empty)."""
    settings = settings or CompressionSettings()
    base = base or Compatibility()
    report_progress: ProgressCallback = progress or (lambda _stage, _fraction: None)
    started = time.monotonic()
    workdir = Path(workdir)
    (workdir / VARIANTS_DIR).mkdir(parents=True, exist_ok=True)
    cancel = cancel or threading.Event()

    report_progress("opening the model", 0.0)
    source = open_source(Path(model), workdir)
    calibration_data = load_dataset(calibration, source.inputs, "calibration data")
    validation_data = None if validation is None else load_dataset(validation, source.inputs, "validation data")
    specs = select_variants(source, settings.variants)
    evaluation = (validation_data or calibration_data).head(settings.max_evaluation_rows)
    ctx = BuildContext(source, calibration_data.head(settings.max_calibration_rows), settings, workdir,
                       host or detect_host(), cancel)
    steps = 2 + 2 * len(specs)

    report_progress("measuring the original", 1 / steps)
    original = measure(source.path, source.runtime, source.inputs, evaluation)
    target = find_target(original.outputs)
    original_accuracy = accuracy(target, original.outputs, evaluation.labels)
    if validation_data is not None and validation_data.labels is not None and original_accuracy is None \
            and target.classes:
        raise DataError("the validation labels are not integer class ids")
    profile = _profile(source, calibration_data, evaluation if validation_data is None else None, original, target)

    results = []
    for index, spec in enumerate(specs):
        ctx.check_cancelled()
        report_progress(f"building {spec.name}", (2 + 2 * index) / steps)
        result = _variant(ctx, spec, base, evaluation, original, target, original_accuracy,
                          partial(_report_stage, report_progress, (3 + 2 * index) / steps))
        results.append(result)
        logger.info("compression event=variant_done variant=%s gate=%s reasons=%s", spec.name, result.gate,
                    "; ".join(result.reasons) or "-")

    ctx.check_cancelled()
    report_progress("timing latency", (steps - 0.5) / steps)
    original_p50 = _time(ctx, source, evaluation, results)
    for result in results:
        if not result.passed and result.path is not None:
            result.path.unlink(missing_ok=True)
            result.path = None
    report = _report(source, ctx, evaluation, validation_data is not None, original, original_p50,
                     original_accuracy, results, profile, base, time.monotonic() - started)
    atomic_write_bytes(workdir / PROFILE_FILE, profile.to_bytes())
    atomic_write_json(workdir / REPORT_FILE, report)
    report_progress("done", 1.0)
    return CompressionResult(source, results, profile, report, workdir)


def _profile(source: SourceModel, calibration: DataSet, evaluated: DataSet | None, original: Measurement,
             target: Target) -> ReferenceProfile:
    """Decile edges and reference counts from the calibration data, predictions from the original."""
    if evaluated is not None and evaluated.rows == calibration.rows:
        outputs = original.outputs
    else:
        outputs = run_all(load_checked(source.path, source.runtime), source.inputs, calibration)
    first = source.inputs[0].name
    return build_profile(calibration.inputs[first], target.predictions(outputs), first, target.classes)


def _report_stage(report_progress: ProgressCallback, fraction: float, stage: str) -> None:
    report_progress(stage, fraction)


def _variant(ctx: BuildContext, spec: VariantSpec, base: Compatibility, evaluation: DataSet, original: Measurement,
             target: Target, original_accuracy: float | None, evaluating: Callable[[str], None]) -> VariantResult:
    result = VariantResult(spec.name, spec.runtime, spec.precision, spec.description, tier=spec.tier)
    arch, note = _arch(ctx.host, spec, base)
    result.compatibility = Compatibility(arch, base.min_ram_mb)
    if note:
        result.notes.append(note)
    path = ctx.workdir / VARIANTS_DIR / spec.file_name
    started = time.monotonic()
    try:
        spec.build(ctx, path)
        result.build_seconds = time.monotonic() - started
        ctx.check_cancelled()
        evaluating(f"evaluating {spec.name}")
        measured = measure(path, spec.runtime, ctx.source.inputs, evaluation)
        _fill(result, measured, ctx, original, target, evaluation, original_accuracy)
    except CompressionCancelledError:
        raise
    except CompressionError as exc:
        result.reasons.append(str(exc))
    except Exception as exc:  # a converter's own bug must reject this variant, not the whole run
        logger.exception("compression event=variant_crashed variant=%s", spec.name)
        result.reasons.append(f"{spec.name} failed: {type(exc).__name__}: {short_message(exc)}")
    if base.arch and not arch:
        result.reasons.append(f"none of the declared architectures {list(base.arch)} can use it")
    result.gate = PASSED if not result.reasons else "rejected"
    if result.size_bytes is not None:
        result.path = path  # measured: timed with the others, then removed if rejected
    else:
        path.unlink(missing_ok=True)
    return result


def _time(ctx: BuildContext, source: SourceModel, evaluation: DataSet,
          results: list[VariantResult]) -> tuple[float, float]:
    """Latency of the original and every measured variant, interleaved; returns the original's p50/p95."""
    models = {"": (source.path, source.runtime)}
    models.update({result.name: (result.path, result.runtime) for result in results if result.path is not None})
    latencies = interleaved_latency(models, evaluation, ctx.settings.latency_runs, ctx.settings.latency_warmup)
    for result in results:
        if result.name in latencies:
            result.latency_ms_p50, result.latency_ms_p95 = latencies[result.name]
    return latencies[""]


def _arch(host: HostInfo, spec: VariantSpec, base: Compatibility) -> tuple[tuple[str, ...], str]:
    if not spec.u8s8:
        return base.arch, ""
    allowed, note = u8s8_arch(host)
    if not allowed:
        return base.arch, note
    if not base.arch:
        return allowed, note
    return tuple(arch for arch in base.arch if arch in allowed), note


def _fill(result: VariantResult, measured: Measurement, ctx: BuildContext, original: Measurement, target: Target,
          evaluation: DataSet, original_accuracy: float | None) -> None:
    result.size_bytes, result.wire_bytes = measured.size_bytes, measured.wire_bytes
    result.ram_mb = measured.ram_mb
    result.exceeds_ram_budget = measured.ram_mb > ctx.settings.ram_budget_mb
    result.outputs = [output_fidelity(name, original.outputs[name], measured.outputs[name])
                      for name in original.outputs]
    if target.classes:
        reference = target.predictions(original.outputs)
        result.top1_agreement = float((target.predictions(measured.outputs) == reference).mean())
    else:
        result.relative_error = relative_error(target, original.outputs, measured.outputs)
    result.accuracy = accuracy(target, measured.outputs, evaluation.labels)
    if result.accuracy is not None and original_accuracy is not None:
        result.accuracy_drop = original_accuracy - result.accuracy
    result.reasons.extend(gate_reasons(ctx.settings.thresholds, top1_agreement=result.top1_agreement,
                                       accuracy_drop=result.accuracy_drop, relative_error=result.relative_error,
                                       outputs=result.outputs))


def _report(source: SourceModel, ctx: BuildContext, evaluation: DataSet, validated: bool, original: Measurement,
            original_latency: tuple[float, float], original_accuracy: float | None, results: list[VariantResult],
            profile: ReferenceProfile, base: Compatibility, seconds: float) -> dict[str, Any]:
    target = find_target(original.outputs)
    return {
        "schema": REPORT_SCHEMA,
        "model": {
            "file": source.path.name,
            "origin": source.origin.value,
            "runtime": source.runtime.value,
            "inputs": [spec.to_dict() for spec in source.inputs],
            "outputs": [spec.to_dict() for spec in source.outputs],
        },
        "host": ctx.host.to_dict(),
        "settings": ctx.settings.to_dict(),
        "evaluation": {
            "data": "validation" if validated else "calibration",
            "rows": evaluation.rows,
            "labelled": evaluation.labels is not None,
            "task": "classes" if target.classes else "values",
            "prediction_output": target.output,
            "calibration_rows": ctx.calibration.rows,
        },
        "original": {
            "size_bytes": original.size_bytes,
            "wire_bytes": original.wire_bytes,
            "latency_ms_p50": finite(original_latency[0], 4),
            "latency_ms_p95": finite(original_latency[1], 4),
            "ram_mb": original.ram_mb,
            "exceeds_ram_budget": original.ram_mb > ctx.settings.ram_budget_mb,
            "accuracy": finite(original_accuracy),
            "compatibility": base.to_dict(),
        },
        "variants": [result.to_dict(original.size_bytes, original.wire_bytes, original_latency[0])
                     for result in results],
        "release_order": [result.name for result in release_order(results)],
        "reference_profile_sha256": profile.sha256(),
        "duration_s": round(seconds, 2),
    }


def compress_to_directory(model: Path, calibration: Path, out_dir: Path, **options: Any) -> CompressionResult:
    """``compress_model`` into a temporary sibling of ``out_dir``, renamed into place only when complete."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CompressionError(f"{out_dir} exists and is not empty", hint="choose a new output directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        result = compress_model(model, calibration, staging, **options)
        for leftover in staging.iterdir():
            if leftover.name not in (VARIANTS_DIR, PROFILE_FILE, REPORT_FILE):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
        fsync_directory(out_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.workdir = out_dir
    for variant in result.results:
        if variant.path is not None:
            variant.path = out_dir / VARIANTS_DIR / variant.path.name
    return result
