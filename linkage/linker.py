"""The ``Linker``: holds a run config and an identity store path; runs, writes, ingests, searches.

Thin by design: the work is in the stage functions and the compositions (``pipeline``,
``incremental``). The Linker owns every path a run touches (sources through the config,
the store, the output folder), so the CLI and Python users get the same capabilities.
Nothing else in the package imports it except the CLI.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.apart import can_run_apart, run_apart
from linkage.checkpoint import Checkpoints
from linkage.config import RunConfig, load_config
from linkage.errors import InputError, LinkageError, OutputError
from linkage.incremental import (
    IngestResult,
    SearchReport,
    ingest,
    search_report,
    write_batch,
)
from linkage.io import (
    RejectedRows,
    atomic_write,
    read_records,
    read_records_chunks,
    write_csv,
    write_csv_frames,
    write_parquet,
    write_parquet_chunks,
)
from linkage.model import FellegiSunterModel
from linkage.pipeline import LinkResult, held_columns, link_records, prepare_ahead, run_columns
from linkage.progress import (
    ProgressLike,
    StageMemory,
    add_stage_figures,
    as_progress,
    release_memory,
    stage_memory,
)
from linkage.store import Store
from linkage.tables import (
    attach_keys,
    column_subset,
    read_arrow_text_columns,
    read_dictionary_columns,
    read_text_columns,
    text_columns,
)

logger = logging.getLogger(__name__)

StorePath = str | os.PathLike


class Linker:
    """Run a batch merge described by a ``RunConfig``; ``run()`` returns a ``LinkResult``.

    With ``store`` (a path to an identity store file), ``run()`` also writes the batch into
    the store, keeping the identity ids it already holds; ``ingest()`` links the config's
    sources against the store; ``search()`` ranks stored identities for one record. A batch
    replaces the store's records: where the store holds records the batch lacks, ``run()``
    raises InputError before linking unless ``remove_missing`` is true.
    """

    def __init__(
        self,
        config: RunConfig | None = None,
        *,
        model: FellegiSunterModel | None = None,
        store: StorePath | None = None,
        id_key: bytes | None = None,
        remove_missing: bool = False,
    ):
        self.config = config
        # a batch run replaces a store's records: stored records the batch lacks are removed
        # only when asked (else run() raises InputError before linking)
        self.remove_missing = remove_missing
        self.model = model
        # names identities of a run without a store (see identity.identity_names); a store
        # names them with its own secret
        self.id_key = id_key
        self.store = Path(store) if store is not None else None
        self.records_: pd.DataFrame | None = None
        # bad rows set aside by the last read (config run.bad_rows), per source
        self.bad_rows_: dict[str, int] = {}
        self.result_: LinkResult | None = None
        self._timings: dict[str, float] = {}

    @classmethod
    def from_yaml(cls, path: str | Path, *, store: StorePath | None = None) -> Linker:
        """Build a Linker from a run config YAML file (``ConfigError`` when it is invalid)."""
        return cls(load_config(path), store=store)

    def _config(self) -> RunConfig:
        if self.config is None:
            raise TypeError("this Linker has no run config: pass one to Linker(config, ...)")
        return self.config

    def _store_path(self) -> Path:
        if self.store is None:
            raise TypeError("this Linker has no identity store: pass Linker(..., store=PATH)")
        return self.store

    def standardize(
        self, progress: ProgressLike = None, *, checkpoints: Checkpoints | None = None
    ) -> pd.DataFrame:
        """Read every source and return the standardized records in canonical order (cached).

        ``progress`` gets the ``reading`` and ``standardizing`` stages. With ``checkpoints``
        the records are saved there (in the background: ``Checkpoints.save``; the table must
        not be changed in place), or read back when an earlier run saved them.
        """
        return self._standardize(progress, checkpoints, None)

    def _standardize(
        self, progress: ProgressLike, checkpoints: Checkpoints | None, keep: set[str] | None
    ) -> pd.DataFrame:
        """:meth:`standardize`; with ``keep``, a table read here holds (and saves) only those
        of its columns: a spilling run (``run``) drops the ones no stage reads before they
        are saved, so the saving thread does not hold them through blocking."""
        if self.records_ is None:
            self._timings = {}
            if checkpoints is not None and checkpoints.done("records"):
                report = as_progress(progress)
                report.stage("reading")
                report.stage("standardizing")
                self.records_ = checkpoints.frame("records", "records")
                self.bad_rows_ = dict((checkpoints.document("records") or {}).get("bad_rows", {}))
            else:
                rejected = RejectedRows()
                records = read_records(
                    self._config(),
                    timings=self._timings,
                    progress=progress,
                    rejected=rejected,
                    keep=keep,
                )
                self.records_ = records
                del records
                self.bad_rows_ = rejected.counts()
                if checkpoints is not None:
                    # A run holding every column writes them while blocking runs (reading
                    # them back waits for it). A spilling run writes them first: the
                    # columns blocking does not read are freed before it starts instead of
                    # when the writing thread is done (blocking's peak at a million records
                    # 1.69 -> 1.33 GB, the same wall time: the two competed for the cores).
                    checkpoints.save(
                        "records",
                        {"records": self.records_},
                        {"bad_rows": self.bad_rows_},
                        background=keep is None,
                    )
        return self.records_

    def _held_from_checkpoint(
        self, config: RunConfig, checkpoints: Checkpoints, report: ProgressLike
    ) -> tuple[pd.DataFrame, _SpilledRecords, Any]:
        """The columns blocking reads (``held_columns``), read from the records checkpoint,
        the reader of the others, and the comparisons' worker started before the read
        (``pipeline.prepare_ahead``; None when none is). A checkpoint an earlier run saved is read as it is;
        else a child process (``linkage.apart``) reads and standardizes and saves it.

        Reading and standardizing leave the interpreter's heap fragmented (objects freed
        between those kept) and the standardizers' tables loaded: in this process that
        stayed resident through every later stage (~0.3 GB a million records)."""
        self._timings = {}
        if checkpoints.done("records"):
            report.stage("reading")
            report.stage("standardizing")
            self.bad_rows_ = dict((checkpoints.document("records") or {}).get("bad_rows", {}))
        else:
            bad_rows, self._timings = run_apart(
                _standardize_and_save, config, checkpoints, run_columns(config), progress=report
            )
            self.bad_rows_ = dict(bad_rows)
        t = time.perf_counter()
        spilled = _SpilledRecords.saved(checkpoints)
        # the comparisons' worker starts on its share now, not once these are read back
        # (none for a run resumed after scoring: nothing is prepared again)
        preparing = None
        if not checkpoints.done("scoring"):
            preparing = prepare_ahead(config, spilled, spilled.n_records())
        try:
            # as codes: blocking groups rows by them, and the ones kept after it are made
            # objects once its joins are done (20 M records: 5.5 GB as objects at its start)
            records = spilled.dictionary(held_columns(config, spilled.names))
        except BaseException:
            if preparing is not None:
                preparing.close(kill=True)
            raise
        self._timings["read back"] = time.perf_counter() - t
        return records, spilled, preparing

    def run(
        self, progress: ProgressLike = None, *, checkpoints: Checkpoints | None = None
    ) -> LinkResult:
        """Run the whole batch and return identities, golden records, scored pairs and the model.

        ``progress`` is a ``linkage.progress.Progress`` hook (stage starts and counts) or a
        callable taking the stage name; it gets the names in ``pipeline.STAGES`` up to
        ``building golden records`` (``write`` reports ``writing outputs``). With a store,
        the result's identity ids are the store's stable ids. ``checkpoints``
        (``linkage.checkpoint``) saves each finished stage and resumes from saved ones.
        """
        config = self._config()
        if self.store is not None:
            Store.check_free(self.store)  # before the inputs are read, not after linking
        report = stage_memory(progress)
        spill = checkpoints is not None and self.store is None
        golden_records = preparing = None
        if spill and self.records_ is None and (checkpoints.done("records") or can_run_apart()):
            # standardized in a child process (or by an earlier run) into the records
            # checkpoint: this one holds only what blocking reads, read into a compact heap
            records, golden_records, preparing = self._held_from_checkpoint(
                config, checkpoints, report
            )
        else:
            # a spilling run holds no column that no stage reads, from the end of standardizing
            records = self._standardize(report, checkpoints, run_columns(config) if spill else None)
        if self.store is not None and not self.remove_missing:
            _check_nothing_removed(self.store, records)
        if spill and golden_records is None:
            # The records are saved in the checkpoint folder: blocking to clustering hold
            # only the columns they read, and golden records read theirs back from there.
            records, golden_records = _spill_records(records, config, checkpoints)
            self.records_ = None
            release_memory()  # the dropped columns' pages, before blocking allocates
        # link_records narrows a cut table once it is compared: no reference to it is kept here
        pending = [records]
        del records
        # link_records closes ``preparing`` whatever happens
        result = link_records(
            pending.pop(),
            config,
            model=self.model,
            progress=report,
            id_key=self.id_key,
            checkpoints=checkpoints,
            golden_records=golden_records,
            preparing=preparing,
        )
        if checkpoints is not None:
            checkpoints.wait()  # the records' save failing is an error of the run
        read = self._timings.get("read", 0.0)
        seconds = {
            "read": round(read, 3),
            "standardize": round(sum(self._timings.values()) - read, 3),
        }
        seconds.update(result.summary.get("seconds", {}))
        result.summary["seconds"] = seconds
        # rows set aside (config run.bad_rows) are counted, never silently missing
        result.summary["bad_rows"] = sum(self.bad_rows_.values())
        result.summary["bad_rows_per_source"] = dict(self.bad_rows_)
        if config.run.bad_rows is not None:
            result.summary["bad_rows_file"] = config.run.bad_rows
        if self.store is not None:
            t = time.perf_counter()
            with Store.open(self.store) as store:
                result = write_batch(store, result, config)
            result.summary["seconds"]["store"] = round(time.perf_counter() - t, 3)
        _add_memory(result.summary, report)
        _check_memory_limit(result.summary, config)
        if report is not progress:  # made here: stop its sampling thread
            report.close()
        self.result_ = result
        return result

    def write(
        self, output: str | Path, progress: ProgressLike = None, *, resume: bool = False
    ) -> dict[str, Path]:
        """Write the last run's outputs to ``output`` (runs first if needed); return the paths.

        identities.csv, golden_records.csv, pairs.parquet (pairs at or above
        ``output.pairs_min_probability``), model.json, cluster_sizes.csv, summary.json; each
        written atomically. ``progress`` gets the ``writing outputs`` stage, counted in files.
        A run started here saves each finished stage under ``output/.work`` (removed once the
        outputs are written) and, without a store, holds of the records through blocking
        only the columns blocking reads (``pipeline.held_columns``); each later stage reads
        its own columns back from the saved records (which hold only the columns some stage
        reads, ``pipeline.run_columns``): ``result_.records`` holds those of clustering.
        With ``resume``, stages an earlier killed run of the same config and inputs
        finished are read back instead of run again (``linkage.checkpoint``).
        Raises InputError before running when ``output`` is a file or cannot be written, or
        holds a folder where an output file goes or a Spark run's outputs
        (``paths.check_run_output``).
        """
        from linkage.paths import check_run_output

        check_run_output(output, what="output")
        checkpoints = None
        given, progress = progress, stage_memory(progress)
        if self.result_ is None:
            extra = json.dumps(self.model.to_dict()).encode() if self.model is not None else b""
            checkpoints = Checkpoints.open(output, self._config(), resume=resume, extra=extra)
        try:
            result = self.result_ or self.run(progress, checkpoints=checkpoints)
        except OutputError:
            raise  # a full disk while saving a stage: the finished stages stay for --resume
        except LinkageError:
            if checkpoints is not None:  # refused input: nothing to resume
                checkpoints.remove()
            raise
        try:
            paths = write_outputs(result, output, self._config(), progress=progress)
        finally:
            if progress is not given:  # made here: stop its sampling thread
                progress.close()
        parts = result.golden_parts()
        if parts is not None:
            # its parts go with the checkpoints: read back from the written file if asked for
            like, path = dict(parts.dtypes), paths["golden"]
            result.golden = functools.partial(read_golden_csv, path, like)  # picklable
        if checkpoints is not None:
            checkpoints.remove()
        return paths

    def ingest(
        self, progress: ProgressLike = None, *, output: str | Path | None = None
    ) -> IngestResult:
        """Link the config's sources (new or updated records) against the identity store.

        With ``output``, writes identities.csv (the affected records) and events.csv there
        (a ``writing outputs`` stage after ``incremental.ingest.STAGES``). Raises
        ``StoreError``/``InputError`` for a missing or foreign store.
        """
        report = as_progress(progress)
        with Store.open(self._store_path(), create=False) as store:
            result = ingest(store, self._config(), progress=report)
        if output is not None:
            output = Path(output)
            report.stage("writing outputs", total=2, unit="files")
            output.mkdir(parents=True, exist_ok=True)
            write_csv(result.identities, output / "identities.csv")
            report.advance(1)
            write_csv(result.events, output / "events.csv")
            report.advance(1)
        return result

    def search(self, record: dict[str, Any], top: int = 5) -> list[dict]:
        """Return the ``top`` stored identities most likely to be this record's person.

        ``record`` maps record fields (``schema.MAPPABLE_FIELDS``: name, id_number,
        birth_date, ...) to raw values. A key that is no record field (``dob``, a typo) is
        not searched on: a ``UserWarning`` names it and the fields expected, since the answer
        then rests on fewer fields than meant (:meth:`search_report` lists them too).
        """
        # read-only: searches run while `linkage serve` holds the same file
        with Store.open(self._store_path(), create=False, read_only=True) as store:
            report = search_report(store, record, top=top)
        if report.ignored:
            warnings.warn(
                f"search: key(s) {', '.join(map(repr, report.ignored))} are no record fields "
                f"and were not searched on; expected some of {', '.join(schema.MAPPABLE_FIELDS)}",
                UserWarning,
                stacklevel=2,
            )
        return report.hits

    def search_report(self, record: dict[str, Any], top: int = 5) -> SearchReport:
        """Search, and say what was searched: see :func:`linkage.incremental.search_report`."""
        with Store.open(self._store_path(), create=False, read_only=True) as store:
            return search_report(store, record, top=top)


class _SpilledRecords:
    """Reads any of the full records table's columns back from the records checkpoint
    (same rows and order, text columns as object with None, as standardizing made them;
    unknown names left out): what golden records read of the columns a run did not hold."""

    def __init__(self, checkpoints: Checkpoints, dtypes: dict[str, Any]):
        self.checkpoints = checkpoints
        self.names = list(dtypes)  # every column of the full table, in order
        self.text = {c for c, d in dtypes.items() if pd.api.types.is_object_dtype(d)}

    @classmethod
    def saved(cls, checkpoints: Checkpoints) -> _SpilledRecords:
        """The reader of a records checkpoint an earlier run saved: its text columns are
        those Parquet stores as text (or as all-null)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema_ = pq.read_schema(checkpoints.path("records") / "records.parquet")
        text = (pa.string(), pa.large_string(), pa.null())
        return cls(checkpoints, {f.name: object if f.type in text else f.type for f in schema_})

    def n_records(self) -> int:
        """Rows of the checkpoint's file (its footer read)."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.file()[0]).metadata.num_rows

    def file(self) -> tuple[Path, set[str]]:
        """The checkpoint's Parquet file (once written) and the names of its text columns,
        for a worker process to read its own columns from."""
        self.checkpoints.wait()
        return self.checkpoints.path("records") / "records.parquet", set(self.text)

    def when_written(self, callback: Callable[[Path, set[str]], None]) -> None:
        """Call ``callback(path, text)`` (``file``'s) once the checkpoint is written: from
        the thread writing it, or at once (``Checkpoints.after_save``)."""
        path = self.checkpoints.path("records") / "records.parquet"
        self.checkpoints.after_save("records", lambda: callback(path, set(self.text)))

    # merge.merge_records passes ``factorized`` (read_text_columns') to a reader that says so
    fills_factorized = True

    def __call__(self, columns: list[str], factorized: dict | None = None) -> pd.DataFrame:
        path, text = self.file()
        return read_text_columns(path, columns, text, factorized=factorized)

    def dictionary(self, columns: list[str]) -> pd.DataFrame:
        """The columns as ``__call__`` reads them, text as Arrow dictionaries (an int32 code
        per row, ``tables.read_dictionary_columns``): what blocking reads, which only
        groups rows by them; ``link_records`` turns those it keeps into ``str`` objects."""
        path, text = self.file()
        return read_dictionary_columns(path, columns, text)

    def arrow(self, columns: list[str]) -> pd.DataFrame:
        """The columns as ``__call__`` reads them, text as pandas' Arrow-backed text where
        pandas holds text so (``tables.read_arrow_text_columns``)."""
        path, text = self.file()
        return read_arrow_text_columns(path, columns, text)


def _standardize_and_save(
    config: RunConfig,
    checkpoints: Checkpoints,
    keep: set[str],
    *,
    progress: ProgressLike = None,
) -> tuple[dict[str, int], dict[str, float]]:
    """Read and standardize the config's sources (``read_records_chunks`` with ``keep``,
    ``run.records_per_chunk()`` records at a time), save them as the ``records`` checkpoint
    a chunk at a time; return the bad rows set aside per source and the seconds per step
    (``read`` and one per standardizer group). Run in a child process by
    ``Linker._held_from_checkpoint``."""
    rejected = RejectedRows()
    timings: dict[str, float] = {}
    chunks = read_records_chunks(
        config,
        config.run.records_per_chunk(),
        timings=timings,
        progress=progress,
        rejected=rejected,
        keep=keep,
        # few-valued text columns held as codes until written (the stage's peak)
        compact=True,
    )
    folder = checkpoints.path("records")
    # a run killed while writing (for a chunked run, the whole of standardizing) left its
    # temporary file (atomic_write's): removed before this run writes its own
    for stale in folder.glob(".records.parquet.*.tmp"):
        stale.unlink(missing_ok=True)
    try:
        # each chunk written before the next is standardized: one chunk's columns held
        write_parquet_chunks(chunks, folder / "records.parquet", text_codes=True)
    finally:
        chunks.close()
    bad_rows = rejected.counts()
    checkpoints.save("records", None, {"bad_rows": bad_rows})
    return bad_rows, timings


def _spill_records(
    records: pd.DataFrame, config: RunConfig, checkpoints: Checkpoints
) -> tuple[pd.DataFrame, _SpilledRecords]:
    """The records cut to ``pipeline.held_columns`` (what blocking reads), and a reader of
    any of the full table's columns from the records checkpoint (``_SpilledRecords``): the
    later stages read theirs from it."""
    dtypes = records.dtypes.to_dict()
    # columns shared where that keeps nothing else alive: the full table is freed once dropped
    cut = column_subset(records, held_columns(config, list(records.columns)))
    return cut, _SpilledRecords(checkpoints, dtypes)


def write_outputs(
    result: LinkResult, output: str | Path, config: RunConfig, progress: ProgressLike = None
) -> dict[str, Path]:
    """Write identities.csv, golden_records.csv, pairs.parquet, model.json and summary.json atomically.

    ``progress`` gets the ``writing outputs`` stage, counted in files. identities.csv,
    golden_records.csv and pairs.parquet are written by three threads at once while this
    one writes model.json and cluster_sizes.csv (the same bytes as one file after another).
    """
    report = as_progress(progress)
    output = Path(output)
    has_model = bool(len(result.pairs))
    report.stage("writing outputs", total=5 + has_model, unit="files")
    output.mkdir(parents=True, exist_ok=True)

    def done(path: Path) -> Path:
        report.advance(1)
        return path

    pairs = result.pairs
    keep = (pairs[schema.MATCH_PROBABILITY] >= config.output.pairs_min_probability).to_numpy()
    # The three large files are written by threads at once: pyarrow converts and writes
    # them in C++ without the GIL, so a two-core machine writes them side by side (each
    # file is written whole by one thread; the bytes are those of one after the other)
    with ThreadPoolExecutor(max_workers=3) as pool:
        big = {
            "identities": pool.submit(write_csv, result.identities, output / "identities.csv"),
            "golden": pool.submit(_write_golden, result, output / "golden_records.csv"),
            "pairs": pool.submit(
                _write_keyed_pairs, pairs, keep, result.records, output / "pairs.parquet"
            ),
        }
        # the small files meanwhile, here
        small = {}
        if has_model:
            small["model"] = result.model.save(output / "model.json")
        else:
            from linkage.paths import remove_stale_output

            remove_stale_output(output / "model.json", keep=[config.model.load])
        sizes = result.cluster_sizes()
        small["cluster_sizes"] = write_csv(sizes, output / "cluster_sizes.csv")
        paths = {name: done(future.result()) for name, future in big.items()}
    paths.update({name: done(path) for name, path in small.items()})
    if isinstance(report, StageMemory):
        _add_memory(result.summary, report)
        _check_memory_limit(result.summary, config, only=("write",))
    text = json.dumps(result.summary, ensure_ascii=False, indent=2)
    paths["summary"] = done(
        atomic_write(output / "summary.json", lambda p: p.write_text(text, encoding="utf-8"))
    )
    return paths


def _write_golden(result: LinkResult, path: Path) -> Path:
    """golden_records.csv: a spilled golden table (``LinkResult.golden_parts``) a range of
    rows at a time, never held whole; else the table."""
    parts = result.golden_parts()
    if parts is None:
        return write_csv(result.golden, path)
    return write_csv_frames(parts.frames(), parts.columns, path)


def read_golden_csv(path: str | Path, like: dict[str, Any]) -> pd.DataFrame:
    """golden_records.csv as the golden table it was written from (``write_outputs``):
    ``like`` gives each column's dtype then (``GoldenParts.dtypes``). Formula cells are
    restored (``restore_formulas``); empty cells are null but in ``conflicts`` (where
    no conflict is the empty text; a golden value is never empty: standardizing makes a
    blank value null). Raises InputError naming the file when it cannot be read."""
    from linkage.io import restore_formulas

    try:
        # lines end in \n only (write_csv): a lone \r is a cell's own character
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, lineterminator="\n")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read golden records: {exc}", path=str(path)) from None
    frame = restore_formulas(frame)
    columns = {}
    for name in frame.columns:
        dtype = like.get(name)
        values = frame[name].to_numpy(dtype=object)
        if name != "conflicts":
            values = np.where(values == "", None, values)
        if dtype is not None and isinstance(dtype, np.dtype) and dtype.kind in "iu":
            columns[name] = values.astype(dtype)
        elif isinstance(dtype, pd.CategoricalDtype):
            columns[name] = pd.Categorical(values, dtype=dtype)
        else:
            columns[name] = values  # str or object, as pandas infers it from the text
    table = pd.DataFrame(columns)
    if not len(table):  # no identities: no text to infer a dtype from
        table = table.astype({c: d for c, d in like.items() if c in table.columns})
    return table


# summary.json's stage keys (those of ``summary["seconds"]``) for the progress stage names
_STAGE_KEYS = {
    "reading": "read",
    "standardizing": "standardize",
    "blocking": "block",
    "comparing": "compare",
    "training model": "train",
    "scoring": "score",
    "clustering": "cluster",
    "building golden records": "merge",
    "writing outputs": "write",
}


def _add_memory(summary: dict, report: StageMemory) -> None:
    """``progress.add_stage_figures`` under summary.json's stage keys (``_STAGE_KEYS``)."""
    add_stage_figures(summary, report, _STAGE_KEYS)


