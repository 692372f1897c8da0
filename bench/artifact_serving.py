"""Artifact serving: concurrent Range downloads from the fleet server next to nginx
serving the same content-addressed files with sendfile, in the same run.

Random files are written into a fresh artifact store at their content addresses; the
server (``edgefleet server``, one process, SQLite, embedded broker) serves them at
/api/v1/artifacts/<sha256> to an enrolled device's credential, and nginx serves the
same directory with the location blocks of docs/deployment.md (without auth_request,
as for a public origin). The load generator (bench/http_load.py, its own process)
keeps N keep-alive connections busy with ``Range: bytes=<random offset>-`` requests
(what a resuming agent sends; ``--range-kb`` asks for fixed-size ranges instead);
server and nginx take turns, ``--rounds`` times each, and the mean is reported.

    .venv/bin/python bench/artifact_serving.py
    .venv/bin/python bench/artifact_serving.py --connections 32 --seconds 15 --nginx-workers 2

Prints one JSON object: {"server_mb_per_s", "nginx_mb_per_s", "ratio", ...}.
"""

import argparse
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path; the repository root is what we need.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

MIB = 1 << 20


def write_artifacts(store: Path, count: int, size: int) -> list[str]:
    digests = []
    for _ in range(count):
        data = os.urandom(size)
        sha256 = hashlib.sha256(data).hexdigest()
        path = store / sha256[:2] / sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests.append(sha256)
    return digests


def enroll_device(server_url: str, bootstrap_token: str) -> str:
    import httpx

    body = {"device_id": "bench-reader", "bootstrap_token": bootstrap_token, "arch": "x86_64", "ram_mb": 1024,
            "runtimes": ["onnxruntime"], "agent_version": "0.1.0", "tags": []}
    response = httpx.post(f"{server_url}/api/v1/devices/enroll", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["credential"]


def load(base_url: str, digests: list[str], size: int, args: argparse.Namespace, headers: list[str]) -> dict:
    argv = [sys.executable, str(ROOT / "bench" / "http_load.py"), "--size", str(size),
            "--range-bytes", str(args.range_kb * 1024), "--connections", str(args.connections),
            "--seconds", str(args.seconds)]
    for sha256 in digests:
        argv += ["--url", f"{base_url}/api/v1/artifacts/{sha256}"]
    for header in headers:
        argv += ["--header", header]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=args.seconds * 4 + 60)
    if result.returncode != 0:
        raise SystemExit(f"load generator failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from fleet_server.localfleet import LocalServer
    from tests.helpers.nginx import NginxServer

    size = args.file_mb * MIB
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-artifacts-") as directory:
        root = Path(directory)
        store = root / "artifacts"
        digests = write_artifacts(store, args.files, size)
        server = LocalServer(root / "server", "bench-bootstrap-" + secrets.token_hex(12), secrets.token_urlsafe(24),
                             extra_env={"EDGEFLEET_ARTIFACT_DIR": str(store), "EDGEFLEET_EMBEDDED_MQTT_PORT": "0"})
        nginx = NginxServer(root / "nginx", store, with_auth=False, workers=args.nginx_workers)
        try:
            server.start()
            credential = enroll_device(server.url, server.bootstrap_token)
            nginx.start()
            server_runs, nginx_runs = [], []
            for _ in range(args.rounds):
                server_runs.append(load(server.url, digests, size, args, [f"Authorization: Bearer {credential}"]))
                nginx_runs.append(load(nginx.url, digests, size, args, [f"Authorization: Bearer {credential}"]))
        finally:
            nginx.stop()
            server.stop()
    server_mb = statistics.mean(run["mb_per_s"] for run in server_runs)
    nginx_mb = statistics.mean(run["mb_per_s"] for run in nginx_runs)
    return {
        "server_mb_per_s": round(server_mb, 1),
        "server_requests_per_s": round(statistics.mean(run["requests_per_s"] for run in server_runs), 1),
        "nginx_mb_per_s": round(nginx_mb, 1),
        "nginx_requests_per_s": round(statistics.mean(run["requests_per_s"] for run in nginx_runs), 1),
        "ratio": round(server_mb / nginx_mb, 3),
        "errors": sum(run["errors"] for run in server_runs + nginx_runs),
        "files": args.files, "file_bytes": size,
        "range": f"{args.range_kb} KiB" if args.range_kb else "bytes=<random offset>- (to the end)",
        "connections": args.connections, "seconds_per_run": args.seconds, "rounds": args.rounds,
        "server_processes": 1, "nginx_workers": args.nginx_workers, "cpus": os.cpu_count(),
        "runs": {"server": server_runs, "nginx": nginx_runs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--file-mb", type=int, default=8)
    parser.add_argument("--range-kb", type=int, default=0, help="0: from a random offset to the end")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nginx-workers", type=int, default=1, help="1: one process each, like the server")
    args = parser.parse_args()
    print(json.dumps(measure(args), indent=2))


if __name__ == "__main__":
    main()
