"""Tests for date parsing (Chinese formats, two-digit years, Excel serials) and lunar dates."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage.standardize import dates
from linkage.standardize._fillers import is_filler_text
from linkage.standardize.dates import (
    FLAGS,
    _parse_text,
    lunar_to_solar,
    parse_date,
    parse_dates,
    solar_to_lunar,
)

D = "1985-03-07"
CN_DIGITS = "〇一二三四五六七八九"


def cn_year(year: int) -> str:
    return "".join(CN_DIGITS[int(c)] for c in str(year))


def cn_small(n: int) -> str:
    tens, ones = divmod(n, 10)
    head = ("" if tens == 1 else CN_DIGITS[tens]) + "十" if tens else ""
    return head + (CN_DIGITS[ones] if ones or not tens else "")


# Parsing "as of" the last day the parser accepts, so the pivot and format tests do not depend
# on the day they run; the never-in-the-future tests below set their own day.
LATE = datetime.date(2100, 12, 31)
TODAY = datetime.date(2026, 11, 30)


def parse_one(raw, pivot_year: int = 30, today=LATE) -> tuple[str | None, str]:
    row = parse_dates(pd.Series([raw], dtype=object), pivot_year=pivot_year, today=today).iloc[0]
    return row["value"], row["quality_flags"]


@pytest.mark.parametrize(
    "raw",
    [
        "1985-03-07",
        "1985-3-7",
        "19850307",
        "1985/3/7",
        "1985.3.7",
        "1985.03.07.",
        "1985年3月7日",
        "1985年03月07日",
        "1985 年 3 月 7 日",
        "一九八五年三月七日",
        "一九八五年〇三月〇七日",
        "１９８５－０３－０７",  # full-width
        "1985-03-07 00:00:00",
        "1985-03-07T00:00:00",
        "1985-03-07T08:30:00+08:00",
        "1985/03/07 0:00",
        " 1985-03-07 ",
    ],
)
def test_formats_parse_to_iso(raw):
    assert parse_one(raw) == (D, "")


def test_chinese_numeral_with_tens():
    assert parse_one("二〇〇一年十二月三十一日") == ("2001-12-31", "")
    assert parse_one("一九九九年十月二十日") == ("1999-10-20", "")
    assert parse_one("一九九九年二月廿三日") == ("1999-02-23", "")
    assert parse_one("一九八五年十十月") == (None, "unparsed")


@pytest.mark.parametrize(
    ("raw", "pivot", "expected"),
    [
        ("85-3-7", 30, D),
        ("850307", 30, D),
        ("30-1-1", 30, "2030-01-01"),
        ("31-1-1", 30, "1931-01-01"),
        ("05-1-2", 30, "2005-01-02"),
        ("05-1-2", 4, "1905-01-02"),
        ("八五年三月七日", 30, D),
    ],
)
def test_two_digit_years_use_the_pivot(raw, pivot, expected):
    assert parse_one(raw, pivot_year=pivot) == (expected, "two_digit_year")


def test_pivot_is_checked():
    with pytest.raises(ValueError):
        parse_dates(pd.Series(["85-3-7"]), pivot_year=100)


@pytest.mark.parametrize("raw", ["31113", 31113, 31113.0, "31113.5"])
def test_excel_serial(raw):
    assert parse_one(raw) == (D, "excel_serial")


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        ("1985-02-30", "unparsed"),
        ("1985-13-01", "unparsed"),
        ("19851301", "unparsed"),
        ("1985年2月30日", "unparsed"),
        ("不详", "placeholder"),
        ("-", "placeholder"),
        ("1985-3/7", "unparsed"),
        ("12", "unparsed"),
        ("1850-01-01", "out_of_range"),
        ("2101-01-01", "out_of_range"),
        ("00010101", "out_of_range"),
        ("1985年3月", "partial"),
        ("1985年", "partial"),
        ("198503", "partial"),
        ("1985-03", "partial"),
        ("1985", "partial"),
        ("1985年13月", "unparsed"),
    ],
)
def test_problems_give_null_and_flag(raw, flag):
    assert parse_one(raw) == (None, flag)


@pytest.mark.parametrize("raw", ["", "  ", None, np.nan, pd.NaT])
def test_empty_is_null_without_flag(raw):
    assert parse_one(raw) == (None, "")


def test_date_objects_and_numbers():
    values = [pd.Timestamp(D), datetime.date(1985, 3, 7), 19850307, np.datetime64(D)]
    out = parse_dates(pd.Series(values, dtype=object))
    assert out["value"].tolist() == [D] * 4
    dt = parse_dates(pd.Series(pd.to_datetime([D, None])))
    assert dt["value"].tolist() == [D, None]


def test_index_columns_and_flags_documented():
    raw = pd.Series(
        ["1985-3-7", "bad", None, "85-3-7", "31113", "1985年3月", "1800-1-1", "2099-1-1", "不详"]
        + ["农历1985年正月十六"]
    )
    raw.index = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    out = parse_dates(raw, today=TODAY)
    assert list(out.columns) == ["value", "quality_flags"]
    assert list(out.index) == list(raw.index)
    assert set(out["quality_flags"]) - {""} == set(FLAGS)


def test_parse_date_scalar():
    assert parse_date("一九八五年三月七日") == datetime.date(1985, 3, 7)
    assert parse_date("85-3-7", pivot_year=90, today=LATE) == datetime.date(2085, 3, 7)
    assert parse_date("85-3-7", pivot_year=90, today=TODAY) == datetime.date(1985, 3, 7)
    assert parse_date("2085-3-7", today=TODAY) is None
    assert parse_date("1985-02-30") is None
    assert parse_date(None) is None
    assert parse_date(float("nan")) is None


FORMATS = [
    lambda d: d.isoformat(),
    lambda d: f"{d.year}-{d.month}-{d.day}",
    lambda d: d.strftime("%Y%m%d"),
    lambda d: f"{d.year}/{d.month}/{d.day}",
    lambda d: f"{d.year}.{d.month}.{d.day}",
    lambda d: f"{d.year}年{d.month}月{d.day}日",
    lambda d: f"{cn_year(d.year)}年{cn_small(d.month)}月{cn_small(d.day)}日",
    lambda d: d.isoformat() + " 00:00:00",
    lambda d: d.strftime("%Y/%m/%d") + " 0:00",
]


# from 1900-01-02: 1900-01-01 is a filler date (test_filler_date_is_a_placeholder)
@given(st.dates(datetime.date(1900, 1, 2), datetime.date(2100, 12, 31)))
def test_every_format_round_trips(d):
    raw = pd.Series([f(d) for f in FORMATS])
    out = parse_dates(raw, today=LATE)
    assert out["value"].tolist() == [d.isoformat()] * len(FORMATS)
    assert (out["quality_flags"] == "").all()


@given(st.integers(1000, 80000))
def test_excel_serial_round_trips(serial):
    d = datetime.date(1899, 12, 30) + datetime.timedelta(days=serial)
    if 1900 <= serial <= 2100:
        assert parse_one(str(serial)) == (None, "partial")  # four digits read as a bare year
    elif d.year > 2100:
        assert parse_one(str(serial)) == (None, "out_of_range")
    else:
        assert parse_one(str(serial)) == (d.isoformat(), "excel_serial")


@given(st.dates(datetime.date(1931, 1, 1), datetime.date(2030, 12, 31)))
def test_two_digit_year_round_trips_within_pivot_window(d):
    raw = f"{d.year % 100:02d}-{d.month}-{d.day}"
    assert parse_one(raw, pivot_year=30) == (d.isoformat(), "two_digit_year")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("29-06-15", "1929-06-15"),  # the pivot says 2029: after today, so 1929
        ("28-03-07", "1928-03-07"),
        ("30-11-02", "1930-11-02"),
        ("291203", "1929-12-03"),
        ("二九年六月十五日", "1929-06-15"),
        ("26-11-30", "2026-11-30"),  # today itself is not in the future
        ("26-12-01", "1926-12-01"),
        ("05-1-2", "2005-01-02"),
        ("65-08-21", "1965-08-21"),
    ],
)
def test_two_digit_birth_years_never_pivot_into_the_future(raw, expected):
    assert parse_one(raw, today=TODAY) == (expected, "two_digit_year")


@given(st.dates(datetime.date(1901, 1, 1), datetime.date(2100, 12, 31)), st.integers(0, 99))
def test_no_parsed_date_is_after_today(d, pivot):
    raw = pd.Series([d.isoformat(), f"{d.year % 100:02d}-{d.month}-{d.day}", d.strftime("%Y%m%d")])
    out = parse_dates(raw, pivot_year=pivot, today=TODAY)
    for value, flag in zip(out["value"], out["quality_flags"], strict=True):
        assert value is None or value <= TODAY.isoformat()
        assert (value is None) == (flag in ("future", "unparsed", "out_of_range"))
    if d > TODAY:
        assert out["value"].iloc[0] is None and out["quality_flags"].iloc[0] == "future"


@given(
    st.one_of(
        st.from_regex(
            r"[0-9]{2,4}[-/.]?[0-9]{1,2}[-/.]?[0-9]{1,2}( [0-9]{1,2}:[0-9]{2})?", fullmatch=True
        ),
        st.text(alphabet="0123456789-/.T: ", max_size=20),
    )
)
def test_vectorized_path_agrees_with_reference_parser(raw):
    # the pyarrow fast path must give exactly what the per-value parser gives
    text = raw.strip()
    expected = _parse_text(text, 30) if text else (None, "")
    if is_filler_text(text) or dates._ZERO_DATE.match(text):  # 0, '-', 0000-00-00: missing
        expected = (None, "placeholder")
    assert parse_one(raw) == expected


# ----------------------------------------------------------------------------- lunar calendar


def test_lunar_known_dates():
    assert solar_to_lunar(datetime.date(1985, 3, 7)) == datetime.date(1985, 1, 16)
    assert lunar_to_solar(datetime.date(1985, 1, 16)) == datetime.date(1985, 3, 7)
    assert lunar_to_solar(datetime.date(2000, 1, 1)) == datetime.date(2000, 2, 5)  # 春节 2000
    # 2020 has a leap fourth month
    assert lunar_to_solar(datetime.date(2020, 4, 10), leap_month=True) == datetime.date(2020, 6, 1)
    assert lunar_to_solar(datetime.date(2020, 4, 10)) == datetime.date(2020, 5, 2)


@pytest.mark.parametrize(
    "raw, solar",
    [
        ("1985-01-16（农历）", "1985-03-07"),  # full-width brackets after the date
        ("1985-01-16 (阴历)", "1985-03-07"),
        ("农历1985年正月十六", "1985-03-07"),  # 正月 is the first month
        ("农历1972年正月初一", "1972-02-15"),  # 春节 1972
        ("农历2000年正月初一", "2000-02-05"),
        ("農曆2020年閏四月初十", "2020-06-01"),  # traditional, a leap month
        ("农历2020年四月初十", "2020-05-02"),
        ("农历1958年腊月二十", "1959-01-28"),  # 腊月 is the twelfth, in the next solar year
        ("农历1960年八月廿八", "1960-10-18"),
    ],
)
def test_dates_noted_as_lunar_become_solar(raw, solar):
    out = parse_dates(pd.Series([raw]))
    assert out["value"].iloc[0] == solar
    assert out["quality_flags"].iloc[0] == "lunar"
    assert "lunar" in FLAGS


@pytest.mark.parametrize("raw", ["农历", "农历2021年正月三十", "农历2021年闰正月初五"])
def test_impossible_lunar_notes_are_unparsed(raw):
    # 2021's first month has 29 days and no leap
    out = parse_dates(pd.Series([raw]))
    assert out["value"].iloc[0] is None and out["quality_flags"].iloc[0] == "unparsed"


def test_lunar_impossible_dates():
    assert lunar_to_solar(datetime.date(1899, 5, 5)) is None  # before lunardate's table
    assert lunar_to_solar(datetime.date(2021, 1, 30)) is None  # 2021 month 1 has 29 days
    assert lunar_to_solar(datetime.date(2021, 1, 5), leap_month=True) is None  # no leap month 1


@given(st.dates(datetime.date(1940, 1, 1), datetime.date(2019, 12, 31)))
def test_lunar_reading_falls_19_to_55_days_early(d):
    lunar = solar_to_lunar(d)
    if lunar is None:  # lunar day 30 of a month that has no 30th in the solar calendar
        return
    assert 19 <= (d - lunar).days <= 55
    back = lunar_to_solar(lunar)
    leap_back = lunar_to_solar(lunar, leap_month=True)
    assert d in (back, leap_back)


def test_lunar_to_solar_days_equals_lunar_to_solar_for_every_date():
    """The table conversion, for every solar-valid year/month/day of lunardate's range and
    a year each side, both readings (plain and leap month), against the per-date one."""
    import datetime

    import numpy as np

    from linkage.standardize.dates import lunar_to_solar_days

    epoch = datetime.date(1970, 1, 1)
    dates = [
        datetime.date(1899, 1, 1) + datetime.timedelta(days=i)
        for i in range((datetime.date(2101, 12, 31) - datetime.date(1899, 1, 1)).days + 1)
    ]
    year = np.array([d.year for d in dates])
    month = np.array([d.month for d in dates])
    day = np.array([d.day for d in dates])
    for leap in (False, True):
        days, exists = lunar_to_solar_days(year, month, day, leap)
        got = [epoch + datetime.timedelta(days=int(n)) if e else None for n, e in zip(days, exists)]
        assert got == [lunar_to_solar(d, leap) for d in dates]
        assert exists.sum() > (2000 if leap else 70000)  # both readings were exercised
    # outside 1..12 / 1..31 (no solar date): no lunar date either
    assert not lunar_to_solar_days(np.array([2000, 2000]), np.array([0, 13]), np.array([1, 1]))[1].any()


_ODD_SPACES = [" ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\x1c", "\u2003", ""]


@given(
    st.one_of(
        st.from_regex(
            r"\s*[0-9]{4}[-/.]?[0-9]{1,3}[-/.]?[0-9]{1,3}([ T]+[0-9]{1,2}:[0-9]{2}(:[0-9]{2})?)?\s*",
            fullmatch=True,
        ),
        st.text(alphabet="0123456789-/.T: \n\t１\u3000", max_size=22),
        st.builds(
            lambda a, d, b: a + d + b,
            st.sampled_from(_ODD_SPACES),
            st.dates(datetime.date(1850, 1, 1), datetime.date(2150, 12, 31)).map(
                lambda d: d.strftime("%Y%m%d")
            ),
            st.sampled_from(_ODD_SPACES),
        ),
    )
)
def test_one_value_fast_path_equals_the_arrow_fast_path(raw):
    # the query date's path without Arrow: where it answers, it answers as Arrow's pattern
    # does (RE2's ASCII \d, Unicode whitespace trimmed, $ only at the very end)
    from linkage.standardize.dates import _fast_parse, _fast_parse_one, parse_date_value

    one = _fast_parse_one(raw)
    arrow = _fast_parse([raw, None])[0]  # two values: the Arrow path
    if one is not False:
        assert one == arrow
    assert _fast_parse([raw])[0] == arrow
    if raw:
        # a query's date (one value) reads as the same value among others
        batch = parse_dates(pd.Series([raw, "x"], dtype=object), today=LATE).iloc[0]
        assert parse_date_value(raw, today=LATE) == {
            "value": batch["value"],
            "quality_flags": batch["quality_flags"],
        }


def test_one_value_fast_path_answers_the_plain_forms():
    from linkage.standardize.dates import _fast_parse_one

    assert _fast_parse_one("1985-03-07") == D
    assert _fast_parse_one(" 1985/3/7 12:00\n") == D
    assert _fast_parse_one("19850307") == D
    assert _fast_parse_one("1985-02-29") is None  # the pattern matched; not a date
    assert _fast_parse_one("1985-3/7") is None  # mixed separators
    assert _fast_parse_one("1985037") is None  # compact: YYYYMMDD only
    assert _fast_parse_one("1899-12-31") is None
    assert _fast_parse_one("1985０３０７") is False  # full-width digits: Arrow decides
    assert _fast_parse_one("1985-03-07\n\x1c") is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # a database export's timestamps: Beijing midnight is 16:00 UTC the day before
        ("1985-03-06T16:00:00Z", "1985-03-07"),
        ("1985-03-06 16:00:00+00:00", "1985-03-07"),
        ("19850306T16:00Z", "1985-03-07"),
        ("1985-03-07T00:00:00Z", "1985-03-07"),
        ("1985-03-07T00:00:00+08:00", "1985-03-07"),
        ("1985-03-07T23:30:00+0800", "1985-03-07"),
        ("1985-03-07 10:00", "1985-03-07"),  # no zone: the clock time is Beijing's already
        # day first with a four-digit year, where the order shows
        ("26/11/1971", "1971-11-26"),
        ("26-11-1971 10:00", "1971-11-26"),
        ("11/26/1971", "1971-11-26"),
        ("04/04/1971", "1971-04-04"),
    ],
)
def test_zoned_timestamps_and_day_first_dates(raw, expected):
    assert parse_one(raw) == (expected, "")
    assert _parse_text(raw, 30) == (expected, "")


@pytest.mark.parametrize(
    "raw", ["03/04/1971", "31/02/1971", "1985-03-06T16:00:00-25:00", "1985-03-06T24:00:00Z"]
)
def test_ambiguous_day_first_and_impossible_zones_are_unparsed(raw):
    assert parse_one(raw) == (None, "unparsed")


def test_filler_date_is_a_placeholder():
    assert parse_one("1900-01-01") == (None, "placeholder")
    assert parse_one("19000101") == (None, "placeholder")
    assert parse_one("1900-01-02") == ("1900-01-02", "")


@pytest.mark.parametrize(
    "raw", ["0000-00-00", "00000000", "0000-00-00 00:00:00", "0000/0/0", "0000年00月00日"]
)
def test_zero_date_is_a_placeholder(raw):
    # a database's "no date": missing, like 不详, not an invalid date
    assert parse_one(raw) == (None, "placeholder")


def test_a_year_with_zero_month_and_day_is_no_zero_date():
    assert parse_one("1985-00-00")[1] != "placeholder"


def test_two_digit_birth_year_read_a_century_earlier_from_the_record():
    """``26-11-27`` is 2026-11-27 by the pivot; registered in 2020, or with an ID born
    1926-11-27, it is 1926 (and the ID is the person's own); with nothing to say otherwise
    it stays 2026."""
    import pandas as pd

    from linkage.standardize.combine import standardize
    from linkage.standardize.idnumber import id_check_char

    own_id = "51052119261127099" + id_check_char("51052119261127099")
    records = standardize(
        pd.DataFrame(
            {
                "source": "health",
                "record_id": ["1", "2", "3"],
                "name": ["李福俊"] * 3,
                "birth_date": ["26-11-27", "26-11-27", "26-11-27"],
                "registered_at": ["2020-05-01", None, None],
                "id_number": [None, own_id, None],
            }
        )
    )
    assert records["birth_date_std"].tolist() == ["1926-11-27", "1926-11-27", "2026-11-27"]
    flags = records["quality_flags"].tolist()
    assert all("birth_date_previous_century" in f for f in flags[:2])
    assert "birth_date_previous_century" not in flags[2]
    assert not any("id_not_own" in f or "id_birth_conflict" in f for f in flags)
