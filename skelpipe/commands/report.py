"""``skelpipe report``: the tables and plots of what a pipeline has finished so far."""

from pathlib import Path

import click

from skelpipe.core.console import console
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.config import load_pipeline, resolve_data_root
from skelpipe.pipeline.plan import Plan
from skelpipe.pipeline.report import write_report


@click.command("report")
@click.argument("pipeline")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="The same overrides as the run-all being reported.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="The dataset's root, as for the run-all being reported (its files key the stages).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None)
@click.option("--report-dir", type=click.Path(file_okay=False), default=None,
              help="Default: reports/<pipeline>.")
def report_command(pipeline, overrides, data_root, cache_dir, report_dir):
    """Write results.json, results.md and plots from what a pipeline has finished so far.

    \b
    Example:
      skelpipe report demo
      skelpipe report ntu --report-dir reports/ntu-run1
    """
    cfg = load_pipeline(pipeline, overrides)
    plan = Plan(cfg, Cache(cache_dir), resolve_data_root(cfg, data_root), "cpu").build()
    out = Path(report_dir or Path("reports") / cfg["name"])
    write_report(plan, out)
    console.print(f"report: {out}/results.md")
    console.print(f"training curves: tensorboard --logdir {plan.cache.root}  (with skelpipe[tensorboard])")
