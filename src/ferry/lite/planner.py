"""Memory planning: tensors whose lifetimes do not overlap share storage in one arena.

A lifetime is the closed interval of steps [produced, last read]. Placement is greedy by size, as in
TFLite's arena planner: the largest tensors are placed first, each at the lowest aligned offset where it
overlaps no already-placed tensor that is alive at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 64


@dataclass(frozen=True)
class Slot:
    name: str
    offset: int
    nbytes: int
    first: int  # step that writes it
    last: int  # last step that reads it
    shape: tuple[int, ...] = ()
    dtype: str = "float32"


@dataclass
class Plan:
    slots: dict[str, Slot]
    arena_bytes: int  # the arena's size: the planned peak of intermediate tensors
    naive_bytes: int  # every intermediate in storage of its own
    # Outputs of Reshape-like steps that stay views of another tensor's slot (no slot, no copy) -> that tensor.
    aliases: dict[str, str] = field(default_factory=dict)

    def live_peak(self) -> int:
        """The most bytes alive at one step: no plan for this order of steps can use a smaller arena."""
        events = sorted([(s.first, s.nbytes) for s in self.slots.values()] + [(s.last + 1, -s.nbytes) for s in
                         self.slots.values()])  # fmt: skip
        peak = live = 0
        for _, change in events:  # at equal steps the frees (negative) come first
            live += change
            peak = max(peak, live)
        return peak

    def summary(self) -> str:
        saved = 1 - self.arena_bytes / self.naive_bytes if self.naive_bytes else 0.0
        return (
            f"{len(self.slots)} intermediate tensors: arena {self.arena_bytes / 2**20:.2f} MiB against "
            f"{self.naive_bytes / 2**20:.2f} MiB unplanned ({saved:.0%} saved; "
            f"{self.live_peak() / 2**20:.2f} MiB alive at once at most)"
        )

    def to_json(self) -> dict:
        return {
            "arena_bytes": self.arena_bytes,
            "naive_bytes": self.naive_bytes,
            "slots": [
                [s.name, s.offset, s.nbytes, s.first, s.last, list(s.shape), s.dtype] for s in self.slots.values()
            ],
            "aliases": self.aliases,
        }

    @classmethod
    def from_json(cls, data: dict) -> Plan:
        slots = {row[0]: Slot(*row[:5], tuple(row[5]), row[6]) for row in data["slots"]}
        return cls(slots, data["arena_bytes"], data["naive_bytes"], dict(data.get("aliases", {})))


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(steps_reads: list[list[str]], steps_writes: list[list[str]]) -> dict[str, tuple[int, int]]:
    """[first, last] step of every tensor written by a step (a tensor never read lives one step)."""
    spans: dict[str, list[int]] = {}
    for i, writes in enumerate(steps_writes):
        for name in writes:
            if name:
                spans[name] = [i, i]
    for i, reads in enumerate(steps_reads):
        for name in reads:
            if name in spans:
                spans[name][1] = max(spans[name][1], i)
    return {name: (a, b) for name, (a, b) in spans.items()}


def plan(
    tensors: dict[str, tuple[tuple[int, ...], str, int]],
    spans: dict[str, tuple[int, int]],
    aliases: dict[str, str] | None = None,
) -> Plan:
    """Place every tensor of `tensors` (name -> shape, dtype, bytes) living over `spans` into one arena. An
    alias (a view of another tensor's storage) gets no slot; the tensor it views lives until its last read."""
    aliases = dict(aliases or {})
    spans = dict(spans)
    for view, base in aliases.items():
        (first, last), (_, until) = spans[base], spans[view]
        spans[base] = (first, max(last, until))
    sizes = {name: t[2] for name, t in tensors.items()}
    placed: list[Slot] = []
    order = sorted(sizes, key=lambda n: (-sizes[n], spans[n][0]))
    for name in order:
        nbytes, (first, last) = _aligned(sizes[name]), spans[name]
        rivals = sorted(
            (s for s in placed if s.first <= last and first <= s.last), key=lambda s: s.offset
        )  # alive at the same time
        offset = 0
        for s in rivals:
            if offset + nbytes <= s.offset:
                break
            offset = max(offset, s.offset + _aligned(s.nbytes))
        placed.append(Slot(name, offset, sizes[name], first, last, tuple(tensors[name][0]), tensors[name][1]))
    arena = max((s.offset + _aligned(s.nbytes) for s in placed), default=0)
    naive = sum(_aligned(n) for n in sizes.values())
    return Plan({s.name: s for s in placed}, arena, naive, aliases)
