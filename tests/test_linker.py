"""End-to-end batch merge on generated registries: accuracy, contract, determinism, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from linkage import Linker, schema
from linkage.evaluate import evaluate
from linkage.synth import generate

# Pinned minimum accuracy on planted duplicates (a drop below fails the suite).
MIN_PAIRWISE_F1 = 0.97


@pytest.fixture(scope="module")
def registries(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(1500, seed=7, output=out)
    return out


@pytest.fixture(scope="module")
def result(registries):
    return Linker.from_yaml(registries / "run.yaml").run()


def test_accuracy_on_planted_duplicates(registries, result):
    truth = pd.read_csv(registries / "truth.csv", dtype=str, keep_default_na=False)
    scores = evaluate(truth, result.identities)
    assert scores["pairwise"]["f1"] >= MIN_PAIRWISE_F1, scores
    assert scores["bcubed"]["f1"] >= MIN_PAIRWISE_F1, scores


def test_one_identity_per_input_record(registries, result):
    truth = pd.read_csv(registries / "truth.csv", dtype=str, keep_default_na=False)
    ids = result.identities
    assert list(ids.columns) == [schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]
    assert len(ids) == len(truth)
    assert not ids.duplicated([schema.SOURCE, schema.RECORD_ID]).any()
    assert ids[schema.IDENTITY_ID].notna().all()
    assert set(result.golden[schema.IDENTITY_ID]) == set(ids[schema.IDENTITY_ID])
    assert result.golden["records"].sum() == len(ids)


def test_explain_takes_a_row_and_refuses_a_bad_argument_in_one_line(result):
    pair = result.pairs[schema.MATCH_PROBABILITY].idxmax()
    expected = result.explain(pair)
    # a row of pairs_with_keys() (as viz.waterfall_chart takes), of pairs, found again when
    # its label is lost (a filtered, re-indexed table)
    keyed = result.pairs_with_keys()
    for row in (keyed.loc[pair], result.pairs.loc[pair], keyed.loc[pair].rename(None)):
        got = result.explain(row)
        pd.testing.assert_frame_equal(got, expected)
        assert got.attrs["records"] == expected.attrs["records"]
    # the record values a message must not show (the first records' cells, as text)
    cells = [*keyed.loc[pair].to_numpy(), *result.records.head(50).to_numpy().ravel()]
    values = {str(v) for v in cells} - {"nan", "None", "<NA>", "NaT"}
    for bad, error in (
        (max(result.pairs.index) + 1, KeyError),
        ("WJ0000542", KeyError),
        (keyed.iloc[:2], TypeError),
        (list(keyed.loc[pair]), TypeError),
        (keyed.loc[pair].drop([schema.ROW_L, schema.ROW_R]).rename("nope"), KeyError),
    ):
        with pytest.raises(error) as err:
            result.explain(bad)
        text = str(err.value)
        assert "\n" not in text and "label of result.pairs" in text, text
        assert not any(v in text for v in values if len(v) > 3), text


def test_no_runaway_clusters(result):
    sizes = result.cluster_sizes()
    assert sizes["size"].max() <= 20


def test_explanations_and_outputs(registries, result, tmp_path):
    pair = result.pairs[schema.MATCH_PROBABILITY].idxmax()
    explained = result.explain(pair)
    assert {"comparison", "level_name", "weight"} <= set(explained.columns)
    assert abs(explained["weight"].sum() - result.pairs.loc[pair, schema.MATCH_WEIGHT]) < 1e-6
    # the two records are named, in the header too
    row = result.pairs.loc[pair]
    names = [
        (str(result.records[schema.SOURCE].iloc[r]), str(result.records[schema.RECORD_ID].iloc[r]))
        for r in (int(row[schema.ROW_L]), int(row[schema.ROW_R]))
    ]
    assert explained.attrs["records"] == names
    assert f"{names[0][0]} {names[0][1]} ~ {names[1][0]} {names[1][1]}" in repr(explained)
    from linkage.linker import write_outputs

    paths = write_outputs(result, tmp_path, Linker.from_yaml(registries / "run.yaml").config)
    for name in (
        "identities.csv",
        "golden_records.csv",
        "pairs.parquet",
        "model.json",
        "summary.json",
    ):
        assert (tmp_path / name).exists(), name
    pairs = pd.read_parquet(paths["pairs"])
    assert {"source_l", "record_id_l", "source_r", "record_id_r", schema.MATCH_PROBABILITY} <= set(
        pairs.columns
    )


def test_saved_model_reproduces_scores(registries, result, tmp_path):
    path = result.model.save(tmp_path / "model.json")
    from linkage import FellegiSunterModel

    again = Linker.from_yaml(registries / "run.yaml")
    again.model = FellegiSunterModel.load(path)
    rerun = again.run()
    pd.testing.assert_frame_equal(rerun.identities, result.identities)


def test_same_inputs_in_any_row_order_give_same_identities(registries, result, tmp_path):
    for name in ("police.csv", "health.csv", "civil_affairs.csv"):
        src = registries / name
        raw = src.read_bytes()
        encoding = "gb18030" if name == "civil_affairs.csv" else "utf-8-sig"
        text = raw.decode(encoding)
        lines = text.splitlines()
        body = lines[1:][::-1]
        (tmp_path / name).write_bytes(("\n".join([lines[0], *body]) + "\n").encode(encoding))
    shutil.copytree(registries / "sources", tmp_path / "sources")
    shutil.copy(registries / "run.yaml", tmp_path / "run.yaml")
    shuffled = Linker.from_yaml(tmp_path / "run.yaml").run().identities
    key = [schema.SOURCE, schema.RECORD_ID]
    a = result.identities.sort_values(key).reset_index(drop=True)
    b = shuffled.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def _write_config(tmp_path: Path, sources: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}, allow_unicode=True), encoding="utf-8")
    return path


def test_bad_input_still_gives_every_record_an_identity(tmp_path):
    # a source with only a name (no field any ID/date/phone rule can use) and a source
    # whose mapped columns are all empty (a source with no data row at all is refused:
    # tests/test_bad_rows.py)
    (tmp_path / "names.csv").write_text("编号,姓名\n1,张伟\n2,張偉\n3,李娜\n", encoding="utf-8")
    (tmp_path / "blank.csv").write_text("编号,姓名,身份证\nb1,,\nb2,,\n", encoding="utf-8")
    path = _write_config(
        tmp_path,
        {
            "names": {"path": "names.csv", "record_id": "编号", "columns": {"姓名": "name"}},
            "blank": {
                "path": "blank.csv",
                "record_id": "编号",
                "columns": {"姓名": "name", "身份证": "id_number"},
            },
        },
    )
    result = Linker.from_yaml(path).run()
    ids = result.identities
    assert sorted(ids[schema.RECORD_ID]) == ["1", "2", "3", "b1", "b2"]
    assert ids[schema.IDENTITY_ID].notna().all()
    # without any corroborating field, a shared name alone never merges records
    assert ids[schema.IDENTITY_ID].nunique() == 5


def test_supervised_training_from_reviewed_pairs(registries, result, tmp_path):
    """An analyst's reviewed pairs (labels CSV) train the model instead of EM."""
    truth = pd.read_csv(registries / "truth.csv", dtype=str, keep_default_na=False)
    person = dict(zip(zip(truth[schema.SOURCE], truth[schema.RECORD_ID]), truth[schema.PERSON_ID]))
    pairs = result.pairs_with_keys().sample(n=min(3000, len(result.pairs)), random_state=0)
    labels = pd.DataFrame(
        {
            "source_l": pairs["source_l"],
            "record_id_l": pairs["record_id_l"],
            "source_r": pairs["source_r"],
            "record_id_r": pairs["record_id_r"],
            "label": [
                int(person[(a, b)] == person[(c, d)])
                for a, b, c, d in zip(
                    pairs["source_l"], pairs["record_id_l"], pairs["source_r"], pairs["record_id_r"]
                )
            ],
        }
    )
    assert 0 < labels["label"].mean() < 1
    labels.to_csv(tmp_path / "labels.csv", index=False)
    data = yaml.safe_load((registries / "run.yaml").read_text(encoding="utf-8"))
    for entry in data["sources"].values():
        entry["include"] = str(registries / entry["include"])
        entry["path"] = str(registries / entry["path"])
    data["model"] = {"labels": str(tmp_path / "labels.csv")}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    supervised = Linker.from_yaml(path).run()
    assert supervised.model.n_iter_ == 0  # no EM ran
    scores = evaluate(truth, supervised.identities)
    assert scores["pairwise"]["f1"] >= MIN_PAIRWISE_F1, scores


