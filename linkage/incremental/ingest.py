"""Ingest: link new (or updated) records against an identity store, keeping stable ids.

Finds the stored records sharing a blocking-key hash with the new ones, then runs the
batch's own steps (``pipeline.compare_pairs``, ``score_pairs``, ``cluster_records``) on
them, with the comparisons, blocking and standardize settings of the stored model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import block_new, key_hashes
from linkage.config import RunConfig
from linkage.errors import InputError
from linkage.identity import assign_stable_ids
from linkage.incremental._common import (
    check_config,
    stack,
    store_tf,
    stored_run,
    strip_store_columns,
)
from linkage.incremental.batch import apply_changes, config_doc
from linkage.io import RejectedRows, read_records
from linkage.merge import merge_records
from linkage.pipeline import cluster_records, compare_pairs, score_pairs
from linkage.progress import ProgressLike, as_progress
from linkage.store import Store, StoreChanges
from linkage.tables import attach_keys, rows_for_keys

logger = logging.getLogger(__name__)

# The steps an ingest reports through ``progress``, in order.
STAGES: tuple[str, ...] = (
    "reading and standardizing new records",
    "finding stored candidates",
    "blocking, comparing, scoring",
    "reclustering the affected identities",
    "writing to the store",
)


@dataclass
class IngestResult:
    """What an ingest changed: identities of the affected records, events, summary."""

    identities: pd.DataFrame
    events: pd.DataFrame
    run_id: int
    summary: dict = field(default_factory=dict)


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays(
        [frame[schema.SOURCE].astype(str), frame[schema.RECORD_ID].astype(str)]
    )


def _unchanged_updates(stored: pd.DataFrame, new: pd.DataFrame) -> np.ndarray:
    """Per record of ``new`` (updates of stored records), True where it equals its stored
    version in every column both tables have (the store's row key and run id left out;
    missing equals missing).

    Both tables have ``source`` and ``record_id`` columns; ``stored`` as
    :meth:`Store.records_for` returns it.
    """
    same_rows = np.zeros(len(new), dtype=bool)
    if not len(new) or not len(stored):
        return same_rows
    stored = strip_store_columns(stored)
    key = [schema.SOURCE, schema.RECORD_ID]
    cols = [c for c in new.columns if c in stored.columns and c not in key]
    both = new.assign(
        **{k: new[k].astype(str) for k in key}, __pos=np.arange(len(new))
    ).merge(
        stored.assign(**{k: stored[k].astype(str) for k in key}),
        on=key, how="inner", suffixes=("", "__stored"),
    )  # fmt: skip
    same = np.ones(len(both), dtype=bool)
    for c in cols:
        a, b = both[c], both[c + "__stored"]
        missing_a, missing_b = a.isna().to_numpy(), b.isna().to_numpy()
        equal = a.astype(str).to_numpy() == b.astype(str).to_numpy()
        same &= (missing_a & missing_b) | (~missing_a & ~missing_b & equal)
    same_rows[both["__pos"].to_numpy()[same]] = True
    return same_rows


def ingest(store: Store, config: RunConfig, *, progress: ProgressLike = None) -> IngestResult:
    """Link the records of ``config``'s sources against the store; an existing key is an update.

    ``progress`` (``linkage.progress``) gets the names in ``STAGES``.
    """
    say = as_progress(progress).stage
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    run = stored_run(store)
    check_config(config, run)
    model, comparisons = run.model, run.comparisons
    # records are standardized and keyed as the stored model's batch did
    config = config.model_copy(update={"standardize": run.standardize, "blocking": run.blocking})

    say(STAGES[0])
    rejected = RejectedRows()  # used with run.bad_rows: bad rows set aside and counted
    new = strip_store_columns(read_records(config, rejected=rejected))
    dup = new.duplicated([schema.SOURCE, schema.RECORD_ID])
    if dup.any():
        raise InputError(f"{int(dup.sum())} new records repeat a (source, record_id)")
    seconds["standardize"] = time.perf_counter() - t

    t = time.perf_counter()
    say(STAGES[1])
    new_keys = new[[schema.SOURCE, schema.RECORD_ID]].astype(str)
    hashes = key_hashes(new.assign(**{schema.ROW: np.arange(len(new))}), config.blocking)
    cand = store.keys_for_hashes(hashes[schema.KEY_HASH].to_numpy())
    cand = cand[~_keys(cand).isin(_keys(new_keys))]
    stored = store.records_for(cand)
    prev_updated = store.links_for(new_keys)
    updated = _keys(new_keys).isin(_keys(prev_updated))
    # an update equal to the stored record is counted, but makes no record_updated event
    changed = np.array(updated, dtype=bool)
    changed[np.flatnonzero(changed)] = ~_unchanged_updates(
        store.records_for(new_keys[updated]), new[updated]
    )
    unchanged = int(updated.sum() - changed.sum())
    combined = stack([stored, new])
    is_new = np.zeros(len(combined), dtype=bool)
    is_new[len(combined) - len(new) :] = True
    seconds["candidates"] = time.perf_counter() - t

    t = time.perf_counter()
    say(STAGES[2])
    pairs = block_new(combined, is_new, config.blocking)
    tf_rows = {
        name: store_tf(store, combined, new, column) for name, column in run.term_frequency.items()
    }
    vectors, tf = compare_pairs(combined, pairs, comparisons, tf_rows)
    scored = score_pairs(vectors, model, comparisons, tf)
    seconds["score"] = time.perf_counter() - t

    t = time.perf_counter()
    say(STAGES[3])
    threshold = config.clustering.threshold
    strong = scored[schema.MATCH_PROBABILITY].to_numpy() >= threshold
    hit_rows = np.unique(
        np.concatenate(
            [scored[schema.ROW_L].to_numpy()[strong], scored[schema.ROW_R].to_numpy()[strong]]
        )
    )
    hit = combined.iloc[hit_rows[~is_new[hit_rows]]]
    touched = sorted(
        set(store.links_for(hit)[schema.IDENTITY_ID]) | set(prev_updated[schema.IDENTITY_ID])
    )
    prev_links = store.links_of_identities(touched)
    member_keys = prev_links[~_keys(prev_links).isin(_keys(new_keys))]
    have = _keys(combined)
    extra = member_keys[~_keys(member_keys).isin(have)]
    members = pd.concat(
        [
            combined[~is_new][_keys(combined[~is_new]).isin(_keys(member_keys))],
            store.records_for(extra),
        ],
        ignore_index=True,
        sort=False,
    )
    affected = stack([members, new])

    with_keys = attach_keys(scored, combined)
    stored_pairs = store.pairs_among(member_keys)
    pool = pd.concat([stored_pairs, with_keys], ignore_index=True, sort=False)
    left = rows_for_keys(pool, affected, "_l")
    right = rows_for_keys(pool, affected, "_r")
    inside = ~(np.isnan(left) | np.isnan(right))
    cluster_input = pd.DataFrame(
        {
            schema.ROW_L: left[inside].astype(np.int64),
            schema.ROW_R: right[inside].astype(np.int64),
            schema.MATCH_WEIGHT: pool[schema.MATCH_WEIGHT].to_numpy()[inside],
            schema.MATCH_PROBABILITY: pool[schema.MATCH_PROBABILITY].to_numpy()[inside],
        }
    )
    labels = cluster_records(affected, cluster_input, config)
    current = pd.DataFrame(
        {
            schema.SOURCE: affected[schema.SOURCE].to_numpy(),
            schema.RECORD_ID: affected[schema.RECORD_ID].to_numpy(),
            schema.CLUSTER_ID: labels.to_numpy(),
        }
    )
    run_id = store.next_run_id()
    is_update = np.zeros(len(affected), dtype=bool)
    is_update[len(members) :] = changed
    stable = assign_stable_ids(
        current,
        prev_links,
        store.identities(),
        run_id,
        updated=is_update,
        key=store.secret("identity_key"),
    )
    links = current.drop(columns=schema.CLUSTER_ID).assign(
        **{schema.IDENTITY_ID: stable.identity_ids}
    )
    batch_cfg = store.last_config("batch") or {}
    sources = list(dict.fromkeys([*batch_cfg.get("sources", {}), *config.sources]))
    golden = merge_records(
        affected, pd.Series(stable.identity_ids), config.golden_settings(sources)
    )
    seconds["cluster"] = time.perf_counter() - t

    t = time.perf_counter()
    say(STAGES[4])
    keep = with_keys[schema.MATCH_PROBABILITY] >= config.output.pairs_min_probability
    summary = {
        # new_records: every record the batch read (a stable key, not "not stored before");
        # inserted_records are the ones not stored before, updated_records the others
        "new_records": int(len(new)),
        "inserted_records": int(len(new) - updated.sum()),
        "updated_records": int(updated.sum()),
        "unchanged_records": unchanged,
        "stored_candidates": int(len(stored)),
        "candidate_pairs": int(len(pairs)),
        "matches": int(strong.sum()),
        "touched_identities": len(touched),
        "affected_records": int(len(affected)),
        "events": {str(k): int(v) for k, v in stable.events["event"].value_counts().items()},
        "bad_rows": len(rejected),
        "bad_rows_per_source": rejected.counts(),
    }
    run_id = apply_changes(
        store,
        StoreChanges(
            kind="ingest",
            config=config_doc(config),
            summary=summary,
            records=new,
            key_hashes=hashes,
            links=links,
            identities=stable.identities,
            golden=golden,
            golden_drop=touched,
            pairs=with_keys[keep],
            events=stable.events,
        ),
    )
    seconds["write"] = time.perf_counter() - t
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    logger.info(
        "ingest run %d: %d records read (%d inserted, %d updates), %d matches, "
        "%d identities touched",
        run_id,
        summary["new_records"],
        summary["inserted_records"],
        summary["updated_records"],
        summary["matches"],
        summary["touched_identities"],
    )
    return IngestResult(identities=links, events=stable.events, run_id=run_id, summary=summary)
