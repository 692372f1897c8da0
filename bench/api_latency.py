"""API latency at fleet size: p50/p99 of the device list and of a rollout's status with
10,000 devices in the database, on SQLite and on PostgreSQL, through the real server.

For each backend: ``edgefleet server`` (uvicorn, embedded broker) on a fresh database
(SQLite file, or a database in a throwaway PostgreSQL cluster started by this script the
way the tests start one), synthetic devices inserted straight into the ``device`` table
(``tests/fleet_server/synthetic_fleet.py``), a small model released through the API and a
one-phase rollout to every device created through the API: the controller signs and
publishes a directive per device (nobody answers), the devices time out and the rollout
ends, so its status carries a directive per device. Then each endpoint is requested
``--requests`` times in sequence over one keep-alive loopback HTTP connection with the
admin token, after a few warm-up requests; latency is the client's wall time per
request (headers and the whole body read).

    .venv/bin/python bench/api_latency.py                       # 10,000 devices, SQLite and PostgreSQL
    .venv/bin/python bench/api_latency.py --devices 1000 --backends sqlite

Prints one JSON object: {"runs": [{"backend", "devices", "endpoints": {name: {"p50_ms", "p99_ms", ...}}}]}.
"""

import argparse
import http.client
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path; the repository root is what we need.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

MODEL = ROOT / "tests" / "fixtures" / "models" / "digits_mlp.onnx"
FINAL = ("succeeded", "aborted", "rolled_back")


def endpoints(devices: int, rollout_id: int) -> dict[str, str]:
    return {
        "devices_page_100": "/api/v1/devices?limit=100",
        "devices_page_1000": "/api/v1/devices",  # the default (and largest) page
        "devices_last_page_100": f"/api/v1/devices?limit=100&offset={max(0, devices - 100)}",
        "devices_tag_filter_100": "/api/v1/devices?tag=site-3&limit=100",
        "devices_online_state_filter_100": "/api/v1/devices?online=false&state=failed&limit=100",
        "device_one": f"/api/v1/devices/pi-{devices // 2:05d}",
        "rollout_status": f"/api/v1/rollouts/{rollout_id}",
        "rollouts_list": "/api/v1/rollouts",
    }


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def timed_gets(port: int, token: str, path: str, requests: int, warmup: int = 3) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"}
    samples: list[float] = []
    size = 0
    try:
        for number in range(warmup + requests):
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise SystemExit(f"GET {path}: HTTP {response.status} {body[:200]!r}")
            if number >= warmup:
                samples.append(elapsed)
                size = len(body)
    finally:
        connection.close()
    return {"p50_ms": round(percentile(samples, 0.5), 1), "p99_ms": round(percentile(samples, 0.99), 1),
            "mean_ms": round(statistics.fmean(samples), 1), "requests": requests, "response_kb": round(size / 1024, 1)}


def seed_rollout(client: Any, devices: int, timeout: float) -> tuple[int, dict[str, Any]]:
    from fleet_server.processes import wait_until

    version = client.upload_model(MODEL, "latency")["version"]
    client.create_release("latency", version)
    started = time.monotonic()
    created = client._request("POST", "/rollouts", json={
        "release": {"name": "latency", "version": version}, "target": {"tags": ["synthetic"]},
        "phases": [{"share": 1.0, "bake_s": 0}], "rate_limit_per_min": 1_000_000, "device_timeout_s": 5,
        "max_retries": 0})
    final = wait_until(lambda: (r := client._request("GET", f"/rollouts/{created['id']}"))["state"] in FINAL
                       and r, timeout, "the seeded rollout to end", interval=1.0)
    notified = sum(1 for d in final["device_details"] if d["sequence"] is not None)
    return created["id"], {"state": final["state"], "devices": final["devices"], "with_directive": notified,
                           "seconds_to_end": round(time.monotonic() - started, 1), "planned": devices}


def measure(backend: str, devices: int, requests: int, database_url: str | None) -> dict[str, Any]:
    from sqlalchemy import create_engine

    from fleet_server.client import FleetClient
    from fleet_server.localfleet import LocalServer
    from fleet_server.processes import free_port
    from tests.fleet_server.synthetic_fleet import insert_devices

    with tempfile.TemporaryDirectory(prefix=f"edgefleet-bench-api-{backend}-") as directory:
        root = Path(directory)
        env = {"EDGEFLEET_EMBEDDED_MQTT_PORT": str(free_port()), "EDGEFLEET_LOG_LEVEL": "warning",
               **({"EDGEFLEET_DATABASE_URL": database_url} if database_url else {})}
        server = LocalServer(root / "server", secrets.token_urlsafe(16), secrets.token_urlsafe(24), extra_env=env)
        try:
            server.start()
            engine = create_engine(database_url or f"sqlite:///{root / 'server' / 'edgefleet.db'}")
            started = time.perf_counter()
            insert_devices(engine, devices)
            insert_s = time.perf_counter() - started
            engine.dispose()
            with FleetClient(server.url, server.admin_token, timeout=300) as client:
                rollout_id, rollout = seed_rollout(client, devices, timeout=max(300.0, devices / 20))
            results = {name: timed_gets(server.port, server.admin_token, path, requests)
                       for name, path in endpoints(devices, rollout_id).items()}
        except BaseException:
            if server.process is not None:
                print(f"server log tail:\n{server.process.log_tail(40)}", file=sys.stderr)
            raise
        finally:
            server.stop()
    return {"backend": backend, "devices": devices, "insert_s": round(insert_s, 1), "rollout": rollout,
            "endpoints": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    args = parser.parse_args()
    runs = []
    for backend in args.backends:
        if backend == "sqlite":
            runs.append(measure(backend, args.devices, args.requests, None))
            continue
        from tests.fleet_server.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        try:
            runs.append(measure(backend, args.devices, args.requests, cluster.create_database("api_latency")))
        finally:
            cluster.stop()
    print(json.dumps({"runs": runs, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                      "load_average_1m": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()
