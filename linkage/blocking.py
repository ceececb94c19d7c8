"""Blocking: candidate record pairs from equality rules on standardized keys, run in DuckDB.

Imports schema, errors and its settings from config; never the Linker, CLI or store.
Values never enter SQL text: keys are registered as a table and rules join on quoted
column identifiers that were checked against the key table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import DEFAULT_RULES, BlockingRule, BlockingSettings  # noqa: F401 - re-exported
from linkage.errors import ConfigError

logger = logging.getLogger(__name__)


def _col(records: pd.DataFrame, name: str) -> pd.Series:
    if name in records.columns:
        return records[name].astype(object).where(records[name].notna(), None)
    return pd.Series([None] * len(records), index=records.index, dtype=object)


def _present(value: Any) -> bool:
    return (
        value is not None
        and value is not pd.NA
        and not (isinstance(value, float) and np.isnan(value))
    )


# ----------------------------------------------------------------------------- derived keys
# Each derived key is ONE scalar function of the values of a few record columns. key_table
# applies it once per distinct combination of those values (names and dates repeat heavily);
# record_keys applies the same function to one record, so search and ingest cannot drift.


def _birth_date(std: Any, from_id: Any) -> Any:
    return std if _present(std) else from_id if _present(from_id) else None


def _birth_year(std: Any, from_id: Any) -> Any:
    birth = _birth_date(std, from_id)
    return birth[:4] if birth else None


def _birth_month_day(std: Any, from_id: Any) -> Any:
    # month and day survive a mistyped year
    birth = _birth_date(std, from_id)
    return birth[5:] if birth else None


def _pinyin_sorted(pinyin: Any) -> Any:
    """Pinyin with syllables sorted, so ``wei zhang`` and ``zhang wei`` block together."""
    return " ".join(sorted(pinyin.split())) if _present(pinyin) else None


def _minority_head(clean: Any, is_minority: Any) -> Any:
    """First part of a minority name: registries truncate long names to their first parts."""
    minority = _present(is_minority) and bool(is_minority)
    return clean.split("·", 1)[0] if _present(clean) and minority else None


def _phone_last8(phone: Any) -> Any:
    return phone[-8:] if _present(phone) else None


_BIRTH = (schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE)

# Derived keys a rule may name besides any column of the standardized records:
# key -> (record columns read, scalar function of their values; None = no key).
DERIVED_KEYS: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "birth_date": (_BIRTH, _birth_date),
    "birth_year": (_BIRTH, _birth_year),
    "birth_month_day": (_BIRTH, _birth_month_day),
    "name_pinyin_sorted": ((schema.name_col(schema.NAME, "pinyin"),), _pinyin_sorted),
    "name_minority_head": (
        (schema.name_col(schema.NAME, "clean"), schema.name_col(schema.NAME, "is_minority")),
        _minority_head,
    ),
    "phone_last8": ((schema.PHONE_STD,), _phone_last8),
}


def _distinct_inputs(
    records: pd.DataFrame, columns: tuple[str, ...]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes of each row's combination of ``columns`` values, and per column the values of
    each distinct combination (None for null). Hash-based: O(rows)."""
    combined = np.zeros(len(records), dtype=np.int64)
    tables = []
    for name in columns:
        codes, uniques = pd.factorize(_col(records, name))
        table = np.array([None, *uniques], dtype=object)  # code 0 = null
        combined = combined * len(table) + (codes.astype(np.int64) + 1)
        tables.append(table)
    codes, distinct = pd.factorize(combined)
    distinct = np.asarray(distinct, dtype=np.int64)
    args = []
    for table in reversed(tables):
        args.append(table[distinct % len(table)])
        distinct = distinct // len(table)
    return codes, args[::-1]


def _derived_column(records: pd.DataFrame, key: str, cache: dict | None = None) -> pd.Series:
    """Apply a derived key's function once per distinct combination of its input values."""
    columns, func = DERIVED_KEYS[key]
    cache = {} if cache is None else cache
    if columns not in cache:
        cache[columns] = _distinct_inputs(records, columns)
    codes, args = cache[columns]
    mapped = np.array([func(*vals) for vals in zip(*args, strict=True)] + [None], dtype=object)
    return pd.Series(mapped[codes], index=records.index, dtype=object)


