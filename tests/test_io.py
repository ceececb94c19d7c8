from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkage import schema
from linkage.config import config_from_dict
from linkage.errors import InputError
from linkage.io import RejectedRows, decode_bytes, read_source, read_sources, write_csv

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


@pytest.mark.parametrize("rows", [1, 2, 4, 5, 20])
def test_small_big5_files_with_ascii_headers_are_big5(rows):
    # traditional names are judged in simplified form; read as GB18030 they give rare
    # characters and kana (陳大文 -> 朝ゅ), which count against that decode
    names = ["陳大文", "黃小明", "張偉", "李嘉欣", "鄭秀英"]
    lines = ["id,name,dob"] + [f"B{i},{names[i % 5]},1970-01-0{i % 9 + 1}" for i in range(rows)]
    text = "\n".join(lines) + "\n"
    decoded, used = decode_bytes(text.encode("big5"))
    assert used == "big5" and decoded == text


@pytest.mark.parametrize("names", [["王秀英"], ["李娜", "张伟"], ["买买提·艾力"], ["陳大文"]])
def test_small_gbk_files_stay_gb18030(names):
    text = "id,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names))
    assert decode_bytes(text.encode("gb18030")) == (text, "gb18030")


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
        match=r"column '登记编号': 1 duplicate record id value\(s\), e.g. 'P001' \(lines 2, 4\)",
    ):
        read_source(_cfg(path))
    rows = [ROWS[0], ["", "李娜", "", "", ""]]
    path.write_text(_csv_text(rows), encoding="utf-8")
    with pytest.raises(InputError, match=r"1 row\(s\) have no record id \(line 3\)"):
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


def test_missing_source_files_are_refused_before_any_file_is_read(tmp_path, monkeypatch):
    """Paths before work: every missing (or folder) source is named in one error, and no
    source is read first."""
    from linkage import io as linkage_io

    (tmp_path / "a.csv").write_text(_csv_text(), encoding="utf-8")
    (tmp_path / "c").mkdir()
    sources = {
        "a": {"path": "a.csv", "record_id": "登记编号", "columns": COLUMNS},
        "b": {"path": "b.csv", "record_id": "编号", "columns": {"名": "name"}},
        "c": {"path": "c", "record_id": "编号", "columns": {"名": "name"}},
    }
    read = []
    monkeypatch.setattr(linkage_io, "read_source", lambda cfg, **kw: read.append(cfg.name))
    cfg = config_from_dict({"sources": sources}, path=tmp_path / "run.yaml")
    with pytest.raises(InputError) as err:
        read_sources(cfg)
    text = str(err.value)
    assert "2 source files cannot be read" in text and read == []
    assert f"{tmp_path / 'b.csv'}: file not found" in text and "c: is a folder" in text
    one = config_from_dict({"sources": {k: sources[k] for k in "ab"}}, path=tmp_path / "run.yaml")
    with pytest.raises(InputError, match="b.csv: file not found"):
        read_sources(one)
    assert read == []


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


def _full_device() -> bool:
    """Whether this machine has Linux's ``/dev/full`` (a character device whose writes fail
    with ENOSPC); a container may lack it."""
    import stat

    try:
        return stat.S_ISCHR(os.stat("/dev/full").st_mode)
    except OSError:
        return False


def _no_space(tmp: Path) -> None:
    """A writer that writes part of a file, then fails as pyarrow's writers do on a full
    disk (``OSError`` errno 28 with pyarrow's message)."""
    tmp.write_bytes(b"x" * 1000)
    raise OSError(
        errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"
    )


