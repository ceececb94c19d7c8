"""Compare stage: candidate pairs of standardized records -> one int8 level per comparison.

Owns the comparisons, their config entries, term frequencies and the recordlinkage adapter.
Imports the schema, errors and the standardizers' scalar helpers; never the Linker, CLI or store.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare.address import AddressComparison, ContactComparison
from linkage.compare.base import Comparison, Prepared
from linkage.compare.fields import (
    BirthDateComparison,
    DateComparison,
    ExactComparison,
    IdComparison,
    PhoneComparison,
    StringComparison,
)
from linkage.compare.name import NameComparison
from linkage.errors import ConfigError, InputError

if TYPE_CHECKING:
    from linkage.compare.rl_adapter import RecordLinkageFeature

logger = logging.getLogger(__name__)

__all__ = [
    "AddressComparison",
    "BirthDateComparison",
    "Comparison",
    "ContactComparison",
    "DateComparison",
    "ExactComparison",
    "IdComparison",
    "NameComparison",
    "PhoneComparison",
    "Prepared",
    "StringComparison",
    "as_recordlinkage",
    "compare",
    "comparison_types",
    "comparisons_from_config",
    "default_comparisons",
    "pair_tf",
    "term_frequencies",
]

_TYPES: tuple[type[Comparison], ...] = (
    NameComparison,
    IdComparison,
    BirthDateComparison,
    ExactComparison,
    StringComparison,
    DateComparison,
    PhoneComparison,
    AddressComparison,
    ContactComparison,
)


def comparison_types() -> dict[str, type[Comparison]]:
    """Config ``type`` -> comparison class."""
    return {cls.type_name: cls for cls in _TYPES}


def default_comparisons() -> list[Comparison]:
    """Comparisons of the canonical fields; phone and current address count once, as contact."""
    return [
        NameComparison(),
        IdComparison(),
        BirthDateComparison(),
        # the ID's 17th digit stands in for a missing recorded gender
        ExactComparison("gender", schema.GENDER_STD, fallback=schema.ID_GENDER),
        ExactComparison("ethnicity", schema.ETHNICITY_STD),
        ContactComparison(),
        AddressComparison(schema.HUKOU_ADDRESS, field=schema.HUKOU_ADDRESS),
    ]


_TEXT_PARAMS = {
    "name",
    "column",
    "fallback",
    "from_15_column",
    "phone_column",
    "address_field",
    "field",
}


def _entry_problems(index: int, entry: Any) -> tuple[Comparison | None, list[str]]:
    key = f"comparisons[{index}]"
    if not isinstance(entry, Mapping):
        return None, [f"{key}: expected a mapping with a 'type' key, got {type(entry).__name__}"]
    types = comparison_types()
    kind = entry.get("type")
    if kind not in types:
        return None, [
            f"{key}.type: unknown comparison type {kind!r}; expected one of {', '.join(types)}"
        ]
    cls = types[kind]
    signature = inspect.signature(cls.__init__)
    allowed = [p for p in signature.parameters if p != "self"]
    required = [
        p.name
        for p in signature.parameters.values()
        if p.name != "self" and p.default is inspect.Parameter.empty
    ]
    params = {k: v for k, v in entry.items() if k != "type"}
    problems = [
        f"{key}.{k}: unknown setting for type '{kind}'; expected one of {', '.join(allowed)}"
        for k in params
        if k not in allowed
    ]
    problems += [f"{key}.{k}: required for type '{kind}'" for k in required if k not in params]
    for k, v in params.items():
        if k in _TEXT_PARAMS and v is not None and not isinstance(v, str):
            problems.append(f"{key}.{k}: expected a column or field name, got {v!r}")
    if problems:
        return None, problems
    try:
        return cls(**params), []
    except (TypeError, ValueError) as exc:
        return None, [f"{key} (type '{kind}'): {exc}"]


def comparisons_from_config(
    entries: Sequence[Mapping[str, Any]], *, path: str | None = None
) -> list[Comparison]:
    """Build comparisons from config entries such as ``{type: exact, name: gender, column: gender_std}``.

    Every problem is collected and raised once as a ``ConfigError`` naming each entry.
    """
    if isinstance(entries, Mapping) or isinstance(entries, str | bytes):
        raise ConfigError("expected a list of comparison entries", path=path, key="comparisons")
    built: list[Comparison] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        comparison, found = _entry_problems(i, entry)
        problems += found
        if comparison is None:
            continue
        if comparison.name in seen:
            problems.append(
                f"comparisons[{i}].name: '{comparison.name}' already used by comparisons[{seen[comparison.name]}]"
            )
            continue
        seen[comparison.name] = i
        built.append(comparison)
    if problems:
        raise ConfigError("; ".join(problems), path=path, key="comparisons")
    if not built:
        raise ConfigError("no comparisons given", path=path, key="comparisons")
    return built


# ----------------------------------------------------------------------------- the stage


def _record_columns(records: pd.DataFrame, comparison: Comparison) -> dict[str, np.ndarray]:
    n = len(records)
    values = {}
    for col in comparison.columns:
        if col in records.columns:
            values[col] = records[col].to_numpy()
        else:
            logger.debug("comparison %s: column %s absent, read as null", comparison.name, col)
            values[col] = np.full(n, None, dtype=object)
    return values


def _check_inputs(records: pd.DataFrame, pairs: pd.DataFrame, comparisons: Sequence[Comparison]):
    missing = [c for c in (schema.ROW_L, schema.ROW_R) if c not in pairs.columns]
    if missing:
        raise InputError(f"pairs lack the columns {missing}", column=missing[0])
    names = [c.name for c in comparisons]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise InputError(f"comparison names must be unique; repeated: {dupes}")
    if schema.ROW in records.columns:
        rid = records[schema.ROW].to_numpy()
        if not np.array_equal(rid, np.arange(len(records))):
            raise InputError(
                f"records must be in '{schema.ROW}' order with {schema.ROW} = 0..n-1 "
                "(records.iloc[rid] is row rid)",
                column=schema.ROW,
            )


def compare(
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: Sequence[Comparison] | None = None,
    chunk_size: int = 500_000,
) -> pd.DataFrame:
    """Return comparison vectors: ``rid_l``, ``rid_r`` and one int8 ``gamma_<name>`` per comparison.

    Each comparison prepares the record columns once (per distinct value); pairs are then
    levelled ``chunk_size`` at a time, so memory grows with the chunk, not the pair count.
    """
    comparisons = list(default_comparisons() if comparisons is None else comparisons)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    _check_inputs(records, pairs, comparisons)
    left = pairs[schema.ROW_L].to_numpy(dtype=np.int64)
    right = pairs[schema.ROW_R].to_numpy(dtype=np.int64)
    n = len(records)
    if len(left) and (min(left.min(), right.min()) < 0 or max(left.max(), right.max()) >= n):
        raise InputError(f"pair row numbers must lie in 0..{n - 1}", column=schema.ROW_L)
    out: dict[str, np.ndarray] = {schema.ROW_L: left, schema.ROW_R: right}
    for comparison in comparisons:
        t = time.perf_counter()
        prepared = comparison.prepare(_record_columns(records, comparison))
        prep_s = time.perf_counter() - t
        gamma = np.empty(len(left), dtype=np.int8)
        for start in range(0, len(left), chunk_size):
            stop = start + chunk_size
            gamma[start:stop] = comparison.compare_prepared(
                prepared, left[start:stop], right[start:stop]
            )
        out[schema.GAMMA_PREFIX + comparison.name] = gamma
        logger.info(
            "compared %s: %d pairs, prepare %.2fs, levels %.2fs",
            comparison.name,
            len(left),
            prep_s,
            time.perf_counter() - t - prep_s,
        )
    return pd.DataFrame(out, index=pairs.index)


def term_frequencies(records: pd.DataFrame, column: str) -> np.ndarray:
    """Relative frequency of each record's value among the non-null values; NaN where null."""
    if column not in records.columns:
        raise InputError(f"records have no column '{column}' for term frequencies", column=column)
    from linkage.compare.base import factorize

    codes, _ = factorize(records[column].to_numpy())
    present = codes >= 0
    counts = np.bincount(codes[present])
    tf = np.full(len(codes), np.nan)
    if present.any():
        tf[present] = counts[codes[present]] / present.sum()
    return tf


def pair_tf(tf_per_row: np.ndarray, pairs: pd.DataFrame) -> np.ndarray:
    """Per pair, the larger term frequency of its two records (NaN only when both are null)."""
    tf = np.asarray(tf_per_row, dtype=float)
    left = pairs[schema.ROW_L].to_numpy(dtype=np.int64)
    right = pairs[schema.ROW_R].to_numpy(dtype=np.int64)
    return np.fmax(tf[left], tf[right])


# ----------------------------------------------------------------------------- recordlinkage


def as_recordlinkage(
    comparison: Comparison, records: pd.DataFrame | None = None
) -> RecordLinkageFeature:
    """Wrap a comparison as a ``recordlinkage`` feature for ``rl.Compare(features=[...])``/``.add``.

    With ``records``, the feature reads only the columns they have (others count as null).
    recordlinkage pulls in scikit-learn, so it is imported here, not with the stage.
    """
    from linkage.compare.rl_adapter import RecordLinkageFeature

    columns = list(comparison.columns)
    if records is not None:
        columns = [c for c in columns if c in records.columns]
        if not columns:
            raise InputError(
                f"records have none of the columns comparison '{comparison.name}' reads: "
                f"{comparison.columns}"
            )
    return RecordLinkageFeature(comparison, columns)
