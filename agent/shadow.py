"""The shadow runner: a candidate model answers the same requests as the served
model, in the background, and only its agreement and latency are kept.

``observe`` is an ``InferenceService`` observer: on the request's thread it
copies the inputs and the served answer into a bounded queue (``put_nowait``;
when the queue is full the sample is dropped and counted), so the serving path
never waits for the candidate. One low-priority worker thread runs the
candidate and accumulates the comparison (``agent.shadow_compare``) and both
latencies. ``take_report`` hands the window's figures to the telemetry
accumulator (the ``shadow`` section of a telemetry window) and starts a new
window.
"""

import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.errors import ShadowError
from agent.healthcheck import median  # np.median would import numpy.ma for good
from agent.inference import ServedModel
from agent.protocol.metadata import TensorSpec
from agent.shadow_compare import Agreement, compare_outputs

log = logging.getLogger(__name__)

QUEUE_SIZE = 64
MAX_LATENCY_SAMPLES = 2048  # per window; the p50 of a window is computed from at most these
WORKER_NICENESS = 10


@dataclass(frozen=True)
class _Sample:
    candidate_sha256: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    latency_ms: float


def check_same_inputs(candidate: tuple[TensorSpec, ...], served: tuple[TensorSpec, ...]) -> None:
    """The candidate must accept exactly the requests the served model accepts."""
    mine = {spec.name: (spec.dtype, spec.shape) for spec in served}
    theirs = {spec.name: (spec.dtype, spec.shape) for spec in candidate}
    if mine != theirs:
        raise ShadowError(f"the candidate's inputs {sorted(theirs.items())} differ from the served model's "
                          f"{sorted(mine.items())}")


class _Window:
    def __init__(self) -> None:
        self.agreement = Agreement()
        self.serving_ms: list[float] = []
        self.candidate_ms: list[float] = []
        self.dropped = 0
        self.errors = 0

    def add_latency(self, serving_ms: float, candidate_ms: float) -> None:
        if len(self.serving_ms) < MAX_LATENCY_SAMPLES:
            self.serving_ms.append(serving_ms)
            self.candidate_ms.append(candidate_ms)


class ShadowRunner:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue: queue.Queue[_Sample | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._candidate: ServedModel | None = None
        self._window = _Window()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # samples queued or being compared

    # -- candidate -------------------------------------------------------------

    def candidate(self) -> ServedModel | None:
        with self._lock:
            return self._candidate

    def set_candidate(self, candidate: ServedModel | None) -> None:
        """Shadow ``candidate`` from now on (None: stop shadowing); starts a fresh window."""
        with self._lock:
            self._candidate = candidate
            self._window = _Window()
        if candidate is not None:
            self._ensure_worker()
            log.info("event=shadow_started name=%s version=%d variant=%s", candidate.name, candidate.version,
                     candidate.variant)
        else:
            log.info("event=shadow_stopped")

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(5)

    # -- serving side ----------------------------------------------------------

    def observe(self, served: ServedModel, inputs: Mapping[str, np.ndarray],
                outputs: dict[str, np.ndarray] | None, latency_ms: float, error: Exception | None) -> None:
        """``InferenceService`` observer: queue a successful request for the candidate, never block."""
        candidate = self._candidate
        if candidate is None or outputs is None or candidate.sha256 == served.sha256:
            return
        sample = _Sample(candidate.sha256, {name: np.array(value, copy=True) for name, value in inputs.items()},
                         outputs, latency_ms)
        with self._lock:
            try:
                self._queue.put_nowait(sample)
                self._pending += 1
            except queue.Full:
                self._window.dropped += 1

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued sample is compared; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    # -- worker ----------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="shadow-runner", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:  # Linux: niceness is per thread, so the candidate yields to the serving path
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
        except (AttributeError, OSError):
            pass
        while (sample := self._queue.get()) is not None:
            try:
                self._run(sample)
            except Exception:
                log.exception("event=shadow_sample_crashed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _run(self, sample: _Sample) -> None:
        candidate = self._candidate
        if candidate is None or candidate.sha256 != sample.candidate_sha256:
            return  # the candidate changed while the sample waited
        started = time.perf_counter()
        try:
            answer = candidate.model.predict(sample.inputs)
            comparison = compare_outputs(sample.outputs, answer)
        except Exception as exc:  # InferenceError, ShadowError, a runtime's own exception
            with self._lock:
                self._window.errors += 1
            log.debug("event=shadow_inference_failed error=%r", str(exc))
            return
        candidate_ms = (time.perf_counter() - started) * 1000.0
        with self._lock:
            if self._candidate is candidate:
                self._window.agreement.add(comparison)
                self._window.add_latency(sample.latency_ms, candidate_ms)

    # -- reporting -------------------------------------------------------------

    def take_report(self) -> dict[str, Any] | None:
        """The ``shadow`` section of a telemetry window; starts a new window.

        None without a candidate or when nothing was compared in the window.
        """
        with self._lock:
            candidate, window = self._candidate, self._window
            self._window = _Window()
        if candidate is None:
            return None
        if window.dropped or window.errors:
            log.info("event=shadow_window name=%s version=%d compared=%d dropped=%d candidate_errors=%d",
                     candidate.name, candidate.version, window.agreement.compared, window.dropped, window.errors)
        agreement = window.agreement.agreement
        if agreement is None or not window.serving_ms:
            return None
        report: dict[str, Any] = {
            "candidate": {"name": candidate.name, "version": candidate.version},
            "compared": window.agreement.compared,
            "agreement": agreement,
            "serving_p50_ms": median(window.serving_ms),
            "candidate_p50_ms": median(window.candidate_ms),
        }
        if window.agreement.mean_abs_diff is not None:
            report["mean_abs_diff"] = window.agreement.mean_abs_diff
        return report

    def last_window_stats(self) -> tuple[int, int]:
        """(dropped, candidate errors) of the running window."""
        with self._lock:
            return self._window.dropped, self._window.errors
