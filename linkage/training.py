"""Training policy: which pairs and rules train the Fellegi–Sunter model of a run.

The estimator (``linkage.model``) knows how to fit; this module decides what it is fitted
on: u from random record pairs (across or within sources as the link type allows), m by EM
in the configured training sessions, the prior from the prior rules. Training from reviewed
labels (``model.labels``) is ``linkage.review.refit.fit_from_labels``, the one refit the
review notebook uses too; the pipeline calls it. Imports config, blocking, compare and model; never a composition, the Linker or CLI.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import sample_random_pairs
from linkage.compare import Comparison, Prepared, compare, compare_threads
from linkage.config import RunConfig
from linkage.errors import InputError
from linkage.model import FellegiSunterModel

logger = logging.getLogger(__name__)


def level_rules(rules: list[dict[str, str]], comparisons: list[Comparison]) -> list[dict[str, int]]:
    """Turn {comparison: level name} rules into {comparison: level index} rules.

    ``load_config`` has already refused written rules naming absent comparisons or levels;
    what is left here are the defaults, and a default naming what this run lacks is skipped.
    """
    levels = {c.name: list(c.levels) for c in comparisons}
    return [
        {name: levels[name].index(level) for name, level in rule.items()}
        for rule in rules
        if all(name in levels and level in levels[name] for name, level in rule.items())
    ]


def fit_household(
    model: FellegiSunterModel, vectors: pd.DataFrame, comparisons: list[Comparison],
    config: RunConfig,
) -> None:
    """Fit the model's household pattern (``model.household``) on the training ``vectors``;
    skipped when the setting is null or names a comparison or level the run lacks."""
    spec = config.model.household
    if spec is None:
        return
    levels = {c.name: list(c.levels) for c in comparisons}
    agree = level_rules([spec.agree], comparisons)
    witness = level_rules([spec.witness], comparisons) if spec.witness else [{}]
    if spec.differ not in levels or not agree or len(witness[0] if witness else {}) > 1:
        logger.info("household pattern names what this run lacks: not fitted")
        return
    agree, witness = agree[0], (witness or [{}])[0]
    model.fit_household(
        vectors,
        spec.differ,
        agree,
        witness=next(iter(witness), None),
        witness_match=next(iter(witness.values()), None),
        unwitnessed=spec.unwitnessed,
    )


def check_model_levels(
    model: FellegiSunterModel, comparisons: list[Comparison], *, source: str
) -> None:
    """Refuse a saved model whose comparison levels differ from this release's comparisons.

    A model trained before a comparison gained or lost a level (the ID comparison's
    ``prefix_tail_lost``, for one) would score level k of today's comparison with the
    m/u of its own level k: wrong weights, or a range error deep in scoring. ``source``
    is the model file or identity store named in the error.

    Raises:
        InputError: a comparison of the model is absent from the run, or its level
            names differ; the message names the comparison, both level lists, and how
            to retrain.
    """
    current = {c.name: list(c.levels) for c in comparisons}
    problems = []
    for name in model.comparisons:
        have = model.levels[name]
        if name not in current:
            problems.append(f"comparison '{name}' is not one of this run's comparisons")
        elif have != current[name]:
            problems.append(
                f"comparison '{name}' has levels {have} ({len(have)}), this release "
                f"expects {current[name]} ({len(current[name])})"
            )
    if problems:
        raise InputError(
            "saved model was trained with other comparison levels than this release "
            "computes: " + "; ".join(problems) + ". Retrain it: run `linkage run CONFIG` "
            "without `model.load` (the run trains and saves a new model.json), or "
            "re-create the identity store with `linkage run CONFIG --store STORE`",
            path=source,
        )


# m and u of the default comparisons, fitted by the default config on about 87,000 records
# of the independent benchmark registries (benchmarks/reference_model.py writes it)
REFERENCE_MODEL_PATH = Path(__file__).resolve().parent / "data" / "reference_model.json"


@functools.cache
def reference_model() -> FellegiSunterModel:
    """The shipped reference model (``REFERENCE_MODEL_PATH``), read once per process."""
    return FellegiSunterModel.load(REFERENCE_MODEL_PATH)


def settle_weak_fit(
    model: FellegiSunterModel, comparisons: list[Comparison], n_pairs: int
) -> None:
    """A fit where no training session had enough pairs: reference m and u, no tf.

    With a few dozen records u comes from a handful of random pairs, many of them the
    batch's own duplicates (two identical records among 6 are 1 of 15 pairs, so u of an
    exact name came out 1/15), and EM's m from a few candidates; a name held by 2 of 6
    records has a term frequency of 1/3. Identical records then stayed apart while near
    ones linked; the pilot's prior from its rule hits is its duplicates' share as well. So
    each comparison whose spec (``Comparison.to_config``) equals the
    reference model's takes its m and u (population figures, as a saved model given by
    ``model.load``), the term-frequency adjustment is dropped (``tf_columns`` emptied),
    and lambda is the reference model's too (unless ``model.prior`` sets it): a pair needs
    strong evidence (about 19 bits: an exact name and birth date, not a similar name and a
    birth date) to link. The model is marked
    ``weak_fit_`` and ``reference_`` lists the comparisons taken; the run warns.
    Does nothing when a session estimated anything (``model.sessions_``).
    """
    sessions = getattr(model, "sessions_", [])
    if not sessions or any(info["estimated"] for info in sessions):
        return
    model.weak_fit_ = True
    reference = reference_model()
    specs = {
        c.get("name"): c for c in (reference.settings or {}).get("comparisons", [])
    }
    taken = []
    for comparison in comparisons:
        name = comparison.name
        if specs.get(name) != comparison.to_config() or reference.levels.get(name) != list(
            model.levels[name]
        ):
            continue
        model.m_[name] = reference.m_[name].copy()
        model.u_[name] = reference.u_[name].copy()
        model.u_floor_[name] = reference.u_floor_.get(name, model.u_floor_.get(name, 1e-12))
        taken.append(name)
    if taken and model.prior is None:
        # the pilot's own prior (its rule hits over its few record pairs) is its duplicates'
        # share too: with it, 4 records of two namesakes born the same day linked on a
        # similar name alone; the reference registry's keeps only strong evidence linking
        model.lambda_ = reference.lambda_
    model.reference_ = taken
    dropped = sorted(model.tf_columns)
    model.tf_columns = {}
    logger.warning(
        "every training session had too few pairs (%d candidate pairs in all): m and u of "
        "%s%s are the shipped reference model's%s%s; train on a larger batch of these "
        "registries and reuse its model (model.load: OUTPUT/model.json)",
        n_pairs,
        ", ".join(taken) if taken else "no comparison",
        " and the prior" if taken and model.prior is None else "",
        "" if len(taken) == len(comparisons) else (
            ", the others rest on EM over those pairs and a weak prior"
        ),
        f", and no term-frequency adjustment ({', '.join(dropped)})" if dropped else "",
    )


def random_pairs_for_u(records: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Random record pairs for u: only pairs that could be candidates under the link type."""
    settings = config.model
    pairs = sample_random_pairs(len(records), settings.u_sample_pairs, seed=settings.seed)
    if config.blocking.link_type == "link_and_dedupe":
        return pairs
    src = records[schema.SOURCE].to_numpy()
    cross = src[pairs[schema.ROW_L].to_numpy()] != src[pairs[schema.ROW_R].to_numpy()]
    keep = cross if config.blocking.link_type == "link_only" else ~cross
    return pairs[keep].reset_index(drop=True)


