"""Dates as Chinese registries write them -> ISO strings, plus lunar/solar birthday conversion.

Imports only _distinct and lunardate from outside the standard library; no other stage.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from lunardate import LunarDate

from linkage.standardize._distinct import map_distinct, map_one, typed_frame
from linkage.standardize._fillers import is_filler_text

logger = logging.getLogger(__name__)

FLAGS: dict[str, str] = {
    "unparsed": "not a recognizable date, or an impossible one (month 13, 30 February)",
    "two_digit_year": "two-digit year expanded with the pivot, never into the future (informational)",
    "future": "a date after today: cannot be right; set to null",
    "excel_serial": "Excel serial day number converted (informational)",
    "out_of_range": "year before 1900 or after 2100",
    "partial": "year or year-month only, no day",
    "lunar": "written as a lunar-calendar date (农历, 阴历: 1942-12-13（农历）, 农历1972年二月初十); "
    "converted to the solar date IDs carry",
    "placeholder": "a filler such as 不详, 无, '-', 1900-01-01 (a system's default date) or "
    "0000-00-00 (a database's zero date) "
    "instead of a date; set to null, counted as missing",
}

# Cross-field flag set by the standardize stage (a record's own dates disagree).
CROSS_FLAGS: dict[str, str] = {
    "birth_date_after_registered": "birth date after the record's registration date: one of the"
    " two is wrong (kept; weigh with care)",
    "birth_date_previous_century": "a two-digit birth year read a century earlier, as the "
    "record's registration date or its ID's birth date says (26-11-27 for someone born 1926)",
}

VALUE = "value"
QUALITY_FLAGS = "quality_flags"

MIN_YEAR, MAX_YEAR = 1900, 2100
# the first day a registry accepts, written by systems for an unknown date: nobody born then
# is alive, and read as a birth date it made a person's own ID look like a guardian's
FILLER_DATES = frozenset({"1900-01-01"})
# the zero date databases write for "no date" (MySQL's 0000-00-00, 00000000, 0000/00/00 00:00)
_ZERO_DATE = re.compile(r"^0{4}[-/.年]?0{1,2}[-/.月]?0{1,2}日?(?:[ T]0{1,2}:0{2}(?::0{2}(?:\.0+)?)?)?$")
# Excel's day 0 is 1899-12-30 (its 1900 leap-year bug shifts serials from day 61 on).
_EXCEL_EPOCH = datetime.date(1899, 12, 30)
_EXCEL_MIN, _EXCEL_MAX = 1000, 80000

# Written by hand: dateutil fails on 1985年3月7日, dateparser on 一九八五年三月七日 and 19850307,
# and pandas.to_datetime(format="mixed") returns NaT for both.
_TIME = (
    r"(?:[ T]+(?P<hh>\d{1,2}):(?P<mi>\d{1,2})(?::\d{1,2}(?:\.\d+)?)?\s*"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?)?"
)
# Beijing time: a timestamp with a zone (a database export's 1985-03-06T16:00:00Z) names the
# day in Beijing, where the registry recorded it
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))
_SEPARATED = re.compile(
    rf"(?P<y>\d{{4}}|\d{{2}})\s*(?P<s>[-/.])\s*(?P<m>\d{{1,2}})\s*(?P=s)\s*(?P<d>\d{{1,2}})\.?{_TIME}"
)
_SEPARATED_YM = re.compile(r"(?P<y>\d{4})\s*[-/.]\s*(?P<m>\d{1,2})")
_COMPACT8 = re.compile(rf"(?P<y>\d{{4}})(?P<m>\d{{2}})(?P<d>\d{{2}}){_TIME}")
# day first with a four-digit year (26/11/1971: Hong Kong forms, spreadsheets in such locales)
_DAY_FIRST = re.compile(
    rf"(?P<a>\d{{1,2}})\s*(?P<s>[-/.])\s*(?P<b>\d{{1,2}})\s*(?P=s)\s*(?P<y>\d{{4}}){_TIME}"
)
_COMPACT6 = re.compile(r"(?P<a>\d{2})(?P<b>\d{2})(?P<c>\d{2})")
_NUMBER = re.compile(r"(?P<n>\d{1,5})(?:\.\d+)?")
_CN_DIGIT = "0-9〇零○O一二三四五六七八九"
_CHINESE = re.compile(
    rf"(?P<y>[{_CN_DIGIT}]{{2,4}})\s*年\s*"
    rf"(?:(?P<m>[{_CN_DIGIT}十]{{1,3}})\s*月\s*"
    rf"(?:(?P<d>[{_CN_DIGIT}十廿卅]{{1,3}})\s*[日号]?)?)?{_TIME}"
)
# Vectorized fast path (RE2 via pyarrow) for the bulk: four-digit year, one separator kind or
# none, optional time. Anything it does not accept cleanly goes through _parse_text.
_FAST = (
    r"^(?P<y>\d{4})(?P<s1>[-/.]?)(?P<m>\d{1,2})(?P<s2>[-/.]?)(?P<d>\d{1,2})"
    r"(?:[ T]+\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d+)?)?)?$"
)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_DIGITS = {c: i for i, c in enumerate("0123456789")}
_DIGITS.update({"〇": 0, "零": 0, "○": 0, "O": 0})
_DIGITS.update({c: i for i, c in enumerate("一二三四五六七八九", start=1)})


def _cn_number(text: str) -> int | None:
    """Small number written in Arabic or Chinese numerals: '07', '〇七', '十二', '三十一', '廿三'."""
    try:
        return _cn_number_unchecked(text)
    except KeyError:  # a stray 十 or 廿 where a digit belongs
        return None


def _cn_number_unchecked(text: str) -> int | None:
    if text[0] in "廿卅":
        head, rest = (20 if text[0] == "廿" else 30), text[1:]
        return head + _DIGITS[rest] if rest else head
    if "十" in text:
        tens, _, ones = text.partition("十")
        if len(tens) > 1 or len(ones) > 1:
            return None
        return (_DIGITS[tens] if tens else 1) * 10 + (_DIGITS[ones] if ones else 0)
    value = 0
    for ch in text:  # positional digits: 一九八五 -> 1985
        value = value * 10 + _DIGITS[ch]
    return value


def _expand_year(year: int, digits: int, pivot_year: int) -> tuple[int, bool]:
    """Four-digit year from a possibly two-digit one: <= pivot -> 20xx, else 19xx."""
    if digits == 2:
        return (2000 + year if year <= pivot_year else 1900 + year), True
    return year, False


def _finish(year: int, month: int, day: int, flag: str = "") -> tuple[str | None, str]:
    """ISO string and flag for a year-month-day triple, checking range and calendar."""
    if year < MIN_YEAR or year > MAX_YEAR:
        return None, "out_of_range"
    try:
        return datetime.date(year, month, day).isoformat(), flag
    except ValueError:
        return None, "unparsed"


def _zoned(result: tuple[str | None, str], match: re.Match) -> tuple[str | None, str]:
    """The date of a parsed timestamp with a zone (``Z``, ``+08:00``) in Beijing time."""
    zone = match["zone"]
    if result[0] is None or not zone:
        return result
    if zone == "Z":
        tz = datetime.UTC
    else:
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None, "unparsed"
        sign = -1 if zone[0] == "-" else 1
        tz = datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
    hour, minute = int(match["hh"]), int(match["mi"])
    if hour > 23 or minute > 59:
        return None, "unparsed"
    day = datetime.date.fromisoformat(result[0])
    moment = datetime.datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
    local = moment.astimezone(_BEIJING).date()
    return _finish(local.year, local.month, local.day, result[1])


def _partial(year: int, month: int | None) -> tuple[str | None, str]:
    """Flag for a date without its day (or month): partial if plausible."""
    if year < MIN_YEAR or year > MAX_YEAR:
        return None, "out_of_range"
    if month is not None and not 1 <= month <= 12:
        return None, "unparsed"
    return None, "partial"


# A lunar-calendar note before or after the date (NFKC has made （） into ()).
_LUNAR_NOTE = re.compile(
    r"^\s*(?:农历|阴历|旧历|農曆|陰曆|舊曆)\s*|\s*\(?\s*(?:农历|阴历|旧历|農曆|陰曆|舊曆)\s*\)?\s*$"
)
# Lunar month and day words: 正月 (1), 冬月 (11), 腊月 (12), 初一..初十 (1..10).
_LUNAR_WORDS = (
    ("正月", "一月"), ("冬月", "十一月"), ("腊月", "十二月"), ("臘月", "十二月"), ("初十", "十"),
    ("初", ""),
)  # fmt: skip


def _parse_lunar(text: str, pivot_year: int) -> tuple[str | None, str]:
    """A date noted as lunar, read as written and converted to the solar date (lunardate);
    ``闰`` before the month marks a leap month. Source of the calendar: lunardate's table
    (Hong Kong Observatory data, 1900-2099)."""
    body = _LUNAR_NOTE.sub("", text)
    leap = "闰" in body or "閏" in body
    body = body.replace("闰", "").replace("閏", "")
    for word, plain in _LUNAR_WORDS:
        body = body.replace(word, plain)
    if not body:
        return None, "unparsed"
    iso, flag = _parse_text(body, pivot_year)
    if iso is None:
        return None, flag or "unparsed"
    solar = lunar_to_solar(datetime.date.fromisoformat(iso), leap)
    if solar is None:  # day 30 of a short month, or a leap month that year lacks
        return None, "unparsed"
    return _finish(solar.year, solar.month, solar.day, "lunar")


def _parse_text(text: str, pivot_year: int) -> tuple[str | None, str]:
    """Parse one normalized date string; returns (ISO date or None, flag or '')."""
    if (m := _SEPARATED.fullmatch(text)) is not None:
        y, two = _expand_year(int(m["y"]), len(m["y"]), pivot_year)
        return _zoned(_finish(y, int(m["m"]), int(m["d"]), "two_digit_year" if two else ""), m)
    if (m := _COMPACT8.fullmatch(text)) is not None:
        return _zoned(_finish(int(m["y"]), int(m["m"]), int(m["d"])), m)
    if (m := _DAY_FIRST.fullmatch(text)) is not None:
        a, b = int(m["a"]), int(m["b"])
        if a <= 12 and b <= 12 and a != b:
            return None, "unparsed"  # 03/04/1971: day-first or month-first cannot be told
        day, month = (b, a) if b > 12 else (a, b)
        return _zoned(_finish(int(m["y"]), month, day), m)
    if (m := _CHINESE.fullmatch(text)) is not None:
        y_text = m["y"]
        year = _cn_number(y_text)
        month = _cn_number(m["m"]) if m["m"] else None
        day = _cn_number(m["d"]) if m["d"] else None
        if (
            year is None
            or len(y_text) == 3
            or (month is None and m["m"])
            or (day is None and m["d"])
        ):
            return None, "unparsed"
        y, two = _expand_year(year, len(y_text), pivot_year)
        if month is None or day is None:
            return _partial(y, month)
        return _finish(y, month, day, "two_digit_year" if two else "")
    if (m := _COMPACT6.fullmatch(text)) is not None:
        a, b, c = int(m["a"]), int(m["b"]), int(m["c"])
        # 出生年月 fields hold YYYYMM (198503); read that before YYMMDD (850307).
        if a in (19, 20) and 1 <= c <= 12:
            return _partial(a * 100 + b, c)
        y, _ = _expand_year(a, 2, pivot_year)
        return _finish(y, b, c, "two_digit_year")
    if (m := _SEPARATED_YM.fullmatch(text)) is not None:
        return _partial(int(m["y"]), int(m["m"]))
    if (m := _NUMBER.fullmatch(text)) is not None:
        number = int(m["n"])
        if len(m["n"]) == 4 and MIN_YEAR <= number <= MAX_YEAR and "." not in text:
            return None, "partial"  # a bare year
        if _EXCEL_MIN <= number <= _EXCEL_MAX:
            day = _EXCEL_EPOCH + datetime.timedelta(days=number)
            return _finish(day.year, day.month, day.day, "excel_serial")
    return None, "unparsed"


def _as_text(value: object) -> str | tuple[str | None, str]:
    """Raw value as text, or a finished result for values that already are dates."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, datetime.date):  # includes datetime and pd.Timestamp
        return _finish(value.year, value.month, value.day)
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            return None, ""
        # 19850307.0 or 31113.0 after a numeric column round trip
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return str(value)


