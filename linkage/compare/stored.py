"""One query record against stored records whose side of each comparison was prepared once.

A lookup compares one record with a few dozen stored candidates. ``prepare`` over the query
stacked on its candidates costs per call, not per row (measured at 20,000 identities: the
same ~1.4 ms a search for 1 row as for 30), so the stored side is prepared once, over every
stored record, by the batch's own ``prepare``; a search then computes the query's codes
alone, by a scalar path per comparison type, in the stored records' code spaces, and the
levels come from the comparison's unchanged ``_levels``. Comparison types without a scalar
path here are compared as before (``compare_values``). Imports ``compare``'s modules and the
scalar helpers they use (``standardize.idnumber``, ``zh.syllables``); never the store.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare.address import (
    _REGION_ROW,
    AddressComparison,
    ContactComparison,
    _first_and_count,
    _numbers_key,
    detail_codes,
)
from linkage.compare.base import (
    NULL_CODE,
    Comparison,
    Prepared,
    column,
    factorize,
    factorize_joint,
    map_uniques,
)
from linkage.compare.fields import (
    _GENDER_ROW,
    _YEAR_ROW,
    BirthDateComparison,
    ExactComparison,
    IdComparison,
    PhoneComparison,
    _date_tables,
    check_holds,
    fifteenth_digit,
    given_syllables,
    id_birth_year,
)
from linkage.compare.name import (
    _CHAR_WIDTH,
    _DOT,
    _LATIN_RE,
    _WILD_RE,
    KIND_HAN,
    KIND_MINORITY,
    KIND_OTHER,
    NEVER_EXACT_FLAGS,
    VOID_FLAGS,
    NameComparison,
    _clean_tables,
    _nospace_codes,
    _without_rare,
    minority_parts_key,
    shortened,
)
from linkage.standardize import idnumber as std_id
from linkage.zh.estate import core_detail, named_part
from linkage.zh.syllables import fuzzy_pinyin

logger = logging.getLogger(__name__)

# Codes reserved at the end of every stored code space for the keys of one query that no
# stored record holds (a query has a few per space: two names and their forms); a query
# needing more grows the tables by as many again.
_SLOTS = 16


def _key(value: Any) -> Any:
    """The value as ``factorize`` codes it: None for null or blank, else the value."""
    if value is None or (type(value) is not str and pd.isna(value)):
        return None
    return value if str(value).strip() else None


class _KeyIndex:
    """Code of a key in one stored code space, found by the key's 64-bit ``hash``.

    Written here rather than a dict: a million Python keys in a dict cost ~100 bytes each per
    worker, the sorted hashes 12. Two distinct keys share a 64-bit hash with probability
    2**-64 (CPython's SipHash of text), so a query key is taken for a stored one it is not
    about once in 10**13 lookups at a million keys; nothing else is approximate.
    """

    def __init__(self, uniques: Sequence[Any]):
        hashes = np.fromiter((hash(u) for u in uniques), dtype=np.int64, count=len(uniques))
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.codes = order.astype(np.int32)
        self.size = len(uniques)

    def find(self, key: Any) -> int:
        """The stored code of ``key``, -1 when no stored record holds it."""
        h = hash(key)
        i = int(np.searchsorted(self.hashes, h))
        if i < self.size and self.hashes[i] == h:
            return int(self.codes[i])
        return -1


class _Space:
    """One stored code space, its per-code tables (each with ``_SLOTS`` spare entries at the
    end) and the codes a query's unseen keys take for the length of one search."""

    def __init__(self, uniques: Sequence[Any], tables: Mapping[str, np.ndarray] | None = None):
        self.index = _KeyIndex(uniques)
        self.tables: dict[str, np.ndarray] = {}
        for name, table in (tables or {}).items():
            spare = np.zeros((_SLOTS, *table.shape[1:]), dtype=table.dtype)
            self.tables[name] = np.concatenate([table, spare])
        self.fresh: dict[Any, int] = {}
        self.capacity = self.index.size + _SLOTS

    def code(self, key: Any, fill: Callable[[Any], Mapping[str, Any]] | None = None) -> int:
        """The query key's code: the stored one, else a spare code whose table entries
        ``fill(key)`` gives (each key once a search). -1 for a null key."""
        if key is None:
            return NULL_CODE
        found = self.index.find(key)
        if found >= 0:
            return found
        if key not in self.fresh:
            code = self.index.size + len(self.fresh)
            if code == self.capacity:  # more new keys than spare codes: grow (rare)
                for name, table in self.tables.items():
                    spare = np.zeros((_SLOTS, *table.shape[1:]), dtype=table.dtype)
                    self.tables[name] = np.concatenate([table, spare])
                self.capacity += _SLOTS
            self.fresh[key] = code
            for name, value in (fill(key) if fill else {}).items():
                self.tables[name][code] = value
        return self.fresh[key]

    def reset(self) -> None:
        """Free the spare codes for the next search."""
        self.fresh.clear()


class StoredSide:
    """A comparison's stored side: ``prepare`` over every stored record, once, and a scalar
    path giving one query record's prepared row in the same code spaces.

    :meth:`levels` returns one int8 level per stored row given, equal to ``compare_values``
    over the query stacked on those rows (tested on generated queries and stores). A search
    writes its new keys' table entries into the spare codes: one search at a time per side
    (the lookup service searches under its lock, as its one DuckDB connection needs).
    """

    def __init__(self, comparison: Comparison, values: Mapping[str, np.ndarray]):
        self.comparison = comparison
        self.spaces: dict[str, _Space] = {}
        self.prepared = self._prepare(values)

    def _prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        raise NotImplementedError

    def _query(self, q: Mapping[str, Any]) -> Prepared:
        raise NotImplementedError

    @classmethod
    def can_drop(cls, comparison: Comparison, columns: frozenset[str]) -> bool:
        """Whether :meth:`without` can read ``columns`` as null without preparing again."""
        return False

    def without(self, columns: frozenset[str]) -> StoredSide:
        """This side with ``columns`` of every stored record read as null, sharing the rest
        (only where :meth:`can_drop` says so)."""
        raise NotImplementedError

    def levels(self, query: Mapping[str, Any], rows: np.ndarray) -> np.ndarray:
        """Levels of the query (column -> value; absent reads as null) against the stored
        records at positions ``rows`` (their order in the values prepared)."""
        try:
            one = self._query(query)
            n = len(rows)
            left = one.take(np.zeros(n, dtype=np.intp))
            right = self.prepared.take(np.asarray(rows, dtype=np.intp))
            return np.asarray(self.comparison._levels(left, right), dtype=np.int8)
        finally:
            for space in self.spaces.values():
                space.reset()


class NullSide(StoredSide):
    """The stored side of a comparison whose every record column is read as null (a field a
    department may not see at all): each level is null, so nothing is prepared or held."""

    def __init__(self, comparison: Comparison):
        self.comparison = comparison
        self.spaces = {}
        self.prepared = Prepared({})

    def levels(self, query: Mapping[str, Any], rows: np.ndarray) -> np.ndarray:
        """-1 (null) for every stored row given."""
        return np.full(len(rows), -1, dtype=np.int8)


def _one(value: Any, dtype: Any = None) -> np.ndarray:
    out = np.empty(1, dtype=object if dtype is None else dtype)
    out[0] = value
    return out


# ----------------------------------------------------------------------------- exact, phone


class _ExactSide(StoredSide):
    comparison: ExactComparison

    def _prepare(self, values):
        c = self.comparison
        main = column(values, c.column)
        if c.fallback:
            _, uniques = factorize_joint([main, column(values, c.fallback, len(main))])
        else:
            _, uniques = factorize(main)
        self.spaces["v"] = _Space(uniques)
        return c.prepare(values)

    def _query(self, q):
        c = self.comparison
        key = _key(q.get(c.column))
        if key is None and c.fallback:
            key = _key(q.get(c.fallback))
        return Prepared({"v": np.array([self.spaces["v"].code(key)], dtype=np.int32)})


def _phone_prepare(side: StoredSide, phone: PhoneComparison, values, prefix: str = "") -> Prepared:
    _, uniques = factorize(column(values, phone.column))
    tails = np.array([str(u)[-8:] if len(str(u)) >= 8 else None for u in uniques], dtype=object)
    _, tail_u = factorize(tails)
    side.spaces[prefix + "v"] = _Space(uniques)
    side.spaces[prefix + "tail"] = _Space(tail_u)
    return phone.prepare(values)


def _phone_query(side: StoredSide, phone: PhoneComparison, q, prefix: str = "") -> Prepared:
    key = _key(q.get(phone.column))
    tail = None
    if key is not None:
        text = str(key)
        tail = _key(text[-8:] if len(text) >= 8 else None)
    v = side.spaces[prefix + "v"].code(key)
    t = side.spaces[prefix + "tail"].code(tail) if key is not None else NULL_CODE
    return Prepared({"v": np.array([v], dtype=np.int32), "tail": np.array([t], dtype=np.int32)})


class _PhoneSide(StoredSide):
    comparison: PhoneComparison

    def _prepare(self, values):
        return _phone_prepare(self, self.comparison, values)

    def _query(self, q):
        return _phone_query(self, self.comparison, q)


# ----------------------------------------------------------------------------- addresses


def _region(value: Any) -> int:
    key = _key(value)
    return int(key) if key is not None and str(key).isdigit() and len(str(key)) == 6 else -1


def _known_one(value: Any) -> bool:
    return not (value is None or (type(value) is not str and pd.isna(value))) and value != ""


def _address_tables(side: StoredSide, prefix: str) -> dict[str, np.ndarray]:
    return {**side.spaces[prefix + "detail"].tables, **side.spaces[prefix + "core"].tables}


def _address_prepare(side: StoredSide, a: AddressComparison, values, prefix: str = "") -> Prepared:
    n = len(column(values, a.field))
    prepared = a.prepare(values)
    # the same call prepare makes: codes in the records' order of first appearance
    codes = detail_codes(column(values, a._col("detail"), n))
    for key in ("detail", "core"):
        side.spaces[prefix + key] = _Space(codes[key][1], {key: prepared.tables[key]})
    side.spaces[prefix + "numbers"] = _Space(codes["numbers"][1])
    return Prepared(prepared.rows, _address_tables(side, prefix))


def _address_query(side: StoredSide, a: AddressComparison, q, prefix: str = "") -> Prepared:
    adcode = _region(q.get(a._col("adcode")))
    has = {s: _known_one(q.get(a._col(s))) for s in ("province", "city", "district")}
    detail_value = q.get(a._col("detail"))
    key = _key(detail_value)
    detail = side.spaces[prefix + "detail"].code(key, lambda k: {"detail": str(k)})
    core = numbers = NULL_CODE
    numbers_key = None
    if key is not None:
        from_estate = core_detail(str(key))
        core = side.spaces[prefix + "core"].code(named_part(from_estate), lambda k: {"core": k})
        numbers_key = _numbers_key([from_estate])[0]
        numbers = side.spaces[prefix + "numbers"].code(numbers_key)
    first, count = _first_and_count(np.array([numbers_key], dtype=object))
    present = _known_one(detail_value) or has["province"] or has["city"] or adcode >= 0
    rows = {
        "present": np.array([present], dtype=bool),
        "finest": np.array([adcode], dtype=_REGION_ROW),
        "district": np.array(
            [adcode if has["district"] and adcode % 100 else -1], dtype=_REGION_ROW
        ),
        "city": np.array(
            [adcode // 100 if has["city"] and adcode >= 0 else -1], dtype=_REGION_ROW
        ),
        "detail": np.array([detail], dtype=np.int32),
        "core": np.array([core], dtype=np.int32),
        "numbers": np.array([numbers], dtype=np.int32),
        "n_first": first,
        "n_count": count,
    }
    return Prepared(rows, _address_tables(side, prefix))


class _AddressSide(StoredSide):
    comparison: AddressComparison

    def _prepare(self, values):
        return _address_prepare(self, self.comparison, values)

    def _query(self, q):
        return _address_query(self, self.comparison, q)


class _ContactSide(StoredSide):
    comparison: ContactComparison

    def _prepare(self, values):
        c = self.comparison
        return Prepared(
            {
                "phone": _phone_prepare(self, c.phone, values, "phone_"),
                "address": _address_prepare(self, c.address, values, "address_"),
            }
        )

    def _query(self, q):
        c = self.comparison
        return Prepared(
            {
                "phone": _phone_query(self, c.phone, q, "phone_"),
                "address": _address_query(self, c.address, q, "address_"),
            }
        )


# ----------------------------------------------------------------------------- dates, IDs


class _BirthDateSide(StoredSide):
    comparison: BirthDateComparison

    def _prepare(self, values):
        c = self.comparison
        main = column(values, c.column)
        arrays = [main] + ([column(values, c.fallback, len(main))] if c.fallback else [])
        if c.fallback and not c.both_witnesses:
            arrays = [np.where(pd.isna(main), arrays[1], main)]
        _, uniques = factorize_joint(arrays)
        prepared = c.prepare(values)
        self.spaces["date"] = _Space(uniques, prepared.tables)
        return Prepared(prepared.rows, self.spaces["date"].tables)

    def _date_code(self, key: Any) -> int:
        space = self.spaces["date"]

        def fill(k: Any) -> dict[str, Any]:
            # one value through the same (memoized) tables the batch's prepare builds
            found = _date_tables(_one(k), lunar=True)
            return {name: table[0] for name, table in found.items()}

        code = space.code(key, fill)
        if code >= 0 and not space.tables["ok"][code]:
            return NULL_CODE  # an unreadable date is null, as prepare makes it
        return code

    def _query(self, q):
        c = self.comparison
        main = q.get(c.column)
        if c.fallback and not c.both_witnesses:
            fb = q.get(c.fallback)
            main_na, fb_na = bool(pd.isna(main)), bool(pd.isna(fb))
            keys = [_key(fb if main_na else main)]
            from_id = main_na and not fb_na
        else:
            keys = [_key(main)] + ([_key(q.get(c.fallback))] if c.fallback else [])
            from_id = False
        rows = {f"w{i}": np.array([self._date_code(k)], dtype=np.int32) for i, k in enumerate(keys)}
        rows["from_id"] = np.array([from_id], dtype=bool)
        return Prepared(rows, self.spaces["date"].tables)


def _id_entries(key: Any) -> dict[str, Any]:
    """IdComparison.prepare's table entries of one distinct ID."""
    u = str(key)
    text = u if len(u) == 18 and u.isascii() else ""
    return {
        "fixed": np.array([text], dtype="S18")[0],
        "head": int(text[:14]) if text and text[:14].isdigit() else -1,
        "id_gender": int(text[16]) % 2 if text and text[16].isdigit() else -1,
        "id_year": id_birth_year(text),
        "id_md": int(text[10:14]) if text and text[10:14].isdigit() else -1,
        "valid": check_holds(text),
        "d15": int(text[14]) if text and text[14].isdigit() else -1,
    }


class _IdSide(StoredSide):
    comparison: IdComparison

    def _prepare(self, values):
        c = self.comparison
        _, uniques = factorize(c.keys(values))
        prepared = c.prepare(values)
        tables = dict(prepared.tables)
        # prepare's trailing id_year entry serves its own null codes; _levels reads the
        # tables at non-null codes only, so the spare codes follow the distinct IDs directly
        tables["id_year"] = tables["id_year"][:-1]
        tables["id_md"] = tables["id_md"][:-1]
        self.spaces["id"] = _Space(uniques, tables)
        return Prepared(prepared.rows, self.spaces["id"].tables)

    def _query(self, q):
        c = self.comparison
        space = self.spaces["id"]
        ident = q.get(c.column)
        key = c.keys({c.column: _one(ident), **(
            {c.document_column: _one(q.get(c.document_column))} if c.document_column else {}
        )})[0]
        code = space.code(_key(key), _id_entries)
        from15 = q.get(c.from_15_column)
        from15 = False if from15 is None or pd.isna(from15) else bool(from15)
        year = -1
        mds = np.array([-1], dtype=np.int64)
        if c.birth_column:
            birth = _key(q.get(c.birth_column))
            if birth is not None and str(birth)[:4].isdigit():
                year = int(str(birth)[:4])
                mds = std_id.month_days([str(birth)])
        gender = -1
        if c.gender_column:
            g = q.get(c.gender_column)
            gender = 1 if isinstance(g, str) and g == "M" else 0 if g == "F" else -1
        years = np.array([year], dtype=np.int64)
        if code >= 0:
            id_year = np.array([space.tables["id_year"][code]], dtype=np.int64)
            head = int(space.tables["head"][code])
            id_md = np.array([head % 10_000 if head >= 0 else -1], dtype=np.int64)
            if std_id.years_apart(years, id_year, mds, id_md)[0]:
                code = NULL_CODE  # a guardian's ID, as prepare nulls it
        values = {col: _one(q.get(col)) for col in c.columns}
        # the raw ID decides whether a damaged one's kept digits count, as in prepare
        kept = c._damaged_heads(values, 1, _one(ident), years, mds)
        head = int(space.tables["head"][code]) if code >= 0 else int(kept[0])
        if code >= 0:
            d15 = int(space.tables["d15"][code])
        else:
            d15 = fifteenth_digit(q.get(schema.ID_NUMBER)) if kept[0] >= 0 else -1
        return Prepared(
            {
                "id": np.array([code], dtype=np.int32),
                "from15": np.array([from15], dtype=bool),
                "gender": np.array([gender], dtype=_GENDER_ROW),
                "no_birth": np.array([year < 0 if c.birth_column else False], dtype=bool),
                "year": years.astype(_YEAR_ROW),
                "md": np.asarray(mds, dtype=_YEAR_ROW),
                "kept": np.asarray(kept, dtype=np.int64),
                "head14": np.array([head], dtype=np.int64),
                "d15": np.array([d15], dtype=np.int8),
                **given_syllables(values, 1),
            },
            space.tables,
        )


# ----------------------------------------------------------------------------- names


def _strip_entries(text: str) -> dict[str, Any]:
    """The name tables' entries of one stripped form (text, length, code points; no derare
    yet)."""
    fixed = np.array([text if len(text) <= _CHAR_WIDTH else ""], dtype=f"<U{_CHAR_WIDTH}")
    return {
        "strip": text,
        "length": len(text),
        "chars": fixed.view(np.uint32).reshape(1, _CHAR_WIDTH)[0],
        "derare": NULL_CODE,
    }


def _squeezed(value: Any) -> Any:
    """A pinyin-like key as ``_nospace_codes`` keys it: without spaces; None when null."""
    if _key(value) is None:
        return None
    return _key(str(value).replace(" ", ""))


class _NameSide(StoredSide):
    comparison: NameComparison

    def _prepare(self, values):
        c = self.comparison
        fields = c.fields
        n = len(column(values, schema.QUALITY_FLAGS))
        _, raw_u = factorize_joint([column(values, f, n) for f in fields])
        _, clean_u = factorize_joint(
            [column(values, schema.name_col(f, "clean"), n) for f in fields]
        )
        tables, *_ = _clean_tables(clean_u)

        def space(suffix: str) -> list[np.ndarray]:
            return [column(values, schema.name_col(f, suffix), n) for f in fields]

        _, py_u = _nospace_codes(space("pinyin") + space("pinyin_alt"))
        fuzzy_alt = []
        for arr in space("pinyin_alt"):
            codes, uniques = factorize(arr)
            fuzzy_alt.append(map_uniques(codes, uniques, fuzzy_pinyin))
        _, fz_u = _nospace_codes(space("fuzzy") + fuzzy_alt)
        prepared = c.prepare(values)
        self.spaces["raw"] = _Space(raw_u)
        self.spaces["strip"] = _Space(
            tables["strip"],
            {k: prepared.tables[k] for k in ("length", "chars", "derare")}
            | {"strip": np.asarray(prepared.tables["strip"], dtype=object)},
        )
        self.spaces["py"] = _Space(py_u, {"pinyin": prepared.tables["pinyin"]})
        self.spaces["fz"] = _Space(fz_u)
        return Prepared(prepared.rows, self._tables())

    def _tables(self) -> dict[str, np.ndarray]:
        return {**self.spaces["strip"].tables, **self.spaces["py"].tables}

    @staticmethod
    def _field_columns(comparison: NameComparison) -> dict[str, frozenset[str]]:
        return {
            f: frozenset(
                [f] + [schema.name_col(f, x) for x in ("clean", "pinyin", "pinyin_alt", "fuzzy")]
            )
            for f in comparison.fields
        }

    @classmethod
    def can_drop(cls, comparison: Comparison, columns: frozenset[str]) -> bool:
        """Whole name fields (every column of each, e.g. the former name's), not all."""
        if not isinstance(comparison, NameComparison):
            return False
        per_field = cls._field_columns(comparison)
        dropped = [f for f, cols in per_field.items() if cols <= columns]
        covered = frozenset().union(*(per_field[f] for f in dropped)) if dropped else frozenset()
        return bool(dropped) and covered == columns and len(dropped) < len(per_field)

    def without(self, columns: frozenset[str]) -> StoredSide:
        """The same prepared names with whole fields read as null: their rows become the
        rows of a record without them (the code spaces, shared, hold a few unused keys)."""
        if not self.can_drop(self.comparison, columns):
            raise ValueError(f"cannot read {sorted(columns)} as null here")
        try:
            null = self._query({})  # every field null: no key takes a spare code
        finally:
            for space in self.spaces.values():
                space.reset()
        n = len(self.prepared.rows[self.comparison.fields[0]].rows["raw"])
        zeros = np.zeros(n, dtype=np.intp)
        rows = dict(self.prepared.rows)
        for f, cols in self._field_columns(self.comparison).items():
            if cols <= columns:
                rows[f] = null.rows[f].take(zeros)
        other = copy.copy(self)  # shares the comparison and the code spaces
        other.prepared = Prepared(rows, self.prepared.tables)
        return other

    def _strip_code(self, text: Any, as_strip: bool) -> int:
        """Code of a stripped form; ``as_strip``: it is the query's own strip form.

        Prepare's derare table has an entry at every code that is some record's strip form
        (by_strip). A stored form that is no stored record's strip (only a truncated or
        de-rared one) has none; as the query's strip it gets one, a function of its text.
        The entry is read only where a compared record's strip is that code, which after
        this search can again only be a query's, and each such query sets it anew: it may
        stay (even pointing at a spare code another search reuses).
        """
        space = self.spaces["strip"]
        code = space.code(_key(text), _strip_entries)
        if as_strip and code >= 0:
            derare = _without_rare(text)
            space.tables["derare"][code] = (
                self._strip_code(derare, False) if derare is not None else NULL_CODE
            )
        return code

    def _query(self, q):
        c = self.comparison
        flags = _key(q.get(schema.QUALITY_FLAGS))
        parts = set(str(flags).split(schema.QUALITY_SEP)) if flags is not None else set()
        rows: dict[str, Any] = {}
        for f in c.fields:
            clean = _key(q.get(schema.name_col(f, "clean")))
            if any(f"{f}_{code}" in parts for code in VOID_FLAGS):
                clean = None  # a newborn placeholder: compared as missing
            strip = trunc = order = NULL_CODE
            kind, wild = 0, False
            if clean is not None:
                text = clean.replace(_DOT, "")
                strip = self._strip_code(text, True)
                if (short := shortened(clean)) is not None:
                    trunc = self._strip_code(short, False)
                if (key := minority_parts_key(clean)) is not None:
                    order = self._strip_code(key, False)
                if _DOT in clean:
                    kind = KIND_MINORITY
                elif _LATIN_RE.search(clean):
                    kind = KIND_OTHER
                else:
                    kind = KIND_HAN
                wild = bool(_WILD_RE.search(clean))
            barred = {f"{f}_{code}" for code in NEVER_EXACT_FLAGS}
            alt = q.get(schema.name_col(f, "pinyin_alt"))
            fuzzy_alt = fuzzy_pinyin(alt) if _key(alt) is not None else None
            py, fz = self.spaces["py"], self.spaces["fz"]

            def pinyin(k):
                return {"pinyin": k}

            rows[f] = Prepared(
                {
                    "raw": np.array([self.spaces["raw"].code(_key(q.get(f)))], dtype=np.int32),
                    "strip": np.array([strip], dtype=np.int32),
                    "trunc": np.array([trunc], dtype=np.int32),
                    "parts": np.array([order], dtype=np.int32),
                    "kind": np.array([kind], dtype=np.int8),
                    "flag": np.array([wild or bool(barred & parts)], dtype=bool),
                    "py": np.array(
                        [py.code(_squeezed(q.get(schema.name_col(f, "pinyin"))), pinyin)],
                        dtype=np.int32,
                    ),
                    "alt": np.array([py.code(_squeezed(alt), pinyin)], dtype=np.int32),
                    "fz": np.array(
                        [fz.code(_squeezed(q.get(schema.name_col(f, "fuzzy"))))], dtype=np.int32
                    ),
                    "fzalt": np.array([fz.code(_squeezed(fuzzy_alt))], dtype=np.int32),
                }
            )
        return Prepared(rows, self._tables())


_SIDES: dict[type[Comparison], type[StoredSide]] = {
    ExactComparison: _ExactSide,
    PhoneComparison: _PhoneSide,
    AddressComparison: _AddressSide,
    ContactComparison: _ContactSide,
    BirthDateComparison: _BirthDateSide,
    IdComparison: _IdSide,
    NameComparison: _NameSide,
}


def side_type(comparison: Comparison) -> type[StoredSide] | None:
    """The stored-side class of a comparison type (None: no scalar query path here)."""
    return _SIDES.get(type(comparison))


def stored_side(comparison: Comparison, values: Mapping[str, np.ndarray]) -> StoredSide | None:
    """The comparison's stored side over ``values`` (column -> one entry per stored record,
    typed as the point reads type them; absent columns read as null), or None for a
    comparison type without a scalar query path here (it is compared as before)."""
    side = _SIDES.get(type(comparison))
    if side is None:
        return None
    n = len(next(iter(values.values()))) if values else 0
    columns = {
        col: values[col] if col in values else np.full(n, None, dtype=object)
        for col in comparison.columns
    }
    return side(comparison, columns)
