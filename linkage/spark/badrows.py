"""Line numbers of a source's bad rows, found on the driver once Spark has seen a problem.

Spark reads a file in splits and cannot say on which line of the file a row started, so the
Spark reader counts the bad rows (rows with the wrong number of fields, without a record id,
with a duplicate record id) and, when there are any, this module streams the local file once
on the driver with Python's csv module (as ``linkage.io``'s exact path does) to name every
bad line: one error lists every kind of problem, as the local reader's messages word them.
With ``run.bad_rows`` set, the same scan keeps each bad row as it was in the file, and
``reject`` sets them aside as the local reader does. Nothing here imports pyspark.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from linkage.config import SourceConfig
from linkage.errors import InputError

# the local reader's wording, so that both engines name bad rows alike
from linkage.io import _SCIENTIFIC, RejectedRows, _field_count_problem, _listed, _problem_list

# ``io._bad_record_ids``' rule for ids that went through a float, for Spark's ``rlike``
SCIENTIFIC_PATTERN = f"^(?:{_SCIENTIFIC.pattern})$"
FLOATED_REASON = "record id in scientific notation (digits lost)"

# Duplicate id values whose lines are looked up on the driver.
MAX_DUPLICATE_VALUES = 200


@dataclass
class BadRows:
    """Bad rows of one file: (line, field count) of rows with the wrong field count, lines
    of rows without a record id, the lines of each duplicate record id value and, when the
    scan keeps them, each bad row's text by line."""

    expected_fields: int = 0
    wrong_fields: list[tuple[int, int]] = field(default_factory=list)
    empty_id: list[int] = field(default_factory=list)
    duplicates: dict[str, list[int]] = field(default_factory=dict)
    raw: dict[int, str] = field(default_factory=dict)
    # (line, value) of ids in scientific notation
    floated: list[tuple[int, str]] = field(default_factory=list)

    def count(self) -> int:
        """Bad rows in all."""
        return (
            len(self.wrong_fields)
            + len(self.empty_id)
            + len(self.floated)
            + sum(len(at) for at in self.duplicates.values())
        )

    def __bool__(self) -> bool:
        return bool(self.wrong_fields or self.empty_id or self.floated or self.duplicates)


def bad_rows_message(
    found: BadRows, record_id: str, n_duplicate_values: int | None = None, unit: str = "line"
) -> str:
    """One message naming every bad line (``unit``: "row" for Parquet row numbers), in the
    local reader's words (``io._problem_list``); ``n_duplicate_values`` counts them all
    where only some were looked up."""
    problems = []
    if found.wrong_fields:
        expected = found.expected_fields
        problems.append(
            _field_count_problem([(line, "", n, expected) for line, n in found.wrong_fields])
        )
    if found.empty_id:
        problems.append(
            f"column '{record_id}': {len(found.empty_id)} row(s) have no record id "
            f"({_listed(unit, found.empty_id)})"
        )
    if found.floated:
        lines = [line for line, _ in found.floated]
        problems.append(
            f"column '{record_id}': {len(lines)} record id(s) in scientific notation, "
            f"e.g. {found.floated[0][1]!r} ({_listed(unit, lines)}): the ids went "
            "through a spreadsheet number and lost digits; store the column as text in "
            "the source system and export again"
        )
    if found.duplicates:
        count = n_duplicate_values or len(found.duplicates)
        values = list(found.duplicates)[:5]
        lines = sorted(line for at in found.duplicates.values() for line in at)
        problems.append(
            f"column '{record_id}': {count} duplicate record id value(s), e.g. "
            f"{', '.join(map(repr, values))} ({_listed(unit, lines)})"
        )
    return (
        _problem_list(problems)
        + "\n  (fix them at the source, or set them aside with --bad-rows FILE)"
    )


def reject(found: BadRows, cfg: SourceConfig, rejected: RejectedRows) -> None:
    """Set ``found``'s rows aside in ``rejected`` with the local reader's reasons
    (``io._checked``): wrong field count, no record id, duplicate record id (every row of a
    duplicated value, with the lines of that value)."""
    path = str(cfg.path)
    unit = "row" if Path(path).suffix.lower() == ".parquet" else "line"
    expected = found.expected_fields
    for line, n in found.wrong_fields:
        reason = f"wrong number of fields: {n}, expected {expected}"
        rejected.add(cfg.name, path, line, reason, found.raw.get(line, ""))
    for line in found.empty_id:
        rejected.add(cfg.name, path, line, "no record id", found.raw.get(line, ""))
    for line, _ in found.floated:
        rejected.add(cfg.name, path, line, FLOATED_REASON, found.raw.get(line, ""))
    for value, lines in found.duplicates.items():
        reason = f"duplicate record id {value!r} ({_listed(unit, lines)})"
        for line in lines:
            rejected.add(cfg.name, path, line, reason, found.raw.get(line, ""))


