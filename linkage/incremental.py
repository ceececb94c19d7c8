"""Store-backed linking: write a batch into a store, ingest new records, search one record.

Composes the same stage functions as the batch path (standardize, block, compare, score,
cluster_pairs, merge_records) with the store and stable IDs. Must not import the Linker or CLI.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from linkage import schema
from linkage.blocking import DERIVED_KEYS, BlockingSettings, block_new, key_table
from linkage.cluster import cluster_pairs
from linkage.compare import compare, comparisons_from_config, default_comparisons, pair_tf
from linkage.config import RunConfig
from linkage.errors import ConfigError, InputError
from linkage.identity import CLUSTER, assign_stable_ids
from linkage.io import read_sources
from linkage.merge import merge_records
from linkage.model import FellegiSunterModel
from linkage.pipeline import (
    LinkResult,
    Progress,
    attach_keys,
    build_comparisons,
    cannot_link_table,
    golden_settings,
)
from linkage.standardize.combine import standardize
from linkage.store import KEY_HASH, RECORD_KEY, RUN_ID, Store, StoreChanges

logger = logging.getLogger(__name__)

_PAIR_KEYS = ["source_l", "record_id_l", "source_r", "record_id_r"]
QUERY_SOURCE = "__query__"


@dataclass
class IngestResult:
    """What an ingest changed: identities of the affected records, events, summary."""

    identities: pd.DataFrame
    events: pd.DataFrame
    run_id: int
    summary: dict = field(default_factory=dict)


def _config_doc(config: RunConfig) -> dict:
    return config.model_dump(mode="json")


def key_hashes(records: pd.DataFrame, settings: BlockingSettings) -> pd.DataFrame:
    """Return (rid, h): one 64-bit hash per record (row position) and rule with all its keys."""
    table = key_table(records, settings.rules)
    frames = []
    for rule in settings.rules:
        ok = table[rule.keys].notna().all(axis=1).to_numpy()
        if not ok.any():
            continue
        text = pd.Series(rule.name, index=table.index[ok], dtype=object)
        for key in rule.keys:
            text = text + "\x1f" + table.loc[ok, key].astype(str)
        # pandas' hash is seeded with a fixed key, so hashes agree across processes
        h = pd.util.hash_pandas_object(text, index=False).to_numpy().view(np.int64)
        rows = table.loc[ok, schema.ROW].to_numpy(np.int64)
        frames.append(pd.DataFrame({schema.ROW: rows, KEY_HASH: h}))
    if not frames:
        return pd.DataFrame({schema.ROW: np.array([], np.int64), KEY_HASH: np.array([], np.int64)})
    return pd.concat(frames, ignore_index=True).drop_duplicates()


def standardize_one(
    record: dict, pivot_year: int = 30, flags: dict[str, str] | None = None
) -> pd.DataFrame:
    """Standardize ONE record fast: run only the field standardizers of the fields it has.

    ``standardize`` runs every field module (~60 ms of per-call pandas overhead on one row);
    search needs only the derived columns of given fields, absent ones compare as null.
    Mirrors combine.standardize field by field; a test checks both give the same columns.
    When ``flags`` is a dict it receives, per given field, the quality-flag codes its
    standardizer raised (``|``-joined, codes as ``combine.all_flags`` names them).
    """
    from linkage.standardize import address, dates, demographics, idnumber, names, phone

    def col(field: str) -> pd.Series:
        return pd.Series([record.get(field)], dtype=object)

    def has(field: str) -> bool:
        return record.get(field) not in (None, "")

    parts = [pd.DataFrame({k: [v] for k, v in record.items()})]
    for name_field in (schema.NAME, schema.FORMER_NAME):
        if has(name_field):
            parts.append(names.standardize_names(col(name_field), field=name_field))
    region = None
    if has(schema.ID_NUMBER):
        ids = idnumber.standardize_id_numbers(col(schema.ID_NUMBER))
        region = ids[schema.ID_REGION_CODE]
        parts.append(ids)
    for date_field, target in (
        (schema.BIRTH_DATE, schema.BIRTH_DATE_STD),
        (schema.REGISTERED_AT, schema.REGISTERED_AT_STD),
    ):
        if has(date_field):
            parsed = dates.parse_dates(col(date_field), pivot_year=pivot_year)
            codes = str(parsed[schema.QUALITY_FLAGS].iloc[0])
            prefixed = schema.QUALITY_SEP.join(
                f"{date_field}_{c}" for c in codes.split(schema.QUALITY_SEP) if c
            )
            parts.append(pd.DataFrame({target: parsed["value"], schema.QUALITY_FLAGS: [prefixed]}))
    if has(schema.GENDER):
        parts.append(demographics.standardize_gender(col(schema.GENDER)))
    if has(schema.ETHNICITY):
        parts.append(demographics.standardize_ethnicity(col(schema.ETHNICITY)))
    if has(schema.PHONE):
        parts.append(phone.standardize_phones(col(schema.PHONE)))
    if has(schema.HUKOU_ADDRESS):
        parts.append(
            address.standardize_addresses(
                col(schema.HUKOU_ADDRESS), schema.HUKOU_ADDRESS, region_codes=region
            )
        )
    if has(schema.CURRENT_ADDRESS):
        parts.append(
            address.standardize_addresses(col(schema.CURRENT_ADDRESS), schema.CURRENT_ADDRESS)
        )
    out = pd.concat([p.reset_index(drop=True) for p in parts], axis=1)
    if flags is not None:
        flags.update(_query_flags(record, parts[1:]))
    return out.drop(columns=[schema.QUALITY_FLAGS], errors="ignore")


def _query_flags(record: dict, parts: list[pd.DataFrame]) -> dict[str, str]:
    """Quality flags of one standardized record per given field (for search's report)."""
    given = [f for f in schema.MAPPABLE_FIELDS if record.get(f) not in (None, "")]
    out: dict[str, str] = {}
    for part in parts:
        if schema.QUALITY_FLAGS in part:
            codes = [
                c for c in str(part[schema.QUALITY_FLAGS].iloc[0]).split(schema.QUALITY_SEP) if c
            ]
        else:
            codes = []
        for code in codes:
            field = next((f for f in given if code.startswith(f)), None)
            if field is None and code.startswith("id_"):
                field = schema.ID_NUMBER
            if field is not None:
                out[field] = schema.QUALITY_SEP.join(filter(None, [out.get(field, ""), code]))
    return out


def _scalar_keys(row: dict) -> dict[str, object]:
    """The derived blocking keys of ONE record, as blocking.DERIVED_KEYS computes them per table.

    Search standardizes a single record; pandas overhead on a 1-row table costs ~50 ms, so the
    five derived keys are restated here for one dict (a test checks they equal key_table's).
    """

    def get(col: str):
        v = row.get(col)
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else v

    birth = get(schema.BIRTH_DATE_STD) or get(schema.ID_BIRTH_DATE)
    pinyin = get(schema.name_col(schema.NAME, "pinyin"))
    clean = get(schema.name_col(schema.NAME, "clean"))
    phone = get(schema.PHONE_STD)
    minority = row.get(schema.name_col(schema.NAME, "is_minority")) is True
    return {
        "birth_date": birth,
        "birth_year": birth[:4] if birth else None,
        "name_pinyin_sorted": " ".join(sorted(pinyin.split())) if pinyin else None,
        "name_minority_head": clean.split("·", 1)[0] if clean and minority else None,
        "phone_last8": phone[-8:] if phone else None,
    }


def record_rule_keys(row: dict, settings: BlockingSettings) -> dict[str, int | list[str]]:
    """Per blocking rule of ONE standardized record: its key hash, or the keys it lacks.

    Returns ``{rule name: hash}`` for rules whose keys are all present (the same hash
    ``key_hashes`` stores) and ``{rule name: [missing key, ...]}`` for the others.
    """
    derived = _scalar_keys(row)
    texts: dict[str, str] = {}
    out: dict[str, int | list[str]] = {}
    frame = None
    for rule in settings.rules:
        values, missing = [], []
        for key in rule.keys:
            if key in DERIVED_KEYS and key not in derived:
                # a derived key not restated above: compute it on a one-row table
                frame = pd.DataFrame([row]) if frame is None else frame
                derived[key] = DERIVED_KEYS[key](frame).iloc[0]
            v = derived[key] if key in derived else row.get(key)
            if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
                missing.append(key)
            else:
                values.append(str(v))
        if missing:
            out[rule.name] = missing
        else:
            texts[rule.name] = "\x1f".join([rule.name, *values])
    if texts:
        h = pd.util.hash_pandas_object(pd.Series(list(texts.values()), dtype=object), index=False)
        out.update(zip(texts, h.to_numpy().view(np.int64).tolist(), strict=True))
    return {rule.name: out[rule.name] for rule in settings.rules if rule.name in out}


def record_key_hashes(row: dict, settings: BlockingSettings) -> list[int]:
    """Return the blocking-key hashes of one standardized record (same values as key_hashes)."""
    keys = record_rule_keys(row, settings).values()
    return sorted({int(v) for v in keys if not isinstance(v, list)})


def _model_from_store(store: Store) -> FellegiSunterModel:
    doc = store.model()
    if doc is None:
        raise InputError(
            "identity store has no model: run `linkage run CONFIG --store STORE` first",
            path=str(store.path),
        )
    return FellegiSunterModel.from_dict(doc)


def _check_model(model: FellegiSunterModel, comparisons: list) -> None:
    names = [c.name for c in comparisons]
    if sorted(names) != sorted(model.comparisons):
        raise ConfigError(
            f"the config's comparisons {names} differ from the stored model's "
            f"{model.comparisons}; ingest with the config the store was built with",
            key="comparisons",
        )


def _apply(store: Store, changes: StoreChanges) -> int:
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
    current = result.identities.rename(columns={schema.IDENTITY_ID: CLUSTER})
    stable = assign_stable_ids(current, store.links(), store.identities(), run_id)
    ids = pd.Series(stable.identity_ids)
    identities = pd.DataFrame(
        {
            schema.SOURCE: records[schema.SOURCE].to_numpy(),
            schema.RECORD_ID: records[schema.RECORD_ID].to_numpy(),
            schema.IDENTITY_ID: stable.identity_ids,
        }
    )
    golden = merge_records(records, ids, golden_settings(config))
    floor = config.output.pairs_min_probability
    pairs = result.pairs[result.pairs[schema.MATCH_PROBABILITY] >= floor]
    summary = dict(result.summary)
    summary["events"] = {str(k): int(v) for k, v in stable.events["event"].value_counts().items()}
    _apply(
        store,
        StoreChanges(
            kind="batch",
            config=_config_doc(config),
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


def _strip_store_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[RECORD_KEY, RUN_ID, schema.ROW], errors="ignore")


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate record tables and number the rows 0..n-1 (the ``rid`` the stages expect)."""
    parts = [p for p in parts if len(p)]
    out = pd.concat(parts, ignore_index=True, sort=False) if parts else pd.DataFrame()
    out = _strip_store_columns(out)
    out.insert(0, schema.ROW, np.arange(len(out), dtype=np.int64))
    return out


def _tf(store: Store, combined: pd.DataFrame, new: pd.DataFrame, column: str) -> np.ndarray:
    """Term frequency per row from the stored counts plus the new records' counts."""
    stored, total = store.value_counts(column)
    if column not in combined:
        return np.full(len(combined), np.nan)
    new_counts = new[column].dropna().value_counts() if column in new else pd.Series(dtype=int)
    values = combined[column]
    count = (
        stored.reindex(values.to_numpy()).fillna(0).to_numpy()
        + new_counts.reindex(values.to_numpy()).fillna(0).to_numpy()
    )
    denom = max(total + int(new_counts.sum()), 1)
    tf = count / denom
    tf[values.isna().to_numpy()] = np.nan
    return tf


def _score(
    store: Store,
    combined: pd.DataFrame,
    new: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: list,
    model: FellegiSunterModel,
    tf_columns: dict[str, str],
) -> pd.DataFrame:
    vectors = compare(combined, pairs, comparisons)
    tf = {
        name: pair_tf(_tf(store, combined, new, col), vectors) for name, col in tf_columns.items()
    }
    tf = {k: v for k, v in tf.items() if k in model.tf_columns}
    return model.score(vectors, tf=tf)


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays(
        [frame[schema.SOURCE].astype(str), frame[schema.RECORD_ID].astype(str)]
    )


def ingest(store: Store, config: RunConfig, *, progress: Progress | None = None) -> IngestResult:
    """Link the records of ``config``'s sources against the store; an existing key is an update."""
    say = progress or (lambda _msg: None)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    model = _model_from_store(store)
    comparisons = build_comparisons(config)
    _check_model(model, comparisons)

    say("reading and standardizing new records")
    raw = read_sources(config).sort_values([schema.SOURCE, schema.RECORD_ID], kind="stable")
    dup = raw.duplicated([schema.SOURCE, schema.RECORD_ID])
    if dup.any():
        raise InputError(f"{int(dup.sum())} new records repeat a (source, record_id)")
    new = _strip_store_columns(standardize(raw, config.standardize))
    seconds["standardize"] = time.perf_counter() - t

    t = time.perf_counter()
    say("finding stored candidates")
    new_keys = new[[schema.SOURCE, schema.RECORD_ID]].astype(str)
    hashes = key_hashes(new.assign(**{schema.ROW: np.arange(len(new))}), config.blocking)
    cand = store.keys_for_hashes(hashes[KEY_HASH].to_numpy())
    cand = cand[~_keys(cand).isin(_keys(new_keys))]
    stored = store.records_for(cand)
    prev_updated = store.links_for(new_keys)
    updated = _keys(new_keys).isin(_keys(prev_updated))
    combined = _stack([stored, new])
    is_new = np.zeros(len(combined), dtype=bool)
    is_new[len(combined) - len(new) :] = True
    seconds["candidates"] = time.perf_counter() - t

    t = time.perf_counter()
    say("blocking, comparing, scoring")
    pairs = block_new(combined, is_new, config.blocking)
    scored = _score(store, combined, new, pairs, comparisons, model, config.model.term_frequency)
    seconds["score"] = time.perf_counter() - t

    t = time.perf_counter()
    say("reclustering the affected identities")
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
    affected = _stack([members, new])
    row_of = pd.Series(affected[schema.ROW].to_numpy(), index=_keys(affected))

    with_keys = attach_keys(scored, combined)
    stored_pairs = store.pairs_among(member_keys)
    pool = pd.concat([stored_pairs, with_keys], ignore_index=True, sort=False)
    left = row_of.reindex(
        pd.MultiIndex.from_arrays([pool["source_l"].astype(str), pool["record_id_l"].astype(str)])
    ).to_numpy()
    right = row_of.reindex(
        pd.MultiIndex.from_arrays([pool["source_r"].astype(str), pool["record_id_r"].astype(str)])
    ).to_numpy()
    inside = ~(np.isnan(left) | np.isnan(right))
    cluster_input = pd.DataFrame(
        {
            schema.ROW_L: left[inside].astype(np.int64),
            schema.ROW_R: right[inside].astype(np.int64),
            schema.MATCH_WEIGHT: pool[schema.MATCH_WEIGHT].to_numpy()[inside],
            schema.MATCH_PROBABILITY: pool[schema.MATCH_PROBABILITY].to_numpy()[inside],
        }
    )
    labels = cluster_pairs(
        len(affected),
        cluster_input,
        threshold,
        cannot_link=cannot_link_table(affected, config),
        max_cluster_size=config.clustering.max_cluster_size,
    )
    current = pd.DataFrame(
        {
            schema.SOURCE: affected[schema.SOURCE].to_numpy(),
            schema.RECORD_ID: affected[schema.RECORD_ID].to_numpy(),
            CLUSTER: labels.to_numpy(),
        }
    )
    run_id = store.next_run_id()
    is_update = np.zeros(len(affected), dtype=bool)
    is_update[len(members) :] = updated
    stable = assign_stable_ids(current, prev_links, store.identities(), run_id, updated=is_update)
    links = current.drop(columns=CLUSTER).assign(**{schema.IDENTITY_ID: stable.identity_ids})
    batch_cfg = store.last_config("batch") or {}
    sources = list(dict.fromkeys([*batch_cfg.get("sources", {}), *config.sources]))
    golden = merge_records(
        affected, pd.Series(stable.identity_ids), golden_settings(config, sources)
    )
    seconds["cluster"] = time.perf_counter() - t

    t = time.perf_counter()
    say("writing to the store")
    keep = with_keys[schema.MATCH_PROBABILITY] >= config.output.pairs_min_probability
    summary = {
        "new_records": int(len(new)),
        "updated_records": int(updated.sum()),
        "stored_candidates": int(len(stored)),
        "candidate_pairs": int(len(pairs)),
        "matches": int(strong.sum()),
        "touched_identities": len(touched),
        "affected_records": int(len(affected)),
        "events": {str(k): int(v) for k, v in stable.events["event"].value_counts().items()},
    }
    run_id = _apply(
        store,
        StoreChanges(
            kind="ingest",
            config=_config_doc(config),
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
    logger.info("ingest run %d: %s", run_id, summary)
    return IngestResult(identities=links, events=stable.events, run_id=run_id, summary=summary)


# ----------------------------------------------------------------------------- search


def _search_setup(store: Store) -> dict:
    """Model, comparisons and blocking settings of the store's latest batch run (cached)."""
    if "search" not in store._cache:
        model = _model_from_store(store)
        cfg = store.last_config("batch") or {}
        entries = cfg.get("comparisons")
        comparisons = comparisons_from_config(entries) if entries else default_comparisons()
        _check_model(model, comparisons)
        tf = dict(cfg.get("model", {}).get("term_frequency", {}))
        columns = [schema.SOURCE, schema.RECORD_ID, *tf.values()]
        for c in comparisons:
            columns += list(c.columns)
        store._cache["search"] = {
            "model": model,
            "comparisons": comparisons,
            "columns": list(dict.fromkeys(columns)),
            "blocking": BlockingSettings.model_validate(cfg.get("blocking", {})),
            "tf": dict(cfg.get("model", {}).get("term_frequency", {})),
        }
    return store._cache["search"]


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


def _field_report(raw: dict, row: dict, flags: dict[str, str]) -> dict[str, dict]:
    meanings = _flag_meanings()
    out = {}
    for f, value in raw.items():
        if f not in _READ_COLUMNS or value in (None, ""):
            continue
        v = row.get(_READ_COLUMNS[f])
        usable = not (v is None or (isinstance(v, float) and np.isnan(v)) or v == "")
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
    store: Store, record: dict, top: int = 5, *, single_field_limit: int = SINGLE_FIELD_LIMIT
) -> SearchReport:
    """Rank stored identities for one record and say what was searched and why.

    ``record`` maps canonical field names (``name``, ``id_number``, ``birth_date``, ``phone``,
    ``gender``, ``hukou_address``, ``current_address``, ...) to raw values; other keys are
    reported in ``ignored``. Candidates come from the store's blocking-key index (the rules
    of its latest batch run; a block over ``max_block_size`` is skipped as in the batch);
    when no rule yields one, a name alone or a birth date alone is looked up when at most
    ``single_field_limit`` stored records share it. Raises InputError when the store has
    no model, ValueError when ``top`` < 1.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    setup = _search_setup(store)
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
    query = standardize_one(raw, flags=flags)
    row = query.iloc[0].to_dict()
    report.fields = _field_report(raw, row, flags)
    blocking = setup["blocking"]
    limit = blocking.max_block_size
    rule_keys = record_rule_keys(row, blocking)
    hashes = sorted({int(v) for v in rule_keys.values() if not isinstance(v, list)})
    found = store.rks_for_hashes(hashes)
    sizes = found.groupby(KEY_HASH)[RECORD_KEY].size()
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
    in_limit = found[KEY_HASH].map(sizes).to_numpy() <= limit if len(found) else []
    rks = np.unique(found.loc[in_limit, RECORD_KEY].to_numpy(np.int64)) if len(found) else []
    if len(rks) == 0:
        rks = _single_field_lookup(store, row, report, single_field_limit)
    if len(rks) == 0:
        report.message = _empty_message(report)
        return report
    if report.single_field is not None:
        single = report.single_field
        report.message = (
            f"no blocking rule found a candidate; ranked the {single['records']} stored "
            f"records sharing the {single['field']} alone"
        )
    cands = store.candidates_by_rk(rks, setup["columns"])
    report.hits = _rank(store, setup, query, cands, top)
    return report


def _single_field_lookup(store: Store, row: dict, report: SearchReport, limit: int) -> np.ndarray:
    """Row keys of stored records sharing the query's name (or else birth date) alone."""
    for f, pairs in _SINGLE_FIELD.items():
        if not report.fields.get(f, {}).get("usable"):
            continue
        conditions = [(stored, row.get(q)) for stored, q in pairs if row.get(q) is not None]
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


def _rank(
    store: Store, setup: dict, query: pd.DataFrame, cands: pd.DataFrame, top: int
) -> list[dict]:
    """Score the query against candidate records; best record per identity, best first."""
    combined = _stack([query, cands])
    pairs = pd.DataFrame(
        {
            schema.ROW_L: np.zeros(len(cands), dtype=np.int64),
            schema.ROW_R: np.arange(1, len(combined), dtype=np.int64),
        }
    )
    scored = _score(
        store, combined, query.iloc[0:0], pairs, setup["comparisons"], setup["model"], setup["tf"]
    )
    right = combined.iloc[scored[schema.ROW_R].to_numpy()]
    scored["identity_id"] = cands[schema.IDENTITY_ID].to_numpy()
    scored["source"] = right[schema.SOURCE].to_numpy()
    scored["record_id"] = right[schema.RECORD_ID].to_numpy()
    best = (
        scored.sort_values(
            [schema.MATCH_WEIGHT, "source", "record_id"], ascending=[False, True, True]
        )
        .drop_duplicates("identity_id")
        .head(top)
    )
    n_records = scored.groupby("identity_id").size()
    golden = store.golden_for(best["identity_id"].tolist())
    golden = golden.set_index(schema.IDENTITY_ID) if len(golden) else golden
    out = []
    for _, row in best.iterrows():  # at most ``top`` rows
        ident_id = row["identity_id"]
        explanation = setup["model"].explain(row)
        g = golden.loc[ident_id] if len(golden) and ident_id in golden.index else None
        out.append(
            {
                "identity_id": ident_id,
                "match_probability": float(row[schema.MATCH_PROBABILITY]),
                "match_weight": float(row[schema.MATCH_WEIGHT]),
                "best_record": {"source": row["source"], "record_id": row["record_id"]},
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


def search(store: Store, record: dict, top: int = 5) -> list[dict]:
    """Rank stored identities for one record: probability, best record, golden record, explanation.

    Each hit: ``identity_id``, ``match_probability`` (0-1), ``match_weight`` (log2 Bayes
    factor), ``best_record`` (source, record_id), ``matched_records``, ``golden`` (the golden
    record's canonical fields) and ``explanation`` (comparison, level, weight). The hits of
    :func:`search_report`, which also says why an answer is empty.
    """
    return search_report(store, record, top=top).hits


def read_config_records(config: RunConfig) -> pd.DataFrame:
    """Read and standardize a config's sources in canonical order (as the Linker does)."""
    raw = read_sources(config).sort_values([schema.SOURCE, schema.RECORD_ID], kind="stable")
    return standardize(raw, config.standardize)
