"""Tests of linkage.zh: surname readings, syllable splitting, other romanizations, t2s."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage import schema
from linkage.standardize.names import standardize_names, to_pinyin
from linkage.zh.readings import SURNAME_READINGS, surname_reading
from linkage.zh.romanization import SURNAME_SPELLINGS, surname_from_spelling, wade_giles_to_pinyin
from linkage.zh.script import KEEP, t2s, t2s_batch
from linkage.zh.syllables import SYLLABLES, split_syllables


def keys(raw: str) -> tuple[str, str | None]:
    row = standardize_names(pd.Series([raw], dtype=object)).iloc[0]
    return row[schema.name_col("name", "pinyin")], row[schema.name_col("name", "pinyin_alt")]


# --- surname readings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "han, passport",
    [
        ("贠海龙", "YUN Hailong"),
        ("六建平", "LU Jianping"),
        ("曾小兵", "ZENG Xiaobing"),
        ("单立新", "SHAN Lixin"),
        ("仇德昌", "QIU Dechang"),
        ("解红梅", "XIE Hongmei"),
        ("朴正浩", "PIAO Zhenghao"),
        ("区志坚", "OU Zhijian"),
        ("查文静", "ZHA Wenjing"),
        ("尉迟恭平", "YUCHI Gongping"),
        ("冼玉兰", "XIAN Yulan"),
        ("繁立志", "PO Lizhi"),
        ("万俟春", "MOQI Chun"),
    ],
)
def test_han_surname_reads_as_the_passport_spells_it(han, passport):
    pinyin, _ = keys(han)
    romanized, alt = keys(passport)
    assert pinyin.replace(" ", "") in (romanized.replace(" ", ""), (alt or "").replace(" ", ""))


def test_surname_table_is_broad_not_hand_picked():
    # two published tables merged: several hundred surnames, compound ones included
    assert len(SURNAME_READINGS) > 450
    assert sum(len(k) == 2 for k in SURNAME_READINGS) >= 50
    assert surname_reading("贠") == "yun" and surname_reading("貟") == "yun"
    assert surname_reading("盖") == "ge" and surname_reading("覃") == "qin"
    assert surname_reading("王") == "wang"  # ordinary surnames keep their one reading


def test_surname_reading_only_applies_to_the_surname():
    assert to_pinyin("曾曾") == "zeng ceng"  # the given-name 曾 keeps its ordinary reading
    assert to_pinyin("王六一") == "wang liu yi"


# --- syllable splitting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, expected",
    [
        ("Xinyu", ["xin", "yu"]),
        ("Zhenyu", ["zhen", "yu"]),
        ("Junyu", ["jun", "yu"]),
        ("Chenyu", ["chen", "yu"]),
        ("Yunyu", ["yun", "yu"]),
        ("Wenyu", ["wen", "yu"]),
        ("Tianyu", ["tian", "yu"]),
        ("Xingyu", ["xing", "yu"]),
        ("Ning", ["ning"]),
        ("Xian", ["xian"]),
        ("Jianan", ["jia", "nan"]),
        ("Lyu", ["lv"]),
        ("Haiou", ["hai", "ou"]),
    ],
)
def test_split_prefers_the_most_likely_syllables(token, expected):
    assert split_syllables(token) == expected


@given(
    st.lists(
        st.sampled_from(
            [
                "xin",
                "zhen",
                "jun",
                "chen",
                "yu",
                "ming",
                "hua",
                "li",
                "wei",
                "jian",
                "guo",
                "ning",
                "yun",
                "tian",
                "xiao",
            ]
        ),
        min_size=1,
        max_size=3,
    )
)
def test_common_name_syllables_round_trip(syls):
    # written together, syllables that names use every day split back as they were written
    assert split_syllables("".join(syls)) == syls


@pytest.mark.parametrize(
    "han, romanized",
    [
        ("王欣雨", "WANG Xinyu"),
        ("高振宇", "GAO Zhenyu"),
        ("李俊宇", "LI Junyu"),
        ("陈晨雨", "CHEN Chenyu"),
        ("张天宇", "ZHANG Tianyu"),
        ("徐宁", "XU Ning"),
    ],
)
def test_romanized_given_names_key_like_han(han, romanized):
    assert keys(han)[0] == keys(romanized)[0]


# --- other romanizations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling, pinyin",
    [
        ("CHAN", "chen"),
        ("WONG", "huang"),
        ("CHEUNG", "zhang"),
        ("LEUNG", "liang"),
        ("TSANG", "zeng"),
        ("HSU", "xu"),
        ("CHOU", "zhou"),
        ("KUO", "guo"),
        ("NG", "wu"),
        ("HSIEH", "xie"),
        ("Lau", "liu"),
        ("Yeung", "yang"),
    ],
)
def test_surname_spellings(spelling, pinyin):
    assert surname_from_spelling(spelling) == pinyin


def test_every_spelling_maps_to_valid_syllables():
    for spelling, pinyin in SURNAME_SPELLINGS.items():
        assert all(s in SYLLABLES for s in pinyin.split()), spelling


@pytest.mark.parametrize(
    "token, expected",
    [
        ("Chih-ming", ["zhi", "ming"]),
        ("Hsiao-ping", ["xiao", "bing"]),
        ("Kuo", ["guo"]),
        ("Tung", ["dong"]),
        ("Ch'ing-kuo", ["qing", "guo"]),
        ("Hsueh", ["xue"]),
        ("Shih", ["shi"]),
        ("Smith", None),
    ],
)
def test_wade_giles_syllables(token, expected):
    assert wade_giles_to_pinyin(token) == expected


@pytest.mark.parametrize(
    "han, romanized",
    [
        ("许志明", "HSU Chih-ming"),  # Taiwan passport, Wade-Giles
        ("张志明", "CHANG Chih-ming"),  # CHANG is 张 in a Wade-Giles name
        ("郭明", "Kuo Ming"),
        ("陈国华", "CHAN Kwok Wah"),  # Hong Kong: the surname maps, the given name cannot
        ("黄家明", "WONG Ka Ming"),
        ("梁美玲", "LEUNG Mei Ling"),
    ],
)
def test_other_romanizations_share_the_surname_key(han, romanized):
    han_row = standardize_names(pd.Series([han])).iloc[0]
    rom_row = standardize_names(pd.Series([romanized])).iloc[0]
    col = schema.name_col("name", "surname_pinyin")
    assert han_row[col] == rom_row[col]
    assert "name_other_romanization" in rom_row[schema.QUALITY_FLAGS]


def test_wade_giles_given_names_key_like_han():
    assert keys("HSU Chih-ming")[0] == keys("许志明")[0]
    assert keys("CHANG Chih-ming")[0] == keys("张志明")[0]


def test_pinyin_names_are_not_read_as_other_romanizations():
    assert keys("CHANG Wei")[0] == "chang wei"  # 常伟: pinyin, nothing marks it Wade-Giles
    assert keys("HE Ming")[0] == "he ming"
    flags = standardize_names(pd.Series(["CHANG Wei"])).iloc[0][schema.QUALITY_FLAGS]
    assert "other_romanization" not in flags


# --- traditional -> simplified -----------------------------------------------------------------


def test_t2s_keeps_every_character_the_standard_table_keeps():
    for ch in KEEP:
        assert t2s(ch) == ch
        assert t2s_batch(["王" + ch + "明"]) == ["王" + ch + "明"]
    assert t2s("於梅") == "於梅"
    assert t2s("甯海燕") == "甯海燕"
    assert t2s("乾隆") == "乾隆"
    assert t2s("李昇") == "李昇"
    assert t2s("鍾書華") == "钟书华"  # a traditional form still folds
    assert t2s("王汎森") == "王泛森"


@pytest.mark.parametrize(
    "romanized, han",
    [
        ("CHAN Tai Man", "陈大文"),  # Hong Kong, surname first
        ("Chan Tai-man", "陳大文"),  # hyphenated given name, traditional characters
        ("Tai Man Chan", "陈大文"),  # given name first
        ("CHAN Taiman", "陈大文"),  # given-name syllables joined
        ("TSANG Siu-kwok", "曾少国"),
        ("AU YEUNG Chun", "欧阳进"),  # two-character surname
        ("LEONG Kin Man", "梁健文"),  # Macao: eung -> eong
        ("CHEONG Ka Ieng", "张嘉英"),  # Macao: ying -> ieng
        ("LAO Chi Keong", "刘志强"),  # Macao: au -> ao
        ("HOI Sio", "许笑"),  # Macao: ui -> oi, iu -> io
        ("CHEUNG Tsz Yan", "张子欣"),  # 子 TSZ, not in the package's table
        ("LAM Chun Kit", "林振杰"),  # 振 CHUN where the table has "jan"
        ("WAN Chi Ming", "温志明"),  # 温: only its traditional form 溫 is in the table
        ("IEONG Sok I", "杨淑仪"),  # Macao: shuk -> sok, yee -> i
        ("FONG Ka Ian", "冯嘉欣"),  # Macao: ung -> ong
        ("LEI Chon Kit", "李俊杰"),  # Macao: un -> on
        ("Lai San Lau", "刘丽珊"),  # saan written SAN
    ],
)
def test_cantonese_spellings_of_han_names(romanized, han):
    from linkage.zh.romanization import spells_in_cantonese

    assert spells_in_cantonese(romanized, han)


@pytest.mark.parametrize(
    "romanized, han",
    [
        ("CHAN Tai Man", "陈小文"),  # one given-name syllable differs
        ("CHAN Tai", "陈大文"),  # a syllable missing
        ("CHAN Tai Man Wai", "陈大文"),  # one too many
        ("WONG Tai Man", "陈大文"),  # another surname
        ("Zhang Wei", "张伟"),  # pinyin, not Cantonese (the pinyin level reads it)
        ("CHAN", "陈大文"),
        ("CHEUNG Tsz Yan", "张志强"),
    ],
)
def test_cantonese_spellings_that_do_not_fit(romanized, han):
    from linkage.zh.romanization import spells_in_cantonese

    assert not spells_in_cantonese(romanized, han)


@pytest.mark.parametrize(
    "romanized, han, spelled",
    [
        ("NGUYEN THI HOA", "阮氏花", True),  # passport, surname first
        ("Nguyễn Thị Hoa", "阮氏花", True),  # tone and vowel marks
        ("Thi Hoa Nguyen", "阮氏花", True),  # Western order
        ("PHAM THI HUONG", "范氏香", True),
        ("DANG VAN HUNG", "邓文雄", True),  # Đặng: đ written d
        ("VU VAN MINH", "武文明", True),  # 武: northern VU
        ("VO VAN MINH", "武文明", True),  # 武: southern VO
        ("HUYNH THI LAN", "黄氏兰", True),  # 黄: southern HUYNH
        ("NGUYEN THI MAI", "阮氏花", False),  # another given name
        ("NGUYEN HOA", "阮氏花", False),  # a syllable missing
        ("TRAN THI HOA", "阮氏花", False),  # another surname
        ("RUAN SHI HUA", "阮氏花", False),  # pinyin (the pinyin level reads it)
        ("CHAN TAI MAN", "陈大文", False),  # Cantonese, not Vietnamese
        ("NGUYEN", "阮氏花", False),
        ("LE QUANG HAI", "黎光海", True),  # pinyin-like syllables beside a Vietnamese one
        # every syllable a pinyin one: a Chinese name's pinyin (谭兰, 哈龙), not tân lan
        ("TAN LAN", "新兰", False),
        ("HA LONG", "何龙", False),
        ("MAI LAN", "梅兰", False),
    ],
)
def test_vietnamese_spellings_of_han_names(romanized, han, spelled):
    from linkage.zh.romanization import spells_in_vietnamese

    assert spells_in_vietnamese(romanized, han) is spelled


def test_vietnamese_readings_lack_nothing_for_common_name_characters():
    from linkage.zh.romanization import vietnamese_readings

    readings = vietnamese_readings("阮陈黎范黄武氏文玉兰梅香")
    assert all(readings)
    assert vietnamese_readings("阮氏花") == (
        frozenset({"nguyen"}), frozenset({"thi"}), frozenset({"hoa"})
    )


def test_cantonese_readings_cover_simplified_and_traditional():
    from linkage.zh.romanization import cantonese_readings

    assert cantonese_readings("陈大文") == cantonese_readings("陳大文")
    assert "tai" in cantonese_readings("大")[0] and "chan" in cantonese_readings("陈")[0]


# ----------------------------------------------------------------------------- address details


@pytest.mark.parametrize(
    ("detail", "core", "estate", "flat"),
    [
        ("丰潭路405号西竹府13幢6单元701", "西竹府13幢6单元701", "西竹府13", "6-701"),
        ("西竹府13-6-701", "西竹府13-6-701", "西竹府13", "6-701"),
        ("五常街道丰潭路405号西竹府13-6-70", "西竹府13-6-70", "西竹府13", "6-70"),
        ("禾山街道锦绣华庭3栋0304室", "锦绣华庭3栋0304室", "锦绣华庭3", "304"),
        ("高桥镇吴湾村10组89号", "吴湾村10组89号", "吴湾村10", "89"),
        ("文三路100号", "文三路100号", "文三路100号", None),
        ("人民南路4段1号", "人民南路4段1号", "人民南路4段1号", None),
        ("西乡街道固戍村2巷5号302", "固戍村2巷5号302", "固戍村2巷5号", "302"),
        ("镇海路5号", "镇海路5号", "镇海路5号", None),
        ("12-3-401", "12-3-401", None, None),
        ("西竹府", "西竹府", "西竹府", None),
        # the word 社区 / 村 before the road is written or dropped: one key
        ("霄边社区龙洞路41号", "霄边社区龙洞路41号", "霄边龙洞路41号", None),
        ("霄边龙洞路41号", "霄边龙洞路41号", "霄边龙洞路41号", None),
        ("鹤洞村环城路222号A栋512", "鹤洞村环城路222号A栋512", "鹤洞环城路222号", "512"),
        ("新村路8号", "新村路8号", "新村路8号", None),
    ],
)
def test_address_detail_parts(detail, core, estate, flat):
    from linkage.zh.estate import core_detail
    from linkage.zh.estate import estate as estate_of
    from linkage.zh.estate import flat as flat_of

    assert core_detail(detail) == core
    assert estate_of(detail) == estate
    assert flat_of(detail) == flat


def test_named_part_drops_numbers_and_their_units():
    from linkage.zh.estate import named_part

    assert named_part("西竹府13幢6单元701室") == named_part("西竹府13-6-701") == "西竹府"
    assert named_part("望京西园三区312号楼5单元") == "望京西园三区"
    assert named_part("12-3-401") is None
