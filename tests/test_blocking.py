from __future__ import annotations

import itertools
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import schema
from linkage.blocking import (
    BlockingRule,
    BlockingSettings,
    block,
    blocking_report,
    coded_keys,
    combine_report_rows,
    key_table,
    plan_rule,
    sample_random_pairs,
)
from linkage.errors import ConfigError

RULES = [
    BlockingRule(name="a", keys=["k1"]),
    BlockingRule(name="bc", keys=["k2", "k3"]),
]


def _records(rows):
    # object columns keep None (pandas 3 would infer str with NaN): _brute tests ``is None``
    frame = pd.DataFrame(rows, columns=[schema.SOURCE, "k1", "k2", "k3"], dtype=object)
    frame.insert(0, schema.ROW, np.arange(len(frame), dtype=np.int64))
    return frame


def _brute(frame, rules, link_type="link_and_dedupe", max_block=None):
    found = {}
    for i, j in itertools.combinations(range(len(frame)), 2):
        same_source = frame[schema.SOURCE][i] == frame[schema.SOURCE][j]
        if (link_type == "link_only" and same_source) or (
            link_type == "dedupe_only" and not same_source
        ):
            continue
        for rule in rules:
            vals_i = [frame[k][i] for k in rule.keys]
            vals_j = [frame[k][j] for k in rule.keys]
            if any(v is None for v in vals_i) or vals_i != vals_j:
                continue
            if max_block is not None:
                size = (frame[rule.keys] == pd.Series(vals_i, index=rule.keys)).all(axis=1).sum()
                if size > max_block:
                    continue
            found[(i, j)] = rule.name
            break
    return found


values = st.one_of(st.none(), st.sampled_from(["张", "王", "李"]))
record_rows = st.lists(
    st.tuples(st.sampled_from(["police", "health"]), values, values, values),
    min_size=0,
    max_size=14,
)


@settings(max_examples=40, deadline=None)
@given(record_rows, st.sampled_from(["link_and_dedupe", "link_only", "dedupe_only"]))
def test_block_matches_brute_force(rows, link_type):
    frame = _records(rows)
    cfg = BlockingSettings(rules=RULES, link_type=link_type)
    pairs = block(frame, cfg)
    got = {
        (int(a), int(b)): r
        for a, b, r in zip(pairs[schema.ROW_L], pairs[schema.ROW_R], pairs[schema.RULE])
    }
    assert got == _brute(frame, RULES, link_type)
    assert (pairs[schema.ROW_L] < pairs[schema.ROW_R]).all()


@pytest.mark.parametrize("rows", [[], [("p", "x", "m", "1")] * 3 + [("h", "x", None, None)]])
def test_pairs_come_sorted_with_the_table_form_of_one_union_query(rows):
    """One query per rule gives the pairs one UNION ALL query gave: sorted by (rid_l,
    rid_r), int64 row numbers, the rule a categorical of the rule names in order."""
    pairs = block(_records(rows), BlockingSettings(rules=RULES))
    assert pairs[schema.ROW_L].dtype == np.int64 and pairs[schema.ROW_R].dtype == np.int64
    assert list(pairs[schema.RULE].cat.categories) == ["a", "bc"]
    keys = list(zip(pairs[schema.ROW_L], pairs[schema.ROW_R]))
    assert keys == sorted(keys)
    want = pd.Categorical([_brute(_records(rows), RULES)[k] for k in keys], categories=["a", "bc"])
    pd.testing.assert_series_equal(
        pairs[schema.RULE], pd.Series(want, name=schema.RULE), check_index=False
    )


@settings(max_examples=25, deadline=None)
@given(record_rows)
def test_int32_row_numbers_give_the_same_pairs(rows):
    """``rid_dtype=np.int32`` (the batch run's, each rule's part narrowed as fetched) gives
    the int64 pairs in the same order, narrowed."""
    frame = _records(rows)
    wide = block(frame, BlockingSettings(rules=RULES))
    narrow = block(frame, BlockingSettings(rules=RULES), rid_dtype=np.int32)
    assert narrow[schema.ROW_L].dtype == np.int32 and narrow[schema.ROW_R].dtype == np.int32
    expected = wide.astype({schema.ROW_L: np.int32, schema.ROW_R: np.int32})
    pd.testing.assert_frame_equal(narrow, expected)


