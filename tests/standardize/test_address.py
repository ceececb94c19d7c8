"""Address parsing: levels, short forms, ambiguous districts, detail normalization."""

from __future__ import annotations

import re
import unicodedata

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage import schema
from linkage.standardize import address
from linkage.standardize.address import (
    AMBIGUOUS_DISTRICTS,
    address_numbers,
    normalize_detail,
    standardize_addresses,
)

FIELD = schema.HUKOU_ADDRESS
COLS = {s: schema.address_col(FIELD, s) for s in schema.ADDRESS_DERIVED_SUFFIXES}


def _parse(values, region_codes=None, field=FIELD) -> pd.DataFrame:
    series = pd.Series(values, dtype=object)
    regions = None if region_codes is None else pd.Series(region_codes, dtype=object)
    return standardize_addresses(series, field, region_codes=regions)


def _row(value, region=None) -> dict:
    out = _parse([value], None if region is None else [region])
    row = out.iloc[0].to_dict()
    return {s: row[c] for s, c in COLS.items()} | {"flags": row[schema.QUALITY_FLAGS]}


def test_columns_and_index():
    values = pd.Series(["北京市朝阳区建国路1号", None], index=[7, 3], dtype=object)
    out = standardize_addresses(values, schema.CURRENT_ADDRESS)
    expected = [
        schema.address_col(schema.CURRENT_ADDRESS, s) for s in schema.ADDRESS_DERIVED_SUFFIXES
    ]
    assert list(out.columns) == [*expected, schema.QUALITY_FLAGS]
    assert list(out.index) == [7, 3]
    assert out.iloc[1].isna().sum() == 5 and out.iloc[1][schema.QUALITY_FLAGS] == ""


def test_full_address():
    row = _row("北京市朝阳区建国路88号院十九栋五单元902室")
    assert row == {
        "province": "北京市",
        "city": "北京市",  # municipality: never the table's placeholder 市辖区
        "district": "朝阳区",
        "adcode": "110105",
        "detail": "建国路88号院19栋5单元902室",
        "flags": "",
    }


@pytest.mark.parametrize(
    ("raw", "province", "city"),
    [
        ("新疆乌鲁木齐市天山区", "新疆维吾尔自治区", "乌鲁木齐市"),
        ("广西南宁青秀区", "广西壮族自治区", "南宁市"),
        ("内蒙古包头昆都仑区", "内蒙古自治区", "包头市"),
        ("宁夏银川兴庆区", "宁夏回族自治区", "银川市"),
        ("西藏拉萨城关区", "西藏自治区", "拉萨市"),
        ("昆明市盘龙区", "云南省", "昆明市"),  # province filled in from the city
        ("廣東省深圳市南山區科技園", "广东省", "深圳市"),  # traditional characters
        ("广东 省 深圳 市南山区", "广东省", "深圳市"),
    ],
)
def test_short_forms_and_traditional(raw, province, city):
    row = _row(raw)
    assert (row["province"], row["city"]) == (province, city)
    assert row["district"] is not None and len(row["adcode"]) == 6


def test_directly_administered_county_city():
    row = _row("湖北省仙桃市沔城镇")
    assert (row["province"], row["city"], row["district"]) == ("湖北省", "仙桃市", "仙桃市")


@pytest.mark.parametrize(
    ("raw", "adcode"),
    [
        ("五大连池市", "231182"),  # cpca alone reads 大连 inside it
        ("梅县区人民路", "441403"),  # cpca alone reads 县 as Chongqing's placeholder
        ("乾县", "610424"),  # t2s alone turns 乾 into 干
        ("吉林省松原市乾安縣", "220723"),
        ("马鞍山市花山区", "340503"),
    ],
)
def test_names_cpca_or_opencc_misread(raw, adcode):
    assert _row(raw)["adcode"] == adcode


def test_bare_placeholder_is_not_a_municipality():
    row = _row("县前街5号")
    assert row["province"] is None and row["flags"] == "hukou_address_unparsed"


def test_partial_address_is_flagged_and_adcode_padded():
    row = _row("广东省深圳市")
    assert (row["adcode"], row["district"], row["flags"]) == (
        "440300",
        None,
        "hukou_address_no_district",
    )
    assert _row("广东省")["adcode"] == "440000"


def test_unparsed_keeps_text_in_detail():
    row = _row("火星 基地三号")
    assert row["province"] is None and row["adcode"] is None
    assert row["detail"] == "火星基地3号"
    assert row["flags"] == "hukou_address_unparsed"


