"""Department exports: masks, per-department pseudonymous ids, aggregation, CSV/Parquet output.

Pure functions over the golden-records and links tables; imports schema, errors, io, the
standardizers and share.policy, never the store, the Linker or the CLI.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from linkage import schema
from linkage.errors import ConfigError, InputError
from linkage.io import write_csv, write_parquet
from linkage.share.policy import (
    GRANTABLE_FIELDS,
    MASK_LEVELS,
    DepartmentPolicy,
    SharingPolicy,
    effective_department,
    group_conflicts,
    join_keys,
)
from linkage.standardize.address import parse_address_levels
from linkage.zh.surnames import split_surname

logger = logging.getLogger(__name__)

PSEUDONYM_ID = "pseudonym_id"
SOURCES = "sources"
SOURCE_RECORDS = "source_records"
PERSONS = "persons"
EXPORT_FLAGS = "export_flags"
# key of ``DataFrame.attrs`` where a microdata view records its k-anonymity suppression
K_ANONYMITY = "k_anonymity"


# --- masks: each a function of one text value, run once per distinct value of a column; a
# value that cannot be masked becomes null + a flag ---

_ID_RE = re.compile(r"^\d{17}[\dX]$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_PHONE_RE = re.compile(r"^\d{8,12}$")
_DIGIT_RE = re.compile(r"\d")


def _mask_texts(
    values: list, mask: Callable[[str], str | None]
) -> tuple[list[str | None], list[bool]]:
    """Mask the stripped text of each value (None, NaN and blanks stay null, not failed)
    once per distinct text; return the masked values and whether each failed.

    Plain Python over the values: a lookup's view of a few rows then builds no frames per
    field (pandas' string methods loop in Python over object columns too); a distinct-value
    memo keeps big exports, which repeat values, cheap.
    """
    memo: dict[str, str | None] = {}
    out: list[str | None] = []
    failed: list[bool] = []
    for value in values:
        text = None if _missing(value) else str(value).strip()
        if not text:
            out.append(None)
            failed.append(False)
            continue
        if text in memo:
            masked = memo[text]
        else:
            masked = memo[text] = mask(text)
        out.append(masked)
        failed.append(masked is None)
    return out, failed


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or value != value  # NaN


def _map_text(values: pd.Series, mask: Callable[[str], str | None]) -> tuple[pd.Series, pd.Series]:
    """:func:`_mask_texts` over a column (missing values as ``isna`` reads them)."""
    na = values.isna().to_numpy(dtype=bool)
    out, failed = _mask_texts(
        [None if m else v for v, m in zip(values.tolist(), na, strict=True)], mask
    )
    return (
        pd.Series(out, index=values.index, dtype=object),
        pd.Series(failed, index=values.index, dtype=bool),
    )


def _matching(pattern: re.Pattern, build: Callable[[str], str]) -> Callable[[str], str | None]:
    return lambda text: build(text) if pattern.search(text) else None


def _surname_star(name: str) -> str:
    surname, _ = split_surname(name)
    # minority and Latin names have no surname: keep only the first letter
    return (surname or name[:1]) + "*"


# mask name -> the mask of one stripped, non-empty text (None: cannot be masked)
_TEXT_MASKS: dict[str, Callable[[str], str | None]] = {
    "first6_last4": _matching(_ID_RE, lambda s: s[:6] + "********" + s[-4:]),
    "first6": _matching(_ID_RE, lambda s: s[:6] + "*" * 12),
    # mobiles (11 digits) and landlines with area code: stars keep the length
    "first3_last4": _matching(_PHONE_RE, lambda s: s[:3] + _DIGIT_RE.sub("*", s[3:-4]) + s[-4:]),
    "year": _matching(_DATE_RE, lambda s: s[:4]),
    "year_month": _matching(_DATE_RE, lambda s: s[:7]),
    "surname_only": _surname_star,
}


def _district_texts(values: list, field: str) -> tuple[list[str | None], list[bool]]:
    """Province + city + district of each address (null when none parsed: failed)."""
    text = [None if _missing(v) else (str(v).strip() or None) for v in values]
    given_texts = [t for t in text if t is not None]
    parsed = iter(parse_address_levels(given_texts, field))
    levels = [(None, None, None) if t is None else next(parsed) for t in text]
    out: list[str | None] = []
    failed: list[bool] = []
    for given, names in zip(text, levels, strict=True):
        joined = ""
        for name in names:
            level = "" if name is None or name != name else str(name)  # name != name: NaN
            # cpca repeats the province for municipalities (北京市北京市): keep one
            joined += "" if level == joined else level
        out.append(joined or None)
        failed.append(given is not None and not joined)
    return out, failed


def district_masks(
    values: Sequence, field: str
) -> tuple[np.ndarray, list[tuple[str | None, bool]]]:
    """:func:`mask_list` ``(values, field, "district")`` of many values at once, compactly:
    int32 codes, one per value, into a list of the distinct (masked text, failed) results;
    code 0 is (None, False), a missing value. Each distinct value is parsed once, by the
    same :func:`_district_texts`, so ``table[codes[i]]`` equals ``mask_list([values[i]],
    field, "district")``'s entry. For the lookup service, which masks every golden address
    once at start-up rather than parsing a hit's address through cpca per request (~4 ms).
    Units: none; a million addresses take about 30 s of CPU (measured ~30,000 a second)."""
    distinct = list(dict.fromkeys(v for v in values if not _missing(v)))
    masked, failed = _district_texts(distinct, field)
    table: list[tuple[str | None, bool]] = [(None, False)]
    code_of: dict[tuple[str | None, bool], int] = {(None, False): 0}
    per_value: dict = {}
    for value, text, bad in zip(distinct, masked, failed, strict=True):
        key = (text, bad)
        if key not in code_of:
            code_of[key] = len(table)
            table.append(key)
        per_value[value] = code_of[key]
    codes = np.fromiter(
        (0 if _missing(v) else per_value[v] for v in values), dtype=np.int32, count=len(values)
    )
    return codes, table


def _district(values: pd.Series, field: str) -> tuple[pd.Series, pd.Series]:
    na = values.isna().to_numpy(dtype=bool)
    out, failed = _district_texts(
        [None if m else v for v, m in zip(values.tolist(), na, strict=True)], field
    )
    return (
        pd.Series(out, index=values.index, dtype=object),
        pd.Series(failed, index=values.index, dtype=bool),
    )


def mask_list(values: list, field: str, mask: str) -> tuple[list, list[bool]]:
    """:func:`mask_values` over a plain list (None or NaN for missing): the same masks,
    without a frame, for the lookup service's few rows. Raises ValueError for an unknown mask.
    """
    if mask == "none":
        return [None if _missing(v) else v for v in values], [False] * len(values)
    if mask == "district":
        return _district_texts(values, field)
    if mask not in _TEXT_MASKS:
        raise ValueError(f"unknown mask {mask!r}")
    masked, failed = _mask_texts(values, _TEXT_MASKS[mask])
    if mask == "surname_only":  # every name has a surname or a first letter
        failed = [False] * len(values)
    return masked, failed


def mask_values(values: pd.Series, field: str, mask: str) -> tuple[pd.Series, pd.Series]:
    """Mask one golden-record column; return the masked values and a bool Series of failures.

    Masks: ``none`` (as stored), ``first6_last4`` / ``first6`` (18-character ID numbers,
    GB 11643), ``first3_last4`` (8-12 digit phones), ``year`` / ``year_month``
    (``YYYY-MM-DD`` dates), ``surname_only`` (``zh.surnames``), ``district`` (province, city
    and district parsed by the address standardizer). Raises ValueError for another mask.
    """
    values = values.reset_index(drop=True)
    if mask == "none":
        return values.astype(object).where(values.notna(), None), pd.Series(
            False, index=values.index
        )
    if mask == "district":
        return _district(values, field)
    if mask not in _TEXT_MASKS:
        raise ValueError(f"unknown mask {mask!r}")
    masked, failed = _map_text(values, _TEXT_MASKS[mask])
    if mask == "surname_only":  # every name has a surname or a first letter
        failed = pd.Series(False, index=values.index)
    return masked, failed


def pseudonymize(identity_ids: pd.Series, key: bytes) -> pd.Series:
    """Keyed HMAC-SHA256 of each identity id (20 hex characters), stable for one key."""
    codes, uniques = pd.factorize(identity_ids.astype(str))
    digests = np.array(
        [hmac.digest(key, u.encode("utf-8"), "sha256")[:10].hex() for u in uniques],
        dtype=object,
    )
    return pd.Series(digests[codes], index=identity_ids.index)


def department_key(master: bytes, department: str) -> bytes:
    """The pseudonym key of one department: HMAC-SHA256(master, department name)."""
    return hmac.digest(master, f"linkage-pseudonym/{department}".encode(), "sha256")


# Link tables up to this many rows are joined in pandas (the lookup service's few hits).
_SMALL_LINKS = 2000
# Fixed SQL over a frame with fixed column names: no values are pasted into it.
_RECORDS_SQL = (
    "select i, array_to_string(list_sort(list(s || ':' || r)), '|') as v from links group by i"
)


def _link_columns(
    ids: pd.Series, links: pd.DataFrame, dept: DepartmentPolicy
) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """Registry names and ``source:record_id`` lists per identity, and who has own records."""
    needed = {schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID}
    missing = needed - set(links.columns)
    if missing:
        raise InputError(f"links table lacks columns {sorted(missing)}")
    key = ids.astype(str).reset_index(drop=True)
    owner = links[schema.IDENTITY_ID].astype(str).to_numpy()
    source = links[schema.SOURCE].astype(str).to_numpy()
    # registry names as a bit mask per identity, then one string per distinct mask
    names = sorted(set(source))
    bits = pd.Series(source).map({n: 1 << i for i, n in enumerate(names)}).to_numpy(np.int64)
    masks = (
        pd.DataFrame({"i": owner, "b": bits}).drop_duplicates().groupby("i", sort=False)["b"].sum()
    )
    text = {m: "|".join(n for i, n in enumerate(names) if m >> i & 1) for m in pd.unique(masks)}
    sources = key.map(masks.map(text)).astype(object)
    own = np.isin(source, dept.own_sources)
    has_own = key.isin(pd.unique(owner[own])).to_numpy()
    records = pd.Series([None] * len(key), dtype=object)
    if dept.record_ids != "none":
        keep = own if dept.record_ids == "own" else np.ones(len(source), dtype=bool)
        frame = pd.DataFrame(
            {
                "i": owner[keep],
                "s": source[keep],
                "r": links[schema.RECORD_ID].astype(str).to_numpy()[keep],
            }
        )
        if len(frame) <= _SMALL_LINKS:
            # a lookup's few identities: starting an in-memory DuckDB costs ~20-60 ms
            text = (frame["s"] + ":" + frame["r"]).sort_values()  # code points = UTF-8 bytes
            joined = text.groupby(frame["i"].reindex(text.index)).agg("|".join)
        else:
            # DuckDB joins a million identities' record lists in about a second; pandas ten
            con = duckdb.connect()
            try:
                con.register("links", frame)
                joined = con.execute(_RECORDS_SQL).df().set_index("i")["v"]
            finally:
                con.close()
        records = key.map(joined).astype(object)
    return sources.where(sources.notna(), None), records.where(records.notna(), None), has_own


def _pseudonym_key(policy: SharingPolicy, key: bytes | None, *, required: bool = True) -> bytes:
    if key:
        return key
    text = os.environ.get(policy.pseudonym_key_env, "")
    if text:
        return text.encode("utf-8")
    if not required:
        return b""
    raise ConfigError(
        f"pseudonymous ids need a key: export from an identity store (it holds one) or set "
        f"the environment variable {policy.pseudonym_key_env}",
        path=str(policy.source_path) if policy.source_path else None,
        key="pseudonym_key_env",
    )


def is_microdata(dept: DepartmentPolicy) -> bool:
    """A pseudonymous identity view without name, full ID or phone (statistical microdata)."""
    direct = (schema.NAME, schema.ID_NUMBER, schema.PHONE)
    return (
        not dept.aggregate
        and dept.identity != "identity_id"
        and not any(dept.fields.get(f) == "none" for f in direct)
    )


def _k_anonymize(view: pd.DataFrame, k: int) -> pd.DataFrame:
    """Every combination of a microdata view's fields held by at least ``k`` rows (the
    policy's min_cell): rows in smaller cells lose ``sources`` first, then every field, and
    are flagged ``k_anonymity_suppressed``. Otherwise the view gives the exact count of each
    cell an aggregate withholds, and singles out whoever is alone in a cell."""
    view = view.copy()
    keys = [c for c in view.columns if c not in (PSEUDONYM_ID, schema.IDENTITY_ID, EXPORT_FLAGS)]
    if not keys or k <= 1:
        return view
    suppressed = np.zeros(len(view), dtype=bool)
    blanked = dict.fromkeys(keys, 0)
    for drop in ([SOURCES] if SOURCES in keys else []) + [None]:
        size = view[keys].fillna("\x00").groupby(keys, sort=False)[keys[0]].transform("size")
        small = (size < k).to_numpy()
        if not small.any():
            break
        suppressed |= small
        columns = [drop] if drop else keys
        for column in columns:
            blanked[column] += int(view.loc[small, column].notna().sum())
        view.loc[small, columns] = None
    flags = view[EXPORT_FLAGS].astype(object).to_numpy()
    view[EXPORT_FLAGS] = np.where(
        suppressed,
        np.where(flags == "", "", flags + schema.QUALITY_SEP) + "k_anonymity_suppressed",
        flags,
    )
    view.attrs[K_ANONYMITY] = {
        "min_cell": k,
        "rows": int(suppressed.sum()),
        "blanked": {c: n for c, n in blanked.items() if n},
    }
    return view


def k_anonymity_warning(view: pd.DataFrame, department: str) -> str | None:
    """A warning when k-anonymity suppression emptied most of an export, else None.

    Reads what :func:`export_view` recorded in ``view.attrs["k_anonymity"]`` (microdata
    views only): the rows suppressed and, per column, the values blanked. When a column lost
    more than half of its values (a cell of its fields held fewer than ``min_cell``
    identities), the file is written but mostly empty, so the line names every blanked
    column with the share of its values blanked, and the rows suppressed.
    """
    report = view.attrs.get(K_ANONYMITY)
    if not report or not report["rows"]:
        return None
    shares = {}
    for column, n in report["blanked"].items():
        kept = int(view[column].notna().sum()) if column in view.columns else 0
        shares[column] = n / (n + kept)
    if not shares or max(shares.values()) <= 0.5:
        return None
    rows = report["rows"]
    listed = ", ".join(f"{c} {share:.0%}" for c, share in shares.items())
    # record ids are unique per identity: a cell holding them holds one row
    hint = (
        "; source_records (record ids) make every row its own cell: grant record_ids: none"
        if SOURCE_RECORDS in shares
        else ""
    )
    return (
        f"export for '{department}': k-anonymity (min_cell {report['min_cell']}) suppressed "
        f"{rows:,} of {len(view):,} rows ({rows / len(view):.0%}), blanking these shares of "
        f"each column's values: {listed}; the file is mostly empty. Coarser masks or fewer "
        f"granted fields give larger cells (docs/privacy.md, 'Microdata and aggregates'){hint}"
    )


def row_order(identity_ids: pd.Series, master: bytes, department: str) -> np.ndarray:
    """Positions that put one department's rows in its own keyed order (a per-department shuffle).

    Rows sorted by HMAC(department's key, identity id) follow no order another department, a
    record id or a registration number could predict, so two exports cannot be joined by row
    number (the order of golden records is that of each identity's smallest record id).
    """
    order_key = hmac.digest(department_key(master, department), b"row-order", "sha256")
    keys = pseudonymize(identity_ids.reset_index(drop=True), order_key)
    return np.argsort(keys.to_numpy(dtype=str), kind="stable")


def export_view(
    golden: pd.DataFrame,
    links: pd.DataFrame,
    policy: SharingPolicy,
    department: str,
    *,
    key: bytes | None = None,
    keyed_order: bool = True,
    districts: Mapping[str, Sequence[tuple[str | None, bool]]] | None = None,
) -> pd.DataFrame:
    """One department's view of the golden records: granted fields only, masked, checked.

    ``key``: master key of pseudonyms (else ``$LINKAGE_PSEUDONYM_KEY``; the CLI passes the store's).
    Rows of identity views come in the department's own keyed order (:func:`row_order`);
    without any key, views with the shared ``identity_id`` are sorted by it instead (it is a
    keyed hash too). ``keyed_order=False`` keeps the input order (the lookup service's hits,
    ranked by match weight). ``districts``: per address field, the ``district`` mask of each
    golden row in order (``mask_list``'s (masked, failed), e.g. from :func:`district_masks`),
    used instead of parsing the addresses again. Columns: the identity (``identity_id`` or ``pseudonym_id``), each granted field under its
    own name, ``sources`` / ``source_records`` where granted, and ``export_flags`` naming fields
    whose value could not be masked (left null). Aggregated views give ``persons`` per cell.
    A microdata view (:func:`is_microdata`) records its k-anonymity suppression in
    ``attrs["k_anonymity"]``: ``min_cell``, ``rows`` suppressed and ``blanked`` values per
    column (read by :func:`k_anonymity_warning`).
    """
    dept = effective_department(policy, department)
    if schema.IDENTITY_ID not in golden.columns:
        raise InputError(f"golden records lack the column '{schema.IDENTITY_ID}'")
    golden = golden.reset_index(drop=True)
    ids = golden[schema.IDENTITY_ID]
    sources = records = None
    given = dict(districts or {})
    if any(len(masks) != len(golden) for masks in given.values()):
        raise ValueError("districts must hold one mask per golden row")
    if dept.sources or dept.record_ids != "none" or dept.rows == "own":
        sources, records, keep = _link_columns(ids, links, dept)
        if dept.rows == "own":
            rows = np.flatnonzero(np.asarray(keep, dtype=bool)).tolist()
            given = {f: [masks[i] for i in rows] for f, masks in given.items()}
            golden, ids = golden[keep].reset_index(drop=True), ids[keep].reset_index(drop=True)
            sources, records = (
                sources[keep].reset_index(drop=True),
                records[keep].reset_index(drop=True),
            )
    # columns gathered first, one frame built at the end: a lookup's view of a few rows then
    # costs no per-column frame inserts
    out: dict[str, np.ndarray] = {}
    if dept.identity == "identity_id":
        out[schema.IDENTITY_ID] = ids.to_numpy()
    elif dept.identity == "pseudonym":
        master = _pseudonym_key(policy, key)
        out[PSEUDONYM_ID] = pseudonymize(ids, department_key(master, department)).to_numpy()
    unmaskable: list[tuple[str, np.ndarray]] = []
    for field in GRANTABLE_FIELDS:
        mask = dept.fields.get(field)
        if mask is None:
            continue
        column = golden[field] if field in golden.columns else pd.Series([None] * len(golden))
        if mask == "district" and field in given:
            masked = pd.Series([m for m, _ in given[field]], dtype=object)
            failed = pd.Series([f for _, f in given[field]], dtype=bool)
        else:
            masked, failed = mask_values(column, field, mask)
        out[field] = masked.to_numpy()
        failed = failed.to_numpy(dtype=bool)
        if failed.any():
            unmaskable.append((field, failed))
    if dept.sources:
        out[SOURCES] = sources.to_numpy()
    if dept.record_ids != "none":
        out[SOURCE_RECORDS] = records.to_numpy()
    flags = np.full(len(golden), "", dtype=object)
    for field, failed in unmaskable:
        flags[failed] = (
            flags[failed]
            + np.where(flags[failed] == "", "", schema.QUALITY_SEP)
            + f"{field}_unmaskable"
        )
    out[EXPORT_FLAGS] = flags
    out = pd.DataFrame(out, index=golden.index)
    if dept.aggregate:
        return _aggregate(out.drop(columns=[EXPORT_FLAGS]), policy.min_cell)
    if is_microdata(dept):
        out = _k_anonymize(out, policy.min_cell)
    master = _pseudonym_key(policy, key, required=dept.identity != "identity_id")
    if keyed_order:
        if master:
            order = row_order(ids, master, department)
        else:
            order = np.argsort(ids.astype(str).to_numpy(dtype=str), kind="stable")
        attrs = dict(out.attrs)
        out = out.iloc[order].reset_index(drop=True)
        out.attrs = attrs  # the k-anonymity report, whatever pandas does with attrs
    logger.info("export for %s: %d identities, columns %s", department, len(out), list(out.columns))
    return out


def view_rows(
    golden: list[dict],
    links: list[tuple[str, str, str]],
    policy: SharingPolicy,
    department: str,
    *,
    key: bytes | None = None,
    districts: Mapping[str, Sequence[tuple[str | None, bool]]] | None = None,
) -> list[dict]:
    """:func:`export_view` with ``keyed_order=False`` for a few rows, without frames.

    ``golden``: one dict per identity (``identity_id`` and any of the grantable fields; an
    absent field reads as null); ``links``: (source, record_id, identity_id) tuples of these
    identities. Returns one dict per visible identity, in input order, with the columns and
    values ``export_view`` gives (missing values None). For the lookup service, where a
    view of five hits through frames cost ~10 ms; the equality with ``export_view`` over
    every shipped department is tested. ``districts``: per address field, the ``district``
    mask of each golden row (``mask_list``'s (masked, failed), e.g. from
    :func:`district_masks`), used instead of parsing the address again. Raises ValueError for an aggregated or microdata
    department (their views depend on every row: use ``export_view``), ConfigError as
    ``export_view`` does.
    """
    dept = effective_department(policy, department)
    if dept.aggregate or is_microdata(dept):
        raise ValueError(f"department '{department}' has no per-identity lookup view")
    ids = [str(g[schema.IDENTITY_ID]) for g in golden]
    sources: dict[str, set[str]] = {}
    records: dict[str, list[str]] = {}
    own: set[str] = set()
    for source, record_id, owner in links:
        source, owner = str(source), str(owner)
        sources.setdefault(owner, set()).add(source)
        mine = source in dept.own_sources
        if mine:
            own.add(owner)
        if dept.record_ids == "all" or (dept.record_ids == "own" and mine):
            records.setdefault(owner, []).append(f"{source}:{record_id}")
    keep = [i for i, ident in enumerate(ids) if dept.rows != "own" or ident in own]
    golden = [golden[i] for i in keep]
    given = {f: [masks[i] for i in keep] for f, masks in (districts or {}).items()}
    ids = [ids[i] for i in keep]
    columns: dict[str, list] = {}
    if dept.identity == "identity_id":
        columns[schema.IDENTITY_ID] = [g[schema.IDENTITY_ID] for g in golden]
    elif dept.identity == "pseudonym":
        pkey = department_key(_pseudonym_key(policy, key), department)
        columns[PSEUDONYM_ID] = [
            hmac.digest(pkey, ident.encode("utf-8"), "sha256")[:10].hex() for ident in ids
        ]
    flags: list[list[str]] = [[] for _ in golden]
    for field in GRANTABLE_FIELDS:
        mask = dept.fields.get(field)
        if mask is None:
            continue
        if mask == "district" and field in given:
            masked = [text for text, _ in given[field]]
            failed = [bad for _, bad in given[field]]
        else:
            masked, failed = mask_list([g.get(field) for g in golden], field, mask)
        columns[field] = masked
        for row_flags, bad in zip(flags, failed, strict=True):
            if bad:
                row_flags.append(f"{field}_unmaskable")
    if dept.sources:
        columns[SOURCES] = ["|".join(sorted(sources[i])) if i in sources else None for i in ids]
    if dept.record_ids != "none":
        # code point order, as export_view sorts the "source:record_id" texts
        columns[SOURCE_RECORDS] = [
            "|".join(sorted(records[i])) if i in records else None for i in ids
        ]
    columns[EXPORT_FLAGS] = [schema.QUALITY_SEP.join(f) for f in flags]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _aggregate(view: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    keys = list(view.columns)
    if keys:
        counts = view.fillna("").groupby(keys, sort=True).size().rename(PERSONS).reset_index()
        counts[keys] = counts[keys].replace("", None)
    else:
        counts = pd.DataFrame({PERSONS: [len(view)]})
    small = counts[PERSONS] < min_cell
    # small cells single people out; their count is withheld, the row kept and flagged
    counts[PERSONS] = counts[PERSONS].astype("Int64").mask(small)
    counts[EXPORT_FLAGS] = np.where(small, "small_cell_suppressed", "")
    return counts


def quasi_identifier_joins(
    golden: pd.DataFrame,
    policy: SharingPolicy,
    department: str,
    masked: dict[tuple[str, str], pd.Series] | None = None,
) -> list[tuple[str, list[str], float]]:
    """Departments whose export joins ``department``'s on the fields both are granted.

    For each other identity view, the shared fields are masked at the coarser of the two
    masks (what both exports can compute); when that combination is unique for more than
    ``policy.quasi_identifier_share`` of the identities in ``golden`` (the data exported),
    it is a join key. Returns (other department, shared fields, unique share) per such join.
    Names, birth dates and ID prefixes together are unique for nearly everyone, so this
    measures what the field-by-field check cannot know. ``masked``: a dict kept between calls
    over the same ``golden`` (field, mask) -> masked column, so that checking several
    departments masks each column once (a district mask parses every address).
    """
    mine = effective_department(policy, department)
    out: list[tuple[str, list[str], float]] = []
    if mine.aggregate or golden.empty:
        return out
    for other in policy.departments:
        theirs = effective_department(policy, other)
        if other == department or theirs.aggregate:
            continue
        shared = [f for f in GRANTABLE_FIELDS if f in mine.fields and f in theirs.fields]
        if not shared:
            continue
        key = pd.Series("", index=golden.index, dtype=object)
        complete = np.ones(len(golden), dtype=bool)
        for f in shared:
            levels = MASK_LEVELS[f]
            mask = levels[min(levels.index(mine.fields[f]), levels.index(theirs.fields[f]))]
            cache = {} if masked is None else masked
            if (f, mask) not in cache:
                column = golden[f] if f in golden.columns else pd.Series([None] * len(golden))
                cache[(f, mask)] = mask_values(column, f, mask)[0]
            values = cache[(f, mask)]
            complete &= values.notna().to_numpy()
            key = key + "\x1f" + values.astype(str).to_numpy()
        counts = key[complete].map(key[complete].value_counts())
        share = float((counts == 1).sum()) / len(golden)
        if share > policy.quasi_identifier_share:
            out.append((other, shared, share))
    return out


def check_quasi_identifier_joins(
    golden: pd.DataFrame,
    policy: SharingPolicy,
    department: str,
    masked: dict[tuple[str, str], pd.Series] | None = None,
) -> None:
    """Refuse an export that a quasi-identifier join with another department's export would
    take beyond what any of the two is granted (the ID rebuilt from its masked form and a
    full birth date, for example). Raises ConfigError naming both departments and fields.
    ``masked``: as :func:`quasi_identifier_joins`. The lookup service runs it too, for every
    department holding a token, before it starts (it serves the same views)."""
    problems = []
    for other, shared, share in quasi_identifier_joins(golden, policy, department, masked):
        keys = [f"their shared fields ({', '.join(shared)}; unique for {share:.0%})"]
        keys += join_keys(policy, department, other)
        problems.extend(group_conflicts(policy, [department, other], keys))
    if problems:
        raise ConfigError(
            "; ".join(problems),
            path=str(policy.source_path) if policy.source_path else None,
            key=f"departments.{department}.fields",
        )


def check_own_sources(
    store_sources: Iterable[str], policy: SharingPolicy, department: str
) -> list[str]:
    """Check that the registries a department's grant calls its own are in the store.

    ``store_sources``: the source names of the store's records (``links.source``). Applies
    where the grant uses ``own_sources`` (``record_ids: own`` or ``rows: own``). When none
    of them is in the store, the export would have no own record ids or no rows at all: a
    policy written for other source names (``gongan`` in the store, ``police`` in the
    policy) would give an export that looks fine and is useless, so this raises ConfigError
    naming the policy's sources and the store's (exit 2). When only some are missing (a
    registry not yet ingested), returns one warning line naming them; else an empty list.
    """
    dept = effective_department(policy, department)
    uses = [
        what
        for what, used in (
            ("record_ids: own", dept.record_ids == "own"),
            ("rows: own", dept.rows == "own"),
        )
        if used
    ]
    if not uses:
        return []
    held = sorted({str(s) for s in store_sources})
    missing = [s for s in dept.own_sources if s not in held]
    if not missing:
        return []
    holds = f"it holds {', '.join(held)}" if held else "it holds no records"
    if len(missing) < len(dept.own_sources):
        present = [s for s in dept.own_sources if s not in missing]
        return [
            f"department '{department}': own_sources {', '.join(missing)} not in the store "
            f"({holds}); the export has the records of {', '.join(present)} only"
        ]
    empty = "no rows" if dept.rows == "own" else "no own record ids (source_records empty)"
    raise ConfigError(
        f"department '{department}' ({' and '.join(uses)}): own_sources "
        f"[{', '.join(dept.own_sources)}] names no source of this identity store ({holds}), "
        f"so its export would have {empty}; name the store's source(s) under "
        f"departments.{department}.own_sources in a copy of the policy and pass it with "
        "--policy (a run config's department: key does not count)",
        path=str(policy.source_path) if policy.source_path else None,
        key=f"departments.{department}.own_sources",
    )


def write_export(frame: pd.DataFrame, path: str | Path, bom: bool = False) -> Path:
    """Write an export atomically: Parquet for ``.parquet`` (raw), else UTF-8 CSV with formula
    cells neutralized for spreadsheets (``io.neutralize_formulas``) and every text cell quoted
    (a ``;`` inside a cell cannot start a new one where ``;`` separates lists); ``bom``: the
    CSV starts with a UTF-8 byte-order mark, for Excel on Chinese Windows."""
    path = Path(path)
    if frame.attrs:
        # pandas writes attrs into Parquet metadata: the export holds its rows and nothing else
        frame = frame.copy(deep=False)
        frame.attrs = {}
    if path.suffix.lower() == ".parquet":
        return write_parquet(frame, path)
    if path.suffix.lower() not in (".csv", ".txt"):
        raise InputError("export file must end in .csv or .parquet", path=str(path))
    return write_csv(frame, path, quote_text=True, bom=bom)
