"""Outputs appear whole or not at all.

Every file ferry writes for a user (`ferry predict`'s results, manifests, lite models) goes through
`atomic_write`: it is written to a temporary file beside its destination and renamed over it only when
complete. A full disk, an error or Ctrl-C leaves the previous file (or none) in place and removes the
temporary one. Folders (packages, bundles) are built in a staging folder and moved in with
`ferry.package.package.swap_in`. The lite runtime keeps its own copy of this rule in `lite/format.py`,
since it runs on devices with the standard library alone.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """`with atomic_write(path) as f: ...` writes `path` whole or not at all."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes the file private; the result is the user's, as open() would make it
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
