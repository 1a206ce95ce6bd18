"""``skelpipe bench``: speed benchmarks. Each benchmark lives with the code it measures."""

import importlib

import click

BENCHMARKS = {"train": "skelpipe.train:bench_command", "extract": "skelpipe.extract:bench_command"}


class _Benchmarks(click.Group):
    def list_commands(self, ctx):
        return sorted(BENCHMARKS)

    def get_command(self, ctx, name):
        if name not in BENCHMARKS:
            return None
        module, attr = BENCHMARKS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group("bench", cls=_Benchmarks)
def bench_command():
    """Speed benchmarks; print tables of measured throughput.

    \b
    Example:
      skelpipe bench train --device cuda --amp
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4
    """
