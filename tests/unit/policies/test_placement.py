"""The pure subscription policy: site_for, endpoints, configuration checks, the redistribution plan."""

from __future__ import annotations

import random

import pytest

from t0dqm.policies import placement as policy

TB = 10**12
SUBS = policy.Subscriptions(
    sites={"ZeroBias": "T1_IT_CNAF", "JetMET": "T1_DE_KIT", "Muon": "T1_US_FNAL"},
    default_site="T1_US_FNAL",
    disk_tiers=frozenset({"AOD"}),
)


# ---------------------------------------------------------------------------------------------- site_for


@pytest.mark.parametrize("tier", ["RAW", "AOD", "MINIAOD", "DQMIO", "ALCARECO", "FEVT"])
def test_every_tier_follows_raw(tier: str) -> None:
    raw = policy.site_for(SUBS, "ZeroBias", "RAW")
    other = policy.site_for(SUBS, "ZeroBias", tier)
    assert raw.site == other.site == "T1_IT_CNAF"
    assert other.known
    assert ("follows RAW" in other.reason) == (tier != "RAW")


def test_new_pd_goes_to_the_default_site() -> None:
    p = policy.site_for(SUBS, "BrandNewPD", "RAW")
    assert p.site == "T1_US_FNAL" and not p.known
    assert "new PD" in p.reason and "T1_US_FNAL" in p.reason
    other = policy.site_for(policy.Subscriptions(default_site="T1_ES_PIC"), "X", "AOD")
    assert other.site == "T1_ES_PIC"


def test_error_dataset_follows_its_pd() -> None:
    p = policy.site_for(SUBS, "JetMET-Error", "RAW")
    assert p.site == "T1_DE_KIT" and p.known and "as JetMET" in p.reason


def test_endpoints_t0_disk_tape_and_disk_tiers() -> None:
    _p, eps = policy.endpoints(SUBS, "ZeroBias", "RAW")
    assert [(e.rse, e.role) for e in eps] == [("T0_CH_CERN_Disk", "t0-disk"), ("T1_IT_CNAF_Tape", "tape")]
    _p, eps = policy.endpoints(SUBS, "ZeroBias", "AOD")
    assert [e.rse for e in eps] == ["T0_CH_CERN_Disk", "T1_IT_CNAF_Tape", "T1_IT_CNAF_Disk"]
    _p, eps = policy.endpoints(SUBS, "Unknown", "MINIAOD")
    assert [e.rse for e in eps] == ["T0_CH_CERN_Disk", "T1_US_FNAL_Tape"]


# ------------------------------------------------------------------------------------------ configuration


def test_from_config_accepts_a_valid_table() -> None:
    subs = policy.from_config(
        {
            "default_site": "T1_US_FNAL",
            "t0_disk": "T0_CH_CERN_Disk",
            "sites": {"ZeroBias": "T1_IT_CNAF"},
            "disk_tiers": ["AOD", "MINIAOD"],
        }
    )
    assert subs.sites == {"ZeroBias": "T1_IT_CNAF"} and subs.disk_tiers == {"AOD", "MINIAOD"}


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({"default_site": "T2_CH_CERN"}, "default_site"),
        ({"default_site": "fnal"}, "default_site"),
        ({"t0_disk": "T1_US_FNAL_Disk"}, "t0_disk"),
        ({"t0_disk": "T0_CH_CERN_Tape"}, "t0_disk"),
        ({"sites": {"ZeroBias": "T2_IT_Pisa"}}, "Tier-0 and Tier-1 sites only"),
        ({"sites": {"Bad/PD": "T1_IT_CNAF"}}, "not a primary dataset"),
        ({"sites": ["ZeroBias"]}, "must be a table"),
        ({"disk_tiers": "AOD"}, "disk_tiers"),
        ({"disk_tiers": ["aod"]}, "disk_tiers"),
    ],
)
def test_from_config_refuses(cfg: dict, needle: str) -> None:
    with pytest.raises(policy.SubscriptionError, match=needle):
        policy.from_config(cfg)


def test_config_load_refuses_a_tier2_site() -> None:
    from t0dqm import config

    with pytest.raises(config.ConfigError, match="Tier-0/Tier-1"):
        config.load(None, environ={"T0DQM_SUBSCRIPTIONS__DEFAULT_SITE": "T2_US_MIT"})
    with pytest.raises(config.ConfigError, match="rucio.url"):
        config.load(None, environ={"T0DQM_RUCIO__URL": "ftp://x"})


# ------------------------------------------------------------------------------------------------ plan


def _deviation(load: dict[str, int], target: dict[str, float]) -> float:
    return sum(abs(load[s] - target[s]) for s in target)


def test_balanced_assignment_is_left_alone() -> None:
    subs = policy.Subscriptions(sites={"A": "T1_IT_CNAF", "B": "T1_DE_KIT"})
    result = policy.plan(
        subs, {"A": 100 * TB, "B": 100 * TB}, {"T1_IT_CNAF": 500 * TB, "T1_DE_KIT": 500 * TB}
    )
    assert result.moves == []
    assert result.assignment == {"A": "T1_IT_CNAF", "B": "T1_DE_KIT"}
    assert [r.after for r in result.sites] == [100 * TB, 100 * TB]


