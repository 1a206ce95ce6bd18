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

import copy
import os
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import click

from skelpipe.pipeline.cache import Cache, Stage, Work
from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError

# Bump a stage's version when its code changes what it writes: that re-keys it and everything
# downstream.
VERSIONS = {"skeletons": 1, "extract": 1, "simulate": 1, "align": 1, "pack": 1, "teacher": 1,
            "partmatrix": 2, "student": 2, "evaluate": 2}  # 2: masks keyed by sample id; E measures
STAGE_ORDER = ("skeletons", "extract", "simulate", "align", "pack", "teacher", "partmatrix",
               "student", "evaluate", "report")

# Where each dataset's data is expected when the pipeline needs it.
DATA_ENV = {"ntu": "SKELPIPE_NTU_ROOT", "penn": "SKELPIPE_PENN_ROOT", "sysu": "SKELPIPE_SYSU_ROOT",
            "custom": "SKELPIPE_CUSTOM_ROOT"}
EXPECTED = {
    "ntu": "nturgb+d_skeletons/*.skeleton (Kinect skeletons) and, for extraction, nturgb+d_rgb/*_rgb.avi",
    "penn": "labels/NNNN.mat (annotations) and, for extraction, frames/NNNN/*.jpg",
    "sysu": "one folder per video with its skeleton .mat file and RGB video (see README)",
    "custom": "labels.csv (video,label[,split]) and the videos it names",
}

PIPELINE_DIRS = (Path.cwd() / "pipelines", Path(__file__).resolve().parents[2] / "pipelines")


# --------------------------------------------------------------------------- pipeline files

