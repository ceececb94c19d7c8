"""Search: rank the stored identities for one record, with explanations.

Everything (comparisons, blocking rules, standardize options, term frequencies) comes from
the stored model's settings, so a query is standardized and keyed as the batch was.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import DERIVED_KEYS, key_hashes, key_input_present, record_rule_keys
from linkage.compare import compare_values
from linkage.compare.stored import NullSide, StoredSide, side_type, stored_side
from linkage.incremental._common import StoredRun, stored_run
from linkage.schema import GAMMA_PREFIX, MW_PREFIX
from linkage.standardize.combine import standardize_record_values
from linkage.store import Store

logger = logging.getLogger(__name__)

# source and record_id of the query record inside the compared table
QUERY_SOURCE = "__query__"


@dataclass
class _Setup:
    run: StoredRun
    columns: list[str]  # stored record columns the comparisons and tf read
    wanted: frozenset[str] = frozenset()  # the same, as a set


def _setup(store: Store) -> _Setup:
    run = stored_run(store)
    columns = [schema.SOURCE, schema.RECORD_ID, *run.term_frequency.values()]
    for c in run.comparisons:
        columns += list(c.columns)
    return _Setup(run=run, columns=list(dict.fromkeys(columns)), wanted=frozenset(columns))


# Query fields and the standardized column holding their readable value: a given value
# whose column stays null could not be read (addresses always compare as free text).
_READ_COLUMNS: dict[str, str] = {
    schema.NAME: schema.name_col(schema.NAME, "clean"),
    schema.FORMER_NAME: schema.name_col(schema.FORMER_NAME, "clean"),
    schema.ID_NUMBER: schema.ID_STD,
    schema.BIRTH_DATE: schema.BIRTH_DATE_STD,
    schema.REGISTERED_AT: schema.REGISTERED_AT_STD,
    schema.GENDER: schema.GENDER_STD,
    schema.ETHNICITY: schema.ETHNICITY_STD,
    schema.PHONE: schema.PHONE_STD,
    schema.HUKOU_ADDRESS: schema.HUKOU_ADDRESS,
    schema.CURRENT_ADDRESS: schema.CURRENT_ADDRESS,
}
# Lookups by one field when no blocking rule finds a candidate (a name alone, a birth date
# alone): (stored column, query column) pairs, any of which may agree.
_SINGLE_FIELD: dict[str, tuple[tuple[str, str], ...]] = {
    schema.NAME: (
        (schema.name_col(schema.NAME, "clean"), schema.name_col(schema.NAME, "clean")),
        # homophones typed through a pinyin input method (张伟 / 章伟) share the pinyin
        (schema.name_col(schema.NAME, "pinyin"), schema.name_col(schema.NAME, "pinyin")),
    ),
    schema.BIRTH_DATE: (
        (schema.BIRTH_DATE_STD, schema.BIRTH_DATE_STD),
        (schema.ID_BIRTH_DATE, schema.BIRTH_DATE_STD),
    ),
}
# golden-record columns a hit carries
_GOLDEN_COLUMNS = [*schema.CANONICAL_FIELDS, "records"]
# A single-field lookup matching more stored records than this is not selective enough to
# rank: the report says so and asks for another field.
SINGLE_FIELD_LIMIT = 200


@dataclass
class SearchReport:
    """A search's answer and why it is what it is.

    ``hits``: as :func:`search` returns them. ``fields``: per query field given, whether its
    value could be read (``usable``) and the quality flags its standardizer raised (code and
    meaning, e.g. ``id_checksum``). ``ignored``: record keys that are not record fields.
    ``rules``: per blocking rule, ``status`` (``searched``, ``too_large``, ``missing_keys``, or
    ``not_applicable`` when the fields are given but yield no key, e.g. a Han name has no
    minority-name head),
    its ``keys``, the ``missing`` keys and the query ``fields`` that would supply them, and
    the stored ``records`` sharing the key. ``single_field``: the lookup by a name or a
    birth date alone, when no rule found a candidate (``field``, ``records``, ``limit``,
    ``status``: ``searched`` or ``too_common``). ``message``: one sentence for an empty or
    fallback answer ("" otherwise).
    """

    hits: list[dict]
    fields: dict[str, dict] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    rules: list[dict] = field(default_factory=list)
    single_field: dict | None = None
    message: str = ""


def _key_fields(key: str) -> list[str]:
    """Query fields that can supply a blocking key (for the report's hints)."""
    if key.startswith("id_"):
        return [schema.ID_NUMBER]
    if key.startswith("birth"):
        return [schema.BIRTH_DATE, schema.ID_NUMBER]
    for f in (schema.NAME, schema.PHONE, schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS):
        if key.startswith(f):
            return [f]
    return [key]


@functools.cache
def _flag_meanings() -> dict[str, str]:
    from linkage.standardize.combine import all_flags

    return all_flags()


def _absent(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v == ""


def _field_report(raw: dict, row: dict, flags: dict[str, str]) -> dict[str, dict]:
    meanings = _flag_meanings()
    out = {}
    for f, value in raw.items():
        if f not in _READ_COLUMNS or value in (None, ""):
            continue
        v = row.get(_READ_COLUMNS[f])
        if f == schema.ID_NUMBER and _absent(v):
            v = row.get(schema.ID_DOC)  # a permit or passport number: searched as one
        usable = not _absent(v)
        codes = [c for c in flags.get(f, "").split(schema.QUALITY_SEP) if c]
        out[f] = {
            "usable": usable,
            "flags": [{"code": c, "meaning": meanings.get(c, c)} for c in codes],
        }
    return out


def _empty_message(report: SearchReport) -> str:
    usable = [f for f, d in report.fields.items() if d["usable"]]
    if not report.fields:
        return (
            "the query has no record field: give a name, id_number, birth_date, phone or "
            "address (" + ", ".join(_READ_COLUMNS) + ")"
        )
    if not usable:
        why = "; ".join(
            f"{f}: " + (", ".join(x["meaning"] for x in d["flags"]) or "no readable value")
            for f, d in report.fields.items()
        )
        return f"no field of the query could be read ({why})"
    single = report.single_field
    if single and single["status"] == "too_common":
        return (
            f"{single['field']} alone matches more than {single['limit']} stored records, too "
            "many to rank: add a birth date, phone or ID number"
        )
    searched = [r for r in report.rules if r["status"] in ("searched", "too_large")]
    if not searched and single is None:
        return (
            f"{', '.join(usable)} alone cannot find a person: no blocking rule has all its keys "
            "and only a name or a birth date is looked up alone; add a name, ID number, "
            "birth date or phone"
        )
    if not searched:
        return f"no stored record has this {single['field']}"
    tried = ", ".join(r["rule"] for r in searched)
    text = f"no stored record shares a blocking key with the query (rules tried: {tried})"
    if single is not None:
        text += f", nor the {single['field']} alone"
    return text


def search_report(
    store: Store,
    record: dict[str, Any],
    top: int = 5,
    *,
    single_field_limit: int = SINGLE_FIELD_LIMIT,
    only: frozenset[str] | set[str] | None = None,
    blind: frozenset[str] = frozenset(),
) -> SearchReport:
    """Rank stored identities for one record and say what was searched and why.

    ``record`` maps canonical field names (``name``, ``id_number``, ``birth_date``, ``phone``,
    ``gender``, ``hukou_address``, ``current_address``, ...) to raw values; other keys are
    reported in ``ignored``. Candidates come from the store's blocking-key index (the rules
    of the stored model's batch; a block over ``max_block_size`` is skipped as in the
    batch); when no rule yields one, a name alone or a birth date alone is looked up when
    at most ``single_field_limit`` stored records share it. ``only``: identity ids that may
    be ranked (the lookup service's ``rows: own`` view); candidates of other identities are
    dropped before any comparison, so the search costs what it costs for a store without
    them. ``blind``: stored record columns this search reads as null (the lookup service's
    columns over fields a department may not see: its answers then depend on nothing else),
    in the comparisons and in the single-field lookup. Raises ``InputError`` when the store
    holds no model, ``ValueError`` when ``top`` < 1.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    setup: _Setup = store.memo("search", lambda: _setup(store))
    run = setup.run
    raw = {
        k: (None if v is None else str(v).strip())
        for k, v in record.items()
        if k in schema.MAPPABLE_FIELDS
    }
    raw = {k: v for k, v in raw.items() if v}
    report = SearchReport(
        hits=[], ignored=sorted(str(k) for k in record if k not in schema.MAPPABLE_FIELDS)
    )
    raw[schema.SOURCE] = QUERY_SOURCE
    raw[schema.RECORD_ID] = QUERY_SOURCE
    flags: dict[str, str] = {}
    # one record: plain dicts (the frames of the table path cost more than the work)
    row = standardize_record_values(raw, run.standardize, flags=flags)
    report.fields = _field_report(raw, row, flags)
    blocking = run.blocking
    limit = blocking.max_block_size
    rule_keys = record_rule_keys(row, blocking)
    hashes = sorted({int(v) for v in rule_keys.values() if not isinstance(v, list)})
    # records per key, by numpy: a few hundred rows, where a group-by costs ~1 ms
    found_h, found_rk = store.rk_hashes(hashes)
    key_values, key_counts = np.unique(found_h, return_counts=True)
    sizes = dict(zip(key_values.tolist(), key_counts.tolist(), strict=True))
    for rule in blocking.rules:
        key = rule_keys.get(rule.name)
        entry: dict = {"rule": rule.name, "keys": list(rule.keys)}
        if isinstance(key, list):
            fields = list(dict.fromkeys(f for k in key for f in _key_fields(k)))
            # given and readable, yet no key: e.g. a Han name has no minority-name head
            given = all(report.fields.get(_key_fields(k)[0], {}).get("usable") for k in key)
            status = "not_applicable" if given else "missing_keys"
            entry.update(status=status, missing=key, fields=fields, records=0)
        else:
            n = int(sizes.get(key, 0))
            entry.update(status="too_large" if n > limit else "searched", records=n)
        report.rules.append(entry)
    # a block the batch would skip (over max_block_size) is skipped here too
    rks = np.array([], np.int64)
    if len(found_h):
        in_limit = key_counts[np.searchsorted(key_values, found_h)] <= limit
        if blind:
            in_limit &= _found_by_visible_keys(store, blocking, rule_keys, found_h, found_rk, blind)
        rks = np.unique(found_rk[in_limit])
    if only is not None:
        # as if the store held only these identities: none left falls back as none found
        rks = _only(store, rks, only)
    if len(rks) == 0:
        rks = _single_field_lookup(store, row, report, single_field_limit, blind)
        if only is not None:
            rks = _only(store, rks, only)
    if len(rks) == 0:
        report.message = _empty_message(report)
        return report
    cands = store.candidate_columns(rks, _candidate_columns(store, setup))
    if report.single_field is not None:
        single = report.single_field
        people = len(set(cands[schema.IDENTITY_ID].tolist()))
        report.message = (
            f"no blocking rule found a candidate; ranked the {single['records']} stored "
            f"records ({people} {'identity' if people == 1 else 'identities'}) sharing the "
            f"{single['field']} alone"
        )
    report.hits = _rank(store, setup, row, cands, top, blind)
    return report


def _candidate_columns(store: Store, setup: _Setup) -> list[str]:
    """The record columns a search reads of its candidates: all comparison and
    term-frequency columns, or, where comparisons have a stored side (prepared at load),
    only the others' columns, the term-frequency ones and the record keys."""
    variants: dict[frozenset[str], dict[str, StoredSide]] = store.memo(_SIDES, dict)
    sides = next(iter(variants.values()), {})  # every variant has the same comparisons
    if not sides:
        return setup.columns
    run = setup.run
    needed = {schema.SOURCE, schema.RECORD_ID, *run.term_frequency.values()}
    for comparison in run.comparisons:
        if comparison.name not in sides:
            needed.update(comparison.columns)
    return [c for c in setup.columns if c in needed]


def _only(store: Store, rks: np.ndarray, only: frozenset[str] | set[str]) -> np.ndarray:
    """The row keys whose record belongs to one of the identities ``only``."""
    if len(rks) == 0:
        return rks
    owners = store.owners_by_rk(rks)
    return np.array([rk for rk in rks.tolist() if owners.get(int(rk)) in only], np.int64)


def hold_search_tables(store: Store, blinds: Iterable[frozenset[str]] = (frozenset(),)) -> bool:
    """Keep the tables a search reads (candidate records of the comparison columns, links,
    golden records, blocking-key index) in memory until the store's next write
    (:meth:`Store.hold`), and prepare every held record's side of each comparison once
    (``compare.stored``: a search then prepares only the query); search results are
    unchanged. ``blinds``: the ``blind`` column sets searches will pass (each gets the
    sides of the comparisons reading a blind column prepared with it null; the others are
    shared); a search with another set compares its candidates' stacked values. Returns
    whether the tables are held. Raises ``InputError`` when the store holds no model."""
    setup: _Setup = store.memo("search", lambda: _setup(store))
    held = store.hold(setup.columns, _GOLDEN_COLUMNS)
    wanted = list(dict.fromkeys(frozenset(b) for b in blinds))
    store.memo(_SIDES, lambda: _stored_sides(store, setup, wanted) if held else {}, refresh=True)
    prepare_blind_searches(store, wanted)
    return held


def prepare_blind_searches(store: Store, blinds: Iterable[frozenset[str]]) -> None:
    """Compute, once, the blocking-key index entries each ``blind`` column set leaves a
    stored record only through those columns (:func:`_blind_only_entries`): searches with
    that set then drop such findings at the same cost whatever the query matched. Kept
    until the store's next write; :func:`hold_search_tables` calls it. Raises
    ``InputError`` when the store holds no model."""
    setup: _Setup = store.memo("search", lambda: _setup(store))
    wanted = [b for b in dict.fromkeys(frozenset(b) for b in blinds) if b]
    t = time.perf_counter()
    entries = {b: _blind_only_entries(store, setup, b) for b in wanted}
    store.memo(_BLIND_ONLY, lambda: entries, refresh=True)
    if wanted:
        logger.info(
            "found %s key index entries that blind columns alone give, in %.1fs",
            "/".join(str(len(e.entries)) for e in entries.values()),
            time.perf_counter() - t,
        )


_SIDES = "search_stored_sides"
_BLIND_ONLY = "search_blind_only_entries"
# (key hash, row key) as one uint64 (a multiplicative mix): a collision, ~1e-11 a search at a
# million entries, only drops a candidate that one blocking key found
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _entry_codes(hashes: np.ndarray, rks: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return hashes.astype(np.int64).view(np.uint64) * _MIX + rks.astype(np.int64).view(np.uint64)


# derived keys of (own value, fallback from the ID): the fallback is read only where the
# record's own value is missing (blocking._birth_date, blocking._gender)
_FALLBACK_KEYS = frozenset({"birth_date", "birth_year", "birth_month_day", "gender"})


@dataclass(frozen=True)
class _BlindOnly:
    """What a blind column set leaves a stored record only through those columns: rules
    with a key wholly of blind columns (every entry of theirs), and sorted codes
    (:func:`_entry_codes`) of the other risky rules' entries that differ."""

    rules: frozenset[str]
    entries: np.ndarray


def _blind_only_entries(store: Store, setup: _Setup, blind: frozenset[str]) -> _BlindOnly:
    """The blocking-key index entries a stored record has only through columns in
    ``blind`` (its key computed again with them null differs or is missing). Computed once
    at load, so that dropping such findings costs a search the same whether or not the
    query's key matched one (a per-search re-read of the found records timed 1.6x slower
    on a right guess of a masked ID's birth digits). A rule with a key wholly of blind
    columns is kept by name (at a million records its entries would take ~100 MB); for a
    fallback key only records without their own value are computed again."""
    blocking = setup.run.blocking
    risky = [r for r in blocking.rules if any(blind.intersection(_key_inputs(k)) for k in r.keys)]
    whole = {r.name for r in risky if any(set(_key_inputs(k)) <= blind for k in r.keys)}
    partial = [r for r in risky if r.name not in whole]
    if not partial:
        return _BlindOnly(frozenset(whole), np.array([], np.uint64))
    inputs = sorted({c for r in partial for k in r.keys for c in _key_inputs(k)})
    values = store.record_columns(inputs)
    rows = np.zeros(len(values[schema.RECORD_KEY]), dtype=bool)
    for key in {k for r in partial for k in r.keys}:
        hidden = blind.intersection(_key_inputs(key))
        if not hidden:
            continue
        own = _key_inputs(key)[0]
        if key in _FALLBACK_KEYS and own not in blind:
            # once per distinct value (dates repeat): codes -1 are nulls, never present
            codes, uniques = pd.factorize(values[own])
            given = np.fromiter((key_input_present(u) for u in uniques), bool, len(uniques))
            rows |= ~np.append(given, False)[codes]
        else:
            rows[:] = True
    frame = pd.DataFrame({c: v[rows] for c, v in values.items() if c != schema.RECORD_KEY})
    frame[schema.ROW] = values[schema.RECORD_KEY][rows].astype(np.int64)
    settings = blocking.model_copy(update={"rules": partial})
    full = key_hashes(frame, settings)
    for column in blind.intersection(frame.columns):
        frame[column] = None
    seen = key_hashes(frame, settings)
    mine = _entry_codes(full[schema.KEY_HASH].to_numpy(), full[schema.ROW].to_numpy())
    visible = _entry_codes(seen[schema.KEY_HASH].to_numpy(), seen[schema.ROW].to_numpy())
    return _BlindOnly(frozenset(whole), np.unique(mine[~np.isin(mine, visible)]))


def _stored_sides(
    store: Store, setup: _Setup, blinds: list[frozenset[str]]
) -> dict[frozenset[str], dict[str, StoredSide]]:
    """Per blind column set, comparison name -> its stored side over every held record
    with those columns null (types without a scalar query path are left out: they are
    compared on the stacked values as before). A comparison reading none of a set's
    columns shares one side across the sets."""
    t = time.perf_counter()
    variants: dict[frozenset[str], dict[str, StoredSide]] = {b: {} for b in blinds}
    for comparison in setup.run.comparisons:
        # one comparison's columns at a time: the values of every record as Python objects
        # are the load's peak, freed before the next
        values = store.held_record_columns(list(comparison.columns))
        if values is None:
            return {}
        n = len(next(iter(values.values()))) if values else 0
        kind = side_type(comparison)
        made: dict[frozenset[str], StoredSide | None] = {}
        for blind in blinds:
            hidden = blind.intersection(comparison.columns)
            if hidden in made:
                pass
            elif kind is not None and hidden and hidden >= _record_columns(comparison):
                made[hidden] = NullSide(comparison)  # nothing of it visible: always null
            elif hidden and kind is not None and kind.can_drop(comparison, hidden):
                # whole name fields (former names) dropped from the prepared names: no
                # second preparation of a million names
                if frozenset() not in made:
                    made[frozenset()] = stored_side(comparison, values)
                full = made[frozenset()]
                made[hidden] = full.without(hidden) if full is not None else None
            else:
                seen = {
                    c: np.full(n, None, dtype=object) if c in hidden else v
                    for c, v in values.items()
                }
                made[hidden] = stored_side(comparison, seen)
            if made[hidden] is not None:
                variants[blind][comparison.name] = made[hidden]
    logger.info(
        "prepared the stored side of %s in %.1fs (%d column set(s) read as null)",
        ", ".join(next(iter(variants.values()), {})) or "no comparison",
        time.perf_counter() - t,
        sum(1 for b in blinds if b),
    )
    return variants


def _key_inputs(key: str) -> tuple[str, ...]:
    """The record columns a blocking key is computed from (a derived key's, or its own)."""
    return DERIVED_KEYS[key][0] if key in DERIVED_KEYS else (key,)


def _found_by_visible_keys(
    store: Store,
    blocking: Any,
    rule_keys: dict[str, Any],
    found_h: np.ndarray,
    found_rk: np.ndarray,
    blind: frozenset[str],
) -> np.ndarray:
    """Mask over the (key hash, row key) findings: False where the stored record shares the
    query's key only through columns in ``blind``. A derived key falls back to another
    column (a birth date to the ID's digits 7-14, a gender to its 17th digit): which records a
    search finds must not tell a department those digits either. Such findings are dropped
    by the entries :func:`prepare_blind_searches` computed for ``blind`` (the lookup service
    always prepares them), else checked by the record's key computed again with the blind
    columns null (a cost only a search with such findings pays)."""
    held: _BlindOnly | None = store.memo(_BLIND_ONLY, dict).get(blind)
    if held is not None:
        hidden_rules = [
            rule_keys[r] for r in held.rules if not isinstance(rule_keys.get(r, []), list)
        ]
        drop = np.isin(found_h, np.array(hidden_rules, np.int64))
        # a binary search per finding (microseconds): np.isin sorts or hashes the whole
        # sorted array each call (~5 ms at 3,000 persons), which only a search with
        # findings pays, so it timed a right guess as well as the re-read did
        entries = held.entries
        if len(entries):
            codes = _entry_codes(found_h, found_rk)
            at = np.minimum(np.searchsorted(entries, codes), len(entries) - 1)
            drop |= entries[at] == codes
        return ~drop
    risky = {
        int(h)
        for rule in blocking.rules
        if not isinstance(h := rule_keys.get(rule.name), list)
        and any(blind.intersection(_key_inputs(k)) for k in rule.keys)
    }
    keep = ~np.isin(found_h, list(risky))
    check = np.unique(found_rk[~keep])
    if len(check) == 0:
        return keep
    inputs = sorted({c for rule in blocking.rules for k in rule.keys for c in _key_inputs(k)})
    cands = store.candidate_columns(check, inputs)
    seen: set[tuple[int, int]] = set()
    for i, rk in enumerate(cands.get(schema.RECORD_KEY, np.array([])).tolist()):
        row = {c: (None if c in blind else v[i]) for c, v in cands.items()}
        for h in record_rule_keys(row, blocking).values():
            if not isinstance(h, list):
                seen.add((int(h), int(rk)))
    again = np.array(
        [(int(h), int(r)) in seen for h, r in zip(found_h[~keep], found_rk[~keep], strict=True)],
        dtype=bool,
    )
    keep[~keep] = again
    return keep


def _record_columns(comparison: Any) -> set[str]:
    """The record columns a comparison compares (its quality-flags column only qualifies
    them: with every other column null, its level is null)."""
    return set(comparison.columns) - {schema.QUALITY_FLAGS}


def _single_field_lookup(
    store: Store, row: dict, report: SearchReport, limit: int, blind: frozenset[str] = frozenset()
) -> np.ndarray:
    """Row keys of stored records sharing the query's name (or else birth date) alone
    (stored columns in ``blind`` are not read)."""
    for f, pairs in _SINGLE_FIELD.items():
        if not report.fields.get(f, {}).get("usable"):
            continue
        conditions = [
            (stored, row.get(q))
            for stored, q in pairs
            if row.get(q) is not None and stored not in blind
        ]
        if not conditions:
            continue
        rks = store.rks_where(conditions, limit=limit + 1)
        too_many = len(rks) > limit
        report.single_field = {
            "field": f,
            "records": int(min(len(rks), limit)) if not too_many else None,
            "limit": limit,
            "status": "too_common" if too_many else "searched",
        }
        return np.array([], np.int64) if too_many else rks
    return np.array([], np.int64)


def combined_values(
    setup: _Setup, row: dict, cands: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The query record (row 0) stacked on the candidates (rows 1..n), one object array
    per column a comparison or term frequency reads: the table ``stack([record_frame(row),
    candidates])`` gives the batch's ``compare``, without frames (a side lacking a column
    reads as null)."""
    n = len(cands[schema.IDENTITY_ID])
    out = {}
    for column in setup.columns:
        in_query, in_cands = column in row, column in cands
        if not (in_query or in_cands):
            continue
        values = np.empty(n + 1, dtype=object)
        values[0] = row[column] if in_query else None
        values[1:] = cands[column] if in_cands else None
        out[column] = values
    return out


def index_positions(index: pd.Index, values: np.ndarray) -> np.ndarray:
    """``index.get_indexer(values)`` (position of each value in a unique ``index``, -1 where
    absent or null), by ``get_loc`` per value for a lookup's few dozen values: on pandas'
    text index ``get_indexer`` converts the values to the index's dtype first, ~1.5 ms a call
    where the loop takes ~20 µs (measured, pandas 3). Other cases call ``get_indexer``."""
    if len(values) > 256 or not index.is_unique:
        return index.get_indexer(values)
    out = np.full(len(values), -1, dtype=np.intp)
    for i, v in enumerate(values.tolist() if isinstance(values, np.ndarray) else list(values)):
        if v is None or (isinstance(v, float) and v != v):
            continue  # null: the stored counts hold no nulls
        try:
            loc = index.get_loc(v)
        except (KeyError, TypeError, pd.errors.InvalidIndexError):
            continue
        if isinstance(loc, int | np.integer):
            out[i] = loc
    return out


def _tf_per_row(store: Store, values: dict[str, np.ndarray], column: str) -> np.ndarray:
    """``store_tf`` of the query and candidates without new records: the stored count of
    each row's value over the stored non-null total; NaN where null."""
    stored, total = store.value_counts(column)
    if column not in values:
        return np.full(len(next(iter(values.values()))), np.nan)
    found = values[column]
    positions = index_positions(stored.index, found)
    counts = np.where(positions >= 0, stored.to_numpy()[positions], 0).astype(np.float64)
    tf = counts / max(total, 1)
    tf[pd.isna(found)] = np.nan
    return tf


def score_candidates(
    store: Store,
    setup: _Setup,
    row: dict,
    cands: dict[str, np.ndarray],
    blind: frozenset[str] = frozenset(),
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Compare the standardized query ``row`` with each candidate and score the pairs, by
    the batch's comparisons and model on arrays (``compare_values``, ``score_levels``):
    returns (comparison name -> int8 levels, ``score_levels``' arrays), one entry per
    candidate in ``cands`` order. The candidates' columns in ``blind`` read as null."""
    run = setup.run
    variants: dict[frozenset[str], dict[str, StoredSide]] = store.memo(_SIDES, dict)
    sides = variants.get(blind, {})
    positions = None
    if variants and not sides:
        # a blind set prepared at no load: the candidates were read for the sides, so read
        # every column and compare them all here
        cands = store.candidate_columns(cands[schema.RECORD_KEY], setup.columns)
    if sides:
        positions = store.held_record_positions(cands[schema.RECORD_KEY])
        if positions is None or (positions < 0).any():  # pragma: no cover - held until a write
            # no stored side for these rows: read every column and compare them all here
            positions = None
            cands = store.candidate_columns(cands[schema.RECORD_KEY], setup.columns)
    values = combined_values(setup, row, cands)
    for column in blind.intersection(values):
        values[column] = values[column].copy()
        values[column][1:] = None  # row 0 is the query's own value
    n = len(cands[schema.IDENTITY_ID])
    left = np.zeros(n, dtype=np.int64)
    right = np.arange(1, n + 1, dtype=np.int64)
    levels = {}
    for comparison in run.comparisons:
        side = sides.get(comparison.name) if positions is not None else None
        if side is not None:
            # the stored records' side was prepared at load: only the query is prepared
            levels[comparison.name] = side.levels(row, positions)
        else:
            levels.update(compare_values(values, left, right, [comparison]))
    tf = {}
    for name, column in run.term_frequency.items():
        if name in run.model.tf_columns:  # score_pairs ignores the others
            per_row = _tf_per_row(store, values, column)
            tf[name] = np.fmax(per_row[left], per_row[right])  # as pair_tf
    return levels, run.model.score_levels(levels, tf=tf)


def _rank(
    store: Store,
    setup: _Setup,
    row: dict,
    cands: dict[str, np.ndarray],
    top: int,
    blind: frozenset[str] = frozenset(),
) -> list[dict]:
    """Score the query against candidate records; best record per identity, best first."""
    run = setup.run
    levels, scored = score_candidates(store, setup, row, cands, blind)
    # best record per identity, by weight then source and record id; a few candidates:
    # plain Python rather than a sort and group-by over frames
    weights = scored[schema.MATCH_WEIGHT]
    sources = cands[schema.SOURCE]
    record_ids = cands[schema.RECORD_ID]
    identities = cands[schema.IDENTITY_ID]
    n_records = Counter(identities.tolist())
    chosen: dict[Any, int] = {}
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], sources[i], record_ids[i])):
        if identities[i] not in chosen:
            chosen[identities[i]] = i
            if len(chosen) == top:
                break
    golden = {g[schema.IDENTITY_ID]: g for g in store.golden_rows(list(chosen), _GOLDEN_COLUMNS)}
    names = run.model.comparisons
    out = []
    for ident_id, i in chosen.items():
        g = golden.get(ident_id)
        # the scored pair as explain_records reads it: levels and partial weights
        pair = {GAMMA_PREFIX + c: int(levels[c][i]) for c in names}
        pair.update({MW_PREFIX + c: float(scored[MW_PREFIX + c][i]) for c in names})
        out.append(
            {
                "identity_id": ident_id,
                "match_probability": float(scored[schema.MATCH_PROBABILITY][i]),
                "match_weight": float(weights[i]),
                "best_record": {"source": sources[i], "record_id": record_ids[i]},
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
                        "comparison": comparison,
                        "level": level_name,
                        "weight": round(float(weight), 3),
                    }
                    for comparison, _, level_name, _, _, weight, _ in run.model.explain_records(
                        pair
                    )
                ],
            }
        )
    return out


def search(store: Store, record: dict[str, Any], top: int = 5) -> list[dict]:
    """Rank stored identities for one record: probability, best record, golden record, explanation.

    ``record`` maps canonical fields (name, id_number, birth_date, ...) to raw values; other
    keys are ignored (:func:`search_report` lists them). Returns at most ``top`` dicts, best
    first: ``identity_id``, ``match_probability`` (0-1), ``match_weight`` (log2 Bayes
    factor), ``best_record``, ``matched_records``, ``golden``, ``explanation``. Raises
    ``InputError`` when the store holds no model.
    """
    return search_report(store, record, top=top).hits
