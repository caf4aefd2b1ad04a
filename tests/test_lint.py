"""`make lint` as a test: ruff's checks and its formatting, as configured in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINTED = ["diffusion_link", "tests", "benchmarks", "scripts"]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    assert RUFF.is_file(), f"ruff is not installed beside {sys.executable}: pip install -e '.[dev]'"
    result = subprocess.run([str(RUFF), *command, *LINTED], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