def find_pipeline(name: str) -> Path:
    """A pipeline by file path or by name (``demo`` → ``pipelines/demo.toml``)."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise SkelpipeError(f"{path}: no such pipeline file")
        return path
    for d in PIPELINE_DIRS:
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    known = sorted({p.stem for d in PIPELINE_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise SkelpipeError(f"unknown pipeline {name!r}; known: {', '.join(known) or 'none'} "
                        "(or give a path to a .toml file)")


def parse_override(text: str) -> tuple[list[str], object]:
    """``section.key=value`` → (["section", "key"], value); value parsed as TOML when it can be."""
    if "=" not in text:
        raise click.BadParameter(f"{text!r}: expected section.key=value", param_hint="--set")
    dotted, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return dotted.strip().split("."), value


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: tables merge key by key, anything else (arrays of tables
    included) is replaced whole."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read_toml(path: Path, seen=()) -> dict:
    """A pipeline file as a dict; ``base = "penn"`` (a name or a path) starts from that file."""
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SkelpipeError(f"{path}: invalid TOML ({e})") from None
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    base_path = find_pipeline(base)
    if base_path.resolve() in seen:
        raise SkelpipeError(f"{path}: base {base!r} includes itself")
    return _merge(_read_toml(base_path, (*seen, path.resolve())), cfg)


def load_pipeline(name: str, overrides=()) -> dict:
    path = find_pipeline(name)
    cfg = _read_toml(path, (path.resolve(),))
    for text in overrides:
        keys, value = parse_override(text)
        nodes = [cfg]
        for k in keys[:-1]:
            nodes = [n.setdefault(k, {}) for n in nodes]
            # An array of tables ([[experiments]], [[settings]]): the setting applies to each.
            nodes = [m for n in nodes for m in (n if isinstance(n, list) else [n])]
            if not all(isinstance(n, dict) for n in nodes):
                raise SkelpipeError(f"--set {text}: {k} is not a section of {path}")
        for n in nodes:
            n[keys[-1]] = value
    cfg["_path"] = str(path)
    for section in ("sources", "settings", "experiments", "teacher", "student"):
        if section not in cfg:
            raise SkelpipeError(f"{path}: missing [{section}]")
    return cfg


def resolve_data_root(cfg: dict, given: str | None) -> Path | None:
    """The dataset's root: --data-root, else the dataset's environment variable, else None."""
    env = DATA_ENV.get(cfg["dataset"])
    root = given or (os.environ.get(env) if env else None)
    return Path(root).expanduser() if root else None


# --------------------------------------------------------------------------- the plan

@dataclass
class Step:
    stage: str
    label: str
    entry: Stage
    deps: dict
    build: Callable[["Step", Work], None]
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.entry.key


class Plan:
    def __init__(self, cfg: dict, cache: Cache, root: Path | None, device: str):
        self.cfg, self.cache, self.root, self.device = cfg, cache, root, device
        self.steps: dict[str, Step] = {}
        self.shard = None
        self.records: list[Step] = []  # evaluate steps, in report order

    def add(self, stage, label, config, deps, build, meta=None) -> Step:
        entry = self.cache.stage(stage, VERSIONS[stage], config,
                                 {name: dep.key for name, dep in deps.items()})
        if entry.key not in self.steps:
            self.steps[entry.key] = Step(stage, label, entry, deps, build, meta or {})
        return self.steps[entry.key]

    # sources ---------------------------------------------------------------
    def source(self, name: str) -> Step:
        cfg = self.cfg
        if name not in cfg["sources"]:
            raise SkelpipeError(f"{cfg['_path']}: unknown source {name!r}")
        src = cfg["sources"][name]
        extract_cfg = cfg.get("extract", {})
        if src["kind"] == "dataset":
            config = {"dataset": cfg["dataset"], "options": cfg.get("data", {})}
            return self.add("skeletons", f"{cfg['dataset']} skeletons", config, {}, build_skeletons,
                            {"source": name, "label": src.get("label", name)})
        if src["kind"] == "estimator":
            extractor = src.get("extractor", extract_cfg.get("extractor", "openpifpaf"))
            if extractor == "simulated":
                base = self.source(src.get("simulate_from", extract_cfg.get("simulate_from", "")))
                config = {"profile": src["backbone"], "seed": extract_cfg.get("seed", 0)}
                label = src.get("label", name)
                if "simulated" not in label:  # simulated data say so in every table
                    label += " (simulated)"
                return self.add("simulate", f"simulated {src['backbone']}", config, {"hq": base},
                                build_simulated, {"source": name, "label": label, "extractor": "simulated"})
            if extractor != "openpifpaf":
                raise SkelpipeError(f"{cfg['_path']}: extract.extractor must be openpifpaf or "
                                    f"simulated, not {extractor!r}")
            config = {"dataset": cfg["dataset"], "options": cfg.get("data", {}),
                      "backbone": src["backbone"], "checkpoint": src.get("checkpoint", ""),
                      "long_edge": extract_cfg.get("long_edge", 641),
                      "max_people": extract_cfg.get("max_people", 2),
                      "decoder": extract_cfg.get("decoder", {})}
            return self.add("extract", f"OpenPifPaf {src['backbone']}", config, {}, build_extracted,
                            {"source": name, "label": src.get("label", name),
                             "extractor": "openpifpaf"})
        raise SkelpipeError(f"{cfg['_path']}: source {name!r} has unknown kind {src['kind']!r}")

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
        from skelpipe.learn.train import KD_FIELDS

        cfg = self.cfg
        hq, lq = self.source(setting["hq"]), self.source(setting["lq"])
        align = self.add("align", f"align {setting['name']}", dict(cfg.get("align", {})),
                         {"hq": hq, "lq": lq}, build_align)
        seeds = exp.get("seeds", [cfg["student"].get("seed", 0)])
        if not (isinstance(seeds, list) and seeds and all(isinstance(v, int) for v in seeds)
                and len(set(seeds)) == len(seeds)):
            raise SkelpipeError(f"{cfg['_path']}: experiments.seeds must be a list of distinct integers, "
                                f"got {seeds!r}")
        common = {"setting": setting["name"], "table": exp.get("table"),
                  "hq_source": hq.meta["label"], "lq_source": lq.meta["label"],
                  "extractor": lq.meta.get("extractor", "dataset")}
        for benchmark in exp.get("benchmarks", ["default"]):
            for split in range(int(exp.get("splits", 1))):
                for fraction in exp.get("hq_fraction", [1.0]):
                    pack_cfg = {**cfg.get("pack", {}), "benchmark": benchmark, "split": split,
                                "hq_fraction": fraction}
                    pack = self.add("pack", f"pack {setting['name']} {benchmark}"
                                    f"{f' split {split}' if exp.get('splits') else ''} HQ {fraction:.0%}",
                                    pack_cfg, {"align": align}, build_pack)
                    where = {**common, "benchmark": benchmark, "split": split, "hq_fraction": fraction}
                    teacher = self.add("teacher", f"teacher {setting['name']} {benchmark} HQ {fraction:.0%}",
                                       self._checked("teacher", _train_config(cfg["teacher"], stage="teacher")),
                                       {"pack": pack}, build_train)
                    self._evaluate(teacher, pack, 0.0, {**where, "model": "teacher", "kd": None, "op": 0.0,
                                                        "seed": cfg["teacher"].get("seed", 0)})
                    partmatrix = None
                    for op in exp.get("op", [0.0]):
                        for kd in exp.get("kd", ["pmsc"]):
                            for data in exp.get("student_data", ["all"]):
                                deps = {"pack": pack}
                                if kd != "none":
                                    deps["teacher"] = teacher
                                if kd == "pmsc":
                                    partmatrix = partmatrix or self.add(
                                        "partmatrix", f"part matrix {setting['name']} {benchmark} HQ {fraction:.0%}",
                                        dict(cfg.get("partmatrix", {})), {"teacher": teacher, "pack": pack},
                                        build_partmatrix)
                                    deps["partmatrix"] = partmatrix
                                for seed in seeds:
                                    scfg = {**_train_config(cfg["student"], stage="student"), "kd": kd, "op": op,
                                            "lq_data": data, "seed": seed}
                                    if kd == "none":  # KD-only settings: one baseline serves every ablation
                                        scfg = {k: v for k, v in scfg.items() if k not in KD_FIELDS}
                                    if exp.get("seed_occlusion", False):
                                        scfg["occlusion_seed"] = seed
                                    self._checked("student", scfg)
                                    student = self.add(
                                        "student", f"student {setting['name']} kd={kd} OP {op} {benchmark} "
                                        f"HQ {fraction:.0%}{' (pairs only)' if data == 'pair' else ''}"
                                        f"{f' seed {seed}' if len(seeds) > 1 else ''}", scfg, deps, build_train)
                                    self._evaluate(student, pack, op, {**where, "model": "student", "kd": kd,
                                                                       "op": op, "lq_data": data, "seed": seed})

    def _checked(self, section: str, config: dict) -> dict:
        """``config`` when it makes a valid TrainConfig; a one-line error naming the pipeline
        file and section otherwise (at plan time, so that --dry-run catches it)."""
        from skelpipe.learn.train import TrainConfig

        try:
            TrainConfig.from_dict(config)
        except SkelpipeError as e:
            raise SkelpipeError(f"{self.cfg['_path']} [{section}]: {e}") from e
        return config

    def _evaluate(self, model: Step, pack: Step, op: float, meta: dict):
        scfg = self.cfg["student"]
        config = {"op": op, "occlusion_mode": scfg.get("occlusion_mode", "track")}
        step = self.add("evaluate", f"evaluate {model.label}", config, {"model": model, "pack": pack},
                        build_evaluate, meta)
        if step not in self.records:
            self.records.append(step)

    # execution -------------------------------------------------------------
    def ordered(self) -> list[Step]:
        return sorted(self.steps.values(), key=lambda s: STAGE_ORDER.index(s.stage))

    def run(self, only=None, until=None, jobs=1):
        """Run the plan's unfinished stages in order. Under ``torchrun`` (or with RANK and
        WORLD_SIZE set) only extraction is spread over the ranks, each taking its share of
        the videos: ``torchrun --nproc-per-node N -m skelpipe run-all ntu --only extract``.

        ``jobs > 1``: the steps of one training stage (teachers, then students), which never
        depend on each other, run in that many worker processes, each with cores / jobs
        threads (small networks on a CPU train faster side by side than one after the other
        with every core: on 2 cores, 2 × 1 thread gives ~1.25× the samples/s of 1 × 2)."""
        from skelpipe.pose.extract import shard_from_env

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
            raise SkelpipeError(f"{step.label}: needs {missing[0].label} ({missing[0].stage}) first; "
                                "run without --only")

    def _run_step(self, n: int, step: Step, total: int):
        self._check_deps(step)
        console.rule(f"[{n}/{total}] {step.label}  [dim]{step.stage}/{step.key}")
        t0 = time.time()
        run_kwargs = {}
        if step.stage == "extract" and self.shard:  # one share of the videos per rank
            from skelpipe.pose import extract

            run_kwargs = {"shard": self.shard,
                          "on_commit": lambda d: extract.merge_work(d, "skeletons.h5")}
        with step.entry.run(**run_kwargs) as work:
            step.build(self, step, work)
        if step.stage == "extract" and step.entry.done:  # merged into skeletons.h5 by now
            shutil.rmtree(step.entry.path / "videos", ignore_errors=True)
        console.print(f"[green]done[/] {step.label} in {time.time() - t0:.1f} s")

    def _run_parallel(self, group, total: int, jobs: int):
        """The steps of ``group`` in ``jobs`` worker processes (spawned: each rebuilds the plan
        from the same settings and runs the steps it is given by key)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        for _, step in group:
            self._check_deps(step)
        jobs = min(jobs, len(group))
        threads = max(1, (os.cpu_count() or 1) // jobs)
        console.rule(f"[{group[0][0]}–{group[-1][0]}/{total}] {len(group)} {group[0][1].stage} stages "
                     f"in {jobs} processes × {threads} threads")
        args = (self.cfg, str(self.cache.root), self.root, self.device, threads)
        with ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), _worker_init, args) as pool:
            futures = {pool.submit(_worker_run, step.key): step for _, step in group}
            for future in as_completed(futures):
                step = futures[future]
                seconds = future.result()  # a failed step raises here, as it would in the serial loop
                console.print(f"[green]done[/] {step.label} in {seconds:.1f} s")


