"""Writing DICOM SEG: a label map with its RAS affine becomes a BINARY SEG referencing its source series.

Each source frame takes the label-map voxels at its own pixels' world positions, so the map may be on any grid
that covers the series (e.g. a predicted NIfTI mask written on the input's grid). Reading: :mod:`medtl.io.dicom_seg`.

Patient data. A SEG files with its study only if it carries the study's patient module, so by default the SEG is
written for the source's own archive: highdicom copies the patient and study modules (name, ID, birth date, sex,
accession number...) from the source, as DICOM requires. StudyDescription is the one free text copied, and it is
scrubbed of the patient's name, ID, birth date (in any written form) and accession number, as medtl scrubs
SeriesDescription. With ``deidentify`` the SEG can leave the hospital: PatientID and PatientName become medtl's keyed
pseudonym (:func:`medtl.utils.hash_patient_id`, the one in medtl's manifests and run folders); PatientBirthDate,
PatientSex, PatientAge, AccessionNumber, ReferringPhysicianName, StudyID, StudyDate and StudyTime are empty; every
other attribute of the patient and study modules is removed (other IDs and names, comments, history, clinical
trial attributes), as are the institution and station of the contributing equipment; PatientIdentityRemoved is YES
and DeidentificationMethod says what was done. The UIDs are kept (StudyInstanceUID, FrameOfReferenceUID and the
referenced series and instances): highdicom puts a SEG in its source's study, and new UIDs would cut the SEG off
from the images it segments. UIDs identify the study, not the patient, but whoever holds the source images can link
the SEG to them: de-identify images and SEG together with a full de-identification tool when that link must go too.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtl.errors import DataLoadError
from medtl.io.dicom.header import scrub_dataset_text
from medtl.io.dicom_seg import GRID_TOLERANCE_VOXELS, _affine_4x4, _frames_voxels, _highdicom

__all__ = ["DEIDENTIFICATION_METHOD", "source_datasets", "build_dicom_seg", "write_dicom_seg"]


def source_datasets(path: str | os.PathLike[str], series: str | None = None) -> list[Any]:
    """The headers (no pixel data) of every instance of the series :func:`medtl.io.read_scan` reads at ``path``."""
    import pydicom

    from medtl.io.scan import select_series

    chosen = select_series(path, series)
    if chosen.kind == "nifti":
        raise DataLoadError(
            f"{path} is a NIfTI file: a DICOM SEG references DICOM instances",
            path=str(path),
            fix="give the DICOM series the NIfTI was converted from, or leave out --dicom-seg",
        )
    return [pydicom.dcmread(str(f), stop_before_pixels=True) for f in chosen.files]


# patient and study attributes a SEG copies from its source and must hold, if only empty (DICOM type 2); many
# exported series leave some out
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def _with_type2(ds: Any) -> Any:
    missing = [k for k in _TYPE2 if k not in ds]
    if not missing:
        return ds
    ds = copy.deepcopy(ds)
    for keyword in missing:
        setattr(ds, keyword, "")
    return ds


# with ``deidentify``: emptied (DICOM type 2 in a SEG, or asked for by name), and kept; the rest of the patient and
# study modules is removed
_EMPTIED = (
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDate",
    "StudyTime",
)
_KEPT = ("StudyInstanceUID", "StudyDescription", "PatientIdentityRemoved", "DeidentificationMethod")
# the patient and study modules as highdicom 0.28 copies them, for a highdicom whose module tables cannot be read
_PATIENT_STUDY = (
    "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientNames", "OtherPatientIDsSequence",
    "EthnicGroupCodeSequence", "PatientComments", "ResponsiblePerson", "ResponsibleOrganization",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialSiteID", "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "StudyDate", "StudyTime", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "ReferringPhysicianName", "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName", "StudyDescription", "ProcedureCodeSequence", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy", "ReferencedStudySequence", "StudyInstanceUID", "StudyID", "RequestingService",
    "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientWeight", "MedicalAlerts", "Allergies",
    "Occupation", "AdditionalPatientHistory", "PregnancyStatus", "LastMenstrualDate", "ReasonForVisit",
    "AdmissionID", "ServiceEpisodeID", "ServiceEpisodeDescription", "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
)  # fmt: skip
# groups whose top-level elements all describe the patient, the trial subject or the visit
_PATIENT_GROUPS = (0x0010, 0x0012, 0x0038)
_EQUIPMENT_SITE = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "InstitutionalDepartmentTypeCodeSequence",
    "StationName",
    "OperatorsName",
    "OperatorIdentificationSequence",
)
# DeidentificationMethod (LO: values of at most 64 characters each)
DEIDENTIFICATION_METHOD = [
    "medtl: PatientID and PatientName are a keyed pseudonym",
    "birth date, sex, age, accession, study ID/date/time emptied",
    "other patient, study and institution attributes removed",
    "StudyDescription scrubbed; UIDs retained",
]


def _patient_and_study_keywords(seg: Any) -> set[str]:
    """The top-level attributes of ``seg`` that belong to its patient and study modules (what highdicom copied from
    the source), from highdicom's tables of the standard, and every element of the patient groups."""
    keywords = set(_PATIENT_STUDY)
    try:  # highdicom's own tables: what its copy_patient_and_study_information copies
        from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

        attributes = get_module_attribute_map()
        for module in get_iod_module_map()[get_sop_class_iod_map()[str(seg.SOPClassUID)]]:
            if module["ie"] in ("Patient", "Study"):
                keywords |= {str(a["keyword"]) for a in attributes[module["key"]] if len(a["path"]) == 0}
    except Exception:  # noqa: BLE001 - another highdicom: the list above and the groups below still apply
        pass
    keywords |= {elem.keyword for elem in seg if elem.tag.group in _PATIENT_GROUPS and elem.keyword}
    return keywords


