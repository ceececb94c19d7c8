"""Stable identity IDs: name clusters with a keyed hash, keep stored IDs across runs.

Pure functions over DataFrames; imports the schema and errors. Must not import the store, CLI
or Linker. The one naming function, :func:`identity_names`, serves batch runs and the store.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from linkage import schema
from linkage.errors import ConfigError
from linkage.tables import arrow_large_text

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
    "record_moved",
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


# Environment variables that hand a batch run its identity key (never a command-line option:
# arguments show in process lists and shell histories).
ID_KEY_ENV = "LINKAGE_ID_KEY"
ID_KEY_FILE_ENV = "LINKAGE_ID_KEY_FILE"
ID_KEY_FILE = "identity.key"  # written 0600 next to a batch run's outputs when no key is given
_MIN_KEY_BYTES = 16
# one random key per process for library use without a key: stable within the process only
_PROCESS_KEY = secrets.token_bytes(32)


def _hash_id(key: bytes, record: str, salt: int) -> str:
    text = record if salt == 0 else f"{record}\x1f{salt}"
    # HMAC-SHA256 truncated to 80 bits: unguessable without the key, collisions handled by salts
    return "ID" + hmac.digest(key, text.encode("utf-8"), "sha256")[:10].hex().upper()


def identity_names(
    smallest_keys: np.ndarray, key: bytes, taken: set[str] | frozenset[str] = frozenset()
) -> np.ndarray:
    """Name clusters after their smallest record key with a keyed hash: the one naming rule.

    ``smallest_keys``: one :func:`record_key` per cluster. The name is ``ID`` + 20 hex digits of
    HMAC-SHA256(key, record key) (RFC 2104), so a party without the key cannot test a guessed
    (source, record_id) against an id, and the same key gives the same names in every run. An ID
    already used (``taken``: every stored identity, retired and merged ones included) is never
    reused: the key is re-hashed with a salt until the ID is free, which stays deterministic.
    Raises ``ValueError`` for a key shorter than 16 bytes.
    """
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"identity key must be at least {_MIN_KEY_BYTES} bytes")
    records = np.asarray(smallest_keys, dtype=object).tolist()
    out = np.empty(len(records), dtype=object)
    # when no two names and no taken name meet (nearly always: 80 bits) the unsalted names
    # are the names the loop below gives
    names = _unsalted_names(records, key)
    if len(set(names)) == len(names) and not any(name in taken for name in names):
        out[:] = names
        return out
    used = set(taken)
    for i, record in enumerate(records):
        salt = 0
        name = _hash_id(key, record, salt)
        while name in used:
            salt += 1
            name = _hash_id(key, record, salt)
        used.add(name)
        out[i] = name
    return out


def _unsalted_names(records: list[str], key: bytes) -> list[str]:
    """``_hash_id(key, record, 0)`` of each record key, in one pass from a copy of an HMAC
    already holding the key (``hmac.digest`` sets the key up again for each message)."""
    keyed = hmac.new(key, digestmod="sha256")

    def name_of(record: str) -> str:
        h = keyed.copy()
        h.update(record.encode("utf-8"))
        return "ID" + h.digest()[:10].hex().upper()

    return [name_of(r) for r in records]


def fresh_ids(smallest_keys: np.ndarray, taken: set[str], key: bytes | None = None) -> np.ndarray:
    """Names for new clusters of a store run: :func:`identity_names` with the run's key."""
    return identity_names(smallest_keys, key or process_key(), taken)


def cluster_ids(
    records: pd.DataFrame, labels: pd.Series | np.ndarray, key: bytes
) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """One identity id per row of ``records`` (``source``, ``record_id``) from cluster ``labels``.

    Each cluster is named after its smallest record key, so ids do not depend on row order.
    Returns an object array of ``str``, or (pandas 3, keys in increasing order as a batch's
    records come) the same ids as pandas' Arrow-backed text: no Python string per record
    key nor per record's id (~2 GB at twenty million records).
    """
    arrow = _arrow_record_keys(records[schema.SOURCE], records[schema.RECORD_ID])
    keys = record_key(records[schema.SOURCE], records[schema.RECORD_ID]) if arrow is None else None
    if arrow is None:
        arrow = _arrow_keys(keys)
    if arrow is not None and len(arrow) > 1:
        import pyarrow.compute as pc

        rising = pc.greater(arrow.slice(1), arrow.slice(0, len(arrow) - 1)).fill_null(False)
        if not pc.all(rising).as_py():
            arrow = None
    if arrow is None:
        if keys is None:
            keys = record_key(records[schema.SOURCE], records[schema.RECORD_ID])
        values = keys.to_numpy(dtype=object)
        if len(values) > 1 and not bool((values[1:] > values[:-1]).all()):
            smallest = keys.groupby(np.asarray(labels)).transform("min")
            codes, uniques = pd.factorize(smallest, sort=True)
            return identity_names(np.asarray(uniques, dtype=object), key)[codes]
    del keys
    # Keys in increasing order, as a batch's records come (io.read_records sorts them by
    # source and record id): a cluster's smallest key is at its smallest row, an integer
    # min rather than a string min per cluster.
    label_codes, n_labels = pd.factorize(np.asarray(labels))
    n = len(records)
    smallest = np.full(len(n_labels), n, dtype=np.int64)
    np.minimum.at(smallest, label_codes, np.arange(n))
    # np.unique(smallest[label_codes], return_inverse=True) sorted per cluster, not per
    # record: each cluster's smallest row is its own, so the distinct values are the
    # clusters' in order and a record's code is its cluster's rank (two sorts of twenty
    # million records were ~1 GB of the naming's peak)
    order = np.argsort(smallest, kind="stable")
    first = smallest[order]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[label_codes]
    del smallest, label_codes, order, rank
    if arrow is None:
        return identity_names(values[first], key)[codes.ravel()]
    names = _arrow_names(arrow.take(first), key)
    if names is None:  # two clusters' names met: the salting rule, over objects
        names = _arrow_text_array(identity_names(arrow.take(first).to_pylist(), key))
    return pd.array(names.take(codes.ravel()), dtype=_TEXT_DTYPE)


