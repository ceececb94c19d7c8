"""Memory of a run: per-stage peak RSS in summary.json, the per-stage column lists and the
spill of the columns no linking stage reads."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import Linker, pipeline, schema
from linkage.blocking import block
from linkage.checkpoint import Checkpoints
from linkage.cluster import sibling_parts
from linkage.compare import build_comparisons, compare, pair_tf
from linkage.config import load_config
from linkage.identity import cluster_ids
from linkage.io import read_records
from linkage.linker import _spill_records, write_outputs
from linkage.merge import merge_records
from linkage.pipeline import (
    cluster_records,
    golden_columns,
    held_columns,
    link_records,
    linking_columns,
    run_columns,
    score_pairs,
    stage_columns,
    tf_rows,
)
from linkage.progress import StageMemory, _rss_bytes, release_memory
from linkage.synth import generate
from linkage.tables import column_subset, columns_of, held_alone, read_text_columns
from linkage.training import train_model

MB = 2**20


def _tracer() -> StageMemory:
    tracer = StageMemory()
    if not tracer.enabled:
        pytest.skip("no resettable peak-RSS counter on this platform")
    return tracer


def test_rss_trace_file_gets_each_sample_with_its_stage(tmp_path, monkeypatch):
    import time

    trace = tmp_path / "rss.tsv"
    monkeypatch.setenv("LINKAGE_RSS_TRACE", str(trace))
    tracer = _tracer()
    tracer.stage("reading")
    time.sleep(0.3)
    tracer.close()
    lines = [line.split("\t") for line in trace.read_text(encoding="utf-8").splitlines()]
    assert lines and all(len(parts) == 4 for parts in lines)
    assert {parts[2] for parts in lines} <= {"None", "reading"}
    assert any(parts[2] == "reading" for parts in lines)
    assert all(float(parts[1]) > 0 and float(parts[3]) > 0 for parts in lines)


def test_no_rss_trace_without_the_variable(monkeypatch):
    monkeypatch.delenv("LINKAGE_RSS_TRACE", raising=False)
    tracer = _tracer()
    assert tracer._trace is None
    tracer.close()


def test_the_peak_is_booked_to_the_stage_that_made_it():
    seen = []
    tracer = StageMemory(lambda name: seen.append(name))
    if not tracer.enabled:
        pytest.skip("no resettable peak-RSS counter on this platform")
    tracer.stage("small")
    tracer.stage("big")
    block = np.ones(300 * MB // 8)  # 300 MB touched, held past a few samples, then freed
    time.sleep(0.3)
    del block
    tracer.stage("after")
    peaks = tracer.peaks()
    assert seen == ["small", "big", "after"]  # the wrapped hook still gets every stage
    assert set(peaks) == {"small", "big", "after"}
    assert peaks["big"] >= peaks["small"] + 250 * MB
    assert peaks["big"] >= peaks["after"] + 250 * MB


def test_the_total_counts_a_worker_process_and_the_peak_does_not():
    """A stage whose child process holds 300 MB: ``totals()`` books it (the machine's memory
    the stage took), ``peaks()`` (this process) does not, and a stage begun after the child
    exited has its total back down. The stage ends while the child lives, so the walk at
    each stage's end sees it whatever the sampling thread did."""
    import subprocess
    import sys

    tracker = _tracer()
    tracker.stage("before")
    tracker.stage("worker")
    hold = "import numpy, time; b = numpy.ones(300 * 2**20 // 8); print(1, flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"1"  # its 300 MB are touched
        tracker.stage("exiting")  # books "worker" with the child alive
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    tracker.stage("after")  # "after" starts from a walk without the child
    tracker.stage("done")
    peaks, totals = tracker.peaks(), tracker.totals()
    tracker.close()
    assert set(totals) == set(peaks) == {"before", "worker", "exiting", "after"}
    assert totals["worker"] >= peaks["worker"] + 250 * MB
    assert totals["worker"] >= totals["before"] + 250 * MB
    assert totals["after"] < totals["worker"] - 250 * MB