def test_oversized_blocks_are_skipped_but_other_rules_still_pair():
    rows = [("p", "x", "m", "1")] * 6 + [("p", "y", "m", "1")]
    frame = _records(rows)
    cfg = BlockingSettings(rules=RULES, max_block_size=5, warn_block_size=2)
    pairs = block(frame, cfg)
    # rule a's block of six "x" is skipped; rule bc's block of 7 too: nothing pairs
    assert len(pairs) == 0
    cfg = BlockingSettings(rules=RULES, max_block_size=6, warn_block_size=2)
    pairs = block(frame, cfg)
    got = {
        (int(a), int(b)): r
        for a, b, r in zip(pairs[schema.ROW_L], pairs[schema.ROW_R], pairs[schema.RULE])
    }
    assert got == _brute(frame, RULES, max_block=6)
    report = blocking_report(frame, cfg).set_index("rule")
    assert report.loc["a", "largest_block"] == 6 and report.loc["a", "pairs"] == 15
    assert report.loc["bc", "blocks_skipped"] == 1 and report.loc["bc", "pairs"] == 0


def test_unknown_key_is_a_config_error_naming_rule():
    frame = _records([("p", "x", "y", "z")])
    with pytest.raises(ConfigError, match="rule 'bad': unknown key 'nope'"):
        key_table(frame, [BlockingRule(name="bad", keys=["nope"])])


def test_empty_strings_never_block_together():
    frame = _records([("p", "", None, None), ("p", "", None, None), ("p", "a", None, None)])
    assert len(block(frame, BlockingSettings(rules=RULES))) == 0


def test_derived_keys_birth_year_and_sorted_pinyin():
    frame = pd.DataFrame(
        {
            schema.ROW: [0, 1, 2],
            schema.SOURCE: ["a", "b", "b"],
            schema.name_col(schema.NAME, "pinyin"): ["zhang wei", "wei zhang", "zhang wei"],
            schema.BIRTH_DATE_STD: ["1990-01-02", None, "1991-05-05"],
            schema.ID_BIRTH_DATE: [None, "1990-07-08", None],
        }
    )
    rule = BlockingRule(name="py", keys=["name_pinyin_sorted", "birth_year"])
    pairs = block(frame, BlockingSettings(rules=[rule]))
    assert list(zip(pairs[schema.ROW_L], pairs[schema.ROW_R])) == [(0, 1)]


def test_random_pairs_are_distinct_ordered_and_seeded():
    a = sample_random_pairs(1000, 5000, seed=3)
    b = sample_random_pairs(1000, 5000, seed=3)
    assert a.equals(b) and len(a) == 5000
    assert (a[schema.ROW_L] < a[schema.ROW_R]).all()
    assert not a.duplicated().any()
    assert len(sample_random_pairs(4, 100)) == 6
    assert len(sample_random_pairs(1, 100)) == 0


def test_rule_accepts_on_even_when_yaml_reads_it_as_true():
    import yaml

    rules = yaml.safe_load(
        '- {name: a, on: [k1]}\n- {name: b, "on": [k2]}\n- {name: c, keys: [k3]}'
    )
    assert True in rules[0]  # the YAML 1.1 trap this guards against
    parsed = BlockingSettings(rules=rules).rules
    assert [r.keys for r in parsed] == [["k1"], ["k2"], ["k3"]]


def _pairs_by_rule(pairs):
    return pairs[schema.RULE].value_counts(sort=False).to_dict()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["police", "health", "civil"]), values, values, values),
        min_size=0,
        max_size=16,
    ),
    st.sampled_from(["link_and_dedupe", "link_only", "dedupe_only"]),
    st.integers(min_value=2, max_value=6),
)
def test_predicted_pairs_equal_the_pairs_each_rule_makes(rows, link_type, limit):
    # one rule at a time, so no pair is left to an earlier rule: prediction must be exact,
    # with refinement (k2, then k3 split blocks of rule a) and skipping alike
    frame = _records(rows)
    for rule in RULES:
        cfg = BlockingSettings(
            rules=[rule],
            link_type=link_type,
            refine_block_size=limit,
            max_block_size=limit + 1,
            refine_keys=["k2", "k3"],
        )
        predicted = int(blocking_report(frame, cfg)["pairs"].iloc[0])
        assert predicted == len(block(frame, cfg))