def _deidentify(seg: Any, source: Any) -> None:
    """Pseudonymise the patient in ``seg`` in place (see the module docstring)."""
    from medtl.utils import hash_patient_id

    pseudonym = hash_patient_id(str(source.get("PatientID", "") or ""))
    for keyword in sorted(_patient_and_study_keywords(seg)):
        if keyword not in seg or keyword in _KEPT:
            continue
        if keyword in ("PatientID", "PatientName"):
            setattr(seg, keyword, pseudonym)
        elif keyword in _EMPTIED:
            setattr(seg, keyword, "")
        else:
            delattr(seg, keyword)
    for item in seg.get("ContributingEquipmentSequence") or []:
        for keyword in _EQUIPMENT_SITE:
            if keyword in item:
                delattr(item, keyword)
    seg.PatientIdentityRemoved = "YES"
    seg.DeidentificationMethod = DEIDENTIFICATION_METHOD


def _property_type(hd: Any, name: str) -> Any:
    from pydicom.sr.codedict import codes

    word = "".join(part.capitalize() for part in name.replace("-", " ").replace("_", " ").split())
    try:
        return getattr(codes.SCT, word)
    except AttributeError:  # a class SNOMED CT does not name: a local code
        return hd.sr.CodedConcept(value=name[:16], scheme_designator="99MEDTL", meaning=name[:64])


