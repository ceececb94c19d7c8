"""Golden records: one record per identity by survivorship rules, with provenance and conflicts.

Pure function over the standardized records and their identity labels; imports schema,
its settings from config and the filler list of the standardize stage.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import DEFAULT_FIELDS, FieldRule, GoldenSettings  # noqa: F401 - re-exported
from linkage.progress import release_memory
from linkage.standardize._fillers import FILLER_TEXTS, is_filler_text
from linkage.tables import (
    arrow_large_text,
    categorical_arrow,
    columns_of,
    packed_lexsort,
    shared_text,
    sorted_unique,
)

logger = logging.getLogger(__name__)

# Fields where two different values inside one identity are worth an analyst's look.
CONFLICT_FIELDS = (schema.ID_NUMBER, schema.BIRTH_DATE, schema.GENDER)


def _settling_class() -> str:
    """An RE2 class of the digits 1-9 and the CJK unified ideographs (U+4E00-U+9FFF) that
    no filler text holds."""
    used = sorted({ord(c) for t in FILLER_TEXTS for c in t if "\u4e00" <= c <= "\u9fff"})
    digits = "".join(d for d in "123456789" if not any(d in t for t in FILLER_TEXTS))
    ranges, low = [digits], 0x4E00
    for code in [*used, 0xA000]:
        if code > low:
            ranges.append(f"\\x{{{low:04x}}}-\\x{{{code - 1:04x}}}")
        low = code + 1
    return "[" + "".join(ranges) + "]"


# A value holding one of these characters is no filler: NFKC keeps ASCII digits and unified
# ideographs as they are, and neither stripping, lowercasing nor the filler punctuation
# removes them (IDs, phones and dates hold a digit, names and addresses such a character).
_NOT_FILLER_HAN = _settling_class()


def _filler_mask(values: np.ndarray) -> np.ndarray:
    """``is_filler_text`` of each value. Most values hold a character no filler has
    (``_NOT_FILLER_HAN``): one pyarrow (RE2) pass settles those without a Python call
    each (a million distinct addresses cost ~3 s in Python); the rest go through
    ``is_filler_text`` itself."""
    import pyarrow as pa

    out = np.zeros(len(values), dtype=bool)
    try:
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: every value in Python
        settled = np.zeros(len(values), dtype=bool)
    else:
        settled = _settled(text)
    rest = np.flatnonzero(~settled)
    out[rest] = [is_filler_text(v) for v in values[rest]]
    return out


def _settled(text: Any) -> np.ndarray:
    """Which values of a pyarrow text array hold a character no filler has (null: False)."""
    import pyarrow.compute as pc

    found = pc.match_substring_regex(text, _NOT_FILLER_HAN).fill_null(False)
    return found.to_numpy(zero_copy_only=False)


def _filler_mask_arrow(text: Any) -> np.ndarray:
    """:func:`_filler_mask` of a pyarrow text array without nulls (the distinct values of a
    column read as a dictionary): only the values the Arrow pass leaves unsettled become
    Python strings."""
    import pyarrow as pa

    out = np.zeros(len(text), dtype=bool)
    rest = np.flatnonzero(~_settled(text))
    if len(rest):
        out[rest] = [is_filler_text(v) for v in text.take(pa.array(rest)).to_pylist()]
    return out


def _stripped_text(column: pd.Series) -> np.ndarray:
    """``shared_text(column.astype("string").str.strip())``: the column as text with
    surrounding whitespace stripped (pandas' ``str.strip``, Unicode whitespace), one ``str``
    object per distinct result, None for nulls. Stripped once per distinct value rather
    than per row: the per-row form held two Arrow copies of the column (shown names and
    addresses of a million records) at the golden-records stage's peak."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    text = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
    pool = np.empty(len(uniques) + 1, dtype=object)
    pool[: len(uniques)] = shared_text(text.astype("string").str.strip())
    pool[-1] = None  # code -1 (null)
    return pool[codes]


def _source_rank(sources: pd.Series, priority: list[str]) -> np.ndarray:
    order = {s: i for i, s in enumerate(priority)}
    rest = sorted(s for s in pd.unique(sources) if s not in order)
    for s in rest:
        order[s] = len(order)
    return _mapped(sources, order)


def _mapped(values: pd.Series, mapping: dict) -> np.ndarray:
    """``values.map(mapping).to_numpy(np.int64)`` looked up once per distinct value: mapping
    an Arrow text column makes a Python string per row first (a million records' sources)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if (codes < 0).any():  # a null: as map gives it (to_numpy raises on it)
        return values.map(mapping).to_numpy(np.int64)
    table = pd.Series(np.asarray(uniques, dtype=object), dtype=object).map(mapping)
    return table.to_numpy(np.int64)[codes]


def _group_counts(keys: np.ndarray) -> np.ndarray:
    """For each element of the integer array ``keys``, how many elements share its value
    (``np.unique(keys, return_inverse=True, return_counts=True)``'s ``counts[inverse]``),
    by hashing instead of a sort."""
    codes, _ = pd.factorize(keys)
    return np.bincount(codes).astype(np.int64)[codes]


def _dense_rank(values: pd.Series | np.ndarray) -> np.ndarray:
    """Rank strings in sort order (0 = smallest); nulls get -1."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), sort=True)
    return codes.astype(np.int64)


def _key_rank(keys: pd.Series) -> np.ndarray:
    """:func:`_dense_rank` of record keys that are all distinct: ``arange`` when they already
    increase row by row (a batch's records come sorted by source and record id), checked in
    one pyarrow pass (UTF-8 byte order is code point order, as Python compares), else sorted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(keys) > 1:
        try:
            arr = pa.array(keys, type=pa.string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
            return _dense_rank(keys)
        rising = pc.greater(arr.slice(1), arr.slice(0, len(arr) - 1)).fill_null(False)
        if not pc.all(rising).as_py():
            return _dense_rank(keys)
    return np.arange(len(keys), dtype=np.int64)


def _text_objects(column: pd.Series) -> np.ndarray:
    """The column's own ``str`` objects when it holds only strings (no copy of a million
    keys), else its values as text, one object per distinct value."""
    values = column.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values
    return shared_text(column.astype(str))


def _key_text(column: pd.Series) -> tuple[np.ndarray | None, object | None]:
    """A record key column (``source``, ``record_id``) for :func:`_picked`: its Arrow text
    straight from an Arrow-backed text column without nulls (no objects), else its objects
    (``_text_objects``) and their Arrow form. A Python ``str`` per record of an Arrow
    column was ~65 bytes a record held through the golden table's assembly (two keys: ~1.3
    GB at ten million records)."""
    arrow = arrow_large_text(column) if isinstance(_TEXT_DTYPE, pd.StringDtype) else None
    if arrow is not None:
        return None, arrow
    values = _text_objects(column)
    return values, _arrow_text(values)


def _provenance_sources(
    codes: np.ndarray,
    dtype: pd.CategoricalDtype,
    rows: np.ndarray,
    owners: np.ndarray,
    n_owners: int,
) -> pd.Categorical:
    """A ``<field>_source`` column as a categorical of the source names (a byte a golden
    record, not an Arrow string: ~15 bytes a cell, eight fields, ~0.6 GB at ten million
    records): source ``codes[rows[i]]`` (codes into ``dtype``'s categories) for owner
    ``owners[i]``, null for owners without a chosen record."""
    out = np.full(n_owners, -1, dtype=np.int8 if len(dtype.categories) < 127 else np.int32)
    out[owners] = codes[rows]
    return pd.Categorical.from_codes(out, dtype=dtype)


def _as_text(column: pd.Categorical) -> object:
    """A categorical of text as the column an object array of its values (``str`` or None)
    gives when assigned to a frame: Arrow text under pandas 3 (``_TEXT_DTYPE``), taken
    from the categories in one pass; objects when every value is null or under pandas 2."""
    codes = np.asarray(column.codes)
    present = codes >= 0
    if present.any() and getattr(_TEXT_DTYPE, "storage", None) == "pyarrow":
        import pyarrow as pa

        text = categorical_arrow(column).cast(pa.large_string())
        return pd.array(text, dtype=_TEXT_DTYPE)
    values = np.full(len(codes), None, dtype=object)
    values[present] = np.asarray(column.categories, dtype=object)[codes[present]]
    return values


# The dtype pandas gives a column assigned an object array of ``str`` and None: pandas 3's
# Arrow-backed ``str`` (NaN for missing); object under pandas 2.
_TEXT_DTYPE = pd.Series(np.array(["a", None], dtype=object)).dtype


def _arrow_text(values: np.ndarray) -> object | None:
    """``values`` (``str`` or None) as a pyarrow ``large_string`` array (the storage of
    pandas 3's ``str`` columns), or None when pandas would not store them so (pandas 2,
    or a value that is not text): the caller then builds its columns from the objects."""
    import pyarrow as pa

    storage = getattr(_TEXT_DTYPE, "storage", None)
    if not isinstance(_TEXT_DTYPE, pd.StringDtype) or storage != "pyarrow":
        return None
    try:
        return pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        return None


def _picked(
    values: np.ndarray | None,
    arrow: object | None,
    rows: np.ndarray,
    owners: np.ndarray,
    n_owners: int,
) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """A golden column: ``values[rows[i]]`` for owner ``owners[i]`` (each owner once), null
    for owners without a row; the same column an object array of those values gives when
    assigned to a frame. ``arrow`` is ``values``' Arrow form (``_arrow_text``) when the
    caller has it for several columns, else None; with ``arrow``, ``values`` may be None
    (it is read only for a column of nulls).

    With pandas 3 that assignment converts every cell to Arrow in Python (pandas'
    ``ensure_string_array``, ~0.05 s per 170,000 cells, 27 golden columns); taking the
    rows in Arrow is one C pass. A column whose picked values are all null keeps the
    object path: pandas infers object, not ``str``, for it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if arrow is None:
        # the column made in one conversion of an object array as long as the table, not
        # the picked values' Arrow copy and then its ``take`` (two copies of the column at
        # golden records' peak: ~1 GB a field at eleven million identities)
        out = np.full(n_owners, None, dtype=object)
        out[owners] = values[rows]
        column = _arrow_text(out)
        if column is None or not len(rows) or column.null_count == len(column):
            return out  # pandas 2, a value that is not text, or every value null
        return pd.array(column, dtype=_TEXT_DTYPE)
    picked, at = arrow, rows
    if picked is None or not len(rows) or picked.null_count == len(picked):
        out = np.full(n_owners, None, dtype=object)
        if values is not None:  # else every value is null
            out[owners] = values[rows]
        return out
    take = np.zeros(n_owners, dtype=np.int64)
    take[owners] = at
    missing = np.ones(n_owners, dtype=bool)
    missing[owners] = False
    column = pc.take(picked, pa.array(take, mask=missing))
    if column.null_count == len(column):  # every picked value null (object, as above)
        return np.full(n_owners, None, dtype=object)
    return pd.array(column, dtype=_TEXT_DTYPE)


def _golden_field(
    field: str,
    rule: FieldRule,
    values: pd.Series,
    raw: pd.Series | None,
    valid: np.ndarray,
    ranks: _Ranks,
    factorized: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[object, np.ndarray, np.ndarray, np.ndarray | None]:
    """One field of the golden records: its column (``_picked``), the chosen record of
    each identity that has a value (rows and identity codes, for the provenance columns)
    and, for a ``CONFLICT_FIELDS`` field, its conflict text per identity (else None).

    ``values``: the rule's column; ``raw``: the shown column (``rule.raw``) when the records
    have it; ``valid``: the ID-validity mask (all True unless the field reads ``id_std``).
    ``factorized``: ``values``' codes and distinct values when the reader had them
    (``tables.read_text_columns``); only which rows share a value matters here, not how
    the values are numbered. A function, so that its arrays and strings are freed when it
    returns.
    """
    n_ident = ranks.n_ident
    if factorized is not None:
        value_codes, value_names = factorized
    else:
        value_codes, value_names = pd.factorize(pd.Series(values.to_numpy(), dtype=object))
    # raw columns (addresses) may hold fillers such as 不详: never a golden value
    filler = np.append(_filler_mask(np.asarray(value_names, dtype=object)), False)
    present = (value_codes >= 0) & ~filler[value_codes]
    rows = np.flatnonzero(present)
    shown = values
    held = np.ones(len(rows), dtype=bool)
    if raw is not None:
        # one object per distinct shown value: golden records keep references to them
        shown = pd.Series(_stripped_text(raw), index=values.index, dtype=object)
        held = shown.to_numpy(dtype=object)[rows] == values.to_numpy(dtype=object)[rows]
    chosen_rows, chosen_ident, conflict = _choose(
        field,
        rule,
        rows,
        held,
        value_codes,
        lambda at: np.asarray(value_names, dtype=object)[at],
        len(value_names),
        valid,
        ranks,
    )
    column = _picked(shown.to_numpy(dtype=object), None, chosen_rows, chosen_ident, n_ident)
    return column, chosen_rows, chosen_ident, conflict


def _choose(
    field: str,
    rule: FieldRule,
    rows: np.ndarray,
    held: np.ndarray,
    value_codes: np.ndarray,
    value_text: Callable[[np.ndarray], np.ndarray],
    n_values: int,
    valid: np.ndarray,
    ranks: _Ranks,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The survivorship choice of one field: for each identity with a value, the chosen
    record (rows into the records) and the identity's code, and for a ``CONFLICT_FIELDS``
    field its conflict text per identity (else None).

    ``rows``: the records with a value (not null, not a filler), ascending; ``held``: per
    row of ``rows``, whether the shown value is the standardized one; ``value_codes``: a
    code per record of its value (``n_values`` distinct values, each once; only which rows
    share a value matters, not how they are numbered); ``value_text(codes)``: those values
    as an object array of ``str``, for the conflict text."""
    ident_codes, n_ident = ranks.ident_codes, ranks.n_ident
    ic, vc = ident_codes[rows], value_codes[rows].astype(np.int64)
    pair_key = ic.astype(np.int64) * (n_values + 1) + vc
    freq = _group_counts(pair_key)
    v_ok, s_rank, r_rank, k_rank = (
        valid[rows],
        ranks.source[rows],
        ranks.recent[rows],
        ranks.key[rows],
    )
    # np.lexsort sorts by the last key first; negate for descending keys
    if rule.rule == "valid_id":
        keys = (k_rank, s_rank, -freq, ~v_ok, ic)
    elif rule.rule == "most_frequent":
        keys = (k_rank, -r_rank, s_rank, ~held, -freq, ic)
    elif rule.rule == "most_recent":
        keys = (k_rank, s_rank, -r_rank, ic)
    else:
        keys = (k_rank, -r_rank, s_rank, ic)
    order = packed_lexsort(keys)
    sorted_ident = ic[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_ident[1:] != sorted_ident[:-1]
    # int32 where they fit: every field's are held until the golden table is put together
    # (two arrays an identity a field: ~0.15 GB less at three million records)
    small = np.int32 if len(value_codes) < 2**31 else np.int64
    chosen_rows = rows[order[first]].astype(small)
    chosen_ident = sorted_ident[first].astype(small)
    conflict = None
    if field in CONFLICT_FIELDS:
        pool = v_ok if rule.rule == "valid_id" else np.ones(len(rows), dtype=bool)
        distinct = sorted_unique(pair_key[pool])
        owners = distinct // (n_values + 1)
        n_distinct = np.bincount(owners, minlength=n_ident)
        conflict = np.full(n_ident, "", dtype=object)
        several = np.flatnonzero(n_distinct > 1)
        if len(several):
            keep = np.isin(owners, several)
            frame = pd.DataFrame(
                {
                    "owner": owners[keep],
                    "value": value_text(distinct[keep] % (n_values + 1)),
                }
            )
            joined = frame.groupby("owner")["value"].agg(lambda v: "|".join(sorted(map(str, v))))
            conflict[joined.index.to_numpy()] = (f"{field}=" + joined).to_numpy()
    return chosen_rows, chosen_ident, conflict


@dataclass(frozen=True)
class _Coded:
    """A text column as ``codes`` (int32 per record, -1 for null) into ``dictionary`` (a
    pyarrow ``large_string`` array without nulls, each value once): a Parquet column
    dictionary-encoded by pyarrow (``tables.read_coded_text``), without a Python object
    per value."""

    codes: np.ndarray
    dictionary: Any


def _golden_field_coded(
    field: str,
    rule: FieldRule,
    values: _Coded,
    raw: _Coded | None,
    valid: np.ndarray,
    ranks: _Ranks,
) -> tuple[object, np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`_golden_field` of columns held as codes into their distinct values (Arrow
    text): the same column, chosen rows, identities and conflicts, with no object array
    per record nor Python string per distinct value. At twenty million records the
    addresses read as objects (value and shown column) were ~2.5 GB of the golden-records
    stage's peak. The shown values are stripped in pyarrow (``utf8_trim_whitespace``, what
    pandas' Arrow ``str.strip`` calls); used where pandas holds text as Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names, value_codes = values.dictionary, values.codes
    filler = np.append(_filler_mask_arrow(names), False)  # code -1 (null) reads False
    rows = np.flatnonzero((value_codes >= 0) & ~filler[value_codes])
    del filler
    if raw is not None:
        pool, shown_codes = pc.utf8_trim_whitespace(raw.dictionary), raw.codes
        # whether the stripped shown value is the value, once per distinct (shown, value)
        width = len(names) + 1
        pair = raw.codes[rows].astype(np.int64) * width + value_codes[rows]
        pair_codes, pairs = pd.factorize(pair)
        pairs = np.asarray(pairs)
        shown_at, value_at = pairs // width, pairs % width  # shown -1 (null): floor -1
        same = pc.equal(
            pool.take(pa.array(shown_at, mask=shown_at < 0)), names.take(pa.array(value_at))
        )
        held = same.fill_null(False).to_numpy(zero_copy_only=False)[pair_codes]
        del pair, pair_codes, pairs, shown_at, value_at, same
    else:
        pool, shown_codes = names, value_codes
        held = np.ones(len(rows), dtype=bool)
    chosen_rows, chosen_ident, conflict = _choose(
        field,
        rule,
        rows,
        held,
        value_codes,
        lambda at: np.array(names.take(pa.array(at)).to_pylist(), dtype=object),
        len(names),
        valid,
        ranks,
    )
    del rows, held
    column = _picked_coded(pool, shown_codes[chosen_rows], chosen_ident, ranks.n_ident)
    return column, chosen_rows, chosen_ident, conflict


def _picked_coded(
    pool: Any, codes: np.ndarray, owners: np.ndarray, n_owners: int
) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """:func:`_picked` of coded text: ``pool[codes[i]]`` (a pyarrow text array) for owner
    ``owners[i]``, null for owners without one or with code -1; the same column (Arrow
    text, or an object array of None when every value is null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    take = np.zeros(n_owners, dtype=np.int64)
    take[owners] = codes
    missing = np.ones(n_owners, dtype=bool)
    missing[owners] = codes < 0
    if missing.all():
        return np.full(n_owners, None, dtype=object)
    column = pc.take(pool, pa.array(take, mask=missing))
    if column.type != pa.large_string():
        column = column.cast(pa.large_string())
    return pd.array(column, dtype=_TEXT_DTYPE)


def _coded_inputs(
    path: str | Path, text: Collection[str], rule: FieldRule
) -> tuple[_Coded, _Coded | None, np.ndarray] | None:
    """One field's value column, shown (``raw``) column (None when the file lacks it) and
    ID-validity mask read from a Parquet file of the records as :class:`_Coded`, for
    :func:`_golden_field_coded`; None when that path does not apply (pandas holds text as
    objects, or the value column is absent or not text):
    the caller then reads the columns as objects."""
    import pyarrow.parquet as pq

    from linkage.tables import read_coded_text

    if getattr(_TEXT_DTYPE, "storage", None) != "pyarrow":
        return None
    names = set(pq.read_schema(path).names)
    wanted = [rule.column] + ([rule.raw] if rule.raw is not None and rule.raw in names else [])
    if any(c not in names or c not in text for c in wanted):
        return None
    coded = []
    for column in wanted:
        read = read_coded_text(path, column)
        if read is None:
            return None
        coded.append(_Coded(*read))
        del read
        # the reading's scratch (the plain text read, its dictionary encoding) handed back
        # before the shown column is read beside this one (an address's two columns of
        # twenty million records: the golden-records stage's peak)
        release_memory()
    if rule.column == schema.ID_STD and schema.ID_VALID in names:
        flags = pd.read_parquet(path, columns=[schema.ID_VALID])[schema.ID_VALID]
        valid = flags.eq(True).to_numpy(dtype=bool, na_value=False)
    else:
        valid = np.ones(len(coded[0].codes), dtype=bool)
    return coded[0], (coded[1] if len(coded) > 1 else None), valid


@dataclass(frozen=True)
class _Ranks:
    """What every golden field ranks records by: identity codes and integer ranks per record
    (source priority, recency, record key)."""

    ident_codes: np.ndarray
    n_ident: int
    source: np.ndarray
    recent: np.ndarray
    key: np.ndarray


def _field_inputs(
    records: pd.DataFrame, rule: FieldRule
) -> tuple[pd.Series, pd.Series | None, np.ndarray]:
    """The rule's column, its shown column (None when the records lack it) and the
    ID-validity mask of :func:`_golden_field`."""
    if rule.column == schema.ID_STD and schema.ID_VALID in records:
        valid = records[schema.ID_VALID].eq(True).to_numpy(dtype=bool, na_value=False)
    else:
        valid = np.ones(len(records), dtype=bool)
    raw = records[rule.raw] if rule.raw is not None and rule.raw in records.columns else None
    return records[rule.column], raw, valid


def _rule_columns(rule: FieldRule) -> list[str]:
    """The record columns one field's rule reads: its value, shown (``raw``) and, for the
    standardized ID, ID-validity columns."""
    columns = [rule.column] + ([rule.raw] if rule.raw is not None else [])
    return columns + ([schema.ID_VALID] if rule.column == schema.ID_STD else [])


def _field_frame(
    records: pd.DataFrame,
    rule: FieldRule,
    read: Callable[[list[str]], pd.DataFrame] | None,
    factorized: dict | None = None,
) -> pd.DataFrame:
    """``records``, or with ``read`` the rule's columns (``tables.columns_of``): one field's
    input, dropped once the field is built, so that golden records never hold every
    field's columns at once. A ``read`` with a true ``fills_factorized`` attribute takes a
    ``factorized`` keyword (``tables.read_text_columns``'), passed ``factorized`` here."""
    if read is None:
        return records
    if factorized is not None and getattr(read, "fills_factorized", False):
        read = functools.partial(read, factorized=factorized)
    return columns_of(records, _rule_columns(rule), read)


def _golden_fields_from_file(
    arg: tuple[str, list[str], list[tuple[str, FieldRule]], _Ranks, str | None],
) -> list[tuple[object, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]]:
    """:func:`_golden_field` of several fields, each field's columns read from a Parquet
    file of the records (``read_text_columns``) when it is built: the worker process's share
    of ``merge_records``. Each field's conflicts come as :func:`_sparse_conflicts`. With a
    folder (``arg[4]``, a spilling run's golden parts), a field whose column is Arrow text
    is written there as it is built (:class:`_SpilledField`, its column and chosen rows
    and identities read back when the field is put in the table): the reply of every
    field at once (~1.9 GB at twenty million records) was the stage's peak."""
    from linkage.tables import read_text_columns

    path, text, fields, ranks, folder = arg
    out = []
    for field, rule in fields:
        coded = _coded_inputs(path, text, rule)
        if coded is not None:
            built = _golden_field_coded(field, rule, *coded, ranks)
            del coded
        else:
            found: dict = {}
            frame = read_text_columns(
                path, list(dict.fromkeys(_rule_columns(rule))), set(text), factorized=found
            )
            built = _golden_field(
                field, rule, *_field_inputs(frame, rule), ranks, found.get(rule.column)
            )
            del frame, found
        column, chosen_rows, chosen_ident, conflict = built
        del built
        conflicts = _sparse_conflicts(conflict)
        del conflict
        if folder is not None and _SpilledField.takes(column):
            out.append((_SpilledField.write(folder, field, column, chosen_rows, chosen_ident),
                        None, None, conflicts))  # fmt: skip
        else:
            out.append((column, chosen_rows, chosen_ident, conflicts))
        del column, chosen_rows, chosen_ident, conflicts
        # the field's columns and scratch handed back before the next field is read, not
        # kept resident beside the results until the reply (as compare.prepare_from_file)
        release_memory()
    return out


def _sparse_conflicts(conflict: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """A field's conflict text per identity (``_choose``: "" where none) as the identities
    that have one and their text: a few thousand strings, not an array as long as the
    identities (~90 MB a field at eleven million) held until the table is done."""
    if conflict is None:
        return None
    at = np.flatnonzero(conflict != "")
    return at, conflict[at]


@dataclass(frozen=True)
class _SpilledField:
    """One golden field a worker built and wrote to files: its column (Arrow text, a
    Parquet file) and its chosen rows and identities (``.npy``), read back by ``read``
    and removed."""

    column: str
    rows: str
    ident: str

    @staticmethod
    def takes(column: object) -> bool:
        """Whether ``column`` is Arrow text, which a Parquet file gives back as it was."""
        return (
            isinstance(column, pd.api.extensions.ExtensionArray)
            and getattr(_TEXT_DTYPE, "storage", None) == "pyarrow"
            and column.dtype == _TEXT_DTYPE
        )

    @classmethod
    def write(
        cls, folder: str, field: str, column: Any, rows: np.ndarray, ident: np.ndarray
    ) -> _SpilledField:
        import pyarrow as pa
        import pyarrow.parquet as pq

        Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
        base = Path(folder) / f"worker-{field}"
        out = cls(f"{base}.parquet", f"{base}.rows.npy", f"{base}.ident.npy")
        # personal data: readable by the run's user only, as the golden parts
        for path, write in (
            (out.column, lambda h: pq.write_table(pa.table({"v": pa.array(column)}), h)),
            (out.rows, lambda h: np.save(h, rows, allow_pickle=False)),
            (out.ident, lambda h: np.save(h, ident, allow_pickle=False)),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                write(handle)
        return out

    def read(self) -> tuple[Any, np.ndarray, np.ndarray]:
        """The column (as :func:`_picked_coded` made it), chosen rows and identities; the
        files are removed."""
        import pyarrow.parquet as pq

        arrow = pq.read_table(self.column).column(0).combine_chunks()
        column = pd.array(arrow, dtype=_TEXT_DTYPE)
        del arrow
        rows = np.load(self.rows, allow_pickle=False)
        ident = np.load(self.ident, allow_pickle=False)
        for path in (self.column, self.rows, self.ident):
            os.unlink(path)
        return column, rows, ident


# Relative cost of a golden field (CPU at a million records, ~0.45 s a unit) when splitting
# the fields between this process and a worker; a field not listed counts 1. This process
# also ranks the records and identities (_SHARED_COST); the worker reads each column of its
# fields from the file (_READ_COST a column).
_SHARED_COST = 2.0
_READ_COST = 0.7
_FIELD_COST = {
    "name": 2.5, "current_address": 2.5, "birth_date": 2.0, "id_number": 1.6, "phone": 1.2,
    "ethnicity": 0.5,
}  # fmt: skip


def worker_fields(settings: GoldenSettings, columns: Collection[str]) -> set[str]:
    """The golden fields a worker process builds (``WorkerShare``) of those whose column is
    in ``columns``: the costliest first (``_FIELD_COST``), each to the side with less work
    so far. This process starts with the work every field shares; the worker pays for
    reading each column of its fields from the file."""
    fields = [(f, r) for f, r in settings.fields.items() if r.column in columns]
    mine, theirs, out = _SHARED_COST, 0.0, set()
    for field, rule in sorted(fields, key=lambda f: -_FIELD_COST.get(f[0], 1.0)):
        cost = _FIELD_COST.get(field, 1.0)
        read = _READ_COST * (1 + (rule.raw is not None and rule.raw in columns))
        if theirs < mine:
            theirs += cost + read
            out.add(field)
        else:
            mine += cost
    return out


@dataclass
class WorkerShare:
    """The golden fields a worker process builds (``merge_records(..., share=)``): a started
    ``standardize._distinct._Worker``, a Parquet file of the same records in the same order
    (the batch run's records checkpoint), the names of its text columns and the fields
    (``worker_fields``) whose columns the worker reads from it."""

    worker: Any
    path: str
    text: set[str]
    fields: set[str]


def merge_records(
    records: pd.DataFrame,
    identities: pd.Series,
    settings: GoldenSettings | None = None,
    *,
    share: WorkerShare | None = None,
    read: Callable[[list[str]], pd.DataFrame] | None = None,
    source_codes: bool = False,
    spill: str | Path | None = None,
) -> pd.DataFrame | GoldenParts:
    """Return one golden record per identity with ``<field>_source``/``<field>_record_id`` provenance.

    ``records``: the standardized records (``source``, ``record_id``, the rules' columns of
    ``settings`` and ``registered_at_std`` when present); ``identities``: an identity id per
    record, aligned by position. The result has ``identity_id``, ``records`` (the count),
    ``sources`` (``|``-joined), then per field its value, ``<field>_source`` and
    ``<field>_record_id``, and ``conflicts``. With ``source_codes`` (a batch run's golden
    table at millions of identities) the ``<field>_source`` columns are pandas categoricals
    of the source names (a byte a cell) and ``identity_id`` is taken from ``identities``'
    Arrow text where it is (no Python string per identity); else text. Their values are
    the same either way.

    With ``share``, its worker builds its fields (their columns need not be in ``records``)
    while this process builds the others: fields are independent, and the result is the
    same. The worker is closed here; one that dies is logged and its fields built here
    from the file. With ``read`` (columns -> a frame of those that exist, same rows and
    order: a spilling run's records checkpoint), a field's columns ``records`` lacks are
    read when that field is built and dropped after it; a field whose column neither has
    is left out, as without ``read``.

    With ``spill`` (an empty or new folder), the table is never held whole: each field's
    three columns are written there (:class:`GoldenParts`) as soon as the field is built
    and dropped, and the :class:`GoldenParts` is returned in place of the table (the same
    table, row for row and dtype for dtype, through ``to_pandas``; a range of rows at a
    time through ``frames``). At twenty million records the table held whole (11 M
    identities, 28 columns of Arrow text) was ~5 GB of the golden-records stage's peak.
    """
    settings = settings or GoldenSettings()
    n = len(records)
    if isinstance(identities.dtype, pd.StringDtype):
        # Arrow text factorized as it is (the same codes and names, in order of first
        # appearance): its objects would be one new str per record (~75 MB at a million)
        ident_codes, ident_names = pd.factorize(identities)
    else:
        ident_codes, ident_names = pd.factorize(pd.Series(identities.to_numpy(), dtype=object))
    n_ident = len(ident_names)
    # the ranks as int32 where the rows allow: four arrays a record held through every
    # field and sent to the worker (~0.3 GB less at twenty million records)
    small = np.int32 if n < 2**31 else np.int64
    ident_codes = ident_codes.astype(small)
    sources = records[schema.SOURCE].astype(str)
    record_ids = records[schema.RECORD_ID].astype(str)
    # Integer keys once; every sort below is an integer lexsort, not a string sort per field.
    src_rank = _source_rank(sources, settings.source_priority).astype(small)
    key_rank = _key_rank(sources + "\x1f" + record_ids).astype(small)
    del record_ids  # its Arrow copy is not needed past the key ranks
    recent = records.get(schema.REGISTERED_AT_STD)
    recent_rank = (
        _dense_rank(recent).astype(small) if recent is not None else np.full(n, -1, small)
    )
    ranks = _Ranks(ident_codes, n_ident, src_rank, recent_rank, key_rank)
    shared = share.fields if share is not None else set()
    fields = [
        (f, r)
        for f, r in settings.fields.items()
        if r.column in records.columns or f in shared or read is not None
    ]
    away = [(f, r) for f, r in fields if f in shared]
    worker = share.worker if share is not None else None
    if away:
        try:
            folder = str(spill) if spill is not None else None
            worker.send(
                _golden_fields_from_file, (share.path, sorted(share.text), away, ranks, folder)
            )
        except OSError as exc:  # the worker could not start or died: all fields here
            logger.warning("golden records in one process: worker unavailable (%s)", exc)
            worker.close(kill=True)
            away = []
    elif worker is not None:
        worker.close()
    # the record ids' Arrow form once, for the provenance columns of every field (objects
    # only when the column is not Arrow text); the sources as codes of their names. (The
    # record ids as a categorical were tried: its categories' uniqueness check builds a
    # hash table of a Python string per record id, ~1.8 GB held at twenty million records,
    # more than the Arrow text columns it spared.)
    rid_np, rid_arrow = _key_text(records[schema.RECORD_ID])
    src_codes, src_names = pd.factorize(sources, sort=True)
    src_codes = src_codes.astype(np.int8 if len(src_names) < 127 else np.int32)
    src_dtype = pd.CategoricalDtype(pd.Index(np.asarray(src_names, dtype=object), dtype=str))

    # the batch run's identity ids stay Arrow text when they come as it (a Python str per
    # identity was ~75 bytes, ~0.85 GB at twenty million records)
    arrow_ids = source_codes and isinstance(ident_names.dtype, pd.StringDtype)
    golden = pd.DataFrame(
        {schema.IDENTITY_ID: ident_names if arrow_ids else np.asarray(ident_names, dtype=object)}
    )
    golden["records"] = np.bincount(ident_codes, minlength=n_ident)
    # sources as a bit mask per identity, then one string per distinct mask
    names = sorted(pd.unique(sources))
    bit_of = {s: 1 << i for i, s in enumerate(names)}
    bits = _mapped(sources, bit_of)
    masks = np.zeros(n_ident, dtype=np.int64)
    np.bitwise_or.at(masks, ident_codes, bits)
    mask_text = {
        int(m): "|".join(s for i, s in enumerate(names) if m >> i & 1) for m in sorted_unique(masks)
    }
    golden["sources"] = [mask_text[int(m)] for m in masks]
    del sources, bits
    parts = GoldenParts(spill) if spill is not None else None
    if parts is not None:
        parts.add(golden, "keys")
        golden = None
    conflict_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    emitted: list[str] = []  # fields whose columns are in the table (or its parts)

    def emit(field: str) -> None:
        """Put one built field's value and provenance columns in the table (or its parts)."""
        column, chosen_rows, chosen_ident, conflict = results.pop(field)
        if isinstance(column, _SpilledField):  # built by the worker, written to files
            column, chosen_rows, chosen_ident = column.read()
        columns = golden if parts is None else pd.DataFrame({field: column})
        if parts is None:
            golden[field] = column
        del column
        sources_of = _provenance_sources(src_codes, src_dtype, chosen_rows, chosen_ident, n_ident)
        columns[f"{field}_source"] = sources_of if source_codes else _as_text(sources_of)
        columns[f"{field}_record_id"] = _picked(
            rid_np, rid_arrow, chosen_rows, chosen_ident, n_ident
        )
        if parts is not None:
            parts.add(columns, field)
        if conflict is not None:
            conflict_of[field] = conflict if isinstance(conflict, tuple) else _sparse_conflicts(conflict)
        emitted.append(field)

    results = {}
    try:
        for field, rule in fields:
            if field not in {f for f, _ in away}:
                # the scratch of the ranks or of the field before handed back before this
                # field's columns are read (as _golden_fields_from_file does): at a million
                # records the stage's peak, reading the addresses, fell 1,780 -> 1,596 MiB
                release_memory()
                coded = None
                if hasattr(read, "file") and not set(_rule_columns(rule)) & set(records.columns):
                    # none of its columns held: read as codes into Arrow text, not objects
                    coded = _coded_inputs(*read.file(), rule)
                if coded is not None:
                    results[field] = _golden_field_coded(field, rule, *coded, ranks)
                    del coded
                else:
                    found: dict = {}  # codes of the columns read from a file (not held)
                    frame = _field_frame(records, rule, read, found)
                    if rule.column in frame.columns:  # else neither records nor read has it
                        results[field] = _golden_field(
                            field, rule, *_field_inputs(frame, rule), ranks, found.get(rule.column)
                        )
                    del frame, found
                if parts is not None and field in results:
                    emit(field)  # written now: no two fields' columns held at once
        release_memory()
        if away:
            try:
                results.update(zip([f for f, _ in away], worker.receive(), strict=True))
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                logger.warning("golden records: worker stopped (%s): its fields built here", exc)
                worker.close(kill=True)
                arg = (share.path, sorted(share.text), away, ranks, None)
                results.update(
                    zip([f for f, _ in away], _golden_fields_from_file(arg), strict=True)
                )
    finally:
        if away:
            # a reply still pending: stop it
            worker.close(kill=any(f not in results for f, _ in away))
    built = [f for f, _ in fields if f in results or f in emitted]
    for field in built:
        if field in results:
            emit(field)
    conflicts = np.full(n_ident, "", dtype=object)
    for field in built:  # joined in the fields' order, "; " between two
        part = conflict_of.pop(field, None)
        if part is None or not len(part[0]):
            continue
        # only at the identities with one: the text of every identity made anew for each
        # field was ~1.5 GB at eleven million identities, at the stage's end
        at, text = part
        before = conflicts[at]
        conflicts[at] = np.where(before != "", before + "; " + text, text)
    if parts is not None:
        parts.add(pd.DataFrame({"conflicts": conflicts}), "conflicts")
        keys = [schema.IDENTITY_ID, "records", "sources"]
        provenance = [[f, f"{f}_source", f"{f}_record_id"] for f in built]
        parts.order([*keys, *(c for cols in provenance for c in cols), "conflicts"])
        return parts
    golden["conflicts"] = conflicts
    return golden


# Golden records a spilled table's row groups hold: the rows a batch run converts and
# writes to golden_records.csv at a time (~250 MB of Arrow text at 28 columns)
GOLDEN_ROWS_AT_ONCE = 500_000


class GoldenParts:
    """A golden table (``merge_records(spill=)``) held as Parquet files of a few columns
    each in one folder, every file in row groups of the same ``rows`` rows, so that row
    group *i* of every file holds the same identities.

    ``columns``: the table's columns in order; ``len()``: its rows. ``frames()`` yields
    the table ``rows`` rows at a time (pandas frames, the columns in order, each with the
    dtypes of the table ``merge_records`` returns without ``spill``); ``to_pandas()`` the
    whole table. The files are the caller's to remove (a batch run writes them under its
    checkpoint folder, removed with it).

    Written here rather than with DuckDB: the columns are made one field at a time and
    rows are needed back in the order they were made, which aligned Parquet row groups
    give without a join.
    """

    def __init__(self, folder: str | Path, rows: int | None = None):
        self.folder = Path(folder)
        # personal data (names, IDs, addresses): readable by the run's user only, as the
        # checkpoint folder (linkage.checkpoint) and the outputs' atomic writes are
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.chmod(0o700)
        self.rows = rows or GOLDEN_ROWS_AT_ONCE
        self.files: list[tuple[Path, list[str]]] = []
        self.dtypes: dict[str, Any] = {}
        self._order: list[str] = []
        self._n: int | None = None

    def add(self, frame: pd.DataFrame, name: str) -> None:
        """Write ``frame``'s columns (as long as every earlier part) as one more file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._n is not None and len(frame) != self._n:
            raise ValueError(f"golden part {name} has {len(frame)} rows, expected {self._n}")
        self._n = len(frame)
        path = self.folder / f"{len(self.files):03d}-{name}.parquet"
        table = pa.Table.from_pandas(frame, preserve_index=False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, row_group_size=self.rows)
        del table
        self.files.append((path, list(frame.columns)))
        self.dtypes.update(frame.dtypes.to_dict())

    def order(self, columns: list[str]) -> None:
        """Set the table's column order (every written column, once)."""
        if sorted(columns) != sorted(self.dtypes):
            raise ValueError(f"golden columns {columns} are not the parts' {list(self.dtypes)}")
        self._order = list(columns)

    @property
    def columns(self) -> list[str]:
        return self._order or [c for _, names in self.files for c in names]

    def __len__(self) -> int:
        return self._n or 0

    def _typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` (read from the files) with the written dtypes: a categorical's
        categories are those written, not only those of the row group read."""
        for name, dtype in self.dtypes.items():
            if isinstance(dtype, pd.CategoricalDtype) and frame[name].dtype != dtype:
                frame[name] = frame[name].astype(object).astype(dtype)
        return frame[self.columns]

    def frames(self) -> Iterator[pd.DataFrame]:
        """The table ``rows`` rows at a time, as pandas frames (index from 0 in each)."""
        import pyarrow.parquet as pq

        handles = [pq.ParquetFile(path) for path, _ in self.files]
        groups = handles[0].num_row_groups if handles else 0
        for i in range(groups):
            parts = [h.read_row_group(i).to_pandas() for h in handles]
            frame = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)
            del parts
            yield self._typed(frame)

    def to_pandas(self) -> pd.DataFrame:
        """The whole table, as ``merge_records`` without ``spill`` returns it."""
        import pyarrow.parquet as pq

        parts = [pq.read_table(path).to_pandas() for path, _ in self.files]
        if not parts:
            return pd.DataFrame()
        frame = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)
        return self._typed(frame)