def _parts(keys: pd.DataFrame, column) -> set[frozenset]:
    """The refined blocks of rule a: records grouped by k1 and part, skipped ones left out."""
    part = pd.Series(column, dtype="Int64") if column is not None else pd.Series([-1] * len(keys))
    table = pd.DataFrame(
        {schema.ROW: keys[schema.ROW].to_numpy(), "k1": keys["k1"].to_numpy(), "part": part.array}
    )
    table = table[table["k1"].notna() & table["part"].notna()]
    return {frozenset(g) for g in table.groupby(["k1", "part"])[schema.ROW].apply(list)}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["police", "health", "civil"]), values, values, values),
        min_size=0,
        max_size=16,
    ),
    st.sampled_from(["link_and_dedupe", "link_only", "dedupe_only"]),
    st.integers(min_value=2, max_value=5),
    st.integers(min_value=1, max_value=3),
)
def test_planning_counted_combinations_per_bucket_gives_the_plan_of_the_records(
    rows, link_type, limit, buckets
):
    # The Spark engine plans on (keys, refinement keys, source) -> record counts, per bucket
    # of whole blocks: the report and the refined blocks must be those of the record table.
    frame = _records(rows)
    rule = RULES[0]
    cfg = BlockingSettings(
        rules=[rule],
        link_type=link_type,
        refine_block_size=limit,
        max_block_size=limit + 1,
        refine_keys=["k2", "k3"],
    )
    keys = key_table(frame, [rule], cfg.refine_keys)
    column, whole = plan_rule(coded_keys(keys), rule, cfg)
    # a record table's rows counted as integers (no weights) = a weight of one each
    ones, ones_row = plan_rule(coded_keys(keys), rule, cfg, np.ones(len(keys), dtype=np.int64))
    assert ones_row == whole
    assert (column is None and ones is None) or (
        column.to_numpy(na_value=-9).tolist() == ones.to_numpy(na_value=-9).tolist()
    )
    cols = ["k1", "k2", "k3", schema.SOURCE]
    with_key = keys[keys["k1"].notna()].fillna("<null>")
    counts = with_key.groupby(cols).size().rename("n").reset_index()
    members = with_key.groupby(cols)[schema.ROW].apply(list)
    rows_, parts = [], set()
    for _, group in counts.groupby(counts["k1"].map(lambda v: ord(v[0]) % buckets)):
        table = group[cols].replace("<null>", None).reset_index(drop=True)
        table[schema.ROW] = np.arange(len(table))
        planned, row = plan_rule(coded_keys(table), rule, cfg, group["n"].to_numpy())
        rows_.append(row)
        # expand each combination's part to its records
        expanded = []
        for i, combo in enumerate(group[cols].itertuples(index=False)):
            part = -1 if planned is None else planned[i]
            expanded += [(r, combo[0], part) for r in members[tuple(combo)]]
        if expanded:
            got = pd.DataFrame(expanded, columns=[schema.ROW, "k1", "part"])
            parts |= _parts(got, got["part"].astype("Int64"))
    assert combine_report_rows(rule, rows_, cfg) == whole
    assert parts == _parts(keys, column)


def test_big_block_is_refined_not_skipped_and_recorded():
    # eight records share k1; k2 splits them 4 / 4, so rule a pairs within each half
    rows = [("p", "x", "m", "1")] * 4 + [("p", "x", "n", "1")] * 4
    frame = _records(rows)
    cfg = BlockingSettings(
        rules=[RULES[0]], refine_block_size=5, max_block_size=5, refine_keys=["k3", "k2"]
    )
    pairs = block(frame, cfg)
    got = {(int(a), int(b)) for a, b in zip(pairs[schema.ROW_L], pairs[schema.ROW_R])}
    halves = [range(0, 4), range(4, 8)]
    assert got == {p for h in halves for p in itertools.combinations(h, 2)}
    row = blocking_report(frame, cfg).iloc[0]
    # k3 does not split (all "1"), k2 does: only k2 is recorded
    assert row["blocks_refined"] == 1 and row["refined_by"] == "k2"
    assert row["blocks_skipped"] == 0 and row["pairs"] == 12 and row["largest_block"] == 8


