"""Stable identity IDs: map a new clustering onto the identities a store already holds.

Pure functions over DataFrames; imports only the schema. Must not import the store, CLI or Linker.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from linkage import schema

logger = logging.getLogger(__name__)

# Column names live in schema; these aliases keep ``from linkage.identity import ...`` working.
CLUSTER = schema.CLUSTER_ID
STATUS = schema.STATUS
MERGED_INTO = schema.MERGED_INTO
CREATED_RUN = schema.CREATED_RUN
UPDATED_RUN = schema.UPDATED_RUN
EVENT = schema.EVENT
OTHER_IDENTITY = schema.OTHER_IDENTITY
IDENTITY_COLUMNS = schema.IDENTITY_COLUMNS
EVENT_COLUMNS = schema.EVENT_COLUMNS
EVENTS = (
    "created",
    "record_added",
    "record_updated",
    "merged",
    "split",
    "record_removed",
    "retired",
)


@dataclass
class StableIds:
    """Result of :func:`assign_stable_ids`."""

    # one identity id per row of ``current``, in its order
    identity_ids: np.ndarray
    # rows to upsert into the identities table (every identity whose status or records changed)
    identities: pd.DataFrame
    # events in EVENT_COLUMNS, sorted deterministically
    events: pd.DataFrame


def record_key(sources: pd.Series, record_ids: pd.Series) -> pd.Series:
    """Return one string key per record: source, unit separator, record id."""
    return sources.astype(str) + "\x1f" + record_ids.astype(str)


def _hash_id(key: str, salt: int) -> str:
    text = key if salt == 0 else f"{key}\x1f{salt}"
    return "ID" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:14].upper()


def fresh_ids(smallest_keys: np.ndarray, taken: set[str]) -> np.ndarray:
    """Name clusters after their smallest record key (as ``pipeline.identity_ids`` does).

    An ID already used by any stored identity, retired and merged ones included, is never
    reused: the key is re-hashed with a salt until the ID is free, which stays deterministic.
    """
    out = np.empty(len(smallest_keys), dtype=object)
    used = set(taken)
    for i, key in enumerate(smallest_keys.tolist()):  # one per new cluster, not per record
        salt = 0
        name = _hash_id(key, salt)
        while name in used:
            salt += 1
            name = _hash_id(key, salt)
        used.add(name)
        out[i] = name
    return out


def _greedy_match(overlap: pd.DataFrame) -> dict[int, str]:
    """Give each cluster at most one previous identity and each identity at most one cluster.

    Split rule: a previous identity goes to the cluster holding most of its records (the
    larger part keeps the ID). Merge rule: a cluster that several identities go to keeps the
    oldest of them; the others are absorbed. Clusters left without an ID then take a leftover
    identity they overlap, most overlap first. Ties break on identity id and cluster key, so
    the result does not depend on row order. Hand-written: no library offers this assignment.
    """
    if overlap.empty:
        return {}
    best = overlap.sort_values(
        ["prev", "n", "ckey"], ascending=[True, False, True], kind="mergesort"
    ).drop_duplicates("prev")
    kept = best.sort_values(
        [CLUSTER, "age", "prev"], ascending=[True, True, True], kind="mergesort"
    ).drop_duplicates(CLUSTER)
    chosen = dict(zip(kept[CLUSTER].tolist(), kept["prev"].tolist(), strict=True))
    taken = set(chosen.values())
    rest = overlap[~overlap[CLUSTER].isin(chosen.keys()) & ~overlap["prev"].isin(taken)]
    rest = rest.sort_values(
        ["n", "age", "prev", "ckey"], ascending=[False, True, True, True], kind="mergesort"
    )
    for c, p in zip(rest[CLUSTER].tolist(), rest["prev"].tolist(), strict=True):
        if c in chosen or p in taken:
            continue
        chosen[c] = p
        taken.add(p)
    return chosen


def assign_stable_ids(
    current: pd.DataFrame,
    previous: pd.DataFrame,
    known: pd.DataFrame,
    run_id: int,
    *,
    updated: pd.Series | None = None,
) -> StableIds:
    """Assign identity IDs to the clusters of ``current`` keeping the IDs of ``previous``.

    ``current``: source, record_id, cluster (any label). ``previous``: source, record_id,
    identity_id of the stored records in scope (all of their identities' records). ``known``:
    every stored identity with identity_id, status, created_run (for age and to never reuse
    an ID). ``updated``: optional boolean per ``current`` row, the record replaced a stored one.
    """
    cur_key = record_key(current[schema.SOURCE], current[schema.RECORD_ID]).to_numpy()
    labels = pd.factorize(current[CLUSTER].to_numpy())[0]
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    # smallest key per cluster via sorted integer codes (a groupby min on strings runs in Python)
    key_codes, key_uniques = pd.factorize(cur_key, sort=True)
    smallest = np.full(n_clusters, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, labels, key_codes.astype(np.int64))
    ckey = np.asarray(key_uniques, dtype=object)[smallest] if n_clusters else np.array([], object)

    prev_key = record_key(previous[schema.SOURCE], previous[schema.RECORD_ID])
    prev_map = pd.Series(previous[schema.IDENTITY_ID].to_numpy(), index=prev_key.to_numpy())
    prev_of_cur = prev_map.reindex(cur_key).to_numpy()

    age = pd.Series(
        pd.to_numeric(known[CREATED_RUN], errors="coerce").to_numpy(),
        index=known[schema.IDENTITY_ID].to_numpy(),
    )
    has_prev = pd.notna(prev_of_cur)
    overlap = (
        pd.DataFrame({CLUSTER: labels[has_prev], "prev": prev_of_cur[has_prev]})
        .groupby([CLUSTER, "prev"], sort=False)
        .size()
        .rename("n")
        .reset_index()
    )
    overlap["age"] = age.reindex(overlap["prev"].to_numpy()).fillna(np.inf).to_numpy()
    overlap["ckey"] = ckey[overlap[CLUSTER].to_numpy()]
    chosen = _greedy_match(overlap)

    name = np.empty(n_clusters, dtype=object)
    kept = np.zeros(n_clusters, dtype=bool)
    if chosen:
        idx = np.fromiter(chosen.keys(), dtype=np.int64, count=len(chosen))
        name[idx] = list(chosen.values())
        kept[idx] = True
    fresh = np.flatnonzero(~kept)
    order = fresh[np.argsort(ckey[fresh], kind="stable")]  # salts assigned in key order
    name[order] = fresh_ids(ckey[order], set(known[schema.IDENTITY_ID].astype(str)))
    ids = name[labels] if len(labels) else np.array([], dtype=object)

    events, rows = _changes(
        current, cur_key, ids, prev_of_cur, prev_key.to_numpy(), previous, name, kept, updated
    )
    identities = _identity_rows(rows, known, run_id)
    logger.info(
        "stable ids: %d clusters, %d kept an id, %d fresh, %d events",
        n_clusters,
        int(kept.sum()),
        len(fresh),
        len(events),
    )
    return StableIds(identity_ids=ids, identities=identities, events=events)


def _changes(
    current: pd.DataFrame,
    cur_key: np.ndarray,
    ids: np.ndarray,
    prev_of_cur: np.ndarray,
    prev_keys: np.ndarray,
    previous: pd.DataFrame,
    name: np.ndarray,
    kept: np.ndarray,
    updated: pd.Series | None,
) -> tuple[pd.DataFrame, dict[str, tuple[str, str | None]]]:
    """Return the events and {identity: (status, merged_into)} for identities that changed."""
    src = current[schema.SOURCE].to_numpy(dtype=object)
    rid = current[schema.RECORD_ID].to_numpy(dtype=object)
    frames = []
    kept_names = set(name[kept].tolist())
    fresh_names = sorted(set(name[~kept].tolist()))
    rows: dict[str, tuple[str, str | None]] = {n: ("active", None) for n in fresh_names}
    frames.append(_events("created", fresh_names, None, None, None))
    moved = pd.isna(prev_of_cur) | (prev_of_cur != ids)
    frames.append(_events("record_added", ids[moved], prev_of_cur[moved], src[moved], rid[moved]))
    if updated is not None:
        up = np.asarray(updated, dtype=bool)
        frames.append(_events("record_updated", ids[up], None, src[up], rid[up]))
    for ident in set(ids[moved].tolist()) & kept_names:
        rows[ident] = ("active", None)

    prev_ids = previous[schema.IDENTITY_ID].to_numpy()
    gone = ~pd.Index(prev_keys).isin(pd.Index(cur_key))
    g_src = previous[schema.SOURCE].to_numpy(dtype=object)[gone]
    g_rid = previous[schema.RECORD_ID].to_numpy(dtype=object)[gone]
    frames.append(_events("record_removed", prev_ids[gone], None, g_src, g_rid))
    for ident in set(prev_ids[gone].tolist()) & kept_names:
        rows[ident] = ("active", None)

    # Previous identities that no cluster kept: merged into where most records went, or retired.
    lost = sorted(set(prev_ids.tolist()) - kept_names)
    if lost:
        has = pd.notna(prev_of_cur)
        where = pd.DataFrame({"prev": prev_of_cur[has], "now": ids[has]})
        where = where[where["prev"].isin(lost)]
        best = (
            where.groupby(["prev", "now"])
            .size()
            .rename("n")
            .reset_index()
            .sort_values(["prev", "n", "now"], ascending=[True, False, True], kind="mergesort")
            .drop_duplicates("prev")
            .set_index("prev")["now"]
        )
        for p in lost:
            into = best.get(p)
            if into is None:
                rows[p] = ("retired", None)
                frames.append(_events("retired", [p], None, None, None))
            else:
                rows[p] = ("merged", into)
                frames.append(_events("merged", [into], [p], None, None))
    # A fresh cluster holding records of an identity that lives on elsewhere was split off it.
    has = pd.notna(prev_of_cur)
    fresh_mask = pd.Index(ids).isin(fresh_names) & has
    splits = pd.DataFrame({"prev": prev_of_cur[fresh_mask], "now": ids[fresh_mask]})
    splits = splits[splits["prev"].isin(kept_names)].drop_duplicates()
    frames.append(_events("split", splits["prev"], splits["now"], None, None))
    for p in splits["prev"].tolist():
        rows[p] = ("active", None)

    events = pd.concat(frames, ignore_index=True)
    events["_order"] = pd.Categorical(events[EVENT], categories=EVENTS).codes
    events = events.sort_values(
        ["_order", schema.IDENTITY_ID, OTHER_IDENTITY, schema.SOURCE, schema.RECORD_ID],
        kind="mergesort",
        na_position="first",
    ).drop(columns="_order")
    return events.reset_index(drop=True), rows


def _events(kind: str, ident, other, src, rid) -> pd.DataFrame:
    ident = np.asarray(ident, dtype=object)
    n = len(ident)

    def col(v):
        return np.full(n, None, dtype=object) if v is None else np.asarray(v, dtype=object)

    return pd.DataFrame(
        {
            EVENT: np.full(n, kind, dtype=object),
            schema.IDENTITY_ID: ident,
            OTHER_IDENTITY: col(other),
            schema.SOURCE: col(src),
            schema.RECORD_ID: col(rid),
        }
    )


def _identity_rows(
    rows: dict[str, tuple[str, str | None]], known: pd.DataFrame, run_id: int
) -> pd.DataFrame:
    created = pd.Series(
        known[CREATED_RUN].to_numpy(), index=known[schema.IDENTITY_ID].astype(str).to_numpy()
    )
    names = sorted(rows)
    table = pd.DataFrame(
        {
            schema.IDENTITY_ID: names,
            STATUS: [rows[n][0] for n in names],
            MERGED_INTO: [rows[n][1] for n in names],
            CREATED_RUN: pd.to_numeric(created.reindex(names), errors="coerce")
            .fillna(run_id)
            .astype(np.int64)
            .to_numpy(),
            UPDATED_RUN: np.full(len(names), run_id, dtype=np.int64),
        }
    )
    return table
