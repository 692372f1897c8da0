"""Model runtimes behind one small interface: ``load_model(path, runtime) -> LoadedModel``.

onnxruntime and the TFLite interpreter (``ai_edge_litert``, or the older
``tflite_runtime`` on images with numpy < 2) are imported lazily, only when a
model of that runtime is loaded, so ``import agent`` stays light.
"""

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.errors import InferenceError, InvalidInferenceRequestError, ModelLoadError, RuntimeUnavailableError
from agent.protocol.metadata import Runtime, TensorSpec

log = logging.getLogger(__name__)

ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}


class LoadedModel(Protocol):
    runtime: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def _require_inputs(specs: tuple[TensorSpec, ...], inputs: Mapping[str, np.ndarray]) -> None:
    if len(inputs) == len(specs):
        for spec in specs:
            if spec.name not in inputs:
                break
        else:
            return  # every request comes this way: no sets or generators to build
    expected = {spec.name for spec in specs}
    if set(inputs) != expected:
        raise InvalidInferenceRequestError(
            f"model expects inputs {sorted(expected)}, got {sorted(inputs)}")


class OnnxModel:
    """An onnxruntime session on the CPU provider. ``InferenceSession.run`` is thread safe."""

    runtime = Runtime.ONNXRUNTIME.value

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise RuntimeUnavailableError(f"onnxruntime is not installed: {exc}") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise ModelLoadError(f"onnxruntime cannot load {Path(path).name}: {exc}") from None
        self.inputs = tuple(self._spec(arg) for arg in self._session.get_inputs())
        self.outputs = tuple(self._spec(arg) for arg in self._session.get_outputs())
        # onnxruntime returns numpy arrays for tensor outputs: then no conversion per request
        self._output_names = tuple(spec.name for spec in self.outputs)
        self._all_tensors = all(arg.type.startswith("tensor(") for arg in self._session.get_outputs())

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        shape = tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in (arg.shape or ()))
        return TensorSpec(arg.name, ONNX_TYPES.get(arg.type, arg.type), shape)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _require_inputs(self.inputs, inputs)
        try:
            results = self._session.run(None, inputs if type(inputs) is dict else dict(inputs))
        except Exception as exc:  # InvalidArgument, Fail, ... from the runtime
            raise InferenceError(f"onnxruntime failed: {exc}") from None
        if self._all_tensors:
            return dict(zip(self._output_names, results, strict=True))
        return {spec.name: np.asarray(value) for spec, value in zip(self.outputs, results, strict=True)}


def _tflite_interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeUnavailableError("no TFLite runtime: install ai-edge-litert or tflite-runtime") from None
    return Interpreter


class TfliteModel:
    """A TFLite interpreter. Interpreters are not thread safe: one lock guards resize/set/invoke/get."""

    runtime = Runtime.TFLITE.value

    def __init__(self, path: Path, num_threads: int = 1) -> None:
        interpreter_class = _tflite_interpreter_class()
        try:
            self._interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except Exception as exc:  # ValueError/RuntimeError from the interpreter
            raise ModelLoadError(f"TFLite cannot load {Path(path).name}: {exc}") from None
        self._input_details = self._interpreter.get_input_details()
        self._output_details = self._interpreter.get_output_details()
        self.inputs = tuple(self._spec(detail) for detail in self._input_details)
        self.outputs = tuple(self._spec(detail) for detail in self._output_details)
        self._shapes = {detail["index"]: tuple(int(d) for d in detail["shape"]) for detail in self._input_details}
        self._lock = threading.Lock()

    @staticmethod
    def _spec(detail: dict[str, Any]) -> TensorSpec:
        signature = detail.get("shape_signature")
        dims = signature if signature is not None and len(signature) else detail["shape"]
        shape = tuple(int(dim) if int(dim) >= 0 else None for dim in dims)
        return TensorSpec(detail["name"], np.dtype(detail["dtype"]).name, shape)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _require_inputs(self.inputs, inputs)
        with self._lock:
            try:
                resized = False
                for detail in self._input_details:
                    shape = tuple(inputs[detail["name"]].shape)
                    if shape != self._shapes[detail["index"]]:
                        self._interpreter.resize_tensor_input(detail["index"], list(shape), strict=False)
                        self._shapes[detail["index"]] = shape
                        resized = True
                if resized:
                    self._interpreter.allocate_tensors()
                for detail in self._input_details:
                    self._interpreter.set_tensor(detail["index"], inputs[detail["name"]])
                self._interpreter.invoke()
                return {detail["name"]: np.array(self._interpreter.get_tensor(detail["index"]))
                        for detail in self._output_details}
            except InferenceError:
                raise
            except Exception as exc:  # ValueError/RuntimeError from the interpreter
                raise InferenceError(f"TFLite failed: {exc}") from None


def load_model(path: Path, runtime: str, num_threads: int = 1) -> LoadedModel:
    """Load ``path`` with the named runtime (``onnxruntime`` or ``tflite``)."""
    if runtime == Runtime.ONNXRUNTIME.value:
        model: LoadedModel = OnnxModel(path, num_threads)
    elif runtime == Runtime.TFLITE.value:
        model = TfliteModel(path, num_threads)
    else:
        raise RuntimeUnavailableError(f"unsupported runtime {runtime!r}")
    log.info("event=model_loaded runtime=%s file=%s inputs=%s outputs=%s", runtime, Path(path).name,
             [spec.name for spec in model.inputs], [spec.name for spec in model.outputs])
    return model
