"""``skelpipe align``: pair an HQ and an LQ pose store through the cache."""

import json

import click

from skelpipe.core.console import console
from skelpipe.core.fields import MAX_PEOPLE, FiniteRange
from skelpipe.data.align import MISSING, OUTLIER, AlignConfig
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.stages import run_align

DEFAULT = AlignConfig()


@click.command("align")
@click.option("--hq", "hq_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="HQ pose store (dataset skeletons).")
@click.option("--lq", "lq_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="LQ pose store (extracted or simulated).")
@click.option("--missing", default=DEFAULT.missing, show_default=True, type=click.Choice(MISSING),
              help="An instance with no HQ skeleton or no detected person: keep it, or drop it.")
@click.option("--outlier", default=DEFAULT.outlier, show_default=True, type=FiniteRange(*OUTLIER),
              help="Flag instances whose alignment error / body size exceeds this.")
@click.option("--max-people", default=DEFAULT.max_people, show_default=True,
              type=click.IntRange(1, MAX_PEOPLE))
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Cache root.")
def align_command(hq_path, lq_path, missing, outlier, max_people, cache_dir):
    """Pair LQ people and frames with HQ people and frames; print where the aligned pair is.

    \b
    Example:
      skelpipe align --hq cache/skeletons/KEY/skeletons.h5 --lq cache/extract/KEY/skeletons.h5
    """
    path = run_align(Cache(cache_dir), hq_path, lq_path, AlignConfig(missing, outlier, max_people))
    stats = json.loads((path / "manifest.json").read_text()).get("align", {})
    err = stats.get("align_error")
    console.print(f"{stats.get('written', 0)} of {stats.get('instances', 0)} instances written, "
                  f"{stats.get('paired', 0)} paired, {stats.get('no_hq', 0)} without HQ, "
                  f"{stats.get('no_lq_person', 0)} without an LQ person, {stats.get('reordered', 0)} "
                  f"reordered, {stats.get('frame_mismatch', 0)} frame-count mismatches, "
                  f"{len(stats.get('outliers', []))} outliers"
                  + (f"; alignment error / body size: mean {err['mean']:.3f}, median "
                     f"{err['median']:.3f}, max {err['max']:.3f}" if err else ""))
    click.echo(str(path))
