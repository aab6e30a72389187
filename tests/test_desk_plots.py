"""desk.plots: well-formed, deterministic, escaped SVG whose marks follow the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from desk.plots import digit_chart, fingerprint_chart, timeline_chart

NS = "{http://www.w3.org/2000/svg}"
XSS = "<script>alert(1)</script>"
DIGITS = [str(d) for d in range(10)]
NIGHT = 1707908400  # 2024-02-14 18:00 WIB


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg" and root.get("role") == "img"
    assert root.find(f"{NS}title") is not None
    assert root.get("viewBox") == f"0 0 {root.get('width')} {root.get('height')}"
    return root


def marks(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if e.get("class") == cls]


def texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{NS}text")]


def no_script(svg: str) -> None:
    root = parse(svg)
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1].lower() == "script"]
    assert "<script" not in svg and "&lt;script&gt;" in svg
    # Nothing in the markup may reach outside the string: no links, images or event handlers.
    assert not [a for e in root.iter() for a in e.attrib if a.startswith("on") or a.endswith("href")]


def charts() -> list[str]:
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, 1, size=(500, 2))
    return [
        digit_chart([0.1] * 10, [0.1] * 10, DIGITS, "d"),
        fingerprint_chart(pts, [(0.5, 0.5)], "f"),
        fingerprint_chart([]),
        timeline_chart([NIGHT, NIGHT + 60], [1, 2], "t", "x", "y"),
    ]


@pytest.mark.parametrize("index", range(4))
def test_well_formed_and_deterministic(index):
    first, again = charts()[index], charts()[index]
    parse(first)
    assert first == again
    assert "<script" not in first and "http://" not in first.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_coordinates_have_at_most_two_decimals():
    rng = np.random.default_rng(1)
    svg = digit_chart(rng.uniform(0, 1, 7) / 3, rng.uniform(0, 1, 7) / 3, list("abcdefg"), "x")
    for e in parse(svg).iter():
        for name in ("x", "y", "x1", "y1", "x2", "y2", "width", "height", "cx", "cy"):
            if name in e.attrib:
                assert len(e.get(name).partition(".")[2]) <= 2, (e.tag, name, e.get(name))


def test_digit_bars_follow_the_data():
    observed = [0.05, 0.30, 0.10, 0.00, 0.20, 0.15, 0.02, 0.08, 0.06, 0.04]
    expected = [0.1] * 10
    root = parse(digit_chart(observed, expected, DIGITS, "last digit"))
    bars = marks(root, "rect", "observed")
    heights = [float(b.get("height")) for b in bars]
    assert len(bars) == 10
    assert int(np.argmax(heights)) == int(np.argmax(observed)) == 1
    assert heights[3] == 0
    assert np.argsort(heights, kind="stable").tolist() == np.argsort(observed, kind="stable").tolist()
    # The bars share one baseline, and each bar's tooltip names its category.
    assert len({float(b.get("y")) + float(b.get("height")) for b in bars}) == 1
    assert [b.find(f"{NS}title").text.split(":")[0] for b in bars] == DIGITS
    ticks = marks(root, "line", "expected")
    assert len(ticks) == 10 and len({t.get("y1") for t in ticks}) == 1


def test_digit_expected_ticks_follow_the_data():
    root = parse(digit_chart([0.1] * 3, [0.1, 0.3, 0.2], ["a", "b", "c"], "x"))
    ys = [float(t.get("y1")) for t in marks(root, "line", "expected")]
    assert ys[1] < ys[2] < ys[0]  # SVG y grows downwards: a higher expectation sits higher


def test_digit_axis_and_legend():
    root = parse(digit_chart([0.1] * 10, [0.12] * 10, DIGITS, "x", "proporsi",
                             observed_label="teramati", expected_label="diharapkan"))  # fmt: skip
    labels = texts(root)
    assert {"teramati", "diharapkan", "proporsi"} <= set(labels)
    ticks = [t for t in labels if t.replace(".", "").isdigit() and "." in t]
    assert 3 <= len(ticks) <= 5 and float(ticks[0]) == 0 and float(ticks[-1]) >= 0.12


@pytest.mark.parametrize("top", [1e-4, 0.012, 0.15, 1.0, 7, 99, 101, 12_345])
def test_digit_y_ticks_cover_the_data(top):
    root = parse(digit_chart([top, top / 2], [0, 0], ["a", "b"], "x"))
    ticks = [float(t) for t in texts(root) if t.replace(".", "").isdigit()]
    assert 3 <= len(ticks) <= 5 and ticks[0] == 0 and ticks[-1] >= top
    tallest = max(float(b.get("height")) for b in marks(root, "rect", "observed"))
    assert tallest > 0


def test_digit_labels_are_escaped():
    svg = digit_chart([0.5, 0.5], [0.5, 0.5], [XSS, 'a"b&c'], XSS, XSS, observed_label=XSS, expected_label=XSS)
    no_script(svg)
    root = parse(svg)
    assert root.find(f"{NS}title").text == XSS
    assert XSS in texts(root)
    assert "a&quot;b&amp;c" in svg


def test_control_characters_are_dropped():
    root = parse(digit_chart([1.0], [1.0], ["a\x00b\x1bc"], "t\x0bitle"))
    assert root.find(f"{NS}title").text == "title" and "abc" in texts(root)


def test_all_zero_digits_still_draw():
    root = parse(digit_chart([0.0] * 10, [0.0] * 10, DIGITS, "empty"))
    assert [float(b.get("height")) for b in marks(root, "rect", "observed")] == [0.0] * 10


def test_many_categories_thin_the_labels():
    names = [f"{n:02d}" for n in range(100)]
    root = parse(digit_chart([0.01] * 100, [0.01] * 100, names, "x"))
    assert len(marks(root, "rect", "observed")) == 100
    assert sum(t in names for t in texts(root)) <= 20


@pytest.mark.parametrize(
    ("observed", "expected", "labels", "match"),
    [
        ([0.1, 0.2], [0.1], ["a", "b"], "equal lengths"),
        ([0.1, 0.2], [0.1, 0.2], ["a"], "equal lengths"),
        ([], [], [], "1 to 100"),
        ([0.01] * 101, [0.01] * 101, ["x"] * 101, "1 to 100"),
        ([0.1, float("nan")], [0.1, 0.1], ["a", "b"], "observed contains a NaN"),
        ([0.1, 0.1], [float("inf"), 0.1], ["a", "b"], "expected contains a NaN or infinite value at index 0"),
        ([0.1, -0.1], [0.1, 0.1], ["a", "b"], "observed contains a negative value at index 1"),
        ([0.1, "x"], [0.1, 0.1], ["a", "b"], "observed must be a sequence of numbers"),
        ([[0.1], [0.2]], [0.1, 0.1], ["a", "b"], "flat sequence"),
    ],
)
def test_digit_validation(observed, expected, labels, match):
    with pytest.raises(ValueError, match=match):
        digit_chart(observed, expected, labels, "x")


def test_fingerprint_cells_match_the_histogram():
    rng = np.random.default_rng(3)
    pts = np.column_stack([rng.beta(20, 6, 5000), rng.beta(10, 10, 5000)])
    pts[:5] = [[1.5, 0.5], [-0.2, 0.5], [0.5, 1.0], [float("nan"), 0.5], [0.5, float("inf")]]
    for bins in (1, 10, 40):
        root = parse(fingerprint_chart(pts.tolist(), bins=bins))
        finite = pts[np.isfinite(pts).all(axis=1)].clip(0, 1)
        counts, _, _ = np.histogram2d(finite[:, 0], finite[:, 1], bins=bins, range=[[0, 1], [0, 1]])
        cells = marks(root, "rect", "cell")
        assert len(cells) == np.count_nonzero(counts)
        assert {float(c.get("width")) for c in cells} == {round(320 / bins, 2)}


def test_fingerprint_cell_places_and_shades():
    # Three TPS in the top-right cell, one in the bottom-left: the denser cell is drawn darker and higher up.
    root = parse(fingerprint_chart([(0.99, 0.99)] * 3 + [(0.01, 0.01)], bins=2))
    top_right, bottom_left = sorted(marks(root, "rect", "cell"), key=lambda c: float(c.get("y")))
    assert float(top_right.get("x")) > float(bottom_left.get("x"))

    def lightness(cell: ET.Element) -> int:
        return sum(int(cell.get("fill")[k : k + 2], 16) for k in (1, 3, 5))

    assert lightness(top_right) < lightness(bottom_left)


def test_fingerprint_highlight_circles():
    pts = [(0.6, 0.5), (0.7, 0.55)]
    highlight = [(0.6, 0.5), (0.98, 0.97), (1.2, -0.1)]
    root = parse(fingerprint_chart(pts, highlight, "x"))
    circles = marks(root, "circle", "highlight")
    assert len(circles) == len(highlight)
    # Circles are drawn after the cells so nothing covers them; off-range points sit on the frame.
    order = [e.get("class") for e in root.iter() if e.get("class") in ("cell", "highlight")]
    assert order == ["cell"] * 2 + ["highlight"] * 3
    assert (float(circles[2].get("cx")), float(circles[2].get("cy"))) == (60 + 320, 36 + 320)
    assert not marks(parse(fingerprint_chart(pts)), "circle", "highlight")


def test_fingerprint_axes_and_labels():
    svg = fingerprint_chart([(0.5, 0.5)], [(0.5, 0.5)], XSS, x_label=XSS, y_label="suara", highlight_label=XSS)
    no_script(svg)
    labels = texts(parse(svg))
    assert all(labels.count(f"{p}%") == 2 for p in (0, 25, 50, 75, 100))
    assert "suara" in labels


@pytest.mark.parametrize("points", [[], [(float("nan"), 0.5)], np.empty((0, 2))])
def test_fingerprint_without_data(points):
    root = parse(fingerprint_chart(points, empty_label="tidak ada data"))
    assert "tidak ada data" in texts(root)
    assert not marks(root, "rect", "cell")
    assert "no data" in texts(parse(fingerprint_chart(points)))


def test_fingerprint_scales_to_200k_points():
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.beta(20, 6, 200_000), rng.beta(10, 10, 200_000)])
    svg = fingerprint_chart(pts, [(0.8, 0.5)])
    root = parse(svg)
    counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=40, range=[[0, 1], [0, 1]])
    assert len(marks(root, "rect", "cell")) == np.count_nonzero(counts)
    assert len(svg) < 200_000  # bounded by the grid, not by the number of TPS


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points": [(0.1, 0.2, 0.3)]}, r"\(x, y\) pairs"),
        ({"points": [0.1, 0.2]}, r"\(x, y\) pairs"),
        ({"points": [("a", 0.2)]}, r"\(x, y\) pairs"),
        ({"points": [], "highlight": [(1, 2, 3)]}, "highlight"),
        ({"points": [], "bins": 0}, "bins"),
        ({"points": [], "bins": 201}, "bins"),
        ({"points": [], "bins": 2.5}, "bins"),
    ],
)
def test_fingerprint_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fingerprint_chart(**kwargs)


def test_timeline_follows_the_data():
    times = [NIGHT + 600, NIGHT, NIGHT + 1800]  # unsorted on purpose
    values = [5, 2, 9]
    root = parse(timeline_chart(times, values, "arrivals", "waktu", "formulir"))
    (line,) = marks(root, "polyline", "series")
    xy = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
    # Step after: (t0, v0) (t1, v0) (t1, v1) (t2, v1) (t2, v2), sorted by time.
    assert len(xy) == 5
    xs, ys = [p[0] for p in xy], [p[1] for p in xy]
    assert xs == sorted(xs) and xs[1] == xs[2] and xs[3] == xs[4]
    assert ys[0] == ys[1] > ys[2] == ys[3] > ys[4]
    assert {"18:00 WIB", "18:30 WIB", "waktu", "formulir"} <= set(texts(root))


def test_timeline_across_midnight_shows_dates():
    labels = texts(parse(timeline_chart([NIGHT, NIGHT + 8 * 3600], [1, 2], "t", "x", "y")))
    assert {"14/02 18:00 WIB", "15/02 02:00 WIB"} <= set(labels)


def test_timeline_single_point():
    root = parse(timeline_chart([NIGHT], [0], "t", "x", "y"))
    assert len(marks(root, "circle", "series")) == 1
    assert texts(root).count("18:00 WIB") == 2


def test_timeline_is_escaped():
    no_script(timeline_chart([NIGHT], [1], XSS, XSS, XSS))


@pytest.mark.parametrize(
    ("times", "values", "match"),
    [
        ([NIGHT, NIGHT + 1], [1], "equal lengths"),
        ([], [], "at least one point"),
        ([NIGHT, float("nan")], [1, 2], "times contains a NaN"),
        ([NIGHT, NIGHT + 1], [1, float("inf")], "values contains a NaN"),
        ([NIGHT, NIGHT + 1], [1, -1], "negative"),
    ],
)
def test_timeline_validation(times, values, match):
    with pytest.raises(ValueError, match=match):
        timeline_chart(times, values, "t", "x", "y")
