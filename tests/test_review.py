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


def test_suspect_clusters():
    records = _records(9)
    identities = records[[schema.SOURCE, schema.RECORD_ID]].assign(
        identity_id=["A", "A", "A", "B", "B", "C", "C", "C", "C"]
    )
    pairs = _pairs([(0, 1, 9.0), (1, 2, 9.0), (0, 2, -6.0), (3, 4, 9.0), (5, 6, 9.0), (7, 8, 9.0)])
    golden = pd.DataFrame(
        {"identity_id": ["A", "B", "C"], "conflicts": ["", "birth_date=1990-01-01|1991-01-01", ""]}
    )
    out = review.suspect_clusters(pairs, records, identities, golden, large=3).set_index(
        "identity_id"
    )
    assert out.loc["A", "reasons"] == "low_internal_probability"
    assert out.loc["B", "reasons"] == "conflicts"
    assert out.loc["C", "reasons"] == "size_over_3" and out.loc["C", "size"] == 4
    assert out.loc["A", "min_probability"] == pytest.approx(2**-6 / (1 + 2**-6))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    demo = synth.generate(200, seed=5, output=out)
    linker = Linker.from_yaml(demo.paths["config"])
    model = linker.config.model.model_copy(update={"u_sample_pairs": 20_000})
    linker = Linker(linker.config.model_copy(update={"model": model}))
    return linker, linker.run(), demo.truth


def test_side_by_side_and_waterfall(small_run):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
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
    ax = review.plot_waterfall(result.model, pair, title="t")
    assert len(ax.patches) == len(result.model.waterfall_data(pair))


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


def test_review_session_buttons_save_labels(small_run, tmp_path):
    pytest.importorskip("ipywidgets")
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    _, result, _ = small_run
    queue = review.review_queue(result.pairs, result.records, limit=5, band=50)
    path = tmp_path / "labels.csv"
    session = review.ReviewSession(queue, result.records, result.model, result.comparisons, path)
    session.widget()
    session.buttons[review.MATCH].click()
    session.buttons["skip"].click()
    session.buttons[review.NON_MATCH].click()
    assert session.position == 3
    saved = review.load_labels(path)
    assert list(saved["label"]) == [review.MATCH, review.NON_MATCH]
    assert len(saved) == 2
    # A new session over the same file picks the labels up.
    again = review.ReviewSession(queue, result.records, result.model, result.comparisons, path)
    assert len(again.labels) == 2
    session.position = len(queue)
    with pytest.raises(InputError, match="finished"):
        session.label(review.MATCH)
