"""Compression benchmark: an MLP and a small CNN trained on scikit-learn's bundled
digits data, as ONNX and (through Keras and TensorFlow) as TFLite, compressed
by the pipeline side by side in one run on this CPU.

    .venv/bin/python bench/compression.py            # needs the compress and tf extras
    .venv/bin/python bench/compression.py --table    # also a Markdown table on stderr

Prints one JSON object: {"models": [{"model", "accuracy_fp32", "variants": [{"variant",
"size_ratio", "latency_ratio", "top1_agreement", "accuracy", "gate"}]}]}, ratios being
variant / fp32 original. Latency is single-row inference, one thread, p50.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, this file's directory comes first on sys.path and its name would shadow the package.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

SEED = 0
LATENCY_RUNS = 300
CALIBRATION_ROWS = 500

log = logging.getLogger("bench.compression")


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    return train_test_split(features, labels.astype(np.int64), test_size=0.25, random_state=SEED, stratify=labels)


def mlp_onnx(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """scikit-learn MLP (512, 256) exported with skl2onnx."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = MLPClassifier(hidden_layer_sizes=(512, 256), max_iter=200, random_state=SEED).fit(x, y)
    model = convert_sklearn(classifier, initial_types=[("input", FloatTensorType([None, 64]))],
                            options={id(classifier): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(model.SerializeToString())
    return path


def keras_models(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    mlp = tf.keras.Sequential([tf.keras.Input(shape=(64,), name="input"),
                               tf.keras.layers.Dense(512, activation="relu"),
                               tf.keras.layers.Dense(256, activation="relu"),
                               tf.keras.layers.Dense(10, activation="softmax")])
    cnn = tf.keras.Sequential([tf.keras.Input(shape=(8, 8, 1), name="image"),
                               tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                               tf.keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                               tf.keras.layers.MaxPooling2D(2),
                               tf.keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                               tf.keras.layers.Flatten(),
                               tf.keras.layers.Dense(128, activation="relu"),
                               tf.keras.layers.Dense(10, activation="softmax")])
    for model, inputs in ((mlp, x), (cnn, x.reshape(-1, 8, 8, 1))):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(inputs, y, epochs=30, batch_size=32, verbose=0)
    return {"mlp": mlp, "cnn": cnn}


def cnn_onnx(path: Path, cnn: Any) -> Path:
    """The Keras CNN's trained weights in an ONNX graph (NCHW), built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv1, conv2, conv3, dense1, dense2 = [layer.get_weights() for layer in cnn.layers if layer.get_weights()]
    weights: dict[str, np.ndarray] = {}
    nodes = []
    current = "image"
    for index, (kernel, bias) in enumerate((conv1, conv2, conv3), start=1):
        weights[f"conv{index}_w"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        weights[f"conv{index}_b"] = bias
        nodes += [helper.make_node("Conv", [current, f"conv{index}_w", f"conv{index}_b"], [f"c{index}"],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        current = f"r{index}"
        if index == 2:
            nodes.append(helper.make_node("MaxPool", [current], ["pool"], kernel_shape=[2, 2], strides=[2, 2]))
            current = "pool"
    kernel, bias = dense1  # Keras flattens (h, w, c); the ONNX graph flattens (c, h, w)
    weights["fc1_w"] = np.ascontiguousarray(kernel.reshape(4, 4, 64, -1).transpose(2, 0, 1, 3).reshape(1024, -1))
    weights["fc1_b"], (weights["fc2_w"], weights["fc2_b"]) = bias, dense2
    nodes += [helper.make_node("Flatten", [current], ["flat"]),
              helper.make_node("Gemm", ["flat", "fc1_w", "fc1_b"], ["h1"]),
              helper.make_node("Relu", ["h1"], ["h2"]),
              helper.make_node("Gemm", ["h2", "fc2_w", "fc2_b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["scores"], axis=1)]
    graph = helper.make_graph(
        nodes, "digits_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run(model: Path, calibration: dict[str, np.ndarray], validation: dict[str, np.ndarray], workdir: Path,
        label: str) -> dict[str, Any]:
    from compression.pipeline import compress_model
    from compression.settings import CompressionSettings

    directory = workdir / label
    directory.mkdir()
    np.savez(directory / "calibration.npz", **calibration)
    np.savez(directory / "validation.npz", **validation)
    settings = CompressionSettings(latency_runs=LATENCY_RUNS, latency_warmup=20)
    result = compress_model(model, directory / "calibration.npz", directory / "work",
                            validation=directory / "validation.npz", settings=settings)
    report = result.report
    log.info("%s: %.1fs, original %d bytes, p50 %.4f ms, zstd ratios %s, rejections %s", label,
             report["duration_s"], report["original"]["size_bytes"], report["original"]["latency_ms_p50"],
             {v["name"]: v["wire_ratio"] for v in report["variants"]},
             {v["name"]: v["reasons"] for v in report["variants"] if v["reasons"]} or "none")
    return {
        "model": label,
        "accuracy_fp32": report["original"]["accuracy"],
        "variants": [{"variant": v["name"], "size_ratio": v["size_ratio"], "latency_ratio": v["latency_ratio"],
                      "top1_agreement": v["top1_agreement"], "accuracy": v["accuracy"], "gate": v["gate"]}
                     for v in report["variants"]],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = ["| model | fp32 accuracy | variant | size ratio | latency ratio | top-1 agreement | accuracy | gate |",
             "|---|---|---|---|---|---|---|---|"]
    for model in result["models"]:
        for v in model["variants"]:
            lines.append(f"| {model['model']} | {model['accuracy_fp32']:.4f} | {v['variant']} | "
                         f"{_fmt(v['size_ratio'])} | {_fmt(v['latency_ratio'])} | {_fmt(v['top1_agreement'])} | "
                         f"{_fmt(v['accuracy'])} | {v['gate']} |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if value < 1.5 else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="store_true", help="also print a Markdown table on stderr")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    for noisy in ("compression", "agent", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stdout = os.dup(1)
    os.dup2(2, 1)  # TensorFlow and Keras print to stdout (some from C++): only the JSON goes there
    try:
        result = measure_all()
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    print(json.dumps(result, indent=2))
    if args.table:
        print(markdown(result), file=sys.stderr)


def measure_all() -> dict[str, Any]:
    x_train, x_test, y_train, y_test = digits_split()
    calibration_rows = x_train[:CALIBRATION_ROWS]
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        workdir = Path(tmp)
        keras = keras_models(x_train, y_train)
        mlp_keras, cnn_keras = workdir / "mlp.keras", workdir / "cnn.keras"
        keras["mlp"].save(str(mlp_keras))
        keras["cnn"].save(str(cnn_keras))
        flat_cal, flat_val = {"input": calibration_rows}, {"input": x_test, "labels": y_test}
        nchw_cal = {"image": calibration_rows.reshape(-1, 1, 8, 8)}
        nchw_val = {"image": x_test.reshape(-1, 1, 8, 8), "labels": y_test}
        nhwc_cal = {"image": calibration_rows.reshape(-1, 8, 8, 1)}
        nhwc_val = {"image": x_test.reshape(-1, 8, 8, 1), "labels": y_test}
        models = [
            run(mlp_onnx(workdir / "mlp.onnx", x_train, y_train), flat_cal, flat_val, workdir, "mlp-onnx"),
            run(cnn_onnx(workdir / "cnn.onnx", keras["cnn"]), nchw_cal, nchw_val, workdir, "cnn-onnx"),
            run(mlp_keras, flat_cal, flat_val, workdir, "mlp-keras-tflite"),
            run(cnn_keras, nhwc_cal, nhwc_val, workdir, "cnn-keras-tflite"),
        ]
    return {"models": models}


if __name__ == "__main__":
    main()