# _FAST for one ASCII value by Python's re (ASCII \d as RE2's; fullmatch, whose $ cannot
# stop before a trailing newline as re's $ may)
_FAST_ONE = re.compile(_FAST, re.ASCII)


def _fast_parse_one(value: object) -> str | None | bool:
    """:func:`_fast_parse` of one value without Arrow (~0.3 ms of compute calls a query
    date): the ISO date, None where the pattern matched but the date is not valid, False
    where this cannot tell (not ASCII, or the pattern missed after trimming ASCII
    whitespace, where Arrow's Unicode trim may have trimmed more): ask Arrow then."""
    if not isinstance(value, str) or not value.isascii():
        return False
    found = _FAST_ONE.fullmatch(value.strip(" \t\n\r\x0b\x0c"))
    if found is None:
        return False
    y_s, s1, m_s, s2, d_s = found.group("y", "s1", "m", "s2", "d")
    year, month, day = int(y_s), int(m_s), int(d_s)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    dim = int(_DAYS_IN_MONTH[min(max(month, 1), 12) - 1]) + (leap and month == 2)
    ok = (
        s1 == s2
        # without separators only YYYYMMDD is unambiguous
        and (len(s1) > 0 or (len(m_s) == 2 and len(d_s) == 2))
        and MIN_YEAR <= year <= MAX_YEAR
        and 1 <= month <= 12
        and 1 <= day <= dim
    )
    return f"{y_s}-{m_s:0>2}-{d_s:0>2}" if ok else None


