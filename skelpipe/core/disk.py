"""Disk space: a check before large writes, and a full disk (ENOSPC) told in one line.

Every stage, pose store and pack checks that its filesystem keeps ``MIN_FREE_MB`` free (default
256 MiB, or ``$SKELPIPE_MIN_FREE_MB``) beyond what it is about to write, so that a run stops with
one line before a disk fills up, not with a flood of HDF5 errors halfway through a file.
"""

import errno
import os
import shutil
from pathlib import Path

from skelpipe.core.errors import SkelpipeError

MIN_FREE_MB = 256
MiB = 1 << 20


def min_free() -> int:
    """The free space (bytes) every write must leave: ``$SKELPIPE_MIN_FREE_MB`` or the default."""
    value = os.environ.get("SKELPIPE_MIN_FREE_MB", "")
    try:
        return int(float(value) * MiB) if value.strip() else MIN_FREE_MB * MiB
    except ValueError:
        raise SkelpipeError(f"$SKELPIPE_MIN_FREE_MB = {value!r}: expected a number of MiB") from None


def check_free(path, needed: int = 0, what: str = "writing") -> None:
    """Raise a ``SkelpipeError`` naming ``path`` unless its filesystem has ``needed`` bytes free
    beyond the reserve (``min_free``)."""
    path = Path(path)
    free = _free(path)
    if free < needed + min_free():
        raise SkelpipeError(f"{path}: not enough free space for {what}: {_size(free)} free, "
                            f"{_size(needed + min_free())} needed (free some space, or set "
                            "$SKELPIPE_MIN_FREE_MB)")


def _size(n: int) -> str:
    return next(f"{n / 1024 ** k:.1f} {unit}" for k, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB"), (0, "B"))
                if n >= 1024 ** k or k == 0)


def is_disk_full(error: BaseException, where=None) -> bool:
    """Whether ``error`` is a full disk: ENOSPC / EDQUOT as the OS or HDF5 reports it or, for an
    error raised while writing under ``where`` (torch says "iostream error" or "enforce fail"),
    a filesystem with less than 1 MiB left."""
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(s in str(error) for s in ("No space left on device", "errno = 28", "Disk quota exceeded")):
        return True
    return where is not None and _free(Path(where)) < MiB


def _free(path: Path) -> int:
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    return shutil.disk_usage(probe).free


def disk_full_error(path) -> SkelpipeError:
    """The one line of a full disk, naming the file (or folder) that could not be written."""
    return SkelpipeError(f"{path}: no space left on device; nothing was committed and finished work is "
                         "kept: free some space and rerun")
