"""Open Inference Protocol (KServe v2) JSON <-> numpy, exactly as the REST spec defines it.

Request:  {"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "parameters"?, "data"}],
           "outputs"?: [{"name", "parameters"?}]}
Response: {"model_name", "model_version", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}
Tensor data is accepted flat (row-major) or nested and always returned flat.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.errors import InvalidInferenceRequestError
from agent.inference import ServedModel
from agent.protocol.canonical import parse_json
from agent.protocol.errors import MalformedDocumentError
from agent.protocol.metadata import Runtime, TensorSpec

NUMPY_TO_KSERVE = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "str": "BYTES", "object": "BYTES",
}
KSERVE_TO_NUMPY = {kserve: numpy for numpy, kserve in NUMPY_TO_KSERVE.items() if kserve != "BYTES"}
PLATFORMS = {Runtime.ONNXRUNTIME.value: "onnx_onnxv1", Runtime.TFLITE.value: "tensorflow_tflite"}
# numpy kinds of parsed JSON data each target kind accepts (JSON integers are fine for float tensors)
ACCEPTED_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None  # requested output names; None: all


def kserve_datatype(dtype: str) -> str:
    return NUMPY_TO_KSERVE.get(dtype, dtype.upper())


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": kserve_datatype(spec.dtype),
            "shape": [-1 if dim is None else dim for dim in spec.shape]}


def model_metadata(served: ServedModel) -> dict[str, Any]:
    return {
        "name": served.name,
        "versions": [str(served.version)],
        "platform": PLATFORMS.get(served.runtime, served.runtime),
        "inputs": [tensor_metadata(spec) for spec in served.inputs],
        "outputs": [tensor_metadata(spec) for spec in served.outputs],
    }


def _bad(message: str) -> InvalidInferenceRequestError:
    return InvalidInferenceRequestError(message)


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in obj:
        raise _bad(f"{what} is missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _bad(f"{what}.{key} has the wrong JSON type")
    return value


def _decode_tensor(entry: Any, specs: dict[str, TensorSpec]) -> tuple[str, np.ndarray]:
    if not isinstance(entry, dict):
        raise _bad("each input must be an object")
    name = _field(entry, "name", str, "input")
    what = f"input {name!r}"
    if name not in specs:
        raise _bad(f"unknown input {name!r}; the model takes {sorted(specs)}")
    spec = specs[name]
    shape = _field(entry, "shape", list, what)
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
        raise _bad(f"{what}.shape must be a list of integers >= 0")
    datatype = _field(entry, "datatype", str, what)
    expected = kserve_datatype(spec.dtype)
    if datatype != expected:
        raise _bad(f"{what} must have datatype {expected}, got {datatype}")
    data = _field(entry, "data", list, what)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise _bad(f"{what}.data is ragged or not numeric") from None
    target = np.dtype(spec.dtype)
    if array.size and array.dtype.kind not in ACCEPTED_KINDS.get(target.kind, ""):
        raise _bad(f"{what}.data holds values that are not {datatype}")
    if array.size != math.prod(shape):
        raise _bad(f"{what}.data has {array.size} elements, shape {shape} needs {math.prod(shape)}")
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise _bad(f"{what}.data has values outside the {datatype} range")
    return name, array.astype(target).reshape(shape)


def decode_infer_request(body: bytes, served: ServedModel, max_bytes: int) -> InferRequest:
    """Parse and check an inference request against the served model's inputs and outputs."""
    try:
        document = parse_json(body, max_bytes)
    except MalformedDocumentError as exc:
        raise _bad(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _bad("request body must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("id must be a string")
    if "parameters" in document and not isinstance(document["parameters"], dict):
        raise _bad("parameters must be an object")
    entries = _field(document, "inputs", list, "request")
    specs = {spec.name: spec for spec in served.inputs}
    inputs: dict[str, np.ndarray] = {}
    for entry in entries:
        name, array = _decode_tensor(entry, specs)
        if name in inputs:
            raise _bad(f"input {name!r} is given twice")
        inputs[name] = array
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise _bad(f"missing input(s) {missing}")
    requested = None
    if "outputs" in document:
        wanted = _field(document, "outputs", list, "request")
        if not all(isinstance(entry, dict) for entry in wanted):
            raise _bad("each requested output must be an object")
        names = [_field(entry, "name", str, "output") for entry in wanted]
        known = {spec.name for spec in served.outputs}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise _bad(f"unknown output(s) {unknown}; the model produces {sorted(known)}")
        requested = tuple(dict.fromkeys(names))
    return InferRequest(request_id, inputs, requested)


def _flat_data(array: np.ndarray) -> list[Any]:
    values = array.reshape(-1).tolist()
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        values = [value if math.isfinite(value) else None for value in values]
    return values


def encode_infer_response(served: ServedModel, request: InferRequest, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    names = request.outputs if request.outputs is not None else tuple(spec.name for spec in served.outputs)
    response: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version)}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = [
        {
            "name": name,
            "shape": list(outputs[name].shape),
            "datatype": kserve_datatype(outputs[name].dtype.name),
            "data": _flat_data(outputs[name]),
        }
        for name in names
    ]
    return response
