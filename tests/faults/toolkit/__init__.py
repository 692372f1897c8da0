"""Fault-injection toolkit for the fault suite (``tests/faults``) and the integration tests.

- ``proxy``: a controllable TCP proxy (latency, bandwidth, loss stalls, resets, partition) that
  can also apply an ``HttpFaultPlan`` (errors, truncated bodies, wrong bytes) to HTTP requests;
- ``http_faults``: the pure per-request decision rules of that plan;
- ``netns``: a one-time probe of what the machine allows (network namespaces, veth, tc netem);
- ``disk``: a small file system (tmpfs, else a loop-mounted file) to fill up under an agent;
- ``observe``: what a device serves (KServe endpoint + ``edgefleet-agent status``) and killing
  an agent at a chosen deployment state;
- ``summary``: the per-scenario figures written to ``tests/artifacts/fault_summary.json``.

Standard library only (plus the project): the proxy also serves the integration tests.
"""

from agent.protocol.errors import EdgeFleetError


class FaultToolkitError(EdgeFleetError):
    """A fault could not be set up or observed as asked."""
