"""What the case page shows: the form as laid out on paper, photos, history, region context, plots."""

from __future__ import annotations

from collections.abc import Callable
from statistics import median
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from pantau.detectors.regional import region_prior, station_expectations
from pantau.schemas import normalize, parse_envelope

from . import cases
from .db import Case, Station
from .plots import digit_chart, fingerprint_chart

A = "administrasi."
#: The voter rows of the C.Hasil form (each with L / P / J columns), then the ballot rows.
VOTER_ROWS = ("pemilih_dpt", "pengguna_dpt", "pengguna_dptb", "pengguna_non_dpt", "pengguna_total")
BALLOT_ROWS = ("suara_sah", "suara_tidak_sah", "suara_total")
PPWP_NAMES = {"100025": "01 Anies – Muhaimin", "100026": "02 Prabowo – Gibran", "100027": "03 Ganjar – Mahfud"}
#: Fewer peers than this make a fingerprint of noise.
MIN_PEERS = 5
#: The form's page 2 holds the tally: show it first.
PAGE_ORDER = (1, 0, 2)


def case_context(session: Session, case: Case, t: Callable[[str], str], lang: str) -> dict[str, Any]:
    alerts = cases.case_alerts(session, case)
    context: dict[str, Any] = {
        "alerts": alerts, "decisions": cases.decisions(session, case), "reason_key": "reason_en" if lang == "en" else "reason",
        "form": None, "photos": [], "history": [], "suggestions": [], "context_rows": [], "fingerprint": None, "digits": None,
        "regional": [], "me": None, "leader": None, "top_tps": [],
    }  # fmt: skip
    open_alerts = [a for a in alerts if a.status == "open"]
    if case.kind == "tps":
        _tps(session, case, open_alerts, context, t)
    else:
        _regional(session, case, alerts, context, t)
    return context


def _tps(session: Session, case: Case, open_alerts: list, context: dict[str, Any], t: Callable[[str], str]) -> None:
    versions = cases.history(session, case.kode_tps, case.jenis)
    failing: set[str] = set()
    for alert in open_alerts:
        for failure in alert.body["evidence"].get("failures", []):
            failing.update(failure.get("values", {}))
        failing.update(alert.body["evidence"].get("over", {}))
    suggested = {}
    for alert in open_alerts:
        for s in alert.body.get("suggestions", []):
            context["suggestions"].append({**s, "alert_id": alert.alert_id})
            suggested.setdefault(s["field"], s["proposed"])
    previous: dict[str, int] | None = None
    for submission in versions:
        counts = _counts(case, submission.doc)
        changes = [] if previous is None else sorted(
            (path, previous.get(path), counts.get(path)) for path in set(previous) | set(counts) if previous.get(path) != counts.get(path))
        received = submission.received_at or (f"{submission.doc['ts']} WIB (ts)" if submission.doc.get("ts") else submission.ingested_at)
        context["history"].append({"version": submission.version, "received": received,
                                   "changes": changes, "first": previous is None})  # fmt: skip
        previous = counts
    if versions:
        latest = versions[-1]
        context["form"] = _layout(_counts(case, latest.doc), failing, suggested, case.jenis, t)
        # Pages keep their place in the list (a page not uploaded is null): filtering first would number
        # the page-3 photo as page 2, the tally page.
        images = latest.doc.get("images") or []
        order = [i for i in PAGE_ORDER if i < len(images)] + list(range(len(PAGE_ORDER), len(images)))
        context["photos"] = [(i + 1, images[i]) for i in order if isinstance(images[i], str) and images[i].startswith(("https://", "http://"))]
    context["history"].reverse()
    _peer_context(session, case, context, t)


def _counts(case: Case, doc: dict[str, Any]) -> dict[str, int]:
    return normalize(parse_envelope({"kode_tps": case.kode_tps, "jenis": case.jenis, "doc": doc})).counts


def _layout(counts: dict[str, int], failing: set[str], suggested: dict[str, int], jenis: str, t: Callable[[str], str]) -> dict[str, Any]:
    def cell(path: str) -> dict[str, Any]:
        return {"path": path, "value": counts.get(path), "failing": path in failing, "suggested": suggested.get(path)}

    voters = [(t(row), [cell(f"{A}{row}_{s}") for s in ("l", "p", "j")]) for row in VOTER_ROWS]
    ballots = [(t(row), cell(A + row)) for row in BALLOT_ROWS]
    votes = []
    for path in sorted(p for p in counts if p.startswith("chart.")):
        parts = path.split(".")
        label = PPWP_NAMES.get(parts[1], parts[1]) if jenis == "ppwp" else f"{parts[1]} · {parts[2] if len(parts) > 2 else ''}"
        votes.append((label, cell(path)))
    for path in sorted(failing | set(suggested)):
        if path not in counts:
            votes.append((path, cell(path)))
    return {"voters": voters, "ballots": ballots, "votes": votes}


