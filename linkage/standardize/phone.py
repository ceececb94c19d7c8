"""Mainland phone numbers: mobiles to 11 digits, landlines to area code + number, with flags.

Imports only the schema and the distinct-value helper; never the linking stages.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import phonenumbers

from linkage import schema
from linkage.standardize._distinct import map_distinct, map_one, typed_frame
from linkage.standardize._fillers import is_filler_text

logger = logging.getLogger(__name__)

FLAGS: dict[str, str] = {
    "phone_invalid": "not a mainland mobile or landline number; phone_std left null",
    "phone_no_area_code": "landline without area code: only comparable within one city",
    "phone_masked": "number masked with * (138****1234); phone_std left null",
    "phone_placeholder": "filler number (13800000000, 88888888, 12345678); phone_std left null",
    "phone_multiple": "several numbers in one field; the first valid mobile was kept, else "
    "the first valid number",
}

MOBILE = "mobile"
LANDLINE = "landline"

_MOBILE = re.compile(r"1[3-9]\d{9}")
# phonenumbers' own CN fixed-line pattern (national number without the trunk 0), matched
# directly: it knows the real area codes and local lengths, and a compiled regex costs ~1 µs
# where parse + is_valid_number costs ~45 µs per number.
_FIXED_LINE = re.compile(
    phonenumbers.PhoneMetadata.metadata_for_region("CN").fixed_line.national_number_pattern
)
_LOCAL = re.compile(r"[2-9]\d{6,7}")
_MASK = re.compile(r"\d[*＊×xX]{3,}\d|[*＊]{2,}")
_SEPARATORS = re.compile(r"[,;/、|]|或")
_EXTENSION = re.compile(r"(?:转|分机|ext\.?|x|#)\s*\d{1,6}\s*$")
_COUNTRY = re.compile(r"^(?:\+|00)\s*86")
_DIGITS = re.compile(r"\d+")
_MOBILE_RUN = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_NULL_TOKENS = frozenset(
    {"", "无", "暂无", "没有", "不详", "未知", "-", "--", "/", "null", "none", "na", "n/a"}
)
# Filler numbers clerks type to get past a required field: shared by thousands of records,
# they would link strangers.
_FILLER = frozenset({"13800138000", "12345678", "87654321", "1234567", "7654321"})
_FILLER_TAIL = re.compile(r"(\d)\1{6,}$")


def _classify(digits: str, international: bool) -> tuple[str, str] | None:
    """Return (phone_std, type) for a digit string, or None when it is no valid number."""
    if digits.startswith("0086"):
        digits, international = digits[4:], True
    elif digits.startswith("86") and len(digits) >= 12 and not digits.startswith("0"):
        # 86 country code without + (8613812345678): a local number never has 12+ digits
        digits, international = digits[2:], True
    if _MOBILE.fullmatch(digits):
        return digits, MOBILE
    if len(digits) == 12 and digits[0] == "0" and _MOBILE.fullmatch(digits[1:]):
        return digits[1:], MOBILE  # long-distance 0 dialled before a mobile
    if digits.startswith("0") and _FIXED_LINE.fullmatch(digits[1:]):
        return digits, LANDLINE
    if international and _FIXED_LINE.fullmatch(digits):
        return "0" + digits, LANDLINE  # +86 10 12345678: trunk 0 dropped abroad
    if not international and _LOCAL.fullmatch(digits):
        return digits, LANDLINE
    return None


def _parse_one(raw: object) -> tuple[str | None, str | None, list[str]]:
    if isinstance(raw, float):
        if raw != raw:
            return None, None, []
        raw = int(raw) if raw.is_integer() else raw
    text = unicodedata.normalize("NFKC", str(raw)).strip().lower()
    if re.fullmatch(r"\d+\.0", text):  # phone stored as float in a spreadsheet
        text = text[:-2]
    if not text:
        return None, None, []
    if text in _NULL_TOKENS or is_filler_text(text):
        return None, None, ["phone_placeholder"]
    flags: list[str] = []
    parts = [p for p in _SEPARATORS.split(text) if _DIGITS.search(p)]
    if len(parts) == 1 and len(mobiles := _MOBILE_RUN.findall(parts[0])) > 1:
        if "".join(mobiles) == "".join(_DIGITS.findall(parts[0])):
            parts = mobiles  # 13812345678 13987654321: two mobiles with a space between
    if len(parts) > 1:
        flags.append("phone_multiple")
    if not parts:
        return None, None, ["phone_invalid"]
    parsed = [_parse_part(part) for part in parts]
    valid = [r for r in parsed if r[0] is not None]
    if not valid:
        return None, None, [*flags, *parsed[0][2]]
    # a mobile is the person's own; a landline is often the household's or the employer's
    std, kind, more = next((r for r in valid if r[1] == MOBILE), valid[0])
    return std, kind, [*flags, *more]


def _parse_part(text: str) -> tuple[str | None, str | None, list[str]]:
    """(phone_std, type, flags) of one number's text (lower case, NFKC, no separators)."""
    if _MASK.search(text):
        return None, None, ["phone_masked"]
    flags: list[str] = []
    text = _EXTENSION.sub("", text)
    international = False
    match = _COUNTRY.match(text)
    if match:
        text, international = text[match.end() :], True
    text = re.sub(r"^\(\s*\+?86\s*\)", "", text)  # (+86) / (86) before the number
    groups = _DIGITS.findall(text)
    # Try the longest run of digit groups first; up to 6 trailing digits after a valid number
    # are an extension (010-12345678-8001), never part of it.
    result = None
    for k in range(len(groups), 0, -1):
        if sum(len(g) for g in groups[k:]) > 6:
            break
        result = _classify("".join(groups[:k]), international)
        if result:
            break
    if result is None:
        filler = "".join(groups) in _FILLER
        return None, None, ["phone_placeholder" if filler else "phone_invalid"]
    std, kind = result
    if std in _FILLER or _FILLER_TAIL.search(std) or std.endswith("12345678"):
        return None, None, ["phone_placeholder"]
    if kind == LANDLINE and not std.startswith("0"):
        flags.append("phone_no_area_code")
    return std, kind, flags


