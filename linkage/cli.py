"""Command-line interface: parse arguments, call the Linker (or a stage), print, map errors.

Thin by design: every capability is a Python call first (``Linker``, ``read_records``, the
stage functions); a command only wires arguments to it. Exit codes: 0 success, 2 bad config
or input (every ``LinkageError``), 1 internal error.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from linkage.errors import LinkageError, OutputError, is_out_of_space, out_of_space_message

CONFIG_REFERENCE = (
    "The run config (YAML) is described in the README, section 'Configuration', and in "
    "docs/engineer.md."
)


class _Command(typer.core.TyperCommand):
    """A command whose usage line names its arguments as ``CONFIG`` (``[CONFIG]`` when
    optional), not typer's ``{CONFIG}``, which reads as a template or a literal brace."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [
            re.sub(r"^\{([^{}]+)\}(\.\.\.)?$", r"\1\2", piece)
            for piece in super().collect_usage_pieces(ctx)
        ]


# Plain (not rich) help: flags are listed as flags, without a misleading <bool> value, and
# the text reads the same in a job log as on a terminal.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Link Chinese person records from several registries into one identity per person. "
    "Exit codes: 0 success, 2 usage error or bad config/input, 1 internal error. "
    + CONFIG_REFERENCE,
)

Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but warnings and errors (on stderr).")
]
AsJson = Annotated[
    bool,
    typer.Option(
        "--json", help="Print one JSON document on stdout (stable keys) and nothing else there."
    ),
]
BadRows = Annotated[
    Path | None,
    typer.Option(
        "--bad-rows",
        metavar="FILE.csv",
        help="Set bad input rows (wrong field count, empty or duplicate record id) aside in "
        "this CSV with file, line and reason, and go on; without it a bad row stops the run "
        "(exit 2), every one listed. Overrides 'run.bad_rows' in the config.",
    ),
]
ConfigArg = Annotated[
    Path,
    typer.Argument(metavar="CONFIG", help="Run config YAML (see the README, 'Configuration')."),
]


# click's base of usage errors (BadParameter, UsageError): typer re-exports click's or, from
# 0.20 on, its own vendored copy, so it is found through the class typer exposes.
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)
# the same click's context stack (for the usage lines of a command's own usage error)
_CLICK_GLOBALS = importlib.import_module(_USAGE_ERROR.__module__.rsplit(".", 1)[0] + ".globals")


