"""Identity store: an embedded DuckDB file holding records, links, identities, history and model.

Persists and reads back only: it never blocks, compares or scores (linkage.incremental does).
Imports only schema and errors (tests/test_layers.py checks it); never a stage, the Linker or CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from linkage import schema
from linkage.errors import InputError, LinkageError, StoreError
from linkage.schema import (
    EVENT_COLUMNS,
    IDENTITY_COLUMNS,
    KEY_HASH,
    RECORD_KEY,
    RUN_ID,
)
from linkage.tables import text_columns

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# Up to this many keys are looked up by a parameterized IN list (an index scan), not a join.
_POINT_LOOKUPS = 200
# Test hook: seconds to sleep between table writes, so a test can kill a run mid-write.
PAUSE_ENV = "LINKAGE_STORE_PAUSE"

_DDL = (
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    "CREATE TABLE IF NOT EXISTS runs (run_id INTEGER, kind VARCHAR, started_at TIMESTAMP, "
    "finished_at TIMESTAMP, status VARCHAR, config VARCHAR, summary VARCHAR)",
    "CREATE TABLE IF NOT EXISTS links (source VARCHAR, record_id VARCHAR, "
    "identity_id VARCHAR, run_id INTEGER, rk BIGINT)",
    "CREATE TABLE IF NOT EXISTS identities (identity_id VARCHAR, status VARCHAR, "
    "merged_into VARCHAR, created_run INTEGER, updated_run INTEGER)",
    "CREATE TABLE IF NOT EXISTS pairs (source_l VARCHAR, record_id_l VARCHAR, "
    "source_r VARCHAR, record_id_r VARCHAR, match_weight DOUBLE, match_probability DOUBLE, "
    "run_id INTEGER)",
    "CREATE TABLE IF NOT EXISTS model (run_id INTEGER, model VARCHAR)",
    "CREATE TABLE IF NOT EXISTS events (run_id INTEGER, event VARCHAR, identity_id VARCHAR, "
    "other_identity VARCHAR, source VARCHAR, record_id VARCHAR, event_time TIMESTAMP, detail VARCHAR)",
    "CREATE TABLE IF NOT EXISTS key_index (h BIGINT, rk BIGINT)",
)
# Tables whose columns follow the data (standardized records, golden records).
_DYNAMIC = ("records", "golden")
TABLES = (
    "meta",
    "runs",
    "records",
    "key_index",
    "links",
    "identities",
    "golden",
    "pairs",
    "model",
    "events",
)


def _migrate_1_to_2(con: duckdb.DuckDBPyConnection) -> None:
    # Version 1 had no free-text detail on events.
    con.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS detail VARCHAR")


MIGRATIONS = {1: _migrate_1_to_2}


@dataclass
class StoreChanges:
    """Everything one run writes; :meth:`Store.apply` writes it in one transaction."""

    kind: str  # batch | ingest
    config: dict
    summary: dict = field(default_factory=dict)
    # batch: replace all records; ingest: upsert by (source, record_id)
    replace_all: bool = False
    records: pd.DataFrame | None = None
    # (rid, h) blocking-key hashes of ``records``; rid is the row position in ``records``
    key_hashes: pd.DataFrame | None = None
    links: pd.DataFrame | None = None
    identities: pd.DataFrame | None = None
    golden: pd.DataFrame | None = None
    # golden rows of these identities are deleted before ``golden`` is inserted
    golden_drop: list[str] = field(default_factory=list)
    pairs: pd.DataFrame | None = None
    model: dict | None = None
    events: pd.DataFrame | None = None


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """Arrow table with stable types: object columns become bool when all bools, else text."""
    arrays, names = [], []
    for col in frame.columns:
        s = frame[col]
        if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
            kind = pd.api.types.infer_dtype(s, skipna=True)  # C loop, no per-value Python
            if kind == "boolean":
                arr = pa.array(s.astype("boolean"), type=pa.bool_(), from_pandas=True)
            elif kind in ("string", "empty"):
                arr = pa.array(s.to_numpy(), type=pa.string(), from_pandas=True)
            else:
                text = s.where(s.isna(), s.astype(str))
                arr = pa.array(text.to_numpy(), type=pa.string(), from_pandas=True)
        elif str(s.dtype) == "boolean" or s.dtype == bool:
            arr = pa.array(s.astype("boolean"), type=pa.bool_(), from_pandas=True)
        elif isinstance(s.dtype, pd.CategoricalDtype):
            arr = pa.array(s.astype(object).where(s.notna(), None).to_numpy(), type=pa.string())
        else:
            arr = pa.array(s.to_numpy(), from_pandas=True)
        arrays.append(arr)
        names.append(str(col))
    return pa.Table.from_arrays(arrays, names=names) if names else pa.table({})


# DuckDB types a point read builds from Python rows, and the dtype Arrow's conversion gives
# them without nulls (with nulls: float64 for integers, object for booleans, as Arrow does).
_POINT_DTYPES = {"VARCHAR": object, "BIGINT": np.int64, "INTEGER": np.int32, "BOOLEAN": bool}


def _typed_column(values: np.ndarray, kind: str) -> np.ndarray:
    """One column of fetched values (object array, None for null) typed as ``_rows_frame``
    types it: text stays object, integers int64/int32 (float64 with NaN when any is null),
    booleans bool (object when any is null)."""
    dtype = _POINT_DTYPES[kind]
    if dtype is object:
        return values
    missing = np.array([v is None for v in values], dtype=bool)
    if not missing.any():
        return values.astype(dtype)
    if dtype is not bool:
        return np.where(missing, np.nan, values).astype(np.float64)
    return values


def _rows_frame(names: list[str], types: list[str], rows: list[tuple]) -> pd.DataFrame:
    """A frame of a few fetched rows, typed as ``to_arrow_table().to_pandas()`` + text_columns.

    A point read of a dozen rows spends ~6 ms in the Arrow -> pandas conversion and
    ``text_columns``; one object block from the tuples takes ~0.1 ms (measured, DuckDB 2.0).
    """
    block = np.empty((len(rows), len(names)), dtype=object)
    if rows:
        block[:] = rows
    # an explicit dtype: pandas 3 would infer its str dtype for object arrays of text
    frame = pd.DataFrame(block, columns=names, dtype=object, copy=False)
    for i, (name, kind) in enumerate(zip(names, types, strict=True)):
        if _POINT_DTYPES[kind] is not object:
            frame[name] = _typed_column(block[:, i], kind)
    return frame


def _rows_columns(names: list[str], types: list[str], rows: list[tuple]) -> dict[str, np.ndarray]:
    """``_rows_frame``'s columns as numpy arrays (``frame[c].to_numpy()``), without the frame."""
    block = np.empty((len(rows), len(names)), dtype=object)
    if rows:
        block[:] = rows
    return {
        n: _typed_column(block[:, i], k) for i, (n, k) in enumerate(zip(names, types, strict=True))
    }


