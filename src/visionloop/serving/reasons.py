"""Why an image or a request was refused: stable reason codes, their HTTP status and text.

Image reasons are ingest's (`FileReason`), so a file that ingest would quarantine is refused
at prediction time with the same code; request reasons are the server's own. docs/serving.md
lists them all.
"""

from __future__ import annotations

from enum import StrEnum

from visionloop.data.ingest.reasons import FileReason
from visionloop.errors import VisionloopError


class RequestReason(StrEnum):
    REQUEST_TOO_LARGE = "request_too_large"
    TOO_MANY_IMAGES = "too_many_images"
    EMPTY_REQUEST = "empty_request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    BAD_JSON = "bad_json"
    BAD_BASE64 = "bad_base64"
    BAD_MULTIPART = "bad_multipart"
    BAD_PARAMETER = "bad_parameter"
    NO_MODEL = "no_model"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"


HTTP_STATUS: dict[str, int] = {
    FileReason.ZERO_BYTES: 400,
    FileReason.NOT_AN_IMAGE: 415,
    FileReason.FORMAT_NOT_ALLOWED: 415,
    FileReason.TRUNCATED: 400,
    FileReason.CORRUPT: 400,
    FileReason.DECOMPRESSION_BOMB: 413,
    FileReason.TOO_SMALL: 400,
    FileReason.TOO_LARGE: 413,
    RequestReason.REQUEST_TOO_LARGE: 413,
    RequestReason.TOO_MANY_IMAGES: 400,
    RequestReason.EMPTY_REQUEST: 400,
    RequestReason.UNSUPPORTED_MEDIA_TYPE: 415,
    RequestReason.BAD_JSON: 400,
    RequestReason.BAD_BASE64: 400,
    RequestReason.BAD_MULTIPART: 400,
    RequestReason.BAD_PARAMETER: 400,
    RequestReason.NO_MODEL: 503,
    RequestReason.NOT_FOUND: 404,
    RequestReason.METHOD_NOT_ALLOWED: 405,
    RequestReason.INTERNAL_ERROR: 500,
}

# What the client can do about each image reason (the message's second half).
IMAGE_ADVICE: dict[str, str] = {
    FileReason.ZERO_BYTES: "the file is empty; send the image's bytes",
    FileReason.NOT_AN_IMAGE: "the content is not an image; send a JPEG, PNG, WEBP or BMP file",
    FileReason.FORMAT_NOT_ALLOWED: "convert it to one of the accepted formats",
    FileReason.TRUNCATED: "the image data ends early; send the whole file",
    FileReason.CORRUPT: "the image data is broken; send an intact file",
    FileReason.DECOMPRESSION_BOMB: "downscale the image before sending it",
    FileReason.TOO_SMALL: "send a larger image",
    FileReason.TOO_LARGE: "downscale the image before sending it",
    FileReason.FILE_TOO_LARGE: "the file is larger than data.ingest.max_file_bytes",
    FileReason.UNREADABLE: "check the file's permissions",
    FileReason.TRAILING_DATA: "send the image alone (export or re-save it)",
}


class BadImage(VisionloopError):
    """One image cannot be predicted; `reason` is a FileReason code."""

    def __init__(self, reason: str, detail: str) -> None:
        advice = IMAGE_ADVICE.get(reason, "")
        super().__init__(f"{reason}: {detail}" + (f" ({advice})" if advice else ""))
        self.reason = str(reason)
        self.detail = detail


class RequestRefused(VisionloopError):
    """A request the server answers with a 4xx/5xx status and a JSON reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = str(reason)
        self.status = HTTP_STATUS.get(self.reason, 400)
