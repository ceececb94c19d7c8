"""The batch linking path: block → compare → score → cluster → merge over standardized records.

Composition only: it sequences the stage functions and holds no state. ``compare_pairs``,
``score_pairs`` and ``cluster_records`` are the mid-level steps the batch (``link_records``)
and incremental ingest both call, so the two paths cannot drift apart. ``STAGES`` names the
steps a run reports, in order. Must not import the incremental layer, the Linker or the CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import block
from linkage.cluster import (
    cannot_link_table,
    cluster_pairs,
    cluster_size_distribution,
    cluster_stats,
    sibling_pairs,
)
from linkage.compare import Comparison, build_comparisons, compare, pair_tf, term_frequencies
from linkage.config import RunConfig
from linkage.identity import cluster_ids, process_key
from linkage.merge import merge_records
from linkage.model import FellegiSunterModel
from linkage.progress import Progress, ProgressLike, as_progress
from linkage.tables import attach_keys
from linkage.training import new_model, train_model

logger = logging.getLogger(__name__)

# The stages a batch run reports through its ``progress`` hook (``linkage.progress``), in
# order: reading and standardizing come from ``io.read_records``, writing from the Linker.
STAGES: tuple[str, ...] = (
    "reading",
    "standardizing",
    "blocking",
    "comparing",
    "training model",
    "scoring",
    "clustering",
    "building golden records",
    "writing outputs",
)


@dataclass
class LinkResult:
    """Tables of one batch run; every table is a pandas DataFrame.

    ``summary`` holds counts and ``summary["seconds"]``, the seconds spent per stage.
    """

    records: pd.DataFrame
    pairs: pd.DataFrame
    identities: pd.DataFrame
    golden: pd.DataFrame
    model: FellegiSunterModel
    comparisons: list[Comparison]
    summary: dict = field(default_factory=dict)

    def cluster_sizes(self) -> pd.DataFrame:
        """Return the cluster-size distribution (size, clusters, records)."""
        return cluster_size_distribution(self.identities[schema.IDENTITY_ID])

    def explain(self, index: int) -> pd.DataFrame:
        """Return the per-comparison levels and weights behind scored pair ``index``."""
        return self.model.explain(self.pairs.loc[index])

    def pairs_with_keys(self) -> pd.DataFrame:
        """Return scored pairs with both records' source and record id in front."""
        return attach_keys(self.pairs, self.records)


def _stage(report: Progress, name: str, total: int | None = None, unit: str = "") -> None:
    assert name in STAGES, name  # a new stage must be listed in STAGES
    report.stage(name, total=total, unit=unit)


