"""TensorFlow's part: convert a Keras model (``.keras``/``.h5``) or a SavedModel
directory to a float32 ``.tflite`` file. Quantization happens afterwards on
that file with ai-edge-quantizer (LiteRT deprecates quantizing inside the
converter), so the TensorFlow and the TFLite-only paths share it.
"""

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from agent.storage import atomic_write_bytes
from compression.errors import InvalidModelError, TensorFlowUnavailableError, UnsupportedModelError, short_message

logger = logging.getLogger(__name__)


def import_tensorflow() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise TensorFlowUnavailableError(
            "Keras models and SavedModels need TensorFlow to convert them, and it is not installed") from None
    return tf


def convert_to_tflite(source: Path, destination: Path) -> Path:
    """Write the float32 TFLite conversion of ``source`` to ``destination`` (atomically)."""
    tf = import_tensorflow()
    try:
        if source.is_dir():
            converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
        else:
            model = tf.keras.models.load_model(str(source), compile=False)
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception as exc:  # OSError, ValueError, ... for files TensorFlow cannot read
        raise InvalidModelError(f"TensorFlow cannot load {source.name}: {short_message(exc)}") from None
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops: devices lack them
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras prints its export summary
            flatbuffer = converter.convert()
    except Exception as exc:  # ConverterError for ops without a TFLite builtin
        raise UnsupportedModelError(f"{source.name} does not convert to TFLite builtins: "
                                    f"{short_message(exc)}") from None
    atomic_write_bytes(destination, flatbuffer)
    logger.info("compression event=converted_to_tflite source=%s bytes=%d", source.name, len(flatbuffer))
    return destination
