"""Closed vocabularies for the header values radiolens keeps: anything else reads as ``OTHER``.

De-identification (PS3.15 Annex E) keeps acquisition attributes such as Body Part Examined, Manufacturer and
View Position, because later stages need them (the input gate, drift monitoring). They are free text in
practice: a site can type a ward, a physician or a patient's name into them, and whatever reaches a
monitoring record or the append-only audit log can never be removed again. So the reader maps every kept
header value to a closed vocabulary here, once, and only the coded value enters :class:`ImageMeta`; every
stored record, response, log line and results file is built from those coded values.

* absent or empty value -> ``None`` (the gate treats it as "not stated");
* a value in the vocabulary (case and surrounding spaces ignored) -> its upper-case code;
* anything else -> ``OTHER``.

The lists are the DICOM defined terms (PS3.3 C.7.3.1.1.1 Modality, PS3.16 Annex L Body Part Examined,
PS3.3 C.8.11.5.1.1 and C.8.11.7 View Position, C.7.6.3.1.2 Photometric Interpretation), plus a few
non-standard values common in chest radiography that the input gate's defaults accept (``DR``, ``THORAX``,
``CHEST_LAT``). They are written out by hand because no maintained Python package ships these defined
terms (pydicom's data dictionary has attribute names, not their defined terms). Manufacturers have no
defined terms: a value is coded as one of the radiography vendors below when its first words name the
vendor, else ``OTHER``.
"""

from __future__ import annotations

import re

OTHER = "OTHER"

MODALITIES = frozenset({
    # current defined terms
    "ANN", "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CR", "CT", "CTPROTOCOL", "DMS", "DG", "DOC", "DX",
    "ECG", "EEG", "EMG", "EOG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO",
    "LEN", "LS", "M3D", "MG", "MR", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS",
    "OT", "PA", "PLAN", "POS", "PR", "PT", "PX", "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT",
    "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF", "STAIN",
    "TEXTUREMAP", "TG", "US", "VA", "XA", "XAPROTOCOL", "XC",
    # retired terms still found in archives
    "AS", "CD", "CF", "CP", "CS", "DD", "DF", "DM", "DS", "EC", "FA", "FS", "LP", "MA", "MS", "OPR", "ST", "VF",
    # not a defined term, but written by many digital radiography systems (and accepted by the input gate)
    "DR",
})

BODY_PARTS = frozenset({
    "ABDOMEN", "ABDOMENPELVIS", "ACJOINT", "ADRENAL", "AMNIOTICFLUID", "ANKLE", "ANUS", "AORTA", "APPENDIX",
    "ARM", "AXILLA", "BACK", "BILEDUCT", "BLADDER", "BRAIN", "BREAST", "BRONCHUS", "BUTTOCK", "CALCANEUS",
    "CALF", "CAROTID", "CEREBELLUM", "CERVIX", "CHEEK", "CHEST", "CHESTABDOMEN", "CHESTABDPELVIS",
    "CIRCLEOFWILLIS", "CLAVICLE", "COCCYX", "COLON", "CORNEA", "CORONARYARTERY", "CSPINE", "CTSPINE",
    "DUODENUM", "EAR", "ELBOW", "ESOPHAGUS", "EXTREMITY", "EYE", "EYELID", "FACE", "FEMUR", "FINGER", "FOOT",
    "GALLBLADDER", "HAND", "HEAD", "HEADNECK", "HEART", "HIP", "HUMERUS", "IAC", "ILEUM", "ILIUM", "JAW",
    "JEJUNUM", "KIDNEY", "KNEE", "LARYNX", "LEG", "LIVER", "LSPINE", "LSSPINE", "LUNG", "MAXILLA",
    "MEDIASTINUM", "MOUTH", "NECK", "NECKCHEST", "NECKCHESTABDOMEN", "NECKCHESTABDPELV", "NOSE", "ORBIT",
    "OVARY", "PANCREAS", "PAROTID", "PATELLA", "PELVIS", "PENIS", "PHARYNX", "PROSTATE", "RADIUS", "RECTUM",
    "RIB", "SACRUM", "SCALP", "SCAPULA", "SCLERA", "SCROTUM", "SHOULDER", "SKULL", "SPINE", "SPLEEN", "SSPINE",
    "STERNUM", "STOMACH", "SUBMANDIBULAR", "TESTIS", "THIGH", "THUMB", "THYMUS", "THYROID", "TIBIA", "TLSPINE",
    "TMJ", "TOE", "TONGUE", "TRACHEA", "TSPINE", "ULNA", "URETER", "URETHRA", "UTERUS", "VAGINA", "VULVA",
    "WHOLEBODY", "WRIST", "ZYGOMA",
    # not defined terms, but common on chest radiographs (and accepted by the input gate)
    "THORAX", "CHEST_LAT",
})
_BODY_PART_ALIASES = {"WHOLE BODY": "WHOLEBODY"}

