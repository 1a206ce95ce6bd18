"""Dataset readers, one module a dataset.

- ``ntu``: NTU RGB+D 60/120 ``.skeleton`` files (Kinect v2, 25 joints), sample names, benchmarks.
- ``penn``: Penn Action label ``.mat`` files (13 annotated joints) and frame folders.
- ``sysu``: SYSU 3D HOI per-video ``.mat`` skeletons (Kinect v1, 20 joints) and its two settings.
- ``custom``: a folder of the user's videos with a ``labels.csv``.
- ``demo``: a small synthetic dataset for the demo pipeline.

Each module ends with its ``Dataset`` (``base.py``: the protocol and the registry); importing
this package registers them all. Every reader fails on bad input with one ``SkelpipeError`` line
naming the file and the problem; every directory scan reports bad files and goes on.
"""

from skelpipe.data.datasets import custom, demo, ntu, penn, sysu  # noqa: F401  (they register)
from skelpipe.data.datasets.base import DATASETS, Dataset, Skeletons, for_benchmark, get

__all__ = ["DATASETS", "Dataset", "Skeletons", "for_benchmark", "get"]
