"""Crash-safe file writes: a temporary file beside the target, renamed over it when complete
(atomic on one filesystem), so a kill at any moment leaves the old file or the new one, never
half of one."""

import contextlib
import errno
import json
import os
from pathlib import Path

from skelpipe.core.disk import disk_full_error, is_disk_full


def _temporary(path: Path, tag) -> Path:
    return path.with_name(f".{path.stem}.tmp-{tag}{path.suffix}")


def remove_stale(path) -> None:
    """Remove the temporaries of ``path`` that killed writers left behind."""
    path = Path(path)
    for stale in path.parent.glob(_temporary(path, "*").name):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path to write; on a clean exit it replaces ``path``, else it is removed.

    The temporary name keeps the suffix (writers such as OpenCV choose the format by it).
    """
    path = Path(path)
    if not path.parent.is_dir():  # said of the target, not of the temporary a writer would fail on
        raise NotADirectoryError(errno.ENOTDIR, "its folder does not exist or is not a directory", str(path))
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(errno.EACCES, "its folder is not writable", str(path))
    tmp = _temporary(path, os.getpid())
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk, as the OS, HDF5 or torch says it: one line
        if is_disk_full(e, path.parent):
            raise disk_full_error(path) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")
