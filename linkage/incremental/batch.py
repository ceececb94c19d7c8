"""Write a batch run into an identity store, keeping the store's identity ids."""

from __future__ import annotations

import logging
import time

import pandas as pd

from linkage import schema
from linkage.blocking import key_hashes
from linkage.config import RunConfig
from linkage.identity import assign_stable_ids
from linkage.merge import merge_records
from linkage.pipeline import LinkResult
from linkage.store import Store, StoreChanges
from linkage.tables import attach_keys

logger = logging.getLogger(__name__)


def config_doc(config: RunConfig) -> dict:
    """The config as stored in the store's ``runs`` table."""
    return config.model_dump(mode="json")


def apply_changes(store: Store, changes: StoreChanges) -> int:
    """Write a run; a failed write is rolled back by the store and logged as a failed run."""
    try:
        return store.apply(changes)
    except Exception as exc:
        store.record_failure(changes.kind, changes.config, f"{type(exc).__name__}: {exc}")
        raise


def write_batch(store: Store, result: LinkResult, config: RunConfig) -> LinkResult:
    """Write a batch result into ``store`` keeping stored identity IDs; return it with those IDs."""
    t = time.perf_counter()
    records = result.records
    run_id = store.next_run_id()
    # made with the first batch, so that read-only readers (export, serve) find it
    store.secret("pseudonym_key")
    current = result.identities.rename(columns={schema.IDENTITY_ID: schema.CLUSTER_ID})
    stable = assign_stable_ids(
        current, store.links(), store.identities(), run_id, key=store.secret("identity_key")
    )
    ids = pd.Series(stable.identity_ids)
    identities = pd.DataFrame(
        {
            schema.SOURCE: records[schema.SOURCE].to_numpy(),
            schema.RECORD_ID: records[schema.RECORD_ID].to_numpy(),
            schema.IDENTITY_ID: stable.identity_ids,
        }
    )
    golden = merge_records(records, ids, config.golden_settings())
    floor = config.output.pairs_min_probability
    pairs = result.pairs[result.pairs[schema.MATCH_PROBABILITY] >= floor]
    summary = dict(result.summary)
    summary["events"] = {str(k): int(v) for k, v in stable.events["event"].value_counts().items()}
    apply_changes(
        store,
        StoreChanges(
            kind="batch",
            config=config_doc(config),
            summary=summary,
            replace_all=True,
            records=records,
            key_hashes=key_hashes(records, config.blocking),
            links=identities,
            identities=stable.identities,
            golden=golden,
            pairs=attach_keys(pairs, records) if len(result.pairs) else None,
            model=result.model.to_dict() if len(result.pairs) else None,
            events=stable.events,
        ),
    )
    store.build_indexes()
    logger.info("wrote batch to store %s in %.1fs", store.path, time.perf_counter() - t)
    return LinkResult(
        records=records,
        pairs=result.pairs,
        identities=identities,
        golden=golden,
        model=result.model,
        comparisons=result.comparisons,
        summary=summary,
    )
