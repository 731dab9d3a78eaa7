"""Naming: every class rule, repository path and zip pattern, every rejection."""

from __future__ import annotations

import calendar

import pytest

from t0dqm.formats import naming
from t0dqm.formats.naming import DqmName, InvalidName, classify, repository_path, to_json, zip_pattern

JAN_2024 = calendar.timegm((2024, 1, 15, 12, 0, 0))
DEC_2023_LATE = calendar.timegm((2023, 12, 31, 23, 59, 59))

RELVAL_DATA = (
    "DQM_V0001_R000355000__JetHT__CMSSW_12_4_0_pre3-124X_dataRun3_v1_RelVal_jetHT2022A-v1__DQMIO.root"
)
RELVAL_MC = (
    "DQM_V0001_R000000001__RelValTTbar_14TeV__CMSSW_12_4_0_pre3-124X_mcRun3_2022_realistic_v5-v1__DQMIO.root"
)
RELVAL_RDMC = "DQM_V0001_R000320000__RelValTTbar_13__CMSSW_10_6_0-PU_rundepMC_106X-v1__DQMIO.root"
OFFLINE = "DQM_V0001_R000316000__ZeroBias__Run2018A-17Sep2018-v1__DQMIO.root"
SIMULATED = "DQM_V0001_R000000001__MinBias_TuneCP5__RunIISummer20UL18-106X_upgrade2018-v1__DQMIO.root"
SIM_RUNDEP = "DQM_V0001_R000320500__MinBias__Summer20-rundepMC_106X-v1__DQMIO.root"


def test_online_with_subsystem():
    info = classify("DQM_V0001_Ecal_R000123456.root")
    assert info == DqmName("online_data", 123456, 1, "/Global/Online/ALL", subsystem="Ecal")
    assert info.cls == "online_data"
    assert info.era is None and info.primds is None and info.tier is None and info.release is None
    assert repository_path(info, 1) == "OnlineData/00012xxxx/0001234xx/DQM_V0001_Ecal_R000123456.root"
    assert repository_path(info, 3) == "OnlineData/00012xxxx/0001234xx/DQM_V0003_Ecal_R000123456.root"
    assert zip_pattern(info) == "OnlineData/00012xxxx/DQM_Online_R0001234xx_S%04d.zip"


def test_online_merged_without_subsystem():
    info = classify("/data/uploads/0007/DQM_V0001_R000123456.root")
    assert info.class_ == "online_data" and info.subsystem is None and info.run == 123456
    assert repository_path(info, 1) == "OnlineData/00012xxxx/0001234xx/DQM_V0001_R000123456.root"
    assert zip_pattern(info) == "OnlineData/00012xxxx/DQM_Online_R0001234xx_S%04d.zip"


def test_online_run_boundary():
    assert classify("DQM_V0001_R000010001.root").run == 10001
    with pytest.raises(InvalidName, match="<= 10000"):
        classify("DQM_V0001_R000010000.root")
    with pytest.raises(InvalidName, match="<= 10000"):
        classify("DQM_V0001_Ecal_R000000123.root")


def test_online_version_must_be_one():
    with pytest.raises(InvalidName, match="version is 2, not 1"):
        classify("DQM_V0002_Ecal_R000123456.root")
    info = classify("DQM_V0002_Ecal_R000123456.root", require_v1=False)
    assert info.version == 2
    assert repository_path(info) == "OnlineData/00012xxxx/0001234xx/DQM_V0002_Ecal_R000123456.root"


def test_short_version_and_run_digits():
    info = classify("DQM_V1_Pixel_R123456.root")
    assert (info.version, info.run, info.subsystem) == (1, 123456, "Pixel")
    assert repository_path(info, 1) == "OnlineData/00012xxxx/0001234xx/DQM_V0001_Pixel_R000123456.root"


def test_offline_data():
    info = classify(OFFLINE)
    assert info.class_ == "offline_data"
    assert info.run == 316000 and info.version == 1
    assert info.dataset == "/ZeroBias/Run2018A-17Sep2018-v1/DQMIO"
    assert (info.era, info.primds, info.procds, info.tier) == (
        "Run2018",
        "ZeroBias",
        "Run2018A-17Sep2018-v1",
        "DQMIO",
    )
    assert info.release is None and info.subsystem is None
    assert repository_path(info, 1) == (
        "OfflineData/Run2018/ZeroBias/0003160xx/"
        "DQM_V0001_R000316000__ZeroBias__Run2018A-17Sep2018-v1__DQMIO.root"
    )
    assert (
        zip_pattern(info) == "OfflineData/Run2018/ZeroBias/DQM_Offline_Run2018_ZeroBias_R0003160xx_S%04d.zip"
    )


def test_offline_run_two_is_offline():
    assert classify("DQM_V0001_R000000002__A__Run2018A-v1__DQMIO.root").class_ == "offline_data"