def parse_phone(raw: object) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Return (phone_std, phone_type, flags) for one raw value."""
    std, kind, flags = _parse_one(raw)
    return std, kind, tuple(flags)


# an already-clean mobile that is no filler number
_CLEAN_MOBILE = r"(?!.*(\d)\1{6}$)(?!.*12345678$)(?!13800138000)1[3-9]\d{9}"
_CLEAN_MOBILE_RE = re.compile(_CLEAN_MOBILE)


def _phones_distinct(values: Sequence[object]) -> pd.DataFrame:
    n = len(values)
    std = np.full(n, None, dtype=object)
    kind = np.full(n, None, dtype=object)
    flags = np.full(n, "", dtype=object)
    # Fast path, vectorized: an already-clean mobile (most of a health registry) needs no
    # parsing, only the filler check.
    series = pd.Series(values, dtype=object)
    text = series.where(series.map(lambda v: isinstance(v, str)), "")
    clean = text.str.fullmatch(_CLEAN_MOBILE)
    clean = clean.to_numpy(dtype=bool)
    std[clean] = text.to_numpy(dtype=object)[clean]
    kind[clean] = MOBILE
    for i in np.flatnonzero(~clean):
        s, k, f = _parse_one(values[i])
        std[i], kind[i], flags[i] = s, k, schema.QUALITY_SEP.join(f)
    return typed_frame(
        {schema.PHONE_STD: std, schema.PHONE_TYPE: kind, schema.QUALITY_FLAGS: flags}
    )


def standardize_phones(values: pd.Series) -> pd.DataFrame:
    """Normalize phone numbers to digits with type ``mobile`` / ``landline`` and quality flags."""
    return map_distinct(values, distinct_parser())


def distinct_parser() -> Callable[[Sequence[object]], pd.DataFrame]:
    """The function :func:`standardize_phones` maps over a column's distinct values."""
    return _phones_distinct


def _phone_columns(values: Sequence[object]) -> dict[str, np.ndarray]:
    """:func:`_phones_distinct`'s columns by a loop (no Series: one query phone); the same
    clean-mobile test by the same pattern, else :func:`_parse_one`."""
    std, kind, flags = [], [], []
    for value in values:
        if isinstance(value, str) and _CLEAN_MOBILE_RE.fullmatch(value):
            s, k, f = value, MOBILE, ""
        else:
            s, k, parsed = _parse_one(value)
            f = schema.QUALITY_SEP.join(parsed)
        std.append(s)
        kind.append(k)
        flags.append(f)
    columns = {}
    for name, column in ((schema.PHONE_STD, std), (schema.PHONE_TYPE, kind), (schema.QUALITY_FLAGS, flags)):
        array = np.empty(len(column), dtype=object)
        array[:] = column
        columns[name] = array
    return columns


def standardize_phone(value: str) -> dict:
    """:func:`standardize_phones` of one non-null value, as a dict of column -> value."""
    return map_one(value, _phone_columns)
