"""Typed run configuration loaded from YAML.

Owns the YAML layout (sources, includes, relative paths) and its validation; imports only
schema and errors. Every problem found is reported at once, each naming file and key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from linkage import schema
from linkage.blocking import BlockingSettings
from linkage.errors import ConfigError
from linkage.merge import GoldenSettings

Encoding = Literal["auto", "utf-8", "utf-8-sig", "gb18030", "gbk", "gb2312", "big5"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SourceConfig(_Model):
    """One registry: where its file is and how its headers map to canonical fields."""

    name: str = ""
    path: Path
    record_id: str = Field(min_length=1)
    columns: dict[str, str] = Field(default_factory=dict)
    encoding: Encoding = "auto"
    sheet: str | int | None = None
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    department: str | None = None
    priority: int = 0

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
            elif field in seen:
                problems.append(f"columns '{seen[field]}' and '{column}' both map to '{field}'")
            else:
                seen[field] = column
        if problems:
            raise ValueError("; ".join(problems))
        return columns


class StandardizeConfig(_Model):
    """Options of the standardization stage."""

    two_digit_year_pivot: int = Field(default=30, ge=0, le=99)


class ModelSettings(_Model):
    """Scoring: how the Fellegi–Sunter model is trained."""

    # Random record pairs compared to estimate u-probabilities (non-matches dominate them).
    u_sample_pairs: int = Field(default=1_000_000, ge=1000)
    max_iter: int = Field(default=100, ge=1)
    # Prior match share among candidate pairs; null lets EM estimate it.
    prior: float | None = Field(default=None, gt=0, lt=1)
    # Comparisons whose exact level is adjusted by how common the value is (张伟 vs 欧阳婧璇).
    term_frequency: dict[str, str] = Field(
        default_factory=lambda: {"name": schema.name_col(schema.NAME, "clean")}
    )
    # Training sessions: each names comparisons and the level they must reach; EM learns the
    # other comparisons' m from those pairs. Sessions naming absent comparisons are skipped.
    training_sessions: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {"id": "exact"},
            {"name": "clean_exact", "birth_date": "exact"},
            {"contact": "phone", "birth_date": "exact"},
        ]
    )
    # Pairs meeting any of these rules are counted as matches to estimate the prior
    # probability that two random records match, with the rules' assumed recall.
    prior_rules: list[dict[str, str]] = Field(
        default_factory=lambda: [{"id": "exact"}, {"name": "clean_exact", "birth_date": "exact"}]
    )
    prior_recall: float = Field(default=0.8, gt=0, le=1)
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


class OutputSettings(_Model):
    """What goes into the output folder besides identities.csv."""

    # Scored pairs below this probability are left out of pairs.parquet.
    pairs_min_probability: float = Field(default=0.01, ge=0, le=1)


class SparkSettings(_Model):
    """Options of the Spark engine (``engine: spark``); see docs/national-scale.md."""

    # Spark master URL: local[N], spark://host:port, yarn, k8s://...
    master: str = "local[*]"
    # spark.sql.shuffle.partitions; null keeps Spark's default (200)
    shuffle_partitions: int | None = Field(default=None, ge=1)
    # Candidate pairs collected to the driver for EM; above it a proportional sample is taken.
    train_sample_pairs: int = Field(default=5_000_000, ge=1000)
    # identities.csv is written through the driver; at national scale keep identities.parquet only
    identities_csv: bool = True
    # Further Spark settings passed to the session builder (e.g. spark.executor.memory).
    conf: dict[str, str] = Field(default_factory=dict)


class RunConfig(_Model):
    """A whole run: its sources and the settings of each stage."""

    # Which engine runs the batch: one process (local) or Apache Spark (needs the [spark] extra).
    engine: Literal["local", "spark"] = "local"
    spark: SparkSettings = Field(default_factory=SparkSettings)

    sources: dict[str, SourceConfig] = Field(min_length=1)
    standardize: StandardizeConfig = Field(default_factory=StandardizeConfig)
    blocking: BlockingSettings = Field(default_factory=BlockingSettings)
    # Comparison entries ({type: name, name: name}, ...); null uses the defaults.
    comparisons: list[dict[str, Any]] | None = None
    model: ModelSettings = Field(default_factory=ModelSettings)
    clustering: ClusterSettings = Field(default_factory=ClusterSettings)
    golden: GoldenSettings = Field(default_factory=GoldenSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    config_path: Path | None = Field(default=None, exclude=True)

    def source_names(self) -> list[str]:
        """Return the source names in config order."""
        return list(self.sources)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", path=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"invalid YAML{where}: {getattr(exc, 'problem', exc)}", path=str(path)
        ) from None


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
        included = _read_yaml(include_path)
        if not isinstance(included, dict):
            raise ConfigError("expected a mapping of source settings", path=str(include_path))
        if "path" in included:
            included["path"] = str((include_path.parent / str(included["path"])).resolve())
        merged.update(included)
    if "path" in entry and entry["path"] is not None:
        entry["path"] = str((base / str(entry["path"])).resolve())
    merged.update(entry)
    merged["name"] = name
    return merged


def format_validation_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``key 'a.b': problem`` line per pydantic error, worded for a YAML author."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
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
        raise ConfigError("\n  " + "\n  ".join(problems), path=str(config_file))
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
    return config_from_dict(_read_yaml(path.resolve()), path=path)
