"""Store-backed runs: stable IDs across batch runs, incremental ingest, single-record search."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage import schema
from linkage.blocking import BlockingSettings
from linkage.cli import app
from linkage.config import load_config
from linkage.errors import ConfigError
from linkage.evaluate import pairwise_scores
from linkage.incremental import ingest, key_hashes, record_key_hashes, search, write_batch
from linkage.linker import Linker
from linkage.model import FellegiSunterModel
from linkage.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Synthetic registries, the health registry split into an old part and a held-out batch."""
    from linkage.synth import generate

    folder = tmp_path_factory.mktemp("inc")
    generate(300, seed=3, output=folder)
    health = pd.read_csv(folder / "health.csv", dtype=str)
    new = health.sample(frac=0.15, random_state=1)
    health.drop(new.index).to_csv(folder / "health_old.csv", index=False)
    new.to_csv(folder / "health_new.csv", index=False)
    # the same registry in reverse row order
    police = pd.read_csv(folder / "police.csv", dtype=str)
    police.iloc[::-1].to_csv(folder / "police_reversed.csv", index=False)
    cfg = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))

    def write(name: str, sources: dict) -> None:
        doc = dict(cfg, sources=sources)
        (folder / name).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")

    src = cfg["sources"]
    write("old.yaml", dict(src, health=dict(src["health"], path="health_old.csv")))
    write("new.yaml", {"health": dict(src["health"], path="health_new.csv")})
    write("reversed.yaml", dict(src, police=dict(src["police"], path="police_reversed.csv")))
    return folder


def _batch(config: Path, store_path: Path):
    linker = Linker.from_yaml(config)
    result = linker.run()
    with Store.open(store_path) as store:
        return write_batch(store, result, linker.config)


@pytest.fixture(scope="module")
def batch(data, tmp_path_factory):
    """``_batch`` once per config for the module; each test gets its own copy of that store.

    Thirteen tests start from the store of a batch run on run.yaml or old.yaml: one run
    each instead of one per test (each about 2 s). A copy of the closed file is the store
    as written (one DuckDB file), so a test that ingests into it changes only its own copy.
    """
    folder = tmp_path_factory.mktemp("batches")
    made: dict[str, tuple[Path, object]] = {}

    def copy(config: Path, store_path: Path):
        if config.name not in made:
            template = folder / f"{config.stem}.duckdb"
            made[config.name] = (template, _batch(config, template))
        template, result = made[config.name]
        shutil.copyfile(template, store_path)
        return result

    return copy


def test_run_with_store_twice_in_any_row_order_gives_identical_identities(data, tmp_path):
    store_path = tmp_path / "s.duckdb"
    out = [tmp_path / "o1", tmp_path / "o2"]
    for cfg, folder in zip([data / "run.yaml", data / "reversed.yaml"], out, strict=True):
        res = runner.invoke(
            app, ["run", str(cfg), "--store", str(store_path), "--output", str(folder), "-q"]
        )
        assert res.exit_code == 0, res.output
    first = (out[0] / "identities.csv").read_bytes()
    assert first == (out[1] / "identities.csv").read_bytes()
    with Store.open(store_path) as store:
        events = store.events()
        assert set(events.loc[events["run_id"] == 2, "event"]) <= {"record_updated"}
        assert store.runs()["kind"].tolist() == ["batch", "batch"]
    # the first run on an empty store groups records as the plain batch does; the names
    # differ, since the store keys identity ids with its own secret
    plain = tmp_path / "plain"
    assert (
        runner.invoke(app, ["run", str(data / "run.yaml"), "-o", str(plain), "-q"]).exit_code == 0
    )
    batch = pd.read_csv(plain / "identities.csv", dtype=str)
    stored = pd.read_csv(out[0] / "identities.csv", dtype=str)
    assert batch[["source", "record_id"]].equals(stored[["source", "record_id"]])
    assert pd.factorize(batch["identity_id"])[0].tolist() == (
        pd.factorize(stored["identity_id"])[0].tolist()
    )
    assert not set(batch["identity_id"]) & set(stored["identity_id"])