def _onto_full_device(tmp: Path) -> None:
    """A writer whose bytes go to ``/dev/full``: the kernel's own ENOSPC, through pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pa.OSFile("/dev/full", "wb") as sink:
        pq.write_table(pa.table({"a": list(range(100_000))}), sink)


@pytest.mark.parametrize(
    "writer",
    [
        _no_space,
        pytest.param(
            _onto_full_device,
            marks=pytest.mark.skipif(not _full_device(), reason="no /dev/full device here"),
        ),
    ],
)
def test_atomic_write_on_a_full_device_names_the_file(tmp_path, writer):
    """A write refused with ENOSPC is an ``OutputError`` naming the file, and leaves the old
    file and no temporary."""
    from linkage.errors import LinkageError, OutputError
    from linkage.io import atomic_write

    target = tmp_path / "golden_records.parquet"
    target.write_bytes(b"before")
    with pytest.raises(OutputError) as err:
        atomic_write(target, writer)
    assert isinstance(err.value, LinkageError) and err.value.path == str(target)
    assert str(err.value).startswith(f"{target}: no space left on the device (")
    assert "MiB free there now" in str(err.value) and "--resume" in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert target.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_atomic_write_with_no_room_for_its_temporary_file(tmp_path, monkeypatch):
    """No room even to create the temporary file (``mkstemp`` fails with ENOSPC): the same
    ``OutputError`` naming the file, nothing left behind."""
    import tempfile

    from linkage.errors import OutputError
    from linkage.io import atomic_write

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "mkstemp", no_room)
    target = tmp_path / "out.csv"
    with pytest.raises(OutputError, match="out.csv: no space left on the device"):
        atomic_write(target, lambda p: p.write_text("x"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_passes_other_os_errors_as_they_are(tmp_path):
    from linkage.io import atomic_write

    def refused(tmp: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))

    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "out.csv", refused)
    assert list(tmp_path.iterdir()) == []


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


# ----------------------------------------------------------------------------- field counts


def _read_text(tmp_path, text, **extra):
    path = tmp_path / "p.csv"
    path.write_text(text, encoding="utf-8")
    return read_source(_cfg(path, **extra))


def test_every_line_with_a_wrong_field_count_is_named(tmp_path):
    text = _csv_text() + "P004,少\nP005,多,1,2,3,4,5\n\nP006,张三,,,\n"
    with pytest.raises(InputError) as info:
        _read_text(tmp_path, text)
    msg = str(info.value)
    assert "p.csv: 2 line(s) with the wrong number of fields, expected 5" in msg
    assert "line 5 has 2, line 6 has 7" in msg


def test_many_bad_lines_are_counted_past_the_listed_ones(tmp_path):
    text = _csv_text() + "".join(f"X{i},only\n" for i in range(250))
    with pytest.raises(InputError, match=r"250 line\(s\).*line 204 has 2, and 50 more"):
        _read_text(tmp_path, text)


def test_a_quoted_record_over_several_lines_is_counted_from_its_first_line(tmp_path):
    text = _csv_text() + 'P004,"多行\n姓名",,,"地址\n第二行"\nP005,short\n'
    with pytest.raises(InputError, match=r"1 line\(s\).*: line 8 has 2"):
        _read_text(tmp_path, text)


@pytest.mark.parametrize(
    "header_end, row_end",
    [(",", ","), ("", ","), (",", ""), (",,", ",,")],
    ids=["both", "rows only", "header only", "two delimiters"],
)
def test_lines_ending_in_a_delimiter_read(tmp_path, header_end, row_end):
    text = "\n".join([",".join(HEADER) + header_end, *(",".join(r) + row_end for r in ROWS)])
    frame = _read_text(tmp_path, text + "\n")
    assert list(frame[schema.RECORD_ID]) == ["P001", "P002", "P003"]
    assert list(frame["raw.住址"]) == [r[4] for r in ROWS]
    assert not any(c.startswith("raw.\x00") or "unnamed" in c for c in frame.columns)


def test_mixed_trailing_delimiters_are_wrong_field_counts(tmp_path):
    rows = [",".join(ROWS[0]) + ",", ",".join(ROWS[1]), ",".join(ROWS[2]) + ","]
    with pytest.raises(InputError, match=r"expected 6: line 3 has 5"):
        _read_text(tmp_path, "\n".join([",".join(HEADER), *rows]) + "\n")


def test_arrow_and_python_csv_paths_agree(tmp_path):
    from linkage import io as lio

    text = (
        ",".join(HEADER) + ",\n"
        'P1, 张伟 ,"11010519491231002X",,"北京市朝阳区, 某路\n3号",\n'
        'P2,"李""娜",   ,138 0000 1111,,\n'
        "\n"
        "P3,王芳,,,上海,\n"
    )
    path = tmp_path / "p.csv"
    path.write_text(text, encoding="utf-8")
    cfg = _cfg(path)
    names, header_lines, body = lio._csv_layout(text, cfg)
    fast = lio._read_csv_arrow(body, names, cfg)
    slow = lio._read_csv_python(body, names, cfg, header_lines + 1)
    assert fast is not None
    pd.testing.assert_frame_equal(fast.astype(object), slow.astype(object), check_dtype=False)
    assert slow.loc[1, "姓名"] == '李"娜' and slow.loc[0, "住址"] == "北京市朝阳区, 某路\n3号"


# ----------------------------------------------------------------------------- numbers as keys


def _xlsx_source(tmp_path, rows, formats=None, **extra):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    for (r, c), fmt in (formats or {}).items():
        sheet.cell(row=r, column=c).number_format = fmt
    path = tmp_path / "p.xlsx"
    book.save(path)
    return _cfg(path, **extra)


def test_excel_numbers_read_as_exact_text(tmp_path, caplog):
    import datetime

    rows = [
        [101, "张伟", 110105194912310021.0, 13800001111, datetime.datetime(1980, 1, 2)],
        [102, "李娜", 11010519491231.0, 1.5, True],
        [7, "王芳", None, None, datetime.date(1990, 5, 6)],
    ]
    cfg = _xlsx_source(tmp_path, rows, {(4, 1): "00000"})
    with caplog.at_level("WARNING"):
        frame = read_source(cfg)
    assert list(frame[schema.RECORD_ID]) == ["101", "102", "00007"]  # format's zero padding kept
    # 18 digits cannot live in Excel's 15: kept in float form (flagged downstream), not as
    # the made-up digits 110105194912310016 that pandas.read_excel(dtype=str) gives
    assert frame.loc[0, schema.ID_NUMBER].startswith("1.1010519491231")
    assert frame.loc[0, schema.ID_NUMBER].endswith("e+17")
    assert frame.loc[1, schema.ID_NUMBER] == "11010519491231"
    assert frame.loc[0, schema.PHONE] == "13800001111" and frame.loc[1, schema.PHONE] == "1.5"
    assert list(frame["raw.住址"]) == ["1980-01-02", "True", "1990-05-06"]
    assert "公民身份号码" in caplog.text and "rows 2" in caplog.text


@pytest.mark.parametrize(
    "rid", [4403000000002120, 1234567890123456, -1234567890123456, 12345678901234567]
)
def test_excel_record_ids_of_16_or_17_digits_stored_as_integers_are_refused(tmp_path, rid):
    # the sheet's XML holds such a number without an exponent, so it reads as an exact int;
    # 4403000000002120 is what Excel keeps of 4403000000002123
    cfg = _xlsx_source(tmp_path, [["P1", "张伟"], [rid, "李娜"], [999999999999999, "王芳"]])
    with pytest.raises(InputError) as info:
        read_source(cfg)
    msg = str(info.value)
    assert "column '登记编号': 1 record id(s)" in msg and "(row 3)" in msg
    rejected = RejectedRows()
    frame = read_source(cfg, rejected=rejected)
    # 15 digits fit in Excel: kept
    assert list(frame[schema.RECORD_ID]) == ["P1", "999999999999999"]
    assert rejected.frame()[schema.REJECT_LINE].tolist() == [3]


def test_excel_integers_of_16_digits_outside_the_record_id_are_kept(tmp_path):
    cfg = _xlsx_source(tmp_path, [["P1", "张伟", 4403000000002120]])
    assert read_source(cfg).loc[0, schema.ID_NUMBER] == "4403000000002120"


def test_excel_record_ids_too_long_for_excel_are_refused(tmp_path):
    cfg = _xlsx_source(tmp_path, [[110105194912310021, "张伟"], ["P2", "李娜"]])
    with pytest.raises(InputError) as info:
        read_source(cfg)
    msg = str(info.value)
    assert "p.xlsx: column '登记编号'" in msg and "1 record id(s)" in msg and "(row 2)" in msg


def test_excel_damage_and_sheet_errors_name_the_file(tmp_path):
    cfg = _xlsx_source(tmp_path, [["P1", "张伟"]], sheet="nope")
    with pytest.raises(InputError, match=r"p.xlsx: no sheet 'nope'; its sheets are 'Sheet'"):
        read_source(cfg)
    (tmp_path / "p.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"p.xlsx: cannot be read as an Excel workbook"):
        read_source(_cfg(tmp_path / "p.xlsx"))


def test_excel_row_numbers_in_messages_are_sheet_rows(tmp_path):
    cfg = _xlsx_source(tmp_path, [["P1", "张伟"], [None, None], ["P1", "李娜"]])
    with pytest.raises(InputError, match=r"'P1' \(rows 2, 4\)"):
        read_source(cfg)


def _workbook(tmp_path, sheets):
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    path = tmp_path / "m.xlsx"
    book.save(path)
    return path


def test_excel_errors_name_the_sheet_and_how_to_pick_another(tmp_path):
    # government exports often put a notes sheet first
    path = _workbook(
        tmp_path,
        {"说明": [["本表为流动人口登记"], [None, "第二列说明"]], "数据": [HEADER, ["P1", "张伟"]]},
    )
    with pytest.raises(InputError) as info:
        read_source(_cfg(path))
    msg = str(info.value)
    assert "of sheet '说明' (the first of '说明', '数据'; the source's `sheet:` key" in msg
    frame = read_source(_cfg(path, sheet="数据"))
    assert frame[schema.RECORD_ID].tolist() == ["P1"]


def test_excel_title_row_above_the_header_is_skipped(tmp_path, caplog):
    path = _workbook(
        tmp_path,
        {"登记": [["XX区流动人口登记表"], HEADER, ["P1", "张伟"], ["P2", "李娜"]]},
    )
    with caplog.at_level("INFO"):
        frame = read_source(_cfg(path))
    assert frame[schema.RECORD_ID].tolist() == ["P1", "P2"]
    assert "row(s) 1 read as a title above the header" in caplog.text


def test_excel_one_header_cell_over_data_rows_is_no_title(tmp_path):
    # a data row (numbers, an ID) is never taken for a header: the error stays, nothing lost
    path = _workbook(tmp_path, {"s": [["登记编号"], ["P1", "110105199003070033"]]})
    with pytest.raises(InputError, match="have no header but hold values"):
        read_source(_cfg(path))


def test_parquet_floats_and_objects_keep_their_digits(tmp_path):
    import datetime
    import decimal

    path = tmp_path / "p.parquet"
    pd.DataFrame(
        {
            "登记编号": ["P1", "P2", "P3"],
            "姓名": ["张伟", "李娜", "王芳"],
            "公民身份号码": [110105194912310021.0, None, 4.0],
            "联系电话": [13800001111.0, float("nan"), 2.5],
            "住址": [decimal.Decimal("110105194912310021"), None, decimal.Decimal("1.50")],
            "登记日期": [datetime.date(1990, 5, 6), None, datetime.date(2020, 1, 2)],
        }
    ).to_parquet(path)
    frame = read_source(_cfg(path))
    assert list(frame["raw.登记日期"]) == ["1990-05-06", None, "2020-01-02"]
    assert list(frame[schema.ID_NUMBER]) == ["1.1010519491231002e+17", None, "4"]
    assert list(frame[schema.PHONE]) == ["13800001111", None, "2.5"]
    assert list(frame["raw.住址"]) == ["110105194912310021", None, "1.50"]


@pytest.mark.parametrize("rid", ["1.10105E+17", "1E+17", "1.2e-05", "3.5e17"])
def test_record_ids_in_scientific_notation_are_refused(tmp_path, rid):
    rows = [ROWS[0], [rid, *ROWS[1][1:]]]
    with pytest.raises(
        InputError, match=r"column '登记编号': 1 record id\(s\) in scientific notation"
    ):
        _read_text(tmp_path, _csv_text(rows))


@pytest.mark.parametrize("rid", ["2021E001", "E12", "12E", "1.5"])
def test_codes_that_only_look_numeric_are_record_ids(tmp_path, rid):
    frame = _read_text(tmp_path, _csv_text([ROWS[0], [rid, *ROWS[1][1:]]]))
    assert frame.loc[1, schema.RECORD_ID] == rid


# ----------------------------------------------------------------------------- pass-through


def _internal_columns() -> set[str]:
    """Every column name the package itself uses: schema constants, derived, store, identity."""
    from linkage import identity, store
    from linkage.standardize.combine import standardize

    names = {
        v
        for k, v in vars(schema).items()
        if k.isupper() and isinstance(v, str) and not k.endswith(("_PREFIX", "_SEP"))
    }
    names |= set(schema.CANONICAL_FIELDS)
    for field in (schema.NAME, schema.FORMER_NAME):
        names |= {schema.name_col(field, s) for s in schema.NAME_DERIVED_SUFFIXES}
    for field in (schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS):
        names |= {schema.address_col(field, s) for s in schema.ADDRESS_DERIVED_SUFFIXES}
    sample = pd.DataFrame([{f: None for f in schema.CANONICAL_FIELDS}])
    names |= set(standardize(sample).columns)
    names |= {store.RECORD_KEY, store.KEY_HASH, store.RUN_ID}
    names |= set(identity.IDENTITY_COLUMNS) | set(identity.EVENT_COLUMNS)
    return names


def test_internal_column_names_cannot_hold_the_pass_through_namespace():
    names = _internal_columns()
    assert len(names) > 60
    assert all("." not in n and not n.startswith(schema.RAW_PREFIX) for n in names)


@pytest.mark.parametrize("header", sorted(_internal_columns()))
def test_unmapped_header_equal_to_an_internal_name_passes_through(tmp_path, header):
    if header in HEADER:
        pytest.skip("mapped in this file")
    rows = [[*r, f"v{i}"] for i, r in enumerate(ROWS)]
    frame = _read_text(tmp_path, _csv_text(rows, header=[*HEADER, header]))
    assert list(frame[schema.raw_col(header)]) == ["v0", "v1", "v2"]
    assert list(frame[schema.RECORD_ID]) == ["P001", "P002", "P003"]
    if header in frame.columns:  # only a canonical field the reader fills itself
        assert header in schema.CANONICAL_FIELDS
        assert list(frame[header]) != ["v0", "v1", "v2"]


def test_text_columns_are_object_with_none_whatever_the_pandas_dtype():
    # pandas 3 builds text as its str dtype (missing = NaN), pandas' "string" dtype holds
    # pd.NA: the stages get object columns of str or None from either
    from linkage.tables import text_columns

    frame = pd.DataFrame(
        {
            "inferred": pd.Series(["张伟", None, "李娜"]),
            "string": pd.Series(["王䶮", None, ""], dtype="string"),
            "object_nan": pd.Series(["1", float("nan"), None], dtype=object),
            "number": [1.5, float("nan"), 2.0],
        }
    )
    out = text_columns(frame)
    for col in ("inferred", "string", "object_nan"):
        assert out[col].dtype == object
        assert out[col].iloc[1] is None
    assert out["inferred"].tolist() == ["张伟", None, "李娜"]
    assert out["string"].tolist() == ["王䶮", None, ""]
    assert out["object_nan"].tolist() == ["1", None, None]
    # only the named columns are converted when ``columns`` is given; numbers stay numbers
    assert out["number"].dtype == float
    assert text_columns(frame, ["number"])["number"].tolist() == [1.5, None, 2.0]
    assert frame["inferred"].isna().iloc[1]  # the input is left as it was


def test_read_tables_hold_text_as_object_with_none(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(_csv_text(), encoding="utf-8")
    pq = tmp_path / "p.parquet"
    pd.DataFrame(
        {h: pd.Series([r[i] or None for r in ROWS], dtype="string") for i, h in enumerate(HEADER)}
    ).to_parquet(pq)
    for source in (path, pq):
        frame = read_sources(
            config_from_dict(
                {
                    "sources": {
                        "police": {"path": str(source), "record_id": "登记编号", "columns": COLUMNS}
                    }
                },
                path=tmp_path / "run.yaml",
            )
        )
        assert all(map(pd.api.types.is_object_dtype, frame.dtypes)), frame.dtypes
        # a field no source maps and a blank cell are both None, never NaN
        assert frame[schema.BIRTH_DATE].map(lambda v: v is None).all()
        assert frame.loc[2, schema.PHONE] is None


def test_row_group_schema_from_first_values_equals_the_whole_frames(tmp_path, monkeypatch):
    """The row groups' schema comes from each object column's first non-null value; it must
    equal pyarrow's over every value (types and pandas metadata); an object column holding
    more than text (an int before a float, bytes after text) takes the whole frame's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from linkage import io as linkage_io

    monkeypatch.setattr(linkage_io, "PARQUET_ROWS_AT_ONCE", 5)
    n = 23
    frame = pd.DataFrame(
        {
            "late_text": pd.Series([None] * 12 + ["张伟"] * (n - 12), dtype=object),
            "all_null": pd.Series([None] * n, dtype=object),
            "nan_then_text": pd.Series([float("nan")] + ["x"] * (n - 1), dtype=object),
            "str_dtype": pd.Series(["a", None] * 11 + ["b"], dtype="str"),
            "level": pd.Categorical(["exact", "fuzzy"] * 11 + ["exact"]),
            "weight": np.linspace(0, 1, n),
        }
    )
    whole = pa.Schema.from_pandas(frame, preserve_index=False)
    assert pa.Schema.from_pandas(linkage_io._type_rows(frame), preserve_index=False).equals(
        whole, check_metadata=True
    )
    path = linkage_io.write_parquet(frame, tmp_path / "groups.parquet")
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    frame.to_parquet(tmp_path / "whole.parquet", index=False)
    pd.testing.assert_frame_equal(
        pd.read_parquet(path), pd.read_parquet(tmp_path / "whole.parquet")
    )

    mixed = pd.DataFrame({"v": pd.Series([1] * 12 + [2.5] * (n - 12), dtype=object)})
    path = linkage_io.write_parquet(mixed, tmp_path / "mixed.parquet")
    assert pq.read_schema(path).field("v").type == pa.float64()
    assert pd.read_parquet(path)["v"].tolist() == [1.0] * 12 + [2.5] * (n - 12)
    assert linkage_io._type_rows(mixed) is None
    assert linkage_io._type_rows(pd.DataFrame({"v": ["a"] * 3 + [b"x"]})) is None
    flags = frame.assign(flag=pd.Series([None, True] * 11 + [False], dtype=object))
    assert linkage_io._type_rows(flags) is None
    path = linkage_io.write_parquet(flags, tmp_path / "flags.parquet")
    assert pd.read_parquet(path)["flag"].tolist() == flags["flag"].tolist()


