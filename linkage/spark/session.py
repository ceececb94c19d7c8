"""Building the SparkSession the engine runs in."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from linkage.spark import require_pyspark

require_pyspark()

from pyspark.sql import SparkSession  # noqa: E402

# pyspark's notices about pandas 3 (pandas_udf/Arrow conversions) are not the user's to act
# on: kept out of the job's output, on the driver here and in the Python workers below
warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
warnings.filterwarnings("ignore", "The copy keyword is deprecated", module="pyspark")
_WORKER_WARNINGS = "ignore::FutureWarning,ignore::DeprecationWarning"
logger = logging.getLogger(__name__)


def use_driver_python(master: str) -> None:
    """Run a ``local`` master's Python workers with the driver's interpreter unless
    ``PYSPARK_PYTHON`` says otherwise.

    pyspark starts its workers with ``$PYSPARK_PYTHON`` or else ``python3`` from ``PATH``
    (``pyspark.core.context``): a driver started as ``venv/bin/linkage`` without the venv
    activated got workers without pandas, failing every stage with ModuleNotFoundError.
    On a cluster the executors' Python is the cluster's to set, so only ``local`` masters
    are defaulted.
    """
    if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
        os.environ["PYSPARK_PYTHON"] = sys.executable


# The JVM's garbage collector for a local master, whose one JVM is the driver and every
# executor: the throughput collector, not Java 17's default G1, whose concurrent marking
# threads and write barriers take CPU from a batch on few cores to keep pauses short
# (docs/national-scale.md, "The throughput collector on a local master, and compare's
# conversions"). It is Java 8's default; SPARK-53084 proposed it as Spark's own default for
# the same change of Java.
LOCAL_COLLECTOR = "-XX:+UseParallelGC"
_COLLECTOR = re.compile(r"-XX:\+Use\w*GC\b")
# options read from a file the check cannot follow: treated as naming a collector
_OPAQUE = re.compile(r"-XX:(VMOptionsFile|Flags)=")
# where else a driver JVM's options come from (the JVM, spark-submit, pyspark's launcher):
# a second collector stops the JVM at its start ("Multiple garbage collectors selected")
_JAVA_ENV = (
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
    "SPARK_SUBMIT_OPTS",
    "PYSPARK_SUBMIT_ARGS",
)
# spark-submit's files in the conf folder: properties, java-opts lines, spark-env.sh exports
_CONF_FILES = ("spark-defaults.conf", "java-opts", "spark-env.sh")
_PROPERTIES_FILE = re.compile(r"--(?:extra-)?properties-file[= ](\S+)")


def _spark_conf_dir() -> Path | None:
    """The conf folder spark-submit reads: ``$SPARK_CONF_DIR``, else ``$SPARK_HOME/conf``,
    else the one of the SPARK_HOME pyspark's launcher finds (its own package folder for a
    pip install, ``pyspark.find_spark_home``)."""
    if os.environ.get("SPARK_CONF_DIR"):
        return Path(os.environ["SPARK_CONF_DIR"])
    try:
        from pyspark.find_spark_home import _find_spark_home

        return Path(_find_spark_home()) / "conf"
    except (Exception, SystemExit):  # noqa: BLE001 - it exits when it finds none
        # no SPARK_HOME: no conf folder to read (and the JVM's launch fails on its own)
        return None


def _launch_texts(conf: Mapping[str, str], keys: bool = False) -> list[str]:
    """What the driver JVM's launch reads besides the session builder: ``conf``'s values
    (and keys with ``keys``), the Java and Spark option variables of the environment, a
    properties file ``PYSPARK_SUBMIT_ARGS`` names, and the conf folder's
    ``spark-defaults.conf``, ``java-opts`` and ``spark-env.sh``."""
    texts = [f"{k} {v}" if keys else str(v) for k, v in conf.items()]
    texts += [os.environ.get(name, "") for name in _JAVA_ENV]
    files = [Path(m) for m in _PROPERTIES_FILE.findall(os.environ.get("PYSPARK_SUBMIT_ARGS", ""))]
    conf_dir = _spark_conf_dir()
    if conf_dir is not None:
        files += [conf_dir / name for name in _CONF_FILES]
    for path in files:
        if path.is_file():
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    return texts


def names_collector(conf: Mapping[str, str]) -> bool:
    """Whether a garbage collector (``-XX:+Use...GC``) may be chosen for the driver JVM
    already: by ``conf``'s values, the Java and Spark option variables of the environment
    (``SPARK_SUBMIT_OPTS`` and ``PYSPARK_SUBMIT_ARGS`` among them), a properties file
    ``PYSPARK_SUBMIT_ARGS`` names, or the conf folder's ``spark-defaults.conf``,
    ``java-opts`` and ``spark-env.sh``. An options file the JVM reads itself
    (``-XX:VMOptionsFile``, ``-XX:Flags``) counts as naming one: a false yes only leaves
    Java's default collector, a false no stops the JVM."""
    return any(_COLLECTOR.search(t) or _OPAQUE.search(t) for t in _launch_texts(conf))


