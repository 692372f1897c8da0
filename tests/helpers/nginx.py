"""A real nginx on a free loopback port, for tests and benchmarks: a load balancer in front
of fleet server replicas and/or a static server for the content-addressed artifact store.

The ``location`` blocks are not written here: they are read from docs/deployment.md (the
blocks between the ``nginx-replica-locations`` and ``nginx-artifact-locations`` markers),
with only the store path substituted, so the tests run exactly what the deployment guide
tells operators to use.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from fleet_server.processes import LOOPBACK, ManagedProcess, free_port, wait_for_port

DEPLOYMENT_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
DOCUMENTED_STORE = "/var/lib/edgefleet/artifacts"
NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
AUTH_LINE = re.compile(r"^\s*auth_request\s+\S+;.*$", re.MULTILINE)


class NginxNotFoundError(RuntimeError):
    """No nginx executable on this machine."""


def find_nginx() -> str:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in NGINX_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    raise NginxNotFoundError("nginx not found: install it with 'apt-get install nginx' or run scripts/test.sh "
                             "as root")


def documented_block(marker: str) -> str:
    """The nginx code block of the deployment guide between ``<!-- marker:begin`` and ``<!-- marker:end -->``."""
    text = DEPLOYMENT_GUIDE.read_text()
    match = re.search(rf"<!-- {marker}:begin[^>]*-->\s*```nginx\n(.*?)```\s*<!-- {marker}:end -->", text,
                      re.DOTALL)
    if match is None:
        raise AssertionError(f"no {marker} block in {DEPLOYMENT_GUIDE}")
    return match.group(1)


def documented_artifact_locations(artifact_dir: Path, with_auth: bool = True) -> str:
    """The guide's ``location`` blocks for artifacts, pointed at ``artifact_dir``.

    ``with_auth=False`` drops the ``auth_request`` line, as the guide says to for a public origin.
    """
    block = documented_block("nginx-artifact-locations")
    if DOCUMENTED_STORE not in block:
        raise AssertionError(f"the documented artifact locations do not mention {DOCUMENTED_STORE}")
    block = block.replace(DOCUMENTED_STORE, str(Path(artifact_dir).resolve()))
    return block if with_auth else AUTH_LINE.sub("", block)


class NginxServer:
    """nginx with the documented locations.

    ``upstreams`` (``http://host:port`` of each replica) adds the load-balancing location and the
    upstream the artifact authorisation asks; ``artifact_dir`` adds the artifact locations.
    """

    def __init__(self, directory: Path, artifact_dir: Path | None = None, upstreams: Sequence[str] = (),
                 with_auth: bool = True, workers: int = 1, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        self.upstreams = [url.removeprefix("http://").rstrip("/") for url in upstreams]
        self.with_auth = with_auth
        self.workers = workers
        self.port = port or free_port()
        self.config_path = self.directory / "nginx.conf"
        self.access_log = self.directory / "access.log"
        self._process = ManagedProcess(f"nginx:{self.port}", [find_nginx(), "-c", self.config_path,
                                                              "-p", self.directory, "-e", self.directory / "error.log"],
                                       self.directory / "nginx.out")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def process(self) -> ManagedProcess:
        return self._process

    def _locations(self) -> str:
        blocks = []
        if self.artifact_dir is not None:
            if self.with_auth and not self.upstreams:
                raise ValueError("the artifact authorisation needs the fleet servers (upstreams)")
            blocks.append(documented_artifact_locations(self.artifact_dir, self.with_auth))
        if self.upstreams:
            blocks.append(documented_block("nginx-replica-locations"))
        return "\n".join(blocks)

    def _write_config(self) -> None:
        temp = self.directory / "temp"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp / name).mkdir(parents=True, exist_ok=True)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the test's private tmp dirs
        servers = "".join(f"        server {address} max_fails=1 fail_timeout=10s;\n" for address in self.upstreams)
        upstream = f"    upstream edgefleet_servers {{\n{servers}        keepalive 16;\n    }}\n" if servers else ""
        self.config_path.write_text(f"""{user}daemon off;
worker_processes {self.workers};
pid {self.directory / 'nginx.pid'};
error_log {self.directory / 'error.log'} warn;
events {{ worker_connections 4096; }}
http {{
    access_log {self.access_log} combined;
    client_body_temp_path {temp / 'client_body'};
    proxy_temp_path {temp / 'proxy'};
    fastcgi_temp_path {temp / 'fastcgi'};
    uwsgi_temp_path {temp / 'uwsgi'};
    scgi_temp_path {temp / 'scgi'};
    keepalive_requests 100000;
{upstream}    server {{
        listen {LOOPBACK}:{self.port};
{self._locations()}
    }}
}}
""")

    def start(self, timeout: float = 15.0) -> NginxServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._process.start()
        wait_for_port(self.port, LOOPBACK, timeout, self._process)
        return self

    def stop(self) -> None:
        self._process.stop()

    def access_lines(self) -> list[str]:
        try:
            return self.access_log.read_text().splitlines()
        except FileNotFoundError:
            return []
