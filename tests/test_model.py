"""Tests for the Fellegi–Sunter model on vectors simulated from known m, u and lambda."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.errors import InputError, NotFittedError
from linkage.model import FellegiSunterModel, match_probability
from linkage.schema import GAMMA_PREFIX, MATCH_PROBABILITY, MATCH_WEIGHT, MW_PREFIX, ROW_L, ROW_R

LEVELS = {
    "id": ["else", "two_digits", "one_digit", "exact"],
    "name": ["else", "lookalike", "fuzzy_pinyin", "pinyin", "exact"],
    "birth": ["else", "lunar_or_year", "exact"],
    "phone": ["else", "last8", "exact"],
}
TRUE_M = {
    "id": np.array([0.06, 0.02, 0.07, 0.85]),
    "name": np.array([0.04, 0.05, 0.06, 0.15, 0.70]),
    "birth": np.array([0.05, 0.10, 0.85]),
    "phone": np.array([0.35, 0.05, 0.60]),
}
TRUE_U = {
    "id": np.array([0.97, 0.015, 0.010, 0.005]),
    "name": np.array([0.80, 0.06, 0.07, 0.04, 0.03]),
    "birth": np.array([0.90, 0.06, 0.04]),
    "phone": np.array([0.85, 0.05, 0.10]),
}
TRUE_LAMBDA = 0.08


def simulate(
    n: int,
    lam: float = TRUE_LAMBDA,
    m: dict | None = None,
    u: dict | None = None,
    null_rate: float = 0.05,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Comparison vectors drawn from a two-class model with conditional independence."""
    m = TRUE_M if m is None else m
    u = TRUE_U if u is None else u
    rng = np.random.default_rng(seed)
    is_match = rng.random(n) < lam
    data: dict[str, np.ndarray] = {ROW_L: np.arange(n), ROW_R: np.arange(n) + n}
    for name in m:
        k = len(m[name])
        g = np.empty(n, dtype=np.int8)
        g[is_match] = rng.choice(k, size=int(is_match.sum()), p=m[name])
        g[~is_match] = rng.choice(k, size=int((~is_match).sum()), p=u[name])
        g[rng.random(n) < null_rate] = -1
        data[GAMMA_PREFIX + name] = g
    return pd.DataFrame(data), is_match.astype(np.int8)


def model_with_true_u(**kwargs) -> FellegiSunterModel:
    model = FellegiSunterModel(LEVELS, **kwargs)
    model.u_ = {k: v.copy() for k, v in TRUE_U.items()}
    return model


@pytest.fixture(scope="module")
def sim() -> tuple[pd.DataFrame, np.ndarray]:
    return simulate(200_000, seed=42)


@pytest.fixture(scope="module")
def fitted(sim) -> FellegiSunterModel:
    vectors, _ = sim
    return model_with_true_u(tf_columns={"name": 4}, settings={"run": "测试"}).fit(vectors)


def test_em_recovers_m_and_lambda_given_true_u(fitted):
    assert fitted.converged_
    assert abs(fitted.lambda_ - TRUE_LAMBDA) < 0.005
    for name in LEVELS:
        np.testing.assert_allclose(fitted.m_[name], TRUE_M[name], atol=0.02)
        np.testing.assert_array_equal(fitted.u_[name], TRUE_U[name])  # u stays fixed


def test_em_log_likelihood_never_decreases(fitted):
    h = np.array(fitted.history_)
    assert len(h) == fitted.n_iter_ >= 2
    assert (np.diff(h) >= -1e-6 * np.abs(h[:-1])).all()


def test_em_with_free_u_still_finds_lambda(sim):
    vectors, _ = sim
    model = FellegiSunterModel(LEVELS).fit(vectors, fix_u=False)
    assert abs(model.lambda_ - TRUE_LAMBDA) < 0.01
    np.testing.assert_allclose(model.m_["id"], TRUE_M["id"], atol=0.03)


def test_em_start_from_prior_converges_to_same_answer(sim, fitted):
    vectors, _ = sim
    other = model_with_true_u(prior=0.4).fit(vectors)
    assert abs(other.lambda_ - fitted.lambda_) < 1e-3


def test_fit_needs_u_when_u_is_fixed(sim):
    vectors, _ = sim
    with pytest.raises(NotFittedError, match="estimate_u"):
        FellegiSunterModel(LEVELS).fit(vectors)


