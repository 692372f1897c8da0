"""Agent footprint: resident memory of ``edgefleet-agent run`` with a small model loaded,
and its CPU time while idle, extrapolated to an hour.

A fleet server (embedded broker) and one agent run as real processes on loopback. The
agent installs the digits ONNX model through a normal deployment, answers a few KServe
requests, then installs the TFLite build of the same model (so onnxruntime and LiteRT
are both imported, the worst case for memory) and answers again. Memory is read from
/proc/<pid>/status (VmRSS, VmHWM) and /proc/<pid>/smaps_rollup (Pss, the agent's fair
share when libraries are shared). Idle CPU is utime + stime from /proc/<pid>/stat over
``--idle-seconds`` with the model loaded and no requests (MQTT keepalive, presence and
telemetry windows keep running), times 3600 / interval.

    .venv/bin/python bench/agent_footprint.py
    .venv/bin/python bench/agent_footprint.py --idle-seconds 120

Prints one JSON object: {"rss_mb", "cpu_s_per_idle_hour", ...}.
"""

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's directory comes first on sys.path; the repository root is what we need.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

MODELS = ROOT / "tests" / "fixtures" / "models"
MB = 1024 * 1024


def memory(pid: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for path, keys in ((f"/proc/{pid}/status", ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")),
                       (f"/proc/{pid}/smaps_rollup", ("Pss",))):
        for line in Path(path).read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "Threads":
                values[name] = int(rest)
            elif name in keys:
                values[name] = round(int(rest.split()[0]) * 1024 / MB, 1)
    return {"rss_mb": values["VmRSS"], "peak_rss_mb": values["VmHWM"], "pss_mb": values.get("Pss", 0.0),
            "anon_mb": values.get("RssAnon", 0.0), "file_mb": values.get("RssFile", 0.0),
            "threads": values.get("Threads", 0)}


def largest_mappings(pid: int, top: int = 8) -> dict[str, float]:
    """Resident MB per mapped file (and [heap], [anon]) from /proc/<pid>/smaps, largest first."""
    by_name: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            name = Path(head[5]).name if len(head) == 6 and head[5].startswith("/") else (
                head[5] if len(head) == 6 else "[anon]")
        elif line.startswith("Rss:"):
            by_name[name] = by_name.get(name, 0) + int(line.split()[1])
    ranked = sorted(by_name.items(), key=lambda item: -item[1])[:top]
    return {key: round(kb / 1024, 1) for key, kb in ranked}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def install(client: Any, agent: Any, path: Path, name: str) -> None:
    version = client.upload_model(path, name)["version"]
    client.create_release(name, version)
    deployment = client.deploy(name, version, device_ids=[agent.device_id])
    final = client.wait_for_deployment(deployment["id"], timeout=120)
    states = [target["state"] for target in final["targets"]]
    if states != ["succeeded"]:
        raise SystemExit(f"installing {name} on the agent ended {states}")


def serve_some(agent: Any, name: str, rows: list[list[float]]) -> None:
    from fleet_server.localfleet import http_json

    metadata = http_json(f"{agent.inference_url}/v2/models/{name}")
    if not metadata:
        raise SystemExit(f"the agent does not serve {name}")
    input_name = metadata["inputs"][0]["name"]
    for row in rows:  # one row at a time: the TFLite build has a fixed batch of 1
        agent.infer(name, [row], input_name)


def measure(idle_seconds: float) -> dict[str, Any]:
    import numpy as np

    from fleet_server.client import FleetClient
    from fleet_server.localfleet import LocalAgent, LocalServer
    from fleet_server.processes import free_port

    rows = np.load(MODELS / "digits_sample.npy")[:8].tolist()
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-agent-") as directory:
        root = Path(directory)
        server = LocalServer(root / "server", secrets.token_urlsafe(16), secrets.token_urlsafe(24),
                             extra_env={"EDGEFLEET_EMBEDDED_MQTT_PORT": str(free_port())})
        agent = LocalAgent("footprint-1", root / "agent")
        try:
            server.start()
            agent.enroll(server.url, server.bootstrap_token)
            agent.start()
            agent.wait_serving()
            assert agent.process is not None and agent.process.pid is not None
            pid = agent.process.pid
            time.sleep(2)
            no_model = memory(pid)
            with FleetClient(server.url, server.admin_token) as client:
                install(client, agent, MODELS / "digits_mlp.onnx", "digits-onnx")
                serve_some(agent, "digits-onnx", rows)
                onnx_loaded = memory(pid)
                before, started = cpu_seconds(pid), time.monotonic()
                time.sleep(idle_seconds)
                idle_cpu = cpu_seconds(pid) - before
                idle_elapsed = time.monotonic() - started
                install(client, agent, MODELS / "digits_mlp.tflite", "digits-tflite")
                serve_some(agent, "digits-tflite", rows)
                both_imported = memory(pid)
                mappings = largest_mappings(pid)
        finally:
            agent.stop()
            server.stop()
    return {
        "rss_mb": max(onnx_loaded["rss_mb"], both_imported["rss_mb"]),
        "target_rss_mb": 100,
        "cpu_s_per_idle_hour": round(idle_cpu * 3600 / idle_elapsed, 1),
        "idle_cpu_percent_of_one_core": round(100 * idle_cpu / idle_elapsed, 3),
        "idle_measured_s": round(idle_elapsed, 1),
        "memory": {"no_model": no_model, "onnx_model": onnx_loaded, "onnx_then_tflite": both_imported},
        "largest_mappings_mb": mappings,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-seconds", type=float, default=90.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.idle_seconds), indent=2))


if __name__ == "__main__":
    main()
