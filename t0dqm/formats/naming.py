"""DQM file names: upload checks, classification, repository paths and zip patterns (pure).

Behaviour follows the original DQM GUI receive daemon (reference/NOTES.md section 1):

* Online names ``DQM_V<v>[_<subsystem>]_R<run>.root``: version 1, run > 10000, class ``online_data``,
  dataset ``/Global/Online/ALL``.
* Offline-style names ``DQM_V<v>_R<run>__<primds>__<procds>__<tier>.root``; the dataset is classified
  in this order (first match wins): simulated_rundep, relval_rundepmc, relval_mc, relval_data, any other
  dataset containing ``CMSSW`` is rejected, then offline_data (run > 1) or simulated (run == 1).
* The era comes from the start of the processed dataset; relval classes need a ``CMSSW_`` era, the
  other classes must not have one.

Repository paths keep ``%04d`` for the version until :func:`repository_path` fills it; zip patterns keep
``%04d`` for the zip serial. ``%05dxxxx`` is ``run // 10000`` and ``%07dxx`` is ``run // 100``.
Relval folders use the release cut to its first three ``_`` parts plus ``_x`` for files
(``CMSSW_12_4_0_pre3`` -> ``CMSSW_12_4_x``) and to two parts plus ``_x_x`` for zips (``CMSSW_12_x_x``).
Monte Carlo zip patterns carry the file's modification month (UTC, ``YYYYMM``), so they need an mtime.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

ONLINE_DATA = "online_data"
OFFLINE_DATA = "offline_data"
SIMULATED = "simulated"
RELVAL_DATA = "relval_data"
RELVAL_MC = "relval_mc"
RELVAL_RUNDEPMC = "relval_rundepmc"
SIMULATED_RUNDEP = "simulated_rundep"

# Import order of the original import daemon (class priority, most urgent first).
CLASS_PRIORITY: tuple[str, ...] = (
    ONLINE_DATA,
    OFFLINE_DATA,
    SIMULATED,
    RELVAL_DATA,
    RELVAL_MC,
    RELVAL_RUNDEPMC,
    SIMULATED_RUNDEP,
)
# Every known class (same order as CLASS_PRIORITY, which is also the order of the quota table).
CLASSES: tuple[str, ...] = CLASS_PRIORITY
RELVAL_CLASSES: frozenset[str] = frozenset({RELVAL_DATA, RELVAL_MC, RELVAL_RUNDEPMC})
MC_CLASSES: frozenset[str] = frozenset({SIMULATED, SIMULATED_RUNDEP})

ONLINE_DATASET = "/Global/Online/ALL"

# Upload handler checks (the GUI's HTTP upload).
RX_UPLOAD_SAFE = re.compile(r"^[-A-Za-z0-9_]+\.root$")
RX_UPLOAD = re.compile(r"^(DQM)_V\d+(_[A-Za-z0-9]+)?_R(\d+)(__.*)?\.root$")
# Receive: the dropbox path must be made of these characters only.
RX_SAFE_PATH = re.compile(r"^[-A-Za-z0-9_/]+\.root$")

RX_DATASET = re.compile(r"^(/[-A-Za-z0-9_]+){3}$")
_RELEASE = r"(CMSSW(?:_[0-9]+)+(?:_pre[0-9]+)?)"
RX_RUNDEPMC = re.compile(r"^/(?!RelVal)[^/]+/.*rundepMC.*$")
RX_RELVAL_RUNDEPMC = re.compile(r"^/RelVal[^/]+/" + _RELEASE + r"[-_].*rundepMC.*$")
RX_RELVAL_MC = re.compile(r"^/RelVal[^/]+/" + _RELEASE + r"[-_].*$")
RX_RELVAL_DATA = re.compile(r"^/[^/]+/" + _RELEASE + r"[-_].*$")
RX_ONLINE = re.compile(r"^(?:.*/)?DQM_V(\d+)(_[A-Za-z0-9]+)?_R(\d+)\.root$")
RX_OFFLINE = re.compile(r"^(?:.*/)?DQM_V(\d+)_R(\d+)((?:__[-A-Za-z0-9_]+){3})\.root$")
RX_ERA = re.compile(r"^([A-Za-z]+\d+|CMSSW(?:_[0-9]+)+(?:_pre[0-9]+)?)")
MAX_RUN = 10**9 - 1  # repository paths use %09d; a larger run would overflow the catalog's integers


class InvalidName(ValueError):
    """A file name that cannot be accepted; ``reason`` says why (human-readable)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


NameError_ = InvalidName


@dataclass(frozen=True)
class DqmName:
    """A classified DQM file name. Fields that do not apply to the class are None."""

    class_: str
    run: int
    version: int
    dataset: str
    subsystem: str | None = None
    era: str | None = None
    primds: str | None = None
    procds: str | None = None
    tier: str | None = None
    release: str | None = None
    mtime: float | None = None  # file modification time, used by Monte Carlo zip patterns

    @property
    def cls(self) -> str:
        return self.class_

    @property
    def is_relval(self) -> bool:
        return self.class_ in RELVAL_CLASSES

    @property
    def sample_key(self) -> tuple[int, str, str | None]:
        """(run, dataset, subsystem): files with the same key are versions of one another."""
        return (self.run, self.dataset, self.subsystem)


