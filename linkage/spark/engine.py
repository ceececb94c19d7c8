"""The batch run on Apache Spark: the same stages as ``linkage.pipeline``, over DataFrames.

Each stage calls the local stage code on pandas batches, so both engines give the same
identities: ``standardize`` and ``key_table`` per record partition (mapInPandas),
``Comparison.compare`` and ``FellegiSunterModel.score`` per pair partition, the model trained
on the driver from samples, ``cluster_pairs`` per bucket of suspect components and
``merge_records`` per bucket of identities (applyInPandas; a bucket holds whole components or
identities, so a group never splits one). Blocking is a join per rule; connected components
run in DataFrames (``linkage.spark.components``). Reading, row numbering and the identity ids
are Spark expressions.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from linkage import schema
from linkage.spark import require_pyspark
from linkage.spark.badrows import (
    MAX_DUPLICATE_VALUES,
    SCIENTIFIC_PATTERN,
    bad_rows_message,
    reject,
    scan_csv,
    scan_ids,
)

require_pyspark()

from py4j.protocol import Py4JError, Py4JJavaError  # noqa: E402
from pyspark.errors import PySparkException  # noqa: E402
from pyspark.sql import Column, DataFrame, Observation, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql import types as T  # noqa: E402
from pyspark.storagelevel import StorageLevel  # noqa: E402

from linkage.blocking import (  # noqa: E402
    DERIVED_KEYS,
    BlockingRule,
    BlockingSettings,
    check_budget,
    coded_keys,
    combine_report_rows,
    key_table,
    plan_rule,
    warn_refined,
)
from linkage.cluster import (  # noqa: E402
    CANNOT_LINK_GROUP,
    CANNOT_LINK_KEY,
    cannot_link_table,
    cluster_pairs,
    edit_siblings,
    given_char_counts,
    guardian_mask,
    partner_pairs,
    sibling_mask,
    size_distribution,
    stats_of_sizes,
    unnamed_twins,
)
from linkage.compare import Comparison, build_comparisons  # noqa: E402
from linkage.compare.fields import BirthDateComparison, IdComparison  # noqa: E402
from linkage.compare.name import NameComparison  # noqa: E402
from linkage.config import RunConfig, SourceConfig  # noqa: E402
from linkage.errors import ConfigError, InputError  # noqa: E402
from linkage.identity import (  # noqa: E402
    CLUSTER,
    assign_stable_ids,
    identity_names,
    process_key,
)
from linkage.io import (  # noqa: E402
    RejectedRows,
    _listed,
    atomic_write,
    check_mapped_columns,
    check_source_paths,
    clean_header,
    csv_header_names,
    decode_bytes,
    empty_source_error,
    join_field_parts,
    neutralize_formulas,
    read_checked_raw,
    sources_error,
    undecodable_error,
    write_csv,
)
from linkage.merge import merge_records  # noqa: E402
from linkage.model import FellegiSunterModel  # noqa: E402
from linkage.paths import check_spark_run_output, remove_stale_output  # noqa: E402
from linkage.progress import StageMemory, add_stage_figures  # noqa: E402
from linkage.spark.components import COMPONENT, connected_components  # noqa: E402
from linkage.spark.session import adaptive_off, get_session, single_jvm  # noqa: E402

# Records from which the cluster stage runs with adaptive execution (see run_spark)
ADAPTIVE_CLUSTER_MIN = 20_000
# A local master's process tree is summed every this many memory samples (2 s): a walk over
# the JVM's threads costs about 3 ms, and its memory moves slowly
_JVM_TREE_EVERY = 40
from linkage.standardize.combine import standardize  # noqa: E402
from linkage.training import (  # noqa: E402
    check_model_levels,
    fit_household,
    level_rules,
    new_model,
    settle_weak_fit,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
# Progress messages run_spark gives (read ... write), for a progress bar's length
STAGE_COUNT = 9

# Spark-side helper columns (never written to an output)
_KEY = "__key"
_BUCKET = "__bucket"
_TF_PREFIX = "__tf_"
_RULE_INDEX = "__rule_index"
_BLOCK_HASH = "__block_hash"
_LABEL = "__label"
# Java charset names for the reader's ``encoding`` option; GBK and GB2312 are read as their
# superset GB18030, as the local reader does.
_JAVA_CHARSET = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8",
    "gbk": "GB18030",
    "gb2312": "GB18030",
    "gb18030": "GB18030",
    "big5": "Big5",
}
# Python codecs of those charsets, for the driver's scan of a file with bad rows
_PYTHON_CODEC = {"UTF-8": "utf-8-sig", "GB18030": "gb18030", "Big5": "big5"}
# Bytes of a CSV file's head used to detect its encoding when the config says ``auto``.
_SNIFF_BYTES = 4 << 20


@dataclass
class SparkResult:
    """Tables of one Spark run (Spark DataFrames) and its summary."""

    records: DataFrame
    pairs: DataFrame
    identities: DataFrame
    golden: DataFrame
    model: FellegiSunterModel
    comparisons: list[Comparison]
    summary: dict = field(default_factory=dict)
    # one row per cluster size (size, clusters, records), as cluster_sizes.csv
    cluster_sizes: pd.DataFrame | None = None
    # the files write_spark_outputs wrote, by kind
    outputs: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


def _csv_encoding(cfg: SourceConfig) -> str:
    """Return the Java charset for a CSV source, detecting it from the file's head for ``auto``."""
    if cfg.encoding != "auto":
        return _JAVA_CHARSET[cfg.encoding]
    with open(cfg.path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if len(head) == _SNIFF_BYTES and b"\n" in head:
        # cut at a line end: 0x0A is never part of a multi-byte GB18030 or UTF-8 character
        head = head[: head.rindex(b"\n") + 1]
    _, used = decode_bytes(head, "auto", path=str(cfg.path))
    return _JAVA_CHARSET.get(used.lower(), used)


def _as_text_columns(frame: DataFrame) -> DataFrame:
    """Every column as trimmed text, blanks as null; headers stripped of spaces and BOM."""
    cols = []
    for name, dtype in frame.dtypes:
        clean = clean_header(name)
        value = _column(name)
        if dtype != "string":
            value = value.cast("string")
        value = F.trim(value)
        cols.append(F.when(value == "", None).otherwise(value).alias(clean))
    return frame.select(*cols)


@contextmanager
def _quiet_spark_logs(spark: SparkSession) -> Iterator[None]:
    """Spark's own logging off while a source is read and checked: a failed task logs a
    Java stack trace before Python sees the error, and a user should get one clear message."""
    spark.sparkContext.setLogLevel("OFF")
    try:
        yield
    finally:
        spark.sparkContext.setLogLevel("ERROR")


def _spark_message(exc: BaseException) -> str:
    """The first line of a Spark error, without its Java stack trace.

    A Java error reaches Python as ``Py4JJavaError``, whose first line only names the JVM
    call ("An error occurred while calling o100.parquet."); its Java exception's innermost
    cause says what is wrong with the file ("... is not a Parquet file"), so that is used.
    """
    java, root = getattr(exc, "java_exception", None), None
    for _ in range(20):  # a cause chain is short; the bound only guards against a cycle
        if java is None:
            break
        try:
            message, java = java.getMessage(), java.getCause()
        except Py4JError:  # the JVM gone: fall back to the Python text
            break
        if message and message.strip():
            root = message.strip().splitlines()[0]
    if root:
        return root[:300]
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def read_source_spark(
    spark: SparkSession,
    cfg: SourceConfig,
    rejected: RejectedRows | None = None,
    cached: list[DataFrame] | None = None,
) -> DataFrame:
    """Read one source into canonical records (all text), with the local reader's checks.

    CSV is read by Spark with the ``encoding`` option; Parquet by Spark; Excel locally
    (``io.read_checked_raw``, the local reader with its checks) and then parallelized.
    Raises InputError naming the file for a missing file or a folder, an empty file, bytes
    the encoding cannot decode (byte offset and line, as ``io.decode_bytes``: Spark itself
    would put U+FFFD and go on), unmapped columns, and in one message every row with
    the wrong number of fields, without a record id or with a duplicate record id, each with
    its line number (``linkage.spark.badrows``). With ``rejected`` (``run.bad_rows``) those
    rows are set aside there instead, with the local reader's reasons, and left out. Spark's
    logging is off while the file is read here, so no Java stack trace reaches the user.
    ``cached``: a CSV file is parsed once and kept (memory, else the executors' disks) for
    the checks and the row numbering that follow; the kept frame is appended here for the
    caller to unpersist once the records are numbered. Without it nothing is kept.
    """
    parsed = _parse_source(spark, cfg, cached, rejected)
    suspect, replaced = _files_with_bad_rows(spark, [parsed])
    undecodable = _undecodable_error(parsed) if replaced else None
    if undecodable is not None:
        raise undecodable
    return _canonical(parsed, _checked(spark, parsed, rejected) if suspect else parsed.raw)


@dataclass
class _Parsed:
    """A source as Spark parsed it (text columns), before its rows are checked."""

    cfg: SourceConfig
    path: Path
    raw: DataFrame
    suffix: str
    corrupt: str | None  # the column holding a row with the wrong number of fields
    encoding: str | None
    wanted: list[str]  # the source's mapped columns


@contextmanager
def _reading(spark: SparkSession, path: Path) -> Iterator[None]:
    """Spark's logging off and its errors as one InputError naming ``path``."""
    with _quiet_spark_logs(spark):
        try:
            yield
        except (PySparkException, Py4JJavaError) as exc:
            raise InputError(
                f"Spark could not read the file: {_spark_message(exc)}", path=str(path)
            ) from None


def _parse_source(
    spark: SparkSession,
    cfg: SourceConfig,
    cached: list[DataFrame] | None = None,
    rejected: RejectedRows | None = None,
) -> _Parsed:
    """Parse a source (see ``read_source_spark``); raises InputError for a missing file or a
    folder, an empty file, an unsupported type, a header that cannot be decoded or unmapped
    columns. An Excel file's bad rows are refused or set aside in ``rejected`` here."""
    path = Path(cfg.path)
    if not path.exists():
        raise InputError("file not found", path=str(path))
    if not path.is_file():  # Spark would read a folder's files as one source: one file each
        raise InputError("is a folder, expected a file", path=str(path))
    with _reading(spark, path):
        return _parse_source_spark(spark, cfg, path, cached, rejected)


def _checked(spark: SparkSession, parsed: _Parsed, rejected: RejectedRows | None) -> DataFrame:
    """The parsed rows after ``_check_rows`` (Excel was checked as it was read)."""
    if parsed.suffix in (".xlsx", ".xlsm"):
        return parsed.raw
    rid_col = _column(parsed.cfg.record_id)
    with _reading(spark, parsed.path):
        return _check_rows(
            parsed.raw,
            parsed.cfg,
            parsed.path,
            rid_col,
            parsed.corrupt,
            parsed.encoding,
            rejected,
        )


def _parse_source_spark(
    spark: SparkSession,
    cfg: SourceConfig,
    path: Path,
    cached: list[DataFrame] | None = None,
    rejected: RejectedRows | None = None,
) -> _Parsed:
    suffix = path.suffix.lower()
    corrupt = None
    encoding = None
    if suffix in (".csv", ".txt", ".tsv"):
        encoding = _csv_encoding(cfg)
        options = {
            "header": True,
            "encoding": encoding,
            "sep": cfg.delimiter,
            "quote": '"',
            "escape": '"',
            # quoted line breaks stay inside their field, as in the local reader
            "multiLine": True,
        }
        names = spark.read.csv(str(path), inferSchema=False, **options).columns
        if not names:
            raise InputError("file is empty (no header row)", path=str(path))
        if any("\ufffd" in name for name in names):
            # Spark puts U+FFFD for bytes its charset cannot decode: the local reader's error
            label = cfg.encoding if cfg.encoding != "auto" else ""
            found = _first_undecodable(path, encoding, label)
            if found is not None:
                raise found
        # Spark gives a repeated header new names (备注 -> 备注3, 备注4): the local reader's
        # header rules, which refuse it, on the file's head (no Spark job)
        csv_header_names(path, cfg, _PYTHON_CODEC.get(encoding, encoding))
        corrupt = "__corrupt_record"
        text_schema = T.StructType(
            [T.StructField(n, T.StringType(), True) for n in [*names, corrupt]]
        )
        # PERMISSIVE: a row with the wrong number of fields lands in ``corrupt`` instead of
        # failing the job, so every bad row is counted and then named by its line
        raw = spark.read.schema(text_schema).csv(
            str(path), mode="PERMISSIVE", columnNameOfCorruptRecord=corrupt, **options
        )
        if cached is not None:
            # the checks (two scans) and the row numbering (a sample and a sort) would each
            # parse the file again: a multi-line CSV is parsed by one task, the read's cost
            raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(raw)
    elif suffix == ".parquet":
        raw = spark.read.parquet(str(path))
    elif suffix in (".xlsx", ".xlsm"):
        # openpyxl reads a workbook whole: Excel files stay small. The local reader's checks,
        # with Excel row numbers; bad rows refused or set aside as locally
        local = read_checked_raw(cfg, rejected)
        text = T.StructType([T.StructField(str(c), T.StringType(), True) for c in local.columns])
        raw = spark.createDataFrame(local.astype(object).where(local.notna(), None), text)
    else:
        raise InputError(
            f"unsupported file type '{suffix}', expected .csv, .xlsx or .parquet", path=str(path)
        )
    raw = _as_text_columns(raw)
    wanted = check_mapped_columns([c for c in raw.columns if c != corrupt], cfg)
    return _Parsed(cfg, path, raw, suffix, corrupt, encoding, wanted)


# io.join_field_parts as a Spark UDF over the array of one row's parts (姓 + 名, 省 + 市 + ...)
_join_parts = F.udf(lambda parts: join_field_parts(list(parts)), T.StringType())


def _canonical(parsed: _Parsed, raw: DataFrame) -> DataFrame:
    """Checked rows as canonical records: source, record_id, the mapped fields, then the
    other columns as ``raw.<header>``."""
    cfg, corrupt, wanted = parsed.cfg, parsed.corrupt, parsed.wanted
    rid_col = _column(cfg.record_id)
    if corrupt is not None:
        raw = raw.drop(corrupt)
    cols = [F.lit(cfg.name).alias(schema.SOURCE), rid_col.alias(schema.RECORD_ID)]
    taken = {schema.SOURCE, schema.RECORD_ID}
    for target, columns in cfg.field_columns().items():
        if target == schema.RECORD_ID:
            continue
        if len(columns) == 1:
            cols.append(_column(columns[0]).alias(target))
        else:  # 姓 + 名, 省 + 市 + 详细地址: the local reader's rule, row by row
            parts = [_column(c) for c in columns]
            cols.append(_join_parts(F.array(*parts)).alias(target))
        taken.add(target)
    used = set(wanted)
    for column in raw.columns:
        if column in used:
            continue
        # namespaced as the local reader does (io.to_canonical): no header can collide
        cols.append(_column(column).alias(schema.raw_col(column)))
    return raw.select(*cols)


def _check_rows(
    raw: DataFrame,
    cfg: SourceConfig,
    path: Path,
    rid_col,
    corrupt: str | None,
    encoding: str | None,
    rejected: RejectedRows | None = None,
) -> DataFrame:
    """Count rows with the wrong field count (``corrupt`` set), without a record id and with
    a duplicate id in Spark; when there are any, name their lines (``badrows``) and raise
    InputError, or, with ``rejected``, set them aside there and return ``raw`` without them.
    Two small jobs on a good file."""
    ok = F.lit(True) if corrupt is None else F.col(corrupt).isNull()
    bad_fields = F.lit(False) if corrupt is None else F.col(corrupt).isNotNull()
    floated = rid_col.isNotNull() & rid_col.rlike(SCIENTIFIC_PATTERN)
    counts = raw.agg(
        F.sum(bad_fields.cast("long")).alias("fields"),
        F.sum((ok & rid_col.isNull()).cast("long")).alias("empty"),
        F.sum((ok & floated).cast("long")).alias("floated"),
    ).first()
    keyed = ok & rid_col.isNotNull() & ~floated
    dup = raw.where(keyed).groupBy(rid_col.alias("v")).count().where(F.col("count") > 1)
    # setting rows aside needs every duplicated value; a message names a few
    limit = None if rejected is not None else MAX_DUPLICATE_VALUES + 1
    dup_rows = (dup if limit is None else dup.limit(limit)).collect()
    dup_values = [r["v"] for r in dup_rows]
    n_fields, n_empty = int(counts["fields"] or 0), int(counts["empty"] or 0)
    n_floated = int(counts["floated"] or 0)
    if not (n_fields or n_empty or n_floated or dup_values):
        return raw
    n_dup = dup.count() if len(dup_values) > MAX_DUPLICATE_VALUES else len(dup_values)
    if rejected is None:
        dup_values = dup_values[:MAX_DUPLICATE_VALUES]
    keep_text = rejected is not None
    if corrupt is not None:
        python_encoding = _PYTHON_CODEC.get(encoding or "", encoding or "utf-8")
        found = scan_csv(path, cfg, python_encoding, dup_values, keep_text=keep_text)
        unit = "line"
    else:
        import pyarrow.dataset as ds

        batches = ds.dataset(str(path)).to_batches(columns=[cfg.record_id])
        found = scan_ids(
            (v for b in batches for v in b.column(0).to_pylist()), dup_values, first_row=1
        )
        if keep_text:
            rows = [*found.empty_id, *(r for r, _ in found.floated), *_lines(found.duplicates)]
            found.raw = _parquet_rows_text(path, rows)
        unit = "row"
    spark_count = n_fields + n_empty + n_floated + sum(int(r["count"]) for r in dup_rows)
    if not found or (rejected is not None and found.count() != spark_count):
        # the driver's scan and Spark disagree (e.g. an unusual header): Spark's counts
        message = (
            f"{n_fields} row(s) with the wrong number of fields, {n_empty} row(s) without a "
            f"record id, {n_floated} in scientific notation, {n_dup} duplicate record id "
            "value(s)"
        )
        if found:
            message += f"; a scan of the file found {found.count()} bad row(s)"
        # no row's text here (it was quoted before): an error reaches the job log, and a row
        # holds names, ID numbers and phones; `linkage standardize --bad-rows` names the rows
        message += (
            "; the local engine names each bad row: linkage standardize CONFIG --output "
            "FILE.parquet --bad-rows FILE.csv"
        )
        raise InputError(message, path=str(path), column=cfg.record_id)
    if rejected is None:
        raise InputError(bad_rows_message(found, cfg.record_id, n_dup, unit=unit), path=str(path))
    reject(found, cfg, rejected)
    # the job log gets counts and lines only: record ids can be personal data
    kinds = {
        "wrong number of fields": len(found.wrong_fields),
        "no record id": len(found.empty_id),
        "record id in scientific notation": len(found.floated),
        "duplicate record id": len(_lines(found.duplicates)),
    }
    lines = sorted(
        [line for line, _ in found.wrong_fields]
        + found.empty_id
        + [line for line, _ in found.floated]
        + _lines(found.duplicates)
    )
    # the local reader's line: kinds that occur and the lines, no record id (personal data)
    logger.warning(
        "%s: %d bad row(s) set aside (%s; %s); reasons and rows are in the bad-rows file",
        path,
        found.count(),
        ", ".join(f"{kind} {n}" for kind, n in kinds.items() if n),
        _listed(unit, lines),
    )
    good = raw.where(keyed)
    if dup_values:
        spark = raw.sparkSession
        values = spark.createDataFrame(
            pd.DataFrame({"__dup": pd.Series(dup_values, dtype=object)}),
            T.StructType([T.StructField("__dup", T.StringType(), False)]),
        )
        good = good.join(F.broadcast(values), rid_col == F.col("__dup"), "left_anti")
    return good


def _lines(duplicates: dict[str, list[int]]) -> list[int]:
    return [line for at in duplicates.values() for line in at]


def _parquet_rows_text(path: Path, rows: list[int]) -> dict[int, str]:
    """The cells of Parquet rows (numbered from 1) as one CSV line each, as the local reader
    writes a Parquet row into the bad-rows file (``io._FrameRows.raw`` after ``_as_text``)."""
    import csv
    import io as _io

    import pyarrow.parquet as pq

    from linkage.io import _as_text

    wanted = sorted(set(rows))
    out: dict[int, str] = {}
    start = 1
    at = 0
    for batch in pq.ParquetFile(str(path)).iter_batches():
        stop = start + batch.num_rows
        here = []
        while at < len(wanted) and wanted[at] < stop:
            here.append(wanted[at])
            at += 1
        if here:
            frame = _as_text(batch.take([r - start for r in here]).to_pandas())
            for row, values in zip(here, frame.itertuples(index=False), strict=True):
                buffer = _io.StringIO()
                csv.writer(buffer, lineterminator="").writerow(
                    ["" if v is None or v is pd.NA or v != v else v for v in values]
                )
                out[row] = buffer.getvalue()
        start = stop
    return out


_DECODE_CHUNK = 16 << 20


def _first_undecodable(path: Path, java_encoding: str | None, label: str = "") -> InputError | None:
    """The local reader's error (``io.decode_bytes``) for the first bytes of ``path`` that
    its encoding cannot decode, with their byte offset and line; None when it all decodes.

    Spark's CSV reader puts U+FFFD for such bytes and goes on: a name from another encoding
    would be linked as garbage. The file is decoded in pieces cut at line ends (0x0A is
    never inside a UTF-8, GB18030 or Big5 character), so memory stays one piece.
    """
    codec = _PYTHON_CODEC.get(java_encoding or "", java_encoding or "utf-8")
    label = label or codec.removesuffix("-sig")
    offset, lines, rest = 0, 0, b""
    with open(path, "rb") as handle:
        first = True
        while True:
            chunk = handle.read(_DECODE_CHUNK)
            data = rest + chunk
            if first and data.startswith(b"\xef\xbb\xbf") and codec.startswith("utf-8"):
                data, offset = data[3:], 3
            first = False
            if not data:
                return None
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            piece, rest = (data[:cut], data[cut:]) if cut else (b"", data)
            try:
                piece.decode(codec.removesuffix("-sig"))
            except UnicodeDecodeError as exc:
                line = lines + piece[: exc.start].count(b"\n") + 1
                return undecodable_error(label, offset + exc.start, line, str(path))
            offset += len(piece)
            lines += piece.count(b"\n")
            if not chunk:
                return None


def _undecodable_error(parsed: _Parsed) -> InputError | None:
    """:func:`_first_undecodable` for a parsed CSV source, named in its config's terms."""
    label = parsed.cfg.encoding if parsed.cfg.encoding != "auto" else ""
    return _first_undecodable(parsed.path, parsed.encoding, label)


def _files_with_bad_rows(spark: SparkSession, parsed: list[_Parsed]) -> tuple[set[int], set[int]]:
    """Positions in ``parsed`` of the CSV and Parquet files that hold a bad row (the wrong
    number of fields, no record id, an id in scientific notation, a duplicate id), found by
    one query over every file; ``_check_rows`` then names those files' rows. Second, the
    CSV files with a U+FFFD in a row (Spark's mark for bytes it could not decode), which
    :func:`_undecodable_error` then looks for in the file itself (a file may hold U+FFFD
    as a character); they count among the first too, so their rows are checked either way.

    ``_check_rows`` on each file cost a count and a duplicate search, about five Spark jobs
    per file, on files that are nearly always clean; this is one grouping of all of them.
    When the query itself fails, every file is suspect, so the per-file check names the file
    Spark could not read.
    """
    parts = []
    for i, p in enumerate(parsed):
        if p.suffix in (".xlsx", ".xlsm"):
            continue
        rid = _column(p.cfg.record_id)
        floated = rid.isNotNull() & rid.rlike(SCIENTIFIC_PATTERN)
        kind = F.when(rid.isNull(), 2).when(floated, 3).otherwise(0)
        if p.corrupt is not None:
            cells = [_column(c) for c in p.raw.columns if c != p.corrupt]
            replaced = F.concat_ws("\t", *cells).contains("\ufffd")
            kind = F.when(F.col(p.corrupt).isNotNull(), 1).when(replaced, 4).otherwise(kind)
        parts.append(
            p.raw.select(
                F.lit(i).alias("__file"),
                kind.alias("__kind"),
                F.when(kind == 0, rid).alias("__id"),
            )
        )
    if not parts:
        return set(), set()
    rows = parts[0]
    for more in parts[1:]:
        rows = rows.unionByName(more)
    bad = (
        rows.groupBy("__file", "__kind", "__id")
        .count()
        .where((F.col("__kind") != 0) | (F.col("count") > 1))
        .groupBy("__file")
        .agg(F.max((F.col("__kind") == 4).cast("int")).alias("__replaced"))
    )
    try:
        with _quiet_spark_logs(spark):
            found = bad.collect()
    except (PySparkException, Py4JJavaError):
        return set(range(len(parsed))), set()
    return {int(r["__file"]) for r in found}, {int(r["__file"]) for r in found if r["__replaced"]}


def read_sources_spark(
    spark: SparkSession,
    config: RunConfig,
    rejected: RejectedRows | None = None,
    cached: list[DataFrame] | None = None,
) -> DataFrame:
    """Stack every source; canonical fields a source lacks are null, canonical fields in front.
    ``rejected``: where bad rows are set aside (``run.bad_rows``); without it they are refused.
    ``cached``: receives the parsed CSV files kept for reuse (see ``read_source_spark``).
    """
    check_source_paths(config)
    parsed: list[_Parsed] = []
    order: list[int] = []  # each parsed file's position among the sources
    refused: dict[int, InputError] = {}  # every source is checked: one error names them all
    for at, cfg in enumerate(config.sources.values()):
        try:
            parsed.append(_parse_source(spark, cfg, cached, rejected))
            order.append(at)
        except InputError as exc:
            refused[at] = exc
    suspect, replaced = _files_with_bad_rows(spark, parsed)
    frames = []
    for i, p in enumerate(parsed):
        undecodable = _undecodable_error(p) if i in replaced else None
        if undecodable is not None:
            refused[order[i]] = undecodable
            continue
        try:
            frames.append(_canonical(p, _checked(spark, p, rejected) if i in suspect else p.raw))
        except InputError as exc:
            refused[order[i]] = exc
    if refused:
        raise sources_error([refused[at] for at in sorted(refused)])
    records = frames[0]
    for frame in frames[1:]:
        records = records.unionByName(frame, allowMissingColumns=True)
    for name in schema.CANONICAL_FIELDS:
        if name not in records.columns:
            records = records.withColumn(name, F.lit(None).cast("string"))
    front = list(schema.CANONICAL_FIELDS)
    rest = [c for c in records.columns if c not in front]
    return records.select(*[_column(c) for c in front + rest])


def number_rows(records: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """Add ``rid`` 0..n-1 in (source, record_id) order, the local engine's canonical order.

    Spark sorts strings by UTF-8 bytes, which is code-point order, as Python sorts them.
    Row numbers come from per-partition counts (no single-partition window). Returns the
    numbered records (checkpointed) and the records per source, which the same counts give
    (a count of the records afterwards would be jobs of its own).
    """
    ordered = records.orderBy(schema.SOURCE, schema.RECORD_ID)
    tagged = ordered.select(
        "*",
        F.spark_partition_id().alias("__pid"),
        F.monotonically_increasing_id().alias("__mid"),
    ).localCheckpoint()
    counts = (
        tagged.groupBy("__pid", schema.SOURCE)
        .agg(F.count("*").alias("__n"), F.min("__mid").alias("__first"))
        .toPandas()
    )
    per_source = {str(k): int(v) for k, v in counts.groupby(schema.SOURCE)["__n"].sum().items()}
    counts = (
        counts.groupby("__pid")
        .agg(__n=("__n", "sum"), __first=("__first", "min"))
        .reset_index()
        .sort_values("__pid")
    )
    counts["__offset"] = counts["__n"].cumsum() - counts["__n"]
    offsets = tagged.sparkSession.createDataFrame(counts[["__pid", "__first", "__offset"]])
    numbered = tagged.join(F.broadcast(offsets), "__pid").select(
        (F.col("__mid") - F.col("__first") + F.col("__offset")).cast("long").alias(schema.ROW),
        *[_column(c) for c in records.columns],
    )
    return numbered, dict(sorted(per_source.items()))


# ----------------------------------------------------------------------------- schemas


def _spark_type(series: pd.Series) -> T.DataType:
    if pd.api.types.is_bool_dtype(series):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(series):
        return T.LongType()
    if pd.api.types.is_float_dtype(series):
        return T.DoubleType()
    return T.StringType()


def _schema_of(frame: pd.DataFrame) -> T.StructType:
    return T.StructType([T.StructField(c, _spark_type(frame[c]), True) for c in frame.columns])


def _restore_booleans(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Arrow hands nullable booleans back as objects; the stages expect pandas' boolean dtype."""
    for col in columns:
        if col in frame.columns:
            frame[col] = frame[col].astype("boolean")
    return frame


def _column(name: str) -> Column:
    """The column ``name`` as it is, whatever it holds: quoted in backticks (a header's dots
    and spaces are its own), a backtick in it doubled (Spark SQL's escape in a quoted
    identifier)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _conform(frame: pd.DataFrame, struct: T.StructType) -> pd.DataFrame:
    """Cast a batch to a fixed schema so every partition returns the same Arrow types."""
    out = {}
    for f in struct.fields:
        s = frame[f.name] if f.name in frame.columns else pd.Series([None] * len(frame))
        if isinstance(f.dataType, T.StringType):
            s = s.astype(object).where(s.notna(), None)
            # the per-value conversion only where a non-text value is present: pandas'
            # dtype inference is one C loop, the map a Python call per cell
            if pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
                s = s.map(lambda v: v if v is None or isinstance(v, str) else str(v))
        elif isinstance(f.dataType, T.BooleanType):
            s = s.astype("boolean")
        elif isinstance(f.dataType, T.LongType):
            s = s.astype("Int64")
        elif isinstance(f.dataType, T.DoubleType):
            s = s.astype(float)
        out[f.name] = s.to_numpy() if isinstance(f.dataType, T.StringType) else s.array
    return pd.DataFrame(out)


def _map_in_pandas(
    frame: DataFrame,
    run: Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]],
    out_schema: T.StructType | str,
) -> DataFrame:
    """``frame.mapInPandas(run, out_schema)`` for frames whose column names hold dots.

    pyspark resolves mapInPandas' input columns by name, which reads ``raw.备注`` (a
    pass-through column) as a struct field; the frame goes in under plain names and each
    pandas batch gets its real names back.
    """
    names = frame.columns
    if not any("." in name for name in names):
        return frame.mapInPandas(run, out_schema)
    plain = frame.toDF(*[f"__c{i}" for i in range(len(names))])

    def renamed(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return run(batch.set_axis(names, axis=1) for batch in batches)

    return plain.mapInPandas(renamed, out_schema)


def _apply_in_pandas(
    frame: DataFrame,
    by: str,
    run: Callable[[pd.DataFrame], pd.DataFrame],
    out_schema: T.StructType,
) -> DataFrame:
    """``frame.groupBy(by).applyInPandas(run, out_schema)`` for column names with dots (see
    ``_map_in_pandas``)."""
    names = frame.columns
    if not any("." in name for name in names):
        return frame.groupBy(by).applyInPandas(run, out_schema)
    plain = frame.toDF(*[f"__c{i}" for i in range(len(names))])

    def renamed(group: pd.DataFrame) -> pd.DataFrame:
        return run(group.set_axis(names, axis=1))

    return plain.groupBy(f"__c{names.index(by)}").applyInPandas(renamed, out_schema)


# ----------------------------------------------------------------------------- stages


def standardize_spark(records: DataFrame, config: RunConfig) -> tuple[DataFrame, list[str]]:
    """Run ``standardize`` per record partition; return the records and their boolean columns.

    The standardizers work once per distinct value within each Arrow batch; ``rid`` is kept.
    """
    std_config = config.standardize
    sample = records.limit(20).toPandas()
    # the probe's own "standardized 20 records" line would read as the run's count
    quiet = logging.getLogger("linkage.standardize.combine")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        probe = standardize(sample.drop(columns=[schema.ROW]), std_config)
    finally:
        quiet.setLevel(level)
    probe[schema.ROW] = sample[schema.ROW].to_numpy()
    out_schema = _schema_of(probe)
    bool_cols = [f.name for f in out_schema.fields if isinstance(f.dataType, T.BooleanType)]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rid = batch.pop(schema.ROW).to_numpy()
            out = standardize(batch, std_config)
            out[schema.ROW] = rid
            yield _conform(out, out_schema)

    return _map_in_pandas(records, run, out_schema), bool_cols


def blocking_keys_spark(records: DataFrame, settings: BlockingSettings) -> DataFrame:
    """Run ``key_table`` per partition: rid, source and one text column per blocking key and
    per refinement key the records can give (``blocking.refine_keys`` and the rules' own)."""
    rules, extra = settings.rules, settings.all_refine_keys()
    sample = records.limit(20).toPandas()
    probe = key_table(sample, rules, extra)  # raises ConfigError for unknown keys, as locally
    names = list(probe.columns)
    out_schema = T.StructType(
        [T.StructField(schema.ROW, T.LongType(), False)]
        + [T.StructField(c, T.StringType(), True) for c in names if c != schema.ROW]
    )
    # only the columns key_table reads cross to the Python workers: every column of a
    # standardized record through Arrow was most of this stage's per-record cost
    wanted = {schema.ROW, schema.SOURCE, *extra}
    for key in [k for rule in rules for k in rule.keys] + list(extra):
        wanted.update(DERIVED_KEYS[key][0] if key in DERIVED_KEYS else (key,))
    read = records.select(*[_column(c) for c in records.columns if c in wanted])

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            table = key_table(batch, rules, extra)
            yield _conform(table, out_schema)

    return _map_in_pandas(read, run, out_schema)


# Columns of a rule's plan table (plan_rules_spark)
_PART = "__part"
_SKIP = "__skip"
_COUNT = "__count"
_STATS = "__stats"
_REPORT = (
    "records_with_key",
    "pairs",
    "largest_block",
    "blocks_over_warning",
    "blocks_refined",
    "blocks_skipped",
)


def _rule_extra(rule: BlockingRule, settings: BlockingSettings, columns: list[str]) -> list[str]:
    """The refinement keys a rule's plan groups by besides its own keys and the source."""
    extra = [k for k in dict.fromkeys(settings.refinement(rule)[1]) if k in columns]
    return [k for k in extra if k != schema.SOURCE and k not in rule.keys]


def _padded(columns: list[str], names: list[str]) -> list:
    """``columns`` under the positional ``names``, null text where a rule has fewer."""
    return [
        (F.col(columns[j]) if j < len(columns) else F.lit(None).cast("string")).alias(name)
        for j, name in enumerate(names)
    ]


def plan_rules_spark(
    keys: DataFrame, settings: BlockingSettings, buckets: int
) -> tuple[list[DataFrame | None], list[dict]]:
    """Refine every rule's big blocks as ``blocking.block`` does; return per rule its plan
    and report row.

    The records with a rule's keys are counted per combination of rule keys, refinement
    keys and source (a Spark group-by), and ``blocking.plan_rule`` (the local planner, with
    those counts as weights) runs per bucket of whole blocks; blocks are independent, so the
    buckets' report rows add up (``blocking.combine_report_rows``) to the local report row.
    All rules go through one job: their counts are stacked under positional column names
    (``__k<j>`` rule keys, ``__e<j>`` refinement keys, null where a rule has fewer) with the
    rule's index, and grouped by rule and bucket; one job per rule cost a shuffle, a
    checkpoint and a collect each. A plan (None when no block of the rule is refined) holds,
    per combination of a refined block, the rule keys, refinement keys, its part id (unique
    with the rule keys) and whether that part is skipped; records of other blocks take
    part -1.
    """
    rules = settings.rules
    extras = [_rule_extra(rule, settings, keys.columns) for rule in rules]
    n_keys = max(len(rule.keys) for rule in rules)
    n_extra = max((len(e) for e in extras), default=0)
    key_names = [f"__k{j}" for j in range(n_keys)]
    extra_names = [f"__e{j}" for j in range(n_extra)]
    rows = None
    for i, (rule, extra) in enumerate(zip(rules, extras, strict=True)):
        mine = keys.dropna(subset=list(rule.keys)).select(
            F.lit(i).cast("long").alias(_RULE_INDEX),
            *_padded(list(rule.keys), key_names),
            *_padded(extra, extra_names),
            F.col(schema.SOURCE),
        )
        rows = mine if rows is None else rows.unionByName(mine)
    # every rule's records counted by one group-by (one shuffle, one job) rather than a
    # group-by per rule: with adaptive execution each shuffle is a job of its own. A null
    # pad is a group value like any other, and Spark's hash skips nulls, so the bucket is
    # the hash of the rule's own keys.
    stacked = (
        rows.groupBy(_RULE_INDEX, *key_names, *extra_names, schema.SOURCE)
        .agg(F.count("*").alias(_COUNT))
        .select("*", (F.abs(F.hash(*[F.col(k) for k in key_names])) % buckets).alias(_BUCKET))
    )
    out_schema = T.StructType(
        [T.StructField(_RULE_INDEX, T.LongType(), False)]
        + [T.StructField(c, T.StringType(), True) for c in (*key_names, *extra_names)]
        + [
            T.StructField(_PART, T.LongType(), True),
            T.StructField(_SKIP, T.BooleanType(), True),
            T.StructField(_STATS, T.StringType(), True),
        ]
    )
    plain = [(list(rule.keys), extra) for rule, extra in zip(rules, extras, strict=True)]

    def plan(frame: pd.DataFrame) -> pd.DataFrame:
        i = int(frame[_RULE_INDEX].iloc[0])
        rule, (rule_keys, extra) = rules[i], plain[i]
        weights = frame[_COUNT].to_numpy(np.int64)
        names = dict(zip(key_names, rule_keys, strict=False))
        names |= dict(zip(extra_names, extra, strict=False))
        table = frame[[*names, schema.SOURCE]].rename(columns=names).reset_index(drop=True)
        table[schema.ROW] = np.arange(len(table), dtype=np.int64)
        column, row = plan_rule(coded_keys(table), rule, settings, weights)
        stats = {k: row[k] for k in (*_REPORT, "refined_by")}
        head = pd.DataFrame({_RULE_INDEX: [i], _PART: [None], _SKIP: [None]})
        head[_STATS] = json.dumps(stats)
        if column is None:
            return _conform(head, out_schema)
        part = column.to_numpy(dtype=np.int64, na_value=-2)
        kept = part != -1  # rows of refined blocks: a part id, or -2 when skipped
        body = frame.loc[kept, list(names)].reset_index(drop=True)
        body[_RULE_INDEX] = i
        body[_PART] = pd.array(np.where(part[kept] >= 0, part[kept], 0), dtype="Int64")
        body[_SKIP] = part[kept] == -2
        body[_STATS] = None
        return _conform(pd.concat([head, body], ignore_index=True), out_schema)

    planned = (
        stacked.groupBy(_RULE_INDEX, _BUCKET).applyInPandas(plan, out_schema).localCheckpoint()
    )
    stats_rows = planned.where(F.col(_STATS).isNotNull()).select(_RULE_INDEX, _STATS).toPandas()
    plans: list[DataFrame | None] = []
    report = []
    for i, (rule, extra) in enumerate(zip(rules, extras, strict=True)):
        mine = stats_rows[_RULE_INDEX].to_numpy() == i
        row = combine_report_rows(
            rule, [json.loads(t) for t in stats_rows[_STATS].to_numpy()[mine]], settings
        )
        report.append(row)
        if not row["blocks_refined"]:
            plans.append(None)
            continue
        plans.append(
            planned.where((F.col(_RULE_INDEX) == i) & F.col(_STATS).isNull()).select(
                *[F.col(key_names[j]).alias(k) for j, k in enumerate(rule.keys)],
                *[F.col(extra_names[j]).alias(k) for j, k in enumerate(extra)],
                _PART,
                _SKIP,
            )
        )
    return plans, report


def block_spark(
    keys: DataFrame, config: RunConfig, buckets: int, report: list[dict] | None = None
) -> tuple[DataFrame, list[str]]:
    """Candidate pairs ``rid_l < rid_r``, each once with the first rule that finds it.

    As ``blocking.block``: blocks over ``refine_block_size`` are refined by ``refine_keys``
    (:func:`plan_rules_spark`), parts still over ``max_block_size`` skipped, and the
    predicted pairs checked against ``pair_budget`` before any pair is made (ConfigError
    when over it and ``over_budget`` is ``refuse``). Then one self-join per rule on its keys
    and refinement part. Returns (rid_l, rid_r, rule index) and the rule names; ``report``
    receives the rows of ``blocking.blocking_report``.
    """
    settings = config.blocking
    plans, rows = plan_rules_spark(keys, settings, buckets)
    for rule, row in zip(settings.rules, rows, strict=True):
        warn_refined(rule, row, settings)
    if report is not None:
        report.extend(rows)
    check_budget(rows, settings)
    n_keys = max(len(rule.keys) for rule in settings.rules)
    key_names = [f"__k{j}" for j in range(n_keys)]
    stacked = None
    for i, (rule, plan) in enumerate(zip(settings.rules, plans, strict=True)):
        sub = keys.dropna(subset=list(rule.keys))
        if plan is None:
            part = F.lit(-1).cast("long")
        else:
            # null refinement values are a part of their own: match them null-safe
            extra = [c for c in plan.columns if c not in (*rule.keys, _PART, _SKIP)]
            p = plan.select(*[F.col(c).alias(f"__p{j}") for j, c in enumerate(plan.columns)])
            pcol = {c: f"__p{j}" for j, c in enumerate(plan.columns)}
            cond = [F.col(k) == F.col(pcol[k]) for k in rule.keys]
            cond += [F.col(k).eqNullSafe(F.col(pcol[k])) for k in extra]
            sub = sub.join(p, cond, "left").where(F.col(pcol[_SKIP]).isNull() | ~F.col(pcol[_SKIP]))
            part = F.coalesce(F.col(pcol[_PART]), F.lit(-1)).cast("long")
        # a rule's keys under positional names, "" where it has fewer (its records all
        # share the pad, and the rule index keeps rules apart)
        mine = sub.select(
            F.lit(i).cast("short").alias(_RULE_INDEX),
            *[
                (F.col(rule.keys[j]) if j < len(rule.keys) else F.lit("")).alias(name)
                for j, name in enumerate(key_names)
            ],
            part.alias(_PART),
            F.col(schema.ROW),
            F.col(schema.SOURCE),
        )
        stacked = mine if stacked is None else stacked.unionByName(mine)
    # the block's hash leads the join keys: a sort-merge join sorts by its keys in order,
    # and Spark's sort compares an 8-byte prefix of the first key before whole rows. With
    # the rule index first (ten values) nearly every comparison fell through to the text
    # keys, most of the block stage's sort time; the text keys stay join keys, so a hash
    # collision costs a comparison, never a pair
    block_hash = F.xxhash64(_RULE_INDEX, *key_names, _PART).alias(_BLOCK_HASH)
    stacked = stacked.select(block_hash, *stacked.columns)
    # one self-join of every rule's records on (rule, keys, part) rather than a join per
    # rule: the two sides are one plan, so Spark shuffles it once and reuses the exchange
    # (a job per shuffle with adaptive execution: 10 rules cost about 30 jobs)
    join_keys = [_BLOCK_HASH, _RULE_INDEX, *key_names, _PART]
    left, right = stacked.alias("l"), stacked.alias("r")
    cond = [F.col(f"l.{k}") == F.col(f"r.{k}") for k in join_keys]
    cond.append(F.col(f"l.{schema.ROW}") < F.col(f"r.{schema.ROW}"))
    if settings.link_type == "link_only":
        cond.append(F.col(f"l.{schema.SOURCE}") != F.col(f"r.{schema.SOURCE}"))
    elif settings.link_type == "dedupe_only":
        cond.append(F.col(f"l.{schema.SOURCE}") == F.col(f"r.{schema.SOURCE}"))
    joined = left.join(right, cond).select(
        F.col(f"l.{schema.ROW}").alias(schema.ROW_L),
        F.col(f"r.{schema.ROW}").alias(schema.ROW_R),
        F.col(f"l.{_RULE_INDEX}").alias(_RULE_INDEX),
    )
    # a pair found by several rules is kept once, with the first rule that finds it
    pairs = joined.groupBy(schema.ROW_L, schema.ROW_R).agg(F.min(_RULE_INDEX).alias(_RULE_INDEX))
    return pairs, [r.name for r in settings.rules]


def _comparison_columns(comparisons: list[Comparison], records: DataFrame) -> list[str]:
    cols = []
    for c in comparisons:
        for col in c.columns:
            if col in records.columns and col not in cols:
                cols.append(col)
    return cols


def _with_tf(
    records: DataFrame, config: RunConfig, comparisons: list[Comparison]
) -> tuple[DataFrame, dict[str, str]]:
    """Add one ``__tf_<name>`` column per term-frequency setting: the share of non-null records
    holding the record's value (``compare.term_frequencies``), null where the value is null."""
    present = {c.name for c in comparisons}
    tf_cols = {}
    out = records
    for name, column in config.model.term_frequency.items():
        if name not in present or column not in records.columns:
            continue
        total = records.where(F.col(column).isNotNull()).count()
        counts = (
            records.where(F.col(column).isNotNull())
            .groupBy(column)
            .agg((F.count("*") / F.lit(max(total, 1))).cast("double").alias(_TF_PREFIX + name))
        )
        out = out.join(counts, column, "left")
        tf_cols[name] = _TF_PREFIX + name
    return out, tf_cols


def _side(frame: DataFrame, cols: list[str], suffix: str, row: str) -> DataFrame:
    return frame.select(
        F.col(schema.ROW).alias(row), *[F.col(c).alias(f"{c}{suffix}") for c in cols]
    )


def _compare_batch(
    batch: pd.DataFrame,
    keep: list[str],
    comparisons: list[Comparison],
    value_cols: list[str],
    tf_cols: dict[str, str],
    bool_cols: list[str],
) -> pd.DataFrame:
    """One batch of joined pairs (``<col>__l``, ``<col>__r``) to its comparison vectors.

    Returns the ``keep`` columns, ``gamma_<name>`` (int8) per comparison and the pair's term
    frequency per tf setting. Used by ``compare_spark`` per Arrow batch.
    """
    out = batch[keep].copy()
    n = len(batch)
    # each record once, as the local ``compare.compare`` prepares records: a record is in
    # many pairs of a batch
    rids = np.concatenate(
        [batch[schema.ROW_L].to_numpy(np.int64), batch[schema.ROW_R].to_numpy(np.int64)]
    )
    _, first, where = np.unique(rids, return_index=True, return_inverse=True)
    # a column's values are taken for those records before they become Python objects, and
    # once for every comparison that reads it: converting both sides of every pair, once per
    # comparison, was most of this function's time outside the comparisons
    values: dict[str, np.ndarray] = {}
    for col in dict.fromkeys(col for c in comparisons for col in c.columns):
        if col not in value_cols:  # absent columns read as null, as locally
            values[col] = np.full(len(first), None, dtype=object)
            continue
        both = pd.concat([batch[f"{col}__l"], batch[f"{col}__r"]], ignore_index=True)
        picked = both.take(first)
        if col in bool_cols:  # Arrow hands nullable booleans back as objects
            picked = picked.astype("boolean")
        values[col] = picked.to_numpy()
    for c in comparisons:
        mine = {col: values[col] for col in c.columns}
        levels = c.compare_prepared(c.prepare(mine), where[:n], where[n:])
        out[schema.GAMMA_PREFIX + c.name] = levels.astype(np.int8)
    for tf in tf_cols.values():
        out[tf] = np.fmax(
            batch[f"{tf}__l"].to_numpy(dtype=float), batch[f"{tf}__r"].to_numpy(dtype=float)
        )
    return out


def partition_by_row(frame: DataFrame, partitions: int) -> DataFrame:
    """``frame`` hash-partitioned by rid into ``partitions`` parts, each sorted by rid, and
    checkpointed with that layout kept.

    Compare joins the records to the pairs twice (by ``rid_l``, then by ``rid_r``); with the
    records laid out as those sort-merge joins need them, each join shuffles and sorts only
    the pairs, not the records again. Adaptive execution is off while the frame is
    checkpointed: an adaptive plan does not know its output partitioning before it runs, so
    the checkpoint would forget the layout (Spark 4's ``LogicalRDD.fromDataset``). Columns
    are ``frame``'s; needs the ``rid`` column.
    """
    with adaptive_off(frame.sparkSession):
        return (
            frame.repartition(partitions, schema.ROW).sortWithinPartitions(schema.ROW)
        ).localCheckpoint()


def compare_spark(
    pairs: DataFrame,
    prepared: DataFrame,
    comparisons: list[Comparison],
    value_cols: list[str],
    tf_cols: dict[str, str],
    bool_cols: list[str],
) -> DataFrame:
    """Join both records' columns to each pair and run ``Comparison.compare`` per partition.

    Returns rid_l, rid_r, the pair's other columns, one byte ``gamma_<name>`` per comparison
    and the pair's term frequency per tf setting (the larger of its two records', as
    ``compare.pair_tf``). ``prepared`` laid out by :func:`partition_by_row` is joined without
    being shuffled again.
    """
    cols = value_cols + list(tf_cols.values())
    joined = pairs.join(_side(prepared, cols, "__l", schema.ROW_L), schema.ROW_L).join(
        _side(prepared, cols, "__r", schema.ROW_R), schema.ROW_R
    )
    keep = [c for c in pairs.columns]
    out_schema = T.StructType(
        [f for f in pairs.schema.fields]
        + [T.StructField(schema.GAMMA_PREFIX + c.name, T.ByteType(), False) for c in comparisons]
        + [T.StructField(tf, T.DoubleType(), True) for tf in tf_cols.values()]
    )

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield _compare_batch(batch, keep, comparisons, value_cols, tf_cols, bool_cols)

    return _map_in_pandas(joined, run, out_schema)


def score_spark(
    vectors: DataFrame, model: FellegiSunterModel, tf_cols: dict[str, str]
) -> DataFrame:
    """Run ``FellegiSunterModel.score`` per partition: adds ``mw_<name>``, match weight and
    probability; drops the term-frequency helper columns."""
    keep = [f for f in vectors.schema.fields if f.name not in tf_cols.values()]
    out_schema = T.StructType(
        keep
        + [
            T.StructField(schema.MW_PREFIX + name, T.DoubleType(), True)
            for name in model.comparisons
        ]
        + [
            T.StructField(schema.MATCH_WEIGHT, T.DoubleType(), True),
            T.StructField(schema.MATCH_PROBABILITY, T.DoubleType(), True),
        ]
    )
    names = [f.name for f in out_schema.fields]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            tf = {name: batch.pop(col).to_numpy(dtype=float) for name, col in tf_cols.items()}
            # a weak fit scores without term frequencies (training.settle_weak_fit)
            tf = {name: v for name, v in tf.items() if name in model.tf_columns}
            scored = model.score(batch, tf=tf or None)
            yield scored[names]

    return _map_in_pandas(vectors, run, out_schema)


# ----------------------------------------------------------------------------- training


def _training_vectors(
    vectors: DataFrame, gamma_cols: list[str], limit: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Comparison patterns with their counts over all candidates, and vectors for EM.

    EM depends on the candidates only through the counts of each level pattern, so the
    patterns are counted in Spark; up to ``limit`` candidates are rebuilt on the driver exactly,
    beyond it each pattern's count is scaled down (a stratified sample of all candidates).
    """
    patterns = vectors.groupBy(*gamma_cols).count().toPandas()
    patterns = patterns.sort_values(gamma_cols, kind="stable").reset_index(drop=True)
    total = int(patterns["count"].sum()) if len(patterns) else 0
    counts = patterns["count"].to_numpy(np.int64)
    if total > limit:
        rng = np.random.default_rng(seed)
        scaled = counts * (limit / total)
        counts = np.floor(scaled).astype(np.int64)
        counts += rng.random(len(counts)) < (scaled - counts)
        logger.info("EM on a stratified sample of %d of %d candidate pairs", counts.sum(), total)
    expanded = pd.DataFrame(
        {c: np.repeat(patterns[c].to_numpy(np.int8), counts) for c in gamma_cols}
    )
    return patterns, expanded, total


def _prior_from_patterns(
    patterns: pd.DataFrame, rules: list[dict[str, int]], n_records: int, recall: float
) -> float:
    """Prior match probability of two random records from rule hits (as ``pipeline``'s)."""
    hit = np.zeros(len(patterns), dtype=bool)
    for rule in rules:
        ok = np.ones(len(patterns), dtype=bool)
        for name, level in rule.items():
            ok &= patterns[schema.GAMMA_PREFIX + name].to_numpy() >= level
        hit |= ok
    hits = int(patterns["count"].to_numpy()[hit].sum())
    total = max(n_records * (n_records - 1) / 2, 1.0)
    return float(np.clip(max(hits, 1) / recall / total, 1e-12, 0.5))


def random_pair_vectors(
    prepared: DataFrame,
    random_pairs: pd.DataFrame,
    link_type: str,
    comparisons: list[Comparison],
    value_cols: list[str],
    tf_cols: dict[str, str],
    bool_cols: list[str],
) -> pd.DataFrame:
    """Comparison vectors of the random pairs for u, computed on the driver.

    ``random_pairs``: rid_l, rid_r (``blocking.sample_random_pairs``); ``prepared``: rid,
    source and the comparisons' columns. Returns rid_l, rid_r and ``gamma_<name>`` of the
    pairs the link type allows (``training.random_pairs_for_u``'s rule). The pairs touch at
    most twice ``model.u_sample_pairs`` records whatever the input's size, so those records
    alone are fetched (a broadcast join, no shuffle of the records) and compared here by
    ``compare.compare``, the local engine's call: each comparison prepares every fetched
    record once, then levels the pairs by position. (Sending the pairs through two shuffled
    joins cost a small run most of its training time; comparing them in chunks of pairs
    prepared a record again in every chunk it appeared in, about ten times over.)
    ``tf_cols`` is unused: u takes no term frequencies.
    """
    from linkage.compare import compare

    spark = prepared.sparkSession
    rids = np.unique(random_pairs[[schema.ROW_L, schema.ROW_R]].to_numpy().ravel())
    # the schema given: a run of one record has no random pairs, and Spark infers none
    # from an empty table
    wanted = spark.createDataFrame(
        pd.DataFrame({schema.ROW: rids.astype(np.int64)}), f"{schema.ROW} long"
    )
    cols = [schema.ROW, schema.SOURCE, *value_cols]
    rows = prepared.select(*cols).join(F.broadcast(wanted), schema.ROW).toPandas()
    rows = rows.sort_values(schema.ROW).reset_index(drop=True)
    rows = _restore_booleans(rows, bool_cols)
    rid = rows.pop(schema.ROW).to_numpy(np.int64)
    position = pd.Index(rid)
    pos_l = position.get_indexer(random_pairs[schema.ROW_L].to_numpy(np.int64))
    pos_r = position.get_indexer(random_pairs[schema.ROW_R].to_numpy(np.int64))
    if link_type in ("link_only", "dedupe_only"):
        source = rows[schema.SOURCE].to_numpy()
        cross = source[pos_l] != source[pos_r]
        keep = cross if link_type == "link_only" else ~cross
        pos_l, pos_r = pos_l[keep], pos_r[keep]
    local_pairs = pd.DataFrame({schema.ROW_L: pos_l, schema.ROW_R: pos_r})
    vectors = compare(rows, local_pairs, comparisons)
    vectors[schema.ROW_L] = rid[pos_l]
    vectors[schema.ROW_R] = rid[pos_r]
    return vectors


def train_spark(
    vectors: DataFrame,
    n_records: int,
    comparisons: list[Comparison],
    config: RunConfig,
    u_vectors: Callable[[pd.DataFrame], pd.DataFrame],
    tf_cols: dict[str, str],
) -> FellegiSunterModel:
    """Train the model on the driver: u from random pairs, m by EM from the candidates' patterns.

    The same calls as ``training.train_model``: the model from ``training.new_model``, u from
    ``blocking.sample_random_pairs`` (same seed, same pairs as the local engine) compared by
    ``u_vectors`` (``random_pair_vectors``: filtered by the link type, as locally), m from
    ``fit_sessions`` (or ``fit``) over the candidates; a fit whose every session had too few
    pairs takes the reference model's m and u (``training.settle_weak_fit``).
    """
    from linkage.blocking import sample_random_pairs

    settings = config.model
    if settings.labels is not None:
        raise ConfigError(
            "model.labels is not supported by the Spark engine yet: train with the local "
            "engine and set model.load to the saved model.json",
            key="model.labels",
        )
    model = new_model(comparisons, config, list(tf_cols))
    gamma_cols = [schema.GAMMA_PREFIX + c.name for c in comparisons]
    random_pairs = sample_random_pairs(n_records, settings.u_sample_pairs, seed=settings.seed)
    model.estimate_u(u_vectors(random_pairs))
    patterns, expanded, total = _training_vectors(
        vectors, gamma_cols, config.spark.train_sample_pairs, settings.seed
    )
    if not total:
        logger.warning("no candidate pairs: the model keeps its u-probabilities only")
        return model
    sessions = level_rules(settings.training_sessions, comparisons)
    if not sessions:
        model.fit(expanded)
        fit_household(model, expanded, comparisons, config)
        return model
    rules = level_rules(settings.prior_rules, comparisons)
    model.fit_sessions(
        expanded,
        sessions,
        prior_rules=rules,
        n_records=n_records,
        prior_recall=settings.prior_recall,
    )
    if rules and len(expanded) < total:
        # a sample holds fewer rule hits than all candidates: the prior counts them all
        prior = _prior_from_patterns(patterns, rules, n_records, settings.prior_recall)
        model.probability_two_random_records_match_ = prior
        if settings.prior is None:
            model.lambda_ = prior
    logger.info("training sessions: %s", model.sessions_)
    settle_weak_fit(model, comparisons, total)
    fit_household(model, expanded, comparisons, config)
    return model


# ----------------------------------------------------------------------------- clustering


def cannot_link_spark(
    records: DataFrame, *, same_source: bool = True, dated: bool = True
) -> DataFrame:
    """``cluster.cannot_link_table`` per record partition: rid, key (a valid ID number that
    is the record's own) and group (its source, or ``cluster.DATED_GROUP``)."""
    cols = [
        c
        for c in (
            schema.ROW, schema.SOURCE, schema.ID_STD, schema.ID_VALID, schema.QUALITY_FLAGS,
            schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE,
        )
        if c in records.columns
    ]
    out_schema = T.StructType(
        [
            T.StructField(schema.ROW, T.LongType(), False),
            T.StructField(CANNOT_LINK_KEY, T.StringType(), True),
            T.StructField(CANNOT_LINK_GROUP, T.StringType(), True),
        ]
    )

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            table = cannot_link_table(batch, same_source=same_source, dated=dated)
            if table is not None:
                yield _conform(table, out_schema)

    return records.select(*cols).mapInPandas(run, out_schema)


def hold_out_siblings_spark(records: DataFrame, scored: DataFrame) -> DataFrame:
    """``scored`` less the pairs ``cluster.sibling_pairs`` holds out of clustering (twins and
    siblings, ``cluster.sibling_mask``; a guardian and a child, ``cluster.guardian_mask``), as
    the local engine's ``pipeline.cluster_records`` does.

    The records with a partner of their own (``cluster.partner_pairs``) are found over all
    pairs first; then both masks run per pair partition with both records' clean names,
    given names, missing birth dates and partner flags joined to each pair.
    """
    clean = schema.name_col(schema.NAME, "clean")
    given = schema.name_col(schema.NAME, "given")
    wanted = ("gamma_name", "gamma_birth_date", "gamma_id", "gamma_gender")
    levels = [c for c in wanted if c in scored.columns]
    # a dropped or transposed given-name character between twins or parent and child
    # (``cluster.edit_siblings``) needs only the pair's own levels
    edits_apply = {"gamma_name", "gamma_birth_date"} <= set(levels)
    siblings_apply = edits_apply and clean in records.columns
    guardians_apply = (
        {"gamma_name", "gamma_id"} <= set(levels)
        and given in records.columns
        and schema.BIRTH_DATE_STD in records.columns
    )
    if not (edits_apply or guardians_apply):
        return scored
    pairs = scored.select(schema.ROW_L, schema.ROW_R, *levels)
    # only pairs with names at level ``else`` and an exact birth date (siblings) or an exact
    # ID (guardians) can be held out: the rest skip the joins of record columns
    maybe = F.lit(False)
    if siblings_apply:
        birth_exact = BirthDateComparison.levels.index("exact")
        maybe = maybe | (F.col("gamma_birth_date") == birth_exact)
    if guardians_apply:
        maybe = maybe | (F.col("gamma_id") == IdComparison.levels.index("exact"))
    edited = F.col("gamma_name").isin(NameComparison.DROPPED, NameComparison.TRANSPOSED)
    if {"gamma_gender", "gamma_birth_date"} <= set(levels):
        # cluster.unnamed_twins: no name on a side, one birth date, two genders
        edited = edited | (
            (F.col("gamma_name") < 0)
            & (F.col("gamma_gender") == 0)
            & (F.col("gamma_birth_date") == BirthDateComparison.levels.index("exact"))
        )
    pairs = pairs.where(((F.col("gamma_name") == 0) & maybe) | edited)
    fields = [schema.ROW]
    fields += [F.col(clean).alias("__clean")] if siblings_apply else []
    if guardians_apply:
        fields += [
            F.col(given).alias("__given"),
            F.col(schema.BIRTH_DATE_STD).isNull().alias("__no_birth"),
        ]
    per_record = records.select(*fields)
    if siblings_apply:

        def partners(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in batches:
                strong = partner_pairs(batch)
                rows = [
                    batch[schema.ROW_L].to_numpy()[strong],
                    batch[schema.ROW_R].to_numpy()[strong],
                ]
                yield pd.DataFrame({schema.ROW: np.concatenate(rows).astype(np.int64)})

        partnered = (
            scored.select(schema.ROW_L, schema.ROW_R, *levels)
            .mapInPandas(partners, f"{schema.ROW} long")
            .distinct()
            .withColumn("__partner", F.lit(True))
        )
        per_record = per_record.join(partnered, schema.ROW, "left")
    given_counts: dict[str, int] | None = None
    if siblings_apply:
        # given-name characters of the distinct names (cluster.given_char_counts), summed
        # over partitions: a few thousand rows come back to the driver
        def char_counts(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in batches:
                counts = given_char_counts(batch[clean].to_numpy(dtype=object))
                # typed columns: a batch without counts (minority, Latin or masked names
                # only) would give float64 columns, which Arrow cannot make strings of
                yield pd.DataFrame(
                    {
                        "ch": pd.Series(list(counts), dtype=object),
                        "n": np.fromiter(counts.values(), dtype=np.int64, count=len(counts)),
                    }
                )

        given_counts = {
            row["ch"]: int(row["n"])
            for row in records.select(clean)
            .distinct()
            .mapInPandas(char_counts, "ch string, n long")
            .groupBy("ch")
            .agg(F.sum("n").alias("n"))
            .collect()
        }
    names = [c for c in per_record.columns if c != schema.ROW]
    joined = pairs
    for row, side in ((schema.ROW_L, "_l"), (schema.ROW_R, "_r")):
        joined = joined.join(
            per_record.select(
                F.col(schema.ROW).alias(row), *[F.col(c).alias(f"{c}{side}") for c in names]
            ),
            row,
            "left",
        )

    def held(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            mask = edit_siblings(batch) | unnamed_twins(batch)
            if siblings_apply:
                mask |= sibling_mask(
                    batch,
                    batch["__clean_l"].to_numpy(object),
                    batch["__clean_r"].to_numpy(object),
                    batch["__partner_l"].fillna(False).to_numpy(bool),
                    batch["__partner_r"].fillna(False).to_numpy(bool),
                    given_counts,
                )
            if guardians_apply:
                mask |= guardian_mask(
                    batch,
                    batch["__no_birth_l"].fillna(False).to_numpy(bool),
                    batch["__no_birth_r"].fillna(False).to_numpy(bool),
                    batch["__given_l"].to_numpy(object),
                    batch["__given_r"].to_numpy(object),
                )
            yield batch.loc[mask, [schema.ROW_L, schema.ROW_R]]

    out = f"{schema.ROW_L} long, {schema.ROW_R} long"
    held_out, counted = checkpoint_counting(joined.mapInPandas(held, out), pairs=F.lit(True))
    logger.info("%d twin, sibling or guardian pair(s) held out of clustering", counted["pairs"])
    return scored.join(held_out, [schema.ROW_L, schema.ROW_R], "left_anti")


def cluster_spark(
    records: DataFrame,
    scored: DataFrame,
    config: RunConfig,
    buckets: int,
) -> tuple[DataFrame, int]:
    """Label each record with the smallest rid of its cluster, as ``cluster.cluster_pairs`` does.

    Connected components of the pairs at or above the threshold run in Spark. A component that
    ``cluster_pairs`` would recluster (over ``max_cluster_size`` records, two valid IDs of one
    source, or a pair below threshold inside) goes with its pairs and cannot-link keys to
    ``cluster_pairs`` itself, bucket by bucket. Returns (rid, label) and the rounds taken.
    """
    settings = config.clustering
    threshold = settings.threshold
    strong = scored.where(F.col(schema.MATCH_PROBABILITY) >= threshold).select(
        F.col(schema.ROW_L).alias("src"), F.col(schema.ROW_R).alias("dst")
    )
    vertices = records.select(F.col(schema.ROW).alias("id"))
    components = connected_components(strong, vertices)
    comp = components.labels.select(
        F.col("id").alias(schema.ROW), F.col(COMPONENT)
    ).localCheckpoint()

    sizes = comp.groupBy(COMPONENT).count()
    flagged = sizes.where(F.col("count") > settings.max_cluster_size).select(COMPONENT)
    comp_l = comp.select(F.col(schema.ROW).alias(schema.ROW_L), F.col(COMPONENT).alias("__cl"))
    comp_r = comp.select(F.col(schema.ROW).alias(schema.ROW_R), F.col(COMPONENT).alias("__cr"))
    inside = (
        scored.select(schema.ROW_L, schema.ROW_R, schema.MATCH_WEIGHT, schema.MATCH_PROBABILITY)
        .join(comp_l, schema.ROW_L)
        .join(comp_r, schema.ROW_R)
        .where(F.col("__cl") == F.col("__cr"))
        .select(
            schema.ROW_L,
            schema.ROW_R,
            schema.MATCH_WEIGHT,
            schema.MATCH_PROBABILITY,
            F.col("__cl").alias(COMPONENT),
        )
    )
    flagged = flagged.unionByName(
        inside.where(F.col(schema.MATCH_PROBABILITY) < threshold).select(COMPONENT)
    )
    cannot = None
    if (
        settings.cannot_link_same_source_ids or settings.cannot_link_dated_ids
    ) and schema.ID_STD in records.columns:
        cannot = cannot_link_spark(
            records,
            same_source=settings.cannot_link_same_source_ids,
            dated=settings.cannot_link_dated_ids,
        )
        conflicts = (
            cannot.join(comp, schema.ROW)
            .groupBy(COMPONENT, CANNOT_LINK_GROUP)
            .agg(F.countDistinct(CANNOT_LINK_KEY).alias("__keys"))
            .where(F.col("__keys") > 1)
            .select(COMPONENT)
        )
        flagged = flagged.unionByName(conflicts)
    flagged, counted = checkpoint_counting(flagged.distinct(), components=F.lit(True))
    n_flagged = counted["components"]
    logger.info("reclustering %d suspect component(s)", n_flagged)
    if n_flagged == 0:
        return comp.select(schema.ROW, F.col(COMPONENT).alias(_LABEL)), components.rounds

    nodes = comp.join(flagged, COMPONENT, "left_semi")
    if cannot is not None:
        nodes = nodes.join(cannot, schema.ROW, "left")
    else:
        nodes = nodes.select(
            "*",
            F.lit(None).cast("string").alias(CANNOT_LINK_KEY),
            F.lit(None).cast("string").alias(CANNOT_LINK_GROUP),
        )
    bucket = (F.abs(F.hash(F.col(COMPONENT))) % buckets).alias(_BUCKET)
    nodes = nodes.select("*", bucket)
    edges = inside.join(flagged, COMPONENT, "left_semi").select("*", bucket)
    out_schema = T.StructType(
        [
            T.StructField(schema.ROW, T.LongType(), False),
            T.StructField(_LABEL, T.LongType(), False),
        ]
    )
    max_size = settings.max_cluster_size
    constrained = cannot is not None  # the closure must not capture a DataFrame

    def recluster(node_frame: pd.DataFrame, edge_frame: pd.DataFrame) -> pd.DataFrame:
        # a row keyed in two cannot-link groups (its source's, the dated IDs') comes twice
        rows = np.unique(node_frame[schema.ROW].to_numpy(np.int64))
        if not len(rows):
            return pd.DataFrame({schema.ROW: [], _LABEL: []}, dtype=np.int64)
        # local row numbers keep the global order, so the smallest local row is the smallest rid
        local = pd.DataFrame(
            {
                schema.ROW_L: np.searchsorted(rows, edge_frame[schema.ROW_L].to_numpy(np.int64)),
                schema.ROW_R: np.searchsorted(rows, edge_frame[schema.ROW_R].to_numpy(np.int64)),
                schema.MATCH_WEIGHT: edge_frame[schema.MATCH_WEIGHT].to_numpy(float),
                schema.MATCH_PROBABILITY: edge_frame[schema.MATCH_PROBABILITY].to_numpy(float),
            }
        )
        keyed = node_frame[node_frame[CANNOT_LINK_KEY].notna()]
        cl = None
        if constrained:
            cl = pd.DataFrame(
                {
                    schema.ROW: np.searchsorted(rows, keyed[schema.ROW].to_numpy(np.int64)),
                    CANNOT_LINK_KEY: keyed[CANNOT_LINK_KEY].to_numpy(),
                    CANNOT_LINK_GROUP: keyed[CANNOT_LINK_GROUP].to_numpy(),
                }
            )
        labels = cluster_pairs(
            len(rows), local, threshold, cannot_link=cl, max_cluster_size=max_size
        )
        return pd.DataFrame({schema.ROW: rows, _LABEL: rows[labels.to_numpy(np.int64)]})

    relabelled = (
        nodes.groupBy(_BUCKET).cogroup(edges.groupBy(_BUCKET)).applyInPandas(recluster, out_schema)
    )
    labels = comp.join(relabelled, schema.ROW, "left").select(
        schema.ROW, F.coalesce(F.col(_LABEL), F.col(COMPONENT)).alias(_LABEL)
    )
    return labels, components.rounds


def identity_ids_spark(records: DataFrame, labels: DataFrame, key: bytes) -> DataFrame:
    """Name each cluster after its smallest (source, record_id) with ``identity.identity_names``
    (the one naming rule: ``ID`` + 20 hex digits of HMAC-SHA256(key, record key)), applied per
    partition of the cluster table so the names equal the local engine's for the same key."""
    keyed = records.select(
        schema.ROW,
        schema.SOURCE,
        schema.RECORD_ID,
        F.concat(F.col(schema.SOURCE), F.lit("\x1f"), F.col(schema.RECORD_ID)).alias(_KEY),
    ).join(labels, schema.ROW)
    names = keyed.groupBy(_LABEL).agg(F.min(_KEY).alias(_KEY))
    label_type = names.schema[_LABEL].dataType.simpleString()

    def name_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield pd.DataFrame(
                {
                    _LABEL: batch[_LABEL],
                    schema.IDENTITY_ID: identity_names(batch[_KEY].to_numpy(object), key),
                }
            )

    names = names.mapInPandas(name_batches, f"{_LABEL} {label_type}, {schema.IDENTITY_ID} string")
    return keyed.join(names, _LABEL).select(
        schema.ROW, schema.SOURCE, schema.RECORD_ID, _LABEL, schema.IDENTITY_ID
    )


def stable_ids_spark(
    spark: SparkSession,
    identities: DataFrame,
    previous: pd.DataFrame | DataFrame,
    key: bytes | None = None,
) -> DataFrame:
    """Keep the ids of a previous run's identities (``identity.assign_stable_ids``'s rules:
    a split keeps the id with the larger part, a merge keeps the oldest id).

    ``previous``: source, record_id, identity_id and, when it came from a Spark run,
    created_run (the run that first gave each id) of the previous run's identities. Without
    created_run every previous id counts as created in run 0, so a merge among them keeps
    the smallest id (the rule's tie-break). This run is one more than the newest previous
    run: its fresh ids get that created_run, kept ids keep theirs. The assignment runs on
    the driver over the clusters that share a record with a previous identity, with the
    local store's code; everything else keeps its fresh id. Returns ``identities`` (rid,
    source, record_id, label, identity_id) with created_run added.
    """
    prev = (
        previous
        if isinstance(previous, DataFrame)
        else spark.createDataFrame(  # as text, with the schema given: the file may be empty
            previous.astype(str),
            T.StructType([T.StructField(str(c), T.StringType()) for c in previous.columns]),
        )
    )
    age = (
        F.col(schema.CREATED_RUN).cast("long")
        if schema.CREATED_RUN in prev.columns
        else F.lit(None).cast("long")
    )
    prev = prev.select(
        schema.SOURCE,
        schema.RECORD_ID,
        F.col(schema.IDENTITY_ID).alias("__prev"),
        F.coalesce(age, F.lit(0)).alias("__age"),
    )
    # every previous id with its age: ages decide merges, and no fresh id may reuse one
    known = (
        prev.groupBy("__prev")
        .agg(F.min("__age").alias(schema.CREATED_RUN))
        .toPandas()
        .rename(columns={"__prev": schema.IDENTITY_ID})
    )
    this_run = int(known[schema.CREATED_RUN].max()) + 1 if len(known) else 1
    known["status"] = "active"
    # Clusters touching a previous identity, and every record of those clusters and identities.
    touched = identities.join(prev, [schema.SOURCE, schema.RECORD_ID], "inner")
    scope_labels = touched.select(_LABEL).distinct()
    scope_prev = touched.select("__prev").distinct()
    current = (
        identities.join(scope_labels, _LABEL, "left_semi")
        .select(schema.SOURCE, schema.RECORD_ID, F.col(_LABEL).alias(CLUSTER))
        .toPandas()
    )
    previous_rows = prev.join(scope_prev, "__prev", "left_semi").drop("__age").toPandas()
    previous_rows = previous_rows.rename(columns={"__prev": schema.IDENTITY_ID})
    assigned = assign_stable_ids(
        current,
        previous_rows,
        known,
        run_id=this_run,
        key=key,
        clusters="clusters sharing a record with a previous identity (the others get fresh ids)",
    )
    ids = np.asarray(assigned.identity_ids, dtype=object)
    ages = pd.Series(
        known[schema.CREATED_RUN].to_numpy(np.int64), index=known[schema.IDENTITY_ID].to_numpy()
    )
    mapping = pd.DataFrame(
        {
            CLUSTER: current[CLUSTER].to_numpy(np.int64),
            "__stable": ids,
            "__created": ages.reindex(ids).fillna(this_run).to_numpy(np.int64),
        }
    ).drop_duplicates(CLUSTER)
    # the schema given: no cluster may share a record with a previous identity
    mapped = spark.createDataFrame(
        mapping, f"{_LABEL} long, __stable string, __created long"
    )
    return identities.join(
        F.broadcast(mapped) if len(mapping) < 1_000_000 else mapped, _LABEL, "left"
    ).select(
        schema.ROW,
        schema.SOURCE,
        schema.RECORD_ID,
        _LABEL,
        F.coalesce(F.col("__stable"), F.col(schema.IDENTITY_ID)).alias(schema.IDENTITY_ID),
        F.coalesce(F.col("__created"), F.lit(this_run)).cast("long").alias(schema.CREATED_RUN),
    )


def golden_spark(
    records: DataFrame, identities: DataFrame, config: RunConfig, bool_cols: list[str], buckets: int
) -> DataFrame:
    """Run ``merge_records`` per bucket of whole identities; one golden record per identity."""
    settings = config.golden_settings()
    # only the columns merge_records reads go through the shuffle: the records' other
    # standardized and raw columns were most of the bytes this stage wrote
    used = [schema.ROW, schema.SOURCE, schema.RECORD_ID, schema.REGISTERED_AT_STD, schema.ID_VALID]
    for rule in settings.fields.values():
        used += [rule.column] + ([rule.raw] if rule.raw is not None else [])
    used = [c for c in dict.fromkeys(used) if c in records.columns]
    records = records.select(*[_column(c) for c in used])
    with_ids = records.join(identities.select(schema.ROW, schema.IDENTITY_ID), schema.ROW)
    with_ids = with_ids.select(
        "*", (F.abs(F.hash(F.col(schema.IDENTITY_ID))) % buckets).alias(_BUCKET)
    )
    # the output schema from 20 records each its own identity: a sample of ``with_ids``
    # would run the join (four jobs) for the same columns
    sample = records.limit(20).toPandas()
    sample[schema.IDENTITY_ID] = [f"probe{i}" for i in range(len(sample))]
    probe = merge_records(
        _restore_booleans(sample, bool_cols), sample[schema.IDENTITY_ID], settings
    )
    out_schema = _schema_of(probe)

    def run(frame: pd.DataFrame) -> pd.DataFrame:
        frame = _restore_booleans(frame.reset_index(drop=True), bool_cols)
        golden = merge_records(frame, frame[schema.IDENTITY_ID], settings)
        return _conform(golden, out_schema)

    return _apply_in_pandas(with_ids, _BUCKET, run, out_schema)


# ----------------------------------------------------------------------------- the run


def run_spark(
    config: RunConfig,
    output: str | Path | None = None,
    *,
    spark: SparkSession | None = None,
    master: str | None = None,
    previous: str | Path | None = None,
    identities_csv: bool | None = None,
    id_key: bytes | None = None,
    progress: Progress | None = None,
    exit_on_interrupt: bool = False,
) -> SparkResult:
    """Run the whole batch on Spark; with ``output``, write the outputs there.

    Outputs: ``identities.parquet`` (source, record_id, identity_id, created_run: the run
    of a ``--previous`` chain that first gave the id, 1 without ``previous``; one row per
    input record),
    ``golden_records.parquet``, ``pairs.parquet`` (pairs at or above
    ``output.pairs_min_probability`` with both records' keys), ``model.json``,
    ``summary.json`` (on a ``local`` master with each stage's CPU seconds and peak memory of
    the driver, its JVM and its Python workers: ``progress.add_stage_figures``) and, with
    ``identities_csv`` (default: the config's ``spark.identities_csv``), ``identities.csv``.
    A run that finds no candidate pairs writes no ``model.json`` and removes an earlier
    one there (``paths.remove_stale_output``). ``previous``: a previous
    run's identities (.csv or .parquet) whose ids are kept. ``id_key``: the identity key
    (``identity.batch_key``); without one, the process key (names stable within the process).
    ``exit_on_interrupt``: see ``session.get_session`` (the CLI's batch run).
    Raises ConfigError/InputError as the local engine does.
    """
    say = progress or (lambda _msg: None)
    key = id_key or process_key()
    check_source_paths(config)  # before Spark starts: a missing file is known in a second
    if output is not None:
        with_csv = config.spark.identities_csv if identities_csv is None else identities_csv
        check_spark_run_output(output, with_csv)
    if spark is None:
        settings = config.spark
        spark = get_session(
            master or settings.master,
            shuffle_partitions=settings.shuffle_partitions,
            conf=settings.conf,
            exit_on_interrupt=exit_on_interrupt,
        )
    partitions = _size_shuffle_partitions(spark, config)
    # a local master's JVM and its Python workers are this process's descendants: summary.json
    # gets the local engine's CPU and memory figures (a cluster's executors are elsewhere)
    memory = (
        StageMemory(tree_every=_JVM_TREE_EVERY) if single_jvm(spark.sparkContext.master) else None
    )

    def stage(name: str) -> None:
        _job_group(spark, name)
        if memory is not None:
            memory.stage(name)

    timings: dict[str, float] = {}
    comparisons = build_comparisons(config.comparison_specs())
    # A saved model is checked before any Spark work: wrong levels would mis-score every pair.
    saved_model = FellegiSunterModel.load(config.model.load) if config.model.load else None
    if saved_model is not None:
        check_model_levels(saved_model, comparisons, source=str(config.model.load))
    prev_table = _read_previous(spark, previous) if previous is not None else None

    t = time.perf_counter()
    stage("read")
    say("reading sources with Spark")
    rejected = RejectedRows() if config.run.bad_rows is not None else None
    parsed: list[DataFrame] = []
    try:
        raw = read_sources_spark(spark, config, rejected, parsed)
    except BaseException:
        for frame in parsed:
            frame.unpersist()
        raise
    finally:
        # written even when a source is refused afterwards, as the local engine writes it
        if rejected is not None:
            rejected.write(config.run.bad_rows)
    raw, per_source = number_rows(raw)  # checkpointed: the parsed files are no longer read
    sources = config.sources.values()
    empty = [empty_source_error(c, rejected) for c in sources if c.name not in per_source]
    if empty:  # as the local reader: a source with no records is an upstream failure
        for frame in parsed:
            frame.unpersist()
        raise sources_error(empty)
    for frame in parsed:
        frame.unpersist()
    n = sum(per_source.values())
    timings["read"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("standardize")
    say(f"standardizing {n:,} records")
    records, bool_cols = standardize_spark(raw, config)
    records = records.localCheckpoint()
    timings["standardize"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("block")
    say("blocking")
    keys = blocking_keys_spark(records, config.blocking)
    blocking_rows: list[dict] = []
    pairs, rule_names = block_spark(
        keys.localCheckpoint(), config, buckets=partitions, report=blocking_rows
    )
    # pairs found first by each rule, for the summary
    pairs, per_rule = checkpoint_counting(
        pairs, **{str(i): F.col(_RULE_INDEX) == i for i in range(len(rule_names))}
    )
    timings["block"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("compare")
    value_cols = _comparison_columns(comparisons, records)
    prepared, tf_cols = _with_tf(
        records.select(schema.ROW, schema.SOURCE, *value_cols), config, comparisons
    )
    prepared = partition_by_row(prepared, partitions)

    vectors, counted = checkpoint_counting(
        compare_spark(pairs, prepared, comparisons, value_cols, tf_cols, bool_cols),
        pairs=F.lit(True),
    )
    n_pairs = counted["pairs"]
    say(f"compared {n_pairs:,} pairs")
    timings["compare"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("train")
    say("training model")
    model = saved_model
    if model is None:

        def u_vectors(random_pairs: pd.DataFrame) -> pd.DataFrame:
            return random_pair_vectors(
                prepared,
                random_pairs,
                config.blocking.link_type,
                comparisons,
                value_cols,
                tf_cols,
                bool_cols,
            )

        model = train_spark(vectors, n, comparisons, config, u_vectors, tf_cols)
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("score")
    say("scoring")
    rule_map = spark.createDataFrame(
        pd.DataFrame(
            {_RULE_INDEX: np.arange(len(rule_names), dtype=np.int16), schema.RULE: rule_names}
        )
    )
    scored = score_spark(vectors, model, tf_cols)
    scored, matched = checkpoint_counting(
        scored.join(F.broadcast(rule_map), _RULE_INDEX).drop(_RULE_INDEX),
        matches=F.col(schema.MATCH_PROBABILITY) >= config.clustering.threshold,
    )
    timings["score"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("cluster")
    say("clustering")
    # without adaptive execution each query below is one Spark job, not one per shuffle:
    # on small runs the jobs' fixed costs, not the rows, were most of this stage (52 of a
    # 600-record run's 112 jobs). From ADAPTIVE_CLUSTER_MIN records on, adaptive execution's
    # coalesced partitions and broadcast joins cost less than its extra jobs (cluster stage
    # CPU -30% at 48,906 records, wall 45 -> 29 s at 299,428: docs/national-scale.md); the
    # components rounds keep it off in any case
    small = n < ADAPTIVE_CLUSTER_MIN
    with adaptive_off(spark) if small else contextlib.nullcontext():
        labels, rounds = cluster_spark(
            records, hold_out_siblings_spark(records, scored), config, buckets=partitions
        )
        identities = identity_ids_spark(records, labels, key)
        if prev_table is not None:
            identities = stable_ids_spark(spark, identities, prev_table, key)
        else:
            # the first run of a chain of --previous runs: its ids were created in run 1
            identities = identities.withColumn(schema.CREATED_RUN, F.lit(1).cast("long"))
        identities = identities.localCheckpoint()
    timings["cluster"] = time.perf_counter() - t

    t = time.perf_counter()
    stage("merge")
    say("building golden records")
    golden = golden_spark(records, identities, config, bool_cols, buckets=partitions)
    golden = golden.localCheckpoint()
    timings["merge"] = time.perf_counter() - t

    counts = {
        "records_per_source": per_source,
        "candidate_pairs": n_pairs,
        "pairs_per_rule": {name: per_rule[str(i)] for i, name in enumerate(rule_names)},
        "matches": matched["matches"],
    }
    summary, sizes = _summary(identities, n, counts)
    # predicted pairs and refinement per rule, as the local engine's summary gives them
    summary["blocking"] = {
        r["rule"]: {k: v for k, v in r.items() if k != "rule"} for r in blocking_rows
    }
    summary["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    # rows set aside (run.bad_rows) are counted, as the local engine counts them
    summary["bad_rows"] = len(rejected) if rejected is not None else 0
    summary["bad_rows_per_source"] = rejected.counts() if rejected is not None else {}
    if config.run.bad_rows is not None:
        summary["bad_rows_file"] = config.run.bad_rows
    # what only a Spark run has, after the keys both engines give
    summary["engine"] = "spark"
    summary["connected_component_rounds"] = rounds
    result = SparkResult(
        records=records,
        pairs=scored,
        identities=identities.select(
            schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID, schema.CREATED_RUN
        ),
        golden=golden,
        model=model,
        comparisons=comparisons,
        summary=summary,
        cluster_sizes=sizes,
    )
    if output is not None:
        stage("write")
        say("writing outputs")
        if identities_csv is None:
            identities_csv = config.spark.identities_csv
        result.outputs = write_spark_outputs(
            result, output, config, identities_csv=identities_csv, report=memory
        )
    elif memory is not None:
        add_stage_figures(summary, memory)
    if memory is not None:
        memory.stage("done")
        memory.close()
    return result


# Bytes of source files per shuffle partition when none is configured: about 100k records of
# CSV, whose standardized rows and candidate pairs then make shuffle partitions of 100-200 MB
_BYTES_PER_PARTITION = 16 << 20


def _size_shuffle_partitions(spark: SparkSession, config: RunConfig) -> int:
    """Return ``spark.sql.shuffle.partitions`` for this run, sized from the sources' bytes
    when neither the config (``spark.shuffle_partitions``) nor the session's builder set it.

    Spark's default, 200, suits gigabytes: on a few thousand records it makes each stage 200
    tasks of a few rows, each a Python call, and a small run takes minutes. At least one
    partition per core (``defaultParallelism``); AQE (on in ``get_session``) coalesces
    further where a shuffle turns out smaller.
    """
    if config.spark.shuffle_partitions is not None or spark.sparkContext.getConf().contains(
        "spark.sql.shuffle.partitions"
    ):
        return int(spark.conf.get("spark.sql.shuffle.partitions"))
    size = 0
    for cfg in config.sources.values():
        path = Path(cfg.path)
        files = path.rglob("*") if path.is_dir() else [path]
        size += sum(f.stat().st_size for f in files if f.is_file())
    partitions = max(spark.sparkContext.defaultParallelism, -(-size // _BYTES_PER_PARTITION))
    spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
    logger.info("%d shuffle partitions for %.1f MB of sources", partitions, size / 1e6)
    return partitions


_OBSERVATIONS = itertools.count()


def checkpoint_counting(frame: DataFrame, **conditions: Column) -> tuple[DataFrame, dict[str, int]]:
    """``frame.localCheckpoint()`` and, per keyword, the number of its rows where that
    condition holds (``F.lit(True)``: every row), counted while the checkpoint runs.

    A ``count()`` afterwards is two or three Spark jobs of its own (a job per shuffle with
    adaptive execution), each with a fixed planning and scheduling cost; an ``Observation``
    (Spark's ``Dataset.observe``) costs none. The counts are exact: ``frame``'s last
    operator is in the checkpoint job's final stage, whose tasks' metrics Spark merges once
    per partition (a retried or re-run task is not counted twice).
    """
    observation = Observation(f"linkage_count_{next(_OBSERVATIONS)}")
    metrics = [F.count(F.when(cond, 1)).alias(name) for name, cond in conditions.items()]
    kept = frame.observe(observation, *metrics).localCheckpoint()
    return kept, {name: int(observation.get[name]) for name in conditions}


def _job_group(spark: SparkSession, name: str) -> None:
    """Tag the following Spark jobs with the engine stage (the job group in Spark's UI/REST API)."""
    spark.sparkContext.setJobGroup(name, f"linkage {name}")


def _read_previous(spark: SparkSession, path: str | Path) -> pd.DataFrame | DataFrame:
    path = Path(path)
    if not path.exists():
        raise InputError("previous identities not found", path=str(path))
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        frame = spark.read.parquet(str(path))
    missing = [
        c for c in (schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID) if c not in frame.columns
    ]
    if missing:
        raise InputError(f"previous identities lack column(s) {missing}", path=str(path))
    return frame


def _summary(identities: DataFrame, n: int, counts: dict) -> tuple[dict, pd.DataFrame]:
    """The local engine's summary (``pipeline.link_records``), key for key and in its order,
    and the cluster-size distribution (``cluster.size_distribution``) it is computed from.
    ``counts``: records_per_source, candidate_pairs, pairs_per_rule (every rule, 0 for one
    that found no pair first, as the local summary lists them) and matches, counted as the
    stages ran (``checkpoint_counting``)."""
    # one row per cluster size: small whatever the number of records
    by_size = (
        identities.groupBy(schema.IDENTITY_ID)
        .count()
        .groupBy(F.col("count").alias("size"))
        .agg(F.count("*").alias("clusters"))
        .toPandas()
    )
    sizes = size_distribution(by_size["size"].to_numpy(), by_size["clusters"].to_numpy())
    stats = stats_of_sizes(sizes)
    summary = {
        "records": int(n),
        # sources by name, as the local engine's records are ordered
        "records_per_source": dict(sorted(counts["records_per_source"].items())),
        "candidate_pairs": int(counts["candidate_pairs"]),
        "pairs_per_rule": counts["pairs_per_rule"],
        "blocking": {},
        "matches": int(counts["matches"]),
        "identities": stats["clusters"],
        "cluster_stats": stats,
    }
    return summary, sizes


def _write_parquet_dir(frame: DataFrame, path: Path) -> Path:
    """Write a Parquet folder next to ``path`` and move it into place in one step."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    frame.write.mode("overwrite").parquet(str(tmp))
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)
    return path


def write_spark_outputs(
    result: SparkResult,
    output: str | Path,
    config: RunConfig,
    *,
    identities_csv: bool = True,
    report: StageMemory | None = None,
) -> dict[str, Path]:
    """Write the outputs of :func:`run_spark` (see there) atomically; return their paths.

    ``report``: the run's CPU and memory figures per stage, added to summary.json
    (``progress.add_stage_figures``; the write stage's stop before summary.json is written).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "identities_parquet": _write_parquet_dir(result.identities, output / "identities.parquet"),
        "golden": _write_parquet_dir(result.golden, output / "golden_records.parquet"),
    }
    keys = result.records.select(schema.ROW, schema.SOURCE, schema.RECORD_ID)
    kept = result.pairs.where(
        F.col(schema.MATCH_PROBABILITY) >= config.output.pairs_min_probability
    )
    with_keys = kept.join(
        keys.select(
            F.col(schema.ROW).alias(schema.ROW_L),
            F.col(schema.SOURCE).alias("source_l"),
            F.col(schema.RECORD_ID).alias("record_id_l"),
        ),
        schema.ROW_L,
    ).join(
        keys.select(
            F.col(schema.ROW).alias(schema.ROW_R),
            F.col(schema.SOURCE).alias("source_r"),
            F.col(schema.RECORD_ID).alias("record_id_r"),
        ),
        schema.ROW_R,
    )
    front = ["source_l", "record_id_l", "source_r", "record_id_r"]
    with_keys = with_keys.select(*front, *[c for c in result.pairs.columns])
    paths["pairs"] = _write_parquet_dir(with_keys, output / "pairs.parquet")
    if result.summary.get("candidate_pairs"):
        paths["model"] = result.model.save(output / "model.json")
    else:
        remove_stale_output(output / "model.json", keep=[config.model.load])
    if result.cluster_sizes is not None:
        paths["cluster_sizes"] = write_csv(result.cluster_sizes, output / "cluster_sizes.csv")
    if identities_csv:
        paths["identities"] = atomic_write(
            output / "identities.csv", lambda p: _stream_csv(result.identities, p)
        )
    if report is not None:
        add_stage_figures(result.summary, report)
    text = json.dumps(result.summary, ensure_ascii=False, indent=2)
    paths["summary"] = atomic_write(
        output / "summary.json", lambda p: p.write_text(text, encoding="utf-8")
    )
    return paths


def _stream_csv(frame: DataFrame, path: Path, chunk: int = 200_000) -> None:
    """Write a DataFrame as one UTF-8 CSV on the driver, a chunk of rows at a time."""
    ordered = frame.orderBy(schema.SOURCE, schema.RECORD_ID)
    columns = frame.columns
    with open(path, "w", encoding="utf-8", newline="") as handle:
        pd.DataFrame(columns=columns).to_csv(handle, index=False)
        buffer = []
        for row in ordered.toLocalIterator():
            buffer.append(tuple(row))
            if len(buffer) >= chunk:
                _write_csv_chunk(pd.DataFrame(buffer, columns=columns), handle)
                buffer = []
        if buffer:
            _write_csv_chunk(pd.DataFrame(buffer, columns=columns), handle)


def _write_csv_chunk(frame: pd.DataFrame, handle: TextIO) -> None:
    """Append rows to a CSV meant for people as ``io.write_csv`` writes one: formula cells
    neutralized (``io.neutralize_formulas``; a record id such as ``=1+1`` comes as a
    registry sent it)."""
    neutralize_formulas(frame).to_csv(handle, index=False, header=False)
