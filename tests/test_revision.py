"""Revision tracking: :func:`pantau.detectors.revision.revise` and the revision side of :class:`TpsInspector`.

Sirekap overwrites documents in place, so revisions are found by diffing successive submissions of one
TPS and ballot type. A half filling in is progress, not a revision; a changed number is
``revision.changed`` (severity by vote swing), a number returning to an earlier value is
``revision.flipflop``, and a change that makes earlier findings pass is ``revision.resolved``.

The state is ``{"c": pack(counts), "h": {short path: earlier values}, "v": version}``: earlier findings are
not stored but recomputed from the previous counts (``recheck``), which gives the ids published then.
"""

from __future__ import annotations

import copy
import csv
import gzip
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pantau.detectors.findings import find
from pantau.detectors.inspector import TpsInspector
from pantau.detectors.revision import (
    HISTORY, HISTORY_FIELDS, SWING_CRITICAL, SWING_WARNING, CompactStates, pack, revise, state_key, unpack,
)
from pantau.schemas import ADMIN_FIELDS, Alert, normalize, parse_envelope
from tests.conftest import CONSISTENT_DOC, MISREAD_DOC, shared_file, tally_of

KODE = "3173011005116"
MISREAD_KODE = "3173011002090"
#: A small consistent form with suara_sah = 200, so that moving k votes between candidates swings 2k/200.
SMALL_DOC = {"chart": {"null": None, "100025": 100, "100026": 60, "100027": 40}, "administrasi": {"suara_sah": 200}}


def edited(doc: dict, chart: dict[str, Any] | None = None, **admin: Any) -> dict:
    """A copy of ``doc`` with some chart and administrasi values replaced."""
    new = copy.deepcopy(doc)
    if chart:
        new["chart"].update(chart)
    if admin:
        new["administrasi"].update(admin)
    return new


def revisions(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.detector.startswith("revision.")]


def only(alerts: list[Alert], detector: str) -> Alert:
    found = [a for a in alerts if a.detector == detector]
    assert len(found) == 1, [a.detector for a in alerts]
    return found[0]


def feed(inspector: TpsInspector, *docs: dict, kode: str = KODE, jenis: str = "ppwp") -> list[list[Alert]]:
    return [inspector(tally_of(kode, jenis, **doc)) for doc in docs]


def state_bytes(inspector: TpsInspector, kode: str = KODE, jenis: str = "ppwp") -> int:
    """What the table stores for the TPS (its form layout is shared with every TPS of the same layout)."""
    return len(orjson.dumps(inspector.states.store[f"{kode}:{jenis}"]))


def recording(calls: list) -> Any:
    """A ``recheck`` for :func:`revise` that records the counts it is asked about."""

    def recheck(tally):
        calls.append(tally.counts)
        return find(tally)

    return recheck


def test_pack_shortens_the_paths_and_unpack_restores_them():
    counts = {"administrasi.suara_sah": 200, "chart.100025": 100, "chart.1.jml_suara_total": 60,
              "chart.1.jml_suara_partai": 20, "caleg.1.1001": 30, "caleg.12.1201": 0}  # fmt: skip
    packed = pack(counts)
    assert packed == {"a.suara_sah": 200, "c.100025": 100, "c.1.jml_suara_total": 60, "c.1.jml_suara_partai": 20,
                      "k.1.1001": 30, "k.12.1201": 0}  # fmt: skip
    assert unpack(packed) == counts
    assert list(unpack(packed)) == list(counts)  # document order is kept


# --------------------------------------------------------------------------------------------------
# No revision


def test_first_submission_yields_no_revision_and_starts_the_state():
    tally = tally_of(**CONSISTENT_DOC)
    calls: list = []
    alerts, state = revise(None, tally, find(tally), recording(calls))
    assert alerts == [] and calls == []  # nothing to compare with: no recheck
    assert state == {"c": pack(tally.counts), "h": {}, "v": 1}  # counts only: no findings, no suggestions
    assert unpack(state["c"]) == tally.counts and state["c"] is not tally.counts
    assert {path.split(".")[0] for path in state["c"]} == {"a", "c"}
    inspector = TpsInspector()
    assert revisions(inspector(tally)) == []
    assert inspector.states[state_key(tally)] == state


def test_first_submission_of_a_failing_form_yields_no_revision():
    (alerts,) = feed(TpsInspector(), MISREAD_DOC, kode=MISREAD_KODE)
    assert "form.sum_valid" in {a.detector for a in alerts}
    assert revisions(alerts) == []


FILLING_IN = [
    pytest.param([{"chart": None, "images": [None, None, None]},
                  {"chart": None, "images": ["https://x/a.jpg", None, None]},
                  {"chart": None, "administrasi": CONSISTENT_DOC["administrasi"]},
                  CONSISTENT_DOC], id="nothing-images-admin-both"),  # fmt: skip
    pytest.param([{"chart": None}, {"chart": CONSISTENT_DOC["chart"]}, CONSISTENT_DOC], id="chart-null-then-present"),
    pytest.param([{"chart": {"null": None, "100025": 53, "100026": None, "100027": None}},
                  {"chart": {"null": None, "100025": 53, "100026": 118, "100027": None}},
                  CONSISTENT_DOC], id="chart-values-fill-one-by-one"),  # fmt: skip
    pytest.param([edited(CONSISTENT_DOC, suara_sah=None, suara_total=None), CONSISTENT_DOC], id="admin-nulls-fill-in"),
]