def _fast_parse(values: Sequence) -> np.ndarray:
    """ISO strings for values the vectorized pattern parses cleanly; None elsewhere."""
    if len(values) == 1:
        one = _fast_parse_one(values[0])
        if one is not False:
            out = np.full(1, None, dtype=object)
            out[0] = one
            return out
    text = pc.utf8_trim_whitespace(
        pa.array([v if isinstance(v, str) else None for v in values], type=pa.string())
    )
    parts = pc.extract_regex(text, _FAST)
    matched = parts.is_valid().to_numpy(zero_copy_only=False)
    out = np.full(len(values), None, dtype=object)
    if not matched.any():
        return out
    parts = parts.filter(pa.array(matched))
    y_s, s1, m_s, s2, d_s = (parts.field(i) for i in range(5))
    year, month, day = (pc.cast(x, pa.int64()).to_numpy() for x in (y_s, m_s, d_s))
    same_sep = pc.equal(s1, s2).to_numpy(zero_copy_only=False)
    # without separators only YYYYMMDD is unambiguous
    compact_ok = (pc.utf8_length(s1).to_numpy() > 0) | (
        (pc.utf8_length(m_s).to_numpy() == 2) & (pc.utf8_length(d_s).to_numpy() == 2)
    )
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(month, 1, 12) - 1] + (leap & (month == 2))
    ok = (
        same_sep
        & compact_ok
        & (year >= MIN_YEAR)
        & (year <= MAX_YEAR)
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= dim)
    )
    iso = pc.binary_join_element_wise(
        y_s, pc.utf8_lpad(m_s, width=2, padding="0"), pc.utf8_lpad(d_s, width=2, padding="0"), "-"
    ).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(matched)
    out[rows[ok]] = iso[ok]
    return out