def test_large_parquet_is_written_in_row_groups_and_reads_back_the_same(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from linkage import io as linkage_io

    monkeypatch.setattr(linkage_io, "PARQUET_ROWS_AT_ONCE", 7)
    frame = pd.DataFrame(
        {
            "source": pd.Series(["police", None, "health"] * 7 + [None] * 8, dtype=object),
            "rid_l": np.arange(29, dtype=np.int64),
            "id_valid": pd.array([True, None] * 14 + [False], dtype="boolean"),
            "level": pd.Categorical(["exact", "fuzzy"] * 14 + ["exact"]),
        }
    )
    linkage_io.write_parquet(frame, tmp_path / "chunked.parquet")
    frame.to_parquet(tmp_path / "whole.parquet", index=False)
    assert pq.ParquetFile(tmp_path / "chunked.parquet").metadata.num_row_groups == 5
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "chunked.parquet"), pd.read_parquet(tmp_path / "whole.parquet")
    )


def test_a_line_from_another_encoding_is_named(tmp_path):
    # a UTF-8 export with one line pasted in GBK: auto-detection names where UTF-8 fails
    lines = ["编号,姓名,出生日期", "P1,王小明,1990-03-07", "P2,李娜,1985-11-20"]
    data = ("\n".join(lines) + "\n").encode("utf-8") + "P3,陈静,1988-01-02\n".encode("gbk")
    data += "P4,张伟,1979-05-06\n".encode()
    with pytest.raises(InputError, match=r"x.csv: .*UTF-8 fails first at line 4"):
        decode_bytes(data, path="x.csv")
    with pytest.raises(InputError, match=r"x.csv: starts with a UTF-8 mark but line 4"):
        decode_bytes(b"\xef\xbb\xbf" + data, path="x.csv")