def test_relval_data():
    info = classify(RELVAL_DATA)
    assert info.class_ == "relval_data"
    assert info.release == "CMSSW_12_4_0_pre3" and info.era == "CMSSW_12_4_0_pre3"
    assert info.primds == "JetHT"
    assert repository_path(info, 1) == "RelValData/CMSSW_12_4_x/" + RELVAL_DATA
    assert zip_pattern(info) == "RelValData/CMSSW_12_x_x/DQM_RelValData_CMSSW_12_4_0_pre3_JetHT_S%04d.zip"


def test_relval_mc():
    info = classify(RELVAL_MC)
    assert info.class_ == "relval_mc" and info.run == 1
    assert info.release == "CMSSW_12_4_0_pre3"
    assert info.primds == "RelValTTbar_14TeV" and info.tier == "DQMIO"
    assert repository_path(info, 1) == "RelVal/CMSSW_12_4_x/" + RELVAL_MC
    assert zip_pattern(info) == "RelVal/CMSSW_12_x_x/DQM_RelVal_CMSSW_12_4_0_pre3_S%04d.zip"


def test_relval_release_with_patch_digits():
    name = "DQM_V0001_R000000001__RelValZMM__CMSSW_13_0_10_1-130X-v1__GEN-SIM-RECO.root"
    info = classify(name)
    assert info.release == "CMSSW_13_0_10_1"
    assert repository_path(info, 2).startswith("RelVal/CMSSW_13_0_x/DQM_V0002_R000000001__RelValZMM")
    assert zip_pattern(info) == "RelVal/CMSSW_13_x_x/DQM_RelVal_CMSSW_13_0_10_1_S%04d.zip"


def test_relval_rundepmc():
    info = classify(RELVAL_RDMC)
    assert info.class_ == "relval_rundepmc" and info.run == 320000
    assert info.release == "CMSSW_10_6_0"
    assert repository_path(info, 1) == "RelVal/CMSSW_10_6_x/" + RELVAL_RDMC
    assert zip_pattern(info) == "RelVal/CMSSW_10_x_x/DQM_RelVal_CMSSW_10_6_0_S%04d.zip"


def test_simulated():
    info = classify(SIMULATED, JAN_2024)
    assert info.class_ == "simulated" and info.run == 1
    assert info.era == "RunIISummer20" and info.primds == "MinBias_TuneCP5"
    assert info.release is None
    assert repository_path(info, 1) == "MonteCarlo/RunIISummer20/" + SIMULATED
    assert (
        zip_pattern(info) == "MonteCarlo/RunIISummer20/DQM_MC_RunIISummer20_MinBias_TuneCP5_202401_S%04d.zip"
    )
    # explicit mtime wins over the one carried in the info; the month is UTC
    assert zip_pattern(info, DEC_2023_LATE).endswith("_202312_S%04d.zip")


def test_simulated_needs_mtime_for_zip():
    info = classify(SIMULATED)
    with pytest.raises(ValueError, match="modification time"):
        zip_pattern(info)
    assert zip_pattern(info, JAN_2024).endswith("_202401_S%04d.zip")


def test_simulated_rundep():
    info = classify(SIM_RUNDEP, JAN_2024)
    assert info.class_ == "simulated_rundep" and info.run == 320500
    assert info.era == "Summer20" and info.primds == "MinBias"
    assert repository_path(info, 1) == "MonteCarlo_RunDep/Summer20/" + SIM_RUNDEP
    assert zip_pattern(info) == "MonteCarlo_RunDep/Summer20/DQM_MC_Summer20_MinBias_202401_S%04d.zip"


