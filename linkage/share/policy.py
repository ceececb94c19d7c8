"""Sharing policy: what each department may see, and the disclosure check across departments.

Pure functions over the policy; imports schema, config's error formatter and errors, never the
store, the Linker or the CLI. The default policy ships as linkage/data/sharing.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from linkage import schema
from linkage.config import format_validation_errors, read_yaml
from linkage.errors import ConfigError

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

DEFAULT_POLICY_PATH = Path(__file__).resolve().parent.parent / "data" / "sharing.yaml"


def _level(field: str, mask: str) -> int:
    return MASK_LEVELS[field].index(mask)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateLimit(_Model):
    """Lookup-service requests per department, all its bearer tokens together: a token
    bucket (``burst`` requests at once, refilled at ``per_second``); over it the service
    answers 429."""

    per_second: float = Field(default=10.0, gt=0)
    burst: int = Field(default=20, ge=1)


class DepartmentPolicy(_Model):
    """What one department may see of each identity, and why."""

    purpose: str = Field(min_length=1)
    # granted field -> mask ("none" = unmasked); a list grants the fields unmasked
    fields: dict[str, Mask] = Field(default_factory=dict)
    # pseudonym: the identity id under this department's own key (default), so two departments'
    # exports cannot be joined; identity_id: the shared id, only where the policy grants it
    identity: Literal["pseudonym", "identity_id", "none"] = "pseudonym"
    sources: bool = False  # registry names per identity
    record_ids: Literal["none", "own", "all"] = "none"  # source record ids per identity
    own_sources: list[str] = Field(default_factory=list)  # registries run by this department
    rows: Literal["all", "own"] = "all"  # own: only identities with a record in own_sources
    aggregate: bool = False  # counts per combination of the granted (masked) fields only
    on_conflict: Literal["refuse", "coarsen"] | None = None  # overrides the policy default
    # how the lookup service's audit log records this department's query values
    audit_queries: Literal["raw", "masked", "none"] | None = None  # overrides the default
    rate_limit: RateLimit | None = None  # lookup requests per department; overrides the default
    # the lookup service compares a query's name with stored former names (曾用名) too: a
    # hit then tells who was once called what, which no export shows; needs name unmasked
    former_names: bool = False

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
        if self.former_names and self.fields.get(schema.NAME) != "none":
            raise ValueError("former_names: true needs name granted unmasked (name: none)")
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
    # environment variable that may hold the master key of department pseudonyms (otherwise
    # the identity store's own secret keys them)
    pseudonym_key_env: str = "LINKAGE_PSEUDONYM_KEY"
    # aggregated cells with fewer persons get a null count and a flag
    min_cell: int = Field(default=5, ge=1)
    # lookup-service audit log: raw query values, masked as the department's grants mask
    # the field (values of fields not granted are not written), or only the field names
    audit_queries: Literal["raw", "masked", "none"] = "masked"
    # lookup-service requests per department, all its tokens together (a department's
    # rate_limit overrides it)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    # shared masked fields whose combination is unique for more than this share of the
    # identities exported count as a join key of two departments (a quasi-identifier join)
    quasi_identifier_share: float = Field(default=0.5, gt=0, le=1)
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
    problems.extend(cross_department_conflicts(policy))
    if problems:
        raise ConfigError.of_problems(problems, path=where)
    return policy


def load_policy(path: str | Path = DEFAULT_POLICY_PATH) -> SharingPolicy:
    """Load, validate and check a sharing policy YAML file."""
    path = Path(path)
    return policy_from_dict(read_yaml(path), path=path)


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


def join_keys(policy: SharingPolicy, a: str, b: str) -> list[str]:
    """What exports of departments ``a`` and ``b`` can be joined on exactly (empty: nothing).

    The shared identity id, when both are granted it; source record ids, when both see ids of
    a common registry. Per-department pseudonyms join nothing (different keys).
    """
    da, db = policy.departments[a], policy.departments[b]
    keys = []
    if da.identity == "identity_id" and db.identity == "identity_id":
        keys.append(schema.IDENTITY_ID)

    def seen(d: DepartmentPolicy) -> set[str] | None:  # None: every registry
        if d.record_ids == "none":
            return set()
        return None if d.record_ids == "all" else set(d.own_sources)

    sa, sb = seen(da), seen(db)
    if sa != set() and sb != set() and (sa is None or sb is None or sa & sb):
        keys.append("source record ids")
    return keys


def _joined_groups(policy: SharingPolicy) -> list[tuple[list[str], list[str]]]:
    """Connected groups of departments whose exports join, with the keys that join them."""
    names = [n for n, d in policy.departments.items() if not d.aggregate]
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    keys: dict[str, set[str]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            found = join_keys(policy, a, b)
            if found:
                ra, rb = root(a), root(b)
                merged = keys.pop(ra, set()) | keys.pop(rb, set()) | set(found)
                parent[ra] = rb
                keys[rb] = merged
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    return [(g, sorted(keys.get(r, ()))) for r, g in groups.items() if len(g) > 1]


def cross_department_conflicts(policy: SharingPolicy) -> list[str]:
    """Problems of departments whose joined exports reveal more than any of them is granted.

    For each group of departments whose exports join (:func:`join_keys`), the joined view
    holds every field at the finest mask any member gets; :func:`disclosed_levels` of that
    joined view is compared with the most any member alone may see. Example: an ID cut to
    first6_last4 in one export and the full birth date in another rebuild the whole ID.
    """
    out = []
    for group, keys in _joined_groups(policy):
        out.extend(group_conflicts(policy, group, keys))
    return out


def group_conflicts(policy: SharingPolicy, group: list[str], keys: list[str]) -> list[str]:
    """Problems of one group of departments joined on ``keys`` (see cross_department_conflicts)."""
    out = []
    members = {n: effective_department(policy, n).fields for n in group}
    joined: dict[str, str] = {}
    for fields in members.values():
        for f, m in fields.items():
            if f not in joined or _level(f, m) > _level(f, joined[f]):
                joined[f] = m
    alone = [disclosed_levels(fields) for fields in members.values()]
    shown = disclosed_levels(joined)
    for f in GRANTABLE_FIELDS:
        most = max(levels[f] for levels in alone)
        if shown[f] > most:
            sources = ", ".join(
                f"{n}: {f2} {m}" for n, fields in members.items() for f2, m in fields.items()
                if f2 in (f, schema.BIRTH_DATE, schema.ID_NUMBER)
            )  # fmt: skip
            out.append(
                f"departments {', '.join(group)} can join their exports on "
                f"{' and '.join(keys)}: together they reveal {f} as "
                f"'{MASK_LEVELS[f][shown[f]]}', more than any of them is granted ({sources}); "
                "give them per-department pseudonyms (identity: pseudonym) or coarser masks"
            )
    return out


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
