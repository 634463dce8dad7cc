"""Long commands check what they were given before importing torch, MONAI and Lightning: a wrong path or config
field is one line within a second, in a new process, with none of those libraries loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# runs the CLI, then says on stderr which of the heavy libraries the process had imported
PROBE = (
    "import sys\n"
    "from medtl.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = sorted(m for m in ('torch', 'monai', 'lightning') if m in sys.modules)\n"
    "print('imported:', ','.join(heavy) or 'none', file=sys.stderr)\n"
    "sys.exit(code)\n"
)

MISSING = "/nonexistent/medtl-early-check"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", f"{MISSING}.yaml"], "does not exist"),
        (["train", "configs/xray_mobilenet_imagenet.yaml", "--set", "train.bogus=1"], "train.bogus: unknown field"),
        (["lr-find", "configs/xray_mobilenet_imagenet.yaml", "--set", "train.batch_size=0"], "train.batch_size"),
        (["predict", MISSING, "scan.dcm"], "is not a finished medtl run"),
        (["evaluate", MISSING, "manifest.csv"], "is not a finished medtl run"),
        (["compare", "{bad_compare}"], "compare.primary_metric"),
        (["cv", "configs/xray_mobilenet_imagenet.yaml", "--set", "splits.seed=x"], "splits.seed"),
        (["pretrain", "configs/pretrain_xray_simclr.yaml", "--set", "method=foo"], "method: 'foo' is not allowed"),
    ],
    ids=["train-path", "train-field", "lr-find", "predict", "evaluate", "compare", "cv", "pretrain"],
)
def test_a_mistake_is_one_line_before_the_heavy_imports(args: list[str], message: str, tmp_path: Path) -> None:
    bad_compare = tmp_path / "compare.yaml"  # the sample comparison with a metric no classification task has
    text = (ROOT / "configs/compare_xray.yaml").read_text().replace("primary_metric: auroc", "primary_metric: dice")
    bad_compare.write_text(text.replace("../sample_data", str(ROOT / "sample_data")))
    args = [a.format(bad_compare=bad_compare) for a in args]
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert lines[1] == "imported: none"


def test_the_loading_line_is_said_once_not_by_every_ddp_rank_nor_with_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from medtl.cli.early import loading

    loading("train", "exp.yaml")
    assert capsys.readouterr().out == "medtl train: exp.yaml: loading torch, MONAI and Lightning...\n"
    loading("evaluate", "run", quiet=True)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP process that runs the command again
    loading("train", "exp.yaml")
    assert capsys.readouterr().out == ""
