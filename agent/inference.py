"""The in-process inference API, with hot swap.

``InferenceService`` holds a reference to the served model. A request takes
that reference once (under a lock held only for the pointer read) and runs on
it to the end, so ``swap`` never drops a request in flight: the old model
keeps serving the requests that already hold it and is freed after the last
one. The updater swaps only after the new model passed its health check.

Applications that embed the agent call ``predict({"input": array})``. Every
request (in-process or KServe) runs through ``run``, which times it and hands
the result to the observers (telemetry, the shadow runner); an observer must
only record or enqueue, never block.
"""

import functools
import logging
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.errors import InvalidInferenceRequestError, ModelNotReadyError
from agent.protocol.metadata import TensorSpec
from agent.runtimes import LoadedModel, load_model
from agent.slots import SlotInfo

log = logging.getLogger(__name__)

# observer(served, inputs, outputs or None on error, latency in ms, the error or None)
InferenceObserver = Callable[["ServedModel", Mapping[str, np.ndarray], "dict[str, np.ndarray] | None", float,
                              "Exception | None"], None]


@dataclass(frozen=True)
class ServedModel:
    name: str  # the release name: the model name in KServe paths
    version: int
    variant: str
    sha256: str
    runtime: str
    model: LoadedModel
    schema: "InputSchema" = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", InputSchema(self.model.inputs))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.model.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.model.outputs

    @classmethod
    def from_slot(cls, info: SlotInfo, model: LoadedModel) -> "ServedModel":
        return cls(info.release_name, info.release_version, info.variant, info.sha256, info.runtime, model)

    @classmethod
    def load(cls, info: SlotInfo, artifact: Path) -> "ServedModel":
        return cls.from_slot(info, load_model(artifact, info.runtime))


def validate_inputs(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray]) -> None:
    """Raise ``InvalidInferenceRequestError`` unless ``inputs`` match the schema (names, dtype, shape).

    On the path of every request: the common case (names match) costs a few comparisons."""
    if len(inputs) != len(specs) or any(spec.name not in inputs for spec in specs):
        expected = {spec.name for spec in specs}
        missing = sorted(expected - set(inputs))
        unknown = sorted(set(inputs) - expected)
        raise InvalidInferenceRequestError(
            f"model expects inputs {sorted(expected)}; missing {missing}, unknown {unknown}")
    for spec in specs:
        value = inputs[spec.name]
        if value.dtype != _dtype(spec.dtype) and value.dtype.name != spec.dtype:  # fast path first
            raise InvalidInferenceRequestError(f"input {spec.name} must be {spec.dtype}, got {value.dtype.name}")
        shape = value.shape
        if len(shape) != len(spec.shape) or any(
            want is not None and want != got for want, got in zip(spec.shape, shape, strict=True)
        ):
            declared = [-1 if dim is None else dim for dim in spec.shape]
            raise InvalidInferenceRequestError(f"input {spec.name} must have shape {declared}, got {list(shape)}")


class InputSchema:
    """``validate_inputs`` compiled once per model: on a conforming request a handful of comparisons
    (no sets, generators or dtype lookups); anything else goes to ``validate_inputs`` for the message."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = tuple(specs)
        checks = []
        for spec in self.specs:
            fixed = [(axis, size) for axis, size in enumerate(spec.shape) if size is not None]
            # the declared sizes as ``itemgetter`` returns them: one value for one axis, else a tuple
            getter = operator.itemgetter(*(axis for axis, _ in fixed)) if fixed else None
            sizes = fixed[0][1] if len(fixed) == 1 else tuple(size for _, size in fixed)
            checks.append((spec.name, _dtype(spec.dtype), len(spec.shape), getter, sizes))
        self._checks = tuple(checks)

    def check(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise ``InvalidInferenceRequestError`` unless ``inputs`` match (as ``validate_inputs``)."""
        if len(inputs) == len(self._checks):
            for name, dtype, ndim, getter, sizes in self._checks:
                value = inputs.get(name)
                if value is None or (value.dtype is not dtype and value.dtype != dtype) or value.ndim != ndim or (
                        getter is not None and getter(value.shape) != sizes):
                    break
            else:
                return
        validate_inputs(self.specs, inputs)


