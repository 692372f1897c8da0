"""Telemetry ingest throughput: windows per second through Mosquitto into the server's database,
next to what a bare MQTT subscriber receives from the same broker in the same run.

One Mosquitto on a free loopback port (no persistence, no queue limit) serves every run.
Windows (20 features, ~680 bytes) are encoded once; several publisher processes send them
with QoS 1 (``bench/ingest_load.py``). Each run, for one database and replica count:

1. Bare: a paho subscriber with a persistent session (QoS 1, acknowledges at once, does
   nothing else) is away while the publishers queue N windows for it; it reconnects and
   drains them; rate = messages / (last - first message).
2. Server: N ``edgefleet server`` replicas on one database (SQLite file, or a fresh database
   in a throwaway PostgreSQL cluster started like the tests start one, or ``--database-url``)
   and the broker, consuming ``$share/edgefleet/...``; devices inserted, the reference
   profile in the shared artifact store. The replicas are paused (SIGSTOP) while the
   publishers queue the same N windows, then resumed; rate = rows / (time the N-th row is
   committed - time the first was), polled on the database.

Both consume the same kind of backlog, so the publishers' speed and the server's start-up
do not enter either rate. CPU seconds of the servers, the broker and PostgreSQL during the
drain are read from /proc and reported per window, with the writer's two stages measured
alone in this process (decode + validate, and row building + insert).

    .venv/bin/python bench/ingest.py              # SQLite x1, PostgreSQL x1 (each without and with a decode
                                                  # worker), PostgreSQL x2
    .venv/bin/python bench/ingest.py --database postgresql --replicas 2 --decode-workers 0 --windows 10000

Prints one JSON object: {"runs": [{"stored_windows_per_s", "bare_subscriber_msgs_per_s", "windows",
"database", "replicas", ...}], ...}.
"""

import argparse
import json
import os
import pickle
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path; the repository root is what we need.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), str(ROOT / "bench")] + [entry for entry in sys.path
                                                  if Path(entry or ".").resolve() not in (ROOT, ROOT / "bench")]

from ingest_load import bare_rate, bench_profile, encoded_windows, publish_all, tree_cpu_seconds  # noqa: E402

from fleet_server.localfleet import LocalServer  # noqa: E402
from fleet_server.processes import LOOPBACK, ManagedProcess, free_port, wait_for_port  # noqa: E402

# (database, replicas, decode worker processes per replica)
DEFAULT_RUNS = (("sqlite", 1, 0), ("sqlite", 1, 1), ("postgresql", 1, 0), ("postgresql", 1, 1), ("postgresql", 2, 0))