def _check_memory_limit(
    summary: dict, config: RunConfig, only: tuple[str, ...] | None = None
) -> None:
    """Name the stages whose peak memory, this process's and its workers' together
    (``peak_total_mb``), went over ``run.memory_limit`` in the summary
    (``over_memory_limit``) and in a warning: the limit sizes the chunks and DuckDB, but
    what a stage holds besides (the records' linking columns, the clustering input of
    every link, a worker's imports) is not bounded by it, so a run says when it did not
    keep to it. ``only``: warn about those stages alone (writing, after the run's own
    stages were checked), the list keeping the earlier ones."""
    limit = config.run.memory_bytes()
    peaks = summary.get("peak_total_mb") or summary.get("peak_rss_mb")
    if limit is None or not peaks:
        return
    over = [stage for stage, mb in peaks.items() if mb * 2**20 > limit]
    summary["over_memory_limit"] = over
    if only is not None:
        over = [stage for stage in over if stage in only]
    if over:
        logger.warning(
            "run.memory_limit %s exceeded (the limit is %s MiB): peak resident memory with "
            "the worker processes %s (summary.json peak_total_mb); raise the limit, lower "
            "run.chunk_pairs or set run.workers: false",
            config.run.memory_limit,
            f"{limit / 2**20:,.0f}",
            ", ".join(f"{stage} {peaks[stage]:,} MB" for stage in over),
        )


