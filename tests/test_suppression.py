"""Verdict feedback without a broker: the Suppressions state, the offline replay and ``--verdicts``.

(The stream's verdicts agent is tested on a real broker in tests/test_stream.py.)
"""

from __future__ import annotations

import copy
import doctest
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from pantau.detectors import suppression
from pantau.detectors.suppression import Suppressions
from pantau.replay import ReplaySummary, read_verdicts, replay
from pantau.schemas import Alert, InvalidSubmission, Verdict, parse_verdict, verdict_key
from pantau.sources import read_records

from .conftest import CONSISTENT_DOC, MISREAD_DOC

T0 = datetime(2024, 2, 16, 9, 0, tzinfo=timezone.utc)
ALERT_ID = "afd42a8ed3a17673b246f9bc8b7151bd"


def verdict(decision: str = "false_alarm", at: datetime = T0, verdict_id: str = "v-1", alert_id: str = ALERT_ID,
            **changes: Any) -> Verdict:  # fmt: skip
    data = dict(verdict_id=verdict_id, alert_id=alert_id, detector="form.sum_valid", jenis="ppwp",
                kode_tps="3173011002090", region="3173011002090", decision=decision, note="Foto C.Hasil sesuai",
                decided_by="rina", role="verifier", decided_at=at)  # fmt: skip
    if decision == "corrected":
        data["corrected_values"] = {"chart.100027": 10}
    return Verdict(**(data | changes))


def tps_alert(alert_id: str = ALERT_ID, kode_tps: str | None = "3173011002090") -> Alert:
    return Alert.model_construct(alert_id=alert_id, kode_tps=kode_tps)