@functools.lru_cache(maxsize=64)
def _dtype(name: str) -> np.dtype | None:
    try:
        return np.dtype(name)
    except TypeError:  # a type numpy does not know (e.g. "str" from ONNX strings): never equal
        return None


class InferenceService:
    """Serves the current model; thread safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._served: ServedModel | None = None
        self._observers: list[InferenceObserver] = []

    def add_observer(self, observer: InferenceObserver) -> None:
        """Call ``observer`` after every request ``run`` served (on the request's thread)."""
        self._observers.append(observer)

    def current(self) -> ServedModel | None:
        with self._lock:
            return self._served

    @property
    def ready(self) -> bool:
        return self.current() is not None

    def swap(self, served: ServedModel | None) -> ServedModel | None:
        """Serve ``served`` from now on; return the model it replaces."""
        with self._lock:
            old, self._served = self._served, served
        if served is not None:
            log.info("event=model_swapped name=%s version=%d variant=%s", served.name, served.version, served.variant)
        return old

    def resolve(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model, checked against a requested name and version."""
        served = self.current()
        if served is None:
            raise ModelNotReadyError("no model is installed yet")
        if name is not None and name != served.name:
            raise ModelNotReadyError(f"unknown model {name!r}; this device serves {served.name!r}")
        if version is not None and version != str(served.version):
            raise ModelNotReadyError(f"model {name!r} has no version {version!r}; serving {served.version}")
        return served

    def metadata(self, name: str | None = None) -> dict[str, object]:
        served = self.resolve(name)
        return {
            "name": served.name,
            "version": served.version,
            "variant": served.variant,
            "runtime": served.runtime,
            "inputs": [spec.to_dict() for spec in served.inputs],
            "outputs": [spec.to_dict() for spec in served.outputs],
        }

    def predict(self, inputs: Mapping[str, np.ndarray], name: str | None = None) -> dict[str, np.ndarray]:
        """Run the served model on ``inputs`` (validated against its input schema)."""
        served = self._served  # one reference read (atomic); ``swap`` replaces it under the lock
        if served is None or (name is not None and name != served.name):
            served = self.resolve(name)  # raises with the reason
        try:
            served.schema.check(inputs)
        except InvalidInferenceRequestError as exc:
            self._notify(served, inputs, None, 0.0, exc)
            raise
        # ``run``, inlined: each Python call on this path costs more than its code (caches cold after the model)
        started = time.perf_counter()
        try:
            outputs = served.model.predict(inputs)
        except Exception as exc:
            self._notify(served, inputs, None, (time.perf_counter() - started) * 1000.0, exc)
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        for observer in self._observers:
            try:
                observer(served, inputs, outputs, latency_ms, None)
            except Exception:  # an observer must never fail a request
                log.exception("event=inference_observer_failed")
        return outputs

    def validate(self, served: ServedModel, inputs: Mapping[str, np.ndarray]) -> None:
        """``validate_inputs``; a request that violates the schema is reported to the observers too."""
        try:
            served.schema.check(inputs)
        except InvalidInferenceRequestError as exc:
            self._notify(served, inputs, None, 0.0, exc)
            raise

    def run(self, served: ServedModel, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``served`` on validated ``inputs``, timed and reported to the observers."""
        clock = time.perf_counter
        started = clock()
        try:
            outputs = served.model.predict(inputs)
        except Exception as exc:
            self._notify(served, inputs, None, (clock() - started) * 1000.0, exc)
            raise
        latency_ms = (clock() - started) * 1000.0
        if self._observers:
            self._notify(served, inputs, outputs, latency_ms, None)
        return outputs

    def _notify(self, served: ServedModel, inputs: Mapping[str, np.ndarray], outputs: dict[str, np.ndarray] | None,
                latency_ms: float, error: Exception | None) -> None:
        for observer in self._observers:
            try:
                observer(served, inputs, outputs, latency_ms, error)
            except Exception:  # an observer must never fail a request
                log.exception("event=inference_observer_failed")
