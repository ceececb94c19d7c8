"""A stage run in a child process (``linkage.apart``): its progress, logs, errors and peak
memory reach the parent, and a spilling run reads and standardizes there with the same
outputs as in-process."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

import linkage
from linkage import Linker
from linkage.apart import StageProcessError, can_run_apart, run_apart
from linkage.errors import InputError
from linkage.linker import Linker as _Linker
from linkage.progress import StageMemory
from linkage.synth import generate

pytestmark = pytest.mark.skipif(not can_run_apart(), reason="fork-based child processes: Linux")


class _Calls:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        self.calls.append(("stage", name, total, unit))

    def advance(self, n: int = 1) -> None:
        self.calls.append(("advance", n))


def _work(a: int, b: int, *, progress) -> dict:
    progress.stage("reading", total=2, unit="files")
    progress.advance(1)
    progress.advance(1)
    progress.stage("standardizing")
    logging.getLogger("linkage.test_apart").warning("a warning from pid %d", os.getpid())
    return {"sum": a + b, "pid": os.getpid()}


def test_result_progress_and_logs_reach_the_parent(caplog):
    calls = _Calls()
    with caplog.at_level(logging.WARNING, logger="linkage.test_apart"):
        out = run_apart(_work, 2, 3, progress=calls)
    assert out["sum"] == 5
    assert out["pid"] != os.getpid()
    assert calls.calls == [
        ("stage", "reading", 2, "files"),
        ("advance", 1),
        ("advance", 1),
        ("stage", "standardizing", None, ""),
    ]
    [record] = [r for r in caplog.records if r.name == "linkage.test_apart"]
    assert record.getMessage() == f"a warning from pid {out['pid']}"


def _grow(*, progress) -> int:
    progress.stage("standardizing")
    block = bytearray(200 * 2**20)  # resident once written
    for i in range(0, len(block), 4096):
        block[i] = 1
    return len(block)


def test_child_peaks_are_booked_in_the_parents_stage_memory():
    memory = StageMemory()
    if not memory.enabled:
        pytest.skip("no peak-RSS counter on this platform")
    try:
        run_apart(_grow, progress=memory)
        peaks = memory.peaks()
    finally:
        memory.close()
    # this process never held the 200 MB: the figure is the child's
    assert peaks["standardizing"] >= 200 * 2**20


def _fail(*, progress) -> None:
    raise InputError("expected a date", path="people.csv", row=7, column="birth_date")


def test_the_childs_error_is_raised_again_with_its_class_and_fields():
    with pytest.raises(
        InputError, match=r"people\.csv, line 7, column 'birth_date': expected"
    ) as e:
        run_apart(_fail)
    assert (e.value.path, e.value.row, e.value.column) == ("people.csv", 7, "birth_date")


class _Unpicklable(Exception):
    def __init__(self, lock):
        super().__init__("cannot cross a pipe")
        self.lock = lock

    def __reduce__(self):
        raise TypeError("no")


def _fail_oddly(*, progress) -> None:
    import threading

    raise _Unpicklable(threading.Lock())


def test_an_error_that_does_not_pickle_arrives_as_text():
    with pytest.raises(StageProcessError, match="cannot cross a pipe"):
        run_apart(_fail_oddly)


def _killed(*, progress) -> None:
    progress.stage("standardizing")
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_child_is_an_error_naming_the_signal():
    with pytest.raises(StageProcessError, match="killed by signal 9"):
        run_apart(_killed)


def test_spilling_run_standardizes_in_a_child_with_the_same_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("LINKAGE_ID_KEY", "test-key-0123456789abcdef")
    generate(300, seed=11, output=tmp_path / "data")
    config = tmp_path / "data" / "run.yaml"
    children: list[int] = []
    real = run_apart

    def counting(func, *args, progress=None):
        children.append(1)
        return real(func, *args, progress=progress)

    monkeypatch.setattr("linkage.linker.run_apart", counting)
    Linker.from_yaml(config).write(tmp_path / "apart")
    assert children == [1]

    monkeypatch.setattr("linkage.linker.can_run_apart", lambda: False)
    Linker.from_yaml(config).write(tmp_path / "here")
    assert children == [1]

    for name in ("identities.csv", "golden_records.csv", "model.json", "pairs.parquet"):
        assert (tmp_path / "apart" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    summary = json.loads((tmp_path / "apart" / "summary.json").read_text())
    assert summary["peak_rss_mb"]["standardize"] > 0
    assert summary["seconds"]["read"] > 0 and summary["seconds"]["standardize"] > 0


def test_a_bad_source_in_the_child_is_the_same_input_error(tmp_path):
    generate(50, seed=3, output=tmp_path / "data")
    config = tmp_path / "data" / "run.yaml"
    linker = _Linker.from_yaml(config)
    first = next(iter(linker._config().sources.values()))
    with open(first.path, "w", encoding="utf-8") as f:
        f.write("foo,bar\n1,2\n")
    with pytest.raises(InputError, match=str(first.path).replace(".", r"\.")):
        linker.write(tmp_path / "out")
    assert not (tmp_path / "out" / "identities.csv").exists()


class _Stop(Exception):
    pass


class _StopAt(_Calls):
    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        if name == "standardizing":
            raise _Stop(name)


def _write_after_stage(path, *, progress) -> None:
    progress.stage("standardizing")
    path.write_text("the stage began")


def test_a_hook_that_raises_stops_the_child_before_the_stage_begins(tmp_path):
    marker = tmp_path / "began"
    with pytest.raises(_Stop):
        run_apart(_write_after_stage, marker, progress=_StopAt())
    assert not marker.exists()


_ORPHAN = """
import os, sys, time
from linkage.apart import run_apart

def wait(path, *, progress):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)

run_apart(wait, sys.argv[1])
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            state = next(line for line in f if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "Z" in state.split()[1]  # a zombie nobody reaps here has ended


def test_the_child_dies_with_its_parent(tmp_path):
    import subprocess
    import sys
    import time

    script, marker = tmp_path / "orphan.py", tmp_path / "child.pid"
    script.write_text(_ORPHAN, encoding="utf-8")
    # the code under test, wherever the interpreter's own install points
    root = str(Path(linkage.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, str(script), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(marker.read_text())
        assert not _gone(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


_POOL_PROBE = """
import json
import pyarrow as pa
from linkage.apart import run_apart
from linkage.progress import return_freed_memory

own = pa.default_memory_pool().backend_name

def pool(*, progress):
    return pa.default_memory_pool().backend_name

return_freed_memory()
print(json.dumps({"own": own, "parent": pa.default_memory_pool().backend_name,
                  "child": run_apart(pool)}))
"""


def test_the_child_uses_pyarrow_s_own_pool_while_the_parent_gives_memory_back():
    # the CLI's system allocator helps the parent's later stages; the child ends with its
    # stage, and in pyarrow's own pool its reading peaked ~2 GB lower at 20 M records
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run(
        [sys.executable, "-c", _POOL_PROBE], capture_output=True, text=True, check=True, env=env
    )
    got = json.loads(proc.stdout)
    assert got["parent"] == "system"
    if got["own"] == "system":  # a pyarrow built without mimalloc or jemalloc
        pytest.skip("pyarrow has no pool of its own here")
    assert got["child"] == got["own"]
