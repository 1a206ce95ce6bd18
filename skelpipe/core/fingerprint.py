"""What a stage's input is, as a short key: a finished stage's own key, or a fingerprint of the
files (names, sizes, modification times) when the input is a user's folder or file."""

import hashlib
import json
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
