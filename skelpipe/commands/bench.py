"""``skelpipe bench``: speed benchmarks. Each benchmark lives with the code it measures."""

import click

from skelpipe.cli import LazyGroup

BENCHMARKS = {"train": "skelpipe.learn.train:bench_command", "extract": "skelpipe.pose.extract:bench_command"}


@click.group("bench", cls=LazyGroup, commands=BENCHMARKS)
def bench_command():
    """Speed benchmarks; print tables of measured throughput.

    \b
    Example:
      skelpipe bench train --device cuda --amp
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4
    """
