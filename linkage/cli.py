"""Command-line interface: read config, call the stages in order, report, write outputs.

Thin by design; exit codes: 0 success, 2 bad config or input, 1 internal error.
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
    quiet: Quiet = False,
) -> None:
    """Generate synthetic police, civil-affairs and health registries with ground truth."""
    from linkage.synth import generate

    if persons < 1:
        raise typer.BadParameter("--persons must be at least 1")
    start = time.perf_counter()
    result = generate(persons, seed=seed, corruption=corruption, output=output, excel=excel)
    _echo(
        f"wrote {len(result.police):,} police, {len(result.civil_affairs):,} civil-affairs and "
        f"{len(result.health):,} health records for {persons:,} persons to {output} "
        f"in {time.perf_counter() - start:.1f}s (config: {output / 'run.yaml'})",
        quiet,
    )


@app.command()
@_handle_errors
def profile(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    quiet: Quiet = False,
) -> None:
    """Print a data-quality summary per source: missing and invalid values, ID problems."""
    from linkage.config import load_config
    from linkage.io import read_sources
    from linkage.profile import format_profile
    from linkage.standardize.combine import standardize

    _setup_logging(True)
    cfg = load_config(config)
    records = standardize(read_sources(cfg), cfg.standardize)
    typer.echo(format_profile(records))


@app.command("standardize")
@_handle_errors
def standardize_cmd(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    quiet: Quiet = False,
) -> None:
    """Read and standardize every source; write the records with derived columns as Parquet."""
    from linkage.config import load_config
    from linkage.io import read_sources, write_parquet
    from linkage.standardize.combine import standardize

    _setup_logging(quiet)
    cfg = load_config(config)
    start = time.perf_counter()
    records = standardize(read_sources(cfg), cfg.standardize)
    write_parquet(records, output)
    _echo(
        f"standardized {len(records):,} records in {time.perf_counter() - start:.1f}s -> {output}",
        quiet,
    )


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
    """Generate synthetic registries and run them end to end."""
    from linkage.config import load_config
    from linkage.io import read_sources, write_parquet
    from linkage.profile import format_profile
    from linkage.standardize.combine import standardize
    from linkage.synth import generate

    _setup_logging(True)
    data_dir = output / "data"
    start = time.perf_counter()
    generate(persons, seed=seed, output=data_dir)
    _echo(f"generated registries for {persons:,} persons in {data_dir}", quiet)
    cfg = load_config(data_dir / "run.yaml")
    records = standardize(read_sources(cfg), cfg.standardize)
    write_parquet(records, output / "standardized.parquet")
    _echo(format_profile(records), quiet)
    _echo(
        f"standardized {len(records):,} records -> {output / 'standardized.parquet'} "
        f"({time.perf_counter() - start:.1f}s)",
        quiet,
    )


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
