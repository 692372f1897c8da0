"""The compression pipeline's errors, in one hierarchy under ``CompressionError``.

Each carries a ``hint`` (what the operator can do about it) the CLI prints
below the one-line message, like the fleet server's errors.
"""

from agent.protocol.errors import EdgeFleetError


class CompressionError(EdgeFleetError):
    """Base class of the compression pipeline's errors."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class InvalidModelError(CompressionError):
    """The source is not a loadable ONNX, TFLite or Keras model."""

    hint = "pass an .onnx or .tflite file, or a .keras/.h5 file or SavedModel directory (needs the 'tf' extra)"


class UnsupportedModelError(CompressionError):
    """The model loads as a file but the runtime cannot run it (unsupported ops, types or shapes)."""

    hint = "export the model with operators the device runtime supports (onnxruntime CPU or LiteRT builtins)"


class DataError(CompressionError):
    """Calibration or validation data cannot be read or does not fit the model's inputs."""

    hint = ("give .npz (arrays named after the model inputs, labels under 'labels'), .npy (one input) or CSV "
            "(numeric columns, optional 'label' column) with one row per sample")


class UnknownVariantError(CompressionError):
    """A requested variant name is not one the pipeline builds for this kind of source."""

    hint = "run 'edgefleet model variants' to list the variant names"


class TensorFlowUnavailableError(CompressionError):
    """A Keras model or SavedModel needs TensorFlow, which is not installed."""

    hint = "install the TensorFlow extra: pip install 'edgefleet[tf]'"


class VariantBuildError(CompressionError):
    """A converter or quantizer failed on one variant (recorded in the report, the other variants go on)."""


class CompressionCancelledError(CompressionError):
    """The run was cancelled (the server is shutting down)."""


def short_message(exc: BaseException, limit: int = 300) -> str:
    """One line of a third-party exception's text, capped (converters can print pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
