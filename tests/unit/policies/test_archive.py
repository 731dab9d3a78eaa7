"""Archive policy (pure): serial choice, freeze, retries, verification, alarm summary, backup rotation."""

from __future__ import annotations

import pytest

from t0dqm.catalog import states
from t0dqm.policies import archive as pol

MAX = 1000
NAME = "DQM_V0001_R000123456__A__B__C.root"
OVH = pol.member_overhead(NAME)


def sf(
    serial: int,
    state: str = states.OPEN,
    size: int = 0,
    nfiles: int = 0,
    readable: bool = True,
    has_name: bool = False,
) -> pol.SerialFacts:
    return pol.SerialFacts(serial, state, size, nfiles, readable, has_name)


# -- choose_serial ---------------------------------------------------------------------------------


def test_no_serial_yet_starts_at_first() -> None:
    assert pol.choose_serial([], 10, NAME, MAX) == pol.FIRST_SERIAL == 1


def test_open_serial_with_room_is_taken() -> None:
    assert pol.choose_serial([sf(1, size=100, nfiles=1)], 10, NAME, MAX) == 1


def test_full_serial_goes_to_next() -> None:
    assert pol.choose_serial([sf(1, size=MAX - 50, nfiles=3)], 10, NAME, MAX) == 2


def test_exact_fit_is_allowed_and_one_byte_more_is_not() -> None:
    fit = MAX - pol.END_RECORD_BYTES - OVH - 10
    assert pol.choose_serial([sf(1, size=fit, nfiles=1)], 10, NAME, MAX) == 1
    assert pol.choose_serial([sf(1, size=fit + 1, nfiles=1)], 10, NAME, MAX) == 2


def test_empty_zip_takes_a_file_larger_than_the_limit() -> None:
    assert pol.choose_serial([sf(1)], 5 * MAX, NAME, MAX) == 1


def test_oversize_file_with_nonempty_zip_opens_new_serial() -> None:
    assert pol.choose_serial([sf(1, size=10, nfiles=1)], 5 * MAX, NAME, MAX) == 2


@pytest.mark.parametrize("state", [s for s in states.ARCHIVE_STATES if s != states.OPEN])
def test_never_adds_to_a_non_open_serial(state: str) -> None:
    assert pol.choose_serial([sf(1, state=state, size=1, nfiles=1)], 1, NAME, MAX) == 2
    assert pol.choose_serial([sf(1, state=state)], 1, NAME, MAX) == 2


def test_first_suitable_serial_wins_even_if_older() -> None:
    serials = [
        sf(3, size=10, nfiles=1),
        sf(1, state=states.FROZEN, size=10, nfiles=1),
        sf(2, size=20, nfiles=1),
    ]
    assert pol.choose_serial(serials, 10, NAME, MAX) == 2


def test_unreadable_or_missing_zip_is_skipped() -> None:
    serials = [sf(1, size=10, nfiles=1, readable=False), sf(2, state=states.FROZEN, size=10, nfiles=1)]
    assert pol.choose_serial(serials, 10, NAME, MAX) == 3


def test_unreadable_empty_zip_is_still_usable() -> None:
    assert pol.choose_serial([sf(1, readable=False)], 10, NAME, MAX) == 1


def test_serial_already_holding_the_name_is_skipped() -> None:
    assert pol.choose_serial([sf(1, size=10, nfiles=1, has_name=True)], 10, NAME, MAX) == 2


def test_next_serial_follows_the_highest_even_with_gaps() -> None:
    assert pol.choose_serial([sf(1, states.FROZEN, 5, 1), sf(7, states.COPIED, 5, 1)], 1, NAME, MAX) == 8


def test_zip_path_fills_the_serial() -> None:
    assert pol.zip_path("A/B_S%04d.zip", 12) == "A/B_S0012.zip"


def test_member_overhead_grows_with_name() -> None:
    assert pol.member_overhead("a" * 10) < pol.member_overhead("a" * 20)
    assert pol.member_overhead("é") == pol.MEMBER_FIXED_OVERHEAD + 4