def _version(value: bool) -> None:
    if value:
        from linkage._version import __version__

        typer.echo(f"linkage {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Link Chinese person records from several registries into one identity per person."""


def _echo(message: str, quiet: bool = False) -> None:
    if not quiet:
        typer.echo(message)


# C0 and C1 control characters (ESC, BEL, CR, ...): a registry's value holding them would
# drive the operator's terminal (window title, screen clearing, OSC 52 clipboard writes)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(value: Any) -> str:
    """``value`` as text with every control character written as its escape (``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _plain(value: Any) -> Any:
    """numpy scalars, NaN and paths -> JSON values (NaN and NA become null, floats keep 6
    significant digits)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalar
    if isinstance(value, float):
        # 6 significant digits: 0.987988, 1.9e-05; a score needs no more, a reader no fewer
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if value is not None and not isinstance(value, str | int | float | bool):
        import pandas as pd

        return None if pd.isna(value) else str(value)
    return value


def _print_json(document: Any) -> None:
    typer.echo(json.dumps(_plain(document), ensure_ascii=False, indent=2, allow_nan=False))


def _rows(frame: Any) -> list[dict]:
    """A table as a list of row objects (column -> value) for JSON."""
    return [] if frame is None else frame.to_dict(orient="records")


def _rule_rows(report: Any, settings: Any) -> list[dict]:
    """``blocking --json``'s rules: as the report, but ``keys`` and ``refined_by`` as lists
    of key names (the table joins them with " + " and " > " for reading)."""
    keys = {rule.name: list(rule.keys) for rule in settings.rules}
    rows = _rows(report)
    for row in rows:
        row["keys"] = keys.get(row["rule"], [k for k in str(row["keys"]).split(" + ") if k])
        row["refined_by"] = [k for k in str(row.get("refined_by") or "").split(" > ") if k]
    return rows


def _number(value: Any) -> str:
    """A number for a human line: thousands separators, floats to 4 significant digits."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _pairs_text(mapping: dict) -> str:
    """``{"a": 1, "b": 2.5}`` -> ``a 1, b 2.5`` (never a Python dict repr)."""
    return ", ".join(f"{k} {_number(v)}" for k, v in mapping.items()) or "none"


def _handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Usage errors and LinkageError exit 2 with one ``error:`` line; anything else 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except _USAGE_ERROR as exc:
            # BadParameter raised by a command's own checks: the usage lines click prints for
            # a parsing error, then the same one-line form as a bad input
            ctx = exc.ctx or _CLICK_GLOBALS.get_current_context(silent=True)
            if ctx is not None:
                typer.echo(ctx.get_usage(), err=True)
                typer.echo(f"Try '{ctx.command_path} --help' for help.", err=True)
            typer.echo(f"error: {exc.format_message()}", err=True)
            raise typer.Exit(2) from None
        except LinkageError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # the reader went away (`linkage evaluate ... | head`): nothing more to say, and
            # Python's flush of stdout at exit must not fail again (Python docs, signal)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if is_out_of_space(exc):
                # a full disk is the machine's state, not a bug: said as an error of its own
                # (a write outside ``io.atomic_write``, DuckDB's spill files), exit 2
                typer.echo(f"error: {out_of_space_message()} ({exc})", err=True)
                raise typer.Exit(2) from None
            logging.getLogger("linkage").exception("internal error")
            typer.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger().setLevel(logging.WARNING if quiet else logging.INFO)


class _TerminalProgress:
    """One tqdm bar per stage: counts done/total, rate and ETA where the stage counts its
    work, the elapsed time otherwise. Finished bars stay as one line each."""

    _COUNTED = (
        "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
        "[{elapsed}<{remaining}, {rate_fmt}]"
    )
    _UNCOUNTED = "{desc} [{elapsed}]"

    def __init__(self) -> None:
        import threading

        self.bar: Any = None
        self._stop = threading.Event()
        # tqdm redraws only on update; a stage that cannot count (training, clustering)
        # would show a frozen clock, so a daemon thread redraws the current bar each second
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            bar = self.bar
            if bar is not None:
                with contextlib.suppress(Exception):  # the bar may close meanwhile
                    bar.refresh()

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        from tqdm import tqdm

        self.close()
        if name == "done":
            self._stop.set()
            return
        self.bar = tqdm(
            total=total,
            desc=name,
            unit=unit or "it",
            unit_scale=bool(total and total >= 100_000),  # 15.6M pairs, but 3/6 files
            file=sys.stderr,
            leave=True,
            dynamic_ncols=True,
            mininterval=0.5,
            bar_format=self._COUNTED if total else self._UNCOUNTED,
        )

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        bar, self.bar = self.bar, None  # the ticker sees no bar before this one closes
        if bar is not None:
            bar.close()


class _LogProgress:
    """For a job log (stderr not a terminal): one line per stage, seconds since the start."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        if total == 1 and unit.endswith("s"):
            unit = unit[:-1]  # reading (1 file)
        count = f" ({total:,} {unit})" if total is not None and unit else ""
        typer.echo(f"[{time.perf_counter() - self.start:8.1f}s] {name}{count}", err=True)

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _NoProgress:
    def stage(self, name: str, total: int | None = None, unit: str = "") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _terminal() -> bool:
    """stderr is a terminal with a size (a 0x0 pseudo-terminal, as some job runners give,
    would hide tqdm's bars: such a run gets the job-log lines)."""
    if not sys.stderr.isatty():
        return False
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return size.columns > 0 and size.lines > 0


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    """Yield the run's progress hook (``linkage.progress.Progress``): bars on a terminal,
    with log lines routed above the bar (tqdm's logging redirect); timed lines otherwise."""
    if quiet:
        yield _NoProgress()
        return
    if _terminal():
        from tqdm.contrib.logging import logging_redirect_tqdm

        report: Any = _TerminalProgress()
        with logging_redirect_tqdm():
            try:
                yield report
            finally:
                report.stage("done")
        return
    report = _LogProgress()
    yield report
    report.stage("done")


def _with_bad_rows(
    config: Any,
    bad_rows: Path | None,
    *,
    output: Path | None = None,
    store: Path | None = None,
    others: dict[str, Path] | None = None,
) -> Any:
    """The run config with ``--bad-rows`` applied (over ``run.bad_rows``); the file is checked
    before any work: not a link, not a file the run reads or writes (sources, config, store,
    OUTPUT's files, ``others``: role -> a command's other outputs), and not an existing file
    other than an earlier bad-rows file. Raises InputError (exit 2) for a refused path. Both
    engines set rows aside."""
    from linkage import schema
    from linkage.errors import InputError
    from linkage.paths import check_output_file, output_file_path, run_files

    if bad_rows is not None:
        check_output_file(bad_rows, "--bad-rows", (".csv",))
        # the folder resolved, the name kept: a link is refused, never followed
        run = config.run.model_copy(update={"bad_rows": str(output_file_path(bad_rows))})
        config = config.model_copy(update={"run": run})
    if config.run.bad_rows is None:
        return config
    path = check_output_file(
        config.run.bad_rows,
        "--bad-rows",
        (".csv",),
        not_over={**run_files(config, output=output, store=store), **(others or {})},
    )
    if path.is_file() and not _is_bad_rows_file(path):
        raise InputError(
            "--bad-rows: this file exists and is not an earlier bad-rows file (its header is "
            f"not {','.join(schema.REJECT_COLUMNS)}); it would be replaced: delete it or "
            "name a new file",
            path=str(path),
        )
    return config


def _is_bad_rows_file(path: Path) -> bool:
    """Whether ``path`` starts with the bad-rows header (``schema.REJECT_COLUMNS``)."""
    from linkage import schema

    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            first = handle.readline(4096)
    except OSError:
        return False
    return first.rstrip("\r\n") == ",".join(schema.REJECT_COLUMNS)


def _print_summary(summary: dict, quiet: bool) -> None:
    if quiet:
        return
    typer.echo(
        f"records:          {summary['records']:,}  ({_pairs_text(summary['records_per_source'])})"
    )
    if summary.get("bad_rows_file") is not None:
        typer.echo(
            f"bad rows:         {summary.get('bad_rows', 0):,} set aside in "
            f"{summary['bad_rows_file']}"
            + (
                f"  ({_pairs_text(summary['bad_rows_per_source'])})"
                if summary.get("bad_rows")
                else ""
            )
        )
    typer.echo(f"candidate pairs:  {summary['candidate_pairs']:,}")
    for rule, count in summary["pairs_per_rule"].items():
        typer.echo(f"  {rule:<28} {count:>12,}")
    typer.echo(f"matches:          {summary['matches']:,}")
    typer.echo(f"identities:       {summary['identities']:,}")
    if summary.get("events"):  # a run written into an identity store: what changed there
        typer.echo(f"store events:     {_pairs_text(summary['events'])}")
    typer.echo(f"cluster sizes:    {_pairs_text(summary.get('cluster_stats', {}))}")
    typer.echo(
        "seconds:          " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items())
    )
    cpu, cores = summary.get("cpu_seconds"), summary.get("cores_busy") or {}
    if cpu:  # Linux only: the run's processes together, and the cores each stage kept busy
        typer.echo(
            "cpu seconds:      "
            + ", ".join(
                f"{k} {v:.1f}" + (f" ({cores[k]:.2f} cores)" if cores.get(k) is not None else "")
                for k, v in cpu.items()
            )
        )
    peaks = summary.get("peak_rss_mb")
    if peaks:  # Linux only: the run's resident memory per stage
        stage = summary.get("peak_rss_stage", max(peaks, key=peaks.__getitem__))
        typer.echo(
            f"peak memory:      {peaks[stage] / 1024:.2f} GB in {stage}  (MB: {_pairs_text(peaks)})"
        )
    totals = summary.get("peak_total_mb")
    if totals:  # with the worker and child processes: what the machine gave the run
        stage = max(totals, key=totals.__getitem__)
        typer.echo(
            f"all processes:    {totals[stage] / 1024:.2f} GB in {stage}  "
            f"(MB: {_pairs_text(totals)})"
        )


@app.command(cls=_Command)
@_handle_errors
def synth(
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="DIR", help="Folder to write registries to.")
    ],
    persons: Annotated[
        int, typer.Option(min=1, help="Number of persons in the population.")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    corruption: Annotated[
        float, typer.Option(min=0.0, help="Scale of all corruption rates (0 clean, 1 realistic).")
    ] = 1.0,
    excel: Annotated[bool, typer.Option(help="Write the health registry as .xlsx.")] = False,
    new_batch: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of each registry held out as a later batch (<source>_new.csv, new.yaml).",
        ),
    ] = 0.0,
    quiet: Quiet = False,
) -> None:
    """Generate synthetic police, civil-affairs and health registries with ground truth."""
    from linkage.paths import check_output_dir
    from linkage.synth import generate

    check_output_dir(output)
    start = time.perf_counter()
    result = generate(
        persons, seed=seed, corruption=corruption, output=output, excel=excel, new_batch=new_batch
    )
    held = result.held_out

    def count(source: str) -> int:
        return len(result.registry(source)) - held.get(source, 0)

    _echo(
        f"wrote {count('police'):,} police, {count('civil_affairs'):,} civil-affairs and "
        f"{count('health'):,} health records for {persons:,} persons to {output} "
        f"in {time.perf_counter() - start:.1f}s (config: {output / 'run.yaml'})",
        quiet,
    )
    if "new_config" in result.paths:
        _echo(
            f"held out a later batch of {sum(held.values()):,} records "
            f"({', '.join(f'{s} {n:,}' for s, n in held.items())}): "
            f"{result.paths['new_config']}",
            quiet,
        )


