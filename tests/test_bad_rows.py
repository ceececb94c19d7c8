"""Bad input rows: every problem of a file named in one pass, or set aside with --bad-rows.

A bad row is one the run cannot key: a line with the wrong field count, an empty, float-damaged
or duplicate record id. Without ``--bad-rows`` the run refuses (exit 2) naming every one with
its line; with it they go to the bad-rows CSV with file, line and reason, and every other row
runs: no row is lost between identities.csv and the bad-rows file.
"""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app
from linkage.config import load_config
from linkage.errors import InputError
from linkage.io import RejectedRows, read_source, restore_formulas

runner = CliRunner()

HEADER = "登记编号,姓名,性别,出生日期,公民身份号码,联系电话"
GOOD = [
    "R01,赵建国,男,1971-02-03,11010519710203001X,13901010101",
    "R02,钱秀英,女,1983-07-19,320102198307190023,13802020202",
    "R03,孙志强,男,1990-11-30,440106199011300019,13703030303",
    "R04,李红梅,女,1966-04-08,510104196604080046,13604040404",
]
# line numbers below count the header as line 1
BAD_FIELDS = "R05,周平,男,1979-09-09,,13505050505,多出的一列"  # 7 fields, expected 6
NO_ID = ",吴晓燕,女,1988-08-08,,13406060606"
DUP_A = "R07,郑海,男,1992-12-12,,13307070707"
DUP_B = "R07,王海,男,1992-12-13,,13308080808"
SHORT = "R09,冯丽"
FLOAT_ID = "1.10105E+17,陈刚,男,1980-01-01,,13209090909"

COLUMNS = {
    "姓名": "name",
    "性别": "gender",
    "出生日期": "birth_date",
    "公民身份号码": "id_number",
    "联系电话": "phone",
}


def _write(tmp: Path, lines: list[str], *, bad_rows: str | None = None, other: bool = True):
    (tmp / "police.csv").write_text("\n".join([HEADER, *lines]) + "\n", encoding="gb18030")
    sources = {"police": {"path": "police.csv", "record_id": "登记编号", "columns": COLUMNS}}
    if other:
        (tmp / "health.csv").write_text("\n".join([HEADER, *GOOD[:2]]) + "\n", encoding="utf-8")
        sources["health"] = {"path": "health.csv", "record_id": "登记编号", "columns": COLUMNS}
    doc: dict = {"sources": sources, "model": {"u_sample_pairs": 1000}}
    if bad_rows:
        doc["run"] = {"bad_rows": bad_rows}
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


MESSY = [GOOD[0], BAD_FIELDS, GOOD[1], NO_ID, DUP_A, DUP_B, SHORT, GOOD[2], FLOAT_ID, GOOD[3]]
# line of each bad row in police.csv (header = line 1) and the reason it is set aside for
EXPECTED = {
    3: "wrong number of fields: 7, expected 6",
    5: "no record id",
    6: "duplicate record id 'R07' (lines 6, 7)",
    7: "duplicate record id 'R07' (lines 6, 7)",
    8: "wrong number of fields: 2, expected 6",
    10: "record id in scientific notation (digits lost)",
}


def test_every_bad_row_of_a_file_is_named_in_one_error(tmp_path: Path) -> None:
    config = _write(tmp_path, MESSY)
    with pytest.raises(InputError) as info:
        read_source(load_config(config).sources["police"])
    text = str(info.value)
    assert "police.csv" in text and "4 kinds of bad rows" in text
    assert (
        "2 line(s) with the wrong number of fields, expected 6: line 3 has 7, line 8 has 2" in text
    )
    assert "1 row(s) have no record id (line 5)" in text
    assert "duplicate record id value(s), e.g. 'R07' (lines 6, 7)" in text
    assert "scientific notation, e.g. '1.10105E+17' (line 10)" in text
    assert "--bad-rows" in text


def test_run_without_bad_rows_refuses_with_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    config = _write(tmp_path, MESSY)
    result = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2, result.output
    assert "line 3 has 7" in result.output and "line 5" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_run_with_bad_rows_sets_them_aside_and_loses_nothing(tmp_path: Path) -> None:
    config = _write(tmp_path, MESSY)
    out, reject = tmp_path / "out", tmp_path / "rejects" / "bad.csv"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(out), "--bad-rows", str(reject), "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bad_rows"] == 6
    assert summary["bad_rows_per_source"] == {"police": 6}
    assert summary["records"] == 4 + 2
    bad = pd.read_csv(reject, dtype=str, keep_default_na=False)
    assert list(bad.columns) == list(schema.REJECT_COLUMNS)
    assert dict(zip(bad[schema.REJECT_LINE].astype(int), bad[schema.REJECT_REASON])) == EXPECTED
    assert set(bad[schema.REJECT_SOURCE]) == {"police"}
    assert bad[schema.REJECT_FILE].str.endswith("police.csv").all()
    # the raw text of each line, as it stands in the file
    assert (
        bad.set_index(bad[schema.REJECT_LINE].astype(int)).loc[3, schema.REJECT_RAW] == BAD_FIELDS
    )
    assert bad.set_index(bad[schema.REJECT_LINE].astype(int)).loc[5, schema.REJECT_RAW] == NO_ID
    # nothing lost: every data line of police.csv is in identities.csv or the bad-rows file
    ids = pd.read_csv(out / "identities.csv", dtype=str)
    police = ids[ids[schema.SOURCE] == "police"]
    assert sorted(police[schema.RECORD_ID]) == ["R01", "R02", "R03", "R04"]
    assert len(police) + len(bad) == len(MESSY)


