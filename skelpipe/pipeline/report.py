"""Reports: ``results.json`` (one record per evaluated model and seed, plus one aggregate per
cell), ``results.md`` (tables shaped like the paper's: mean ± sd over seeds, the paired KD gain
with its 95 % interval, the paper's figure beside ours where the setting matches) and plots.

A record: ``{"benchmark", "model": "teacher"|"student", "kd": one of KD_VARIANTS or null,
"op", "hq_fraction", "hq_layout", "lq_layout", "extractor", "top1", "top5"}`` (accuracies in
percent) plus ``setting``, ``table``, ``lq_data`` ("all" or "pair"), ``hq_source``, ``lq_source``,
``n_test`` (test instances) and ``aggregate``. A run record (``aggregate: false``) has its
``seed`` and ``splits`` (the number of random splits averaged: SYSU's protocol). An aggregate
(``aggregate: true``, ``seed: null``) has ``seeds``, ``n``, ``top1``/``top5`` as means,
``top1_sd``/``top5_sd``, and for a student with distillation ``gain_top1``/``gain_top5``:
``{"mean", "ci95": [lo, hi] or null, "n", "significant"}`` (``stats.paired_difference``) against
the student without KD of the same ``init`` ("random" or "teacher": the student's start); a
student that starts from the teacher's weights also has ``transfer_top1``/``transfer_top5``, the
same against the random-init student without KD (the paper's baseline).
"""

import json
import shutil
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from skelpipe.core.atomic import write_json
from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError
from skelpipe.data import datasets
from skelpipe.data.split import FILE, decode_attr
from skelpipe.learn.config import KD_VARIANTS
from skelpipe.learn.partmatrix import agreement
from skelpipe.pipeline import page, plots, stats
from skelpipe.pipeline.cache import damage

