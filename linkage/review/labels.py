"""The one label vocabulary of reviewed pairs, and its reader and writer.

A labels table has the columns ``source_l, record_id_l, source_r, record_id_r, label``
(``schema.PAIR_KEYS`` + ``schema.LABEL``); ``label`` is ``match``, ``non-match`` or
``unsure``. Every reader of labels (the review notebook, ``fit_from_labels``, the run config's
``model.labels``) goes through :func:`normalize_labels`, so a spelling means the same
everywhere and ``unsure`` is never read as a non-match.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from linkage import schema
from linkage.errors import InputError
from linkage.io import write_csv

logger = logging.getLogger(__name__)

MATCH = "match"
NON_MATCH = "non-match"
UNSURE = "unsure"
LABEL_VALUES = (MATCH, NON_MATCH, UNSURE)
KEY_COLUMNS = list(schema.PAIR_KEYS)
LABEL_COLUMNS = [*KEY_COLUMNS, schema.LABEL]
# Spellings accepted on read (case and surrounding spaces ignored); written back canonical.
ALIASES = {
    "1": MATCH,
    "true": MATCH,
    "yes": MATCH,
    "match": MATCH,
    "0": NON_MATCH,
    "false": NON_MATCH,
    "no": NON_MATCH,
    "non-match": NON_MATCH,
    "nonmatch": NON_MATCH,
    "non_match": NON_MATCH,
    "unsure": UNSURE,
    "?": UNSURE,
}


def empty_labels() -> pd.DataFrame:
    """An empty labels table (columns ``LABEL_COLUMNS``, all strings)."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})


def normalize_labels(labels: pd.DataFrame, *, path: str | Path | None = None) -> pd.DataFrame:
    """Check columns, map spellings to match / non-match / unsure, order each pair's sides.

    Takes and returns ``LABEL_COLUMNS`` (strings). The smaller (source, record_id) goes on
    the left; of several labels of one pair the last wins.

    Raises:
        InputError: a column is missing or a label is not in ``ALIASES`` (naming ``path`` and
            the first bad row's line number when read from a file).
    """
    where = str(path) if path is not None else None
    missing = [c for c in LABEL_COLUMNS if c not in labels]
    if missing:
        raise InputError(f"labels lack columns {missing}; expected {LABEL_COLUMNS}", path=where)
    out = labels[LABEL_COLUMNS].astype(str).copy()
    out[schema.LABEL] = out[schema.LABEL].str.strip().str.lower().map(ALIASES)
    bad = out[schema.LABEL].isna().to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{int(bad.sum())} labels are not one of {LABEL_VALUES} or their spellings "
            f"{sorted(ALIASES)} (first: {labels[schema.LABEL].iloc[first]!r})",
            path=where,
            row=first + 2 if where else None,  # +1 header, +1 one-based
            column=schema.LABEL,
        )
    swap = (out[schema.SOURCE_L] > out[schema.SOURCE_R]) | (
        (out[schema.SOURCE_L] == out[schema.SOURCE_R])
        & (out[schema.RECORD_ID_L] > out[schema.RECORD_ID_R])
    )
    left_cols = [schema.SOURCE_L, schema.RECORD_ID_L]
    right_cols = [schema.SOURCE_R, schema.RECORD_ID_R]
    left = out.loc[swap, left_cols].to_numpy()
    out.loc[swap, left_cols] = out.loc[swap, right_cols].to_numpy()
    out.loc[swap, right_cols] = left
    return out.drop_duplicates(KEY_COLUMNS, keep="last").reset_index(drop=True)


def add_label(labels: pd.DataFrame, pair: pd.Series | dict, label: str) -> pd.DataFrame:
    """Return ``labels`` with ``pair`` (a row holding ``PAIR_KEYS``) labelled; replaces a prior one."""
    row = pd.DataFrame([{**{k: pair[k] for k in KEY_COLUMNS}, schema.LABEL: label}])
    return normalize_labels(pd.concat([labels, row], ignore_index=True))