def _burn(seconds: float) -> None:
    """Spend about ``seconds`` of this process's CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_are_booked_to_the_stage_that_spent_them():
    """This process's CPU goes to the stage that spent it; a child process's CPU too, both
    once it was waited for (``os.times``' children figures) and while it still runs (the
    walk over the live descendants), and never twice when the child exits in between."""
    import subprocess
    import sys

    tracker = _tracer()
    tracker.stage("idle")
    time.sleep(0.3)
    tracker.stage("here")
    _burn(0.4)
    tracker.stage("reaped child")
    spin = "import time\nend = time.process_time() + {}\nwhile time.process_time() < end: pass\n"
    subprocess.run([sys.executable, "-c", spin.format(0.6)], check=True)
    tracker.stage("live child")
    live = subprocess.Popen(
        [sys.executable, "-c", spin.format(0.6) + "print(1, flush=True)\nimport time; time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert live.stdout.readline().strip() == b"1"  # its 0.6 s spent, still alive
        tracker.stage("child exits")  # books "live child" with the child alive
    finally:
        live.kill()
        live.wait()  # reaped during "child exits": its CPU moves to os.times' children
        live.stdout.close()
    tracker.stage("done")
    cpu = tracker.cpu()
    tracker.close()
    assert set(cpu) == {"idle", "here", "reaped child", "live child", "child exits"}
    assert cpu["idle"] < 0.2
    assert 0.35 <= cpu["here"] < 0.9
    assert 0.55 <= cpu["reaped child"]
    assert 0.55 <= cpu["live child"]
    assert cpu["child exits"] < 0.2  # its CPU was booked while it lived, not again
    wall = tracker.wall()
    assert set(wall) == set(cpu) and wall["idle"] >= 0.3


def test_a_stage_s_cpu_is_never_negative(monkeypatch):
    """A descendant orphaned meanwhile leaves the tree walk, so the CPU total can fall
    between two readings: the stage books 0, not a negative figure."""
    from linkage import progress

    readings = iter([10.0, 10.0, 12.0, 11.0, 13.5])  # at start, then at each stage call
    monkeypatch.setattr(progress, "_cpu_seconds", lambda: next(readings))
    tracker = _tracer()
    if not tracker._cpu_kept:
        pytest.skip("this kernel does not list a process's children")
    for name in ("a", "b", "c", "done"):
        tracker.stage(name)
    tracker.close()
    assert tracker._cpu == {"a": 2.0, "b": 0.0, "c": 2.5}


def test_no_cpu_figures_where_the_kernel_does_not_list_children(monkeypatch):
    """Without /proc/PID/task/TID/children a live worker's CPU would all land in the stage
    that reaps it: no figures rather than wrong ones."""
    from linkage import progress

    monkeypatch.setattr(progress, "_children_listed", lambda: False)
    tracker = _tracer()
    tracker.stage("a")
    _burn(0.1)
    tracker.stage("done")
    assert tracker.cpu() == {} and tracker.wall() == {}
    assert tracker.peaks()  # memory figures are still kept
    tracker.close()


def test_a_walk_begun_before_a_stage_ended_is_not_booked_to_the_next(monkeypatch):
    """The sampling thread's walk over the descendants that a stage's end overtakes (it read
    a worker since gone) is dropped, not booked to the stage that follows."""
    import threading

    from linkage import progress

    tracker = _tracer()
    tracker.stage("first")
    walking, release = threading.Event(), threading.Event()
    gone = 10_000 * MB

    def slow_walk() -> int:
        if threading.current_thread().name == "linkage-stage-memory" and not walking.is_set():
            walking.set()
            release.wait(5)
            return gone  # what it saw before the stage ended: a worker since exited
        return 0  # every later walk: the worker is gone

    monkeypatch.setattr(progress, "_descendants_rss_bytes", slow_walk)
    assert walking.wait(5)  # the thread is inside a walk
    tracker.stage("second")  # the stage ends meanwhile (its own walk: nothing)
    release.set()
    time.sleep(0.3)  # the late walk returns, later samples come
    tracker.stage("done")
    totals = tracker.totals()
    tracker.close()
    assert totals["second"] < gone


def test_a_child_processes_peak_booked_raises_the_stage_total():
    tracer = _tracer()
    tracer.stage("standardizing")
    tracer.book({"standardizing": 50_000 * MB})
    tracer.stage("done")
    assert tracer.totals()["standardizing"] == tracer.peaks()["standardizing"] == 50_000 * MB
    tracer.close()


def test_done_ends_the_last_stage():
    tracer = _tracer()
    tracer.stage("only")
    tracer.stage("done")
    assert set(tracer.peaks()) == {"only"}
    tracer.close()


# ----------------------------------------------------------------------------- a small run

KEY = b"memory-test-key-0123456789"


@pytest.fixture(scope="module")
def registries(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(1200, seed=11, output=out)
    return out


@pytest.fixture(scope="module")
def config(registries):
    return load_config(registries / "run.yaml")


@pytest.fixture(scope="module")
def records(config):
    return read_records(config)


@pytest.fixture(scope="module")
def written_linker(config, tmp_path_factory) -> tuple[Linker, Path]:
    """A Linker that wrote its run on the registries, and the output folder."""
    folder = tmp_path_factory.mktemp("written")
    linker = Linker(config, id_key=KEY)
    linker.write(folder)
    return linker, folder


@pytest.fixture(scope="module")
def written(written_linker) -> Path:
    """The output folder of ``Linker.write`` on the registries (several tests read it)."""
    return written_linker[1]


def test_a_written_runs_golden_table_is_spilled_and_read_back_as_held(
    config, written_linker, monkeypatch
):
    """``Linker.write`` builds the golden table as Parquet parts under the checkpoint
    folder and writes golden_records.csv from them a range at a time; the result's
    ``golden`` is then read back from that file as the table ``Linker.run`` holds."""
    import linkage.io
    import linkage.merge

    linker, folder = written_linker
    assert not (folder / ".work").exists()  # the parts went with the checkpoints
    held = Linker(config, id_key=KEY).run().golden
    assert linker.result_.golden_parts() is None
    import pickle

    unread = pickle.loads(pickle.dumps(linker.result_))  # the reader of the file travels
    pd.testing.assert_frame_equal(linker.result_.golden, held)
    pd.testing.assert_frame_equal(unread.golden, held)
    # several ranges of rows, and a range pandas' writer renders (a cell with a comma)
    monkeypatch.setattr(linkage.merge, "GOLDEN_ROWS_AT_ONCE", 37)
    ranges: list[int] = []
    real = linkage.io._csv_arrow_table

    def rendered(frame):  # the second range of golden records through pandas' writer
        if "conflicts" not in frame.columns:
            return real(frame)  # another file's (written in another thread)
        ranges.append(len(frame))
        return None if len(ranges) == 2 else real(frame)

    monkeypatch.setattr(linkage.io, "_csv_arrow_table", rendered)
    again = folder.parent / (folder.name + "-again")
    Linker(config, id_key=KEY).write(again)
    assert len(ranges) > 2 and set(ranges[:-1]) == {37}
    assert (again / "golden_records.csv").read_bytes() == (
        folder / "golden_records.csv"
    ).read_bytes()


def test_summary_gives_the_peak_of_every_stage(written):
    if not _tracer().enabled:
        pytest.skip("no peak-RSS counter")
    summary = json.loads((written / "summary.json").read_text(encoding="utf-8"))
    peaks = summary["peak_rss_mb"]
    assert set(peaks) == set(summary["seconds"]) | {"write"}
    assert all(isinstance(v, int) and v > 0 for v in peaks.values())
    assert summary["peak_rss_stage"] == max(peaks, key=peaks.__getitem__)
    # no stage's peak is above the process's lifetime peak (getrusage is never reset)
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux gives kB
    assert max(peaks.values()) * MB <= lifetime + MB
    assert set(summary["peak_total_mb"]) == set(peaks)
    # CPU seconds per stage; counted once: together no more than this process and its
    # reaped children have used in all (the run's workers and child were waited for)
    cpu = summary["cpu_seconds"]
    assert set(cpu) == set(peaks)
    assert all(isinstance(v, float) and v >= 0 for v in cpu.values())
    assert sum(cpu.values()) > 0
    used = os.times()
    assert sum(cpu.values()) <= used.user + used.system + used.children_user + used.children_system + 0.5
    # cores busy: CPU over the stage's wall time, never above the machine's cores
    # (null for a stage under a second, so the keys are cpu_seconds' whatever the machine)
    cores = summary["cores_busy"]
    assert set(cores) == set(cpu)
    assert all(v is None or 0 <= v <= (os.cpu_count() or 1) + 0.15 for v in cores.values())


def test_run_then_write_keeps_every_stage_peak(config, tmp_path):
    """`linkage demo` runs, then writes under a second hook: the summary still has every
    stage's figure, not the write stage's alone."""
    if not _tracer().enabled:
        pytest.skip("no peak-RSS counter")
    linker = Linker(config, id_key=KEY)
    linker.run()
    linker.write(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["peak_rss_mb"]) == set(summary["seconds"]) | {"write"}


def _reader_and_scoring_spy(records: pd.DataFrame, monkeypatch):
    """A reader of ``records``' columns noting each request, the list it notes them in, and
    the list of the columns the table given to scoring held (``pipeline._score`` spied)."""
    asked: list[list[str]] = []
    scored_from: list[list[str]] = []
    score = pipeline._score

    def read(columns: list[str]) -> pd.DataFrame:
        asked.append(columns)
        return records[[c for c in columns if c in records]]

    def spy_score(table, *args, **kwargs):
        scored_from.append(list(table.columns))
        return score(table, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_score", spy_score)
    return read, asked, scored_from


def test_stages_read_only_the_columns_listed_for_them(config, records, monkeypatch):
    # link_records over records cut to the linking columns, golden records from the full
    # table by their own list: every output equals the run over the full table, so a stage
    # reading a column its list lacks (and so dropped) fails here
    full = link_records(records, config, id_key=KEY)
    cut_columns = linking_columns(config, list(records.columns))
    assert len(cut_columns) < len(records.columns)  # something is spilled
    golden_records, asked, scored_from = _reader_and_scoring_spy(records, monkeypatch)
    cut = link_records(records[cut_columns].copy(), config, id_key=KEY,
                       golden_records=golden_records)
    _assert_same_run(cut, full)
    stages = stage_columns(config, build_comparisons(config.comparison_specs()))
    golden = golden_columns(config.golden_settings())
    # from the prepared comparisons on (scoring included) only what the twin and sibling
    # checks read and the clustering columns held are held; the golden ones are read back
    # after clustering
    later = set(stages["scoring"]) | set(stages["clustering"])
    assert scored_from == [[c for c in cut_columns if c in later]]
    assert len(scored_from[0]) < len(cut_columns)
    # the table is cut before the comparisons are prepared: the comparing columns it no
    # longer holds are read back for preparing them (and dropped once prepared)
    comparing, *golden_reads = asked
    assert set(comparing) == {c for c in stages["comparing"] if c in records} - set(
        scored_from[0]
    )
    after_clustering = set(scored_from[0])
    assert [c for cols in golden_reads for c in cols] == [
        c for c in golden if c not in after_clustering
    ]
    # golden records and the result hold the keys and the golden columns
    keys = {schema.ROW, schema.SOURCE, schema.RECORD_ID}
    assert set(cut.records.columns) == (after_clustering & (set(golden) | keys))


def _assert_same_run(cut: pipeline.LinkResult, full: pipeline.LinkResult) -> None:
    pd.testing.assert_frame_equal(cut.identities, full.identities)
    pd.testing.assert_frame_equal(cut.golden, full.golden)
    pd.testing.assert_frame_equal(cut.pairs, full.pairs)
    drop = {"seconds"}  # timings differ run to run
    assert {k: v for k, v in cut.summary.items() if k not in drop} == {
        k: v for k, v in full.summary.items() if k not in drop
    }


def test_a_run_holding_only_the_blocking_columns_reads_each_stage_s_columns(
    config, records, monkeypatch
):
    # a spilling run holds the blocking and term-frequency columns through blocking; the
    # comparing columns are read back to prepare the comparisons, the clustering ones after
    # that, the golden ones last: the outputs equal the run over the full table
    full = link_records(records, config, id_key=KEY)
    stages = stage_columns(config, build_comparisons(config.comparison_specs()))
    held = held_columns(config, list(records.columns))
    assert set(held) <= set(stages["blocking"]) | set(config.model.term_frequency.values())
    assert len(held) < len(linking_columns(config, list(records.columns)))
    read, asked, scored_from = _reader_and_scoring_spy(records, monkeypatch)
    cut = link_records(records[held].copy(), config, id_key=KEY, golden_records=read)
    _assert_same_run(cut, full)
    # the comparing columns first; scoring holds only what the twin and sibling checks
    # read and the clustering columns held (all held already); the other clustering columns
    # once scoring is done, the golden ones last, one field's at a time
    comparing, clustering, *golden_reads = asked
    assert set(stages["scoring"]) <= set(held)
    later = set(stages["scoring"]) | set(stages["clustering"])
    assert scored_from == [[c for c in held if c in later]]
    # cut to scoring's and clustering's columns before preparing: the blocking-only columns
    # are not held beside the comparing ones read back
    assert set(comparing) == {c for c in stages["comparing"] if c in records} - set(
        scored_from[0]
    )
    assert len(scored_from[0]) < len(held)  # the blocking-only columns were dropped
    assert clustering == [c for c in stages["clustering"] if c not in scored_from[0]]
    golden = [c for cols in golden_reads for c in cols]
    assert len(golden) == len(set(golden))  # each column read once
    assert set(golden) == {
        c for c in golden_columns(config.golden_settings())
        if c not in set(scored_from[0]) | set(clustering)
    }
    values = {r.column for r in config.golden_settings().fields.values()}
    assert len(golden_reads) > 2 and all(len(set(cols) & values) <= 1 for cols in golden_reads)
    keys = {schema.ROW, schema.SOURCE, schema.RECORD_ID}
    assert set(cut.records.columns) <= set(stages["golden"]) | keys


@contextlib.contextmanager
def _columns_read(frame: pd.DataFrame, monkeypatch):
    """The set of ``frame``'s column names a block of code asks for: ``frame[...]``,
    ``frame.get``, ``name in frame`` and ``name in frame.columns`` are noted while it runs."""
    seen: set[str] = set()
    names = set(frame.columns)
    columns = frame.columns

    def note(key) -> None:
        keys = list(key) if isinstance(key, (list, tuple, pd.Index)) else [key]
        seen.update(k for k in keys if isinstance(k, str) and k in names)

    getitem, get = pd.DataFrame.__getitem__, pd.DataFrame.get
    contains, index_contains = pd.DataFrame.__contains__, pd.Index.__contains__

    def spy(original, target):
        def call(self, key, *args, **kwargs):
            if self is target():
                note(key)
            return original(self, key, *args, **kwargs)
        return call

    with monkeypatch.context() as patch:
        patch.setattr(pd.DataFrame, "__getitem__", spy(getitem, lambda: frame))
        patch.setattr(pd.DataFrame, "get", spy(get, lambda: frame))
        patch.setattr(pd.DataFrame, "__contains__", spy(contains, lambda: frame))
        patch.setattr(pd.Index, "__contains__", spy(index_contains, lambda: columns))
        yield seen


def test_no_stage_reads_a_column_missing_from_its_list(config, records, monkeypatch):
    # every column a stage asks the full records table for is on its list, whether or not
    # this data would show a difference without it
    comparisons = build_comparisons(config.comparison_specs())
    stages = stage_columns(config, comparisons)
    table = records.copy()
    with _columns_read(table, monkeypatch) as seen:
        pairs = block(table, config.blocking)
    assert seen <= set(stages["blocking"]), seen - set(stages["blocking"])
    with _columns_read(table, monkeypatch) as seen:
        vectors = compare(table, pairs, comparisons)
        tf = {k: pair_tf(v, vectors) for k, v in tf_rows(table, config, comparisons).items()}
    assert seen <= set(stages["comparing"]), seen - set(stages["comparing"])
    with _columns_read(table, monkeypatch) as seen:
        model = train_model(table, vectors, comparisons, config, tf)
    assert seen <= set(stages["training"]), seen - set(stages["training"])
    scored = score_pairs(vectors, model, comparisons, tf)
    with _columns_read(table, monkeypatch) as seen:
        sibling_parts(table, scored)
    assert seen <= set(stages["scoring"]), seen - set(stages["scoring"])
    with _columns_read(table, monkeypatch) as seen:
        labels = cluster_records(table, scored, config)
        cluster_ids(table, labels, KEY)
    assert seen <= set(stages["clustering"]), seen - set(stages["clustering"])
    with _columns_read(table, monkeypatch) as seen:
        merge_records(table, pd.Series(labels).astype(str), config.golden_settings())
    assert seen <= set(stages["golden"]), seen - set(stages["golden"])
    assert seen  # the spy sees reads


def test_each_stage_list_is_enough_for_its_stage(config, records):
    comparisons = build_comparisons(config.comparison_specs())
    stages = stage_columns(config, comparisons)

    def only(stage: str) -> pd.DataFrame:
        return records[[c for c in stages[stage] if c in records]].copy()

    pairs = block(records, config.blocking)
    pd.testing.assert_frame_equal(block(only("blocking"), config.blocking), pairs)
    vectors = compare(records, pairs, comparisons)
    pd.testing.assert_frame_equal(compare(only("comparing"), pairs, comparisons), vectors)
    tf = {name: pair_tf(values, vectors) for name, values in tf_rows(records, config,
                                                                        comparisons).items()}
    model = train_model(records, vectors, comparisons, config, tf)
    assert train_model(only("training"), vectors, comparisons, config, tf).to_dict() == (
        model.to_dict()
    )
    scored = score_pairs(vectors, model, comparisons, tf)
    np.testing.assert_array_equal(cluster_records(only("clustering"), scored, config),
                                  cluster_records(records, scored, config))
    ids = pd.Series(np.arange(len(records)) // 2).astype(str)
    pd.testing.assert_frame_equal(
        merge_records(only("golden"), ids, config.golden_settings()),
        merge_records(records, ids, config.golden_settings()),
    )


def test_spilled_columns_read_back_as_they_were(config, records, tmp_path):
    checkpoints = Checkpoints.open(tmp_path, config, resume=False)
    checkpoints.save("records", {"records": records})
    cut, read = _spill_records(records, config, checkpoints)
    assert list(cut.columns) == held_columns(config, list(records.columns))
    pd.testing.assert_frame_equal(cut, records[list(cut.columns)])
    columns = [c for c in records.columns if c not in cut.columns]
    assert schema.NAME in columns  # compared, not a blocking key: read back
    back = read(columns + ["no_such_column"])
    pd.testing.assert_frame_equal(back, records[columns])
    # text columns come back as object with None for missing, as standardizing made them
    assert back[schema.NAME].dtype == object
    assert all(v is None or isinstance(v, str) for v in back["registered_at"])
    # ... with one str object per distinct value, not one per row
    for col in [c for c in columns if records[c].dtype == object]:
        text = [v for v in back[col] if isinstance(v, str)]
        assert len({id(v) for v in text}) == len(set(text)), col
    # the cut keeps no memory of the full table's other columns
    for col in cut.columns:
        if isinstance(cut[col].dtype, np.dtype):
            assert held_alone(cut[col].to_numpy()), col


def test_a_spilling_run_saves_and_holds_only_the_columns_its_stages_read(config, records, tmp_path):
    # the records checkpoint (what golden records read back) and the table the run holds
    # lose every column no stage reads; the outputs stay those of the full table
    # (test_a_written_run_equals_the_run_over_the_full_records)
    checkpoints = Checkpoints.open(tmp_path, config, resume=False)
    linker = Linker(config, id_key=KEY)
    result = linker.run(checkpoints=checkpoints)
    path = checkpoints.path("records") / "records.parquet"
    wanted = run_columns(config)
    kept = [c for c in records.columns if c in wanted]
    assert pq.read_schema(path).names == kept
    assert {"phone", "birth_date", "registered_at"} <= set(records.columns) - set(kept)
    text = {c for c in kept if records[c].dtype == object}
    pd.testing.assert_frame_equal(read_text_columns(path, kept, text), records[kept])
    assert set(result.records.columns) <= wanted
    checkpoints.remove()


def test_a_spilling_run_cuts_its_records_before_the_rules_are_planned(
    config, tmp_path, monkeypatch
):
    """Once the blocking keys are coded (``blocking.key_codes``), a spilling run drops the
    table they came from before any rule is planned (``plan_keys``): the records then hold
    only what scoring and clustering read. The plan is the one made from the records whole
    (``plan_blocking``), and the run's pairs are unchanged."""
    import weakref

    from linkage.blocking import plan_blocking

    seen: dict = {}
    real_codes, real_plan = pipeline.key_codes, pipeline.plan_keys

    def key_codes(records, settings):
        seen["table"] = weakref.ref(records)
        seen["expected"] = plan_blocking(records, settings)
        return real_codes(records, settings)

    def plan_keys(coded, settings):
        gc.collect()
        seen["freed"] = seen["table"]() is None  # nothing holds the keys' table any more
        plan = real_plan(coded, settings)
        pd.testing.assert_frame_equal(plan.coded, seen["expected"].coded)
        assert plan.rows == seen["expected"].rows
        return plan

    monkeypatch.setattr(pipeline, "key_codes", key_codes)
    monkeypatch.setattr(pipeline, "plan_keys", plan_keys)
    checkpoints = Checkpoints.open(tmp_path, config, resume=False)
    result = Linker(config, id_key=KEY).run(checkpoints=checkpoints)
    checkpoints.remove()
    assert seen["freed"] is True
    monkeypatch.undo()
    held = Linker(config, id_key=KEY).run()
    assert result.summary["pairs_per_rule"] == held.summary["pairs_per_rule"]
    pd.testing.assert_frame_equal(result.identities, held.identities)


