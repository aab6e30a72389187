"""Revision tracking: what changed between successive submissions of one TPS and ballot type.

Sirekap overwrites documents in place with no version field, so revisions are found by diffing.
A half filling in (null → number) is normal progress, not a revision. A number that changes is:

``revision.changed``   numbers changed; severity by the *swing* (vote changes as a share of the TPS's
                       valid votes): info below 5%, warning from 5%, critical from 25%.
``revision.flipflop``  a number returned to a value it had before (A → B → A): someone is fighting
                       over this form, or two sources overwrite each other.
``revision.resolved``  the change made earlier failing findings pass: a correction. Names the alert ids
                       it resolves, so the desk can close the case; says whether the new value is the
                       one pantau had suggested.

State is a small JSON-able dict per ``kode_tps:jenis`` so the stream can keep it in a changelog-backed
table. :func:`revise` is pure: it returns the alerts and the next state, and the caller stores the
state only once the alerts are safely published.
"""

from __future__ import annotations

from typing import Any

from pantau.schemas import Alert, Tally

from .alerts import tps_alert

SWING_WARNING = 0.05
SWING_CRITICAL = 0.25
#: Earlier values kept per field to recognise flip-flops (bounded state).
HISTORY = 4

State = dict[str, Any]


def state_key(tally: Tally) -> str:
    return f"{tally.kode_tps}:{tally.jenis}"


def _swing(tally: Tally, changes: dict[str, list[int | None]]) -> float:
    moved = sum(abs((new or 0) - (old or 0)) for f, (old, new) in changes.items() if f.startswith(("chart.", "caleg.")))
    base = tally.counts.get("administrasi.suara_sah") or sum(
        v for f, v in tally.counts.items() if f.startswith("chart.") and not f.endswith(".jml_suara_partai")
    )
    return moved / max(base, 1)


def revise(
    previous: State | None, tally: Tally, findings: dict[str, str], suggested: dict[str, int]
) -> tuple[list[Alert], State]:
    """Compare a submission with the previous state of its TPS; return the alerts and the next state.

    ``findings`` maps the detectors that fire on this submission to their alert ids; ``suggested``
    maps fields to the values pantau suggests for them now (to recognise accepted suggestions later).
    """
    state: State = {"c": dict(tally.counts), "h": {}, "o": findings, "s": suggested, "v": 1}
    if previous is None:
        return [], state
    old_counts: dict[str, int] = previous["c"]
    history: dict[str, list[int]] = {f: list(v) for f, v in previous["h"].items()}
    state["v"] = previous["v"]
    state["h"] = history
    changes: dict[str, list[int | None]] = {}
    for field, old in old_counts.items():
        new = tally.counts.get(field)
        if new != old:
            changes[field] = [old, new]
    if not changes:
        return [], state
    state["v"] = previous["v"] + 1

    alerts: list[Alert] = []
    returned = {}
    for field, (old, new) in changes.items():
        past = history.setdefault(field, [])
        if new is not None and new in past:
            returned[field] = past + [old, new]
        if old not in past:
            past.append(old)
        del past[:-HISTORY]
    if returned:
        detail = "; ".join(f"{f}: {' → '.join(map(str, seq))}" for f, seq in returned.items())
        alerts.append(tps_alert(
            tally, "revision.flipflop", "warning", len(returned),
            f"Angka kembali ke nilai sebelumnya setelah diubah ({detail}).",
            f"Numbers went back to an earlier value after being changed ({detail}).",
            {"returned": returned, "version": state["v"]},
        ))  # fmt: skip

    evidence = {"changes": changes, "version": state["v"], "swing": round(_swing(tally, changes), 4)}
    listed = "; ".join(f"{f}: {old} → {new}" for f, (old, new) in changes.items())
    resolved = {d: a for d, a in previous["o"].items() if d not in findings}
    if resolved:
        accepted = {f: v for f, v in previous["s"].items() if tally.counts.get(f) == v}
        evidence |= {"resolved": sorted(resolved), "accepted_suggestions": accepted}
        note_id = " sesuai saran pantau" if accepted else ""
        note_en = ", as pantau suggested" if accepted else ""
        alerts.append(tps_alert(
            tally, "revision.resolved", "info", len(resolved),
            f"Perbaikan data{note_id} menyelesaikan temuan {', '.join(sorted(resolved))} ({listed}).",
            f"A correction{note_en} resolves {', '.join(sorted(resolved))} ({listed}).",
            evidence, resolves=resolved.values(),
        ))  # fmt: skip
    else:
        swing = evidence["swing"]
        severity = "critical" if swing >= SWING_CRITICAL else "warning" if swing >= SWING_WARNING else "info"
        alerts.append(tps_alert(
            tally, "revision.changed", severity, swing,
            f"Angka berubah dari versi sebelumnya, pergeseran suara {swing:.1%} ({listed}).",
            f"Numbers changed from the previous version, vote swing {swing:.1%} ({listed}).",
            evidence,
        ))  # fmt: skip
    return alerts, state
