"""DICOM SEG in and out: SEG masks land on the grid of the image medtl reads (frames placed by position), the
segmentation pipeline reads them like NIfTI masks, predicted masks come back from a written SEG voxel for voxel,
and the sample SEG generator is deterministic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers.dicom import highdicom_seg, write_series

from medtl.errors import DataLoadError
from medtl.io import read_scan
from medtl.io.dicom_seg import SEGMENTATION_STORAGE, is_dicom_seg, read_dicom_seg, seg_to_label_map
from medtl.transforms.record import InputRecord

hd = pytest.importorskip("highdicom")

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
# 20 degrees about the patient's y axis, then the column direction along y: an oblique stack
TH = np.deg2rad(20)
OBLIQUE = (float(np.cos(TH)), 0.0, float(np.sin(TH)), 0.0, 1.0, 0.0)


def _sample_seg_module():
    spec = importlib.util.spec_from_file_location("medtl_sample_dicom_seg", SAMPLE / "dicom_seg.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _series(tmp_path: Path) -> tuple[Path, list[pydicom.Dataset], np.ndarray]:
    """An oblique series of 6 slices x 9 rows x 11 columns (files in shuffled order) and a label volume
    ``labels[k, r, c]`` for its slice k (ascending along the normal), row r, column c."""
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 2000, size=(6, 9, 11)).astype(np.int16)
    folder = tmp_path / "series"
    write_series(folder, raw, iop=OBLIQUE, pixel_spacing=(0.9, 0.6), slice_spacing=2.0, origin=(10.0, -5.0, 40.0))
    datasets = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    for ds in datasets:  # the patient and study attributes highdicom copies (type 2: present, if empty)
        for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID"):
            setattr(ds, keyword, getattr(ds, keyword, ""))
        for keyword in ("AccessionNumber", "ReferringPhysicianName"):
            setattr(ds, keyword, getattr(ds, keyword, ""))
    labels = np.zeros(raw.shape, dtype=np.uint8)
    labels[1:4, 2:6, 3:9] = 1  # "organ"
    labels[2:5, 6:8, 1:4] = 2  # "lesion"
    return folder, datasets, labels


def _position_rank(datasets: list[pydicom.Dataset]) -> list[int]:
    normal = np.cross(OBLIQUE[:3], OBLIQUE[3:])
    dist = [float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)) for ds in datasets]
    return list(np.argsort(np.argsort(dist)))


def _highdicom_seg(
    datasets: list[pydicom.Dataset], labels: np.ndarray, names: tuple[str, ...] = ("organ", "lesion"), **kw
) -> hd.seg.Segmentation:
    """A SEG written by highdicom itself (not medtl), its source frames in the datasets' (shuffled) order."""
    rank = _position_rank(datasets)
    pixels = np.stack([labels[rank[i]] for i in range(len(datasets))])
    return highdicom_seg(datasets, pixels, names, **kw)


def test_seg_frames_are_placed_by_their_positions_on_the_grid_medtl_reads(tmp_path: Path) -> None:
    folder, datasets, labels = _series(tmp_path)
    rng = np.random.default_rng(0)
    shuffled = [datasets[i] for i in rng.permutation(len(datasets))]
    path = tmp_path / "seg.dcm"
    _highdicom_seg(shuffled, labels).save_as(path)
    assert is_dicom_seg(path) and not is_dicom_seg(folder) and not is_dicom_seg(next(folder.iterdir()))
    image = read_scan(folder)
    assert tuple(image.shape[1:]) == (11, 9, 6)  # (columns, rows, slices)
    # classes in another order than the segment numbers: matched by label
    mask = read_dicom_seg(path, image, classes=["background", "lesion", "organ"])
    assert tuple(mask.shape) == (1, 11, 9, 6)
    assert np.abs(np.asarray(mask.affine) - np.asarray(image.affine)).max() < 1e-9
    expected = np.select([labels == 1, labels == 2], [2, 1], 0).transpose(2, 1, 0)
    np.testing.assert_array_equal(np.asarray(mask[0]), expected)
    # without classes, the label value is the segment number
    np.testing.assert_array_equal(seg_to_label_map(path, image.affine, image.shape[1:]), labels.transpose(2, 1, 0))


