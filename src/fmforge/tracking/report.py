"""A run as one self-contained HTML file: config, lineage, every metric as an SVG chart.

No script and no external file: it opens anywhere and can be mailed. Curves are reduced to at
most ``width`` columns keeping each column's minimum and maximum, so spikes never vanish (read
from the run's summaries: ``fmforge.tracking.overview``);
anomalies are red marks on their curve, checkpoints dashed lines.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

from fmforge.access import targets
from fmforge.access.mediation import mediated
from fmforge.repository import Repository
from fmforge.tracking.environment import flatten
from fmforge.tracking.overview import Columns, metric_columns, points
from fmforge.tracking.reading import RunRecord, load_run

_W, _H, _PAD = 640, 160, 36


def _chart(name: str, columns: Columns, record: RunRecord) -> str:
    xs, ys = points(columns)
    if xs.size == 0:
        return f"<h3>{html.escape(name)}</h3><p>no finite values</p>"
    x0, x1 = float(columns.lo), float(max(columns.hi, columns.lo + 1))
    y0, y1 = float(ys.min()), float(ys.max())
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1

    def px(step: float) -> float:
        return _PAD + (step - x0) / (x1 - x0) * (_W - 2 * _PAD)

    def py(value: float) -> float:
        return _H - _PAD / 2 - (value - y0) / (y1 - y0) * (_H - _PAD)

    line = " ".join(
        f"{px(s):.1f},{py(v):.1f}" for s, v in zip(xs.tolist(), ys.tolist(), strict=True)
    )
    marks = []
    for anomaly in record.anomalies:
        if anomaly["metric"] == name:
            value = anomaly["value"]
            y = py(value) if value is not None and math.isfinite(value) else _PAD / 2
            marks.append(
                f'<circle cx="{px(anomaly["step"]):.1f}" cy="{y:.1f}" r="4" fill="#d00">'
                f"<title>{html.escape(anomaly['detector'])}: {html.escape(anomaly['evidence'])}"
                "</title></circle>"
            )
    for checkpoint in record.checkpoints:
        x = px(checkpoint["step"])
        marks.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="{_H - 4}" stroke="#888" '
            f'stroke-dasharray="3,3"><title>checkpoint {checkpoint["commit"][:12]}</title></line>'
        )
    return (
        f"<h3>{html.escape(name)}</h3>"
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{html.escape(name)}">'
        f'<rect width="{_W}" height="{_H}" fill="#fafafa"/>'
        f'<polyline fill="none" stroke="#1f6feb" stroke-width="1.2" points="{line}"/>'
        + "".join(marks)
        + f'<text x="2" y="12" font-size="10">{y1:.4g}</text>'
        f'<text x="2" y="{_H - 4}" font-size="10">{y0:.4g}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 4}" font-size="10">step {x1:.0f}</text></svg>'
    )


@mediated("read", targets.run())
def write_report(repo: Repository, run_id: str, out: str | os.PathLike[str]) -> Path:
    record = load_run(repo, run_id)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(repr(v))}</td></tr>"
        for k, v in sorted(flatten(record.config).items())
    )
    summary = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{s['count']}</td><td>{s['last']}</td>"
        f"<td>{s['min']}</td><td>{s['max']}</td></tr>"
        for n, s in sorted(record.summary.items())
    )
    anomalies = "".join(
        f"<li>{html.escape(a['detector'])} on {html.escape(a['metric'])} at step {a['step']}: "
        f"{html.escape(a['evidence'])}</li>"
        for a in record.anomalies
    )
    evaluations = "".join(
        f"<tr><td>{e['step']}</td><td>{html.escape(str(e.get('dataset') or '-'))}</td><td>"
        + html.escape(", ".join(f"{k}={v}" for k, v in sorted(e["metrics"].items())))
        + "</td></tr>"
        for e in record.evals
    )
    tags = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in sorted(record.tag_values.items())
    )
    charts = "".join(
        _chart(name, metric_columns(repo, run_id, name, _W - 2 * _PAD), record)
        for name in sorted(record.summary)
    )
    code = record.environment.get("code", {})
    version = str(code.get("git_commit") or "not in git")
    version += " (uncommitted changes)" if code.get("dirty") else ""
    lineage = (
        f"run {record.id} in project {record.project}; code {version}; "
        f"data {', '.join(record.datasets) or '-'}; base model {record.base_model or '-'}"
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}"
    )
    head = "<tr><th>metric</th><th>count</th><th>last</th><th>min</th><th>max</th></tr>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(record.name)} - fmforge run</title><style>{style}</style></head><body>
<h1>{html.escape(record.name)} <small>{html.escape(record.status)}</small></h1>
<p>{html.escape(lineage)}</p>
<h2>Config</h2><table>{rows}</table>
<h2>Metrics</h2><table>{head}{summary}</table>
<h2>Evaluations</h2><table><tr><th>step</th><th>dataset</th><th>results</th></tr>{evaluations}
</table>
<h2>Tags</h2><table>{tags}</table>
<h2>Anomalies</h2><ul>{anomalies or "<li>none</li>"}</ul>
<h2>Curves</h2>{charts}
</body></html>
"""
    path = Path(out)
    path.write_text(page, encoding="utf-8")
    return path
