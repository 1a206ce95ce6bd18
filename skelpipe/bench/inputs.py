"""What the benchmarks run on: NTU-60-shaped random data, an untrained teacher, a sparse pack
larger than memory and a synthetic clip. Their cost, not their content, is what is measured."""

from pathlib import Path

import h5py
import numpy as np
import torch

from skelpipe.data.split import Split, data_file
from skelpipe.learn.checkpoint import save_model
from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.skeleton import layouts


def random_split(n, layout, lq_layout="coco17", frames=300, num_classes=60, seed=0):
    """A ``Split`` of NTU-60-shaped random data: HQ in ``layout`` (3 channels), LQ in ``lq_layout``."""
    g = torch.Generator().manual_seed(seed)

    def skeletons(name):
        return torch.randn(n, 3, frames, layouts.get(name).num_joints, 2, generator=g).numpy()

    return Split(hq=skeletons(layout), lq=skeletons(lq_layout), has_hq=np.ones(n, bool),
                 label=torch.randint(num_classes, (n,), generator=g).numpy(),
                 ids=[str(i) for i in range(n)],
                 attrs={"hq_layout": layout, "lq_layout": lq_layout, "num_classes": num_classes,
                        "key": f"random-{n}-{frames}-{seed}"})


def teacher_model(channels) -> torch.nn.Module:
    """An untrained ntu25 ST-GCN of 60 classes with these block channels."""
    return build_model(ModelConfig("stgcn", "ntu25", 3, 60, tuple(channels)))


def random_teacher(out_dir: Path, channels):
    """An untrained teacher (``teacher_model``) saved as a finished run: the distillation
    benchmarks need one, not a good one. Returns (its directory, the model)."""
    teacher = teacher_model(channels)
    save_model(out_dir, teacher, {"stage": "teacher", "config_key": "random"})
    return out_dir, teacher


def sparse_pack(pack_dir: Path, samples: int, frames: int, test: int = 64, num_classes: int = 60) -> Path:
    """A pack of ``samples`` training (and ``test``) instances of NTU-60's shapes whose skeleton
    arrays are allocated but never written: a sparse file, all zeros, almost no disk."""
    pack_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(data_file(pack_dir), "w") as f:
        f.attrs.update({"hq_layout": "ntu25", "lq_layout": "coco17", "num_classes": num_classes,
                        "key": f"sparse-{samples}-{frames}", "benchmark": "xsub"})
        for split, n in (("train", samples), ("test", test)):
            g = f.create_group(split)
            for name, layout in (("lq", "coco17"), ("hq", "ntu25")):
                ds = g.create_dataset(name, (n, 3, frames, layouts.get(layout).num_joints, 2), dtype="float32")
                ds[n - 1] = 0.0  # allocates the contiguous block; the rest is never written
            for name, values in (("has_hq", np.ones(n, bool)), ("hq_available", np.ones(n, bool)),
                                 ("label", rng.integers(num_classes, size=n)),
                                 ("length", np.full(n, frames, np.int32))):
                g.create_dataset(name, data=values)
            g.create_dataset("ids", data=np.array([f"S{i:06d}" for i in range(n)], dtype=h5py.string_dtype()))
    return pack_dir


def synthetic_clip(path: Path, frames: int, size=(640, 360)) -> Path:
    """A short MJPG clip of moving shapes: the network's cost does not depend on what it sees, and
    with ``--weights people`` neither does the decoder's."""
    import cv2  # optional at start-up: only this benchmark writes frames

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    for i in range(frames):
        img = background.copy()
        x = 40 + (i * 7) % (w - 120)
        cv2.rectangle(img, (x, 60), (x + 60, 300), (30, 200, 30), -1)
        cv2.circle(img, (x + 30, 40), 20, (200, 30, 30), -1)
        writer.write(img)
    writer.release()
    return path