def _not_future(iso: str, flag: str, limit: str) -> tuple[str | None, str]:
    """A date after ``limit``: a two-digit year belongs to the century before (29-06-15 read in
    2026 is 1929, never 2029: opensanctions#4930); any other such date cannot be right."""
    if flag == "two_digit_year":
        try:
            earlier = datetime.date(int(iso[:4]) - 100, int(iso[5:7]), int(iso[8:10])).isoformat()
        except ValueError:
            return None, "unparsed"
        if earlier <= limit and earlier[:4] >= str(MIN_YEAR):
            return earlier, flag
    return None, "future"


def _parse_distinct(values: Sequence, pivot_year: int, limit: str | None = None) -> pd.DataFrame:
    """Parse distinct raw dates; one output row per input value, in order. Dates after
    ``limit`` (ISO, default today) become null, flagged ``future``."""
    return typed_frame(_parse_columns(values, pivot_year, limit))


def _parse_columns(
    values: Sequence, pivot_year: int, limit: str | None = None
) -> dict[str, np.ndarray]:
    """:func:`_parse_distinct`'s columns as numpy arrays (no frame: one query date)."""
    iso = _fast_parse(values)
    flags = np.full(len(values), "", dtype=object)
    for i in np.flatnonzero(pd.isna(iso)):
        text = _as_text(values[i])
        if isinstance(text, tuple):
            result = text
        else:
            text = unicodedata.normalize("NFKC", text).strip()
            if is_filler_text(text) or _ZERO_DATE.match(text):
                result = (None, "placeholder")
            elif _LUNAR_NOTE.search(text) is not None:
                result = _parse_lunar(text, pivot_year)
            else:
                result = _parse_text(text, pivot_year) if text else (None, "")
        iso[i], flags[i] = result
    limit = limit or datetime.date.today().isoformat()
    for i in np.flatnonzero(pd.notna(iso)):
        if iso[i] > limit:
            iso[i], flags[i] = _not_future(iso[i], flags[i], limit)
        elif iso[i] in FILLER_DATES:
            iso[i], flags[i] = None, "placeholder"
    return {VALUE: iso, QUALITY_FLAGS: flags}


