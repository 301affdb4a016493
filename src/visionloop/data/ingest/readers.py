"""Reading a drop safely: a folder, or a .zip / .tar / .tar.gz of one.

Every drop is pre-scanned before a byte of content is read: paths must stay inside the
drop, links and special files are refused, and member counts, sizes and compression
ratios must stay within params. A drop that fails is rejected whole (`DropRejected`).
Files are then read one at a time into memory, never extracted anywhere, so nothing of a
drop can land outside the staging folder that ingest writes.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from visionloop.config import ArchiveLimits
from visionloop.data.arrivals import READY_MARKER
from visionloop.data.ingest.reasons import DropReason

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
OS_METADATA_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r"})
OS_METADATA_FOLDERS = frozenset({"__MACOSX"})
MAX_NAME_BYTES = 255
_READ_CHUNK = 1 << 20
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


class DropRejected(Exception):
    """The whole drop is refused; `reason` is a DropReason, `detail` names the culprit."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DropFile:
    """One regular file of a drop. `parts` is its path inside the drop, NFC-normalised."""

    parts: tuple[str, ...]
    size: int
    key: Any  # what the reader needs to open it again (a Path, ZipInfo or TarInfo)

    @property
    def relpath(self) -> str:
        return "/".join(self.parts)


def drop_kind(path: Path) -> str | None:
    """'folder', 'zip' or 'tar' for a path that can be a drop, else None."""
    name = path.name.lower()
    if path.is_dir() and not path.is_symlink():
        return "folder"
    if path.is_file() and name.endswith(ZIP_SUFFIXES):
        return "zip"
    if path.is_file() and name.endswith(TAR_SUFFIXES):
        return "tar"
    return None


def drop_name(path: Path) -> str:
    """The drop's name without its archive suffix."""
    name = path.name
    for suffix in (*TAR_SUFFIXES, *ZIP_SUFFIXES):
        if name.lower().endswith(suffix) and not path.is_dir():
            return name[: -len(suffix)]
    return name


def is_os_metadata(parts: tuple[str, ...]) -> bool:
    name = parts[-1]
    return (
        any(p in OS_METADATA_FOLDERS for p in parts)
        or name in OS_METADATA_NAMES
        or name.startswith("._")
    )