PARALLEL_STAGES = ("teacher", "student")
_WORKER: dict = {}


def _worker_init(cfg, cache_root, root, device, threads):
    import torch

    torch.set_num_threads(threads)
    console.quiet = True  # the parent reports each finished step; epochs would interleave
    _WORKER["plan"] = Plan(cfg, Cache(cache_root), root, device).build()


def _worker_run(key: str) -> float:
    plan = _WORKER["plan"]
    step = plan.steps[key]
    t0 = time.time()
    with step.entry.run() as work:
        step.build(plan, step, work)
    return time.time() - t0


def _train_config(section: dict, stage: str) -> dict:
    out = copy.deepcopy(section)
    out["stage"] = stage
    return out


# --------------------------------------------------------------------------- stage builders
# Each builds one stage's output into ``work.dir`` from its config and its inputs' outputs.

def build_skeletons(plan: Plan, step: Step, work: Work):
    from skelpipe.data import sources

    sources.write_dataset_store(plan.cfg["dataset"], step.entry.config["options"], plan.root,
                                work.dir / "skeletons.h5", work)


def build_simulated(plan: Plan, step: Step, work: Work):
    from skelpipe.pose import simulate

    cfg = step.entry.config
    simulate.simulate_store(step.deps["hq"].entry.path / "skeletons.h5", work.dir / "skeletons.h5",
                            profile=cfg["profile"], seed=cfg["seed"], work=work)


