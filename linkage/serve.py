"""Lookup service: search and fetch identities over HTTP, each answer one department's view.

The top layer beside the CLI: composes the identity store (opened read-only), single-record
search (linkage.incremental) and the sharing policy's views (linkage.share), whose masks and
grants it reuses and never restates. FastAPI and uvicorn come from the ``serve`` extra.
"""

import dataclasses
import errno
import fcntl
import functools
import hashlib
import hmac
import inspect
import json
import logging
import mmap
import os
import stat
import struct
import threading
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import numpy as np
import pandas as pd
import yaml

from linkage import schema
from linkage.errors import ConfigError, InputError
from linkage.incremental import (
    SINGLE_FIELD_LIMIT,
    SearchReport,
    hold_search_tables,
    prepare_blind_searches,
    search_report,
)
from linkage.paths import same_file
from linkage.share import (
    GRANTABLE_FIELDS,
    DepartmentPolicy,
    SharingPolicy,
    effective_department,
    export_view,
    load_policy,
    mask_list,
    mask_values,
    view_rows,
)
from linkage.share.export import district_masks, is_microdata
from linkage.store import Store

try:  # the serve extra; importing this module without it names the extra
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi import Path as PathParam
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the lookup service needs FastAPI and uvicorn: pip install 'linkage[serve]'"
    ) from exc

logger = logging.getLogger(__name__)

# Environment variable holding the tokens file's content, for deployments without a file.
TOKENS_ENV = "LINKAGE_SERVE_TOKENS"
# Settings handed to each uvicorn worker process (``--workers`` > 1 imports the app anew).
_SETTINGS_ENV = "LINKAGE_SERVE_SETTINGS"
HASH_PREFIX = "sha256:"
# A request body above this is refused (413) before it is parsed: a query is a few fields.
MAX_BODY_BYTES = 16 * 1024
MAX_TOP = 20
# The explanation line holding the summed weight of comparisons over fields a view masks.
HIDDEN_COMPARISONS = "hidden"
# Query fields of the service and the record field each one searches.
QUERY_FIELDS: dict[str, str] = {
    "name": schema.NAME,
    "id_number": schema.ID_NUMBER,
    "birth_date": schema.BIRTH_DATE,
    "phone": schema.PHONE,
    "gender": schema.GENDER,
    "address": schema.CURRENT_ADDRESS,
    "hukou_address": schema.HUKOU_ADDRESS,
}


# ----------------------------------------------------------------------------- tokens


def hash_token(token: str) -> str:
    """Return the stored form of a bearer token: ``sha256:`` and its hex SHA-256 digest.

    Tokens are 256-bit random strings (``new_token``), so a plain hash resists guessing;
    a slow password hash would only add latency to every request.
    """
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """Return a fresh random bearer token (43 URL-safe characters, 256 bits)."""
    import secrets

    return secrets.token_urlsafe(32)


def parse_tokens(data: Any, *, where: str) -> list[tuple[bytes, str]]:
    """Validate a tokens document: ``{department: hash or [hashes]}``; return (digest, dept).

    Raises ConfigError naming ``where`` and the department for anything but ``sha256:``
    followed by 64 hex digits (a raw token pasted by mistake is refused, not stored).
    """
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            "expected a mapping of department name to token hash(es) (sha256:<64 hex digits>)",
            path=where,
        )
    out: list[tuple[bytes, str]] = []
    for department, hashes in data.items():
        values = hashes if isinstance(hashes, list) else [hashes]
        for value in values:
            text = str(value)
            hex_part = text.removeprefix(HASH_PREFIX)
            ok = text.startswith(HASH_PREFIX) and len(hex_part) == 64
            try:
                digest = bytes.fromhex(hex_part) if ok else b""
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise ConfigError(
                    "expected sha256:<64 hex digits> (the hash of a token, never the token "
                    "itself; `linkage serve-token` writes one)",
                    path=where,
                    key=str(department),
                )
            out.append((digest, str(department)))
    return out


def load_tokens(path: str | Path | None) -> list[tuple[bytes, str]]:
    """Read token hashes from ``path``, or else from the environment variable TOKENS_ENV."""
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("tokens file not found", path=str(path)) from None
        where = str(path)
    else:
        text = os.environ.get(TOKENS_ENV, "")
        if not text.strip():
            raise ConfigError(
                f"no tokens: give --tokens FILE or set the environment variable {TOKENS_ENV}"
            )
        where = f"${TOKENS_ENV}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=where) from None
    return parse_tokens(data, where=where)


def add_token(path: str | Path, department: str) -> str:
    """Create a token for ``department``, add its hash to the tokens file, return the token.

    The file is rewritten atomically (comments are not kept); the token itself is stored
    nowhere, so it can be shown once only.
    """
    from linkage.io import atomic_write

    path = Path(path)
    data: dict = {}
    if path.exists():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parse_tokens(data, where=str(path)) if data else None
    token = new_token()
    current = data.get(department, [])
    data[department] = [*(current if isinstance(current, list) else [current]), hash_token(token)]
    text = "# department: SHA-256 hashes of its bearer tokens (linkage serve-token)\n"
    text += yaml.safe_dump(data, allow_unicode=True, sort_keys=True)
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return token


def authenticate(tokens: list[tuple[bytes, str]], token: str) -> str | None:
    """Return the department whose token this is, or None.

    Compares the token's digest with every stored digest in constant time and without an
    early exit, so timing tells nothing about which digest came close.
    """
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    found = None
    for stored, department in tokens:
        if hmac.compare_digest(stored, digest):
            found = department
    return found


# ----------------------------------------------------------------------------- API models


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SearchQuery(_Forbid):
    """One person to look up; give any combination of fields (at least one)."""

    name: str | None = Field(None, max_length=100, examples=["张伟"])
    id_number: str | None = Field(
        None,
        max_length=40,
        description="18- or 15-digit resident ID",
        examples=["110101199003070011"],
    )
    birth_date: str | None = Field(
        None, max_length=40, description="any common format, e.g. 1990-03-07 or 1990年3月7日"
    )
    phone: str | None = Field(None, max_length=40, examples=["13800138000"])
    gender: str | None = Field(None, max_length=10, description="男/女, M/F")
    address: str | None = Field(None, max_length=200, description="current address")
    hukou_address: str | None = Field(None, max_length=200, description="户籍地址")
    top: int = Field(
        5, ge=1, le=MAX_TOP, strict=True, description="most identities to return (a JSON integer)"
    )


class Explanation(BaseModel):
    """One comparison's contribution to a hit's match weight."""

    comparison: str
    level: str
    weight: float = Field(description="partial match weight, log2 Bayes factor")


class Hit(BaseModel):
    """A stored identity that may be the person asked about, as the department sees it."""

    identity: dict[str, Any] = Field(
        description="the department's view: its identity id column, granted fields (masked), "
        "sources and record ids where granted, export_flags"
    )
    match_probability: float = Field(ge=0, le=1)
    match_weight: float = Field(description="log2 Bayes factor of the best-matching record")
    explanation: list[Explanation] = Field(
        description="comparisons over fields the department sees unmasked; the weight of the "
        "others is in match_weight but not itemized"
    )


