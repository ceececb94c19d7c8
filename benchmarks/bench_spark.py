"""Benchmark: the Spark engine against the local engine on the same generated registries.

Usage: python benchmarks/bench_spark.py --records 1000000 [--master local[2]]
       [--partitions 8] [--driver-memory 4g] [--workdir DIR] [--engines local,spark] [--json OUT]
       python benchmarks/bench_spark.py --config REGISTRIES/run.yaml ...

Registries come from ``--config`` (for example the independent generator's, see
``benchmarks/bench_scale.py``) or from ``linkage.synth`` (about 2.4 records per person; reused
from --workdir when records and seed match). Each engine runs in its own subprocess. Measured
per engine: wall seconds in all and per stage; CPU seconds (user + system) of the engine's
process tree, the fairer figure on a loaded machine, in all and (Spark) per stage; peak
resident memory of the driver (Python + JVM) and of the Python workers Spark starts for mapInPandas/applyInPandas (in local mode the executors live in the
driver JVM; on a cluster read the executors' figures from the same REST API); shuffle bytes
read and written per engine stage, summed from Spark's REST API (``/api/v1/applications/<id>
/stages``) over the stages of the jobs that stage tagged. The Spark UI is on for this reason.

Where the JVM's CPU goes (Spark): the same API gives each engine stage's task CPU
(``executorCpuTime``: the task threads' own CPU, not the threads that feed Arrow batches to
the Python workers, nor the JIT compiler, the garbage collector or the driver's planning),
task run time and GC time; the process tree's CPU per stage is split into the driver's
Python, the JVM and the Python workers; and on Linux the JVM's CPU per thread kind
(``/proc/<pid>/task``: C2/C1 compiler, GC, task threads, Arrow writer threads, ...) for the
whole run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

RECORDS_PER_PERSON = 2.4


def _generate(records: int, seed: int, workdir: Path) -> Path:
    from linkage.synth import generate

    folder = workdir / f"registries_{records}_{seed}"
    if not (folder / "run.yaml").exists():
        persons = max(int(records / RECORDS_PER_PERSON), 10)
        t = time.perf_counter()
        generate(persons, seed=seed, output=folder)
        print(f"generated {persons:,} persons in {time.perf_counter() - t:.0f}s -> {folder}")
    return folder / "run.yaml"


class PeakMemory:
    """Sample the resident memory of this process and its children (JVM, Python workers)."""

    def __init__(self, interval: float = 0.5):
        import psutil

        self.psutil = psutil
        self.interval = interval
        self.peak = {"driver_python": 0, "jvm": 0, "python_workers": 0, "total": 0}
        # CPU seconds per process at its last sample: Spark's Python workers are reused, so
        # a worker that ends between two samples loses under one interval of CPU time
        self.cpu: dict[int, float] = {}
        # which of driver_python / jvm / python_workers each pid is, for the CPU split
        self.kind: dict[int, str] = {}
        # the JVM's CPU seconds per thread (tid -> (thread name, seconds)), Linux only
        self.jvm_threads: dict[str, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = self.psutil.Process()
        while not self._stop.is_set():
            try:
                kids = me.children(recursive=True)
                jvm = workers = 0
                for kid in kids:
                    try:
                        rss = kid.memory_info().rss
                        name = kid.name()
                        times = kid.cpu_times()
                    except self.psutil.Error:
                        continue
                    self.cpu[kid.pid] = times.user + times.system
                    self.kind[kid.pid] = "jvm" if "java" in name else "python_workers"
                    if "java" in name:
                        jvm += rss
                        self._sample_threads(kid.pid)
                    else:
                        workers += rss
                own = me.memory_info().rss
                times = me.cpu_times()
                self.cpu[me.pid] = times.user + times.system
                now = {
                    "driver_python": own,
                    "jvm": jvm,
                    "python_workers": workers,
                    "total": own + jvm + workers,
                }
                for k, v in now.items():
                    self.peak[k] = max(self.peak[k], v)
            except self.psutil.Error:
                pass
            self._stop.wait(self.interval)

    def _sample_threads(self, pid: int) -> None:
        """Each thread's CPU seconds from ``/proc/<pid>/task/<tid>/stat`` (utime + stime);
        a thread that ends between two samples keeps its last figure."""
        import os

        tasks = f"/proc/{pid}/task"
        if not os.path.isdir(tasks):
            return
        tick = os.sysconf("SC_CLK_TCK")
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/comm", encoding="utf-8", errors="replace") as f:
                    name = f.read().strip()
                with open(f"{tasks}/{tid}/stat", encoding="utf-8", errors="replace") as f:
                    stat = f.read()
            except OSError:
                continue
            # fields after the parenthesised name: utime and stime are the 12th and 13th
            fields = stat[stat.rindex(")") + 2 :].split()
            self.jvm_threads[tid] = (name, (int(fields[11]) + int(fields[12])) / tick)

    def jvm_thread_cpu(self, top: int = 12) -> dict[str, float]:
        """The JVM's CPU seconds per thread kind (thread names with their numbers folded:
        ``C2 CompilerThre``, ``GC Thread#N``, ``Executor task l``, ...), largest first."""
        import re

        kinds: dict[str, float] = {}
        for name, seconds in self.jvm_threads.values():
            kind = re.sub(r"([#\-])\d+", r"\1N", name)
            kinds[kind] = kinds.get(kind, 0.0) + seconds
        ranked = sorted(kinds.items(), key=lambda item: -item[1])[:top]
        return {k: round(v, 1) for k, v in ranked}

    def cpu_now(self) -> float:
        """CPU seconds (user + system) of this process and its children so far, each child
        at its latest reading (a child that ended keeps its last sampled figure)."""
        return sum(self.cpu_split().values())

    def cpu_split(self) -> dict[str, float]:
        """CPU seconds so far, as ``cpu_now``, split into driver_python, jvm and
        python_workers (Spark's Python workers for mapInPandas/applyInPandas)."""
        me = self.psutil.Process()
        self.kind[me.pid] = "driver_python"
        for proc in [me, *me.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                if proc.pid not in self.kind:
                    self.kind[proc.pid] = "jvm" if "java" in proc.name() else "python_workers"
            except self.psutil.Error:
                continue
            self.cpu[proc.pid] = times.user + times.system
        split = {"driver_python": 0.0, "jvm": 0.0, "python_workers": 0.0}
        for pid, seconds in self.cpu.items():
            split[self.kind.get(pid, "python_workers")] += seconds
        return split

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _shuffle_per_stage(spark) -> dict[str, dict[str, int]]:
    """Spark jobs and shuffle bytes read/written, per job group (engine stage), from the REST API.

    The job count is the fixed cost's measure: each job is planned, code-generated and
    scheduled whatever its input's size."""
    base = spark.sparkContext.uiWebUrl
    app_id = spark.sparkContext.applicationId

    def get(path: str):
        with urllib.request.urlopen(f"{base}/api/v1/applications/{app_id}/{path}") as resp:
            return json.load(resp)

    stage_group = {}
    out: dict[str, dict[str, int]] = {}
    zero = {
        "jobs": 0,
        "shuffle_read": 0,
        "shuffle_write": 0,
        "input": 0,
        "output": 0,
        "executor_cpu_s": 0.0,
        "executor_run_s": 0.0,
        "gc_s": 0.0,
    }
    for job in get("jobs"):
        group = job.get("jobGroup") or "other"
        out.setdefault(group, dict(zero))["jobs"] += 1
        for sid in job.get("stageIds", []):
            stage_group[sid] = group
    for stage in get("stages?status=complete"):
        group = stage_group.get(stage["stageId"], "other")
        acc = out.setdefault(group, dict(zero))
        acc["shuffle_read"] += int(stage.get("shuffleReadBytes", 0))
        acc["shuffle_write"] += int(stage.get("shuffleWriteBytes", 0))
        acc["input"] += int(stage.get("inputBytes", 0))
        acc["output"] += int(stage.get("outputBytes", 0))
        # the tasks' JVM thread CPU (ns) and run time (ms): run time minus CPU is waiting,
        # mostly on the Python workers of mapInPandas/applyInPandas (not in executorCpuTime)
        acc["executor_cpu_s"] += int(stage.get("executorCpuTime", 0)) / 1e9
        acc["executor_run_s"] += int(stage.get("executorRunTime", 0)) / 1e3
        acc["gc_s"] += int(stage.get("jvmGcTime", 0)) / 1e3
    for acc in out.values():
        for k in ("executor_cpu_s", "executor_run_s", "gc_s"):
            acc[k] = round(acc[k], 1)
    return out


def _worker(
    engine: str,
    config_path: Path,
    output: Path,
    master: str,
    partitions: int,
    memory: str,
    extra_conf: dict[str, str] | None = None,
) -> dict:
    from linkage.config import load_config

    config = load_config(config_path)
    with PeakMemory() as peak:
        t = time.perf_counter()
        if engine == "local":
            from linkage.linker import Linker

            linker = Linker(config)
            result = linker.run()
            linker.write(output)
            summary = result.summary
            shuffle = {}
            shuffle_partitions = None
            stage_cpu = {}
            stage_cpu_split = {}
        else:
            from linkage.spark.engine import run_spark
            from linkage.spark.session import get_session

            spark = get_session(
                master,
                # 0: what `linkage run` gives, the config's own setting or the engine's sizing
                shuffle_partitions=partitions or config.spark.shuffle_partitions,
                conf={
                    "spark.ui.enabled": "true",
                    "spark.driver.memory": memory,
                    # keep every job and stage for the per-stage counts (default 1,000)
                    "spark.ui.retainedJobs": "100000",
                    "spark.ui.retainedStages": "100000",
                    **(extra_conf or {}),
                },
            )
            # the process tree's CPU seconds at each stage's start: a Spark stage's own
            # work runs in the JVM and the Python workers, so its CPU is this difference
            marks: list[tuple[str, dict[str, float]]] = []

            def stage_start(message: str) -> None:
                marks.append((message.split()[0], peak.cpu_split()))
                # as each stage starts, so that a run stopped early still says where it got
                print(
                    f"STAGE {message} | {time.perf_counter() - t:.0f} s wall, "
                    f"{sum(marks[-1][1].values()):.0f} CPU s so far",
                    file=sys.stderr,
                    flush=True,
                )

            result = run_spark(config, output, spark=spark, progress=stage_start)
            marks.append(("end", peak.cpu_split()))
            stage_cpu = {
                a[0]: round(sum(b[1].values()) - sum(a[1].values()), 1)
                for a, b in zip(marks, marks[1:])
            }
            stage_cpu_split = {
                a[0]: {k: round(b[1][k] - a[1][k], 1) for k in a[1]}
                for a, b in zip(marks, marks[1:])
            }
            summary = result.summary
            shuffle = _shuffle_per_stage(spark)
            shuffle_partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
            spark.stop()
        wall = time.perf_counter() - t
    return {
        "engine": engine,
        "records": summary["records"],
        "candidate_pairs": summary["candidate_pairs"],
        "identities": summary["identities"],
        "wall_s": round(wall, 1),
        "seconds": summary.get("seconds", {}),
        "cpu_s": round(sum(peak.cpu.values()), 1),
        # Spark only: CPU seconds of the process tree per stage, keyed by the first word of
        # the engine's progress message (reading, standardizing, blocking, ...); the engine
        # says "compared" as training starts, so "blocking" holds blocking and comparing
        "cpu_s_per_stage": stage_cpu,
        # the same, split into the driver's Python, the JVM and Spark's Python workers
        "cpu_s_per_stage_split": stage_cpu_split,
        # Spark only, Linux only: the JVM's CPU per thread kind over the whole run
        "jvm_thread_cpu_s": peak.jvm_thread_cpu() if engine == "spark" else {},
        "peak_rss_mb": {k: round(v / 2**20) for k, v in peak.peak.items()},
        "shuffle_bytes": shuffle,
        # Spark only: the shuffle partitions the run used (--partitions, or the engine's own)
        "shuffle_partitions": shuffle_partitions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--partitions",
        type=int,
        default=8,
        help="spark.sql.shuffle.partitions; 0: as `linkage run --engine spark` gives it (the "
        "config's spark.shuffle_partitions, else one per 16 MB of sources, at least one per core)",
    )
    parser.add_argument(
        "--driver-memory",
        default="4g",
        help="spark.driver.memory (local mode: the executors live in the driver JVM)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="run.yaml of existing registries (instead of generating them)",
    )
    parser.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Spark setting for the Spark engine's session (repeatable), e.g. "
        "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1",
    )
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--workdir", type=Path, default=Path("bench_spark_work"))
    parser.add_argument("--json", type=Path, default=None, help="append results as JSON lines")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.config is not None:
        config_path = args.config.resolve()
        label = config_path.parent.name
    else:
        config_path = _generate(args.records, args.seed, args.workdir)
        label = str(args.records)
    if args.worker:
        out = args.workdir / f"out_{args.worker}_{label}"
        extra = {}
        for item in args.conf:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--conf {item!r}: expected KEY=VALUE")
            extra[key] = value
        row = _worker(
            args.worker,
            config_path,
            out,
            args.master,
            args.partitions,
            args.driver_memory,
            extra,
        )
        print("RESULT " + json.dumps(row))
        return
    rows = []
    for engine in args.engines.split(","):
        cmd = [sys.executable, __file__, "--worker", engine] + sys.argv[1:]
        # the worker's stderr (its STAGE lines, errors) goes straight to ours
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not lines:
            print(done.stdout[-3000:], file=sys.stderr)
            raise SystemExit(f"{engine} failed")
        row = json.loads(lines[-1][len("RESULT ") :])
        rows.append(row)
        print(json.dumps(row, indent=1))
        if args.json:
            with open(args.json, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    if len(rows) == 2:
        ratio = rows[1]["wall_s"] / max(rows[0]["wall_s"], 1e-9)
        print(f"{rows[1]['engine']} / {rows[0]['engine']} wall: {ratio:.2f}x")


if __name__ == "__main__":
    main()
