"""Keyed pair tables: between row pairs (``rid_l``, ``rid_r``) and (source, record_id) keys.

Stages pass pairs as row numbers into one records table; labels, the identity store and
output files name records by (source, record_id). These two functions convert between the
two, so no module builds the lookup by hand; ``text_columns`` gives text columns one form,
``sorted_unique`` the distinct values of an integer column, ``packed_lexsort`` the order of
``np.lexsort`` in one pass. Imports only the schema.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema


def attach_keys(pairs: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Add ``source_l``, ``record_id_l``, ``source_r``, ``record_id_r`` in front of a pair table.

    ``pairs`` holds ``rid_l`` and ``rid_r``, row numbers into ``records`` (``rid`` order).
    """
    left = pairs[schema.ROW_L].to_numpy()
    right = pairs[schema.ROW_R].to_numpy()
    src, rid = records[schema.SOURCE], records[schema.RECORD_ID]
    keys = pd.DataFrame(
        {
            schema.SOURCE_L: _keys_at(src, left),
            schema.RECORD_ID_L: _keys_at(rid, left),
            schema.SOURCE_R: _keys_at(src, right),
            schema.RECORD_ID_R: _keys_at(rid, right),
        },
        index=pairs.index,
    )
    return pd.concat([keys, pairs], axis=1)


