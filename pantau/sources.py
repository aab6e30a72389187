"""Reading submissions from files: JSONL envelopes and the flattened Sirekap CSV.

* ``.jsonl`` / ``.jsonl.gz``: one envelope per line, ``{"kode_tps", "jenis", "doc", "received_at"?}``.
* ``.csv`` / ``.csv.gz``: one PPWP TPS per row as in ``tps_latest_dev.csv.gz`` (``paslon_01..03`` and the
  18 administrasi columns; an empty cell is null). When a ``version`` column is present, rows are
  successive versions of a TPS, in file order. Region code columns, when present, must agree with the
  TPS code.

Every record comes out as a :class:`Record`: either a validated envelope or the reason it was refused.
Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pantau.schemas import ADMIN_FIELDS, Envelope, InvalidSubmission, parse_envelope

PPWP_CANDIDATES = {"paslon_01": "100025", "paslon_02": "100026", "paslon_03": "100027"}
REGION_COLUMNS = {"provinsi_kode": 2, "kabkota_kode": 4, "kecamatan_kode": 6, "kelurahan_kode": 10}


@dataclass(frozen=True, slots=True)
class Record:
    """One input record: where it came from, and the envelope or the reason it was refused.

    ``raw`` holds the original bytes of refused records (valid CSV rows do not need them).
    """

    source: str
    line: int
    raw: bytes = field(repr=False)
    envelope: Envelope | None = None
    error: InvalidSubmission | None = None


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="surrogateescape", newline="")
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


def _bad_cell(column: str, text: str) -> int:
    stripped = text.strip()
    if stripped.startswith("-") and stripped[1:].isdigit():
        return int(stripped)  # a negative count: the schema refuses it with its own reason
    raise InvalidSubmission("schema", f"column {column}: {text[:40]!r} is not a whole number")


class CsvLayout:
    """Column positions of one flattened CSV header, resolved once per file."""

    def __init__(self, header: list[str]):
        if "kode_tps" not in header:
            raise InvalidSubmission("schema", "not a Sirekap CSV (no kode_tps column)")
        index = {name: i for i, name in enumerate(header)}
        self.width = len(header)
        self.kode = index["kode_tps"]
        self.regions = [(index[c], c, n) for c, n in REGION_COLUMNS.items() if c in index]
        self.tps_no = index.get("tps_no")
        self.candidates = [(index[c], c, cid) for c, cid in PPWP_CANDIDATES.items() if c in index]
        self.admin = [(index[name], name) for name in ADMIN_FIELDS if name in index]
        self.chart_source = index.get("chart_source")
        self.ts = index.get("ts")

    def envelope(self, row: list[str]) -> Envelope:
        """Build and validate the envelope of one row (PPWP)."""
        kode = row[self.kode].strip()
        for i, column, length in self.regions:
            if row[i] and row[i] != kode[:length]:
                raise InvalidSubmission("kode_tps", f"{column} {row[i]!r} does not match kode_tps {kode!r}")
        if self.tps_no is not None and row[self.tps_no] and row[self.tps_no] != kode[10:]:
            raise InvalidSubmission("kode_tps", f"tps_no {row[self.tps_no]!r} does not match kode_tps {kode!r}")
        votes = {}
        for i, column, cid in self.candidates:
            text = row[i]
            votes[cid] = int(text) if text.isascii() and text.isdigit() else None if text == "" else _bad_cell(column, text)
        admin = {}
        for i, name in self.admin:
            text = row[i]
            admin[name] = int(text) if text.isascii() and text.isdigit() else None if text == "" else _bad_cell(name, text)
        has_chart = any(v is not None for v in votes.values()) or (self.chart_source is not None and row[self.chart_source])
        doc = {
            "chart": {"null": None, **votes} if has_chart else None,
            "administrasi": admin if any(v is not None for v in admin.values()) else None,
            "ts": (row[self.ts] or None) if self.ts is not None else None,
        }
        return parse_envelope({"kode_tps": kode, "jenis": "ppwp", "doc": doc})


#: Which records a reader validates: a predicate on the record's TPS code (None when it has none).
Owned = Callable[[str | None], bool]


def shard_of(kode_tps: str | None, shards: int) -> int:
    """The shard of a TPS code among ``shards``: by kabupaten/kota, so that a TPS's versions and every
    region sum it feeds (kecamatan, kabupaten/kota) stay in one shard; records without a code go to 0.

    >>> shard_of("3404010001001", 2) == shard_of("3404999999999", 2), shard_of(None, 2)
    (True, 0)
    """
    if not kode_tps:
        return 0
    return zlib.crc32(kode_tps[:4].encode("utf-8", "surrogatepass")) % shards


def _kode_of(line: bytes) -> str | None:
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    kode = decoded.get("kode_tps") if isinstance(decoded, dict) else None
    return kode if isinstance(kode, str) else None


def _read_jsonl(path: Path, owned: Owned | None) -> Iterator[Record | int]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            if owned is not None and not owned(_kode_of(line)):
                yield number
                continue
            try:
                yield Record(str(path), number, line, envelope=parse_envelope(line))
            except InvalidSubmission as exc:
                yield Record(str(path), number, line, error=exc)


def _read_csv(path: Path, owned: Owned | None) -> Iterator[Record | int]:
    with _open_text(path) as text:
        reader = csv.reader(text)
        layout = CsvLayout(next(reader, []))
        for row in reader:
            if owned is not None and not owned(row[layout.kode].strip() if len(row) == layout.width else None):
                yield reader.line_num
                continue
            try:
                if len(row) != layout.width:
                    raise InvalidSubmission("schema", f"row has {len(row)} cells, header has {layout.width}")
                yield Record(str(path), reader.line_num, b"", envelope=layout.envelope(row))
            except InvalidSubmission as exc:
                raw = ",".join(row).encode("utf-8", "surrogateescape")
                yield Record(str(path), reader.line_num, raw, error=exc)


def read_records(path: str | Path) -> Iterator[Record]:
    """Records of one input file, in file order; the format is chosen by the file name.

    A file that cannot be read to its end (unknown format, truncated gzip, I/O error) ends in one
    refused record that says why and where; the records before it stand.
    """
    for record in read_owned_records(path, None):
        assert record is not None
        yield record


def read_owned_records(path: str | Path, owned: Owned | None) -> Iterator[Record | None]:
    """:func:`read_records` for one of several processes sharing a file: every record in file order,
    ``None`` in place of those ``owned`` declines (looked at only for their TPS code, not validated).
    A refused record without a TPS code, such as a file's unreadable end, is ``owned(None)``'s."""
    path = Path(path)
    name = path.name.removesuffix(".gz")
    line = 0
    try:
        if name.endswith((".jsonl", ".json")):
            records = _read_jsonl(path, owned)
        elif name.endswith(".csv"):
            records = _read_csv(path, owned)
        else:
            raise InvalidSubmission("schema", "unknown input format (expected .jsonl or .csv, optionally .gz)")
        for record in records:  # a record, or the line number of one declined
            if isinstance(record, int):
                line = record
                yield None
            else:
                line = record.line
                yield record
    except InvalidSubmission as exc:
        if owned is None or owned(None):
            yield Record(str(path), line, b"", error=exc)
        else:
            yield None
    except (OSError, EOFError, UnicodeError, csv.Error) as exc:
        if owned is None or owned(None):
            yield Record(str(path), line, b"", error=InvalidSubmission("schema", f"file unreadable after line {line}: {exc}"))
        else:
            yield None