def test_column_subset_equals_the_selection_and_holds_only_its_columns():
    n = 50
    frame = pd.DataFrame(
        {
            "a": pd.Series(np.array([f"t{i % 7}" if i % 5 else None for i in range(n)], object),
                           dtype=object),
            "b": np.arange(n, dtype=np.int64),
            "c": pd.Series(np.array(["x"] * n, object), dtype=object),
            "d": pd.array([True, None] * (n // 2), dtype="boolean"),
            "e": np.linspace(0, 1, n),
            "f": np.arange(n, dtype=np.int64) * 2,
        },
        index=pd.RangeIndex(10, 10 + n),
    ).copy()  # fmt: skip
    # pandas stores b and f in one int64 block, e alone: both branches are taken
    alone = {c: held_alone(frame[c].to_numpy()) for c in ["a", "b", "e"]}
    assert alone["e"] and not alone["b"]
    cols = ["e", "a", "b", "d"]
    cut = column_subset(frame, cols)
    pd.testing.assert_frame_equal(cut, frame[cols])
    for col, was_alone in alone.items():
        # every numpy column of the cut views only its own memory: shared when the
        # frame's was held alone, else a copy
        assert held_alone(cut[col].to_numpy())
        assert np.shares_memory(cut[col].to_numpy(), frame[col].to_numpy()) is was_alone
    # a view of one column of a two-column array is not held alone; the whole array is
    both = np.zeros((2, 4))
    assert not held_alone(both[0]) and held_alone(both) and held_alone(np.zeros(3))


def test_columns_of_takes_held_columns_and_reads_the_rest(records):
    held = records[[schema.SOURCE, schema.NAME]].copy()
    asked = []

    def read(columns):
        asked.append(columns)
        return records[[c for c in columns if c in records]].reset_index(drop=True)

    frame = columns_of(held, [schema.NAME, "registered_at", "no_such_column"], read)
    assert asked == [["registered_at", "no_such_column"]]  # only what the table lacks
    assert list(frame.columns) == [schema.NAME, "registered_at"]
    pd.testing.assert_frame_equal(frame, records[[schema.NAME, "registered_at"]])
    assert frame[schema.NAME].to_numpy()[0] is held[schema.NAME].to_numpy()[0]


def _text_lists(*samples: str) -> st.SearchStrategy:
    """Lists of text written to a Parquet column: nulls, ``samples`` and any short text."""
    return st.lists(
        st.one_of(st.none(), st.sampled_from(samples), st.text(max_size=6)), max_size=60
    )


@settings(max_examples=40, deadline=None)
@given(values=_text_lists("", "张伟", "a", "b|c", "王芳"), row_group=st.integers(1, 9), large=st.booleans())
def test_text_read_back_by_dictionary_equals_the_pandas_read(tmp_path_factory, values,
                                                             row_group, large):  # fmt: skip
    # row groups of their own dictionaries (pyarrow unifies them), nulls, empty strings,
    # no rows at all: the same values as pandas reads and shared_text shares, one str each
    import pyarrow as pa

    path = tmp_path_factory.mktemp("text") / "t.parquet"
    kind = pa.large_string() if large else pa.string()
    pq.write_table(pa.table({"t": pa.array(values, kind), "n": pa.array(range(len(values)))}),
                   path, row_group_size=row_group)  # fmt: skip
    found = {}
    got = read_text_columns(path, ["t", "n"], {"t"}, factorized=found)
    assert got["t"].dtype == object
    assert got["t"].tolist() == values
    # the dictionary's codes are a factorization of the column: each value once, -1 null
    codes, uniques = found.pop("t")
    assert not found  # text columns only
    assert len(set(uniques.tolist())) == len(uniques)
    assert [None if c < 0 else uniques[c] for c in codes] == values
    expected = pd.read_parquet(path, columns=["n"])["n"]
    pd.testing.assert_series_equal(got["n"], expected)
    kept = [v for v in got["t"].to_numpy() if v is not None]
    assert len({id(v) for v in kept}) == len(set(kept))  # one object per distinct value


@settings(max_examples=40, deadline=None)
@given(values=_text_lists("", "张伟", "a", "𠀀"), row_group=st.integers(1, 9), large=st.booleans())
def test_text_read_back_as_arrow_equals_the_object_read(tmp_path_factory, values, row_group,
                                                        large):  # fmt: skip
    """``read_arrow_text_columns``: the same values as ``read_text_columns``, in the order
    asked, text as pandas' Arrow-backed text where pandas holds text so (objects else);
    a column of Arrow's null type and a number column read as the object reader reads them."""
    import pyarrow as pa

    from linkage.tables import TEXT_DTYPE, read_arrow_text_columns

    path = tmp_path_factory.mktemp("text") / "t.parquet"
    kind = pa.large_string() if large else pa.string()
    table = pa.table(
        {
            "n": pa.array(range(len(values))),
            "t": pa.array(values, kind),
            "none": pa.array([None] * len(values), pa.null()),
        }
    )
    pq.write_table(table, path, row_group_size=row_group)
    asked = ["t", "missing", "none", "n"]
    got = read_arrow_text_columns(path, asked, {"t", "none"})
    want = read_text_columns(path, asked, {"t", "none"})
    assert list(got.columns) == ["t", "none", "n"] == list(want.columns)
    assert got["t"].tolist() == values or got["t"].isna().tolist() == [v is None for v in values]
    assert [None if pd.isna(v) else v for v in got["t"]] == values
    assert got["t"].dtype == (TEXT_DTYPE if getattr(TEXT_DTYPE, "storage", None) == "pyarrow"
                              else object)  # fmt: skip
    pd.testing.assert_series_equal(got["none"], want["none"])
    pd.testing.assert_series_equal(got["n"], want["n"])


@settings(max_examples=40, deadline=None)
@given(values=_text_lists("", " ", "张伟", "a", "𠀀"), row_group=st.integers(1, 9), large=st.booleans())
def test_text_read_as_dictionaries_groups_and_reads_back_as_the_object_read(
    tmp_path_factory, values, row_group, large
):
    """``read_dictionary_columns``: codes per row, no Python object per value; factorized
    it gives ``pd.factorize``'s codes and values of the object column, its rows
    ``to_numpy``'s, its term frequencies the object column's, and made objects it is
    ``read_text_columns``' column (one ``str`` per distinct value)."""
    import pyarrow as pa

    from linkage.compare import term_frequencies
    from linkage.tables import (
        dictionaries_as_objects,
        dictionary_codes,
        factorize_text,
        read_dictionary_columns,
        text_at,
    )

    path = tmp_path_factory.mktemp("text") / "t.parquet"
    kind = pa.large_string() if large else pa.string()
    pq.write_table(pa.table({"n": pa.array(range(len(values))), "t": pa.array(values, kind)}),
                   path, row_group_size=row_group)  # fmt: skip
    got = read_dictionary_columns(path, ["t", "n"], {"t"})
    want = read_text_columns(path, ["t", "n"], {"t"})
    assert list(got.columns) == ["t", "n"]
    assert dictionary_codes(got["t"]) is not None  # codes, not objects
    assert dictionary_codes(want["t"]) is None
    codes, uniques = factorize_text(got["t"])
    want_codes, want_uniques = pd.factorize(want["t"])
    np.testing.assert_array_equal(codes, want_codes)
    assert list(uniques) == list(want_uniques)
    rows = np.arange(len(values))[::2]
    assert text_at(got["t"], rows).tolist() == want["t"].to_numpy()[rows].tolist()
    np.testing.assert_array_equal(term_frequencies(got, "t"), term_frequencies(want, "t"))
    back = dictionaries_as_objects(got)
    pd.testing.assert_frame_equal(back, want)
    kept = [v for v in back["t"] if v is not None]
    assert len({id(v) for v in kept}) == len(set(kept))  # one object per distinct value
    assert dictionaries_as_objects(want) is want  # nothing to turn


@settings(max_examples=60, deadline=None)
# no lone surrogate: Arrow text is UTF-8, which cannot hold one (pyarrow refuses it)
@given(values=st.lists(st.one_of(st.none(),
                                 st.text(alphabet=st.characters(exclude_categories=("Cs",)),
                                         max_size=4),
                                 st.text(alphabet=" \t\u3000\x1c\x85\xa0\u200b\ufeff",
                                         max_size=3)), max_size=40))  # fmt: skip
def test_blank_text_is_python_s_strip_test(values):
    # every character Python's str.isspace calls whitespace, and look-alikes it does not
    # (zero-width space, byte order mark): the same answer as ``not value.strip()``
    import sys

    import pyarrow as pa

    from linkage.tables import blank_text

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    values = values + spaces + ["".join(spaces), "\u200b", "a ", ""]
    got = blank_text(pa.array(values, pa.large_string()))
    assert got.tolist() == [v is not None and not v.strip() for v in values]


def test_a_dictionary_repeating_a_value_is_read_as_objects(tmp_path):
    # a file whose dictionary holds a value twice (not one pyarrow writes from text, but
    # a valid file) cannot be grouped by its codes: read as str objects instead
    import pyarrow as pa

    from linkage.tables import dictionary_codes, factorize_text, read_dictionary_columns

    path = tmp_path / "t.parquet"
    column = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, None, 2, 1], pa.int32()), pa.array(["a", "a", "b"])
    )
    pq.write_table(pa.table({"t": column}), path)
    got = read_dictionary_columns(path, ["t"], {"t"})
    assert dictionary_codes(got["t"]) is None
    assert got["t"].tolist() == ["a", "a", None, "b", "a"]
    codes, uniques = factorize_text(got["t"])
    assert codes.tolist() == [0, 0, -1, 1, 0] and list(uniques) == ["a", "b"]


