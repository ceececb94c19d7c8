"""Compare stage: candidate pairs of standardized records -> one int8 level per comparison.

Owns the comparisons, term frequencies and the recordlinkage adapter; the config entries
(specs) and their level names live in ``linkage.config``. Imports schema, errors, config and
the standardizers' scalar helpers; never the Linker, CLI or store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from linkage import schema
from linkage.compare.address import AddressComparison, ContactComparison
from linkage.compare.base import Comparison, Prepared, compact_prepared
from linkage.compare.fields import (
    BirthDateComparison,
    DateComparison,
    ExactComparison,
    IdComparison,
    PhoneComparison,
    StringComparison,
)
from linkage.compare.name import NameComparison
from linkage.config import COMPARISON_SPECS, COMPARISON_TYPES, default_comparison_specs
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
    "compare_threads",
    "StringComparison",
    "as_recordlinkage",
    "build_comparisons",
    "compact_prepared",
    "compare",
    "comparison_types",
    "comparisons_from_config",
    "compare_values",
    "default_comparisons",
    "pair_tf",
    "prepare_comparisons",
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


def build_comparisons(specs: Sequence[Any]) -> list[Comparison]:
    """Build comparison objects from validated specs (``linkage.config.ComparisonSpec``)."""
    types = comparison_types()
    return [types[spec.type](**spec.model_dump(exclude={"type"})) for spec in specs]


def default_comparisons() -> list[Comparison]:
    """Comparisons of the canonical fields; phone and current address count once, as contact."""
    return build_comparisons(default_comparison_specs())


def _entry_key(loc: tuple) -> str:
    """``comparisons[1].colum`` from a pydantic location (index, type tag, key...)."""
    parts = list(loc)
    key = "comparisons"
    if parts and isinstance(parts[0], int):
        key += f"[{parts.pop(0)}]"
        if parts and parts[0] in COMPARISON_TYPES:
            parts.pop(0)
    return ".".join([key, *(str(p) for p in parts)])


def comparisons_from_config(
    entries: Sequence[Mapping[str, Any]], *, path: str | None = None
) -> list[Comparison]:
    """Build comparisons from config entries such as ``{type: exact, name: gender, column: gender_std}``.

    Entries are validated as ``linkage.config.ComparisonSpec`` (what ``load_config`` does for
    a run config); every problem is collected and raised once as a ``ConfigError`` naming
    each entry. Raises ``ConfigError``.
    """
    if isinstance(entries, Mapping) or isinstance(entries, str | bytes):
        raise ConfigError("expected a list of comparison entries", path=path, key="comparisons")
    if not entries:
        raise ConfigError("no comparisons given", path=path, key="comparisons")
    try:
        specs = COMPARISON_SPECS.validate_python(list(entries))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            elif err["type"] == "missing":
                msg = "required"
            elif err["type"] in ("model_attributes_type", "model_type", "dict_type"):
                msg = "expected a mapping with a 'type' key"
            elif err["type"].startswith("union_tag"):
                msg = f"unknown comparison type; expected one of {', '.join(COMPARISON_TYPES)}"
                problems.append(f"{_entry_key(err['loc'])}.type: {msg}")
                continue
            if err["loc"]:
                problems.append(f"{_entry_key(err['loc'])}: {msg}")
            else:
                problems.append(msg)
        raise ConfigError("; ".join(problems), path=path, key="comparisons") from None
    return build_comparisons(specs)


# ----------------------------------------------------------------------------- the stage


def _record_columns(records: pd.DataFrame, comparison: Comparison) -> dict[str, np.ndarray]:
    n = len(records)
    values = {}
    for col in comparison.columns:
        if col in records.columns and col in comparison.few_rows_columns:
            values[col] = records[col].array  # read at a few rows (``base.rows_of``)
        elif col in records.columns:
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


# Records below this are prepared in this process alone: starting the worker costs ~1-2 s
# (a fresh interpreter imports pandas and the name tables), a 50,000-record table's work.
PARALLEL_MIN_RECORDS = 50_000


def _compacted(comparison: Comparison, prepared: Prepared) -> Prepared:
    """``compact_prepared(prepared)`` for a comparison that levels pairs through
    ``Prepared.take`` (the base ``compare_prepared``); ``prepared`` itself for one that
    overrides it, which may read the per-record rows directly."""
    if type(comparison).compare_prepared is not Comparison.compare_prepared:
        return prepared
    return compact_prepared(prepared)


def _prepare_one(arg: tuple[Comparison, dict[str, np.ndarray], bool]) -> Prepared:
    """``comparison.prepare(columns)``, compacted when asked: the worker process's share of
    ``prepare_comparisons`` (compacted there, so the reply pickled back is the small one)."""
    comparison, columns, compact = arg
    prepared = comparison.prepare(columns)
    return _compacted(comparison, prepared) if compact else prepared


def prepare_from_file(arg: tuple[str, list[str], list[Comparison], bool]) -> list[Prepared]:
    """Each comparison's ``prepare`` over its columns read from a Parquet file of the records
    (``tables.read_text_columns``: the names of its text columns are given), one comparison
    at a time: a worker process's share of a run's preparing, read from the records
    checkpoint instead of sent through its pipe. The last item of ``arg``: compact each
    result (``compact_prepared``) as ``prepare_comparisons(compact=True)`` does."""
    from linkage.progress import release_memory

    path, text, comparisons, compact = arg
    out = []
    for comparison in comparisons:
        frame = read_comparison_columns(path, set(text), comparison)
        prepared = comparison.prepare(_record_columns(frame, comparison))
        # the columns and the preparing's scratch are freed before the next comparison is
        # read: their heap pages handed back, not kept beside the results until the reply
        # (the worker's share at a million records: resident 937 -> 634 MB once done)
        del frame
        out.append(_compacted(comparison, prepared) if compact else prepared)
        del prepared
        release_memory()
    return out


# A worker process's results of ``prepare_kept``, by key, until ``take_kept`` hands them over
_KEPT: dict[object, Prepared] = {}


def prepare_kept(arg: tuple[object, tuple[str, list[str], list[Comparison], bool]]) -> object:
    """``prepare_from_file`` of ``arg[1]`` (one comparison), its result kept in this process
    under the key ``arg[0]`` until :func:`take_kept` asks for it; returns the key. A worker
    process's call: the caller (blocking meanwhile) is handed each result only once it can
    use it, so the results are not held beside blocking's own peak."""
    key, rest = arg
    (_KEPT[key],) = prepare_from_file(rest)
    return key