VIEW_POSITIONS = frozenset({
    # projection radiography (DX/CR)
    "AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LATERAL", "LAT",
    # mammography
    "CC", "MLO", "ML", "LM", "LMO", "SIO", "XCC", "XCCL", "XCCM", "FB", "CV", "AT", "RCC", "LCC", "RMLO", "LMLO",
})

PHOTOMETRIC = frozenset({
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422",
    "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB",
})

SEXES = frozenset({"M", "F", "O"})
BURNED_IN = frozenset({"YES", "NO"})

#: Vendor code -> the word sequences a Manufacturer value may start with (after upper-casing, dropping dots
#: and splitting on anything not a letter or digit: "G.E. Medical Systems" -> GE MEDICAL SYSTEMS).
VENDORS: dict[str, tuple[tuple[str, ...], ...]] = {
    "AGFA": (("AGFA",), ("AGFA", "GEVAERT")),
    "ALOKA": (("ALOKA",),),
    "CANON": (("CANON",),),
    "CARESTREAM": (("CARESTREAM",),),
    "DRGEM": (("DRGEM",),),
    "ESAOTE": (("ESAOTE",),),
    "FUJIFILM": (("FUJI",), ("FUJIFILM",)),
    "GE": (("GE",), ("GEHC",), ("GENERAL", "ELECTRIC")),
    "HITACHI": (("HITACHI",),),
    "HOLOGIC": (("HOLOGIC",),),
    "IRAY": (("IRAY",),),
    "KODAK": (("KODAK",), ("EASTMAN", "KODAK")),
    "KONICA MINOLTA": (("KONICA",),),
    "MINDRAY": (("MINDRAY",),),
    "PHILIPS": (("PHILIPS",),),
    "PLANMED": (("PLANMED",),),
    "RAYENCE": (("RAYENCE",),),
    "SAMSUNG": (("SAMSUNG",),),
    "SHIMADZU": (("SHIMADZU",),),
    "SIEMENS": (("SIEMENS",),),
    "SONOSITE": (("SONOSITE",),),
    "SWISSRAY": (("SWISSRAY",),),
    "TOSHIBA": (("TOSHIBA",),),
    "UNITED IMAGING": (("UNITED", "IMAGING"), ("UIH",)),
    "VAREX": (("VAREX",),),
    "VARIAN": (("VARIAN",),),
    "VIEWORKS": (("VIEWORKS",),),
    "ZIEHM": (("ZIEHM",),),
}


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":  # multi-valued element
        value = value[0] if len(value) else ""
    return str(value).strip().upper()


def coded(value: object, vocabulary: frozenset[str], aliases: dict[str, str] | None = None) -> str | None:
    text = _text(value)
    if not text:
        return None
    text = (aliases or {}).get(text, text)
    return text if text in vocabulary else OTHER


def modality(value: object) -> str | None:
    return coded(value, MODALITIES)


def body_part(value: object) -> str | None:
    return coded(value, BODY_PARTS, _BODY_PART_ALIASES)


def view_position(value: object) -> str | None:
    return coded(value, VIEW_POSITIONS)


def photometric(value: object) -> str | None:
    return coded(value, PHOTOMETRIC)


def sex(value: object) -> str | None:
    return coded(value, SEXES)


def burned_in(value: object) -> str | None:
    return coded(value, BURNED_IN)


def manufacturer(value: object) -> str | None:
    text = _text(value)
    if not text:
        return None
    words = tuple(w for w in re.split(r"[^A-Z0-9]+", text.replace(".", "")) if w)
    for code, prefixes in VENDORS.items():
        if any(words[:len(p)] == p for p in prefixes):
            return code
    return OTHER


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def uid(value: object) -> str | None:
    """A UID (digits and dots, at most 64 characters) as is; anything else -> ``None``: a text typed into a UID
    element is not a UID, and UIDs end up in file names and references."""
    text = _text(value)
    return text if text and len(text) <= 64 and _UID.fullmatch(text) else None


#: Every code a header field of :class:`ImageMeta` can hold (besides ``None``), by field name.
FIELDS = {
    "modality": MODALITIES | {OTHER},
    "body_part": BODY_PARTS | {OTHER},
    "view_position": VIEW_POSITIONS | {OTHER},
    "photometric_interpretation": PHOTOMETRIC | {OTHER},
    "manufacturer": frozenset(VENDORS) | {OTHER},
    "patient_sex": SEXES | {OTHER},
    "burned_in_annotation": BURNED_IN | {OTHER},
}
CODERS = {"modality": modality, "body_part": body_part, "view_position": view_position,
          "photometric_interpretation": photometric, "manufacturer": manufacturer, "patient_sex": sex,
          "burned_in_annotation": burned_in, "transfer_syntax_uid": uid, "study_instance_uid": uid,
          "series_instance_uid": uid, "sop_instance_uid": uid}
