"""Check the paths a command will write before it does any work or touches a store.

A command that fails after its store transaction committed, or after an hour of linking,
because its output path is a file or not writable, leaves the user with half a result.
Imports the errors and the store's file checks; called by the CLI and the Linker.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from linkage.errors import InputError
from linkage.store import check_file, precheck_damage

# Files the local engine's `linkage run` writes into its output folder (linker.write_outputs,
# the CLI's key), then its folders: one standing there as the other kind would fail the run
# after all its work
LOCAL_RUN_FILES = (
    "identities.csv",
    "golden_records.csv",
    "pairs.parquet",
    "model.json",
    "cluster_sizes.csv",
    "summary.json",
    "identity.key",
    ".identity.key.pending",
    ".checkpoint.key",
)
LOCAL_RUN_FOLDERS = (".work",)
# ... and what `linkage ingest` writes there
RUN_OUTPUT_FILES = (*LOCAL_RUN_FILES, "events.csv")
# Outputs only the Spark engine writes: a local run would leave them beside its own
SPARK_ONLY_OUTPUTS = ("identities.parquet", "golden_records.parquet")
# Files the Spark engine writes (write_spark_outputs, the CLI's key; its Parquet outputs are
# folders it replaces), and what only a local run leaves, which a Spark run would not replace
SPARK_RUN_FILES = ("model.json", "cluster_sizes.csv", "summary.json", "identity.key")
LOCAL_ONLY_OUTPUTS = ("golden_records.csv", ".work", ".checkpoint.key", ".identity.key.pending")


def _existing_ancestor(path: Path) -> Path:
    """The nearest path at or above ``path`` that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def _probe_writable(folder: Path, what: str, target: Path) -> None:
    """Create and delete a file in ``folder``: a real test, which ``os.access`` is not
    (root passes every access check, and read-only mounts are invisible to it)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".linkage-probe-"):
            pass
    except OSError as exc:
        raise InputError(
            f"{what}: cannot write in folder {folder} ({exc.strerror or exc})", path=str(target)
        ) from None


def _check_parents(path: Path, what: str) -> None:
    """The folders above ``path`` must be (or can become) folders we may write in."""
    ancestor = _existing_ancestor(path.parent if path.parent != path else path)
    if not ancestor.is_dir():
        raise InputError(
            f"{what}: {ancestor} is a file, so no folder can be created under it", path=str(path)
        )
    _probe_writable(ancestor, what, path)


def check_output_dir(path: str | os.PathLike, what: str = "--output") -> Path:
    """Check a folder a command will write files into; it may not exist yet.

    Raises InputError (exit 2) when the path is an existing file, when a file stands where
    one of its parent folders would be, or when the folder that would hold it is not
    writable.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(
                f"{what} must be a folder (outputs are written into it), but this is a file",
                path=str(path),
            )
        _probe_writable(path, what, path)
        return path
    _check_parents(path, what)
    return path


def check_output_names(
    folder: str | os.PathLike,
    files: tuple[str, ...],
    what: str = "--output",
    *,
    folders: tuple[str, ...] = (),
    foreign: tuple[str, ...] = (),
) -> None:
    """Check the names a command will write in ``folder`` before it does any work.

    Raises InputError naming every conflict at once: a name of ``files`` that exists as a
    folder (the Spark engine writes its Parquet outputs as folders of part files), a name of
    ``folders`` that exists as something else, and any of ``foreign`` that exists (another
    kind of run's outputs the command would not replace, leaving two runs' outputs in one
    folder: a Spark run's Parquet folders for a local run, a local run's CSVs for Spark).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return  # the command creates it: nothing stands in the way
    as_folders = [n for n in files if (folder / n).is_dir()]
    as_files = [n for n in folders if (folder / n).exists() and not (folder / n).is_dir()]
    stale = [n for n in foreign if (folder / n).exists() or (folder / n).is_symlink()]
    problems = []
    if as_folders:
        one = len(as_folders) == 1
        problems.append(
            f"{', '.join(as_folders)} {'is a folder' if one else 'are folders'} where this "
            f"command writes {'a file' if one else 'files'}"
        )
    if as_files:
        one = len(as_files) == 1
        problems.append(
            f"{', '.join(as_files)} {'is a file' if one else 'are files'} where this "
            f"command keeps {'a folder' if one else 'folders'}"
        )
    if stale:
        one = len(stale) == 1
        problems.append(
            f"{', '.join(stale)} {'is an output' if one else 'are outputs'} of "
            f"{'a Spark run' if set(stale) <= set(SPARK_ONLY_OUTPUTS) else 'another run'} that "
            "this command would not replace, leaving two runs' outputs in one folder"
        )
    if problems:
        raise InputError(
            f"{'; '.join(problems)}. Choose a new or empty {what} folder, or remove them",
            path=str(folder),
        )


def check_run_output(path: str | os.PathLike, what: str = "--output") -> Path:
    """Check the output folder of a local-engine batch run (``linkage run``, ``demo``,
    ``Linker.write``): ``check_output_dir``, then ``check_output_names`` with the files and
    folders the run writes and the Spark engine's outputs it would not replace."""
    path = check_output_dir(path, what)
    check_output_names(
        path, LOCAL_RUN_FILES, what, folders=LOCAL_RUN_FOLDERS, foreign=SPARK_ONLY_OUTPUTS
    )
    return path