def remove_label(labels: pd.DataFrame, pair: pd.Series | dict) -> pd.DataFrame:
    """Return ``labels`` without ``pair``'s label (either side order); unchanged if absent."""
    key = normalize_labels(
        pd.DataFrame([{**{k: pair[k] for k in KEY_COLUMNS}, schema.LABEL: UNSURE}])
    ).iloc[0]
    hit = np.ones(len(labels), dtype=bool)
    for k in KEY_COLUMNS:
        hit &= labels[k].astype(str).to_numpy() == key[k]
    return labels[~hit].reset_index(drop=True)


def save_labels(labels: pd.DataFrame, path: str | Path) -> Path:
    """Write labels as UTF-8 CSV atomically (what ``load_labels`` and ``model.labels`` read)."""
    return write_csv(normalize_labels(labels), path)


def load_labels(path: str | Path, *, missing_ok: bool = True) -> pd.DataFrame:
    """Read a labels CSV into ``LABEL_COLUMNS``.

    A missing file gives an empty table when ``missing_ok`` (a review not yet started).

    Raises:
        InputError: the file is missing (``missing_ok=False``), lacks a column or holds a
            label outside the vocabulary.
    """
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return empty_labels()
        raise InputError("labels file not found", path=str(path))
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    return normalize_labels(raw, path=path)


def training_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Labels that can train or score a model: ``unsure`` left out."""
    labels = normalize_labels(labels)
    return labels[labels[schema.LABEL] != UNSURE].reset_index(drop=True)


def labels_from_truth(pairs: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Stand-in reviewer for demos and tests: label keyed pairs from a truth table's person_id.

    ``pairs`` holds ``PAIR_KEYS``; ``truth`` holds source, record_id, person_id. A pair with
    a record the truth does not know is ``unsure``.
    """
    person = pd.Series(
        truth[schema.PERSON_ID].to_numpy(),
        index=pd.MultiIndex.from_arrays(
            [truth[schema.SOURCE].astype(str), truth[schema.RECORD_ID].astype(str)]
        ),
    )
    person = person[~person.index.duplicated()]

    def side(source: str, record_id: str) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([pairs[source].astype(str), pairs[record_id].astype(str)])
        return person.reindex(keys).to_numpy()

    left = side(schema.SOURCE_L, schema.RECORD_ID_L)
    right = side(schema.SOURCE_R, schema.RECORD_ID_R)
    label = np.where(
        pd.isna(left) | pd.isna(right), UNSURE, np.where(left == right, MATCH, NON_MATCH)
    )
    return normalize_labels(pairs[KEY_COLUMNS].assign(**{schema.LABEL: label}))


def label_rows(labels: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Labels with the records' row keys added (``rid_l < rid_r``).

    Pairs naming a record not in ``records`` are dropped with a warning.
    """
    labels = normalize_labels(labels)
    index = pd.Series(
        records[schema.ROW].to_numpy(),
        index=pd.MultiIndex.from_arrays(
            [records[schema.SOURCE].astype(str), records[schema.RECORD_ID].astype(str)]
        ),
    )

    def side(source: str, record_id: str) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([labels[source], labels[record_id]])
        return index.reindex(keys).to_numpy()

    left = side(schema.SOURCE_L, schema.RECORD_ID_L)
    right = side(schema.SOURCE_R, schema.RECORD_ID_R)
    ok = ~(pd.isna(left) | pd.isna(right))
    if not ok.all():
        logger.warning("%d labelled pairs name records not in this run", int((~ok).sum()))
    out = labels[ok].copy()
    out[schema.ROW_L] = np.minimum(left[ok], right[ok]).astype(np.int64)
    out[schema.ROW_R] = np.maximum(left[ok], right[ok]).astype(np.int64)
    return out.reset_index(drop=True)
