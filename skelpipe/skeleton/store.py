"""The HDF5 pose store: one file per dataset × modality, one group per sample.

Layout of a file::

    /                  attrs: skelpipe_store (format version), complete (True once closed cleanly),
                              layout, joints (JSON list), plus the writer's own attrs
    /samples/<id>/     attrs: the sample's own (label, split, fps, image_size, ...; JSON-encoded
                              when not a plain scalar or string)
        keypoints      (M, T, V, C) float32, chunked per sample, gzip-compressed (level 1: the same poses, the same bytes)
        <name>         any extra array given to ``add`` (e.g. ``score`` (M, T))

Every sample's keypoints are finite: a reader that writes through a ``PoseWriter`` given its
stage's ``Work`` has a NaN or infinite sample reported and skipped (a bad item), any other
writer gets an error naming the sample.

Crash safety: a writer fills ``<path>.partial-<pid>`` and renames it over ``<path>`` only when
it closes cleanly, after setting ``complete``; a reader refuses a file without that mark.
"""

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from skelpipe.core.console import progress as progress_bar
from skelpipe.core.disk import check_free
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_CLASSES
from skelpipe.skeleton import layouts

FORMAT_VERSION = 1


def _encode(value):
    if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return "json:" + json.dumps(value)


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value.startswith("json:"):
        return json.loads(value[5:])
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attrs(h5obj) -> dict:
    return {k: _decode(v) for k, v in h5obj.attrs.items()}


@dataclass
class Sample:
    id: str
    keypoints: np.ndarray
    arrays: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


