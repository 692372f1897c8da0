"""A loopback HTTP proxy that cuts the first artifact download mid-body.

A ``FaultProxy`` (``tests.faults.toolkit``) with one rule: the first artifact response is
truncated after ``cut_after_bytes`` body bytes. Request heads are recorded, so a test can
assert that the agent resumed with a ``Range`` header instead of starting again from zero.
"""

from tests.faults.toolkit.http_faults import ARTIFACT_PREFIX, HttpAction, HttpFaultKind, HttpFaultPlan, HttpFaultRule
from tests.faults.toolkit.proxy import FaultProxy


class CuttingProxy(FaultProxy):
    def __init__(self, upstream_port: int, cut_after_bytes: int) -> None:
        self._cut = HttpFaultRule(HttpAction(HttpFaultKind.TRUNCATE, body_bytes=cut_after_bytes),
                                  nth=frozenset({1}))
        super().__init__(upstream_port, http_plan=HttpFaultPlan([self._cut]), name="cutting-proxy")

    @property
    def cuts(self) -> int:
        return self._cut.fired

    def artifact_requests(self) -> list[str]:
        return [head for head in self.request_heads if ARTIFACT_PREFIX in head.split("\r\n")[0]]
