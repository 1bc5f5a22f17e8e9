"""A self-contained HTML report: the table and one bar chart per batch size, as inline SVG."""

from __future__ import annotations

import html
from collections import defaultdict

from ferry.bench.measure import Measurement

_COLORS = ["#3b6ea8", "#d9822b", "#3f9c5a", "#b5473a", "#7a5aa6", "#8c8c8c"]


def _bars(title: str, rows: list[tuple[str, float]], unit: str) -> str:
    width, bar_h, gap, left = 640, 22, 8, 220
    top = max((v for _, v in rows), default=1.0) or 1.0
    height = len(rows) * (bar_h + gap) + 40
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">']
    parts.append(f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>')
    for i, (label, value) in enumerate(rows):
        y = 30 + i * (bar_h + gap)
        w = (width - left - 90) * value / top
        color = _COLORS[i % len(_COLORS)]
        parts.append(f'<text x="0" y="{y + 15}">{html.escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}">{value:.3g} {unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(title: str, measurements: list[Measurement]) -> str:
    head = ["backend", "batch", "threads", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "items/s"]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                m.backend,
                m.batch,
                m.threads or "default",
                m.runs,
                f"{m.p50_ms:.3f}",
                f"{m.p90_ms:.3f}",
                f"{m.p99_ms:.3f}",
                f"{m.mean_ms:.3f}",
                f"{m.items_per_s:.1f}",
            )
        )
        + "</tr>"
        for m in measurements
    )
    by_batch: dict[int, list[Measurement]] = defaultdict(list)
    for m in measurements:
        by_batch[m.batch].append(m)
    charts = "".join(
        _bars(
            f"batch {b}: median latency",
            [(f"{m.backend} ({m.threads or 'default'} thr)", m.p50_ms) for m in ms],
            "ms",
        )
        for b, ms in sorted(by_batch.items())
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}svg{{display:block;margin:1em 0}}</style>
</head><body><h1>{html.escape(title)}</h1>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>{rows}</table>
{charts}
</body></html>
"""
