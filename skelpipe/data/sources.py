"""A dataset's own skeletons as a pose store, and its videos, for the pipeline's first stages.

``write_dataset_store`` turns NTU ``.skeleton`` files (Kinect v2, ntu25 x/y/z, with the
colour-image coordinates kept as the array ``color_xy`` for alignment), Penn Action label
files (penn13 x/y/visibility), SYSU 3D HOI skeletons (Kinect v1, kinect20 x/y/z) or the
synthetic demo into one store. Long datasets are written in chunks, one resumable unit each,
and merged at the end, so that a killed run loses at most one chunk; a bad file is reported
and skipped.
"""

import os
from pathlib import Path

from skelpipe.core.errors import SkelpipeError
from skelpipe.skeleton.store import PoseWriter, merge_stores, open_store

CHUNK = 500


def write_dataset_store(dataset: str, options: dict, root: Path | None, out_path: Path, work) -> Path:
    if dataset == "demo":
        from skelpipe.data.datasets import demo

        path = demo.write_stores(work.dir, num_subjects=options.get("subjects", 16),
                                 reps_per_subject=options.get("reps", 4), seed=options.get("seed", 0),
                                 test_reps=options.get("test_reps"))
        os.replace(path, out_path)
        return out_path
    items, layout, attrs, read = _dataset(dataset, options, root, work)
    chunks = []
    for start in range(0, len(items), CHUNK):
        chunk_path = work.dir / f"chunk{start // CHUNK:05d}.h5"
        chunks.append(chunk_path)
        unit = chunk_path.name
        if work.is_done(unit):
            continue
        with PoseWriter(chunk_path, layout, attrs) as writer:
            for item in items[start:start + CHUNK]:
                try:
                    sample_id, keypoints, arrays, sample_attrs = read(item)
                except SkelpipeError as e:
                    work.report_bad(str(item[0]), str(e))
                    continue
                writer.add(sample_id, keypoints, arrays, **sample_attrs)
        work.mark_done(unit)
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


def _nothing_read(root, dataset: str, work) -> SkelpipeError:
    """The one-line error of a skeleton stage that read no sample, with the first reasons."""
    bad = work.bad_items()
    reasons = "; ".join(b["reason"] for b in bad[:3])
    return SkelpipeError(f"{root}: no readable {dataset} sample"
                         + (f" ({len(bad)} bad: {reasons}{' …' if len(bad) > 3 else ''})" if bad else " found"))


