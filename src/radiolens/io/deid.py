"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

Choice of tooling (checked, not assumed):

* pydicom ships only ``Dataset.remove_private_tags`` and a "walk" helper; it has no Annex E action table.
* the ``deid`` PyPI package applies *recipes*; its default recipe follows the CTP anonymizer, not Annex E,
  and it offers no keyed (HMAC) UID remapping, so we would end up rewriting its recipe anyway.
* ``dicom-anonymizer`` (KitwareMedical) ships the Annex E action table as plain Python data, updated per
  DICOM edition (we use the 2026c table), but its actions (random UIDs, fixed dummy dates) are neither
  keyed nor reproducible.

So the table comes from ``dicom-anonymizer`` (data only: no point re-typing ~600 tags by hand) and the
actions are applied here with pydicom, because the requirements are about the *actions*: keyed,
reproducible UID remapping (HMAC-SHA256 -> ``2.25.<int>``), per-patient consistent date shifting, patient
pseudonyms, and byte-identical output on re-runs.

Actions and the choices made where Annex E offers several (X/Z, X/D, X/Z/D...):

* ``X`` remove; ``Z`` empty; ``D`` replace with a dummy of the right VR; ``U`` keyed UID remap.
* ``X/Z``: empty (keeps Type 2 attributes present).
* ``X/D``, ``Z/D``, and ``X/Z/D`` of a non-empty value: dummy value (it may be Type 1, where empty is invalid).
* Sequences: ``X`` removed, ``Z`` emptied; every other code (and ``X/Z/U*``, Referenced/Source Image
  Sequence) keeps the sequence and cleans its items with these same rules, recursively, so referenced UIDs
  stay consistent and a Type 1/2/3 sequence stays valid (checked with dciodvfy in the tests).
* Safe default: any other attribute with a text, name, age, date or time VR (:data:`TEXT_VRS`,
  :data:`DATE_TIME_VRS`), at any depth, gets ``D`` unless it is in :data:`KEPT_TEXT` (coded entries, device
  make/model, value-meaning labels); ``UN`` values are removed. The table is a deny list and misses some.
* The 128-byte preamble is zeroed; comment/application segments in compressed pixel data are removed
  (:mod:`radiolens.io.deid_pixels`).
* Every value written is checked with pydicom's VR validators in RAISE mode first.
* Every UID anywhere in the data set (nested sequences and the file meta included) that is not a standard
  DICOM UID (root ``1.2.840.10008.``) is remapped, not only those in the table, so references stay
  consistent. Study/Series/SOP Instance UIDs are always replaced, never deleted.
* Retain Patient Characteristics Option (113108): Patient's Age, Sex, Size and Weight are kept (ages over
  89 are reported as ``090Y``, the HIPAA Safe Harbor aggregation).
* Retain Longitudinal Temporal Information with Modified Dates Option (113107), only with
  ``shift_dates=True``: every date (DA, and the date part of DT) the table would empty or replace is
  shifted back by a per-patient offset of 1..3650 days derived from HMAC(secret, PatientID); times are kept.
  Patient's Birth Date is always emptied.
* Patient's Name and Patient ID become one keyed pseudonym ``RL-<16 hex>`` so studies of one patient stay
  linkable without revealing the ID.
* Binary values (OB/OW/UN...) the table touches are removed, having no meaningful dummy.
* Private tags are removed everywhere; curve (50xx) and overlay (60xx) groups are removed (overlay bitmaps
  and comments can carry text).
* Burned-in text: refused (``BurnedInAnnotationError``) unless BurnedInAnnotation is a single ``NO``, when
  it has any other value, or when it is absent and :func:`burned_in_risk` names a reason (a risky modality
  among any of its values, no modality, Secondary Capture, Conversion Type, SECONDARY image type), unless
  ``allow_burned_in=True``. Pixel values are never altered.

Known limit: text in code strings (CS), numbers, kept coded entries (a name in a Code Meaning) and binary
attributes the table does not list survives. Reports never contain PHI: only remapped UIDs, the pseudonym
and counts.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import hmac
import logging
import os
import warnings
from pathlib import Path

import pydicom
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as _annex_e
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import validate_value

