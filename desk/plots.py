"""Charts for the verification desk, rendered on the server as inline SVG strings.

Why server-side SVG rather than a JavaScript plotting library:

* nothing to download or execute in the browser, so the desk works on a slow link at a polling station
  and under a strict Content-Security-Policy (``script-src 'none'``, no ``unsafe-inline``);
* each chart is a plain string a Jinja2 template drops in with ``|safe``, and the same bytes come back
  for the same input, so pages can be cached, diffed and snapshot-tested;
* labels may come from scanned documents, so every piece of text goes through :func:`html.escape`
  here, once, and the template never has to think about it.

Coordinates are rounded to 2 decimals to keep the markup small and stable. Colours follow the
Okabe-Ito colour-blind safe palette, and observed/expected differ in shape (bar vs. tick) as well as hue.
No element carries an ``id``: several charts share one HTML page, where ids would collide.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

__all__ = ["digit_chart", "fingerprint_chart", "timeline_chart"]

OBSERVED = "#0072B2"
EXPECTED = "#D55E00"
HIGHLIGHT = "#CC79A7"
INK = "#222222"
GRID = "#DDDDDD"
#: Light-to-dark blue ramp for the fingerprint: one hue, so order is read from lightness alone,
#: which survives every form of colour blindness and greyscale printing.
RAMP = ((0xDE, 0xEB, 0xF7), (0x6B, 0xAE, 0xD6), (0x08, 0x30, 0x6B))
WIB = timezone(timedelta(hours=7), "WIB")
MAX_CATEGORIES = 100
MAX_BINS = 200
#: Long labels from documents would run into their neighbours; the full text stays in the tooltip.
MAX_LABEL = 24

# XML 1.0 forbids these code points even when escaped, and a document may carry any of them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(text: object) -> str:
    return html.escape(_NOT_XML.sub("", str(text)), quote=True)


def _n(x: float) -> str:
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "\u2026"


def _svg(width: float, height: float, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" font-family="sans-serif" font-size="12" fill="{INK}">'
        f"<title>{_esc(title)}</title>" + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{_esc(text)}</text>'


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a flat sequence of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a NaN or infinite value at index {int(np.argmin(np.isfinite(arr)))}")
    return arr


def _non_negative(name: str, values: Sequence[float]) -> np.ndarray:
    arr = _values(name, values)
    if np.any(arr < 0):
        raise ValueError(f"{name} contains a negative value at index {int(np.argmax(arr < 0))}")
    return arr


def _ticks(top: float) -> tuple[float, list[float], int]:
    """A 1-2-5 step giving 3 to 5 ticks from 0 up to at least ``top``: (axis max, ticks, decimals)."""
    if top <= 0:
        top = 1.0
    exp = math.floor(math.log10(top)) - 1
    # Starting a decade below guarantees the first step is too fine, and consecutive 1-2-5 steps
    # grow by at most 2.5x, so the first step with <= 4 intervals still has >= 2 of them.
    for e in range(exp, exp + 3):
        for m in (1, 2, 5):
            step = m * 10.0**e
            n = math.ceil(round(top / step, 9))
            if n <= 4:
                return n * step, [i * step for i in range(n + 1)], max(0, -e)
    raise AssertionError("unreachable: a step of 10x the top value always fits")


def _y_axis(ticks: list[float], decimals: int, axis_max: float, left: float, top: float, height: float,
            width: float, label: str) -> list[str]:
    out = []
    for t in ticks:
        y = top + height - t / axis_max * height
        out.append(f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(left + width)}" y2="{_n(y)}" stroke="{GRID}"/>')
        out.append(_text(left - 6, y + 4, f"{t:.{decimals}f}", "end"))
    mid = top + height / 2
    out.append(_text(14, mid, label, extra=f' transform="rotate(-90 14 {_n(mid)})"'))
    return out


def digit_chart(
    observed: Sequence[float],
    expected: Sequence[float],
    labels: Sequence[str],
    title: str,
    y_label: str = "share",
    *,
    observed_label: str = "observed",
    expected_label: str = "expected",
) -> str:
    """Observed values as bars, expected values as a tick across each bar, one group per category.

    Meant for digit tests (Benford's second digit, last digit) but any observed/expected pair fits.
    Each bar carries a tooltip with the category and both values.

    >>> svg = digit_chart([0.1] * 10, [0.1] * 10, [str(d) for d in range(10)], "last digit")
    >>> svg.startswith("<svg") and svg.count('class="observed"') == 10
    True
    """
    obs = _non_negative("observed", observed)
    exp = _non_negative("expected", expected)
    names = [str(label) for label in labels]
    if not len(obs) == len(exp) == len(names):
        raise ValueError(
            f"observed, expected and labels must have equal lengths, got {len(obs)}, {len(exp)} and {len(names)}"
        )
    if not 1 <= len(obs) <= MAX_CATEGORIES:
        raise ValueError(f"digit_chart needs 1 to {MAX_CATEGORIES} categories, got {len(obs)}")

    width, height = 480.0, 300.0
    left, right, top, bottom = 60.0, 16.0, 52.0, 36.0
    pw, ph = width - left - right, height - top - bottom
    axis_max, ticks, decimals = _ticks(float(max(obs.max(), exp.max())))
    body = [_text(width / 2, 18, title, extra=' font-size="14" font-weight="bold"')]
    # Legend: a swatch for the bars, a tick for the expectation, the same marks as in the plot.
    # There is no text metrics on the server: 7 px per character is a safe over-estimate at 12 px sans-serif.
    ex = left + 16 + 7 * len(_short(observed_label)) + 20
    body += [
        f'<rect x="{_n(left)}" y="28" width="12" height="12" fill="{OBSERVED}"/>',
        _text(left + 16, 38, _short(observed_label), "start"),
        f'<line x1="{_n(ex)}" y1="34" x2="{_n(ex + 16)}" y2="34" stroke="{EXPECTED}" stroke-width="3"/>',
        _text(ex + 20, 38, _short(expected_label), "start"),
    ]
    body += _y_axis(ticks, decimals, axis_max, left, top, ph, pw, y_label)

    n = len(obs)
    gw = pw / n
    # Thin the category labels so at most ~20 are printed; every bar still has its tooltip.
    every = math.ceil(n / 20)
    base = top + ph
    for i, (o, e, name) in enumerate(zip(obs, exp, names)):
        x = left + i * gw
        bh = o / axis_max * ph
        ey = base - e / axis_max * ph
        tip = f"{name}: {observed_label} {o:.4g}, {expected_label} {e:.4g}"
        body.append(
            f'<rect class="observed" x="{_n(x + gw * 0.15)}" y="{_n(base - bh)}" width="{_n(gw * 0.7)}" '
            f'height="{_n(bh)}" fill="{OBSERVED}"><title>{_esc(tip)}</title></rect>'
        )
        body.append(
            f'<line class="expected" x1="{_n(x + gw * 0.05)}" y1="{_n(ey)}" x2="{_n(x + gw * 0.95)}" '
            f'y2="{_n(ey)}" stroke="{EXPECTED}" stroke-width="3"/>'
        )
        if i % every == 0:
            body.append(_text(x + gw / 2, base + 16, _short(name)))
    body.append(f'<line x1="{_n(left)}" y1="{_n(base)}" x2="{_n(left + pw)}" y2="{_n(base)}" stroke="{INK}"/>')
    return _svg(width, height, title, body)


def _ramp(t: float) -> str:
    """Colour at ``t`` in [0, 1] on the light-to-dark ramp."""
    seg = min(int(t * (len(RAMP) - 1)), len(RAMP) - 2)
    f = t * (len(RAMP) - 1) - seg
    lo, hi = RAMP[seg], RAMP[seg + 1]
    return "#" + "".join(f"{round(a + (b - a) * f):02X}" for a, b in zip(lo, hi))


def _pairs(name: str, points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Finite (x, y) rows clipped into the unit square; rows with a NaN or infinity are dropped."""
    try:
        arr = np.asarray(points, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of (x, y) pairs: {exc}") from None
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be a sequence of (x, y) pairs, got shape {arr.shape}")
    # An infinite share is a division by zero upstream, not an extreme polling station: drop it like NaN.
    return np.clip(arr[np.all(np.isfinite(arr), axis=1)], 0.0, 1.0)


def fingerprint_chart(
    points: Sequence[tuple[float, float]],
    highlight: Sequence[tuple[float, float]] = (),
    title: str = "",
    x_label: str = "turnout",
    y_label: str = "leader share",
    bins: int = 40,
    *,
    empty_label: str = "no data",
    highlight_label: str = "selected",
) -> str:
    """The Klimek election fingerprint: a 2D histogram of (turnout, leader share) with TPS circled on top.

    ``points`` are binned on a ``bins`` x ``bins`` grid over the unit square; only non-empty cells are
    drawn, shaded on a log scale so a lone outlier cell stays visible next to the dense core. Values
    outside [0, 1] are clipped onto the edge, rows with NaN are dropped. ``highlight`` points (the case's
    TPS) are outlined circles with class ``highlight``. Without any point, the chart says ``empty_label``.

    >>> fingerprint_chart([(0.7, 0.5), (0.71, 0.52)], [(0.7, 0.5)], "DKI").count('class="highlight"')
    1
    >>> "no data" in fingerprint_chart([])
    True
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be an integer from 1 to {MAX_BINS}, got {bins!r}")
    pts = _pairs("points", points)
    marks = _pairs("highlight", highlight)

    size = 320.0
    left, top, legend = 60.0, 36.0, 120.0
    width, height = left + size + legend, top + size + 44
    cell = size / bins
    body = [_text(left + size / 2, 20, title, extra=' font-size="14" font-weight="bold"')]

    counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=[[0.0, 1.0], [0.0, 1.0]])
    cmax = int(counts.max()) if pts.size else 0
    if cmax:
        scale = math.log1p(cmax)
        # crispEdges: anti-aliasing would otherwise leave hairline seams between neighbouring cells.
        body.append('<g shape-rendering="crispEdges">')
        for i, j in zip(*np.nonzero(counts)):
            c = int(counts[i, j])
            body.append(
                f'<rect class="cell" x="{_n(left + i * cell)}" y="{_n(top + (bins - 1 - j) * cell)}" '
                f'width="{_n(cell)}" height="{_n(cell)}" fill="{_ramp(math.log1p(c) / scale)}"/>'
            )
        body.append("</g>")
        # Colour key: up to five swatches spaced geometrically from one TPS per cell to the densest cell.
        kx = left + size + 16
        body.append(_text(kx, top + 8, "n", "start"))
        for k, c in enumerate(sorted({round(cmax ** (q / 4)) for q in range(5)})):
            y = top + 16 + k * 18
            fill = _ramp(math.log1p(c) / scale)
            body.append(f'<rect x="{_n(kx)}" y="{_n(y)}" width="14" height="14" fill="{fill}"/>')
            body.append(_text(kx + 20, y + 11, str(c), "start"))
    else:
        body.append(_text(left + size / 2, top + size / 2, empty_label, extra=' font-size="14"'))
    if len(marks):
        ky = top + 130
        body.append(
            f'<circle class="legend" cx="{_n(left + size + 23)}" cy="{_n(ky)}" r="6" fill="none" '
            f'stroke="{HIGHLIGHT}" stroke-width="2.5"/>'
        )
        body.append(_text(left + size + 34, ky + 4, highlight_label, "start"))

    body.append(
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(size)}" height="{_n(size)}" fill="none" stroke="{INK}"/>'
    )
    for p in (0, 25, 50, 75, 100):
        x = left + p / 100 * size
        y = top + size - p / 100 * size
        body.append(f'<line x1="{_n(x)}" y1="{_n(top + size)}" x2="{_n(x)}" y2="{_n(top + size + 4)}" stroke="{INK}"/>')
        body.append(_text(x, top + size + 17, f"{p}%"))
        body.append(f'<line x1="{_n(left - 4)}" y1="{_n(y)}" x2="{_n(left)}" y2="{_n(y)}" stroke="{INK}"/>')
        body.append(_text(left - 7, y + 4, f"{p}%", "end"))
    body.append(_text(left + size / 2, top + size + 36, x_label))
    mid = top + size / 2
    body.append(_text(14, mid, y_label, extra=f' transform="rotate(-90 14 {_n(mid)})"'))

    # Circles last so they sit above the cells; a white halo under the pink keeps them visible on dark cells.
    for x, y in marks:
        cx, cy = _n(left + x * size), _n(top + size - y * size)
        body.append(f'<circle cx="{cx}" cy="{cy}" r="6" fill="none" stroke="#FFFFFF" stroke-width="4.5"/>')
        body.append(
            f'<circle class="highlight" cx="{cx}" cy="{cy}" r="6" fill="none" stroke="{HIGHLIGHT}" stroke-width="2.5">'
            f"<title>{_esc(f'{x_label} {x:.1%}, {y_label} {y:.1%}')}</title></circle>"
        )
    return _svg(width, height, title or f"{x_label} / {y_label}", body)


def _clock(t: float, both_days: bool) -> str:
    moment = datetime.fromtimestamp(t, WIB)
    return moment.strftime("%d/%m %H:%M WIB" if both_days else "%H:%M WIB")


def timeline_chart(times: Sequence[float], values: Sequence[float], title: str, x_label: str, y_label: str) -> str:
    """A step chart of ``values`` over ``times`` (epoch seconds), e.g. C1 forms arriving through the night.

    Points are sorted by time (stably, so ties keep their order). The x axis is labelled with the
    first and last time in WIB (UTC+7), with the date too when the series crosses midnight.

    >>> svg = timeline_chart([1707883200, 1707886800], [3, 5], "arrivals", "time", "forms")
    >>> svg.startswith("<svg") and "11:00 WIB" in svg and "12:00 WIB" in svg
    True
    """
    ts = _values("times", times)
    vs = _non_negative("values", values)
    if len(ts) != len(vs):
        raise ValueError(f"times and values must have equal lengths, got {len(ts)} and {len(vs)}")
    if not len(ts):
        raise ValueError("timeline_chart needs at least one point")
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]

    width, height = 480.0, 260.0
    left, right, top, bottom = 60.0, 16.0, 36.0, 48.0
    pw, ph = width - left - right, height - top - bottom
    axis_max, ticks, decimals = _ticks(float(vs.max()))
    body = [_text(width / 2, 18, title, extra=' font-size="14" font-weight="bold"')]
    body += _y_axis(ticks, decimals, axis_max, left, top, ph, pw, y_label)

    span = ts[-1] - ts[0]
    # A single instant has no width: put it in the middle rather than divide by zero.
    xs = left + ((ts - ts[0]) / span * pw if span else np.full(len(ts), pw / 2))
    ys = top + ph - vs / axis_max * ph
    # Step after each point: a count holds its value until the next observation replaces it.
    coords = [f"{_n(xs[0])},{_n(ys[0])}"]
    for k in range(1, len(xs)):
        coords.append(f"{_n(xs[k])},{_n(ys[k - 1])}")
        coords.append(f"{_n(xs[k])},{_n(ys[k])}")
    body.append(
        f'<polyline class="series" points="{" ".join(coords)}" fill="none" stroke="{OBSERVED}" stroke-width="2"/>'
    )
    if len(ts) == 1:
        body.append(f'<circle class="series" cx="{_n(xs[0])}" cy="{_n(ys[0])}" r="3" fill="{OBSERVED}"/>')

    base = top + ph
    body.append(f'<line x1="{_n(left)}" y1="{_n(base)}" x2="{_n(left + pw)}" y2="{_n(base)}" stroke="{INK}"/>')
    both_days = datetime.fromtimestamp(ts[0], WIB).date() != datetime.fromtimestamp(ts[-1], WIB).date()
    body.append(_text(left, base + 16, _clock(ts[0], both_days), "start"))
    body.append(_text(left + pw, base + 16, _clock(ts[-1], both_days), "end"))
    body.append(_text(left + pw / 2, base + 36, x_label))
    return _svg(width, height, title, body)
