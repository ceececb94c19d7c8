"""Gender and ethnicity normalization: tables, variants, flags and round trips."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage import schema
from linkage.standardize import demographics
from linkage.standardize.demographics import (
    ETHNICITIES,
    ETHNICITY_CODE_BY_NAME,
    ETHNICITY_NAME_BY_CODE,
    standardize_ethnicity,
    standardize_gender,
)


def _gender(value: object) -> tuple[object, str]:
    row = standardize_gender(pd.Series([value], dtype=object)).iloc[0]
    return row[schema.GENDER_STD], row[schema.QUALITY_FLAGS]


def _ethnicity(value: object) -> tuple[object, object, str]:
    row = standardize_ethnicity(pd.Series([value], dtype=object)).iloc[0]
    return row[schema.ETHNICITY_STD], row[schema.ETHNICITY_CODE], row[schema.QUALITY_FLAGS]


@pytest.mark.parametrize(
    "raw",
    ["男", "男性", "M", "m", "male", "MALE", "1", 1, 1.0, "Ｍ", "１", " 男 ", "男　"],
)
def test_gender_male_forms(raw):
    assert _gender(raw) == ("M", "")


@pytest.mark.parametrize("raw", ["女", "女性", "F", "f", "female", "2", 2, "Ｆ", "２"])
def test_gender_female_forms(raw):
    assert _gender(raw) == ("F", "")


@pytest.mark.parametrize("raw", ["", "   ", None])
def test_gender_blank_is_null_without_flag(raw):
    assert _gender(raw) == (None, "")


# An explicit unknown and a filler are the same to the profile: missing, not invalid (the
# README's rule for a filler in any field).
@pytest.mark.parametrize(
    "raw", ["0", "9", 9, "未知", "未说明的性别", "不详", "无", "暂无", "-", "?", "N/A", "x"]
)
def test_gender_unknown_or_filler_is_null_flagged_placeholder(raw):
    assert _gender(raw) == (None, "gender_placeholder")


@pytest.mark.parametrize("raw", ["3", "男女", "boy", "女的?"])
def test_gender_unparsed_is_flagged(raw):
    assert _gender(raw) == (None, "gender_unparsed")


def test_gender_keeps_index_and_nulls():
    values = pd.Series(["男", None, "女", "?", "男"], index=[10, 11, 12, 13, 14], dtype=object)
    out = standardize_gender(values)
    assert list(out.index) == [10, 11, 12, 13, 14]
    assert list(out.columns) == [schema.GENDER_STD, schema.QUALITY_FLAGS]
    assert out[schema.GENDER_STD].tolist() == ["M", None, "F", None, "M"]
    assert out[schema.QUALITY_FLAGS].tolist() == ["", "", "", "gender_placeholder", ""]


def test_ethnicity_table_is_gb3304():
    codes = [code for code, _ in ETHNICITIES]
    assert codes == [f"{i:02d}" for i in range(1, 57)] + ["97", "98"]
    names = [name for _, name in ETHNICITIES]
    assert len(set(names)) == len(names) == 58
    expected = {
        "01": "汉族",
        "02": "蒙古族",
        "03": "回族",
        "04": "藏族",
        "05": "维吾尔族",
        "06": "苗族",
        "10": "朝鲜族",
        "11": "满族",
        "15": "土家族",
        "29": "柯尔克孜族",
        "36": "毛南族",
        "43": "乌孜别克族",
        "46": "德昂族",
        "49": "京族",
        "55": "珞巴族",
        "56": "基诺族",
        "97": "其他",
        "98": "外国血统中国籍人士",
    }
    for code, name in expected.items():
        assert ETHNICITY_NAME_BY_CODE[code] == name


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("汉族", "01"),
        ("汉", "01"),
        ("维吾尔", "05"),
        ("维族", "05"),
        ("蒙族", "02"),
        ("蒙古", "02"),
        ("漢族", "01"),
        ("維吾爾族", "05"),
        ("鄂倫春族", "52"),
        ("1", "01"),
        ("01", "01"),
        ("5", "05"),
        (5, "05"),
        (5.0, "05"),
        ("０５", "05"),
        (" 回 族 ", "03"),
        ("汉族人", "01"),
        ("毛难族", "36"),
        ("崩龙族", "46"),
        ("其它", "97"),
        ("97", "97"),
        ("外国血统", "98"),
    ],
)
def test_ethnicity_variants(raw, code):
    assert _ethnicity(raw) == (ETHNICITY_NAME_BY_CODE[code], code, "")


@pytest.mark.parametrize("raw", ["哈族", "57", "火星族", "汉维"])
def test_ethnicity_unparsed_is_flagged(raw):
    assert _ethnicity(raw) == (None, None, "ethnicity_unparsed")


@pytest.mark.parametrize("raw", ["", None])
def test_ethnicity_blank_is_null_without_flag(raw):
    assert _ethnicity(raw) == (None, None, "")


@pytest.mark.parametrize("raw", ["未知", "不详", "未说明民族", "99", "无", "-", "0", "N/A"])
def test_ethnicity_unknown_or_filler_is_null_flagged_placeholder(raw):
    assert _ethnicity(raw) == (None, None, "ethnicity_placeholder")


@given(st.sampled_from(ETHNICITIES), st.booleans(), st.booleans())
def test_ethnicity_round_trip(entry, drop_zu, as_int):
    code, name = entry
    assert ETHNICITY_CODE_BY_NAME[ETHNICITY_NAME_BY_CODE[code]] == code
    spelled = name.removesuffix("族") if drop_zu else name
    assert _ethnicity(spelled)[:2] == (name, code)
    numeric = int(code) if as_int else code
    assert _ethnicity(numeric)[:2] == (name, code)


@given(st.sampled_from(["M", "F"]))
def test_gender_round_trip_through_codes(gender):
    # GB/T 2261.1 code and Chinese word both come back to the same value
    code = {"M": "1", "F": "2"}[gender]
    word = {"M": "男", "F": "女"}[gender]
    assert _gender(code)[0] == _gender(word)[0] == _gender(gender)[0] == gender


@given(st.lists(st.text(max_size=6) | st.none(), max_size=30))
def test_outputs_are_well_formed(values):
    series = pd.Series(values, dtype=object)
    for out in (standardize_gender(series), standardize_ethnicity(series)):
        assert out.index.equals(series.index)
        for flags in out[schema.QUALITY_FLAGS]:
            assert flags == "" or all(f in demographics.FLAGS for f in flags.split("|"))
        value_col = out.columns[0]
        # a value is either parsed or null; never both parsed and flagged
        parsed = out[value_col].notna()
        assert not (parsed & (out[schema.QUALITY_FLAGS] != "")).any()