from radiolens import __version__ as _radiolens_version
from radiolens.errors import BurnedInAnnotationError, ConfigError, InputError, RadiolensError
from radiolens.io import vocab
from radiolens.io.deid_ocr import PixelTextConfig, detect_text, mask_text, require_ocr
from radiolens.io.deid_pixels import strip_stream_metadata
from radiolens.io.writers.dicom import dicom_file_name, write_dicom

SECRET_ENV = "RADIOLENS_DEID_SECRET"
#: Or a file holding it (e.g. a container secret mount); surrounding whitespace is ignored.
SECRET_FILE_ENV = "RADIOLENS_DEID_SECRET_FILE"
#: The secret keys UID remapping and pseudonyms; a short one could be guessed and the remapping undone. The
#: service and ``radiolens deid`` share this floor so a secret accepted by one is accepted by the other.
MIN_SECRET_BYTES = 16

#: Modalities where text (names, dates, measurements) is routinely burned into the pixels: ultrasound,
#: secondary capture / other (screenshots, scanned documents), angiography/fluoroscopy overlays,
#: endoscopy/photography, microscopy and document captures.
BURNED_IN_MODALITIES = frozenset({"US", "IVUS", "SC", "OT", "XA", "RF", "ES", "XC", "GM", "SM", "DOC", "OP"})
#: Secondary Capture Image Storage and its multi-frame variants (PS3.4 B.5): screenshots, scans, conversions.
SECONDARY_CAPTURE_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
                                           "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
                                           "1.2.840.10008.5.1.4.1.1.7.4"})

_STANDARD_UID_ROOT = "1.2.840.10008."
_PSEUDONYM_PREFIX = "RL-"
_MAX_SHIFT_DAYS = 3650

_PATIENT_NAME = Tag(0x0010, 0x0010)
_PATIENT_ID = Tag(0x0010, 0x0020)
_BIRTH_DATE = Tag(0x0010, 0x0030)
_PATIENT_AGE = Tag(0x0010, 0x1010)
#: Retain Patient Characteristics Option: age, sex, size, weight.
RETAINED = frozenset({_PATIENT_AGE, Tag(0x0010, 0x0040), Tag(0x0010, 0x1020), Tag(0x0010, 0x1030)})

# Annex E table -> one action per tag, resolved as described in the module docstring.
_ACTIONS: dict[BaseTag, str] = {}
for _name, _act in (("X_TAGS", "X"), ("Z_TAGS", "Z"), ("D_TAGS", "D"), ("U_TAGS", "U"), ("X_Z_TAGS", "XZ"),
                    ("X_D_TAGS", "XD"), ("Z_D_TAGS", "ZD"), ("X_Z_D_TAGS", "XZD"), ("X_Z_U_STAR_TAGS", "U*")):
    for _t in getattr(_annex_e, _name):
        if len(_t) == 2:  # masked entries (curves 50xx, overlays 60xx) are handled by group in _walk
            _ACTIONS[Tag(_t)] = _act

#: Birth and death dates written in another calendar (LO, not in the table's edition): removed like Patient's Birth
#: Date is emptied (HIPAA Safe Harbor: no date element of a birth or death date), rather than given a dummy.
ALTERNATIVE_CALENDAR_DATES = frozenset({Tag(0x0010, 0x0033), Tag(0x0010, 0x0034)})
for _t in ALTERNATIVE_CALENDAR_DATES:
    _ACTIONS.setdefault(_t, "X")

#: Value representations that can carry identifying text or time points. Any attribute of these VRs that the
#: table does not list, that is not retained (:data:`RETAINED`) and not in :data:`KEPT_TEXT` gets the ``D``
#: action (dummy value; DA/DT shifted under ``shift_dates``): a safe default for attributes the table misses
#: (it lacks e.g. Patient's Birth Date in Alternative Calendar and several DA/DT attributes) and for ones
#: added to DICOM after the table's edition. ``UN`` (a value of unknown meaning) is removed for the same reason.
TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE", "AS"})
DATE_TIME_VRS = frozenset({"DA", "DT", "TM"})


def _tags(*keywords: str) -> frozenset[BaseTag]:
    return frozenset(Tag(k) for k in keywords)