def parse_dates(
    values: pd.Series, pivot_year: int = 30, today: datetime.date | None = None
) -> pd.DataFrame:
    """Parse raw dates to ISO strings with one bare flag code per value, on the same index.

    Columns ``value`` (ISO date or None) and ``quality_flags`` (one bare code or ""). A date
    after ``today`` (default: the machine's date) is set to null and flagged ``future``: no
    registry records a birth, or a registration, that has not happened yet.
    """
    return map_distinct(values, distinct_parser(pivot_year, today))


def distinct_parser(
    pivot_year: int = 30, today: datetime.date | None = None
) -> Callable[[Sequence], pd.DataFrame]:
    """The function :func:`parse_dates` maps over a column's distinct values. Raises
    ValueError for a ``pivot_year`` outside 0..99."""
    if not 0 <= pivot_year <= 99:
        raise ValueError(f"pivot_year must be 0..99, got {pivot_year}")
    limit = (today or datetime.date.today()).isoformat()
    return functools.partial(_parse_distinct, pivot_year=pivot_year, limit=limit)


def parse_date_value(
    value: str, pivot_year: int = 30, today: datetime.date | None = None
) -> dict:
    """:func:`parse_dates` of one non-null value: ``value`` (ISO or None), ``quality_flags``."""
    if not 0 <= pivot_year <= 99:
        raise ValueError(f"pivot_year must be 0..99, got {pivot_year}")
    limit = (today or datetime.date.today()).isoformat()
    return map_one(value, functools.partial(_parse_columns, pivot_year=pivot_year, limit=limit))


