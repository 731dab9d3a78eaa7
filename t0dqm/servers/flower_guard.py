"""Refuse to start Flower without authentication when it binds beyond loopback.

Flower's UI and /api can revoke tasks, shut workers down and show task arguments; open to the network
it is a remote control for the whole deployment. :func:`check` runs when the Celery app is imported
(``t0dqm/celery.py``): in a Flower process (``flower`` on the command line) bound to anything but a
loopback address (Flower's default address, ``""``, is every interface) and with neither
``--basic-auth`` / ``FLOWER_BASIC_AUTH`` nor ``--auth`` / ``FLOWER_AUTH``, it exits with a clear message.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

EXIT_STATUS = 78  # EX_CONFIG


def _option(argv: Sequence[str], *names: str) -> str | None:
    """Value of ``--name=value`` or ``--name value`` (last one wins), None when absent."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
    return value


def is_loopback(address: str) -> bool:
    return address in ("localhost", "::1", "[::1]") or address.startswith("127.")


def problem(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """Why this Flower command line must not start, or None (also None when it is not Flower)."""
    if "flower" not in argv[1:]:
        return None
    address = _option(argv, "--address")
    if address is None:
        address = environ.get("FLOWER_ADDRESS", "")
    if is_loopback(address):
        return None
    auth = (
        _option(argv, "--basic-auth", "--basic_auth")
        or environ.get("FLOWER_BASIC_AUTH", "")
        or _option(argv, "--auth")
        or environ.get("FLOWER_AUTH", "")
    )
    if auth.strip():
        return None
    where = address or "every interface (Flower's default address)"
    return (
        f"t0dqm: refusing to start Flower on {where} without authentication; pass "
        "--basic-auth=user:password (or FLOWER_BASIC_AUTH, or --auth with an OAuth provider), or bind "
        "to loopback with --address=127.0.0.1"
    )


def check(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Exit the process with a clear message when :func:`problem` finds one."""
    why = problem(sys.argv if argv is None else argv, os.environ if environ is None else environ)
    if why:
        print(why, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS)
