"""Injected anomalies with known location: what they change, and the truth rows that say so.

Each anomaly is given as ``NAME[:key=value,...]`` (``pantau simulate --anomaly``), with

``rate``      share of the eligible TPS of the target that it hits (each TPS independently)
``target``    ``all``; region codes joined by ``+`` (``3471+5171``: any level); or
              ``random:N@level`` / ``random:0.01@level`` (N regions, or that share of the level's regions)
``seed``      its own random seed (default: derived from the night's seed and the spec text)
``jenis``     ballot types joined by ``+`` (default: every simulated type for form errors, else ppwp)
and per anomaly ``candidate`` (who benefits; default: the strongest in the hit TPS), ``corrected``
(share of misreads/typos corrected later), ``kind``, and the size of a manipulation as ``LOW-HIGH``
(each hit TPS draws uniformly between them): ``added`` (share of the non-voters' ballots stuffed;
incremental 0.15-0.6, extreme 0.85-1) and ``moved`` (share of the other candidates' votes moved:
shifting 0.1-0.4, extreme stuffing 0.7-1).

=========================  ========================================================================
``ocr_misread``            one count misread as Sirekap did (look-alike digit, extra/dropped digit,
                           crossed-out box read as 8; :func:`pantau.misreads.misread`); a share is
                           corrected later by a new version of the document
``typo``                   an error on the paper form: two digits swapped, or a total off by 1-10
``stuffing_incremental``   Klimek-style ballot stuffing: a share of the non-voters' ballots added for
                           one candidate, with the voter counts raised to match (identities hold)
``stuffing_extreme``       turnout driven to ~100% and most others' votes moved to one candidate
``vote_shifting``          a share of the other candidates' votes moved to one candidate
``fabricated``             invented counts: ``rounded`` (multiples of 5/10), ``favoured_digits`` (last
                           digits drawn from a human's favourites), ``invented`` (numbers near the
                           truth, favoured last digits); totals made to match
``copied_tally``           a TPS reports another TPS's form (same kecamatan) number for number
``duplicate_submission``   the same document submitted again later, unchanged
=========================  ========================================================================

Every anomaly draws from its own stream and hits each TPS and ballot at most once (earlier anomalies
first); form errors and manipulations only hit forms that end complete. The truth lists every hit
(``level: tps``) with the field, true and published values, and for the regional manipulations every
region at every level that holds hit TPS, with their share.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pantau.misreads import misread
from pantau.schemas import ADMIN_FIELDS, JENIS

from .generate import ADMIN, CHART, FULL, Ballot, Night, Override, caleg_votes
from .model import LEVEL_DIGITS, LEVELS, stream, wib_strings
from .truth import NAMES, REGIONAL

S_ANOMALY = 20
FOREVER = np.iinfo(np.int64).max
FORM_ERRORS = frozenset({"ocr_misread", "typo", "duplicate_submission"})
DEFAULTS: dict[str, dict[str, Any]] = {
    "ocr_misread": {"rate": 0.01, "target": "all", "corrected": 0.5},
    "typo": {"rate": 0.002, "target": "all", "corrected": 0.2},
    "stuffing_incremental": {"rate": 0.6, "target": "random:0.01@kecamatan"},
    "stuffing_extreme": {"rate": 0.4, "target": "random:0.005@kecamatan"},
    "vote_shifting": {"rate": 0.5, "target": "random:0.01@kecamatan"},
    "fabricated": {"rate": 0.5, "target": "random:0.005@kecamatan"},
    "copied_tally": {"rate": 0.002, "target": "all"},
    "duplicate_submission": {"rate": 0.005, "target": "all"},
}
#: Totals a person adds up on the form (where arithmetic slips happen).
SUM_FIELDS = ("suara_sah", "suara_total", "pengguna_total_j", "pengguna_total_l", "pengguna_total_p")
FAVOURED_DIGITS = np.array([0.30, 0.04, 0.08, 0.06, 0.04, 0.24, 0.05, 0.10, 0.05, 0.04])
CORRECTION_LAG = (36 * 3600.0, 0.8)  # median seconds, lognormal sigma


@dataclass
class AnomalySpec:
    name: str
    rate: float
    target: str = "all"
    seed: int = 0
    jenis: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rate": self.rate, "target": self.target, "seed": self.seed,
                "jenis": list(self.jenis), **self.options}  # fmt: skip


def parse_spec(text: str, night_seed: int, simulated: tuple[str, ...]) -> AnomalySpec:
    """``NAME[:key=value,...]`` → :class:`AnomalySpec` (see the module documentation)."""
    name, _, rest = text.strip().partition(":")
    if name not in DEFAULTS:
        raise ValueError(f"unknown anomaly {name!r}; known: {', '.join(NAMES)}")
    values: dict[str, Any] = dict(DEFAULTS[name])
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"anomaly {text!r}: {item!r} is not key=value")
        values[key.strip()] = value.strip()
    rate = float(values.pop("rate"))
    if not 0 <= rate <= 1:
        raise ValueError(f"anomaly {text!r}: rate must be within [0, 1]")
    target = str(values.pop("target"))
    digest = hashlib.blake2b(f"{night_seed}|{text.strip()}".encode(), digest_size=4).hexdigest()
    seed = int(values.pop("seed", int(digest, 16)))
    if "jenis" in values:
        jenis = tuple(j for j in str(values.pop("jenis")).split("+") if j)
        unknown = [j for j in jenis if j not in JENIS]
        if unknown:
            raise ValueError(f"anomaly {text!r}: unknown ballot types {unknown}")
    else:
        jenis = simulated if name in FORM_ERRORS or name == "copied_tally" else (("ppwp",) if "ppwp" in simulated else simulated[:1])
    jenis = tuple(j for j in jenis if j in simulated)
    spec = AnomalySpec(name, rate, target, seed, jenis, {k: _option(v) for k, v in values.items()}, text.strip())
    for size in ("added", "moved"):
        _size(spec, size, (0.0, 0.0))  # a malformed size fails here, not halfway through a night
    return spec


def _option(value: Any) -> Any:
    """Numbers as numbers (``corrected=0.5``), anything else as text (``candidate=100026``, ``kind=...``)."""
    text = str(value)
    try:
        return float(text) if not text.isdigit() else text
    except ValueError:
        return text


def default_specs(night_seed: int, simulated: tuple[str, ...]) -> list[AnomalySpec]:
    """Every anomaly at its default rate and target."""
    return [parse_spec(name, night_seed, simulated) for name in NAMES]


def _size(spec: AnomalySpec, key: str, default: tuple[float, float]) -> tuple[float, float]:
    """A manipulation's size option ``LOW-HIGH`` (shares within [0, 1]), or ``default``."""
    text = spec.options.get(key)
    if text is None:
        return default
    low, sep, high = str(text).partition("-")
    try:
        bounds = (float(low), float(high if sep else low))
    except ValueError:
        raise ValueError(f"anomaly {spec.text!r}: {key}={text!r} is not LOW-HIGH (e.g. 0.1-0.4)") from None
    if not 0 <= bounds[0] <= bounds[1] <= 1:
        raise ValueError(f"anomaly {spec.text!r}: {key}={text!r} must satisfy 0 <= LOW <= HIGH <= 1")
    return bounds


