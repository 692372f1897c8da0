"""``edgefleet-agent``: enroll, run, status.

    edgefleet-agent [--config FILE] [--data-dir DIR] [--log-level LEVEL] enroll --server URL --token T
                    [--device-id ID] [--tag TAG ...]
    edgefleet-agent [--config FILE] [--data-dir DIR] run [--inference-port N] [--inference-host HOST]
    edgefleet-agent [--config FILE] [--data-dir DIR] status

Errors print one line to stderr with a hint. Exit codes: 0 ok, 1 runtime
error (server unreachable, refused, broken state), 2 usage/config error
(including "not enrolled yet"), 75 ``run`` stopped to restart into a new agent version
(``agent.selfupdate``; the systemd unit restarts it).
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agent
from agent.config import AgentConfig, load_config
from agent.enroll import enroll
from agent.errors import ConfigError, EnrollmentError, NotEnrolledError, ServerUnreachableError
from agent.facts import device_facts, sanitized_hostname
from agent.protocol.errors import EdgeFleetError
from agent.protocol.topics import validate_device_id
from agent.status import status_report

PROG = "edgefleet-agent"
USAGE_ERROR = 2
RUNTIME_ERROR = 1


class CliError(Exception):
    def __init__(self, message: str, hint: str, code: int) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="EdgeFleet device agent")
    parser.add_argument("--config", type=Path, help="TOML config file (default: $EDGEFLEET_AGENT_CONFIG)")
    parser.add_argument("--data-dir", type=Path, help="data directory (enrollment, root, state, model slots)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enroll = commands.add_parser("enroll", help="enroll this device with a fleet server")
    enroll.add_argument("--server", help="fleet server URL, e.g. http://fleet.example:8000")
    enroll.add_argument("--token", required=True,
                        help="a bootstrap token ('edgefleet device token create'; single use, expires)")
    enroll.add_argument("--device-id", help="device id (default: config device_id, else the sanitized hostname)")
    enroll.add_argument("--tag", action="append", dest="tags", help="tag for deployments by tag (repeatable)")
    enroll.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds")

    run = commands.add_parser("run", help="run the agent until SIGTERM/SIGINT")
    run.add_argument("--inference-port", type=int, help="local inference port (0: pick a free one)")
    run.add_argument("--inference-host", help="local inference address (default 127.0.0.1)")

    commands.add_parser("status", help="print the deployment state and current model as JSON")

    simulate = commands.add_parser("simulate", help="run many simulated devices in this process (tests, benchmarks)")
    simulate.add_argument("--count", type=int, required=True, help="devices in this process (at most 1000)")
    simulate.add_argument("--data-root", type=Path, required=True, help="one data directory per device under it")
    simulate.add_argument("--server", required=True, help="fleet server URL (enrollment, artifacts)")
    simulate.add_argument("--token", required=True, help="bootstrap token for devices not enrolled yet")
    simulate.add_argument("--prefix", default="sim", help="device ids are PREFIX-0000, PREFIX-0001, ...")
    simulate.add_argument("--start-index", type=int, default=0, help="first device number (several processes)")
    simulate.add_argument("--tag", action="append", dest="tags", help="tag of every device (repeatable)")
    simulate.add_argument("--mqtt-url", help="broker URL instead of the one the server hands out")
    simulate.add_argument("--arch", help="architecture every device reports")
    simulate.add_argument("--ram-mb", type=int, help="RAM every device reports")
    simulate.add_argument("--runtimes", help="comma-separated runtimes every device reports (onnxruntime,tflite)")
    simulate.add_argument("--traffic", type=Path, help=".npy file of input rows sent to every device")
    simulate.add_argument("--traffic-interval", type=float, default=1.0, help="seconds between a device's requests")
    simulate.add_argument("--traffic-batch", type=int, default=1, help="rows per request")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _load(args: argparse.Namespace) -> AgentConfig:
    overrides: dict[str, Any] = {"data_dir": args.data_dir, "log_level": args.log_level}
    if args.command == "run":
        overrides.update(inference_port=args.inference_port, inference_host=args.inference_host)
    return load_config(args.config, overrides=overrides)


def cmd_enroll(config: AgentConfig, args: argparse.Namespace) -> int:
    server = args.server or config.server_url
    if not server:
        raise CliError("no server URL", "pass --server http://HOST:PORT or set server_url in the config", USAGE_ERROR)
    if not server.startswith(("http://", "https://")):
        raise CliError(f"server URL {server!r} is not an http(s) URL", "e.g. --server http://127.0.0.1:8000",
                       USAGE_ERROR)
    device_id = args.device_id or config.device_id or sanitized_hostname()
    try:
        validate_device_id(device_id)
    except EdgeFleetError as exc:
        raise CliError(str(exc), "pass --device-id with lowercase letters, digits and dashes", USAGE_ERROR) from None
    facts = device_facts(device_id, config)
    tags = tuple(args.tags or config.tags)
    try:
        enrollment = enroll(server, args.token, facts, tags, agent.__version__, Path(config.data_dir), args.timeout)
    except ServerUnreachableError as exc:
        raise CliError(str(exc), "check the --server URL and that the fleet server is running", RUNTIME_ERROR) from None
    except EnrollmentError as exc:
        raise CliError(str(exc), "bootstrap tokens are single use and expire: get a new one "
                       "('edgefleet device token create')", RUNTIME_ERROR) from None
    print(json.dumps({"device_id": enrollment.device_id, "server_url": enrollment.server_url,
                      "mqtt_url": enrollment.mqtt_url, "data_dir": str(config.data_dir)}))
    return 0


def cmd_run(config: AgentConfig) -> int:
    from agent.memtrim import limit_arenas

    # Inference runs in onnxruntime/LiteRT with their own thread settings; numpy only reshapes and
    # sums, so OpenBLAS's worker threads (one per extra core) would only hold stacks and buffers.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    limit_arenas(2)
    from agent.daemon import AgentDaemon

    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("event=signal signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    daemon = AgentDaemon(config)
    daemon.run_until(stop)
    return daemon.exit_code


def cmd_simulate(args: argparse.Namespace) -> int:
    from agent.simulator import Simulator, SimulatorSettings

    if not 1 <= args.count <= 1000:
        raise CliError(f"--count {args.count} is out of range", "run 1-1000 devices per process (a few hundred "
                       "is what one process handles well; start several with --start-index)", USAGE_ERROR)
    if args.traffic_interval <= 0 or args.traffic_batch < 1:
        raise CliError("--traffic-interval must be > 0 and --traffic-batch >= 1", "e.g. --traffic-interval 0.5",
                       USAGE_ERROR)
    if args.traffic is not None and not args.traffic.is_file():
        raise CliError(f"traffic file {args.traffic} does not exist", "pass a .npy file of input rows", USAGE_ERROR)
    overrides = {"mqtt_url": args.mqtt_url, "arch": args.arch, "ram_mb": args.ram_mb,
                 "runtimes": tuple(r.strip() for r in args.runtimes.split(",") if r.strip()) if args.runtimes
                 else None, "log_level": args.log_level}
    settings = SimulatorSettings(
        count=args.count, data_root=args.data_root, server_url=args.server.rstrip("/"), token=args.token,
        prefix=args.prefix, start_index=args.start_index, tags=tuple(args.tags or ()),
        overrides={key: value for key, value in overrides.items() if value is not None}, config_path=args.config,
        traffic=args.traffic, traffic_interval_s=args.traffic_interval, traffic_batch=args.traffic_batch)
    simulator = Simulator(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        ids = simulator.start()
        print(json.dumps({"devices": ids}), flush=True)
        stop.wait()
    finally:
        simulator.stop()
    return 0


def cmd_status(config: AgentConfig) -> int:
    print(json.dumps(status_report(Path(config.data_dir)), indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            config = _load(args)
        except ConfigError as exc:
            raise CliError(str(exc), "fix the config file, EDGEFLEET_AGENT_* variable or flag named",
                           USAGE_ERROR) from None
        _configure_logging(config.log_level)
        if args.command == "enroll":
            return cmd_enroll(config, args)
        if args.command == "run":
            return cmd_run(config)
        if args.command == "simulate":
            return cmd_simulate(args)
        return cmd_status(config)
    except CliError as exc:
        return _fail(str(exc), exc.hint, exc.code)
    except NotEnrolledError as exc:
        return _fail(str(exc), f"run `{PROG} --data-dir DIR enroll --server URL --token T` first", USAGE_ERROR)
    except ConfigError as exc:
        return _fail(str(exc), "fix the configuration", USAGE_ERROR)
    except EdgeFleetError as exc:
        return _fail(f"{type(exc).__name__}: {exc}", "see the log above for details", RUNTIME_ERROR)
    except OSError as exc:
        return _fail(str(exc), "check that the data directory is writable and the paths exist", RUNTIME_ERROR)


def _fail(message: str, hint: str, code: int) -> int:
    print(f"{PROG}: error: {message} (hint: {hint})", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