# ---------------------------------------------------------------- faster paths, equal output
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from linkage import io as linkage_io  # noqa: E402

# text a CSV writer must quote or keep: delimiters, quotes, line ends, spaces, CJK, astral
_CELL = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from(list('ab ,"\r\n\t;=+-@\'张伟\u3000\u2028\U00020000')), max_size=6),
)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 4), st.integers(0, 6))
def test_csv_written_through_arrow_equals_pandas_to_csv(tmp_path_factory, data, ncols, nrows):
    tmp = tmp_path_factory.mktemp("csv")
    columns = {}
    for j in range(ncols):
        kind = data.draw(st.sampled_from(["object", "str", "int", "category"]))
        if kind == "int":
            columns[f"i{j}"] = np.array(data.draw(st.lists(st.integers(-(2**62), 2**62),
                                                           min_size=nrows, max_size=nrows)))  # fmt: skip
            continue
        cells = data.draw(st.lists(_CELL, min_size=nrows, max_size=nrows))
        values = np.empty(nrows, dtype=object)
        values[:] = cells
        columns[f"t,{j}" if j == 1 else f"t{j}"] = pd.Series(
            values, dtype={"object": object, "str": "str", "category": "category"}[kind]
        )
    frame = pd.DataFrame(columns)
    got = write_csv(frame, tmp / "got.csv", for_people=False).read_bytes()
    frame.to_csv(tmp / "want.csv", index=False, encoding="utf-8")
    assert got == (tmp / "want.csv").read_bytes()


def test_plain_text_and_integer_tables_take_the_arrow_writer(tmp_path):
    frame = pd.DataFrame(
        {"identity_id": ["ID1", "ID2", None], "records": [2, 1, 5], "name": ["张伟", "", "王䶮"]}
    )
    assert linkage_io._write_csv_arrow(frame, tmp_path / "a.csv")
    frame.to_csv(tmp_path / "b.csv", index=False, encoding="utf-8")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # a categorical of text (golden records' provenance sources) is written as its text
    coded = frame.assign(name=pd.Categorical(["police", None, "health"]))
    assert linkage_io._write_csv_arrow(coded, tmp_path / "c.csv")
    coded.to_csv(tmp_path / "d.csv", index=False, encoding="utf-8")
    assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "d.csv").read_bytes()
    # what the arrow writer would render otherwise is left to pandas
    for other in (
        frame.assign(name=["a,b", "c", "d"]),  # a cell pandas quotes
        frame.assign(records=[1.5, 2.0, 3.0]),  # floats: pandas' repr
        frame.assign(records=[True, False, True]),
        frame.assign(records=pd.array([1, None, 3], dtype="Int64")),  # nullable: pandas
        frame[["name"]],  # one column: an empty cell alone on a line is quoted
        frame.assign(name=pd.Series([1, "a", None], dtype=object)),  # not all text
    ):
        assert not linkage_io._write_csv_arrow(other, tmp_path / "c.csv")