def test_ambiguous_set_comes_from_cpca_table():
    for name in ("朝阳区", "鼓楼区", "新华区", "和平区", "白云区", "南山区", "西湖区", "通州区"):
        assert len(AMBIGUOUS_DISTRICTS[name]) >= 2
    assert "110105" in AMBIGUOUS_DISTRICTS["朝阳区"]
    assert "天河区" not in AMBIGUOUS_DISTRICTS


def test_bare_ambiguous_district_is_not_guessed():
    row = _row("朝阳区建国路88号")
    assert row["district"] is None and row["province"] is None
    assert row["detail"] == "建国路88号"
    assert row["flags"] == "hukou_address_ambiguous_district"


def test_city_or_province_in_text_decides():
    assert _row("长春市朝阳区人民大街1号")["adcode"] == "220104"
    assert _row("北京朝阳区建国路")["adcode"] == "110105"
    # two 鼓楼区 in Jiangsu (南京, 徐州): province alone narrows but does not decide
    row = _row("江苏省鼓楼区")
    assert (row["province"], row["district"], row["adcode"]) == ("江苏省", None, "320000")
    assert row["flags"] == "hukou_address_ambiguous_district"


def test_region_code_decides_per_row():
    values = ["朝阳区建国路88号"] * 4 + ["鼓楼区中山路", "桥西区", "北京市朝阳区"]
    regions = ["110108", "220104", None, "440305", "350102", "130703", "220104"]
    out = _parse(values, regions)
    assert out[COLS["adcode"]].tolist() == [
        "110105",
        "220104",
        None,
        None,
        "350102",
        "130703",
        "110105",  # the text names Beijing: the region code is not consulted
    ]
    assert out[COLS["city"]].tolist()[:2] == ["北京市", "长春市"]
    assert out[schema.QUALITY_FLAGS].tolist() == [
        "hukou_address_district_from_region",
        "hukou_address_district_from_region",
        "hukou_address_ambiguous_district",
        "hukou_address_ambiguous_district",
        "hukou_address_district_from_region",
        "hukou_address_district_from_region",
        "",
    ]


def test_region_codes_align_on_a_repeated_index():
    values = pd.Series(["朝阳区", "朝阳区", "鼓楼区"], index=[5, 5, 9], dtype=object)
    regions = pd.Series(["110101", "220102", "410203000000000000"], index=[5, 5, 9])
    out = standardize_addresses(values, FIELD, region_codes=regions)
    assert out[COLS["adcode"]].tolist() == ["110105", "220104", "410204"]
    assert list(out.index) == [5, 5, 9]


def test_region_code_sharing_only_province_narrows():
    # 桥西区 exists in three Hebei cities: a Hebei region code elsewhere leaves it open
    row = _row("桥西区", region="130602")
    assert (row["province"], row["district"], row["adcode"]) == ("河北省", None, "130000")


def test_flag_names_use_the_field():
    out = _parse(["朝阳区", "火星"], field=schema.CURRENT_ADDRESS)
    assert out[schema.QUALITY_FLAGS].tolist() == [
        "current_address_ambiguous_district",
        "current_address_unparsed",
    ]
    for flags in out[schema.QUALITY_FLAGS]:
        code = "address" + flags.removeprefix(schema.CURRENT_ADDRESS)
        assert code in address.FLAGS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("十九栋五单元902室", "19栋5单元902室"),
        ("三里屯五道口十五号", "三里屯五道口15号"),
        ("十堰路二十四号楼", "十堰路24号楼"),
        ("一百零二室", "102室"),
        ("九零二室", "902室"),
        ("一〇二室", "102室"),
        ("第三村民小组", "第3村民小组"),
        ("千户苗寨五组", "千户苗寨5组"),
        ("幸福 小区　３栋", "幸福小区3栋"),
        ("幸福小區十棟", "幸福小区10栋"),
        ("19—5—902", "19-5-902"),
        ("五一路", "五一路"),
    ],
)
def test_normalize_detail(raw, expected):
    assert normalize_detail(raw) == expected


def test_address_numbers():
    assert address_numbers("十九栋五单元902室") == ("19", "5", "902")
    assert address_numbers("19-5-902") == ("19", "5", "902")
    assert address_numbers("19号楼5单元0902室") == ("19", "5", "902")
    assert address_numbers("幸福路十五号") != address_numbers("幸福路十七号")
    assert address_numbers(None) == ()
    assert address_numbers("三里屯") == ()


