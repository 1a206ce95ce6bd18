"""The stage cache: every pipeline stage's output lives in ``<root>/<stage>/<key>/``.

``key`` is a short hash of (stage name, stage version, stage config, keys of its inputs), so a
changed setting re-keys that stage and everything downstream, and nothing upstream; what each
stage is (its version, settings and build) is the caller's (``pipeline.stages``). Work
happens in ``<key>.partial/``; only a finished stage is renamed into place, with a
``manifest.json`` (the key's ingredients — version, config, inputs — and the library versions,
timings, counts, bad items); ``Cache.reasons`` compares a key's ingredients with those of the
stage's finished entries. Resume is per unit inside the partial directory. One process per key
at a time (an ``fcntl`` lock whose file names the holder). The manifest records the stage's
files (size and checksum, ``files_record``); a finished stage whose files no longer match is
"damaged": never reused, reported in one line and recomputed.

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

import numpy

import skelpipe
from skelpipe.core.atomic import write_json
from skelpipe.core.console import console
from skelpipe.core.disk import check_free, disk_full_error, is_disk_full
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fingerprint import files_record, record_problem
from skelpipe.core.work import Work

MANIFEST = "manifest.json"
# What a partial directory holds besides its work: nothing a rerun could resume from.
BOOKKEEPING = (".started", ".units", ".bad")


def default_root() -> Path:
    return Path(os.environ.get("SKELPIPE_CACHE") or "cache")


def stage_key(name: str, version: int, config: dict, inputs: dict) -> str:
    payload = json.dumps({"stage": name, "version": version, "config": config, "inputs": inputs},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_manifest(folder) -> dict:
    """A finished stage's manifest; SkelpipeError (one line naming the file) when it is missing
    or is not a manifest."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SkelpipeError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SkelpipeError(f"{path} is not a readable manifest ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise SkelpipeError(f"{path} is not a stage manifest")
    return manifest


