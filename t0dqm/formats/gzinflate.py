"""Inflate a (possibly multi-member, zero-padded) gzip file to a pipe, in a child process.

``python -m t0dqm.formats.gzinflate FILE [FD]`` writes the inflated bytes to stdout or to the given
descriptor (a pipe), as they come (the reader cuts them at line ends). Exit status 0 when every member
ended cleanly; 3 with a message on stderr when the file is truncated; 4 when it is corrupt; 5 when it
cannot be read. The dump reader runs it as a child so that inflating (ISA-L, which does not release
the GIL) runs on another CPU while the parent scans; it imports nothing heavy so it starts in a few
tens of ms.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from types import ModuleType

_zlib: ModuleType
try:  # ISA-L inflates 2-3x faster than zlib; a dependency, zlib kept as a fallback.
    from isal import isal_zlib

    _zlib = isal_zlib
except ImportError:  # pragma: no cover - depends on the environment
    _zlib = zlib

READ_SIZE = 8 << 10  # inflated pieces (~30 KiB) stay below malloc's mmap threshold: no page faults per piece
EXIT_TRUNCATED = 3
EXIT_CORRUPT = 4
EXIT_UNREADABLE = 5


class GzipTruncated(Exception):
    pass


class GzipCorrupt(Exception):
    pass


def inflate(
    path: str | os.PathLike[str], out: Callable[[bytes], object], stop: Callable[[], bool] | None = None
) -> None:
    """Inflate every member of ``path``, handing pieces to ``out``; GzipTruncated / GzipCorrupt."""
    d = _zlib.decompressobj(31)
    started = False
    with open(path, "rb", buffering=0) as fh:
        while stop is None or not stop():
            raw = fh.read(READ_SIZE)
            if not raw:
                break
            while raw:
                if not started:
                    raw = raw.lstrip(b"\x00")  # zero padding after the last member
                    if not raw:
                        break
                started = True
                try:
                    data = d.decompress(raw)
                except Exception as exc:  # noqa: BLE001 - zlib.error or isal's error: any is a corrupt stream
                    raise GzipCorrupt(f"gzip error: {exc}") from None
                if d.eof:
                    raw = d.unused_data
                    d = _zlib.decompressobj(31)
                    started = False
                else:
                    raw = b""
                if data:
                    out(data)
    if started and (stop is None or not stop()):
        raise GzipTruncated("gzip stream ends early")


def _writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def main(argv: list[str] | None = None) -> int:
    """``FILE``: inflate to stdout. ``FILE FD``: to the given descriptor."""
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print("usage: python -m t0dqm.formats.gzinflate FILE [FD]", file=sys.stderr)
        return 2
    fd = int(args[1]) if len(args) > 1 else sys.stdout.fileno()
    try:
        inflate(args[0], _writer(fd))
    except GzipTruncated as exc:
        print(exc, file=sys.stderr)
        return EXIT_TRUNCATED
    except GzipCorrupt as exc:
        print(exc, file=sys.stderr)
        return EXIT_CORRUPT
    except BrokenPipeError:
        return 1
    except OSError as exc:
        print(exc.strerror or exc, file=sys.stderr)
        return EXIT_UNREADABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
