"""Read registry exports into canonical record tables, and write outputs atomically.

Owns file formats and encodings; imports config, schema, errors and (for ``read_records``,
the one read-sort-standardize entry point) the standardize stage. Every column is read as
text so IDs and phones keep leading zeros and a trailing X.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import logging
import math
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import RunConfig, SourceConfig
from linkage.errors import InputError, OutputError, is_out_of_space, out_of_space_message
from linkage.progress import ProgressLike, as_progress, release_memory

# neutralize_formulas and restore_formulas are re-exported
from linkage.spreadsheet import holds_bytes, neutralize_formulas, restore_formulas  # noqa: F401
from linkage.standardize._distinct import (
    PARALLEL_MIN_DISTINCT,
    DistinctResults,
    warm_up,
    worker_process,
)
from linkage.standardize.combine import FIELDS, BatchFacts, _arrow_text, standardize
from linkage.tables import _is_text_dtype, categorical_arrow, shared_text, text_columns

logger = logging.getLogger(__name__)

# Records from which ``read_records_chunks(compact=True)`` holds few-valued text as codes in
# one go: at 997,721 records the reading child's peak (1.3 GB) is below the run's later
# stages' (1.4-1.5 GB) and the codes cost ~1 s; at 2,993,950 it was the run's peak
COMPACT_MIN_RECORDS = 2_000_000

# GBK and GB2312 are decoded as GB18030, their superset: a GB18030-only character breaks
# the gbk codec, and gb2312 turns the middle dot of minority names into U+30FB.
_CODEC = {"gbk": "gb18030", "gb2312": "gb18030", "utf-8": "utf-8", "utf-8-sig": "utf-8-sig"}

# Characters of GB2312 level 1 (the 3,755 most common Han characters): real Chinese
# text decodes mostly into them, a Big5 file decoded as GB18030 mostly does not.
_COMMON_HAN_SHARE = 0.6


def _is_common_han(ch: str) -> bool:
    try:
        b = ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(b) == 2 and 0xB0 <= b[0] <= 0xD7


def _han_plausibility(text: str, sample: int = 20000) -> float:
    """Return the share of common Han characters among the non-ASCII letters of ``text``
    (Han, kana, accented Latin, private use; 1.0 if none): a wrong decode yields rare Han
    characters and stray kana or symbols (陳大文 in Big5 read as GB18030 gives 朝ゅ)."""
    common = letters = 0
    for c in text[:sample]:
        if c < "\x80":
            continue
        if "\u4e00" <= c <= "\u9fff":
            letters += 1
            common += _is_common_han(c)
        elif unicodedata.category(c)[0] == "L" or unicodedata.category(c) == "Co":
            letters += 1
    return common / letters if letters else 1.0


def _traditional_to_simplified(text: str, sample: int = 20000) -> str:
    import opencc

    return opencc.OpenCC("t2s").convert(text[:sample])


def undecodable_error(encoding: str, byte: int, line: int, path: str) -> InputError:
    """The error for bytes of ``path`` that ``encoding`` cannot decode, at byte offset
    ``byte`` on line ``line`` (1-based): :func:`decode_bytes`' and the Spark reader's."""
    return InputError(
        f"cannot be decoded as {encoding} (byte {byte}); check 'encoding' in the config",
        path=path,
        row=line,
    )


def decode_bytes(data: bytes, encoding: str = "auto", *, path: str = "") -> tuple[str, str]:
    """Decode a file's bytes; return (text, encoding used). ``auto`` detects UTF-8/GB18030/Big5."""
    if encoding != "auto":
        codec = _CODEC.get(encoding, encoding)
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise undecodable_error(encoding, exc.start, line, path) from None
        return text.removeprefix("\ufeff"), encoding
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise InputError(
                f"starts with a UTF-8 mark but line {_line_of(data, exc.start + 3)} (byte "
                f"{exc.start + 3}) is not UTF-8: a line pasted from another encoding?",
                path=path,
            ) from None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        utf8_fails = exc.start
    # each candidate's text scored then dropped, the winner decoded again: two texts of a
    # large file (and Big5's simplified copy) were held at once
    candidates: list[tuple[float, str]] = []
    for codec in ("gb18030", "big5"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        # Big5 holds traditional characters, which GB2312's common simplified ones do not
        # include: judged in simplified form (陳大文 -> 陈大文), as the names will be
        scored = _traditional_to_simplified(text) if codec == "big5" else text
        del text
        candidates.append((_han_plausibility(scored), codec))
        del scored
    if candidates:
        score, codec = max(candidates, key=lambda c: (c[0], c[1] == "gb18030"))
        if score >= _COMMON_HAN_SHARE:
            return data.decode(codec), codec
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        text = str(best)
        if _han_plausibility(text) >= _COMMON_HAN_SHARE:
            return text, best.encoding
    raise InputError(
        "could not detect the text encoding (tried UTF-8, GB18030, Big5; UTF-8 fails first "
        f"at line {_line_of(data, utf8_fails)}, byte {utf8_fails}: a line from another "
        "encoding?): set 'encoding' in the source config",
        path=path,
    )


def _line_of(data: bytes, offset: int) -> int:
    """1-based line number of a byte offset."""
    return data[:offset].count(b"\n") + 1


# Malformed lines named in one error; more are counted, not listed.
_MAX_LINES_LISTED = 200
# Placeholder names of columns without a header; the reader drops them when empty.
_UNNAMED = "\x00unnamed:{}"


def _csv_records(text: str, delimiter: str, path: str, first_line: int = 1):
    """Yield (first line, line after the last, fields) of each CSV record; empty lines skipped.

    Python's csv module is the slow, exact path: it reports where each record starts,
    which the multithreaded Arrow reader cannot.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    line = first_line
    try:
        for row in reader:
            start, line = line, first_line + reader.line_num
            if row:
                yield start, line, row
    except csv.Error as exc:
        raise InputError(
            f"CSV cannot be parsed ({exc}); a quote may be left open", path=path, row=line
        ) from None


def _csv_rows(text: str, delimiter: str, path: str, first_line: int = 1):
    """Yield (first line number, fields) of each CSV record; empty lines are skipped."""
    for start, _end, row in _csv_records(text, delimiter, path, first_line):
        yield start, row


def _is_blank(fields: list[str]) -> bool:
    return not any(f.strip() for f in fields)


# Characters of a CSV file's head that _csv_layout parses first (more where its first
# data row does not end inside them).
_LAYOUT_HEAD = 1 << 16


def _csv_layout(text: str, cfg: SourceConfig) -> tuple[list[str], int, str]:
    """Return (column names, header line count, body text) of a CSV file
    (:func:`_csv_layout_at`, the body cut out)."""
    names, header_lines, body_start = _csv_layout_at(text, cfg)
    return names, header_lines, text[body_start:]


def _csv_layout_at(text: str, cfg: SourceConfig) -> tuple[list[str], int, int]:
    """Return (column names, header line count, where the body starts in ``text``) of a
    CSV file.

    The field count every line must have is the header's, except that lines ending in a
    delimiter add an unnamed empty column: when the header and the first data line differ
    only by empty trailing fields, the first data line's count is taken. Columns without a
    header get placeholder names (``_UNNAMED``); duplicate headers are an error.
    """
    return _csv_layout_of(lambda size: (text[:size], size >= len(text)), cfg)


def _csv_layout_of(
    head: Callable[[int], tuple[str, bool]], cfg: SourceConfig
) -> tuple[list[str], int, int]:
    """:func:`_csv_layout_at` of a text given by its head: ``head(size)`` is (the first
    ``size`` characters, whether they are the whole text)."""
    path = str(cfg.path)
    # Parsed from the head of the text: a StringIO of the whole file copies all of it (~2 s
    # per million records). The head is long enough once the first data row ends inside it.
    size = _LAYOUT_HEAD
    while True:
        part, whole = head(size)
        handle = io.StringIO(part, newline="")
        reader = csv.reader(handle, delimiter=cfg.delimiter, strict=True)
        try:
            header = next((row for row in reader if row), None)
            header_lines = reader.line_num
            body_start = handle.tell()
            first = next((row for row in reader if row), None)
        except csv.Error as exc:
            if not whole:
                size *= 16
                continue
            raise InputError(
                f"CSV cannot be parsed ({exc})", path=path, row=reader.line_num
            ) from None
        if whole or (first is not None and handle.tell() < len(part)):
            break
        size *= 16
    if header is None:
        raise InputError("file is empty (no header row)", path=path)
    names = [clean_header(h) for h in header]
    if first is not None and len(first) != len(names):
        extra = first[len(names) :] if len(first) > len(names) else names[len(first) :]
        if all(not f.strip() for f in extra):
            names = (names + [""] * len(first))[: len(first)]
    check_unique_headers(names, path)
    names = [n or _UNNAMED.format(i + 1) for i, n in enumerate(names)]
    return names, header_lines, body_start


def clean_header(name: str) -> str:
    """A header as both readers name its column: spaces and a byte-order mark trimmed."""
    return name.strip().removeprefix("\ufeff").strip()


def check_unique_headers(names: list[str], path: str) -> None:
    """Raise an InputError naming every header given to more than one column (``names``
    after :func:`clean_header`; the empty name is a column without a header)."""
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        if name:
            seen.setdefault(name, []).append(i + 1)
    dups = {n: cols for n, cols in seen.items() if len(cols) > 1}
    if dups:
        listed = "; ".join(
            f"'{n}' in columns {', '.join(map(str, cols))}" for n, cols in dups.items()
        )
        raise InputError(
            f"header names a column more than once (after trimming spaces): {listed}", path=path
        )


def _bad_field_counts(
    body: str, names: list[str], cfg: SourceConfig, first_line: int
) -> list[tuple[int, str, int, int]]:
    """(line, raw text, fields, fields expected) of every line whose field count is not
    ``len(names)``."""
    expected = len(names)
    lines = body.split("\n")
    return [
        (
            start,
            "\n".join(lines[start - first_line : end - first_line]).rstrip("\r"),
            len(row),
            expected,
        )
        for start, end, row in _csv_records(body, cfg.delimiter, str(cfg.path), first_line)
        if len(row) != expected and not _is_blank(row)
    ]


class _PieceStream(io.RawIOBase):
    """A read-only binary stream made a piece at a time: ``_next_piece`` returns the next
    bytes (possibly empty), or None at the end."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next_piece(self) -> bytes | None:
        raise NotImplementedError

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (a short count only at the end of the stream; 0: the end)."""
        out, done = memoryview(buffer).cast("B"), 0
        while done < len(out):
            if not len(self._pending):
                piece = self._next_piece()
                if piece is None:
                    break  # end of stream
                self._pending = memoryview(piece)
                continue
            n = min(len(out) - done, len(self._pending))
            out[done : done + n] = self._pending[:n]
            self._pending = self._pending[n:]
            done += n
        return done


class _EncodedText(_PieceStream):
    """A read-only binary stream of ``text[start:]`` as UTF-8, encoded a slice at a time as
    it is read: neither the body's copy nor its whole UTF-8 bytes are made for pyarrow."""

    SLICE = 1 << 22  # characters encoded at a time

    def __init__(self, text: str, start: int = 0):
        super().__init__()
        self._text, self._at = text, start

    def _next_piece(self) -> bytes | None:
        if self._at >= len(self._text):
            return None
        end = self._at + self.SLICE
        piece = self._text[self._at : end].encode("utf-8")
        self._at = end
        return piece


def _read_csv_arrow(body: str, names: list[str], cfg: SourceConfig) -> pd.DataFrame | None:
    """Parse with pyarrow (multithreaded, trims in C++); None when a line has the wrong
    field count (collected by the invalid-row handler) or Arrow cannot parse the file."""
    table = _parse_csv_arrow(_EncodedText(body), names, cfg)
    if table is None:
        return None
    names, parsed = table.column_names, table.columns
    del table
    return _arrow_csv_frame(parsed, names)


def _parse_csv_arrow(stream: Any, names: list[str], cfg: SourceConfig) -> Any:
    """The pyarrow table (text columns) of a CSV body read from the binary ``stream``, or
    None when a line has the wrong field count or Arrow cannot parse it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not cfg.delimiter.isascii():
        return None  # pyarrow splits on ASCII only: a full-width comma takes the exact reader
    invalid: list[str] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # a line of spaces or delimiters only carries no data: skipped like an empty line
        if row.text.replace(cfg.delimiter, "").strip():
            invalid.append(row.text)
        return "skip"

    try:
        table = pacsv.read_csv(
            stream,
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(
                delimiter=cfg.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in names},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return None if invalid else table


def _trimmed(column: Any) -> Any:
    """A parsed CSV text column trimmed of whitespace (Arrow's Unicode whitespace), blanks
    null: the readers' form of a cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.utf8_trim_whitespace(column)
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _arrow_csv_frame(parsed: list, names: list[str]) -> pd.DataFrame:
    """The parsed CSV table's columns ``parsed`` (the caller holds no table of them) as
    trimmed object columns named ``names`` with None for blanks; each entry of ``parsed``
    is set to None once converted."""
    # A column at a time, each parsed column dropped once converted: the parsed table, its
    # trimmed copy and the Python columns were all held at once (the reading stage's peak).
    # Arrow-backed first, so shared_text makes one Python string per distinct value.

    def convert(i: int) -> pd.Series:
        col = _trimmed(parsed[i])
        parsed[i] = None
        values = shared_text(pd.Series(col, dtype=pd.ArrowDtype(col.type)))
        del col
        return pd.Series(values, dtype=object, copy=False)

    # Two columns at a time: the trimming and hashing of one (pyarrow, without the
    # interpreter lock) run while the other's strings are made
    with ThreadPoolExecutor(max_workers=2) as pool:
        columns = dict(zip(names, pool.map(convert, range(len(names))), strict=True))
    return pd.DataFrame(columns, copy=False) if columns else pd.DataFrame(columns=names)


def _read_csv_python(body: str, names: list[str], cfg: SourceConfig, first_line: int):
    """The exact fallback: the records of the right field count as trimmed text."""
    rows = [
        [f.strip() or None for f in row]
        for _line, row in _csv_rows(body, cfg.delimiter, str(cfg.path), first_line)
        if len(row) == len(names)
    ]
    return pd.DataFrame(rows, columns=names, dtype=object)


def _drop_unnamed(
    frame: pd.DataFrame, body: str | Callable[[], str], cfg: SourceConfig, first_line: int
):
    """Drop empty columns without a header; one holding values is an error naming its lines
    (``body``: the CSV body, or a function reading it again)."""
    unnamed = _unnamed_columns(
        list(frame.columns), lambda c: bool(frame[c].notna().any()), body, cfg, first_line
    )
    return frame.drop(columns=unnamed)


def _unnamed_columns(
    columns: list[str],
    holds_values: Callable[[str], bool],
    body: str | Callable[[], str],
    cfg: SourceConfig,
    first_line: int,
) -> list[str]:
    """The columns without a header (to drop); raise InputError naming the lines of any
    that holds a value (``holds_values(column)``)."""
    unnamed = [c for c in columns if c.startswith(_UNNAMED.format(""))]
    held = [c for c in unnamed if holds_values(c)]
    if held:
        body = body() if callable(body) else body
        positions = [columns.index(c) for c in held]
        lines = [
            line
            for line, row in _csv_rows(body, cfg.delimiter, str(cfg.path), first_line)
            if len(row) == len(columns) and any(row[i].strip() for i in positions)
        ]
        listed = ", ".join(map(str, lines[:_MAX_LINES_LISTED]))
        raise InputError(
            f"column(s) {', '.join(str(i + 1) for i in positions)} have no header but hold "
            f"values on {len(lines)} line(s): {listed}; name them in the header",
            path=str(cfg.path),
        )
    return unnamed


class _CsvLines:
    """Where each row of a CSV table came from: line numbers and raw text, found only when
    a message or the bad-rows file needs them (a second pass of the exact reader)."""

    unit = "line"

    def __init__(
        self, body: str | Callable[[], str], width: int, cfg: SourceConfig, first_line: int
    ):
        # ``body``: the text, or a function reading it again from the file when first needed
        self._body, self.width, self.cfg, self.first_line = body, width, cfg, first_line
        self._spans: list[tuple[int, int]] | None = None

    @property
    def body(self) -> str:
        """The CSV body (the text after the header lines)."""
        if callable(self._body):
            self._body = self._body()
        return self._body

    def lines(self, positions: list[int]) -> list[int]:
        spans = self.spans()
        return [spans[i][0] for i in positions]

    def spans(self) -> list[tuple[int, int]]:
        if self._spans is None:
            self._spans = [
                (start, end)
                for start, end, row in _csv_records(
                    self.body, self.cfg.delimiter, str(self.cfg.path), self.first_line
                )
                if len(row) == self.width
            ]
        return self._spans

    def raw(self, positions: list[int]) -> list[str]:
        lines = self.body.split("\n")
        spans = self.spans()
        return [
            "\n".join(lines[spans[i][0] - self.first_line : spans[i][1] - self.first_line]).rstrip(
                "\r"
            )
            for i in positions
        ]


class _FrameRows:
    """Where each row of a sheet or Parquet table came from: its row number (a sheet's row,
    or 1 + position in a Parquet file) and its cells written as one CSV line."""

    unit = "row"

    def __init__(self, frame: pd.DataFrame, offset: int):
        self.frame, self.offset = frame, offset

    def lines(self, positions: list[int]) -> list[int]:
        return [int(self.frame.index[i]) + self.offset for i in positions]

    def raw(self, positions: list[int]) -> list[str]:
        out = []
        for i in positions:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(
                ["" if v is None else v for v in self.frame.iloc[i].tolist()]
            )
            out.append(buffer.getvalue())
        return out


def _read_csv_text(
    text: str, cfg: SourceConfig
) -> tuple[pd.DataFrame, list[tuple[int, str, int, int]], _CsvLines]:
    """Read CSV text into a trimmed all-text table with nulls for blanks.

    Returns the table, the lines whose field count differs from the header's (left out of
    the table) as (line, raw text, reason), and where each kept row came from. Raises
    InputError for an empty file, duplicate headers, an open quote and values under a
    column without header.
    """
    path = str(cfg.path)
    if not text.strip():
        raise InputError("file is empty (no header row)", path=path)
    names, header_lines, body = _csv_layout(text, cfg)
    del text
    return _read_csv_body(names, header_lines, body, cfg)


def _read_csv_body(
    names: list[str], header_lines: int, body: str, cfg: SourceConfig
) -> tuple[pd.DataFrame, list[tuple[int, str, int, int]], _CsvLines]:
    """:func:`_read_csv_text` from the layout (header names, header line count, body)."""
    first_line = header_lines + 1
    frame = _read_csv_arrow(body, names, cfg)
    bad: list[tuple[int, str, int, int]] = []
    if frame is None:
        bad = _bad_field_counts(body, names, cfg, first_line)
        frame = _read_csv_python(body, names, cfg, first_line)
    frame = _drop_unnamed(frame, body, cfg, first_line)
    frame.attrs["clean_text"] = True  # already trimmed text with None for blanks
    return frame, bad, _CsvLines(body, len(names), cfg, first_line)


# Excel keeps 15 significant digits: an integral number at or above 1e15 held in a float
# has lost digits (an 18-digit ID becomes 110105198001011000 or 1.10105198001011E+17).
_EXCEL_EXACT_LIMIT = 1e15
# Float64 holds every integer below 2**53 exactly (Parquet/pandas float columns).
_FLOAT_EXACT_LIMIT = 2.0**53
# A number in scientific notation as Excel or pandas writes it ("1.10105E+17"): a key that
# went through a float; the sign or the decimal point keeps codes like "2021E001" out.
_SCIENTIFIC = re.compile(r"[+-]?\d+(\.\d*)?[eE][+-]\d+|[+-]?\d+\.\d*[eE]\d+")


def _number_text(value: float, exact_limit: float) -> tuple[str, bool]:
    """Text of a float cell and whether it is exact: integral values below the limit lose
    their '.0'; larger ones keep their float look (``1.101051980010112e+17``) so the
    ID standardizer flags them ``id_float_damaged`` rather than trusting made-up digits."""
    if not math.isfinite(value):
        return "", True
    if value == int(value):
        if abs(value) < exact_limit:
            return str(int(value)), True
        return repr(value), False
    return repr(value), True


def _cell_text(value: object, exact_limit: float = _FLOAT_EXACT_LIMIT) -> tuple[str | None, bool]:
    """Text of one cell of any type, and whether it is exact; None for blanks."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None, True
    if isinstance(value, str):
        return (value.strip() or None), True
    if isinstance(value, bool | np.bool_):
        return str(bool(value)), True
    if isinstance(value, int | np.integer):
        return str(int(value)), True
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None, True
        text, exact = _number_text(float(value), exact_limit)
        return (text or None), exact
    if isinstance(value, datetime.datetime):
        if value.time() == datetime.time(0):
            return value.date().isoformat(), True
        return value.isoformat(sep=" "), True
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat(), True
    if isinstance(value, decimal.Decimal):  # exact: a Parquet decimal(20, 2) ID keeps its digits
        if value.is_finite() and value == value.to_integral_value():
            return str(int(value)), True
        return str(value), True
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").strip() or None, True
    return (str(value).strip() or None), True


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn every column into strings, keeping nulls; integers keep all their digits.

    Float columns print integral values below 2**53 without '.0' and larger ones in their
    float form (visible damage); object columns holding numbers, dates or decimals are
    converted value by value instead of being nulled by ``.str``.
    """
    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_integer_dtype(s):
            s = s.astype("Int64").astype(str).where(s.notna(), None)
        elif pd.api.types.is_float_dtype(s) or s.dtype == object:
            s = pd.Series([_cell_text(v)[0] for v in s], index=s.index, dtype=object)
        elif not pd.api.types.is_string_dtype(s):
            s = s.astype(str).where(s.notna(), None)
        s = s.astype(object).where(s.notna(), None)
        s = s.map(lambda v: v.strip() if isinstance(v, str) else v)
        out[col] = s.where(s.notna() & (s != ""), None)
    return pd.DataFrame(out, index=frame.index)


def _zero_padding(number_format: str | None) -> int:
    """Width of a zero-padded custom format such as ``000000`` (0 for any other format)."""
    fmt = (number_format or "").strip('"')
    return len(fmt) if len(fmt) > 1 and set(fmt) == {"0"} else 0


def _is_title(header: list[str]) -> bool:
    """A first row with one filled cell only: a sheet's title, when a header row follows."""
    return sum(bool(h) for h in header) == 1


_NUMBER_LIKE = re.compile(r"[\d\s\-/.:]+")


def _is_header(values: list[str | None]) -> bool:
    """A row that can be a header: two or more filled cells, none a number or date (a data
    row holds IDs, phones and dates), no name twice."""
    filled = [v for v in values if v is not None]
    return (
        len(filled) > 1
        and len(set(filled)) == len(filled)
        and not any(_NUMBER_LIKE.fullmatch(v) for v in filled)
    )


def _read_xlsx(
    path: Path, sheet: str | int | None
) -> tuple[pd.DataFrame, dict[str, list[int]], dict[str, list[int]]]:
    """Read a worksheet as text, cell by cell, with openpyxl.

    Returns the table (index = Excel row number - 2, so line numbers in messages are the
    sheet's rows; empty rows skipped) and, per column, the rows of numbers too long for
    Excel's 15 digits: floats that lost digits, then whole numbers of 16+ digits stored as
    integers (:func:`_long_integer`). pandas' ``read_excel(dtype=str)`` turns such a number
    into made-up digits (110105198001011008) and drops zero padding kept only in the number
    format.
    """
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the zip/XML parser means a damaged file
        raise InputError(
            f"cannot be read as an Excel workbook ({type(exc).__name__}: {exc}); "
            "re-save it as .xlsx or export CSV",
            path=str(path),
        ) from None
    try:
        if sheet is None:
            ws = book.worksheets[0]
        elif isinstance(sheet, int):
            ws = book.worksheets[sheet]
        else:
            ws = book[sheet]
    except (KeyError, IndexError):
        book.close()
        raise InputError(
            f"no sheet {sheet!r}; its sheets are {', '.join(map(repr, book.sheetnames))}",
            path=str(path),
        ) from None
    # errors name the sheet read; when it was picked by default among several, say how to
    # pick another (a cover or notes sheet often comes first in government exports)
    which = f"sheet {ws.title!r}"
    if sheet is None and len(book.sheetnames) > 1:
        which += (
            f" (the first of {', '.join(map(repr, book.sheetnames))}; the source's `sheet:` "
            "key reads another)"
        )
    title_rows: list[int] = []
    try:
        header: list[str] | None = None
        rows: list[list[str | None]] = []
        index: list[int] = []
        inexact: dict[int, list[int]] = {}
        long_ints: dict[int, list[int]] = {}
        for cells in ws.iter_rows():
            values = []
            for i, cell in enumerate(cells):
                text, exact = _cell_text(cell.value, _EXCEL_EXACT_LIMIT)
                width = _zero_padding(getattr(cell, "number_format", None))
                if width and isinstance(cell.value, int | float) and text and text.isdigit():
                    text = text.zfill(width)
                if not exact:
                    inexact.setdefault(i, []).append(cell.row)
                elif _long_integer(cell.value):
                    long_ints.setdefault(i, []).append(cell.row)
                values.append(text)
            if header is None:
                if any(v is not None for v in values):
                    header = [v or "" for v in values]
                    header_row = next(c.row for c in cells if getattr(c, "row", None))
                continue
            if not rows and _is_title(header) and _is_header(values):
                # a one-cell title row (XX区流动人口登记表) above the real header
                title_rows.append(header_row)
                header = [v or "" for v in values]
                header_row = next(c.row for c in cells if getattr(c, "row", None))
                continue
            if any(v is not None for v in values):
                rows.append(values)
                # a row's empty first cell (no record id) is an EmptyCell without a row
                # number in read-only mode: the row of a cell that holds a value
                index.append(next(c.row for c in cells if getattr(c, "row", None)) - 2)
    except Exception as exc:  # noqa: BLE001 - damaged sheet XML surfaces while iterating
        raise InputError(
            f"cannot be read as an Excel workbook ({type(exc).__name__}: {exc})", path=str(path)
        ) from None
    finally:
        book.close()
    if header is None:
        raise InputError(f"{which} is empty (no header row)", path=str(path))
    if title_rows:
        logger.info("%s, %s: row(s) %s read as a title above the header", path, which,
                    ", ".join(map(str, title_rows)))
    width = max([len(header), *(len(r) for r in rows)])
    header = [clean_header(h) for h in header] + [""] * (width - len(header))
    check_unique_headers(header, str(path))
    frame = pd.DataFrame(
        [r + [None] * (width - len(r)) for r in rows], columns=header, index=index, dtype=object
    )
    unnamed = [i for i, h in enumerate(header) if not h]
    held = [i for i in unnamed if frame.iloc[:, i].notna().any()]
    if held:
        at = sorted({int(r) + 2 for i in held for r in frame.index[frame.iloc[:, i].notna()]})
        raise InputError(
            f"column(s) {', '.join(str(i + 1) for i in held)} have no header but hold values "
            f"on {len(at)} row(s): {', '.join(map(str, at[:_MAX_LINES_LISTED]))} of {which}; "
            "name them in the header",
            path=str(path),
        )
    frame = frame.iloc[:, [i for i in range(width) if header[i]]]
    frame.attrs["clean_text"] = True

    def by_header(rows_of: dict[int, list[int]]) -> dict[str, list[int]]:
        return {header[i]: at for i, at in rows_of.items() if i < width and header[i]}

    return frame, by_header(inexact), by_header(long_ints)


def _long_integer(value: object) -> bool:
    """A whole-number cell of 16 or more digits held as an integer. A sheet's XML writes
    such a number without an exponent (4403000000002120, what Excel keeps of
    4403000000002123), so it reads as an int, not as an inexact float; Excel holds only 15
    significant digits, so as a record key its last digits cannot be trusted."""
    return (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _EXCEL_EXACT_LIMIT
    )


def _decoded_text(path: Path, cfg: SourceConfig) -> str:
    """The file's text (``decode_bytes`` with the source's encoding), the encoding logged."""
    text, used = decode_bytes(path.read_bytes(), cfg.encoding, path=str(path))
    logger.info("%s: decoded as %s", path, used)
    return text


def _parse_csv_file(
    path: Path, cfg: SourceConfig
) -> tuple[Any, list[str], int, str | Callable[[], str]]:
    """The file's decoded text parsed by pyarrow in place (``_EncodedText``; no copy of the
    body, no UTF-8 bytes of it): (pyarrow table of its text columns, or None when a line
    has the wrong field count or Arrow cannot parse it; header names; header line count;
    the body: its text where the table is None, for the exact reader, else a function
    reading it again from the file, for a message naming a line (``_CsvLines``), which
    raises InputError when the file changed meanwhile). Raises InputError for an empty
    file."""
    try:
        before = _file_state(path)
    except OSError:  # reading it says why
        before = None
    streamed = _utf8_layout(path, cfg) if before is not None else None
    transcoded = None
    if streamed is None and before is not None:
        transcoded = _transcoded_layout(path, cfg)
    if streamed is not None or transcoded is not None:
        import pyarrow as pa

        if streamed is not None:
            names, header_lines, offset, size = streamed
            stream, used = pa.OSFile(str(path)), "utf-8"
            stream.seek(offset)
        else:
            names, header_lines, start, size, codec = transcoded
            stream, used = _TranscodedFile(path, codec, start), cfg.encoding
        try:
            with stream:
                table = _parse_csv_arrow(stream, names, cfg)
        except UnicodeDecodeError:  # changed since it was checked
            raise InputError("changed while it was being read: run again", path=str(path)) from None
        # read several times (checked, its head, parsed): refused if written meanwhile
        if _file_state(path) != before:
            raise InputError("changed while it was being read: run again", path=str(path))
        if table is not None:
            logger.info("%s: read as %s", path, used)
            return table, names, header_lines, lambda: _body_again(path, cfg, size)
    text = _decoded_text(path, cfg)
    if not text or text.isspace():  # ``text.strip()`` would copy it
        raise InputError("file is empty (no header row)", path=str(path))
    names, header_lines, start = _csv_layout_at(text, cfg)
    table = _parse_csv_arrow(_EncodedText(text, start), names, cfg)
    if table is None:
        body = text[start:]
        del text
        return None, names, header_lines, body
    size = len(text) - start
    del text

    def body() -> str:
        again = _decoded_text(path, cfg)
        at = _csv_layout_at(again, cfg)[2]
        if len(again) - at != size:
            raise InputError("changed while it was being read: run again", path=str(path))
        return again[at:]

    return table, names, header_lines, body


def _file_state(path: Path) -> tuple[int, int, int]:
    """(size, modification time in ns, inode) of a file: changed when it is written."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _body_again(path: Path, cfg: SourceConfig, size: int) -> str:
    """The body's text of a file read before when it was ``size`` bytes long (for a message
    naming a line); InputError when it is no longer that long."""
    if path.stat().st_size != size:
        raise InputError("changed while it was being read: run again", path=str(path))
    again = _decoded_text(path, cfg)
    return again[_csv_layout_at(again, cfg)[2] :]


# Bytes of a file checked as UTF-8 at a time (``_utf8_layout``)
_UTF8_BLOCK = 1 << 24
_UTF8_ENCODINGS = ("auto", "utf-8", "utf-8-sig")


def _utf8_layout(path: Path, cfg: SourceConfig) -> tuple[list[str], int, int, int] | None:
    """(column names, header line count, byte offset of the body, file size in bytes) of a
    file whose source encoding is UTF-8 or ``auto`` and whose bytes are all UTF-8 (a
    leading byte-order mark skipped, as ``decode_bytes`` drops it); None for any other file
    (an empty or blank one, another encoding, a byte that is not UTF-8): the caller then
    decodes the whole text as always.

    The bytes are checked a block at a time and only the head is decoded for the layout
    (``_csv_layout_of``), so pyarrow parses the body straight from the file: neither the
    file's bytes nor its text are held whole (a 2 GB police file took ~5 GB while decoded,
    the reading stage's peak at twenty million records). The body pyarrow reads is then
    the bytes ``_EncodedText`` gives of the decoded text: valid UTF-8 decodes and encodes
    back to the same bytes."""
    import codecs

    if cfg.encoding.lower() not in _UTF8_ENCODINGS:
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            start = handle.read(6)
            mark = 3 if start[:3] == b"\xef\xbb\xbf" else 0
            if mark and start[3:] == start[:3]:
                return None  # a second mark: which ones go depends on the codec
            handle.seek(mark)
            decoder = codecs.getincrementaldecoder("utf-8")("strict")
            blank = True
            while block := handle.read(_UTF8_BLOCK):
                text = decoder.decode(block)
                blank = blank and (not text or text.isspace())
                del text
            decoder.decode(b"", final=True)
    except (OSError, UnicodeDecodeError):
        return None
    if blank or path.stat().st_size != size:
        return None

    def head(chars: int) -> tuple[str, bool]:
        with open(path, "rb") as handle:
            handle.seek(mark)
            data = handle.read(4 * chars)  # a character is at most 4 bytes
            whole = not handle.read(1)
        text = codecs.getincrementaldecoder("utf-8")("strict").decode(data, final=whole)
        return text[:chars], whole and len(text) <= chars

    try:
        names, header_lines, start = _csv_layout_of(head, cfg)
    except UnicodeDecodeError:  # changed since it was checked: decoded whole, as always
        return None
    offset = mark + len(head(start)[0].encode("utf-8"))
    return names, header_lines, offset, size


def _decoded_head(
    path: Path, codec: str, errors: str = "strict"
) -> Callable[[int], tuple[str, bool]]:
    """``head`` for :func:`_csv_layout_of`: the first ``chars`` characters of ``path``
    decoded in ``codec`` (a byte-order mark dropped, as decode_bytes drops it), and whether
    they are the whole text."""
    import codecs

    def head(chars: int) -> tuple[str, bool]:
        with open(path, "rb") as handle:
            data = handle.read(4 * (chars + 1))  # a character is at most 4 bytes
            whole = not handle.read(1)
        text = codecs.getincrementaldecoder(codec)(errors).decode(data, final=whole)
        text = text.removeprefix("\ufeff")
        return text[:chars], whole and len(text) <= chars

    return head


def csv_header_names(path: Path, cfg: SourceConfig, codec: str) -> list[str]:
    """The column names this reader gives the header of CSV file ``path``
    (:func:`_csv_layout_at`'s rules: a header naming a column twice refused, an empty file
    refused, columns without a header named), read from its head decoded in ``codec``
    (bytes that do not decode replaced: the caller checks them): for the Spark engine's
    reader, which parses the body itself and renames a repeated header. Raises
    InputError naming the file."""
    return _csv_layout_of(_decoded_head(path, codec, "replace"), cfg)[0]


def _transcoded_layout(
    path: Path, cfg: SourceConfig
) -> tuple[list[str], int, int, int, str] | None:
    """(column names, header line count, characters before the body, file size in bytes,
    codec) of a file whose source names an encoding other than UTF-8 (``gbk``,
    ``gb18030``, ``big5``) and whose bytes all decode in it; None for any other file (an
    empty or blank one, ``auto`` or UTF-8, a byte that does not decode): the caller then
    decodes the whole text as always, and raises the error naming the line.

    The bytes are decoded a block at a time to be checked, only the head kept for the
    layout (``_csv_layout_of``); pyarrow then parses the body from :class:`_TranscodedFile`
    (decoded and encoded as UTF-8 a block at a time), so neither the file's bytes nor its
    text are held whole (a 730 MB GBK file was ~2.2 GB of bytes and text while parsed)."""
    import codecs

    encoding = cfg.encoding.lower()
    if encoding == "auto" or encoding in _UTF8_ENCODINGS:
        return None
    codec = _CODEC.get(encoding, encoding)
    try:
        decoder = codecs.getincrementaldecoder(codec)("strict")
    except LookupError:  # an unknown encoding: decode_bytes names it
        return None
    try:
        size = path.stat().st_size
        blank, begun = True, False
        with open(path, "rb") as handle:
            while True:
                block = handle.read(_UTF8_BLOCK)
                text = decoder.decode(block, final=not block)
                if not begun and text:  # the mark is not text (decode_bytes drops it)
                    text, begun = text.removeprefix("\ufeff"), True
                blank = blank and (not text or text.isspace())
                del text
                if not block:
                    break
    except (OSError, UnicodeDecodeError):
        return None
    if blank or path.stat().st_size != size:
        return None

    try:
        names, header_lines, start = _csv_layout_of(_decoded_head(path, codec), cfg)
    except UnicodeDecodeError:  # changed since it was checked: decoded whole, as always
        return None
    return names, header_lines, start, size, codec


class _TranscodedFile(_PieceStream):
    """A read-only binary stream of a file's text in ``codec`` from character ``start`` on
    (a leading byte-order mark dropped first, as ``decode_bytes`` drops it) as UTF-8:
    the file decoded and encoded a block of ``_UTF8_BLOCK`` bytes at a time as it is read.
    Raises UnicodeDecodeError where a byte does not decode (a file checked before by
    :func:`_transcoded_layout` and changed since)."""

    def __init__(self, path: Path, codec: str, start: int):
        import codecs

        super().__init__()
        self._handle = open(path, "rb")  # noqa: SIM115 - closed with this stream
        self._decoder = codecs.getincrementaldecoder(codec)("strict")
        self._skip, self._begun, self._ended = start, False, False

    def close(self) -> None:
        self._handle.close()
        super().close()

    def _next_piece(self) -> bytes | None:
        if self._ended:
            return None
        block = self._handle.read(_UTF8_BLOCK)
        self._ended = not block
        text = self._decoder.decode(block, final=self._ended)
        if not self._begun and text:
            text, self._begun = text.removeprefix("\ufeff"), True
        if self._skip:  # the header's characters
            cut = min(self._skip, len(text))
            text, self._skip = text[cut:], self._skip - cut
        return text.encode("utf-8")


def _read_csv_file(
    path: Path, cfg: SourceConfig
) -> tuple[pd.DataFrame, list[tuple[int, str, int, int]], _CsvLines]:
    """:func:`_read_csv_text` of the file's decoded text, holding less of it: parsed in
    place (``_parse_csv_file``), the text dropped before the columns are converted to
    Python strings, the lines found again from the file only when a message names one
    (``_CsvLines``). The 10 M police file (1.0 GB, 4.15 M rows) was held as its text, the
    body's copy and the body's bytes (~5.6 GB) while parsed, and as the body beside the
    converted columns. A file whose lines are not all of the header's field count takes
    the exact reader over the body, as before."""
    table, names, header_lines, body = _parse_csv_file(path, cfg)
    if table is None:
        return _read_csv_body(names, header_lines, body, cfg)
    columns, parsed = table.column_names, table.columns
    del table
    frame = _arrow_csv_frame(parsed, columns)
    first_line = header_lines + 1
    frame = _drop_unnamed(frame, body, cfg, first_line)
    frame.attrs["clean_text"] = True  # already trimmed text with None for blanks
    return frame, [], _CsvLines(body, len(names), cfg, first_line)


def _read_csv_table(path: Path, cfg: SourceConfig) -> tuple[Any, _CsvLines] | None:
    """:func:`_read_csv_file` kept in Arrow: a pyarrow table of trimmed text columns (null
    for blanks; headers trimmed, the unnamed empty columns dropped) and where each row came
    from; None where the file needs the exact reader (a line of the wrong field count, or
    text Arrow cannot parse). No Python object is made per cell."""
    table, names, header_lines, body = _parse_csv_file(path, cfg)
    if table is None:
        return None
    first_line = header_lines + 1
    parsed = table.columns
    del table
    held = {}
    for i, name in enumerate(names):  # each parsed column dropped once trimmed
        held[name] = _trimmed(parsed[i])
        parsed[i] = None
    unnamed = _unnamed_columns(
        names, lambda c: held[c].null_count < len(held[c]), body, cfg, first_line
    )
    import pyarrow as pa

    kept = [c for c in names if c not in unnamed]
    headers = [clean_header(str(c)) for c in kept]
    check_unique_headers(headers, str(path))
    out = pa.table([held.pop(c) for c in kept], names=headers)
    return out, _CsvLines(body, len(names), cfg, first_line)


def _read_raw(cfg: SourceConfig) -> tuple[pd.DataFrame, list[tuple[int, str, int, int]], Any]:
    """Read a source as text: (table, CSV lines of the wrong field count, row locator)."""
    path = Path(cfg.path)
    if not path.exists():
        raise InputError("file not found", path=str(path))
    if path.is_dir():
        raise InputError("is a folder, expected a .csv, .xlsx or .parquet file", path=str(path))
    suffix = path.suffix.lower()
    bad: list[tuple[int, str, int, int]] = []
    key_rows: list[int] = []
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            # no reference to the text is kept here: the reader drops it once it has cut the
            # body out (3 M records: a 310 MB file is ~0.5 GB of text)
            frame, bad, where = _read_csv_file(path, cfg)
        elif suffix in (".xlsx", ".xlsm"):
            frame, inexact, long_ints = _read_xlsx(path, cfg.sheet)
            _warn_inexact_columns(inexact, cfg)
            # record keys: floats that lost digits and whole numbers of 16+ digits; other
            # columns keep such integers (an ID's checksum judges its digits)
            key_rows = sorted({*inexact.get(cfg.record_id, []), *long_ints.get(cfg.record_id, [])})
            where = None
        elif suffix == ".parquet":
            frame = _read_parquet(path)
            where = None
        else:
            raise InputError(
                f"unsupported file type '{suffix}', expected .csv, .xlsx or .parquet",
                path=str(path),
            )
    except PermissionError:
        raise InputError("cannot be read: permission denied", path=str(path)) from None
    frame.columns = [str(c).strip().removeprefix("\ufeff") for c in frame.columns]
    check_unique_headers(list(frame.columns), str(path))
    if getattr(frame, "attrs", {}).get("clean_text"):
        # the CSV readers' object columns hold str and None already
        frame = text_columns(frame, clean=set(frame.columns))
    else:
        frame = text_columns(_as_text(frame))
    if where is None:
        # a sheet's index is its row - 2; a Parquet row counts from 1
        where = _FrameRows(frame, 2 if suffix in (".xlsx", ".xlsm") else 1)
    if key_rows:
        # positions of record ids Excel stored as numbers of 16+ digits (a sheet row is
        # its index + 2); checked with the other bad record ids
        at = frame.index.get_indexer([r - 2 for r in key_rows])
        frame.attrs[_INEXACT_KEYS] = sorted(int(p) for p in at if p >= 0)
    return frame, bad, where


def read_raw(cfg: SourceConfig) -> pd.DataFrame:
    """Read a source file as an all-text table with its original headers.

    Raises InputError naming the file when it is missing, a folder, unreadable, damaged or
    not of the format its suffix says, and naming every CSV line whose field count is not
    the header's; a record key (``record_id``) stored as a number too long for Excel is
    refused with its rows.
    """
    frame, bad, where = _read_raw(cfg)
    problems = [_field_count_problem(bad)] if bad else []
    inexact = frame.attrs.get(_INEXACT_KEYS)
    if inexact:
        problems.append(_inexact_keys_problem(cfg, where, inexact)[0])
    if problems:
        raise InputError(_problem_list(problems), path=str(cfg.path))
    return frame


def _field_count_problem(bad: list[tuple[int, str, int, int]]) -> str:
    listed = ", ".join(f"line {line} has {n}" for line, _raw, n, _e in bad[:_MAX_LINES_LISTED])
    return (
        f"{len(bad)} line(s) with the wrong number of fields, expected {bad[0][3]}: "
        f"{listed}{_more(len(bad))} (a value holding an unquoted delimiter or line break "
        "splits its record: quote it)"
    )


def _more(n: int) -> str:
    return f", and {n - _MAX_LINES_LISTED} more" if n > _MAX_LINES_LISTED else ""


def _problem_list(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} kinds of bad rows:\n  - " + "\n  - ".join(problems)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(
            f"cannot be read as Parquet ({type(exc).__name__}: {exc})", path=str(path)
        ) from None


# frame.attrs key: positions of record ids a sheet stored as numbers of 16+ digits
_INEXACT_KEYS = "linkage_inexact_record_ids"


def _inexact_keys_problem(cfg: SourceConfig, where: Any, pos: list[int]) -> tuple[str, dict]:
    """A record key stored as a number of 16+ digits lost digits in Excel: a bad row (the
    problem text and its reason per position), refused or set aside like any other."""
    return (
        f"column '{cfg.record_id}': {len(pos)} record id(s) are numbers too long for Excel's "
        f"15 significant digits ({_listed(where.unit, where.lines(pos))}): their last digits "
        "are lost; store the column as text in the source system and export again",
        dict.fromkeys(pos, "record id a number too long for Excel's 15 digits (digits lost)"),
    )


def _warn_inexact_columns(inexact: dict[str, list[int]], cfg: SourceConfig) -> None:
    """Other columns keep the float text (an ID becomes ``id_float_damaged`` downstream)."""
    for column, at in inexact.items():
        if column in cfg.columns:
            logger.warning(
                "%s: column '%s' holds %d number(s) too long for Excel's 15 digits (rows %s); "
                "kept in float form and flagged downstream",
                cfg.path,
                column,
                len(at),
                ", ".join(map(str, at[:10])),
            )


class RejectedRows:
    """Bad input rows set aside instead of stopping the run (``run.bad_rows``).

    Each row keeps its source, file, line (CSV) or row (sheet, Parquet), the reason and the
    row as it was in the file, so nothing read is lost: :meth:`frame` gives the bad-rows
    table (``schema.REJECT_COLUMNS``), :meth:`write` writes it as CSV atomically.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, str]] = []

    def add(self, source: str, path: str, line: int, reason: str, raw: str) -> None:
        """Set one row aside."""
        self.rows.append((source, path, line, reason, raw))

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        """Rows set aside per source (sources without any left out)."""
        out: dict[str, int] = {}
        for source, *_ in self.rows:
            out[source] = out.get(source, 0) + 1
        return out

    def frame(self) -> pd.DataFrame:
        """The rows as a table of ``schema.REJECT_COLUMNS``, in file and line order."""
        frame = pd.DataFrame(self.rows, columns=list(schema.REJECT_COLUMNS))
        return frame.sort_values(
            [schema.REJECT_SOURCE, schema.REJECT_LINE], kind="stable", ignore_index=True
        )

    def write(self, path: str | Path) -> Path:
        """Write the bad-rows CSV (UTF-8, header even when empty) atomically."""
        return write_csv(self.frame(), path)


