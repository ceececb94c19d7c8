"""Resident ID numbers (GB 11643): clean, check, upgrade 15 -> 18, name the region, flag damage.

Imports only schema, _distinct and python-stdnum's region table (never stdnum's validate).
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from linkage import schema
from linkage.standardize._distinct import map_distinct, map_one, typed_frame
from linkage.standardize._fillers import is_filler_text

logger = logging.getLogger(__name__)

FLAGS: dict[str, str] = {
    "id_malformed": "not 15 digits or 17 digits plus a check character after cleaning, "
    "nor another identity document's number",
    "id_other_document": "not a resident ID but another identity document's number (a Hong "
    "Kong / Macao Home Return Permit, a passport, a Hong Kong / Macao identity card): kept as "
    "id_doc, compared only with another such number",
    "id_float_damaged": "ID went through a float (scientific notation, '.0', zeroed tail); "
    "digits lost, never linked on",
    "id_placeholder": "a filler typed when the ID is unknown (不详, 无, '-', one digit "
    "repeated, 000000..., 123456...); id_std left null, never linked on, counted as missing",
    "id_checksum": "MOD 11-2 check character wrong (kept, so comparison can grade near misses)",
    "id_bad_date": "embedded birth date impossible, before 1900 or in the future",
    "id_from_15": "legacy 15-digit ID upgraded to 18 digits (informational)",
    "id_region_unknown": "first six digits not in the region-code table (ID not rejected)",
    "id_birth_conflict": "birth date embedded in the ID differs from the recorded birth date",
    "id_gender_conflict": "gender from the ID's 17th digit differs from the recorded gender",
    "id_not_own": "the recorded birth year is a generation away from the ID's, or birth date and gender both contradict it (not a typo): someone "
    "else's ID, e.g. a guardian's on a child's record; never evidence, never a cannot-link",
}
# Flags this module emits itself, in output order; the conflict flags come from the combiner.
_EMITTED: tuple[str, ...] = (
    "id_malformed",
    "id_other_document",
    "id_float_damaged",
    "id_placeholder",
    "id_checksum",
    "id_bad_date",
    "id_from_15",
    "id_region_unknown",
)

OUTPUT_COLUMNS: tuple[str, ...] = (
    schema.ID_STD,
    schema.ID_VALID,
    schema.ID_BIRTH_DATE,
    schema.ID_GENDER,
    schema.ID_REGION_CODE,
    schema.ID_REGION_NAME,
    schema.ID_REGION_STATUS,
    schema.ID_FROM_15,
    schema.ID_DOC,
    schema.QUALITY_FLAGS,
)

# Other identity documents written in the ID column, after the ID's own cleaning (upper
# case, no spaces or dashes) and with brackets dropped (HK identity card A123456(7)):
# Home Return Permits of Hong Kong and Macao residents (H / M + 8 digits, older cards 2 more
# digits counting the issues: dropped, the 8 stay for life), passports and Hong Kong / Macao
# identity cards (1-2 letters + 6-9 digits). Formats from the issuing authorities' published
# card layouts (not a library). A Taiwan residents' permit (8 digits alone) is not read: 8
# digits in an ID column are as often a date (19000101) or a landline, and Taiwan residents
# now hold 18-digit residence permits (830000...) that read as IDs.
_PERMIT_RE = r"^[HM][0-9]{8}([0-9]{2})?$"
_PASSPORT_RE = r"^[A-Z]{1,2}[0-9]{6,9}$"
# A number with this few distinct digits is a filler (H00000001, 10000000, 12121212): among
# issued numbers of 8 random digits fewer than 1 in 100 has three or fewer.
_MIN_DISTINCT_DIGITS = 4

# ISO 7064 MOD 11-2 weights for positions 0..16: 2^(17-i) mod 11.
_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
_CHECK_CHARS = np.frombuffer(b"0123456789X", dtype=np.uint8)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_STATUS = np.array(["unknown", "current", "historical"], dtype=object)

# Column-level float-damage heuristics (see _column_float_damage).
_MIN_IDS_FOR_COLUMN_TEST = 20
_ZERO_TAIL_SHARE = 0.2  # real IDs end in "000" about once in a thousand
_FLOAT_EXACT_SHARE = 0.5  # at most 1 real ID in 16 is exactly representable as float64


# ----------------------------------------------------------------------------- region table


def _combine_names(*parts: str | None) -> str:
    """Concatenate name parts, skipping empty ones and ones already contained."""
    out = ""
    for p in parts:
        if p and p not in out:
            out += p
    return out


def _parse_county(raw: str) -> tuple[str, bool]:
    """Return (name, still valid) from stdnum's '[1983-1994]A,[1995-]B' county string."""
    segments = []
    for seg in raw.split(","):
        if seg.startswith("[") and "]" in seg:
            span, name = seg[1:].split("]", 1)
            segments.append((name, span.endswith("-")))
        else:
            segments.append((seg, True))
    for name, open_ended in reversed(segments):
        if open_ended:
            return name, True
    return segments[-1][0], False