_ADDRESS_CHARS = (
    "幸福小区花园路街道村镇乡社区新华东西南北中人民建设解放和平胜利光明"
    "十堰三里屯五道口广场大厦公寓楼栋幢单元室号层组弄巷排户期座"
    "一二三四五六七八九十百千零〇0123456789-"
)
_HAN_NUMERALS = set("〇零一二三四五六七八九十百千")


def _keep(text: str) -> list[str]:
    """Characters normalization must keep: all but whitespace, numerals and digits."""
    return [c for c in text if not c.isspace() and c not in _HAN_NUMERALS and not c.isdigit()]


@given(st.text(alphabet=_ADDRESS_CHARS + " \u3000", max_size=40))
def test_han_characters_survive(text):
    out = normalize_detail(text)
    assert _keep(out) == _keep(unicodedata.normalize("NFKC", text))
    assert not re.search(r"\s", out)


@given(st.text(max_size=30) | st.text(alphabet=_ADDRESS_CHARS + " 區號棟樓層門", max_size=30))
def test_normalize_detail_is_idempotent(text):
    once = normalize_detail(text)
    assert normalize_detail(once) == once


@given(
    st.lists(
        st.text(alphabet=_ADDRESS_CHARS + "北京市朝阳区广东省深圳南山", max_size=20), max_size=20
    )
)
def test_parsed_detail_is_normalized(values):
    out = _parse(values)
    assert out.index.equals(pd.RangeIndex(len(values)))
    for detail, adcode in zip(out[COLS["detail"]], out[COLS["adcode"]], strict=True):
        assert detail is None or normalize_detail(detail) == detail
        assert adcode is None or re.fullmatch(r"\d{6}", adcode)


@pytest.mark.slow
def test_scale_one_million_rows():
    import time

    import cpca
    import numpy as np

    rng = np.random.default_rng(5)
    districts = [i for i in cpca.ad_2_addr_dict.values() if i.rank == 2 and i.name != "市辖区"]
    picks = rng.integers(0, len(districts), 300_000)
    distinct = np.array(
        [
            f"{districts[p].name}人民路{i}号{i % 30}栋{i % 6}单元{i % 25}02室"
            for i, p in enumerate(picks)
        ],
        dtype=object,
    )
    values = pd.Series(distinct[rng.integers(0, len(distinct), 1_000_000)])
    start = time.process_time()  # CPU time: robust to other jobs on a shared machine
    out = standardize_addresses(values, FIELD)
    assert time.process_time() - start < 20
    assert out[COLS["adcode"]].notna().mean() > 0.95


# --- prefecture-level cities without districts, streets named after the city ----------------


@pytest.mark.parametrize(
    "raw, city, district, detail",
    [
        ("广东省东莞市东莞大道88号", "东莞市", None, "东莞大道88号"),
        ("东莞市南城街道东莞大道88号", "东莞市", "南城街道", "东莞大道88号"),
        ("中山市东区中山四路20号", "中山市", "东区街道", "中山四路20号"),
        ("海南省儋州市那大镇儋州大道9号", "儋州市", "那大镇", "儋州大道9号"),
        ("嘉峪关市新华街道嘉峪关路7号", "嘉峪关市", None, "新华街道嘉峪关路7号"),
    ],
)
def test_street_repeating_the_city_name_keeps_the_detail(raw, city, district, detail):
    out = standardize_addresses(pd.Series([raw]), schema.HUKOU_ADDRESS).iloc[0]
    assert out[schema.address_col(schema.HUKOU_ADDRESS, "city")] == city
    assert out[schema.address_col(schema.HUKOU_ADDRESS, "district")] == district
    assert out[schema.address_col(schema.HUKOU_ADDRESS, "detail")] == detail
    # a city that has no districts is not flagged for lacking one
    assert "no_district" not in out[schema.QUALITY_FLAGS]