def test_write_to_a_file_path_is_an_input_error_before_running(tmp_path):
    from linkage.config import config_from_dict
    from linkage.errors import InputError

    (tmp_path / "a.csv").write_text("rid,name\nA1,张伟\n", encoding="utf-8")
    config = config_from_dict(
        {"sources": {"a": {"path": "a.csv", "record_id": "rid", "columns": {"name": "name"}}}},
        path=tmp_path / "run.yaml",
    )
    (tmp_path / "out").write_text("not a folder", encoding="utf-8")
    linker = Linker(config)
    with pytest.raises(InputError, match=r"out: output must be a folder"):
        linker.write(tmp_path / "out")
    assert linker.result_ is None  # refused before any work


def test_large_pairs_file_is_written_in_slices_and_reads_back_whole(tmp_path, monkeypatch):
    """pairs.parquet of more than PARQUET_ROWS_AT_ONCE scored pairs is keyed and written a
    slice at a time; it reads back as the keyed table of every kept pair, in order."""
    import numpy as np

    import linkage.io
    from linkage.linker import _write_keyed_pairs
    from linkage.tables import attach_keys

    monkeypatch.setattr(linkage.io, "PARQUET_ROWS_AT_ONCE", 7)
    rng = np.random.default_rng(3)
    records = pd.DataFrame(
        {
            schema.ROW: np.arange(30),
            schema.SOURCE: ["police", "health", "civil_affairs"] * 10,
            schema.RECORD_ID: [f"R{i:03d}" for i in range(30)],
        }
    )
    pairs = pd.DataFrame(
        {
            schema.ROW_L: rng.integers(0, 15, 50),
            schema.ROW_R: rng.integers(15, 30, 50),
            "gamma_name": rng.integers(-1, 4, 50).astype(np.int8),
            schema.MATCH_PROBABILITY: rng.random(50),
        }
    )
    keep = (pairs[schema.MATCH_PROBABILITY] >= 0.4).to_numpy().copy()
    keep[7:14] = False  # a slice with nothing kept
    path = _write_keyed_pairs(pairs, keep, records, tmp_path / "pairs.parquet")
    expected = attach_keys(pairs[keep], records).reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).metadata.num_row_groups == 8  # 50 pairs, 7 at a time