@pytest.mark.parametrize("docs", FILLING_IN)
def test_a_half_filling_in_is_not_a_revision(docs):
    inspector = TpsInspector()
    for alerts in feed(inspector, *docs):
        assert revisions(alerts) == []
    state = inspector.states[f"{KODE}:ppwp"]
    assert state["v"] == 1 and state["h"] == {}
    assert unpack(state["c"]) == tally_of(**docs[-1]).counts
    # the filled-in numbers are now the baseline: changing one of them is a revision
    (alerts,) = feed(inspector, edited(docs[-1], {"100025": 54}))
    assert [a.detector for a in revisions(alerts)] == ["revision.changed"]


def test_identical_resubmission_yields_no_revision():
    inspector = TpsInspector()
    first, second = feed(inspector, CONSISTENT_DOC, CONSISTENT_DOC)
    assert first == [] and second == []
    # metadata is not a count: a new publication batch, new photos, psu and mode do not make a revision
    republished = CONSISTENT_DOC | {"ts": "2024-02-16 17:00:00", "mode": "hhcw", "psu": "PSU",
                                    "images": ["https://x/1.jpg", "https://x/2.jpg", "https://x/3.jpg"]}  # fmt: skip
    (third,) = feed(inspector, republished)
    assert revisions(third) == []
    assert inspector.states[f"{KODE}:ppwp"]["v"] == 1


def test_identical_resubmission_of_a_failing_form_repeats_its_findings_with_the_same_ids():
    inspector = TpsInspector()
    first, second = feed(inspector, MISREAD_DOC, MISREAD_DOC, kode=MISREAD_KODE)
    assert revisions(second) == []
    assert [a.to_json() for a in second] == [a.to_json() for a in first]


# --------------------------------------------------------------------------------------------------
# revision.changed


def test_a_changed_count_is_a_revision_with_the_changes_as_evidence():
    inspector = TpsInspector()
    _, alerts = feed(inspector, SMALL_DOC, edited(SMALL_DOC, {"100025": 95, "100026": 65}))
    alert = only(alerts, "revision.changed")
    assert alert.evidence["changes"] == {"chart.100025": [100, 95], "chart.100026": [60, 65]}
    assert alert.evidence["version"] == 2
    assert alert.evidence["swing"] == pytest.approx(10 / 200)
    assert alert.score == pytest.approx(10 / 200)
    assert (alert.kode_tps, alert.jenis, alert.level, alert.region) == (KODE, "ppwp", "tps", KODE)
    assert "chart.100025: 100 → 95" in alert.reason_en and "chart.100025: 100 → 95" in alert.reason
    # the consistent form stays consistent: no other finding
    assert [a.detector for a in alerts] == ["revision.changed"]


def test_version_counts_real_changes_only():
    inspector = TpsInspector()
    docs = [SMALL_DOC, edited(SMALL_DOC, {"100025": 99, "100026": 61}), edited(SMALL_DOC, {"100025": 99, "100026": 61}),
            edited(SMALL_DOC, {"100025": 98, "100026": 62})]  # fmt: skip
    versions = [only(a, "revision.changed").evidence["version"] for a in feed(inspector, *docs) if revisions(a)]
    assert versions == [2, 3]
    assert inspector.states[f"{KODE}:ppwp"]["v"] == 3


@pytest.mark.parametrize(
    "moved, severity",
    [(1, "info"), (4, "info"), (5, "warning"), (6, "warning"), (24, "warning"), (25, "critical"), (60, "critical")],
)
def test_severity_follows_the_vote_swing(moved, severity):
    """Moving k votes between candidates on suara_sah = 200 swings 2k/200: info < 5% ≤ warning < 25% ≤ critical."""
    assert (SWING_WARNING, SWING_CRITICAL) == (0.05, 0.25)
    inspector = TpsInspector()
    revised = edited(SMALL_DOC, {"100025": 100 - moved, "100026": 60 + moved})
    _, alerts = feed(inspector, SMALL_DOC, revised)
    alert = only(alerts, "revision.changed")
    assert alert.evidence["swing"] == pytest.approx(2 * moved / 200)
    assert alert.severity == severity


def test_swing_base_is_the_chart_sum_without_administrasi():
    inspector = TpsInspector()
    chart_only = {"chart": {"null": None, "100025": 60, "100026": 30, "100027": 10}}
    _, alerts = feed(inspector, chart_only, {"chart": {"null": None, "100025": 50, "100026": 40, "100027": 10}})
    alert = only(alerts, "revision.changed")
    assert alert.evidence["swing"] == pytest.approx(20 / 100)
    assert alert.severity == "warning"


def test_a_count_that_disappears_is_a_change_to_null():
    inspector = TpsInspector()
    _, alerts = feed(inspector, CONSISTENT_DOC, CONSISTENT_DOC | {"chart": None})
    alert = only(alerts, "revision.changed")
    assert alert.evidence["changes"] == {"chart.100025": [53, None], "chart.100026": [118, None],
                                         "chart.100027": [36, None]}  # fmt: skip
    assert alert.severity == "critical"  # every vote of the TPS vanished


# --------------------------------------------------------------------------------------------------
# revision.flipflop