# pandas' dtype for an object array of ``str`` and None: Arrow-backed ``str`` under pandas 3
_TEXT_DTYPE = pd.Series(np.array(["a", None], dtype=object)).dtype


def _arrow_keys(keys: pd.Series) -> object | None:
    """Record keys as one pyarrow ``large_string`` array (no nulls) when pandas holds text as
    Arrow (pandas 3), else None."""
    if getattr(_TEXT_DTYPE, "storage", None) != "pyarrow":
        return None
    return arrow_large_text(keys)


def _arrow_record_keys(sources: pd.Series, record_ids: pd.Series) -> object | None:
    """:func:`record_key` of text columns without nulls joined in pyarrow (one Arrow copy
    of each column and the joined keys; pandas' ``+`` made each step's text column, ~3.6
    GB at twenty million records), as pyarrow ``large_string``; None when pandas does not
    hold text as Arrow or a column is not all text (then :func:`record_key` decides)."""
    if getattr(_TEXT_DTYPE, "storage", None) != "pyarrow":
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for column in (sources, record_ids):
        if isinstance(column.dtype, pd.StringDtype):
            part = arrow_large_text(column)
            if part is None:
                return None
        elif column.dtype == object and pd.api.types.infer_dtype(column, skipna=False) == "string":
            try:
                part = pa.array(column.to_numpy(), type=pa.large_string())
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
                return None
        else:
            return None
        parts.append(part)
    return pc.binary_join_element_wise(parts[0], parts[1], pa.scalar("\x1f", pa.large_string()))


def _arrow_text_array(values: list[str] | np.ndarray) -> object:
    import pyarrow as pa

    return pa.array(values, type=pa.large_string())


# Record keys hashed at a time: a million keys and names as Python strings (~0.15 GB)
_NAMES_AT_ONCE = 1_000_000


