"""Golden records: one record per identity by survivorship rules, with provenance and conflicts.

Pure function over the standardized records and their identity labels; imports schema only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from linkage import schema

Rule = Literal["valid_id", "most_frequent", "most_recent", "source_priority"]


class FieldRule(BaseModel):
    """How one golden field is chosen: the value column, the rule, and where it comes from."""

    model_config = ConfigDict(extra="forbid")

    column: str
    rule: Rule = "most_frequent"
    raw: str | None = None  # raw column reported beside the standardized value


class GoldenSettings(BaseModel):
    """Survivorship section of a run config."""

    model_config = ConfigDict(extra="forbid")

    # Earlier sources win ties; sources not listed come after, in name order.
    source_priority: list[str] = Field(default_factory=list)
    fields: dict[str, FieldRule] = Field(default_factory=lambda: dict(DEFAULT_FIELDS))


DEFAULT_FIELDS: dict[str, FieldRule] = {
    schema.NAME: FieldRule(column=schema.name_col(schema.NAME, "clean"), rule="most_frequent"),
    schema.ID_NUMBER: FieldRule(column=schema.ID_STD, rule="valid_id"),
    schema.GENDER: FieldRule(column=schema.GENDER_STD, rule="most_frequent"),
    schema.BIRTH_DATE: FieldRule(column=schema.BIRTH_DATE_STD, rule="most_frequent"),
    schema.ETHNICITY: FieldRule(column=schema.ETHNICITY_STD, rule="most_frequent"),
    schema.PHONE: FieldRule(column=schema.PHONE_STD, rule="most_recent"),
    schema.HUKOU_ADDRESS: FieldRule(column=schema.HUKOU_ADDRESS, rule="source_priority"),
    schema.CURRENT_ADDRESS: FieldRule(column=schema.CURRENT_ADDRESS, rule="most_recent"),
}

# Fields where two different values inside one identity are worth an analyst's look.
CONFLICT_FIELDS = (schema.ID_NUMBER, schema.BIRTH_DATE, schema.GENDER)


def _source_rank(sources: pd.Series, priority: list[str]) -> np.ndarray:
    order = {s: i for i, s in enumerate(priority)}
    rest = sorted(s for s in pd.unique(sources) if s not in order)
    for s in rest:
        order[s] = len(order)
    return sources.map(order).to_numpy(np.int64)


def merge_records(
    records: pd.DataFrame, identities: pd.Series, settings: GoldenSettings | None = None
) -> pd.DataFrame:
    """Return one golden record per identity with ``<field>_source``/``<field>_record_id`` provenance."""
    settings = settings or GoldenSettings()
    base = pd.DataFrame(
        {
            schema.IDENTITY_ID: identities.to_numpy(),
            schema.SOURCE: records[schema.SOURCE].to_numpy(),
            schema.RECORD_ID: records[schema.RECORD_ID].to_numpy(),
            "_rank": _source_rank(records[schema.SOURCE], settings.source_priority),
            "_recent": records.get(
                schema.REGISTERED_AT_STD, pd.Series([None] * len(records))
            ).to_numpy(),
        }
    )
    ids = pd.Index(pd.unique(base[schema.IDENTITY_ID]), name=schema.IDENTITY_ID)
    golden = pd.DataFrame(index=ids)
    counts = base.groupby(schema.IDENTITY_ID, sort=False).size()
    golden["records"] = counts.reindex(ids).to_numpy()
    # sources as a bit mask per identity, then one string per distinct mask (no per-group lambda)
    names = sorted(pd.unique(base[schema.SOURCE]))
    bits = base[schema.SOURCE].map({n: 1 << i for i, n in enumerate(names)}).astype(np.int64)
    masks = (
        pd.DataFrame({schema.IDENTITY_ID: base[schema.IDENTITY_ID], "_bit": bits})
        .drop_duplicates()
        .groupby(schema.IDENTITY_ID, sort=False)["_bit"]
        .sum()
        .reindex(ids)
    )
    mask_text = {
        m: "|".join(n for i, n in enumerate(names) if m >> i & 1) for m in pd.unique(masks)
    }
    golden["sources"] = masks.map(mask_text).to_numpy()
    conflicts: dict[str, pd.Series] = {}
    for field, rule in settings.fields.items():
        if rule.column not in records.columns:
            continue
        frame = base.copy()
        frame["_value"] = records[rule.column].to_numpy()
        frame = frame[frame["_value"].notna()]
        if rule.column == schema.ID_STD and schema.ID_VALID in records:
            frame["_valid"] = records.loc[frame.index, schema.ID_VALID].eq(True).to_numpy()
        else:
            frame["_valid"] = True
        frame["_freq"] = frame.groupby([schema.IDENTITY_ID, "_value"], sort=False)[
            "_value"
        ].transform("size")
        recent = frame["_recent"].fillna("")
        frame["_recent_key"] = recent
        # every rule ends with source rank then record id, so ties resolve the same way in any row order
        if rule.rule == "valid_id":
            keys, asc = ["_valid", "_freq", "_rank"], [False, False, True]
        elif rule.rule == "most_frequent":
            keys, asc = ["_freq", "_rank", "_recent_key"], [False, True, False]
        elif rule.rule == "most_recent":
            keys, asc = ["_recent_key", "_rank"], [False, True]
        else:
            keys, asc = ["_rank", "_recent_key"], [True, False]
        frame = frame.sort_values(
            [schema.IDENTITY_ID, *keys, schema.SOURCE, schema.RECORD_ID],
            ascending=[True, *asc, True, True],
            kind="mergesort",
        )
        chosen = frame.drop_duplicates(schema.IDENTITY_ID).set_index(schema.IDENTITY_ID)
        golden[field] = chosen["_value"].reindex(ids).to_numpy()
        golden[f"{field}_source"] = chosen[schema.SOURCE].reindex(ids).to_numpy()
        golden[f"{field}_record_id"] = chosen[schema.RECORD_ID].reindex(ids).to_numpy()
        if field in CONFLICT_FIELDS:
            pool = frame[frame["_valid"]] if rule.rule == "valid_id" else frame
            n_distinct = pool.groupby(schema.IDENTITY_ID, sort=False)["_value"].nunique()
            several = pool[pool[schema.IDENTITY_ID].isin(n_distinct.index[n_distinct > 1])]
            distinct = several.groupby(schema.IDENTITY_ID, sort=False)["_value"].agg(
                lambda s: "|".join(sorted(set(map(str, s))))
            )
            conflicts[field] = distinct.reindex(ids).fillna("")
    golden["conflicts"] = ""
    for field, values in conflicts.items():
        text = np.where(values.to_numpy() != "", f"{field}=" + values.to_numpy().astype(str), "")
        current = golden["conflicts"].to_numpy().astype(str)
        golden["conflicts"] = np.where(
            (current != "") & (text != ""), current + "; " + text, current + text
        )
    return golden.reset_index()
