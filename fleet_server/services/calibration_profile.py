"""A reference profile from the calibration data uploaded with a model, for drift detection without compression.

Compression builds the profile of the releases it produces; a model version
uploaded with calibration data gets one straight away, built the same way
(``compression.data.load_dataset`` reads and fits the data, the model runs it
with the device runtime through ``compression.evaluate.run_all``,
``agent.binning.build_profile`` bins it), stored as a content-addressed
artifact like compression's and named by the version's releases when no
compression job supplies one.
"""

import hashlib
import logging
from pathlib import Path

from agent.binning import build_profile
from agent.protocol.metadata import Runtime, TensorSpec
from agent.protocol.profile import ReferenceProfile
from compression.data import load_dataset
from compression.errors import CompressionError
from compression.evaluate import find_target, run_all
from compression.source import load_checked
from fleet_server.errors import InvalidCalibrationError
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.services.model_inspection import ModelInfo

logger = logging.getLogger(__name__)

MAX_PROFILE_ROWS = 100_000  # deciles are stable long before; bounds the server's CPU time per upload


def build_reference_profile(model: Path, info: ModelInfo, calibration: Path) -> ReferenceProfile:
    """The profile of ``model`` on ``calibration``; ``InvalidCalibrationError`` names what does not fit."""
    if info.runtime not in (Runtime.ONNXRUNTIME, Runtime.TFLITE):
        raise InvalidCalibrationError(f"calibration data applies to ONNX and TFLite models, not {info.runtime.value}")
    inputs: tuple[TensorSpec, ...] = tuple(info.inputs)
    try:
        data = load_dataset(calibration, inputs, "calibration data").head(MAX_PROFILE_ROWS)
        outputs = run_all(load_checked(model, info.runtime), inputs, data)
    except CompressionError as exc:
        raise InvalidCalibrationError(str(exc)) from None
    if not outputs:
        raise InvalidCalibrationError("the model returned no outputs on the calibration data")
    target = find_target(outputs)
    first = inputs[0].name
    try:
        return build_profile(data.inputs[first], target.predictions(outputs), first, target.classes)
    except ValueError as exc:  # predictions that do not line up with the rows
        raise InvalidCalibrationError(f"cannot build a reference profile from the calibration data: {exc}") from None


def store_profile(store: ArtifactStore, profile: ReferenceProfile) -> str:
    """Store the canonical profile document as an artifact; its sha256 (``profile.sha256()``)."""
    document = profile.to_bytes()
    sha256 = hashlib.sha256(document).hexdigest()
    staging = store.new_staging_file()
    try:
        staging.write_bytes(document)
        store.commit(staging, sha256)
    finally:
        staging.unlink(missing_ok=True)
    logger.info("server event=calibration_profile_stored sha256=%s features=%d samples=%d", sha256,
                len(profile.features), profile.samples)
    return sha256
