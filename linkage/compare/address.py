"""Address comparison (hukou or current) and the household-contact comparison.

Imports the schema, the address standardizer's ``address_numbers`` and ``compare.base`` only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import fuzz

from linkage import schema
from linkage.compare.base import (
    Comparison,
    Prepared,
    both,
    column,
    factorize,
    pair_scores,
    recode,
    same,
)
from linkage.compare.fields import PhoneComparison
from linkage.config import AddressSpec, ContactSpec
from linkage.zh.estate import core_detail, named_part

logger = logging.getLogger(__name__)

_NO_NUMBERS = "\x00"  # key of a detail without numbers (a blank key would read as null)
_REGION_ROW = np.int32  # dtype of the per-record region rows (finest, district, city)


def _region_int(codes: np.ndarray, uniques: np.ndarray) -> np.ndarray:
    """Six-digit adcodes as int32 per record (``_REGION_ROW``: six digits fit, a record's
    three region rows at half the bytes of int64), -1 where missing or malformed."""
    table = np.array(
        [int(u) if str(u).isdigit() and len(str(u)) == 6 else -1 for u in uniques] + [-1],
        dtype=_REGION_ROW,
    )
    return table[codes]


def _known(values: np.ndarray) -> np.ndarray:
    """True where a value is present (not null, not an empty string)."""
    return ~np.asarray(pd.isna(values), dtype=bool) & (values != "")


_NUMBER_RUNS = re.compile(r"\d+")


def _numbers_key(details: np.ndarray) -> np.ndarray:
    """House/building/room numbers of already normalized details, as one key per detail.

    Same result as ``address_numbers`` (a test pins that); it skips re-normalizing text the
    standardizer already normalized, which made it 20x slower at 300,000 distinct details.
    """
    keys = [
        "-".join(m.lstrip("0") or "0" for m in _NUMBER_RUNS.findall(d)) or _NO_NUMBERS
        for d in details
    ]
    return np.array(keys, dtype=object)


def _first_and_count_rows(numbers: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows ``n_first`` and ``n_count`` per record from the numbers codes and keys."""
    codes, uniques = numbers
    first, count = _first_and_count(np.append(np.asarray(uniques, dtype=object), None))
    return {"n_first": first[codes], "n_count": count[codes]}


