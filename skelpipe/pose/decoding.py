"""Decoding OpenPifPaf's CIF/CAF fields into poses, on worker processes that may crash.

OpenPifPaf's decoder is C++ (``openpifpaf._cpp``). A native crash there (a segmentation fault)
would kill the whole extraction if it ran in the main process, so ``DecoderPool`` runs one
decoder per worker process, each with its own decoder object. One ``CifCaf`` object must never
be called from two threads: torch releases the GIL while a custom-class method runs, and the
decoder keeps its scratch state (high-resolution map, occupancy map, frontier queue) in the
object, so concurrent calls corrupt it and crash with SIGSEGV (reproduced every time with four
threads sharing one decoder on random-weight fields; never with one decoder per thread).

Fields travel through one shared-memory block (a few cells per worker): the main process copies
a frame's fields into a free cell and sends only a small message; the worker decodes straight
from the cell and sends back the poses. When a worker dies, the frame it was decoding is
reported as failed (``DecodeFailure``), the worker is restarted and the frames queued behind it
are decoded by the new one: a crash costs one frame, never the run.

``InlineDecoder`` does the same in the calling process (no isolation; for tests and debugging).
"""

import collections
import contextlib
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np
import torch

from skelpipe.core.errors import SkelpipeError, did_you_mean

#: OpenPifPaf's defaults (``python -m openpifpaf.predict``), the decoder's knobs we expose.
DEFAULT_CONFIG = {"seed_threshold": 0.2, "cif_th": 0.3, "caf_th": 0.3, "keypoint_threshold": 0.15,
                  "keypoint_threshold_rel": 0.5, "instance_threshold": 0.15, "force_complete": False,
                  "cif_neighbors": 16}
MAX_NEIGHBORS = 64  # CIF votes per location
#: For the fixed fields of ``network.bias_heads`` (one vote per location instead of about 16).
BIASED_CONFIG = {"cif_neighbors": 1}
#: Test hook (a decoder setting): a worker kills itself with SIGSEGV on the task with this tag.
CRASH_TAG = "_crash_tag"


@dataclass
class DecodeFailure:
    reason: str


def check_config(config: dict | None, where: str = "decoder") -> dict:
    """The decoder settings ``config`` (known keys; thresholds in [0, 1], ``cif_neighbors`` in
    [1, MAX_NEIGHBORS], ``force_complete`` true or false), or one line naming the bad one."""
    for key, value in (config or {}).items():
        if key == CRASH_TAG:
            continue
        if key not in DEFAULT_CONFIG:
            raise SkelpipeError(f"{where}: unknown decoder setting {key!r}{did_you_mean(key, DEFAULT_CONFIG)}; "
                                f"known: {', '.join(sorted(DEFAULT_CONFIG))}")
        kind = type(DEFAULT_CONFIG[key])
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is bool:
            wanted, ok = "true or false", isinstance(value, bool)
        elif kind is int:
            wanted = f"an integer in [1, {MAX_NEIGHBORS}]"
            ok = number and float(value).is_integer() and 1 <= value <= MAX_NEIGHBORS
        else:
            wanted, ok = "a number in [0, 1]", number and 0.0 <= value <= 1.0  # NaN is not
        if not ok:
            raise SkelpipeError(f"{where}: {key} = {value!r}: expected {wanted}")
    return dict(config or {})


def configure(config: dict | None) -> dict:
    """Set OpenPifPaf's (class-level, process-wide) decoder thresholds; returns the full config."""
    from openpifpaf.decoder import utils

    check_config(config)
    cfg = {**DEFAULT_CONFIG, **{k: v for k, v in (config or {}).items() if k != CRASH_TAG}}
    cpp = torch.classes.openpifpaf_decoder.CifCaf
    utils.CifHr.set_threshold(cfg["cif_th"])
    utils.CifHr.set_neighbors(int(cfg["cif_neighbors"]))
    utils.CifSeeds.set_threshold(cfg["seed_threshold"])
    utils.CafScored.set_default_score_th(cfg["caf_th"])
    kp_th = 0.0 if cfg["force_complete"] else min(cfg["keypoint_threshold"], cfg["seed_threshold"])
    cpp.set_keypoint_threshold(kp_th)
    cpp.set_keypoint_threshold_rel(0.0 if cfg["force_complete"] else cfg["keypoint_threshold_rel"])
    cpp.set_force_complete(bool(cfg["force_complete"]))
    utils.nms.Keypoints.set_keypoint_threshold(0.0 if cfg["force_complete"] else kp_th)
    utils.nms.Keypoints.set_instance_threshold(0.0 if cfg["force_complete"] else cfg["instance_threshold"])
    return cfg


