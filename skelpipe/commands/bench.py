"""``skelpipe bench``: speed and memory benchmarks. Each command parses its options into its
benchmark's settings and calls into ``skelpipe.bench``; ``train``, ``extract`` and ``memory``
print a table, or with ``--json`` one JSON line (what ``bench all`` collects).

Each command's options are named as its settings' fields, so ``**settings`` builds them."""

import json
from pathlib import Path

import click

from skelpipe.bench.extraction import ExtractBench, measure_extraction
from skelpipe.bench.memory import MemoryBench, measure_memory
from skelpipe.bench.report import load_table, markdown, write_into_readme
from skelpipe.bench.suite import REFERENCE_ENV, Suite, run_suite
from skelpipe.bench.training import TrainBench, measure_training, parse_runs
from skelpipe.core.console import console
from skelpipe.core.fields import MAX_BATCH, MAX_FRAMES, IntList
from skelpipe.pose.settings import BATCH_SIZE, BATCH_TEXT, DECODER_WORKERS, DEFAULT_LONG_EDGE, LONG_EDGE

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of the table.")


def show(result, as_json: bool):
    """A benchmark's result: its JSON line on stdout, or its table."""
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        console.print(result.table())


@click.group("bench")
def bench_command():
    """Speed and memory benchmarks; print tables of measured throughput.

    \b
    Example:
      skelpipe bench all --device cpu --out bench-cpu.json
      skelpipe bench train --device cuda --amp
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4
    """


@bench_command.command("all")
@click.option("--device", default="auto", show_default=True, help="cuda or cpu (auto: cuda when usable).")
@click.option("--quick", is_flag=True, help="Fewer steps, frames and repeats (a few minutes on 2 CPU cores).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The JSON to write [bench-<device>.json].")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help=f"The reference ST-GCN script (reference_stgcn.py) [${REFERENCE_ENV}, or "
                   "../shared/bench/reference_stgcn.py]. Without it, no training ratio.")
@click.option("--video", type=click.Path(exists=True, path_type=Path), default=None,
              help="A clip for the extraction benchmark [a synthetic one].")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A trained OpenPifPaf checkpoint for the extraction benchmark [a random network with the "
                   "fields of two people: bench extract --weights people].")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Side-by-side repeats [2; quick: 1].")
def bench_all(**settings):
    """Measure training, distillation, evaluation, extraction and memory, each beside its
    reference in the same call, and write one JSON (figures, ratios, the machine, peak memory).

    Needs the reference ST-GCN script for the training ratios and OpenPifPaf for extraction;
    what cannot be measured is listed in the JSON's ``not_measured``. ``skelpipe bench table``
    prints the JSON as the README's table.

    \b
    Example:
      skelpipe bench all --device cuda --out bench-gpu.json
      skelpipe bench all --device cpu --quick
    """
    report, out = run_suite(Suite(**settings))
    console.print(markdown(report))
    console.print(f"wrote {out} ({report['wall_s']:.0f} s)")


@bench_command.command("table")
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--readme", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Replace the table of this device in this file (between its generated markers).")
def bench_table(report, readme):
    """Print a ``bench all`` JSON as a Markdown table, or write it into the README.

    \b
    Example:
      skelpipe bench table docs/bench/cpu.json --readme README.md
    """
    data, table = load_table(report)
    if readme is None:
        click.echo(table, nl=False)
        return
    write_into_readme(readme, data, table)
    console.print(f"wrote the table of {report} into {readme}")


@bench_command.command("train")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bf16 autocast where native (CUDA; a CPU with AMX or AVX512-BF16).")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="Timed steps per run (after a warm-up epoch of as many).")
@click.option("--frames", type=click.IntRange(1, MAX_FRAMES), default=300, show_default=True, help="T.")
@click.option("--channels", type=IntList(), default=None, help="Block channels [default: ST-GCN's].")
@click.option("--runs", default="teacher,none,kl,global-msc,pmsc", show_default=True,
              help="Which runs (teacher and/or student kd variants).")
