"""`ferry bench --html`: what the report says (noise, the recommended setting, the machine) and that the
plots are drawn, checked on a screenshot from Debian's headless chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ferry
from ferry.bench import html_report, measure
from ferry.bench.host import host_info
from ferry.bench.measure import Measurement
from ferry.bench.report import COLORS, noise

DEMO = Path(ferry.__file__).parent / "demo" / "digits"
QUIET_HOST = {**host_info(), "load": 0.0}


def m(backend: str, batch: int, p50: float, p99: float | None = None, threads: int = 2) -> Measurement:
    p99 = p99 or p50 * 1.2
    return Measurement(backend, batch, threads, 100, p50, p50, p50 * 1.1, p99, p50 * 0.9, p99 * 1.1)


NOISE_CASES = {
    "quiet": ([m("onnxruntime", 1, 1.0), m("openvino", 1, 1.2)], {"load": 0.1, "cpus": 2}, []),
    "a long tail": ([m("onnxruntime", 1, 1.0, p99=5.0)], {"load": 0.1, "cpus": 2},
                    ["onnxruntime, 2 thr at batch 1: p99 5 ms is 5.0x its median 1 ms"]),
    "a busy machine": ([m("onnxruntime", 1, 1.0)], {"load": 3.5, "cpus": 2},
                       ["the machine's load average was 3.50 on 2 CPUs when the run started"]),
}  # fmt: skip


@pytest.mark.parametrize("case", NOISE_CASES)
def test_noise_is_named_with_its_reason(case):
    measurements, host, want = NOISE_CASES[case]
    assert noise(measurements, host) == want
    page = html_report("t", measurements, {**QUIET_HOST, **host})
    assert ("This run was noisy" in page) is bool(want)
    for reason in want:
        assert reason.replace("'", "&#x27;") in page


def test_recommended_setting_is_the_fastest_median_per_batch_with_its_margin():
    page = html_report("t", [m("onnxruntime", 1, 2.0), m("openvino", 1, 1.0), m("onnxruntime", 32, 8.0),
                             m("openvino", 32, 10.0)], QUIET_HOST)  # fmt: skip
    table = page.split('class="recommended"')[1].split("</table>")[0]
    rows = table.split("<tr>")[2:]
    assert "openvino, 2 thr" in rows[0] and "2.00x faster than onnxruntime, 2 thr" in rows[0]
    assert "onnxruntime, 2 thr" in rows[1] and "1.25x faster than openvino, 2 thr" in rows[1]


def test_the_machine_and_versions_are_on_the_page():
    host = host_info()
    page = html_report("t", [m("onnxruntime", 1, 1.0)], host)
    assert host["versions"]["onnxruntime"] and f"onnxruntime {host['versions']['onnxruntime']}" in page
    assert f"ferry {host['versions']['ferry']}" in page
    assert f"{host['cpus']} logical CPUs" in page and host["when"] in page


def test_report_of_a_real_run_renders_its_plots_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    from web_helpers import launch

    pkg = ferry.load(DEMO)
    runs = [measure(pkg, backend, batch, 1, runs=20) for backend in ("onnxruntime", "openvino") for batch in (1, 8, 32)]
    report = tmp_path / "report.html"
    report.write_text(html_report("ferry bench: digits", runs), encoding="utf-8")
    with sync_playwright() as p:
        context = launch(p, tmp_path / "profile")
        try:
            page = context.new_page()
            page.set_viewport_size({"width": 1000, "height": 900})
            page.goto(report.as_uri())
            throughput = page.locator('svg[data-plot="throughput"]')
            assert throughput.locator("polyline").count() == 2  # one line per backend
            assert throughput.locator("circle").count() == 6  # a point per batch size
            assert page.locator('svg[data-plot="latency"]').count() == 3  # one per batch size
            shot = throughput.screenshot()
            latency = page.locator('svg[data-plot="latency"]').first.screenshot()
        finally:
            context.close()
    from io import BytesIO

    from PIL import Image

    def pixels_of(png: bytes, hex_color: str) -> int:
        rgb = np.asarray(Image.open(BytesIO(png)).convert("RGB")).astype(int)
        want = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - want).sum(axis=-1) < 40).sum())

    # the lines and boxes are drawn, in their colors, not just written into the page
    for color in COLORS[:2]:
        assert pixels_of(shot, color) > 300, color
        assert pixels_of(latency, color) > 30, color  # a box is at least 2x18 px, its whiskers 2 px high


def test_each_takes_turns_round_after_round_and_keeps_the_median_of_the_rounds():
    from ferry.bench.measure import ROUNDS, measure_each

    steps: list[str] = []
    results, skipped = measure_each(ferry.load(DEMO), ["onnxruntime", "openvino"], [1, 4], [1], warmup=1, runs=6,
                                    on_step=steps.append)  # fmt: skip
    order = [(s.split(",")[0].removeprefix("measuring "), s.split("round ")[1][0]) for s in steps]
    assert order == [(b, str(r)) for r in range(1, ROUNDS + 1) for b in ("onnxruntime",) * 2 + ("openvino",) * 2]
    assert skipped == {} and sorted((r.backend, r.batch) for r in results) == [
        ("onnxruntime", 1), ("onnxruntime", 4), ("openvino", 1), ("openvino", 4)]  # fmt: skip
    assert all(r.runs >= 6 and r.min_ms <= r.p50_ms <= r.max_ms for r in results)
