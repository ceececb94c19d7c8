"""Service-coverage indicators per destination district: health files, child vaccination,
maternal care and multi-registry coverage of migrants, computed over linked identities.

"Migrant" here means an identity with a record in ``population_sources`` (default: the police
registry of migrants, 流动人口登记); hukou is not checked, so a local registered there counts
too. Pure pandas over the identities and standardized records tables; imports the schema, the
errors and the date standardizer, never the Linker, the CLI or the store.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.errors import InputError
from linkage.standardize.dates import parse_date

logger = logging.getLogger(__name__)

# Health-registry record kinds as the demo generator writes them (档案类型, unmapped so it
# passes through as raw.档案类型); real registries pass their own column name and values.
KIND_COLUMN = schema.raw_col("档案类型")
HEALTH_FILE = "健康档案"
VACCINATION = "预防接种"
MATERNAL_CARE = "孕产妇保健"
FAMILY_PLANNING = "计划生育服务"
# Destination district: police 现居住地所属区, health 所属区, else the parsed current address.
DISTRICT_COLUMNS: tuple[str, ...] = (
    schema.raw_col("现居住地所属区"),
    schema.raw_col("所属区"),
    schema.address_col(schema.CURRENT_ADDRESS, "district"),
)
POPULATION_SOURCES: tuple[str, ...] = ("police",)
OVERALL = "overall"
UNKNOWN_DISTRICT = "unknown"
# Policy targets of the national migrant health-service plans: migrant health files >= 80 %, child vaccination >= 95 %.
HEALTH_FILE_TARGET = 0.80
VACCINATION_TARGET = 0.95

INDICATOR_COLUMNS = [
    "indicator",
    "district",
    "eligible",
    "covered",
    "coverage",
    "target",
    "gap",
    "unknown",
]
PERSON_COLUMNS = [
    schema.IDENTITY_ID,
    "district",
    "birth_date",
    "age",
    "gender",
    "sources",
    "n_sources",
    "kinds",
    "first_registered",
    "first_registered_population",
    "in_population",
    "resident",
]


def _date(value: object) -> pd.Timestamp:
    """A reference date: a date or timestamp object, or text read by the project's date
    standardizer (``2026-12-01``, ``20261201``, ``2026/12/1``, ``2026年12月1日``,
    ``二〇二六年十二月一日``), as a birth date or registration date is read."""
    if isinstance(value, str):
        if not value.strip():
            raise InputError("reference_date is missing")
        parsed = parse_date(value)
        if parsed is None:
            raise InputError(
                f"reference_date {value!r} is not a date (write it as 2026-12-01, 20261201 "
                "or 2026年12月1日)"
            )
        return pd.Timestamp(parsed)
    if not isinstance(value, (datetime.date, np.datetime64)):
        raise InputError(
            f"reference_date must be a date or date text such as '2026-12-01', "
            f"not {type(value).__name__}"
        )
    out = pd.Timestamp(value)
    if pd.isna(out):
        raise InputError("reference_date is missing")
    return out.normalize()


def _listed(values: Sequence[object], limit: int = 12) -> str:
    """Values for a message: sorted, the first ``limit``, and how many more."""
    shown = sorted(str(v) for v in values)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more if shown else "(none)"


def _check_kinds(
    records: pd.DataFrame, kind_column: str, wanted: Mapping[str, Sequence[str]]
) -> list[str]:
    """Check that the record-kind column holds the kinds the indicators count.

    ``wanted``: indicator name -> the kinds that cover it. Raises InputError when
    ``kind_column`` is not in ``records`` (naming the unmapped ``raw.*`` columns found) or
    when none of the wanted kinds is among its values (naming the values found): every such
    indicator would read 0 % coverage. Returns one warning per indicator whose kinds alone are
    absent while another's are present (a real zero is possible: an extract without maternal
    care), also logged at WARNING.
    """
    if kind_column not in records:
        raw = [c for c in records.columns if str(c).startswith(schema.RAW_PREFIX)]
        raise InputError(
            f"the record-kind column {kind_column!r} is not in the records; unmapped columns "
            f"found: {_listed(raw)}; pass kind_column= naming the column that holds "
            f"{_listed({k for kinds in wanted.values() for k in kinds})}"
        )
    found = {str(v).strip() for v in records[kind_column].dropna().unique()} - {""}
    absent = {name: list(kinds) for name, kinds in wanted.items() if not found & set(kinds)}
    if len(absent) == len(wanted):
        expected = "; ".join(f"{name}: {_listed(kinds)}" for name, kinds in absent.items())
        raise InputError(
            f"none of the record kinds counted ({expected}) is a value of {kind_column!r}; "
            f"its values: {_listed(found)}; pass the kinds your registry writes "
            "(health_file_kinds=, vaccination_kinds=, maternal_kinds=, or kinds= of one "
            "indicator)"
        )
    warnings = [
        f"{name}: none of {_listed(kinds)} is a value of {kind_column!r} (its values: "
        f"{_listed(found)}), so its coverage is 0"
        for name, kinds in absent.items()
    ]
    for line in warnings:
        logger.warning("%s", line)
    return warnings


def _check_population(records: pd.DataFrame, population_sources: Sequence[str]) -> list[str]:
    """InputError when no record is in ``population_sources`` (the migrant denominator would be
    empty); a warning (logged, returned) for each listed source with no record."""
    if isinstance(population_sources, str):
        raise InputError(
            f"population_sources must be a list of source names, not the text "
            f"{population_sources!r}"
        )
    present = set(records[schema.SOURCE].dropna().astype(str).unique())
    listed = [str(s) for s in population_sources]
    missing = [s for s in listed if s not in present]
    if len(missing) == len(listed):
        raise InputError(
            f"no record is from population_sources ({_listed(listed)}), the registry that "
            f"defines who counts as a migrant; sources in the records: {_listed(present)}"
        )
    warnings = [
        f"population source {s!r} has no record (sources in the records: {_listed(present)})"
        for s in missing
    ]
    for line in warnings:
        logger.warning("%s", line)
    return warnings


def _dates(records: pd.DataFrame, column: str) -> pd.Series:
    """ISO date strings (standardized columns) to datetime64, parsed once per distinct value."""
    if column not in records:
        return pd.Series(pd.NaT, index=records.index, dtype="datetime64[ns]")
    codes, uniques = pd.factorize(records[column])
    parsed = pd.to_datetime(pd.Series(uniques, dtype=object), format="ISO8601", errors="coerce")
    values = np.append(parsed.to_numpy(dtype="datetime64[ns]"), np.datetime64("NaT", "ns"))
    # code -1 (null) indexes the NaT appended last
    return pd.Series(values[codes], index=records.index)


def _first_non_null(records: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    out = pd.Series(None, index=records.index, dtype=object)
    for column in columns:
        if column in records:
            values = records[column].where(records[column].astype(str).str.strip() != "")
            out = out.where(out.notna(), values)
    return out


def _mode(ids: np.ndarray, values: pd.Series, k: int) -> pd.Series:
    """Most frequent non-null value per identity code 0..k-1; ties go to the smallest value."""
    codes, uniques = pd.factorize(values, sort=True)
    keep = codes >= 0
    frame = pd.DataFrame({"id": ids[keep], "v": codes[keep]})
    counts = frame.groupby(["id", "v"], sort=True).size().reset_index(name="n")
    counts = counts.sort_values(["id", "n"], ascending=[True, False], kind="stable")
    first = counts.drop_duplicates("id")
    out = pd.Series(pd.NA, index=pd.RangeIndex(k), dtype=object)
    out.iloc[first["id"].to_numpy()] = np.asarray(uniques, dtype=object)[first["v"].to_numpy()]
    return out


def _value_sets(ids: np.ndarray, values: pd.Series, k: int) -> tuple[pd.Series, np.ndarray]:
    """Per identity code, its distinct non-blank values sorted and "|"-joined, and their count.

    Vectorized as a bit set per identity (one bit per distinct value, summed over distinct
    pairs); each distinct bit set is turned into text once.
    """
    text = values.astype(str).str.strip()
    codes, uniques = pd.factorize(text.where(values.notna() & (text != "")), sort=True)
    if len(uniques) > 62:
        raise InputError(f"{len(uniques)} distinct values are too many for a set column")
    keep = codes >= 0
    pairs = pd.DataFrame({"id": ids[keep], "c": codes[keep]}).drop_duplicates()
    masks = np.zeros(k, dtype=np.int64)
    summed = pairs.assign(b=np.left_shift(1, pairs["c"].to_numpy(np.int64))).groupby("id")["b"]
    summed = summed.sum()
    masks[summed.index.to_numpy()] = summed.to_numpy()
    distinct, inverse = np.unique(masks, return_inverse=True)
    labels = np.array(
        ["|".join(u for i, u in enumerate(uniques) if (int(m) >> i) & 1) for m in distinct],
        dtype=object,
    )
    counts = np.array([bin(int(m)).count("1") for m in distinct], dtype=np.int64)
    return pd.Series(labels[inverse]), counts[inverse]


def _age_years(birth: pd.Series, ref: pd.Timestamp) -> pd.Series:
    """Completed years at ``ref``; null where the birth date is unknown or after ``ref``."""
    before_birthday = (birth.dt.month > ref.month) | (
        (birth.dt.month == ref.month) & (birth.dt.day > ref.day)
    )
    age = ref.year - birth.dt.year - before_birthday.astype("Int64")
    return age.where(birth.notna() & (birth <= ref)).astype("Int64")


def _identity_codes(identities: pd.DataFrame, records: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """Identity code of every record (aligned with ``records``) and the identity ids."""
    keys = [schema.SOURCE, schema.RECORD_ID]
    for name, table, need in (
        ("identities", identities, keys + [schema.IDENTITY_ID]),
        ("records", records, keys),
    ):
        missing = [c for c in need if c not in table]
        if missing:
            raise InputError(f"{name} table lacks columns {missing}")
    codes, uniques = pd.factorize(identities[schema.IDENTITY_ID])
    everyone = pd.Index(uniques, name=schema.IDENTITY_ID)
    # Fast path: a run's identities come in the order of its records.
    if len(identities) == len(records) and all(
        np.array_equal(identities[c].astype(str).to_numpy(), records[c].astype(str).to_numpy())
        for c in keys
    ):
        return codes, everyone
    index = pd.MultiIndex.from_arrays([identities[c].astype(str) for c in keys])
    if index.has_duplicates:
        raise InputError("identities hold a (source, record_id) more than once")
    pos = index.get_indexer(pd.MultiIndex.from_arrays([records[c].astype(str) for c in keys]))
    if (pos < 0).any():
        first = records.loc[pos < 0, keys].iloc[0].tolist()
        raise InputError(
            f"{int((pos < 0).sum())} records have no identity (first: {first}); "
            "pass the identities of the same run"
        )
    return codes[pos], everyone


def reference_date_of(records: pd.DataFrame) -> pd.Timestamp:
    """Default reference date: the latest standardized registration date in ``records``."""
    latest = _dates(records, schema.REGISTERED_AT_STD).max()
    if pd.isna(latest):
        raise InputError("no record has a registration date; pass reference_date")
    return latest.normalize()


def person_table(
    identities: pd.DataFrame,
    records: pd.DataFrame,
    reference_date: object = None,
    *,
    population_sources: Sequence[str] = POPULATION_SOURCES,
    kind_column: str = KIND_COLUMN,
    district_columns: Sequence[str] = DISTRICT_COLUMNS,
    residence_months: int = 6,
) -> pd.DataFrame:
    """One row per identity as of ``reference_date``: district, age, gender, sources, kinds.

    Records registered after the reference date are left out; a record with no registration
    date still counts as a service record but proves no residence. ``in_population`` (the
    migrants the indicators count): the identity has a record in ``population_sources``
    dated at least ``residence_months`` before the reference date; hukou is not checked, so
    to count only people whose hukou is elsewhere, pass records filtered on a hukou column
    (see docs/analyst.md). ``resident``: the same over every source.

    ``reference_date``: default the latest registration date; a date, a timestamp or text
    read by the project's date standardizer (``2026-12-01``, ``2026年12月1日``).
    Raises InputError when no record is from ``population_sources`` (the names of the
    sources found are given) or the reference date is not a date. ``attrs["warnings"]``
    lists what was logged at WARNING: a listed population source without records, or no
    identity resident long enough to be counted.
    """
    warnings = _check_population(records, population_sources)
    ref = reference_date_of(records) if reference_date is None else _date(reference_date)
    cutoff = ref - pd.DateOffset(months=residence_months)
    codes, everyone = _identity_codes(identities, records)
    k = len(everyone)
    reg = _dates(records, schema.REGISTERED_AT_STD)
    later = (reg > ref).to_numpy()
    if later.any():
        logger.info("%d records registered after %s left out", int(later.sum()), ref.date())
    if reg.isna().any():
        logger.info("%d records have no registration date", int(reg.isna().sum()))
    rec = records.loc[~later] if later.any() else records
    reg, ids = reg[~later], codes[~later]

    # A valid ID's embedded birth date and gender beat the typed ones (typos, lunar dates).
    valid = rec[schema.ID_VALID].eq(True) if schema.ID_VALID in rec else pd.Series(False, rec.index)
    birth = _mode(ids, _dates(rec, schema.ID_BIRTH_DATE).where(valid), k)
    birth = birth.where(birth.notna(), _mode(ids, _dates(rec, schema.BIRTH_DATE_STD), k))
    none = pd.Series(None, index=rec.index, dtype=object)
    gender = _mode(ids, rec.get(schema.ID_GENDER, none).where(valid), k)
    gender = gender.where(gender.notna(), _mode(ids, rec.get(schema.GENDER_STD, none), k))

    in_pop = rec[schema.SOURCE].isin(list(population_sources)).to_numpy()
    # District of the population registry first (its record defines the denominator), latest
    # registration first: people move within the city.
    district = pd.DataFrame(
        {
            "id": ids,
            "pop": in_pop,
            "reg": reg.to_numpy(),
            "d": _first_non_null(rec, district_columns),
        }
    ).dropna(subset=["d"])
    # The district breaks ties so that row order never changes the answer.
    district = district.sort_values(
        ["pop", "reg", "d"], ascending=[False, False, True], na_position="last", kind="stable"
    )
    district = district.drop_duplicates("id")
    district_of = np.full(k, UNKNOWN_DISTRICT, dtype=object)
    district_of[district["id"].to_numpy()] = district["d"].to_numpy()

    sources, n_sources = _value_sets(ids, rec[schema.SOURCE], k)
    kind = rec[kind_column] if kind_column in rec else none
    kinds, _ = _value_sets(ids, kind, k)
    first_any = reg.groupby(ids).min().reindex(range(k))
    first_pop = reg[in_pop].groupby(ids[in_pop]).min().reindex(range(k))

    out = pd.DataFrame({schema.IDENTITY_ID: everyone.to_numpy()})
    out["district"] = district_of
    out["birth_date"] = pd.to_datetime(birth.to_numpy(dtype=object))
    out["age"] = _age_years(out["birth_date"], ref)
    out["gender"] = gender.to_numpy()
    out["sources"] = sources.to_numpy()
    out["n_sources"] = n_sources
    out["kinds"] = kinds.to_numpy()
    out["first_registered"] = first_any.to_numpy()
    out["first_registered_population"] = first_pop.to_numpy()
    out["in_population"] = (out["first_registered_population"] <= cutoff).to_numpy()
    out["resident"] = (out["first_registered"] <= cutoff).to_numpy()
    if not out["in_population"].any():
        line = (
            f"no identity has a record in population_sources ({_listed(population_sources)}) "
            f"registered by {cutoff.date()} ({residence_months} months before {ref.date()}): "
            "every indicator but multi_registry has no eligible person"
        )
        logger.warning("%s", line)
        warnings.append(line)
    out = out[PERSON_COLUMNS]
    out.attrs["reference_date"] = ref
    out.attrs["warnings"] = warnings
    return out


def _has_kind(kinds: pd.Series, wanted: Sequence[str]) -> pd.Series:
    """Whether an identity's "|"-joined kinds include any of ``wanted``: once per distinct value."""
    codes, uniques = pd.factorize(kinds.fillna(""))
    want = set(wanted)
    hit = np.array([bool(want & set(u.split("|"))) for u in uniques], dtype=bool)
    return pd.Series(hit[codes] if len(codes) else np.zeros(0, bool), index=kinds.index)


