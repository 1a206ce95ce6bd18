"""A packed split as the learning side reads it: ``load_split`` (in one go, or row by row from
the file for splits larger than memory: ``DiskRows``), the pack's attributes decoded, and
``degrade`` (the fixed test occlusion, as evaluation applies it). The file's layout is in
``skelpipe.data.pack``."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_CLASSES
from skelpipe.skeleton.noise import occlude, test_seeds

FILE = "data.h5"
SPLITS = ("train", "test")
ROWS = ("auto", "memory", "disk")
ARRAYS = ("lq", "hq", "has_hq", "label", "ids", "length", "hq_available")  # what each split of a pack holds
# rows="auto" reads a split into memory when its skeletons take less than this share of the RAM
MEMORY_SHARE = 0.25


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


def load_split(pack_dir, split: str, rows: str = "memory") -> Split:
    """One split of a pack: ``lq`` and ``hq`` as float32 numpy arrays read in one go
    (``rows="memory"``), or as ``DiskRows`` read from the file batch by batch (``"disk"``:
    for splits larger than memory; NTU-60's 40,091 training instances take 7.2 GB of HQ and
    4.9 GB of COCO-17 LQ in float32, more than a laptop holds beside a network). ``"auto"``
    reads into memory what takes less than a quarter of the RAM.
    """
    path = data_file(pack_dir)
    if split not in SPLITS:
        raise SkelpipeError(f"{path}: unknown split {split!r}; known: {', '.join(SPLITS)}")
    if rows not in ROWS:
        raise ValueError(f"rows must be one of {ROWS}, got {rows!r}")
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
        _check(path, split, g, attrs)
        if rows == "auto":
            in_memory = 4 * (g["lq"].size + g["hq"].size)  # float32
            rows = "disk" if in_memory > MEMORY_SHARE * physical_memory() else "memory"

        def read(ds):
            if rows == "disk" and ds.id.get_offset() is not None:
                return DiskRows(path, ds.id.get_offset(), ds.shape, ds.dtype)
            return ds[()].astype(np.float32, copy=False)

        return Split(
            lq=read(g["lq"]), hq=read(g["hq"]),
            has_hq=g["has_hq"][()].astype(bool),
            label=g["label"][()].astype(np.int64),
            ids=[s.decode() if isinstance(s, bytes) else s for s in g["ids"][()]],
            attrs=attrs,
            length=g["length"][()],
            hq_available=g["hq_available"][()].astype(bool),
            name=split,
        )


def _check(path, split: str, g, attrs: dict):
    """A split holds every array a pack writes, and labels that are indices of its classes."""
    missing = [k for k in ARRAYS if not isinstance(g.get(k), h5py.Dataset)]
    if missing:
        raise SkelpipeError(f"{path}: the {split} split has no {', '.join(missing)} (not written by the pack stage)")
    classes, labels = attrs.get("num_classes"), g["label"][()]
    if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= MAX_CLASSES:
        raise SkelpipeError(f"{path}: num_classes must be an integer in [1, {MAX_CLASSES}], got {classes!r}")
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= classes):
        raise SkelpipeError(f"{path}: the {split} split holds labels outside [0, {classes}) "
                            f"({labels.min()} to {labels.max()})")


def physical_memory() -> int:
    """Bytes of RAM of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class DiskRows:
    """The rows of a contiguous array of a pack file, read when indexed: what a split larger
    than memory trains from. Indexing (an int, a slice, an index array or tensor) reads those
    rows with ``pread`` and returns them as a float32 tensor. The file's pages stay in the
    kernel's page cache, not in the process (unlike a memory map, whose pages count in its
    resident memory), so the process's memory does not grow with the data."""

    device = torch.device("cpu")

    def __init__(self, path, offset: int, shape, dtype):
        self.path, self.offset, self.shape, self.dtype = str(path), int(offset), tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.nbytes = self.row_bytes * self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice) and index.indices(len(self))[2] == 1:
            start, stop, _ = index.indices(len(self))
            return self._read([(start, max(0, stop - start))])
        if isinstance(index, slice):
            rows = np.arange(*index.indices(len(self)))
        else:
            rows = np.asarray(index.cpu() if torch.is_tensor(index) else index)
            rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path}: row index out of range 0..{len(self) - 1}")
        out = self._read([(int(r), 1) for r in rows])
        return out[0] if np.ndim(index) == 0 and not isinstance(index, slice) else out

    def _read(self, runs) -> torch.Tensor:
        """Read runs (first row, count) into one float32 tensor, in order."""
        out = np.empty((sum(n for _, n in runs),) + self.shape[1:], self.dtype)
        flat = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as f:
            at = 0
            for first, n in runs:
                size = n * self.row_bytes
                if os.preadv(f.fileno(), [flat[at:at + size]], self.offset + first * self.row_bytes) != size:
                    raise SkelpipeError(f"{self.path}: file ends inside the rows it should hold (truncated?)")
                at += size
        return torch.from_numpy(out).float()


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


def degrade(pack_dir, split: str, op: float, mode: str = "track", seed: int | None = None,
            channels: str = "all", block_len: int = 15) -> np.ndarray:
    """The occluded LQ tensors of a split, one fixed draw per instance (seeds
    ``noise.test_seeds``) — exactly what evaluation applies on the fly (``mode``,
    ``channels`` and ``block_len`` as a student's ``occlusion_*`` settings). ``seed`` defaults
    to the pack's ``test_seed``.

    Degradation is kept virtual (not a cached stage): the mask is a pure function of (seed,
    split, sample id) made on the device in microseconds, whereas a stored copy per (op, mode,
    seed) would repeat the LQ tensors (GBs for NTU) and could not serve fresh per-epoch draws.
    """

    sp = load_split(pack_dir, split)
    seed = sp.attrs.get("test_seed", 0) if seed is None else seed
    return occlude(sp.lq, op, test_seeds(seed, sp.ids, sp.name), mode, block_len, channels)