def test_the_pipeline_reads_a_seg_mask_like_the_same_mask_as_nifti(tmp_path: Path) -> None:
    from medtl.config import load_config
    from medtl.transforms.segmentation import build_segmentation_pipeline
    from medtl.weights.sources import Normalization

    folder, datasets, labels = _series(tmp_path)
    _highdicom_seg(datasets, labels).save_as(tmp_path / "seg.dcm")
    image = read_scan(folder)
    nib.save(nib.Nifti1Image(labels.transpose(2, 1, 0).astype(np.uint8), np.asarray(image.affine)), tmp_path / "m.nii")
    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "CT", "mode": "3d"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"orientation": "RAS", "ct_window": [-1000, 1000]},
            "segmentation": {"classes": ["background", "organ", "lesion"], "patch_size": [16, 16, 16]},
        }
    )
    pipe = build_segmentation_pipeline(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    outs = [
        pipe.pre({"image": str(folder), "mask": str(mask), "_path": str(folder), "_mask_path": str(mask)})
        for mask in (tmp_path / "seg.dcm", tmp_path / "m.nii")
    ]
    assert torch.equal(outs[0]["mask"], outs[1]["mask"])
    assert sorted(torch.unique(outs[0]["mask"]).tolist()) == [0, 1, 2]


def test_seg_errors_are_one_line_and_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, datasets, labels = _series(tmp_path)
    image = read_scan(folder)
    # a segment that names no class
    _highdicom_seg(datasets, labels, names=("organ", "tumour")).save_as(tmp_path / "unknown.dcm")
    with pytest.raises(DataLoadError, match=r"segment\(s\) 2 'tumour' match none of segmentation.classes"):
        read_dicom_seg(tmp_path / "unknown.dcm", image, classes=["background", "organ", "lesion"])
    # two segments on one voxel: not a label map
    rank = _position_rank(datasets)
    one_hot = np.zeros((len(datasets), 9, 11, 2), dtype=np.uint8)
    for i in range(len(datasets)):
        one_hot[i, ..., 0] = labels[rank[i]] == 1
        one_hot[i, ..., 1] = labels[rank[i]] == 1  # the same voxels
    _highdicom_seg(datasets, labels, pixel_array=one_hot).save_as(tmp_path / "overlap.dcm")
    with pytest.raises(DataLoadError, match=r"segments 1 'organ' and 2 'lesion' overlap") as err:
        read_dicom_seg(tmp_path / "overlap.dcm", image, classes=["background", "organ", "lesion"])
    assert "\n" not in str(err.value)
    # a SEG of another series
    other = tmp_path / "other"
    write_series(other, np.zeros((6, 9, 11), np.int16), iop=OBLIQUE, pixel_spacing=(0.9, 0.6), slice_spacing=2.0)
    with pytest.raises(DataLoadError, match="segments series .* not .*other"):
        read_dicom_seg(tmp_path / "overlap.dcm", read_scan(other))
    # highdicom not installed
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(DataLoadError, match=r"pip install 'medtl\[seg\]'"):
        read_dicom_seg(tmp_path / "unknown.dcm", image)


def test_a_predicted_mask_written_as_seg_reads_back_voxel_for_voxel(tmp_path: Path) -> None:
    from medtl.config import load_config
    from medtl.tasks.segmentation import SegmentationTask
    from medtl.train.predict import write_prediction_seg
    from medtl.train.seg_inference import segment_scans
    from medtl.transforms.segmentation import build_inference_transforms
    from medtl.weights.sources import Normalization

    class Threshold(torch.nn.Module):  # class 1 where the windowed intensity is above 0.5: a known answer
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            fg = (x[:, :1] > 0.5).float()
            return torch.cat([1 - fg, fg], 1) * 10

    folder, datasets, _ = _series(tmp_path)
    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "CT", "mode": "3d"},
            "model": {"arch": "resnet10_3d"},
            "preprocess": {"orientation": "RAS", "ct_window": [-1024, 976]},
            "segmentation": {"classes": ["background", "bright"], "patch_size": [16, 16, 16]},
        }
    )
    transforms = build_inference_transforms(
        cfg,
        InputRecord.of(modality="CT", mode="3d", scan_dims=3, in_channels=1, normalization=Normalization("none")),
    )
    task = SegmentationTask(["background", "bright"], roi_size=[16, 16, 16], spatial_dims=3)
    rows = segment_scans(Threshold(), task, transforms, [{"image": str(folder)}], tmp_path / "out")
    mask_file = Path(rows[0]["mask_file"])
    nifti = np.asarray(nib.load(mask_file).dataobj)
    assert 0 < nifti.sum() < nifti.size  # a mask with both classes
    seg_file = write_prediction_seg(
        mask_file, folder, classes=["background", "bright"], arch="resnet10_3d", weights="scratch", run_name="r"
    )
    assert seg_file == tmp_path / "out" / "series_seg.dcm"
    image = read_scan(folder)
    # medtl's reader
    back = read_dicom_seg(seg_file, image, classes=["background", "bright"])
    np.testing.assert_array_equal(np.asarray(back[0]), nifti)
    # highdicom directly, frame by source instance: frame[r, c] is voxel (c, r, k) of the slice's rank k
    seg = hd.seg.segread(seg_file)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY"
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    referenced = {
        str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence
    }
    assert referenced == set(uids)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    for frame, k in zip(pixels, _position_rank(datasets), strict=True):
        np.testing.assert_array_equal(frame, nifti[:, :, k].T)
    description = seg.SegmentSequence[0]
    assert description.SegmentLabel == "bright"
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "medtl" and algorithm.AlgorithmVersion == "resnet10_3d scratch"


