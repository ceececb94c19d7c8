"""Tests of linkage.evaluate against brute-force pair enumeration on small labelings."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app
from linkage.errors import InputError
from linkage.evaluate import (
    bcubed_scores,
    evaluate,
    evaluate_files,
    format_scores,
    pairwise_scores,
    recall_by_tag,
    recall_by_tag_files,
)

labelings = st.integers(min_value=0, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from(["张伟", "李娜", "王芳", 7, 8]), min_size=n, max_size=n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
    )
)


def brute_pairs(labels) -> set[tuple[int, int]]:
    return {
        (i, j) for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] == labels[j]
    }


@settings(max_examples=300, deadline=None)
@given(labelings)
def test_pairwise_scores_equal_brute_force(case):
    true, pred = case
    true_pairs, pred_pairs = brute_pairs(true), brute_pairs(pred)
    scores = pairwise_scores(true, pred)
    assert scores["true_pairs"] == len(true_pairs)
    assert scores["predicted_pairs"] == len(pred_pairs)
    assert scores["true_positive_pairs"] == len(true_pairs & pred_pairs)
    tp = len(true_pairs & pred_pairs)
    assert scores["precision"] == pytest.approx(tp / len(pred_pairs) if pred_pairs else 1.0)
    assert scores["recall"] == pytest.approx(tp / len(true_pairs) if true_pairs else 1.0)
    # Swapping truth and prediction swaps precision and recall.
    swapped = pairwise_scores(pred, true)
    assert swapped["precision"] == pytest.approx(scores["recall"])


@settings(max_examples=300, deadline=None)
@given(labelings)
def test_bcubed_equals_per_record_computation(case):
    true, pred = case
    n = len(true)
    precision = recall = 0.0
    for i in range(n):
        same_pred = [j for j in range(n) if pred[j] == pred[i]]
        same_true = [j for j in range(n) if true[j] == true[i]]
        both = len(set(same_pred) & set(same_true))
        precision += both / len(same_pred)
        recall += both / len(same_true)
    scores = bcubed_scores(pd.Series(true), np.asarray(pred))
    if n:
        assert scores["precision"] == pytest.approx(precision / n)
        assert scores["recall"] == pytest.approx(recall / n)
    p, r = scores["precision"], scores["recall"]
    assert scores["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)


def test_known_values():
    true = ["甲", "甲", "甲", "乙", "乙", "丙"]
    pred = [1, 1, 2, 2, 2, 3]
    scores = pairwise_scores(true, pred)
    # true pairs: 3 + 1 = 4; predicted: 1 + 3 = 4; shared: (0,1) and (3,4)
    assert (scores["true_pairs"], scores["predicted_pairs"], scores["true_positive_pairs"]) == (
        4,
        4,
        2,
    )
    assert scores["f1"] == pytest.approx(0.5)
    bcubed = bcubed_scores(true, pred)
    assert bcubed["precision"] == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3 + 1) / 6)
    assert bcubed["recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1 + 1) / 6)


def test_label_problems_raise_input_error():
    with pytest.raises(InputError, match="3 true labels but 2"):
        pairwise_scores([1, 1, 2], [1, 1])
    with pytest.raises(InputError, match="1 predicted labels are empty"):
        bcubed_scores([1, 1, 2], [1, None, 2])


# --- record tables -------------------------------------------------------------------------


def tables(n_people: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Truth: person k has k+1 records across registries; prediction splits the last one."""
    rows = []
    for person in range(n_people):
        for copy in range(person + 1):
            source = ["police", "health", "civil"][copy % 3]
            rows.append((source, f"{person:03d}{copy}", f"P{person}"))
    truth = pd.DataFrame(rows, columns=[schema.SOURCE, schema.RECORD_ID, schema.PERSON_ID])
    truth[schema.CORRUPTIONS] = ""
    predicted = truth[[schema.SOURCE, schema.RECORD_ID]].copy()
    predicted[schema.IDENTITY_ID] = truth[schema.PERSON_ID].str.replace("P", "I")
    last = truth[schema.PERSON_ID] == f"P{n_people - 1}"
    predicted.loc[last & (truth[schema.SOURCE] == "health"), schema.IDENTITY_ID] = "split"
    return truth, predicted


