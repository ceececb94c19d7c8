"""Phone normalization: mobiles, landlines, prefixes, extensions, fillers and flags."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage import schema
from linkage.standardize import phone
from linkage.standardize.phone import parse_phone, standardize_phones


@pytest.mark.parametrize(
    "raw",
    [
        "13912873456",
        "139 1287 3456",
        "139-1287-3456",
        "+86 139 1287 3456",
        "+8613912873456",
        "0086-13912873456",
        "8613912873456",
        "(+86)13912873456",
        "１３９１２８７３４５６",
        "013912873456",
        13912873456,
        13912873456.0,
        "13912873456.0",
        "手机:13912873456",
        "13912873456转123",
    ],
)
def test_mobile_forms(raw):
    assert parse_phone(raw) == ("13912873456", "mobile", ())


@pytest.mark.parametrize(
    ("raw", "std"),
    [
        ("010-62345678", "01062345678"),
        ("0755 2634 5678", "075526345678"),
        ("(021)62345678", "02162345678"),
        ("（０２１）６２３４５６７８", "02162345678"),
        ("010-62345678-8001", "01062345678"),
        ("010-62345678转8001", "01062345678"),
        ("0755-26345678 ext. 12", "075526345678"),
        ("0991-6234567", "09916234567"),
        ("+86 10 62345678", "01062345678"),
        ("86-10-62345678", "01062345678"),
    ],
)
def test_landline_forms(raw, std):
    assert parse_phone(raw) == (std, "landline", ())


@pytest.mark.parametrize("raw", ["62345678", "6234567", "2634-5678"])
def test_landline_without_area_code(raw):
    std, kind, flags = parse_phone(raw)
    assert kind == "landline" and std == raw.replace("-", "")
    assert flags == ("phone_no_area_code",)


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        ("12912873456", "phone_invalid"),  # no mobile range starts 12
        ("1391287345", "phone_invalid"),  # 10 digits
        ("0571-1234567", "phone_invalid"),  # Hangzhou numbers have 8 digits
        ("4008001234", "phone_invalid"),  # service number, not a person
        ("abc", "phone_invalid"),
        ("138****1234", "phone_masked"),
        ("13800000000", "phone_placeholder"),
        ("13800138000", "phone_placeholder"),
        ("13812345678", "phone_placeholder"),
        ("88888888", "phone_placeholder"),
        ("12345678", "phone_placeholder"),
    ],
)
def test_invalid_values_are_null_and_flagged(raw, flag):
    assert parse_phone(raw) == (None, None, (flag,))


def test_multiple_numbers_keep_the_first():
    assert parse_phone("13912873456/13787654321") == (
        "13912873456",
        "mobile",
        ("phone_multiple",),
    )


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        # a landline is often the household's or the employer's: the mobile is kept
        ("0755-26718345/13872615094", "13872615094"),
        ("020 83716254、13872615094", "13872615094"),
        # two mobiles with only a space between them
        ("13872615094 13987361520", "13872615094"),
        # an unusable first number does not hide a good second one
        ("13800138000/13987361520", "13987361520"),
        ("138****5094/13987361520", "13987361520"),
        ("12/13987361520", "13987361520"),
    ],
)
def test_multiple_numbers_keep_the_first_valid_mobile(raw, kept):
    std, kind, flags = parse_phone(raw)
    assert std == kept
    if kept is not None:
        assert (kind, flags) == ("mobile", ("phone_multiple",))


def test_area_code_and_number_with_a_space_are_one_landline():
    assert parse_phone("0755 26718345") == ("075526718345", "landline", ())


def test_frame_contract_and_nulls():
    values = pd.Series(
        ["13912873456", None, "无", "010-62345678", "bad", "13912873456"],
        index=list("abcdef"),
        dtype=object,
    )
    out = standardize_phones(values)
    assert list(out.columns) == [schema.PHONE_STD, schema.PHONE_TYPE, schema.QUALITY_FLAGS]
    assert list(out.index) == list("abcdef")
    assert out[schema.PHONE_STD].tolist() == [
        "13912873456",
        None,
        None,
        "01062345678",
        None,
        "13912873456",
    ]
    assert out[schema.PHONE_TYPE].tolist() == ["mobile", None, None, "landline", None, "mobile"]
    # 无 is a filler: missing, and flagged like every filler
    assert out[schema.QUALITY_FLAGS].tolist() == [
        "",
        "",
        "phone_placeholder",
        "",
        "phone_invalid",
        "",
    ]
    assert values.tolist()[4] == "bad"  # raw input untouched


def test_fast_path_agrees_with_parser():
    # clean mobiles skip the parser; fillers must still be caught there
    values = pd.Series(["13912873456", "13800000000", "13912345678", "13800138000"])
    out = standardize_phones(values)
    expected = [parse_phone(v) for v in values]
    assert out[schema.PHONE_STD].tolist() == [e[0] for e in expected]
    assert out[schema.QUALITY_FLAGS].tolist() == ["|".join(e[2]) for e in expected]


_mobiles = st.builds(
    lambda second, rest: f"1{second}{rest}",
    st.sampled_from("3456789"),
    st.text(alphabet="0123456789", min_size=9, max_size=9),
).filter(lambda m: parse_phone(m)[0] is not None)


@given(
    _mobiles,
    st.sampled_from(["", "+86", "+86 ", "0086", "86", "(+86)"]),
    st.sampled_from(["", " ", "-"]),
    st.booleans(),
)
def test_formatted_mobile_normalizes_to_itself(mobile, prefix, sep, full_width):
    text = prefix + mobile[:3] + sep + mobile[3:7] + sep + mobile[7:]
    if full_width:
        text = text.translate(str.maketrans("0123456789+-", "０１２３４５６７８９＋－"))
    assert parse_phone(text) == (mobile, "mobile", ())


@given(st.lists(st.text(alphabet="0123456789 -+()转*", max_size=16) | st.none(), max_size=40))
def test_outputs_are_well_formed(values):
    series = pd.Series(values, dtype=object)
    out = standardize_phones(series)
    assert out.index.equals(series.index)
    for std, kind, flags in out.itertuples(index=False):
        assert flags == "" or all(f in phone.FLAGS for f in flags.split("|"))
        if std is None:
            assert kind is None
        else:
            assert std.isdigit() and kind in ("mobile", "landline")
            assert kind == "landline" or len(std) == 11
            assert std == parse_phone(std)[0]  # idempotent


@pytest.mark.slow
def test_scale_one_million_rows():
    import time

    import numpy as np

    rng = np.random.default_rng(3)
    mobiles = [
        f"1{d}{n:09d}"
        for d, n in zip(rng.integers(3, 10, 540_000), rng.integers(0, 10**9, 540_000), strict=True)
    ]
    landlines = [f"0755-{n}" for n in rng.integers(20_000_000, 89_999_999, 60_000)]
    distinct = np.array(mobiles + landlines, dtype=object)
    values = pd.Series(distinct[rng.integers(0, len(distinct), 1_000_000)])
    start = time.process_time()  # CPU time: robust to other jobs on a shared machine
    out = standardize_phones(values)
    assert time.process_time() - start < 15
    assert out[schema.PHONE_STD].notna().mean() > 0.99
