"""Blocking: candidate record pairs from equality rules on standardized keys, run in DuckDB.

Imports schema, errors and config-free pydantic models only; never the Linker, CLI or store.
Values never enter SQL text: keys are registered as a table and rules join on quoted
column identifiers that were checked against the key table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from linkage import schema
from linkage.errors import ConfigError

logger = logging.getLogger(__name__)


def _first_non_null(*columns: pd.Series) -> pd.Series:
    out = columns[0].copy()
    for col in columns[1:]:
        out = out.where(out.notna(), col)
    return out


def _col(records: pd.DataFrame, name: str) -> pd.Series:
    if name in records.columns:
        return records[name].astype(object).where(records[name].notna(), None)
    return pd.Series([None] * len(records), index=records.index, dtype=object)


def _birth_date(records: pd.DataFrame) -> pd.Series:
    return _first_non_null(
        _col(records, schema.BIRTH_DATE_STD), _col(records, schema.ID_BIRTH_DATE)
    )


def _per_distinct(values: pd.Series, func: Callable[[str], str | None]) -> pd.Series:
    """Apply ``func`` once per distinct non-null value; names and dates repeat heavily."""
    codes, uniques = pd.factorize(values)
    mapped = np.array([func(u) for u in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def _sorted_syllables(values: pd.Series) -> pd.Series:
    """Pinyin with syllables sorted, so ``wei zhang`` and ``zhang wei`` block together."""
    codes, uniques = pd.factorize(values)
    keyed = np.array([" ".join(sorted(u.split())) for u in uniques], dtype=object)
    out = np.where(codes < 0, None, keyed[codes] if len(keyed) else None)
    return pd.Series(out, index=values.index, dtype=object)


def _minority_head(records: pd.DataFrame) -> pd.Series:
    """First part of a minority name: registries truncate long names to their first parts."""
    clean = _col(records, schema.name_col(schema.NAME, "clean"))
    minority = _col(records, schema.name_col(schema.NAME, "is_minority")).eq(True).to_numpy(bool)
    out = pd.Series([None] * len(records), index=records.index, dtype=object)
    out[minority] = _per_distinct(clean[minority], lambda v: v.split("·", 1)[0])
    return out


# Derived keys a rule may name besides any column of the standardized records.
DERIVED_KEYS: dict[str, Callable[[pd.DataFrame], pd.Series]] = {
    "birth_date": _birth_date,
    "birth_year": lambda r: _per_distinct(_birth_date(r), lambda v: v[:4]),
    # month and day survive a mistyped year
    "birth_month_day": lambda r: _per_distinct(_birth_date(r), lambda v: v[5:]),
    "name_pinyin_sorted": lambda r: _sorted_syllables(
        _col(r, schema.name_col(schema.NAME, "pinyin"))
    ),
    "name_minority_head": _minority_head,
    "phone_last8": lambda r: _per_distinct(_col(r, schema.PHONE_STD), lambda v: v[-8:]),
}


class BlockingRule(BaseModel):
    """Pairs records whose values agree on every key in ``keys`` (nulls never agree)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    keys: list[str] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _accept_on(cls, data: Any) -> Any:
        # "on" is accepted for "keys"; unquoted, YAML 1.1 reads the key `on` as boolean true
        if isinstance(data, dict):
            for alias in ("on", True):
                if alias in data and "keys" not in data:
                    data = {("keys" if k == alias else k): v for k, v in data.items()}
        return data


class BlockingSettings(BaseModel):
    """Blocking section of a run config."""

    model_config = ConfigDict(extra="forbid")

    rules: list[BlockingRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    # A block this large (e.g. 张伟 born 1990 in a huge registry) is reported; above
    # max_block_size it is skipped, because its pairs would swamp comparison and EM.
    warn_block_size: int = Field(default=500, ge=2)
    max_block_size: int = Field(default=5000, ge=2)
    link_type: str = Field(default="dedupe_and_link", pattern="^(dedupe_and_link|link_only)$")


DEFAULT_RULES: tuple[BlockingRule, ...] = (
    BlockingRule(name="id_number", keys=[schema.ID_STD]),
    BlockingRule(name="pinyin_name_birth_year", keys=["name_pinyin_sorted", "birth_year"]),
    BlockingRule(
        name="fuzzy_surname_birth_date",
        keys=[schema.name_col(schema.NAME, "surname_fuzzy"), "birth_date"],
    ),
    BlockingRule(
        name="given_name_birth_date", keys=[schema.name_col(schema.NAME, "given"), "birth_date"]
    ),
    BlockingRule(name="id_birth_region", keys=[schema.ID_BIRTH_DATE, schema.ID_REGION_CODE]),
    BlockingRule(name="phone", keys=[schema.PHONE_STD]),
    BlockingRule(
        name="pinyin_name_birth_month_day", keys=["name_pinyin_sorted", "birth_month_day"]
    ),
    BlockingRule(name="minority_head_birth_year", keys=["name_minority_head", "birth_year"]),
    BlockingRule(
        name="fuzzy_name_hukou_district",
        keys=[
            schema.name_col(schema.NAME, "fuzzy"),
            schema.address_col(schema.HUKOU_ADDRESS, "district"),
        ],
    ),
)


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
    for rule in rules:
        for key in rule.keys:
            if key in keys:
                continue
            if key in DERIVED_KEYS:
                keys[key] = DERIVED_KEYS[key](records)
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