def _parquet_the_checked_way(frame: pd.DataFrame, path, rows: int) -> None:
    """write_parquet as it was: the schema of _type_rows, row groups written in turn."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    typed = linkage_io._type_rows(frame)
    schema_ = pa.Schema.from_pandas(frame if typed is None else typed, preserve_index=False)
    with pq.ParquetWriter(path, schema_) as writer:
        for start in range(0, len(frame), rows):
            part = frame.iloc[start : start + rows]
            writer.write_table(pa.Table.from_pandas(part, schema=schema_, preserve_index=False))


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(8, 40))
def test_parquet_typed_by_first_values_is_the_checked_schemas_file(tmp_path_factory, data, nrows):
    tmp = tmp_path_factory.mktemp("pq")
    text = st.one_of(st.none(), st.just(float("nan")), st.text(max_size=4))
    frame = pd.DataFrame(
        {
            "a": pd.Series(data.draw(st.lists(text, min_size=nrows, max_size=nrows)), dtype=object),
            # null for longer than _first_text_rows looks, then text
            "late": pd.Series([None] * (nrows - 1) + ["x"], dtype=object),
            "empty": pd.Series([None] * nrows, dtype=object),
            "n": np.arange(nrows),
            "b": pd.array(data.draw(st.lists(st.booleans() | st.none(), min_size=nrows,
                                             max_size=nrows)), dtype="boolean"),  # fmt: skip
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(linkage_io, "PARQUET_ROWS_AT_ONCE", 7)
        # looks at 3 values: the "late" column is found by the whole-column pass
        patch.setattr(linkage_io, "_first_text_rows",
                      lambda f, look=3: _first_rows_original(f, look))  # fmt: skip
        linkage_io.write_parquet(frame, tmp / "new.parquet")
    _parquet_the_checked_way(frame, tmp / "old.parquet", 7)
    assert (tmp / "new.parquet").read_bytes() == (tmp / "old.parquet").read_bytes()


_first_rows_original = linkage_io._first_text_rows


def test_parquet_with_a_cell_that_is_not_text_falls_back_to_the_checked_schema(
    tmp_path, monkeypatch
):
    import pyarrow as pa

    monkeypatch.setattr(linkage_io, "PARQUET_ROWS_AT_ONCE", 2)
    # text first, a number in a later row group: the fast schema fails there, then the
    # checked one gives the old answer (pyarrow refuses the mixed column either way)
    mixed = pd.DataFrame({"a": pd.Series(["x", "y", "z", 5, "w"], dtype=object), "n": range(5)})
    assert linkage_io._first_text_rows(mixed) is not None
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid)):
        _parquet_the_checked_way(mixed, tmp_path / "old.parquet", 2)
    with pytest.raises((pa.ArrowTypeError, pa.ArrowInvalid)):
        linkage_io.write_parquet(mixed, tmp_path / "new.parquet")
    # a column whose first value is not text goes to the checked schema at once
    numbers = pd.DataFrame({"a": pd.Series([1, 2, 3, None, 5], dtype=object), "n": range(5)})
    assert linkage_io._first_text_rows(numbers) is None
    linkage_io.write_parquet(numbers, tmp_path / "n.parquet")
    _parquet_the_checked_way(numbers, tmp_path / "n_old.parquet", 2)
    assert (tmp_path / "n.parquet").read_bytes() == (tmp_path / "n_old.parquet").read_bytes()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet="0123456789.+-eEx٣ ", max_size=8))))
def test_scientific_ids_found_only_among_ids_with_an_e_equal_the_full_match(ids):
    series = pd.Series(ids, dtype=object)
    want = np.array(series.str.fullmatch(linkage_io._SCIENTIFIC, na=False), dtype=bool)
    assert (linkage_io._scientific(series) == want).all()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["police", "health", "b", "民政"]),
                  st.text(alphabet="aAzZ09_\u00e9\u4e00\uff10\U00020000", max_size=5)),
        unique=True,
    )
)  # fmt: skip
def test_canonical_order_by_arrow_equals_the_pandas_sort(rows):
    raw = pd.DataFrame(rows, columns=[schema.SOURCE, schema.RECORD_ID], dtype=object)
    raw.index = raw.index * 3 + 5  # labels other than positions
    want = raw.sort_values([schema.SOURCE, schema.RECORD_ID], kind="stable")
    pd.testing.assert_frame_equal(raw.iloc[linkage_io._canonical_order(raw)], want)


@pytest.mark.parametrize("head", [1, 2, 5, 13, 40, 1 << 16])
def test_csv_layout_from_the_head_equals_the_whole_text(tmp_path, monkeypatch, head):
    texts = [
        _csv_text(),
        '"登记\n编号",姓名,"公民身份号码",联系电话,住址\n"P1","张\n伟",1,2,3\nP2,a,b,c,d\n',
        "\n\n登记编号,姓名,公民身份号码,联系电话,住址,\nP1,张伟,1,2,3,\n",
        "登记编号,姓名,公民身份号码,联系电话,住址\n",
        '登记编号,姓名,公民身份号码,联系电话,住址\n"P1,张伟,1,2,3\n',
    ]
    path = tmp_path / "p.csv"
    cfg = _cfg(path)
    for text in texts:
        monkeypatch.setattr(linkage_io, "_LAYOUT_HEAD", 1 << 30)
        try:
            want = linkage_io._csv_layout(text, cfg)
        except InputError as exc:
            want = str(exc)
        monkeypatch.setattr(linkage_io, "_LAYOUT_HEAD", head)
        try:
            got = linkage_io._csv_layout(text, cfg)
        except InputError as exc:
            got = str(exc)
        assert got == want


def test_read_sources_keeps_none_for_columns_of_every_source_and_fills_the_others(tmp_path):
    (tmp_path / "a.csv").write_text("id,姓名,备注\nA1,张伟,\nA2,,x\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("id,姓名\nB1,王䶮\n", encoding="utf-8")
    config = config_from_dict(
        {"sources": {
            "a": {"path": str(tmp_path / "a.csv"), "record_id": "id", "columns": {"姓名": "name"}},
            "b": {"path": str(tmp_path / "b.csv"), "record_id": "id", "columns": {"姓名": "name"}},
        }},
        path=tmp_path / "run.yaml",
    )  # fmt: skip
    records = read_sources(config)
    for col in records.columns:
        values = records[col].to_numpy()
        assert values.dtype == object, col
        assert all(v is None or isinstance(v, str) for v in values), col
    assert records[schema.NAME].tolist() == ["张伟", None, "王䶮"]
    assert records[schema.raw_col("备注")].tolist() == [None, "x", None]


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (["王", "芳"], "王芳"),
        (["欧阳", "欧阳娜娜"], "欧阳娜娜"),  # the full name typed into the given-name column
        (["欧阳", "阳光"], "欧阳阳光"),  # one character in common is no overlap
        (["王", "王芳"], "王王芳"),
        (["CHAN", "Tai Man"], "CHAN Tai Man"),
        (["广东省", "深圳市", "南山区", "粤海街道科苑路8号"], "广东省深圳市南山区粤海街道科苑路8号"),
        (["广东省", "深圳市", "南山区", "深圳市南山区粤海街道"], "广东省深圳市南山区粤海街道"),
        (["广东省", "深圳市", "南山区", "广东省深圳市南山区粤海街道"], "广东省深圳市南山区粤海街道"),
        (["广东省深圳市", "深圳市"], "广东省深圳市"),
        (["东莞市", "", "市桥街道"], "东莞市市桥街道"),
        (["文三路12号", "12号楼"], "文三路12号12号楼"),  # only whole parts overlap
        (["广东省", "深圳市", "高新区", "新区大道3号"], "广东省深圳市高新区新区大道3号"),
        (["HO", "HOI YAN"], "HO HOI YAN"),  # Latin parts are never merged
        (["LEE", "LEE"], "LEE LEE"),
        (["张三", "张三"], "张三"),
        ([None, float("nan"), "  "], None),
        ([" 阿依古丽·买买提 "], "阿依古丽·买买提"),
    ],
)
def test_a_field_is_joined_from_its_parts(parts, joined):
    from linkage.io import join_field_parts

    assert join_field_parts(parts) == joined


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list('ab,"\n\r 张伟\u3000\U00020000')), max_size=60),
    st.integers(0, 20),
    st.integers(1, 9),
    st.lists(st.integers(1, 17), min_size=1, max_size=30),
)
def test_encoded_text_streams_the_utf8_of_the_text(text, start, slice_size, reads):
    """The stream pyarrow parses a CSV body from gives ``text[start:].encode()``, whatever
    the slice size and the sizes asked for."""
    stream = linkage_io._EncodedText(text, min(start, len(text)))
    stream.SLICE = slice_size
    got = b""
    for n in reads * 10:
        part = stream.read(n)
        if not part:
            break
        got += part
    got += stream.read()
    assert got == text[min(start, len(text)) :].encode("utf-8")


def test_a_csv_file_read_in_place_equals_its_text_read(tmp_path):
    """``_read_csv_file`` (the body parsed from the text in place, the text dropped before
    the columns are converted, lines found again from the file) gives the table and the
    line numbers and raw lines ``_read_csv_text`` gives."""
    text = (
        "\ufeff" + ",".join(HEADER) + "\r\n"
        'P1, 张伟 ,"11010519491231002X",,"北京市朝阳区, 某路\r\n3号"\r\n'
        'P2,"李""娜",   ,138 0000 1111,\r\n'
        "\r\n"
        "P3,王芳,,,上海\r\n"
    )
    path = tmp_path / "p.csv"
    path.write_bytes(text.encode("utf-8"))
    cfg = _cfg(path)
    frame, bad, lines = linkage_io._read_csv_file(path, cfg)
    want, want_bad, want_lines = linkage_io._read_csv_text(text.removeprefix("\ufeff"), cfg)
    pd.testing.assert_frame_equal(frame, want)
    assert bad == want_bad == []
    assert callable(lines._body)  # not held: read again when a line is named
    assert lines.lines([0, 1, 2]) == want_lines.lines([0, 1, 2]) == [2, 4, 6]
    assert lines.raw([0, 2]) == want_lines.raw([0, 2])
    assert lines.raw([2]) == ["P3,王芳,,,上海"]
    # a file changed after it was read is not named by stale line numbers
    frame, _, lines = linkage_io._read_csv_file(path, cfg)
    path.write_bytes((text + "P4,李四,,,北京\r\n").encode("utf-8"))
    with pytest.raises(InputError, match="changed while it was being read"):
        lines.lines([0])


def test_a_bad_key_in_a_large_csv_is_named_by_its_line(tmp_path):
    """A rejected row of a file read in place is named by its line in the file (the body
    read again), after a quoted value spanning two lines."""
    rows = [",".join(HEADER)] + [f"P{i},张伟{i},,,北京" for i in range(1, 6)]
    rows[2] = 'P2,"王\n芳",,,上海'
    rows[4] = ",李娜,,,广州"  # no record id
    path = tmp_path / "p.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 6\b"):
        read_source(_cfg(path))


_KEY = st.sampled_from(["P1", "P2", "P3", "", "  ", "1.2E+17", "P1 ", "p3", "１"])
_TEXT = st.text(alphabet=st.sampled_from(list('a ,"\r\n\t张伟\u3000\u00a0·\U00020000')), max_size=5)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(_KEY, _TEXT, _TEXT, _TEXT, _TEXT), min_size=1, max_size=8),
    st.booleans(),
    st.booleans(),
)
def test_a_source_read_into_arrow_equals_the_frame_read_converted(
    tmp_path_factory, rows, set_aside, unnamed
):
    """``_read_source_arrow`` (a CSV parsed into Arrow with no Python object per cell) gives
    what ``read_source`` then ``_arrow_source`` gives: the same table, or the same error,
    or the same rows set aside with the same lines and reasons; a field joined from two
    columns, a passthrough column, an unnamed empty column and a BOM included."""
    import csv
    import io as stdio

    tmp = tmp_path_factory.mktemp("arrow")
    buffer = stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([" 登记编号", "姓", "名", "住址", "备注"] + ([""] if unnamed else []))
    for row in rows:
        writer.writerow(list(row) + ([""] if unnamed else []))
    path = tmp / "p.csv"
    path.write_bytes(("\ufeff" + buffer.getvalue()).encode("utf-8"))
    entry = {"path": str(path), "record_id": "登记编号",
             "columns": {"姓": "name", "名": "name", "住址": "hukou_address"}}  # fmt: skip
    cfg = config_from_dict({"sources": {"police": entry}}, path=tmp / "run.yaml").sources["police"]

    def read(reader):
        aside = RejectedRows() if set_aside else None
        try:
            out = reader(aside)
        except InputError as exc:
            return "error", str(exc), None
        return "table", out, aside.rows if aside is not None else None

    got = read(lambda aside: linkage_io._read_source_arrow(cfg, aside))
    want = read(lambda aside: linkage_io._arrow_source(read_source(cfg, rejected=aside)))
    assert got[0] == want[0]
    if got[0] == "error":
        assert got[1] == want[1]
        return
    assert got[1].schema == want[1].schema
    assert got[1].equals(want[1])
    assert got[2] == want[2]


def test_a_run_s_chunks_come_from_sources_read_into_arrow(tmp_path, monkeypatch):
    """The chunked reader reads CSV sources into Arrow directly (no frame of Python objects
    per source) and its chunks, slices of the sources sorted by record id and stacked by
    source name, equal the records ``read_records`` gives."""
    from linkage.io import read_records, read_records_chunks

    rows_a = [[f"B{i:03d}", f"张{i % 7}", "", "", "北京"] for i in range(9, 0, -1)]
    rows_b = [[f"A{i:03d}", f"李{i % 5}", "", "", "上海"] for i in range(5)]
    (tmp_path / "z.csv").write_text(_csv_text(rows_a), encoding="utf-8")
    (tmp_path / "a.csv").write_text(_csv_text(rows_b + [["A009", "王", "", "", "广州"]]), encoding="utf-8")
    sources = {
        "zeta": {"path": str(tmp_path / "z.csv"), "record_id": "登记编号", "columns": COLUMNS},
        "alpha": {"path": str(tmp_path / "a.csv"), "record_id": "登记编号", "columns": COLUMNS},
    }
    config = config_from_dict({"sources": sources}, path=tmp_path / "run.yaml")
    whole = read_records(config)
    made = []
    to_frame = linkage_io._arrow_csv_frame
    monkeypatch.setattr(linkage_io, "_arrow_csv_frame", lambda *a: made.append(1) or to_frame(*a))
    chunks = list(read_records_chunks(config, 4))
    assert made == []  # no source went through a frame of Python objects
    assert [len(c) for c in chunks] == [4, 4, 4, 3]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)
    assert list(whole[schema.SOURCE][:6]) == ["alpha"] * 6


@pytest.mark.parametrize("header", [["编号", "姓名", "公民身份号码", "联系电话", "住址"],
                                    ["登记编号", "名字", "公民身份号码", "联系电话", "住址"]])  # fmt: skip
def test_a_source_read_into_arrow_refuses_a_missing_column_as_the_frame_reader(tmp_path, header):
    """A missing record-id or mapped column is the same InputError from both readers."""
    path = tmp_path / "p.csv"
    path.write_text(_csv_text(header=header), encoding="utf-8")
    cfg = _cfg(path)
    with pytest.raises(InputError) as want:
        read_source(cfg)
    with pytest.raises(InputError) as got:
        linkage_io._read_source_arrow(cfg, None)
    assert str(got.value) == str(want.value) and "not in the file" in str(got.value)


def test_a_full_width_comma_delimiter_is_read_by_the_exact_reader(tmp_path):
    """pyarrow splits on ASCII delimiters only: a source delimited by a full-width comma
    (，) is read by the exact reader, in both readers, instead of failing."""
    path = tmp_path / "p.csv"
    path.write_text("\n".join("，".join(r) for r in [HEADER, *ROWS]) + "\n", encoding="utf-8")
    cfg = _cfg(path, delimiter="，")
    frame = read_source(cfg)
    assert list(frame[schema.NAME]) == ["张伟", "买买提·艾力", "王䶮"]
    assert linkage_io._read_source_arrow(cfg, None).equals(linkage_io._arrow_source(frame))


def _parsed_both_ways(path, cfg, layout, layout_head, block):
    """(the streamed layout or "error", ``_parse_csv_file`` through the stream, the same
    with ``layout`` turned off: the whole decoded text), each parse as (table, names,
    header lines, body text) or ("error", message)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(linkage_io, "_LAYOUT_HEAD", layout_head)
    monkeypatch.setattr(linkage_io, "_UTF8_BLOCK", block)

    def parsed():
        try:
            table, names, lines, body = linkage_io._parse_csv_file(path, cfg)
        except InputError as exc:
            return "error", str(exc)
        return table, names, lines, body if isinstance(body, str) else body()

    try:
        try:
            streamed = getattr(linkage_io, layout)(path, cfg)
        except InputError:  # the header's own errors, raised as the decoded text raises them
            streamed = "error"
        got = parsed()
        monkeypatch.setattr(linkage_io, layout, lambda path, cfg: None)
        want = parsed()
    finally:
        monkeypatch.undo()
    return streamed, got, want