def build_dicom_seg(
    label_map: np.ndarray,
    affine: Any,
    sources: Sequence[Any],
    *,
    classes: Sequence[str],
    algorithm_version: str,
    algorithm_parameters: dict[str, str] | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    series_number: int = 300,
    series_description: str = "medtl segmentation",
    manufacturer: str = "medtl",
    software_version: str = "medtl",
    segment_creator: str = "AUTOMATIC",
    deidentify: bool = False,
) -> Any:
    """A highdicom BINARY ``Segmentation`` of ``sources`` from a label map on a grid given by ``affine``.

    Each source frame takes, for each of its pixels, the label-map voxel at the pixel's world position (the label
    map need not be stored in the source's slice order or orientation, only cover its pixels on voxel centres).

    Args:
        label_map: integer label values ``(X, Y, Z)`` (0 background, i: ``classes[i]``).
        affine: voxel-to-world RAS affine of ``label_map``.
        sources: the source series' datasets (headers suffice; :func:`source_datasets`).
        classes: class names; one segment per foreground class, numbered by label value, labelled by name.
        algorithm_version: the algorithm identification's version (for medtl: the run's architecture and weights).
        algorithm_parameters: further algorithm identification parameters.
        series_uid, sop_uid: the SEG's UIDs (default: new ones).
        series_number, series_description, manufacturer, software_version: the SEG's series and equipment.
        segment_creator: the segments' algorithm type (AUTOMATIC for predictions, MANUAL for reference masks).
        deidentify: pseudonymise the patient (see the module docstring); by default the patient and study modules
            are copied from the source, for the source's own archive. StudyDescription is scrubbed either way.

    Raises:
        DataLoadError: highdicom missing; a source pixel off the label map's voxel centres or outside it.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    sources = [_with_type2(ds) for ds in sources]
    data = np.asarray(label_map)
    data = data.reshape(data.shape + (1,) * (3 - data.ndim))
    frames = []
    for ds in sources:
        rows, cols = int(ds.Rows), int(ds.Columns)
        for f, (ijk, off, _, mismatch) in enumerate(_frames_voxels(ds, rows, cols, _affine_4x4(affine), data.shape)):
            if mismatch or off > GRID_TOLERANCE_VOXELS or (ijk < 0).any() or (ijk >= np.asarray(data.shape)).any():
                problem = mismatch.replace("the image", "the mask") or f"up to {off:.3g} voxels off or outside"
                raise DataLoadError(
                    f"source instance {ds.SOPInstanceUID} (frame {f + 1}) does not lie on the mask's voxels "
                    f"({'x'.join(map(str, data.shape))}): it {problem}",
                    path=str(getattr(ds, "filename", "") or "") or None,
                    fix="write the mask on the source series' own grid (medtl predict does)",
                )
            i, j, k = np.moveaxis(ijk, -1, 0)
            frames.append(data[i, j, k])
    pixels = np.stack(frames).astype(np.uint16 if len(classes) > 255 else np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medtl",
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version[:64],
        parameters=algorithm_parameters,
    )
    automatic = segment_creator.upper() != "MANUAL"
    segments = [
        hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=_property_type(hd, str(name)),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
            if automatic
            else hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            algorithm_identification=algorithm if automatic else None,
        )
        for value, name in enumerate(classes)
        if value > 0
    ]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=series_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_uid or hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="medtl",
        software_versions=software_version,
        device_serial_number="0",
        content_description=series_description[:64],
        omit_empty_frames=bool(pixels.any()),  # an empty prediction keeps its frames: a SEG needs at least one
    )
    seg.SeriesDescription = series_description[:64]
    if "StudyDescription" in seg:  # the one free text copied from the source: scrubbed like SeriesDescription
        scrubbed = scrub_dataset_text(sources[0], "StudyDescription")
        if scrubbed:
            seg.StudyDescription = scrubbed
        else:
            del seg.StudyDescription
    if deidentify:
        _deidentify(seg, sources[0])
    return seg


def write_dicom_seg(
    label_map: np.ndarray,
    affine: Any,
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    series: str | None = None,
    **kwargs: Any,
) -> Path:
    """Write a label map as a DICOM SEG referencing the series at ``source`` (arguments as
    :func:`build_dicom_seg`); returns ``out``."""
    seg = build_dicom_seg(label_map, affine, source_datasets(source, series), classes=classes, **kwargs)
    import io

    from medtl.utils import atomic_write_bytes

    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    return out
