"""Check that an uploaded file really is an ONNX or TFLite model and read its
input/output schema (numpy dtype names, ``None`` for dynamic dimensions).

A zip archive must be an agent release's wheel (``agent_bundle``). Anything
else (an ELF binary, a pickle, another archive, garbage, a truncated model)
raises ``InvalidModelFileError`` with a message saying what was found.
"""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.protocol import Runtime, TensorSpec
from fleet_server.errors import InvalidModelFileError

logger = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8
ZIP_MAGIC = b"PK\x03\x04"
_KNOWN_NON_MODELS = (
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip file"),
    (b"#!", "a script"),
)


@dataclass(frozen=True)
class ModelInfo:
    format: str  # "onnx" or "tflite"
    runtime: Runtime
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def inspect_model_file(path: Path) -> ModelInfo:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        raise InvalidModelFileError("the uploaded file is empty")
    if head.startswith(ZIP_MAGIC):  # an agent release's wheel (fleet_server.services.agent_bundle)
        from fleet_server.services.agent_bundle import inspect_agent_bundle

        return inspect_agent_bundle(path)
    for magic, what in _KNOWN_NON_MODELS:
        if head.startswith(magic):
            raise InvalidModelFileError(f"the uploaded file is {what}, not an ONNX or TFLite model")
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        raise InvalidModelFileError("the uploaded file is a Python pickle, not an ONNX or TFLite model")
    if head[4:8] == TFLITE_IDENTIFIER:
        return _inspect_tflite(path)
    return _inspect_onnx(path)


# -- ONNX ----------------------------------------------------------------------


def _inspect_onnx(path: Path) -> ModelInfo:
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... on garbage
        raise InvalidModelFileError(f"not an ONNX or TFLite model (ONNX parse failed: {_short(exc)})") from None
    if any(uses_external_data(tensor) for tensor in _graph_tensors(model.graph)):
        raise InvalidModelFileError("ONNX models with external data files are not supported; embed the weights")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise InvalidModelFileError(f"not a valid ONNX model: {_short(exc)}") from None
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = tuple(_onnx_tensor(value, "input") for value in model.graph.input if value.name not in initializers)
    outputs = tuple(_onnx_tensor(value, "output") for value in model.graph.output)
    if not inputs or not outputs:
        raise InvalidModelFileError("the ONNX graph must have at least one input and one output")
    return ModelInfo("onnx", Runtime.ONNXRUNTIME, inputs, outputs)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph embeds: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph)


def _onnx_tensor(value: Any, what: str) -> TensorSpec:
    from onnx import helper

    if value.type.WhichOneof("value") != "tensor_type":
        raise InvalidModelFileError(
            f"{what} {value.name!r} is not a tensor (sequence/map types are not supported; "
            "for scikit-learn classifiers export with zipmap disabled)"
        )
    tensor_type = value.type.tensor_type
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, ValueError, TypeError):
        raise InvalidModelFileError(f"{what} {value.name!r} has an unsupported element type") from None
    shape: list[int | None] = []
    if tensor_type.HasField("shape"):
        for dim in tensor_type.shape.dim:
            shape.append(dim.dim_value if dim.WhichOneof("value") == "dim_value" and dim.dim_value >= 0 else None)
    return TensorSpec(value.name, dtype, tuple(shape))


# -- TFLite --------------------------------------------------------------------


def _inspect_tflite(path: Path) -> ModelInfo:
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        inputs = tuple(_tflite_tensor(detail) for detail in interpreter.get_input_details())
        outputs = tuple(_tflite_tensor(detail) for detail in interpreter.get_output_details())
    except InvalidModelFileError:
        raise
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError on bad flatbuffers or ops
        raise InvalidModelFileError(f"not a valid TFLite model: {_short(exc)}") from None
    if not inputs or not outputs:
        raise InvalidModelFileError("the TFLite model must have at least one input and one output")
    return ModelInfo("tflite", Runtime.TFLITE, inputs, outputs)


def _tflite_tensor(detail: dict[str, Any]) -> TensorSpec:
    import numpy as np

    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape = tuple(None if int(dim) < 0 else int(dim) for dim in dims)
    return TensorSpec(str(detail["name"]), np.dtype(detail["dtype"]).name, shape)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
