"""Comparisons of resident IDs, birth dates, phones and generic exact / string / date fields.

Imports the schema, the standardizers' scalar helpers and ``compare.base``; nothing downstream.
"""

from __future__ import annotations

import datetime
import logging
import re
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz.distance import JaroWinkler

from linkage import schema
from linkage.compare.base import (
    NULL_CODE,
    ColumnComparison,
    Comparison,
    Prepared,
    as_bool,
    both,
    column,
    factorize,
    factorize_joint,
    finish,
    pair_scores,
    rows_of,
    same,
)
from linkage.config import BirthDateSpec, DateSpec, ExactSpec, IdSpec, PhoneSpec
from linkage.standardize import dates as std_dates
from linkage.standardize import idnumber as std_id

logger = logging.getLogger(__name__)

_FOURTEEN_DIGITS = re.compile(r"[0-9]{14}")
# Up to this many records, a prepare step loops in Python rather than over Series (a
# lookup's candidates; the batch's tables take the vectorized path).
_SMALL_INPUT = 512
_NO_DAY = np.iinfo(np.int64).min  # sentinel day number: never equal to a real one
# dtypes of the ID comparison's per-record rows (``IdComparison.prepare``, and a lookup's
# one-record side in ``compare.stored``): a birth year or MMDD (-1 unknown), a gender sign
# (1, 0, -1) and the given-name syllable codes (31-bit, -1 none)
_YEAR_ROW, _GENDER_ROW, _SYLLABLE_ROW = np.int16, np.int8, np.int32
# A record with no recorded birth date cannot show that its ID is someone else's; a pair can:
# one person never holds two IDs a generation apart, so when the older ID sits on the record
# without a birth date it is taken for a guardian's (DOMAIN.md: children's health records are
# registered under a parent's) and neither the ID nor its date is evidence. 15 years: the
# youngest parent-child gap the registries record.
GUARDIAN_GAP_YEARS = 15


def _years_apart_per_distinct(
    ya: np.ndarray, yb: np.ndarray, mda: np.ndarray, mdb: np.ndarray
) -> np.ndarray:
    """``std_id.years_apart(ya, yb, mda, mdb)`` computed once per distinct combination of
    the four values (years and ``MMDD`` from -1 to 9999, as the ID and date parts give
    them) and taken per record: the same booleans, without the function's dozen per-record
    int64 temporaries (~2 GB at twenty million records in the ID comparison's preparing).
    Values outside that range go to the function per record."""
    arrays = [np.asarray(a, dtype=np.int64) for a in (ya, yb, mda, mdb)]
    if not len(arrays[0]) or any(a.min() < -1 or a.max() > 9999 for a in arrays):
        return std_id.years_apart(ya, yb, mda, mdb)
    key = np.zeros(len(arrays[0]), dtype=np.int64)
    for a in arrays:  # 14 bits a value (0..10000 once shifted by one): 56 bits in all
        key <<= 14
        key |= a + 1
    del arrays
    codes, distinct = pd.factorize(key)
    del key
    distinct = np.asarray(distinct, dtype=np.int64)
    parts = [(distinct >> shift) % (1 << 14) - 1 for shift in (42, 28, 14, 0)]
    return std_id.years_apart(*parts)[codes]


def _birth_of_id(
    year: np.ndarray, md: np.ndarray, id_year: np.ndarray, id_md: np.ndarray
) -> np.ndarray:
    """Whether a record's birth date is the one its ID embeds: the same year, or the same
    month and day (``MMDD``) with a year one digit or one swap of neighbouring digits away
    (1983-08-23 recorded on ID 19840823). Siblings' years may be one digit apart too, but not
    on the same day; -1 is unknown."""
    year, id_year = np.asarray(year, dtype=np.int64), np.asarray(id_year, dtype=np.int64)
    known = (year >= 0) & (id_year >= 0)
    one_typo = (std_id.year_digits_differing(year, id_year) == 1) | std_id.year_digits_swapped(
        year, id_year
    )
    typo = one_typo & (np.asarray(md) == np.asarray(id_md)) & (np.asarray(id_md) >= 0)
    return known & ((year == id_year) | typo)


