"""Which bytes of an upload's file part may skip aiohttp's boundary search, and the check that they hold no delimiter.

aiohttp's multipart reader finds the end of a form-data part by joining each piece to the one before it and
searching the join (``prev + chunk``): two copies of every byte. It ignores a part's own Content-Length, as
RFC 7578 asks, so visDQMUpload's ``Content-Length`` in the file part does not spare them. The ``size``
field does: when it came before the file part, as in visDQMUpload's request, the handler reads
:func:`straight_bytes` of the file straight from the body and lets the multipart reader read the rest. The
reader alone still decides where the file ends, so a ``size`` that lies gets the same answer as without
the straight read. 50 parallel uploads: about 10 % less CPU per GB and 5 MB less peak RSS
(docs/benchmarks.md, issue 11).

Why those bytes are the file's: they are at most ``size`` bytes, which are the file's when ``size`` is right.
When it lies, they are still the file's if the file is the last part and fewer than 30 bytes follow its
closing delimiter (visDQMUpload sends two): the body's unread bytes are at least its Content-Length minus the
bytes received so far, and the straight read leaves of those the Content-Type header's length + 8 bytes,
30 more than the closing delimiter (``\\r\\n--`` + boundary + ``--\\r\\n``) takes. Otherwise
:class:`DelimiterCheck` refuses a file whose data contains its part's delimiter, which RFC 2046 forbids in a
part's content. One case is left where the straight read changes the answer: data that holds ``--`` +
boundary, without the CRLF before it, exactly where the straight read stops (the reader then sees a
delimiter there). That needs the boundary itself inside the file, which neither visDQMUpload's fixed boundary
nor a random one meets; the upload is then refused, never stored wrong: the size and md5 of what is stored
are checked.
"""

from __future__ import annotations

import re

RX_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
DELIMITER_FRAMING = len(b"\r\n----\r\n")  # the closing delimiter's bytes beyond the boundary


def boundary_of(content_type: str) -> bytes | None:
    """The multipart boundary a Content-Type header declares, or None."""
    found = RX_BOUNDARY.search(content_type)
    return found.group(1).encode("latin-1", "replace") if found else None


def straight_bytes(
    declared_size: str | None, content_length: int | None, received: int, content_type: str
) -> int:
    """How many bytes of the file part, from its start, can be read straight from the body: none without a
    decimal ``size`` field, a Content-Length or a boundary; else at most the declared size and at most the
    bytes not yet received (``content_length - received``) minus room for the closing delimiter."""
    if not declared_size or not declared_size.isdigit() or content_length is None:
        return 0
    if boundary_of(content_type) is None:
        return 0
    unreceived = content_length - received
    return max(0, min(int(declared_size), unreceived - len(content_type) - DELIMITER_FRAMING))


class DelimiterCheck:
    """Raises ValueError when the data fed to it, piece after piece, contains ``\\r\\n--`` + boundary, also
    across two pieces."""

    def __init__(self, boundary: bytes) -> None:
        if not boundary:
            raise ValueError("a multipart boundary cannot be empty")
        self.delimiter = b"\r\n--" + boundary
        self.keep = len(self.delimiter) - 1
        self.carry = b""  # the data's last ``keep`` bytes so far

    def feed(self, piece: bytes) -> None:
        if self.delimiter in piece or self.delimiter in self.carry + piece[: self.keep]:
            raise ValueError("the file's data contains the multipart delimiter")
        self.carry = piece[-self.keep :] if len(piece) >= self.keep else (self.carry + piece)[-self.keep :]