def record_keys(record: Mapping[str, Any], rules: list[BlockingRule]) -> dict[str, Any]:
    """The blocking keys of ONE standardized record (a dict), as :func:`key_table` computes them.

    Single-record search calls this instead of building a one-row table (pandas costs
    milliseconds per call on one row). Blank values are missing keys, as in ``key_table``.
    """
    out: dict[str, Any] = {}
    for rule in rules:
        for key in rule.keys:
            if key in out:
                continue
            if key in DERIVED_KEYS:
                columns, func = DERIVED_KEYS[key]
                value = func(*(_scalar(record.get(c)) for c in columns))
            else:
                value = _scalar(record.get(key))
            out[key] = None if value is None or str(value).strip() == "" else value
    return out


def _scalar(value: Any) -> Any:
    return value if _present(value) else None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def key_table(records: pd.DataFrame, rules: list[BlockingRule]) -> pd.DataFrame:
    """Return the table of blocking keys (one column per distinct key) with ROW and SOURCE."""
    keys: dict[str, pd.Series] = {
        schema.ROW: records[schema.ROW].astype(np.int64)
        if schema.ROW in records
        else pd.Series(np.arange(len(records)), index=records.index),
        schema.SOURCE: _col(records, schema.SOURCE),
    }
    problems = []
    distinct: dict = {}  # input combinations shared by derived keys (the birth_* keys)
    for rule in rules:
        for key in rule.keys:
            if key in keys:
                continue
            if key in DERIVED_KEYS:
                keys[key] = _derived_column(records, key, distinct)
            elif key in records.columns:
                keys[key] = _col(records, key).astype(object)
            else:
                problems.append(f"rule '{rule.name}': unknown key '{key}'")
    if problems:
        raise ConfigError(
            "; ".join(problems)
            + f". Keys are columns of the standardized records or one of {sorted(DERIVED_KEYS)}",
            key="blocking.rules",
        )
    table = pd.DataFrame(keys).reset_index(drop=True)
    for col in table.columns:
        if col != schema.ROW and table[col].dtype == object:
            # empty strings are missing values, never a shared key (checked per distinct value)
            codes, uniques = pd.factorize(table[col])
            blank = np.array([str(u).strip() == "" for u in uniques], dtype=bool)
            if blank.any():
                table[col] = table[col].where(~np.append(blank, False)[codes], None)
    return table


def _block_sizes(table: pd.DataFrame, rule: BlockingRule) -> pd.Series:
    sub = table[rule.keys].dropna()
    if sub.empty:
        return pd.Series(dtype=np.int64)
    return sub.groupby(rule.keys, sort=False).size()


def _rule_condition(rule: BlockingRule, skip_col: str) -> str:
    parts = [f"l.{_quote(k)} = r.{_quote(k)}" for k in rule.keys]
    parts.append(f"NOT l.{_quote(skip_col)}")
    return "(" + " AND ".join(parts) + ")"


