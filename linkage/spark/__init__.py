"""Apache Spark engine: the batch run of ``linkage.pipeline`` over Spark DataFrames.

Importing this package does not import pyspark; :func:`require_pyspark` does, and turns a
missing installation into an error naming the ``[spark]`` extra. The engine composes the same
stage functions as the local engine (standardize, blocking keys, comparisons, the
Fellegi–Sunter model, cannot-link reclustering, merge_records) over partitions.
"""

from __future__ import annotations

from types import ModuleType

SPARK_EXTRA_HINT = (
    "the Spark engine needs pyspark>=4 and a Java runtime (17 or 21): install the [spark] "
    "extra (pip install -e '.[spark]' in a checkout, pip install 'linkage[spark]' from a package)"
)


def require_pyspark() -> ModuleType:
    """Import and return pyspark; raise ImportError naming the ``[spark]`` extra when missing."""
    try:
        import pyspark
    except ImportError as exc:
        raise ImportError(f"pyspark is not installed; {SPARK_EXTRA_HINT}") from exc
    major = int(pyspark.__version__.split(".", 1)[0])
    if major < 4:
        raise ImportError(f"pyspark {pyspark.__version__} is too old; {SPARK_EXTRA_HINT}")
    return pyspark
