"""Carries out one job step by step, feeding each outcome to the state machine.

Each step starts from the persisted state and is idempotent, so the same code
runs a fresh deployment and resumes one after a restart:

    notified     -> (install) START_DOWNLOAD      (rollback) START_ROLLBACK
    downloading  -> fetch with Range resume       -> DOWNLOADED
    verifying    -> length + sha256               -> ARTIFACT_VERIFIED | ARTIFACT_REJECTED
    installing   -> stage + promote, unless the target already is current -> INSTALLED
    health_check -> load + sample inference       -> HEALTH_PASSED (swap into the service)
                    failure: restore previous slot -> ROLLED_BACK

A shadow job takes the install path into the shadow slot: its health check
also requires the served model's input schema, and on success the candidate
starts answering next to the served model (``agent.shadow``); on failure the
candidate is discarded and the job fails (the served model never changed).
Dropping the shadow stops the candidate and removes its slot. Installing the
candidate for real (promotion) drops the shadow too.

A job can be cancelled (superseded or shutdown) until installing begins; from
there it runs to the end so the slots always settle on a checked model.
"""

import errno
import logging
from pathlib import Path

from agent.clock import DeviceClock
from agent.deployment import DeploymentTracker
from agent.download import Downloader, file_sha256
from agent.errors import (
    DeploymentCancelledError,
    DownloadError,
    HealthCheckError,
    ModelLoadError,
    RuntimeUnavailableError,
    SelfUpdateError,
    ShadowError,
    SlotError,
)
from agent.healthcheck import check_model
from agent.inference import InferenceService, ServedModel
from agent.job import Job
from agent.memtrim import release_free_memory
from agent.protocol.errors import ArtifactMismatchError, EdgeFleetError
from agent.protocol.metadata import TensorSpec
from agent.protocol.verify import verify_artifact
from agent.selfupdate.manager import SelfUpdater
from agent.shadow import ShadowRunner, check_same_inputs
from agent.slots import CURRENT, PREVIOUS, SHADOW, STAGING, SlotInfo, SlotStore, slot_info_for
from agent.statemachine import IN_FLIGHT_STATES, Event, State
from agent.telemetry.profiles import ProfileFetcher

log = logging.getLogger(__name__)

