"""Reading videos and frame folders in a background thread, resized once for the network.

``VideoReader(path, long_edge)`` decodes frames on its own thread (OpenCV releases the GIL
while decoding and resizing, so this runs in parallel with the network), resizes each frame
once so that its long edge is ``long_edge`` (aspect ratio kept), pads right/bottom to a size
of ``16 k + 1`` as OpenPifPaf expects, and hands out RGB uint8 batches of ``(B, H, W, 3)``.

A frame folder (Penn Action's ``frames/NNNN/``) is read as a video of its sorted image files.
A file that cannot be opened, has no frames, or ends far before the frame count in its header
raises ``VideoError`` (a ``SkelpipeError``) naming the file, when it is opened or at the end.
"""

import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from skelpipe.core.errors import SkelpipeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
#: OpenPifPaf's padding colour (the ImageNet mean, which normalises to about zero).
PAD_RGB = (124, 116, 104)


class Video(NamedTuple):
    """A video to extract: its sample id, the file or frame folder, and what the dataset knows
    of it (``label``, ``label_name``, ``split``, ``subject``), stored with its poses."""

    id: str
    path: Path
    attrs: dict = {}


class VideoError(SkelpipeError):
    """A video that cannot be read: unreadable, no frames, or truncated."""


@dataclass
class VideoInfo:
    path: Path
    width: int  # original frame size
    height: int
    fps: float
    frame_count: int  # from the header (0 when unknown); the frames actually read may differ
    resized: tuple[int, int]  # (w, h) after the resize, before padding
    padded: tuple[int, int]  # (w, h) the network sees

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map network-input pixel coordinates (..., 2) back to original-frame pixels."""
        sx = (self.width - 1) / max(self.resized[0] - 1, 1)
        sy = (self.height - 1) / max(self.resized[1] - 1, 1)
        return xy * np.array([sx, sy], dtype=np.float32)


def network_size(width: int, height: int, long_edge: int | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """((w, h) resized, (w, h) padded) for a frame of ``width`` x ``height`` (OpenPifPaf's rule)."""
    if long_edge:
        s = long_edge / max(width, height)
        if height > width:
            rw, rh = int(width * s), int(long_edge)
        else:
            rw, rh = int(long_edge), int(height * s)
    else:
        rw, rh = width, height
    pad = lambda n: math.ceil((n - 1) / 16) * 16 + 1  # noqa: E731
    return (rw, rh), (pad(rw), pad(rh))


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def probe(path, long_edge: int | None = None, fps: float = 30.0) -> VideoInfo:
    """Open ``path`` (video file or frame folder) and read its size, fps and frame count."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise VideoError(f"{path}: frame folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        first = cv2.imread(str(files[0]))
        if first is None:
            raise VideoError(f"{files[0]}: unreadable image")
        h, w = first.shape[:2]
        count = len(files)
    else:
        if path.stat().st_size == 0:
            raise VideoError(f"{path}: empty file (0 bytes)")
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise VideoError(f"{path}: cannot be opened as a video (corrupt or unknown format)")
            w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
            h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            fps = cap.get(cv2.CAP_PROP_FPS) or fps
            count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        finally:
            cap.release()
        if w <= 0 or h <= 0:
            raise VideoError(f"{path}: no video stream (frame size {w}x{h})")
    resized, padded = network_size(w, h, long_edge)
    return VideoInfo(path, w, h, float(fps), count, resized, padded)


def frames(info: VideoInfo):
    """Yield BGR frames of a video file or frame folder."""
    import cv2

    if info.path.is_dir():
        for f in _frame_files(info.path):
            img = cv2.imread(str(f))
            if img is None:
                raise VideoError(f"{f}: unreadable image")
            if img.shape[:2] != (info.height, info.width):
                raise VideoError(f"{f}: size {img.shape[1]}x{img.shape[0]} differs from the folder's first "
                                 f"frame ({info.width}x{info.height})")
            yield img
        return
    cap = cv2.VideoCapture(str(info.path))
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield img
    finally:
        cap.release()


def prepare(bgr: np.ndarray, info: VideoInfo, out: np.ndarray) -> None:
    """Resize a BGR frame to the network size and write it, RGB and padded, into ``out`` (H, W, 3)."""
    import cv2

    rw, rh = info.resized
    img = bgr if (rw, rh) == (info.width, info.height) else cv2.resize(bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
    out[:rh, :rw] = img[:, :, ::-1]
    out[rh:, :] = PAD_RGB
    out[:rh, rw:] = PAD_RGB


def is_truncated(read: int, header: int) -> bool:
    """Whether ``read`` frames fall clearly short of a header count (codecs are off by a few)."""
    return header > 0 and read < header * 0.95 - 2


class VideoReader:
    """Decode and prepare frames of one video on a background thread; iterate to get batches.

    ``for start, batch in VideoReader(info, batch_size=16): ...`` gives the index of the first
    frame and an RGB uint8 array (B, H, W, 3) at the padded network size. ``frames_read`` holds
    the total once iteration ends; a read failure is raised by the iterator.
    """

    _END = object()

    def __init__(self, info: VideoInfo, batch_size: int = 8, prefetch: int = 4):
        self.info = info
        self.batch_size = max(1, batch_size)
        self.frames_read = 0
        self.seconds = 0.0  # spent decoding and resizing frames
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"read {info.path.name}", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        w, h = self.info.padded
        try:
            batch = np.empty((self.batch_size, h, w, 3), np.uint8)
            n, start = 0, 0
            t0 = time.perf_counter()
            for bgr in frames(self.info):
                if bgr.shape[:2] != (self.info.height, self.info.width):
                    raise VideoError(f"{self.info.path}: frame {start + n} is {bgr.shape[1]}x{bgr.shape[0]}, "
                                     f"not {self.info.width}x{self.info.height}")
                prepare(bgr, self.info, batch[n])
                n += 1
                if n == self.batch_size:
                    self.seconds += time.perf_counter() - t0
                    if not self._put((start, batch)):
                        return
                    t0 = time.perf_counter()
                    start += n
                    n = 0
                    batch = np.empty((self.batch_size, h, w, 3), np.uint8)
            self.seconds += time.perf_counter() - t0
            if n:
                if not self._put((start, batch[:n])):
                    return
            self.frames_read = start + n
            if self.frames_read == 0:
                raise VideoError(f"{self.info.path}: no frame could be decoded")
            if not self.info.path.is_dir() and is_truncated(self.frames_read, self.info.frame_count):
                raise VideoError(f"{self.info.path}: truncated or corrupt: decoded {self.frames_read} of the "
                                 f"{self.info.frame_count} frames in its header")
            self._put(self._END)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which reports it
            if not isinstance(e, SkelpipeError):
                e = VideoError(f"{self.info.path}: {type(e).__name__}: {e}")
            self._put(e)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self):
        """Stop the reader thread (it finishes the frame it is on)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def first_frames(video: Path, n: int, out_dir: Path) -> Path:
    """The first ``n`` frames of ``video`` as an MJPG .avi in ``out_dir`` (a short clip of a long video)."""
    import cv2

    info = probe(video)
    out = Path(out_dir) / f"{Path(video).stem}_first{n}.avi"
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), info.fps, (info.width, info.height))
    for i, img in enumerate(frames(info)):
        if i >= n:
            break
        w.write(img)
    w.release()
    return out