def start_broker(directory: Path, inflight: int) -> tuple[ManagedProcess, int]:
    port = free_port()
    config = directory / "mosquitto.conf"
    lines = [f"listener {port} {LOOPBACK}", "allow_anonymous true", "persistence false", "max_queued_messages 0",
             f"max_inflight_messages {inflight}", "log_dest stderr", "log_type error", "log_type warning"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n")
    broker = ManagedProcess("bench-mosquitto", ["/usr/sbin/mosquitto", "-c", config], directory / "mosquitto.log")
    broker.start()
    wait_for_port(port, LOOPBACK, 15, broker)
    return broker, port


def start_replicas(root: Path, count: int, database_url: str, port: int, decode_workers: int) -> list[LocalServer]:
    """``count`` servers sharing database, key directory and artifact store (docs/deployment.md)."""
    shared = {"EDGEFLEET_TELEMETRY_DECODE_WORKERS": str(decode_workers),
              "EDGEFLEET_DATABASE_URL": database_url, "EDGEFLEET_KEY_DIR": str(root / "keys"),
              "EDGEFLEET_ARTIFACT_DIR": str(root / "artifacts"), "EDGEFLEET_SESSION_SECRET": secrets.token_urlsafe(32),
              "EDGEFLEET_MONITOR_INTERVAL_S": "3600", "EDGEFLEET_LOG_LEVEL": "warning",
              "EDGEFLEET_MQTT_SHARED_SUBSCRIPTION": "true"}
    bootstrap, admin = secrets.token_urlsafe(16), secrets.token_urlsafe(24)
    servers: list[LocalServer] = []
    try:
        for number in range(1, count + 1):  # in turn: the first creates the key directory
            servers.append(LocalServer(root / f"replica-{number}", bootstrap, admin,
                                       mqtt_url=f"mqtt://{LOOPBACK}:{port}", extra_env=shared))
            servers[-1].start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def row_counter(database_url: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)

    def count() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COUNT(*) FROM telemetry_window")).scalar_one())
    return count, engine


def stored_rate(root: Path, port: int, payloads: Path, count: int, devices: int, database_url: str,
                replicas: tuple[int, int], publishers: int, database_pid: int | None,
                broker_pid: int) -> dict[str, float]:
    """``replicas``: (servers, decode workers each)."""
    from sqlalchemy import create_engine

    from tests.fleet_server.synthetic_fleet import insert_devices

    replica_count, decode_workers = replicas
    servers = start_replicas(root, replica_count, database_url, port, decode_workers)
    try:
        engine = create_engine(database_url)
        insert_devices(engine, devices)
        engine.dispose()
        profile = bench_profile()
        stored = root / "artifacts" / profile.sha256()[:2] / profile.sha256()
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(profile.to_bytes())
        counter, counter_engine = row_counter(database_url)
        baseline = _warm_up(root, port, devices, replica_count, counter)
        pids = [server.process.pid for server in servers if server.process is not None and server.process.pid]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            publish_all(LOOPBACK, port, payloads, count, publishers)  # queued for the paused replicas
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        cpu_before = _cpu(pids, broker_pid, database_pid)
        deadline = time.monotonic() + 900
        first_at, first_count = None, 0
        while (stored_now := counter() - baseline) < count:
            if first_at is None and stored_now > 0:
                first_at, first_count = time.perf_counter(), stored_now
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {stored_now} of {count} windows stored in time")
            time.sleep(0.05)
        finished = time.perf_counter()
        cpu = {key: after - cpu_before[key] for key, after in _cpu(pids, broker_pid, database_pid).items()}
        counter_engine.dispose()
        if first_at is None:
            raise RuntimeError("every window was stored before the first poll; use more --windows")
        return {"stored_windows_per_s": (count - first_count) / (finished - first_at),
                **{f"{key}_cpu_us_per_window": 1e6 * seconds / count for key, seconds in cpu.items()}}
    finally:
        for server in servers:
            server.stop()


def _warm_up(root: Path, port: int, devices: int, replicas: int, counter: Any) -> int:
    """One window per device before the measurement, so every replica has connected to the database and
    started its decode workers; returns the rows stored by then."""
    path = root / "warm-up.pickle"
    path.write_bytes(pickle.dumps(encoded_windows(devices * replicas, devices, first_seq=1_000_000)))
    publish_all(LOOPBACK, port, path, devices * replicas, 1)
    deadline = time.monotonic() + 120
    while (stored := counter()) < devices * replicas:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {stored} warm-up windows stored")
        time.sleep(0.1)
    return stored


def _cpu(servers: list[int], broker: int, database: int | None) -> dict[str, float]:
    cpu = {"server": sum(tree_cpu_seconds(pid) for pid in servers),  # with its decode workers
           "server_main_process": sum(tree_cpu_seconds(pid, children=False) for pid in servers),
           "broker": tree_cpu_seconds(broker)}
    if database is not None:
        cpu["postgresql"] = tree_cpu_seconds(database)
    return cpu


def stage_costs(database_url: str, devices: int, count: int = 3000) -> dict[str, float]:
    """CPU microseconds per window of the writer's two stages, in this process: decoding and validating,
    and storing (row building + insert, one transaction per 1000 windows) into ``database_url``."""
    import logging

    from agent.protocol.telemetry import TelemetryWindow
    from fleet_server.core.db import create_db_engine
    from fleet_server.core.schema import upgrade_schema
    from fleet_server.services.telemetry_store import TelemetryStore
    from tests.fleet_server.synthetic_fleet import insert_devices

    logging.disable(logging.WARNING)
    engine = create_db_engine(database_url)
    upgrade_schema(engine)
    insert_devices(engine, devices)
    payloads = [payload for _, payload in encoded_windows(count, devices)]
    started = time.process_time()
    windows = [TelemetryWindow.decode(payload) for payload in payloads]
    decoded = time.process_time()
    store = TelemetryStore(engine)
    for offset in range(0, count, 1000):
        store.store(windows[offset:offset + 1000])
    stored = time.process_time()
    engine.dispose()
    logging.disable(logging.NOTSET)
    return {"decode_cpu_us_per_window": 1e6 * (decoded - started) / count,
            "store_cpu_us_per_window": 1e6 * (stored - decoded) / count}


def run_all(args: argparse.Namespace, runs: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    cluster = None
    results = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-ingest-") as directory:
        workdir = Path(directory)
        payloads = workdir / "payloads.pickle"
        payloads.write_bytes(pickle.dumps(encoded_windows(args.windows, args.devices)))
        broker, port = start_broker(workdir, args.broker_inflight)
        try:
            for number, (database, replicas, workers) in enumerate(runs):
                root = workdir / f"run-{number}"
                root.mkdir()
                database_pid = None
                if database == "sqlite":
                    url, stage_url = f"sqlite:///{root / 'edgefleet.db'}", f"sqlite:///{root / 'stages.db'}"
                elif args.database_url:
                    url = stage_url = args.database_url
                else:
                    if cluster is None:
                        from tests.fleet_server.postgres import PostgresCluster

                        cluster = PostgresCluster().start()
                    url = cluster.new_database("ingest")
                    stage_url = cluster.create_database(f"stages_{number}")
                    database_pid = cluster._process.pid if cluster._process else None  # noqa: SLF001
                bare = bare_rate(LOOPBACK, port, payloads, args.windows, args.publishers)
                stored = stored_rate(root, port, payloads, args.windows, args.devices, url, (replicas, workers),
                                     args.publishers, database_pid, broker.pid or 0)
                stages = stage_costs(stage_url, args.devices) if not args.database_url or database == "sqlite" else {}
                results.append({"stored_windows_per_s": stored.pop("stored_windows_per_s"),
                                "bare_subscriber_msgs_per_s": bare.pop("bare_subscriber_msgs_per_s"),
                                "windows": args.windows, "database": database, "replicas": replicas,
                                "decode_workers": workers,
                                **stored, **bare, **stages, "load_average_1m": os.getloadavg()[0]})
        finally:
            broker.stop()
            if cluster is not None:
                cluster.stop()
    return [{key: round(value, 1) if isinstance(value, float) else value for key, value in run.items()}
            for run in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--publishers", type=int, default=3, help="publisher processes")
    parser.add_argument("--broker-inflight", type=int, default=1000,
                        help="Mosquitto max_inflight_messages (1000 as 'edgefleet broker-config' writes; "
                             "Mosquitto's own default is 20)")
    parser.add_argument("--decode-workers", type=int, default=1,
                        help="EDGEFLEET_TELEMETRY_DECODE_WORKERS of a single run")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), help="one run on this database")
    parser.add_argument("--database-url", help="an existing PostgreSQL database (migrated by the server; "
                                               "its telemetry_window table must be empty)")
    parser.add_argument("--replicas", type=int, choices=(1, 2), help="one run with this many server replicas")
    args = parser.parse_args()
    if args.database or args.database_url or args.replicas:
        runs = [("postgresql" if args.database_url else args.database or "sqlite", args.replicas or 1,
                 args.decode_workers)]
    else:
        runs = list(DEFAULT_RUNS)
    results = run_all(args, runs)
    print(json.dumps({"runs": results, "devices": args.devices, "publishers": args.publishers,
                      "broker_max_inflight": args.broker_inflight,
                      "window_bytes": len(encoded_windows(1, 1)[0][1]), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
