"""Pose extraction with OpenPifPaf, on CPU with small random-weight networks built here.

The "biased" network has its heads fixed to one field (``network.bias_heads``): a standing
person anchored at every cell, so that the decoder finds people in any frame and the geometry
of what is written can be checked against the template exactly.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import noise_video

pytest.importorskip("openpifpaf", reason="OpenPifPaf is not installed (skelpipe install-openpifpaf)")

from skelpipe.core.errors import SkelpipeError  # noqa: E402
from skelpipe.pipeline.extraction import extract_file  # noqa: E402
from skelpipe.pose import decoding, extract, network  # noqa: E402
from skelpipe.pose.settings import ExtractConfig  # noqa: E402
from skelpipe.skeleton.store import open_store  # noqa: E402

BIASED = decoding.BIASED_CONFIG


@pytest.fixture(scope="module")
def biased_ckpt(tmp_path_factory):
    return network.random_checkpoint("mobilenetv3small", tmp_path_factory.mktemp("ckpt") / "mnv3s.pkl", biased=True)


def template(net):
    """The biased heads' person, in network-input pixels relative to the nose."""
    from openpifpaf.plugins.coco.constants import COCO_UPRIGHT_POSE

    pose = COCO_UPRIGHT_POSE[:, :2] * np.float32([1, -1])
    pose = pose * (6.0 / (pose[:, 1].max() - pose[:, 1].min())) * net.cif_meta.stride
    return pose - pose[0]


def test_backbone_aliases():
    assert network.resolve_backbone("ShuffleNetv2x1") == "shufflenetv2k16"
    assert network.resolve_backbone("MobileNetv3Small") == "mobilenetv3small"
    assert network.resolve_backbone("ResNet152") == "resnet152"
    assert network.resolve_backbone("shufflenetv2k30") == "shufflenetv2k30"