def test_evaluate_joins_on_source_and_record_id_in_any_order():
    truth, predicted = tables()
    result = evaluate(truth, predicted.sample(frac=1, random_state=3))
    assert result["records"] == 10
    assert result["true_persons"] == 4
    assert result["predicted_identities"] == 5
    # truth pairs 0+1+3+6 = 10; person 3 split 3+1 loses 3 of its 6 pairs
    assert result["pairwise"]["true_pairs"] == 10
    assert result["pairwise"]["true_positive_pairs"] == 7
    assert result["pairwise"]["precision"] == 1.0
    assert result["bcubed"]["precision"] == 1.0
    assert result["bcubed"]["recall"] < 1.0


def test_evaluate_matches_numeric_and_text_record_ids():
    truth, predicted = tables()
    truth[schema.RECORD_ID] = truth[schema.RECORD_ID].astype(int)
    predicted[schema.RECORD_ID] = predicted[schema.RECORD_ID].astype(int).astype(str)
    assert evaluate(truth, predicted)["records"] == 10


def test_evaluate_names_missing_and_extra_records():
    truth, predicted = tables()
    predicted = predicted.iloc[2:].copy()
    predicted.loc[len(predicted) + 100] = ["health", "9999", "I9"]
    with pytest.raises(InputError) as err:
        evaluate(truth, predicted)
    message = str(err.value)
    assert "2 truth records have no prediction" in message
    assert "police/0000" in message
    assert "1 predicted records are not in the truth" in message
    assert "health/9999" in message


def test_evaluate_rejects_repeated_keys_and_missing_columns():
    truth, predicted = tables()
    with pytest.raises(InputError, match="repeated"):
        evaluate(truth, pd.concat([predicted, predicted.head(1)]))
    with pytest.raises(InputError, match=schema.IDENTITY_ID):
        evaluate(truth, predicted.drop(columns=schema.IDENTITY_ID))
    unlabeled = truth.copy()
    unlabeled.loc[[1, 2], schema.PERSON_ID] = ["", None]
    with pytest.raises(InputError, match="2 empty values"):
        evaluate(unlabeled, predicted)


def test_evaluate_files_reads_text(tmp_path):
    truth, predicted = tables()
    # Record "10" differs from "0010" only while record ids are read as text.
    truth.loc[len(truth)] = ["police", "10", "P9", ""]
    predicted.loc[len(predicted)] = ["police", "10", "I9"]
    truth.to_csv(tmp_path / "truth.csv", index=False, encoding="utf-8-sig")
    predicted.to_csv(tmp_path / "identities.csv", index=False)
    result = evaluate_files(tmp_path / "truth.csv", tmp_path / "identities.csv")
    assert result == evaluate(truth, predicted)
    assert result["records"] == 11
    text = format_scores(result)
    assert "records 11" in text and "recall 0.7000" in text and "7 of 10 true pairs" in text
    table = recall_by_tag_files(tmp_path / "truth.csv", tmp_path / "identities.csv")
    assert table is not None and table.empty  # a corruptions column with no tags in it
    truth.drop(columns=schema.CORRUPTIONS).to_csv(tmp_path / "bare.csv", index=False)
    assert recall_by_tag_files(tmp_path / "bare.csv", tmp_path / "identities.csv") is None
    with pytest.raises(InputError, match="file not found"):
        evaluate_files(tmp_path / "missing.csv", tmp_path / "identities.csv")


# --- recall by tag ---------------------------------------------------------------------------


def test_recall_by_tag_known_values():
    truth, predicted = tables()
    # person 3 has records 0..3; tag its health record (split off) and one police record
    truth.loc[
        (truth[schema.PERSON_ID] == "P3") & (truth[schema.SOURCE] == "health"), schema.CORRUPTIONS
    ] = "homophone|id_typo"
    truth.loc[truth[schema.RECORD_ID] == "0010", schema.CORRUPTIONS] = "id_typo"
    out = recall_by_tag(truth, predicted).set_index("tag")
    # homophone: 1 record in a cluster of 4 -> 3 true pairs, all lost by the split
    assert out.loc["homophone"].to_dict() == {
        "records": 1,
        "true_pairs": 3,
        "found_pairs": 0,
        "recall": 0.0,
    }
    # id_typo: person 1's pair (found) plus the 3 pairs of person 3's health record
    assert out.loc["id_typo", "true_pairs"] == 4
    assert out.loc["id_typo", "found_pairs"] == 1
    assert list(out.columns) == ["records", "true_pairs", "found_pairs", "recall"]


