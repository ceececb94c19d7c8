"""Review queue, labels I/O, trade-off tables, suspect clusters and the labelling session."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import Linker, review, schema, synth
from linkage.errors import InputError


def _records(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            schema.ROW: np.arange(n),
            schema.SOURCE: ["police" if i % 2 else "health" for i in range(n)],
            schema.RECORD_ID: [f"R{i:03d}" for i in range(n)],
            schema.NAME: [
                ["张伟", "章伟", "李娜", "李纳", "王芳", "汪芳"][i % 6] for i in range(n)
            ],
        }
    )


def _pairs(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    w = np.array([r[2] for r in rows], dtype=float)
    return pd.DataFrame(
        {
            schema.ROW_L: [r[0] for r in rows],
            schema.ROW_R: [r[1] for r in rows],
            schema.MATCH_WEIGHT: w,
            schema.MATCH_PROBABILITY: 2**w / (1 + 2**w),
        }
    )


def test_review_queue_near_threshold_and_large_clusters():
    records = _records(10)
    # threshold 0.9 is weight log2(9) = 3.17
    pairs = _pairs([(0, 1, 3.0), (2, 3, 10.0), (4, 5, -8.0), (6, 7, 4.5), (7, 8, 12.0)])
    identities = records[[schema.SOURCE, schema.RECORD_ID]].assign(
        identity_id=["A", "A", "B", "B", "C", "D", "E", "E", "E", "F"]
    )
    queue = review.review_queue(
        pairs, records, identities, threshold=0.9, band=2.0, large_cluster=2
    )
    assert list(zip(queue[schema.ROW_L], queue[schema.ROW_R])) == [(0, 1), (6, 7), (7, 8)]
    assert list(queue["reason"]) == [
        "near_threshold",
        "near_threshold|large_cluster",
        "large_cluster",
    ]
    assert list(queue["cluster_size"]) == [2, 3, 3]
    assert queue["distance"].is_monotonic_increasing
    assert queue.loc[0, "source_l"] == "health" and queue.loc[0, "record_id_r"] == "R001"
    assert len(review.review_queue(pairs, records, threshold=0.9, band=2.0, limit=1)) == 1
    with pytest.raises(InputError):
        review.review_queue(pairs, records, threshold=1.0)


def test_review_queue_random_pairs_are_extra_and_seeded():
    records = _records(40)
    pairs = _pairs([(i, i + 1, float(i)) for i in range(39)])
    a = review.review_queue(pairs, records, threshold=0.5, band=1.0, random_pairs=5, seed=1)
    b = review.review_queue(pairs, records, threshold=0.5, band=1.0, random_pairs=5, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert (a["reason"] == "random").sum() == 5
    assert not a.duplicated([schema.ROW_L, schema.ROW_R]).any()


def test_normalize_labels_aliases_sides_and_last_wins():
    raw = pd.DataFrame(
        {
            "source_l": ["police", "health", "health"],
            "record_id_l": ["P1", "H1", "H1"],
            "source_r": ["health", "police", "police"],
            "record_id_r": ["H1", "P1", "P1"],
            "label": ["1", "No", "unsure"],
        }
    )
    out = review.normalize_labels(raw)
    assert len(out) == 1  # one pair, three spellings
    assert out.iloc[0].tolist() == ["health", "H1", "police", "P1", review.UNSURE]
    with pytest.raises(InputError, match="label"):
        review.normalize_labels(raw.assign(label="maybe"))
    with pytest.raises(InputError, match="lack"):
        review.normalize_labels(raw.drop(columns="label"))


def test_labels_file_round_trip_and_training_subset(tmp_path):
    path = tmp_path / "labels.csv"
    assert review.load_labels(path).empty
    labels = review.empty_labels()
    for i, value in enumerate([review.MATCH, review.NON_MATCH, review.UNSURE]):
        pair = {
            "source_l": "health",
            "record_id_l": f"H{i}",
            "source_r": "police",
            "record_id_r": "P",
        }
        labels = review.add_label(labels, pair, value)
    review.save_labels(labels, path)
    back = review.load_labels(path)
    pd.testing.assert_frame_equal(back, labels)
    assert list(review.training_labels(back)["label"]) == [review.MATCH, review.NON_MATCH]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["police", "health"]),
            st.text("甲乙丙0129", min_size=1, max_size=4),
            st.sampled_from(["police", "civil_affairs"]),
            st.text("丁戊X0123", min_size=1, max_size=4),
            st.sampled_from(["match", "non-match", "unsure", "1", "0", "TRUE"]),
        ),
        max_size=12,
    )
)
def test_labels_round_trip_property(tmp_path_factory, rows):
    raw = pd.DataFrame(rows, columns=review.LABEL_COLUMNS)
    labels = review.normalize_labels(raw) if len(raw) else review.empty_labels()
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    review.save_labels(labels, path)
    pd.testing.assert_frame_equal(review.load_labels(path), labels, check_dtype=False)
    assert set(labels["label"]) <= set(review.LABEL_VALUES)


def test_labels_from_truth_stand_in():
    pairs = pd.DataFrame(
        {
            "source_l": ["health", "health", "health"],
            "record_id_l": ["H1", "H2", "H9"],
            "source_r": ["police", "police", "police"],
            "record_id_r": ["P1", "P1", "P1"],
        }
    )
    truth = pd.DataFrame(
        {
            schema.SOURCE: ["health", "health", "police"],
            schema.RECORD_ID: ["H1", "H2", "P1"],
            schema.PERSON_ID: ["x", "y", "x"],
        }
    )
    assert list(review.labels_from_truth(pairs, truth)["label"]) == [
        review.MATCH,
        review.NON_MATCH,
        review.UNSURE,  # H9 unknown to the truth table
    ]


def test_labelled_tradeoff_counts():
    records = _records(8)
    pairs = _pairs([(0, 1, 5.0), (2, 3, 5.0), (4, 5, -5.0)])  # p = .97, .97, .03
    labels = pd.DataFrame(
        {
            "source_l": ["health", "health", "health", "health"],
            "record_id_l": ["R000", "R002", "R004", "R006"],
            "source_r": ["police", "police", "police", "police"],
            "record_id_r": ["R001", "R003", "R005", "R007"],
            "label": ["match", "non-match", "match", "match"],  # R006-R007 was never scored
        }
    )
    table = review.labelled_tradeoff(labels, pairs, records, thresholds=[0.5, 0.99])
    first = table.iloc[0]
    assert (first["tp"], first["fp"], first["fn"]) == (1, 1, 2)
    assert first["precision"] == 0.5 and first["recall"] == pytest.approx(1 / 3)
    assert table.iloc[1]["tp"] == 0 and np.isnan(table.iloc[1]["precision"])


def test_expected_tradeoff_known_values():
    probs = np.array([0.2, 0.6, 0.9, 0.99])
    pairs = pd.DataFrame({schema.MATCH_PROBABILITY: probs})
    table = review.expected_tradeoff(pairs, thresholds=[0.5, 0.95, 0.999])
    assert list(table["pairs_above"]) == [3, 1, 0]
    assert table.loc[0, "precision"] == pytest.approx((0.6 + 0.9 + 0.99) / 3)
    assert table.loc[0, "recall"] == pytest.approx(2.49 / 2.69)
    assert np.isnan(table.loc[2, "precision"]) and table.loc[2, "recall"] == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50))
def test_expected_recall_never_rises_with_threshold(probs):
    pairs = pd.DataFrame({schema.MATCH_PROBABILITY: probs})
    table = review.expected_tradeoff(pairs, thresholds=[0.1, 0.3, 0.5, 0.7, 0.9])
    recall = table["recall"].dropna().to_numpy()
    assert (np.diff(recall) <= 1e-12).all()
    assert table["precision"].dropna().between(0, 1 + 1e-12).all()


def _gamma_pairs(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """Scored pairs (rid_l, rid_r, name level, id level) at probability 0.99."""
    out = _pairs([(a, b, 7.0) for a, b, _, _ in rows])
    out["gamma_name"] = np.array([r[2] for r in rows], dtype=np.int8)
    out["gamma_id"] = np.array([r[3] for r in rows], dtype=np.int8)
    return out


def test_suspect_clusters_finds_two_people_not_one_with_a_typo():
    from linkage.compare import default_comparisons

    comparisons = default_comparisons()
    levels = {c.name: list(c.levels) for c in comparisons}
    exact, other = levels["name"].index("exact"), levels["name"].index("else")
    id_same, id_region = levels["id"].index("exact"), levels["id"].index("birth_region")
    records = _records(13)
    identities = records[[schema.SOURCE, schema.RECORD_ID]].assign(
        identity_id=["T"] * 4 + ["R"] * 4 + ["O"] * 3 + ["D"] * 2
    )
    pairs = _gamma_pairs(
        [
            # T: twins, two records each, names agree within and differ across, no IDs
            (0, 1, exact, -1), (2, 3, exact, -1), (0, 2, other, -1), (1, 3, other, -1),
            # R: a renamed person: two name groups, but the same ID number across them
            (4, 5, exact, -1), (6, 7, exact, -1), (4, 6, other, id_same), (5, 7, other, -1),
            # O: one record with a garbled name: a name group of one is no second person
            (8, 9, exact, id_same), (8, 10, other, -1), (9, 10, other, -1),
            # D: two records, different names and different ID numbers
            (11, 12, other, id_region),
        ]
    )  # fmt: skip
    golden = pd.DataFrame({"identity_id": ["O"], "conflicts": ["name=张伟|章伟"]})
    out = review.suspect_clusters(
        pairs, records, identities, golden, comparisons=comparisons
    ).set_index("identity_id")
    assert set(out.index) == {"T", "D"}
    assert out.loc["T", "reasons"] == "split_by_name" and out.loc["T", "name_groups"] == 2
    assert out.loc["D", "reasons"] == "ids_differ_across_names"
    weak = review.suspect_clusters(
        pairs, records, identities, golden, comparisons=comparisons, include_weak=True, large=3
    ).set_index("identity_id")
    assert weak.loc["O", "reasons"] == "conflicts"
    assert weak.loc["T", "reasons"] == "split_by_name|size_over_3"
    assert weak.loc["T", "suspicion"] > weak.loc["O", "suspicion"]
    # without the run's comparisons only weak signals can be given
    assert review.suspect_clusters(pairs, records, identities, golden).empty


def test_suspect_clusters_low_probability_is_weak():
    records = _records(3)
    identities = records[[schema.SOURCE, schema.RECORD_ID]].assign(identity_id="A")
    pairs = _pairs([(0, 1, 9.0), (1, 2, 9.0), (0, 2, -6.0)])
    out = review.suspect_clusters(pairs, records, identities, include_weak=True)
    assert out.loc[0, "reasons"] == "low_internal_probability"
    assert out.loc[0, "min_probability"] == pytest.approx(2**-6 / (1 + 2**-6))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    demo = synth.generate(200, seed=5, output=out)
    linker = Linker.from_yaml(demo.paths["config"])
    model = linker.config.model.model_copy(update={"u_sample_pairs": 20_000})
    linker = Linker(linker.config.model_copy(update={"model": model}))
    return linker, linker.run(), demo.truth


def test_side_by_side(small_run):
    _, result, _ = small_run
    pair = result.pairs.sort_values(schema.MATCH_WEIGHT).iloc[len(result.pairs) // 2]
    table = review.side_by_side(pair, result.records, result.model, result.comparisons)
    assert list(table["comparison"]) == [
        "record",
        *[c.name for c in result.comparisons],
        "prior",
        "total",
    ]
    assert table["weight"].iloc[-1] == pytest.approx(pair[schema.MATCH_WEIGHT])
    left = result.records.iloc[int(pair[schema.ROW_L])]
    assert table.loc[table["comparison"] == "name", "left"].iloc[0] == (left[schema.NAME] or "")


def test_fit_from_labels_keeps_u_and_prior(small_run):
    _, result, truth = small_run
    queue = review.review_queue(
        result.pairs, result.records, result.identities, limit=40, random_pairs=20
    )
    labels = review.labels_from_truth(queue, truth)
    assert set(labels["label"]) >= {review.MATCH, review.NON_MATCH}
    new = review.fit_from_labels(result.model, result.records, result.comparisons, labels)
    for name in new.comparisons:
        np.testing.assert_array_equal(new.u_[name], result.model.u_[name])
        assert new.m_[name].sum() == pytest.approx(1.0)
    assert new.lambda_ == result.model.lambda_
    assert any(not np.allclose(new.m_[n], result.model.m_[n]) for n in new.comparisons)
    only = review.fit_from_labels(
        result.model, result.records, result.comparisons, labels, prior_strength=1e12
    )
    for name in only.comparisons:  # an overwhelming prior keeps the old m
        np.testing.assert_allclose(only.m_[name], result.model.m_[name], rtol=1e-6)
    with pytest.raises(InputError):
        review.fit_from_labels(
            result.model, result.records, result.comparisons, labels.assign(label="match")
        )


def test_fit_from_labels_with_labels_alone_counts_the_matches(small_run):
    """prior_strength=0: m is the (Jeffreys-smoothed) level share among labelled matches,
    counted here independently from the comparison vectors."""
    from linkage.compare import compare

    _, result, truth = small_run
    queue = review.review_queue(result.pairs, result.records, limit=60, random_pairs=40)
    labels = review.labels_from_truth(queue, truth)
    new = review.fit_from_labels(
        result.model, result.records, result.comparisons, labels, prior_strength=0
    )
    rows = review.label_rows(review.training_labels(labels), result.records)
    matches = rows[rows["label"] == review.MATCH]
    vectors = compare(result.records, matches[[schema.ROW_L, schema.ROW_R]], result.comparisons)
    for c in result.comparisons:
        g = vectors[schema.GAMMA_PREFIX + c.name].to_numpy()
        counts = np.bincount(g[g >= 0], minlength=len(c.levels))
        expected = (counts + 0.5) / (counts.sum() + 0.5 * len(c.levels))
        np.testing.assert_allclose(new.m_[c.name], expected, rtol=1e-3, atol=1e-6)


def _write_config(linker, tmp_path, labels_path):
    import yaml

    data = linker.config.model_dump(mode="json")
    data["model"]["labels"] = str(labels_path)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_model_labels_in_config_is_the_same_refit_and_never_trains_unsure(small_run, tmp_path):
    """``model.labels`` and ``review.fit_from_labels`` read one vocabulary and run one refit:
    adding unsure pairs to the file changes nothing (before, they trained as non-matches)."""
    linker, result, truth = small_run
    queue = review.review_queue(result.pairs, result.records, limit=80, random_pairs=80)
    labels = review.labels_from_truth(queue, truth)
    sure = review.training_labels(labels)
    assert set(sure["label"]) == {review.MATCH, review.NON_MATCH}
    unsure = sure.head(25).assign(label="?")  # flip 25 labelled pairs to unsure
    clean_path, mixed_path = tmp_path / "sure.csv", tmp_path / "mixed.csv"
    review.save_labels(sure.iloc[25:], clean_path)
    pd.concat([sure.iloc[25:], unsure]).to_csv(mixed_path, index=False)
    clean = Linker.from_yaml(_write_config(linker, tmp_path, clean_path)).run().model
    mixed = Linker.from_yaml(_write_config(linker, tmp_path, mixed_path)).run().model
    for name in clean.comparisons:
        np.testing.assert_array_equal(clean.m_[name], mixed.m_[name])
        np.testing.assert_array_equal(clean.u_[name], mixed.u_[name])
    assert (
        clean.lambda_ == mixed.lambda_ == pytest.approx((sure.iloc[25:]["label"] == "match").mean())
    )
    assert clean.n_iter_ == 0
    direct = review.fit_from_labels(
        clean, result.records, result.comparisons, review.load_labels(mixed_path),
        keep_u=False, keep_prior=False, prior_strength=0,
    )  # fmt: skip
    for name in clean.comparisons:
        np.testing.assert_allclose(direct.m_[name], clean.m_[name])
        np.testing.assert_allclose(direct.u_[name], clean.u_[name])


def test_model_labels_with_an_unknown_label_names_the_file_and_line(small_run, tmp_path):
    linker, result, truth = small_run
    queue = review.review_queue(result.pairs, result.records, limit=10)
    labels = review.labels_from_truth(queue, truth)
    labels.loc[3, "label"] = "maybe"
    path = tmp_path / "labels.csv"
    labels.to_csv(path, index=False)
    with pytest.raises(InputError, match=r"labels\.csv.*5.*maybe|labels\.csv.*maybe"):
        Linker.from_yaml(_write_config(linker, tmp_path, path)).run()


def _session(result, path, **options):
    queue = review.review_queue(result.pairs, result.records, limit=6, band=50)
    return review.ReviewSession(
        queue, result.records, result.model, result.comparisons, path, **options
    )


def test_session_resumes_at_the_first_unlabelled_pair_and_undoes(small_run, tmp_path):
    _, result, _ = small_run
    path = tmp_path / "labels.csv"
    session = _session(result, path)
    assert session.position == 0
    session.label(review.MATCH)
    session.skip()
    session.label(review.NON_MATCH)
    assert session.position == 3 and session.reviewed == 2
    assert list(review.load_labels(path)["label"]) == [review.MATCH, review.NON_MATCH]
    # reopening resumes at the first pair without a label (the skipped one)
    again = _session(result, path)
    assert again.position == 1 and again.reviewed == 2
    again.label(review.UNSURE)
    assert again.position == 3  # the next pair without a label
    # undo takes the label back, in the file too, and shows that pair again
    assert again.undo() and again.position == 1
    assert len(review.load_labels(path)) == 2
    assert not again.undo()
    # relabelling a labelled pair and undoing restores the earlier label
    session.position = 0
    session.label(review.NON_MATCH)
    assert review.load_labels(path)["label"].tolist().count(review.NON_MATCH) == 2
    session.undo()
    assert sorted(review.load_labels(path)["label"]) == [review.MATCH, review.NON_MATCH]
    with pytest.raises(InputError, match="one of"):
        session.label("maybe")
    session.position = len(session.queue)
    with pytest.raises(InputError, match="finished"):
        session.label(review.MATCH)


def test_session_retrain_reranks_the_unlabelled_pairs(small_run, tmp_path):
    _, result, truth = small_run
    queue = review.review_queue(result.pairs, result.records, limit=None, band=50)
    queue = queue.sample(n=60, random_state=0)  # both matches and non-matches among the first 30
    session = review.ReviewSession(
        queue, result.records, result.model, result.comparisons, tmp_path / "labels.csv",
        pairs=result.pairs, identities=result.identities,
    )  # fmt: skip
    with pytest.raises(InputError):
        _session(result, tmp_path / "other.csv").retrain()
    answers = review.labels_from_truth(queue, truth)
    answer = dict(zip(map(tuple, answers[review.LABEL_COLUMNS[:4]].to_numpy()), answers["label"],
                      strict=True))  # fmt: skip
    keys = review.normalize_labels(queue[review.LABEL_COLUMNS[:4]].assign(label="unsure"))
    for k in map(tuple, keys[review.LABEL_COLUMNS[:4]].to_numpy()[:30]):
        session.label(answer[k])
    old_model = session.model
    new = session.retrain(band=50)
    assert session.model is new and new is not old_model
    assert session.position == 30 and session.reviewed == 30
    rest = session.queue.iloc[30:]
    assert len(rest) == 30
    # the rest is ordered by distance to the threshold under the new model, none labelled
    assert rest["distance"].is_monotonic_increasing
    assert session.queue_labels().iloc[30:].isna().all()
    rescored = review.rescore_pairs(result.pairs, old_model, new)
    by_pair = rescored.set_index([schema.ROW_L, schema.ROW_R])[schema.MATCH_WEIGHT]
    got = rest.set_index([schema.ROW_L, schema.ROW_R])[schema.MATCH_WEIGHT]
    np.testing.assert_allclose(got.to_numpy(), by_pair.reindex(got.index).to_numpy())


def test_rescore_pairs_matches_scoring_from_scratch(small_run):
    """Re-scoring under the same model reproduces the run's weights, tf adjustments included;
    under a refitted model it equals scoring the vectors with that model (no tf)."""
    _, result, truth = small_run
    same = review.rescore_pairs(result.pairs, result.model, result.model)
    np.testing.assert_allclose(same[schema.MATCH_WEIGHT], result.pairs[schema.MATCH_WEIGHT])
    labels = review.labels_from_truth(
        review.review_queue(result.pairs, result.records, limit=60, random_pairs=40), truth
    )
    new = review.fit_from_labels(result.model, result.records, result.comparisons, labels)
    again = review.rescore_pairs(result.pairs, result.model, new)
    fresh = new.score(result.pairs[[c for c in result.pairs if c.startswith("gamma_")]])
    tf_cols = [schema.MW_PREFIX + n for n in new.tf_columns]
    untouched = np.isclose(
        result.pairs[tf_cols].to_numpy(),
        result.model.score(result.pairs[[c for c in result.pairs if c.startswith("gamma_")]])[
            tf_cols
        ].to_numpy(),
    ).all(axis=1)
    np.testing.assert_allclose(
        again[schema.MATCH_WEIGHT].to_numpy()[untouched],
        fresh[schema.MATCH_WEIGHT].to_numpy()[untouched],
    )


def test_public_surface_of_review_is_pinned():
    assert review.__all__ == [
        "LABEL_COLUMNS",
        "LABEL_VALUES",
        "MATCH",
        "NON_MATCH",
        "UNSURE",
        "ReviewSession",
        "add_label",
        "best_threshold",
        "empty_labels",
        "expected_tradeoff",
        "fit_from_labels",
        "label_rows",
        "labelled_tradeoff",
        "labels_from_truth",
        "load_labels",
        "normalize_labels",
        "remove_label",
        "rescore_pairs",
        "review_queue",
        "save_labels",
        "side_by_side",
        "suspect_clusters",
        "threshold_weight",
        "training_labels",
    ]
    for name in review.__all__:
        assert getattr(review, name) is not None


def test_review_and_viz_import_without_chart_or_widget_libraries():
    """Charts and widgets load lazily: importing the modules pulls in none of them."""
    import subprocess
    import sys

    code = (
        "import sys, linkage.review, linkage.viz, linkage.pipeline\n"
        "heavy = {'altair', 'vl_convert', 'ipywidgets', 'matplotlib', 'IPython'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