def test_a_value_returning_to_an_earlier_value_is_a_flipflop():
    inspector = TpsInspector()
    a, b = edited(SMALL_DOC, {"100025": 100, "100026": 60}), edited(SMALL_DOC, {"100025": 95, "100026": 65})
    first, second, third = feed(inspector, a, b, a)
    assert revisions(first) == []
    assert [x.detector for x in revisions(second)] == ["revision.changed"]
    flip = only(third, "revision.flipflop")
    assert flip.evidence["returned"] == {"chart.100025": [100, 95, 100], "chart.100026": [60, 65, 60]}
    assert flip.evidence["version"] == 3
    assert flip.severity == "warning" and flip.score == 2
    # the change itself is still reported alongside
    assert only(third, "revision.changed").evidence["changes"] == {"chart.100025": [95, 100], "chart.100026": [65, 60]}


def test_flipflop_to_any_earlier_value_and_not_before():
    inspector = TpsInspector()
    values = [100, 101, 102, 101]  # A → B → C → B
    results = feed(inspector, *(edited(SMALL_DOC, {"100025": v}) for v in values))
    assert [a.detector for a in results[2]] != [] and not any(a.detector == "revision.flipflop" for a in results[2])
    assert only(results[3], "revision.flipflop").evidence["returned"] == {"chart.100025": [100, 101, 102, 101]}


def test_flipflop_history_is_bounded():
    inspector = TpsInspector()
    values = [100 + i for i in range(HISTORY + 3)]
    feed(inspector, *(edited(SMALL_DOC, {"100025": v}) for v in values))
    history = inspector.states[f"{KODE}:ppwp"]["h"]["c.100025"]
    assert len(history) == HISTORY
    assert history == values[-HISTORY - 1 : -1]
    # a value older than the kept history is no longer recognised; a recent one is
    (old,) = feed(inspector, edited(SMALL_DOC, {"100025": values[0]}))
    assert not any(a.detector == "revision.flipflop" for a in old)
    (recent,) = feed(inspector, edited(SMALL_DOC, {"100025": values[-2]}))
    assert any(a.detector == "revision.flipflop" for a in recent)


# --------------------------------------------------------------------------------------------------
# revision.resolved


def test_a_correction_resolves_exactly_the_earlier_alerts_and_notes_the_accepted_suggestion():
    inspector = TpsInspector()
    first, second = feed(inspector, MISREAD_DOC, edited(MISREAD_DOC, {"100027": 10}), kode=MISREAD_KODE)
    assert {a.detector for a in first} == {"form.sum_valid", "form.capacity", "ocr.misread"}
    suggestion = only(first, "ocr.misread").suggestions[0]
    assert (suggestion.field, suggestion.proposed) == ("chart.100027", 10)

    assert [a.detector for a in second] == ["revision.resolved"]  # the form is consistent now
    resolved = second[0]
    assert resolved.resolves == sorted(a.alert_id for a in first)
    assert resolved.evidence["resolved"] == sorted(a.detector for a in first)
    assert resolved.evidence["changes"] == {"chart.100027": [551, 10]}
    assert resolved.evidence["accepted_suggestions"] == {"chart.100027": 10}
    assert resolved.severity == "info"
    assert "as pantau suggested" in resolved.reason_en and "sesuai saran pantau" in resolved.reason


def test_a_correction_to_another_value_than_suggested_says_so():
    kode = "3173011002090"
    doc = {"chart": {"null": None, "100025": 105, "100026": 48, "100027": 880},
           "administrasi": {"suara_sah": 233, "suara_tidak_sah": 4, "suara_total": 237}}  # fmt: skip
    fixed = edited(doc, {"100027": 81}, suara_sah=234, suara_total=238)  # 81, not the suggested 80
    first, second = feed(TpsInspector(), doc, fixed, kode=kode)
    assert only(first, "ocr.misread").suggestions[0].proposed == 80
    resolved = only(second, "revision.resolved")
    assert resolved.resolves == sorted(a.alert_id for a in first)
    assert resolved.evidence["accepted_suggestions"] == {}
    assert "as pantau suggested" not in resolved.reason_en


def test_a_partial_correction_resolves_only_what_now_passes():
    broken = edited(CONSISTENT_DOC, {"100027": 836}, pemilih_dpt_l=139)  # crossed box on 03, and a gender typo
    first, second = feed(TpsInspector(), broken, edited(broken, {"100027": 36}))
    ids = {a.detector: a.alert_id for a in first}
    assert {"form.sum_valid", "form.capacity", "form.gender_split"} <= set(ids)
    resolved = only(second, "revision.resolved")
    still = {a.detector for a in second}
    assert "form.gender_split" in still
    assert resolved.resolves == sorted(i for d, i in ids.items() if d not in still)
    assert ids["form.gender_split"] not in resolved.resolves
    assert ids["form.sum_valid"] in resolved.resolves and ids["form.capacity"] in resolved.resolves


def test_revise_recomputes_the_earlier_findings_from_the_previous_counts():
    """The state keeps no findings; ``recheck`` on the previous counts gives back the ids published then."""
    first = tally_of(MISREAD_KODE, **MISREAD_DOC)
    published = find(first)
    _, previous = revise(None, first, published, find)
    assert set(previous) == {"c", "h", "v"}

    fixed = tally_of(MISREAD_KODE, **edited(MISREAD_DOC, {"100027": 10}))
    calls: list = []
    alerts, state = revise(previous, fixed, find(fixed), recording(calls))
    assert calls == [first.counts]  # judged again on the previous numbers
    assert [a.detector for a in alerts] == ["revision.resolved"]
    assert alerts[0].resolves == sorted(a.alert_id for a in published.alerts)
    assert alerts[0].evidence["accepted_suggestions"] == {"chart.100027": 10}
    assert state == {"c": pack(fixed.counts), "h": {"c.100027": [551]}, "v": 2}

    calls.clear()  # nothing changed: no recheck, no alert, same state
    assert revise(state, fixed, find(fixed), recording(calls)) == ([], state)
    assert calls == []