# The paper's figures (Tables 1, 2, 4, 5), for comparison only: (dataset, table, model, kd, op,
# hq_fraction, lq_data) → the two columns of the dataset's report_columns. kd "none" = Student (w/o KD).
PAPER = {
    ("ntu", 1, "teacher", None, 0.0): (84.56, 89.46),
    ("ntu", 1, "student", "none", 0.0): (79.98, 84.88),
    ("ntu", 1, "student", "pmsc", 0.0): (83.31, 88.13),
    ("ntu", 1, "student", "none", 0.3): (76.30, 80.45),
    ("ntu", 1, "student", "pmsc", 0.3): (81.76, 85.67),
    ("ntu", 1, "student", "none", 0.6): (73.25, 77.70),
    ("ntu", 1, "student", "pmsc", 0.6): (79.41, 84.03),
    ("penn", 1, "teacher", None, 0.0): (90.54, 98.97),
    ("penn", 1, "student", "none", 0.0): (83.43, 97.19),
    ("penn", 1, "student", "pmsc", 0.0): (87.08, 98.50),
    ("penn", 1, "student", "none", 0.3): (78.18, 96.63),
    ("penn", 1, "student", "pmsc", 0.3): (84.74, 98.31),
    ("penn", 1, "student", "none", 0.6): (70.51, 95.13),
    ("penn", 1, "student", "pmsc", 0.6): (80.52, 96.82),
    ("sysu", 1, "teacher", None, 0.0): (88.54, 88.96),
    ("sysu", 1, "student", "none", 0.0): (84.33, 84.00),
    ("sysu", 1, "student", "pmsc", 0.0): (87.14, 86.68),
    ("sysu", 1, "student", "none", 0.3): (77.95, 78.35),
    ("sysu", 1, "student", "pmsc", 0.3): (81.43, 81.76),
    ("sysu", 1, "student", "none", 0.6): (65.39, 66.01),
    ("sysu", 1, "student", "pmsc", 0.6): (68.88, 68.41),
    ("ntu", 2, "teacher", None, 0.0): (84.65, 90.41),
    ("ntu", 2, "student", "none", 0.0): (79.98, 84.88),
    ("ntu", 2, "student", "pmsc", 0.0): (82.50, 88.36),
    ("ntu", 2, "student", "none", 0.3): (76.30, 80.45),
    ("ntu", 2, "student", "pmsc", 0.3): (81.58, 86.61),
    ("ntu", 2, "student", "none", 0.6): (73.25, 77.70),
    ("ntu", 2, "student", "pmsc", 0.6): (80.09, 83.61),
    ("penn", 2, "teacher", None, 0.0): (83.43, 97.19),
    ("penn", 2, "student", "none", 0.0): (73.88, 95.90),
    ("penn", 2, "student", "pmsc", 0.0): (78.84, 97.10),
    ("penn", 2, "student", "none", 0.3): (69.10, 94.52),
    ("penn", 2, "student", "pmsc", 0.3): (74.91, 96.63),
    ("penn", 2, "student", "none", 0.6): (63.30, 91.29),
    ("penn", 2, "student", "pmsc", 0.6): (73.22, 95.79),
    ("sysu", 2, "teacher", None, 0.0): (88.54, 88.96),
    ("sysu", 2, "student", "none", 0.0): (86.39, 86.67),
    ("sysu", 2, "student", "pmsc", 0.0): (87.58, 88.17),
    ("sysu", 2, "student", "none", 0.3): (81.15, 82.43),
    ("sysu", 2, "student", "pmsc", 0.3): (84.07, 84.67),
    ("sysu", 2, "student", "none", 0.6): (70.40, 70.32),
    ("sysu", 2, "student", "pmsc", 0.6): (80.29, 81.14),
    ("ntu", 4, "student", "none", 0.0): (79.98, 84.88),
    ("ntu", 4, "student", "kl", 0.0): (80.17, 86.74),
    ("ntu", 4, "student", "global-msc", 0.0): (81.95, 86.11),
    ("ntu", 4, "student", "pmsc", 0.0): (83.31, 88.13),
}
# Table 5: (setting, hq_fraction, model, kd, lq_data) → (CS, CV).
PAPER_TABLE5 = {
    ("heterogeneous", 0.8, "teacher", None, None): (84.21, 87.15),
    ("heterogeneous", 0.8, "student", "none", "pair"): (77.12, 82.97),
    ("heterogeneous", 0.8, "student", "pmsc", "pair"): (82.03, 86.61),
    ("heterogeneous", 0.8, "student", "pmsc", "all"): (83.27, 87.80),
    ("heterogeneous", 0.7, "teacher", None, None): (83.22, 86.29),
    ("heterogeneous", 0.7, "student", "none", "pair"): (76.07, 81.85),
    ("heterogeneous", 0.7, "student", "pmsc", "pair"): (80.94, 85.69),
    ("heterogeneous", 0.7, "student", "pmsc", "all"): (82.61, 87.36),
    ("homogeneous", 0.8, "teacher", None, None): (83.48, 90.28),
    ("homogeneous", 0.8, "student", "none", "pair"): (77.12, 82.97),
    ("homogeneous", 0.8, "student", "pmsc", "pair"): (81.40, 87.33),
    ("homogeneous", 0.8, "student", "pmsc", "all"): (82.24, 87.99),
    ("homogeneous", 0.7, "teacher", None, None): (82.08, 88.27),
    ("homogeneous", 0.7, "student", "none", "pair"): (76.07, 81.85),
    ("homogeneous", 0.7, "student", "pmsc", "pair"): (80.65, 86.06),
    ("homogeneous", 0.7, "student", "pmsc", "all"): (81.31, 87.54),
}
# The paper's Table 3 (other backbones, OP 0): (dataset, backbone, kd) → its two columns. The paper
# gives the students with KD for every backbone, and EfficientGCN-B4 and the rival
# backbones PA-ResGCN-B19 [44] and PR-GCN [42] without KD.
PAPER_TABLE3 = {
    ("ntu", "stgcn", "pmsc"): (83.31, 88.13), ("ntu", "agcn", "pmsc"): (83.25, 90.14),
    ("ntu", "efficientgcn-b4", "none"): (87.57, 91.81), ("ntu", "efficientgcn-b4", "pmsc"): (88.36, 92.12),
    ("penn", "stgcn", "pmsc"): (87.08, 98.50), ("penn", "agcn", "pmsc"): (90.45, 98.69),
    ("penn", "efficientgcn-b4", "none"): (93.45, 97.84), ("penn", "efficientgcn-b4", "pmsc"): (95.03, 98.22),
    ("sysu", "stgcn", "pmsc"): (87.58, 88.17), ("sysu", "agcn", "pmsc"): (88.31, 89.14),
    ("sysu", "efficientgcn-b4", "none"): (88.68, 89.31), ("sysu", "efficientgcn-b4", "pmsc"): (90.07, 91.00),
    ("ntu", "stgcn", "skd"): (80.80, 84.42), ("penn", "stgcn", "skd"): (81.87, 95.44),
    ("ntu", "stgcn", "pe-gcn"): (80.22, 84.91), ("ntu", "agcn", "pe-gcn"): (81.20, 88.74),
    ("penn", "agcn", "pe-gcn"): (75.09, 94.85),
    ("sysu", "stgcn", "pe-gcn"): (85.23, 85.08), ("sysu", "agcn", "pe-gcn"): (85.33, 85.92),
    ("ntu", "pa-resgcn-b19", "none"): (86.49, 91.27), ("ntu", "pr-gcn", "none"): (80.70, 87.83),
    ("penn", "pa-resgcn-b19", "none"): (92.79, 97.21), ("penn", "pr-gcn", "none"): (87.89, 98.24),
    ("sysu", "pa-resgcn-b19", "none"): (86.79, 88.21), ("sysu", "pr-gcn", "none"): (87.29, 88.46),
    ("ntu", "3s-ra-gcn", "none"): (76.35, 82.75), ("penn", "3s-ra-gcn", "none"): (77.43, 95.60),
    ("sysu", "3s-ra-gcn", "none"): (80.04, 79.60),
}
BACKBONE_NAMES = {"stgcn": "ST-GCN", "agcn": "Js-AGCN", "efficientgcn-b0": "EfficientGCN-B0",
                  "efficientgcn-b2": "EfficientGCN-B2", "efficientgcn-b4": "EfficientGCN-B4",
                  "pa-resgcn-b19": "PA-ResGCN-B19", "pr-gcn": "PR-GCN", "3s-ra-gcn": "3S-RA-GCN"}

