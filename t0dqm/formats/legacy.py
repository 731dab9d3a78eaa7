"""Read the original DQM GUI's info files safely (.dqminfo, .zinfo: Python dict literals).

The original agents wrote ``"%s\\n" % dict`` and read it back with ``eval``. We never eval: the text is
parsed with :func:`ast.literal_eval` after a syntax-tree check, and anything that is not a plain dict with
string keys and literal values (str, int, float, bool, None, and lists/tuples/dicts of those) is refused
with a clear :class:`LegacyFormatError`. Python 2 long literals (``1234L``) are accepted. JSON text (the
format t0dqm writes) is accepted as well, so one reader handles old and new files.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import os
import tokenize
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_BYTES = 1 << 20  # an info file is a few hundred bytes; refuse anything absurd
MAX_DEPTH = 8
DQMINFO_REQUIRED = ("class", "version", "runnr", "dataset")


class LegacyFormatError(ValueError):
    """An info file that is not a plain dict literal; the message says where and why."""


_ALLOWED_CONST = (str, int, float, bool, type(None))


def _check_node(node: ast.AST, source: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise LegacyFormatError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, _ALLOWED_CONST):
            raise LegacyFormatError(
                f"{source}: {type(node.value).__name__} literal not allowed (line {node.lineno})"
            )
        return
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and isinstance(node.operand.value, (int, float))
        and not isinstance(node.operand.value, bool)
    ):
        return
    if isinstance(node, (ast.List, ast.Tuple)):
        for elt in node.elts:
            _check_node(elt, source, depth + 1)
        return
    if isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise LegacyFormatError(f"{source}: '**' unpacking not allowed")
            _check_node(key, source, depth + 1)
            _check_node(value, source, depth + 1)
        return
    what = type(node).__name__
    line = getattr(node, "lineno", "?")
    raise LegacyFormatError(f"{source}: only literals are allowed, found {what} (line {line})")


def _strip_long_suffix(text: str) -> str:
    """Turn Python 2 long literals ``123L`` into ``123`` (token-aware: strings are untouched)."""
    if "L" not in text and "l" not in text:
        return text
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return text
    cuts: list[tuple[int, int]] = []  # (line, col) of an "L" glued to a preceding number
    for prev, tok in itertools.pairwise(tokens):
        if (
            tok.type == tokenize.NAME
            and tok.string in ("L", "l")
            and prev.type == tokenize.NUMBER
            and prev.end == tok.start
        ):
            cuts.append(tok.start)
    if not cuts:
        return text
    lines = text.splitlines(keepends=True)
    for row, col in reversed(cuts):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + line[col + 1 :]
    return "".join(lines)


def parse_legacy_info(text: str, source: str = "<string>") -> dict[str, Any]:
    """Parse the text of a .dqminfo/.zinfo file (Python dict literal or JSON object)."""
    if len(text) > MAX_BYTES:
        raise LegacyFormatError(f"{source}: {len(text)} characters, more than {MAX_BYTES}")
    stripped = text.strip()
    if not stripped:
        raise LegacyFormatError(f"{source}: empty")
    if not stripped.startswith("{"):
        raise LegacyFormatError(f"{source}: not a dict literal (starts with {stripped[:20]!r})")
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data
    try:
        tree = ast.parse(_strip_long_suffix(stripped), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise LegacyFormatError(f"{source}: not a Python literal: {exc}") from None
    if not isinstance(tree.body, ast.Dict):
        raise LegacyFormatError(f"{source}: top level is {type(tree.body).__name__}, not a dict")
    _check_node(tree.body, source)
    try:
        value = ast.literal_eval(tree.body)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise LegacyFormatError(f"{source}: not a plain literal: {exc}") from None
    if not isinstance(value, dict):  # pragma: no cover - guarded by the tree check
        raise LegacyFormatError(f"{source}: not a dict")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise LegacyFormatError(f"{source}: keys must be strings, found {bad[0]!r}")
    return value


def read_legacy_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one info file; LegacyFormatError when unreadable or not a plain dict literal."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise LegacyFormatError(f"{p}: {size} bytes, more than {MAX_BYTES}")
        raw = p.read_bytes()
    except OSError as exc:
        raise LegacyFormatError(f"{p}: cannot read: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_legacy_info(text, str(p))


def check_dqminfo(info: dict[str, Any], source: str = "<info>") -> dict[str, Any]:
    """Require the keys every .dqminfo has (class, version, runnr, dataset) with sane types."""
    missing = [k for k in DQMINFO_REQUIRED if k not in info]
    if missing:
        raise LegacyFormatError(f"{source}: missing keys {', '.join(missing)}")
    for key in ("version", "runnr"):
        if isinstance(info[key], bool) or not isinstance(info[key], int):
            raise LegacyFormatError(f"{source}: {key} must be an integer, got {info[key]!r}")
    for key in ("class", "dataset"):
        if not isinstance(info[key], str):
            raise LegacyFormatError(f"{source}: {key} must be a string, got {info[key]!r}")
    for key in ("version", "runnr", "size", "time"):  # the catalog stores 64-bit integers
        value = info.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise LegacyFormatError(f"{source}: {key} must be a number, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value < 1 << 63:
            raise LegacyFormatError(f"{source}: {key} {value!r} is out of range")
    return info


def find_info_files(
    directory: str | os.PathLike[str], suffixes: tuple[str, ...] = (".dqminfo",)
) -> Iterator[Path]:
    """Every info file below ``directory`` (sorted, symlinks not followed)."""
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(suffixes):
                yield Path(root) / name
