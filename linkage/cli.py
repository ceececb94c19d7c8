"""Command-line interface: parse arguments, call the Linker (or a stage), print, map errors.

Thin by design: every capability is a Python call first (``Linker``, ``read_records``, the
stage functions); a command only wires arguments to it. Exit codes: 0 success, 2 bad config
or input (every ``LinkageError``), 1 internal error.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from linkage.errors import LinkageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Link Chinese person records from several registries into one identity per person.",
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]


def _echo(message: str, quiet: bool = False) -> None:
    if not quiet:
        typer.echo(message)


def _handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LinkageError into exit code 2 with its message; anything else into 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except LinkageError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
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


@app.command()
@_handle_errors
def synth(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write registries to.")],
    persons: Annotated[int, typer.Option(help="Number of persons in the population.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    corruption: Annotated[
        float, typer.Option(help="Scale of all corruption rates (0 clean, 1 realistic).")
    ] = 1.0,
    excel: Annotated[bool, typer.Option(help="Write the health registry as .xlsx.")] = False,
    new_batch: Annotated[
        float,
        typer.Option(
            help="Share of each registry held out as a later batch (<source>_new.csv, new.yaml)."
        ),
    ] = 0.0,
    quiet: Quiet = False,
) -> None:
    """Generate synthetic police, civil-affairs and health registries with ground truth."""
    from linkage.synth import generate

    if persons < 1:
        raise typer.BadParameter("--persons must be at least 1")
    start = time.perf_counter()
    result = generate(
        persons, seed=seed, corruption=corruption, output=output, excel=excel, new_batch=new_batch
    )
    _echo(
        f"wrote {len(result.police):,} police, {len(result.civil_affairs):,} civil-affairs and "
        f"{len(result.health):,} health records for {persons:,} persons to {output} "
        f"in {time.perf_counter() - start:.1f}s (config: {output / 'run.yaml'})",
        quiet,
    )
    if "new_config" in result.paths:
        _echo(f"held out a later batch: {result.paths['new_config']}", quiet)


@app.command()
@_handle_errors
def profile(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    quiet: Quiet = False,
) -> None:
    """Print a data-quality summary per source: missing and invalid values, ID problems."""
    from linkage.config import load_config
    from linkage.io import read_records
    from linkage.profile import format_profile

    _setup_logging(True)
    typer.echo(format_profile(read_records(load_config(config))))


@app.command("standardize")
@_handle_errors
def standardize_cmd(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    quiet: Quiet = False,
) -> None:
    """Read and standardize every source; write the records with derived columns as Parquet."""
    from linkage.config import load_config
    from linkage.io import read_records, write_parquet

    _setup_logging(quiet)
    cfg = load_config(config)
    start = time.perf_counter()
    records = read_records(cfg)
    write_parquet(records, output)
    _echo(
        f"standardized {len(records):,} records in {time.perf_counter() - start:.1f}s -> {output}",
        quiet,
    )


def _progress(quiet: bool, stages: int) -> Callable[[str], None]:
    """Return a stage reporter: a progress bar of ``stages`` steps on a terminal, timed
    lines otherwise. The caller passes the length of the stage list it runs."""
    start = time.perf_counter()
    if quiet:
        return lambda _stage: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=stages, unit="stage", file=sys.stderr, leave=True)

        def advance(stage: str) -> None:
            if bar.desc:
                bar.update(1)  # a new stage means the previous one is done
            if stage == "done":
                bar.close()
                return
            bar.set_description(stage)

        return advance

    def say(stage: str) -> None:
        typer.echo(f"[{time.perf_counter() - start:7.1f}s] {stage}", err=True)

    return say


def _print_summary(summary: dict, quiet: bool) -> None:
    if quiet:
        return
    typer.echo(f"records:          {summary['records']:,}  {summary['records_per_source']}")
    typer.echo(f"candidate pairs:  {summary['candidate_pairs']:,}")
    for rule, count in summary["pairs_per_rule"].items():
        typer.echo(f"  {rule:<28} {count:>12,}")
    typer.echo(f"matches:          {summary['matches']:,}")
    typer.echo(f"identities:       {summary['identities']:,}")
    stats = summary.get("cluster_stats", {})
    typer.echo("cluster sizes:    " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    typer.echo(
        "seconds:          " + ", ".join(f"{k} {v:.1f}" for k, v in summary["seconds"].items())
    )


def _run_spark(
    config: Any, output: Path, master: str | None, previous: Path | None, store: Any, quiet: bool
) -> None:
    """The ``run`` command on the Spark engine (pyspark is imported only here)."""
    from linkage.errors import ConfigError

    if store is not None:
        raise ConfigError(
            "--store works with the local engine; the Spark engine keeps ids with --previous",
            key="engine",
        )
    try:
        from linkage.spark.engine import STAGE_COUNT, run_spark
    except ImportError as exc:
        raise ConfigError(str(exc), key="engine") from None
    say = _progress(quiet, STAGE_COUNT)
    result = run_spark(config, output, master=master, previous=previous, progress=say)
    _print_summary(result.summary, quiet)
    _echo(f"wrote the Spark engine's outputs to {output}", quiet)


@app.command()
@_handle_errors
def run(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the outputs.")],
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Identity store file: keep its IDs and write the run into it."
        ),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine", help="local (default) or spark; overrides 'engine' in the config."
        ),
    ] = None,
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master", help="Spark master URL, e.g. local[4] or yarn (engine spark)."
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="Engine spark: a previous run's identities (.csv/.parquet) whose ids are kept.",
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run the whole batch merge: identities.csv, golden records, scored pairs, model, summary."""
    from linkage.linker import Linker
    from linkage.pipeline import STAGES

    _setup_logging(quiet)
    if engine not in (None, "local", "spark"):
        raise typer.BadParameter(f"--engine must be local or spark, got {engine!r}")
    linker = Linker.from_yaml(config, store=None if engine == "spark" else store)
    if (engine or linker.config.engine) == "spark":
        _run_spark(linker.config, output, spark_master, previous, store, quiet)
        return
    if previous is not None:
        raise typer.BadParameter("--previous is for --engine spark; the local engine uses --store")
    say = _progress(quiet, len(STAGES))
    result = linker.run(progress=say)
    say("done")
    paths = linker.write(output)
    _print_summary(result.summary, quiet)
    _echo(f"wrote {', '.join(str(p) for p in paths.values())}", quiet)


