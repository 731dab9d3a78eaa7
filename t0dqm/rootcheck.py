"""Validate DQM ROOT file content and list its monitor elements, with uproot (no ROOT needed).

The checks replace the original visDQMVerifyLoose.C / visDQMVerifyStrict.C macros:

* loose: the file opens and contains a ``Run summary`` folder somewhere;
* strict (merged online files): also ``reportSummaryMap``, ``reportSummaryContents`` and an ``EventInfo``
  folder holding the scalars ``reportSummary``, ``iRun``, ``iEvent`` and ``iLumiSection``.

Scalar monitor elements. CMSSW's DQM writes a scalar as a TObjString whose string *and* key name are
``<name>t=value</name>`` (t = ``i`` int, ``f`` real, ``s`` string; also ``t`` tag and ``qr`` quality
report). uproot cannot write a key whose name contains ``/`` (it splits paths on ``/``), so files
written by :mod:`t0dqm.simulate` use the plain element name as the key (``iRun``) and the DQM string as
the TObjString content (``<iRun>i=123</iRun>``). This reader accepts both: when the key name already has
the ``<name>t=value</name>`` form it is parsed without reading the object; otherwise the (small)
TObjString is read and its content parsed. Directories are walked through their key lists, never by
``/``-joined paths, so real DQM key names are safe.

Only key lists are read, plus the TObjString scalars; histograms are never decompressed.
The caller enforces the time limit (configuration ``timeouts.root_check``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

ROOT_MAGIC = b"root\0"
RUN_SUMMARY = "Run summary"
EVENT_INFO = "EventInfo"
STRICT_SCALARS = ("reportSummary", "iRun", "iEvent", "iLumiSection")
RX_SCALAR = re.compile(r"^<([^<>]+)>(i|f|s|t|qr)=(.*)</\1>$", re.DOTALL)
_DIR_CLASSES = ("TDirectory", "TDirectoryFile")
_KIND = {"i": "INT", "f": "REAL", "s": "STRING", "t": "TAG", "qr": "QREPORT"}
RX_RUN_FOLDER = re.compile(r"^Run (\d+)$")


class RootCheckError(Exception):
    """The file is not an acceptable DQM ROOT file; ``reason`` is human-readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ME:
    """One monitor element.

    ``path`` is the DQM path ``<subsystem>/<folders>/<name>``: the ``DQMData/Run N/`` prefix and the
    ``Run summary`` folder are dropped. ``kind`` is the ROOT class (TH1D, TH2D, ...) for objects and
    INT / REAL / STRING / TAG / QREPORT for scalars, whose parsed ``value`` is set (int, float or str).
    """

    path: str
    kind: str
    value: int | float | str | None = None


@dataclass(frozen=True)
class _Key:
    folders: tuple[str, ...]  # full folder path from the file's top directory
    name: str
    classname: str
    key: Any  # uproot ReadOnlyKey


def check_magic(path: str | os.PathLike[str]) -> None:
    """Raise RootCheckError unless the file starts with ``root\\0``."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(ROOT_MAGIC))
    except OSError as exc:
        raise RootCheckError(f"cannot open: {exc}") from None
    if head != ROOT_MAGIC:
        raise RootCheckError("not a ROOT file (bad magic)")


def _check_header(path: str | os.PathLike[str]) -> None:
    """Magic, then the header's fEND against the real size (a truncated file fails here, clearly)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise RootCheckError(f"cannot open: {exc}") from None
    if head[: len(ROOT_MAGIC)] != ROOT_MAGIC:
        raise RootCheckError("not a ROOT file (bad magic)")
    if len(head) < 16:
        raise RootCheckError(f"truncated: file has {size} bytes, shorter than a ROOT header")
    version = int.from_bytes(head[4:8], "big")
    if version >= 1000000:
        if len(head) < 20:
            raise RootCheckError(f"truncated: file has {size} bytes, shorter than a ROOT header")
        end = int.from_bytes(head[12:20], "big")
    else:
        end = int.from_bytes(head[12:16], "big")
    begin = int.from_bytes(head[8:12], "big")
    if begin < 16 or end <= begin:
        raise RootCheckError(f"corrupt ROOT header (fBEGIN={begin}, fEND={end})")
    if size < end:
        raise RootCheckError(f"truncated: file has {size} bytes, header says {end}")