def _object_array(values: list) -> np.ndarray:
    """An object array of ``values`` (one entry each, even for tuples or lists)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class _HeldTable:
    """A table's rows in memory (Arrow), sorted by one column, for point reads by it.

    Written here rather than a DuckDB in-memory copy: a DuckDB point read of a dozen rows
    decompresses a vector of every column it reads (~4 ms for 34 columns, measured); an Arrow
    ``take`` of a dozen rows costs microseconds a column, and Arrow holds text compactly
    (about 1 GB for a million records' comparison columns would be several as Python
    strings).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, sql: str, key: str):
        relation = con.sql(sql)
        self.types = [str(t) for t in relation.types]
        # one chunk per column: a take over a chunked column costs per chunk (a 15-chunk
        # key index: ~0.3 ms against 0.01 ms a point read, measured with pyarrow 26)
        table = relation.to_arrow_table().combine_chunks()
        self.names = list(table.column_names)
        self.table = table
        self._arrays: dict[str, tuple[pa.Array, str]] = {}
        keys = table.column(key)
        if pa.types.is_integer(keys.type):
            self.keys = keys.to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            texts = keys.to_pylist()
            # fixed width for searchsorted, as UTF-8 bytes: a quarter of numpy's 4 bytes a
            # character (identity ids of a million identities and their links: ~0.2 GB less
            # per worker), and UTF-8 bytes sort as the characters do
            if any("\x00" in t for t in texts):  # numpy's bytes drop trailing NULs
                self.keys = np.asarray(texts, dtype=str)
            else:
                self.keys = np.array([t.encode() for t in texts], dtype=bytes)
        if len(self.keys) > 1 and not (self.keys[1:] >= self.keys[:-1]).all():
            raise StoreError(f"held table is not sorted by {key}: {sql}")

    def _bounds(self, values: list) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last row position of each value's key run (equal: absent)."""
        kind = self.keys.dtype.kind
        if kind == "i":
            wanted = np.asarray(values, dtype=self.keys.dtype)
        elif kind == "S":
            wanted = np.array([str(v).encode() for v in values], dtype=bytes)
        else:
            wanted = np.asarray(values, dtype=str)
        lo = np.searchsorted(self.keys, wanted, side="left")
        return lo, np.searchsorted(self.keys, wanted, side="right")

    def unique_positions(self, values: list) -> np.ndarray:
        """Row position of each value's row (-1 where none), for a unique key column."""
        if not len(values):
            return np.array([], np.int64)
        lo, hi = self._bounds(values)
        return np.where(hi > lo, lo, -1).astype(np.int64, copy=False)

    def positions(self, values: list) -> np.ndarray:
        """Row positions of every row whose key is one of ``values`` (in ``values`` order)."""
        if not len(values):
            return np.array([], np.int64)
        lo, hi = self._bounds(values)
        counts = hi - lo
        if (counts == 1).all():  # unique keys (records by row key, golden by identity)
            return lo.astype(np.int64, copy=False)
        # lo[i], lo[i] + 1, ..., hi[i] - 1 for each value in turn, without a loop per value
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        return (starts + np.arange(counts.sum())).astype(np.int64, copy=False)

    def tuples(self, positions: np.ndarray, columns: list[str]) -> list[tuple]:
        """The rows at ``positions`` as tuples of ``columns`` (None for null)."""
        taken = self.table.select(columns).take(pa.array(positions, type=pa.int64()))
        return list(zip(*(taken.column(n).to_pylist() for n in columns), strict=True))

    def _array(self, name: str) -> tuple[pa.Array, str]:
        """The column's one Arrow array (the table's chunks were combined) and its DuckDB
        type, kept: ``Table.select`` builds a table per call (~30 us, measured)."""
        found = self._arrays.get(name)
        if found is None:
            column = self.table.column(name)
            array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            found = self._arrays[name] = (array, self.types[self.names.index(name)])
        return found

    def columns(self, positions: np.ndarray, columns: list[str]) -> dict[str, np.ndarray]:
        """The rows at ``positions`` as one numpy array per column, typed as :meth:`rows`
        types the frame's columns (no frame: a lookup's few rows)."""
        index = pa.array(positions, type=pa.int64())
        out = {}
        for n in columns:
            array, kind = self._array(n)
            taken = array.take(index)
            dtype = _POINT_DTYPES[kind]
            if dtype is not object and taken.null_count == 0:
                # numbers without nulls: Arrow's buffer, as _typed_column would type them
                out[n] = taken.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            else:
                out[n] = _typed_column(_object_array(taken.to_pylist()), kind)
        return out

    def rows(
        self, positions: np.ndarray, columns: list[str] | None = None, order=None
    ) -> pd.DataFrame:
        """The rows at ``positions`` as a frame typed as a DuckDB point read types them
        (``order``: a sort key of the row tuples)."""
        names = self.names if columns is None else columns
        types = [self.types[self.names.index(n)] for n in names]
        rows = self.tuples(positions, names)
        if order is not None:
            rows.sort(key=order)
        return _rows_frame(names, types, rows)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# ---------------------------------------------------------------------- file checks

# A DuckDB database file carries "DUCK" at byte 8, after an 8-byte checksum; three 4 KiB
# headers (main + two database headers) precede its blocks (DuckDB storage format, v1.0+).
_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8
_HEADER_BYTES = 3 * 4096


def _sniff(head: bytes) -> str:
    """A few words on what a non-DuckDB file looks like, for the error message."""
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (an .xlsx workbook?)"
    if head.startswith(b"SQLite format 3"):
        return "an SQLite database"
    if any(c in head for c in (b",", b"\t", b"\n")):
        return "a text file (CSV?)"
    return "not a DuckDB database"


def check_file(path: str | os.PathLike) -> None:
    """Refuse a path that exists but is not a whole DuckDB database file.

    A missing path is fine (a new store is created there). Raises StoreError naming the file
    for a folder, an empty file, a file of another kind (DuckDB would otherwise open a CSV or
    Parquet file as an in-memory database and every write would be lost). A file cut
    short is found by :func:`truncation` once it is open.
    """
    path = Path(path)
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError("identity store path is a folder, expected a file", path=str(path))
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise StoreError(
            f"cannot read the identity store: {exc.strerror}", path=str(path)
        ) from None
    if not head:
        raise StoreError(
            "empty file, not an identity store (give a new path to create one)", path=str(path)
        )
    if head[_MAGIC_OFFSET : _MAGIC_OFFSET + len(_MAGIC)] != _MAGIC:
        raise StoreError(
            f"not an identity store: {_sniff(head)}; give a store file written by linkage "
            "(or, to create one, a path that does not exist yet)",
            path=str(path),
        )