def check_spark_run_output(
    path: str | os.PathLike, identities_csv: bool, what: str = "--output"
) -> Path:
    """Check the output folder of a Spark-engine run before Spark starts: ``check_output_dir``,
    then ``check_output_names`` with the files the run writes and the outputs it would not
    replace (a local run's ``golden_records.csv`` and checkpoints, and ``identities.csv``
    when this run writes none: ``identities_csv`` false), which would look like this run's."""
    path = check_output_dir(path, what)
    files = (*SPARK_RUN_FILES, *(("identities.csv",) if identities_csv else ()))
    stale = (*LOCAL_ONLY_OUTPUTS, *(() if identities_csv else ("identities.csv",)))
    check_output_names(path, files, what, foreign=stale)
    return path


def check_output_file(
    path: str | os.PathLike,
    what: str = "--output",
    suffixes: tuple[str, ...] = (),
    *,
    not_over: dict[str, Path] | None = None,
) -> Path:
    """Check a file a command will write (atomically, so its folder must be writable).

    Raises InputError when the path is a symbolic link, a folder, has a suffix outside
    ``suffixes`` (when given), its folder cannot be created or written, or it is the same
    file as one of ``not_over`` (role -> path: the run's sources, config, store, outputs).
    """
    path = Path(path)
    if path.is_symlink():
        # the write would land on the link's target, which anyone able to create a file in
        # the folder could point at a registry or another output
        raise InputError(
            f"{what} is a symbolic link; name the file itself, not a link to it",
            path=str(path),
        )
    if path.is_dir():
        raise InputError(f"{what} must be a file, but this is a folder", path=str(path))
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(
            f"{what}: expected a file ending in {' or '.join(suffixes)}, got '{path.suffix}'",
            path=str(path),
        )
    _check_parents(path, what)
    for role, other in (not_over or {}).items():
        if other is not None and same_file(path, other):
            raise InputError(
                f"{what} is the same file as the {role} ({other}); writing it would replace "
                "that file: name another output file",
                path=str(path),
            )
    return path


def output_file_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute with its folder resolved but its last part kept as named, so a
    link there is never followed (``Path.resolve`` would follow it)."""
    path = Path(path).expanduser()
    return path.parent.resolve() / path.name


def same_file(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether writing ``path`` would replace ``other`` (the same file, also through a link
    or a hard link); false when ``other`` does not exist and names another path."""
    try:
        return os.path.samefile(path, other)
    except OSError:
        return output_file_path(path) == Path(other).expanduser().resolve()


def remove_stale_output(
    path: str | os.PathLike, keep: Iterable[str | os.PathLike | None] = ()
) -> None:
    """Remove ``path``, an output this run does not write (``model.json`` of a run that found
    no candidate pairs, so fitted no model), where an earlier run left it: beside this
    run's outputs it would pass for theirs. A path that is one of ``keep`` (this run's
    inputs, such as ``model.load``; None entries skipped) stays."""
    path = Path(path)
    if not (path.is_file() or path.is_symlink()):
        return
    if any(other is not None and same_file(path, other) for other in keep):
        return
    path.unlink(missing_ok=True)


def run_files(
    config: Any, output: str | os.PathLike | None = None, store: str | os.PathLike | None = None
) -> dict[str, Path]:
    """The files a batch run reads or writes, by role: each source, the config, the model
    files it loads, the store and the outputs written in ``output``; an output path given
    for anything else must be none of them (``check_output_file(not_over=...)``)."""
    files: dict[str, Path] = {}
    for name, source in config.sources.items():
        files[f"source '{name}'"] = Path(source.path)
    if getattr(config, "config_path", None) is not None:
        files["run config"] = Path(config.config_path)
    for key in ("load", "labels"):
        value = getattr(config.model, key, None)
        if value is not None:
            files[f"model.{key} file"] = Path(value)
    if store is not None:
        files["identity store"] = Path(store)
    if output is not None:
        for name in RUN_OUTPUT_FILES:
            files[f"run output {name}"] = Path(output) / name
    return files


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """Check a file a command will read: it exists and is a file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what}: file not found", path=str(path))
    if path.is_dir():
        raise InputError(f"{what} must be a file, but this is a folder", path=str(path))
    return path


def check_store_path(path: str | os.PathLike, *, create: bool, write: bool = True) -> Path:
    """Check an identity store path: an existing, whole store, or (with ``create``) a new file.

    Raises InputError for a missing store when ``create`` is false, for a folder, for a file
    that is not a DuckDB database (a CSV or Parquet file given by mistake), for a store
    shorter than its header declares, and for a store whose folder is not writable when the
    command will write to it (DuckDB writes a journal file beside the store).
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise InputError("identity store not found", path=str(path))
        _check_parents(path, "--store")
        return path
    check_file(path)
    precheck_damage(path)
    if write:
        _probe_writable(path.parent, "--store", path)
        if not os.access(path, os.W_OK):
            raise InputError("--store: the store file is read-only", path=str(path))
    return path