def take_kept(keys: list[object]) -> list[Prepared]:
    """The results :func:`prepare_kept` kept under ``keys``, in that order, no longer kept
    here. Raises KeyError for a key it never kept."""
    return [_KEPT.pop(key) for key in keys]


def read_comparison_columns(
    path: str | os.PathLike[str], text: set[str], comparison: Comparison
) -> pd.DataFrame:
    """The columns a comparison reads from a Parquet file of the records
    (``tables.read_text_columns``; ``text`` names its text columns), those
    it reads at a few rows (``few_rows_columns``) as pandas holds the file's text (Arrow
    under pandas 3: the raw IDs of twenty million records were ~1.4 GB as objects)."""
    from linkage.tables import read_text_columns

    wanted = list(comparison.columns)
    few = [c for c in wanted if c in comparison.few_rows_columns]
    frame = read_text_columns(path, [c for c in wanted if c not in few], text)
    return with_few_rows_columns(frame, path, few)


def with_few_rows_columns(
    frame: pd.DataFrame, path: str | os.PathLike[str], columns: list[str]
) -> pd.DataFrame:
    """``frame`` (rows of a Parquet file of the records, in order) with those of
    ``columns`` the file has, read as pandas reads them (Arrow text under pandas 3, not a
    Python string per record): a comparison's ``few_rows_columns``."""
    import pyarrow.parquet as pq

    there = [c for c in columns if c in pq.read_schema(path).names]
    if not there:
        return frame
    read = pd.read_parquet(path, columns=there)
    return frame.assign(**{c: read[c].to_numpy() if read[c].dtype == object else read[c].array
                           for c in there})  # fmt: skip