@settings(max_examples=150, deadline=None)
@given(
    head=st.lists(st.sampled_from(["登记编号", " 姓名", '"住\n址"', "", "备注"]), min_size=1,
                  max_size=4),
    rows=st.lists(st.lists(_TEXT, min_size=1, max_size=5), max_size=6),
    mark=st.booleans(),
    blank_lines=st.integers(0, 2),
    tail=st.sampled_from([b"", b"\n", b"\xff", b"\xe5\xbc", b"   \n"]),
    encoding=st.sampled_from(["auto", "utf-8", "utf-8-sig", "gbk"]),
    layout_head=st.sampled_from([1, 3, 1 << 16]),
    block=st.sampled_from([1, 5, 1 << 24]),
)
def test_a_utf8_file_parsed_from_the_file_equals_its_decoded_text_parsed(
    tmp_path_factory, head, rows, mark, blank_lines, tail, encoding, layout_head, block
):
    """A UTF-8 source is parsed by pyarrow straight from the file (``_utf8_layout``: checked
    a block at a time, only the head decoded): the same table, header and body text as the
    whole decoded text gives, or the same error; a BOM, quoted line ends in the header,
    blank lines, a partial or invalid last byte and other encodings (decoded as always)
    included."""
    import csv
    import io as stdio

    buffer = stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    text = "\n" * blank_lines + ",".join(head) + "\n"
    for row in rows:
        writer.writerow(row)
    data = ("\ufeff" if mark else "").encode("utf-8") + (text + buffer.getvalue()).encode("utf-8")
    path = tmp_path_factory.mktemp("utf8") / "p.csv"
    path.write_bytes(data + tail)
    cfg = _cfg(path).model_copy(update={"encoding": encoding})
    streamed, got, want = _parsed_both_ways(path, cfg, "_utf8_layout", layout_head, block)
    if isinstance(got[0], str) or isinstance(want[0], str):  # an error
        assert got == want
        return
    assert (got[0] is None) == (want[0] is None)
    assert got[0] is None or got[0].equals(want[0])
    assert got[1:] == want[1:]
    # the streamed path is taken exactly for UTF-8 files of some text
    utf8 = tail in (b"", b"\n", b"   \n") and encoding != "gbk"
    if streamed is not None:
        assert utf8
    elif utf8 and (text + buffer.getvalue()).strip():
        pytest.fail("a UTF-8 file of some text was decoded whole")


