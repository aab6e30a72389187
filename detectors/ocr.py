"""``ocr.misread``: find the single misread digit that explains a form's broken arithmetic.

Sirekap reads handwritten digits from a photo of the C.Hasil form. Each count is written in three
boxes (hundreds, tens, units); the errors that hurt most in 2024 were

* a crossed-out empty box read as a digit, usually 8 (80 → 880, 99 → 799),
* a digit read as a look-alike (111 → 117, 3 ↔ 8, 5 ↔ 6, 1 ↔ 7),
* a spurious extra digit (85 → 855, 51 → 551) or a dropped one,
* rarely, two or three boxes at once (10 → 551).

When identities fail, :func:`diagnose` looks for one field whose change makes **every** judged
identity hold (the linear identities fix the required value exactly; only inequalities failing leaves
the value open, and then only deflating edits are tried). A candidate is credible only if the change
is one digit-level misread, or, at the lowest weight, when the arithmetic alone pins the value.
Candidates are ranked by a prior on the misread (how often OCR makes that
confusion) times the plausibility of the corrected form (suara_total usually equals pengguna_total_j;
men and women are near half each in every voter group), and reported best first with a confidence
that leaves room for "none of these" (several misread fields, or a real error on paper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pantau.schemas import Alert, Suggestion, Tally

from .alerts import tps_alert
from .form import A, GROUPS, Failure, FormResult, Identity

#: Digit pairs OCR confuses in handwriting (unordered).
LOOKALIKES = frozenset(
    frozenset(pair)
    for pair in ("17", "38", "56", "68", "08", "89", "49", "14", "06", "09", "27", "35", "58", "03", "23", "69")
)

#: Relative prior of each misread, given that a misread happened.
CROSSED_BOX_READ = {"8": 3.0, "7": 1.5, "1": 1.5, "4": 1.5}
CROSSED_BOX_OTHER = 0.8
SUBSTITUTION_LOOKALIKE = 1.0
SUBSTITUTION_OTHER = 0.2
EXTRA_DIGIT_REPEATED = 1.2
EXTRA_DIGIT = 0.8
DROPPED_DIGIT = 0.5
TRANSPOSITION = 0.3
#: Two boxes misread at once (55 → 95 ← 50): rare, shown only at low confidence.
TWO_DIGITS = 0.05
#: No digit-level misread explains it, but the arithmetic pins the value (the real 2024 correction
#: 551 → 10): shown, at the lowest confidence, because a person can check it on the photo in seconds.
ARITHMETIC = 0.01
#: Weight left for "no single-field misread explains this" when normalising confidences.
UNEXPLAINED = 0.3
#: Suggestions below this confidence are noise for a person and are not shown.
MIN_CONFIDENCE = 0.02
MAX_SUGGESTIONS = 5

#: Share of consistent domestic 2024 TPS with suara_total = pengguna_total_j (dev provinces: 95.3%).
P_BALLOTS_EQUAL_VOTERS = 0.95
#: Male share of a voter group: mean and spread over consistent 2024 TPS with ≥ 50 voters.
MALE_SHARE_MEAN = 0.49
MALE_SHARE_SD = 0.04
#: Share of TPS whose gender split is anything at all (overseas workers' units, barracks, prisons):
#: keeps a skewed but real split from outweighing the misread prior.
MALE_SHARE_ANY = 0.05
#: How closely the voters who came follow their register's gender split: the concentration of a
#: beta-binomial around the register's male share (women's and men's turnout differ by a few points).
USERS_LIKE_REGISTER = 200.0


@dataclass(frozen=True, slots=True)
class Edit:
    """How a true value turns into the value OCR read."""

    kind: str
    weight: float


def misread_edit(read: int, true: int) -> Edit | None:
    """The most likely single misread that turns ``true`` into ``read``, or None.

    >>> misread_edit(880, 80)
    Edit(kind='crossed_box', weight=3.0)
    >>> misread_edit(117, 111)
    Edit(kind='substitution', weight=1.0)
    >>> misread_edit(855, 85)
    Edit(kind='extra_digit', weight=1.2)
    >>> misread_edit(551, 10) is None
    True
    """
    if read == true or read < 0 or true < 0:
        return None
    r, t = str(read), str(true)
    best: Edit | None = None

    def consider(kind: str, weight: float) -> None:
        nonlocal best
        if best is None or weight > best.weight:
            best = Edit(kind, weight)

    width = max(3, len(r), len(t))
    rp, tp = r.zfill(width), t.zfill(width)
    diff = [i for i in range(width) if rp[i] != tp[i]]
    if len(diff) == 1:
        i = diff[0]
        if i < width - 1 and tp[: i + 1].strip("0") == "":
            consider("crossed_box", CROSSED_BOX_READ.get(rp[i], CROSSED_BOX_OTHER))
        elif frozenset((rp[i], tp[i])) in LOOKALIKES:
            consider("substitution", SUBSTITUTION_LOOKALIKE)
        else:
            consider("substitution", SUBSTITUTION_OTHER)
    elif len(diff) == 2 and diff[1] == diff[0] + 1 and rp[diff[0]] == tp[diff[1]] and rp[diff[1]] == tp[diff[0]]:
        consider("transposition", TRANSPOSITION)
    elif len(diff) == 2:
        consider("two_digits", TWO_DIGITS)
    if len(r) == len(t) + 1:
        for i in range(len(r)):
            if r[:i] + r[i + 1 :] == t:
                repeated = (i > 0 and r[i - 1] == r[i]) or (i + 1 < len(r) and r[i + 1] == r[i])
                consider("extra_digit", EXTRA_DIGIT_REPEATED if repeated else EXTRA_DIGIT)
                break
    elif len(t) == len(r) + 1:
        for i in range(len(t)):
            if t[:i] + t[i + 1 :] == r:
                consider("dropped_digit", DROPPED_DIGIT)
                break
    return best


def _deflations(value: int) -> set[int]:
    """Values OCR may have inflated into ``value``: one digit removed."""
    s = str(value)
    return {int(s[:i] + s[i + 1 :]) for i in range(len(s))} - {value} if len(s) > 1 else set()


def _male_share_log_density(share: float, voters: int) -> float:
    """Log density of a group's male share: normal around the mean, or (rarely) anything in [0, 1]."""
    sd = MALE_SHARE_SD * math.sqrt(50 / voters + 1)
    normal = math.exp(-0.5 * ((share - MALE_SHARE_MEAN) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    return math.log((1 - MALE_SHARE_ANY) * normal + (MALE_SHARE_ANY if share <= 1 else 0.0) + 1e-12)


def plausibility(counts: dict[str, int]) -> float:
    """Log plausibility of a form's numbers beyond its hard identities (relative, for ranking)."""
    score = 0.0
    total, voters = counts.get(A + "suara_total"), counts.get(A + "pengguna_total_j")
    if total is not None and voters is not None:
        score += math.log(P_BALLOTS_EQUAL_VOTERS if total == voters else 1 - P_BALLOTS_EQUAL_VOTERS)
    for group in GROUPS:
        j, male = counts.get(f"{A}{group}_j"), counts.get(f"{A}{group}_l")
        if j is not None and male is not None and j >= 20:
            score += _male_share_log_density(male / j, j)
    return score + _users_like_register(counts)


def _users_like_register(counts: dict[str, int]) -> float:
    """Log likelihood of the DPT voters' male count given the register's male share (beta-binomial).

    It tells an all-male unit (a prison, barracks) with a misread women's register (0 read as 50)
    from a misread total: only the first keeps the voters' split like the register's.
    """
    register, register_male = counts.get(A + "pemilih_dpt_j"), counts.get(A + "pemilih_dpt_l")
    voters, voters_male = counts.get(A + "pengguna_dpt_j"), counts.get(A + "pengguna_dpt_l")
    if None in (register, register_male, voters, voters_male) or register <= 0 or not 0 <= voters_male <= voters:
        return 0.0
    share = min(max(register_male / register, 0.005), 0.995)
    a, b = share * USERS_LIKE_REGISTER, (1 - share) * USERS_LIKE_REGISTER
    k, n = voters_male, voters
    return _log_beta(k + a, n - k + b) - _log_beta(a, b) + math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _holds_everywhere(counts: dict[str, int], judged: tuple[Identity, ...], capacity: int) -> bool:
    for identity in judged:
        lhs = sum(counts[f] for f in identity.lhs)
        rhs = sum(counts[f] for f in identity.rhs)
        if not identity.holds_for(lhs, rhs):
            return False
    return all(v <= capacity for v in counts.values())


def _required_value(field: str, failures: tuple[Failure, ...], holding: list[Identity], current: int) -> int | None:
    """The one value of ``field`` that makes every failing equality hold without breaking one of the
    ``holding`` equalities, if it exists.

    Returns -1 when ``field`` is in no failing equality (the value is then not determined).
    """
    required: int | None = None
    in_failing = False
    for failure in failures:
        identity = failure.identity
        if not identity.equal:
            continue
        if field in identity.lhs:
            value = current - failure.difference
        elif field in identity.rhs:
            value = current + failure.difference
        else:
            return None  # another equality fails that this field cannot mend
        in_failing = True
        if required is not None and value != required:
            return None
        required = value
    if not in_failing:
        if any(f.identity.equal for f in failures):
            return None
        return -1
    if any(field in identity.fields for identity in holding):
        return None  # changing it would break an equality that holds
    return required


def diagnose(tally: Tally, form: FormResult) -> list[Suggestion]:
    """Single-field misread corrections that make the whole form consistent, best first.

    >>> from pantau.schemas import parse_envelope, normalize
    >>> from pantau.detectors.form import check_form
    >>> doc = {"chart": {"null": None, "100025": 105, "100026": 48, "100027": 551},
    ...        "administrasi": {"suara_sah": 163, "suara_tidak_sah": 4, "suara_total": 167}}
    >>> tally = normalize(parse_envelope({"kode_tps": "3173011002090", "jenis": "ppwp", "doc": doc}))
    >>> [(s.field, s.current, s.proposed, s.edit) for s in diagnose(tally, check_form(tally))]
    [('chart.100027', 551, 10, 'arithmetic')]
    """
    if form.consistent:
        return []
    counts = tally.counts
    fields = {f: None for failure in form.failures for f in failure.identity.fields}
    fields.update(dict.fromkeys(form.over_capacity))
    scored: list[tuple[float, float, str, int, Edit]] = []
    trial = dict(counts)
    failing = {failure.identity for failure in form.failures}
    holding = [identity for identity in form.judged if identity.equal and identity not in failing]
    for field in fields:
        current = counts[field]
        required = _required_value(field, form.failures, holding, current)
        if required is None or required < -1:
            continue
        determined = required >= 0
        for value in (required,) if determined else _deflations(current):
            edit = misread_edit(current, value)
            if edit is None:
                if not determined:
                    continue
                edit = Edit("arithmetic", ARITHMETIC)
            trial[field] = value
            if _holds_everywhere(trial, form.judged, form.capacity):
                scored.append((edit.weight, plausibility(trial), field, value, edit))
        trial[field] = current
    if not scored:
        return []
    # Relative to the best-fitting correction, so that an odd but real form (all-male overseas unit)
    # does not make every correction look worse than "unexplained".
    best_fit = max(fit for _, fit, *_ in scored)
    weighted = sorted(((prior * math.exp(fit - best_fit), field, value, edit) for prior, fit, field, value, edit in scored),
                      key=lambda s: (-s[0], s[1], s[2]))  # fmt: skip
    total = sum(w for w, *_ in weighted) + UNEXPLAINED
    suggestions = []
    for weight, field, value, edit in weighted[:MAX_SUGGESTIONS]:
        confidence = round(weight / total, 4)
        if confidence >= MIN_CONFIDENCE:
            suggestions.append(Suggestion(field=field, current=counts[field], proposed=value,
                                          confidence=confidence, edit=edit.kind))  # fmt: skip
    return suggestions


EDIT_NAMES = {
    "substitution": ("angka terbaca sebagai angka lain yang mirip", "a digit read as a look-alike"),
    "crossed_box": ("kotak kosong yang dicoret terbaca sebagai angka", "a crossed-out empty box read as a digit"),
    "extra_digit": ("terbaca satu angka berlebih", "a spurious extra digit"),
    "dropped_digit": ("satu angka tidak terbaca", "a dropped digit"),
    "transposition": ("dua angka tertukar", "two digits swapped"),
    "two_digits": ("dua kotak salah terbaca", "two boxes misread"),
    "arithmetic": ("hanya nilai ini yang membuat formulir konsisten", "the only value that makes the form consistent"),
}


def misread_alert(tally: Tally, form: FormResult, suggestions: list[Suggestion]) -> Alert:
    """The ``ocr.misread`` alert: the suggestions, best first, with the identities they mend."""
    best = suggestions[0]
    how_id, how_en = EDIT_NAMES[best.edit]
    vote_count = best.field.startswith(("chart.", "caleg.")) or best.field == A + "suara_sah"
    evidence = {
        "failing": sorted({f.identity.detector for f in form.failures} | ({"form.capacity"} if form.over_capacity else set())),
        "values": {s.field: s.current for s in suggestions},
    }
    return tps_alert(
        tally, "ocr.misread", "critical" if vote_count else "warning", best.confidence,
        f"Kemungkinan salah baca: {best.field} tertulis {best.current}, seharusnya {best.proposed} "
        f"({how_id}; keyakinan {best.confidence:.0%}). Periksa foto formulir C.Hasil.",
        f"Likely misread: {best.field} reads {best.current}, probably {best.proposed} "
        f"({how_en}; confidence {best.confidence:.0%}). Check the C.Hasil photo.",
        evidence, suggestions,
    )  # fmt: skip