def test_bad_rows_config_key_and_text_summary(tmp_path: Path) -> None:
    config = _write(tmp_path, MESSY, bad_rows="bad.csv")
    result = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"bad rows:         6 set aside in {tmp_path / 'bad.csv'}  (police 6)" in result.stdout
    assert len(pd.read_csv(tmp_path / "bad.csv")) == 6


def test_clean_input_with_bad_rows_writes_an_empty_file(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    reject = tmp_path / "bad.csv"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(tmp_path / "out"), "--bad-rows", str(reject)]
    )
    assert result.exit_code == 0, result.output
    assert reject.read_text(encoding="utf-8").strip() == ",".join(schema.REJECT_COLUMNS)


def test_bad_rows_path_checked_before_work(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    (tmp_path / "folder.csv").mkdir()
    for target, expected in ((tmp_path / "folder.csv", "folder"), (tmp_path / "b.txt", ".csv")):
        result = runner.invoke(
            app, ["run", str(config), "--output", str(tmp_path / "o"), "--bad-rows", str(target)]
        )
        assert result.exit_code == 2 and expected in result.output
        assert not (tmp_path / "o").exists()


def test_source_with_only_a_header_is_refused_by_name(tmp_path: Path) -> None:
    config = _write(tmp_path, [])
    result = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "source 'police' has 0 records" in result.output
    assert "police.csv" in result.output


def test_source_whose_every_row_is_bad_is_refused_and_its_rows_kept(tmp_path: Path) -> None:
    config = _write(tmp_path, [NO_ID, SHORT])
    reject = tmp_path / "bad.csv"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(tmp_path / "o"), "--bad-rows", str(reject)]
    )
    assert result.exit_code == 2
    assert "source 'police' has 0 records (all 2 data row(s) were bad rows)" in result.output
    assert len(pd.read_csv(reject)) == 2


