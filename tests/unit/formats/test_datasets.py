"""Tier-0 dataset names: build and parse (t0dqm.formats.datasets)."""

from __future__ import annotations

import pytest

from t0dqm.formats import datasets as ds


@pytest.mark.parametrize(
    "kind,kw,name",
    [
        (
            "express",
            {"pd": "StreamExpress", "era": "Run2022D", "version": 2},
            "/StreamExpress/Run2022D-Express-v2/FEVT",
        ),
        (
            "express",
            {"pd": "StreamExpress", "era": "Run2022D", "version": 2, "tier": "DQM"},
            "/StreamExpress/Run2022D-Express-v2/DQM",
        ),
        (
            "express",
            {"pd": "StreamExpress", "era": "Run2022D", "version": 3, "alca": "TkAlMinBias"},
            "/StreamExpress/Run2022D-TkAlMinBias-Express-v3/ALCARECO",
        ),
        ("repack", {"pd": "Muon", "era": "Run2022D", "version": 1}, "/Muon/Run2022D-v1/RAW"),
        (
            "repack",
            {"pd": ds.error_dataset("Muon"), "era": "Run2022D", "version": 1},
            "/Muon-Error/Run2022D-v1/RAW",
        ),
        (
            "promptreco",
            {"pd": "Muon", "era": "Run2022D", "version": 2, "tier": "AOD"},
            "/Muon/Run2022D-PromptReco-v2/AOD",
        ),
        (
            "promptreco",
            {"pd": "Muon", "era": "Run2022D", "version": 2, "tier": "RECO"},
            "/Muon/Run2022D-PromptReco-v2/RECO",
        ),
        (
            "promptreco",
            {"pd": "Muon", "era": "Run2022D", "version": 2, "tier": "DQM"},
            "/Muon/Run2022D-PromptReco-v2/DQM",
        ),
        (
            "promptreco",
            {"pd": "Muon", "era": "Run2022D", "version": 2, "alca": "TkAlZMuMu"},
            "/Muon/Run2022D-TkAlZMuMu-PromptReco-v2/ALCARECO",
        ),
    ],
)
def test_dataset_build_parse(kind, kw, name):
    assert ds.build(kind, **kw) == name
    parsed = ds.parse(name)
    assert parsed.kind == kind and parsed.version == kw["version"] and parsed.alca == kw.get("alca")
    assert str(parsed) == name


@pytest.mark.parametrize(
    "name",
    [
        "/Muon/Run2022D-v1/AOD",
        "/Muon/Run2022D-Express-v1/RAW",
        "/Muon/Run2022D-PromptReco-v1/FEVT",
        "/Muon/Run2022D-Express-v1/ALCARECO",
        "/Muon/Run2022D-X-v1/RAW",
        "/Muon/Run2022D-PromptReco-vX/AOD",
        "/Muon-Error/Run2022D-PromptReco-v1/AOD",
        "Muon/Run2022D-v1/RAW",
        "/Muon/Run2022D-v0/RAW",
    ],
)
def test_dataset_parse_errors(name):
    with pytest.raises(ds.DatasetNameError):
        ds.parse(name)


def test_dataset_build_errors():
    with pytest.raises(ds.DatasetNameError):
        ds.build("repack", pd="Muon", era="E", version=1, alca="X")
    with pytest.raises(ds.DatasetNameError):
        ds.build("express", pd="S", era="E", version=0)
    with pytest.raises(ds.DatasetNameError):
        ds.build("rereco", pd="S", era="E", version=1)
