"""Blocking: candidate record pairs from equality rules on standardized keys, run in DuckDB.

Imports schema, errors and its settings from config; never the Linker, CLI or store.
Values never enter SQL text: keys are registered as a table and rules join on quoted
column identifiers that were checked against the key table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import DEFAULT_RULES, BlockingRule, BlockingSettings  # noqa: F401 - re-exported
from linkage.errors import ConfigError
from linkage.tables import (
    _take_text,
    blank_text,
    factorize_text,
    packed_lexsort,
    sorted_unique,
    text_at,
)
from linkage.zh.estate import estate, estate_and_flat, flat

logger = logging.getLogger(__name__)


def _col(records: pd.DataFrame, name: str) -> pd.Series:
    if name in records.columns:
        return records[name].astype(object).where(records[name].notna(), None)
    return pd.Series([None] * len(records), index=records.index, dtype=object)


def _present(value: Any) -> bool:
    # text first: derived keys call this once or twice per distinct key input (a million
    # calls at 1 M records), nearly all on a str or None
    if type(value) is str:
        return True
    return (
        value is not None
        and value is not pd.NA
        and not (isinstance(value, float) and np.isnan(value))
    )


# ----------------------------------------------------------------------------- derived keys
# Each derived key is ONE scalar function of the values of a few record columns. key_table
# applies it once per distinct combination of those values (names and dates repeat heavily);
# record_keys applies the same function to one record, so search and ingest cannot drift.


def key_input_present(value: Any) -> bool:
    """Whether a derived key counts ``value`` as given (not null, NaN or blank): a fallback
    key (birth date, gender) reads the ID only where its own value is not."""
    return _present(value)


def _birth_date(std: Any, from_id: Any) -> Any:
    return std if _present(std) else from_id if _present(from_id) else None


def _birth_year(std: Any, from_id: Any) -> Any:
    birth = _birth_date(std, from_id)
    return birth[:4] if birth else None


def _birth_month_day(std: Any, from_id: Any) -> Any:
    # month and day survive a mistyped year
    birth = _birth_date(std, from_id)
    return birth[5:] if birth else None


def _pinyin_sorted(pinyin: Any) -> Any:
    """Pinyin with syllables sorted, so ``wei zhang`` and ``zhang wei`` block together."""
    return " ".join(sorted(pinyin.split())) if _present(pinyin) else None


def _minority_head(clean: Any, is_minority: Any) -> Any:
    """First part of a minority name: registries truncate long names to their first parts."""
    minority = _present(is_minority) and bool(is_minority)
    return clean.split("·", 1)[0] if _present(clean) and minority else None


def _phone_last8(phone: Any) -> Any:
    return phone[-8:] if _present(phone) else None


def _gender(std: Any, from_id: Any) -> Any:
    return std if _present(std) else from_id if _present(from_id) else None


def _given_initial(pinyin: Any, surname_pinyin: Any) -> Any:
    """First letter of the given name's pinyin (``w`` for zhang wei): splits 张 blocks by
    given name while a mistyped character of the same sound still agrees."""
    if not (_present(pinyin) and _present(surname_pinyin)):
        return None
    # spaces differ between readings (ouyang / ou yang): compare without them
    full, surname = pinyin.replace(" ", ""), surname_pinyin.replace(" ", "")
    if not full.startswith(surname) or len(full) == len(surname):
        return None
    return full[len(surname)]


def _estate(detail: Any) -> Any:
    """The estate (or village, or road and door number) of the current address: with the
    birth date, what a child's clinic file (no ID, a parent's phone, a placeholder name such
    as 男婴 or 李娜之女) shares with the child's other records."""
    return estate(detail) if _present(detail) else None


def _flat(detail: Any) -> Any:
    """The unit and room after the estate and building of the current address (``6-701``):
    splits a big name + estate block while one person's records, written with or without a
    birth date or gender, stay together."""
    return flat(detail) if _present(detail) else None


def _id_region_tail(id_std: Any) -> Any:
    """Region code and last four digits of an 18-character ID (``421181`` + ``0210``): a
    typo in the birth-date digits, which some registries also copy into the birth date
    field (18901213 from ``421181189012130210``), leaves them intact."""
    return id_std[:6] + id_std[-4:] if _present(id_std) and len(id_std) == 18 else None


def _estate_flat_batch(key: str, args: list[np.ndarray], memo: dict) -> list:
    """``current_estate`` or ``current_flat`` of each distinct detail, both made by one parse
    (``estate_and_flat``) kept in ``memo`` for the other key of the same details, and only
    while that key is still to come (``memo["keys_to_come"]`` where the caller knows it):
    two lists of one ``str`` per distinct estate or flat, ~16 bytes a distinct detail."""
    (details,) = args
    part = 0 if key == "current_estate" else 1
    other = ("current_flat", "current_estate")[part]
    entry = memo.get("estate_and_flat")
    if entry is None or entry[0] is not details:
        # two lists of shared str rather than a tuple per detail: one str per distinct
        # estate or flat (at twenty million records 5.5 M distinct details, ~1 GB as tuples)
        estates: list = []
        flats: list = []
        shared: dict = {}
        for d in details:
            e, f = estate_and_flat(d) if _present(d) else (None, None)
            estates.append(shared.setdefault(e, e))
            flats.append(shared.setdefault(f, f))
        del shared
        entry = (details, (estates, flats), set())
    entry[2].add(key)
    later = memo.get("keys_to_come")
    if len(entry[2]) == 2 or (later is not None and other not in later):
        memo.pop("estate_and_flat", None)
    else:
        memo["estate_and_flat"] = entry
    return entry[1][part]


def _id_region_tail_batch(key: str, args: list[np.ndarray], memo: dict) -> list:
    """``_id_region_tail`` of each distinct ID, the test inline (no call per ID)."""
    (ids,) = args
    return [
        v[:6] + v[-4:] if type(v) is str and len(v) == 18 else _id_region_tail(v) for v in ids
    ]


