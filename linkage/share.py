"""Department-scoped views of golden records: sharing policy, masks and its privacy check.

Pure functions over the golden-records and links tables; imports schema, errors, io and the
standardizers, never the store, the Linker or the CLI.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linkage import schema
from linkage.config import format_validation_errors
from linkage.errors import ConfigError, InputError
from linkage.io import atomic_write
from linkage.standardize._distinct import map_distinct
from linkage.standardize.address import standardize_addresses
from linkage.zh.surnames import split_surname

logger = logging.getLogger(__name__)

Mask = Literal[
    "none", "drop", "first6_last4", "first6", "first3_last4", "surname_only", "year",
    "year_month", "district",
]  # fmt: skip

# Golden-record fields a department may be granted, in export column order.
GRANTABLE_FIELDS: tuple[str, ...] = (
    schema.NAME,
    schema.ID_NUMBER,
    schema.GENDER,
    schema.BIRTH_DATE,
    schema.ETHNICITY,
    schema.PHONE,
    schema.HUKOU_ADDRESS,
    schema.CURRENT_ADDRESS,
)
# Masks that apply to each field, least revealing first; the position is the disclosure level.
MASK_LEVELS: dict[str, tuple[str, ...]] = {
    schema.NAME: ("drop", "surname_only", "none"),
    schema.ID_NUMBER: ("drop", "first6", "first6_last4", "none"),
    schema.GENDER: ("drop", "none"),
    schema.BIRTH_DATE: ("drop", "year", "year_month", "none"),
    schema.ETHNICITY: ("drop", "none"),
    schema.PHONE: ("drop", "first3_last4", "none"),
    schema.HUKOU_ADDRESS: ("drop", "district", "none"),
    schema.CURRENT_ADDRESS: ("drop", "district", "none"),
}
# Fields an aggregated (counts-only) view may group by, with the masks allowed there.
AGGREGATE_MASKS: dict[str, tuple[str, ...]] = {
    schema.GENDER: ("none",),
    schema.ETHNICITY: ("none",),
    schema.BIRTH_DATE: ("year", "year_month"),
    schema.HUKOU_ADDRESS: ("district",),
    schema.CURRENT_ADDRESS: ("district",),
}

# Export columns besides the granted fields.
PSEUDONYM_ID = "pseudonym_id"
SOURCES = "sources"
SOURCE_RECORDS = "source_records"
PERSONS = "persons"
EXPORT_FLAGS = "export_flags"

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "configs" / "sharing.yaml"


def _level(field: str, mask: str) -> int:
    return MASK_LEVELS[field].index(mask)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DepartmentPolicy(_Model):
    """What one department may see of each identity, and why."""

    purpose: str = Field(min_length=1)
    # granted field -> mask ("none" = unmasked); a list grants the fields unmasked
    fields: dict[str, Mask] = Field(default_factory=dict)
    identity: Literal["identity_id", "pseudonym", "none"] = "identity_id"
    sources: bool = False  # registry names per identity
    record_ids: Literal["none", "own", "all"] = "none"  # source record ids per identity
    own_sources: list[str] = Field(default_factory=list)  # registries run by this department
    rows: Literal["all", "own"] = "all"  # own: only identities with a record in own_sources
    aggregate: bool = False  # counts per combination of the granted (masked) fields only
    on_conflict: Literal["refuse", "coarsen"] | None = None  # overrides the policy default

    @field_validator("fields", mode="before")
    @classmethod
    def _list_means_unmasked(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(f): "none" for f in value}
        return value

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        problems = []
        for field, mask in fields.items():
            if field not in MASK_LEVELS:
                problems.append(
                    f"'{field}' is not a golden-record field; expected one of "
                    f"{', '.join(GRANTABLE_FIELDS)}"
                )
            elif mask not in MASK_LEVELS[field]:
                problems.append(
                    f"mask '{mask}' does not apply to '{field}'; "
                    f"expected one of {', '.join(MASK_LEVELS[field])}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return {f: m for f, m in fields.items() if m != "drop"}

    @model_validator(mode="after")
    def _check_combination(self) -> DepartmentPolicy:
        if (self.record_ids == "own" or self.rows == "own") and not self.own_sources:
            raise ValueError("record_ids: own and rows: own need own_sources")
        if self.aggregate:
            if self.identity != "none":
                raise ValueError("an aggregated view carries no identity; set identity: none")
            if self.record_ids != "none":
                raise ValueError("an aggregated view carries no record ids; set record_ids: none")
            for field, mask in self.fields.items():
                allowed = AGGREGATE_MASKS.get(field, ())
                if mask not in allowed:
                    raise ValueError(
                        f"aggregated views group by {field} only with mask "
                        f"{' or '.join(allowed) or '(not allowed)'}, got '{mask}'"
                    )
        return self


class SharingPolicy(_Model):
    """Every department's view, and what to do when masks combine into a disclosure."""

    version: int = 1
    on_conflict: Literal["refuse", "coarsen"] = "refuse"
    # environment variable holding the key of pseudonymous identity ids
    pseudonym_key_env: str = "LINKAGE_PSEUDONYM_KEY"
    # aggregated cells with fewer persons get a null count and a flag
    min_cell: int = Field(default=5, ge=1)
    departments: dict[str, DepartmentPolicy] = Field(min_length=1)
    source_path: Path | None = Field(default=None, exclude=True)


