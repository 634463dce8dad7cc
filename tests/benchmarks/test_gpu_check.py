"""benchmarks/gpu_check.py runs end to end at tiny sizes on the CPU, so the GPU proof script cannot rot."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def _table(text: str, title: str) -> list[str]:
    """The rows of the table under the line starting with ``title`` (after its header), up to a blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip() or line.startswith("target:"):
            break
        rows.append(line)
    return rows


@pytest.mark.slow  # 26 s: trains every sample config
def test_cpu_smoke_prints_finite_rates_and_trains_the_sample_configs(tmp_path: Path, capsys) -> None:
    gpu_check = _load_gpu_check()
    code = gpu_check.main(["--cpu-smoke", "--work", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out

    configs = _table(out, "(a)")
    assert len(configs) == len(gpu_check.CONFIGS)
    status = {row.split()[0]: row.split()[1] for row in configs}
    assert set(status) == set(gpu_check.CONFIGS)
    assert set(status.values()) <= {"ok", "skipped"}
    # the scratch CT config needs no downloaded weights: it must train, with precision auto = 32 on the CPU
    ct = next(row for row in configs if row.startswith("configs/ct_scratch.yaml")).split()
    assert ct[1:4] == ["ok", "32-true", "cpu"], ct
    assert 0.0 <= float(ct[6]) <= 1.0

    assert re.search(r"^\(b\).*\nskipped: ", out, flags=re.M)

    rates = _table(out, "(c)")
    assert [r.split("  ")[0].strip() for r in rates] == ["ResNet-18 3D", "MobileNetV2 2D"]
    for row in rates:
        *_, epochs, e2e, model_only, ratio = row.replace("below target", "").split()
        values = [float(e2e), float(model_only), float(ratio)]
        assert int(epochs) >= 1
        assert all(math.isfinite(v) and v > 0 for v in values), row
        assert math.isclose(values[2], values[0] / values[1], rel_tol=0.5)  # the mean ratio is near the ratio of means
    assert "1x24x24x24" in rates[0] and "3x48x48" in rates[1]

    (seg,) = _table(out, "(d)")
    volume, window, precision, seconds = seg.split()
    assert (volume, window, precision) == ("64x64x32", "32x32x32", "32")
    assert math.isfinite(float(seconds)) and float(seconds) > 0
