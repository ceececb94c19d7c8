"""Connected components of a graph held as a Spark DataFrame of edges.

The alternating large-star / small-star algorithm of Kiveris, Lattanzi, Mirrokni, Rastogi and
Vassilvitskii, "Connected Components in MapReduce and Beyond" (SoCC 2014), as GraphFrames runs
it; written here because the GraphFrames jar is not on PyPI and cannot be fetched where the
toolkit runs. Each round is three shuffles of the edge list (two window minima and a
de-duplication) run as one Spark job (adaptive execution, which would make each shuffle a job
of its own, is off for the rounds); the number of rounds grows with log(n), not with the
diameter (a path of 10,000 nodes converges in a few rounds). Whether the previous round had
already converged is observed while the next one runs (a Spark ``Observation``), not asked
by jobs of its own: on one machine each job's planning and scheduling, not the edges, is
most of a round's cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from linkage.spark import require_pyspark

require_pyspark()

from pyspark.sql import DataFrame, Observation, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from linkage.spark.session import adaptive_off  # noqa: E402

logger = logging.getLogger(__name__)

SRC = "src"
DST = "dst"
COMPONENT = "component"
_MIN = "min_nbr"
_BAD = "__bad"


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


def _large_star(ee: DataFrame, check: Observation) -> DataFrame:
    """Edges src < dst, each once -> each node's larger neighbours point to its smallest
    neighbour (or itself); ``check`` receives ``__bad``, 0 when ``ee`` is a star forest.

    The smallest neighbour is a window minimum over the node's edges in both directions, so
    the step is one shuffle (a group-by joined back would be two or three). The same window
    counts the node's smaller and larger neighbours for the star-forest test (see
    :func:`connected_components`), observed while the round runs instead of by a job of its
    own. Returns edges src > dst, duplicates possible (:func:`_small_star` removes them).
    """
    both = ee.unionByName(ee.select(F.col(DST).alias(SRC), F.col(SRC).alias(DST)))
    by_node = Window.partitionBy(SRC)
    smaller = F.sum((F.col(DST) < F.col(SRC)).cast("int")).over(by_node)
    larger = F.max((F.col(DST) > F.col(SRC)).cast("int")).over(by_node)
    # a leaf has one neighbour, its centre, which is smaller; a centre has only larger ones
    bad = ((smaller > 0) & (larger > 0)) | (smaller > 1)
    nodes = both.select(SRC, DST, F.min(DST).over(by_node).alias(_MIN), bad.alias(_BAD))
    # max of 0/1 flags: a task Spark runs again cannot change it
    nodes = nodes.observe(check, F.max(F.col(_BAD).cast("int")).alias(_BAD))
    return nodes.where(F.col(DST) > F.col(SRC)).select(
        F.col(DST).alias(SRC), F.least(F.col(_MIN), F.col(SRC)).alias(DST)
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
    with adaptive_off(edges.sparkSession):
        ee, rounds = _rounds(edges, src, dst, max_rounds)
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


def _rounds(edges: DataFrame, src: str, dst: str, max_rounds: int) -> tuple[DataFrame, int]:
    """Alternate large-star and small-star until the edges are a star forest; return the
    final edges (src = a component's smallest vertex, dst = another of its vertices) and the
    number of rounds. Run without adaptive execution: a round is then one Spark job, not one
    per shuffle (three) plus the checkpoint."""
    ee = _canonical(edges, src, dst).localCheckpoint()
    rounds = 0
    # a round keeps a non-empty edge list non-empty, so emptiness is checked once
    converged = ee.isEmpty()
    while not converged:
        if rounds > max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        check = Observation(f"star_forest_{rounds}")
        following = _small_star(_large_star(ee, check)).localCheckpoint()
        # was ``ee`` already a star forest (no centre is a leaf, each leaf has one centre)?
        # Both steps keep every component connected, so its stars are then exactly the
        # components, and this round gave it back unchanged. The test is exact (GraphFrames
        # compares edge sums between rounds, which can coincide).
        converged = not check.get[_BAD]
        if converged:
            following.unpersist()
            # the rounds that changed the edges, at least one (as counted before the test
            # was folded into the round)
            rounds = max(rounds, 1)
        else:
            rounds += 1
            ee.unpersist()
            ee = following
    return ee, rounds
