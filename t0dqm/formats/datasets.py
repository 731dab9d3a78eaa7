"""Tier-0 dataset names (reference 004: "Dataset Naming Conventions for Tier-0 Data").

- express:    /<ExpressDataset>/<Era>-Express-v<N>/{FEVT,DQM}
              /<ExpressDataset>/<Era>-<AlcaProducer>-Express-v<N>/ALCARECO
- repack:     /<PD>/<Era>-v<N>/RAW   (/<PD>-Error/<Era>-v<N>/RAW for outputs over the hard size limit)
- promptreco: /<PD>/<Era>-PromptReco-v<N>/{RECO,AOD,DQM}
              /<PD>/<Era>-<AlcaProducer>-PromptReco-v<N>/ALCARECO
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("express", "repack", "promptreco")
TIERS: dict[str, frozenset[str]] = {
    "express": frozenset({"FEVT", "DQM"}),
    "repack": frozenset({"RAW"}),
    "promptreco": frozenset({"RECO", "AOD", "DQM"}),
}
ALCA_TIER = "ALCARECO"
DEFAULT_TIER = {"express": "FEVT", "repack": "RAW", "promptreco": "RECO"}

_PD_RE = re.compile(r"^[A-Za-z0-9_]+(-Error)?$")
_WORD_RE = re.compile(r"^[A-Za-z0-9_]+$")
_NAME_RE = re.compile(r"^/([^/]+)/([^/]+)/([^/]+)$")
_PROC_RE = re.compile(
    r"^(?P<era>[A-Za-z0-9_]+)(?:-(?P<alca>[A-Za-z0-9_]+))??(?:-(?P<step>Express|PromptReco))?-v(?P<v>[0-9]+)$"
)


class DatasetNameError(ValueError):
    """A dataset name does not follow the Tier-0 conventions."""


@dataclass(frozen=True)
class DatasetName:
    kind: str
    pd: str
    era: str
    version: int
    tier: str
    alca: str | None = None

    def __str__(self) -> str:
        return build(
            self.kind, pd=self.pd, era=self.era, version=self.version, tier=self.tier, alca=self.alca
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "pd": self.pd,
            "era": self.era,
            "version": self.version,
            "tier": self.tier,
            "alca": self.alca,
        }


def error_dataset(pd: str) -> str:
    """Primary dataset that receives repack outputs over the hard limit."""
    return pd if pd.endswith("-Error") else f"{pd}-Error"


def _check(kind: str, pd: str, era: str, version: int, tier: str, alca: str | None) -> None:
    if kind not in KINDS:
        raise DatasetNameError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not _PD_RE.match(pd) or (pd.endswith("-Error") and kind != "repack"):
        raise DatasetNameError(f"bad primary dataset {pd!r}")
    if not _WORD_RE.match(era):
        raise DatasetNameError(f"bad acquisition era {era!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DatasetNameError(f"version must be a positive integer, got {version!r}")
    if alca is not None:
        if kind == "repack":
            raise DatasetNameError("repack datasets have no AlcaProducer")
        if not _WORD_RE.match(alca):
            raise DatasetNameError(f"bad AlcaProducer {alca!r}")
        if tier != ALCA_TIER:
            raise DatasetNameError(f"an AlcaProducer dataset has tier {ALCA_TIER}, got {tier!r}")
    elif tier not in TIERS[kind]:
        allowed = sorted(TIERS[kind]) + ([] if kind == "repack" else [f"{ALCA_TIER} (with an AlcaProducer)"])
        raise DatasetNameError(f"tier {tier!r} is not valid for {kind}; allowed: {', '.join(allowed)}")


def build(
    kind: str, *, pd: str, era: str, version: int, tier: str | None = None, alca: str | None = None
) -> str:
    """Build a dataset name; tier defaults to ALCARECO with alca, else FEVT/RAW/RECO."""
    if tier is None:
        tier = ALCA_TIER if alca is not None else DEFAULT_TIER.get(kind, "")
    _check(kind, pd, era, version, tier, alca)
    step = {"express": "-Express", "promptreco": "-PromptReco", "repack": ""}[kind]
    middle = f"{era}-{alca}{step}" if alca else f"{era}{step}"
    return f"/{pd}/{middle}-v{version}/{tier}"


def parse(name: str) -> DatasetName:
    """Parse a Tier-0 dataset name; raises DatasetNameError when it follows none of the conventions."""
    m = _NAME_RE.match(name)
    if not m:
        raise DatasetNameError(f"not a dataset name /PD/PROCESSED/TIER: {name!r}")
    pd, proc, tier = m.groups()
    p = _PROC_RE.match(proc)
    if not p:
        raise DatasetNameError(f"processed dataset {proc!r} follows no Tier-0 convention")
    step, alca = p.group("step"), p.group("alca")
    kind = {"Express": "express", "PromptReco": "promptreco", None: "repack"}[step]
    if kind == "repack" and alca is not None:
        raise DatasetNameError(f"processed dataset {proc!r} follows no Tier-0 convention")
    result = DatasetName(
        kind=kind, pd=pd, era=p.group("era"), version=int(p.group("v")), tier=tier, alca=alca
    )
    _check(result.kind, result.pd, result.era, result.version, result.tier, result.alca)
    return result
