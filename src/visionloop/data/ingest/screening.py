"""Judging one file of a drop: is it a whole image within the rules, and what is it?

Pure: bytes and rules in, a verdict out. Thread-safe, so a drop's files are screened in a
thread pool (Pillow releases the GIL while decoding).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from visionloop.config import IngestConfig
from visionloop.data.ingest.reasons import FileReason
from visionloop.data.ingest.trailing import trailing_bytes
from visionloop.images import EXTENSIONS, FormatNotAllowed, decode


@dataclass(frozen=True)
class Screened:
    sha256: str
    reason: FileReason | None  # None: a whole image within the rules
    detail: str = ""
    format: str = ""
    mode: str = ""
    width: int = 0  # after EXIF orientation
    height: int = 0
    frames: int = 0
    orientation: int = 1
    normalisation: str = ""  # ';'-joined visionloop.images.NORMALISATION_STEPS
    size: int = 0  # bytes of the file as read (what the store keeps)

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.format, self.format.lower())


def screen(data: bytes, rules: IngestConfig) -> Screened:
    """Decode fully once, checking format and pixel cap before, and sides after."""
    return screen_image(data, rules)[0]


def screen_image(data: bytes, rules: IngestConfig) -> tuple[Screened, Image.Image | None]:
    """`screen`, and the upright RGB image when it passed (None when it did not).

    Serving decodes through this too, so a file ingest would quarantine is refused at
    prediction time with the same reason.
    """
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return Screened(sha, FileReason.ZERO_BYTES), None
    try:
        decoded = decode(data, max_pixels=rules.max_pixels, formats=rules.formats)
    except UnidentifiedImageError:
        return Screened(sha, FileReason.NOT_AN_IMAGE, "Pillow cannot identify the content"), None
    except FormatNotAllowed as exc:
        return Screened(sha, FileReason.FORMAT_NOT_ALLOWED, str(exc)), None
    except Image.DecompressionBombError as exc:
        return Screened(sha, FileReason.DECOMPRESSION_BOMB, str(exc)), None
    except OSError as exc:
        return Screened(sha, _broken_reason(exc), str(exc)), None
    except (ValueError, SyntaxError, EOFError) as exc:  # Pillow raises these for broken headers
        return Screened(sha, FileReason.CORRUPT, f"{type(exc).__name__}: {exc}"), None
    width, height = decoded.image.size
    verdict = Screened(
        sha,
        None,
        format=decoded.format,
        mode=decoded.mode,
        width=width,
        height=height,
        frames=decoded.frames,
        orientation=decoded.orientation,
        normalisation=";".join(decoded.steps),
        size=len(data),
    )
    verdict = _check_sides(verdict, rules)
    extra = trailing_bytes(data, decoded.format) if verdict.reason is None else 0
    if extra:
        verdict = _reject(
            verdict,
            FileReason.TRAILING_DATA,
            f"{extra} bytes after the end of the {decoded.format} image",
        )
    return verdict, decoded.image if verdict.reason is None else None


def _broken_reason(exc: OSError) -> FileReason:
    return FileReason.TRUNCATED if "truncated" in str(exc).lower() else FileReason.CORRUPT


def _check_sides(verdict: Screened, rules: IngestConfig) -> Screened:
    size = f"{verdict.width}x{verdict.height}"
    if min(verdict.width, verdict.height) < rules.min_side:
        return _reject(verdict, FileReason.TOO_SMALL, f"{size}: a side below {rules.min_side}")
    if max(verdict.width, verdict.height) > rules.max_side:
        return _reject(verdict, FileReason.TOO_LARGE, f"{size}: a side above {rules.max_side}")
    return verdict


def _reject(verdict: Screened, reason: FileReason, detail: str) -> Screened:
    return Screened(verdict.sha256, reason, detail, format=verdict.format, mode=verdict.mode)
