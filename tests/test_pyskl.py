"""pyskl annotation pickles in: files as pyskl and mmaction2 write them (every pickle protocol,
numpy-1 and numpy-2 module names, numpy-scalar labels, float16, an item with no person, each
split naming), bad files refused with one line naming the item, and code in a pickle refused
before it runs. The export is tested in test_pyskl_export.py."""

import pickle
import pickletools

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import NTU_IDS, dump, pyskl_2d, pyskl_3d, split_lists, write_pyskl

from skelpipe.cli import cli
from skelpipe.core.errors import SkelpipeError
from skelpipe.data import pyskl
from skelpipe.skeleton.store import open_store

def names_asked(blob: bytes) -> set[str]:
    """The globals a pickle names ("module.name"), read from its opcodes without loading it."""
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(blob):
        if op.name == "GLOBAL":
            out.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            out.add(".".join(strings[-2:]))
        if isinstance(arg, str):
            strings.append(arg)
    return out


@pytest.mark.filterwarnings("ignore:numpy.core.numeric is deprecated:DeprecationWarning")
@pytest.mark.parametrize("core", ["core", "_core"])
@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_files_of_every_protocol_and_numpy_naming_import(tmp_path, protocol, core):
    data = pyskl_2d()
    blob = dump(data, protocol, core)
    asked = names_asked(blob)
    # what real files ask for: bytes through _codecs.encode and __builtin__.bytes (the M = 0 item)
    # in protocols 0-2, numpy's _frombuffer in 5, the numpy-1 or -2 module names
    assert ({"_codecs.encode", "__builtin__.bytes"} <= asked) == (protocol <= 2)
    assert (f"numpy.{core}.numeric._frombuffer" in asked) == (protocol == 5)
    assert f"numpy.{core}.multiarray.scalar" in asked
    assert not any(a.startswith("numpy._core" if core == "core" else "numpy.core.") for a in asked)
    plain = pickle.loads(blob)      # the fixture is a real pickle: plain pickle reads it back
    np.testing.assert_array_equal(plain["annotations"][0]["keypoint"], data["annotations"][0]["keypoint"])

    (tmp_path / "a.pkl").write_bytes(blob)
    counts = pyskl.import_store(tmp_path / "a.pkl", tmp_path / "a.h5", "xview")
    assert counts == {"samples": 4, "layout": "coco17", "split": "xview",
                      "lists": ["xview_train", "xview_val"],
                      "train": 1, "test": 3, "outside": 0}
    with open_store(tmp_path / "a.h5") as s:
        assert s.layout.name == "coco17" and s.attrs["channels"] == "x,y,conf"
        for item in data["annotations"]:
            smp = s.read(item["frame_dir"])
            np.testing.assert_array_equal(smp.keypoints[..., :2], item["keypoint"].astype(np.float32))
            np.testing.assert_array_equal(smp.keypoints[..., 2], item["keypoint_score"].astype(np.float32))
            assert smp.attrs["label"] == item["label"] and smp.attrs["num_frames"] == item["total_frames"]
            assert smp.attrs["image_size"] == [1920, 1080]       # img_shape, not original_shape
        assert s.read(NTU_IDS[3]).keypoints.shape == (0, 13, 17, 3)
        assert [s.read(i).attrs["split"] for i in NTU_IDS] == ["train", "test", "test", "test"]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_3d_files_import(tmp_path, protocol):
    data = pyskl_3d()
    path = write_pyskl(tmp_path / "a.pkl", data, protocol, "core")
    counts = pyskl.import_store(path, tmp_path / "a.h5", "xsub")
    assert (counts["layout"], counts["train"], counts["test"]) == ("ntu25", 2, 1)
    with open_store(tmp_path / "a.h5") as s:
        assert s.attrs["channels"] == "x,y,z" and "image_size" not in s.read(NTU_IDS[0]).attrs
        for item in data["annotations"]:
            np.testing.assert_array_equal(s.read(item["frame_dir"]).keypoints, item["keypoint"])