def new_model(
    comparisons: list[Comparison], config: RunConfig, tf_names: list[str]
) -> FellegiSunterModel:
    """An unfitted model for the run's comparisons, carrying the run's resolved settings.

    ``settings`` is the config without sources, with the comparisons resolved to specs
    (defaults written out), so a saved model alone rebuilds comparisons, blocking and
    standardization (ingest and search read it; a change of defaults cannot change it).
    """
    levels = {c.name: list(c.levels) for c in comparisons}
    document = config.model_dump(mode="json", exclude={"sources"})
    document["comparisons"] = [c.to_config() for c in comparisons]
    return FellegiSunterModel(
        levels,
        prior=config.model.prior,
        max_iter=config.model.max_iter,
        tf_columns={name: len(levels[name]) - 1 for name in tf_names if name in levels},
        settings=document,
    )


def train_model(
    records: pd.DataFrame,
    vectors: pd.DataFrame,
    comparisons: list[Comparison],
    config: RunConfig,
    tf: dict[str, np.ndarray],
    *,
    sample_fraction: float = 1.0,
    prepared: Sequence[Prepared] | None = None,
) -> FellegiSunterModel:
    """Fit the run's model: u from random pairs, then m by training sessions or EM.

    ``records``: standardized records (``rid`` order); ``vectors``: comparison vectors of
    the blocked pairs, or of a uniform sample of them holding ``sample_fraction`` of all;
    ``tf``: per-pair term frequencies by comparison (only their names are used). With a
    sample, the prior's rule hits are scaled up by ``1 / sample_fraction`` (as the Spark
    engine's ``train_sample_pairs`` does with its counted hits). ``prepared``:
    ``compare.prepare_comparisons(records, comparisons)``, when the caller has it (the
    random pairs for u are then levelled without preparing the records again).
    """
    settings = config.model
    model = new_model(comparisons, config, list(tf))
    random = compare(
        records, random_pairs_for_u(records, config), comparisons, prepared=prepared,
        threads=compare_threads(),
    )  # fmt: skip
    model.estimate_u(random)
    if len(vectors):
        sessions = level_rules(settings.training_sessions, comparisons)
        if sessions:
            rules = level_rules(settings.prior_rules, comparisons)
            model.fit_sessions(
                vectors,
                sessions,
                prior_rules=rules,
                n_records=len(records),
                prior_recall=settings.prior_recall,
            )
            if rules and sample_fraction < 1.0:
                prior = min(model.probability_two_random_records_match_ / sample_fraction, 0.5)
                model.probability_two_random_records_match_ = prior
                if settings.prior is None:
                    model.lambda_ = prior
            logger.info(
                "training sessions: %s",
                "; ".join(
                    " & ".join(f"{k}>={v}" for k, v in info["rule"].items())
                    + f" ({info['pairs']:,} pairs"
                    + (f", estimated {', '.join(info['estimated'])})" if info["estimated"] else ")")
                    for info in model.sessions_
                ),
            )
            settle_weak_fit(model, comparisons, len(vectors))
        else:
            model.fit(vectors)
        fit_household(model, vectors, comparisons, config)
    else:
        logger.warning("no candidate pairs: the model keeps its u-probabilities only")
    return model