KD_NAMES = {None: "", "none": "Student (w/o KD)", "kl": "Student (KL)",
            "global-msc": "Student (Global MSC)", "skd": "Student (SKD [18])", "pe-gcn": "Student (PE-GCN [16])",
            "pmsc": "Student (w/ KD)"}


def _pack_attrs(pack_dir: Path) -> dict:
    with h5py.File(Path(pack_dir) / FILE, "r") as f:
        return {k: decode_attr(v) for k, v in f.attrs.items()}


_SCORES = ("top1", "top5")
_PER_RUN = ("split", "splits", "seed", "model_dir", "eval_dir", "n_test", "aggregate") + _SCORES


def _identity(record: dict, leave_out=_PER_RUN) -> tuple:
    return tuple((k, json.dumps(v)) for k, v in sorted(record.items()) if k not in leave_out)


def collect(plan) -> list[dict]:
    """The records of a plan's finished evaluate stages: one per (cell, seed) with its scores
    (SYSU's splits averaged), then one aggregate per cell over its seeds (``"aggregate": true``,
    mean, sd and n; for a student with distillation, the paired gain over the student without
    KD of the same seeds, with its 95 % interval: ``stats.paired_difference``)."""
    per_split = []
    for step, meta in plan.records:
        if not (step.entry.done and step.deps["pack"].entry.done):
            continue
        metrics = json.loads((step.entry.path / "metrics.json").read_text())
        pack = _pack_attrs(step.deps["pack"].entry.path)
        per_split.append({
            "benchmark": meta["benchmark"], "model": meta["model"], "kd": meta["kd"],
            "op": meta["op"], "hq_fraction": meta["hq_fraction"],
            "hq_layout": pack.get("hq_layout"), "lq_layout": pack.get("lq_layout"),
            "extractor": meta["extractor"],
            "top1": 100 * float(metrics["top1"]), "top5": 100 * float(metrics["top5"]),
            "n_test": int(metrics.get("n", 0)),
            "setting": meta["setting"], "table": meta.get("table"), "lq_data": meta.get("lq_data"),
            "hq_source": meta["hq_source"], "lq_source": meta["lq_source"], "split": meta["split"],
            "seed": meta.get("seed", 0), "backbone": meta.get("backbone", "stgcn"),
            "init": meta.get("init"),
            "model_dir": str(step.deps["model"].entry.path), "eval_dir": str(step.entry.path),
        })
    runs = defaultdict(list)
    for r in per_split:
        runs[_identity(r) + (("seed", r["seed"]),)].append(r)
    records = []
    for rows in runs.values():
        rec = {k: v for k, v in rows[0].items() if k not in ("split", "model_dir", "eval_dir")}
        for score in _SCORES:
            rec[score] = round(float(np.mean([r[score] for r in rows])), 2)
        rec["splits"] = len(rows)
        rec["aggregate"] = False
        if len(rows) == 1:
            rec["model_dir"], rec["eval_dir"] = rows[0]["model_dir"], rows[0]["eval_dir"]
        records.append(rec)
    return records + aggregate(records)


