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
    from linkage.paths import check_output_dir
    from linkage.synth import generate

    if persons < 1:
        raise typer.BadParameter("--persons must be at least 1")
    check_output_dir(output)
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
    from linkage.paths import check_output_file

    _setup_logging(quiet)
    check_output_file(output)
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
    quiet: Quiet = False,
) -> None:
    """Run the whole batch merge: identities.csv, golden records, scored pairs, model, summary."""
    from linkage.identity import batch_key
    from linkage.linker import Linker
    from linkage.paths import check_output_dir, check_store_path
    from linkage.pipeline import STAGES

    _setup_logging(quiet)
    # every path is checked before the work and before the store transaction commits
    check_output_dir(output)
    if store is not None:
        check_store_path(store, create=True)
    linker = Linker.from_yaml(config, store=store)
    # without a store the ids are keyed by $LINKAGE_ID_KEY or OUTPUT/identity.key (created once),
    # with one by the store's own secret
    linker.id_key = batch_key(output) if store is None else None
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
    from linkage.paths import check_output_dir, check_store_path

    _setup_logging(quiet)
    check_store_path(store, create=False)
    if output is not None:
        check_output_dir(output)
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
    from linkage.paths import check_store_path

    check_store_path(store, create=False, write=False)
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
        typer.Option("--policy", help="Sharing policy YAML (default: the one shipped in linkage/data/sharing.yaml)."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Write one department's view of the golden records: granted fields only, masked."""
    import os

    from linkage.errors import InputError
    from linkage.paths import check_input_file, check_output_file, check_store_path
    from linkage.share import DEFAULT_POLICY_PATH, export_view, load_policy, write_export
    from linkage.store import Store

    _setup_logging(True)
    if output.suffix.lower() not in (".csv", ".txt", ".parquet"):
        raise InputError("export file must end in .csv or .parquet", path=str(output))
    check_store_path(store, create=False, write=False)
    check_output_file(output)
    if policy is not None:
        check_input_file(policy, "--policy")
    sharing = load_policy(policy or DEFAULT_POLICY_PATH)
    with Store.open(store, create=False) as opened:
        golden, links = opened.table("golden"), opened.links()
        # the store keeps the master key of department pseudonyms (stable across exports)
        # unless the policy's environment variable provides one
        key = None if os.environ.get(sharing.pseudonym_key_env) else opened.secret("pseudonym_key")
    view = export_view(golden, links, sharing, department, key=key)
    path = write_export(view, output)
    _echo(f"wrote {len(view):,} rows for department '{department}' to {path}", quiet)


def _secret(env: str, key_file: Path | None, what: str) -> bytes:
    """A secret from a file or an environment variable, never from the command line."""
    import os

    from linkage.errors import ConfigError

    if key_file is not None:
        try:
            secret = key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what}: {exc.strerror}", path=str(key_file)) from None
        if not secret:
            raise ConfigError(f"the {what} file is empty", path=str(key_file))
        return secret
    text = os.environ.get(env, "")
    if not text:
        raise ConfigError(f"set the {what} in the environment variable {env} or pass --key-file")
    return text.encode("utf-8")


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
        str, typer.Option("--key-env", help="Environment variable holding the custodians' secret.")
    ] = "LINKAGE_PPRL_KEY",
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="File holding the custodians' secret.")
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
        typer.Option("--key-map", help="Also write record_id -> pseudonym here (keep it local)."),
    ] = None,
    hardening: Annotated[
        str, typer.Option(help="balance (default), xor_fold or none; all custodians alike.")
    ] = "balance",
    salt: Annotated[
        str, typer.Option(help="birth_year (default) or none: salt of name tokens; all alike.")
    ] = "birth_year",
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
    secret = _secret(key_env, key_file, "custodians' secret")
    if record_ids not in ("pseudonym", "plain"):
        raise typer.BadParameter("--record-ids must be pseudonym or plain")
    settings = EncodingSettings(hardening=hardening, salt=salt)  # type: ignore[arg-type]
    cfg = load_config(config)
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
    _echo(f"wrote {len(encoded):,} encoded records to {output} (key check {encoded['key_check'].iloc[0] if len(encoded) else '-'})", quiet)