def test_estimate_u_smooths_unobserved_near_miss_levels():
    # Random pairs: ID near misses and exact agreement never occur in 5,000 samples.
    u = dict(TRUE_U, id=np.array([1.0, 0.0, 0.0, 0.0]))
    vectors, _ = simulate(5_000, lam=0.0, u=u, null_rate=0.1, seed=1)
    assert (vectors[GAMMA_PREFIX + "id"].isin([-1, 0])).all()
    model = FellegiSunterModel(LEVELS).estimate_u(vectors)
    n = int((vectors[GAMMA_PREFIX + "id"] >= 0).sum())
    u_id = model.u_["id"]
    assert np.isclose(u_id.sum(), 1.0)
    assert (u_id[1:] > 0).all() and (u_id[1:] >= 1 / (2 * n) * (1 - 1e-12)).all()
    assert model.n_u_pairs_["id"] == n
    model.m_ = {k: v.copy() for k, v in TRUE_M.items()}
    model.lambda_ = 0.1
    w = model.weights_["id"]
    assert np.isfinite(w).all() and (w[1:] > 0).all()
    # Rarer in the sample is no reason for a near miss to outweigh exact agreement.
    assert w[3] > w[2] > 0


def test_a_disagreement_never_weighs_for_a_match():
    """A field every random pair agrees on (ethnicity in a registry of Han people): u of
    its ``else`` level comes from the smoothing floor, and EM's few disagreeing matches
    would give disagreement a positive weight. Fitted by EM, ``else`` weighs at most 0, m
    still sums to 1 and the other levels keep their proportions."""
    u = dict(TRUE_U, gender=np.array([0.0, 1.0]))  # random pairs always agree
    m = dict(TRUE_M, gender=np.array([0.02, 0.98]))  # a few data errors among matches
    levels = dict(LEVELS, gender=["else", "exact"])
    vectors, _ = simulate(20_000, m=m, u=u, seed=3)
    random, _ = simulate(5_000, lam=0.0, m=m, u=u, seed=4)
    for fit in ("fit", "fit_sessions"):
        model = FellegiSunterModel(levels).estimate_u(random)
        assert model.u_["gender"][0] < 1e-3
        if fit == "fit":
            model.fit(vectors)
        else:
            model.fit_sessions(vectors, [{"id": 3}])
        for name, w in model.weights_.items():
            assert w[0] <= 1e-9, (fit, name, w)
            assert np.isclose(model.m_[name].sum(), 1.0)
        assert model.weights_["gender"][0] == pytest.approx(0.0, abs=1e-9)
    # where u sees disagreements, EM's m is left as estimated
    model = model_with_true_u().fit(simulate(20_000, seed=5)[0])
    assert all(w[0] < -1 for w in model.weights_.values())


def test_estimate_u_respects_explicit_floor():
    vectors, _ = simulate(5_000, lam=0.0, u=dict(TRUE_U, id=np.array([1.0, 0, 0, 0])), seed=2)
    model = FellegiSunterModel(LEVELS, u_floor=1e-3).estimate_u(vectors)
    assert (model.u_["id"] >= 1e-3 - 1e-15).all()
    assert np.isclose(model.u_["id"].sum(), 1.0)


def test_estimate_u_close_to_truth_on_large_sample():
    vectors, _ = simulate(100_000, lam=0.0, null_rate=0.0, seed=3)
    model = FellegiSunterModel(LEVELS).estimate_u(vectors)
    for name in LEVELS:
        np.testing.assert_allclose(model.u_[name], TRUE_U[name], atol=0.005)


def test_estimate_prior_from_exact_id_rule(sim):
    vectors, _ = sim
    model = model_with_true_u()
    # Exact ID agreement catches 85% of matches; non-matches at that level are 0.5%.
    model.estimate_prior(vectors, {"id": 3}, recall=TRUE_M["id"][3] * 0.95)
    expected = (TRUE_LAMBDA * 0.85 + (1 - TRUE_LAMBDA) * 0.005) * 0.95 / (0.85 * 0.95)
    assert abs(model.lambda_estimate_ - expected) < 0.01
    with pytest.raises(ValueError):
        model.estimate_prior(vectors, {"nope": 1})


def test_fit_supervised_recovers_parameters(sim):
    vectors, labels = sim
    model = FellegiSunterModel(LEVELS).fit_supervised(vectors, labels)
    assert model.lambda_ == pytest.approx(labels.mean())
    for name in LEVELS:
        np.testing.assert_allclose(model.m_[name], TRUE_M[name], atol=0.015)
        np.testing.assert_allclose(model.u_[name], TRUE_U[name], atol=0.005)
    with_prior = FellegiSunterModel(LEVELS, prior=0.01).fit_supervised(vectors, labels)
    assert with_prior.lambda_ == 0.01


