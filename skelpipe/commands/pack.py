"""``skelpipe pack``: an aligned HQ/LQ pair into training tensors, through the cache."""

import json

import click

from skelpipe.core.console import console
from skelpipe.data.pack import BENCHMARKS, SPLITS, PackConfig
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.stages import run_pack


@click.command("pack")
@click.option("--aligned", "aligned_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Output directory of the align stage (hq.h5 + lq.h5).")
@click.option("--benchmark", default="default", show_default=True, type=click.Choice(BENCHMARKS),
              help="Split rule: default = the samples' split attribute; NTU protocols; SYSU settings.")
@click.option("--split", default=0, show_default=True, help="SYSU: which of the 30 random splits.")
@click.option("--frames", default=300, show_default=True, help="T: pad / truncate to this many frames.")
@click.option("--sample-frames", default=0, show_default=True,
              help="> 0: uniformly sample sequences to this many frames instead.")
@click.option("--float16", is_flag=True, help="Store float16 (halves the file; load_split returns float32).")
@click.option("--hq-fraction", default=1.0, show_default=True,
              help="Fraction of training instances keeping HQ.")
@click.option("--pair-seed", default=0, show_default=True)
@click.option("--test-seed", default=0, show_default=True, help="Base seed of the fixed test occlusion.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False), help="Cache root.")
def pack_command(aligned_dir, benchmark, split, frames, sample_frames, float16, hq_fraction,
                 pair_seed, test_seed, cache_dir):
    """Pack an aligned HQ/LQ pair into normalised (N, C, T, V, M) tensors per split.

    \b
    Example:
      skelpipe pack --aligned cache/align/1a2b3c4d5e6f7a8b --benchmark xsub --hq-fraction 0.8 --float16
    """
    cfg = PackConfig(benchmark=benchmark, split=split, frames=frames, sample_frames=sample_frames,
                     dtype="float16" if float16 else "float32", hq_fraction=hq_fraction,
                     pair_seed=pair_seed, test_seed=test_seed)
    path = run_pack(Cache(cache_dir), aligned_dir, cfg)
    counts = json.loads((path / "manifest.json").read_text()).get("counts", {})
    for split in SPLITS:
        c = counts[split]
        console.print(f"{split}: {c['n']} instances, {c['pair']} paired, {c['solitary']} solitary")
    if counts.get("outside_benchmark"):
        console.print(f"{counts['outside_benchmark']} instances outside benchmark {benchmark}")
    click.echo(str(path))
