"""The simulator's fitted parameters, and the small numeric helpers generation shares with fitting.

The parameters are *distribution summaries* of the real 2024 data (quantile tables, means and
covariances of latent variables per region, an arrival curve of counts per minute), never raw rows.
They live in ``pantau/data/sim_params.json`` (shipped) and are regenerated from ``../shared/data`` by
``pantau simulate fit`` (:mod:`pantau.simulate.fit`).

The latent vector of a TPS (domestic or overseas) has four coordinates::

    z = (log(p01/p02), log(p03/p02), logit(turnout of the DPT), logit(invalid-vote rate))

(additive log-ratios of the three PPWP shares against paslon 02). It is the sum of a kabupaten/kota
mean and kecamatan, kelurahan and TPS effects, each normal with the covariance fitted for that level,
so shares, turnout and invalid votes keep their real correlations (the turnout × share "fingerprint")
and their real clustering.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

#: Sirekap times are Western Indonesia Time.
WIB = timezone(timedelta(hours=7), "WIB")
PPWP_CANDIDATES = ("100025", "100026", "100027")
#: Index of the latent coordinates.
ALR1, ALR3, TURNOUT, INVALID = 0, 1, 2, 3
LATENT = 4
#: Region-level mean vector: the 4 latent coordinates, then log rates of DPTb and non-DPT voters.
LOG_DPTB, LOG_NONDPT = 4, 5
MEAN_DIM = 6
LEVELS = ("provinsi", "kabkota", "kecamatan", "kelurahan")
#: Digits of the TPS code that name each region level.
LEVEL_DIGITS = {"provinsi": 2, "kabkota": 4, "kecamatan": 6, "kelurahan": 10, "tps": 13}
PARAMS_FILE = "sim_params.json"


def default_params_path() -> Path:
    return Path(str(resources.files("pantau") / "data" / PARAMS_FILE))


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    with open(path, "rb") as handle:
        return json.load(handle)


def load_params(path: str | Path | None = None) -> Params:
    """The fitted parameters (the shipped file unless ``path`` is given)."""
    return Params(_load(str(path or default_params_path())))


@dataclass(frozen=True)
class Params:
    """Typed access to the parameter file (a JSON object; see :func:`pantau.simulate.fit.fit`)."""

    raw: dict[str, Any]

    def group(self, provinsi: str) -> dict[str, Any]:
        """Domestic or overseas (province 99) group parameters."""
        return self.raw["groups"]["overseas" if provinsi == "99" else "domestic"]

    def province(self, provinsi: str) -> dict[str, Any] | None:
        return self.raw["provinces"].get(provinsi)

    def kabkota(self, code: str) -> dict[str, Any] | None:
        return self.raw["kabkota"].get(code)

    @property
    def national(self) -> dict[str, Any]:
        return self.raw["national"]

    @property
    def legislative(self) -> dict[str, Any]:
        return self.raw["legislative"]

    @property
    def timeline(self) -> dict[str, Any]:
        return self.raw["timeline"]

    @property
    def registry(self) -> dict[str, Any]:
        return self.raw["registry"]


# -- numeric helpers -------------------------------------------------------------------------------


def expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def alr_shares(z1: np.ndarray, z3: np.ndarray) -> np.ndarray:
    """PPWP shares (n, 3) from the two additive log-ratios against paslon 02."""
    e1, e3 = np.exp(z1), np.exp(z3)
    total = 1.0 + e1 + e3
    return np.stack([e1 / total, 1.0 / total, e3 / total], axis=1)


def psd(matrix: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """The nearest positive semi-definite matrix (eigenvalues floored), symmetric."""
    matrix = (np.asarray(matrix, dtype=float) + np.asarray(matrix, dtype=float).T) / 2
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.maximum(values, floor)) @ vectors.T


def normal(rng: np.random.Generator, cov: np.ndarray | list, n: int) -> np.ndarray:
    """``n`` draws of N(0, cov) (rows)."""
    cov = np.asarray(cov, dtype=float)
    chol = np.linalg.cholesky(psd(cov))
    return rng.standard_normal((n, cov.shape[0])) @ chol.T


def from_quantiles(quantiles: list[float] | np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling from an equally spaced quantile table (linear interpolation)."""
    q = np.asarray(quantiles, dtype=float)
    return np.interp(u, np.linspace(0.0, 1.0, len(q)), q)


def multinomial(rng: np.random.Generator, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """One multinomial draw per row (``n[i]`` trials, probabilities ``p[i]``), by conditional binomials."""
    n = np.asarray(n, dtype=np.int64)
    k = p.shape[1]
    out = np.zeros((len(n), k), dtype=np.int64)
    left = n.copy()
    mass = np.ones(len(n))
    for j in range(k - 1):
        share = np.clip(np.divide(p[:, j], mass, out=np.zeros(len(n)), where=mass > 0), 0.0, 1.0)
        out[:, j] = rng.binomial(left, share)
        left -= out[:, j]
        mass = mass - p[:, j]
    out[:, k - 1] = left
    return out


def negbin(rng: np.random.Generator, mean: np.ndarray, k: float) -> np.ndarray:
    """Negative binomial counts with the given means and shape ``k`` (variance mean + mean²/k)."""
    mean = np.maximum(np.asarray(mean, dtype=float), 0.0)
    gamma = rng.gamma(k, 1.0 / k, size=mean.shape)
    return rng.poisson(mean * gamma)


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``key`` (e.g. purpose, region code, ballot index).

    Streams are keyed, not drawn in sequence: the numbers of a kabupaten/kota do not depend on which
    other regions are simulated, and adding an anomaly does not change the clean night.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key))))


# -- time ------------------------------------------------------------------------------------------


def parse_wib(text: str) -> int:
    """Seconds since the epoch of a WIB time written ``YYYY-MM-DDTHH:MM[:SS]``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=WIB).timestamp())


def wib_strings(seconds: np.ndarray) -> tuple[list[str], list[str]]:
    """For epoch seconds: ISO times with the WIB offset, and Sirekap ``ts`` strings."""
    local = (np.asarray(seconds, dtype=np.int64) + 7 * 3600).astype("datetime64[s]")
    iso = np.datetime_as_string(local, unit="s").tolist()
    return [s + "+07:00" for s in iso], [s.replace("T", " ") for s in iso]
