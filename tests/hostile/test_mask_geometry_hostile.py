"""Hostile masks and DICOM SEGs on the wrong grid: refused in one line naming both files, never sampled sparsely or
placed a few voxels off; masks on the image's grid up to axis order, direction and a whole-voxel shift are placed
exactly, in 2D as in 3D.

Every input is built here (pydicom, highdicom, nibabel into ``tmp_path``); each refusal has a good twin that is
accepted, so that a refusal cannot pass for a check.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers.dicom import highdicom_seg, write_radiograph, write_series
from monai.data import MetaTensor

from medtl.errors import DataLoadError
from medtl.io import read_scan
from medtl.io.dicom_seg import read_dicom_seg
from medtl.transforms.checks import ExpectScan
from medtl.transforms.record import InputRecord
from medtl.transforms.segmentation import check_mask

hd = pytest.importorskip("highdicom")

CLASSES = ["background", "organ", "lesion"]
SLICES, ROWS, COLS = 4, 8, 10
SPACING = 0.5  # mm, square pixels


# ------------------------------------------------------------------------------------------------ DICOM SEG


def _series(folder: Path, *, patient_id: str = "PAT-A") -> list[pydicom.Dataset]:
    """An axial CT series of 4 slices x 8 rows x 10 columns (0.5 x 0.5 mm, 2 mm apart); file ``s{k}.dcm`` is slice k
    (ascending z). Returns the datasets in slice order, with the type-2 attributes highdicom copies."""
    raw = np.random.default_rng(0).integers(0, 2000, size=(SLICES, ROWS, COLS)).astype(np.int16)
    write_series(
        folder,
        raw,
        origin=(-20.0, -15.0, 30.0),
        pixel_spacing=(SPACING, SPACING),
        slice_spacing=2.0,
        patient_id=patient_id,
        names=[f"s{k}.dcm" for k in range(SLICES)],
    )
    out = []
    for k in range(SLICES):
        ds = pydicom.dcmread(folder / f"s{k}.dcm")
        for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber"):
            setattr(ds, keyword, getattr(ds, keyword, ""))
        ds.ReferringPhysicianName = ""
        out.append(ds)
    return out


def _headers(datasets: list[pydicom.Dataset], **tags) -> list[pydicom.Dataset]:
    """Header copies of ``datasets`` (no pixel data) with ``tags`` set: sources of a SEG on another grid."""
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        del ds.PixelData
        for keyword, value in tags.items():
            setattr(ds, keyword, value(ds) if callable(value) else value)
        out.append(ds)
    return out


def _labels(rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """A label frame per slice (slices, rows, cols): an "organ" block and a "lesion" block, asymmetric."""
    labels = np.zeros((SLICES, rows, cols), np.uint8)
    labels[1:3, 1 : rows // 2, 1 : cols // 2] = 1
    labels[2:4, rows // 2 : rows - 1, cols // 2 + 1 : cols] = 2
    return labels


def _write_seg(sources: list[pydicom.Dataset], pixels: np.ndarray, path: Path) -> Path:
    highdicom_seg(sources, pixels, ("organ", "lesion")).save_as(path)
    return path


def test_a_seg_on_the_images_own_grid_is_read_voxel_for_voxel(tmp_path: Path) -> None:
    """The good twin of the refusals below."""
    datasets = _series(tmp_path / "ct")
    labels = _labels()
    seg = _write_seg(_headers(datasets), labels, tmp_path / "seg.dcm")
    mask = read_dicom_seg(seg, read_scan(tmp_path / "ct"), classes=CLASSES, image_path=str(tmp_path / "ct"))
    np.testing.assert_array_equal(np.asarray(mask[0]), labels.transpose(2, 1, 0))


def test_a_seg_at_twice_the_pixel_spacing_is_refused_not_read_as_a_sparse_checkerboard(tmp_path: Path) -> None:
    # the same field of view at half the resolution: SEG pixel (r, c) has the centre of image voxel (2c, 2r), so
    # every pixel lands on a voxel centre and the old reader filled one voxel in four
    datasets = _series(tmp_path / "ct")
    sources = _headers(datasets, Rows=ROWS // 2, Columns=COLS // 2, PixelSpacing=[2 * SPACING, 2 * SPACING])
    seg = _write_seg(sources, _labels(ROWS // 2, COLS // 2), tmp_path / "half-res-seg.dcm")
    with pytest.raises(DataLoadError) as err:
        read_dicom_seg(seg, read_scan(tmp_path / "ct"), classes=CLASSES, image_path=str(tmp_path / "ct"))
    message = str(err.value)
    assert "\n" not in message
    assert str(seg) in message and str(tmp_path / "ct") in message
    assert "PixelSpacing 1 x 1 mm" in message and "0.5 x 0.5 mm" in message


def test_a_seg_whose_rows_run_diagonally_across_the_voxels_is_refused(tmp_path: Path) -> None:
    # frames rotated 45 degrees in plane with pixels sqrt(2) x 0.5 mm apart: each pixel centre is a voxel centre
    # (steps of one voxel along both x and y), yet the frame samples the slice along diagonals
    datasets = _series(tmp_path / "ct")
    c = float(np.sqrt(0.5))
    step = float(np.sqrt(2) * SPACING)

    def start(ds: pydicom.Dataset) -> list[float]:  # the centre of voxel (i 4, j 0) of the slice
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        return [x + 4 * SPACING, y, z]

    sources = _headers(
        datasets,
        Rows=4,
        Columns=4,
        ImageOrientationPatient=[c, c, 0.0, -c, c, 0.0],
        PixelSpacing=[step, step],
        ImagePositionPatient=start,
    )
    pixels = np.zeros((SLICES, 4, 4), np.uint8)
    pixels[1:3, 0:2, 0:3] = 1
    seg = _write_seg(sources, pixels, tmp_path / "diagonal-seg.dcm")
    with pytest.raises(DataLoadError, match="ImageOrientationPatient") as err:
        read_dicom_seg(seg, read_scan(tmp_path / "ct"), classes=CLASSES, image_path=str(tmp_path / "ct"))
    assert str(seg) in str(err.value) and str(tmp_path / "ct") in str(err.value)


def test_a_seg_offset_by_half_a_pixel_in_plane_is_refused(tmp_path: Path) -> None:
    datasets = _series(tmp_path / "ct")

    def shifted(ds: pydicom.Dataset) -> list[float]:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        return [x + SPACING / 2, y, z]

    seg = _write_seg(_headers(datasets, ImagePositionPatient=shifted), _labels(), tmp_path / "shifted-seg.dcm")
    with pytest.raises(DataLoadError, match="0.5 voxels off") as err:
        read_dicom_seg(seg, read_scan(tmp_path / "ct"), classes=CLASSES, image_path=str(tmp_path / "ct"))
    assert str(seg) in str(err.value) and str(tmp_path / "ct") in str(err.value)


def _without_references(path: Path) -> Path:
    ds = pydicom.dcmread(path)
    del ds.ReferencedSeriesSequence
    ds.save_as(path)
    return path


def _retag(folder: Path, **tags) -> None:
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(f)


def test_a_seg_without_series_references_on_another_frame_of_reference_and_patient_is_refused(
    tmp_path: Path,
) -> None:
    datasets = _series(tmp_path / "a", patient_id="PAT-A")
    seg = _without_references(_write_seg(_headers(datasets), _labels(), tmp_path / "seg.dcm"))
    # the good twin: without its series references the SEG still reads on its own series
    image_a = read_scan(tmp_path / "a")
    np.testing.assert_array_equal(np.asarray(read_dicom_seg(seg, image_a, classes=CLASSES)[0]),
                                  _labels().transpose(2, 1, 0))  # fmt: skip
    # the same geometry, scanned in another frame of reference for another patient
    _series(tmp_path / "b", patient_id="PAT-B")
    with pytest.raises(DataLoadError, match="FrameOfReferenceUID") as err:
        read_dicom_seg(seg, read_scan(tmp_path / "b"), classes=CLASSES, image_path=str(tmp_path / "b"))
    assert str(seg) in str(err.value) and str(tmp_path / "b") in str(err.value) and "\n" not in str(err.value)


def test_a_seg_of_another_patient_is_refused_without_printing_either_id(tmp_path: Path) -> None:
    datasets = _series(tmp_path / "a", patient_id="MRN-4711-A")
    seg = _without_references(_write_seg(_headers(datasets), _labels(), tmp_path / "seg.dcm"))
    _series(tmp_path / "b", patient_id="MRN-0815-B")
    _retag(tmp_path / "b", FrameOfReferenceUID=datasets[0].FrameOfReferenceUID)  # one frame of reference
    with pytest.raises(DataLoadError, match="the SEG's PatientID differs from the image's") as err:
        read_dicom_seg(seg, read_scan(tmp_path / "b"), classes=CLASSES, image_path=str(tmp_path / "b"))
    message = str(err.value) + str(getattr(err.value, "fix", ""))
    assert "MRN" not in message and "4711" not in message and "0815" not in message
    assert str(seg) in message and str(tmp_path / "b") in message


# ------------------------------------------------------------------------------------------------ NIfTI masks

LONG = 2800  # voxels along x at 0.07 mm: a 196 mm field of fine voxels


def _fine_image() -> MetaTensor:
    affine = np.diag([0.07, 0.07, 0.07, 1.0])
    affine[:3, 3] = [-90.0, 12.0, 3.0]
    return MetaTensor(torch.zeros(1, LONG, 3, 2), affine=torch.as_tensor(affine))


def _fine_labels() -> np.ndarray:
    labels = np.zeros((LONG, 3, 2), np.float32)
    labels[100:2700, 1, :] = 1
    labels[2000:2100, 2, 1] = 2
    return labels


def test_a_mask_whose_affine_entries_match_to_1e_3_but_whose_far_voxels_are_38_voxels_off_is_refused() -> None:
    image = _fine_image()
    a = image.affine.numpy().copy()
    a[1, 0] = 9.5e-4  # y moves 0.00095 mm per voxel of x: 2.66 mm (38 voxels) at the far end
    mask = MetaTensor(torch.as_tensor(_fine_labels())[None], affine=torch.as_tensor(a))
    with pytest.raises(DataLoadError, match="differ in geometry") as err:
        check_mask(image, mask, CLASSES, "img.nii.gz", "mask.nii.gz")
    assert "voxel" in str(err.value) and "img.nii.gz" in str(err.value) and "mask.nii.gz" in str(err.value)
    # the good twin: the same mask on the image's affine
    good = MetaTensor(torch.as_tensor(_fine_labels())[None], affine=image.affine)
    assert np.array_equal(check_mask(image, good, CLASSES, "img.nii.gz", "mask.nii.gz")[0].numpy(), _fine_labels())


def test_a_flipped_mask_that_drifts_off_the_grid_is_refused_not_placed_by_whole_voxels() -> None:
    image = _fine_image()
    b = image.affine.numpy()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, LONG - 1  # mask voxel i' is image voxel LONG - 1 - i'
    data = _fine_labels()[::-1].copy()
    exact = b @ flip
    placed = check_mask(
        image, MetaTensor(torch.as_tensor(data)[None], affine=torch.as_tensor(exact)), CLASSES, "i", "m"
    )
    assert np.array_equal(placed[0].numpy(), _fine_labels())  # the good twin: placed exactly
    # y drifts 0.0009 voxel per voxel of x, from 0 at image voxel 0 to 2.5 voxels at the far end: every affine entry
    # of the map from image to mask voxels is within 1e-3 of a whole-voxel flip, which the old check accepted
    drift = exact.copy()
    drift[1, 0] = -0.9e-3 * 0.07
    drift[1, 3] += 0.9e-3 * 0.07 * (LONG - 1)
    mask = MetaTensor(torch.as_tensor(data)[None], affine=torch.as_tensor(drift))
    with pytest.raises(DataLoadError, match="differ in geometry"):
        check_mask(image, mask, CLASSES, "img.nii.gz", "mask.nii.gz")


# ------------------------------------------------------------------------------------------------ 2D masks


def _radiograph(tmp_path: Path, kind: str) -> Path:
    """A 2D image of 30 rows x 40 columns: a DICOM radiograph, or a one-slice NIfTI placed off the origin."""
    pixels = (np.arange(30 * 40).reshape(30, 40) % 700).astype(np.uint16)
    if kind == "dicom":
        return write_radiograph(tmp_path / "cxr.dcm", pixels, "PAT-9")
    affine = np.diag([-0.4, -0.4, 2.0, 1.0])
    affine[:3, 3] = [150.0, 120.0, -260.0]  # the first voxel 310 mm from the origin
    path = tmp_path / "cxr.nii.gz"
    nib.save(nib.Nifti1Image(pixels.T[:, :, None].astype(np.float32), affine), path)
    return path


def _mask_2d(labels: np.ndarray, affine: np.ndarray, case: str) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` (X, Y) of the image saved as a one-slice NIfTI another way, with the affine that places it."""
    if case == "flipped":
        move = np.eye(4)
        move[0, 0], move[0, 3] = -1.0, labels.shape[0] - 1
        return labels[::-1].copy(), affine @ move
    if case == "transposed":
        move = np.eye(4)
        move[:2, :2] = [[0.0, 1.0], [1.0, 0.0]]
        return labels.T.copy(), affine @ move
    big = np.zeros((labels.shape[0] + 9, labels.shape[1] + 6), labels.dtype)  # a larger crop
    big[3 : 3 + labels.shape[0], 4 : 4 + labels.shape[1]] = labels
    move = np.eye(4)
    move[:2, 3] = [-3.0, -4.0]
    return big, affine @ move


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
@pytest.mark.parametrize("case", ["flipped", "transposed", "crop"])
def test_2d_masks_saved_another_way_are_placed_exactly_like_3d_ones(tmp_path: Path, kind: str, case: str) -> None:
    image_path = _radiograph(tmp_path, kind)
    squeeze = ExpectScan(dims=2, channels=1)  # what the 2D pipeline does to images and masks
    image = squeeze(read_scan(image_path))
    assert tuple(image.shape[1:]) == (40, 30)
    labels = np.zeros((40, 30), np.uint8)
    labels[5:20, 3:9] = 1
    labels[30:35, 20:28] = 2
    affine = np.asarray(image.affine, dtype=np.float64)
    data, mask_affine = _mask_2d(labels, affine, case)
    nib.save(nib.Nifti1Image(data[:, :, None], mask_affine), tmp_path / "mask.nii.gz")
    mask = squeeze(read_scan(tmp_path / "mask.nii.gz"))
    placed = check_mask(image, mask, CLASSES, str(image_path), "mask.nii.gz")
    assert tuple(placed.shape) == (1, 40, 30)
    np.testing.assert_array_equal(np.asarray(placed[0]), labels)
    assert np.allclose(np.asarray(placed.affine), affine)
    # and a shift by part of a pixel is still refused in 2D
    off = mask_affine.copy()
    off[:3, 3] += 0.3 * affine[:3, 0]
    nib.save(nib.Nifti1Image(data[:, :, None], off), tmp_path / "off.nii.gz")
    with pytest.raises(DataLoadError, match="differ in"):
        check_mask(image, squeeze(read_scan(tmp_path / "off.nii.gz")), CLASSES, str(image_path), "off.nii.gz")


