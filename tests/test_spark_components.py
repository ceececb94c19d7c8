"""Connected components in Spark DataFrames, checked against networkx."""

from __future__ import annotations

import networkx as nx
import numpy as np

from linkage.spark.components import connected_components


def _partition(labels: dict[int, int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for node, comp in labels.items():
        groups.setdefault(comp, set()).add(node)
    return {frozenset(g) for g in groups.values()}


def _spark_labels(spark, edges: list[tuple[int, int]], nodes: list[int] | None = None):
    frame = spark.createDataFrame(edges or [], "src long, dst long")
    vertices = (
        spark.createDataFrame([(int(v),) for v in nodes], "id long") if nodes is not None else None
    )
    result = connected_components(frame, vertices)
    return {r["id"]: r["component"] for r in result.labels.collect()}, result.rounds


def test_random_graphs_match_networkx(spark):
    """Three random graphs (seeds 0, 1, 2), each checked against networkx on its own: they
    go to Spark as one edge table of three disjoint graphs (the nodes of graph k offset by
    k * n), so one run of the rounds labels all three instead of one run each; a component
    never spans two graphs, so each graph's labels are its own run's shifted by its offset."""
    n = 400
    graphs, edges = [], []
    for seed in (0, 1, 2):
        rng = np.random.default_rng(seed)
        graph = nx.gnm_random_graph(n, int(rng.integers(150, 450)), seed=seed)
        graphs.append(graph)
        # self-loops and repeated edges in both directions must not matter
        own = [(int(a), int(b)) for a, b in graph.edges()]
        own += [(b, a) for a, b in own[:20]] + [(5, 5)]
        offset = seed * n
        edges += [(a + offset, b + offset) for a, b in own]
    labels, _ = _spark_labels(spark, edges, list(range(len(graphs) * n)))
    assert set(labels) == set(range(len(graphs) * n))
    for seed, graph in enumerate(graphs):
        offset = seed * n
        own = {v - offset: labels[v] - offset for v in range(offset, offset + n)}
        expected = {frozenset(c) for c in nx.connected_components(graph)}
        assert _partition(own) == expected, seed
        # every label is the smallest vertex of its component
        for comp in expected:
            assert {own[v] for v in comp} == {min(comp)}, seed


def test_path_of_ten_thousand_converges_in_few_rounds(spark):
    n = 10_000
    order = np.random.default_rng(7).permutation(n)
    edges = [(int(order[i]), int(order[i + 1])) for i in range(n - 1)]
    context = spark.sparkContext
    context.setJobGroup("components_path", "connected components of a path")
    try:
        labels, rounds = _spark_labels(spark, edges)
        jobs = len(context.statusTracker().getJobIdsForGroup("components_path"))
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            context.setLocalProperty(key, None)
    assert len(labels) == n
    assert set(labels.values()) == {0}
    # large-star/small-star needs O(log n) rounds on a path; min-label propagation would need n
    assert rounds <= 2 * int(np.ceil(np.log2(n)))
    # a round is three shuffles and one checkpoint, its convergence test observed inside the
    # next round; each job costs a fixed planning and scheduling time, so the count is held
    # (a test taking jobs of its own each round made it 152 jobs at 11 rounds, this 56)
    assert jobs <= 4 * (rounds + 1) + 12, jobs


def test_isolated_vertices_and_no_edges(spark):
    labels, rounds = _spark_labels(spark, [], [3, 1, 2])
    assert labels == {1: 1, 2: 2, 3: 3}
    assert rounds == 0
