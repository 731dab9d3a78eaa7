"""The straight-read bound and the delimiter check of the upload handler (pure logic)."""

from __future__ import annotations

import pytest

from t0dqm.servers.upload_framing import DelimiterCheck, boundary_of, straight_bytes

CTYPE = "multipart/form-data; boundary=bound"


def test_boundary_of() -> None:
    assert boundary_of(CTYPE) == b"bound"
    assert boundary_of('multipart/form-data; boundary="a b"; x=1') == b"a b"
    assert boundary_of("multipart/form-data") is None


@pytest.mark.parametrize(
    ("declared", "length", "received", "ctype", "want"),
    [
        ("1000", 10_000, 100, CTYPE, 1000),  # the declared size binds
        ("100000", 10_000, 100, CTYPE, 10_000 - 100 - len(CTYPE) - 8),  # the bytes not received bind
        ("1000", 10_000, 10_000, CTYPE, 0),  # everything received already
        ("10", 40, 0, CTYPE, 0),  # never negative
        (None, 10_000, 0, CTYPE, 0),  # no size field (yet)
        ("", 10_000, 0, CTYPE, 0),
        ("-5", 10_000, 0, CTYPE, 0),
        ("1e3", 10_000, 0, CTYPE, 0),
        ("1000", None, 0, CTYPE, 0),  # no Content-Length
        ("1000", 10_000, 0, "multipart/form-data", 0),  # no boundary
    ],
)
def test_straight_bytes(
    declared: str | None, length: int | None, received: int, ctype: str, want: int
) -> None:
    assert straight_bytes(declared, length, received, ctype) == want


@pytest.mark.parametrize("epilogue", [b"", b"\r\n", b"x" * 29])
def test_straight_bytes_stay_inside_the_file_whatever_the_size_field_says(epilogue: bytes) -> None:
    """The file is the last part: from any point of the file part on, the straight bytes end inside it."""
    prefix = b'--bound\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
    data = b"x" * 5000
    body = prefix + data + b"\r\n--bound--\r\n" + epilogue
    for received in (len(prefix), len(prefix) + 1, len(prefix) + 4000, len(body) - 1, len(body)):
        for declared in (0, 10, 4999, 5000, 5001, 10**9):
            assert straight_bytes(str(declared), len(body), received, CTYPE) <= min(declared, len(data))


def test_delimiter_check_finds_it_in_a_piece_and_across_pieces() -> None:
    data = b"root\0" + b"a" * 100 + b"\r\n--bound" + b"b" * 100
    for split in range(len(data) + 1):  # every split into two pieces, the delimiter cut anywhere
        check = DelimiterCheck(b"bound")
        with pytest.raises(ValueError, match="contains the multipart delimiter"):
            check.feed(data[:split])
            check.feed(data[split:])
    check = DelimiterCheck(b"bound")
    with pytest.raises(ValueError, match="contains the multipart delimiter"):
        for at in range(len(data)):  # one byte at a time
            check.feed(data[at : at + 1])


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
def test_delimiter_check_lets_look_alikes_through(step: int) -> None:
    """The boundary without its CRLF, a cut delimiter, the dashes alone and another case are data."""
    data = b"root\0--bound\r\n--boun\r\n-\r\n--bounD\n--bound" + bytes(range(256)) * 4
    check = DelimiterCheck(b"bound")
    for at in range(0, len(data), step):
        check.feed(data[at : at + step])
    assert check.carry == data[-len(b"\r\n--boun") :]


def test_an_empty_boundary_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        DelimiterCheck(b"")
