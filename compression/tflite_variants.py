"""TFLite variants, quantized from a float ``.tflite`` with ai-edge-quantizer
(no TensorFlow needed; a Keras source was converted to that float file first).

- ``tflite-fp32``: the float conversion itself (only for Keras/SavedModel sources).
- ``tflite-fp16``: float16 weights (``FLOAT_CASTING`` on fully connected and
  convolution weights), float32 compute.
- ``tflite-int8``: full integer (weights and activations int8), calibrated on
  the calibration data, with float32 graph inputs and outputs so callers do
  not change (a QUANTIZE op in, a DEQUANTIZE op out).
- ``tflite-int8-dynamic``: int8 weights, activations quantized on the fly.
"""

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

from agent.storage import atomic_write_bytes
from compression.context import BuildContext, batch_size
from compression.errors import VariantBuildError, short_message

logger = logging.getLogger(__name__)

FLOAT_OPS = ("INPUT", "OUTPUT", "SOFTMAX")  # kept float32 in the full integer variant
FP16_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP")


def _quantizer() -> Any:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from ai_edge_quantizer import quantizer
    except ImportError:
        raise VariantBuildError("ai-edge-quantizer is not installed (pip install 'edgefleet[compress]')") from None
    return quantizer


def build_fp32(ctx: BuildContext, out: Path) -> None:
    shutil.copyfile(ctx.source.path, out)


def build_fp16(ctx: BuildContext, out: Path) -> None:
    from ai_edge_quantizer import algorithm_manager, qtyping

    quantizer = _quantizer().Quantizer(str(ctx.source.path))
    for op in FP16_OPS:
        quantizer.add_weight_only_config(".*", qtyping.TFLOperationName(op), 16,
                                         algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    _quantize(ctx, quantizer, None, out, "float16")


def build_int8(ctx: BuildContext, out: Path) -> None:
    from ai_edge_quantizer import recipe

    plan = recipe.static_wi8_ai8()
    # Graph inputs and outputs stay float32 (the quantizer inserts QUANTIZE/DEQUANTIZE at the edges), and so
    # does a softmax: int8 probabilities (steps of 1/256) turn near-ties into top-1 flips for nothing.
    plan += [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"} for op in FLOAT_OPS]
    quantizer = _quantizer().Quantizer(str(ctx.source.path))
    quantizer.load_quantization_recipe(plan)
    _quantize(ctx, quantizer, _calibrate(ctx, quantizer), out, "full integer")


def build_int8_dynamic(ctx: BuildContext, out: Path) -> None:
    from ai_edge_quantizer import recipe

    quantizer = _quantizer().Quantizer(str(ctx.source.path))
    quantizer.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    _quantize(ctx, quantizer, None, out, "dynamic range")


def _calibrate(ctx: BuildContext, quantizer: Any) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(ctx.source.path))
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise VariantBuildError("full integer quantization needs a model with a serving signature")
    key = next(iter(signatures))
    tensor_by_input = _signature_names(interpreter, key, ctx)
    size, fixed = batch_size(ctx.source.inputs, 1)
    samples = []
    for start in range(0, ctx.calibration.rows - (size - 1 if fixed else 0), size):
        samples.append({tensor_by_input[name]: array[start:start + size]
                        for name, array in ctx.calibration.inputs.items()})
    ctx.check_cancelled()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # tqdm progress bars
            return quantizer.calibrate({key: samples})
    except Exception as exc:  # ValueError/RuntimeError from the calibrator
        raise VariantBuildError(f"calibration failed: {short_message(exc)}") from None


def _signature_names(interpreter: Any, key: str, ctx: BuildContext) -> dict[str, str]:
    """Model input tensor name -> the signature's input name (calibration feeds by signature name)."""
    runner_inputs = interpreter.get_signature_runner(key).get_input_details()
    by_index = {detail["index"]: name for name, detail in runner_inputs.items()}
    mapping = {}
    for detail in interpreter.get_input_details():
        if detail["index"] not in by_index:
            raise VariantBuildError(f"input {detail['name']!r} is not part of the serving signature")
        mapping[str(detail["name"])] = by_index[detail["index"]]
    missing = set(ctx.calibration.inputs) - set(mapping)
    if missing:
        raise VariantBuildError(f"inputs {sorted(missing)} are not in the serving signature")
    return mapping


def _quantize(ctx: BuildContext, quantizer: Any, calibration: Any, out: Path, what: str) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = quantizer.quantize(calibration, enable_progress_report=False)
    except Exception as exc:  # the quantizer raises ValueError/RuntimeError on unsupported graphs
        raise VariantBuildError(f"{what} quantization failed: {short_message(exc)}") from None
    if not result.quantized_model:
        raise VariantBuildError(f"{what} quantization produced an empty model")
    model = restore_io_names(ctx.source.path.read_bytes(), bytes(result.quantized_model))
    atomic_write_bytes(out, model)
    logger.info("compression event=tflite_quantized kind=%s bytes=%d", what, len(model))



def restore_io_names(original: bytes, quantized: bytes) -> bytes:
    """Give the quantized graph's inputs and outputs the original's tensor names.

    The quantizer names the float output it inserts ``<name>_dequant``; callers (and the release's
    output schema) address outputs by name, so every variant must keep the original names.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    source = flatbuffer_utils.convert_bytearray_to_object(bytearray(original))
    target = flatbuffer_utils.convert_bytearray_to_object(bytearray(quantized))
    if len(source.subgraphs) != len(target.subgraphs):
        raise VariantBuildError("the quantized model has a different number of subgraphs")
    changed = False
    for before, after in zip(source.subgraphs, target.subgraphs, strict=True):
        pairs = list(zip(before.inputs, after.inputs, strict=True)) + list(zip(before.outputs, after.outputs,
                                                                             strict=True))
        for old_index, new_index in pairs:
            name = before.tensors[old_index].name
            if after.tensors[new_index].name == name:
                continue
            for tensor in after.tensors:
                if tensor.name == name:
                    tensor.name = name + b"/quantized"
            after.tensors[new_index].name = name
            changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(target)) if changed else quantized
