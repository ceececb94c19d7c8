"""Comparison base class and the vectorized helpers every comparison shares.

Imports only numpy, pandas, rapidfuzz and the schema; never the Linker, CLI, store or model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from rapidfuzz import process

logger = logging.getLogger(__name__)

NULL_LEVEL = -1
NULL_CODE = -1


@dataclass
class Prepared:
    """Per-record arrays (``rows``) plus value tables they index into (``tables``).

    ``rows`` values are numpy arrays with one entry (or row) per record, or nested
    ``Prepared`` objects of composed comparisons; ``tables`` are shared, never taken.
    ``index`` (a compacted one, :func:`compact_prepared`): int32, one code per record into
    ``rows``, which then hold one entry per distinct row; ``None``: ``rows`` are per record.
    Only :meth:`take` reads ``index``, so levels are computed from taken rows alone.
    """

    rows: dict[str, Any]
    tables: dict[str, Any] = field(default_factory=dict)
    index: np.ndarray | None = None

    def take(self, index: np.ndarray) -> Prepared:
        """Return the rows of the records at ``index`` (positions), sharing the tables.

        The result is never compacted: a compacted one's codes at ``index`` pick its rows.
        """
        if self.index is not None:
            index = self.index[index]
        out: dict[str, Any] = {}
        for key, value in self.rows.items():
            out[key] = value.take(index) if isinstance(value, Prepared) else value[index]
        return Prepared(out, self.tables)


class Comparison:
    """One field comparison: ``levels[0]`` is ``else``, the last level the closest agreement.

    Subclasses implement ``prepare`` (once per record table, per distinct value) and
    ``_levels`` (per pair, vectorized); ``compare`` chains both for aligned value arrays.
    """

    type_name: ClassVar[str] = ""
    # columns ``prepare`` reads at a few rows only (``rows_of``): handed to it as they are
    # held (a run reading them from its records checkpoint holds them as Arrow text, not a
    # Python string per record)
    few_rows_columns: ClassVar[tuple[str, ...]] = ()
    levels: list[str]
    name: str

    @property
    def columns(self) -> list[str]:
        """Record columns this comparison reads (missing ones count as null)."""
        raise NotImplementedError

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Turn record columns (column -> array, one entry per record) into comparable codes."""
        raise NotImplementedError

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Constructor settings, as a config entry would give them."""
        return {}

    def to_config(self) -> dict[str, Any]:
        """Return a config entry that ``comparisons_from_config`` turns back into this comparison."""
        return {"type": self.type_name, "name": self.name, **self.params()}

    def compare(
        self, left: Mapping[str, np.ndarray], right: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Return one int8 level per pair for aligned left/right value arrays (-1 = null)."""
        n = _common_length(left, right)
        joint = {c: np.concatenate([column(left, c, n), column(right, c, n)]) for c in self.columns}
        prepared = self.prepare(joint)
        rows = np.arange(2 * n)
        return self._levels(prepared.take(rows[:n]), prepared.take(rows[n:]))

    def compare_prepared(
        self, prepared: Prepared, rows_left: np.ndarray, rows_right: np.ndarray
    ) -> np.ndarray:
        """Levels for pairs of prepared records given by row positions."""
        return self._levels(prepared.take(rows_left), prepared.take(rows_right))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}(name={self.name!r}{', ' if params else ''}{params})"


class ColumnComparison(Comparison):
    """A comparison of one record column; subclasses add settings to ``params``."""

    column: str

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {"column": self.column}

    @property
    def columns(self) -> list[str]:
        """The compared column."""
        return [self.column]


# ----------------------------------------------------------------------------- compaction

# Rows hashed and checked this many records at a time: a pass's scratch is a few arrays of
# this length, not of the table's (at 20 M records each would be 160 MB).
_COMPACT_CHUNK = 1 << 20
# splitmix64's constants (Steele, Lea and Flood 2014): its finalizer spreads every input
# bit over the whole word, so mixing each array in keeps distinct rows' hashes apart
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_INDEX_BYTES = np.dtype(np.int32).itemsize