def test_fit_supervised_rejects_bad_labels(sim):
    vectors, labels = sim
    with pytest.raises(InputError):
        FellegiSunterModel(LEVELS).fit_supervised(vectors, labels[:-1])
    with pytest.raises(InputError):
        FellegiSunterModel(LEVELS).fit_supervised(vectors, np.zeros(len(vectors)))


def test_unfitted_model_raises_not_fitted():
    model = FellegiSunterModel(LEVELS)
    vectors, _ = simulate(10, seed=4)
    with pytest.raises(NotFittedError):
        model.score(vectors)
    with pytest.raises(NotFittedError):
        model.parameters_table()
    with pytest.raises(NotFittedError):
        model.save("unused.json")


def test_score_adds_weights_and_probabilities(fitted, sim):
    vectors, labels = sim
    scored = fitted.score(vectors.iloc[:1000])
    mw_cols = [MW_PREFIX + n for n in LEVELS]
    assert list(scored.columns) == list(vectors.columns) + mw_cols + [
        MATCH_WEIGHT,
        MATCH_PROBABILITY,
    ]
    pd.testing.assert_frame_equal(scored[vectors.columns], vectors.iloc[:1000])
    total = scored[mw_cols].sum(axis=1) + fitted.prior_weight_
    np.testing.assert_allclose(scored[MATCH_WEIGHT], total)
    w = fitted.weights_
    row = scored.iloc[0]
    for n in LEVELS:
        level = int(row[GAMMA_PREFIX + n])
        expected = 0.0 if level < 0 else w[n][level]
        assert row[MW_PREFIX + n] == pytest.approx(expected)
    # The result owns its columns: editing it leaves the input alone.
    before = vectors[GAMMA_PREFIX + "id"].iloc[0]
    scored.loc[0, GAMMA_PREFIX + "id"] = 2 if before != 2 else 1
    assert vectors[GAMMA_PREFIX + "id"].iloc[0] == before
    # Scores separate the simulated classes.
    s = fitted.score(vectors)
    assert s.loc[labels == 1, MATCH_PROBABILITY].mean() > 0.9
    assert s.loc[labels == 0, MATCH_PROBABILITY].mean() < 0.05


def test_null_level_contributes_zero(fitted):
    vectors = pd.DataFrame(
        {
            ROW_L: [0, 0],
            ROW_R: [1, 2],
            GAMMA_PREFIX + "id": np.array([-1, 3], dtype=np.int8),
            GAMMA_PREFIX + "name": np.array([-1, -1], dtype=np.int8),
            GAMMA_PREFIX + "birth": np.array([2, 2], dtype=np.int8),
            GAMMA_PREFIX + "phone": np.array([-1, -1], dtype=np.int8),
        }
    )
    scored = fitted.score(vectors)
    assert (scored[MW_PREFIX + "name"] == 0).all() and scored[MW_PREFIX + "id"].iloc[0] == 0
    assert scored[MATCH_WEIGHT].iloc[0] == pytest.approx(
        fitted.prior_weight_ + fitted.weights_["birth"][2]
    )
    # A nullable column with <NA> reads as the null level too.
    nullable = vectors.astype({GAMMA_PREFIX + "id": "Int8"})
    nullable.loc[0, GAMMA_PREFIX + "id"] = pd.NA
    pd.testing.assert_series_equal(
        fitted.score(nullable)[MATCH_WEIGHT], scored[MATCH_WEIGHT], check_exact=True
    )


def test_score_rejects_out_of_range_levels_and_missing_columns(fitted, sim):
    vectors, _ = sim
    bad = vectors.iloc[:5].copy()
    bad[GAMMA_PREFIX + "birth"] = np.int8(3)
    with pytest.raises(InputError, match="gamma_birth"):
        fitted.score(bad)
    with pytest.raises(InputError, match="gamma_phone"):
        fitted.score(vectors.drop(columns=[GAMMA_PREFIX + "phone"]))


