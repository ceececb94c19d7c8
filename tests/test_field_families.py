"""End-to-end runs over small registries for families of field faults: two-digit years, filler
values, minority-name separators, golden names, future dates. Data invented for these tests."""

from __future__ import annotations

import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml

from linkage import Linker, schema

POLICE_COLS = {
    "编号": "record_id",
    "姓名": "name",
    "性别": "gender",
    "出生日期": "birth_date",
    "身份证号": "id_number",
    "电话": "phone",
    "住址": "current_address",
}


def write_run(tmp: Path, police: list[list], other: list[list], extra: dict | None = None) -> Path:
    header = list(POLICE_COLS)
    pd.DataFrame(police, columns=header).to_csv(tmp / "police.csv", index=False)
    pd.DataFrame(other, columns=header).to_csv(tmp / "clinic.csv", index=False)
    columns = {k: v for k, v in POLICE_COLS.items() if v != "record_id"}
    config = {
        "sources": {
            "police": {"path": "police.csv", "record_id": "编号", "columns": columns},
            "clinic": {"path": "clinic.csv", "record_id": "编号", "columns": columns},
        }
    }
    config.update(extra or {})
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def groups(result) -> set[frozenset]:
    ids = result.identities
    return {
        frozenset(f"{s}:{r}" for s, r in zip(g[schema.SOURCE], g[schema.RECORD_ID], strict=True))
        for _, g in ids.groupby(schema.IDENTITY_ID)
    }


def test_two_digit_birth_years_of_the_elderly_link(tmp_path):
    # a YY-MM-DD year that the pivot would put after today belongs to the century before
    yy = (datetime.date.today().year + 1) % 100
    police = [
        [
            "P1",
            "黄秀英",
            "女",
            f"19{yy:02d}-04-09",
            "440103" + f"19{yy:02d}0409" + "1228",
            "13700001111",
            "",
        ],
        ["P2", "马福来", "男", "1931-12-20", "", "13700002222", ""],
    ]
    clinic = [
        ["C1", "黄秀英", "女", f"{yy:02d}-04-09", "", "13700001111", ""],
        ["C2", "马福来", "男", "31-12-20", "", "13700002222", ""],
    ]
    result = Linker.from_yaml(write_run(tmp_path, police, clinic)).run()
    births = result.records.set_index(schema.RECORD_ID)[schema.BIRTH_DATE_STD]
    assert births["C1"] == f"19{yy:02d}-04-09"
    assert (births.dropna() <= datetime.date.today().isoformat()).all()
    assert frozenset({"police:P1", "clinic:C1"}) in groups(result)
    assert frozenset({"police:P2", "clinic:C2"}) in groups(result)


@pytest.mark.parametrize(
    "filler_id",
    ["000000000000000000", "222222222222222222", "123456789012345678", "111111111111111"],
)
def test_filler_ids_and_addresses_are_missing_not_agreement(tmp_path, filler_id):
    police = [
        [
            "P1",
            "刘桂芝",
            "女",
            "1940-02-11",
            "510104194002111546",
            "13800005551",
            "成都市锦江区春熙路5号",
        ],
        [
            "P2",
            "刘桂琴",
            "女",
            "1942-08-30",
            "510104194208302347",
            "13800005551",
            "成都市锦江区春熙路5号",
        ],
    ]
    clinic = [
        ["C1", "刘桂芝", "女", "1940-02-11", filler_id, "13800005551", "不详"],
        ["C2", "刘桂琴", "女", "1942-08-30", filler_id, "13800005551", "不详"],
    ]
    result = Linker.from_yaml(write_run(tmp_path, police, clinic)).run()
    records = result.records.set_index(schema.RECORD_ID)
    assert records.loc["C1", schema.ID_STD] is None or pd.isna(records.loc["C1", schema.ID_STD])
    assert "id_placeholder" in records.loc["C1", schema.QUALITY_FLAGS]
    assert "current_address_placeholder" in records.loc["C1", schema.QUALITY_FLAGS]
    pairs = result.pairs_with_keys()
    clinic_pair = pairs[(pairs.source_l == "clinic") & (pairs.source_r == "clinic")]
    assert (clinic_pair["gamma_id"] == -1).all()
    assert not clinic_pair["gamma_contact"].isin([2, 4]).any()  # no address agreement
    assert groups(result) == {
        frozenset({"police:P1", "clinic:C1"}),
        frozenset({"police:P2", "clinic:C2"}),
    }