# -- paths and values ------------------------------------------------------------------------------


def paths(ballot: Ballot, row: int, seed: int) -> tuple[list[str], list[str]]:
    """The chart/caleg paths and administrasi paths of one TPS's form."""
    labels = ballot.labels[int(ballot.label_set[row])]
    if ballot.party:
        dapil = ballot.dapils[int(ballot.dapil[row])]
        chart = [f"chart.{p}.{part}" for p in labels for part in ("jml_suara_total", "jml_suara_partai")]
        chart += [f"caleg.{p}.{cid}" for c, p in enumerate(labels) for cid in dapil.caleg[c]]
    else:
        chart = [f"chart.{label}" for label in labels]
    return chart, [f"administrasi.{f}" for f in ADMIN_FIELDS]


def true_value(ballot: Ballot, row: int, path: str, seed: int) -> int:
    half, _, rest = path.partition(".")
    if half == "administrasi":
        return int(ballot.admin[rest][row])
    labels = ballot.labels[int(ballot.label_set[row])]
    if half == "chart":
        key, _, part = rest.partition(".")
        column = labels.index(key)
        if part == "jml_suara_partai":
            return int(ballot.votes[row, column])
        if part == "jml_suara_total":
            return int(ballot.votes[row, column] + ballot.caleg_sum[row, column])
        return int(ballot.votes[row, column])
    party, _, cid = rest.partition(".")
    column = labels.index(party)
    slot = ballot.dapils[int(ballot.dapil[row])].caleg[column].index(cid)
    return int(caleg_votes(ballot, np.array([row]), seed)[0, column, slot])