def test_score_levels_equals_score_on_the_same_levels(fitted, sim):
    """The frame-free scoring of a lookup gives score's numbers, tf levels included, and
    refuses what score refuses."""
    vectors, _ = sim
    part = vectors.iloc[:500]
    levels = {n: part[GAMMA_PREFIX + n].to_numpy() for n in LEVELS}
    rng = np.random.default_rng(3)
    assert fitted.tf_columns  # the name's exact level is tf-adjusted
    tf = {n: rng.uniform(1e-6, 0.05, len(part)) for n in fitted.tf_columns}
    tf["name"][::7] = np.nan  # an unknown frequency keeps the level's weight
    scored = fitted.score(part, tf=tf)
    arrays = fitted.score_levels(levels, tf=tf)
    for column in [*(MW_PREFIX + n for n in LEVELS), MATCH_WEIGHT, MATCH_PROBABILITY]:
        np.testing.assert_array_equal(arrays[column], scored[column].to_numpy())
    with pytest.raises(InputError, match="gamma_birth"):
        fitted.score_levels({**levels, "birth": np.full(len(part), 3, np.int8)})
    with pytest.raises(InputError, match="gamma_phone"):
        fitted.score_levels({n: v for n, v in levels.items() if n != "phone"})


def test_tf_adjustment_weakens_common_names(fitted):
    exact = np.int8(4)
    vectors = pd.DataFrame(
        {
            ROW_L: [0, 2, 4],
            ROW_R: [1, 3, 5],
            GAMMA_PREFIX + "id": np.array([-1, -1, -1], dtype=np.int8),
            GAMMA_PREFIX + "name": np.array([exact, exact, exact], dtype=np.int8),
            GAMMA_PREFIX + "birth": np.array([2, 2, 2], dtype=np.int8),
            GAMMA_PREFIX + "phone": np.array([-1, -1, -1], dtype=np.int8),
        }
    )
    # 张伟 is shared by 8 in 100 records here (above u = 0.03 of the exact level);
    # 欧阳婧璇 by 1 in a million; the third pair's frequency is unknown.
    tf = {"name": np.array([0.08, 1e-6, np.nan])}
    scored = fitted.score(vectors, tf=tf)
    mw = scored[MW_PREFIX + "name"].to_numpy()
    assert mw[0] < fitted.weights_["name"][4] < mw[1]
    assert mw[2] == fitted.weights_["name"][4]
    assert mw[0] == pytest.approx(np.log2(fitted.m_["name"][4] / 0.08))
    # A zero frequency is clamped to the floor, never an infinite weight.
    zero = fitted.score(vectors, tf={"name": np.zeros(3)})
    assert np.isfinite(zero[MATCH_WEIGHT]).all()
    with pytest.raises(InputError):
        fitted.score(vectors, tf={"birth": np.zeros(3)})


def test_explain_and_waterfall_match_the_score(fitted, sim):
    vectors, _ = sim
    pair = vectors.iloc[[7]]
    tf = {"name": np.array([0.004])}
    scored = fitted.score(pair, tf=tf)
    ex = fitted.explain(scored)
    assert list(ex["comparison"]) == [*LEVELS, "prior"]
    assert ex["weight"].sum() == pytest.approx(scored[MATCH_WEIGHT].iloc[0])
    name_row = ex.set_index("comparison").loc["name"]
    assert bool(name_row["tf_adjusted"]) == (pair[GAMMA_PREFIX + "name"].iloc[0] == 4)
    wf = fitted.waterfall_data(scored.iloc[0])
    assert wf["step"].iloc[0] == "prior" and wf["step"].iloc[-1] == "total"
    assert wf["end"].iloc[-1] == pytest.approx(scored[MATCH_WEIGHT].iloc[0])
    assert wf["probability"].iloc[-1] == pytest.approx(scored[MATCH_PROBABILITY].iloc[0])
    # A bare {name: level} vector with a tf value explains the same way.
    ex2 = fitted.explain({"id": 3, "name": 4, "birth": -1, "phone": 0}, tf={"name": 0.004})
    assert ex2.set_index("comparison").loc["name", "tf_adjusted"]
    assert ex2.set_index("comparison").loc["birth", "weight"] == 0.0
    assert ex2.set_index("comparison").loc["id", "level_name"] == "exact"


def test_parameters_table(fitted):
    table = fitted.parameters_table()
    assert len(table) == sum(len(v) for v in LEVELS.values())
    assert list(table.columns) == ["comparison", "level", "level_name", "m", "u", "weight"]
    np.testing.assert_allclose(table["weight"], np.log2(table["m"] / table["u"]))
    assert table.groupby("comparison")["m"].sum().round(9).eq(1).all()


