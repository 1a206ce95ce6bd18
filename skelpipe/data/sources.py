"""A dataset's own skeletons as one pose store, and its videos, for the pipeline's first stages.

What to read comes from the dataset's ``Dataset`` (``skelpipe.data.datasets``). Long datasets
are written in chunks, one resumable unit each, and merged at the end, so that a killed run
loses at most one chunk; a bad file is reported and skipped; a stage that read nothing fails.
"""

import os
from pathlib import Path

import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.data import datasets
from skelpipe.skeleton.store import PoseWriter, merge_stores, open_store

CHUNK = 500


def write_dataset_store(dataset: str, options: dict, root: Path | None, out_path: Path, work: Work) -> Path:
    """The skeletons of ``dataset`` under ``root`` (or generated) into the store ``out_path``."""
    ds = datasets.get(dataset)
    generated = ds.generate(options, work.dir)
    if generated is not None:
        os.replace(generated, out_path)
        return out_path
    if root is None:
        raise SkelpipeError(f"{dataset}: no data root given")
    source = ds.skeletons(root, options, work)
    chunks = []
    for start in range(0, len(source.items), CHUNK):
        chunk_path = work.dir / f"chunk{start // CHUNK:05d}.h5"
        chunks.append(chunk_path)
        if not work.is_done(chunk_path.name):
            _write_chunk(chunk_path, source, source.items[start:start + CHUNK], work)
            work.mark_done(chunk_path.name)
    if not chunks:
        raise _nothing_read(root, dataset, work)
    merge_stores(out_path, chunks)
    for chunk in chunks:
        chunk.unlink()
    with open_store(out_path) as store:
        samples = len(store)
    if samples == 0:  # every file was bad: fail, never commit an empty stage
        raise _nothing_read(root, dataset, work)
    work.note(samples=samples)
    return out_path


def _write_chunk(path: Path, source: datasets.Skeletons, items, work: Work):
    # a number beyond float32 (NTU's 1e300) overflows quietly: the writer reports it as not finite
    with PoseWriter(path, source.layout, source.attrs, work=work) as writer, \
            np.errstate(over="ignore", invalid="ignore"):
        for item in items:
            try:
                sample_id, keypoints, arrays, sample_attrs = source.read(item)
            except SkelpipeError as e:
                work.report_bad(str(item[0]), str(e))
                continue
            writer.add(sample_id, keypoints, arrays, **sample_attrs)


def _nothing_read(root, dataset: str, work: Work) -> SkelpipeError:
    """The one-line error of a skeleton stage that read no sample, with the first reasons."""
    bad = work.bad_items()
    reasons = "; ".join(b["reason"] for b in bad[:3])
    return SkelpipeError(f"{root}: no readable {dataset} sample"
                         + (f" ({len(bad)} bad: {reasons}{' …' if len(bad) > 3 else ''})" if bad else " found"))


def dataset_videos(dataset: str, options: dict, root: Path | None, work: Work | None = None) -> list:
    """Every video of a dataset (``Video``: id, file or frame folder, attributes), for extraction;
    rows or files it leaves out are reported into ``work``."""
    if root is None:
        raise SkelpipeError(f"{dataset}: no data root given")
    return datasets.get(dataset).videos(root, options, work)
