"""Typed run configuration loaded from YAML: every settings model of every stage.

Owns the YAML layout (sources, includes, relative paths) and its validation; imports only
schema and errors (tests/test_layers.py checks it), so every stage may import its section
from here. Every problem found is reported at once, each naming file and key path.
Cross-references are checked at load time: a training session, prior rule or term-frequency
entry that names a comparison or level the run does not have is an error naming its key.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from linkage import schema
from linkage.errors import ConfigError

logger = logging.getLogger(__name__)

Encoding = Literal["auto", "utf-8", "utf-8-sig", "gb18030", "gbk", "gb2312", "big5"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


_WARNED_NO_EFFECT: set[tuple[str, Any]] = set()


class SourceConfig(_Model):
    """One registry: where its file is and how its headers map to canonical fields."""

    name: str = ""
    path: Path
    record_id: str = Field(min_length=1)
    columns: dict[str, str] = Field(default_factory=dict)
    encoding: Encoding = "auto"
    sheet: str | int | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    # Accepted for configs written for earlier releases; neither changes a run (a warning
    # says so): department views come from the sharing policy's own_sources, golden-record
    # order from golden.source_priority.
    department: str | None = None
    priority: int = 0

    def field_columns(self) -> dict[str, list[str]]:
        """Canonical field -> the headers mapped to it, in the config's order (several only
        for ``schema.JOINABLE_FIELDS``, joined by ``io.join_field_parts``)."""
        out: dict[str, list[str]] = {}
        for column, field in self.columns.items():
            out.setdefault(field, []).append(column)
        return out

    @field_validator("department", "priority")
    @classmethod
    def _no_effect(cls, value: Any, info: Any) -> Any:
        if value not in (None, 0):
            where = {
                "department": "a sharing policy's own_sources",
                "priority": "golden.source_priority",
            }[info.field_name]
            # once per key and value: a config is parsed more than once in a run
            if (info.field_name, value) not in _WARNED_NO_EFFECT:
                _WARNED_NO_EFFECT.add((info.field_name, value))
                logger.warning(
                    "source key '%s' (%s) has no effect; set %s instead",
                    info.field_name, value, where,
                )  # fmt: skip
        return value

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        problems = []
        seen: dict[str, str] = {}
        for column, field in columns.items():
            if field not in schema.MAPPABLE_FIELDS:
                problems.append(
                    f"column '{column}' maps to '{field}', expected one of "
                    f"{', '.join(schema.MAPPABLE_FIELDS)}"
                )
            elif field in seen and field not in schema.JOINABLE_FIELDS:
                problems.append(
                    f"columns '{seen[field]}' and '{column}' both map to '{field}' (only "
                    f"{', '.join(schema.JOINABLE_FIELDS)} may be joined from several columns)"
                )
            else:
                seen.setdefault(field, column)
        if problems:
            raise ValueError("; ".join(problems))
        return columns


class StandardizeConfig(_Model):
    """Options of the standardization stage."""

    two_digit_year_pivot: int = Field(default=30, ge=0, le=99)


# ----------------------------------------------------------------------------- blocking


class BlockingRule(_Model):
    """Pairs records whose values agree on every key in ``keys`` (nulls never agree)."""

    name: str = Field(min_length=1)
    keys: list[str] = Field(min_length=1)
    # This rule's own refinement (None: the blocking section's refine_block_size and
    # refine_keys). A rule on a fixed domain of common values (name x birth year, surname x
    # birth date) grows with the population and is refined harder than rules on near-unique
    # keys (ID, phone).
    refine_block_size: int | None = Field(default=None, ge=2)
    refine_keys: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_on(cls, data: Any) -> Any:
        # "on" is accepted for "keys"; unquoted, YAML 1.1 reads the key `on` as boolean true
        if isinstance(data, dict):
            for alias in ("on", True):
                if alias in data and "keys" not in data:
                    data = {("keys" if k == alias else k): v for k, v in data.items()}
        return data


# Splink's names: every pair (link_and_dedupe), pairs within a source (dedupe_only),
# pairs across sources (link_only).
LinkType = Literal["link_and_dedupe", "dedupe_only", "link_only"]
_OLD_LINK_TYPES = {"dedupe_and_link": "link_and_dedupe"}


class BlockingSettings(_Model):
    """Blocking section of a run config."""

    rules: list[BlockingRule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    # A block this large (e.g. 张伟 born 1990 in a huge registry) is reported; above
    # max_block_size it is skipped, because its pairs would swamp comparison and EM.
    warn_block_size: int = Field(default=500, ge=2)
    max_block_size: int = Field(default=5000, ge=2)
    link_type: LinkType = "link_and_dedupe"
    # Pairs grow with the square of block size: at national surname frequencies a rule such
    # as surname + birth date makes blocks of hundreds in a city-sized registry. A block
    # over refine_block_size is split by refine_keys, one key at a time, until each part is
    # small enough; only a part still over max_block_size after every key is skipped. Each
    # record then has at most about refine_block_size / 2 candidates per rule, so pairs grow
    # linearly with records. Keys already in a rule are passed over. 50: at 1 M records on
    # the independent generator three name + birth-year blocks are refined, with the same
    # true pairs among the candidates (benchmarks/bench_scale.py).
    refine_block_size: int = Field(default=50, ge=2)
    refine_keys: list[str] = Field(
        default_factory=lambda: ["gender", "given_initial", "birth_year", "birth_date"]
    )
    # Candidate pairs the machine can take (about 100 bytes each through comparison);
    # `linkage blocking` and the run predict the count before comparing and warn or refuse.
    pair_budget: int = Field(default=200_000_000, ge=1)
    over_budget: Literal["warn", "refuse"] = "warn"

    def refinement(self, rule: BlockingRule) -> tuple[int, list[str]]:
        """A rule's refinement: (block size over which it is refined, capped by
        ``max_block_size``; refinement keys in order, keys of the rule passed over)."""
        size = rule.refine_block_size or self.refine_block_size
        keys = self.refine_keys if rule.refine_keys is None else rule.refine_keys
        return min(size, self.max_block_size), [k for k in keys if k not in rule.keys]

    def all_refine_keys(self) -> list[str]:
        """Every refinement key of the section and of its rules, each once."""
        keys = list(self.refine_keys)
        for rule in self.rules:
            keys += rule.refine_keys or []
        return list(dict.fromkeys(keys))

    @field_validator("link_type", mode="before")
    @classmethod
    def _old_spelling(cls, value: Any) -> Any:
        if value in _OLD_LINK_TYPES:
            new = _OLD_LINK_TYPES[value]
            logger.warning(
                "blocking.link_type '%s' is deprecated; write '%s' (Splink's name)", value, new
            )
            return new
        return value


# Nine rules key on a fixed domain of common values (a common name x a birth year, a common
# surname x a birth date, an ID's birth date x its region, a common name x an estate...):
# each key value is shared by a fixed share of the people, so blocks grow with the
# population and pairs with its square, even while every block is small (at 10 M records
# the six rules refined only from 50 records made 11 times the pairs of 3 M). They are
# refined from 6 records on, by keys on which the true pairs only they find agree
# (measured at 1 M and 10 M records with national name frequencies, benchmarks/
# bench_scale.py --blocking-only --unique): name + birth year's own pairs differ in birth
# date but sit in blocks of 2-4, so big blocks split by date; surname + birth date's own
# pairs have a different given name (only 42 of 226 share its initial) but agree on gender
# and current district; name + current district's own pairs are children's files without
# a birth date, agreeing on gender and full pinyin; the estate rules' own pairs are clinic
# files without a birth date or ID, agreeing on the flat (``current_flat``), which gender
# or birth year would have split.
_COMMON_VALUE_REFINE = 6
DEFAULT_RULES: tuple[BlockingRule, ...] = (
    BlockingRule(name="id_number", keys=[schema.ID_STD]),
    # Hong Kong and Macao residents and foreigners carry a permit or passport number
    BlockingRule(name="id_document", keys=[schema.ID_DOC]),
    BlockingRule(
        name="pinyin_name_birth_year",
        keys=["name_pinyin_sorted", "birth_year"],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["gender", "birth_date"],
    ),
    BlockingRule(
        name="fuzzy_surname_birth_date",
        keys=[schema.name_col(schema.NAME, "surname_fuzzy"), "birth_date"],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=[
            "gender",
            schema.address_col(schema.CURRENT_ADDRESS, "district"),
            "given_initial",
        ],
    ),
    BlockingRule(
        name="given_name_birth_date",
        keys=[schema.name_col(schema.NAME, "given"), "birth_date"],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["gender", schema.address_col(schema.CURRENT_ADDRESS, "district")],
    ),
    BlockingRule(
        name="id_birth_region",
        keys=[schema.ID_BIRTH_DATE, schema.ID_REGION_CODE],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=[schema.ID_GENDER, "given_initial"],
    ),
    BlockingRule(name="phone", keys=[schema.PHONE_STD]),
    BlockingRule(
        name="pinyin_name_birth_month_day",
        keys=["name_pinyin_sorted", "birth_month_day"],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["gender", schema.address_col(schema.CURRENT_ADDRESS, "district")],
    ),
    BlockingRule(name="minority_head_birth_year", keys=["name_minority_head", "birth_year"]),
    BlockingRule(
        name="fuzzy_name_hukou_district",
        keys=[
            schema.name_col(schema.NAME, "fuzzy"),
            schema.address_col(schema.HUKOU_ADDRESS, "district"),
        ],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["gender", "birth_year"],
    ),
    # a child's clinic file often has no ID, no birth date and a guardian's phone, and no
    # hukou address: where the family lives is what it shares with the child's other records
    BlockingRule(
        name="fuzzy_name_current_district",
        keys=[
            schema.name_col(schema.NAME, "fuzzy"),
            schema.address_col(schema.CURRENT_ADDRESS, "district"),
        ],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["gender", "name_pinyin_sorted", "birth_year"],
    ),
    # a newborn's clinic file names the baby 男婴 or 李娜之女, has no ID and a parent's phone:
    # only the birth date and the estate it was born into match the child's other records
    BlockingRule(
        name="birth_date_current_estate",
        keys=["birth_date", "current_estate"],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["current_flat", "gender"],
    ),
    # a clinic file with a name and an address only, whose district is not written or not
    # read (深圳市观澜街道…: a street office, no district), meets the person's other records
    # in the same building
    BlockingRule(
        name="fuzzy_name_current_estate",
        keys=[schema.name_col(schema.NAME, "fuzzy"), "current_estate"],
        refine_block_size=_COMMON_VALUE_REFINE,
        refine_keys=["current_flat", "gender"],
    ),
    # an ID mistyped in its birth-date digits, the same typo copied into the birth date
    BlockingRule(
        name="fuzzy_name_id_region_tail",
        keys=[schema.name_col(schema.NAME, "fuzzy"), "id_region_tail"],
    ),
)


# ----------------------------------------------------------------------------- comparisons
# One spec per comparison type, discriminated by ``type``; ``linkage.compare`` builds the
# comparison objects from them and takes each type's level names from ``LEVELS`` here, so
# load-time checks and the comparisons agree on one vocabulary.


def _unit_interval(value: float) -> float:
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"must be in (0, 1], got {value!r}")
    return float(value)


Threshold = Annotated[float, AfterValidator(_unit_interval)]


class _ComparisonSpec(_Model):
    LEVELS: ClassVar[tuple[str, ...]] = ()
    name: str

    def levels(self) -> list[str]:
        """Level names, ``else`` first and the closest agreement last."""
        return list(self.LEVELS)


class NameSpec(_ComparisonSpec):
    """Chinese names (and former names): exact, clean, truncated, pinyin, look-alike, similar,
    given-name characters transposed, one given-name character dropped."""

    LEVELS = (
        "else",
        "char_dropped",
        "transposed",
        "similar",
        "lookalike",
        "fuzzy_pinyin",
        "pinyin",
        "truncated",
        "clean_exact",
        "exact",
    )
    type: Literal["name"] = "name"
    name: str = "name"
    fields: list[str] = Field(default=[schema.NAME, schema.FORMER_NAME], min_length=1)
    similar_threshold: Threshold = 0.92

    @field_validator("fields", mode="before")
    @classmethod
    def _one_field(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class IdSpec(_ComparisonSpec):
    """Resident ID numbers, with the 15-to-18-digit upgrade and near misses."""

    LEVELS = (
        "else", "birth_region", "prefix_tail_lost", "near_miss", "same_person_15_18", "exact"
    )
    type: Literal["id"] = "id"
    name: str = "id"
    column: str = schema.ID_STD
    from_15_column: str = schema.ID_FROM_15
    # recorded birth date and gender: an ID whose birth year is a generation away from the
    # record's is someone else's (a guardian's) and no evidence; null turns the check off
    birth_column: str | None = schema.BIRTH_DATE_STD
    gender_column: str | None = schema.GENDER_STD
    # region code and birth date kept from an ID damaged by Excel or a float (id_std null):
    # compared as the first 14 digits (level prefix_tail_lost); null turns it off
    region_column: str | None = schema.ID_REGION_CODE
    id_birth_column: str | None = schema.ID_BIRTH_DATE
    # another identity document's number where the record has no resident ID (a Home Return
    # Permit, a passport): equal numbers are level exact; null turns it off
    document_column: str | None = schema.ID_DOC


class BirthDateSpec(_ComparisonSpec):
    """Birth dates, with year typos, lunar dates and day/month swaps."""

    LEVELS = ("else", "same_year", "year_typo", "lunar", "day_month_swap", "exact")
    type: Literal["birth_date"] = "birth_date"
    name: str = "birth_date"
    column: str = schema.BIRTH_DATE_STD
    fallback: str | None = schema.ID_BIRTH_DATE
    both_witnesses: bool = False


class ExactSpec(_ComparisonSpec):
    """Exact agreement of one column (with an optional fallback column)."""

    LEVELS = ("else", "exact")
    type: Literal["exact"] = "exact"
    column: str | None = None
    fallback: str | None = None


class StringSpec(_ComparisonSpec):
    """Exact, then Jaro-Winkler at or above each threshold."""

    type: Literal["string"] = "string"
    column: str | None = None
    thresholds: list[Threshold] = Field(default=[0.92, 0.8], min_length=1)

    def levels(self) -> list[str]:
        """``else``, one ``jaro_winkler_<t>`` per threshold (lowest first), ``exact``."""
        ts = sorted(set(self.thresholds))
        return ["else"] + [f"jaro_winkler_{t:g}" for t in ts] + ["exact"]


class DateSpec(_ComparisonSpec):
    """A generic date column: exact, day/month swap, one digit off, same year."""

    LEVELS = ("else", "same_year", "one_digit", "day_month_swap", "exact")
    type: Literal["date"] = "date"
    column: str | None = None


class PhoneSpec(_ComparisonSpec):
    """Phone numbers: exact or the last eight digits."""

    LEVELS = ("else", "last8", "exact")
    type: Literal["phone"] = "phone"
    name: str = "phone"
    column: str = schema.PHONE_STD


class AddressSpec(_ComparisonSpec):
    """One address field: same detail, district or city."""

    LEVELS = ("else", "same_city", "same_district", "same_detail")
    type: Literal["address"] = "address"
    name: str = ""  # empty: the field's name
    field: str = schema.HUKOU_ADDRESS
    detail_threshold: Threshold = 0.8

    @model_validator(mode="after")
    def _default_name(self) -> AddressSpec:
        if not self.name:
            self.name = self.field
        return self


class ContactSpec(_ComparisonSpec):
    """Phone and current address counted once, as one piece of contact evidence."""

    LEVELS = ("else", "district", "address", "phone", "phone_and_address")
    type: Literal["contact"] = "contact"
    name: str = "contact"
    phone_column: str = schema.PHONE_STD
    address_field: str = schema.CURRENT_ADDRESS
    detail_threshold: Threshold = 0.8


ComparisonSpec = Annotated[
    NameSpec
    | IdSpec
    | BirthDateSpec
    | ExactSpec
    | StringSpec
    | DateSpec
    | PhoneSpec
    | AddressSpec
    | ContactSpec,
    Field(discriminator="type"),
]
COMPARISON_TYPES: tuple[str, ...] = (
    "name",
    "id",
    "birth_date",
    "exact",
    "string",
    "date",
    "phone",
    "address",
    "contact",
)


def _unique_names(specs: list[Any]) -> list[Any]:
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise ValueError(
                f"comparisons[{i}].name: '{spec.name}' already used by comparisons[{seen[spec.name]}]"
            )
        seen[spec.name] = i
    return specs


ComparisonSpecs = Annotated[
    list[ComparisonSpec], Field(min_length=1), AfterValidator(_unique_names)
]
COMPARISON_SPECS: TypeAdapter[list[Any]] = TypeAdapter(ComparisonSpecs)


def default_comparison_specs() -> list[Any]:
    """Specs of the default comparisons; phone and current address count once, as contact."""
    return [
        NameSpec(),
        IdSpec(),
        BirthDateSpec(),
        # the ID's 17th digit stands in for a missing recorded gender
        ExactSpec(name="gender", column=schema.GENDER_STD, fallback=schema.ID_GENDER),
        ExactSpec(name="ethnicity", column=schema.ETHNICITY_STD),
        ContactSpec(),
        AddressSpec(name=schema.HUKOU_ADDRESS, field=schema.HUKOU_ADDRESS),
    ]


# Canonical fields each default comparison reads, fallbacks included (the ID holds a birth
# date and gender): with none of them mapped by any source it is left out of a run.
_DEFAULT_READS: dict[str, tuple[str, ...]] = {
    "name": (schema.NAME, schema.FORMER_NAME),
    "id": (schema.ID_NUMBER,),
    "birth_date": (schema.BIRTH_DATE, schema.ID_NUMBER),
    "gender": (schema.GENDER, schema.ID_NUMBER),
    "ethnicity": (schema.ETHNICITY,),
    "contact": (schema.PHONE, schema.CURRENT_ADDRESS),
    schema.HUKOU_ADDRESS: (schema.HUKOU_ADDRESS,),
}


# ----------------------------------------------------------------------------- model and later


class HouseholdSettings(_Model):
    """The household pattern scored by a model of its own (FellegiSunterModel.fit_household):
    ``differ`` at its else level while each ``agree`` comparison reaches its level; the
    ``witness`` comparison at or above its level starts EM as a match."""

    differ: str = "name"
    agree: dict[str, str] = Field(
        default_factory=lambda: {"birth_date": "exact", "contact": "address"}
    )
    witness: dict[str, str] | None = Field(default_factory=lambda: {"id": "prefix_tail_lost"})
    # also score pairs whose witness is null (no ID on a side) by the household model: right
    # where children's clinic files without ID are mostly twins, wrong where they are mostly
    # one person renamed or mistyped twice (the project's generator): off by default
    unwitnessed: bool = False


class ModelSettings(_Model):
    """Scoring: how the Fellegi–Sunter model is trained."""

    # Random record pairs compared to estimate u-probabilities (non-matches dominate them).
    u_sample_pairs: int = Field(default=1_000_000, ge=1000)
    max_iter: int = Field(default=100, ge=1)
    # Match share among candidate (blocked) pairs, the model's lambda; null lets training
    # estimate it (from prior_rules, or by EM).
    prior: float | None = Field(default=None, gt=0, lt=1)
    # Comparisons whose exact level is adjusted by how common the value is (张伟 vs 欧阳婧璇).
    term_frequency: dict[str, str] = Field(
        default_factory=lambda: {"name": schema.name_col(schema.NAME, "clean")}
    )
    # Training sessions: each names comparisons and the level they must reach; EM learns the
    # other comparisons' m from those pairs. Written ones must name existing comparisons and
    # levels (checked at load); the defaults skip those a run's comparisons lack.
    training_sessions: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {"id": "exact"},
            {"name": "clean_exact", "birth_date": "exact"},
            {"contact": "phone", "birth_date": "exact"},
        ]
    )
    # Pairs meeting any of these rules are counted as matches to estimate
    # probability_two_random_records_match (Splink's name), with the rules' assumed recall.
    prior_rules: list[dict[str, str]] = Field(
        default_factory=lambda: [{"id": "exact"}, {"name": "clean_exact", "birth_date": "exact"}]
    )
    prior_recall: float = Field(default=0.8, gt=0, le=1)
    # Names that differ entirely with one birth date and a shared address or phone: twins and
    # siblings, or one person renamed. Scored by a latent-class model of their own, since
    # households break the independence the product of weights assumes; null turns it off.
    household: HouseholdSettings | None = Field(default_factory=HouseholdSettings)
    # Optional CSV of reviewed pairs (source_l, record_id_l, source_r, record_id_r, label).
    labels: Path | None = None
    # A saved model to use instead of training.
    load: Path | None = None
    seed: int = 0


class ClusterSettings(_Model):
    """Clustering: which scored pairs join records into one identity."""

    threshold: float = Field(default=0.9, gt=0, lt=1)
    max_cluster_size: int = Field(default=20, ge=2)
    # Records of one source with different valid ID numbers are never merged.
    cannot_link_same_source_ids: bool = True
    # Nor, across sources, records whose different valid IDs each carry the record's own
    # birth date (twins with their own IDs in two registries).
    cannot_link_dated_ids: bool = True


class OutputSettings(_Model):
    """What goes into the output folder besides identities.csv."""

    # Scored pairs below this probability are left out of pairs.parquet.
    pairs_min_probability: float = Field(default=0.01, ge=0, le=1)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_size(text: str) -> int:
    """Bytes in a size such as ``4GB``, ``512MB`` or ``1.5GiB`` (DuckDB's units); ValueError else."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"expected a size such as 4GB or 512MB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class RunSettings(_Model):
    """How a local run uses the machine: memory, chunk size, checkpoints."""

    # Peak memory the run aims for, e.g. 4GB: a quarter of it is DuckDB's limit for
    # blocking's joins (SET memory_limit, at least 256 MB, spilling to OUTPUT/.work beyond
    # it; without memory_limit 1 GiB) and it sizes the compare/score chunks. Not a cap on the
    # run: the records and the clustering input are not bounded by it, and a stage that goes
    # above it with its worker processes is reported (warning, summary.json
    # over_memory_limit, from peak_total_mb). null: no limit.
    memory_limit: str | None = None
    # Candidate pairs compared and scored at a time; null: from memory_limit (1,000,000 without).
    chunk_pairs: int | None = Field(default=None, ge=1000)
    # Records standardized at a time by a run that spills its records (`linkage run` with
    # an output folder and no --store): each chunk is written to the records checkpoint
    # before the next is standardized. null: from memory_limit, else all at once.
    chunk_records: int | None = Field(default=None, ge=1000)
    # Candidate pairs the EM training sessions see; above it a seeded uniform sample is drawn.
    train_sample_pairs: int = Field(default=5_000_000, ge=1000)
    # Scored pairs below output.pairs_min_probability the run keeps in memory for review
    # queues, the match-weight histogram and the viewers: all of them while the run has at
    # most this many candidate pairs, beyond it a seeded sample of about this many (by a
    # hash of both row numbers). Pairs at or above the floor are always kept. 0: none.
    below_floor_pairs: int = Field(default=200_000, ge=0)
    # CSV file for bad input rows (wrong field count, empty or duplicate record id): set
    # aside there with file, line and reason, and the run goes on. null: a bad row stops
    # the run (exit 2), every one listed. Relative to the config file; --bad-rows overrides.
    bad_rows: str | None = None
    # Worker processes: standardizing, preparing the comparisons and golden records each
    # hand part of their work to a second process, so both cores work. false: none, for a
    # machine short of memory (each worker holds its own interpreter and its share of the
    # columns), at the price of wall time; a spilling run still reads and standardizes in
    # a forked child, one process working at a time. The outputs are the same either way
    # (model.json records the setting).
    workers: bool = True

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)
        return value

    def memory_bytes(self) -> int | None:
        """``memory_limit`` in bytes, or None."""
        return None if self.memory_limit is None else parse_size(self.memory_limit)

    def pairs_per_chunk(self) -> int:
        """Pairs per compare/score chunk: ``chunk_pairs``, else an eighth of ``memory_limit``
        at ~400 bytes per pair in flight (vectors, weights, pandas copies), else 1,000,000."""
        if self.chunk_pairs is not None:
            return self.chunk_pairs
        limit = self.memory_bytes()
        if limit is None:
            return 1_000_000
        return int(min(max(limit // 8 // 400, 50_000), 5_000_000))

    def records_per_chunk(self) -> int | None:
        """Records per standardizing chunk of a spilling run: ``chunk_records``, else a
        quarter of ``memory_limit`` at ~1,000 bytes per standardized record in flight (its
        derived columns as Python objects and the chunk's raw ones), at least 100,000;
        None (all records at once) without either. Chunks cost time (a value in several
        chunks is standardized in each, and the current addresses are parsed twice: 84 s of
        standardizing against 54 for 3 M records in 1 M chunks), so a run is cut into chunks
        only when ``chunk_records`` or ``memory_limit`` is set."""
        if self.chunk_records is not None:
            return self.chunk_records
        limit = self.memory_bytes()
        if limit is None:
            return None
        return int(max(limit // 4 // 1000, 100_000))


class SparkSettings(_Model):
    """Options of the Spark engine (``engine: spark``); see docs/national-scale.md."""

    # Spark master URL: local[N], spark://host:port, yarn, k8s://...
    master: str = "local[*]"
    # spark.sql.shuffle.partitions; null sizes it from the sources (one per 16 MB, at least
    # one per core)
    shuffle_partitions: int | None = Field(default=None, ge=1)
    # Candidate pairs collected to the driver for EM; above it a proportional sample is taken.
    train_sample_pairs: int = Field(default=5_000_000, ge=1000)
    # identities.csv is written through the driver; at national scale keep identities.parquet only
    identities_csv: bool = True
    # Further Spark settings passed to the session builder (e.g. spark.executor.memory).
    conf: dict[str, str] = Field(default_factory=dict)


# ----------------------------------------------------------------------------- golden records

SurvivorshipRule = Literal["valid_id", "most_frequent", "most_recent", "source_priority"]


class FieldRule(_Model):
    """How one golden field is chosen: the value column, the rule, and where it comes from."""

    column: str
    rule: SurvivorshipRule = "most_frequent"
    # Source column reported as the golden value: the choice is made on ``column`` (so
    # 王汎森 and 王泛森 count as one name), but the value shown is a spelling a source holds,
    # preferring a record whose own value equals the chosen standardized one.
    raw: str | None = None


class GoldenSettings(_Model):
    """Survivorship section of a run config."""

    # Earlier sources win ties; sources not listed come after, in name order.
    source_priority: list[str] = Field(default_factory=list)
    fields: dict[str, FieldRule] = Field(default_factory=lambda: dict(DEFAULT_FIELDS))

    def with_sources(self, sources: list[str]) -> GoldenSettings:
        """Return these settings with ``source_priority`` defaulting to ``sources`` in order."""
        if self.source_priority:
            return self
        return self.model_copy(update={"source_priority": list(sources)})


DEFAULT_FIELDS: dict[str, FieldRule] = {
    schema.NAME: FieldRule(
        column=schema.name_col(schema.NAME, "clean"), rule="most_frequent", raw=schema.NAME
    ),
    schema.ID_NUMBER: FieldRule(column=schema.ID_STD, rule="valid_id"),
    schema.GENDER: FieldRule(column=schema.GENDER_STD, rule="most_frequent"),
    schema.BIRTH_DATE: FieldRule(column=schema.BIRTH_DATE_STD, rule="most_frequent"),
    schema.ETHNICITY: FieldRule(column=schema.ETHNICITY_STD, rule="most_frequent"),
    schema.PHONE: FieldRule(column=schema.PHONE_STD, rule="most_recent"),
    schema.HUKOU_ADDRESS: FieldRule(column=schema.HUKOU_ADDRESS, rule="source_priority"),
    schema.CURRENT_ADDRESS: FieldRule(column=schema.CURRENT_ADDRESS, rule="most_recent"),
}


class RunConfig(_Model):
    """A whole run: its sources and the settings of each stage."""

    # Which engine runs the batch: one process (local) or Apache Spark (needs the [spark] extra).
    engine: Literal["local", "spark"] = "local"
    spark: SparkSettings = Field(default_factory=SparkSettings)

    sources: dict[str, SourceConfig] = Field(min_length=1)
    standardize: StandardizeConfig = Field(default_factory=StandardizeConfig)
    blocking: BlockingSettings = Field(default_factory=BlockingSettings)
    # Comparison entries ({type: name, name: name}, ...); null uses the defaults.
    comparisons: ComparisonSpecs | None = None
    model: ModelSettings = Field(default_factory=ModelSettings)
    clustering: ClusterSettings = Field(default_factory=ClusterSettings)
    golden: GoldenSettings = Field(default_factory=GoldenSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    config_path: Path | None = Field(default=None, exclude=True)
    _told_unmapped: bool = PrivateAttr(default=False)

    def mapped_fields(self) -> set[str]:
        """Canonical fields at least one source maps a column to."""
        return {field for source in self.sources.values() for field in source.columns.values()}

    def comparison_specs(self, *, announce: bool = True) -> list[Any]:
        """The run's comparison specs: the configured ones, or the defaults.

        A default comparison over fields no source maps (ethnicity, hukou address ...) is
        left out, said once at INFO level (unless ``announce`` is False: the config's own
        checks, which run for an ingest or a search too, where the store's model decides the
        comparisons and this config's would mislead): it could only ever read nulls.
        """
        if self.comparisons is not None:
            return list(self.comparisons)
        specs = default_comparison_specs()
        mapped = self.mapped_fields()
        kept = [s for s in specs if any(f in mapped for f in _DEFAULT_READS.get(s.name, (None,)))]
        if not kept or len(kept) == len(specs):
            return specs
        if announce and not self._told_unmapped:
            self._told_unmapped = True
            logger.info(
                "default comparison(s) %s left out: no source maps their fields",
                ", ".join(s.name for s in specs if s not in kept),
            )
        return kept

    def golden_settings(self, sources: list[str] | None = None) -> GoldenSettings:
        """Survivorship settings; source priority defaults to ``sources`` or config order."""
        return self.golden.with_sources(list(sources or self.sources))

    @model_validator(mode="after")
    def _check_references(self) -> RunConfig:
        # Written rules must name comparisons and levels that exist; the defaults of
        # ModelSettings name the default comparisons and are skipped where absent.
        levels = {spec.name: spec.levels() for spec in self.comparison_specs(announce=False)}
        problems = []
        written = self.model.model_fields_set
        for key in ("training_sessions", "prior_rules"):
            if key not in written:
                continue
            for i, rule in enumerate(getattr(self.model, key)):
                problems += _rule_problems(f"model.{key}[{i}]", rule, levels)
        household = self.model.household
        if "household" in written and household is not None:
            fields = household.model_fields_set
            if "agree" in fields:
                problems += _rule_problems("model.household.agree", household.agree, levels)
            if "witness" in fields and household.witness is not None:
                problems += _rule_problems("model.household.witness", household.witness, levels)
                if len(household.witness) > 1:
                    problems.append("key 'model.household.witness': name one comparison")
            if "differ" in fields and household.differ not in levels:
                problems.append(
                    f"key 'model.household.differ': no comparison named '{household.differ}'; "
                    f"comparisons are {', '.join(levels)}"
                )
        if "term_frequency" in written:
            for name in self.model.term_frequency:
                if name not in levels:
                    problems.append(
                        f"key 'model.term_frequency.{name}': no comparison named '{name}'; "
                        f"comparisons are {', '.join(levels)}"
                    )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


def _rule_problems(key: str, rule: dict[str, str], levels: dict[str, list[str]]) -> list[str]:
    problems = []
    if not rule:
        problems.append(f"key '{key}': a rule must name at least one comparison")
    for name, level in rule.items():
        if name not in levels:
            problems.append(
                f"key '{key}': no comparison named '{name}'; comparisons are {', '.join(levels)}"
            )
        elif level not in levels[name]:
            problems.append(
                f"key '{key}.{name}': comparison '{name}' has no level '{level}'; "
                f"its levels are {', '.join(levels[name])}"
            )
    return problems


def _duplicate_keys(node: yaml.Node, path: str = "") -> list[str]:
    """Every mapping key given twice under one parent, as ``'a.b' on lines 3 and 7``.

    PyYAML keeps the last of duplicate keys silently (a second source of the same name
    would replace the first); YAML 1.2 says keys must be unique. Merge keys (``<<``) are
    overrides by design and are not counted.
    """
    found: list[tuple[int, str]] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(node, path)]
    while stack:
        current, where = stack.pop()
        if id(current) in seen_nodes:  # aliases may share (or recurse into) a node
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            lines: dict[tuple[str, str], list[int]] = {}
            for key, value in current.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if key.tag == "tag:yaml.org,2002:merge":
                    stack.append((value, where))
                    continue
                if name is not None:
                    lines.setdefault((key.tag, name), []).append(key.start_mark.line + 1)
                stack.append((value, f"{where}.{name}" if where else str(name)))
            for (_tag, name), at in lines.items():
                if len(at) > 1:
                    key_path = f"{where}.{name}" if where else name
                    found.append(
                        (
                            at[1],
                            f"duplicate key '{key_path}' on lines {', '.join(map(str, at))} "
                            "(YAML would keep only the last one)",
                        )
                    )
        elif isinstance(current, yaml.SequenceNode):
            for i, item in enumerate(current.value):
                stack.append((item, f"{where}[{i}]"))
    return [message for _line, message in sorted(found)]


# suffixes of source files, never of a YAML file (read_yaml refuses them with a hint)
_DATA_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls", ".parquet"})


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; duplicate mapping keys anywhere are an error.

    Used for run configs, included source schemas and sharing policies.
    Raises ``ConfigError`` naming the file (and the line or duplicate key path).
    """
    path = Path(path)
    if path.suffix.lower() in _DATA_SUFFIXES:
        # a data file given where a config belongs: say so, not "not UTF-8 text"
        raise ConfigError(
            f"is a {path.suffix} data file, expected a YAML config (a run config names its "
            "sources under 'sources:'; see the README, 'Configuration')",
            path=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, expected a YAML file", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", path=str(path)) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicates = _duplicate_keys(node)
        if duplicates:
            listed = duplicates[0] if len(duplicates) == 1 else "\n  " + "\n  ".join(duplicates)
            raise ConfigError(listed, path=str(path))
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"invalid YAML{where}: {getattr(exc, 'problem', exc)}", path=str(path)
        ) from None
    finally:
        loader.dispose()


def _resolve_source(name: str, entry: Any, base: Path, config_file: Path) -> dict:
    """Merge an ``include`` file under an entry and make relative paths absolute."""
    if not isinstance(entry, dict):
        raise ConfigError(
            f"expected a mapping with path, record_id and columns, got {type(entry).__name__}",
            path=str(config_file),
            key=f"sources.{name}",
        )
    entry = dict(entry)
    merged: dict[str, Any] = {}
    include = entry.pop("include", None)
    if include is not None:
        include_path = (base / str(include)).resolve()
        included = read_yaml(include_path)
        if not isinstance(included, dict):
            raise ConfigError("expected a mapping of source settings", path=str(include_path))
        if "path" in included:
            included["path"] = str((include_path.parent / str(included["path"])).resolve())
        merged.update(included)
    if "path" in entry and entry["path"] is not None:
        entry["path"] = str((base / str(entry["path"])).resolve())
    if include is not None and isinstance(entry.get("columns"), dict):
        entry["columns"] = _merge_columns(merged.get("columns"), entry["columns"])
    merged.update(entry)
    if isinstance(merged.get("columns"), dict):
        # a header mapped to null (~) is unmapped: it passes through under raw.<header>
        merged["columns"] = {k: v for k, v in merged["columns"].items() if v is not None}
    merged["name"] = name
    return merged


def _merge_columns(included: Any, override: dict) -> dict:
    """A run config's ``columns:`` merged into its included schema's mapping.

    The included entries are kept; an override entry adds a header, replaces the included
    entry of the same header, and replaces an included entry of another header mapped to
    the same field (one field, one header: ``姓名: name`` over an included ``居民姓名:
    name`` is a renamed header). A header mapped to null is left for the caller to drop
    (it unmaps an included entry). Replacing the whole mapping instead would unmap name, ID
    and birth date when a run config adds one header, and the run would link on nothing.
    """
    if not isinstance(included, dict):
        return dict(override)
    taken = {field for header, field in override.items() if field is not None}
    kept = {
        header: field
        for header, field in included.items()
        if header not in override and field not in taken
    }
    return {**kept, **override}


def _strip_tags(loc: tuple) -> list:
    """Drop the discriminator tag pydantic puts in a union member's location."""
    tag_at = 2 if loc[:1] == ("comparisons",) else 1 if loc[:1] and isinstance(loc[0], int) else -1
    return [p for i, p in enumerate(loc) if not (i == tag_at and p in COMPARISON_TYPES)]


def format_validation_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``key 'a.b': problem`` line per pydantic error, worded for a YAML author."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in _strip_tags(err["loc"]) if p != "__root__")
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        lines.append(f"key '{key}': {msg}" if key else msg)
    return lines


def config_from_dict(data: Any, *, path: str | Path | None = None) -> RunConfig:
    """Validate a run configuration given as a dict; relative paths resolve against ``path``'s folder."""
    config_file = Path(path).resolve() if path else Path.cwd() / "<config>"
    base = config_file.parent
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping with a 'sources' key", path=str(config_file))
    data = dict(data)
    problems: list[str] = []
    model = data.get("model")
    if isinstance(model, dict):
        model = dict(model)
        for key in ("labels", "load"):
            if model.get(key):
                model[key] = str((base / str(model[key])).resolve())
        data["model"] = model
    run = data.get("run")
    if isinstance(run, dict) and run.get("bad_rows"):
        # the folder resolved, the name kept: a link there is refused later, never followed
        aside = base / str(run["bad_rows"])
        data["run"] = {**run, "bad_rows": str(aside.parent.resolve() / aside.name)}
    sources = data.get("sources")
    if isinstance(sources, dict):
        resolved = {}
        for name, entry in sources.items():
            try:
                resolved[str(name)] = _resolve_source(str(name), entry, base, config_file)
            except ConfigError as exc:
                problems.append(str(exc))
        data["sources"] = resolved
    if problems:
        raise ConfigError.of_problems(problems, path=str(config_file))
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = format_validation_errors(exc)
        raise ConfigError(
            f"{len(lines)} problem(s):\n  " + "\n  ".join(lines), path=str(config_file)
        ) from None
    config.config_path = config_file if path else None
    return config


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a run configuration YAML file."""
    path = Path(path)
    return config_from_dict(read_yaml(path.resolve()), path=path)
