"""Lean text columns (one string object per distinct value) and the standardizing worker."""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import schema
from linkage.config import load_config
from linkage.io import read_sources
from linkage.standardize import _distinct, names
from linkage.standardize.combine import standardize
from linkage.synth import generate
from linkage.tables import held_alone, shared_text, text_columns


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


def test_standardized_text_columns_are_objects_shared_per_distinct_value(raw_records):
    # pandas 3 infers its Arrow str dtype for a frame built from str objects: a column of
    # that dtype makes a str per row at each to_numpy (the stages read dates many times)
    out = standardize(raw_records)
    for col in (schema.BIRTH_DATE_STD, schema.REGISTERED_AT_STD, schema.ID_STD):
        values = out[col]
        assert values.dtype == object, col
        present = values.dropna()
        assert _objects(values) == present.nunique() < len(present), col
        assert all(isinstance(v, str) for v in present), col


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
        # rows of 2-letter strings work (this half); of 3-letter ones fail (worker's half)
        with pytest.raises(ValueError):
            _distinct.map_distinct(_text(["ab", "cd", "xyz", "efg"]), _letter_pairs)
        # a function the worker can import (not one of this test module's): its half is
        # done there, and the worker is still alive afterwards
        out = _distinct.map_distinct(_text(["a", "b", "c", "d"]), _frame_of("v"))
        assert _distinct._worker.proc is not None and _distinct._worker.proc.poll() is None
    assert out["v"].tolist() == ["a", "b", "c", "d"]


