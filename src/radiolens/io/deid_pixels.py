"""Metadata segments inside compressed pixel data: removed by :func:`strip_stream_metadata` during de-identification.

A JPEG stream can carry comments (COM) and application segments (APP0..APP15: EXIF with dates and device
serials, XMP, Photoshop IPTC with names, thumbnails); a JPEG 2000 codestream can carry comments (COM) and,
wrapped in a JP2 file, XML and UUID boxes. DICOM de-identification that copies the pixel data as it is
passes all of that on. Only the segments a decoder needs are kept; the entropy-coded image data is copied
byte for byte, so decoded pixels do not change (the tests decode before and after).

Why hand-written: pydicom parses JPEG headers only to read parameters and has no writer for them; Pillow,
GDCM and pylibjpeg decode and re-encode (lossy for baseline JPEG, and a re-encode is a different stream);
``jpegtran -copy none`` handles DCT JPEG only (not JPEG-LS or JPEG 2000) and rewrites the entropy coding.
Marker syntax is small and fixed (ITU T.81 B.1, T.87 C.1, T.800 A.1), so a strict parser that refuses
anything it does not understand (typed ``InputError``, nothing written) is the safer choice.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames, parse_basic_offsets
from pydicom.uid import UID, RLELossless

from radiolens.errors import InputError
from radiolens.io.formats import JPEG_SOI

#: JPEG (ITU T.81) processes: baseline, extended, lossless, and the retired process UIDs.
_JPEG = frozenset({f"1.2.840.10008.1.2.4.{n}" for n in range(50, 67)} | {"1.2.840.10008.1.2.4.70"})
_JPEG_LS = frozenset({"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"})
#: JPEG 2000 (Part 1 and Part 2 multi-component) and High-Throughput JPEG 2000.
_J2K = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
                  "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                  "1.2.840.10008.1.2.4.203"})


class StreamError(InputError):
    """Compressed pixel data that cannot be parsed, so cannot be checked for embedded metadata."""


def strip_stream_metadata(ds: Dataset) -> int:
    """Remove comment / application segments from every frame of encapsulated Pixel Data in ``ds``.

    Returns how many segments were removed or cut down; 0 leaves Pixel Data byte-identical. Encapsulated
    transfer syntaxes this cannot check (MPEG, HEVC, JPEG XL...) are refused rather than passed on.
    """
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or "PixelData" not in ds or not UID(str(ts)).is_encapsulated:
        return 0
    ts = str(ts)
    if ts == RLELossless:  # RLE segments hold pixel bytes only
        return 0
    if ts in _JPEG or ts in _JPEG_LS:
        def clean(frame: bytes) -> tuple[bytes, int]:
            return _clean_jpeg(frame, ts in _JPEG_LS)
    elif ts in _J2K:
        clean = _clean_j2k
    else:
        raise StreamError(f"compressed pixel data in transfer syntax {UID(ts).name} cannot be checked for "
                          "embedded metadata; refusing to pass it on")
    data = bytes(ds.PixelData)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths))
    try:
        frames = list(generate_frames(data, number_of_frames=n_frames, extended_offsets=extended))
        has_bot = bool(parse_basic_offsets(data))
    except Exception as exc:  # pydicom raises ValueError/struct.error on broken item structure
        raise StreamError(f"encapsulated pixel data is malformed ({type(exc).__name__})") from None
    cleaned, removed = [], 0
    for frame in frames:
        new, n = clean(frame)
        cleaned.append(new)
        removed += n
    if not removed:
        return 0
    if extended is not None:
        ds.PixelData, eot, lengths = encapsulate_extended(cleaned)
        ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = eot, lengths
    else:
        ds.PixelData = encapsulate(cleaned, has_bot=has_bot)
    ds["PixelData"].is_undefined_length = True
    return removed


# -- JPEG and JPEG-LS ---------------------------------------------------------------------------------------
def _kept_app(marker: int, payload: bytes, jpeg_ls: bool) -> bytes | None:
    """The part of an APPn segment a decoder needs, or None to drop it."""
    if marker == 0xE0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
        # JFIF header: its presence tells decoders 3 components are YCbCr; the thumbnail is dropped.
        return payload[:12] + b"\x00\x00"
    if marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
        return payload[:12]  # Adobe: version, flags and the colour transform flag decoders use
    if jpeg_ls and marker == 0xE8 and payload.startswith(b"mrfx") and len(payload) >= 5:
        return payload[:5]  # HP colour transform for JPEG-LS
    return None


def _clean_jpeg(frame: bytes, jpeg_ls: bool) -> tuple[bytes, int]:
    n = len(frame)
    if frame[:2] != JPEG_SOI:
        raise StreamError("compressed frame is not a JPEG stream (no SOI marker)")
    out, i, removed = bytearray(JPEG_SOI), 2, 0
    while True:
        if i >= n or frame[i] != 0xFF:
            raise StreamError("JPEG stream is malformed (expected a marker)")
        while i < n and frame[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            raise StreamError("JPEG stream ends without an EOI marker")
        marker = frame[i]
        i += 1
        if marker == 0x00:
            raise StreamError("JPEG stream is malformed (stuffed byte outside scan data)")
        if marker == 0xD9:  # EOI: anything after it (padding, hidden data) is dropped
            out += b"\xff\xd9"
            if frame[i:].strip(b"\x00"):
                removed += 1
            return bytes(out), removed
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            out += bytes((0xFF, marker))
            continue
        if i + 2 > n:
            raise StreamError("JPEG stream is truncated inside a marker segment")
        length = int.from_bytes(frame[i:i + 2], "big")
        if length < 2 or i + length > n:
            raise StreamError("JPEG marker segment length is invalid")
        payload = frame[i + 2:i + length]
        i += length
        if marker == 0xFE or 0xE0 <= marker <= 0xEF:
            kept = None if marker == 0xFE else _kept_app(marker, payload, jpeg_ls)
            if kept != payload:
                removed += 1
            if kept is not None:
                out += bytes((0xFF, marker)) + (len(kept) + 2).to_bytes(2, "big") + kept
            continue
        out += bytes((0xFF, marker)) + frame[i - length:i]
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker that is not RSTn
            j = i
            while True:
                j = frame.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise StreamError("JPEG scan data ends without a marker")
                nxt = frame[j + 1]
                # T.81: 0xFF in scan data is followed by 0x00; T.87 (JPEG-LS): by a byte with the top bit clear
                is_data = nxt < 0x80 if jpeg_ls else nxt == 0x00
                if is_data or 0xD0 <= nxt <= 0xD7:
                    j += 2
                    continue
                break
            out += frame[i:j]
            i = j


# -- JPEG 2000 ------------------------------------------------------------------------------------------------
_SOC, _SOT, _SOD, _EOC, _COM, _TLM = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9, 0xFF64, 0xFF55


def _jp2_codestream(data: bytes) -> bytes:
    """The contiguous codestream box of a JP2 file (DICOM wants the bare codestream; XML/UUID boxes go)."""
    i = 0
    while i + 8 <= len(data):
        size, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        head = 8
        if size == 1:
            size, head = int.from_bytes(data[i + 8:i + 16], "big"), 16
        elif size == 0:
            size = len(data) - i
        if size < head or i + size > len(data):
            break
        if kind == b"jp2c":
            return data[i + head:i + size]
        i += size
    raise StreamError("JP2 pixel data without a readable codestream box")


def _u16(data: bytes, i: int) -> int:
    if i + 2 > len(data):
        raise StreamError("JPEG 2000 codestream is truncated")
    return int.from_bytes(data[i:i + 2], "big")


def _clean_j2k(frame: bytes) -> tuple[bytes, int]:
    removed = 0
    if frame[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":  # JP2 signature box
        frame, removed = _jp2_codestream(frame), 1
    if _u16(frame, 0) != _SOC:
        raise StreamError("compressed frame is not a JPEG 2000 codestream (no SOC marker)")
    main, i = bytearray(b"\xff\x4f"), 2
    tlm_at = []
    while True:  # main header: marker segments up to the first tile-part
        marker = _u16(frame, i)
        if marker == _SOT:
            break
        if marker >> 8 != 0xFF:
            raise StreamError("JPEG 2000 main header is malformed")
        length = _u16(frame, i + 2)
        if length < 2 or i + 2 + length > len(frame):
            raise StreamError("JPEG 2000 marker segment length is invalid")
        if marker == _COM:
            removed += 1
        else:
            if marker == _TLM:
                tlm_at.append((len(main), length + 2))
            main += frame[i:i + 2 + length]
        i += 2 + length
    tiles, tile_changed = bytearray(), False
    while _u16(frame, i) == _SOT:  # tile-parts: SOT, header segments, SOD, data; Psot counts them all
        if _u16(frame, i + 2) != 10:
            raise StreamError("JPEG 2000 SOT marker is malformed")
        psot = int.from_bytes(frame[i + 6:i + 10], "big")
        # Psot 0: the last tile-part, up to EOC (packet data never holds 0xFF 0xD9: T.800 bit stuffing keeps a
        # byte after 0xFF below 0x90, so the last 0xFF 0xD9 is EOC even with padding after it)
        end = i + psot if psot else frame.rfind(b"\xff\xd9")
        if end > len(frame) or end <= i + 12:
            raise StreamError("JPEG 2000 tile-part length is invalid")
        header, j = bytearray(), i + 12
        while (marker := _u16(frame, j)) != _SOD:
            length = _u16(frame, j + 2)
            if marker >> 8 != 0xFF or length < 2 or j + 2 + length > end:
                raise StreamError("JPEG 2000 tile-part header is malformed")
            if marker == _COM:
                removed += 1
                tile_changed = True
            else:
                header += frame[j:j + 2 + length]
            j += 2 + length
        body = frame[j:end]
        new_psot = 12 + len(header) + len(body) if psot else 0
        tiles += frame[i:i + 6] + new_psot.to_bytes(4, "big") + frame[i + 10:i + 12] + header + body
        i = end
    if _u16(frame, i) != _EOC:
        raise StreamError("JPEG 2000 codestream does not end with EOC")
    if frame[i + 2:].strip(b"\x00"):
        removed += 1  # bytes after EOC
    if tile_changed:  # TLM indexes tile-part lengths, which changed; it is optional, so it goes
        for at, size in reversed(tlm_at):
            del main[at:at + size]
    return bytes(main + tiles + b"\xff\xd9"), removed