def check_mapped_columns(columns: list[str], cfg: SourceConfig) -> list[str]:
    """Return the source's mapped headers (record id first); raise InputError naming the file
    and the missing ones when the file lacks any. Shared by the local and Spark readers."""
    wanted = [cfg.record_id, *cfg.columns]
    missing = [c for c in dict.fromkeys(wanted) if c not in columns]
    if missing:
        raise InputError(
            f"mapped column(s) {', '.join(repr(c) for c in missing)} not in the file; "
            f"its columns are {', '.join(repr(c) for c in columns)}",
            path=str(cfg.path),
        )
    return wanted


def _listed(unit: str, lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_MAX_LINES_LISTED]))
    return f"{unit}{'s' if len(lines) > 1 else ''} {shown}{_more(len(lines))}"


def _scientific(ids: pd.Series) -> np.ndarray:
    """``ids.str.fullmatch(_SCIENTIFIC, na=False)`` as a bool array: the pattern is tried
    only on the ids holding an ``e`` or ``E`` (every match holds one), not on a million
    plain ids one regex call each."""
    out = np.zeros(len(ids), dtype=bool)
    if _is_arrow_text(ids):
        # Arrow text: the ids holding an e found in C, no Python string per id
        import pyarrow.compute as pc

        has_e = pc.match_substring(ids.array.__arrow_array__(), "e", ignore_case=True)
        maybe = np.flatnonzero(has_e.fill_null(False).to_numpy(zero_copy_only=False)).tolist()
    else:
        values = ids.to_numpy(dtype=object)
        maybe = [i for i, v in enumerate(values) if not isinstance(v, str) or "e" in v or "E" in v]
    if maybe:
        subset = ids.iloc[maybe].astype(object)  # the few ids with an e, as Python text
        out[maybe] = np.array(subset.str.fullmatch(_SCIENTIFIC, na=False), dtype=bool)
    return out