def test_local_error_stops_the_worker(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    with _distinct.worker_process():
        with pytest.raises(ValueError):
            _distinct.map_distinct(_text(["xyz", "efg", "ab", "cd"]), _letter_pairs)
        assert _distinct._worker.proc is None  # its reply would have answered the next call
        out = _distinct.map_distinct(_text(["a", "b"]), _upper_frame)
    assert out["v"].tolist() == ["A", "B"]


# a frame of two columns from 2-letter strings; ValueError for longer ones (importable by
# the worker: pandas' own)
_letter_pairs = functools.partial(pd.DataFrame.from_records, columns=["a", "b"])


def _text(values):
    return pd.Series(values, dtype=object)


def _upper_frame(values):
    return pd.DataFrame({"v": np.array([v.upper() for v in values], dtype=object)})


def test_a_dead_worker_leaves_the_work_to_this_process(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    with _distinct.worker_process():
        _distinct._worker.start()
        _distinct._worker.proc.kill()
        _distinct._worker.proc.wait()
        out = _distinct.map_distinct(_text(["a", "b", "c"]), _upper_frame)
        assert _distinct._worker.broken
    assert out["v"].tolist() == ["A", "B", "C"]


def test_one_value_standardizers_equal_the_frame_path_on_generated_registries():
    """Each one-value standardizer built on column arrays (no one-row frame) gives exactly the
    values and types ``map_one`` read from the frame the batch path builds, for every distinct
    raw value of three generated, corrupted registries plus hand-picked messy ones."""
    import functools

    from linkage import schema
    from linkage.standardize import dates, idnumber, names, phone
    from linkage.standardize._distinct import map_one
    from linkage.synth import generate

    result = generate(300, seed=11, corruption=2.0)
    # the registries' own headers (as their configs map them)
    headers = {
        schema.NAME: ("姓名", "居民姓名"),
        schema.PHONE: ("联系电话",),
        schema.ID_NUMBER: ("公民身份号码", "证件号码"),
        schema.BIRTH_DATE: ("出生日期",),
    }
    raw = {
        field: pd.concat(
            [t[h] for t in (result.police, result.civil_affairs, result.health)
             for h in columns if h in t]
        )
        for field, columns in headers.items()
    }  # fmt: skip
    extra = {
        schema.NAME: ["欧阳娜娜", " 张 伟 ", "買買提·艾力", "ZHANG Wei", "不详", "x", "\t"],
        schema.PHONE: ["13800138000", "138****1234", "010-12345678-8001", "+86 13912345678",
                       "13912345678;13812345678", "88888888", 13912345678.0, "1391234567８"],
        schema.ID_NUMBER: ["44030419851107123x", "1.10105194912310e+17", "不详", "12345"],
        schema.BIRTH_DATE: ["1985-3-7", "85.03.07", "2099-01-01", "29-06-15", "不详", 19850307.0],
    }  # fmt: skip
    pairs = {
        schema.NAME: (
            functools.partial(names._names_frame, field=schema.NAME),
            lambda v: names.standardize_name(v, field=schema.NAME),
        ),
        schema.PHONE: (phone._phones_distinct, phone.standardize_phone),
        schema.ID_NUMBER: (idnumber._standardize_distinct, None),
        schema.BIRTH_DATE: (
            functools.partial(dates._parse_distinct, pivot_year=30, limit="2026-01-01"),
            functools.partial(dates._parse_columns, pivot_year=30, limit="2026-01-01"),
        ),
    }
    checked = 0
    for field, (frame_func, one) in pairs.items():
        values = [v for v in pd.unique(raw[field].dropna().to_numpy(dtype=object)) if v != ""]
        values = values[:250] + extra[field]
        for value in values:
            expected = map_one(value, frame_func)
            if field == schema.ID_NUMBER:
                got = map_one(value, idnumber._id_columns)
            elif field == schema.BIRTH_DATE:
                got = map_one(value, one)
            else:
                got = one(value)
            assert list(got) == list(expected), (field, value)
            for col, want in expected.items():
                assert type(got[col]) is type(want), (field, value, col, got[col], want)
                assert got[col] is want or got[col] == want, (field, value, col, got[col], want)
            checked += 1
    assert checked > 600


def _join_flags_per_row(*parts: pd.Series) -> pd.Series:
    """join_flags as it was: the parts folded row by row."""
    from linkage import schema

    result = None
    for part in parts:
        values = part.fillna("").to_numpy(dtype=object)
        if result is None:
            result = values
            continue
        both = (result != "") & (values != "")
        result = np.where(both, result + schema.QUALITY_SEP + values, result + values)
    return pd.Series(result, index=parts[0].index, dtype=object)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(1, 5), st.integers(0, 30))
def test_flags_joined_per_distinct_combination_equal_the_per_row_join(data, n_parts, n):
    from linkage.standardize.combine import join_flags

    flag = st.one_of(st.none(), st.sampled_from(["", "a", "b_x", "a|c", "张"]))
    parts = [
        pd.Series(data.draw(st.lists(flag, min_size=n, max_size=n)), dtype=object,
                  index=np.arange(n) * 2 + 1)
        for _ in range(n_parts)
    ]  # fmt: skip
    got = join_flags(*parts)
    want = _join_flags_per_row(*parts)
    assert got.dtype == object
    assert got.index.equals(want.index)
    assert got.tolist() == want.tolist()


def test_warmed_worker_answers_each_call_with_its_own_reply():
    worker = _distinct._Worker()
    try:
        worker.warm(["json", "linkage.no_such_module"])  # a failed warm-up is dropped too
        worker.send(len, [1, 2, 3])
        assert worker.receive() == 3
        worker.send(sorted, [3, 1])
        assert worker.receive() == [1, 3]
    finally:
        worker.close()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.booleans(), max_size=30), st.sampled_from(["id_not_own", "x_y"]))