# -- targets ---------------------------------------------------------------------------------------


def target_regions(spec: AnomalySpec, night: Night) -> list[str] | None:
    """The region codes a spec targets, or None for the whole simulated registry."""
    target = spec.target
    if target == "all":
        return None
    if target.startswith("random:"):
        amount, _, level = target[len("random:") :].partition("@")
        if level not in LEVEL_DIGITS or level == "tps":
            raise ValueError(f"anomaly {spec.text!r}: level must be one of {', '.join(LEVELS)}")
        digits = LEVEL_DIGITS[level]
        regions = np.unique(night.registry.region_numbers(digits))
        count = float(amount)
        n = int(count) if count >= 1 else max(1, round(count * len(regions)))
        rng = stream(spec.seed, S_ANOMALY, 99)
        return sorted(f"{r:0{digits}d}" for r in rng.choice(regions, size=min(n, len(regions)), replace=False))
    codes = [c for c in target.split("+") if c]
    for code in codes:
        if not code.isdigit() or len(code) not in (2, 4, 6, 10, 13):
            raise ValueError(f"anomaly {spec.text!r}: {code!r} is not a region code (2, 4, 6, 10 or 13 digits)")
    return codes


def _in_regions(numbers: np.ndarray, regions: list[str] | None) -> np.ndarray:
    """Which TPS (given as integer codes) lie in any of the regions (codes of any level)."""
    if regions is None:
        return np.ones(len(numbers), dtype=bool)
    mask = np.zeros(len(numbers), dtype=bool)
    for digits in sorted({len(r) for r in regions}):
        wanted = [int(r) for r in regions if len(r) == digits]
        mask |= np.isin(numbers // 10 ** (13 - digits), wanted)
    return mask


# -- injection -------------------------------------------------------------------------------------


@dataclass
class Injector:
    night: Night
    truth: list[dict[str, Any]] = field(default_factory=list)
    taken: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.taken = {j: np.zeros(len(b), dtype=bool) for j, b in self.night.ballots.items()}
        self.seed = self.night.config.seed

    def run(self, specs: list[AnomalySpec]) -> list[dict[str, Any]]:
        for spec in specs:
            regions = target_regions(spec, self.night)
            for jenis in spec.jenis:
                if jenis in self.night.ballots:
                    self._inject(spec, jenis, regions)
        return self.truth

    def _inject(self, spec: AnomalySpec, jenis: str, regions: list[str] | None) -> None:
        night = self.night
        ballot = night.ballots[jenis]
        rng = stream(spec.seed, S_ANOMALY, ballot.jidx)
        eligible = _in_regions(night.registry.numbers[ballot.units], regions) & ~self.taken[jenis]
        if spec.name != "duplicate_submission":
            eligible &= night.final[jenis] == FULL
        draw = rng.random(len(ballot))
        rows = np.flatnonzero(eligible & (draw < spec.rate))
        before = len(self.truth)
        handler = getattr(self, "_" + spec.name)
        handler(spec, ballot, rows, rng)
        hit = [r["_row"] for r in self.truth[before:]]
        self.taken[jenis][hit] = True
        if spec.name in REGIONAL:
            self._regional_rows(spec, ballot, np.array(hit, dtype=np.int64), regions)

    def _row(self, spec: AnomalySpec, ballot: Ballot, row: int, detail: dict[str, Any]) -> None:
        self.truth.append({"kode_tps": str(self.night.registry.codes[ballot.units[row]]), "level": "tps",
                           "jenis": ballot.jenis, "anomaly": spec.name, "detail": detail, "seed": spec.seed,
                           "_row": int(row)})  # fmt: skip

    def _override(self, ballot: Ballot, row: int, values: dict[str, int], start: int = -FOREVER, end: int = FOREVER) -> None:
        self.night.overrides.setdefault((ballot.jidx, int(row)), []).append(Override(start, end, values))

    def _add_events(self, received: np.ndarray, doc_time: np.ndarray, jidx: int, rows: np.ndarray, state: np.ndarray) -> None:
        if len(rows):
            self.night.extra_events.append({
                "received": received.astype(np.int64), "doc_time": doc_time.astype(np.int64),
                "jidx": np.full(len(rows), jidx, np.int8), "row": rows.astype(np.int64), "state": state.astype(np.int8),
            })  # fmt: skip

    def _corrections(self, spec: AnomalySpec, ballot: Ballot, rows: np.ndarray, rng: np.random.Generator, default: float):
        share = float(spec.options.get("corrected", default))
        corrected = rng.random(len(rows)) < share
        done = self.night.complete_at[ballot.jenis][rows]
        lag = np.rint(CORRECTION_LAG[0] * np.exp(CORRECTION_LAG[1] * rng.standard_normal(len(rows)))).astype(np.int64)
        return np.where(corrected, done + lag, FOREVER)

    # -- form errors --

    def _ocr_misread(self, spec: AnomalySpec, ballot: Ballot, rows: np.ndarray, rng: np.random.Generator) -> None:
        self._form_error(spec, ballot, rows, rng, 0.5, self._misread_value)

    def _typo(self, spec: AnomalySpec, ballot: Ballot, rows: np.ndarray, rng: np.random.Generator) -> None:
        self._form_error(spec, ballot, rows, rng, 0.2, self._typo_value)

    def _form_error(self, spec, ballot, rows, rng, default_corrected, make) -> None:
        corrected_at = self._corrections(spec, ballot, rows, rng, default_corrected)
        py = random.Random(int(rng.integers(1 << 62)))
        fixes = []
        for row, end in zip(rows.tolist(), corrected_at.tolist()):
            chart, admin = paths(ballot, row, self.seed)
            made = make(spec, ballot, row, chart, admin, py)
            if made is None:
                continue
            path, true, published, kind = made
            self._override(ballot, row, {path: published}, end=end)
            detail = {"field": path, "true": true, "published": published, "kind": kind, "corrected": end != FOREVER}
            if end != FOREVER:
                detail["corrected_at"] = wib_strings(np.array([end]))[0][0]
                fixes.append((row, end))
            self._row(spec, ballot, row, detail)
        if fixes:
            r, t = (np.array(x, dtype=np.int64) for x in zip(*fixes))
            self._add_events(t, t, ballot.jidx, r, np.full(len(r), FULL, np.int8))

    def _misread_value(self, spec, ballot, row, chart, admin, py: random.Random):
        kind = spec.options.get("kind")
        path = py.choice(chart if py.random() < 0.7 else admin)
        true = true_value(ballot, row, path, self.seed)
        published, kind = misread(true, py, kind)
        return path, true, published, kind

    def _typo_value(self, spec, ballot, row, chart, admin, py: random.Random):
        kind = spec.options.get("kind") or ("off_by" if py.random() < 0.6 else "transposition")
        if kind == "off_by":
            path = "administrasi." + py.choice(SUM_FIELDS)
            true = true_value(ballot, row, path, self.seed)
            step = py.randint(1, 10) * py.choice((-1, 1))
            published = true + step if true + step >= 0 else true + abs(step)
            return path, true, published, kind
        for _ in range(20):
            path = py.choice(chart + admin)
            true = true_value(ballot, row, path, self.seed)
            digits = str(true)
            swaps = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1] and not (i == 0 and digits[1] == "0")]
            if swaps:
                i = py.choice(swaps)
                published = int(digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :])
                return path, true, published, "transposition"
        return None

    # -- manipulations of the counts (identities kept) --

    def _favoured(self, spec: AnomalySpec, ballot: Ballot, rows: np.ndarray) -> np.ndarray:
        """The column of the favoured candidate/party in each row."""
        wanted = spec.options.get("candidate")
        out = np.zeros(len(rows), dtype=np.int64)
        for i, row in enumerate(rows.tolist()):
            labels = ballot.labels[int(ballot.label_set[row])]
            if wanted is not None:
                if wanted not in labels:
                    raise ValueError(f"anomaly {spec.text!r}: {wanted!r} is not on the {ballot.jenis} ballot ({', '.join(labels[:6])}...)")
                out[i] = labels.index(wanted)
        if wanted is None and len(rows):
            totals = ballot.votes[rows] + (ballot.caleg_sum[rows] if ballot.party else 0)
            out[:] = int(np.argmax(totals.sum(axis=0)))
        return out

    def _add_voters(self, ballot: Ballot, rows: np.ndarray, added: np.ndarray, rng: np.random.Generator) -> None:
        """Raise the DPT voters (and every total) of ``rows`` by ``added`` ballots."""
        a = ballot.admin
        free_l = a["pemilih_dpt_l"][rows] - a["pengguna_dpt_l"][rows]
        free_p = a["pemilih_dpt_p"][rows] - a["pengguna_dpt_p"][rows]
        male = rng.hypergeometric(free_l, free_p, added)
        for suffix, amount in (("j", added), ("l", male), ("p", added - male)):
            a[f"pengguna_dpt_{suffix}"][rows] += amount
            a[f"pengguna_total_{suffix}"][rows] += amount
        a["suara_total"][rows] += added
        a["suara_sah"][rows] += added

    def _snapshot(self, ballot: Ballot, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"votes": ballot.votes[rows].copy(), "voters": ballot.admin["pengguna_total_j"][rows].copy(),
                "dpt": ballot.admin["pemilih_dpt_j"][rows].copy(), "sah": ballot.admin["suara_sah"][rows].copy()}  # fmt: skip

    def _manipulation_rows(self, spec, ballot, rows, fav, before, extra: dict[str, np.ndarray]) -> None:
        after = self._snapshot(ballot, rows)
        totals = (lambda v, r: v + ballot.caleg_sum[r]) if ballot.party else (lambda v, r: v)
        for i, row in enumerate(rows.tolist()):
            if np.array_equal(before["votes"][i], after["votes"][i]) and before["voters"][i] == after["voters"][i]:
                continue
            labels = ballot.labels[int(ballot.label_set[row])]
            tb, ta = totals(before["votes"][i], row), totals(after["votes"][i], row)
            detail = {
                "candidate": labels[fav[i]],
                "votes_before": int(tb[fav[i]]), "votes_after": int(ta[fav[i]]),
                "share_before": round(float(tb[fav[i]] / max(before["sah"][i], 1)), 4),
                "share_after": round(float(ta[fav[i]] / max(after["sah"][i], 1)), 4),
                "turnout_before": round(float(before["voters"][i] / max(before["dpt"][i], 1)), 4),
                "turnout_after": round(float(after["voters"][i] / max(after["dpt"][i], 1)), 4),
                **{k: int(v[i]) for k, v in extra.items()},
            }  # fmt: skip
            self._row(spec, ballot, row, detail)

    def _stuffing(self, spec, ballot, rows, rng, stuffed: tuple[float, float], shift: tuple[float, float] | None) -> None:
        fav = self._favoured(spec, ballot, rows)
        before = self._snapshot(ballot, rows)
        a = ballot.admin
        nonvoters = a["pemilih_dpt_j"][rows] - a["pengguna_dpt_j"][rows]
        added = rng.binomial(nonvoters, rng.uniform(*_size(spec, "added", stuffed), len(rows)))
        self._add_voters(ballot, rows, added, rng)
        ballot.votes[rows, fav] += added
        moved = np.zeros(len(rows), dtype=np.int64)
        if shift is not None:
            moved = self._shift(ballot, rows, fav, rng.uniform(*_size(spec, "moved", shift), len(rows)), rng)
        self._manipulation_rows(spec, ballot, rows, fav, before, {"added": added, "shifted": moved})

    def _shift(self, ballot: Ballot, rows: np.ndarray, fav: np.ndarray, share: np.ndarray, rng) -> np.ndarray:
        votes = ballot.votes[rows]
        others = np.ones_like(votes, dtype=bool)
        others[np.arange(len(rows)), fav] = False
        moved = rng.binomial(votes * others, share[:, None])
        votes = votes - moved
        votes[np.arange(len(rows)), fav] += moved.sum(axis=1)
        ballot.votes[rows] = votes
        return moved.sum(axis=1)

    def _stuffing_incremental(self, spec, ballot, rows, rng) -> None:
        self._stuffing(spec, ballot, rows, rng, (0.15, 0.6), None)

    def _stuffing_extreme(self, spec, ballot, rows, rng) -> None:
        self._stuffing(spec, ballot, rows, rng, (0.85, 1.0), (0.7, 1.0))

    def _vote_shifting(self, spec, ballot, rows, rng) -> None:
        fav = self._favoured(spec, ballot, rows)
        before = self._snapshot(ballot, rows)
        moved = self._shift(ballot, rows, fav, rng.uniform(*_size(spec, "moved", (0.1, 0.4)), len(rows)), rng)
        self._manipulation_rows(spec, ballot, rows, fav, before, {"shifted": moved})

    def _fabricated(self, spec, ballot, rows, rng) -> None:
        kinds = ("rounded", "favoured_digits", "invented")
        kind = spec.options.get("kind")
        chosen = np.full(len(rows), kinds.index(kind)) if kind else rng.integers(0, 3, len(rows))
        fav = self._favoured(spec, ballot, rows)
        before = self._snapshot(ballot, rows)
        votes = ballot.votes[rows].copy()
        width = votes.shape[1]
        step = np.where(rng.random(len(rows)) < 0.6, 10, 5)[:, None]
        rounded = np.rint(votes / step).astype(np.int64) * step
        digits = rng.choice(10, size=votes.shape, p=FAVOURED_DIGITS)
        favoured = np.where(votes >= 10, votes - votes % 10 + digits, votes)
        near = np.rint(votes * rng.uniform(0.7, 1.3, votes.shape)).astype(np.int64)
        invented = np.where(near >= 10, near - near % 10 + digits, near)
        new = np.select([chosen[:, None] == 0, chosen[:, None] == 1], [rounded, favoured], invented)
        valid_columns = np.array([len(ballot.labels[int(s)]) for s in ballot.label_set[rows]])[:, None] > np.arange(width)
        new = np.where(valid_columns, new, votes)
        delta = new.sum(axis=1) - votes.sum(axis=1)
        a = ballot.admin
        voted_l, voted_p = a["pengguna_dpt_l"][rows], a["pengguna_dpt_p"][rows]
        dl = delta // 2
        dp = delta - dl
        ok = (voted_l + dl >= 0) & (voted_p + dp >= 0) & (voted_l + dl <= a["pemilih_dpt_l"][rows]) & (voted_p + dp <= a["pemilih_dpt_p"][rows])
        ok &= (new != votes).any(axis=1)
        rows, new, delta, dl, dp, fav = rows[ok], new[ok], delta[ok], dl[ok], dp[ok], fav[ok]
        before = {k: v[ok] for k, v in before.items()}
        for suffix, amount in (("j", delta), ("l", dl), ("p", dp)):
            a[f"pengguna_dpt_{suffix}"][rows] += amount
            a[f"pengguna_total_{suffix}"][rows] += amount
        a["suara_total"][rows] += delta
        a["suara_sah"][rows] += delta
        ballot.votes[rows] = new
        self._manipulation_rows(spec, ballot, rows, fav, before, {"kind": chosen[ok]})
        for entry in self.truth:
            if entry["anomaly"] == "fabricated" and isinstance(entry["detail"].get("kind"), int):
                entry["detail"]["kind"] = kinds[entry["detail"]["kind"]]

    def _copied_tally(self, spec, ballot, rows, rng) -> None:
        night = self.night
        jenis = ballot.jenis
        kec = night.registry.numbers[ballot.units] // 10**7
        free = (night.final[jenis] == FULL) & ~self.taken[jenis]
        free[rows] = False
        candidates = np.flatnonzero(free)
        candidates = candidates[np.argsort(kec[candidates], kind="stable")]
        sorted_kec = kec[candidates]
        used: set[int] = set()
        for row in rows.tolist():
            lo, hi = np.searchsorted(sorted_kec, kec[row], "left"), np.searchsorted(sorted_kec, kec[row], "right")
            pool = [s for s in candidates[lo:hi].tolist() if s not in used]
            if not pool:
                continue
            source = pool[int(rng.integers(len(pool)))]
            used.add(source)
            changed = any(ballot.admin[f][row] != ballot.admin[f][source] for f in ADMIN_FIELDS)
            changed |= not np.array_equal(ballot.votes[row], ballot.votes[source])
            if not changed:
                continue
            for f in ADMIN_FIELDS:
                ballot.admin[f][row] = ballot.admin[f][source]
            ballot.votes[row] = ballot.votes[source]
            if ballot.party:
                ballot.caleg_sum[row] = ballot.caleg_sum[source]
                ballot.caleg_key[row] = ballot.caleg_key[source]
            self._row(spec, ballot, row, {"source": str(night.registry.codes[ballot.units[source]])})
        self.taken[jenis][sorted(used)] = True

    def _duplicate_submission(self, spec, ballot, rows, rng) -> None:
        night = self.night
        events = [night.events, *night.extra_events]
        last_received = np.full(len(ballot), -1, dtype=np.int64)
        last_doc = np.zeros(len(ballot), dtype=np.int64)
        last_state = np.zeros(len(ballot), dtype=np.int8)
        for e in events:
            mine = e["jidx"] == ballot.jidx
            r, t = e["row"][mine], e["received"][mine]
            order = np.argsort(t, kind="stable")
            r, t = r[order], t[order]
            later = t >= last_received[r]
            last_received[r[later]] = t[later]
            last_doc[r[later]] = e["doc_time"][mine][order][later]
            last_state[r[later]] = e["state"][mine][order][later]
        rows = rows[last_received[rows] >= 0]
        lag = np.rint(600 * np.exp(rng.standard_normal(len(rows)))).astype(np.int64) + 1
        at = last_received[rows] + lag
        self._add_events(at, last_doc[rows], ballot.jidx, rows, last_state[rows])
        of_iso, at_iso = wib_strings(last_received[rows])[0], wib_strings(at)[0]
        for i, row in enumerate(rows.tolist()):
            state = {CHART: "chart", ADMIN: "administrasi", FULL: "complete"}[int(last_state[i])]
            self._row(spec, ballot, row, {"of": of_iso[i], "at": at_iso[i], "document": state})

    # -- regional truth --

    def _regional_rows(self, spec: AnomalySpec, ballot: Ballot, hit: np.ndarray, regions: list[str] | None) -> None:
        if not len(hit):
            return
        numbers = self.night.registry.numbers[ballot.units]
        targeted = set(regions or [])
        for level in LEVELS:
            digits = LEVEL_DIGITS[level]
            region = numbers // 10 ** (13 - digits)
            all_codes, all_counts = np.unique(region, return_counts=True)
            hit_codes, hit_counts = np.unique(region[hit], return_counts=True)
            totals = all_counts[np.searchsorted(all_codes, hit_codes)]
            for number, n, total in zip(hit_codes.tolist(), hit_counts.tolist(), totals.tolist()):
                code = f"{number:0{digits}d}"
                self.truth.append({"region": code, "level": level, "jenis": ballot.jenis, "anomaly": spec.name,
                                   "detail": {"affected_tps": n, "tps": total, "share": round(n / total, 4),
                                              "targeted": code in targeted, "rate": spec.rate},
                                   "seed": spec.seed})  # fmt: skip


def inject(night: Night, specs: list[AnomalySpec]) -> list[dict[str, Any]]:
    """Apply the anomalies to the night (numbers, overrides, extra events); return the truth rows."""
    rows = Injector(night).run(specs)
    for row in rows:
        row.pop("_row", None)
    return rows