def _open(path: str | os.PathLike[str]) -> Any:
    import uproot

    _check_header(path)
    try:
        return uproot.open(os.fspath(path))
    except Exception as exc:  # uproot raises OSError, ValueError, DeserializationError, ...
        raise RootCheckError(f"cannot open: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _walk(directory: Any, folders: tuple[str, ...] = ()) -> Iterator[_Key]:
    """Depth-first over every key (newest cycle only), directories before their contents."""
    seen: set[str] = set()
    for key in directory._keys:  # ReadOnlyKey list: names are taken as-is, never split on "/"
        name = key.fName
        if name in seen:  # an older cycle of the same object
            continue
        seen.add(name)
        item = _Key(folders, name, key.fClassName, key)
        yield item
        if key.fClassName in _DIR_CLASSES:
            yield from _walk(key.get(), folders + (name,))


def _scalar(item: _Key) -> tuple[str, str, int | float | str] | None:
    """(name, kind, value) of a TObjString scalar, None if it is not in DQM form."""
    m = RX_SCALAR.match(item.name)
    if not m:
        text = str(item.key.get())
        m = RX_SCALAR.match(text)
        if not m:
            return None
    name, code, raw = m.group(1), m.group(2), m.group(3)
    kind = _KIND[code]
    value: int | float | str = raw
    try:
        if code == "i":
            value = int(raw)
        elif code == "f":
            value = float(raw)
    except ValueError:
        value = raw
    return name, kind, value


def check_root_file(path: str | os.PathLike[str], strict: bool) -> str:
    """Validate a DQM ROOT file; raise RootCheckError(reason) when it is not acceptable.

    Returns the check summary for the .dqminfo ``check`` field, in the original macros' form:
    ``"VERIFY: Good to go"`` (loose) or ``"VERIFY: Good to go; R=<run>:L=<lumi>:E=<event>"`` (strict).
    """
    rfile = _open(path)
    try:
        have_run_summary = False
        names: set[str] = set()
        event_infos: list[list[_Key]] = []
        current: dict[tuple[str, ...], list[_Key]] = {}
        try:
            for item in _walk(rfile):
                names.add(item.name)
                if item.classname in _DIR_CLASSES:
                    if item.name == RUN_SUMMARY:
                        have_run_summary = True
                    if item.name == EVENT_INFO:
                        content: list[_Key] = []
                        current[item.folders + (item.name,)] = content
                        event_infos.append(content)
                elif item.folders in current:
                    current[item.folders].append(item)
        except RootCheckError:
            raise
        except Exception as exc:
            raise RootCheckError(f"cannot read: {_short(exc)}") from None

        if not have_run_summary:
            raise RootCheckError("no Run summary folder")
        if not strict:
            return "VERIFY: Good to go"
        for required in ("reportSummaryMap", "reportSummaryContents"):
            if required not in names:
                raise RootCheckError(f"missing {required}")
        if not event_infos:
            raise RootCheckError("missing EventInfo")
        first_missing: list[str] | None = None
        for content in event_infos:
            values: dict[str, int | float | str] = {}
            try:
                for item in content:
                    if item.classname == "TObjString":
                        parsed = _scalar(item)
                        if parsed:
                            values[parsed[0]] = parsed[2]
            except Exception as exc:
                raise RootCheckError(f"cannot read: {_short(exc)}") from None
            missing = [s for s in STRICT_SCALARS if s not in values]
            if not missing:
                return (f"VERIFY: Good to go; R={values['iRun']}:L={values['iLumiSection']}"
                        f":E={values['iEvent']}")
            if first_missing is None:
                first_missing = missing
        assert first_missing is not None
        raise RootCheckError(f"missing {first_missing[0]} in EventInfo")
    finally:
        rfile.close()


def _me_path(folders: tuple[str, ...], name: str) -> str:
    parts = list(folders)
    if len(parts) >= 2 and parts[0] == "DQMData" and RX_RUN_FOLDER.match(parts[1]):
        parts = parts[2:]
    elif parts and parts[0] == "DQMData":
        parts = parts[1:]
    parts = [p for p in parts if p != RUN_SUMMARY]
    return "/".join([*parts, name])


def read_monitor_elements(path: str | os.PathLike[str]) -> list[ME]:
    """Every monitor element of the file, in file order (see :class:`ME`); raises RootCheckError."""
    rfile = _open(path)
    out: list[ME] = []
    try:
        for item in _walk(rfile):
            if item.classname in _DIR_CLASSES:
                continue
            if item.classname == "TObjString":
                parsed = _scalar(item)
                if parsed:
                    out.append(ME(_me_path(item.folders, parsed[0]), parsed[1], parsed[2]))
                else:
                    out.append(ME(_me_path(item.folders, item.name), "TObjString", str(item.key.get())))
            else:
                out.append(ME(_me_path(item.folders, item.name), item.classname))
    except RootCheckError:
        raise
    except Exception as exc:
        raise RootCheckError(f"cannot read: {_short(exc)}") from None
    finally:
        rfile.close()
    return out


def run_numbers(path: str | os.PathLike[str]) -> list[int]:
    """Run numbers of the ``DQMData/Run N`` folders (key lists only)."""
    rfile = _open(path)
    try:
        top = rfile
        runs: list[int] = []
        for key in top._keys:
            if key.fName == "DQMData" and key.fClassName in _DIR_CLASSES:
                for sub in key.get()._keys:
                    m = RX_RUN_FOLDER.match(sub.fName)
                    if m and sub.fClassName in _DIR_CLASSES:
                        runs.append(int(m.group(1)))
        return sorted(set(runs))
    except Exception as exc:
        raise RootCheckError(f"cannot read: {_short(exc)}") from None
    finally:
        rfile.close()
