"""Run every ONNX backend node test case through the lite engine and write the result into docs/lite.md
(between the node-cases markers): the pass count and every case not passed, with the reason.

    python scripts/lite_node_report.py

tests/test_lite.py checks that the list in docs/lite.md is exactly what the engine does today.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lite_cases import all_cases, run_case  # noqa: E402

BEGIN, END = "<!-- node-cases:begin -->", "<!-- node-cases:end -->"


def main() -> None:
    cases = all_cases()
    results = [run_case(c) for c in cases]
    passed = sum(r.ok for r in results)
    misses = [r for r in results if not r.ok]
    kinds = collections.Counter(_kind(r.reason) for r in misses)
    lines = [
        BEGIN,
        f"**{passed} of {len(cases)}** node test cases pass (onnx's `collect_testcases()`, each data set run twice: "
        "once to plan memory, once in the arena).",
        "",
        "| why not passed | cases |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in kinds.most_common()],
        "",
        "<details><summary>Every case not passed</summary>",
        "",
        "| case | reason |",
        "|---|---|",
        *[f"| {r.name} | {r.reason.replace('|', '/')[:160]} |" for r in misses],
        "",
        "</details>",
        END,
    ]
    doc = ROOT / "docs" / "lite.md"
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(head + "\n".join(lines) + tail, encoding="utf-8")
    print(f"{passed} of {len(cases)} pass; {len(misses)} listed in {doc}")


def _kind(reason: str) -> str:
    if "no lite kernel" in reason:
        return "op has no lite kernel"
    if "bfloat16" in reason or "einsum" in reason:
        return "bfloat16 arithmetic numpy cannot do"
    return "result differs"


if __name__ == "__main__":
    main()