def aggregate(runs: list[dict]) -> list[dict]:
    """One record per cell over its seeds: mean and sd of each score, the seeds, and for students
    with distillation ``gain_top1`` / ``gain_top5``: the paired difference to the student
    without KD (same cell otherwise, same seeds)."""
    cells = defaultdict(list)
    for r in runs:
        cells[_identity(r)].append(r)
    out = []
    for rows in cells.values():
        rows.sort(key=lambda r: r["seed"])
        rec = {k: v for k, v in rows[0].items() if k not in _PER_RUN}
        rec.update(aggregate=True, seed=None, seeds=[r["seed"] for r in rows], n=len(rows),
                   n_test=rows[0].get("n_test"))
        for score in _SCORES:
            s = stats.summary([r[score] for r in rows])
            rec[score] = round(s["mean"], 2)
            rec[f"{score}_sd"] = None if s["sd"] is None else round(s["sd"], 2)
        if rec["model"] == "student" and rec["kd"] not in (None, "none"):
            rec.update(_paired(rows, cells.get(_identity({**rows[0], "kd": "none"}), []), "gain"))
        if rec["model"] == "student" and rec.get("init") == "teacher":
            rec.update(_paired(rows, cells.get(_identity({**rows[0], "kd": "none", "init": "random"}), []),
                               "transfer"))
        out.append(rec)
    return out


def _paired(rows: list[dict], base_rows: list[dict], name: str) -> dict:
    """``{name}_top1`` / ``{name}_top5``: the paired difference of ``rows`` to ``base_rows``
    (same seeds) with its 95 % interval."""
    base = {r["seed"]: r for r in base_rows}
    pairs = [(r, base[r["seed"]]) for r in rows if r["seed"] in base]
    out = {}
    for score in _SCORES if pairs else ():
        d = stats.paired_difference([a[score] for a, _ in pairs], [b[score] for _, b in pairs])
        out[f"{name}_{score}"] = {"mean": round(d["mean"], 2), "n": d["n"],
                                  "ci95": None if d["ci"] is None else [round(c, 2) for c in d["ci"]],
                                  "significant": d["significant"]}
    return out


def _cell(rec, metric, paper):
    """``mean ± sd`` of a cell, its paired KD gain with the 95 % interval, the paper's figure."""
    if rec is None:
        return "–" if paper is None else f"– [paper {paper:.2f}]"
    text = f"{rec[metric]:.2f}"
    if rec.get(f"{metric}_sd") is not None:
        text += f" ± {rec[f'{metric}_sd']:.2f}"
    for name, what in (("gain", ""), ("transfer", "vs random init w/o KD ")):
        gain = rec.get(f"{name}_{metric}")
        if gain is not None:
            text += f" ({what}{gain['mean']:+.2f}"
            if gain["ci95"] is not None:
                lo, hi = gain["ci95"]
                text += f", CI [{lo:+.2f}, {hi:+.2f}]" + ("" if gain["significant"] else " n.s.")
            text += ")"
    if paper is not None:
        text += f" [paper {paper:.2f}]"
    return text


