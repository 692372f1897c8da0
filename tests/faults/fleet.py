"""A small fleet for one fault scenario: its own broker, the real server, agents as processes.

Every scenario gets a broker of its own (``mosquitto_factory``: restarting it hurts nobody
else) and a server on it. Agents are real ``edgefleet-agent`` processes (``LocalAgent``);
each may sit behind fault proxies for its artifact downloads and its MQTT connection, run on
a data directory of its own file system, or carry extra ``EDGEFLEET_AGENT_*`` settings.
Releases are 1 MB copies of the digits model (padding in the ONNX doc string) so downloads
take several chunks and a truncation or a full disk lands mid-body.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalAgent, LocalServer
from fleet_server.processes import wait_until
from tests.faults.toolkit.netns import NamespaceLink
from tests.faults.toolkit.proxy import FaultProxy
from tests.faults.toolkit.summary import ScenarioRecord
from tests.helpers.mosquitto import MosquittoBroker
from tests.integration.conftest import MODELS, start_server

SAMPLE = np.load(MODELS / "digits_sample.npy")[:2].tolist()
RELEASE_BYTES = 1024 * 1024
FAST_RETRIES = {  # agents retry quickly in tests: a fault must not cost minutes of backoff
    "EDGEFLEET_AGENT_DOWNLOAD_RETRY_BASE_S": "0.2",
    "EDGEFLEET_AGENT_DOWNLOAD_RETRY_MAX_S": "1.0",
    "EDGEFLEET_AGENT_DOWNLOAD_TIMEOUT_S": "3",
    "EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "5",
}
SERVER_ENV = {  # the rollout controller acts quickly in tests
    "EDGEFLEET_ROLLOUT_TICK_S": "0.3",
    "EDGEFLEET_ROLLOUT_HEALTH_INTERVAL_S": "1",
    "EDGEFLEET_ROLLOUT_LEASE_TTL_S": "5",
}
ROLLOUT_FINAL = ("succeeded", "aborted", "rolled_back")
ONE_PHASE = [{"share": 1.0, "bake_s": 0}]
_numbers = itertools.count(1)
PARALLEL = 6  # agents enrolled, started or stopped at once


def in_parallel(action: Callable[[FleetAgent], object], agents: Iterable[FleetAgent]) -> None:
    """Run ``action`` on every agent from a small thread pool; re-raise the first failure."""
    with ThreadPoolExecutor(PARALLEL) as pool:
        for future in [pool.submit(action, agent) for agent in agents]:
            future.result()


def padded_model(directory: Path, marker: str, size: int = RELEASE_BYTES) -> Path:
    """The digits MLP padded to about ``size`` bytes, with bytes unique to this call."""
    model = onnx.load(MODELS / "digits_mlp.onnx")
    model.doc_string = f"edgefleet fault model {marker} " + secrets.token_hex(max(0, size // 2))
    path = directory / f"{marker}.onnx"
    onnx.save(model, path)
    return path


@dataclass
class FleetAgent(LocalAgent):
    artifact_proxy: FaultProxy | None = None  # HTTP to the server (artifacts; everything, in a namespace)
    mqtt_proxy: FaultProxy | None = None
    link: NamespaceLink | None = None  # the device's own network namespace, if it has one

    def _argv(self, *args: str) -> list[str]:
        argv = super()._argv(*args)
        return self.link.wrap(argv) if self.link is not None and args[:1] == ("run",) else argv

    @property
    def inference_url(self) -> str:
        host = self.link.device_ip if self.link is not None else "127.0.0.1"
        return f"http://{host}:{self.inference_port}"

    @property
    def proxies(self) -> list[FaultProxy]:
        return [proxy for proxy in (self.artifact_proxy, self.mqtt_proxy) if proxy is not None]

    def close_proxies(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        if self.link is not None:
            self.link.close()


@dataclass
class FaultFleet:
    root: Path
    broker: MosquittoBroker
    server_env: dict[str, str] = field(default_factory=dict)
    server: LocalServer | None = None
    agents: list[FleetAgent] = field(default_factory=list)
    _client: FleetClient | None = None
    _links: Iterator[int] = field(default_factory=itertools.count)

    # -- server ------------------------------------------------------------------

    def start(self) -> FaultFleet:
        self.server = start_server(self.root / "server", self.broker.url, **{**SERVER_ENV, **self.server_env})
        return self

    @property
    def client(self) -> FleetClient:
        assert self.server is not None
        if self._client is None:
            self._client = FleetClient(self.server.url, self.server.admin_token)
        return self._client

    def kill_server(self) -> None:
        assert self.server is not None and self.server.process is not None
        self.server.process.kill()

    def restart_server(self) -> None:
        assert self.server is not None
        self.server.start()

    # -- agents ------------------------------------------------------------------

    def add_agents(self, count: int, **options: Any) -> list[FleetAgent]:
        """``count`` agents with the same options, enrolled and started in parallel (seeded 0..count-1)."""
        start = options.pop("start", True)
        agents = [self.add_agent(seed=index, start=False, enroll=False, **options) for index in range(count)]
        in_parallel(self._enroll_and_start if start else self._enroll, agents)
        return agents

    def _enroll(self, agent: FleetAgent) -> None:
        assert self.server is not None
        agent.enroll(self.server.url, self.server.bootstrap_token)

    def _enroll_and_start(self, agent: FleetAgent) -> None:
        self._enroll(agent)
        self.restart_agent(agent)

    def add_agent(self, *, env: dict[str, str] | None = None, data_dir: Path | None = None,
                  artifact_proxy: bool = False, mqtt_proxy: bool = False, namespace: bool = False,
                  start: bool = True, seed: int = 0, enroll: bool = True) -> FleetAgent:
        """One agent; ``namespace``: in a network namespace of its own, reaching the server and the
        broker only through relays on its veth link (which are its ``artifact_proxy``/``mqtt_proxy``)."""
        assert self.server is not None
        device_id = f"fault-{next(_numbers)}"
        agent_env = dict(FAST_RETRIES)
        extras: dict[str, Any] = {}
        listen = "127.0.0.1"
        if namespace:
            extras["link"] = link = NamespaceLink(next(self._links)).create()
            listen = link.host_ip
            artifact_proxy = mqtt_proxy = True
            agent_env["EDGEFLEET_AGENT_INFERENCE_HOST"] = link.device_ip
        if artifact_proxy:
            extras["artifact_proxy"] = http = FaultProxy(self.server.port, listen_host=listen, http=True, seed=seed,
                                                         name=f"{device_id}-http")
            agent_env["EDGEFLEET_AGENT_ARTIFACT_BASE_URL"] = http.url
            if namespace:
                agent_env["EDGEFLEET_AGENT_SERVER_URL"] = http.url
        if mqtt_proxy:
            extras["mqtt_proxy"] = mqtt = FaultProxy(self.broker.port, listen_host=listen, seed=seed,
                                                     name=f"{device_id}-mqtt")
            agent_env["EDGEFLEET_AGENT_MQTT_URL"] = mqtt.mqtt_url
        agent_env.update(env or {})
        agent = FleetAgent(device_id, data_dir or self.root / device_id, extra_env=agent_env, **extras)
        self.agents.append(agent)
        if enroll:
            self._enroll(agent)
            if start:
                self.restart_agent(agent)
        return agent

    def restart_agent(self, agent: FleetAgent) -> None:
        agent.start()
        agent.wait_serving()

    # -- releases and deployments --------------------------------------------------

    def publish(self, name: str, marker: str, size: int = RELEASE_BYTES) -> int:
        model = padded_model(self.root, f"{name}-{marker}", size)
        version = self.client.upload_model(model, name)["version"]
        self.client.create_release(name, version)
        return version

    def deploy(self, name: str, version: int, agents: list[FleetAgent]) -> int:
        return self.client.deploy(name, version, device_ids=[agent.device_id for agent in agents])["id"]

    def wait(self, deployment_id: int, timeout: float = 120.0) -> dict[str, Any]:
        return self.client.wait_for_deployment(deployment_id, timeout=timeout)

    def rollout(self, name: str, version: int, agents: list[FleetAgent], phases: list[dict[str, Any]] | None = None,
                **body: Any) -> int:
        """Start a staged rollout of ``name`` v``version`` to ``agents`` (one phase, no bake, by default).

        Health gates on latency are off (two shared cores make sub-millisecond latencies jumpy); a
        scenario that expects devices to fail passes its ``criteria`` and phase thresholds.
        """
        criteria = {"max_latency_ratio": 1000, **body.pop("criteria", {})}
        request = {"release": {"name": name, "version": version},
                   "target": {"device_ids": [agent.device_id for agent in agents]},
                   "phases": phases or ONE_PHASE, "criteria": criteria, **body}
        return self.client.create_rollout(request)["id"]

    def roll_out(self, name: str, version: int, agents: list[FleetAgent], expected_failures: int = 0,
                 timeout: float = 120.0, **body: Any) -> dict[str, Any]:
        """A one-phase rollout to ``agents``, run to its end: a scenario that expects ``expected_failures``
        devices to fail (the faults it injects) sets the thresholds so exactly those may fail without an abort."""
        total = len(agents)
        phase = {"share": 1.0, "bake_s": 0, "success_threshold": (total - expected_failures) / total}
        criteria = {"max_failure_rate": min(1.0, (expected_failures + 0.5) / total)}
        return self.wait_rollout(self.rollout(name, version, agents, [phase], criteria=criteria, **body), timeout)

    def wait_rollout(self, rollout_id: int, timeout: float = 120.0) -> dict[str, Any]:
        """The rollout once it reached a final state."""
        return wait_until(lambda: (r := self.client.rollout(rollout_id))["state"] in ROLLOUT_FINAL and r, timeout,
                          f"rollout {rollout_id} to finish", interval=0.3)

    def install_everywhere(self, name: str, version: int, timeout: float = 120.0) -> int:
        """The starting point of a scenario: every agent serves ``version`` (no faults yet). Returns the deployment."""
        deployment = self.deploy(name, version, self.agents)
        final = self.wait(deployment, timeout)
        states = {target["device_id"]: target["state"] for target in final["targets"]}
        assert set(states.values()) == {"succeeded"}, states
        return deployment

    # -- teardown ------------------------------------------------------------------

    def stop(self) -> None:
        in_parallel(FleetAgent.stop, self.agents)
        for agent in self.agents:
            agent.close_proxies()
        if self._client is not None:
            self._client.close()
        if self.server is not None:
            self.server.stop()


def record_of(scenario: str, fleet: FaultFleet, serving: dict[str, int], final_state: str | dict[str, int],
              **extra: Any) -> ScenarioRecord:
    return ScenarioRecord(scenario=scenario, devices=len(fleet.agents), serving=serving, final_state=final_state,
                          **extra)