def test_blocking_plans_the_same_on_records_read_as_dictionaries(config, records, tmp_path):
    """What a spilling run holds through blocking (``Linker``: the records checkpoint's
    blocking columns read as dictionaries) gives the same coded keys, refinement columns,
    report rows, term frequencies and pairs as the same columns held as objects."""
    import pyarrow as pa

    from linkage.blocking import plan_blocking
    from linkage.compare import term_frequencies
    from linkage.tables import dictionary_codes, read_dictionary_columns

    held = held_columns(config, list(records.columns))
    as_objects = records[held].copy()
    # blank text among them: a key's blank values must still be nulls, not a shared key
    for col in (schema.name_col(schema.NAME, "pinyin"), schema.name_col(schema.NAME, "clean")):
        as_objects.loc[as_objects.index[:5], col] = " "
    path = tmp_path / "held.parquet"
    as_objects.to_parquet(path)
    text = {c for c in held if as_objects[c].dtype == object}
    as_codes = read_dictionary_columns(path, held, text)
    stored = {f.name for f in pq.read_schema(path) if f.type in (pa.string(), pa.large_string())}
    assert len(stored & text) > 10
    assert all(dictionary_codes(as_codes[c]) is not None for c in stored & text)
    settings_ = config.blocking
    got, want = plan_blocking(as_codes, settings_), plan_blocking(as_objects, settings_)
    pd.testing.assert_frame_equal(got.coded, want.coded)
    assert got.refine_columns == want.refine_columns and got.rows == want.rows
    for column in config.model.term_frequency.values():
        np.testing.assert_array_equal(
            term_frequencies(as_codes, column), term_frequencies(as_objects, column)
        )
    pairs = block(None, settings_, plan=got)
    assert len(pairs) > 100
    pd.testing.assert_frame_equal(pairs, block(None, settings_, plan=want))


