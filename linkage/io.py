"""Read registry exports into canonical record tables, and write outputs atomically.

Owns file formats and encodings; imports config, schema, errors and (for ``read_records``,
the one read-sort-standardize entry point) the standardize stage. Every column is read as
text so IDs and phones keep leading zeros and a trailing X.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from linkage import schema
from linkage.config import RunConfig, SourceConfig
from linkage.errors import InputError
from linkage.standardize.combine import standardize

logger = logging.getLogger(__name__)

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
    """Return the share of Han characters in ``text`` that are common ones (1.0 if none)."""
    han = [c for c in text[:sample] if "\u4e00" <= c <= "\u9fff"]
    if not han:
        return 1.0
    return sum(_is_common_han(c) for c in han) / len(han)


def decode_bytes(data: bytes, encoding: str = "auto", *, path: str = "") -> tuple[str, str]:
    """Decode a file's bytes; return (text, encoding used). ``auto`` detects UTF-8/GB18030/Big5."""
    if encoding != "auto":
        codec = _CODEC.get(encoding, encoding)
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise InputError(
                f"cannot be decoded as {encoding} (byte {exc.start}); check 'encoding' in the config",
                path=path,
                row=line,
            ) from None
        return text.removeprefix("\ufeff"), encoding
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates: list[tuple[float, str, str]] = []
    for codec in ("gb18030", "big5"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        candidates.append((_han_plausibility(text), codec, text))
    if candidates:
        score, codec, text = max(candidates, key=lambda c: (c[0], c[1] == "gb18030"))
        if score >= _COMMON_HAN_SHARE:
            return text, codec
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        text = str(best)
        if _han_plausibility(text) >= _COMMON_HAN_SHARE:
            return text, best.encoding
    raise InputError(
        "could not detect the text encoding (tried UTF-8, GB18030, Big5): set 'encoding' "
        "in the source config",
        path=path,
    )


def _read_csv_arrow(text: str, cfg: SourceConfig) -> pd.DataFrame | None:
    """Parse with pyarrow (multithreaded, trims in C++); None when it cannot, to fall back."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    first_line = text.split("\n", 1)[0]
    header = next(csv.reader([first_line], delimiter=cfg.delimiter), [])
    if not header or len(set(header)) != len(header):
        return None
    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            parse_options=pacsv.ParseOptions(delimiter=cfg.delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    columns = {}
    for name in table.column_names:
        col = pc.utf8_trim_whitespace(table.column(name))
        columns[name] = pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)
    frame = pa.table(columns).to_pandas()
    frame.attrs["clean_text"] = True  # already trimmed text with None for blanks
    return frame


def _read_csv_text(text: str, cfg: SourceConfig) -> pd.DataFrame:
    path = str(cfg.path)
    if not text.strip():
        raise InputError("file is empty (no header row)", path=path)
    frame = _read_csv_arrow(text, cfg)
    if frame is not None:
        return frame
    opts = dict(dtype=str, keep_default_na=False, na_values=[""], sep=cfg.delimiter)
    try:
        return pd.read_csv(io.StringIO(text), engine="c", **opts)
    except pd.errors.EmptyDataError:
        raise InputError("file is empty (no header row)", path=path) from None
    except pd.errors.ParserError:
        pass
    # Collect every malformed row with its line number instead of stopping at the first.
    bad: list[str] = []
    reader = csv.reader(io.StringIO(text), delimiter=cfg.delimiter)
    header = next(reader)
    for row in reader:
        if len(row) != len(header) and any(cell.strip() for cell in row):
            bad.append(f"line {reader.line_num}: {len(row)} fields, expected {len(header)}")
    if not bad:
        raise InputError("CSV could not be parsed", path=path)
    shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
    raise InputError(f"{len(bad)} malformed row(s): {shown}", path=path)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn every column into strings, keeping nulls; integers keep all their digits."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_integer_dtype(s):
            s = s.astype("Int64").astype(str).where(s.notna(), None)
        elif not (s.dtype == object or pd.api.types.is_string_dtype(s)):
            s = s.astype(str).where(s.notna(), None)
        s = s.astype(object).str.strip()
        out[col] = s.where(s.notna() & (s != ""), None)
    return pd.DataFrame(out, index=frame.index)


def read_raw(cfg: SourceConfig) -> pd.DataFrame:
    """Read a source file as an all-text table with its original headers."""
    path = Path(cfg.path)
    if not path.exists():
        raise InputError("file not found", path=str(path))
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        text, used = decode_bytes(path.read_bytes(), cfg.encoding, path=str(path))
        logger.info("%s: decoded as %s", path, used)
        frame = _read_csv_text(text, cfg)
    elif suffix in (".xlsx", ".xlsm"):
        try:
            frame = pd.read_excel(path, sheet_name=cfg.sheet or 0, dtype=str, engine="openpyxl")
        except ValueError as exc:
            raise InputError(f"cannot read sheet {cfg.sheet!r}: {exc}", path=str(path)) from None
    elif suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise InputError(
            f"unsupported file type '{suffix}', expected .csv, .xlsx or .parquet", path=str(path)
        )
    frame.columns = [str(c).strip().removeprefix("\ufeff") for c in frame.columns]
    if getattr(frame, "attrs", {}).get("clean_text"):
        return frame
    return _as_text(frame)


def _line_numbers(frame: pd.DataFrame, mask: pd.Series, suffix: str) -> list[int]:
    # +2: one for the header line, one because lines count from 1 (a row of Excel likewise)
    return (
        [int(i) + 2 for i in frame.index[mask]] if suffix != ".parquet" else list(frame.index[mask])
    )


def to_canonical(raw: pd.DataFrame, cfg: SourceConfig) -> pd.DataFrame:
    """Map a raw table's headers to canonical fields; unmapped columns pass through."""
    path = str(cfg.path)
    suffix = Path(cfg.path).suffix.lower()
    wanted = [cfg.record_id, *cfg.columns]
    missing = [c for c in dict.fromkeys(wanted) if c not in raw.columns]
    if missing:
        raise InputError(
            f"mapped column(s) {', '.join(repr(c) for c in missing)} not in the file; "
            f"its columns are {', '.join(repr(c) for c in raw.columns)}",
            path=path,
        )
    ids = raw[cfg.record_id]
    empty = ids.isna()
    if empty.any():
        lines = _line_numbers(raw, empty, suffix)
        raise InputError(
            f"{int(empty.sum())} row(s) have no record id ({', '.join(map(str, lines[:10]))})",
            path=path,
            column=cfg.record_id,
        )
    dup = ids.duplicated(keep=False)
    if dup.any():
        lines = _line_numbers(raw, dup, suffix)
        values = list(dict.fromkeys(ids[dup]))[:5]
        raise InputError(
            f"{int(ids[dup].nunique())} duplicate record id value(s), e.g. "
            f"{', '.join(map(repr, values))}, on lines {', '.join(map(str, lines[:10]))}",
            path=path,
            column=cfg.record_id,
        )
    out = pd.DataFrame(index=raw.index)
    out[schema.SOURCE] = cfg.name
    out[schema.RECORD_ID] = ids
    for column, field in cfg.columns.items():
        if field == schema.RECORD_ID:
            continue
        out[field] = raw[column]
    used = set(wanted)
    for column in raw.columns:
        if column in used:
            continue
        # a pass-through header that collides with a canonical name keeps its data, renamed
        target = f"src_{column}" if column in out.columns else column
        out[target] = raw[column]
    return out.reset_index(drop=True)


def read_source(cfg: SourceConfig) -> pd.DataFrame:
    """Read one source into a canonical record table (all values text, nulls kept)."""
    return to_canonical(read_raw(cfg), cfg)


def read_sources(config: RunConfig) -> pd.DataFrame:
    """Read every source of a run and stack them; canonical fields absent from a source are null."""
    frames = [read_source(cfg) for cfg in config.sources.values()]
    records = pd.concat(frames, ignore_index=True, sort=False)
    # columns absent from some sources come back as NaN: make them None like every other null
    partial = [c for c in records.columns if not all(c in f.columns for f in frames)]
    for col in partial:
        values = records[col].astype(object)
        records[col] = values.where(values.notna(), None)
    for field in schema.CANONICAL_FIELDS:
        if field not in records.columns:
            records[field] = None
    front = list(schema.CANONICAL_FIELDS)
    return records[front + [c for c in records.columns if c not in front]]


def atomic_write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Write a file through ``writer(tmp_path)`` then move it into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a UTF-8 CSV atomically."""
    return atomic_write(path, lambda p: frame.to_csv(p, index=False, encoding="utf-8"))


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a Parquet file atomically."""
    return atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def read_records(config: RunConfig, *, timings: dict[str, float] | None = None) -> pd.DataFrame:
    """Read every source, sort canonically and standardize: THE way records enter a run.

    Returns the standardized records table (``rid`` 0..n-1). Sorting by (source, record_id)
    makes every later stage (random u sample, tie-breaks, ``rid``) independent of the order
    rows arrive in: same inputs, same identities. Seconds spent are added to ``timings``
    (``read`` and one entry per standardizer group). Raises ``InputError`` for unreadable
    input, ``ConfigError`` for a bad config.
    """
    t = time.perf_counter()
    raw = read_sources(config).sort_values([schema.SOURCE, schema.RECORD_ID], kind="stable")
    if timings is not None:
        timings["read"] = time.perf_counter() - t
    return standardize(raw, config.standardize, timings=timings)
