"""Review queue: which scored pairs a reviewer should see, in what order, and each pair side by
side; re-scoring pairs under a refitted model so the queue can be re-ranked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare import Comparison
from linkage.errors import InputError
from linkage.model import FellegiSunterModel, match_probability
from linkage.tables import attach_keys

logger = logging.getLogger(__name__)

# Raw field shown beside a standardized column that has no raw twin of the same stem.
_RAW_FOR = {schema.ID_STD: schema.ID_NUMBER, schema.PHONE_STD: schema.PHONE}

REASON = "reason"
CLUSTER_SIZE = "cluster_size"
DISTANCE = "distance"


def threshold_weight(threshold: float) -> float:
    """Match weight (log2 Bayes factor) of a match-probability threshold.

    Raises:
        InputError: ``threshold`` is not strictly between 0 and 1.
    """
    if not 0 < threshold < 1:
        raise InputError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return float(np.log2(threshold) - np.log2(1 - threshold))


def identity_of_rows(records: pd.DataFrame, identities: pd.DataFrame) -> np.ndarray:
    """identity_id per record row (position), joined on (source, record_id).

    Raises:
        InputError: a record has no identity.
    """
    keys = [schema.SOURCE, schema.RECORD_ID]
    # Fast path: a run's identities come in the order of its records.
    if len(identities) == len(records) and all(
        np.array_equal(identities[c].to_numpy(), records[c].to_numpy()) for c in keys
    ):
        return identities[schema.IDENTITY_ID].to_numpy()
    index = pd.MultiIndex.from_arrays([identities[c].astype(str) for c in keys])
    pos = index.get_indexer(pd.MultiIndex.from_arrays([records[c].astype(str) for c in keys]))
    if (pos < 0).any():
        raise InputError(f"{int((pos < 0).sum())} records have no identity")
    return identities[schema.IDENTITY_ID].to_numpy()[pos]


def review_queue(
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    identities: pd.DataFrame | None = None,
    *,
    threshold: float = 0.9,
    band: float = 4.0,
    large_cluster: int = 5,
    limit: int | None = 100,
    random_pairs: int = 0,
    seed: int = 0,
    exclude: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Pairs worth a reviewer's time, closest to the threshold first.

    Takes scored pairs (``rid_l, rid_r, match_weight, match_probability``, ...) and the run's
    records; returns them with ``PAIR_KEYS`` in front and ``reason``, ``cluster_size``,
    ``distance`` (bits from the threshold's weight) added. Near the threshold: match weight
    within ``band`` bits of the threshold's weight. In a large cluster: both records in one
    identity of more than ``large_cluster`` records. ``random_pairs`` more, drawn uniformly
    from the other scored pairs (reason ``random``), go last: labels on them keep
    precision/recall estimates honest away from the threshold. Pairs in ``exclude`` (a labels
    table) are left out: that is how a re-ranked queue skips what is already reviewed.

    Raises:
        InputError: ``threshold`` is not strictly between 0 and 1.
    """
    w0 = threshold_weight(threshold)
    if exclude is not None and len(exclude):
        from linkage.review.labels import label_rows

        done = label_rows(exclude, records)
        seen = pd.MultiIndex.from_arrays([done[schema.ROW_L], done[schema.ROW_R]])
        mine = pd.MultiIndex.from_arrays([pairs[schema.ROW_L], pairs[schema.ROW_R]])
        pairs = pairs[~mine.isin(seen)]
    weight = pairs[schema.MATCH_WEIGHT].to_numpy()
    distance = np.abs(weight - w0)
    near = distance <= band
    size = np.zeros(len(pairs), dtype=np.int64)
    large = np.zeros(len(pairs), dtype=bool)
    if identities is not None and len(pairs):
        ident = identity_of_rows(records, identities)
        sizes = pd.Series(ident).value_counts()
        left = ident[pairs[schema.ROW_L].to_numpy()]
        right = ident[pairs[schema.ROW_R].to_numpy()]
        same = left == right
        size = np.where(same, sizes.reindex(left).to_numpy(), 0)
        large = same & (size > large_cluster)
    keep = near | large
    out = attach_keys(pairs[keep], records)
    reason = pd.Series(np.where(near[keep], "near_threshold", ""), index=out.index)
    both = near[keep] & large[keep]
    reason = reason + np.where(both, "|", "") + np.where(large[keep], "large_cluster", "")
    out.insert(0, REASON, reason)
    out[CLUSTER_SIZE] = size[keep]
    out[DISTANCE] = distance[keep]
    out = out.sort_values([DISTANCE, schema.ROW_L, schema.ROW_R], kind="stable")
    if limit is not None:
        out = out.head(limit)
    if random_pairs > 0:
        rest = np.flatnonzero(~keep)
        pick = np.random.default_rng(seed).permutation(rest)[:random_pairs]
        pick.sort()
        extra = attach_keys(pairs.iloc[pick], records)
        extra.insert(0, REASON, "random")
        extra[CLUSTER_SIZE] = size[pick]
        extra[DISTANCE] = distance[pick]
        out = pd.concat([out, extra])
    logger.info("review queue: %d pairs (%d near or in large clusters)", len(out), int(keep.sum()))
    return out.reset_index(drop=True)