def _coverage_table(
    name: str,
    persons: pd.DataFrame,
    eligible: pd.Series,
    covered: pd.Series,
    unknown: pd.Series,
    target: float | None,
) -> pd.DataFrame:
    """Overall row then one row per district: eligible, covered, coverage, target, gap."""
    frame = pd.DataFrame(
        {
            "district": persons["district"].to_numpy(),
            "eligible": eligible.to_numpy(bool),
            "covered": (eligible & covered).to_numpy(bool),
            "unknown": unknown.to_numpy(bool),
        }
    )
    per = frame.groupby("district", sort=True)[["eligible", "covered", "unknown"]].sum()
    per = per[(per["eligible"] > 0) | (per["unknown"] > 0)]
    total = pd.DataFrame(
        [frame[["eligible", "covered", "unknown"]].sum()], index=pd.Index([OVERALL])
    )
    out = pd.concat([total, per]).rename_axis("district").reset_index()
    out["eligible"] = out["eligible"].astype(np.int64)
    out["covered"] = out["covered"].astype(np.int64)
    out["unknown"] = out["unknown"].astype(np.int64)
    # No eligible person: coverage is undefined, not zero.
    out["coverage"] = out["covered"] / out["eligible"].where(out["eligible"] > 0)
    out["target"] = np.nan if target is None else float(target)
    out["gap"] = out["coverage"] - out["target"]
    out.insert(0, "indicator", name)
    return out[INDICATOR_COLUMNS]


