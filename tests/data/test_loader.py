"""Loading 3D cohorts: the preprocessing cache shared by the runs of a comparison (its key, its files written whole by
parallel processes), ``train.num_workers: auto``, and the geometric augmentation of batches (``augment.device``)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.tasks import base_config, make_volume_task

from medtl.config import load_config
from medtl.data.dataset import SampleDataset
from medtl.data.loading import (
    PARALLEL_ENV,
    cores_per_run,
    preprocessing_cache_dir,
    resolve_cache,
    resolve_num_workers,
)
from medtl.train.experiment import prepare_experiment
from medtl.train.inference import cache_note, make_loader
from medtl.transforms.batch import BatchAugment, batch_augmentation
from medtl.transforms.presets import augmentation, build_pipeline
from medtl.transforms.record import InputRecord
from medtl.weights.sources import Normalization


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 CT-like NIfTI volumes of 16^3 voxels with a manifest."""
    return make_volume_task(tmp_path_factory.mktemp("volumes"), n_patients=12, size=16)


def _config(manifest: Path, out: Path, *, model: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    pre = {"size": [16, 16, 16], **sections.pop("preprocess", {})}
    return base_config(
        manifest,
        out,
        data={"modality": "CT"},
        preprocess=pre,
        model={"arch": "resnet18_3d", **(model or {})},
        **sections,
    )


def _entries(home: Path) -> dict[str, set[str]]:
    """Cache folder -> the names of its files."""
    return {d.name: {f.name for f in d.iterdir()} for d in sorted((home / "cache").iterdir()) if d.is_dir()}


# --------------------------------------------------------------------------------------------- the cache key


def test_the_arms_seeds_and_fractions_of_a_compare_share_one_cache_key_and_the_size_changes_it(
    volumes: Path, tmp_path: Path, cache: dict[str, Path]
) -> None:
    def key(**sections: Any) -> str:
        exp = prepare_experiment(_config(volumes, tmp_path, **sections), build_datasets=False)
        return preprocessing_cache_dir(exp).name

    scratch = key()
    assert scratch.startswith("pre-")
    arms = {
        # another weight source: another normalisation (MedicalNet's z-score), applied after the cache
        "medicalnet": key(model={"weights": "medicalnet"}),
        # an arm that overrides the normalisation and the channels (post-stage options)
        "imagenet statistics, 3 channels": key(model={"in_channels": 3}, preprocess={"normalization": "imagenet"}),
        "seed 1, half the labels": key(train={"seed": 1}, splits={"label_fraction": 0.5}),
        "another learning rate": key(train={"lr": 0.01, "epochs": 5}),
    }
    assert arms == dict.fromkeys(arms, scratch)
    # what pre does: another size, another CT window, another orientation
    assert key(preprocess={"size": [24, 24, 24]}) != scratch
    assert key(preprocess={"ct_window": [-200, 400]}) != scratch
    assert key(preprocess={"orientation": "LPS"}) != scratch


def test_a_label_fraction_and_another_seed_read_the_files_of_the_full_run(
    volumes: Path, tmp_path: Path, cache: dict[str, Path]
) -> None:
    # a cache file is named by its scan, not by its manifest row or its place in the training split: the runs of a
    # comparison at 50% labels find every scan the 100% run preprocessed
    full = prepare_experiment(_config(volumes, tmp_path, train={"cache": "disk"}))
    made = _entries(cache["medtl"])
    assert len(made) == 1 and len(next(iter(made.values()))) == 12
    half = prepare_experiment(
        _config(volumes, tmp_path, train={"cache": "disk", "seed": 1}, splits={"label_fraction": 0.5})
    )
    assert len(half.splits["train"]) < len(full.splits["train"])
    assert _entries(cache["medtl"]) == made
    # and read back, the samples are those of the full run
    by_image = {r["image"]: i for i, r in enumerate(full.splits["train"])}
    for i, r in enumerate(half.splits["train"]):
        assert torch.equal(half.datasets["train"][i]["image"], full.datasets["train"][by_image[r["image"]]]["image"])


def test_the_cache_holds_only_what_pre_made_and_the_row_comes_from_the_run_that_reads_it(
    volumes: Path, tmp_path: Path, cache: dict[str, Path]
) -> None:
    exp = prepare_experiment(_config(volumes, tmp_path, train={"cache": "disk"}))
    (folder,) = (cache["medtl"] / "cache").iterdir()
    stored = torch.load(next(folder.glob("*.pt")), weights_only=True)
    assert set(stored) == {"image"}  # no path, manifest row or series UID of the run that made it
    ds = exp.datasets["val"]
    rec = ds.records[0]
    assert ds.base[0]["row"] == rec["row"] and ds.base[0]["_path"] == rec["image"]


def test_a_cut_short_cache_file_is_made_again(volumes: Path, tmp_path: Path, cache: dict[str, Path]) -> None:
    # a file left half-written (a copy cut short, a full disk) used to fail every later run ("failed finding central
    # directory"); it is preprocessed again and replaced
    exp = prepare_experiment(_config(volumes, tmp_path, train={"cache": "disk"}))
    want = exp.datasets["val"][0]["image"]
    (folder,) = (cache["medtl"] / "cache").iterdir()
    for f in folder.glob("*.pt"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    again = prepare_experiment(_config(volumes, tmp_path, train={"cache": "disk"}))
    assert torch.equal(again.datasets["val"][0]["image"], want)
    for f in folder.glob("*.pt"):
        torch.load(f, weights_only=True)  # whole again


def test_a_cache_folder_that_cannot_be_made_is_an_error_for_disk_and_memory_for_auto(
    volumes: Path, tmp_path: Path, cache: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from medtl.errors import TrainingError

    cache["medtl"].mkdir(parents=True)
    (cache["medtl"] / "cache").write_text("a file where the cache folder should be")
    with pytest.raises(TrainingError, match="cannot make the disk cache folder .*train.cache: memory"):
        prepare_experiment(_config(volumes, tmp_path, train={"cache": "disk"}))
    exp = prepare_experiment(_config(volumes, tmp_path))  # auto: a 3D run still trains, from memory
    assert exp.datasets["train"].cache == "memory"
    assert "caching in memory" in caplog.text


# --------------------------------------------------------------------------------------------- processes sharing it


def _fill(images: list[str], cache_dir: Path, out: Path, size: int, cache: str = "disk", tmpdir: str = "") -> None:
    """In a process of its own: the samples of ``images`` through a dataset caching in ``cache_dir``, their digests
    written to ``out``."""
    import tempfile

    if tmpdir:  # the process's temporary folder (where MONAI's PersistentDataset wrote before moving)
        tempfile.tempdir = tmpdir
    cfg = load_config(
        {
            "data": {"manifest": "m.csv", "modality": "CT"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"size": [size] * 3},
        }
    )
    record = InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none"))
    records = [{"image": p, "label": 0, "row": i + 2} for i, p in enumerate(images)]
    ds = SampleDataset(
        records, build_pipeline(cfg, record), train=False, cache=cache, cache_dir=cache_dir, num_workers=2
    )
    out.write_text(json.dumps([hashlib.sha256(ds[i]["image"].numpy().tobytes()).hexdigest() for i in range(len(ds))]))


def _forked(*args: Any, **kwargs: Any) -> None:
    torch.set_num_threads(1)  # as in a DataLoader worker: the parent's OpenMP pool is not the child's
    _fill(*args, **kwargs)


def _start(*args: Any, **kwargs: Any) -> Any:
    """:func:`_fill` in a forked process (it starts at once: the modules are already imported)."""
    proc = mp.get_context("fork").Process(target=_forked, args=args, kwargs=kwargs)
    proc.start()
    return proc


def _images(manifest: Path) -> list[str]:
    return sorted(str(p) for p in manifest.parent.glob("vol_*.nii.gz"))


def test_two_processes_filling_one_disk_cache_give_the_samples_of_no_cache(volumes: Path, tmp_path: Path) -> None:
    images = _images(volumes)
    shared = tmp_path / "cache"
    procs = [_start(images, shared, tmp_path / f"p{k}.json", 24) for k in range(2)]
    _fill(images, tmp_path / "unused", tmp_path / "ref.json", 24, cache="none")
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    want = json.loads((tmp_path / "ref.json").read_text())
    assert json.loads((tmp_path / "p0.json").read_text()) == want
    assert json.loads((tmp_path / "p1.json").read_text()) == want
    # one whole file per scan, no temporary or lock file left
    assert sorted(p.suffix for p in shared.iterdir()) == [".pt"] * len(images)


def test_a_run_never_reads_a_cache_file_another_process_is_writing(volumes: Path, tmp_path: Path) -> None:
    # the writer's temporary folder on another file system (a tmpfs /tmp, a node's scratch): MONAI's
    # PersistentDataset moved its files from there, i.e. copied them into their final name, where a reader could
    # load them half-written. This process reads every file that appears while the other writes them.
    shm = Path("/dev/shm")
    tmpdir = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else ""
    shared = tmp_path / "cache"
    shared.mkdir()
    writer = _start(_images(volumes), shared, tmp_path / "w.json", 128, tmpdir=tmpdir)
    whole: set[str] = set()
    failures: dict[str, str] = {}
    deadline = time.monotonic() + 120
    while writer.is_alive() and time.monotonic() < deadline:
        for f in shared.glob("*.pt"):  # each new file, read as soon as it has a name
            if f.name in whole or f.name in failures:
                continue
            try:
                torch.load(f, weights_only=True)
                whole.add(f.name)
            except Exception as exc:  # noqa: BLE001 - any failure to read is what this test looks for
                failures[f.name] = f"{type(exc).__name__}: {exc}"[:120]
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert whole  # files were read while the writer wrote
    assert failures == {}


# --------------------------------------------------------------------------------------------- workers


def test_num_workers_auto_uses_the_cores_of_the_run_on_a_gpu_and_none_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def cores(n: int, parallel: int = 1) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(n)), raising=False)
        monkeypatch.setenv(PARALLEL_ENV, str(parallel))

    cores(16)
    assert resolve_num_workers("auto", cuda=False) == 0  # workers would take the model's cores
    assert resolve_num_workers("auto", cuda=True) == 8  # min(cores - 1, 8)
    assert resolve_num_workers("auto", cuda=True, processes=2) == 7  # two DDP ranks on this machine: 8 cores each
    assert resolve_num_workers(3, cuda=True) == resolve_num_workers(3, cuda=False) == 3
    cores(16, parallel=4)  # compare --parallel 4: 4 cores per run, as for torch's threads
    assert cores_per_run() == 4 and resolve_num_workers("auto", cuda=True) == 3
    cores(4)
    assert resolve_num_workers("auto", cuda=True) == 3
    cores(1)
    assert resolve_num_workers("auto", cuda=True) == 0

    cores(6)
    ds = list(range(10))
    gpu = make_loader(ds, batch_size=2, train=True, num_workers="auto", on_gpu=True)  # type: ignore[arg-type]
    assert (gpu.num_workers, gpu.persistent_workers, gpu.pin_memory) == (5, True, True)
    cpu = make_loader(ds, batch_size=2, train=True, num_workers="auto", on_gpu=False)  # type: ignore[arg-type]
    assert (cpu.num_workers, cpu.persistent_workers, cpu.pin_memory) == (0, False, False)


def test_train_section_takes_auto_or_a_count(tmp_path: Path) -> None:
    base = {"data": {"manifest": str(tmp_path / "m.csv")}, "model": {"arch": "resnet18"}}
    assert load_config(base).train.num_workers == "auto" and load_config(base).train.cache == "auto"
    assert load_config({**base, "train": {"num_workers": 2}}).train.num_workers == 2
    with pytest.raises(Exception, match="num_workers"):
        load_config({**base, "train": {"num_workers": "many"}})
    assert load_config(base).augment.device == "cpu"
    with pytest.raises(Exception, match="device"):
        load_config({**base, "augment": {"device": "tpu"}})


def test_cache_auto_is_disk_for_volumes_and_memory_for_images(volumes: Path, tmp_path: Path) -> None:
    assert [resolve_cache("auto", m) for m in ("3d", "2.5d", "2d")] == ["disk", "disk", "memory"]
    assert resolve_cache("auto", "3d", has_dir=False) == "memory"
    assert resolve_cache("memory", "3d") == "memory" and resolve_cache("none", "3d") == "none"
    cfg = load_config(_config(volumes, tmp_path))
    cfg.data.mode = "auto"  # read from the first scan: a volume
    records = [{"image": p, "row": 2} for p in _images(volumes)]
    assert cache_note(cfg, records).startswith("preprocessed scans: disk cache (train.cache auto, 3D volumes)")
    cfg.train.cache = "memory"
    assert cache_note(cfg, records).startswith("preprocessed scans: memory cache (train.cache memory)")


def test_workers_draw_the_same_augmentation_again_with_the_same_seed_and_worker_count(volumes: Path) -> None:
    cfg = load_config(
        _config(volumes, Path("unused"), augment={"enabled": True, "flips": ["left_right", "superior_inferior"]})
    )
    record = InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none"))
    records = [{"image": p, "label": 0, "row": i} for i, p in enumerate(_images(volumes))]

    def batches() -> list[torch.Tensor]:
        torch.manual_seed(0)
        ds = SampleDataset(records, build_pipeline(cfg, record), train=True, cache="memory", seed=3)
        loader = make_loader(ds, batch_size=4, train=True, num_workers=1, on_gpu=False)
        return [b["image"] for epoch in range(2) for b in loader]

    first, second = batches(), batches()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


# --------------------------------------------------------------------------------------------- batch augmentation


def _augment_config(tmp_path: Path, **augment: Any) -> Any:
    return load_config(
        {
            "data": {"manifest": str(tmp_path / "m.csv")},
            "model": {"arch": "resnet18_3d"},
            "augment": {"enabled": True, "device": "gpu", **augment},
        }
    )


def _flip_pattern(before: torch.Tensor, after: torch.Tensor, axes: tuple[int, ...]) -> tuple[int, ...] | None:
    """Which of ``axes`` (spatial) turn sample ``before`` into ``after``, or None when no combination does."""
    for mask in range(2 ** len(axes)):
        dims = [a + 1 for k, a in enumerate(axes) if mask >> k & 1]
        if torch.equal(torch.flip(before, dims=dims) if dims else before, after):
            return tuple(a for k, a in enumerate(axes) if mask >> k & 1)
    return None


def test_batch_flips_move_image_and_mask_together_at_the_rate_of_the_sample_flips(tmp_path: Path) -> None:
    cfg = _augment_config(tmp_path, flips=["left_right", "anterior_posterior", "superior_inferior"], flip_prob=0.3)
    aug = BatchAugment(cfg, 3, seed=1)
    gen = torch.Generator().manual_seed(0)
    flipped = {0: 0, 1: 0, 2: 0}
    n = 0
    for _ in range(50):
        image = torch.rand(8, 1, 5, 6, 7, generator=gen)
        mask = (image > 0.5).long()
        out = aug({"image": image, "mask": mask, "label": torch.zeros(8)})
        assert out["mask"].dtype == torch.long and torch.equal(out["mask"], (out["image"] > 0.5).long())
        for i in range(8):
            pattern = _flip_pattern(image[i], out["image"][i], (0, 1, 2))
            assert pattern is not None  # each sample: its own flips, nothing else
            for axis in pattern:
                flipped[axis] += 1
        n += 8
    # the sample-side pipeline of the same config (augment.device: cpu) over as many samples
    sample_side = augmentation(cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"device": "cpu"})}), 3)
    for t in sample_side:
        t.set_random_state(seed=2)
    sample_flips = {0: 0, 1: 0, 2: 0}
    for _ in range(n):
        x = torch.rand(1, 5, 6, 7, generator=gen)
        y = {"image": x}
        for t in sample_side:
            y = t(y)
        for axis in _flip_pattern(x, y["image"], (0, 1, 2)) or ():
            sample_flips[axis] += 1
    sd = (n * 0.3 * 0.7) ** 0.5
    for axis in (0, 1, 2):  # both within 4 standard deviations of the configured rate
        assert abs(flipped[axis] - 0.3 * n) < 4 * sd, (axis, flipped[axis], n)
        assert abs(sample_flips[axis] - 0.3 * n) < 4 * sd, (axis, sample_flips[axis], n)