def test_a_written_run_equals_the_run_over_the_full_records(config, written, tmp_path):
    # Linker.write holds the cut table and reads golden columns back; Linker.run keeps
    # every column: the files are byte-identical
    write_outputs(Linker(config, id_key=KEY).run(), tmp_path / "full", config)
    for name in ("identities.csv", "golden_records.csv", "cluster_sizes.csv"):
        assert (written / name).read_bytes() == (tmp_path / "full" / name).read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(written / "pairs.parquet"),
                                  pd.read_parquet(tmp_path / "full" / "pairs.parquet"))


def test_a_run_over_its_memory_limit_says_where(config, tmp_path, caplog):
    if not _tracer().enabled:
        pytest.skip("no peak-RSS counter")
    tight = config.model_copy(update={"run": config.run.model_copy(update={"memory_limit": "64MB"})})
    result = Linker(tight, id_key=KEY).run()
    over = result.summary["over_memory_limit"]
    assert over and set(over) <= set(result.summary["peak_total_mb"])
    assert "run.memory_limit 64MB exceeded" in caplog.text
    roomy = config.model_copy(update={"run": config.run.model_copy(update={"memory_limit": "1TB"})})
    assert Linker(roomy, id_key=KEY).run().summary["over_memory_limit"] == []
    # writing outputs is checked too, once its figure is known
    caplog.clear()
    Linker(tight, id_key=KEY).write(tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert "write" in summary["over_memory_limit"]
    assert "write " in caplog.text.split("run.memory_limit 64MB exceeded")[-1]
    totals = summary["peak_total_mb"]
    assert summary["peak_total_stage"] == max(totals, key=totals.__getitem__)


def test_run_prints_the_peak_and_its_stage(registries, tmp_path):
    if not _tracer().enabled:
        pytest.skip("no peak-RSS counter")
    from typer.testing import CliRunner

    from linkage.cli import app

    got = CliRunner().invoke(app, ["run", str(registries / "run.yaml"), "--output",
                                   str(tmp_path)])
    assert got.exit_code == 0, got.output
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    line = next(x for x in got.stdout.splitlines() if x.startswith("peak memory:"))
    stage = summary["peak_rss_stage"]
    # MB with thousands separators, as every count the CLI prints (a test process's own
    # peak passes 1,000 MB)
    assert f"GB in {stage}" in line and f"{stage} {summary['peak_rss_mb'][stage]:,}" in line
    totals = summary["peak_total_mb"]
    line = next(x for x in got.stdout.splitlines() if x.startswith("all processes:"))
    top = max(totals, key=totals.__getitem__)
    assert f"{totals[top] / 1024:.2f} GB in {top}" in line
    line = next(x for x in got.stdout.splitlines() if x.startswith("cpu seconds:"))
    assert all(f"{k} {v:.1f}" in line for k, v in summary["cpu_seconds"].items())
    assert all(f"({v:.2f} cores)" in line for v in summary["cores_busy"].values() if v is not None)


def test_release_memory_hands_freed_heap_pages_back():
    if not _tracer().enabled:
        pytest.skip("no RSS figures")
    import ctypes.util

    if "musl" in (ctypes.util.find_library("c") or ""):
        pytest.skip("no malloc_trim")
    # 300 MB of strings from malloc (over Python's small-object size), every 20th kept so the
    # heap cannot shrink from its top by itself
    texts = [("x" * 1000) + str(i) for i in range(300_000)]
    kept = texts[::20]
    del texts
    before = _rss_bytes()
    release_memory()
    assert _rss_bytes() < before - 150 * MB
    assert len(kept) == 15_000


def test_a_wide_table_is_written_in_smaller_row_groups_and_reads_back_the_same(
    records, tmp_path, monkeypatch
):
    import pyarrow.parquet as pq

    import linkage.io

    whole = pd.read_parquet(linkage.io.write_parquet(records, tmp_path / "whole.parquet"))
    assert pq.ParquetFile(tmp_path / "whole.parquet").metadata.num_row_groups == 1
    # cells per row group: 50 rows of this table's columns
    monkeypatch.setattr(linkage.io, "PARQUET_CELLS_AT_ONCE", 50 * records.shape[1])
    path = linkage.io.write_parquet(records, tmp_path / "groups.parquet")
    groups = pq.ParquetFile(path).metadata
    assert groups.num_row_groups == -(-len(records) // 50)
    assert groups.row_group(0).num_rows == 50
    pd.testing.assert_frame_equal(pd.read_parquet(path), whole)


_HEAP_PROBE = """
import json, os, sys
import numpy as np
from linkage.progress import return_freed_memory
set_ = return_freed_memory() if sys.argv[1] == "1" else {}
import pyarrow as pa
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base = rss()
for _ in range(3):
    a = np.ones(2_000_000)  # 16 MB: glibc raises its threshold to this when it is freed
    del a
    b = [np.ones(100_000) for _ in range(50)]  # 50 blocks of 800 KB: then in the heap
    del b
print(json.dumps({"set": set_, "pool": pa.default_memory_pool().backend_name,
                  "kept_mb": (rss() - base) / 2**20}))
"""


def _heap_probe(on: bool, env: dict | None = None) -> dict:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _HEAP_PROBE, "1" if on else "0"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    return json.loads(proc.stdout)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="Linux only")
def test_return_freed_memory_gives_large_freed_blocks_back():
    import os
    import platform

    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")}  # fmt: skip
    on = _heap_probe(True, env)
    assert on["pool"] == "system" and on["set"]["arrow_pool"] == "system"
    if platform.libc_ver()[0] != "glibc":
        return
    assert on["set"]["mmap_threshold"] == str(32 * 1024 * 1024)
    off = _heap_probe(False, env)
    # glibc's own rule keeps the freed blocks' pages in its heap (the 16 MB block raised
    # its thresholds); with the threshold fixed the heap's free top goes back at once
    assert on["kept_mb"] < 1.0
    assert off["kept_mb"] > on["kept_mb"] + 4.0


def test_stage_memory_hands_free_heap_pages_back_at_each_stage(monkeypatch):
    from linkage import progress

    calls = []
    monkeypatch.setattr(progress, "release_memory", lambda: calls.append(1))
    tracker = progress.StageMemory()
    try:
        tracker.stage("reading")
        tracker.stage("standardizing")
        tracker.stage("done")
    finally:
        tracker.close()
    assert len(calls) == 3


def test_stage_memory_sets_each_stage_threshold_only_once_asked(monkeypatch):
    from linkage import progress

    monkeypatch.setattr(progress, "release_memory", lambda: None)
    set_to = []
    monkeypatch.setattr(progress, "_set_mmap_threshold", lambda size: set_to.append(size) or True)
    # the library alone leaves the allocator as it is
    monkeypatch.setattr(progress, "_STAGE_THRESHOLDS", {})
    tracker = progress.StageMemory()
    tracker.stage("scoring")
    assert set_to == []
    # once `linkage run` asked: large blocks from the heap until clustering, mapped after
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert progress.return_freed_memory()["mmap_threshold"] == str(progress.MMAP_THRESHOLD)
    set_to.clear()
    for name in ("standardizing", "scoring", "clustering", "building golden records"):
        tracker.stage(name)
    tracker.close()
    small, large = progress.SMALL_MMAP_THRESHOLD, progress.MMAP_THRESHOLD
    assert set_to == [large, large, small, small]


def test_return_freed_memory_leaves_settings_given_in_the_environment():
    import os

    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "1048576",
        "ARROW_DEFAULT_MEMORY_POOL": "mimalloc",
    }
    got = _heap_probe(True, env)
    assert got["set"] == {} and got["pool"] == "mimalloc"


