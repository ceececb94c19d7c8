"""Preparing the records once per run, on both cores (``compare.prepare_comparisons``)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linkage.compare as compare_module
from linkage import schema
from linkage.compare import compare, default_comparisons, prepare_comparisons
from linkage.config import RunSettings, load_config
from linkage.linker import Linker
from linkage.standardize import _distinct

KEY = b"prepare-test-identity-key-0123456789"


def _pairs(n: int, count: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    left = rng.integers(0, n, count)
    right = rng.integers(0, n, count)
    return pd.DataFrame({schema.ROW_L: left, schema.ROW_R: right})


def test_prepared_once_levels_like_preparing_per_call(synth400_records):
    comparisons = default_comparisons()
    pairs = _pairs(len(synth400_records), 5000)
    prepared = prepare_comparisons(synth400_records, comparisons)
    assert len(prepared) == len(comparisons)
    pd.testing.assert_frame_equal(
        compare(synth400_records, pairs, comparisons, prepared=prepared),
        compare(synth400_records, pairs, comparisons),
    )
    with pytest.raises(ValueError, match="prepared holds"):
        compare(synth400_records, pairs, comparisons, prepared=prepared[:-1])


def _count_sent(monkeypatch) -> list[str]:
    """Start the worker from 10 records on and list the comparisons sent to it, in order."""
    sent: list[str] = []
    send = _distinct._Worker.send

    def counted(self, func, arg):
        sent.append(arg[0].name)
        return send(self, func, arg)

    monkeypatch.setattr(compare_module, "PARALLEL_MIN_RECORDS", 10)
    monkeypatch.setattr(_distinct._Worker, "send", counted)
    return sent


def test_parallel_prepare_equals_one_process(synth400_records, monkeypatch):
    comparisons = default_comparisons()
    pairs = _pairs(len(synth400_records), 5000)
    sent = _count_sent(monkeypatch)
    both = prepare_comparisons(synth400_records, comparisons, parallel=True)
    # the costliest comparison goes to the worker first; no comparison is lost or repeated
    assert sent and sent[0] == "name" and len(set(sent)) == len(sent)
    assert all(p is not None for p in both)
    pd.testing.assert_frame_equal(
        compare(synth400_records, pairs, comparisons, prepared=both),
        compare(synth400_records, pairs, comparisons),
    )


def test_an_error_in_the_worker_is_raised_here(synth400_records, monkeypatch):
    # the name comparison (most columns) goes to the worker, where an unhashable name
    # fails to factorize; the comparisons left to this process succeed
    broken = synth400_records.copy()
    broken[schema.NAME] = [[v] for v in broken[schema.NAME]]
    sent = _count_sent(monkeypatch)
    with pytest.raises(TypeError, match="unhashable"):
        prepare_comparisons(broken, default_comparisons(), parallel=True)
    assert sent[0] == "name"


def test_a_dead_worker_leaves_the_work_to_this_process(synth400_records, monkeypatch, caplog):
    start = _distinct._Worker.start

    def start_and_die(self):
        start(self)
        self.proc.kill()
        self.proc.wait()

    monkeypatch.setattr(compare_module, "PARALLEL_MIN_RECORDS", 10)
    monkeypatch.setattr(_distinct._Worker, "start", start_and_die)
    comparisons = default_comparisons()
    with caplog.at_level(logging.WARNING, logger="linkage.compare"):
        got = prepare_comparisons(synth400_records, comparisons, parallel=True)
    assert "in one process" in caplog.text or "in this process" in caplog.text
    pairs = _pairs(len(synth400_records), 2000)
    pd.testing.assert_frame_equal(
        compare(synth400_records, pairs, comparisons, prepared=got),
        compare(synth400_records, pairs, comparisons),
    )


def test_a_run_prepares_each_comparison_once(synth400_config, monkeypatch):
    # chunked scoring beyond a training sample used to prepare the records again for the
    # u sample and for every chunk; now once, whatever the chunks
    calls: dict[str, int] = {}
    originals = {cls: cls.prepare for cls in compare_module._TYPES}

    def counting(cls):
        def prepare(self, values):
            calls[self.name] = calls.get(self.name, 0) + 1
            return originals[cls](self, values)

        return prepare

    for cls in compare_module._TYPES:
        monkeypatch.setattr(cls, "prepare", counting(cls))
    config = load_config(synth400_config)
    model = config.model.model_copy(update={"u_sample_pairs": 20_000})
    run = RunSettings(chunk_pairs=1000, train_sample_pairs=1000)
    result = Linker(config.model_copy(update={"model": model, "run": run}), id_key=KEY).run()
    # above the training sample, so scoring compares them again, in two chunks at least
    assert result.summary["candidate_pairs"] > 1500
    assert calls and set(calls.values()) == {1}, calls


def test_scoring_takes_the_training_sample_from_the_compare_stage(synth400_config, monkeypatch):
    # above train_sample_pairs, the compare stage levels a sample for EM; scoring levels
    # only the other pairs and gets the same rows, in the same order, as levelling them all
    import linkage.pipeline as pipeline

    config = load_config(synth400_config)
    model = config.model.model_copy(update={"u_sample_pairs": 20_000})
    run = RunSettings(chunk_pairs=1000, train_sample_pairs=1000)
    config = config.model_copy(update={"model": model, "run": run})
    levelled: list[int] = []
    compare_pairs = pipeline.compare_pairs

    def counted(records, pairs, *args, **kwargs):
        levelled.append(len(pairs))
        return compare_pairs(records, pairs, *args, **kwargs)

    monkeypatch.setattr(pipeline, "compare_pairs", counted)
    once = Linker(config, id_key=KEY).run()
    n_pairs = once.summary["candidate_pairs"]
    assert sum(levelled) == n_pairs  # the sample of 1000 in the compare stage, the rest after
    assert levelled[0] == 1000

    chunk = pipeline._compare_chunk

    def compare_all(records, part, comparisons, rows_tf, prepared, vectors, sample, start):
        return chunk(records, part, comparisons, rows_tf, prepared, None, None, start)

    levelled.clear()
    monkeypatch.setattr(pipeline, "_compare_chunk", compare_all)
    twice = Linker(config, id_key=KEY).run()
    assert sum(levelled) == n_pairs + 1000
    pd.testing.assert_frame_equal(once.pairs, twice.pairs)
    pd.testing.assert_frame_equal(once.identities, twice.identities)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.one_of(st.just(-1), st.integers(0, 9999), st.sampled_from([1990, 1991,
                   1909, 2010, 101, 1231, 229]))] * 4),
        min_size=0, max_size=40,
    ),
    st.booleans(),
)  # fmt: skip
def test_years_apart_per_distinct_combination_equals_per_record(rows, out_of_range):
    """The ID comparison's borrowed-ID test computed once per distinct (year, year, MMDD,
    MMDD) equals the function per record; values outside -1..9999 go per record."""
    from linkage.compare.fields import _years_apart_per_distinct
    from linkage.standardize import idnumber as std_id

    arrays = [np.array([r[k] for r in rows], dtype=np.int64) for k in range(4)]
    if out_of_range and rows:
        arrays[0][0] = 12345
    want = std_id.years_apart(*arrays)
    got = _years_apart_per_distinct(*arrays)
    assert got.dtype == bool and np.array_equal(got, want)


def test_rows_of_takes_rows_from_arrow_text_objects_or_nothing():
    from linkage.compare.base import rows_of

    arrow = pd.Series(["a", None, "c"], dtype="str")
    objects = np.array(["a", None, "c"], dtype=object)
    rows = np.array([2, 0, 1])
    taken = rows_of({"x": arrow.array}, "x", rows)
    assert taken[:2] == ["c", "a"] and pd.isna(taken[2])
    assert rows_of({"x": objects}, "x", rows) == ["c", "a", None]
    assert rows_of({}, "x", rows) == [None, None, None]


def test_id_comparison_prepared_from_the_raw_ids_as_arrow_equals_objects(tmp_path):
    """A run reads the raw ID (read only where an ID was damaged) as Arrow text from its
    records checkpoint (``read_comparison_columns``); the prepared rows equal those made
    from the object columns, the damaged IDs' 15th digits included."""
    import pyarrow.parquet as pq

    from linkage.compare import read_comparison_columns
    from linkage.compare.fields import IdComparison
    from linkage.standardize.combine import standardize

    raw = pd.DataFrame(
        {
            schema.SOURCE: ["police"] * 6,
            schema.RECORD_ID: [f"r{i}" for i in range(6)],
            schema.NAME: ["王伟", "王伟", "李娜", "李娜", "周敏", "周敏"],
            schema.ID_NUMBER: ["4.40106199001011e+17", "440106199001011234",
                               "440106198502030000", "44010619850203512X", None, "不详"],
            schema.BIRTH_DATE: ["1990-01-01", "1990-01-01", "1985-02-03", None, None, None],
        },
        dtype=object,
    )  # fmt: skip
    records = standardize(raw)
    comparison = IdComparison()
    assert comparison.few_rows_columns == (schema.ID_NUMBER,)
    want = prepare_comparisons(records, [comparison])[0]
    path = tmp_path / "records.parquet"
    records.to_parquet(path, index=False)
    text = {f.name for f in pq.read_schema(path) if str(f.type) in ("string", "large_string")}
    frame = read_comparison_columns(path, text, comparison)
    assert isinstance(frame[schema.ID_NUMBER].dtype, pd.StringDtype) or (
        frame[schema.ID_NUMBER].dtype == object  # pandas 2 reads text as objects
    )
    got = prepare_comparisons(frame, [comparison])[0]
    assert (want.rows["kept"] >= 0).any() and (want.rows["d15"] >= 0).any()
    assert want.rows.keys() == got.rows.keys()
    for key in want.rows:
        assert np.array_equal(np.asarray(want.rows[key]), np.asarray(got.rows[key])), key