@app.command("link-encodings")
@_handle_errors
def link_encodings_cmd(
    left: Annotated[Path, typer.Argument(help="One custodian's encodings (.csv or .parquet).")],
    right: Annotated[Path, typer.Argument(help="Another custodian's encodings.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Pairs file (.csv or .parquet).")],
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

    check_output_file(output)
    pairs = link_encodings(frames[0], frames[1], threshold, one_to_one=one_to_one)
    if output.suffix.lower() == ".parquet":
        write_parquet(pairs, output)
    else:
        write_csv(pairs, output)
    _echo(f"wrote {len(pairs):,} linked pairs to {output}", quiet)


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
    total = int(report["pairs"].sum())
    typer.echo(
        f"predicted pairs before de-duplication across rules: {total:,} "
        f"(pair_budget {settings.pair_budget:,}; blocks over {settings.refine_block_size} "
        f"records are refined by {' > '.join(settings.refine_keys) or 'nothing'})"
    )
    big = largest_blocks(records, settings, top=top)
    if len(big):
        typer.echo("\nlargest blocks:")
        typer.echo(big.to_string(index=False))
    over = report[report["blocks_over_warning"] > 0]
    for row in over.itertuples():
        typer.echo(
            f"warning: rule '{row.rule}' has {row.blocks_over_warning} block(s) over "
            f"{settings.warn_block_size} records ({row.blocks_skipped} part(s) over "
            f"{settings.max_block_size} after refinement are skipped)",
            err=True,
        )
    if total > settings.pair_budget:
        typer.echo(
            f"warning: {total:,} predicted pairs exceed pair_budget {settings.pair_budget:,}; "
            f"the run will {settings.over_budget} (blocking.over_budget)",
            err=True,
        )


@app.command()
@_handle_errors
def dashboard(
    config: Annotated[Path, typer.Argument(help="Run config YAML.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the charts.")],
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Reviewed pairs CSV: adds precision-recall charts."),
    ] = None,
    png: Annotated[bool, typer.Option("--png", help="Static PNG charts instead of HTML.")] = False,
    quiet: Quiet = False,
) -> None:
    """Run the merge and write its charts and the comparison and cluster viewers (HTML)."""
    from linkage.linker import Linker
    from linkage.pipeline import STAGES
    from linkage.review.labels import load_labels
    from linkage.viz import write_dashboards

    _setup_logging(True)
    if output.exists() and not output.is_dir():
        from linkage.errors import InputError

        raise InputError("--output exists and is not a folder", path=str(output))
    reviewed = load_labels(labels, missing_ok=False) if labels is not None else None
    linker = Linker.from_yaml(config)
    result = linker.run(progress=_progress(quiet, len(STAGES)))
    paths = write_dashboards(
        result,
        output,
        threshold=linker.config.clustering.threshold,
        rules=[rule.name for rule in linker.config.blocking.rules],
        labels=reviewed,
        fmt="png" if png else "html",
    )
    for name, path in paths.items():
        _echo(f"{name}: {path}", quiet)


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
    from linkage.identity import batch_key
    from linkage.linker import Linker
    from linkage.paths import check_output_dir
    from linkage.pipeline import STAGES
    from linkage.profile import format_profile
    from linkage.synth import generate

    _setup_logging(True)
    check_output_dir(output)
    data_dir = output / "data"
    say = _progress(quiet, len(STAGES) + 1)  # generating the registries comes first
    say(f"generating registries for {persons:,} persons")
    generate(persons, seed=seed, output=data_dir)
    linker = Linker.from_yaml(data_dir / "run.yaml")
    linker.id_key = batch_key(output)
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


store_app = typer.Typer(no_args_is_help=True, help="Inspect an identity store file.")
app.add_typer(store_app, name="store")


@store_app.command("check")
@_handle_errors
def store_check_cmd(
    store: Annotated[Path, typer.Argument(help="Identity store file.")],
) -> None:
    """Verify a store's structure and integrity (read-only); exit 2 when a problem is found.

    Checks the file (a whole DuckDB database, every block's checksum), the schema version,
    the tables and their key columns, unique row keys, every record in exactly one active
    identity, one golden record per active identity, the key index, runs and events.
    """
    from linkage.store_check import check_store

    report = check_store(store)
    typer.echo(report.format())
    if not report.ok:
        typer.echo(f"error: {store}: {len(report.problems)} integrity problem(s)", err=True)
        raise typer.Exit(2)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