def test_a_pilot_too_small_to_train_is_warned_and_a_15_18_id_is_no_veto(tmp_path, caplog):
    # Three people in two registries, no 15-digit ID among them: a later batch's 15-digit
    # ID must still count for a match, not be vetoed by a level training never saw.
    (tmp_path / "police.csv").write_text(
        "编号,姓名,出生日期,身份证号\n"
        "p1,张伟,1990-03-07,110105199003071239\n"
        "p2,李娜,1985-12-12,440306198512124561\n"
        "p3,王芳,1978-01-01,320102197801016542\n",
        encoding="utf-8",
    )
    (tmp_path / "health.csv").write_text(
        "编号,姓名,出生日期,身份证号\n"
        "h1,张伟,1990-03-07,110105199003071239\n"
        "h2,李娜,1985-12-12,440306198512124561\n"
        "h3,王芳,1978-01-01,320102197801016542\n",
        encoding="utf-8",
    )
    columns = {"姓名": "name", "出生日期": "birth_date", "身份证号": "id_number"}
    path = _write_config(
        tmp_path,
        {
            s: {"path": f"{s}.csv", "record_id": "编号", "columns": columns}
            for s in ("police", "health")
        },
    )
    with caplog.at_level("WARNING", logger="linkage.training"):
        result = Linker.from_yaml(path).run()
    assert any("too few pairs" in r.getMessage() for r in caplog.records)
    levels = result.model.levels["id"]
    weight = result.model.weights_["id"][levels.index("same_person_15_18")]
    # without the prior on unseen levels it weighed about -15 bits: a veto of a true match
    assert weight > -3, f"a 15-to-18-digit ID match weighs {weight:.2f} bits on a pilot"
    # the weak fit travels with the model: a store built from it says so on every use
    assert result.model.to_dict()["fit"]["weak"] is True
    from linkage.model import FellegiSunterModel

    assert FellegiSunterModel.from_dict(result.model.to_dict()).weak_fit_ is True
    store = tmp_path / "s.duckdb"
    Linker.from_yaml(path, store=store).run()
    caplog.clear()
    with caplog.at_level("WARNING", logger="linkage.incremental"):
        Linker(store=store).search({"name": "张伟", "birth_date": "1990-03-07"})
    assert any("too few candidate pairs" in r.getMessage() for r in caplog.records)