def build_extracted(plan: Plan, step: Step, work: Work):
    from skelpipe.pose import extract
    from skelpipe.data import sources

    cfg = step.entry.config
    videos = sources.dataset_videos(cfg["dataset"], cfg["options"], plan.root)
    extract.extract_to_work(videos, work, backbone=cfg["backbone"], checkpoint=cfg["checkpoint"] or None,
                            long_edge=cfg["long_edge"], max_people=cfg["max_people"],
                            decoder_config=cfg["decoder"] or None,
                            decoder_workers=plan.cfg.get("extract", {}).get("decoder_workers"),
                            device=plan.device, shard=plan.shard,
                            out_name=None if plan.shard else "skeletons.h5")


def build_align(plan: Plan, step: Step, work: Work):
    from skelpipe.data import align

    align.align_stores(step.deps["hq"].entry.path / "skeletons.h5",
                       step.deps["lq"].entry.path / "skeletons.h5", work, **step.entry.config)


def build_pack(plan: Plan, step: Step, work: Work):
    from skelpipe.data import pack

    pack.pack(step.deps["align"].entry.path, work, **step.entry.config)


def build_train(plan: Plan, step: Step, work: Work):
    from skelpipe.learn import train

    cfg = dict(step.entry.config)
    teacher = step.deps.get("teacher")
    partmatrix = step.deps.get("partmatrix")
    train.train(train.TrainConfig.from_dict({**cfg, "device": plan.device}),
                step.deps["pack"].entry.path, work.dir,
                teacher_dir=teacher.entry.path if teacher else None,
                part_matrix=partmatrix.entry.path / "part_matrix.npy" if partmatrix else None)