def check_upload_name(name: str) -> None:
    """Checks of the original upload handler on a bare file name; raises InvalidName."""
    if not RX_UPLOAD_SAFE.match(name):
        raise InvalidName(name, "unsafe file name (allowed: letters, digits, '-', '_', ending in .root)")
    m = RX_UPLOAD.match(name)
    if not m:
        raise InvalidName(name, "name does not match DQM_V<version>[_<subsystem>]_R<run>[__<dataset>].root")
    if m.group(2) and m.group(4):
        raise InvalidName(name, "name carries both a subsystem and a dataset")


def split_dataset(dataset: str) -> tuple[str, str, str, str | None]:
    """'/PRIMDS/PROCDS/TIER' -> (primds, procds, tier, era or None)."""
    _, primds, procds, tier = dataset.split("/")
    m = RX_ERA.match(procds)
    return primds, procds, tier, (m.group(1) if m else None)


def _in_range(name: str, version: int, run: int) -> tuple[int, int]:
    """(version, run) unless one is too large for the repository paths and the catalog."""
    if run > MAX_RUN:
        raise InvalidName(name, f"run number {run} is out of range (more than 9 digits)")
    if version > 9999:
        raise InvalidName(name, f"file version {version} is out of range (more than 4 digits)")
    return version, run


def classify(name: str, mtime: float | None = None, *, require_v1: bool = True) -> DqmName:
    """Classify a DQM file name (a bare name or a path; only the last component is used).

    ``require_v1`` (default, as for uploads) rejects versions other than 1; pass False to parse names of
    files already in the repository. ``mtime`` is carried along for Monte Carlo zip patterns.
    Raises InvalidName with the reason.
    """
    base = name.rsplit("/", 1)[-1]
    if not base.endswith(".root"):
        raise InvalidName(name, "not a .root file name")
    if not RX_UPLOAD_SAFE.match(base):
        raise InvalidName(name, "unsafe file name (allowed: letters, digits, '-', '_', ending in .root)")

    m = RX_ONLINE.match(base)
    if m:
        version, run = _in_range(name, int(m.group(1)), int(m.group(3)))
        subsystem = m.group(2)[1:] if m.group(2) else None
        if require_v1 and version != 1:
            raise InvalidName(name, f"file version is {version}, not 1")
        if run <= 10000:
            raise InvalidName(name, f"online file has run number {run} <= 10000")
        return DqmName(ONLINE_DATA, run, version, ONLINE_DATASET, subsystem=subsystem, mtime=mtime)

    m = RX_OFFLINE.match(base)
    if not m:
        u = RX_UPLOAD.match(base)
        if u and u.group(2) and u.group(4):
            raise InvalidName(name, "name carries both a subsystem and a dataset")
        raise InvalidName(name, "file name matches no known naming convention")

    version, run = _in_range(name, int(m.group(1)), int(m.group(2)))
    dataset = m.group(3).replace("__", "/")
    if not RX_DATASET.match(dataset):
        raise InvalidName(name, f"invalid dataset name {dataset!r}")
    if require_v1 and version != 1:
        raise InvalidName(name, f"file version is {version}, not 1")
    if run < 1:
        raise InvalidName(name, "file matches offline naming, but run number is < 1")

    release: str | None = None
    if RX_RUNDEPMC.match(dataset):
        if run == 1:
            raise InvalidName(name, "file matches run-dependent Monte Carlo naming, but run number is 1")
        cls = SIMULATED_RUNDEP
    elif rx := RX_RELVAL_RUNDEPMC.match(dataset):
        if run == 1:
            raise InvalidName(name, "file matches relval run-dependent MC naming, but run number is 1")
        cls, release = RELVAL_RUNDEPMC, rx.group(1)
    elif rx := RX_RELVAL_MC.match(dataset):
        if run != 1:
            raise InvalidName(name, f"file matches relval MC naming, but run number is {run}, not 1")
        cls, release = RELVAL_MC, rx.group(1)
    elif rx := RX_RELVAL_DATA.match(dataset):
        if run == 1:
            raise InvalidName(name, "file matches relval data naming, but run number is 1")
        cls, release = RELVAL_DATA, rx.group(1)
    elif "CMSSW" in dataset:
        raise InvalidName(name, "non-relval dataset name contains 'CMSSW'")
    elif run > 1:
        cls = OFFLINE_DATA
    else:
        cls = SIMULATED

    primds, procds, tier, era = split_dataset(dataset)
    if not era:
        raise InvalidName(name, f"failed to determine era from processed dataset {procds!r}")
    if cls in RELVAL_CLASSES:
        if not era.startswith("CMSSW_"):
            raise InvalidName(name, f"relval dataset era {era!r} is not a CMSSW release")
    elif "CMSSW" in era:
        raise InvalidName(name, f"CMSSW era {era!r} but the data is not relval")
    return DqmName(
        cls,
        run,
        version,
        dataset,
        era=era,
        primds=primds,
        procds=procds,
        tier=tier,
        release=release,
        mtime=mtime,
    )


