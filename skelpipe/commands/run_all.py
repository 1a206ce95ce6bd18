"""``skelpipe run-all``: a whole pipeline through the stage cache, then its report."""

import os
import time
from pathlib import Path

import click
from rich.table import Table

from skelpipe.core.console import console
from skelpipe.core.device import resolve
from skelpipe.pipeline import report
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.config import (
    load_pipeline,
    resolve_data_root,
)
from skelpipe.pipeline.plan import STAGE_ORDER, Plan


def print_plan(plan: Plan):
    """The plan's stages, their cache state and why each that is not done will run."""
    table = Table(title=f"plan of {plan.cfg['name']} ({len(plan.steps)} stages) — cache {plan.cache.root}")
    for col in ("#", "stage", "what", "key", "state", "why"):
        table.add_column(col)
    colours = {"done": "green", "damaged": "red", "partial": "yellow", "missing": "dim"}
    states = [(step, step.entry.state) for step in plan.ordered()]
    reasons = plan.cache.reasons(step.entry for step, state in states if state != "done")
    for n, (step, state) in enumerate(states, 1):
        table.add_row(str(n), step.stage, step.label, step.key, f"[{colours[state]}]{state}",
                      reasons.get(step.key, ""))
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
@click.option("--dry-run", is_flag=True,
              help="Print the plan of stages, their cache state and why each will run (the settings, inputs "
                   "or code version that changed its key); run nothing.")
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
    plan.check_data()
    on_gpu = resolve(device).type == "cuda"  # an unusable --device fails here, before any stage
    t0 = time.time()
    with plan.cache.hold(s.entry for s in plan.ordered()):  # cache gc leaves this run's stages alone
        if only != "report":
            if jobs is None:
                jobs = 1 if on_gpu else min(os.cpu_count() or 1, 4)
            plan.run(only=only, until=until if until != "report" else None, jobs=jobs)
        if (only in (None, "report")) and (until in (None, "report", "evaluate")):
            out = Path(report_dir or Path("reports") / cfg["name"])
            report.write_report(plan, out)
            console.print(f"report: {out}/results.md  ({time.time() - t0:.1f} s in all)")
            console.print(f"training curves: tensorboard --logdir {plan.cache.root}  (with skelpipe[tensorboard])")