def policy_from_dict(data: Any, *, path: str | Path | None = None) -> SharingPolicy:
    """Validate a sharing policy given as a dict and check every department's whole export."""
    where = str(path) if path else "<sharing policy>"
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with a 'departments' key", path=where)
    try:
        policy = SharingPolicy.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_errors(exc)
        raise ConfigError(
            f"{len(lines)} problem(s):\n  " + "\n  ".join(lines), path=where
        ) from None
    policy.source_path = Path(path) if path else None
    problems = []
    for name in policy.departments:
        try:
            effective_department(policy, name)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n  " + "\n  ".join(problems), path=where)
    return policy


def load_policy(path: str | Path = DEFAULT_POLICY_PATH) -> SharingPolicy:
    """Load, validate and check a sharing policy YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", path=str(path)) from None
    return policy_from_dict(data, path=path)


def disclosed_levels(fields: dict[str, str]) -> dict[str, int]:
    """Level of each field an export reveals, counting what the ID mask and the other fields imply.

    The ID's region code is the hukou county at issue (district level), its 17th digit the
    gender (first6_last4 keeps it: the last four are sequence, gender digit and check), and its
    hidden eight digits are the birth date: a birth date finer than the year next to a
    first6_last4 mask rebuilds the ID (year and month leave about 31 days, and the kept check
    digit narrows those to about three).
    """
    level = {f: _level(f, fields.get(f, "drop")) for f in GRANTABLE_FIELDS}
    id_mask = fields.get(schema.ID_NUMBER, "drop")
    implied: dict[str, str] = {}
    if id_mask in ("first6", "first6_last4", "none"):
        implied[schema.HUKOU_ADDRESS] = "district"
    if id_mask in ("first6_last4", "none"):
        implied[schema.GENDER] = "none"
    if id_mask == "none":
        implied[schema.BIRTH_DATE] = "none"
    if id_mask == "first6_last4" and level[schema.BIRTH_DATE] >= _level(
        schema.BIRTH_DATE, "year_month"
    ):
        implied[schema.ID_NUMBER] = "none"
        implied[schema.BIRTH_DATE] = "none"
    for field, mask in implied.items():
        level[field] = max(level[field], _level(field, mask))
    return level


def _conflicts(fields: dict[str, str]) -> list[str]:
    granted = {f: _level(f, fields.get(f, "drop")) for f in GRANTABLE_FIELDS}
    shown = disclosed_levels(fields)
    id_mask = fields.get(schema.ID_NUMBER, "drop")
    out = []
    for field in GRANTABLE_FIELDS:
        if shown[field] > granted[field]:
            reveals = MASK_LEVELS[field][shown[field]]
            if field == schema.ID_NUMBER:
                why = (
                    f"{schema.BIRTH_DATE} ({fields.get(schema.BIRTH_DATE)}) fills its hidden digits"
                )
            else:
                why = f"{schema.ID_NUMBER} ({id_mask}) contains it"
            out.append(
                f"{field} is granted as '{fields.get(field, 'drop')}' but the export reveals "
                f"'{reveals}': {why}"
            )
    return out


def _coarsen(fields: dict[str, str]) -> dict[str, str]:
    """Reduce masks until the export reveals no more than granted: birth date first, then ID."""
    fields = dict(fields)
    while _conflicts(fields):
        birth = fields.get(schema.BIRTH_DATE, "drop")
        rebuild = fields.get(schema.ID_NUMBER) == "first6_last4" and birth in ("none", "year_month")
        if rebuild:
            fields[schema.BIRTH_DATE] = "year"
            continue
        order = MASK_LEVELS[schema.ID_NUMBER]
        coarser = order[_level(schema.ID_NUMBER, fields[schema.ID_NUMBER]) - 1]
        if coarser == "drop":
            fields.pop(schema.ID_NUMBER)
        else:
            fields[schema.ID_NUMBER] = coarser
    return fields


def effective_department(policy: SharingPolicy, department: str) -> DepartmentPolicy:
    """Return the department's policy after the whole-export check: refused or coarsened."""
    if department not in policy.departments:
        raise ConfigError(
            f"unknown department; the policy defines {', '.join(policy.departments)}",
            path=str(policy.source_path) if policy.source_path else None,
            key=f"departments.{department}",
        )
    dept = policy.departments[department]
    problems = _conflicts(dept.fields)
    if not problems:
        return dept
    mode = dept.on_conflict or policy.on_conflict
    if mode == "refuse":
        raise ConfigError(
            f"department '{department}' would receive more than granted: "
            + "; ".join(problems)
            + " (mask or drop a field, grant it, or set on_conflict: coarsen)",
            path=str(policy.source_path) if policy.source_path else None,
            key=f"departments.{department}.fields",
        )
    fields = _coarsen(dept.fields)
    changed = {f: f"{dept.fields.get(f, 'drop')}->{fields.get(f, 'drop')}" for f in dept.fields}
    logger.warning(
        "department %s: masks coarsened: %s",
        department,
        ", ".join(f"{f} {c}" for f, c in changed.items() if c.split("->")[0] != c.split("->")[1]),
    )
    return dept.model_copy(update={"fields": fields})