def test_a_flag_part_joins_as_the_fixed_width_text_it_replaces(flagged, code):
    """A cross-field flag part as an object array of two strings joins to what the text
    array of ``np.where(flagged, code, "")`` joined to, with and without other parts."""
    from linkage.standardize.combine import _flag_part, join_flags

    index = pd.RangeIndex(len(flagged))
    part = _flag_part(pd.Series(flagged, index=index, dtype=bool), code, index)
    assert part.dtype == object and part.index.equals(index)
    old = pd.Series(np.where(np.asarray(flagged, dtype=bool), code, ""), index=index)
    assert part.tolist() == old.tolist()
    other = pd.Series(["a" if i % 3 else "" for i in range(len(flagged))], index=index, dtype=object)
    assert join_flags(other, part).tolist() == join_flags(other, old).tolist()
    assert join_flags(part, other).tolist() == join_flags(old, other).tolist()


def test_standardize_keeping_some_columns_equals_the_full_table_cut(tmp_path):
    # a spilling run keeps the columns its stages read: raw and derived columns outside
    # them are dropped field by field, yet the kept ones equal the full table's, in order
    from linkage.pipeline import run_columns
    from linkage.standardize.combine import _READ_LATER

    generate(400, seed=5, output=tmp_path)
    config = load_config(tmp_path / "run.yaml")
    raw_records = read_sources(config)
    full = standardize(raw_records)
    keep = run_columns(config)
    cut = standardize(raw_records.copy(), keep=keep)
    expected = [c for c in full.columns if c in keep]
    assert list(cut.columns) == expected
    pd.testing.assert_frame_equal(cut, full[expected])
    # something of each kind was dropped: a raw field, a derived column
    dropped = set(full.columns) - set(cut.columns)
    assert {schema.PHONE, schema.BIRTH_DATE} <= dropped
    assert schema.name_col(schema.NAME, "script") in dropped
    # every kept column views only its own memory: the dropped ones are freed
    for col in cut.columns:
        if isinstance(cut[col].dtype, np.dtype):
            assert held_alone(cut[col].to_numpy()), col
    # a keep list without the columns read later (by the hukou address and the
    # cross-field checks) still flags cross-field conflicts
    assert not _READ_LATER & {schema.ROW, schema.QUALITY_FLAGS}
    small = standardize(raw_records.copy(), keep={schema.ROW, schema.QUALITY_FLAGS})
    assert list(small.columns) == [schema.ROW, schema.QUALITY_FLAGS]
    pd.testing.assert_series_equal(small[schema.QUALITY_FLAGS], full[schema.QUALITY_FLAGS])
    assert full[schema.QUALITY_FLAGS].str.contains("id_birth_conflict").any()


