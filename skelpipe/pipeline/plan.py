"""``skelpipe run-all``: a pipeline file (``pipelines/*.toml``) turned into a plan of cached stages.

A pipeline names its data, its skeleton sources (the dataset's own skeletons, a pose estimator
— OpenPifPaf or its simulation), its settings (which source is HQ and which LQ), the stages'
options, and an experiment matrix (``[[experiments]]``: settings × benchmarks × occlusion
probabilities × distillation variants × HQ fractions × student seeds). The plan is the list of
stages this matrix needs, deduplicated by cache key, so experiments share every stage they have
in common. ``seeds = [0, 1, 2]`` trains every student cell once per seed (initialisation and data
order; the training occlusion masks follow ``student.occlusion_seed``, or the seed too with
``seed_occlusion = true``); the report gives mean ± sd and the paired KD gain with its interval:

    skeletons / extract / simulate → align → pack → teacher → partmatrix → student → evaluate → report

Every stage is a ``skelpipe.pipeline.cache`` entry: a rerun reuses what is finished, a killed run resumes.
"""

import itertools
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skelpipe.core.console import console
from skelpipe.core.errors import ConfigError, SkelpipeError
from skelpipe.core.fingerprint import content_key, files_key
from skelpipe.core.process import die_with_parent
from skelpipe.data import datasets
from skelpipe.pipeline.cache import Cache, Stage, damage
from skelpipe.pipeline.stages import STAGE_ORDER, STAGES, entry
from skelpipe.pose import blazepose, extract, simulate
from skelpipe.pose.extract import shard_from_env
from skelpipe.pose.settings import DEFAULT_LONG_EDGE, DEFAULT_MAX_PEOPLE, checkpoint_key


@dataclass
class Step:
    stage: str
    label: str
    entry: Stage
    deps: dict
    meta: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)   # the stage's settings, runtime fields included

    @property
    def key(self) -> str:
        return self.entry.key