class IdComparison(Comparison):
    """Resident ID numbers (``id_std``; null when either side has none or it is unusable).

    ``exact`` identical 18-character IDs; ``same_person_15_18`` identical only after one side
    was upgraded from a legacy 15-digit number — just below exact because the 15-digit era
    issued some duplicate numbers (重号) that were only told apart at the 18-digit upgrade;
    ``near_miss`` one character substituted or two adjacent ones swapped (the checksum catches
    these, so one side is invalid); ``prefix_tail_lost`` one side's ID lost its last digits
    through a float or Excel (``4.40106199001011e+17``, ``...310000``: ``id_std`` null, flag
    ``id_float_damaged``) and the region code and birth date it kept (its first 14 digits)
    agree with the other's, and so does its 15th digit where the raw ID kept one (DOMAIN.md:
    Excel keeps 15 significant digits; twins' IDs share the first 14), or an ID ending in
    ``000`` whose check holds (1 in 11 cut IDs) shares the other's first 15; ``birth_region``
    same region code and birth date but a different sequence where one of the two fails its
    MOD 11-2 check (two typos; two valid numbers that differ are two people, twins or
    neighbours born the same day, and fall to ``else``); ``else`` (also a damaged ID whose
    first 14 digits differ). Two IDs that differ beyond the typo levels where one fails its
    check compare as null: that ID is known to be mistyped, so its disagreement says little.

    A record's ID is not its own when its recorded birth year is years away from the year the
    ID embeds (not a one-digit typo): a guardian's ID on a child's health record (DOMAIN.md:
    children without an ID card are registered under a parent's). Such an ID is no evidence
    either way (null): random pairs never share an ID, so u cannot see that a household does,
    and an identical ID would outweigh a different name and birth date, while the child's own
    ID elsewhere would count as disagreement. An identical ID is also no evidence when the two
    records' genders differ and one contradicts the gender the ID encodes (a guardian's ID on
    a child's undated record), unless both records carry the birth date the ID embeds (its
    year, or its month and day with the year one typo away: 1983-08-23 on ID ...19840823...):
    then a gender was mis-entered, and the ID still counts.
    """

    type_name = "id"
    levels = list(IdSpec.LEVELS)
    few_rows_columns = (schema.ID_NUMBER,)  # the raw ID: read where an ID was damaged

    def __init__(
        self,
        name: str = "id",
        column: str = schema.ID_STD,
        from_15_column: str = schema.ID_FROM_15,
        birth_column: str | None = schema.BIRTH_DATE_STD,
        gender_column: str | None = schema.GENDER_STD,
        region_column: str | None = schema.ID_REGION_CODE,
        id_birth_column: str | None = schema.ID_BIRTH_DATE,
        document_column: str | None = schema.ID_DOC,
    ):
        self.name = name
        self.column = column
        self.from_15_column = from_15_column
        self.birth_column = birth_column
        self.gender_column = gender_column
        self.region_column = region_column
        self.id_birth_column = id_birth_column
        self.document_column = document_column

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {
            "column": self.column,
            "from_15_column": self.from_15_column,
            "birth_column": self.birth_column,
            "gender_column": self.gender_column,
            "region_column": self.region_column,
            "id_birth_column": self.id_birth_column,
            "document_column": self.document_column,
        }

    @property
    def columns(self) -> list[str]:
        """The standardized ID, its legacy-upgrade flag, the recorded birth date and gender,
        and the region code and birth date kept from a damaged ID."""
        extra = [
            c
            for c in (
                self.birth_column, self.gender_column, self.region_column, self.id_birth_column,
                self.document_column,
            )
            if c
        ]  # fmt: skip
        # the raw ID: a damaged one's 15th digit (Excel keeps 15 significant digits)
        raw = [schema.ID_NUMBER] if self.region_column and self.id_birth_column else []
        return [self.column, self.from_15_column, *extra, *raw, *GIVEN_SYLLABLE_COLUMNS]

    def keys(self, values: Mapping[str, np.ndarray], n: int | None = None) -> np.ndarray:
        """Per record the value compared: the standardized ID, else ``#`` and the other
        document's number (``document_column``), else null. A document's key is never 18
        characters, so no ID level but exact applies to it: two different numbers (a renewed
        passport) or a number against a resident ID compare as null."""
        ids = column(values, self.column, n)
        if not self.document_column:
            return ids
        docs = column(values, self.document_column, len(ids))
        use = pd.isna(ids) & ~pd.isna(docs)
        if not use.any():
            return ids
        out = np.asarray(ids, dtype=object).copy()
        out[use] = ["#" + d for d in docs[use]]
        return out

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """ID codes per record; fixed-width bytes and region+birth-date keys per distinct ID."""
        ids = self.keys(values)
        codes, uniques = factorize(ids)
        text = [str(u) if len(str(u)) == 18 and str(u).isascii() else "" for u in uniques]
        fixed = np.array(text, dtype="S18")
        del text
        head = fixed_head(fixed)
        from15 = as_bool(column(values, self.from_15_column, len(ids)))
        # year of the recorded birth date per record, and the year the ID embeds per distinct ID
        years = np.full(len(ids), -1, dtype=np.int64)
        mds = np.full(len(ids), -1, dtype=np.int64)  # month and day, MMDD
        if self.birth_column:
            births = column(values, self.birth_column, len(ids))
            bcodes, buniq = factorize(births)
            by = np.array([int(str(u)[:4]) if str(u)[:4].isdigit() else -1 for u in buniq] + [-1])
            years = by[bcodes]
            mds = np.append(std_id.month_days([str(u) for u in buniq]), -1)[bcodes]
        # gender: 1 male, 0 female, -1 unknown; the ID's from its 17th digit's parity
        genders = np.full(len(ids), -1, dtype=np.int64)
        if self.gender_column:
            g = column(values, self.gender_column, len(ids))
            genders = np.where(g == "M", 1, np.where(g == "F", 0, -1)).astype(np.int64)
        id_year = np.append(id_birth_years(fixed), -1)
        id_md = np.append(np.where(head >= 0, head % 10_000, -1), -1)
        borrowed = _years_apart_per_distinct(years, id_year[codes], mds, id_md[codes])
        borrowed &= codes >= 0
        codes = np.where(borrowed, NULL_CODE, codes).astype(codes.dtype)
        digit17 = fixed_digit(fixed, 16).astype(np.int64)
        id_gender = np.where(digit17 >= 0, digit17 % 2, -1)
        del digit17
        # the MOD 11-2 check holds (ISO 7064): two such IDs that differ are two numbers
        # issued, never one typed wrong (a single wrong digit or swap always breaks it)
        valid = _checks_hold(fixed)
        no_birth = (years < 0) if self.birth_column else np.zeros(len(ids), dtype=bool)
        kept = self._damaged_heads(values, len(ids), ids, years, mds)
        # the 15th digit (first of the sequence): of the ID, or kept by a damaged one
        d15_of = fixed_digit(fixed, 14)
        d15 = np.append(d15_of, -1)[codes]
        damaged = np.flatnonzero(kept >= 0)
        if len(damaged):
            d15[damaged] = [fifteenth_digit(v) for v in rows_of(values, schema.ID_NUMBER, damaged)]
        n = len(ids)
        rows = {
            "id": codes,
            "d15": d15.astype(np.int8),
            "from15": from15,
            # narrow per-record rows (a year, MMDD, a sign): 19 bytes a record fewer,
            # held by the run and its comparing worker; only compared, or widened first
            # (_birth_of_id)
            "gender": genders.astype(_GENDER_ROW),
            "no_birth": no_birth,
            "year": years.astype(_YEAR_ROW),
            "md": mds.astype(_YEAR_ROW),
            "kept": kept,
            "head14": np.where(codes >= 0, np.append(head, -1)[codes], kept),
        }
        # the wide per-record scratch freed before the given names' tables are made (~0.8
        # GB of this comparison's peak at twenty million records)
        del d15, genders, years, mds, ids, uniques
        return Prepared(
            {**rows, **given_syllables(values, n)},
            {
                "fixed": fixed,
                "head": head,
                "id_gender": id_gender,
                "id_year": id_year,
                "id_md": id_md,
                "valid": valid,
                "d15": d15_of,
            },
        )

    def _damaged_heads(
        self,
        values: Mapping[str, np.ndarray],
        n: int,
        ids: np.ndarray,
        years: np.ndarray,
        mds: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per record without a usable ID: the first 14 digits (region code + birth date) its
        damaged ID kept, as an integer; -1 elsewhere, and where that ID is someone else's
        (``years`` and ``mds``: each record's birth year and MMDD, -1 unknown)."""
        out = np.full(n, -1, dtype=np.int64)
        if not (self.region_column and self.id_birth_column):
            return out
        if n <= _SMALL_INPUT:
            return self._damaged_heads_small(values, n, ids, years, mds)
        region = pd.Series(column(values, self.region_column, n), dtype=object)
        birth = pd.Series(column(values, self.id_birth_column, n), dtype=object)
        has = pd.isna(pd.Series(ids, dtype=object)).to_numpy() & region.notna().to_numpy()
        has &= birth.notna().to_numpy()
        if not has.any():
            return out
        text = region[has].astype(str) + birth[has].astype(str).str.replace("-", "", regex=False)
        digits = text.str.fullmatch(r"[0-9]{14}").to_numpy(dtype=bool)
        heads = np.full(len(text), -1, dtype=np.int64)
        heads[digits] = text[digits].astype(np.int64).to_numpy()
        head_year = np.where(heads >= 0, heads // 10_000 % 10_000, -1)
        head_md = np.where(heads >= 0, heads % 10_000, -1)
        md = None if mds is None else mds[has]
        # a guardian's, as for id_std
        heads[std_id.years_apart(years[has], head_year, md, head_md)] = -1
        out[np.flatnonzero(has)] = heads
        return out


    def _damaged_heads_small(
        self,
        values: Mapping[str, np.ndarray],
        n: int,
        ids: np.ndarray,
        years: np.ndarray,
        mds: np.ndarray | None = None,
    ) -> np.ndarray:
        """:meth:`_damaged_heads` by a loop (a lookup's few dozen records, where Series
        methods cost ~1 ms): the same text (region code then birth date without dashes), the
        same 14-digit test and the same guardian check."""
        region = column(values, self.region_column, n)
        birth = column(values, self.id_birth_column, n)
        out = np.full(n, -1, dtype=np.int64)
        rows = [
            i
            for i in range(n)
            if pd.isna(ids[i]) and not pd.isna(region[i]) and not pd.isna(birth[i])
        ]
        if not rows:
            return out
        heads = np.full(len(rows), -1, dtype=np.int64)
        for j, i in enumerate(rows):
            text = str(region[i]) + str(birth[i]).replace("-", "")
            if _FOURTEEN_DIGITS.fullmatch(text):
                heads[j] = int(text)
        head_year = np.where(heads >= 0, heads // 10_000 % 10_000, -1)
        head_md = np.where(heads >= 0, heads % 10_000, -1)
        md = None if mds is None else np.asarray(mds)[rows]
        # a guardian's, as for id_std
        heads[std_id.years_apart(years[rows], head_year, md, head_md)] = -1
        out[rows] = heads
        return out

    EXACT, FROM_15, NEAR, PREFIX, BIRTH_REGION = 5, 4, 3, 2, 1

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        a, b = left.rows["id"], right.rows["id"]
        present = both(a, b)
        lvl = np.zeros(len(a), dtype=np.int8)
        equal = same(a, b)
        lvl[equal] = self.EXACT
        lvl[equal & (left.rows["from15"] != right.rows["from15"])] = self.FROM_15
        eq = np.flatnonzero(equal)
        if len(eq):
            id_g = left.tables["id_gender"][a[eq]]
            ga, gb = left.rows["gender"][eq], right.rows["gender"][eq]
            known = (ga >= 0) & (gb >= 0) & (id_g >= 0)
            # ... unless both records carry the ID's birth date (its year, or the month and
            # day with the year one typo away): then one gender was mis-entered (a guardian's
            # ID on a dated record is already null, above)
            id_y, id_md = left.tables["id_year"][a[eq]], left.tables["id_md"][a[eq]]
            own = _birth_of_id(left.rows["year"][eq], left.rows["md"][eq], id_y, id_md) & (
                _birth_of_id(right.rows["year"][eq], right.rows["md"][eq], id_y, id_md)
            )
            present[eq[known & (ga != gb) & ((ga != id_g) | (gb != id_g)) & ~own]] = False
        differ = np.flatnonzero(present & ~equal)
        if len(differ):
            id_year = left.tables["id_year"]
            guardian = guardian_id_pairs(
                id_year[a[differ]], id_year[b[differ]],
                left.rows["no_birth"][differ], right.rows["no_birth"][differ],
            )
            # a guardian's ID sits on the child's record, under the child's name: with names
            # that share no given-name syllable the undated record is the guardian's own
            guardian &= ~names_unrelated(left, right, differ)
            present[differ[guardian]] = False
        rest = np.flatnonzero(present & ~equal)
        if len(rest):
            fixed, head = left.tables["fixed"], left.tables["head"]
            ra, rb = a[rest], b[rest]
            fa, fb = fixed[ra], fixed[rb].copy()
            # An upgraded 15-digit number's check character is computed, not typed: a typo in
            # it changes two characters, so such pairs are judged on the first 17 only.
            legacy = left.rows["from15"][rest] | right.rows["from15"][rest]
            fb[legacy] = _with_check(fb[legacy], fa[legacy])
            near = std_id.id_near_miss_array(fa, fb) > 0
            # same region and birth date, another sequence: a typo only when a check fails;
            # two valid numbers are two people (twins, neighbours born the same day)
            valid = left.tables["valid"]
            typo = ~(valid[ra] & valid[rb]) | legacy
            region_day = (head[ra] == head[rb]) & (head[ra] >= 0) & typo
            lvl[rest] = np.where(near, self.NEAR, np.where(region_day, self.BIRTH_REGION, 0))
            # an ID ending in 000 may be one Excel cut to 15 significant digits whose
            # check happens to hold (1 in 11): it kept the other's first 15 characters
            cut = (np.char.endswith(fa, b"000") | np.char.endswith(fb, b"000")) & (
                fa.astype("S15") == fb.astype("S15")
            )
            lvl[rest[(lvl[rest] == 0) & cut & (fa != b"") & (fb != b"")]] = self.PREFIX
            # an ID failing its check is known to be mistyped somewhere: beyond the typo
            # levels its disagreement is no evidence either way (null), as a missing ID
            present[rest[(lvl[rest] == 0) & ~(valid[ra] & valid[rb])]] = False
        # a damaged ID against any ID: its kept first 14 digits agree or not
        ha, hb = left.rows["head14"], right.rows["head14"]
        damaged = np.flatnonzero(
            ~present & (ha >= 0) & (hb >= 0) & ((left.rows["kept"] >= 0) | (right.rows["kept"] >= 0))
        )
        if len(damaged):
            ya, yb = ha[damaged] // 10_000 % 10_000, hb[damaged] // 10_000 % 10_000
            guardian = guardian_id_pairs(
                ya, yb, left.rows["no_birth"][damaged], right.rows["no_birth"][damaged]
            )
            guardian &= ~names_unrelated(left, right, damaged)
            damaged = damaged[~guardian]
            present[damaged] = True
            da, db = left.rows["d15"][damaged], right.rows["d15"][damaged]
            agree = (ha[damaged] == hb[damaged]) & ((da < 0) | (db < 0) | (da == db))
            lvl[damaged] = np.where(agree, self.PREFIX, 0)
        return finish(lvl, present)


_SCIENTIFIC = re.compile(r"(\d)\.(\d+)[eE]\+?17")
_ZEROED = re.compile(r"(\d{15})\d{3}")


def fifteenth_digit(raw: Any) -> int:
    """The 15th digit a damaged ID kept (``4.40106199001011e+17`` or ``...011000``: Excel
    and floats keep 15 significant digits), -1 when it did not keep one."""
    if raw is None or (isinstance(raw, float) and raw != raw):
        return -1
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    match = _SCIENTIFIC.fullmatch(text)
    if match is not None:
        digits = match.group(1) + match.group(2)
        return int(digits[14]) if len(digits) >= 15 else -1
    match = _ZEROED.fullmatch(text)
    return int(match.group(1)[14]) if match is not None else -1


_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_CHECK_CHARS = np.frombuffer(b"10X98765432", dtype=np.uint8)


def _checks_hold(fixed: np.ndarray) -> np.ndarray:
    """:func:`check_holds` over fixed-width IDs (dtype S18; b"" for none), vectorized: a
    Python call per distinct ID cost ~4 s at a million records. A block of IDs at a time:
    their digits as int64 are 136 bytes an ID (2.8 GB at twenty million distinct IDs)."""
    out = np.zeros(len(fixed), dtype=bool)
    if len(fixed) == 0:
        return out
    chars = np.ascontiguousarray(fixed, dtype="S18").view(np.uint8).reshape(len(fixed), 18)
    for start in range(0, len(fixed), _IDS_AT_ONCE):
        block = chars[start : start + _IDS_AT_ONCE]
        digits = block[:, :17].astype(np.int64) - ord("0")
        ok = ((digits >= 0) & (digits <= 9)).all(axis=1)
        expected = _CHECK_CHARS[(digits * _WEIGHTS).sum(axis=1) % 11]
        out[start : start + len(block)] = ok & (block[:, 17] == expected)
    return out


# Fixed-width IDs turned into int64 digits at a time (``_checks_hold``, ``fixed_head``)
_IDS_AT_ONCE = 1 << 20


def fixed_digit(fixed: np.ndarray, at: int) -> np.ndarray:
    """The digit at position ``at`` of fixed-width IDs (dtype S18) as int8, -1 where none."""
    if len(fixed) == 0:
        return np.zeros(0, dtype=np.int8)
    chars = np.ascontiguousarray(fixed, dtype="S18").view(np.uint8).reshape(len(fixed), 18)
    digit = chars[:, at].astype(np.int16) - ord("0")
    return np.where((digit >= 0) & (digit <= 9), digit, -1).astype(np.int8)


def fixed_head(fixed: np.ndarray) -> np.ndarray:
    """The first 14 characters (region code and birth date) of fixed-width IDs (dtype S18)
    as int64 where they are 14 ASCII digits, -1 elsewhere: ``int(t[:14]) if
    t[:14].isdigit()`` per ID, in numpy (a Python int per distinct ID was ~0.8 GB at
    twenty million IDs)."""
    out = np.full(len(fixed), -1, dtype=np.int64)
    if len(fixed) == 0:
        return out
    chars = np.ascontiguousarray(fixed, dtype="S18").view(np.uint8).reshape(len(fixed), 18)
    for start in range(0, len(fixed), _IDS_AT_ONCE):  # a block at a time: int64 digits
        digits = chars[start : start + _IDS_AT_ONCE, :14] - np.uint8(ord("0"))  # wraps past 9
        ok = (digits <= 9).all(axis=1)
        value = digits.astype(np.int64) @ (10 ** np.arange(13, -1, -1, dtype=np.int64))
        out[start : start + len(digits)] = np.where(ok, value, -1)
    return out


def check_holds(text: str) -> bool:
    """Whether an 18-character ID's last character is the MOD 11-2 check of its first 17."""
    return len(text) == 18 and text[:17].isdigit() and std_id.id_check_char(text[:17]) == text[17]


_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def id_birth_years(fixed: np.ndarray) -> np.ndarray:
    """The birth year fixed-width IDs (dtype S18) embed, -1 where their birth-date digits are
    no date from 1900 on: a typo there (18901213, 20001138) says nothing of the holder's
    generation, so the guardian tests must not read one. Vectorized (one per distinct ID)."""
    if len(fixed) == 0:
        return np.zeros(0, dtype=np.int64)
    chars = np.ascontiguousarray(fixed, dtype="S18").view(np.uint8).reshape(len(fixed), 18)
    digits = chars[:, 6:14].astype(np.int64) - ord("0")
    ok = ((digits >= 0) & (digits <= 9)).all(axis=1)
    year = digits[:, :4] @ np.array([1000, 100, 10, 1])
    month = digits[:, 4] * 10 + digits[:, 5]
    day = digits[:, 6] * 10 + digits[:, 7]
    ok &= (year >= 1900) & (month >= 1) & (month <= 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    last = _MONTH_DAYS[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok &= (day >= 1) & (day <= last)
    return np.where(ok, year, -1)


def id_birth_year(text: str) -> int:
    """:func:`id_birth_years` of one ID text (-1 unless 18 ASCII characters)."""
    if not (text and len(text) == 18 and text.isascii()):
        return -1
    return int(id_birth_years(np.array([text], dtype="S18"))[0])


# The given name's fuzzy-pinyin syllables (up to three), for the guardian-ID test: the name's
# fuzzy key without its surname's syllables, former names besides.
GIVEN_SYLLABLE_COLUMNS: tuple[str, ...] = tuple(
    schema.name_col(f, s)
    for f in (schema.NAME, schema.FORMER_NAME)
    for s in ("fuzzy", "surname_fuzzy")
) + (schema.QUALITY_FLAGS,)
_SYLLABLES = 3


def _syllable_codes(fuzzy: Any, surname: Any, void: bool) -> list[int]:
    """Stable codes (CRC-32, so a stored side and a query agree) of a given name's fuzzy
    syllables; [] when unknown or a placeholder name."""
    if void or not isinstance(fuzzy, str) or not fuzzy:
        return []
    parts = fuzzy.split()
    head = surname.split() if isinstance(surname, str) else []
    if head and parts[: len(head)] == head:
        parts = parts[len(head):]
    return [zlib.crc32(p.encode()) & 0x7FFFFFFF for p in parts[:_SYLLABLES]]


def given_syllables(values: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Per record, ``g0``..``g5``: codes of the current then former given name's fuzzy
    syllables (-1 none) and ``gk`` whether any is known. Per distinct (key, surname) pair."""
    flags = column(values, schema.QUALITY_FLAGS, n)
    # per distinct flags text (a few hundred), not per record
    flag_codes, flag_values = pd.factorize(flags)
    void = np.array(
        ["name_newborn" in f if isinstance(f, str) else False for f in flag_values] + [False],
        dtype=bool,
    )[flag_codes]
    # 31-bit codes (crc32 & 0x7FFFFFFF): int32 holds them, half the bytes of int64
    out = np.full((n, 2 * _SYLLABLES), -1, dtype=_SYLLABLE_ROW)
    crc: dict[str, int] = {}  # one code per distinct syllable
    for j, field_name in enumerate((schema.NAME, schema.FORMER_NAME)):
        fuzzy = column(values, schema.name_col(field_name, "fuzzy"), n)
        surname = column(values, schema.name_col(field_name, "surname_fuzzy"), n)
        # each column factorized on its own (one hash table of n values at a time, not of
        # the two joined: ~1 GB of this function's peak at twenty million records), then
        # one integer key per record for the (name, surname, placeholder) triple
        name_codes, name_uniques = factorize(fuzzy)
        del fuzzy
        head_codes, head_uniques = factorize(surname)
        del surname
        width = len(head_uniques) + 1
        key = ((name_codes.astype(np.int64) + 1) * width + head_codes + 1) * 2 + void
        del name_codes, head_codes
        pair_codes, pair_keys = pd.factorize(key)
        del key
        # the triples decoded in numpy; _syllable_codes's steps inlined in the loop below
        # (a call and a row assignment per triple were most of this function's time)
        packed = np.asarray(pair_keys, dtype=np.int64)
        pair, voids = packed // 2, (packed % 2).astype(bool)
        names = np.append(np.asarray(name_uniques, dtype=object), None)[pair // width - 1]
        heads = np.append(np.asarray(head_uniques, dtype=object), None)[pair % width - 1]
        names, heads = names.tolist(), heads.tolist()
        at_row: list[int] = []
        at_col: list[int] = []
        found: list[int] = []
        for k, name in enumerate(names):
            if voids[k] or not isinstance(name, str) or not name:
                continue
            parts = name.split()
            head = heads[k]
            head = head.split() if isinstance(head, str) else []
            if head and parts[: len(head)] == head:
                parts = parts[len(head) :]
            for c, p in enumerate(parts[:_SYLLABLES]):
                code = crc.get(p)
                if code is None:
                    code = crc[p] = zlib.crc32(p.encode()) & 0x7FFFFFFF
                at_row.append(k)
                at_col.append(c)
                found.append(code)
        table = np.full((len(packed), _SYLLABLES), -1, dtype=_SYLLABLE_ROW)
        table[at_row, at_col] = found
        for c in range(_SYLLABLES):  # a column at a time: no (n, 6) temporary
            out[:, j * _SYLLABLES + c] = table[:, c][pair_codes]
    rows = {f"g{i}": out[:, i] for i in range(2 * _SYLLABLES)}
    rows["gk"] = (out >= 0).any(axis=1)
    return rows


def names_unrelated(left: Prepared, right: Prepared, idx: np.ndarray) -> np.ndarray:
    """At ``idx``: both records' given names known and sharing no fuzzy syllable (current or
    former names): not one person's records under any typo, homophone or dialect fold."""
    if "gk" not in left.rows:
        return np.zeros(len(idx), dtype=bool)
    known = left.rows["gk"][idx] & right.rows["gk"][idx]
    shared = np.zeros(len(idx), dtype=bool)
    for i in range(2 * _SYLLABLES):
        ga = left.rows[f"g{i}"][idx]
        for j in range(2 * _SYLLABLES):
            shared |= (ga >= 0) & (ga == right.rows[f"g{j}"][idx])
    return known & ~shared


def guardian_id_pairs(
    year_a: np.ndarray, year_b: np.ndarray, no_birth_a: np.ndarray, no_birth_b: np.ndarray
) -> np.ndarray:
    """Pairs whose older birth year (from an ID) sits on a record without a recorded birth date
    and is at least ``GUARDIAN_GAP_YEARS`` before the other's: a guardian's ID on a child's
    record, so no evidence either way. Years < 0 are unknown and never match."""
    known = (year_a >= 0) & (year_b >= 0)
    return known & (
        (no_birth_a & (year_a <= year_b - GUARDIAN_GAP_YEARS))
        | (no_birth_b & (year_b <= year_a - GUARDIAN_GAP_YEARS))
    )


def _with_check(ids: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """Fixed-width IDs with the check character taken from ``donor``."""
    out = np.ascontiguousarray(ids).copy()
    out.view(np.uint8).reshape(len(out), 18)[:, 17] = (
        np.ascontiguousarray(donor).view(np.uint8).reshape(len(donor), 18)[:, 17]
    )
    return out


# A lookup compares a few dozen records: their distinct dates' tables are kept per process
# (at most _DATE_MEMO_SIZE entries), as parsing and the lunar conversion cost ~1.5 ms a
# search. Only small inputs use it, so batch runs compute as before.
_DATE_MEMO: dict[tuple[Any, bool], dict[str, Any]] = {}
_DATE_MEMO_SIZE = 100_000
_DATE_MEMO_INPUTS = 64


def _date_tables(uniques: np.ndarray, lunar: bool) -> dict[str, np.ndarray]:
    """Day number, year, month, day (and lunar readings) per distinct ISO date string."""
    if not 0 < len(uniques) <= _DATE_MEMO_INPUTS:
        return _date_tables_of(uniques, lunar)
    missing = list(dict.fromkeys(u for u in uniques if (u, lunar) not in _DATE_MEMO))
    if missing:
        if len(_DATE_MEMO) + len(missing) > _DATE_MEMO_SIZE:
            _DATE_MEMO.clear()
        # a valid ISO date is read by datetime alone (pandas' parse costs ~1 ms a call);
        # anything else goes through _date_tables_of
        rest = []
        for u in missing:
            entry = _iso_date_entry(u, lunar)
            if entry is None:
                rest.append(u)
            else:
                _DATE_MEMO[(u, lunar)] = entry
        missing = rest
    if missing:
        found = _date_tables_of(np.array(missing, dtype=object), lunar)
        for i, u in enumerate(missing):
            # each entry computed element-wise by _date_tables_of: equal to a fresh call
            _DATE_MEMO[(u, lunar)] = {k: v[i] for k, v in found.items()}
    rows = [_DATE_MEMO[(u, lunar)] for u in uniques]
    return {
        k: np.array([r[k] for r in rows], dtype=bool if k == "ok" else np.int64) for k in rows[0]
    }


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EPOCH = datetime.date(1970, 1, 1)


def _iso_date_entry(value: object, lunar: bool) -> dict[str, Any] | None:
    """One value's :func:`_date_tables_of` entry when it is a valid ``YYYY-MM-DD`` date (the
    same day number, parts and lunar readings), else None (left to pandas' parse)."""
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return None
    if not 1678 <= int(value[:4]) <= 2261:
        # outside pandas 2's nanosecond range (1677-09-21 to 2262-04-11) its parse gives NaT
        # and pandas 3's a date: left to pandas, so both paths agree under either
        return None
    try:
        date = datetime.date(int(value[:4]), int(value[5:7]), int(value[8:]))
    except ValueError:
        return None
    entry: dict[str, Any] = {
        "ok": True,
        "day": (date - _EPOCH).days,
        "y": date.year,
        "m": date.month,
        "d": date.day,
    }
    if lunar:
        for key, leap in (("lunar", False), ("lunar_leap", True)):
            solar = std_dates.lunar_to_solar(date, leap)
            entry[key] = _NO_DAY if solar is None else (solar - _EPOCH).days
    return entry


def _date_tables_of(uniques: np.ndarray, lunar: bool) -> dict[str, np.ndarray]:
    """:func:`_date_tables` computed for every value (no memo)."""
    parsed = pd.to_datetime(pd.Series(uniques, dtype=object), format="%Y-%m-%d", errors="coerce")
    ok = parsed.notna().to_numpy()
    day = np.full(len(uniques), _NO_DAY, dtype=np.int64)
    day[ok] = parsed[ok].to_numpy().astype("datetime64[D]").astype(np.int64)
    out = {
        "ok": ok,
        "day": day,
        "y": parsed.dt.year.fillna(-1).to_numpy(np.int64),
        "m": parsed.dt.month.fillna(-1).to_numpy(np.int64),
        "d": parsed.dt.day.fillna(-1).to_numpy(np.int64),
    }
    if lunar:
        # The recorded date may be the lunar birthday read as solar: convert it exactly, as a
        # plain and a leap-month reading (one table of lunar months, not a call per date)
        rows = np.flatnonzero(ok)
        for key, leap in (("lunar", False), ("lunar_leap", True)):
            conv = np.full(len(uniques), _NO_DAY, dtype=np.int64)
            days, exists = std_dates.lunar_to_solar_days(
                out["y"][rows], out["m"][rows], out["d"][rows], leap
            )
            conv[rows[exists]] = days[exists]
            out[key] = conv
    return out


def _year_digit_typo(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Years one apart or differing in exactly one digit (1985 / 1995), also in a two-digit
    year read into another century (``92`` typed ``02``: 1992 / 2002)."""
    differing = np.zeros(len(ya), dtype=np.int64)
    for power in (1, 10, 100, 1000):
        differing += (ya // power) % 10 != (yb // power) % 10
    short = (ya // 10) % 10 != (yb // 10) % 10
    short &= (ya % 10 == yb % 10) & (ya // 100 != yb // 100)
    return (np.abs(ya - yb) == 1) | (differing == 1) | short


class BirthDateComparison(Comparison):
    """Birth dates, the recorded one and the one embedded in the ID, best over both witnesses.

    ``exact``; ``day_month_swap``; ``lunar`` one side is the other's lunar birthday read as a
    solar date; ``year_typo`` same month and day, year one apart or one digit wrong;
    ``same_year``; ``else``. Null when neither date is known on a side.
    """

    type_name = "birth_date"
    levels = list(BirthDateSpec.LEVELS)

    def __init__(
        self,
        name: str = "birth_date",
        column: str = schema.BIRTH_DATE_STD,
        fallback: str | None = schema.ID_BIRTH_DATE,
        both_witnesses: bool = False,
    ):
        self.name = name
        self.column = column
        self.fallback = fallback
        self.both_witnesses = both_witnesses

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {
            "column": self.column,
            "fallback": self.fallback,
            "both_witnesses": self.both_witnesses,
        }

    @property
    def columns(self) -> list[str]:
        """The standardized birth date and (optionally) the ID's birth date."""
        return [self.column] + ([self.fallback] if self.fallback else [])

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Codes of the recorded and ID dates in one space; calendar parts per distinct date."""
        main = column(values, self.column)
        arrays = [main] + ([column(values, self.fallback, len(main))] if self.fallback else [])
        if self.fallback and not self.both_witnesses:
            # The recorded date alone, the ID's date only where none was recorded: taking the
            # best of both would repeat the ID comparison's evidence (an identical ID always
            # embeds an identical date) and hide typed-date errors such as lunar birthdays.
            fb = arrays[1]
            from_id = pd.isna(main) & ~pd.isna(fb)
            arrays = [np.where(pd.isna(main), fb, main)]
        else:
            from_id = np.zeros(len(main), dtype=bool)
        codes, uniques = factorize_joint(arrays)
        tables = _date_tables(uniques, lunar=True)
        bad = np.append(~tables["ok"], False)
        codes = [np.where(bad[c], NULL_CODE, c).astype(np.int32) for c in codes]
        rows = {f"w{i}": c for i, c in enumerate(codes)}
        return Prepared({**rows, "from_id": np.asarray(from_id, dtype=bool)}, tables)

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        keys = [k for k in left.rows if k != "from_id"]
        n = len(left.rows[keys[0]])
        best = np.full(n, -1, dtype=np.int8)
        t = left.tables
        for ka in keys:
            for kb in keys:
                a, b = left.rows[ka], right.rows[kb]
                usable = both(a, b)
                # the ID's date usually repeats the recorded one: only a differing one adds
                if ka != keys[0]:
                    usable &= a != left.rows[keys[0]]
                if kb != keys[0]:
                    usable &= b != right.rows[keys[0]]
                idx = np.flatnonzero(usable)
                if len(idx) == 0:
                    continue
                ca, cb = a[idx], b[idx]
                ya, yb, ma, mb, da, db = (
                    t["y"][ca],
                    t["y"][cb],
                    t["m"][ca],
                    t["m"][cb],
                    t["d"][ca],
                    t["d"][cb],
                )
                day_a, day_b = t["day"][ca], t["day"][cb]
                lunar = (
                    (t["lunar"][ca] == day_b)
                    | (t["lunar"][cb] == day_a)
                    | (t["lunar_leap"][ca] == day_b)
                    | (t["lunar_leap"][cb] == day_a)
                )
                same_md = (ma == mb) & (da == db)
                lv = np.select(
                    [
                        ca == cb,
                        (ya == yb) & (ma == db) & (da == mb) & (ma != da),
                        lunar,
                        same_md & _year_digit_typo(ya, yb),
                        ya == yb,
                    ],
                    [5, 4, 3, 2, 1],
                    default=0,
                ).astype(np.int8)
                best[idx] = np.maximum(best[idx], lv)
        # the date taken from a guardian's ID is the guardian's (see IdComparison)
        a0, b0 = left.rows[keys[0]], right.rows[keys[0]]
        fa, fb = left.rows["from_id"], right.rows["from_id"]
        idx = np.flatnonzero((fa | fb) & both(a0, b0) & (best == 0))
        if len(idx):
            guardian = guardian_id_pairs(t["y"][a0[idx]], t["y"][b0[idx]], fa[idx], fb[idx])
            best[idx[guardian]] = -1
        return best


class ExactComparison(Comparison):
    """Exact agreement on one column (gender, ethnicity, any FEBRL-style field)."""

    type_name = "exact"
    levels = list(ExactSpec.LEVELS)

    def __init__(self, name: str, column: str | None = None, fallback: str | None = None):
        self.name = name
        self.column = column or name
        self.fallback = fallback

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {"column": self.column, "fallback": self.fallback}

    @property
    def columns(self) -> list[str]:
        """The compared column and its optional fallback (used where the column is null)."""
        return [self.column] + ([self.fallback] if self.fallback else [])

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Codes per record: the column, or the fallback where the column is null."""
        main = column(values, self.column)
        if not self.fallback:
            return Prepared({"v": factorize(main)[0]})
        (cm, cf), _ = factorize_joint([main, column(values, self.fallback, len(main))])
        return Prepared({"v": np.where(cm >= 0, cm, cf)})

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        a, b = left.rows["v"], right.rows["v"]
        return finish((a == b).astype(np.int8), both(a, b))


class StringComparison(ColumnComparison):
    """Generic string agreement: exact, then Jaro-Winkler at or above each threshold, else."""

    type_name = "string"

    def __init__(
        self, name: str, column: str | None = None, thresholds: Sequence[float] = (0.92, 0.8)
    ):
        ts = sorted({float(t) for t in thresholds})
        if not ts or not all(0.0 < t <= 1.0 for t in ts):
            raise ValueError(f"thresholds must be numbers in (0, 1], got {list(thresholds)!r}")
        self.name = name
        self.column = column or name
        self.thresholds = ts[::-1]
        self.levels = ["else"] + [f"jaro_winkler_{t:g}" for t in ts] + ["exact"]

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {**super().params(), "thresholds": list(self.thresholds)}

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Codes per record and the distinct strings."""
        codes, uniques = factorize(column(values, self.column))
        return Prepared(
            {"v": codes}, {"strings": np.array([str(u) for u in uniques], dtype=object)}
        )

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        a, b = left.rows["v"], right.rows["v"]
        present = both(a, b)
        top = len(self.levels) - 1
        lvl = np.where(a == b, top, 0).astype(np.int8)
        rest = np.flatnonzero(present & (a != b))
        if len(rest):
            score = pair_scores(
                a[rest], b[rest], left.tables["strings"], JaroWinkler.normalized_similarity
            )
            sub = np.zeros(len(rest), dtype=np.int8)
            for t in sorted(self.thresholds):  # ascending: higher thresholds overwrite
                sub[score >= t - 1e-6] = self.levels.index(f"jaro_winkler_{t:g}")
            lvl[rest] = sub
        return finish(lvl, present)


_DATE_RE = re.compile(r"^\s*(\d{4})\D?(\d{1,2})\D?(\d{1,2})")


def _generic_date(value: object) -> tuple[int, int, int] | None:
    match = _DATE_RE.match(str(value))
    if not match:
        return None
    y, m, d = (int(g) for g in match.groups())
    try:
        datetime.date(y, m, d)
    except ValueError:
        return None
    return y, m, d


class DateComparison(ColumnComparison):
    """Generic dates (``YYYY-MM-DD``, ``YYYYMMDD``, ``YYYY/M/D``): exact, day/month swap, one
    digit of ``YYYYMMDD`` wrong, same year, else; unparseable values count as null."""

    type_name = "date"
    levels = list(DateSpec.LEVELS)

    def __init__(self, name: str, column: str | None = None):
        self.name = name
        self.column = column or name

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Codes per record and year/month/day/digits per distinct date."""
        codes, uniques = factorize(column(values, self.column))
        parts = [_generic_date(u) for u in uniques]
        ymd = np.array([p or (-1, -1, -1) for p in parts], dtype=np.int64).reshape(-1, 3)
        ok = np.array([p is not None for p in parts] + [False])
        codes = np.where(ok[codes], codes, NULL_CODE).astype(np.int32)
        key = ymd[:, 0] * 10000 + ymd[:, 1] * 100 + ymd[:, 2]
        digits = np.stack([(key // 10**p) % 10 for p in range(7, -1, -1)], axis=1)
        return Prepared({"v": codes}, {"ymd": ymd, "key": key, "digits": digits})

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        a, b = left.rows["v"], right.rows["v"]
        present = both(a, b)
        t = left.tables
        ymd, key, digits = t["ymd"], t["key"], t["digits"]
        ya, ma, da = ymd[a].T
        yb, mb, db = ymd[b].T
        one_digit = (digits[a] != digits[b]).sum(axis=1) == 1
        lvl = np.select(
            [
                key[a] == key[b],
                (ya == yb) & (ma == db) & (da == mb),
                one_digit,
                ya == yb,
            ],
            [4, 3, 2, 1],
            default=0,
        )
        return finish(lvl, present)


class PhoneComparison(ColumnComparison):
    """Standardized phones: ``exact``, ``last8`` (same last eight digits: a landline with and
    without its area code, a mistyped prefix), ``else``."""

    type_name = "phone"
    levels = list(PhoneSpec.LEVELS)

    def __init__(self, name: str = "phone", column: str = schema.PHONE_STD):
        self.name = name
        self.column = column

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Codes of the full number and of its last eight digits."""
        codes, uniques = factorize(column(values, self.column))
        tails = np.array([str(u)[-8:] if len(str(u)) >= 8 else None for u in uniques], dtype=object)
        tail_of, _ = factorize(tails)
        return Prepared({"v": codes, "tail": np.append(tail_of, NULL_CODE).astype(np.int32)[codes]})

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        a, b = left.rows["v"], right.rows["v"]
        lvl = np.where(a == b, 2, np.where(same(left.rows["tail"], right.rows["tail"]), 1, 0))
        return finish(lvl, both(a, b))
