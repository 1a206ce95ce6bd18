"""Stage keys: the same settings key the same cache entries as before (existing caches stay in
use), and a dry run says what changed the key of each stage that will run."""

import hashlib

import pytest
from click.testing import CliRunner

from skelpipe.cli import cli
from skelpipe.pipeline.cache import Cache, changes
from skelpipe.pipeline.config import load_pipeline
from skelpipe.pipeline.plan import Plan

# Per pipeline and stage, a digest of the sorted keys of its plan's entries, measured on the
# shipped pipelines at commit 5897f45 (no data root); ntu's, penn's and sysu's students and
# evaluations since Table 3's rivals were added (every earlier key still in their plans: only new
# entries), and demo's since its students warm their lr up (lr_warmup = 3). A change here
# re-keys users' caches: bump
# the stage's version in pipeline/stages.py on purpose and update the digests, or find the
# setting that changed by accident.
DIGESTS = {
    ("demo",): {"skeletons": "8ddeb9757222ef68", "simulate": "0a6f0b9149b9dcdc", "align": "04b0f213aecc622a",
                "pack": "ff9dfd5a06215b54", "teacher": "2c6399bf740dd7b3", "evaluate": "6106d6376bca4226",
                "student": "4d40252d73a25ab3", "partmatrix": "5b9d7ecd164f904c"},
    ("ntu",): {"skeletons": "6f881b1158798f89", "extract": "645af46ba7888018", "align": "1c47b3684715c901",
               "pack": "6e03f92cb2b78875", "teacher": "345d99ef2a403c97", "evaluate": "7d9d9aaa20feddda",
               "student": "78f379430889007a", "partmatrix": "d78cba0ff3c2c6c3"},
    ("penn",): {"skeletons": "49a07b960c610509", "simulate": "aa71a09f4609af93", "align": "2028c6efac6e6bdc",
                "pack": "c05014d87038e479", "teacher": "f99dc993037deecb", "evaluate": "ef393ba34a51e191",
                "student": "0232f9abbce1d947", "partmatrix": "bfe6334d73974028"},
    ("sysu",): {"extract": "db7c2f0ea9f74ab4", "skeletons": "bbf675f04a923cc7", "align": "3705641c63046e01",
                "pack": "e1c1cdd9e74c3efa", "teacher": "87a2eeee0ae24f7e", "evaluate": "c0faba4aab0ee23b",
                "student": "f030ff3e3f4f7565", "partmatrix": "e82d9afb2c98f2e8"},
    # align and part-matrix settings written out (an integer where a number is expected included)
    ("demo", "align.outlier=1", "align.missing='drop'", "partmatrix.measure='prob_drop'",
     "partmatrix.batch_size=64"): {
        "skeletons": "8ddeb9757222ef68", "simulate": "0a6f0b9149b9dcdc", "align": "95177c26db7db11a",
        "pack": "1e934cccccd9b8e4", "teacher": "c08b5471dcf9ae72", "evaluate": "b9a5ef3f4b5a2276",
        "student": "2ff80f23a47f48bb", "partmatrix": "eb550c4729437388"},
}


def digests(plan: Plan) -> dict:
    keys: dict = {}
    for step in plan.steps.values():
        keys.setdefault(step.stage, []).append(step.key)
    return {stage: hashlib.sha256(" ".join(sorted(k)).encode()).hexdigest()[:16] for stage, k in keys.items()}


@pytest.mark.parametrize("pipeline", list(DIGESTS), ids=lambda p: " ".join(p))
def test_every_stage_of_the_shipped_pipelines_keeps_its_key(pipeline, tmp_path):
    plan = Plan(load_pipeline(pipeline[0], pipeline[1:]), Cache(tmp_path), None, "cpu").build()
    assert digests(plan) == DIGESTS[pipeline]


def _finish(stage):
    """Commit ``stage`` with one file, as a finished run would."""
    stage.ensure(lambda work: (work.dir / "out.txt").write_text(stage.key))


def test_changes_name_the_setting_the_input_and_the_version(tmp_path):
    cache = Cache(tmp_path)
    old = cache.stage("align", 1, {"outlier": 0.5, "missing": "solitary", "decoder": {"seed": 1}},
                      {"hq": "a", "lq": "b"})
    _finish(old)
    manifest = old.manifest()
    assert changes(old, manifest) == []
    new = cache.stage("align", 2, {"outlier": 1, "missing": "solitary", "decoder": {"seed": 2}, "max_people": 2},
                      {"hq": "a", "lq": "c"})
    assert changes(new, manifest) == ["version 1 → 2", "decoder.seed 1 → 2", "max_people unset → 2",
                                      "outlier 0.5 → 1", "input lq changed"]


def test_reasons_compare_with_the_closest_finished_entry_of_the_stage(tmp_path):
    cache = Cache(tmp_path)
    far = cache.stage("pack", 1, {"frames": 300, "split": 0, "dtype": "float16"}, {"align": "x"})
    near = cache.stage("pack", 1, {"frames": 300, "split": 1, "dtype": "float32"}, {"align": "x"})
    for st in (far, near):
        _finish(st)
    wanted = cache.stage("pack", 1, {"frames": 300, "split": 2, "dtype": "float32"}, {"align": "x"})
    fresh = cache.stage("teacher", 2, {"epochs": 5}, {"pack": wanted.key})
    many = cache.stage("pack", 1, {"frames": 1, "split": 5, "dtype": "float32", "max_people": 1}, {"align": "y"})
    reasons = cache.reasons([wanted, fresh, many])
    assert reasons == {wanted.key: "split 1 → 2", fresh.key: "new",
                       many.key: "frames 300 → 1, max_people unset → 1, split 1 → 5 and 1 more"}
    (far.path / "out.txt").write_text("changed")  # damaged: its own key, its files changed
    assert cache.reasons([far])[far.key] == "output damaged"


def test_a_dry_run_says_why_each_stage_will_run(tmp_path, monkeypatch):
    """Every stage of the demo finished (empty outputs stand in for the real ones), then a dry run
    with one align setting changed: the stages before align stay done, align names the setting,
    and what follows names its changed input."""
    monkeypatch.setenv("COLUMNS", "250")
    plan = Plan(load_pipeline("demo"), Cache(tmp_path), None, "cpu").build()
    for step in plan.ordered():
        _finish(step.entry)
    result = CliRunner().invoke(cli, ["run-all", "demo", "--dry-run", "--cache-dir", str(tmp_path),
                                      "--set", "align.outlier=0.7"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[2].strip(): line for line in result.output.splitlines() if line.count("│") > 6}
    assert "done" in rows["skeletons"] and "done" in rows["simulate"]
    assert "missing" in rows["align"] and "outlier 0.5 → 0.7" in rows["align"]
    assert "input align changed" in rows["pack"]
    assert "new" not in result.output