def _in_ages(persons: pd.DataFrame, ages: tuple[int, int]) -> pd.Series:
    lo, hi = ages
    return persons["age"].between(lo, hi).fillna(False).astype(bool)


def _health_file(persons: pd.DataFrame, kinds: Sequence[str], target: float | None):
    eligible = persons["in_population"]
    none = pd.Series(False, index=persons.index)
    covered = _has_kind(persons["kinds"], kinds)
    return _coverage_table("health_file", persons, eligible, covered, none, target)


def _child_vaccination(persons, kinds, ages, target):
    base = persons["in_population"]
    eligible = base & _in_ages(persons, ages)
    unknown = base & persons["age"].isna()
    covered = _has_kind(persons["kinds"], kinds)
    return _coverage_table("child_vaccination", persons, eligible, covered, unknown, target)


def _maternal_care(persons, kinds, ages, target):
    base = persons["in_population"]
    female = persons["gender"].eq("F").fillna(False).astype(bool)
    eligible = base & female & _in_ages(persons, ages)
    unknown = base & (persons["age"].isna() | persons["gender"].isna())
    covered = _has_kind(persons["kinds"], kinds)
    return _coverage_table("maternal_care", persons, eligible, covered, unknown, target)


def _multi_registry(persons, min_sources, target):
    eligible = persons["resident"]
    none = pd.Series(False, index=persons.index)
    covered = persons["n_sources"] >= min_sources
    return _coverage_table("multi_registry", persons, eligible, covered, none, target)


