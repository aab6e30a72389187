"""Regional state kept where the submissions are: region sums, and TPS-level peer outliers.

:class:`RegionalMonitor` runs next to :class:`~pantau.detectors.inspector.TpsInspector` on the same
partition (submissions are keyed by kabupaten/kota, so a kabupaten's kecamatan all live on one worker).
For every complete, consistent form it updates, in O(1), the :class:`~.regional.RegionSums` of its
kecamatan and kabupaten/kota (withdrawing the previous version of a revised form first), and scores the
form against its kabupaten's peers (:class:`PeerHistograms`). The changed region sums go to the
:class:`~pantau.detectors.assessor.RegionalAssessor`, which sees every region and decides what to flag.

Peer outliers
    A TPS's turnout, invalid-vote rate and share of the kabupaten's leading candidate are placed in the
    distribution of the kabupaten's earlier TPS (histograms of 1-point bins). Each feature's conformal
    *upper-tail rank* ``(peers at least this high + 1) / (peers + 1)`` is a calibrated false-alarm
    rate. The TPS is flagged when the smallest rank, times the 4 features (Bonferroni), is at most
    ``far`` (default 1 in 500) with at least ``min_peers`` peers; so at most about ``far`` of clean TPS
    are flagged, whatever the kabupaten's own turnout or politics.

Smaller kabupaten
    A rank cannot go below ``1 / (peers + 1)``, so the four features need ``4 / far`` peers (2,000) before
    any can be flagged: 484 of the 610 kabupaten/kota, 36% of the TPS, never have that many. In a smaller
    kabupaten a TPS with ``1 / far`` peers outside its kecamatan (500) is tested on the joint feature
    alone, at ``far``. Which features are tested depends only on the numbers of peers, never on the TPS's
    values, so the rate stays ``far``: on a simulated country 19.2 false alarms per 10,000 clean TPS
    tested this way (9.5 with all four features), against the nominal 20; on real DIY/Bali, whose
    kabupaten all have fewer than 2,000 TPS, 7 flags in 12,174 TPS, ~9 nominal for the ~4,700 tested.
    It brings the TPS that can be flagged at all, once every form is in, from 62% to 92% of the country.

Joint (multivariate) peer test
    The fourth feature is Klimek's fingerprint for one TPS: turnout and the TPS winner's share *together*
    (:class:`JointGrid`). A TPS's score is how many TPS are at least as high on both, counted among the
    peers and the TPS together; its conformal rank is the share of them whose own score is as small
    (full conformal, so that P(rank ≤ α) ≤ α for exchangeable TPS). The peers are the kabupaten's TPS
    **outside the TPS's own kecamatan**: stuffing organised across a kecamatan fills the upper-right
    corner with its own stations and would hide itself among all peers (with all peers, none of 720
    extreme-stuffed TPS of a simulated Central Java was flagged; without the own kecamatan, 351 as
    they arrive). A kecamatan naturally unlike the rest is more often in the corner; the rates above
    include that.

Deferred scoring
    Early in the night a kabupaten has too few TPS for any rank to reach ``far`` (``1 / far`` outside the
    TPS's kecamatan). A TPS seen then that is already in the top 5% of the corner (or ranked first)
    waits in ``deferred:<kabkota>:<jenis>`` (at most :data:`DEFER_MAX`) and is scored once more, on the
    features its peers then allow, by the first form of its kabupaten that finds enough peers for it; the alert says it was
    scored late. Without this, a TPS counted early was never flagged.
    The deferred state is written before the others (:meth:`RegionalMonitor.keys`), so a redo after a
    crash decides what waits from the states the first pass saw.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, MutableMapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from pantau.schemas import Alert, Tally
from pantau.schemas.tally import Region

from .alerts import tps_alert
from .assessor import NOKEN, NOKEN_PROVINCES
from .kernels import corner_count
from .regional import (
    TURNOUT,
    Member,
    Profile,
    RegionSums,
    contribution,
    member,
    block_tails,
    neighbour_blocks,
    neighbour_test_of,
    neighbourhood,
    turnout_logit,
)

LEVELS = ("kecamatan", "kabkota")
BINS = 101
JOINT_BINS = 21  # 5-point cells: the corner is sparse, finer cells only multiply the state
PEER_FEATURES = ("turnout", "invalid_rate", "leader_share", "turnout_and_share")
PEER_FAR = 0.002
PEER_MIN = 200
DEFER_RANK = 0.05  # a TPS in the top 5% of the corner so far waits to be scored again
DEFER_MAX = 256  # per kabupaten and ballot type; the farthest into the corner are kept


def region_key(level: str, region: str, jenis: str) -> str:
    return f"{level}:{region}:{jenis}"


def regions_of(kode_tps: str) -> dict[str, str]:
    return {"kecamatan": kode_tps[:6], "kabkota": kode_tps[:4]}


class PeerHistograms:
    """Histograms (1-point bins over 0–100%) of a kabupaten's TPS: turnout, invalid-vote rate, and each
    candidate's share (so the share of whoever leads now is exact, however the lead changed).

    >>> from pantau.detectors.regional import Profile
    >>> h = PeerHistograms()
    >>> for voters in (175, 188, 200, 213):
    ...     h.add(Profile("3404010001001", "ppwp", (("100025", 100), ("100026", 100)), 250, voters, 200, 0))
    >>> h.tail("turnout", 0.85), h.tail("turnout", 0.99), h.tail("100025", 0.5)  # (peers this high + 1) / (peers + 1)
    (0.4, 0.2, 1.0)
    """

    def __init__(self, rows: dict[str, np.ndarray] | None = None):
        self.rows: dict[str, np.ndarray] = {} if rows is None else rows
        turnout = self.rows.get("turnout")
        #: The TPS counted (each in every feature's row once).
        self.n = 0 if turnout is None else int(turnout.sum())

    @staticmethod
    def _bin(value: float) -> int:
        return min(max(int(round(value * 100)), 0), BINS - 1)

    def add(self, p: Profile, sign: int = 1) -> None:
        for name, value in features(p).items():
            row = self.rows.get(name)
            if row is None:
                row = self.rows[name] = np.zeros(BINS, dtype=np.int64)
            row[self._bin(value)] += sign
        self.n += sign

    def tail(self, name: str, value: float) -> float:
        """The conformal upper-tail rank ``(#peers at least as high + 1) / (peers + 1)``: under
        exchangeability with the peers, P(tail ≤ α) ≤ α."""
        row = self.rows.get(name)
        above = int(row[self._bin(value) :].sum()) if row is not None else 0
        return (above + 1) / (self.n + 1)

    def median(self, name: str) -> float:
        cumulative = np.cumsum(self.rows[name])
        return float(np.searchsorted(cumulative, cumulative[-1] / 2) / 100) if cumulative[-1] else float("nan")

    def to_state(self) -> dict[str, list[int]]:
        return {name: row.tolist() for name, row in self.rows.items()}

    @classmethod
    def from_state(cls, state: dict[str, list[int]]) -> PeerHistograms:
        return cls({name: np.asarray(row, dtype=np.int64) for name, row in state.items()})


class JointGrid:
    """Turnout × the TPS winner's share of a region's TPS, counted in 5-point cells (Klimek's fingerprint).

    :meth:`corner_rank` places a TPS in it: its score is the number of peers at least as high on both
    (those in its cell included); the rank is ``(peers whose own score is at most that + 1) / (peers + 1)``,
    a conformal p-value of "this far into the upper-right corner". ``without`` takes a sub-region's TPS
    out of the peers (its own kecamatan's, so that stuffing spread over a kecamatan cannot hide itself).

    >>> from pantau.detectors.regional import Profile
    >>> grid, own = JointGrid(), JointGrid()
    >>> for i in range(99):  # turnout 70-79%, winner's share 50-59%
    ...     grid.add(Profile(f"34040{i % 3}0001{i:03d}", "ppwp", (("100025", 50 + i % 10), ("100026", 50 - i % 10)), 100, 70 + i % 10, 100, 0))
    >>> stuffed = Profile("3404010001999", "ppwp", (("100025", 98), ("100026", 2)), 100, 100, 100, 0)
    >>> grid.corner_rank(stuffed)  # (rank, peers): nobody is as high on both
    (0.01, 99)
    >>> for p in [stuffed] * 30:
    ...     grid.add(p); own.add(p)
    >>> grid.corner_rank(stuffed)[0] > 0.2, grid.corner_rank(stuffed, without=own)
    (True, (0.01, 99))
    """

    def __init__(self, cells: np.ndarray | None = None):
        self.cells = np.zeros((JOINT_BINS, JOINT_BINS), dtype=np.int64) if cells is None else cells
        self.n = int(self.cells.sum())

    @staticmethod
    def cell(p: Profile) -> tuple[int, int]:
        scale = JOINT_BINS - 1
        return min(round(p.turnout * scale), scale), min(round(p.top_share * scale), scale)

    def add(self, p: Profile, sign: int = 1) -> None:
        self.cells[self.cell(p)] += sign
        self.n += sign

    def corner_rank(self, p: Profile, without: JointGrid | None = None) -> tuple[float, int]:
        """``(rank, peers)`` of ``p`` among this grid's TPS less ``without``'s.

        Scores are taken in the peers *and* ``p`` together (full conformal): ``p`` counts itself, and
        every peer ``p`` is at least as high as counts ``p``. Scoring ``p`` against the peers alone made
        any TPS that nobody dominates rank first, and among n points in a plane about ln(n) are
        undominated: on a simulated country that rank flagged 41 clean TPS per 10,000 at a nominal 10.
        """
        count, n = corner_count(self.cells, _EMPTY_GRID if without is None else without.cells, *self.cell(p))
        return (count + 1) / (n + 1), n

    def to_state(self) -> list[list[int]]:
        """Occupied cells only, ``[[cell, count], ...]``: a region fills a few dozen of the 441."""
        flat = self.cells.ravel()
        return [[int(i), int(flat[i])] for i in np.flatnonzero(flat)]

    @classmethod
    def from_state(cls, state: list[list[int]]) -> JointGrid:
        flat = np.zeros(JOINT_BINS * JOINT_BINS, dtype=np.int64)
        for index, count in state:
            flat[index] = count
        return cls(flat.reshape(JOINT_BINS, JOINT_BINS))


_EMPTY_GRID = np.zeros((JOINT_BINS, JOINT_BINS), dtype=np.int64)


def _farthest_first(entry: list) -> tuple[float, str]:
    return entry[8], entry[0]


class Deferred:
    """The TPS of a kabupaten scored before it had enough peers to flag anything, that were already in
    the top :data:`DEFER_RANK` of the turnout × share corner: they are scored once more when it has.

    An entry is ``[kode_tps, counts, register, voters, valid, invalid, ts, received_at, rank]``: the
    profile, when the form was seen, and its corner rank then; entries are kept farthest in first, and
    the nearest dropped when full.
    """

    def __init__(self, entries: list[list] | None = None):
        self.entries: list[list] = [] if entries is None else entries

    def add(self, tally: Tally, p: Profile, rank: float) -> None:
        received = tally.received_at.isoformat() if tally.received_at is not None else None
        entry = [p.kode_tps, [list(c) for c in p.counts], p.register, p.voters, p.valid, p.invalid, tally.ts, received,
                 round(rank, 9)]  # fmt: skip
        bisect.insort(self.entries, entry, key=_farthest_first)
        del self.entries[DEFER_MAX:]

    def drop(self, kode_tps: str) -> None:
        self.entries = [e for e in self.entries if e[0] != kode_tps]

    @staticmethod
    def unpack(entry: list, jenis: str) -> tuple[Tally, Profile]:
        kode, counts, register, voters, valid, invalid, ts, received, _ = entry
        tally = Tally(kode, jenis, Region.of(kode), {}, (), True, True, (), ts, None,
                      datetime.fromisoformat(received) if received else None)  # fmt: skip
        return tally, Profile(kode, jenis, tuple((k, v) for k, v in counts), register, voters, valid, invalid)

    def to_state(self) -> list[list]:
        return list(self.entries)  # a copy: add() inserts in place, and a stored state must not change with it

    @classmethod
    def from_state(cls, state: list[list]) -> Deferred:
        return cls([list(e) for e in state])


class Kelurahan:
    """The complete forms of one kelurahan (of one block of a large one: :func:`~.regional.neighbourhood`):
    per TPS its :data:`Form`.

    Its state is the counts, each candidate's key once (``{"c": keys, "m": {kode_tps: [valid, votes of
    each key or null]}, "d": {kode_tps: [DPT, DPT voters]}}``): a DPD form lists dozens of candidates.
    The logits are recomputed from it exactly.

    >>> from pantau.detectors.monitor import Kelurahan
    >>> from pantau.detectors.regional import Profile
    >>> kel = Kelurahan()
    >>> kel.put("3404010001001", Profile("3404010001001", "ppwp", (("100025", 60), ("100026", 140)), 250, 205, 200, 5, 201))
    >>> kel.to_state()
    {'c': ['100025', '100026'], 'm': {'3404010001001': [200, 60, 140]}, 'd': {'3404010001001': [250, 201]}}
    >>> (keys, logits), votes, valid, dpt = kel.forms["3404010001001"]
    >>> keys, logits.round(4).tolist(), dpt
    (('100025', '100026', '@turnout'), [-0.8426, 0.8426, 1.4038], (250, 201))
    """

    def __init__(self) -> None:
        self.forms: dict[str, Form] = {}
        self._tails: Tails | None = None  # of the forms now
        self._next: tuple[str, Profile | None, Form | None, Tails] | None = None  # what tails() computed

    def put(self, kode_tps: str, p: Profile | None) -> None:
        following, self._next = self._next, None
        if following is not None and following[0] == kode_tps and following[1] is p:
            form, self._tails = following[2], following[3]
        else:
            form, self._tails = _form(p), None
        if form is None:
            self.forms.pop(kode_tps, None)
        else:
            self.forms[kode_tps] = form

    def tails(self, kode_tps: str, p: Profile | None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """How the kelurahan's :func:`~.regional.neighbour_tails` change once ``kode_tps`` holds ``p``
        (new minus old, per candidate and :data:`~.regional.TURNOUT`), and ``p``'s largest residual then
        per neighbour test (none without one)."""
        if self._tails is None:
            self._tails = block_tails(neighbour_blocks({k: f[0] for k, f in self.forms.items()}))
        form = _form(p)
        members = {k: f[0] for k, f in self.forms.items() if k != kode_tps}
        if form is not None:
            members[kode_tps] = form[0]
        blocks = neighbour_blocks(members)
        after = block_tails(blocks)
        self._next = (kode_tps, p, form, after)
        (keys, counts), (keys_before, counts_before) = after, self._tails
        if keys == keys_before:
            change = dict(zip(keys, counts - counts_before))
        else:
            before = dict(zip(keys_before, counts_before))
            change = {key: row - before[key] if key in before else row for key, row in zip(keys, counts)}
            change.update((key, -row) for key, row in before.items() if key not in change)
        own: dict[str, float] = {}
        for block_keys, codes, residuals, _ in blocks:
            if kode_tps in codes:
                for key, value in zip(block_keys, residuals[codes.index(kode_tps)].tolist()):
                    test = neighbour_test_of(key)
                    own[test] = max(own.get(test, -math.inf), value)
        return change, own

    def to_state(self) -> dict[str, Any]:
        keys = list(dict.fromkeys(key for (ballot, _), _, _, _ in self.forms.values() for key in ballot if key != TURNOUT))
        column = {key: i for i, key in enumerate(keys)}
        rows, dpt = {}, {}
        for kode, ((ballot, _), votes, valid, turnout) in self.forms.items():
            row: list[int | None] = [None] * len(keys)
            for key, count in zip(ballot, votes.tolist()):
                row[column[key]] = count
            rows[kode] = [valid, *row]
            if turnout is not None:
                dpt[kode] = list(turnout)
        return {"c": keys, "m": rows, "d": dpt}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Kelurahan:
        if "d" not in state:
            raise ValueError("kelurahan state has no DPT turnout (key 'd'); this version expects it")
        kelurahan = cls()
        for kode, (valid, *row) in state["m"].items():
            dpt = state["d"].get(kode)
            counts = [(key, x) for key, x in zip(state["c"], row) if x is not None]
            kelurahan.forms[kode] = _form_of(valid, counts, None if dpt is None else tuple(dpt))
        return kelurahan


#: A TPS's form in its kelurahan: its :data:`~.regional.Member` (candidate keys and logit shares, the
#: turnout's last), the candidates' votes (in the member's key order), the valid votes, and its DPT and
#: DPT voters (None when the form gives no DPT voters).
Form = tuple[Member, np.ndarray, int, "tuple[int, int] | None"]
#: A kelurahan's neighbour tails per candidate, kept as one small array (a block's counts are ≤ 32).
Tails = tuple[tuple[str, ...], np.ndarray]




def _form_of(valid: int, counts: Sequence[tuple[str, int]], dpt: tuple[int, int] | None) -> Form:
    """A :data:`Form` from the valid votes, the candidates' votes and (DPT, DPT voters) or None."""
    return (*member(valid, counts, None if dpt is None else turnout_logit(*dpt)), valid, dpt)