def test_the_2d_pipeline_reads_a_transposed_mask_like_the_mask_on_the_images_grid(tmp_path: Path) -> None:
    from medtl.config import load_config
    from medtl.transforms.segmentation import build_segmentation_pipeline
    from medtl.weights.sources import Normalization

    image_path = _radiograph(tmp_path, "dicom")
    image = read_scan(image_path)
    labels = np.zeros((40, 30), np.uint8)
    labels[5:20, 3:9] = 1
    labels[30:35, 20:28] = 2
    affine = np.asarray(image.affine, dtype=np.float64)
    nib.save(nib.Nifti1Image(labels[:, :, None], affine), tmp_path / "same.nii.gz")
    data, mask_affine = _mask_2d(labels, affine, "transposed")
    nib.save(nib.Nifti1Image(data[:, :, None], mask_affine), tmp_path / "transposed.nii.gz")
    cfg = load_config(
        {
            "data": {"manifest": "unused.csv", "modality": "XR", "mode": "2d"},
            "model": {"arch": "resnet18"},
            "preprocess": {"size": [30, 40]},
            "segmentation": {"classes": CLASSES},
        }
    )
    record = InputRecord.of(modality="XR", mode="2d", scan_dims=2, in_channels=1, normalization=Normalization("none"))
    pipe = build_segmentation_pipeline(cfg, record)
    outs = [
        pipe.pre({"image": str(image_path), "mask": str(m), "_path": str(image_path), "_mask_path": str(m)})
        for m in (tmp_path / "same.nii.gz", tmp_path / "transposed.nii.gz")
    ]
    assert torch.equal(outs[0]["mask"], outs[1]["mask"])
    np.testing.assert_array_equal(outs[0]["mask"][0].numpy(), labels.T)  # (rows, columns) as displayed