@pytest.mark.parametrize("naming,choice,train,test", [
    ("ntu", "xsub", NTU_IDS[:3], NTU_IDS[3:]),
    ("ntu", "xview_val", NTU_IDS[:1], NTU_IDS[1:]),          # a list's name means its pair
    ("ucf", "1", NTU_IDS[1:], NTU_IDS[:1]),
    ("ucf", "train1", NTU_IDS[1:], NTU_IDS[:1]),
    ("ucf", "test3", NTU_IDS[3:], NTU_IDS[:3]),
    ("val", None, NTU_IDS[:3], NTU_IDS[3:]),                 # FineGYM, Kinetics: the only pair
    ("val", "train", NTU_IDS[:3], NTU_IDS[3:]),
    ("test", None, NTU_IDS[:3], NTU_IDS[3:]),                # Diving48
])
def test_each_split_naming(tmp_path, naming, choice, train, test):
    path = write_pyskl(tmp_path / "a.pkl", pyskl_2d(lists=naming), protocol=2)
    args = ["import", "pyskl", str(path), "--out", str(tmp_path / "a.h5")]
    args += ["--split", choice] if choice else []
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"{len(train)} train" in said and f"{len(test)} test" in said
    with open_store(tmp_path / "a.h5") as s:
        assert [i for i in NTU_IDS if s.read(i).attrs.get("split") == "train"] == train
        assert [i for i in NTU_IDS if s.read(i).attrs.get("split") == "test"] == test


def test_a_pair_with_both_val_and_test_tests_on_test(tmp_path):
    data = pyskl_2d()
    data["split"] = {"train": NTU_IDS[:2], "val": NTU_IDS[2:3], "test": NTU_IDS[3:]}
    counts = pyskl.import_store(write_pyskl(tmp_path / "a.pkl", data), tmp_path / "a.h5")
    assert counts["lists"] == ["train", "test"]
    assert (counts["train"], counts["test"], counts["outside"]) == (2, 1, 1)


@pytest.mark.parametrize("lists,choice,message", [
    ({"fold_a": NTU_IDS, "fold_b": []}, None, "its split lists (fold_a, fold_b) are not train/test pairs"),
    ({"xsub_train": NTU_IDS}, "xsub", "its split lists (xsub_train) are not train/test pairs"),
    ("ntu", None, "several splits, choose one (--split, or a source's split =): "
                  "xsub (xsub_train + xsub_val), xview"),
    ("ntu", "xset", "no split 'xset' in the file; it has xsub"),
    ("ucf", "4", "no split '4' in the file; it has 1 (train1 + test1), 2 (train2 + test2), 3"),
    ({}, "xsub", "split 'xsub': the file has no split lists"),
    ({"train": ["x"], "val": ["y"]}, None, "split lists train + val name none of the file's 4 annotations"),
    ({"train": NTU_IDS[:2], "test": NTU_IDS[1:]}, None, f"{NTU_IDS[1]} is in both train and test"),
])
def test_splits_that_cannot_be_mapped_are_one_line_errors(tmp_path, lists, choice, message):
    data = pyskl_2d()
    data["split"] = split_lists(lists, NTU_IDS) if isinstance(lists, str) else lists
    path = write_pyskl(tmp_path / "a.pkl", data)
    with pytest.raises(SkelpipeError) as err:
        pyskl.import_store(path, tmp_path / "a.h5", choice)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "a.h5").exists()


def test_a_file_without_split_lists_imports_and_says_so(tmp_path):
    path = write_pyskl(tmp_path / "a.pkl", pyskl_2d()["annotations"])      # the older bare list
    result = CliRunner().invoke(cli, ["import", "pyskl", str(path), "--out", str(tmp_path / "a.h5")])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "no split lists, so no sample has a split" in said
    with open_store(tmp_path / "a.h5") as s:
        assert len(s) == 4 and not any("split" in s.read(i).attrs for i in NTU_IDS)


