"""Two DDP ranks on the CPU (gloo) train one encoder: equal on both ranks, and equal to the file written once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from medtl.pretraining import pretrain
    from medtl.pretraining.run import encoder_state

    result = pretrain(json.loads(sys.argv[1]), quiet=True)
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.save(encoder_state(result.encoder), os.path.join(sys.argv[2], f"rank{rank}.pt"))
    """
)


@pytest.mark.slow
def test_two_cpu_ranks_make_one_identical_encoder(pool: dict[str, Path], tmp_path: Path) -> None:
    """Lightning starts the second process by running the same script again; about 40 s on 2 cores."""
    script = tmp_path / "ddp_pretrain.py"
    script.write_text(SCRIPT)
    config = {
        "data": {"manifest": str(pool["xray"])},
        "preprocess": {"size": [32, 32]},
        "model": {"arch": "resnet18"},
        "method": "simclr",
        "train": {"epochs": 2, "batch_size": 4, "accelerator": "cpu", "devices": 2, "cache": "memory"},
        "output": {"dir": str(tmp_path / "runs"), "name": "ddp"},
    }
    env = {**os.environ, "MEDTL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(config), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "runs" / "ddp"
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "ok" and result["devices"] == 2 and result["epochs_run"] == 2
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    saved = load_file(str(run / "encoder.safetensors"))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert set(ranks[0]) == set(ranks[1]) == set(saved)
    for key, value in saved.items():
        assert torch.equal(ranks[0][key], value), key
        assert torch.equal(ranks[1][key], value), key
