"""Connected components of a graph held as a Spark DataFrame of edges.

The alternating large-star / small-star algorithm of Kiveris, Lattanzi, Mirrokni, Rastogi and
Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014), as GraphFrames runs
it; written here because the GraphFrames jar is not on PyPI and cannot be fetched where the
toolkit runs. Each round is a few joins and group-bys over the edge list; the number of rounds
grows with log(n), not with the diameter (a path of 10,000 nodes converges in a few rounds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from linkage.spark import require_pyspark

require_pyspark()

from pyspark.sql import DataFrame, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

logger = logging.getLogger(__name__)

SRC = "src"
DST = "dst"
COMPONENT = "component"
_MIN = "min_nbr"


@dataclass
class Components:
    """Result of :func:`connected_components`."""

    # columns: the vertex column (long) and ``component`` (long, smallest vertex of the component)
    labels: DataFrame
    rounds: int


def _canonical(edges: DataFrame, src: str, dst: str) -> DataFrame:
    return (
        edges.select(
            F.least(F.col(src), F.col(dst)).cast("long").alias(SRC),
            F.greatest(F.col(src), F.col(dst)).cast("long").alias(DST),
        )
        .where(F.col(SRC).isNotNull() & F.col(DST).isNotNull() & (F.col(SRC) != F.col(DST)))
        .distinct()
    )


def _large_star(ee: DataFrame) -> DataFrame:
    """Edges src < dst -> each node's larger neighbours point to its smallest neighbour (or itself).

    The smallest neighbour is a window minimum over the node's edges in both directions, so
    the step is one shuffle (a group-by joined back would be two or three). Returns edges
    src > dst, duplicates possible (:func:`_small_star` removes them).
    """
    both = ee.unionByName(ee.select(F.col(DST).alias(SRC), F.col(SRC).alias(DST)))
    by_node = Window.partitionBy(SRC)
    return (
        both.select(SRC, DST, F.min(DST).over(by_node).alias(_MIN))
        .where(F.col(DST) > F.col(SRC))
        .select(F.col(DST).alias(SRC), F.least(F.col(_MIN), F.col(SRC)).alias(DST))
    )


def _small_star(ee: DataFrame) -> DataFrame:
    """Edges src > dst -> each node and its smaller neighbours point to the smallest of them.

    One window shuffle for the minimum and one for the de-duplication. Returns edges
    src < dst, each once.
    """
    by_node = Window.partitionBy(SRC)
    spokes = ee.select(SRC, DST, F.min(DST).over(by_node).alias(_MIN))
    return (
        spokes.select(
            F.explode(
                F.array(
                    F.struct(F.col(_MIN).alias(SRC), F.col(DST).alias(DST)),
                    F.struct(F.col(_MIN).alias(SRC), F.col(SRC).alias(DST)),
                )
            ).alias("__e")
        )
        .select(F.col(f"__e.{SRC}").alias(SRC), F.col(f"__e.{DST}").alias(DST))
        .where(F.col(SRC) != F.col(DST))
        .distinct()
    )


def _is_star_forest(ee: DataFrame) -> bool:
    """True when no centre is also a leaf and each leaf has one centre: then each star is a component.

    Both steps keep every component connected, so disjoint stars are exactly the components;
    this check is exact (GraphFrames compares edge sums between rounds, which can coincide).
    One aggregation over each node's roles (``ee`` holds each edge once, so two leaf roles
    are two centres), instead of a semi-join and a group-by, each with its own action.
    """
    roles = ee.select(
        F.col(SRC).alias(SRC), F.lit(1).alias("__centre"), F.lit(0).alias("__leaf")
    ).unionByName(
        ee.select(F.col(DST).alias(SRC), F.lit(0).alias("__centre"), F.lit(1).alias("__leaf"))
    )
    per_node = roles.groupBy(SRC).agg(
        F.max("__centre").alias("__centre"), F.sum("__leaf").alias("__leaf")
    )
    bad = ((F.col("__centre") == 1) & (F.col("__leaf") > 0)) | (F.col("__leaf") > 1)
    # a global aggregate is one job; isEmpty() takes partitions in growing batches, a job each
    found = per_node.agg(F.max(bad.cast("int")).alias("__bad")).collect()[0]["__bad"]
    return not found


def connected_components(
    edges: DataFrame,
    vertices: DataFrame | None = None,
    *,
    src: str = SRC,
    dst: str = DST,
    vertex: str = "id",
    max_rounds: int = 200,
) -> Components:
    """Label every vertex with the smallest vertex id of its connected component.

    ``edges``: columns ``src``/``dst`` (integers; direction, duplicates and self-loops are
    ignored). ``vertices``: optional column ``vertex`` listing every vertex, so isolated ones
    get their own label; without it the vertices are those of the edges. Returns the labels
    (``vertex``, ``component``) and the number of rounds. Raises RuntimeError if it has not
    converged after ``max_rounds`` rounds (it converges in O(log² n) rounds at worst).
    """
    ee = _canonical(edges, src, dst).localCheckpoint()
    rounds = 0
    # a round keeps a non-empty edge list non-empty, so emptiness is checked once
    converged = ee.isEmpty()
    while not converged:
        rounds += 1
        if rounds > max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        previous = ee
        ee = _small_star(_large_star(ee)).localCheckpoint()
        previous.unpersist()
        converged = _is_star_forest(ee)
    logger.info("connected components converged in %d round(s)", rounds)
    if vertices is None:
        vertices = (
            _canonical(edges, src, dst)
            .select(F.col(SRC).alias(vertex))
            .unionByName(_canonical(edges, src, dst).select(F.col(DST).alias(vertex)))
            .distinct()
        )
    centre = ee.select(F.col(DST).alias(vertex), F.col(SRC).alias(COMPONENT))
    labels = vertices.select(F.col(vertex).cast("long").alias(vertex)).join(centre, vertex, "left")
    labels = labels.select(vertex, F.coalesce(F.col(COMPONENT), F.col(vertex)).alias(COMPONENT))
    return Components(labels=labels, rounds=rounds)
