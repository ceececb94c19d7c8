"""Search: rank the stored identities for one record, with explanations.

Everything (comparisons, blocking rules, standardize options, term frequencies) comes from
the stored model's settings, so a query is standardized and keyed as the batch was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import record_key_hashes
from linkage.incremental._common import StoredRun, stack, store_tf, stored_run
from linkage.pipeline import compare_pairs, score_pairs
from linkage.standardize.combine import standardize_record
from linkage.store import Store

# source and record_id of the query record inside the compared table
QUERY_SOURCE = "__query__"


@dataclass
class _Setup:
    run: StoredRun
    columns: list[str]  # stored record columns the comparisons and tf read


def _setup(store: Store) -> _Setup:
    run = stored_run(store)
    columns = [schema.SOURCE, schema.RECORD_ID, *run.term_frequency.values()]
    for c in run.comparisons:
        columns += list(c.columns)
    return _Setup(run=run, columns=list(dict.fromkeys(columns)))


def search(store: Store, record: dict[str, Any], top: int = 5) -> list[dict]:
    """Rank stored identities for one record: probability, best record, golden record, explanation.

    ``record`` maps canonical fields (name, id_number, birth_date, ...) to raw values; other
    keys are ignored. Returns at most ``top`` dicts, best first. Raises ``InputError`` when
    the store holds no model.
    """
    setup: _Setup = store.memo("search", lambda: _setup(store))
    run = setup.run
    raw = {
        k: (None if v is None else str(v)) for k, v in record.items() if k in schema.MAPPABLE_FIELDS
    }
    raw[schema.SOURCE] = QUERY_SOURCE
    raw[schema.RECORD_ID] = QUERY_SOURCE
    query = standardize_record(raw, run.standardize)
    limit = run.blocking.max_block_size
    found = store.rks_for_hashes(record_key_hashes(query.iloc[0].to_dict(), run.blocking))
    # a block the batch would skip (over max_block_size) is skipped here too
    sizes = found.groupby(schema.KEY_HASH)[schema.RECORD_KEY].transform("size")
    rks = np.unique(found.loc[sizes <= limit, schema.RECORD_KEY].to_numpy(np.int64))
    if len(rks) == 0:
        return []
    cands = store.candidates_by_rk(rks, setup.columns)
    combined = stack([query, cands])
    pairs = pd.DataFrame(
        {
            schema.ROW_L: np.zeros(len(cands), dtype=np.int64),
            schema.ROW_R: np.arange(1, len(combined), dtype=np.int64),
        }
    )
    tf_rows = {
        name: store_tf(store, combined, query.iloc[0:0], column)
        for name, column in run.term_frequency.items()
    }
    vectors, tf = compare_pairs(combined, pairs, run.comparisons, tf_rows)
    scored = score_pairs(vectors, run.model, run.comparisons, tf)
    right = combined.iloc[scored[schema.ROW_R].to_numpy()]
    scored[schema.IDENTITY_ID] = cands[schema.IDENTITY_ID].to_numpy()
    scored[schema.SOURCE] = right[schema.SOURCE].to_numpy()
    scored[schema.RECORD_ID] = right[schema.RECORD_ID].to_numpy()
    best = (
        scored.sort_values(
            [schema.MATCH_WEIGHT, schema.SOURCE, schema.RECORD_ID], ascending=[False, True, True]
        )
        .drop_duplicates(schema.IDENTITY_ID)
        .head(top)
    )
    n_records = scored.groupby(schema.IDENTITY_ID).size()
    golden = store.golden_for(best[schema.IDENTITY_ID].tolist())
    golden = golden.set_index(schema.IDENTITY_ID) if len(golden) else golden
    out = []
    for _, row in best.iterrows():  # at most ``top`` rows
        ident_id = row[schema.IDENTITY_ID]
        explanation = run.model.explain(row)
        g = golden.loc[ident_id] if len(golden) and ident_id in golden.index else None
        out.append(
            {
                "identity_id": ident_id,
                "match_probability": float(row[schema.MATCH_PROBABILITY]),
                "match_weight": float(row[schema.MATCH_WEIGHT]),
                "best_record": {"source": row[schema.SOURCE], "record_id": row[schema.RECORD_ID]},
                "matched_records": int(n_records.get(ident_id, 0)),
                "golden": {}
                if g is None
                else {
                    k: (None if pd.isna(v) else v)
                    for k, v in g.items()
                    if k in schema.CANONICAL_FIELDS or k == "records"
                },
                "explanation": [
                    {
                        "comparison": e.comparison,
                        "level": e.level_name,
                        "weight": round(float(e.weight), 3),
                    }
                    for e in explanation.itertuples()
                ],
            }
        )
    return out