class SearchAnswer(BaseModel):
    """Hits, best first, and what was searched (why an answer is empty)."""

    department: str
    hits: list[Hit]
    message: str = Field(description="why the answer is empty or how it was found; '' if plain")
    fields: dict[str, dict[str, Any]] = Field(
        description="per query field given: usable (could be read) and quality flags"
    )
    rules: list[dict[str, Any]] = Field(description="blocking rules: keys, status, records")
    single_field: dict[str, Any] | None = Field(
        description="lookup by a name or birth date alone, when no rule found a candidate"
    )


class IdentityAnswer(BaseModel):
    """One identity in the department's view."""

    department: str
    identity: dict[str, Any]


class DepartmentAnswer(BaseModel):
    """What the calling department is granted (its effective sharing policy)."""

    department: str
    purpose: str
    identity: str
    fields: dict[str, str] = Field(description="granted field -> mask")
    sources: bool
    record_ids: str
    rows: str


class ErrorAnswer(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str
    problems: list[str] = Field(default_factory=list)


# ----------------------------------------------------------------------------- the service


@dataclass
class ServiceSettings:
    """Everything ``create_app`` needs; JSON-serializable for worker processes."""

    store: str
    policy: str
    tokens: str | None = None  # file path; None reads TOKENS_ENV
    audit: str | None = None  # JSON-lines file; None writes no audit log
    single_field_limit: int = SINGLE_FIELD_LIMIT
    # requests per second and burst per department (all its tokens); None: the policy's rate_limit
    rate_per_second: float | None = None
    rate_burst: int | None = None
    # the file of token buckets every worker process shares (``rate_limit_file``); None:
    # this process's own buckets (one worker)
    rate_state: str | None = None
    # keep the tables searches read in memory (about 0.5 GB per worker at 1 M records)
    in_memory: bool = True


def _add_missing_indexes(path: str) -> None:
    """Add the lookup indexes a store written by an older release lacks (once, if writable)."""
    with Store.open(path, create=False, read_only=True) as store:
        missing = store.missing_indexes()
    if not missing:
        return
    try:
        with Store.open(path, create=False) as store:
            t = time.perf_counter()
            store.build_indexes()
            logger.info("added store indexes %s in %.1fs", missing, time.perf_counter() - t)
    except InputError as exc:  # another process holds the store: serve without them
        logger.warning("store lacks indexes %s (lookups scan instead): %s", missing, exc)


def _column_fields(column: str) -> str | None:
    """The canonical field a derived column is computed from (None for bookkeeping columns)."""
    if column == schema.QUALITY_FLAGS:
        return None
    if column.startswith("id_"):
        return schema.ID_NUMBER
    if column.startswith(schema.FORMER_NAME):
        # no export shows a former name: only a department granted former_names reads it
        return schema.FORMER_NAME
    for f in sorted(schema.CANONICAL_FIELDS, key=len, reverse=True):
        if column == f or column.startswith(f + "_"):
            return f
    return column


def _store_secrets(path: str, names: list[str]) -> dict[str, bytes]:
    """The store's secrets, read read-only; the store is opened for writing only to create a
    missing one (once), so a service can start beside other readers of an older store."""
    with Store.open(path, create=False, read_only=True) as store:
        rows = store.con.execute("SELECT key, value FROM meta WHERE key LIKE 'secret:%'").fetchall()
    found = {k.removeprefix("secret:"): bytes.fromhex(v) for k, v in rows}
    if any(n not in found for n in names):
        with Store.open(path, create=False) as writable:
            found.update({n: writable.secret(n) for n in names})
    return {n: found[n] for n in names}


def open_audit_log(path: str | Path, *, not_over: dict[str, str | None] | None = None) -> TextIO:
    """Open the audit log (JSON lines) for appending, created owner-only (0600).

    Refused with InputError naming the path: a symbolic link as its last part (the lines would
    land in the link's target, which anyone able to create a file beside the store could point
    at the operator's files), anything but a regular file (a FIFO would block start-up), a file
    with other hard links, a file owned by another user (who made it could read every
    department's queries), the same file as one of ``not_over`` (role -> path: the store, the
    policy, the tokens file), or a path that cannot be written.
    """
    path = Path(path)
    for role, other in (not_over or {}).items():
        if other is not None and same_file(path, other):
            raise InputError(
                f"the audit log is the same file as the {role} ({other}); name another file",
                path=str(path),
            )
    # O_NOFOLLOW refuses a link; O_NONBLOCK makes a FIFO without a reader fail, not hang
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            why = "it is a symbolic link; name the file itself, not a link to it"
        elif exc.errno == errno.ENXIO:
            why = "it is not a regular file"
        else:
            why = exc.strerror or str(exc)
        raise InputError(f"cannot write the audit log: {why}", path=str(path)) from None
    info = os.fstat(fd)
    why = ""
    if not stat.S_ISREG(info.st_mode):
        why = "it is not a regular file"
    elif info.st_nlink != 1:
        why = f"it has {info.st_nlink} hard links (the same file under other names)"
    elif hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        why = f"it belongs to another user (uid {info.st_uid}), who could read its lines"
    if why:
        os.close(fd)
        raise InputError(f"cannot write the audit log: {why}", path=str(path))
    os.set_blocking(fd, True)
    return open(fd, "a", encoding="utf-8", buffering=1)


# one token bucket in the shared rate-limit file: its level and the time of its last take
# (time.monotonic, one clock for every process of the machine); 0 there means never taken
_BUCKET = struct.Struct("=2d")


def _audit_form(value: str) -> str:
    """A hashed query value as the audit log hashes it: NFKC (full-width digits and letters
    to ASCII), without whitespace or format characters (zero-width spaces), upper case (an
    ID's check letter x/X). One ID sent in these spellings had a hash each, so its probes
    did not show as one value."""
    text = unicodedata.normalize("NFKC", value)
    return "".join(
        ch for ch in text if not ch.isspace() and unicodedata.category(ch) != "Cf"
    ).upper()


class TokenBuckets:
    """Rate limit per department: a token bucket each (burst, then ``rate`` per second).

    Keys are department names (UTF-8): every bearer token of one department draws on the
    same bucket, so a department given k tokens does not get k times its rate (a bucket per
    token did: the rate limit bounds what one department can enumerate, whatever number of
    tokens it holds).
    ``shared``: a file of one slot (``_BUCKET``) per key of ``keys`` (the departments of
    the tokens file, in its order), which every worker process of one service maps:
    ``--workers N`` then allows the policy's rate per department, not N times it (each worker
    kept its own buckets before: 156 answers in 6 s instead of 80 with 2 workers). A slot
    changes under an exclusive ``flock`` of the file. Without it (one worker, or a key not
    in ``keys``) the buckets live in this process.

    Written here: a few dozen lines, where a limiter library would add a dependency and
    its own storage (a Redis server or a database) to keep across processes.
    Raises ConfigError when ``shared`` cannot be opened or holds fewer slots than keys.
    """

    def __init__(self, shared: str | None = None, keys: list[bytes] | None = None) -> None:
        self._lock = threading.Lock()
        self._state: dict[bytes, tuple[float, float]] = {}
        self._slots = {k: i for i, k in enumerate(dict.fromkeys(keys or []))}
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        if shared is None:
            return
        try:
            fd = os.open(shared, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the rate-limit file: {exc.strerror}", path=shared
            ) from None
        need = _BUCKET.size * max(1, len(self._slots))
        if os.fstat(fd).st_size < need:
            os.close(fd)
            raise ConfigError(
                f"the rate-limit file holds fewer than {need} bytes (one slot per department)",
                path=shared,
            )
        self._fd = fd
        self._map = mmap.mmap(fd, need)

    @staticmethod
    def _step(level: float, last: float, now: float, rate: float, burst: int):
        """The bucket after one request at ``now``: ((level, last), seconds to wait)."""
        level = min(float(burst), level + max(0.0, now - last) * rate)
        if level < 1:
            return (level, now), (1 - level) / rate
        return (level - 1, now), 0.0

    def take(self, key: bytes, rate: float, burst: int) -> float:
        """Take one request from ``key``'s bucket; return 0, or the seconds until one is free."""
        with self._lock:
            slot = self._slots.get(key)
            if self._map is None or slot is None:
                now = time.monotonic()
                level, last = self._state.get(key, (float(burst), now))
                self._state[key], wait = self._step(level, last, now, rate, burst)
                return wait
            offset = slot * _BUCKET.size
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                # read the clock under the lock: another worker's take is never "later"
                now = time.monotonic()
                level, last = _BUCKET.unpack_from(self._map, offset)
                if last == 0:
                    level, last = float(burst), now
                state, wait = self._step(level, last, now, rate, burst)
                _BUCKET.pack_into(self._map, offset, *state)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            return wait

    def close(self) -> None:
        """Unmap the shared file (the service's parent process removes it)."""
        if self._map is not None:
            self._map.close()
            os.close(self._fd)
            self._map = self._fd = None


def rate_limit_file(tokens: list[tuple[bytes, str]]) -> str:
    """Create the zeroed file ``TokenBuckets`` share across worker processes (0600, in the
    temporary directory) with a slot per department of ``tokens`` ((token digest, department)
    pairs, as :func:`load_tokens` gives them); return its path."""
    import tempfile

    slots = max(1, len(rate_limit_keys(tokens)))
    fd, path = tempfile.mkstemp(prefix="linkage-serve-rate-", suffix=".bin")
    try:
        os.ftruncate(fd, _BUCKET.size * slots)
    finally:
        os.close(fd)
    return path


def rate_limit_keys(tokens: list[tuple[bytes, str]]) -> list[bytes]:
    """The rate limit's bucket keys: each department of ``tokens`` once, in file order."""
    return [d.encode("utf-8") for d in dict.fromkeys(dept for _, dept in tokens)]


@functools.cache  # a handful of keys, asked on every search answer
def _key_fields(key: str) -> frozenset[str]:
    """The canonical fields a blocking key is computed from (a derived key's inputs)."""
    from linkage.blocking import DERIVED_KEYS

    columns = DERIVED_KEYS[key][0] if key in DERIVED_KEYS else (key,)
    return frozenset({_column_fields(c) for c in columns} - {None})


class LookupService:
    """The state behind the HTTP app: store, policy, tokens, audit log, one lock.

    One DuckDB connection serves every request under a lock (DuckDB connections are not
    thread-safe); run several worker processes for more throughput (``--workers``).
    """

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.policy: SharingPolicy = load_policy(settings.policy)
        self.tokens = load_tokens(settings.tokens)
        departments = sorted({d for _, d in self.tokens})
        unknown = [d for d in departments if d not in self.policy.departments]
        if unknown:
            raise ConfigError(
                f"tokens for {', '.join(map(repr, unknown))}, a department the policy "
                f"{settings.policy} does not define (it defines "
                f"{', '.join(self.policy.departments)})",
                path=settings.tokens or f"${TOKENS_ENV}",
            )
        self.departments: dict[str, DepartmentPolicy] = {}
        for name in departments:
            self.departments[name] = effective_department(self.policy, name)
        _add_missing_indexes(settings.store)
        # department pseudonyms are keyed as `linkage export` keys them: the policy's
        # environment variable, else the store's own secret (created once, like export does)
        needed = ["identity_key"]
        if not os.environ.get(self.policy.pseudonym_key_env):
            needed.append("pseudonym_key")
        keys = _store_secrets(settings.store, needed)
        self._key: bytes | None = keys.get("pseudonym_key")
        # keys the audit log's hashes of values a department may not see: derived from the
        # store's identity key, so it lives (and is guarded) where the records are
        self._audit_key = hmac.digest(keys["identity_key"], b"linkage-audit-log", "sha256")
        self._buckets = TokenBuckets(settings.rate_state, rate_limit_keys(self.tokens))
        self.store = Store.open(settings.store, create=False, read_only=True)
        # point lookups gain nothing from DuckDB's thread pool; workers are the parallelism
        self.store.con.execute("SET threads = 1")
        # field -> (int32 code per held golden row, distinct district masks): filled
        # after the tables are held, below
        self._districts: dict[str, tuple[np.ndarray, list[tuple[str | None, bool]]]] = {}
        self._blind: dict[str, frozenset[str]] = {}
        if settings.in_memory:
            try:
                # the stored sides each searching department's blind columns need, once
                blinds = [self.blind_columns(d) for d in self.departments if self.may_search(d)]
                hold_search_tables(self.store, blinds or [frozenset()])
            except InputError:  # no model: every search fails with the store's message
                pass
            self._mask_districts()
        else:
            try:
                blinds = [self.blind_columns(d) for d in self.departments if self.may_search(d)]
                prepare_blind_searches(self.store, blinds)
            except InputError:
                pass
        self.lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._audit = None
        if settings.audit:
            try:
                self._audit = open_audit_log(
                    settings.audit,
                    not_over={
                        "store": settings.store,
                        "policy": settings.policy,
                        "tokens file": settings.tokens,
                    },
                )
            except InputError:
                self.store.close()
                raise
        self._ids: dict[str, dict[str, str]] = {}
        # microdata department -> its whole k-anonymous view and that view's ids (built once)
        self._microdata: dict[str, tuple[pd.DataFrame, pd.Index]] = {}
        self._id_column: dict[str, str | None] = {}
        self._hidden: dict[str, set[str]] = {}
        self._own: dict[str, frozenset[str]] = {}
        try:
            for name in self.departments:
                # a view of one probe row: a missing pseudonym key fails here, not later
                self._id_column[name] = self._probe_id_column(name)
                if self.departments[name].rows == "own":
                    self._own_identities(name)
            self._warm_up()
            for name, column in self._id_column.items():
                if column not in (None, schema.IDENTITY_ID):
                    self._map_ids(name)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def _warm_up(self) -> None:
        """Load the model, term-frequency tables and address data before the first request."""
        t = time.perf_counter()
        try:
            search_report(
                self.store,
                {
                    schema.NAME: "张伟",
                    schema.BIRTH_DATE: "1990-01-01",
                    schema.PHONE: "13800138000",
                    schema.CURRENT_ADDRESS: "北京市东城区东华门街道1号",
                    schema.HUKOU_ADDRESS: "北京市东城区东华门街道1号",
                    schema.GENDER: "男",
                    schema.ID_NUMBER: "110101199001010011",
                },
            )
        except ValueError as exc:  # pragma: no cover - a store without records
            logger.warning("warm-up search failed: %s", exc)
        mask_values(pd.Series(["北京市东城区东华门街道1号"]), schema.CURRENT_ADDRESS, "district")
        logger.info("lookup service warm in %.1fs", time.perf_counter() - t)

    def _mask_districts(self) -> None:
        """The ``district`` mask of every held golden address that an identity view masks
        so, computed once: a hit's address is then read by its golden row's position, not
        parsed through cpca per request (~4 ms on the searches of such a department), and a
        microdata view is built without parsing every address again."""
        fields = sorted(
            {
                f
                for d in self.departments.values()
                if not d.aggregate
                for f, mask in d.fields.items()
                if mask == "district"
            }
        )
        t = time.perf_counter()
        for f in fields:
            values = self.store.held_golden_column(f)
            if values is not None:
                self._districts[f] = district_masks(values, f)
        if self._districts:
            logger.info(
                "district masks of %s for every identity in %.1fs",
                ", ".join(self._districts),
                time.perf_counter() - t,
            )

    def _district_rows(self, identity_ids: list[str]) -> dict[str, list] | None:
        """Per masked field, the precomputed district mask of each identity's golden row
        (None when nothing was precomputed: the view parses the addresses itself)."""
        if not self._districts:
            return None
        positions = self.store.held_golden_positions(identity_ids)
        if positions is None:  # pragma: no cover - the tables stay held until a write
            return None
        out = {}
        for f, (codes, table) in self._districts.items():
            # no golden row: the view reads the address as missing, code 0 (None, False)
            found = positions >= 0
            at = np.zeros(len(positions), dtype=np.int64)
            at[found] = codes[positions[found]]
            out[f] = [table[c] for c in at.tolist()]
        return out

    def close(self) -> None:
        """Close the store, the audit log and the shared rate-limit file."""
        self.store.close()
        self._buckets.close()
        if self._audit is not None:
            self._audit.close()

    # ------------------------------------------------------------------ views

    def _links_frame(self, identity_ids: list[str]) -> pd.DataFrame:
        if not identity_ids:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype=object)
                    for c in (schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID)
                }
            )
        return self.store.links_of_identities(identity_ids)

    def _needs_links(self, dept: DepartmentPolicy) -> bool:
        return dept.sources or dept.record_ids != "none" or dept.rows == "own"

    def _links_for(self, department: str, identity_ids: list[str]) -> pd.DataFrame:
        """Links the department's view needs (none when it shows no sources or record ids)."""
        needed = self._needs_links(self.departments[department])
        return self._links_frame(identity_ids if needed else [])

    def _link_rows_for(self, department: str, identity_ids: list[str]) -> list[tuple]:
        """:meth:`_links_for` as (source, record_id, identity_id) tuples, without a frame."""
        if not self._needs_links(self.departments[department]):
            return []
        return self.store.link_rows(identity_ids)

    def _probe_id_column(self, department: str) -> str | None:
        if self.departments[department].identity == "none":
            return None
        probe = export_view(
            pd.DataFrame({schema.IDENTITY_ID: ["probe"]}),
            self._links_frame([]),
            self._id_only_policy(department),
            department,
            key=self._key,
            keyed_order=False,
        )
        return str(probe.columns[0])

    def view_id_column(self, department: str) -> str | None:
        """The name of the identity column in the department's view (None: no identity)."""
        return self._id_column[department]

    def _id_only_policy(self, department: str) -> SharingPolicy:
        """The policy with this department reduced to its identity column (for id lookups)."""
        dept = self.policy.departments[department].model_copy(
            update={"fields": {}, "sources": False, "record_ids": "none", "rows": "all"}
        )
        return self.policy.model_copy(update={"departments": {department: dept}})

    def resolve(self, department: str, view_id: str) -> str | None:
        """Map an id as the department sees it back to the stored identity id (or None)."""
        column = self.view_id_column(department)
        if column is None:
            return None
        if column == schema.IDENTITY_ID:
            return view_id
        return self._map_ids(department).get(view_id)

    def _map_ids(self, department: str) -> dict[str, str]:
        """View id -> identity id for every identity (built once per department)."""
        if department not in self._ids:
            # a keyed pseudonym cannot be inverted: map every identity once, then look up
            t = time.perf_counter()
            column = self.view_id_column(department)
            ids = self.store.con.execute("SELECT identity_id FROM golden").fetchnumpy()
            all_ids = pd.Series(np.asarray(ids[schema.IDENTITY_ID], dtype=object))
            view = export_view(
                pd.DataFrame({schema.IDENTITY_ID: all_ids}),
                self._links_frame([]),
                self._id_only_policy(department),
                department,
                key=self._key,
                keyed_order=False,
            )
            self._ids[department] = dict(
                zip(view[column].astype(str), all_ids.astype(str), strict=True)
            )
            logger.info(
                "mapped %d identity ids for %s in %.1fs",
                len(all_ids),
                department,
                time.perf_counter() - t,
            )
        return self._ids[department]

    def _visible_fields(self, department: str) -> set[str]:
        """Fields the department's searches may read of stored records: those granted
        unmasked, and former names where the policy grants ``former_names``."""
        dept = self.departments[department]
        visible = {f for f, m in dept.fields.items() if m == "none"}
        if dept.former_names:
            visible.add(schema.FORMER_NAME)
        return visible

    def blind_columns(self, department: str) -> frozenset[str]:
        """Stored record columns the department's searches read as null: every column a
        comparison reads over a field the department may not see (:meth:`_visible_fields`).

        A search answer then depends only on what the department's view shows. Otherwise a
        comparison's fallbacks leak through the match weight: gender falls back to the ID's
        17th digit where a record has none (the masked digit's parity), birth date to the
        ID's digits 7-14, and a name matched against a former name tells who was once called
        what. Raises ``InputError`` when the store holds no model.
        """
        if department not in self._blind:
            from linkage.incremental._common import stored_run

            visible = self._visible_fields(department)
            columns = {
                c
                for comparison in stored_run(self.store).comparisons
                for c in comparison.columns
                if _column_fields(c) is not None and _column_fields(c) not in visible
            }
            self._blind[department] = frozenset(columns)
        return self._blind[department]

    def hidden_comparisons(self, department: str) -> set[str]:
        """Comparisons of a field the department may not see (the field of a comparison's
        first column: ``id_std`` of the ID comparison, ``phone_std`` of contact), shown as
        one summed line. What they read of stored records is blind (:meth:`blind_columns`):
        the level of such a comparison is null (weight 0) unless it also reads a visible
        field (contact's address where only the phone is not granted)."""
        if department not in self._hidden:
            from linkage.incremental._common import stored_run

            visible = self._visible_fields(department)
            hidden = set()
            for comparison in stored_run(self.store).comparisons:
                own = _column_fields(comparison.columns[0]) if comparison.columns else None
                if own is not None and own not in visible:
                    hidden.add(comparison.name)
            self._hidden[department] = hidden
        return self._hidden[department]

    # ------------------------------------------------------------------ requests

    def search(self, department: str, query: SearchQuery) -> dict:
        """Search as ``department``: hits in its view and the search report."""
        dept = self.departments[department]
        record = {
            QUERY_FIELDS[k]: v
            for k, v in query.model_dump(exclude={"top"}).items()
            if v not in (None, "")
        }
        # rows: own views rank only identities with a record of the department's registries:
        # the time a search takes then says nothing of persons it may not see
        only = self._own_identities(department) if dept.rows == "own" else None
        with self.lock:
            report = search_report(
                self.store,
                record,
                top=query.top,
                single_field_limit=self.settings.single_field_limit,
                only=only,
                blind=self.blind_columns(department),
            )
            hits = self._hits(department, report, query.top)
        return self._answer(department, dept, report, hits)

    def _own_identities(self, department: str) -> frozenset[str]:
        """Identity ids holding a record of the department's own registries (built once)."""
        if department not in self._own:
            sources = list(self.departments[department].own_sources)
            marks = ", ".join("?" for _ in sources) or "NULL"
            rows = self.store.con.execute(
                f"SELECT DISTINCT identity_id FROM links WHERE source IN ({marks})", sources
            ).fetchall()
            self._own[department] = frozenset(str(r[0]) for r in rows)
        return self._own[department]

    def _hits(self, department: str, report: SearchReport, top: int) -> list[dict]:
        """The report's hits in the department's view, by ``share.export_view``."""
        if not report.hits:
            return []
        dept = self.departments[department]
        link_rows = self._link_rows_for(department, [h["identity_id"] for h in report.hits])
        hits = report.hits
        if dept.rows == "own":
            keep = {str(i) for s, _, i in link_rows if s in dept.own_sources}
            hits = [h for h in hits if str(h["identity_id"]) in keep]
        hits = hits[:top]
        if not hits:
            return []
        golden = [
            {
                **{f: h["golden"].get(f) for f in GRANTABLE_FIELDS},
                schema.IDENTITY_ID: h["identity_id"],
            }
            for h in hits
        ]
        # a searching department is never aggregated nor microdata (may_search): its view
        # is per identity, built without frames
        view = view_rows(
            golden,
            link_rows,
            self.policy,
            department,
            key=self._key,
            districts=self._district_rows([h["identity_id"] for h in hits]),
        )
        if len(view) != len(hits):  # pragma: no cover - the view keeps every visible row
            raise RuntimeError("a department view lost rows")
        hidden = self.hidden_comparisons(department)
        out = []
        for h, row in zip(hits, view, strict=True):
            shown = [e for e in h["explanation"] if e["comparison"] not in hidden]
            unseen = [e for e in h["explanation"] if e["comparison"] in hidden]
            if unseen:
                # their sum only: match_weight minus the lines shown gives it anyway, so the
                # lines still add up without showing a level over a field the view masks
                shown.append(
                    {
                        "comparison": HIDDEN_COMPARISONS,
                        "level": ", ".join(e["comparison"] for e in unseen),
                        "weight": round(float(sum(e["weight"] for e in unseen)), 3),
                    }
                )
            out.append(
                {
                    "identity": row,
                    "match_probability": h["match_probability"],
                    "match_weight": h["match_weight"],
                    "explanation": shown,
                }
            )
        return out

    def _answer(
        self, department: str, dept: DepartmentPolicy, report: SearchReport, hits: list[dict]
    ) -> dict:
        rules = [dict(r) for r in report.rules]
        single = dict(report.single_field) if report.single_field else None
        message = report.message
        granted = {f for f, m in dept.fields.items() if m == "none"}
        for r in rules:
            # how many stored records share a key over a field the department may not see
            # tells it about persons it is not granted
            if not set().union(*map(_key_fields, r.get("keys", []))) <= granted:
                r.pop("records", None)
        if single and single.get("field") not in granted:
            single.pop("records", None)
        if dept.rows == "own" or not dept.sources:
            # rows: own: counts of the whole store would tell a department restricted to its
            # own registries that someone else's record matched. Not granted `sources`: the
            # count of stored records sharing a person's name is their number of records,
            # i.e. how many registries hold them (social_security: 184 of 286 names one
            # identity holds). Report statuses only.
            for r in rules:
                r.pop("records", None)
            if single:
                single.pop("records", None)
            if hits and report.single_field and dept.rows != "own":
                message = f"no blocking rule found a candidate; ranked by {single['field']} alone"
        if dept.rows == "own":
            if not hits:
                message = "no identity with a record in your department's registries matches"
                # a single-field lookup runs only when no blocking rule found anyone in the
                # whole store: its presence would tell whether someone else matched
                single = None
            elif report.single_field:
                message = f"no blocking rule found a candidate; ranked by {single['field']} alone"
        return {
            "department": department,
            "hits": hits,
            "message": message,
            "fields": {k: v for k, v in report.fields.items()},
            "rules": rules,
            "single_field": single,
        }

    def fetch(self, department: str, view_id: str) -> dict | None:
        """One identity in the department's view, or None when it may not see it."""
        with self.lock:
            identity_id = self.resolve(department, view_id)
            if identity_id is None:
                return None
            if is_microdata(self.departments[department]):
                # k-anonymity is judged over every row: the row of the whole export
                return self._microdata_row(department, view_id)
            golden = self.store.golden_rows([identity_id], list(GRANTABLE_FIELDS))
            if not golden:
                return None
            links = self._link_rows_for(department, [identity_id])
            # the frame-free view export_view gives (tested equal over every department)
            view = view_rows(
                golden,
                links,
                self.policy,
                department,
                key=self._key,
                districts=self._district_rows([identity_id]),
            )
        if not view:
            return None
        return {"department": department, "identity": view[0]}

    def _microdata_row(self, department: str, view_id: str) -> dict | None:
        """One row of a microdata department's whole view, as ``linkage export`` gives it.

        Such a view is k-anonymous over all its rows (``export_view``): a row judged alone
        would always be alone in its cell and come back suppressed. The view is built on the
        first fetch and kept (the store cannot change while the service holds it); golden
        addresses are masked from the districts computed at start-up.
        """
        if department not in self._microdata:
            t = time.perf_counter()
            golden = self.store.table("golden")
            dept = self.departments[department]
            links = self.store.links() if self._needs_links(dept) else self._links_frame([])
            districts = None
            if self._districts and not golden.empty:
                districts = self._district_rows(golden[schema.IDENTITY_ID].astype(str).tolist())
            view = export_view(
                golden,
                links,
                self.policy,
                department,
                key=self._key,
                keyed_order=False,
                districts=districts,
            )
            column = self.view_id_column(department)
            self._microdata[department] = (view, pd.Index(view[column].astype(str)))
            logger.info(
                "microdata view of %s: %d rows in %.1fs",
                department,
                len(view),
                time.perf_counter() - t,
            )
        view, ids = self._microdata[department]
        found = ids.get_indexer([view_id])[0]
        if found < 0:
            return None
        row = view.iloc[int(found)]
        return {
            "department": department,
            "identity": {k: (None if pd.isna(v) else v) for k, v in row.items()},
        }

    # ------------------------------------------------------------------ audit

    def audit_values(self, department: str | None, query: dict[str, str]) -> dict | list:
        """Query values as the policy lets the audit log keep them."""
        if department is None:
            return sorted(query)
        dept = self.departments[department]
        mode = dept.audit_queries or self.policy.audit_queries
        if mode == "none":
            return sorted(query)
        if mode == "raw":
            return dict(query)
        out = {}
        for key, value in query.items():
            mask = dept.fields.get(QUERY_FIELDS.get(key, key))
            if mask != "none":
                # a value the department may not see: a keyed hash, so repeated or
                # enumerated probes of one field show as distinct values in the log
                out[key] = self.audit_hash(key, _audit_form(value))
                continue
            masked, failed = mask_list([value], QUERY_FIELDS[key], mask)
            out[key] = None if failed[0] else masked[0]
        return out

    def audit_hash(self, key: str, value: str) -> str:
        """``hmac:`` + 16 hex digits of HMAC-SHA256(store's audit key, field and value).

        Equal values give equal hashes in one store's log; without the key (kept in the
        store) nobody can test a guessed value against the log.
        """
        digest = hmac.digest(self._audit_key, f"{key}\x1f{value}".encode(), "sha256")
        return "hmac:" + digest[:8].hex()

    def refused_query_fields(self, department: str, query: dict[str, str]) -> list[str]:
        """Query fields the department may not search by: any not granted unmasked.

        A search on a masked or ungranted field would answer whether a guessed full value
        (a resident ID from its masked form, a phone) belongs to a person the department
        sees, and so reveal the value itself.
        """
        dept = self.departments[department]
        return [k for k in query if dept.fields.get(QUERY_FIELDS.get(k, k)) != "none"]

    def may_search(self, department: str) -> bool:
        """False for a pseudonymous view (no name, ID or phone unmasked) and for aggregates.

        Searching by a known person's fields would map them to the department's pseudonym
        and so re-identify its microdata rows.
        """
        dept = self.departments[department]
        direct = (schema.NAME, schema.ID_NUMBER, schema.PHONE)
        if dept.aggregate:
            return False
        return dept.identity == "identity_id" or any(dept.fields.get(f) == "none" for f in direct)

    def rate_limited(self, department: str) -> float:
        """Seconds to wait before ``department`` (any of its tokens) may ask again (0: the
        request may proceed)."""
        limit = self.departments[department].rate_limit or self.policy.rate_limit
        rate = self.settings.rate_per_second or limit.per_second
        burst = self.settings.rate_burst or limit.burst
        return self._buckets.take(department.encode("utf-8"), rate, burst)

    def audit(self, entry: dict) -> None:
        """Append one JSON line to the audit log."""
        if self._audit is None:
            return
        line = json.dumps(entry, ensure_ascii=False, default=str)
        with self._audit_lock:
            self._audit.write(line + "\n")