def test_sample_seg_is_deterministic_and_lies_on_its_ct_series(tmp_path: Path) -> None:
    module = _sample_seg_module()
    a = module.write_ct_seg(tmp_path / "a", ct_dir=SAMPLE / "ct")
    b = module.write_ct_seg(tmp_path / "b", ct_dir=SAMPLE / "ct")
    assert a == b and len(a) == 1
    name = a[0]["mask"]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    _, folder, labels = module.first_nodule_study()
    image = read_scan(SAMPLE / "ct" / folder)
    mask = np.asarray(read_dicom_seg(tmp_path / "a" / name, image, classes=["background", "lung", "nodule"])[0])
    np.testing.assert_array_equal(mask, labels)  # the phantom's own labels, voxel for voxel
    hu = np.asarray(image[0])
    assert np.median(hu[mask == 1]) < -600 and np.median(hu[mask == 0]) < -600  # lung; air outside the body
    assert np.median(hu[mask == 2]) > -300 and (mask == 2).sum() > 20  # the nodule is soft tissue


def test_a_radiograph_mask_goes_to_seg_and_back_pixel_for_pixel(tmp_path: Path) -> None:
    from helpers.dicom import write_radiograph

    from medtl.io.dicom_seg_write import write_dicom_seg

    path = write_radiograph(tmp_path / "cxr.dcm", np.zeros((30, 40), np.uint16), "PAT-9")  # 30 rows, 40 columns
    image = read_scan(path)
    assert tuple(image.shape[1:]) == (40, 30)
    mask = np.zeros((40, 30, 1), np.uint8)
    mask[5:20, 3:9, 0] = 1  # not symmetric: a transposed frame would not match
    seg_file = write_dicom_seg(
        mask, image.affine, path, tmp_path / "cxr_seg.dcm", classes=["bg", "lung"], algorithm_version="v"
    )
    back = read_dicom_seg(seg_file, image, classes=["bg", "lung"])
    np.testing.assert_array_equal(np.asarray(back[0]), mask[..., 0])
    # highdicom 0.28 writes this SEG but its segread refuses it (pixel measures without a slice thickness): pydicom
    seg = pydicom.dcmread(seg_file)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.NumberOfFrames == 1
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
        pydicom.dcmread(path).SOPInstanceUID
    )
    np.testing.assert_array_equal(seg.pixel_array, mask[..., 0].T)