class Plan:
    def __init__(self, cfg: dict, cache: Cache, root: Path | None, device: str):
        self.cfg, self.cache, self.root, self.device = cfg, cache, root, device
        self.steps: dict[str, Step] = {}
        self.shard = None
        self.records: list[tuple[Step, dict]] = []  # (evaluate step, what it reports), in report order
        self._data_keys: dict = {}

    def add(self, stage, label, config, deps, meta=None, data=None) -> Step:
        """The step of ``stage`` with these settings and inputs (``data``: the key of the user
        files it reads), shared with any experiment that needs the same."""
        inputs = {name: dep.key for name, dep in deps.items()}
        if data is not None:
            inputs["data"] = data
        try:
            stage_entry = entry(self.cache, stage, config, inputs)
        except SkelpipeError as e:
            raise ConfigError(f"{self.cfg['_path']}: [{stage}] {e}") from e
        if stage_entry.key not in self.steps:
            self.steps[stage_entry.key] = Step(stage, label, stage_entry, deps, meta or {}, config)
        return self.steps[stage_entry.key]

    # sources ---------------------------------------------------------------
    def source(self, name: str) -> Step:
        cfg = self.cfg
        if name not in cfg["sources"]:
            raise SkelpipeError(f"{cfg['_path']}: unknown source {name!r}")
        src = cfg["sources"][name]
        extract_cfg = cfg.get("extract", {})
        if src["kind"] == "dataset":
            config = {"dataset": cfg["dataset"], "options": cfg.get("data", {})}
            return self.add("skeletons", f"{cfg['dataset']} skeletons", config, {},
                            {"source": name, "label": src.get("label", name)}, self._data_key("skeletons"))
        if src["kind"] == "estimator":
            extractor = src.get("extractor", extract_cfg.get("extractor", "openpifpaf"))
            if extractor == "simulated":
                base = self.source(src.get("simulate_from", extract_cfg.get("simulate_from", "")))
                config = {"profile": src["backbone"], "seed": extract_cfg.get("seed", 0),
                          **({"overrides": src["profile"]} if src.get("profile") else {})}
                simulate.get_profile(src["backbone"], src.get("profile"))  # a bad field fails the plan
                label = src.get("label", name)
                if "simulated" not in label:  # simulated data say so in every table
                    label += " (simulated)"
                return self.add("simulate", f"simulated {src['backbone']}", config, {"hq": base},
                                {"source": name, "label": label, "extractor": "simulated"})
            if extractor != "openpifpaf":
                raise SkelpipeError(f"{cfg['_path']}: extract.extractor must be openpifpaf or "
                                    f"simulated, not {extractor!r}")
            bp = blazepose.is_blazepose(src["backbone"])  # mediapipe's BlazePose, its model files the checkpoint
            config = {"dataset": cfg["dataset"], "options": cfg.get("data", {}), "backbone": src["backbone"],
                      "checkpoint": checkpoint_key(src["backbone"], src.get("checkpoint", ""),
                                                   self.cache.root / ".hashes"),
                      "long_edge": extract_cfg.get("long_edge", DEFAULT_LONG_EDGE),
                      "max_people": extract_cfg.get("max_people", DEFAULT_MAX_PEOPLE),
                      "decoder": extract_cfg.get("decoder", {})}
            return self.add("extract", "BlazePose" if bp else f"OpenPifPaf {src['backbone']}", config, {},
                            {"source": name, "label": src.get("label", name),
                             "extractor": "mediapipe" if bp else "openpifpaf",
                             "checkpoint": src.get("checkpoint", "")}, self._data_key("videos"))
        if src["kind"] == "pyskl":  # another tool's skeletons (pyskl's annotation pickles)
            file = Path(src["file"]).expanduser()
            if not file.is_file():
                raise SkelpipeError(f"{cfg['_path']}: sources.{name}.file: {file} does not exist")
            config = {"file": "sha256:" + content_key(file, self.cache.root / ".hashes"),
                      "split": src.get("split"), "num_classes": src.get("num_classes")}
            return self.add("import", f"pyskl {file.name}", config, {},
                            {"source": name, "label": src.get("label", name), "extractor": "pyskl",
                             "file": str(file)})
        raise SkelpipeError(f"{cfg['_path']}: source {name!r} has unknown kind {src['kind']!r}")

    def _data_key(self, what: str) -> str:
        """The key of the user files a source stage reads: the resolved data root and the names,
        sizes and times of the dataset's skeleton files (``skeletons``) or videos (``videos``)."""
        dataset = datasets.get(self.cfg["dataset"])
        if dataset.root_env is None:
            return "generated"
        if self.root is None or not self.root.is_dir():
            return "no data root"
        memo = (str(self.root), what, json.dumps(self.cfg.get("data", {}), sort_keys=True))
        if memo not in self._data_keys:
            options = self.cfg.get("data", {})
            try:
                files = (dataset.skeleton_files(self.root, options) if what == "skeletons"
                         else [v.path for v in dataset.videos(self.root, options)])
                self._data_keys[memo] = files_key(self.root, files)
            except SkelpipeError as e:  # the stage itself will say what is wrong when it runs
                self._data_keys[memo] = f"unreadable: {e}"
        return self._data_keys[memo]

    # experiments -----------------------------------------------------------
    def build(self) -> "Plan":
        cfg = self.cfg
        settings = {s["name"]: s for s in cfg["settings"]}
        for exp in cfg["experiments"]:
            for setting_name in exp.get("settings", list(settings)):
                if setting_name not in settings:
                    raise SkelpipeError(f"{cfg['_path']}: experiment names unknown setting {setting_name!r}")
                self._experiment(settings[setting_name], exp)
        return self

    def _experiment(self, setting: dict, exp: dict):
        cfg = self.cfg
        hq, lq = self.source(setting["hq"]), self.source(setting["lq"])
        align = self.add("align", f"align {setting['name']}", dict(cfg.get("align", {})),
                         {"hq": hq, "lq": lq})
        seeds = exp.get("seeds", [cfg["student"].get("seed", 0)])  # checked by pipeline.config.check
        common = {"setting": setting["name"], "table": exp.get("table"),
                  "hq_source": hq.meta["label"], "lq_source": lq.meta["label"],
                  "extractor": lq.meta.get("extractor", "dataset")}
        for backbone in exp.get("backbones", [None]):  # Table 3: teacher and students on each backbone
            self._cells(exp, setting, align, common, seeds, backbone)

    def _cells(self, exp, setting, align, common, seeds, backbone):
        cfg = self.cfg
        teacher_cfg = {**cfg["teacher"], **({"backbone": backbone} if backbone else {})}
        student_cfg = {**cfg["student"], **exp.get("student", {}), **({"backbone": backbone} if backbone else {})}
        tag = f" {backbone}" if backbone else ""
        needs_teacher = (any(kd != "none" for kd in exp.get("kd", ["pmsc"]))
                         or "teacher" in exp.get("init", [student_cfg.get("init", "random")]))
        for benchmark in exp.get("benchmarks", ["default"]):
            for split in range(int(exp.get("splits", 1))):
                for fraction in exp.get("hq_fraction", [1.0]):
                    pack_cfg = {**cfg.get("pack", {}), "benchmark": benchmark, "split": split,
                                "hq_fraction": fraction}
                    pack = self.add("pack", f"pack {setting['name']} {benchmark}"
                                    f"{f' split {split}' if exp.get('splits') else ''} HQ {fraction:.0%}",
                                    pack_cfg, {"align": align})
                    where = {**common, "benchmark": benchmark, "split": split, "hq_fraction": fraction}
                    teacher = None
                    if needs_teacher:  # a block of students without KD (Table 3's rivals) needs none
                        teacher = self.add("teacher", f"teacher{tag} {setting['name']} {benchmark} HQ {fraction:.0%}",
                                           teacher_cfg, {"pack": pack})
                        self._evaluate(teacher, pack, 0.0, {**where, "model": "teacher", "kd": None, "op": 0.0,
                                                            "seed": teacher_cfg.get("seed", 0),
                                                            "backbone": teacher_cfg.get("backbone", "stgcn")})
                    partmatrix = None
                    for op in exp.get("op", [0.0]):
                        for kd in exp.get("kd", ["pmsc"]):
                            for data, init in itertools.product(exp.get("student_data", ["all"]),
                                                                exp.get("init", [student_cfg.get("init", "random")])):
                                deps = {"pack": pack}
                                if kd != "none" or init == "teacher":
                                    deps["teacher"] = teacher
                                if kd == "pmsc":
                                    partmatrix = partmatrix or self.add(
                                        "partmatrix", f"part matrix{tag} {setting['name']} {benchmark} HQ {fraction:.0%}",
                                        dict(cfg.get("partmatrix", {})), {"teacher": teacher, "pack": pack})
                                    deps["partmatrix"] = partmatrix
                                for seed in seeds:
                                    scfg = {**student_cfg, "kd": kd, "op": op, "lq_data": data, "seed": seed,
                                            "init": init}
                                    if exp.get("seed_occlusion", False):
                                        scfg["occlusion_seed"] = seed
                                    student = self.add(
                                        "student", f"student{tag} {setting['name']} kd={kd}"
                                        f"{' init=teacher' if init == 'teacher' else ''} OP {op} {benchmark} "
                                        f"HQ {fraction:.0%}{' (pairs only)' if data == 'pair' else ''}"
                                        f"{f' seed {seed}' if len(seeds) > 1 else ''}", scfg, deps)
                                    self._evaluate(student, pack, op, {**where, "model": "student", "kd": kd,
                                                                       "op": op, "lq_data": data, "seed": seed,
                                                                       "init": init,
                                                                       "backbone": student_cfg.get("backbone", "stgcn")})

    def _evaluate(self, model: Step, pack: Step, op: float, meta: dict):
        """The evaluation of ``model``, reported in every table that names it (one stage, several
        rows: Table 3's ST-GCN cells are Table 1's)."""
        scfg = self.cfg["student"]
        config = {"op": op}
        if op > 0:  # at OP 0 nothing is occluded: one evaluation serves every reading (as its student)
            config["occlusion_mode"] = scfg.get("occlusion_mode", "track")
        step = self.add("evaluate", f"evaluate {model.label}", config, {"model": model, "pack": pack},
                        meta)
        if (step, meta) not in self.records:
            self.records.append((step, meta))

    # execution -------------------------------------------------------------
    def ordered(self) -> list[Step]:
        return sorted(self.steps.values(), key=lambda s: STAGE_ORDER.index(s.stage))

    def check_data(self):
        """A pipeline that reads its dataset's files fails before its first stage when they are
        not there."""
        dataset = datasets.get(self.cfg["dataset"])
        needs_data = [s for s in self.steps.values() if s.stage in ("skeletons", "extract")
                      and not s.entry.done and dataset.root_env is not None]
        if needs_data and (self.root is None or not self.root.is_dir()):
            where = f"{self.root} does not exist" if self.root else \
                f"no data root given (--data-root or ${dataset.root_env})"
            raise SkelpipeError(f"{dataset.name} data missing: {where}; expected under the root: "
                                f"{dataset.expected}")

    def run(self, only=None, until=None, jobs=1):
        """Run the plan's unfinished stages in order (the caller holds the plan's stages with
        ``cache.hold``, as run-all does, so that cache gc leaves them alone). Under ``torchrun``
        (or with RANK and WORLD_SIZE set) only extraction is spread over the ranks, each taking
        its share of the videos: ``torchrun --nproc-per-node N -m skelpipe run-all ntu --only extract``.

        ``jobs > 1``: the steps of one training stage (teachers, then students), which never
        depend on each other, run in that many worker processes, each with cores / jobs
        threads (small networks on a CPU train faster side by side than one after the other
        with every core: on 2 cores, 2 × 1 thread gives ~1.25× the samples/s of 1 × 2)."""

        self.shard = shard_from_env()
        if self.shard and only != "extract":
            raise SkelpipeError("under torchrun, run-all runs the extract stage only (--only extract); "
                                "train a stage with `torchrun -m skelpipe train ...`")
        steps = self.ordered()
        if until:
            steps = [s for s in steps if STAGE_ORDER.index(s.stage) <= STAGE_ORDER.index(until)]
        if only:
            steps = [s for s in steps if s.stage == only]
        total = len(steps)
        pending = [(n, s) for n, s in enumerate(steps, 1) if not s.entry.done]
        i = 0
        while i < len(pending):
            group = [p for p in pending[i:] if p[1].stage == pending[i][1].stage]
            if jobs > 1 and len(group) > 1 and group[0][1].stage in PARALLEL_STAGES:
                self._run_parallel(group, total, jobs)
            else:
                group = group[:1]
                self._run_step(*group[0], total)
            i += len(group)

    @staticmethod
    def _check_deps(step: Step):
        missing = [d for d in step.deps.values() if not d.entry.done]
        if missing:
            dep = missing[0]
            why = (f", whose output is damaged ({damage(dep.entry.path)})" if dep.entry.path.is_dir()
                   else " first")
            raise SkelpipeError(f"{step.label}: needs {dep.label} ({dep.stage}){why}; run without --only")

    def _run_step(self, n: int, step: Step, total: int):
        self._check_deps(step)
        console.rule(f"[{n}/{total}] {step.label}  [dim]{step.stage}/{step.key}")
        t0 = time.time()
        run_kwargs = {}
        if step.stage == "extract":  # (under torchrun, one share of the videos per rank)
            run_kwargs = {"shard": self.shard,
                          "on_commit": lambda d: extract.merge_and_drop(d, "skeletons.h5")}
        computed = step.entry.ensure(lambda work: STAGES[step.stage].build(self, step, work), **run_kwargs)
        how = "done" if computed else "reused (finished by another process)"
        console.print(f"[green]{how}[/] {step.label} in {time.time() - t0:.1f} s")

    def _run_parallel(self, group, total: int, jobs: int):
        """The steps of ``group`` in ``jobs`` worker processes (spawned: each rebuilds the plan
        from the same settings and runs the steps it is given by key)."""

        for _, step in group:
            self._check_deps(step)
            if step.entry.damage_line():  # (the workers' own consoles are quiet)
                console.print(step.entry.damage_line(), soft_wrap=True)
        jobs = min(jobs, len(group))
        threads = max(1, (os.cpu_count() or 1) // jobs)
        console.rule(f"[{group[0][0]}–{group[-1][0]}/{total}] {len(group)} {group[0][1].stage} stages "
                     f"in {jobs} processes × {threads} threads")
        args = (self.cfg, str(self.cache.root), self.root, self.device, threads, os.getpid())
        with ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), _worker_init, args) as pool:
            futures = {pool.submit(_worker_run, step.key): step for _, step in group}
            for future in as_completed(futures):
                step = futures[future]
                seconds = future.result()  # a failed step raises here, as it would in the serial loop
                console.print(f"[green]done[/] {step.label} in {seconds:.1f} s")


PARALLEL_STAGES = ("teacher", "student")
_WORKER: dict = {}


def _worker_init(cfg, cache_root, root, device, threads, parent):
    die_with_parent(parent)  # SIGTERM or SIGKILL to run-all ends its workers too
    torch.set_num_threads(threads)
    console.quiet = True  # the parent reports each finished step; epochs would interleave
    _WORKER["plan"] = Plan(cfg, Cache(cache_root), root, device).build()


def _worker_run(key: str) -> float:
    plan = _WORKER["plan"]
    step = plan.steps[key]
    t0 = time.time()
    step.entry.ensure(lambda work: STAGES[step.stage].build(plan, step, work))
    return time.time() - t0
