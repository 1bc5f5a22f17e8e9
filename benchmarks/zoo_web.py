"""The zoo's web column: each package exported with `ferry export web`, served on loopback and run by
ferry.js in Debian's chromium (headless, through Playwright; nothing downloads a browser)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ferry.web import export_web  # noqa: E402
from ferry.web.preview import SiteServer  # noqa: E402
from web_helpers import launch  # noqa: E402

# [{name: {data, shape, dtype}}, runs] -> {outputs, times}: the page's model, run `runs` more times for
# the clock. int64 goes in as numbers (JSON has no BigInt), strings as strings.
TIMED_PREDICT_JS = """async ([feeds, runs]) => {
  const typed = { float32: Float32Array, float64: Float64Array, int32: Int32Array, int8: Int8Array,
                  uint8: Uint8Array, bool: Uint8Array, int64: BigInt64Array };
  const named = {};
  for (const [k, v] of Object.entries(feeds)) {
    const data = v.dtype === 'string' ? v.data : v.dtype === 'int64' ? BigInt64Array.from(v.data, BigInt)
      : typed[v.dtype].from(v.data);
    named[k] = { data, shape: v.shape };
  }
  const out = await window.ferryModel.predict(named);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await window.ferryModel.predict(named);
    times.push(performance.now() - t);
  }
  const plain = {};
  for (const [k, v] of Object.entries(out)) {
    plain[k] = { data: Array.from(v.data, (x) => typeof x === 'string' ? x : Number(x)), shape: v.shape };
  }
  return { outputs: plain, times };
}"""

# the page is done: ready, or showing the error it failed with
SETTLED_JS = "() => document.body.dataset.ready === '1' || document.getElementById('error').textContent !== ''"


class WebRunner:
    """One headless chromium for a zoo run; `run` exports, serves and runs one package in a fresh page."""

    def __enter__(self) -> WebRunner:
        from playwright.sync_api import sync_playwright

        self._tmp = tempfile.TemporaryDirectory(prefix="ferry-zoo-web-")
        self._playwright = sync_playwright().start()
        self._context = launch(self._playwright, Path(self._tmp.name) / "profile")
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.close()
        self._playwright.stop()
        self._tmp.cleanup()

    def run(self, package: Any, feeds: dict[str, np.ndarray], runs: int) -> tuple[dict[str, np.ndarray], list[float]]:
        site = Path(self._tmp.name) / f"site-{package.name}"
        export_web(package, site)
        server = SiteServer(site, port=0).start()
        page = self._context.new_page()
        try:
            page.goto(server.url)
            page.wait_for_function(SETTLED_JS, timeout=120_000)
            error = page.text_content("#error")
            if error:
                raise RuntimeError(f"onnxruntime-web: {error}")
            wire = {
                k: {"data": v.ravel().tolist(), "shape": list(v.shape), "dtype": _dtype(v)} for k, v in feeds.items()
            }
            result = page.evaluate(TIMED_PREDICT_JS, [wire, runs])
        finally:
            page.close()
            server.shutdown()
            server.server_close()
            shutil.rmtree(site, ignore_errors=True)
        outputs = {k: np.asarray(v["data"]).reshape(v["shape"]) for k, v in result["outputs"].items()}
        return outputs, result["times"]


def _dtype(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OU" else "bool" if array.dtype == bool else array.dtype.name
