"""Run a normalizer once per distinct value and map the result back to every row.

Registries repeat names, dates and addresses heavily, so this is the main speed lever.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import pickle
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from linkage.tables import _is_text_dtype, _take_text, shared_text, text_columns

# Distinct values below this are standardized in this process: starting a worker costs
# ~1-2 s (a fresh interpreter imports pandas and the name tables), 20,000-50,000 names' work.
PARALLEL_MIN_DISTINCT = 50_000

# Share of a large field's distinct values the worker standardizes; this process takes the
# rest. This process also factorizes each field, maps the results back to its rows and runs
# the cross-field checks, so an even split left the worker waiting on it.
WORKER_SHARE = 0.5

logger = logging.getLogger(__name__)


class _Worker:
    """One ``python -m linkage.standardize._worker`` child that runs pickled calls.

    A plain child process (not multiprocessing's spawn or fork): spawn re-imports the
    caller's main script, which breaks user scripts without a ``__main__`` guard, and a
    forked child touches the reference counts of the parent's records table and copies
    its pages. Calls and results travel pickled over the child's stdin and stdout.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.broken = False  # it died once: the rest of the stage runs in this process
        self._writer: threading.Thread | None = None
        self._write_error: BaseException | None = None
        self._discard = 0  # replies of warm-up calls (``warm_up``) still to be read and dropped

    def start(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "linkage.standardize._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )

    def send(self, func: Callable, arg: object) -> None:
        """Start sending ``(func, arg)`` and return at once; ``receive`` gives the reply.

        The call is pickled here, then written to the pipe by a thread: a worker still
        importing the func's module (seconds for the name and address tables) reads nothing
        meanwhile, and a plain ``pickle.dump`` would hold this process until it does instead
        of letting it work on its own half. Pickling here, not in the thread, keeps the
        pickler's transient objects from interleaving with this process's own work (a
        heap left ~35 MB larger for the rest of a 300,000-record run when they did).
        Raises ``OSError`` when the worker cannot start, what pickling raises otherwise.
        """
        self.start()
        self._finish_write()
        payload = pickle.dumps((func, arg), protocol=pickle.HIGHEST_PROTOCOL)
        stdin = self.proc.stdin

        def write() -> None:
            try:
                stdin.write(payload)
                stdin.flush()
            except BaseException as exc:  # raised by receive, in the caller's thread
                self._write_error = exc

        self._writer = threading.Thread(target=write, name="linkage-worker-send", daemon=True)
        self._writer.start()

    def _finish_write(self) -> None:
        """Wait for the call being written; raise what writing it raised (``OSError`` for a
        worker that died)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    def warm(self, modules: Sequence[str]) -> None:
        """Start the worker now and have it import ``modules`` (its reply is dropped), so
        that it is ready when the first call comes. Raises ``OSError`` when it cannot start."""
        self.send(_import_modules, list(modules))
        self._discard += 1

    def receive(self) -> object:
        """The reply to the oldest call not yet answered. Read while a later call may still
        be being written: the worker writes this reply before it reads that call, so waiting
        for the write first would wait for ever. A write's error comes with the next ``send``
        (or as this read's end of file when the worker died)."""
        while self._discard:
            self._discard -= 1
            ok, value = pickle.load(self.proc.stdout)
            if not ok:  # the module fails again where it is used, and is raised there
                logger.debug("worker warm-up failed: %s", value)
        ok, value = pickle.load(self.proc.stdout)
        if not ok:
            raise value
        return value

    def close(self, kill: bool = False) -> None:
        self._discard = 0  # a warm-up's reply dies with its process; a new one owes none
        if self.proc is not None:
            proc, self.proc = self.proc, None
            if kill or (self._writer is not None and self._writer.is_alive()):
                proc.kill()  # a call still being sent: closing its pipe under the writer races
            if self._writer is not None:
                self._writer.join()
                self._writer, self._write_error = None, None
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


_worker: _Worker | None = None


@dataclass
class _Ahead:
    """A field factorized ahead of its ``map_distinct`` call (``send_ahead``), and the
    worker process its share went to (None when it went nowhere)."""

    values: pd.Series
    func: Callable
    codes: np.ndarray
    uniques: pd.Index
    split: int  # this process standardizes distinct[:split], the worker the rest
    proc: subprocess.Popen | None


# Fields sent ahead, in the order of their coming map_distinct calls: the worker answers in
# the order it was asked.
_ahead: deque[_Ahead] = deque()


def _import_modules(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def warm_up(modules: Sequence[str]) -> None:
    """Start the open worker (``worker_process``) now and have it import ``modules``.

    A worker starting at its first field costs that field ~1.5 s of waiting (a fresh
    interpreter importing pandas and the name and region tables); started while this
    process still reads the input files, it is ready when standardizing begins. Nothing
    happens without an open worker; a worker that cannot start is left to the first call.
    """
    worker = _worker
    if worker is None or worker.broken or worker.proc is not None:
        return
    with contextlib.suppress(OSError):  # the first call starts it again, and says why not
        worker.warm(modules)


@contextlib.contextmanager
def worker_process(enabled: bool = True) -> Iterator[None]:
    """While open, ``map_distinct`` hands half of a large distinct set to ONE worker process.

    The calling process works on the other half, so two cores are used; one worker (not a
    pool of n) because each worker holds its own copy of the name and region tables and
    this stage is sized for two-core machines. The worker starts at the first field with
    ``PARALLEL_MIN_DISTINCT`` distinct values. Funcs must be picklable (module-level
    functions or ``functools.partial`` of them). The results equal a run without it.
    """
    global _worker
    if not enabled or _worker is not None:
        yield
        return
    _worker = _Worker()
    try:
        yield
    finally:
        drop_ahead()
        worker, _worker = _worker, None
        worker.close()


def _split(n_distinct: int) -> int:
    """Where ``n_distinct`` values divide between this process (before) and the worker."""
    return n_distinct - int(n_distinct * WORKER_SHARE)


def _send(worker: _Worker, func: Callable, part: list) -> bool:
    """Send ``func(part)`` to the worker; False (and the worker marked broken) when it cannot
    start or has died, so that the caller works here from now on."""
    try:
        worker.send(func, part)
    except OSError as exc:
        logger.warning("standardizing in one process: worker unavailable (%s)", exc)
        worker.broken = True
        worker.close(kill=True)
        return False
    return True


@dataclass
class _Coded:
    """A normalizer's result over distinct values (one row each, ``length`` rows), its text
    columns factorized: ``text`` maps such a column to (codes, distinct values; code -1 for
    null), ``other`` holds the remaining columns as they came; ``columns`` their order.

    What the worker sends back instead of the frame: one pickled object per distinct derived
    value instead of one per row, and this process then maps codes to rows rather than
    factorizing every derived column of the whole field again (``_share_unchanged`` and
    ``text_columns`` over the joined halves were ~2.5 s of a 350,000-name field here while
    the worker waited, measured)."""

    columns: list[str]
    text: dict[str, tuple[np.ndarray, np.ndarray]]
    other: pd.DataFrame
    length: int


def _coded(frame: pd.DataFrame) -> _Coded:
    """``frame``'s text columns (dtype object or a string dtype) factorized by value; a
    column of unhashable values stays in ``other``."""
    text: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rest = []
    for col in frame.columns:
        values = frame[col]
        if values.dtype == object or _is_text_dtype(values.dtype):
            try:
                codes, uniques = pd.factorize(values, use_na_sentinel=True)
            except TypeError:  # unhashable values: kept as they are
                rest.append(col)
                continue
            text[col] = (codes, np.asarray(uniques, dtype=object))
        else:
            rest.append(col)
    other = frame[rest].reset_index(drop=True)
    return _Coded(list(frame.columns), text, other, len(frame))


def _coded_call(func: Callable[[Sequence[str]], pd.DataFrame], values: Sequence) -> _Coded:
    """``_coded(func(values))``: the call the worker runs (module level, so it pickles)."""
    return _coded(func(values))


def _plain(coded: _Coded, col: str) -> pd.Series:
    """One column of ``coded`` as a Series: a text column's objects (None for null)."""
    if col in coded.other.columns:
        return coded.other[col]
    codes, uniques = coded.text[col]
    return pd.Series(_take_text(uniques, codes), dtype=object)


def _join(first: _Coded, second: _Coded) -> _Coded:
    """The rows of ``first`` then ``second`` (results for consecutive parts of the distinct
    values); a text column's codes renumbered over the values of both. Raises ValueError
    when the two have different columns."""
    if first.columns != second.columns:
        raise ValueError("normalizer returned different columns for two parts of its input")
    text: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    other: dict[str, pd.Series] = {}
    for col in first.columns:
        if col in first.text and col in second.text:
            (codes_a, uniques_a), (codes_b, uniques_b) = first.text[col], second.text[col]
            renumber, uniques = pd.factorize(np.concatenate([uniques_a, uniques_b]))
            # code -1 (null) indexes the -1 appended to each part's renumbering
            a = np.append(renumber[: len(uniques_a)], -1)[codes_a]
            b = np.append(renumber[len(uniques_a) :], -1)[codes_b]
            text[col] = (np.concatenate([a, b]), np.asarray(uniques, dtype=object))
        else:
            other[col] = pd.concat([_plain(first, col), _plain(second, col)], ignore_index=True)
    frame = pd.DataFrame(other, columns=[c for c in first.columns if c in other])
    return _Coded(first.columns, text, frame, first.length + second.length)


def _finish(
    worker: _Worker, func: Callable, distinct: list, split: int, proc: object
) -> _Coded:
    """``func(distinct)`` coded (``_coded``): ``distinct[:split]`` here, then the worker's
    reply for the rest, sent earlier to the worker process ``proc``; the rest here too when
    that process has gone meanwhile (killed after an error, died)."""
    try:
        first = _coded_call(func, distinct[:split])
    except BaseException:
        # its pending replies would answer the next calls: stop it (the next call restarts it)
        worker.close(kill=True)
        raise
    if split >= len(distinct):
        return first
    if proc is None or worker.proc is not proc:
        return _join(first, _coded_call(func, distinct[split:]))
    try:
        second = worker.receive()
    except (EOFError, OSError, pickle.UnpicklingError) as exc:
        logger.warning("standardizing in one process: worker stopped (%s)", exc)
        worker.broken = True
        worker.close(kill=True)
        second = _coded_call(func, distinct[split:])
    return _join(first, second)


def _call(func: Callable[[Sequence[str]], pd.DataFrame], distinct: list) -> _Coded:
    """``func(distinct)`` coded (``_coded``), split between this process and the worker
    when one is open (and has no field sent ahead waiting: its reply must come first)."""
    worker = _worker
    if (
        worker is None
        or worker.broken
        or len(distinct) < PARALLEL_MIN_DISTINCT
        or _owed(worker)
    ):
        return _coded_call(func, distinct)
    split = _split(len(distinct))
    if not _send(worker, functools.partial(_coded_call, func), distinct[split:]):
        return _coded_call(func, distinct)
    return _finish(worker, func, distinct, split, worker.proc)


def send_ahead(values: pd.Series, func: Callable[[Sequence[str]], pd.DataFrame]) -> None:
    """Factorize ``values`` now and send the open worker its share of ``func`` over their
    distinct values, so that it works on them while this process finishes an earlier field.

    The next ``map_distinct`` call with this very Series and an equal ``func`` (the same
    function, or ``functools.partial`` of it with equal arguments) takes the codes and the
    worker's reply instead of factorizing again; calls are taken in the order they were
    sent. A field with fewer than ``PARALLEL_MIN_DISTINCT`` distinct values is only
    factorized; without an open worker nothing happens. ``func`` must be picklable (see
    ``worker_process``). Call ``drop_ahead`` when the calls may not all come (an error).
    """
    worker = _worker
    if worker is None or worker.broken or any(g.values is values for g in _given):
        return
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    proc, split = None, len(uniques)
    # at most two calls owed: a third's write would wait for the worker, the worker for
    # this process to read the first reply, and this process for that write (see receive)
    if len(uniques) >= PARALLEL_MIN_DISTINCT and _owed(worker) < 2:
        split = _split(len(uniques))
        if _send(worker, functools.partial(_coded_call, func), list(uniques[split:])):
            proc = worker.proc
        else:
            split = len(uniques)
    _ahead.append(_Ahead(values, func, codes, uniques, split, proc))


def _owed(worker: _Worker) -> int:
    """Calls sent ahead to ``worker``'s current process whose replies are still to be read."""
    return sum(1 for a in _ahead if a.proc is not None and a.proc is worker.proc)


def drop_ahead() -> None:
    """Forget the fields sent ahead whose ``map_distinct`` calls have not come; the worker
    is stopped when it still owes replies for them (unread, they would answer later calls
    and block its writing)."""
    worker = _worker
    owed = worker is not None and _owed(worker) > 0
    _ahead.clear()
    _given.clear()
    if owed:
        worker.close(kill=True)


def _same_call(a: Callable, b: Callable) -> bool:
    if a is b:
        return True
    if isinstance(a, functools.partial) and isinstance(b, functools.partial):
        return a.func is b.func and a.args == b.args and a.keywords == b.keywords
    return False


# Distinct values parsed at a time by ``DistinctResults.parse``: the parsed rows of one
# batch (a tuple and a few str per value) are held as Python objects until coded.
_PARSE_BATCH = 500_000


class DistinctResults:
    """``func`` over every distinct value of a column of a whole batch, kept coded, for a
    batch standardized a chunk at a time (``io.read_records_chunks``): each chunk takes its
    rows' results (``use``) instead of parsing its own distinct values again.

    A value repeated in several chunks (one person in three registries lands in three
    chunks; 20 M records of the independent registries: 5.5 M distinct current addresses,
    12.4 M when counted chunk by chunk) is parsed once. ``dictionary`` is the batch's
    distinct values (a pyarrow string array, as ``pyarrow.compute.dictionary_encode``
    gives them); a text result column is held as int32 codes per distinct value and its
    distinct derived values as pyarrow strings (no Python object per value), the other
    columns as ``func`` gave them. Built by :meth:`parse`.
    """

    def __init__(
        self,
        dictionary: Any,
        func: Callable[[Sequence[str]], pd.DataFrame],
        columns: list[str],
        text: dict[str, tuple[np.ndarray, Any]],
        other: pd.DataFrame,
    ) -> None:
        self.dictionary = dictionary
        self.func = func
        self.columns = columns
        self.text = text
        self.other = other

    @classmethod
    def parse(
        cls, dictionary: Any, func: Callable[[Sequence[str]], pd.DataFrame]
    ) -> DistinctResults:
        """``func`` over ``dictionary``'s values (a pyarrow string array without nulls),
        ``_PARSE_BATCH`` at a time, each batch split with the open worker (``_call``) and
        its derived text turned to pyarrow strings as it comes (text columns that are not
        all ``str`` stay Python objects; a column text in one batch and not in another is
        held as it came, as ``map_distinct`` would hold it). Raises what ``func`` raises;
        ValueError when it returns another number of rows, or other columns for two
        batches."""
        batches: list[_Coded] = []
        # no value at all: one call all the same, which gives the columns
        for start in range(0, max(len(dictionary), 1), _PARSE_BATCH):
            part = dictionary.slice(start, _PARSE_BATCH).to_pylist()
            coded = _call(func, part)
            if coded.length != len(part):
                raise ValueError("normalizer returned a different number of rows than it was given")
            if batches and coded.columns != batches[0].columns:
                raise ValueError("normalizer returned different columns for two parts of its input")
            del part
            for col, (col_codes, col_uniques) in coded.text.items():
                coded.text[col] = (col_codes.astype(np.int32), _held_text(col_uniques))
            batches.append(coded)
            del coded
        columns = list(batches[0].columns)
        coded_in_all = [c for c in columns if all(c in b.text for b in batches)]
        text: dict[str, tuple[np.ndarray, Any]] = {}
        for col in coded_in_all:
            parts = [b.text.pop(col) for b in batches]
            # each batch's distinct values appended whole (a few repeat across batches:
            # renumbering them over the batch would cost more than their bytes)
            offsets = np.cumsum([0] + [len(u) for _, u in parts[:-1]])
            codes = np.concatenate(
                [np.where(c < 0, -1, c + o).astype(np.int32) for (c, _), o in zip(parts, offsets)]
            )
            text[col] = (codes, _joined_held([u for _, u in parts]))
            del parts
        other = pd.DataFrame(
            {
                c: pd.concat([_plain(_text_as_objects(b, c), c) for b in batches], ignore_index=True)
                for c in columns
                if c not in text
            }
        )
        return cls(dictionary, func, columns, text, other)

    def use(self, rows: np.ndarray, index: pd.Index) -> pd.Series:
        """The raw values of a chunk whose row ``i`` holds ``dictionary[rows[i]]`` (-1:
        null; an int array of len(index)), as ``str`` objects and None on ``index``: the
        next ``map_distinct`` call given this very Series and this object's ``func`` takes
        its results from here instead of calling ``func`` (``drop_ahead`` forgets them when
        that call does not come)."""
        codes, distinct = _renumbered(np.asarray(rows))
        uniques = held_values(self.dictionary, distinct)
        text = {}
        for col, (col_codes, col_uniques) in self.text.items():
            sub, which = _renumbered(col_codes[distinct])
            text[col] = (sub, held_values(col_uniques, which))
        if len(self.other.columns):
            other = self.other.iloc[distinct].reset_index(drop=True)
        else:  # a frame without columns has no rows to take
            other = pd.DataFrame(index=pd.RangeIndex(len(distinct)))
        coded = _Coded(list(self.columns), text, other, len(distinct))
        values = pd.Series(_take_text(uniques, codes), index=index, dtype=object)
        _given.append(_Given(values, self.func, codes, uniques, coded))
        return values


def _held_text(uniques: np.ndarray) -> Any:
    """A text column's distinct values as pyarrow strings where every one is a ``str``
    (no Python object per value); else as they are. Bytes, ``np.str_`` or a lone surrogate
    would not come back from pyarrow as they went in."""
    import pyarrow as pa

    if not all(type(v) is str for v in uniques):
        return uniques
    try:
        return pa.array(uniques, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeError):
        return uniques


def _joined_held(parts: list[Any]) -> Any:
    """Consecutive ``_held_text`` arrays as one: pyarrow strings when all are."""
    import pyarrow as pa

    if all(isinstance(p, pa.Array) for p in parts):
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())
    return np.concatenate([held_values(p, np.arange(len(p))) for p in parts])


def _text_as_objects(coded: _Coded, col: str) -> _Coded:
    """``coded`` with column ``col``'s distinct text values as Python objects (``_plain``
    reads them so)."""
    if col in coded.text:
        codes, uniques = coded.text[col]
        coded.text[col] = (codes, held_values(uniques, np.arange(len(uniques))))
    return coded


def _renumbered(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``positions`` (ints, -1 for null) as codes 0..k-1 in order of first appearance (-1
    kept) and the k distinct positions they stand for."""
    valid = positions >= 0
    local, distinct = pd.factorize(positions[valid])
    codes = np.full(len(positions), -1, dtype=np.intp)
    codes[valid] = local
    return codes, distinct


def held_values(held: Any, positions: np.ndarray) -> np.ndarray:
    """``held[positions]`` as an object array: ``held`` a pyarrow array (as
    ``DistinctResults`` holds text) or a numpy array."""
    if isinstance(held, np.ndarray):
        return held[positions]
    import pyarrow as pa

    taken = held.take(pa.array(positions, type=pa.int64()))
    return np.asarray(taken.to_numpy(zero_copy_only=False), dtype=object)


@dataclass
class _Given:
    """A chunk's values whose results came from a ``DistinctResults`` (``use``) of
    ``func``."""

    values: pd.Series
    func: Callable
    codes: np.ndarray
    uniques: np.ndarray
    coded: _Coded


# Values handed results by ``DistinctResults.use``, until their ``map_distinct`` call
_given: list[_Given] = []


def _given_for(values: pd.Series, func: Callable) -> _Given | None:
    """The results of ``func`` handed to this very Series (taken off the list), or None;
    results of another function for it are dropped (parsed again by the caller)."""
    for i, given in enumerate(_given):
        if given.values is values:
            del _given[i]
            return given if _same_call(given.func, func) else None
    return None


def _distinct_results(
    values: pd.Series, func: Callable[[Sequence[str]], pd.DataFrame]
) -> tuple[np.ndarray, pd.Index | np.ndarray, _Coded]:
    """Codes and distinct values of ``values`` and ``func`` over the distinct values: from
    the field sent ahead for this call when there is one (``send_ahead``). The values sent
    ahead under another function (a date parser built again after midnight) are dropped
    with those after them: their replies would answer later calls out of turn. Values
    handed results by ``DistinctResults.use`` take those."""
    given = _given_for(values, func)
    if given is not None:
        return given.codes, given.uniques, given.coded
    if _ahead and _ahead[0].values is values and not _same_call(_ahead[0].func, func):
        drop_ahead()
    if _ahead and _ahead[0].values is values:
        ahead = _ahead.popleft()
        distinct = list(ahead.uniques)
        if _worker is None:  # closed meanwhile: nothing to take from it
            return ahead.codes, ahead.uniques, _coded_call(func, distinct)
        result = _finish(_worker, func, distinct, ahead.split, ahead.proc)
        return ahead.codes, ahead.uniques, result
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes, uniques, _call(func, list(uniques))


def typed_frame(columns: dict[str, object]) -> pd.DataFrame:
    """``pd.DataFrame(columns)`` keeping each numpy array's dtype: an object array of text
    stays dtype object instead of pandas 3's inferred ``str`` dtype.

    ``map_distinct`` hands text columns on as object arrays of ``str`` or ``None``
    (``text_columns``), so inferring ``str`` only to convert back cost ~2 CPU s per
    300,000 records (measured). Values other than numpy arrays (lists) go to pandas as
    ``pd.DataFrame`` would take them. Raises what ``pd.DataFrame`` raises for columns of
    unequal length.
    """
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=values.dtype, copy=False)
            if isinstance(values, np.ndarray)
            else values
            for name, values in columns.items()
        }
    )


def object_columns(rows: Sequence[tuple], columns: Sequence[str]) -> pd.DataFrame:
    """``pd.DataFrame(rows, columns=columns)`` as dtype object columns, without inference
    (see :func:`typed_frame`): one object array per column, ``None`` kept as ``None``."""
    data: dict[str, object] = {}
    for name, values in zip(
        columns, zip(*rows, strict=True) if rows else [()] * len(columns), strict=True
    ):
        array = np.empty(len(values), dtype=object)
        array[:] = values
        data[name] = array
    return typed_frame(data)


def map_distinct(
    values: pd.Series,
    func: Callable[[Sequence[str]], pd.DataFrame],
    null_row: dict | None = None,
) -> pd.DataFrame:
    """Apply ``func`` to the distinct non-null values of ``values``; return one row per input row.

    ``func`` receives a list of distinct strings and returns a DataFrame with one row per
    string, in order. Null inputs get ``null_row`` (column -> value), default all null and
    an empty flag string where the result has a ``quality_flags`` column. Text columns come
    back as dtype object holding ``str`` or ``None`` (``linkage.tables.text_columns``).
    """
    codes, uniques, coded = _distinct_results(values, func)
    if coded.length != len(uniques):
        raise ValueError("normalizer returned a different number of rows than it was given")
    null_values = {c: None for c in coded.columns}
    if "quality_flags" in coded.columns:
        null_values["quality_flags"] = ""
    if null_row:
        null_values.update(null_row)
    # -1 (null) points at the row after the distinct values': the null row
    take = np.where(codes < 0, coded.length, codes)
    given = _given_objects(uniques)
    columns: dict[str, pd.Series] = {}
    plain = [c for c in coded.columns if c not in coded.text or not _is_text_or_none(null_values[c])]
    if plain:
        # as the frame's rows always were: the null row appended, text as str or None,
        # one object per distinct value, then a row per input row
        distinct = pd.DataFrame({c: _plain(coded, c) for c in plain}, columns=plain)
        null_frame = pd.DataFrame([{c: null_values[c] for c in plain}], columns=plain)
        table = text_columns(pd.concat([distinct, null_frame], ignore_index=True))
        _share_unchanged(table, uniques)
        rows = table.iloc[take]
        rows.index = values.index
        columns.update({c: rows[c] for c in plain})
        del distinct, table, rows
    for col in coded.columns:
        if col in plain:
            continue
        pool, extended = _text_pool(*coded.text[col], null_values[col], given)
        # dtype object: str or None per cell, as the stages expect (see typed_frame)
        columns[col] = pd.Series(pool[extended[take]], index=values.index, dtype=object)
    return pd.DataFrame({c: columns[c] for c in coded.columns}, index=values.index, copy=False)


def _is_text_or_none(value: object) -> bool:
    return value is None or isinstance(value, str)


def _given_objects(uniques: object) -> dict[str, str]:
    """Each distinct input string, by value: a derived value equal to an input is held as
    that input's own object (an ID or phone already clean, a name without spaces)."""
    return {v: v for v in np.asarray(uniques, dtype=object) if type(v) is str}


def _text_pool(
    codes: np.ndarray, uniques: np.ndarray, null_value: object, given: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """A text column's objects and, per distinct input value plus the null input (position
    len(codes)), the position of its value among them: ``uniques`` (an input's own object
    where one equals it), then None (code -1), then ``null_value`` (an equal value's object
    when there is one)."""
    pool = np.empty(len(uniques) + 2, dtype=object)
    pool[: len(uniques)] = [given.get(v, v) if type(v) is str else v for v in uniques]
    pool[len(uniques)] = None  # code -1: a null derived value
    pool[-1] = null_value
    if isinstance(null_value, str):
        same = np.flatnonzero(pool[: len(uniques)] == null_value)
        if len(same):
            pool[-1] = pool[same[0]]
    return pool, np.append(np.where(codes < 0, len(uniques), codes), len(uniques) + 1)


def map_one(
    value: object, func: Callable[[Sequence[str]], pd.DataFrame | dict[str, np.ndarray]]
) -> dict:
    """``map_distinct`` for ONE non-null value, as a dict of column -> value.

    The same ``func`` on ``[value]``; text columns hold ``str`` or ``None`` as
    ``text_columns`` gives them, other columns their own values. For the lookup service's
    one query record, where factorizing and indexing frames cost more than the work.
    ``func`` may return the columns a frame would be built from (column -> numpy array,
    see :func:`one_row`) instead of the frame: a one-row frame costs ~1 ms to build and read.
    """
    frame = func([value])
    if isinstance(frame, dict):
        return one_row(frame)
    if len(frame) != 1:
        raise ValueError("normalizer returned a different number of rows than it was given")
    out = {}
    for col in frame.columns:
        series = frame[col]
        v = series.iloc[0]
        if (series.dtype == object or _is_text_dtype(series.dtype)) and pd.isna(v):
            v = None
        out[col] = v
    return out


def one_row(columns: dict[str, np.ndarray]) -> dict:
    """The one row of ``pd.DataFrame(columns)`` as :func:`map_one` reads it, without the frame:
    an object array's null (None, NaN, ``pd.NA``) as None (pandas keeps object arrays as
    object or text columns, whose nulls ``map_one`` reads as None), other arrays' own value.
    Raises ValueError unless every array holds one value."""
    out = {}
    for col, values in columns.items():
        if len(values) != 1:
            raise ValueError("normalizer returned a different number of rows than it was given")
        v = values[0]
        if values.dtype == object and pd.isna(v):
            v = None
        out[col] = v
    return out


def _share_unchanged(table: pd.DataFrame, uniques: object) -> None:
    """Hold one string object per distinct derived value, and where a derived value equals
    its input (an ID or phone already clean, a name without spaces) the input's own object:
    at a million records each needless copy costs ~70 bytes a row and column."""
    given = np.asarray(uniques, dtype=object)
    for col in table.columns:
        values = table[col].to_numpy()
        if values.dtype != object:
            continue
        head = values[: len(given)]
        same = np.asarray(head == given, dtype=bool)
        if same.any():
            values = values.copy()
            values[: len(given)][same] = given[same]
        # one object per distinct derived value too: a normalizer slicing surnames or
        # region names out of 200,000 distinct names makes 200,000 copies of a few hundred
        try:
            shared = shared_text(values)
        except TypeError:  # unhashable values (not text): left as they are
            continue
        table[col] = pd.Series(shared, index=table.index, dtype=object)