# -- freeze ----------------------------------------------------------------------------------------

DAY = 86400.0


def af(
    id_: int,
    serial: int,
    state: str = states.OPEN,
    size: int = 10,
    nfiles: int = 1,
    first_write: float | None = 0.0,
    pattern: str = "P_S%04d.zip",
) -> pol.ArchiveFacts:
    return pol.ArchiveFacts(id_, pattern, serial, state, size, nfiles, first_write)


def ids(decisions: list[pol.FreezeDecision]) -> dict[int, str]:
    return {d.archive_id: d.reason for d in decisions}


def test_all_but_newest_freeze_at_once() -> None:
    got = pol.freeze_decisions([af(1, 1), af(2, 2), af(3, 3)], now=1.0, freeze_age=7 * DAY, max_zip_bytes=MAX)
    assert ids(got) == {1: "superseded", 2: "superseded"}


def test_newest_freezes_after_freeze_age_from_first_write() -> None:
    assert ids(pol.freeze_decisions([af(1, 1, first_write=0.0)], 7 * DAY, 7 * DAY, MAX)) == {1: "age"}
    assert pol.freeze_decisions([af(1, 1, first_write=0.0)], 7 * DAY - 1, 7 * DAY, MAX) == []


def test_newest_freezes_when_full() -> None:
    assert ids(pol.freeze_decisions([af(1, 1, size=MAX, first_write=5.0)], 6.0, DAY, MAX)) == {1: "full"}


def test_newest_without_first_write_does_not_age() -> None:
    assert pol.freeze_decisions([af(1, 1, first_write=None)], 100 * DAY, DAY, MAX) == []


def test_empty_archives_never_freeze() -> None:
    got = pol.freeze_decisions([af(1, 1, nfiles=0, size=0), af(2, 2)], 100 * DAY, DAY, MAX)
    assert ids(got) == {2: "age"}


def test_non_open_archives_are_left_alone_but_count_for_newest() -> None:
    got = pol.freeze_decisions([af(1, 1), af(2, 2, state=states.FROZEN)], 1.0, DAY, MAX)
    assert ids(got) == {1: "superseded"}
    assert pol.freeze_decisions([af(2, 2, state=states.COPIED)], 100 * DAY, DAY, MAX) == []


def test_patterns_are_independent() -> None:
    got = pol.freeze_decisions(
        [af(1, 1, pattern="A%04d"), af(2, 2, pattern="A%04d"), af(3, 1, pattern="B%04d")], 1.0, DAY, MAX
    )
    assert ids(got) == {1: "superseded"}


def test_is_full_boundary() -> None:
    limit = MAX - pol.MEMBER_FIXED_OVERHEAD - pol.END_RECORD_BYTES
    assert not pol.is_full(limit, MAX)
    assert pol.is_full(limit + 1, MAX)


# -- retries ---------------------------------------------------------------------------------------


def test_backoff_grows_on_triangular_numbers() -> None:
    assert [pol.backoff_delay(n, 10) for n in range(1, 6)] == [10, 30, 60, 100, 150]


def test_backoff_cap() -> None:
    assert pol.backoff_delay(10, 10, cap=200) == 200


def test_retry_schedules_until_the_limit_then_gives_up() -> None:
    first = pol.retry_decision(0, now=100.0, max_tries=3, base=10)
    assert first == pol.RetryDecision(False, 1, 110.0)
    second = pol.retry_decision(1, 100.0, 3, 10)
    assert second == pol.RetryDecision(False, 2, 130.0)
    assert pol.retry_decision(2, 100.0, 3, 10) == pol.RetryDecision(True, 3, None)
    assert pol.retry_decision(7, 100.0, 3, 10).give_up


def test_single_try_limit_gives_up_at_once() -> None:
    assert pol.retry_decision(0, 0.0, 1, 10).give_up