# --- masks: vectorized over a column; a value that cannot be masked becomes null + a flag ---

_ID_RE = r"^\d{17}[\dX]$"
_DATE_RE = r"^\d{4}-\d{2}-\d{2}"


def _as_text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _mask_regex(values: pd.Series, pattern: str, build) -> tuple[pd.Series, pd.Series]:
    text = _as_text(values)
    ok = text.str.contains(pattern, regex=True, na=False)
    out = build(text.where(ok)).where(ok, None)
    return out.astype(object).where(ok, None), text.notna() & ~ok


def _surname_only(values: pd.Series) -> pd.DataFrame:
    def run(distinct):
        masked = []
        for name in distinct:
            surname, _ = split_surname(str(name))
            # minority and Latin names have no surname: keep only the first letter
            masked.append((surname or str(name)[:1]) + "*")
        return pd.DataFrame({"v": masked})

    return map_distinct(values, run)


def _district(values: pd.Series, field: str) -> tuple[pd.Series, pd.Series]:
    parts = standardize_addresses(values, field)
    cols = [schema.address_col(field, s) for s in ("province", "city", "district")]
    joined = parts[cols[0]].fillna("").astype(str)
    for c in cols[1:]:
        level = parts[c].fillna("").astype(str)
        # cpca repeats the province for municipalities (北京市北京市): keep one
        joined = joined + np.where(level.to_numpy() == joined.to_numpy(), "", level.to_numpy())
    joined = joined.mask(joined == "")
    return joined.astype(object).where(joined.notna(), None), values.notna() & joined.isna()


def mask_values(values: pd.Series, field: str, mask: str) -> tuple[pd.Series, pd.Series]:
    """Mask one golden-record column; return the masked values and a bool Series of failures."""
    values = values.reset_index(drop=True)
    if mask == "none":
        return values.astype(object).where(values.notna(), None), pd.Series(
            False, index=values.index
        )
    if mask == "first6_last4":
        return _mask_regex(values, _ID_RE, lambda s: s.str[:6] + "********" + s.str[-4:])
    if mask == "first6":
        return _mask_regex(values, _ID_RE, lambda s: s.str[:6] + "*" * 12)
    if mask == "first3_last4":
        # mobiles (11 digits) and landlines with area code: stars keep the length
        def build(s):
            return s.str[:3] + s.str[3:-4].str.replace(r"\d", "*", regex=True) + s.str[-4:]

        return _mask_regex(values, r"^\d{8,12}$", build)
    if mask == "year":
        return _mask_regex(values, _DATE_RE, lambda s: s.str[:4])
    if mask == "year_month":
        return _mask_regex(values, _DATE_RE, lambda s: s.str[:7])
    if mask == "surname_only":
        text = _as_text(values)
        out = _surname_only(text)["v"]
        return out.astype(object).where(text.notna(), None), pd.Series(False, index=values.index)
    if mask == "district":
        return _district(_as_text(values), field)
    raise ValueError(f"unknown mask {mask!r}")


def pseudonymize(identity_ids: pd.Series, key: bytes) -> pd.Series:
    """Keyed HMAC-SHA256 of each identity id (20 hex characters), stable for one key."""
    codes, uniques = pd.factorize(identity_ids.astype(str))
    digests = np.array(
        [hmac.digest(key, u.encode("utf-8"), "sha256")[:10].hex() for u in uniques],
        dtype=object,
    )
    return pd.Series(digests[codes], index=identity_ids.index)


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
        # DuckDB joins a million identities' record lists in about a second; pandas takes ten
        con = duckdb.connect()
        try:
            con.register("links", frame)
            joined = con.execute(_RECORDS_SQL).df().set_index("i")["v"]
        finally:
            con.close()
        records = key.map(joined).astype(object)
    return sources.where(sources.notna(), None), records.where(records.notna(), None), has_own