def _sheet_source(tmp_path: Path, rows: list[list]):
    """A police source read from an .xlsx sheet holding HEADER and ``rows``."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER.split(","))
    for row in rows:
        sheet.append(row)
    book.save(tmp_path / "police.xlsx")
    source = {"path": "police.xlsx", "record_id": "登记编号", "columns": COLUMNS}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"sources": {"police": source}}), encoding="utf-8")
    return load_config(path).sources["police"]


def test_sheet_rows_are_named_as_rows(tmp_path: Path) -> None:
    cfg = _sheet_source(tmp_path, [line.split(",") for line in [GOOD[0], DUP_A, GOOD[1], DUP_B]])
    with pytest.raises(InputError, match=r"'R07' \(rows 3, 5\)"):
        read_source(cfg)
    rejected = RejectedRows()
    frame = read_source(cfg, rejected=rejected)
    assert list(frame[schema.RECORD_ID]) == ["R01", "R02"]
    table = rejected.frame()
    assert table[schema.REJECT_LINE].tolist() == [3, 5]
    assert table[schema.REJECT_RAW].tolist() == [DUP_A, DUP_B]


def test_sheet_record_id_stored_as_a_long_number_is_set_aside(tmp_path: Path) -> None:
    # Excel keeps 15 significant digits: an 18-digit record id typed as a number lost its
    # tail, so the row cannot be keyed; with --bad-rows it is one bad row, not a refused file.
    long_id = [440306198512124561, *GOOD[1].split(",")[1:]]
    cfg = _sheet_source(tmp_path, [GOOD[0].split(","), long_id, GOOD[2].split(",")])
    with pytest.raises(InputError, match=r"too long for Excel's 15 significant digits \(row 3\)"):
        read_source(cfg)
    rejected = RejectedRows()
    frame = read_source(cfg, rejected=rejected)
    assert list(frame[schema.RECORD_ID]) == [GOOD[0].split(",")[0], GOOD[2].split(",")[0]]
    table = rejected.frame()
    assert table[schema.REJECT_LINE].tolist() == [3]
    assert "too long for Excel" in table[schema.REJECT_REASON].iloc[0]


def test_ingest_sets_bad_rows_aside_and_counts_them(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    config = _write(base, GOOD)
    store = tmp_path / "ids.duckdb"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(tmp_path / "out"), "--store", str(store), "-q"]
    )
    assert result.exit_code == 0, result.output
    new = tmp_path / "new"
    new.mkdir()
    batch = _write(new, ["R11,韩梅,女,1995-05-05,,13111111111", NO_ID], other=False)
    refused = runner.invoke(app, ["ingest", str(batch), "--store", str(store), "-q"])
    assert refused.exit_code == 2 and "line 3" in refused.output
    reject = tmp_path / "bad.csv"
    result = runner.invoke(
        app, ["ingest", str(batch), "--store", str(store), "--bad-rows", str(reject), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["new_records"] == 1 and summary["bad_rows"] == 1
    assert summary["events"].get("record_added") == 1
    assert pd.read_csv(reject)[schema.REJECT_LINE].tolist() == [3]


def test_problems_of_every_source_are_named_in_one_error(tmp_path: Path) -> None:
    config = _write(tmp_path, [GOOD[0], NO_ID])
    (tmp_path / "health.csv").write_text(HEADER + "\n", encoding="utf-8")
    result = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "2 sources cannot be used as given" in result.output
    assert "police.csv: column '登记编号': 1 row(s) have no record id (line 3)" in result.output
    assert "source 'health' has 0 records" in result.output


def test_refused_run_keeps_a_bad_rows_file_inside_its_output(tmp_path: Path) -> None:
    config = _write(tmp_path, [NO_ID, SHORT])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(out), "--bad-rows", str(out / "bad.csv")]
    )
    assert result.exit_code == 2
    assert [p.name for p in out.iterdir()] == ["bad.csv"]
    assert len(pd.read_csv(out / "bad.csv")) == 2


def test_standardize_sets_bad_rows_aside_with_the_option(tmp_path: Path) -> None:
    config = _write(tmp_path, [*GOOD, NO_ID, SHORT])
    out = tmp_path / "std.parquet"
    refused = runner.invoke(app, ["standardize", str(config), "--output", str(out)])
    assert refused.exit_code == 2 and "line 6" in refused.output
    reject = tmp_path / "bad.csv"
    result = runner.invoke(
        app, ["standardize", str(config), "--output", str(out), "--bad-rows", str(reject)]
    )
    assert result.exit_code == 0, result.output
    assert f"bad rows: 2 set aside in {reject}" in result.output
    records = pd.read_parquet(out)
    assert len(records) == len(GOOD) + 2  # police's good rows and health's two
    assert pd.read_csv(reject)[schema.REJECT_LINE].tolist() == [6, 7]


def test_standardize_refuses_bad_rows_over_its_own_output(tmp_path: Path) -> None:
    """The records' file is written after the bad rows: the same path for both would replace
    the rows set aside with Parquet (and the run then failed reading it as CSV)."""
    config = _write(tmp_path, [*GOOD, NO_ID])
    same = tmp_path / "same.csv"
    result = runner.invoke(
        app, ["standardize", str(config), "--output", str(same), "--bad-rows", str(same)]
    )
    assert result.exit_code == 2, result.output
    assert "same file as the --output file" in result.output
    assert not same.exists()


def test_sheet_row_without_a_record_id_in_its_first_cell_is_set_aside(tmp_path: Path) -> None:
    """A sheet row whose record id (column A) is empty: read-only openpyxl gives an empty
    first cell without a row number, and the whole workbook was refused as unreadable.
    Its cell ``x;=1+1`` must not become a formula when the bad-rows file is opened with
    ``;`` as list separator."""
    no_id = [None, "x;=1+1", "女", "1988-08-08", None, "13406060606"]
    cfg = _sheet_source(tmp_path, [GOOD[0].split(","), no_id, GOOD[1].split(",")])
    with pytest.raises(InputError, match=r"1 row\(s\) have no record id \(row 3\)"):
        read_source(cfg)
    rejected = RejectedRows()
    frame = read_source(cfg, rejected=rejected)
    assert list(frame[schema.RECORD_ID]) == ["R01", "R02"]
    bad = tmp_path / "bad.csv"
    rejected.write(bad)
    text = bad.read_text(encoding="utf-8")
    assert ";=" not in text and ",x;'=1+1," in text
    table = restore_formulas(pd.read_csv(bad, dtype=str, keep_default_na=False))
    assert table[schema.REJECT_LINE].tolist() == ["3"]
    assert table[schema.REJECT_RAW].tolist() == [",x;=1+1,女,1988-08-08,,13406060606"]