class DropReader:
    """Pre-scans a drop on construction; then `read_all()` yields each file's bytes in order."""

    def __init__(self, path: Path, limits: ArchiveLimits) -> None:
        self.path = path
        self.limits = limits
        self.kind = drop_kind(path)
        if self.kind is None:
            raise DropRejected(DropReason.UNSUPPORTED_DROP, path.name)
        self.folders: set[tuple[str, ...]] = set()  # every folder seen, with files or not
        self.files = self._scan()
        if not self.files:
            raise DropRejected(DropReason.EMPTY, "no files in the drop")

    def empty_folders(self) -> list[str]:
        """Folders of the drop that hold no file at any depth (an empty class folder is a
        class that brought no images: reported, not silently dropped)."""
        holding = {f.parts[:depth] for f in self.files for depth in range(1, len(f.parts))}
        return sorted("/".join(parts) for parts in self.folders - holding)

    def _scan(self) -> list[DropFile]:
        scanner = {"folder": self._scan_folder, "zip": self._scan_zip, "tar": self._scan_tar}
        try:
            files = scanner[self.kind]()
        except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as exc:
            raise DropRejected(DropReason.CORRUPT_ARCHIVE, str(exc) or type(exc).__name__) from None
        except OSError as exc:
            reason = DropReason.UNREADABLE if self.kind == "folder" else DropReason.CORRUPT_ARCHIVE
            raise DropRejected(reason, exc.strerror or str(exc)) from None
        _check_unique([f.parts for f in files])
        return files

    # -- pre-scan ---------------------------------------------------------------------------

    def _scan_folder(self) -> list[DropFile]:
        budget = _Budget(self.limits, compressed_size=None)
        files: list[DropFile] = []
        stack = [(self.path, ())]
        while stack:
            folder, prefix = stack.pop()
            with os.scandir(folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    parts = (*prefix, _nfc(entry.name))
                    if parts == (READY_MARKER,) and entry.is_file(follow_symlinks=False):
                        continue  # the uploader's "this drop is complete" flag, not content
                    budget.count(parts)
                    if entry.is_symlink():
                        raise DropRejected(DropReason.LINK, "/".join(parts))
                    if entry.is_dir(follow_symlinks=False):
                        self.folders.add(parts)
                        stack.append((Path(entry.path), parts))
                    elif entry.is_file(follow_symlinks=False):
                        size = entry.stat(follow_symlinks=False).st_size
                        budget.add(parts, size, size)
                        files.append(DropFile(parts, size, Path(entry.path)))
                    else:
                        raise DropRejected(DropReason.SPECIAL_FILE, "/".join(parts))
        return sorted(files, key=lambda f: f.parts)

    def _scan_zip(self) -> list[DropFile]:
        budget = _Budget(self.limits, compressed_size=self.path.stat().st_size)
        files = []
        with zipfile.ZipFile(self.path) as archive:
            for info in archive.infolist():
                parts = safe_parts(info.filename)
                budget.count(parts)
                _check_zip_member(info, parts)
                if info.is_dir():
                    self.folders.add(parts)
                    continue
                budget.add(parts, info.file_size, info.compress_size)
                files.append(DropFile(parts, info.file_size, info))
        return files

    def _scan_tar(self) -> list[DropFile]:
        budget = _Budget(self.limits, compressed_size=self.path.stat().st_size)
        files = []
        with tarfile.open(self.path, mode="r:*") as archive:
            # next() skips a member's data only when asked for the following header, so
            # each header is judged before the stream behind it is decompressed.
            while (info := archive.next()) is not None:
                parts = safe_parts(info.name)
                budget.count(parts)
                _check_tar_member(info, parts)
                if info.isdir():
                    self.folders.add(parts)
                    continue
                budget.add(parts, info.size, None)
                files.append(DropFile(parts, info.size, info))
        return files

    # -- reading ----------------------------------------------------------------------------

    def read_all(self, max_file_bytes: int) -> Iterator[tuple[DropFile, bytes | None, str]]:
        """(file, its bytes or None, why not) for every file, in scan order.

        Bytes are None for a file over `max_file_bytes` (why: "file_too_large") or one that
        could not be read (why: the OS error).
        """
        if self.kind == "folder":
            yield from self._read_folder(max_file_bytes)
        elif self.kind == "zip":
            yield from self._read_zip(max_file_bytes)
        else:
            yield from self._read_tar(max_file_bytes)

    def _read_folder(self, max_file_bytes: int) -> Iterator[tuple[DropFile, bytes | None, str]]:
        for file in self.files:
            if file.size > max_file_bytes:
                yield file, None, "file_too_large"
                continue
            try:
                yield file, _read_regular_file_no_follow(file.key, max_file_bytes), ""
            except OSError as exc:
                yield file, None, exc.strerror or str(exc)

    def _read_zip(self, max_file_bytes: int) -> Iterator[tuple[DropFile, bytes | None, str]]:
        with zipfile.ZipFile(self.path) as archive:
            for file in self.files:
                if file.size > max_file_bytes:
                    yield file, None, "file_too_large"
                    continue
                try:
                    with archive.open(file.key) as member:
                        data = member.read(file.size + 1)
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                    raise DropRejected(
                        DropReason.CORRUPT_ARCHIVE, f"{file.relpath}: {exc}"
                    ) from None
                yield file, data, ""

    def _read_tar(self, max_file_bytes: int) -> Iterator[tuple[DropFile, bytes | None, str]]:
        try:
            with tarfile.open(self.path, mode="r:*") as archive:
                for file in self.files:
                    if file.size > max_file_bytes:
                        yield file, None, "file_too_large"
                        continue
                    member = archive.extractfile(file.key)
                    data = member.read(file.size + 1) if member is not None else b""
                    yield file, data, ""
        except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
            raise DropRejected(DropReason.CORRUPT_ARCHIVE, str(exc)) from None

    def copy_file(self, file: DropFile, target: Path) -> None:
        """Stream one file to target (for files too large to read into memory)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._open(file) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, _READ_CHUNK)

    @contextmanager
    def _open(self, file: DropFile) -> Iterator[IO[bytes]]:
        if self.kind == "folder":
            fd = os.open(file.key, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as handle:
                yield handle
        elif self.kind == "zip":
            with zipfile.ZipFile(self.path) as archive, archive.open(file.key) as handle:
                yield handle
        else:
            with tarfile.open(self.path, mode="r:*") as archive:
                handle = archive.extractfile(file.key)
                yield handle if handle is not None else io.BytesIO()


class _Budget:
    """Counts members and bytes against the limits; raises DropRejected the moment one is hit."""

    def __init__(self, limits: ArchiveLimits, compressed_size: int | None) -> None:
        self.limits = limits
        self.compressed_size = compressed_size
        self.members = 0
        self.bytes = 0

    def count(self, parts: tuple[str, ...]) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise DropRejected(
                DropReason.TOO_MANY_MEMBERS,
                f"more than {self.limits.max_members} members (at {'/'.join(parts)})",
            )

    def add(self, parts: tuple[str, ...], size: int, compressed: int | None) -> None:
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise DropRejected(
                DropReason.TOO_MANY_BYTES,
                f"more than {self.limits.max_bytes} bytes uncompressed (at {'/'.join(parts)})",
            )
        self._check_ratio("/".join(parts), size, compressed)
        self._check_ratio("the whole archive", self.bytes, self.compressed_size)

    def _check_ratio(self, what: str, size: int, compressed: int | None) -> None:
        if compressed is None or size <= self.limits.ratio_min_bytes:
            return
        ratio = size / max(compressed, 1)
        if ratio > self.limits.max_ratio:
            raise DropRejected(
                DropReason.COMPRESSION_RATIO,
                f"{what} expands {ratio:.0f}x (limit {self.limits.max_ratio:g}x)",
            )


def safe_parts(name: str) -> tuple[str, ...]:
    """An archive member name as path components, or DropRejected if it could escape."""
    if "\\" in name or "\x00" in name:
        raise DropRejected(DropReason.UNSAFE_PATH, repr(name))
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DropRejected(DropReason.UNSAFE_PATH, f"absolute path {name!r}")
    parts = tuple(_nfc(p) for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DropRejected(DropReason.UNSAFE_PATH, f"'..' in {name!r}")
    if not parts:
        raise DropRejected(DropReason.UNSAFE_PATH, f"empty member name {name!r}")
    if any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts):
        raise DropRejected(DropReason.UNSAFE_PATH, f"a name longer than 255 bytes in {name!r}")
    return parts


def _check_zip_member(info: zipfile.ZipInfo, parts: tuple[str, ...]) -> None:
    where = "/".join(parts)
    if info.flag_bits & 0x1:
        raise DropRejected(DropReason.ENCRYPTED, where)
    if info.compress_type not in _ZIP_METHODS:
        raise DropRejected(
            DropReason.CORRUPT_ARCHIVE, f"{where}: unsupported compression {info.compress_type}"
        )
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if info.create_system == 3 and file_type == stat.S_IFLNK:  # made on Unix
        raise DropRejected(DropReason.LINK, where)
    if info.create_system == 3 and file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DropRejected(DropReason.SPECIAL_FILE, where)


def _check_tar_member(info: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
    where = "/".join(parts)
    if info.issym() or info.islnk():
        raise DropRejected(DropReason.LINK, f"{where} -> {info.linkname}")
    if not (info.isreg() or info.isdir()) or info.issparse():
        raise DropRejected(DropReason.SPECIAL_FILE, where)


def _check_unique(all_parts: list[tuple[str, ...]]) -> None:
    seen: set[tuple[str, ...]] = set()
    for parts in all_parts:
        if parts in seen:
            raise DropRejected(DropReason.DUPLICATE_MEMBER, "/".join(parts))
        seen.add(parts)


def _read_regular_file_no_follow(path: Path, limit: int) -> bytes:
    """Read a file that must still be a regular file: a link swapped in meanwhile is refused."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{path.name} is no longer a regular file")
        chunks, total = [], 0
        while total <= limit and (chunk := handle.read(_READ_CHUNK)):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)
