"""Building the SparkSession the engine runs in."""

from __future__ import annotations

import os
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


def get_session(
    master: str = "local[*]",
    *,
    shuffle_partitions: int | None = None,
    conf: Mapping[str, str] | None = None,
    app_name: str = "linkage",
) -> SparkSession:
    """Return a SparkSession on ``master`` (an existing one is reused, as Spark does).

    Arrow carries the pandas batches of mapInPandas/applyInPandas; the console progress bar
    is off because the CLI prints its own progress.
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
        # the driver JVM logs errors only (log4j2.properties here), from its start on
        log4j = Path(__file__).with_name("log4j2.properties")
        builder = builder.config(
            "spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j.as_uri()}"
        )
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
