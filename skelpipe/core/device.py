"""``--device auto|cpu|cuda[:i]`` → a ``torch.device``, with a clear error when unusable; whether
data fit on it."""

import numpy as np
import torch

from skelpipe.core.errors import SkelpipeError


def resolve(device: str = "auto"):
    """Return the ``torch.device`` named by ``device``.

    ``auto`` picks ``cuda`` when a GPU is usable, else ``cpu``. ``cuda`` / ``cuda:i`` fail with a
    one-line ``SkelpipeError`` when CUDA is unavailable or the index does not exist.
    """
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SkelpipeError(f"--device {device}: CUDA is not available here (use --device cpu or auto)")
        index = name.partition(":")[2]
        if index:
            if not index.isdigit():
                raise SkelpipeError(f"--device {device}: expected cuda:<index>, e.g. cuda:0")
            if int(index) >= torch.cuda.device_count():
                raise SkelpipeError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
            return torch.device("cuda", int(index))
        return torch.device("cuda", torch.cuda.current_device())
    raise SkelpipeError(f"--device {device}: expected auto, cpu, cuda or cuda:<index>")


def fits(device, *arrays) -> bool:
    """Whether the arrays fit comfortably (half the free memory) on ``device``."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return sum(a.nbytes for a in arrays) < free // 2


def holding(array, device, on_device: bool) -> torch.Tensor:
    """A numpy array as a tensor on ``device`` (``on_device``: it fits there) or in host memory."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t.to(device) if on_device else t
