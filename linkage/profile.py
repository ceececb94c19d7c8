"""Data-quality profile of standardized records, per source.

Reads only the standardized table; imports schema alone.
"""

from __future__ import annotations

import pandas as pd

from linkage import schema

# Raw canonical field -> the derived column that is null when the raw value could not be used.
STANDARDIZED_COLUMN: dict[str, str] = {
    schema.NAME: schema.name_col(schema.NAME, "clean"),
    schema.FORMER_NAME: schema.name_col(schema.FORMER_NAME, "clean"),
    schema.GENDER: schema.GENDER_STD,
    schema.BIRTH_DATE: schema.BIRTH_DATE_STD,
    schema.ETHNICITY: schema.ETHNICITY_STD,
    schema.ID_NUMBER: schema.ID_STD,
    schema.PHONE: schema.PHONE_STD,
    schema.HUKOU_ADDRESS: schema.address_col(schema.HUKOU_ADDRESS, "province"),
    schema.CURRENT_ADDRESS: schema.address_col(schema.CURRENT_ADDRESS, "province"),
    schema.REGISTERED_AT: schema.REGISTERED_AT_STD,
}

# Raw canonical field -> its flag for a filler (不详, 无, '-', 13800000000): such a value
# says "unknown", so the profile counts it as missing, not as present but unusable.
PLACEHOLDER_FLAG: dict[str, str] = {
    schema.NAME: "name_placeholder",
    schema.FORMER_NAME: "former_name_placeholder",
    schema.GENDER: "gender_placeholder",
    schema.BIRTH_DATE: "birth_date_placeholder",
    schema.ETHNICITY: "ethnicity_placeholder",
    schema.ID_NUMBER: "id_placeholder",
    schema.PHONE: "phone_placeholder",
    schema.HUKOU_ADDRESS: "hukou_address_placeholder",
    schema.CURRENT_ADDRESS: "current_address_placeholder",
    schema.REGISTERED_AT: "registered_at_placeholder",
}

# Flags counted in the per-source summary line, in print order.
HEADLINE_FLAGS: tuple[str, ...] = (
    "id_checksum",
    "id_bad_date",
    "id_float_damaged",
    "id_malformed",
    "id_birth_conflict",
    "id_gender_conflict",
    "name_question_mark",
    "name_pua",
)


def profile_fields(records: pd.DataFrame) -> pd.DataFrame:
    """Return per source and field: records, share missing, share present but unusable.

    A filler value (flagged ``<field>_placeholder``: 不详, 无, '-') counts as missing.
    """
    rows = []
    for source, group in records.groupby(schema.SOURCE, sort=False):
        total = len(group)
        flags = (
            group[schema.QUALITY_FLAGS].fillna("")
            if schema.QUALITY_FLAGS in group
            else pd.Series("", index=group.index)
        )
        codes = schema.QUALITY_SEP + flags + schema.QUALITY_SEP
        for field, std_col in STANDARDIZED_COLUMN.items():
            raw = group[field] if field in group else pd.Series(index=group.index, dtype=object)
            present = raw.notna()
            if field in PLACEHOLDER_FLAG:
                marker = schema.QUALITY_SEP + PLACEHOLDER_FLAG[field] + schema.QUALITY_SEP
                present &= ~codes.str.contains(marker, regex=False)
            std = group[std_col] if std_col in group else pd.Series(index=group.index, dtype=object)
            unusable = present & std.isna()
            if field == schema.ID_NUMBER and schema.ID_VALID in group:
                unusable |= present & (group[schema.ID_VALID] != True)  # noqa: E712
            rows.append(
                {
                    "source": source,
                    "field": field,
                    "records": total,
                    "missing_pct": round(100 * (1 - present.mean()), 2) if total else 0.0,
                    "invalid_pct": round(100 * unusable.sum() / total, 2) if total else 0.0,
                }
            )
    return pd.DataFrame(rows, columns=["source", "field", "records", "missing_pct", "invalid_pct"])


def flag_counts(records: pd.DataFrame) -> pd.DataFrame:
    """Return a table of flag code × source with the number of records carrying each flag."""
    flags = records[schema.QUALITY_FLAGS].fillna("")
    exploded = flags.str.split(schema.QUALITY_SEP, regex=False).explode()
    frame = pd.DataFrame(
        {"flag": exploded, "source": records[schema.SOURCE].reindex(exploded.index)}
    )
    frame = frame[frame["flag"] != ""]
    if frame.empty:
        return pd.DataFrame()
    return pd.crosstab(frame["flag"], frame["source"]).sort_index()


def profile_summary(records: pd.DataFrame) -> pd.DataFrame:
    """Return one row per source with headline counts (ID checksum failures, conflicts …)."""
    counts = flag_counts(records)
    rows = []
    for source, group in records.groupby(schema.SOURCE, sort=False):
        row = {"source": source, "records": len(group)}
        for flag in HEADLINE_FLAGS:
            row[flag] = int(counts.at[flag, source]) if flag in counts.index else 0
        rows.append(row)
    return pd.DataFrame(rows)


def format_profile(records: pd.DataFrame) -> str:
    """Return the profile as plain text for the terminal."""
    fields = profile_fields(records)
    wide = fields.pivot_table(
        index="field", columns="source", values=["missing_pct", "invalid_pct"], sort=False
    )
    lines = ["Records and headline quality counts per source:"]
    lines.append(profile_summary(records).to_string(index=False))
    lines.append("")
    lines.append("Share of records (%) missing / present but unusable, per field:")
    lines.append(wide.to_string())
    counts = flag_counts(records)
    if not counts.empty:
        lines.append("")
        lines.append("Quality flags (records per source):")
        lines.append(counts.to_string())
    return "\n".join(lines)
