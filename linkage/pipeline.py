"""The batch linking path: block → compare → score → cluster → merge over standardized records.

Composes the stage functions; holds no state. The Linker, the CLI and (later) incremental
ingest call ``link_records`` so the paths cannot drift apart. Must not import the Linker or CLI.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import block, sample_random_pairs
from linkage.cluster import (
    CANNOT_LINK_GROUP,
    CANNOT_LINK_KEY,
    cluster_pairs,
    cluster_size_distribution,
    cluster_stats,
)
from linkage.compare import (
    Comparison,
    compare,
    comparisons_from_config,
    default_comparisons,
    pair_tf,
    term_frequencies,
)
from linkage.config import RunConfig
from linkage.errors import ConfigError
from linkage.merge import GoldenSettings, merge_records
from linkage.model import FellegiSunterModel

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class LinkResult:
    """Tables of one batch run; every table is a pandas DataFrame."""

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


def build_comparisons(config: RunConfig) -> list[Comparison]:
    """Return the run's comparisons: from the config, or the defaults for canonical fields."""
    if config.comparisons is None:
        return default_comparisons()
    return comparisons_from_config(config.comparisons)


def attach_keys(pairs: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Add ``source_l``, ``record_id_l``, ``source_r``, ``record_id_r`` to a pair table."""
    left = pairs[schema.ROW_L].to_numpy()
    right = pairs[schema.ROW_R].to_numpy()
    src = records[schema.SOURCE].to_numpy()
    rid = records[schema.RECORD_ID].to_numpy()
    keys = pd.DataFrame(
        {
            "source_l": src[left],
            "record_id_l": rid[left],
            "source_r": src[right],
            "record_id_r": rid[right],
        },
        index=pairs.index,
    )
    return pd.concat([keys, pairs], axis=1)


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


def _level_rules(
    rules: list[dict[str, str]], comparisons: list[Comparison]
) -> list[dict[str, int]]:
    """Turn {comparison: level name} rules into level indices; drop rules naming absent comparisons."""
    levels = {c.name: list(c.levels) for c in comparisons}
    out = []
    for rule in rules:
        if not all(name in levels for name in rule):
            continue
        try:
            out.append({name: levels[name].index(level) for name, level in rule.items()})
        except ValueError:
            raise ConfigError(
                f"rule {rule} names a level that does not exist; levels are "
                + "; ".join(f"{n}: {levels[n]}" for n in rule),
                key="model",
            ) from None
    return out


def _random_match_prior(
    vectors: pd.DataFrame, rules: list[dict[str, int]], n_records: int, recall: float
) -> float:
    """Probability that two random records match: rule hits among candidates over all pairs."""
    hit = np.zeros(len(vectors), dtype=bool)
    for rule in rules:
        ok = np.ones(len(vectors), dtype=bool)
        for name, level in rule.items():
            ok &= vectors[schema.GAMMA_PREFIX + name].to_numpy() >= level
        hit |= ok
    total = max(n_records * (n_records - 1) / 2, 1.0)
    prior = float(np.clip(max(hit.sum(), 1) / recall / total, 1e-12, 0.5))
    logger.info("prior match probability %.3g from %d rule hits", prior, int(hit.sum()))
    return prior


def train_model(
    records: pd.DataFrame,
    vectors: pd.DataFrame,
    comparisons: list[Comparison],
    config: RunConfig,
    tf: dict[str, np.ndarray],
) -> FellegiSunterModel:
    """Estimate u from random pairs and m by EM (or from labelled pairs when given)."""
    settings = config.model
    levels = {c.name: list(c.levels) for c in comparisons}
    tf_levels = {name: len(levels[name]) - 1 for name in tf if name in levels}
    model = FellegiSunterModel(
        levels,
        prior=settings.prior,
        max_iter=settings.max_iter,
        tf_columns=tf_levels,
        settings=config.model_dump(mode="json", exclude={"sources"}),
    )
    random_pairs = sample_random_pairs(len(records), settings.u_sample_pairs, seed=settings.seed)
    if config.blocking.link_type == "link_only":
        # u describes the pairs that can be candidates: across sources only
        src = records[schema.SOURCE].to_numpy()
        cross = (
            src[random_pairs[schema.ROW_L].to_numpy()] != src[random_pairs[schema.ROW_R].to_numpy()]
        )
        random_pairs = random_pairs[cross].reset_index(drop=True)
    model.estimate_u(compare(records, random_pairs, comparisons))
    if settings.labels is not None:
        # The review module's reader and refit: one label vocabulary (unsure never trains).
        from linkage.review.labels import load_labels
        from linkage.review.refit import fit_from_labels

        labels = load_labels(settings.labels, missing_ok=False)
        model = fit_from_labels(
            model, records, comparisons, labels, keep_u=False, keep_prior=False, prior_strength=0
        )
        logger.info("model trained from %d labelled pairs", len(labels))
    elif len(vectors):
        rules = _level_rules(settings.prior_rules, comparisons)
        sessions = _level_rules(settings.training_sessions, comparisons)
        if settings.prior is None and rules:
            model.prior_estimate_ = _random_match_prior(
                vectors, rules, len(records), settings.prior_recall
            )
        if sessions:
            model.fit_sessions(vectors, sessions)
            logger.info("training sessions: %s", model.sessions_)
        else:
            model.fit(vectors)
    else:
        logger.warning("no candidate pairs: the model keeps its u-probabilities only")
    return model


def cannot_link_table(records: pd.DataFrame, config: RunConfig) -> pd.DataFrame | None:
    """Return the cannot-link table (same source, different valid IDs), or None when off."""
    if not (config.clustering.cannot_link_same_source_ids and schema.ID_STD in records):
        return None
    valid = records[schema.ID_VALID].eq(True) if schema.ID_VALID in records else True
    keyed = records[schema.ID_STD].where(valid)
    return pd.DataFrame(
        {
            schema.ROW: records[schema.ROW].to_numpy(),
            CANNOT_LINK_KEY: keyed.to_numpy(),
            CANNOT_LINK_GROUP: records[schema.SOURCE].to_numpy(),
        }
    ).dropna(subset=[CANNOT_LINK_KEY])


def golden_settings(config: RunConfig, sources: list[str] | None = None) -> GoldenSettings:
    """Return the survivorship settings; source priority defaults to ``sources`` or config order."""
    settings = config.golden
    if not settings.source_priority:
        settings = settings.model_copy(update={"source_priority": list(sources or config.sources)})
    return settings


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
    comparisons = build_comparisons(config)
    n = len(records)

    t = time.perf_counter()
    say("blocking")
    pairs = block(records, config.blocking)
    timings["block"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"comparing {len(pairs):,} pairs")
    vectors = compare(records, pairs, comparisons)
    vectors[schema.RULE] = pairs[schema.RULE].to_numpy()
    # term-frequency settings naming a comparison or column this run lacks are skipped
    present = {c.name for c in comparisons}
    tf_rows = {
        name: term_frequencies(records, column)
        for name, column in config.model.term_frequency.items()
        if name in present and column in records.columns
    }
    tf = {name: pair_tf(values, vectors) for name, values in tf_rows.items()}
    timings["compare"] = time.perf_counter() - t

    t = time.perf_counter()
    say("training model")
    if model is None and config.model.load is not None:
        model = FellegiSunterModel.load(config.model.load)
    if model is None:
        model = train_model(records, vectors, comparisons, config, tf)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    say("scoring")
    scored = model.score(vectors, tf=tf) if len(vectors) else _empty_scored(vectors, comparisons)
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    say("clustering")
    cannot = cannot_link_table(records, config)
    labels = cluster_pairs(
        n,
        scored,
        config.clustering.threshold,
        cannot_link=cannot,
        max_cluster_size=config.clustering.max_cluster_size,
    )
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
    say("building golden records")
    golden = merge_records(records, pd.Series(ids), golden_settings(config))
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


def write_outputs(result: LinkResult, output: str | Path, config: RunConfig) -> dict[str, Path]:
    """Write identities.csv, golden_records.csv, pairs.parquet, model.json and summary.json atomically."""
    import json

    from linkage.io import atomic_write, write_csv, write_parquet

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "identities": write_csv(result.identities, output / "identities.csv"),
        "golden": write_csv(result.golden, output / "golden_records.csv"),
    }
    pairs = result.pairs
    keep = pairs[schema.MATCH_PROBABILITY] >= config.output.pairs_min_probability
    paths["pairs"] = write_parquet(
        attach_keys(pairs[keep], result.records), output / "pairs.parquet"
    )
    if len(result.pairs):
        paths["model"] = result.model.save(output / "model.json")
    sizes = result.cluster_sizes()
    paths["cluster_sizes"] = write_csv(sizes, output / "cluster_sizes.csv")
    text = json.dumps(result.summary, ensure_ascii=False, indent=2)
    paths["summary"] = atomic_write(
        output / "summary.json", lambda p: p.write_text(text, encoding="utf-8")
    )
    return paths
