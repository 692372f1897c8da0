"""What telemetry and drift accounting cost on the device's predict path.

In one run, on the same ONNX model (about 1 ms, single-threaded like the
agent's sessions) and the same inputs (one row of 64 features per call):

- ``bare``: ``onnxruntime.InferenceSession.run`` (the very session the agent loaded);
- ``agent``: ``InferenceService.predict`` (schema check, timing, observers) with
  the telemetry accumulator observing, binning on a reference profile of 64
  features, reading labels and confidences;
- ``accounting``: the accumulator alone, called with precomputed outputs
  (its buffer flushes and binning included, amortised).

The default model is a small CNN (input reshaped to 8x8, 3x3 convolutions of
64 channels, depth chosen for ~1 ms): compute-bound, so the comparison does not
hinge on what other processes leave in the shared L3. ``--model mlp`` is the
older MLP sized to ~1 ms by its width (tens of MB of weights streamed per call:
memory-bound and sensitive to neighbours).

Bare and agent calls alternate, and which of the two goes first alternates too,
so machine load and cache state hit both alike; medians of thousands of calls
after a warm-up. Prints one JSON object: bare_p50_ms, agent_p50_ms, ratio,
accounting_us_per_inference, features (and the sizes used).

    .venv/bin/python bench/agent_overhead.py [--calls 4000] [--target-ms 1.0] [--model cnn|mlp] [--size N]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from agent.binning import build_profile
from agent.inference import InferenceService, ServedModel
from agent.runtimes import load_model
from agent.slots import SlotInfo
from agent.telemetry.accumulator import TelemetryAccumulator

FEATURES = 64
CLASSES = 10


def build_mlp(path: Path, hidden: int, seed: int = 0) -> Path:
    """input [N, 64] -> MatMul/Relu x2 (hidden units) -> probabilities [N, 10] (softmax) and label [N]."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.1, size).astype(np.float32)
               for size in ((FEATURES, hidden), (hidden, hidden), (hidden, CLASSES))]
    nodes = [
        helper.make_node("MatMul", ["input", "w0"], ["h0"]), helper.make_node("Relu", ["h0"], ["a0"]),
        helper.make_node("MatMul", ["a0", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("MatMul", ["a1", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "bench_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def build_cnn(path: Path, layers: int, channels: int = 64, seed: int = 0) -> Path:
    """input [N, 64] -> [N, 1, 8, 8] -> (Conv 3x3 + Relu) x layers -> global pool -> probabilities, label."""
    rng = np.random.default_rng(seed)
    initializers = [numpy_helper.from_array(np.array([-1, 1, 8, 8], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["x"])]
    previous, fan_in = "x", 1
    for index in range(layers):
        kernel = rng.normal(0, (2 / (fan_in * 9)) ** 0.5, (channels, fan_in, 3, 3)).astype(np.float32)
        initializers.append(numpy_helper.from_array(kernel, f"k{index}"))
        nodes += [helper.make_node("Conv", [previous, f"k{index}"], [f"c{index}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        previous, fan_in = f"r{index}", channels
    initializers.append(numpy_helper.from_array(rng.normal(0, 0.1, (channels, CLASSES)).astype(np.float32), "head"))
    nodes += [
        helper.make_node("GlobalAveragePool", [previous], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "bench_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def bare_session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()  # what agent.runtimes.OnnxModel uses
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def typical_ms(session: onnxruntime.InferenceSession, rows: np.ndarray, calls: int = 300) -> float:
    """The 25th percentile of ``calls`` single-row runs: what the model takes when nothing else disturbs it."""
    times = []
    for index in range(calls):
        started = time.perf_counter()
        session.run(None, {"input": rows[index % len(rows)][None, :]})
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 25)) * 1000


def sized_model(directory: Path, target_ms: float, rows: np.ndarray, kind: str, size: int | None) -> tuple[Path, str]:
    """A model that takes about ``target_ms``: CNN depth (cost ~ layers) or MLP width (~ hidden**2); or ``size``."""
    fixed = size is not None
    size = size or (16 if kind == "cnn" else 512)
    for attempt in range(4):
        path = directory / f"{kind}-{attempt}.onnx"
        build_cnn(path, size) if kind == "cnn" else build_mlp(path, size)
        measured = target_ms if fixed else typical_ms(bare_session(path), rows)
        if abs(measured - target_ms) / target_ms < 0.15 or attempt == 3:
            return path, f"{size} {'layers' if kind == 'cnn' else 'hidden units'}"
        scale = target_ms / measured
        size = max(1, round(size * scale)) if kind == "cnn" else max(32, int(size * scale ** 0.5))
    raise AssertionError("unreachable")


def timed_pairs(bare: onnxruntime.InferenceSession, service: InferenceService, batches: list[dict[str, np.ndarray]],
                calls: int) -> dict[str, list[float]]:
    """Wall and thread-CPU seconds per call of both paths, alternating which runs first."""
    times: dict[str, list[float]] = {"bare": [], "agent": [], "bare_cpu": [], "agent_cpu": []}
    paths = (("bare", lambda batch: bare.run(None, batch)), ("agent", service.predict))
    clock, cpu = time.perf_counter, time.thread_time
    for index in range(calls):
        batch = batches[index % len(batches)]
        for name, call in paths if index % 2 == 0 else paths[::-1]:
            started, started_cpu = clock(), cpu()
            call(batch)
            elapsed, elapsed_cpu = clock() - started, cpu() - started_cpu
            times[name].append(elapsed)
            times[name + "_cpu"].append(elapsed_cpu)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=4000, help="timed calls per path")
    parser.add_argument("--target-ms", type=float, default=1.0, help="bare latency the model is sized for")
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="compute-bound CNN or memory-bound MLP")
    parser.add_argument("--size", type=int, help="CNN layers or MLP hidden units (default: sized to --target-ms)")
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    calibration = rng.normal(size=(2000, FEATURES)).astype(np.float32)
    live = rng.normal(size=(1000, FEATURES)).astype(np.float32)
    with tempfile.TemporaryDirectory() as workdir:
        path, size = sized_model(Path(workdir), args.target_ms, live, args.model, args.size)
        loaded = load_model(path, "onnxruntime")
        # The bare path runs the agent's own session: one copy of the weights, so neither path finds the
        # other's evicted from the caches.
        bare = loaded._session  # type: ignore[attr-defined]
        info = SlotInfo("bench", 1, "onnx-fp32", "onnxruntime", path.name, "0" * 64, path.stat().st_size,
                        loaded.inputs, loaded.outputs)
        served = ServedModel.from_slot(info, loaded)
        labels = bare.run(["label"], {"input": calibration})[0]
        profile = build_profile(calibration, labels, "input", classes=True)
        accumulator = TelemetryAccumulator(lambda _served: (profile.sha256(), profile))
        service = InferenceService()
        service.add_observer(accumulator)
        service.swap(served)

        batches = [{"input": live[index][None, :]} for index in range(len(live))]
        timed_pairs(bare, service, batches, 300)  # warm-up: sessions, allocator, first flushes
        times = timed_pairs(bare, service, batches, args.calls)

        outputs = [service.predict(batch) for batch in batches]
        observer = TelemetryAccumulator(lambda _served: (profile.sha256(), profile))
        calls = max(args.calls * 5, 20_000)
        best = best_cpu = float("inf")
        for _ in range(3):
            started, started_cpu = time.perf_counter(), time.thread_time()
            for index in range(calls):
                observer(served, batches[index % len(batches)], outputs[index % len(batches)], 1.0, None)
            best = min(best, (time.perf_counter() - started) / calls)
            best_cpu = min(best_cpu, (time.thread_time() - started_cpu) / calls)
        report = observer.drain(close_current=True)[-1]
        assert report.features is not None and sum(report.features.counts[0]) > 0

    bare_p50, agent_p50 = statistics.median(times["bare"]) * 1000, statistics.median(times["agent"]) * 1000
    bare_cpu, agent_cpu = statistics.median(times["bare_cpu"]) * 1000, statistics.median(times["agent_cpu"]) * 1000
    # the 10th percentile: the calls no other process disturbed (on a busy shared machine the median is not)
    bare_p10, agent_p10 = (float(np.percentile(times[name], 10)) * 1000 for name in ("bare", "agent"))
    print(json.dumps({
        "bare_p50_ms": round(bare_p50, 4),
        "agent_p50_ms": round(agent_p50, 4),
        "ratio": round(agent_p50 / bare_p50, 4),
        "accounting_us_per_inference": round(best * 1e6, 2),
        "features": FEATURES,
        # the same on this thread's CPU time: what the figures are without waiting for a shared core
        "bare_p50_cpu_ms": round(bare_cpu, 4),
        "agent_p50_cpu_ms": round(agent_cpu, 4),
        "cpu_ratio": round(agent_cpu / bare_cpu, 4),
        "bare_p10_ms": round(bare_p10, 4),
        "agent_p10_ms": round(agent_p10, 4),
        "p10_ratio": round(agent_p10 / bare_p10, 4),
        "accounting_cpu_us_per_inference": round(best_cpu * 1e6, 2),
        "model": f"{args.model} ({size})",
        "calls": args.calls,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    sys.exit(main())