def test_save_load_round_trip_gives_identical_scores(fitted, sim, tmp_path):
    vectors, _ = sim
    path = fitted.save(tmp_path / "模型" / "model.json")
    assert [p.name for p in path.parent.iterdir()] == ["model.json"]  # no temp file left
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["schema_version"] == 2 and doc["settings"] == {"run": "测试"}
    loaded = FellegiSunterModel.load(path)
    tf = {"name": np.random.default_rng(5).random(len(vectors)) / 100}
    pd.testing.assert_frame_equal(loaded.score(vectors, tf=tf), fitted.score(vectors, tf=tf))
    assert loaded.tf_columns == {"name": 4} and loaded.levels == fitted.levels
    assert loaded.to_dict() == fitted.to_dict()


def test_load_refuses_other_schema_version(fitted, tmp_path):
    doc = fitted.to_dict()
    doc["schema_version"] = 3
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputError, match="schema_version 3"):
        FellegiSunterModel.load(path)
    doc["schema_version"] = 1
    del doc["m"]
    with pytest.raises(InputError, match="malformed"):
        FellegiSunterModel.from_dict(doc)


def test_constructor_rejects_bad_settings():
    with pytest.raises(ValueError):
        FellegiSunterModel({"id": ["else"]})
    with pytest.raises(ValueError):
        FellegiSunterModel(LEVELS, tf_columns={"name": 0})
    with pytest.raises(ValueError):
        FellegiSunterModel(LEVELS, prior=1.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-200, 200), min_size=1, max_size=50))
def test_probability_monotone_and_finite(weights):
    w = np.sort(np.array(weights))
    p = match_probability(w)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p) >= 0).all()
    np.testing.assert_allclose(p + match_probability(-w), 1.0, atol=1e-12)


def test_probability_extremes():
    p = match_probability(np.array([-np.inf, -5000.0, 0.0, 5000.0, np.inf]))
    np.testing.assert_array_equal(p, [0.0, 0.0, 0.5, 1.0, 1.0])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-1, 3), st.integers(-1, 4), st.integers(-1, 2), st.integers(-1, 2)),
        min_size=1,
        max_size=200,
    )
)
def test_pattern_grouping_matches_numpy_unique(rows):
    gamma = np.array(rows, dtype=np.int8)
    patterns, counts = FellegiSunterModel(LEVELS)._patterns(gamma)
    expected, expected_counts = np.unique(gamma, axis=0, return_counts=True)
    np.testing.assert_array_equal(patterns, expected)
    np.testing.assert_array_equal(counts, expected_counts)


@pytest.mark.slow
def test_scale_fit_and_score_10m_pairs_8_comparisons():
    """Fit and score 10,000,000 pairs x 8 comparisons (target: each under 10 s)."""
    n = 10_000_000
    levels = {f"{k}{i}": v for i in (1, 2) for k, v in LEVELS.items()}
    m = {f"{k}{i}": v for i in (1, 2) for k, v in TRUE_M.items()}
    u = {f"{k}{i}": v for i in (1, 2) for k, v in TRUE_U.items()}
    vectors, _ = simulate(n, m=m, u=u, seed=9)
    model = FellegiSunterModel(levels)
    model.u_ = u
    t0 = time.perf_counter()
    model.fit(vectors)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    scored = model.score(vectors)
    t_score = time.perf_counter() - t0
    print(f"fit {t_fit:.2f} s ({model.n_iter_} iterations), score {t_score:.2f} s")
    assert len(scored) == n and abs(model.lambda_ - TRUE_LAMBDA) < 0.002
    assert t_fit < 10 and t_score < 10


# ----------------------------------------------------------------------------- saved models

MODELS = Path(__file__).resolve().parent / "data" / "models"


def test_schema_1_model_file_still_loads_and_scores_the_same():
    # v1.json was saved by the release before schema version 2 (trained on a generated
    # population); v1_scores.csv holds the weights that release gave these vectors
    model = FellegiSunterModel.load(MODELS / "v1.json")
    table = pd.read_csv(MODELS / "v1_scores.csv")
    vectors = table[[c for c in table.columns if c.startswith(GAMMA_PREFIX)]].astype(np.int8)
    tf = {c.removeprefix("tf_"): table[c].to_numpy() for c in table.columns if c.startswith("tf_")}
    scored = model.score(vectors, tf=tf)
    np.testing.assert_allclose(scored[MATCH_WEIGHT], table[MATCH_WEIGHT], rtol=1e-12)
    # saving writes the current schema version, and that file reads back to the same scores
    again = FellegiSunterModel.from_dict(model.to_dict())
    assert model.to_dict()["schema_version"] == 2
    np.testing.assert_allclose(again.score(vectors, tf=tf)[MATCH_WEIGHT], table[MATCH_WEIGHT])


