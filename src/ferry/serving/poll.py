"""Model control `poll`: watch the repository and reload what changed, in the background.

A model's fingerprint is its config.json and the manifests of its numbered version folders (a manifest
holds the sha256 of every file, so a changed package changes it). When the fingerprint moves, the model is
loaded again off the event loop; the registry switches atomically and lets requests already queued on
the old version finish. A version that fails to load leaves the working one serving, and the next
change (a copy that completes, say) triggers another try.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path

from ferry.errors import FerryError
from ferry.serving.registry import Registry

log = logging.getLogger("ferry.serve")


# What a loaded package records about itself as it runs (`ferry bench --tune`, the engines' converted
# files made on first use) is not a new model: a change there does not reload it.
RUNTIME_RECORDS = ("tuning", "engines")


def fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("config.json")) + sorted(folder.glob("[0-9]*/ferry.json")):
        try:
            h.update(str(path.relative_to(folder)).encode())
            h.update(_content(path))
        except OSError:
            h.update(b"unreadable")
    return h.hexdigest()


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name != "ferry.json":
        return data
    try:
        manifest = json.loads(data)
    except ValueError:
        return data
    if not isinstance(manifest, dict):
        return data
    for key in RUNTIME_RECORDS:
        manifest.pop(key, None)
    files = {k: v for k, v in manifest.get("files", {}).items() if not str(k).startswith("engines/")}
    return json.dumps({**manifest, "files": files}, sort_keys=True).encode()


def snapshot(root: Path) -> dict[str, str]:
    return {d.name: fingerprint(d) for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("[0-9]*"))}


async def poll_repository(registry: Registry, interval: float, stop: asyncio.Event) -> None:
    root = registry.root
    seen = snapshot(root)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
            return
        except asyncio.TimeoutError:
            pass
        try:
            current = await asyncio.to_thread(snapshot, root)
        except OSError as exc:  # the repository folder itself went away or became unreadable: try again later
            log.error("cannot read the repository %s: %s", root, exc)
            continue
        for name in sorted(set(seen) | set(current)):
            if seen.get(name) == current.get(name):
                continue
            if name not in current:
                log.warning("%s left the repository: unloading", name)
                await asyncio.to_thread(_quietly, registry.unload, name)
            else:
                log.warning("%s changed: loading in the background", name)
                await asyncio.to_thread(_quietly, registry.load, name)
        seen = current


def _quietly(fn, name: str) -> None:
    """Run a load or unload; whatever fails is logged (the registry keeps the reason) and the poller goes on."""
    try:
        fn(name)
    except FerryError as exc:
        log.error("%s", exc)
    except Exception:
        log.exception("reloading %s failed", name)