def _id_region_tail_arrow(ids: Any) -> Any:
    """``_id_region_tail`` of each value of a pyarrow text array (null where it gives None),
    computed by pyarrow's string kernels: at twenty million records the distinct IDs as
    ``str`` objects and their tails as new ones were ~2 GB of blocking's peak."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # pyarrow's utf8_* kernels count code points, as Python's len and slicing do
    joined = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(ids, 0, 6),
        pc.utf8_slice_codeunits(ids, 14, 18),
        pa.scalar("", ids.type),  # string or large_string, as the values
    )
    whole = pc.equal(pc.utf8_length(ids), 18)
    return pc.if_else(whole, joined, pa.scalar(None, joined.type))


# Derived keys of one text column with a pyarrow form over its distinct values (an Arrow
# array, where the column is held as a dictionary): key -> f(pyarrow array) -> a pyarrow
# array of the key values, null where DERIVED_KEYS' function gives None.
_ARROW_KEYS: dict[str, Callable[[Any], Any]] = {
    "id_region_tail": _id_region_tail_arrow,
}


def _arrow_key_codes(
    records: pd.DataFrame, key: str, cache: dict | None
) -> tuple[np.ndarray, Any] | None:
    """An ``_ARROW_KEYS`` key's codes per row and distinct values (a pyarrow array), as
    factorizing the derived column gives them (first appearance, -1 for null); None when
    its column is not held as a dictionary (then the key is made per distinct value in
    Python; also for text types other than ``string`` and ``large_string``). ``cache``:
    ``_factorized``'s."""
    import pyarrow as pa
    import pyarrow.compute as pc

    (column,) = DERIVED_KEYS[key][0]
    if column not in records.columns:
        return None
    codes, uniques = _factorized(records, column, cache)
    if not (_is_arrow(uniques) and uniques.type in (pa.string(), pa.large_string())):
        return None
    # the input's distinct values are numbered in order of first appearance, so the key
    # values' first appearance among them is their first appearance among the rows
    encoded = pc.dictionary_encode(_ARROW_KEYS[key](uniques))
    of_value = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    table = np.append(of_value, -1).astype(codes.dtype)  # code -1 (null input) reads -1
    return table[codes], encoded.dictionary


# Derived keys with a cheaper form over all distinct inputs at once than one call each:
# key -> f(key, per input column the distinct combinations' values, memo shared by the keys
# of one call) -> one key value per combination, equal to DERIVED_KEYS' function's.
_BATCH_KEYS: dict[str, Callable[[str, list[np.ndarray], dict], list]] = {
    "current_estate": _estate_flat_batch,
    "current_flat": _estate_flat_batch,
    "id_region_tail": _id_region_tail_batch,
}


def _minority_head_codes(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """``name_minority_head``'s codes and distinct values as factorizing the derived column
    gives them, made from the minority names' rows alone (a few percent of the records)
    instead of every distinct (name, minority) combination; None when a column is absent."""
    clean, flag = DERIVED_KEYS["name_minority_head"][0]
    if clean not in records.columns or flag not in records.columns:
        return None
    flag_codes, flag_values = pd.factorize(records[flag])
    truth = np.array([_present(v) and bool(v) for v in flag_values] + [False], dtype=bool)
    rows = np.flatnonzero(truth[flag_codes])  # code -1 (null) reads the appended False
    name_codes, names = pd.factorize(text_at(records[clean], rows))
    heads = np.empty(len(names) + 1, dtype=object)
    heads[:-1] = [_minority_head(v, True) for v in names]
    heads[-1] = None
    codes = np.full(len(records), -1, dtype=np.intp)
    head_codes, uniques = pd.factorize(heads[name_codes])
    codes[rows] = head_codes
    return codes, np.asarray(uniques, dtype=object)


_BIRTH = (schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE)

# Derived keys a rule may name besides any column of the standardized records:
# key -> (record columns read, scalar function of their values; None = no key).
DERIVED_KEYS: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "birth_date": (_BIRTH, _birth_date),
    "birth_year": (_BIRTH, _birth_year),
    "birth_month_day": (_BIRTH, _birth_month_day),
    "name_pinyin_sorted": ((schema.name_col(schema.NAME, "pinyin"),), _pinyin_sorted),
    "name_minority_head": (
        (schema.name_col(schema.NAME, "clean"), schema.name_col(schema.NAME, "is_minority")),
        _minority_head,
    ),
    "phone_last8": ((schema.PHONE_STD,), _phone_last8),
    "current_estate": ((schema.address_col(schema.CURRENT_ADDRESS, "detail"),), _estate),
    "current_flat": ((schema.address_col(schema.CURRENT_ADDRESS, "detail"),), _flat),
    "id_region_tail": ((schema.ID_STD,), _id_region_tail),
    "gender": ((schema.GENDER_STD, schema.ID_GENDER), _gender),
    "given_initial": (
        (schema.name_col(schema.NAME, "pinyin"), schema.name_col(schema.NAME, "surname_pinyin")),
        _given_initial,
    ),
}


def _factorized(records: pd.DataFrame, name: str, cache: dict | None) -> tuple[np.ndarray, Any]:
    """``pd.factorize`` of a record column (all null when absent), taken from ``cache`` when
    it holds the column (a column several keys read is factorized once). The distinct
    values of a column held as a dictionary are a pyarrow array (``tables.factorize_text``):
    a plain key only tests them for blanks, a derived key makes them objects."""
    if cache is not None and name in cache:
        return cache[name]
    # factorize makes every kind of null code -1: no pass making them None first (_col,
    # ~75 ms per column of a million records); a column held as a dictionary is renumbered
    # from its codes (hashing a string per row took 10-30 s a column at twenty million)
    values = records[name] if name in records.columns else _col(records, name)
    codes, uniques = factorize_text(values, arrow=True)
    # int32 codes where the rows allow: a cached column's are held while later keys read it
    out = (codes.astype(np.int32) if len(codes) < 2**31 else codes, uniques)
    if cache is not None:
        cache[name] = out
    return out


