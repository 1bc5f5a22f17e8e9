"""Evaluation and calibration data, read into memory: model inputs plus optional labels.

- `.npz`: one array per model input (named like the input), and optionally `label` / `labels`.
- a folder of images with `labels.txt` ("file.png label" per line): images go through the package's
  preprocessing; labels are class indices, class names from the package's labels, or text (for OCR).
- `.jsonl`: one object per line, {"inputs": {name: values}, "label": ...}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import InputError
from ferry.package import ModelPackage


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: list[Any] | None
    count: int

    def batches(self, size: int):
        for start in range(0, self.count, size):
            stop = min(start + size, self.count)
            yield start, {n: a[start:stop] for n, a in self.inputs.items()}


def from_reader(batches: Any, package: ModelPackage) -> Dataset:
    """A Python data reader: any iterable of {input name: batch array} dicts (or a callable returning one),
    as ONNX Runtime's CalibrationDataReader or a PaddleSlim batch generator gives them."""
    if callable(batches) and not hasattr(batches, "__iter__"):
        batches = batches()
    if hasattr(batches, "get_next"):  # ONNX Runtime's CalibrationDataReader protocol
        reader, batches = batches, iter(lambda: reader.get_next(), None)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in package.signature.input_names}
    for i, feeds in enumerate(batches):
        if not isinstance(feeds, dict):
            raise InputError(f"the data reader's item {i} is a {type(feeds).__name__}, expected a dict of arrays")
        for name in parts:
            if name not in feeds:
                raise InputError(f"the data reader's item {i} has no input {name!r} (has {sorted(feeds)})")
            parts[name].append(np.asarray(feeds[name]))
    if not any(parts.values()):
        raise InputError("the data reader gave no batches")
    inputs = {n: np.concatenate(v) for n, v in parts.items()}
    return Dataset(inputs, None, len(next(iter(inputs.values()))))


def load_dataset(path: Any, package: ModelPackage, limit: int | None = None) -> Dataset:
    """Read `path` (a .npz, .jsonl or image folder), or collect a Python data reader (see from_reader)."""
    if isinstance(path, Dataset):
        return path
    if not isinstance(path, (str, Path)):
        return from_reader(path, package)
    path = Path(path)
    if path.is_dir():
        data = _image_folder(path, package)
    elif path.suffix == ".npz":
        data = _npz(path, package)
    elif path.suffix == ".jsonl":
        data = _jsonl(path, package)
    else:
        raise InputError(f"{path}: give a .npz, a .jsonl, or a folder of images with labels.txt")
    if limit is not None and data.count > limit:
        data = Dataset({n: a[:limit] for n, a in data.inputs.items()}, data.labels and data.labels[:limit], limit)
    return data


def _check_inputs(inputs: dict[str, np.ndarray], package: ModelPackage, source: Path, held: list[str]) -> int:
    """`held`: every array name the file holds, so that the error shows what is there, not what matched."""
    missing = [n for n in package.signature.input_names if n not in inputs]
    if missing:
        raise InputError(
            f"{source}: model {package.name!r} needs input(s) {missing}; the file holds {sorted(held)} "
            "(name the arrays after the model's inputs)"
        )
    counts = {n: len(inputs[n]) for n in package.signature.input_names}
    if len(set(counts.values())) != 1:
        raise InputError(f"{source}: inputs hold different numbers of samples: {counts}")
    return next(iter(counts.values()))


def _npz(path: Path, package: ModelPackage) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    labels = arrays.pop("labels", arrays.pop("label", None))
    inputs = {n: arrays[n] for n in package.signature.input_names if n in arrays}
    count = _check_inputs(inputs, package, path, list(arrays))
    return Dataset(inputs, None if labels is None else list(labels.tolist()), count)


def _jsonl(path: Path, package: ModelPackage) -> Dataset:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    specs = {s.name: s for s in package.signature.inputs}
    inputs: dict[str, list] = {n: [] for n in specs}
    labels = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("inputs"), dict):
            raise InputError(f"{path}:{i + 1}: each line must be an object with 'inputs' (and optionally 'label')")
        for name in specs:
            if name not in row["inputs"]:
                raise InputError(f"{path}:{i + 1}: input {name!r} missing; the line holds {sorted(row['inputs'])}")
            inputs[name].append(row["inputs"][name])
        labels.append(row.get("label"))
    arrays = {n: np.asarray(v, dtype=specs[n].dtype) for n, v in inputs.items()}
    count = _check_inputs(arrays, package, path, list(arrays))
    return Dataset(arrays, labels if any(label is not None for label in labels) else None, count)


def _image_folder(path: Path, package: ModelPackage) -> Dataset:
    from ferry.processing.image import preprocess_images

    if not package.manifest.preprocessing:
        raise InputError(f"model {package.name!r} declares no preprocessing, so it cannot take image files")
    listing = path / "labels.txt"
    if not listing.is_file():
        raise InputError(f"{path}: a folder of images needs labels.txt ('file label' per line)")
    files, labels = [], []
    for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        name, _, label = line.partition(" ")
        if not (path / name).is_file():
            raise InputError(f"{listing}:{n}: no image {name!r} in {path}")
        files.append(path / name)
        labels.append(label.strip())
    names = {label: i for i, label in enumerate(package.manifest.labels)}
    parsed = [int(v) if v.lstrip("-").isdigit() else names.get(v, v) for v in labels]
    batch = preprocess_images(files, package.manifest.preprocessing)
    return Dataset({package.signature.input_names[0]: batch}, parsed, len(files))