class _Tape:
    """A line iterator that keeps the lines the csv module has taken since the last ``take``:
    the text of one record, as the local reader's bad-rows file holds it."""

    def __init__(self, handle: Iterable[str]):
        self.lines = iter(handle)
        self.taken: list[str] = []

    def __iter__(self) -> _Tape:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        return line

    def take(self) -> str:
        text = "".join(self.taken)
        self.taken = []
        # the record's lines without the last line break (``io._CsvLines.raw``)
        return text.removesuffix("\n").rstrip("\r")


def _records(handle: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str], str]]:
    """Yield (first line number, fields, text) of each non-empty CSV record of a stream."""
    tape = _Tape(handle)
    reader = csv.reader(tape, delimiter=delimiter, strict=True)
    line = 1
    for row in reader:
        start, line = line, 1 + reader.line_num
        text = tape.take()
        if row:
            yield start, row, text


def scan_csv(
    path: str | Path,
    cfg: SourceConfig,
    encoding: str,
    duplicate_values: Iterable[str] = (),
    keep_text: bool = False,
) -> BadRows:
    """Stream a CSV file once and return its bad rows with their line numbers (and, with
    ``keep_text``, their text, for the bad-rows file).

    ``encoding``: a Python codec name. The expected field count is the header's, or the
    first data line's where that only adds empty trailing fields (as ``io._csv_layout``).
    ``duplicate_values``: record id values already known to be duplicated (found by Spark;
    looking every id up here would hold them all in the driver's memory). Values are
    trimmed before they are compared, as both readers trim. Raises InputError naming the
    file and line for text the csv module cannot parse (an open quote).
    """
    wanted = {str(v) for v in duplicate_values}
    found = BadRows()
    with open(path, encoding=encoding, errors="replace", newline="") as handle:
        rows = _records(handle, cfg.delimiter)
        try:
            header = next(rows, None)
            if header is None:
                return found
            names = [h.strip().removeprefix("\ufeff").strip() for h in header[1]]
            id_index = names.index(cfg.record_id) if cfg.record_id in names else None
            expected = len(names)
            first = True
            for line, row, text in rows:
                if not any(f.strip() for f in row):
                    continue  # a blank line carries no record
                if first and len(row) != expected:
                    extra = row[expected:] if len(row) > expected else names[len(row) :]
                    if not any(f.strip() for f in extra):
                        # lines (or a header) ending in a delimiter: an unnamed empty column
                        expected = len(row)
                first = False
                if len(row) != expected:
                    found.wrong_fields.append((line, len(row)))
                elif id_index is None:
                    continue
                elif not row[id_index].strip():
                    found.empty_id.append(line)
                elif _SCIENTIFIC.fullmatch(row[id_index].strip()):
                    found.floated.append((line, row[id_index].strip()))
                elif row[id_index].strip() in wanted:
                    found.duplicates.setdefault(row[id_index].strip(), []).append(line)
                else:
                    continue
                if keep_text:
                    found.raw[line] = text
        except csv.Error as exc:
            raise InputError(
                f"CSV cannot be parsed ({exc}); a quote may be left open", path=str(path)
            ) from None
    found.expected_fields = expected
    return found


def scan_ids(
    ids: Iterable[str | None], duplicate_values: Iterable[str] = (), first_row: int = 0
) -> BadRows:
    """Bad rows of a column of record ids given in file order (Parquet: row numbers from
    ``first_row``; the local reader numbers Parquet rows from 1)."""
    wanted = {str(v) for v in duplicate_values}
    found = BadRows()
    for row, value in enumerate(ids, start=first_row):
        text = None if value is None else str(value).strip()
        if not text:
            found.empty_id.append(row)
        elif _SCIENTIFIC.fullmatch(text):
            found.floated.append((row, text))
        elif text in wanted:
            found.duplicates.setdefault(text, []).append(row)
    return found