@lru_cache(maxsize=1)
def _region_table() -> tuple[np.ndarray, np.ndarray]:
    """Status (0 unknown, 1 current, 2 historical) and full name for every 6-digit code."""
    status = np.zeros(1_000_000, dtype=np.int8)
    names = np.full(1_000_000, None, dtype=object)
    try:
        from stdnum import numdb

        db = numdb.get("cn/loc")
        counties: dict[str, tuple[str, bool]] = {}
        provinces: dict[str, str] = {}
        # Walk numdb's prefix tree once (province -> county) instead of calling
        # get_birth_place per ID: that applies a birth-year check and can raise KeyError.
        for _len, low, high, props, children in db.prefixes:
            for p in range(int(low), int(high) + 1):
                provinces[f"{p:02d}"] = props.get("province", "")
                for _clen, clow, chigh, cprops, _ in children:
                    if "county" not in cprops:
                        continue
                    for c in range(int(clow), int(chigh) + 1):
                        counties[f"{p:02d}{c:04d}"] = _parse_county(cprops["county"])
    except Exception:  # a broken table must not stop standardization
        logger.warning("stdnum region table unreadable; all region codes reported unknown")
        return status, names

    def usable_city(code: str) -> str | None:
        entry = counties.get(code)
        if entry is None or "直辖" in entry[0] or entry[0] in ("市辖区", "县"):
            return None
        return entry[0]

    for code, (county, current) in counties.items():
        prov_code = code[:2]
        province = counties.get(prov_code + "0000", (provinces.get(prov_code, ""), True))[0]
        if code.endswith("0000"):
            full = county
        elif code.endswith("00"):
            full = _combine_names(province, county)
        else:
            full = _combine_names(province, usable_city(code[:4] + "00"), county)
        status[int(code)] = 1 if current else 2
        names[int(code)] = full
    # Residence permits of Hong Kong, Macao and Taiwan residents (港澳台居民居住证, 2018) carry
    # a citizen number starting 810000, 820000 or 830000; stdnum's table lacks the last
    if status[830000] == 0:
        status[830000], names[830000] = 1, "台湾地区"
    return status, names


# ----------------------------------------------------------------------------- helpers


def _to_text(values: Sequence) -> list[str]:
    """Distinct raw values as text; floats keep their float look so damage stays visible."""
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        return list(values)
    out = []
    for v in values:
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, float | np.floating):
            out.append(repr(float(v)) if math.isfinite(v) else "")
        else:
            out.append(str(v))
    return out


def _fixed_width_matrix(arr: pa.Array, width: int) -> np.ndarray:
    """(n, width) uint8 view of an ASCII string array whose values all have ``width`` bytes."""
    arr = pa.concat_arrays([arr]) if arr.offset else arr
    if len(arr) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=off_type)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    return data[offsets[0] : offsets[len(arr)]].reshape(-1, width)


def _check_values(digits17: np.ndarray) -> np.ndarray:
    """MOD 11-2 check value 0..10 for an (n, 17) array of digit values."""
    return (12 - (digits17 @ _WEIGHTS) % 11) % 11


def _decode(matrix: np.ndarray) -> np.ndarray:
    """Rows of an (n, w) ASCII uint8 matrix as an object array of str."""
    if len(matrix) == 0:
        return np.empty(0, dtype=object)
    w = matrix.shape[1]
    return np.ascontiguousarray(matrix).view(f"S{w}").ravel().astype(f"U{w}").astype(object)


