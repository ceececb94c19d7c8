"""The batch linking path: block → compare → score → cluster → merge over standardized records.

Composition only: it sequences the stage functions and holds no state. ``compare_pairs``,
``score_pairs`` and ``cluster_records`` are the mid-level steps the batch (``link_records``)
and incremental ingest both call, so the two paths cannot drift apart. ``STAGES`` names the
steps a run reports, in order. Must not import the incremental layer, the Linker or the CLI.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from linkage import schema
from linkage.blocking import DERIVED_KEYS, block, key_codes, plan_keys
from linkage.checkpoint import Checkpoints, part_order
from linkage.cluster import (
    cannot_link_codes,
    cluster_pairs,
    cluster_size_distribution,
    cluster_stats,
    given_char_counts,
    sibling_pairs,
    sibling_parts,
)
from linkage.compare import (
    PARALLEL_MIN_RECORDS,
    Comparison,
    Prepared,
    build_comparisons,
    compare,
    compare_threads,
    pair_tf,
    prepare_comparisons,
    prepare_kept,
    take_kept,
    term_frequencies,
    with_few_rows_columns,
)
from linkage.config import GoldenSettings, RunConfig
from linkage.identity import cluster_ids, process_key
from linkage.io import write_parquet
from linkage.merge import GoldenParts, WorkerShare, merge_records, worker_fields
from linkage.model import FellegiSunterModel
from linkage.progress import Progress, ProgressLike, as_progress, release_memory
from linkage.tables import (
    TEXT_DTYPE,
    as_arrow_text,
    attach_keys,
    column_subset,
    columns_of,
    dictionaries_as_objects,
    is_dictionary_column,
)
from linkage.training import check_model_levels, new_model, train_model

logger = logging.getLogger(__name__)

# The stages a batch run reports through its ``progress`` hook (``linkage.progress``), in
# order: reading and standardizing come from ``io.read_records``, writing from the Linker.
STAGES: tuple[str, ...] = (
    "reading",
    "standardizing",
    "blocking",
    "comparing",
    "training model",
    "scoring",
    "clustering",
    "building golden records",
    "writing outputs",
)


@dataclass
class LinkResult:
    """Tables of one batch run; every table is a pandas DataFrame.

    ``golden`` is ``merge.merge_records``' table with its ``<field>_source`` columns as
    pandas categoricals of the source names. A run that spills its records
    (``Linker.write``) holds it as ``merge.GoldenParts`` files until it is written
    (``golden_parts``); ``golden`` reads it (or, once written and the parts removed,
    golden_records.csv) the first time it is asked for. ``summary`` holds counts and
    ``summary["seconds"]``, the seconds spent per stage.
    """

    records: pd.DataFrame
    pairs: pd.DataFrame
    identities: pd.DataFrame
    golden: pd.DataFrame
    model: FellegiSunterModel
    comparisons: list[Comparison]
    summary: dict = field(default_factory=dict)

    def golden_parts(self) -> GoldenParts | None:
        """The golden table's Parquet parts while it is held so (unread), else None."""
        table = self.__dict__.get("_golden")
        return table if isinstance(table, GoldenParts) else None

    def cluster_sizes(self) -> pd.DataFrame:
        """Return the cluster-size distribution (size, clusters, records)."""
        return cluster_size_distribution(self.identities[schema.IDENTITY_ID])

    def explain(self, index: int | pd.Series) -> pd.DataFrame:
        """Return the per-comparison levels and weights behind one scored pair: ``index`` is
        a label of ``pairs`` or a row (Series) of ``pairs``, of :meth:`pairs_with_keys` or of
        a review queue (found by its ``row_l`` / ``row_r``, else by its label). Columns as
        :meth:`FellegiSunterModel.explain`. The two records are named in the header
        (``columns.name``, e.g. ``police P1 ~ health H7``) and in ``attrs["records"]`` as two
        (source, record_id) tuples.

        Raises (one line each, without record values):
            KeyError: ``index`` is not a label of ``pairs``, or the row is not a scored pair.
            TypeError: ``index`` is neither a label nor a row.
        """
        row = self.pairs.loc[self._pair_label(index)]
        frame = self.model.explain(row)
        left, right = int(row[schema.ROW_L]), int(row[schema.ROW_R])
        src = self.records[schema.SOURCE].to_numpy()
        rid = self.records[schema.RECORD_ID].to_numpy()
        records = [(str(src[left]), str(rid[left])), (str(src[right]), str(rid[right]))]
        frame.attrs["records"] = records
        frame.columns.name = " ~ ".join(f"{s} {r}" for s, r in records)
        return frame

    def _pair_label(self, index: object) -> object:
        """The label in ``pairs`` of a label or a row; the messages never show a record value."""
        usage = "pass a label of result.pairs or one row of it (pairs_with_keys() rows work too)"
        if isinstance(index, pd.Series):
            if schema.ROW_L in index and schema.ROW_R in index:
                try:
                    left, right = int(index[schema.ROW_L]), int(index[schema.ROW_R])
                except (TypeError, ValueError):
                    raise TypeError(
                        f"the row's {schema.ROW_L} / {schema.ROW_R} are not row numbers; {usage}"
                    ) from None
                hit = np.flatnonzero(
                    (self.pairs[schema.ROW_L].to_numpy() == left)
                    & (self.pairs[schema.ROW_R].to_numpy() == right)
                )
                if len(hit) == 0:
                    raise KeyError(f"the row is not a pair of this result's pairs; {usage}")
                return self.pairs.index[hit[0]]
            index = index.name
        if isinstance(index, (pd.DataFrame, list, tuple, np.ndarray, dict, set)):
            raise TypeError(f"explain takes one pair, not a {type(index).__name__}; {usage}")
        try:
            found = index in self.pairs.index
        except TypeError:
            found = False
        if not found:
            # the label's type only: a wrong argument may be a record's value
            raise KeyError(f"no scored pair has this label (a {type(index).__name__}); {usage}")
        return index

    def pairs_with_keys(self) -> pd.DataFrame:
        """Return scored pairs with both records' source and record id in front."""
        return attach_keys(self.pairs, self.records)


def _golden(self: LinkResult) -> pd.DataFrame:
    table = self.__dict__["_golden"]
    if isinstance(table, GoldenParts) or callable(table):
        # spilled (a whole city's golden table is not held unless asked for): read once
        table = table.to_pandas() if isinstance(table, GoldenParts) else table()
        self.__dict__["_golden"] = table
    return table


def _set_golden(self: LinkResult, table: pd.DataFrame | GoldenParts | Callable) -> None:
    self.__dict__["_golden"] = table


# ``golden`` stays a dataclass field (constructor, fields()) read through this property:
# a table, GoldenParts or a function giving the table
LinkResult.golden = property(_golden, _set_golden, doc="The golden records (one per identity).")


def _stage(report: Progress, name: str, total: int | None = None, unit: str = "") -> None:
    assert name in STAGES, name  # a new stage must be listed in STAGES
    report.stage(name, total=total, unit=unit)