def test_refinement_logs_info_and_warns_only_when_pairs_are_lost(caplog):
    # k2 splits the block: the default rules' normal work, INFO; k3 is "1" everywhere, so no
    # key splits it: over max_block_size its pairs are lost (a WARNING saying what to do),
    # within it the block is compared whole and nothing is lost (INFO)
    rows = [("p", "x", "m", "1")] * 4 + [("p", "x", "n", "1")] * 4
    cases = (
        ("k2", 5, "refined by k2", "INFO", 12),
        ("k3", 5, "raise blocking.max_block_size", "WARNING", 0),
        ("k3", 10, "no key that splits them (compared whole)", "INFO", 28),
    )
    for key, limit, needle, level, n_pairs in cases:
        caplog.clear()
        cfg = BlockingSettings(
            rules=[RULES[0]], refine_block_size=5, max_block_size=limit, refine_keys=[key]
        )
        with caplog.at_level("INFO", logger="linkage.blocking"):
            assert len(block(_records(rows), cfg)) == n_pairs, (key, limit)
        logged = [r.levelname for r in caplog.records if needle in r.getMessage()]
        assert logged == [level], (key, limit)


def test_refinement_keeps_records_missing_the_refinement_key_together():
    rows = [("p", "x", None, "1")] * 3 + [("p", "x", "m", "1")] * 3
    frame = _records(rows)
    cfg = BlockingSettings(
        rules=[RULES[0]], refine_block_size=4, max_block_size=4, refine_keys=["k2"]
    )
    assert len(block(frame, cfg)) == 6  # 3 + 3: the nulls are a part of their own


def test_over_budget_refuses_or_warns(caplog):
    frame = _records([("p", "x", None, None)] * 5)
    cfg = BlockingSettings(rules=[RULES[0]], pair_budget=9, over_budget="refuse")
    with pytest.raises(ConfigError, match="predicts 10 candidate pairs, over pair_budget 9"):
        block(frame, cfg)
    cfg = BlockingSettings(rules=[RULES[0]], pair_budget=9, over_budget="warn")
    with caplog.at_level("WARNING", logger="linkage.blocking"):
        assert len(block(frame, cfg)) == 10
    assert "over pair_budget 9" in caplog.text


def test_report_rows_reach_the_caller_and_given_initial_key():
    frame = pd.DataFrame(
        {
            schema.ROW: [0, 1, 2],
            schema.SOURCE: ["a", "b", "b"],
            schema.name_col(schema.NAME, "pinyin"): ["zhang wei", "ouyang xiao ming", None],
            schema.name_col(schema.NAME, "surname_pinyin"): ["zhang", "ou yang", None],
        }
    )
    rule = BlockingRule(name="gi", keys=["given_initial"])
    table = key_table(frame, [rule])
    assert table["given_initial"].tolist() == ["w", "x", None]
    rows: list[dict] = []
    block(frame, BlockingSettings(rules=[rule]), report=rows)
    assert rows[0]["rule"] == "gi" and rows[0]["records_with_key"] == 2


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["police", "health", "civil"]), values, values, values),
        min_size=0,
        max_size=16,
    ),
    st.sampled_from(["link_and_dedupe", "link_only", "dedupe_only"]),
    st.integers(min_value=2, max_value=6),
    st.sampled_from([None, ["k3"], ["k3", "k2"], []]),
)
def test_a_rules_own_refinement_is_predicted_exactly(rows, link_type, limit, own_keys):
    # the rule's refine_block_size / refine_keys replace the section's (limit 50, key k2)
    frame = _records(rows)
    rule = RULES[0].model_copy(update={"refine_block_size": limit, "refine_keys": own_keys})
    cfg = BlockingSettings(
        rules=[rule], link_type=link_type, max_block_size=limit + 1, refine_keys=["k2"]
    )
    report = blocking_report(frame, cfg).iloc[0]
    assert report["pairs"] == len(block(frame, cfg))
    used = [k for k in str(report["refined_by"]).split(" > ") if k]
    assert set(used) <= set(["k2"] if own_keys is None else own_keys)


_KEY_VALUES = st.one_of(
    st.none(), st.just(float("nan")), st.sampled_from(["张", "王", "", " ", "\u3000", "\t王", "1"])
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["police", "health", " "]), _KEY_VALUES, _KEY_VALUES, _KEY_VALUES
        ),
        min_size=0,
        max_size=16,
    )
)
def test_key_codes_in_one_factorize_equal_the_key_table_coded(rows):
    """Blocking plans on key codes made with one factorize per column: they must equal the
    codes of the key table (blanks made missing first), NaN, blanks and a derived key
    included."""
    from linkage.blocking import _coded_key_columns, _iter_key_codes

    frame = _records(rows)
    frame[schema.PHONE_STD] = frame["k1"]
    rules = [*RULES, BlockingRule(name="p", keys=["phone_last8"])]
    expected = coded_keys(key_table(frame, rules, ["k3", "gender"]))
    got = _coded_key_columns(_iter_key_codes(frame, rules, ["k3", "gender"]))
    pd.testing.assert_frame_equal(got, expected)


