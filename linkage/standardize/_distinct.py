"""Run a normalizer once per distinct value and map the result back to every row.

Registries repeat names, dates and addresses heavily, so this is the main speed lever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from linkage.tables import shared_text, text_columns


def map_distinct(
    values: pd.Series,
    func: Callable[[Sequence[str]], pd.DataFrame],
    null_row: dict | None = None,
) -> pd.DataFrame:
    """Apply ``func`` to the distinct non-null values of ``values``; return one row per input row.

    ``func`` receives a list of distinct strings and returns a DataFrame with one row per
    string, in order. Null inputs get ``null_row`` (column -> value), default all null and
    an empty flag string where the result has a ``quality_flags`` column. Text columns come
    back as dtype object holding ``str`` or ``None`` (``linkage.tables.text_columns``).
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    distinct = func(list(uniques))
    if len(distinct) != len(uniques):
        raise ValueError("normalizer returned a different number of rows than it was given")
    distinct = distinct.reset_index(drop=True)
    null_values = {c: None for c in distinct.columns}
    if "quality_flags" in distinct.columns:
        null_values["quality_flags"] = ""
    if null_row:
        null_values.update(null_row)
    null_frame = pd.DataFrame([null_values], columns=distinct.columns)
    table = text_columns(pd.concat([distinct, null_frame], ignore_index=True))
    _share_unchanged(table, uniques)
    # -1 (null) points at the appended null row
    take = np.where(codes < 0, len(distinct), codes)
    out = table.iloc[take]
    out.index = values.index
    return out


def _share_unchanged(table: pd.DataFrame, uniques: object) -> None:
    """Hold one string object per distinct derived value, and where a derived value equals
    its input (an ID or phone already clean, a name without spaces) the input's own object:
    at a million records each needless copy costs ~70 bytes a row and column."""
    given = np.asarray(uniques, dtype=object)
    for col in table.columns:
        values = table[col].to_numpy()
        if values.dtype != object:
            continue
        head = values[: len(given)]
        same = np.asarray(head == given, dtype=bool)
        if same.any():
            values = values.copy()
            values[: len(given)][same] = given[same]
        # one object per distinct derived value too: a normalizer slicing surnames or
        # region names out of 200,000 distinct names makes 200,000 copies of a few hundred
        try:
            shared = shared_text(values)
        except TypeError:  # unhashable values (not text): left as they are
            continue
        table[col] = pd.Series(shared, index=table.index, dtype=object)