@pytest.mark.parametrize("sep", ["●", "■", "▪", "•", "・", "．", "-", "=", "_", "。", "∙"])
def test_minority_separators_read_as_the_middle_dot(tmp_path, sep):
    police = [
        ["P1", "阿卜杜拉·买买提", "男", "1979-05-05", "", "13900001234", ""],
        ["P2", "阿卜杜拉·艾海提", "男", "1979-05-05", "", "13900005678", ""],
    ]
    clinic = [
        ["C1", f"阿卜杜拉{sep}买买提", "男", "1979-05-05", "", "13900001234", ""],
        ["C2", f"阿卜杜拉{sep}艾海提", "男", "1979-05-05", "", "13900005678", ""],
    ]
    result = Linker.from_yaml(write_run(tmp_path, police, clinic)).run()
    clean = result.records.set_index(schema.RECORD_ID)[schema.name_col("name", "clean")]
    assert clean["C1"] == "阿卜杜拉·买买提" and clean["C2"] == "阿卜杜拉·艾海提"
    assert groups(result) == {
        frozenset({"police:P1", "clinic:C1"}),
        frozenset({"police:P2", "clinic:C2"}),
    }


def test_golden_name_is_a_spelling_a_source_holds(tmp_path):
    police = [
        ["P1", "於海波", "男", "1970-01-02", "", "13600000001", ""],
        ["P2", "甯秀兰", "女", "1966-03-04", "", "13600000002", ""],
        ["P3", "方汎", "男", "1980-05-06", "", "13600000003", ""],
        ["P4", "钟国强", "男", "1975-07-08", "", "13600000004", ""],
    ]
    clinic = [
        ["C1", "於海波", "男", "1970-01-02", "", "13600000001", ""],
        ["C2", "甯秀蘭", "女", "1966-03-04", "", "13600000002", ""],
        ["C3", "方汎", "男", "1980-05-06", "", "13600000003", ""],
        ["C4", "鍾國強", "男", "1975-07-08", "", "13600000004", ""],
    ]
    result = Linker.from_yaml(write_run(tmp_path, police, clinic)).run()
    held = set(pd.read_csv(tmp_path / "police.csv")["姓名"]) | set(
        pd.read_csv(tmp_path / "clinic.csv")["姓名"]
    )
    golden = set(result.golden[schema.NAME])
    assert golden <= held
    assert {"於海波", "方汎", "钟国强"} <= golden
    assert golden & {"甯秀兰", "甯秀蘭"}
    assert len(groups(result)) == 4


def test_future_birth_dates_are_null_and_flagged(tmp_path):
    police = [
        ["P1", "张建国", "男", "2091-01-01", "", "13500000001", ""],
        ["P2", "李红", "女", "1988-09-09", "", "13500000002", ""],
    ]
    clinic = [["C1", "王强", "男", "1990-01-01", "", "13500000003", ""]]
    result = Linker.from_yaml(write_run(tmp_path, police, clinic)).run()
    records = result.records.set_index(schema.RECORD_ID)
    assert pd.isna(records.loc["P1", schema.BIRTH_DATE_STD])
    assert "birth_date_future" in records.loc["P1", schema.QUALITY_FLAGS]
    golden = result.golden.set_index("name")
    assert pd.isna(golden.loc["张建国", schema.BIRTH_DATE])


def test_birth_after_registration_is_flagged():
    from linkage.standardize.combine import standardize

    records = pd.DataFrame(
        {
            schema.SOURCE: ["a", "a"],
            schema.RECORD_ID: ["1", "2"],
            schema.BIRTH_DATE: ["2015-06-01", "2015-06-01"],
            schema.REGISTERED_AT: ["2014-01-01", "2016-01-01"],
        }
    )
    out = standardize(records)
    assert "birth_date_after_registered" in out[schema.QUALITY_FLAGS].iloc[0]
    assert "birth_date_after_registered" not in out[schema.QUALITY_FLAGS].iloc[1]
    assert out[schema.BIRTH_DATE_STD].iloc[0] == "2015-06-01"  # which of the two is wrong is open