def compare_pairs(
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: list[Comparison],
    tf_rows: dict[str, np.ndarray],
    step: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Compare candidate pairs; return the vectors (with ``rule`` when pairs have it) and
    the per-pair term frequencies of each comparison in ``tf_rows`` (per-row frequencies).
    ``step(n)`` is told each chunk of ``n`` compared pairs."""
    vectors = compare(records, pairs, comparisons, step=step)
    if schema.RULE in pairs:
        vectors[schema.RULE] = pairs[schema.RULE].to_numpy()
    return vectors, {name: pair_tf(values, vectors) for name, values in tf_rows.items()}


def score_pairs(
    vectors: pd.DataFrame,
    model: FellegiSunterModel,
    comparisons: list[Comparison],
    tf: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Score comparison vectors; term frequencies of comparisons the model does not adjust
    are ignored. Adds ``mw_<name>``, ``match_weight`` and ``match_probability``."""
    tf = {k: v for k, v in tf.items() if k in model.tf_columns}
    return model.score(vectors, tf=tf) if len(vectors) else _empty_scored(vectors, comparisons)


def cluster_records(records: pd.DataFrame, scored: pd.DataFrame, config: RunConfig) -> pd.Series:
    """Cluster scored pairs of ``records`` (``rid`` 0..n-1) under the run's clustering
    settings and cannot-link rule; return one cluster label per record. Pairs that look like
    twins or siblings (``sibling_pairs``) are held out."""
    cannot = cannot_link_table(records) if config.clustering.cannot_link_same_source_ids else None
    return cluster_pairs(
        len(records),
        scored[~sibling_pairs(records, scored)],
        config.clustering.threshold,
        cannot_link=cannot,
        max_cluster_size=config.clustering.max_cluster_size,
    )


def tf_rows(records: pd.DataFrame, config: RunConfig, comparisons: list[Comparison]) -> dict:
    """Per-row term frequencies of the run's records for each ``model.term_frequency`` entry.

    Entries of the default settings naming a comparison or column this run lacks are skipped
    (written entries naming a missing comparison were refused by ``load_config``).
    """
    present = {c.name for c in comparisons}
    return {
        name: term_frequencies(records, column)
        for name, column in config.model.term_frequency.items()
        if name in present and column in records.columns
    }


def link_records(
    records: pd.DataFrame,
    config: RunConfig,
    *,
    model: FellegiSunterModel | None = None,
    progress: ProgressLike = None,
    id_key: bytes | None = None,
) -> LinkResult:
    """Link standardized records (with ``rid`` 0..n-1) into identities; return every table.

    ``progress`` (``linkage.progress``) gets the stages from ``blocking`` to ``building
    golden records``; ``comparing`` is counted in pairs. ``id_key`` names the identities
    (``identity.cluster_ids``); without it, ``$LINKAGE_ID_KEY`` or a per-process key, so
    ids are stable across processes only with a key.
    """
    say = as_progress(progress)
    timings: dict[str, float] = {}
    comparisons = build_comparisons(config.comparison_specs())
    n = len(records)

    t = time.perf_counter()
    _stage(say, "blocking")
    blocking_rows: list[dict] = []
    pairs = block(records, config.blocking, report=blocking_rows)
    timings["block"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "comparing", len(pairs), "pairs")
    vectors, tf = compare_pairs(
        records, pairs, comparisons, tf_rows(records, config, comparisons), step=say.advance
    )
    timings["compare"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "training model")
    if model is None and config.model.load is not None:
        model = FellegiSunterModel.load(config.model.load)
    if model is None and config.model.labels is not None:
        # Reviewed pairs go through the review module's one reader and one refit, as in
        # the review notebook: the same vocabulary, and unsure labels never train.
        from linkage.review.labels import load_labels
        from linkage.review.refit import fit_from_labels

        labels = load_labels(config.model.labels, missing_ok=False)
        model = fit_from_labels(
            new_model(comparisons, config, list(tf)), records, comparisons, labels,
            keep_u=False, keep_prior=False, prior_strength=0,
        )  # fmt: skip
    if model is None:
        model = train_model(records, vectors, comparisons, config, tf)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "scoring")
    scored = score_pairs(vectors, model, comparisons, tf)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "clustering")
    labels = cluster_records(records, scored, config)
    ids = cluster_ids(records, labels, id_key or process_key())
    identities = pd.DataFrame(
        {
            schema.SOURCE: records[schema.SOURCE].to_numpy(),
            schema.RECORD_ID: records[schema.RECORD_ID].to_numpy(),
            schema.IDENTITY_ID: ids,
        }
    )
    timings["cluster"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "building golden records")
    golden = merge_records(records, pd.Series(ids), config.golden_settings())
    timings["merge"] = time.perf_counter() - t

    stats = cluster_stats(pd.Series(ids))
    summary = {
        "records": int(n),
        "records_per_source": {
            str(k): int(v) for k, v in records[schema.SOURCE].value_counts(sort=False).items()
        },
        "candidate_pairs": int(len(pairs)),
        "pairs_per_rule": {
            str(k): int(v) for k, v in pairs[schema.RULE].value_counts(sort=False).items()
        },
        # predicted pairs and refinement per rule, as `linkage blocking` reports them
        "blocking": {r["rule"]: {k: v for k, v in r.items() if k != "rule"} for r in blocking_rows},
        "matches": int((scored[schema.MATCH_PROBABILITY] >= config.clustering.threshold).sum()),
        "identities": int(identities[schema.IDENTITY_ID].nunique()),
        "cluster_stats": {k: (v.item() if hasattr(v, "item") else v) for k, v in stats.items()},
        "seconds": {k: round(v, 3) for k, v in timings.items()},
    }
    return LinkResult(
        records=records,
        pairs=scored,
        identities=identities,
        golden=golden,
        model=model,
        comparisons=comparisons,
        summary=summary,
    )


def _empty_scored(vectors: pd.DataFrame, comparisons: list[Comparison]) -> pd.DataFrame:
    out = vectors.copy()
    for c in comparisons:
        out[schema.MW_PREFIX + c.name] = pd.Series(dtype=float)
    out[schema.MATCH_WEIGHT] = pd.Series(dtype=float)
    out[schema.MATCH_PROBABILITY] = pd.Series(dtype=float)
    return out


__all__ = [
    "STAGES",
    "LinkResult",
    "attach_keys",
    "cluster_records",
    "compare_pairs",
    "link_records",
    "score_pairs",
]