def _dataset(dataset: str, options: dict, root: Path | None, work):
    """(items, layout, store attrs, read(item) → (id, keypoints, arrays, attrs)) of a dataset."""
    if root is None:
        raise SkelpipeError(f"{dataset}: no data root given")
    if dataset == "ntu":
        from skelpipe.data.datasets import ntu

        version = int(options.get("version", 60))
        skeletons = _first_dir(root, ("nturgb+d_skeletons", "skeletons", "."), "*.skeleton")
        scan = ntu.scan(skeletons, "xsub" if version == 60 else "xsub120")
        for path, reason in scan.bad:
            work.report_bad(path, reason)
        names = ntu.action_names("xsub" if version == 60 else "xsub120")

        def read(sample):
            skel = ntu.read_skeleton_file(sample.path)
            xyz, bodies = ntu.to_array(skel)
            color, _ = ntu.to_color_array(skel)
            return (sample.name, xyz, {"color_xy": color},
                    {"label": sample.label, "label_name": names[sample.label], "fps": 30.0,
                     "num_frames": skel["num_frames"], "image_size": [1920, 1080],
                     "channels": "x,y,z", "bodies": list(bodies)})

        attrs = {"dataset": f"ntu{version}", "source": "kinect_v2", "channels": "x,y,z",
                 "class_names": list(names), "fps": 30.0, "image_size": [1920, 1080]}
        return list(scan.samples), "ntu25", attrs, read
    if dataset == "penn":
        from skelpipe.data.datasets import penn

        labels_dir = _first_dir(root, ("labels", "."), "*.mat")
        found = penn.scan(labels_dir)
        for path, reason in found.bad:
            work.report_bad(str(path), reason)
        split_mode = options.get("split", "official")
        if split_mode not in penn.SPLITS:
            raise SkelpipeError(f"Penn Action: data.split must be one of {', '.join(penn.SPLITS)}, "
                                f"got {split_mode!r}")
        samples = found.samples
        if split_mode == "dev":
            dev = penn.dev_split(samples, options.get("dev_fraction", 0.3), options.get("dev_seed", 0))
            samples = [s for s in samples if s.video_id in dev]
            if not samples:
                raise SkelpipeError(f"{labels_dir}: no official training sample to make a dev split of")

        def read(item):
            path = item[1]
            label = penn.read_label_file(path)
            h, w = int(label["dimensions"][0]), int(label["dimensions"][1])
            split = dev[penn.video_id(path)] if split_mode == "dev" else ("train" if label["train"] else "test")
            return (Path(path).stem, penn.to_array(label), {"bbox": label["bbox"]},
                    {"label": penn.ACTIONS.index(label["action"]), "label_name": label["action"],
                     "split": split, "fps": 30.0,
                     "num_frames": label["nframes"], "image_size": [w, h],
                     "channels": "x,y,conf"})

        attrs = {"dataset": "penn", "source": "human annotation", "channels": "x,y,conf",
                 "class_names": list(penn.ACTIONS), "fps": 30.0, "split_protocol": split_mode}
        return [(s.path.stem, s.path) for s in samples], "penn13", attrs, read
    if dataset == "sysu":
        from skelpipe.data.datasets import sysu

        found = sysu.scan(root)
        for path, reason in found.bad:
            work.report_bad(str(path), reason)

        def read(item):
            inst = sysu.read_instance(item[1])
            return (inst["id"], inst["xyz"], {},
                    {"label": inst["label"], "label_name": sysu.ACTIONS[inst["label"]],
                     "subject": inst["subject"], "fps": 30.0, "num_frames": inst["xyz"].shape[1],
                     "channels": "x,y,z"})

        attrs = {"dataset": "sysu", "source": "kinect_v1", "channels": "x,y,z",
                 "class_names": list(sysu.ACTIONS), "fps": 30.0}
        return [(p.stem, p) for p in found.paths], "kinect20", attrs, read
    raise SkelpipeError(f"dataset {dataset!r} has no skeletons of its own (known: demo, ntu, penn, sysu)")


def dataset_videos(dataset: str, options: dict, root: Path | None) -> list[tuple[str, Path]]:
    """(sample id, video file or frame folder) of every video of a dataset, for extraction."""
    if root is None:
        raise SkelpipeError(f"{dataset}: no data root given")
    if dataset == "ntu":
        rgb = _first_dir(root, ("nturgb+d_rgb", "rgb", "."), "*_rgb.avi")
        return [(p.name.removesuffix("_rgb.avi"), p) for p in sorted(rgb.rglob("*_rgb.avi"))]
    if dataset == "penn":
        frames = Path(root) / "frames"
        if not frames.is_dir():
            raise SkelpipeError(f"{frames}: no such folder (Penn Action frames/NNNN/ folders; "
                                "or use --set extract.extractor=simulated)")
        return [(d.name, d) for d in sorted(frames.iterdir()) if d.is_dir()]
    if dataset == "sysu":
        from skelpipe.data.datasets import sysu

        return sysu.videos(root)
    if dataset == "custom":
        from skelpipe.data.datasets import custom

        return [(row.id, row.video) for row in custom.read_labels(root)]
    raise SkelpipeError(f"dataset {dataset!r} has no videos")


def _first_dir(root: Path, candidates, pattern: str) -> Path:
    for name in candidates:
        d = Path(root) / name
        if d.is_dir() and next(d.rglob(pattern), None) is not None:
            return d
    raise SkelpipeError(f"{root}: no {pattern} files under any of {', '.join(candidates)}")
