"""Network loss between devices and the fleet: latency, loss, flapping connections and partitions.

Where the machine allows it, every device runs in a network namespace of its own, joined to
the host by a veth pair; it reaches the server and the broker only through relays on that link.
A partition sets the link down (packets vanish both ways, no resets), a rate limit is ``tbf``
on it, latency and loss are ``tc netem`` on it. What the kernel cannot do here is done by the
relays, which are the toolkit's fault proxies; without namespaces the devices run on loopback
behind the same proxies. The summary records which mechanism made each fault.

A staged rollout takes a new release to five devices, each on its own bad network:

- ``latency``: 150 ms one way on every packet (or chunk);
- ``loss``: lost packets (or stalled chunks and the odd reset connection);
- ``partition_before_directive``: cut off before the deployment, healed 6 s later;
- ``partition_mid_download``: cut off once a third of the artifact arrived, healed 6 s later;
- ``flapping``: every connection reset three times during the deployment.

All five install the release and the rollout succeeds; meanwhile a partitioned device stays
"notified" in the rollout (never failed for being unreachable), and afterwards each serves the
new model.
"""

from __future__ import annotations

import time

import pytest

from fleet_server.processes import wait_until
from tests.faults.fleet import RELEASE_BYTES, FaultFleet, FleetAgent
from tests.faults.invariants import check_fleet, states_of
from tests.faults.toolkit.netns import probe
from tests.faults.toolkit.observe import read_state
from tests.faults.toolkit.summary import ScenarioRecord

pytestmark = pytest.mark.slow

NAME = "digits-network-faults"
CASES = ("latency", "loss", "partition_before_directive", "partition_mid_download", "flapping")
PARTITION_S = 6.0
SLOW_LINK_BPS = 128 * 1024


def part_bytes(agent: FleetAgent) -> int:
    return sum(part.stat().st_size for part in (agent.data_dir / "downloads").glob("*.part"))


class NetworkFaults:
    """Applies each fault with the best mechanism available and remembers which one it used."""

    def __init__(self) -> None:
        self.capabilities = probe()
        self.used: dict[str, str] = {}
        self.proxy_reason = f"tcp-proxy ({self.capabilities.detail})"

    def latency(self, agent: FleetAgent, seconds: float) -> None:
        if agent.link is not None and self.capabilities.netem:
            agent.link.netem("delay", f"{int(seconds * 1000)}ms")
            self.used["latency"] = "netns veth + tc netem delay"
            return
        for proxy in agent.proxies:
            proxy.shape(latency_s=seconds)
        self.used["latency"] = self.proxy_reason

    def loss(self, agent: FleetAgent) -> None:
        if agent.link is not None and self.capabilities.netem:
            agent.link.netem("loss", "10%")
            self.used["loss"] = "netns veth + tc netem loss 10%"
            return
        for proxy in agent.proxies:
            proxy.shape(loss_rate=0.2, loss_stall_s=0.3, reset_rate=0.01)
        self.used["loss"] = self.proxy_reason + ": 20% of chunks stalled 0.3 s, 1% reset the connection"

    def slow(self, agent: FleetAgent, bytes_per_s: int) -> None:
        if agent.link is not None:
            agent.link.limit_rate(bytes_per_s)
            self.used["rate_limit"] = "netns veth + tc tbf"
            return
        assert agent.artifact_proxy is not None
        agent.artifact_proxy.shape(bandwidth_bps=bytes_per_s)
        self.used["rate_limit"] = "tcp-proxy"

    def partition(self, agent: FleetAgent) -> None:
        if agent.link is not None:
            agent.link.partition()
            self.used["partition"] = "netns veth link down"
            return
        for proxy in agent.proxies:
            proxy.partition()
        self.used["partition"] = "tcp-proxy (traffic held both ways)"

    def heal(self, agent: FleetAgent) -> None:
        if agent.link is not None:
            agent.link.heal()
            agent.link.clear_shaping()
        for proxy in agent.proxies:
            proxy.clear()

    def flap(self, agent: FleetAgent) -> int:
        self.used["flapping"] = "connection resets by the relay proxies"
        return sum(proxy.reset_connections() for proxy in agent.proxies)


def test_latency_loss_flapping_and_partitions(fleet, fault_summary) -> None:
    started = time.monotonic()
    faults = NetworkFaults()
    fleet: FaultFleet = fleet()
    agents = dict(zip(CASES, fleet.add_agents(len(CASES), artifact_proxy=True, mqtt_proxy=True,
                                              namespace=faults.capabilities.namespaces), strict=True))
    old = fleet.publish(NAME, "old")
    fleet.install_everywhere(NAME, old)
    new = fleet.publish(NAME, "new")

    faults.latency(agents["latency"], 0.15)
    faults.loss(agents["loss"])
    faults.partition(agents["partition_before_directive"])
    faults.slow(agents["partition_mid_download"], SLOW_LINK_BPS)
    rollout = fleet.rollout(NAME, new, fleet.agents)

    cut_off = agents["partition_mid_download"]
    wait_until(lambda: part_bytes(cut_off) >= RELEASE_BYTES // 3, 60, "a third of the download")
    faults.partition(cut_off)
    resets = 0
    for _ in range(3):
        resets += faults.flap(agents["flapping"])
        time.sleep(PARTITION_S / 3)
    devices = {d["device_id"]: d for d in fleet.client.rollout(rollout)["device_details"]}
    for kind in ("partition_before_directive", "partition_mid_download"):  # unreachable is pending, not failed
        assert devices[agents[kind].device_id]["status"] == "notified", devices
    assert read_state(cut_off.data_dir) == "downloading"
    stuck_at = part_bytes(cut_off)
    faults.heal(agents["partition_before_directive"])
    faults.heal(cut_off)

    final = fleet.wait_rollout(rollout, timeout=120)
    assert final["state"] == "succeeded" and states_of(final) == {"succeeded": len(CASES)}, final["device_details"]
    counts = check_fleet(fleet, NAME, old, new, final, cli=True)
    assert counts["new"] == len(CASES)
    resumed = [head for head in cut_off.artifact_proxy.request_heads if "range: bytes=" in head.lower()]
    assert resumed, "the download after the partition resumed with Range"

    fault_summary(ScenarioRecord(
        scenario="network_faults", devices=len(fleet.agents), serving=counts,
        final_state={"rollout": final["state"], **states_of(final)},
        network_mechanism="; ".join(f"{fault}: {how}" for fault, how in sorted(faults.used.items())),
        faults={"cases": list(CASES), "partition_s": PARTITION_S, "connections_reset_while_flapping": resets,
                "download_bytes_when_partitioned": stuck_at,
                "loss_stalls": agents["loss"].artifact_proxy.stats.stalls + agents["loss"].mqtt_proxy.stats.stalls},
        duration_s=round(time.monotonic() - started, 1),
        notes="partitioned devices stayed unfinished (not failed) while cut off, then installed; the cut download "
              "resumed with Range",
    ))