def markdown(records: list[dict], dataset: str, name: str) -> str:
    """The paper-shaped tables of the aggregate records (mean ± sd over seeds, paired gains)."""
    columns = datasets.get(dataset).report_columns
    records = [r for r in records if r.get("aggregate", True)]
    seeds = sorted({r["n"] for r in records if r["model"] == "student"}) or [1]
    tests = sorted({r["n_test"] for r in records if r.get("n_test")})
    lines = [f"# Results: {name}", "",
             "Accuracy in %: mean ± sd over the seeds of each student cell "
             f"({'/'.join(map(str, seeds))} seeds; teachers: one run). (+x, CI [lo, hi]) is the KD gain: the "
             "mean over seeds of the paired difference to the student without KD of the same start "
             "(same seed, same test draw) with its 95 % Student-t interval; n.s. = the interval contains 0. "
             "A student that starts from the teacher's weights (teacher init) also shows its paired "
             "difference to the random-init student without KD (vs random init w/o KD). "
             "[paper x] is the paper's figure for the same setting where there is one.", ""]
    if tests:
        se = stats.binomial_se(0.75, min(tests))
        lines += [f"Test instances per cell: {', '.join(map(str, tests))} (one run's standard error at 75 %: "
                  f"{100 * se:.1f} points).", ""]
    tables = sorted({(r["table"] or 0, r["setting"]) for r in records}, key=lambda t: (str(t[0]), t[1]))
    for table, setting in tables:
        rows = [r for r in records if (r["table"] or 0) == table and r["setting"] == setting]
        title = f"Table {table}" if isinstance(table, int) and table else (str(table) if table else "Results")
        lines += [f"## {title} — {setting} ({rows[0]['hq_source']} → {rows[0]['lq_source']})", ""]
        heads = [h for _, _, h in columns]
        extra = ["HQ amount", "LQ data"] if table == 5 else []
        blocks = len({r.get("backbone", "stgcn") for r in rows}) > 1 or table == 3
        lines.append("| Methods | Skeleton | " + ("GCN blocks | " if blocks else "") + "OP | "
                     + " | ".join(extra + heads) + " |")
        lines.append("|" + "---|" * (3 + blocks + len(extra) + len(heads)))
        keys = sorted({(r.get("backbone", "stgcn"), r["hq_fraction"], r["model"] != "teacher", r["op"],
                        r.get("lq_data") or "", r.get("init") or "",   # "" (teacher), random, teacher
                        [*KD_VARIANTS, None].index(r["kd"]),
                        r["kd"], r["model"]) for r in rows},
                      key=lambda k: (list(BACKBONE_NAMES).index(k[0]), -k[1], k[2], k[3], k[4] == "all", k[5], k[6]))
        for backbone, fraction, _, op, data, init, _, kd, model in keys:
            cells = []
            for bench, metric, _ in columns:
                match = [r for r in rows if r["benchmark"] == bench and r["model"] == model
                         and r["kd"] == kd and r["op"] == op and r["hq_fraction"] == fraction
                         and (r.get("lq_data") or "") == data and r.get("backbone", "stgcn") == backbone
                         and (r.get("init") or "") == init]
                if init == "teacher":  # the paper's students start from random weights
                    paper = None
                elif table == 5:
                    paper = PAPER_TABLE5.get((setting, fraction, model, kd, data or None))
                elif table == 3:
                    paper = PAPER_TABLE3.get((dataset, backbone, kd)) if model == "student" and op == 0 else None
                else:
                    paper = PAPER.get((dataset, table, model, kd, op))
                paper = None if paper is None else paper[columns.index((bench, metric, _))]
                cells.append(_cell(match[0] if match else None, metric, paper))
            source = rows[0]["hq_source"] if model == "teacher" else rows[0]["lq_source"]
            label = "Teacher" if model == "teacher" else KD_NAMES[kd]
            if init == "teacher":
                label = label[:-1] + ", teacher init)"
            extra_cells = [f"{fraction:.0%}", data or ""] if table == 5 else []
            block = f"{BACKBONE_NAMES[backbone]} | " if blocks else ""
            lines.append(f"| {label} | {source} | {block}{op:g} | " + " | ".join(extra_cells + cells) + " |")
        lines.append("")
    return "\n".join(lines)