def test_batch_rotation_and_zoom_keep_the_mask_on_its_image(tmp_path: Path) -> None:
    cfg = _augment_config(tmp_path, flips=[], rotate_deg=20, zoom=0.15, affine_prob=0.5)
    aug = BatchAugment(cfg, 3, seed=0)
    zz, yy, xx = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), torch.arange(20.0), indexing="ij")
    changed = 0
    for k in range(6):
        c = 7 + k
        mask = (((zz - c) ** 2 + (yy - 10) ** 2 + (xx - 9) ** 2) <= 25).long()[None, None].repeat(4, 1, 1, 1, 1)
        image = mask.float() * 2.0 - 1.0  # -1 outside, 1 inside
        out = aug({"image": image, "mask": mask})
        assert out["mask"].dtype == torch.long and out["image"].dtype == torch.float32
        for i in range(4):
            if not torch.equal(out["mask"][i], mask[i]):
                changed += 1
            agree = ((out["image"][i] > 0).long() == out["mask"][i]).float().mean()
            assert agree > 0.98, float(agree)
    assert 3 <= changed <= 21  # about half of the 24 samples rotated or zoomed


def test_gpu_augmentation_leaves_the_samples_unflipped_and_a_run_flips_its_batches(
    volumes: Path, tmp_path: Path, cache: dict[str, Path]
) -> None:
    from medtl.train import fine_tune

    augment = {"enabled": True, "flips": ["left_right"], "flip_prob": 0.5, "device": "gpu"}
    cfg = load_config(_config(volumes, tmp_path, augment=augment))
    record = InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none"))
    pipeline = build_pipeline(cfg, record)
    assert "RandFlipTensord" not in pipeline.description["augment"]
    assert isinstance(batch_augmentation(cfg, pipeline), BatchAugment)
    on_cpu = cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"device": "cpu"})})
    assert "RandFlipTensord" in build_pipeline(on_cpu, record).description["augment"]
    assert batch_augmentation(on_cpu, pipeline) is None

    seen: list[int] = []
    original = BatchAugment.__call__

    def spy(self: BatchAugment, batch: dict[str, Any]) -> dict[str, Any]:
        seen.append(int(batch["image"].shape[0]))
        return original(self, batch)

    BatchAugment.__call__ = spy  # type: ignore[method-assign]
    try:
        result = fine_tune(
            _config(
                volumes,
                tmp_path / "runs",
                model={"arch": "resnet10_3d"},
                augment=augment,
                train={"epochs": 1, "precise_bn_batches": 0},
            ),
            quiet=True,
        )
    finally:
        BatchAugment.__call__ = original  # type: ignore[method-assign]
    assert seen and all(n == 4 for n in seen)  # training batches only (6 training scans: one batch of 4)
    state = torch.load(result.run_dir / "last.ckpt", weights_only=True)["batch_augment"]
    fresh = np.random.RandomState(0).get_state()
    assert (state["keys"], state["pos"]) != (fresh[1].tolist(), fresh[2])  # the generator drew, and is saved
