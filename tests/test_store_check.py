"""`linkage store check`: a sound store passes after batch and ingest runs; each kind of
damage (truncation, bad blocks, broken keys, records in no or two identities, stray events)
is reported, and a damaged store is refused before anything is written to it."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage.cli import app
from linkage.config import load_config
from linkage.errors import InputError
from linkage.incremental import ingest, write_batch
from linkage.linker import Linker
from linkage.paths import check_output_dir, check_store_path
from linkage.store import Store
from linkage.store_check import check_store

runner = CliRunner()


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    """A store after a batch run, an ingest of new records and an ingest of updated ones."""
    from linkage.synth import generate

    folder = tmp_path_factory.mktemp("check")
    generate(150, seed=5, output=folder)
    health = pd.read_csv(folder / "health.csv", dtype=str)
    new = health.sample(frac=0.2, random_state=2)
    old = health.drop(new.index)
    old.to_csv(folder / "health_old.csv", index=False)
    new.to_csv(folder / "health_new.csv", index=False)
    updated = old.head(10).copy()
    updated.iloc[:, 1] = "欧阳明"  # new names for ten stored records
    updated.to_csv(folder / "health_upd.csv", index=False)
    cfg = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    src = cfg["sources"]
    for name, sources in (
        ("old.yaml", dict(src, health=dict(src["health"], path="health_old.csv"))),
        ("new.yaml", {"health": dict(src["health"], path="health_new.csv")}),
        ("upd.yaml", {"health": dict(src["health"], path="health_upd.csv")}),
    ):
        doc = dict(cfg, sources=sources)
        (folder / name).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    path = folder / "s.duckdb"
    linker = Linker.from_yaml(folder / "old.yaml")
    result = linker.run()
    with Store.open(path) as store:
        write_batch(store, result, linker.config)
        ingest(store, load_config(folder / "new.yaml"))
        ingest(store, load_config(folder / "upd.yaml"))
    return path


def test_sound_store_passes(sound):
    report = check_store(sound)
    assert report.ok, report.format()
    assert report.schema_version == 2 and report.checks > 30
    assert report.counts["records"] == report.counts["links"] > 0
    result = runner.invoke(app, ["store", "check", str(sound)])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output and "records" in result.output


def _sql(*statements: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        con = duckdb.connect(str(path))
        for sql in statements:
            con.execute(sql)
        con.close()

    return damage


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _bad_block(path: Path) -> None:
    """Overwrite the start of a block the records table uses (its checksum then fails)."""
    con = duckdb.connect(str(path), read_only=True)
    block_size = int(con.execute("PRAGMA database_size").fetchall()[0][2])
    block = con.execute(
        "SELECT min(block_id) FROM pragma_storage_info('records') WHERE block_id >= 0"
    ).fetchall()[0][0]
    con.close()
    offset = 3 * 4096 + int(block) * block_size + 8  # after the block's own checksum
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * 256)


DAMAGE = [
    ("truncated", _truncate, "file is truncated"),
    ("bad block", _bad_block, "cannot be read"),
    (
        "record without identity",
        _sql("DELETE FROM links WHERE rk = (SELECT min(rk) FROM links)"),
        "records in no identity (no link): 1 row(s)",
    ),
    (
        "record in two identities",
        _sql(
            "INSERT INTO links SELECT source, record_id, 'IDSOMEONEELSE', run_id, rk FROM links "
            "LIMIT 1"
        ),
        "records in more than one identity",
    ),
    (
        "link to an identity the store does not hold",
        _sql("UPDATE links SET identity_id = 'IDGONE' WHERE rk = (SELECT min(rk) FROM links)"),
        "links to an identity that is not active: 1 row(s)",
    ),
    (
        "repeated row key",
        _sql("UPDATE records SET rk = 1 WHERE rk = 2"),
        "records with a null or repeated row key rk",
    ),
    (
        "record stored twice",
        _sql("INSERT INTO records SELECT * REPLACE (rk + 100000 AS rk) FROM records LIMIT 1"),
        "records stored more than once",
    ),
    (
        "active identity without golden record",
        _sql("DELETE FROM golden WHERE identity_id = (SELECT min(identity_id) FROM golden)"),
        "active identities without a golden record: 1 row(s)",
    ),
    (
        "unknown status",
        _sql(
            "UPDATE identities SET status = 'lost' WHERE identity_id = "
            "(SELECT min(identity_id) FROM identities)"
        ),  # fmt: skip
        "identities with an unknown status",
    ),
    (
        "event about an unknown identity",
        _sql(
            "UPDATE events SET identity_id = 'IDNOBODY' WHERE event = 'created' AND "
            "identity_id = (SELECT min(identity_id) FROM events)"
        ),  # fmt: skip
        "events naming an identity the store does not know",
    ),
    (
        "event of an unknown kind",
        _sql("UPDATE events SET event = 'teleported' WHERE rowid = 0"),
        "events of an unknown kind: 1 row(s)",
    ),
    (
        "rows of a run that is not logged",
        _sql("DELETE FROM runs WHERE run_id = 2"),
        "rows written by a run not in the runs table",
    ),
    (
        "dangling key index",
        _sql("INSERT INTO key_index VALUES (42, 99999999)"),
        "key_index entries pointing at no record: 1 row(s)",
    ),
    ("missing table", _sql("DROP TABLE pairs"), "table 'pairs' is missing"),
    (
        "missing key column",
        _sql("ALTER TABLE events DROP COLUMN detail"),
        "table 'events' lacks column(s) detail",
    ),
    (
        "newer schema",
        _sql("UPDATE meta SET value = '7' WHERE key = 'schema_version'"),
        "schema_version 7 is newer",
    ),
]


@pytest.mark.parametrize("damage, says", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damage_is_reported(sound, tmp_path, damage, says):
    path = tmp_path / "s.duckdb"
    shutil.copy(sound, path)
    damage(path)
    before = hashlib.md5(path.read_bytes()).hexdigest()
    result = runner.invoke(app, ["store", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert says in result.output, result.output
    assert "integrity problem(s)" in result.output and "Traceback" not in result.output
    assert hashlib.md5(path.read_bytes()).hexdigest() == before  # the check only reads


def test_damaged_store_is_refused_before_writing(sound, tmp_path):
    path = tmp_path / "s.duckdb"
    shutil.copy(sound, path)
    _truncate(path)
    before = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(InputError, match=r"s.duckdb: identity store is damaged: file is truncated"):
        Store.open(path)
    with pytest.raises(InputError, match="file is truncated"):
        check_store_path(path, create=False)
    assert hashlib.md5(path.read_bytes()).hexdigest() == before


def test_store_check_of_other_files(tmp_path):
    csv = tmp_path / "golden_records.csv"
    csv.write_text("identity_id,name\nID1,张伟\n", encoding="utf-8")
    result = runner.invoke(app, ["store", "check", str(csv)])
    assert result.exit_code == 2 and "not an identity store: a text file (CSV?)" in result.output
    result = runner.invoke(app, ["store", "check", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "identity store not found" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_unwritable_output_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InputError, match="cannot write in folder"):
            check_output_dir(locked / "out")
        with pytest.raises(InputError, match="cannot write in folder"):
            check_store_path(locked / "s.duckdb", create=True)
    finally:
        locked.chmod(0o700)


def test_store_identities_writes_every_stored_record_once(sound, tmp_path):
    """`linkage store identities`: after a batch and two ingests, one row per stored record
    with its active identity; an existing file that is no map or export is not replaced."""
    out = tmp_path / "map.csv"
    result = runner.invoke(app, ["store", "identities", str(sound), "--output", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out, dtype=str)
    assert list(written.columns) == ["source", "record_id", "identity_id"]
    con = duckdb.connect(str(sound), read_only=True)
    try:
        stored = con.sql("SELECT source, record_id FROM records").df()
        active = set(
            con.sql("SELECT identity_id FROM identities WHERE status = 'active'").df()[
                "identity_id"
            ]
        )
    finally:
        con.close()
    assert len(written) == len(stored) and not written.duplicated(["source", "record_id"]).any()
    assert set(zip(written["source"], written["record_id"], strict=True)) == set(
        zip(stored["source"], stored["record_id"], strict=True)
    )
    assert set(written["identity_id"]) <= active
    # the ingested health records are there too
    assert (written["source"] == "health").sum() == (stored["source"] == "health").sum() > 0
    assert f"wrote {len(written):,} records" in result.output
    parquet = tmp_path / "map.parquet"
    result = runner.invoke(app, ["store", "identities", str(sound), "-o", str(parquet)])
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(parquet).equals(written)
    registry = tmp_path / "health.csv"
    registry.write_text("编号,姓名\n1,张伟\n", encoding="utf-8")
    result = runner.invoke(app, ["store", "identities", str(sound), "-o", str(registry)])
    assert result.exit_code == 2 and "not an earlier export" in result.output
    assert registry.read_text(encoding="utf-8") == "编号,姓名\n1,张伟\n"
    result = runner.invoke(app, ["store", "identities", str(sound), "-o", str(tmp_path / "m.txt")])
    assert result.exit_code == 2
