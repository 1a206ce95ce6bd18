"""What a stage's input is, as a short key: a finished stage's own key, or a fingerprint of the
files (names, sizes, modification times) when the input is a user's folder or file; and the
record of a finished stage's files (sizes, checksums) that is checked before it is reused."""

import hashlib
import json
import os
from pathlib import Path

from skelpipe.core.errors import SkelpipeError


def input_key(path) -> str:
    """Cache input key of a directory: its stage key when it is a stage, else a file fingerprint."""
    path = Path(path)
    manifest = path / "manifest.json"
    if manifest.exists():
        try:
            return str(json.loads(manifest.read_text())["key"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise SkelpipeError(f"{manifest} is not a stage manifest (remove the folder and run its "
                                "stage again)") from None
    h = hashlib.sha256(str(path.resolve()).encode())
    for p in sorted(path.glob("*.h5")) if path.is_dir() else [path]:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def files_key(root, paths) -> str:
    """A short key of a set of files (or folders) under ``root``: the resolved root, and each
    one's path relative to it, size and modification time. A changed, added or removed file
    changes it; nothing is read (stat only), so it is cheap on tens of thousands of files."""
    root = Path(root).resolve()
    h = hashlib.sha256(str(root).encode())
    for p in sorted(Path(p) for p in paths):
        try:
            st = p.stat()
        except OSError:
            h.update(f"{p}:missing\n".encode())
            continue
        rel = p.resolve().relative_to(root) if p.resolve().is_relative_to(root) else p.resolve()
        size = st.st_size if p.is_file() else sum(1 for _ in p.iterdir())  # a folder: its entries
        h.update(f"{rel}:{size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def content_key(path, memo: Path | None = None) -> str:
    """A short hash of a file's content (a checkpoint replaced at the same path changes it).
    ``memo``: a folder where hashes are kept by (path, size, mtime), so each file is read once."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:20]
    if memo is not None and (memo / stamp).is_file():
        return (memo / stamp).read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    key = h.hexdigest()[:16]
    if memo is not None:
        tmp = memo / f".{stamp}.{os.getpid()}"
        try:
            memo.mkdir(parents=True, exist_ok=True)
            tmp.write_text(key)
            os.replace(tmp, memo / stamp)
        except OSError:  # a read-only cache: the memo only saves reading the file again
            pass
    return key


# A finished stage's files, recorded in its manifest and checked before it is reused.
END_BYTES = 1 << 20  # a file larger than twice this is hashed by its first and last MiB


def file_digest(path, size: int) -> str:
    """sha256 of a file, or of its first and last MiB when it is larger than 2 MiB: a fixed
    cost of about a millisecond on a pack of gigabytes. With the size it catches a truncated
    or replaced file and damage at either end; damage in the middle of a large file is not seen."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= 2 * END_BYTES:
            for block in iter(lambda: f.read(END_BYTES), b""):
                h.update(block)
        else:
            h.update(f.read(END_BYTES))
            f.seek(size - END_BYTES)
            h.update(f.read(END_BYTES))
    return h.hexdigest()


def files_record(folder) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder``, leaving out the
    hidden entries at its top (bookkeeping: finished units, bad items, temporaries)."""
    folder = Path(folder)
    out = {}
    for top in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        for p in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if p.is_file():
                size = p.stat().st_size
                out[p.relative_to(folder).as_posix()] = {"size": size, "sha256": file_digest(p, size)}
    return out


def record_problem(folder, record: dict) -> str | None:
    """The first way ``folder``'s files differ from ``record`` (``files_record``), in words
    naming the file; None when they match."""
    folder = Path(folder)
    for name, want in record.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{path} is missing ({want['size']:,} bytes recorded)"
        if size != want["size"]:
            return f"{path} has {size:,} bytes, {want['size']:,} recorded"
        try:
            if file_digest(path, size) != want["sha256"]:
                return f"{path} does not match its recorded checksum"
        except OSError as e:
            return f"{path} cannot be read ({e.strerror or e})"
    return None