@pytest.mark.parametrize(
    ("raw", "city", "district", "adcode", "detail"),
    [
        ("广东省东莞市长安镇鹤洞社区环城路222号", "东莞市", "长安镇", "441900", "鹤洞社区环城路222号"),
        ("东莞清溪上沙沿江路212号", "东莞市", "清溪镇", "441900", "上沙沿江路212号"),
        ("东莞市莞城", "东莞市", "莞城街道", "441900", None),
        ("中山市小榄镇民安路1号", "中山市", "小榄镇", "442000", "民安路1号"),
        # the town written without its city: cpca read nothing, 镇江 (from 清溪镇江边), 攀枝花's
        # 东区 or 山东 (from 大岭山东纵路)
        ("常平镇锦厦沿江路261号A栋706", "东莞市", "常平镇", "441900", "锦厦沿江路261号A栋706"),
        ("清溪镇江边新安路170号", "东莞市", "清溪镇", "441900", "江边新安路170号"),
        ("大朗镇东区环城路45号", "东莞市", "大朗镇", "441900", "东区环城路45号"),
        ("南城街道大岭山东纵路288号", "东莞市", "南城街道", "441900", "大岭山东纵路288号"),
        ("海南省儋州市那大镇人民中路12号", "儋州市", "那大镇", "460400", "人民中路12号"),
        ("儋州白马井渔港路3号", "儋州市", "白马井镇", "460400", "渔港路3号"),
        ("甘肃省嘉峪关市新城镇观礼村5号", "嘉峪关市", "新城镇", "620200", "观礼村5号"),
    ],
)
def test_towns_of_cities_without_districts_are_their_district(raw, city, district, adcode, detail):
    """东莞 and 中山 have towns and street offices directly under the city: the town is the
    address's county-level unit, so name + current district blocking works there too."""
    out = standardize_addresses(pd.Series([raw]), schema.CURRENT_ADDRESS).iloc[0]
    got = {s: out[schema.address_col(schema.CURRENT_ADDRESS, s)] for s in ("city", "district")}
    got |= {s: out[schema.address_col(schema.CURRENT_ADDRESS, s)] for s in ("adcode", "detail")}
    assert got == {"city": city, "district": district, "adcode": adcode, "detail": detail}


@pytest.mark.parametrize(
    "raw", ["东莞市南城路1号", "东莞市长安路2号", "镇江市京口区正东路1号"]
)
def test_roads_named_after_towns_are_not_towns(raw):
    out = standardize_addresses(pd.Series([raw]), schema.CURRENT_ADDRESS).iloc[0]
    assert out[schema.address_col(schema.CURRENT_ADDRESS, "district")] in (None, "京口区")


def test_a_town_written_alone_is_read_only_in_a_current_address():
    # a hukou address names its county: a bare 沙溪镇 there may be any of several towns
    out = standardize_addresses(pd.Series(["沙溪镇石门村"]), schema.HUKOU_ADDRESS).iloc[0]
    assert out[schema.address_col(schema.HUKOU_ADDRESS, "city")] is None


@pytest.mark.parametrize("raw", ["新城镇观礼村5号", "中和镇人民路1号", "大成镇新街2号"])
def test_a_town_name_many_counties_share_is_not_read_in_a_city(raw):
    # 儋州's and 嘉峪关's towns are read after their city only: towns elsewhere share the names
    out = standardize_addresses(pd.Series([raw]), schema.CURRENT_ADDRESS).iloc[0]
    assert out[schema.address_col(schema.CURRENT_ADDRESS, "city")] is None
    assert out[schema.address_col(schema.CURRENT_ADDRESS, "detail")] == raw


def test_a_street_named_after_a_city_is_not_that_city():
    out = standardize_addresses(
        pd.Series(["中山五路33号", "广州市中山五路33号"]), "current_address"
    )
    city = schema.address_col("current_address", "city")
    assert out[city].iloc[0] is None or pd.isna(out[city].iloc[0])
    assert out[city].iloc[1] == "广州市"


@pytest.mark.parametrize("raw", ["不详", "无", "空", "未知", "-", "--", "/", "NULL", "暂无", "？"])
def test_filler_addresses_are_missing(raw):
    out = standardize_addresses(pd.Series([raw]), "current_address").iloc[0]
    assert out[schema.address_col("current_address", "detail")] is None
    assert out[schema.QUALITY_FLAGS] == "current_address_placeholder"


@pytest.mark.parametrize(
    ("raw", "district", "adcode", "detail"),
    [
        ("北京朝阳", "朝阳区", "110105", None),
        ("广州天河体育西路2号", "天河区", "440106", "体育西路2号"),
        ("上海浦东张江路", "浦东新区", "310115", "张江路"),
        ("重庆渝中解放碑", "渝中区", "500103", "解放碑"),
    ],
)
def test_short_district_without_suffix_is_read(raw, district, adcode, detail):
    out = standardize_addresses(pd.Series([raw]), "current_address").iloc[0]
    assert out["current_address_district"] == district
    assert out["current_address_adcode"] == adcode
    assert out["current_address_detail"] == detail
    assert out[schema.QUALITY_FLAGS] == "current_address_district_short"


