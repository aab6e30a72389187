"""Deciding which regions to flag: every region's tests, Benjamini–Hochberg per level, hysteresis.

:class:`RegionalAssessor` receives the kecamatan and kabupaten/kota sums from the monitors (the
workers), merges kabupaten into provinces, and on :meth:`~RegionalAssessor.assess` runs
:func:`~pantau.detectors.regional.region_tests` on the regions that changed. The p-values of all tests
of all regions of a level form one family; Benjamini–Hochberg (``scipy.stats.false_discovery_control``)
adjusts them, and a test is *raised* when its adjusted p-value is at most ``fdr`` (by default 1%) and
*cleared* only once it rises above ``clear_factor × fdr`` (hysteresis: a region near the threshold
does not flap as TPS arrive). A raise publishes one alert per episode; a clear publishes
``stat.cleared``, which resolves it.

**Looks.** A region is tested again only when it has grown by :data:`LOOK_GROWTH` (1.5×) since its last
test, not at every change: each test of a growing region is another chance for a clean region to
cross the threshold (tested at every arrival from 30 to 150 stations, a clean region's chance of a
p-value below 1e-4 at some point is ~20× that of one test; simulated, binomial counts). The p-value
that enters Benjamini–Hochberg is the *sequential* one, :func:`sequential_pvalue`, valid however often
a region is looked at: each look spends a share of the error rate, bounded by counting the
upcrossings between consecutive looks (see there). A sweep (``assess(SWEEP_GROWTH)``,
the stream's assessment once every ``PANTAU_SWEEP_INTERVAL``) tests regions that have grown by 10%
since their last test, so that the last stations of a region are not left out because its next 1.5×
never comes; the end of an audit tests every region that changed (``assess(FINAL)``). Every such test
is a look and counts.

A test is judged only once the region has ``min_tps`` stations (30) and the test ``min_units`` counts
or stations (50); smaller regions are reported as not yet testable, never as clean. The fingerprint
test is the exception, from ``min_fingerprint_tps`` stations (10): its p-value is an exact binomial tail
against the rest of the parent region, valid at any size, and a kecamatan of 10–29 complete forms is
common (a fifth of Indonesia's kecamatan have fewer than 30 TPS, and on election night many forms stay
half-digitised). With 30, 6 of 35 extreme-stuffed kecamatan of a simulated country went unflagged at
p-values of 1e-6 to 1e-15.

The kelurahan-neighbour tests (:func:`~pantau.detectors.regional.neighbour_test`, kecamatan only) need their
province's null: the threshold and the overdispersion of the kecamatan's counts above it. Estimating it
reads every kecamatan of the province, so it is done again only when the province has grown by 5%
(:data:`NEIGHBOUR_REFRESH`), and then every kecamatan of the province is re-tested.

What a flag means: the region's numbers are unlikely under a model of clean counting, tuned on the
region's own data. It is a reason for a person to look at the forms, not proof of manipulation.
Legitimate causes exist: noken (communal) voting in the Papua provinces produces 100%/100% stations
and round numbers; a kecamatan with one large institution (a dormitory, a hospital) can stand out.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Any

import numpy as np
from scipy import special, stats

from pantau.schemas import Alert
from pantau.schemas.alert import alert_id

from .regional import (
    NEIGHBOUR,
    NEIGHBOUR_TESTS,
    NEIGHBOUR_TURNOUT,
    NeighbourNull,
    RegionSums,
    RegionTest,
    describe,
    fingerprint_test,
    neighbour_null,
    neighbour_test,
    region_tests,
)

LEVELS = ("kecamatan", "kabkota", "provinsi")
FDR = 0.01
CLEAR_FACTOR = 10.0
MIN_TPS = 30
MIN_FINGERPRINT_TPS = 10
MIN_UNITS = 50
#: A province's neighbour nulls are estimated again once it has grown by this factor (amortised O(1)).
NEIGHBOUR_REFRESH = 1.05
CRITICAL_ADJUSTED = 1e-6
#: A region is tested again once its stations have grown by this factor since its last test.
LOOK_GROWTH = 1.5
#: At a sweep, by this factor; at the end of a replay, by any (:data:`FINAL`).
SWEEP_GROWTH = 1.1
FINAL = 1.0
#: The least growth :func:`sequential_pvalue` credits between two looks: a look at no more units than
#: the last (the end of a replay after revisions only) still counts as 1.1× of new data.
MIN_LOOK_GROWTH = SWEEP_GROWTH
#: The episodes entry (``"<region key>:@looks"``) of a region's looks (:meth:`RegionalAssessor.looked`).
LOOKS = "@looks"
#: Provinces where noken (communal) voting is legal in parts: Papua and its 2022 splits.
NOKEN_PROVINCES = frozenset({"91", "92", "93", "94", "95", "96"})

WHAT = {
    "c05s": ("angka berakhiran 0 atau 5 lebih sering dari perkiraan", "counts ending in 0 or 5 are more common than expected"),
    "lastc": ("rata-rata digit terakhir menyimpang dari perkiraan", "the mean last digit departs from its expectation"),
    "2bl": ("rata-rata digit kedua menyimpang dari perkiraan", "the mean second digit departs from its expectation"),
    "last_digit": ("sebaran digit terakhir tidak sesuai perkiraan (uji Beber–Scacco)", "last digits are not distributed as expected (Beber–Scacco test)"),
    "repeated_digits": ("dua digit terakhir kembar (11, 22, …) tidak wajar jumlahnya", "repeated last two digits (11, 22, …) occur an unusual number of times"),
    "adjacent_digits": ("dua digit terakhir berurutan (12, 21, …) tidak wajar jumlahnya", "adjacent last two digits (12, 21, …) occur an unusual number of times"),
    "p05s": ("persentase partisipasi berakhiran 0 atau 5 terlalu sering", "turnout percentages ending in 0 or 5 are too common"),
    "integer_percent": ("persentase partisipasi bulat terlalu sering (uji Kobak)", "whole-number turnout percentages are too common (Kobak test)"),
    "fingerprint": ("terlalu banyak TPS dengan partisipasi dan suara pemenang ≥ 95% (sidik jari Klimek)", "too many TPS with turnout and leader share both ≥ 95% (Klimek fingerprint)"),
    "dip": ("sebaran partisipasi bermodus ganda (uji dip Hartigan)", "turnout is multimodal (Hartigan's dip test)"),
    "dip_share": ("sebaran perolehan suara pemenang TPS bermodus ganda (uji dip Hartigan)",
                  "the TPS winners' vote shares are multimodal (Hartigan's dip test)"),
    NEIGHBOUR: ("terlalu banyak TPS yang perolehan suara seorang calonnya jauh di atas TPS lain di kelurahannya",
                "too many TPS where one candidate's share stands far above the other TPS of their own kelurahan"),
    NEIGHBOUR_TURNOUT: ("terlalu banyak TPS yang partisipasi pemilih DPT-nya jauh di atas TPS lain di kelurahannya "
                        "(tanda yang ditinggalkan penambahan surat suara)",
                        "too many TPS whose DPT turnout stands far above the other TPS of their own kelurahan "
                        "(what added ballots leave)"),
}  # fmt: skip
CAVEAT = ("Tanda statistik adalah alasan untuk memeriksa formulir, bukan bukti kecurangan.",
          "A statistical flag is a reason to look at the forms, not proof of fraud.")  # fmt: skip
NOKEN = ("Di Papua, pemungutan suara sistem noken secara sah menghasilkan pola 100%/100% dan angka bulat.",
         "In Papua, noken (communal) voting legitimately produces 100%/100% patterns and round numbers.")  # fmt: skip
LEVEL_NAMES = {"kecamatan": "Kecamatan", "kabkota": "Kabupaten/kota", "provinsi": "Provinsi"}


def sequential_pvalue(pvalue, looks, growth=LOOK_GROWTH):
    """A p-value that stays valid however often a growing region is looked at (scalars, or arrays of
    one shape: a float or an array back): a clean region's sequential p-value falls to ``α`` at *some*
    look with a chance of at most ``α``.

    ``growth`` is how much the test's units (``RegionTest.n``) grew since its previous look (``n'/n``;
    ignored at the first look; at least :data:`MIN_LOOK_GROWTH` is credited). A test of ``n`` units and
    one of ``g n`` are correlated like sums of ``n`` and ``g n`` terms, ``ρ = √(1/g)``. On the probit
    scale ``c = Φ⁻¹(1 − p)``, the chance that look ``k`` reaches ``c`` while look ``k − 1`` did not is
    ``p − P(Z₁ > c, Z₂ > c) = 2 T(c, √((1−ρ)/(1+ρ)))`` (Owen's T; at 1.5× ~0.85 p in the far tail; at
    most ``p(1 − p)``, however much the region grew). Each look gets a share ``π_k = 1/(k(k+1))`` of the
    error rate (Σ π_k = 1 over any number of looks): the first look's p-value counts twice, look ``k``'s
    crossing chance ``k(k+1)`` times. The thresholds this sets rise from look to look, so the crossings
    of all looks together have a chance of at most ``α`` (simulated, ``tests/test_regional.py``: 0.8–0.9
    ``α`` on the 1.5× schedule, at most ``α`` on irregular ones). The price is paid where it is cheap: a
    real effect's p-value shrinks far faster as its region grows (at p = 1e-6, 1.5× the stations make
    it ~1e-8) than ``k(k+1)`` grows.

    >>> from pantau.detectors.assessor import sequential_pvalue
    >>> sequential_pvalue(1e-5, 1), round(sequential_pvalue(1e-5, 2) / 1e-5, 1), round(sequential_pvalue(1e-5, 5) / 1e-5, 1)
    (2e-05, 5.1, 25.3)
    >>> round(sequential_pvalue(1e-5, 2, growth=10) / 1e-5, 1)  # a look after 10× the units: nearly independent
    6.0
    """
    p, k, g = np.broadcast_arrays(np.asarray(pvalue, dtype=float), np.asarray(looks), np.asarray(growth, dtype=float))
    if np.any(k < 1):
        raise ValueError(f"looks must be at least 1, got {looks!r}")
    if np.any(np.isnan(g)) or np.any(g <= 0):
        raise ValueError(f"growth must be positive, got {growth!r}")
    rho = 1 / np.sqrt(np.maximum(g, MIN_LOOK_GROWTH))
    crossing = p.copy()  # the first look: its p-value itself
    later = (k > 1) & (p < 0.5)  # at p ≥ 0.5 (c ≤ 0) the thresholds would no longer rise: not significant
    crossing[later] = 2 * special.owens_t(-special.ndtri(p[later]), np.sqrt((1 - rho[later]) / (1 + rho[later])))
    crossing[(k > 1) & (p >= 0.5)] = 1.0
    out = np.minimum(1.0, np.maximum(p, crossing * k * (k + 1)))
    return float(out) if out.ndim == 0 else out


def parse_key(key: str) -> tuple[str, str, str]:
    level, region, jenis = key.split(":")
    return level, region, jenis


def _clean(value: Any) -> Any:
    """A float for the evidence: NaN as None, ±inf as text, otherwise six decimals or, below 1e-6,
    six significant digits (a p-value of 3e-7 is not 0).

    >>> _clean(46.69225137), _clean(3.2177e-7), _clean(float("nan")), _clean(float("inf"))
    (46.692251, 3.2177e-07, None, 'inf')
    """
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if not math.isfinite(value):
            return str(value)
        return round(value, 6) if value == 0 or abs(value) >= 1e-6 else float(f"{value:.6g}")
    return value


class RegionalAssessor:
    """The global view: region sums in, regional alerts out.

    ``sums`` (kecamatan and kabkota states by key) and ``episodes`` (raised tests, and each region's
    looks) are JSON-able mappings: dicts offline, changelog-backed tables in the stream.
    """

    def __init__(self, fdr: float = FDR, clear_factor: float = CLEAR_FACTOR, min_tps: int = MIN_TPS,
                 min_units: int = MIN_UNITS, episodes: MutableMapping[str, Any] | None = None,
                 min_fingerprint_tps: int = MIN_FINGERPRINT_TPS):  # fmt: skip
        if not 0 < fdr < 1:
            raise ValueError(f"fdr must lie in (0, 1), got {fdr!r}")
        if clear_factor < 1:
            raise ValueError(f"clear_factor must be at least 1, got {clear_factor!r}")
        if not 1 <= min_fingerprint_tps <= min_tps:
            raise ValueError(f"min_fingerprint_tps must lie in [1, min_tps={min_tps}], got {min_fingerprint_tps!r}")
        self.fdr, self.clear_factor, self.min_tps, self.min_units = fdr, clear_factor, min_tps, min_units
        self.min_fingerprint_tps = min_fingerprint_tps
        self.episodes: MutableMapping[str, Any] = {} if episodes is None else episodes
        self.sums: dict[str, RegionSums] = {}
        self.results: dict[str, list[RegionTest]] = {}
        self.dirty: set[str] = set()
        self.children: dict[str, set[str]] = {}  # kabkota → its kecamatan keys; provinsi → its kabkota keys
        self.provinces: dict[str, RegionSums] = {}  # merged from their kabkota when one of them changed
        self.neighbour_nulls: dict[str, tuple[int, dict[str, NeighbourNull]]] = {}  # provinsi → (its TPS then, nulls)

    def update(self, key: str, sums: RegionSums) -> None:
        """The latest sums of a kecamatan or kabupaten/kota."""
        level, region, jenis = parse_key(key)
        if level not in ("kecamatan", "kabkota"):
            raise ValueError(f"the assessor takes kecamatan and kabkota sums, not {level!r}")
        self.sums[key] = sums
        self.dirty.add(key)
        parent = f"kabkota:{region[:4]}:{jenis}" if level == "kecamatan" else f"provinsi:{region[:2]}:{jenis}"
        self.children.setdefault(parent, set()).add(key)

    def _merged(self, keys) -> RegionSums:
        merged = RegionSums()
        for key in sorted(keys):
            merged.merge(self.sums[key])
        return merged

    def looked(self, key: str) -> tuple[int, dict[str, int]]:
        """A region's stations at its last test, and per test how many of its tests so far were judged
        (testable). Kept with the episodes, so that a restarted assessor counts on."""
        state = self.episodes.get(f"{key}:{LOOKS}")
        return (0, {}) if state is None else (state["n"], state["k"])

    def look_growth(self, key: str) -> dict[str, float]:
        """Per test, how much its units grew between its last two looks (:func:`sequential_pvalue`);
        unknown (episodes written before this was kept): infinite, the bound valid for any growth."""
        state = self.episodes.get(f"{key}:{LOOKS}") or {}
        return state.get("g", {})

    def _due(self, key: str, growth: float) -> bool:
        count, (last, _) = self._sums(key).count, self.looked(key)
        if count == 0 or growth <= FINAL or last == 0:
            return True
        return count > last and count >= last * growth

    def assess(self, growth: float = LOOK_GROWTH) -> list[Alert]:
        """Re-test the regions that have grown by ``growth`` since their last test (:data:`LOOK_GROWTH`
        on schedule, :data:`SWEEP_GROWTH` at a sweep, :data:`FINAL` for every changed region), adjust
        per level, and return the alerts of raised and cleared tests. Changed regions not yet due stay
        pending."""
        if growth < FINAL:
            raise ValueError(f"growth must be at least {FINAL}, got {growth!r}")
        touched = set(self.dirty)
        for key in self.dirty:
            level, region, jenis = parse_key(key)
            if level == "kabkota":
                touched.add(f"provinsi:{region[:2]}:{jenis}")
        renulled = set()
        for key in sorted(k for k in touched if k.startswith("provinsi:")):
            self.provinces[key] = self._merged(self.children[key])
            if self._refresh_neighbour_nulls(key):
                renulled.update(k for kab in self.children[key] for k in self.children.get(kab, ()))
        changed = {key for key in touched if self._due(key, growth)}
        self.dirty = touched - changed
        national: dict[str, RegionSums] = {}
        for key in sorted(changed):
            level, region, jenis = parse_key(key)
            if level == "provinsi":
                if jenis not in national:
                    national[jenis] = RegionSums()
                    for other, sums in sorted(self.provinces.items()):
                        if other.endswith(f":{jenis}"):
                            national[jenis].merge(sums)
                sums, parent = self.provinces[key], national[jenis]
            else:
                sums, parent = self.sums[key], self._parent(key)
            if sums.count == 0:
                self.results.pop(key, None)
                continue
            self.results[key] = region_tests(sums, parent) + (self._neighbour(key, sums) if level == "kecamatan" else [])
            self._count_look(key)
        for key in sorted(changed):  # a tested parent's peer rate changed: its children's fingerprint test too
            for child in self.children.get(key, ()):
                if child in self.results and child not in changed:
                    self.results[child] = [fingerprint_test(self.sums[child], self._parent(child)) if test.name == "fingerprint"
                                           else test for test in self.results[child]]  # fmt: skip
        for key in sorted(renulled - changed):  # the province's null moved: the neighbour test of its other kecamatan too
            if key in self.results:
                self.results[key] = [t for t in self.results[key] if t.name not in NEIGHBOUR_TESTS] + self._neighbour(key, self.sums[key])
        alerts: list[Alert] = []
        for level in LEVELS:
            alerts.extend(self._decide(level))
        return alerts

    def _parent(self, key: str) -> RegionSums | None:
        level, region, jenis = parse_key(key)
        if level == "kecamatan":
            return self.sums.get(f"kabkota:{region[:4]}:{jenis}")
        return self.provinces.get(f"provinsi:{region[:2]}:{jenis}")

    def _count_look(self, key: str) -> None:
        """One more look for each of the region's testable tests, with its units and their growth since
        the test's previous look."""
        state = self.episodes.get(f"{key}:{LOOKS}") or {}
        looks, units, growth = state.get("k", {}), state.get("u", {}), state.get("g", {})
        testable = {test.name: test.n for test in self.results[key] if self._testable(key, test)}
        self.episodes[f"{key}:{LOOKS}"] = {
            "n": self._sums(key).count,
            "k": {**looks, **{name: looks.get(name, 0) + 1 for name in testable}},
            "u": {**units, **testable},
            # no growth where the previous look's units are unknown (JSON has no infinity): read as infinite
            "g": {**{name: g for name, g in growth.items() if name not in testable},
                  **{name: n / units[name] for name, n in testable.items() if units.get(name)}},
        }  # fmt: skip

    def _refresh_neighbour_nulls(self, province_key: str) -> bool:
        """Estimate the province's :class:`~.regional.NeighbourNull` per candidate again if it has grown by
        :data:`NEIGHBOUR_REFRESH` since the last time (each estimate reads all its kecamatan, so it is
        done O(log n) times a night, not at every change); whether it was."""
        province = self.provinces[province_key]
        last = self.neighbour_nulls.get(province_key)
        if last is not None and province.count < last[0] * NEIGHBOUR_REFRESH:
            return False
        kecamatan = [self.sums[k] for kab in sorted(self.children[province_key]) for k in sorted(self.children.get(kab, ()))]
        nulls = {}
        for candidate, tails in province.tails.items():
            null = neighbour_null(tails, (s.tails[candidate] for s in kecamatan if candidate in s.tails))
            if null is not None:
                nulls[candidate] = null
        self.neighbour_nulls[province_key] = (province.count, nulls)
        return True

    def _neighbour(self, key: str, sums: RegionSums) -> list[RegionTest]:
        _, region, jenis = parse_key(key)
        province_key = f"provinsi:{region[:2]}:{jenis}"
        nulls = self.neighbour_nulls.get(province_key, (0, {}))[1]
        return neighbour_test(sums, self.provinces.get(province_key), nulls)

    def _testable(self, key: str, test: RegionTest) -> bool:
        if test.pvalue is None:
            return False
        if test.name == "fingerprint":
            return test.n >= self.min_fingerprint_tps
        stations = test.name.startswith("dip") or test.name in NEIGHBOUR_TESTS  # n counts stations, not counts
        return self._sums(key).count >= self.min_tps and test.n >= (self.min_tps if stations else self.min_units)

    def _sums(self, key: str) -> RegionSums:
        return self.provinces[key] if key.startswith("provinsi:") else self.sums[key]

    def _decide(self, level: str) -> list[Alert]:
        family = [(key, test) for key in sorted(self.results) if key.startswith(level + ":")
                  for test in self.results[key] if self._testable(key, test)]  # fmt: skip
        if not family:
            return []
        keys = dict.fromkeys(key for key, _ in family)
        looked = {key: self.looked(key)[1] for key in keys}
        grown = {key: self.look_growth(key) for key in keys}
        looks = np.array([looked[key].get(test.name, 1) for key, test in family])
        growth = np.array([grown[key].get(test.name, math.inf) for key, test in family])
        sequential = sequential_pvalue(np.array([test.pvalue for _, test in family]), looks, growth)
        adjusted = stats.false_discovery_control(sequential, method="bh")
        alerts = []
        for (key, test), k, p, q in zip(family, looks.tolist(), sequential.tolist(), adjusted.tolist()):
            name = f"{key}:{test.name}"
            episode = self.episodes.get(name)
            raised = episode is not None and episode["raised"]
            if not raised and q <= self.fdr:
                number = (episode["n"] if episode else 0) + 1
                alert = self._alert(key, test, q, number, self._sums(key), k, p)
                self.episodes[name] = {"n": number, "raised": True, "id": alert.alert_id}
                alerts.append(alert)
            elif raised and q > self.fdr * self.clear_factor:
                self.episodes[name] = {**episode, "raised": False}
                alerts.append(self._cleared(key, test, q, episode))
        return alerts

    def _alert(self, key: str, test: RegionTest, adjusted: float, episode: int, sums: RegionSums, looks: int,
               sequential: float) -> Alert:
        level, region, jenis = parse_key(key)
        what_id, what_en = WHAT[test.name]
        noken = region[:2] in NOKEN_PROVINCES
        observed = "" if test.statistic is None else f"{test.statistic:.4g}"
        expected = "" if test.expected is None else f" vs {test.expected:.4g}"
        caveat_id = CAVEAT[0] + (" " + NOKEN[0] if noken else "")
        caveat_en = CAVEAT[1] + (" " + NOKEN[1] if noken else "")
        evidence = {
            "test": test.name, "statistic": _clean(test.statistic), "expected": _clean(test.expected),
            "textbook": _clean(test.textbook), "std": _clean(test.std), "zscore": _clean(test.zscore),
            "pvalue": _clean(test.pvalue), "looks": looks, "sequential_pvalue": _clean(sequential),
            "adjusted_pvalue": _clean(adjusted), "n": test.n, "fdr": self.fdr,
            "region": describe(sums), "top_tps": [e[1] for e in sums.top.get(test.name, [])],
            "top_tps_excess": [e[2] for e in sums.top.get(test.name, [])], "episode": episode,
        }  # fmt: skip
        who = ("", "")
        if test.candidate is not None:
            evidence["candidate"] = test.candidate
            who = (f"calon {test.candidate}; ", f"candidate {test.candidate}; ")
        return Alert.model_construct(
            alert_id=alert_id(f"stat.{test.name}", jenis, f"{level}:{region}", {"episode": episode}),
            detector=f"stat.{test.name}",
            severity="critical" if adjusted <= CRITICAL_ADJUSTED else "warning",
            jenis=jenis, kode_tps=None, region=region, level=level,
            score=round(-math.log10(max(adjusted, 1e-300)), 6),
            reason=f"{LEVEL_NAMES[level]} {region}: {what_id} ({who[0]}teramati {observed}{expected}, {test.n:,} unit, "
                   f"p terkoreksi {adjusted:.2g}). {caveat_id}",
            reason_en=f"{LEVEL_NAMES[level]} {region}: {what_en} ({who[1]}observed {observed}{expected}, {test.n:,} units, "
                      f"adjusted p {adjusted:.2g}). {caveat_en}",
            evidence=evidence, suggestions=[], resolves=[], observed_at=None,
        )  # fmt: skip

    def _cleared(self, key: str, test: RegionTest, adjusted: float, episode: dict[str, Any]) -> Alert:
        level, region, jenis = parse_key(key)
        what_id, what_en = WHAT[test.name]
        return Alert.model_construct(
            alert_id=alert_id("stat.cleared", jenis, f"{level}:{region}", {"test": test.name, "episode": episode["n"]}),
            detector="stat.cleared", severity="info", jenis=jenis, kode_tps=None, region=region, level=level,
            score=round(-math.log10(max(adjusted, 1e-300)), 6),
            reason=f"{LEVEL_NAMES[level]} {region}: dengan data yang lebih lengkap, temuan '{what_id}' tidak lagi signifikan "
                   f"(p terkoreksi {adjusted:.2g}).",
            reason_en=f"{LEVEL_NAMES[level]} {region}: with more data, '{what_en}' is no longer significant "
                      f"(adjusted p {adjusted:.2g}).",
            evidence={"test": test.name, "statistic": _clean(test.statistic), "expected": _clean(test.expected),
                      "adjusted_pvalue": _clean(adjusted), "n": test.n, "episode": episode["n"]},
            suggestions=[], resolves=[episode["id"]], observed_at=None,
        )  # fmt: skip
