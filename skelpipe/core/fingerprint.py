"""What a stage's input is, as a short key: a finished stage's own key, or a fingerprint of the
files (names, sizes, modification times) when the input is a user's folder or file."""

import hashlib
import json
import os
from pathlib import Path


def input_key(path) -> str:
    """Cache input key of a directory: its stage key when it is a stage, else a file fingerprint."""
    path = Path(path)
    manifest = path / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["key"]
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