def _sci_digits(text: str) -> tuple[str, int] | None:
    """Integer digits and count of trustworthy leading digits of '1.10105194912310E+17'."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    # an ID has 18 digits: a larger number is none, and int() of '1e999999' (one cell of a
    # registry, one search) would run for minutes, '1e5000' exceed Python's 4300-digit limit
    if value.adjusted() > 18:
        return None
    if value != value.to_integral_value() or value < 0:
        return None
    mantissa = text.upper().split("E")[0].replace(".", "").lstrip("0")
    return str(int(value)), len(mantissa)


def _flag_strings(masks: list[np.ndarray]) -> np.ndarray:
    """Join the codes of _EMITTED whose masks are set, per row ('' when none)."""
    bits = np.zeros(len(masks[0]), dtype=np.int32)
    for i, mask in enumerate(masks):
        bits |= mask.astype(np.int32) << i
    uniq, inverse = np.unique(bits, return_inverse=True)
    text = np.array(
        [
            schema.QUALITY_SEP.join(c for i, c in enumerate(_EMITTED) if int(u) >> i & 1)
            for u in uniq
        ],
        dtype=object,
    )
    return text[inverse.ravel()]


def _column_counts(matrix: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """(18-digit IDs, those with tail '000', those float64 holds exactly) of the (n, 18)
    digit matrix of distinct 18-digit IDs: what :func:`_verdict_of` judges a column by;
    counts of disjoint sets of distinct values add up."""
    zero_tail = numeric & (matrix[:, 15:18] == ord("0")).all(axis=1)
    exact = _float_exact(matrix, numeric)
    return np.array([len(matrix), zero_tail.sum(), exact.sum()], dtype=np.int64)


def _verdict_of(counts: np.ndarray) -> tuple[bool, bool]:
    """Whether a whole ID column went through Excel or float64, from its
    :func:`_column_counts`: (tail '000' far above chance, float-exact far above chance);
    (False, False) under ``_MIN_IDS_FOR_COLUMN_TEST`` distinct 18-digit IDs.

    One ID alone cannot show a float history unless its text does ('e+17', '.0'); a column
    can: Excel keeps 15 significant digits (tail '000'), and pandas' float64 makes every
    value a multiple of 16..128. Either at a share far above chance marks the column.
    """
    n, zero_tail, exact = (int(c) for c in counts)
    if n < _MIN_IDS_FOR_COLUMN_TEST:
        return False, False
    return zero_tail / n > _ZERO_TAIL_SHARE, exact / n > _FLOAT_EXACT_SHARE


def _float_exact(matrix: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """Rows of the digit matrix whose number float64 holds exactly."""
    as_int = (matrix.astype(np.int64) - 48) @ (10 ** np.arange(17, -1, -1, dtype=np.int64))
    return numeric & (as_int.astype(np.float64).astype(np.int64) == as_int)


def _column_float_damage(
    matrix: np.ndarray, numeric: np.ndarray, verdict: tuple[bool, bool]
) -> np.ndarray:
    """Rows damaged by a whole column having gone through Excel or float64, by the
    column's ``verdict`` (:func:`_verdict_of`): its tail-000 IDs, its float-exact IDs."""
    damaged = np.zeros(len(matrix), dtype=bool)
    zero_tail_column, exact_column = verdict
    if zero_tail_column:
        logger.info("ID column looks truncated to 15 digits by Excel; tail-000 IDs flagged")
        damaged |= numeric & (matrix[:, 15:18] == ord("0")).all(axis=1)
    if exact_column:
        logger.info("ID column looks rounded through float64; float-exact IDs flagged")
        damaged |= _float_exact(matrix, numeric)
    return damaged


_FILLER_RUN = 8  # a real ID never repeats a digit 8 times (the birth date breaks any run)


def _placeholder_rows(digits: np.ndarray) -> np.ndarray:
    """Rows of a (k, width) digit matrix that are fillers, not IDs: a digit repeated
    ``_FILLER_RUN`` times in a row (111111111111111111, 000000..., 110101000000000000) or one
    counting run up or down (123456789012345678, 987654321...). No valid region + birth date
    + sequence number has either shape, so they are never evidence (zinggAI/zingg#892)."""
    if len(digits) == 0:
        return np.zeros(0, dtype=bool)
    same = digits[:, 1:] == digits[:, :-1]
    run = np.zeros(len(digits), dtype=np.int64)
    best = np.zeros(len(digits), dtype=np.int64)
    for j in range(same.shape[1]):
        run = np.where(same[:, j], run + 1, 0)
        best = np.maximum(best, run)
    step = (digits[:, 1:] - digits[:, :-1]) % 10
    counting = (step == 1).all(axis=1) | (step == 9).all(axis=1)
    return (best + 1 >= _FILLER_RUN) | counting


