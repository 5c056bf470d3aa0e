"""A multipart/form-data upload read as it arrives: its file part straight into an Upload on
disk, its other fields (small) in memory. The body is never held whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from headrace.batch import Upload
from headrace.errors import InvalidRequestError, UnsupportedMediaTypeError, missing_parameter

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["FORM_SLACK", "ReceivedForm", "media_type", "receive_form"]

# Bytes a body may carry beyond its file: boundaries, part headers, the small fields.
FORM_SLACK = 64 * 2**10
# Most bytes of one field other than the file.
_MAX_FIELD = 1024
_MULTIPART = "multipart/form-data"
# The file's name when its part names none.
_UNNAMED = "upload"


@dataclass
class ReceivedForm:
    """An upload's form, read to its end."""

    # The file part's bytes, written but not committed: the caller commits or discards it.
    upload: Upload
    # The name the file part gave it.
    filename: str
    # The other fields, by name (the last one of a repeated name).
    fields: Mapping[str, str]


@dataclass
class _Part:
    # Its form field name.
    name: str = ""
    # The Content-Disposition header's raw value.
    disposition: bytes = b""
    # A small field's bytes so far.
    data: bytearray = field(default_factory=bytearray)


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, lower case, without parameters."""
    return content_type.partition(";")[0].strip().lower()


async def receive_form(
    content_type: str,
    body: AsyncIterator[bytes],
    file_field: str,
    begin: Callable[[], Upload],
    check_field: Callable[[str, str], None],
) -> ReceivedForm:
    """Reads the form in `body`: the part named `file_field` is written to an upload from
    `begin`; every other field, once whole, goes through `check_field(name, value)`, which may
    refuse it by raising (before the rest of the body is read).

    UnsupportedMediaTypeError unless multipart/form-data; InvalidRequestError for a malformed
    body, an oversized field, or a missing file part. On any error the upload is discarded.
    """
    if media_type(content_type) != _MULTIPART:
        raise UnsupportedMediaTypeError(media_type(content_type) or "none", _MULTIPART)
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise InvalidRequestError("The multipart/form-data body names no boundary.")
    reader = _FormReader(file_field, begin, check_field)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
        if not reader.ended:
            raise InvalidRequestError("The multipart/form-data body ended before its last part.")
        if reader.upload is None:
            raise missing_parameter(file_field)
        return ReceivedForm(reader.upload, reader.filename, reader.fields)
    except MultipartParseError:
        reader.discard()
        raise InvalidRequestError("The multipart/form-data body is malformed.") from None
    except BaseException:
        reader.discard()
        raise


class _FormReader:
    """python-multipart's callbacks: the parts, as the parser finds them."""

    def __init__(
        self,
        file_field: str,
        begin: Callable[[], Upload],
        check_field: Callable[[str, str], None],
    ) -> None:
        self._file_field = file_field
        self._begin = begin
        self._check_field = check_field
        # The part being read.
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        # The file part's upload, once it began.
        self.upload: Upload | None = None
        self.filename = _UNNAMED
        # Whole fields other than the file.
        self.fields: dict[str, str] = {}
        # Whether the closing boundary came.
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_end": self._on_end,
        }

    def discard(self) -> None:
        if self.upload is not None:
            self.upload.discard()

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._part.disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        options = parse_options_header(self._part.disposition)[1]
        if b"name" not in options:
            raise InvalidRequestError("A multipart/form-data part names no field.")
        self._part.name = options[b"name"].decode(errors="replace")
        if self._part.name != self._file_field:
            return
        if self.upload is not None:
            raise InvalidRequestError(
                f"Only one file may be uploaded at a time: '{self._file_field}' came twice.",
                param=self._file_field,
            )
        self.filename = options.get(b"filename", b"").decode(errors="replace") or _UNNAMED
        self.upload = self._begin()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.name == self._file_field:
            assert self.upload is not None
            self.upload.write(data[start:end])
            return
        self._part.data += data[start:end]
        if len(self._part.data) > _MAX_FIELD:
            raise InvalidRequestError(
                f"The form field '{self._part.name}' is too long: at most {_MAX_FIELD} bytes.",
                param=self._part.name,
            )

    def _on_part_end(self) -> None:
        if self._part.name != self._file_field:
            value = self._part.data.decode(errors="replace")
            self._check_field(self._part.name, value)
            self.fields[self._part.name] = value

    def _on_end(self) -> None:
        self.ended = True