def parse_date(
    s: object, pivot_year: int = 30, today: datetime.date | None = None
) -> datetime.date | None:
    """Parse one raw date; None when empty, unparseable or after ``today``."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return None
    limit = today.isoformat() if today else None
    iso = _parse_distinct([s], pivot_year, limit)[VALUE].iloc[0]
    return datetime.date.fromisoformat(iso) if iso else None


def lunar_to_solar(d: datetime.date, leap_month: bool = False) -> datetime.date | None:
    """Read d's year/month/day as a lunar date and return the solar date, or None if impossible."""
    try:
        return LunarDate(d.year, d.month, d.day, leap_month).to_solar_date()
    except ValueError:
        return None


# The years lunardate covers (its table runs from lunar 1900 to lunar 2099).
_LUNAR_YEARS = range(1900, 2100)


@functools.lru_cache(maxsize=1)
def _lunar_months() -> tuple[np.ndarray, np.ndarray]:
    """Day number (days since 1970-01-01) of the first day and length of every lunar month,
    indexed [year - 1900, month - 1, leap]; length 0 where the month does not exist.

    Built from lunardate itself (its first day and whether day 30 exists, per month), so the
    vectorized conversion equals ``lunar_to_solar`` value for value (a test checks every
    year, month and day); ~5,000 calls once, instead of one per date to convert.
    """
    epoch = datetime.date(1970, 1, 1)
    start = np.zeros((len(_LUNAR_YEARS), 12, 2), dtype=np.int64)
    length = np.zeros((len(_LUNAR_YEARS), 12, 2), dtype=np.int64)
    for i, year in enumerate(_LUNAR_YEARS):
        leap = LunarDate.leap_month_for_year(year)
        for month in range(1, 13):
            for is_leap in (False, True) if month == leap else (False,):
                first = lunar_to_solar(datetime.date(2000, month, 1).replace(year=year), is_leap)
                if first is None:
                    continue
                start[i, month - 1, int(is_leap)] = (first - epoch).days
                try:
                    LunarDate(year, month, 30, is_leap).to_solar_date()
                    length[i, month - 1, int(is_leap)] = 30
                except ValueError:
                    length[i, month - 1, int(is_leap)] = 29
    return start, length


def lunar_to_solar_days(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, leap_month: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lunar_to_solar` of many dates at once: (day numbers, days since 1970-01-01;
    exists) where ``exists`` is False for a lunar date that does not exist (year outside
    1900-2099, month or day out of range; its day number is then 0). ``year``, ``month``,
    ``day``: integer arrays of equal length."""
    start, length = _lunar_months()
    year, month, day = (np.asarray(a, dtype=np.int64) for a in (year, month, day))
    days = np.zeros(len(year), dtype=np.int64)
    exists = np.zeros(len(year), dtype=bool)
    ok = (year >= _LUNAR_YEARS.start) & (year < _LUNAR_YEARS.stop) & (month >= 1) & (month <= 12)
    rows = np.flatnonzero(ok)
    y, m, d = year[rows] - _LUNAR_YEARS.start, month[rows] - 1, day[rows]
    first, size = start[y, m, int(leap_month)], length[y, m, int(leap_month)]
    fits = (size > 0) & (d >= 1) & (d <= size)
    days[rows[fits]] = first[fits] + d[fits] - 1
    exists[rows[fits]] = True
    return days, exists


def solar_to_lunar(d: datetime.date) -> datetime.date | None:
    """Lunar year/month/day of a solar date, as a date (None if e.g. lunar day 30 of month 2)."""
    try:
        lunar = LunarDate.from_solar_date(d.year, d.month, d.day)
        return datetime.date(lunar.year, lunar.month, lunar.day)
    except ValueError:
        return None
