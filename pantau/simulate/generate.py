"""Generate a clean synthetic election night, columnar and vectorised, and write it as envelopes.

A night is built in three steps:

1. **Numbers** (:func:`build_night`): for every kabupaten/kota of the registry, at once for all its TPS:
   DPT size, gender split, latent shares/turnout/invalid rate (kabupaten/kota mean + kecamatan +
   kelurahan + TPS effects), then counts drawn from them, so every form identity holds. The four
   legislative ballots reuse the voters of the PPWP form and draw their own invalid votes and party or
   candidate votes; party ballots keep per party the votes for the party and for its candidates, and
   split the candidates' votes among the caleg of the dapil when the document is written.
2. **Timeline**: the first upload of each TPS follows the real 2024 arrival curve; each ballot type
   comes some hours after PPWP; half of the forms arrive with one half only (chart or administrasi),
   the other half later (or, as in 2024, never); some are republished unchanged later. ``ts`` is the
   latest publication batch at the time.
3. **Writing** (:func:`write_night`): events in receipt order, one envelope per line (orjson).

Randomness comes from keyed streams (:func:`pantau.simulate.model.stream`): a kabupaten/kota gets the
same numbers whether the whole country or only its province is simulated, and anomalies
(:mod:`pantau.simulate.anomalies`) draw from their own streams, so the clean night under them is the
same night. Same seed, same bytes.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from pantau.schemas import ADMIN_FIELDS, JENIS, PARTY_BALLOTS

from .model import (
    LATENT,
    LOG_DPTB,
    LOG_NONDPT,
    MEAN_DIM,
    Params,
    alr_shares,
    expit,
    from_quantiles,
    multinomial,
    negbin,
    normal,
    parse_wib,
    stream,
    wib_strings,
)
from .registry import Registry

# Stream purposes (the first element of every stream key).
S_PROVINCE, S_KABMEAN, S_PPWP, S_BALLOT, S_PARTY_REGION, S_DAPIL, S_DPD, S_TIME, S_BATCH = range(1, 10)
#: Envelope states: which halves of the form a document carries.
CHART, ADMIN, FULL = 1, 2, 3
#: The order of the administrasi keys in real documents.
ADMIN_ORDER = (
    "suara_sah", "suara_total", "pemilih_dpt_j", "pemilih_dpt_l", "pemilih_dpt_p",
    "pengguna_dpt_j", "pengguna_dpt_l", "pengguna_dpt_p", "pengguna_dptb_j", "pengguna_dptb_l",
    "pengguna_dptb_p", "suara_tidak_sah", "pengguna_total_j", "pengguna_total_l", "pengguna_total_p",
    "pengguna_non_dpt_j", "pengguna_non_dpt_l", "pengguna_non_dpt_p",
)  # fmt: skip
assert sorted(ADMIN_ORDER) == sorted(ADMIN_FIELDS)
MODE_FROM = parse_wib("2024-02-16T00:00")
DOMESTIC_CAP = 80  # DPTb or non-DPT voters of one domestic TPS (keeps every count under 500)
OVERSEAS_CAP = 9_500
IMAGE_HOST = "https://sirekap-obj-formc.kpu.go.id"
ALL_PARTIES = tuple(str(i) for i in range(1, 25))
#: Degrees of freedom of the kelurahan effects (multivariate t): enclaves that vote unlike their kecamatan.
KELURAHAN_DF = 4.0


@dataclass
class Config:
    seed: int = 1
    jenis: tuple[str, ...] = ("ppwp",)
    #: Every TPS ends with both halves (no TPS stays half-digitised).
    complete: bool = False
    images: bool = True


@dataclass
class Dapil:
    """An electoral district of a party ballot: its caleg per party and their base weights."""

    key: str
    seats: int
    caleg: list[list[str]]  # per party column: caleg ids
    weights: np.ndarray  # (all parties, max seats), zero beyond the dapil's parties and ``seats``


@dataclass
class Ballot:
    """The true numbers of one ballot type for every TPS that has it (columnar)."""

    jenis: str
    jidx: int
    units: np.ndarray  # registry index of each TPS
    admin: dict[str, np.ndarray]
    votes: np.ndarray  # (n, columns): candidate votes, or (party ballots) the votes for the party itself
    labels: list[tuple[str, ...]]  # chart keys of each label set
    label_set: np.ndarray  # (n,) index into ``labels``
    caleg_sum: np.ndarray | None = None  # (n, columns): party ballots, votes for the party's caleg
    dapils: list[Dapil] = field(default_factory=list)
    dapil: np.ndarray | None = None  # (n,) index into ``dapils``
    caleg_key: np.ndarray | None = None  # (n,) uint64: whose caleg split a TPS shows (a copy shows its source's)
    _weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def party(self) -> bool:
        return self.jenis in PARTY_BALLOTS

    def dapil_weights(self) -> np.ndarray:
        """(dapils, all parties, max seats) base weights of the caleg."""
        if self._weights is None or len(self._weights) != len(self.dapils):
            self._weights = np.stack([d.weights for d in self.dapils])
        return self._weights

    def __len__(self) -> int:
        return len(self.units)


@dataclass
class Override:
    """Published values that differ from the truth, for documents dated in ``[start, end)``."""

    start: int
    end: int
    values: dict[str, int]


@dataclass
class Night:
    """A simulated night: registry, true numbers per ballot, the events, and what anomalies changed."""

    params: Params
    registry: Registry
    config: Config
    ballots: dict[str, Ballot]
    #: Columns of the events: receipt time, document time, ballot index, unit row, state.
    events: dict[str, np.ndarray]
    #: Per (ballot index, unit row): final state and time of the first complete document (or -1).
    final: dict[str, np.ndarray]
    complete_at: dict[str, np.ndarray]
    upload: dict[str, np.ndarray]
    overrides: dict[tuple[int, int], list[Override]] = field(default_factory=dict)
    extra_events: list[dict[str, np.ndarray]] = field(default_factory=list)

    def kode(self, jenis: str, row: int) -> str:
        return str(self.registry.codes[self.ballots[jenis].units[row]])


# -- regional means --------------------------------------------------------------------------------


def province_mean(params: Params, seed: int, provinsi: str) -> np.ndarray:
    fitted = params.province(provinsi)
    if fitted is not None:
        return np.asarray(fitted["mean"], dtype=float)
    national = params.national
    rng = stream(seed, S_PROVINCE, int(provinsi))
    return np.asarray(national["mean"], dtype=float) + normal(rng, national["cov"], 1)[0]


def kabkota_mean(params: Params, seed: int, kabkota: str) -> np.ndarray:
    fitted = params.kabkota(kabkota)
    if fitted is not None:
        return np.asarray(fitted["mean"], dtype=float)
    base = province_mean(params, seed, kabkota[:2])
    rng = stream(seed, S_KABMEAN, int(kabkota))
    return base + normal(rng, params.group(kabkota[:2])["cov"]["kabkota"], 1)[0]


def _effects(rng: np.random.Generator, cov: list, codes: np.ndarray, digits: int, df: float | None = None) -> np.ndarray:
    """One effect per region (of ``digits``) of each TPS: normal, or multivariate t with ``df`` degrees
    of freedom (same covariance, heavier tails: a few villages vote very unlike their neighbours)."""
    _, index = np.unique(codes.astype(f"U{digits}"), return_inverse=True)
    k = int(index.max()) + 1
    draws = normal(rng, cov, k)
    if df:
        draws *= np.sqrt((df - 2) / rng.chisquare(df, k))[:, None]
    return draws[index]


# -- the PPWP form and the voters ------------------------------------------------------------------


def _ppwp_kabkota(params: Params, seed: int, kab: str, codes: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Administrasi and PPWP votes of the TPS of one kabupaten/kota, and their invalid-vote latent."""
    n = len(codes)
    prov = kab[:2]
    group = params.group(prov)
    overseas = prov == "99"
    rng = stream(seed, S_PPWP, int(kab))
    fitted = params.kabkota(kab) or {}
    profiles = group.get("profiles") if overseas else None
    if profiles:
        # Overseas: each TPS takes the profile of one fitted 2024 overseas unit (POS, KSK, TPS abroad).
        weights = np.array([p["n"] for p in profiles], dtype=float)
        profile = rng.choice(len(profiles), size=n, p=weights / weights.sum())
        mean = np.array([p["mean"] for p in profiles])[profile]
        dpt_u = rng.random(n)
        dpt = np.empty(n)
        for j in np.unique(profile):
            rows = profile == j
            dpt[rows] = from_quantiles(profiles[j].get("dpt_quantiles") or group["dpt_quantiles"], dpt_u[rows])
    else:
        mean = np.broadcast_to(kabkota_mean(params, seed, kab), (n, MEAN_DIM))
        quantiles = fitted.get("dpt_quantiles") or (params.province(prov) or group)["dpt_quantiles"]
        dpt = from_quantiles(quantiles, rng.random(n))
    cov = (params.province(prov) or {}).get("cov") or group["cov"]
    # Kecamatan and kelurahan effects are centred on the kabupaten/kota: it keeps its fitted level.
    regional = _effects(rng, cov["kecamatan"], codes, 6) + _effects(rng, cov["kelurahan"], codes, 10, KELURAHAN_DF)
    z = mean[:, :LATENT] + regional - regional.mean(axis=0) + normal(rng, cov["tps"], n)
    dpt = np.clip(np.rint(dpt), 1, group["dpt_max"]).astype(np.int64)
    province = params.province(prov) or {}
    m = from_quantiles(province.get("male_share_quantiles") or group["male_share"]["quantiles"], rng.random(n))
    dpt_l = np.clip(np.rint(dpt * m), 0, dpt).astype(np.int64)
    dpt_p = dpt - dpt_l

    point = group.get("turnout_point_mass", {})
    u = rng.random(n)
    everyone = u < point.get("all_dpt_voted", 0.0)
    nobody = ~everyone & (u < point.get("all_dpt_voted", 0.0) + point.get("no_dpt_voter", 0.0))
    voted = np.where(everyone, dpt, np.where(nobody, 0, rng.binomial(dpt, expit(z[:, 2]))))
    voted_l = rng.hypergeometric(dpt_l, dpt_p, voted)
    k = province.get("negbin_k") or group["negbin_k"]
    dptb = negbin(rng, dpt * np.exp(mean[:, LOG_DPTB]), k["dptb"])
    nondpt = negbin(rng, dpt * np.exp(mean[:, LOG_NONDPT]), k["nondpt"])
    if overseas:
        dptb = np.minimum(dptb, OVERSEAS_CAP // 4)
        nondpt = np.minimum(nondpt, np.maximum(OVERSEAS_CAP - voted - dptb, 0))
    else:
        dptb, nondpt = np.minimum(dptb, DOMESTIC_CAP), np.minimum(nondpt, DOMESTIC_CAP)
    dptb_l = rng.binomial(dptb, group["male_share_dptb"])
    nondpt_l = rng.binomial(nondpt, group["male_share_nondpt"])
    total_j = voted + dptb + nondpt
    total_l = voted_l + dptb_l + nondpt_l

    short_p = group["ballots_short"]
    short = np.where(rng.random(n) < short_p["p"], np.maximum(np.rint(from_quantiles(short_p["quantiles"], rng.random(n))), 1), 0)
    suara_total = total_j - np.minimum(short.astype(np.int64), total_j)
    invalid_latent = z[:, 3]
    tidak_sah = rng.binomial(suara_total, expit(invalid_latent))
    sah = suara_total - tidak_sah
    votes = multinomial(rng, sah, alr_shares(z[:, 0], z[:, 1]))

    admin = {
        "pemilih_dpt_j": dpt, "pemilih_dpt_l": dpt_l, "pemilih_dpt_p": dpt_p,
        "pengguna_dpt_j": voted, "pengguna_dpt_l": voted_l, "pengguna_dpt_p": voted - voted_l,
        "pengguna_dptb_j": dptb, "pengguna_dptb_l": dptb_l, "pengguna_dptb_p": dptb - dptb_l,
        "pengguna_non_dpt_j": nondpt, "pengguna_non_dpt_l": nondpt_l, "pengguna_non_dpt_p": nondpt - nondpt_l,
        "pengguna_total_j": total_j, "pengguna_total_l": total_l, "pengguna_total_p": total_j - total_l,
        "suara_sah": sah, "suara_tidak_sah": tidak_sah, "suara_total": suara_total,
    }  # fmt: skip
    return admin, votes, invalid_latent


# -- legislative ballots ---------------------------------------------------------------------------


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ballot_types(provinsi: str, jenis: tuple[str, ...], params: Params) -> tuple[str, ...]:
    """The ballot types a TPS of this province has (overseas: PPWP and DPR; Jakarta: no DPRD kab/kota)."""
    leg = params.legislative
    if provinsi == "99":
        return tuple(j for j in jenis if j in leg["overseas_ballots"])
    if provinsi in leg["no_pdprdk_provinces"]:
        return tuple(j for j in jenis if j != "pdprdk")
    return jenis


def _party_columns(jenis: str, provinsi: str, params: Params) -> tuple[str, ...]:
    parties = list(params.legislative["parties"])
    if provinsi == "11" and jenis in ("pdprdp", "pdprdk"):
        parties += list(params.legislative["aceh_parties"])
    return tuple(sorted(parties, key=int))


def _party_shares(params: Params, seed: int, jenis: str, jidx: int, kab: str, codes: np.ndarray,
                  rng: np.random.Generator) -> tuple[tuple[str, ...], np.ndarray]:  # fmt: skip
    leg = params.legislative
    columns = _party_columns(jenis, kab[:2], params)
    national = {**leg["parties"], **leg["aceh_parties"]}
    index = [ALL_PARTIES.index(p) for p in columns]
    sd = leg["party_logit_sd"]
    base = np.log(np.array([national[p] for p in ALL_PARTIES]) / 100.0)
    prov_effect = stream(seed, S_PARTY_REGION, int(kab[:2])).normal(0.0, sd["provinsi"], len(ALL_PARTIES))
    kab_rng = stream(seed, S_PARTY_REGION, int(kab))
    kab_effect = kab_rng.normal(0.0, sd["kabkota"], len(ALL_PARTIES))
    _, kec = np.unique(codes.astype("U6"), return_inverse=True)
    kec_effect = kab_rng.normal(0.0, sd["kecamatan"], (int(kec.max()) + 1, len(ALL_PARTIES)))[kec]
    logits = (base + prov_effect + kab_effect + kec_effect)[:, index]
    logits = logits + rng.normal(0.0, sd["tps"], logits.shape)
    return columns, _softmax(logits)


def dapil_key(jenis: str, code: str, params: Params) -> str:
    """The (synthetic) electoral district of a TPS for a party ballot: groups of kab/kota or kecamatan."""
    group = params.legislative["dapil_group"][jenis]
    if jenis == "pdprdk":
        return f"{code[:4]}{int(code[4:6]) // group:02d}"
    return f"{code[:2]}{int(code[2:4]) // group:02d}"


def _dapil(params: Params, seed: int, jenis: str, jidx: int, key: str, columns: tuple[str, ...]) -> Dapil:
    leg = params.legislative
    rng = stream(seed, S_DAPIL, jidx, int(key))
    low, high = leg["seats"][jenis]
    seats = int(rng.integers(low, high + 1))
    weights = np.zeros((len(ALL_PARTIES), high))
    weights[: len(columns), :seats] = rng.dirichlet(np.full(seats, leg["caleg_concentration"]), len(columns))
    weights[: len(columns), 0] += 0.15  # list number 1 draws more votes
    caleg = [[f"{jidx}{key}{int(p):02d}{s + 1:02d}" for s in range(seats)] for p in columns]
    return Dapil(key, seats, caleg, weights)


def _dpd_candidates(params: Params, seed: int, provinsi: str) -> tuple[tuple[str, ...], np.ndarray]:
    leg = params.legislative
    rng = stream(seed, S_DPD, int(provinsi))
    low, high = leg["dpd_candidates"]
    n = int(rng.integers(low, high + 1))
    ids = tuple(f"9{provinsi}{i + 1:03d}" for i in range(n))
    return ids, rng.dirichlet(np.full(n, leg["dpd_concentration"]))


# -- the timeline ----------------------------------------------------------------------------------


def arrival_curve(params: Params) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin starts (epoch s), widths (s) and cumulative probabilities of the first-upload curve."""
    a = params.timeline["arrivals"]
    minute0, hour0 = parse_wib(a["minute_start"]), parse_wib(a["hour_start"])
    starts = np.concatenate([minute0 + 60 * np.arange(len(a["per_minute"])), hour0 + 3600 * np.arange(len(a["per_hour"]))])
    widths = np.concatenate([np.full(len(a["per_minute"]), 60), np.full(len(a["per_hour"]), 3600)])
    counts = np.asarray(a["per_minute"] + a["per_hour"], dtype=float)
    return starts, widths, np.cumsum(counts) / counts.sum()


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


def _timeline(params: Params, seed: int, kab: str, jidx: int, jenis: str, upload_ppwp: np.ndarray, complete: bool):
    """Per TPS: upload time, first receipt and its state, second receipt (or -1), republication (or -1)."""
    n = len(upload_ppwp)
    t = params.timeline
    leg = params.legislative
    rng = stream(seed, S_TIME, jidx + 1, int(kab))
    lag_hours = leg["upload_lag_hours"][jenis]
    upload = upload_ppwp + (np.rint(_lognormal(rng, lag_hours * 3600, leg["upload_lag_sigma"], n)).astype(np.int64) if lag_hours else 0)
    receipt = t["upload_to_receipt_seconds"]
    first = upload + np.rint(_lognormal(rng, receipt["median"], receipt["sigma"], n)).astype(np.int64)
    halves = t["halves"]
    partial = rng.random(n) < halves["first_partial"]
    chart_first = rng.random(n) < halves["first_chart_given_partial"]
    state = np.where(partial, np.where(chart_first, CHART, ADMIN), FULL).astype(np.int8)
    p_never_chart = halves["final_chart_only"] / (halves["first_partial"] * halves["first_chart_given_partial"])
    p_never_admin = halves["final_admin_only"] / (halves["first_partial"] * (1 - halves["first_chart_given_partial"]))
    never = rng.random(n) < np.where(state == CHART, p_never_chart, p_never_admin)
    if complete:
        never[:] = False
    lag = halves["second_lag_hours"]
    second = first + np.rint(_lognormal(rng, lag["median"] * 3600, lag["sigma"], n)).astype(np.int64)
    second = np.where(partial & ~never, second, -1)
    final = np.where(partial & never, state, FULL).astype(np.int8)
    rep = t["republish"]
    last = np.maximum(first, second)
    republish = last + np.rint(_lognormal(rng, rep["lag_hours"]["median"] * 3600, rep["lag_hours"]["sigma"], n)).astype(np.int64)
    republish = np.where(rng.random(n) < rep["rate"], republish, -1)
    complete_at = np.where(state == FULL, first, second)
    return upload, first, state, second, republish, final, complete_at


def batch_times(params: Params, seed: int, start: int, end: int) -> np.ndarray:
    """Publication batch times (epoch s) covering ``[start, end]``: Sirekap's ``ts`` rhythm."""
    b = params.timeline["batches"]
    rng = stream(seed, S_BATCH)
    gaps = np.maximum(from_quantiles(b["gap_minutes_quantiles"], rng.random(4096)), 1.0) * 60
    times = [start - start % 3600]
    i = 0
    while times[-1] <= end:
        times.append(times[-1] + gaps[i % len(gaps)])
        i += 1
    offsets = from_quantiles(b["second_offsets"], rng.random(len(times)))
    minute = (np.asarray(times) // 60) * 60
    return (minute + np.rint(offsets)).astype(np.int64)


# -- building a night ------------------------------------------------------------------------------


def _kabkota_slices(codes: np.ndarray) -> list[tuple[str, slice]]:
    kab = codes.astype("U4")
    keys, starts = np.unique(kab, return_index=True)
    ends = list(starts[1:]) + [len(codes)]
    return [(str(k), slice(int(s), int(e))) for k, s, e in zip(keys, starts, ends)]


def build_night(params: Params, registry: Registry, config: Config) -> Night:
    """The clean night: true numbers and the timeline of every TPS and ballot type."""
    jenis_all = tuple(j for j in JENIS if j in config.jenis)
    seed = config.seed
    starts, widths, cdf = arrival_curve(params)
    upload_ppwp = np.zeros(len(registry), dtype=np.int64)
    parts: dict[str, dict[str, list]] = {j: {"units": [], "admin": [], "votes": [], "label_set": [], "caleg_sum": [], "dapil": []}
                                         for j in jenis_all}  # fmt: skip
    labels: dict[str, dict[tuple[str, ...], int]] = {j: {} for j in jenis_all}
    dapils: dict[str, dict[str, int]] = {j: {} for j in jenis_all}
    dapil_list: dict[str, list[Dapil]] = {j: [] for j in jenis_all}
    timeline: dict[str, list[tuple]] = {j: [] for j in jenis_all}
    for kab, part in _kabkota_slices(registry.codes):
        codes = registry.codes[part]
        admin, votes, inv = _ppwp_kabkota(params, seed, kab, codes)
        rng = stream(seed, S_TIME, 0, int(kab))
        u = rng.random(len(codes))
        b = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
        upload_ppwp[part] = starts[b] + (rng.random(len(codes)) * widths[b]).astype(np.int64)
        units = np.arange(part.start, part.stop)
        for jenis in ballot_types(kab[:2], jenis_all, params):
            jidx = JENIS.index(jenis)
            acc = parts[jenis]
            acc["units"].append(units)
            timeline[jenis].append(_timeline(params, seed, kab, jidx, jenis, upload_ppwp[part], config.complete))
            if jenis == "ppwp":
                acc["admin"].append({f: v.astype(np.int32) for f, v in admin.items()})
                acc["votes"].append(votes.astype(np.int32))
                acc["label_set"].append(np.zeros(len(codes), dtype=np.int32))
                labels[jenis].setdefault(tuple(params.raw["candidates"]), 0)
                continue
            _legislative_kabkota(params, seed, jenis, jidx, kab, codes, admin, inv, acc, labels[jenis], dapils[jenis], dapil_list[jenis])

    ballots: dict[str, Ballot] = {}
    events: list[dict[str, np.ndarray]] = []
    final: dict[str, np.ndarray] = {}
    complete_at: dict[str, np.ndarray] = {}
    upload: dict[str, np.ndarray] = {}
    for jenis in jenis_all:
        acc = parts[jenis]
        if not acc["units"]:
            continue
        jidx = JENIS.index(jenis)
        width = max(v.shape[1] for v in acc["votes"])
        votes = np.concatenate([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in acc["votes"]])
        ballot = Ballot(
            jenis=jenis, jidx=jidx, units=np.concatenate(acc["units"]),
            admin={f: np.concatenate([a[f] for a in acc["admin"]]) for f in ADMIN_FIELDS},
            votes=votes, labels=sorted(labels[jenis], key=labels[jenis].get), label_set=np.concatenate(acc["label_set"]),
        )  # fmt: skip
        if ballot.party:
            ballot.caleg_sum = np.concatenate([np.pad(v, ((0, 0), (0, width - v.shape[1]))) for v in acc["caleg_sum"]])
            ballot.dapils = dapil_list[jenis]
            ballot.dapil = np.concatenate(acc["dapil"])
            ballot.caleg_key = registry.codes[ballot.units].astype(np.int64).astype(np.uint64)
        ballots[jenis] = ballot
        up, first, state, second, republish, fin, done = (np.concatenate(c) for c in zip(*timeline[jenis]))
        final[jenis], complete_at[jenis], upload[jenis] = fin, done, up
        rows = np.arange(len(ballot), dtype=np.int64)
        events.append(_events(first, first, jidx, rows, state))
        has = second >= 0
        events.append(_events(second[has], second[has], jidx, rows[has], np.full(int(has.sum()), FULL, np.int8)))
        has = republish >= 0
        events.append(_events(republish[has], republish[has], jidx, rows[has], fin[has]))
    merged = {k: np.concatenate([e[k] for e in events]) for k in events[0]} if events else {}
    return Night(params, registry, config, ballots, merged, final, complete_at, upload)


def _events(received: np.ndarray, doc_time: np.ndarray, jidx: int, rows: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
    return {"received": received.astype(np.int64), "doc_time": doc_time.astype(np.int64),
            "jidx": np.full(len(rows), jidx, np.int8), "row": rows.astype(np.int64), "state": state.astype(np.int8)}  # fmt: skip


def _legislative_kabkota(params: Params, seed: int, jenis: str, jidx: int, kab: str, codes: np.ndarray,
                         admin: dict[str, np.ndarray], inv: np.ndarray, acc: dict[str, list],
                         labels: dict[tuple[str, ...], int], dapil_index: dict[str, int], dapil_list: list[Dapil]) -> None:  # fmt: skip
    n = len(codes)
    leg = params.legislative
    rng = stream(seed, S_BALLOT, jidx, int(kab))
    mine = {f: admin[f] for f in ADMIN_FIELDS}
    q = expit(inv + math.log(leg["invalid_multiplier"][jenis]))
    mine["suara_tidak_sah"] = rng.binomial(admin["suara_total"], np.minimum(q, 0.6))
    mine["suara_sah"] = admin["suara_total"] - mine["suara_tidak_sah"]
    acc["admin"].append({f: v.astype(np.int32) for f, v in mine.items()})
    if jenis == "pdpd":
        ids, weights = _dpd_candidates(params, seed, kab[:2])
        kab_noise = stream(seed, S_PARTY_REGION, int(kab), jidx).normal(0.0, 0.35, len(ids))
        logits = np.log(weights) + kab_noise + rng.normal(0.0, 0.35, (n, len(ids)))
        acc["votes"].append(multinomial(rng, mine["suara_sah"], _softmax(logits)).astype(np.int32))
        acc["label_set"].append(np.full(n, labels.setdefault(ids, len(labels)), dtype=np.int32))
        return
    columns, shares = _party_shares(params, seed, jenis, jidx, kab, codes, rng)
    totals = multinomial(rng, mine["suara_sah"], shares)
    share = leg["partai_share"]
    a, b = share["mean"] * share["concentration"], (1 - share["mean"]) * share["concentration"]
    partai = rng.binomial(totals, rng.beta(a, b, totals.shape))
    acc["votes"].append(partai.astype(np.int32))
    acc["caleg_sum"].append((totals - partai).astype(np.int32))
    acc["label_set"].append(np.full(n, labels.setdefault(columns, len(labels)), dtype=np.int32))
    keys = np.array([dapil_key(jenis, str(c), params) for c in np.unique(codes.astype("U6"))])
    kec_codes, kec_index = np.unique(codes.astype("U6"), return_inverse=True)
    rows = np.empty(len(kec_codes), dtype=np.int32)
    for i, key in enumerate(keys):
        if key not in dapil_index:
            dapil_index[key] = len(dapil_list)
            dapil_list.append(_dapil(params, seed, jenis, jidx, key, columns))
        rows[i] = dapil_index[key]
    acc["dapil"].append(rows[kec_index])


# -- caleg split (at write time) -------------------------------------------------------------------

_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03), np.uint64(0x8CB92BA72F3D8DD7)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, element-wise on uint64 arrays (counter-based randomness)."""
    x = x + _K1
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def caleg_votes(ballot: Ballot, rows: np.ndarray, seed: int) -> np.ndarray:
    """Votes of each caleg (rows, parties, max seats): the caleg votes of each party split among the
    dapil's caleg around their base weights. A pure function of the TPS (its ``caleg_key``) and its
    party's caleg votes, so every document of a TPS shows the same split, in any order."""
    assert ballot.caleg_sum is not None and ballot.dapil is not None and ballot.caleg_key is not None
    with np.errstate(over="ignore"):
        keys = mix(ballot.caleg_key[rows] ^ mix(np.uint64(seed * 1_000_003 + ballot.jidx) + np.zeros(1, np.uint64)))
        weights = ballot.dapil_weights()[ballot.dapil[rows]][:, : ballot.caleg_sum.shape[1]]
        parties, seats = weights.shape[1], weights.shape[2]
        counter = keys[:, None, None] * _K2 + np.arange(parties, dtype=np.uint64)[None, :, None] * _K3 + np.arange(seats, dtype=np.uint64)[None, None, :]
        u = (mix(counter) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    w = weights * -np.log1p(-u)
    total = w.sum(axis=2, keepdims=True)
    share = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    want = ballot.caleg_sum[rows][:, :parties, None] * share
    base = np.floor(want).astype(np.int64)
    left = ballot.caleg_sum[rows][:, :parties] - base.sum(axis=2)
    rank = np.argsort(np.argsort(-(want - base), axis=2, kind="stable"), axis=2, kind="stable")
    return base + (rank < left[:, :, None])


# -- writing ---------------------------------------------------------------------------------------


def _apply(values: dict[str, int], chart: dict | None, caleg: dict | None, admin: dict | None) -> None:
    for path, value in values.items():
        half, _, rest = path.partition(".")
        if half == "administrasi":
            if admin is not None:
                admin[rest] = value
        elif half == "chart":
            if chart is not None:
                key, _, part = rest.partition(".")
                if part:
                    chart[key][part] = value
                else:
                    chart[key] = value
        elif half == "caleg" and caleg is not None:
            party, _, cid = rest.partition(".")
            caleg[party][cid] = value


def all_events(night: Night) -> dict[str, np.ndarray]:
    """Every event (clean and added by anomalies) in receipt order (ties: ballot type, TPS, time)."""
    events = [night.events, *night.extra_events]
    merged = {k: np.concatenate([e[k] for e in events]) for k in night.events}
    order = np.lexsort((merged["doc_time"], merged["row"], merged["jidx"], merged["received"]))
    return {k: v[order] for k, v in merged.items()}


def envelopes(night: Night, chunk: int = 32_768) -> Iterator[bytes]:
    """The night's envelopes, one JSON line each, in receipt order."""
    events = all_events(night)
    if not len(events.get("received", ())):
        return
    seed = night.config.seed
    batches = batch_times(night.params, seed, int(events["doc_time"].min()), int(events["received"].max()))
    jenis_of = {b.jidx: b for b in night.ballots.values()}
    for start in range(0, len(events["received"]), chunk):
        part = {k: v[start : start + chunk] for k, v in events.items()}
        yield b"".join(_chunk_lines(night, jenis_of, part, batches, seed))


def _chunk_lines(night: Night, ballots: dict[int, Ballot], part: dict[str, np.ndarray], batches: np.ndarray, seed: int) -> Iterator[bytes]:
    received_iso, _ = wib_strings(part["received"])
    batch = batches[np.maximum(np.searchsorted(batches, part["doc_time"], side="right") - 1, 0)]
    _, ts_text = wib_strings(batch)
    codes = night.registry.codes
    per_ballot: dict[int, dict[str, Any]] = {}
    position = np.zeros(len(part["jidx"]), dtype=np.int64)
    for jidx, ballot in ballots.items():
        mask = part["jidx"] == jidx
        if not mask.any():
            continue
        position[mask] = np.arange(int(mask.sum()))
        rows = part["row"][mask]
        data: dict[str, Any] = {
            "admin": [ballot.admin[f][rows].tolist() for f in ADMIN_ORDER],
            "votes": ballot.votes[rows].tolist(),
            "label_set": ballot.label_set[rows].tolist(),
            "kode": codes[ballot.units[rows]].tolist(),
        }
        if ballot.party:
            data["totals"] = (ballot.votes[rows] + ballot.caleg_sum[rows]).tolist()
            data["caleg"] = caleg_votes(ballot, rows, seed).tolist()
            data["dapil"] = ballot.dapil[rows].tolist()
        if night.config.images:
            data["images"] = _images(ballot, rows, night.upload[ballot.jenis][rows], codes[ballot.units[rows]], seed)
        per_ballot[jidx] = data
    overrides = night.overrides
    jidx_list, row_list, state_list, doc_list = (part[k].tolist() for k in ("jidx", "row", "state", "doc_time"))
    for i, (jidx, row, state, n) in enumerate(zip(jidx_list, row_list, state_list, position.tolist())):
        ballot = ballots[jidx]
        data = per_ballot[jidx]
        chart = caleg = admin = None
        if state & CHART:
            labels = ballot.labels[data["label_set"][n]]
            if ballot.party:
                totals, partai, split = data["totals"][n], data["votes"][n], data["caleg"][n]
                dapil = ballot.dapils[data["dapil"][n]]
                chart = {"null": None}
                caleg = {}
                for c, party in enumerate(labels):
                    chart[party] = {"jml_suara_total": totals[c], "jml_suara_partai": partai[c]}
                    caleg[party] = dict(zip(dapil.caleg[c], split[c][: dapil.seats]))
            else:
                chart = {"null": None, **dict(zip(labels, data["votes"][n]))}
        if state & ADMIN:
            admin = dict(zip(ADMIN_ORDER, (column[n] for column in data["admin"])))
        if overrides:
            changes = overrides.get((jidx, row))
            if changes:
                t = doc_list[i]
                for change in changes:
                    if change.start <= t < change.end:
                        _apply(change.values, chart, caleg, admin)
        doc: dict[str, Any] = {}
        if doc_list[i] >= MODE_FROM:
            doc["mode"] = "hhcw"
        doc["chart"] = chart
        if caleg is not None:
            doc["caleg"] = caleg
        if "images" in data:
            doc["images"] = data["images"][n]
        doc["administrasi"] = admin
        doc["psu"] = None
        doc["ts"] = ts_text[i]
        doc["status_suara"] = chart is not None
        doc["status_adm"] = admin is not None
        yield orjson.dumps({"kode_tps": data["kode"][n], "jenis": ballot.jenis, "doc": doc, "received_at": received_iso[i]}) + b"\n"


def _images(ballot: Ballot, rows: np.ndarray, upload: np.ndarray, kode: np.ndarray, seed: int) -> list[list[str]]:
    """Three photo URLs per TPS, named like Sirekap's: ``{kode}-{YYYYMMDD}-{HHMMSS}--{uuid}.jpg``."""
    n = len(rows)
    stamps = image_stamps(np.concatenate([upload, upload + 2, upload + 5]))
    with np.errstate(over="ignore"):
        key = mix(kode.astype(np.int64).astype(np.uint64) * _K2 + np.uint64(seed * 7 + ballot.jidx))
        ids = np.stack([mix(key + np.uint64(page)) for page in range(1, 7)], axis=1)  # (n, 6): 2 per page
    hexes = ids.astype(">u8").tobytes().hex()  # 96 hex digits per TPS, 32 per page
    bucket = (key >> np.uint64(48)).tolist()
    out = []
    jenis = ballot.jenis
    for i, code in enumerate(kode.tolist()):
        path = f"{IMAGE_HOST}/{bucket[i]:04x}/pemilu/{jenis}/{code[0:2]}/{code[2:4]}/{code[4:6]}/{code[6:8]}/{code[8:10]}/{code}"
        h = hexes[96 * i : 96 * i + 96]
        out.append([
            f"{path}-{stamps[page * n + i]}--{h[o:o + 8]}-{h[o + 8:o + 12]}-{h[o + 12:o + 16]}-{h[o + 16:o + 20]}-{h[o + 20:o + 32]}.jpg"
            for page, o in ((0, 0), (1, 32), (2, 64))
        ])  # fmt: skip
    return out


def image_stamps(seconds: np.ndarray) -> list[str]:
    """``YYYYMMDD-HHMMSS`` (WIB) of epoch seconds, as in Sirekap's image names."""
    local = np.asarray(seconds, dtype=np.int64) + 7 * 3600
    days = (local // 86400).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    ymd = (months.astype("datetime64[Y]").astype(np.int64) + 1970) * 10_000 + (months.astype(np.int64) % 12 + 1) * 100
    ymd += (days - months).astype(np.int64) + 1
    second = local % 86400
    hms = (second // 3600) * 10_000 + (second // 60 % 60) * 100 + second % 60
    return [f"{a}-{b:06d}" for a, b in zip(ymd.tolist(), hms.tolist())]


def open_output(path: str | Path) -> BinaryIO:
    """A binary file for writing; ``.gz`` is gzip (level 1, no timestamp: identical bytes per seed)."""
    path = Path(path)
    if path.name.endswith(".gz"):
        raw = open(path, "wb")  # noqa: SIM115 - closed by write_night with the gzip stream
        return gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)  # type: ignore[return-value]
    return open(path, "wb", buffering=1 << 20)


def write_night(night: Night, out: str | Path | BinaryIO) -> int:
    """Write every envelope of the night; returns the number of lines."""
    lines = 0
    if isinstance(out, (str, Path)):
        handle = open_output(out)
        close = True
    else:
        handle, close = out, False
    try:
        for block in envelopes(night):
            handle.write(block)
            lines += block.count(b"\n")
    finally:
        if close:
            handle.close()
            if isinstance(handle, gzip.GzipFile) and handle.fileobj is not None:
                handle.fileobj.close()
    return lines


def night_lines(night: Night) -> Iterator[bytes]:
    """Envelope lines one by one, without the newline (for publishing)."""
    for block in envelopes(night):
        yield from block.splitlines()