def _is_arrow_text(values: pd.Series) -> bool:
    dtype = values.dtype
    return isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype) in ("string", "large_string")


def _bad_record_ids(
    ids: pd.Series, cfg: SourceConfig, where: Any, known: Sequence[int] = ()
) -> list[tuple[str, dict]]:
    """Every row whose record id cannot key it: (problem text, {position: reason}).
    ``known``: positions already found bad (ids a sheet stored as long numbers)."""
    unit = where.unit
    found: list[tuple[str, dict]] = []
    empty = ids.isna().to_numpy()
    if empty.any():
        pos = np.flatnonzero(empty).tolist()
        found.append(
            (
                f"column '{cfg.record_id}': {len(pos)} row(s) have no record id "
                f"({_listed(unit, where.lines(pos))})",
                dict.fromkeys(pos, "no record id"),
            )
        )
    floated = _scientific(ids)
    floated[list(known)] = False
    empty = empty.copy()
    empty[list(known)] = True  # not a duplicate of another damaged id either
    if floated.any():
        pos = np.flatnonzero(floated).tolist()
        found.append(
            (
                f"column '{cfg.record_id}': {len(pos)} record id(s) in scientific notation, "
                f"e.g. {ids.iloc[pos[0]]!r} ({_listed(unit, where.lines(pos))}): the ids went "
                "through a spreadsheet number and lost digits; store the column as text in "
                "the source system and export again",
                dict.fromkeys(pos, "record id in scientific notation (digits lost)"),
            )
        )
    dup = (ids.duplicated(keep=False).to_numpy()) & ~empty & ~floated
    if dup.any():
        pos = np.flatnonzero(dup).tolist()
        at = where.lines(pos)
        lines_of: dict[str, list[int]] = {}
        for p, line in zip(pos, at, strict=True):
            lines_of.setdefault(ids.iloc[p], []).append(line)
        values = list(lines_of)[:5]
        found.append(
            (
                f"column '{cfg.record_id}': {len(lines_of)} duplicate record id value(s), e.g. "
                f"{', '.join(map(repr, values))} ({_listed(unit, at)})",
                {
                    p: f"duplicate record id {ids.iloc[p]!r} "
                    f"({_listed(unit, lines_of[ids.iloc[p]])})"
                    for p in pos
                },
            )
        )
    return found