def sanitize(field):
    """Zero the cells of a field (F, C, H, W) holding NaN/inf, confidence included, in place.

    OpenPifPaf's C++ indexes its high-resolution maps with ``int(x + 0.5)`` after bounds checks
    that NaN passes (every comparison with NaN is false): NaN coordinates read out of bounds.
    """

    bad = ~torch.isfinite(field)
    if bad.any():
        cells = bad.any(dim=1)
        field[bad] = 0.0
        field[:, 1][cells] = 0.0
    return field


class FieldDecoder:
    """One OpenPifPaf CifCaf decoder: ``(cif, caf) -> (poses (N, V, 3), scores (N,))``.

    Coordinates are in the pixels of the network input. Not thread-safe (nor is OpenPifPaf's).
    """

    def __init__(self, cif_meta, caf_meta, config: dict | None = None):
        import openpifpaf

        torch.set_num_threads(1)
        torch.ops.openpifpaf.set_quiet(True)  # no "resizing buffer" lines on stdout
        self.config = configure(config)
        self.cif_meta, self.caf_meta = cif_meta, caf_meta
        # A new decoder object per frame: OpenPifPaf's keeps scratch state from one call to the
        # next, and a frame's poses then depend (by ~1e-7) on the frames decoded before it, so
        # on how a run was split or resumed. Making one costs ~0.07 ms; decoding a frame ~1 ms.
        self.new_decoder = lambda: openpifpaf.decoder.CifCaf([cif_meta], [caf_meta])
        self.n_heads = max(cif_meta.head_index, caf_meta.head_index) + 1

    def __call__(self, cif: np.ndarray, caf: np.ndarray):
        cif = sanitize(torch.from_numpy(np.array(cif, dtype=np.float32)))
        caf = sanitize(torch.from_numpy(np.array(caf, dtype=np.float32)))
        fields = [None] * self.n_heads
        fields[self.cif_meta.head_index] = cif
        fields[self.caf_meta.head_index] = caf
        annotations = self.new_decoder()(fields)
        n_joints = len(self.cif_meta.keypoints)
        poses = np.array([a.data for a in annotations], np.float32).reshape(-1, n_joints, 3)
        scores = np.array([a.score for a in annotations], np.float32)
        return poses, scores


def _worker(conn, shm_name: str, metas, config):
    """Worker process: decode the tasks sent on ``conn`` from cells of the shared memory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        decode = FieldDecoder(*metas, config)
        crash_tag = (config or {}).get(CRASH_TAG)
        conn.send(("ready",))
        while True:
            msg = conn.recv()
            if msg is None:
                return
            task_id, tag, offset, cif_shape, caf_shape, dtype = msg
            if crash_tag is not None and tag == crash_tag:
                os.kill(os.getpid(), signal.SIGSEGV)
            cif = np.ndarray(cif_shape, dtype, buffer=shm.buf, offset=offset)
            caf = np.ndarray(caf_shape, dtype, buffer=shm.buf, offset=offset + cif.nbytes)
            try:
                t0 = time.perf_counter()
                poses, scores = decode(cif, caf)
                conn.send((task_id, poses, scores, time.perf_counter() - t0))
            except Exception as e:  # noqa: BLE001 - reported for this frame only
                conn.send((task_id, DecodeFailure(f"decoder error: {type(e).__name__}: {e}"), None))
            del cif, caf
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        return
    finally:
        shm.close()


@contextlib.contextmanager
def _main_module_hidden():
    """Start spawned workers without re-running the caller's ``__main__`` (an unguarded script or
    ``python -m skelpipe`` would otherwise run again in every worker): the worker function lives
    in this module, which is all a worker needs."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__["__spec__"] = None
            main.__dict__.pop("__file__", None)
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


