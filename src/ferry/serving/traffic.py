"""A/B tests, canaries and shadows: which variant answers a request for a model name.

A model's `config.json` may hold (and `POST /v2/models/{m}/traffic` may change at run time):

    "traffic": {"split": {"1": 90, "2": 10},      # weights; a key is a version of this model,
                                                  # or "other_model" / "other_model/3"
                "sticky_header": "x-user-id",     # the same header value always gets the same variant
                "shadow": "3"}                    # also run this variant, never answer with it, count differences

`choose` is a pure function so that the split can be tested without a server.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from ferry.errors import ConfigError


@dataclass(frozen=True)
class TrafficPolicy:
    split: dict[str, float] = field(default_factory=dict)
    sticky_header: str | None = None
    shadow: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": dict(self.split), "sticky_header": self.sticky_header, "shadow": self.shadow}


def parse(doc: Any, where: str) -> TrafficPolicy:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: traffic must be an object with 'split', 'sticky_header', 'shadow'")
    unknown = set(doc) - {"split", "sticky_header", "shadow"}
    if unknown:
        raise ConfigError(f"{where}: unknown traffic key(s) {sorted(unknown)}")
    split = doc.get("split", {})
    if not isinstance(split, dict) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w < math.inf for w in split.values()
    ):
        raise ConfigError(f"{where}: traffic.split must map variants to finite non-negative weights, got {split!r}")
    if split and sum(split.values()) <= 0:
        raise ConfigError(f"{where}: traffic.split weights add up to zero")
    sticky = doc.get("sticky_header")
    shadow = doc.get("shadow")
    if sticky is not None and not isinstance(sticky, str):
        raise ConfigError(f"{where}: traffic.sticky_header must be a header name")
    if shadow is not None and not isinstance(shadow, str):
        raise ConfigError(f"{where}: traffic.shadow must name a variant")
    return TrafficPolicy({str(k): float(v) for k, v in split.items()}, sticky.lower() if sticky else None, shadow)


def choose(split: dict[str, float], key: str | None, rand: float) -> str:
    """The variant for one request: by `key`'s hash when given (sticky), else by `rand` in [0, 1)."""
    variants = sorted(split)
    total = sum(split[v] for v in variants)
    if key is not None:
        rand = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    point = rand * total
    for v in variants:
        point -= split[v]
        if point < 0:
            return v
    return variants[-1]


def resolve(variant: str, model: str) -> tuple[str, str | None]:
    """A variant name -> (model, version): "2" is a version of `model`; "other" or "other/3" another model."""
    if variant.isdigit():
        return model, variant
    name, _, version = variant.partition("/")
    return name, version or None