@pytest.mark.parametrize("raw", ["北京朝阳门内大街1号", "北京市朝阳路8号", "广州白云路5号"])
def test_place_or_street_named_after_a_district_is_not_the_district(raw):
    # 朝阳门 is in 东城, 朝阳路 crosses districts, 白云路 is in 越秀: no district guessed
    out = standardize_addresses(pd.Series([raw]), "current_address").iloc[0]
    assert out["current_address_district"] is None
    assert out[schema.QUALITY_FLAGS] == "current_address_no_district"


def test_short_district_only_under_its_own_city():
    # 朝阳 is a district of 北京 and of 长春; after 广州 it names neither
    out = standardize_addresses(pd.Series(["广州朝阳街3号"]), "current_address").iloc[0]
    assert out["current_address_district"] is None


def test_current_address_same_as_hukou_takes_the_hukou_addresss_parts():
    """Registries write 同户籍地址 ("same as the hukou address") as the current address of
    someone living where they are registered: read as that address, in the batch, one record
    and the lookup's one-value path alike. Without a hukou address it is null (the text
    itself would agree with every other 同户籍地址 as an address detail)."""
    from linkage.standardize.combine import (
        all_flags,
        standardize,
        standardize_record,
        standardize_record_values,
    )

    hukou = "广东省深圳市龙岗区布吉街道华侨城16栋2104室"
    frame = pd.DataFrame(
        {
            schema.SOURCE: ["police"] * 4,
            schema.RECORD_ID: ["1", "2", "3", "4"],
            schema.HUKOU_ADDRESS: [hukou, hukou, None, hukou],
            schema.CURRENT_ADDRESS: ["同户籍地址", " 同 户籍 。", "同户籍地址", "北京市朝阳区望京街道1号"],
        }
    )
    out = standardize(frame)
    district = schema.address_col(schema.CURRENT_ADDRESS, "district")
    hukou_district = schema.address_col(schema.HUKOU_ADDRESS, "district")
    assert out[district].tolist()[:2] == [out[hukou_district].iloc[0]] * 2 == ["龙岗区"] * 2
    for suffix in schema.ADDRESS_DERIVED_SUFFIXES:
        current = out[schema.address_col(schema.CURRENT_ADDRESS, suffix)].iloc[0]
        assert current == out[schema.address_col(schema.HUKOU_ADDRESS, suffix)].iloc[0]
    flags = out[schema.QUALITY_FLAGS].tolist()
    assert all("current_address_same_as_hukou" in f for f in flags[:3])
    assert "current_address_same_as_hukou" not in flags[3]
    detail = schema.address_col(schema.CURRENT_ADDRESS, "detail")
    assert pd.isna(out[district].iloc[2]) and pd.isna(out[detail].iloc[2])
    assert out[district].iloc[3] == "朝阳区"
    assert "current_address_same_as_hukou" in all_flags()
    for row, record in (
        (0, {schema.HUKOU_ADDRESS: hukou, schema.CURRENT_ADDRESS: "同户籍地址"}),
        (2, {schema.CURRENT_ADDRESS: "同户籍地址"}),
    ):
        one = standardize_record(record)
        values = standardize_record_values(record)
        for suffix in schema.ADDRESS_DERIVED_SUFFIXES:
            column = schema.address_col(schema.CURRENT_ADDRESS, suffix)
            expected = out[column].iloc[row]
            if pd.isna(expected):
                assert pd.isna(one[column].iloc[0]) and pd.isna(values[column])
            else:
                assert one[column].iloc[0] == values[column] == expected


