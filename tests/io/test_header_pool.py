"""Reading many headers with helper processes: same headers, same order, same reasons as reading them in one process."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.dicom import write_series

import medtl.io.dicom.files as dicom_files
from medtl.io.dicom import read_headers


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Three small series, a text file posing as DICOM and a DICOM file cut inside its header, in a fixed order;
    helpers allowed from two files."""
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(dicom_files, "_POOL_MIN_FILES", 2)
    root = tmp_path / "tree"
    for k in range(3):
        write_series(root / f"s{k}", np.full((4, 4, 4), k, np.int16), patient_id=f"P{k}", description=f"d{k}")
    (root / "notes.dcm").write_bytes(b"not a DICOM file at all" * 10)
    good = sorted((root / "s1").iterdir())[0]
    (root / "cut.dcm").write_bytes(good.read_bytes()[:200])
    return sorted(p for p in root.rglob("*") if p.is_file())


def _as_dicts(results: list) -> list:
    return [r if isinstance(r, str) else dataclasses.asdict(r) for r in results]


def _record_pids(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Each process that reads a helper's part writes its PID to ``log`` (forked, so the patch is inherited)."""
    real = dicom_files._read_chunk

    def recording(files):
        with open(log, "a") as fp:
            fp.write(f"{os.getpid()}\n")
        return real(files)

    monkeypatch.setattr(dicom_files, "_read_chunk", recording)


class _FakeContext:
    """A multiprocessing context whose processes cannot start (``fail``) or must not be asked for."""

    Pipe = staticmethod(multiprocessing.Pipe)

    def __init__(self, method: str, fail: BaseException) -> None:
        self.method, self.fail, self.asked = method, fail, 0

    def get_start_method(self) -> str:
        return self.method

    def Process(self, *args, **kwargs):  # noqa: N802 - the multiprocessing name
        self.asked += 1
        fail = self.fail

        class P:
            def start(self):
                raise fail

        return P()


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_helpers_give_what_one_process_gives(paths: list[Path], workers: int) -> None:
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


def test_helper_processes_do_the_reading(paths: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parts after the first are read in other processes (each one records its process ID)."""
    _record_pids(monkeypatch, tmp_path / "pids")
    read_headers(paths, workers=3)
    pids = (tmp_path / "pids").read_text().split()
    assert len(pids) == 2 and str(os.getpid()) not in pids and len(set(pids)) == 2


def test_a_helper_that_dies_leaves_its_part_to_this_process(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _as_dicts(read_headers(paths, workers=1))
    monkeypatch.setattr(dicom_files, "_read_chunk", lambda files: os._exit(3))  # killed before it sends anything
    assert _as_dicts(read_headers(paths, workers=2)) == expected

    def broken(files):
        raise RuntimeError("boom")

    monkeypatch.setattr(dicom_files, "_read_chunk", broken)  # fails: sends None
    assert _as_dicts(read_headers(paths, workers=2)) == expected


def test_no_helpers_where_processes_cannot_start(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _as_dicts(read_headers(paths, workers=1))
    context = _FakeContext("fork", OSError(11, "Resource temporarily unavailable"))
    monkeypatch.setattr(dicom_files, "_pool_context", lambda: context)
    assert _as_dicts(read_headers(paths, workers=2)) == expected and context.asked == 1


def test_a_daemon_process_reads_every_header_itself(
    paths: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DataLoader worker is a daemon and may not start processes: no helpers, same headers."""
    expected = _as_dicts(read_headers(paths, workers=1))

    class Daemon:
        daemon = True

    monkeypatch.setattr(dicom_files.mp, "current_process", lambda: Daemon())
    _record_pids(monkeypatch, tmp_path / "pids")
    assert _as_dicts(read_headers(paths, workers=3)) == expected
    assert not (tmp_path / "pids").exists()


def test_spawned_helpers_only_for_large_sets(paths: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where helpers are spawned (they import medtl first), a few hundred files are read in this process."""
    expected = _as_dicts(read_headers(paths, workers=1))
    context = _FakeContext("spawn", AssertionError("no helper for a small set"))
    monkeypatch.setattr(dicom_files, "_pool_context", lambda: context)
    assert _as_dicts(read_headers(paths, workers=2)) == expected and context.asked == 0