@settings(max_examples=200, deadline=None)
@given(
    ids=st.lists(
        st.one_of(
            st.text(alphabet="0123456789X", min_size=18, max_size=18),
            st.text(alphabet="0123456789 Xa-\x00\x7f", min_size=18, max_size=18),
            st.just(""),
        ),
        max_size=30,
    )
)
def test_fixed_head_and_gender_digit_equal_the_per_id_rule(ids):
    """The region-and-birth head, the 17th digit and the MOD 11-2 check read from the
    fixed-width IDs in numpy (a few IDs at a time here) are what ``int(t[:14]) if
    t[:14].isdigit()``, ``int(t[16]) % 2`` and ``check_holds`` give per ID."""
    import linkage.compare.fields as fields
    from linkage.compare.fields import _checks_hold, check_holds, fixed_digit, fixed_head
    from linkage.standardize import idnumber

    # half of the 17-digit ones given their right check character
    ids = [
        t[:17] + idnumber.id_check_char(t[:17]) if i % 2 and t[:17].isdigit() else t
        for i, t in enumerate(ids)
    ]
    fixed = np.array(ids, dtype="S18")
    before = fields._IDS_AT_ONCE
    fields._IDS_AT_ONCE = 4
    try:
        head, holds = fixed_head(fixed), _checks_hold(fixed)
    finally:
        fields._IDS_AT_ONCE = before
    want = [int(t[:14]) if t and t[:14].isdigit() else -1 for t in ids]
    assert head.tolist() == want
    assert holds.tolist() == [check_holds(t) for t in ids]
    digit = fixed_digit(fixed, 16).astype(np.int64)
    gender = np.where(digit >= 0, digit % 2, -1).tolist()
    assert gender == [int(t[16]) % 2 if t and t[16].isdigit() else -1 for t in ids]