@settings(max_examples=150, deadline=None)
@given(
    head=st.lists(st.sampled_from(["登记编号", " 姓名", '"住\n址"', "", "備註"]), min_size=1,
                  max_size=4),
    rows=st.lists(st.lists(_TEXT, min_size=1, max_size=5), max_size=6),
    mark=st.booleans(),
    blank_lines=st.integers(0, 2),
    tail=st.sampled_from([b"", b"\n", b"\xff", b"\x81", b"   \n"]),
    encoding=st.sampled_from(["gbk", "gb18030", "big5", "auto"]),
    layout_head=st.sampled_from([1, 3, 1 << 16]),
    block=st.sampled_from([1, 2, 5, 1 << 24]),
)
def test_a_file_in_another_encoding_transcoded_a_block_at_a_time_equals_its_decoded_text(
    tmp_path_factory, head, rows, mark, blank_lines, tail, encoding, layout_head, block
):
    """A GBK, GB18030 or Big5 source is decoded and parsed a block at a time
    (``_transcoded_layout``, ``_TranscodedFile``: multi-byte characters split across
    blocks, a byte-order mark): the same table, header and body text as the whole decoded
    text gives, or the same error (a byte that does not decode, ``auto``: decoded whole)."""
    import csv
    import io as stdio

    buffer = stdio.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    text = "\n" * blank_lines + ",".join(head) + "\n"
    for row in rows:
        writer.writerow(row)
    codec = {"gbk": "gb18030"}.get(encoding, encoding if encoding != "auto" else "gb18030")
    body = ("\ufeff" if mark else "") + text + buffer.getvalue()
    try:
        data = body.encode(codec)
    except UnicodeEncodeError:  # a character the encoding lacks (Big5 and 䶮)
        return
    path = tmp_path_factory.mktemp("gbk") / "p.csv"
    path.write_bytes(data + tail)
    cfg = _cfg(path).model_copy(update={"encoding": encoding})
    streamed, got, want = _parsed_both_ways(path, cfg, "_transcoded_layout", layout_head, block)
    if isinstance(got[0], str) or isinstance(want[0], str):  # an error
        assert got == want
        return
    assert (got[0] is None) == (want[0] is None)
    assert got[0] is None or got[0].equals(want[0])
    assert got[1:] == want[1:]
    # the stream is taken exactly for a named encoding's files of some text
    decodes = tail in (b"", b"\n", b"   \n") and encoding != "auto"
    if streamed is not None:
        assert decodes
    elif decodes and (text + buffer.getvalue()).strip():
        pytest.fail("a file of some text in a named encoding was decoded whole")


