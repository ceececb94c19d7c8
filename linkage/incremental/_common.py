"""What ingest and search share: the stored model and the run settings it carries.

A saved model (schema version 2) holds the resolved comparison specs, blocking and
standardize settings of the batch that trained it; both paths rebuild everything from it,
so a change of this release's defaults never changes what a stored model means.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare import Comparison, build_comparisons
from linkage.config import (
    COMPARISON_SPECS,
    BlockingSettings,
    ModelSettings,
    RunConfig,
    StandardizeConfig,
    default_comparison_specs,
)
from linkage.errors import ConfigError, InputError
from linkage.model import FellegiSunterModel
from linkage.store import Store
from linkage.training import check_model_levels

logger = logging.getLogger(__name__)


@dataclass
class StoredRun:
    """The stored model and the settings of the batch that trained it."""

    model: FellegiSunterModel
    comparisons: list[Comparison]
    blocking: BlockingSettings
    standardize: StandardizeConfig
    # comparison -> record column of its term frequencies (only those the model adjusts)
    term_frequency: dict[str, str]


def stored_run(store: Store) -> StoredRun:
    """Read the store's model and rebuild the batch's comparisons and settings from it.

    Raises ``InputError`` when the store holds no model.
    """
    doc = store.model()
    if doc is None:
        raise InputError(
            "identity store has no model: run `linkage run CONFIG --store STORE` first",
            path=str(store.path),
        )
    model = FellegiSunterModel.from_dict(doc)
    if getattr(model, "weak_fit_", False):
        # the batch warned once; each later ingest or search rests on the same weights
        logger.warning(
            "%s: the stored model was trained on too few candidate pairs, so its match "
            "weights are unreliable (one disagreeing field can split a person); re-run the "
            "batch with more records, or with model.load: a model trained on a larger batch",
            store.path,
        )
    settings = model.settings or {}
    specs = settings.get("comparisons")
    if specs:
        specs = COMPARISON_SPECS.validate_python(specs)
    else:
        # a schema-1 model of a run with default comparisons: this release's defaults
        logger.warning("stored model names no comparisons: using this release's defaults")
        specs = default_comparison_specs()
    comparisons = build_comparisons(specs)
    names = [c.name for c in comparisons]
    if sorted(names) != sorted(model.comparisons):
        raise InputError(
            f"stored model's comparisons {model.comparisons} differ from its settings' {names}",
            path=str(store.path),
        )
    check_model_levels(model, comparisons, source=str(store.path))
    tf = settings.get("model", {}).get("term_frequency", ModelSettings().term_frequency)
    return StoredRun(
        model=model,
        comparisons=comparisons,
        blocking=BlockingSettings.model_validate(settings.get("blocking", {})),
        standardize=StandardizeConfig.model_validate(settings.get("standardize", {})),
        term_frequency={k: v for k, v in tf.items() if k in model.tf_columns},
    )


def check_config(config: RunConfig, run: StoredRun) -> None:
    """Refuse an ingest config whose written comparisons, blocking or standardize settings
    differ from the stored model's (records would be compared or keyed differently)."""
    problems = []
    if config.comparisons is not None:
        given = [c.to_config() for c in build_comparisons(config.comparisons)]
        stored = [c.to_config() for c in run.comparisons]
        if given != stored:
            problems.append(("comparisons", [c["name"] for c in given]))
    for key in ("blocking", "standardize"):
        if key in config.model_fields_set and getattr(config, key) != getattr(run, key):
            problems.append((key, getattr(config, key).model_dump(mode="json")))
    for key, given in problems:
        raise ConfigError(
            f"the config's {key} ({given}) differ from the stored model's; ingest with the "
            "settings the store was built with, or leave the section out",
            path=str(config.config_path) if config.config_path is not None else None,
            key=key,
        )


def strip_store_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the store's row key and run id and any ``rid`` from a records table."""
    return frame.drop(columns=[schema.RECORD_KEY, schema.RUN_ID, schema.ROW], errors="ignore")


def stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate record tables and number the rows 0..n-1 (the ``rid`` the stages expect)."""
    parts = [p for p in parts if len(p)]
    out = pd.concat(parts, ignore_index=True, sort=False) if parts else pd.DataFrame()
    out = strip_store_columns(out)
    out.insert(0, schema.ROW, np.arange(len(out), dtype=np.int64))
    return out


def store_tf(store: Store, combined: pd.DataFrame, new: pd.DataFrame, column: str) -> np.ndarray:
    """Term frequency per row from the stored counts plus the new records' counts."""
    stored, total = store.value_counts(column)
    if column not in combined:
        return np.full(len(combined), np.nan)
    new_counts = new[column].dropna().value_counts() if column in new else pd.Series(dtype=int)
    values = combined[column]
    count = (
        stored.reindex(values.to_numpy()).fillna(0).to_numpy()
        + new_counts.reindex(values.to_numpy()).fillna(0).to_numpy()
    )
    denom = max(total + int(new_counts.sum()), 1)
    tf = count / denom
    tf[values.isna().to_numpy()] = np.nan
    return tf
