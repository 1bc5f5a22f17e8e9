"""`ferry bench --html`: a self-contained report (inline SVG, no scripts, no network) to send a colleague.

In order: a warning when the run was noisy, the setting `auto` would choose per batch size, throughput
against batch size per backend (the curve that says which batch size to serve at), the latency
distribution of every setting (min, p50-p90 box, p99, max on one axis per batch size), the full table,
and the machine and versions it ran on.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from typing import Any

from ferry.bench.host import host_info
from ferry.bench.measure import Measurement
from ferry.bench.tune import fastest_per_batch

COLORS = ["#3b6ea8", "#d9822b", "#3f9c5a", "#b5473a", "#7a5aa6", "#8c6d31"]
# A setting is noisy when its slow tail is far from its median: p99 above 2x p50 (on a quiet machine
# ferry's settings measured 1.1-1.5x); the run is noisy when any setting is, or the load was high.
NOISY_TAIL = 2.0
FULL_HEAD = [
    "backend",
    "batch",
    "threads",
    "runs",
    "min ms",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "mean ms",
    "items/s",
]
_e = html.escape


def _label(m: Measurement) -> str:
    return f"{m.backend}, {m.threads or 'default'} thr"


def _ticks(top: float, count: int = 5) -> list[float]:
    """Round axis ticks from 0 to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(f for f in (1, 2, 2.5, 5, 10) if raw <= step * f)
    return [step * i for i in range(int(math.ceil(top / step)) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def noise(measurements: list[Measurement], host: dict[str, Any]) -> list[str]:
    """Why the numbers may not hold, one sentence each; empty when the run looks quiet."""
    reasons = []
    for m in measurements:
        if m.p50_ms > 0 and m.p99_ms > NOISY_TAIL * m.p50_ms:
            reasons.append(f"{_label(m)} at batch {m.batch}: p99 {m.p99_ms:.3g} ms is {m.p99_ms / m.p50_ms:.1f}x "
                           f"its median {m.p50_ms:.3g} ms")  # fmt: skip
    load, cpus = host.get("load"), host.get("cpus")
    if load is not None and cpus and load > 0.5 * cpus:
        reasons.append(f"the machine's load average was {load:.2f} on {cpus} CPUs when the run started")
    return reasons


def throughput_chart(measurements: list[Measurement]) -> str:
    """items/s against batch size (log scale), one line per backend and thread count."""
    series: dict[str, list[Measurement]] = defaultdict(list)
    for m in measurements:
        series[_label(m)].append(m)
    batches = sorted({m.batch for m in measurements})
    width, height, left, right, top, bottom = 720, 320, 70, 190, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    y_ticks = _ticks(max(m.items_per_s for m in measurements))
    span = math.log2(batches[-1] / batches[0]) if len(batches) > 1 else 1.0

    def x(b: int) -> float:
        return left + (plot_w * math.log2(b / batches[0]) / span if len(batches) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_ticks[-1])

    out = [f'<svg class="plot" data-plot="throughput" width="{width}" height="{height}" role="img" '
           f'aria-label="throughput against batch size">']  # fmt: skip
    for t in y_ticks:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for b in batches:
        out.append(f'<text x="{x(b):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{b}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#555"/>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#555"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">batch size</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               f'text-anchor="middle">items/s</text>')  # fmt: skip
    for i, (label, ms) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        ms = sorted(ms, key=lambda m: m.batch)
        points = " ".join(f"{x(m.batch):.1f},{y(m.items_per_s):.1f}" for m in ms)
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="3"/>')
        for m in ms:
            tip = f"{_e(label)}, batch {m.batch}: {m.items_per_s:.1f} items/s"
            out.append(f'<circle cx="{x(m.batch):.1f}" cy="{y(m.items_per_s):.1f}" r="4.5" fill="{color}">'
                       f"<title>{tip}</title></circle>")  # fmt: skip
        ly = top + 14 + 20 * i
        out.append(f'<rect x="{left + plot_w + 16}" y="{ly - 10}" width="14" height="14" fill="{color}"/>')
        out.append(f'<text x="{left + plot_w + 36}" y="{ly + 2}">{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def latency_chart(batch: int, measurements: list[Measurement]) -> str:
    """One row per setting on a shared millisecond axis: whiskers min to max, a box from p50 to p90, a
    mark at p99. A long box or a p99 far right is the tail a median hides."""
    width, row_h, left, right, top = 720, 30, 170, 30, 30
    height = top + row_h * len(measurements) + 40
    plot_w = width - left - right
    x_ticks = _ticks(max(m.max_ms or m.p99_ms for m in measurements))

    def x(v: float) -> float:
        return left + plot_w * v / x_ticks[-1]

    out = [f'<svg class="plot" data-plot="latency" width="{width}" height="{height}" role="img" '
           f'aria-label="latency distribution at batch {batch}">',
           f'<text x="0" y="16" font-weight="bold">batch {batch}: latency per run (ms)</text>']  # fmt: skip
    axis_y = top + row_h * len(measurements)
    for t in x_ticks:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{axis_y}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{x(t):.1f}" y="{axis_y + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for i, m in enumerate(measurements):
        cy = top + row_h * i + row_h / 2
        color = COLORS[i % len(COLORS)]
        lo, hi = m.min_ms or m.p50_ms, m.max_ms or m.p99_ms
        out.append(f'<text x="0" y="{cy + 4:.1f}">{_e(_label(m))}</text>')
        out.append(f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{color}" '
                   f'stroke-width="2"/>')  # fmt: skip
        out.append(f'<line x1="{x(m.p99_ms):.1f}" x2="{x(m.p99_ms):.1f}" y1="{cy - 11:.1f}" y2="{cy + 11:.1f}" '
                   f'stroke="#222" stroke-width="3"><title>p99 {m.p99_ms:.3g} ms</title></line>')  # fmt: skip
        # the box last and at least 3 px wide: a fast setting beside one slow outlier stays visible (its
        # p99 mark, drawn first, still shows above and below it)
        box = max(3.0, x(m.p90_ms) - x(m.p50_ms))
        tip = f"p50 {m.p50_ms:.3g} ms, p90 {m.p90_ms:.3g} ms"
        out.append(f'<rect x="{x(m.p50_ms):.1f}" y="{cy - 9:.1f}" width="{box:.1f}" height="18" fill="{color}">'
                   f"<title>{tip}</title></rect>")  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr>{body}</table>'


def html_report(title: str, measurements: list[Measurement], host: dict[str, Any] | None = None) -> str:
    host = host or host_info()
    reasons = noise(measurements, host)
    warning = (
        '<div class="warning" role="alert"><b>This run was noisy</b>: '
        + "; ".join(_e(r) for r in reasons)
        + ". Medians still compare, tails may not: rerun on a quiet machine before trusting p99.</div>"
        if reasons
        else ""
    )
    best = fastest_per_batch(measurements)
    recommended = []
    for batch, m in best.items():
        others = [o for o in measurements if o.batch == batch and o is not m]
        runner = min(others, key=lambda o: o.p50_ms) if others else None
        margin = f"{runner.p50_ms / m.p50_ms:.2f}x faster than {_label(runner)}" if runner else "the only setting"
        recommended.append(
            [str(batch), _label(m), f"{m.p50_ms:.3f}", f"{m.p99_ms:.3f}", f"{m.items_per_s:.1f}", margin]
        )
    by_batch: dict[int, list[Measurement]] = defaultdict(list)
    for m in measurements:
        by_batch[m.batch].append(m)
    full = [[m.backend, str(m.batch), str(m.threads or "default"), str(m.runs), *(f"{v:.3f}" for v in
             (m.min_ms, m.p50_ms, m.p90_ms, m.p99_ms, m.max_ms, m.mean_ms)), f"{m.items_per_s:.1f}"]
            for m in measurements]  # fmt: skip
    versions = ", ".join(f"{k} {v}" for k, v in host.get("versions", {}).items())
    machine = [["CPU", f"{host.get('cpu')} ({host.get('machine')}), {host.get('cpus')} logical CPUs"],
               ["memory", f"{host.get('memory_gib')} GiB"], ["OS", str(host.get("os"))],
               ["Python", str(host.get("python"))], ["versions", versions],
               ["load average at start", "unknown" if host.get("load") is None else f"{host['load']:.2f}"],
               ["date (UTC)", str(host.get("when"))]]  # fmt: skip
    summary = _e(
        f"{len(measurements)} settings; {host.get('cpu')}, {host.get('cpus')} CPUs; {versions}; {host.get('when')}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body{{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:60em;color:#1d2430}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
th{{background:#f3f5f8}}td:first-child{{text-align:left}}svg{{display:block;margin:.5em 0 1.5em;font-size:13px}}
.warning{{background:#fff3cd;border:1px solid #e0b84c;padding:.7em 1em;margin:1em 0}}h2{{margin-top:1.5em}}
</style></head><body>
<h1>{_e(title)}</h1>
<p>{summary}</p>
{warning}
<h2>Recommended setting per batch size</h2>
<p>What <code>backend="auto"</code> runs after <code>ferry bench --tune</code>: the lowest median at each
batch size.</p>
{_table(["batch", "setting", "p50 ms", "p99 ms", "items/s", "margin"], recommended, "recommended")}
<h2>Throughput against batch size</h2>
<p>Items per second at the median latency. Where a line flattens, a larger batch buys latency, not throughput.</p>
{throughput_chart(measurements)}
<h2>Latency distribution</h2>
<p>Whiskers from the fastest to the slowest run, the box from p50 to p90, the black mark at p99.</p>
{"".join(latency_chart(b, ms) for b, ms in sorted(by_batch.items()))}
<h2>All settings</h2>
{_table(FULL_HEAD, full, "all")}
<h2>Machine</h2>
{_table(["", "this run"], machine, "machine")}
</body></html>
"""