_FUZZY = st.sampled_from([None, "", "  ", "zhang wei", "zhang", "wei", "ou yang na", "li na na",
                          "zhang wei wei ming hua li xia", "wang", "a b c d e f g h"])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_FUZZY, _FUZZY, _FUZZY, _FUZZY,
                  st.sampled_from([None, "", "name_newborn", "x;name_newborn", "x"])),
        min_size=1,
        max_size=30,
    )
)  # fmt: skip
def test_given_syllables_equal_the_per_record_rule(rows):
    """``given_syllables`` (each column factorized on its own, a table per distinct triple)
    gives every record the codes ``_syllable_codes`` gives it alone, current name then
    former, -1 padded; ``gk`` where any is known."""
    from linkage.compare.fields import _SYLLABLES, _syllable_codes, given_syllables

    frame = pd.DataFrame(
        rows,
        columns=[
            schema.name_col(schema.NAME, "fuzzy"), schema.name_col(schema.NAME, "surname_fuzzy"),
            schema.name_col(schema.FORMER_NAME, "fuzzy"),
            schema.name_col(schema.FORMER_NAME, "surname_fuzzy"), schema.QUALITY_FLAGS,
        ],
        dtype=object,
    )  # fmt: skip
    got = given_syllables({c: frame[c].to_numpy() for c in frame.columns}, len(frame))
    for i, (name, surname, former, former_surname, flags) in enumerate(rows):
        void = isinstance(flags, str) and "name_newborn" in flags
        want = []
        for fuzzy, head in ((name, surname), (former, former_surname)):
            codes = _syllable_codes(fuzzy, head, void)
            want += codes + [-1] * (_SYLLABLES - len(codes))
        assert [int(got[f"g{k}"][i]) for k in range(2 * _SYLLABLES)] == want
        assert bool(got["gk"][i]) == any(c >= 0 for c in want)
