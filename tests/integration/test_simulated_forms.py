"""Receive, the checks and the index on files shaped as CMSSW writes them (tag-named scalar keys, with and
without marked free gaps) and on the former uproot form (element-named scalar keys): same verdicts, same
monitor elements."""

from __future__ import annotations

import json

import pytest

from t0dqm import config
from t0dqm.catalog.db import get_catalog
from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.steps import index as dqmindex
from t0dqm.steps.receive import receive_one
from tests import rootmap

FORMS = {
    "cmssw": simulate.write_dqm_file,
    "cmssw-saved-twice": lambda path, *a, **k: simulate.write_dqm_file(path, *a, saved_twice=True, **k),
    "uproot-element-keys": simulate.write_dqm_file_uproot,
}
NAMES = (
    "DQM_V0001_R000300001.root",
    "DQM_V0001_Ecal_R000300001.root",
    "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root",
)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_receive_and_index_every_form(settings: config.Settings, form: str) -> None:
    src = settings.root / "src"
    src.mkdir(parents=True)
    cat = get_catalog()
    ids = []
    for name in NAMES:
        run, subsystems, strict = simulate.content_for(name)
        FORMS[form](src / name, run, subsystems, n_hists=25, strict=strict, lumi=77, events=4242)
        if form.startswith("cmssw"):
            rootmap.walk((src / name).read_bytes())
        out = receive_one(dropbox.upload(src / name, settings.dropbox))
        assert out.status == "filed", out
        info = json.loads((settings.repository / (out.target + ".dqminfo")).read_text())
        if name == NAMES[0]:  # merged online: the strict check
            assert info["check"] == f"VERIFY: Good to go; R={run}:L=77:E=4242"
        else:
            assert info["check"] == "VERIFY: Good to go"
        ids.append(out.file_id)
    for file_id in ids:
        assert dqmindex.import_one(file_id, settings, cat) == "partial"
    assert dqmindex.merge_all(settings, cat)["indexed"] == len(NAMES)
    idx = dqmindex.Index(settings)
    mes = idx.monitor_elements(300001, "/Global/Online/ALL")
    values = {(m["subsystem"], m["path"]): m["value"] for m in mes if m["value"] is not None}
    assert values[("Ecal", "Ecal/EventInfo/iRun")] == 300001
    assert values[("Ecal", "Ecal/EventInfo/iLumiSection")] == 77
    merged_summaries = [
        v for (sub, p), v in values.items() if sub is None and p.endswith("EventInfo/reportSummary")
    ]
    assert len(merged_summaries) == 6 and all(v == pytest.approx(0.97) for v in merged_summaries)
    offline = idx.monitor_elements(300002, "/ZeroBias/Run2024A-PromptReco-v1/DQMIO")
    assert sum(m["kind"] == "REAL" for m in offline) == 4 * (1 + len(simulate.REPORT_PARTS))
    assert sum(m["kind"].startswith("TH") for m in offline) == 25 + 4  # + one reportSummaryMap each
