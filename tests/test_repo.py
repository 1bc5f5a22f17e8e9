"""The repository's own promises: CI runs the README's test command, with the pinned versions."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if "pytest" in b)


def test_ci_runs_the_readme_test_command_word_for_word():
    assert readme_test_command() in (ROOT / ".ci" / "run").read_text()


def test_the_test_command_installs_against_the_constraints_file():
    command = readme_test_command()
    installs = [part for part in command.split("&&") if "pip install" in part and "--no-deps" not in part]
    assert installs and all("-c constraints.txt" in part for part in installs)
    pins = {
        line.split("==")[0].lower()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert {"onnxruntime", "onnx", "numpy", "openvino", "torch"} <= pins
