"""The background worker that runs compression jobs, one at a time (compression
is CPU-bound and the server shares its CPU with the API).

Each job compresses into a temporary directory beside the artifact store;
only when every variant is built and judged are the passing files moved into
the store (content-addressed) and recorded in one transaction. A ticker
refreshes the heartbeat of every job this worker holds, so a job whose server
died is recognised as failed instead of running forever. Stopping the server
cancels the running job at its next step.
"""

import hashlib
import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from agent.protocol.metadata import Compatibility
from compression.errors import CompressionCancelledError, CompressionError
from compression.pipeline import CompressionResult, compress_model
from compression.settings import CompressionSettings
from fleet_server.models.registry import ModelVersion
from fleet_server.runtime import ServerRuntime
from fleet_server.services import compression_jobs as jobs
from fleet_server.services.artifact_store import ArtifactStore

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 20.0
STOP_TIMEOUT_S = 30.0
SLOT_FILE = {"onnxruntime": "model.onnx", "tflite": "model.tflite"}


class CompressionWorker:
    def __init__(self, engine: Engine, artifacts: ArtifactStore, datasets: ArtifactStore) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self.datasets = datasets
        self.owner = f"{socket.gethostname()[:40]}-{os.getpid()}-{os.urandom(4).hex()}"
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="compression-worker", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name="compression-heartbeat", daemon=True)

    def start(self) -> "CompressionWorker":
        self.datasets.prepare()
        self._thread.start()
        self._ticker.start()
        logger.info("server event=compression_worker_started owner=%s", self.owner)
        return self

    def enqueue(self, job_id: int) -> None:
        with self._lock:
            self._held.add(job_id)
        self._queue.put(job_id)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._cancel.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)
        self._ticker.join(HEARTBEAT_INTERVAL_S)
        jobs.fail_unfinished(self.engine, self.owner, "the server stopped before the job finished; submit it again")
        logger.info("server event=compression_worker_stopped owner=%s", self.owner)

    def _tick(self) -> None:
        while not self._stopped.wait(HEARTBEAT_INTERVAL_S):
            with self._lock:
                held = sorted(self._held)
            try:
                jobs.heartbeat(self.engine, self.owner, held)
            except Exception:  # a database hiccup must not kill the ticker
                logger.exception("server event=compression_heartbeat_failed")

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._cancel.is_set():
                return
            try:
                self._run(job_id)
            except Exception:  # never let one job take the worker down
                logger.exception("server event=compression_job_crashed job=%d", job_id)
                jobs.record_failure(self.engine, job_id, "internal error while compressing (see the server log)")
            finally:
                with self._lock:
                    self._held.discard(job_id)

    def _run(self, job_id: int) -> None:
        job = jobs.mark_running(self.engine, job_id, self.owner)
        if job is None:
            return
        with Session(self.engine) as session:
            row = session.get(ModelVersion, job.model_version_id)
            assert row is not None
        source = self.artifacts.find(row.sha256)
        calibration = self.datasets.find(job.calibration_sha256)
        validation = None if job.validation_sha256 is None else self.datasets.find(job.validation_sha256)
        if source is None or calibration is None or (job.validation_sha256 and validation is None):
            jobs.record_failure(self.engine, job_id, "the model file or a data set is missing from the store")
            return
        logger.info("server event=compression_started job=%d model_version=%d", job_id, row.id)
        workdir = Path(tempfile.mkdtemp(prefix="compress-", dir=self.artifacts.staging_dir))
        try:
            result = compress_model(
                source, calibration, workdir, validation=validation,
                settings=CompressionSettings.from_dict(job.settings),
                base=Compatibility(tuple(row.arch), row.min_ram_mb),
                progress=lambda stage, fraction: jobs.record_progress(self.engine, job_id, stage, fraction),
                cancel=self._cancel,
            )
            stored = self._store(result)
            profile_sha256 = self._store_file(result.profile_path)
            jobs.record_success(self.engine, job_id, stored, profile_sha256, result.report)
            logger.info("server event=compression_succeeded job=%d passed=%s rejected=%s", job_id,
                        ",".join(v.name for v in stored) or "-",
                        ",".join(r.name for r in result.results if not r.passed) or "-")
        except CompressionCancelledError:
            jobs.record_failure(self.engine, job_id, "cancelled: the server stopped; submit the job again")
        except CompressionError as exc:
            hint = getattr(exc, "hint", "")
            jobs.record_failure(self.engine, job_id, f"{exc}" + (f" (hint: {hint})" if hint else ""))
            logger.info("server event=compression_failed job=%d error=%s", job_id, exc)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _store(self, result: CompressionResult) -> list[jobs.StoredVariant]:
        stored = []
        for variant in result.release_variants:
            assert variant.path is not None
            size = variant.path.stat().st_size
            stored.append(jobs.StoredVariant(
                variant.name, variant.runtime.value, variant.precision, SLOT_FILE[variant.runtime.value],
                self._store_file(variant.path), size, variant.compatibility.arch, variant.compatibility.min_ram_mb))
        return stored

    def _store_file(self, path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        sha256 = digest.hexdigest()
        self.artifacts.commit(path, sha256)
        return sha256


def start_compression_worker(runtime: ServerRuntime) -> CompressionWorker:
    """The server's worker: variants go to the artifact store, data sets to ``<data dir>/datasets``."""
    datasets = ArtifactStore(runtime.settings.resolved_data_dir / "datasets")
    return CompressionWorker(runtime.engine, runtime.artifacts, datasets).start()