# ----------------------------------------------------------------------------- the app


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "a body that is not UTF-8 or nested too deeply"},
    401: {"model": ErrorAnswer, "description": "missing or unknown bearer token"},
    403: {"model": ErrorAnswer, "description": "the department's view does not allow this"},
    404: {"model": ErrorAnswer, "description": "no identity with this id in the department's view"},
    413: {"model": ErrorAnswer, "description": "request body over 16 KiB"},
    415: {"model": ErrorAnswer, "description": "body not sent as Content-Type: application/json"},
    422: {"model": ErrorAnswer, "description": "malformed request"},
    429: {"model": ErrorAnswer, "description": "over the department's rate limit (Retry-After)"},
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of one route: what that route can answer, no more (the
    body limit runs before routing, so every route may answer 413)."""
    return {code: _ERROR_RESPONSES[code] for code in sorted({413, *codes})}


# Per route, the errors its handler, dependencies and checks can raise.
ROUTE_ERRORS: dict[str, tuple[int, ...]] = {
    "/healthz": (),  # no token, no parameters
    "/v1/department": (401, 429),
    "/v1/search": (400, 401, 403, 415, 422, 429),
    "/v1/identities/{identity}": (401, 403, 404, 422, 429),
}


class _BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, unparsed.

    Starlette has no body-size setting; counting the streamed chunks catches bodies sent
    without a Content-Length too.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _send_error(send, 413, f"request body over {self.limit} bytes")
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            return await self.app(scope, counted, send)
        except _TooLarge:
            return await _send_error(send, 413, f"request body over {self.limit} bytes")


class _TooLarge(Exception):
    pass


def _bearer_token(request: Request) -> str | None:
    """The token of the request's ``Authorization: Bearer`` header, or None without one
    (for the handlers that run before, or without, the token dependency)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class _Audit:
    """ASGI middleware: one audit line per ``/v1/`` request (time, department, client, method,
    path, status, ms, and what the endpoint put in ``request.state.audit``).

    Plain ASGI rather than ``@app.middleware("http")``: Starlette runs such a middleware's
    every request through a task group and a memory stream, a cost per request the lookup
    service's latency target has no room for. The status is read off the response start;
    a request whose endpoint raised is audited as 500, as the error handler answers it.
    """

    def __init__(self, app, service: LookupService):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        # request.state reads and writes this dict
        state = scope.setdefault("state", {})
        state["department"] = None
        state["audit"] = {}
        status = 500  # what the client gets when the endpoint raises

        async def watched(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            request = Request(scope)
            path = request.url.path
            if path.startswith("/v1/"):
                path = self._logged_path(path)
                client = scope.get("client")
                department = state.get("department")
                if department is None:
                    # refused before the token check ran (405, 404, 413): still say whose
                    # token it was, or a department's mistakes read as a stranger's
                    department = self._token_department(request)
                self.service.audit(
                    {
                        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "department": department,
                        "client": client[0] if client else None,
                        "method": scope["method"],
                        "path": path,
                        "status": status,
                        "ms": round((time.perf_counter() - start) * 1000, 1),
                        **state.get("audit", {}),
                    }
                )

    def _token_department(self, request: Request) -> str | None:
        """The department whose bearer token the request carries, or None (no rate limit
        is charged: the request was refused before the endpoint)."""
        token = _bearer_token(request)
        return None if token is None else authenticate(self.service.tokens, token)

    def _logged_path(self, path: str) -> str:
        """The path as the audit log keeps it: an endpoint's own path, the fetch route's
        template (the id asked for is the line's ``identity``), any other path as a keyed
        hash (anyone, without a token, chooses it: it may hold a resident ID)."""
        if path in _AUDITED_PATHS:
            return path
        if path.startswith(_FETCH_PREFIX) and "/" not in path[len(_FETCH_PREFIX) :]:
            return _FETCH_PREFIX + "{identity}"
        return self.service.audit_hash("path", path)


# paths the audit log names as they are
_AUDITED_PATHS = frozenset({"/v1/search", "/v1/department"})
_FETCH_PREFIX = "/v1/identities/"


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "problems": []}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _DuplicateKey(json.JSONDecodeError):
    """A JSON object naming one key twice (``json.loads`` keeps the last silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` that refuses a repeated key: RFC 8259 says names SHOULD be unique
    and parsers differ on repeats (first, last, error), so a query naming ``name`` twice is
    refused rather than read one way here and another by the client. Raises _DuplicateKey."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {key!r}", "", 0)
        out[key] = value
    return out


class _StrictJSONRequest(Request):
    """A request whose JSON body may not repeat a key (see :func:`_unique_keys`)."""

    async def json(self) -> Any:
        """The parsed body; raises ``json.JSONDecodeError`` (a 422) for a repeated key."""
        if not hasattr(self, "_json"):
            # bytes, as Starlette passes them: json.loads detects UTF-8/16/32 itself
            self._json = json.loads(await self.body(), object_pairs_hook=_unique_keys)
        return self._json


class _StrictJSONRoute(APIRoute):
    """Routes whose handlers read the body through :class:`_StrictJSONRequest` (FastAPI's
    documented way to change how a body is read: a custom route class)."""

    def get_route_handler(self):
        """The route's handler, given the strict request."""
        handler = super().get_route_handler()

        async def strict(request: Request):
            return await handler(_StrictJSONRequest(request.scope, request.receive, request._send))

        return strict