class _Worker:
    def __init__(self, index: int, cells: list[int]):
        self.index, self.cells = index, cells
        self.free = list(cells)
        self.pending: collections.deque = collections.deque()  # (task_id, tag, offset, msg)
        self.process = None
        self.conn = None
        self.ready = False


class DecoderPool:
    """``workers`` decoder processes fed through shared memory; see the module docstring.

    ``submit(key, tag, cif, caf)`` queues one frame (blocking only while every cell is busy);
    ``collect(timeout)`` returns ``[(key, result)]`` of finished frames, where result is
    ``(poses, scores)`` or a ``DecodeFailure``. ``close()`` stops the workers.
    """

    def __init__(self, cif_meta, caf_meta, workers: int = 2, config: dict | None = None, depth: int = 3):
        self.metas = (cif_meta, caf_meta)
        self.config = config
        self.n_workers, self.depth = max(1, workers), max(1, depth)
        # forkserver: workers fork from a clean, single-threaded server that has imported
        # OpenPifPaf once, so (re)starting one costs milliseconds and never inherits CUDA state
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["openpifpaf", "skelpipe.pose.decoding"])
        self.shm = None
        self.cell_bytes = 0
        self.workers: list[_Worker] = []
        self.keys: dict[int, object] = {}
        self.next_id = 0
        self.decode_seconds = 0.0  # workers' time spent decoding, summed over frames
        self.failures_at_start = 0
        self.done: list = []

    # life cycle ------------------------------------------------------------
    def _start(self, cell_bytes: int):
        self.close()
        self.cell_bytes = cell_bytes
        n_cells = self.n_workers * self.depth
        size = max(1, n_cells * cell_bytes)
        if os.path.isdir("/dev/shm"):  # pages are allocated lazily: too small a tmpfs means SIGBUS later
            st = os.statvfs("/dev/shm")
            free = st.f_bavail * st.f_frsize
            if size > 0.9 * free:
                raise SkelpipeError(f"/dev/shm: {free / 2**20:.0f} MiB free, but {self.n_workers} decoder workers "
                                    f"need {size / 2**20:.0f} MiB for their fields: use fewer --decoder-workers, "
                                    f"a smaller --long-edge, or a larger /dev/shm (docker run --shm-size 1g)")
        self.shm = shared_memory.SharedMemory(create=True, size=size)
        self.workers = [_Worker(i, [(i * self.depth + c) * cell_bytes for c in range(self.depth)])
                        for i in range(self.n_workers)]
        for w in self.workers:
            self._spawn(w)

    def _spawn(self, w: _Worker):
        ours, theirs = self.ctx.Pipe()
        w.conn = ours
        w.ready = False
        w.process = self.ctx.Process(target=_worker, args=(theirs, self.shm.name, self.metas, self.config),
                                     name=f"skelpipe-decoder-{w.index}", daemon=True)
        with _main_module_hidden():
            w.process.start()
        theirs.close()
        for task_id, tag, offset, msg in w.pending:  # frames queued behind a crashed one
            w.conn.send(msg)

    def close(self):
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self.workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()
        self.workers = []
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
            self.shm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # work ------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(len(w.pending) for w in self.workers)

    def reserve(self, nbytes: int):
        """Start the workers now, with cells of ``nbytes`` (a frame's fields), and wait until all are ready."""
        if nbytes > self.cell_bytes:
            finished = self.drain()  # (drain replaces self.done)
            self.done = finished
            self._start(nbytes)
        while not all(w.ready for w in self.workers):
            self.done.extend(self._poll(timeout=1.0))

    def submit(self, key, tag: str, cif: np.ndarray, caf: np.ndarray):
        cif = np.ascontiguousarray(cif)
        caf = np.ascontiguousarray(caf, dtype=cif.dtype)
        need = cif.nbytes + caf.nbytes
        if need > self.cell_bytes:  # larger frames than reserved for: restart with larger cells
            finished = self.drain()  # (drain replaces self.done)
            self.done = finished
            self._start(need)
        while True:
            free = [w for w in self.workers if w.free]
            if free:
                break
            self.done.extend(self._poll(timeout=None))
        w = min(free, key=lambda w: len(w.pending))
        offset = w.free.pop()
        view = np.ndarray(need // cif.itemsize, cif.dtype, buffer=self.shm.buf, offset=offset)
        view[:cif.size] = cif.reshape(-1)
        view[cif.size:] = caf.reshape(-1)
        del view
        task_id = self.next_id
        self.next_id += 1
        self.keys[task_id] = key
        msg = (task_id, tag, offset, cif.shape, caf.shape, cif.dtype.str)
        w.pending.append((task_id, tag, offset, msg))
        w.conn.send(msg)

    def collect(self, timeout: float | None = 0.0) -> list:
        """Finished frames so far (waiting up to ``timeout`` s for one when there are none)."""
        out, self.done = self.done, []
        if not out and self.in_flight:
            out = self._poll(timeout)
        else:
            out += self._poll(0.0)
        return out

    def drain(self) -> list:
        """Wait for every frame in flight; return them all (also those collected earlier)."""
        out, self.done = self.done, []
        while self.in_flight:
            out += self._poll(timeout=None)
        return out

    def _finish(self, w: _Worker, task_id: int, result) -> tuple:
        pending = w.pending.popleft()
        assert pending[0] == task_id, "decoder results out of order"
        w.free.append(pending[2])
        return self.keys.pop(task_id), result

    def _poll(self, timeout) -> list:
        if not self.workers:
            return []
        handles = {}
        for w in self.workers:
            handles[w.conn] = w
            handles[w.process.sentinel] = w
        ready = mp.connection.wait(list(handles), timeout)
        out = []
        for w in {id(handles[h]): handles[h] for h in ready}.values():
            out += self._read(w)
        return out

    def _read(self, w: _Worker) -> list:
        out = []
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "ready":
                    w.ready = True
                    continue
                task_id, poses, scores, *seconds = msg
                self.decode_seconds += seconds[0] if seconds else 0.0
                out.append(self._finish(w, task_id, poses if isinstance(poses, DecodeFailure) else (poses, scores)))
        except (EOFError, ConnectionResetError, OSError):
            pass
        if not w.process.is_alive():
            w.process.join()
            code = w.process.exitcode
            why = f"signal {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
            if not w.ready:
                self.failures_at_start += 1
                if self.failures_at_start >= 3:
                    raise SkelpipeError(f"OpenPifPaf decoder worker died while starting ({why}), three times")
            if w.pending and w.ready:
                task_id = w.pending[0][0]
                out.append(self._finish(w, task_id, DecodeFailure(f"decoder process died ({why})")))
            w.conn.close()
            self._spawn(w)
        return out


class InlineDecoder:
    """``DecoderPool``'s interface, decoding in this process (no crash isolation)."""

    def __init__(self, cif_meta, caf_meta, config: dict | None = None):
        self.decode = FieldDecoder(cif_meta, caf_meta, config)
        self.done: list = []
        self.in_flight = 0
        self.decode_seconds = 0.0  # time spent decoding, summed over frames

    def reserve(self, nbytes: int):
        pass

    def submit(self, key, tag: str, cif, caf):
        t0 = time.perf_counter()
        try:
            self.done.append((key, self.decode(cif, caf)))
            self.decode_seconds += time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - reported for this frame only
            self.done.append((key, DecodeFailure(f"decoder error: {type(e).__name__}: {e}")))

    def collect(self, timeout=0.0) -> list:
        out, self.done = self.done, []
        return out

    drain = collect

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
