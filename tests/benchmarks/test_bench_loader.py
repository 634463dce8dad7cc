"""benchmarks/bench_loader.py runs end to end at tiny sizes on the CPU, so the loader benchmark cannot rot."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about 25 s on the 2-core machine: six loaders (two with a worker process) and a model step
def test_quick_run_prints_a_finite_row_per_loader_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("bench_loader", ROOT / "benchmarks" / "bench_loader.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))  # the script points it into its work folder
        assert module.main(["--quick", "--work", str(tmp_path)]) == 0
    finally:
        sys.modules.pop(spec.name, None)
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("setting"))
    rows = lines[start + 1 :]
    assert [r[:38].strip() for r in rows][:3] == ["memory, no workers", "disk, no workers", "disk, next run"]
    assert len(rows) == 6
    for row in rows:
        fill, first, later, ratio = (float(v) for v in row[38:].split())
        assert all(math.isfinite(v) for v in (fill, first, later, ratio)) and min(first, later, ratio) > 0, row
    files = list((tmp_path / "home" / "cache").glob("pre-*/*.pt"))
    assert len(files) == 6  # the training split's scans, once, whatever the number of runs that read them