def _arrow_names(smallest_keys: object, key: bytes) -> object | None:
    """:func:`identity_names` of ``smallest_keys`` (pyarrow text) without ``taken``, as
    pyarrow ``large_string``: the unsalted names, ``_NAMES_AT_ONCE`` keys at a time, each
    chunk's written into one buffer of the names' fixed width (no list of chunk arrays
    concatenated: two copies of 11 M names); None when two names meet (then the salting
    rule of :func:`identity_names` needs every name at once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"identity key must be at least {_MIN_KEY_BYTES} bytes")
    n = len(smallest_keys)
    data = np.empty(n * _NAME_WIDTH, dtype=np.uint8)
    for start in range(0, n, _NAMES_AT_ONCE):
        chunk = _unsalted_names(smallest_keys.slice(start, _NAMES_AT_ONCE).to_pylist(), key)
        # not ``_hash_id``'s form (never expected): the names over objects decide
        if any(len(name) != _NAME_WIDTH for name in chunk) or not all(map(str.isascii, chunk)):
            return None
        text = "".join(chunk).encode("ascii")
        data[start * _NAME_WIDTH : start * _NAME_WIDTH + len(text)] = np.frombuffer(text, np.uint8)
        del chunk, text
    offsets = np.arange(n + 1, dtype=np.int64) * _NAME_WIDTH
    names = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    if not _distinct_names(data.reshape(n, _NAME_WIDTH)) and (
        pc.count_distinct(names).as_py() != n
    ):
        return None
    return names


# ``_hash_id``'s names: "ID" + 20 upper-case hex digits
_NAME_WIDTH = 22


def _distinct_names(names: np.ndarray) -> bool:
    """True when the names (``n x _NAME_WIDTH`` ASCII bytes, ``ID`` + 20 upper-case hex
    digits each) differ in their first 16 hex digits, hence are distinct; False when that
    cannot be shown so (two prefixes alike: about once in 10**6 runs of 20 M clusters),
    and the caller counts them exactly. One uint64 per name, sorted: pyarrow's
    ``count_distinct`` of 13 M names held ~1.5 GB of hash table for 9 s."""
    n = len(names)
    prefix = np.zeros(n, dtype=np.uint64)
    for i in range(16):
        digit = names[:, 2 + i]
        # "0".."9" -> 0..9, "A".."F" -> 10..15
        value = digit - np.where(digit > ord("9"), ord("A") - 10, ord("0")).astype(np.uint8)
        prefix |= value.astype(np.uint64) << np.uint64(4 * (15 - i))
    prefix.sort()
    return not bool((prefix[1:] == prefix[:-1]).any())


def process_key() -> bytes:
    """The identity key of library calls that pass none: ``$LINKAGE_ID_KEY`` or a per-process key."""
    return env_key() or _PROCESS_KEY


def env_key() -> bytes | None:
    """The identity key from ``$LINKAGE_ID_KEY`` (text) or the file ``$LINKAGE_ID_KEY_FILE``."""
    text = os.environ.get(ID_KEY_ENV, "")
    if text:
        key = text.encode("utf-8")
        if len(key) < _MIN_KEY_BYTES:
            raise ConfigError(f"{ID_KEY_ENV} must hold at least {_MIN_KEY_BYTES} characters")
        return key
    path = os.environ.get(ID_KEY_FILE_ENV, "")
    if path:
        return read_key_file(Path(path))
    return None


def read_key_file(path: Path) -> bytes:
    """Read a key file (hex text as written by :func:`key_file`); ConfigError if unusable."""
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except FileNotFoundError:
        raise ConfigError("identity key file not found", path=str(path)) from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"unreadable identity key file (expected hex): {exc}", path=str(path)
        ) from None
    if len(key) < _MIN_KEY_BYTES:
        raise ConfigError(f"identity key must be at least {_MIN_KEY_BYTES} bytes", path=str(path))
    return key


def key_file(path: Path) -> bytes:
    """Read the key file at ``path``, or create it (32 random bytes, hex, mode 0600) if absent."""
    path = Path(path)
    if path.exists():
        return read_key_file(path)
    return write_key_file(path, secrets.token_bytes(32))


def write_key_file(path: Path, key: bytes, *, announce: bool = True) -> bytes:
    """Write ``key`` to a new key file (hex, mode 0600); return the key the file holds.

    A file another process wrote meanwhile wins (its key is returned), so two runs never
    name identities with different keys. ``announce``: log that the key was created (not
    for a run's pending copy, which a refused run removes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key another process wrote meanwhile; 0600 from the first byte
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        return read_key_file(path)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    if announce:
        logger.info("created identity key %s (keep it with the outputs: ids depend on it)", path)
    return key


def batch_key(output: Path) -> tuple[bytes, Path | None]:
    """Identity key of a batch run writing to ``output``, and where to keep it afterwards.

    ``$LINKAGE_ID_KEY`` (or its file) first, else ``output/identity.key`` when it exists;
    otherwise a new random key and the path to save it to with :func:`write_key_file`
    once the run has succeeded, so a run refused for bad input leaves no output behind.
    """
    key = env_key()
    if key:
        return key, None
    path = Path(output) / ID_KEY_FILE
    if path.exists():
        return read_key_file(path), None
    return secrets.token_bytes(32), path


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
    key: bytes | None = None,
    clusters: str = "clusters",
) -> StableIds:
    """Assign identity IDs to the clusters of ``current`` keeping the IDs of ``previous``.

    ``current``: source, record_id, cluster (any label). ``previous``: source, record_id,
    identity_id of the stored records in scope (all of their identities' records). ``known``:
    every stored identity with identity_id, status, created_run (for age and to never reuse
    an ID). ``updated``: optional boolean per ``current`` row, the record replaced a stored one.
    ``key``: the identity key that names new clusters (the store's; see :func:`identity_names`).
    ``clusters``: what the clusters of ``current`` are, for the log line (a caller that passes
    only some of its clusters says which).
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
    name[order] = fresh_ids(ckey[order], set(known[schema.IDENTITY_ID].astype(str)), key)
    ids = name[labels] if len(labels) else np.array([], dtype=object)

    events, rows = _changes(
        current, cur_key, ids, prev_of_cur, prev_key.to_numpy(), previous, name, kept, updated
    )
    identities = _identity_rows(rows, known, run_id)
    logger.info(
        "stable ids: %d %s, %d kept an id, %d fresh, %d events",
        n_clusters,
        clusters,
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
    added = pd.isna(prev_of_cur)
    moved = added | (prev_of_cur != ids)
    # a record new to the store is added; a stored one that a merge or split carried to
    # another identity is moved (other_identity: where it was), so added events count the
    # new records exactly
    frames.append(_events("record_added", ids[added], None, src[added], rid[added]))
    shift = moved & ~added
    frames.append(_events("record_moved", ids[shift], prev_of_cur[shift], src[shift], rid[shift]))
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