@app.command()
@_handle_errors
def ingest(
    config: Annotated[Path, typer.Argument(help="Run config naming the new records' files.")],
    store: Annotated[Path, typer.Option("--store", help="Identity store file to update.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder for identities.csv of the affected records."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Link new records (or updated ones) against an identity store, keeping stable IDs."""
    from linkage.incremental.ingest import STAGES
    from linkage.linker import Linker

    _setup_logging(quiet)
    linker = Linker.from_yaml(config, store=store)
    result = linker.ingest(progress=_progress(quiet, len(STAGES)), output=output)
    s = result.summary
    _echo(
        f"run {result.run_id}: {s['new_records']:,} records ({s['updated_records']:,} updates), "
        f"{s['matches']:,} matches, {s['touched_identities']:,} stored identities touched; "
        f"events {s['events']}; seconds {s['seconds']}",
        quiet,
    )


@app.command()
@_handle_errors
def search(
    store: Annotated[Path, typer.Option("--store", help="Identity store file.")],
    name: Annotated[str | None, typer.Option("--name", help="Name, e.g. 张伟.")] = None,
    id_number: Annotated[str | None, typer.Option("--id-number", help="Resident ID.")] = None,
    birth_date: Annotated[str | None, typer.Option("--birth-date", help="Birth date.")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="Phone number.")] = None,
    gender: Annotated[str | None, typer.Option("--gender", help="Gender.")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Current address.")] = None,
    top: Annotated[int, typer.Option(help="Candidate identities to return.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Find the stored identities most likely to be one person, with explanations."""
    import json

    from linkage.linker import Linker

    _setup_logging(True)
    record = {
        "name": name,
        "id_number": id_number,
        "birth_date": birth_date,
        "phone": phone,
        "gender": gender,
        "current_address": address,
    }
    if not any(record.values()):
        raise typer.BadParameter("give at least one of --name, --id-number, --birth-date, --phone")
    hits = Linker(store=store).search({k: v for k, v in record.items() if v}, top=top)
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False, indent=2, default=str))
        return
    if not hits:
        typer.echo("no candidate identities")
    for i, hit in enumerate(hits, 1):
        g = hit["golden"]
        typer.echo(
            f"{i}. {hit['identity_id']}  p={hit['match_probability']:.4f}  "
            f"w={hit['match_weight']:.2f}  {g.get('name')} {g.get('birth_date')} "
            f"({g.get('records')} records)"
        )
        typer.echo(
            "   "
            + ", ".join(
                f"{e['comparison']}={e['level']} {e['weight']:+.2f}" for e in hit["explanation"]
            )
        )


@app.command()
@_handle_errors
def export(
    store: Annotated[Path, typer.Option("--store", help="Identity store file.")],
    department: Annotated[str, typer.Option("--department", help="Department view to write.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (.csv or .parquet).")
    ],
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Sharing policy YAML (default configs/sharing.yaml)."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Write one department's view of the golden records: granted fields only, masked."""
    from linkage.share import export_command
    from linkage.store import Store

    _setup_logging(True)
    with Store.open(store, create=False) as opened:
        golden, links = opened.table("golden"), opened.links()
    path, rows = export_command(golden, links, policy, department, output)
    _echo(f"wrote {rows:,} rows for department '{department}' to {path}", quiet)


@app.command()
@_handle_errors
def encode(
    config: Annotated[Path, typer.Argument(help="Run config naming the sources to encode.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write (.csv or .parquet).")
    ],
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Encode only this source (repeatable).")
    ] = None,
    key_env: Annotated[
        str, typer.Option("--key-env", help="Environment variable holding the shared secret key.")
    ] = "LINKAGE_PPRL_KEY",
    quiet: Quiet = False,
) -> None:
    """Write keyed Bloom-filter encodings (CLKs) of name, birth date and ID for linking without raw identifiers."""
    import os

    from linkage.errors import ConfigError
    from linkage.pprl import encode_command

    _setup_logging(True)
    key = os.environ.get(key_env, "")
    if not key:
        raise ConfigError(f"set the shared secret key in the environment variable {key_env}")
    path, rows = encode_command(config, output, key.encode("utf-8"), sources=source or None)
    _echo(f"wrote {rows:,} encoded records to {path}", quiet)


@app.command("blocking")
@_handle_errors
def blocking_cmd(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    top: Annotated[int, typer.Option(help="Largest blocks to list per rule.")] = 3,
    quiet: Quiet = False,
) -> None:
    """Report how many pairs each blocking rule yields, and the largest blocks, before comparing."""
    from linkage.blocking import blocking_report, largest_blocks
    from linkage.linker import Linker

    _setup_logging(True)
    linker = Linker.from_yaml(config)
    records = linker.standardize()
    settings = linker.config.blocking
    report = blocking_report(records, settings)
    typer.echo(f"{len(records):,} records")
    typer.echo(report.to_string(index=False))
    typer.echo(f"total pairs before de-duplication across rules: {int(report['pairs'].sum()):,}")
    big = largest_blocks(records, settings, top=top)
    if len(big):
        typer.echo("\nlargest blocks:")
        typer.echo(big.to_string(index=False))
    over = report[report["blocks_over_warning"] > 0]
    for row in over.itertuples():
        typer.echo(
            f"warning: rule '{row.rule}' has {row.blocks_over_warning} block(s) over "
            f"{settings.warn_block_size} records ({row.blocks_skipped} over "
            f"{settings.max_block_size} are skipped)",
            err=True,
        )


@app.command()
@_handle_errors
def evaluate(
    truth: Annotated[Path, typer.Option("--truth", help="CSV with source, record_id, person_id.")],
    pred: Annotated[Path, typer.Option("--pred", help="identities.csv from a run.")],
    by_tag: Annotated[
        bool, typer.Option(help="Also print recall per corruption type (truth column corruptions).")
    ] = True,
) -> None:
    """Print pairwise precision, recall, F1 and B-cubed scores of a run against ground truth."""
    from linkage.evaluate import evaluate_files, format_scores, recall_by_tag_files

    scores = evaluate_files(truth, pred)
    typer.echo(format_scores(scores))
    if by_tag:
        table = recall_by_tag_files(truth, pred)
        if table is not None and len(table):
            typer.echo("\nrecall by corruption type:")
            typer.echo(table.to_string(index=False))


@app.command()
@_handle_errors
def demo(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for data and results.")
    ] = Path("demo-output"),
    persons: Annotated[int, typer.Option(help="Number of persons to generate.")] = 3000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quiet: Quiet = False,
) -> None:
    """Generate synthetic registries and run the batch merge on them end to end, then evaluate."""
    from linkage.evaluate import evaluate_files, format_scores
    from linkage.linker import Linker
    from linkage.pipeline import STAGES
    from linkage.profile import format_profile
    from linkage.synth import generate

    _setup_logging(True)
    data_dir = output / "data"
    say = _progress(quiet, len(STAGES) + 1)  # generating the registries comes first
    say(f"generating registries for {persons:,} persons")
    generate(persons, seed=seed, output=data_dir)
    linker = Linker.from_yaml(data_dir / "run.yaml")
    result = linker.run(progress=say)
    say("done")
    paths = linker.write(output)
    if not quiet:
        typer.echo(format_profile(result.records))
        typer.echo("")
    _print_summary(result.summary, quiet)
    _echo("\naccuracy against the generator's ground truth:", quiet)
    _echo(format_scores(evaluate_files(data_dir / "truth.csv", paths["identities"])), quiet)
    _echo(f"\noutputs in {output}: {', '.join(p.name for p in paths.values())}", quiet)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