def test_cross_field_flags_are_listed():
    from linkage.standardize.combine import all_flags

    assert "birth_date_after_registered" in all_flags()


def test_newborn_file_opened_on_the_birth_day_keeps_its_date():
    """A 0-6 child's health file is opened on the day of birth and carries a guardian's ID:
    the recorded date equals the registration date and is the child's own birth date (an
    ID 26 years older is the guardian's), not a registration date typed into the wrong field."""
    from linkage.standardize.combine import standardize
    from linkage.standardize.idnumber import id_check_char

    body = "21010219941127532"
    records = pd.DataFrame(
        {
            schema.SOURCE: ["health"],
            schema.RECORD_ID: ["1"],
            schema.ID_NUMBER: [body + id_check_char(body)],
            schema.BIRTH_DATE: ["2020-05-09"],
            schema.REGISTERED_AT: ["2020-05-09"],
        }
    )
    out = standardize(records)
    assert out[schema.BIRTH_DATE_STD].iloc[0] == "2020-05-09"
    assert "id_not_own" in out[schema.QUALITY_FLAGS].iloc[0]


def _valid_id(body: str) -> str:
    from linkage.standardize.idnumber import id_check_char

    return body + id_check_char(body)


def test_newborn_clinic_file_meets_the_child_by_birth_date_and_estate(tmp_path):
    """A newborn's clinic file names the baby by a parent (樊晨阳之女) or not at all (女婴),
    has no ID and a parent's phone: only the birth date and the estate, written with or
    without its road and door number, tie it to the child's police record. The placeholder
    name is no evidence (name comparison null), the flat agrees (contact ``address``), and
    the blocking rule ``birth_date_current_estate`` makes the pair a candidate."""
    police = [
        ["P1", "樊欣怡", "女", "2024-04-29", _valid_id("33010820240429624"), "18709447130",
         "杭州市滨江区丰潭路405号西竹府13幢6单元701室"],
        ["P2", "樊晨阳", "男", "1994-02-11", _valid_id("33010819940211301"), "13110450131",
         "杭州市滨江区丰潭路405号西竹府13幢6单元701室"],
        ["P3", "李建国", "男", "1961-07-03", _valid_id("33010519610703151"), "13900001111",
         "杭州市拱墅区文二路468号嘉朝小区12幢4单元403室"],
    ]
    clinic = [
        ["C1", "樊晨阳之女", "女", "2024/4/29", "", "13110450131", "浙江省杭州市滨江区西竹府13-6-701"],
        ["C2", "樊晨阳", "男", "1994-02-11", "", "13110450131", "浙江省杭州市滨江区西竹府13-6-701"],
        ["C3", "女婴", "女", "2024-04-29", "", "13110450131", "滨江区西竹府13幢6单元701室"],
        ["C4", "李建国", "男", "1961-07-03", "", "13900001111", "杭州市拱墅区嘉朝小区12-4-403"],
    ]
    result = Linker.from_yaml(write_run(tmp_path, police, clinic)).run()
    pairs = result.pairs_with_keys()
    from linkage.compare.address import ContactComparison
    from linkage.compare.fields import BirthDateComparison

    for clinic_id in ("C1", "C3"):
        child = pairs[
            (pairs.record_id_l == "P1") & (pairs.record_id_r == clinic_id)
            | (pairs.record_id_l == clinic_id) & (pairs.record_id_r == "P1")
        ]
        assert len(child) == 1, clinic_id
        row = child.iloc[0]
        assert row["gamma_name"] == -1  # a parent's name, or none, says nothing of the child's
        assert row["gamma_birth_date"] == BirthDateComparison.levels.index("exact")
        assert row["gamma_contact"] >= ContactComparison.levels.index("address")
    # 女婴 shares no name key with 樊欣怡: only the birth date and the estate bring them together
    nameless = pairs[(pairs.record_id_l == "C3") | (pairs.record_id_r == "C3")]
    assert "birth_date_current_estate" in set(nameless[schema.RULE])


