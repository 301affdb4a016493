"""Reason codes: why a file was quarantined, or why a whole drop was rejected.

The codes are stable strings written to quarantine reasons JSON and to ingest reports;
docs/data.md lists them with these descriptions.
"""

from __future__ import annotations

from enum import StrEnum


class FileReason(StrEnum):
    """One file quarantined; its siblings in the drop are still ingested."""

    ZERO_BYTES = "zero_bytes"
    FILE_TOO_LARGE = "file_too_large"
    UNREADABLE = "unreadable"
    NOT_AN_IMAGE = "not_an_image"
    FORMAT_NOT_ALLOWED = "format_not_allowed"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    LABEL_CONFLICT = "label_conflict"
    NO_LABEL = "no_label"
    TOO_DEEP = "too_deep"
    OS_METADATA = "os_metadata"
    TRAILING_DATA = "trailing_data"


FILE_REASONS: dict[FileReason, str] = {
    FileReason.ZERO_BYTES: "the file is empty",
    FileReason.FILE_TOO_LARGE: "the file is larger than data.ingest.max_file_bytes",
    FileReason.UNREADABLE: "the file could not be read (permissions, I/O error)",
    FileReason.NOT_AN_IMAGE: "the content is not an image Pillow can identify",
    FileReason.FORMAT_NOT_ALLOWED: "a real image, in a format not in data.ingest.formats",
    FileReason.TRUNCATED: "the image data ends early",
    FileReason.CORRUPT: "the image data is broken (bad stream, bad header, bad checksum)",
    FileReason.DECOMPRESSION_BOMB: "width x height exceeds data.ingest.max_pixels",
    FileReason.TOO_SMALL: "a side is shorter than data.ingest.min_side",
    FileReason.TOO_LARGE: "a side is longer than data.ingest.max_side",
    FileReason.LABEL_CONFLICT: "the same bytes arrived with different labels (all copies)",
    FileReason.NO_LABEL: "the file is not inside a class folder",
    FileReason.TOO_DEEP: "the file is nested below its class folder",
    FileReason.OS_METADATA: "operating-system litter (.DS_Store, Thumbs.db, __MACOSX/, ._*)",
    FileReason.TRAILING_DATA: "bytes follow the image's end (an appended file, a motion-photo "
    "video); only the image may enter the store",
}


class DropReason(StrEnum):
    """The whole drop is rejected: nothing of it is ingested."""

    UNSUPPORTED_DROP = "unsupported_drop"
    CORRUPT_ARCHIVE = "corrupt_archive"
    UNREADABLE = "unreadable"
    UNSAFE_PATH = "unsafe_path"
    LINK = "link"
    SPECIAL_FILE = "special_file"
    ENCRYPTED = "encrypted"
    TOO_MANY_MEMBERS = "too_many_members"
    TOO_MANY_BYTES = "too_many_bytes"
    COMPRESSION_RATIO = "compression_ratio"
    DUPLICATE_MEMBER = "duplicate_member"
    BAD_LABEL = "bad_label"
    EMPTY = "empty"


DROP_REASONS: dict[DropReason, str] = {
    DropReason.UNSUPPORTED_DROP: "not a folder, .zip, .tar, .tar.gz or .tgz",
    DropReason.CORRUPT_ARCHIVE: "the archive is damaged or uses an unsupported feature",
    DropReason.UNREADABLE: "the drop folder cannot be listed (permissions, I/O error)",
    DropReason.UNSAFE_PATH: "a member path is absolute, has '..', a backslash or a name too long",
    DropReason.LINK: "a symbolic or hard link (links are never followed)",
    DropReason.SPECIAL_FILE: "a device, FIFO, socket or other non-regular file",
    DropReason.ENCRYPTED: "an encrypted archive member",
    DropReason.TOO_MANY_MEMBERS: "more members than data.ingest.limits.max_members",
    DropReason.TOO_MANY_BYTES: "more uncompressed bytes than data.ingest.limits.max_bytes",
    DropReason.COMPRESSION_RATIO: "compression ratio above data.ingest.limits.max_ratio (a bomb)",
    DropReason.DUPLICATE_MEMBER: "two archive members with the same path",
    DropReason.BAD_LABEL: "a class-folder name fails data.ingest.label_pattern",
    DropReason.EMPTY: "the drop holds no files",
}
