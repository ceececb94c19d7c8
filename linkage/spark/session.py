"""Building the SparkSession the engine runs in."""

from __future__ import annotations

import os
import re
import sys
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
# (docs/national-scale.md, "The throughput collector on a local master"). It is Java 8's
# default; SPARK-53084 proposed it as Spark's own default for the same change of Java.
LOCAL_COLLECTOR = "-XX:+UseParallelGC"
_COLLECTOR = re.compile(r"-XX:\+Use\w*GC\b")
# where else a driver JVM's options come from: a second collector stops the JVM at its start
# ("Multiple garbage collectors selected")
_JAVA_ENV = ("JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS", "PYSPARK_SUBMIT_ARGS")


def names_collector(conf: Mapping[str, str]) -> bool:
    """Whether a garbage collector (``-XX:+Use...GC``) is chosen for the driver JVM already:
    by ``conf``'s values, the Java and pyspark option variables of the environment, or
    ``spark-defaults.conf`` (``$SPARK_CONF_DIR``, else ``$SPARK_HOME/conf``)."""
    texts = [str(v) for v in conf.values()]
    texts += [os.environ.get(name, "") for name in _JAVA_ENV]
    conf_dir = os.environ.get("SPARK_CONF_DIR") or (
        os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None
    )
    if conf_dir:
        defaults = Path(conf_dir) / "spark-defaults.conf"
        if defaults.is_file():
            texts.append(defaults.read_text(encoding="utf-8", errors="replace"))
    return any(_COLLECTOR.search(text) for text in texts)


def driver_java_options(master: str, conf: Mapping[str, str] | None = None) -> str:
    """The ``spark.driver.extraJavaOptions`` :func:`get_session` sets when ``conf`` has none:
    the project's log4j2 file (the driver JVM logs errors only, from its start on) and, on a
    ``local`` master where no collector is named (:func:`names_collector`),
    :data:`LOCAL_COLLECTOR`."""
    log4j = Path(__file__).with_name("log4j2.properties")
    options = [f"-Dlog4j2.configurationFile={log4j.as_uri()}"]
    if master.startswith("local") and not names_collector(conf or {}):
        options.insert(0, LOCAL_COLLECTOR)
    return " ".join(options)


def get_session(
    master: str = "local[*]",
    *,
    shuffle_partitions: int | None = None,
    conf: Mapping[str, str] | None = None,
    app_name: str = "linkage",
) -> SparkSession:
    """Return a SparkSession on ``master`` (an existing one is reused, as Spark does).

    Arrow carries the pandas batches of mapInPandas/applyInPandas; the console progress bar
    is off because the CLI prints its own progress. Unless ``conf`` sets
    ``spark.driver.extraJavaOptions`` itself, the driver JVM gets
    :func:`driver_java_options`; a cluster's executors keep the collector their
    administrators set.
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
    if "spark.driver.extraJavaOptions" not in (conf or {}):
        builder = builder.config("spark.driver.extraJavaOptions", driver_java_options(master, conf))
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


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
