"""Revision tracking: what changed between successive submissions of one TPS and ballot type.

Sirekap overwrites documents in place with no version field, so revisions are found by diffing.
A half filling in (null → number) is normal progress, not a revision. A number that changes is:

``revision.resolved``  the change makes earlier failing findings hold again: a correction. ``resolves``
                       names the alert ids it closes, and the evidence says whether the new values are
                       the ones pantau had suggested.
``revision.changed``   any other change of numbers, or votes moved beyond what a correction needed;
                       severity by the *swing* (votes moved, less what mended a vote-sum identity, as a
                       share of the TPS's valid votes): info below 5%, warning from 5%, critical from 25%.

When a change alters a finding that still fails, the finding gets a new id, and the revision alert
(``revision.resolved`` if there is one, else ``revision.changed``) ``resolves`` (supersedes) the old one.
``revision.flipflop``  a number went back to a value it had before (A → B → A): someone is fighting over
                       this form, or two sources overwrite each other.

A finding whose numbers were withdrawn (back to null) is not resolved: it is no longer judged, and
stays open for a person to see.

The state per ``kode_tps:jenis`` is small and JSON-able (the counts, short histories of changed
fields, a version number) so the stream keeps it in a changelog-backed table. Earlier findings are not
stored: they are recomputed from the previous counts, which gives the very same alert ids.
:func:`revise` is pure; the caller stores the state once the alerts are published.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import replace
from functools import lru_cache
from typing import Any

import orjson

from pantau.schemas import Alert, Tally

from .alerts import tps_alert
from .findings import Findings

SWING_WARNING = 0.05
SWING_CRITICAL = 0.25
#: Earlier values kept per changed field, and changed fields remembered, to recognise flip-flops
#: (bounded: a ppwp state stays under 1 KiB however often the form is re-read).
HISTORY = 3
HISTORY_FIELDS = 12

State = dict[str, Any]

#: Identities over vote counts: mending one moves exactly its difference in votes.
VOTE_SUMS = frozenset({"form.sum_valid", "form.party_total"})

_SHORT = (("administrasi.", "a."), ("chart.", "c."), ("caleg.", "k."))


def pack(counts: dict[str, int]) -> dict[str, int]:
    """Counts with short path prefixes, for a compact state (``administrasi.x`` → ``a.x``)."""
    return {_shorten(path): value for path, value in counts.items()}


def unpack(packed: dict[str, int]) -> dict[str, int]:
    return {_lengthen(path): value for path, value in packed.items()}


@lru_cache(maxsize=1 << 16)
def _shorten(path: str) -> str:
    for long, short in _SHORT:
        if path.startswith(long):
            return short + path[len(long) :]
    return path


@lru_cache(maxsize=1 << 16)
def _lengthen(path: str) -> str:
    for long, short in _SHORT:
        if path.startswith(short):
            return long + path[len(short) :]
    return path


class CompactStates(MutableMapping[str, State]):
    """Revision states stored compactly: the field names once per form layout, the values per TPS.

    A TPS's state holds its counts keyed by document path (``"k.5.1234567": 3``); a DPRD kab/kota
    ballot carries some 250 such paths, and every TPS of an electoral district the same ones. Stored
    as ``{"l": layout id, "n": [values in layout order], ...}`` with the layout's paths kept once
    under ``layout:ID`` in the same mapping, a state shrinks several times (bench/bench_state.py).
    Reading returns the state exactly as :func:`revise` made it.

    A partitioned store (a changelog-backed table: the stream's ``BatchStates``) says through its
    ``partition`` attribute on which partition the state being written goes; the layout is then kept
    per partition (``layout:ID@P``), written beside the first state of the partition that needs it, so
    a worker that recovers only some partitions (after a rebalance) finds every layout their states
    name. (One copy shared by all partitions would be missing on a worker that does not hold the
    partition the copy was written to.)

    >>> store = {}
    >>> states = CompactStates(store)
    >>> states["3173011002090:ppwp"] = {"c": {"c.100025": 105, "a.suara_sah": 233}, "h": {}, "v": 1}
    >>> states["3173011002090:ppwp"]
    {'c': {'a.suara_sah': 233, 'c.100025': 105}, 'h': {}, 'v': 1}
    >>> sorted(store)
    ['3173011002090:ppwp', 'layout:ef9477b3892f54fd']
    >>> store["3173011002090:ppwp"]
    {'l': 'ef9477b3892f54fd', 'n': [233, 105], 'h': {}, 'v': 1}
    """

    def __init__(self, store: MutableMapping[str, Any]):
        self.store = store
        self.layouts: dict[str, list[str]] = {}

    def __getitem__(self, key: str) -> State:
        return self._expand(self.store[key])

    def get(self, key: str, default: Any = None) -> Any:
        stored = self.store.get(key)
        return default if stored is None else self._expand(stored)

    def _expand(self, stored: dict[str, Any]) -> State:
        if "c" in stored:  # written before states were compact
            return stored
        paths = self.layouts.get(stored["l"])
        if paths is None:
            paths = self.layouts[stored["l"]] = self.store[f"layout:{stored['l']}"]
        return {"c": dict(zip(paths, stored["n"])), "h": stored["h"], "v": stored["v"]}

    def __setitem__(self, key: str, state: State) -> None:
        paths = sorted(state["c"])
        layout = hashlib.blake2b(orjson.dumps(paths), digest_size=8).hexdigest()
        partition = getattr(self.store, "partition", None)
        if partition is not None:
            layout = f"{layout}@{partition}"
        if self.store.get(f"layout:{layout}") is None:
            self.store[f"layout:{layout}"] = paths
        self.layouts[layout] = paths
        self.store[key] = {"l": layout, "n": [state["c"][p] for p in paths], "h": state["h"], "v": state["v"]}

    def __delitem__(self, key: str) -> None:
        del self.store[key]

    def __iter__(self) -> Iterator[str]:
        return (k for k in self.store if not k.startswith("layout:"))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def state_key(tally: Tally) -> str:
    return f"{tally.kode_tps}:{tally.jenis}"


def _vote_fields(tally: Tally) -> Callable[[str], bool]:
    if tally.party_ballot:
        return lambda f: f.startswith("chart.") and f.endswith(".jml_suara_total")
    return lambda f: f.startswith("chart.")


def _swing(tally: Tally, changes: dict[str, list[int | None]], allowance: int) -> float:
    """Votes moved beyond what corrections needed (``allowance``), as a share of the valid votes."""
    is_vote = _vote_fields(tally)
    moved = sum(abs((new or 0) - (old or 0)) for f, (old, new) in changes.items() if is_vote(f))
    base = tally.counts.get("administrasi.suara_sah") or sum(v for f, v in tally.counts.items() if is_vote(f))
    return max(moved - allowance, 0) / max(base, 1)


def _resolved(before: Findings, now: Findings, counts: dict[str, int]) -> tuple[dict[str, str], set[str], int]:
    """Earlier findings that now hold with all their fields present, the fields that mended them, and
    the votes a correction had to move (the vote-sum identities' differences it mended)."""
    judged_now = set(now.form.judged)
    failed_by: dict[str, list] = {}
    for failure in before.form.failures:
        failed_by.setdefault(failure.identity.detector, []).append(failure.identity)
    resolved: dict[str, str] = {}
    fields: set[str] = set()
    allowance = 0
    for detector, alert_id in before.open.items():
        if detector in now.open:
            continue
        if detector == "form.capacity":
            involved = set(before.form.over_capacity)
            mended = involved <= counts.keys()
        elif detector == "ocr.misread":
            identities = [f.identity for f in before.form.failures]
            involved = {f for i in identities for f in i.fields} | set(before.form.over_capacity)
            mended = not now.form.failures and set(identities) <= judged_now and involved <= counts.keys()
        else:
            identities = failed_by.get(detector, [])
            involved = {f for i in identities for f in i.fields}
            mended = set(identities) <= judged_now
        if mended:
            resolved[detector] = alert_id
            fields |= involved
    for failure in before.form.failures:
        if failure.identity.detector in resolved and failure.identity.detector in VOTE_SUMS:
            allowance += abs(failure.difference)
    return resolved, fields, allowance


def revise(
    previous: State | None, tally: Tally, now: Findings, recheck: Callable[[Tally], Findings]
) -> tuple[list[Alert], State]:
    """Compare a submission with the previous state of its TPS; return the alerts and the next state.

    ``now`` are the submission's own findings; ``recheck`` computes findings for other counts (it is
    called on the previous counts, only when numbers changed).
    """
    if previous is None:
        return [], {"c": pack(tally.counts), "h": {}, "v": 1}
    old_counts = unpack(previous["c"])
    changes: dict[str, list[int | None]] = {}
    for field, old in old_counts.items():
        new = tally.counts.get(field)
        if new != old:
            changes[field] = [old, new]
    history: dict[str, list[int]] = {f: list(v) for f, v in previous["h"].items()}
    state: State = {"c": pack(tally.counts), "h": history, "v": previous["v"] + bool(changes)}
    if not changes:
        return [], state

    alerts: list[Alert] = []
    returned = {}
    for field, (old, new) in changes.items():
        short = _shorten(field)
        past = history.pop(short, [])
        if new is not None and new in past:
            returned[field] = past + [old, new]
        if old not in past:
            past.append(old)
        history[short] = past[-HISTORY:]  # re-inserted last: the most recently changed fields are kept
    for stale in list(history)[:-HISTORY_FIELDS]:
        del history[stale]
    if returned:
        detail = "; ".join(f"{f}: {' → '.join(map(str, seq))}" for f, seq in returned.items())
        alerts.append(tps_alert(
            tally, "revision.flipflop", "warning", len(returned),
            f"Angka kembali ke nilai sebelumnya setelah diubah ({detail}).",
            f"Numbers went back to an earlier value after being changed ({detail}).",
            {"returned": returned, "version": state["v"]},
        ))  # fmt: skip

    earlier_paths = tuple(p for p in old_counts if p.startswith(("chart.", "caleg.")) and p not in tally.declared)
    before = recheck(replace(tally, counts=old_counts, declared=tally.declared + earlier_paths))
    resolved, mending_fields, allowance = _resolved(before, now, tally.counts)
    superseded = sorted(a for d, a in before.open.items() if d in now.open and now.open[d] != a)
    corrections = {f: c for f, c in changes.items() if f in mending_fields}
    others = {f: c for f, c in changes.items() if f not in mending_fields}
    swing = round(_swing(tally, changes, allowance), 4)
    if resolved:
        accepted = {s.field: s.proposed for s in before.suggestions if tally.counts.get(s.field) == s.proposed}
        listed = "; ".join(f"{f}: {old} → {new}" for f, (old, new) in corrections.items())
        note_id, note_en = (" sesuai saran pantau", ", as pantau suggested") if accepted else ("", "")
        names = ", ".join(sorted(resolved))
        alerts.append(tps_alert(
            tally, "revision.resolved", "info", len(resolved),
            f"Perbaikan data{note_id} menyelesaikan temuan {names} ({listed}).",
            f"A correction{note_en} resolves {names} ({listed}).",
            {"changes": corrections, "version": state["v"], "resolved": sorted(resolved),
             "accepted_suggestions": accepted, "superseded": superseded},
            resolves=[*resolved.values(), *superseded],
        ))  # fmt: skip
    if others or swing > 0:
        moved = others or corrections
        severity = "critical" if swing >= SWING_CRITICAL else "warning" if swing >= SWING_WARNING else "info"
        listed = "; ".join(f"{f}: {old} → {new}" for f, (old, new) in moved.items())
        closes = [] if resolved else superseded
        alerts.append(tps_alert(
            tally, "revision.changed", severity, swing,
            f"Angka berubah dari versi sebelumnya, pergeseran suara {swing:.1%} ({listed}).",
            f"Numbers changed from the previous version, vote swing {swing:.1%} ({listed}).",
            {"changes": moved, "version": state["v"], "swing": swing, "superseded": closes},
            resolves=closes,
        ))  # fmt: skip
    return alerts, state