def build_partmatrix(plan: Plan, step: Step, work: Work):
    from skelpipe.learn import partmatrix

    partmatrix.compute_part_matrix(step.deps["teacher"].entry.path, step.deps["pack"].entry.path,
                                   work.dir, device=plan.device, **step.entry.config)


def build_evaluate(plan: Plan, step: Step, work: Work):
    from skelpipe.learn import evaluate

    cfg = step.entry.config
    model = step.deps["model"]
    evaluate.evaluate(model.entry.path, step.deps["pack"].entry.path, split="test",
                      which="hq" if model.stage == "teacher" else "lq", op=cfg["op"],
                      mode=cfg["occlusion_mode"], seed=None, out_dir=work.dir,
                      device=plan.device)


# --------------------------------------------------------------------------- the command

def _check_data(plan: Plan, steps):
    needs_data = [s for s in steps if s.stage in ("skeletons", "extract") and not s.entry.done
                  and plan.cfg["dataset"] != "demo"]
    if needs_data and (plan.root is None or not plan.root.is_dir()):
        dataset = plan.cfg["dataset"]
        where = f"{plan.root} does not exist" if plan.root else \
            f"no data root given (--data-root or ${DATA_ENV.get(dataset, '?')})"
        raise SkelpipeError(f"{dataset} data missing: {where}; expected under the root: "
                            f"{EXPECTED.get(dataset, '?')}")


def print_plan(plan: Plan):
    from rich.table import Table

    table = Table(title=f"plan of {plan.cfg['name']} ({len(plan.steps)} stages) — cache {plan.cache.root}")
    for col in ("#", "stage", "what", "key", "state"):
        table.add_column(col)
    colours = {"done": "green", "partial": "yellow", "missing": "dim"}
    for n, step in enumerate(plan.ordered(), 1):
        state = step.entry.state
        table.add_row(str(n), step.stage, step.label, step.key, f"[{colours[state]}]{state}")
    console.print(table)


@click.command("run-all")
@click.argument("pipeline")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="The dataset's root folder (default: $SKELPIPE_NTU_ROOT, $SKELPIPE_PENN_ROOT, …).")
@click.option("--only", type=click.Choice(STAGE_ORDER), default=None, help="Run only this stage.")
@click.option("--until", type=click.Choice(STAGE_ORDER), default=None, help="Stop after this stage.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a pipeline setting (value in TOML syntax), e.g. --set teacher.epochs=5.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $SKELPIPE_CACHE or ./cache).")
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Where results.json, results.md and plots go (default: reports/<pipeline>).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:i]")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Worker processes for the training stages (teachers, students) [default: on a CPU "
                   "min(cores, 4), on a GPU 1].")
@click.option("--dry-run", is_flag=True, help="Print the plan of stages and their cache state; run nothing.")
def run_all_command(pipeline, data_root, only, until, overrides, cache_dir, report_dir, device, jobs, dry_run):
    """Run a whole pipeline (demo, ntu, penn, sysu or a .toml file) through the stage cache.

    \b
    Example:
      skelpipe run-all demo
      skelpipe run-all ntu --data-root /data/ntu --dry-run
      skelpipe run-all penn --set extract.extractor=simulated --until teacher
    """
    cfg = load_pipeline(pipeline, overrides)
    plan = Plan(cfg, Cache(cache_dir), resolve_data_root(cfg, data_root), device).build()
    if dry_run:
        print_plan(plan)
        return
    _check_data(plan, plan.steps.values())
    from skelpipe.core.device import resolve

    on_gpu = resolve(device).type == "cuda"  # an unusable --device fails here, before any stage
    t0 = time.time()
    if only != "report":
        if jobs is None:
            jobs = 1 if on_gpu else min(os.cpu_count() or 1, 4)
        plan.run(only=only, until=until if until != "report" else None, jobs=jobs)
    if (only in (None, "report")) and (until in (None, "report", "evaluate")):
        from skelpipe.pipeline import report

        out = Path(report_dir or Path("reports") / cfg["name"])
        report.write_report(plan, out)
        console.print(f"report: {out}/results.md  ({time.time() - t0:.1f} s in all)")