def truncation(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    """Return a problem when the file is shorter than its header's block count says."""
    rows = con.execute("PRAGMA database_size").fetchall()
    if not rows:
        return None
    block_size, total_blocks = int(rows[0][2]), int(rows[0][3])
    expected = _HEADER_BYTES + block_size * total_blocks
    size = path.stat().st_size
    if size < expected and _highest_block_in_use(con) >= (size - _HEADER_BYTES) // block_size:
        return (
            f"file is truncated: {size:,} bytes, its header declares {total_blocks} blocks of "
            f"{block_size:,} bytes ({expected:,} bytes); restore it from a backup"
        )
    return None


def _highest_block_in_use(con: duckdb.DuckDBPyConnection) -> int:
    """The highest block id that metadata or a table's column segments use.

    At checkpoint DuckDB cuts free blocks off the end of the file, but its header keeps
    counting them (total_blocks, with them on the free list): a file shorter than the header
    says is damaged only when a block still in use lies beyond its end. Unreadable metadata
    counts as beyond the end.
    """
    try:
        highest = max(
            (int(r[0]) for r in con.execute("PRAGMA metadata_info").fetchall()), default=-1
        )
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = "
            "current_database()"
        ).fetchall()
        for schema_name, table in tables:
            qualified = f'"{schema_name}"."{table}"'.replace("'", "''")
            found = con.execute(
                f"SELECT max(block_id) FROM pragma_storage_info('{qualified}') WHERE block_id >= 0"
            ).fetchall()[0][0]
            if found is not None:
                highest = max(highest, int(found))
    except duckdb.Error:
        return 2**62
    return highest


def precheck_damage(path: Path) -> None:
    """Raise StoreError when an existing store is truncated or cannot be opened at all.

    Cheap (the header only), for commands to run before their work. A store locked by a
    writing process is skipped: the command's own open checks it again.
    """
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            return
        raise StoreError(
            f"identity store cannot be opened ({exc}); run 'linkage store check {path}'",
            path=str(path),
        ) from None
    try:
        cut = truncation(con, path)
    finally:
        con.close()
    if cut:
        raise StoreError(f"identity store is damaged: {cut}", path=str(path))


# (index, table, column) of the point lookups search and the lookup service make.
_INDEXES = (
    ("key_index_h", "key_index", KEY_HASH),
    ("records_rk", "records", RECORD_KEY),
    ("links_rk", "links", RECORD_KEY),
    ("links_identity", "links", schema.IDENTITY_ID),
    ("golden_identity", "golden", schema.IDENTITY_ID),
)


# DuckDB lets one process write a file and nobody else open it meanwhile
_IN_USE = (
    "the identity store is in use by another process (for example `linkage serve`, which "
    "holds it open read-only): search, export and `store check` work beside it; stop that "
    "process to run or ingest"
)


