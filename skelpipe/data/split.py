"""A packed split as the learning side reads it: ``load_split`` (in one go, or memory-mapped
for splits larger than RAM), the pack's attributes decoded, and ``degrade`` (the fixed test
occlusion, as evaluation applies it). The file's layout is in ``skelpipe.data.pack``."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.skeleton.noise import occlude, test_seeds

FILE = "data.h5"
SPLITS = ("train", "test")


@dataclass
class Split:
    lq: np.ndarray          # float32 (N, C_L, T, V_L, M)
    hq: np.ndarray          # float32 (N, C_H, T, V_H, M)
    has_hq: np.ndarray      # bool (N,)
    label: np.ndarray       # int64 (N,)
    ids: list
    attrs: dict
    length: np.ndarray = field(default=None)        # int32 (N,)
    hq_available: np.ndarray = field(default=None)  # bool (N,)
    name: str = "train"     # the split's name: with the ids, it selects the occlusion stream

    def __len__(self):
        return len(self.label)


def data_file(pack_dir) -> Path:
    p = Path(pack_dir)
    return p if p.suffix == ".h5" else p / FILE


def load_split(pack_dir, split: str, mmap: bool = False) -> Split:
    """One split of a pack as float32 numpy arrays, read in one go.

    ``mmap=True``: ``lq`` and ``hq`` are read-only memory maps of the file instead (for splits
    larger than RAM), in the stored dtype (float32, or float16 when packed so).
    """
    path = data_file(pack_dir)
    if split not in SPLITS:
        raise SkelpipeError(f"{path}: unknown split {split!r}; known: {', '.join(SPLITS)}")
    if not path.exists():
        raise SkelpipeError(f"{path}: no packed data (run the pack stage first)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SkelpipeError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        if split not in f:
            raise SkelpipeError(f"{path}: no {split!r} group")
        g = f[split]
        attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
        attrs.update({k: decode_attr(v) for k, v in g.attrs.items()})
        return Split(
            lq=_memmap(path, g["lq"]) if mmap else g["lq"][()].astype(np.float32, copy=False),
            hq=_memmap(path, g["hq"]) if mmap else g["hq"][()].astype(np.float32, copy=False),
            has_hq=g["has_hq"][()].astype(bool),
            label=g["label"][()].astype(np.int64),
            ids=[s.decode() if isinstance(s, bytes) else s for s in g["ids"][()]],
            attrs=attrs,
            length=g["length"][()],
            hq_available=g["hq_available"][()].astype(bool),
            name=split,
        )


def _memmap(path: Path, ds) -> np.ndarray:
    """A read-only memory map of a contiguous dataset (a plain read when it has no storage yet)."""
    offset = ds.id.get_offset()
    if offset is None or ds.size == 0:
        return ds[()]
    return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)


def decode_attr(v):
    """An HDF5 attribute of a pack as Python: JSON lists and dicts decoded, numpy scalars unboxed."""
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def degrade(pack_dir, split: str, op: float, mode: str = "track", seed: int | None = None) -> np.ndarray:
    """The occluded LQ tensors of a split, one fixed draw per instance (seeds
    ``noise.test_seeds``) — exactly what evaluation applies on the fly. ``seed`` defaults to
    the pack's ``test_seed``.

    Degradation is kept virtual (not a cached stage): the mask is a pure function of (seed,
    split, sample id) made on the device in microseconds, whereas a stored copy per (op, mode,
    seed) would repeat the LQ tensors (GBs for NTU) and could not serve fresh per-epoch draws.
    """

    sp = load_split(pack_dir, split)
    seed = sp.attrs.get("test_seed", 0) if seed is None else seed
    return occlude(sp.lq, op, test_seeds(seed, sp.ids, sp.name), mode)
