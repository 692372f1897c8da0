"""The model to compress: what kind it is, its input/output schema, and proof
that its runtime can run it.

``open_source`` accepts an ONNX file, a TFLite file, or (with the ``tf``
extra) a Keras ``.keras``/``.h5`` file or a SavedModel directory. A file that
is no model, or a model whose runtime rejects it (unsupported operators),
raises one clear error before any variant is built.
"""

import enum
import logging
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError
from agent.protocol.metadata import Runtime, TensorSpec
from agent.runtimes import LoadedModel, load_model
from compression.errors import InvalidModelError, UnsupportedModelError, short_message

logger = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


class SourceKind(enum.StrEnum):
    ONNX = "onnx"
    TFLITE = "tflite"
    KERAS = "keras"  # .keras / .h5 file or SavedModel directory, converted with TensorFlow


@dataclass(frozen=True)
class SourceModel:
    path: Path
    kind: SourceKind
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    origin: SourceKind  # what the operator gave: KERAS when ``path`` is the TFLite file converted from it

    @property
    def runtime(self) -> Runtime:
        return Runtime.ONNXRUNTIME if self.kind is SourceKind.ONNX else Runtime.TFLITE

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def detect_kind(path: Path) -> SourceKind:
    if not path.exists():
        raise InvalidModelError(f"{path} does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return SourceKind.KERAS
        raise InvalidModelError(f"{path} is a directory but not a TensorFlow SavedModel (no saved_model.pb)")
    if path.suffix.lower() in KERAS_SUFFIXES:
        return SourceKind.KERAS
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        raise InvalidModelError(f"{path.name} is empty")
    if head[4:8] == TFLITE_IDENTIFIER:
        return SourceKind.TFLITE
    return SourceKind.ONNX


def open_source(path: Path, workdir: Path) -> SourceModel:
    """Identify ``path``, read its schema and check its runtime loads it.

    A Keras model or SavedModel is first converted to a float TFLite file in ``workdir`` (TensorFlow is
    what converts; the pipeline then treats that file as the original).
    """
    path = Path(path)
    origin = detect_kind(path)
    model_path = path
    if origin is SourceKind.KERAS:
        from compression.tf_convert import convert_to_tflite

        model_path = convert_to_tflite(path, Path(workdir) / "converted-fp32.tflite")
    elif origin is SourceKind.ONNX:
        _check_onnx_file(path)
    kind = SourceKind.ONNX if origin is SourceKind.ONNX else SourceKind.TFLITE
    loaded = load_checked(model_path, Runtime.ONNXRUNTIME if kind is SourceKind.ONNX else Runtime.TFLITE)
    if not loaded.inputs or not loaded.outputs:
        raise InvalidModelError(f"{path.name} has no inputs or no outputs")
    logger.info("compression event=source_opened origin=%s file=%s inputs=%s outputs=%s", origin, path.name,
                [spec.name for spec in loaded.inputs], [spec.name for spec in loaded.outputs])
    return SourceModel(model_path, kind, loaded.inputs, loaded.outputs, origin)


def load_checked(path: Path, runtime: Runtime, num_threads: int = 1) -> LoadedModel:
    """Load with the device runtime; runtime rejections become ``UnsupportedModelError``."""
    try:
        return load_model(path, runtime.value, num_threads=num_threads)
    except AgentError as exc:
        raise UnsupportedModelError(f"{runtime.value} cannot run {path.name}: {short_message(exc)}") from None


def _check_onnx_file(path: Path) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, RuntimeError, ... on anything that is not ONNX
        raise InvalidModelError(f"{path.name} is not an ONNX, TFLite or Keras model "
                                f"(ONNX parse failed: {short_message(exc)})") from None
    if not model.graph.node:
        raise InvalidModelError(f"{path.name} is not a model: the ONNX graph has no nodes")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise InvalidModelError(f"{path.name} is not a valid ONNX model: {short_message(exc)}") from None