# where a driver's heap can be set besides spark.driver.memory: spark-submit's flag, its
# environment variable (also in spark-env.sh) and a heap size among the JVM's own options
_DRIVER_MEMORY = re.compile(r"spark\.driver\.memory|--driver-memory|SPARK_DRIVER_MEMORY|-Xmx")
# the share of the machine's memory a local master's JVM gets when nothing sets it: the
# JVM's own default maximum heap (MaxRAMPercentage=25); Spark replaces that with 1g
_LOCAL_HEAP_SHARE = 4
_MIB = 2**20


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the physical memory, or the cgroup's limit
    (``/sys/fs/cgroup/memory.max``, v1's ``memory.limit_in_bytes``) where that is lower;
    None where neither can be read."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text(encoding="ascii").strip()
        except OSError:
            continue
        if text.isdigit():  # "max": no limit
            sizes.append(int(text))
    return min(sizes) if sizes else None


def local_driver_memory(master: str, conf: Mapping[str, str] | None = None) -> str | None:
    """The ``spark.driver.memory`` :func:`get_session` sets on a ``local`` master where
    nothing else sets the driver's heap (``conf``, ``--driver-memory`` or
    ``spark.driver.memory`` in ``PYSPARK_SUBMIT_ARGS`` or a properties file,
    ``SPARK_DRIVER_MEMORY``, ``-Xmx``): a quarter of :func:`machine_memory`, at least 1g.

    Spark's own default is 1g, and on a local master that one heap holds every executor:
    at 1 M records the run took 476.5 s with 1g against 381.7 s with a quarter of 24 GB, one
    run each (docs/national-scale.md, "A local master's heap"). None for a cluster master (its executors' memory is the
    cluster's to set) or when the heap is set elsewhere or the memory cannot be read.
    """
    texts = _launch_texts(conf or {}, keys=True)
    texts.append("SPARK_DRIVER_MEMORY" if os.environ.get("SPARK_DRIVER_MEMORY") else "")
    if not single_jvm(master) or any(_DRIVER_MEMORY.search(t) for t in texts):
        return None
    total = machine_memory()
    if total is None:
        return None
    return f"{max(1024, total // _LOCAL_HEAP_SHARE // _MIB)}m"


def single_jvm(master: str) -> bool:
    """``local``, ``local[N]``, ``local[N,F]``: the driver JVM runs the executors too
    (``local-cluster[...]`` starts executor JVMs of its own)."""
    return master == "local" or master.startswith("local[")


def driver_java_options(master: str, conf: Mapping[str, str] | None = None) -> str:
    """The ``spark.driver.extraJavaOptions`` :func:`get_session` sets when ``conf`` has none:
    the project's log4j2 file (the driver JVM logs errors only, from its start on) and, on a
    ``local`` master where no collector is named (:func:`names_collector`),
    :data:`LOCAL_COLLECTOR`."""
    log4j = Path(__file__).with_name("log4j2.properties")
    options = [f"-Dlog4j2.configurationFile={log4j.as_uri()}"]
    if single_jvm(master) and not names_collector(conf or {}):
        options.insert(0, LOCAL_COLLECTOR)
    return " ".join(options)


def get_session(
    master: str = "local[*]",
    *,
    shuffle_partitions: int | None = None,
    conf: Mapping[str, str] | None = None,
    app_name: str = "linkage",
    exit_on_interrupt: bool = False,
) -> SparkSession:
    """Return a SparkSession on ``master`` (an existing one is reused, as Spark does).

    Arrow carries the pandas batches of mapInPandas/applyInPandas; the console progress bar
    is off because the CLI prints its own progress. Unless ``conf`` sets
    ``spark.driver.extraJavaOptions`` itself, the driver JVM gets
    :func:`driver_java_options`; a cluster's executors keep the collector their
    administrators set. A ``local`` master's heap is :func:`local_driver_memory` unless
    set elsewhere. ``exit_on_interrupt`` (a batch job): Ctrl-C raises KeyboardInterrupt at
    once, as Python does, instead of pyspark's handler, which calls the JVM to cancel the
    jobs from inside the signal and, while the main thread waits on that same connection,
    prints py4j tracebacks; the caller then ends the JVM (:func:`kill_jvm`).
    """
    use_driver_python(master)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # bigger Arrow batches: the standardizers and comparisons work per distinct value
        # within a batch, and each batch costs a Python call
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")
        # no byte cap on a batch sent to Python: with one (64 MB by default) Spark measures
        # the Arrow batch after every row (ArrowWriter.sizeInBytes, which walks every
        # column), about 3% of the JVM's samples of a 0.3 M run; Int.MaxValue skips the
        # check. 50,000 records of about 1 KB stay far below Arrow's 2 GB per column
        .config("spark.sql.execution.arrow.maxBytesPerBatch", str(2**31 - 1))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # Spark 4 accepts only Unicode and Latin charsets unless the Java ones are allowed;
        # registries arrive in GBK/GB18030
        .config("spark.sql.legacy.javaCharsets", "true")
        # adaptive execution coalesces small shuffle partitions (Spark 4's default, stated
        # because a small run depends on it)
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.adaptive.coalescePartitions.enabled", "true")
        .config("spark.executorEnv.PYTHONWARNINGS", _WORKER_WARNINGS)
    )
    if master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false")
    options = None
    if "spark.driver.extraJavaOptions" not in (conf or {}):
        options = driver_java_options(master, conf)
        builder = builder.config("spark.driver.extraJavaOptions", options)
    heap = local_driver_memory(master, conf)
    if heap is not None:
        builder = builder.config("spark.driver.memory", heap)
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception:
        if options is None or LOCAL_COLLECTOR not in options.split():
            raise
        # a collector named where names_collector does not look (an @argfile, a wrapper
        # script): the JVM refuses two, so it starts again with the one it was given; a
        # launch failing for another reason fails again and raises that error
        logger.warning(
            "the Spark driver JVM did not start; starting it again without %s", LOCAL_COLLECTOR
        )
        plain = " ".join(o for o in options.split() if o != LOCAL_COLLECTOR)
        session = builder.config("spark.driver.extraJavaOptions", plain).getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    if exit_on_interrupt and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return session


def kill_jvm() -> None:
    """End the driver JVM pyspark started, at once (an interrupted batch job: its executors
    would log the failures of tasks cut off while the process exits)."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is not None:
        proc.kill()


_ADAPTIVE = "spark.sql.adaptive.enabled"


@contextmanager
def adaptive_off(spark: SparkSession) -> Iterator[None]:
    """Run the enclosed Spark actions without adaptive execution, then restore the setting.

    With adaptive execution every shuffle of a query is a Spark job of its own (Spark
    materializes each query stage before re-planning the rest), and each job costs a fixed
    planning and scheduling time whatever its rows. A query of many small shuffles, such as
    a connected-components round, is then one job instead of one per shuffle; it runs with
    ``spark.sql.shuffle.partitions`` partitions, not coalesced ones.
    """
    before = spark.conf.get(_ADAPTIVE)
    spark.conf.set(_ADAPTIVE, "false")
    try:
        yield
    finally:
        spark.conf.set(_ADAPTIVE, before)
