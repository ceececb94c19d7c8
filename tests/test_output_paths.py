"""Output files never replace what a run reads or another file: links, sources, outputs.

An output path that is a symbolic link is refused (the write would land on its target); an
output that is the same file as a source, the config, the store or a file the run writes
itself is refused with exit 2 naming both roles, before any work, and the file is intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app

runner = CliRunner()

HEADER = "编号,姓名,性别,出生日期,身份证号,手机"
ROWS = [
    "A1,韩立新,男,1975-03-14,130102197503140018,15901112222",
    "A2,蒋桂芳,女,1981-10-02,130102198110020024,15903334444",
    "A3,沈国华,男,1969-06-21,130102196906210031,15905556666",
    ",缺编号,女,1990-01-01,,15907778888",  # no record id: set aside with --bad-rows
]
COLUMNS = {
    "姓名": "name",
    "性别": "gender",
    "出生日期": "birth_date",
    "身份证号": "id_number",
    "手机": "phone",
}


def _config(tmp: Path, **run) -> Path:
    for name in ("civil", "clinic"):
        (tmp / f"{name}.csv").write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    sources = {
        name: {"path": f"{name}.csv", "record_id": "编号", "columns": COLUMNS}
        for name in ("civil", "clinic")
    }
    doc: dict = {"sources": sources, "model": {"u_sample_pairs": 1000}}
    if run:
        doc["run"] = run
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _run(config: Path, out: Path, *extra: str):
    return runner.invoke(app, ["run", str(config), "--output", str(out), "-q", *extra])


def test_bad_rows_link_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    config = _config(tmp_path)
    victim = tmp_path / "keep.csv"
    victim.write_text("not to be replaced\n", encoding="utf-8")
    link = tmp_path / "aside.csv"
    link.symlink_to(victim)
    result = _run(config, tmp_path / "out", "--bad-rows", str(link))
    assert result.exit_code == 2, result.output
    assert "--bad-rows is a symbolic link" in result.output and "aside.csv" in result.output
    assert victim.read_text(encoding="utf-8") == "not to be replaced\n"
    assert link.is_symlink() and not (tmp_path / "out").exists()


def test_bad_rows_link_from_the_config_is_refused_too(tmp_path: Path) -> None:
    victim = tmp_path / "keep.csv"
    victim.write_text("not to be replaced\n", encoding="utf-8")
    (tmp_path / "aside.csv").symlink_to(victim)
    config = _config(tmp_path, bad_rows="aside.csv")
    result = _run(config, tmp_path / "out")
    assert result.exit_code == 2 and "symbolic link" in result.output
    assert victim.read_text(encoding="utf-8") == "not to be replaced\n"


def test_bad_rows_in_a_linked_folder_is_written_there(tmp_path: Path) -> None:
    # only the last part may not be a link: a linked folder is an ordinary place to write
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real", target_is_directory=True)
    config = _config(tmp_path)
    result = _run(config, tmp_path / "out", "--bad-rows", str(tmp_path / "via" / "bad.csv"))
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "real" / "bad.csv")) == 2


@pytest.mark.parametrize(
    ("target", "role"),
    [
        ("civil.csv", "source 'civil'"),
        ("out/identities.csv", "run output identities.csv"),
        ("out/golden_records.csv", "run output golden_records.csv"),
    ],
)
def test_bad_rows_over_a_file_of_the_run_is_refused(tmp_path: Path, target, role) -> None:
    config = _config(tmp_path)
    before = (tmp_path / "civil.csv").read_bytes()
    result = _run(config, tmp_path / "out", "--bad-rows", str(tmp_path / target))
    assert result.exit_code == 2, result.output
    assert f"--bad-rows is the same file as the {role}" in " ".join(result.output.split())
    assert (tmp_path / "civil.csv").read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_bad_rows_over_a_hard_link_of_a_source_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    os.link(tmp_path / "clinic.csv", tmp_path / "copy.csv")
    result = _run(config, tmp_path / "out", "--bad-rows", str(tmp_path / "copy.csv"))
    assert result.exit_code == 2 and "source 'clinic'" in result.output


def test_bad_rows_replaces_only_an_earlier_bad_rows_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n", encoding="utf-8")
    result = _run(config, tmp_path / "o1", "--bad-rows", str(other))
    assert result.exit_code == 2 and "not an earlier bad-rows file" in result.output
    assert other.read_text(encoding="utf-8") == "a,b\n1,2\n"
    aside = tmp_path / "bad.csv"
    for out in ("o2", "o3"):  # a rerun replaces its own earlier bad-rows file
        result = _run(config, tmp_path / out, "--bad-rows", str(aside))
        assert result.exit_code == 0, result.output
        assert list(pd.read_csv(aside).columns) == list(schema.REJECT_COLUMNS)


def test_standardize_output_over_a_source_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    before = (tmp_path / "civil.csv").read_bytes()
    result = runner.invoke(
        app, ["standardize", str(config), "--output", str(tmp_path / "civil.csv"), "-q"]
    )
    assert result.exit_code == 2 and "source 'civil'" in result.output
    assert (tmp_path / "civil.csv").read_bytes() == before


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("store")
    config = _config(tmp)
    store = tmp / "ids.duckdb"
    result = _run(config, tmp / "out", "--store", str(store), "--bad-rows", str(tmp / "b.csv"))
    assert result.exit_code == 0, result.output
    return store


def _export(store: Path, output: Path):
    # statistics_microdata: a shipped grant that needs no own source (this store holds civil
    # and clinic, which no shipped department names as its own)
    args = ["export", "--store", str(store), "--department", "statistics_microdata"]
    return runner.invoke(app, [*args, "--output", str(output), "-q"])


def test_export_refuses_a_registry_a_link_and_keeps_an_earlier_export(store, tmp_path) -> None:
    registry = tmp_path / "clinic.csv"
    registry.write_text("\n".join([HEADER, *ROWS[:3]]) + "\n", encoding="utf-8")
    before = registry.read_bytes()
    result = _export(store, registry)
    assert result.exit_code == 2 and "not an earlier export" in result.output
    assert registry.read_bytes() == before
    link = tmp_path / "share.csv"
    link.symlink_to(registry)
    result = _export(store, link)
    assert result.exit_code == 2 and "symbolic link" in result.output
    assert registry.read_bytes() == before
    for suffix in (".csv", ".parquet"):  # a repeated export replaces the earlier one
        target = tmp_path / f"health{suffix}"
        for _ in range(2):
            result = _export(store, target)
            assert result.exit_code == 0, result.output


def test_job_log_names_lines_and_kinds_of_bad_rows_not_their_ids(tmp_path: Path, caplog) -> None:
    config = _config(tmp_path)
    text = (tmp_path / "civil.csv").read_text(encoding="utf-8")
    # a duplicate id that is personal data, and one that would be a formula in a spreadsheet
    extra = [
        "130102197503140018,甲,男,1975-03-14,,1",
        "130102197503140018,乙,男,1975-03-14,,2",
        '"=HYPERLINK(""http://x"")",丙,女,1980-01-01,,3',
        '"=HYPERLINK(""http://x"")",丁,女,1980-01-02,,4',
    ]
    (tmp_path / "civil.csv").write_text(text + "\n".join(extra) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        result = _run(config, tmp_path / "out", "--bad-rows", str(tmp_path / "bad.csv"))
    assert result.exit_code == 0, result.output
    logged = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    civil = next(m for m in logged if "civil.csv" in m)
    assert "5 bad row(s) set aside" in civil and "lines 5, 6, 7, 8, 9" in civil
    assert "duplicate record id 4" in civil and "no record id 1" in civil
    assert "130102197503140018" not in civil and "HYPERLINK" not in civil


# --- a folder holding another run's outputs ----------------------------------------------------


@pytest.fixture(scope="module")
def synth_config(tmp_path_factory) -> Path:
    from linkage.synth import generate

    return generate(150, seed=3, output=tmp_path_factory.mktemp("synth") / "d").paths["config"]


def _spark_outputs(out: Path) -> None:
    """What a Spark run leaves in ``out``: its Parquet tables as folders of part files (with
    _SUCCESS and checksum files), beside single files."""
    frame = pd.DataFrame({schema.SOURCE: ["police"], schema.RECORD_ID: ["1"], "x": [0.5]})
    for name in ("identities.parquet", "golden_records.parquet", "pairs.parquet"):
        (out / name).mkdir(parents=True)
        frame.to_parquet(out / name / "part-00000.snappy.parquet", index=False)
        (out / name / "_SUCCESS").write_bytes(b"")
        (out / name / ".part-00000.snappy.parquet.crc").write_bytes(b"crc")
    (out / "summary.json").write_text("{}", encoding="utf-8")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_run_into_a_spark_run_folder_is_refused_before_any_work(synth_config, tmp_path) -> None:
    from linkage.errors import InputError
    from linkage.linker import Linker

    out = tmp_path / "mix"
    _spark_outputs(out)
    before = _files(out)
    result = _run(synth_config, out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    text = " ".join(result.output.split())
    assert f"{out}: pairs.parquet is a folder where this command writes a file" in text
    assert "identities.parquet, golden_records.parquet are outputs of a Spark run" in text
    assert "Choose a new or empty --output folder, or remove them" in text
    # nothing written: no identities.csv beside the Spark folders, no .work, no keys
    assert _files(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        ["identities.parquet", "golden_records.parquet", "pairs.parquet", "summary.json"]
    )
    # the Python API checks the same before it runs
    with pytest.raises(InputError, match="pairs.parquet is a folder"):
        Linker.from_yaml(synth_config).write(out)
    assert _files(out) == before
    # as the message says: with the Spark outputs removed the run writes into the folder
    for name in ("identities.parquet", "golden_records.parquet", "pairs.parquet"):
        for part in (out / name).iterdir():
            part.unlink()
        (out / name).rmdir()
    result = _run(synth_config, out)
    assert result.exit_code == 0, result.output
    assert (out / "pairs.parquet").is_file() and (out / "identities.csv").is_file()


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("identities.csv", "folder", "identities.csv is a folder where this command writes a file"),
        ("identity.key", "folder", "identity.key is a folder where this command writes a file"),
        (".work", "file", ".work is a file where this command keeps a folder"),
        ("golden_records.parquet", "file", "golden_records.parquet is an output of a Spark run"),
    ],
)
def test_run_refuses_each_output_name_taken_by_the_wrong_kind(
    synth_config, tmp_path, name, kind, says
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if kind == "folder":
        (out / name).mkdir()
    else:
        (out / name).write_text("x", encoding="utf-8")
    result = _run(synth_config, out)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else written


def test_ingest_output_with_a_folder_in_the_way_is_refused_before_the_store(
    synth_config, tmp_path
) -> None:
    import shutil

    made = _run(synth_config, tmp_path / "first", "--store", str(tmp_path / "made.duckdb"))
    assert made.exit_code == 0, made.output
    store = tmp_path / "ids.duckdb"
    shutil.copyfile(tmp_path / "made.duckdb", store)
    before = store.read_bytes()
    out = tmp_path / "out"
    (out / "events.csv").mkdir(parents=True)
    args = ["ingest", str(synth_config), "--store", str(store), "--output", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "events.csv is a folder where this command writes a file" in result.output
    assert store.read_bytes() == before  # the store took no batch
    assert sorted(p.name for p in out.iterdir()) == ["events.csv"]


def test_an_earlier_output_a_run_does_not_write_is_removed_unless_it_is_an_input(
    tmp_path: Path,
) -> None:
    """``remove_stale_output``: an earlier run's model.json goes (this run fitted none), but
    not when this run loads it (``model.load``), also through a link or a hard link."""
    from linkage.paths import remove_stale_output

    out = tmp_path / "out"
    out.mkdir()
    stale = out / "model.json"
    stale.write_text("earlier", encoding="utf-8")
    remove_stale_output(stale, keep=[None, tmp_path / "other.json"])
    assert not stale.exists()
    remove_stale_output(stale, keep=[None])  # nothing there: nothing to do
    stale.write_text("loaded", encoding="utf-8")
    remove_stale_output(stale, keep=[str(stale)])
    assert stale.read_text(encoding="utf-8") == "loaded"
    (tmp_path / "link.json").symlink_to(stale)
    os.link(stale, tmp_path / "hard.json")
    for other in ("link.json", "hard.json"):
        remove_stale_output(stale, keep=[tmp_path / other])
        assert stale.read_text(encoding="utf-8") == "loaded", other
    remove_stale_output(stale)
    assert not stale.exists() and (tmp_path / "hard.json").exists()