@pytest.mark.parametrize(
    ("raw", "city", "district", "detail"),
    [
        # cpca reads 大理 / 喀什 / 恩施 as the county-level city of the prefecture's name
        ("大理州宾川县金牛镇8号", "大理白族自治州", "宾川县", "金牛镇8号"),
        ("云南大理宾川金牛镇8号", "大理白族自治州", "宾川县", "金牛镇8号"),
        ("新疆喀什英吉沙县芒辛镇12号", "喀什地区", "英吉沙县", "芒辛镇12号"),
        ("喀什英吉沙芒辛镇12号", "喀什地区", "英吉沙县", "芒辛镇12号"),
        ("和田和田县巴格其镇5号", "和田地区", "和田县", "巴格其镇5号"),
        ("湖北恩施利川市都亭街道3号", "恩施土家族苗族自治州", "利川市", "都亭街道3号"),
        # prefectures cpca cannot read by their everyday name (凉山西昌 read as 山西)
        ("凉山西昌市长安路4号", "凉山彝族自治州", "西昌市", "长安路4号"),
        ("四川甘孜泸定泸桥镇3号", "甘孜藏族自治州", "泸定县", "泸桥镇3号"),
        ("湘西吉首市人民路1号", "湘西土家族苗族自治州", "吉首市", "人民路1号"),
        ("伊犁伊宁县吉里于孜镇", "伊犁哈萨克自治州", "伊宁县", "吉里于孜镇"),
        # the county-level city itself stays
        ("大理古城复兴路2号", "大理白族自治州", "大理市", "古城复兴路2号"),
        ("和田市北京路7号", "和田地区", "和田市", "北京路7号"),
    ],
)
def test_prefecture_everyday_names_are_not_their_namesake_city(raw, city, district, detail):
    """The autonomous prefectures and 地区 of the west are written without their suffix
    (大理, 凉山, 喀什); where a county-level city shares the name, the county that follows
    decides, and a 州 after the name means the prefecture."""
    row = _row(raw)
    assert (row["city"], row["district"], row["detail"]) == (city, district, detail)
    assert row["adcode"].startswith(
        {v: k for k, v in address._NAME_BY_CODE.items() if k.endswith("00")}[city][:4]
    )


def test_prefecture_named_without_a_county_has_no_district():
    row = _row("大理州金牛镇8号")
    assert (row["city"], row["district"], row["adcode"]) == ("大理白族自治州", None, "532900")
    assert row["detail"] == "金牛镇8号"
    assert row["flags"] == "hukou_address_no_district"


@pytest.mark.parametrize("raw", ["红河路5号", "兴安镇3号", "广西兴安县兴安镇"])
def test_prefecture_names_inside_streets_or_other_counties_are_not_expanded(raw):
    row = _row(raw)
    assert row["city"] not in ("红河哈尼族彝族自治州", "兴安盟")


@pytest.mark.parametrize(
    ("raw", "district", "adcode", "detail"),
    [
        ("北京市崇文区天坛路5号", "东城区", "110101", "天坛路5号"),
        ("北京宣武广安门内大街1号", "西城区", "110102", "广安门内大街1号"),
        ("上海市闸北区共和新路10号", "静安区", "310106", "共和新路10号"),
        ("上海卢湾区淮海中路3号", "黄浦区", "310101", "淮海中路3号"),
        ("天津市塘沽区解放路2号", "滨海新区", "120116", "解放路2号"),
        ("苏州市平江区干将路9号", "姑苏区", "320508", "干将路9号"),
        # merged after cpca's table was made: cpca still reads the old district
        ("杭州市下城区武林路1号", "拱墅区", "330105", "武林路1号"),
        ("杭州市江干区钱江路2号", "上城区", "330102", "钱江路2号"),
        # renames need no table: the everyday name finds today's district
        ("广州市番禺市市桥镇6号", "番禺区", "440113", "市桥镇6号"),
        ("北京市密云县鼓楼街道", "密云区", "110118", "鼓楼街道"),
    ],
)
def test_abolished_districts_read_as_their_successor(raw, district, adcode, detail):
    """Hukou addresses written decades ago keep districts since merged (崇文区 into 东城区,
    闸北区 into 静安区): read as the district that took them over, the same as the address
    another registry writes today."""
    row = _row(raw)
    assert (row["district"], row["adcode"], row["detail"]) == (district, adcode, detail)
    assert row["flags"] == "hukou_address_district_abolished"


def test_abolished_district_without_successor_leaves_the_district_null():
    # 燕山区 (北京, until 1986) went into 房山 with others: no single successor in the table
    row = _row("北京市燕山区迎风街1号")
    assert (row["city"], row["district"], row["detail"]) == ("北京市", None, "迎风街1号")
    assert row["flags"] == "hukou_address_district_abolished"


@pytest.mark.parametrize("raw", ["北京市宣武门外大街1号", "上海市南市街3号"])
def test_streets_named_after_abolished_districts_are_not_districts(raw):
    row = _row(raw)
    assert row["district"] is None
    assert row["flags"] == "hukou_address_no_district"