def _sample_random_pairs_by_rows(n_records, n_pairs, seed):
    """The sampler as it was, with np.unique over (lo, hi) rows: the reference."""
    rng = np.random.default_rng(seed)
    pairs = np.empty((0, 2), dtype=np.int64)
    while len(pairs) < n_pairs:
        a = rng.integers(0, n_records, size=int((n_pairs - len(pairs)) * 1.2) + 10)
        b = rng.integers(0, n_records, size=len(a))
        keep = a != b
        fresh = np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1)
        pairs = np.unique(np.concatenate([pairs, fresh]), axis=0)
    return pairs[np.sort(rng.choice(len(pairs), size=n_pairs, replace=False))]


@pytest.mark.parametrize(
    ("n_records", "n_pairs", "seed"),
    [(300_000, 200_000, 0), (2_000, 100_000, 1), (150, 5_000, 7), (3_000_000_000, 1_000, 2)],
)
def test_random_pairs_equal_the_row_unique_sampler(n_records, n_pairs, seed):
    """Same seed, same u sample as sampling with np.unique over rows (pair keys lo * n + hi
    sort as the rows do), up to record counts where n² nears 2⁶³."""
    got = sample_random_pairs(n_records, n_pairs, seed=seed)
    expected = _sample_random_pairs_by_rows(n_records, n_pairs, seed)
    np.testing.assert_array_equal(got[schema.ROW_L].to_numpy(), expected[:, 0])
    np.testing.assert_array_equal(got[schema.ROW_R].to_numpy(), expected[:, 1])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([np.int8, np.int32, np.int64, np.uint64, np.bool_, np.float64]),
    st.lists(st.integers(-(2**62), 2**62), max_size=40),
    st.integers(0, 3),
)
def test_sorted_unique_equals_np_unique(dtype, values, narrow):
    from linkage.tables import sorted_unique

    array = np.array([v % (10**narrow + 1) if narrow else v for v in values])
    with np.errstate(over="ignore"):
        array = array.astype(dtype) if dtype is not np.bool_ else array % 2 == 0
    if dtype is np.float64 and len(array):
        array[0] = np.nan
    got, expected = sorted_unique(array), np.unique(array)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_rule_refinement_overrides_the_section_and_others_keep_it():
    # ten records share k1 and k2; k3 splits them 5 / 5. Rule a refines blocks over 4 by
    # k3 (its own), rule b keeps the section's limit of 50 and is not refined.
    rows = [("p", "x", "m", "1")] * 5 + [("p", "x", "m", "2")] * 5
    frame = _records(rows)
    own = RULES[0].model_copy(update={"refine_block_size": 4, "refine_keys": ["k3"]})
    other = BlockingRule(name="b", keys=["k2"])
    cfg = BlockingSettings(rules=[own, other], refine_keys=["k2"])
    assert cfg.refinement(own) == (4, ["k3"])
    assert cfg.refinement(other) == (50, [])  # k2 is a key of rule b: passed over
    assert cfg.all_refine_keys() == ["k2", "k3"]
    report = blocking_report(frame, cfg).set_index("rule")
    assert report.loc["a", "refined_by"] == "k3" and report.loc["a", "pairs"] == 20
    assert report.loc["b", "blocks_refined"] == 0 and report.loc["b", "pairs"] == 45
    pairs = block(frame, cfg)
    # rule a pairs within each half; the 25 pairs across halves are left to rule b
    assert pairs[schema.RULE].value_counts().to_dict() == {"a": 20, "b": 25}


def test_id_region_tail_survives_a_typo_in_the_birth_digits():
    """A police record whose ID and birth date carry one typo (18901213 / 421181189012130210)
    shares the region code and the last four digits with the person's correct ID, and with
    the fuzzy name they make the rule ``fuzzy_name_id_region_tail``."""
    from linkage.blocking import DERIVED_KEYS
    from linkage.config import DEFAULT_RULES

    tail = DERIVED_KEYS["id_region_tail"][1]
    assert tail("421181189012130210") == tail("421181199012130210") == "4211810210"
    assert tail(None) is None and tail("12345") is None
    assert any(rule.name == "fuzzy_name_id_region_tail" for rule in DEFAULT_RULES)


