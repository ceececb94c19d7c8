"""CSV cells a spreadsheet would run as formulas: neutralize them for people, restore for programs.

pandas and pyarrow; imports nothing of the package (layer 1), so every writer and reader may use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# A cell a spreadsheet would run as a formula: OWASP "CSV Injection" names = + - @ tab and CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# "+86 138 0013 8000", "-", "-12.5": a sign before digits, spaces, dots, dashes and brackets
# only can call no function, so phone numbers and filler dashes stay as they are.
_PLAIN_SIGNED = r"^[+-][\d\s.()\-]*$"
_ESCAPED = r"^'+[=+\-@\t\r]"
# A cell that starts with a formula start or ``'``, or holds a ``;``: all that
# ``_may_need_escape`` looks for (RE2, one pass).
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
    either = pc.match_substring_regex(arr, _MAY_ESCAPE)
    return np.asarray(either.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


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
