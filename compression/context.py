"""What every variant builder receives: the source, the calibration data, settings, a work directory."""

import threading
from dataclasses import dataclass, field
from pathlib import Path

from agent.protocol.metadata import TensorSpec
from compression.data import DataSet
from compression.errors import CompressionCancelledError
from compression.host import HostInfo
from compression.settings import CompressionSettings
from compression.source import SourceModel


@dataclass
class BuildContext:
    source: SourceModel
    calibration: DataSet
    settings: CompressionSettings
    workdir: Path
    host: HostInfo
    cancel: threading.Event = field(default_factory=threading.Event)

    def check_cancelled(self) -> None:
        if self.cancel.is_set():
            raise CompressionCancelledError("compression cancelled")


def batch_size(inputs: tuple[TensorSpec, ...], preferred: int) -> tuple[int, bool]:
    """Rows per run: ``preferred`` when every input has a dynamic batch dimension, else the fixed one."""
    fixed = {spec.shape[0] for spec in inputs if spec.shape and spec.shape[0] is not None}
    if not fixed:
        return preferred, False
    return max(1, min(fixed)), True