def test_revise_supersedes_a_finding_that_still_fails_after_a_partial_fix():
    """Two gender-split typos, one fixed: the finding still fails (new numbers), so it is superseded, not resolved."""
    two_typos = edited(CONSISTENT_DOC, pemilih_dpt_l=139, pengguna_total_l=103)
    one_fixed = tally_of(**edited(two_typos, pemilih_dpt_l=138))
    before = find(tally_of(**two_typos))
    now = find(one_fixed)
    assert {"form.gender_split", "form.voters_total"} <= before.open.keys() & now.open.keys()
    assert before.open["form.gender_split"] != now.open["form.gender_split"]  # one failing identity fewer
    assert before.open["form.voters_total"] == now.open["form.voters_total"]  # untouched
    _, previous = revise(None, tally_of(**two_typos), before, find)
    alerts, _ = revise(previous, one_fixed, now, find)
    assert not any(a.detector == "revision.resolved" for a in alerts)
    changed = only(alerts, "revision.changed")
    superseded = [before.open["form.gender_split"]]
    assert changed.resolves == superseded and changed.evidence["superseded"] == superseded
    assert changed.evidence["changes"] == {"administrasi.pemilih_dpt_l": [139, 138]}
    assert changed.evidence["swing"] == 0 and changed.severity == "info"  # no vote moved


def test_withdrawn_numbers_do_not_resolve_findings():
    """A half going back to null makes its identities *unjudged*, not passing: that is no correction."""
    first, second = feed(TpsInspector(), MISREAD_DOC, MISREAD_DOC | {"chart": None}, kode=MISREAD_KODE)
    assert {"form.sum_valid", "ocr.misread"} <= {a.detector for a in first}
    assert not any(a.detector == "revision.resolved" for a in second)
    changed = only(second, "revision.changed")
    assert changed.severity == "critical"
    assert changed.evidence["changes"] == {"chart.100025": [105, None], "chart.100026": [48, None],
                                           "chart.100027": [551, None]}  # fmt: skip
    # the unjudged findings stay open: nothing closes them
    assert changed.resolves == [] and changed.evidence["superseded"] == []


def test_withdrawing_the_mended_numbers_of_a_partial_correction_resolves_nothing():
    """Only the chart is withdrawn; the administrasi finding was not judged again, so it is not resolved either."""
    broken = edited(MISREAD_DOC, pemilih_dpt_l=107)  # sum_valid and a gender-split typo
    first, second = feed(TpsInspector(), broken, broken | {"chart": None}, kode=MISREAD_KODE)
    assert "form.gender_split" in {a.detector for a in second}  # still judged, still failing, same numbers
    ids = {a.detector: a.alert_id for a in first}
    assert ids["form.gender_split"] == only(second, "form.gender_split").alert_id
    assert not any(a.detector == "revision.resolved" for a in second)


def test_a_correction_and_an_unrelated_vote_move_give_both_resolved_and_changed():
    """Fixing a typo must not hide 50 votes moved 01 → 02 in the same revision."""
    typo = edited(CONSISTENT_DOC, pemilih_dpt_l=139)  # gender split fails by one voter
    moved = edited(CONSISTENT_DOC, {"100025": 3, "100026": 168})  # typo fixed, and 50 votes moved 01 → 02
    first, second = feed(TpsInspector(), typo, moved)
    # without the typo the same revision is revision.changed, critical (swing 100/207)
    _, plain = feed(TpsInspector(), CONSISTENT_DOC, moved)
    plain_changed = only(plain, "revision.changed")
    assert plain_changed.severity == "critical"

    assert "form.gender_split" in {a.detector for a in first}
    assert [a.detector for a in second] == ["revision.resolved", "revision.changed"]
    resolved = only(second, "revision.resolved")
    assert resolved.resolves == sorted(a.alert_id for a in first)
    assert resolved.evidence["changes"] == {"administrasi.pemilih_dpt_l": [139, 138]}  # the mending change only
    assert resolved.severity == "info"
    changed = only(second, "revision.changed")
    assert changed.evidence["changes"] == plain_changed.evidence["changes"] == {"chart.100025": [53, 3],
                                                                                "chart.100026": [118, 168]}  # fmt: skip
    assert changed.evidence["swing"] == pytest.approx(100 / 207, abs=5e-5) == plain_changed.evidence["swing"]
    assert changed.severity == "critical"
    assert changed.resolves == []  # nothing superseded: the typo's findings are resolved, not replaced
    assert resolved.alert_id != changed.alert_id


def test_a_correction_does_not_hide_votes_moved_between_other_candidates():
    """Correcting the misread 551 → 10 *and* moving 50 votes 01 → 02 gives one info revision.resolved only.

    Every chart field belongs to form.sum_valid, so the moves of 01 and 02 count as "mending" changes; yet
    on a consistent form the same 50-vote move is critical (swing 100/163).
    """
    corrected = edited(MISREAD_DOC, {"100027": 10})
    corrected_and_moved = edited(MISREAD_DOC, {"100025": 55, "100026": 98, "100027": 10})
    _, plain = feed(TpsInspector(), corrected, corrected_and_moved, kode=MISREAD_KODE)
    assert only(plain, "revision.changed").severity == "critical"
    _, alerts = feed(TpsInspector(), MISREAD_DOC, corrected_and_moved, kode=MISREAD_KODE)
    assert "revision.resolved" in {a.detector for a in alerts}
    assert max((a.severity for a in revisions(alerts)), key=["info", "warning", "critical"].index) == "critical"


