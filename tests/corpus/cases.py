"""The bad-input corpus: one entry per case, materialised at test time (tests/corpus/build.py) and run by
tests/integration/test_corpus.py through the entry point it names.

Every case names its ``entry`` (the code path that meets the input), the input ``spec`` and the exact
``expect``ed outcome: a status and a substring of the error or quarantine reason. ``{sentinel}`` in any
string is replaced by a directory outside every configured root, which the test snapshots before and
after (it must not change).

Entry points: classify (naming + `t0dqm classify`), upload (`t0dqm upload` into the dropbox), receive
(receive_one on a hand-made dropbox entry), legacy (`t0dqm import-legacy`), eosdump (dump aggregation),
sync (online sync against a lying HTTP server), upload_server (the HTTP upload endpoint), race (two
processes at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ONLINE = "DQM_V0001_Ecal_R000300101.root"
MERGED = "DQM_V0001_R000300102.root"
OFFLINE = "DQM_V0001_R000300103__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"
RELVAL = "DQM_V0001_R000000001__RelValTTbar_14TeV__CMSSW_14_0_1-140X_v1-v1__DQMIO.root"
GOOD_INFO = "'class': 'online_data', 'version': 1, 'runnr': 300104, 'dataset': '/Global/Online/ALL'"
UNIT = "/eos/cms/store/t0streamer/Data/Express/000/300/105"
DUMP_OK = (
    f"path={UNIT}/run300105_ls0001_streamExpress_StorageManager.dat size=100 checksum=0a0b0c0d "
    "ctime=1700000000.1 mtime=1700000000.123"
)


@dataclass(frozen=True)
class Case:
    id: str
    entry: str
    spec: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)


def _c(id: str, entry: str, expect: dict[str, Any], **spec: Any) -> Case:
    return Case(id, entry, spec, expect)


CASES: list[Case] = [
    # -- classify: names that almost match the conventions ------------------------------------------
    _c(
        "classify-online-small-run",
        "classify",
        {"error": "run number 42 <= 10000"},
        name="DQM_V0001_R000000042.root",
    ),
    _c(
        "classify-version-2",
        "classify",
        {"error": "file version is 2, not 1"},
        name="DQM_V0002_R000300101.root",
    ),
    _c(
        "classify-lowercase-prefix",
        "classify",
        {"error": "matches no known naming convention"},
        name="dqm_V0001_R000300101.root",
    ),
    _c(
        "classify-uppercase-suffix",
        "classify",
        {"error": "not a .root file name"},
        name="DQM_V0001_R000300101.ROOT",
    ),
    _c(
        "classify-two-dataset-parts",
        "classify",
        {"error": "matches no known naming convention"},
        name="DQM_V0001_R000300101__ZeroBias__Run2024A-v1.root",
    ),
    _c(
        "classify-subsystem-and-dataset",
        "classify",
        {"error": "both a subsystem and a dataset"},
        name="DQM_V0001_Ecal_R000300101__ZeroBias__Run2024A-v1__DQMIO.root",
    ),
    _c(
        "classify-relval-mc-wrong-run",
        "classify",
        {"error": "relval MC naming, but run number is 2"},
        name="DQM_V0001_R000000002__RelValTTbar_14TeV__CMSSW_14_0_1-140X_v1-v1__DQMIO.root",
    ),
    _c(
        "classify-cmssw-in-data",
        "classify",
        {"error": "non-relval dataset name contains 'CMSSW'"},
        name="DQM_V0001_R000300101__ZeroBias__Run2024A-CMSSW_14-v1__DQMIO.root",
    ),
    _c(
        "classify-no-era",
        "classify",
        {"error": "failed to determine era"},
        name="DQM_V0001_R000300101__ZeroBias__Commissioning-v1__DQMIO.root",
    ),
    _c(
        "classify-run-zero",
        "classify",
        {"error": "run number is < 1"},
        name="DQM_V0001_R000000000__ZeroBias__Run2024A-v1__DQMIO.root",
    ),
    _c(
        "classify-double-suffix",
        "classify",
        {"error": "unsafe file name"},
        name="DQM_V0001_R000300101.root.root",
    ),
    _c(
        "classify-unicode",
        "classify",
        {"error": "unsafe file name"},
        name="DQM_V0001_\u00c9cal_R000300101.root",
    ),
    _c("classify-space", "classify", {"error": "unsafe file name"}, name="DQM_V0001 Ecal_R000300101.root"),
    _c(
        "classify-huge-run",
        "classify",
        {"error": "out of range (more than 9 digits)"},
        name="DQM_V0001_R" + "9" * 30 + ".root",
    ),
    _c(
        "classify-huge-version",
        "classify",
        {"error": "out of range (more than 4 digits)"},
        name="DQM_V" + "1" * 25 + "_R000300101.root",
    ),
    _c("classify-good-relval", "classify", {"class": "relval_mc"}, name=RELVAL),
    # -- upload (`t0dqm upload`): the upload handler's name checks ----------------------------------
    _c("upload-space", "upload", {"error": "unsafe file name"}, name="DQM_V0001 R000300101.root"),
    _c("upload-unicode", "upload", {"error": "unsafe file name"}, name="DQM_V0001_\u00c9cal_R000300101.root"),
    _c(
        "upload-wrong-prefix",
        "upload",
        {"error": "does not match DQM_V<version>"},
        name="XYZ_V0001_R000300101.root",
    ),
    _c(
        "upload-subsystem-and-dataset",
        "upload",
        {"error": "both a subsystem and a dataset"},
        name="DQM_V0001_Ecal_R000300101__A__B2024__C.root",
    ),
    _c("upload-trailing-text", "upload", {"error": "unsafe file name"}, name="DQM_V0001_R000300101.root.txt"),
    # -- receive: what lands in the dropbox -----------------------------------------------------------
    _c(
        "receive-zero-length",
        "receive",
        {"status": "quarantined", "reason": "not a ROOT file (bad magic)"},
        name=ONLINE,
        content="empty",
    ),
    _c(
        "receive-text-named-root",
        "receive",
        {"status": "quarantined", "reason": "not a ROOT file (bad magic)"},
        name=ONLINE,
        content="text",
    ),
    _c(
        "receive-truncated-half",
        "receive",
        {"status": "quarantined", "reason": "truncated: file has"},
        name=ONLINE,
        content="truncated",
    ),
    _c(
        "receive-header-only",
        "receive",
        {"status": "quarantined", "reason": "truncated: file has 64 bytes"},
        name=ONLINE,
        content="header_only",
    ),
    _c(
        "receive-magic-only",
        "receive",
        {"status": "quarantined", "reason": "shorter than a ROOT header"},
        name=ONLINE,
        content="magic_only",
    ),
    _c(
        "receive-corrupt-header",
        "receive",
        {"status": "quarantined", "reason": "corrupt ROOT header"},
        name=ONLINE,
        content="corrupt_header",
    ),
    _c(
        "receive-zeroed-body",
        "receive",
        {"status": "quarantined", "reason": "ROOT check failed (loose): no Run summary folder"},
        name=ONLINE,
        content="zeroed_body",
    ),
    _c(
        "receive-no-run-summary",
        "receive",
        {"status": "quarantined", "reason": "no Run summary folder"},
        name=ONLINE,
        content="no_run_summary",
    ),
    _c(
        "receive-merged-not-strict",
        "receive",
        {"status": "quarantined", "reason": "ROOT check failed (strict): missing reportSummaryMap"},
        name=MERGED,
        content="loose",
    ),
    _c(
        "receive-size-larger",
        "receive",
        {"status": "quarantined", "reason": "size mismatch: .origin says"},
        name=ONLINE,
        origin={"size_delta": 17},
    ),
    _c(
        "receive-size-smaller",
        "receive",
        {"status": "quarantined", "reason": "size mismatch: .origin says"},
        name=ONLINE,
        origin={"size_delta": -1},
    ),
    _c(
        "receive-huge-declared-size",
        "receive",
        {"status": "quarantined", "reason": "size mismatch: .origin says 1" + "0" * 30 + " bytes"},
        name=ONLINE,
        origin={"size": 10**30},
    ),
    _c(
        "receive-md5-mismatch",
        "receive",
        {"status": "quarantined", "reason": "md5 mismatch"},
        name=ONLINE,
        origin={"md5": "0" * 32},
    ),
    _c(
        "receive-origin-malformed",
        "receive",
        {"status": "quarantined", "reason": "malformed .origin"},
        name=ONLINE,
        origin={"raw": "sha1:abc 12 producer\n"},
    ),
    _c(
        "receive-origin-code",
        "receive",
        {"status": "quarantined", "reason": "malformed .origin"},
        name=ONLINE,
        origin={"raw": "__import__('os').system('touch {sentinel}/pwned')\n"},
    ),
    _c(
        "receive-origin-multiline-source",
        "receive",
        {"status": "quarantined", "reason": "malformed .origin"},
        name=ONLINE,
        origin={"source": "host\nmd5:0 1 injected"},
    ),
    _c(
        "receive-origin-negative-size",
        "receive",
        {"status": "quarantined", "reason": "malformed .origin"},
        name=ONLINE,
        origin={"size": -5},
    ),
    _c(
        "receive-origin-source-traversal",
        "receive",
        {"status": "filed", "origin": "../../../../etc/passwd"},
        name=ONLINE,
        origin={"source": "../../../../etc/passwd"},
    ),
    _c(
        "receive-origin-source-absolute",
        "receive",
        {"status": "filed", "origin": "{sentinel}/keep.txt"},
        name=OFFLINE,
        origin={"source": "{sentinel}/keep.txt"},
    ),
    _c(
        "receive-origin-symlink-outside",
        "receive",
        {"status": "quarantined", "reason": ".origin is a symbolic link", "not_in_reason": "SECRET"},
        name=ONLINE,
        layout="origin_symlink_outside",
    ),
    _c(
        "receive-file-symlink-outside",
        "receive",
        {"status": "quarantined", "reason": "not a regular file"},
        name=ONLINE,
        layout="file_symlink_outside",
    ),
    _c(
        "receive-dangling-symlink",
        "receive",
        {"status": "quarantined", "reason": "not a regular file"},
        name=ONLINE,
        layout="dangling_symlink",
    ),
    _c(
        "receive-slot-symlink-outside",
        "receive",
        {"status": "refused", "reason": "resolves outside the dropbox"},
        name=ONLINE,
        layout="slot_symlink_outside",
    ),
    _c(
        "receive-directory-named-root",
        "receive",
        {"status": "quarantined", "reason": "not a regular file"},
        name=ONLINE,
        layout="directory",
    ),
    _c(
        "receive-origin-without-file",
        "receive",
        {"status": "quarantined", "reason": "file missing"},
        name=ONLINE,
        layout="no_file",
    ),
    _c(
        "receive-unicode-name",
        "receive",
        {"status": "quarantined", "reason": "unsafe characters in upload path"},
        name="DQM_V0001_\u00c9cal_R000300101.root",
    ),
    _c(
        "receive-space-name",
        "receive",
        {"status": "quarantined", "reason": "unsafe characters in upload path"},
        name="DQM_V0001 Ecal_R000300101.root",
    ),
    _c(
        "receive-near-miss-small-run",
        "receive",
        {"status": "quarantined", "reason": "bad name: online file"},
        name="DQM_V0001_Ecal_R000000042.root",
    ),
    _c(
        "receive-near-miss-huge-run",
        "receive",
        {"status": "quarantined", "reason": "bad name: run number"},
        name="DQM_V0001_Ecal_R" + "9" * 25 + ".root",
    ),
    _c(
        "receive-near-miss-cmssw",
        "receive",
        {"status": "quarantined", "reason": "bad name: non-relval dataset"},
        name="DQM_V0001_R000300101__ZeroBias__Run2024A-CMSSW_14-v1__DQMIO.root",
    ),
    _c(
        "receive-path-outside-dropbox",
        "receive",
        {"status": "refused", "reason": "is not inside the dropbox"},
        name=ONLINE,
        layout="path_traversal",
    ),
    # -- legacy .dqminfo (`t0dqm import-legacy`): never evaluated --------------------------------------
    _c(
        "legacy-bare-code",
        "legacy",
        {"error": "not a dict literal"},
        text="__import__('os').system('touch {sentinel}/pwned')",
    ),
    _c(
        "legacy-call-in-dict",
        "legacy",
        {"error": "only literals are allowed, found Call"},
        text="{'class': __import__('os').system('touch {sentinel}/pwned'), 'version': 1}",
    ),
    _c(
        "legacy-lambda",
        "legacy",
        {"error": "only literals are allowed, found Call"},
        text="{'class': (lambda: open('{sentinel}/keep.txt', 'w'))(), 'version': 1}",
    ),
    _c(
        "legacy-attribute",
        "legacy",
        {"error": "found Attribute"},
        text="{'class': ().__class__, 'version': 1}",
    ),
    _c(
        "legacy-fstring",
        "legacy",
        {"error": "found JoinedStr"},
        text="{'class': f'{open(\"x\")}', 'version': 1}",
    ),
    _c("legacy-comprehension", "legacy", {"error": "found ListComp"}, text="{'k': [x for x in ()]}"),
    _c("legacy-name", "legacy", {"error": "found Name"}, text="{'class': os}"),
    _c("legacy-unpacking", "legacy", {"error": "'**' unpacking not allowed"}, text="{**{}, 'a': 1}"),
    _c(
        "legacy-deep-nesting",
        "legacy",
        {"error": "nested deeper than"},
        text="{'a': " + "[" * 40 + "]" * 40 + "}",
    ),
    _c("legacy-too-large", "legacy", {"error": "more than 1048576"}, text="{'a': '" + "x" * (1 << 21) + "'}"),
    _c("legacy-bytes", "legacy", {"error": "bytes literal not allowed"}, text="{'a': b'x'}"),
    _c("legacy-set", "legacy", {"error": "top level is Set, not a dict"}, text="{1, 2, {3}}"),
    _c(
        "legacy-version-string",
        "legacy",
        {"error": "version must be an integer"},
        text="{'class': 'online_data', 'version': '1', 'runnr': 300104, 'dataset': '/Global/Online/ALL'}",
    ),
    _c(
        "legacy-missing-keys",
        "legacy",
        {"error": "missing keys runnr, dataset"},
        text="{'class': 'online_data', 'version': 1}",
    ),
    _c(
        "legacy-huge-size",
        "legacy",
        {"error": "size 1" + "0" * 30 + " is out of range"},
        text="{" + GOOD_INFO + ", 'size': 10" + "0" * 29 + "}",
    ),
    _c(
        "legacy-size-text",
        "legacy",
        {"error": "size must be a number"},
        text="{" + GOOD_INFO + ", 'size': 'lots'}",
    ),
    _c("legacy-binary", "legacy", {"error": "not a dict literal"}, text="\x00\x01\x02ELF"),
    _c(
        "legacy-outside-repository",
        "legacy",
        {"error": "is not in the subpath"},
        text="{" + GOOD_INFO + "}",
        where="sentinel",
    ),
    # -- EOS namespace dump: malformed lines and files ------------------------------------------------
    _c(
        "eos-malformed-lines",
        "eosdump",
        {"summary": {"malformed": 7, "area_files": 1, "units": 1}},
        lines=[
            DUMP_OK,
            "no key value pairs at all",
            f"path={UNIT}/a.dat size=12a checksum=1 ctime=1.1 mtime=1.1",
            f"path={UNIT}/b.dat size=-5 checksum=1 ctime=1.1 mtime=1.1",
            f"path={UNIT}/c.dat size=5 checksum=1 ctime=1.1 mtime=1700000000.5e3",
            f"path={UNIT}/d.dat size=5 checksum=1 ctime=1 mtime=1",
            "path=relative/store/t0streamer/x.dat size=5 checksum=1 ctime=1.1 mtime=1.1",
            "path=root://evil//store/t0streamer/x.dat size=5 checksum=1 ctime=1.1 mtime=1.1",
        ],
    ),
    _c(
        "eos-traversal-path",
        "eosdump",
        {"summary": {"area_files": 2, "units": 1, "unrecognised_files": 1}},
        lines=[
            DUMP_OK,
            f"path={UNIT}/../../../../../../../../../etc/passwd size=7 checksum=1 ctime=1.1 mtime=1.1",
        ],
    ),
    _c(
        "eos-binary-and-spaces",
        "eosdump",
        {"summary": {"malformed": 1, "units": 1, "unrecognised_files": 1}},
        lines=[
            DUMP_OK,
            "\x00\xff\xfe garbage",
            (
                "path=/eos/cms/store/t0streamer/Data/A B/000/300/105/x.dat size=1 "
                "checksum=1 ctime=1.1 mtime=1.1"
            ),
        ],
    ),
    _c(
        "eos-very-long-line",
        "eosdump",
        {"summary": {"malformed": 1, "units": 1}},
        lines=[DUMP_OK, "x" * (9 << 20)],
    ),
    _c(
        "eos-only-malformed",
        "eosdump",
        {"error": "has no file under /store/t0streamer/"},
        lines=["garbage", "more garbage"],
    ),
    _c("eos-empty", "eosdump", {"error": "has no file under /store/t0streamer/"}, lines=[]),
    _c("eos-truncated-gzip", "eosdump", {"error": "is truncated"}, lines=[DUMP_OK] * 2000, gzip="truncated"),
    _c("eos-not-gzip", "eosdump", {"error": "is corrupt"}, lines=[DUMP_OK], gzip="plain"),
    _c("eos-too-old", "eosdump", {"error": "is too old"}, lines=[DUMP_OK], age=72 * 3600),
    # -- online sync against listings that lie -----------------------------------------------------------
    _c(
        "sync-short-body",
        "sync",
        {"error": "got 100 bytes, Content-Length said 5000", "downloaded": []},
        server="short_body",
    ),
    _c(
        "sync-head-size-lies",
        "sync",
        {"error": "the listing (HEAD) said 5000", "downloaded": []},
        server="head_lies",
    ),
    _c(
        "sync-off-site-and-parent-links",
        "sync",
        {"downloaded": ["DQM_V0001_Ecal_R000300101.root"]},
        server="off_site_links",
    ),
    _c("sync-self-links", "sync", {"downloaded": ["DQM_V0001_Ecal_R000300101.root"]}, server="self_links"),
    _c("sync-infinite-depth", "sync", {"error": "listing deeper than 16 levels"}, server="infinite_depth"),
    _c("sync-redirect-loop", "sync", {"error": "infinite loop"}, server="redirect_loop"),
    _c(
        "sync-redirect-off-host",
        "sync",
        {"error": "redirect to another host refused", "downloaded": []},
        server="redirect_off_host",
    ),
    _c(
        "sync-bad-last-modified",
        "sync",
        {"error": "DQM_V0001_Ecal_R000300101.root", "downloaded": []},
        server="bad_last_modified",
    ),
    _c("sync-http-500", "sync", {"error": "HTTP Error 500", "downloaded": []}, server="http_500"),
    _c("sync-binary-listing", "sync", {"downloaded": []}, server="binary_listing"),
    _c(
        "sync-unicode-and-spaces",
        "sync",
        {"downloaded": ["DQM V0001.root", "DQM_\u00c9cal.root"]},
        server="unicode_names",
    ),
    # -- HTTP upload endpoint: requests that lie --------------------------------------------------------
    _c("http-size-smaller", "upload_server", {"http": 500, "detail": "expected to write 10"}, size=10),
    _c("http-size-larger", "upload_server", {"http": 500, "detail": "expected to write"}, size_delta=1),
    _c("http-huge-declared-size", "upload_server", {"http": 413, "detail": "exceeds the limit"}, size=10**30),
    _c(
        "http-md5-lies",
        "upload_server",
        {"http": 500, "message": "Checksum mismatch"},
        checksum="md5:" + "0" * 32,
    ),
    _c(
        "http-crc32-lies",
        "upload_server",
        {"http": 500, "message": "Checksum mismatch"},
        checksum="crc32:12345",
    ),
    _c(
        "http-checksum-malformed",
        "upload_server",
        {"http": 500, "message": "Malformed checksum"},
        checksum="sha1:abcdef",
    ),
    _c("http-not-root", "upload_server", {"http": 500, "message": "Not a ROOT file"}, content="text"),
    _c("http-zero-length", "upload_server", {"http": 500, "message": "Not a ROOT file"}, content="empty"),
    _c(
        "http-absolute-filename",
        "upload_server",
        {"http": 500, "detail": "unsafe file name"},
        filename="{sentinel}/keep.txt",
    ),
    _c(
        "http-traversal-filename",
        "upload_server",
        {"http": 200, "stored_as": ONLINE},
        filename="../../../{sentinel}/" + ONLINE,
    ),
    _c(
        "http-unicode-filename",
        "upload_server",
        {"http": 500, "detail": "unsafe file name"},
        filename="DQM_V0001_\u00c9cal_R000300101.root",
    ),
    _c(
        "http-near-miss-name",
        "upload_server",
        {"http": 500, "detail": "run number 42 <= 10000"},
        filename="DQM_V0001_R000000042.root",
    ),
    _c(
        "http-content-length-lies-long",
        "upload_server",
        {"http": 400, "message": "Truncated request"},
        raw="length_long",
    ),
    _c(
        "http-content-length-lies-short",
        "upload_server",
        {"http": 400, "detail": "body ended before"},
        raw="length_short",
    ),
    _c(
        "http-two-files",
        "upload_server",
        {"http": 500, "detail": "single file-type argument"},
        raw="two_files",
    ),
    _c("http-no-content-length", "upload_server", {"http": 411}, raw="no_length"),
    # -- two processes at once -----------------------------------------------------------------------
    _c("race-upload-same-file", "race", {"filed_versions": [1, 2]}, kind="dropbox_upload"),
    _c("race-http-upload-same-file", "race", {"filed_versions": [1, 2]}, kind="http_upload"),
    _c("race-receive-two-uploads-same-name", "race", {"filed_versions": [1, 2]}, kind="receive_crossed"),
]

ENTRIES = sorted({c.entry for c in CASES})


def by_entry(entry: str) -> list[Case]:
    return [c for c in CASES if c.entry == entry]
