from __future__ import annotations

import pandas as pd
import pytest

from linkage import schema
from linkage.config import config_from_dict
from linkage.errors import InputError
from linkage.io import decode_bytes, read_source, read_sources, write_csv

ROWS = [
    ["P001", "张伟", "11010519491231002X", "01088886666", "北京市朝阳区"],
    ["P002", "买买提·艾力", "650102198001011234", "13800001111", "新疆乌鲁木齐市"],
    ["P003", "王䶮", "", "", "浙江省杭州市西湖区"],
]
HEADER = ["登记编号", "姓名", "公民身份号码", "联系电话", "住址"]
COLUMNS = {"姓名": "name", "公民身份号码": "id_number", "联系电话": "phone"}


def _csv_text(rows=ROWS, header=HEADER) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _cfg(path, **extra):
    entry = {"path": str(path), "record_id": "登记编号", "columns": COLUMNS, **extra}
    return config_from_dict({"sources": {"police": entry}}, path=path.parent / "run.yaml").sources[
        "police"
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_csv_encodings_detected(tmp_path, encoding):
    path = tmp_path / "p.csv"
    path.write_bytes(_csv_text().encode(encoding))
    frame = read_source(_cfg(path))
    assert list(frame[schema.NAME]) == ["张伟", "买买提·艾力", "王䶮"]
    # text kept exactly: leading zero and trailing X survive, empty cells become null
    assert frame.loc[0, schema.ID_NUMBER] == "11010519491231002X"
    assert frame.loc[0, schema.PHONE] == "01088886666"
    assert frame.loc[2, schema.ID_NUMBER] is None
    # unmapped columns pass through untouched under raw.<header>, the source name is added
    assert list(frame["raw.住址"]) == [r[4] for r in ROWS]
    assert set(frame[schema.SOURCE]) == {"police"}


def test_gbk_file_with_middle_dot(tmp_path):
    rows = [r for r in ROWS if "䶮" not in r[1]]  # 䶮 is outside GBK
    path = tmp_path / "p.csv"
    path.write_bytes(_csv_text(rows).encode("gbk"))
    frame = read_source(_cfg(path))
    # decoded as GB18030, not gb2312, so the U+00B7 middle dot stays U+00B7
    assert frame.loc[1, schema.NAME] == "买买提·艾力"


def test_forced_encoding_and_wrong_forced_encoding(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(_csv_text().encode("gb18030"))
    assert read_source(_cfg(path, encoding="gb18030")).loc[2, schema.NAME] == "王䶮"
    with pytest.raises(InputError, match=r"p.csv, line 1: cannot be decoded as utf-8"):
        read_source(_cfg(path, encoding="utf-8"))


def test_big5_is_not_mistaken_for_gb18030():
    text = "姓名\n張偉\n陳美玲\n黃志明\n林淑芬\n"
    decoded, used = decode_bytes(text.encode("big5"))
    assert used == "big5" and decoded == text


def test_excel_and_parquet(tmp_path):
    frame = pd.DataFrame(ROWS, columns=HEADER)
    xlsx, parquet = tmp_path / "p.xlsx", tmp_path / "p.parquet"
    frame.to_excel(xlsx, index=False)
    frame.to_parquet(parquet)
    for path in (xlsx, parquet):
        out = read_source(_cfg(path))
        assert out.loc[0, schema.ID_NUMBER] == "11010519491231002X"
        assert out.loc[0, schema.PHONE] == "01088886666"
        assert out.loc[1, schema.NAME] == "买买提·艾力"


def test_parquet_integer_ids_keep_all_digits(tmp_path):
    path = tmp_path / "p.parquet"
    pd.DataFrame(
        {
            "登记编号": [1, 2],
            "姓名": ["张伟", "李娜"],
            "公民身份号码": [110105194912310021, 0],
            "联系电话": [13800001111, 13800001112],
        }
    ).to_parquet(path)
    out = read_source(_cfg(path))
    assert out.loc[0, schema.ID_NUMBER] == "110105194912310021"
    assert out.loc[0, schema.RECORD_ID] == "1"


def test_malformed_rows_reported_with_line_numbers(tmp_path):
    path = tmp_path / "p.csv"
    text = _csv_text() + "P004,多,了,一,个,字段\nP005,李娜,,,\nP006,x\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_source(_cfg(path))
    msg = str(info.value)
    assert "2 line(s) with the wrong number of fields, expected 5" in msg
    assert "line 5 has 6" in msg and "line 7 has 2" in msg


def test_missing_mapped_column_names_it(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        _csv_text(header=["登记编号", "名字", "公民身份号码", "联系电话", "住址"]), encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"p.csv: mapped column\(s\) '姓名' not in the file"):
        read_source(_cfg(path))


def test_duplicate_and_empty_record_ids(tmp_path):
    path = tmp_path / "p.csv"
    rows = [ROWS[0], ROWS[1], ["P001", "张伟", "", "", ""]]
    path.write_text(_csv_text(rows), encoding="utf-8")
    with pytest.raises(
        InputError,
        match=r"column '登记编号': 1 duplicate record id value\(s\), e.g. 'P001', on lines 2, 4",
    ):
        read_source(_cfg(path))
    rows = [ROWS[0], ["", "李娜", "", "", ""]]
    path.write_text(_csv_text(rows), encoding="utf-8")
    with pytest.raises(InputError, match=r"1 row\(s\) have no record id \(3\)"):
        read_source(_cfg(path))


def test_empty_file_and_unknown_type(tmp_path):
    empty = tmp_path / "e.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="file is empty"):
        read_source(_cfg(empty))
    other = tmp_path / "p.json"
    other.write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="unsupported file type '.json'"):
        read_source(_cfg(other))
    with pytest.raises(InputError, match="file not found"):
        read_source(_cfg(tmp_path / "nope.csv"))


def test_header_only_file_gives_empty_table(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(",".join(HEADER) + "\n", encoding="utf-8")
    assert len(read_source(_cfg(path))) == 0


def test_read_sources_stacks_and_adds_canonical_columns(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(_csv_text(), encoding="utf-8")
    b.write_text("编号,名\nH1,张伟\n", encoding="utf-8")
    cfg = config_from_dict(
        {
            "sources": {
                "a": {"path": "a.csv", "record_id": "登记编号", "columns": COLUMNS},
                "b": {"path": "b.csv", "record_id": "编号", "columns": {"名": "name"}},
            }
        },
        path=tmp_path / "run.yaml",
    )
    records = read_sources(cfg)
    assert len(records) == 4
    assert list(records.columns[: len(schema.CANONICAL_FIELDS)]) == list(schema.CANONICAL_FIELDS)
    assert records.loc[3, schema.SOURCE] == "b" and records.loc[3, schema.ID_NUMBER] is None


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.csv"
    write_csv(pd.DataFrame({"a": [1]}), target)
    assert target.read_text() == "a\n1\n"

    class Boom(pd.DataFrame):
        def to_csv(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_csv(Boom({"a": [2]}), target)
    assert target.read_text() == "a\n1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_quoted_fields_and_whitespace(tmp_path):
    path = tmp_path / "p.csv"
    text = (
        "登记编号,姓名,公民身份号码,联系电话,住址\n"
        'P1, 张伟 ,"11010519491231002X",,"北京市朝阳区, 某路\n3号"\n'
        "P2,李娜,   ,138 0000 1111,\n"
    )
    path.write_text(text, encoding="utf-8")
    frame = read_source(_cfg(path))
    assert frame.loc[0, schema.NAME] == "张伟"
    assert frame.loc[0, "raw.住址"] == "北京市朝阳区, 某路\n3号"
    assert frame.loc[1, schema.ID_NUMBER] is None and frame.loc[0, schema.PHONE] is None
    assert frame.loc[1, schema.PHONE] == "138 0000 1111"
