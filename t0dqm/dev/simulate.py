"""Simulated DQM ROOT files and names, good and broken, for tests, the demo and benchmarks.

File layout (as CMSSW's DQMStore writes the legacy format)::

    DQMData/Run <run>/<subsystem>/Run summary/<folder>/<histogram>          TH1D / TH2D
    DQMData/Run <run>/<subsystem>/Run summary/EventInfo/<iRun>i=<run></iRun>   TObjString (INT scalar)
                                                       /<iEvent>i=..</iEvent>, /<iLumiSection>i=..</iLumiSection>
                                                       /<reportSummary>f=0.97</reportSummary>
                                                       /reportSummaryMap   TH2D
                                                       /reportSummaryContents/<<part>>f=0.95</<part>>  REAL scalars

A scalar is a TObjString whose key name and text are both the whole tag string, as DQMStore writes it
(the DQM GUI's importer reads scalars from the key name). Files are laid out record by record by
:mod:`t0dqm.formats.rootwrite` with ROOT's free-space rules: every byte from the first record to the end is a
key or a free gap marked with its negative length. One good file in three is "saved twice" (the
folders saved once before the EventInfo folders are added), so simulated files also carry such gaps.
:func:`write_dqm_file_uproot` writes the same content as uproot does (scalar keys named ``iRun``, free
space zeroed): the form earlier t0dqm versions simulated, kept as a test input.
``strict=False`` files have the histograms and iRun/iEvent/iLumiSection only (they pass the loose check
and fail the strict one with "missing reportSummaryMap").

Writing is fast: a few histogram objects are converted once per process and streamed per key
(~45 ms for 200 histograms; docs/benchmarks.md). Files are written to ``<path>.tmp`` and renamed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t0dqm.formats import naming

SUBSYSTEMS = (
    "Ecal",
    "Hcal",
    "Pixel",
    "SiStrip",
    "DT",
    "CSC",
    "RPC",
    "L1T",
    "HLT",
    "Tracking",
    "JetMET",
    "Muons",
    "Egamma",
    "BeamMonitor",
    "GEM",
    "PixelPhase1",
    "Info",
)
FOLDERS = ("Occupancy", "Digis", "Clusters", "Timing", "Errors", "Noise")
REPORT_PARTS = ("Barrel", "EndcapPlus", "EndcapMinus", "Forward")

BROKEN_KINDS = ("truncated", "bad_magic", "no_run_summary", "size_mismatch", "bad_name")
# What receive is expected to say about each broken kind (substring of the quarantine reason).
BROKEN_REASONS = {
    "truncated": "truncated",
    "bad_magic": "bad magic",
    "no_run_summary": "no Run summary folder",
    "size_mismatch": "size mismatch",
    "bad_name": "",  # the classification reason; depends on the name
}

_PRIMDS = (
    "ZeroBias",
    "JetHT",
    "SingleMuon",
    "EGamma",
    "MinimumBias",
    "Cosmics",
    "HLTPhysics",
    "Muon",
    "JetMET",
    "DoubleMuon",
)
_ERAS = ("Run2018", "Run2022", "Run2023", "Run2024", "Commissioning2024", "HIRun2023")
_RELVAL_PRIMDS = (
    "RelValTTbar_14TeV",
    "RelValZMM_14",
    "RelValSingleMuPt10",
    "RelValMinBias_14TeV",
    "RelValQCD_FlatPt_15_3000HS_14",
    "RelValZEE_14",
)
_RELEASES = ("CMSSW_12_4_0_pre3", "CMSSW_13_0_10", "CMSSW_13_3_0_pre2", "CMSSW_14_0_1", "CMSSW_14_1_0_pre5")
_MC_ERAS = ("RunIISummer20UL18", "Run3Summer22", "Run3Winter24", "Phase2Fall22")
_MC_PRIMDS = ("MinBias_TuneCP5_14TeV", "TTToSemiLeptonic", "DYJetsToLL_M-50", "QCD_Pt-15to7000")

# Mix of good names by class (weights).
_CLASS_WEIGHTS = (
    ("online_sub", 35),
    ("online_merged", 10),
    ("offline_data", 25),
    ("relval_data", 8),
    ("relval_mc", 8),
    ("relval_rundepmc", 4),
    ("simulated", 5),
    ("simulated_rundep", 5),
)
_BAD_NAMES = (
    "DQM_V0001_{sub}_R{run:09d}.root",  # online run <= 10000 (run forced small below)
    "DQM_V0001_R{bigrun:09d}__{pd}__Run2023A-CMSSW_13-v{k}__DQMIO.root",  # CMSSW in non-relval dataset
    "DQM_V0001_R{bigrun:09d}__{pd}__Commissioning-v{k}__DQMIO.root",  # no era
)


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[list[Any], list[Any]]:
    """A few histogram objects, converted to uproot writables once and reused for every key."""
    import numpy as np
    import uproot

    rng = np.random.default_rng(12345)
    ones: list[Any] = []
    for nbins, lam in ((100, 50.0), (50, 200.0), (200, 5.0), (64, 1000.0), (25, 12.0), (120, 80.0)):
        edges = np.linspace(0.0, float(nbins), nbins + 1)
        counts = rng.poisson(lam, nbins).astype(np.float64)
        ones.append(uproot.to_writable((counts, edges)))
    twos: list[Any] = []
    for nx, ny in ((36, 18), (20, 20), (8, 4)):
        counts = rng.random((nx, ny))
        twos.append(uproot.to_writable((counts, np.arange(nx + 1.0), np.arange(ny + 1.0))))
    return ones, twos


@functools.lru_cache(maxsize=1)
def _streamer_info() -> bytes:
    """The StreamerInfo list (TH1D, TH2D, TObjString and their bases), as uproot writes it, uncompressed."""
    import struct
    import tempfile

    import uproot

    ones, twos = _templates()
    with tempfile.TemporaryDirectory(prefix="t0dqm-streamers-") as tmp:
        path = Path(tmp) / "streamers.root"
        with uproot.recreate(path, compression=None) as f:
            f["h1"], f["h2"], f["s"] = ones[0], twos[0], "<s>s=x</s>"
        data = path.read_bytes()
    seek_info = struct.unpack_from(">i", data, 37)[0]
    nbytes, _v, objlen, _dt, keylen = struct.unpack_from(">ihiIh", data, seek_info)
    if nbytes - keylen != objlen:
        raise RuntimeError("uproot wrote a compressed StreamerInfo")
    return data[seek_info + keylen : seek_info + nbytes]


def _scalar(name: str, code: str, value: object) -> str:
    return f"<{name}>{code}={value}</{name}>"


def _layout(
    subsystems: Sequence[str], n_hists: int, strict: bool, run_summary: bool, lumi: int, events: int, run: int
) -> list[tuple[str, list[tuple[str, str, Any]], bool]]:
    """Per subsystem: (inner folder path, [(folder, key name, object)], strict) in writing order.

    Objects are histogram writables or scalar strings; folder is relative to ``<sub>/<inner>``.
    """
    ones, twos = _templates()
    inner = "Run summary" if run_summary else f"By Lumi Section {lumi}-{lumi}"
    out = []
    for s_index, sub in enumerate(subsystems):
        share = n_hists // len(subsystems) + (1 if s_index < n_hists % len(subsystems) else 0)
        folders = list(FOLDERS[: max(1, min(len(FOLDERS), share // 20 or 1))])
        items: list[tuple[str, str, Any]] = []
        for i in range(share):
            folder = folders[i % len(folders)]
            if i % 10 == 9:
                items.append((folder, f"{sub}_map_{i}", twos[i % len(twos)]))
            else:
                items.append((folder, f"{sub}_h{i}", ones[i % len(ones)]))
        items.append(("EventInfo", "iRun", _scalar("iRun", "i", run)))
        items.append(("EventInfo", "iEvent", _scalar("iEvent", "i", events)))
        items.append(("EventInfo", "iLumiSection", _scalar("iLumiSection", "i", lumi)))
        if strict:
            items.append(("EventInfo", "reportSummary", _scalar("reportSummary", "f", 0.97)))
            items.append(("EventInfo", "reportSummaryMap", twos[-1]))
            for part in REPORT_PARTS:
                items.append(
                    ("EventInfo/reportSummaryContents", f"{sub}{part}", _scalar(f"{sub}{part}", "f", 0.95))
                )
        out.append((f"{sub}/{inner}", items, strict))
    return out


def write_dqm_file(
    path: str | os.PathLike[str],
    run: int,
    subsystems: Sequence[str],
    n_hists: int = 200,
    strict: bool = True,
    *,
    lumi: int = 42,
    events: int = 123456,
    run_summary: bool = True,
    saved_twice: bool = False,
) -> int:
    """Write a DQM ROOT file with ``n_hists`` histograms spread over ``subsystems``, as CMSSW's DQMStore
    writes the legacy format (see :mod:`t0dqm.formats.rootwrite`); return its size.

    Scalars are TObjStrings whose key name is the whole tag string (``<iRun>i=367013</iRun>``).
    ``strict`` adds reportSummary, reportSummaryMap and reportSummaryContents (the content required of
    merged online files). ``run_summary=False`` writes the folders without ``Run summary`` (broken).
    ``saved_twice``: the directories are saved once after the histograms and again at close, after the
    EventInfo folders were added (as a job that saves its file before it is complete): the key lists
    that grew leave free gaps, marked in place and listed in the free segments, as ROOT leaves them.
    """
    from t0dqm.formats import rootwrite

    subsystems = list(subsystems) or ["Info"]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    writer = rootwrite.RootWriter(target.name, streamer_info=_streamer_info())
    top = writer.mkdir(writer.mkdir(writer.top, "DQMData"), f"Run {run}")
    folders: dict[str, rootwrite.Directory] = {}

    def folder(relpath: str) -> rootwrite.Directory:
        d = folders.get(relpath)
        if d is None:
            parent, _, name = relpath.rpartition("/")
            d = folders[relpath] = writer.mkdir(folder(parent) if parent else top, name)
        return d

    def put(base: str, items: list[tuple[str, str, Any]]) -> None:
        for where, name, obj in items:
            d = folder(f"{base}/{where}")
            if isinstance(obj, str):
                writer.put(d, "TObjString", obj, "Collectable string class", rootwrite.tobjstring(obj))
            else:
                writer.put(d, obj.classname, name, "", obj.serialize(name=name))

    layout = _layout(subsystems, n_hists, strict, run_summary, lumi, events, run)
    if saved_twice:
        for base, items, _strict in layout:
            put(base, [x for x in items if not x[0].startswith("EventInfo")])
        writer.save()
        for base, items, _strict in layout:
            put(base, [x for x in items if x[0].startswith("EventInfo")])
    else:
        for base, items, _strict in layout:
            put(base, items)
    data = writer.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)
    return len(data)


def write_dqm_file_uproot(
    path: str | os.PathLike[str],
    run: int,
    subsystems: Sequence[str],
    n_hists: int = 200,
    strict: bool = True,
    *,
    lumi: int = 42,
    events: int = 123456,
    run_summary: bool = True,
) -> int:
    """The same content written by uproot, as t0dqm simulated files before: scalar keys named after the
    element (``iRun``, the tag string as the TObjString's text) and free space left zeroed. The DQM GUI
    cannot read these; t0dqm's own checks accept both forms (a test input)."""
    import uproot

    subsystems = list(subsystems) or ["Info"]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    with uproot.recreate(tmp) as f:
        top = f.mkdir(f"DQMData/Run {run}")
        made: dict[str, Any] = {}
        for base, items, _strict in _layout(subsystems, n_hists, strict, run_summary, lumi, events, run):
            for where, name, obj in items:
                key = f"{base}/{where}"
                if key not in made:
                    made[key] = top.mkdir(key)
                made[key][name] = obj
    os.replace(tmp, target)
    return target.stat().st_size


def _pick_class(rng: random.Random) -> str:
    total = sum(w for _, w in _CLASS_WEIGHTS)
    x = rng.uniform(0, total)
    for name, weight in _CLASS_WEIGHTS:
        x -= weight
        if x <= 0:
            return name
    return _CLASS_WEIGHTS[-1][0]


def _one_name(kind: str, rng: random.Random, serial: int) -> str:
    run = rng.randint(300000, 399999)
    k = serial + 1  # processing version: makes names unique within one call
    if kind == "online_sub":
        return f"DQM_V0001_{rng.choice(SUBSYSTEMS)}_R{run:09d}.root"
    if kind == "online_merged":
        return f"DQM_V0001_R{run:09d}.root"
    if kind == "offline_data":
        era = rng.choice(_ERAS)
        return f"DQM_V0001_R{run:09d}__{rng.choice(_PRIMDS)}__{era}A-PromptReco-v{k}__DQMIO.root"
    if kind == "relval_data":
        rel = rng.choice(_RELEASES)
        return f"DQM_V0001_R{run:09d}__{rng.choice(_PRIMDS)}__{rel}-RelVal_data_v{k}__DQMIO.root"
    if kind == "relval_mc":
        rel = rng.choice(_RELEASES)
        return f"DQM_V0001_R000000001__{rng.choice(_RELVAL_PRIMDS)}__{rel}-mcRun3_realistic_v{k}__DQMIO.root"
    if kind == "relval_rundepmc":
        rel = rng.choice(_RELEASES)
        return f"DQM_V0001_R{run:09d}__{rng.choice(_RELVAL_PRIMDS)}__{rel}-PU_rundepMC_v{k}__DQMIO.root"
    if kind == "simulated":
        return f"DQM_V0001_R000000001__{rng.choice(_MC_PRIMDS)}__{rng.choice(_MC_ERAS)}-v{k}__DQMIO.root"
    if kind == "simulated_rundep":
        return f"DQM_V0001_R{run:09d}__{rng.choice(_MC_PRIMDS)}__{rng.choice(_MC_ERAS)}-rundepMC_v{k}__DQMIO.root"
    raise ValueError(kind)


def saved_twice(name: str) -> bool:
    """Whether :func:`simulate` writes this good file "saved twice" (with free gaps): one in three."""
    return zlib.crc32(name.encode()) % 3 == 0


def make_names(n: int, seed: int) -> list[str]:
    """``n`` distinct DQM file names that classify OK, mixing online, offline, relval and MC classes.

    Deterministic for a given seed. Each class appears at least once when ``n >= 8``.
    """
    rng = random.Random(seed)
    kinds = [k for k, _ in _CLASS_WEIGHTS][: min(n, len(_CLASS_WEIGHTS))]
    kinds += [_pick_class(rng) for _ in range(n - len(kinds))]
    rng.shuffle(kinds)
    names: list[str] = []
    seen: set[str] = set()
    for serial, kind in enumerate(kinds):
        name = _one_name(kind, rng, serial)
        while name in seen:
            name = _one_name(kind, rng, serial)
        seen.add(name)
        names.append(name)
    return names


def make_bad_name(rng: random.Random, serial: int = 0) -> str:
    """A name that passes the upload charset/shape check but fails classification."""
    template = _BAD_NAMES[serial % len(_BAD_NAMES)]
    return template.format(
        sub=rng.choice(SUBSYSTEMS),
        run=rng.randint(2, 10000),
        bigrun=rng.randint(300000, 399999),
        pd=rng.choice(_PRIMDS),
        k=serial + 1,
    )


def content_for(name: str) -> tuple[int, list[str], bool]:
    """(run, subsystems, strict) of the file content that matches a (good) name."""
    rng = random.Random(name)
    try:
        info = naming.classify(name)
        run = info.run
        if info.class_ == naming.ONLINE_DATA:
            if info.subsystem:
                return run, [info.subsystem], False
            return run, rng.sample(SUBSYSTEMS, 6), True
        return run, rng.sample(SUBSYSTEMS, 4), True
    except naming.InvalidName:
        return 1, rng.sample(SUBSYSTEMS, 2), False


def md5_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_origin(
    path: str | os.PathLike[str], size: int | None = None, md5: str | None = None, source: str | None = None
) -> Path:
    """Write ``<path>.origin`` = ``md5:<hex> <size> <source>`` (size/md5 may be overridden to lie)."""
    p = Path(path)
    size = p.stat().st_size if size is None else size
    md5 = md5_of(p) if md5 is None else md5
    origin = p.with_name(p.name + ".origin")
    tmp = origin.with_name(origin.name + ".tmp")
    tmp.write_text(f"md5:{md5} {size} {source or p.resolve()}\n")
    os.replace(tmp, origin)
    return origin


def write_broken(
    out_dir: str | os.PathLike[str], kind: str, rng: random.Random, serial: int = 0, n_hists: int = 20
) -> dict[str, Any]:
    """Write one broken file of ``kind`` (see BROKEN_KINDS) into ``out_dir``; return its manifest entry.

    size_mismatch files get a lying ``<name>.origin`` next to them (declared size = real size + 17).
    """
    if kind not in BROKEN_KINDS:
        raise ValueError(f"unknown broken kind {kind!r}; choose from {', '.join(BROKEN_KINDS)}")
    out = Path(out_dir)
    if kind == "bad_name":
        name = make_bad_name(rng, serial)
        try:
            naming.classify(name)
            reason = ""  # pragma: no cover - every template is invalid
        except naming.InvalidName as exc:
            reason = exc.reason
    else:
        name = _one_name("online_sub", rng, serial)
        reason = BROKEN_REASONS[kind]
    while (out / name).exists():  # never overwrite a good file of the same run
        name = _one_name("online_sub", rng, serial) if kind != "bad_name" else make_bad_name(rng, serial)
    path = out / name
    run, subsystems, strict = content_for(name)
    write_dqm_file(
        path, run, subsystems, n_hists=n_hists, strict=strict, run_summary=(kind != "no_run_summary")
    )
    declared = None
    if kind == "truncated":
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    elif kind == "bad_magic":
        with open(path, "r+b") as fh:
            fh.write(b"ROOT\x01")
    elif kind == "size_mismatch":
        declared = path.stat().st_size + 17
        write_origin(path, size=declared)
    entry = _entry(path, broken=kind, reason=reason)
    if declared is not None:
        entry["declared_size"] = declared
    return entry


def _entry(path: Path, broken: str | None = None, reason: str | None = None) -> dict[str, Any]:
    try:
        cls: str | None = naming.classify(path.name).class_
    except naming.InvalidName:
        cls = None
    return {
        "name": path.name,
        "file": str(path),
        "class": cls,
        "size": path.stat().st_size,
        "md5": md5_of(path),
        "broken": broken,
        "reason": reason,
    }


def simulate(
    out_dir: str | os.PathLike[str],
    n_files: int,
    seed: int,
    *,
    broken: int = 0,
    n_hists: int = 200,
    dropbox: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Write ``n_files`` good files and ``broken`` broken ones (cycling BROKEN_KINDS) into ``out_dir``.

    Returns one manifest dict per file (name, file, class, size, md5, broken, reason[, declared_size]
    [, uploaded]). With ``dropbox`` every file is also uploaded with :func:`t0dqm.formats.dropbox.upload`; a
    size_mismatch file is uploaded with its lying declared size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    manifest: list[dict[str, Any]] = []
    for name in make_names(n_files, seed):
        path = out / name
        run, subsystems, strict = content_for(name)
        write_dqm_file(
            path,
            run,
            subsystems,
            n_hists=n_hists,
            strict=strict,
            lumi=rng.randint(1, 2000),
            events=rng.randint(1000, 10**7),
            saved_twice=saved_twice(name),
        )
        manifest.append(_entry(path))
    for i in range(broken):
        manifest.append(write_broken(out, BROKEN_KINDS[i % len(BROKEN_KINDS)], rng, serial=n_files + i))
    if dropbox is not None:
        for entry in manifest:
            entry["uploaded"] = _upload(entry, dropbox)
    return manifest


def _upload(entry: dict[str, Any], dropbox: str | os.PathLike[str]) -> str:
    from t0dqm.formats import dropbox as dbx  # written by another engineer; imported only when asked for

    declared = entry.get("declared_size")
    if declared is not None:
        return str(dbx.upload(entry["file"], dropbox, declared_size=declared))
    return str(dbx.upload(entry["file"], dropbox))


def manifest_json(manifest: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(e) for e in manifest)
