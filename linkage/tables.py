"""Keyed pair tables: between row pairs (``rid_l``, ``rid_r``) and (source, record_id) keys.

Stages pass pairs as row numbers into one records table; labels, the identity store and
output files name records by (source, record_id). These two functions convert between the
two, so no module builds the lookup by hand. Imports only the schema.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from linkage import schema


def attach_keys(pairs: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Add ``source_l``, ``record_id_l``, ``source_r``, ``record_id_r`` in front of a pair table.

    ``pairs`` holds ``rid_l`` and ``rid_r``, row numbers into ``records`` (``rid`` order).
    """
    left = pairs[schema.ROW_L].to_numpy()
    right = pairs[schema.ROW_R].to_numpy()
    src = records[schema.SOURCE].to_numpy()
    rid = records[schema.RECORD_ID].to_numpy()
    keys = pd.DataFrame(
        {
            schema.SOURCE_L: src[left],
            schema.RECORD_ID_L: rid[left],
            schema.SOURCE_R: src[right],
            schema.RECORD_ID_R: rid[right],
        },
        index=pairs.index,
    )
    return pd.concat([keys, pairs], axis=1)


def record_keys_index(
    frame: pd.DataFrame, source: str = schema.SOURCE, record_id: str = schema.RECORD_ID
) -> pd.MultiIndex:
    """The (source, record_id) of each row as a MultiIndex of strings."""
    return pd.MultiIndex.from_arrays([frame[source].astype(str), frame[record_id].astype(str)])


def rows_for_keys(keyed: pd.DataFrame, records: pd.DataFrame, side: str = "") -> np.ndarray:
    """Row numbers (``rid``, as float with NaN where absent) of the records that ``keyed``
    names by ``source<side>`` and ``record_id<side>`` (side ``""``, ``"_l"`` or ``"_r"``)."""
    index = pd.Series(records[schema.ROW].to_numpy(), index=record_keys_index(records))
    names = record_keys_index(keyed, schema.SOURCE + side, schema.RECORD_ID + side)
    return index.reindex(names).to_numpy(dtype=float)