@pytest.mark.parametrize(
    ("raw", "city", "district", "adcode", "detail"),
    [
        # renamed with a new everyday name: python-stdnum's table implies the rename
        ("重庆市开县临江镇福德村3组", "重庆市", "开州区", "500154", "临江镇福德村3组"),
        ("开县临江镇福德村3组", "重庆市", "开州区", "500154", "临江镇福德村3组"),
        ("四川省达州市达县石桥镇", "达州市", "达川区", "511703", "石桥镇"),
        ("四川达县石桥镇", "达州市", "达川区", "511703", "石桥镇"),
        # cpca read 重庆's placeholder city 县 from 荣昌县 and lost the county
        ("重庆荣昌县昌元街道", "重庆市", "荣昌区", "500153", "昌元街道"),
        ("荣昌县安富镇", "重庆市", "荣昌区", "500153", "安富镇"),
        ("双流县华阳镇", "成都市", "双流区", "510116", "华阳镇"),
        ("合川市太和镇", "重庆市", "合川区", "500117", "太和镇"),
        # written alone, cpca found a namesake in another province: 津市市 (湖南), 南县
        # (湖南), 高安市 (江西)
        ("江津市白沙镇", "重庆市", "江津区", "500116", "白沙镇"),
        ("潼南县柏梓镇", "重庆市", "潼南区", "500152", "柏梓镇"),
        ("永川市高安镇龙石村", "重庆市", "永川区", "500118", "高安镇龙石村"),
    ],
)
def test_old_names_of_renamed_counties_are_read_as_today(raw, city, district, adcode, detail):
    """Hukou addresses keep a county's name from before its renaming (开县, 达县, 江津市):
    read as today's district, with or without the province and city before it."""
    row = _row(raw)
    assert (row["city"], row["district"], row["adcode"], row["detail"]) == (
        city,
        district,
        adcode,
        detail,
    )
    assert row["flags"] == "hukou_address_district_abolished"


def test_a_county_renamed_after_the_table_has_one_code_however_written():
    # 梁平县 became 梁平区 (2016) after cpca's table: read under the old code either way, the
    # district's suffix not left in the detail
    rows = [_row(raw) for raw in ("重庆市梁平县梁山镇", "重庆市梁平区梁山镇", "重庆梁平梁山镇")]
    assert {(r["adcode"], r["detail"]) for r in rows} == {("500228", "梁山镇")}
    assert _row("杭州市临安区锦城街道1号")["detail"] == "锦城街道1号"  # not 区锦城街道1号
    assert _row("杭州市临安市区锦城1号")["detail"] == "区锦城1号"  # 市区: the urban area


@pytest.mark.parametrize(
    ("raw", "district"),
    [("湖南省常德市津市市新洲镇", "津市市"), ("湖南江津市路1号", "津市市"), ("湖南省南县", "南县")],
)
def test_old_county_name_under_another_province_is_not_read(raw, district):
    # the province written first wins over an old name of another province's county
    assert _row(raw)["district"] == district


@pytest.mark.parametrize("raw", ["广东省梅州市梅县区程江镇", "梅县区程江镇"])
def test_todays_name_starting_with_an_old_name_is_read_whole(raw):
    # 梅县 became 梅县区 (2013): the old name must not eat today's
    row = _row(raw)
    assert (row["district"], row["detail"], row["flags"]) == ("梅县区", "程江镇", "")


def test_every_successor_is_a_current_district():
    for old, new in address._MERGED_INTO.items():
        assert new in address._NAME_BY_CODE, (old, new)
        assert old[:2] == new[:2]