def test_ingest_agrees_with_a_full_run(data, batch, tmp_path):
    store_path = tmp_path / "s.duckdb"
    batch(data / "old.yaml", store_path)
    with Store.open(store_path) as store:
        before = store.links()
        result = ingest(store, load_config(data / "new.yaml"))
        after = store.links()
        assert store.counts()["records"] == len(after)
        golden = store.table("golden")
        identities = store.identities()
    n_new = len(pd.read_csv(data / "health_new.csv", dtype=str))
    assert result.summary["new_records"] == n_new
    assert result.summary["inserted_records"] == n_new  # none stored before
    assert len(after) == len(before) + n_new
    active = set(identities.loc[identities["status"] == "active", schema.IDENTITY_ID])
    assert set(after[schema.IDENTITY_ID]) == active == set(golden[schema.IDENTITY_ID])
    # stored identities keep their ids unless merged
    kept = before.merge(after, on=[schema.SOURCE, schema.RECORD_ID], suffixes=("_b", "_a"))
    assert (kept["identity_id_b"] == kept["identity_id_a"]).mean() > 0.95
    full = Linker.from_yaml(data / "run.yaml").run().identities
    both = full.merge(after, on=[schema.SOURCE, schema.RECORD_ID], suffixes=("_full", "_inc"))
    assert len(both) == len(full)
    f1 = pairwise_scores(both["identity_id_full"], both["identity_id_inc"])["f1"]
    assert f1 >= 0.99


