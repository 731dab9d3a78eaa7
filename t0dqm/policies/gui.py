"""DQM GUI registration decisions (pure): what to send to the GUI's ``POST /api/v1/register``.

The new DQM GUI keeps one file per (dataset, run, lumi) and replaces a row when the same key is
registered again, so:

* only the newest version of a sample is sent; an older version that arrives (or is re-sent) after a
  newer one is registered is never sent (it would replace the newer one in the GUI);
* every file the chain accepted gets its own GUI key: offline names carry their dataset
  (``/PD/Era/Tier``); online names carry none, so merged online files go to ``gui.online_dataset``
  (``/Global/Online/ALL``) and per-subsystem files to ``gui.online_subsystem_dataset``
  (``/Global/Online/{subsystem}``), which keeps one subsystem's file from replacing another's;
* the file path is the one the GUI host reads: the repository path under ``gui.file_prefix``.

Files are sent as ``{"dataset", "run", "lumi": 0, "file", "fileformat": 1}`` (the legacy TDirectory
layout, whatever the name's ending), in batches of ``gui.batch`` per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from t0dqm.formats import naming

FILEFORMAT_TDIRECTORY = 1
RX_GUI_DATASET = re.compile(r"^(/[^/\s]+){3}$")


class BadDataset(ValueError):
    """A configured or derived GUI dataset that is not three ``/``-separated parts."""


@dataclass(frozen=True)
class FileFacts:
    """What the decision needs of one catalog row."""

    id: int
    path: str  # relative to the repository
    cls: str
    run: int
    version: int
    dataset: str
    subsystem: str | None = None
    registered: bool = False
    removed: bool = False  # ROOT file deleted by version or quota control
    indexed: bool = True  # False for files the chain does not index (create-info, superseded)


@dataclass(frozen=True)
class Sample:
    file_id: int
    dataset: str
    run: int
    file: str

    def payload(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "run": self.run,
            "lumi": 0,
            "file": self.file,
            "fileformat": FILEFORMAT_TDIRECTORY,
        }


@dataclass(frozen=True)
class Plan:
    send: tuple[Sample, ...] = ()
    skip: tuple[tuple[int, str], ...] = ()  # (file id, why it is not sent), recorded in the catalog


def check_dataset(text: str, what: str = "dataset") -> str:
    if not RX_GUI_DATASET.match(text):
        raise BadDataset(f"{what} {text!r} is not /<primary>/<processed>/<tier>")
    return text


def gui_dataset(f: FileFacts, online_dataset: str, online_subsystem_dataset: str) -> str:
    """The GUI dataset of a file (three parts; BadDataset otherwise)."""
    if f.cls == naming.ONLINE_DATA:
        if f.subsystem:
            return check_dataset(
                online_subsystem_dataset.format(subsystem=f.subsystem), "gui.online_subsystem_dataset"
            )
        return check_dataset(online_dataset, "gui.online_dataset")
    return check_dataset(f.dataset)


def gui_file(path: str, repository: str, prefix: str = "") -> str:
    """The path the GUI host opens: ``prefix/path`` when a prefix is configured, else the local path."""
    base = (prefix or repository).rstrip("/")
    return f"{base}/{path.lstrip('/')}"


def archive_url_path(run: int, dataset: str) -> str:
    """The GUI's top folder of a sample: ``/api/v1/archive/<run>/<PD>/<Era>/<Tier>/``."""
    return f"/api/v1/archive/{int(run)}/{quote(dataset.strip('/'))}/"


def plan(
    candidates: Iterable[FileFacts],
    group: Iterable[FileFacts],
    *,
    repository: str,
    online_dataset: str,
    online_subsystem_dataset: str,
    prefix: str = "",
    force: bool = False,
) -> Plan:
    """Which candidates to send and which to leave, with the reason.

    ``group``: every catalog row sharing run and dataset with a candidate (candidates included), so a
    newer version elsewhere is seen. Registered candidates are sent again only with ``force``.
    """
    group_rows = {f.id: f for f in group}
    cands = list(candidates)
    group_rows.update({f.id: f for f in cands})
    keys: dict[int, tuple[str, int]] = {}
    skip: list[tuple[int, str]] = []
    for f in group_rows.values():
        try:
            keys[f.id] = (gui_dataset(f, online_dataset, online_subsystem_dataset), f.run)
        except BadDataset as exc:
            if any(c.id == f.id for c in cands):
                skip.append((f.id, str(exc)))
    newest: dict[tuple[str, int], FileFacts] = {}
    for f in group_rows.values():
        key = keys.get(f.id)
        if key is None or f.removed or not f.indexed:
            continue
        best = newest.get(key)
        if best is None or (f.version, f.id) > (best.version, best.id):
            newest[key] = f
    send: list[Sample] = []
    seen: set[int] = set()
    for f in sorted(cands, key=lambda c: (c.run, c.id)):
        if f.id in seen or f.id not in keys:
            continue
        seen.add(f.id)
        if f.removed:
            skip.append((f.id, "ROOT file removed"))
            continue
        if not f.indexed:
            skip.append((f.id, "not for the index (superseded or create-info)"))
            continue
        top = newest[keys[f.id]]
        if top.id != f.id:
            skip.append((f.id, f"superseded by version {top.version} (file {top.id})"))
            continue
        if f.registered and not force:
            continue
        send.append(Sample(f.id, keys[f.id][0], f.run, gui_file(f.path, repository, prefix)))
    return Plan(tuple(send), tuple(skip))


def batches(samples: Sequence[Sample], size: int) -> list[list[Sample]]:
    size = max(1, int(size))
    return [list(samples[i : i + size]) for i in range(0, len(samples), size)]


def retry_delay(retries: int, base: float, cap: float) -> float:
    """Back-off before retry number ``retries + 1``: base, 2 base, 4 base ... capped."""
    return float(min(cap, base * (2 ** max(0, retries))))