def _mix64(z: np.ndarray) -> None:
    """splitmix64's finalizer over a uint64 array, in place (the arithmetic wraps, as in C)."""
    z ^= z >> np.uint64(30)
    z *= _MIX_1
    z ^= z >> np.uint64(27)
    z *= _MIX_2
    z ^= z >> np.uint64(31)


def _words(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` (one entry or row per record) as an n x m integer array whose rows are equal
    exactly where the records' values are bitwise equal (bools as bytes, floats and dates
    as their bits); None for values of no fixed width (objects, strings)."""
    a = arr.reshape(len(arr), -1)
    kind = a.dtype.kind
    if kind == "b":
        return a.view(np.uint8)
    if kind in "iu":
        return a
    if kind in "fmM" and a.dtype.itemsize in (1, 2, 4, 8):
        return a.view(f"u{a.dtype.itemsize}")
    return None


def _row_hashes(words: Sequence[np.ndarray], n: int) -> np.ndarray:
    """One uint64 hash per record of its values in every array of ``words`` (each n x m)."""
    out = np.empty(n, dtype=np.uint64)
    for start in range(0, n, _COMPACT_CHUNK):
        stop = min(start + _COMPACT_CHUNK, n)
        h = np.full(stop - start, _GOLDEN, dtype=np.uint64)
        for w in words:
            for j in range(w.shape[1]):
                col = w[start:stop, j]
                if col.dtype.kind == "i":  # widened with its sign: int8 -1 is not uint8 255
                    col = col.astype(np.int64, copy=False).view(np.uint64)
                h ^= col
                h += _GOLDEN
                _mix64(h)
        out[start:stop] = h
    return out


def _row_arrays(prepared: Prepared) -> list[np.ndarray] | None:
    """Every per-record array of ``prepared``, nested ones' included, in order; None when
    one is compacted already or a row is not a numpy array."""
    if prepared.index is not None:
        return None
    out: list[np.ndarray] = []
    for value in prepared.rows.values():
        if isinstance(value, Prepared):
            inner = _row_arrays(value)
            if inner is None:
                return None
            out += inner
        elif isinstance(value, np.ndarray) and value.ndim >= 1:
            out.append(value)
        else:
            return None
    return out


def _gathered(prepared: Prepared, rows: np.ndarray, index: np.ndarray | None = None) -> Prepared:
    """``prepared`` with every per-record array cut to ``rows`` (nested ones kept nested)."""
    out = {
        key: _gathered(value, rows) if isinstance(value, Prepared) else value[rows]
        for key, value in prepared.rows.items()
    }
    return Prepared(out, prepared.tables, index)


def compact_prepared(prepared: Prepared, min_saving: float = 0.2) -> Prepared:
    """``prepared`` with its rows held once per distinct row, and ``index`` (int32, one code
    per record) picking each record's: many records share every prepared value (one name,
    one person's several records with one ID or address), so a run's prepared comparisons
    shrink (at a million records the names took 68 bytes a record, the IDs 53).

    Rows are grouped by a 64-bit hash of all the per-record arrays (nested ones too), then
    checked value by value: where two distinct rows share a hash the input is returned as it
    is, never grouped wrongly. ``take`` on the result gives the rows ``take`` on the input
    gives, so levels are unchanged. Returned unchanged also when compacting would save less
    than ``min_saving`` (a fraction) of the per-record bytes (gender, one int32 code a
    record: the index alone costs as much; ``-inf`` compacts whatever it costs), when a
    per-record array holds objects or strings, when the arrays differ in length, or when
    ``prepared`` is compacted already. Tables are shared, not copied.
    """
    arrays = _row_arrays(prepared)
    if not arrays:
        return prepared
    n = len(arrays[0])
    if n < 2 or n > np.iinfo(np.int32).max or any(len(a) != n for a in arrays):
        return prepared
    words = [_words(a) for a in arrays]
    if any(w is None for w in words):
        return prepared
    row_bytes = sum(a.nbytes for a in arrays) / n
    held = n * row_bytes
    if n * _INDEX_BYTES > (1 - min_saving) * held:  # even one distinct row would not pay
        return prepared
    codes, uniques = pd.factorize(_row_hashes(words, n))
    distinct = len(uniques)
    del uniques
    if distinct * row_bytes + n * _INDEX_BYTES > (1 - min_saving) * held:
        return prepared
    index = codes.astype(np.int32)
    del codes
    # codes count in order of first appearance: a record is its code's first where its
    # code exceeds every code before it
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.greater(index[1:], np.maximum.accumulate(index[:-1]), out=new[1:])
    first = np.flatnonzero(new)
    del new
    for w in words:
        kept = w[first]
        for start in range(0, n, _COMPACT_CHUNK):
            stop = min(start + _COMPACT_CHUNK, n)
            if not np.array_equal(kept[index[start:stop]], w[start:stop]):
                logger.debug("prepared rows left per record: two distinct rows share a hash")
                return prepared
    return _gathered(prepared, first, index)


# ----------------------------------------------------------------------------- value helpers


def _common_length(left: Mapping[str, Any], right: Mapping[str, Any]) -> int:
    lengths = {len(v) for v in left.values()} | {len(v) for v in right.values()}
    if len(lengths) > 1:
        raise ValueError(f"left and right arrays must all have one length, got {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def column(values: Mapping[str, Any], name: str, n: int | None = None) -> np.ndarray:
    """The named array as numpy (object for strings); all-null when the column is absent."""
    if name in values and values[name] is not None:
        arr = values[name]
        if isinstance(arr, pd.Series | pd.Index):
            arr = arr.to_numpy()
        return np.asarray(arr, dtype=object) if np.asarray(arr).dtype.kind in "USO" else arr
    if n is None:
        n = len(next(iter(values.values()))) if values else 0
    return np.full(n, None, dtype=object)


def rows_of(values: Mapping[str, Any], name: str, rows: np.ndarray) -> list:
    """``column(values, name)[rows]`` as a list, taking the rows from the array as it is
    (a pandas Arrow text array: no Python object per record, only per row taken); None per
    row when the column is absent. For a column read at a few rows (the raw ID of damaged
    IDs), held as Arrow text by a run that reads it from its records checkpoint."""
    arr = values.get(name)
    if arr is None:
        return [None] * len(rows)
    if isinstance(arr, pd.Series | pd.Index):
        arr = arr.array
    if isinstance(arr, pd.api.extensions.ExtensionArray):
        return list(np.asarray(arr.take(np.asarray(rows, dtype=np.intp)), dtype=object))
    return list(column(values, name)[rows])


# Up to this many values, factorize by a dict: pd.factorize costs ~60 µs a call, and a
# lookup's comparisons call it ~20 times on a few dozen values.
_SMALL_FACTORIZE = 512


def _factorize_small(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`factorize` by a dict: ``pd.factorize``'s codes (order of first appearance, -1
    for what ``pd.isna`` calls null; values equal in Python, as 1, 1.0 and True, share a code
    and the first is kept, as pandas' object hash table does), then blank values joined to
    the nulls and the others renumbered in order."""
    seen: dict[Any, int] = {}  # value -> code, -1 for a blank one
    codes = []
    n = 0
    for v in arr.tolist():
        if type(v) is not str and pd.isna(v):
            codes.append(NULL_CODE)
            continue
        code = seen.get(v)
        if code is None:
            if str(v).strip():
                code = seen[v] = n
                n += 1
            else:
                code = seen[v] = NULL_CODE
        codes.append(code)
    uniques = np.empty(n, dtype=object)
    for v, code in seen.items():  # element-wise: a tuple value stays one element
        if code >= 0:
            uniques[code] = v
    return np.array(codes, dtype=np.int32), uniques


def factorize(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes (-1 for null or blank) and the distinct values as an object array."""
    arr = np.asarray(arr, dtype=object)
    if len(arr) <= _SMALL_FACTORIZE:
        try:
            return _factorize_small(arr)
        except (TypeError, ValueError):  # unhashable or array-like values: pandas decides
            pass
    codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    codes = codes.astype(np.int32, copy=False)
    if len(uniques):
        # plain Python: pandas' string methods loop over objects too, after building a Series
        blank = np.fromiter((not str(u).strip() for u in uniques), dtype=bool, count=len(uniques))
        if blank.any():
            # renumber so that blank strings join the nulls
            keep = np.flatnonzero(~blank)
            remap = np.full(len(uniques) + 1, NULL_CODE, dtype=np.int32)
            remap[keep] = np.arange(len(keep), dtype=np.int32)
            codes = remap[codes]  # code -1 hits remap[-1] == -1
            uniques = uniques[keep]
    return codes, uniques


def factorize_joint(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Factorize several arrays into one code space (e.g. name and former name)."""
    lengths = [len(a) for a in arrays]
    codes, uniques = factorize(np.concatenate([np.asarray(a, dtype=object) for a in arrays]))
    return np.split(codes, np.cumsum(lengths)[:-1]), uniques


def map_uniques(
    codes: np.ndarray, uniques: np.ndarray, func: Callable[[Any], Any], dtype: Any = object
) -> np.ndarray:
    """Apply ``func`` once per distinct value and spread the result over ``codes`` (null -> None)."""
    table = np.array([func(u) for u in uniques] + [None], dtype=object)
    out = table[codes]  # code -1 picks the trailing None
    return out if dtype is object else out.astype(dtype)


def recode(codes: np.ndarray, table_codes: np.ndarray) -> np.ndarray:
    """Look codes up in a per-distinct code table, keeping -1 for null."""
    extended = np.append(table_codes.astype(np.int32, copy=False), np.int32(NULL_CODE))
    return extended[codes]


def both(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True where both code arrays are non-null."""
    return (a >= 0) & (b >= 0)


def same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """True where both codes are non-null and equal."""
    return (a == b) & (a >= 0)


def as_bool(arr: np.ndarray) -> np.ndarray:
    """Booleans from a nullable column (null -> False)."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr
    missing = np.asarray(pd.isna(arr), dtype=bool)
    out = np.zeros(len(arr), dtype=bool)
    out[~missing] = arr[~missing].astype(bool)
    return out


def pair_scores(
    codes_a: np.ndarray,
    codes_b: np.ndarray,
    strings: np.ndarray,
    scorer: Callable,
    dtype: Any = np.float32,
) -> np.ndarray:
    """rapidfuzz ``scorer`` per pair of codes into ``strings``, computed once per distinct pair."""
    if len(codes_a) == 0:
        return np.zeros(0, dtype=dtype)
    key = codes_a.astype(np.int64) * (len(strings) + 1) + codes_b.astype(np.int64)
    # distinct pairs by hashing (np.unique sorts the key; the order of the distinct pairs
    # does not matter, each pair's score is its own)
    inverse, distinct = pd.factorize(key)
    distinct = np.asarray(distinct, dtype=np.int64)
    da = (distinct // (len(strings) + 1)).astype(np.intp)
    db = (distinct % (len(strings) + 1)).astype(np.intp)
    # cpdist is element-wise over two equal-length lists; one worker measured as fast as two
    scores = process.cpdist(list(strings[da]), list(strings[db]), scorer=scorer, dtype=dtype)
    return scores[inverse.ravel()]


def finish(levels: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Set the null level where a pair is not comparable; return int8."""
    out = levels.astype(np.int8, copy=False)
    out[~present] = NULL_LEVEL
    return out
