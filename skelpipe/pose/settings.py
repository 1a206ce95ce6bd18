"""The extraction settings' defaults and ranges, for ``skelpipe extract`` and ``predict``, a
pipeline's ``[extract]`` and ``pose.extract.extract_to_work`` alike (``ExtractConfig`` carries
them); and the key of the weights an extraction runs (``checkpoint_key``), for the pipeline's
cache and ``skelpipe extract``'s own."""

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from skelpipe.core.fingerprint import content_key
from skelpipe.pose import blazepose

DEFAULT_LONG_EDGE = 641   # pixels of a frame's long edge on the network's input: OpenPifPaf's default
DEFAULT_MAX_PEOPLE = 2    # tracked people kept per video: NTU's actions have one or two
DEFAULT_FPS = 30.0        # a frame folder's frame rate (a video file carries its own)
DEFAULT_BATCH = {"cuda": 16, "cpu": 4}  # frames per network batch, by device type
BATCH_TEXT = f"{DEFAULT_BATCH['cuda']} on CUDA, {DEFAULT_BATCH['cpu']} on CPU"

# The ranges: a long edge sizes every frame's fields, workers are processes, a batch is frames in memory.
LONG_EDGE = (32, 8192)
DECODER_WORKERS = (0, 64)
BATCH_SIZE = (1, 1024)


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract poses: the estimator and its weights, the device, and what is kept. ``None``
    (batch size, decoder workers) takes the default for the device and the machine."""
    backbone: str | None = None  # predict: None runs the estimator the student was trained on
    checkpoint: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    long_edge: int | None = DEFAULT_LONG_EDGE
    max_people: int = DEFAULT_MAX_PEOPLE
    decoder_workers: int | None = None
    decoder_config: dict | None = None  # OpenPifPaf decoder settings (pose.decoding.check_config)
    fps: float = DEFAULT_FPS

    def resolved(self, device) -> "ExtractConfig":
        """This config with the batch size and decoder workers left to the defaults filled in for
        a ``torch.device`` and this machine."""
        batch, workers = self.batch_size, self.decoder_workers
        return dataclasses.replace(self, batch_size=default_batch_size(device) if batch is None else batch,
                                   decoder_workers=default_decoder_workers() if workers is None else workers)


def default_batch_size(device) -> int:
    """Frames per network batch on a ``torch.device``."""
    return DEFAULT_BATCH["cuda" if device.type == "cuda" else "cpu"]


def default_decoder_workers() -> int:
    """Processes decoding fields: the CPU cores but the network's, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def checkpoint_key(backbone: str, checkpoint: str | None, memo: Path | None = None) -> str:
    """The weights an extraction runs, for its key: BlazePose's model files, or a local checkpoint
    by its content (a file replaced at the same path changes it; ``memo``: ``content_key``'s); a
    checkpoint that is not a file (or none) as given."""
    if blazepose.is_blazepose(backbone):
        return blazepose.checkpoint_key(memo)
    if not checkpoint or not Path(checkpoint).is_file():
        return checkpoint or ""
    return "sha256:" + content_key(checkpoint, memo)
