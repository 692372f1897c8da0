"""Post-install health check: does the model load, run, and answer as its release says?

A sample input is built from the release's input schema (dynamic dimensions
set to 1; floats uniform in [0, 1), integers and booleans zero), run once to
warm up and then a few times to time it. The outputs must carry the release's
names, dtypes and fixed dimensions and be finite; the median latency must be
within the bound. Any deviation raises ``HealthCheckError`` with the reason.
"""

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from agent.errors import HealthCheckError, InferenceError
from agent.protocol.metadata import TensorSpec
from agent.runtimes import LoadedModel

log = logging.getLogger(__name__)

TIMED_RUNS = 3


@dataclass(frozen=True)
class HealthReport:
    latency_ms: float


def sample_inputs(specs: tuple[TensorSpec, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic sample tensors for an input schema (dynamic dimensions -> 1)."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            raise HealthCheckError(f"input {spec.name} has dtype {spec.dtype!r}, which has no sample data") from None
        if dtype.kind not in "biuf":
            raise HealthCheckError(f"input {spec.name} has dtype {spec.dtype!r}, which has no sample data")
        shape = tuple(1 if dim is None else dim for dim in spec.shape)
        if dtype.kind == "f":
            inputs[spec.name] = rng.random(shape).astype(dtype)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=dtype)
    return inputs


def check_outputs(outputs: Mapping[str, np.ndarray], expected: tuple[TensorSpec, ...]) -> None:
    for spec in expected:
        if spec.name not in outputs:
            raise HealthCheckError(f"output {spec.name} is missing (model produced {sorted(outputs)})")
        value = np.asarray(outputs[spec.name])
        if value.dtype.name != spec.dtype:
            raise HealthCheckError(f"output {spec.name} is {value.dtype.name}, release says {spec.dtype}")
        if value.ndim != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape, value.shape, strict=True)
        ):
            declared = ["?" if dim is None else dim for dim in spec.shape]
            raise HealthCheckError(f"output {spec.name} has shape {list(value.shape)}, release says {declared}")
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise HealthCheckError(f"output {spec.name} contains NaN or infinity")


def check_model(model: LoadedModel, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                latency_bound_ms: float) -> HealthReport:
    """Run the health check on a loaded model against the release schema."""
    sample = sample_inputs(inputs)
    try:
        check_outputs(model.predict(sample), outputs)
        timings = []
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            model.predict(sample)
            timings.append((time.perf_counter() - started) * 1000.0)
    except InferenceError as exc:
        raise HealthCheckError(f"sample inference failed: {exc}") from None
    latency = float(np.median(timings))
    if latency > latency_bound_ms:
        raise HealthCheckError(f"sample inference took {latency:.1f} ms, bound is {latency_bound_ms:.0f} ms")
    log.info("event=health_check_passed latency_ms=%.2f", latency)
    return HealthReport(latency)