def _not_finite(name: str, array: np.ndarray) -> str | None:
    """What is wrong with a sample's array that holds NaN or inf (or a number too large for
    float32); None when it is finite or not a float array."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return None
    bad = ~np.isfinite(array)
    axes = "(person, frame, joint, channel) " if name == "keypoint" else "index "
    return f"{int(bad.sum())} {name} value(s) not finite, the first at {axes}{tuple(np.argwhere(bad)[0].tolist())}"


class PoseWriter:
    """Write samples into a new store; the file appears at ``path`` only on a clean close.

    ``with PoseWriter("hq.h5", layout="ntu25", attrs={"source": "kinect_v2"}) as w:
    w.add("S001C001P001R001A001", keypoints, label=0, split="train")``
    """

    def __init__(self, path, layout: str, attrs: dict | None = None, work=None):
        self.path, self.work = Path(path), work   # work: a Work that a bad sample is reported to
        self.layout = layouts.get(layout)
        self.tmp = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_free(self.path.parent, what="a pose store")
        self.file = h5py.File(self.tmp, "w")
        self.file.attrs["skelpipe_store"] = FORMAT_VERSION
        self.file.attrs["complete"] = False
        self.file.attrs["layout"] = self.layout.name
        self.file.attrs["joints"] = _encode(list(self.layout.joints))
        for k, v in (attrs or {}).items():
            self.file.attrs[k] = _encode(v)
        self.samples = self.file.create_group("samples")

    def add(self, sample_id: str, keypoints: np.ndarray, arrays: dict | None = None, **attrs) -> bool:
        """Write one sample; False when it was reported to ``work`` and skipped (non-finite)."""
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
            keypoints = np.asarray(keypoints, dtype=np.float32)
        if keypoints.ndim != 4 or keypoints.shape[2] != self.layout.num_joints:
            raise SkelpipeError(
                f"{self.path}: sample {sample_id}: keypoints must be (M, T, {self.layout.num_joints}, C) "
                f"for layout {self.layout.name}, got {keypoints.shape}")
        if sample_id in self.samples:
            raise SkelpipeError(f"{self.path}: sample {sample_id} written twice")
        problem = _not_finite("keypoint", keypoints) or next(
            (p for name, a in (arrays or {}).items() if (p := _not_finite(name, np.asarray(a)))), None)
        if problem:
            if self.work is None:
                raise SkelpipeError(f"{self.path}: sample {sample_id}: {problem}")
            self.work.report_bad(sample_id, problem)
            return False
        # HDF5 reports a full disk late (when it flushes) and badly (a flood of errors, at worst a
        # crash): check before each sample instead, leaving the reserve free
        size = keypoints.nbytes + sum(np.asarray(a).nbytes for a in (arrays or {}).values())
        check_free(self.path.parent, size, f"sample {sample_id} of a pose store")
        g = self.samples.create_group(sample_id)
        _write_array(g, "keypoints", keypoints)
        for name, arr in (arrays or {}).items():
            _write_array(g, name, np.asarray(arr))
        for k, v in attrs.items():
            g.attrs[k] = _encode(v)
        return True

    def close(self):
        """Mark the file complete and move it into place (atomic rename)."""
        self.file.attrs["complete"] = True
        self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        try:
            with contextlib.suppress(Exception):  # e.g. a full disk fails the close: the file goes anyway
                self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _write_array(group, name, arr):
    # gzip, not lzf: HDF5's lzf filter hashes through an uninitialised table, so the same poses
    # compressed twice can give different (equally valid) bytes; zlib's output is a function of
    # its input, and the same poses give the same file. No creation times are stored either.
    chunks = arr.shape if arr.size else None
    group.create_dataset(name, data=arr, chunks=chunks, compression="gzip" if arr.size else None,
                         compression_opts=1 if arr.size else None, track_times=False)


class PoseStore:
    """A read-only store: lazy per-sample reads by id, iteration with progress."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise SkelpipeError(f"{self.path}: no such pose store")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as e:
            raise SkelpipeError(f"{self.path}: not a readable HDF5 file ({e})") from None
        if "skelpipe_store" not in self.file.attrs:
            self.file.close()
            raise SkelpipeError(f"{self.path}: not a skelpipe pose store")
        if not self.file.attrs.get("complete", False):
            self.file.close()
            raise SkelpipeError(f"{self.path}: incomplete pose store (its writer did not finish)")
        self.attrs = _attrs(self.file)
        problem = ("no layout attribute" if "layout" not in self.attrs
                   else "no samples group" if not isinstance(self.file.get("samples"), h5py.Group) else None)
        if problem:
            self.file.close()
            raise SkelpipeError(f"{self.path}: damaged pose store ({problem})")
        try:
            self.layout = layouts.get(self.attrs["layout"])
        except SkelpipeError as e:
            self.file.close()
            raise SkelpipeError(f"{self.path}: {e}") from None
        self._samples = self.file["samples"]

    def ids(self) -> list[str]:
        return list(self._samples.keys())

    def __len__(self):
        return len(self._samples)

    def __contains__(self, sample_id):
        return sample_id in self._samples

    def _group(self, sample_id: str):
        """A sample's group, with its keypoints array."""
        if sample_id not in self._samples:
            raise SkelpipeError(f"{self.path}: no sample {sample_id!r}")
        g = self._samples[sample_id]
        if not isinstance(g, h5py.Group) or not isinstance(g.get("keypoints"), h5py.Dataset):
            raise SkelpipeError(f"{self.path}: sample {sample_id!r} has no keypoints array")
        return g

    def read(self, sample_id: str) -> Sample:
        g = self._group(sample_id)
        arrays = {name: g[name][()] for name in g if name != "keypoints"}
        return Sample(sample_id, g["keypoints"][()], arrays, _attrs(g))

    def read_keypoints(self, sample_id: str) -> np.ndarray:
        """A sample's keypoints (M, T, V, C) alone, without its attributes."""
        return self._group(sample_id)["keypoints"][()]

    def read_attrs(self, sample_id: str) -> dict:
        """A sample's attributes alone, without reading its arrays."""
        if sample_id not in self._samples:
            raise SkelpipeError(f"{self.path}: no sample {sample_id!r}")
        return _attrs(self._samples[sample_id])

    def iterate(self, progress: bool = False, ids=None):
        ids = self.ids() if ids is None else list(ids)
        if not progress:
            yield from (self.read(i) for i in ids)
            return

        with progress_bar("samples") as bar:
            task = bar.add_task(self.path.name, total=len(ids))
            for i in ids:
                yield self.read(i)
                bar.advance(task)

    __iter__ = iterate

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def label_problem(label) -> str | None:
    """What is wrong with a class label read from a file, or None for an index in [0, MAX_CLASSES)
    (a label of 10^12 would size class lists and one-hot rows by it)."""
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        return f"label {label!r} is not an integer"
    if not 0 <= label < MAX_CLASSES:
        return f"label {label} is outside [0, {MAX_CLASSES})"
    return None


def open_store(path) -> PoseStore:
    return PoseStore(path)


def merge_stores(out_path, in_paths, attrs: dict | None = None) -> Path:
    """Atomically write the union of several complete stores of one layout into ``out_path``.

    Root attrs come from the first input, updated with ``attrs``. A sample id present in two
    inputs is an error.
    """
    in_paths = [Path(p) for p in in_paths]
    if not in_paths:
        raise SkelpipeError(f"{out_path}: no stores to merge")
    stores = [open_store(p) for p in in_paths]
    try:
        layout_names = {s.layout.name for s in stores}
        if len(layout_names) > 1:
            raise SkelpipeError(f"{out_path}: cannot merge stores of layouts {sorted(layout_names)}")
        root = dict(stores[0].attrs)
        for k in ("skelpipe_store", "complete", "layout", "joints"):
            root.pop(k, None)
        root.update(attrs or {})
        with PoseWriter(out_path, stores[0].layout.name, root) as w:
            for s in stores:
                for sid in s.ids():
                    if sid in w.samples:
                        raise SkelpipeError(f"{s.path}: sample {sid} is also in another input of the merge")
                    s.file.copy(s._samples[sid], w.samples, name=sid)
    finally:
        for s in stores:
            s.close()
    return Path(out_path)