def test_a_pure_correction_closes_the_findings_it_supersedes():
    """551 → 10 mends sum_valid, and changes form.capacity (2100 is still over): its old id must be closed."""
    doc = edited(MISREAD_DOC, pemilih_dpt_j=2100)  # over capacity too, beside the misread 551
    first, second = feed(TpsInspector(), doc, edited(doc, {"100027": 10}), kode=MISREAD_KODE)
    old = {a.detector: a.alert_id for a in first}
    new = {a.detector: a.alert_id for a in second}
    assert new["form.capacity"] != old["form.capacity"]  # still failing, different numbers
    closed = {i for a in revisions(second) for i in a.resolves}
    assert old["form.sum_valid"] in closed
    assert old["form.capacity"] in closed


def test_a_change_that_keeps_findings_failing_supersedes_their_old_alerts():
    broken = edited(CONSISTENT_DOC, {"100027": 836}, pemilih_dpt_l=139)  # crossed box on 03, and a gender typo
    first, second = feed(TpsInspector(), broken, edited(broken, {"100027": 837}))
    old = {a.detector: a.alert_id for a in first}
    new = {a.detector: a.alert_id for a in second}
    assert {"form.sum_valid", "form.capacity", "form.gender_split"} <= old.keys() & new.keys()
    assert new["form.sum_valid"] != old["form.sum_valid"] and new["form.capacity"] != old["form.capacity"]
    assert new["form.gender_split"] == old["form.gender_split"]  # untouched: same alert, still open

    assert not any(a.detector == "revision.resolved" for a in second)
    changed = only(second, "revision.changed")
    superseded = sorted(old[d] for d in old if d in new and new[d] != old[d])
    assert {old["form.sum_valid"], old["form.capacity"]} <= set(superseded)
    assert old["form.gender_split"] not in superseded
    assert changed.resolves == superseded and changed.evidence["superseded"] == superseded
    assert changed.evidence["changes"] == {"chart.100027": [836, 837]}
    assert changed.evidence["swing"] == pytest.approx(1 / 207, abs=5e-5)  # rounded to 4 digits


# --------------------------------------------------------------------------------------------------
# inspect / commit, determinism, state


def test_inspect_does_not_write_state_until_commit():
    inspector = TpsInspector()
    t1, t2 = tally_of(**SMALL_DOC), tally_of(**edited(SMALL_DOC, {"100025": 70, "100026": 90}))
    first = inspector.inspect(t1)
    assert inspector.states == {}
    assert revisions(inspector.inspect(t1).alerts) == []  # still a first submission
    inspector.commit(first)
    stored = copy.deepcopy(inspector.states[first.key])

    a, b = inspector.inspect(t2), inspector.inspect(t2)
    assert [x.detector for x in a.alerts] == ["revision.changed"]
    assert [x.to_json() for x in a.alerts] == [x.to_json() for x in b.alerts]
    assert a.state == b.state
    assert inspector.states[first.key] == stored  # neither inspection wrote nor mutated the stored state

    inspector.commit(a)
    assert inspector.states[first.key] == a.state
    assert revisions(inspector.inspect(t2).alerts) == []  # after commit t2 is the baseline


def test_revise_is_pure():
    docs = [MISREAD_DOC, edited(MISREAD_DOC, {"100027": 10}), edited(MISREAD_DOC, {"100027": 12})]
    t0, t1, t2 = (tally_of(MISREAD_KODE, **doc) for doc in docs)
    previous = revise(revise(None, t0, find(t0), find)[1], t1, find(t1), find)[1]
    assert previous["h"] == {"c.100027": [551]}
    kept = copy.deepcopy(previous)
    one = revise(previous, t2, find(t2), find)
    two = revise(previous, t2, find(t2), find)
    assert previous == kept
    assert [a.to_json() for a in one[0]] == [a.to_json() for a in two[0]] and one[1] == two[1]
    assert {a.detector for a in one[0]} == {"revision.changed"} and one[1]["h"] == {"c.100027": [551, 10]}
    one[1]["h"]["c.100027"].append(99)  # the new state shares no list with the previous one
    assert previous == kept


SEQUENCE = [
    (MISREAD_KODE, "ppwp", MISREAD_DOC),
    (KODE, "ppwp", SMALL_DOC),
    (MISREAD_KODE, "ppwp", edited(MISREAD_DOC, {"100027": 10})),
    (KODE, "ppwp", edited(SMALL_DOC, {"100025": 90, "100026": 70})),
    (MISREAD_KODE, "ppwp", MISREAD_DOC),
    (KODE, "ppwp", SMALL_DOC),
    (KODE, "pdpd", {"chart": {"null": None, "3101": 7}}),
    (KODE, "pdpd", {"chart": {"null": None, "3101": 8}}),
]


