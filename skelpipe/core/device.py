"""``--device auto|cpu|cuda[:i]`` → a ``torch.device``, with a clear error when unusable."""

from skelpipe.core.errors import SkelpipeError


def resolve(device: str = "auto"):
    """Return the ``torch.device`` named by ``device``.

    ``auto`` picks ``cuda`` when a GPU is usable, else ``cpu``. ``cuda`` / ``cuda:i`` fail with a
    one-line ``SkelpipeError`` when CUDA is unavailable or the index does not exist.
    """
    import torch

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