#: Text and date attributes kept although not in the table: they describe codes, the device make or how to
#: turn stored values into meaningful ones, never the patient, and readers need them.
KEPT_TEXT = _tags(
    # coded entries (PS3.3 Table 8.8-1): without them every code sequence item is invalid
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
    "URNCodeValue", "ContextIdentifier", "MappingResource", "MappingResourceName", "ContextGroupVersion",
    "ContextGroupLocalVersion",
    # device make and model (kept by Annex E's basic profile too; used for scanner-drift monitoring)
    "Manufacturer", "ManufacturerModelName",
    # how stored values become meaningful ones (Modality LUT / VOI LUT labels)
    "RescaleType", "ModalityLUTType", "LUTExplanation", "LUTLabel", "WindowCenterWidthExplanation",
)

_DUMMY_TEXT = "ANONYMIZED"
_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "PN": "ANONYMIZED", "AS": "000Y",
          "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "FL": 0.0, "FD": 0.0, "UV": 0, "SV": 0}
_MAX_LEN = {"SH": 16, "AE": 16, "CS": 16, "LO": 64}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT"}


#: Secrets printed in radiolens' own demo script, documentation and example Kubernetes Secret (now or in earlier
#: versions): anyone can read them, so UIDs remapped and pseudonyms made with one can be recomputed by anyone
#: holding the original data.
PUBLIC_SECRETS = frozenset({"demo-secret-change-me", "a long random project secret",
                            "replace-me-radiolens-deid-secret-placeholder"})


def secret_from_env() -> str:
    """``RADIOLENS_DEID_SECRET``, or the contents of ``RADIOLENS_DEID_SECRET_FILE``; "" when neither is set.

    The file must be private to its owner (like ssh's private keys): one that group or others may read or
    write is refused with a ``ConfigError``, before it is read.
    """
    value = os.environ.get(SECRET_ENV, "")
    path = os.environ.get(SECRET_FILE_ENV, "")
    if not path:
        return value
    try:
        file = Path(path).expanduser()
        mode = file.stat().st_mode & 0o777
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(f"{SECRET_FILE_ENV}: permissions {mode:04o} for {file} are too open: the secret "
                              f"file must not be accessible by group or others; run `chmod 600 {file}`")
        from_file = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{SECRET_FILE_ENV}: cannot read the secret file ({type(exc).__name__})") from exc
    if value and value != from_file:
        raise ConfigError(f"{SECRET_ENV} and {SECRET_FILE_ENV} are both set and differ; set only one")
    return from_file


def resolve_secret(secret: str | bytes | None) -> bytes:
    """The HMAC key from the argument or the environment; refuse to run without one or with a short one."""
    if secret is None or secret == "" or secret == b"":
        secret = secret_from_env()
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ConfigError(f"de-identification needs a secret (--secret, {SECRET_ENV} or {SECRET_FILE_ENV}); "
                          "refusing to run without one")
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"the de-identification secret is shorter than {MIN_SECRET_BYTES} bytes; use a long "
                          "random one, e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
    return key


def load_secret(value: str | None = None, *, on_command_line: bool = False, public: str = "warn",
                warn=None) -> str:
    """THE secret loader of ``radiolens deid`` and the service: ``value`` (an option or setting) or else the
    environment / secret file (:func:`secret_from_env`, which refuses a file others can read), then:

    * shorter than :data:`MIN_SECRET_BYTES`, or absent: ``ConfigError``;
    * one of :data:`PUBLIC_SECRETS`: ``ConfigError`` with ``public="refuse"`` (the service, unless started with
      ``--insecure-demo-secret``), a warning with ``public="warn"`` (``radiolens deid``);
    * ``on_command_line``: a warning (command lines are visible to every local user in ``ps`` and stay in
      shell history).

    ``warn`` receives each warning (default: the ``radiolens.deid`` logger). No message quotes the secret.
    """
    if public not in ("warn", "refuse"):
        raise ValueError("public must be 'warn' or 'refuse'")
    say = warn or logging.getLogger("radiolens.deid").warning
    secret = value or secret_from_env()
    resolve_secret(secret)  # absent / too short
    if on_command_line:
        say(f"the de-identification secret was given on the command line, where other local users can read it "
            f"(ps, /proc, shell history); use {SECRET_FILE_ENV} (a file only you can read) or {SECRET_ENV}")
    if secret.strip().lower() in PUBLIC_SECRETS:
        msg = ("the de-identification secret is a published demo value: anyone can recompute the remapped UIDs "
               "and pseudonyms; generate a private one, e.g. python -c 'import secrets; print(secrets.token_hex(32))'")
        if public == "refuse":
            raise ConfigError(msg + " (or, for a throw-away demo only, start with --insecure-demo-secret)")
        say(msg)
    return secret