def _checked(
    raw: pd.DataFrame,
    bad_lines: list[tuple[int, str, int, int]],
    where: Any,
    cfg: SourceConfig,
    rejected: RejectedRows | None,
) -> pd.DataFrame:
    """The rows of ``raw`` that can be keyed. Every bad row of the file (wrong field count,
    empty, float-damaged or duplicate record id) is named in ONE InputError, or, with
    ``rejected``, set aside there with its line and reason."""
    check_mapped_columns(list(raw.columns), cfg)  # before a missing key column is read
    inexact = raw.attrs.get(_INEXACT_KEYS) or []
    keep = _kept_rows(list(raw.columns), raw[cfg.record_id], inexact, bad_lines, where, cfg, rejected)
    return raw if keep is None else raw.iloc[keep]


def _kept_rows(
    columns: list[str],
    ids: pd.Series,
    inexact: Sequence[int],
    bad_lines: list[tuple[int, str, int, int]],
    where: Any,
    cfg: SourceConfig,
    rejected: RejectedRows | None,
) -> np.ndarray | None:
    """:func:`_checked` of a table with these ``columns`` and record ``ids`` (object or Arrow
    text): a bool mask of the rows kept, None when all are; raises InputError as it says.
    ``inexact``: positions of ids a sheet stored as long numbers."""
    path = str(cfg.path)
    check_mapped_columns(columns, cfg)
    found = _bad_record_ids(ids, cfg, where, known=inexact)
    if inexact:
        found.insert(0, _inexact_keys_problem(cfg, where, inexact))
    problems = ([_field_count_problem(bad_lines)] if bad_lines else []) + [t for t, _ in found]
    if not problems:
        return None
    if rejected is None:
        raise InputError(
            _problem_list(problems)
            + "\n  (fix them at the source, or set them aside with --bad-rows FILE)",
            path=path,
        )
    for line, text, n, expected in bad_lines:
        rejected.add(
            cfg.name, path, line, f"wrong number of fields: {n}, expected {expected}", text
        )
    reasons: dict[int, str] = {}
    for _text, rows in found:
        for p, why in rows.items():
            reasons.setdefault(p, why)
    pos = sorted(reasons)
    for p, line, text in zip(pos, where.lines(pos), where.raw(pos), strict=True):
        rejected.add(cfg.name, path, line, reasons[p], text)
    # the job log gets lines and kinds of problem only: record ids can be personal data
    # (the bad-rows file, 0600, holds the reasons with the ids and the rows themselves)
    kinds: dict[str, int] = {}
    for reason in [*(["wrong number of fields"] * len(bad_lines)), *reasons.values()]:
        kind = re.split(r"[:(']", reason, maxsplit=1)[0].strip()
        kinds[kind] = kinds.get(kind, 0) + 1
    lines = sorted([line for line, *_ in bad_lines] + list(where.lines(pos)))
    logger.warning(
        "%s: %d bad row(s) set aside (%s; %s); reasons and rows are in the bad-rows file",
        path,
        len(lines),
        ", ".join(f"{kind} {n}" for kind, n in kinds.items()),
        _listed(where.unit, lines),
    )
    keep = np.ones(len(ids), dtype=bool)
    keep[pos] = False
    return keep


