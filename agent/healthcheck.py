"""Post-install health check: does the model load, run, and answer as its release says?

A sample input is built from the release's input schema (dynamic dimensions
set to 1; floats spread evenly over [0, 1), integers and booleans zero), run once to
warm up and then a few times to time it. The outputs must carry the release's
names, dtypes and fixed dimensions and be finite; the median latency must be
within the bound. Any deviation raises ``HealthCheckError`` with the reason.

Neither ``numpy.random`` nor ``np.median`` (which imports ``numpy.ma``) is used: the agent would
keep ~2.5 MB of modules resident for one sample and one median per deployment.
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
GOLDEN_FRACTION = 0.6180339887498949  # multiples of it, mod 1, spread evenly over [0, 1)


@dataclass(frozen=True)
class HealthReport:
    latency_ms: float


def sample_inputs(specs: tuple[TensorSpec, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic sample tensors for an input schema (dynamic dimensions -> 1)."""
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
            count = int(np.prod(shape, dtype=np.int64))
            steps = np.arange(seed + 1, seed + count + 1, dtype=np.float64)
            values = np.remainder(steps * GOLDEN_FRACTION, 1.0).reshape(shape).astype(dtype)
            values[values >= 1] = 0  # float32/float16 may round 0.99999... up to 1
            inputs[spec.name] = values
        else:
            inputs[spec.name] = np.zeros(shape, dtype=dtype)
    return inputs


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


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
    latency = median(timings)
    if latency > latency_bound_ms:
        raise HealthCheckError(f"sample inference took {latency:.1f} ms, bound is {latency_bound_ms:.0f} ms")
    log.info("event=health_check_passed latency_ms=%.2f", latency)
    return HealthReport(latency)
