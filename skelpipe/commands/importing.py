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
              help="Which pair of the file's split lists gives train / test: xsub (xsub_train + xsub_val), "
                   "1 (train1 + test1), or one of the pair's names [default: the file's only pair].")
@click.option("--num-classes", type=click.IntRange(1, MAX_CLASSES), default=None,
              help="Labels must lie below this [default: the largest label + 1].")
def import_pyskl(file, out, benchmark, num_classes):
    """A pyskl or mmaction2 annotation pickle (2D COCO-17 with scores, or NTU-25 3D) as a pose
    store, with its labels and train / test split, usable as a pipeline source (kind = "pyskl").

    The split lists come in pairs: NAME_train + NAME_val (NTU's xsub, xview, xset), trainN +
    testN (UCF101, HMDB51: --split 1, 2 or 3), train + val (FineGYM, Kinetics) or train + test
    (Diving48). The pair's train list is the training set; its test list, or else its val list,
    the test set. A file with several pairs needs --split.

    Loading a pickle can execute code: skelpipe unpickles with a loader that calls only numpy's
    array rebuilders and plain containers and refuses anything else before it runs; load files
    you trust all the same.

    \b
    Example:
      skelpipe import pyskl ntu60_hrnet.pkl --out ntu60_hrnet.h5 --split xsub
      skelpipe import pyskl hmdb51_hrnet.pkl --out hmdb51.h5 --split 1
    """
    counts = pyskl.import_store(file, out, benchmark, num_classes)
    if counts["split"] is None:
        where = "the file has no split lists, so no sample has a split"
    else:
        train, test = counts["lists"]
        where = (f"{counts['train']} train ({train}), {counts['test']} test ({test}), "
                 f"{counts['outside']} in neither")
    console.print(f"[green]wrote[/] {out}: {counts['samples']} samples ({counts['layout']}); {where}")