# ---------------------------------------------------------------- code in a pickle
class Payload:
    """An object whose unpickling runs ``how`` to create ``marker``; unpickled by plain pickle,
    the file appears."""

    def __init__(self, how, marker):
        self.how, self.marker = how, str(marker)

    def __reduce__(self):
        import os
        import subprocess
        return {"os.system": (os.system, (f"touch {self.marker}",)),
                "exec": (exec, (f"open({self.marker!r}, 'w').close()",)),
                "eval": (eval, (f"open({self.marker!r}, 'w').close()",)),
                "subprocess": (subprocess.Popen, (["touch", self.marker],))}[self.how]


def carriers(payload):
    """Where a payload can hide in a pyskl file: an item, a label, and the state of an object
    array (its elements are unpickled through the array's __setstate__)."""
    data = pyskl_2d()
    yield "item", {**data, "annotations": data["annotations"] + [payload]}
    data = pyskl_2d()
    data["annotations"][0]["label"] = payload
    yield "label", data
    data = pyskl_2d()
    data["annotations"][1]["keypoint"] = np.array([0.0, payload], dtype=object)
    yield "ndarray state", data


@pytest.mark.parametrize("how", ["os.system", "exec", "eval", "subprocess"])
def test_code_in_a_pickle_is_refused_in_every_protocol_and_never_runs(tmp_path, how):
    control = tmp_path / "control"
    ran = pickle.loads(pickle.dumps(Payload(how, control)))   # the payload is real: plain pickle runs it
    if hasattr(ran, "wait"):
        ran.wait()
    assert control.exists()
    for protocol in range(6):
        for where, data in carriers(Payload(how, tmp_path / "pwned")):
            path = tmp_path / "evil.pkl"
            path.write_bytes(pickle.dumps(data, protocol=protocol))
            with pytest.raises(SkelpipeError, match="not a pyskl annotation pickle .*it asks for") as err:
                pyskl.import_store(path, tmp_path / "evil.h5")
            assert "\n" not in str(err.value), (protocol, where)
            assert not (tmp_path / "pwned").exists(), (protocol, where)
            assert not (tmp_path / "evil.h5").exists()


@pytest.mark.parametrize("blob,message", [
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", "is not the latin-1 bytes"),
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\xca\x9a;\x85R.", "takes 0 positional arguments"),
    (b"\x80\x04\x8c\x05numpy\x8c\x12ndarray.__reduce__\x93.",
     "asks for numpy.ndarray.__reduce__"),
    (b"\x80\x02X\x01\x00\x00\x00aQ.", "refers to objects outside the file"),
])
def test_the_allowed_names_do_only_what_files_need(tmp_path, blob, message):
    """_codecs.encode only as latin-1 text to bytes (no codec looked up by name), bytes only
    empty (no allocation sized by the file), no attribute paths, no persistent ids."""
    (tmp_path / "a.pkl").write_bytes(blob)
    with pytest.raises(SkelpipeError, match=message):
        pyskl.read(tmp_path / "a.pkl")


def test_the_file_is_unpickled_as_it_is_read(tmp_path, monkeypatch):
    from pathlib import Path
    path = write_pyskl(tmp_path / "a.pkl", pyskl_2d())
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read the whole file into memory"))
    assert len(pyskl.read(path)[1]) == 4