# ----------------------------------------------------------------------------- core


def _standardize_distinct(
    values: Sequence, verdict: tuple[bool, bool] | None = None
) -> pd.DataFrame:
    """Standardize distinct raw IDs; one output row per input value, in order. ``verdict``:
    the whole column's (``column_verdict``); None: judged over ``values``."""
    return typed_frame(_id_columns(values, verdict))


# Distinct IDs judged at a time by column_verdict: its digit matrices stay small.
_VERDICT_PIECE = 250_000


def column_verdict(values: Sequence) -> tuple[bool, bool]:
    """Whether the ID column whose distinct raw values are ``values`` (a list, or a pyarrow
    array of strings) went through Excel (tail '000' on far more than chance's share of its
    18-digit IDs) or float64 (far more float-exact ones than chance): ``(excel, float64)``.
    Decided once for a whole column, so that every part of it is read alike (a column
    split between this process and the worker, or a batch standardized a chunk at a time:
    ``standardize_id_numbers(verdict=)``). Counted ``_VERDICT_PIECE`` values at a time.
    """
    total = np.zeros(3, dtype=np.int64)
    for start in range(0, len(values), _VERDICT_PIECE):
        piece = values[start : start + _VERDICT_PIECE]
        if isinstance(piece, (pa.Array, pa.ChunkedArray)):
            piece = piece.to_pylist()
        total += _id_columns(piece, verdict_only=True)
    return _verdict_of(total)


