"""The variants the pipeline knows: name, runtime, precision, which sources
they apply to, and the function that builds each one.

Preference order in a release: int8 variants first (smallest), then fp16,
then fp32; within a tier the faster one (latency p50 measured here) first.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.protocol.metadata import Runtime
from compression import onnx_variants, tflite_variants
from compression.context import BuildContext
from compression.errors import UnknownVariantError
from compression.source import SourceKind, SourceModel

Builder = Callable[[BuildContext, Path], None]
TIER = {"int8": 0, "fp16": 1, "fp32": 2}


@dataclass(frozen=True)
class VariantSpec:
    name: str
    runtime: Runtime
    precision: str  # "int8", "fp16" or "fp32"
    build: Builder
    kinds: tuple[SourceKind, ...]  # source kinds it is built from
    origins: tuple[SourceKind, ...] = (SourceKind.ONNX, SourceKind.TFLITE, SourceKind.KERAS)
    u8s8: bool = False  # onnxruntime U8S8 integer kernels (see compression.host)
    description: str = ""

    @property
    def suffix(self) -> str:
        return "onnx" if self.runtime is Runtime.ONNXRUNTIME else "tflite"

    @property
    def file_name(self) -> str:
        return f"{self.name}.{self.suffix}"

    @property
    def tier(self) -> int:
        return TIER[self.precision]


VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("onnx-fp32", Runtime.ONNXRUNTIME, "fp32", onnx_variants.build_fp32, (SourceKind.ONNX,),
                description="onnxruntime offline graph optimization (basic level), same numerics"),
    VariantSpec("onnx-fp16", Runtime.ONNXRUNTIME, "fp16", onnx_variants.build_fp16, (SourceKind.ONNX,),
                description="float16 weights, float32 inputs, outputs and arithmetic"),
    VariantSpec("onnx-int8-dynamic", Runtime.ONNXRUNTIME, "int8", onnx_variants.build_int8_dynamic,
                (SourceKind.ONNX,), u8s8=True, description="quantize_dynamic on MatMul/Gemm-like operators"),
    VariantSpec("onnx-int8-static", Runtime.ONNXRUNTIME, "int8", onnx_variants.build_int8_static,
                (SourceKind.ONNX,), u8s8=True, description="QDQ, per channel, calibrated (MinMax/Percentile/Entropy)"),
    VariantSpec("tflite-fp32", Runtime.TFLITE, "fp32", tflite_variants.build_fp32, (SourceKind.TFLITE,),
                origins=(SourceKind.KERAS,), description="TensorFlow's float conversion of the Keras model"),
    VariantSpec("tflite-fp16", Runtime.TFLITE, "fp16", tflite_variants.build_fp16, (SourceKind.TFLITE,),
                description="float16 weights (ai-edge-quantizer float casting)"),
    VariantSpec("tflite-int8", Runtime.TFLITE, "int8", tflite_variants.build_int8, (SourceKind.TFLITE,),
                description="full integer, calibrated, float32 inputs/outputs (ai-edge-quantizer)"),
    VariantSpec("tflite-int8-dynamic", Runtime.TFLITE, "int8", tflite_variants.build_int8_dynamic,
                (SourceKind.TFLITE,), description="int8 weights, dynamic-range activations (ai-edge-quantizer)"),
)
BY_NAME = {spec.name: spec for spec in VARIANTS}


def applicable(source: SourceModel) -> tuple[VariantSpec, ...]:
    return tuple(spec for spec in VARIANTS if source.kind in spec.kinds and source.origin in spec.origins)


def select_variants(source: SourceModel, requested: tuple[str, ...] | None) -> tuple[VariantSpec, ...]:
    """The variants to build: all applicable ones, or the requested names (each must apply)."""
    options = applicable(source)
    if requested is None:
        return options
    unknown = [name for name in requested if name not in BY_NAME]
    if unknown:
        raise UnknownVariantError(f"unknown variants {unknown}; known: {', '.join(BY_NAME)}")
    names = {spec.name for spec in options}
    wrong = [name for name in requested if name not in names]
    if wrong:
        raise UnknownVariantError(f"variants {wrong} do not apply to a {source.origin} model; "
                                  f"this one supports {', '.join(sorted(names)) or 'none'}")
    return tuple(spec for spec in options if spec.name in requested)


def variant_names(model_format: str) -> tuple[str, ...]:
    """The variants a stored ``onnx`` or ``tflite`` model file can be compressed to."""
    kind = SourceKind(model_format)
    return tuple(spec.name for spec in VARIANTS if kind in spec.kinds and kind in spec.origins)


TOOLCHAIN = {"onnx": ("onnx", "onnxruntime.quantization", "sympy", "zstandard"),
             "tflite": ("ai_edge_litert", "ai_edge_quantizer", "zstandard")}


def missing_toolchain(model_format: str) -> list[str]:
    """Modules the variants of ``model_format`` need that are not installed (the ``compress`` extra has them)."""
    import importlib.util

    missing = []
    for module in TOOLCHAIN[SourceKind(model_format).value]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing
