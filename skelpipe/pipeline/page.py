"""``results.html``: the report as one self-contained page (opens offline, mails as one file).

The tables are ``results.md`` rendered (python-markdown), the plots are embedded as data URIs,
and a last section lists, for every run behind a row, its settings and the cache keys of its
model and its evaluation, so that a number can be traced back to the stage that produced it.
"""

import base64
import html
import json
from pathlib import Path

import markdown

from skelpipe.core import atomic

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}figure{display:inline-block;margin:1em;vertical-align:top}
figure img{max-width:560px;border:1px solid #ddd}figcaption{font-size:13px;color:#555}
code,pre{font-size:12px}details{margin:1em 0}"""

RUN_FIELDS = ("table", "setting", "backbone", "model", "kd", "op", "hq_fraction", "lq_data", "seed", "top1", "top5")


def write_html(out_dir: Path, md_text: str, records: list[dict], settings: dict) -> Path:
    """``out_dir/results.html`` from the report's markdown, its records, its plots and the
    pipeline's settings."""
    out_dir = Path(out_dir)
    body = [markdown.markdown(md_text, extensions=["tables"]), "<h2>Plots</h2>"]
    for png in sorted((out_dir / "plots").glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        body.append(f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(png.stem)}</figcaption></figure>")
    body.append("<h2>Runs behind the rows</h2>")
    runs = [r for r in records if not r.get("aggregate")]
    head = "".join(f"<th>{f}</th>" for f in RUN_FIELDS) + "<th>model (cache key)</th><th>evaluation</th>"
    rows = []
    for r in runs:
        cells = "".join(f"<td>{html.escape(str(r.get(f, '')))}</td>" for f in RUN_FIELDS)
        keys = "".join(f"<td><code>{html.escape(_stage_key(r.get(k)))}</code></td>" for k in ("model_dir", "eval_dir"))
        rows.append(f"<tr>{cells}{keys}</tr>")
    body.append(f'<table class="runs"><tr>{head}</tr>{"".join(rows)}</table>')
    body.append("<details><summary>Pipeline settings</summary><pre>"
                f"{html.escape(json.dumps(settings, indent=2, default=str))}</pre></details>")
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>skelpipe results</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    path = out_dir / "results.html"
    atomic.write_text(path, page)
    return path


def _stage_key(path) -> str:
    """``teacher/3f2a…`` of a stage directory (SYSU's averaged splits have none)."""
    if not path:
        return ""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"
