"""Store-backed linking: write a batch into a store, ingest new records, search one record.

Composes the batch pipeline's steps with the identity store and stable ids:
``batch`` (write_batch), ``ingest`` (ingest) and ``search`` (search). Must not import the
Linker or CLI; the store never imports this package.
"""

from __future__ import annotations

from linkage.blocking import key_hashes, record_key_hashes
from linkage.incremental.batch import write_batch
from linkage.incremental.ingest import IngestResult, ingest
from linkage.incremental.search import (
    QUERY_SOURCE,
    SINGLE_FIELD_LIMIT,
    SearchReport,
    hold_search_tables,
    prepare_blind_searches,
    search,
    search_report,
)

__all__ = [
    "QUERY_SOURCE",
    "SINGLE_FIELD_LIMIT",
    "IngestResult",
    "SearchReport",
    "hold_search_tables",
    "prepare_blind_searches",
    "ingest",
    "key_hashes",
    "record_key_hashes",
    "search",
    "search_report",
    "write_batch",
]
