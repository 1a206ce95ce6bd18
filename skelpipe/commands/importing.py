"""``skelpipe import pyskl``: skeletons other tools made, as a skelpipe pose store."""

import click

from skelpipe.core.console import console
from skelpipe.core.fields import MAX_CLASSES
from skelpipe.data import pyskl


@click.group("import")
def import_command():
    """Import skeletons from other tools' files.

    \b
    Example:
      skelpipe import pyskl ntu60_hrnet.pkl --out ntu60_hrnet.h5 --split xsub
    """


@import_command.command("pyskl")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The pose store (.h5) to write.")
@click.option("--split", "benchmark", default=None,
              help="Which of the file's splits gives train / test (xsub → xsub_train / xsub_val) "
                   "[default: the first].")
@click.option("--num-classes", type=click.IntRange(1, MAX_CLASSES), default=None,
              help="Labels must lie below this [default: the largest label + 1].")
def import_pyskl(file, out, benchmark, num_classes):
    """A pyskl annotation pickle (2D COCO-17 with scores, or NTU-25 3D) as a pose store, with its
    labels and train / test split, usable as a pipeline source (kind = "pyskl").

    Loading a pickle can execute code: skelpipe unpickles with a restricted unpickler that
    accepts only plain containers and numpy arrays, and checks the file's structure before its
    items; load files you trust all the same.

    \b
    Example:
      skelpipe import pyskl ntu60_hrnet.pkl --out ntu60_hrnet.h5 --split xsub
    """
    counts = pyskl.import_store(file, out, benchmark, num_classes)
    console.print(f"[green]wrote[/] {out}: {counts['samples']} samples ({counts['layout']}), "
                  f"{counts['train']} train, {counts['test']} test")