def test_clinic_file_without_birth_date_meets_its_flat_in_a_big_name_and_estate_block(tmp_path):
    """Nine women named 王静 live in building 3 of 锦绣华庭, one per flat: the default rule
    ``fuzzy_name_current_estate`` has a block of nine and refines it, first by the flat
    (``current_flat``). A clinic file with the name and the flat only (no birth date, no ID,
    its own phone) stays with the police record of its flat (304, written 3栋304室 there and
    3-304 here) and is not paired with the eight neighbours; refined by birth year it would
    form a part of its own and meet no one."""
    police = [
        [f"P{k}", "王静", "女", f"{1970 + k}-03-0{k}",
         _valid_id(f"35020619{70 + k}030{k}50{k}"), f"1380000000{k}",
         f"厦门市湖里区禾山街道锦绣华庭3栋30{k}室"]
        for k in range(1, 9)
    ]
    clinic = [["C1", "王静", "女", "", "", "18912345678", "湖里区锦绣华庭3-304"]]
    run = write_run(tmp_path, police, clinic, {"output": {"pairs_min_probability": 0}})
    result = Linker.from_yaml(run).run()
    estate = result.summary["blocking"]["fuzzy_name_current_estate"]
    assert estate["largest_block"] == 9 and estate["refined_by"].startswith("current_flat")
    pairs = result.pairs_with_keys()
    mine = pairs[(pairs.record_id_l == "C1") | (pairs.record_id_r == "C1")]
    assert set(mine.record_id_l) | set(mine.record_id_r) == {"C1", "P4"}
    assert set(mine[schema.RULE]) == {"fuzzy_name_current_estate"}


def test_a_registry_exporting_name_and_address_in_parts_links(tmp_path):
    """A clinic exports 姓 / 名 and 省 / 市 / 区 / 详细地址 in columns of their own (one detail
    written whole, province to flat): mapped several to one field, they are joined in order
    and link with the police record of the whole name and address."""
    police = [
        ["P1", "欧阳娜娜", "女", "1991-05-17", _valid_id("44030519910517242"), "13712345678",
         "广东省深圳市南山区粤海街道科苑路8号讯美科技广场3栋1201室"],
        ["P2", "张伟", "男", "1985-02-03", _valid_id("44030619850203151"), "13800001111",
         "广东省深圳市宝安区新安街道宝城28区7栋402室"],
    ]
    pd.DataFrame(police, columns=list(POLICE_COLS)).to_csv(tmp_path / "police.csv", index=False)
    clinic = pd.DataFrame(
        [["C1", "欧阳", "娜娜", "女", "1991-05-17", "广东省", "深圳市", "南山区",
          "粤海街道科苑路8号讯美科技广场3栋1201室"],
         ["C2", "张", "伟", "男", "1985-02-03", "广东省", "深圳市", "宝安区",
          "广东省深圳市宝安区新安街道宝城28区7栋402室"]],
        columns=["编号", "姓", "名", "性别", "出生日期", "省", "市", "区", "详细地址"],
    )
    clinic.to_csv(tmp_path / "clinic.csv", index=False, encoding="gb18030")
    police_cols = {k: v for k, v in POLICE_COLS.items() if v != "record_id"}
    clinic_cols = {"姓": "name", "名": "name", "性别": "gender", "出生日期": "birth_date",
                   "省": "current_address", "市": "current_address", "区": "current_address",
                   "详细地址": "current_address"}
    config = {"sources": {
        "police": {"path": "police.csv", "record_id": "编号", "columns": police_cols},
        "clinic": {"path": "clinic.csv", "record_id": "编号", "columns": clinic_cols},
    }}
    run = tmp_path / "run.yaml"
    # the columns are joined in the order the config lists them (YAML keeps it)
    run.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    result = Linker.from_yaml(run).run()
    records = result.records.set_index(schema.RECORD_ID)
    assert records.loc["C1", schema.NAME] == "欧阳娜娜"
    assert records.loc["C2", schema.CURRENT_ADDRESS] == police[1][6]
    assert {frozenset({"police:P1", "clinic:C1"}), frozenset({"police:P2", "clinic:C2"})} <= groups(
        result
    )