class Store:
    """An identity store file; open with :meth:`open`, use as a context manager."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path):
        self.con = con
        self.path = path
        self._cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ open / close

    @staticmethod
    def check_free(path: str | os.PathLike) -> None:
        """Raise StoreError when another process holds the store at ``path`` open, so that a
        run refuses before reading and linking its inputs rather than after (minutes at
        scale). Opens and closes the file for writing; a missing file passes (a run creates
        it), and any other problem is left to :meth:`open`, which reports it in full."""
        path = Path(path)
        if not path.is_file():
            return
        try:
            con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise StoreError(_IN_USE, path=str(path)) from None
            return
        con.close()

    @classmethod
    def open(cls, path: str | os.PathLike, create: bool = True, read_only: bool = False) -> Store:
        """Open (or with ``create`` make) the store at ``path``; migrate or refuse other versions.

        ``read_only`` opens an existing store without writing (several processes may read
        one file at once, none while another process writes it); it raises InputError for a
        store that would need a migration.
        """
        path = Path(path)
        if not path.exists() and (not create or read_only):
            raise InputError("identity store not found", path=str(path))
        check_file(path)  # a CSV or Parquet file would open as an in-memory database
        if read_only:
            return cls._open_read_only(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        # the store holds every record and the master keys: owner-only from its first byte.
        # DuckDB creates the file itself (an empty file is refused), so the umask decides
        old_umask = os.umask(0o077) if new else None
        try:
            con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise StoreError(_IN_USE, path=str(path)) from None
            raise StoreError(f"cannot open identity store: {exc}", path=str(path)) from None
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if new:
            os.chmod(path, 0o600)
        store = cls(con, path)
        try:
            cut = truncation(con, path)  # damage is found before anything is written
            if cut:
                raise StoreError(f"identity store is damaged: {cut}", path=str(path))
            store._init_schema()
        except duckdb.Error as exc:
            con.close()
            raise store._damaged(exc) from None
        except BaseException:
            con.close()
            raise
        return store

    def _damaged(self, exc: duckdb.Error) -> StoreError:
        return StoreError(
            f"identity store cannot be read or written ({exc}); "
            f"run 'linkage store check {self.path}'",
            path=str(self.path),
        )

    @classmethod
    def _open_read_only(cls, path: Path) -> Store:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise StoreError(
                    "the identity store is being written by another process (a run or ingest): "
                    "try again when it has finished",
                    path=str(path),
                ) from None
            raise StoreError(f"cannot open identity store: {exc}", path=str(path)) from None
        store = cls(con, path)
        try:
            cut = truncation(con, path)
            if cut:
                raise StoreError(f"identity store is damaged: {cut}", path=str(path))
            found = store.schema_version() if "meta" in store._tables() else None
        except BaseException:
            con.close()
            raise
        if found != SCHEMA_VERSION:
            con.close()
            raise InputError(
                f"identity store has schema_version {found}, expected {SCHEMA_VERSION}: "
                "open it once for writing (linkage ingest) to migrate it",
                path=str(path),
            )
        return store

    def _init_schema(self) -> None:
        tables = {
            r[0] for r in self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        if "meta" not in tables:
            if tables:
                raise StoreError(
                    "not an identity store (a DuckDB file without a meta table)",
                    path=str(self.path),
                )
            from linkage._version import __version__

            with self.transaction():
                for ddl in _DDL:
                    self.con.execute(ddl)
                now = datetime.now(UTC).isoformat()
                self.con.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ["schema_version", str(SCHEMA_VERSION)],
                        ["created_at", now],
                        ["package_version", str(__version__)],
                    ],
                )
            return
        found = self.schema_version()
        if found == SCHEMA_VERSION:
            return
        if (
            found is not None
            and found < SCHEMA_VERSION
            and all(v in MIGRATIONS for v in range(found, SCHEMA_VERSION))
        ):
            with self.transaction():
                for v in range(found, SCHEMA_VERSION):
                    MIGRATIONS[v](self.con)
                    logger.info("migrated store %s from schema %d to %d", self.path, v, v + 1)
                self.con.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
                )
            return
        raise StoreError(
            f"identity store has schema_version {found}; this version of linkage reads "
            f"schema_version {SCHEMA_VERSION} (and migrates {sorted(MIGRATIONS)}): "
            "open it with a matching release of linkage",
            path=str(self.path),
        )

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the store's meta table, created on first use.

        The store already holds every record, so the secret needs no stronger home than the
        store file itself; it names identities and keys department pseudonyms.
        """
        found = self.stored_secret(name)
        if found is not None:
            return found
        meta_key = f"secret:{name}"
        found = self.stored_secret(name)
        if found is not None:
            return found
        value = secrets.token_bytes(32)
        with self.transaction():
            self.con.execute("INSERT INTO meta VALUES (?, ?)", [meta_key, value.hex()])
        return value

    def stored_secret(self, name: str) -> bytes | None:
        """The secret :meth:`secret` created, or None; reads only (a read-only store works)."""
        rows = self.con.execute(
            "SELECT value FROM meta WHERE key = ?", [f"secret:{name}"]
        ).fetchall()
        return bytes.fromhex(rows[0][0]) if rows else None

    def schema_version(self) -> int | None:
        """Return the schema version recorded in the store file."""
        rows = self.con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        row = rows[0] if rows else None
        try:
            return int(row[0]) if row else None
        except ValueError:
            return None

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self.close()
        # I/O errors and failed block checksums mean a damaged (or unwritable) file: exit 2
        # naming it, not a traceback; other DuckDB errors stay internal errors
        if isinstance(exc, duckdb.IOException) or (
            isinstance(exc, duckdb.Error) and "Corrupt database file" in str(exc)
        ):
            raise self._damaged(exc) from exc

    def memo(self, key: str, build: Callable[[], Any], *, refresh: bool = False) -> Any:
        """Return ``build()``, computed once until the store's next write (which clears it).

        For readers that derive an expensive object from stored state, e.g. search's model.
        ``refresh``: build again even when one is kept (after :meth:`hold`, say).
        """
        if refresh or key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT; any exception rolls every write back."""
        self.con.execute("BEGIN TRANSACTION")
        self._cache.clear()
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            self._cache.clear()
            raise
        self.con.execute("COMMIT")
        self._cache.clear()

    # ------------------------------------------------------------------ writing

    def _tables(self) -> set[str]:
        # cached for the point lookups of search; every write path clears the cache
        if "tables" not in self._cache:
            rows = self.con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            self._cache["tables"] = {r[0] for r in rows}
        return self._cache["tables"]

    def _columns(self, table: str) -> dict[str, str]:
        key = "columns:" + table
        if key not in self._cache:
            self._cache[key] = self._read_columns(table)
        return self._cache[key]

    def _read_columns(self, table: str) -> dict[str, str]:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?", [table]
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def _insert(self, table: str, frame: pd.DataFrame) -> None:
        """Insert ``frame`` by column name; dynamic tables gain any new columns first."""
        if frame is None or frame.empty:
            if table in _DYNAMIC and table not in self._tables() and frame is not None:
                self._create_dynamic(table, frame)
            return
        data = _arrow(frame)
        if table in _DYNAMIC:
            if table not in self._tables():
                self._create_dynamic(table, frame)
            have = self._columns(table)
            for name, typ in zip(data.schema.names, data.schema.types, strict=True):
                if name not in have:
                    sql_type = (
                        "BOOLEAN"
                        if pa.types.is_boolean(typ)
                        else (
                            "DOUBLE"
                            if pa.types.is_floating(typ)
                            else "BIGINT"
                            if pa.types.is_integer(typ)
                            else "VARCHAR"
                        )
                    )
                    self.con.execute(
                        f"ALTER TABLE {_quote(table)} ADD COLUMN {_quote(name)} {sql_type}"
                    )
                    self._cache.clear()
        self.con.register("__frame", data)
        try:
            self.con.execute(f"INSERT INTO {_quote(table)} BY NAME SELECT * FROM __frame")
        finally:
            self.con.unregister("__frame")

    @staticmethod
    def _store_frame(table: str, frame: pd.DataFrame) -> pd.DataFrame:
        """The columns a dynamic table gets: store keys first, then the frame's, then run_id."""
        head = frame.head(0).drop(columns=[schema.ROW], errors="ignore").copy()
        if table == "records":
            head.insert(0, RECORD_KEY, np.array([], dtype=np.int64))
        head[RUN_ID] = np.array([], dtype=np.int64)
        return head

    def _create_dynamic(self, table: str, frame: pd.DataFrame) -> None:
        self.con.register("__frame", _arrow(frame.head(0)))
        try:
            self.con.execute(f"CREATE TABLE {_quote(table)} AS SELECT * FROM __frame LIMIT 0")
        finally:
            self.con.unregister("__frame")
            self._cache.clear()

    def _pause(self) -> None:
        seconds = os.environ.get(PAUSE_ENV)
        if seconds:
            time.sleep(float(seconds))

    def _delete_keys(self, table: str, keys: pd.DataFrame, suffix: str = "") -> None:
        """Delete rows of ``table`` whose (source, record_id) is in ``keys``."""
        if table not in self._tables() or keys.empty:
            return
        self.con.register("__keys", _arrow(keys[[schema.SOURCE, schema.RECORD_ID]]))
        try:
            s, r = _quote(schema.SOURCE + suffix), _quote(schema.RECORD_ID + suffix)
            self.con.execute(
                f"DELETE FROM {_quote(table)} WHERE ({s}, {r}) IN "
                "(SELECT (source, record_id) FROM __keys)"
            )
        finally:
            self.con.unregister("__keys")

    def apply(self, changes: StoreChanges) -> int:
        """Write one run's changes in a single transaction and return its run id."""
        started = datetime.now(UTC).replace(tzinfo=None)
        # DuckDB 2.0: a table created and filled with >1 row group in one transaction reads
        # back empty on this connection after COMMIT; so new tables are created (empty) first.
        for table, frame in (("records", changes.records), ("golden", changes.golden)):
            if frame is not None and table not in self._tables():
                with self.transaction():
                    self._create_dynamic(table, self._store_frame(table, frame))
        with self.transaction():
            run_id = int(
                self.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()[0][0]
            )
            self._write(changes, run_id)
            self.con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, 'done', ?, ?)",
                [
                    run_id,
                    changes.kind,
                    started,
                    datetime.now(UTC).replace(tzinfo=None),
                    json.dumps(changes.config, ensure_ascii=False, default=str),
                    json.dumps(changes.summary, ensure_ascii=False, default=str),
                ],
            )
        self._cache.clear()
        return run_id

    def next_run_id(self) -> int:
        """Return the id the next run will get."""
        return int(
            self.con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()[0][0]
        )

    def record_failure(self, kind: str, config: dict, error: str) -> None:
        """Log a failed run (after its transaction was rolled back)."""
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.transaction():
            run_id = self.next_run_id()
            self.con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, 'failed', ?, ?)",
                [
                    run_id,
                    kind,
                    now,
                    now,
                    json.dumps(config, default=str),
                    json.dumps({"error": error}),
                ],
            )

    def _write(self, c: StoreChanges, run_id: int) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        # Row keys of linked records, read before this run changes anything.
        link_rk = None
        if c.links is not None and "records" in self._tables() and not c.replace_all:
            link_rk = self._with_keys(
                c.links[[schema.SOURCE, schema.RECORD_ID]].astype(str).drop_duplicates(),
                "SELECT r.source, r.record_id, r.rk FROM records r JOIN __keys k "
                "ON r.source = k.source AND r.record_id = k.record_id",
            )
        new_rk = None
        if c.records is not None:
            keys = c.records[[schema.SOURCE, schema.RECORD_ID]]
            if c.replace_all:
                for table in ("records", "key_index", "links", "golden", "pairs"):
                    if table in self._tables():
                        self.con.execute(f"DELETE FROM {_quote(table)}")
            else:
                self._delete_key_index(keys)
                self._delete_keys("records", keys)
                self._delete_keys("pairs", keys, "_l")
                self._delete_keys("pairs", keys, "_r")
            first = 1
            if "records" in self._tables():
                first = int(
                    self.con.execute("SELECT coalesce(max(rk), 0) + 1 FROM records").fetchall()[0][
                        0
                    ]
                )
            recs = c.records.drop(columns=[schema.ROW], errors="ignore").copy()
            rk = np.arange(first, first + len(recs), dtype=np.int64)
            recs.insert(0, RECORD_KEY, rk)
            new_rk = pd.DataFrame(
                {
                    schema.SOURCE: keys[schema.SOURCE].astype(str).to_numpy(),
                    schema.RECORD_ID: keys[schema.RECORD_ID].astype(str).to_numpy(),
                    RECORD_KEY: rk,
                }
            )
            recs[RUN_ID] = run_id
            self._insert("records", recs)
            self._pause()
            if c.key_hashes is not None and len(c.key_hashes):
                # key_hashes[rid] is the row position of the record in c.records
                kh = c.key_hashes
                self._insert(
                    "key_index",
                    pd.DataFrame(
                        {
                            KEY_HASH: kh[KEY_HASH].to_numpy(np.int64),
                            RECORD_KEY: rk[kh[schema.ROW].to_numpy(np.int64)],
                        }
                    ),
                )
        if c.links is not None:
            self._delete_keys("links", c.links)
            links = c.links[[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]].copy()
            links[RUN_ID] = run_id
            # rk beside each link so search finds identities by index lookup; new rows win
            known = [f for f in (new_rk, link_rk) if f is not None and len(f)]
            if known:
                rk_table = pd.concat(known, ignore_index=True).drop_duplicates(
                    [schema.SOURCE, schema.RECORD_ID]
                )
                links = links.astype({schema.SOURCE: str, schema.RECORD_ID: str}).merge(
                    rk_table, on=[schema.SOURCE, schema.RECORD_ID], how="left"
                )
            self._insert("links", links)
            self._pause()
        if c.identities is not None and len(c.identities):
            self.con.register("__ids", _arrow(c.identities[[schema.IDENTITY_ID]]))
            self.con.execute(
                "DELETE FROM identities WHERE identity_id IN (SELECT identity_id FROM __ids)"
            )
            self.con.unregister("__ids")
            self._insert("identities", c.identities[list(IDENTITY_COLUMNS)])
        if c.golden is not None:
            drop = sorted(set(c.golden_drop) | set(c.golden[schema.IDENTITY_ID].astype(str)))
            if "golden" in self._tables() and drop:
                self.con.register("__ids", pa.table({"identity_id": pa.array(drop, pa.string())}))
                self.con.execute(
                    "DELETE FROM golden WHERE identity_id IN (SELECT identity_id FROM __ids)"
                )
                self.con.unregister("__ids")
            golden = c.golden.copy()
            golden[RUN_ID] = run_id
            self._insert("golden", golden)
            self._pause()
        if c.pairs is not None:
            pairs = c.pairs[
                [
                    "source_l",
                    "record_id_l",
                    "source_r",
                    "record_id_r",
                    schema.MATCH_WEIGHT,
                    schema.MATCH_PROBABILITY,
                ]
            ].copy()
            pairs[RUN_ID] = run_id
            self._insert("pairs", pairs)
        if c.model is not None:
            self.con.execute("DELETE FROM model")
            self.con.execute(
                "INSERT INTO model VALUES (?, ?)", [run_id, json.dumps(c.model, ensure_ascii=False)]
            )
        if c.events is not None and len(c.events):
            ev = c.events[list(EVENT_COLUMNS)].copy()
            ev.insert(0, RUN_ID, run_id)
            ev["event_time"] = now
            self._insert("events", ev)
        self._pause()

    def _delete_key_index(self, keys: pd.DataFrame) -> None:
        if "records" not in self._tables() or keys.empty:
            return
        self.con.register("__keys", _arrow(keys[[schema.SOURCE, schema.RECORD_ID]]))
        try:
            self.con.execute(
                "DELETE FROM key_index WHERE rk IN (SELECT r.rk FROM records r JOIN __keys k "
                "ON r.source = k.source AND r.record_id = k.record_id)"
            )
        finally:
            self.con.unregister("__keys")

    def missing_indexes(self) -> list[str]:
        """Names of the point-lookup indexes :meth:`build_indexes` makes that are absent."""
        have = {
            r[0] for r in self.con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()
        }
        return [name for name, table, _ in _INDEXES if table in self._tables() and name not in have]

    def build_indexes(self) -> None:
        """Create the ART indexes point lookups use (key hashes, record keys, links)."""
        for name, table, col in _INDEXES:
            if table in self._tables():
                self.con.execute(
                    f"CREATE INDEX IF NOT EXISTS {_quote(name)} ON {_quote(table)} ({_quote(col)})"
                )

    # ------------------------------------------------------------------ reading

    def table(self, name: str) -> pd.DataFrame:
        """Return a whole table as a DataFrame (empty when the table does not exist yet)."""
        if name not in TABLES:
            raise LinkageError(f"unknown store table '{name}'; tables are {', '.join(TABLES)}")
        if name not in self._tables():
            return pd.DataFrame()
        return self._df(f"SELECT * FROM {_quote(name)}")

    def counts(self) -> dict[str, int]:
        """Return the row count of every table."""
        have = self._tables()
        return {
            t: int(self.con.execute(f"SELECT count(*) FROM {_quote(t)}").fetchall()[0][0])
            if t in have
            else 0
            for t in TABLES
        }

    def model(self) -> dict | None:
        """Return the stored model's JSON document, or None."""
        rows = self.con.execute("SELECT model FROM model ORDER BY run_id DESC LIMIT 1").fetchall()
        row = rows[0] if rows else None
        return json.loads(row[0]) if row else None

    def last_config(self, kind: str | None = None) -> dict | None:
        """Return the config of the latest successful run (of ``kind`` when given)."""
        rows = self.con.execute(
            "SELECT kind, config FROM runs WHERE status = 'done' ORDER BY run_id DESC"
        ).fetchall()
        for k, text in rows:
            if kind is None or k == kind:
                return json.loads(text)
        return None

    def runs(self) -> pd.DataFrame:
        """Return the runs table."""
        return self.table("runs")

    def identities(self) -> pd.DataFrame:
        """Return every identity with its status."""
        return self.table("identities")

    def links(self) -> pd.DataFrame:
        """Return (source, record_id, identity_id) of every stored record."""
        frame = (
            self.con.sql(
                "SELECT source, record_id, identity_id FROM links ORDER BY source, record_id"
            )
            .to_arrow_table()
            .to_pandas()
        )
        return text_columns(frame)

    def events(self) -> pd.DataFrame:
        """Return the event log."""
        return self.table("events")

    def _df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return text_columns(self.con.sql(sql, params=params or None).to_arrow_table().to_pandas())

    def _with_keys(self, keys: pd.DataFrame, sql: str, params: list | None = None) -> pd.DataFrame:
        self.con.register("__keys", _arrow(keys.reset_index(drop=True)))
        try:
            return self._df(sql, params)
        finally:
            self.con.unregister("__keys")

    def records_for(self, keys: pd.DataFrame) -> pd.DataFrame:
        """Return the stored records (with rk) whose (source, record_id) is in ``keys``."""
        if "records" not in self._tables():
            return pd.DataFrame()
        return self._with_keys(
            keys[[schema.SOURCE, schema.RECORD_ID]].drop_duplicates(),
            "SELECT r.* FROM records r JOIN __keys k "
            "ON r.source = k.source AND r.record_id = k.record_id ORDER BY r.rk",
        )

    def _point_rows(self, table: str, column: str, values: list, cols: str = "*") -> pd.DataFrame:
        """Rows whose ``column`` is one of ``values``, by a parameterized IN list.

        Measured on a 1M-record store (DuckDB 2.0): an IN list of 150 row keys takes ~20 ms,
        a UNION ALL of single-key lookups ~220 ms, a join with a registered table ~90 ms.
        """
        marks = ", ".join("?" for _ in values)
        sql = f"SELECT {cols} FROM {_quote(table)} WHERE {_quote(column)} IN ({marks})"
        cursor = self.con.execute(sql, list(values))
        types = [str(d[1]) for d in cursor.description]
        if not set(types) <= set(_POINT_DTYPES):
            return self._df(sql, list(values))
        return _rows_frame([d[0] for d in cursor.description], types, cursor.fetchall())

    def keys_for_hashes(self, hashes: np.ndarray) -> pd.DataFrame:
        """Return (source, record_id) of stored records sharing any blocking-key hash."""
        if "records" not in self._tables():
            return pd.DataFrame(columns=[schema.SOURCE, schema.RECORD_ID])
        frame = pd.DataFrame({KEY_HASH: np.unique(np.asarray(hashes, dtype=np.int64))})
        return self._with_keys(
            frame,
            "SELECT DISTINCT r.source, r.record_id FROM key_index i "
            "JOIN __keys k ON i.h = k.h JOIN records r ON r.rk = i.rk",
        )

    def hold(self, record_columns: list[str], golden_columns: list[str]) -> bool:
        """Keep the tables of point reads in memory until the store's next write.

        ``rks_for_hashes``, ``candidates_by_rk`` (of ``record_columns``),
        ``links_of_identities`` and ``golden_for`` (of ``golden_columns``) then read memory
        and give the frames the DuckDB reads give. For a read-only long-lived reader (the
        lookup service): about 0.5 GB at a million records. Returns False (nothing held)
        when a table is missing or has a column type the point reads do not build.
        """
        tables = self._tables()
        if not {"records", "links", "golden", "key_index"} <= tables:
            return False
        have = self._columns("records")
        record_cols = [c for c in dict.fromkeys([RECORD_KEY, *record_columns]) if c in have]
        have_golden = self._columns("golden")
        golden_cols = [
            c for c in dict.fromkeys([schema.IDENTITY_ID, *golden_columns]) if c in have_golden
        ]
        t = time.perf_counter()
        records = _HeldTable(
            self.con,
            f"SELECT {', '.join('r.' + _quote(c) for c in record_cols)}, l.identity_id AS __owner "
            "FROM records r LEFT JOIN links l USING (rk) ORDER BY r.rk",
            RECORD_KEY,
        )
        held = {
            "records": records,
            "golden": _HeldTable(
                self.con,
                f"SELECT {', '.join(_quote(c) for c in golden_cols)} FROM golden "
                "ORDER BY identity_id",
                schema.IDENTITY_ID,
            ),
            "links": _HeldTable(
                self.con,
                "SELECT source, record_id, identity_id FROM links "
                "ORDER BY identity_id, source, record_id",
                schema.IDENTITY_ID,
            ),
            "key_index": _HeldTable(
                self.con, "SELECT h, rk FROM key_index ORDER BY h, rk", KEY_HASH
            ),
        }
        if any(not set(h.types) <= set(_POINT_DTYPES) for h in held.values()):
            return False
        self._cache["held"] = held
        self._cache["held_columns"] = (set(record_cols), set(golden_cols))
        self._drop_read_cache()
        logger.info(
            "holding %d records' point-read tables in memory (%.0f MB) in %.1fs",
            records.table.num_rows,
            sum(h.table.nbytes for h in held.values()) / 2**20,
            time.perf_counter() - t,
        )
        return True

    def _drop_read_cache(self) -> None:
        """Have DuckDB drop the blocks it keeps cached after the held tables' reads: a memory
        limit below its use evicts them (a few hundred MB per lookup worker at a million
        records, else held twice), then the default limit comes back (the store sets none)
        for later reads. A limit DuckDB refuses (pinned memory) leaves everything as it was."""
        try:
            self.con.execute("SET memory_limit = '1MB'")
        except duckdb.Error:
            return
        finally:
            self.con.execute("RESET memory_limit")

    def _held(self, table: str) -> _HeldTable | None:
        held = self._cache.get("held")
        return None if held is None else held[table]

    def rks_for_hashes(self, hashes: list[int]) -> pd.DataFrame:
        """Return (h, rk) of every stored record holding one of the blocking-key hashes."""
        if not hashes or "key_index" not in self._tables():
            return pd.DataFrame({KEY_HASH: [], RECORD_KEY: []})
        held = self._held("key_index")
        if held is not None:
            return held.rows(held.positions(sorted({int(h) for h in hashes})))
        return self._point_rows("key_index", KEY_HASH, [int(h) for h in hashes], "h, rk")

    def rks_where(self, conditions: list[tuple[str, object]], limit: int) -> np.ndarray:
        """Row keys of stored records where any ``column = value`` holds, at most ``limit``.

        A scan of the records table (values are parameters; columns the table lacks are
        skipped): single-record search uses it for a name or a birth date alone.
        """
        if "records" not in self._tables():
            return np.array([], np.int64)
        have = self._columns("records")
        conds = [(c, v) for c, v in conditions if c in have and v is not None]
        if not conds:
            return np.array([], np.int64)
        where = " OR ".join(f"{_quote(c)} = ?" for c, _ in conds)
        rows = self.con.execute(
            f"SELECT rk FROM records WHERE {where} ORDER BY rk LIMIT ?",
            [*(v for _, v in conds), int(limit)],
        ).fetchall()
        return np.array([r[0] for r in rows], np.int64)

    def links_for(self, keys: pd.DataFrame) -> pd.DataFrame:
        """Return the links of the records in ``keys``."""
        return self._with_keys(
            keys[[schema.SOURCE, schema.RECORD_ID]].drop_duplicates(),
            "SELECT l.source, l.record_id, l.identity_id FROM links l JOIN __keys k "
            "ON l.source = k.source AND l.record_id = k.record_id",
        )

    def candidates_by_rk(self, rks: np.ndarray, columns: list[str]) -> pd.DataFrame:
        """Return the given columns and identity_id of stored records by row key."""
        if "records" not in self._tables() or len(rks) == 0:
            return pd.DataFrame()
        have = self._columns("records")
        cols = ", ".join(_quote(c) for c in dict.fromkeys([RECORD_KEY, *columns]) if c in have)
        values = sorted({int(x) for x in rks})
        held = self._held("records")
        wanted = [c for c in dict.fromkeys([RECORD_KEY, *columns]) if c in have]
        if held is not None and set(wanted) <= self._cache["held_columns"][0]:
            positions = held.positions(values)
            frame = held.rows(positions, wanted)
            owners = held.table.column("__owner").take(pa.array(positions, pa.int64()))
            frame[schema.IDENTITY_ID] = pd.Series(owners.to_pylist(), dtype=object)
            return frame
        marks = ", ".join("?" for _ in values)
        frame = self._point_rows("records", RECORD_KEY, values, cols)
        frame = frame.sort_values(RECORD_KEY, ignore_index=True)
        # a record has one link: a dict rather than a frame merge (a few rows, per search)
        owner = dict(
            self.con.execute(
                f"SELECT rk, identity_id FROM links WHERE rk IN ({marks})", values
            ).fetchall()
        )
        ident = np.empty(len(frame), dtype=object)
        ident[:] = [owner.get(int(rk)) for rk in frame[RECORD_KEY].to_numpy()]
        frame[schema.IDENTITY_ID] = pd.Series(ident, dtype=object)
        return frame

    def owners_by_rk(self, rks: np.ndarray) -> dict[int, str]:
        """Row key -> identity id of stored records (records without a link left out): for
        filtering candidates by identity before reading their columns."""
        values = sorted({int(x) for x in rks})
        if not values or "links" not in self._tables():
            return {}
        held = self._held("records")
        if held is not None:
            positions = held.positions(values)
            keys = held.keys[positions].tolist()
            owners = held.table.column("__owner").take(pa.array(positions, pa.int64()))
            return {
                int(k): o for k, o in zip(keys, owners.to_pylist(), strict=True) if o is not None
            }
        marks = ", ".join("?" for _ in values)
        rows = self.con.execute(
            f"SELECT rk, identity_id FROM links WHERE rk IN ({marks})", values
        ).fetchall()
        return {int(rk): str(i) for rk, i in rows}

    def candidate_columns(self, rks: np.ndarray, columns: list[str]) -> dict[str, np.ndarray]:
        """:meth:`candidates_by_rk` as one numpy array per column (``rk``, the ``columns``
        the records table has, ``identity_id``), equal to the frame's ``to_numpy()`` columns,
        in row-key order; empty dict when nothing is found. For single-record search, where a
        frame of a few dozen rows costs more than the comparisons."""
        if "records" not in self._tables() or len(rks) == 0:
            return {}
        have = self._columns("records")
        wanted = [c for c in dict.fromkeys([RECORD_KEY, *columns]) if c in have]
        held = self._held("records")
        if held is not None and set(wanted) <= self._cache["held_columns"][0]:
            positions = held.positions(sorted({int(x) for x in rks}))
            out = held.columns(positions, wanted)
            owners = held.table.column("__owner").take(pa.array(positions, pa.int64()))
            out[schema.IDENTITY_ID] = _object_array(owners.to_pylist())
            return out
        frame = self.candidates_by_rk(rks, columns)
        return {c: frame[c].to_numpy() for c in frame.columns}

    def rk_hashes(self, hashes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rks_for_hashes` as two int64 arrays (key hash, row key), without a frame."""
        held = self._held("key_index")
        if held is not None and hashes:
            found = held.columns(
                held.positions(sorted({int(h) for h in hashes})), [KEY_HASH, RECORD_KEY]
            )
            return (
                found[KEY_HASH].astype(np.int64, copy=False),
                found[RECORD_KEY].astype(np.int64, copy=False),
            )
        frame = self.rks_for_hashes(hashes)
        return (
            frame[KEY_HASH].to_numpy(dtype=np.int64),
            frame[RECORD_KEY].to_numpy(dtype=np.int64),
        )

    def golden_rows(self, identity_ids: list[str], columns: list[str]) -> list[dict]:
        """:meth:`golden_for` with ``columns`` as one dict per found identity (records of
        ``to_dict("records")``), without a frame when the golden table is held in memory."""
        values = [str(v) for v in dict.fromkeys(identity_ids)]
        held = self._held("golden")
        if held is not None and values and "golden" in self._tables():
            have = self._columns("golden")
            names = [c for c in dict.fromkeys([schema.IDENTITY_ID, *columns]) if c in have]
            if set(names) <= self._cache["held_columns"][1]:
                found = held.columns(held.positions(values), names)
                return [
                    dict(zip(names, row, strict=True))
                    # tolist: Python scalars, as to_dict("records") gives them
                    for row in zip(*(found[n].tolist() for n in names), strict=True)
                ]
        return self.golden_for(values, columns).to_dict("records")

    def held_record_columns(self, columns: list[str]) -> dict[str, np.ndarray] | None:
        """Every held record's values of ``columns`` (those the records table has), in
        row-key order, typed as :meth:`candidate_columns` types them; None when the records
        are not held or a column was not held. For a reader that prepares every stored
        record once (search's stored comparison sides)."""
        held = self._held("records")
        have = [c for c in columns if c in self._columns("records")]
        if held is None or not set(have) <= self._cache["held_columns"][0]:
            return None
        # every row: the columns themselves, without a take's copy of them
        kinds = [held.types[held.names.index(n)] for n in have]
        return {
            n: _typed_column(_object_array(held.table.column(n).to_pylist()), k)
            for n, k in zip(have, kinds, strict=True)
        }

    def record_columns(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Every stored record's ``rk`` and values of ``columns`` (those the records table
        has), in row-key order, typed as :meth:`held_record_columns` types them, read from
        the file whether or not the records are held. For a reader that derives something
        from every record once (search's blind-only key entries)."""
        have = self._columns("records")
        wanted = [c for c in dict.fromkeys([RECORD_KEY, *columns]) if c in have]
        relation = self.con.sql(
            f"SELECT {', '.join(_quote(c) for c in wanted)} FROM records ORDER BY rk"
        )
        kinds = [str(t) for t in relation.types]
        table = relation.to_arrow_table()
        return {
            n: _typed_column(_object_array(table.column(n).to_pylist()), k)
            for n, k in zip(wanted, kinds, strict=True)
        }

    def held_record_positions(self, rks: np.ndarray) -> np.ndarray | None:
        """Position of each row key's record in :meth:`held_record_columns` (-1 where no
        record has it), or None when the records are not held."""
        held = self._held("records")
        if held is None:
            return None
        rks = np.asarray(rks, dtype=np.int64)
        pos = np.searchsorted(held.keys, rks)
        found = pos < len(held.keys)
        found[found] = held.keys[pos[found]] == rks[found]
        return np.where(found, pos, -1)

    def held_golden_column(self, column: str) -> list | None:
        """Every value of one golden column in the held table's order (identity id order;
        typed as :meth:`golden_rows` gives them), or None when the golden table is not held
        or lacks the column. Pairs with :meth:`held_golden_positions`: a reader derives a
        value per identity once (the lookup service's district masks) and reads it by
        position."""
        held = self._held("golden")
        if held is None or column not in self._cache["held_columns"][1]:
            return None
        return held.columns(np.arange(held.table.num_rows), [column])[column].tolist()

    def held_golden_positions(self, identity_ids: list[str]) -> np.ndarray | None:
        """Position of each identity's row in the held golden table (-1 where none), or None
        when the golden table is not held."""
        held = self._held("golden")
        if held is None:
            return None
        # identity_id is the golden table's key: one row each, found by one binary search
        return held.unique_positions([str(i) for i in identity_ids])

    def link_rows(self, identity_ids: list[str]) -> list[tuple]:
        """(source, record_id, identity_id) of every link of the given identities, sorted by
        source then record id, as :meth:`links_of_identities` gives them, without a frame
        when the links are held in memory."""
        values = [str(v) for v in dict.fromkeys(identity_ids)]
        if not values:
            return []
        held = self._held("links")
        if held is not None and len(values) <= _POINT_LOOKUPS:
            names = [schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]
            rows = held.tuples(held.positions(values), names)
            return sorted(rows, key=lambda r: (r[0], r[1]))
        links = self.links_of_identities(values)
        return list(
            zip(
                links[schema.SOURCE].tolist(),
                links[schema.RECORD_ID].tolist(),
                links[schema.IDENTITY_ID].tolist(),
                strict=True,
            )
        )

    def links_of_identities(self, identity_ids: list[str]) -> pd.DataFrame:
        """Return every link of the given identities."""
        frame = pd.DataFrame({schema.IDENTITY_ID: pd.unique(pd.Series(identity_ids, dtype=object))})
        if len(frame) <= _POINT_LOOKUPS:
            # a few identities (search hits): index lookups instead of a join over all links
            values = [str(v) for v in frame[schema.IDENTITY_ID]]
            if not values:
                return pd.DataFrame(columns=[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID])
            held = self._held("links")
            if held is not None:
                # sorted as the query sorts them: by source, then record id
                return held.rows(held.positions(values), order=lambda r: (r[0], r[1]))
            rows = self._point_rows(
                "links", schema.IDENTITY_ID, values, "source, record_id, identity_id"
            )
            return rows.sort_values([schema.SOURCE, schema.RECORD_ID], ignore_index=True)
        return self._with_keys(
            frame,
            "SELECT l.source, l.record_id, l.identity_id FROM links l JOIN __keys k "
            "ON l.identity_id = k.identity_id ORDER BY l.source, l.record_id",
        )

    def pairs_among(self, keys: pd.DataFrame) -> pd.DataFrame:
        """Return stored pairs whose both records are in ``keys``."""
        return self._with_keys(
            keys[[schema.SOURCE, schema.RECORD_ID]].drop_duplicates(),
            "SELECT p.* FROM pairs p "
            "SEMI JOIN __keys a ON p.source_l = a.source AND p.record_id_l = a.record_id "
            "SEMI JOIN __keys b ON p.source_r = b.source AND p.record_id_r = b.record_id",
        )

    def golden_for(self, identity_ids: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        """Return the golden records of the given identities (``columns`` of them, else all).

        Columns the table lacks are left out; ``identity_id`` always comes first.
        """
        if "golden" not in self._tables():
            return pd.DataFrame()
        values = [str(v) for v in pd.unique(pd.Series(identity_ids, dtype=object))]
        if not values:
            return pd.DataFrame()
        cols = "*"
        if columns is not None:
            # fewer columns: a point read decompresses a vector of every column it reads
            have = self._columns("golden")
            wanted = dict.fromkeys([schema.IDENTITY_ID, *columns])
            cols = ", ".join(_quote(c) for c in wanted if c in have)
            held = self._held("golden")
            names = [c for c in wanted if c in have]
            if held is not None and set(names) <= self._cache["held_columns"][1]:
                return held.rows(held.positions(values), names)
        return self._point_rows("golden", schema.IDENTITY_ID, values, cols)

    def value_counts(self, column: str) -> tuple[pd.Series, int]:
        """Return stored counts per value of ``column`` and the non-null total (cached)."""
        key = "vc:" + column
        if key not in self._cache:
            if "records" not in self._tables() or column not in self._columns("records"):
                self._cache[key] = (pd.Series(dtype=np.int64), 0)
            else:
                q = _quote(column)
                vc = (
                    self.con.sql(
                        f"SELECT {q} AS v, count(*) AS n FROM records WHERE {q} IS NOT NULL GROUP BY {q}"
                    )
                    .to_arrow_table()
                    .to_pandas()
                )
                counts = pd.Series(vc["n"].to_numpy(np.int64), index=vc["v"].to_numpy())
                self._cache[key] = (counts, int(counts.sum()))
        return self._cache[key]


__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "Store",
    "StoreChanges",
]