def block(
    records: pd.DataFrame,
    settings: BlockingSettings | None = None,
    *,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Return candidate pairs ``rid_l < rid_r`` from all rules, each once, with the first rule that found it."""
    settings = settings or BlockingSettings()
    rules = settings.rules
    table = key_table(records, rules)
    # Joins and group-bys on integer codes are several times faster than on strings.
    coded = pd.DataFrame({schema.ROW: table[schema.ROW].to_numpy(np.int64)})
    for col in table.columns:
        if col != schema.ROW:
            codes = pd.factorize(table[col])[0].astype(np.int32)
            coded[col] = pd.arrays.IntegerArray(codes, mask=codes < 0)
    skip_cols = []
    for i, rule in enumerate(rules):
        sizes = _block_sizes(coded, rule)
        too_big = sizes[sizes > settings.max_block_size]
        col = f"__skip_{i}"
        skip_cols.append(col)
        if too_big.empty:
            coded[col] = False
            continue
        logger.warning(
            "blocking rule '%s': skipped %d block(s) larger than %d records (largest %d)",
            rule.name,
            len(too_big),
            settings.max_block_size,
            int(too_big.max()),
        )
        marker = coded[rule.keys].merge(
            too_big.rename("__n").reset_index(), on=rule.keys, how="left"
        )["__n"]
        coded[col] = marker.notna().to_numpy()
    con = connection or duckdb.connect()
    if connection is None:
        con.execute("SET enable_progress_bar = false")
    con.register("__keys", coded)
    selects = []
    for i, rule in enumerate(rules):
        where = [_rule_condition(rule, skip_cols[i])]
        where += [
            f"NOT coalesce({_rule_condition(rules[j], skip_cols[j])}, FALSE)" for j in range(i)
        ]
        if settings.link_type == "link_only":
            where.append(f"l.{_quote(schema.SOURCE)} <> r.{_quote(schema.SOURCE)}")
        elif settings.link_type == "dedupe_only":
            where.append(f"l.{_quote(schema.SOURCE)} = r.{_quote(schema.SOURCE)}")
        selects.append(
            f"SELECT l.{_quote(schema.ROW)} AS {_quote(schema.ROW_L)}, "
            f"r.{_quote(schema.ROW)} AS {_quote(schema.ROW_R)}, {i}::SMALLINT AS rule_index "
            f"FROM __keys l JOIN __keys r ON l.{_quote(schema.ROW)} < r.{_quote(schema.ROW)} "
            f"AND {' AND '.join(where)}"
        )
    query = " UNION ALL ".join(selects)
    if selects:
        fetched = con.execute(query).fetchnumpy()
        left = np.asarray(fetched[schema.ROW_L], dtype=np.int64)
        right = np.asarray(fetched[schema.ROW_R], dtype=np.int64)
        rule_index = np.asarray(fetched["rule_index"], dtype=np.int64)
        order = np.lexsort((right, left))  # a stable pair order whatever DuckDB's threads did
        pairs = pd.DataFrame(
            {schema.ROW_L: left[order], schema.ROW_R: right[order], "rule_index": rule_index[order]}
        )
    else:
        pairs = pd.DataFrame(
            {
                schema.ROW_L: np.array([], np.int64),
                schema.ROW_R: np.array([], np.int64),
                "rule_index": np.array([], np.int64),
            }
        )
    con.unregister("__keys")
    if connection is None:
        con.close()
    names = np.array([r.name for r in rules], dtype=object)
    out = pd.DataFrame(
        {
            schema.ROW_L: pairs[schema.ROW_L].to_numpy(np.int64),
            schema.ROW_R: pairs[schema.ROW_R].to_numpy(np.int64),
            schema.RULE: pd.Categorical(
                names[pairs["rule_index"].to_numpy(np.int64)], categories=names
            ),
        }
    )
    logger.info("blocking produced %d candidate pairs", len(out))
    return out


# ----------------------------------------------------------------------------- key hashes
# The identity store indexes each record by one 64-bit hash per rule of all its keys, so
# ingest and search find stored candidates without re-blocking the store.


def _key_text(rule_name: str, values: list[Any]) -> Any:
    """The hashed text of a rule's keys: rule name and key values joined by U+001F.

    Works on strings (one record) and on string Series (a table) alike.
    """
    text: Any = rule_name
    for value in values:
        text = text + "\x1f" + value
    return text


def _hash(texts: pd.Series) -> np.ndarray:
    # pandas' hash is seeded with a fixed key, so hashes agree across processes
    return pd.util.hash_pandas_object(texts, index=False).to_numpy().view(np.int64)


def key_hashes(records: pd.DataFrame, settings: BlockingSettings) -> pd.DataFrame:
    """Return (rid, h): one 64-bit hash per record (``rid``, else row position) and rule."""
    table = key_table(records, settings.rules)
    frames = []
    for rule in settings.rules:
        ok = table[rule.keys].notna().all(axis=1).to_numpy()
        if not ok.any():
            continue
        text = _key_text(rule.name, [table.loc[ok, key].astype(str) for key in rule.keys])
        rows = table.loc[ok, schema.ROW].to_numpy(np.int64)
        frames.append(pd.DataFrame({schema.ROW: rows, schema.KEY_HASH: _hash(text)}))
    if not frames:
        return pd.DataFrame(
            {schema.ROW: np.array([], np.int64), schema.KEY_HASH: np.array([], np.int64)}
        )
    return pd.concat(frames, ignore_index=True).drop_duplicates()


def record_key_hashes(record: Mapping[str, Any], settings: BlockingSettings) -> list[int]:
    """Return the sorted distinct key hashes of one standardized record (as :func:`key_hashes`)."""
    keys = record_keys(record, settings.rules)
    texts = [
        _key_text(rule.name, [str(keys[k]) for k in rule.keys])
        for rule in settings.rules
        if all(keys[k] is not None for k in rule.keys)
    ]
    if not texts:
        return []
    return sorted(set(_hash(pd.Series(texts, dtype=object)).tolist()))


def blocking_report(
    records: pd.DataFrame, settings: BlockingSettings | None = None
) -> pd.DataFrame:
    """Return per rule: pairs its blocks hold, largest block, blocks over the warning and skip sizes."""
    settings = settings or BlockingSettings()
    table = key_table(records, settings.rules)
    rows = []
    for rule in settings.rules:
        sizes = _block_sizes(table, rule)
        kept = sizes[sizes <= settings.max_block_size]
        rows.append(
            {
                "rule": rule.name,
                "keys": " + ".join(rule.keys),
                "records_with_key": int(sizes.sum()),
                "pairs": int((kept * (kept - 1) // 2).sum()),
                "largest_block": int(sizes.max()) if len(sizes) else 0,
                "blocks_over_warning": int((sizes > settings.warn_block_size).sum()),
                "blocks_skipped": int((sizes > settings.max_block_size).sum()),
            }
        )
    return pd.DataFrame(rows)


def largest_blocks(
    records: pd.DataFrame, settings: BlockingSettings | None = None, top: int = 5
) -> pd.DataFrame:
    """Return the largest blocks of each rule with their key values, for the operator to inspect."""
    settings = settings or BlockingSettings()
    table = key_table(records, settings.rules)
    frames = []
    for rule in settings.rules:
        sizes = _block_sizes(table, rule).sort_values(ascending=False).head(top)
        if sizes.empty:
            continue
        keys = sizes.index.to_frame(index=False).astype(str).agg(" | ".join, axis=1)
        frames.append(
            pd.DataFrame({"rule": rule.name, "key": keys.to_numpy(), "records": sizes.to_numpy()})
        )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["rule", "key", "records"])
    )


def sample_random_pairs(n_records: int, n_pairs: int, seed: int = 0) -> pd.DataFrame:
    """Return up to ``n_pairs`` distinct random pairs ``rid_l < rid_r`` for estimating u-probabilities."""
    if n_records < 2:
        return pd.DataFrame(
            {schema.ROW_L: np.array([], np.int64), schema.ROW_R: np.array([], np.int64)}
        )
    rng = np.random.default_rng(seed)
    total = n_records * (n_records - 1) // 2
    n_pairs = int(min(n_pairs, total))
    if total <= 2 * n_pairs:
        # few records: enumerate every pair and choose among them
        lo, hi = np.triu_indices(n_records, k=1)
        chosen = np.sort(rng.choice(total, size=n_pairs, replace=False))
        pairs = np.stack([lo[chosen], hi[chosen]], axis=1)
    else:
        pairs = np.empty((0, 2), dtype=np.int64)
        while len(pairs) < n_pairs:
            a = rng.integers(0, n_records, size=int((n_pairs - len(pairs)) * 1.2) + 10)
            b = rng.integers(0, n_records, size=len(a))
            keep = a != b
            fresh = np.stack([np.minimum(a, b)[keep], np.maximum(a, b)[keep]], axis=1)
            pairs = np.unique(np.concatenate([pairs, fresh]), axis=0)
        pairs = pairs[np.sort(rng.choice(len(pairs), size=n_pairs, replace=False))]
    return pd.DataFrame(
        {schema.ROW_L: pairs[:, 0].astype(np.int64), schema.ROW_R: pairs[:, 1].astype(np.int64)}
    )


def block_new(
    records: pd.DataFrame, is_new: np.ndarray, settings: BlockingSettings | None = None
) -> pd.DataFrame:
    """Return the candidate pairs of :func:`block` that touch at least one new record.

    For incremental ingest: ``records`` holds the new records plus the stored records sharing
    a key with them, so block sizes (and skipped blocks) are those of the whole store.
    """
    is_new = np.asarray(is_new, dtype=bool)
    pairs = block(records, settings)
    keep = is_new[pairs[schema.ROW_L].to_numpy()] | is_new[pairs[schema.ROW_R].to_numpy()]
    return pairs[keep].reset_index(drop=True)
