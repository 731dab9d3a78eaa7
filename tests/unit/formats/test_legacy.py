"""Legacy .dqminfo/.zinfo files: Python dict literals read without eval."""

from __future__ import annotations

import pytest

from t0dqm.formats import legacy
from t0dqm.formats.legacy import LegacyFormatError, check_dqminfo, parse_legacy_info, read_legacy_info

ORIGINAL = (
    "{'origin': '/data/uploads/0001/DQM_V0001_R000316000__ZeroBias__Run2018A-v1__DQMIO.root.origin', "
    "'import': '/data/uploads/0001/DQM_V0001_R000316000__ZeroBias__Run2018A-v1__DQMIO.root', "
    "'class': 'offline_data', 'version': 1, 'runnr': 316000, 'dataset': '/ZeroBias/Run2018A-v1/DQMIO', "
    "'size': 1234567L, 'md5sum': 'd41d8cd98f00b204e9800998ecf8427e', 'xpath': '/x/y.root', "
    "'time': 1528000000, 'check': 'VERIFY: Good to go', 'era': 'Run2018', 'primds': 'ZeroBias', "
    "'procds': 'Run2018A-v1', 'tier': 'DQMIO', "
    "'filepat': 'OfflineData/Run2018/ZeroBias/0003160xx/DQM_V%04d_R000316000__ZeroBias__Run2018A-v1__DQMIO.root', "
    "'zippat': 'OfflineData/Run2018/ZeroBias/DQM_Offline_Run2018_ZeroBias_R0003160xx_S%04d.zip', "
    "'path': 'OfflineData/Run2018/ZeroBias/0003160xx/DQM_V0001_R000316000__ZeroBias__Run2018A-v1__DQMIO.root', "
    "'zippath': 'OfflineData/Run2018/ZeroBias/DQM_Offline_Run2018_ZeroBias_R0003160xx_S0001.zip', "
    "'subsystem': None, 'release': u'', 'flag': True, 'ratio': -0.5, 'list': [1, (2, 'x')]}\n"
)


def test_original_dqminfo(tmp_path):
    path = tmp_path / "f.root.dqminfo"
    path.write_text(ORIGINAL)
    info = read_legacy_info(path)
    assert info["size"] == 1234567 and isinstance(info["size"], int)
    assert info["runnr"] == 316000 and info["class"] == "offline_data"
    assert info["subsystem"] is None and info["release"] == "" and info["flag"] is True
    assert info["ratio"] == -0.5 and info["list"] == [1, (2, "x")]
    assert check_dqminfo(info) is info


def test_long_suffix_inside_strings_untouched():
    info = parse_legacy_info("{'a': '12L', 'b': 12L, 'c': 0x1fL, 'd': \"L\"}")
    assert info == {"a": "12L", "b": 12, "c": 31, "d": "L"}


def test_zinfo_and_json():
    z = parse_legacy_info(
        "{'zactions': 2, 'zmtime': 1528000000.5, 'zpath': '/z/a.zip', 'frozen': 1528600000}"
    )
    assert z["zactions"] == 2 and z["zmtime"] == 1528000000.5
    assert parse_legacy_info('{"class": "online_data", "subsystem": null, "ok": true}') == {
        "class": "online_data",
        "subsystem": None,
        "ok": True,
    }


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{'a': __import__('os').system('touch /tmp/pwned')}", "only literals"),
        ("{'a': open('/etc/passwd').read()}", "only literals"),
        ("{'a': (lambda: 1)()}", "only literals"),
        ("{'a': 1 + 2}", "only literals"),
        ("{'a': [x for x in 'ab']}", "only literals"),
        ("{'a': {1, 2}}", "only literals"),
        ("{'a': b'bytes'}", "bytes literal not allowed"),
        ("{'a': 1j}", "complex literal not allowed"),
        ("{**other}", "unpacking not allowed"),
        ("{1: 'int key'}", "keys must be strings"),
        ("{'a': 1", "not a Python literal"),
        ("['a', 1]", "not a dict literal"),
        ("import os", "not a dict literal"),
        ("   ", "empty"),
        ("{'a': " + "[" * 20 + "]" * 20 + "}", "nested deeper"),
        ("{} or os.system('x')", "top level is BoolOp, not a dict"),
        ("{'a': -'x'}", "only literals"),
    ],
)
def test_rejected(text, why):
    with pytest.raises(LegacyFormatError) as err:
        parse_legacy_info(text, source="x.dqminfo")
    assert why in str(err.value)
    assert str(err.value).startswith("x.dqminfo: ")
    assert isinstance(err.value, ValueError)


def test_dict_with_or_is_not_evaluated(tmp_path):
    # "{} or ..." would run code under eval; here it is refused before anything is evaluated
    marker = tmp_path / "pwned"
    with pytest.raises(LegacyFormatError):
        parse_legacy_info(f"{{}} or __import__('pathlib').Path({str(marker)!r}).touch()")
    assert not marker.exists()


def test_read_errors(tmp_path):
    with pytest.raises(LegacyFormatError, match="cannot read"):
        read_legacy_info(tmp_path / "missing.dqminfo")
    big = tmp_path / "big.dqminfo"
    big.write_bytes(b"{" + b" " * (legacy.MAX_BYTES + 1) + b"}")
    with pytest.raises(LegacyFormatError, match="more than"):
        read_legacy_info(big)
    latin = tmp_path / "latin.dqminfo"
    latin.write_bytes("{'a': 'caf\xe9'}".encode("latin-1"))
    assert read_legacy_info(latin) == {"a": "caf\xe9"}


def test_check_dqminfo():
    with pytest.raises(LegacyFormatError, match="missing keys version, runnr"):
        check_dqminfo({"class": "online_data", "dataset": "/Global/Online/ALL"})
    with pytest.raises(LegacyFormatError, match="runnr must be an integer"):
        check_dqminfo({"class": "x", "version": 1, "runnr": "5", "dataset": "/a/b/c"})
    with pytest.raises(LegacyFormatError, match="class must be a string"):
        check_dqminfo({"class": 1, "version": 1, "runnr": 5, "dataset": "/a/b/c"})


def test_find_info_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.root.dqminfo").write_text("{}")
    (tmp_path / "a.root.dqminfo").write_text("{}")
    (tmp_path / "z.zinfo").write_text("{}")
    (tmp_path / "a.root").write_text("")
    found = [p.relative_to(tmp_path).as_posix() for p in legacy.find_info_files(tmp_path)]
    assert found == ["a.root.dqminfo", "b/x.root.dqminfo"]
    both = [p.name for p in legacy.find_info_files(tmp_path, (".dqminfo", ".zinfo"))]
    assert sorted(both) == ["a.root.dqminfo", "x.root.dqminfo", "z.zinfo"]
