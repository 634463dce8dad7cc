"""Reading many headers with helper processes: same headers, same order, same reasons as reading them in one process."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import write_series

import medtl.io.dicom.files as dicom_files
from medtl.io.dicom import read_headers


def _tree(root: Path) -> list[Path]:
    """Three small series, a text file posing as DICOM and a DICOM file cut inside its header, in a fixed order."""
    for k in range(3):
        write_series(root / f"s{k}", np.full((4, 4, 4), k, np.int16), patient_id=f"P{k}", description=f"d{k}")
    (root / "notes.dcm").write_bytes(b"not a DICOM file at all" * 10)
    good = sorted((root / "s1").iterdir())[0]
    (root / "cut.dcm").write_bytes(good.read_bytes()[:200])
    return sorted(p for p in root.rglob("*") if p.is_file())


def _as_dicts(results: list) -> list:
    return [r if isinstance(r, str) else dataclasses.asdict(r) for r in results]


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_helpers_give_what_one_process_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    paths = _tree(tmp_path / "tree")
    one = read_headers(paths, workers=1)
    many = read_headers(paths, workers=workers, sizes=[p.stat().st_size for p in paths])
    assert _as_dicts(many) == _as_dicts(one)
    readable = [p for p in paths if p.name != "notes.dcm"]
    assert [h.path for h in many if not isinstance(h, str)] == readable  # in order, as Path objects
    assert all(type(h.path) is type(readable[0]) for h in many if not isinstance(h, str))
    (reason,) = [r for r in many if isinstance(r, str)]
    assert "notes.dcm is not a DICOM file" in reason
    cut = next(h for h in many if not isinstance(h, str) and h.path.name == "cut.dcm")
    assert not cut.has_pixels


def test_helper_processes_do_the_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parts after the first are read in other processes (each one records its process ID)."""
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    paths = _tree(tmp_path / "tree")
    log = tmp_path / "pids"
    real = dicom_files._read_chunk

    def recording(files):  # runs in the helper (forked, so the patch is inherited)
        with open(log, "a") as fp:
            fp.write(f"{os.getpid()}\n")
        return real(files)

    monkeypatch.setattr(dicom_files, "_read_chunk", recording)
    read_headers(paths, workers=3)
    pids = log.read_text().split()
    assert len(pids) == 2 and str(os.getpid()) not in pids and len(set(pids)) == 2


def test_a_helper_that_dies_leaves_its_part_to_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    paths = _tree(tmp_path / "tree")
    expected = _as_dicts(read_headers(paths, workers=1))
    monkeypatch.setattr(dicom_files, "_read_chunk", lambda files: os._exit(3))  # killed before it sends anything
    assert _as_dicts(read_headers(paths, workers=2)) == expected

    def broken(files):
        raise RuntimeError("boom")

    monkeypatch.setattr(dicom_files, "_read_chunk", broken)  # fails: sends None
    assert _as_dicts(read_headers(paths, workers=2)) == expected


def test_no_helpers_where_processes_cannot_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    paths = _tree(tmp_path / "tree")
    expected = _as_dicts(read_headers(paths, workers=1))

    class NoProcesses:
        Pipe = staticmethod(__import__("multiprocessing").Pipe)

        def get_start_method(self):
            return "fork"

        def Process(self, *args, **kwargs):  # noqa: N802 - the multiprocessing name
            class P:
                def start(self):
                    raise OSError(11, "Resource temporarily unavailable")

            return P()

    monkeypatch.setattr(dicom_files, "_pool_context", lambda: NoProcesses())
    assert _as_dicts(read_headers(paths, workers=2)) == expected


def test_a_daemon_process_reads_every_header_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataLoader worker is a daemon and may not start processes: no helpers, same headers."""
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    paths = _tree(tmp_path / "tree")
    expected = _as_dicts(read_headers(paths, workers=1))

    class Daemon:
        daemon = True

    monkeypatch.setattr(dicom_files.mp, "current_process", lambda: Daemon())
    log = tmp_path / "pids"
    real = dicom_files._read_chunk

    def recording(files):
        with open(log, "a") as fp:
            fp.write(f"{os.getpid()}\n")
        return real(files)

    monkeypatch.setattr(dicom_files, "_read_chunk", recording)
    assert _as_dicts(read_headers(paths, workers=3)) == expected
    assert not log.exists()


def test_spawned_helpers_only_for_large_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where helpers are spawned (they import medtl first), a few hundred files are read in this process."""
    import multiprocessing

    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    paths = _tree(tmp_path / "tree")
    expected = _as_dicts(read_headers(paths, workers=1))
    started = []

    class Spawn:
        Pipe = staticmethod(multiprocessing.Pipe)

        def get_start_method(self):
            return "spawn"

        def Process(self, *args, **kwargs):  # noqa: N802 - the multiprocessing name
            started.append(args)
            raise AssertionError("no helper for a small set")

    monkeypatch.setattr(dicom_files, "_pool_context", lambda: Spawn())
    assert _as_dicts(read_headers(paths, workers=2)) == expected and started == []
