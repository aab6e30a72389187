"""The TPS registry a simulation covers: the real one (``tps_registry.csv.gz``) or a synthetic one.

Users do not have ``../shared``; without a registry file pantau builds a synthetic registry with the
real number of kecamatan, kelurahan and TPS of every kabupaten/kota (from the fitted parameters) and
realistic kelurahan and TPS counts per parent. Codes follow the real scheme ``PP KK CC DDDD TTT``
(kelurahan ``1xxx`` in cities, ``2xxx`` desa elsewhere, ``0xxx`` overseas). The synthetic registry
does not depend on the simulation seed: like a real one, it is fixed.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import Params, from_quantiles, stream

REGISTRY_SEED = 2024
SHARED_REGISTRY = Path("shared") / "data" / "sirekap" / "tps_registry.csv.gz"


@dataclass(frozen=True)
class Registry:
    """Sorted 13-digit TPS codes, and where they came from."""

    codes: np.ndarray
    source: str
    _numbers: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def numbers(self) -> np.ndarray:
        """The TPS codes as integers (cheap region arithmetic: ``numbers // 10**(13 - digits)``)."""
        if self._numbers is None:
            object.__setattr__(self, "_numbers", self.codes.astype(np.int64))
        return self._numbers

    def region_numbers(self, digits: int) -> np.ndarray:
        return self.numbers // 10 ** (13 - digits)

    def prefix(self, digits: int) -> np.ndarray:
        """The region code of every TPS at the level named by ``digits`` (2, 4, 6, 10)."""
        return self.codes.astype(f"U{digits}")

    def select(self, provinces: list[str] | None = None, kabkota: list[str] | None = None) -> Registry:
        """The TPS of the given provinces and/or kabupaten/kota (all when neither is given)."""
        if not provinces and not kabkota:
            return self
        mask = np.zeros(len(self.codes), dtype=bool)
        if provinces:
            mask |= np.isin(self.prefix(2), provinces)
        if kabkota:
            mask |= np.isin(self.prefix(4), kabkota)
        if not mask.any():
            raise ValueError(f"no TPS in provinces {provinces or []} / kabupaten/kota {kabkota or []} of {self.source}")
        return Registry(self.codes[mask], self.source)


def find_shared_registry() -> Path | None:
    """``../shared/data/sirekap/tps_registry.csv.gz`` next to the working directory or the project."""
    for base in (Path.cwd().parent, Path(__file__).resolve().parents[3]):
        path = base / SHARED_REGISTRY
        if path.exists():
            return path
    return None


def load_registry(path: str | Path) -> Registry:
    """The TPS codes of a registry CSV (first column ``kode_tps``; ``.gz`` allowed)."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = np.frombuffer(handle.read(), dtype=np.uint8)
    starts = np.flatnonzero(data == 10) + 1  # every line after the header
    starts = starts[starts + 13 <= len(data)]
    block = np.empty((len(starts), 13), dtype=np.uint8)
    for k in range(13):
        block[:, k] = data[starts + k]
    block = block[((block >= 48) & (block <= 57)).all(axis=1)]
    codes = np.ascontiguousarray(block).view("S13").ravel()
    return Registry(np.unique(codes).astype("U13"), str(path))


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers ≥ 1 summing to ``total``, proportional to ``weights`` (largest remainder)."""
    n = len(weights)
    share = weights / weights.sum() * (total - n)
    base = np.floor(share).astype(np.int64)
    left = total - n - int(base.sum())
    if left > 0:
        base[np.argsort(-(share - base), kind="stable")[:left]] += 1
    return base + 1


def synthetic_registry(params: Params) -> Registry:
    """A registry with the real region sizes of every kabupaten/kota, and made-up codes below them."""
    info = params.registry
    kel_q, tps_q = info["kelurahan_per_kecamatan_quantiles"], info["tps_per_kelurahan_quantiles"]
    parts: list[np.ndarray] = []
    for kab, (n_kec, n_kel, n_tps) in info["kabkota"].items():
        rng = stream(REGISTRY_SEED, int(kab))
        kels = _apportion(n_kel, from_quantiles(kel_q, rng.random(n_kec)) + 0.5)
        tps = _apportion(n_tps, from_quantiles(tps_q, rng.random(n_kel)) + 0.5)
        first = 1 if kab.startswith("99") else 1001 if int(kab[2:]) >= 71 else 2001
        kel_codes = [f"{kab}{kec + 1:02d}{first + i:04d}" for kec, k in enumerate(kels) for i in range(k)]
        parts.append(np.array([f"{kel}{t + 1:03d}" for kel, n in zip(kel_codes, tps) for t in range(n)], dtype="U13"))
    return Registry(np.sort(np.concatenate(parts)), "synthetic (fitted region sizes)")


def resolve_registry(params: Params, path: str | Path | None = None, synthetic: bool = False) -> Registry:
    """The registry file given, else ``../shared``'s when present, else the synthetic registry."""
    if synthetic:
        return synthetic_registry(params)
    if path is not None:
        return load_registry(path)
    shared = find_shared_registry()
    return load_registry(shared) if shared is not None else synthetic_registry(params)