# ---------------------------------------------------------------- bad files
@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["annotations"][2].pop("keypoint"), "annotation 2 (S001C001P003R001A003): missing keypoint"),
    (lambda d: d["annotations"][1].update(keypoint=np.zeros((2, 11, 18, 2), np.float32)),
     "annotation 1 (S001C001P002R001A002): keypoint of shape (2, 11, 18, 2)"),
    (lambda d: d["annotations"][0].update(keypoint=[[0.0]]), "annotation 0 (S001C001P001R001A001): keypoint must be a float array"),
    (lambda d: d["annotations"][0].update(keypoint=np.zeros((2, 10, 17, 2), np.int64)), "keypoint must be a float array, got ndarray of int64"),
    (lambda d: d["annotations"][2].update(keypoint_score=np.zeros((2, 11, 17))), "annotation 2 (S001C001P003R001A003): keypoint_score must be an array of shape (2, 12, 17)"),
    (lambda d: d["annotations"][1].update(label=-1), "annotation 1 (S001C001P002R001A002): label must be an integer >= 0, got -1"),
    (lambda d: [d["annotations"][0].pop(k) for k in ("img_shape", "original_shape")], "2D keypoints need a positive img_shape (H, W), got None"),
    (lambda d: d["annotations"][0].update(img_shape=(0, 0)), "need a positive img_shape (H, W), got (0, 0)"),
    (lambda d: d["annotations"][0].update(img_shape="big"), "img_shape must be (H, W), got 'big'"),
    (lambda d: d.update(annotations="nope"), "expected a dict with 'split' and 'annotations'"),
    (lambda d: d.pop("annotations"), "expected a dict with 'split' and 'annotations'"),
])
def test_bad_files_are_refused_with_one_line(tmp_path, mutate, message):
    data = pyskl_2d()
    mutate(data)
    path = write_pyskl(tmp_path / "bad.pkl", data)
    with pytest.raises(SkelpipeError) as err:
        pyskl.import_store(path, tmp_path / "bad.h5", "xsub")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "bad.h5").exists()


def test_a_label_out_of_range_and_a_file_that_is_not_a_pickle(tmp_path):
    path = write_pyskl(tmp_path / "a.pkl", pyskl_2d())
    with pytest.raises(SkelpipeError, match=r"annotation 2 \(S001C001P003R001A003\): label 2 out of range"):
        pyskl.import_store(path, tmp_path / "a.h5", "xsub", num_classes=2)
    (tmp_path / "junk.pkl").write_bytes(b"\x00junk")
    with pytest.raises(SkelpipeError, match="not a pyskl annotation pickle"):
        pyskl.import_store(tmp_path / "junk.pkl", tmp_path / "b.h5")


def test_a_pyskl_file_as_the_lq_source_of_a_pipeline(tmp_path):
    """pyskl's HRNet poses as NTU's LQ: an import stage keyed on the file's content."""
    from skelpipe.pipeline.cache import Cache
    from skelpipe.pipeline.config import load_pipeline
    from skelpipe.pipeline.plan import Plan

    pkl = write_pyskl(tmp_path / "hrnet.pkl", pyskl_2d(), protocol=2)
    toml = tmp_path / "hrnet.toml"
    toml.write_text(f'''base = "ntu"
name = "ntu-hrnet"
[sources.hrnet]
kind = "pyskl"
file = "{pkl}"
split = "xsub"
label = "pyskl HRNet 2D"
[[settings]]
name = "hrnet"
hq = "kinect"
lq = "hrnet"
[[experiments]]
table = 1
settings = ["hrnet"]
benchmarks = ["xsub"]
op = [0.0]
kd = ["none", "pmsc"]
''')
    plan = Plan(load_pipeline(str(toml)), Cache(tmp_path / "cache"), None, "cpu").build()
    (step,) = [s for s in plan.ordered() if s.stage == "import"]
    assert step.meta["label"] == "pyskl HRNet 2D" and step.entry.config["split"] == "xsub"
    write_pyskl(pkl, pyskl_2d(seed=1))  # other poses in the same file: another key
    again = Plan(load_pipeline(str(toml)), Cache(tmp_path / "cache"), None, "cpu").build()
    assert [s.key for s in again.ordered() if s.stage == "import"] != [step.key]
    from skelpipe.core.work import Work
    from skelpipe.pipeline.stages import build_imported
    work = Work(tmp_path / "w")
    build_imported(plan, step, work)
    with open_store(work.dir / "skeletons.h5") as s:
        assert len(s) == 4 and s.layout.name == "coco17"
