"""read_scan, inspect_path and convert on pydicom's and nibabel's own test files, and on broken input."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from helpers.dicom import random_raw, write_series
from pydicom.data import get_testdata_file

from medtl.errors import (
    InvalidHeaderError,
    MedtlError,
    MissingPixelDataError,
    NoImagesError,
    NotDicomError,
    SeriesNotFoundError,
    TruncatedFileError,
)
from medtl.io import convert, inspect_path, read_scan
from medtl.utils import hash_patient_id

DICOMDIR_TESTS = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def _pydicom_pixels(name: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name)).pixel_array


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_padded.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
    ],
)
def test_every_mr_small_encoding_decodes_to_the_same_pixels(name):
    reference = _pydicom_pixels("MR_small.dcm").astype(np.float32)  # explicit VR little endian, uncompressed
    scan = read_scan(get_testdata_file(name))
    assert scan.shape == (1, 64, 64)
    np.testing.assert_array_equal(scan[0].numpy(), reference.T)
    assert scan.meta["modality"] == "MR" and scan.meta["spacing"] == (0.3125, 0.3125)


@pytest.mark.parametrize(
    "name",
    [
        "JPEG2000.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPGExtended.dcm",
        "JPEG-LL.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
    ],
)
def test_compressed_files_match_pydicom(name):
    ds = pydicom.dcmread(get_testdata_file(name))
    scan = read_scan(get_testdata_file(name))
    ref = ds.pixel_array.astype(np.float32)
    if ref.ndim == 3:  # colour: (rows, cols, 3) -> (3, cols, rows)
        np.testing.assert_array_equal(scan.numpy(), ref.transpose(2, 1, 0))
        assert scan.meta["photometric"] == "RGB"
    else:
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        np.testing.assert_allclose(scan[0].numpy(), ref.T * slope + intercept)


def test_ct_small_is_in_hounsfield_units():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    scan = read_scan(get_testdata_file("CT_small.dcm"))
    assert float(ds.RescaleIntercept) == -1024
    np.testing.assert_array_equal(scan[0].numpy(), ds.pixel_array.T.astype(np.float32) - 1024)
    assert scan.meta["units"] == "HU" and scan.dtype.is_floating_point
    assert scan.meta["modality"] == "CT" and scan.meta["patient_id"] not in ("", str(ds.PatientID))
    assert scan.meta["patient_id"] == hash_patient_id(str(ds.PatientID))
    assert scan.meta["series_uid"] == ds.SeriesInstanceUID and scan.meta["study_uid"] == ds.StudyInstanceUID
    # the affine puts voxel (0, 0) at ImagePositionPatient, in RAS
    lps = np.array([float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(np.asarray(scan.affine)[:3, 3], lps * [-1, -1, 1])


def test_dicomdir_series_ct5n_and_mr700():
    ct = read_scan(DICOMDIR_TESTS / "98892001" / "CT5N")
    assert ct.shape == (1, 16, 16, 5) and ct.meta["modality"] == "CT" and ct.meta["units"] == "HU"
    assert ct.meta["spacing"][2] == pytest.approx(2.5)
    files = sorted((DICOMDIR_TESTS / "98892001" / "CT5N").iterdir())
    headers = [pydicom.dcmread(f) for f in files]
    headers.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    for k, d in enumerate(headers):
        expected = d.pixel_array.T * float(d.RescaleSlope) + float(d.RescaleIntercept)
        np.testing.assert_allclose(ct[0, :, :, k].numpy(), expected)
    mr700 = DICOMDIR_TESTS / "98892003" / "MR700"
    index = inspect_path(mr700)
    assert len(index.series) == 1 and index.series[0].n_slices == 7
    # MR700's slices are projections at different angles: not one regular volume, so an error names them
    with pytest.raises(MedtlError) as err:
        read_scan(mr700)
    assert "MR700" in str(err.value)


def test_dicomdir_tree_lists_every_series_and_the_files_without_pixels():
    index = inspect_path(DICOMDIR_TESTS)
    uids = {s.uid for s in index.series}
    assert len(uids) == len(index.series) >= 8
    ct5n = [s for s in index.series if s.files[0].parent.name == "CT5N"]
    assert ct5n and ct5n[0].kind == "volume" and ct5n[0].shape == (16, 16, 5) and ct5n[0].orientation == "axial (LPS)"
    gap = [s for s in index.series if s.files[0].parent.name == "CT2"]
    assert gap and any("gap" in p for p in gap[0].problems)
    reasons = {u.path.name: u.reason for u in index.unreadable}
    assert "no pixel data" in reasons["IM000000"] and "README" in reasons
    d = index.to_dict()
    assert set(d) == {"root", "series", "unreadable"} and d["series"][0]["patient_id"] != ""


def test_multiframe_rt_dose_uses_grid_offsets_and_scaling():
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    scan = read_scan(get_testdata_file("rtdose.dcm"))
    assert scan.shape == (1, 10, 10, 15) and scan.meta["spacing"] == (10.0, 10.0, 5.0)
    np.testing.assert_allclose(
        scan[0].numpy(), ds.pixel_array.transpose(2, 1, 0) * float(ds.DoseGridScaling), rtol=1e-6
    )


def test_enhanced_ct_uses_per_frame_positions():
    ds = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    scan = read_scan(get_testdata_file("eCT_Supplemental.dcm"))
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipps = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in ds.PerFrameFunctionalGroupsSequence
    ]
    along = [float(np.dot(p, normal)) for p in ipps]
    first = int(np.argmin(along))
    assert scan.shape == (1, 512, 512, 2) and scan.meta["spacing"][2] == pytest.approx(abs(along[1] - along[0]))
    affine = np.asarray(scan.affine)
    for k, f in enumerate([first, 1 - first]):  # voxel (0, 0, k) sits at that frame's position (LPS -> RAS)
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*(np.array(ipps[f]) * [-1, -1, 1]), 1], atol=1e-4)
    pvt = shared.PixelValueTransformationSequence[0]
    np.testing.assert_allclose(
        scan[0, :, :, 0].numpy(), ds.pixel_array[first].T * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
    )


def test_colour_images_are_rgb_channel_first():
    ybr = read_scan(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    rgb = read_scan(get_testdata_file("SC_rgb.dcm"))
    assert ybr.shape[0] == 3 and ybr.meta["photometric"] == "RGB" and rgb.meta["photometric"] == "RGB"
    ds = pydicom.dcmread(get_testdata_file("SC_rgb.dcm"))
    np.testing.assert_array_equal(rgb.numpy(), ds.pixel_array.transpose(2, 1, 0))
    palette = read_scan(get_testdata_file("examples_palette.dcm"))
    assert palette.shape[0] == 3 and palette.meta["photometric"] == "RGB"


def test_radiograph_monochrome1_inverted():
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    scan = read_scan(get_testdata_file("RG1_UNCI.dcm"))
    hi = (1 << int(ds.BitsStored)) - 1
    assert scan.meta["photometric"] == "MONOCHROME2" and scan.meta["modality"] == "CR"
    np.testing.assert_array_equal(scan[0].numpy(), hi - ds.pixel_array.T.astype(np.float32))


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("MR_truncated.dcm", TruncatedFileError),
        ("no_meta.dcm", NotDicomError),
        ("badVR.dcm", InvalidHeaderError),
        ("rtplan_truncated.dcm", MissingPixelDataError),
        ("rtplan.dcm", MissingPixelDataError),
        ("emri_small_jpeg_2k_lossless_too_short.dcm", TruncatedFileError),
    ],
)
def test_broken_files_give_typed_errors(name, error):
    path = get_testdata_file(name)
    with pytest.raises(error) as err:
        read_scan(path)
    assert path in str(err.value) and ";" in str(err.value)  # path, then the fix


def test_not_dicom_folder_and_missing_paths(tmp_path):
    (tmp_path / "a.bin").write_bytes(os.urandom(300))
    with pytest.raises(NotDicomError):
        read_scan(tmp_path / "a.bin")
    with pytest.raises(NoImagesError, match="a.bin"):
        read_scan(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match="empty folder"):
        read_scan(tmp_path / "empty")
    with pytest.raises(NoImagesError, match="does not exist"):
        read_scan(tmp_path / "nope")
    assert isinstance(NoImagesError("x"), FileNotFoundError)


def test_series_not_found_lists_available(tmp_path):
    write_series(tmp_path, random_raw((3, 4, 4)), series_uid="1.2.3.9", description="axial soft")
    with pytest.raises(SeriesNotFoundError) as err:
        read_scan(tmp_path, "coronal")
    assert "1.2.3.9" in str(err.value) and "axial soft" in str(err.value) and "medtl inspect" in str(err.value)
    assert read_scan(tmp_path, "AXIAL SOFT").meta["series_uid"] == "1.2.3.9"


def test_nibabel_files():
    anat = read_scan(NIBABEL_DATA / "anatomical.nii")
    img = nib.load(NIBABEL_DATA / "anatomical.nii")
    assert anat.shape == (1, *img.shape) and anat.meta["source_format"] == "nifti"
    np.testing.assert_allclose(np.asarray(anat.affine), img.affine)
    np.testing.assert_allclose(anat[0].numpy(), img.get_fdata(), rtol=1e-6)
    four = nib.load(NIBABEL_DATA / "example4d.nii.gz")
    all_volumes = read_scan(NIBABEL_DATA / "example4d.nii.gz")
    assert all_volumes.shape == (four.shape[3], *four.shape[:3])
    second = read_scan(NIBABEL_DATA / "example4d.nii.gz", volume=1)
    assert second.shape == (1, *four.shape[:3])
    np.testing.assert_allclose(second[0].numpy(), four.get_fdata()[..., 1], rtol=1e-6)
    np.testing.assert_allclose(second.meta["spacing"], four.header.get_zooms()[:3])
    with pytest.raises(MedtlError, match="volume=7"):
        read_scan(NIBABEL_DATA / "example4d.nii.gz", volume=7)


def test_truncated_nifti(tmp_path):
    data = (NIBABEL_DATA / "example4d.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedFileError, match="cut.nii.gz"):
        read_scan(tmp_path / "cut.nii.gz")


def test_convert_round_trip_keeps_values_and_world_positions(tmp_path):
    from helpers.dicom import oblique_iop

    raw = random_raw((6, 7, 9), seed=11)
    write_series(tmp_path / "dcm", raw, iop=oblique_iop(10, 30), slice_spacing=1.7)
    out = convert(tmp_path / "dcm", tmp_path / "out" / "scan.nii.gz")
    scan = read_scan(tmp_path / "dcm")
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, np.asarray(scan.affine), atol=1e-5)
    np.testing.assert_array_equal(img.get_fdata(), scan[0].numpy())
    back = read_scan(out)
    np.testing.assert_allclose(np.asarray(back.affine), np.asarray(scan.affine), atol=1e-5)
    assert img.get_data_dtype() == np.int16  # integral HU stored compactly


def test_default_series_skips_unstackable_localizers(tmp_path):
    from helpers.dicom import oblique_iop

    folder = tmp_path / "mixed"
    # a three-plane "localizer" series: more voxels, but not one volume
    for i, iop in enumerate([(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1), oblique_iop(0, 90)]):
        write_series(folder, random_raw((2, 16, 16), seed=i), series_uid="1.2.3.1", iop=iop, description="loc", seed=i)
    write_series(folder, random_raw((4, 8, 8)), series_uid="1.2.3.2", description="axial", seed=9)
    index = inspect_path(folder)
    assert {s.uid: s.stackable for s in index.series} == {"1.2.3.1": False, "1.2.3.2": True}
    assert read_scan(folder).meta["series_uid"] == "1.2.3.2"


def test_folder_with_nifti_and_dicom(tmp_path):
    write_series(tmp_path / "dcm", random_raw((3, 4, 4)), series_uid="1.2.3.7", description="d")
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "v.nii.gz")
    index = inspect_path(tmp_path)
    kinds = sorted(s.kind for s in index.series)
    assert kinds == ["nifti", "volume"]
    nifti = read_scan(tmp_path)  # the NIfTI is larger
    assert nifti.shape == (1, 5, 6, 7) and nifti.meta["spacing"] == (2.0, 2.0, 2.0)
    assert read_scan(tmp_path, "d").meta["series_uid"] == "1.2.3.7"
    assert read_scan(tmp_path, "v.nii.gz").shape == (1, 5, 6, 7)


CONTRACT_KEYS = {
    "filename_or_obj",
    "spacing",
    "spatial_shape",
    "original_affine",
    "modality",
    "units",
    "series_uid",
    "study_uid",
    "series_description",
    "patient_id",
    "source_format",
    "space",
    "affine",
}


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtdose.dcm", "SC_rgb.dcm"])
def test_meta_keys_of_the_contract(name):
    scan = read_scan(get_testdata_file(name))
    assert CONTRACT_KEYS <= set(scan.meta)
    assert scan.meta["affine"].dtype == torch.float64 and scan.meta["affine"].shape == (4, 4)
    assert len(scan.meta["spacing"]) == scan.ndim - 1 == len(scan.meta["spatial_shape"])
    if scan.ndim == 3:
        assert scan.meta["photometric"] in ("MONOCHROME2", "RGB")


@pytest.mark.parametrize(
    "name", ["emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm"]
)
def test_compressed_multiframe_matches_uncompressed(name):
    reference = read_scan(get_testdata_file("emri_small.dcm"))
    scan = read_scan(get_testdata_file(name))
    assert scan.shape == reference.shape == (1, 64, 64, 10)
    np.testing.assert_array_equal(scan.numpy(), reference.numpy())


def test_dicomdir_ct2_slice_far_from_the_others_is_a_gap():
    from medtl.errors import GeometryError

    with pytest.raises(GeometryError) as err:
        read_scan(DICOMDIR_TESTS / "77654033" / "CT2")
    assert "gap of 202.500 mm" in str(err.value) and "'Routine Brain'" in str(err.value)


def test_file_meta_without_transfer_syntax_uses_the_detected_encoding():
    ds = pydicom.dcmread(get_testdata_file("OT-PAL-8-face.dcm"), force=True)
    assert "TransferSyntaxUID" not in ds.file_meta
    scan = read_scan(get_testdata_file("OT-PAL-8-face.dcm"))
    assert scan.shape == (3, ds.Columns, ds.Rows) and scan.meta["photometric"] == "RGB"


def test_dicomdir_file_points_to_its_folder():
    dicomdir = DICOMDIR_TESTS / "DICOMDIR"
    with pytest.raises(MissingPixelDataError, match="pass its folder"):
        read_scan(dicomdir)
    index = inspect_path(dicomdir)
    assert not index.series and "pass its folder" in index.unreadable[0].reason
