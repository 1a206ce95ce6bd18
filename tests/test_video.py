"""Video reading: probe, OpenPifPaf's resize rule, batches from the background reader, frame
folders, and clear errors for empty, corrupt and truncated files."""

import cv2
import numpy as np
import pytest

from skelpipe.pose.video import VideoError, VideoReader, is_truncated, network_size, probe


def write_video(path, n=7, size=(64, 48), fps=25.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, :, 2] = (10 * i) % 250  # red channel (BGR) encodes the frame index
        w.write(img)
    w.release()
    return path


def test_network_size_matches_openpifpaf():
    assert network_size(1920, 1080, 641) == ((641, 360), (641, 369))
    assert network_size(340, 256, 641) == ((641, 482), (641, 497))
    assert network_size(48, 64, 65) == ((48, 65), (49, 65))
    assert network_size(64, 48, None) == ((64, 48), (65, 49))


def test_reader_batches_in_order(tmp_path):
    info = probe(write_video(tmp_path / "v.avi"), long_edge=97)
    assert (info.width, info.height, info.frame_count, info.fps) == (64, 48, 7, 25.0)
    assert info.resized == (97, 72) and info.padded == (97, 81)
    with VideoReader(info, batch_size=3) as reader:
        batches = list(reader)
    assert [(s, len(b)) for s, b in batches] == [(0, 3), (3, 3), (6, 1)]
    assert reader.frames_read == 7
    frames = np.concatenate([b for _, b in batches])
    assert frames.shape == (7, 81, 97, 3) and frames.dtype == np.uint8
    red = frames[:, 10:60, 10:80, 0].mean(axis=(1, 2))  # RGB order now
    assert np.allclose(red, 10 * np.arange(7), atol=3)
    assert (frames[:, 72:, :, :] == (124, 116, 104)).all()  # padding is the ImageNet mean colour
    # back to original pixels: the resized frame's last pixel is the original's last pixel
    assert np.allclose(info.to_original(np.array([[96.0, 71.0]])), [[63.0, 47.0]])


def test_frame_folder(tmp_path):
    folder = tmp_path / "0001"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i + 1:06d}.jpg"), np.full((30, 40, 3), 20 * i, np.uint8))
    (folder / "notes.txt").write_text("not a frame")
    info = probe(folder, long_edge=None, fps=30.0)
    assert (info.width, info.height, info.frame_count, info.fps) == (40, 30, 4, 30.0)
    with VideoReader(info, batch_size=8) as reader:
        (start, batch), = list(reader)
    assert start == 0 and batch.shape == (4, 33, 49, 3)
    assert np.allclose(batch[:, 5, 5, 0], [0, 20, 40, 60], atol=3)


def test_bad_files_named_in_errors(tmp_path):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty.avi: empty file"):
        probe(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="garbage.mp4: cannot be opened"):
        probe(garbage)
    with pytest.raises(VideoError, match="missing.avi: no such file"):
        probe(tmp_path / "missing.avi")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoError, match="nothing: frame folder holds no images"):
        probe(tmp_path / "nothing")


def test_truncated_video_reported_at_the_end(tmp_path):
    path = write_video(tmp_path / "cut.avi", n=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    info = probe(path)
    assert info.frame_count == 40
    with pytest.raises(VideoError, match="cut.avi: truncated or corrupt: decoded"):
        with VideoReader(info, batch_size=4) as reader:
            for _ in reader:
                pass
    assert is_truncated(10, 40) and not is_truncated(39, 40) and not is_truncated(5, 0)
