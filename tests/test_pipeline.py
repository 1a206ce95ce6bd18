"""run-all: the plan of every pipeline file, the demo end to end on a reduced configuration,
its cached rerun, a kill during run-all and its resume, and the results.json schema."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import (DEMO_TINY_NETS, SKELETON_FRAMES, run_all_command, set_args, skeleton_text,
                      write_penn_label)

from skelpipe.cli import cli
from skelpipe.core.errors import ConfigError, SkelpipeError
from skelpipe.pipeline.config import load_pipeline, parse_override

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

# A demo small enough for CI: 8 subjects, short clips, tiny networks, 2 epochs; one start (both
# starts: test_init_axis_gives_four_cells_and_their_paired_gains).
SMALL = ["data.subjects=6", "data.reps=2", "data.test_reps=2", *DEMO_TINY_NETS]


@pytest.mark.parametrize("name", ["demo", "ntu", "penn", "sysu"])
def test_dry_run_every_pipeline(name, tmp_path):
    result = CliRunner().invoke(cli, ["run-all", name, "--dry-run", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "plan of" in result.output and "student" in result.output
    assert not any(tmp_path.iterdir())  # a dry run creates nothing


def test_ntu_plan_shares_skeletons_and_gives_each_student_its_own_key(plan_of):
    plan = plan_of("ntu")
    stages = [s.stage for s in plan.ordered()]
    # NTU: Kinect skeletons, two OpenPifPaf extractions, one pack per (setting, benchmark, fraction).
    assert stages.count("skeletons") == 1 and stages.count("extract") == 2
    assert stages.count("align") == 2
    assert stages.count("pack") == 2 * 2 * 3
    # Table 4 reuses Table 1's students at OP 0 (same keys): kd variants add only kl, global-msc.
    students = [s for s in plan.ordered() if s.stage == "student"]
    assert len({s.key for s in students}) == len(students)


def test_a_student_setting_rekeys_the_students_only(plan_of):
    base = {s.stage: s.key for s in plan_of("demo").ordered()}
    changed = {s.stage: s.key for s in plan_of("demo", "student.alpha=2.0").ordered()}
    assert all(base[s] == changed[s] for s in ("skeletons", "simulate", "align", "pack", "teacher",
                                                 "partmatrix"))
    assert base["student"] != changed["student"]


def test_a_student_without_kd_ignores_kd_only_settings(plan_of):
    # the baselines are shared by every ablation
    none = lambda plan: {s.key for s in plan.steps.values() if s.stage == "student" and s.entry.config["kd"] == "none"}  # noqa: E731
    plans = [plan_of("demo", *o)
             for o in ([], ["student.alpha=2.0", "student.tau=0.1", "student.part_pool='present'"])]
    assert none(plans[0]) == none(plans[1])


def test_seeds_multiply_student_cells_only(plan_of):
    one = plan_of("demo", "experiments.seeds=[0]")
    three = plan_of("demo", "experiments.seeds=[0, 1, 2]")
    count = lambda plan, stage: sum(s.stage == stage for s in plan.steps.values())  # noqa: E731
    assert count(three, "student") == 3 * count(one, "student")
    assert count(three, "teacher") == count(one, "teacher") == 1
    students = [s for s in three.steps.values() if s.stage == "student"]
    assert sorted({s.entry.config["seed"] for s in students}) == [0, 1, 2]
    # the seed moves initialisation and order; the training masks stay put unless asked
    assert {s.entry.config.get("occlusion_seed", 0) for s in students} == {0}
    evaluations = [meta for s, meta in three.records if s.deps["model"].stage == "student"]
    assert sorted({meta["seed"] for meta in evaluations}) == [0, 1, 2]


def test_seed_occlusion_moves_the_masks_of_occluded_students_only(plan_of):
    moved = plan_of("demo", "experiments.seeds=[0, 1]", "experiments.seed_occlusion=true")
    occluded = [s for s in moved.steps.values() if s.stage == "student" and s.entry.config["op"] > 0]
    assert {s.entry.config["occlusion_seed"] for s in occluded} == {0, 1}
    # at OP 0 nothing is occluded: the occlusion settings are not in the key
    clean = [s for s in moved.steps.values() if s.stage == "student" and s.entry.config["op"] == 0]
    assert clean and not any("occlusion_seed" in s.entry.config for s in clean)


@pytest.mark.parametrize("bad", ["[]", "[0, 0]", "['a']"])
def test_seeds_empty_repeated_or_not_integers_are_refused(plan_of, bad):
    with pytest.raises(SkelpipeError, match="seeds"):
        plan_of("demo", f"experiments.seeds={bad}")


def test_override_parsing():
    assert parse_override("teacher.epochs=5") == (["teacher", "epochs"], 5)
    assert parse_override("teacher.channels=[8, 16]") == (["teacher", "channels"], [8, 16])
    assert parse_override("extract.extractor=simulated") == (["extract", "extractor"], "simulated")
    cfg = load_pipeline("ntu", ["experiments.op=[0.3]"])
    assert all(e["op"] == [0.3] for e in cfg["experiments"]) and len(cfg["experiments"]) == 8  # Tables 1-5, three for the rivals


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SKELPIPE_NTU_ROOT", raising=False)
    result = CliRunner().invoke(cli, ["run-all", "ntu", "--cache-dir", str(tmp_path)])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "ntu data missing" in message and "SKELPIPE_NTU_ROOT" in message and ".skeleton" in message


def _run_all(tmp_path, extra=(), **kwargs):
    cmd = [*run_all_command(tmp_path / "cache", SMALL, tmp_path / "report"), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path, **kwargs)


@pytest.mark.slow
def test_demo_end_to_end_then_cached_rerun(tmp_path):
    t0 = time.time()
    proc = _run_all(tmp_path, ["--set", "experiments.op=[0.0, 0.6]", "--set", "experiments.seeds=[0, 1]"])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    first = time.time() - t0
    records = json.loads((tmp_path / "report" / "results.json").read_text())
    fields = {"benchmark", "model", "kd", "op", "hq_fraction", "hq_layout", "lq_layout", "extractor",
              "top1", "top5"}
    runs = [r for r in records if not r["aggregate"]]
    cells = [r for r in records if r["aggregate"]]
    # the teacher, and students kd none / pmsc at OP 0 and 0.6, each with seeds 0 and 1
    assert len(cells) == 1 + 2 * 2 and len(runs) == 1 + 2 * 2 * 2
    assert sorted(r["seed"] for r in runs if r["model"] == "student") == [0] * 4 + [1] * 4
    assert all(r["n_test"] == 2 * 12 * 2 for r in runs)          # 2 test subjects × 12 actions × 2
    students = [r for r in cells if r["model"] == "student"]
    assert all(r["seeds"] == [0, 1] and r["n"] == 2 and r["top1_sd"] is not None for r in students)
    for r in (r for r in students if r["kd"] == "pmsc"):
        lo, hi = r["gain_top1"]["ci95"]
        assert lo <= r["gain_top1"]["mean"] <= hi and r["gain_top1"]["n"] == 2
    for r in records:
        assert fields <= set(r)
        assert r["model"] in ("teacher", "student") and r["kd"] in (None, "none", "kl", "global-msc", "pmsc")
        assert 0 <= r["top1"] <= r["top5"] <= 100
        assert r["hq_layout"] == "ntu25" and r["lq_layout"] == "coco17" and r["extractor"] == "simulated"
    md = (tmp_path / "report" / "results.md").read_text()
    assert "Teacher" in md and "Student (w/ KD)" in md and " ± " in md and "CI [" in md
    plots = {p.name for p in (tmp_path / "report" / "plots").iterdir()}
    assert {"training_accuracy.png", "training_loss.png"} <= plots and any(p.startswith("part_matrix") for p in plots)
    assert "kd_gain.png" in plots
    assert any(p.startswith("skeletons_") for p in plots)
    check_report_page(tmp_path / "report", plots, ("Student (w/ KD)", "student/", "evaluate/"),  # rows, keys
                      name="demo_end_to_end")
    t0 = time.time()
    proc = _run_all(tmp_path, ["--set", "experiments.op=[0.0, 0.6]", "--set", "experiments.seeds=[0, 1]"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "done " not in out  # every stage served from the cache
    assert time.time() - t0 < first / 2
    assert json.loads((tmp_path / "report" / "results.json").read_text()) == records


def check_report_page(report: Path, plots: set, content=(), name="report"):
    """results.html: self-contained (every plot inline, no external reference), its tables and a
    run list with cache keys, in the order that leads with the answer; where Chromium is
    installed, rendered at a laptop's width without a console error, with the tables and the KD
    gain above the fold (render_in_chromium)."""
    import base64
    import shutil
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.images, self.links, self.ids = [], [], [], []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.tags.append(tag)
            self.ids += [attrs["id"]] if "id" in attrs else []
            if tag == "img":
                self.images.append(attrs["src"])
            self.links += [v for k, v in attrs.items() if k in ("href", "src") and not v.startswith("data:")]

    text = (report / "results.html").read_text()
    page = Page()
    page.feed(text)
    assert page.tags.count("table") >= 2 and not page.links  # the tables; nothing to fetch
    assert len(page.images) == len(plots)
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(c in text for c in content)
    # the answer first: the gain plot and the tables, then the curves; the confusion matrices and
    # the runs collapsed at the end
    sections = [i for i in page.ids if i in ("answer", "fig-kd_gain", "tables", "curves", "confusion", "runs")]
    expected = ["answer", "fig-kd_gain", "tables", "curves", "confusion", "runs"]
    assert sections == [i for i in expected if i in sections] and sections[:3] == expected[:3]
    assert "<details open" not in text
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is not None:  # (test_report_page_in_headless_chromium says so where it is absent)
        render_in_chromium(browser, report, name)


# Where the screenshots of the page stay after the test (git-ignored; pytest's tmp_path goes).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "reports" / "page-check"
WIDTH, FOLD = 1280, 800  # a laptop's window
# Run in the page before Chromium dumps its DOM: the box of every element with an id and of the
# first table, and the page's width, as JSON in a <pre> (added after measuring).
LAYOUT_PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, r.left, r.right]; };
const out = {width: document.documentElement.scrollWidth, boxes: {}};
document.querySelectorAll("[id]").forEach(e => { out.boxes[e.id] = box(e); });
const table = document.querySelector("#tables table");
if (table) out.boxes["first-table"] = box(table);
const pre = document.createElement("pre"); pre.id = "layout-probe"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _chromium(browser: str, page: Path, *args) -> subprocess.CompletedProcess:
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               f"--window-size={WIDTH},{FOLD}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console_errors = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console_errors, console_errors
    return proc


def render_in_chromium(browser: str, report: Path, name: str) -> dict:
    """The page at 1280 × 800 in headless Chromium: its screenshot (``results.png`` beside it,
    copied to SCREENSHOTS/<name>.png) is not blank, nothing is wider than the window, the KD
    gain plot and the top of the first table are above the fold, the curves below them."""
    import html
    import re
    import shutil

    import cv2

    _chromium(browser, report / "results.html", f"--screenshot={report / 'results.png'}")
    shot = cv2.imread(str(report / "results.png"))
    assert shot.shape[:2] == (FOLD, WIDTH) and shot.std() > 20  # text and a plot, not a blank page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(report / "results.png", SCREENSHOTS / f"{name}.png")
    probe = report / "layout-probe.html"
    probe.write_text((report / "results.html").read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = _chromium(browser, probe, "--dump-dom").stdout
    layout = json.loads(html.unescape(re.search(r'<pre id="layout-probe">(.*?)</pre>', dom, re.S).group(1)))
    boxes = layout["boxes"]
    assert layout["width"] <= WIDTH
    assert boxes["first-table"][0] < FOLD - 100  # the table's head and its first rows
    if "fig-kd_gain" in boxes:
        assert boxes["fig-kd_gain"][1] <= FOLD
    for below in ("curves", "confusion"):
        if below in boxes:
            assert boxes[below][0] > boxes["first-table"][0]
    return layout


def test_report_page_in_headless_chromium(tmp_path):
    """A page as the demo's (a teacher, students w/o and w/ KD at three OPs, both starts, three
    seeds, a confusion matrix per evaluation) laid out at a laptop's width."""
    import shutil

    from skelpipe.learn.evaluate import plot_confusion
    from skelpipe.pipeline import page, plots, report

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    cell = {"setting": "heterogeneous", "table": 1, "benchmark": "xsub", "hq_fraction": 1.0, "backbone": "stgcn",
            "hq_source": "synthetic 3D (ntu25)", "lq_source": "PifPaf (simulated)", "n_test": 240, "splits": 1,
            "aggregate": False}
    runs = [{**cell, "model": "teacher", "kd": None, "op": 0.0, "seed": 0, "top1": 90.0, "top5": 99.0}]
    for init, op, kd, seed in itertools.product(("random", "teacher"), (0.0, 0.3, 0.6), ("none", "pmsc"), (0, 1, 2)):
        top1 = 80 - 20 * op + seed + (4 - 5 * op + [-1.5, 2.0, 0.5][seed] if kd == "pmsc" else 0)
        runs.append({**cell, "model": "student", "kd": kd, "op": op, "init": init, "lq_data": "all", "seed": seed,
                     "top1": top1, "top5": top1 + 10})
    records = runs + report.aggregate(runs)
    plots.kd_gains(records, out / "plots" / "kd_gain.png")
    confusion = tmp_path / "confusion.png"
    plot_confusion(np.eye(12), [f"class {k}" for k in range(12)], confusion)
    histories = []
    for n, r in enumerate(runs):
        metrics = tmp_path / f"metrics{n}.jsonl"
        metrics.write_text("".join(json.dumps({"epoch": e, "ce": 2 / e, "loss": 3 / e, "train_acc": r["top1"] / 100 * e / 6})
                                   + "\n" for e in range(1, 7)))
        histories.append((r, metrics))
        shutil.copy(confusion, out / "plots" / f"confusion_{n}.png")
    plots.training_curves(histories, out / "plots", report.KD_NAMES)
    report_md = report.markdown(records, "demo", "demo")
    page.write_html(out, report_md, records, {"name": "demo"}, "## part matrix\n\n| class | top part |\n|---|---|\n| a | head |\n")
    check_report_page(out, {p.name for p in (out / "plots").iterdir()}, ("Student (w/ KD)", "CI ["),
                      name="report_page_in_headless_chromium")
    assert (out / "results.png").exists() and (SCREENSHOTS / "report_page_in_headless_chromium.png").exists()