def test_a_gbk_file_is_never_held_whole_as_text(tmp_path, monkeypatch):
    """A GBK source of some size is parsed from the transcoding stream: the whole-file
    decoding (``_decoded_text``) is never called, and the table is the same."""
    path = tmp_path / "p.csv"
    lines = [",".join(HEADER)] + [f"P{i},张伟{i % 7},,,北京市海淀区{i}号" for i in range(5000)]
    path.write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    cfg = _cfg(path).model_copy(update={"encoding": "gbk"})
    want = read_source(cfg)
    monkeypatch.setattr(linkage_io, "_UTF8_BLOCK", 4093)  # blocks ending inside a character

    def refuse(*args, **kwargs):
        raise AssertionError("decoded whole")

    monkeypatch.setattr(linkage_io, "_decoded_text", refuse)
    got = read_source(cfg)
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("encoding", ["auto", "utf-8", "utf-8-sig"])
def test_a_file_with_two_byte_order_marks_reads_as_its_decoded_text(tmp_path, encoding):
    """Two marks: ``utf-8-sig`` drops both, the others one (the second is then text, and
    dropped from the first header as a header's mark always is), as decoding the whole
    file does: such a file is decoded whole, not parsed from its bytes."""
    path = tmp_path / "p.csv"
    mark = "\ufeff".encode()
    path.write_bytes(mark * 2 + (",".join(HEADER) + "\nP1,张伟,,,北京\n").encode("utf-8"))
    cfg = _cfg(path).model_copy(update={"encoding": encoding})
    assert linkage_io._utf8_layout(path, cfg) is None
    assert read_source(cfg)[schema.RECORD_ID].tolist() == ["P1"]
    # one mark: parsed from the bytes, the same table
    path.write_bytes(mark + (",".join(HEADER) + "\nP1,张伟,,,北京\n").encode("utf-8"))
    assert linkage_io._utf8_layout(path, cfg) is not None
    assert read_source(cfg)[schema.RECORD_ID].tolist() == ["P1"]


def test_a_file_written_while_it_is_parsed_is_refused(tmp_path, monkeypatch):
    """A UTF-8 file is read more than once (checked, its head, parsed): one rewritten in
    between (even to the same size) is refused rather than parsed under another header."""
    path = tmp_path / "p.csv"
    path.write_text(",".join(HEADER) + "\nP001,张伟,,,北京\n", encoding="utf-8")
    real = linkage_io._parse_csv_arrow

    def rewritten(stream, names, cfg):
        time.sleep(0.01)  # a later modification time, also on coarse clocks
        path.write_text(",".join(HEADER) + "\nP009,李四,,,北京\n", encoding="utf-8")
        return real(stream, names, cfg)

    monkeypatch.setattr(linkage_io, "_parse_csv_arrow", rewritten)
    with pytest.raises(InputError, match="changed while it was being read"):
        read_source(_cfg(path))


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "big5"])
@pytest.mark.parametrize("mark", [b"", b"\x84\x31\x95\x33"])
def test_a_named_encoding_file_of_a_mark_and_blank_lines_is_empty(tmp_path, encoding, mark):
    """A byte-order mark is not text: a file of a mark and blank lines is refused as empty,
    transcoded or decoded whole."""
    path = tmp_path / "p.csv"
    path.write_bytes((mark if encoding == "gb18030" else b"") + b" \n \n")
    cfg = _cfg(path).model_copy(update={"encoding": encoding})
    assert linkage_io._transcoded_layout(path, cfg) is None
    with pytest.raises(InputError, match="file is empty"):
        linkage_io._parse_csv_file(path, cfg)


# ---------------------------------------------------------------- byte searches, equal to RE2
_BYTE_TEXT = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from(list(';=+-@\'"\t\r\n, a1张伟\u3000\u2028\U00020000é')), max_size=7),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_BYTE_TEXT, max_size=12),
    st.sampled_from(["string", "large_string"]),
    st.integers(0, 3),
    st.integers(1, 5),
)
def test_byte_searches_equal_the_regular_expressions(values, kind, cut, block):
    """``holds_bytes`` and ``starts_with_bytes`` read Arrow's bytes in place: on sliced and
    chunked arrays, nulls and multi-byte characters they give what pyarrow's RE2 gives, a
    few bytes at a time as at once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from linkage import spreadsheet
    from linkage.spreadsheet import holds_bytes, starts_with_bytes

    whole = pa.array(values, type=getattr(pa, kind)())
    sliced = whole.slice(min(cut, len(whole)))  # a non-zero array offset
    chunked = pa.chunked_array([whole.slice(0, cut), whole.slice(cut)], type=whole.type)
    none = pa.chunked_array([], type=whole.type)  # no chunk at all
    assert not len(holds_bytes(none, b";")) and not len(starts_with_bytes(none, b";"))
    old = spreadsheet._BYTES_AT_ONCE
    spreadsheet._BYTES_AT_ONCE = block  # block edges inside values
    try:
        for arr in (whole, sliced, chunked):
            for chars, pattern in ((b";", ";"), (b'",\r\n', '[",\r\n]')):
                want = pc.match_substring_regex(arr, pattern).fill_null(False)
                assert holds_bytes(arr, chars).tolist() == want.to_pylist()
            want = pc.match_substring_regex(arr, r"^[=+\-@'\t\r]").fill_null(False)
            assert starts_with_bytes(arr, b"=+-@'\t\r").tolist() == want.to_pylist()
    finally:
        spreadsheet._BYTES_AT_ONCE = old


def test_byte_searches_take_ascii_only():
    import pyarrow as pa

    from linkage.spreadsheet import holds_bytes, starts_with_bytes

    arr = pa.array(["张伟"])
    with pytest.raises(ValueError, match="ASCII"):
        holds_bytes(arr, "张".encode())
    with pytest.raises(ValueError, match="ASCII"):
        starts_with_bytes(arr, b"")


def test_pair_keys_taken_from_arrow_text_equal_those_taken_from_objects():
    """pairs.parquet's keys: records keyed by Arrow text (a batch run's keys at clustering)
    give the same object columns as records keyed by ``str`` objects."""
    import pyarrow as pa

    from linkage.tables import as_arrow_text, attach_keys, text_at

    records = pd.DataFrame(
        {
            schema.SOURCE: np.array(["police", "health", "police", "civil"], dtype=object),
            schema.RECORD_ID: np.array(["P1", "H𠀀2", "P3", "C4"], dtype=object),
        }
    )
    arrow = records.assign(**{c: as_arrow_text(records[c]) for c in records.columns})
    if getattr(arrow[schema.SOURCE].dtype, "storage", None) != "pyarrow":
        pytest.skip("pandas holds text as objects here")
    pairs = pd.DataFrame({schema.ROW_L: [0, 2, 1], schema.ROW_R: [3, 1, 2], "p": [0.9, 0.5, 0.1]})
    want, got = attach_keys(pairs, records), attach_keys(pairs, arrow)
    assert got.dtypes.tolist() == want.dtypes.tolist()
    pd.testing.assert_frame_equal(got, want)
    assert pa.Schema.from_pandas(got).equals(pa.Schema.from_pandas(want), check_metadata=True)
    text = pd.Series(pd.array(["a", None, "b"], dtype=pd.ArrowDtype(pa.large_string())))
    assert text_at(text, np.array([2, 1, 0])).tolist() == ["b", None, "a"]