def health_file_coverage(
    identities: pd.DataFrame,
    records: pd.DataFrame,
    reference_date: object = None,
    *,
    kind_column: str = KIND_COLUMN,
    kinds: Sequence[str] = (HEALTH_FILE,),
    target: float | None = HEALTH_FILE_TARGET,
    **options: Any,
) -> pd.DataFrame:
    """Share of migrants registered with the police 6+ months who have a health file.

    Raises InputError when ``kind_column`` is missing or holds none of ``kinds`` (see
    :func:`_check_kinds`), and as :func:`person_table` does.
    """
    warnings = _check_kinds(records, kind_column, {"health_file": kinds})
    persons = person_table(identities, records, reference_date, kind_column=kind_column, **options)
    return _with_warnings(_health_file(persons, kinds, target), persons, warnings)


def child_vaccination_coverage(
    identities: pd.DataFrame,
    records: pd.DataFrame,
    reference_date: object = None,
    *,
    kind_column: str = KIND_COLUMN,
    kinds: Sequence[str] = (VACCINATION,),
    ages: tuple[int, int] = (0, 6),
    target: float | None = VACCINATION_TARGET,
    **options: Any,
) -> pd.DataFrame:
    """Share of registered migrant children aged 0–6 (completed years) with a vaccination record.

    Raises InputError as :func:`health_file_coverage` does.
    """
    warnings = _check_kinds(records, kind_column, {"child_vaccination": kinds})
    persons = person_table(identities, records, reference_date, kind_column=kind_column, **options)
    return _with_warnings(_child_vaccination(persons, kinds, ages, target), persons, warnings)


