"""Synthetic-PHI corpus for the de-identification benchmark (benchmarks/deid_benchmark.py).

Every real DICOM available (pydicom's test files, pydicom-data, the SIIM chest DICOM) is copied with synthetic PHI
planted where the MIDI-B challenge and DICOM PS3.15 Annex E look for it, and each planted item is written to a
ground-truth manifest with the action the rules below require of a de-identifier. Deterministic: the same seed
and sources give the same files and manifest.

Rules ("required action"), the same for every tool scored (docs/deid.md): PS3.15 Annex E Basic Application
Level Confidentiality Profile (DICOM 2026c action table, as shipped by dicom-anonymizer) with the Retain
Longitudinal Temporal Information with Modified Dates Option (113107), the Retain Patient Characteristics
Option (113108) and the Clean Pixel Data Option (113101):

* ``X`` -> remove (no value left: absent or empty); ``Z`` -> replace (empty or dummy); ``D`` -> replace
  (present, non-empty, different, free of the planted text); ``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D`` -> remove or
  replace; ``U`` (UIDs) -> replace with a different valid UID.
* DA/DT attributes whose code is not ``X`` -> shift (a valid date, different from the planted one, every date
  of a file moved by the same number of days); Patient's Birth Date and the alternative-calendar birth/death
  dates -> remove (HIPAA Safe Harbor). TM follows its code.
* Patient's Age, Sex, Size, Weight (113108), Modality, Manufacturer -> keep (unchanged).
* Private elements (known and unknown creators), file meta free text, the preamble, JPEG COM/APPn segments,
  overlays (60xx), curves (50xx) -> remove (the planted text must not be anywhere in the output file).
* Text burned into the pixels -> remove (not legible: at most 5 % of its glyph pixels still stand out by half
  the contrast they had); text the source image already carried (``PREEXISTING_TEXT``, hand-checked boxes)
  -> remove, by the same test on the pixels of its box that stand out from the box's edge; the pixels away
  from both -> keep (at most 0.5 % changed).

Every planted value holds a unique token (``Q`` + digits), so a leak is found wherever it went.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as annex_e
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.tag import Tag

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/noto"))
FONTS = ("DejaVuSans.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed-Bold.ttf",
         "NotoSansMono-Regular.ttf")
PLANT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "DA", "DT", "TM"})
KEEP = {"Modality": None, "Manufacturer": "ACME MEDICAL", "PatientSex": "F", "PatientAge": "045Y",
        "PatientWeight": "71.5", "PatientSize": "1.68"}
RETAINED = {Tag("PatientAge"), Tag("PatientSex"), Tag("PatientSize"), Tag("PatientWeight")}
ALT_CALENDAR = {Tag(0x0010, 0x0033): "PatientBirthDateInAlternativeCalendar",
                Tag(0x0010, 0x0034): "PatientDeathDateInAlternativeCalendar"}
JPEG_TS = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                     "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
#: Sequences nested to hold planted items at depths 1-3 (all kept, with their items cleaned, by the rules).
NEST = ("ReferencedImageSequence", "SourceImageSequence", "DerivationCodeSequence")


def _codes() -> dict:
    codes = {}
    for name, code in (("X_TAGS", "X"), ("Z_TAGS", "Z"), ("D_TAGS", "D"), ("U_TAGS", "U"), ("X_Z_TAGS", "X/Z"),
                       ("X_D_TAGS", "X/D"), ("Z_D_TAGS", "Z/D"), ("X_Z_D_TAGS", "X/Z/D"),
                       ("X_Z_U_STAR_TAGS", "X/Z/U*")):
        for t in getattr(annex_e, name):
            if len(t) == 2:
                codes[Tag(t)] = code
    return codes


CODES = _codes()


def required_action(tag, vr: str) -> tuple[str, bool]:
    """(action, strict) under the rules of the module docstring; strict = the value must stay present."""
    if tag in ALT_CALENDAR or tag == Tag("PatientBirthDate"):
        return "remove", False
    if tag in RETAINED:
        return "keep", True
    code = CODES.get(tag, "")
    if vr in ("DA", "DT") and code != "X":
        return "shift", False
    if code == "X":
        return "remove", False
    if code == "X/Z":
        return "remove", False
    if code == "D":
        return "replace", True
    return "replace", False  # Z, X/D, Z/D, X/Z/D


def plantable() -> list[tuple]:
    """Action-table attributes with a text, name, date or time VR (and the alternative-calendar dates)."""
    out = []
    for tag in sorted(set(CODES) | set(ALT_CALENDAR)):
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        if vr in PLANT_VRS and keyword_for_tag(tag) and not tag.is_private and tag.group != 0x0002:
            out.append((tag, vr))
    return out


@dataclass
class Planter:
    """Makes unique tokens and records the items planted in one file."""

    rng: random.Random
    counter: int = 0
    items: list = field(default_factory=list)

    def token(self, n: int = 6) -> str:
        self.counter += 1
        return f"Q{self.rng.randrange(10 ** (n - 1), 10 ** n)}{self.counter:05d}"

    def add(self, category: str, action: str, where: dict, token: str, planted=None, strict: bool = False):
        self.items.append({"category": category, "action": action, "strict": strict, "token": token,
                           "planted": planted if planted is not None else token, **where})


def _value(vr: str, p: Planter, day: dt.date) -> tuple[str, str]:
    """(value, token) for a planted element; dates/times are real ones (the token is the value itself)."""
    if vr == "DA":
        v = day.strftime("%Y%m%d")
        return v, v
    if vr == "DT":
        v = day.strftime("%Y%m%d") + f"{p.rng.randrange(24):02d}{p.rng.randrange(60):02d}00"
        return v, v
    if vr == "TM":
        v = f"{p.rng.randrange(24):02d}{p.rng.randrange(60):02d}{p.rng.randrange(60):02d}.{p.counter % 1000:03d}"
        p.counter += 1
        return v, v
    tok = p.token()
    if vr == "PN":
        return f"DOE{tok}^JANE", tok
    if vr == "SH":
        return tok, tok
    return f"Synthetic PHI {tok} St Mary Hospital", tok


def _plant_header(ds: Dataset, p: Planter, path: list[str], attrs, category: str, day: dt.date,
                  may_remove: bool) -> None:
    for tag, vr in attrs:
        if category == "dates" and vr not in ("DA", "DT"):
            continue
        action, strict = required_action(tag, vr)
        if action == "keep":
            continue
        value, token = _value(vr, p, day + dt.timedelta(days=p.rng.randrange(0, 400)))
        ds.add_new(tag, vr, value)
        cat = category
        if tag in ALT_CALENDAR:
            cat, value, token = "alt_calendar", "", ""
            value = f"1402/{p.rng.randrange(1, 12):02d}/{p.rng.randrange(1, 28):02d} {p.token()}"
            token = value.split()[-1]
            ds[tag].value = value
        elif vr in ("DA", "DT"):
            cat = "dates" if not path else category
        elif vr == "TM":
            cat = "times" if not path else category
        p.add(cat, action, {"path": path, "tag": f"{tag.group:04X}{tag.elem:04X}", "vr": vr},
              token if vr not in ("DA", "DT", "TM") else "", planted=value, strict=strict and not may_remove)


def _plant_nested(ds: Dataset, p: Planter, attrs, day: dt.date) -> None:
    """Planted items inside kept sequences at depths 1, 2 and 3."""
    chosen = [a for a in attrs if a[1] in ("PN", "LO", "SH", "DA")][:: max(1, len(attrs) // 12)]
    parent = ds
    path: list[str] = []
    for depth, keyword in enumerate(NEST, start=1):
        item = Dataset()
        if keyword != "DerivationCodeSequence":
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
            item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{p.rng.randrange(10 ** 8)}.{depth}"
        else:
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113076", "DCM", "Segmentation"
        setattr(parent, keyword, Sequence([item]))
        path = [*path, keyword]
        _plant_header(item, p, list(path), chosen, f"sequences_depth{depth}", day, may_remove=True)
        parent = item


PRIVATE_KNOWN = (("GEMS_IDEN_01", 0x0009, 0x02, "LO"), ("SIEMENS MEDCOM HEADER", 0x0029, 0x10, "LO"),
                 ("Philips Imaging DD 001", 0x2001, 0x1D, "LO"), ("GEMS_PATI_01", 0x0011, 0x10, "LO"))
PRIVATE_UNKNOWN = (("ACME SYNTH 1.0", 0x0013, 0x01, "LO"), ("RL BENCH PRIVATE", 0x0015, 0x20, "UN"),
                   ("ZZ HOSPITAL PACS", 0x0019, 0x30, "UT"))


def _plant_private(ds: Dataset, p: Planter) -> None:
    for category, table in (("private_known", PRIVATE_KNOWN), ("private_unknown", PRIVATE_UNKNOWN)):
        for creator, group, elem, vr in table:
            block = ds.private_block(group, creator, create=True)
            tok = p.token()
            text = f"PATIENT DOE{tok}"
            block.add_new(elem, vr, text.encode() if vr == "UN" else text)
            p.add(category, "remove", {"path": [], "tag": f"{group:04X}xx{elem:02X}", "vr": vr}, tok)
        # inside a sequence too
        seq_tok = p.token()
        item = Dataset()
        item.add_new(Tag(0x0009 if category == "private_known" else 0x0013, 0x0010), "LO",
                     "GEMS_IDEN_01" if category == "private_known" else "ACME SYNTH 1.0")
        item.add_new(Tag(0x0009 if category == "private_known" else 0x0013, 0x1005), "LO", f"MRN {seq_tok}")
        ds.add_new(Tag(0x0009 if category == "private_known" else 0x0013, 0x1040), "SQ", Sequence([item]))
        p.add(category, "remove", {"path": ["private SQ"], "tag": "private nested", "vr": "LO"}, seq_tok)


def _plant_meta_preamble(ds: Dataset, p: Planter) -> None:
    tok = p.token(4)
    ds.file_meta.SourceApplicationEntityTitle = f"AE{tok}"[:16]
    p.add("file_meta", "remove", {"path": ["file_meta"], "tag": "00020016", "vr": "AE"}, f"AE{tok}"[:16])
    tok = p.token()
    ds.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.10.999.1"
    ds.file_meta.PrivateInformation = f"PATIENT SMITH{tok} ".encode()
    p.add("file_meta", "remove", {"path": ["file_meta"], "tag": "00020102", "vr": "OB"}, tok)
    tok = p.token(4)
    ds.file_meta.SendingApplicationEntityTitle = f"SA{tok}"[:16]
    p.add("file_meta", "remove", {"path": ["file_meta"], "tag": "00020017", "vr": "AE"}, f"SA{tok}"[:16])
    tok = p.token()
    ds.preamble = f"PATIENT JONES{tok} MRN".encode().ljust(128, b"\x00")
    p.add("preamble", "remove", {"path": ["preamble"], "tag": "preamble", "vr": ""}, tok)


def _plant_overlay_curve(ds: Dataset, p: Planter, text_mask) -> None:
    rows, cols = int(ds.Rows), int(ds.Columns)
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    bits = np.packbits(text_mask(rows, cols).reshape(-1), bitorder="little")
    ds.add_new(0x60003000, "OW", bits.tobytes() + (b"\x00" if len(bits) % 2 else b""))
    p.add("overlays", "remove", {"path": [], "tag": "60003000", "vr": "OW"}, "", planted="overlay bitmap")
    for tag in (0x60000022, 0x60001500):
        tok = p.token()
        ds.add_new(tag, "LO", f"DOE{tok} 19700101")
        p.add("overlays", "remove", {"path": [], "tag": f"{tag:08X}", "vr": "LO"}, tok)
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50000010, "US", 4)
    ds.add_new(0x50000020, "CS", "TAC")
    for tag in (0x50000022, 0x50002500):
        tok = p.token()
        ds.add_new(tag, "LO", f"MRN {tok}")
        p.add("curves", "remove", {"path": [], "tag": f"{tag:08X}", "vr": "LO"}, tok)
    tok = p.token()
    ds.add_new(0x50003000, "OB", f"CURVE {tok} ".encode())
    p.add("curves", "remove", {"path": [], "tag": "50003000", "vr": "OB"}, tok)


def _plant_jpeg(ds: Dataset, p: Planter) -> bool:
    ts = str(ds.file_meta.TransferSyntaxUID)
    if ts not in JPEG_TS:
        return False
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = list(generate_frames(ds.PixelData, number_of_frames=n))
    com_tok, app_tok = p.token(), p.token()
    com = b"PATIENT " + com_tok.encode()
    exif = b"Exif\x00\x00" + b"Artist DOE" + app_tok.encode() + b"\x00"
    segs = (b"\xff\xfe" + (len(com) + 2).to_bytes(2, "big") + com
            + b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif)
    ds.PixelData = encapsulate([f[:2] + segs + f[2:] for f in frames], has_bot=False)
    ds["PixelData"].is_undefined_length = True
    p.add("jpeg_segments", "remove", {"path": ["PixelData"], "tag": "COM", "vr": ""}, com_tok)
    p.add("jpeg_segments", "remove", {"path": ["PixelData"], "tag": "APP1", "vr": ""}, app_tok)
    return True


#: Text already burned into source images (not planted), as (reason, sources sharing the picture, boxes): each
#: box (x0, y0, x1, y1; end exclusive) drawn round one line of text after looking at the rendered image, then
#: tightened to the pixels that stand out from the box's edge. Scored as ``preexisting_text`` (remove) and left
#: out of ``pixels_kept``. A box holds the print only, not a label's own background or a bar under it: the
#: scorer takes the background from a ring round the box and the print as what differs from it, so a box round
#: a white label on black would score the label's white, not its grey print (checked for every box: no row of a
#: box is print from edge to edge). Only these sources were reviewed; single characters (orientation letters, a probe
#: marker) and logos are not listed. examples_palette is the top 350 rows of the OBXXXX1A picture: boxes past
#: an image's edge are dropped for it.
PREEXISTING_TEXT: dict[str, tuple[str, tuple[str, ...], dict[str, tuple[int, int, int, int]]]] = {
    'US1': (
        'GE ultrasound: site, initials, IDs, clock time, probe; scale labels; annotation; output',
        ('US1_UNCR.dcm', 'US1_UNCI.dcm', 'US1_J2KR.dcm', 'US1_J2KI.dcm', 'examples_jpeg2k.dcm'),
        {
        'BAPTIST MED CTR': (20, 26, 168, 38), '630P630': (20, 42, 85, 54), '78F78': (20, 58, 68, 70),
        '44CG43': (20, 74, 78, 86), 'IM#2': (22, 90, 58, 102), '+2:09:04': (280, 38, 358, 54),
        '3cm3cm M12L': (500, 25, 618, 40), 'MSCSKEL': (550, 40, 618, 54), 'CINE 0118': (530, 58, 618, 70),
        '22G22': (570, 74, 618, 86), '78DR78': (560, 90, 622, 103), 'PWR left top': (10, 138, 38, 150),
        'PWR left bottom': (10, 216, 40, 230), 'PWR right top': (596, 138, 628, 151),
        'PWR right bottom': (596, 216, 630, 232), 'LYMPH NODE': (250, 362, 358, 374),
        'TIS<0.4 MI=0.8 AO=100%': (400, 458, 618, 470),
        }),
    'US1 half size': (
        'the same GE ultrasound picture at 320 x 240',
        ('examples_rgb_color.dcm',),
        {
        'BAPTIST MED CTR': (10, 13, 84, 19), '630P630': (10, 21, 42, 27), '78F78': (10, 29, 34, 35),
        '44CG43': (10, 37, 39, 43), 'IM#2': (7, 45, 29, 52), '+2:09:04': (140, 19, 179, 27),
        '3cm3cm M12L': (250, 12, 309, 20), 'MSCSKEL': (275, 20, 309, 27), 'CINE 0118': (265, 29, 309, 35),
        '22G22': (285, 37, 309, 43), '78DR78': (280, 45, 311, 52), 'PWR left top': (5, 69, 19, 75),
        'PWR left bottom': (5, 108, 20, 115), 'PWR right top': (298, 69, 314, 76),
        'PWR right bottom': (298, 108, 315, 116), 'LYMPH NODE': (125, 181, 179, 187),
        'TIS<0.4 MI=0.8 AO=100%': (200, 229, 309, 235),
        }),
    'ALOKA': (
        'Aloka ultrasound: institution, date and time bar, frame counters, settings, body part',
        ('gdcm-US-ALOKA-16.dcm', 'gdcm-US-ALOKA-16_big.dcm'),
        {
        '127/128': (248, 34, 330, 50), '20Hz (left)': (291, 49, 327, 59), '110/111': (553, 34, 640, 50),
        '20Hz (right)': (601, 49, 637, 59), 'LO': (81, 59, 102, 74), '9123 5.0 R15 G66 C6 A2': (36, 433, 285, 443),
        '9123 5.0 R15 G63 C6 A2': (338, 433, 585, 443), '3:PELVIS': (21, 457, 98, 467),
        '*WESTWAY MEDICAL*': (81, 1, 248, 11), 'ULTRASOUND': (111, 13, 208, 23), '24-MAY-02': (551, 1, 636, 11),
        'M 11:24:20': (533, 13, 636, 23), 'DVA: 94%': (551, 457, 629, 467),
        }),
    'Philips OB': (
        'Philips obstetric ultrasound: exam ID, date and time bar, settings column, measurement',
        ('OBXXXX1A.dcm', 'OBXXXX1A_rle.dcm', 'OBXXXX1A_expb.dcm', 'examples_palette.dcm'),
        {
        '11-05-25-142825': (97, 37, 262, 49), 'Philips Healthcare': (328, 36, 509, 52),
        'TIB 0.2': (575, 37, 645, 49), '2:56:22 PM': (670, 37, 779, 49), 'MI 1.1': (575, 10, 634, 22),
        '5/25/2011': (670, 9, 772, 25), 'OB': (95, 10, 119, 22), 'PHILIPS': (11, 9, 74, 22),
        'Gen OB': (4, 68, 73, 80), 'C5-1': (4, 87, 46, 99), '28Hz': (4, 106, 50, 118), '11cm': (6, 125, 52, 137),
        '2D': (4, 163, 27, 175), 'HGen': (12, 185, 61, 196), 'Gn 60': (12, 204, 66, 215),
        'C 61': (12, 223, 50, 234), '3/3/4': (12, 241, 76, 253), '+ Cist Mag 1.06 cm': (127, 88, 302, 103),
        '1.8 3.6': (143, 509, 189, 518),
        }),
    'GDCM text': (
        "GDCM's colour text test image: the words red, green, blue",
        ('GDCMJ2K_TextGBR.dcm',),
        {
        'red': (31, 45, 153, 101), 'green': (28, 159, 252, 215), 'blue': (31, 246, 196, 302),
        }),
    'SMPTE': (
        'SMPTE test pattern (LUT test images): percent labels, title, copyright line',
        ('vlut_04.dcm', 'mlut_18.dcm'),
        {
        '30%': (78, 175, 98, 184), '40%': (169, 159, 189, 168), '50% (left)': (220, 159, 240, 168),
        '50% (right)': (271, 159, 291, 168), '60%': (322, 159, 342, 168), '70%': (414, 175, 434, 184),
        '20%': (78, 226, 98, 235), '80%': (410, 221, 434, 239), '10%': (78, 277, 98, 286),
        '90%': (410, 272, 434, 290), '0% (left)': (84, 328, 98, 337), '0% (centre)': (223, 319, 237, 328),
        '95%': (271, 319, 291, 328), '5%': (223, 337, 237, 346), '100% (centre)': (268, 337, 294, 346),
        '100% (right)': (410, 323, 440, 341), 'SMPTE TEST PATTERN': (193, 474, 322, 491),
        'Rev. 3/1/91 Copyright 1983': (189, 486, 323, 503),
        }),
}


def _fonts() -> list[Path]:
    found = [d / f for f in FONTS for d in FONT_DIRS if (d / f).is_file()]
    if not found:
        raise FileNotFoundError("no TrueType fonts found (Debian: fonts-dejavu-core)")
    return found


def render_text(shape: tuple[int, int], text: str, font: str, size: int, xy: tuple[int, int]) -> np.ndarray:
    """Boolean glyph mask of ``text`` drawn at ``xy`` (deterministic: the scorer re-renders it)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(img).text(xy, text, fill=255, font=ImageFont.truetype(font, size))
    return np.asarray(img) > 127


