"""ONNX variants: graph-optimized fp32, fp16 weights, dynamic and static (QDQ) int8.

- ``onnx-fp32``: onnxruntime's offline graph optimization at the *basic*
  level (constant folding, redundant nodes): standard ONNX operators only, so
  the file stays portable across CPUs and onnxruntime versions (the extended
  and layout levels emit hardware-specific contrib operators).
- ``onnx-fp16``: float32 weights stored as float16, each followed by a
  ``Cast`` back to float32. Inputs, outputs and arithmetic stay float32: half
  the size on disk and on the wire, and no dependence on fp16 kernels, which
  CPU builds of onnxruntime mostly lack.
- ``onnx-int8-dynamic``: ``quantize_dynamic`` on MatMul/Gemm-like operators
  only (dynamic Conv becomes ConvInteger: slower than fp32 and harmful to
  depthwise convolutions).
- ``onnx-int8-static``: ``quant_pre_process`` then ``quantize_static`` in QDQ
  format, per channel, U8S8, calibrated with MinMax, Percentile or Entropy.
"""

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compression.context import BuildContext, batch_size
from compression.errors import VariantBuildError, short_message

logger = logging.getLogger(__name__)

FP16_MAX = float(np.finfo(np.float16).max)
FP16_MIN_ELEMENTS = 16  # smaller tensors (scales, epsilons) stay float32: nothing to gain
DYNAMIC_OP_TYPES = ["MatMul", "Gemm", "Attention", "LSTM", "Gather", "EmbedLayerNormalization"]
CALIBRATION_BATCH = 32


def build_fp32(ctx: BuildContext, out: Path) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    try:
        onnxruntime.InferenceSession(str(ctx.source.path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind exceptions
        raise VariantBuildError(f"onnxruntime graph optimization failed: {short_message(exc)}") from None


def build_fp16(ctx: BuildContext, out: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(ctx.source.path))
    graph = model.graph
    graph_inputs = {value.name for value in graph.input}
    casts = []
    converted = 0
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or tensor.name in graph_inputs:
            continue
        values = numpy_helper.to_array(tensor)
        if values.size < FP16_MIN_ELEMENTS or np.abs(values).max(initial=0.0) > FP16_MAX:
            continue
        name = tensor.name
        half = numpy_helper.from_array(values.astype(np.float16), f"{name}__fp16")
        tensor.CopyFrom(half)
        casts.append(helper.make_node("Cast", [half.name], [name], name=f"{name}__to_fp32", to=TensorProto.FLOAT))
        converted += 1
    if not converted:
        raise VariantBuildError("the model has no float32 weights to store as float16")
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError
        raise VariantBuildError(f"the float16 model does not validate: {short_message(exc)}") from None
    onnx.save(model, str(out))
    logger.info("compression event=fp16_weights converted=%d", converted)


def preprocessed(ctx: BuildContext) -> Path:
    """The model after onnxruntime's quantization pre-processing (shape inference, optimization); cached."""
    target = ctx.workdir / "quant-preprocessed.onnx"
    if target.exists():
        return target
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(ctx.source.path), str(target))
    except Exception as exc:  # symbolic shape inference gives up on some graphs: retry without it
        logger.info("compression event=preprocess_retry reason=%s", short_message(exc))
        try:
            quant_pre_process(str(ctx.source.path), str(target), skip_symbolic_shape=True)
        except Exception as retry_exc:
            raise VariantBuildError(f"quantization pre-processing failed: {short_message(retry_exc)}") from None
    return target


def build_int8_dynamic(ctx: BuildContext, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(preprocessed(ctx)), str(out), weight_type=QuantType.QInt8,
                         op_types_to_quantize=DYNAMIC_OP_TYPES)
    except VariantBuildError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises ValueError, RuntimeError, ...
        raise VariantBuildError(f"dynamic quantization failed: {short_message(exc)}") from None
    _require_quantized(out, ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "QAttention",
                             "DequantizeLinear", "QGemm", "ConvInteger"), "dynamic")


def build_int8_static(ctx: BuildContext, out: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[ctx.settings.calibration_method]
    source = preprocessed(ctx)
    extra = {"QDQDisableWeightAdjustForInt32Bias": _has_non_vector_bias(source)}
    reader = _CalibrationReader(ctx)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, extra_options=extra)
    except VariantBuildError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises ValueError, RuntimeError, ...
        raise VariantBuildError(f"static quantization failed: {short_message(exc)}") from None
    _require_quantized(out, ("QuantizeLinear",), "static")


def _has_non_vector_bias(path: Path) -> bool:
    """onnxruntime 1.2x's bias-scale adjustment breaks on [1, n] biases (scikit-learn exports them)."""
    import onnx

    model = onnx.load(str(path))
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Gemm", "Conv", "ConvTranspose") and len(node.input) > 2:
            shape = shapes.get(node.input[2])
            if shape is not None and len(shape) != 1:
                return True
    return False


def _require_quantized(path: Path, op_types: tuple[str, ...], what: str) -> None:
    """Check something was quantized; drop the shape annotations pre-processing added (bytes, no function)."""
    import onnx

    model = onnx.load(str(path))
    if not any(node.op_type in op_types for node in model.graph.node):
        raise VariantBuildError(f"{what} quantization found no operator to quantize in this model")
    if len(model.graph.value_info):
        del model.graph.value_info[:]
        onnx.save(model, str(path))


class _CalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over the calibration rows."""

    def __init__(self, ctx: BuildContext) -> None:
        self._batches = _batches(ctx)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # not used by quantize_static; part of the protocol
        raise NotImplementedError


def _batches(ctx: BuildContext) -> Iterator[dict[str, np.ndarray]]:
    """Equal-sized batches (the histogram calibrators stack them) that together cover every row."""
    data = ctx.calibration
    size, fixed = batch_size(ctx.source.inputs, CALIBRATION_BATCH)
    if not fixed:
        size = max(d for d in range(1, min(size, data.rows) + 1) if data.rows % d == 0)
    for start in range(0, data.rows - size + 1, size):
        ctx.check_cancelled()
        yield {name: array[start:start + size] for name, array in data.inputs.items()}
