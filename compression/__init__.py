"""Model compression with an accuracy gate: ONNX (always) and TFLite variants,
evaluated against the original on this CPU with the device runtimes, plus the
reference profile for drift detection.

    from compression import CompressionSettings, compress_to_directory
    result = compress_to_directory(Path("model.onnx"), Path("calibration.npz"), Path("out"))
    print(format_table(result.report))
"""

from compression.data import DataSet, load_dataset
from compression.errors import (
    CompressionCancelledError,
    CompressionError,
    DataError,
    InvalidModelError,
    TensorFlowUnavailableError,
    UnknownVariantError,
    UnsupportedModelError,
    VariantBuildError,
)
from compression.pipeline import CompressionResult, compress_model, compress_to_directory
from compression.report import format_table, table_rows
from compression.settings import CompressionSettings, GateThresholds, InvalidSettingsError
from compression.variants import VARIANTS, VariantSpec

__all__ = [
    "VARIANTS", "CompressionCancelledError", "CompressionError", "CompressionResult", "CompressionSettings",
    "DataError", "DataSet", "GateThresholds", "InvalidModelError", "InvalidSettingsError",
    "TensorFlowUnavailableError", "UnknownVariantError", "UnsupportedModelError", "VariantBuildError",
    "VariantSpec", "compress_model", "compress_to_directory", "format_table", "load_dataset", "table_rows",
]