@pytest.mark.parametrize(
    ("raw", "city", "district", "adcode", "detail"),
    [
        ("深圳市光明区光明街道沙河西路12号", "深圳市", "光明区", "440311", "光明街道沙河西路12号"),
        ("广东省深圳市坪山区坪山街道新湖路388号", "深圳市", "坪山区", "440310", "坪山街道新湖路388号"),
        ("深圳市龙华区观澜街道大和路5号", "深圳市", "龙华区", "440309", "观澜街道大和路5号"),
        # written first: cpca read 沙河市 from the road, or nothing
        ("光明区光明街道沙河西路", "深圳市", "光明区", "440311", "光明街道沙河西路"),
        ("坪山区坑梓街道", "深圳市", "坪山区", "440310", "坑梓街道"),
        ("成都市郫都区犀浦镇", "成都市", "郫都区", "510117", "犀浦镇"),
        ("海口市龙华区金贸路1号", "海口市", "龙华区", "460106", "金贸路1号"),
        # without their suffix, after their city
        ("四川宜宾叙州南岸街道1号", "宜宾市", "叙州区", "511504", "南岸街道1号"),
        ("成都郫都犀浦镇", "成都市", "郫都区", "510117", "犀浦镇"),
        # renamed with the same everyday name: cpca's old code, as 重庆梁平县 reads
        ("重庆梁平金土镇", "重庆市", "梁平县", "500228", "金土镇"),
        # Hangzhou's 2021 districts, which python-stdnum's table lacks too
        ("浙江省杭州市临平区南苑街道迎宾路1号", "杭州市", "临平区", "330113", "南苑街道迎宾路1号"),
        ("杭州市钱塘区下沙街道学林街2号", "杭州市", "钱塘区", "330114", "下沙街道学林街2号"),
        ("临平区乔司街道三角村", "杭州市", "临平区", "330113", "乔司街道三角村"),
        ("钱塘区白杨街道6号", "杭州市", "钱塘区", "330114", "白杨街道6号"),
    ],
)
def test_districts_created_after_cpcas_table_are_read(raw, city, district, adcode, detail):
    """Divisions created since cpca's table (深圳 龙华区 and 坪山区 2016, 光明区 2018), from
    python-stdnum's region table; 龙华区 written alone is Shenzhen's or Haikou's."""
    row = _row(raw)
    assert (row["city"], row["district"], row["adcode"], row["detail"]) == (
        city,
        district,
        adcode,
        detail,
    )


def test_a_new_district_name_two_cities_share_is_ambiguous():
    row = _row("龙华区民治街道1号")
    assert row["district"] is None
    assert row["flags"] == "hukou_address_ambiguous_district"
    assert set(address.AMBIGUOUS_DISTRICTS["龙华区"]) == {"440309", "460106"}


def test_ambiguous_current_district_is_read_in_the_batchs_city():
    """南山区 and 龙华区 written without their city are 深圳's or another city's; a batch whose
    current addresses lie in 深圳 reads them there. 朝阳区 (北京 or 长春) stays ambiguous: no
    address of the batch lies in either city."""
    values = pd.Series(
        ["南山区粤海街道科技园1号", "深圳市福田区华强北路1号", "深圳市宝安区西乡街道1号",
         "龙华区民治街道1号", "朝阳区建国路1号", None]
    )  # fmt: skip
    out = standardize_addresses(values, schema.CURRENT_ADDRESS, by_batch=True)
    adcode = out[schema.address_col(schema.CURRENT_ADDRESS, "adcode")].tolist()
    assert adcode[0] == "440305" and adcode[3] == "440309"
    flags = out[schema.QUALITY_FLAGS].tolist()
    assert flags[0] == flags[3] == "current_address_district_from_batch"
    assert flags[4] == "current_address_ambiguous_district" and adcode[4] is None
    # without the batch's evidence (one record alone) the name stays ambiguous
    alone = standardize_addresses(values[:1], schema.CURRENT_ADDRESS, by_batch=True)
    assert alone[schema.QUALITY_FLAGS].iloc[0] == "current_address_ambiguous_district"


@pytest.mark.parametrize(
    "raw", ["九堡街道新民村1组61号", "五常街道建设村6组140号", "笕桥街道东港雅苑3幢", "沙河镇1号"]
)
def test_a_street_office_written_first_names_no_county_inside_or_after_it(raw):
    """A health record's address often starts at the street office; cpca read a county
    from the street's own name or an estate after it (五常市 in 黑龙江, 新民市 and 东港市
    in 辽宁): the address is unparsed instead, its whole text the detail."""
    row = _row(raw)
    assert (row["province"], row["city"], row["district"], row["adcode"]) == (None,) * 4
    assert row["detail"] == raw and row["flags"] == "hukou_address_unparsed"


def test_a_street_office_after_its_city_or_a_prefecture_still_reads():
    assert _row("杭州市余杭区五常街道1号")["district"] == "余杭区"
    assert _row("大理州金牛镇8号")["adcode"] == "532900"


@pytest.mark.parametrize(
    ("raw", "district", "adcode"),
    [
        ("浙江杭州江干九堡街道1号", "上城区", "330102"),
        ("杭州下城武林街道1号", "拱墅区", "330105"),
        ("杭州市江干区九堡街道1号", "上城区", "330102"),
    ],
)
def test_a_merged_district_written_short_reads_as_its_successor(raw, district, adcode):
    """杭州江干 is read as 上城区, as 杭州市江干区 is (merged in 2021); it stayed 江干区."""
    row = _row(raw)
    assert (row["district"], row["adcode"]) == (district, adcode)
    assert row["flags"] == "hukou_address_district_abolished"