def _peer_context(session: Session, case: Case, context: dict[str, Any], t: Callable[[str], str]) -> None:
    station = session.get(Station, (case.kode_tps, case.jenis))
    kecamatan = cases.peers(session, case.kode_tps[:6], case.jenis)
    leader = station.leader if station and station.leader else _region_leader(kecamatan)
    me = (station.turnout, _share(station, leader)) if station and station.turnout is not None else None
    for label, prefix in (("kelurahan", case.kode_tps[:10]), ("kecamatan", case.kode_tps[:6])):
        group = [s for s in kecamatan if s.kode_tps.startswith(prefix) and s.kode_tps != case.kode_tps]
        shares = [x for x in (_share(s, leader) for s in group) if x is not None]
        context["context_rows"].append({
            "label": f"{label} {prefix}", "n": len(group),
            "turnout": median([s.turnout for s in group]) if group else None, "share": median(shares) if shares else None,
        })  # fmt: skip
    context["me"] = me
    context["leader"] = PPWP_NAMES.get(leader, leader) if leader else None
    points = [(s.turnout, _share(s, leader)) for s in kecamatan if _share(s, leader) is not None]
    if len(points) >= MIN_PEERS:
        context["fingerprint"] = fingerprint_chart(points, [me] if me and me[1] is not None else [], title=f"{t('fingerprint')} · kecamatan {case.kode_tps[:6]}",
                                                   x_label=t("turnout"), y_label=t("leader_share"), empty_label=t("no_data"),
                                                   highlight_label=t("this_tps"))  # fmt: skip


def _regional(session: Session, case: Case, alerts: list, context: dict[str, Any], t: Callable[[str], str]) -> None:
    stations = cases.peers(session, case.region, case.jenis)
    top: list[str] = []
    for alert in alerts:
        evidence = alert.body["evidence"]
        top += [k for k in evidence.get("top_tps", []) if k not in top]
        context["regional"].append({"alert": alert, "evidence": evidence, "region": evidence.get("region", {})})
    context["top_tps"] = top
    leader = _region_leader(stations)
    context["leader"] = PPWP_NAMES.get(leader, leader) if leader else None
    points = [(s.turnout, _share(s, leader)) for s in stations if _share(s, leader) is not None]
    highlight = [(s.turnout, _share(s, leader)) for s in stations if s.kode_tps in top and _share(s, leader) is not None]
    if len(points) >= MIN_PEERS:
        context["fingerprint"] = fingerprint_chart(points, highlight, title=f"{t('fingerprint')} · {case.level} {case.region}",
                                                   x_label=t("turnout"), y_label=t("leader_share"), empty_label=t("no_data"),
                                                   highlight_label=t("top_tps"))  # fmt: skip
    observed, expected = np.zeros(10), np.zeros(10)
    prior = region_prior(s.counts for s in stations)
    for counts in (s.counts for s in stations):
        valid = sum(v for _, v in counts)
        if valid <= 0:
            continue
        for (_, votes), expectations in zip(counts, station_expectations(valid, counts, prior)):
            if votes >= 10:
                observed[votes % 10] += 1
            expected += np.asarray(expectations[-10:])
    if observed.sum() > 0:
        context["digits"] = digit_chart((observed / observed.sum()).tolist(), (expected / expected.sum()).tolist(),
                                        [str(d) for d in range(10)], f"{t('last_digits')} · {case.region}",
                                        observed_label=t("observed"), expected_label=t("expected"))  # fmt: skip


def _region_leader(stations: list[Station]) -> str | None:
    totals: dict[str, int] = {}
    for s in stations:
        for candidate, votes in s.counts:
            totals[candidate] = totals.get(candidate, 0) + votes
    return max(totals, key=totals.__getitem__) if totals else None


def _share(station: Station | None, candidate: str | None) -> float | None:
    if station is None or candidate is None or not station.counts:
        return None
    valid = sum(v for _, v in station.counts)
    return dict(station.counts).get(candidate, 0) / valid if valid else None