MODEL_FAILURES = (ModelLoadError, RuntimeUnavailableError, HealthCheckError)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is ENOSPC (the disk is full)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class DeploymentRunner:
    def __init__(self, tracker: DeploymentTracker, slots: SlotStore, downloader: Downloader,
                 service: InferenceService, latency_bound_ms: float, shadow: ShadowRunner | None = None,
                 clock: DeviceClock | None = None, agent_update: SelfUpdater | None = None) -> None:
        self.tracker = tracker
        self.slots = slots
        self.downloader = downloader
        self.service = service
        self.latency_bound_ms = latency_bound_ms
        self.shadow = shadow
        self.clock = clock or DeviceClock()
        self.agent_update = agent_update  # None: this agent cannot update itself (not installed A/B)
        self.profiles: ProfileFetcher | None = None  # fetches reference profiles for telemetry (best effort)

    def run(self, job: Job) -> None:
        """Run ``job`` to a final state (or pause it, on shutdown). Never raises."""
        try:
            if not job.resumed:
                self.tracker.begin(job.sequence, **job.begin_fields())
            self._check_cancel(job)
            if job.is_agent_release and (job.is_rollback or job.is_shadow or job.is_drop_shadow):
                raise SelfUpdateError("agent releases can only be installed; deploy the previous agent release "
                                      "to go back")
            if job.is_rollback:
                self._roll_back(job)
            elif job.is_drop_shadow:
                self._drop_shadow(job)
            else:
                self._install(job)
        except DeploymentCancelledError:
            if job.superseded_by is not None:
                self._finish(job, Event.FAILED, f"superseded by directive {job.superseded_by}")
            else:
                log.info("event=deployment_paused seq=%d state=%s", job.sequence, self.tracker.state)
        except ArtifactMismatchError as exc:
            if job.variant is not None:
                self.downloader.discard(job.variant.sha256)
            self._finish(job, Event.ARTIFACT_REJECTED, describe(exc))
        except EdgeFleetError as exc:
            self._release_space_if_full(job, exc)
            self._finish(job, Event.FAILED, describe(exc))
        except Exception as exc:  # a bug or an OS error must still end the deployment
            log.exception("event=deployment_crashed seq=%d", job.sequence)
            self._release_space_if_full(job, exc)
            self._finish(job, Event.FAILED, describe(exc))
        finally:
            # download buffers, the health check and the replaced model are freed by now: give the pages back
            release_free_memory()

    def _finish(self, job: Job, event: Event, reason: str) -> None:
        if self.tracker.record.sequence == job.sequence and self.tracker.state in IN_FLIGHT_STATES:
            try:
                self.tracker.advance(job.sequence, event, reason)
            except (EdgeFleetError, OSError) as exc:  # e.g. state.json cannot be written: the worker goes on
                log.error("event=deployment_finish_failed seq=%d error=%r", job.sequence, str(exc))

    def _release_space_if_full(self, job: Job, exc: BaseException) -> None:
        """A full disk failed the job: give back what it used (partial download, staging) before the
        failure is recorded, so state.json can be written and the served model keeps its room."""
        if not out_of_space(exc):
            return
        log.warning("event=disk_full seq=%d detail=%r", job.sequence, "discarding the download and staging slot")
        try:
            if job.variant is not None:
                self.downloader.discard(job.variant.sha256)
            self.slots.discard_staging()
        except OSError as error:
            log.error("event=disk_cleanup_failed seq=%d error=%r", job.sequence, str(error))

    @staticmethod
    def _check_cancel(job: Job) -> None:
        if job.cancel.is_set():
            raise DeploymentCancelledError(f"directive {job.sequence} was cancelled")

    # -- install -------------------------------------------------------------

    def _install(self, job: Job) -> None:
        variant = job.variant
        assert variant is not None
        sequence = job.sequence
        state = self.tracker.state
        if state is State.NOTIFIED:
            self.downloader.discard_all_except(variant.sha256)
            state = self.tracker.advance(sequence, Event.START_DOWNLOAD)
        if state is State.DOWNLOADING:
            expires_in = (job.directive.expires - self.clock.now()).total_seconds()
            self.downloader.fetch(variant, expires_in, job.cancel)
            if self.profiles is not None:
                self.profiles.prefetch(job.release, job.cancel)
            state = self.tracker.advance(sequence, Event.DOWNLOADED)
        if state is State.VERIFYING:
            self._check_cancel(job)
            self._verify_file(job, self.downloader.part_path(variant.sha256))
            state = self.tracker.advance(sequence, Event.ARTIFACT_VERIFIED)
        if state is State.INSTALLING:
            self._check_cancel(job)
            if job.is_agent_update:
                self._self_updater().install(job, self.downloader.part_path(variant.sha256))
                self.downloader.discard(variant.sha256)
            elif job.is_shadow:
                self._stage_shadow(job)
            else:
                self._switch_to(job)
            state = self.tracker.advance(sequence, Event.INSTALLED)
        if state is State.HEALTH_CHECK:
            if job.is_agent_update:
                outcome = self._self_updater().check(job)
                if outcome is not None:  # None: a restart into the new agent is under way
                    self.tracker.advance(sequence, *outcome)
            elif job.is_shadow:
                self._health_check_shadow(job)
            else:
                self._health_check_install(job)

    def _self_updater(self) -> SelfUpdater:
        if self.agent_update is None:
            raise SelfUpdateError("this agent does not run from A/B slots, so it cannot update itself "
                                  "(install it with firmware_images/install.sh)")
        return self.agent_update

    def _verify_file(self, job: Job, path: Path) -> None:
        assert job.variant is not None
        try:
            length, digest = file_sha256(path)
        except FileNotFoundError:
            raise DownloadError("the downloaded artifact is gone; deploy again to fetch it") from None
        verify_artifact(job.variant, length, digest)

    def _switch_to(self, job: Job) -> None:
        assert job.variant is not None
        current = self.slots.read(CURRENT)
        if current is not None and current.sha256 == job.variant.sha256:
            log.info("event=install_skipped seq=%d reason=already_current", job.sequence)
            self.downloader.discard(job.variant.sha256)
            return
        info = slot_info_for(job.release, job.variant, job.sequence)
        self._verify_file(job, self.downloader.part_path(job.variant.sha256))
        self.slots.stage(info, self.downloader.part_path(job.variant.sha256), extra=self._profile_files(job))
        self._verify_file(job, self.slots.artifact_path(STAGING, info))
        self.slots.promote()
        self.downloader.discard(job.variant.sha256)
        log.info("event=installed seq=%d release=%s version=%d variant=%s", job.sequence, info.release_name,
                 info.release_version, info.variant)

    def _profile_files(self, job: Job) -> dict[str, bytes]:
        """The release's reference profile, to keep in the slot next to the model (fetched while downloading)."""
        if self.profiles is None:
            return {}
        files = self.profiles.files_for(job.release)
        self.profiles.discard(job.release)
        return files

    def _health_check_install(self, job: Job) -> None:
        assert job.variant is not None
        current = self.slots.read(CURRENT)
        if current is None or current.sha256 != job.variant.sha256:
            self.tracker.advance(job.sequence, Event.ROLLED_BACK,
                                 "interrupted during the health check; the previous model is current")
            return
        try:
            served = self._load_and_check(current, job.release.inputs, job.release.outputs)
        except MODEL_FAILURES as exc:
            restored = self.slots.roll_back()
            after = (f"restored {restored.release_name} v{restored.release_version}" if restored
                     else "no previous model to restore")
            log.warning("event=health_check_failed seq=%d error=%r %s", job.sequence, str(exc), after)
            self.tracker.advance(job.sequence, Event.ROLLED_BACK, f"{describe(exc)}; {after}")
            return
        self.service.swap(served)
        shadow = self.slots.read(SHADOW)
        if shadow is not None and shadow.sha256 == current.sha256:  # the candidate was promoted
            self._stop_shadow()
        self.tracker.advance(job.sequence, Event.HEALTH_PASSED)

    def _load_and_check(self, info: SlotInfo, inputs: tuple[TensorSpec, ...],
                        outputs: tuple[TensorSpec, ...], slot: str = CURRENT) -> ServedModel:
        served = ServedModel.load(info, self.slots.artifact_path(slot, info))
        check_model(served.model, inputs, outputs, self.latency_bound_ms)
        return served

    # -- shadow --------------------------------------------------------------

    def _stage_shadow(self, job: Job) -> None:
        assert job.variant is not None
        if self.shadow is None:
            raise ShadowError("this agent does not run shadow models")
        existing = self.slots.read(SHADOW)
        if existing is None or existing.sha256 != job.variant.sha256:
            info = slot_info_for(job.release, job.variant, job.sequence)
            self._verify_file(job, self.downloader.part_path(job.variant.sha256))
            self.slots.stage(info, self.downloader.part_path(job.variant.sha256), SHADOW,
                             extra=self._profile_files(job))
            self._verify_file(job, self.slots.artifact_path(SHADOW, info))
        self.downloader.discard(job.variant.sha256)

    def _health_check_shadow(self, job: Job) -> None:
        assert job.variant is not None and self.shadow is not None
        info = self.slots.read(SHADOW)
        if info is None or info.sha256 != job.variant.sha256:
            raise ShadowError("the shadow slot no longer holds the candidate")
        current = self.slots.read(CURRENT)
        try:
            if current is None:
                raise ShadowError("no model is installed, so there is nothing to shadow")
            check_same_inputs(job.release.inputs, current.inputs)
            candidate = self._load_and_check(info, job.release.inputs, job.release.outputs, SHADOW)
        except (*MODEL_FAILURES, ShadowError):
            self._stop_shadow()
            raise
        self.shadow.set_candidate(candidate)
        log.info("event=shadow_installed seq=%d release=%s version=%d", job.sequence, info.release_name,
                 info.release_version)
        self.tracker.advance(job.sequence, Event.HEALTH_PASSED)

    def _drop_shadow(self, job: Job) -> None:
        self._stop_shadow()
        self.tracker.advance(job.sequence, Event.SHADOW_DROPPED, "the shadow model is removed")

    def _stop_shadow(self) -> None:
        if self.shadow is not None:
            self.shadow.set_candidate(None)
        self.slots.discard_shadow()

    def load_shadow_slot(self) -> None:
        """After a restart: run the candidate in the shadow slot again (dropped if it no longer loads)."""
        info = self.slots.read(SHADOW)
        if info is None or self.shadow is None:
            return
        try:
            self.shadow.set_candidate(ServedModel.load(info, self.slots.artifact_path(SHADOW, info)))
        except (ModelLoadError, RuntimeUnavailableError) as exc:
            log.error("event=shadow_load_failed release=%s version=%d error=%r", info.release_name,
                      info.release_version, str(exc))
            self.slots.discard_shadow()

    # -- rollback ------------------------------------------------------------

    def _roll_back(self, job: Job) -> None:
        sequence = job.sequence
        state = self.tracker.state
        if state is State.NOTIFIED:
            previous = self.slots.read(PREVIOUS)
            if previous is None:
                raise SlotError("there is no previous model to roll back to")
            state = self.tracker.advance(sequence, Event.START_ROLLBACK, target_sha256=previous.sha256,
                                         variant=previous.variant)
        target = self.tracker.record.target_sha256
        if state is State.INSTALLING:
            current = self.slots.read(CURRENT)
            if current is None or current.sha256 != target:
                previous = self.slots.read(PREVIOUS)
                if previous is None or previous.sha256 != target:
                    raise SlotError("the previous slot changed before the rollback; nothing restored")
                self.slots.roll_back()
            state = self.tracker.advance(sequence, Event.INSTALLED)
        if state is State.HEALTH_CHECK:
            current = self.slots.read(CURRENT)
            if current is None or current.sha256 != target:
                raise SlotError("the restored model is not in the current slot")
            try:
                served = self._load_and_check(current, current.inputs, current.outputs)
            except MODEL_FAILURES as exc:
                raise HealthCheckError(f"the restored model failed its health check: {describe(exc)}") from None
            self.service.swap(served)
            self.tracker.advance(sequence, Event.ROLLED_BACK,
                                 f"restored {current.release_name} v{current.release_version}")