def rescore_pairs(
    pairs: pd.DataFrame, old: FellegiSunterModel, new: FellegiSunterModel
) -> pd.DataFrame:
    """Scored pairs re-scored under ``new``: ``mw_*``, ``match_weight``, ``match_probability``.

    ``pairs`` were scored by ``old`` (``gamma_*`` and ``mw_*`` columns). A partial weight that
    ``old`` adjusted for term frequency, log2(m / tf), keeps its tf: it moves by
    log2(m_new / m_old) at that level; every other partial weight is ``new``'s level weight.
    So re-ranking needs no term-frequency tables.
    """
    out = pairs.copy()
    total = np.full(len(out), new.prior_weight_)
    old_w, new_w = old.weights_, new.weights_
    for name in new.comparisons:
        g = out[schema.GAMMA_PREFIX + name].to_numpy().astype(np.int64)
        mw = np.where(g >= 0, new_w[name][np.maximum(g, 0)], 0.0)
        tf_level = new.tf_columns.get(name)
        mw_col = schema.MW_PREFIX + name
        if tf_level is not None and mw_col in out:
            at = g == tf_level
            base = old_w[name][tf_level]
            adjusted = at & ~np.isclose(out[mw_col].to_numpy(), base, atol=1e-9)
            shift = np.log2(new.m_[name][tf_level]) - np.log2(old.m_[name][tf_level])
            mw = np.where(adjusted, out[mw_col].to_numpy() + shift, mw)
        out[mw_col] = mw
        total = total + mw
    # pairs at the household pattern take new's household model, as new.score would
    gamma = np.column_stack(
        [out[schema.GAMMA_PREFIX + n].to_numpy().astype(np.int8) for n in new.comparisons]
    )
    at = new.household_mask(gamma)
    if at.any():
        hh_total, parts = new.household_weights(gamma[at])
        for name, part in parts.items():
            col = out[schema.MW_PREFIX + name].to_numpy(dtype=np.float64, copy=True)
            col[at] = part
            out[schema.MW_PREFIX + name] = col
        differ = schema.MW_PREFIX + new.household_["differ"]
        col = out[differ].to_numpy(dtype=np.float64, copy=True)
        col[at] += hh_total - new.prior_weight_ - sum(parts.values())
        out[differ] = col
        total = np.asarray(total, dtype=np.float64).copy()
        total[at] = hh_total
    out[schema.MATCH_WEIGHT] = total
    out[schema.MATCH_PROBABILITY] = match_probability(total)
    return out


def _raw_columns(comparison: Comparison, records: pd.DataFrame) -> list[str]:
    """Columns to show for a comparison: its raw canonical fields, else its first column."""
    cols: list[str] = []
    for column in comparison.columns:
        stem = column.removesuffix("_std")
        raw = _RAW_FOR.get(column, stem)
        if raw in schema.CANONICAL_FIELDS and raw in records and raw not in cols:
            cols.append(raw)
    return cols or [c for c in comparison.columns[:1] if c in records]


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, str | list | tuple | np.ndarray) and pd.isna(value)):
        return ""
    return str(value)


def _shown(record: pd.Series, cols: list[str]) -> str:
    """A record's values for one comparison, ``" / "``-joined; empty when all are missing.

    The first column is the comparison's own field (the ID of ``id``): when it is missing
    but others are not, the text says so (``no id_number / 1990-03-05 / 男``) rather than
    showing the other fields as if they were it.
    """
    texts = [_text(record[c]) for c in cols]
    if not any(texts):
        return ""
    if not texts[0]:
        texts[0] = f"no {cols[0]}"
    return " / ".join(t for t in texts if t)


def side_by_side(
    pair: pd.Series,
    records: pd.DataFrame,
    model: FellegiSunterModel,
    comparisons: Sequence[Comparison],
) -> pd.DataFrame:
    """One row per comparison: raw values of both records, comparison level and weight.

    ``pair`` is one scored pair (``rid_l``, ``rid_r``, ``gamma_*``, ``mw_*``). Returns
    columns comparison, left, right, level, level_name, weight (bits); the first row names
    the two records (source:record_id), the last two are the prior and the total.
    """
    rows = records[schema.ROW].to_numpy()
    left = records.iloc[int(np.flatnonzero(rows == int(pair[schema.ROW_L]))[0])]
    right = records.iloc[int(np.flatnonzero(rows == int(pair[schema.ROW_R]))[0])]
    explained = model.explain(pair).set_index("comparison")
    out = [
        ("record", f"{left[schema.SOURCE]}:{left[schema.RECORD_ID]}",
         f"{right[schema.SOURCE]}:{right[schema.RECORD_ID]}", np.nan, "", np.nan)
    ]  # fmt: skip
    for comparison in comparisons:
        cols = _raw_columns(comparison, records)
        ex = explained.loc[comparison.name]
        out.append(
            (
                comparison.name,
                _shown(left, cols),
                _shown(right, cols),
                int(ex["level"]),
                ex["level_name"],
                float(ex["weight"]),
            )
        )
    prior = float(explained.loc["prior", "weight"])
    total = float(explained["weight"].sum())
    out.append(("prior", "", "", np.nan, "", prior))
    out.append(("total", "", "", np.nan, f"p = {float(match_probability(total)):.3f}", total))
    return pd.DataFrame(
        out, columns=["comparison", "left", "right", "level", "level_name", "weight"]
    )
