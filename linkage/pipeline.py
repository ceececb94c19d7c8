"""The batch linking path: block → compare → score → cluster → merge over standardized records.

Composition only: it sequences the stage functions and holds no state. ``compare_pairs``,
``score_pairs`` and ``cluster_records`` are the mid-level steps the batch (``link_records``)
and incremental ingest both call, so the two paths cannot drift apart. ``STAGES`` names the
steps a run reports, in order. Must not import the incremental layer, the Linker or the CLI.
"""

from __future__ import annotations

import hashlib
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
from linkage.errors import InputError
from linkage.merge import merge_records
from linkage.model import FellegiSunterModel
from linkage.tables import attach_keys
from linkage.training import train_model

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

# The steps a batch run reports through ``progress``, in order: one call each (the first
# is the Linker's). A progress bar's length is len(STAGES).
STAGES: tuple[str, ...] = (
    "reading and standardizing",
    "blocking",
    "comparing",
    "training model",
    "scoring",
    "clustering",
    "building golden records",
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


def identity_ids(records: pd.DataFrame, labels: pd.Series) -> np.ndarray:
    """Name each cluster after its smallest (source, record_id), so ids do not depend on row order."""
    key = records[schema.SOURCE].astype(str) + "\x1f" + records[schema.RECORD_ID].astype(str)
    smallest = key.groupby(labels.to_numpy()).transform("min")
    codes, uniques = pd.factorize(smallest)
    names = np.array(
        ["ID" + hashlib.sha1(u.encode("utf-8")).hexdigest()[:14].upper() for u in uniques],
        dtype=object,
    )
    return names[codes]


def _labels_to_pairs(
    labels: pd.DataFrame, records: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """Map a reviewed-pairs table (source/record_id of both sides, label) to row pairs."""
    need = {"source_l", "record_id_l", "source_r", "record_id_r", "label"}
    missing = need - set(labels.columns)
    if missing:
        raise InputError(f"labels need columns {sorted(need)}; missing {sorted(missing)}")
    index = pd.Series(
        records[schema.ROW].to_numpy(),
        index=pd.MultiIndex.from_arrays(
            [records[schema.SOURCE].astype(str), records[schema.RECORD_ID].astype(str)]
        ),
    )
    left = index.reindex(
        pd.MultiIndex.from_arrays(
            [labels["source_l"].astype(str), labels["record_id_l"].astype(str)]
        )
    )
    right = index.reindex(
        pd.MultiIndex.from_arrays(
            [labels["source_r"].astype(str), labels["record_id_r"].astype(str)]
        )
    )
    ok = left.notna().to_numpy() & right.notna().to_numpy()
    if not ok.any():
        raise InputError("no labelled pair refers to records of this run")
    lo = np.minimum(left.to_numpy()[ok], right.to_numpy()[ok]).astype(np.int64)
    hi = np.maximum(left.to_numpy()[ok], right.to_numpy()[ok]).astype(np.int64)
    y = labels["label"].astype(str).str.strip().str.lower().isin(["1", "true", "match", "yes"])
    return pd.DataFrame({schema.ROW_L: lo, schema.ROW_R: hi}), y.to_numpy()[ok].astype(np.int8)


def _stage(say: Progress, name: str, detail: str = "") -> None:
    assert name in STAGES, name  # a new stage must be listed in STAGES
    say(f"{name} {detail}".strip())


def compare_pairs(
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: list[Comparison],
    tf_rows: dict[str, np.ndarray],
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Compare candidate pairs; return the vectors (with ``rule`` when pairs have it) and
    the per-pair term frequencies of each comparison in ``tf_rows`` (per-row frequencies)."""
    vectors = compare(records, pairs, comparisons)
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
    progress: Progress | None = None,
) -> LinkResult:
    """Link standardized records (with ``rid`` 0..n-1) into identities; return every table."""
    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    comparisons = build_comparisons(config.comparison_specs())
    n = len(records)

    t = time.perf_counter()
    _stage(say, "blocking")
    pairs = block(records, config.blocking)
    timings["block"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "comparing", f"{len(pairs):,} pairs")
    vectors, tf = compare_pairs(records, pairs, comparisons, tf_rows(records, config, comparisons))
    timings["compare"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "training model")
    if model is None and config.model.load is not None:
        model = FellegiSunterModel.load(config.model.load)
    if model is None:
        labelled = None
        if config.model.labels is not None:
            labels = pd.read_csv(config.model.labels, dtype=str)
            labelled = _labels_to_pairs(labels, records)
        model = train_model(records, vectors, comparisons, config, tf, labelled=labelled)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "scoring")
    scored = score_pairs(vectors, model, comparisons, tf)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "clustering")
    labels = cluster_records(records, scored, config)
    ids = identity_ids(records, labels)
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