def test_doctests():
    result = doctest.testmod(suppression, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_a_false_alarm_suppresses_that_alert_id_only():
    suppressions = Suppressions()
    assert suppressions.allows(tps_alert())
    assert suppressions.learn(verdict())
    assert not suppressions.allows(tps_alert())
    assert suppressions.allows(tps_alert("0" * 32))


@pytest.mark.parametrize("decision", ["confirmed", "field_check", "corrected"])
def test_other_decisions_do_not_suppress(decision):
    suppressions = Suppressions()
    assert suppressions.learn(verdict(decision))
    assert suppressions.allows(tps_alert())


@pytest.mark.parametrize("decision", ["confirmed", "field_check", "corrected"])
def test_a_later_verdict_of_another_decision_lifts_the_suppression(decision):
    suppressions = Suppressions()
    suppressions.learn(verdict())
    assert suppressions.learn(verdict(decision, T0 + timedelta(minutes=5), "v-2"))
    assert suppressions.allows(tps_alert())
    assert suppressions.learn(verdict("false_alarm", T0 + timedelta(minutes=9), "v-3"))
    assert not suppressions.allows(tps_alert())


def test_an_older_verdict_arriving_late_changes_nothing():
    suppressions = Suppressions()
    suppressions.learn(verdict("false_alarm", T0, "v-2"))
    assert not suppressions.learn(verdict("confirmed", T0 - timedelta(seconds=1), "v-1"))
    assert not suppressions.allows(tps_alert())

    lifted = Suppressions()
    lifted.learn(verdict("confirmed", T0, "v-2"))
    assert not lifted.learn(verdict("false_alarm", T0 - timedelta(hours=1), "v-1"))
    assert lifted.allows(tps_alert())


def test_time_zones_are_compared_as_instants_and_ties_go_to_the_larger_verdict_id():
    wib = timezone(timedelta(hours=7))
    suppressions = Suppressions()
    suppressions.learn(verdict("false_alarm", T0, "v-2"))
    # 15:30 WIB is 08:30 UTC: earlier, although its wall clock is later.
    assert not suppressions.learn(verdict("confirmed", datetime(2024, 2, 16, 15, 30, tzinfo=wib), "v-9"))
    assert not suppressions.learn(verdict("confirmed", T0, "v-1"))
    assert not suppressions.learn(verdict("false_alarm", T0, "v-2"))  # the same verdict again
    assert not suppressions.allows(tps_alert())
    assert suppressions.learn(verdict("confirmed", T0.astimezone(wib), "v-3"))
    assert suppressions.allows(tps_alert())


def test_a_verdict_without_utc_offset_is_refused():
    with pytest.raises(ValueError, match="no UTC offset"):
        Suppressions().learn(verdict(at=datetime(2024, 2, 16, 9, 0)))


def test_regional_alerts_are_never_suppressed():
    suppressions = Suppressions()
    suppressions.learn(verdict(kode_tps=None, region="340206"))
    assert suppressions.allows(tps_alert(kode_tps=None))


def test_state_round_trip_through_json():
    """What the stream's table holds (JSON, as its changelog carries it) gives the same decisions."""
    suppressions = Suppressions()
    suppressions.learn(verdict("false_alarm", T0 + timedelta(minutes=1), "v-2"))
    suppressions.learn(verdict("confirmed", T0, "v-1", alert_id="1" * 32))
    restored = Suppressions({k: orjson.loads(orjson.dumps(v)) for k, v in suppressions.states.items()})
    assert not restored.allows(tps_alert()) and restored.allows(tps_alert("1" * 32))
    # the restored state still orders verdicts: an older one is refused, a newer one lifts
    assert not restored.learn(verdict("confirmed", T0, "v-1"))
    assert not restored.allows(tps_alert())
    assert restored.learn(verdict("confirmed", T0 + timedelta(minutes=2), "v-3"))
    assert restored.allows(tps_alert())


def test_verdict_key_is_the_kabkota_code_as_for_submissions():
    assert verdict_key(verdict()) == b"3173"
    assert verdict_key(verdict(kode_tps=None, region="340206")) == b"3402"


@pytest.mark.parametrize(("raw", "code", "words"), [
    (b"{oops", "not_json", "JSON"),
    (b"[1, 2]", "schema", "object"),
    (orjson.dumps({**verdict().model_dump(mode="json"), "decision": "maybe"}), "schema", "decision"),
    (orjson.dumps({**verdict().model_dump(mode="json"), "decided_at": "2024-02-16T09:00:00"}), "schema", "UTC offset"),
])  # fmt: skip
def test_parse_verdict_refuses_with_reasons(raw, code, words):
    with pytest.raises(InvalidSubmission) as refused:
        parse_verdict(raw)
    assert refused.value.code == code and words in refused.value.reason


# --------------------------------------------------------------------------------------------------
# The offline replay


def night(tmp_path: Path) -> Path:
    """The real misread form, corrected, then back to the misread (A → B → A); and a second misread TPS."""
    fixed = copy.deepcopy(MISREAD_DOC)
    fixed["chart"]["100027"] = 10
    envelopes = [("3173011002090", MISREAD_DOC), ("3173011002090", fixed), ("3173011002090", MISREAD_DOC),
                 ("3173011005116", CONSISTENT_DOC), ("3174011002091", MISREAD_DOC)]  # fmt: skip
    path = tmp_path / "night.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"kode_tps": k, "jenis": "ppwp", "doc": d}) + b"\n" for k, d in envelopes))
    return path


def sum_valid_id(alerts: list[Alert], kode_tps: str) -> str:
    (found,) = {a.alert_id for a in alerts if a.detector == "form.sum_valid" and a.kode_tps == kode_tps}
    return found


def test_replay_with_suppressions_leaves_the_false_alarm_out(tmp_path):
    path = night(tmp_path)
    unsuppressed = list(replay(read_records(path)))
    target = sum_valid_id(unsuppressed, "3173011002090")

    suppressions = Suppressions()
    suppressions.learn(verdict(alert_id=target))
    summary = ReplaySummary()
    suppressed = list(replay(read_records(path), summary=summary, suppressions=suppressions))
    assert [a.alert_id for a in suppressed] == [a.alert_id for a in unsuppressed if a.alert_id != target]
    assert summary.suppressed == {"form.sum_valid": 1}
    assert summary.alerts["form.sum_valid"] == 1  # the other TPS's: the same numbers, another subject, another id
    assert {a.detector for a in suppressed if a.kode_tps == "3173011002090"} >= {"ocr.misread", "revision.flipflop"}


def write_verdicts(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_read_verdicts_applies_the_latest_per_alert(tmp_path):
    lines = [verdict(at=T0, verdict_id="v-2").model_dump_json().encode(), b"",
             verdict("confirmed", T0 - timedelta(hours=1), "v-1").model_dump_json().encode()]  # fmt: skip
    assert not read_verdicts(write_verdicts(tmp_path / "v.jsonl", lines)).allows(tps_alert())


def run_replay(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pantau.cli", "replay", "--offline", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_verdicts_suppress_like_the_replay(tmp_path):
    path = night(tmp_path)
    target = sum_valid_id(list(replay(read_records(path))), "3173011002090")
    verdicts = write_verdicts(tmp_path / "verdicts.jsonl", [verdict(alert_id=target).model_dump_json().encode()])
    out = tmp_path / "alerts.jsonl"
    done = run_replay(tmp_path, "--out", str(out), "--verdicts", str(verdicts), str(path))
    assert done.returncode == 0, done.stderr
    ids = [json.loads(line)["alert_id"] for line in out.read_text().splitlines()]
    assert target not in ids and len(ids) == len(list(replay(read_records(path)))) - 1
    assert "Suppressed as false alarms by desk verdicts: 1" in " ".join(done.stderr.split())


def test_cli_verdicts_with_a_bad_line_fail_clearly(tmp_path):
    good = verdict().model_dump_json().encode()
    bad = orjson.dumps({**verdict().model_dump(mode="json"), "decision": "maybe"})
    verdicts = write_verdicts(tmp_path / "verdicts.jsonl", [good, bad])
    out = tmp_path / "alerts.jsonl"
    done = run_replay(tmp_path, "--out", str(out), "--verdicts", str(verdicts), str(night(tmp_path)))
    assert done.returncode != 0
    assert f"{verdicts}:2: not a verdict (schema): decision" in done.stderr, done.stderr
    assert not out.exists()  # nothing replayed on a partial set of verdicts

    missing = run_replay(tmp_path, "--verdicts", str(tmp_path / "absent.jsonl"), str(night(tmp_path)))
    assert missing.returncode != 0 and "absent.jsonl" in missing.stderr