_KEY = st.sampled_from(["bool", "small", "wide", "int64", "uint64", "int8"])


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(0, 40), st.lists(_KEY, min_size=1, max_size=6))
def test_packed_lexsort_equals_np_lexsort(data, n, kinds):
    from linkage.tables import packed_lexsort

    keys = []
    for kind in kinds:
        if kind == "bool":
            values = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        elif kind == "small":
            values = np.array(data.draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)))
        elif kind == "wide":
            values = np.array(
                data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n))
            )
        elif kind == "int64":
            values = np.array(
                data.draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
                dtype=np.int64,
            )
        elif kind == "uint64":
            values = np.array(
                data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)),
                dtype=np.uint64,
            )
        else:
            values = np.array(
                data.draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n)), dtype=np.int8
            )
        keys.append(values)
    assert (packed_lexsort(tuple(keys)) == np.lexsort(tuple(keys))).all()


def test_packed_lexsort_packs_keys_that_fit_and_leaves_the_rest_to_lexsort(monkeypatch):
    from linkage import tables

    calls = []
    real = np.lexsort
    monkeypatch.setattr(tables.np, "lexsort", lambda keys: calls.append(1) or real(keys))
    rng = np.random.default_rng(3)
    fits = (np.arange(1000), rng.integers(0, 5, 1000), rng.random(1000) < 0.5)
    assert (tables.packed_lexsort(fits) == real(fits)).all()
    assert not calls  # packed: 10 + 3 + 1 bits
    too_wide = (rng.integers(-(2**62), 2**62, 1000), rng.integers(-(2**62), 2**62, 1000))
    assert (tables.packed_lexsort(too_wide) == real(too_wide)).all()
    floats = (rng.random(10),)
    assert (tables.packed_lexsort(floats) == real(floats)).all()
    assert len(calls) == 2


