"""Prepared comparisons held once per distinct row (``compare.compact_prepared``): the same
levels as the per-record rows, never a wrong grouping, fewer bytes held by a run."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linkage.compare as compare_module
import linkage.compare.base as base
import linkage.pipeline as pipeline
from linkage import schema
from linkage.compare import (
    NameComparison,
    Prepared,
    compact_prepared,
    compare,
    default_comparisons,
    prepare_comparisons,
    prepare_from_file,
)
from linkage.config import RunSettings, load_config
from linkage.io import read_records
from linkage.linker import Linker
from linkage.standardize import _distinct

KEY = b"compact-test-identity-key-0123456789"
NAMES = [c.name for c in default_comparisons()]
# compacted even where it saves nothing (gender: an int32 code for an int32 code)
ALWAYS = -np.inf


@pytest.fixture(scope="module")
def prepared(synth400_records):
    comparisons = default_comparisons()
    return comparisons, prepare_comparisons(synth400_records, comparisons)


def _nbytes(p: Prepared) -> int:
    """Bytes of the per-record arrays (and the index) a Prepared holds; tables not counted."""
    out = 0 if p.index is None else p.index.nbytes
    for value in p.rows.values():
        out += _nbytes(value) if isinstance(value, Prepared) else value.nbytes
    return out


def _assert_same_rows(a: Prepared, b: Prepared) -> None:
    assert a.index is None and b.index is None  # take never returns a compacted one
    assert a.tables is b.tables and a.rows.keys() == b.rows.keys()
    for key, value in a.rows.items():
        if isinstance(value, Prepared):
            _assert_same_rows(value, b.rows[key])
        else:
            assert value.dtype == b.rows[key].dtype, key
            np.testing.assert_array_equal(value, b.rows[key], err_msg=key)


def _pairs(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, count), rng.integers(0, n, count)


# ----------------------------------------------------------------------------- levels


@pytest.mark.parametrize("name", NAMES)
def test_compacted_levels_equal_the_per_record_levels(prepared, synth400_records, name):
    comparisons, per_record = prepared
    i = NAMES.index(name)
    comparison, full = comparisons[i], per_record[i]
    small = compact_prepared(full, min_saving=ALWAYS)
    assert small.index is not None and small.index.dtype == np.int32
    assert len(small.index) == len(synth400_records)
    assert small.tables is full.tables
    left, right = _pairs(len(synth400_records), 20_000, seed=i)
    np.testing.assert_array_equal(
        comparison.compare_prepared(small, left, right),
        comparison.compare_prepared(full, left, right),
    )
    # every record with itself and with its neighbours: the agreeing levels too
    rows = np.arange(len(synth400_records))
    for other in (rows, np.roll(rows, 1)):
        np.testing.assert_array_equal(
            comparison.compare_prepared(small, rows, other),
            comparison.compare_prepared(full, rows, other),
        )
    _assert_same_rows(small.take(left), full.take(left))


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), count=st.integers(0, 3000))
def test_compacted_levels_equal_on_random_pairs(prepared, synth400_records, seed, count):
    comparisons, per_record = prepared
    left, right = _pairs(len(synth400_records), count, seed)
    for comparison, full in zip(comparisons, per_record, strict=True):
        small = compact_prepared(full, min_saving=ALWAYS)
        np.testing.assert_array_equal(
            comparison.compare_prepared(small, left, right),
            comparison.compare_prepared(full, left, right),
        )


_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.float32, np.float64, bool]


@st.composite
def _prepareds(draw):
    """A Prepared of few distinct values per array (repeats to group), some nested, one
    2-D array at times, and negative numbers, NaN and -0.0 among the values."""
    n = draw(st.integers(2, 60))
    values = st.sampled_from([-1, 0, 1, 2, 127])

    def array(dtype):
        picked = draw(st.lists(values, min_size=n, max_size=n))
        out = np.array(picked).astype(dtype)
        if np.dtype(dtype).kind == "f" and draw(st.booleans()):
            out[draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, -0.0]))
        return out

    def rows(depth: int) -> dict:
        out = {}
        for k in range(draw(st.integers(1, 4))):
            if depth == 0 and draw(st.integers(0, 4)) == 0:
                out[f"p{k}"] = Prepared(rows(1), {"t": np.arange(3)})
            elif draw(st.integers(0, 5)) == 0:
                out[f"m{k}"] = np.stack([array(np.int32), array(np.int32)], axis=1)
            else:
                out[f"a{k}"] = array(draw(st.sampled_from(_DTYPES)))
        return out

    return Prepared(rows(0), {"table": np.arange(5)})


@settings(max_examples=200)
@given(p=_prepareds(), data=st.data())
def test_take_of_a_compacted_prepared_equals_take_of_the_input(p, data):
    small = compact_prepared(p, min_saving=ALWAYS)
    assert small.index is not None
    n = len(small.index)
    at = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=80)), dtype=np.int64)
    _assert_same_rows(small.take(at), p.take(at))
    _assert_same_rows(small.take(np.arange(n)), p.take(np.arange(n)))
    # one row per distinct row: no two kept rows alike, and every one some record's
    kept = Prepared(small.rows, small.tables)
    flat = pd.DataFrame({f"c{i}": a for i, a in enumerate(_columns(kept))})
    assert not flat.duplicated().any()
    assert np.array_equal(np.unique(small.index), np.arange(len(flat)))


def _columns(p: Prepared) -> list[np.ndarray]:
    out = []
    for value in p.rows.values():
        if isinstance(value, Prepared):
            out += _columns(value)
        else:  # bits, so NaN equals NaN and -0.0 differs from 0.0, as compaction groups
            bits = value.reshape(len(value), -1)
            if bits.dtype.kind == "f":
                bits = bits.view(f"u{bits.dtype.itemsize}")
            out += list(bits.T)
    return out


# ----------------------------------------------------------------------------- left as it is


@pytest.mark.parametrize("hashes", ["constant", "tiny modulus"])
def test_a_hash_collision_leaves_the_input_unchanged(prepared, synth400_records, monkeypatch, hashes):
    comparisons, per_record = prepared
    row_hashes = base._row_hashes

    def colliding(words, n):
        if hashes == "constant":
            return np.zeros(n, dtype=np.uint64)
        return row_hashes(words, n) % np.uint64(3)

    monkeypatch.setattr(base, "_row_hashes", colliding)
    left, right = _pairs(len(synth400_records), 5000, seed=11)
    for comparison, full in zip(comparisons, per_record, strict=True):
        assert compact_prepared(full, min_saving=ALWAYS) is full, comparison.name
    got = prepare_comparisons(synth400_records, comparisons, compact=True)
    assert all(p.index is None for p in got)
    for comparison, full, p in zip(comparisons, per_record, got, strict=True):
        np.testing.assert_array_equal(
            comparison.compare_prepared(p, left, right),
            comparison.compare_prepared(full, left, right),
        )


def test_what_saves_too_little_or_cannot_be_hashed_is_left_as_it_is(prepared):
    comparisons, per_record = prepared
    gender = per_record[NAMES.index("gender")]
    assert compact_prepared(gender) is gender  # an int32 index saves nothing on int32 codes
    codes = np.arange(1000, dtype=np.int64)
    unique = Prepared({"v": codes, "w": codes})  # every row distinct
    assert compact_prepared(unique) is unique
    text = Prepared({"v": np.zeros(10, dtype=np.int64), "s": np.array(["a"] * 10, dtype=object)})
    assert compact_prepared(text, min_saving=ALWAYS) is text
    nested = Prepared({"p": text, "v": np.zeros(10, dtype=np.int64)})
    assert compact_prepared(nested, min_saving=ALWAYS) is nested
    ragged = Prepared({"v": np.zeros(10, dtype=np.int64), "w": np.zeros(9, dtype=np.int64)})
    assert compact_prepared(ragged, min_saving=ALWAYS) is ragged
    empty = Prepared({})
    assert compact_prepared(empty, min_saving=ALWAYS) is empty
    name = per_record[NAMES.index("name")]
    once = compact_prepared(name)
    assert once.index is not None and compact_prepared(once) is once


def test_a_comparison_reading_rows_itself_is_not_compacted(synth400_records):
    class OwnRows(NameComparison):
        """Levels from the per-record rows, as one entry per record, not through ``take``."""

        def compare_prepared(self, prepared, rows_left, rows_right):
            assert prepared.index is None
            return super().compare_prepared(prepared, rows_left, rows_right)

    own, plain = OwnRows(name="own"), NameComparison()
    got = prepare_comparisons(synth400_records, [own, plain], compact=True)
    assert got[0].index is None and got[1].index is not None
    left, right = _pairs(len(synth400_records), 2000, seed=9)
    np.testing.assert_array_equal(
        own.compare_prepared(got[0], left, right), plain.compare_prepared(got[1], left, right)
    )


# ----------------------------------------------------------------------------- a run's preparing


def test_compacted_comparisons_hold_fewer_bytes(synth400_records, prepared):
    comparisons, per_record = prepared
    small = prepare_comparisons(synth400_records, comparisons, compact=True)
    before = [_nbytes(p) for p in per_record]
    after = [_nbytes(p) for p in small]
    # each person has several records (three registries, repeats), people share names
    assert sum(after) < 0.75 * sum(before), (before, after)
    for name in ("name", "id", "contact", "hukou_address"):
        i = NAMES.index(name)
        assert small[i].index is not None and after[i] < before[i], name
    assert all(a <= b for a, b in zip(after, before, strict=True))  # never larger
    pairs = pd.DataFrame(dict(zip((schema.ROW_L, schema.ROW_R), _pairs(len(synth400_records), 5000, 3))))
    pd.testing.assert_frame_equal(
        compare(synth400_records, pairs, comparisons, prepared=small, chunk_size=700, threads=2),
        compare(synth400_records, pairs, comparisons, prepared=per_record),
    )


def test_the_worker_sends_back_its_comparisons_compacted(synth400_records, prepared, monkeypatch):
    comparisons, per_record = prepared
    sent: list[tuple] = []
    send = _distinct._Worker.send

    def counted(self, func, arg):
        sent.append(arg)
        return send(self, func, arg)

    monkeypatch.setattr(compare_module, "PARALLEL_MIN_RECORDS", 10)
    monkeypatch.setattr(_distinct._Worker, "send", counted)
    got = prepare_comparisons(synth400_records, comparisons, parallel=True, compact=True)
    assert sent and all(arg[2] is True for arg in sent)
    # the costliest, the names, went to the worker first and came back compacted
    assert sent[0][0].name == "name" and got[NAMES.index("name")].index is not None
    left, right = _pairs(len(synth400_records), 5000, seed=4)
    for comparison, full, p in zip(comparisons, per_record, got, strict=True):
        np.testing.assert_array_equal(
            comparison.compare_prepared(p, left, right),
            comparison.compare_prepared(full, left, right),
        )


def test_preparing_from_the_records_file_compacts_when_asked(synth400_records, prepared, tmp_path):
    comparisons, per_record = prepared
    path = tmp_path / "records.parquet"
    synth400_records.to_parquet(path)
    text = [c for c in synth400_records.columns if synth400_records[c].dtype == object]
    got = prepare_from_file((str(path), text, comparisons, True))
    plain = prepare_from_file((str(path), text, comparisons, False))
    assert got[NAMES.index("name")].index is not None
    assert all(p.index is None for p in plain)
    left, right = _pairs(len(synth400_records), 5000, seed=5)
    for comparison, full, p, q in zip(comparisons, per_record, got, plain, strict=True):
        expected = comparison.compare_prepared(full, left, right)
        np.testing.assert_array_equal(comparison.compare_prepared(p, left, right), expected)
        np.testing.assert_array_equal(comparison.compare_prepared(q, left, right), expected)


def _config(path):
    config = load_config(path)
    model = config.model.model_copy(update={"u_sample_pairs": 20_000})
    # chunked scoring beyond the training sample: the compacted rows serve every stage
    run = RunSettings(chunk_pairs=1000, train_sample_pairs=1000)
    return config.model_copy(update={"model": model, "run": run})


def test_a_run_links_the_same_with_and_without_compaction(synth400_config, monkeypatch):
    compacted: list[bool] = []
    real = compare_module.compact_prepared

    def spy(p, *args, **kwargs):
        out = real(p, *args, **kwargs)
        compacted.append(out.index is not None)
        return out

    monkeypatch.setattr(compare_module, "compact_prepared", spy)
    on = Linker(_config(synth400_config), id_key=KEY).run()
    assert len(compacted) == len(NAMES) and sum(compacted) >= 4

    monkeypatch.setattr(compare_module, "compact_prepared", lambda p, *a, **k: p)
    off = Linker(_config(synth400_config), id_key=KEY).run()
    pd.testing.assert_frame_equal(on.pairs, off.pairs)
    pd.testing.assert_frame_equal(on.identities, off.identities)
    assert on.summary["candidate_pairs"] == off.summary["candidate_pairs"]


def test_a_run_preparing_in_its_early_worker_links_the_same(synth400_config, tmp_path, monkeypatch):
    # the early worker (reading the records checkpoint) prepares and compacts its share in
    # its own process; the reference prepares everything here, uncompacted
    monkeypatch.setattr(compare_module, "compact_prepared", lambda p, *a, **k: p)
    Linker(_config(synth400_config), id_key=KEY).write(tmp_path / "off")
    monkeypatch.undo()

    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    sent: list[tuple] = []
    send = _distinct._Worker.send

    def spy(self, func, arg):
        if func is compare_module.prepare_kept:
            sent.append(arg[1])  # prepare_from_file's argument, under its key
        return send(self, func, arg)

    monkeypatch.setattr(_distinct._Worker, "send", spy)
    Linker(_config(synth400_config), id_key=KEY).write(tmp_path / "on")
    assert sent and sent[0][3] is True
    for name in ("pairs.parquet", "identities.csv", "golden_records.csv", "cluster_sizes.csv"):
        assert (tmp_path / "on" / name).read_bytes() == (tmp_path / "off" / name).read_bytes()


class _RecordsFile:
    """A records checkpoint as ``link_records`` reads it (``golden_records``): the columns
    asked for, ``file()`` and ``when_written`` (written already: the callback at once)."""

    def __init__(self, records: pd.DataFrame, path):
        records.to_parquet(path)
        self.records = records
        self.path = path
        self.text = {c for c in records.columns if records[c].dtype == object}

    def __call__(self, columns: list[str]) -> pd.DataFrame:
        return self.records[[c for c in columns if c in self.records.columns]]

    def file(self):
        return self.path, set(self.text)

    def when_written(self, callback) -> None:
        callback(self.path, set(self.text))


def _assert_same_levels(comparisons, expected, got, n, seed):
    left, right = _pairs(n, 5000, seed=seed)
    for comparison, full, p in zip(comparisons, expected, got, strict=True):
        np.testing.assert_array_equal(
            comparison.compare_prepared(p, left, right),
            comparison.compare_prepared(full, left, right),
            err_msg=comparison.name,
        )


def test_this_process_prepares_what_the_early_worker_has_not_begun(
    synth400_records, prepared, tmp_path, monkeypatch
):
    # the worker's answer for its first comparison is read only once this process has taken
    # every one it may: it prepares those itself (the lightest first) instead of waiting,
    # but never the ID comparison or the names, which stay the worker's
    comparisons, per_record = prepared
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    sent: list[str] = []
    taken: list[str] = []
    kept: list[list[int]] = []
    made: list[pipeline._EarlyPrepare] = []  # set before its feeding thread starts
    send, receive = _distinct._Worker.send, _distinct._Worker.receive
    init = pipeline._EarlyPrepare.__init__
    real_prepare = pipeline.prepare_comparisons

    def spy_init(self, *args):
        init(self, *args)
        made.append(self)

    def spy_send(self, func, arg):
        if func is compare_module.prepare_kept:
            sent.extend(c.name for c in arg[1][2])
        if func is compare_module.take_kept:
            kept.append(list(arg))
        return send(self, func, arg)

    def late_receive(self):
        if sent and not kept:  # a run that never takes them fails below, not hangs
            early, waited = made[0], threading.Event()
            for _ in range(3000):
                if all(i in early.reserved for i in early.waiting) or waited.wait(0.01):
                    break
        return receive(self)

    def spy_prepare(frame, own, **kwargs):
        taken.extend(c.name for c in own)
        return real_prepare(frame, own, **kwargs)

    monkeypatch.setattr(pipeline._EarlyPrepare, "__init__", spy_init)
    monkeypatch.setattr(_distinct._Worker, "send", spy_send)
    monkeypatch.setattr(_distinct._Worker, "receive", late_receive)
    monkeypatch.setattr(pipeline, "prepare_comparisons", spy_prepare)
    source = _RecordsFile(synth400_records, tmp_path / "records.parquet")
    cut = synth400_records[[schema.ROW]]
    early = pipeline._EarlyPrepare.start(comparisons, source, len(synth400_records))
    assert early is made[0] and early.ready()
    got = early.prepare(cut, source)
    heavy = sorted(comparisons, key=lambda c: -len(c.columns))
    theirs = [c.name for c in heavy if len(c.columns) > 2]
    assert theirs[:2] == ["id", "name"] and len(theirs) >= 3
    # the ID comparison and the names went to the worker, the others of its share were
    # prepared here, the lightest first, after this process's own
    assert sent == theirs[:2]
    assert taken[-(len(theirs) - 2) :] == theirs[:1:-1]
    assert not set(theirs[:2]) & set(taken)
    # the worker kept its two results until blocking was done, then handed them over
    assert [[comparisons[i].name for i in keys] for keys in kept] == [theirs[:2]]
    assert early.worker.proc is None  # closed
    _assert_same_levels(comparisons, per_record, got, len(synth400_records), seed=7)


def test_a_comparison_the_early_worker_fails_is_prepared_here(
    synth400_records, prepared, tmp_path, monkeypatch, caplog
):
    comparisons, per_record = prepared
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    replies = [0]

    def dying(self):
        replies[0] += 1
        raise EOFError("worker died")

    monkeypatch.setattr(_distinct._Worker, "receive", dying)
    source = _RecordsFile(synth400_records, tmp_path / "records.parquet")
    early = pipeline._EarlyPrepare.start(comparisons, source, len(synth400_records))
    assert early is not None and early.ready()
    with caplog.at_level("WARNING", logger="linkage.pipeline"):
        got = early.prepare(synth400_records[[schema.ROW]], source)
    assert replies == [1]  # fed nothing after it failed
    assert "worker stopped (worker died)" in caplog.text
    assert all(p is not None for p in got)
    _assert_same_levels(comparisons, per_record, got, len(synth400_records), seed=8)


def test_a_run_starts_its_comparisons_worker_before_reading_back(
    synth400_config, tmp_path, monkeypatch
):
    import linkage.linker as linker_module

    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    events: list[str] = []
    handed: list[object] = []
    start, link = linker_module.prepare_ahead, linker_module.link_records
    dictionary = linker_module._SpilledRecords.dictionary

    def spy_start(config, golden_records, n_records):
        events.append("worker")
        return start(config, golden_records, n_records)

    def spy_dictionary(self, columns):
        events.append("read back")
        return dictionary(self, columns)

    def spy_link(records, config, **kwargs):
        handed.append(kwargs["preparing"])
        return link(records, config, **kwargs)

    monkeypatch.setattr(linker_module, "prepare_ahead", spy_start)
    monkeypatch.setattr(linker_module._SpilledRecords, "dictionary", spy_dictionary)
    monkeypatch.setattr(linker_module, "link_records", spy_link)
    Linker(_config(synth400_config), id_key=KEY).write(tmp_path / "on")
    assert events == ["worker", "read back"]
    assert len(handed) == 1 and isinstance(handed[0], pipeline._EarlyPrepare)
    assert handed[0].worker.proc is None  # closed by the run
    monkeypatch.undo()
    Linker(_config(synth400_config), id_key=KEY).write(tmp_path / "off")
    for name in ("pairs.parquet", "identities.csv", "golden_records.csv"):
        assert (tmp_path / "on" / name).read_bytes() == (tmp_path / "off" / name).read_bytes()


def test_linking_failing_after_blocking_stops_its_comparisons_worker(
    synth400_config, tmp_path, monkeypatch
):
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    made: list[pipeline._EarlyPrepare] = []
    init = pipeline._EarlyPrepare.__init__

    def spy_init(self, *args):
        init(self, *args)
        made.append(self)

    def failing(*args, **kwargs):
        raise RuntimeError("a stage failed")

    monkeypatch.setattr(pipeline._EarlyPrepare, "__init__", spy_init)
    monkeypatch.setattr(pipeline, "_training_sample", failing)
    records = read_records(_config(synth400_config))
    source = _RecordsFile(records, tmp_path / "records.parquet")
    with pytest.raises(RuntimeError, match="a stage failed"):
        pipeline.link_records(
            records, _config(synth400_config), id_key=KEY, golden_records=source
        )
    assert len(made) == 1
    assert made[0].closed and made[0].worker.proc is None
    assert made[0].feeder is None or not made[0].feeder.is_alive()


def test_preparing_for_other_comparisons_is_refused(synth400_config, synth400_records, monkeypatch):
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    config = _config(synth400_config)
    other = pipeline._EarlyPrepare(_distinct._Worker(), list(reversed(default_comparisons())))
    with pytest.raises(ValueError, match="other comparisons"):
        pipeline.link_records(synth400_records, config, id_key=KEY, preparing=other)
    assert other.closed


def test_a_run_with_a_memory_budget_leaves_the_whole_share_to_the_worker(
    synth400_config, synth400_records, prepared, tmp_path, monkeypatch
):
    # its columns would be held here beside the pairs and the records: none is taken here
    comparisons, per_record = prepared
    config = _config(synth400_config)
    assert pipeline._may_share(config)
    budget = config.model_copy(update={"run": RunSettings(chunk_records=1000)})
    assert not pipeline._may_share(budget)
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_RECORDS", 1)
    sent: list[str] = []
    taken: list[str] = []
    send, real_prepare = _distinct._Worker.send, pipeline.prepare_comparisons

    def spy_send(self, func, arg):
        if func is compare_module.prepare_kept:
            sent.extend(c.name for c in arg[1][2])
        return send(self, func, arg)

    def spy_prepare(frame, own, **kwargs):
        taken.extend(c.name for c in own)
        return real_prepare(frame, own, **kwargs)

    monkeypatch.setattr(_distinct._Worker, "send", spy_send)
    monkeypatch.setattr(pipeline, "prepare_comparisons", spy_prepare)
    source = _RecordsFile(synth400_records, tmp_path / "records.parquet")
    early = pipeline.prepare_ahead(budget, source, len(synth400_records))
    assert early is not None and early.ready()
    got = early.prepare(synth400_records[[schema.ROW]], source)
    theirs = [c.name for c in sorted(comparisons, key=lambda c: -len(c.columns)) if len(c.columns) > 2]
    assert sent == theirs and not set(theirs) & set(taken)
    _assert_same_levels(comparisons, per_record, got, len(synth400_records), seed=9)