_DETAILS = st.sampled_from(
    [
        None, "", " ", "西竹府13幢6单元701室", "丰潭路405号西竹府13-6-070", "固戍村2巷5号302",
        "霄边社区龙洞路41号", "12-3-401", "五常街道", "吴湾村10组", "文三路100号",
    ]
)  # fmt: skip
_IDS = st.one_of(
    st.sampled_from([None, "", "110101199003070012", "11010119900307001X", "110101900307001"]),
    st.text(alphabet="0123456789X张", min_size=17, max_size=19),
)
_NAMES = st.sampled_from([None, "", "张伟", "阿依古丽·买买提", "·买买提", "热依拉·阿不都·热合曼"])
_MINORITY = st.sampled_from([None, float("nan"), True, False, 1, 0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_DETAILS, _IDS, _NAMES, _MINORITY), min_size=0, max_size=14))
def test_keys_made_over_all_distinct_inputs_at_once_equal_the_per_value_keys(rows):
    """current_estate and current_flat from one parse of each detail, id_region_tail without
    a call per ID and name_minority_head from the minority rows alone give the keys of each
    key's own function per value: in the key table (the Spark engine's) and in its codes."""
    from unittest import mock

    import linkage.blocking as blocking
    from linkage.blocking import _coded_key_columns, _iter_key_codes

    detail = schema.address_col(schema.CURRENT_ADDRESS, "detail")
    clean = schema.name_col(schema.NAME, "clean")
    minority = schema.name_col(schema.NAME, "is_minority")
    frame = pd.DataFrame(
        rows, columns=[detail, schema.ID_STD, clean, minority], dtype=object
    )
    frame.insert(0, schema.SOURCE, "police")
    frame.insert(0, schema.ROW, np.arange(len(frame), dtype=np.int64))
    rules = [
        BlockingRule(name="estate", keys=["current_estate"]),
        BlockingRule(name="tail", keys=["id_region_tail"]),
        BlockingRule(name="head", keys=["name_minority_head"]),
    ]
    with (
        mock.patch.object(blocking, "_BATCH_KEYS", {}),
        mock.patch.object(blocking, "_minority_head_codes", lambda records: None),
    ):
        per_value = key_table(frame, rules, ["current_flat"])
    table = key_table(frame, rules, ["current_flat"])
    pd.testing.assert_frame_equal(table, per_value)
    expected = coded_keys(per_value)
    got = _coded_key_columns(_iter_key_codes(frame, rules, ["current_flat"]))
    pd.testing.assert_frame_equal(got, expected)
    assert list(got.columns) == [schema.ROW, schema.SOURCE, "current_estate",
                                 "id_region_tail", "name_minority_head", "current_flat"]  # fmt: skip


