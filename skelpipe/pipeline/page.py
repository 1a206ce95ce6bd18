"""``results.html``: the report as one self-contained page (opens offline, mails as one file).

It leads with the answer: the KD gain per OP beside the notes on how to read the tables, then
the tables (``results.md`` rendered by python-markdown), the training curves, the other figures,
the part matrices, and, collapsed, the confusion matrices as thumbnails, every run behind a row
(its settings and the cache keys of its model and its evaluation, so that a number can be traced
back to the stage that produced it) and the pipeline's settings. Plots are embedded as data URIs.
"""

import base64
import html
import json
import struct
from pathlib import Path

import markdown

from skelpipe.core import atomic

STYLE = """body{font-family:system-ui,sans-serif;margin:1em auto;max-width:1200px;padding:0 16px;color:#222}
h1{margin:.3em 0}h2{margin:1.2em 0 .4em}
#answer{display:flex;gap:24px;align-items:flex-start}#answer figure{flex:0 0 auto;margin:0}
#answer figure img{width:540px}.notes{font-size:13px;color:#444;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}td:first-child{white-space:nowrap}
figure{margin:.6em 0}img{max-width:100%;height:auto}figcaption{font-size:12px;color:#555}
.pair figure{display:inline-block;vertical-align:top;max-width:580px;margin-right:16px}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:10px}
.thumbs figure{margin:0}.thumbs img{width:100%;border:1px solid #ddd}.thumbs figcaption{font-size:11px}
code,pre{font-size:12px}details{margin:1em 0}summary{cursor:pointer;font-weight:600}"""

RUN_FIELDS = ("table", "setting", "backbone", "model", "kd", "op", "hq_fraction", "lq_data", "seed", "top1", "top5")
GAIN = "kd_gain"                           # plots.kd_gains
CURVES, CONFUSION = "training_", "confusion_"  # plots.training_curves; report's copies of each evaluation's


def write_html(out_dir: Path, md_text: str, records: list[dict], settings: dict, more_md: str = "") -> Path:
    """``out_dir/results.html`` from the report's markdown (a ``# title``, notes, then ``##``
    tables), its records, its plots, the pipeline's settings and ``more_md`` (the part matrices)."""
    out_dir = Path(out_dir)
    title, notes, tables = _split(md_text)
    pngs = sorted((out_dir / "plots").glob("*.png"))
    gain = [p for p in pngs if p.stem == GAIN]
    curves = [p for p in pngs if p.stem.startswith(CURVES)]
    confusion = [p for p in pngs if p.stem.startswith(CONFUSION)]
    other = [p for p in pngs if p not in gain + curves + confusion]
    body = [markdown.markdown(title), '<section id="answer">', *(_figure(p, "") for p in gain),
            f'<div class="notes">{markdown.markdown(notes)}</div></section>',
            f'<section id="tables">{markdown.markdown(tables, extensions=["tables"])}</section>']
    if curves:
        body += ['<section id="curves"><h2>Training curves</h2>', *(_figure(p, "") for p in curves), "</section>"]
    if other:
        body += ['<section id="figures" class="pair"><h2>Skeletons and part matrices</h2>',
                 *map(_figure, other), "</section>"]
    if more_md.strip():
        body.append(markdown.markdown(more_md, extensions=["tables"]))
    if confusion:
        body += [f'<details id="confusion"><summary>Confusion matrices ({len(confusion)}, one per evaluation)'
                 '</summary><div class="thumbs">',
                 *(_figure(p, p.stem[len(CONFUSION):]) for p in confusion), "</div></details>"]
    body.append(_runs_table([r for r in records if not r.get("aggregate")]))
    body.append("<details><summary>Pipeline settings</summary><pre>"
                f"{html.escape(json.dumps(settings, indent=2, default=str))}</pre></details>")
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>skelpipe results</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    path = out_dir / "results.html"
    atomic.write_text(path, page)
    return path


def _split(md_text: str) -> tuple[str, str, str]:
    """(the ``# title`` line, the notes before the first ``##`` table, the tables)."""
    title, notes = "", md_text
    if md_text.startswith("# "):
        title, _, notes = md_text.partition("\n")
    notes, sep, tables = notes.partition("\n## ")
    return title, notes, sep.lstrip("\n") + tables


def _figure(png: Path, caption: str | None = None) -> str:
    """An inline ``<figure>`` (captioned with ``caption``, by default its file's name; none when
    ""); its width and height from the PNG header, so that the page is laid out before the
    images are decoded."""
    data = png.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    caption = (caption if caption is not None else png.stem).replace("_", " ")
    return (f'<figure id="fig-{html.escape(png.stem)}"><img alt="{html.escape(caption or png.stem)}" width="{width}" '
            f'height="{height}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
            + (f"<figcaption>{html.escape(caption)}</figcaption>" if caption else "") + "</figure>")


def _runs_table(runs: list[dict]) -> str:
    head = "".join(f"<th>{f}</th>" for f in RUN_FIELDS) + "<th>model (cache key)</th><th>evaluation</th>"
    rows = []
    for r in runs:
        cells = "".join(f"<td>{html.escape(str(r.get(f, '')))}</td>" for f in RUN_FIELDS)
        keys = "".join(f"<td><code>{html.escape(_stage_key(r.get(k)))}</code></td>" for k in ("model_dir", "eval_dir"))
        rows.append(f"<tr>{cells}{keys}</tr>")
    return (f'<details id="runs"><summary>Runs behind the rows ({len(runs)}): settings and cache keys</summary>'
            f'<table class="runs"><tr>{head}</tr>{"".join(rows)}</table></details>')


def _stage_key(path) -> str:
    """``teacher/3f2a…`` of a stage directory (SYSU's averaged splits have none)."""
    if not path:
        return ""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"
