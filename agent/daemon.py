"""``edgefleet-agent run``: wires the agent's parts together and runs them until stopped.

Start order: the inference endpoint (so liveness answers at once), the MQTT
link (directives queue up until the updater runs), slot recovery and the
resumption of an install/health check in flight, serving the current slot,
the updater threads, the heartbeat. Stop order is the reverse; the offline
presence is published before the MQTT disconnect.

The simulator builds the same daemon without the KServe endpoint
(``serve_http=False``) and with a ``SharedNetworkLoop`` for its MQTT link.
A shadow candidate (``agent.shadow``) observes every request the service runs.

Under systemd (``Type=notify``) the daemon reports ``READY=1`` once started and
pings the watchdog from its main loop (``agent.sdnotify``). Installed in A/B
slots it can update itself (``agent.selfupdate``): ``request_restart`` stops it
with ``RESTART_EXIT_CODE`` so the service starts the new slot.
"""

import logging
import threading
import time
from pathlib import Path

from agent import identity
from agent.cert_renewal import CertificateRenewer
from agent.clock import DeviceClock
from agent.config import AgentConfig
from agent.deployment import DeploymentTracker
from agent.download import Downloader, DownloadSettings
from agent.enroll import Enrollment, load_enrollment, load_root
from agent.errors import AgentError, ModelLoadError, RuntimeUnavailableError
from agent.facts import device_facts
from agent.inference import InferenceService, ServedModel
from agent.kserve import KServeServer
from agent.memtrim import release_free_memory
from agent.mqtt_link import MqttLink
from agent.mqtt_loop import SharedNetworkLoop
from agent.presence import Heartbeat, PresenceReporter, offline_presence
from agent.root_refresh import RootRefresher
from agent.runner import DeploymentRunner
from agent.sdnotify import Notifier
from agent.selfupdate.manager import RESTART_EXIT_CODE, SelfUpdater, TrialSettings
from agent.shadow import ShadowRunner
from agent.slots import CURRENT, SlotStore
from agent.state_store import DeploymentRecord, StateStore
from agent.statemachine import FINAL_STATES
from agent.storage import atomic_write_bytes
from agent.telemetry.profiles import ProfileFetcher, SlotProfiles
from agent.telemetry.service import TelemetryService, TelemetrySettings
from agent.updater import Updater

log = logging.getLogger(__name__)

INFERENCE_PORT_FILE = "inference_port"


def artifact_base_url(config: AgentConfig, enrollment: Enrollment) -> str:
    return config.artifact_base_url or enrollment.artifact_base_url or enrollment.server_url