def _id_columns(
    values: Sequence, verdict: tuple[bool, bool] | None = None, *, verdict_only: bool = False
) -> Any:
    """:func:`_standardize_distinct`'s columns (``OUTPUT_COLUMNS``) as numpy arrays, no frame;
    with ``verdict_only``, only the counts the column's verdict is judged by
    (``_column_counts`` of ``values``, for ``column_verdict``)."""
    n = len(values)
    raw = pa.array(_to_text(values), type=pa.string())
    text = pc.utf8_trim_whitespace(pc.utf8_normalize(raw, "NFKC"))
    # Spreadsheet exports force text with ="110105199003070033" or a leading ' or `, so that
    # Excel keeps all 18 digits: the wrapper is no part of the ID.
    text = pc.replace_substring_regex(text, r'^=\s*"(.*)"$', r"\1")
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"^['`‘’]", ""))
    dot0 = pc.match_substring_regex(text, r"^[0-9]+\.0+$")
    sci = pc.match_substring_regex(text, r"^[0-9]+(\.[0-9]*)?[eE]\+?[0-9]+$")
    text = pc.if_else(dot0, pc.replace_substring_regex(text, r"\.0+$", ""), text)
    clean = pc.utf8_upper(pc.replace_substring_regex(text, r"[\s\-_‐‑‒–—―]", ""))
    # 不详, 无, '-': the ID is unknown; read as missing, flagged id_placeholder
    worded = np.array([is_filler_text(v) for v in text.to_pylist()], dtype=bool)
    clean = pc.if_else(pa.array(worded), pa.scalar("", pa.string()), clean)

    dot0_np = dot0.to_numpy(zero_copy_only=False).astype(bool)
    float_marked = np.zeros(n, dtype=bool)  # went through a float and lost digits
    known = np.full(n, 18, dtype=np.int64)  # trustworthy leading digits
    sci_np = sci.to_numpy(zero_copy_only=False).astype(bool)
    if sci_np.any():
        clean_list = clean.to_pylist()
        for i in np.flatnonzero(sci_np):
            parsed = _sci_digits(clean_list[i])
            if parsed is None:
                continue
            digits, k = parsed
            clean_list[i] = digits
            # a float holds 15 digits exactly, so a fully written 15-digit ID survives
            if not (len(digits) == 15 and k >= 15):
                float_marked[i] = True
                known[i] = k
        clean = pa.array(clean_list, type=pa.string())

    is18 = pc.match_substring_regex(clean, r"^[0-9]{17}[0-9X]$").to_numpy(zero_copy_only=False)
    is15 = pc.match_substring_regex(clean, r"^[0-9]{15}$").to_numpy(zero_copy_only=False)
    empty = (pc.utf8_length(clean).to_numpy(zero_copy_only=False) == 0) & ~float_marked
    is18 = is18.astype(bool)
    float_marked |= dot0_np & is18  # an 18-digit '.0' number was rounded to float64
    is15 = is15.astype(bool) & ~float_marked
    cand = is18 | is15
    malformed = ~(cand | empty | float_marked)
    if not verdict_only:  # other documents are no 18-digit IDs: the verdict skips them
        doc, other_document = _other_documents(clean, malformed)
        malformed &= ~other_document

    # Fixed-width (n, 18) byte matrix of every candidate; 15-digit IDs get "19" and a check.
    m = np.full((n, 18), ord("0"), dtype=np.uint8)
    m[is18] = _fixed_width_matrix(pc.filter(clean, pa.array(is18)), 18)
    m15 = _fixed_width_matrix(pc.filter(clean, pa.array(is15)), 15)
    rows15 = np.flatnonzero(is15)
    m[rows15, :6] = m15[:, :6]
    m[rows15, 6:8] = (ord("1"), ord("9"))
    m[rows15, 8:17] = m15[:, 6:15]
    digits = m[:, :17].astype(np.int64) - 48
    check = _CHECK_CHARS[_check_values(digits)]
    m[rows15, 17] = check[rows15]
    checksum_ok = cand & (m[:, 17] == check)

    # Float damage: marked in the text, a zeroed tail with a failing check, or the column.
    numeric = is18 & (m[:, 17] != ord("X"))
    if verdict_only:
        return _column_counts(m[is18], numeric[is18])
    if verdict is None:
        verdict = _verdict_of(_column_counts(m[is18], numeric[is18]))
    zero_tail = numeric & (m[:, 15:18] == ord("0")).all(axis=1)
    filler = np.zeros(n, dtype=bool)
    filler[is18] = _placeholder_rows(digits[is18])
    filler[rows15] = _placeholder_rows(m15.astype(np.int64) - 48)
    filler &= ~float_marked
    damaged = float_marked | (zero_tail & ~checksum_ok)
    damaged[is18] |= _column_float_damage(m[is18], numeric[is18], verdict)
    damaged = (damaged & ~filler) | filler  # a filler carries no digits worth keeping

    # Embedded birth date, checked without datetime per row.
    year = digits[:, 6] * 1000 + digits[:, 7] * 100 + digits[:, 8] * 10 + digits[:, 9]
    month = digits[:, 10] * 10 + digits[:, 11]
    day = digits[:, 12] * 10 + digits[:, 13]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(month, 1, 12) - 1] + (leap & (month == 2))
    today = datetime.date.today()
    date_ok = (
        (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= dim)
        & (year >= 1900)
        & (year * 10000 + month * 100 + day <= today.year * 10000 + today.month * 100 + today.day)
    )
    birth_known = cand & ~filler & (~damaged | (known >= 15))
    region_known = cand & ~filler & (~damaged | (known >= 7))
    bad_date = cand & ~damaged & ~date_ok

    status_table, name_table = _region_table()
    region_int = digits[:, :6] @ np.array([100000, 10000, 1000, 100, 10, 1], dtype=np.int64)
    status = status_table[region_int]
    region_unknown = region_known & (status == 0)

    good = cand & ~damaged
    out = {}
    id_std = np.full(n, None, dtype=object)
    id_std[good] = _decode(m[good])
    out[schema.ID_STD] = id_std
    valid = np.full(n, None, dtype=object)
    valid[~empty] = False
    valid[good] = (date_ok & checksum_ok)[good]
    out[schema.ID_VALID] = valid
    birth = np.full(n, None, dtype=object)
    has_birth = birth_known & date_ok
    bmat = np.empty((int(has_birth.sum()), 10), dtype=np.uint8)
    bmat[:, 0:4] = m[has_birth, 6:10]
    bmat[:, 5:7] = m[has_birth, 10:12]
    bmat[:, 8:10] = m[has_birth, 12:14]
    bmat[:, [4, 7]] = ord("-")
    birth[has_birth] = _decode(bmat)
    out[schema.ID_BIRTH_DATE] = birth
    gender = np.full(n, None, dtype=object)
    gender[good] = np.where(digits[good, 16] % 2 == 1, "M", "F").astype(object)
    out[schema.ID_GENDER] = gender
    code = np.full(n, None, dtype=object)
    code[region_known] = _decode(m[region_known, :6])
    out[schema.ID_REGION_CODE] = code
    rname = np.full(n, None, dtype=object)
    rname[region_known] = name_table[region_int[region_known]]
    out[schema.ID_REGION_NAME] = rname
    rstatus = np.full(n, None, dtype=object)
    rstatus[region_known] = _STATUS[status[region_known]]
    out[schema.ID_REGION_STATUS] = rstatus
    from15 = np.full(n, None, dtype=object)
    from15[~empty] = False
    from15[is15] = True
    out[schema.ID_FROM_15] = from15
    out[schema.ID_DOC] = doc
    out[schema.QUALITY_FLAGS] = _flag_strings(
        [
            malformed,
            other_document,
            damaged & ~filler,
            filler | worded,
            good & is18 & ~checksum_ok,
            bad_date,
            is15 & ~damaged,
            region_unknown,
        ]
    )
    return {c: out[c] for c in OUTPUT_COLUMNS}


