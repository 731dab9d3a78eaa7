"""Developer check: read files with the new DQM GUI's own reader (nanoroot) and importer.

Not part of the test suite: nanoroot is not published on a package registry, so it needs a local checkout
of cms-DQM/dqmgui, with its Cython modules built in place:

    python3 -m venv /tmp/gui && /tmp/gui/bin/pip install cython setuptools
    cd DQMGUI/python   # the checkout's python/ folder
    # recent Cython rejects one f-string in nanoroot/tfile.pyx ("{self.c_buf_size)}"): fix it locally
    /tmp/gui/bin/python -c 'from setuptools import setup, Extension; from Cython.Build import cythonize; \
        setup(ext_modules=cythonize([Extension("nanoroot.tfile", ["nanoroot/tfile.pyx"]), \
        Extension("nanoroot.tbufferfile", ["nanoroot/tbufferfile.pyx"])], \
        compiler_directives={"language_level": 3}))' build_ext --inplace

Then:

    t0dqm simulate --out /tmp/sim --files 30 --broken 0
    /tmp/gui/bin/python ops/dev/dqmgui_reader_check.py DQMGUI/python /tmp/sim/*.root

For each file it walks the records with ``nanoroot.tfile.TFile`` and lists the monitor elements with
``DQMCLASSICImporter.list_mes`` (what the GUI does when a file is first browsed), and prints OK with the
counts per kind, or BAD with the error (e.g. ``TKey(... fNbytes: 0) is corrupted`` for a file whose free
space is not marked). Exit 1 if any file is BAD.
"""

from __future__ import annotations

import sys
import types


def main(gui_python: str, paths: list[str]) -> int:
    sys.path.insert(0, gui_python)
    io_stub = types.ModuleType("ioservice")  # the importer's I/O service needs pyxrootd; not used here
    io_stub.IOService = type("IOService", (), {})
    sys.modules["ioservice"] = io_stub
    from reading.dqmclassic_reader import DQMCLASSICReader

    reading = types.ModuleType("reading.reading")  # avoid the DQMIO/protobuf readers' dependencies
    reading.DQMCLASSICReader = DQMCLASSICReader
    sys.modules["reading.reading"] = reading
    from importing.dqmclassic_importer import DQMCLASSICImporter
    from nanoroot.tfile import TFile

    bad = 0
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        try:
            with open(path, "rb") as fh:
                mes = DQMCLASSICImporter.list_mes(TFile().load(fh.read()), 0)
            kinds: dict[str, int] = {}
            for _path, info in mes:
                kinds[info.type.decode()] = kinds.get(info.type.decode(), 0) + 1
            print("OK ", name, len(mes), dict(sorted(kinds.items())))
        except Exception as exc:  # noqa: BLE001 - report every file
            bad += 1
            print("BAD", name, type(exc).__name__, str(exc)[:200])
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