class AgentDaemon:
    def __init__(self, config: AgentConfig, network: SharedNetworkLoop | None = None,
                 serve_http: bool = True) -> None:
        self.config = config
        data_dir = Path(config.data_dir)
        self.enrollment = load_enrollment(data_dir)
        device_id = self.enrollment.device_id
        if config.device_id and config.device_id != device_id:
            log.warning("event=device_id_ignored configured=%s enrolled=%s", config.device_id, device_id)
        self.facts = device_facts(device_id, config)
        clock = DeviceClock(config.clock_offset_s)
        root = load_root(data_dir, clock.now(), allow_expired=True)
        self.service = InferenceService()
        self.slots = SlotStore(data_dir / "slots")
        mqtt_url = config.mqtt_url or self.enrollment.mqtt_url
        self.tls = identity.mqtt_tls_context(data_dir) if mqtt_url.startswith("mqtts://") else None
        https = identity.https_context(data_dir)
        self.link = MqttLink(device_id, self.enrollment.credential, mqtt_url,
                             on_directive=self._on_directive, offline_presence=lambda: offline_presence(device_id),
                             network=network, tls_context=self.tls)
        self.renewer = CertificateRenewer(data_dir, device_id, self.enrollment.server_url, self.enrollment.credential,
                                          clock.now, self._reload_certificate, https)
        self.tracker = DeploymentTracker(device_id, StateStore(data_dir), self.link)
        self.presence = PresenceReporter(device_id, self.tracker, self.service)
        downloader = Downloader(
            artifact_base_url(config, self.enrollment), self.enrollment.credential, data_dir / "downloads",
            DownloadSettings(config.download_timeout_s, config.download_retry_base_s, config.download_retry_max_s,
                             config.download_max_attempts), https,
        )
        self.shadow = ShadowRunner()
        self.service.add_observer(self.shadow.observe)
        self.exit_code = 0
        self._stop_event: threading.Event | None = None
        self.self_update = SelfUpdater.for_this_process(
            TrialSettings(config.self_update_report_timeout_s, config.self_update_max_starts),
            self.request_restart, self._reported_within)
        self.runner = DeploymentRunner(self.tracker, self.slots, downloader, self.service,
                                       config.health_check_latency_ms, self.shadow, clock, self.self_update)
        self.updater = Updater(self.facts, root, self.tracker, self.slots, self.runner, clock)
        self.updater.refresh_root = RootRefresher(data_dir, self.enrollment.server_url, clock.now, https).refresh
        self.kserve: KServeServer | None = None
        if serve_http:
            try:
                self.kserve = KServeServer(self.service, config.inference_host, config.inference_port,
                                           config.max_request_bytes)
            except OSError as exc:
                raise AgentError(f"cannot listen on {config.inference_host}:{config.inference_port}: {exc}") from None
        self.runner.profiles = ProfileFetcher(artifact_base_url(config, self.enrollment), self.enrollment.credential,
                                              data_dir / "downloads", https)
        self.telemetry = TelemetryService(device_id, data_dir, self.link, self.service, SlotProfiles(self.slots),
                                          TelemetrySettings(config.telemetry_window_s, config.telemetry_max_inferences,
                                                            config.telemetry_queue_max_bytes))
        self.telemetry.accumulator.set_shadow_source(self.shadow.take_report)
        self.link.add_connect_listener(self.telemetry.on_connected)
        self.link.add_publish_listener(self.telemetry.on_puback)
        self.heartbeat = Heartbeat(config.heartbeat_interval_s, self._report)
        self.link.add_connect_listener(self._report)
        self.tracker.add_listener(self._on_transition)

    def start(self) -> None:
        if self.kserve is not None:
            self.kserve.start()
            atomic_write_bytes(Path(self.config.data_dir) / INFERENCE_PORT_FILE, f"{self.kserve.port}\n".encode())
        self.link.start()
        self.updater.recover()
        self._serve_current_slot()
        self.runner.load_shadow_slot()
        self.telemetry.start()
        self.updater.start()
        self.heartbeat.start()
        self.renewer.start()
        log.info("event=agent_started device=%s state=%s inference_url=%s", self.facts.device_id,
                 self.tracker.state, self.kserve.url if self.kserve is not None else "-")

    def stop(self) -> None:
        log.info("event=agent_stopping device=%s", self.facts.device_id)
        self.renewer.stop()
        self.heartbeat.stop()
        self.updater.stop()
        self.shadow.stop()
        self.telemetry.stop()
        self.link.stop()
        if self.kserve is not None:
            self.kserve.stop()
        log.info("event=agent_stopped device=%s", self.facts.device_id)

    def run_until(self, stop: threading.Event) -> None:
        self._stop_event = stop
        notifier = Notifier()
        self.start()
        notifier.ready(f"device {self.facts.device_id}")
        try:
            while not stop.wait(notifier.watchdog_interval_s or 3600.0):
                notifier.watchdog()
        finally:
            notifier.stopping()
            self.stop()

    def request_restart(self) -> None:
        """Stop, and exit with ``RESTART_EXIT_CODE``: the service starts again, from the new slot."""
        self.exit_code = RESTART_EXIT_CODE
        if self._stop_event is not None:
            self._stop_event.set()

    def _reported_within(self, timeout_s: float) -> bool:
        """Connected, and the broker acknowledged our presence, within ``timeout_s`` (a new agent's health)."""
        deadline = time.monotonic() + timeout_s
        if not self.link.connected.wait(timeout_s):
            return False
        info = self.link.publish_presence(self.presence.online())
        try:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def _serve_current_slot(self) -> None:
        current = self.slots.read(CURRENT)
        served = self.service.current()
        if current is None or (served is not None and served.sha256 == current.sha256):
            return
        try:
            self.service.swap(ServedModel.load(current, self.slots.artifact_path(CURRENT, current)))
        except (ModelLoadError, RuntimeUnavailableError) as exc:
            log.error("event=serve_failed release=%s version=%d error=%r", current.release_name,
                      current.release_version, str(exc))
        release_free_memory()  # what loading the model allocated and freed again

    def _reload_certificate(self) -> None:
        """A renewed certificate: the next MQTT (re)connection presents it."""
        if self.tls is not None:
            self.tls.load_cert_chain(str(Path(self.config.data_dir) / identity.IDENTITY_FILE))

    def _on_directive(self, payload: bytes) -> None:
        self.updater.submit(payload)

    def _publish_presence(self) -> None:
        if self.link.connected.is_set():
            self.link.publish_presence(self.presence.online())

    def _report(self) -> None:
        """At (re)connect and every heartbeat: presence, and the deployment state once more (repairs a lost status)."""
        self._publish_presence()
        if self.link.connected.is_set():
            self.tracker.republish()

    def _on_transition(self, record: DeploymentRecord) -> None:
        if record.state in FINAL_STATES:
            self._publish_presence()