_ARROW_IDS = st.one_of(
    _IDS,
    st.sampled_from(["   ", " " * 18, "𠀀" * 18, "一二三四五六七八九十一二三四五六七八"]),
    st.text(min_size=16, max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(_ARROW_IDS, max_size=30),
    row_group=st.integers(1, 7),
    twice=st.booleans(),
    large=st.booleans(),
)
def test_id_region_tail_of_a_dictionary_column_equals_the_per_value_key(
    tmp_path_factory, ids, row_group, twice, large
):
    """IDs held as an Arrow dictionary (``read_dictionary_columns``, as a spilling run holds
    them through blocking) get their ``id_region_tail`` codes from pyarrow's string kernels
    over the distinct IDs: the same codes, in the same order, as the Python function of
    each value gives on the IDs as objects; any text (astral, spaces, lengths around 18)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import linkage.blocking as blocking
    from linkage.blocking import _coded_key_columns, _iter_key_codes
    from linkage.tables import dictionary_codes, read_dictionary_columns, read_text_columns

    path = tmp_path_factory.mktemp("ids") / "ids.parquet"
    table = pa.table(
        {
            schema.ROW: pa.array(range(len(ids)), pa.int64()),
            schema.SOURCE: pa.array(["police"] * len(ids), pa.string()),
            schema.ID_STD: pa.array(ids, pa.string()),
        }
    )
    pq.write_table(table, path, row_group_size=row_group)
    columns, text = [schema.ROW, schema.SOURCE, schema.ID_STD], {schema.SOURCE, schema.ID_STD}
    as_codes = read_dictionary_columns(path, columns, text)
    assert dictionary_codes(as_codes[schema.ID_STD]) is not None
    if large:  # a caller's own frame of large_string dictionaries
        big = pa.dictionary(pa.int32(), pa.large_string())
        as_codes[schema.ID_STD] = pd.Series(
            pd.arrays.ArrowExtensionArray(pa.chunked_array([pa.array(ids, pa.string())]).cast(big))
        )
        assert dictionary_codes(as_codes[schema.ID_STD]) is not None
    as_objects = read_text_columns(path, columns, text)
    # with the ID a key of its own too (the default rules), its factorizing is shared
    rules = [BlockingRule(name="id", keys=[schema.ID_STD])] if twice else []
    rules.append(BlockingRule(name="tail", keys=["id_region_tail"]))
    seen = []
    real = blocking._ARROW_KEYS["id_region_tail"]
    with mock.patch.dict(
        blocking._ARROW_KEYS, {"id_region_tail": lambda v: (seen.append(1), real(v))[1]}
    ):
        got = _coded_key_columns(_iter_key_codes(as_codes, rules))
    assert seen  # made by pyarrow
    want = _coded_key_columns(_iter_key_codes(as_objects, rules))
    pd.testing.assert_frame_equal(got, want)
    tail = blocking.DERIVED_KEYS["id_region_tail"][1]
    # a blank key value (an ID of spaces) is missing, never a shared key
    tails = [t if t is not None and t.strip() else None for t in map(tail, ids)]
    expected = pd.factorize(pd.Series(tails, dtype=object))[0]
    assert got["id_region_tail"].fillna(-1).astype(int).tolist() == expected.tolist()


def test_estate_and_flat_is_estate_and_flat():
    from linkage.zh.estate import estate, estate_and_flat, flat

    for detail in ["西竹府13幢6单元701室", "西竹府13-6-701", "固戍村2巷5号302", "12-3-401", ""]:
        assert estate_and_flat(detail) == (estate(detail), flat(detail))


def test_one_parse_of_each_detail_is_kept_only_while_the_other_key_is_to_come():
    """current_estate and current_flat share one parse per distinct detail; the parsed pairs
    are dropped once both keys took theirs, or at once when the other key is not to come."""
    from linkage.blocking import _estate_flat_batch
    from linkage.zh.estate import estate, flat

    details = np.array(["西竹府13幢6单元701室", None, "固戍村2巷5号302"], dtype=object)
    want_estate = [estate(d) if d else None for d in details]
    want_flat = [flat(d) if d else None for d in details]
    memo: dict = {"keys_to_come": {"current_flat"}}
    assert _estate_flat_batch("current_estate", [details], memo) == want_estate
    assert "estate_and_flat" in memo  # kept for current_flat
    memo["keys_to_come"] = set()
    assert _estate_flat_batch("current_flat", [details], memo) == want_flat
    assert "estate_and_flat" not in memo
    only = {"keys_to_come": {"id_region_tail"}}  # a config without current_flat
    assert _estate_flat_batch("current_estate", [details], only) == want_estate
    assert "estate_and_flat" not in only
    unknown: dict = {}  # a caller that does not say what is to come: kept until both took
    _estate_flat_batch("current_flat", [details], unknown)
    assert "estate_and_flat" in unknown
    assert _estate_flat_batch("current_estate", [details], unknown) == want_estate
    assert "estate_and_flat" not in unknown


_DATES = st.one_of(st.none(), st.sampled_from(["1990-01-02", "1990-03-04", "1985-01-02", ""]))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["police", "health"]), _DATES, _DATES, _KEY_VALUES,
                  st.sampled_from(["M", "F", None])),
        min_size=0, max_size=16,
    )
)  # fmt: skip
def test_key_codes_with_shared_inputs_dropped_after_their_last_key(rows):
    """Derived keys reading the same columns (the birth keys, gender from two columns) and
    plain keys read by several keys: each input's codes are dropped after the last key
    reading it, and the codes still equal the key table's coded, whatever the order."""
    from linkage.blocking import _coded_key_columns, _iter_key_codes

    frame = pd.DataFrame(
        rows,
        columns=[schema.SOURCE, schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE, "k1",
                 schema.GENDER_STD],
        dtype=object,
    )  # fmt: skip
    frame.insert(0, schema.ROW, np.arange(len(frame), dtype=np.int64))
    frame[schema.ID_GENDER] = frame[schema.GENDER_STD]
    rules = [
        BlockingRule(name="by", keys=["birth_year", "k1"]),
        BlockingRule(name="bd", keys=["birth_date"]),
        BlockingRule(name="k", keys=["k1", schema.BIRTH_DATE_STD]),
        BlockingRule(name="g", keys=["gender", "birth_month_day"]),
    ]
    expected = coded_keys(key_table(frame, rules, ["k1", "gender"]))
    got = _coded_key_columns(_iter_key_codes(frame, rules, ["k1", "gender"]))
    pd.testing.assert_frame_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(record_rows)
def test_block_from_a_plan_made_before_equals_block_of_the_records(rows):
    """``block(None, plan=plan_blocking(...))`` (a run dropping its key columns between the
    two) gives the pairs and report ``block(records)`` gives; the records are not read."""
    from linkage.blocking import plan_blocking

    frame = _records(rows)
    cfg = BlockingSettings(rules=RULES, refine_block_size=2, max_block_size=3)
    report_a: list = []
    want = block(frame, cfg, report=report_a)
    plan = plan_blocking(frame, cfg)
    del frame
    report_b: list = []
    got = block(None, cfg, report=report_b, plan=plan)
    pd.testing.assert_frame_equal(got, want)
    assert report_b == report_a
    with pytest.raises(ValueError, match="records or their plan"):
        block(None, cfg)


def test_packed_pairs_sort_as_the_pair_columns_do():
    """``block`` packs each pair as one uint64 (``rid_l``, ``rid_r``, rule) and sorts those
    in place: the same columns in the same order as the stable sort of the three columns,
    unpacked a slice at a time or at once, for int32 and int64 row numbers."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    import linkage.blocking as blocking
    from linkage.blocking import _PairPacking, _sorted_pairs

    @settings(max_examples=100, deadline=None)
    @given(
        st.integers(2, 5000),
        st.integers(1, 9),
        st.data(),
        st.sampled_from([np.int32, np.int64]),
        st.integers(1, 7),
    )
    def check(n, n_rules, data, rid_dtype, at_once):
        pairs = data.draw(
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), unique=True)
        )
        pairs = [(a, b) for a, b in pairs if a < b]
        rules = data.draw(st.lists(st.integers(0, n_rules - 1), min_size=len(pairs),
                                   max_size=len(pairs)))  # fmt: skip
        left = np.array([a for a, _ in pairs], dtype=np.int64)
        right = np.array([b for _, b in pairs], dtype=np.int64)
        rule = np.array(rules, dtype=np.int16)
        cut = data.draw(st.integers(0, len(pairs)))
        packing = _PairPacking.fits(np.arange(n), n_rules)
        parts = [packing.pack(left[:cut], right[:cut], rule[:cut]),
                 packing.pack(left[cut:], right[cut:], rule[cut:])]  # fmt: skip
        old = blocking._UNPACK_AT_ONCE
        blocking._UNPACK_AT_ONCE = at_once
        try:
            got = packing.sorted(parts, rid_dtype)
        finally:
            blocking._UNPACK_AT_ONCE = old
        want = _sorted_pairs(left.astype(rid_dtype), right.astype(rid_dtype), rule)
        assert not parts
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype and g.tolist() == w.tolist()

    check()
    assert _PairPacking.fits(np.array([0, 2**30 - 1]), 16) is not None
    # 31 + 31 + 3 bits, or a negative row number: the columns are sorted instead
    assert _PairPacking.fits(np.array([0, 2**31 - 1]), 8) is None
    assert _PairPacking.fits(np.array([-1, 5]), 2) is None


def test_block_packs_pairs_of_row_numbers_not_starting_at_zero(monkeypatch):
    """The packing's width comes from the largest ``rid`` (records of an ingest or a
    subset are not numbered 0..n-1): the same pairs as the column sort."""
    import linkage.blocking as blocking

    records = pd.DataFrame(
        {
            schema.ROW: np.array([10**6, 10**6 + 7, 5 * 10**6, 9 * 10**6, 9 * 10**6 + 3]),
            schema.SOURCE: ["a", "b", "a", "b", "a"],
            schema.BIRTH_DATE_STD: ["1990-01-01"] * 3 + ["1985-02-02"] * 2,
        }
    )
    settings = BlockingSettings(rules=[{"name": "birth", "keys": [schema.BIRTH_DATE_STD]}])
    packed = block(records, settings)
    monkeypatch.setattr(blocking._PairPacking, "fits", classmethod(lambda cls, r, n: None))
    sorted_columns = block(records, settings)
    pd.testing.assert_frame_equal(packed, sorted_columns)
    assert len(packed) == 4 and packed[schema.ROW_R].max() == 9 * 10**6 + 3
