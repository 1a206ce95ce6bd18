"""The pipeline's stages: for each, its code version, the settings that key its cache entry, and
how it builds its output. The cache (``pipeline.cache``) knows none of them; the plan
(``pipeline.plan``) and the commands that run one stage on its own (``skelpipe align``, ``pack``:
``run_align``, ``run_pack``; ``extract``: ``pipeline.extraction``) key their entries through
``entry``.

Bump a stage's version when its code changes what it writes: that re-keys it and everything
downstream.
"""

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from skelpipe.core.fingerprint import input_key
from skelpipe.core.work import Work
from skelpipe.data import pack, pyskl, sources
from skelpipe.data.align import AlignConfig, align_stores
from skelpipe.learn import evaluate, train
from skelpipe.learn.config import TrainConfig, settings
from skelpipe.learn.partmatrix import PartMatrixConfig, compute_part_matrix
from skelpipe.pipeline.cache import Cache, Stage
from skelpipe.pose import extract, simulate
from skelpipe.pose.settings import ExtractConfig


@dataclass(frozen=True)
class StageKind:
    """What a stage is, whatever its settings: the code that builds it and what keys it."""
    version: int
    settings: Callable[[dict], dict]  # a section's settings → the complete, checked config of its key
    build: Callable[..., None]        # (plan, step, work): the output, from the config and the inputs


def as_given(config: dict) -> dict:
    """The settings of a stage whose config the plan writes out in full."""
    return config


def _checked(config_class) -> Callable[[dict], dict]:
    """The settings of a stage that has a settings dataclass: every field, checked by it."""
    return lambda config: dataclasses.asdict(config_class.from_dict(config))


def _training(stage: str) -> Callable[[dict], dict]:
    """Runtime-only training fields (device, eval_every, …) are left out, and so are the
    distillation settings of a student without distillation, so that the same settings key the
    same entry from run-all or a ``--set``."""
    return lambda config: settings(TrainConfig.from_dict({**config, "stage": stage}).to_dict())


def entry(cache: Cache, stage: str, config: dict, inputs: dict | None = None) -> Stage:
    """The cache entry of ``stage`` with these settings (completed with their defaults and
    checked: a bad one is a SkelpipeError) and inputs (name → key)."""
    kind = STAGES[stage]
    return cache.stage(stage, kind.version, kind.settings(config), inputs)


# One stage on its own, outside a pipeline: keyed by its settings and its input files' contents.

def run_align(cache: Cache, hq_path, lq_path, config: AlignConfig | None = None) -> Path:
    """The align entry of two pose stores (built unless cached); its directory."""
    config = config or AlignConfig()
    inputs = {"hq": input_key(hq_path), "lq": input_key(lq_path)}
    st = entry(cache, "align", dataclasses.asdict(config), inputs)
    st.ensure(lambda work: align_stores(hq_path, lq_path, work, config))
    return st.path


def pack_stage(cache: Cache, aligned_dir, cfg: pack.PackConfig) -> Stage:
    """The pack entry of an aligned directory with these settings."""
    return entry(cache, "pack", dataclasses.asdict(cfg), {"align": input_key(aligned_dir)})


def run_pack(cache: Cache, aligned_dir, cfg: pack.PackConfig) -> Path:
    """The pack entry of an aligned directory (built unless cached); its directory."""
    st = pack_stage(cache, aligned_dir, cfg)
    st.ensure(lambda work: pack.pack(aligned_dir, work, **dataclasses.asdict(cfg)))
    return st.path


# Each builder writes one stage's output into ``work.dir`` from its config and its inputs' outputs.

def build_skeletons(plan, step, work: Work):
    sources.write_dataset_store(plan.cfg["dataset"], step.entry.config["options"], plan.root,
                                work.dir / "skeletons.h5", work)


def build_imported(plan, step, work: Work):
    cfg = step.entry.config
    pyskl.import_store(step.meta["file"], work.dir / "skeletons.h5", cfg["split"], cfg["num_classes"],
                       work=work)


def build_simulated(plan, step, work: Work):
    cfg = step.entry.config
    simulate.simulate_store(step.deps["hq"].entry.path / "skeletons.h5", work.dir / "skeletons.h5",
                            profile=cfg["profile"], seed=cfg["seed"], work=work,
                            overrides=cfg.get("overrides"))


def build_extracted(plan, step, work: Work):
    cfg = step.entry.config
    videos = sources.dataset_videos(cfg["dataset"], cfg["options"], plan.root, work)
    config = ExtractConfig(backbone=cfg["backbone"], checkpoint=step.meta["checkpoint"] or None,
                           device=plan.device, long_edge=cfg["long_edge"], max_people=cfg["max_people"],
                           decoder_workers=plan.cfg.get("extract", {}).get("decoder_workers"),
                           decoder_config=cfg["decoder"] or None)
    extract.extract_to_work(videos, work, config, shard=plan.shard, out_name=None)


def build_align(plan, step, work: Work):
    align_stores(step.deps["hq"].entry.path / "skeletons.h5", step.deps["lq"].entry.path / "skeletons.h5",
                 work, AlignConfig(**step.entry.config))


def build_pack(plan, step, work: Work):
    pack.pack(step.deps["align"].entry.path, work, **step.entry.config)


def build_train(plan, step, work: Work):
    cfg = {**step.config, "stage": step.stage}
    teacher = step.deps.get("teacher")
    partmatrix = step.deps.get("partmatrix")
    train.train(TrainConfig.from_dict({**cfg, "device": plan.device}),
                step.deps["pack"].entry.path, work.dir,
                teacher_dir=teacher.entry.path if teacher else None,
                part_matrix=partmatrix.entry.path / "part_matrix.npy" if partmatrix else None)


def build_partmatrix(plan, step, work: Work):
    compute_part_matrix(step.deps["teacher"].entry.path, step.deps["pack"].entry.path, work.dir,
                        PartMatrixConfig(**step.entry.config), device=plan.device)


def build_evaluate(plan, step, work: Work):
    cfg = step.entry.config
    model = step.deps["model"]
    on = evaluate.EvalSet("test", which="hq" if model.stage == "teacher" else "lq", op=cfg["op"],
                          mode=cfg.get("occlusion_mode"))
    evaluate.evaluate(model.entry.path, step.deps["pack"].entry.path, on, out_dir=work.dir, device=plan.device)


# In the order they run.
STAGES = {
    "skeletons": StageKind(1, as_given, build_skeletons),
    "import": StageKind(1, as_given, build_imported),
    "extract": StageKind(2, as_given, build_extracted),
    "simulate": StageKind(1, as_given, build_simulated),
    "align": StageKind(1, _checked(AlignConfig), build_align),
    "pack": StageKind(1, _checked(pack.PackConfig), build_pack),
    "teacher": StageKind(2, _training("teacher"), build_train),
    "partmatrix": StageKind(2, _checked(PartMatrixConfig), build_partmatrix),
    "student": StageKind(3, _training("student"), build_train),
    "evaluate": StageKind(2, as_given, build_evaluate),
}
STAGE_ORDER = (*STAGES, "report")  # report: written from the evaluations, not a cache entry