def compare_pairs(
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    comparisons: list[Comparison],
    tf_rows: dict[str, np.ndarray],
    step: Callable[[int], None] | None = None,
    *,
    prepared: list[Prepared] | None = None,
    threads: int = 1,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Compare candidate pairs; return the vectors (with ``rule`` when pairs have it) and
    the per-pair term frequencies of each comparison in ``tf_rows`` (per-row frequencies).
    ``step(n)`` is told each chunk of ``n`` compared pairs; ``prepared`` is
    ``compare.prepare_comparisons(records, comparisons)`` when the caller holds it;
    ``threads``: chunks levelled at once (``compare.compare``)."""
    vectors = compare(records, pairs, comparisons, step=step, prepared=prepared, threads=threads)
    if schema.RULE in pairs:
        vectors[schema.RULE] = pairs[schema.RULE].to_numpy()
    return vectors, {name: pair_tf(values, vectors) for name, values in tf_rows.items()}


def score_pairs(
    vectors: pd.DataFrame,
    model: FellegiSunterModel,
    comparisons: list[Comparison],
    tf: dict[str, np.ndarray],
) -> pd.DataFrame:
    """Score comparison vectors; term frequencies of comparisons the model does not adjust
    are ignored. Adds ``mw_<name>``, ``match_weight`` and ``match_probability``."""
    tf = {k: v for k, v in tf.items() if k in model.tf_columns}
    return model.score(vectors, tf=tf) if len(vectors) else _empty_scored(vectors, comparisons)


def cluster_records(
    records: pd.DataFrame,
    scored: pd.DataFrame,
    config: RunConfig,
    *,
    siblings_held_out: bool = False,
) -> pd.Series:
    """Cluster scored pairs of ``records`` (``rid`` 0..n-1) under the run's clustering
    settings and cannot-link rule; return one cluster label per record. Pairs that look like
    twins or siblings (``sibling_pairs``) are held out, unless ``siblings_held_out`` says
    the caller did so already (then ``scored`` needs only ``rid_l``, ``rid_r``,
    ``match_weight`` and ``match_probability``)."""
    # as integer codes (cluster.cannot_link_codes): the text table was gigabytes at 20 M
    cannot = cannot_link_codes(
        records,
        same_source=config.clustering.cannot_link_same_source_ids,
        dated=config.clustering.cannot_link_dated_ids,
    )
    return cluster_pairs(
        len(records),
        scored if siblings_held_out else scored[~sibling_pairs(records, scored)],
        config.clustering.threshold,
        cannot_link_coded=cannot,
        max_cluster_size=config.clustering.max_cluster_size,
    )


def tf_rows(records: pd.DataFrame, config: RunConfig, comparisons: list[Comparison]) -> dict:
    """Per-row term frequencies of the run's records for each ``model.term_frequency`` entry.

    Entries of the default settings naming a comparison or column this run lacks are skipped
    (written entries naming a missing comparison were refused by ``load_config``).
    """
    present = {c.name for c in comparisons}
    return {
        name: term_frequencies(records, column)
        for name, column in config.model.term_frequency.items()
        if name in present and column in records.columns
    }


def stage_columns(config: RunConfig, comparisons: list[Comparison]) -> dict[str, list[str]]:
    """The record columns each step of :func:`link_records` reads, by stage name.

    ``blocking``: ``rid``, ``source`` and every blocking and refinement key (a derived key's
    input columns, ``blocking.DERIVED_KEYS``); ``comparing``: the comparisons' columns and the
    term-frequency columns; ``training``: ``source`` and ``record_id`` (the u sample's
    same-source rule, reviewed labels) besides what comparing reads; ``scoring``: what the
    twin, sibling and guardian checks read as each chunk of pairs is scored
    (``cluster.sibling_parts``, through ``_ClusterInput.add``); ``clustering``: the
    cannot-link rule's (``cluster.cannot_link_codes``), the twin and guardian rules'
    (``cluster.sibling_parts``) and the identity key's (``identity.cluster_ids``) columns;
    ``golden``: what ``merge.merge_records`` reads under the run's survivorship settings.
    Columns a stage reads only when present are listed all the same; a caller keeps the
    ones its records have. ``tests/test_memory.py`` runs the stages on records cut to these
    lists and checks every output is unchanged.
    """
    rules = config.blocking.rules
    keys = [k for rule in rules for k in rule.keys] + config.blocking.all_refine_keys()
    blocking = [schema.ROW, schema.SOURCE]
    for key in keys:
        blocking += list(DERIVED_KEYS[key][0]) if key in DERIVED_KEYS else [key]
    comparing = [schema.ROW] + [col for c in comparisons for col in c.columns]
    comparing += list(config.model.term_frequency.values())
    training = [schema.ROW, schema.SOURCE, schema.RECORD_ID, *comparing]
    scoring = [
        schema.ROW, schema.name_col(schema.NAME, "clean"), schema.name_col(schema.NAME, "given"),
        schema.BIRTH_DATE_STD,
    ]  # fmt: skip
    clustering = [
        schema.ROW, schema.SOURCE, schema.RECORD_ID, schema.ID_STD, schema.ID_VALID,
        schema.QUALITY_FLAGS, schema.name_col(schema.NAME, "clean"),
        schema.name_col(schema.NAME, "given"), schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE,
    ]  # fmt: skip
    stages = {
        "blocking": blocking,
        "comparing": comparing,
        "training": training,
        "scoring": scoring,
        "clustering": clustering,
        "golden": golden_columns(config.golden_settings()),
    }
    return {name: list(dict.fromkeys(cols)) for name, cols in stages.items()}


def golden_columns(settings: GoldenSettings) -> list[str]:
    """The record columns ``merge.merge_records`` reads under ``settings``: the keys, the
    recency and ID-validity columns and each field's value and shown (``raw``) column."""
    cols = [schema.SOURCE, schema.RECORD_ID, schema.REGISTERED_AT_STD, schema.ID_VALID]
    for rule in settings.fields.values():
        cols += [rule.column] + ([rule.raw] if rule.raw is not None else [])
    return list(dict.fromkeys(cols))


def linking_columns(config: RunConfig, records_columns: list[str]) -> list[str]:
    """The columns of ``records_columns`` that blocking to clustering read (``stage_columns``
    less ``golden``), in the records' order: all a run needs before golden records."""
    comparisons = build_comparisons(config.comparison_specs())
    stages = stage_columns(config, comparisons)
    wanted = {c for name, cols in stages.items() if name != "golden" for c in cols}
    return [c for c in records_columns if c in wanted]


def held_columns(config: RunConfig, records_columns: list[str]) -> list[str]:
    """The columns of ``records_columns`` a run that spills its records holds from the end
    of standardizing through blocking, in the records' order: the blocking and refinement
    keys' and the term-frequency columns (``stage_columns``). Later stages read theirs back
    from the records checkpoint (``link_records``' ``golden_records``). With reviewed
    labels (``model.labels``, compared from the record columns in training) every column
    blocking to clustering reads (``linking_columns``)."""
    if config.model.labels is not None:
        return linking_columns(config, records_columns)
    comparisons = build_comparisons(config.comparison_specs())
    stages = stage_columns(config, comparisons)
    wanted = set(stages["blocking"]) | set(config.model.term_frequency.values())
    return [c for c in records_columns if c in wanted]


def run_columns(config: RunConfig) -> set[str]:
    """Every record column a run reads from blocking to golden records (``stage_columns``,
    ``golden`` included): a run that spills its records keeps no other column, not even in
    the saved records its golden records read back (``Linker.run``)."""
    stages = stage_columns(config, build_comparisons(config.comparison_specs()))
    return {c for cols in stages.values() for c in cols}


def _training_sample(n_pairs: int, cap: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a seeded uniform sample of ``cap`` of ``n_pairs`` pairs; None
    when all pairs fit (so small runs train on exactly what they always did)."""
    if n_pairs <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_pairs, size=cap, replace=False))


def _below_floor_sample(left: np.ndarray, right: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the pairs in a seeded ``fraction`` of all pairs, chosen by a hash of both
    ``rid``s (splitmix64's finalizer), so the sample does not depend on the chunk size."""
    if fraction >= 1.0:
        return np.ones(len(left), dtype=bool)
    with np.errstate(over="ignore"):
        x = (left.astype(np.uint64) << np.uint64(32)) ^ right.astype(np.uint64)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x < np.uint64(int(fraction * 2.0**64))


class _ClusterInput:
    """What clustering (``cluster.cluster_pairs``) needs of the scored pairs, gathered a chunk
    at a time: ``rid``s (int32), weight and probability of each pair not held out as twins or
    siblings (``cluster.sibling_parts``), ~25 bytes a pair.

    Links (probability >= threshold) stay in memory. A pair below the threshold matters to
    clustering only when both its records end in one component of links (it flags the
    component for reclustering and counts in the mean weights there); components are known
    once every link is in, so those pairs are spilled to ``folder`` as Parquet (kept in
    memory without one) and read back in ``finish`` a part at a time, keeping only pairs
    inside a component. The result equals clustering every pair.
    """

    def __init__(self, n_records: int, threshold: float, folder: Path | None):
        self.n = n_records
        self.threshold = threshold
        self.folder = folder
        self.partnered = np.zeros(n_records, dtype=bool)
        self.links: list[pd.DataFrame] = []
        self.below: list[pd.DataFrame | Path] = []
        # given-name characters over all records, counted at the first chunk
        self.given_counts: dict[str, int] | None = None

    def add(self, records: pd.DataFrame, scored: pd.DataFrame, part: int) -> None:
        """Take clustering's share of one chunk of scored pairs."""
        clean = schema.name_col(schema.NAME, "clean")
        if self.given_counts is None and clean in records:
            self.given_counts = given_char_counts(records[clean])
        held_out, if_partnered, partners = sibling_parts(records, scored, self.given_counts)
        left = scored[schema.ROW_L].to_numpy()
        right = scored[schema.ROW_R].to_numpy()
        self.partnered[left[partners]] = True
        self.partnered[right[partners]] = True
        keep = ~held_out
        prob = scored[schema.MATCH_PROBABILITY].to_numpy(np.float64)[keep]
        frame = pd.DataFrame(
            {
                schema.ROW_L: left[keep].astype(np.int32),
                schema.ROW_R: right[keep].astype(np.int32),
                schema.MATCH_WEIGHT: scored[schema.MATCH_WEIGHT].to_numpy(np.float64)[keep],
                schema.MATCH_PROBABILITY: prob,
                schema.SIBLING_IF_PARTNERED: if_partnered[keep],
            }
        )
        strong = prob >= self.threshold
        links, below = frame[strong], frame[~strong]
        self.links.append(links)
        if self.folder is None:
            self.below.append(below)
            return
        self.below.append(write_parquet(below, self.folder / f"part-{part:05d}.below.parquet"))
        write_parquet(links, self.folder / f"part-{part:05d}.links.parquet")

    @classmethod
    def saved(cls, n_records: int, threshold: float, folder: Path) -> _ClusterInput:
        """The input an earlier run of this stage saved in ``folder`` (see ``save``)."""
        out = cls(n_records, threshold, folder)
        parts = sorted(folder.glob("part-*.parquet"), key=part_order)
        out.links = [pd.read_parquet(p) for p in parts if p.name.endswith(".links.parquet")]
        out.below = [p for p in parts if p.name.endswith(".below.parquet")]
        out.partnered = pd.read_parquet(folder / "partnered.parquet")["partnered"].to_numpy()
        return out

    def save(self) -> None:
        """Save the partner flags next to the spilled parts (with a checkpoint folder)."""
        if self.folder is not None:
            frame = pd.DataFrame({"partnered": self.partnered})
            write_parquet(frame, self.folder / "partnered.parquet")

    def _kept(self, frame: pd.DataFrame) -> pd.DataFrame:
        left = frame[schema.ROW_L].to_numpy()
        right = frame[schema.ROW_R].to_numpy()
        sibling = frame[schema.SIBLING_IF_PARTNERED].to_numpy() & (
            self.partnered[left] | self.partnered[right]
        )
        return frame[~sibling]

    def finish(self) -> pd.DataFrame:
        """The pairs clustering needs: every link, and pairs below the threshold whose two
        records lie in one component of links; twins and siblings held out."""
        cols = [schema.ROW_L, schema.ROW_R, schema.MATCH_WEIGHT, schema.MATCH_PROBABILITY]
        links = self._kept(pd.concat(self.links, ignore_index=True))[cols]
        self.links = []
        _, comp = connected_components(
            csr_matrix(
                (
                    np.ones(len(links), dtype=np.int32),
                    (links[schema.ROW_L].to_numpy(), links[schema.ROW_R].to_numpy()),
                ),
                shape=(self.n, self.n),
            ),
            directed=False,
        )
        frames = [links]
        for part in self.below:
            below = pd.read_parquet(part) if isinstance(part, Path) else part
            below = self._kept(below)
            inside = comp[below[schema.ROW_L].to_numpy()] == comp[below[schema.ROW_R].to_numpy()]
            frames.append(below.loc[inside, cols])
        self.below = []
        return pd.concat(frames, ignore_index=True)


# DuckDB's memory limit for blocking's joins without ``run.memory_limit`` (bytes). DuckDB's
# own default, 80% of the machine, let the joins of 2,993,950 records take ~1.4 GB above the
# records held; under 1 GB they took ~0.8 GB in the same 18.5 s, under 512 MB ~0.6 GB in
# 21 s (measured, one process per setting). Beyond it DuckDB spills to disk.
DUCKDB_MEMORY = 2**30


def duckdb_memory(config: RunConfig) -> int:
    """Bytes DuckDB may hold for blocking's joins: a quarter of ``run.memory_limit`` (the
    records, the keys and the fetched pairs are held beside it; at least 256 MB), else
    ``DUCKDB_MEMORY``."""
    limit = config.run.memory_bytes()
    return DUCKDB_MEMORY if limit is None else max(limit // 4, 2**28)


def _connection(config: RunConfig, spill: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection held to ``duckdb_memory(config)``, spilling beyond it into the
    folder ``spill``."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = '{duckdb_memory(config)}B'")
    con.execute("SET temp_directory = ?", [str(spill)])
    return con


def _rid_dtype(n_records: int) -> type:
    return np.int32 if n_records < 2**31 else np.int64


def _block(
    box: list[pd.DataFrame],
    config: RunConfig,
    checkpoints: Checkpoints | None,
    cut: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """The candidate pairs (int32 ``rid_l``, ``rid_r``, categorical ``rule``) and the
    blocking report rows of the records ``box[0]`` (a one-item list, so that the table
    it holds can be replaced); read back when the checkpoint has them. With ``cut``,
    ``box[0]`` is replaced by ``cut(box[0])`` once the keys are coded, before the rules
    are planned and DuckDB joins them: a caller that drops the key columns then frees them
    for both."""
    n = len(box[0])
    if checkpoints is not None and checkpoints.done("blocking"):
        if cut is not None:
            box[0] = cut(box[0])
        doc = checkpoints.document("blocking")
        saved = checkpoints.frame("blocking", "pairs")
        names = np.array(doc["rules"], dtype=object)
        pairs = pd.DataFrame(
            {
                schema.ROW_L: saved[schema.ROW_L].to_numpy(_rid_dtype(n)),
                schema.ROW_R: saved[schema.ROW_R].to_numpy(_rid_dtype(n)),
                schema.RULE: pd.Categorical.from_codes(
                    saved["rule_index"].to_numpy(np.int16), categories=names
                ),
            }
        )
        return pairs, doc["report"]
    coded = key_codes(box[0], config.blocking)
    if cut is not None:
        # before the rules are planned: each rule's grouping allocates ~1-2 GB at twenty
        # million records, and the key columns held beside it were ~2.5 GB more
        box[0] = cut(box[0])
    plan = plan_keys(coded, config.blocking)
    del coded  # the plan's own table
    rows: list[dict] = []
    with contextlib.ExitStack() as stack:
        # DuckDB spills under the checkpoint folder (OUTPUT/.work), else a folder of its own
        # (not its default, ``.tmp`` in the working directory)
        if checkpoints is not None:
            spill: str | Path = checkpoints.path("duckdb_tmp")
        else:
            spill = stack.enter_context(tempfile.TemporaryDirectory(prefix="linkage-duckdb-"))
        con = _connection(config, spill)
        stack.callback(con.close)
        pairs = block(
            None,
            config.blocking,
            connection=con,
            report=rows,
            rid_dtype=_rid_dtype(n),
            plan=plan,
        )
        del plan  # the coded keys, before the pairs are copied below
    # int32 row numbers: 9 bytes a candidate pair instead of 17 (the rule is categorical)
    rid = _rid_dtype(n)
    pairs = pd.DataFrame(
        {
            schema.ROW_L: pairs[schema.ROW_L].to_numpy(rid),
            schema.ROW_R: pairs[schema.ROW_R].to_numpy(rid),
            schema.RULE: pairs[schema.RULE].array,
        }
    )
    if checkpoints is not None:
        codes = pd.DataFrame(
            {
                schema.ROW_L: pairs[schema.ROW_L].to_numpy(),
                schema.ROW_R: pairs[schema.ROW_R].to_numpy(),
                "rule_index": pairs[schema.RULE].cat.codes.to_numpy(np.int16),
            }
        )
        rules = [str(c) for c in pairs[schema.RULE].cat.categories]
        checkpoints.save("blocking", {"pairs": codes}, {"rules": rules, "report": rows})
    return pairs, rows


def link_records(
    records: pd.DataFrame,
    config: RunConfig,
    *,
    model: FellegiSunterModel | None = None,
    progress: ProgressLike = None,
    id_key: bytes | None = None,
    checkpoints: Checkpoints | None = None,
    golden_records: Callable[[list[str]], pd.DataFrame] | None = None,
    preparing: _EarlyPrepare | None = None,
) -> LinkResult:
    """Link standardized records (with ``rid`` 0..n-1) into identities; return every table.

    ``progress`` (``linkage.progress``) gets the stages from ``blocking`` to ``building
    golden records``; ``comparing`` is counted in pairs. ``id_key`` names the identities
    (``identity.cluster_ids``); without it, ``$LINKAGE_ID_KEY`` or a per-process key, so
    ids are stable across processes only with a key.

    Memory: candidate pairs (int32 ``rid``s, dropped once scored) are compared and scored
    ``run.chunk_pairs`` at a time (sized from ``run.memory_limit``); of each chunk the full
    scored rows at or above ``output.pairs_min_probability`` are kept (``LinkResult.pairs``),
    with a seeded sample of about ``run.below_floor_pairs`` below it, and, for clustering,
    ``rid``s, weight and probability of the links and of the weaker pairs inside their
    components (``_ClusterInput``). EM trains on at most
    ``run.train_sample_pairs`` candidate pairs (a seeded sample above it). With
    ``checkpoints`` (``linkage.checkpoint``), each finished stage is saved there and a
    stage saved by an earlier, killed run of the same config and inputs is read back.
    ``golden_records(columns)``, when given, returns those of the columns that exist, of
    every record (same rows, same order): a caller that spilled its records (``Linker``:
    the records checkpoint) passes ``records`` cut to what blocking reads
    (``held_columns``; or to ``linking_columns``) and each later stage reads the columns it
    lacks from it when it starts: the comparing columns while the comparisons are prepared,
    the twin and sibling checks' columns once they are (every other column but the
    clustering ones then dropped: scoring levels pairs from the prepared codes), the other
    clustering columns once the comparisons are freed after scoring, the golden columns
    after clustering (clustering's own then dropped, and the columns of the fields a worker
    process builds).
    Text columns of ``records`` may be Arrow dictionaries
    (``tables.read_dictionary_columns``, as ``Linker`` reads them back): term frequencies
    and blocking read their codes; they are made ``str`` objects once blocking is done, or
    with ``golden_records`` (the table then cut) once scoring is, the comparisons taking
    theirs as objects while they are prepared and the twin and sibling checks their rows'.
    ``LinkResult.records`` is the table held at the end: ``rid``, ``source``,
    ``record_id`` and the golden columns this process read (with ``checkpoints`` and
    ``golden_records``, the golden table is spilled there, ``merge_records(spill=)``, and
    only the keys are kept).
    ``preparing``: the worker :func:`prepare_ahead` started for this config and these
    records (``golden_records``) before they were read back; taken over (and closed) here.
    """
    say = as_progress(progress)
    timings: dict[str, float] = {}
    # handed over in a list: no reference to the table is kept in this frame (it is cut
    # as the stages go, ``_after_comparing``)
    pending = [records]
    del records
    early = preparing
    try:
        comparisons = build_comparisons(config.comparison_specs())
        if early is not None and [c.name for c in early.comparisons] != [
            c.name for c in comparisons
        ]:
            raise ValueError("preparing was started for other comparisons than this config's")
        n = len(pending[0])
        rows_tf = tf_rows(pending[0], config, comparisons)
        t = time.perf_counter()
        _stage(say, "blocking")
        # the comparisons' worker imports while blocking runs, instead of when they are
        # prepared, and prepares its share from the records checkpoint once that is written
        if early is None and config.run.workers:
            early = _EarlyPrepare.start(comparisons, golden_records, n, _may_share(config))
        return _link_started(
            pending, config, comparisons, rows_tf, early, say, timings, t,
            model=model, id_key=id_key, checkpoints=checkpoints, golden_records=golden_records,
        )  # fmt: skip
    finally:
        if early is not None:  # closed by then unless a stage failed first: not left running
            early.close(kill=True)


def _link_started(
    pending: list[pd.DataFrame],
    config: RunConfig,
    comparisons: list[Comparison],
    rows_tf: dict,
    early: _EarlyPrepare | None,
    say: Progress,
    timings: dict[str, float],
    t: float,
    *,
    model: FellegiSunterModel | None,
    id_key: bytes | None,
    checkpoints: Checkpoints | None,
    golden_records: Callable[[list[str]], pd.DataFrame] | None,
) -> LinkResult:
    """``link_records`` from blocking on, the records table the one item of ``pending``
    (taken out), the comparisons' worker ``early`` (or None) started; ``t`` is when
    blocking began."""
    records = pending.pop()
    n = len(records)
    cut = None
    if golden_records is not None and config.model.labels is None:
        # a spilling run's blocking columns are done with once the keys are coded: cut to
        # what scoring and clustering hold (as right after blocking) before the rules are
        # planned and DuckDB joins the keys (at twenty million records ~2.5 GB held beside
        # the planning's grouping and ~5 GB beside the joins)
        cut = functools.partial(
            _after_comparing, config=config, comparisons=comparisons, read=golden_records
        )
    box = [records]
    del records
    pairs, blocking_rows = _block(box, config, checkpoints, cut)  # a failure closes ``early``
    records = box.pop()
    if cut is None:
        # text held as Arrow dictionaries (Linker's records read back from the checkpoint)
        # becomes ``str`` objects here; a cut table's once scored: preparing the
        # comparisons takes its columns as objects (``_comparing_input``), the twin and
        # sibling checks take their rows' names (``cluster.sibling_parts``), and at twenty
        # million records the dictionaries held ~1.2 GB less through those stages
        records = dictionaries_as_objects(records)
    n_pairs = len(pairs)
    pairs_per_rule = {
        str(k): int(v) for k, v in pairs[schema.RULE].value_counts(sort=False).items()
    }
    timings["block"] = time.perf_counter() - t

    # EM sees all candidates up to train_sample_pairs, a seeded sample beyond
    t = time.perf_counter()
    sample = _training_sample(len(pairs), config.run.train_sample_pairs, config.model.seed)
    # a model without candidate pairs has no m to save (nor is model.json written): retrained
    trained = (
        checkpoints is not None
        and checkpoints.done("training")
        and (checkpoints.path("training") / "model.json").is_file()
    )
    need_train = model is None and not trained
    scored_before = checkpoints is not None and checkpoints.done("scoring")
    compared_now = need_train or (sample is None and not scored_before)
    n_compare = (len(pairs) if sample is None else len(sample)) if compared_now else 0
    _stage(say, "comparing", n_compare, "pairs")
    vectors = tf = prepared = None
    # Preparing the records for the comparisons costs more than levelling the pairs: done
    # once, on both cores, for the compare stage, the u sample and the scoring chunks.
    # a spilling run holds the blocking columns; the comparing ones are read back here
    if (
        golden_records is not None
        and config.model.labels is None
        and (need_train or not scored_before)
    ):
        # the blocking columns are done with: cut to what scoring and clustering hold
        # before the comparing columns are read back and prepared beside them (at 20 M
        # records the blocking columns held through preparing were ~6 GB of its peak)
        records = _after_comparing(records, config, comparisons, golden_records)
    # compacted (rows held once per distinct row: a person's records, and people of one
    # name, repeat them): held from here through scoring, the run's largest table
    if (need_train or not scored_before) and early is not None and early.ready():
        prepared = early.prepare(records, golden_records)
    elif need_train or not scored_before:
        worker = early.worker if early is not None else None
        prepared = prepare_comparisons(
            _comparing_input(records, comparisons, golden_records),
            comparisons,
            parallel=config.run.workers,
            worker=worker,
            compact=True,
        )
    elif early is not None:
        early.close(kill=True)
    if golden_records is not None and prepared is not None and config.model.labels is None:
        # reviewed labels are compared from the record columns in training; else the
        # prepared codes are all the rest of the run compares
        records = _after_comparing(records, config, comparisons, golden_records)
    if compared_now:
        train_pairs = pairs if sample is None else pairs.iloc[sample].reset_index(drop=True)
        vectors, tf = compare_pairs(
            records, train_pairs, comparisons, rows_tf, step=say.advance, prepared=prepared,
            threads=compare_threads(),
        )  # fmt: skip
        del train_pairs  # the candidate pairs themselves when not sampled: freed after scoring
    timings["compare"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "training model")
    if model is None and trained:
        saved = checkpoints.path("training") / "model.json"
        model = FellegiSunterModel.load(saved)
        check_model_levels(model, comparisons, source=str(saved))
    if model is None and config.model.load is not None:
        model = FellegiSunterModel.load(config.model.load)
        check_model_levels(model, comparisons, source=str(config.model.load))
    if model is None and config.model.labels is not None:
        # Reviewed pairs go through the review module's one reader and one refit, as in
        # the review notebook: the same vocabulary, and unsure labels never train.
        from linkage.review.labels import load_labels
        from linkage.review.refit import fit_from_labels

        labels = load_labels(config.model.labels, missing_ok=False)
        model = fit_from_labels(
            new_model(comparisons, config, list(rows_tf)), records, comparisons, labels,
            keep_u=False, keep_prior=False, prior_strength=0,
        )  # fmt: skip
    if model is None:
        fraction = 1.0 if sample is None else len(sample) / max(len(pairs), 1)
        model = train_model(
            records, vectors, comparisons, config, tf, sample_fraction=fraction,
            prepared=prepared,
        )  # fmt: skip
    if checkpoints is not None and not trained:
        if len(pairs):
            model.save(checkpoints.path("training") / "model.json")
        checkpoints.save("training")
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    settings = config.golden_settings()
    if golden_records is not None and (prepared is not None or scored_before):
        records = _after_comparing(records, config, comparisons, golden_records)
    scored, cluster_input, matches = _score(
        records, pairs, vectors, tf, model, comparisons, rows_tf, config, say, checkpoints,
        prepared, sample,
    )  # fmt: skip
    # the candidate pairs table and the prepared comparisons are not needed after scoring
    del vectors, tf, pairs, rows_tf, prepared, sample
    # the kept pairs, saved chunk by chunk in the scoring checkpoint, are read back after
    # golden records rather than held through clustering and golden records (~200 MB at
    # three million records); one chunk's keep its own index labels, so those stay
    spilled = isinstance(scored, int)
    if spilled:
        n_scored = scored
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    _stage(say, "clustering")
    # started now, it has imported what it needs by the time golden records begin
    helper = None
    if config.run.workers and golden_records is not None and hasattr(golden_records, "file"):
        helper = _early_worker(["linkage.merge"], n)
    try:
        if golden_records is not None:
            # the prepared comparisons are freed: clustering's columns come back now
            records = _for_clustering(records, config, comparisons, golden_records)
        # those held as Arrow dictionaries since blocking and kept, as objects (once the
        # comparisons are freed: made beside them, scoring's end peaked 2 GB higher)
        records = dictionaries_as_objects(records)
        if checkpoints is not None and checkpoints.done("clustering"):
            labels = checkpoints.frame("clustering", "labels")["label"]
        else:
            labels = cluster_records(
                records, cluster_input.finish(), config, siblings_held_out=True
            )
            if checkpoints is not None:
                frame = pd.DataFrame({"label": np.asarray(labels, dtype=np.int64)})
                checkpoints.save("clustering", {"labels": frame})
                del frame
        del cluster_input
        if golden_records is not None:
            # the keys as Arrow text, shared by the records, the identities table and golden
            # records: read back as objects they were a Python str per record id (~1.3 GB
            # at twenty million records) beside the identities table's Arrow copy of them
            records = records.assign(
                **{c: as_arrow_text(records[c]) for c in (schema.SOURCE, schema.RECORD_ID)}
            )
            release_memory()  # the objects' pages, before the naming allocates
        ids = cluster_ids(records, labels, id_key or process_key())
        del labels  # a label per record (int64): not needed past the ids
        identities = pd.DataFrame(
            {
                schema.SOURCE: _shared(records[schema.SOURCE]),
                schema.RECORD_ID: _shared(records[schema.RECORD_ID]),
                schema.IDENTITY_ID: ids,
            }
        )
        # the identities table holds its own column of the ids (Arrow text under pandas 3):
        # the per-record object array's strings (~90 bytes an identity) are freed here
        # rather than held through golden records
        identity_ids = identities[schema.IDENTITY_ID]
        del ids
        timings["cluster"] = time.perf_counter() - t

        t = time.perf_counter()
        _stage(say, "building golden records")
        if golden_records is not None:
            # clustering's own columns are done with: golden records and the result keep
            # the keys (pairs.parquet names records by them) and the golden columns held.
            # Where the records file can be read as codes (``hasattr(read, "file")``) none:
            # each field reads its columns there as codes into their distinct values. At
            # twenty million records the IDs held (Arrow text) were made a str per record
            # to be grouped, the stage's peak (7.2 GB) and 20 s.
            wanted = {schema.ROW, schema.SOURCE, schema.RECORD_ID}
            if not hasattr(golden_records, "file"):
                wanted |= set(golden_columns(settings))
            records = column_subset(records, [c for c in records.columns if c in wanted])
        # the provenance sources as categoricals (``merge_records(source_codes=)``); a
        # spilling run's table is written a field at a time to the checkpoint folder, not
        # held (``LinkResult.golden_parts``; ~5 GB at twenty million records)
        spill = None
        if golden_records is not None and checkpoints is not None:
            spill = checkpoints.folder / "golden"
            shutil.rmtree(spill, ignore_errors=True)  # a killed run's parts
        if golden_records is None:
            golden = merge_records(records, identity_ids, settings, source_codes=True)
        elif helper is None:
            # each field's columns are read back when it is built (``read``), not all at once
            golden = merge_records(
                _golden_input(records, settings, golden_records),
                identity_ids,
                settings,
                read=golden_records,
                source_codes=True,
                spill=spill,
            )
        else:
            import pyarrow.parquet as pq

            path, text = golden_records.file()
            away = worker_fields(settings, pq.read_schema(path).names)
            # this process reads only its own fields' columns; the worker reads the others'
            mine = GoldenSettings(
                source_priority=settings.source_priority,
                fields={f: r for f, r in settings.fields.items() if f not in away},
            )
            share = WorkerShare(helper, str(path), text, away)
            release_memory()
            golden = merge_records(
                _golden_input(records, mine, golden_records),
                identity_ids,
                settings,
                share=share,
                read=golden_records,
                source_codes=True,
                spill=spill,
            )
        if spill is not None:
            # the golden table is written from its parts: the outputs read only the keys
            # (at twenty million records the golden columns held, IDs and names as
            # objects, were ~1.5 GB of writing's peak)
            keys = {schema.ROW, schema.SOURCE, schema.RECORD_ID}
            records = column_subset(records, [c for c in records.columns if c in keys])
            release_memory()
        timings["merge"] = time.perf_counter() - t
        if spilled:
            scored = _saved_kept(checkpoints)
            if len(scored) != n_scored:
                raise RuntimeError(
                    f"the scoring checkpoint holds {len(scored)} kept pairs, expected {n_scored}"
                )

        stats = cluster_stats(identity_ids)
        summary = {
            "records": int(n),
            "records_per_source": {
                str(k): int(v) for k, v in records[schema.SOURCE].value_counts(sort=False).items()
            },
            "candidate_pairs": int(n_pairs),
            "pairs_per_rule": pairs_per_rule,
            # predicted pairs and refinement per rule, as `linkage blocking` reports them
            "blocking": {
                r["rule"]: {k: v for k, v in r.items() if k != "rule"} for r in blocking_rows
            },
            "matches": matches,
            "identities": int(stats["clusters"]),  # the distinct identity ids
            "cluster_stats": {k: (v.item() if hasattr(v, "item") else v) for k, v in stats.items()},
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        }
        return LinkResult(
            records=records,
            pairs=scored,
            identities=identities,
            golden=golden,
            model=model,
            comparisons=comparisons,
            summary=summary,
        )
    finally:
        if helper is not None:
            helper.close(kill=True)  # golden records closed it unless a stage failed


class _EarlyPrepare:
    """Comparisons a worker process prepares while blocking runs: started before blocking
    (importing ``linkage.compare``), it is sent its share one comparison at a time by a
    feeding thread from the moment the records checkpoint is written (``compare.prepare_kept``:
    it reads its columns from there, so this process neither waits for it nor pickles columns
    to it, and keeps each result until asked, ``compare.take_kept``, so that none is held here
    beside blocking's peak). Once blocking is done this process prepares those of the
    worker's share it has not begun, the lightest first, but for the ID comparison and the
    names (``_RESERVED``), while the worker goes on with those: at a million records the
    worker's share was ~11 CPU s, of which blocking (two cores busy) left it half, and this
    process waited ~7 s for the rest (measured) when the whole share went as one call. A
    run given a memory budget (``_may_share``) leaves the whole share to the worker."""

    # Comparisons of the worker's share (by the order of ``theirs``) never prepared here
    # but when the worker fails: the ID comparison's thirteen columns as objects and its
    # preparing were the comparing stage's peak in this process (8.7 GB at twenty million
    # records, beside the pairs and the cut records), and the names' eleven come next
    _RESERVED = 2

    def __init__(self, worker: Any, comparisons: list[Comparison], share: bool = True):
        self.worker = worker
        self.comparisons = comparisons
        # the worker's share: all but those reading one or two columns (cheaper here than
        # read from the file there), the one reading the most first
        order = sorted(range(len(comparisons)), key=lambda i: -len(comparisons[i].columns))
        self.theirs = [i for i in order if len(comparisons[i].columns) > 2]
        # without ``share`` (a run given a memory budget) this process takes none of them
        self.reserved = set(self.theirs[: self._RESERVED] if share else self.theirs)
        self.lock = threading.Lock()
        self.sent = False
        self.closed = False
        # not yet begun by the worker: it takes from the front, this process from the back
        self.waiting = list(self.theirs)
        self.kept: list[int] = []  # prepared by the worker and kept there
        self.feeder: threading.Thread | None = None
        self._written: Callable[[], Any] = lambda: None  # waits for the records checkpoint

    @classmethod
    def start(
        cls,
        comparisons: list[Comparison],
        golden_records: Callable | None,
        n_records: int,
        share: bool = True,
    ) -> _EarlyPrepare | None:
        """One started for these records, or None: fewer than ``PARALLEL_MIN_RECORDS``,
        no records file a worker can read (``golden_records.when_written``) or a worker
        that cannot start. ``share``: this process may prepare those of the worker's share
        it has not begun (but the reserved ones) once blocking is done."""
        if golden_records is None or not hasattr(golden_records, "when_written"):
            return None
        worker = _early_worker(["linkage.compare"], n_records)
        if worker is None:
            return None
        early = cls(worker, comparisons, share)
        early._written = golden_records.file
        if early.theirs:
            golden_records.when_written(early._send)
        return early

    def ready(self) -> bool:
        """Whether the worker is being fed its share (once the records checkpoint is
        written)."""
        self._written()
        with self.lock:
            return self.sent

    def _send(self, path: Path, text: set[str]) -> None:
        """Start feeding the worker its share (called from the checkpoint's writing thread,
        or at once when it is written already)."""
        with self.lock:
            if self.closed:
                return
            self.sent = True
            self.feeder = threading.Thread(
                target=self._feed, args=(str(path), sorted(text)), name="linkage-prepare-feed",
                daemon=True,
            )  # fmt: skip
            self.feeder.start()

    def _feed(self, path: str, text: list[str]) -> None:
        """The feeding thread: one comparison at a time to the worker, the heaviest no
        process has begun, its (small) answer read before the next is sent. A worker that
        fails or is closed ends the feeding; what it had not prepared is prepared in
        ``prepare``."""
        while True:
            with self.lock:  # sent under the lock: ``close`` never races a send
                if self.closed or not self.waiting:
                    return
                i = self.waiting.pop(0)
                # compacted in the worker, so what it keeps and hands back is the small one
                arg = (i, (path, text, [self.comparisons[i]], True))
                try:
                    self.worker.send(prepare_kept, arg)
                except OSError as exc:
                    self._stop(exc)
                    return
            try:
                key = self.worker.receive()
            # anything: the worker's own error, its end, or its pipe closed by ``close``
            # under this read; this process prepares the comparison again and raises there
            except Exception as exc:  # noqa: BLE001
                with self.lock:
                    self._stop(exc)
                return
            with self.lock:
                if key == i:
                    self.kept.append(i)

    def _stop(self, exc: BaseException) -> None:
        """Stop feeding (the lock held); said once, unless this run closed the worker."""
        if not self.closed:
            logger.warning("preparing comparisons in one process: worker stopped (%s)", exc)
        self.closed = True

    def prepare(
        self, records: pd.DataFrame, read: Callable[[list[str]], pd.DataFrame] | None = None
    ) -> list[Prepared]:
        """Every comparison prepared, in ``comparisons`` order: this process's share here,
        then those of the worker's it has not begun (the lightest first, not the reserved
        ones), then the worker's results taken from it (a comparison it failed on prepared
        here too). ``read`` gives the columns ``records`` lacks (``_comparing_input``)."""
        mine = [i for i in range(len(self.comparisons)) if i not in self.theirs]
        out: list[Prepared | None] = [None] * len(self.comparisons)

        def here(i: int) -> None:
            # one comparison's columns read at a time: the ID comparison's thirteen are not
            # held beside the others' while it prepares (its preparing is this stage's peak)
            own = [self.comparisons[i]]
            frame = _comparing_input(records, own, read)
            out[i] = prepare_comparisons(frame, own, compact=True)[0]
            del frame
            release_memory()

        try:
            for i in mine:
                here(i)
            while True:
                with self.lock:
                    free = [i for i in self.waiting if i not in self.reserved]
                    if free:
                        self.waiting.remove(free[-1])
                if not free:
                    break
                here(free[-1])
            if self.feeder is not None:
                self.feeder.join()
            with self.lock:
                self.closed = True
                kept = list(self.kept)
            if kept:
                try:
                    self.worker.send(take_kept, kept)
                    for i, p in zip(kept, self.worker.receive(), strict=True):
                        out[i] = p
                # the worker's end or its own error: what it kept is prepared here
                except Exception as exc:  # noqa: BLE001
                    logger.warning("preparing comparisons here: worker stopped (%s)", exc)
                    self.worker.close(kill=True)
            for i in self.theirs:
                if out[i] is None:  # not begun, or begun by a worker that stopped
                    here(i)
        finally:
            with self.lock:
                self.closed = True
            self.worker.close(kill=any(p is None for p in out))
            if self.feeder is not None:
                self.feeder.join()
        return out

    def close(self, kill: bool = False) -> None:
        """Stop the worker (its share is not needed); what it kept goes with it."""
        with self.lock:
            self.closed = True
        self.worker.close(kill=kill)
        if self.feeder is not None:
            self.feeder.join()


def prepare_ahead(
    config: RunConfig, golden_records: Callable[[list[str]], pd.DataFrame], n_records: int
) -> _EarlyPrepare | None:
    """Start the worker that prepares the heavy comparisons from the records checkpoint
    now, for a later ``link_records(..., golden_records=golden_records,
    preparing=...)`` of this config (``Linker``: before it reads the blocking columns back,
    ~2 s at a million records that the worker then spends preparing instead of waiting).
    ``golden_records`` is the checkpoint's reader (``when_written``, ``file``); ``n_records``
    its row count. None where ``link_records`` would start none: ``run.workers`` off, fewer
    than ``PARALLEL_MIN_RECORDS`` records, a ``golden_records`` without ``when_written``,
    or no worker could start. The caller must hand it to ``link_records`` (which closes it
    whatever happens, and raises ValueError when its config's comparisons are not these) or
    ``close(kill=True)`` it."""
    if not config.run.workers:
        return None
    comparisons = build_comparisons(config.comparison_specs())
    return _EarlyPrepare.start(comparisons, golden_records, n_records, _may_share(config))


def _may_share(config: RunConfig) -> bool:
    """Whether this process may prepare comparisons of the early worker's share (those it
    has not begun once blocking is done): not in a run given a memory budget
    (``run.memory_limit`` or ``run.chunk_records``), where their columns would be held here
    beside the candidate pairs and the cut records (the comparing stage's peak)."""
    return config.run.records_per_chunk() is None


def _early_worker(modules: list[str], n_records: int) -> Any:
    """A worker process (``standardize._distinct._Worker``) started now and importing
    ``modules``, for a later stage that shares its work with one; None for fewer than
    ``PARALLEL_MIN_RECORDS`` records or when it cannot start (the stage then starts its own
    or works alone)."""
    if n_records < PARALLEL_MIN_RECORDS:
        return None
    from linkage.standardize._distinct import _Worker

    worker = _Worker()
    try:
        worker.warm(modules)
    except OSError:
        worker.close(kill=True)
        return None
    return worker


def _comparing_input(
    records: pd.DataFrame,
    comparisons: list[Comparison],
    read: Callable[[list[str]], pd.DataFrame] | None,
) -> pd.DataFrame:
    """The records with the columns ``comparisons`` read, for preparing them: ``records``
    itself without ``read``, else its columns among those (shared) and the others from
    ``read`` (a spilling run's records checkpoint), held only while they are prepared.
    Columns held as Arrow dictionaries come as ``str`` objects (``dictionaries_as_objects``),
    as the comparisons read them."""
    if read is None:
        return dictionaries_as_objects(records)
    wanted = list(dict.fromkeys([schema.ROW, *(col for c in comparisons for col in c.columns)]))
    few = {col for c in comparisons for col in c.few_rows_columns} - set(records.columns)
    if not few or not hasattr(read, "file"):
        return dictionaries_as_objects(columns_of(records, wanted, read))
    # read at a few rows: as Arrow text, not an object per record (the raw IDs)
    frame = columns_of(records, [c for c in wanted if c not in few], read)
    frame = with_few_rows_columns(frame, read.file()[0], [c for c in wanted if c in few])
    return dictionaries_as_objects(frame[[c for c in wanted if c in frame.columns]])


def _after_comparing(
    records: pd.DataFrame,
    config: RunConfig,
    comparisons: list[Comparison],
    read: Callable[[list[str]], pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """``records`` cut, once the comparisons are prepared, to what the rest of the run
    reads: comparing, training's u sample and scoring level pairs from the prepared codes,
    so the comparing columns are done with. With ``read`` (a run that spills its records)
    only what scoring reads (``stage_columns``' ``scoring``, read from ``read`` where
    missing) and the clustering columns ``records`` holds are kept: the prepared
    comparisons and the pair vectors peak then, and clustering reads its other columns
    once they are freed (``_for_clustering``), golden records theirs after that. Without
    ``read`` the clustering and golden-record columns are kept.
    Columns are shared, not copied (``column_subset``); unchanged when cut already."""
    stages = stage_columns(config, comparisons)
    if read is None:
        later = set(stages["clustering"]) | set(stages["golden"])
        keep = [c for c in records.columns if c in later]
        if len(keep) == records.shape[1]:
            return records
        records = column_subset(records, keep)
    else:
        # the clustering columns held already stay (read back, the IDs cost ~1 s at three
        # million records); the others, and the golden ones, wait: at three million records
        # the record ids and phones as Python strings were ~0.3 GB of scoring's peak
        held = [c for c in stages["clustering"] if c in records.columns]
        records = _columns_for(records, list(dict.fromkeys(stages["scoring"] + held)), read)
    release_memory()
    return records


def _for_clustering(
    records: pd.DataFrame,
    config: RunConfig,
    comparisons: list[Comparison],
    read: Callable[[list[str]], pd.DataFrame],
) -> pd.DataFrame:
    """``records`` (a spilling run's, after scoring) with the columns clustering reads
    (``stage_columns``' ``clustering``): those held, the others read from ``read``. The
    golden columns still held are kept (golden records do not read them again)."""
    stages = stage_columns(config, comparisons)
    held = [c for c in records.columns if c in set(stages["golden"])]
    # the twin and guardian rules' names were read at scoring, which held those pairs out
    # (``cluster_records(siblings_held_out=True)``): not read again
    siblings = {schema.name_col(schema.NAME, "clean"), schema.name_col(schema.NAME, "given")}
    wanted = [c for c in stages["clustering"] if c not in siblings or c in held]
    if hasattr(read, "arrow"):
        # those held as ``str`` objects or Arrow dictionaries since blocking (the IDs, ~1.4
        # GB at twenty million records as objects) are dropped and read back as Arrow text
        # (~0.5 GB)
        records = column_subset(
            records,
            [
                c
                for c in records.columns
                if c not in _ARROW_AT_CLUSTERING
                or not (records[c].dtype == object or is_dictionary_column(records[c]))
            ],
        )
    return _columns_for(records, list(dict.fromkeys(wanted + held)), _clustering_reader(read))


# Clustering's columns read as Arrow text (``_SpilledRecords.arrow``): one distinct value per
# record or nearly (~20 bytes a row against ~65 as ``str`` objects: 2.6 GB of the clustering
# stage at twenty million records), and read only through pyarrow and pandas' vectorized
# calls (``cluster.cannot_link_codes``, ``identity.cluster_ids``). The other text columns
# repeat their values (dates, flags): one shared ``str`` per distinct value holds less.
_ARROW_AT_CLUSTERING = (schema.SOURCE, schema.RECORD_ID, schema.ID_STD)


def _clustering_reader(
    read: Callable[[list[str]], pd.DataFrame],
) -> Callable[[list[str]], pd.DataFrame]:
    """``read``, with the ``_ARROW_AT_CLUSTERING`` columns read by its ``arrow`` (when it has
    one); the frame's columns in the order asked."""
    arrow = getattr(read, "arrow", None)
    if arrow is None:
        return read

    def both(columns: list[str]) -> pd.DataFrame:
        as_arrow = [c for c in columns if c in _ARROW_AT_CLUSTERING]
        rest = [c for c in columns if c not in as_arrow]
        got: dict[str, pd.Series] = {}
        if as_arrow:
            got.update(arrow(as_arrow).items())
        if rest:
            got.update(read(rest).items())
        return pd.DataFrame({c: got[c] for c in columns if c in got})

    return both


def _columns_for(
    records: pd.DataFrame, wanted: list[str], read: Callable[[list[str]], pd.DataFrame]
) -> pd.DataFrame:
    """``records`` cut to ``wanted`` in the records' order, then the wanted columns it
    lacks read from ``read``; unchanged when it holds exactly those."""
    keep = [c for c in records.columns if c in set(wanted)]
    missing = [c for c in wanted if c not in records.columns]
    if not missing and len(keep) == records.shape[1]:
        return records
    records = column_subset(records, keep)
    if missing:
        release_memory()  # the columns dropped go before those read come
        records = columns_of(records, keep + missing, read)
    return records


def _shared(column: pd.Series) -> object:
    """A column's values for another frame, which gets the dtype ``to_numpy``'s values
    give it: a column of pandas' default text dtype as its Arrow array (the frame's copy
    shares pyarrow's immutable buffers; ``to_numpy`` made a Python object per row of
    Arrow text), any other as its NumPy values."""
    if column.dtype == TEXT_DTYPE and isinstance(column.dtype, pd.StringDtype):
        return column.array
    return column.to_numpy()


def _golden_input(
    records: pd.DataFrame, settings: GoldenSettings, read: Callable[[list[str]], pd.DataFrame]
) -> pd.DataFrame:
    """What golden records start from in a run that spilled its records: the keys and
    recency column (read back when not held) and the golden columns ``records`` still holds
    (the same objects); ``merge_records(read=)`` reads each field's other columns when it
    builds that field."""
    keys = [schema.SOURCE, schema.RECORD_ID, schema.REGISTERED_AT_STD]
    held = [c for c in golden_columns(settings) if c in records.columns and c not in keys]
    return columns_of(records, keys + held, read)


def _score(
    records: pd.DataFrame,
    pairs: pd.DataFrame,
    vectors: pd.DataFrame | None,
    tf: dict[str, np.ndarray] | None,
    model: FellegiSunterModel,
    comparisons: list[Comparison],
    rows_tf: dict[str, np.ndarray],
    config: RunConfig,
    say: Progress,
    checkpoints: Checkpoints | None,
    prepared: list[Prepared] | None = None,
    sample: np.ndarray | None = None,
) -> tuple[pd.DataFrame | int, _ClusterInput, int]:
    """Score all candidate pairs a chunk at a time (comparing them first unless ``vectors``
    holds them all); return the kept scored pairs (``score_pairs``' columns, those at or
    above ``output.pairs_min_probability`` and a sample below it), clustering's share of
    every pair (``_ClusterInput``) and the number of matches. With ``sample`` (sorted
    positions in ``pairs``), ``vectors`` and ``tf`` hold the training sample's rows: those
    pairs are not compared again. With ``checkpoints`` each chunk's kept rows and
    clustering share are spilled to the checkpoint folder; where that is two chunks or
    more, the kept pairs are not held at all and their number is returned in their place
    (``_saved_kept`` reads them back: the same table, joined with a new ``RangeIndex``)."""
    threshold = config.clustering.threshold
    if checkpoints is not None and checkpoints.done("scoring"):
        _stage(say, "scoring")
        doc = checkpoints.document("scoring")
        folder = checkpoints.path("scoring")
        parts = _kept_parts(checkpoints)
        if len(parts) > 1:
            import pyarrow.parquet as pq

            kept_saved: pd.DataFrame | int = sum(pq.read_metadata(p).num_rows for p in parts)
        else:
            kept_saved = _saved_kept(checkpoints)
        return (
            kept_saved,
            _ClusterInput.saved(len(records), threshold, folder),
            int(doc["matches"]),
        )
    floor = config.output.pairs_min_probability
    fraction = config.run.below_floor_pairs / max(len(pairs), 1)
    step = config.run.pairs_per_chunk()
    _stage(say, "scoring", len(pairs), "pairs")
    folder = checkpoints.path("scoring") if checkpoints is not None else None
    cluster_input = _ClusterInput(len(records), threshold, folder)
    kept: list[pd.DataFrame] = []
    # two chunks or more spilled: each chunk's kept rows are only written, not held (nor
    # joined at the end: the list and its join held twice the kept pairs, ~400 MB at three
    # million records, at the scoring stage's end)
    spill = folder is not None and len(pairs) > step
    n_kept = matches = 0
    for i, start in enumerate(range(0, max(len(pairs), 1), step)):
        stop = min(start + step, len(pairs))
        if vectors is not None and sample is None:
            chunk = vectors.iloc[start:stop]
            chunk_tf = {k: v[start:stop] for k, v in (tf or {}).items()}
        else:
            chunk, chunk_tf = _compare_chunk(
                records, pairs.iloc[start:stop], comparisons, rows_tf, prepared,
                vectors, sample, start,
            )  # fmt: skip
        scored = score_pairs(chunk, model, comparisons, chunk_tf)
        del chunk, chunk_tf
        prob = scored[schema.MATCH_PROBABILITY].to_numpy()
        matches += int((prob >= threshold).sum())
        keep = (prob >= floor) | _below_floor_sample(
            scored[schema.ROW_L].to_numpy(), scored[schema.ROW_R].to_numpy(), fraction
        )
        part = scored if keep.all() else scored[keep]
        cluster_input.add(records, scored, i)
        del scored
        if folder is not None:
            write_parquet(part, folder / f"part-{i:05d}.kept.parquet")
        n_kept += len(part)
        if not spill:
            kept.append(part)
        del part
        say.advance(stop - start)
    cluster_input.save()
    if checkpoints is not None:
        checkpoints.save("scoring", None, {"matches": matches})
    if spill:
        return n_kept, cluster_input, matches
    scored_all = pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
    return scored_all, cluster_input, matches


def _kept_parts(checkpoints: Checkpoints) -> list[Path]:
    """The scoring checkpoint's files of kept scored pairs, in chunk order."""
    return [p for p in checkpoints.parts("scoring") if p.name.endswith(".kept.parquet")]


def _saved_kept(checkpoints: Checkpoints) -> pd.DataFrame:
    """The kept scored pairs ``_score`` saved a chunk at a time in the scoring checkpoint,
    joined as it joins them (``pd.concat(..., ignore_index=True)`` of each file's table).

    Joined a column at a time: each column's parts are read and joined into the table being
    built, so the reading holds the table and one column's parts at once, not every part's
    table beside their join (twice the kept pairs, the golden-records stage's peak at three
    million records)."""
    parts = _kept_parts(checkpoints)
    if len(parts) == 1:
        return pd.read_parquet(parts[0])
    import pyarrow.parquet as pq

    first, *rest = pq.read_schema(parts[0]).names
    frame = pd.concat([pd.read_parquet(p, columns=[first]) for p in parts], ignore_index=True)
    for name in rest:
        column = pd.concat([pd.read_parquet(p, columns=[name]) for p in parts], ignore_index=True)
        frame[name] = column[name]
        del column
    return frame


def _compare_chunk(
    records: pd.DataFrame,
    part: pd.DataFrame,
    comparisons: list[Comparison],
    rows_tf: dict[str, np.ndarray],
    prepared: list[Prepared] | None,
    vectors: pd.DataFrame | None,
    sample: np.ndarray | None,
    start: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Vectors and term frequencies of the candidate pairs ``part`` (positions ``start``..
    in all pairs), taking the training sample's pairs from ``vectors`` (their rows in
    ``sample`` order) rather than comparing them twice; the rows come back in ``part``'s
    order, as comparing them all would give them."""
    threads = compare_threads()
    if vectors is None or sample is None:
        return compare_pairs(
            records, part, comparisons, rows_tf, prepared=prepared, threads=threads
        )
    lo, hi = np.searchsorted(sample, [start, start + len(part)])
    if lo == hi:
        return compare_pairs(
            records, part, comparisons, rows_tf, prepared=prepared, threads=threads
        )
    seen = np.zeros(len(part), dtype=bool)
    seen[sample[lo:hi] - start] = True
    rest, _ = compare_pairs(
        records, part[~seen], comparisons, rows_tf, prepared=prepared, threads=threads
    )
    known = vectors.iloc[lo:hi]
    columns = {}
    for col in rest.columns:
        values = rest[col]
        # the rule names (text) as objects: the frame infers their dtype as compare_pairs's
        dtype = values.dtype if isinstance(values.dtype, np.dtype) else object
        merged = np.empty(len(part), dtype=dtype)
        merged[~seen] = values.to_numpy()
        merged[seen] = known[col].to_numpy()
        columns[col] = merged
    chunk = pd.DataFrame(columns, index=part.index)
    return chunk, {name: pair_tf(values, chunk) for name, values in rows_tf.items()}


def _empty_scored(vectors: pd.DataFrame, comparisons: list[Comparison]) -> pd.DataFrame:
    out = vectors.copy()
    for c in comparisons:
        out[schema.MW_PREFIX + c.name] = pd.Series(dtype=float)
    out[schema.MATCH_WEIGHT] = pd.Series(dtype=float)
    out[schema.MATCH_PROBABILITY] = pd.Series(dtype=float)
    return out


__all__ = [
    "STAGES",
    "LinkResult",
    "attach_keys",
    "cluster_records",
    "compare_pairs",
    "golden_columns",
    "link_records",
    "linking_columns",
    "prepare_ahead",
    "run_columns",
    "score_pairs",
    "stage_columns",
]
