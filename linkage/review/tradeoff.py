"""Precision and recall against the match-probability threshold: from reviewed labels, and as
the model expects them over all scored pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from linkage import schema
from linkage.review.labels import MATCH, label_rows, training_labels

DEFAULT_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


def _labelled_probabilities(
    labels: pd.DataFrame, pairs: pd.DataFrame, records: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Match probability and truth (True = match) of each labelled pair (unsure left out).

    A labelled pair the blocking never produced has probability 0.
    """
    rows = label_rows(training_labels(labels), records)
    prob = pd.Series(
        pairs[schema.MATCH_PROBABILITY].to_numpy(),
        index=pd.MultiIndex.from_arrays([pairs[schema.ROW_L], pairs[schema.ROW_R]]),
    )
    prob = prob[~prob.index.duplicated()]
    p = prob.reindex(pd.MultiIndex.from_arrays([rows[schema.ROW_L], rows[schema.ROW_R]]))
    p = np.nan_to_num(p.to_numpy(dtype=np.float64), nan=0.0)
    return p, (rows[schema.LABEL] == MATCH).to_numpy()


def labelled_tradeoff(
    labels: pd.DataFrame,
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    thresholds: Sequence[float] | None = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """Precision and recall among reviewed pairs at each threshold (unsure labels left out).

    Returns columns threshold, labelled, tp, fp, fn, tn, precision, recall, f1 (NaN where
    undefined). ``thresholds=None`` takes every distinct probability of a labelled pair: the
    full precision–recall curve. Estimates hold for pairs like the reviewed ones (near the
    threshold), not for all pairs.
    """
    p, truth = _labelled_probabilities(labels, pairs, records)
    if thresholds is None:
        thresholds = np.unique(p[p > 0]).tolist()
    out = []
    for t in thresholds:
        pred = p >= t
        tp = int((pred & truth).sum())
        fp = int((pred & ~truth).sum())
        fn = int((~pred & truth).sum())
        tn = int((~pred & ~truth).sum())
        precision = tp / (tp + fp) if tp + fp else np.nan
        recall = tp / (tp + fn) if tp + fn else np.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
        out.append(
            {
                "threshold": float(t),
                "labelled": len(p),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "tn": tn,
                "precision": precision,
                "recall": recall,
                "f1": f1,
            }
        )
    return pd.DataFrame(out)


def expected_tradeoff(
    pairs: pd.DataFrame, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> pd.DataFrame:
    """Model-expected precision and recall over all scored pairs (if the model is calibrated).

    Returns columns threshold, pairs_above, expected_matches_above, precision, recall.
    """
    p = np.sort(pairs[schema.MATCH_PROBABILITY].to_numpy(dtype=np.float64))
    tail = np.concatenate((np.cumsum(p[::-1])[::-1], [0.0]))  # sum of p from index i on
    total = tail[0]
    out = []
    for t in thresholds:
        i = int(np.searchsorted(p, t, side="left"))
        above = len(p) - i
        out.append(
            {
                "threshold": t,
                "pairs_above": above,
                "expected_matches_above": tail[i],
                "precision": tail[i] / above if above else np.nan,
                "recall": tail[i] / total if total else np.nan,
            }
        )
    return pd.DataFrame(out)


def best_threshold(table: pd.DataFrame, default: float) -> float:
    """The threshold with the highest F1 in a trade-off table (highest threshold on ties)."""
    f1 = 2 * table["precision"] * table["recall"] / (table["precision"] + table["recall"])
    if not f1.notna().any():
        return default
    best = table.assign(f1=f1).sort_values(["f1", "threshold"], ascending=False)
    return float(best["threshold"].iloc[0])
