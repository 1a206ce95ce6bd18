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


def native_bf16(device) -> bool:
    """Whether bf16 autocast is fast on ``device``: any CUDA GPU, or a CPU whose matrix units take
    bf16 (AMX or AVX512-BF16; oneDNN then runs convolutions and matmuls in bf16). Elsewhere bf16
    would be emulated, slower than fp32, so ``amp`` leaves such a CPU in fp32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def fits(device, *arrays) -> bool:
    """Whether the arrays fit comfortably (half the free memory) on ``device``."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return sum(a.nbytes for a in arrays) < free // 2


def holding(array, device, on_device: bool, slice_rows: int = 256):
    """A numpy array as a tensor on ``device`` (``on_device``: it fits there) or in host memory.

    An array read from disk on demand (``data.split.DiskRows``: any indexable with ``shape`` and
    ``dtype`` that is not numpy) stays on disk, or is copied to the device ``slice_rows`` rows at
    a time, never whole in host memory.
    """
    if isinstance(array, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(array))
        return t.to(device) if on_device else t
    if not on_device or device.type == "cpu":
        return array
    out = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype, device=device)
    for start in range(0, len(array), slice_rows):
        out[start:start + slice_rows] = array[start:start + slice_rows].to(device)
    return out