def prepare_comparisons(
    records: pd.DataFrame,
    comparisons: Sequence[Comparison] | None = None,
    *,
    parallel: bool = False,
    worker: Any = None,
    compact: bool = False,
) -> list[Prepared]:
    """Each comparison's ``prepare`` over the record columns, in the order of ``comparisons``.

    ``records``: standardized records in ``rid`` order (the columns each comparison reads;
    absent ones count as null). Preparing (codes per distinct value: pinyin keys, calendar
    parts, address levels) costs far more than levelling pairs, so a run prepares once and
    hands the result to every ``compare`` call over the same records (``prepared=``).

    With ``parallel`` and at least ``PARALLEL_MIN_RECORDS`` records, the comparisons are
    shared with ONE worker process (``standardize._distinct``'s plain child process over
    stdin/stdout, not a fork of this process and its records table): each side takes the
    next comparison, those reading most columns first, until none is left. The results
    equal one process's. An exception raised by ``prepare`` in the worker is raised here;
    a worker that cannot start or dies is logged and its comparison prepared here.
    ``worker``: a ``standardize._distinct._Worker`` the caller started earlier (``warm``),
    used instead of a new one with ``parallel``, and closed here in any case.

    With ``compact``, each result is compacted (``compact_prepared``: rows held once per
    distinct row, an int32 code per record) as soon as it is prepared, in the worker too;
    levels from it are the same. Not for a caller that reads ``Prepared.rows`` as one entry
    per record; a comparison overriding ``compare_prepared`` is never compacted.
    """
    comparisons = list(default_comparisons() if comparisons is None else comparisons)
    out: list[Prepared | None] = [None] * len(comparisons)

    def here(i: int) -> Prepared:
        prepared = comparisons[i].prepare(_record_columns(records, comparisons[i]))
        return _compacted(comparisons[i], prepared) if compact else prepared

    # costliest first: a comparison's prepare_cost where it declares one, else its columns
    queue = sorted(
        range(len(comparisons)),
        key=lambda i: -(getattr(comparisons[i], "prepare_cost", 0) or len(comparisons[i].columns)),
    )
    if not parallel or len(records) < PARALLEL_MIN_RECORDS or len(comparisons) < 2:
        if worker is not None:
            worker.close()
        for i in queue:
            out[i] = here(i)
        return out
    from linkage.standardize._distinct import _Worker

    worker = worker if worker is not None else _Worker()
    pending: int | None = None
    try:
        while queue or pending is not None:
            if pending is None and queue and not worker.broken:
                pending = queue.pop(0)
                try:
                    worker.send(
                        _prepare_one,
                        (
                            comparisons[pending],
                            _record_columns(records, comparisons[pending]),
                            compact,
                        ),
                    )
                except OSError as exc:  # the worker could not start or died: work here
                    logger.warning(
                        "preparing comparisons in one process: worker unavailable (%s)", exc
                    )
                    worker.broken = True
                    worker.close(kill=True)
                    queue.insert(0, pending)
                    pending = None
            if queue and (pending is None or not _ready(worker)):
                i = queue.pop(0)
                out[i] = here(i)
                continue
            if pending is not None:
                try:
                    out[pending] = worker.receive()
                except (EOFError, OSError, pickle.UnpicklingError) as exc:
                    logger.warning(
                        "preparing comparison %s in this process: worker stopped (%s)",
                        comparisons[pending].name,
                        exc,
                    )
                    worker.broken = True
                    worker.close(kill=True)
                    queue.insert(0, pending)
                pending = None
    finally:
        worker.close(kill=pending is not None)
    return out


def _ready(worker: Any) -> bool:
    """True when the worker's reply can be read (or it died): reading will not wait long."""
    if worker.proc is None:
        return True
    readable, _, _ = select.select([worker.proc.stdout], [], [], 0)
    return bool(readable)


