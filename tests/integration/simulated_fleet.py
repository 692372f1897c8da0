"""Simulated devices for end-to-end tests: ``edgefleet-agent simulate`` processes
(real agent code paths, real MQTT, own data directories) and test models."""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fleet_server.localfleet import BIN_DIR, LocalServer
from fleet_server.processes import ManagedProcess, wait_until

DEVICES_LINE = '{"devices": ['


class SimulatedFleet:
    """``processes`` simulator processes of ``per_process`` devices each, all tagged ``tag``."""

    def __init__(self, server: LocalServer, root: Path, prefix: str, per_process: int, processes: int,
                 tag: str, traffic: Path | None = None, env: Mapping[str, str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.server = server
        self.root = root
        self.device_ids: list[str] = []
        self.processes = []
        for number in range(processes):
            argv = [str(BIN_DIR / "edgefleet-agent"), "simulate", "--count", str(per_process),
                    "--data-root", str(root / "devices"), "--server", server.url, f"--token={server.bootstrap_token}",
                    "--prefix", prefix, "--start-index", str(number * per_process), "--tag", tag, *extra_args]
            if traffic is not None:
                argv += ["--traffic", str(traffic), "--traffic-interval", "0.5"]
            self.processes.append(ManagedProcess(f"simulator-{prefix}-{number}", argv,
                                                 root / f"simulator-{number}.log", env={**os.environ, **(env or {})}))

    def start(self, timeout: float = 120.0) -> list[str]:
        for process in self.processes:
            process.start()
        for process in self.processes:
            self.device_ids += wait_started(process, timeout)
        return self.device_ids

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def agent_state(self, device_id: str) -> dict:
        return json.loads((self.root / "devices" / device_id / "state.json").read_text())


def wait_started(process: ManagedProcess, timeout: float = 120.0) -> list[str]:
    """Wait for a simulator process's (latest run's) line listing its devices."""
    wait_until(lambda: DEVICES_LINE in process.log_text(latest_run_only=True), timeout,
               f"{process.name} to start its devices")
    line = next(line for line in process.log_text(latest_run_only=True).splitlines()
                if line.startswith(DEVICES_LINE))
    # stdout and stderr share the log: a warning may follow the line before its newline does
    return json.JSONDecoder().raw_decode(line)[0]["devices"]


def _classifier_nodes(weights: np.ndarray) -> tuple[list, list]:
    initializers = [numpy_helper.from_array(weights.astype(np.float32), "weights"),
                    numpy_helper.from_array(np.zeros(10, dtype=np.float32), "bias")]
    nodes = [helper.make_node("MatMul", ["input", "weights"], ["logits_raw"]),
             helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
             helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)]
    return nodes, initializers


def _save(nodes: list, initializers: list, path: Path, doc: str) -> Path:
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def linear_classifier(directory: Path, name: str, seed: int = 0) -> Path:
    """A small digits-shaped classifier (input [N, 64] -> label, probabilities); the seed sets its weights."""
    nodes, initializers = _classifier_nodes(np.random.default_rng(seed).normal(size=(64, 10)))
    nodes.append(helper.make_node("Identity", ["scores"], ["probabilities"]))
    return _save(nodes, initializers, directory / f"{name}.onnx", f"edgefleet rollout test {name}")


def erroring_classifier(directory: Path, name: str = "erroring") -> Path:
    """Passes the post-install health check (its sample inputs lie in [0, 1)) but fails every request with a
    value >= 1.0, as real digits rows have: it installs fine and then raises the error rate."""
    nodes, initializers = _classifier_nodes(np.random.default_rng(0).normal(size=(64, 10)))
    initializers += [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
                     numpy_helper.from_array(np.array(10, dtype=np.int64), "ten"),
                     numpy_helper.from_array(np.array(3, dtype=np.int64), "three"),
                     numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
                     numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0")]
    nodes += [
        helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
        helper.make_node("GreaterOrEqual", ["peak", "one"], ["saturated"]),
        helper.make_node("Cast", ["saturated"], ["saturated_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["saturated_int", "three"], ["cut"]),
        helper.make_node("Sub", ["ten", "cut"], ["width"]),
        helper.make_node("Unsqueeze", ["width", "axis0"], ["width_1d"]),
        helper.make_node("Concat", ["minus_one", "width_1d"], ["shape"], axis=0),
        helper.make_node("Reshape", ["scores", "shape"], ["probabilities"]),  # rows of 7: fails on saturated input
    ]
    return _save(nodes, initializers, directory / f"{name}.onnx", "edgefleet rollout test: errors on real traffic")
