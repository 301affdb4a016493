"""Where an encoded image ends, so bytes appended after it are found (issue 15: a valid PNG
with a ZIP holding a pickle behind it was stored byte for byte and pushed to the remote).

Decoders stop at the image's end and ignore what follows; the raw store keeps a file's
bytes as they came, so whatever rides behind an image would travel with the dataset.
Policy: such a file is quarantined with reason `trailing_data` (its own code), unless what
follows is zero padding (some cameras and editors pad files with zeros). Formats whose end
cannot be found from their structure (TIFF: offsets anywhere) are not checked.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn: markers without a length


def trailing_bytes(data: bytes, image_format: str) -> int:
    """How many non-padding bytes follow the image's end (0: none, or not checkable)."""
    end = encoded_end(data, image_format)
    if end is None or end >= len(data):
        return 0
    rest = data[end:]
    return 0 if not rest.strip(b"\0") else len(rest)


def encoded_end(data: bytes, image_format: str) -> int | None:
    """The offset just past the image's last byte by its format's structure; None when the
    format is not checked or the structure cannot be followed (the decoder judged it)."""
    finder = {"PNG": png_end, "JPEG": jpeg_end, "WEBP": riff_end, "BMP": bmp_end}.get(image_format)
    try:
        return finder(data) if finder else None
    except (IndexError, struct.error):
        return None


def png_end(data: bytes) -> int | None:
    """Chunks (length, type, data, CRC) from the signature to IEND."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length
        if kind == b"IEND":
            return pos
    return None


def jpeg_end(data: bytes) -> int | None:
    """Markers from SOI to EOI; after each SOS, the entropy-coded data up to the next marker
    (0xFF followed by anything but a stuffed 0x00 or a restart marker)."""
    pos = 2  # past SOI
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return pos + 2
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
        if marker == 0xDA:  # SOS: scan to the next real marker
            pos = next_marker(data, pos)
    return None


def next_marker(data: bytes, pos: int) -> int:
    while True:
        pos = data.index(b"\xff", pos)
        following = data[pos + 1]
        if following != 0x00 and following not in JPEG_STANDALONE and following != 0xFF:
            return pos
        pos += 1 if following == 0xFF else 2


def riff_end(data: bytes) -> int | None:
    """RIFF: the size after the tag covers the rest (padded to an even length)."""
    (size,) = struct.unpack("<I", data[4:8])
    return 8 + size + (size & 1)


def bmp_end(data: bytes) -> int | None:
    """The file size in the header; 0 (some writers leave it so) cannot be checked."""
    (size,) = struct.unpack("<I", data[2:6])
    return size or None