def damage(folder) -> str | None:
    """Why the finished stage in ``folder`` cannot be reused (None: it can): a missing or bad
    manifest, one for another key, or a file that differs from the manifest's record. A manifest
    without a record (written before records were kept) is trusted."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
        if manifest.get("key") != folder.name:
            return f"{folder / MANIFEST} names key {manifest.get('key')!r}"
        return record_problem(folder, manifest.get("files", {}))
    except SkelpipeError as e:
        return str(e)
    except (KeyError, TypeError, AttributeError):
        return f"{folder / MANIFEST} has a malformed file record"


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
        """Finished, and its files are those its manifest records."""
        return self.path.is_dir() and damage(self.path) is None

    @property
    def state(self) -> str:
        """done, damaged (finished once, its files changed since), partial or missing."""
        if self.path.is_dir():
            return "damaged" if damage(self.path) else "done"
        return "partial" if self.partial.exists() else "missing"

    def manifest(self) -> dict:
        if not self.done:
            raise SkelpipeError(f"{self.path}: stage {self.name} has not finished")
        return read_manifest(self.path)

    def damage_line(self) -> str | None:
        """The one line that says why the finished output cannot be reused (None: it can, or
        there is none)."""
        why = damage(self.path) if self.path.is_dir() else None
        return f"[yellow]damaged[/] {self.name}/{self.key}: {why}; recomputing it" if why else None

    def _discard_damaged(self):
        """Remove a damaged finished output (under the stage's lock), saying why, so that the run
        that follows recomputes it."""
        line = self.damage_line()
        if line:
            console.print(line, soft_wrap=True)
            shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def run(self, shard: tuple[int, int] | None = None, on_commit=None, wait: bool = False):
        """Lock, yield the partial directory's ``Work``, and commit on a clean exit.

        The lock is checked again once taken: if another process finished the stage meanwhile,
        this yields None and commits nothing (``ensure`` then reuses it). ``wait``: wait for a
        process that holds the lock instead of failing at once. With ``shard=(i, n)`` each shard
        holds its own lock; the last shard to finish calls ``on_commit(work.dir)`` (e.g. to merge
        shard files) and commits the stage.
        """
        suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
        what = f"{self.cache.root / self.name / self.key}{suffix.replace('.', ' ')}"
        lock = Lock(self.lock_path.with_name(self.lock_path.name + suffix), what)
        try:
            lock.acquire()
        except SkelpipeError as busy:
            if not wait:
                raise
            console.print(f"[dim]waiting: {busy}")
            lock.acquire(blocking=True)
        try:
            if self.done:  # finished by another process while we waited for the lock
                yield None
                return
            self._discard_damaged()
            check_free(self.partial, what=f"the {self.name} stage")
            self.partial.mkdir(parents=True, exist_ok=True)
            started = self.partial / ".started"
            if not started.exists():
                started.write_text(_now())
            work = Work(self.partial)
            t0 = time.time()
            try:
                yield work
            except BaseException:
                self._drop_if_empty(work)
                raise
            elapsed = time.time() - t0
            if shard is None:  # committed under the lock: whoever takes it next sees it done
                if on_commit is not None:
                    on_commit(work.dir)
                self._commit(work, elapsed)
                return
            (self.partial / ".shards").mkdir(exist_ok=True)
            write_json(self.partial / ".shards" / f"{shard[0]}-of-{shard[1]}.json",
                       {"elapsed_s": elapsed, **work.notes})
        except (OSError, RuntimeError) as e:  # a full disk anywhere in the stage: one line
            if is_disk_full(e, self.partial):
                raise disk_full_error(getattr(e, "filename", None) or self.partial) from e
            raise
        finally:
            lock.release()
        with Lock(self.lock_path.with_name(self.lock_path.name + ".commit"), what):
            finished = list((self.partial / ".shards").glob(f"*-of-{shard[1]}.json"))
            if self.done or len(finished) < shard[1]:
                return
            if on_commit is not None:
                on_commit(work.dir)
            self._commit(work, sum(json.loads(p.read_text())["elapsed_s"] for p in finished))

    def _drop_if_empty(self, work: Work):
        """A failed run that left nothing a rerun could resume leaves no empty ``.partial``. Any
        finished unit, shard or file besides the bookkeeping (a training run's ``last.pt``, a
        chunk) stays: no exception or signal deletes work that a rerun would resume."""
        if work.done_units() or any(p.name not in BOOKKEEPING for p in self.partial.iterdir()):
            return
        shutil.rmtree(self.partial, ignore_errors=True)

    def _commit(self, work: Work, elapsed: float):
        if self.done:  # another process committed first: theirs stays, ours goes
            shutil.rmtree(self.partial, ignore_errors=True)
            return
        manifest = {
            "stage": self.name, "key": self.key, "version": self.version,
            "config": self.config, "inputs": self.inputs,
            "started": (self.partial / ".started").read_text(), "finished": _now(),
            "elapsed_s": round(elapsed, 3),
            "units": len(work.done_units()), "bad_items": work.bad_items(),
            "versions": _versions(), **work.notes,
            "files": files_record(self.partial),  # checked before the stage is reused
        }
        write_json(self.partial / MANIFEST, manifest)
        if self.path.exists():  # an earlier commit killed before its manifest was written
            shutil.rmtree(self.path)
        os.rename(self.partial, self.path)

    def ensure(self, build, **run_kwargs) -> bool:
        """Run ``build(work)`` unless the stage is done (waiting for a process that is running it,
        then reusing its result); True when this call computed it."""
        if self.done:
            return False
        with self.run(wait=True, **run_kwargs) as work:
            if work is None:
                return False
            build(work)
        return True


def _versions() -> dict:
    out = {"python": platform.python_version(), "skelpipe": skelpipe.__version__,
           "numpy": numpy.__version__}
    for name in ("torch", "h5py", "openpifpaf"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as dotted names → values, each as its JSON text (as the key hashes it)."""
    out = {}
    for name, value in settings.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def changes(stage: Stage, manifest: dict) -> list[str]:
    """What makes ``stage``'s key differ from the key a manifest records: its code version, each
    setting (old → new) and each input whose key changed."""
    version = manifest.get("version")
    out = [] if version == stage.version else [f"version {version} → {stage.version}"]
    old, new = _flat(manifest.get("config") or {}), _flat(stage.config)
    short = lambda v: v if len(v) <= 24 else v[:21] + "…"  # noqa: E731
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            out.append(f"{name} {short(old.get(name, 'unset'))} → {short(new.get(name, 'unset'))}")
    inputs = manifest.get("inputs") or {}
    changed = [name for name in sorted(inputs.keys() | stage.inputs.keys())
               if inputs.get(name) != stage.inputs.get(name)]
    return out + ([f"input{'s' * (len(changed) > 1)} {', '.join(changed)} changed"] if changed else [])


class Cache:
    def __init__(self, root=None):
        self.root = Path(root) if root else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise SkelpipeError(f"{self.root}: the cache root is not a directory "
                                "(check --cache-dir or $SKELPIPE_CACHE)")

    def stage(self, name: str, version: int, config: dict, inputs: dict | None = None) -> Stage:
        return Stage(self, name, version, config, inputs or {})

    def entries(self):
        """(stage name, key, state, size in bytes, manifest or None, why damaged or None):
        finished ("done" or "damaged", as ``Stage.state``) and partial outputs."""
        if not self.root.is_dir():
            return
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for d in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
                partial = d.name.endswith(".partial")
                why = None if partial else damage(d)
                manifest = None
                with contextlib.suppress(SkelpipeError):
                    manifest = None if partial else read_manifest(d)
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                state = "partial" if partial else "damaged" if why else "done"
                yield stage_dir.name, d.name.removesuffix(".partial"), state, size, manifest, why

    def reasons(self, stages) -> dict:
        """key → why each of ``stages`` (stages that are not done) will run, in one short line:
        what changed its key compared with the closest finished entry of its stage (the fewest
        changes, the newest of those), "new" when the stage has none."""
        manifests, out = {}, {}
        for st in stages:
            if st.name not in manifests:
                manifests[st.name] = sorted(self._manifests(st.name), key=lambda m: str(m.get("finished")),
                                            reverse=True)
            others = [changes(st, m) for m in manifests[st.name] if m.get("key") != st.key]
            closest = min(others, key=len) if others else ["new"]
            why = ", ".join(closest[:3]) + (f" and {len(closest) - 3} more" if len(closest) > 3 else "")
            out[st.key] = ("output damaged" if st.path.is_dir() else f"resumes: {why}" if st.partial.exists()
                           else why)
        return out

    def _manifests(self, stage: str):
        folder = self.root / stage
        for d in sorted(folder.iterdir()) if folder.is_dir() else ():
            if d.is_dir() and not d.name.endswith(".partial"):
                with contextlib.suppress(SkelpipeError):
                    yield read_manifest(d)

    def hold(self, stages) -> contextlib.ExitStack:
        """Shared "in use" locks on ``stages`` while the returned context is open: a running plan
        holds one on every stage it will run or read, and ``cache gc`` leaves those alone."""
        stack = contextlib.ExitStack()
        for st in stages:
            path = st.lock_path.with_name(f"{st.key}.use")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:  # a read-only cache: hold what exists (a shared lock needs no write)
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
            fcntl.flock(fd, fcntl.LOCK_SH)
            stack.callback(os.close, fd)
        return stack

    @contextlib.contextmanager
    def unused(self, stage: str, key: str):
        """Yield True, holding it exclusively, when no running plan uses the stage; else False."""
        path = self.root / stage / f"{key}.use"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            yield True
        finally:
            os.close(fd)

    def is_locked(self, stage: str, key: str) -> bool:
        for lock_file in (self.root / stage).glob(f"{key}.lock*"):
            try:
                Lock(lock_file, str(lock_file)).acquire().release()
            except SkelpipeError:
                return True
        return False
