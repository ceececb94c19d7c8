"""Identity store: schema, round trip, transactions (rollback and kill -9), versions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from linkage import schema
from linkage.errors import InputError, LinkageError
from linkage.store import PAUSE_ENV, SCHEMA_VERSION, TABLES, Store, StoreChanges


def _records(ids: list[str], source: str = "police") -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            schema.ROW: np.arange(n),
            schema.SOURCE: [source] * n,
            schema.RECORD_ID: ids,
            schema.NAME: ["张伟", "欧阳娜娜", "买买提·艾力", "李娜"][:n],
            schema.ID_VALID: pd.array([True, None, False, True][:n], dtype="boolean"),
            schema.name_col(schema.NAME, "is_minority"): [False, False, True, False][:n],
        }
    )


def _changes(ids: list[str], identity: str, kind: str = "batch") -> StoreChanges:
    recs = _records(ids)
    links = recs[[schema.SOURCE, schema.RECORD_ID]].assign(**{schema.IDENTITY_ID: identity})
    return StoreChanges(
        kind=kind,
        config={"sources": {"police": {}}},
        replace_all=kind == "batch",
        records=recs,
        key_hashes=pd.DataFrame({schema.ROW: np.arange(len(recs)), "h": 7}),
        links=links,
        identities=pd.DataFrame(
            {
                schema.IDENTITY_ID: [identity],
                "status": ["active"],
                "merged_into": [None],
                "created_run": [1],
                "updated_run": [1],
            }
        ),
        golden=pd.DataFrame({schema.IDENTITY_ID: [identity], schema.NAME: ["张伟"]}),
        model={"schema_version": 1, "levels": {}},
        events=pd.DataFrame(
            {
                "event": ["created"],
                schema.IDENTITY_ID: [identity],
                "other_identity": [None],
                schema.SOURCE: [None],
                schema.RECORD_ID: [None],
            }
        ),
    )


def _snapshot(path: Path) -> dict[str, pd.DataFrame]:
    with Store.open(path, create=False) as store:
        return {t: store.table(t) for t in TABLES}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, obj=name)


def test_new_store_has_meta_and_empty_tables(tmp_path):
    with Store.open(tmp_path / "s.duckdb") as store:
        assert store.schema_version() == SCHEMA_VERSION
        counts = store.counts()
        assert counts["meta"] == 3 and counts["links"] == 0 and counts["records"] == 0
        assert store.model() is None


def test_open_missing_without_create_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Store.open(tmp_path / "nope.duckdb", create=False)


def test_records_round_trip_with_chinese_text_and_booleans(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        run = store.apply(_changes(["a1", "a2", "a3"], "IDX"))
        assert run == 1
        recs = store.table("records")
        assert recs[schema.NAME].tolist() == ["张伟", "欧阳娜娜", "买买提·艾力"]
        assert recs[schema.ID_VALID].tolist() == [True, None, False]
        assert recs["rk"].tolist() == [1, 2, 3]
        assert store.links()[schema.IDENTITY_ID].tolist() == ["IDX"] * 3
        assert store.model() == {"schema_version": 1, "levels": {}}
        assert store.runs()["status"].tolist() == ["done"]
        assert sorted(store.keys_for_hashes(np.array([7]))[schema.RECORD_ID]) == [
            "a1",
            "a2",
            "a3",
        ]


def test_ingest_upserts_by_key(tmp_path):
    with Store.open(tmp_path / "s.duckdb") as store:
        store.apply(_changes(["a1", "a2"], "IDX"))
        store.apply(_changes(["a2", "a3"], "IDY", kind="ingest"))
        recs = store.table("records").sort_values(schema.RECORD_ID)
        assert recs[schema.RECORD_ID].tolist() == ["a1", "a2", "a3"]
        links = store.links().set_index(schema.RECORD_ID)[schema.IDENTITY_ID]
        assert links.to_dict() == {"a1": "IDX", "a2": "IDY", "a3": "IDY"}
        assert len(store.table("key_index")) == 3


def test_failing_write_rolls_everything_back(tmp_path, monkeypatch):
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        store.apply(_changes(["a1"], "IDX"))
    before = _snapshot(path)
    with Store.open(path) as store:
        calls = []

        def boom():
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("disk full")

        monkeypatch.setattr(store, "_pause", boom)
        with pytest.raises(RuntimeError):
            store.apply(_changes(["b1", "b2"], "IDY"))
    _assert_same(before, _snapshot(path))


def test_killed_run_leaves_the_store_as_it_was(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        store.apply(_changes(["a1", "a2"], "IDX"))
    before = _snapshot(path)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_store import _changes
        from linkage.store import Store
        store = Store.open({str(path)!r})
        print("writing", flush=True)
        store.apply(_changes(["b1", "b2", "b3"], "IDY"))
        print("done", flush=True)
        """
    )
    env = dict(os.environ, **{PAUSE_ENV: "30"})
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(2.0)  # inside the transaction, asleep between two table writes
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _assert_same(before, _snapshot(path))


