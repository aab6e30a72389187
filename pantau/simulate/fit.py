"""Fit the simulator's parameters to the real 2024 data in ``../shared/data/sirekap``.

    pantau simulate fit --from ../shared/data/sirekap [--out pantau/data/sim_params.json]

What is fitted, and from what:

* ``tps_latest_dev.csv.gz`` (DI Yogyakarta, Bali, overseas), complete and consistent TPS only (every
  form identity holds: the clean baseline): per kabupaten/kota means of the latent vector
  (:mod:`pantau.simulate.model`: PPWP log-ratios, turnout, invalid-vote rate) and of the DPTb/non-DPT
  voter rates; the covariance of the latent vector between kabupaten/kota, between kecamatan, between
  kelurahan and between TPS (nested method of moments, binomial sampling noise removed, so that drawing
  counts from the latent values gives back the observed spread); DPT size quantiles; gender splits; how
  often fewer ballots are counted than voters; and reference quantiles the tests compare against.
* ``tps_registry.csv.gz``: per kabupaten/kota the number of kecamatan, kelurahan and TPS, and the size
  distributions, to synthesise a registry where the real one is absent.
* ``arrivals_per_minute_*.csv`` and ``arrivals_per_hour.csv``: the first-upload curve (counts per minute
  for 14–15 Feb 2024, per hour afterwards).
* ``tps_revisions_dev.csv.gz`` and the latest snapshot: which half of the form arrives first and how
  many TPS stay half-digitised; the real ``ts`` values: the batch publication rhythm.

Everything the 2024 files cannot tell (other provinces' levels, the four legislative ballots) is an
explicit, documented assumption in the ``national`` and ``legislative`` sections. Only summaries are
written: no row of the source data.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from .model import MEAN_DIM, PPWP_CANDIDATES, default_params_path, psd

ADMIN = [f"{g}_{s}" for g in ("pemilih_dpt", "pengguna_dpt", "pengguna_dptb", "pengguna_non_dpt", "pengguna_total") for s in "jlp"]
NUMERIC = ["paslon_01", "paslon_02", "paslon_03", "suara_sah", "suara_tidak_sah", "suara_total", *ADMIN]
QUANTILES = 201
REFERENCE_Q = np.linspace(0.02, 0.98, 49)
SHIFT_MEANS = True
#: How much the vote-share location follows the kabupaten/kota aggregate (1) rather than the TPS median (0).
ALR_AGGREGATE_WEIGHT = 0.5

#: Official 2024 national PPWP result (KPU decree 360/2024): 40,971,906 / 96,214,691 / 27,040,878 votes.
NATIONAL_PPWP = (40_971_906, 96_214_691, 27_040_878)

#: 2024 DPR national vote shares (KPU, rounded) by Sirekap party id; the Aceh local parties (18-23)
#: stand only for the Aceh DPRD ballots.
PARTIES = {
    "1": 10.62, "2": 13.22, "3": 16.72, "4": 15.28, "5": 9.66, "6": 0.64, "7": 0.84, "8": 8.42, "9": 0.21,
    "10": 0.72, "11": 0.27, "12": 7.24, "13": 0.32, "14": 7.43, "15": 2.81, "16": 1.29, "17": 3.87, "24": 0.42,
}  # fmt: skip
ACEH_PARTIES = {"18": 1.0, "19": 0.3, "20": 0.5, "21": 6.0, "22": 0.7, "23": 0.6}


def _read_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        return list(csv.DictReader(text))


def _consistent(v: dict[str, int | None]) -> bool:
    if any(x is None for x in v.values()):
        return False
    ok = v["paslon_01"] + v["paslon_02"] + v["paslon_03"] == v["suara_sah"]
    ok &= v["suara_sah"] + v["suara_tidak_sah"] == v["suara_total"]
    for s in "jlp":
        ok &= v[f"pengguna_dpt_{s}"] + v[f"pengguna_dptb_{s}"] + v[f"pengguna_non_dpt_{s}"] == v[f"pengguna_total_{s}"]
        ok &= v[f"pengguna_dpt_{s}"] <= v[f"pemilih_dpt_{s}"]
    for g in ("pemilih_dpt", "pengguna_dpt", "pengguna_dptb", "pengguna_non_dpt", "pengguna_total"):
        ok &= v[f"{g}_j"] == v[f"{g}_l"] + v[f"{g}_p"]
    ok &= v["suara_total"] <= v["pengguna_total_j"]
    return bool(ok)


def clean_table(path: Path) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """Complete, consistent TPS of the latest snapshot: (counts matrix, column index, TPS codes)."""
    codes, matrix = [], []
    for row in _read_rows(path):
        v = {k: (int(row[k]) if row[k] != "" else None) for k in NUMERIC}
        if _consistent(v) and v["pemilih_dpt_j"] > 0 and v["suara_sah"] > 0:
            codes.append(row["kode_tps"])
            matrix.append([v[k] for k in NUMERIC])
    return np.array(matrix, dtype=np.int64), {k: i for i, k in enumerate(NUMERIC)}, np.array(codes)


def latent(x: np.ndarray, c: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Observed latent vectors (n, 4) and their binomial sampling-noise covariances (n, 4, 4)."""
    v1, v2, v3 = (x[:, c[f"paslon_0{i}"]] + 0.5 for i in (1, 2, 3))
    d, pd = x[:, c["pemilih_dpt_j"]], x[:, c["pengguna_dpt_j"]]
    tot, inv = x[:, c["suara_total"]], x[:, c["suara_tidak_sah"]]
    z = np.stack([
        np.log(v1 / v2), np.log(v3 / v2),
        np.log((pd + 0.5) / (d - pd + 0.5)), np.log((inv + 0.5) / (tot - inv + 0.5)),
    ], axis=1)  # fmt: skip
    noise = np.zeros((len(x), 4, 4))
    noise[:, 0, 0] = 1 / v1 + 1 / v2
    noise[:, 1, 1] = 1 / v3 + 1 / v2
    noise[:, 0, 1] = noise[:, 1, 0] = 1 / v2
    noise[:, 2, 2] = 1 / (pd + 0.5) + 1 / (d - pd + 0.5)
    noise[:, 3, 3] = 1 / (inv + 0.5) + 1 / (tot - inv + 0.5)
    return z, noise