def test_unknown_model_schema_version_is_refused():
    doc = json.loads((MODELS / "v1.json").read_text(encoding="utf-8"))
    doc["schema_version"] = 99
    with pytest.raises(InputError, match="schema_version 99"):
        FellegiSunterModel.from_dict(doc)


def test_fit_sessions_estimates_the_random_pair_prior_itself(sim):
    vectors, _ = sim
    model = model_with_true_u()
    rules = [{"id": 3}]
    model.fit_sessions(vectors, [{"id": 3}], prior_rules=rules, n_records=10_000)
    hits = int((vectors["gamma_id"].to_numpy() >= 3).sum())
    expected = hits / (10_000 * 9_999 / 2)
    assert model.probability_two_random_records_match_ == pytest.approx(expected)
    assert model.lambda_ == model.probability_two_random_records_match_
    # a set prior wins over the estimate
    fixed = model_with_true_u(prior=0.01).fit_sessions(
        vectors, [{"id": 3}], prior_rules=rules, n_records=10_000
    )
    assert fixed.lambda_ == 0.01


def test_fit_takes_random_pairs_itself(sim):
    vectors, _ = sim
    with pytest.raises(NotFittedError, match="random="):
        FellegiSunterModel(LEVELS).fit(vectors)
    # u from the same random sample, passed in or estimated first: the same model
    random = vectors.sample(frac=0.5, random_state=0)
    a = FellegiSunterModel(LEVELS).fit(vectors, random=random)
    b = FellegiSunterModel(LEVELS).estimate_u(random).fit(vectors)
    assert a.lambda_ == b.lambda_
    for name in LEVELS:
        np.testing.assert_array_equal(a.m_[name], b.m_[name])


def test_fit_sessions_recovers_planted_m_of_the_other_comparisons(sim):
    # pairs with an exact ID are ~94% matches here; EM on them, ID left out, must find
    # the planted m of the other comparisons (ID's own m comes from the second session)
    vectors, _ = sim
    model = model_with_true_u().fit_sessions(vectors, [{"id": 3}, {"name": 4, "birth": 2}])
    assert [s["estimated"] for s in model.sessions_] == [
        ["name", "birth", "phone"],
        ["id", "phone"],
    ]
    for name in ("name", "birth", "phone"):
        np.testing.assert_allclose(model.m_[name], TRUE_M[name], atol=0.04)
    assert model.m_["id"][3] > 0.75  # exact ID is the likeliest level among matches
    assert model.lambda_ == 1e-4  # no prior rules and no prior: the documented fallback


def test_em_on_a_pilot_keeps_a_prior_m_for_levels_it_never_saw():
    # Six pairs, none at id level one_digit: with an m of 1e-6 that level would weigh
    # about -13 bits and veto a match; the Dirichlet prior keeps it evidence for a match.
    g = {
        "id": [3, 3, 3, 3, 0, 0],
        "name": [4, 4, 3, 4, 0, 1],
        "birth": [2, 2, 2, 1, 0, 0],
        "phone": [2, 0, 2, 2, 0, 0],
    }
    vectors = pd.DataFrame(
        {ROW_L: np.arange(6), ROW_R: np.arange(6) + 6}
        | {GAMMA_PREFIX + k: np.asarray(v, dtype=np.int8) for k, v in g.items()}
    )
    model = model_with_true_u().fit(vectors)
    weights = model.weights_
    assert weights["id"][LEVELS["id"].index("one_digit")] > 0
    assert weights["id"][LEVELS["id"].index("exact")] > 5
    assert weights["id"][0] < -2  # the level it saw among the non-matches still counts against


def test_m_prior_moves_nothing_measurable_on_a_large_sample(sim, fitted, monkeypatch):
    import linkage.model as model_module

    vectors, _ = sim
    monkeypatch.setattr(model_module, "_M_PRIOR_PAIRS", 0.0)
    plain = model_with_true_u(tf_columns={"name": 4}).fit(vectors)
    for name in LEVELS:
        np.testing.assert_allclose(fitted.m_[name], plain.m_[name], rtol=1e-3, atol=1e-5)
