"""Golden records: one record per identity by survivorship rules, with provenance and conflicts.

Pure function over the standardized records and their identity labels; imports schema,
its settings from config and the filler list of the standardize stage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import DEFAULT_FIELDS, FieldRule, GoldenSettings  # noqa: F401 - re-exported
from linkage.standardize._fillers import FILLER_TEXTS, is_filler_text
from linkage.tables import packed_lexsort, shared_text, sorted_unique

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
    import pyarrow.compute as pc

    out = np.zeros(len(values), dtype=bool)
    try:
        text = pa.array(values, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: every value in Python
        settled = np.zeros(len(values), dtype=bool)
    else:
        found = pc.match_substring_regex(text, _NOT_FILLER_HAN).fill_null(False)
        settled = found.to_numpy(zero_copy_only=False)
    rest = np.flatnonzero(~settled)
    out[rest] = [is_filler_text(v) for v in values[rest]]
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
    values: np.ndarray,
    arrow: object | None,
    rows: np.ndarray,
    owners: np.ndarray,
    n_owners: int,
) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """A golden column: ``values[rows[i]]`` for owner ``owners[i]`` (each owner once), null
    for owners without a row; the same column an object array of those values gives when
    assigned to a frame. ``arrow`` is ``values``' Arrow form (``_arrow_text``) when the
    caller has it for several columns, else None.

    With pandas 3 that assignment converts every cell to Arrow in Python (pandas'
    ``ensure_string_array``, ~0.05 s per 170,000 cells, 27 golden columns); taking the
    rows in Arrow is one C pass. A column whose picked values are all null keeps the
    object path: pandas infers object, not ``str``, for it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if arrow is None:
        picked, at = _arrow_text(values[rows]), np.arange(len(rows), dtype=np.int64)
    else:
        picked, at = arrow, rows
    if picked is None or not len(rows) or picked.null_count == len(picked):
        out = np.full(n_owners, None, dtype=object)
        out[owners] = values[rows]
        return out
    take = np.zeros(n_owners, dtype=np.int64)
    take[owners] = at
    missing = np.ones(n_owners, dtype=bool)
    missing[owners] = False
    column = pc.take(picked, pa.array(take, mask=missing))
    if column.null_count == len(column):  # every picked value null (object, as above)
        out = np.full(n_owners, None, dtype=object)
        out[owners] = values[rows]
        return out
    return pd.array(column, dtype=_TEXT_DTYPE)


def merge_records(
    records: pd.DataFrame, identities: pd.Series, settings: GoldenSettings | None = None
) -> pd.DataFrame:
    """Return one golden record per identity with ``<field>_source``/``<field>_record_id`` provenance."""
    settings = settings or GoldenSettings()
    n = len(records)
    if isinstance(identities.dtype, pd.StringDtype):
        # Arrow text factorized as it is (the same codes and names, in order of first
        # appearance): its objects would be one new str per record (~75 MB at a million)
        ident_codes, ident_names = pd.factorize(identities)
    else:
        ident_codes, ident_names = pd.factorize(pd.Series(identities.to_numpy(), dtype=object))
    n_ident = len(ident_names)
    sources = records[schema.SOURCE].astype(str)
    record_ids = records[schema.RECORD_ID].astype(str)
    # Integer keys once; every sort below is an integer lexsort, not a string sort per field.
    src_rank = _source_rank(sources, settings.source_priority)
    key_rank = _key_rank(sources + "\x1f" + record_ids)
    del record_ids  # its Arrow copy is not needed past the key ranks
    recent = records.get(schema.REGISTERED_AT_STD)
    recent_rank = _dense_rank(recent) if recent is not None else np.full(n, -1, np.int64)
    src_np, rid_np = _text_objects(records[schema.SOURCE]), _text_objects(records[schema.RECORD_ID])
    # Arrow forms once, for the provenance columns of every field (None: built from objects)
    src_arrow, rid_arrow = _arrow_text(src_np), _arrow_text(rid_np)

    golden = pd.DataFrame({schema.IDENTITY_ID: np.asarray(ident_names, dtype=object)})
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

    conflict_parts: list[np.ndarray] = []

    def one_field(field: str, rule: FieldRule) -> None:
        # a function, so that its arrays and strings are freed when it returns: a
        # loop kept the last field's (~50 MB at 300,000 records) while the next was built
        values = records[rule.column]
        value_codes, value_names = pd.factorize(pd.Series(values.to_numpy(), dtype=object))
        # raw columns (addresses) may hold fillers such as 不详: never a golden value
        filler = np.append(_filler_mask(np.asarray(value_names, dtype=object)), False)
        present = (value_codes >= 0) & ~filler[value_codes]
        if rule.column == schema.ID_STD and schema.ID_VALID in records:
            valid = records[schema.ID_VALID].eq(True).to_numpy(dtype=bool, na_value=False)
        else:
            valid = np.ones(n, dtype=bool)
        rows = np.flatnonzero(present)
        shown = values
        held = np.ones(len(rows), dtype=bool)
        if rule.raw is not None and rule.raw in records.columns:
            # one object per distinct shown value: golden records keep references to them
            shown = pd.Series(_stripped_text(records[rule.raw]), index=records.index, dtype=object)
            held = shown.to_numpy(dtype=object)[rows] == values.to_numpy(dtype=object)[rows]
        ic, vc = ident_codes[rows], value_codes[rows].astype(np.int64)
        pair_key = ic.astype(np.int64) * (len(value_names) + 1) + vc
        freq = _group_counts(pair_key)
        v_ok, s_rank, r_rank, k_rank = (
            valid[rows],
            src_rank[rows],
            recent_rank[rows],
            key_rank[rows],
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
        chosen_rows = rows[order[first]]
        chosen_ident = sorted_ident[first]
        shown_np = shown.to_numpy(dtype=object)
        golden[field] = _picked(shown_np, None, chosen_rows, chosen_ident, n_ident)
        golden[f"{field}_source"] = _picked(src_np, src_arrow, chosen_rows, chosen_ident, n_ident)
        golden[f"{field}_record_id"] = _picked(
            rid_np, rid_arrow, chosen_rows, chosen_ident, n_ident
        )
        if field in CONFLICT_FIELDS:
            pool = v_ok if rule.rule == "valid_id" else np.ones(len(rows), dtype=bool)
            distinct = sorted_unique(pair_key[pool])
            owners = distinct // (len(value_names) + 1)
            n_distinct = np.bincount(owners, minlength=n_ident)
            text = np.full(n_ident, "", dtype=object)
            several = np.flatnonzero(n_distinct > 1)
            if len(several):
                keep = np.isin(owners, several)
                frame = pd.DataFrame(
                    {
                        "owner": owners[keep],
                        "value": np.asarray(value_names, dtype=object)[
                            distinct[keep] % (len(value_names) + 1)
                        ],
                    }
                )
                joined = frame.groupby("owner")["value"].agg(
                    lambda v: "|".join(sorted(map(str, v)))
                )
                text[joined.index.to_numpy()] = (f"{field}=" + joined).to_numpy()
            conflict_parts.append(text)

    for field, rule in settings.fields.items():
        if rule.column in records.columns:
            one_field(field, rule)
    conflicts = np.full(n_ident, "", dtype=object)
    for part in conflict_parts:
        both = (conflicts != "") & (part != "")
        conflicts = np.where(both, conflicts + "; " + part, conflicts + part)
    golden["conflicts"] = conflicts
    return golden