def _distinct_inputs(
    records: pd.DataFrame, columns: tuple[str, ...], factorized: dict | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes of each row's combination of ``columns`` values, and per column the values of
    each distinct combination (None for null). Hash-based: O(rows). ``factorized``: columns
    already factorized (``_factorized``'s cache)."""
    combined = np.zeros(len(records), dtype=np.int64)
    tables = []
    for name in columns:
        codes, uniques = _factorized(records, name, factorized)
        table = np.empty(len(uniques) + 1, dtype=object)
        table[0] = None  # code 0 = null
        # a pyarrow array's values as Python objects, not as pyarrow scalars
        table[1:] = uniques.to_numpy(zero_copy_only=False) if _is_arrow(uniques) else uniques
        combined = combined * len(table) + (codes.astype(np.int64) + 1)
        tables.append(table)
    codes, distinct = pd.factorize(combined)
    distinct = np.asarray(distinct, dtype=np.int64)
    args = []
    for table in reversed(tables):
        args.append(table[distinct % len(table)])
        distinct = distinct // len(table)
    return codes, args[::-1]


def _derived_column(records: pd.DataFrame, key: str, cache: dict | None = None) -> pd.Series:
    """Apply a derived key's function once per distinct combination of its input values."""
    columns, func = DERIVED_KEYS[key]
    cache = {} if cache is None else cache
    if columns not in cache:
        cache[columns] = _distinct_inputs(records, columns)
    codes, args = cache[columns]
    batch = _BATCH_KEYS.get(key)
    values = (
        batch(key, args, cache.setdefault("__batch_memo", {}))
        if batch is not None
        else [func(*vals) for vals in zip(*args, strict=True)]
    )
    mapped = np.empty(len(values) + 1, dtype=object)
    mapped[:-1] = values
    mapped[-1] = None  # code -1 (no combination: a null input row) reads it
    return pd.Series(mapped[codes], index=records.index, dtype=object)


def record_keys(record: Mapping[str, Any], rules: list[BlockingRule]) -> dict[str, Any]:
    """The blocking keys of ONE standardized record (a dict), as :func:`key_table` computes them.

    Single-record search calls this instead of building a one-row table (pandas costs
    milliseconds per call on one row). Blank values are missing keys, as in ``key_table``.
    """
    out: dict[str, Any] = {}
    for rule in rules:
        for key in rule.keys:
            if key in out:
                continue
            if key in DERIVED_KEYS:
                columns, func = DERIVED_KEYS[key]
                value = func(*(_scalar(record.get(c)) for c in columns))
            else:
                value = _scalar(record.get(key))
            out[key] = None if value is None or str(value).strip() == "" else value
    return out


def _scalar(value: Any) -> Any:
    return value if _present(value) else None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _key_columns(
    records: pd.DataFrame, rules: list[BlockingRule], extra_keys: list[str] | None = None
) -> dict[str, pd.Series]:
    """The key table's columns before blanks are made missing (see :func:`key_table`)."""
    return dict(_iter_key_columns(records, rules, extra_keys))


def _key_names(
    records: pd.DataFrame, rules: list[BlockingRule], extra_keys: list[str] | None = None
) -> list[str]:
    """The key table's key columns in order (rule keys, then the ``extra_keys`` the records
    can give). Raises ConfigError naming every unknown rule key."""
    names: list[str] = []
    done = {schema.ROW, schema.SOURCE}
    problems = []
    for rule in rules:
        for key in rule.keys:
            if key in done:
                continue
            if key in DERIVED_KEYS or key in records.columns:
                done.add(key)
                names.append(key)
            else:
                problems.append(f"rule '{rule.name}': unknown key '{key}'")
    if problems:
        raise ConfigError(
            "; ".join(problems)
            + f". Keys are columns of the standardized records or one of {sorted(DERIVED_KEYS)}",
            key="blocking.rules",
        )
    for key in extra_keys or []:
        if key in done:
            continue
        if key in DERIVED_KEYS and all(c in records.columns for c in DERIVED_KEYS[key][0]):
            done.add(key)
            names.append(key)
        elif key in records.columns:
            done.add(key)
            names.append(key)
    return names


def _rows(records: pd.DataFrame) -> pd.Series:
    return (
        records[schema.ROW].astype(np.int64)
        if schema.ROW in records
        else pd.Series(np.arange(len(records)), index=records.index)
    )


def _iter_key_columns(
    records: pd.DataFrame, rules: list[BlockingRule], extra_keys: list[str] | None = None
) -> Iterator[tuple[str, pd.Series]]:
    """:func:`_key_columns`'s columns one at a time, ``rid`` and ``source`` first, so a caller
    coding them need not hold every key's text at once. Raises ConfigError for unknown rule
    keys before any column is made."""
    names = _key_names(records, rules, extra_keys)
    yield schema.ROW, _rows(records)
    yield schema.SOURCE, _col(records, schema.SOURCE)
    distinct: dict = {}  # input combinations shared by derived keys (the birth_* keys)
    for key in names:
        coded = _minority_head_codes(records) if key == "name_minority_head" else None
        if coded is not None:
            codes, uniques = coded
            yield key, pd.Series(_take_text(uniques, codes), index=records.index, dtype=object)
        elif key in DERIVED_KEYS:
            yield key, _derived_column(records, key, distinct)
        else:
            yield key, _col(records, key).astype(object)


def _iter_key_codes(
    records: pd.DataFrame, rules: list[BlockingRule], extra_keys: list[str] | None = None
) -> Iterator[tuple[str, np.ndarray, Any]]:
    """:func:`_iter_key_columns`'s columns factorized: (name, codes, distinct values), codes
    -1 for null and numbered in order of first appearance, as ``pd.factorize`` of that
    column gives them; ``rid`` first as (``rid``, int64 row numbers, None).

    No column of a million Python objects is made to be factorized: a plain key is
    factorized as the records hold it (an Arrow text column in C), a derived key once per
    distinct combination of its inputs, its codes then taken per row. The numbering is the
    same: combinations are numbered in order of first appearance, so a value's first
    combination is also its first row. Raises ConfigError for unknown rule keys.
    """
    names = _key_names(records, rules, extra_keys)
    yield schema.ROW, _rows(records).to_numpy(np.int64), None
    keys = [schema.SOURCE, *names]
    # columns read by more than one key (id_std, the name's pinyin) are factorized once
    inputs = [DERIVED_KEYS[k][0] if k in DERIVED_KEYS else (k,) for k in keys]
    reads = [c for cols in inputs for c in cols]
    twice = {c for c in reads if reads.count(c) > 1 and c in records.columns}
    # the last key reading each column (combination): its codes are dropped after that key,
    # not held to the end (at twenty million records each was 80-160 MB of blocking's peak)
    last_read = {c: i for i, cols in enumerate(inputs) for c in cols}
    last_combination = {cols: i for i, cols in enumerate(inputs)}
    factorized: dict = {}
    distinct: dict = {}  # input combinations shared by derived keys (the birth_* keys)
    memo: dict = {}  # what _BATCH_KEYS' functions share (one parse of each address)
    small = np.int32 if len(records) < 2**31 else np.int64
    for i, key in enumerate(keys):
        memo["keys_to_come"] = set(keys[i + 1 :])
        coded = _minority_head_codes(records) if key == "name_minority_head" else None
        if coded is None and key in _ARROW_KEYS:
            column = DERIVED_KEYS[key][0][0]
            coded = _arrow_key_codes(records, key, factorized if column in twice else None)
        if coded is not None:
            yield key, *coded
        elif key in DERIVED_KEYS:
            columns, func = DERIVED_KEYS[key]
            if columns not in distinct:
                cache = {c: factorized[c] for c in columns if c in factorized}
                distinct[columns] = _distinct_inputs(records, columns, cache)
                factorized.update({c: v for c, v in cache.items() if c in twice})
            rows, args = distinct[columns]
            if last_combination[columns] == i:
                del distinct[columns]
            mapped = np.empty(len(args[0]) if args else 0, dtype=object)
            batch = _BATCH_KEYS.get(key)
            if batch is not None:
                mapped[:] = batch(key, args, memo)
            else:
                mapped[:] = [func(*vals) for vals in zip(*args, strict=True)]
            del args
            codes, uniques = pd.factorize(mapped)
            del mapped
            yield key, codes.astype(small)[rows], uniques
            del rows
        elif key in records.columns:
            codes, uniques = _factorized(records, key, factorized if key in twice else None)
            yield key, codes, uniques
            del codes, uniques
        else:  # no source column: every row null, as _col gives it
            yield key, np.full(len(records), -1, dtype=np.intp), np.array([], dtype=object)
        for column in [c for c in factorized if last_read.get(c) == i]:
            del factorized[column]


def _is_arrow(values: object) -> bool:
    """Whether ``values`` is a pyarrow array (``_factorized``'s values of a dictionary column)."""
    import pyarrow as pa

    return isinstance(values, pa.Array)


def _blank_uniques(uniques: object) -> np.ndarray:
    """Which distinct key values are blank (empty or whitespace): missing, never a shared key."""
    if _is_arrow(uniques):  # a key held as a dictionary
        return blank_text(uniques)
    # isspace is strip's own test of whitespace, without making the stripped copy
    return np.array(
        [(not u or u.isspace()) if type(u) is str else str(u).strip() == "" for u in uniques],
        dtype=bool,
    )


def key_table(
    records: pd.DataFrame, rules: list[BlockingRule], extra_keys: list[str] | None = None
) -> pd.DataFrame:
    """Return the table of blocking keys (one column per distinct key) with ROW and SOURCE.

    ``extra_keys`` (the refinement keys) are added when the records can give them; one
    the records lack is left out rather than an error, as refinement is a fallback.
    """
    table = pd.DataFrame(_key_columns(records, rules, extra_keys)).reset_index(drop=True)
    for col in table.columns:
        if col != schema.ROW and table[col].dtype == object:
            # empty strings are missing values, never a shared key (checked per distinct value)
            codes, uniques = pd.factorize(table[col])
            blank = _blank_uniques(uniques)
            if blank.any():
                table[col] = table[col].where(~np.append(blank, False)[codes], None)
    return table


def _coded_key_columns(keys: Iterable[tuple[str, np.ndarray, Any]]) -> pd.DataFrame:
    """``coded_keys(key_table(...))`` from :func:`_iter_key_codes` (``rid`` first).

    ``key_table`` factorizes a text column to find its blank values and ``coded_keys``
    factorizes it again once they are nulls; here blank values' codes become null and the
    others are renumbered in order, which is what the second factorize gives (first
    appearance among the values left), without the text table in between. Each key's codes
    are narrowed to int32 as they come: no key's text is held while the next is made.
    """
    coded = pd.DataFrame()
    for col, codes, uniques in keys:
        if col == schema.ROW:
            coded = pd.DataFrame({schema.ROW: codes})
            continue
        codes = codes.astype(np.int32)
        blank = _blank_uniques(uniques)
        if blank.any():
            remap = np.full(len(uniques) + 1, -1, dtype=np.int32)
            keep = np.flatnonzero(~blank)
            remap[keep] = np.arange(len(keep), dtype=np.int32)
            codes = remap[codes]  # code -1 (null) hits remap[-1] == -1
        coded[col] = pd.arrays.IntegerArray(codes, mask=codes < 0)
        del uniques
    return coded


def _block_sizes(table: pd.DataFrame, rule: BlockingRule) -> pd.Series:
    sub = table[rule.keys].dropna()
    if sub.empty:
        return pd.Series(dtype=np.int64)
    return sub.groupby(rule.keys, sort=False).size()


def coded_keys(table: pd.DataFrame) -> pd.DataFrame:
    """The key table (``rid`` and key columns, as :func:`key_table` returns) as int32 codes
    per column (null = NA), ``rid`` kept as int64: joins and group-bys on integer codes are
    several times faster than on strings."""
    coded = pd.DataFrame({schema.ROW: table[schema.ROW].to_numpy(np.int64)})
    for col in table.columns:
        if col != schema.ROW:
            codes = pd.factorize(table[col])[0].astype(np.int32)
            coded[col] = pd.arrays.IntegerArray(codes, mask=codes < 0)
    return coded


def _codes(coded: pd.DataFrame, col: str) -> np.ndarray:
    """A coded column as int64 with -1 for null."""
    return coded[col].to_numpy(dtype=np.int64, na_value=-1)


def _combine(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Dense ids of the (group, value) combinations; values >= -1 (-1 = null, its own value)."""
    return pd.factorize(group * (int(values.max(initial=0)) + 2) + (values + 1))[0]


def _sizes(ids: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Records per id: each row counts ``weights`` records (None: one each, a record
    table; counted as integers, without a float64 weight per row)."""
    if weights is None:
        return np.bincount(ids)
    return np.bincount(ids, weights=weights).round().astype(np.int64)


def _pairs_in_blocks(
    block_ids: np.ndarray, sources: np.ndarray, link_type: str, weights: np.ndarray | None
) -> int:
    """Pairs a join on equal block ids yields: n(n-1)/2 per block (link_and_dedupe), within
    a source only (dedupe_only) or across sources only (link_only); Splink's
    ``count_comparisons_from_blocking_rule`` counts the same way."""
    if len(block_ids) == 0:
        return 0
    sizes = _sizes(block_ids, weights)
    everything = int((sizes * (sizes - 1) // 2).sum())
    if link_type == "link_and_dedupe":
        return everything
    per_source = _sizes(_combine(block_ids, sources), weights)
    within = int((per_source * (per_source - 1) // 2).sum())
    return within if link_type == "dedupe_only" else everything - within


def plan_rule(
    coded: pd.DataFrame,
    rule: BlockingRule,
    settings: BlockingSettings,
    weights: np.ndarray | None = None,
) -> tuple[pd.arrays.IntegerArray | None, dict]:
    """Refine one rule's big blocks; return the refinement column and the rule's report row.

    The column holds, per row, -1 in a block small enough as it is, the id of its part
    of a refined block, or NA when its part is still over ``max_block_size`` (skipped).
    Joining on it as one more key gives the refined rule. Null refinement values form a
    part of their own, so a record without (say) a gender still meets the others lacking one.
    ``weights``: records per row, when a row stands for several records with the same keys
    and source (the Spark engine plans on such counts); one record per row without it.
    Blocks are independent, so any set of whole blocks can be planned on its own and the
    report rows added up (:func:`combine_report_rows`).
    """
    n = len(coded)
    limit, refine_keys = settings.refinement(rule)
    has = coded[rule.keys].notna().all(axis=1).to_numpy()
    idx = np.flatnonzero(has)
    # a record table's rows count one each: no weight per row (two int64 arrays of the
    # records at twenty million, at each rule's peak)
    w = None if weights is None else np.asarray(weights, dtype=np.int64)[idx]
    row = _empty_row(rule)
    row["records_with_key"] = len(idx) if w is None else int(w.sum())
    if len(idx) == 0:
        return None, row
    group = np.zeros(len(idx), dtype=np.int64)
    for key in rule.keys:
        group = _combine(group, _codes(coded, key)[idx])
    sizes = _sizes(group, w)
    row["largest_block"] = int(sizes.max())
    row["blocks_over_warning"] = int((sizes > settings.warn_block_size).sum())
    big = sizes[group] > limit
    sources = _codes(coded, schema.SOURCE)[idx]
    if not big.any():
        row["pairs"] = _pairs_in_blocks(group, sources, settings.link_type, w)
        return None, row
    row["blocks_refined"] = int((sizes > limit).sum())
    part = np.full(len(idx), -1, dtype=np.int64)  # part id within the refined blocks
    active = np.flatnonzero(big)
    sub = pd.factorize(group[active])[0]
    next_id = 0
    used = []
    for key in refine_keys:
        if len(active) == 0:
            break
        if key not in coded.columns:
            continue
        split = _combine(sub, _codes(coded, key)[idx[active]])
        if split.max() > sub.max():
            used.append(key)
        split_sizes = _sizes(split, None if w is None else w[active])
        done = split_sizes[split] <= limit
        part[active[done]] = next_id + split[done]
        next_id += int(split.max()) + 1
        active, sub = active[~done], pd.factorize(split[~done])[0]
    skipped = np.zeros(len(idx), dtype=bool)
    if len(active):
        # parts still over the limit after every key: kept up to max_block_size, else skipped
        sub_sizes = _sizes(sub, None if w is None else w[active])
        too_big = sub_sizes[sub] > settings.max_block_size
        part[active[~too_big]] = next_id + sub[~too_big]
        skipped[active[too_big]] = True
        row["blocks_skipped"] = int((sub_sizes > settings.max_block_size).sum())
    row["refined_by"] = " > ".join(used)
    final = np.where(part >= 0, group.max() + 1 + part, group)
    row["pairs"] = _pairs_in_blocks(
        pd.factorize(final[~skipped])[0],
        sources[~skipped],
        settings.link_type,
        None if w is None else w[~skipped],
    )
    # int32 where the part ids fit: the column is held with the key codes through every
    # rule's join (~80 MB a refined rule at 20 M records)
    wide = int(part.max(initial=-1)) >= np.iinfo(np.int32).max
    column = np.full(n, -1, dtype=np.int64 if wide else np.int32)
    column[idx] = part
    mask = np.zeros(n, dtype=bool)
    mask[idx[skipped]] = True
    return pd.arrays.IntegerArray(column, mask=mask), row


def _empty_row(rule: BlockingRule) -> dict:
    """A rule's report row before any block is counted."""
    return {
        "rule": rule.name,
        "keys": " + ".join(rule.keys),
        "records_with_key": 0,
        "pairs": 0,
        "largest_block": 0,
        "blocks_over_warning": 0,
        "blocks_refined": 0,
        "refined_by": "",
        "blocks_skipped": 0,
    }


def combine_report_rows(rule: BlockingRule, rows: list[dict], settings: BlockingSettings) -> dict:
    """One rule's report row from the rows of :func:`plan_rule` over disjoint sets of whole
    blocks (the Spark engine plans per bucket of blocks; no rows when no record has the
    rule's keys): counts add up, the largest block is the largest of all, and
    ``refined_by`` lists every key used, in the rule's refinement order."""
    out = _empty_row(rule)
    for name in (
        "records_with_key",
        "pairs",
        "blocks_over_warning",
        "blocks_refined",
        "blocks_skipped",
    ):
        out[name] = int(sum(int(r[name]) for r in rows))
    out["largest_block"] = max((int(r["largest_block"]) for r in rows), default=0)
    used = {k for r in rows for k in str(r["refined_by"]).split(" > ") if k}
    out["refined_by"] = " > ".join(k for k in settings.refinement(rule)[1] if k in used)
    return out


def warn_refined(rule: BlockingRule, row: dict, settings: BlockingSettings) -> None:
    """Log the refinement of a rule's big blocks (a report row with ``blocks_refined``).

    Refining is the designed behaviour of the default rules (INFO); a WARNING only when
    pairs are lost: a part still over ``max_block_size`` was skipped. A block no refinement
    key splits is compared whole when it fits ``max_block_size`` (``plan_rule``): nothing is
    lost, so that is INFO too.
    """
    if not row["blocks_refined"]:
        return
    logger.log(
        logging.WARNING if row["blocks_skipped"] else logging.INFO,
        "blocking rule '%s': %d block(s) over %d records refined by %s; %d part(s) over %d "
        "skipped%s",
        rule.name,
        row["blocks_refined"],
        settings.refinement(rule)[0],
        row["refined_by"] or "no key that splits them (compared whole)",
        row["blocks_skipped"],
        settings.max_block_size,
        ", their pairs not compared: raise blocking.max_block_size or add refine_keys"
        if row["blocks_skipped"]
        else "",
    )


def _plan(
    records: pd.DataFrame, settings: BlockingSettings
) -> tuple[pd.DataFrame, list[str | None], list[dict]]:
    """The coded key table with one refinement column per refined rule, and the report rows."""
    return _plan_coded(key_codes(records, settings), settings)


def _plan_coded(
    coded: pd.DataFrame, settings: BlockingSettings
) -> tuple[pd.DataFrame, list[str | None], list[dict]]:
    """:func:`_plan` of the key codes (:func:`key_codes`); adds the refinement columns to
    ``coded`` in place."""
    columns: list[str | None] = []
    rows = []
    for i, rule in enumerate(settings.rules):
        refine, row = plan_rule(coded, rule, settings)
        rows.append(row)
        if refine is None:
            columns.append(None)
            continue
        col = f"__refine_{i}"
        coded[col] = refine
        columns.append(col)
        warn_refined(rule, row, settings)
    return coded, columns, rows


def check_budget(rows: list[dict], settings: BlockingSettings) -> None:
    """Warn, or raise ``ConfigError`` (``over_budget: refuse``), when the predicted pairs of
    all rules exceed ``pair_budget``. The sum counts a pair found by two rules twice, so it
    is an upper bound of the candidate pairs."""
    total = sum(int(r["pairs"]) for r in rows)
    if total <= settings.pair_budget:
        return
    worst = max(rows, key=lambda r: r["pairs"])
    message = (
        f"blocking predicts {total:,} candidate pairs, over pair_budget {settings.pair_budget:,} "
        f"(rule '{worst['rule']}' alone {worst['pairs']:,}); lower refine_block_size, "
        "tighten the rule or raise the budget"
    )
    if settings.over_budget == "refuse":
        raise ConfigError(message, key="blocking.pair_budget")
    logger.warning(message)


def _rule_condition(rule: BlockingRule, refine_col: str | None) -> str:
    parts = [f"l.{_quote(k)} = r.{_quote(k)}" for k in rule.keys]
    if refine_col is not None:
        parts.append(f"l.{_quote(refine_col)} = r.{_quote(refine_col)}")
    return "(" + " AND ".join(parts) + ")"


@dataclass
class BlockingPlan:
    """What :func:`block` joins, made from the records (:func:`plan_blocking`): ``coded``,
    the key table as int32 codes per key (``rid`` int64, null = NA) with one refinement
    column ``__refine_<i>`` per refined rule; ``refine_columns``, that column's name per
    rule (None when the rule is not refined); ``rows``, the report rows of
    :func:`blocking_report`."""

    coded: pd.DataFrame
    refine_columns: list[str | None]
    rows: list[dict]


def plan_blocking(records: pd.DataFrame, settings: BlockingSettings) -> BlockingPlan:
    """The coded keys, refinement columns and report rows :func:`block` joins on: all it
    reads of ``records`` (standardized records with ``rid``, ``source`` and the rules'
    key columns). The same as ``plan_keys(key_codes(records, settings), settings)``: a
    caller done with the records' key columns calls those two and drops the columns in
    between, so that neither the rules' planning nor ``block(plan=)``'s joins hold them
    (at twenty million records ~2.5 GB of planning's peak). Raises ConfigError for an
    unknown rule key."""
    return BlockingPlan(*_plan(records, settings))


def key_codes(records: pd.DataFrame, settings: BlockingSettings) -> pd.DataFrame:
    """The records' blocking and refinement keys as codes: ``rid`` (int64) then ``source``
    and one column per key (rule keys first, then the refinement keys the records can
    give), each a nullable int32 code per record (NA where the key is null or blank; equal
    codes, equal key values). All that :func:`plan_keys` and :func:`block` read of the
    records: a caller may drop the records' key columns once it has this, before the
    rules are planned (at twenty million records the columns held were ~2.5 GB of
    planning's peak). Raises ConfigError for an unknown rule key."""
    return _coded_key_columns(_iter_key_codes(records, settings.rules, settings.all_refine_keys()))


def plan_keys(coded: pd.DataFrame, settings: BlockingSettings) -> BlockingPlan:
    """:func:`plan_blocking` from the key codes (:func:`key_codes` of the same
    ``settings``), which become the plan's ``coded`` (its refinement columns are added to
    that table)."""
    return BlockingPlan(*_plan_coded(coded, settings))


def block(
    records: pd.DataFrame | None,
    settings: BlockingSettings | None = None,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
    report: list[dict] | None = None,
    rid_dtype: type = np.int64,
    plan: BlockingPlan | None = None,
) -> pd.DataFrame:
    """Return candidate pairs ``rid_l < rid_r`` from all rules, each once, with the first rule that found it.

    ``rid_l`` and ``rid_r`` are of ``rid_dtype`` (``np.int32`` halves their memory when the
    row numbers fit: each rule's part is narrowed as it is fetched, before all are joined).

    Blocks over ``refine_block_size`` are refined (see :func:`blocking_report`); the
    predicted pair count is checked against ``pair_budget`` before any pair is made
    (``ConfigError`` when over it and ``over_budget`` is ``refuse``). ``report``, when
    given, receives the rows of :func:`blocking_report`. ``plan``: :func:`plan_blocking`
    of the records under ``settings``, made by the caller (``records`` is then not read
    and may be None); made here from ``records`` without it.
    """
    settings = settings or BlockingSettings()
    rules = settings.rules
    if plan is None:
        if records is None:
            raise ValueError("block needs the records or their plan")
        plan = plan_blocking(records, settings)
    coded, refine_cols, rows = plan.coded, plan.refine_columns, plan.rows
    if report is not None:
        report.extend(rows)
    check_budget(rows, settings)
    con = connection or duckdb.connect()
    if connection is None:
        con.execute("SET enable_progress_bar = false")
    con.register("__keys", coded)
    selects = []
    for i, rule in enumerate(rules):
        where = [_rule_condition(rule, refine_cols[i])]
        where += [
            f"NOT coalesce({_rule_condition(rules[j], refine_cols[j])}, FALSE)" for j in range(i)
        ]
        if settings.link_type == "link_only":
            where.append(f"l.{_quote(schema.SOURCE)} <> r.{_quote(schema.SOURCE)}")
        elif settings.link_type == "dedupe_only":
            where.append(f"l.{_quote(schema.SOURCE)} = r.{_quote(schema.SOURCE)}")
        selects.append(
            f"SELECT l.{_quote(schema.ROW)} AS {_quote(schema.ROW_L)}, "
            f"r.{_quote(schema.ROW)} AS {_quote(schema.ROW_R)}, {i}::SMALLINT AS rule_index "
            f"FROM __keys l JOIN __keys r ON l.{_quote(schema.ROW)} < r.{_quote(schema.ROW)} "
            f"AND {' AND '.join(where)}"
        )
    if selects:
        # One query per rule rather than their UNION ALL: DuckDB then holds one rule's join
        # at a time (the rules exclude each other's pairs, so the parts are disjoint and
        # their union is the same; the sort below fixes the order)
        dtypes = {schema.ROW_L: rid_dtype, schema.ROW_R: rid_dtype, "rule_index": np.int16}
        packing = _PairPacking.fits(coded[schema.ROW].to_numpy(), len(rules))
        parts = []
        for select in selects:
            fetched = con.execute(select).fetchnumpy()
            if packing is not None:
                parts.append(packing.pack(fetched[schema.ROW_L], fetched[schema.ROW_R],
                                          fetched["rule_index"]))  # fmt: skip
            else:
                parts.append(
                    {col: np.asarray(fetched[col], dtype=dtype) for col, dtype in dtypes.items()}
                )
            del fetched
        if packing is not None:
            left, right, rule_index = packing.sorted(parts, rid_dtype)
        else:
            left, right, rule_index = _sorted_pairs(
                *(np.concatenate([p[col] for p in parts]) for col in dtypes)
            )
        del parts
    else:
        left = right = np.array([], rid_dtype)
        rule_index = np.array([], np.int16)
    con.unregister("__keys")
    if connection is None:
        con.close()
    names = np.array([r.name for r in rules], dtype=object)
    out = pd.DataFrame(
        {
            schema.ROW_L: left,
            schema.ROW_R: right,
            schema.RULE: pd.Categorical.from_codes(rule_index, categories=names),
        },
        copy=False,
    )
    logger.info("blocking produced %d candidate pairs", len(out))
    return out


def _sorted_pairs(
    left: np.ndarray, right: np.ndarray, rule_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ordered by (``rid_l``, ``rid_r``), whatever order DuckDB's threads gave
    them (``np.lexsort((right, left))``'s order, in one pass: ``packed_lexsort``)."""
    order = packed_lexsort((right, left))
    # each column reordered in turn, the rule kept as the categorical's codes and the
    # frame built on these arrays: at 12 M pairs a frame of all three reordered, its
    # copy, and an object array of rule names (the categorical's input) were ~0.6 GB
    # of the blocking stage's peak
    return left[order], right[order], rule_index[order]


@dataclass(frozen=True)
class _PairPacking:
    """Candidate pairs packed as one ``uint64`` each as DuckDB hands them over:
    ``rid_l``, then ``rid_r``, then the rule's index, from the highest bits down. Each pair
    is found by one rule once, so no two packed pairs are equal, and sorting the packed
    values (in place, no permutation array) gives :func:`_sorted_pairs`' order with each
    pair's rule beside it. At 94 M pairs the three columns joined, the packed sort key,
    its stable argsort and the reordered copies were ~2 GB at blocking's end, the stage's
    peak; packed they are one 8-byte array until they are unpacked."""

    rid_bits: int
    rule_bits: int

    @classmethod
    def fits(cls, rids: np.ndarray, n_rules: int) -> _PairPacking | None:
        """The packing of pairs of the row numbers ``rids`` (the key table's ``rid``, not
        necessarily 0..n-1) under ``n_rules`` rules; None when one is negative or two row
        numbers and a rule index do not fit in 64 bits together."""
        if len(rids) and int(rids.min()) < 0:
            return None
        rid_bits = max(int(rids.max()).bit_length() if len(rids) else 1, 1)
        rule_bits = max(int(n_rules - 1).bit_length(), 1)
        return cls(rid_bits, rule_bits) if 2 * rid_bits + rule_bits <= 64 else None

    def pack(self, left: np.ndarray, right: np.ndarray, rule_index: np.ndarray) -> np.ndarray:
        """One rule's pairs (non-negative row numbers, its index) packed, shifted in place."""
        packed = np.array(left, dtype=np.uint64)
        packed <<= np.uint64(self.rid_bits + self.rule_bits)
        part = np.array(right, dtype=np.uint64)
        part <<= np.uint64(self.rule_bits)
        packed |= part
        del part
        packed |= np.asarray(rule_index, dtype=np.uint64)
        return packed

    def sorted(
        self, parts: list[np.ndarray], rid_dtype: type
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``rid_l``, ``rid_r`` (of ``rid_dtype``) and the rule's index (int16) of the
        packed ``parts``, in :func:`_sorted_pairs`' order. Empties ``parts``."""
        packed = np.concatenate(parts) if len(parts) != 1 else parts[0]
        parts.clear()
        packed.sort()  # in place; every value differs, so any sort gives one order
        n = len(packed)
        left, right = np.empty(n, dtype=rid_dtype), np.empty(n, dtype=rid_dtype)
        rule_index = np.empty(n, dtype=np.int16)
        rid_mask = np.uint64((1 << self.rid_bits) - 1)
        rule_mask = np.uint64((1 << self.rule_bits) - 1)
        # unpacked a slice at a time: the temporaries stay small beside the packed array
        for start in range(0, n, _UNPACK_AT_ONCE):
            chunk = packed[start : start + _UNPACK_AT_ONCE]
            stop = start + len(chunk)
            rule_index[start:stop] = chunk & rule_mask
            right[start:stop] = (chunk >> np.uint64(self.rule_bits)) & rid_mask
            left[start:stop] = chunk >> np.uint64(self.rid_bits + self.rule_bits)
        return left, right, rule_index


# Packed pairs unpacked at a time (``_PairPacking.sorted``): 64 MB of temporaries.
_UNPACK_AT_ONCE = 1 << 23


# ----------------------------------------------------------------------------- key hashes
# The identity store indexes each record by one 64-bit hash per rule of all its keys, so
# ingest and search find stored candidates without re-blocking the store.


def _key_text(rule_name: str, values: list[Any]) -> Any:
    """The hashed text of a rule's keys: rule name and key values joined by U+001F.

    Works on strings (one record) and on string Series (a table) alike.
    """
    text: Any = rule_name
    for value in values:
        text = text + "\x1f" + value
    return text


def _hash(texts: pd.Series) -> np.ndarray:
    # pandas' hash is seeded with a fixed key, so hashes agree across processes
    return pd.util.hash_pandas_object(texts, index=False).to_numpy().view(np.int64)


def _hash_texts(texts: list[str]) -> np.ndarray:
    """:func:`_hash` of a few key texts without a Series: ``hash_array`` as
    ``hash_pandas_object`` calls it, uncategorized (factorizing first, pandas' default, costs
    ~1 ms for a lookup's handful of keys; the hashes are the same)."""
    values = np.empty(len(texts), dtype=object)
    values[:] = texts
    return pd.util.hash_array(values, categorize=False).view(np.int64)


def key_hashes(records: pd.DataFrame, settings: BlockingSettings) -> pd.DataFrame:
    """Return (rid, h): one 64-bit hash per record (``rid``, else row position) and rule."""
    table = key_table(records, settings.rules)
    frames = []
    for rule in settings.rules:
        ok = table[rule.keys].notna().all(axis=1).to_numpy()
        if not ok.any():
            continue
        text = _key_text(rule.name, [table.loc[ok, key].astype(str) for key in rule.keys])
        rows = table.loc[ok, schema.ROW].to_numpy(np.int64)
        frames.append(pd.DataFrame({schema.ROW: rows, schema.KEY_HASH: _hash(text)}))
    if not frames:
        return pd.DataFrame(
            {schema.ROW: np.array([], np.int64), schema.KEY_HASH: np.array([], np.int64)}
        )
    return pd.concat(frames, ignore_index=True).drop_duplicates()


def record_rule_keys(
    record: Mapping[str, Any], settings: BlockingSettings
) -> dict[str, int | list[str]]:
    """Per rule of ONE standardized record: its key hash, or the list of keys it lacks.

    The hash is the one :func:`key_hashes` stores; single-record search reports the rules
    it could not use and why.
    """
    keys = record_keys(record, settings.rules)
    out: dict[str, int | list[str]] = {}
    texts: dict[str, str] = {}
    for rule in settings.rules:
        missing = [k for k in rule.keys if keys[k] is None]
        if missing:
            out[rule.name] = missing
        else:
            texts[rule.name] = _key_text(rule.name, [str(keys[k]) for k in rule.keys])
    if texts:
        hashes = _hash_texts(list(texts.values())).tolist()
        out.update(zip(texts, hashes, strict=True))
    return {rule.name: out[rule.name] for rule in settings.rules}


def record_key_hashes(record: Mapping[str, Any], settings: BlockingSettings) -> list[int]:
    """Return the sorted distinct key hashes of one standardized record (as :func:`key_hashes`)."""
    keys = record_rule_keys(record, settings).values()
    return sorted({int(v) for v in keys if not isinstance(v, list)})


def blocking_report(
    records: pd.DataFrame, settings: BlockingSettings | None = None
) -> pd.DataFrame:
    """Predict each rule's pairs before any comparison, one row per rule.

    Columns: ``rule``, ``keys``, ``records_with_key``, ``pairs`` (the rule's own pairs
    after refinement, for the run's ``link_type``: n(n-1)/2 per block, within or across
    sources; a pair two rules share is counted by both), ``largest_block`` (before
    refinement), ``blocks_over_warning``, ``blocks_refined`` (blocks over
    ``refine_block_size``), ``refined_by`` (the refinement keys that split them, in order)
    and ``blocks_skipped`` (parts still over ``max_block_size``).
    """
    settings = settings or BlockingSettings()
    return pd.DataFrame(_plan(records, settings)[2])


def largest_blocks(
    records: pd.DataFrame, settings: BlockingSettings | None = None, top: int = 5
) -> pd.DataFrame:
    """Return the largest blocks of each rule with their key values, for the operator to inspect."""
    settings = settings or BlockingSettings()
    table = key_table(records, settings.rules)
    frames = []
    for rule in settings.rules:
        sizes = _block_sizes(table, rule).sort_values(ascending=False).head(top)
        if sizes.empty:
            continue
        keys = sizes.index.to_frame(index=False).astype(str).agg(" | ".join, axis=1)
        frames.append(
            pd.DataFrame({"rule": rule.name, "key": keys.to_numpy(), "records": sizes.to_numpy()})
        )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["rule", "key", "records"])
    )


def sample_random_pairs(n_records: int, n_pairs: int, seed: int = 0) -> pd.DataFrame:
    """Return up to ``n_pairs`` distinct random pairs ``rid_l < rid_r`` for estimating u-probabilities."""
    if n_records < 2:
        return pd.DataFrame(
            {schema.ROW_L: np.array([], np.int64), schema.ROW_R: np.array([], np.int64)}
        )
    rng = np.random.default_rng(seed)
    total = n_records * (n_records - 1) // 2
    n_pairs = int(min(n_pairs, total))
    if total <= 2 * n_pairs:
        # few records: enumerate every pair and choose among them
        lo, hi = np.triu_indices(n_records, k=1)
        chosen = np.sort(rng.choice(total, size=n_pairs, replace=False))
        pairs = np.stack([lo[chosen], hi[chosen]], axis=1)
    else:
        # each pair as one int64 lo * n + hi (exact below 3·10⁹ records): the sorted distinct
        # keys are the sorted distinct (lo, hi) rows np.unique(axis=0) gave, ~100 times faster
        keys = np.empty(0, dtype=np.int64)
        while len(keys) < n_pairs:
            a = rng.integers(0, n_records, size=int((n_pairs - len(keys)) * 1.2) + 10)
            b = rng.integers(0, n_records, size=len(a))
            keep = a != b
            fresh = np.minimum(a, b)[keep].astype(np.int64) * n_records + np.maximum(a, b)[keep]
            keys = sorted_unique(np.concatenate([keys, fresh]))
        keys = keys[np.sort(rng.choice(len(keys), size=n_pairs, replace=False))]
        pairs = np.stack([keys // n_records, keys % n_records], axis=1)
    return pd.DataFrame(
        {schema.ROW_L: pairs[:, 0].astype(np.int64), schema.ROW_R: pairs[:, 1].astype(np.int64)}
    )


def block_new(
    records: pd.DataFrame, is_new: np.ndarray, settings: BlockingSettings | None = None
) -> pd.DataFrame:
    """Return the candidate pairs of :func:`block` that touch at least one new record.

    For incremental ingest: ``records`` holds the new records plus the stored records sharing
    a key with them, so block sizes (and skipped blocks) are those of the whole store.
    """
    is_new = np.asarray(is_new, dtype=bool)
    pairs = block(records, settings)
    keep = is_new[pairs[schema.ROW_L].to_numpy()] | is_new[pairs[schema.ROW_R].to_numpy()]
    return pairs[keep].reset_index(drop=True)
