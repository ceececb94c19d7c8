"""Accuracy of a clustering against known identities: pairwise, B-cubed and per-tag recall.

Every score comes from the contingency table of (true, predicted) labels, never from
enumerating pairs. Imports only ``linkage.schema`` and ``linkage.errors`` from the package.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from os import PathLike
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from linkage import schema
from linkage.errors import InputError
from linkage.spreadsheet import restore_formulas

logger = logging.getLogger(__name__)

# Labels: anything pandas turns into one Series, e.g. a list, an array or a Series.
Labels = pd.Series | np.ndarray | Sequence[Hashable]

_KEYS = [schema.SOURCE, schema.RECORD_ID]
_EXAMPLES = 5


class _Contingency(NamedTuple):
    """Non-empty cells of the (true, predicted) contingency table and the margins."""

    cell: np.ndarray  # n_ij: records in true cluster j and predicted cluster i
    cell_true: np.ndarray  # j of each cell
    cell_pred: np.ndarray  # i of each cell
    true_size: np.ndarray  # b_j
    pred_size: np.ndarray  # a_i


def pairwise_scores(true_labels: Labels, pred_labels: Labels) -> dict:
    """Return pairwise precision, recall, f1 and the pair counts behind them."""
    return _pairwise(_contingency(true_labels, pred_labels))


def bcubed_scores(true_labels: Labels, pred_labels: Labels) -> dict:
    """Return B-cubed precision, recall and f1 (per-record scores averaged over records)."""
    return _bcubed(_contingency(true_labels, pred_labels))


def evaluate(truth: pd.DataFrame, predicted: pd.DataFrame) -> dict:
    """Score predicted identities against true persons, joined on (source, record_id)."""
    joined = _join(truth, predicted)
    table = _contingency(joined[schema.PERSON_ID], joined[schema.IDENTITY_ID])
    logger.info(
        "%d records: %d true persons, %d predicted identities",
        len(joined),
        len(table.true_size),
        len(table.pred_size),
    )
    return {
        "records": len(joined),
        "true_persons": len(table.true_size),
        "predicted_identities": len(table.pred_size),
        "pairwise": _pairwise(table),
        "bcubed": _bcubed(table),
    }


def _pairwise(table: _Contingency) -> dict:
    """Pairwise scores: TP = sum C(n_ij,2), predicted = sum C(a_i,2), true = sum C(b_j,2)."""
    tp = _pairs(table.cell)
    true_pairs = _pairs(table.true_size)
    predicted_pairs = _pairs(table.pred_size)
    # An empty prediction has no false pairs, an empty truth nothing to miss.
    precision = tp / predicted_pairs if predicted_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "true_pairs": true_pairs,
        "predicted_pairs": predicted_pairs,
        "true_positive_pairs": tp,
    }


def _bcubed(table: _Contingency) -> dict:
    """B-cubed scores: each of the n_ij records of a cell has precision n_ij / a_i."""
    n = int(table.cell.sum())
    if n == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    square = table.cell.astype(np.float64) ** 2
    precision = float((square / table.pred_size[table.cell_pred]).sum() / n)
    recall = float((square / table.true_size[table.cell_true]).sum() / n)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall)}


def recall_by_tag(
    truth: pd.DataFrame,
    predicted: pd.DataFrame,
    tag_column: str = schema.CORRUPTIONS,
    sep: str = "|",
) -> pd.DataFrame:
    """Return pairwise recall over true pairs touching a tagged record, one row per tag."""
    columns = ["tag", "records", "true_pairs", "found_pairs", "recall"]
    if tag_column not in truth.columns:
        raise InputError("truth table lacks the tag column", column=tag_column)
    joined = _join(truth, predicted, extra=[tag_column])
    true_code, _, cell_code, _ = _codes(joined[schema.PERSON_ID], joined[schema.IDENTITY_ID])
    true_size = np.bincount(true_code)
    cell_size = np.bincount(cell_code)
    # Tag strings repeat heavily: split each distinct string once.
    value_code, values = pd.factorize(joined[tag_column].fillna("").astype(str))
    value_tags = [{t.strip() for t in v.split(sep)} - {""} for v in values]
    rows = []
    for tag in sorted(set().union(*value_tags)):
        holders = np.isin(value_code, [i for i, tags in enumerate(value_tags) if tag in tags])
        tagged_true = np.bincount(true_code[holders], minlength=len(true_size))
        tagged_cell = np.bincount(cell_code[holders], minlength=len(cell_size))
        rows.append(
            (
                tag,
                int(holders.sum()),
                int(_touching(true_size, tagged_true).sum()),
                int(_touching(cell_size, tagged_cell).sum()),
            )
        )
    out = pd.DataFrame(rows, columns=columns[:-1]).astype(
        {"records": np.int64, "true_pairs": np.int64, "found_pairs": np.int64}
    )
    # No true pair touches the tag: recall is undefined, not perfect.
    out["recall"] = out["found_pairs"] / out["true_pairs"].where(out["true_pairs"] > 0)
    return out


def evaluate_files(truth_path: str | PathLike, pred_path: str | PathLike) -> dict:
    """Read truth and predicted identities and return ``evaluate`` of them.

    Each path is a CSV (read as text), a Parquet file or a folder of Parquet part files (a
    Spark run's ``identities.parquet``). Raises InputError naming a path that is missing,
    a folder without Parquet parts, or not readable as its suffix says.
    """
    return evaluate(*read_tables(truth_path, pred_path))


def read_tables(
    truth_path: str | PathLike, pred_path: str | PathLike
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the truth (source, record_id, person_id and any tag column) and the predicted
    identities (source, record_id, identity_id) as :func:`evaluate_files` does, each once,
    for :func:`evaluate` and :func:`recall_by_tag` both. Raises InputError as
    :func:`evaluate_files` does; a wrong ``pred_path`` before the truth is read."""
    _is_parquet(pred_path)
    return _read_table(truth_path), _read_table(pred_path)


def recall_by_tag_files(
    truth_path: str | PathLike, pred_path: str | PathLike, tag_column: str = schema.CORRUPTIONS
) -> pd.DataFrame | None:
    """Return ``recall_by_tag`` of two files (as ``evaluate_files`` reads them), or None when
    the truth has no tag column."""
    _is_parquet(pred_path)
    truth = _read_table(truth_path)
    if tag_column not in truth.columns:
        return None
    return recall_by_tag(truth, _read_table(pred_path), tag_column)


def format_scores(scores: dict) -> str:
    """Render the result of ``evaluate`` as a few aligned lines of text."""
    lines = [
        f"records {scores['records']:,}: {scores['true_persons']:,} true persons, "
        f"{scores['predicted_identities']:,} predicted identities"
    ]
    pairwise = scores["pairwise"]
    lines.append(
        f"pairwise  precision {pairwise['precision']:.4f}  recall {pairwise['recall']:.4f}  "
        f"f1 {pairwise['f1']:.4f}  ({pairwise['true_positive_pairs']:,} of "
        f"{pairwise['true_pairs']:,} true pairs found, {pairwise['predicted_pairs']:,} predicted)"
    )
    bcubed = scores["bcubed"]
    lines.append(
        f"b-cubed   precision {bcubed['precision']:.4f}  recall {bcubed['recall']:.4f}  "
        f"f1 {bcubed['f1']:.4f}"
    )
    return "\n".join(lines)


_EXPECTED = "expected a .csv file, a .parquet file or a folder of .parquet part files"


def _read_table(path: str | PathLike) -> pd.DataFrame:
    """Read a CSV with every column as text (record ids keep their leading zeros), or a
    Parquet file or folder of part files as written (``_key_codes`` compares keys as text).

    Cells the package escaped against spreadsheet formulas get their value back (CSV only:
    Parquet files are written raw).
    """
    if _is_parquet(path):
        return _read_parquet(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"not a readable UTF-8 CSV ({exc}); {_EXPECTED}", path=str(path)) from None
    frame = restore_formulas(frame)
    frame.attrs["path"] = str(path)  # named in the errors of _join
    return frame


def _is_parquet(path: str | PathLike) -> bool:
    """Whether ``path`` is read as Parquet (a .parquet file or a folder of part files) or as
    a CSV; raises InputError for a missing path or a folder without Parquet part files."""
    where = Path(path)
    if where.is_dir():
        # a Spark run writes its tables as folders of part files (beside _SUCCESS, .crc)
        if not any(p.name[0] not in "._" for p in where.rglob("*.parquet")):
            raise InputError(f"is a folder without Parquet part files; {_EXPECTED}", path=str(path))
        return True
    if not where.exists():
        raise InputError(f"file not found; {_EXPECTED}", path=str(path))
    return where.suffix.lower() == ".parquet"


def _read_parquet(path: str | PathLike) -> pd.DataFrame:
    """A Parquet file, or a folder of part files read as one table."""
    import pyarrow as pa

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"not readable as Parquet ({exc}); {_EXPECTED}", path=str(path)) from None
    frame.attrs["path"] = str(path)
    return frame