def test_a_worker_whose_parent_is_gone_exits_without_a_traceback():
    import pickle
    import subprocess
    import sys

    worker = subprocess.Popen(
        [sys.executable, "-m", "linkage.standardize._worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    worker.stdout.close()  # the parent's end of the replies is gone, as when it is killed
    pickle.dump((len, "x"), worker.stdin)  # its reply meets a closed pipe
    worker.stdin.close()
    assert worker.wait(timeout=60) == 0
    assert b"Traceback" not in worker.stderr.read()


def test_ctrl_c_stops_a_busy_worker_without_a_traceback():
    """Ctrl-C reaches the worker as well as the run (one process group): it stops, and
    only the run says `interrupted` (the worker printed a KeyboardInterrupt traceback)."""
    import pickle
    import signal
    import subprocess
    import time

    # Ctrl-C's default action in the worker whatever started the tests: a background job of
    # a non-interactive shell (`pytest &` in a script) runs with SIGINT ignored, which its
    # children inherit, and a worker that ignores it could not show what this test checks
    worker = subprocess.Popen(
        [sys.executable, "-m", "linkage.standardize._worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    pickle.dump((len, "ready"), worker.stdin)
    pickle.dump((time.sleep, 60), worker.stdin)  # busy in a call when the signal comes
    worker.stdin.flush()
    assert pickle.load(worker.stdout) == (True, 5)
    time.sleep(0.3)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=30) == 130
    assert worker.stderr.read() == b""


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def _blocked_writing(pid: int) -> bool:
    # pipe_write since Linux 5.5, pipe_wait before
    return any(name in _wchan(pid) for name in ("pipe_write", "pipe_wait"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, sends SIGSTOP")
def test_a_reply_survives_the_worker_being_stopped_and_continued(monkeypatch):
    # Ctrl-Z then fg, or a scheduler suspending the job, while the worker writes a reply
    # bigger than the pipe; under PYTHONUNBUFFERED (many container images) the worker's raw
    # stdout ended that write early and the rest of the reply was lost
    import signal
    import threading
    import time

    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    worker = _distinct._Worker()
    try:
        worker.send(np.arange, 4_000_000)  # a 32 MB reply: the worker blocks on the full pipe
        deadline = time.monotonic() + 60
        named = False  # wchan names a kernel function (a running process reads "0")
        while not _blocked_writing(worker.proc.pid):
            named = named or _wchan(worker.proc.pid) not in ("", "0")
            if time.monotonic() > deadline and not named:
                pytest.skip("this kernel does not say where a process sleeps (/proc/PID/wchan)")
            assert time.monotonic() < deadline, "the worker never blocked writing its reply"
            time.sleep(0.01)
        os.kill(worker.proc.pid, signal.SIGSTOP)
        time.sleep(0.05)
        os.kill(worker.proc.pid, signal.SIGCONT)
        got: list = []
        reader = threading.Thread(target=lambda: got.append(worker.receive()), daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "the reply was cut short: receive waits forever"
        np.testing.assert_array_equal(got[0], np.arange(4_000_000))
    finally:
        worker.close(kill=True)


def test_what_a_call_prints_does_not_reach_the_reply_stream():
    worker = _distinct._Worker()
    try:
        worker.send(print, "printed by a library, not a reply")
        assert worker.receive() is None
        worker.send(len, "abc")
        assert worker.receive() == 3
    finally:
        worker.close()


def test_a_worker_started_without_stderr_still_answers():
    # a parent started with 2>&- (or a daemon): Python gives the worker sys.stderr None
    import pickle
    import subprocess

    start = (
        "import os, sys; os.close(2); "
        "os.execv(sys.executable, [sys.executable, '-m', 'linkage.standardize._worker'])"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", start], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    replies, _ = worker.communicate(pickle.dumps((len, "abc")), timeout=60)
    assert pickle.loads(replies) == (True, 3)
    assert worker.returncode == 0


def test_a_reply_is_read_while_a_later_call_is_still_being_written():
    """Two large calls in flight (a field sent ahead while the one before is answered): the
    worker writes the first reply before it reads the second call, so reading that reply
    must not wait for the second call's write to finish."""
    import threading

    worker = _distinct._Worker()
    big = ["张伟" * 20] * 200_000  # ~12 MB each way, far over a pipe's 64 kB
    replies: list = []
    try:
        worker.send(list, big)
        worker.send(list, big[:150_000])
        reader = threading.Thread(
            target=lambda: replies.extend([worker.receive(), worker.receive()])
        )
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "the replies were never read"
        assert replies == [big, big[:150_000]]
    finally:
        worker.close(kill=True)


def _frame_of(column):
    # a function the worker can import (pandas'), giving a one-column frame of its values
    return functools.partial(pd.DataFrame, columns=[column])


def test_fields_sent_ahead_are_taken_in_order_and_give_the_plain_results(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    first = pd.Series(["b", "a", None, "b", "c", "d"], dtype=object)
    second = pd.Series(["x", "y", "x", "z", None], dtype=object)
    other = pd.Series(["p", "q", "p"], dtype=object)
    plain = [_distinct.map_distinct(v, _frame_of(c)) for v, c in ((first, "v"), (second, "w"))]
    sends = []
    send = _distinct._Worker.send
    monkeypatch.setattr(
        _distinct._Worker, "send", lambda self, f, a: (sends.append(list(a)), send(self, f, a))
    )
    with _distinct.worker_process():
        _distinct.send_ahead(first, _frame_of("v"))
        _distinct.send_ahead(second, _frame_of("w"))
        assert sends == [["c", "d"], ["z"]]  # the worker's shares went before any call
        # a call nobody sent ahead runs here whole: the worker owes replies to earlier calls
        assert _distinct.map_distinct(other, _frame_of("u"))["u"].tolist() == ["p", "q", "p"]
        assert len(sends) == 2
        # an equal partial (a new object) takes the field sent ahead
        pd.testing.assert_frame_equal(_distinct.map_distinct(first, _frame_of("v")), plain[0])
        pd.testing.assert_frame_equal(_distinct.map_distinct(second, _frame_of("w")), plain[1])
        assert not _distinct._ahead
        assert _distinct._worker.proc.poll() is None
    assert not _distinct._ahead


def test_dropping_fields_sent_ahead_stops_a_worker_that_owes_replies(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    values = pd.Series(["a", "b", "c", "d"], dtype=object)
    with _distinct.worker_process():
        _distinct.warm_up(["linkage.standardize.combine"])  # a warm-up reply still owed too
        _distinct.send_ahead(values, _frame_of("v"))
        _distinct.drop_ahead()
        assert _distinct._worker.proc is None and not _distinct._ahead
        # the next call starts a new worker, which owes no earlier reply
        out = _distinct.map_distinct(_text(["e", "f", "g"]), _frame_of("v"))
        assert out["v"].tolist() == ["e", "f", "g"]
        assert _distinct._worker.proc is not None


def test_an_error_here_leaves_the_later_fields_sent_ahead_to_this_process(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    failing = _text(["xyz", "efg", "ab", "cd"])  # _letter_pairs fails on this half
    later = pd.Series(["a", "b", "c", "b"], dtype=object)
    with _distinct.worker_process():
        _distinct.send_ahead(failing, _letter_pairs)
        _distinct.send_ahead(later, _frame_of("v"))
        with pytest.raises(ValueError):
            _distinct.map_distinct(failing, _letter_pairs)
        assert _distinct._worker.proc is None  # killed: its replies would be out of step
        out = _distinct.map_distinct(later, _frame_of("v"))
    assert out["v"].tolist() == ["a", "b", "c", "b"]


def test_a_standardizing_field_that_raises_drops_the_fields_sent_after_it(
    raw_records, monkeypatch
):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 10)
    monkeypatch.setattr("linkage.standardize.combine.PARALLEL_MIN_DISTINCT", 10)

    def broken(values, field=schema.NAME):
        raise RuntimeError("name tables missing")

    monkeypatch.setattr("linkage.standardize.names.standardize_names", broken)
    with pytest.raises(RuntimeError, match="name tables"):
        standardize(raw_records, parallel=True)
    assert not _distinct._ahead and _distinct._worker is None


def _mixed(values):
    """A normalizer with every kind of column map_distinct meets: text with None and NaN,
    bool, a pandas string dtype, quality flags, unhashable values, and a copy of the input."""
    return pd.DataFrame(
        {
            "text": np.array([v.upper() if len(v) > 1 else None for v in values], dtype=object),
            "nan": np.array([np.nan if v == "b" else v[-1] for v in values], dtype=object),
            "flag": [len(v) > 1 for v in values],
            "str": pd.array([v[:1] for v in values], dtype="string"),
            "quality_flags": np.array(["short" if len(v) == 1 else "" for v in values], dtype=object),
            "lists": pd.Series([[v] for v in values], dtype=object),
            "same": np.array(["".join(list(v)) for v in values], dtype=object),  # a new object
        }
    )


_MIXED_NULL = {"text": None, "nan": None, "flag": False, "str": None, "quality_flags": "",
               "lists": None, "same": None}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "cd", "CD", "ef", "a b"]))),
    st.integers(0, 8),
)
def test_map_distinct_gives_each_row_its_values_result_whole_or_in_two_parts(values, cut):
    series = pd.Series([None if v is None else "".join(list(v)) for v in values], dtype=object)
    out = _distinct.map_distinct(series, _mixed, null_row={"flag": False})
    assert list(out.columns) == list(_MIXED_NULL) and out.index.equals(series.index)
    for i, v in enumerate(series):
        want = _MIXED_NULL if v is None else _mixed([v]).iloc[0].to_dict()
        for col, expected in want.items():
            got = out[col].iloc[i]
            if col != "flag":
                expected = None if expected is not None and np.all(pd.isna(expected)) else expected
            assert got == expected or (got is None and expected is None), (v, col, got)
    # text as str or None in dtype object columns, one object per distinct value, and a
    # derived value equal to an input held as that input's own object
    for col in ("text", "nan", "str", "quality_flags", "same"):
        assert out[col].dtype == object
        present = [x for x in out[col] if x is not None]
        assert len({id(x) for x in present}) == len(set(present))
    inputs = {id(x) for x in series if x is not None}
    assert all(id(x) in inputs for x in out["same"] if x is not None)
    # the worker's part and this process's joined give what the whole gives
    distinct = list(pd.unique(series.dropna()))
    k = min(cut, len(distinct))
    joined = _distinct._join(
        _distinct._coded(_mixed(distinct[:k])), _distinct._coded(_mixed(distinct[k:]))
    )
    whole = _distinct._coded(_mixed(distinct))
    assert joined.length == whole.length == len(distinct)
    for col in whole.columns:
        assert _distinct._plain(joined, col).tolist() == _distinct._plain(whole, col).tolist()


def test_parts_with_different_columns_are_refused():
    first = _distinct._coded(pd.DataFrame({"a": ["x"]}))
    second = _distinct._coded(pd.DataFrame({"b": ["y"]}))
    with pytest.raises(ValueError, match="different columns"):
        _distinct._join(first, second)


def _long_texts(tag):
    # replies and calls far over a pipe's 64 kB
    return pd.Series([f"{tag}{i:07d}" * 8 for i in range(40_000)], dtype=object)


def _within(seconds, work):
    """Run ``work`` in a thread; fail (instead of hanging the suite) when it is not done."""
    import threading

    done: list = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert done, f"still waiting after {seconds} s"
    return done[0]


def test_values_sent_ahead_under_another_function_are_dropped_not_left_at_the_head(
    monkeypatch,
):
    """A date parser built again after midnight differs from the one sent ahead: that
    field and the ones after it must not stay owed while more fields are sent."""
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    a, b, c = _long_texts("a"), _long_texts("b"), _long_texts("c")

    def fields():
        with _distinct.worker_process():
            _distinct.send_ahead(a, _frame_of("v"))
            first = _distinct.map_distinct(a, _frame_of("w"))  # not the function sent
            _distinct.send_ahead(b, _frame_of("v"))
            _distinct.send_ahead(c, _frame_of("v"))
            return first, _distinct.map_distinct(b, _frame_of("v")), _distinct.map_distinct(
                c, _frame_of("v")
            )

    first, second, third = _within(60, fields)
    assert first["w"].tolist() == a.tolist()
    assert second["v"].tolist() == b.tolist() and third["v"].tolist() == c.tolist()


def test_a_third_field_sent_ahead_is_not_sent_until_a_reply_is_read(monkeypatch):
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    parts = [_long_texts(t) for t in "xyz"]

    def fields():
        with _distinct.worker_process():
            for part in parts:
                _distinct.send_ahead(part, _frame_of("v"))
            assert [a.proc is not None for a in _distinct._ahead] == [True, True, False]
            return [_distinct.map_distinct(p, _frame_of("v")) for p in parts]

    for part, out in zip(parts, _within(60, fields), strict=True):
        assert out["v"].tolist() == part.tolist()