def test_moves_towards_free_space_with_reasons() -> None:
    subs = policy.Subscriptions(
        sites={"A": "T1_IT_CNAF", "B": "T1_IT_CNAF", "C": "T1_IT_CNAF", "D": "T1_DE_KIT"}
    )
    vols = {"A": 300 * TB, "B": 200 * TB, "C": 100 * TB, "D": 100 * TB}
    free = {"T1_IT_CNAF": 100 * TB, "T1_DE_KIT": 300 * TB}  # KIT has 3x CNAF's free tape
    result = policy.plan(subs, vols, free)
    assert result.moves, "CNAF holds most of the volume with a quarter of the free tape"
    for m in result.moves:
        assert m.src == "T1_IT_CNAF" and m.dst == "T1_DE_KIT"
        assert "T1_IT_CNAF holds" in m.reason and "cuts the imbalance" in m.reason
    after = {r.site: r.after for r in result.sites}
    assert sum(after.values()) == sum(vols.values())
    target = {r.site: r.target for r in result.sites}
    before = {r.site: r.before for r in result.sites}
    assert _deviation(after, target) < _deviation(before, target)
    assert after["T1_DE_KIT"] > after["T1_IT_CNAF"]


def test_pd_on_a_site_without_free_tape_is_moved_and_new_pds_are_counted() -> None:
    subs = policy.Subscriptions(sites={"A": "T1_FR_CCIN2P3", "B": "T1_IT_CNAF"}, default_site="T1_US_FNAL")
    vols = {"A": 10 * TB, "B": 10 * TB, "NewPD": 10 * TB}
    free = {"T1_IT_CNAF": 100 * TB, "T1_US_FNAL": 100 * TB}
    result = policy.plan(subs, vols, free, min_gain_fraction=0.5)  # only forced moves pass this threshold
    forced = [m for m in result.moves if m.pd == "A"]
    assert len(forced) == 1 and forced[0].src == "T1_FR_CCIN2P3" and "no free tape listed" in forced[0].reason
    assert any("NewPD is not in subscriptions.sites" in n for n in result.notes)
    assert result.assignment["NewPD"] == "T1_US_FNAL"


def test_configured_pd_without_volume_keeps_its_site() -> None:
    subs = policy.Subscriptions(sites={"Quiet": "T1_ES_PIC", "A": "T1_IT_CNAF"})
    result = policy.plan(subs, {"A": 5 * TB}, {"T1_IT_CNAF": 1 * TB, "T1_DE_KIT": 1 * TB})
    assert result.assignment["Quiet"] == "T1_ES_PIC"
    assert all(m.pd != "Quiet" for m in result.moves)
    assert "[subscriptions.sites]" in policy.assignment_toml(result.assignment)
    assert 'Quiet = "T1_ES_PIC"' in policy.assignment_toml(result.assignment)


def test_over_capacity_is_noted() -> None:
    subs = policy.Subscriptions(sites={"A": "T1_IT_CNAF"})
    result = policy.plan(subs, {"A": 50 * TB}, {"T1_IT_CNAF": 10 * TB})
    assert result.moves == []
    assert any("exceeds its free tape" in n for n in result.notes)
    assert result.sites[0].as_dict()["fits"] is False


def test_max_moves_and_bad_inputs() -> None:
    subs = policy.Subscriptions(sites=dict.fromkeys("ABCDEF", "T1_IT_CNAF"))
    vols = dict.fromkeys("ABCDEF", 10 * TB)
    free = {"T1_IT_CNAF": 10 * TB, "T1_DE_KIT": 10 * TB, "T1_ES_PIC": 10 * TB}
    assert len(policy.plan(subs, vols, free, max_moves=1).moves) == 1
    assert len(policy.plan(subs, vols, free).moves) == 4  # two PDs per site
    with pytest.raises(policy.SubscriptionError, match="no site has free tape"):
        policy.plan(subs, vols, {"T1_IT_CNAF": 0})
    with pytest.raises(policy.SubscriptionError, match="Tier-0/Tier-1"):
        policy.plan(subs, vols, {"T2_CH_CERN": 10})
    with pytest.raises(policy.SubscriptionError, match="volume of A"):
        policy.plan(subs, {"A": -1}, free)


def test_plan_properties_on_random_inputs() -> None:
    """Conservation, determinism, and that every move strictly improves the balance."""
    rng = random.Random(13)
    sites = ["T1_IT_CNAF", "T1_DE_KIT", "T1_ES_PIC", "T1_FR_CCIN2P3", "T1_UK_RAL", "T1_US_FNAL"]
    for _case in range(60):
        pds = [f"PD{i}" for i in range(rng.randint(1, 25))]
        subs = policy.Subscriptions(sites={p: rng.choice(sites) for p in pds if rng.random() < 0.8})
        vols = {p: rng.randint(0, 500) * TB for p in pds}
        free = {s: rng.randint(0, 2000) * TB for s in rng.sample(sites, rng.randint(1, len(sites)))}
        if not any(free.values()):
            free[sites[0]] = TB
        result = policy.plan(subs, vols, free)
        again = policy.plan(subs, vols, free)
        assert result.as_dict() == again.as_dict()
        usable = {s for s, v in free.items() if v > 0}
        assert sum(r.after for r in result.sites) == sum(
            v for p, v in vols.items() if result.assignment[p] in usable
        )
        target = {r.site: r.target for r in result.sites}
        load = {r.site: r.before for r in result.sites}
        assign = {p: policy.site_for(subs, p, "RAW").site for p in set(vols) | set(subs.sites)}
        for m in result.moves:
            assert assign[m.pd] == m.src and m.dst in usable and m.src != m.dst
            forced = m.src not in usable
            previous = _deviation(load, target)
            if m.src in load:
                load[m.src] -= m.volume
            load[m.dst] += m.volume
            assign[m.pd] = m.dst
            if not forced:
                assert _deviation(load, target) < previous
        assert assign == result.assignment
        for pd, site in result.assignment.items():
            assert site in usable or vols.get(pd, 0) == 0, (
                "every PD with volume ends on a site with free tape"
            )
