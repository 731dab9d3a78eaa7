"""Simulated DQM ROOT files (uproot) and names, good and broken, for tests, the demo and benchmarks.

File layout (as CMSSW's DQM writes it)::

    DQMData/Run <run>/<subsystem>/Run summary/<folder>/<histogram>          TH1D / TH2D
    DQMData/Run <run>/<subsystem>/Run summary/EventInfo/iRun                "<iRun>i=<run></iRun>"
                                                       /iEvent, /iLumiSection (INT scalars)
                                                       /reportSummary      "<reportSummary>f=0.97</reportSummary>"
                                                       /reportSummaryMap   TH2D
                                                       /reportSummaryContents/<part>  REAL scalars

Scalars are TObjStrings named after the element whose content is the DQM ``<name>t=value</name>`` string
(uproot cannot write key names containing ``/``; see :mod:`t0dqm.rootcheck`, which reads both forms).
``strict=False`` files have the histograms and iRun/iEvent/iLumiSection only (they pass the loose check
and fail the strict one with "missing reportSummaryMap").

Writing is fast: a few histogram objects are converted once per process and reused for every key
(~0.1 s for 200 histograms). Files are written to ``<path>.tmp`` and renamed into place.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t0dqm import naming

SUBSYSTEMS = ("Ecal", "Hcal", "Pixel", "SiStrip", "DT", "CSC", "RPC", "L1T", "HLT", "Tracking", "JetMET",
              "Muons", "Egamma", "BeamMonitor", "GEM", "PixelPhase1", "Info")
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

_PRIMDS = ("ZeroBias", "JetHT", "SingleMuon", "EGamma", "MinimumBias", "Cosmics", "HLTPhysics", "Muon",
           "JetMET", "DoubleMuon")
_ERAS = ("Run2018", "Run2022", "Run2023", "Run2024", "Commissioning2024", "HIRun2023")
_RELVAL_PRIMDS = ("RelValTTbar_14TeV", "RelValZMM_14", "RelValSingleMuPt10", "RelValMinBias_14TeV",
                  "RelValQCD_FlatPt_15_3000HS_14", "RelValZEE_14")
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


def _scalar(name: str, code: str, value: object) -> str:
    return f"<{name}>{code}={value}</{name}>"


def write_dqm_file(path: str | os.PathLike[str], run: int, subsystems: Sequence[str], n_hists: int = 200,
                   strict: bool = True, *, lumi: int = 42, events: int = 123456,
                   run_summary: bool = True) -> int:
    """Write a DQM ROOT file with ``n_hists`` histograms spread over ``subsystems``; return its size.

    ``strict`` adds reportSummary, reportSummaryMap and reportSummaryContents (the content required of
    merged online files). ``run_summary=False`` writes the folders without ``Run summary`` (broken).
    """
    import uproot

    ones, twos = _templates()
    subsystems = list(subsystems) or ["Info"]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    inner = "Run summary" if run_summary else f"By Lumi Section {lumi}-{lumi}"
    with uproot.recreate(tmp) as f:
        top = f.mkdir(f"DQMData/Run {run}")
        for s_index, sub in enumerate(subsystems):
            base = top.mkdir(f"{sub}/{inner}")
            share = n_hists // len(subsystems) + (1 if s_index < n_hists % len(subsystems) else 0)
            folders = [base.mkdir(name) for name in FOLDERS[: max(1, min(len(FOLDERS), share // 20 or 1))]]
            for i in range(share):
                folder = folders[i % len(folders)]
                if i % 10 == 9:
                    folder[f"{sub}_map_{i}"] = twos[i % len(twos)]
                else:
                    folder[f"{sub}_h{i}"] = ones[i % len(ones)]
            info = base.mkdir("EventInfo")
            info["iRun"] = _scalar("iRun", "i", run)
            info["iEvent"] = _scalar("iEvent", "i", events)
            info["iLumiSection"] = _scalar("iLumiSection", "i", lumi)
            if strict:
                info["reportSummary"] = _scalar("reportSummary", "f", 0.97)
                info["reportSummaryMap"] = twos[-1]
                contents = info.mkdir("reportSummaryContents")
                for part in REPORT_PARTS:
                    contents[f"{sub}{part}"] = _scalar(f"{sub}{part}", "f", 0.95)
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
    return template.format(sub=rng.choice(SUBSYSTEMS), run=rng.randint(2, 10000),
                           bigrun=rng.randint(300000, 399999), pd=rng.choice(_PRIMDS), k=serial + 1)


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


def write_origin(path: str | os.PathLike[str], size: int | None = None, md5: str | None = None,
                 source: str | None = None) -> Path:
    """Write ``<path>.origin`` = ``md5:<hex> <size> <source>`` (size/md5 may be overridden to lie)."""
    p = Path(path)
    size = p.stat().st_size if size is None else size
    md5 = md5_of(p) if md5 is None else md5
    origin = p.with_name(p.name + ".origin")
    tmp = origin.with_name(origin.name + ".tmp")
    tmp.write_text(f"md5:{md5} {size} {source or p.resolve()}\n")
    os.replace(tmp, origin)
    return origin


def write_broken(out_dir: str | os.PathLike[str], kind: str, rng: random.Random, serial: int = 0,
                 n_hists: int = 20) -> dict[str, Any]:
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
    write_dqm_file(path, run, subsystems, n_hists=n_hists, strict=strict, run_summary=(kind != "no_run_summary"))
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
    return {"name": path.name, "file": str(path), "class": cls, "size": path.stat().st_size,
            "md5": md5_of(path), "broken": broken, "reason": reason}


def simulate(out_dir: str | os.PathLike[str], n_files: int, seed: int, *, broken: int = 0,
             n_hists: int = 200, dropbox: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Write ``n_files`` good files and ``broken`` broken ones (cycling BROKEN_KINDS) into ``out_dir``.

    Returns one manifest dict per file (name, file, class, size, md5, broken, reason[, declared_size]
    [, uploaded]). With ``dropbox`` every file is also uploaded with :func:`t0dqm.dropbox.upload`; a
    size_mismatch file is uploaded with its lying declared size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    manifest: list[dict[str, Any]] = []
    for name in make_names(n_files, seed):
        path = out / name
        run, subsystems, strict = content_for(name)
        write_dqm_file(path, run, subsystems, n_hists=n_hists, strict=strict,
                       lumi=rng.randint(1, 2000), events=rng.randint(1000, 10**7))
        manifest.append(_entry(path))
    for i in range(broken):
        manifest.append(write_broken(out, BROKEN_KINDS[i % len(BROKEN_KINDS)], rng, serial=n_files + i))
    if dropbox is not None:
        for entry in manifest:
            entry["uploaded"] = _upload(entry, dropbox)
    return manifest


def _upload(entry: dict[str, Any], dropbox: str | os.PathLike[str]) -> str:
    from t0dqm import dropbox as dbx  # written by another engineer; imported only when asked for

    declared = entry.get("declared_size")
    if declared is not None:
        return str(dbx.upload(entry["file"], dropbox, declared_size=declared))
    return str(dbx.upload(entry["file"], dropbox))


def manifest_json(manifest: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(e) for e in manifest)
