"""A matrix of bad inputs through the CLI: readers, configs, paths and stores.

Each row states its expected outcome: ``exit 2`` with a message naming the file, key, line
or column (never a traceback, nothing written), or ``kept``: the command succeeds, every
input record appears exactly once in identities.csv, and a damaged value carries a quality
flag.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import openpyxl
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app

runner = CliRunner()

HEADER = "编号,姓名,出生日期,身份证号,住址"
ROWS = [
    "A1,张伟,1980-01-02,11010519800102001X,北京市朝阳区建国路1号",
    "A2,李娜,1975-03-04,440304197503040026,广东省深圳市福田区福华路2号",
    "A3,王芳,1990-05-06,310115199005060047,上海市浦东新区世纪大道3号",
]
COLUMNS = {
    "姓名": "name",
    "出生日期": "birth_date",
    "身份证号": "id_number",
    "住址": "current_address",
}


def _config(tmp: Path, sources: dict, name: str = "run.yaml") -> Path:
    doc = {"sources": sources, "model": {"u_sample_pairs": 1000}}
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _csv(tmp: Path, text: str, file: str = "a.csv", **entry) -> Path:
    (tmp / file).write_text(text, encoding="utf-8")
    source = {"path": file, "record_id": "编号", "columns": COLUMNS, **entry}
    return _config(tmp, {"reg": source})


def _good(tmp: Path) -> Path:
    return _csv(tmp, "\n".join([HEADER, *ROWS]) + "\n")


def _xlsx(
    tmp: Path, rows: list[list], formats: dict[tuple[int, int], str] | None = None, cut: int = 0
) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER.split(","))
    for row in rows:
        sheet.append(row)
    for (r, c), fmt in (formats or {}).items():
        sheet.cell(row=r, column=c).number_format = fmt
    book.save(tmp / "a.xlsx")
    if cut:
        (tmp / "a.xlsx").write_bytes((tmp / "a.xlsx").read_bytes()[:cut])
    return _config(tmp, {"reg": {"path": "a.xlsx", "record_id": "编号", "columns": COLUMNS}})


def _run(config: Path, tmp: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--output", str(tmp / "out"), "-q", *extra]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A sound identity store of the three good records."""
    tmp = tmp_path_factory.mktemp("store")
    result = runner.invoke(app, _run(_good(tmp), tmp, "--store", str(tmp / "s.duckdb")))
    assert result.exit_code == 0, result.output
    return tmp / "s.duckdb"


