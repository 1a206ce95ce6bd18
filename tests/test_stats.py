"""Statistics over seeds, and the report's aggregate records built from per-seed runs."""

import pytest
from scipy import stats as scipy_stats

from skelpipe.pipeline import stats
from skelpipe.pipeline.report import aggregate, markdown


def test_summary():
    s = stats.summary([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert stats.summary([5.0])["sd"] is None
    with pytest.raises(ValueError):
        stats.summary([])


def test_paired_difference_matches_a_paired_t_test():
    a, b = [80.1, 77.3, 81.0, 79.9], [76.2, 72.2, 78.0, 74.2]
    d = stats.paired_difference(a, b)
    assert d["mean"] == pytest.approx(4.425)
    # the interval excludes 0 exactly when scipy's paired t-test has p < 0.05
    p = scipy_stats.ttest_rel(a, b).pvalue
    assert d["significant"] == (p < 0.05)
    lo, hi = d["ci"]
    half = scipy_stats.t.ppf(0.975, 3) * d["sd"] / 2
    assert (lo, hi) == pytest.approx((4.425 - half, 4.425 + half))
    # the literal figures of the issue: +2.99, +3.75, +1.96, -10.30 → not significant
    noisy = stats.paired_difference([79.21, 75.94, 79.96, 63.86], [76.22, 72.19, 78.00, 74.16])
    assert noisy["mean"] == pytest.approx(-0.40, abs=0.005) and noisy["significant"] is False
    assert noisy["ci"][0] < 0 < noisy["ci"][1]
    single = stats.paired_difference([1.0], [0.0])
    assert single["ci"] is None and single["significant"] is None


def test_binomial_se():
    assert stats.binomial_se(0.75, 1000) == pytest.approx(0.0137, abs=1e-4)
    assert stats.binomial_se(0.75, 240) == pytest.approx(0.028, abs=1e-3)


def _run(kd, seed, top1, op=0.6, model="student"):
    return {"benchmark": "xsub", "model": model, "kd": kd, "op": op, "hq_fraction": 1.0, "setting": "s",
            "table": 1, "lq_data": "all", "hq_source": "HQ", "lq_source": "LQ", "extractor": "simulated",
            "hq_layout": "ntu25", "lq_layout": "coco17", "top1": top1, "top5": 99.0, "n_test": 1000,
            "seed": seed, "splits": 1, "aggregate": False, "model_dir": "m", "eval_dir": "e"}


def test_aggregate_pairs_seeds_and_marks_significance():
    runs = [_run("none", s, v) for s, v in zip([0, 1, 2], [70.0, 60.0, 65.0])]
    runs += [_run("pmsc", s, v) for s, v in zip([0, 1, 2], [72.0, 62.5, 66.5])]  # +2, +2.5, +1.5
    runs += [_run("pmsc", s, v, op=0.3) for s, v in zip([0, 1], [50.0, 90.0])]    # no baseline at 0.3
    runs += [_run(None, 0, 95.0, op=0.0, model="teacher")]
    cells = {(r["model"], r["kd"], r["op"]): r for r in aggregate(runs)}
    assert len(cells) == 4
    none, pmsc = cells["student", "none", 0.6], cells["student", "pmsc", 0.6]
    assert none["top1"] == 65.0 and none["top1_sd"] == 5.0 and none["seeds"] == [0, 1, 2]
    assert none["aggregate"] is True and none["seed"] is None and "gain_top1" not in none
    assert pmsc["gain_top1"]["mean"] == 2.0 and pmsc["gain_top1"]["significant"] is True
    lo, hi = pmsc["gain_top1"]["ci95"]
    assert 0 < lo < 2.0 < hi
    assert "gain_top1" not in cells["student", "pmsc", 0.3]
    assert cells["teacher", None, 0.0]["top1_sd"] is None
    md = markdown(runs + list(cells.values()), "demo", "t")
    assert "65.00 ± 5.00" in md and "(+2.00, CI [" in md
    top1_cell, top5_cell = md.split("| Student (w/ KD) | LQ | 0.6 |")[1].splitlines()[0].split(" | ")
    assert "n.s." not in top1_cell and "CI [+0.00, +0.00] n.s." in top5_cell  # no spread, no gain


def test_aggregate_pairs_only_common_seeds_and_flags_noise():
    runs = [_run("none", s, v) for s, v in zip([0, 1, 2, 3], [76.22, 72.19, 78.00, 74.16])]
    runs += [_run("pmsc", s, v) for s, v in zip([0, 1, 2, 3, 4], [79.21, 75.94, 79.96, 63.86, 99.0])]
    pmsc = next(r for r in aggregate(runs) if r["kd"] == "pmsc")
    assert pmsc["n"] == 5 and pmsc["gain_top1"]["n"] == 4  # seed 4 has no twin
    assert pmsc["gain_top1"]["significant"] is False
    md = markdown(runs + aggregate(runs), "demo", "t")
    assert "n.s." in md


def test_kd_gain_plot(tmp_path):
    from skelpipe.pipeline.plots import kd_gains

    runs = [_run("none", s, v, op=op) for op in (0.0, 0.6) for s, v in zip([0, 1, 2], [70.0, 60.0, 65.0])]
    runs += [_run("pmsc", s, v, op=op) for op in (0.0, 0.6) for s, v in zip([0, 1, 2], [72.0, 62.5, 66.5])]
    path = kd_gains(aggregate(runs), tmp_path / "kd_gain.png")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
    assert kd_gains([r for r in aggregate(runs) if r["kd"] == "none"], tmp_path / "none.png") is None