def _join(
    truth: pd.DataFrame, predicted: pd.DataFrame, extra: list[str] | None = None
) -> pd.DataFrame:
    """Align truth and predictions on (source, record_id); raise if the record sets differ."""
    extra = extra or []
    for name, table, label in (
        ("truth", truth, schema.PERSON_ID),
        ("predicted", predicted, schema.IDENTITY_ID),
    ):
        where = table.attrs.get("path")
        for column in [*_KEYS, label]:
            if column not in table.columns:
                raise InputError(
                    f"{name} table lacks a required column: it needs "
                    f"{', '.join([*_KEYS, label])}, it has {', '.join(map(str, table.columns))}",
                    path=where,
                    column=column,
                )
        for column in (*_KEYS, label):
            # CSVs read as text hold "" where a value is missing.
            empty = int((table[column].isna() | (table[column] == "")).sum())
            if empty:
                raise InputError(
                    f"{name} table has {empty} empty values", path=where, column=column
                )
    truth_key, pred_key = _key_codes(truth, predicted)
    for name, table, key in (("truth", truth, truth_key), ("predicted", predicted, pred_key)):
        dup = pd.Series(key).duplicated(keep=False).to_numpy()
        if dup.any():
            raise InputError(
                f"{name} table lists {int(dup.sum())} rows under repeated (source, record_id), "
                f"e.g. {_examples(table[dup])}",
                path=table.attrs.get("path"),
            )
    position = pd.Index(pred_key).get_indexer(truth_key)
    missing = position < 0
    extra_rows = pd.Index(truth_key).get_indexer(pred_key) < 0
    if missing.any() or extra_rows.any():
        problems = []
        if missing.any():
            problems.append(
                f"{int(missing.sum())} truth records have no prediction, "
                f"e.g. {_examples(truth[missing])}"
            )
        if extra_rows.any():
            problems.append(
                f"{int(extra_rows.sum())} predicted records are not in the truth, "
                f"e.g. {_examples(predicted[extra_rows])}"
            )
        files = [f"{n} {t.attrs['path']}" for n, t in (("truth", truth), ("predicted", predicted))
                 if t.attrs.get("path")]  # fmt: skip
        raise InputError("; ".join(problems) + (f" ({', '.join(files)})" if files else ""))
    joined = truth[[*_KEYS, schema.PERSON_ID, *extra]].reset_index(drop=True)
    joined[schema.IDENTITY_ID] = predicted[schema.IDENTITY_ID].to_numpy()[position]
    return joined