def _run(inspector: TpsInspector, through_json: bool = False) -> list[bytes]:
    out = []
    for kode, jenis, doc in SEQUENCE:
        out += [a.to_json() for a in inspector(tally_of(kode, jenis, **doc))]
        if through_json:  # the stream keeps states in a changelog-backed table: JSON in, JSON out
            inspector.states = {k: orjson.loads(orjson.dumps(v)) for k, v in inspector.states.items()}
    return out


def test_alert_ids_are_deterministic_across_fresh_inspectors():
    first, second = _run(TpsInspector()), _run(TpsInspector())
    assert first == second
    detectors = {orjson.loads(a)["detector"] for a in first}
    assert {"revision.changed", "revision.resolved", "revision.flipflop"} <= detectors


def test_state_survives_a_json_round_trip_unchanged():
    assert _run(TpsInspector(), through_json=True) == _run(TpsInspector())


def test_distinct_revision_events_get_distinct_ids():
    alerts = [orjson.loads(a) for a in _run(TpsInspector())]
    revision_ids = [a["alert_id"] for a in alerts if a["detector"].startswith("revision.")]
    assert len(revision_ids) >= 5
    assert len(set(revision_ids)) == len(revision_ids)


def test_ballot_types_of_one_tps_have_separate_state():
    inspector = TpsInspector()
    pdpd = {"chart": {"null": None, "3101": 120, "3102": 80}, "administrasi": {"suara_sah": 200}}
    pdpr = {"chart": {"null": None, "1": {"jml_suara_total": 200, "jml_suara_partai": 200}},
            "administrasi": {"suara_sah": 200}}  # fmt: skip
    assert feed(inspector, SMALL_DOC) == [[]]
    assert feed(inspector, pdpd, jenis="pdpd") == [[]]  # not a revision of the ppwp document
    assert feed(inspector, pdpr, jenis="pdpr") == [[]]
    assert set(inspector.states) == {f"{KODE}:ppwp", f"{KODE}:pdpd", f"{KODE}:pdpr"}
    (alerts,) = feed(inspector, edited(SMALL_DOC, {"100025": 90, "100026": 70}))
    assert only(alerts, "revision.changed").evidence["changes"] == {"chart.100025": [100, 90], "chart.100026": [60, 70]}
    assert feed(inspector, pdpd, jenis="pdpd") == [[]]
    # and another TPS starts fresh too
    (other,) = feed(inspector, edited(SMALL_DOC, {"100025": 90, "100026": 70}), kode="3173011005117")
    assert revisions(other) == [] and other == []


def test_party_ballot_revision_names_party_and_caleg_paths():
    doc = {"chart": {"null": None, "1": {"jml_suara_total": 30, "jml_suara_partai": 10}},
           "caleg": {"1": {"1001": 15, "1002": 5}}, "administrasi": {"suara_sah": 30}}  # fmt: skip
    revised = copy.deepcopy(doc)
    revised["caleg"]["1"] = {"1001": 12, "1002": 8}
    inspector = TpsInspector()
    first, alerts = feed(inspector, doc, revised, jenis="pdpr")
    assert first == []  # a consistent party ballot: 30 = 10 + 15 + 5
    changed = only(alerts, "revision.changed")
    assert changed.evidence["changes"] == {"caleg.1.1001": [15, 12], "caleg.1.1002": [5, 8]}
    # votes moved between candidates of one party do not move the party's total: no swing
    assert changed.evidence["swing"] == 0 and changed.severity == "info"
    state = inspector.states[f"{KODE}:pdpr"]
    assert state["c"] == {"c.1.jml_suara_total": 30, "c.1.jml_suara_partai": 10, "k.1.1001": 12, "k.1.1002": 8,
                          "a.suara_sah": 30}  # fmt: skip
    assert state["h"] == {"k.1.1001": [15], "k.1.1002": [5]}


#: Two parties, each total = party votes + its candidates' votes; suara_sah = 100.
PARTY_DOC = {"chart": {"null": None, "1": {"jml_suara_total": 60, "jml_suara_partai": 20},
                       "2": {"jml_suara_total": 40, "jml_suara_partai": 10}},
             "caleg": {"1": {"1001": 30, "1002": 10}, "2": {"2001": 30}}, "administrasi": {"suara_sah": 100}}  # fmt: skip


def _move_ten_votes_from_party_1_to_2(doc: dict) -> dict:
    """10 votes from party 1 to party 2, consistently: 5 party votes and 5 candidate votes each."""
    moved = copy.deepcopy(doc)
    moved["chart"]["1"] = {"jml_suara_total": 50, "jml_suara_partai": 15}
    moved["chart"]["2"] = {"jml_suara_total": 50, "jml_suara_partai": 15}
    moved["caleg"] = {"1": {"1001": 25, "1002": 10}, "2": {"2001": 35}}
    return moved


@pytest.mark.parametrize("with_admin", [True, False], ids=["base-suara_sah", "base-party-totals"])
def test_party_ballot_swing_counts_each_vote_once(with_admin):
    """A moved vote shows in jml_suara_total and again in the party or caleg line: only the totals count.

    The swing is 20/100 (warning). Counting the jml_suara_partai lines too gives 30/100 and the caleg lines
    as well 40/100 (both critical); without suara_sah, a base summing every chart line gives 30/130.
    """
    doc = PARTY_DOC if with_admin else {k: v for k, v in PARTY_DOC.items() if k != "administrasi"}
    first, second = feed(TpsInspector(), doc, _move_ten_votes_from_party_1_to_2(doc), jenis="pdpr")
    assert first == []
    changed = only(second, "revision.changed")
    assert len(changed.evidence["changes"]) == 6  # every changed line is evidence ...
    assert changed.evidence["swing"] == pytest.approx(20 / 100)  # ... but each moved vote counts once
    assert changed.severity == "warning"
    assert [a.detector for a in second] == ["revision.changed"]  # and the moved form is still consistent