def test_students_in_worker_processes(tmp_path):
    extra = ["--jobs", "2", "--set", "experiments.op=[0.6]", "--set", "experiments.kd=['none']",
             "--set", "experiments.seeds=[0, 1, 2]"]
    proc = _run_all(tmp_path, extra)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "3 student stages in 2 processes" in out
    records = json.loads((tmp_path / "report" / "results.json").read_text())
    assert sorted(r["seed"] for r in records if r["model"] == "student" and not r["aggregate"]) == [0, 1, 2]
    # the serial run of the same plan finds everything done
    proc = _run_all(tmp_path, extra[2:] + ["--jobs", "1"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "done " not in out, out


@pytest.mark.slow
def test_kill_during_run_all_then_resume(tmp_path):
    extra = ["--set", "experiments.op=[0.3]", "--set", "experiments.kd=['pmsc']", "--set", "teacher.epochs=4"]
    proc = _run_all(tmp_path, extra, start_new_session=True)
    # Wait until the teacher has finished an epoch, then kill the whole run with SIGKILL.
    deadline = time.time() + 300
    while time.time() < deadline:
        if list((tmp_path / "cache" / "teacher").glob("*.partial/metrics.jsonl")):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the teacher never started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list((tmp_path / "cache" / "pack").glob("*/manifest.json"))  # finished stages kept
    proc = _run_all(tmp_path, extra)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "demo skeletons" not in out.split("teacher")[0]  # upstream stages not redone
    teacher = next((tmp_path / "cache" / "teacher").glob("*/metrics.jsonl"))
    assert [json.loads(line)["epoch"] for line in teacher.read_text().splitlines()] == [0, 1, 2, 3] \
        or [json.loads(line)["epoch"] for line in teacher.read_text().splitlines()] == [1, 2, 3, 4]


def test_ntu_with_real_openpifpaf_extraction(tmp_path):
    """Kinect skeletons + RGB videos → extract (a random-weight, biased OpenPifPaf) → align."""
    pytest.importorskip("openpifpaf")
    import cv2
    import numpy as np

    from skelpipe.pose import network
    from skelpipe.skeleton.store import open_store

    root = tmp_path / "ntu"
    (root / "nturgb+d_skeletons").mkdir(parents=True)
    (root / "nturgb+d_rgb").mkdir()
    names = ["S001C001P001R001A001", "S001C001P003R001A002"]  # a training and a test subject
    for name in names:
        (root / "nturgb+d_skeletons" / f"{name}.skeleton").write_bytes(skeleton_text(SKELETON_FRAMES))
        video = cv2.VideoWriter(str(root / "nturgb+d_rgb" / f"{name}_rgb.avi"),
                                cv2.VideoWriter_fourcc(*"MJPG"), 30, (96, 64))
        for t in range(len(SKELETON_FRAMES)):
            video.write(np.full((64, 96, 3), 40 * t, np.uint8))
        video.release()
    (root / "nturgb+d_rgb" / "S001C001P001R001A003_rgb.avi").write_bytes(b"")  # a zero-byte video
    checkpoint = network.random_checkpoint("mobilenetv3small", tmp_path / "mnv3s.pkl", biased=True)
    overrides = ["experiments.settings=['heterogeneous']", "sources.k16.backbone=mobilenetv3small",
                 f"sources.k16.checkpoint='{checkpoint}'", "extract.long_edge=65",
                 "extract.decoder_workers=0", "extract.decoder={cif_neighbors = 1}"]
    result = CliRunner().invoke(cli, ["run-all", "ntu", "--data-root", str(root), "--until", "align",
                                      "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                                      *set_args(overrides)])
    assert result.exit_code == 0, result.output
    extracted = next((tmp_path / "cache" / "extract").glob("*/manifest.json")).parent
    assert not (extracted / "videos").exists()  # per-video files merged, then removed
    bad = json.loads((extracted / "manifest.json").read_text())["bad_items"]
    assert [b["item"] for b in bad] == ["S001C001P001R001A003"]
    with open_store(extracted / "skeletons.h5") as s:
        assert s.ids() == names and s.layout.name == "coco17"
        assert s.read(names[0]).keypoints.shape[1] == len(SKELETON_FRAMES)
        # the dataset's labels travel with the extracted poses: a setting of two estimators
        # (HQ and LQ both extracted, as NTU's Table 2) can be packed without Kinect skeletons
        assert s.read_attrs(names[1])["label"] == 1 and s.read_attrs(names[1])["label_name"] == "eat meal/snack"
    aligned = next((tmp_path / "cache" / "align").glob("*/manifest.json")).parent
    with open_store(aligned / "lq.h5") as lq:
        assert lq.ids() == names and lq.read(names[1]).attrs["label"] == 1


def test_a_device_that_is_absent_is_refused_before_the_first_stage(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["run-all", "demo", "--device", "cuda", "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code != 0 and "CUDA is not available" in str(result.exception)
    assert not (tmp_path / "c").exists()                           # rejected before the first stage


def test_a_cache_root_that_is_a_file_is_a_one_line_error(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("SKELPIPE_CACHE", str(not_a_dir))
    result = CliRunner().invoke(cli, ["run-all", "demo", "--dry-run"])
    assert result.exit_code != 0 and "is not a directory" in str(result.exception)


def test_a_report_of_an_empty_cache_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["report", "demo", "--cache-dir", str(tmp_path / "empty"),
                                      "--report-dir", str(tmp_path / "r")])
    assert result.exit_code != 0 and "nothing to report" in str(result.exception)
    assert not (tmp_path / "r" / "results.md").exists()


@pytest.mark.parametrize("override,message", [
    # the cases: an unknown section, an unknown key, a wrong type, values out of range
    ("techer.epochs=3", "unknown section [techer] (did you mean 'teacher'?)"),
    ("teacher.epoch=3", "[teacher] unknown setting epoch = 3 (did you mean 'epochs'?)"),
    ("teacher.epochs=abc", "[teacher] epochs must be an integer, got 'abc'"),
    ("experiments.op=[1.5]", "experiments.op: 1.5 is outside [0.0, 1.0]"),
    ("experiments.kd=['pmcs']", "experiments.kd: 'pmcs' is not one of none, kl, global-msc, skd, pe-gcn, pmsc (did you mean 'pmsc'?)"),
    ("teacher.epochs=0", "[teacher] epochs must be >= 1, got 0"),
    # more of the same kind
    ("student.epochs='ten'", "epochs must be an integer"),
    ("teacher.channels=['a']", "channels must be a list of integers"),
    ("student.alpha='high'", "alpha must be a number"),
    ("student.occlusion_mode='random'", "occlusion_mode must be one of track, joint, block, got 'random'"),
    ("data.subject=3", "data.subject = 3: unknown setting (did you mean 'subjects'?)"),
    ("pack.frames='64'", "[pack] frames must be an integer, got '64'"),
    ("align.missing='keep'", "[align] missing must be solitary or drop, got 'keep'"),
    ("experiments.seeds=[1, 1]", "the seeds must be distinct"),
    ("experiments.benchmarks=['xsubb']", "(did you mean 'xsub'?)"),
    ("experiments.settings=['other']", "experiments.settings: 'other' is not one of heterogeneous"),
    ("partmatrix.measure='errors'", "(did you mean 'error'?)"),
])
def test_bad_settings_fail_the_dry_run_in_one_line(override, message, tmp_path):
    result = CliRunner().invoke(cli, ["run-all", "demo", "--dry-run", "--cache-dir", str(tmp_path),
                                      "--set", override])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception) and "demo.toml" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_a_config_error_is_one_line_and_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "skelpipe", "run-all", "demo", "--cache-dir", str(tmp_path),
                           "--set", "techer.epochs=3"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "did you mean 'teacher'" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_stage_keys_come_from_the_checked_settings(plan_of):
    """Keys from complete settings: runtime-only fields and defaults written out change nothing."""
    keys = lambda *o: {s.stage: s.key for s in plan_of("demo", *o).ordered()}  # noqa: E731
    base = keys()
    assert keys("teacher.eval_every=5", "student.device='cpu'", "teacher.compile=true") == base
    assert keys("teacher.momentum=0.9", "pack.max_people=1", "align.max_people=2") == base  # values it has
    assert keys("teacher.momentum=0.8")["teacher"] != base["teacher"]


def test_skelpipe_pack_and_run_all_key_the_same_pack_the_same_way(plan_of, cache, tmp_path):
    plan = plan_of("demo")
    pack_step = next(s for s in plan.ordered() if s.stage == "pack")
    aligned = tmp_path / "aligned"
    from skelpipe.data.pack import PackConfig
    from skelpipe.pipeline.stages import pack_stage
    (aligned).mkdir()
    (aligned / "manifest.json").write_text(json.dumps({"key": pack_step.deps["align"].key}))
    cli_stage = pack_stage(cache, aligned, PackConfig(**{k: v for k, v in pack_step.config.items()}))
    assert cli_stage.key == pack_step.key


def test_a_data_root_of_bad_files_fails_and_commits_nothing(tmp_path):
    labels = tmp_path / "penn" / "labels"
    labels.mkdir(parents=True)
    for i in (1, 2, 3, 4):
        (labels / f"{i:04d}.mat").write_bytes(b"not a MATLAB file")
    result = CliRunner().invoke(cli, ["run-all", "penn", "--until", "skeletons", "--cache-dir",
                                      str(tmp_path / "cache"), "--data-root", str(tmp_path / "penn")])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "no readable penn sample (4 bad:" in message and "0001.mat" in message and "…" in message
    assert "\n" not in message
    assert not [p for p in (tmp_path / "cache" / "skeletons").iterdir() if p.is_dir() and not p.name.endswith(".partial")]


@pytest.fixture
def penn_keys(plan_of, tmp_path):
    """A Penn Action root of two label files, and ``keys(data_root, *overrides)``: the key of each
    stage of the penn plan and of each extraction (by its source)."""
    root = tmp_path / "penn"
    (root / "labels").mkdir(parents=True)
    for i in (1, 2):
        write_penn_label(root / "labels" / f"{i:04d}.mat")

    def keys(data_root, *overrides):
        plan = plan_of("penn", *overrides, data_root=data_root)
        out = {s.stage: s.key for s in plan.ordered()}
        out.update({s.meta["source"]: s.key for s in plan.ordered() if s.stage == "extract"})
        return out

    return root, keys


def test_a_changed_added_or_moved_data_file_rekeys_the_skeletons_and_all_after(penn_keys, tmp_path):
    root, keys = penn_keys
    first = keys(root)
    assert keys(root) == first
    os.utime(root / "labels" / "0002.mat", ns=(1, 1))  # touched: another file as far as the key knows
    touched = keys(root)
    assert touched["skeletons"] != first["skeletons"] and touched["teacher"] != first["teacher"]
    write_penn_label(root / "labels" / "0003.mat")
    assert keys(root)["skeletons"] not in (first["skeletons"], touched["skeletons"])
    assert keys(tmp_path / "elsewhere")["skeletons"] != keys(root)["skeletons"]  # another root


def test_a_replaced_checkpoint_at_the_same_path_rekeys_the_extraction(penn_keys, cache, tmp_path):
    root, keys = penn_keys
    checkpoint = tmp_path / "r152.pkl"
    checkpoint.write_bytes(b"weights A")
    real = ["extract.extractor='openpifpaf'", f"sources.r152.checkpoint='{checkpoint}'"]
    a = keys(root, *real)["r152"]
    os.utime(checkpoint, ns=(5, 5))  # same content, new time: same key (hashed once more)
    assert keys(root, *real)["r152"] == a
    checkpoint.write_bytes(b"weights B")  # replaced at the same path
    assert keys(root, *real)["r152"] != a
    assert list((cache.root / ".hashes").iterdir())  # content hashes memoised by path, size, time


def test_backbones_give_table_3(plan_of):
    """[[experiments]] backbones: a teacher, a part matrix and students per backbone, the ST-GCN
    cells shared with Table 1."""
    plan = plan_of("penn")
    teachers = {s.config.get("backbone", "stgcn") for s in plan.steps.values() if s.stage == "teacher"}
    assert teachers == {"stgcn", "agcn", "efficientgcn-b4"}  # the rivals train without KD: no teacher
    table3 = [meta for _, meta in plan.records if meta.get("table") == 3]
    assert {(m["backbone"], m["kd"]) for m in table3 if m["model"] == "student"} == {
        (b, kd) for b in ("stgcn", "agcn", "efficientgcn-b4") for kd in ("none", "pmsc")} | {
        ("stgcn", "skd"), ("agcn", "pe-gcn"),  # the rivals on the backbones the paper gives them for Penn
        ("pa-resgcn-b19", "none"), ("pr-gcn", "none"), ("3s-ra-gcn", "none")}  # the rival backbones, without distillation
    shared = {s.key for s, meta in plan.records if meta.get("table") == 1} & {
        s.key for s, meta in plan.records if meta.get("table") == 3}
    assert shared  # ST-GCN at OP 0 is the same evaluation in both tables


def test_table_3_rows_stand_beside_the_papers_figures():
    from skelpipe.pipeline.report import markdown

    rows = [{"aggregate": True, "table": 3, "setting": "heterogeneous", "hq_source": "annotated",
             "lq_source": "r152", "benchmark": "default", "model": "student", "kd": kd, "op": 0.0,
             "hq_fraction": 1.0, "lq_data": "all", "backbone": b, "top1": 90.0, "top5": 98.0, "n": 2,
             "n_test": 100, "top1_sd": 1.0, "top5_sd": 0.5} for b in ("agcn", "efficientgcn-b4", "pa-resgcn-b19")
            for kd in ("none", "pmsc")]
    rows += [{**rows[0], "backbone": "stgcn", "kd": "skd"}, {**rows[0], "kd": "pe-gcn"}]
    md = markdown(rows, "penn", "penn")
    assert "| Student (SKD [18]) | r152 | ST-GCN | 0 | 90.00 ± 1.00 [paper 81.87]" in md
    assert "| Student (PE-GCN [16]) | r152 | Js-AGCN | 0 | 90.00 ± 1.00 [paper 75.09]" in md
    assert md.index("Student (PE-GCN [16])") < md.index("| Student (w/ KD) | r152 | Js-AGCN")
    assert "| GCN blocks |" in md and "| Student (w/ KD) | r152 | EfficientGCN-B4 | 0 | 90.00 ± 1.00 [paper 95.03]" in md
    assert "| Student (w/o KD) | r152 | EfficientGCN-B4 | 0 | 90.00 ± 1.00 [paper 93.45]" in md
    assert md.index("Js-AGCN") < md.index("EfficientGCN-B4")
    assert "| Student (w/o KD) | r152 | PA-ResGCN-B19 | 0 | 90.00 ± 1.00 [paper 92.79]" in md


def test_init_axis_adds_teacher_init_students_that_depend_on_the_teacher(plan_of):
    """experiments.init = ['random', 'teacher']: the random-init students as before, and as many
    teacher-init ones."""
    plan = plan_of("demo", "experiments.init=['random', 'teacher']")
    students = [s for s in plan.steps.values() if s.stage == "student"]
    alone = [s for s in plan_of("demo", "experiments.init=['random']").steps.values() if s.stage == "student"]
    assert len(students) == 2 * len(alone) and {s.key for s in alone} < {s.key for s in students}
    for s in students:
        assert ("teacher" in s.deps) == (s.config["kd"] != "none" or s.config["init"] == "teacher")


def test_init_axis_gives_four_cells_and_their_paired_gains():
    """Table 1 shows init × KD with PMSC's own share and the transfer over the paper's baseline."""
    from skelpipe.pipeline.report import aggregate, markdown

    base = dict(aggregate=False, table=1, setting="h", hq_source="hq", lq_source="lq", benchmark="xsub",
                model="student", op=0.6, hq_fraction=1.0, lq_data="all", backbone="stgcn", n_test=100)
    scores = {("random", "none"): [70, 72, 71], ("random", "pmsc"): [71, 72, 73],
              ("teacher", "none"): [80, 81, 82], ("teacher", "pmsc"): [80, 82, 84]}
    runs = [{**base, "init": i, "kd": kd, "seed": seed, "top1": v, "top5": 99.0}
            for (i, kd), values in scores.items() for seed, v in enumerate(values)]
    cells = {(r["init"], r["kd"]): r for r in aggregate(runs)}
    assert cells[("random", "pmsc")]["gain_top1"]["mean"] == 1.0 and "transfer_top1" not in cells[("random", "pmsc")]
    assert cells[("teacher", "none")]["transfer_top1"]["mean"] == 10.0 and "gain_top1" not in cells[("teacher", "none")]
    assert cells[("teacher", "pmsc")]["gain_top1"]["mean"] == 1.0        # PMSC's own share
    assert cells[("teacher", "pmsc")]["transfer_top1"]["mean"] == 11.0   # both, over the paper's baseline
    md = markdown(list(cells.values()), "demo", "demo")
    order = [md.index(f"| {label} | lq | 0.6 |") for label in (
        "Student (w/o KD)", "Student (w/ KD)", "Student (w/o KD, teacher init)", "Student (w/ KD, teacher init)")]
    assert order == sorted(order)
    assert "(vs random init w/o KD +11.00" in md


def test_an_experiment_block_overrides_its_students_settings(plan_of, tmp_path):
    """``student = {...}`` in a block reaches that block's students only, and is checked as the
    [student] section is."""
    path = tmp_path / "warm.toml"
    path.write_text('base = "demo"\nname = "warm"\n[[experiments]]\ntable = 1\nsettings = ["heterogeneous"]\n'
                    'op = [0.0]\nkd = ["none"]\nseeds = [0]\n'
                    '[[experiments]]\ntable = 3\nsettings = ["heterogeneous"]\nop = [0.0]\nkd = ["none"]\n'
                    'backbones = ["pa-resgcn-b19"]\nseeds = [0]\nstudent = {lr_warmup = 4}\n')
    students = [s for s in plan_of(str(path)).steps.values() if s.stage == "student"]
    assert {(s.config.get("backbone", "stgcn"), s.config.get("lr_warmup", 0)) for s in students} == {
        ("stgcn", 3), ("pa-resgcn-b19", 4)}  # 3: demo.toml's [student]
    path.write_text(path.read_text().replace("lr_warmup = 4", "lr_wramup = 4"))
    with pytest.raises(ConfigError, match=r"warm.toml: \[experiments.student\].*lr_wramup"):
        plan_of(str(path))