def _form(p: Profile | None) -> Form | None:
    if p is None:
        return None
    return _form_of(p.valid, p.counts, None if p.dpt_voters is None else (p.register, p.dpt_voters))


def neighbourhood_key(tally: Tally) -> str:
    return f"kelurahan:{neighbourhood(tally.kode_tps)}:{tally.jenis}"


def features(p: Profile) -> dict[str, float]:
    """A form's peer features: turnout, invalid-vote rate, and every candidate's share (by chart key)."""
    ballots = p.valid + p.invalid
    out = {"turnout": p.turnout, "invalid_rate": p.invalid / ballots if ballots else 0.0}
    out.update((key, x / p.valid) for key, x in p.counts)
    return out


class RegionalMonitor:
    """Region sums and peer histograms of the regions a worker holds.

    ``states`` maps :func:`region_key` (and ``peers:<kabkota>:<jenis>``, ``joint:<kabkota or kecamatan>:<jenis>``)
    to JSON-able states: a dict
    offline, a changelog-backed table in the stream. Objects are cached; :meth:`flush` writes the
    changed ones back and returns them (the stream sends them to the assessor).

    ``holds(key)``, when given, says whether the stored state of ``key`` already holds the submission
    being inspected: the stream, redoing submissions after a crash, passes one that compares the source
    offset stored with the state (stream/app.py). A held state is not changed again by :meth:`apply`, and
    :meth:`score` raises nothing against it (it holds later forms; the submission's alerts were
    published before its state was stored). Offline there is nothing to redo.
    """

    def __init__(self, states: MutableMapping[str, Any] | None = None, far: float = PEER_FAR, min_peers: int = PEER_MIN,
                 holds: Callable[[str], bool] | None = None):  # fmt: skip
        self.states: MutableMapping[str, Any] = {} if states is None else states
        self.persist = states is not None
        self.far = far
        self.min_peers = min_peers
        self.holds = holds
        self.sums: dict[str, RegionSums] = {}
        self.peers: dict[str, PeerHistograms] = {}
        self.grids: dict[str, JointGrid] = {}
        self.deferred: dict[str, Deferred] = {}
        self.kelurahan: dict[str, Kelurahan] = {}
        self.judged: tuple[Profile | None, Alert | None, float] = (None, None, 1.0)  # the last form scored: what apply reuses
        self.changed: set[str] = set()

    def forget(self) -> None:
        """Drop the cache (after a rebalance: the states of other partitions may have moved)."""
        self.sums.clear()
        self.peers.clear()
        self.grids.clear()
        self.deferred.clear()
        self.kelurahan.clear()
        self.changed.clear()

    def region(self, key: str) -> RegionSums:
        return self._cached(self.sums, key, RegionSums)

    def _peers(self, key: str) -> PeerHistograms:
        return self._cached(self.peers, key, PeerHistograms)

    def _grid(self, key: str) -> JointGrid:
        return self._cached(self.grids, key, JointGrid)

    def _deferred(self, key: str) -> Deferred:
        return self._cached(self.deferred, key, Deferred)

    def _kelurahan(self, key: str) -> Kelurahan:
        return self._cached(self.kelurahan, key, Kelurahan)

    def _counts(self, key: str) -> PeerHistograms | JointGrid | Deferred | Kelurahan:
        """The cached object of a ``peers:``, ``joint:``, ``deferred:`` or ``kelurahan:`` key."""
        if key.startswith("peers:"):
            return self._peers(key)
        if key.startswith("kelurahan:"):
            return self._kelurahan(key)
        return self._grid(key) if key.startswith("joint:") else self._deferred(key)

    def _cached(self, cache: dict, key: str, kind: type) -> Any:
        """The cached object for ``key``, loaded from ``states`` (or new) on first use."""
        value = cache.get(key)
        if value is None:
            state = self.states.get(key)
            value = cache[key] = kind() if state is None else kind.from_state(state)
        return value

    def score(self, tally: Tally, new: Profile | None) -> list[Alert]:
        """The peer-outlier alert of a form against its kabupaten's TPS so far, then those of the kabupaten's
        deferred TPS that have enough peers now (no state changes)."""
        if new is None:
            return []
        if self.holds is not None and any(map(self.holds, self.keys(tally))):
            return []
        self.judged = (new, *self._judge(tally, new))
        alerts = [self.judged[1]]
        for entry in self._ready(self._deferred(f"deferred:{tally.kode_tps[:4]}:{tally.jenis}"), tally.jenis):
            alerts.append(self._judge(*Deferred.unpack(entry, tally.jenis), deferred=True)[0])
        return [a for a in alerts if a is not None]

    def _judge(self, tally: Tally, p: Profile, deferred: bool = False) -> tuple[Alert | None, float]:
        """The form's peer-outlier alert (or None) and its corner rank."""
        kab, jenis = tally.kode_tps[:4], tally.jenis
        corner = self._grid(f"joint:{kab}:{jenis}").corner_rank(p, without=self._grid(f"joint:{tally.kode_tps[:6]}:{jenis}"))
        leader = self.region(region_key("kabkota", kab, jenis)).leader()
        return self._score(tally, p, leader, self._peers(f"peers:{kab}:{jenis}"), corner, deferred), corner[0]

    def _peer_counts(self, kode: str, jenis: str) -> tuple[int, int]:
        """The kabupaten's TPS, and those outside the kecamatan (of a TPS's or a kecamatan's ``kode``)."""
        peers = self._grid(f"joint:{kode[:4]}:{jenis}").n
        return peers, peers - self._grid(f"joint:{kode[:6]}:{jenis}").n

    def _tested(self, peers: int, outside: int) -> tuple[str, ...]:
        """The features a TPS is tested on (Bonferroni over them), given its kabupaten's ``peers`` and
        those ``outside`` its kecamatan: all four once the kabupaten's ranks can reach ``far`` that way,
        else the joint feature alone once its rank can, else none (see "Smaller kabupaten")."""
        if peers + 1 >= len(PEER_FEATURES) / self.far and peers >= self.min_peers:
            return PEER_FEATURES
        return PEER_FEATURES[-1:] if outside + 1 >= 1 / self.far and outside >= self.min_peers else ()

    def _can_flag(self, peers: int, outside: int) -> bool:
        """Whether the joint feature's rank can reach ``far`` among the features tested."""
        tested = self._tested(peers, outside)
        return PEER_FEATURES[-1] in tested and outside + 1 >= len(tested) / self.far

    def _ready(self, deferred: Deferred, jenis: str) -> list[list]:
        if not deferred.entries:
            return []
        peers = self._grid(f"joint:{deferred.entries[0][0][:4]}:{jenis}").n
        if not self._can_flag(peers, peers):
            return []  # O(1) while the kabupaten itself is too small for any of them
        kecamatan = {e[0][:6] for e in deferred.entries}  # the entries are many, their kecamatan few
        ready = {kode for kode in kecamatan if self._can_flag(*self._peer_counts(kode, jenis))}
        return [e for e in deferred.entries if e[0][:6] in ready] if ready else []

    @staticmethod
    def keys(tally: Tally) -> list[str]:
        """The states a TPS's form changes: its kabupaten's deferred TPS (first: whether it waits depends on
        the others, so after a crash it must not hold a submission they do not), its kecamatan's and
        kabupaten's sums, its kabupaten's peers, the joint grids of both, and its kelurahan's forms.

        The kelurahan's forms are what the sums' neighbour tails are computed from, so they are stored
        after the sums (:meth:`flush` goes in key order: ``kabkota:``, ``kecamatan:``, ``kelurahan:``): a
        redo after a crash finds them holding a submission only when the sums hold it too."""
        regions = [region_key(level, code, tally.jenis) for level, code in regions_of(tally.kode_tps).items()]
        kode, jenis = tally.kode_tps, tally.jenis
        return [f"deferred:{kode[:4]}:{jenis}", *regions, f"peers:{kode[:4]}:{jenis}", f"joint:{kode[:4]}:{jenis}",
                f"joint:{kode[:6]}:{jenis}", neighbourhood_key(tally)]  # fmt: skip

    def apply(self, tally: Tally, old: Profile | None, new: Profile | None) -> list[str]:
        """Replace the TPS's previous profile ``old`` by ``new`` in its regions and peer histograms; return
        the keys changed (none that ``holds`` says already hold this submission)."""
        if old == new:
            return []
        changed = []
        contributions = tails = None
        for key in self.keys(tally):
            if self.holds is not None and self.holds(key):
                continue
            if key.startswith("deferred:"):
                self._update_deferred(self._deferred(key), tally, old, new)
            elif key.startswith("kelurahan:"):
                self._kelurahan(key).put(tally.kode_tps, new)
            elif key.startswith(("peers:", "joint:")):
                counts = self._counts(key)
                if old is not None:
                    counts.add(old, -1)
                if new is not None:
                    counts.add(new)
            else:
                if contributions is None:
                    prior = self.prior(tally)
                    contributions = tuple(contribution(p, prior) if p is not None else None for p in (old, new))
                if tails is None:
                    tails = self._kelurahan(neighbourhood_key(tally)).tails(tally.kode_tps, new)
                withdrawn, added = contributions
                sums = self.region(key)
                if old is not None:
                    sums.add(old, -1, withdrawn)
                if new is not None:
                    sums.add(new, 1, added)
                sums.add_tails(tails[0], tally.kode_tps, tails[1])
            changed.append(key)
        self.changed.update(changed)
        return changed

    def _update_deferred(self, deferred: Deferred, tally: Tally, old: Profile | None, new: Profile | None) -> None:
        """Before the grids take ``new``: drop the entries :meth:`score` just scored again (and the TPS's
        own, now revised), and defer ``new`` if it cannot be flagged yet but is far into the corner."""
        if new is None:  # not scored: nothing was scored again either
            if old is not None:
                deferred.drop(tally.kode_tps)
            return
        ready = {e[0] for e in self._ready(deferred, tally.jenis)}
        if ready or old is not None:
            deferred.entries = [e for e in deferred.entries if e[0] not in ready and e[0] != tally.kode_tps]
        peers, outside = self._peer_counts(tally.kode_tps, tally.jenis)
        if not self._can_flag(peers, outside):
            judged, alert, rank = self.judged
            if judged is not new:
                alert, rank = self._judge(tally, new)
            if alert is None and rank <= max(DEFER_RANK, 1 / (outside + 1)):
                deferred.add(tally, new, rank)

    def prior(self, tally: Tally) -> dict[str, tuple[float, float]]:
        """The share prior of the TPS's station null (:func:`~.regional.share_prior`): its kecamatan's
        stations so far.

        Only the kecamatan's: a redo after a crash must find the prior the first pass found. The
        kecamatan's state, when a crash left it holding the submission, is written after its
        kabupaten's (:meth:`flush` goes in key order), so then every state the contribution would
        change holds it already and the prior is not needed.
        """
        return self.region(region_key("kecamatan", tally.kode_tps[:6], tally.jenis)).prior()

    def _score(self, tally: Tally, p: Profile, leader: str | None, peers: PeerHistograms,
               corner: tuple[float, int], deferred: bool = False) -> Alert | None:  # fmt: skip
        n = peers.n
        tested = self._tested(n, corner[1])
        if not tested or leader is None:
            return None
        values = features(p)
        names = ("turnout", "invalid_rate", leader)
        tails = [peers.tail(name, values.get(name, 0.0)) for name in names] + [corner[0]]
        worst = min((PEER_FEATURES.index(name) for name in tested), key=lambda i: (tails[i], i))
        far = min(1.0, tails[worst] * len(tested))
        if far > self.far:
            return None
        top = p.top_share
        evidence = {
            "peers": n, "kabkota": tally.kode_tps[:4], "leader": leader, "false_alarm_rate": round(far, 6),
            "features_tested": list(tested),
            "features": {label: {"value": round(values.get(name, 0.0), 4), "peer_median": round(peers.median(name), 2),
                                 "upper_tail": round(t, 6)}
                         for label, name, t in zip(PEER_FEATURES, names, tails)},
        }  # fmt: skip
        evidence["features"]["turnout_and_share"] = {
            "turnout": round(p.turnout, 4), "top_share": round(top, 4), "peers_outside_kecamatan": corner[1],
            "upper_tail": round(corner[0], 6),
        }  # fmt: skip
        late = ("", "")
        if deferred:
            evidence["deferred"] = True
            late = (" Dinilai ulang setelah kabupaten/kota ini punya cukup TPS pembanding.",
                    " Scored again once this kabupaten/kota had enough TPS to compare with.")  # fmt: skip
        if PEER_FEATURES[worst] == "turnout_and_share":
            return self._corner_alert(tally, p.turnout, top, corner, far, evidence, late)
        label = PEER_FEATURES[worst]
        label_id = {"turnout": "partisipasi", "invalid_rate": "suara tidak sah", "leader_share": f"suara {leader}"}[label]
        label_en = {"turnout": "turnout", "invalid_rate": "invalid-vote rate", "leader_share": f"{leader}'s share"}[label]
        value, median = values.get(names[worst], 0.0), peers.median(names[worst])
        return tps_alert(
            tally, "stat.peer_outlier", "warning", -np.log10(max(far, 1e-12)),
            f"{label_id[0].upper() + label_id[1:]} {value:.0%} jauh di atas TPS lain di kabupaten/kota ini (median {median:.0%}; "
            f"peringkat ekor {tails[worst]:.2%} di antara {n:,} TPS). Ini alasan untuk memeriksa formulir, bukan bukti kecurangan.{late[0]}",
            f"{label_en[0].upper() + label_en[1:]} {value:.0%} is far above the other TPS of this kabupaten/kota (median {median:.0%}; "
            f"upper-tail rank {tails[worst]:.2%} among {n:,} TPS). A reason to check the form, not proof of fraud.{late[1]}",
            evidence,
        )  # fmt: skip

    @staticmethod
    def _corner_alert(tally: Tally, turnout: float, top: float, corner: tuple[float, int], far: float,
                      evidence: dict[str, Any], late: tuple[str, str]) -> Alert:  # fmt: skip
        noken = tally.kode_tps[:2] in NOKEN_PROVINCES
        rank, n = corner
        return tps_alert(
            tally, "stat.peer_outlier", "warning", -np.log10(max(far, 1e-12)),
            f"Partisipasi {turnout:.0%} dan suara pemenang TPS {top:.0%} bersama-sama jauh di atas TPS kecamatan lain di "
            f"kabupaten/kota ini (peringkat ekor {rank:.2%} di antara {n:,} TPS; pola sidik jari Klimek). Ini alasan untuk "
            f"memeriksa formulir, bukan bukti kecurangan.{late[0]}" + (" " + NOKEN[0] if noken else ""),
            f"Turnout {turnout:.0%} and the TPS winner's share {top:.0%} are together far above the TPS of other kecamatan "
            f"of this kabupaten/kota (upper-tail rank {rank:.2%} among {n:,} TPS; Klimek's fingerprint). A reason to check "
            f"the form, not proof of fraud.{late[1]}" + (" " + NOKEN[1] if noken else ""),
            evidence,
        )  # fmt: skip

    def flush(self) -> dict[str, RegionSums]:
        """Return the changed region sums (not the peer histograms), writing their states back when the
        monitor was given ``states`` (offline, the cached objects are the state)."""
        out = {}
        for key in sorted(self.changed):
            out.update(self.flush_one(key))
        return out

    def flush_one(self, key: str) -> dict[str, RegionSums]:
        """:meth:`flush` for one changed key: ``{key: sums}`` for a region, ``{}`` for peer histograms."""
        self.changed.discard(key)
        if not key.startswith(("kecamatan:", "kabkota:")):
            if self.persist:
                self.states[key] = self._counts(key).to_state()
            return {}
        if self.persist:
            self.states[key] = self.sums[key].to_state()
        return {key: self.sums[key]}
