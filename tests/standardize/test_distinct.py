"""Lean text columns (one string object per distinct value) and the standardizing worker."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from linkage import schema
from linkage.config import load_config
from linkage.io import read_sources
from linkage.standardize import _distinct, names
from linkage.standardize.combine import standardize
from linkage.synth import generate
from linkage.tables import shared_text, text_columns


def _objects(values) -> int:
    return len({id(v) for v in values if v is not None})


@pytest.mark.parametrize(
    "dtype", ["string", "str", pd.ArrowDtype(__import__("pyarrow").string()), object]
)
def test_text_columns_share_one_object_per_distinct_value(dtype):
    column = pd.Series(["张伟", "李娜", None, "张伟", "张伟"] * 50, dtype=dtype)
    out = text_columns(pd.DataFrame({"name": column}))["name"]
    assert out.dtype == object
    assert out.tolist() == ["张伟", "李娜", None, "张伟", "张伟"] * 50
    if dtype is not object:  # converted columns: 2 objects for 200 strings
        assert _objects(out) == 2


def test_shared_text_keeps_nulls_and_order():
    values = pd.Series(["a", None, "b", "a", float("nan")], dtype=object)
    out = shared_text(values)
    assert out.tolist() == ["a", None, "b", "a", None]
    assert out[0] is out[3]


def test_map_distinct_shares_derived_values_and_unchanged_inputs():
    raw = pd.Series([f"王{c}" for c in "伟芳娜敏静丽强磊军洋"] * 3 + [None], dtype=object)
    out = names.standardize_names(raw)
    surnames = out[schema.name_col("name", "surname")]
    assert set(surnames.dropna()) == {"王"}
    assert _objects(surnames) == 1  # ten distinct names sliced to one surname object
    clean = out[schema.name_col("name", "clean")].to_numpy()
    # a name already clean is held as the input's own object, not an equal copy
    assert all(c is r for c, r in zip(clean[:-1], raw.to_numpy()[:-1], strict=True))
    assert clean[-1] is None


@pytest.fixture
def raw_records(tmp_path):
    generate(400, seed=5, output=tmp_path)
    return read_sources(load_config(tmp_path / "run.yaml"))


def test_parallel_standardize_equals_one_process(raw_records, monkeypatch):
    single = standardize(raw_records)
    sends = []
    send = _distinct._Worker.send

    def counted(self, func, arg):
        sends.append(len(arg))
        return send(self, func, arg)

    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 10)
    monkeypatch.setattr(_distinct._Worker, "send", counted)
    # standardize reads the threshold through its own import
    monkeypatch.setattr("linkage.standardize.combine.PARALLEL_MIN_DISTINCT", 10)
    both = standardize(raw_records, parallel=True)
    assert len(sends) >= 5  # names, ID, dates, phone, addresses went half to the worker
    pd.testing.assert_frame_equal(both, single)
    assert _distinct._worker is None  # closed after the stage


def test_send_returns_while_the_worker_reads_nothing():
    """A call larger than the pipe's buffer is handed over by a thread: this process goes on
    with its own half while the worker is busy (importing a func's module, in a run)."""
    import time

    worker = _distinct._Worker()
    try:
        worker.send(time.sleep, 1.5)  # the worker reads nothing for 1.5 s
        big = ["张伟" * 20] * 200_000  # ~12 MB pickled, far over a pipe's 64 kB
        start = time.perf_counter()
        worker.send(list, big)
        assert time.perf_counter() - start < 1.0
        assert worker.receive() is None
        assert worker.receive() == big
    finally:
        worker.close()


def test_a_worker_killed_during_a_send_is_reported_by_receive():
    import time

    worker = _distinct._Worker()
    worker.send(time.sleep, 30)
    worker.send(list, ["x" * 100] * 100_000)  # blocked: the worker sleeps
    worker.proc.kill()
    with pytest.raises((OSError, EOFError)):
        worker.receive()
    worker.close()


def test_worker_error_is_raised_here_and_worker_is_usable_after(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    with _distinct.worker_process():
        # dict() of 2-letter strings works (this half); of a 3-letter one fails (worker's half)
        with pytest.raises(ValueError):
            _distinct._call(dict, ["ab", "cd", "xyz", "efg"])
        out = _distinct._call(functools.partial(_upper_frame), ["a", "b", "c", "d"])
    assert out["v"].tolist() == ["A", "B", "C", "D"]


def test_local_error_stops_the_worker(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    with _distinct.worker_process():
        with pytest.raises(ValueError):
            _distinct._call(dict, ["xyz", "efg", "ab", "cd"])
        assert _distinct._worker.proc is None  # its reply would have answered the next call
        out = _distinct._call(_upper_frame, ["a", "b"])
    assert out["v"].tolist() == ["A", "B"]


def _upper_frame(values):
    return pd.DataFrame({"v": np.array([v.upper() for v in values], dtype=object)})


def test_a_dead_worker_leaves_the_work_to_this_process(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    with _distinct.worker_process():
        _distinct._worker.start()
        _distinct._worker.proc.kill()
        _distinct._worker.proc.wait()
        out = _distinct._call(_upper_frame, ["a", "b", "c"])
        assert _distinct._worker.broken
    assert out["v"].tolist() == ["A", "B", "C"]