@click.option("--profile", is_flag=True, help="Print torch.profiler's top operators of each run.")
@JSON_OPTION
def bench_train(runs, as_json, **settings):
    """Training throughput (samples/s) of the teacher (ntu25, 3D) and the student (coco17, 2D)
    with each distillation variant, and the teacher's inference throughput, on NTU-60-shaped
    random data (M=2, 60 classes).

    Each run is the real training loop for two epochs of --steps batches; the second (warm)
    epoch is timed, without its first step (which also takes the once-an-epoch gradient-norm
    diagnostic of a distillation run: one extra backward pass). Overhead = student time per
    sample relative to the student without distillation (teacher features cached, as in training).

    \b
    Example:
      skelpipe bench train --device cuda --amp --steps 50
      skelpipe bench train --device cpu --steps 2 --frames 64 --runs none,pmsc
    """
    settings = TrainBench(runs=parse_runs(runs), progress=not as_json, **settings)
    show(measure_training(settings), as_json)


@bench_command.command("extract")
@click.option("--backbone", required=True, help="Backbone / checkpoint name (as for skelpipe extract).")
@click.option("--video", required=True, type=click.Path(exists=True, path_type=Path),
              help="One video (or frame folder).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A local checkpoint.")
@click.option("--weights", type=click.Choice(["checkpoint", "people", "biased", "random"]), default="checkpoint",
              show_default=True,
              help="checkpoint: the named / given checkpoint; people: random network whose fields are those of "
                   "two people walking across the frame (a trained network's load on a clear clip); biased: "
                   "heads fixed to a person at every cell (a grid of people: decoder very busy); random: "
                   "randomly initialised network.")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(*BATCH_SIZE), default=None, help=f"[{BATCH_TEXT}]")
@click.option("--long-edge", type=click.IntRange(*LONG_EDGE), default=DEFAULT_LONG_EDGE, show_default=True)
@click.option("--decoder-workers", type=click.IntRange(*DECODER_WORKERS), default=None)
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Use only the first N frames.")
@click.option("--skip-openpifpaf-video", is_flag=True, help="Do not run python -m openpifpaf.video.")
@JSON_OPTION
def bench_extract(as_json, **settings):
    """Frames/s on one video: skelpipe extract end to end, the network alone, and python -m openpifpaf.video.

    \b
    Example:
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4 --device cuda
      skelpipe bench extract --backbone mobilenetv3small --video clip.mp4 --weights biased --device cpu
    """
    show(measure_extraction(ExtractBench(progress=not as_json, **settings)), as_json)


@bench_command.command("memory")
@click.option("--samples", type=click.IntRange(1, 10**7), default=40091, show_default=True,
              help="Training instances (NTU-60 x-sub).")
@click.option("--frames", type=click.IntRange(1, MAX_FRAMES), default=300, show_default=True, help="T.")
@click.option("--stage", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True,
              help="student: PMSC distillation with the teacher run online on B_H (read from disk too).")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=16, show_default=True)
@click.option("--steps", type=click.IntRange(1, 100_000), default=3, show_default=True,
              help="Training steps (one epoch cut short).")
@click.option("--channels", type=IntList(), default=None, help="Block channels [default: ST-GCN's].")
@click.option("--device", default="auto", show_default=True)
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the pack (a sparse file: it takes almost no disk) [a temporary folder].")
@JSON_OPTION
def bench_memory(as_json, **settings):
    """Peak host memory of training on an NTU-60-sized pack that does not fit in memory.

    The pack holds --samples × 3 × T × 25 × 2 HQ (ntu25) and × 17 LQ (coco17) float32
    skeletons (7.2 + 4.9 GB at NTU-60's 40,091 × 300 frames), written as a sparse file: the
    arrays read as zeros and take no disk. Training reads it as ``skelpipe train`` does (rows
    from disk when a split exceeds a quarter of the RAM) for --steps steps.

    \b
    Example:
      skelpipe bench memory --device cpu
      skelpipe bench memory --stage student --steps 2 --json
    """
    show(measure_memory(MemoryBench(**settings)), as_json)
