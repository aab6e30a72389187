"""Synthetic OCR misreads of the kinds Sirekap made in 2024, for tests, benchmarks and simulation.

The mix follows the published corrections (80 → 880, 99 → 799, 85 → 855, 111 → 117): a crossed-out
empty box read as a digit, a look-alike digit, a spurious extra digit, a dropped digit.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pantau.schemas import Tally

LOOKALIKE_OF = {
    "0": "869", "1": "74", "2": "7", "3": "859", "4": "91", "5": "63",
    "6": "508", "7": "12", "8": "3069", "9": "480",
}  # fmt: skip
CROSSED_BOX_READS = "8887714"
KINDS = (("substitution", 0.45), ("crossed_box", 0.20), ("extra_digit", 0.20), ("dropped_digit", 0.15))


def misread(value: int, rng: random.Random, kind: str | None = None) -> tuple[int, str]:
    """Return ``(read, kind)``: what OCR might read for a true ``value``; ``read != value`` always.

    >>> rng = random.Random(7)
    >>> misread(80, rng, "crossed_box")
    (880, 'crossed_box')
    """
    if kind is None:
        kind = rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
    digits = str(value)
    if kind == "crossed_box" and len(digits) < 3:
        read = rng.choice(CROSSED_BOX_READS) + digits.zfill(2)
    elif kind == "extra_digit" or (kind == "dropped_digit" and len(digits) < 2) or kind == "crossed_box":
        kind = "extra_digit"
        i = rng.randrange(len(digits) + 1)
        extra = digits[i - 1] if i > 0 and rng.random() < 0.5 else str(rng.randrange(10))
        read = digits[:i] + extra + digits[i:]
    elif kind == "dropped_digit":
        i = rng.randrange(len(digits))
        read = digits[:i] + digits[i + 1 :]
    else:
        kind = "substitution"
        i = rng.randrange(len(digits))
        pool = LOOKALIKE_OF[digits[i]] if rng.random() < 0.7 else "0123456789".replace(digits[i], "")
        read = digits[:i] + rng.choice(pool) + digits[i + 1 :]
    result = int(read)
    if result == value:  # e.g. a dropped leading zero or an inserted leading 0: try again
        return misread(value, rng, None)
    return result, kind


@dataclass(frozen=True, slots=True)
class MisreadTrial:
    """One tally with one field misread: what OCR read, and the truth to find again."""

    corrupted: Tally
    field: str
    true: int
    read: int
    kind: str


def misread_trial(tallies: Sequence[Tally], rng: random.Random) -> MisreadTrial:
    """Pick a tally and one of its counts at random, and misread that count."""
    tally = rng.choice(tallies)
    field = rng.choice(sorted(tally.counts))
    true = tally.counts[field]
    read, kind = misread(true, rng)
    return MisreadTrial(replace(tally, counts={**tally.counts, field: read}), field, true, read, kind)