def _w(path: Path, text: str | bytes) -> Path:
    """Write a file and return its path."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _store_copy(tmp: Path, store: Path, damage: Callable[[Path], None] | None = None) -> Path:
    """Copy the sound store to tmp/s.duckdb (damaged on request); remember its checksum."""
    path = tmp / "s.duckdb"
    shutil.copy(store, path)
    if damage:
        damage(path)
    _w(tmp / "s.md5", _md5(path))
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _newer_release(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()


def _runs(path: Path) -> list:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT run_id, kind, status FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


@dataclass
class Row:
    """One bad input: build it under tmp (with a sound store at hand), return CLI args."""

    id: str
    build: Callable[[Path, Path], list[str]]
    expect: str  # "exit 2" | "kept"
    says: tuple[str, ...] = ()  # parts of the error message
    records: int = 3  # kept: rows of identities.csv
    flag: tuple[str, str] | None = None  # kept: (record_id, quality flag it carries)
    after: Callable[[Path], None] | None = None  # a further check on tmp


def _store_runs_unchanged(tmp: Path) -> None:
    assert _runs(tmp / "s.duckdb") == [(1, "batch", "done")]


def _store_untouched(tmp: Path) -> None:
    assert _md5(tmp / "s.duckdb") == (tmp / "s.md5").read_text()


def _nothing_written(tmp: Path) -> None:
    _store_untouched(tmp)
    assert not (tmp / "out").exists() and not (tmp / "p.csv").exists()


def _unchanged(name: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        assert _md5(tmp / name) == (tmp / f"{name}.md5").read_text()

    return check


def _kept_file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = _w(tmp / name, content)
    _w(tmp / f"{name}.md5", _md5(path))
    return path


def _include_with_duplicate(t: Path, s: Path) -> list[str]:
    _w(t / "schema.yaml", "record_id: 编号\ncolumns:\n  姓名: name\n  姓名: former_name\n")
    return _run(_config(t, {"reg": {"include": "schema.yaml", "path": "a.csv"}}), t)


def _policy_with_duplicate(t: Path, s: Path) -> list[str]:
    policy = _w(
        t / "policy.yaml",
        "departments:\n  police: {fields: {name: full}}\n  police: {fields: {name: surname}}\n",
    )
    store = _store_copy(t, s)
    out = str(t / "p.csv")
    return ["export", "--store", str(store), "--department", "police", "--output", out,
            "--policy", str(policy)]  # fmt: skip


def _store_then_output_file(command: str) -> Callable[[Path, Path], list[str]]:
    def build(t: Path, s: Path) -> list[str]:
        store = _store_copy(t, s)
        _w(t / "afile", "x")
        return [command, str(_good(t)), "--store", str(store), "--output", str(t / "afile")]

    return build


def _previous_identities_as_store(t: Path, s: Path) -> list[str]:
    assert runner.invoke(app, _run(_good(t), t)).exit_code == 0
    store = t / "out" / "identities.csv"
    return ["run", str(t / "run.yaml"), "--output", str(t / "o2"), "--store", str(store)]


def _other_duckdb(t: Path, s: Path) -> list[str]:
    con = duckdb.connect(str(t / "o.duckdb"))
    con.execute("CREATE TABLE t (a INT)")
    con.close()
    return _run(_good(t), t, "--store", str(t / "o.duckdb"))


def _sci(row: str, rid: str) -> str:
    return rid + row[2:]


SEARCH = ["--name", "张伟"]
GOOD_XLSX_ROWS = [r.split(",") for r in ROWS]
TRAILING = "\n".join(r + "," for r in [HEADER, *ROWS]) + "\n"
PHANTOM = [HEADER, ROWS[0], ROWS[1][:-8], ROWS[1][-8:], ROWS[2]]  # break inside the address
SPLIT_NAME = [HEADER, ROWS[0], ROWS[1][:4], ROWS[1][4:], ROWS[2]]  # break inside the name
INTERNAL = "rk,run_id,quality_flags,name_clean,identity_id"


MATRIX = [
    # ------------------------------------------------------------------ configs
    Row(
        "config: duplicate source name",
        lambda t, s: _run(
            _w(
                t / "run.yaml",
                "sources:\n"
                "  reg: {path: a.csv, record_id: 编号, columns: {姓名: name}}\n"
                "  reg: {path: b.csv, record_id: 编号, columns: {姓名: name}}\n",
            ),
            t,
        ),
        "exit 2",
        ("run.yaml", "duplicate key 'sources.reg' on lines 2, 3"),
    ),
    Row(
        "config: duplicate key deep inside a stage section",
        lambda t, s: _run(
            _w(
                t / "run.yaml",
                "sources:\n  reg: {path: a.csv, record_id: 编号, columns: {姓名: name}}\n"
                "clustering:\n  threshold: 0.9\n  threshold: 0.5\n",
            ),
            t,
        ),
        "exit 2",
        ("duplicate key 'clustering.threshold' on lines 4, 5",),
    ),
    Row(
        "config: duplicate header key in an included source schema",
        _include_with_duplicate,
        "exit 2",
        ("schema.yaml", "duplicate key 'columns.姓名' on lines 3, 4"),
    ),
    Row(
        "config: duplicate department in a sharing policy",
        _policy_with_duplicate,
        "exit 2",
        ("policy.yaml", "duplicate key 'departments.police' on lines 2, 3"),
        after=_nothing_written,
    ),
    # ------------------------------------------------------------------ CSV readers
    Row(
        "csv: short row",
        lambda t, s: _run(_csv(t, "\n".join([HEADER, ROWS[0], "A2,李娜,1975-03-04", ROWS[2]])), t),
        "exit 2",
        ("a.csv", "expected 5: line 3 has 3"),
    ),
    Row(
        "csv: long row (unquoted comma in an address)",
        lambda t, s: _run(_csv(t, "\n".join([HEADER, ROWS[0], ROWS[1] + ",2单元", ROWS[2]])), t),
        "exit 2",
        ("a.csv", "expected 5: line 3 has 6"),
    ),
    Row(
        "csv: unquoted line break inside the last value makes a phantom record",
        lambda t, s: _run(_csv(t, "\n".join(PHANTOM)), t),
        "exit 2",
        ("a.csv", "1 line(s) with the wrong number of fields, expected 5: line 4 has 1"),
    ),
    Row(
        "csv: unquoted line break inside a name splits a record in two",
        lambda t, s: _run(_csv(t, "\n".join(SPLIT_NAME)), t),
        "exit 2",
        ("a.csv", "2 line(s) with the wrong number of fields", "line 3 has 2", "line 4 has 4"),
    ),
    Row(
        "csv: every line ends in a delimiter (unnamed empty column)",
        lambda t, s: _run(_csv(t, TRAILING), t),
        "kept",
    ),
    Row(
        "csv: data lines end in a delimiter, the header does not",
        lambda t, s: _run(_csv(t, "\n".join([HEADER, *(r + "," for r in ROWS)]) + "\n"), t),
        "kept",
    ),
    Row(
        "csv: quoted line break and delimiter inside a value",
        lambda t, s: _run(
            _csv(t, "\n".join([HEADER, ROWS[0], 'A2,李娜,1975,,"深圳市\n福田区,2号"', ROWS[2]])), t
        ),
        "kept",
    ),
    Row(
        "csv: values under a column without header",
        lambda t, s: _run(
            _csv(t, "\n".join([HEADER + ",", ROWS[0] + ",备注", ROWS[1] + ",", ROWS[2] + ","])), t
        ),
        "exit 2",
        ("a.csv", "column(s) 6 have no header but hold values on 1 line(s): 2"),
    ),
    Row(
        "csv: the same header twice after trimming spaces",
        lambda t, s: _run(_csv(t, "\n".join([HEADER + ",姓名 ", *(r + ",x" for r in ROWS)])), t),
        "exit 2",
        ("a.csv", "'姓名' in columns 2, 6"),
    ),
    Row(
        "csv: record ids in scientific notation (went through a spreadsheet)",
        lambda t, s: _run(
            _csv(t, "\n".join([HEADER, ROWS[0], _sci(ROWS[1], "1.10105E+17"), ROWS[2]])), t
        ),
        "exit 2",
        ("a.csv", "column '编号'", "scientific notation", "'1.10105E+17'", "(line 3)"),
    ),
    Row(
        "csv: an ID number in scientific notation",
        lambda t, s: _run(
            _csv(t, "\n".join([HEADER, ROWS[0], "A2,李娜,1975-03-04,4.40304E+17,深圳", ROWS[2]])),
            t,
        ),
        "kept",
        flag=("A2", "id_float_damaged"),
    ),
    Row(
        "csv: an open quote",
        lambda t, s: _run(_csv(t, "\n".join([HEADER, ROWS[0], 'A2,"李娜,1,2,3'])), t),
        "exit 2",
        ("a.csv", "line 3", "a quote may be left open"),
    ),
    Row(
        "csv: the source path is a folder",
        lambda t, s: _run(
            _config(t, {"reg": {"path": (t / "d.csv").mkdir() or "d.csv", "record_id": "编号"}}), t
        ),
        "exit 2",
        ("d.csv", "is a folder"),
    ),
    # ------------------------------------------------------------------ Excel / Parquet
    Row(
        "xlsx: a CSV file named .xlsx",
        lambda t, s: _run(
            _config(t, {"reg": {"path": _w(t / "a.xlsx", HEADER).name, "record_id": "编号"}}), t
        ),
        "exit 2",
        ("a.xlsx", "cannot be read as an Excel workbook"),
    ),
    Row(
        "xlsx: a workbook cut short",
        lambda t, s: _run(_xlsx(t, GOOD_XLSX_ROWS, cut=900), t),
        "exit 2",
        ("a.xlsx", "cannot be read as an Excel workbook"),
    ),
    Row(
        "xlsx: record ids stored as numbers longer than 15 digits",
        lambda t, s: _run(
            _xlsx(t, [[110105198001020011, "张伟"], [110105198001020012, "李娜"]]), t
        ),
        "exit 2",
        ("a.xlsx", "column '编号'", "too long for Excel's 15 significant digits", "rows 2, 3"),
    ),
    Row(
        "xlsx: an ID number stored as a number",
        lambda t, s: _run(
            _xlsx(t, [["A1", "张伟", "1980-01-02", 1.1010519800102e17], ["A2", "李娜"], ["A3"]]),
            t,
        ),
        "kept",
        flag=("A1", "id_float_damaged"),
    ),
    Row(
        "xlsx: zero-padded numeric record ids keep their zeros",
        lambda t, s: _run(
            _xlsx(
                t, [[1, "张伟"], [2, "李娜"], [3, "王芳"]], {(r, 1): "000000" for r in (2, 3, 4)}
            ),
            t,
        ),
        "kept",
        flag=("000001", ""),
    ),
    Row(
        "parquet: not a Parquet file",
        lambda t, s: _run(
            _config(
                t, {"reg": {"path": _w(t / "a.parquet", b"PAR1garbage").name, "record_id": "编号"}}
            ),  # fmt: skip
            t,
        ),
        "exit 2",
        ("a.parquet", "cannot be read as Parquet"),
    ),
    # ------------------------------------------------------------------ pass-through columns
    Row(
        "passthrough: headers equal to internal column names",
        lambda t, s: _run(
            _csv(
                t,
                "\n".join(
                    [
                        f"{HEADER},{INTERNAL}",
                        *(f"{r},{i},r{i},q{i},n{i},x{i}" for i, r in enumerate(ROWS)),
                    ]
                ),
            ),
            t,
            "--store",
            str(t / "new.duckdb"),
        ),
        "kept",
        after=lambda t: _passthrough_kept(t / "new.duckdb"),
    ),
    # ------------------------------------------------------------------ output paths
    Row(
        "paths: run --output is an existing file (the store is not written)",
        _store_then_output_file("run"),
        "exit 2",
        ("afile", "--output must be a folder", "this is a file"),
        after=_store_runs_unchanged,
    ),
    Row(
        "paths: ingest --output is an existing file (the store is not written)",
        _store_then_output_file("ingest"),
        "exit 2",
        ("afile", "--output must be a folder"),
        after=_store_runs_unchanged,
    ),
    Row(
        "paths: --output below a file",
        lambda t, s: ["run", str(_good(t)), "--output", str(_w(t / "f", "x") / "out")],
        "exit 2",
        ("is a file, so no folder can be created under it",),
    ),
    Row(
        "paths: standardize --output is a folder",
        lambda t, s: ["standardize", str(_good(t)), "--output", str(t)],
        "exit 2",
        ("--output must be a file, but this is a folder",),
    ),
    Row(
        "paths: export --output is a folder",
        lambda t, s: [
            "export",
            "--store",
            str(_store_copy(t, s)),
            "--department",
            "police",
            "--output",
            str(t),
        ],  # fmt: skip
        "exit 2",
        ("--output must be a file, but this is a folder",),
    ),
    # ------------------------------------------------------------------ stores
    Row(
        "store: --store is an existing CSV",
        lambda t, s: _run(_good(t), t, "--store", str(_kept_file(t, "prev.csv", "a,b\n1,2\n"))),
        "exit 2",
        ("prev.csv", "not an identity store: a text file (CSV?)"),
        after=_unchanged("prev.csv"),
    ),
    Row(
        "store: --store is a Parquet file",
        lambda t, s: _run(
            _good(t), t, "--store", str(_kept_file(t, "prev.parquet", b"PAR1\x15\x04PAR1"))
        ),
        "exit 2",
        ("prev.parquet", "not an identity store: a Parquet file"),
        after=_unchanged("prev.parquet"),
    ),
    Row(
        "store: --store is a previous run's identities.csv",
        _previous_identities_as_store,
        "exit 2",
        ("identities.csv", "not an identity store"),
    ),
    Row(
        "store: --store is an empty file",
        lambda t, s: _run(_good(t), t, "--store", str(_w(t / "e.duckdb", b""))),
        "exit 2",
        ("e.duckdb", "empty file, not an identity store"),
    ),
    Row(
        "store: --store is a folder",
        lambda t, s: _run(_good(t), t, "--store", str(t)),
        "exit 2",
        ("folder",),
    ),
    Row(
        "store: a DuckDB file that is not a store",
        _other_duckdb,
        "exit 2",
        ("o.duckdb", "not an identity store"),
    ),
    Row(
        "store: ingest into a missing store",
        lambda t, s: ["ingest", str(_good(t)), "--store", str(t / "none.duckdb")],
        "exit 2",
        ("none.duckdb", "identity store not found"),
    ),
    Row(
        "store: search a truncated store",
        lambda t, s: ["search", "--store", str(_store_copy(t, s, _truncate)), *SEARCH],
        "exit 2",
        ("s.duckdb", "identity store is damaged: file is truncated"),
        after=_store_untouched,
    ),
    Row(
        "store: export from a truncated store",
        lambda t, s: [
            "export",
            "--store",
            str(_store_copy(t, s, _truncate)),
            "--department",
            "police",
            "--output",
            str(t / "p.csv"),
        ],  # fmt: skip
        "exit 2",
        ("s.duckdb", "file is truncated"),
        after=_nothing_written,
    ),
    Row(
        "store: ingest into a truncated store",
        lambda t, s: ["ingest", str(_good(t)), "--store", str(_store_copy(t, s, _truncate))],
        "exit 2",
        ("s.duckdb", "file is truncated"),
        after=_store_untouched,
    ),
    Row(
        "store: batch run into a truncated store",
        lambda t, s: _run(_good(t), t, "--store", str(_store_copy(t, s, _truncate))),
        "exit 2",
        ("s.duckdb", "file is truncated"),
        after=_nothing_written,
    ),
    Row(
        "store: a store from a newer release",
        lambda t, s: ["search", "--store", str(_store_copy(t, s, _newer_release)), *SEARCH],
        "exit 2",
        ("s.duckdb", "schema_version 99"),
    ),
]


def _passthrough_kept(store: Path) -> None:
    con = duckdb.connect(str(store), read_only=True)
    try:
        got = con.execute(
            'SELECT record_id, "raw.rk", "raw.run_id", "raw.quality_flags", "raw.name_clean", '
            '"raw.identity_id", rk, run_id, name_clean FROM records ORDER BY record_id'
        ).fetchall()
    finally:
        con.close()
    assert [g[:6] for g in got] == [
        (f"A{i + 1}", str(i), f"r{i}", f"q{i}", f"n{i}", f"x{i}") for i in range(3)
    ]
    assert [g[6:] for g in got] == [(1, 1, "张伟"), (2, 1, "李娜"), (3, 1, "王芳")]


@pytest.mark.parametrize("row", MATRIX, ids=[r.id for r in MATRIX])
def test_bad_input(row: Row, tmp_path: Path, store: Path) -> None:
    args = row.build(tmp_path, store)
    result = runner.invoke(app, args)
    out = result.output
    assert "Traceback" not in out and "internal error" not in out, out
    if row.expect == "exit 2":
        assert result.exit_code == 2, out
        for part in row.says:
            assert part in out, f"{part!r} not in {out!r}"
    else:
        assert row.expect == "kept"
        assert result.exit_code == 0, out
        ids = pd.read_csv(tmp_path / "out" / "identities.csv", dtype=str, keep_default_na=False)
        keys = list(zip(ids[schema.SOURCE], ids[schema.RECORD_ID], strict=True))
        assert len(keys) == len(set(keys)) == row.records
        if row.flag:
            config = next(a for a in args if a.endswith(".yaml"))
            std = tmp_path / "std.parquet"
            result = runner.invoke(app, ["standardize", config, "--output", str(std), "-q"])
            assert result.exit_code == 0, result.output
            records = pd.read_parquet(std).set_index(schema.RECORD_ID)
            record_id, flag = row.flag
            assert record_id in records.index  # kept, under its exact id
            flags = records.loc[record_id, schema.QUALITY_FLAGS].split(schema.QUALITY_SEP)
            assert (flag in flags) if flag else True, flags
    if row.after:
        row.after(tmp_path)


def test_matrix_covers_every_family():
    families = {r.id.split(":")[0] for r in MATRIX}
    assert families == {"config", "csv", "xlsx", "parquet", "passthrough", "paths", "store"}
    assert all(r.expect in ("exit 2", "kept") for r in MATRIX)


def test_damaged_zip_member_in_xlsx(tmp_path: Path) -> None:
    """A workbook whose sheet XML is garbage (zip intact) is named, not a traceback."""
    config = _xlsx(tmp_path, [r.split(",") for r in ROWS])
    src = tmp_path / "a.xlsx"
    broken = tmp_path / "b.xlsx"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(broken, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                data = data[: len(data) // 2]
            zout.writestr(item, data)
    broken.replace(src)
    result = runner.invoke(app, _run(config, tmp_path))
    assert result.exit_code == 2, result.output
    assert "a.xlsx" in result.output and "cannot be read as an Excel workbook" in result.output
