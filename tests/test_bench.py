"""``skelpipe bench``: the figures and targets of a report, the README table made from it, the
child-process protocol, and the train / memory benchmarks at toy sizes."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from skelpipe.bench import suite
from skelpipe.bench.report import README_MARK, figures, markdown
from skelpipe.commands import bench
from skelpipe.commands.bench import bench_memory, bench_train
from skelpipe.data import split as split_module

ROOT = Path(__file__).resolve().parents[1]


def _report(ref=(4.0, 5.0), teacher=(10.0, 12.0), none=(20.0, 22.0), pmsc=(19.0, 21.0), device="cpu"):
    ours = [{"train_samples_per_s": {"teacher": t, "none": n, "pmsc": p}, "infer_samples_per_s": 40.0}
            for t, n, p in zip(teacher, none, pmsc)]
    return {"command": "skelpipe bench all --device cpu", "date": "2026-12-02",
            "machine": {"cpu": "a CPU", "cores": 2, "torch": "2.x", "device": device, "cpu_native_bf16": True},
            "train": {"batch": 16, "frames": 100,
                      "results": {"reference": [{"train_samples_per_s": r, "infer_samples_per_s": 10.0} for r in ref],
                                  "skelpipe": ours}},
            "extract": {"backbone": "shufflenetv2k16", "weights": "people", "long_edge": 321,
                        "result": {"extract_fps": 15.0, "openpifpaf_video_fps": 7.5, "ratio_vs_openpifpaf_video": 2.0}},
            "memory": {"teacher": {"peak_rss_mb": 4096.0, "samples": 40091, "frames": 300, "pack_gb": 12.1,
                                   "rows": "disk"}},
            "not_measured": {"GPU figures": "no GPU"}}


def test_figures_pair_each_repeat_with_the_reference_measured_beside_it():
    rows = {r["what"].split(",")[0]: r for r in figures(_report())}
    teacher = rows["teacher training (ntu25 3D)"]
    assert teacher["ratio"] == {"median": 2.45, "min": 2.4, "max": 2.5, "n": 2}  # 10/4, 12/5
    assert teacher["target"] == "≥ 2× reference" and teacher["met"] is True
    pmsc = rows["student training w/ PMSC (coco17 2D)"]
    assert pmsc["ratio"]["median"] == pytest.approx((19 / 4 + 21 / 5) / 2, abs=1e-3) and pmsc["met"]
    over = rows["distillation overhead (PMSC vs w/o KD)"]
    assert over["measured"]["median"] == pytest.approx(100 * ((20 / 19 - 1) + (22 / 21 - 1)) / 2, abs=1e-3)
    assert over["met"] is True
    assert rows["teacher inference (evaluation)"]["ratio"]["median"] == 4.0 and rows["teacher inference (evaluation)"]["met"] is None
    extract = next(r for r in figures(_report()) if r["what"].startswith("extraction"))
    assert extract["ratio"]["median"] == 2.0 and extract["met"] is True
    memory = next(r for r in figures(_report()) if "peak host memory" in r["what"])
    assert memory["measured"]["median"] == 4.0 and memory["met"] is True
    # a slower run misses its targets; on a GPU the targets are the GPU ones
    slow = {r["what"].split(",")[0]: r for r in figures(_report(teacher=(6.0, 7.0), pmsc=(10.0, 11.0)))}
    assert slow["teacher training (ntu25 3D)"]["met"] is False
    assert slow["distillation overhead (PMSC vs w/o KD)"]["met"] is False
    gpu = [r for r in figures(_report(device="cuda:0")) if r["target"]]
    assert {r["target"] for r in gpu} >= {"≥ 3× reference", "≥ 4× reference", "≥ 2,000 samples/s",
                                          "≥ 5× openpifpaf.video", "≥ 300 frames/s"}


def test_markdown_table_and_the_readme_it_is_written_into(tmp_path):
    table = markdown(_report())
    assert "| teacher training (ntu25 3D), B 16, T 100, M 2 | 11.00 samples/s [10.00–12.00] | " in table
    assert "| 2.45× [2.40–2.50] | ≥ 2× reference | yes |" in table
    assert "| GPU figures | not measured: no GPU |" in table
    (tmp_path / "r.json").write_text(json.dumps(_report()))
    mark = README_MARK.format(device="cpu")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{mark}\nold table\n{mark.replace('<!-- bench', '<!-- end bench')}\nafter\n")
    result = CliRunner().invoke(bench.bench_command, ["table", str(tmp_path / "r.json"), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert "old table" not in text and table in text and text.endswith("after\n")
    # no markers: one clear line
    readme.write_text("# nothing to replace\n")
    result = CliRunner().invoke(bench.bench_command, ["table", str(tmp_path / "r.json"), "--readme", str(readme)])
    assert result.exit_code != 0 and "markers" in str(result.exception)
    (tmp_path / "bad.json").write_text("{}")
    result = CliRunner().invoke(bench.bench_command, ["table", str(tmp_path / "bad.json")])
    assert result.exit_code != 0 and "not a skelpipe bench all report" in str(result.exception)


def test_child_merges_json_lines_and_reports_failures():
    code = "import json; print('noise'); print(json.dumps({'a': 1})); print(json.dumps({'b': 2}))"
    got = suite.child([sys.executable, "-c", code])
    assert got["a"] == 1 and got["b"] == 2 and got["wall_s"] >= 0
    failed = suite.child([sys.executable, "-c", "import sys; print('broken input'); sys.exit(3)"])
    assert failed["error"].startswith("exit 3") and "broken input" in failed["error"]


def test_bench_train_json_at_toy_size():
    args = ["--json", "--device", "cpu", "--batch-size", "4", "--frames", "8", "--steps", "3",
            "--channels", "8,16", "--runs", "teacher,none,pmsc"]
    result = CliRunner().invoke(bench_train, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    assert set(r["train_samples_per_s"]) == {"teacher", "none", "pmsc"}
    assert all(v > 0 for v in r["train_samples_per_s"].values()) and r["infer_samples_per_s"] > 0
    assert r["peak_rss_mb"] > 0 and r["channels"] == [8, 16] and r["batch"] == 4


def test_bench_memory_trains_from_a_sparse_pack_read_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(split_module, "MEMORY_SHARE", 0.0)  # as if the pack were larger than the RAM
    args = ["--json", "--device", "cpu", "--samples", "300", "--frames", "8", "--channels", "8,16",
            "--steps", "2", "--batch-size", "4", "--stage", "student", "--dir", str(tmp_path)]
    result = CliRunner().invoke(bench_memory, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    assert r["rows"] == "disk" and r["samples"] == 300 and r["peak_rss_mb"] > 0
    assert r["pack_disk_gb"] < r["pack_gb"] or r["pack_gb"] < 0.01
    assert list(tmp_path.iterdir()) == []  # the pack was temporary


def test_sparse_pack_reads_as_zeros_and_takes_no_disk(tmp_path):
    from skelpipe.bench.inputs import sparse_pack
    from skelpipe.data.split import load_split

    pack = sparse_pack(tmp_path / "p", samples=2000, frames=300)
    f = pack / "data.h5"
    assert f.stat().st_size > 2000 * 3 * 300 * 25 * 2 * 4 and f.stat().st_blocks * 512 < 50e6
    sp = load_split(pack, "train", rows="disk")
    assert sp.hq.shape == (2000, 3, 300, 25, 2) and not sp.hq[[0, 1999]].any()
    assert sp.attrs["hq_layout"] == "ntu25" and len(np.unique(sp.label)) > 1


def test_people_fields_decode_to_the_people_drawn(tmp_path):
    pytest.importorskip("openpifpaf")
    import torch

    from skelpipe.pose import decoding, network

    ckpt = network.random_checkpoint("mobilenetv3small", tmp_path / "people.pkl", people=2)
    net = network.load_network("mobilenetv3small", str(ckpt))
    hook = next(iter(net.model._forward_hooks.values()))
    with torch.no_grad():
        heads = net.model(torch.zeros(1, 3, 257, 449))
    cif, caf = heads[net.cif_meta.head_index], heads[net.caf_meta.head_index]
    drawn = hook.joints(0, cif.shape[-2], cif.shape[-1]) * net.cif_meta.stride  # pixels
    decoder = decoding.InlineDecoder(net.cif_meta, net.caf_meta, None)
    decoder.submit(("x", 0), "x:0", cif[0].numpy(), caf[0].numpy())
    ((_, (poses, scores)),) = list(decoder.collect())
    assert len(poses) == 2 and (scores > 0.5).all()
    for pose in poses:  # each decoded person is one drawn person, joint by joint, within a cell
        err = np.abs(pose[None, :, :2] - drawn).max(axis=(1, 2)).min()
        assert err < net.cif_meta.stride


def test_native_bf16_follows_the_cpu_and_the_device(monkeypatch):
    import torch

    from skelpipe.core.device import native_bf16

    for amx, avx512_bf16, want in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert native_bf16(torch.device("cpu")) is want
    assert native_bf16(torch.device("cuda", 0)) and not native_bf16(torch.device("meta"))


def test_the_readme_table_is_the_committed_report():
    report = ROOT / "docs" / "bench" / "cpu.json"
    table = markdown(json.loads(report.read_text()))
    assert table in (ROOT / "README.md").read_text(), "run: skelpipe bench table docs/bench/cpu.json --readme README.md"


def test_bench_all_runs_every_section_beside_the_reference(tmp_path, monkeypatch):
    """The whole orchestration at toy sizes: a stand-in reference script, children for each
    measurement, one JSON, its table."""
    reference = tmp_path / "reference_stgcn.py"
    reference.write_text("import json, sys\n"
                         "print(json.dumps({'reference': 'st-gcn', 'argv': sys.argv[1:], "
                         "'train_samples_per_s': 2.0, 'infer_samples_per_s': 8.0}))\n")
    tiny = {"batch": 4, "frames": 8, "steps": 2}
    monkeypatch.setattr(suite, "plan", lambda device, quick: {
        "train": tiny, "demo": tiny, "extract": {},
        "memory": {"steps": 1, "batch": 4, "samples": 64, "frames": 8, "channels": "8,16"}})
    monkeypatch.setattr(suite, "extract_section", lambda *a: {"skipped": "not in this test"})
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench.bench_command, ["all", "--device", "cpu", "--quick", "--out", str(out),
                                                      "--reference", str(reference)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (ref,) = report["train"]["results"]["reference"]
    assert ref["argv"] == ["--device", "cpu", "--batch", "4", "--frames", "8", "--steps", "2"]
    assert ref["peak_rss_mb"] > 0  # the wrapper's line, merged
    (ours,) = report["train"]["results"]["skelpipe"]
    assert set(ours["train_samples_per_s"]) == {"teacher", "none", "pmsc"}
    assert report["not_measured"] == {"extraction": "not in this test"}
    assert report["memory"]["teacher"]["samples"] == 64 and report["machine"]["cores"] >= 1
    assert report["figures"] == figures(report)
    rows = {r["what"].split(",")[0]: r for r in figures(report)}
    teacher = rows["teacher training (ntu25 3D)"]
    assert teacher["ratio"]["median"] == pytest.approx(ours["train_samples_per_s"]["teacher"] / 2.0, abs=1e-3)
    assert "| extraction | not measured: not in this test |" in markdown(report)