class Deidentifier:
    """Keyed, reproducible Annex E de-identifier. One instance = one secret = one UID/pseudonym namespace."""

    def __init__(self, secret: str | bytes, shift_dates: bool = False, allow_burned_in: bool = False,
                 pixel_text: PixelTextConfig | str | None = None):
        """``pixel_text``: a :class:`~radiolens.io.deid_ocr.PixelTextConfig` or just its policy (``off``,
        ``refuse``, ``mask``). ``mask`` replaces the header rule (every file is read and cleaned instead);
        ``refuse`` adds OCR to it; ``off`` (default) is the header rule alone. Tesseract and the text detector
        are checked here, so a missing engine or model stops the start, not the first file."""
        self._key = resolve_secret(secret)
        self.shift_dates = bool(shift_dates)
        self.allow_burned_in = bool(allow_burned_in)
        if pixel_text is None or isinstance(pixel_text, str):
            pixel_text = PixelTextConfig(policy=pixel_text or "off")
        self.pixel_text = pixel_text
        if pixel_text.policy != "off":
            require_ocr(pixel_text)

    # -- keyed primitives -------------------------------------------------------------------------------
    def _mac(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def remap_uid(self, uid: str) -> str:
        """Same input + same secret -> same ``2.25.<int>`` UID (at most 44 characters, always valid)."""
        uid = str(uid).strip().rstrip("\x00")
        if not uid or uid.startswith(_STANDARD_UID_ROOT):
            return uid
        return "2.25." + str(int.from_bytes(self._mac("uid", uid)[:16], "big"))

    def pseudonym(self, patient_key: str) -> str:
        return _PSEUDONYM_PREFIX + self._mac("patient", patient_key).hex()[:16].upper()

    def date_offset_days(self, patient_key: str) -> int:
        return 1 + int.from_bytes(self._mac("date-shift", patient_key)[:8], "big") % _MAX_SHIFT_DAYS

    # -- public API ---------------------------------------------------------------------------------------
    def check_burned_in(self, ds: Dataset) -> str:
        """Return the BurnedInAnnotation verdict used in reports; raise when the file must be refused.

        Conservative by construction: only a single value exactly ``NO`` counts as "no burned-in text"; any
        other value (``YES``, ``YES\\NO``, lower case, junk) counts as possibly burned-in. Without the
        attribute, the file is refused when :func:`burned_in_risk` names a reason (risky modality among
        any of its values, no modality, Secondary Capture, a conversion type, a SECONDARY image type).
        """
        values = _cs_values(ds.get("BurnedInAnnotation"))
        verdict = "\\".join(values) if values else "absent"
        if self.allow_burned_in or self.pixel_text.policy == "mask":  # mask: the pixels are read and cleaned
            return verdict
        if values == ["NO"]:
            return verdict
        if values:
            raise BurnedInAnnotationError("refused: the file does not declare a single BurnedInAnnotation NO: the "
                                          "pixels may show patient details")
        reason = burned_in_risk(ds)
        if reason:
            raise BurnedInAnnotationError(f"refused: {reason} and the file does not declare that it has no "
                                          "burned-in text (BurnedInAnnotation absent): the pixels may show "
                                          "patient details")
        return verdict

    def deidentify_dataset(self, ds: Dataset) -> tuple[Dataset, dict]:
        """A new de-identified data set (the input is left untouched) and a PHI-free report."""
        burned = self.check_burned_in(ds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warnings can quote element values (PHI)
            clean = copy.deepcopy(ds)
            patient_key = str(ds.get("PatientID", "") or "").strip() or str(ds.get("PatientName", "") or "")
            pseudonym = self.pseudonym(patient_key)
            offset = self.date_offset_days(patient_key) if self.shift_dates else None
            counts = {"removed": 0, "emptied": 0, "replaced": 0, "uids_remapped": 0, "dates_shifted": 0,
                      "private_removed": 0, "stream_segments_removed": 0, "text_regions_masked": 0}
            try:
                # Stream metadata goes first: the OCR below then decodes the final compressed stream, and
                # pydicom's cached decode of it serves the caller's own decode too (a changed stream would be
                # decoded again). Masking writes native pixel data, which has no stream metadata.
                counts["stream_segments_removed"] = strip_stream_metadata(clean)
                boxes = self._pixel_text(clean)
                counts["private_removed"] = _remove_private(clean)
                self._walk(clean, counts, pseudonym, offset, top=True)
                self._finish(clean, ds, pseudonym)
                if self.pixel_text.policy == "mask":
                    counts["text_regions_masked"] = self._mask(clean, boxes)
                clean.preamble = b"\x00" * 128  # the 128-byte preamble is free-form and can hold anything
            except RadiolensError:
                raise
            except Exception as exc:  # a malformed element must fail this file, typed, with nothing written
                raise InputError(f"de-identification failed on a malformed data set ({type(exc).__name__})") \
                    from None
        report = {
            "status": "ok",
            "sop_instance_uid": str(clean.get("SOPInstanceUID", "")),
            "study_instance_uid": str(clean.get("StudyInstanceUID", "")),
            "series_instance_uid": str(clean.get("SeriesInstanceUID", "")),
            "patient_pseudonym": pseudonym,
            # coded (radiolens.io.vocab): free text typed into these elements must not reach the report
            "modality": vocab.modality(clean.get("Modality")) or "",
            "burned_in_annotation": "absent" if burned == "absent" else vocab.burned_in(burned),
            "date_shift_option": self.shift_dates,
            "pixel_text_policy": self.pixel_text.policy,
            "retained": sorted(pydicom.datadict.keyword_for_tag(t) for t in RETAINED if t in clean),
            "profile": _profile_codes(self.shift_dates),
            **counts,
        }
        return clean, report

    def deidentify_file(self, src: str | Path, dst: str | Path) -> dict:
        """De-identify one file. ``dst`` is a file path, or an existing folder (name = remapped SOP UID)."""
        from radiolens.io.dicom import read_dicom_dataset

        src, dst = Path(src), Path(dst)
        ds = read_dicom_dataset(src)
        try:
            clean, report = self.deidentify_dataset(ds)
        except BurnedInAnnotationError as exc:
            raise BurnedInAnnotationError(f"{src.name}: {exc}") from None
        if dst.is_dir():
            dst = dst / output_name(clean)
        write_dicom(clean, dst, name=src.name)
        report["output"] = dst.name
        return report

    # -- internals ----------------------------------------------------------------------------------------
    def _pixel_text(self, ds: Dataset) -> list:
        """OCR the pixels unless the policy is ``off``; under ``refuse``, text found refuses the file."""
        if self.pixel_text.policy == "off" or "PixelData" not in ds:
            return []
        try:
            boxes = detect_text(ds, self.pixel_text)
        except RadiolensError:
            raise
        except Exception as exc:  # undecodable pixels cannot be checked, so cannot be passed on
            raise InputError(f"the pixel data cannot be checked for burned-in text ({type(exc).__name__})") \
                from None
        if boxes and self.pixel_text.policy == "refuse":
            raise BurnedInAnnotationError(f"refused: OCR found text in the pixels ({len(boxes)} region(s)); it "
                                          "may show patient details")
        return boxes

    def _mask(self, clean: Dataset, boxes: list) -> int:
        """Black boxes over the text found; a changed image becomes a new SOP instance (PS3.15 E.1.1: the
        Clean Pixel Data Option), and the header then says what is true of it: no burned-in text."""
        if "PixelData" not in clean:
            return 0
        masked = mask_text(clean, boxes)
        if masked:
            clean.SOPInstanceUID = self.remap_uid(f"pixel-text-masked:{clean.SOPInstanceUID}")
            clean.file_meta.MediaStorageSOPInstanceUID = clean.SOPInstanceUID
            image_type = list(_cs_values(clean.get("ImageType")))
            if image_type:
                image_type[0] = "DERIVED"
                clean.ImageType = image_type
        clean.BurnedInAnnotation = "NO"
        methods = [str(v) for v in (clean.DeidentificationMethod if isinstance(
            clean.DeidentificationMethod, pydicom.multival.MultiValue) else [clean.DeidentificationMethod])]
        clean.DeidentificationMethod = _valid("LO", [*methods, f"pixel text OCR-masked: {masked} region(s)"])
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113101", "DCM", \
            "Clean Pixel Data Option"
        clean.DeidentificationMethodCodeSequence.append(item)
        return masked

    def _walk(self, ds: Dataset, counts: dict, pseudonym: str, offset: int | None, top: bool) -> None:
        for elem in list(ds):
            tag = elem.tag
            if tag.group in range(0x5000, 0x5100) or tag.group in range(0x6000, 0x6100):
                del ds[tag]
                counts["removed"] += 1
                continue
            if tag in RETAINED:
                if tag == _PATIENT_AGE:
                    _cap_age(elem)
                continue
            if tag in (_PATIENT_NAME, _PATIENT_ID):
                elem.value = _valid(elem.VR, pseudonym)
                counts["replaced"] += 1
                continue
            if tag == _BIRTH_DATE:
                elem.value = ""
                counts["emptied"] += 1
                continue
            action = _ACTIONS.get(tag)
            if elem.VR == "SQ":
                if action == "X":
                    del ds[tag]
                    counts["removed"] += 1
                elif action == "Z":
                    elem.value = Sequence()
                    counts["emptied"] += 1
                else:  # not listed, U*, and D, X/Z, X/D, Z/D, X/Z/D: kept, every item cleaned by these rules
                    for item in elem.value:
                        self._walk(item, counts, pseudonym, offset, top=False)
                continue
            if elem.VR == "UI":
                self._remap_element(elem, counts)
                continue
            if action is None and tag not in KEPT_TEXT:  # safe default for what the table does not list
                if elem.VR in TEXT_VRS or elem.VR in DATE_TIME_VRS:
                    if elem.value is None or elem.value == "":
                        continue  # nothing to hide; an empty Type 2 attribute stays empty
                    action = "D"
                elif elem.VR == "UN":
                    action = "X"
            if action is None:
                continue
            if offset is not None and elem.VR in ("DA", "DT") and action != "X":
                elem.value = _valid(elem.VR, _shift(elem.value, elem.VR, offset))
                counts["dates_shifted"] += 1
            elif action == "X":
                del ds[tag]
                counts["removed"] += 1
            elif elem.VR in _BINARY_VRS:  # no meaningful dummy for bytes: remove (strictest choice)
                del ds[tag]
                counts["removed"] += 1
            elif action in ("Z", "XZ") or (action == "XZD" and (elem.value is None or elem.value == "")):
                elem.value = None if elem.VR in _DUMMY and not isinstance(_DUMMY[elem.VR], str) else ""
                counts["emptied"] += 1
            else:  # D, XD, ZD, and X/Z/D of a non-empty value (it may be Type 1: emptying would break the IOD)
                elem.value = _valid(elem.VR, _dummy(elem.VR))
                counts["replaced"] += 1

    def _remap_element(self, elem, counts: dict) -> None:
        if elem.value is None or elem.value == "":
            return
        values = list(elem.value) if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
        new = [self.remap_uid(v) for v in values]
        counts["uids_remapped"] += sum(1 for a, b in zip(values, new, strict=True) if str(a) != b)
        elem.value = new if len(new) > 1 else new[0]

    def _finish(self, clean: Dataset, original: Dataset, pseudonym: str) -> None:
        clean.PatientIdentityRemoved = "YES"
        # LO allows 64 characters per value, and the attribute is multi-valued: one value per statement.
        clean.DeidentificationMethod = _valid("LO", [f"radiolens {_radiolens_version}", "PS3.15 Annex E basic profile",
                                                     "retain patient characteristics",
                                                     *(["modified dates"] if self.shift_dates else []),
                                                     "keyed UIDs"])
        codes = Sequence()
        for value, meaning in _profile_codes(self.shift_dates):
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        clean.DeidentificationMethodCodeSequence = codes
        if "PatientName" not in clean:
            clean.PatientName = pseudonym
        if "PatientID" not in clean:
            clean.PatientID = pseudonym
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):  # replaced, never missing
            if not clean.get(keyword):
                setattr(clean, keyword, self.remap_uid(f"missing-{keyword}:{pseudonym}"))
        if not clean.get("SOPInstanceUID"):
            clean.SOPInstanceUID = self.remap_uid(f"missing-sop:{hashlib.sha256(_pixel_bytes(original)).hexdigest()}")
        clean.file_meta = _file_meta(clean, original)


def _cs_values(value) -> list[str]:
    """A code-string element's values, stripped; a single empty value counts as none."""
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = [str(v if v is not None else "").strip() for v in items]
    return [] if out == [""] else out


def burned_in_risk(ds: Dataset) -> str | None:
    """Why the pixels of ``ds`` may carry burned-in text when BurnedInAnnotation does not say NO, or None.

    Every value of a multi-valued attribute is considered (``US\\CR`` is ultrasound), case-insensitively.
    """
    modalities = [m.upper() for m in _cs_values(ds.get("Modality"))]
    risky = sorted(set(modalities) & BURNED_IN_MODALITIES)
    if risky:
        return f"modality {risky[0]} commonly has burned-in text"
    if not modalities:
        return "the modality is missing"
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if sop_class in SECONDARY_CAPTURE_SOP_CLASSES:
        return "the image is a Secondary Capture (screen or document capture)"
    if _cs_values(ds.get("ConversionType")):
        return "the image was converted from another source (Conversion Type is set)"
    if any(v.upper() == "SECONDARY" for v in _cs_values(ds.get("ImageType"))):
        return "the image type is SECONDARY (derived or captured image)"
    return None


def _remove_private(ds: Dataset) -> int:
    count = 0
    for elem in list(ds):
        if elem.tag.is_private:
            del ds[elem.tag]
            count += 1
        elif elem.VR == "SQ":
            for item in elem.value:
                count += _remove_private(item)
    return count


def _valid(vr: str, value):
    """``value`` after pydicom's VR checks in RAISE mode (length, characters, format), one value at a time:
    a value radiolens writes must be valid whatever the validation mode of the data set it goes into."""
    items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    for item in items:
        validate_value(vr, item, config.RAISE)
    return value


def _cap_age(elem) -> None:
    text = str(elem.value or "").strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text[3] == "Y" and int(text[:3]) > 89:
        elem.value = _valid("AS", "090Y")


def _dummy(vr: str):
    if vr in _DUMMY:
        return _DUMMY[vr]
    return _DUMMY_TEXT[: _MAX_LEN.get(vr, len(_DUMMY_TEXT))]


def _shift(value, vr: str, offset: int):
    values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
    out = []
    for v in values:
        text = str(v or "").strip()
        parts = [p for p in text.split("-")] if vr == "DA" else [text]
        shifted = []
        for p in parts:
            try:
                d = _dt.datetime.strptime(p[:8], "%Y%m%d").date() - _dt.timedelta(days=offset)
                shifted.append(d.strftime("%Y%m%d") + (p[8:] if vr == "DT" else ""))
            except ValueError:
                shifted.append("")  # unparseable or open range end: empty rather than leak
        out.append("-".join(shifted) if any(shifted) else "")
    return out if len(out) > 1 else out[0]


def _profile_codes(shift_dates: bool) -> list[tuple[str, str]]:
    codes = [("113100", "Basic Application Confidentiality Profile"),
             ("113108", "Retain Patient Characteristics Option")]
    if shift_dates:
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    return codes


def _pixel_bytes(ds: Dataset) -> bytes:
    elem = ds.get("PixelData")
    return bytes(elem) if isinstance(elem, (bytes, bytearray)) else b""


def _file_meta(clean: Dataset, original: Dataset) -> FileMetaDataset:
    """Rebuilt from scratch: source AE titles, private information and old UIDs do not carry over."""
    old = getattr(original, "file_meta", None)
    ts = getattr(old, "TransferSyntaxUID", None) if old is not None else None
    if ts is None:
        implicit, little = getattr(original, "original_encoding", (None, None))
        if little is False:
            ts = ExplicitVRBigEndian
        elif implicit:
            ts = ImplicitVRLittleEndian
        else:
            ts = ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = clean.get("SOPClassUID", UID("1.2.840.10008.5.1.4.1.1.7"))
    meta.MediaStorageSOPInstanceUID = clean.SOPInstanceUID
    meta.TransferSyntaxUID = UID(str(ts))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"RADIOLENS_{_radiolens_version}"[:16]
    return meta


def output_name(clean: Dataset) -> str:
    """File name from the remapped SOP Instance UID: unique, stable, PHI-free."""
    return dicom_file_name(clean)