def _keys_at(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``column.to_numpy()[rows]``; Arrow text taken in Arrow (:func:`text_at`), not made a
    Python object per record first."""
    if _is_arrow_text(column.dtype):
        return text_at(column, rows)
    return column.to_numpy()[rows]


def _is_arrow_text(dtype: object) -> bool:
    """Text held in Arrow: pandas 3's ``str``, ``string[pyarrow]`` or an ``ArrowDtype`` of
    text (not ``string[python]``)."""
    return _is_text_dtype(dtype) and getattr(dtype, "storage", "pyarrow") == "pyarrow"


def record_keys_index(
    frame: pd.DataFrame, source: str = schema.SOURCE, record_id: str = schema.RECORD_ID
) -> pd.MultiIndex:
    """The (source, record_id) of each row as a MultiIndex of strings."""
    return pd.MultiIndex.from_arrays([frame[source].astype(str), frame[record_id].astype(str)])


def rows_for_keys(keyed: pd.DataFrame, records: pd.DataFrame, side: str = "") -> np.ndarray:
    """Row numbers (``rid``, as float with NaN where absent) of the records that ``keyed``
    names by ``source<side>`` and ``record_id<side>`` (side ``""``, ``"_l"`` or ``"_r"``)."""
    index = pd.Series(records[schema.ROW].to_numpy(), index=record_keys_index(records))
    names = record_keys_index(keyed, schema.SOURCE + side, schema.RECORD_ID + side)
    return index.reindex(names).to_numpy(dtype=float)


def text_columns(
    frame: pd.DataFrame, columns: list[str] | None = None, *, clean: Collection[str] = ()
) -> pd.DataFrame:
    """Return ``frame`` with its text columns as dtype object holding ``str`` or ``None``.

    Text columns are those of dtype object or a pandas string dtype (all of ``columns`` when
    given); other columns are kept as they are. pandas 3 infers its ``str`` dtype, with NaN
    for missing, for text built from lists, Arrow or scalars; the stages test ``is None`` and
    expect Python ``str`` values, as pandas 2 gave them, so readers and standardizers return
    this form. ``clean``: columns the caller knows hold that form already when of dtype
    object (a reader's own earlier output): left as they are without a pass over their cells.
    """
    out = frame.copy(deep=False)
    for col in frame.columns if columns is None else columns:
        s = frame[col]
        if s.dtype == object and col in clean:
            continue
        if s.dtype == object:
            missing = s.isna().to_numpy()
            if not missing.any():
                continue
            values = s.to_numpy(dtype=object, copy=True)
            values[missing] = None
        elif columns is not None or _is_text_dtype(s.dtype):
            values = shared_text(s)
        else:
            continue
        out[col] = pd.Series(values, index=frame.index, dtype=object)
    return out


def _is_text_dtype(dtype: object) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return True
    return isinstance(dtype, pd.ArrowDtype) and str(dtype.pyarrow_dtype) in ("string", "large_string")


def arrow_large_text(column: pd.Series) -> object | None:
    """An Arrow-backed pandas text column without nulls as one pyarrow ``large_string``
    array (pandas' own buffers, joined and cast only where they are chunked or 32-bit);
    None for any other column (objects, NaN, pandas 2's object text)."""
    if not (
        isinstance(column.dtype, pd.StringDtype)
        and getattr(column.dtype, "storage", None) == "pyarrow"
        and not column.hasnans
    ):
        return None
    import pyarrow as pa

    arrow = pa.chunked_array(pa.array(column.array)).combine_chunks()
    return arrow if arrow.type == pa.large_string() else arrow.cast(pa.large_string())


# The dtype pandas gives a column of ``str`` objects and None: Arrow-backed ``str`` under
# pandas 3, object under pandas 2
TEXT_DTYPE = pd.Series(np.array(["a", None], dtype=object)).dtype


def as_arrow_text(column: pd.Series) -> pd.Series:
    """A column of ``str`` objects without nulls as pandas 3's Arrow-backed ``str`` column
    (``large_string``: no Python object per row), the same values and index; ``column``
    itself when it is anything else (already Arrow, nulls, a value not text) or when
    pandas holds text as objects (pandas 2). A column that is one distinct ``str`` per row
    (record ids) costs ~65 bytes a row as objects, ~20 as Arrow text."""
    text_dtype = TEXT_DTYPE
    if getattr(text_dtype, "storage", None) != "pyarrow" or column.dtype != object:
        return column
    if pd.api.types.infer_dtype(column, skipna=False) != "string":
        return column
    import pyarrow as pa

    try:
        arrow = pa.array(column.to_numpy(), type=pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        return column
    return pd.Series(pd.array(arrow, dtype=text_dtype), index=column.index, name=column.name)


def categorical_arrow(values: pd.Categorical | pd.Series) -> object:
    """A categorical as a pyarrow dictionary array: int32 codes (null where missing) into
    its categories as ``large_string`` (raises pyarrow's errors for categories that are
    not text). One pass in C to write or cast it; no Python object per cell."""
    import pyarrow as pa

    values = pd.Categorical(values)
    codes = np.asarray(values.codes)
    dictionary = pa.array(np.asarray(values.categories, dtype=object), pa.large_string())
    indices = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def shared_text(values: pd.Series) -> np.ndarray:
    """Return ``values`` as an object array of ``str`` or ``None`` with ONE ``str`` object per
    distinct value.

    Converting Arrow or pandas string columns cell by cell makes one Python string per row
    (~60-80 bytes each); registries repeat sources, dates, addresses and codes, so sharing
    one object per distinct value is what keeps a million-record table small. Nulls (None,
    NaN, pd.NA) become None; non-string values keep their form, as ``to_numpy`` gives them.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return _take_text(uniques, codes)


def _take_text(uniques: object, codes: np.ndarray) -> np.ndarray:
    """``uniques[codes]`` as an object array, code -1 giving None: each distinct value's one
    object shared by every row that holds it."""
    pool = np.empty(len(uniques) + 1, dtype=object)
    pool[: len(uniques)] = np.asarray(uniques, dtype=object)
    pool[-1] = None  # code -1 (null) points here
    return pool[codes]


def read_text_columns(
    path: str | Path,
    columns: list[str],
    text: set[str],
    factorized: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """``columns`` of a Parquet file (those it has, in that order), the ``text`` ones as
    object arrays of ``str`` or None with one ``str`` per distinct value (``shared_text``)
    as standardizing made them; without any of them, the rows alone as pyarrow reads them.

    ``factorized``, when given, receives for each text column read as a dictionary its
    ``(codes, distinct values)``: a factorization of the column (code -1 for null, each
    distinct value once) numbered in dictionary order, not in order of first appearance as
    ``pd.factorize`` numbers it; for a caller that only groups by the codes.

    A column at a time: converting Arrow text cell by cell makes a ``str`` per row (~100
    bytes for an address), and holding every column's Arrow form at once added to the
    golden-records stage's peak (~0.5 GB at a million records).
    """

    def as_objects(col: str) -> pd.Series:
        uniques, codes, unique = _dictionary_parts(path, col, factorized is not None)
        if factorized is not None and unique:
            factorized[col] = (codes, uniques)
        return pd.Series(_take_text(uniques, codes), dtype=object)

    return _read_columns(path, columns, text, as_objects)


def read_arrow_text_columns(path: str | Path, columns: list[str], text: set[str]) -> pd.DataFrame:
    """``columns`` of a Parquet file (those it has, in that order), the ``text`` ones as
    pandas' Arrow-backed text (``TEXT_DTYPE`` under pandas 3: no Python object per row or
    per distinct value); what :func:`read_text_columns` gives where pandas holds text as
    objects (pandas 2). For a stage whose columns are mostly distinct per record (record
    ids, ID numbers: ~20 bytes a row as Arrow text, ~65 as ``str`` objects) and that reads
    them only through pyarrow or pandas' vectorized calls."""
    if getattr(TEXT_DTYPE, "storage", None) != "pyarrow":
        return read_text_columns(path, columns, text)
    import pyarrow as pa
    import pyarrow.parquet as pq

    def as_arrow(col: str) -> pd.Series:
        chunked = pq.read_table(path, columns=[col]).column(0)
        arrow = chunked.combine_chunks() if chunked.num_chunks != 1 else chunked.chunk(0)
        del chunked
        return pd.Series(pd.array(arrow.cast(pa.large_string()), dtype=TEXT_DTYPE))

    return _read_columns(path, columns, text, as_arrow)


def _read_columns(
    path: str | Path, columns: list[str], text: set[str], read_text: Callable[[str], pd.Series]
) -> pd.DataFrame:
    """The columns of a Parquet file among ``columns`` (in that order), read a column at a
    time, largest first: the ``text`` ones stored as Arrow text by ``read_text(column)``,
    the others by pandas (a ``text`` column stored otherwise, e.g. all-null, as shared
    ``str`` objects); the rows alone when there is none of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file_schema = pq.read_schema(path)
    there = [c for c in columns if c in file_schema.names]
    out = {}
    for col in _largest_first(path, there):
        kind = file_schema.field(col).type
        if col in text and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            out[col] = read_text(col)
            continue
        values = pd.read_parquet(path, columns=[col])[col]
        if col in text and not pd.api.types.is_object_dtype(values.dtype):
            values = pd.Series(shared_text(values), dtype=object)
        out[col] = values
    if not out:
        return pd.read_parquet(path, columns=[])
    return pd.DataFrame({c: out[c] for c in there})


def _largest_first(path: str | Path, columns: list[str]) -> list[str]:
    """``columns`` in the order of their uncompressed size in the Parquet file, largest
    first (the order of ``columns`` among equals): a column's reading needs several times
    its held size for a moment, so the large ones are read while little else is held (the
    twenty columns blocking holds, read back at twenty million records, peaked at 9.9 GB
    in the order of the records)."""
    import pyarrow.parquet as pq

    if len(columns) < 2:
        return columns
    meta = pq.ParquetFile(path).metadata
    at = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    size = dict.fromkeys(columns, 0)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for col in columns:
            if col in at:
                size[col] += group.column(at[col]).total_uncompressed_size
    return sorted(columns, key=lambda c: -size[c])


def _dictionary_parts(
    path: str | Path, col: str, check_unique: bool = True
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The text column ``col`` of a Parquet file as pyarrow's dictionary: its values (object
    array of ``str``), each row's code into them (-1 for null) and whether no value is
    there twice (checked in C++ with ``check_unique``, as a caller grouping by the codes
    depends on it; False without the check)."""
    dictionary, codes, unique = _arrow_dictionary(path, col, check_unique)
    return dictionary.to_numpy(zero_copy_only=False), codes, unique


def _arrow_dictionary(
    path: str | Path, col: str, check_unique: bool
) -> tuple[Any, np.ndarray, bool]:
    """:func:`_dictionary_parts` with the values as pyarrow's array."""
    chunked, unique = _unified_dictionary(path, col, check_unique)
    dictionary, codes = _chunked_codes(chunked)
    return dictionary, codes, unique


def _unified_dictionary(path: str | Path, col: str, check_unique: bool) -> tuple[Any, bool]:
    """The text column ``col`` of a Parquet file as a pyarrow ``ChunkedArray`` of
    dictionaries, every chunk on one dictionary (at least one chunk), and whether no value
    is in it twice (checked in C++ with ``check_unique``; False without the check)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    chunked = pq.read_table(path, columns=[col], read_dictionary=[col]).column(0)
    if chunked.num_chunks == 0:
        empty = pa.DictionaryArray.from_arrays(
            pa.array([], pa.int32()), pa.array([], pa.large_string())
        )
        return pa.chunked_array([empty]), True
    chunked = chunked.unify_dictionaries()  # each row group's dictionary made one
    dictionary = chunked.chunk(0).dictionary
    unique = check_unique and pc.count_distinct(dictionary, mode="all").as_py() == len(dictionary)
    return chunked, unique


def _chunked_codes(chunked: Any) -> tuple[Any, np.ndarray]:
    """A ``ChunkedArray`` of dictionaries sharing one dictionary (at least one chunk) as
    that dictionary and each row's int32 code into it (-1 for null)."""
    codes = np.concatenate(
        [
            chunk.indices.fill_null(-1).to_numpy().astype(np.int32, copy=False)
            for chunk in chunked.chunks
        ]
    )
    return chunked.chunk(0).dictionary, codes


def read_dictionary_columns(
    path: str | Path, columns: list[str], text: set[str]
) -> pd.DataFrame:
    """``columns`` of a Parquet file (those it has, in that order), the ``text`` ones as
    pandas columns of Arrow dictionaries (``pd.ArrowDtype`` of ``dictionary<int32,
    string>``: an int32 code per row, each distinct value once as Arrow text, no Python
    object per row or per value) where the file's dictionary holds each value once, else
    as :func:`read_text_columns` reads them.

    For a stage that only groups rows by those columns (blocking codes its keys:
    :func:`factorize_text`); :func:`dictionaries_as_objects` turns them into what
    :func:`read_text_columns` gives. At twenty million records a column of ``str``
    objects costs 160 MB of pointers besides its distinct values; as codes 80 MB.
    """

    import pyarrow as pa

    def as_dictionary(col: str) -> pd.Series:
        chunked, unique = _unified_dictionary(path, col, True)
        if not unique:
            dictionary, codes = _chunked_codes(chunked)
            return pd.Series(_take_text(dictionary.to_numpy(zero_copy_only=False), codes))
        # one chunk: each call on a chunked one (a chunk per row group) unifies it anew
        dictionary = chunked.chunk(0).dictionary
        indices = pa.concat_arrays([c.indices for c in chunked.chunks])
        del chunked
        one = pa.DictionaryArray.from_arrays(indices, dictionary)
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array([one])))

    return _read_columns(path, columns, text, as_dictionary)


def _is_dictionary(dtype: Any) -> bool:
    """Whether ``dtype`` is pandas' Arrow dtype of a dictionary (:func:`read_dictionary_columns`)."""
    import pyarrow as pa

    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_dictionary(dtype.pyarrow_dtype)


def is_dictionary_column(values: pd.Series) -> bool:
    """Whether ``values`` is held as an Arrow dictionary (:func:`read_dictionary_columns`)."""
    return _is_dictionary(values.dtype)


def dictionary_codes(values: pd.Series) -> tuple[Any, np.ndarray] | None:
    """A column read by :func:`read_dictionary_columns` as (its dictionary, a pyarrow
    array of distinct values; each row's int32 code into it, -1 for null); None for a
    column of any other dtype."""
    import pyarrow as pa

    dtype = values.dtype
    if not _is_dictionary(dtype):
        return None
    chunked = values.array._pa_array  # pandas' ArrowExtensionArray holds a ChunkedArray
    if chunked.num_chunks == 0:
        return pa.array([], dtype.pyarrow_dtype.value_type), np.empty(0, dtype=np.int32)
    if chunked.num_chunks > 1:
        chunked = chunked.unify_dictionaries()
    return _chunked_codes(chunked)


def factorize_text(values: pd.Series, arrow: bool = False) -> tuple[np.ndarray, Any]:
    """``pd.factorize(values)``: (codes, distinct values), codes -1 for null, the values
    numbered in order of first appearance. A dictionary column
    (:func:`read_dictionary_columns`; its dictionary holds each value once) is renumbered
    from its int32 codes, without hashing a string per row; its distinct values are an
    object array of ``str``, or with ``arrow`` a pyarrow array (no Python object per
    value: a caller that only tests them, :func:`blank_text`). Any other through pandas."""
    parts = dictionary_codes(values)
    if parts is None:
        return pd.factorize(values)
    import pyarrow as pa

    dictionary, codes = parts
    order = pd.unique(codes)  # the dictionary's codes in order of first appearance
    order = order[order >= 0]
    renumber = np.full(len(dictionary) + 1, -1, dtype=np.int32)  # [-1] is null's
    renumber[order] = np.arange(len(order), dtype=np.int32)
    uniques = dictionary.take(pa.array(order))
    if not arrow:
        uniques = np.asarray(uniques.to_numpy(zero_copy_only=False), dtype=object)
    return renumber[codes], uniques


@functools.cache
def _blank_pattern() -> str:
    """A regular expression (RE2, pyarrow's) matching text of only the characters Python's
    ``str.isspace`` calls whitespace, or none."""
    spaces = "".join(f"\\x{{{ord(c):x}}}" for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    return f"^[{spaces}]*$"


def blank_text(values: Any) -> np.ndarray:
    """Per value of a pyarrow text array, whether it is blank as ``not value.strip()`` says
    in Python (empty, or whitespace alone); False for null. Tested in C++ (pyarrow's RE2),
    without a Python object per value."""
    import pyarrow.compute as pc

    found = pc.match_substring_regex(values, _blank_pattern())
    return found.fill_null(False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def text_at(values: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``values.to_numpy()[rows]`` as an object array (None for null); a dictionary column
    (:func:`read_dictionary_columns`) or Arrow text (pandas 3's ``str``, ``as_arrow_text``)
    gives a ``str`` per row taken, taken in Arrow without a Python object per row of the
    whole column."""
    import pyarrow as pa

    if _is_arrow_text(values.dtype):
        # to_numpy() made a str per row of the column at each call: pairs.parquet's keys
        # of twenty million records, ~40 million objects a slice of 500,000 pairs
        arrow = pa.chunked_array(pa.array(values.array))
        taken = arrow.take(pa.array(np.asarray(rows, dtype=np.int64)))
        return np.asarray(taken.to_numpy(zero_copy_only=False), dtype=object)
    if not is_dictionary_column(values):
        return np.asarray(values.to_numpy()[rows], dtype=object)

    # the rows' codes taken in Arrow: not every row's codes copied out per call (the twin
    # checks call this on each chunk of scored pairs)
    taken = values.array._pa_array.take(pa.array(np.asarray(rows, dtype=np.int64)))
    return np.asarray(taken.cast(taken.type.value_type).to_numpy(), dtype=object)


def dictionaries_as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each dictionary column (:func:`read_dictionary_columns`) as an object
    column of ``str`` or None, one ``str`` per distinct value, as :func:`read_text_columns`
    reads it; the other columns shared; ``frame`` itself when it has no such column."""
    if not any(_is_dictionary(d) for d in frame.dtypes):
        return frame
    out = {}
    for col in frame.columns:
        parts = dictionary_codes(frame[col])
        if parts is None:
            out[col] = frame[col]
            continue
        dictionary, codes = parts
        out[col] = pd.Series(
            _take_text(dictionary.to_numpy(zero_copy_only=False), codes),
            index=frame.index,
            dtype=object,
        )
        del dictionary, codes
    return pd.DataFrame(out, index=frame.index, copy=False)


def read_coded_text(path: str | Path, col: str) -> tuple[np.ndarray, Any] | None:
    """The text column ``col`` of a Parquet file as (int32 codes per row, -1 for null;
    its distinct values as a pyarrow ``large_string`` array, each once, in order of first
    appearance), without a Python object per value; None when the column is not text.

    The column is read as plain text and dictionary-encoded by pyarrow in one pass over
    its chunks (one dictionary for all): reading it as the file's dictionaries (one per
    row group) and unifying them took ~4 GB of scratch for an address column of twenty
    million records (5.5 M distinct values), the golden-records stage's peak; this takes
    ~2.9 GB, in two thirds of the time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = pq.read_schema(path).field(col).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return None
    encoded = pq.read_table(path, columns=[col]).column(0).dictionary_encode()
    if encoded.num_chunks == 0:  # no rows
        return np.empty(0, dtype=np.int32), pa.array([], pa.large_string())
    # the chunks share the final dictionary (its buffers): unified where a pyarrow did not
    first = [b.address if b is not None else None for b in encoded.chunk(0).dictionary.buffers()]
    if any(
        [b.address if b is not None else None for b in c.dictionary.buffers()] != first
        for c in encoded.chunks
    ):
        encoded = encoded.unify_dictionaries()
    dictionary, codes = _chunked_codes(encoded)
    del encoded
    if dictionary.type != pa.large_string():
        dictionary = dictionary.cast(pa.large_string())
    return codes, dictionary


def columns_of(
    records: pd.DataFrame, columns: list[str], read: Callable[[list[str]], pd.DataFrame]
) -> pd.DataFrame:
    """``columns`` of the records, in that order: those ``records`` holds from it (the same
    objects), the others from ``read`` (columns -> a frame of those that exist, the same
    rows in the same order; columns neither has are left out). How a stage of a run that
    spilled its records (the records checkpoint) gets the columns it reads."""
    rest = [c for c in columns if c not in records.columns]
    back = read(rest) if rest else pd.DataFrame(index=records.index)
    back.index = records.index  # the same rows in the same order
    frame = {}
    for col in columns:
        if col in records.columns:
            frame[col] = records[col]
        elif col in back.columns:
            frame[col] = back[col]
    return pd.DataFrame(frame, index=records.index)


def held_alone(values: np.ndarray) -> bool:
    """Whether the numpy array ``values`` is all of the memory it views: its base (followed
    to the array owning the memory) is no larger than it. A column of a table held in a
    block of several columns is not: keeping a view of it keeps the whole block."""
    base = values
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, np.ndarray) and base.nbytes <= values.nbytes


def column_subset(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A new frame of ``columns`` of ``frame`` (same rows and index) that keeps nothing else
    of ``frame`` alive: a numpy column stored alone (``held_alone``) and every extension
    column (Arrow text, nullable booleans: pandas gives each a block of its own) are
    shared, not copied (pandas' copy-on-write keeps later changes to either frame apart);
    a numpy column stored in a block with others is copied.

    Dropping ``frame`` then frees every other column. Copying every kept column (what
    ``frame[columns].copy()`` does) costs a transient second copy of the kept columns'
    arrays: ~85 MB for 40 columns of 300,000 records, at the standardizing and scoring
    stages' peaks. Which columns pandas stores together is its own affair (blocks), so the
    check is made on the memory each column views, not on pandas' block layout.
    """
    kept = {}
    for col in columns:
        series = frame[col]
        if isinstance(series.dtype, np.dtype) and not held_alone(series.to_numpy()):
            series = series.copy(deep=True)
        kept[col] = series
    return pd.DataFrame(kept, index=frame.index, copy=False)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-D integer array: its distinct values, ascending.

    numpy 2.3 and later answer a plain ``np.unique`` of integers with a hash table and sort
    its result (numpy 2.4: 1.3 s for 1.2 million int64 keys, against 0.03 s for a sort and
    a comparison of neighbours, which is what this does). Other dtypes (floats hold NaN,
    which ``np.unique`` collapses) go to ``np.unique`` itself.
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype.kind not in "iub":
        return np.unique(values)
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]


def packed_lexsort(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """``np.lexsort(keys)`` (the last key sorts first; stable): the same permutation.

    Integer or boolean keys whose value ranges fit in 64 bits together are packed into one
    ``uint64`` key, the last key in the highest bits, each shifted to start at 0, and sorted
    by one stable ``argsort``: two rows' packed keys are equal exactly when all their keys are,
    and order as the keys do lexicographically, so the stable sorts agree. One pass instead of
    one per key: ~20 times faster for the golden records' five or six keys at a million
    rows. Keys that do not fit (or are not integers) go to ``np.lexsort`` itself.
    """
    arrays = [np.asarray(k) for k in keys]
    if not arrays or not len(arrays[0]) or any(a.dtype.kind not in "iub" for a in arrays):
        return np.lexsort(keys)
    widths, lows = [], []
    for a in arrays:
        low, high = int(a.min()), int(a.max())
        widths.append((high - low).bit_length())
        lows.append(low)
    if sum(widths) > 64 or any(a.dtype == np.uint64 and a.max() >= 2**63 for a in arrays):
        return np.lexsort(keys)
    packed = np.zeros(len(arrays[0]), dtype=np.uint64)
    for a, width, low in zip(reversed(arrays), reversed(widths), reversed(lows), strict=True):
        if width:
            packed <<= np.uint64(width)
            # the offset from the low in int64, read as uint64: 0..2**width-1 (a 64-bit
            # wide range wraps in int64 and reads back right, arithmetic modulo 2**64)
            packed |= (a.astype(np.int64, copy=False) - np.int64(low)).view(np.uint64)
    return np.argsort(packed, kind="stable")