def test_class_order_rundep_before_relval_data():
    # a non-RelVal primary dataset with CMSSW release and rundepMC: simulated_rundep wins, then its era
    # (a CMSSW release) is refused because it is not relval
    with pytest.raises(InvalidName, match="CMSSW era 'CMSSW_10_6_0' but the data is not relval"):
        classify("DQM_V0001_R000320000__MinBias__CMSSW_10_6_0-rundepMC-v1__DQMIO.root")
    # a RelVal rundepMC dataset is relval_rundepmc, not relval_mc (run > 1 allowed)
    assert classify(RELVAL_RDMC).class_ == "relval_rundepmc"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("DQM_V0002_R000316000__ZeroBias__Run2018A-v1__DQMIO.root", "version is 2, not 1"),
        ("DQM_V0001_R000000000__ZeroBias__Run2018A-v1__DQMIO.root", "run number is < 1"),
        (
            "DQM_V0001_R000000001__MinBias__Summer20-rundepMC-v1__DQMIO.root",
            "run-dependent Monte Carlo naming, but run number is 1",
        ),
        (
            "DQM_V0001_R000000001__RelValTTbar__CMSSW_10_6_0-rundepMC-v1__DQMIO.root",
            "relval run-dependent MC naming, but run number is 1",
        ),
        (
            "DQM_V0001_R000000002__RelValTTbar__CMSSW_10_6_0-v1__DQMIO.root",
            "relval MC naming, but run number is 2, not 1",
        ),
        (
            "DQM_V0001_R000000001__JetHT__CMSSW_12_4_0-v1__DQMIO.root",
            "relval data naming, but run number is 1",
        ),
        (
            "DQM_V0001_R000316000__ZeroBias__Run2018A-CMSSW_10-v1__DQMIO.root",
            "non-relval dataset name contains 'CMSSW'",
        ),
        ("DQM_V0001_R000316000__ZeroBias__CMSSWX-v1__DQMIO.root", "non-relval dataset name contains 'CMSSW'"),
        ("DQM_V0001_R000316000__ZeroBias__Commissioning-v1__DQMIO.root", "failed to determine era"),
        ("DQM_V0001_R000000001__MinBias__Private-v1__DQMIO.root", "failed to determine era"),
        ("DQM_V0001_R000316000__A___B__C__D.root", "invalid dataset name"),
        ("DQM_V0001_Ecal_R000123456__ZeroBias__Run2018A-v1__DQMIO.root", "both a subsystem and a dataset"),
        ("Playback_V0001_Ecal_R000123456.root", "matches no known naming convention"),
        ("DQM_R000123456.root", "matches no known naming convention"),
        ("DQM_V0001_R000316000__ZeroBias__DQMIO.root", "matches no known naming convention"),
        ("DQM_V0001_Ecal-Barrel_R000123456.root", "matches no known naming convention"),
        ("DQM_V0001_R000123456.root.tmp", "not a .root file name"),
        ("DQM V0001_R000123456.root", "unsafe file name"),
        ("DQM_V0001_R000316000__Zero.Bias__Run2018A-v1__DQMIO.root", "unsafe file name"),
        ("", "not a .root file name"),
    ],
)
def test_rejections(name, reason):
    with pytest.raises(InvalidName) as err:
        classify(name)
    assert reason in err.value.reason
    assert err.value.name == name
    assert isinstance(err.value, ValueError)
    assert naming.NameError_ is InvalidName


def test_check_upload_name():
    naming.check_upload_name("DQM_V0001_Ecal_R000123456.root")
    naming.check_upload_name(OFFLINE)
    with pytest.raises(InvalidName, match="unsafe"):
        naming.check_upload_name("dir/DQM_V0001_R000123456.root")
    with pytest.raises(InvalidName, match="does not match"):
        naming.check_upload_name("Playback_V0001_R000123456.root")
    with pytest.raises(InvalidName, match="both a subsystem and a dataset"):
        naming.check_upload_name("DQM_V0001_Ecal_R000123456__A__B2__C.root")


def test_safe_path_regex():
    assert naming.RX_SAFE_PATH.match("uploads/0001/DQM_V0001_R000123456.root")
    assert not naming.RX_SAFE_PATH.match("uploads/00 01/DQM_V0001_R000123456.root")


def test_to_json_fields():
    d = to_json(classify(OFFLINE))
    assert list(d) == [
        "class",
        "run",
        "version",
        "dataset",
        "subsystem",
        "era",
        "primds",
        "procds",
        "tier",
        "release",
        "path",
        "zippat",
    ]
    assert d["subsystem"] is None and d["release"] is None and d["class"] == "offline_data"
    d = to_json(classify(SIMULATED), JAN_2024)
    assert d["zippat"].endswith("_202401_S%04d.zip")
    # no mtime at all: "now" is used rather than failing
    assert to_json(classify(SIMULATED))["zippat"].startswith("MonteCarlo/RunIISummer20/DQM_MC_")


def test_class_tables():
    assert naming.CLASS_PRIORITY == (
        "online_data",
        "offline_data",
        "simulated",
        "relval_data",
        "relval_mc",
        "relval_rundepmc",
        "simulated_rundep",
    )
    assert set(naming.CLASSES) == set(naming.CLASS_PRIORITY)
    assert naming.class_priority("online_data") == 0
    assert naming.class_priority("nope") == len(naming.CLASS_PRIORITY)


def test_sample_key_and_frozen():
    info = classify("DQM_V0001_Ecal_R000123456.root")
    assert info.sample_key == (123456, "/Global/Online/ALL", "Ecal")
    with pytest.raises(AttributeError):
        info.run = 3  # type: ignore[misc]


def test_file_pattern_unknown_class():
    bogus = DqmName("bogus", 5, 1, "/a/b/c")
    with pytest.raises(ValueError):
        naming.file_pattern(bogus)
    with pytest.raises(ValueError):
        zip_pattern(bogus)