def test_text_columns_read_largest_first_come_back_in_the_order_asked(tmp_path, monkeypatch):
    """read_text_columns reads the largest columns first (the moment a column needs
    several times its held size comes while little else is held) and returns them in the
    order asked, each equal to the column read alone."""
    import linkage.tables as tables

    n = 2000
    frame = pd.DataFrame(
        {
            "small": [str(i % 3) for i in range(n)],
            "large": [f"北京市海淀区中关村大街{i}号院{i % 17}单元" for i in range(n)],
            "number": np.arange(n),
            "middle": [f"ID{i:08d}" for i in range(n)],
        }
    )
    path = tmp_path / "r.parquet"
    frame.to_parquet(path, index=False)
    seen = []
    real = tables._dictionary_parts
    monkeypatch.setattr(
        tables, "_dictionary_parts", lambda p, c, *a: (seen.append(c), real(p, c, *a))[1]
    )
    asked = ["small", "number", "middle", "large", "absent"]
    got = read_text_columns(path, asked, {"small", "middle", "large"})
    assert seen == ["large", "middle", "small"]
    assert list(got.columns) == ["small", "number", "middle", "large"]
    for col in got.columns:
        alone = read_text_columns(path, [col], {"small", "middle", "large"})
        pd.testing.assert_series_equal(got[col], alone[col])
    assert tables._largest_first(path, ["small", "large"]) == ["large", "small"]