def _release_dir(release: str, parts: int) -> str:
    return "_".join(release.split("_")[:parts])


def file_pattern(info: DqmName) -> str:
    """Repository path (relative to the repository root) with ``%04d`` left for the version."""
    run = info.run
    flat = info.dataset.replace("/", "__")
    c = info.class_
    if c == ONLINE_DATA:
        sub = f"_{info.subsystem}" if info.subsystem else ""
        return f"OnlineData/{run // 10000:05d}xxxx/{run // 100:07d}xx/DQM_V%04d{sub}_R{run:09d}.root"
    if c == OFFLINE_DATA:
        return f"OfflineData/{info.era}/{info.primds}/{run // 100:07d}xx/DQM_V%04d_R{run:09d}{flat}.root"
    if c == RELVAL_DATA:
        return f"RelValData/{_release_dir(_need(info.release), 3)}_x/DQM_V%04d_R{run:09d}{flat}.root"
    if c in (RELVAL_MC, RELVAL_RUNDEPMC):
        return f"RelVal/{_release_dir(_need(info.release), 3)}_x/DQM_V%04d_R{run:09d}{flat}.root"
    if c == SIMULATED:
        return f"MonteCarlo/{info.era}/DQM_V%04d_R{run:09d}{flat}.root"
    if c == SIMULATED_RUNDEP:
        return f"MonteCarlo_RunDep/{info.era}/DQM_V%04d_R{run:09d}{flat}.root"
    raise ValueError(f"unknown class {c!r}")


def repository_path(info: DqmName, version: int | None = None) -> str:
    """Repository path of the file for ``version`` (default: the version in the name)."""
    return file_pattern(info) % (info.version if version is None else version)


def _need(value: str | None) -> str:
    if not value:
        raise ValueError("relval class without a release")
    return value


def zip_pattern(info: DqmName, mtime: float | None = None) -> str:
    """Zip path (relative to the zip root) with ``%04d`` left for the serial.

    Monte Carlo classes need the file mtime (argument, else ``info.mtime``); ValueError without one.
    """
    run = info.run
    c = info.class_
    if c == ONLINE_DATA:
        return f"OnlineData/{run // 10000:05d}xxxx/DQM_Online_R{run // 100:07d}xx_S%04d.zip"
    if c == OFFLINE_DATA:
        return (
            f"OfflineData/{info.era}/{info.primds}/"
            f"DQM_Offline_{info.era}_{info.primds}_R{run // 100:07d}xx_S%04d.zip"
        )
    if c == RELVAL_DATA:
        rel = _need(info.release)
        return f"RelValData/{_release_dir(rel, 2)}_x_x/DQM_RelValData_{rel}_{info.primds}_S%04d.zip"
    if c in (RELVAL_MC, RELVAL_RUNDEPMC):
        rel = _need(info.release)
        return f"RelVal/{_release_dir(rel, 2)}_x_x/DQM_RelVal_{rel}_S%04d.zip"
    if c in MC_CLASSES:
        when = info.mtime if mtime is None else mtime
        if when is None:
            raise ValueError(f"zip pattern of class {c} needs the file modification time")
        month = time.strftime("%Y%m", time.gmtime(when))
        top = "MonteCarlo" if c == SIMULATED else "MonteCarlo_RunDep"
        return f"{top}/{info.era}/DQM_MC_{info.era}_{info.primds}_{month}_S%04d.zip"
    raise ValueError(f"unknown class {c!r}")


def to_json(info: DqmName, mtime: float | None = None) -> dict[str, Any]:
    """The CLI dict (without "name"/"ok"): classification, version-1 path and zip pattern.

    For Monte Carlo classes without any mtime (argument or ``info.mtime``) the current time is used.
    """
    when = mtime if mtime is not None else info.mtime
    if when is None and info.class_ in MC_CLASSES:
        when = time.time()
    return {
        "class": info.class_,
        "run": info.run,
        "version": info.version,
        "dataset": info.dataset,
        "subsystem": info.subsystem,
        "era": info.era,
        "primds": info.primds,
        "procds": info.procds,
        "tier": info.tier,
        "release": info.release,
        "path": repository_path(info, 1),
        "zippat": zip_pattern(info, when),
    }


def class_priority(cls: str) -> int:
    """Position of a class in the import order (unknown classes last)."""
    try:
        return CLASS_PRIORITY.index(cls)
    except ValueError:
        return len(CLASS_PRIORITY)