def compare_threads() -> int:
    """Threads to level comparison chunks with (``compare(threads=)``): the cores this
    process may use, at most 4 (each holds a share of a chunk's temporaries). The cores
    are its CPU affinity (a cpuset), lowered to a cgroup v2 CPU quota (``cpu.max``: what
    ``docker --cpus`` and a Kubernetes CPU limit set, which affinity does not show)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, min(cores, 4))


_CPU_MAX = "/sys/fs/cgroup/cpu.max"


def _cgroup_cpu_quota() -> int | None:
    """Whole CPUs of this process's cgroup v2 quota (``/sys/fs/cgroup/cpu.max``: ``QUOTA
    PERIOD`` or ``max PERIOD``), rounded up; None without one or where it cannot be read."""
    try:
        with open(_CPU_MAX, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota == "max":
            return None
        return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def compare(
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: Sequence[Comparison] | None = None,
    chunk_size: int = 500_000,
    *,
    step: Callable[[int], None] | None = None,
    prepared: Sequence[Prepared] | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """Return comparison vectors: ``rid_l``, ``rid_r`` and one int8 ``gamma_<name>`` per comparison.

    Each comparison prepares the record columns once (per distinct value), unless
    ``prepared`` holds ``prepare_comparisons(records, comparisons)`` of these very records;
    pairs are then levelled ``chunk_size`` at a time, every comparison per chunk, so memory
    grows with the chunk, not the pair count, and ``step(n)`` (when given) is called with
    the ``n`` pairs of each finished chunk, in order, for progress reporting. With
    ``threads`` > 1, that many threads level a ``chunk_size // threads`` share of the pairs
    each at once, so the pairs in flight stay ``chunk_size`` (numpy releases the
    interpreter lock in the array work: 5.3 → 3.1 s for 2.2 M pairs on two cores,
    measured; two threads of a whole chunk each held ~200 MB more at a million records);
    each writes its own rows, so the vectors are the same, and every
    comparison's ``compare_prepared`` must be safe to call from several threads (the
    built-in ones are: they read the prepared arrays only). Raises ``InputError`` for pairs
    outside the records, ``ValueError`` for a ``prepared`` of another length or
    ``threads`` < 1.
    """
    comparisons = list(default_comparisons() if comparisons is None else comparisons)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if threads < 1:
        raise ValueError("threads must be at least 1")
    if prepared is not None and len(prepared) != len(comparisons):
        raise ValueError(
            f"prepared holds {len(prepared)} comparisons, {len(comparisons)} were given"
        )
    _check_inputs(records, pairs, comparisons)
    left = pairs[schema.ROW_L].to_numpy(dtype=np.int64)
    right = pairs[schema.ROW_R].to_numpy(dtype=np.int64)
    n = len(records)
    if len(left) and (min(left.min(), right.min()) < 0 or max(left.max(), right.max()) >= n):
        raise InputError(f"pair row numbers must lie in 0..{n - 1}", column=schema.ROW_L)
    out: dict[str, np.ndarray] = {schema.ROW_L: left, schema.ROW_R: right}
    prep_s: list[float] = []
    if prepared is None:
        prepared = []
        for comparison in comparisons:
            t = time.perf_counter()
            prepared.append(comparison.prepare(_record_columns(records, comparison)))
            prep_s.append(time.perf_counter() - t)
    else:
        prep_s = [0.0] * len(comparisons)
    for comparison in comparisons:
        out[schema.GAMMA_PREFIX + comparison.name] = np.empty(len(left), dtype=np.int8)
    level_s = [0.0] * len(comparisons)
    if threads > 1:
        chunk_size = max(chunk_size // threads, 1)

    def level(start: int) -> tuple[int, list[float]]:
        stop = min(start + chunk_size, len(left))
        spent = []
        for i, comparison in enumerate(comparisons):
            t = time.perf_counter()
            out[schema.GAMMA_PREFIX + comparison.name][start:stop] = comparison.compare_prepared(
                prepared[i], left[start:stop], right[start:stop]
            )
            spent.append(time.perf_counter() - t)
        return stop - start, spent

    starts = range(0, len(left), chunk_size)
    with contextlib.ExitStack() as stack:
        if threads > 1 and len(starts) > 1:
            pool = stack.enter_context(
                ThreadPoolExecutor(min(threads, len(starts)), thread_name_prefix="linkage-compare")
            )
            done = pool.map(level, starts)  # in order of the chunks
        else:
            done = map(level, starts)
        for count, spent in done:
            level_s = [a + b for a, b in zip(level_s, spent, strict=True)]
            if step is not None:
                step(count)
    for i, comparison in enumerate(comparisons):
        logger.debug(  # per comparison: detail for profiling, noise in a job log
            "compared %s: %d pairs, prepare %.2fs, levels %.2fs",
            comparison.name,
            len(left),
            prep_s[i],
            level_s[i],
        )
    return pd.DataFrame(out, index=pairs.index)


def compare_values(
    values: Mapping[str, np.ndarray],
    left: np.ndarray,
    right: np.ndarray,
    comparisons: Sequence[Comparison],
) -> dict[str, np.ndarray]:
    """:func:`compare` for record columns given as arrays, without frames: ``values`` maps a
    column to one entry per record (an absent column reads as null, as in :func:`compare`),
    ``left``/``right`` are the pairs' row positions. Returns comparison name -> int8 levels
    (-1 null), from the same ``prepare`` and ``compare_prepared`` calls :func:`compare`
    makes. For single-record search, where frames of a few dozen rows cost more than the
    comparisons. Raises InputError for repeated comparison names or rows out of range."""
    names = [c.name for c in comparisons]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise InputError(f"comparison names must be unique; repeated: {dupes}")
    n = len(next(iter(values.values()))) if values else 0
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    if len(left) and (min(left.min(), right.min()) < 0 or max(left.max(), right.max()) >= n):
        raise InputError(f"pair row numbers must lie in 0..{n - 1}", column=schema.ROW_L)
    out = {}
    for comparison in comparisons:
        columns = {
            col: values[col] if col in values else np.full(n, None, dtype=object)
            for col in comparison.columns
        }
        prepared = comparison.prepare(columns)
        levels = comparison.compare_prepared(prepared, left, right)
        out[comparison.name] = np.asarray(levels, dtype=np.int8)
    return out


def term_frequencies(records: pd.DataFrame, column: str) -> np.ndarray:
    """Relative frequency of each record's value among the non-null values; NaN where null."""
    if column not in records.columns:
        raise InputError(f"records have no column '{column}' for term frequencies", column=column)
    from linkage.compare.base import factorize
    from linkage.tables import blank_text, dictionary_codes

    parts = dictionary_codes(records[column])
    if parts is None:
        codes, _ = factorize(records[column].to_numpy())
    else:
        # a column held as a dictionary (tables.read_dictionary_columns) is counted by its
        # codes, blank values null as factorize makes them
        dictionary, codes = parts
        blank = blank_text(dictionary)
        if blank.any():
            codes = np.where(np.append(blank, False)[codes], -1, codes)
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
