"""What a converter returns."""

from __future__ import annotations

from dataclasses import dataclass

from ferry.converters.parity import ParityReport
from ferry.package import ModelPackage


@dataclass
class Conversion:
    package: ModelPackage
    converter: str  # e.g. "torch.onnx (dynamo)"
    parity: ParityReport | None  # None when the check was off or the source framework is missing
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"wrote {self.package.root} with {self.converter}"]
        lines.append(str(self.parity) if self.parity else "parity check: skipped")
        lines += list(self.notes)
        return "\n".join(lines)