def test_older_known_version_is_migrated(tmp_path):
    path = tmp_path / "s.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE events DROP COLUMN detail")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with Store.open(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert "detail" in store._columns("events")


@pytest.mark.parametrize("version", ["99", "0"])
def test_newer_or_unknown_version_is_refused_with_file_and_versions(tmp_path, version):
    path = tmp_path / "s.duckdb"
    Store.open(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [version])
    con.close()
    with pytest.raises(LinkageError) as info:
        Store.open(path)
    text = str(info.value)
    assert str(path) in text and f"schema_version {version}" in text
    assert f"schema_version {SCHEMA_VERSION}" in text


def test_a_foreign_duckdb_file_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (a INTEGER)")
    con.close()
    with pytest.raises(InputError, match="not an identity store"):
        Store.open(path)


def test_unknown_table_name_is_refused(tmp_path):
    with Store.open(tmp_path / "s.duckdb") as store, pytest.raises(LinkageError):
        store.table("secrets")


def test_read_only_store_reads_and_indexes_serve_point_lookups(tmp_path):
    path = tmp_path / "s.duckdb"
    links = pd.DataFrame(
        {
            schema.SOURCE: ["a", "a", "b", "b"],
            schema.RECORD_ID: ["1", "2", "1", "3"],
            schema.IDENTITY_ID: ["X", "Y", "X", "Z"],
        }
    )
    with Store.open(path) as store:
        store.apply(StoreChanges(kind="batch", config={}, replace_all=True, links=links))
        joined = store.links_of_identities(["X", "Z"] * 150)  # the join path
        assert "links_identity" in store.missing_indexes()
        store.build_indexes()
        assert store.missing_indexes() == []
    with Store.open(path, create=False, read_only=True) as store:
        point = store.links_of_identities(["X", "Z"])
        assert point.reset_index(drop=True).equals(joined.reset_index(drop=True))
        assert store.links_of_identities([]).empty
    with pytest.raises(InputError, match="not found"):
        Store.open(tmp_path / "none.duckdb", read_only=True)


def test_point_reads_give_the_frames_the_arrow_path_gives(tmp_path):
    """Point reads build frames from fetched rows; dtypes and values as Arrow's conversion."""
    path = tmp_path / "s.duckdb"
    with Store.open(path) as store:
        store.apply(_changes(["a1", "a2", "a3", "a4"], "IDX"))
        store.con.execute("UPDATE records SET name = NULL WHERE record_id = 'a2'")
        for rks, cols in (([1, 2, 3, 4], "*"), ([2], "*"), ([1, 3], "rk, name, id_valid"),
                          ([99], "*"), ([4], "rk, run_id")):  # fmt: skip
            marks = ", ".join("?" for _ in rks)
            fast = store._point_rows("records", "rk", rks, cols)
            arrow = store._df(f"SELECT {cols} FROM records WHERE rk IN ({marks})", rks)
            key = list(fast.columns)
            pd.testing.assert_frame_equal(
                fast.sort_values(key[:1], ignore_index=True),
                arrow.sort_values(key[:1], ignore_index=True),
            )
        name = store._point_rows("records", "rk", [2], "name")[schema.NAME]
        assert name.dtype == object and name.iloc[0] is None  # text nulls are None, not NaN
        got = store.candidates_by_rk(np.array([3, 1, 3]), [schema.SOURCE, schema.NAME])
        assert got["rk"].tolist() == [1, 3]
        assert got[schema.IDENTITY_ID].tolist() == ["IDX", "IDX"]


def test_held_table_reads_equal_duckdb_point_reads_with_repeated_missing_and_null_keys():
    """``_HeldTable.positions`` gives every row of each key asked for (keys repeated in the
    table, asked twice, absent) in the order asked, and ``columns`` types those rows as a
    DuckDB point read does: integers without nulls int64/int32, with nulls float64 NaN,
    booleans bool or object with None, text object with None."""
    from linkage.store import _HeldTable, _rows_columns

    rng = np.random.default_rng(3)
    n = 400
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t (k BIGINT, i INTEGER, j BIGINT, b BOOLEAN, nb BOOLEAN, s VARCHAR)"
    )
    keys = np.sort(rng.integers(0, 120, n))  # about 3 rows a key, some keys absent
    rows = [
        (
            int(k),
            int(rng.integers(-5, 5)),
            None if rng.random() < 0.2 else int(rng.integers(0, 10**12)),
            bool(rng.random() < 0.5),
            None if rng.random() < 0.3 else bool(rng.random() < 0.5),
            None if rng.random() < 0.2 else "名" * int(rng.integers(1, 4)),
        )
        for k in keys
    ]
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", rows)
    held = _HeldTable(con, "SELECT * FROM t ORDER BY k", "k")
    names = ["k", "i", "j", "b", "nb", "s"]
    types = [str(t) for t in con.sql("SELECT * FROM t").types]
    for trial in range(30):
        asked = [int(v) for v in rng.integers(-2, 125, int(rng.integers(0, 12)))]
        if trial == 0:
            asked = [int(keys[0]), int(keys[0])]  # one key twice
        expected = [p for v in asked for p in range(n) if rows[p][0] == v]
        positions = held.positions(asked)
        assert positions.dtype == np.int64 and positions.tolist() == expected
        picked = positions[rng.permutation(len(positions))]
        # from a few columns or all, the nulls of a column depending on the rows picked
        columns = names if trial % 2 else ["s", "j", "nb"]
        got = held.columns(picked, columns)
        want = _rows_columns(
            columns,
            [types[names.index(c)] for c in columns],
            [tuple(rows[p][names.index(c)] for c in columns) for p in picked],
        )
        assert list(got) == columns
        for c in columns:
            assert got[c].dtype == want[c].dtype, (c, got[c].dtype, want[c].dtype)
            pd.testing.assert_series_equal(pd.Series(got[c]), pd.Series(want[c]))
