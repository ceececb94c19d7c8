"""Tests for resident ID standardization, check characters, damage flags and near misses."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from linkage import schema
from linkage.standardize.idnumber import (
    FLAGS,
    OUTPUT_COLUMNS,
    id_check_char,
    id_near_miss,
    id_near_miss_array,
    normalize_id,
    standardize_id_numbers,
    upgrade_15_to_18,
)

# Synthetic IDs built from real region codes; no real person's number.
REGIONS = ["110105", "330106", "440305", "510104", "130502", "652301"]
VALID = "11010519491231002X"  # check character computed below, female (sequence 002)


def make_id(region: str, birth: str, seq: str) -> str:
    body = region + birth + seq
    return body + id_check_char(body)


@pytest.fixture(autouse=True, scope="module")
def _warm_region_table():
    # the region table is built on first use; keep that out of hypothesis' per-example deadline
    standardize_id_numbers(pd.Series([VALID]))


def std(values: list) -> pd.DataFrame:
    return standardize_id_numbers(pd.Series(values, dtype=object))


def flags_of(row: pd.Series) -> set[str]:
    return set(filter(None, row[schema.QUALITY_FLAGS].split(schema.QUALITY_SEP)))


@st.composite
def valid_ids(draw, max_year: int = 2020) -> str:
    region = draw(st.sampled_from(REGIONS))
    birth = draw(st.dates(datetime.date(1900, 1, 1), datetime.date(max_year, 12, 31)))
    seq = draw(st.integers(0, 999))
    return make_id(region, birth.strftime("%Y%m%d"), f"{seq:03d}")


# ----------------------------------------------------------------------------- check character


def test_known_check_characters():
    assert id_check_char("11010519491231002") == "X"
    assert id_check_char("33010619700101123") == "0"
    assert make_id("110105", "19491231", "002") == VALID


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_char_agrees_with_stdnum(body):
    # stdnum's calc_check_digit takes the full 18-character number
    assert id_check_char(body) == ric.calc_check_digit(body + "0")


@given(valid_ids())
def test_check_char_round_trips(id18):
    assert id_check_char(id18[:17]) == id18[17]
    row = std([id18]).iloc[0]
    assert row[schema.ID_VALID]
    assert row[schema.ID_STD] == id18
    assert row[schema.QUALITY_FLAGS] == ""


@given(valid_ids(max_year=1999))
def test_upgrade_15_matches_18(id18):
    id15 = id18[:6] + id18[8:17]
    assert upgrade_15_to_18(id15) == id18
    row = std([id15]).iloc[0]
    assert row[schema.ID_STD] == id18
    assert row[schema.ID_FROM_15]
    assert flags_of(row) == {"id_from_15"}


def test_check_char_rejects_bad_input():
    with pytest.raises(ValueError):
        id_check_char("1101051949123100")
    with pytest.raises(ValueError):
        upgrade_15_to_18("11010549123100X")


# ----------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    "raw",
    [
        VALID,
        "11010519491231002x",
        "  11010519491231002X\t",
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits and X
        "１１０１０５１９４９１２３１００２ｘ",
        "110105 19491231 002X",
        "110105-19491231-002X",
        "110105　19491231　002x",  # ideographic spaces
    ],
)
def test_cleaning_variants(raw):
    row = std([raw]).iloc[0]
    assert row[schema.ID_STD] == VALID
    assert row[schema.ID_VALID]
    assert row[schema.ID_BIRTH_DATE] == "1949-12-31"
    assert row[schema.ID_GENDER] == "F"
    assert row[schema.ID_REGION_CODE] == "110105"
    assert row[schema.ID_REGION_NAME] == "北京市朝阳区"
    assert row[schema.ID_REGION_STATUS] == "current"
    assert not row[schema.ID_FROM_15]
    assert row[schema.QUALITY_FLAGS] == ""


def test_output_shape_index_and_raw_untouched():
    raw = pd.Series(["11010519491231002x", None, "abc", "11010519491231002x"], index=[7, 3, 9, 1])
    before = raw.copy()
    out = standardize_id_numbers(raw)
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert list(out.index) == [7, 3, 9, 1]
    pd.testing.assert_series_equal(raw, before)
    assert out.loc[1, schema.ID_STD] == VALID
    assert str(out[schema.ID_VALID].dtype) == "boolean"


def test_gender_from_17th_digit():
    male = make_id("330106", "19700101", "123")
    female = make_id("330106", "19700101", "124")
    out = std([male, female])
    assert list(out[schema.ID_GENDER]) == ["M", "F"]


@pytest.mark.parametrize("raw", ["", "   ", None, np.nan, "　"])
def test_empty_is_all_null_without_flag(raw):
    row = std([raw]).iloc[0]
    assert row[schema.QUALITY_FLAGS] == ""
    for col in OUTPUT_COLUMNS:
        if col != schema.QUALITY_FLAGS:
            assert pd.isna(row[col]), col


# ----------------------------------------------------------------------------- validity problems


def test_checksum_error_keeps_cleaned_id():
    bad = VALID[:17] + "5"
    row = std([bad]).iloc[0]
    assert row[schema.ID_STD] == bad
    assert not row[schema.ID_VALID]
    assert flags_of(row) == {"id_checksum"}
    assert row[schema.ID_BIRTH_DATE] == "1949-12-31"


@pytest.mark.parametrize("birth", ["19850230", "19851301", "18991231", "20901231", "19850000"])
def test_bad_embedded_date(birth):
    row = std([make_id("110105", birth, "011")]).iloc[0]
    assert not row[schema.ID_VALID]
    assert row[schema.ID_BIRTH_DATE] is None
    assert flags_of(row) == {"id_bad_date"}
    assert row[schema.ID_STD] is not None


@pytest.mark.parametrize(
    "raw", ["1101051949123100", "11010519491231002Y", "110105194912310021X", "张三", "12345"]
)
def test_malformed(raw):
    row = std([raw]).iloc[0]
    assert row[schema.ID_STD] is None
    assert not row[schema.ID_VALID]
    assert flags_of(row) == {"id_malformed"}


# ----------------------------------------------------------------------------- region codes


def test_region_status_never_invalidates():
    # stdnum.cn.ric.validate rejects this adult because 330106 starts in 1983 in its table
    adult = "330106197001011230"
    historical = make_id("110103", "19700101", "123")  # 崇文区, merged in 2010
    unknown = make_id("999999", "19700101", "123")
    out = std([adult, historical, unknown])
    assert out[schema.ID_VALID].tolist() == [True, True, True]
    assert out[schema.ID_REGION_STATUS].tolist() == ["current", "historical", "unknown"]
    assert out[schema.ID_REGION_NAME].tolist() == ["浙江省杭州市西湖区", "北京市崇文区", None]
    assert [flags_of(r) for _, r in out.iterrows()] == [set(), set(), {"id_region_unknown"}]


def test_renamed_region_reports_current_name():
    row = std([make_id("130502", "19900101", "001")]).iloc[0]
    assert row[schema.ID_REGION_STATUS] == "current"
    assert row[schema.ID_REGION_NAME] == "河北省邢台市襄都区"


def test_residence_permits_of_hong_kong_macao_and_taiwan_residents_have_a_known_region():
    permits = [make_id(code, "19900101", "001") for code in ("810000", "820000", "830000")]
    out = std(permits)
    assert out[schema.ID_REGION_STATUS].tolist() == ["current"] * 3
    assert out[schema.ID_REGION_NAME].tolist()[2] == "台湾地区"
    assert all("id_region_unknown" not in flags_of(r) for _, r in out.iterrows())


# ----------------------------------------------------------------------------- float damage

DAMAGED = [
    "1.10105194912310e+17",  # Excel scientific display
    "1.1010519491231002E+17",  # pandas float repr
    "110105194912310016.0",  # float64 written back with '.0'
    "110105194912310000",  # Excel's 15 significant digits, checksum fails
    1.1010519491231002e17,  # a float value
]


@pytest.mark.parametrize("raw", DAMAGED)
def test_float_damage_is_never_linkable(raw):
    row = std([raw]).iloc[0]
    assert row[schema.ID_STD] is None
    assert not row[schema.ID_VALID]
    assert flags_of(row) == {"id_float_damaged"}
    # the leading 15 digits survive a float, so region and birth date are still known
    assert row[schema.ID_REGION_CODE] == "110105"
    assert row[schema.ID_BIRTH_DATE] == "1949-12-31"
    assert row[schema.ID_GENDER] is None


def test_fifteen_digit_id_survives_float():
    out = std(["110105491231002.0", 110105491231002.0, 110105491231002, "1.10105491231002e+14"])
    assert out[schema.ID_STD].tolist() == [VALID] * 4
    assert out[schema.ID_FROM_15].all()


def test_short_scientific_mantissa_loses_birth_date():
    row = std(["1.10105E+17"]).iloc[0]
    assert flags_of(row) == {"id_float_damaged"}
    assert row[schema.ID_STD] is None
    assert row[schema.ID_BIRTH_DATE] is None


@pytest.mark.parametrize("raw", ["1e5000", "1E999999", "9.9e+99999999", "1e40"])
def test_scientific_notation_too_large_for_an_id_is_malformed_at_once(raw):
    """int(Decimal('1e999999')) ran for minutes (one registry cell stalled a batch run, one
    search a service worker) and '1e5000' raised ValueError (Python's int-to-str limit):
    a number beyond 18 digits is no ID, read as malformed without expanding it."""
    import time

    start = time.process_time()
    row = std([raw]).iloc[0]
    assert time.process_time() - start < 5
    assert row[schema.ID_STD] is None
    assert flags_of(row) == {"id_malformed"}


def test_genuine_zero_tail_with_good_checksum_is_kept():
    # real IDs can end in 000; alone, with a correct check, it is not evidence of damage
    body = None
    for seq in range(1000):
        candidate = make_id("440305", "19880808", f"{seq:03d}")
        if candidate.endswith("000"):
            body = candidate
            break
    assert body is not None
    row = std([body]).iloc[0]
    assert row[schema.ID_STD] == body
    assert row[schema.ID_VALID]


def _random_ids(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        birth = datetime.date(1950, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 20000)))
        region = REGIONS[int(rng.integers(0, len(REGIONS)))]
        out.append(make_id(region, birth.strftime("%Y%m%d"), f"{int(rng.integers(0, 1000)):03d}"))
    return out


def test_column_through_float64_flags_even_passing_checksums():
    ids = [i for i in _random_ids(200, seed=3) if not i.endswith("X")]
    damaged = [str(int(float(i))) for i in ids]  # pandas float64 column written as integers
    out = std(damaged)
    assert (out[schema.ID_STD].isna()).all()
    assert (out[schema.QUALITY_FLAGS] == "id_float_damaged").all()


def test_column_through_excel_flags_even_passing_checksums():
    ids = [i for i in _random_ids(200, seed=4) if not i.endswith("X")]
    damaged = [i[:15] + "000" for i in ids]
    out = std(damaged)
    assert (out[schema.QUALITY_FLAGS] == "id_float_damaged").all()


def test_clean_column_is_not_mistaken_for_float_damage():
    out = std(_random_ids(500, seed=5))
    assert out[schema.ID_VALID].all()
    assert (out[schema.QUALITY_FLAGS] == "").all()


def test_every_emitted_flag_is_documented():
    values = [VALID, "abc", DAMAGED[0], VALID[:17] + "1", make_id("110105", "19850230", "001")]
    values += ["110105491231002", make_id("999999", "19700101", "123")]
    codes = set()
    for flags in std(values)[schema.QUALITY_FLAGS]:
        codes |= set(filter(None, flags.split(schema.QUALITY_SEP)))
    assert codes <= set(FLAGS)
    assert {"id_birth_conflict", "id_gender_conflict"} <= set(FLAGS)
    assert len(codes) == 6


# ----------------------------------------------------------------------------- scalar helper


def test_normalize_id():
    assert normalize_id("１１０１０５１９４９１２３１００２ｘ") == VALID
    assert normalize_id("110105491231002") == VALID
    assert normalize_id(VALID[:17] + "1") == VALID[:17] + "1"
    assert normalize_id("110105194912310000") is None
    assert normalize_id(None) is None
    assert normalize_id(float("nan")) is None
    assert normalize_id("abc") is None


# ----------------------------------------------------------------------------- near misses


def substitute(s: str, pos: int, ch: str) -> str:
    return s[:pos] + ch + s[pos + 1 :]


def swap(s: str, pos: int) -> str:
    return s[:pos] + s[pos + 1] + s[pos] + s[pos + 2 :]


@settings(max_examples=200)
@given(valid_ids(), st.integers(0, 17), st.sampled_from("0123456789X"))
def test_single_substitution_fails_checksum_and_is_detected(id18, pos, ch):
    if ch == id18[pos] or (ch == "X" and pos != 17):
        return
    typo = substitute(id18, pos, ch)
    assert id_check_char(typo[:17]) != typo[17]
    assert id_near_miss(id18, typo) == "one_digit"
    assert id_near_miss_array(np.array([id18]), np.array([typo]))[0] == 1


@settings(max_examples=200)
@given(valid_ids(), st.integers(0, 16))
def test_adjacent_transposition_fails_checksum_and_is_detected(id18, pos):
    if id18[pos] == id18[pos + 1]:
        return
    typo = swap(id18, pos)
    # swapping the X check character into the body leaves a malformed number
    assert not typo[:17].isdigit() or id_check_char(typo[:17]) != typo[17]
    assert id_near_miss(id18, typo) == "transposition"
    assert id_near_miss_array(np.array([id18]), np.array([typo]))[0] == 2


def test_typos_are_never_valid_in_batch():
    rng = np.random.default_rng(7)
    pairs = []
    for i, id18 in enumerate(_random_ids(2000, seed=6)):
        if i % 2:
            pos = int(rng.integers(0, 17))
            if id18[pos] != id18[pos + 1]:
                pairs.append((id18, swap(id18, pos), 2))
        else:
            pos = int(rng.integers(0, 18))
            digit = str((int(id18[pos].replace("X", "9")) + 1) % 10)
            pairs.append((id18, substitute(id18, pos, digit), 1))
    originals, typos, levels = (list(x) for x in zip(*pairs, strict=True))
    assert len(typos) > 1800
    assert not std(typos)[schema.ID_VALID].any()
    assert std(originals)[schema.ID_VALID].all()
    near = id_near_miss_array(np.array(originals, dtype="U18"), np.array(typos, dtype="U18"))
    assert near.tolist() == levels


def test_near_miss_negative_cases():
    assert id_near_miss(VALID, VALID) is None
    two_apart = VALID[:3] + VALID[5] + VALID[4] + VALID[3] + VALID[6:]
    assert id_near_miss(VALID, two_apart) is None
    assert id_near_miss(VALID, substitute(substitute(VALID, 0, "2"), 9, "0")) is None
    assert id_near_miss(VALID, VALID[:17]) is None
    # a same-position pair that is not a swap
    assert id_near_miss("110105194912310021", "110105194912310012") == "transposition"
    assert id_near_miss("110105194912310021", "110105194912310013") is None


def test_near_miss_array_dtypes_and_nulls():
    a = [VALID, VALID, VALID, VALID, None, VALID]
    b = [substitute(VALID, 3, "9"), swap(VALID, 5), VALID, None, VALID, VALID + "1"]
    expected = [1, 2, 0, 0, 0, 0]
    out = id_near_miss_array(np.array(a, dtype=object), np.array(b, dtype=object))
    assert out.dtype == np.int8
    assert out.tolist() == expected
    fixed_a = np.array([x or "" for x in a[:3]], dtype="U18")
    fixed_b = np.array(b[:3], dtype="S18")
    assert id_near_miss_array(fixed_a, fixed_b).tolist() == expected[:3]
    with pytest.raises(ValueError):
        id_near_miss_array(np.array([VALID]), np.array([VALID, VALID]))


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(valid_ids(), st.text(alphabet="0123456789X", min_size=18, max_size=18)),
        min_size=1,
        max_size=20,
    ),
    st.integers(0, 2),
)
def test_near_miss_array_matches_scalar(pairs, mode):
    a = [p[0] for p in pairs]
    if mode == 0:
        b = [p[1] for p in pairs]
    elif mode == 1:
        b = [substitute(x, i % 18, "7") for i, x in enumerate(a)]
    else:
        b = [swap(x, i % 17) for i, x in enumerate(a)]
    codes = {None: 0, "one_digit": 1, "transposition": 2}
    expected = [codes[id_near_miss(x, y)] for x, y in zip(a, b, strict=True)]
    assert id_near_miss_array(np.array(a, dtype=object), np.array(b, dtype=object)).tolist() == (
        expected
    )


@pytest.mark.parametrize(
    "raw",
    [
        "111111111111111111",
        "000000000000000000",
        "999999999999999999",
        "123456789012345678",
        "987654321098765432",
        "440300000000000000",
        "111111111111111",
        "000000000000000",
    ],
)
def test_placeholder_ids_are_missing_and_flagged(raw):
    out = standardize_id_numbers(pd.Series([raw])).iloc[0]
    assert out[schema.ID_STD] is None
    assert out[schema.ID_VALID] is False or out[schema.ID_VALID] == False  # noqa: E712
    assert out[schema.QUALITY_FLAGS] == "id_placeholder"
    assert out[schema.ID_BIRTH_DATE] is None


def test_real_ids_are_never_placeholders():
    # valid IDs with long runs of a digit inside the birth date or sequence
    body = "11010120000101000"
    real = body + id_check_char(body)
    out = standardize_id_numbers(pd.Series([real])).iloc[0]
    assert out[schema.ID_STD] == real
    assert "id_placeholder" not in out[schema.QUALITY_FLAGS]


@pytest.mark.parametrize(
    "raw",
    ['="110105199003070033"', '= "110105199003070033"', "'110105199003070033", "`110105199003070033"],
)
def test_spreadsheet_text_forcing_wrappers_are_no_part_of_the_id(raw):
    """Exports force Excel to keep 18 digits as text with ="…" or a leading ' or `."""
    out = standardize_id_numbers(pd.Series([raw, "110105199003070033"], dtype=object))
    assert out[schema.ID_STD].tolist() == ["110105199003070033"] * 2
    assert out[schema.QUALITY_FLAGS].tolist() == ["", ""]


def test_a_formula_that_is_no_wrapped_id_stays_malformed():
    out = standardize_id_numbers(pd.Series(['="1"', "=SUM(A1)"], dtype=object))
    assert out[schema.ID_STD].isna().all()
    assert (out[schema.QUALITY_FLAGS] == "id_malformed").all()


@pytest.mark.parametrize(
    ("raw", "doc"),
    [
        ("H00320071", "H00320071"),  # Hong Kong resident's Home Return Permit
        ("h 0032 0071 01", "H00320071"),  # an older card: its two issue digits dropped
        ("M76325511", "M76325511"),  # Macao
        ("EA5193826", "EA5193826"),  # passport
        ("K35719462", "K35719462"),
        ("R394752(6)", "R3947526"),  # Hong Kong identity card, check digit in brackets
        ("12345678", None),  # counting up: a filler, not a number
        ("H00000000", None),
        ("H00000001", None),  # three kinds of digit or fewer: a filler
        ("E0000001", None),
        ("A1231234", None),  # the first half repeated
        # 8 digits alone are a date or a landline as often as a Taiwan permit: not read
        ("19000101", None),
        ("87342298", None),
        ("0755-2671", None),
        ("AB12", None),
        ("不详", None),
    ],
)
def test_other_identity_documents_are_kept_apart_from_the_resident_id(raw, doc):
    out = standardize_id_numbers(pd.Series([raw]))
    assert out[schema.ID_STD].iloc[0] is None
    assert out[schema.ID_DOC].iloc[0] == doc
    flags = out[schema.QUALITY_FLAGS].iloc[0]
    if doc is not None:
        assert "id_other_document" in flags and "id_malformed" not in flags
    else:
        assert "id_other_document" not in flags


def test_a_resident_id_has_no_document_number():
    out = standardize_id_numbers(pd.Series(["810000197409072660", "110105199003070033"]))
    assert out[schema.ID_DOC].isna().all()
    assert out[schema.ID_STD].notna().all()