def maternal_care_coverage(
    identities: pd.DataFrame,
    records: pd.DataFrame,
    reference_date: object = None,
    *,
    kind_column: str = KIND_COLUMN,
    kinds: Sequence[str] = (MATERNAL_CARE,),
    ages: tuple[int, int] = (15, 49),
    target: float | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Share of registered migrant women aged 15–49 with a maternal-care record.

    No registry records pregnancy itself, so the denominator is women of child-bearing age,
    not pregnant women: read it as maternal-care reach, with no policy target by default.
    Raises InputError as :func:`health_file_coverage` does.
    """
    warnings = _check_kinds(records, kind_column, {"maternal_care": kinds})
    persons = person_table(identities, records, reference_date, kind_column=kind_column, **options)
    return _with_warnings(_maternal_care(persons, kinds, ages, target), persons, warnings)


def multi_registry_coverage(
    identities: pd.DataFrame,
    records: pd.DataFrame,
    reference_date: object = None,
    *,
    min_sources: int = 2,
    target: float | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Share of migrants resident 6+ months (any registry) found in ``min_sources`` registries."""
    persons = person_table(identities, records, reference_date, **options)
    return _with_warnings(_multi_registry(persons, min_sources, target), persons, [])


def coverage_indicators(
    identities: pd.DataFrame,
    records: pd.DataFrame,
    reference_date: object = None,
    *,
    health_file_kinds: Sequence[str] = (HEALTH_FILE,),
    vaccination_kinds: Sequence[str] = (VACCINATION,),
    maternal_kinds: Sequence[str] = (MATERNAL_CARE,),
    targets: dict[str, float | None] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """All four indicators in one long table (person table built once).

    Columns: ``indicator``; ``district`` (``overall`` first, then each destination district;
    ``unknown`` for identities with no district in any record); ``eligible`` (identities in
    the indicator's denominator); ``covered`` (those with a record of the indicator's kinds,
    or in 2+ registries); ``coverage`` (covered / eligible, NaN with no eligible person);
    ``target``, ``gap`` (coverage - target); ``unknown``: identities in the population left
    out of the denominator because their age (or, for maternal care, gender) is unknown, so
    the true eligible count may be up to eligible + unknown (0 for health_file and
    multi_registry, which need neither).

    "Migrant": an identity with a record in ``population_sources`` (default the police
    registry) for ``residence_months`` (6); hukou is not checked (see :func:`person_table`).
    ``reference_date`` may be text the date standardizer reads (``2026年12月1日``).
    ``options`` go to :func:`person_table`: population_sources, kind_column, district_columns,
    residence_months.

    Loud, not silent, where a figure would be 0 % by a naming mismatch: InputError when
    ``kind_column`` is not in the records, when none of the three indicators' kinds is among
    its values, or when no record is from ``population_sources`` (each message names what was
    expected and what was found). A WARNING is logged, and listed in the table's
    ``attrs["warnings"]``, where a zero may be real: one indicator's kinds absent while
    another's are present, one of several population sources without records, or no identity
    resident long enough.
    """
    if "kinds" in options:
        # person_table would say "unexpected keyword argument 'kinds'": name the right ones
        raise TypeError(
            "coverage_indicators takes the kinds per indicator: health_file_kinds=, "
            "vaccination_kinds=, maternal_kinds= (kinds= is for one indicator's function, "
            "such as health_file_coverage)"
        )
    goals = {
        "health_file": HEALTH_FILE_TARGET,
        "child_vaccination": VACCINATION_TARGET,
        "maternal_care": None,
        "multi_registry": None,
        **(targets or {}),
    }
    warnings = _check_kinds(
        records,
        options.get("kind_column", KIND_COLUMN),
        {
            "health_file": health_file_kinds,
            "child_vaccination": vaccination_kinds,
            "maternal_care": maternal_kinds,
        },
    )
    persons = person_table(identities, records, reference_date, **options)
    table = pd.concat(
        [
            _health_file(persons, health_file_kinds, goals["health_file"]),
            _child_vaccination(persons, vaccination_kinds, (0, 6), goals["child_vaccination"]),
            _maternal_care(persons, maternal_kinds, (15, 49), goals["maternal_care"]),
            _multi_registry(persons, 2, goals["multi_registry"]),
        ],
        ignore_index=True,
    )
    return _with_warnings(table, persons, warnings)


def _with_warnings(table: pd.DataFrame, persons: pd.DataFrame, warnings: list[str]):
    """``table`` with ``attrs["warnings"]``: the person table's then the kind check's."""
    table.attrs["warnings"] = [*persons.attrs.get("warnings", []), *warnings]
    return table


def below_target(indicators: pd.DataFrame, n: int = 10, min_eligible: int = 1) -> pd.DataFrame:
    """Districts furthest below their indicator's target (most negative gap first)."""
    rows = indicators[
        (indicators["district"] != OVERALL)
        & indicators["target"].notna()
        & (indicators["eligible"] >= min_eligible)
        & (indicators["gap"] < 0)
    ]
    return (
        rows.sort_values(["gap", "eligible"], ascending=[True, False])
        .head(n)
        .reset_index(drop=True)
    )


__all__ = [
    "FAMILY_PLANNING",
    "HEALTH_FILE",
    "HEALTH_FILE_TARGET",
    "INDICATOR_COLUMNS",
    "MATERNAL_CARE",
    "OVERALL",
    "PERSON_COLUMNS",
    "UNKNOWN_DISTRICT",
    "VACCINATION",
    "VACCINATION_TARGET",
    "below_target",
    "child_vaccination_coverage",
    "coverage_indicators",
    "health_file_coverage",
    "maternal_care_coverage",
    "multi_registry_coverage",
    "person_table",
    "reference_date_of",
]