MAX_STATE_BYTES = 1024
#: A real document failing seven checks (formerly its findings' ids pushed its first state to 1,091 bytes).
FAILING_EVERY_CHECK = "3173011005056"
COMPLETE = 3 + len(ADMIN_FIELDS)  # counts of a complete ppwp document: three candidates and administrasi


def _first_inspection(raw: dict):
    return TpsInspector().inspect(normalize(parse_envelope(raw)))


def test_first_state_of_every_shipped_document_fits(dki_envelopes):
    states = {raw["kode_tps"]: _first_inspection(raw).state for raw in dki_envelopes}
    too_big = {kode: n for kode, state in states.items() if (n := len(orjson.dumps(state))) > MAX_STATE_BYTES}
    assert not too_big
    # complete documents were measured, not only empty ones
    assert sum(len(state["c"]) == COMPLETE for state in states.values()) > 100


def test_state_of_a_form_failing_every_check_fits(dki_envelopes):
    (raw,) = [raw for raw in dki_envelopes if raw["kode_tps"] == FAILING_EVERY_CHECK]
    inspection = _first_inspection(raw)
    assert len({a.detector for a in inspection.alerts if a.detector.startswith("form.")}) == 7
    assert len(inspection.state["c"]) == COMPLETE
    assert len(orjson.dumps(inspection.state)) <= MAX_STATE_BYTES


def test_state_after_corrections_and_flipflops_fits():
    inspector = TpsInspector()
    docs = [MISREAD_DOC, edited(MISREAD_DOC, {"100027": 10}), MISREAD_DOC, edited(MISREAD_DOC, {"100027": 10}),
            edited(MISREAD_DOC, {"100027": 11}, suara_sah=164, suara_total=168)]  # fmt: skip
    for alerts in feed(inspector, *docs, kode=MISREAD_KODE):
        assert alerts
        assert state_bytes(inspector, kode=MISREAD_KODE) <= MAX_STATE_BYTES


def _reread(k: int) -> dict:
    """CONSISTENT_DOC with every number of both halves read differently (k votes moved 01 → 02, admin + k)."""
    admin = {f: CONSISTENT_DOC["administrasi"][f] + k for f in ADMIN_FIELDS}
    return edited(CONSISTENT_DOC, {"100025": 53 - k, "100026": 118 + k}, **admin)


def test_state_after_one_full_reread_fits():
    inspector = TpsInspector()
    _, alerts = feed(inspector, CONSISTENT_DOC, _reread(1))
    assert len(only(alerts, "revision.changed").evidence["changes"]) == COMPLETE - 1  # 03 unchanged
    # the most recently changed fields keep a history, up to HISTORY_FIELDS of them
    assert len(inspector.states[f"{KODE}:ppwp"]["h"]) == min(COMPLETE - 1, HISTORY_FIELDS)
    assert state_bytes(inspector) <= MAX_STATE_BYTES


def test_state_after_repeated_full_rereads_fits():
    """Histories are bounded per field (HISTORY) and in number (HISTORY_FIELDS): the state stays under 1 KiB."""
    inspector = TpsInspector()
    for k in range(HISTORY + 1):
        feed(inspector, _reread(k))
        assert state_bytes(inspector) <= MAX_STATE_BYTES, k  # 473, 951, 1015, 1080 (k = 3), 1147 bytes


def _number(cell: str) -> int | None:
    return int(cell) if cell != "" else None


def test_real_revisions_replay():
    """Every real DIY/Bali/overseas version history: revision.changed iff a counted number really changed."""
    path = shared_file("sirekap", "tps_revisions_dev.csv.gz")
    with gzip.open(path, "rt", encoding="utf-8", newline="") as lines:
        rows = list(csv.DictReader(lines))
    by_tps: dict[str, list[dict]] = {}
    for row in rows:
        by_tps.setdefault(row["kode_tps"], []).append(row)
    fields = ("paslon_01", "paslon_02", "paslon_03", *ADMIN_FIELDS)
    inspector = TpsInspector()
    transitions = fill_ins = 0
    for kode, versions in by_tps.items():
        versions.sort(key=lambda r: int(r["version"]))
        previous = None
        for row in versions:
            chart = [_number(row[f"paslon_0{i}"]) for i in (1, 2, 3)]
            admin = {f: _number(row[f]) for f in ADMIN_FIELDS}
            doc = {
                "chart": None if chart == [None] * 3 else dict(zip(("100025", "100026", "100027"), chart)) | {"null": None},
                "administrasi": None if all(v is None for v in admin.values()) else admin,
                "ts": row["ts"],
            }  # fmt: skip
            alerts = inspector(tally_of(kode, "ppwp", **doc))
            if previous is not None:
                transitions += 1
                changed = any(previous[f] != "" and previous[f] != row[f] for f in fields)
                fill_ins += any(previous[f] == "" and row[f] != "" for f in fields)
                got = {a.detector for a in revisions(alerts)} & {"revision.changed", "revision.resolved"}
                assert bool(got) == changed, (kode, row["version"])
            assert state_bytes(inspector, kode) <= MAX_STATE_BYTES, kode
            previous = row
    assert transitions > 300 and fill_ins > 50