def to_canonical(raw: pd.DataFrame, cfg: SourceConfig) -> pd.DataFrame:
    """Map a raw table's headers to canonical fields; unmapped columns pass through.

    Returns ``source``, ``record_id``, the mapped canonical fields, then each unmapped
    column as ``raw.<header>`` (``schema.raw_col``). Raises InputError naming the file and
    column for missing mapped columns and, in one message, every empty, duplicate or
    float-damaged record id with its row.
    """
    suffix = Path(cfg.path).suffix.lower()
    where = _FrameRows(raw, 2 if suffix != ".parquet" else 1)
    return _canonical(_checked(raw, [], where, cfg, None), cfg)


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def join_field_parts(parts: Sequence[object]) -> str | None:
    """One field's value from the values of the several columns mapped to it, in order
    (``姓`` + ``名``, ``省`` + ``市`` + ``区`` + ``详细地址``); None when every part is empty.

    Parts are stripped and empty ones (None, NaN, blank) skipped. A part that starts with
    the last parts joined so far, whole parts of at least two characters, continues from
    them instead of repeating them (a detail written whole, ``广东省深圳市南山区粤海街道…``
    after ``广东省``, ``深圳市``, ``南山区``; a full name in the given-name column, ``欧阳娜娜``
    after ``欧阳``); a part that only repeats the end of the text so far (``深圳市`` after
    ``广东省深圳市``) adds nothing. A one-character surname is kept twice (``王`` + ``王芳``
    is 王王芳), and so is text that only happens to overlap (``高新区`` + ``新区大道3号``).
    Two Latin parts are joined by a space and never merged (``HO`` + ``HOI YAN`` is
    ``HO HOI YAN``), Chinese text by nothing. The project's own rule: registries' split
    exports have no standard for it.
    """
    kept: list[str] = []
    out = ""
    for part in parts:
        if not isinstance(part, str):
            continue
        part = part.strip()
        if not part:
            continue
        if not out:
            kept.append(part)
            out = part
            continue
        if _latin(out[-1]) and _latin(part[0]):
            kept.append(part)
            out += " " + part
            continue
        tail = ""
        for j in range(len(kept) - 1, -1, -1):  # the last parts, whole, longest last
            tail = kept[j] + tail
            if len(tail) >= 2 and part.startswith(tail) and len(part) > len(tail):
                out = out[: len(out) - len(tail)] + part
                kept[j:] = [part]
                break
        else:
            if len(part) >= 2 and out.endswith(part) and not _latin(part[-1]):
                continue
            kept.append(part)
            out += part
    return out or None