def part_matrix_section(plan) -> str:
    """The top-ranked part of each class in every finished part matrix; on the demo, whose
    generator knows which parts each action uses (its ``expected_parts``), how many classes rank
    one of them first."""

    lines = []
    for step in plan.ordered():
        if step.stage != "partmatrix" or not step.entry.done:
            continue
        info = json.loads((step.entry.path / "part_matrix.json").read_text())
        expected = {}
        if datasets.get(plan.cfg["dataset"]).expected_parts:
            expected = datasets.get(plan.cfg["dataset"]).expected_parts
        a = agreement(info["E"], info["class_names"], expected)
        teacher = step.deps["teacher"].entry.config
        head = (f"## {step.label}: measure {info.get('measure', 'error')}, teacher part dropout "
                f"{teacher.get('part_dropout', 0.0):g}")
        if a["classes"]:
            head += f" — {a['hits']} of {a['classes']} classes rank a part their generator moves first"
        lines += ["", head, "", "| class | top part | " + (" expected |" if expected else ""),
                  "|---|---|" + ("---|" if expected else "")]
        for c, part in a["top_part"].items():
            lines.append(f"| {c} | {part or 'tie'} | " + (f"{', '.join(expected.get(c, ()))} |" if expected else ""))
    return "\n".join(lines)


def _trained(plan) -> list[tuple[dict, Path]]:
    """Each finished teacher and student once (a model several tables report is one run), as
    the record of its evaluation and its ``metrics.jsonl``."""
    runs = {}
    for step, meta in plan.records:
        model = step.deps["model"].entry
        if model.done:
            runs.setdefault(model.path, (meta, model.path / "metrics.jsonl"))
    return list(runs.values())


def write_report(plan, out_dir) -> list[dict]:
    """results.json, results.md, results.html and plots for a pipeline's plan, in ``out_dir``."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for step in plan.ordered():
        if step.entry.state == "damaged":
            console.print(f"[yellow]left out[/] {step.stage}/{step.key}: {damage(step.entry.path)} "
                          "(run-all recomputes it)", soft_wrap=True)
    records = collect(plan)
    if not records:
        raise SkelpipeError(f"nothing to report: no finished evaluation of {plan.cfg['name']} in the cache "
                            f"{plan.cache.root} (run `skelpipe run-all {plan.cfg['name']}` first, with the "
                            "same --set and --cache-dir)")
    write_json(out_dir / "results.json", records)
    tables, parts = markdown(records, plan.cfg["dataset"], plan.cfg["name"]), part_matrix_section(plan)
    md = tables + parts
    (out_dir / "results.md").write_text(md + "\n")
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    for stale in plots_dir.glob("*.png"):  # a figure of an earlier report must not reach this page
        stale.unlink()
    plots.kd_gains(records, plots_dir / "kd_gain.png")
    plots.training_curves(_trained(plan), plots_dir, KD_NAMES)
    for step in plan.ordered():
        if not step.entry.done:
            continue
        slug = step.label.replace(" ", "_").replace("=", "-").replace("%", "")
        if step.stage == "partmatrix" and (step.entry.path / "part_matrix.png").exists():
            shutil.copy(step.entry.path / "part_matrix.png", plots_dir / f"{slug}.png")
        if step.stage == "evaluate" and (step.entry.path / "confusion.png").exists():
            shutil.copy(step.entry.path / "confusion.png", plots_dir / f"confusion_{slug[9:]}.png")
    plots.skeleton_overlays(plan, plots_dir)
    page.write_html(out_dir, tables, records, {k: v for k, v in plan.cfg.items() if not k.startswith("_")}, parts)
    console.print(md, markup=False, highlight=False)
    return records
