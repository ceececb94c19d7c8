"""Standardization stage: derived columns and quality flags beside the raw canonical fields.

Each field module computes once per distinct value; this module only combines them through
one table of fields (``FIELDS``) and adds the cross-field checks. ``standardize`` (a table)
and ``standardize_record`` (one record, for search) both walk ``FIELDS``, so the two cannot
differ in a field or an option. Must not import the linking stages, the Linker or the CLI.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import StandardizeConfig
from linkage.standardize import address, dates, demographics, idnumber, names, phone
from linkage.standardize._distinct import (
    PARALLEL_MIN_DISTINCT,
    DistinctResults,
    drop_ahead,
    send_ahead,
    worker_process,
)
from linkage.tables import column_subset, shared_text

logger = logging.getLogger(__name__)


def join_flags(*parts: pd.Series) -> pd.Series:
    """Join per-field flag strings (``""`` when clean) into one ``|``-separated string per row.

    Joined once per distinct combination of the parts' values (flags repeat: most rows have
    none), not per row: a million rows' ten parts were ~30 million string concatenations, and
    each row held its own copy of its joined string.
    """
    if not parts:
        return pd.Series(dtype=object)
    joined = _FlagJoin(parts[0].index)
    for part in parts:
        joined.add(part)
    return joined.series()


class _FlagJoin:
    """:func:`join_flags` a part at a time: each part is folded into one code per row as it
    comes, so a caller need not hold every part until the end (``standardize``: one
    object column per field, ~0.4 GB at 3 M records at the stage's peak)."""

    def __init__(self, index: pd.Index):
        self.index = index
        self.codes = np.zeros(len(index), dtype=np.int64)
        self.table: list[str] = [""]  # the joined string of each code; "" joined to v is v

    def add(self, part: pd.Series) -> None:
        """Join ``part`` (flag strings or null, one per row) to the right of the parts so far."""
        values = part.fillna("").to_numpy(dtype=object)
        part_codes, uniques = pd.factorize(values)
        width = max(len(uniques), 1)
        self.codes, distinct = pd.factorize(self.codes * width + part_codes)
        distinct = np.asarray(distinct, dtype=np.int64)
        table = self.table
        self.table = [
            _joined(table[left], uniques[right])
            for left, right in zip(
                (distinct // width).tolist(), (distinct % width).tolist(), strict=True
            )
        ]

    def series(self) -> pd.Series:
        """The joined flags, one string per row (dtype object, one object per distinct)."""
        joined = np.empty(len(self.table), dtype=object)
        joined[:] = self.table
        return pd.Series(joined[self.codes], index=self.index, dtype=object)


def _flag_part(flagged: Any, code: str, index: pd.Index) -> pd.Series:
    """``code`` where ``flagged`` (booleans, one per row) is true, else ``""``: a flag part
    for :func:`join_flags`, as an object array of two shared strings. ``np.where(flagged,
    code, "")`` made a fixed-width text array of the code's width per row (108 bytes a row
    for the longest code, ~0.3 GB at 3 M records) and pandas a copy of it: the peak of the
    standardizing stage."""
    values = np.full(len(index), "", dtype=object)
    values[np.asarray(flagged, dtype=bool)] = code
    return pd.Series(values, index=index, dtype=object)


def _joined(left: str, right: str) -> str:
    return left + schema.QUALITY_SEP + right if left != "" and right != "" else left + right


def all_flags() -> dict[str, str]:
    """Return every quality flag code the stage can emit, with its description (search reports them)."""
    flags: dict[str, str] = {}
    for field in (schema.NAME, schema.FORMER_NAME):
        for code, text in names.FLAGS.items():
            flags[field + code.removeprefix("name")] = text
    flags.update(idnumber.FLAGS)
    for field in (schema.BIRTH_DATE, schema.REGISTERED_AT):
        for code, text in dates.FLAGS.items():
            flags[f"{field}_{code}"] = text
    flags.update(dates.CROSS_FLAGS)
    flags.update(demographics.FLAGS)
    flags.update(phone.FLAGS)
    for field in (schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS):
        for code, text in address.FLAGS.items():
            flags[field + code.removeprefix("address")] = text
    flags[_SAME_AS_HUKOU_FLAG] = (
        "the current address says it is the hukou address (同户籍地址): the hukou address's "
        "parts are used (informational)"
    )
    return flags


def _prefix_flags(flags: pd.Series, field: str) -> pd.Series:
    """Prefix bare flag codes (``unparsed``) with the field name (``birth_date_unparsed``)."""
    codes, uniques = pd.factorize(flags.fillna(""))
    mapped = np.array(
        [
            schema.QUALITY_SEP.join(f"{field}_{c}" for c in u.split(schema.QUALITY_SEP) if c)
            for u in uniques
        ],
        dtype=object,
    )
    return pd.Series(mapped[codes] if len(mapped) else "", index=flags.index, dtype=object)


def _distinct(values: pd.Series) -> list:
    """The distinct non-null values of a raw column, as ``map_distinct`` sees them."""
    return list(pd.unique(values[values.notna()].to_numpy(dtype=object)))


def _field_values(
    records: pd.DataFrame,
    field: str,
    batch: BatchFacts,
    distinct_rows: Mapping[str, np.ndarray] | None,
) -> pd.Series:
    """The raw column ``field`` as ``_column`` gives it; for a field of ``batch.distinct``
    with its rows in ``distinct_rows``, built from those results, which its
    ``map_distinct`` call then takes (``DistinctResults.use``) instead of parsing."""
    results = (batch.distinct or {}).get(field)
    rows = (distinct_rows or {}).get(field)
    if results is None or rows is None or field not in records.columns:
        return _column(records, field)
    if len(rows) != len(records):
        raise ValueError(f"{field}: {len(rows)} distinct rows given for {len(records)} records")
    return results.use(rows, records.index)


def _column(records: pd.DataFrame, field: str) -> pd.Series:
    """The raw column ``field`` as ``str`` objects and None (all None when absent): a
    column held as Arrow strings (``_arrow_text``) is converted here, when its field is
    standardized, one ``str`` per distinct value as the records frame would hold it."""
    if field in records.columns:
        values = records[field]
        if _arrow_text(values):
            return pd.Series(shared_text(values), index=records.index, dtype=object)
        return values.astype(object)
    return pd.Series([None] * len(records), index=records.index, dtype=object)


def _arrow_text(values: pd.Series) -> bool:
    """Whether ``values`` is a raw column ``standardize`` takes as Arrow strings
    (``pd.ArrowDtype(pa.string())``, ``io.read_records_chunks``' rows waiting for their
    field) rather than Python objects."""
    dtype = values.dtype
    if not isinstance(dtype, pd.ArrowDtype):
        return False
    import pyarrow as pa

    return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)


def _as_objects(records: pd.DataFrame, columns: Collection[str] | None = None) -> pd.DataFrame:
    """``records`` with its Arrow string columns (``_arrow_text``; of ``columns`` when
    given) as ``str`` objects and None, one ``str`` per distinct value: the raw columns no
    field converted (those kept as they are, and the sources' own), as the output holds
    them."""
    names = records.columns if columns is None else [c for c in records.columns if c in columns]
    arrow = [c for c in names if _arrow_text(records[c])]
    if not arrow:
        return records
    records = records.copy(deep=False)
    for c in arrow:
        records[c] = pd.Series(shared_text(records[c]), index=records.index, dtype=object)
    return records


@dataclass(frozen=True)
class BatchFacts:
    """What standardizing reads of the whole batch rather than of one record, decided once
    for it: ``cities`` (``address.current_address_cities`` of its current addresses; None:
    counted over the values standardized) and ``id_verdict`` (``idnumber.column_verdict`` of
    its distinct IDs; None: judged over the values standardized). A batch standardized a
    chunk at a time passes the whole batch's to every chunk, and may hold ``distinct``:
    fields whose parser already ran over the whole batch's distinct values
    (``DistinctResults``), which ``standardize``'s ``distinct_rows`` index."""

    cities: pd.Series | None = None
    id_verdict: tuple[bool, bool] | None = None
    distinct: Mapping[str, DistinctResults] | None = None


# A field standardizer: (raw values, config, frames of the fields before it, the batch's
# facts) -> derived columns plus QUALITY_FLAGS, on the values' index.
Standardizer = Callable[
    [pd.Series, StandardizeConfig, dict[str, pd.DataFrame], BatchFacts], pd.DataFrame
]


# The same for one non-null value: (value, config, dicts of the fields before it) -> derived
# columns plus QUALITY_FLAGS as a dict.
OneStandardizer = Callable[[str, StandardizeConfig, dict[str, dict]], dict]


@dataclass(frozen=True)
class FieldStandardizer:
    """One row of ``FIELDS``: the raw field read, its standardizer (a column, and one value),
    its timing label, and the function ``run`` maps over the column's distinct values
    (given the config and the batch's facts; ``standardize`` sends it to the worker process
    ahead of ``run``, which must map the same function)."""

    field: str
    run: Standardizer
    timing: str
    one: OneStandardizer
    parser: Callable[[StandardizeConfig, BatchFacts], Callable[[Sequence[object]], pd.DataFrame]]


def _prefix_codes(codes: object, field: str) -> str:
    """:func:`_prefix_flags` of one flag string."""
    text = "" if codes is None or codes != codes else str(codes)
    return schema.QUALITY_SEP.join(f"{field}_{c}" for c in text.split(schema.QUALITY_SEP) if c)


def _names(field: str) -> Standardizer:
    return lambda values, config, done, batch: names.standardize_names(values, field=field)


def _dates(field: str, target: str) -> Standardizer:
    def run(
        values: pd.Series, config: StandardizeConfig, done: dict, batch: BatchFacts
    ) -> pd.DataFrame:
        parsed = dates.parse_dates(values, pivot_year=config.two_digit_year_pivot)
        flags = _prefix_flags(parsed[schema.QUALITY_FLAGS], field)
        # dtype object keeps one str per distinct date (pandas 3 would infer its Arrow str
        # dtype, whose every to_numpy makes a str per row)
        return pd.DataFrame(
            {
                target: pd.Series(parsed["value"].to_numpy(), index=values.index, dtype=object),
                schema.QUALITY_FLAGS: flags.to_numpy(),
            },
            index=values.index,
        )

    return run


def _date_one(field: str, target: str) -> OneStandardizer:
    def run(value: str, config: StandardizeConfig, done: dict) -> dict:
        parsed = dates.parse_date_value(value, pivot_year=config.two_digit_year_pivot)
        return {
            target: parsed["value"],
            schema.QUALITY_FLAGS: _prefix_codes(parsed[schema.QUALITY_FLAGS], field),
        }

    return run


# what registries write as the current address of someone living at the hukou address
# ("same as the household-registration address"); read as that address, not as text
_SAME_AS_HUKOU = frozenset(
    {"同户籍地址", "同户籍地", "同户籍", "同户籍所在地", "同户口地址", "同户口所在地", "同户口"}
)
_SAME_AS_HUKOU_FLAG = f"{schema.CURRENT_ADDRESS}_same_as_hukou"


def _same_as_hukou(value: object) -> bool:
    if not isinstance(value, str):
        return False
    text = "".join(unicodedata.normalize("NFKC", value).split()).rstrip("。.")
    return text in _SAME_AS_HUKOU


def _current_addresses(
    values: pd.Series,
    config: StandardizeConfig,
    done: dict[str, pd.DataFrame],
    batch: BatchFacts,
) -> pd.DataFrame:
    """The current address column; a "same as hukou" value takes the hukou address's parts
    (null without a hukou address: the text itself would agree with every other such
    value as an address detail). An ambiguous district is read by ``batch.cities``."""
    out = address.standardize_addresses(
        values, schema.CURRENT_ADDRESS, by_batch=True, batch_cities=batch.cities
    )
    if not len(values):
        return out
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    same = np.append(np.array([_same_as_hukou(u) for u in uniques], dtype=bool), False)[codes]
    if not same.any():
        return out
    hukou = done.get(schema.HUKOU_ADDRESS)
    for suffix in schema.ADDRESS_DERIVED_SUFFIXES:
        column = schema.address_col(schema.CURRENT_ADDRESS, suffix)
        target = out[column].to_numpy(dtype=object).copy()
        if hukou is None:
            target[same] = None
        else:
            source = hukou[schema.address_col(schema.HUKOU_ADDRESS, suffix)].to_numpy(dtype=object)
            target[same] = source[same]
        # object, str or None, as every standardized column (pandas 3 would infer its
        # str dtype, NaN for None, for this column alone in a batch with such values)
        out[column] = pd.Series(target, index=out.index, dtype=object)
    flags = out[schema.QUALITY_FLAGS].to_numpy(dtype=object).copy()
    flags[same] = _SAME_AS_HUKOU_FLAG
    out[schema.QUALITY_FLAGS] = pd.Series(flags, index=out.index, dtype=object)
    return out


def _current_address(value: str, config: StandardizeConfig, done: dict[str, dict]) -> dict:
    """:func:`_current_addresses` of one value."""
    out = address.standardize_address(value, schema.CURRENT_ADDRESS)
    if not _same_as_hukou(value):
        return out
    hukou = done.get(schema.HUKOU_ADDRESS)
    for suffix in schema.ADDRESS_DERIVED_SUFFIXES:
        column = schema.address_col(schema.HUKOU_ADDRESS, suffix)
        out[schema.address_col(schema.CURRENT_ADDRESS, suffix)] = (
            None if hukou is None else hukou[column]
        )
    out[schema.QUALITY_FLAGS] = _SAME_AS_HUKOU_FLAG
    return out


def _region_code(done: dict[str, dict]) -> object:
    ids = done.get(schema.ID_NUMBER)
    return None if ids is None else ids[schema.ID_REGION_CODE]


def _region_codes(done: dict[str, pd.DataFrame]) -> pd.Series | None:
    ids = done.get(schema.ID_NUMBER)
    return None if ids is None else ids[schema.ID_REGION_CODE]


# Every raw field the stage standardizes, in output column order. The hukou address reads
# the ID's region code (a district the address text may omit), so it comes after the ID.
FIELDS: tuple[FieldStandardizer, ...] = (
    FieldStandardizer(
        schema.NAME,
        _names(schema.NAME),
        "names",
        lambda v, c, d: names.standardize_name(v, field=schema.NAME),
        lambda c, b: names.distinct_parser(schema.NAME),
    ),
    FieldStandardizer(
        schema.FORMER_NAME,
        _names(schema.FORMER_NAME),
        "names",
        lambda v, c, d: names.standardize_name(v, field=schema.FORMER_NAME),
        lambda c, b: names.distinct_parser(schema.FORMER_NAME),
    ),
    FieldStandardizer(
        schema.ID_NUMBER,
        lambda v, c, d, b: idnumber.standardize_id_numbers(v, b.id_verdict),
        "id_number",
        lambda v, c, d: idnumber.standardize_id_number(v),
        lambda c, b: idnumber.distinct_parser(b.id_verdict),
    ),
    FieldStandardizer(
        schema.BIRTH_DATE,
        _dates(schema.BIRTH_DATE, schema.BIRTH_DATE_STD),
        "dates",
        _date_one(schema.BIRTH_DATE, schema.BIRTH_DATE_STD),
        lambda c, b: dates.distinct_parser(c.two_digit_year_pivot),
    ),
    FieldStandardizer(
        schema.REGISTERED_AT,
        _dates(schema.REGISTERED_AT, schema.REGISTERED_AT_STD),
        "dates",
        _date_one(schema.REGISTERED_AT, schema.REGISTERED_AT_STD),
        lambda c, b: dates.distinct_parser(c.two_digit_year_pivot),
    ),
    FieldStandardizer(
        schema.GENDER,
        lambda v, c, d, b: demographics.standardize_gender(v),
        "gender_ethnicity",
        lambda v, c, d: demographics.standardize_gender_value(v),
        lambda c, b: demographics.gender_parser(),
    ),
    FieldStandardizer(
        schema.ETHNICITY,
        lambda v, c, d, b: demographics.standardize_ethnicity(v),
        "gender_ethnicity",
        lambda v, c, d: demographics.standardize_ethnicity_value(v),
        lambda c, b: demographics.ethnicity_parser(),
    ),
    FieldStandardizer(
        schema.PHONE,
        lambda v, c, d, b: phone.standardize_phones(v),
        "phone",
        lambda v, c, d: phone.standardize_phone(v),
        lambda c, b: phone.distinct_parser(),
    ),
    FieldStandardizer(
        schema.HUKOU_ADDRESS,
        lambda v, c, d, b: address.standardize_addresses(
            v, schema.HUKOU_ADDRESS, region_codes=_region_codes(d)
        ),
        "addresses",
        lambda v, c, d: address.standardize_address(
            v, schema.HUKOU_ADDRESS, region_code=_region_code(d)
        ),
        lambda c, b: address.distinct_parser(schema.HUKOU_ADDRESS),
    ),
    FieldStandardizer(
        schema.CURRENT_ADDRESS,
        _current_addresses,
        "addresses",
        _current_address,
        lambda c, b: address.distinct_parser(schema.CURRENT_ADDRESS),
    ),
)


# Derived columns a later field (the hukou address reads the ID's region code, a current
# address "same as hukou" the hukou address's parts) or the cross-field checks read:
# ``standardize(keep=)`` holds them to the end whether kept or not.
_READ_LATER = frozenset(
    {
        schema.ID_REGION_CODE, schema.ID_STD, schema.ID_BIRTH_DATE, schema.ID_GENDER,
        schema.BIRTH_DATE_STD, schema.REGISTERED_AT_STD, schema.GENDER_STD,
        *(schema.address_col(schema.HUKOU_ADDRESS, s) for s in schema.ADDRESS_DERIVED_SUFFIXES),
    }
)  # fmt: skip


# Distinct values below which a kept text column is held as a Categorical (``compact``):
# int8, int16 or int32 codes, a quarter to an eighth of the pointers of an object column
COMPACT_MAX = 2**16
# Rows a column needs to be coded: below, its pointers are a few hundred kilobytes
_COMPACT_MIN_ROWS = 40_000
# Rows looked at first: a column with COMPACT_MAX distinct values among them has at least
# as many in all, and is not factorized whole (names, IDs, phones, address details:
# hundreds of thousands of distinct values, 0.3-1 s each at three million records)
_COMPACT_PREFIX = 200_000


def _compact_column(values: pd.Series) -> pd.Series | None:
    """``values`` (an object column) as a ``pandas.Categorical`` of its values (objects, in
    order of first appearance; nulls as missing) when it has fewer than ``COMPACT_MAX``
    distinct values and at least ``_COMPACT_MIN_ROWS`` rows; else None."""
    if values.dtype != object or len(values) < _COMPACT_MIN_ROWS:
        return None
    array = values.to_numpy()
    if len(array) > _COMPACT_PREFIX and len(pd.unique(array[:_COMPACT_PREFIX])) >= COMPACT_MAX:
        return None
    codes, uniques = pd.factorize(array, use_na_sentinel=True)
    if len(uniques) >= COMPACT_MAX:
        return None
    categories = pd.Index(np.asarray(uniques, dtype=object), dtype=object)
    return pd.Series(
        pd.Categorical.from_codes(codes, categories=categories, validate=False),
        index=values.index,
        name=values.name,
    )


def _few_valued(values: pd.Series) -> bool:
    """Whether ``_compact_column`` would code the Arrow string column ``values`` once
    converted to objects: at least ``_COMPACT_MIN_ROWS`` rows, fewer than ``COMPACT_MAX``
    distinct values (nulls aside), counted in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(values) < _COMPACT_MIN_ROWS:
        return False
    array = pa.array(values.array)
    if len(values) > _COMPACT_PREFIX:
        if pc.count_distinct(array.slice(0, _COMPACT_PREFIX)).as_py() >= COMPACT_MAX:
            return False
    return pc.count_distinct(array).as_py() < COMPACT_MAX


def _compacted(frame: pd.DataFrame, columns: Collection[str]) -> pd.DataFrame:
    """``frame`` with those of ``columns`` that ``_compact_column`` codes as Categoricals;
    the other columns shared."""
    coded = {}
    for col in frame.columns:
        if col in columns:
            values = _compact_column(frame[col])
            if values is not None:
                coded[col] = values
    if not coded:
        return frame
    out = {col: coded.get(col, frame[col]) for col in frame.columns}
    return pd.DataFrame(out, index=frame.index, copy=False)


def _previous_century(
    birth: pd.Series, flags: pd.Series | None, registered: pd.Series, id_birth: pd.Series
) -> tuple[np.ndarray, pd.Series]:
    """Two-digit birth years to read a century earlier: the pivot put the date after the
    record's registration date, or the ID embeds the date a century earlier (``26-11-27``
    registered in 2020, or with an ID of 1926-11-27). Returns the mask and the earlier ISO
    dates (null where no valid date)."""
    none = np.zeros(len(birth), dtype=bool)
    if flags is None:
        return none, birth
    # per distinct flag string, and the dates compared on the candidate rows alone: text
    # copies of whole columns (a Python string per row) were ~0.5 GB at 3 M records, at
    # the end of standardizing, where the stage peaks
    codes, uniques = pd.factorize(flags, use_na_sentinel=True)
    two_digit = np.append(
        np.array(["birth_date_two_digit_year" in str(u) for u in uniques], dtype=bool), False
    )
    cand = two_digit[codes] & birth.notna().to_numpy(dtype=bool)
    if not cand.any():
        return none, birth
    rows = np.flatnonzero(cand)
    texts = [str(v) for v in birth.to_numpy(dtype=object)[rows]]
    # once per distinct date: a registry's two-digit years repeat
    shifted: dict[str, str | None] = {}
    for text in set(texts):
        try:
            shifted[text] = datetime.date(
                int(text[:4]) - 100, int(text[5:7]), int(text[8:10])
            ).isoformat()
        except ValueError:  # 29 February of a year that was not a leap year
            shifted[text] = None
    moved = np.empty(len(rows), dtype=object)
    moved[:] = [shifted[t] for t in texts]
    earlier = pd.Series(None, index=birth.index, dtype=object)
    earlier.iloc[rows] = moved
    known = np.array([m is not None for m in moved], dtype=bool)
    reg = registered.to_numpy(dtype=object)[rows]
    reg_known = registered.notna().to_numpy(dtype=bool)[rows]
    later = reg_known & np.array(
        [k and t > str(r) for t, r, k in zip(texts, reg, reg_known, strict=True)], dtype=bool
    )
    ids = id_birth.to_numpy(dtype=object)[rows]
    id_known = id_birth.notna().to_numpy(dtype=bool)[rows]
    by_id = np.array(
        [k and m is not None and str(i) == m for i, m, k in zip(ids, moved, id_known, strict=True)],
        dtype=bool,
    )
    back = none.copy()
    back[rows] = known & (later | by_id)
    return back, earlier


def standardize(
    records: pd.DataFrame,
    config: StandardizeConfig | None = None,
    *,
    timings: dict[str, float] | None = None,
    step: Callable[[int], None] | None = None,
    parallel: bool = False,
    keep: Collection[str] | None = None,
    batch: BatchFacts | None = None,
    compact: bool = False,
    distinct_rows: Mapping[str, np.ndarray] | None = None,
    keep_arrow: bool = False,
) -> pd.DataFrame:
    """Return ``records`` with derived columns, ``rid`` row keys and ``quality_flags`` added.

    Takes the canonical fields (absent ones read as null); adds every field's derived
    columns (``FIELDS``), cross-field flags and ``rid`` = 0..n-1 in row order. Seconds per
    field group are added to ``timings`` when given; ``step(n)`` is called after each field
    with the number of values it standardized (len(records)), for progress reporting.
    With ``parallel``, a field with many distinct values is standardized half here, half in
    one worker process (``_distinct.worker_process``); the result is the same.

    With ``keep`` (column names), the result holds only those of its columns, the same
    values in the same order as the full table's selection: each field's raw column and
    derived columns outside ``keep`` are dropped as soon as no later field or cross-field
    check reads them (``_READ_LATER``), so they never pile up (a spilling ``linkage run``
    keeps 43 of 65 columns: ~0.25 GB less at the stage's peak per million records). The
    caller should hand ``records`` over (hold no other reference to it) for its raw columns
    to be freed.

    Each record is standardized from its own values, but for two rules that read the
    batch: a current address naming an ambiguous district without its city is read in the
    city most of the batch's current addresses lie in (``address.standardize_addresses``'
    ``by_batch``), and an ID column that went through Excel or float64 as a whole has its
    tail-000 or float-exact IDs flagged damaged (``idnumber.column_verdict``, judged once
    over the column's distinct values, also when a worker process standardizes half of
    them). When ``records`` is one chunk of a batch, ``batch`` (:class:`BatchFacts` of the
    whole batch) stands for it, so that the chunks come out as the batch would. A field of
    ``batch.distinct`` (parsed over the batch's distinct values once) with its rows in
    ``distinct_rows`` (field -> each record's position in that field's
    ``DistinctResults.dictionary``, -1 for null; int array of len(records)) takes its
    parsed values from there: the same values as parsing the chunk's own. Raises
    ValueError when such an array is not len(records) long.

    A raw column may be held as Arrow strings (``pd.ArrowDtype(pa.string())``): it is
    converted to ``str`` objects when its field reads it (or at the end, when no field
    does), so that a caller holding the raw rows as Arrow (``io.read_records_chunks``) never
    holds every raw column as objects at once; the result is that of the object columns.

    With ``compact`` (and ``keep``), each kept text column of fewer than ``COMPACT_MAX``
    distinct values is held as a ``pandas.Categorical`` (``_compacted``) from the end of its
    field on (after the cross-field checks for those they read): 1 to 4 bytes a row instead
    of an 8-byte pointer. For a caller that writes the table out: ``io.write_parquet_chunks``
    writes such a column as the text column it stands for (the same file). At three million
    records, ~0.4 GB less for the standardizing stage of ``linkage run``.

    With ``keep_arrow`` (and ``keep``), the kept raw columns held as Arrow strings stay so
    (``compact`` codes its few-valued ones all the same), for a caller that writes the table
    out: made ``str`` objects only to be turned back into Arrow strings, the raw columns of
    a million records cost ~1.5 s here and as much again written (measured).
    """
    config = config or StandardizeConfig()
    if not records.index.equals(pd.RangeIndex(len(records))):
        records = records.reset_index(drop=True)
    if keep is not None:
        keep = set(keep)
        fields = {entry.field for entry in FIELDS}
        # each column alone, so that dropping one frees it; unread pass-through ones go now
        records = column_subset(records, [c for c in records.columns if c in keep or c in fields])
    spent: dict[str, float] = {}
    done: dict[str, pd.DataFrame] = {}
    flags = _FlagJoin(records.index)
    birth_flags: pd.Series | None = None
    with worker_process(parallel and len(records) >= PARALLEL_MIN_DISTINCT):
        # Each field's share for the worker is sent one field ahead: the worker works on it
        # while this process maps the field before back to its rows (no field's parsing
        # reads another's result; only what ``run`` does after it does).
        batch = batch or BatchFacts()
        if batch.id_verdict is None and schema.ID_NUMBER in records.columns:
            # judged before the worker takes its half of the IDs: both read them alike
            t = time.perf_counter()
            verdict = idnumber.column_verdict(_distinct(_column(records, schema.ID_NUMBER)))
            batch = dataclasses.replace(batch, id_verdict=verdict)
            spent["id_number"] = time.perf_counter() - t
        upcoming = _field_values(records, FIELDS[0].field, batch, distinct_rows)
        send_ahead(upcoming, FIELDS[0].parser(config, batch))
        try:
            for position, entry in enumerate(FIELDS):
                t = time.perf_counter()
                values = upcoming
                if position + 1 < len(FIELDS):
                    following = FIELDS[position + 1]
                    upcoming = _field_values(records, following.field, batch, distinct_rows)
                    send_ahead(upcoming, following.parser(config, batch))
                frame = entry.run(values, config, done, batch)
                del values
                part = frame.pop(schema.QUALITY_FLAGS)
                flags.add(part)
                if entry.field == schema.BIRTH_DATE:
                    birth_flags = part
                del part
                if keep is not None:
                    wanted = [c for c in frame.columns if c in keep or c in _READ_LATER]
                    if len(wanted) < frame.shape[1]:
                        frame = column_subset(frame, wanted)
                    if compact:  # those later fields and checks read: after them
                        frame = _compacted(
                            frame, [c for c in frame.columns if c in keep and c not in _READ_LATER]
                        )
                    if entry.field in records.columns and entry.field not in keep:
                        del records[entry.field]  # held alone: freed here
                done[entry.field] = frame
                spent[entry.timing] = spent.get(entry.timing, 0.0) + time.perf_counter() - t
                if step is not None:
                    step(len(records))
        finally:
            drop_ahead()  # a field that raised: the ones sent after it never come
        del upcoming  # the last field's raw values, freed here when not kept

    # Cross-field checks: the ID embeds birth date and gender; a disagreement means one of
    # the two was mistyped, which the comparison stage must weigh.
    birth = done[schema.BIRTH_DATE][schema.BIRTH_DATE_STD]
    ids = done[schema.ID_NUMBER]
    id_birth = ids[schema.ID_BIRTH_DATE]
    registered = done[schema.REGISTERED_AT][schema.REGISTERED_AT_STD]
    back, earlier = _previous_century(birth, birth_flags, registered, id_birth)
    if back.any():
        birth = birth.where(~back, earlier)
        done[schema.BIRTH_DATE] = done[schema.BIRTH_DATE].assign(**{schema.BIRTH_DATE_STD: birth})
    flags.add(_flag_part(back, "birth_date_previous_century", records.index))
    # only an ID whose digits are trusted (id_std set) can conflict: a float-damaged one's
    # made-up digits are no evidence against the recorded date
    birth_conflict = (
        birth.notna() & id_birth.notna() & ids[schema.ID_STD].notna() & (birth != id_birth)
    )
    not_own = idnumber.not_own_ids(birth, id_birth)
    both_dates = birth.notna() & registered.notna()
    after_registered = both_dates & (birth.where(both_dates, "") > registered.where(both_dates, ""))
    id_gender = ids[schema.ID_GENDER]
    gender_std = done[schema.GENDER][schema.GENDER_STD]
    gender_conflict = gender_std.notna() & id_gender.notna() & (gender_std != id_gender)
    # a relative's ID (a spouse's on a civil-affairs file) contradicts gender and birth date
    not_own |= idnumber.contradicted_ids(
        birth, id_birth, (gender_conflict & birth_conflict).to_numpy(dtype=bool)
    )
    flags.add(_flag_part(birth_conflict, "id_birth_conflict", records.index))
    flags.add(_flag_part(gender_conflict, "id_gender_conflict", records.index))
    flags.add(_flag_part(not_own, "id_not_own", records.index))
    flags.add(_flag_part(after_registered, "birth_date_after_registered", records.index))

    if keep is not None and compact:
        # a kept raw column held as Arrow strings stays so, but for those of few values
        # (coded below): for a caller that writes the table out (``io.write_parquet_chunks``
        # with ``text_codes`` writes either as text), as for the codes
        held = [c for c in records.columns if _arrow_text(records[c])]
        records = _as_objects(records, [c for c in held if _few_valued(records[c])])
    elif keep is None or not keep_arrow:
        records = _as_objects(records)
    if keep is not None and compact:
        # the kept columns later fields and the checks above read, now done with (the
        # others were coded as their field ended), and the raw columns kept (the sources)
        later = [c for c in _READ_LATER if c in keep]
        done = {field: _compacted(frame, later) for field, frame in done.items()}
        records = _compacted(records, [c for c in records.columns if c in keep])
    if keep is None:
        derived = pd.concat(list(done.values()), axis=1)
        out = pd.concat([records, derived], axis=1)
    else:
        # column by column, each shared (a concat copies every column under pandas 2)
        columns = {c: records[c] for c in records.columns}
        for frame in done.values():
            columns.update({c: frame[c] for c in frame.columns if c in keep})
        out = pd.DataFrame(columns, index=records.index, copy=False)
        del columns
    del done
    out[schema.QUALITY_FLAGS] = flags.series()
    if keep is not None and compact and schema.QUALITY_FLAGS in keep:
        coded = _compact_column(out[schema.QUALITY_FLAGS])
        if coded is not None:
            out[schema.QUALITY_FLAGS] = coded
    out.insert(0, schema.ROW, np.arange(len(out), dtype=np.int64))
    if keep is not None:
        out = column_subset(out, [c for c in out.columns if c in keep])
    logger.info(
        "standardized %d records: %s",
        len(out),
        ", ".join(f"{k} {v:.1f}s" for k, v in spent.items()),
    )
    if timings is not None:
        timings.update(spent)
    return out


def standardize_record(
    record: Mapping[str, Any],
    config: StandardizeConfig | None = None,
    flags: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Standardize ONE record (a dict of canonical fields) into a one-row table, fast.

    Walks the same ``FIELDS`` with the same options as :func:`standardize`, but only the
    fields the record has: on one row, pandas costs milliseconds per field module, and an
    absent field's derived columns would all be null (comparisons read absent columns as
    null). No ``rid`` or ``quality_flags`` column is added; when ``flags`` is a dict it
    receives each given field's quality-flag codes (``|``-joined, as :func:`all_flags`
    names them), for search to report unreadable values.
    """
    config = config or StandardizeConfig()
    done: dict[str, pd.DataFrame] = {}
    for entry in FIELDS:
        value = record.get(entry.field)
        if value is None or value == "":
            continue
        frame = entry.run(pd.Series([value], dtype=object), config, done, BatchFacts())
        if flags is not None:
            codes = str(frame[schema.QUALITY_FLAGS].iloc[0] or "")
            if codes:
                flags[entry.field] = codes
        done[entry.field] = frame.drop(columns=[schema.QUALITY_FLAGS])
    parts = [pd.DataFrame({k: [v] for k, v in record.items()})] + list(done.values())
    return pd.concat([p.reset_index(drop=True) for p in parts], axis=1)


def standardize_record_values(
    record: Mapping[str, Any],
    config: StandardizeConfig | None = None,
    flags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`standardize_record` as a dict (column -> value), without frames.

    The same ``FIELDS`` with the same options, each field's one-value standardizer running
    the function its column standardizer runs per distinct value: the record's own keys
    first, then each given field's derived columns (missing text None; ``id_valid`` and
    ``id_from_15`` True, False or ``pd.NA``). For the lookup service, where the frames cost
    ~10 ms a query; equality with :func:`standardize_record` is tested.
    """
    config = config or StandardizeConfig()
    done: dict[str, dict] = {}
    for entry in FIELDS:
        value = record.get(entry.field)
        if value is None or value == "":
            continue
        derived = entry.one(value, config, done)
        codes = derived.pop(schema.QUALITY_FLAGS, "")
        if flags is not None and codes:
            flags[entry.field] = str(codes)
        done[entry.field] = derived
    out = dict(record)
    for derived in done.values():
        out.update(derived)
    return out


# columns of nullable booleans in a standardized record (``standardize_record`` gives them
# dtype ``boolean``)
_BOOLEAN_COLUMNS = (schema.ID_VALID, schema.ID_FROM_15)


def record_frame(values: Mapping[str, Any]) -> pd.DataFrame:
    """A one-row table of :func:`standardize_record_values`' dict: text and nulls as dtype
    object, booleans ``bool``, ``id_valid`` / ``id_from_15`` nullable ``boolean``. Stacked
    on stored records (object text) it gives the table :func:`standardize_record` gives."""
    return pd.DataFrame(
        {
            k: pd.array([v], dtype="boolean")
            if k in _BOOLEAN_COLUMNS
            else np.array([v], dtype=bool if isinstance(v, (bool, np.bool_)) else object)
            for k, v in values.items()
        }
    )