def test_ingesting_a_stored_record_again_is_an_update(data, batch, tmp_path):
    store_path = tmp_path / "s.duckdb"
    batch(data / "old.yaml", store_path)
    health = pd.read_csv(data / "health_old.csv", dtype=str).head(3)
    phone_col = next(c for c in health.columns if "电话" in c)
    health[phone_col] = "13900000000"
    health.to_csv(data / "health_update.csv", index=False)
    cfg = yaml.safe_load((data / "new.yaml").read_text(encoding="utf-8"))
    cfg["sources"]["health"]["path"] = "health_update.csv"
    (data / "update.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    with Store.open(store_path) as store:
        n_before = store.counts()["records"]
        result = ingest(store, load_config(data / "update.yaml"))
        assert store.counts()["records"] == n_before
        recs = store.table("records")
    assert result.summary["updated_records"] == 3
    assert result.summary["unchanged_records"] == 0
    assert result.summary["events"]["record_updated"] == 3
    changed = recs[recs[schema.PHONE] == "13900000000"]
    assert len(changed) == 3


def test_ingesting_unchanged_records_counts_them_unchanged(data, batch, tmp_path):
    store_path = tmp_path / "s.duckdb"
    batch(data / "old.yaml", store_path)
    health = pd.read_csv(data / "health_old.csv", dtype=str).head(4)
    phone_col = next(c for c in health.columns if "电话" in c)
    health.loc[health.index[-1], phone_col] = "13900000001"  # one of four really changed
    health.to_csv(data / "health_again.csv", index=False)
    cfg = yaml.safe_load((data / "new.yaml").read_text(encoding="utf-8"))
    cfg["sources"]["health"]["path"] = "health_again.csv"
    (data / "again.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    with Store.open(store_path) as store:
        result = ingest(store, load_config(data / "again.yaml"))
    assert result.summary["new_records"] == 4  # records read, updates included
    assert result.summary["inserted_records"] == 0
    assert result.summary["updated_records"] == 4
    assert result.summary["unchanged_records"] == 3
    # only the really changed record makes a record_updated event
    ev = result.events[result.events["event"] == "record_updated"]
    assert len(ev) == 1 and ev["record_id"].iloc[0] in health.iloc[-1].tolist()
    assert ev["record_id"].iloc[0] not in health.iloc[:-1].to_numpy().ravel().tolist()


def test_ingest_without_a_model_exits_2(data, tmp_path):
    store_path = tmp_path / "empty.duckdb"
    Store.open(store_path).close()
    res = runner.invoke(app, ["ingest", str(data / "new.yaml"), "--store", str(store_path)])
    assert res.exit_code == 2
    assert "no model" in res.output
    res = runner.invoke(
        app, ["search", "--store", str(tmp_path / "missing.duckdb"), "--name", "张伟"]
    )
    assert res.exit_code == 2


def test_search_ranks_the_person_first_with_an_explanation(data, batch, tmp_path):
    store_path = tmp_path / "s.duckdb"
    result = batch(data / "run.yaml", store_path)
    records = result.records
    row = records[records[schema.ID_VALID].eq(True) & records[schema.NAME].notna()].iloc[0]
    expected = result.identities.set_index([schema.SOURCE, schema.RECORD_ID]).loc[
        (row[schema.SOURCE], row[schema.RECORD_ID]), schema.IDENTITY_ID
    ]
    query = {schema.NAME: row[schema.NAME], schema.ID_NUMBER: row[schema.ID_STD]}
    with Store.open(store_path) as store:
        hits = search(store, query, top=3)
    assert hits and hits[0]["identity_id"] == expected
    assert hits[0]["match_probability"] > 0.9
    comparisons = [e["comparison"] for e in hits[0]["explanation"]]
    assert "name" in comparisons and "id" in comparisons
    res = runner.invoke(
        app,
        [
            "search",
            "--store",
            str(store_path),
            "--name",
            str(row[schema.NAME]),
            "--id-number",
            str(row[schema.ID_STD]),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["identity_id"] == expected


@pytest.mark.parametrize("held", [False, True])
def test_search_weights_equal_the_batch_pair_weights(data, batch, tmp_path, held):
    """A stored record searched by its raw fields scores each hit's best record exactly as
    the batch scored that pair (same standardizing, comparisons, term frequencies, model),
    reading the store or its tables held in memory."""
    from linkage.incremental import hold_search_tables

    store_path = tmp_path / "s.duckdb"
    batch(data / "run.yaml", store_path)
    with Store.open(store_path) as store:
        if held:
            assert hold_search_tables(store)
        pairs = store.table("pairs")
        records = store.table("records")
        weights = {}
        for sl, rl, sr, rr, w in pairs[[*schema.PAIR_KEYS, schema.MATCH_WEIGHT]].itertuples(
            index=False
        ):
            weights[(sl, rl, sr, rr)] = weights[(sr, rr, sl, rl)] = w
        fields = [f for f in schema.MAPPABLE_FIELDS if f in records.columns]
        compared = 0
        for _, row in records.sample(60, random_state=2).iterrows():
            query = {f: row[f] for f in fields if pd.notna(row[f])}
            for hit in search(store, query, top=10):
                best = hit["best_record"]
                key = (row[schema.SOURCE], row[schema.RECORD_ID], best["source"], best["record_id"])
                if key in weights:
                    assert hit["match_weight"] == pytest.approx(weights[key], abs=1e-6), key
                    compared += 1
    assert compared >= 5


def test_search_with_nothing_in_common_returns_no_candidates(data, batch, tmp_path):
    store_path = tmp_path / "s.duckdb"
    batch(data / "run.yaml", store_path)
    with Store.open(store_path) as store:
        assert search(store, {schema.NAME: "龘靐齉", schema.BIRTH_DATE: "1900-01-01"}) == []


def test_single_record_keys_equal_the_table_keys(data, tmp_path):
    records = Linker.from_yaml(data / "run.yaml").standardize()
    settings = BlockingSettings()
    table = key_hashes(records, settings)
    by_row = table.groupby(schema.ROW)["h"].apply(set)
    for i in np.linspace(0, len(records) - 1, 300).astype(int):
        row = records.iloc[i].to_dict()
        expected = by_row.get(row[schema.ROW], set())
        assert set(record_key_hashes(row, settings)) == expected


def test_held_tables_give_the_point_reads_and_searches_of_the_store(data, batch, tmp_path):
    """The lookup service's in-memory tables read back exactly what DuckDB reads give."""
    from linkage.incremental import hold_search_tables, search_report
    from linkage.incremental.search import _GOLDEN_COLUMNS, _setup

    store_path = tmp_path / "s.duckdb"
    batch(data / "run.yaml", store_path)
    rng = np.random.default_rng(4)
    with Store.open(store_path, create=False, read_only=True) as store:
        records = store.table("records")
        golden = store.table("golden")
        hashes = store.con.execute("SELECT DISTINCT h FROM key_index").fetchnumpy()["h"]
        columns = _setup(store).columns
        queries = [
            {f: r[f] for f in (schema.NAME, schema.BIRTH_DATE, schema.PHONE) if pd.notna(r[f])}
            for r in records.sample(25, random_state=5).to_dict("records")
        ] + [{schema.NAME: records[schema.NAME].dropna().iloc[0]}, {schema.PHONE: "13800000000"}]
        reads = []
        for _ in range(15):
            rks = rng.choice(records["rk"].to_numpy(), size=int(rng.integers(1, 12)))
            rks = np.append(rks, 10**9)  # a row key no record has
            ids = list(rng.choice(golden[schema.IDENTITY_ID].to_numpy(), size=4)) + ["none"]
            hs = [int(h) for h in rng.choice(hashes, size=5)] + [12345]
            reads.append((rks, ids, hs))

        def read_all():
            out = []
            for rks, ids, hs in reads:
                out.append(store.candidates_by_rk(rks, columns))
                out.append(store.links_of_identities(ids))
                out.append(store.golden_for(ids, _GOLDEN_COLUMNS).sort_values(schema.IDENTITY_ID))
                out.append(store.rks_for_hashes(hs).sort_values(["h", "rk"], ignore_index=True))
            reports = [search_report(store, q, top=10) for q in queries]
            return out, [(r.hits, r.rules, r.fields, r.single_field, r.message) for r in reports]

        from_duckdb = read_all()
        # nothing held yet: no positions, no column
        assert store.held_golden_positions(["x"]) is None
        assert store.held_golden_column(schema.HUKOU_ADDRESS) is None
        assert store.held_record_columns(columns) is None
        assert store.held_record_positions(np.array([1])) is None
        default_limit = store.con.execute("SELECT current_setting('memory_limit')").fetchall()
        assert hold_search_tables(store)
        # DuckDB's cache of the copied tables was dropped and its memory limit is back
        assert store.con.execute("SELECT current_setting('memory_limit')").fetchall() == (
            default_limit
        )
        from_memory = read_all()
        for a, b in zip(from_duckdb[0], from_memory[0], strict=True):
            pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
        assert from_duckdb[1] == from_memory[1]
        assert sum(len(r[0]) for r in from_memory[1]) > 20  # searches found hits
        # a golden column by position: each identity's value as golden_rows reads it
        ids = [*golden[schema.IDENTITY_ID].sample(30, random_state=1), "none"]
        positions = store.held_golden_positions(ids)
        assert positions[-1] == -1 and (positions[:-1] >= 0).all()
        for column in (schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS, "records"):
            values = store.held_golden_column(column)
            assert len(values) == len(golden)
            by_id = {g[schema.IDENTITY_ID]: g[column] for g in store.golden_rows(ids, [column])}
            assert [values[p] for p in positions[:-1]] == [by_id[i] for i in ids[:-1]]
        assert store.held_golden_column("not_a_column") is None
        # every held record's columns, by position, as candidate_columns reads them
        every = store.held_record_columns(columns)
        rks = np.sort(records["rk"].to_numpy())
        read = store.candidate_columns(rks, columns)
        for column in every:
            pd.testing.assert_series_equal(pd.Series(every[column]), pd.Series(read[column]))
            assert every[column].dtype == read[column].dtype
        picked = np.append(rng.choice(rks, size=9), 10**9)
        positions = store.held_record_positions(picked)
        assert positions[-1] == -1 and (rks[positions[:-1]] == picked[:-1]).all()


@pytest.mark.parametrize("pivot", [30, 5])
def test_standardize_record_matches_the_table_standardizer(data, pivot):
    from linkage.config import StandardizeConfig
    from linkage.standardize.combine import standardize_record

    config = StandardizeConfig(two_digit_year_pivot=pivot)
    linker = Linker.from_yaml(data / "run.yaml")
    linker.config.standardize = config
    records = linker.standardize()
    from linkage.standardize.combine import standardize

    fields = [f for f in schema.MAPPABLE_FIELDS if f in records.columns]
    complete = {f: "1" for f in fields}
    table = standardize(pd.DataFrame([complete]), config)
    derived = [c for c in table.columns if c not in (schema.ROW, schema.QUALITY_FLAGS)]
    # a record with every field: both paths give the same column set
    assert set(standardize_record(complete, config).columns) == set(derived)
    for i in np.linspace(0, len(records) - 1, 25).astype(int):
        full = records.iloc[i]
        raw = {f: full[f] for f in fields if isinstance(full[f], str) and full[f] != ""}
        one = standardize_record(raw, config).iloc[0]
        # every column the table path derives from the fields given is there, and no other
        # (a field the record lacks adds no columns: comparisons read them as null)
        if len(raw) == len(fields):
            assert set(one.index) == set(derived), (i, set(derived) ^ set(one.index))
        assert set(one.index) <= set(derived)
        for col in one.index:
            a, b = one[col], full[col]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (i, col, a, b)


# messy values of every field, among them an ambiguous district the ID's region code decides
_MESSY = {
    schema.NAME: ["欧阳娜娜", " 张 伟 ", "買買提·艾力", "ZHANG Wei", "不详", "王小明（曾用名）", "x"],
    schema.FORMER_NAME: ["李四", "", "Li Si"],
    schema.ID_NUMBER: [
        "110105194912310021", "44030419851107123x", "110101900101001", "1.10105194912310e+17",
        "110105194912310000", "４４０３０４１９８５１１０７１２３Ｘ", "不详", "12345",
    ],
    schema.BIRTH_DATE: ["1949-12-31", "90年3月5日", "25-03-07", "2099-01-01", "19850230", "壹"],
    schema.REGISTERED_AT: ["2001-01-01", "2001.1.1", "昨天"],
    schema.GENDER: ["男", "F", "女性", "?"],
    schema.ETHNICITY: ["汉", "维吾尔族", "漢族人", "01", "火星族"],
    schema.PHONE: ["13800138000", "+86 138-0013-8000", "010-12345678", "0000000", "不详"],
    schema.HUKOU_ADDRESS: ["朝阳区建国路88号", "广东省深圳市龙岗区坂田街道", "火星基地", "北京市北京市"],
    schema.CURRENT_ADDRESS: ["新疆乌鲁木齐市天山区人民路5号", "东莞市长安镇", "县前街1号"],
}


def test_standardize_record_values_equal_the_one_row_table():
    import itertools

    from linkage.standardize.combine import (
        record_frame,
        standardize_record,
        standardize_record_values,
    )

    fields = list(_MESSY)
    n = max(len(v) for v in _MESSY.values())
    records = [
        {f: _MESSY[f][(i * (j + 1)) % len(_MESSY[f])] for j, f in enumerate(fields)}
        for i in range(3 * n)
    ]
    # the ambiguous district beside IDs of two different cities, and records of few fields
    records += [
        {schema.HUKOU_ADDRESS: "朝阳区建国路88号", schema.ID_NUMBER: i}
        for i in ("110105194912310021", "220104198001010012", "不详")
    ]
    records += [dict(itertools.islice(r.items(), k)) for k, r in enumerate(records[:8], 1)]
    for record in records:
        record = {k: v for k, v in record.items() if v}
        table_flags: dict = {}
        value_flags: dict = {}
        table = standardize_record(record, flags=table_flags)
        values = standardize_record_values(record, flags=value_flags)
        assert value_flags == table_flags, record
        row = table.iloc[0].to_dict()
        assert list(values) == list(row), record
        for col, expected in row.items():
            got = values[col]
            if pd.isna(expected):
                assert got is None or got is pd.NA, (record, col, got)
            else:
                assert got == expected and not pd.isna(got), (record, col, got, expected)
        frame = record_frame(values)
        assert list(frame.columns) == list(table.columns)
        for col in table.columns:
            # text as object, flags and booleans as their own dtypes
            if table[col].dtype == bool or str(table[col].dtype) == "boolean":
                assert frame[col].dtype == table[col].dtype, col


def test_standardize_record_honours_the_two_digit_year_pivot():
    from linkage.config import StandardizeConfig
    from linkage.standardize.combine import standardize_record

    for pivot, expected in ((30, "2025-03-07"), (20, "1925-03-07")):
        one = standardize_record(
            {schema.BIRTH_DATE: "25-03-07"}, StandardizeConfig(two_digit_year_pivot=pivot)
        )
        assert one[schema.BIRTH_DATE_STD].iloc[0] == expected, (pivot, one.iloc[0].to_dict())


def test_a_failed_ingest_changes_nothing_and_is_logged(data, batch, tmp_path, monkeypatch):
    store_path = tmp_path / "s.duckdb"
    batch(data / "old.yaml", store_path)
    with Store.open(store_path) as store:
        before = store.links()

        def crash(*_args, **_kwargs):
            raise RuntimeError("writer crashed")

        monkeypatch.setattr(store, "_pause", crash)
        with pytest.raises(RuntimeError):
            ingest(store, load_config(data / "new.yaml"))
        pd.testing.assert_frame_equal(store.links(), before)
        assert store.runs()["status"].tolist() == ["done", "failed"]


def test_ingest_and_search_use_the_stored_models_settings(data, batch, tmp_path):
    # the model document carries the resolved comparisons, blocking and standardize options
    store_path = tmp_path / "s.duckdb"
    batch(data / "old.yaml", store_path)
    with Store.open(store_path) as store:
        doc = store.model()
        assert doc["schema_version"] == 2
        settings = doc["settings"]
        assert [c["name"] for c in settings["comparisons"]] == list(doc["levels"])
        assert settings["blocking"]["rules"] and "two_digit_year_pivot" in settings["standardize"]
    # an ingest config writing other comparisons than the stored model's is refused
    cfg = yaml.safe_load((data / "new.yaml").read_text(encoding="utf-8"))
    cfg["comparisons"] = [{"type": "name"}, {"type": "id"}]
    other = tmp_path / "other.yaml"
    for entry in cfg["sources"].values():
        entry["path"] = str(data / entry["path"])
        entry["include"] = str(data / entry["include"])
    other.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    with Store.open(store_path) as store:
        with pytest.raises(ConfigError, match="comparisons") as refused:
            ingest(store, load_config(other))
    # like every config error, the message starts with the file it is about
    assert str(refused.value).startswith(f"{other}: key 'comparisons':")


def test_the_linker_runs_ingests_and_searches_a_store(data, tmp_path):
    # the Python API offers what the CLI does: Linker(config, store=...)
    store_path = tmp_path / "s.duckdb"
    batch = Linker.from_yaml(data / "old.yaml", store=store_path).run()
    plain = Linker.from_yaml(data / "old.yaml").run()
    # the first run on an empty store groups records as the plain batch does (the names
    # differ: the store keys identity ids with its own secret)
    keys = [schema.SOURCE, schema.RECORD_ID]
    assert batch.identities[keys].equals(plain.identities[keys])
    assert (
        pd.factorize(batch.identities[schema.IDENTITY_ID])[0].tolist()
        == pd.factorize(plain.identities[schema.IDENTITY_ID])[0].tolist()
    )
    with Store.open(store_path) as store:
        assert store.runs()["kind"].tolist() == ["batch"]
        assert store.counts()["records"] == len(batch.records)
    out = tmp_path / "delta"
    result = Linker.from_yaml(data / "new.yaml", store=store_path).ingest(output=out)
    written = pd.read_csv(out / "identities.csv", dtype=str)
    assert len(written) == len(result.identities) > 0
    assert (out / "events.csv").exists()
    row = batch.records.iloc[0]
    hits = Linker(store=store_path).search(
        {schema.NAME: row[schema.NAME], schema.ID_NUMBER: row[schema.ID_NUMBER]}, top=2
    )
    assert 1 <= len(hits) <= 2
    # a key that is no record field (a typo, dob for birth_date) is named, not silently dropped
    with pytest.warns(UserWarning, match=r"'dob'.*expected some of .*birth_date"):
        typo = Linker(store=store_path).search(
            {schema.NAME: row[schema.NAME], "dob": "1990-01-01"}, top=2
        )
    assert typo and all("identity_id" in hit for hit in typo)
    with pytest.raises(TypeError, match="run config"):
        Linker(store=store_path).run()


def test_search_report_explains_and_falls_back_to_one_selective_field(data, batch, tmp_path):
    from linkage.incremental import search_report

    batch(data / "run.yaml", tmp_path / "s.duckdb")
    with Store.open(tmp_path / "s.duckdb", create=False) as store:
        records = store.table("records").merge(store.links(), on=[schema.SOURCE, schema.RECORD_ID])
        counts = records["name_clean"].value_counts()
        # the name alone is looked up by its clean form and by its pinyin (homophones), so
        # a rare name is one alone in both
        pinyin = records["name_pinyin"].map(records["name_pinyin"].value_counts())
        lone = records[records["name_clean"].map(counts).eq(1) & pinyin.eq(1)]
        rare = lone["name_clean"].sort_values().iloc[0]
        owner = records.loc[records["name_clean"] == rare, schema.IDENTITY_ID].iloc[0]
        report = search_report(store, {schema.NAME: rare, "nmae": "x"})
        assert report.hits[0]["identity_id"] == owner
        assert report.single_field == {
            "field": schema.NAME, "records": 1, "limit": 200, "status": "searched"
        }  # fmt: skip
        assert report.ignored == ["nmae"] and "alone" in report.message
        by_rule = {r["rule"]: r for r in report.rules}
        assert by_rule["pinyin_name_birth_year"]["status"] == "missing_keys"
        assert schema.BIRTH_DATE in by_rule["pinyin_name_birth_year"]["fields"]
        # Han names have no minority head: given, yet no key
        assert by_rule["minority_head_birth_year"]["status"] in ("not_applicable", "missing_keys")
        # a common name alone is refused as too many to rank, and says so
        common = counts.index[0]
        limit = int(counts.iloc[0]) - 1
        report = search_report(store, {schema.NAME: common}, single_field_limit=limit)
        assert report.hits == [] and report.single_field["status"] == "too_common"
        assert f"more than {limit}" in report.message
        # an ID failing its checksum is reported, still searched (near misses compare)
        ident = records[schema.ID_NUMBER].dropna().iloc[0]
        bad = ident[:-1] + ("0" if ident[-1] != "0" else "1")
        report = search_report(store, {schema.ID_NUMBER: bad})
        codes = [f["code"] for f in report.fields[schema.ID_NUMBER]["flags"]]
        assert "id_checksum" in codes and report.fields[schema.ID_NUMBER]["usable"]
        # a Home Return Permit's number is read (usable, flagged as another document)
        report = search_report(store, {schema.ID_NUMBER: "h 0032 0071 01"})
        codes = [f["code"] for f in report.fields[schema.ID_NUMBER]["flags"]]
        assert codes == ["id_other_document"] and report.fields[schema.ID_NUMBER]["usable"]
        report = search_report(store, {schema.BIRTH_DATE: "not a date", schema.GENDER: "男"})
        assert report.fields[schema.BIRTH_DATE]["usable"] is False
        assert report.hits == [] and "gender alone cannot find a person" in report.message
        assert search_report(store, {}).message.startswith("the query has no record field")
        with pytest.raises(ValueError, match="top"):
            search_report(store, {schema.NAME: rare}, top=0)
        # search() is the report's hits
        assert search(store, {schema.NAME: rare}) == search_report(store, {schema.NAME: rare}).hits


def test_cli_search_says_why_an_answer_is_empty(data, batch, tmp_path):
    batch(data / "run.yaml", tmp_path / "s.duckdb")
    store = str(tmp_path / "s.duckdb")
    result = runner.invoke(app, ["search", "--store", store, "--gender", "男"])
    assert result.exit_code == 0
    assert "gender alone cannot find a person" in result.output
    assert "no candidate identities" in result.output
    result = runner.invoke(
        app, ["search", "--store", store, "--birth-date", "not a date", "--json"]
    )
    # a query none of whose values can be read is bad input: exit 2, saying why
    assert result.exit_code == 2 and "could be read" in result.output


def _corrupt(value: str, rng: np.random.Generator) -> str:
    """One character of a value replaced (a typed digit or character), or left alone."""
    if not value or rng.random() < 0.5:
        return value
    i = int(rng.integers(0, len(value)))
    pool = "0123456789" if value[i].isdigit() else "张王李刘陈杨黄赵周吴"
    return value[:i] + pool[int(rng.integers(0, len(pool)))] + value[i + 1 :]


@pytest.mark.parametrize("held", [False, True])
def test_frame_free_scoring_equals_the_batch_compare_and_score(data, batch, tmp_path, held):
    """Search's comparison levels, partial and total weights and probabilities (arrays, no
    frames) equal the batch path's (compare_pairs + score_pairs over the stacked frame and
    store_tf) exactly, on many random queries against many candidates each.

    The batch path runs once over every query's pairs (each query and its candidates one
    block of the stacked frame), as a batch run compares all its pairs in one call: a
    pair's levels and weights depend only on its two records and the stored term
    frequencies, so each query's rows equal those of a call over its own pairs alone."""
    from linkage.incremental import hold_search_tables
    from linkage.incremental._common import stack, store_tf
    from linkage.incremental.search import _setup, score_candidates
    from linkage.pipeline import compare_pairs, score_pairs
    from linkage.standardize.combine import record_frame, standardize_record_values

    store_path = tmp_path / "s.duckdb"
    batch(data / "run.yaml", store_path)
    rng = np.random.default_rng(11)
    with Store.open(store_path, create=False, read_only=True) as store:
        if held:
            assert hold_search_tables(store)
        setup = _setup(store)
        run = setup.run
        records = store.table("records")
        fields = [f for f in schema.MAPPABLE_FIELDS if f in records.columns]
        all_rks = records["rk"].to_numpy()
        searched, parts, left, right = [], [], [], []
        for row in records.sample(150, random_state=3).to_dict("records"):
            given = [f for f in fields if pd.notna(row[f]) and rng.random() < 0.7]
            raw = {f: _corrupt(str(row[f]), rng) for f in given}
            raw[schema.SOURCE] = raw[schema.RECORD_ID] = "__query__"
            std = standardize_record_values(raw, run.standardize)
            # the record itself, its relatives by row key, and random others
            rks = np.unique(np.append(rng.choice(all_rks, size=25), row["rk"]))
            searched.append(
                score_candidates(store, setup, std, store.candidate_columns(rks, setup.columns))
            )
            query = record_frame(std)
            cands = store.candidates_by_rk(rks, setup.columns)
            first = sum(len(p) for p in parts)  # the query's row in the stacked frame
            parts += [query[[c for c in query.columns if c in setup.wanted]], cands]
            left.append(np.full(len(cands), first, dtype=np.int64))
            right.append(np.arange(first + 1, first + 1 + len(cands), dtype=np.int64))
        combined = stack(parts)
        pairs = pd.DataFrame(
            {schema.ROW_L: np.concatenate(left), schema.ROW_R: np.concatenate(right)}
        )
        tf_rows = {
            n: store_tf(store, combined, combined.iloc[0:0], c)
            for n, c in run.term_frequency.items()
        }
        vectors, tf = compare_pairs(combined, pairs, run.comparisons, tf_rows)
        scored_batch = score_pairs(vectors, run.model, run.comparisons, tf)
        levels_seen = set()
        start = 0
        for (levels, scored), rows in zip(searched, left, strict=True):
            batch_rows = scored_batch.iloc[start : start + len(rows)]
            start += len(rows)
            for c in run.comparisons:
                expected = batch_rows[schema.GAMMA_PREFIX + c.name].to_numpy()
                np.testing.assert_array_equal(levels[c.name], expected)
                np.testing.assert_array_equal(
                    scored[schema.MW_PREFIX + c.name],
                    batch_rows[schema.MW_PREFIX + c.name].to_numpy(),
                )
                levels_seen |= {(c.name, int(v)) for v in expected}
            for column in (schema.MATCH_WEIGHT, schema.MATCH_PROBABILITY):
                np.testing.assert_array_equal(scored[column], batch_rows[column].to_numpy())
        assert start == len(scored_batch)
        # the queries reached null, disagreeing and agreeing levels of every comparison
        for c in run.comparisons:
            seen = {v for n, v in levels_seen if n == c.name}
            assert {-1, 0, len(c.levels) - 1} <= seen, (c.name, seen)


@pytest.mark.parametrize("held", [False, True])
def test_frame_free_point_reads_equal_the_frame_reads(data, batch, tmp_path, held):
    """candidate_columns, rk_hashes, golden_rows and link_rows give what candidates_by_rk,
    rks_for_hashes, golden_for and links_of_identities give, reading DuckDB or held tables."""
    from linkage.incremental import hold_search_tables
    from linkage.incremental.search import _GOLDEN_COLUMNS, _setup

    store_path = tmp_path / "s.duckdb"
    batch(data / "run.yaml", store_path)
    rng = np.random.default_rng(5)
    with Store.open(store_path, create=False, read_only=True) as store:
        if held:
            assert hold_search_tables(store)
        columns = _setup(store).columns
        rks_all = store.table("records")["rk"].to_numpy()
        ids_all = store.table("golden")[schema.IDENTITY_ID].to_numpy()
        hashes = store.con.execute("SELECT DISTINCT h FROM key_index").fetchnumpy()["h"]
        for _ in range(20):
            rks = np.append(rng.choice(rks_all, size=int(rng.integers(1, 30))), 10**9)
            frame = store.candidates_by_rk(rks, columns)
            arrays = store.candidate_columns(rks, columns)
            assert list(arrays) == list(frame.columns)
            for c in frame.columns:
                np.testing.assert_array_equal(arrays[c], frame[c].to_numpy())
                assert arrays[c].dtype == frame[c].to_numpy().dtype, c
            hs = [int(h) for h in rng.choice(hashes, size=5)] + [12345]
            found = store.rks_for_hashes(hs)
            h, rk = store.rk_hashes(hs)
            assert sorted(zip(h.tolist(), rk.tolist(), strict=True)) == sorted(
                zip(found["h"].tolist(), found["rk"].tolist(), strict=True)
            )
            ids = [str(i) for i in rng.choice(ids_all, size=4)] + ["none"]
            assert store.golden_rows(ids, _GOLDEN_COLUMNS) == (
                store.golden_for(ids, _GOLDEN_COLUMNS).to_dict("records")
            )
            links = store.links_of_identities(ids)
            assert store.link_rows(ids) == list(
                links[[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]].itertuples(
                    index=False, name=None
                )
            )


@pytest.mark.parametrize("dtype", ["str", object, "int64", "float64"])
def test_index_positions_equal_get_indexer(dtype):
    """The stored counts' positions of a lookup's values by get_loc equal get_indexer's, on
    text and number indexes, for nulls, absent values and values of other types."""
    import random

    from linkage.incremental.search import index_positions

    if dtype in ("int64", "float64"):
        base = list(range(0, 400, 3))
    else:
        base = [f"v{i}" for i in range(0, 400, 3)] + ["张伟", ""]
    index = pd.Index(base, dtype=dtype)
    pool = [*base[:50], "v1", "zz", None, float("nan"), pd.NA, 3, 3.0, "3", True, np.int64(6),
            np.str_("v3"), (1, 2)]  # fmt: skip
    rng = random.Random(3)
    found = 0
    for _ in range(300):
        values = np.empty(rng.randint(0, 30), dtype=object)
        for i in range(len(values)):
            values[i] = rng.choice(pool)
        expected = index.get_indexer(values)
        np.testing.assert_array_equal(index_positions(index, values), expected)
        found += int((expected >= 0).sum())
    assert found > 100


def test_ingest_does_not_say_default_comparisons_are_left_out(data, batch, tmp_path, caplog):
    # the health-only batch maps no ethnicity or hukou address; the store's model, which the
    # ingest uses, compares both: "default comparison(s) ... left out" was logged, untrue
    store_path = tmp_path / "s.duckdb"
    batch(data / "old.yaml", store_path)
    with caplog.at_level(logging.INFO, logger="linkage"):
        config = load_config(data / "new.yaml")
        with Store.open(store_path) as store:
            ingest(store, config)
            stored = FellegiSunterModel.from_dict(store.model()).comparisons
    assert {"ethnicity", "hukou_address"} <= set(stored)
    assert not [r for r in caplog.records if "left out" in r.getMessage()], caplog.text
    # a batch run of the same config still says it
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="linkage.config"):
        load_config(data / "new.yaml").comparison_specs()
    assert "ethnicity" in caplog.text and "left out" in caplog.text
