"""Receive a ``multipart/form-data`` upload as a stream.

The file part goes straight to a staging file in chunks, hashed while it is
written, and the upload stops with ``UploadTooLargeError`` as soon as it
passes the cap: nothing is buffered in memory or spooled elsewhere. Text
fields are small and kept in memory (with their own caps). A form may name
further, optional file fields (``extra_files``), each staged the same way.
"""

import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from fleet_server.errors import InvalidUploadError, UploadTooLargeError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks  # a TypedDict defined for type checkers only

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16
FORM_OVERHEAD_BYTES = 1024 * 1024  # headers, boundaries and text fields on top of the file


@dataclass
class StagedFile:
    path: Path
    filename: str | None
    size: int = 0
    sha256: str = ""


@dataclass
class ReceivedForm:
    fields: dict[str, str]
    file: StagedFile | None
    extra_files: dict[str, StagedFile] = field(default_factory=dict)  # the optional file fields sent


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class _FormCollector:
    """python-multipart callbacks: route each part to memory or to the staging file."""

    def __init__(self, file_field: str, staging_path: Path, max_file_bytes: int,
                 extra_files: Mapping[str, Path] | None = None) -> None:
        self.file_field = file_field
        self.staging_paths = {file_field: staging_path, **(extra_files or {})}
        self.max_file_bytes = max_file_bytes
        self.fields: dict[str, str] = {}
        self.files: dict[str, StagedFile] = {}
        self.file: StagedFile | None = None  # the part being written
        self._hash = hashlib.sha256()
        self._handle: BinaryIO | None = None
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""
        self._parts = 0
        self.finished = False

    def callbacks(self) -> "MultipartCallbacks":
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._append("_header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._append("_header_value", data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _append(self, attribute: str, data: bytes) -> None:
        value = getattr(self, attribute) + data
        if len(value) > 8192:
            raise InvalidUploadError("a multipart header is too long")
        setattr(self, attribute, value)

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidUploadError(f"too many form parts (at most {MAX_PARTS})")
        self._part = _Part()

    def _on_header_end(self) -> None:
        self._part.headers[self._header_field.decode("latin-1").strip().lower()] = self._header_value.decode(
            "utf-8", errors="replace"
        ).strip()
        self._header_field = self._header_value = b""

    def _on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._part.headers.get("content-disposition", ""))
        if disposition != b"form-data" or b"name" not in options:
            raise InvalidUploadError("every form part needs a Content-Disposition: form-data header with a name")
        self._part.name = options[b"name"].decode("utf-8", errors="replace")
        filename = options.get(b"filename")
        self._part.filename = None if filename is None else Path(filename.decode("utf-8", "replace")).name[:255]
        if self._part.name in self.staging_paths:
            if self._part.name in self.files:
                raise InvalidUploadError(f"the form has more than one {self._part.name!r} part")
            path = self.staging_paths[self._part.name]
            self.file = self.files[self._part.name] = StagedFile(path, self._part.filename)
            self._hash = hashlib.sha256()
            self._handle = open(path, "wb")  # noqa: SIM115 (closed in _on_part_end/close)
        elif self._part.name in self.fields:
            raise InvalidUploadError(f"the form field {self._part.name!r} appears twice")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._handle is not None and self.file is not None:
            self.file.size += len(chunk)
            if self.file.size > self.max_file_bytes:
                raise UploadTooLargeError(f"the uploaded file exceeds the cap of {self.max_file_bytes} bytes")
            self._hash.update(chunk)
            self._handle.write(chunk)
            return
        self._part.size += len(chunk)
        if self._part.size > MAX_FIELD_BYTES:
            raise InvalidUploadError(f"form field {self._part.name!r} is larger than {MAX_FIELD_BYTES} bytes")
        self._part.chunks.append(chunk)

    def _on_part_end(self) -> None:
        if self._handle is not None and self.file is not None:
            self._handle.flush()
            self._handle.close()
            self._handle = None
            self.file.sha256 = self._hash.hexdigest()
            self.file = None
            return
        try:
            self.fields[self._part.name] = b"".join(self._part.chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUploadError(f"form field {self._part.name!r} is not UTF-8 text") from None

    def _on_end(self) -> None:
        self.finished = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def receive_form(
    stream: AsyncIterator[bytes], content_type: str, *, file_field: str, staging_path: Path, max_file_bytes: int,
    extra_files: Mapping[str, Path] | None = None,
) -> ReceivedForm:
    """Parse a multipart body from ``stream``; on any error the staging files are removed.

    ``extra_files`` maps optional file fields to their staging paths; each file has the same cap."""
    media_type, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise InvalidUploadError("expected a multipart/form-data body with a boundary")
    collector = _FormCollector(file_field, staging_path, max_file_bytes, extra_files)
    parser = MultipartParser(boundary, collector.callbacks())
    max_body_bytes = max_file_bytes * len(collector.staging_paths) + FORM_OVERHEAD_BYTES
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_body_bytes:
                raise UploadTooLargeError(f"the upload exceeds the cap of {max_file_bytes} bytes")
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if not collector.finished:
            raise InvalidUploadError("the multipart body ended before its closing boundary")
    except MultipartParseError as exc:
        collector.close()
        for path in collector.staging_paths.values():
            path.unlink(missing_ok=True)
        raise InvalidUploadError(f"malformed multipart body: {exc}") from None
    except BaseException:
        collector.close()
        for path in collector.staging_paths.values():
            path.unlink(missing_ok=True)
        raise
    files = dict(collector.files)
    return ReceivedForm(collector.fields, files.pop(file_field, None), files)