def detail_codes(details: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per record, codes and distinct values of its address detail (``detail``); of the names
    in the detail from its estate on (``core``: ``zh.estate.core_detail`` then
    ``named_part``, null when only numbers remain), since a road and door number one side
    writes and the other drops (丰潭路405号西竹府13幢6单元701室 / 西竹府13-6-701) are no
    disagreement; and of the house/building/room numbers from the estate on (``numbers``).
    Codes number the values in the order they first appear (null -1)."""
    whole, whole_u = factorize(details)
    cores = [core_detail(str(u)) for u in whole_u]
    core_of, core_u = factorize(np.array([named_part(c) for c in cores], dtype=object))
    core = recode(whole, core_of)
    numbers, numbers_u = factorize(np.append(_numbers_key(cores), None)[whole])
    return {
        "detail": (whole, whole_u),
        "core": (core, core_u),
        "numbers": (numbers, numbers_u),
    }


def _first_and_count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per numbers key (``85-514``): its first number and how many numbers it holds (-1, 0
    without numbers or key). Values, not codes: a stored side and a query compute the same."""
    first, count = [], []
    for key in keys:
        parts = [] if key is None or key == _NO_NUMBERS else str(key).split("-")
        first.append(int(parts[0][:15]) if parts else -1)
        count.append(len(parts))
    # the first number may have 15 digits (int64); a count of numbers fits int32 (int16
    # would not: nothing bounds an address's length)
    return np.array(first, dtype=np.int64), np.array(count, dtype=np.int32)


_UNIT_AFTER = frozenset("号栋幢座楼单元室房弄巷组社")


def _cut_after(text: str, k: int) -> str:
    """``text`` up to its ``k``-th number and the unit character after it (``号``, ``栋``)."""
    for i, m in enumerate(_NUMBER_RUNS.finditer(text)):
        if i == k - 1:
            end = m.end() + (1 if text[m.end() : m.end() + 1] in _UNIT_AFTER else 0)
            return text[:end]
    return text


@lru_cache(maxsize=1 << 18)
def _detail_parts(detail: str) -> tuple[str, tuple[str, ...], int]:
    """A detail's part from the estate on, that part's numbers (leading zeros dropped) and
    how many numbers the whole detail holds; cached, as one detail meets many others."""
    core = core_detail(detail)
    numbers = tuple(x.lstrip("0") for x in _NUMBER_RUNS.findall(core))
    return core, numbers, len(_NUMBER_RUNS.findall(detail))


def _flat_on_one_side(da: str, db: str) -> float:
    """Similarity (0-100) of two details one of which stops at a building the other goes on
    from (常平镇新村社区振安路85号 / 常平新村振安路85号D栋514): its numbers from the estate
    on are the first numbers of the other's, and the other, cut after them, is compared
    whole and from the estate on; 0 when the numbers do not nest."""
    (ca, na, wa), (cb, nb, wb) = _detail_parts(da), _detail_parts(db)
    if len(na) > len(nb):
        da, db, ca, cb, na, nb, wa, wb = db, da, cb, ca, nb, na, wb, wa
    k = len(na)
    if not k or k == len(nb) or nb[:k] != na:
        return 0.0
    # the whole detail holds the road's door number as well: cut after as many numbers
    extra = wb - len(nb)
    return max(
        fuzz.ratio(ca, _cut_after(cb, k)),
        fuzz.ratio(da, _cut_after(db, k + extra)) if extra >= 0 else 0.0,
    )


class AddressComparison(Comparison):
    """One address field: ``same_detail`` same place (district, or the finest level parsed; or
    one side's region coarser than the other's or not parsed, an ambiguous 西湖区) and a
    similar remainder whose house/building/room numbers agree exactly (…十五号 vs …十七号
    never match), or where one side stops at the building whose numbers begin the other's
    (…振安路85号 / …振安路85号D栋514: the flat written on one side only); ``same_district``; ``same_city``; ``else``. Null when a side has no parsed
    part (region or detail): an empty cell or a filler such as 不详 / 无, which the
    standardizer flags ``*_placeholder`` and leaves unparsed, is missing, not evidence; null
    too when no level is reached but one side's region is the other's or contains it
    (``香港特别行政区`` on both, ``浙江省`` against an address in 杭州): nothing disagrees."""

    type_name = "address"
    levels = list(AddressSpec.LEVELS)

    def __init__(
        self,
        name: str | None = None,
        field: str = schema.HUKOU_ADDRESS,
        detail_threshold: float = 0.8,
    ):
        if not 0.0 < float(detail_threshold) <= 1.0:
            raise ValueError(f"detail_threshold must be in (0, 1], got {detail_threshold!r}")
        self.field = field
        self.name = name or field
        self.detail_threshold = float(detail_threshold)

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {"field": self.field, "detail_threshold": self.detail_threshold}

    def _col(self, suffix: str) -> str:
        return schema.address_col(self.field, suffix)

    @property
    def columns(self) -> list[str]:
        """The raw address and its parsed province, city, district, adcode and detail."""
        return [self.field] + [self._col(s) for s in schema.ADDRESS_DERIVED_SUFFIXES]

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Region keys, detail codes and house-number keys per record."""
        n = len(column(values, self.field))
        adcode = _region_int(*factorize(column(values, self._col("adcode"), n)))
        has = {s: _known(column(values, self._col(s), n)) for s in ("province", "city", "district")}
        detail_values = column(values, self._col("detail"), n)
        codes = detail_codes(detail_values)
        rows = {
            # the parsed parts, not the raw text: a filler has none of them
            "present": _known(detail_values) | has["province"] | has["city"] | (adcode >= 0),
            "finest": adcode,
            # a town of a city without districts (东莞 长安镇) has the city's code: no district
            "district": np.where(has["district"] & (adcode % 100 != 0), adcode, -1),
            "city": np.where(has["city"] & (adcode >= 0), adcode // 100, -1),
            "detail": codes["detail"][0],
            "core": codes["core"][0],
            "numbers": codes["numbers"][0],
            **_first_and_count_rows(codes["numbers"]),
        }
        tables = {
            key: np.array([str(u) for u in codes[key][1]], dtype=object)
            for key in ("detail", "core")
        }
        return Prepared(rows, tables)

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        a, b = left.rows, right.rows
        present = a["present"] & b["present"]
        fa, fb = a["finest"], b["finest"]
        # A coarser code that contains the other (330100 vs 330106), or one side unparsed.
        ancestor = np.zeros(len(fa), dtype=bool)
        for unit in (100, 10000):
            ancestor |= (
                (fa >= 0)
                & (fb >= 0)
                & (fa // unit == fb // unit)
                & ((fa % unit == 0) | (fb % unit == 0))
            )
        loose = (ancestor | ((fa < 0) != (fb < 0))) & (fa != fb)
        numbers = same(a["numbers"], b["numbers"]) & both(a["detail"], b["detail"])
        near = numbers & ((fa == fb) | loose)
        detail = near & (same(a["detail"], b["detail"]) | same(a["core"], b["core"]))
        # near spellings of one detail, also where one side's region is coarser or unknown
        # (an ambiguous 西湖区文三路 against 杭州市西湖区文三路): its house numbers must agree;
        # the whole details or their parts from the estate on (a road one side dropped)
        fuzzy = np.flatnonzero(near & ~detail & present)
        if len(fuzzy):
            score = pair_scores(
                a["detail"][fuzzy], b["detail"][fuzzy], left.tables["detail"], fuzz.ratio
            )
            named = np.flatnonzero(both(a["core"][fuzzy], b["core"][fuzzy]))
            if len(named):
                at = fuzzy[named]
                core = pair_scores(a["core"][at], b["core"][at], left.tables["core"], fuzz.ratio)
                score[named] = np.maximum(score[named], core)
            detail[fuzzy[score >= 100 * self.detail_threshold - 1e-4]] = True
        # the flat on one side only: the first number agrees and the counts differ
        if "n_first" in a:
            nest = np.flatnonzero(
                ~detail & present & ((fa == fb) | loose) & both(a["detail"], b["detail"])
                & (a["n_first"] >= 0) & (a["n_first"] == b["n_first"])
                & (a["n_count"] != b["n_count"])
            )
            if len(nest):
                table = left.tables["detail"]
                # once per distinct pair of details (a household's records repeat them)
                width = len(table) + 1
                key = a["detail"][nest].astype(np.int64) * width + b["detail"][nest]
                inverse, distinct = pd.factorize(key)
                distinct = np.asarray(distinct, dtype=np.int64)
                score = np.array(
                    [
                        _flat_on_one_side(table[x // width], table[x % width])
                        for x in distinct.tolist()
                    ]
                )[inverse]
                detail[nest[score >= 100 * self.detail_threshold - 1e-4]] = True
        lvl = np.select(
            [
                detail,
                (a["district"] == b["district"]) & (a["district"] >= 0),
                (a["city"] == b["city"]) & (a["city"] >= 0),
            ],
            [3, 2, 1],
            default=0,
        ).astype(np.int8)
        # one region, or one inside the other, and nothing finer on a side (香港特别行政区 on
        # both; 广东省 against an address in 深圳): no level is reached, yet nothing disagrees
        coarse = (lvl == 0) & (fa >= 0) & (fb >= 0) & ((fa == fb) | ancestor)
        lvl[coarse | ~present] = -1
        return lvl


class ContactComparison(Comparison):
    """Household contact as one piece of evidence: families share a phone and a current address,
    so scoring them as two independent agreements makes parent and child look like one person.

    Levels: ``phone_and_address`` (phone agrees to the last eight digits and the current
    address agrees in detail), ``phone``, ``address``, ``district`` (same current district),
    ``else``; null when neither phone nor current address is comparable.
    """

    type_name = "contact"
    levels = list(ContactSpec.LEVELS)

    def __init__(
        self,
        name: str = "contact",
        phone_column: str = schema.PHONE_STD,
        address_field: str = schema.CURRENT_ADDRESS,
        detail_threshold: float = 0.8,
    ):
        self.name = name
        self.phone = PhoneComparison(name=f"{name}_phone", column=phone_column)
        self.address = AddressComparison(
            name=f"{name}_address", field=address_field, detail_threshold=detail_threshold
        )

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {
            "phone_column": self.phone.column,
            "address_field": self.address.field,
            "detail_threshold": self.address.detail_threshold,
        }

    @property
    def columns(self) -> list[str]:
        """The phone and current-address columns."""
        return self.phone.columns + self.address.columns

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """The phone and address preparations side by side."""
        return Prepared(
            {"phone": self.phone.prepare(values), "address": self.address.prepare(values)}
        )

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        pl = self.phone._levels(left.rows["phone"], right.rows["phone"])
        al = self.address._levels(left.rows["address"], right.rows["address"])
        phone, addr = pl >= 1, al == 3
        lvl = np.select([phone & addr, phone, addr, al == 2], [4, 3, 2, 1], default=0).astype(
            np.int8
        )
        lvl[(pl < 0) & (al < 0)] = -1
        return lvl
