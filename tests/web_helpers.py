"""Debian's chromium, headless, driven by Playwright (nothing is downloaded), and the page-side snippets
the web tests and benchmarks/web.py share."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags this closed network needs: no first-run, sync, component or background fetches.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def launch(playwright: Any, user_data_dir: Path, extra: list[str] | None = None) -> Any:
    """A persistent context in a fresh profile folder (its own cache and service workers)."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=CHROMIUM, headless=True, args=FLAGS + (extra or [])
    )


def b64(path: Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


# (base64, steps) -> the preprocessed tensor; the image goes in as a Blob, as a user's file would
PREPROCESS_JS = """async ([data, steps]) => {
  const ferry = await import('./ferry.js');
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const r = await ferry.preprocessImage(new Blob([bytes]), steps);
  return { data: Array.from(r.data), shape: r.shape };
}"""

# [base64...] -> the top-k of each image, through the page's loaded model
CLASSIFY_JS = """async (images) => {
  const out = [];
  for (const data of images) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    out.push(await window.ferryModel.classify(new Blob([bytes])));
  }
  return out;
}"""

# {name: {data, shape, dtype}} -> the outputs as plain arrays (int64 goes in as numbers)
PREDICT_JS = """async (feeds) => {
  const typed = { float32: Float32Array, int64: BigInt64Array };
  const named = {};
  for (const [k, v] of Object.entries(feeds)) {
    const data = v.dtype === 'int64' ? BigInt64Array.from(v.data, BigInt) : typed[v.dtype].from(v.data);
    named[k] = { data, shape: v.shape };
  }
  const out = await window.ferryModel.predict(named);
  const plain = {};
  for (const [k, v] of Object.entries(out)) plain[k] = { data: Array.from(v.data, Number), shape: v.shape };
  return plain;
}"""


def wait_ready(page: Any, timeout_ms: int = 60_000) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=timeout_ms, state="attached")


# a JS expression -> "Name: message" of what it throws ("no error" if nothing)
def error_of(page: Any, expression: str) -> str:
    return page.evaluate(
        f"async () => {{ try {{ await ({expression}); return 'no error'; }}"
        " catch (e) { return `${e.name}: ${e.message}`; } }"
    )


# {name: {data, shape}} with int64 data as numbers -> what predict throws
PREDICT_ERROR_JS = """async (feeds) => {
  const named = {};
  for (const [k, v] of Object.entries(feeds)) named[k] = { data: BigInt64Array.from(v.data, BigInt), shape: v.shape };
  try { await window.ferryModel.predict(named); return 'no error'; } catch (e) { return `${e.name}: ${e.message}`; }
}"""