# ----------------------------------------------------------------------------- public API


# the fewest years between a child and the guardian whose ID its record carries: a record's
# year that far from its ID's is a generation, nearer it is a typed or misremembered year
GUARDIAN_MIN_YEARS = 14


def year_digits_differing(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Per pair of four-digit years, how many of their digits differ (0-4)."""
    ya, yb = np.asarray(ya, dtype=np.int64), np.asarray(yb, dtype=np.int64)
    differing = np.zeros(len(ya), dtype=np.int64)
    for power in (1, 10, 100, 1000):
        differing += (ya // power) % 10 != (yb // power) % 10
    return differing


def year_digits_swapped(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Per pair of years, whether ``yb`` is ``ya`` with two different neighbouring digits
    swapped (1959 / 1995)."""
    ya, yb = np.asarray(ya, dtype=np.int64), np.asarray(yb, dtype=np.int64)
    transposed = np.zeros(len(ya), dtype=bool)
    for power in (1, 10, 100):
        low, high = (ya // power) % 10, (ya // (power * 10)) % 10
        swapped = ya + (high - low) * power + (low - high) * power * 10
        transposed |= (swapped == yb) & (low != high)
    return transposed


def years_apart(
    ya: np.ndarray,
    yb: np.ndarray,
    mda: np.ndarray | None = None,
    mdb: np.ndarray | None = None,
) -> np.ndarray:
    """Both years known (>= 0), a generation apart (at least ``GUARDIAN_MIN_YEARS``) and
    not one mistyped digit (1965 / 1985 on the same month and day).

    The test for an ID that is not its record's own: a typed birth year is off by one or
    in one digit, a guardian's ID on a child's record (or a child's on an old person's) by
    a generation. Nearer years (2001 recorded, 1991 in the ID; 1999 and 2001) are a wrong
    year on the person's own record: the ID stays the record's (flagged
    ``id_birth_conflict``), where a gap of two years once threw it away. ``mda`` / ``mdb``:
    month and day as ``MMDD`` integers (-1 unknown), where the caller has them: a year one
    digit away on another month and day (2002-05-09 in the ID, 2022-12-10 recorded) is a
    mother's ID on her baby's record, not a typo. Two neighbouring year digits swapped
    (1959 recorded, 1995 in the ID) on the same month and day are a typo too.
    """
    ya, yb = np.asarray(ya, dtype=np.int64), np.asarray(yb, dtype=np.int64)
    differing = year_digits_differing(ya, yb)
    if mda is not None and mdb is not None:
        mda, mdb = np.asarray(mda, dtype=np.int64), np.asarray(mdb, dtype=np.int64)
        known = (mda >= 0) & (mdb >= 0)
        for power in (1, 10, 100, 1000):
            differing += known & ((mda // power) % 10 != (mdb // power) % 10)
    gap = np.abs(ya - yb)
    # two neighbouring digits of the year typed in swapped order (1959 for 1995, 1936 for
    # 1963) on the same month and day: a typo of the person's own date, a generation apart
    # only by accident
    transposed = year_digits_swapped(ya, yb)
    if mda is not None and mdb is not None:
        transposed &= ~known | (mda == mdb)
    return (ya >= 0) & (yb >= 0) & (gap >= GUARDIAN_MIN_YEARS) & (differing > 1) & ~transposed


def month_days(dates: np.ndarray | pd.Series) -> np.ndarray:
    """``MMDD`` integers of ISO dates (``YYYY-MM-DD``), -1 where null or not a full date."""
    out = np.full(len(dates), -1, dtype=np.int64)
    for i, d in enumerate(dates):
        if isinstance(d, str) and len(d) >= 10 and d[5:7].isdigit() and d[8:10].isdigit():
            out[i] = int(d[5:7] + d[8:10])
    return out


def not_own_ids(birth_std: pd.Series, id_birth: pd.Series) -> np.ndarray:
    """Rows whose ID is someone else's: the recorded birth date a generation away from the
    ID's (:func:`years_apart`, month and day included)."""

    def parts(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        # per distinct date (a registry repeats them): the same parse, a tenth of the work
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        text = pd.Series(np.asarray(uniques, dtype=object), dtype=object).astype("string")
        y = pd.to_numeric(text.str.slice(0, 4), errors="coerce")
        pool = np.append(y.fillna(-1).to_numpy(np.int64), -1)  # code -1 (null) -> -1
        md = np.append(month_days(np.asarray(uniques, dtype=object)), -1)
        return pool[codes], md[codes]

    (ya, mda), (yb, mdb) = parts(birth_std), parts(id_birth)
    return years_apart(ya, yb, mda, mdb)


def contradicted_ids(
    birth_std: pd.Series, id_birth: pd.Series, gender_conflict: np.ndarray
) -> np.ndarray:
    """Rows whose ID is someone else's because the record contradicts it twice: the recorded
    gender differs from the ID's and the recorded birth date differs from the ID's in two or
    more digits (not a day/month swap). One mistyped field is common; both at once on the
    person's own ID is rare (about one record in 10^5 at 1% date and 0.3% gender errors),
    while a spouse's or relative's ID copied onto the record contradicts both in half the
    cases. ``birth_std`` / ``id_birth`` ISO dates (null allowed), ``gender_conflict`` bool."""
    out = np.zeros(len(birth_std), dtype=bool)
    rows = np.flatnonzero(np.asarray(gender_conflict, dtype=bool))
    births, id_births = birth_std.to_numpy(dtype=object), id_birth.to_numpy(dtype=object)
    for i in rows:  # rows with both conflicts: a few per thousand records
        a, b = births[i], id_births[i]
        if not (isinstance(a, str) and isinstance(b, str) and len(a) == len(b) == 10):
            continue
        da, db = a.replace("-", ""), b.replace("-", "")
        swapped = da[:4] == db[:4] and da[4:6] == db[6:8] and da[6:8] == db[4:6]
        out[i] = sum(x != y for x, y in zip(da, db, strict=True)) >= 2 and not swapped
    return out


def _other_documents(clean: pa.Array, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(number per row or None, mask) of the ``candidates`` rows whose cleaned text is
    another identity document's number (``_PERMIT_RE``, ``_PASSPORT_RE``), a permit without
    its issue digits. Digits of fewer than ``_MIN_DISTINCT_DIGITS`` kinds, counting up or
    down or repeating their first half (``H00000001``, ``E12345678``, ``A1231234``) are a
    filler, not a number."""
    n = len(candidates)
    doc = np.full(n, None, dtype=object)
    rows = np.flatnonzero(candidates)
    if not len(rows):
        return doc, np.zeros(n, dtype=bool)
    text = pc.replace_substring_regex(pc.take(clean, pa.array(rows)), r"[()（）\[\]]", "")
    for i, value in zip(rows, text.to_pylist(), strict=True):
        if value is None:
            continue
        if re.fullmatch(_PERMIT_RE, value):
            number = value[:9]
        elif re.fullmatch(_PASSPORT_RE, value):
            number = value
        else:
            continue
        digits = "".join(c for c in number if c.isdigit())
        steps = {int(b) - int(a) for a, b in zip(digits, digits[1:], strict=False)}
        half = len(digits) // 2
        if (
            len(set(digits)) < _MIN_DISTINCT_DIGITS
            or steps == {1}
            or steps == {-1}
            or digits[:half] == digits[half : 2 * half]
        ):
            continue
        doc[i] = number
    return doc, np.array([d is not None for d in doc], dtype=bool)


def distinct_parser(
    verdict: tuple[bool, bool] | None = None,
) -> Callable[[Sequence], pd.DataFrame]:
    """The function :func:`standardize_id_numbers` maps over a column's distinct values,
    with the column's ``verdict`` (:func:`column_verdict`; None: judged over the values
    it is given)."""
    if verdict is None:
        return _standardize_distinct
    return functools.partial(_standardize_distinct, verdict=verdict)


def standardize_id_numbers(
    values: pd.Series, verdict: tuple[bool, bool] | None = None
) -> pd.DataFrame:
    """Standardize raw resident ID numbers; returns the derived ID columns on the same index.

    Whether the column went through Excel or float64 (its tail-000 or float-exact IDs then
    flagged ``id_float_damaged``) is judged once over its distinct values
    (:func:`column_verdict`), or taken from ``verdict`` (a batch's, when ``values`` is a
    chunk of it), never over a part of them alone.
    """
    if verdict is None:
        verdict = column_verdict(list(pd.unique(values.dropna())))
    out = map_distinct(values, distinct_parser(verdict))
    for col in (schema.ID_VALID, schema.ID_FROM_15):
        out[col] = out[col].astype("boolean")
    return out


def standardize_id_number(value: str) -> dict:
    """:func:`standardize_id_numbers` of one non-null value, as a dict (booleans as the
    column's nullable ``boolean`` values: True, False or ``pd.NA``)."""
    out = map_one(value, _id_columns)
    for col in (schema.ID_VALID, schema.ID_FROM_15):
        out[col] = pd.NA if pd.isna(out[col]) else bool(out[col])
    return out


def normalize_id(s: object) -> str | None:
    """Return the standardized 18-character ID for one raw value, or None."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return None
    return _standardize_distinct([s])[schema.ID_STD].iloc[0]


def id_check_char(first17: str) -> str:
    """Return the MOD 11-2 check character ('0'-'9' or 'X') for 17 leading digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError(f"expected 17 digits, got {first17!r}")
    total = sum(int(c) * int(w) for c, w in zip(first17, _WEIGHTS, strict=True))
    return "0123456789X"[(12 - total % 11) % 11]


def upgrade_15_to_18(id15: str) -> str:
    """Convert a legacy 15-digit ID to 18 characters: insert '19' and append the check."""
    if len(id15) != 15 or not id15.isascii() or not id15.isdigit():
        raise ValueError(f"expected 15 digits, got {id15!r}")
    body = id15[:6] + "19" + id15[6:]
    return body + id_check_char(body)


def id_near_miss(a: str, b: str) -> str | None:
    """'one_digit' or 'transposition' when two 18-character IDs differ by that, else None."""
    if a is None or b is None or len(a) != 18 or len(b) != 18:
        return None
    diff = [i for i in range(18) if a[i] != b[i]]
    if len(diff) == 1:
        return "one_digit"
    if len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]:
        if a[diff[1]] == b[diff[0]]:
            return "transposition"
    return None


def _code_matrix(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 18) code-point matrix of an array of IDs and a mask of rows exactly 18 long."""
    x = np.asarray(x)
    if x.dtype.kind == "S":
        mat = np.ascontiguousarray(x).view(np.uint8).reshape(len(x), -1)
    else:
        if x.dtype.kind != "U":
            # nulls become '' (length 0); one extra character reveals values longer than 18
            x = np.where(pd.isna(x), "", x).astype("U19")
        mat = np.ascontiguousarray(x).view(np.uint32).reshape(len(x), -1)
    width = mat.shape[1] if mat.ndim == 2 else 0
    if width < 18:
        return np.zeros((len(x), 18), dtype=mat.dtype), np.zeros(len(x), dtype=bool)
    ok = (mat[:, :18] != 0).all(axis=1)
    if width > 18:
        ok &= mat[:, 18] == 0
    return mat[:, :18], ok


def id_near_miss_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair: 0 none, 1 one substitution, 2 adjacent transposition (18-character IDs)."""
    ma, oka = _code_matrix(a)
    mb, okb = _code_matrix(b)
    if len(ma) != len(mb):
        raise ValueError("a and b must have the same length")
    diff = ma != mb
    ndiff = diff.sum(axis=1)
    swap = (diff[:, :-1] & diff[:, 1:] & (ma[:, :-1] == mb[:, 1:]) & (ma[:, 1:] == mb[:, :-1])).any(
        axis=1
    )
    out = np.zeros(len(ma), dtype=np.int8)
    out[ndiff == 1] = 1
    out[(ndiff == 2) & swap] = 2
    out[~(oka & okb)] = 0
    return out
