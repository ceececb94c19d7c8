"""The one refit of a Fellegi–Sunter model from reviewed labels.

Both routes use it: ``model.labels`` in the run config (fully supervised: m, u and the prior
from the labels) and the review notebook (m blended with the EM estimate; u and the prior
kept). Labels go through ``labels.training_labels``, so ``unsure`` never trains.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare import Comparison, compare
from linkage.errors import InputError
from linkage.model import FellegiSunterModel
from linkage.review.labels import MATCH, label_rows, training_labels

logger = logging.getLogger(__name__)


def _stratum_weights(rows: pd.DataFrame, pairs: pd.DataFrame, bin_bits: float) -> np.ndarray:
    """Inverse sampling weight of each labelled pair: scored pairs over labelled pairs per
    match-weight bin (post-stratification); pairs the run never scored weigh 1."""
    weight = pd.Series(
        pairs[schema.MATCH_WEIGHT].to_numpy(),
        index=pd.MultiIndex.from_arrays([pairs[schema.ROW_L], pairs[schema.ROW_R]]),
    )
    weight = weight[~weight.index.duplicated()]
    labelled = weight.reindex(pd.MultiIndex.from_arrays([rows[schema.ROW_L], rows[schema.ROW_R]]))
    labelled = labelled.to_numpy(dtype=np.float64)
    all_bins = np.floor(pairs[schema.MATCH_WEIGHT].to_numpy() / bin_bits)
    population = pd.Series(all_bins).value_counts()
    bins = np.floor(labelled / bin_bits)
    sampled = pd.Series(bins[~np.isnan(bins)]).value_counts()
    ratio = (population / sampled).reindex(bins).to_numpy()
    return np.where(np.isnan(bins) | np.isnan(ratio), 1.0, ratio)


def _is_fitted(model: FellegiSunterModel) -> bool:
    return all(hasattr(model, a) for a in ("m_", "u_", "lambda_"))


def fit_from_labels(
    model: FellegiSunterModel,
    records: pd.DataFrame,
    comparisons: Sequence[Comparison],
    labels: pd.DataFrame,
    *,
    pairs: pd.DataFrame | None = None,
    keep_u: bool = True,
    keep_prior: bool = True,
    prior_strength: float = 200.0,
    bin_bits: float = 2.0,
) -> FellegiSunterModel:
    """A new model refitted from reviewed pairs; ``model`` is left unchanged.

    ``labels`` has ``LABEL_COLUMNS`` (any spelling of ``labels.ALIASES``; ``unsure`` is left
    out); ``records`` is the run's standardized records table (``rid``, source, record_id and
    the comparisons' columns). m comes from the labelled matches. A review queue is not a
    random sample: its matches are the hard ones and its non-matches near-misses. So by
    default u is kept from the random-pair estimate (``keep_u``), the prior lambda from
    ``model`` (``keep_prior``), and the labelled m is blended with the old one as if the old m
    came from ``prior_strength`` matches (a Dirichlet prior). Given the run's scored
    ``pairs``, each labelled match is weighted by how many scored pairs its match-weight bin
    holds per labelled pair (post-stratification).

    ``keep_u=False, keep_prior=False, prior_strength=0`` is the fully supervised fit of
    ``FellegiSunterModel.fit_supervised`` (m and u from the labels; lambda from
    ``model.prior`` or the labelled match share): what ``model.labels`` in a run config does.
    ``model`` then needs only its levels (and u when ``keep_u``).

    Raises:
        InputError: the labels hold no pair of these records, or not both a match and a
            non-match; ``keep_u``/``keep_prior``/``prior_strength > 0`` on an unfitted model.
    """
    rows = label_rows(training_labels(labels), records)
    if not len(rows):
        raise InputError("no labelled pair (other than unsure) refers to records of this run")
    if (keep_prior or prior_strength > 0) and not _is_fitted(model):
        raise InputError("keep_prior and prior_strength > 0 need a fitted model to start from")
    if keep_u and not hasattr(model, "u_"):
        raise InputError("keep_u needs a model with u estimated")
    vectors = compare(records, rows[[schema.ROW_L, schema.ROW_R]], list(comparisons))
    y = (rows[schema.LABEL] == MATCH).to_numpy().astype(np.int8)
    new = copy.deepcopy(model)
    new.fit_supervised(vectors, y)  # checks both classes are present
    if keep_prior:
        new.lambda_ = model.lambda_
    pos = y.astype(bool)
    weighted = pairs is not None
    w = _stratum_weights(rows, pairs, bin_bits) if weighted else np.ones(len(rows))
    if prior_strength > 0 or weighted:
        for name in new.comparisons:
            g = vectors[schema.GAMMA_PREFIX + name].to_numpy()
            use = pos & (g >= 0)
            if not use.any():
                continue
            counts = np.bincount(g[use], weights=w[use], minlength=len(new.levels[name]))
            labelled_m = counts / counts.sum()
            # Kish effective sample size: unequal weights carry less information.
            n_eff = w[use].sum() ** 2 / (w[use] ** 2).sum()
            share = n_eff / (n_eff + prior_strength)
            old = model.m_[name] if prior_strength > 0 else labelled_m
            m = np.maximum(share * labelled_m + (1 - share) * old, 1e-12)
            new.m_[name] = m / m.sum()
    if keep_u:
        new.u_ = {k: v.copy() for k, v in model.u_.items()}
        if hasattr(model, "u_floor_"):
            new.u_floor_ = dict(model.u_floor_)
    logger.info("refitted from %d labelled pairs (%d matches)", len(y), int(y.sum()))
    return new
