"""CSV cells a spreadsheet would run as formulas: neutralize them for people, restore for programs.

pandas and pyarrow; imports nothing of the package (layer 1), so every writer and reader may use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

# A cell a spreadsheet would run as a formula: OWASP "CSV Injection" names = + - @ tab and CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# "+86 138 0013 8000", "-", "-12.5": a sign before digits, spaces, dots, dashes and brackets
# only can call no function, so phone numbers and filler dashes stay as they are.
_PLAIN_SIGNED = r"^[+-][\d\s.()\-]*$"
_ESCAPED = r"^'+[=+\-@\t\r]"
# A cell that starts with a formula start or ``'``, or holds a ``;``: all that
# ``_may_need_escape`` looks for (by bytes: ``starts_with_bytes``, ``holds_bytes``).
_MAY_ESCAPE = r"^[=+\-@'\t\r]|;"
# Inside a cell: a ';' then (after quotes, spaces or tabs) a formula start. A spreadsheet
# whose list separator is ';' (the usual one where the decimal mark is a comma) splits the
# line there, whatever the CSV quoting, and runs the piece after it as a formula.
_SPLIT = r";(?='*[\s\"]*[=+\-@])"
# ... the same ';' once neutralized: ";'" before it (one more "'" where one was already there)
_SPLIT_ESCAPED = r";'(?='*[\s\"]*[=+\-@])"


def _may_need_escape(values: pd.Series) -> np.ndarray:
    """True for each cell :func:`neutralize_formulas` may change: text starting with one of
    ``= + - @ ' tab CR`` or holding a ``;``; a superset of the cells it changes.

    One pyarrow pass (C++) over the column, so that the regular expressions (Python per cell
    for the pattern ``\\d``/``\\s`` classes) run on these few cells only; a column holding
    anything but text and nulls is answered True everywhere (all cells take the full path).
    """
    try:
        # the column's own Arrow text when it has one (pandas 3's ``str``): cast to another
        # string type or sliced, a copy of each column was made beside the others being
        # written (the writing stage's peak at three million records)
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return np.ones(len(values), dtype=bool)
    if pa.types.is_null(arr.type):
        return np.zeros(len(values), dtype=bool)
    if pa.types.is_dictionary(arr.type):  # a Categorical: its text
        try:
            arr = arr.cast(arr.type.value_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.ones(len(values), dtype=bool)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return np.ones(len(values), dtype=bool)
    return starts_with_bytes(arr, _START_BYTES) | holds_bytes(arr, b";")


# The first bytes ``_MAY_ESCAPE`` looks for: ``= + - @ ' tab CR``.
_START_BYTES = b"=+-@'\t\r"

# How many bytes of text ``holds_bytes`` compares at once: bounds its temporary arrays
# (a 20-million-row column of identity ids is ~400 MB of UTF-8).
_BYTES_AT_ONCE = 1 << 25


def _utf8_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow ``string``/``large_string`` array's value offsets (``len(arr) + 1`` of
    them, int32 or int64, positions in the bytes) and its UTF-8 bytes (uint8), read in
    place: Arrow's columnar layout, no copy."""
    buffers = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    if buffers[1] is None:  # an empty array
        offsets = np.zeros(len(arr) + 1, dtype=width)
    else:
        offsets = np.frombuffer(buffers[1], dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else None
    return offsets, np.zeros(0, dtype=np.uint8) if data is None else data


def _chunks(arr: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(arr.chunks) if isinstance(arr, pa.ChunkedArray) else [arr]


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The chunks' masks as one (a chunked array may have no chunk at all)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _valid(chunk: pa.Array) -> np.ndarray | None:
    """Which values are not null (None when none is)."""
    if not chunk.null_count:
        return None
    return np.asarray(chunk.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def holds_bytes(arr: pa.Array | pa.ChunkedArray, chars: bytes) -> np.ndarray:
    """For each value of a pyarrow text array (``string`` or ``large_string``, chunked or
    not), whether its UTF-8 holds any of the ASCII bytes ``chars``; False for nulls.

    The bytes are compared where Arrow keeps them (numpy over the data buffer, a block of
    ``_BYTES_AT_ONCE`` at a time): exact, since an ASCII byte never occurs inside another
    character's UTF-8 encoding (RFC 3629: continuation and lead bytes of multi-byte
    characters are all >= 0x80). ~20 times faster than ``pyarrow.compute``'s RE2 character
    class over the same column: golden_records.csv of twenty million records is ~4 GB of
    text, all of it searched. Raises ``ValueError`` for a byte of ``chars`` that is not ASCII.
    """
    codes = np.frombuffer(chars, dtype=np.uint8)
    if not len(codes) or codes.max() >= 0x80:
        raise ValueError(f"holds_bytes looks for ASCII bytes, not {chars!r}")
    return _joined([_holds_bytes(chunk, codes) for chunk in _chunks(arr)])


def _holds_bytes(chunk: pa.Array, codes: np.ndarray) -> np.ndarray:
    hit = np.zeros(len(chunk), dtype=bool)
    if not len(chunk):
        return hit
    offsets, data = _utf8_buffers(chunk)
    low, high = int(offsets[0]), int(offsets[-1])
    top = int(codes.max())
    for start in range(low, high, _BYTES_AT_ONCE):
        block = data[start : min(start + _BYTES_AT_ONCE, high)]
        if len(codes) == 1:
            at = np.flatnonzero(block == codes[0])
        else:  # the few bytes as low as the highest wanted, then those exactly
            at = np.flatnonzero(block <= top)
            at = at[np.isin(block[at], codes)]
        if len(at):
            # the value whose bytes hold each position: the last offset at or before it
            hit[np.searchsorted(offsets, at + start, side="right") - 1] = True
    valid = _valid(chunk)
    return hit if valid is None else hit & valid


def starts_with_bytes(arr: pa.Array | pa.ChunkedArray, chars: bytes) -> np.ndarray:
    """For each value of a pyarrow text array (as :func:`holds_bytes` takes), whether its
    first byte is one of the ASCII bytes ``chars`` (its first character, by the same
    reasoning); False for empty values and nulls. Raises ``ValueError`` as
    :func:`holds_bytes` does."""
    codes = np.frombuffer(chars, dtype=np.uint8)
    if not len(codes) or codes.max() >= 0x80:
        raise ValueError(f"starts_with_bytes looks for ASCII bytes, not {chars!r}")
    wanted = np.zeros(256, dtype=bool)
    wanted[codes] = True
    parts = []
    for chunk in _chunks(arr):
        hit = np.zeros(len(chunk), dtype=bool)
        if len(chunk):
            offsets, data = _utf8_buffers(chunk)
            starts = offsets[:-1]
            filled = offsets[1:] > starts
            hit[filled] = wanted[data[starts[filled]]]
            valid = _valid(chunk)
            if valid is not None:
                hit &= valid
        parts.append(hit)
    return _joined(parts)


def _escape_cells(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The neutralized text of ``values`` and the mask of cells that changed."""
    text = values.astype("string")
    risky = text.str.startswith(_FORMULA_START).fillna(False) & ~text.str.fullmatch(
        _PLAIN_SIGNED
    ).fillna(False)
    # a value that already looks escaped gets one more quote, so restore_formulas is exact
    risky |= text.str.contains(_ESCAPED, regex=True).fillna(False)
    split = text.str.contains(";", regex=False).fillna(False)
    if split.any():
        split &= text.str.contains(_SPLIT, regex=True).fillna(False)
    new = text.where(~split, text.str.replace(_SPLIT, ";'", regex=True))
    new = new.where(~risky, "'" + new)
    return new, (risky | split).to_numpy(dtype=bool)


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix a ``'`` to text cells a spreadsheet would evaluate (OWASP CSV injection guidance).

    Columns taken and returned alike; only object/string columns (and categoricals whose
    categories need escaping, as objects) change, and only cells that
    start with ``= + - @``, tab or CR, except a sign followed by digits, spaces, dots, dashes or
    brackets only (phone numbers, "-" fillers). Inside a cell, a ``;`` followed (after quotes
    and spaces) by ``= + - @`` gets a ``'`` after it: a spreadsheet whose list separator is
    ``;`` would start a cell there. Machine formats (Parquet) are written raw.
    """
    changed = {}
    for col in frame.columns:
        values = frame[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            # its categories are its text: a column whose categories need nothing is kept as
            # it is (golden records' provenance sources), else it is escaped as objects
            if not _may_need_escape(pd.Series(values.cat.categories, dtype=object)).any():
                continue
            values = values.astype(object)
        if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
            continue
        # the checks below cost Python per cell: run them on the few candidate cells only
        where = np.flatnonzero(_may_need_escape(values))
        if not len(where):
            continue
        new, mask = _escape_cells(values.iloc[where])
        if mask.any():
            out = values.astype(object).to_numpy(copy=True)
            out[where[mask]] = new.astype(object).to_numpy()[mask]
            changed[col] = pd.Series(out, index=values.index, dtype=object, name=col)
    if not changed:
        return frame  # the common case: no copy
    out = frame.copy()
    for col, values in changed.items():
        out[col] = values
    return out


def restore_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`neutralize_formulas` on a CSV the package wrote (drop one leading ``'``, and
    one ``'`` after each neutralized ``;``)."""
    out = frame.copy()
    for col in out.columns:
        values = out[col]
        if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
            continue
        text = values.astype("string")
        escaped = text.str.contains(_ESCAPED, regex=True).fillna(False)
        split = text.str.contains(";'", regex=False).fillna(False)
        if escaped.any() or split.any():
            new = text.where(~escaped, text.str[1:])
            new = new.where(~split, new.str.replace(_SPLIT_ESCAPED, ";", regex=True))
            mask = (escaped | split).to_numpy()
            out[col] = values.astype(object).where(~mask, new.astype(object))
    return out