# --------------------------------------------------------------------------------------------------
# Property: revision alerts exactly when a counted number changed, covering every change

CHARTS = st.lists(
    st.tuples(*(st.none() | st.integers(0, 300) for _ in range(3))), min_size=1, max_size=6
)


@settings(max_examples=150, deadline=None)
@given(CHARTS, st.integers(0, 600))
def test_revision_alert_exactly_when_a_counted_number_changed(charts, sah):
    inspector = TpsInspector()
    previous: dict[str, int] | None = None
    for values in charts:
        doc = {"chart": {"null": None, **dict(zip(("100025", "100026", "100027"), values))},
               "administrasi": {"suara_sah": sah}}  # fmt: skip
        tally = tally_of(**doc)
        alerts = inspector(tally)
        kinds = [a for a in alerts if a.detector in ("revision.changed", "revision.resolved")]
        expected = None
        if previous is not None:
            expected = {f: [old, tally.counts.get(f)] for f, old in previous.items() if tally.counts.get(f) != old}
        if expected:
            # a correction (resolved) and, when votes moved beyond what it needed, a change too (module docstring)
            assert [a.detector for a in kinds] in (["revision.resolved"], ["revision.changed"],
                                                   ["revision.resolved", "revision.changed"])  # fmt: skip
            covered = {f: c for a in kinds for f, c in a.evidence["changes"].items()}
            assert covered == expected
            if len(kinds) == 2:
                assert kinds[1].evidence["swing"] > 0
        else:
            assert kinds == [] and not any(a.detector == "revision.flipflop" for a in alerts)
        previous = tally.counts


# --------------------------------------------------------------------------------------------------
# Compact storage of the states


@given(st.dictionaries(st.from_regex(r"[ack]\.[0-9]{1,3}(\.[0-9]{1,7})?", fullmatch=True), st.integers(0, 10**9),
                       max_size=300),
       st.dictionaries(st.from_regex(r"c\.[0-9]{1,3}", fullmatch=True), st.lists(st.integers(0, 999), max_size=3), max_size=5),
       st.integers(1, 50))  # fmt: skip
def test_compact_states_give_back_exactly_what_was_stored(counts, history, version):
    states = CompactStates({})
    state = {"c": counts, "h": history, "v": version}
    states["3404010001001:pdprdk"] = state
    assert states["3404010001001:pdprdk"] == state
    assert CompactStates(states.store)["3404010001001:pdprdk"] == state  # a new worker, from the store alone


def test_a_dprd_state_is_stored_in_under_a_kib_and_its_layout_once():
    rng = random.Random(5)
    paths = [f"k.{party}.{party * 10_000 + n}" for party in range(1, 19) for n in range(12)]
    paths += [f"c.{party}.jml_suara_total" for party in range(1, 19)] + [f"c.{party}.jml_suara_partai" for party in range(1, 19)]
    paths += [f"a.{name}" for name in ("pemilih_dpt_j", "pemilih_dpt_l", "pemilih_dpt_p", "suara_sah", "suara_total")]
    store: dict = {}
    states = CompactStates(store)
    for tps in range(1, 21):
        states[f"34040100010{tps:02d}:pdprdk"] = {"c": {p: rng.randint(0, 40) for p in paths}, "h": {}, "v": 1}
    assert len(paths) == 257 and sum(k.startswith("layout:") for k in store) == 1
    assert max(len(orjson.dumps(v)) for k, v in store.items() if not k.startswith("layout:")) <= MAX_STATE_BYTES
    assert len(orjson.dumps({"c": states["3404010001001:pdprdk"]["c"]})) > 3 * MAX_STATE_BYTES  # what it was


class PartitionedStore(dict):
    """A changelog-backed table as :class:`CompactStates` sees it: the partition of the next write,
    and which partition each key was written to (what a worker recovers of its partitions)."""

    def __init__(self) -> None:
        super().__init__()
        self.partition = 0
        self.written_to: dict[str, int] = {}

    def __setitem__(self, key: str, value) -> None:
        super().__setitem__(key, value)
        self.written_to[key] = self.partition

    def recovered(self, partitions: set[int]) -> dict:
        return {k: v for k, v in self.items() if self.written_to[k] in partitions}


def test_a_worker_that_recovers_some_partitions_finds_the_layouts_of_their_states():
    store = PartitionedStore()
    states = CompactStates(store)
    layout = {"c": {"c.100025": 105, "c.100026": 80, "a.suara_sah": 185}, "h": {}, "v": 1}
    for partition, tps in ((0, "3171011001001"), (1, "3172011001001"), (1, "3172011001002"), (2, "3173011001001")):
        store.partition = partition
        states[f"{tps}:ppwp"] = layout
    assert sorted(k for k in store if k.startswith("layout:")) == sorted(
        f"layout:{store['3171011001001:ppwp']['l'].split('@')[0]}@{p}" for p in (0, 1, 2))  # one copy per partition
    taken_over = CompactStates(store.recovered({1}))  # another worker, after a rebalance, holding partition 1 only
    assert taken_over["3172011001001:ppwp"] == taken_over["3172011001002:ppwp"] == layout


def test_states_written_before_they_were_compact_are_still_read():
    old = {"c": {"c.100025": 105}, "h": {}, "v": 3}
    assert CompactStates({"3173011002090:ppwp": old})["3173011002090:ppwp"] == old
