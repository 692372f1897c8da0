"""Small models and data sets built inside the tests (scikit-learn's bundled digits; nothing downloaded)."""

from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEED = 0


@cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    return (features / 16.0).astype(np.float32), labels.astype(np.int64)


def split(rows: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed shuffle: train on the first 1300 rows, validate on the last ``rows``."""
    x, y = digits()
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1300], y[:1300], x[-rows:], y[-rows:]


def train_softmax(features: np.ndarray, labels: np.ndarray, hidden: int = 0, steps: int = 400,
                  rate: float = 0.01) -> list[np.ndarray]:
    """Full-batch Adam on cross-entropy: [w1, b1, w2, b2] with a ReLU hidden layer, or [w, b] without."""
    rng = np.random.default_rng(SEED)
    sizes = [features.shape[1], *([hidden] if hidden else []), 10]
    params = []
    for fan_in, fan_out in zip(sizes, sizes[1:], strict=False):
        params += [rng.normal(0, np.sqrt(2 / fan_in), (fan_in, fan_out)), np.zeros(fan_out)]
    moments = [np.zeros_like(p) for p in params] + [np.zeros_like(p) for p in params]
    onehot = np.eye(10)[labels]
    x = features.astype(np.float64)
    for step in range(1, steps + 1):
        activations = [x]
        for layer in range(0, len(params) - 2, 2):
            activations.append(np.maximum(activations[-1] @ params[layer] + params[layer + 1], 0))
        logits = activations[-1] @ params[-2] + params[-1]
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        delta = (probs - onehot) / len(x)
        grads: list[np.ndarray] = []
        for layer in range(len(params) - 2, -1, -2):
            grads = [activations[layer // 2].T @ delta, delta.sum(axis=0), *grads]
            if layer:
                delta = (delta @ params[layer].T) * (activations[layer // 2] > 0)
        for index, (param, grad) in enumerate(zip(params, grads, strict=True)):
            m, v = moments[index], moments[len(params) + index]
            m[...] = 0.9 * m + 0.1 * grad
            v[...] = 0.999 * v + 0.001 * grad ** 2
            param -= rate * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return [p.astype(np.float32) for p in params]


def numpy_mlp_onnx(path: Path, hidden: int = 64) -> Path:
    """An MLP trained with numpy: input [N, 64] -> MatMul/Add/Relu -> MatMul/Add -> Softmax 'scores'."""
    x_train, y_train, _, _ = split()
    w1, b1, w2, b2 = train_softmax(x_train, y_train, hidden=hidden)
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["l0"]),
             helper.make_node("Add", ["l0", "b2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["scores"], axis=1)]
    weights = [numpy_helper.from_array(value, name) for name, value in
               (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))]
    graph = helper.make_graph(nodes, "numpy_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                 [None, 64])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def save_data(directory: Path, calibration_rows: int = 64, validation_rows: int = 300,
              shape: tuple[int, ...] = (64,), name: str = "input") -> tuple[Path, Path]:
    x_train, _, x_val, y_val = split(validation_rows)
    calibration = directory / "calibration.npz"
    validation = directory / "validation.npz"
    np.savez(calibration, **{name: x_train[:calibration_rows].reshape(-1, *shape)})
    np.savez(validation, **{name: x_val.reshape(-1, *shape)}, labels=y_val)
    return calibration, validation


def _conv_graph(weights: dict[str, np.ndarray], head: bool) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 1, 8, 8])
    nodes = [helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["pool"], ["features"])]
    output, width = "features", weights["conv_w"].shape[0] * 16
    if head:
        nodes += [helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"], transB=1),
                  helper.make_node("Softmax", ["logits"], ["scores"], axis=1)]
        output, width = "scores", 10
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    graph = helper.make_graph(nodes, "conv_digits", [x], [helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                                                                         [None, width])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_onnx(path: Path, channels: int = 16) -> Path:
    """A small CNN: random convolution features and a softmax head trained on them (numpy)."""
    import onnxruntime

    rng = np.random.default_rng(SEED)
    weights = {"conv_w": rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32),
               "conv_b": rng.normal(0, 0.1, channels).astype(np.float32)}
    features_model = _conv_graph(weights, head=False)
    session = onnxruntime.InferenceSession(features_model.SerializeToString(), providers=["CPUExecutionProvider"])
    x_train, y_train, _, _ = split()
    features = session.run(None, {"image": x_train.reshape(-1, 1, 8, 8)})[0]
    w, b = train_softmax(features, y_train)
    weights["fc_w"] = np.ascontiguousarray(w.T)
    weights["fc_b"] = b
    onnx.save(_conv_graph(weights, head=True), str(path))
    return path


def zero_weights(source: Path, destination: Path) -> Path:
    """The same graph with every float weight set to zero (a broken 'compression')."""
    model = onnx.load(str(source))
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(tensor)), tensor.name))
    onnx.save(model, str(destination))
    return destination


def keras_mlp(path: Path) -> Path:
    """A Keras MLP on digits (needs TensorFlow)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    x_train, y_train, _, _ = split()
    model = tf.keras.Sequential([tf.keras.Input(shape=(64,), name="input"),
                                 tf.keras.layers.Dense(64, activation="relu"),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=60, batch_size=64, verbose=0)
    model.save(str(path))
    return path
