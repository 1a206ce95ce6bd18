"""OpenPifPaf checkpoints are pickles: one that would run code is refused before any of it runs,
while real (random-weight) OpenPifPaf checkpoints, named ones included, still load."""

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("openpifpaf", reason="OpenPifPaf is not installed (skelpipe install-openpifpaf)")

from skelpipe.core.errors import SkelpipeError  # noqa: E402
from skelpipe.pose import network  # noqa: E402


class Payload:
    """Unpickling this runs ``func(*args)``: what a hostile checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Checkpoints whose unpickling would create ``marker``: torch's zip format and a bare pickle,
    by a shell command and by Python's own ``open``."""
    shell = Payload(os.system, f"touch {marker}")
    files = {"zip, os.system": tmp_path / "system.pt", "zip, open": tmp_path / "open.pt"}
    torch.save({"model": shell, "epoch": 0}, files["zip, os.system"])
    torch.save({"model": Payload(open, str(marker), "w")}, files["zip, open"])
    for protocol in (2, 4):
        files[f"bare pickle {protocol}"] = tmp_path / f"bare{protocol}.pkl"
        files[f"bare pickle {protocol}"].write_bytes(pickle.dumps({"model": shell}, protocol=protocol))
    return files


@pytest.fixture(scope="module")
def people_ckpt(tmp_path_factory):
    return network.random_checkpoint("mobilenetv3small", tmp_path_factory.mktemp("ckpt") / "people.pkl", people=2)


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    for what, path in hostile(tmp_path, marker).items():
        with pytest.raises(SkelpipeError) as e:
            network.load_network("mobilenetv3small", str(path))
        assert str(e.value).startswith(f"{path}: not a loadable OpenPifPaf checkpoint"), what
        assert "\n" not in str(e.value)
        assert not marker.exists(), what
    with pytest.raises(SkelpipeError, match=r"it names posix\.system, which an OpenPifPaf network never needs"):
        network.load_network("mobilenetv3small", str(tmp_path / "system.pt"))


def test_extract_command_refuses_a_hostile_checkpoint_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    evil = hostile(tmp_path, marker)["zip, os.system"]
    video = tmp_path / "v.avi"
    video.write_bytes(b"x")
    proc = subprocess.run([sys.executable, "-m", "skelpipe", "extract", "--videos", str(video), "--backbone",
                           "mobilenetv3small", "--checkpoint", str(evil), "--out", str(tmp_path / "p.h5"),
                           "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert f"error: {evil}: not a loadable OpenPifPaf checkpoint (it names posix.system" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "p.h5").exists()


def test_random_weight_checkpoints_load_with_their_hooks_and_under_numpy1_names(people_ckpt, tmp_path):
    net = network.load_network("mobilenetv3small", str(people_ckpt))
    assert type(net.model).__name__ == "Shell"
    assert [type(h).__name__ for h in net.model._forward_hooks.values()] == ["PeopleFields"]
    assert len(net.cif_meta.keypoints) == 17
    # a checkpoint written under numpy 1 names its arrays numpy.core.multiarray._reconstruct
    old = tmp_path / "numpy1.pkl"
    with zipfile.ZipFile(people_ckpt) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"cnumpy._core.multiarray\n" in data
                data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
            dst.writestr(item, data)
    again = network.load_network("mobilenetv3small", str(old))
    a, b = net.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_named_checkpoint_is_fetched_and_loaded_offline_from_a_local_file(people_ckpt, tmp_path, monkeypatch):
    import openpifpaf

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setitem(openpifpaf.CHECKPOINT_URLS, "mobilenetv3small", people_ckpt.as_uri())
    net = network.load_network("mobilenetv3small")  # "downloaded" through torch.hub from a file:// URL
    cached = tmp_path / "torch" / "hub" / "checkpoints" / people_ckpt.name
    assert cached.read_bytes() == people_ckpt.read_bytes()
    assert net.checkpoint == f"mobilenetv3small ({people_ckpt.name})"
    monkeypatch.setenv(network.OFFLINE_ENV, "1")  # now in the hub cache: no download needed
    assert network.load_network("mobilenetv3small").checkpoint == net.checkpoint

    marker = tmp_path / "pwned"
    (tmp_path / "evil").mkdir()
    evil = hostile(tmp_path / "evil", marker)
    monkeypatch.delenv(network.OFFLINE_ENV)
    monkeypatch.setitem(openpifpaf.CHECKPOINT_URLS, "mobilenetv3small", evil["zip, os.system"].as_uri())
    with pytest.raises(SkelpipeError, match="not a loadable OpenPifPaf checkpoint"):
        network.load_network("mobilenetv3small")
    assert not marker.exists()


def test_predict_extraction_refuses_a_hostile_checkpoint_unrun(tmp_path):
    from skelpipe.pipeline.predict import extract_poses
    from skelpipe.pose.settings import ExtractConfig

    marker = tmp_path / "pwned"
    evil = hostile(tmp_path, marker)["zip, open"]
    video = tmp_path / "v.avi"
    video.write_bytes(b"x")
    with pytest.raises(SkelpipeError, match=r"it names (io|builtins)\.open, which an OpenPifPaf network never needs"):
        extract_poses(video, ExtractConfig("mobilenetv3small", checkpoint=evil, device="cpu",
                                           decoder_workers=0))
    assert not marker.exists()