def _key_codes(truth: pd.DataFrame, predicted: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Return one int64 per row of each table for its (source, record_id) key."""
    codes = []
    for column in _KEYS:
        both = pd.concat([truth[column], predicted[column]], ignore_index=True)
        code, uniques = pd.factorize(both)
        # Compare as text, once per distinct value, so 7 read as a number matches "7".
        if pd.api.types.infer_dtype(uniques, skipna=False) != "string":
            code = pd.factorize(pd.Index(uniques).astype(str))[0][code]
        codes.append(code.astype(np.int64))
    key = codes[0] * (int(codes[1].max(initial=0)) + 1) + codes[1]
    return key[: len(truth)], key[len(truth) :]


def _examples(table: pd.DataFrame) -> str:
    """Format a few (source, record_id) keys for an error message."""
    head = table[_KEYS].head(_EXAMPLES)
    return ", ".join(
        f"{s}/{r}" for s, r in zip(head[schema.SOURCE], head[schema.RECORD_ID], strict=True)
    )


def _codes(
    true_labels: Labels, pred_labels: Labels
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return integer codes of true labels, predicted labels and (true, predicted) cells.

    The fourth array maps each cell code to its combined value true * width + predicted.
    """
    true = pd.Series(true_labels).to_numpy()
    pred = pd.Series(pred_labels).to_numpy()
    if len(true) != len(pred):
        raise InputError(f"{len(true)} true labels but {len(pred)} predicted labels")
    true_code = pd.factorize(true)[0].astype(np.int64)
    pred_code = pd.factorize(pred)[0].astype(np.int64)
    for name, code in (("true", true_code), ("predicted", pred_code)):
        if (code < 0).any():
            raise InputError(f"{int((code < 0).sum())} {name} labels are empty")
    # One int64 per (true, predicted) combination; hashing beats sorting at this size.
    cell_code, combined = pd.factorize(true_code * _width(pred_code) + pred_code)
    return true_code, pred_code, cell_code, combined


def _width(pred_code: np.ndarray) -> int:
    """Multiplier that packs a (true, predicted) code pair into one int64."""
    return int(pred_code.max()) + 1 if len(pred_code) else 1


def _contingency(true_labels: Labels, pred_labels: Labels) -> _Contingency:
    """Build the contingency table of two labelings of the same records."""
    true_code, pred_code, cell_code, combined = _codes(true_labels, pred_labels)
    width = _width(pred_code)
    return _Contingency(
        cell=np.bincount(cell_code, minlength=len(combined)),
        cell_true=combined // width,
        cell_pred=combined % width,
        true_size=np.bincount(true_code),
        pred_size=np.bincount(pred_code),
    )


def _pairs(sizes: np.ndarray) -> int:
    """Return the number of unordered pairs inside groups of the given sizes."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _touching(n: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pairs in a group of n with at least one of its t tagged records."""
    rest = n - t
    return n * (n - 1) // 2 - rest * (rest - 1) // 2


def _f1(precision: float, recall: float) -> float:
    """Harmonic mean, 0 when both are 0."""
    total = precision + recall
    return float(2 * precision * recall / total) if total else 0.0