@pytest.mark.parametrize("dtype", ["str", "string", object])
def test_identities_keys_shared_keep_the_dtype_their_values_gave(dtype):
    """The identities table takes the records' key column itself only where that gives
    the dtype its values gave before (pandas' default text); a ``string`` column (a
    caller's own) or objects go through their values as before."""
    from linkage.pipeline import _shared

    column = pd.Series(["a", "b", None], dtype=dtype)
    want = pd.DataFrame({"k": column.to_numpy()})["k"]
    got = pd.DataFrame({"k": _shared(column)})["k"]
    pd.testing.assert_series_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(values=_text_lists("", "张伟", "a", "𠀀", "王芳"), row_group=st.integers(1, 9), large=st.booleans())
def test_coded_text_read_is_a_factorization_in_order_of_first_appearance(
    tmp_path_factory, values, row_group, large
):
    """``read_coded_text`` (golden records read their fields' columns so): int32 codes per
    row and each distinct value once as ``large_string``, numbered as ``pd.factorize``
    numbers the column (first appearance, -1 null), over any number of row groups."""
    import pyarrow as pa

    from linkage.tables import read_coded_text

    path = tmp_path_factory.mktemp("coded") / "t.parquet"
    kind = pa.large_string() if large else pa.string()
    table = pa.table({"t": pa.array(values, kind), "n": pa.array(range(len(values)))})
    pq.write_table(table, path, row_group_size=row_group)
    codes, dictionary = read_coded_text(path, "t")
    want_codes, want_values = pd.factorize(pd.Series(values, dtype=object))
    assert codes.dtype == np.int32 and dictionary.type == pa.large_string()
    assert codes.tolist() == want_codes.tolist()
    assert dictionary.to_pylist() == list(want_values)
    assert read_coded_text(path, "n") is None  # not text


def test_coded_text_read_unifies_chunks_encoded_apart(tmp_path, monkeypatch):
    """Where a pyarrow's encoding left the chunks with dictionaries of their own (the same
    size, other values), ``read_coded_text`` unifies them rather than reading every chunk's
    codes into the first chunk's dictionary."""
    import pyarrow as pa

    from linkage.tables import read_coded_text

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"t": pa.array(["a", "b", "c", "a"])}), path, row_group_size=2)
    real = pq.read_table

    class _Column:  # a column whose encoding gives each chunk its own dictionary
        def __init__(self, chunked):
            self.chunked = chunked

        def dictionary_encode(self):
            return pa.chunked_array([c.dictionary_encode() for c in self.chunked.chunks])

    class _Table:
        def __init__(self, table):
            self.table = table

        def column(self, i):
            return _Column(self.table.column(i))

    monkeypatch.setattr(pq, "read_table", lambda *a, **k: _Table(real(*a, **k)))
    codes, dictionary = read_coded_text(path, "t")
    assert [dictionary[c].as_py() for c in codes] == ["a", "b", "c", "a"]
    monkeypatch.setattr(pq, "read_table", real)
    assert read_coded_text(path, "t")[0].tolist() == [0, 1, 2, 0]