def _joined(raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    """``join_field_parts`` of each row of ``raw[columns]``, once per distinct row (姓 / 名
    and 省 / 市 / 区 combinations repeat)."""
    values = [raw[c].to_numpy(dtype=object) for c in columns]
    seen: dict[tuple, str | None] = {}
    joined = []
    for row in zip(*values, strict=True):
        # NaN is no dict key that equals itself: the same row keyed with None in its place
        key = tuple(None if not isinstance(v, str) else v for v in row)
        if key not in seen:
            seen[key] = join_field_parts(key)
        joined.append(seen[key])
    return pd.Series(np.array(joined, dtype=object), index=raw.index)


def _canonical(raw: pd.DataFrame, cfg: SourceConfig, *, clean: bool = False) -> pd.DataFrame:
    """``clean``: ``raw`` comes from ``_read_raw`` (its object columns hold str and None)."""
    ids = raw[cfg.record_id]
    out = pd.DataFrame(index=raw.index)
    out[schema.SOURCE] = cfg.name
    out[schema.RECORD_ID] = ids
    for field, columns in cfg.field_columns().items():
        if field == schema.RECORD_ID:
            continue
        out[field] = raw[columns[0]] if len(columns) == 1 else _joined(raw, columns)
    used = {cfg.record_id, *cfg.columns}
    passthrough = [c for c in raw.columns if c not in used]
    for column in passthrough:
        # namespaced so that no header (rk, run_id, name_clean, quality_flags ...) can
        # collide with a column the pipeline or the store adds
        out[schema.raw_col(column)] = raw[column]
    taken = set(out.columns) - {schema.SOURCE} if clean else ()
    return text_columns(out.reset_index(drop=True), clean=taken)


def read_source(cfg: SourceConfig, *, rejected: RejectedRows | None = None) -> pd.DataFrame:
    """Read one source into a canonical record table (all values text, nulls kept).

    Every bad row of the file (wrong field count, empty, float-damaged or duplicate record
    id) is named with its line in one InputError; with ``rejected`` they are set aside there
    instead and the other rows returned.
    """
    raw, bad, where = _read_raw(cfg)
    return _canonical(_checked(raw, bad, where, cfg, rejected), cfg, clean=True)


def _read_source_arrow(cfg: SourceConfig, rejected: RejectedRows | None) -> Any:
    """:func:`read_source`'s table as :func:`_arrow_source` makes it (a pyarrow Table of
    strings, or the frame where Arrow cannot hold it), read without a Python object per
    cell where the file is a CSV pyarrow parses (``_read_csv_table``): a source of 8.3 M
    rows was ~4 GB of Python objects between its text and its Arrow table. Other files,
    and CSVs needing the exact reader, are read by :func:`read_source`. Raises as it does."""
    import pyarrow as pa

    path = Path(cfg.path)
    got = None
    if path.suffix.lower() in (".csv", ".txt", ".tsv") and path.is_file():
        try:
            got = _read_csv_table(path, cfg)
        except PermissionError:
            raise InputError("cannot be read: permission denied", path=str(path)) from None
    if got is None:
        return _arrow_source(read_source(cfg, rejected=rejected))
    table, where = got
    check_mapped_columns(table.column_names, cfg)  # before a missing key column is read
    ids = pd.Series(pd.arrays.ArrowExtensionArray(table.column(cfg.record_id)))
    keep = _kept_rows(table.column_names, ids, [], [], where, cfg, rejected)
    del ids
    if keep is not None:
        table = table.filter(pa.array(keep))
    return _canonical_arrow(table, cfg)


def _canonical_arrow(table: Any, cfg: SourceConfig) -> Any:
    """:func:`_canonical` of a checked source table kept in Arrow (``_read_source_arrow``):
    the same columns in the same order, as pyarrow strings; a field joined from several
    columns (``join_field_parts``) is joined over those columns alone as Python text."""
    import pyarrow as pa

    n = table.num_rows
    # the source name in every row: a one-value dictionary decoded in C
    source = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([cfg.name], type=pa.string())
    ).cast(pa.string())
    out: dict[str, Any] = {schema.SOURCE: source, schema.RECORD_ID: table.column(cfg.record_id)}
    for field, columns in cfg.field_columns().items():
        if field == schema.RECORD_ID:
            continue
        if len(columns) == 1:
            out[field] = table.column(columns[0])
            continue
        joined = _joined(_as_frame(table.select(columns)), columns)
        out[field] = pa.array(joined.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    used = {cfg.record_id, *cfg.columns}
    for column in table.column_names:
        if column not in used:
            out[schema.raw_col(column)] = table.column(column)
    return pa.table(out)


def check_source_paths(config: RunConfig) -> None:
    """Raise one InputError naming every source path that is missing or a folder (each
    source is one file), before any file is read; both engines call it first."""
    absent = [
        InputError("file not found" if not p.exists() else "is a folder, expected a file",
                   path=str(p))
        for p in (Path(cfg.path) for cfg in config.sources.values())
        if not p.is_file()
    ]  # fmt: skip
    if len(absent) == 1:
        raise absent[0]
    if absent:
        raise InputError(
            f"{len(absent)} source files cannot be read:\n  " + "\n  ".join(map(str, absent))
        )


def empty_source_error(cfg: SourceConfig, rejected: RejectedRows | None) -> InputError:
    """The error for a source left with no record: a header and no data rows, or only bad
    rows (set aside in ``rejected``); an empty export is almost always an upstream failure."""
    aside = (rejected.counts() if rejected is not None else {}).get(cfg.name, 0)
    why = f"all {aside} data row(s) were bad rows" if aside else "it has a header and no data rows"
    return InputError(
        f"source '{cfg.name}' has 0 records ({why}); an empty export is almost "
        "always an upstream failure",
        path=str(cfg.path),
    )


def sources_error(refused: list[InputError]) -> InputError:
    """One InputError for the problems of several sources (the one itself for one)."""
    if len(refused) == 1:
        return refused[0]
    return InputError(
        f"{len(refused)} sources cannot be used as given:\n" + "\n".join(map(str, refused))
    )


def read_checked_raw(cfg: SourceConfig, rejected: RejectedRows | None) -> pd.DataFrame:
    """A source as :func:`read_raw` reads it (all text, original headers), less its bad rows:
    every bad row named in one InputError, or with ``rejected`` set aside there (the rows
    :func:`read_source` keeps, before they are mapped to canonical fields)."""
    raw, bad, where = _read_raw(cfg)
    return _checked(raw, bad, where, cfg, rejected)


def read_sources(
    config: RunConfig, *, progress: ProgressLike = None, rejected: RejectedRows | None = None
) -> pd.DataFrame:
    """Read every source of a run and stack them; canonical fields absent from a source are null.

    ``progress`` (``linkage.progress``) gets the ``reading`` stage, counted in files. Bad
    rows raise InputError (see :func:`read_source`) or, with ``rejected``, are set aside
    there. A source left with no record (a header and no data rows: almost always an
    upstream failure) raises InputError naming it. Every source is read before raising,
    so one InputError names the problems of all of them; a missing source file is refused
    before any file is read.
    """
    return _stacked(_source_frames(config, progress, rejected))


def _source_frames(
    config: RunConfig,
    progress: ProgressLike,
    rejected: RejectedRows | None,
    convert: Callable[[Any], Any] | None = None,
    *,
    arrow: bool = False,
) -> list[Any]:
    """Each source read (:func:`read_source`; with ``arrow``, :func:`_read_source_arrow`),
    checked as :func:`read_sources` says, and passed through ``convert`` as soon as it is
    read (before the next file is), in config order. ``convert`` is handed the table in a
    one-element list (no other reference to it is kept here) and returns what is kept."""
    check_source_paths(config)
    report = as_progress(progress)
    report.stage("reading", total=len(config.sources), unit="files")
    frames = []
    refused: list[InputError] = []  # every source is read: all their problems in one error
    for cfg in config.sources.values():
        try:
            frame = (
                _read_source_arrow(cfg, rejected) if arrow else read_source(cfg, rejected=rejected)
            )
        except InputError as exc:
            refused.append(exc)
            continue
        if not len(frame):
            refused.append(empty_source_error(cfg, rejected))
        if convert is not None:
            box = [frame]  # handed over: convert frees what it no longer needs
            del frame
            frame = convert(box)
        frames.append(frame)
        del frame
        report.advance(1)
    if refused:
        raise sources_error(refused)
    return frames


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The sources' frames stacked as :func:`read_sources` returns them."""
    records = pd.concat(frames, ignore_index=True, sort=False)
    for field in schema.CANONICAL_FIELDS:
        if field not in records.columns:
            records[field] = None
    front = list(schema.CANONICAL_FIELDS)
    # columns absent from some sources come back as NaN: None like every other null (the
    # columns every source has hold str and None already, as read_source returns them)
    everywhere = set.intersection(*(set(f.columns) for f in frames)) if frames else set()
    ordered = records[front + [c for c in records.columns if c not in front]]
    return text_columns(ordered, clean=everywhere)


def _arrow_source(frame: pd.DataFrame) -> Any:
    """A source's frame (text columns of ``str`` and None) as a pyarrow Table of strings:
    ~20 bytes a value instead of a Python object and its pointer. The frame itself when a
    column is not text or holds a string UTF-8 cannot encode (a lone surrogate)."""
    import pyarrow as pa

    try:
        return pa.table(
            {
                str(c): pa.array(frame[c].to_numpy(dtype=object), type=pa.string(), from_pandas=True)
                for c in frame.columns
            }
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        return frame


def _by_record_id(box: list[Any]) -> Any:
    """A source's pyarrow table (``_read_source_arrow``), handed over in the one-element
    list ``box`` (emptied here), sorted by record id (Arrow's stable sort: UTF-8 bytes in
    code point order, as ``_canonical_order``); a frame, or a table with a null id, as it
    is. Taken a column at a time, each unsorted column freed once its sorted copy is made:
    the whole table's copy beside it was the reading stage's peak (the 2 GB police file of
    twenty million records)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    part = box.pop()
    if not isinstance(part, pa.Table) or part.column(schema.RECORD_ID).null_count:
        return part
    order = pc.sort_indices(part.column(schema.RECORD_ID))
    names, columns = part.column_names, part.columns
    del part
    for i, column in enumerate(columns):
        columns[i] = None
        columns[i] = column.take(order)
        del column
    return pa.table(columns, names=names)


def _sorted_needed(keep: Collection[str] | None) -> Callable[[list[Any]], Any]:
    """``_by_record_id`` of a source's pyarrow table less the columns ``standardize(keep=)``
    would drop at once (neither in ``keep`` nor read by a field: unmapped pass-through
    columns such as a registering unit), so that they are not held, nor sorted, through
    reading and standardizing (~40 bytes a record of the independent registries); a frame,
    or with ``keep`` None, only sorted. Takes the table handed over as ``_by_record_id``."""
    import pyarrow as pa

    if keep is None:
        return _by_record_id
    wanted = {*keep, *(entry.field for entry in FIELDS), schema.SOURCE, schema.RECORD_ID}

    def convert(box: list[Any]) -> Any:
        if isinstance(box[0], pa.Table):
            part = box.pop()
            box.append(part.select([c for c in part.column_names if c in wanted]))
            del part
        return _by_record_id(box)

    return convert


def _stacked_arrow(parts: list[Any], stack: Sequence[int] | None = None) -> Any:
    """The sources' tables (``_arrow_source``) stacked with :func:`read_sources`' columns, in
    its order (the canonical fields first, then the others in order of first appearance in
    ``parts``), a column a source lacks null; None when a source could not be held as
    Arrow (the caller then stacks them as frames: ``_as_frame``). ``stack``: the positions
    of ``parts`` in the order their rows are stacked (default: as given)."""
    import pyarrow as pa

    if not all(isinstance(p, pa.Table) for p in parts):
        return None
    if any(p.column(schema.RECORD_ID).null_count for p in parts):
        return None  # not in canonical order by source and id: stacked as frames
    names = list(dict.fromkeys(c for p in parts for c in p.column_names))
    front = list(schema.CANONICAL_FIELDS)
    order = front + [c for c in names if c not in front]
    aligned = [
        pa.table(
            [
                p.column(c) if c in p.column_names else pa.nulls(p.num_rows, pa.string())
                for c in order
            ],
            names=order,
        )
        for p in (parts if stack is None else [parts[i] for i in stack])
    ]
    return pa.concat_tables(aligned)


def _as_frame(table: Any) -> pd.DataFrame:
    """A table of strings (``_stacked_arrow``'s rows) as the records frame the stages take:
    columns of ``str`` or None, one ``str`` per distinct value (``shared_text``)."""
    import pyarrow as pa

    if isinstance(table, pd.DataFrame):
        return table
    columns = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        values = shared_text(pd.Series(col, dtype=pd.ArrowDtype(pa.string())))
        columns[name] = pd.Series(values, dtype=object, copy=False)
    return pd.DataFrame(columns, copy=False)


def _lazy_frame(table: Any) -> pd.DataFrame:
    """A table of strings (``_stacked_arrow``'s rows) as a frame of Arrow string columns
    (``pd.ArrowDtype(pa.string())``; no copy, but for a column ``_parse_whole`` held as a
    dictionary, decoded here) for ``standardize``, which converts each to
    ``_as_frame``'s objects when its field reads it: the raw rows are never all held as
    Python objects at once (~3 times their Arrow size). A frame is returned as it is."""
    import pyarrow as pa

    if isinstance(table, pd.DataFrame):
        return table
    dtype = pd.ArrowDtype(pa.string())
    columns = {
        name: pd.Series(pd.arrays.ArrowExtensionArray(col.cast(pa.string())), dtype=dtype)
        for name, col in zip(table.column_names, table.columns, strict=True)
    }
    return pd.DataFrame(columns, copy=False)


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Write a file through ``writer(tmp_path)`` then move it into place in one step.

    Raises ``OutputError`` naming ``path`` when the device or disk quota fills up while
    writing (the temporary file is removed first, so the space it took is free again);
    any other error of ``writer`` as it is."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_out_of_space(exc):
            message = out_of_space_message(path.parent if path.parent.is_dir() else None)
            raise OutputError(message, path=str(path)) from exc
        raise
    return path


def write_csv(
    frame: pd.DataFrame,
    path: str | Path,
    *,
    for_people: bool = True,
    quote_text: bool = False,
    bom: bool = False,
) -> Path:
    """Write a UTF-8 CSV atomically; ``for_people`` (default) neutralizes formula cells.

    Every CSV meant to be opened in a spreadsheet (outputs, exports, review files) goes through
    :func:`neutralize_formulas`; files only programs read pass ``for_people=False``.
    ``quote_text`` quotes every text cell (``csv.QUOTE_NONNUMERIC``), so a spreadsheet whose
    list separator is ``;`` cannot split ``a;=1+1`` into a formula cell. ``bom`` starts the
    file with a UTF-8 byte-order mark: Excel on Chinese Windows reads a CSV without one as
    GBK and shows its Chinese text garbled.
    """
    import csv

    if for_people:
        frame = neutralize_formulas(frame)
    quoting = csv.QUOTE_NONNUMERIC if quote_text else csv.QUOTE_MINIMAL

    def write(p: Path) -> None:
        if quote_text or bom or not _write_csv_arrow(frame, p):
            encoding = "utf-8-sig" if bom else "utf-8"
            frame.to_csv(p, index=False, encoding=encoding, quoting=quoting)

    return atomic_write(path, write)


def write_csv_frames(
    frames: Iterable[pd.DataFrame], columns: Sequence[str], path: str | Path
) -> Path:
    """Write the frames of ``frames`` (one table ``columns`` wide, a range of its rows
    each) as one UTF-8 CSV, atomically: the bytes :func:`write_csv` writes for them joined
    (``for_people``: formula cells neutralized). One frame is converted and written before
    the next is asked for (``merge.GoldenParts.frames``: a batch run's golden records,
    never held whole). Raises ``ValueError`` when a frame's columns are not ``columns``."""

    def write(p: Path) -> None:
        with open(p, "wb") as out:
            pd.DataFrame(columns=list(columns)).to_csv(out, index=False, encoding="utf-8")
            for frame in frames:
                if list(frame.columns) != list(columns):
                    raise ValueError(
                        f"rows for {path} have columns {list(frame.columns)}, expected "
                        f"{list(columns)}"
                    )
                if not len(frame):
                    continue
                frame = neutralize_formulas(frame)
                # each range by the fastest sure rendering; cell by cell they are the same
                table = _csv_arrow_table(frame)
                if table is None:
                    frame.to_csv(out, index=False, header=False, encoding="utf-8")
                else:
                    _write_csv_rows(table, out)
                del frame, table

    return atomic_write(path, write)


def _write_csv_rows(table: Any, out: Any) -> None:
    """``table``'s rows, unquoted and without a header, to the open binary file ``out``."""
    import pyarrow.csv as pacsv

    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    pacsv.write_csv(table, out, write_options=options)


# Characters that make Python's csv module (pandas' ``to_csv``) quote a cell under
# QUOTE_MINIMAL with pandas' dialect: the delimiter, the quote character, line endings
# (looked for byte by byte, ``spreadsheet.holds_bytes``).
_NEEDS_QUOTES = b'",\r\n'


def _csv_arrow_table(frame: pd.DataFrame) -> Any:
    """``frame`` as a pyarrow table whose ``pyarrow.csv`` rendering without quotes is the
    bytes ``frame.to_csv(index=False)`` writes for its rows, or None when that is not sure:
    a column other than numpy integers and text (``str`` and nulls), a text cell pandas
    would quote (``_NEEDS_QUOTES``), a one-column frame (an empty cell alone on a line is
    quoted), or a line ending other than ``\n``."""
    import pyarrow as pa

    if os.linesep != "\n" or frame.shape[1] < 2 or isinstance(frame.columns, pd.MultiIndex):
        return None
    columns = []
    for j in range(frame.shape[1]):
        values = frame.iloc[:, j]
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu":
            columns.append(pa.array(values.to_numpy()))
            continue
        if isinstance(values.dtype, pd.CategoricalDtype):
            # codes and their text (golden records' provenance sources): a byte a cell
            # rather than a text column as long as the table, cast to text as it is written
            text = _csv_categories(values)
            if text is None:
                return None
            columns.append(text)
            continue
        if not (values.dtype == object or _is_text_dtype(values.dtype)):
            return None
        if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in (
            "string",
            "empty",
        ):
            return None
        try:
            text = pa.array(values, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
            return None
        if holds_bytes(text, _NEEDS_QUOTES).any():
            return None
        columns.append(text)
    return pa.table(columns, names=[f"c{j}" for j in range(len(columns))])


def _csv_categories(values: pd.Series) -> Any:
    """A categorical column of text as a pyarrow dictionary array (its codes, its
    categories as ``large_string``), or None when a category is not text or one pandas
    would quote (``_NEEDS_QUOTES``)."""
    categories = np.asarray(values.cat.categories, dtype=object)
    if pd.api.types.infer_dtype(categories, skipna=False) not in ("string", "empty"):
        return None
    coded = categorical_arrow(values)
    return None if holds_bytes(coded.dictionary, _NEEDS_QUOTES).any() else coded


def _write_csv_arrow(frame: pd.DataFrame, path: Path) -> bool:
    """Write ``frame`` to ``path`` as ``frame.to_csv(path, index=False, encoding="utf-8")``
    would, byte for byte, through ``pyarrow.csv`` (C++: ~30 times faster than pandas' writer,
    ~12 s of a million-record run's golden records); False, writing nothing, where the
    rendering could differ (see :func:`_csv_arrow_table`). The header goes through Python's
    csv module with pandas' dialect, as pandas writes it."""
    table = _csv_arrow_table(frame)
    if table is None:
        return False
    with open(path, "wb") as out:
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow([str(c) for c in frame.columns])
        out.write(header.getvalue().encode("utf-8"))
        if len(frame):
            _write_csv_rows(table, out)
    return True


# Rows converted to Arrow at a time when writing a large table: converting millions of
# scored pairs at once doubles them in memory for the moment of the write.
PARQUET_ROWS_AT_ONCE = 500_000


# Cells converted to Arrow at a time: a wide table (the standardized records' 66 text
# columns, saved as a checkpoint) is written in row groups of fewer rows, since converting
# 500,000 of its rows at once was the peak of a 300,000-record run's standardizing stage.
PARQUET_CELLS_AT_ONCE = 4_000_000


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a Parquet file atomically; a large frame is converted and written in row groups
    of ``PARQUET_ROWS_AT_ONCE`` rows, fewer for a wide frame (``PARQUET_CELLS_AT_ONCE``
    cells); the same table reads back."""
    rows = _rows_at_once(frame.shape[1])
    if len(frame) <= rows:
        return atomic_write(path, lambda p: frame.to_parquet(p, index=False))

    import pyarrow as pa

    def write(p: Path) -> None:
        # pyarrow's schema of the whole frame costs a conversion of every object column
        typed = _first_text_rows(frame)
        if typed is not None:
            try:
                _write_row_groups(frame, p, typed, rows)
                return
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass  # a cell that is not text: the checked schema, as always
        _write_row_groups(frame, p, _type_rows(frame), rows)

    return atomic_write(path, write)


def _write_row_groups(frame: pd.DataFrame, p: Path, typed: pd.DataFrame | None, rows: int) -> None:
    """Write ``frame`` to ``p`` ``rows`` rows at a time with the Arrow schema of ``typed``
    (of the whole frame when None). Each row group is written in a second thread while this
    one converts the next (pyarrow encodes and compresses without the interpreter lock; at
    most two groups held): a million standardized records, written while the other core
    idles (the records checkpoint, between standardizing and blocking), 6.1 -> 4.1 s."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(frame if typed is None else typed, preserve_index=False)
    with pq.ParquetWriter(p, schema) as writer, ThreadPoolExecutor(max_workers=1) as pool:
        pending = _write_groups(frame, schema, writer, pool, rows, None)
        if pending is not None:
            pending.result()


def _write_groups(
    frame: pd.DataFrame, schema: Any, writer: Any, pool: ThreadPoolExecutor, rows: int, pending: Any
) -> Any:
    """Convert ``frame`` ``rows`` rows at a time (``_arrow_rows``) and hand each group to
    ``pool`` to be written by ``writer`` once the group before it (``pending``, a future or
    None) is written; return the last group's future (``pending`` for an empty frame)."""
    for start in range(0, len(frame), rows):
        table = _arrow_rows(frame.iloc[start : start + rows], schema)
        if pending is not None:
            pending.result()
        pending = pool.submit(writer.write_table, table)
        del table
    return pending


def _rows_at_once(n_columns: int) -> int:
    """Rows converted to Arrow at a time for a table of ``n_columns`` columns."""
    return max(1, min(PARQUET_ROWS_AT_ONCE, PARQUET_CELLS_AT_ONCE // max(n_columns, 1)))


def write_parquet_chunks(
    frames: Iterable[pd.DataFrame], path: str | Path, *, text_codes: bool = False
) -> tuple[Path, int]:
    """Write the frames of ``frames`` one after another as one Parquet file, atomically;
    return its path and row count. Each frame is converted and written (in row groups, as
    :func:`write_parquet` writes a large frame) before the next is asked for, so a caller
    that makes them one at a time (``read_records_chunks``) never holds two. The frames
    share their columns and dtypes (the first one's); text columns are ``str`` or None and
    written as Arrow strings, also when a frame holds no value in them (the file's schema
    is fixed by the first frame, before the others exist). The file reads back as the
    frames joined (``pd.concat``), row for row.

    ``text_codes``: the frames' Categorical columns hold text as codes
    (``read_records_chunks(compact=True)``) and are written as the text columns they stand
    for, the file the frames with object columns give; without it a Categorical column is
    written as Arrow's dictionary type, as :func:`write_parquet` writes it.

    Raises ``ValueError`` when a frame's columns differ from the first frame's, what
    pyarrow raises for a text column holding anything but ``str`` and None (``ArrowTypeError``)
    and ``ValueError`` when ``frames`` is empty; the file is then not written.
    """
    import pyarrow.parquet as pq

    total = 0

    def write(p: Path) -> None:
        nonlocal total
        writer = schema = columns = pending = None
        # each row group written in a second thread (pyarrow compresses without the
        # interpreter lock) while this one converts the next or makes the next frame
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            for frame in frames:
                if schema is None:
                    columns = list(frame.columns)
                    schema = _chunk_schema(frame, text_codes)
                    writer = pq.ParquetWriter(p, schema)
                elif list(frame.columns) != columns:
                    raise ValueError(
                        f"chunk of {path} has columns {list(frame.columns)}, expected {columns}"
                    )
                rows = _rows_at_once(len(columns))
                pending = _write_groups(frame, schema, writer, pool, rows, pending)
                total += len(frame)
                del frame
            if pending is not None:
                pending.result()
                pending = None
            if writer is None:
                raise ValueError(f"no rows to write to {path}: no chunk was made")
        finally:
            if pending is not None:
                pending.cancel()
            pool.shutdown(wait=True)
            if writer is not None:
                writer.close()

    return atomic_write(path, write), total


def _chunk_schema(frame: pd.DataFrame, text_codes: bool = False) -> Any:
    """The Arrow schema (with pandas' metadata) :func:`write_parquet` gives ``frame``, each
    object column's type string: a column all null in the first chunk has no value to
    infer its type from (null), and text is all a records table's object columns hold.
    With ``text_codes``, a Categorical column is typed as the object column of its values
    (``standardize(compact=)``), not as a dictionary, and so is a column of Arrow strings
    (a raw column ``standardize`` kept as it was read)."""
    import pyarrow as pa

    coded = [
        j for j in range(frame.shape[1])
        if text_codes and (
            isinstance(frame.dtypes.iloc[j], pd.CategoricalDtype) or _arrow_text(frame.iloc[:, j])
        )
    ]  # fmt: skip
    if coded:
        rest = frame.iloc[:, [j for j in range(frame.shape[1]) if j not in set(coded)]]
        typed = pd.DataFrame(index=range(1))
        if rest.shape[1]:
            typed = _first_text_rows(rest)
            if typed is None:
                typed = _type_rows(rest)
        if typed is None:  # another value than text: the whole columns, as always
            frame = frame.assign(
                **{
                    frame.columns[j]: pd.Series(
                        np.asarray(frame.iloc[:, j], dtype=object), dtype=object,
                        index=frame.index,
                    )
                    for j in coded
                }
            )  # fmt: skip
        else:
            rows = {j: _categorical_row(frame.iloc[:, j]) for j in coded}
            others = iter(range(typed.shape[1]))
            typed = pd.concat(
                [rows[j] if j in rows else typed.iloc[:, next(others)]
                 for j in range(frame.shape[1])],
                axis=1,
            )  # fmt: skip
    else:
        typed = _first_text_rows(frame)
        if typed is None:
            typed = _type_rows(frame)
    schema = pa.Schema.from_pandas(frame if typed is None else typed, preserve_index=False)
    for j in range(frame.shape[1]):
        dtype = frame.dtypes.iloc[j]
        if pa.types.is_null(schema.field(j).type) and (
            pd.api.types.is_object_dtype(dtype) or _is_text_dtype(dtype) or j in coded
        ):
            schema = schema.set(j, schema.field(j).with_type(pa.string()))
    return schema


def _arrow_rows(part: pd.DataFrame, schema: Any) -> Any:
    """``part`` as a pyarrow Table of ``schema`` (``Schema.from_pandas`` of the frame, in its
    column order), converted a column at a time: ``Table.from_pandas`` took ~1.2 s more
    for a million standardized records' 44 columns (6.8 against 5.6 s written, measured),
    the same table."""
    import pyarrow as pa

    arrays = []
    for j, field in enumerate(schema):
        column = part.iloc[:, j]
        if isinstance(column.dtype, pd.CategoricalDtype) and not pa.types.is_dictionary(field.type):
            # a column of text held as codes (``standardize(compact=)``): its values
            column = pd.Series(np.asarray(column, dtype=object), dtype=object)
        if _arrow_text(column) and pa.types.is_string(field.type):
            # Arrow strings written as the text column they stand for: their own buffers,
            # in one piece (a column of several, as a source was read, pages the group
            # otherwise: the same values, in other bytes than the object column's)
            array = pa.array(column.array)
            if isinstance(array, pa.ChunkedArray):
                array = array.combine_chunks()
            arrays.append(array.cast(field.type))
            continue
        if column.dtype == object:
            arrays.append(pa.array(column.to_numpy(), type=field.type, from_pandas=True))
        else:
            arrays.append(pa.Array.from_pandas(column, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _first_text_rows(frame: pd.DataFrame, look: int = 64) -> pd.DataFrame | None:
    """:func:`_type_rows` without its whole-column check: per object column the row of its
    first non-null value, which must be a ``str``; None when one is not (the caller then
    asks ``_type_rows``). A later cell that is not text makes converting that column with the
    resulting string type raise (``pyarrow.ArrowTypeError``), where the caller falls back to
    ``_type_rows``' schema: the file is the same, without the check's pass over every cell
    (~1.3 s per 300,000 standardized records). One difference: ``bytes`` after a ``str`` in
    a column are written as text, where the whole-column schema would refuse or differ."""
    parts = []
    for j in range(frame.shape[1]):
        values = frame.iloc[:, j]
        row = 0
        if values.dtype == object:
            array = values.to_numpy()
            for i, v in enumerate(array[:look]):
                if isinstance(v, str):
                    row = i
                    break
                if not (v is None or (type(v) is float and v != v)):
                    return None  # another value, or a null of another kind (pd.NA, NaT)
            else:
                if len(array) > look:
                    valid = values.notna().to_numpy()
                    if valid.any():
                        row = int(valid.argmax())
                        if not isinstance(array[row], str):
                            return None
        parts.append(values.iloc[row : row + 1].reset_index(drop=True))
    return pd.concat(parts, axis=1)


def _categorical_row(values: pd.Series) -> pd.Series:
    """A Categorical (or Arrow string) column's first non-null value (None when all are
    null) as a one-row object column: what ``_first_text_rows`` takes of the object column
    it stands for."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        present = values.dropna()
        value = present.iloc[0] if len(present) else None
        return pd.Series([value], dtype=object, name=values.name)
    codes = values.cat.codes.to_numpy()
    present = np.flatnonzero(codes >= 0)
    value = values.cat.categories[codes[present[0]]] if len(present) else None
    return pd.Series([value], dtype=object, name=values.name)


def _type_rows(frame: pd.DataFrame) -> pd.DataFrame | None:
    """One row of ``frame`` per column with the type pyarrow infers for the whole column, or
    None when an object column holds anything but ``str`` and nulls.

    pyarrow infers an object column's type by converting all of it (as long as writing it, at
    a million records); for a column of ``str`` and nulls its first non-null value gives that
    type (string; null when all are null). Checked by ``infer_dtype``, one C pass.
    """
    parts = []
    for j in range(frame.shape[1]):
        values = frame.iloc[:, j]
        row = 0
        if values.dtype == object:
            if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
                return None
            valid = values.notna().to_numpy()
            row = int(valid.argmax()) if valid.any() else 0
        parts.append(values.iloc[row : row + 1].reset_index(drop=True))
    return pd.concat(parts, axis=1)


def _canonical_order(raw: pd.DataFrame) -> np.ndarray:
    """Row positions of ``raw`` sorted by (source, record_id): ``raw.sort_values([source,
    record_id], kind="stable")``'s order, by Arrow's stable sort (C++; UTF-8 bytes sort in
    code point order, as Python compares ``str``); pandas' own sort where a key is not text."""
    import pyarrow as pa

    keys = [schema.SOURCE, schema.RECORD_ID]
    try:
        table = pa.table(
            {k: pa.array(raw[k].to_numpy(dtype=object), type=pa.string(), from_pandas=True)
             for k in keys}
        )  # fmt: skip
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        table = None
    if table is None or any(table.column(k).null_count for k in keys):
        order = raw.reset_index(drop=True).sort_values(keys, kind="stable").index
        return np.asarray(order, dtype=np.int64)
    import pyarrow.compute as pc

    order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys])
    return order.to_numpy().astype(np.int64, copy=False)


def read_records(
    config: RunConfig,
    *,
    timings: dict[str, float] | None = None,
    progress: ProgressLike = None,
    rejected: RejectedRows | None = None,
    keep: Collection[str] | None = None,
) -> pd.DataFrame:
    """Read every source, sort canonically and standardize: THE way records enter a run.

    Returns the standardized records table (``rid`` 0..n-1). Sorting by (source, record_id)
    makes every later stage (random u sample, tie-breaks, ``rid``) independent of the order
    rows arrive in: same inputs, same identities. Seconds spent are added to ``timings``
    (``read`` and one entry per standardizer group). Raises ``InputError`` for unreadable
    input (every bad row of a file named at once), ``ConfigError`` for a bad config.
    With ``run.bad_rows`` set in the config, bad rows are set aside instead, into
    ``rejected`` (a new collector when None), and written to that file as CSV (also when
    there are none); without it ``rejected`` is not used.
    ``progress`` gets the ``reading`` (files) and ``standardizing`` (field values:
    records x fields) stages. With ``keep`` (column names) only those columns are returned,
    and the others are dropped while standardizing goes on (``standardize(keep=)``).
    """
    chunks = read_records_chunks(
        config, None, timings=timings, progress=progress, rejected=rejected, keep=keep
    )
    try:
        return next(chunks)
    finally:
        chunks.close()  # its standardizing worker stopped now, not when collected


def read_records_chunks(
    config: RunConfig,
    chunk_records: int | None,
    *,
    timings: dict[str, float] | None = None,
    progress: ProgressLike = None,
    rejected: RejectedRows | None = None,
    keep: Collection[str] | None = None,
    compact: bool = False,
) -> Iterator[pd.DataFrame]:
    """:func:`read_records` ``chunk_records`` records at a time: the standardized records
    table in canonical order, cut into consecutive frames of that many rows (the last one
    shorter), ``rid`` continuing from frame to frame; one frame when ``chunk_records`` is
    None or not below the record count. Joined, the frames are ``read_records``' table:
    standardizing is a function of each record alone (its values and their cross-field
    checks, and two facts of the whole batch decided before the first chunk), so where a
    record's chunk ends changes nothing.

    All sources are read and sorted before the first frame is made; each frame is
    standardized when it is asked for, and the raw rows of the frames not yet made are the
    only other rows held: with ``chunk_records`` or ``compact`` given, as Arrow strings
    (each source converted once read; a source whose text Arrow cannot hold stays as Python
    objects), a raw column converted to Python objects only when its field is standardized.
    The two rules of standardizing that read other records (``standardize``'s ``batch``)
    are decided over all chunks first. A run that writes each frame out before asking for
    the next (``write_parquet_chunks``: ``linkage run``'s records checkpoint) holds one chunk's
    standardized columns instead of all of them (the standardizing stage's peak); with
    ``compact`` (and ``keep``) the frames' text columns of few distinct values are
    ``pandas.Categorical`` (``standardize(compact=)``), for such a writer only, when the
    batch is chunked or has at least ``COMPACT_MIN_RECORDS`` records, and the raw text
    columns kept as they were read stay Arrow strings in any case (``standardize(keep_arrow=)``:
    such a writer writes them as they are). The ``_PARSED_WHOLE``
    fields (names and addresses) of a batch held as Arrow are parsed once per distinct
    value of the whole batch before the first frame (``_batch_facts``); the other fields'
    distinct values once per chunk: a value in several chunks costs its work in each.
    Raises what :func:`read_records` raises, when the first frame is asked for.
    """
    report = as_progress(progress)
    t = time.perf_counter()
    aside = None
    if config.run.bad_rows is not None:
        aside = rejected if rejected is not None else RejectedRows()
    # standardizing's worker process imports its tables on the other core while this one
    # reads: started at the first large field instead, that field waited for it
    with worker_process(config.run.workers and _input_bytes(config) >= _WORKER_EARLY_BYTES):
        warm_up(["linkage.standardize.combine"])
        try:
            if chunk_records is None and not compact:
                raw = read_sources(config, progress=report, rejected=aside)
            else:
                # each source read into Arrow strings (no Python object per value) and put
                # in record-id order as it is read: stacked in source-name order they are
                # in canonical order, so the chunks are slices of them, not copies. The
                # rows wait as Arrow until their chunk is standardized, each column until
                # its field is (``_lazy_frame``)
                sources = _source_frames(
                    config, report, aside, convert=_sorted_needed(keep), arrow=True
                )
                names = list(config.sources)  # one table per source, in config order
                raw = _stacked_arrow(sources, sorted(range(len(names)), key=names.__getitem__))
                if raw is None:  # a source not held as Arrow: all as frames, as always
                    raw = _stacked([_as_frame(p) for p in sources])
                del sources
        finally:
            # written even when a source is refused afterwards: it tells why it had no row left
            if aside is not None:
                aside.write(config.run.bad_rows)
        arrow = not isinstance(raw, pd.DataFrame)
        # the Arrow table is in canonical order already (``_by_record_id``)
        order = None if arrow else _canonical_order(raw)
        n = len(raw)
        size = n if chunk_records is None or chunk_records >= n else max(1, chunk_records)
        starts = list(range(0, n, size)) or [0]
        # a frame's chunks taken now (their own arrays): the whole frame is freed at once,
        # and each chunk's raw columns as it is standardized; an Arrow table's are slices
        # (no copy), a source's buffers freed once its last chunk is standardized
        parts: list[Any] = []
        for start in reversed(starts):
            if arrow:
                parts.append(raw.slice(start, size))
                continue
            part = raw.iloc[order[start : start + size]]
            part.index = pd.RangeIndex(len(part))
            parts.append(part)
            del part
        del raw, order
        # reading's scratch (the files' decoded text) handed back before standardizing
        release_memory()
        if timings is not None:
            timings["read"] = time.perf_counter() - t
        many = len(parts) > 1
        report.stage("standardizing", total=n * (len(FIELDS) + many), unit="values")
        # the two rules that read other records (an ambiguous current district is read in
        # the batch's city; an ID column's float damage is judged over all its IDs),
        # decided over every chunk before any is made
        batch = _batch_facts(parts, timings, report.advance, config) if many else None
        # codes cost ~1 s of factorizing a million records: worth it where the child's peak
        # is the run's (a large batch in one go, or a chunked run asked to stay small)
        # the raw text columns kept as Arrow strings all the same: a writer's, as it reads them
        keep_arrow = compact
        compact = compact and (many or n >= COMPACT_MIN_RECORDS)
        for start in starts:
            spent: dict[str, float] = {}
            rows = _chunk_rows(parts[-1], batch)
            # handed over: standardize frees each raw column it no longer needs
            frame = standardize(
                _lazy_frame(parts.pop()),
                config.standardize,
                timings=spent,
                step=report.advance,
                parallel=config.run.workers,
                keep=keep,
                batch=batch,
                compact=compact,
                distinct_rows=rows,
                keep_arrow=keep_arrow,
            )
            del rows
            if not parts:  # the batch's parsed values, not held while the last chunk is written
                batch = None
            if start and schema.ROW in frame.columns:  # ``keep`` may leave it out
                frame[schema.ROW] = np.arange(start, start + len(frame), dtype=np.int64)
            if timings is not None:
                for key, seconds in spent.items():
                    timings[key] = timings.get(key, 0.0) + seconds
            held = [frame]
            del frame  # no reference kept here while the caller holds the chunk
            yield held.pop()


# Fields whose distinct values are parsed once for a whole chunked batch
# (``_parse_whole``) rather than once per chunk: a person's name and addresses recur
# in the chunks of each registry (20 M records of the independent registries: 2.6 M
# distinct names, 5.5 M current and 5.2 M hukou addresses; 10.0 M, 12.4 M and 8.1 M
# counted chunk by chunk), and these parsers cost the most per value. Held as a pyarrow
# dictionary, their raw columns also shrink to one string per distinct value and an int32
# per row. IDs and phones are left per chunk: nearly one distinct value per person, their
# results would hold more than their parsing costs.
_PARSED_WHOLE = (schema.NAME, schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS)


def _batch_facts(
    parts: list[Any],
    timings: dict[str, float] | None,
    step: Callable[[int], None],
    config: RunConfig,
) -> BatchFacts:
    """What standardizing reads of the whole batch (``BatchFacts``), over all ``parts`` (raw
    chunks, frames or Arrow tables): ``address.current_address_cities`` of the current
    addresses and ``idnumber.column_verdict`` of the distinct ID numbers of all chunks.

    Where every part is an Arrow table, the ``_PARSED_WHOLE`` fields are parsed here once
    per distinct value of the whole batch (``_parse_whole``; ``BatchFacts.distinct``)
    and each part's column becomes its rows of the batch's dictionary (``parts`` is
    updated in place); the cities are counted from those results. Otherwise the current
    addresses are parsed a chunk at a time and dropped (holding every chunk's parse would
    hold what chunking spares), and parsed again when their chunk is standardized.
    Seconds are added to ``timings`` (each parsed field's ``FieldStandardizer.timing``,
    ``addresses`` for the cities, ``id_number``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from linkage.standardize.address import current_address_cities, parsed_address_cities
    from linkage.standardize.idnumber import column_verdict

    distinct: dict[str, DistinctResults] = {}
    if all(isinstance(p, pa.Table) for p in parts):
        entries = {entry.field: entry for entry in FIELDS}
        for field in _PARSED_WHOLE:
            if all(field in p.column_names for p in parts):
                t = time.perf_counter()
                # these parsers read nothing of the batch (``_given_for`` checks the same
                # function is asked for when each chunk takes its results)
                func = entries[field].parser(config.standardize, BatchFacts())
                distinct[field] = _parse_whole(parts, field, func)
                if timings is not None:
                    label = entries[field].timing
                    timings[label] = timings.get(label, 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    if schema.CURRENT_ADDRESS in distinct:
        cities = parsed_address_cities(
            distinct[schema.CURRENT_ADDRESS],
            np.concatenate([_dictionary_rows(p, schema.CURRENT_ADDRESS) for p in parts]),
        )
        step(sum(len(p) for p in parts))
    else:
        cities = pd.Series(dtype=np.int64)
        for part in parts:
            if schema.CURRENT_ADDRESS in _names_of(part):
                if not isinstance(part, pd.DataFrame):  # Arrow rows: this column as text
                    part = _as_frame(part.select([schema.CURRENT_ADDRESS]))
                counts = current_address_cities(part[schema.CURRENT_ADDRESS].astype(object))
                cities = cities.add(counts, fill_value=0)
            step(len(part))
    t_ids = time.perf_counter()
    held = [p for p in parts if schema.ID_NUMBER in _names_of(p)]
    if held and all(isinstance(p, pa.Table) for p in held):
        ids = pa.chunked_array(
            [c for p in held for c in p.column(schema.ID_NUMBER).chunks], type=pa.string()
        )
        verdict_of: Any = pc.unique(ids).drop_null()
    else:
        columns = [np.asarray(_as_frame(p)[schema.ID_NUMBER], dtype=object) for p in held]
        joined = pd.Series(np.concatenate(columns) if columns else [], dtype=object)
        verdict_of = list(pd.unique(joined[joined.notna()].to_numpy(dtype=object)))
    verdict = column_verdict(verdict_of)
    if timings is not None:
        timings["addresses"] = timings.get("addresses", 0.0) + t_ids - t
        timings["id_number"] = timings.get("id_number", 0.0) + time.perf_counter() - t_ids
    return BatchFacts(
        cities=cities.astype(np.int64), id_verdict=verdict, distinct=distinct or None
    )


def _parse_whole(
    parts: list[Any], field: str, func: Callable[[Sequence[str]], pd.DataFrame]
) -> DistinctResults:
    """``func`` over the distinct values of ``field`` in all ``parts`` (Arrow tables),
    each part's column replaced in ``parts`` by the same rows dictionary-encoded over the
    whole batch (``pyarrow.compute.dictionary_encode``; ``_dictionary_rows`` reads them):
    the raw strings are then held once per distinct value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pa.chunked_array(
        [c for p in parts for c in p.column(field).chunks], type=pa.string()
    )
    encoded = pc.dictionary_encode(column)
    del column
    dictionary = encoded.chunks[-1].dictionary if encoded.num_chunks else pa.array([], pa.string())
    # pyarrow hands every chunk the one final dictionary (the same buffers); unified
    # where a version would not
    if not all(_same_array(c.dictionary, dictionary) for c in encoded.chunks):
        encoded = encoded.unify_dictionaries()
        dictionary = encoded.chunks[-1].dictionary
    offset = 0
    for i, part in enumerate(parts):
        rows = encoded.slice(offset, part.num_rows)
        offset += part.num_rows
        parts[i] = part.set_column(part.column_names.index(field), field, rows)
    del encoded, part
    return DistinctResults.parse(dictionary, func)


def _same_array(a: Any, b: Any) -> bool:
    """Whether two pyarrow arrays are the same values by their buffers (same length and
    offset, every buffer at the same address): no comparison of values."""
    if len(a) != len(b) or a.offset != b.offset:
        return False
    return [x and x.address for x in a.buffers()] == [y and y.address for y in b.buffers()]


def _dictionary_rows(part: Any, field: str) -> np.ndarray:
    """The position in the batch's dictionary of each row's ``field`` value (-1: null), of
    a part ``_parse_whole`` encoded."""
    import pyarrow as pa

    column = part.column(field)
    if not column.num_chunks:
        return np.empty(0, dtype=np.int32)
    indices = pa.chunked_array([c.indices for c in column.chunks], type=pa.int32())
    return indices.fill_null(-1).to_numpy()


def _chunk_rows(part: Any, batch: BatchFacts | None) -> dict[str, np.ndarray] | None:
    """``standardize``'s ``distinct_rows`` for one part: each field of ``batch.distinct``
    as ``_dictionary_rows``; None without them."""
    if batch is None or not batch.distinct or isinstance(part, pd.DataFrame):
        return None
    return {field: _dictionary_rows(part, field) for field in batch.distinct}


def _names_of(part: Any) -> list[str]:
    """Column names of a raw chunk, a frame or an Arrow table."""
    return list(part.columns) if isinstance(part, pd.DataFrame) else part.column_names


# Input bytes from which standardizing's worker starts before the files are read: a field
# uses it from PARALLEL_MIN_DISTINCT distinct values, and a record takes ~100-200 bytes.
_WORKER_EARLY_BYTES = PARALLEL_MIN_DISTINCT * 100


def _input_bytes(config: RunConfig) -> int:
    """Bytes of the config's source files (those that can be read; 0 for the others)."""
    total = 0
    for source in config.sources.values():
        try:
            total += os.path.getsize(source.path)
        except (OSError, TypeError):
            continue
    return total