@app.command(cls=_Command)
@_handle_errors
def profile(config: ConfigArg, as_json: AsJson = False, quiet: Quiet = False) -> None:
    """Print a data-quality summary per source: missing and invalid values, ID problems."""
    from linkage.config import load_config
    from linkage.io import read_records
    from linkage.profile import flag_counts, format_profile, profile_fields, profile_summary

    _setup_logging(True)
    cfg = load_config(config)
    with _progress(quiet) as report:
        records = read_records(cfg, progress=report)
        report.stage("profiling")
        if as_json:
            counts = flag_counts(records)
            flags = (
                []
                if counts.empty
                else _rows(counts.stack().rename("records").reset_index().query("records > 0"))
            )
            document = {
                "records": len(records),
                "sources": _rows(profile_summary(records)),
                "fields": _rows(profile_fields(records)),
                "quality_flags": flags,
            }
        else:
            text = format_profile(records)
    if as_json:
        _print_json(document)
        return
    _echo(text, quiet)


@app.command("standardize", cls=_Command)
@_handle_errors
def standardize_cmd(
    config: ConfigArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Parquet file to write.")
    ],
    bad_rows: BadRows = None,
    quiet: Quiet = False,
) -> None:
    """Read and standardize every source; write the records with derived columns as Parquet."""
    from linkage.config import load_config
    from linkage.io import read_records, write_parquet
    from linkage.paths import check_output_file, run_files

    _setup_logging(quiet)
    check_output_file(output)
    cfg = load_config(config)
    check_output_file(output, not_over=run_files(cfg))
    # the records' file is an output too: written after the bad rows, it would replace them
    cfg = _with_bad_rows(cfg, bad_rows, others={"--output file": output})
    start = time.perf_counter()
    with _progress(quiet) as report:
        records = read_records(cfg, progress=report)
        report.stage("writing outputs", total=1, unit="files")
        write_parquet(records, output)
        report.advance(1)
    _echo(
        f"standardized {len(records):,} records in {time.perf_counter() - start:.1f}s -> {output}",
        quiet,
    )
    if cfg.run.bad_rows is not None and Path(cfg.run.bad_rows).is_file():
        import pandas as pd

        n_bad = len(pd.read_csv(cfg.run.bad_rows, dtype=str, keep_default_na=False))
        _echo(f"bad rows: {n_bad:,} set aside in {cfg.run.bad_rows}", quiet)


def _not_py4j(record: logging.LogRecord) -> bool:
    """A log filter: False for a record py4j's own code made."""
    return f"{os.sep}py4j{os.sep}" not in record.pathname


def _run_spark(
    config: Any,
    output: Path,
    master: str | None,
    previous: Path | None,
    store: Any,
    quiet: bool,
    id_key: bytes | None = None,
    as_json: bool = False,
) -> None:
    """The ``run`` command on the Spark engine (pyspark is imported only here); prints the
    summary as the local engine's run does."""
    from linkage.errors import ConfigError

    if store is not None:
        raise ConfigError(
            "--store works with the local engine; the Spark engine keeps ids with --previous",
            key="engine",
        )
    try:
        from linkage.spark.engine import run_spark
    except ImportError as exc:
        raise ConfigError(str(exc), key="engine") from None
    from linkage.spark.session import kill_jvm

    # py4j logs its own connection faults (an interrupt during a JVM call: one on the root
    # logger) with tracebacks; they reach Python as exceptions the CLI reports in one line
    for handler in logging.getLogger().handlers:
        handler.addFilter(_not_py4j)
    try:
        with _progress(quiet) as report:
            result = run_spark(
                config,
                output,
                master=master,
                previous=previous,
                id_key=id_key,
                progress=report.stage,
                exit_on_interrupt=True,
            )
    except KeyboardInterrupt:
        kill_jvm()  # "interrupted" and exit 130 follow, with no JVM logging after them
        raise
    if as_json:
        _print_json({**result.summary, "outputs": {k: str(p) for k, p in result.outputs.items()}})
        return
    _print_summary(result.summary, quiet)
    _echo(f"wrote {', '.join(str(p) for p in result.outputs.values())}", quiet)


@app.command(cls=_Command, epilog=CONFIG_REFERENCE)
@_handle_errors
def run(
    config: ConfigArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="DIR", help="Folder for the outputs.")
    ],
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            metavar="STORE",
            help="Identity store file: keep its IDs and write the run into it.",
        ),
    ] = None,
    remove_missing: Annotated[
        bool,
        typer.Option(
            "--remove-missing",
            help="With --store: remove stored records this batch lacks (a batch replaces the "
            "store's records; without this flag such a run exits 2 before linking).",
        ),
    ] = False,
    as_json: AsJson = False,
    engine: Annotated[
        Literal["local", "spark"] | None,
        typer.Option("--engine", help="Engine (default local); overrides 'engine' in the config."),
    ] = None,
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master",
            metavar="URL",
            help="Spark master URL, e.g. local[4] or yarn (engine spark).",
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="Engine spark: a previous run's identities (.csv/.parquet) whose ids are kept.",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a killed run into the same --output from its last finished stage "
            "(OUTPUT/.work); starts over when the config or inputs changed.",
        ),
    ] = False,
    bad_rows: BadRows = None,
    quiet: Quiet = False,
) -> None:
    """Run the whole batch merge: identities.csv, golden records, scored pairs, model, summary.

    Progress goes to stderr: one bar per stage on a terminal, one timed line per stage in a
    job log. With --json, stdout holds the summary (summary.json's keys) plus "outputs".
    Each finished stage is saved under OUTPUT/.work until the outputs are written, so
    --resume after a kill gives the same identities.csv as an uninterrupted run.
    """
    from linkage.identity import ID_KEY_FILE, batch_key, env_key, read_key_file, write_key_file
    from linkage.linker import Linker
    from linkage.paths import check_output_dir, check_run_output, check_store_path
    from linkage.progress import return_freed_memory

    _setup_logging(quiet)
    if engine not in (None, "local", "spark"):
        raise typer.BadParameter(f"--engine must be local or spark, got {engine!r}")
    # every path is checked before the work and before the store transaction commits
    check_output_dir(output)
    if store is not None and engine != "spark":
        from linkage.store import Store

        check_store_path(store, create=True)
        Store.check_free(store)  # held by `linkage serve`: refused before reading the inputs
    if remove_missing and store is None:
        raise typer.BadParameter("--remove-missing applies with --store")
    linker = Linker.from_yaml(config, store=None if engine == "spark" else store)
    if (engine or linker.config.engine) == "spark" and resume:
        raise typer.BadParameter(
            "--resume is for the local engine: a Spark run keeps no checkpoints (run it again)"
        )
    if (engine or linker.config.engine) != "spark" and spark_master is not None:
        raise typer.BadParameter("--spark-master is for --engine spark (or engine: spark)")
    if (engine or linker.config.engine) != "spark":
        # a Spark run's folders where this run writes files: refused before the pending key
        check_run_output(output)
    linker.remove_missing = remove_missing
    linker.config = _with_bad_rows(linker.config, bad_rows, output=output, store=store)
    # without a store the ids are keyed by $LINKAGE_ID_KEY or OUTPUT/identity.key (created once),
    # with one by the store's own secret
    new_key_path = None
    if store is None or (engine or linker.config.engine) == "spark":
        linker.id_key, new_key_path = batch_key(output)
    pending = output / ".identity.key.pending"
    created_output = not output.exists()
    if new_key_path is not None and engine != "spark" and linker.config.engine != "spark":
        # a killed run's new key is kept beside its checkpoints, so --resume names alike
        if resume and pending.is_file():
            linker.id_key = read_key_file(pending)
        else:
            pending.unlink(missing_ok=True)
            write_key_file(pending, linker.id_key, announce=False)
    if (engine or linker.config.engine) == "spark":
        _run_spark(
            linker.config, output, spark_master, previous, store, quiet, linker.id_key, as_json
        )
        if new_key_path is not None:
            write_key_file(new_key_path, linker.id_key)
        return
    if previous is not None:
        raise typer.BadParameter("--previous is for --engine spark; the local engine uses --store")
    # freed memory back to the system at once: lower stage peaks for ~5% more CPU
    return_freed_memory()
    try:
        with _progress(quiet) as report:
            # runs first; the Linker checks paths
            paths = linker.write(output, progress=report, resume=resume)
            result = linker.result_
    except OutputError:
        raise  # a full disk: the checkpoints and the pending key stay for --resume
    except LinkageError:
        # refused input leaves nothing behind (a kill or crash keeps .work for --resume)
        pending.unlink(missing_ok=True)
        aside = linker.config.run.bad_rows
        # ... but a bad-rows file written inside it, which says why the input was refused
        keeps_bad_rows = aside is not None and Path(aside).is_relative_to(output.resolve())
        if created_output and not keeps_bad_rows:
            shutil.rmtree(output, ignore_errors=True)
        raise
    if new_key_path is not None:
        write_key_file(new_key_path, linker.id_key)
        pending.unlink(missing_ok=True)
    outputs = {k: str(p) for k, p in paths.items()}
    if store is None and not env_key() and (output / ID_KEY_FILE).is_file():
        outputs["identity_key"] = str(output / ID_KEY_FILE)  # ids depend on it: keep it
    if as_json:
        _print_json({**result.summary, "outputs": outputs})
        return
    _print_summary(result.summary, quiet)
    _echo(f"wrote {', '.join(outputs.values())}", quiet)


