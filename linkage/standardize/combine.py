"""Standardization stage: derived columns and quality flags beside the raw canonical fields.

Each field module computes once per distinct value; this module only combines them and adds
the cross-field checks. It must not import the linking stages, the Linker or the CLI.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import StandardizeConfig
from linkage.standardize import address, dates, demographics, idnumber, names, phone

logger = logging.getLogger(__name__)


def join_flags(*parts: pd.Series) -> pd.Series:
    """Join per-field flag strings (``""`` when clean) into one ``|``-separated string per row."""
    result: np.ndarray | None = None
    for part in parts:
        values = part.fillna("").to_numpy(dtype=object)
        if result is None:
            result = values
            continue
        both = (result != "") & (values != "")
        joined = np.where(both, result + schema.QUALITY_SEP + values, result + values)
        result = joined
    if result is None:
        return pd.Series(dtype=object)
    return pd.Series(result, index=parts[0].index, dtype=object)


def split_flags(flags: pd.Series) -> pd.DataFrame:
    """Return a boolean table with one column per flag code present in ``flags``."""
    exploded = flags.fillna("").str.split(schema.QUALITY_SEP, regex=False).explode()
    exploded = exploded[exploded != ""]
    if exploded.empty:
        return pd.DataFrame(index=flags.index)
    table = pd.crosstab(exploded.index, exploded).astype(bool)
    return table.reindex(flags.index, fill_value=False)


def _prefix_flags(flags: pd.Series, field: str) -> pd.Series:
    """Prefix bare flag codes (``unparsed``) with the field name (``birth_date_unparsed``)."""
    codes, uniques = pd.factorize(flags.fillna(""))
    mapped = np.array(
        [
            schema.QUALITY_SEP.join(f"{field}_{c}" for c in u.split(schema.QUALITY_SEP) if c)
            for u in uniques
        ],
        dtype=object,
    )
    return pd.Series(mapped[codes] if len(mapped) else "", index=flags.index, dtype=object)


def all_flags() -> dict[str, str]:
    """Return every quality flag code the stage can emit, with its description."""
    flags: dict[str, str] = {}
    for field in (schema.NAME, schema.FORMER_NAME):
        for code, text in names.FLAGS.items():
            flags[field + code.removeprefix("name")] = text
    flags.update(idnumber.FLAGS)
    for field in (schema.BIRTH_DATE, schema.REGISTERED_AT):
        for code, text in dates.FLAGS.items():
            flags[f"{field}_{code}"] = text
    flags.update(dates.CROSS_FLAGS)
    flags.update(demographics.FLAGS)
    flags.update(phone.FLAGS)
    for field in (schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS):
        for code, text in address.FLAGS.items():
            flags[field + code.removeprefix("address")] = text
    return flags


def _column(records: pd.DataFrame, field: str) -> pd.Series:
    if field in records.columns:
        return records[field].astype(object)
    return pd.Series([None] * len(records), index=records.index, dtype=object)


def standardize(records: pd.DataFrame, config: StandardizeConfig | None = None) -> pd.DataFrame:
    """Return ``records`` with derived columns, ``rid`` row keys and ``quality_flags`` added."""
    config = config or StandardizeConfig()
    records = records.reset_index(drop=True)
    timings: dict[str, float] = {}
    parts: list[pd.DataFrame] = []
    flag_parts: list[pd.Series] = []

    def run(label: str, frame: pd.DataFrame) -> pd.DataFrame:
        flag_parts.append(frame.pop(schema.QUALITY_FLAGS))
        parts.append(frame)
        return frame

    t = time.perf_counter()
    for field in (schema.NAME, schema.FORMER_NAME):
        run(field, names.standardize_names(_column(records, field), field=field))
    timings["names"] = time.perf_counter() - t

    t = time.perf_counter()
    ids = run("id", idnumber.standardize_id_numbers(_column(records, schema.ID_NUMBER)))
    timings["id_number"] = time.perf_counter() - t

    t = time.perf_counter()
    date_std = {}
    for field, target in (
        (schema.BIRTH_DATE, schema.BIRTH_DATE_STD),
        (schema.REGISTERED_AT, schema.REGISTERED_AT_STD),
    ):
        parsed = dates.parse_dates(_column(records, field), pivot_year=config.two_digit_year_pivot)
        flag_parts.append(_prefix_flags(parsed[schema.QUALITY_FLAGS], field))
        date_std[target] = parsed["value"]
        parts.append(pd.DataFrame({target: parsed["value"]}, index=records.index))
    timings["dates"] = time.perf_counter() - t

    t = time.perf_counter()
    gender = run("gender", demographics.standardize_gender(_column(records, schema.GENDER)))
    run("ethnicity", demographics.standardize_ethnicity(_column(records, schema.ETHNICITY)))
    timings["gender_ethnicity"] = time.perf_counter() - t

    t = time.perf_counter()
    run("phone", phone.standardize_phones(_column(records, schema.PHONE)))
    timings["phone"] = time.perf_counter() - t

    t = time.perf_counter()
    run(
        "hukou",
        address.standardize_addresses(
            _column(records, schema.HUKOU_ADDRESS),
            schema.HUKOU_ADDRESS,
            region_codes=ids[schema.ID_REGION_CODE],
        ),
    )
    run(
        "current",
        address.standardize_addresses(
            _column(records, schema.CURRENT_ADDRESS), schema.CURRENT_ADDRESS
        ),
    )
    timings["addresses"] = time.perf_counter() - t

    # Cross-field checks: the ID embeds birth date and gender; a disagreement means one of
    # the two was mistyped, which the comparison stage must weigh.
    birth = date_std[schema.BIRTH_DATE_STD]
    id_birth = ids[schema.ID_BIRTH_DATE]
    birth_conflict = birth.notna() & id_birth.notna() & (birth != id_birth)
    not_own = idnumber.not_own_ids(birth, id_birth)
    registered = date_std[schema.REGISTERED_AT_STD]
    both_dates = birth.notna() & registered.notna()
    after_registered = both_dates & (birth.where(both_dates, "") > registered.where(both_dates, ""))
    id_gender = ids[schema.ID_GENDER]
    gender_std = gender[schema.GENDER_STD]
    gender_conflict = gender_std.notna() & id_gender.notna() & (gender_std != id_gender)
    flag_parts.append(
        pd.Series(np.where(birth_conflict, "id_birth_conflict", ""), index=records.index)
    )
    flag_parts.append(
        pd.Series(np.where(gender_conflict, "id_gender_conflict", ""), index=records.index)
    )
    flag_parts.append(pd.Series(np.where(not_own, "id_not_own", ""), index=records.index))
    flag_parts.append(
        pd.Series(
            np.where(after_registered, "birth_date_after_registered", ""), index=records.index
        )
    )

    derived = pd.concat(parts, axis=1)
    out = pd.concat([records, derived], axis=1)
    out[schema.QUALITY_FLAGS] = join_flags(*flag_parts)
    out.insert(0, schema.ROW, np.arange(len(out), dtype=np.int64))
    logger.info(
        "standardized %d records: %s",
        len(out),
        ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
    )
    out.attrs["timings"] = timings
    return out