def test_offline_missing_checkpoint_names_file_place_and_option(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(network.OFFLINE_ENV, "1")
    with pytest.raises(SkelpipeError) as e:
        network.load_network("ShuffleNetv2x1")
    msg = str(e.value)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert "shufflenetv2k16-210820-232500-cocokp-slurm726069-edge513-o10s-7189450a.pkl" in msg
    assert str(folder) in msg and "--checkpoint" in msg and "curl -L -o" in msg
    with pytest.raises(SkelpipeError, match="no pretrained resnet152 checkpoint.*--checkpoint"):
        network.load_network("ResNet152")
    with pytest.raises(SkelpipeError, match="nope.pkl: checkpoint file not found"):
        network.load_network("ResNet152", str(tmp_path / "nope.pkl"))


def test_checkpoint_of_another_backbone_is_refused(biased_ckpt):
    with pytest.raises(SkelpipeError, match="holds a mobilenetv3small network, not --backbone shufflenetv2k16"):
        network.load_network("shufflenetv2k16", str(biased_ckpt))


def test_extract_writes_tracked_people_in_original_pixels_and_skips_bad_files(biased_ckpt, tmp_path):
    from skelpipe.cli import main

    a = noise_video(tmp_path / "a_rgb.avi", n=6)
    b = noise_video(tmp_path / "b.avi", n=5, size=(48, 64), fps=30.0)
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "poses.h5"
    args = ["extract", "--videos", str(a), str(b), str(corrupt), str(empty), "--backbone", "MobileNetv3Small",
            "--checkpoint", str(biased_ckpt), "--out", str(out), "--long-edge", "161", "--device", "cpu",
            "--decoder-workers", "0", "--decoder-setting", "cif_neighbors=1"]
    main(args)  # returns normally: exit status 0 although two files were bad
    manifest = json.loads((tmp_path / "poses.h5.manifest.json").read_text())
    bad = {b["item"]: b["reason"] for b in manifest["bad_items"]}
    assert set(bad) == {"corrupt", "empty"}
    assert bad["corrupt"] == f"{corrupt}: cannot be opened as a video (corrupt or unknown format)"
    assert bad["empty"] == f"{empty}: empty file (0 bytes)"
    assert not (tmp_path / "poses.h5.partial").exists()
    assert [p.name for p in tmp_path.glob("poses.h5*")] in (["poses.h5", "poses.h5.manifest.json"],
                                                              ["poses.h5.manifest.json", "poses.h5"])
    assert not list(tmp_path.glob("*.lock"))  # the finish lock goes with the partial folder


    net = network.load_network("mobilenetv3small", str(biased_ckpt))
    with open_store(out) as s:
        assert s.layout.name == "coco17" and sorted(s.ids()) == ["a", "b"]
        sa, sb = s.read("a"), s.read("b")
    assert sa.keypoints.shape == (2, 6, 17, 3) and sb.keypoints.shape == (2, 5, 17, 3)
    assert sa.attrs["fps"] == 25.0 and sb.attrs["fps"] == 30.0
    assert sa.attrs["num_frames"] == 6 and sa.attrs["image_size"] == [64, 48] and sb.attrs["image_size"] == [48, 64]
    assert sa.attrs["backbone"] == "mobilenetv3small" and sa.attrs["checkpoint"] == str(biased_ckpt)
    assert sa.arrays["score"].shape == (2, 6)
    for smp, (w, h), long_side in ((sa, (64, 48), 64), (sb, (48, 64), 64)):
        kp = smp.keypoints
        seen = kp[..., 2] > 0
        assert seen[0].all(axis=1).any(), "a person with all 17 joints in some frame"
        assert (kp[..., 0][seen] >= -1).all() and (kp[..., 0][seen] <= w).all()
        assert (kp[..., 1][seen] >= -1).all() and (kp[..., 1][seen] <= h).all()
        # the template person, scaled back from the network input (long edge 161) to original pixels
        full = np.where(seen[0].all(axis=1))[0][0]
        rel = kp[0, full, :, :2] - kp[0, full, 0, :2]
        expected = template(net) * np.float32([(w - 1), (h - 1)]) / np.float32(
            [extract_size - 1 for extract_size in _resized(w, h, 161)])
        assert np.abs(rel - expected).max() < 0.6
        # a fixed field gives the same people in every frame: tracked with one id throughout
        assert np.allclose(kp[0, :, :, :2], kp[0, :1, :, :2], atol=1e-3)
        assert smp.attrs["people"] == 2 and smp.attrs["decoder_failures"] == 0


def _resized(w, h, long_edge):
    from skelpipe.pose.video import network_size

    return network_size(w, h, long_edge)[0]


def test_extract_with_only_bad_videos_fails_and_leaves_nothing(biased_ckpt, tmp_path, capsys):
    from skelpipe.cli import main

    empty, junk = tmp_path / "empty.mp4", tmp_path / "junk.avi"
    empty.write_bytes(b"")
    junk.write_bytes(b"not a video at all")
    out = tmp_path / "poses.h5"
    with pytest.raises(SystemExit) as exit_:
        main(["extract", "--videos", str(empty), str(junk), "--backbone", "mobilenetv3small", "--checkpoint",
              str(biased_ckpt), "--out", str(out), "--device", "cpu", "--decoder-workers", "0"])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    error = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no video could be extracted (2 of 2 bad: empty:" in error[0]
    assert "reported and skipped" in captured.out + captured.err  # the table of reasons, before the error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mp4", "junk.avi"]  # nothing written

def test_decoder_crash_costs_one_frame(biased_ckpt, tmp_path):
    """A worker killed by SIGSEGV while decoding frame 2: that frame has nobody, the rest is intact."""
    v = noise_video(tmp_path / "v.avi", n=5)
    config = ExtractConfig("mobilenetv3small", checkpoint=str(biased_ckpt), device="cpu", long_edge=65,
                           decoder_workers=1, decoder_config={**BIASED, decoding.CRASH_TAG: "v:2"})
    manifest = extract_file([v], tmp_path / "p.h5", config)
    (item,) = manifest["bad_items"]
    assert item["item"] == "v frame 2" and "SIGSEGV" in item["reason"]
    with open_store(tmp_path / "p.h5") as s:
        smp = s.read("v")
    assert smp.attrs["decoder_failures"] == 1
    people = (smp.keypoints[..., 2] > 0).any(axis=2).sum(axis=0)
    assert people[2] == 0 and (people[[0, 1, 3, 4]] > 0).all()


def test_worker_pool_fp16_fields_match_inline_decoding(biased_ckpt):
    """The CUDA path sends fp16 fields through shared memory to a worker: same poses as decoding the
    same (fp16-rounded) values in this process."""
    import torch

    net = network.load_network("mobilenetv3small", str(biased_ckpt))
    with torch.no_grad():
        cif, caf = net.model(torch.randn(2, 3, 97, 129))
    inline = decoding.InlineDecoder(net.cif_meta, net.caf_meta, BIASED)
    with decoding.DecoderPool(net.cif_meta, net.caf_meta, workers=1, config=BIASED, depth=2) as pool:
        for i in range(2):
            pool.submit(("x", i), f"x:{i}", cif[i].half().numpy(), caf[i].half().numpy())
            inline.submit(("x", i), f"x:{i}", cif[i].half().float().numpy(), caf[i].half().float().numpy())
        got = dict(pool.drain())
    want = dict(inline.collect())
    for key in want:
        (p16, s16), (p32, s32) = got[key], want[key]
        assert len(p32) > 5 and p16.shape == p32.shape
        assert np.array_equal(p16, p32) and np.array_equal(s16, s32)


def test_worker_pool_grows_for_larger_frames_without_losing_results(biased_ckpt):
    import torch

    net = network.load_network("mobilenetv3small", str(biased_ckpt))
    with torch.no_grad():
        small = net.model(torch.zeros(1, 3, 65, 65))
        big = net.model(torch.zeros(1, 3, 129, 161))
    with decoding.DecoderPool(net.cif_meta, net.caf_meta, workers=1, config=BIASED) as pool:
        pool.reserve(small[0][0].numpy().nbytes + small[1][0].numpy().nbytes)
        pool.submit("small", "s", small[0][0].numpy(), small[1][0].numpy())
        pool.submit("big", "b", big[0][0].numpy(), big[1][0].numpy())  # restarts the workers with larger cells
        results = dict(pool.drain())
    assert set(results) == {"small", "big"}
    assert len(results["big"][0]) > len(results["small"][0]) > 0


def test_shard_from_torchrun_env(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert extract.shard_from_env() == (3, 4)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert extract.shard_from_env() is None


def test_sharding_covers_every_video_once(biased_ckpt, tmp_path):
    ids = [f"v{i:02d}" for i in range(11)]
    shares = [extract.shard_share([(s, None) for s in reversed(ids)], (i, 3)) for i in range(3)]
    flat = [s for share in shares for s, _ in share]
    assert sorted(flat) == ids and len(flat) == len(set(flat))
    assert [len(s) for s in shares] == [4, 4, 3]
    with pytest.raises(SkelpipeError, match="--shard 3/3"):
        extract.parse_shard("3/3")

    videos = [noise_video(tmp_path / f"s{i}.avi", n=2) for i in range(3)]
    config = ExtractConfig("mobilenetv3small", checkpoint=str(biased_ckpt), device="cpu", long_edge=65,
                           decoder_workers=0, decoder_config=BIASED)
    first = extract_file(videos, tmp_path / "p.h5", config, shard=(1, 2))
    assert first.get("waiting_for_shards") and not (tmp_path / "p.h5").exists()
    last = extract_file(videos, tmp_path / "p.h5", config, shard=(0, 2))
    assert last["units"] == 3
    with open_store(tmp_path / "p.h5") as s:
        assert sorted(s.ids()) == ["s0", "s1", "s2"]
    again = extract_file(videos, tmp_path / "p.h5", config)  # same videos and settings: nothing to do
    assert again["key"] == last["key"]


def test_resume_after_sigkill(biased_ckpt, tmp_path):
    videos = [noise_video(tmp_path / f"r{i}.avi", n=4 if i == 0 else 40) for i in range(4)]
    out = tmp_path / "poses.h5"
    cmd = [sys.executable, "-m", "skelpipe", "extract", "--videos", *map(str, videos), "--backbone",
           "mobilenetv3small", "--checkpoint", str(biased_ckpt), "--out", str(out), "--long-edge", "65",
           "--device", "cpu", "--decoder-workers", "0", "--decoder-setting", "cif_neighbors=1", "--batch-size", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "poses.h5.partial"
    deadline = time.time() + 120
    units = []
    while time.time() < deadline and proc.poll() is None:
        units = list(partial.glob("extract/*.partial/.units/*.json"))
        if units:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert units, "the first video never finished"
    done_before = len(list(partial.glob("extract/*.partial/.units/*.json")))
    assert 1 <= done_before < 4, "killed too late to test resuming"
    assert not out.exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((tmp_path / "poses.h5.manifest.json").read_text())
    assert manifest["already_done"] == done_before and manifest["units"] == 4
    with open_store(out) as s:
        assert sorted(s.ids()) == ["r0", "r1", "r2", "r3"]
        assert s.read("r3").keypoints.shape == (2, 40, 17, 3)


def test_real_clips(shared_data, biased_ckpt, tmp_path):
    clips = [shared_data / "videos" / "ta_chi.mp4", shared_data / "videos" / "S001C001P001R001A001_rgb.avi"]
    extract_file(clips, tmp_path / "real.h5",
                 ExtractConfig("mobilenetv3small", checkpoint=str(biased_ckpt), device="cpu", long_edge=65,
                               batch_size=16, decoder_workers=0, decoder_config=BIASED))
    with open_store(tmp_path / "real.h5") as s:
        tai, ntu = s.read("ta_chi"), s.read("S001C001P001R001A001")
    assert tai.keypoints.shape == (2, 300, 17, 3) and tai.attrs["image_size"] == [340, 256]
    assert abs(tai.attrs["fps"] - 29.97) < 0.01
    assert ntu.keypoints.shape == (2, 103, 17, 3) and ntu.attrs["image_size"] == [1920, 1080]
    assert ntu.attrs["fps"] == 30.0 and ntu.attrs["num_frames"] == 103
    seen = ntu.keypoints[..., 2] > 0
    assert seen.any() and ntu.keypoints[..., 0][seen].max() <= 1920 and ntu.keypoints[..., 1][seen].max() <= 1080


def test_bench_extract_table(biased_ckpt, tmp_path, capsys):
    from skelpipe.cli import main

    v = noise_video(tmp_path / "clip.avi", n=6)
    main(["bench", "extract", "--backbone", "mobilenetv3small", "--video", str(v), "--checkpoint", str(biased_ckpt),
          "--device", "cpu", "--long-edge", "65", "--decoder-workers", "1"])
    err = capsys.readouterr().err
    assert "extraction speed, 6 frames" in err
    rows = {line.split("│")[1].strip(): line for line in err.splitlines() if line.count("│") >= 4}
    for what in ("skelpipe extract", "network alone (batch", "python -m"):
        (line,) = [v for k, v in rows.items() if k.startswith(what)]
        assert float(line.split("│")[2].replace(",", "")) > 0


def test_extraction_is_bit_identical_however_it_is_split(biased_ckpt, tmp_path, monkeypatch):
    """Straight, in two shards (--shard, torchrun's ranks), killed after one video then resumed,
    with a pool of decoders: the same bytes. Every batch holds frames of one video only, laid
    out from its first frame, and every frame gets a decoder of its own, so a video's poses
    never depend on what else was in flight before it."""
    # 5, 6, 7 frames: ragged batches
    videos = [noise_video(tmp_path / f"v{i}.avi", n=5 + i) for i in range(3)]
    config = ExtractConfig("mobilenetv3small", checkpoint=str(biased_ckpt), device="cpu", long_edge=65,
                           decoder_workers=0, decoder_config=BIASED, batch_size=4)
    extract_file(videos, tmp_path / "straight.h5", config)
    extract_file(videos, tmp_path / "sharded.h5", config, shard=(1, 2))
    extract_file(videos, tmp_path / "sharded.h5", config, shard=(0, 2))

    real_write, calls = extract._write_video, []

    def dying_write(job, *args):
        calls.append(job.sample_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while writing the second video
        return real_write(job, *args)

    monkeypatch.setattr(extract, "_write_video", dying_write)
    with pytest.raises(KeyboardInterrupt):
        extract_file(videos, tmp_path / "resumed.h5", config)
    monkeypatch.setattr(extract, "_write_video", real_write)
    extract_file(videos, tmp_path / "resumed.h5", config)  # resumes: the first video is not redone
    extract_file(videos, tmp_path / "pool.h5", replace(config, decoder_workers=2))  # frames to any worker
    for rank in (1, 0):  # as torchrun's ranks see it: the shard comes from RANK / WORLD_SIZE
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        extract_file(videos, tmp_path / "torchrun.h5", config)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    straight = (tmp_path / "straight.h5").read_bytes()
    differ = [name for name in ("sharded", "resumed", "pool", "torchrun")
              if (tmp_path / f"{name}.h5").read_bytes() != straight]
    assert not differ