def _problem(err: dict) -> str:
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    msg = err.get("msg", "invalid")
    error = str((err.get("ctx") or {}).get("error", ""))
    if err.get("type") == "json_invalid" and error.startswith("duplicate key"):
        return f"{error} in the body: give each field once"
    if err.get("type") == "json_invalid":
        return f"the body is not valid JSON (at character {err.get('loc', ('', '?'))[-1]})"
    if err.get("type") == "extra_forbidden":
        msg = "unknown field; expected one of " + ", ".join([*QUERY_FIELDS, "top"])
    return f"{where}: {msg}" if where else msg


def create_app(
    settings: ServiceSettings | None = None, service: LookupService | None = None
) -> FastAPI:
    """Build the FastAPI app over a :class:`LookupService` (made from ``settings``).

    Raises ConfigError / InputError when the policy, tokens, store or audit path is bad.
    """
    if service is None:
        if settings is None:
            raise ValueError("give settings or a service")
        service = LookupService(settings)
    # /docs and /redoc from files shipped in fastapi-offline: FastAPI's own pages load them
    # from a public CDN, which a department's intranet cannot reach (the page stays blank)
    app = FastAPIOffline(
        title="linkage lookup service",
        version=_version(),
        description=(
            "Does this person already exist, and what may my department see of them? "
            "Every request carries a department's bearer token; every answer is that "
            "department's view under the sharing policy (the masks and grants of "
            "`linkage export`). Errors are JSON `{\"error\": ..., \"problems\": [...]}`; "
            "each operation lists the ones it can answer. A method a path does not take "
            "answers 405 and an unknown path 404, with the same JSON body."
        ),
        static_url="/docs/assets",
    )
    app.state.service = service
    # routes added below read JSON bodies with unique keys only
    app.router.route_class = _StrictJSONRoute
    # inside the audit middleware (added next, so outer): a refused body is audited too
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(_Audit, service=service)
    bearer = HTTPBearer(auto_error=False, description="the department's token")

    # The dependencies and endpoints are coroutines: FastAPI runs a plain function in a
    # thread, a hop per dependency, endpoint and response check (~1 ms a request measured);
    # a search is CPU work under the GIL either way, and a worker process per core serves.
    async def department(
        request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> str:
        if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
            raise HTTPException(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        found = authenticate(service.tokens, creds.credentials)
        if found is None:
            raise HTTPException(401, "unknown bearer token", {"WWW-Authenticate": "Bearer"})
        request.state.department = found
        wait = service.rate_limited(found)
        if wait > 0:
            raise HTTPException(
                429,
                "too many requests for this department (its tokens share one limit); slow down",
                {"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        return found

    async def identity_view(request: Request, name: Annotated[str, Depends(department)]) -> str:
        dept = service.departments[name]
        if dept.aggregate:
            raise HTTPException(
                403, f"department '{name}' is granted counts only (an aggregated view)"
            )
        return name

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if isinstance(exc.__cause__, _TooLarge):
            # a chunked body (no Content-Length) over the limit: FastAPI wraps the counting
            # middleware's stop in its 400 "error parsing the body"; it is a 413 like any other
            return JSONResponse(
                {"error": f"request body over {MAX_BODY_BYTES} bytes", "problems": []},
                status_code=413,
            )
        if message == "There was an error parsing the body":
            # FastAPI raises this from the parser's own error: say which limit was hit
            cause = exc.__cause__
            if isinstance(cause, RecursionError):
                why = ": JSON nested too deeply"
            elif isinstance(cause, ValueError) and "digits" in str(cause):
                why = ": a number of more than 4,300 digits (Python's limit)"
            elif isinstance(cause, UnicodeDecodeError):
                why = ": not UTF-8"
            else:
                why = ""
            message = (
                f"the body could not be parsed{why}; expected UTF-8 JSON, an object of "
                "search fields with text values"
            )
        return JSONResponse(
            {"error": message, "problems": []},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        # FastAPI reads the body before it runs the token check: answer an unauthenticated
        # request 401 whatever its body, so a stranger learns nothing of the API's checks
        token = _bearer_token(request)
        missing = token is None
        if missing or authenticate(service.tokens, token) is None:
            # the dependency's words: a different text would tell whether the body parsed
            return JSONResponse(
                {
                    "error": "missing bearer token" if missing else "unknown bearer token",
                    "problems": [],
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and not (kind == "application/json" or kind.endswith("+json")):
            return JSONResponse(
                {
                    "error": "send the body as JSON with Content-Type: application/json",
                    "problems": [f"Content-Type is {kind or 'missing'}"],
                },
                status_code=415,
            )
        problems = [_problem(e) for e in exc.errors()]
        return JSONResponse({"error": "malformed request", "problems": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error", "problems": []}, status_code=500)

    @app.get(
        "/healthz",
        tags=["service"],
        summary="Readiness (no authentication)",
        responses=_responses(*ROUTE_ERRORS["/healthz"]),
    )
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/v1/department",
        tags=["lookup"],
        summary="What the calling department is granted",
        response_model=DepartmentAnswer,
        responses=_responses(*ROUTE_ERRORS["/v1/department"]),
    )
    async def whoami(name: Annotated[str, Depends(department)]) -> dict:
        dept = service.departments[name]
        return {
            "department": name,
            "purpose": dept.purpose,
            "identity": dept.identity,
            "fields": dict(dept.fields),
            "sources": dept.sources,
            "record_ids": dept.record_ids,
            "rows": dept.rows,
        }

    @app.post(
        "/v1/search",
        tags=["lookup"],
        summary="Find the stored identities most likely to be this person",
        response_model=SearchAnswer,
        responses=_responses(*ROUTE_ERRORS["/v1/search"]),
    )
    async def search(
        query: SearchQuery, request: Request, name: Annotated[str, Depends(identity_view)]
    ) -> dict:
        given = {k: v for k, v in query.model_dump(exclude={"top"}).items() if v not in (None, "")}
        request.state.audit = {"query": service.audit_values(name, given), "top": query.top}
        if not given:
            raise HTTPException(422, "give at least one of " + ", ".join(QUERY_FIELDS))
        if not service.may_search(name):
            raise HTTPException(
                403,
                f"department '{name}' has a pseudonymous view (no name, ID or phone "
                "unmasked): it may fetch its own ids but not search by person",
            )
        refused = service.refused_query_fields(name, given)
        if refused:
            request.state.audit["refused"] = refused
            raise HTTPException(
                403,
                f"department '{name}' may search only by fields it is granted unmasked; "
                f"not granted unmasked: {', '.join(refused)}",
            )
        answer = service.search(name, query)
        id_col = service.view_id_column(name)
        request.state.audit["results"] = len(answer["hits"])
        request.state.audit["returned"] = [
            h["identity"].get(id_col) for h in answer["hits"] if id_col
        ]
        return answer

    @app.get(
        "/v1/identities/{identity}",
        tags=["lookup"],
        summary="One identity in the department's view",
        response_model=IdentityAnswer,
        responses=_responses(*ROUTE_ERRORS["/v1/identities/{identity}"]),
    )
    async def fetch(
        request: Request,
        identity: Annotated[
            str, PathParam(max_length=100, description="the id as your view shows it")
        ],
        name: Annotated[str, Depends(identity_view)],
    ) -> dict:
        # kept as sent only once it is an id of the department's view: a caller's system
        # may put a resident ID or a phone where the id goes (the policy hashes those)
        raw = (service.departments[name].audit_queries or service.policy.audit_queries) == "raw"
        request.state.audit = {
            "identity": identity if raw else service.audit_hash("identity", identity)
        }
        if service.departments[name].identity == "none":
            raise HTTPException(403, f"department '{name}' is granted no identity ids")
        answer = service.fetch(name, identity)
        if answer is None:
            raise HTTPException(404, "no identity with this id in your department's view")
        request.state.audit["identity"] = identity
        return answer

    return app


def _version() -> str:
    from linkage import __version__

    return str(__version__)


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings from the environment."""
    data = json.loads(os.environ[_SETTINGS_ENV])
    return create_app(ServiceSettings(**data))


def settings_env(settings: ServiceSettings) -> dict[str, str]:
    """The environment a worker process needs to rebuild ``settings``."""
    from dataclasses import asdict

    return {_SETTINGS_ENV: json.dumps(asdict(settings))}


LogLevel = Literal["critical", "error", "warning", "info", "debug"]
# seconds a worker may leave the supervisor's health ping unanswered before it is restarted
WORKER_HEALTHCHECK_SECONDS = 120
LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug")
# one line format for the service's and uvicorn's records: the CLI's, with the process id
# (each worker logs its own start-up)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def log_config(level: LogLevel = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service (uvicorn's ``log_config``): uvicorn's,
    this module's and the store's records at ``level``, one format (LOG_FORMAT) on stderr,
    in the parent and in every worker process. The other linkage modules log at ``debug``
    only when ``level`` is debug, else warnings and above (their INFO lines are per batch
    stage and would repeat on every request). Raises ValueError for an unknown level."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    upper = level.upper()
    others = upper if level in ("debug", "error", "critical") else "WARNING"
    logger_of = {"handlers": ["stderr"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {**logger_of, "level": upper},
            "uvicorn.error": {"level": upper},
            # access lines are off (serve's access_log=False); kept quiet if turned on
            "uvicorn.access": {**logger_of, "level": "WARNING"},
            "linkage": {**logger_of, "level": others},
            "linkage.serve": {"level": upper},
            # the in-memory tables' size and load time, once per worker
            "linkage.store": {"level": upper},
        },
        # any other library's warnings in the same format
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def check_listen(host: str, port: int) -> None:
    """Raise InputError unless ``host:port`` can be listened on now (a port in use, an
    unknown host or an address not on this machine), before the store is loaded."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise InputError(f"cannot listen: {exc}", path=f"{host}:{port}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # as uvicorn does, so a port left in TIME_WAIT by a stopped server is not "in use"
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InputError(
                f"cannot listen: {exc.strerror or exc}", path=f"{host}:{port}"
            ) from None


def check_served_joins(settings: ServiceSettings) -> None:
    """Refuse to serve a department whose view ``linkage export`` refuses: the quasi-identifier
    join check (:func:`linkage.share.export.check_quasi_identifier_joins`) for every
    department holding a token, over the store's golden records. A search or fetch gives
    the same masked view row by row, so without this a policy refused at export (say
    social_security granted ``first6_last4`` next to health's full birth dates) was served,
    and name searches rebuilt full IDs through a join with health's export. Raises
    ConfigError naming both departments and the fields (exit 2). Units: one mask per
    (field, mask) of the departments involved; a district mask parses every golden address
    (about 30 s of CPU per million)."""
    from linkage.share.export import check_quasi_identifier_joins

    policy = load_policy(settings.policy)
    departments = sorted({d for _, d in load_tokens(settings.tokens)} & set(policy.departments))
    with Store.open(settings.store, create=False, read_only=True) as store:
        golden = store.table("golden")
    masked: dict[tuple[str, str], pd.Series] = {}
    for name in departments:
        check_quasi_identifier_joins(golden, policy, name, masked)


def serve(
    settings: ServiceSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: LogLevel = "info",
) -> None:
    """Validate the settings, then run uvicorn until interrupted.

    ``log_level`` sets the service's and uvicorn's log level (:func:`log_config`). Access
    logs are off: request lines could carry personal data, and the audit log records each
    request instead. With ``workers`` > 1 the workers share their token buckets through a
    file in the temporary directory (:func:`rate_limit_file`), removed when uvicorn returns,
    so the policy's rate limit holds per department, not per worker.
    Raises ConfigError / InputError for bad settings or an address that
    cannot be listened on (before the store is loaded or any worker starts), ValueError for
    an unknown ``log_level``.
    """
    import logging.config

    import uvicorn

    config = log_config(log_level)
    # a refused address changes nothing in this process, not even its logging
    check_listen(host, port)
    # the parent's own lines (start-up checks) in the same format as the workers'
    logging.config.dictConfig(config)
    # the views `linkage export` refuses are not served either
    check_served_joins(settings)
    common = dict(
        host=host,
        port=port,
        log_level=log_level,
        log_config=config,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    where = f"http://{host}:{port} (API docs at /docs), audit log {settings.audit}"
    if workers <= 1:
        app = create_app(settings)
        logger.info("lookup service on %s", where)
        uvicorn.run(app, **common)
        return
    # check everything in this process first: a bad token file exits 2 before workers start
    # (without the in-memory tables: each worker loads its own)
    LookupService(dataclasses.replace(settings, in_memory=False)).close()
    logger.info("lookup service on %s, %d workers", where, workers)
    # the workers' token buckets in one file: each keeping its own let a token make
    # `workers` times its rate
    rate_state = rate_limit_file(load_tokens(settings.tokens))
    settings = dataclasses.replace(settings, rate_state=rate_state)
    os.environ.update(settings_env(settings))
    # uvicorn's supervisor kills a worker that does not answer its health ping in 5 s (its
    # default): a worker loading a 1 M store holds the GIL for seconds in single Arrow and
    # numpy calls, and on a machine at load 12 workers were killed and restarted over and
    # over (uvicorn releases before the ping have no such check and no such setting)
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        common["timeout_worker_healthcheck"] = WORKER_HEALTHCHECK_SECONDS
    try:
        uvicorn.run("linkage.serve:app_from_env", factory=True, workers=workers, **common)
    finally:
        os.unlink(rate_state)