def _burn(ds: Dataset, p: Planter, day: dt.date, source: str = "") -> list[dict]:
    """Names, dates and IDs burned into a single-frame image: several fonts, sizes, contrasts and positions,
    including over the middle of the image (anatomy). Returns the render specs (also in the manifest)."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    arr = ds.pixel_array.copy()
    rows, cols = arr.shape[:2]
    grey = arr if arr.ndim == 2 else arr[..., 0]
    lo, hi = int(grey.min()), int(grey.max())
    vmax = (1 << int(ds.BitsStored)) - 1 if not int(ds.get("PixelRepresentation", 0)) else hi
    fonts = _fonts()
    texts = [f"DOE{p.token(4)}^JOHN", day.strftime("%d-%b-%Y").upper(), f"MRN {p.token(4)}",
             f"{p.token(3)} ST JUDE"]
    specs = []
    spots = [(0.03, 0.03), (0.55, 0.04), (0.3, 0.45), (0.05, 0.88), (0.45, 0.3), (0.5, 0.7)]
    p.rng.shuffle(spots)  # the middle ones lie over anatomy
    for i, text in enumerate(texts):
        size = max(12, int(min(rows, cols) * p.rng.choice((0.025, 0.035, 0.05))))
        font = str(fonts[(i + p.counter) % len(fonts)])
        fx, fy = spots[i]
        xy = (int(cols * fx), int(rows * fy))
        mask = render_text((rows, cols), text, font, size, xy)
        if mask.sum() < 20:
            continue
        ys, xs = np.nonzero(mask)
        background = float(np.median(grey[ys.min():ys.max() + 1, xs.min():xs.max() + 1]))
        contrast = p.rng.choice(("max", "min", "mid"))
        value = {"max": max(vmax, hi), "min": lo, "mid": lo + (hi - lo) * 3 // 4}[contrast]
        if abs(value - background) < 0.25 * (hi - lo):  # invisible on this background: the other extreme
            contrast, value = ("min", lo) if background - lo > hi - background else ("max", max(vmax, hi))
        arr[mask] = value
        spec = {"text": text, "font": font, "size": size, "xy": list(xy), "contrast": contrast, "value": int(value)}
        specs.append(spec)
        p.add("burned_in_text", "remove", {"path": ["PixelData"], "tag": "pixels", "vr": "", "render": spec},
              "", planted=text)
    for _reason, sources, boxes in PREEXISTING_TEXT.values():
        if source in sources:
            for label, box in boxes.items():
                if box[2] <= cols and box[3] <= rows:
                    p.add("preexisting_text", "remove", {"path": ["PixelData"], "tag": "pixels", "vr": "",
                                                         "box": list(box)}, "", planted=label)
    ds.PixelData = arr.tobytes()
    p.add("pixels_kept", "keep", {"path": ["PixelData"], "tag": "pixels", "vr": ""}, "", planted="anatomy")
    return specs


def _keep_items(ds: Dataset, p: Planter) -> None:
    for keyword, value in KEEP.items():
        if value is not None:
            setattr(ds, keyword, value)
        if keyword in ds and ds[keyword].value not in (None, ""):
            p.add("kept_attributes", "keep", {"path": [], "tag": keyword, "vr": ds[keyword].VR}, "",
                  planted=str(ds[keyword].value), strict=True)


def _uids(ds: Dataset, p: Planter) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        uid = f"1.2.826.0.1.3680043.10.999.{p.rng.randrange(10 ** 12)}.{p.counter}"
        p.counter += 1
        setattr(ds, keyword, uid)
        p.add("uids", "replace", {"path": [], "tag": keyword, "vr": "UI"}, uid, strict=True)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def burnable(ds: Dataset) -> bool:
    return (int(ds.get("NumberOfFrames", 1) or 1) == 1 and int(ds.Rows) >= 200 and int(ds.Columns) >= 200
            and int(ds.get("BitsAllocated", 0)) in (8, 16) and int(ds.get("SamplesPerPixel", 1)) in (1, 3))


def make_file(src: Path, dst: Path, seed: int) -> list[dict]:
    """Plant PHI into a copy of ``src`` written to ``dst``; returns the manifest items (empty: not usable)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        if "PixelData" not in ds or "SOPClassUID" not in ds or "Rows" not in ds:
            return []
        ds.pixel_array  # noqa: B018 - only images whose pixels decode (truncated or undecodable ones are listed)
        rng = random.Random(f"{seed}:{src.name}")
        p = Planter(rng)
        day = dt.date(1990, 1, 1) + dt.timedelta(days=rng.randrange(12000))
        ds = copy.deepcopy(ds)
        ds.remove_private_tags()
        if "PatientID" not in ds:
            ds.PatientID = "P" + p.token(4)
        attrs = plantable()
        # the pixel step first: it may decompress, after which JPEG segments cannot be planted
        burn = burnable(ds) and str(ds.file_meta.TransferSyntaxUID) not in JPEG_TS
        if burn:
            try:
                _burn(ds, p, day, src.name)
            except Exception:  # pixel data this pydicom cannot decode: header items only
                p.items = [i for i in p.items if i["category"] not in ("burned_in_text", "preexisting_text",
                                                                       "pixels_kept")]
        _plant_header(ds, p, [], attrs, "header_text", day, may_remove=False)
        _plant_nested(ds, p, attrs, day)
        _plant_private(ds, p)
        _plant_meta_preamble(ds, p)
        _plant_overlay_curve(ds, p, lambda r, c: render_text((r, c), "DOE^JOHN", str(_fonts()[0]),
                                                             max(10, r // 20), (4, 4)))
        _plant_jpeg(ds, p)
        _uids(ds, p)
        _keep_items(ds, p)
        ds.BurnedInAnnotation = "NO" if rng.random() < 0.5 else "YES"  # headers lie; the pixels are what counts
        ds.save_as(dst, enforce_file_format=True)
    return p.items


def default_sources(data_dir: Path | None) -> list[Path]:
    """pydicom's test files, pydicom-data's files and the SIIM chest DICOM (when ``data_dir`` is given)."""
    from pydicom.data.data_manager import DATA_ROOT, DataTypes, external_data_sources

    # what pydicom.data.get_testdata_files("*.dcm") lists, less its attempt to download the files of pydicom's
    # online list that are not installed (with no network it waits about 15 s for that to fail, every call)
    files = list((Path(DATA_ROOT) / "test_files").glob("*.dcm"))
    for source in external_data_sources().values():
        files += [Path(f) for f in source.get_paths("*.dcm", DataTypes.DATASET)]
    try:
        import data_store

        files += sorted((Path(data_store.__file__).parent / "data").rglob("*.dcm"))
    except ImportError:
        pass
    if data_dir is not None:
        files += sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    seen, out = set(), []
    for f in files:
        if f.name not in seen:
            seen.add(f.name)
            out.append(f)
    return out


def build_corpus(sources: list[Path], out_dir: Path, seed: int = 19) -> Path:
    """Write planted copies of ``sources`` into ``out_dir/corpus`` and ``out_dir/manifest.json``."""
    corpus = out_dir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    manifest = {"seed": seed, "rules": "PS3.15 Annex E basic + 113107 + 113108 + 113101", "files": {}}
    for i, src in enumerate(sources):
        name = f"case{i:04d}.dcm"
        try:
            items = make_file(src, corpus / name, seed)
        except Exception:  # a source pydicom cannot round-trip is left out (and listed)
            manifest.setdefault("skipped", []).append(src.name)
            (corpus / name).unlink(missing_ok=True)
            continue
        if items:
            manifest["files"][name] = {"source": src.name, "items": items}
        else:
            manifest.setdefault("skipped", []).append(src.name)
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path
