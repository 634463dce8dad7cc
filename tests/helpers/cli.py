"""Running the installed ``medtl`` command as a user would, and checking what the user sees."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

MEDTL = str(Path(sys.executable).with_name("medtl"))


def medtl(env: dict[str, str], *args: str | Path, limit: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run the installed command; fails the test if it takes longer than ``limit`` seconds."""
    start = time.monotonic()
    proc = subprocess.run(
        [MEDTL, *map(str, args)], capture_output=True, text=True, env=env, timeout=limit, errors="replace"
    )
    proc.seconds = time.monotonic() - start  # type: ignore[attr-defined]
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit != 0, exactly one non-empty line on stderr that names each of ``names``, no traceback."""
    assert proc.returncode not in (0, None), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def no_leftovers(folder: Path) -> list[str]:
    """Temporary or half-written files medtl might leave behind."""
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)
