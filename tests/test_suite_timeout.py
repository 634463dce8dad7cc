"""The test suite cannot hang: pytest-timeout is configured, and a test that hangs fails on its timeout."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_project_sets_a_per_test_timeout(pytestconfig: pytest.Config) -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < float(options["timeout"]) <= 900
    assert float(pytestconfig.getini("timeout")) == float(options["timeout"])  # the plugin is loaded and reads it


@pytest.mark.parametrize(
    "hang",
    [
        "time.sleep(60)",
        # a test stuck waiting on a child process (the CLI and compare tests run subprocesses)
        "subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'])",
    ],
    ids=["sleep", "subprocess"],
)
def test_a_hanging_test_fails_on_its_timeout(tmp_path: Path, hang: str) -> None:
    test_file = tmp_path / "test_hangs.py"
    test_file.write_text(f"import subprocess, sys, time\n\n\ndef test_hangs():\n    {hang}\n")
    started = time.monotonic()
    result = subprocess.run(
        # the project's own settings (-c pyproject.toml), with the limit lowered to 2 s
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml")]
        + ["--rootdir", str(tmp_path), "-o", "timeout=2", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Timeout" in output and "1 failed" in output, output
    assert time.monotonic() - started < 25, output  # stopped after ~2 s, not after the 30-60 s it would hang
