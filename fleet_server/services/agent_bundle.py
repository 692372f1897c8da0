"""Uploads of agent releases: a wheel of the ``edgefleet`` distribution (``agent.selfupdate.bundle``).

An agent bundle is uploaded like a model (``POST /api/v1/models``, usually as
``edgefleet-agent``), released and deployed with the same signed directives and
rollouts; its one variant has runtime ``agent``, so only devices installed in
A/B slots (which report that runtime) accept it. It has no tensors; the agent
version is in the wheel (and its file name, which the registry keeps).
"""

from pathlib import Path

from agent.errors import InvalidBundleError
from agent.protocol import Runtime
from agent.selfupdate.bundle import inspect_wheel
from fleet_server.errors import InvalidModelFileError
from fleet_server.services.model_inspection import ModelInfo

AGENT_BUNDLE_FORMAT = "wheel"


def inspect_agent_bundle(path: Path) -> ModelInfo:
    """``ModelInfo`` of an agent wheel; ``InvalidModelFileError`` for any other zip archive."""
    try:
        inspect_wheel(path)
    except InvalidBundleError as exc:
        raise InvalidModelFileError(
            f"the uploaded file is a zip archive, not an ONNX or TFLite model, nor an EdgeFleet agent wheel: {exc}"
        ) from None
    return ModelInfo(AGENT_BUNDLE_FORMAT, Runtime.AGENT, (), ())