tagged = st.integers(min_value=1, max_value=25).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.lists(st.integers(0, 5), min_size=n, max_size=n),
        st.lists(
            st.lists(st.sampled_from(["homophone", "lunar_date", "swap"]), max_size=3),
            min_size=n,
            max_size=n,
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(tagged)
def test_recall_by_tag_equals_brute_force(case):
    true, pred, tags = case
    n = len(true)
    truth = pd.DataFrame(
        {
            schema.SOURCE: "health",
            schema.RECORD_ID: [str(i) for i in range(n)],
            schema.PERSON_ID: true,
            schema.CORRUPTIONS: [" | ".join(t) for t in tags],
        }
    )
    predicted = pd.DataFrame(
        {
            schema.SOURCE: "health",
            schema.RECORD_ID: truth[schema.RECORD_ID],
            schema.IDENTITY_ID: pred,
        }
    )
    out = recall_by_tag(truth, predicted).set_index("tag")
    true_pairs, pred_pairs = brute_pairs(true), brute_pairs(pred)
    seen = sorted({t for ts in tags for t in ts})
    assert list(out.index) == seen
    for tag in seen:
        holders = {i for i in range(n) if tag in tags[i]}
        touching = {(i, j) for i, j in true_pairs if i in holders or j in holders}
        assert out.loc[tag, "records"] == len(holders)
        assert out.loc[tag, "true_pairs"] == len(touching)
        assert out.loc[tag, "found_pairs"] == len(touching & pred_pairs)
        if touching:
            assert out.loc[tag, "recall"] == pytest.approx(
                len(touching & pred_pairs) / len(touching)
            )
        else:
            assert np.isnan(out.loc[tag, "recall"])


# --- scale -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_three_million_records_score_fast():
    rng = np.random.default_rng(11)
    n = 3_000_000
    true = rng.integers(0, n // 3, n)
    pred = np.where(rng.random(n) < 0.9, true, rng.integers(0, n, n))
    start = time.perf_counter()
    pairwise = pairwise_scores(true, pred)
    pairwise_s = time.perf_counter() - start
    start = time.perf_counter()
    bcubed_scores(true, pred)
    bcubed_s = time.perf_counter() - start
    print(f"pairwise {pairwise_s:.2f}s, bcubed {bcubed_s:.2f}s on {n:,} records")
    assert 0.7 < pairwise["recall"] < 0.9
    assert pairwise_s < 2.0


def test_evaluate_file_errors_name_the_file(tmp_path):
    truth, predicted = tables()
    truth.to_csv(tmp_path / "truth.csv", index=False)
    predicted.drop(columns=schema.SOURCE).to_csv(tmp_path / "no_source.csv", index=False)
    with pytest.raises(InputError) as err:
        evaluate_files(tmp_path / "truth.csv", tmp_path / "no_source.csv")
    message = str(err.value)
    assert str(tmp_path / "no_source.csv") in message and "column 'source'" in message
    assert "it needs source, record_id, identity_id" in message
    predicted.iloc[2:].to_csv(tmp_path / "part.csv", index=False)
    with pytest.raises(InputError) as err:
        evaluate_files(tmp_path / "truth.csv", tmp_path / "part.csv")
    assert f"truth {tmp_path / 'truth.csv'}, predicted {tmp_path / 'part.csv'}" in str(err.value)


# --- predictions as Parquet: a file, or a Spark run's folder of part files ---------------------


@pytest.fixture(scope="module")
def spark_like(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Generated truth, and predictions that split one person in two written as a CSV and,
    as a Spark run writes identities.parquet, a folder of two part files (with _SUCCESS,
    checksum files and created_run) whose rows are in another order."""
    from linkage.synth import generate

    out = tmp_path_factory.mktemp("eval")
    truth_path = generate(120, seed=8, output=out / "d").paths["truth"]
    truth = pd.read_csv(truth_path, dtype=str, keep_default_na=False)
    predicted = truth[[schema.SOURCE, schema.RECORD_ID]].copy()
    predicted[schema.IDENTITY_ID] = "I" + truth[schema.PERSON_ID]
    big = truth[schema.PERSON_ID].value_counts().index[0]
    split = truth.index[truth[schema.PERSON_ID] == big][0]
    predicted.loc[split, schema.IDENTITY_ID] = "I-split"
    predicted.to_csv(out / "identities.csv", index=False)
    folder = out / "identities.parquet"
    folder.mkdir()
    shuffled = predicted.assign(created_run=1).sample(frac=1, random_state=0)
    half = len(shuffled) // 2
    shuffled.iloc[:half].to_parquet(folder / "part-00000-a.snappy.parquet", index=False)
    shuffled.iloc[half:].to_parquet(folder / "part-00001-a.snappy.parquet", index=False)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000-a.snappy.parquet.crc").write_bytes(b"not parquet")
    return truth_path, out / "identities.csv", folder


def test_evaluate_reads_a_spark_folder_of_parquet_parts(spark_like) -> None:
    truth, csv, folder = spark_like
    from_csv = evaluate_files(truth, csv)
    # the split person: every predicted pair is true, one true pair or more is missed
    assert from_csv["pairwise"]["precision"] == 1.0 and from_csv["pairwise"]["recall"] < 1.0
    assert evaluate_files(truth, folder) == from_csv
    assert recall_by_tag_files(truth, folder).equals(recall_by_tag_files(truth, csv))
    result = CliRunner().invoke(
        app, ["evaluate", "--truth", str(truth), "--pred", str(folder), "--json"]
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["records"] == len(pd.read_csv(truth)) == from_csv["records"]
    assert scores["pairwise"]["f1"] == round(from_csv["pairwise"]["f1"], 6)


def test_evaluate_by_tag_reads_each_file_once(spark_like, monkeypatch) -> None:
    """The scores and the recall per tag come from one reading of each file."""
    import linkage.evaluate as evaluation

    truth, csv, folder = spark_like
    read = []
    real = evaluation._read_table
    monkeypatch.setattr(evaluation, "_read_table", lambda p: read.append(p) or real(p))
    args = ["evaluate", "--truth", str(truth), "--pred", str(folder), "--json", "--by-tag"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read == [truth, folder]
    scores = json.loads(result.stdout)
    expected = recall_by_tag_files(truth, folder)
    assert len(expected) and [r["tag"] for r in scores["recall_by_tag"]] == list(expected["tag"])


def test_evaluate_reads_a_parquet_file(spark_like, tmp_path) -> None:
    truth, csv, _ = spark_like
    pd.read_csv(csv, dtype=str).to_parquet(tmp_path / "identities.parquet", index=False)
    assert evaluate_files(truth, tmp_path / "identities.parquet") == evaluate_files(truth, csv)


def _evaluate_cli(truth: Path, pred: Path):
    return CliRunner().invoke(app, ["evaluate", "--truth", str(truth), "--pred", str(pred)])


def test_evaluate_refuses_what_is_no_identities_table(spark_like, tmp_path) -> None:
    truth, csv, _ = spark_like
    expected = "expected a .csv file, a .parquet file or a folder of .parquet part files"
    not_parquet = tmp_path / "csvs"
    not_parquet.mkdir()
    (not_parquet / "identities.csv").write_bytes(csv.read_bytes())
    (tmp_path / "text.parquet").write_text("source,record_id\n", encoding="utf-8")
    lacking = tmp_path / "lacking.parquet"
    lacking.mkdir()
    pd.read_csv(csv, dtype=str).drop(columns=schema.IDENTITY_ID).to_parquet(
        lacking / "part-0.parquet", index=False
    )
    for pred, says in [
        (tmp_path / "missing" / "identities.parquet", f"file not found; {expected}"),
        (not_parquet, f"is a folder without Parquet part files; {expected}"),
        (tmp_path / "text.parquet", "not readable as Parquet"),
        (lacking, "column 'identity_id': predicted table lacks a required column"),
    ]:
        result = _evaluate_cli(truth, pred)
        assert result.exit_code == 2, (pred, result.output)
        assert "Traceback" not in result.output and "internal error" not in result.output
        assert f"error: {pred}" in result.output and says in result.output, result.output
    # a wrong --pred is named before the truth is read
    result = _evaluate_cli(tmp_path / "no-truth.csv", not_parquet)
    assert result.exit_code == 2 and f"error: {not_parquet}" in result.output