def _write_keyed_pairs(
    pairs: pd.DataFrame, keep: np.ndarray, records: pd.DataFrame, path: Path
) -> Path:
    """Write the ``keep`` rows of ``pairs`` with their records' keys (``attach_keys``) as
    Parquet, ``PARQUET_ROWS_AT_ONCE`` rows at a time: a large run never holds a keyed copy
    of every kept pair, only of one slice (the file reads back as one table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from linkage.io import PARQUET_ROWS_AT_ONCE

    if len(pairs) <= PARQUET_ROWS_AT_ONCE:
        kept = pairs if keep.all() else pairs[keep]
        return write_parquet(attach_keys(kept, records), path)

    def part(start: int) -> pd.DataFrame:
        stop = start + PARQUET_ROWS_AT_ONCE
        return attach_keys(pairs.iloc[start:stop][keep[start:stop]], records)

    def write(p: Path) -> None:
        first = part(0)
        arrow_schema = pa.Schema.from_pandas(first, preserve_index=False)
        with pq.ParquetWriter(p, arrow_schema) as writer:
            for start in range(0, len(pairs), PARQUET_ROWS_AT_ONCE):
                frame = first if start == 0 else part(start)
                table = pa.Table.from_pandas(frame, schema=arrow_schema, preserve_index=False)
                writer.write_table(table)

    return atomic_write(path, write)


# Files of a run's output folder that read_outputs needs (write_outputs writes them).
OUTPUT_FILES = ("identities.csv", "golden_records.csv", "pairs.parquet", "model.json",
                "summary.json")  # fmt: skip


def read_outputs(output: str | Path, records: pd.DataFrame | None = None) -> LinkResult:
    """Read a run's output folder back as a ``LinkResult``, for charts without a new merge.

    Reads identities.csv (source, record_id, identity_id, in the run's record order),
    golden_records.csv, pairs.parquet (the pairs at or above the run's
    ``output.pairs_min_probability``), model.json (with the comparisons it was fitted on) and
    summary.json. ``records``: the run's standardized records (``Linker.standardize``) for
    the record values; without them the records table holds only ``rid``, source and
    record_id, taken from identities.csv. Raises InputError naming a missing or unreadable
    file, or when ``records`` are not the run's records.
    """
    from linkage.compare import build_comparisons
    from linkage.config import COMPARISON_SPECS, default_comparison_specs
    from linkage.errors import InputError

    folder = Path(output)
    if not folder.is_dir():
        raise InputError("run output folder not found", path=str(folder))
    for name in OUTPUT_FILES:
        if not (folder / name).is_file():
            raise InputError(
                f"not a run output folder: {name} is missing (written by `linkage run`)",
                path=str(folder),
            )
    try:
        identities = pd.read_csv(folder / "identities.csv", dtype=str, keep_default_na=False)
        golden = pd.read_csv(folder / "golden_records.csv", dtype=str, keep_default_na=False)
        pairs = pd.read_parquet(folder / "pairs.parquet")
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        model = FellegiSunterModel.load(folder / "model.json")
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the run output: {exc}", path=str(folder)) from None
    keys = [schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]
    if any(c not in identities for c in keys):
        raise InputError(
            f"identities.csv lacks columns {keys}", path=str(folder / "identities.csv")
        )
    # CSV text cells: empty means missing, as the run wrote None
    golden = text_columns(golden.astype(object).where(golden.ne(""), None))
    identities = text_columns(identities.astype(object))
    if records is None:
        records = pd.DataFrame(
            {
                schema.ROW: np.arange(len(identities), dtype=np.int64),
                schema.SOURCE: identities[schema.SOURCE].to_numpy(dtype=object),
                schema.RECORD_ID: identities[schema.RECORD_ID].to_numpy(dtype=object),
            }
        )
        records = text_columns(records, [schema.SOURCE, schema.RECORD_ID])
    elif len(records) != len(identities) or not all(
        np.array_equal(records[c].astype(str).to_numpy(), identities[c].to_numpy(dtype=str))
        for c in (schema.SOURCE, schema.RECORD_ID)
    ):
        raise InputError(
            "the config's records are not the records of this run output (different sources "
            "or an edited file): chart the output alone or rerun it",
            path=str(folder),
        )
    specs = (model.settings or {}).get("comparisons")
    specs = COMPARISON_SPECS.validate_python(specs) if specs else default_comparison_specs()
    return LinkResult(
        records=records,
        pairs=pairs,
        identities=identities,
        golden=golden,
        model=model,
        comparisons=build_comparisons(specs),
        summary=summary,
    )


def _check_nothing_removed(path: Path, records: pd.DataFrame) -> None:
    """Raise InputError when the store holds records the batch lacks: a batch run replaces
    the store's records, so they would be removed and their identities retired or split
    (a store kept up by ``ingest`` holds records no full batch config names)."""
    if not path.exists():
        return
    # opened as the write will open it: a file that is not a store is refused the same way
    with Store.open(path, create=False) as store:
        stored = store.links()
    if stored.empty:
        return
    given = pd.MultiIndex.from_arrays(
        [records[schema.SOURCE].astype(str), records[schema.RECORD_ID].astype(str)]
    )
    keys = pd.MultiIndex.from_arrays(
        [stored[schema.SOURCE].astype(str), stored[schema.RECORD_ID].astype(str)]
    )
    missing = ~keys.isin(given)
    if not missing.any():
        return
    per_source = stored.loc[missing, schema.SOURCE].astype(str).value_counts().sort_index()
    first = stored.loc[missing].head(3)
    examples = ", ".join(f"{s}:{r}" for s, r in zip(first[schema.SOURCE], first[schema.RECORD_ID]))
    raise InputError(
        f"the store holds {int(missing.sum()):,} records this batch lacks "
        f"({', '.join(f'{s} {n:,}' for s, n in per_source.items())}; e.g. {examples}): a batch "
        "run replaces the store's records, so they would be removed and their identities "
        "retired or split. Name their files in the config, link new records with `linkage "
        "ingest`, or pass --remove-missing (Linker(remove_missing=True)) to remove them",
        path=str(path),
    )