@app.command(cls=_Command, epilog=CONFIG_REFERENCE)
@_handle_errors
def ingest(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="Run config naming the new records' files.")
    ],
    store: Annotated[
        Path, typer.Option("--store", metavar="STORE", help="Identity store file to update.")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="DIR",
            help="Folder for identities.csv of the affected records.",
        ),
    ] = None,
    as_json: AsJson = False,
    bad_rows: BadRows = None,
    quiet: Quiet = False,
) -> None:
    """Link new records (or updated ones) against an identity store, keeping stable IDs.

    With --json, stdout holds run_id and the ingest summary (new_records: records read,
    inserted_records: those not stored before, updated_records: those already stored,
    unchanged_records, matches, touched_identities, events, seconds, ...).
    """
    from linkage.linker import Linker
    from linkage.paths import check_output_dir, check_output_names, check_store_path

    _setup_logging(quiet)
    check_store_path(store, create=False)
    if output is not None:
        check_output_dir(output)
        check_output_names(output, ("identities.csv", "events.csv"))
    linker = Linker.from_yaml(config, store=store)
    linker.config = _with_bad_rows(linker.config, bad_rows, output=output, store=store)
    with _progress(quiet) as report:
        result = linker.ingest(progress=report, output=output)
    s = result.summary
    if as_json:
        _print_json({"run_id": result.run_id, **s})
        return
    _echo(
        f"run {result.run_id}: {s['new_records']:,} records read "
        f"({s['inserted_records']:,} new, {s['updated_records']:,} updates, "
        f"{s['unchanged_records']:,} of them unchanged), "
        f"{s['matches']:,} matches, {s['touched_identities']:,} stored identities touched",
        quiet,
    )
    if linker.config.run.bad_rows is not None:
        _echo(f"bad rows: {s['bad_rows']:,} set aside in {linker.config.run.bad_rows}", quiet)
    _echo(f"events:  {_pairs_text(s['events'])}", quiet)
    _echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()), quiet)


def _search_hit(hit: dict) -> dict:
    """A search hit for JSON: the golden record's count of records as a number."""
    golden = dict(hit.get("golden") or {})
    count = golden.get("records")
    if isinstance(count, str) and count.strip().isdigit():
        golden["records"] = int(count)
    return {**hit, "golden": golden}