def _pseudonym_key(policy: SharingPolicy, key: bytes | None) -> bytes:
    if key:
        return key
    text = os.environ.get(policy.pseudonym_key_env, "")
    if not text:
        raise ConfigError(
            f"pseudonymous ids need a key: set the environment variable {policy.pseudonym_key_env}",
            path=str(policy.source_path) if policy.source_path else None,
            key="pseudonym_key_env",
        )
    return text.encode("utf-8")


def export_view(
    golden: pd.DataFrame,
    links: pd.DataFrame,
    policy: SharingPolicy,
    department: str,
    *,
    key: bytes | None = None,
) -> pd.DataFrame:
    """One department's view of the golden records: granted fields only, masked, checked.

    Columns: the identity (``identity_id`` or ``pseudonym_id``), each granted field under its
    own name, ``sources`` / ``source_records`` where granted, and ``export_flags`` naming fields
    whose value could not be masked (left null). Aggregated views give ``persons`` per cell.
    """
    dept = effective_department(policy, department)
    if schema.IDENTITY_ID not in golden.columns:
        raise InputError(f"golden records lack the column '{schema.IDENTITY_ID}'")
    golden = golden.reset_index(drop=True)
    ids = golden[schema.IDENTITY_ID]
    sources = records = None
    if dept.sources or dept.record_ids != "none" or dept.rows == "own":
        sources, records, keep = _link_columns(ids, links, dept)
        if dept.rows == "own":
            golden, ids = golden[keep].reset_index(drop=True), ids[keep].reset_index(drop=True)
            sources, records = (
                sources[keep].reset_index(drop=True),
                records[keep].reset_index(drop=True),
            )
    out = pd.DataFrame(index=golden.index)
    if dept.identity == "identity_id":
        out[schema.IDENTITY_ID] = ids.to_numpy()
    elif dept.identity == "pseudonym":
        out[PSEUDONYM_ID] = pseudonymize(ids, _pseudonym_key(policy, key)).to_numpy()
    flags = pd.Series("", index=golden.index, dtype=object)
    for field in GRANTABLE_FIELDS:
        mask = dept.fields.get(field)
        if mask is None:
            continue
        column = golden[field] if field in golden.columns else pd.Series([None] * len(golden))
        masked, failed = mask_values(column, field, mask)
        out[field] = masked.to_numpy()
        failed = failed.to_numpy(dtype=bool)
        flags[failed] = (
            flags[failed]
            + np.where(flags[failed] == "", "", schema.QUALITY_SEP)
            + (f"{field}_unmaskable")
        )
    if dept.sources:
        out[SOURCES] = sources.to_numpy()
    if dept.record_ids != "none":
        out[SOURCE_RECORDS] = records.to_numpy()
    out[EXPORT_FLAGS] = flags.to_numpy()
    if dept.aggregate:
        return _aggregate(out.drop(columns=[EXPORT_FLAGS]), policy.min_cell)
    logger.info("export for %s: %d identities, columns %s", department, len(out), list(out.columns))
    return out


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


def write_export(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write an export atomically: Parquet for ``.parquet``, else UTF-8 CSV."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    if path.suffix.lower() not in (".csv", ".txt"):
        raise InputError("export file must end in .csv or .parquet", path=str(path))
    return atomic_write(path, lambda p: frame.to_csv(p, index=False, encoding="utf-8"))


def export_command(
    golden: pd.DataFrame,
    links: pd.DataFrame,
    policy_path: str | Path | None,
    department: str,
    output: str | Path,
    *,
    key: bytes | None = None,
) -> tuple[Path, int]:
    """Body of ``linkage export``: load the policy, build the view, write it; return path and rows."""
    policy = load_policy(policy_path or DEFAULT_POLICY_PATH)
    view = export_view(golden, links, policy, department, key=key)
    return write_export(view, output), len(view)


def describe_policy(policy: SharingPolicy) -> pd.DataFrame:
    """One row per department: purpose, effective masks and link grants (for review and docs)."""
    rows = []
    for name in policy.departments:
        dept = effective_department(policy, name)
        rows.append(
            {
                "department": name,
                "purpose": dept.purpose,
                "fields": ", ".join(f"{f}:{m}" for f, m in dept.fields.items()),
                "identity": dept.identity,
                "sources": dept.sources,
                "record_ids": dept.record_ids,
                "aggregate": dept.aggregate,
            }
        )
    return pd.DataFrame(rows)
