"""The stage cache: every pipeline stage's output lives in ``<root>/<stage>/<key>/``.

``key`` is a short hash of (stage name, stage version, stage config, keys of its inputs), so a
changed setting re-keys that stage and everything downstream, and nothing upstream. Work
happens in ``<key>.partial/``; only a finished stage is renamed into place, with a
``manifest.json`` (config, inputs, versions, timings, counts, bad items). Resume is per unit
inside the partial directory. One process per key at a time (an ``fcntl`` lock whose file names
the holder).

    cache = Cache()
    st = cache.stage("pack", version=1, config=cfg, inputs={"align": align.key})
    if not st.done:
        with st.run() as work:
            for unit in units:
                if not work.is_done(unit):
                    ...write into work.dir atomically...
                    work.mark_done(unit)
    st.path  # the finished output
"""

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from pathlib import Path

import click

from skelpipe.core.atomic import write_json
from skelpipe.core.errors import SkelpipeError

MANIFEST = "manifest.json"


def default_root() -> Path:
    return Path(os.environ.get("SKELPIPE_CACHE") or "cache")


def stage_key(name: str, version: int, config: dict, inputs: dict) -> str:
    payload = json.dumps({"stage": name, "version": version, "config": config, "inputs": inputs},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Lock:
    """An exclusive, non-blocking ``fcntl`` lock; the file records who holds it."""

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.fd = Path(path), what, None

    def acquire(self, blocking: bool = False):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise SkelpipeError(f"{self.what} is in use by {holder}; wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()} "
                     f"({' '.join(sys.argv[:4])})".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class Work:
    """The partial directory of a running stage, with per-unit resume and bad-item records."""

    def __init__(self, stage: "Stage", directory: Path):
        self.stage, self.dir = stage, directory
        self.notes: dict = {}
        (self.dir / ".units").mkdir(parents=True, exist_ok=True)
        (self.dir / ".bad").mkdir(exist_ok=True)

    @staticmethod
    def _name(unit: str) -> str:
        return hashlib.sha1(unit.encode()).hexdigest()[:20] + ".json"

    def is_done(self, unit: str) -> bool:
        return (self.dir / ".units" / self._name(unit)).exists()

    def mark_done(self, unit: str, info: dict | None = None) -> None:
        write_json(self.dir / ".units" / self._name(unit), {"unit": unit, "info": info or {}})

    def done_units(self) -> dict[str, dict]:
        records = (json.loads(p.read_text()) for p in (self.dir / ".units").glob("*.json"))
        return {r["unit"]: r["info"] for r in records}

    def report_bad(self, item: str, reason: str) -> None:
        from skelpipe.core.console import console

        console.print(f"[yellow]skipped[/] {item}: {reason}")
        write_json(self.dir / ".bad" / self._name(item), {"item": item, "reason": reason})

    def bad_items(self) -> list[dict]:
        return sorted((json.loads(p.read_text()) for p in (self.dir / ".bad").glob("*.json")),
                      key=lambda r: r["item"])

    def note(self, **fields) -> None:
        self.notes.update(fields)


class Stage:
    def __init__(self, cache: "Cache", name: str, version: int, config: dict, inputs: dict):
        self.cache, self.name, self.version = cache, name, version
        self.config, self.inputs = config, dict(inputs)
        self.key = stage_key(name, version, config, self.inputs)
        base = cache.root / name
        self.path = base / self.key
        self.partial = base / f"{self.key}.partial"
        self.lock_path = base / f"{self.key}.lock"

    def __repr__(self):
        return f"Stage({self.name}/{self.key})"

    @property
    def done(self) -> bool:
        return (self.path / MANIFEST).exists()

    @property
    def state(self) -> str:
        if self.done:
            return "done"
        return "partial" if self.partial.exists() else "missing"

    def manifest(self) -> dict:
        if not self.done:
            raise SkelpipeError(f"{self.path}: stage {self.name} has not finished")
        return json.loads((self.path / MANIFEST).read_text())

    @contextlib.contextmanager
    def run(self, shard: tuple[int, int] | None = None, on_commit=None):
        """Lock, yield the partial directory's ``Work``, and commit on a clean exit.

        With ``shard=(i, n)`` each shard holds its own lock; the last shard to finish calls
        ``on_commit(work.dir)`` (e.g. to merge shard files) and commits the stage.
        """
        suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
        what = f"{self.cache.root / self.name / self.key}{suffix.replace('.', ' ')}"
        with Lock(self.lock_path.with_name(self.lock_path.name + suffix), what):
            self.partial.mkdir(parents=True, exist_ok=True)
            started = self.partial / ".started"
            if not started.exists():
                started.write_text(_now())
            work = Work(self, self.partial)
            t0 = time.time()
            yield work
            elapsed = time.time() - t0
            if shard is not None:
                (self.partial / ".shards").mkdir(exist_ok=True)
                write_json(self.partial / ".shards" / f"{shard[0]}-of-{shard[1]}.json",
                           {"elapsed_s": elapsed, **work.notes})
        if shard is not None:
            with Lock(self.lock_path.with_name(self.lock_path.name + ".commit"), what):
                finished = list((self.partial / ".shards").glob(f"*-of-{shard[1]}.json"))
                if self.done or len(finished) < shard[1]:
                    return
                if on_commit is not None:
                    on_commit(work.dir)
                self._commit(work, sum(json.loads(p.read_text())["elapsed_s"] for p in finished))
        else:
            if on_commit is not None:
                on_commit(work.dir)
            self._commit(work, elapsed)

    def _commit(self, work: Work, elapsed: float):
        manifest = {
            "stage": self.name, "key": self.key, "version": self.version,
            "config": self.config, "inputs": self.inputs,
            "started": (self.partial / ".started").read_text(), "finished": _now(),
            "elapsed_s": round(elapsed, 3),
            "units": len(work.done_units()), "bad_items": work.bad_items(),
            "versions": _versions(), **work.notes,
        }
        write_json(self.partial / MANIFEST, manifest)
        if self.path.exists():  # an earlier, unfinished commit or a racing run: keep one
            shutil.rmtree(self.path)
        os.rename(self.partial, self.path)

    def ensure(self, build, **run_kwargs) -> Path:
        """Run ``build(work)`` inside ``run()`` unless the stage is done; return its path."""
        if not self.done:
            with self.run(**run_kwargs) as work:
                build(work)
        return self.path


def _versions() -> dict:
    import numpy

    import skelpipe

    out = {"python": platform.python_version(), "skelpipe": skelpipe.__version__,
           "numpy": numpy.__version__}
    for name in ("torch", "h5py", "openpifpaf"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


class Cache:
    def __init__(self, root=None):
        self.root = Path(root) if root else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise SkelpipeError(f"{self.root}: the cache root is not a directory "
                                "(check --cache-dir or $SKELPIPE_CACHE)")

    def stage(self, name: str, version: int, config: dict, inputs: dict | None = None) -> Stage:
        return Stage(self, name, version, config, inputs or {})

    def entries(self):
        """(stage name, key, state, size in bytes, manifest or None), finished and partial."""
        if not self.root.is_dir():
            return
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for d in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                partial = d.name.endswith(".partial")
                key = d.name.removesuffix(".partial")
                manifest = None
                if not partial and (d / MANIFEST).exists():
                    manifest = json.loads((d / MANIFEST).read_text())
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                yield stage_dir.name, key, "partial" if partial else "done", size, manifest

    def is_locked(self, stage: str, key: str) -> bool:
        for lock_file in (self.root / stage).glob(f"{key}.lock*"):
            try:
                Lock(lock_file, str(lock_file)).acquire().release()
            except SkelpipeError:
                return True
        return False


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@click.group("cache")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root (default: $SKELPIPE_CACHE or ./cache).")
@click.pass_context
def cache_command(ctx, cache_dir):
    """Show and prune the stage cache.

    \b
    Example:
      skelpipe cache ls
      skelpipe cache gc --older-than 30 --dry-run
    """
    ctx.obj = Cache(cache_dir)


@cache_command.command("ls")
@click.option("--stage", default=None, help="Only this stage.")
@click.pass_obj
def cache_ls(cache: Cache, stage):
    """List cached stage outputs: stage, key, state, size, finish time.

    \b
    Example:
      skelpipe cache ls --stage train
    """
    from rich.table import Table

    from skelpipe.core.console import console

    table = Table(title=f"cache: {cache.root}")
    for col in ("stage", "key", "state", "size", "finished", "units", "bad"):
        table.add_column(col)
    total = 0
    for name, key, state, size, manifest in cache.entries():
        if stage and name != stage:
            continue
        if state == "partial" and cache.is_locked(name, key):
            state = "running"
        total += size
        m = manifest or {}
        table.add_row(name, key, state, _human(size), m.get("finished", ""), str(m.get("units", "")),
                      str(len(m.get("bad_items", []))) if manifest else "")
    console.print(table)
    console.print(f"total {_human(total)}")


@cache_command.command("gc")
@click.option("--stage", default=None, help="Only this stage.")
@click.option("--older-than", type=float, default=None,
              help="Also remove finished entries finished more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_obj
def cache_gc(cache: Cache, stage, older_than, dry_run):
    """Remove abandoned partial work (not locked by a running process) and, with
    --older-than, old finished entries.

    \b
    Example:
      skelpipe cache gc --dry-run
    """
    from skelpipe.core.console import console

    cutoff = None if older_than is None else time.time() - older_than * 86400
    freed = 0
    for name, key, state, size, manifest in list(cache.entries()):
        if stage and name != stage:
            continue
        path = cache.root / name / (key + (".partial" if state == "partial" else ""))
        if state == "partial":
            if cache.is_locked(name, key):
                continue
        elif cutoff is None or path.stat().st_mtime > cutoff:
            continue
        console.print(f"{'would remove' if dry_run else 'removing'} {path} ({_human(size)})")
        freed += size
        if not dry_run:
            shutil.rmtree(path)
    console.print(f"{'would free' if dry_run else 'freed'} {_human(freed)}")