@app.command(cls=_Command)
@_handle_errors
def search(
    store: Annotated[Path, typer.Option("--store", metavar="STORE", help="Identity store file.")],
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Name, e.g. 张伟.")
    ] = None,
    id_number: Annotated[
        str | None, typer.Option("--id-number", metavar="ID", help="Resident ID.")
    ] = None,
    birth_date: Annotated[
        str | None, typer.Option("--birth-date", metavar="DATE", help="Birth date.")
    ] = None,
    phone: Annotated[
        str | None, typer.Option("--phone", metavar="PHONE", help="Phone number.")
    ] = None,
    gender: Annotated[
        str | None, typer.Option("--gender", metavar="GENDER", help="Gender.")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", metavar="ADDRESS", help="Current address.")
    ] = None,
    hukou_address: Annotated[
        str | None,
        typer.Option("--hukou-address", metavar="ADDRESS", help="Hukou (registered) address."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Candidate identities to return.")] = 5,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Find the stored identities most likely to be one person, with explanations."""
    from linkage.linker import Linker

    _setup_logging(True)
    record = {
        "name": name,
        "id_number": id_number,
        "birth_date": birth_date,
        "phone": phone,
        "gender": gender,
        "current_address": address,
        "hukou_address": hukou_address,
    }
    if not any(record.values()):
        raise typer.BadParameter(
            "give at least one of --name, --id-number, --birth-date, --phone, --gender, "
            "--address, --hukou-address",
            param_hint="search fields",
        )
    from linkage.paths import check_store_path

    check_store_path(store, create=False, write=False)
    report = Linker(store=store).search_report({k: v for k, v in record.items() if v}, top=top)
    hits = report.hits
    if report.fields and not any(f.get("usable") for f in report.fields.values()):
        # a query none of whose values can be read is bad input, not "no such person"
        from linkage.errors import InputError

        raise InputError(report.message or "no field of the query could be read")
    if report.message and not quiet:
        # why the answer is empty (or came from one field alone); JSON stays the hits list
        typer.echo(report.message, err=as_json)
    unread = {f: d for f, d in report.fields.items() if not d.get("usable")}
    if unread and not quiet:
        # a value read as filler or unreadable is left out of the search: say so
        typer.echo(
            "not searched: "
            + "; ".join(
                f"{f} ({', '.join(x['meaning'] for x in d['flags']) or 'no readable value'})"
                for f, d in unread.items()
            ),
            err=True,
        )
    if as_json:
        _print_json([_search_hit(hit) for hit in hits])
        return
    if quiet:
        return
    if not hits:
        typer.echo("no candidate identities")
    for i, hit in enumerate(hits, 1):
        g = hit["golden"]
        typer.echo(
            f"{i}. {hit['identity_id']}  p={hit['match_probability']:.4f}  "
            f"w={hit['match_weight']:.2f}  {_printable(g.get('name'))} "
            f"{_printable(g.get('birth_date'))} ({_printable(g.get('records'))} records)"
        )
        typer.echo(
            "   "
            + ", ".join(
                f"{e['comparison']}={e['level']} {e['weight']:+.2f}" for e in hit["explanation"]
            )
        )


@app.command(cls=_Command)
@_handle_errors
def export(
    store: Annotated[Path, typer.Option("--store", metavar="STORE", help="Identity store file.")],
    department: Annotated[
        str, typer.Option("--department", metavar="NAME", help="Department view to write.")
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="File to write (.csv or .parquet)."),
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Sharing policy YAML (default: the one shipped in linkage/data/sharing.yaml).",
        ),
    ] = None,
    bom: Annotated[
        bool,
        typer.Option(
            "--bom",
            help="Start a CSV with a UTF-8 byte-order mark, so that Excel on Chinese Windows "
            "reads it as UTF-8 (without one it reads GBK and garbles the Chinese text).",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Write one department's view of the golden records: granted fields only, masked."""
    import os

    from linkage import schema
    from linkage.paths import check_input_file, check_output_file, check_store_path
    from linkage.share import DEFAULT_POLICY_PATH, export_view, load_policy, write_export
    from linkage.share.export import (
        K_ANONYMITY,
        check_own_sources,
        check_quasi_identifier_joins,
        k_anonymity_warning,
    )
    from linkage.store import Store

    _setup_logging(True)
    check_store_path(store, create=False, write=False)
    check_output_file(
        output,
        "--output",
        (".csv", ".parquet"),
        not_over={"identity store": store, **({"sharing policy": policy} if policy else {})},
    )
    _check_replaces_export(output)
    if policy is not None:
        check_input_file(policy, "--policy")
    sharing = load_policy(policy or DEFAULT_POLICY_PATH)
    # read-only, so that exports run while `linkage serve` holds the store
    with Store.open(store, create=False, read_only=True) as opened:
        golden, links = opened.table("golden"), opened.links()
        # the store keeps the master key of department pseudonyms (stable across exports)
        # unless the policy's environment variable provides one
        key = None
        if not os.environ.get(sharing.pseudonym_key_env):
            key = opened.stored_secret("pseudonym_key")
    # a grant whose own_sources the store lacks gives an empty-looking export: refused
    for line in check_own_sources(links[schema.SOURCE] if len(links) else (), sharing, department):
        logging.getLogger("linkage.share").warning(line)
    if key is None and not os.environ.get(sharing.pseudonym_key_env):
        with Store.open(store, create=False) as writable:  # a store's first export makes the key
            key = writable.secret("pseudonym_key")
    # shared masked fields unique for most identities join two exports like an id
    check_quasi_identifier_joins(golden, sharing, department)
    view = export_view(golden, links, sharing, department, key=key)
    path = write_export(view, output, bom=bom)
    mostly_empty = k_anonymity_warning(view, department)
    if mostly_empty:
        logging.getLogger("linkage.share").warning(mostly_empty)
    suppressed = view.attrs.get(K_ANONYMITY, {}).get("rows", 0)
    note = f" ({suppressed:,} rows suppressed for k-anonymity)" if suppressed else ""
    _echo(f"wrote {len(view):,} rows for department '{department}' to {path}{note}", quiet)


def _check_replaces_export(path: Path) -> None:
    """Refuse an existing ``--output`` of ``export`` that is not an earlier export, which
    could be a registry the store's runs read (their paths are not kept in the store): an
    export's header names the identity (``identity_id`` / ``pseudonym_id``) or ``persons``
    (aggregated views). Raises InputError (exit 2)."""
    from linkage import schema
    from linkage.errors import InputError
    from linkage.share.export import PSEUDONYM_ID

    if not path.is_file():
        return
    marks = {schema.IDENTITY_ID, PSEUDONYM_ID, "persons"}
    columns: list[str] = []
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(path).names)
        else:
            import csv

            with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
                columns = next(csv.reader([handle.readline(1 << 16)]), [])
    except Exception:  # noqa: BLE001 - unreadable means not an earlier export
        columns = []
    if not marks & set(columns):
        raise InputError(
            "--output exists and is not an earlier export (no identity_id, pseudonym_id or "
            "persons column); it may be a registry: delete it or name a new file",
            path=str(path),
        )


def _secret(env: str, key_file: Path | None, what: str) -> bytes:
    """A secret from a file or an environment variable, never from the command line."""
    import os

    from linkage.errors import ConfigError

    if key_file is not None:
        try:
            secret = key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the {what}: {exc.strerror}", path=str(key_file)
            ) from None
        if not secret:
            raise ConfigError(f"the {what} file is empty", path=str(key_file))
        return secret
    text = os.environ.get(env, "")
    if not text:
        raise ConfigError(f"set the {what} in the environment variable {env} or pass --key-file")
    return text.encode("utf-8")


@app.command(cls=_Command)
@_handle_errors
def encode(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="Run config naming the sources to encode.")
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="File to write (.csv or .parquet)."),
    ],
    source: Annotated[
        list[str] | None,
        typer.Option("--source", metavar="NAME", help="Encode only this source (repeatable)."),
    ] = None,
    key_env: Annotated[
        str,
        typer.Option(
            "--key-env", metavar="VAR", help="Environment variable holding the custodians' secret."
        ),
    ] = "LINKAGE_PPRL_KEY",
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", metavar="FILE", help="File holding the custodians' secret."),
    ] = None,
    record_ids: Annotated[
        str,
        typer.Option(
            "--record-ids",
            help="pseudonym (keyed, default) or plain (refused for IDs and phone numbers).",
        ),
    ] = "pseudonym",
    key_map: Annotated[
        Path | None,
        typer.Option(
            "--key-map",
            metavar="FILE",
            help="Also write record_id -> pseudonym here (keep it local).",
        ),
    ] = None,
    hardening: Annotated[
        str, typer.Option(help="balance (default), xor_fold or none; all custodians alike.")
    ] = "balance",
    salt: Annotated[
        str,
        typer.Option(
            help="all (default: every field salted by another attribute), birth_year (name "
            "tokens only) or none; all custodians alike."
        ),
    ] = "all",
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            help="Project/period label bound into the keys, e.g. 2026-health-survey (required; "
            "all custodians of one linkage alike, a new one for each linkage round).",
        ),
    ] = None,
    allow_weak_key: Annotated[
        bool,
        typer.Option(
            "--allow-weak-key",
            help="Accept a key that does not look random (RISK: the linkage unit can guess "
            "it offline from the key check value and then read the encodings).",
        ),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Custodian step: write hardened Bloom-filter encodings (CLKs) for the linkage unit."""
    from linkage import schema
    from linkage.config import load_config
    from linkage.errors import InputError
    from linkage.io import read_records, write_csv, write_parquet
    from linkage.paths import check_output_file
    from linkage.pprl import EncodingSettings, encode_records

    _setup_logging(True)
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise InputError("encodings file must end in .csv or .parquet", path=str(output))
    check_output_file(output)
    if key_map is not None:
        check_output_file(key_map, "--key-map")
    from linkage.pprl.encode import check_key_strength

    if not context or not context.strip():
        raise InputError(
            "give --context LABEL naming this linkage (e.g. 2026-health-survey): the same key "
            "in two contexts then gives unlinkable encodings"
        )
    secret = _secret(key_env, key_file, "custodians' secret")
    if allow_weak_key:
        logging.getLogger("linkage.pprl").warning(
            "--allow-weak-key: a guessable key lets the linkage unit read the encodings"
        )
    else:
        check_key_strength(secret)
    if record_ids not in ("pseudonym", "plain"):
        raise typer.BadParameter("--record-ids must be pseudonym or plain")
    settings = EncodingSettings(hardening=hardening, salt=salt, context=context.strip())  # type: ignore[arg-type]
    cfg = load_config(config)
    from linkage.paths import run_files

    inputs = run_files(cfg)
    check_output_file(output, not_over=inputs)
    if key_map is not None:
        check_output_file(key_map, "--key-map", not_over={**inputs, "--output": output})
    unknown = sorted(set(source or ()) - set(cfg.sources))
    if unknown:
        raise InputError(f"unknown sources {unknown}; the config has {list(cfg.sources)}")
    records = read_records(cfg)
    if source:
        records = records[records[schema.SOURCE].isin(source)].reset_index(drop=True)
    encoded = encode_records(records, secret, settings, record_ids=record_ids)  # type: ignore[arg-type]
    if key_map is not None:
        pseudonyms = encoded[[schema.RECORD_ID]].rename(columns={schema.RECORD_ID: "pseudonym"})
        local = records[[schema.SOURCE, schema.RECORD_ID]].reset_index(drop=True)
        write_csv(local.join(pseudonyms), key_map)
    # the encodings are for machines: base64 may start with "+", so no spreadsheet escaping
    if output.suffix.lower() == ".parquet":
        write_parquet(encoded, output)
    else:
        write_csv(encoded, output, for_people=False)
    _echo(
        f"wrote {len(encoded):,} encoded records to {output} (key check {encoded['key_check'].iloc[0] if len(encoded) else '-'})",
        quiet,
    )


@app.command("encode-key", cls=_Command)
@_handle_errors
def encode_key(
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Key file to write (0600).")
    ],
    quiet: Quiet = False,
) -> None:
    """Write a new random custodians' secret (32 bytes, hex) for `linkage encode --key-file`."""
    import secrets

    from linkage.io import atomic_write
    from linkage.paths import check_output_file

    check_output_file(output)
    if output.exists():
        from linkage.errors import InputError

        raise InputError("key file exists; a new key would orphan its encodings", path=str(output))
    text = secrets.token_hex(32) + "\n"
    atomic_write(output, lambda p: Path(p).write_text(text, encoding="ascii"))
    _echo(f"wrote a new 256-bit key to {output}: share it with the other custodians only", quiet)


@app.command("link-encodings", cls=_Command)
@_handle_errors
def link_encodings_cmd(
    left: Annotated[
        Path,
        typer.Argument(metavar="LEFT", help="One custodian's encodings (.csv or .parquet)."),
    ],
    right: Annotated[Path, typer.Argument(metavar="RIGHT", help="Another custodian's encodings.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="Pairs file (.csv or .parquet).")
    ],
    threshold: Annotated[
        float, typer.Option(help="Dice threshold (0.85 suits the default encodings).")
    ] = 0.85,
    one_to_one: Annotated[
        bool, typer.Option(help="Keep each record in at most one pair (greedy).")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Linkage-unit step: link two custodians' encodings; needs no key."""
    import pandas as pd

    from linkage.errors import InputError
    from linkage.io import write_csv, write_parquet
    from linkage.pprl import link_encodings

    _setup_logging(True)
    frames = []
    for path in (left, right):
        if not path.is_file():
            raise InputError("encodings file not found", path=str(path))
        try:
            if path.suffix.lower() == ".parquet":
                frames.append(pd.read_parquet(path))
            else:
                frames.append(pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))
        except Exception as exc:  # noqa: BLE001 - any reader failure is bad input here
            raise InputError(f"cannot read encodings: {exc}", path=str(path)) from None
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise InputError("pairs file must end in .csv or .parquet", path=str(output))
    from linkage.paths import check_output_file

    check_output_file(output, not_over={"left encodings": left, "right encodings": right})
    pairs = link_encodings(frames[0], frames[1], threshold, one_to_one=one_to_one)
    if output.suffix.lower() == ".parquet":
        write_parquet(pairs, output)
    else:
        write_csv(pairs, output)
    _echo(f"wrote {len(pairs):,} linked pairs to {output}", quiet)


@app.command(cls=_Command)
@_handle_errors
def serve(
    store: Annotated[
        Path,
        typer.Option("--store", metavar="STORE", help="Identity store file (opened read-only)."),
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            metavar="FILE",
            help="Sharing policy YAML (default: the one shipped in linkage/data/sharing.yaml).",
        ),
    ] = None,
    tokens: Annotated[
        Path | None,
        typer.Option(
            "--tokens",
            help="YAML file of department -> token hash(es); default: the environment "
            "variable LINKAGE_SERVE_TOKENS holding the same YAML.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (one per core).")] = 1,
    audit: Annotated[
        Path | None,
        typer.Option(
            "--audit",
            metavar="FILE",
            help="Audit log, JSON lines (default: STORE's name + .audit.jsonl).",
        ),
    ] = None,
    single_field_limit: Annotated[
        int,
        typer.Option(
            min=1, help="Most stored records a name or birth date alone may match to be ranked."
        ),
    ] = 200,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help=(
                "Requests per second per department, all its tokens together "
                "(default: the policy's rate_limit, 10)."
            ),
        ),
    ] = None,
    rate_burst: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Requests a department may make at once (default: the policy's, 20).",
        ),
    ] = None,
    in_memory: Annotated[
        bool,
        typer.Option(
            "--in-memory/--no-in-memory",
            help="Hold the records, links, golden records and key index searches read in "
            "memory, per worker (about 2 GB per worker at 1 M records; several times faster).",
        ),
    ] = True,
    log_level: Annotated[
        Literal["critical", "error", "warning", "info", "debug"] | None,
        typer.Option(
            "--log-level",
            help="Log level of the service and uvicorn (default info; -q: warning).",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run the lookup service: search and fetch identities over HTTP, each department its own view.

    Tokens are never given on the command line: `linkage serve-token` makes one and stores
    its hash. API docs: http://HOST:PORT/docs. See docs/integrator.md.
    """
    try:
        from linkage.serve import ServiceSettings
        from linkage.serve import serve as run_service
    except ImportError as exc:
        # an install step, not a bad option value: one error line, no usage
        raise LinkageError(str(exc)) from None
    from linkage.errors import InputError
    from linkage.share import DEFAULT_POLICY_PATH

    # per-request INFO lines of the stages would flood the log: the service logs its own
    # (serve's log_config sets the levels and one format for it and uvicorn)
    _setup_logging(True)
    level = log_level or ("warning" if quiet else "info")
    logging.getLogger("linkage.serve").setLevel(level.upper())
    if workers < 1:
        raise typer.BadParameter("--workers must be at least 1")
    if not store.is_file():
        raise InputError("identity store not found", path=str(store))
    settings = ServiceSettings(
        store=str(store),
        policy=str(policy or DEFAULT_POLICY_PATH),
        tokens=str(tokens) if tokens else None,
        audit=str(audit or store.with_name(store.name + ".audit.jsonl")),
        single_field_limit=single_field_limit,
        rate_per_second=rate_limit,
        rate_burst=rate_burst,
        in_memory=in_memory,
    )
    run_service(settings, host=host, port=port, workers=workers, log_level=level)


@app.command("serve-token", cls=_Command)
@_handle_errors
def serve_token(
    tokens: Annotated[
        Path, typer.Option("--tokens", metavar="FILE", help="Tokens file to add the hash to.")
    ],
    department: Annotated[
        str, typer.Option("--department", metavar="NAME", help="Department the token is for.")
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", metavar="FILE", help="Sharing policy YAML that must define the department."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Make a bearer token for a department: store its hash in TOKENS, print the token once.

    stdout holds the token alone (also with -q); a note on stderr says where its hash went.
    """
    from linkage.serve import add_token
    from linkage.share import DEFAULT_POLICY_PATH, effective_department, load_policy

    effective_department(load_policy(policy or DEFAULT_POLICY_PATH), department)
    typer.echo(add_token(tokens, department))
    if not quiet:
        typer.echo(
            f"token for department '{department}' (its hash added to {tokens}); it is shown "
            "only now: keep it secret",
            err=True,
        )


@app.command("blocking", cls=_Command)
@_handle_errors
def blocking_cmd(
    config: ConfigArg,
    top: Annotated[int, typer.Option(min=0, help="Largest blocks to list per rule.")] = 3,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Report how many pairs each blocking rule yields, and the largest blocks, before comparing.

    A rule's "pairs" counts every pair its blocks hold; `run` credits a pair found by several
    rules to the first of them only, so its per-rule counts are smaller.
    """
    from linkage.blocking import blocking_report, largest_blocks
    from linkage.linker import Linker

    _setup_logging(True)
    linker = Linker.from_yaml(config)
    with _progress(quiet) as progress:
        records = linker.standardize(progress)
        progress.stage("counting pairs per rule")
        settings = linker.config.blocking
        report = blocking_report(records, settings)
        big = largest_blocks(records, settings, top=top)
    total = int(report["pairs"].sum())
    warnings = [
        f"rule '{row.rule}' has {row.blocks_over_warning} block(s) over "
        f"{settings.warn_block_size} records ({row.blocks_skipped} over "
        f"{settings.max_block_size} are skipped)"
        for row in report[report["blocks_over_warning"] > 0].itertuples()
    ]
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json(
            {
                "records": len(records),
                "rules": _rule_rows(report, settings),
                "total_pairs": total,
                "largest_blocks": _rows(big),
                "warnings": warnings,
            }
        )
        return
    if quiet:
        return
    typer.echo(f"{len(records):,} records")
    typer.echo(report.to_string(index=False))
    typer.echo(
        f"predicted pairs before de-duplication across rules: {total:,} "
        f"(pair_budget {settings.pair_budget:,}; blocks over {settings.refine_block_size} "
        f"records are refined by {' > '.join(settings.refine_keys) or 'nothing'})"
    )
    for rule in settings.rules:
        if rule.refine_block_size is not None or rule.refine_keys is not None:
            size, keys = settings.refinement(rule)
            typer.echo(
                f"rule '{rule.name}': blocks over {size} records are refined by "
                f"{' > '.join(keys) or 'nothing'}"
            )
    if len(big):
        typer.echo("\nlargest blocks:")
        typer.echo(big.to_string(index=False))
    if total > settings.pair_budget:
        typer.echo(
            f"warning: {total:,} predicted pairs exceed pair_budget {settings.pair_budget:,}; "
            f"the run will {settings.over_budget} (blocking.over_budget)",
            err=True,
        )


@app.command(cls=_Command)
@_handle_errors
def dashboard(
    config: Annotated[
        Path | None,
        typer.Argument(
            metavar="CONFIG",
            help="Run config YAML (with --from: only to show the record values).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="DIR", help="Folder for the charts.")
    ] = None,
    from_output: Annotated[
        Path | None,
        typer.Option(
            "--from",
            metavar="DIR",
            help="Chart an existing run output folder (summary.json, pairs.parquet, "
            "identities.csv, golden_records.csv, model.json) instead of running the merge.",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", metavar="FILE", help="Reviewed pairs CSV: adds precision-recall charts."
        ),
    ] = None,
    png: Annotated[bool, typer.Option("--png", help="Static PNG charts instead of HTML.")] = False,
    quiet: Quiet = False,
) -> None:
    """Write a run's charts and the comparison and cluster viewers (HTML).

    With CONFIG alone the merge runs first. With --from OUTPUT the charts come from that
    run output folder without a merge; the pair charts then hold the pairs it kept
    (output.pairs_min_probability), and the viewers show record values only when CONFIG is
    given too (its sources are read and standardized, nothing else).
    """
    from linkage.errors import InputError
    from linkage.linker import Linker, read_outputs
    from linkage.review.labels import load_labels
    from linkage.viz import require_chart_packages, write_dashboards

    _setup_logging(True)
    if output is None:
        raise typer.BadParameter("give the charts' folder with --output", param_hint="--output")
    if config is None and from_output is None:
        raise typer.BadParameter("give a run config, or --from OUTPUT", param_hint="CONFIG")
    try:
        # before any work: a missing extra is an install step, not an internal error
        require_chart_packages()
    except ImportError as exc:
        raise LinkageError(f"linkage dashboard: {exc}") from None
    if output.exists() and not output.is_dir():
        raise InputError("--output exists and is not a folder", path=str(output))
    if from_output is not None and output.resolve() == from_output.resolve():
        raise InputError("--output must differ from the --from folder", path=str(output))
    reviewed = load_labels(labels, missing_ok=False) if labels is not None else None
    linker = Linker.from_yaml(config) if config is not None else None
    with _progress(quiet) as report:
        if from_output is None:
            assert linker is not None
            result = linker.run(progress=report)
        else:
            # checked before the sources are read: a wrong folder fails fast
            read_outputs(from_output)
            records = linker.standardize(progress=report) if linker is not None else None
            result = read_outputs(from_output, records)
        settings = result.model.settings or {}
        if linker is not None:
            threshold = linker.config.clustering.threshold
            rules = [rule.name for rule in linker.config.blocking.rules]
        else:
            from linkage.config import ClusterSettings

            cluster = ClusterSettings.model_validate(settings.get("clustering", {}))
            threshold = cluster.threshold
            rules = [r["name"] for r in settings.get("blocking", {}).get("rules", [])] or None
        report.stage("writing charts")
        paths = write_dashboards(
            result,
            output,
            threshold=threshold,
            rules=rules,
            labels=reviewed,
            fmt="png" if png else "html",
        )
    for name, path in paths.items():
        _echo(f"{name}: {path}", quiet)
    if linker is None:
        _echo(
            "the viewers show no record values: give the run config too "
            "(linkage dashboard CONFIG --from OUT) to show them",
            quiet,
        )


@app.command(cls=_Command)
@_handle_errors
def evaluate(
    truth: Annotated[
        Path, typer.Option("--truth", metavar="FILE", help="CSV with source, record_id, person_id.")
    ],
    pred: Annotated[
        Path,
        typer.Option(
            "--pred",
            metavar="FILE",
            help="A run's identities.csv, or identities.parquet (a file or a Spark run's folder).",
        ),
    ],
    by_tag: Annotated[
        bool, typer.Option(help="Also print recall per corruption type (truth column corruptions).")
    ] = True,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Print pairwise precision, recall, F1 and B-cubed scores of a run against ground truth."""
    from linkage import schema
    from linkage.evaluate import evaluate as score
    from linkage.evaluate import format_scores, read_tables, recall_by_tag

    _setup_logging(True)
    truth_table, pred_table = read_tables(truth, pred)  # each file read once for both
    scores = score(truth_table, pred_table)
    tagged = by_tag and schema.CORRUPTIONS in truth_table.columns
    table = recall_by_tag(truth_table, pred_table) if tagged else None
    if as_json:
        _print_json({**scores, "recall_by_tag": _rows(table)})
        return
    if quiet:
        return
    typer.echo(format_scores(scores))
    if table is not None and len(table):
        typer.echo("\nrecall by corruption type:")
        typer.echo(table.to_string(index=False))


@app.command(cls=_Command)
@_handle_errors
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="DIR", help="Folder for data and results.")
    ] = Path("demo-output"),
    persons: Annotated[int, typer.Option(min=1, help="Number of persons to generate.")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Generate synthetic registries and run the batch merge on them end to end, then evaluate."""
    from linkage.evaluate import evaluate_files, format_scores
    from linkage.identity import ID_KEY_FILE, batch_key, write_key_file
    from linkage.linker import Linker
    from linkage.paths import check_run_output
    from linkage.profile import format_profile
    from linkage.synth import generate

    _setup_logging(True)
    check_run_output(output)
    data_dir = output / "data"
    with _progress(quiet) as report:
        report.stage(f"generating registries for {persons:,} persons")
        generate(persons, seed=seed, output=data_dir)
        linker = Linker.from_yaml(data_dir / "run.yaml")
        linker.id_key, new_key_path = batch_key(output)
        result = linker.run(progress=report)
        paths = linker.write(output, progress=report)
        if new_key_path is not None:
            write_key_file(new_key_path, linker.id_key)
    if not quiet:
        typer.echo(format_profile(result.records))
        typer.echo("")
    _print_summary(result.summary, quiet)
    scores = evaluate_files(data_dir / "truth.csv", paths["identities"])
    _echo("\naccuracy against the generator's ground truth:", quiet)
    _echo(format_scores(scores), quiet)
    _echo(
        f"\n{persons:,} persons were generated; {scores['true_persons']:,} of them hold a record"
        " in at least one registry\n(the true persons above). 'matches' counts scored pairs at"
        " or above the threshold;\n'predicted' pairs count every two records that clustering"
        " gave one identity\n(records joined through a third one add pairs, cannot-link splits"
        " remove some).",
        quiet,
    )
    names = [p.name for p in paths.values()]
    key_path = new_key_path or output / ID_KEY_FILE
    if key_path.is_file():
        names.append(f"{key_path.name} (the secret naming identities: keep it private)")
    _echo(f"\noutputs in {output}: {', '.join(names)}", quiet)


store_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect an identity store file."
)
app.add_typer(store_app, name="store")


@store_app.command("check", cls=_Command)
@_handle_errors
def store_check_cmd(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Identity store file.")],
    quiet: Quiet = False,
) -> None:
    """Verify a store's structure and integrity (read-only); exit 2 when a problem is found.

    Checks the file (a whole DuckDB database, every block's checksum), the schema version,
    the tables and their key columns, unique row keys, every record in exactly one active
    identity, one golden record per active identity, the key index, runs and events.
    """
    from linkage.store_check import check_store

    report = check_store(store)
    _echo(report.format(), quiet)
    if not report.ok:
        typer.echo(f"error: {store}: {len(report.problems)} integrity problem(s)", err=True)
        raise typer.Exit(2)


@store_app.command("identities", cls=_Command)
@_handle_errors
def store_identities_cmd(
    store: Annotated[Path, typer.Argument(metavar="STORE", help="Identity store file.")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="FILE", help="File to write (.csv or .parquet)."),
    ],
    quiet: Quiet = False,
) -> None:
    """Write the store's record-to-identity map: one row per stored record
    (source, record_id, identity_id), as a batch run's identities.csv, after any number of
    ingests. Read-only, so it runs while `linkage serve` holds the store."""
    from linkage.io import write_csv, write_parquet
    from linkage.paths import check_output_file, check_store_path
    from linkage.store import Store

    check_store_path(store, create=False, write=False)
    check_output_file(output, "--output", (".csv", ".parquet"), not_over={"identity store": store})
    # an existing file is replaced only when it is an earlier map or export (never a registry)
    _check_replaces_export(output)
    with Store.open(store, create=False, read_only=True) as opened:
        links = opened.links()
    if output.suffix.lower() == ".parquet":
        path = write_parquet(links, output)
    else:
        path = write_csv(links, output)
    _echo(
        f"wrote {len(links):,} records of {links['identity_id'].nunique():,} identities to {path}",
        quiet,
    )


def _closed_stdio_to_devnull() -> None:
    """Point a standard stream the process was started without (``2>&-``, a daemon) at
    ``os.devnull``: Python then leaves ``sys.stderr`` None, which the progress display and
    logging cannot write to, and the next file opened would take fd 2 (or 1), so that a
    library's or a worker's writes to it would land in that file."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_WRONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115 - the process's own


def main() -> None:
    """Console entry point: click's own usage errors (an unknown option, a missing value) are
    printed with the ``error:`` prefix every other error has, and exit 2."""
    _closed_stdio_to_devnull()
    try:
        code = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        context = getattr(exc, "ctx", None)
        if context is not None:
            typer.echo(context.get_usage(), err=True)
            typer.echo(f"Try '{context.command_path} --help' for help.", err=True)
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