def winsorize(z: np.ndarray, low: float = 0.01, high: float = 0.99) -> np.ndarray:
    """Each coordinate clipped to its [low, high] quantiles (robust moments)."""
    lo, hi = np.quantile(z, [low, high], axis=0)
    return np.clip(z, lo, hi)


def _group_means(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, per-key mean rows and per-key counts."""
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), values.shape[1]))
    np.add.at(sums, inverse, values)
    return uniq, sums / counts[:, None], counts


def _pooled_cov(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Pooled within-group covariance of rows and its degrees of freedom."""
    uniq, means, _ = _group_means(values, keys)
    index = np.searchsorted(uniq, keys)
    dev = values - means[index]
    df = len(values) - len(uniq)
    return dev.T @ dev / max(df, 1), df


def variance_components(z: np.ndarray, noise: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Latent covariances between TPS (within kelurahan), kelurahan, kecamatan (nested moments)."""
    kel = np.array([c[:10] for c in codes])
    kec = np.array([c[:6] for c in codes])
    within, _ = _pooled_cov(z, kel)
    tps = psd(within - noise.mean(axis=0))
    kel_keys, kel_means, kel_n = _group_means(z, kel)
    kel_parent = np.array([k[:6] for k in kel_keys])
    between_kel, _ = _pooled_cov(kel_means, kel_parent)
    kelurahan = psd(between_kel - within * np.mean(1.0 / kel_n))
    kec_keys, kec_means, kec_k = _group_means(kel_means, kel_parent)
    inv_n = np.zeros(len(kec_keys))
    np.add.at(inv_n, np.searchsorted(kec_keys, kel_parent), 1.0 / kel_n)
    kec_parent = np.array([k[:4] for k in kec_keys])
    between_kec, _ = _pooled_cov(kec_means, kec_parent)
    expected = np.mean([(kelurahan + within * (inv_n[i] / kec_k[i])) / kec_k[i] for i in range(len(kec_keys))], axis=0)
    kecamatan = psd(between_kec - expected)
    del kec
    return {"tps": tps, "kelurahan": kelurahan, "kecamatan": kecamatan, "within_kabkota_total": within}


def _rate_means(x: np.ndarray, c: dict[str, int], groups: np.ndarray, prior: float, pseudo: float = 5.0):
    """Per-group DPTb and non-DPT voter rates per registered voter, shrunk by ``pseudo`` TPS of prior."""
    out = {}
    d = x[:, c["pemilih_dpt_j"]].astype(float)
    for column in ("pengguna_dptb_j", "pengguna_non_dpt_j"):
        values = x[:, c[column]].astype(float)
        rates = {}
        for g in np.unique(groups):
            m = groups == g
            mean_d = d[m].mean()
            rates[g] = (values[m].sum() + pseudo * prior[column] * mean_d) / (d[m].sum() + pseudo * mean_d)
        out[column] = rates
    return out


def _negbin_k(x: np.ndarray, mean: np.ndarray) -> float:
    """Maximum-likelihood shape of a negative binomial with known means (variance mean + mean²/k)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import gammaln

    x, mean = np.asarray(x, dtype=float), np.maximum(np.asarray(mean, dtype=float), 1e-9)

    def nll(log_k: float) -> float:
        k = np.exp(log_k)
        return -np.sum(gammaln(x + k) - gammaln(k) - gammaln(x + 1) + k * np.log(k / (k + mean)) + x * np.log(mean / (k + mean)))

    best = minimize_scalar(nll, bounds=(np.log(0.02), np.log(1000.0)), method="bounded")
    return round(float(np.exp(best.x)), 5)


def _matrix(matrix: np.ndarray) -> list[list[float]]:
    """A covariance matrix for the parameters file: six decimals, no negative zero (whether a value
    rounds to -0.0 or 0.0 depends on the BLAS build, and the file must not)."""
    return (matrix.round(6) + 0.0).tolist()


def _q(values: np.ndarray, n: int = QUANTILES) -> list[float]:
    return [round(float(v), 4) for v in np.quantile(values, np.linspace(0, 1, n))]


def reference(x: np.ndarray, c: dict[str, int]) -> dict[str, list[float]]:
    """Quantiles of the real distributions the tests compare a simulation against (no ../shared needed)."""
    d = x[:, c["pemilih_dpt_j"]]
    sah = np.maximum(x[:, c["suara_sah"]], 1)
    series = {
        "dpt": d,
        "turnout": x[:, c["pengguna_total_j"]] / d,
        "share_01": x[:, c["paslon_01"]] / sah,
        "share_02": x[:, c["paslon_02"]] / sah,
        "share_03": x[:, c["paslon_03"]] / sah,
        "invalid": x[:, c["suara_tidak_sah"]] / np.maximum(x[:, c["suara_total"]], 1),
        "dptb": x[:, c["pengguna_dptb_j"]] / d,
    }
    return {"n": len(x), **{k: [round(float(q), 5) for q in np.quantile(v, REFERENCE_Q)] for k, v in series.items()}}


def fit_group(x: np.ndarray, c: dict[str, int], codes: np.ndarray, overseas: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Group parameters, province parameters and kabupaten/kota parameters of one group of TPS.

    Moments are robust (each latent coordinate winsorised at its 1st/99th percentile; the TPS reporting
    every registered voter as voting, or none, are point masses of their own), then calibrated by
    simulation (:func:`calibrate`).
    """
    d = x[:, c["pemilih_dpt_j"]].astype(float)
    pd = x[:, c["pengguna_dpt_j"]]
    full_turnout, no_dpt_voter = pd == d, pd == 0
    regular = ~full_turnout & ~no_dpt_voter
    z, noise = latent(x, c)
    z = winsorize(z)
    comps = variance_components(z[regular], noise[regular], codes[regular])
    kab = np.array([k[:4] for k in codes])
    prov = np.array([k[:2] for k in codes])

    prior_rates = {col: x[:, c[col]].sum() / d.sum() for col in ("pengguna_dptb_j", "pengguna_non_dpt_j")}
    rates = _rate_means(x, c, kab, prior_rates)
    kab_keys, kab_means, kab_n = _group_means(z[regular], kab[regular])
    # Between kabupaten/kota (within province), less what the kabupaten's own spread puts in its mean.
    kab_prov = np.array([k[:2] for k in kab_keys])
    log_rates = np.log(np.array([[rates[col][k] + 1e-4 for col in ("pengguna_dptb_j", "pengguna_non_dpt_j")] for k in kab_keys]))
    means = np.hstack([kab_means, log_rates])
    between_kab, _ = _pooled_cov(means, kab_prov)
    within_total = comps["within_kabkota_total"] + comps["kecamatan"] + comps["kelurahan"]
    correction = np.zeros((MEAN_DIM, MEAN_DIM))
    correction[:4, :4] = within_total * np.mean(1.0 / kab_n)
    cov_kab = psd(between_kab - correction, floor=1e-4)

    # Shrink small kabupaten/kota towards their province (empirical Bayes on the latent coordinates).
    provinces: dict[str, Any] = {}
    kabkota: dict[str, Any] = {}
    for p in np.unique(prov):
        m = prov == p
        provinces[str(p)] = {"mean": [round(float(v), 5) for v in np.hstack([z[m & regular].mean(axis=0), np.log(
            [x[m, c[col]].sum() / d[m].sum() + 1e-4 for col in ("pengguna_dptb_j", "pengguna_non_dpt_j")])])],
            "dpt_quantiles": _q(np.minimum(d[m], 300) if not overseas else d[m]),
            "male_share_quantiles": _q(x[m, c["pemilih_dpt_l"]] / d[m], 201),
            "reference": reference(x[m], c)}  # fmt: skip
    tau = cov_kab[:4, :4]
    for i, k in enumerate(kab_keys):
        base = np.array(provinces[k[:2]]["mean"][:4])
        weight = tau @ np.linalg.inv(tau + within_total / kab_n[i])
        mean4 = base + weight @ (kab_means[i] - base)
        kabkota[str(k)] = {"mean": [round(float(v), 5) for v in np.hstack([mean4, log_rates[i]])], "n": int(np.sum(kab == k))}
        if np.sum(kab == k) >= 20:
            kabkota[str(k)]["dpt_quantiles"] = _q(d[kab == k] if overseas else np.minimum(d[kab == k], 300), 21)

    expected = {col: np.array([rates[col][k] for k in kab]) * d for col in ("pengguna_dptb_j", "pengguna_non_dpt_j")}
    for p, entry in provinces.items():
        m = prov == p
        entry["negbin_k"] = {"dptb": _negbin_k(x[m, c["pengguna_dptb_j"]], expected["pengguna_dptb_j"][m]),
                                    "nondpt": _negbin_k(x[m, c["pengguna_non_dpt_j"]], expected["pengguna_non_dpt_j"][m])}  # fmt: skip
    male = x[:, c["pemilih_dpt_l"]] / d
    total_j, suara_total = x[:, c["pengguna_total_j"]], x[:, c["suara_total"]]
    short = total_j - suara_total
    group: dict[str, Any] = {
        "cov": {"kabkota": _matrix(cov_kab), **{k: _matrix(comps[k]) for k in ("kecamatan", "kelurahan", "tps")}},
        "dpt_quantiles": _q(d if overseas else np.minimum(d, 300)),
        "dpt_max": 9000 if overseas else 300,
        "turnout_point_mass": {"all_dpt_voted": round(float(full_turnout.mean()), 5), "no_dpt_voter": round(float(no_dpt_voter.mean()), 5)},
        "negbin_k": {"dptb": _negbin_k(x[:, c["pengguna_dptb_j"]], expected["pengguna_dptb_j"]),
                     "nondpt": _negbin_k(x[:, c["pengguna_non_dpt_j"]], expected["pengguna_non_dpt_j"])},
        "male_share": {"quantiles": _q(male, 201)},
        "male_share_dptb": round(float(x[:, c["pengguna_dptb_l"]].sum() / max(x[:, c["pengguna_dptb_j"]].sum(), 1)), 4),
        "male_share_nondpt": round(float(x[:, c["pengguna_non_dpt_l"]].sum() / max(x[:, c["pengguna_non_dpt_j"]].sum(), 1)), 4),
        "ballots_short": {"p": round(float(np.mean(short > 0)), 5), "quantiles": _q(short[short > 0], 21) if np.any(short > 0) else [1.0]},
        "calibration": {},
    }
    calibrate(group, provinces, kabkota, x, c, codes)
    return group, provinces, kabkota


def _observed(admin: dict[str, np.ndarray], votes: np.ndarray) -> np.ndarray:
    """The observed latent vectors of simulated counts (same transform as :func:`latent`)."""
    x = np.stack([votes[:, 0], votes[:, 1], votes[:, 2], admin["suara_sah"], admin["suara_tidak_sah"], admin["suara_total"],
                  *[admin[f] for f in ADMIN]], axis=1)  # fmt: skip
    return latent(x, {k: i for i, k in enumerate(NUMERIC)})[0]


def _centred_iqr(z: np.ndarray, kab: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    medians = {k: np.median(z[kab == k], axis=0) for k in np.unique(kab)}
    centred = z - np.stack([medians[k] for k in kab])
    q75, q25 = np.quantile(centred, [0.75, 0.25], axis=0)
    return q75 - q25, medians


def calibrate(group: dict[str, Any], provinces: dict[str, Any], kabkota: dict[str, Any], x: np.ndarray,
              c: dict[str, int], codes: np.ndarray, rounds: int = 8, seed: int = 20240214, shift_means: bool = SHIFT_MEANS) -> None:  # fmt: skip
    """Method of simulated moments: scale the within-kabupaten covariances (per latent coordinate) and
    shift the kabupaten/kota means until simulating these very TPS gives back the observed latent
    values' spreads (robust: interquartile ranges around each kabupaten/kota's median), their medians
    of turnout and invalid votes, and each kabupaten/kota's aggregate vote shares (the level regional
    statistics see; the shares of a few TPS are far from their neighbours', so medians would miss it).

    The nested moments alone overstate the spread: the real counts are less dispersed than binomial
    sampling (gender splits, turnout of small stations), so only simulation can say how much latent
    spread gives the observed one.
    """
    from .generate import _ppwp_kabkota
    from .model import Params

    kab = np.array([k[:4] for k in codes])
    pd, d = x[:, c["pengguna_dpt_j"]], x[:, c["pemilih_dpt_j"]]
    regular = (pd != d) & (pd != 0)
    z_real = winsorize(latent(x, c)[0])
    target_iqr, target_median = _centred_iqr(z_real[regular], kab[regular])

    def aggregate_alr(votes: np.ndarray, keys: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for k in np.unique(keys):
            totals = votes[keys == k].sum(axis=0) + 0.5
            out[str(k)] = np.log([totals[0] / totals[1], totals[2] / totals[1]])
        return out

    target_alr = aggregate_alr(x[:, [c["paslon_01"], c["paslon_02"], c["paslon_03"]]], kab)
    base = {level: np.array(group["cov"][level]) for level in ("kecamatan", "kelurahan", "tps")}
    scale = np.ones(4)
    raw = {"groups": {"domestic": group, "overseas": group}, "provinces": provinces, "kabkota": kabkota}
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    slices = {}
    for k in np.unique(kab):
        idx = np.flatnonzero(kab[order] == k)
        slices[str(k)] = (idx[0], idx[-1] + 1)
    for _ in range(rounds):
        for level, matrix in base.items():
            group["cov"][level] = _matrix(matrix * np.outer(scale, scale))
        params = Params(raw)
        sims, sim_kab, sim_alr = [], [], {}
        for k, (a, b) in slices.items():
            admin, votes, _ = _ppwp_kabkota(params, seed, k, sorted_codes[a:b])
            sim_alr.update(aggregate_alr(votes, np.full(len(votes), k)))
            sim_regular = (admin["pengguna_dpt_j"] != admin["pemilih_dpt_j"]) & (admin["pengguna_dpt_j"] != 0)
            sims.append(_observed(admin, votes)[sim_regular])
            sim_kab += [k] * int(sim_regular.sum())
        z_sim = winsorize(np.concatenate(sims))
        iqr, medians = _centred_iqr(z_sim, np.array(sim_kab))
        scale = np.clip(scale * (target_iqr / np.maximum(iqr, 1e-6)) ** 1.5, 0.02, 3.0)
        for k, median in medians.items():
            if shift_means and k in target_median:
                n = int(np.sum(kab == k))
                step = (target_median[k] - median) * n / (n + 10)
                step[:2] = ALR_AGGREGATE_WEIGHT * (target_alr[k] - sim_alr[k]) * n / (n + 10) + (1 - ALR_AGGREGATE_WEIGHT) * step[:2]
                mean = kabkota[k]["mean"]
                kabkota[k]["mean"] = [round(float(v), 5) for v in np.concatenate([np.array(mean[:4]) + step, mean[4:]])]
    for level, matrix in base.items():
        group["cov"][level] = _matrix(matrix * np.outer(scale, scale))
    group["calibration"] = {"scale": [round(float(v), 4) for v in scale], "rounds": rounds,
                            "target_iqr": [round(float(v), 4) for v in target_iqr]}  # fmt: skip


def fit_registry(path: Path) -> dict[str, Any]:
    """Sizes of the region tree: per kabupaten/kota [kecamatan, kelurahan, TPS], and size quantiles."""
    with gzip.open(path, "rb") as handle:
        codes = [line[:13].decode() for line in handle.read().splitlines()[1:] if line.strip()]
    kel = Counter(c[:10] for c in codes)
    kec_of_kel = Counter(k[:6] for k in kel)
    per_kab: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for k in kec_of_kel:
        per_kab[k[:4]][0] += 1
    for k in kel:
        per_kab[k[:4]][1] += 1
    for c in codes:
        per_kab[c[:4]][2] += 1
    return {
        "tps": len(codes),
        "kabkota": dict(sorted(per_kab.items())),
        "tps_per_kelurahan_quantiles": _q(np.array(list(kel.values())), 101),
        "kelurahan_per_kecamatan_quantiles": _q(np.array(list(kec_of_kel.values())), 101),
        "urban_kelurahan_share": round(sum(1 for k in kel if k[6] == "1") / len(kel), 4),
    }


def fit_arrivals(directory: Path) -> dict[str, Any]:
    """The first-upload curve: its density per minute (14-15 Feb 2024), then per hour, zeros filled in."""
    minute_file = min(directory.glob("arrivals_per_minute_*.csv"))
    with open(minute_file, newline="") as handle:
        minutes = {row[0]: int(row[1]) for row in list(csv.reader(handle))[1:]}
    with open(directory / "arrivals_per_hour.csv", newline="") as handle:
        hours = {row[0]: int(row[1]) for row in list(csv.reader(handle))[1:]}
    start = datetime.fromisoformat(min(minutes))
    end_minutes = datetime.fromisoformat(max(minutes)) + timedelta(minutes=1)
    per_minute = []
    t = start
    while t < end_minutes:
        per_minute.append(minutes.get(t.strftime("%Y-%m-%dT%H:%M"), 0))
        t += timedelta(minutes=1)
    per_hour = []
    t = end_minutes
    last = datetime.fromisoformat(max(hours))
    while t <= last:
        per_hour.append(hours.get(t.strftime("%Y-%m-%dT%H:%M"), 0))
        t += timedelta(hours=1)
    total = sum(per_minute) + sum(per_hour)
    return {
        "note": "density of first uploads (share of all first uploads per minute, then per hour; 3 significant digits)",
        "minute_start": start.strftime("%Y-%m-%dT%H:%M"),
        "per_minute": [float(f"{n / total:.3g}") for n in per_minute],
        "hour_start": end_minutes.strftime("%Y-%m-%dT%H:%M"),
        "per_hour": [float(f"{n / total:.3g}") for n in per_hour],
        "first_uploads_in_source": total,
        "peak_minute_share": float(f"{max(per_minute) / total:.4g}"),
        "peak_hour_share": float(f"{max(hours.values()) / total:.4g}"),
    }


def fit_batches(latest: list[dict[str, str]], revisions: list[dict[str, str]]) -> dict[str, Any]:
    """The ``ts`` rhythm: first batch time, quantiles of the gaps between batches, second offsets."""
    times = sorted({datetime.fromisoformat(r["ts"]) for r in latest + revisions if r["ts"]})
    gaps = np.diff([t.timestamp() for t in times]) / 60
    gaps = gaps[(gaps > 1) & (gaps < 6 * 60)]
    return {
        "first": times[0].strftime("%Y-%m-%dT%H:%M:%S"),
        "gap_minutes_quantiles": _q(gaps, 21),
        "second_offsets": _q(np.array([t.second for t in times], dtype=float), 21),
        "distinct_in_dev": len(times),
    }


def fit_halves(latest: list[dict[str, str]], revisions: list[dict[str, str]]) -> dict[str, Any]:
    """Which half arrives first (revisions), and how many TPS stay half-digitised (latest snapshot)."""

    def state(row: dict[str, str]) -> str:
        chart = row["paslon_01"] != "" or row.get("chart_source", "") != ""
        admin = any(row[k] != "" for k in ("suara_sah", "pemilih_dpt_j", "pengguna_total_j"))
        return ("C" if chart else "-") + ("A" if admin else "-")

    first = Counter()
    by_tps: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in revisions:
        by_tps[row["kode_tps"]].append(row)
    for rows in by_tps.values():
        for row in sorted(rows, key=lambda r: int(r["version"])):
            s = state(row)
            if s != "--":
                first[s] += 1
                break
    final = Counter(state(r) for r in latest)
    with_numbers = final["CA"] + final["C-"] + final["-A"]
    partial = first["C-"] + first["-A"]
    return {
        "first_partial": 0.5,
        "first_chart_given_partial": round(first["C-"] / max(partial, 1), 4),
        "final_chart_only": round(final["C-"] / with_numbers, 4),
        "final_admin_only": round(final["-A"] / with_numbers, 4),
        "second_lag_hours": {"median": 3.0, "sigma": 1.0},
        "evidence": {"first_states_in_revisions": dict(first), "final_states_in_latest": dict(final)},
    }


def legislative() -> dict[str, Any]:
    """Assumptions for the four legislative ballots (no such data in ../shared)."""
    return {
        "note": "assumptions, not fitted: ../shared holds PPWP data only",
        "parties": PARTIES,
        "aceh_parties": ACEH_PARTIES,
        "party_logit_sd": {"provinsi": 0.6, "kabkota": 0.35, "kecamatan": 0.15, "tps": 0.35},
        "partai_share": {"mean": 0.22, "concentration": 12.0},
        "seats": {"pdpr": [3, 10], "pdprdp": [3, 12], "pdprdk": [3, 12]},
        "dapil_group": {"pdpr": 3, "pdprdp": 2, "pdprdk": 3},
        "caleg_concentration": 0.8,
        "dpd_candidates": [10, 54],
        "dpd_concentration": 1.5,
        "invalid_multiplier": {"ppwp": 1.0, "pdpr": 4.5, "pdpd": 8.0, "pdprdp": 4.5, "pdprdk": 4.5},
        "upload_lag_hours": {"ppwp": 0.0, "pdpr": 2.0, "pdpd": 4.0, "pdprdp": 6.0, "pdprdk": 8.0},
        "upload_lag_sigma": 0.8,
        "overseas_ballots": ["ppwp", "pdpr"],
        "no_pdprdk_provinces": ["31"],
    }


#: Between-province standard deviation of the two PPWP log-ratios (log p01/p02, log p03/p02): an
#: assumption, about the spread of the 2024 provincial results (Anies ahead in Aceh and West Sumatra,
#: a few percent in Bali and NTT; Ganjar from ~2% in Aceh to ~40% in Central Java, Bali and NTT). Two
#: fitted provinces cannot estimate it.
PROVINCE_SD_ALR = (1.2, 0.7)


def national(provinces: dict[str, Any], group: dict[str, Any], seed: int = 360) -> dict[str, Any]:
    """The prior of a province without data: mean and between-province covariance.

    The log-ratio mean is set by simulation so that the *expected national aggregate* of provinces
    drawn from the prior (with the fitted spread inside a province) is the official 2024 result.
    """
    domestic = [p for p in provinces if p != "99"]
    means = np.array([provinces[p]["mean"] for p in domestic])
    cov_kab = np.array(group["cov"]["kabkota"])
    spread = means.var(axis=0, ddof=1) if len(means) > 1 else np.zeros(MEAN_DIM)
    cov = np.diag(np.maximum(spread, np.diag(cov_kab))) + cov_kab
    cov[:2, :] = cov[:, :2] = 0.0
    cov[0, 0], cov[1, 1] = (sd**2 for sd in PROVINCE_SD_ALR)
    cov = psd(cov)

    a, b, c = NATIONAL_PPWP
    target = np.array([a, b, c], dtype=float) / (a + b + c)
    within = cov_kab[:2, :2] + sum(np.array(group["cov"][level])[:2, :2] for level in ("kecamatan", "kelurahan", "tps"))
    rng = np.random.default_rng(seed)
    province = rng.multivariate_normal(np.zeros(2), cov[:2, :2], 4000)
    tps = rng.multivariate_normal(np.zeros(2), within, 64)
    alr = np.log([target[0] / target[1], target[2] / target[1]])
    for _ in range(40):
        z = alr + province[:, None, :] + tps[None, :, :]
        e1, e3 = np.exp(z[..., 0]), np.exp(z[..., 1])
        shares = np.stack([e1, np.ones_like(e1), e3]) / (1 + e1 + e3)
        aggregate = shares.reshape(3, -1).mean(axis=1)
        alr += np.log([target[0] / target[1], target[2] / target[1]]) - np.log([aggregate[0] / aggregate[1], aggregate[2] / aggregate[1]])
    mean = means.mean(axis=0)
    mean[:2] = alr
    return {
        "note": "PPWP log-ratio mean calibrated so that provinces drawn from this prior add up, in expectation, to the "
                "official 2024 national result (KPU 360/2024); between-province SD of the log-ratios an assumption "
                "(PROVINCE_SD_ALR); other coordinates: mean and spread of the fitted domestic provinces",
        "official_ppwp_shares": [round(float(v), 5) for v in target],
        "mean": [round(float(v), 5) for v in mean],
        "cov": cov.round(6).tolist(),
    }  # fmt: skip


def fit(directory: str | Path) -> dict[str, Any]:
    """All parameters, from the reference data directory (``../shared/data/sirekap``)."""
    directory = Path(directory)
    x, c, codes = clean_table(directory / "tps_latest_dev.csv.gz")
    overseas = np.array([k.startswith("99") for k in codes])
    groups, provinces, kabkota = {}, {}, {}
    for name, mask in (("domestic", ~overseas), ("overseas", overseas)):
        group, prov, kab = fit_group(x[mask], c, codes[mask], name == "overseas")
        groups[name] = group
        provinces.update(prov)
        kabkota.update(kab)
    # A fitted domestic province keeps its own spread (the pooled group serves provinces without data).
    province_of = np.array([k[:2] for k in codes])
    for p in sorted(set(province_of[~overseas].tolist())):
        mask = province_of == p
        group, prov, kab = fit_group(x[mask], c, codes[mask], False)
        provinces[p].update(prov[p])
        provinces[p]["cov"] = group["cov"]
        provinces[p]["calibration"] = group["calibration"]
        kabkota.update(kab)
    # Overseas codes of the registry do not name the same places as the 2024 snapshot's: the fitted
    # overseas units become profiles, drawn per TPS in proportion to their size.
    groups["overseas"]["profiles"] = [
        {"mean": kabkota[k]["mean"], "n": kabkota[k]["n"], **({"dpt_quantiles": kabkota[k]["dpt_quantiles"]} if "dpt_quantiles" in kabkota[k] else {})}
        for k in sorted(kabkota) if k.startswith("99")
    ]  # fmt: skip
    kabkota = {k: v for k, v in kabkota.items() if not k.startswith("99")}
    latest = _read_rows(directory / "tps_latest_dev.csv.gz")
    revisions = _read_rows(directory / "tps_revisions_dev.csv.gz")
    return {
        "version": 1,
        "fitted_from": {
            "tps_latest_dev.csv.gz": {"rows": len(latest), "complete_consistent": len(x)},
            "tps_revisions_dev.csv.gz": {"rows": len(revisions)},
            "note": "summaries only (quantiles, means, covariances, counts per minute); no source rows",
        },
        "candidates": list(PPWP_CANDIDATES),
        "national": national(provinces, groups["domestic"]),
        "groups": groups,
        "provinces": provinces,
        "kabkota": kabkota,
        "timeline": {
            "arrivals": fit_arrivals(directory),
            "batches": fit_batches(latest, revisions),
            "halves": fit_halves(latest, revisions),
            "republish": {"rate": 0.03, "lag_hours": {"median": 24.0, "sigma": 1.0}, "note": "assumption"},
            "upload_to_receipt_seconds": {"median": 45.0, "sigma": 0.8, "note": "assumption"},
        },
        "registry": fit_registry(directory / "tps_registry.csv.gz"),
        "legislative": legislative(),
    }


def write(params: dict[str, Any], out: str | Path | None = None) -> Path:
    path = Path(out) if out else default_params_path()
    path.write_text(json.dumps(params, separators=(",", ":"), sort_keys=False) + "\n")
    return path