def test_delays_strictly_increase() -> None:
    times = [pol.retry_decision(n, 0.0, 100, 5).next_try_at for n in range(10)]
    assert all(
        a is not None and b is not None and a < b
        for a, b in zip(times, times[1:], strict=False)  # noqa: RUF007 - assertion kept as written
    )


# -- verify ---------------------------------------------------------------------------------------


def test_verify_due_waits_for_the_delay_and_the_retry() -> None:
    assert not pol.verify_due(None, None, 100.0, 10)
    assert not pol.verify_due(95.0, None, 100.0, 10)
    assert pol.verify_due(90.0, None, 100.0, 10)
    assert not pol.verify_due(0.0, 101.0, 100.0, 10)
    assert pol.verify_due(0.0, 100.0, 100.0, 10)


@pytest.mark.parametrize("require_tape", [True, False])
def test_missing_remote_restages(require_tape: bool) -> None:
    d = pol.verify_decision(10, "0000abcd", None, require_tape)
    assert d.restage and d.new_state == states.FROZEN and not d.final


def test_size_mismatch_restages() -> None:
    d = pol.verify_decision(10, "0000abcd", pol.RemoteFacts(9, "0000abcd", True), False)
    assert d.restage and "size" in d.reason


def test_checksum_mismatch_restages() -> None:
    d = pol.verify_decision(10, "0000abcd", pol.RemoteFacts(10, "0000abce", True), False)
    assert d.restage and "adler32" in d.reason


def test_unknown_remote_checksum_restages() -> None:
    assert pol.verify_decision(10, "0000abcd", pol.RemoteFacts(10, None, None), False).restage


def test_checksum_compare_ignores_leading_zeros_and_case() -> None:
    d = pol.verify_decision(10, "0000abcd", pol.RemoteFacts(10, "ABCD", None), False)
    assert not d.restage and d.new_state == states.VERIFIED


@pytest.mark.parametrize("require_tape", [True, False])
def test_on_tape_is_final(require_tape: bool) -> None:
    d = pol.verify_decision(10, "1", pol.RemoteFacts(10, "1", True), require_tape)
    assert d == pol.VerifyDecision(states.ON_TAPE, False, True, "on tape")


@pytest.mark.parametrize("on_tape", [False, None])
def test_verified_is_final_without_tape_requirement(on_tape: bool | None) -> None:
    d = pol.verify_decision(10, "1", pol.RemoteFacts(10, "1", on_tape), False)
    assert d.new_state == states.VERIFIED and d.final and not d.restage


@pytest.mark.parametrize("on_tape", [False, None])
def test_verified_waits_for_tape_when_required(on_tape: bool | None) -> None:
    d = pol.verify_decision(10, "1", pol.RemoteFacts(10, "1", on_tape), True)
    assert d.new_state == states.VERIFIED and not d.final and not d.restage


# -- alarms and backups ------------------------------------------------------------------------------


def test_summary_none_when_nothing_wrong() -> None:
    assert pol.summarise([]) is None


def test_summary_counts_and_lists_a_few() -> None:
    troubles = [
        pol.Trouble(f"z{i}.zip", states.FAILED if i % 2 else states.CONFLICT, i, f"r{i}") for i in range(8)
    ]
    text = pol.summarise(troubles, max_listed=3)
    assert text is not None
    assert text.splitlines()[0] == "8 archive(s) need attention (4 conflict, 4 failed)"
    assert len(text.splitlines()) == 1 + 3 + 1 and text.endswith("... and 5 more")


def test_summary_without_reason() -> None:
    text = pol.summarise([pol.Trouble("a.zip", states.FAILED, 6, None)])
    assert text is not None and "no reason recorded" in text and "6 tries" in text


def test_backups_to_drop_keeps_the_newest() -> None:
    names = ["20240103", "20240101", "20240102", "notes", "20240104"]
    assert pol.backups_to_drop(names, 2) == ["20240101", "20240102"]
    assert pol.backups_to_drop(names, 10) == []
    assert pol.backups_to_drop(names, 0) == ["20240101", "20240102", "20240103"]
