"""Turn input files into `Samples`: arrays with a leading sample axis, one per model input.

Supported: .npy (one-input models), .npz (arrays named like the inputs), .json / .jsonl (objects keyed
by input name, or bare lists for one-input models), .csv (rows of numbers for a one-input model), and
image files or folders of them (through the package's preprocessing).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferry.dtypes import numpy_from_name
from ferry.errors import InputError
from ferry.package import ModelPackage

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass
class Samples:
    """Inputs for `count` samples; image inputs stay paths until their batch is preprocessed."""

    arrays: dict[str, np.ndarray]
    count: int
    names: list[str]  # a name per sample (file name, or file:row) for the results
    image_paths: list[Path] | None = None


def read_inputs(paths: list[Path], package: ModelPackage) -> Samples:
    files = _expand(paths)
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if images:
        if len(images) != len(files):
            raise InputError("give either image files or data files (.npy/.npz/.json/.jsonl/.csv), not both")
        if not package.manifest.preprocessing:
            raise InputError(f"model {package.name!r} declares no preprocessing, so it cannot take image files")
        if len(package.signature.inputs) != 1:
            raise InputError(f"model {package.name!r} takes several inputs; images fit one-input models only")
        return Samples({}, len(images), [p.name for p in images], images)
    parts = [_read_file(p, package) for p in files]
    arrays = {name: np.concatenate([part.arrays[name] for part in parts]) for name in package.signature.input_names}
    return Samples(arrays, sum(p.count for p in parts), [n for p in parts for n in p.names])


def _expand(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not files:
        raise InputError("no input files found")
    return files


def _read_file(path: Path, package: ModelPackage) -> Samples:
    sig = package.signature
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arrays = {_only_input(package, path): np.load(path, allow_pickle=False)}
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in sig.input_names if n not in data.files]
            if missing:
                raise InputError(f"{path}: holds {data.files}, the model needs {sig.input_names}")
            arrays = {n: data[n] for n in sig.input_names}
    elif suffix in (".json", ".jsonl"):
        arrays = _read_json(path, package)
    elif suffix == ".csv":
        arrays = {_only_input(package, path): _read_csv(path, sig.inputs[0].dtype)}
    else:
        raise InputError(f"{path}: unsupported input type {suffix!r}; use .npy, .npz, .json, .jsonl, .csv or images")
    counts = {n: len(a) if a.ndim else 0 for n, a in arrays.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise InputError(f"{path}: inputs have different sample counts {counts}")
    count = next(iter(counts.values()))
    return Samples(arrays, count, [f"{path.name}:{i}" for i in range(count)])


def _only_input(package: ModelPackage, path: Path) -> str:
    names = package.signature.input_names
    if len(names) != 1:
        raise InputError(f"{path}: one array, but model {package.name!r} takes {names}; use .npz or .json")
    return names[0]


def _read_json(path: Path, package: ModelPackage) -> dict[str, np.ndarray]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            rows = data if isinstance(data, list) else [data]
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    names = package.signature.input_names
    columns: dict[str, list] = {n: [] for n in names}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            if len(names) != 1:
                raise InputError(f"{path}: record {i} is not an object keyed by input name {names}")
            row = {names[0]: row}
        missing = [n for n in names if n not in row]
        if missing:
            raise InputError(f"{path}: record {i} lacks input(s) {missing}")
        for n in names:
            columns[n].append(row[n])
    out = {}
    for spec in package.signature.inputs:
        try:
            out[spec.name] = np.asarray(columns[spec.name], dtype=numpy_from_name(spec.dtype))
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: input {spec.name!r} cannot be read as {spec.dtype}: {exc}") from None
    return out


def _read_csv(path: Path, dtype: str) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    try:
        return np.asarray([[float(v) for v in row] for row in rows if row], dtype=numpy_from_name(dtype))
    except ValueError as exc:
        raise InputError(f"{path}: every cell must be a number ({exc})") from None


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True
