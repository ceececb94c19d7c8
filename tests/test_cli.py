"""The command line: each command on generated data, exit codes and error messages."""

from __future__ import annotations

import contextlib
import json
import os

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage.cli import app
from linkage.share import DEFAULT_POLICY_PATH
from linkage.store import Store

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    result = runner.invoke(
        app, ["synth", "--persons", "300", "--seed", "2", "--output", str(out / "data")]
    )
    assert result.exit_code == 0, result.output
    return out


def test_synth_writes_registries_and_truth(data):
    names = sorted(p.name for p in (data / "data").iterdir())
    assert names == [
        "civil_affairs.csv",
        "health.csv",
        "police.csv",
        "run.yaml",
        "sources",
        "truth.csv",
    ]


def test_run_writes_contract_outputs_and_evaluate_reads_them(data):
    out = data / "run"
    result = runner.invoke(app, ["run", str(data / "data" / "run.yaml"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    ids = pd.read_csv(out / "identities.csv", dtype=str)
    truth = pd.read_csv(data / "data" / "truth.csv", dtype=str)
    assert list(ids.columns) == ["source", "record_id", "identity_id"]
    assert len(ids) == len(truth)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["records"] == len(truth) and "block" in summary["seconds"]
    # the blocking prediction is kept with the run; pairs per rule never exceed it
    predicted = summary["blocking"]
    for rule, made in summary["pairs_per_rule"].items():
        assert made <= predicted[rule]["pairs"]
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--truth",
            str(data / "data" / "truth.csv"),
            "--pred",
            str(out / "identities.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "pairwise" in result.output and "recall by corruption type" in result.output


def test_quiet_run_prints_nothing(data):
    result = runner.invoke(
        app, ["run", str(data / "data" / "run.yaml"), "--output", str(data / "q"), "--quiet"]
    )
    assert result.exit_code == 0
    assert result.stdout.strip() == ""


def test_profile_and_blocking_reports(data):
    result = runner.invoke(app, ["profile", str(data / "data" / "run.yaml")])
    assert result.exit_code == 0, result.output
    assert "id_checksum" in result.output and "civil_affairs" in result.output
    result = runner.invoke(app, ["blocking", str(data / "data" / "run.yaml")])
    assert result.exit_code == 0, result.output
    assert "id_number" in result.output and "largest blocks" in result.output
    assert "predicted pairs before de-duplication across rules" in result.output
    assert "refined_by" in result.output


def test_standardize_writes_parquet(data):
    out = data / "std.parquet"
    result = runner.invoke(
        app, ["standardize", str(data / "data" / "run.yaml"), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert "name_pinyin" in frame.columns and "quality_flags" in frame.columns


def test_bad_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sources:\n  a: {path: a.csv, record_id: id, colums: {}}\n", encoding="utf-8")
    result = runner.invoke(app, ["run", str(path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "sources.a.colums" in result.output and "unknown key" in result.output


def test_bad_input_exits_2_naming_the_file(tmp_path):
    (tmp_path / "a.csv").write_text("id,姓名\n1,张伟\n1,李娜\n", encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(
        "sources:\n  a: {path: a.csv, record_id: id, columns: {姓名: name}}\n", encoding="utf-8"
    )
    result = runner.invoke(app, ["run", str(path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "a.csv" in result.output and "duplicate record id" in result.output


@pytest.mark.parametrize(
    ("error", "code", "said"),
    [
        (RuntimeError("simulated failure"), 1, "internal error: RuntimeError: simulated failure"),
        # an engine's error of a full disk carries the C library's words but no errno
        # (DuckDB's spill files): the same clear error as any full disk, exit 2
        (
            duckdb.IOException(
                'Could not write file "/x/.tmp/duckdb_temp_block": No space left on device'
            ),
            2,
            "error: no space left on the device; free some space",
        ),
    ],
)
def test_internal_error_exits_1_and_a_full_disk_2(tmp_path, monkeypatch, error, code, said):
    import linkage.linker

    def boom(self, progress=None, **kwargs):
        raise error

    monkeypatch.setattr(linkage.linker.Linker, "run", boom)
    (tmp_path / "a.csv").write_text("id,姓名\n1,张伟\n", encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(
        "sources:\n  a: {path: a.csv, record_id: id, columns: {姓名: name}}\n", encoding="utf-8"
    )
    result = runner.invoke(app, ["run", str(path), "--output", str(tmp_path / "o")])
    assert result.exit_code == code
    assert said in result.output and str(error) in result.output
    assert ("internal error" in result.output) == (code == 1)


def test_a_full_disk_is_an_error_naming_the_file_and_resume_finishes(tmp_path, monkeypatch):
    """Writing the outputs onto a full disk (the CSV rows' write fails with ENOSPC, as
    pyarrow's does) stops the run with exit 2 naming the file, not an internal error; once
    there is room, ``--resume`` finishes from the checkpoints."""
    import errno

    import linkage.io

    (tmp_path / "a.csv").write_text("id,姓名\n1,张伟\n2,李娜\n", encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(
        "sources:\n  a: {path: a.csv, record_id: id, columns: {姓名: name}}\n", encoding="utf-8"
    )
    out = tmp_path / "o"

    def full(table, stream):
        stream.write(b"1,")
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(linkage.io, "_write_csv_rows", full)
        result = runner.invoke(app, ["run", str(path), "--output", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {out}{os.sep}") and ".csv: no space left on the device" in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    result = runner.invoke(app, ["run", str(path), "--output", str(out), "--quiet", "--resume"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out / "identities.csv")) == 2


def test_a_full_disk_while_saving_a_stage_keeps_the_finished_stages(tmp_path, monkeypatch):
    """The disk fills while the clustering checkpoint is saved: exit 2 naming that file,
    the stages saved before it stay (not removed as for refused input), and ``--resume``
    finishes with the identities of a run that never stopped."""
    import errno

    import linkage.io

    rows = "id,姓名,身份证号\n1,张伟,11010519491231002X\n2,张伟,11010519491231002X\n3,李娜,\n"
    (tmp_path / "a.csv").write_text(rows, encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(
        "sources:\n  a: {path: a.csv, record_id: id, columns: {姓名: name, 身份证号: id_number}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "o"
    real = linkage.io.atomic_write

    def full_at_clustering(target, writer):
        if f"{os.sep}clustering{os.sep}" in str(target):

            def writer(tmp):  # noqa: F811 - the disk fills instead
                raise OSError(errno.ENOSPC, "No space left on device")

        return real(target, writer)

    with monkeypatch.context() as patch:
        patch.setattr(linkage.io, "atomic_write", full_at_clustering)
        result = runner.invoke(app, ["run", str(path), "--output", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert f"{os.sep}.work{os.sep}clustering{os.sep}" in line and "no space left" in line
    saved = {p.name for p in (out / ".work").iterdir()}
    assert {"records.done", "blocking.done", "scoring.done"} <= saved
    assert "clustering.done" not in saved and (out / ".identity.key.pending").is_file()

    result = runner.invoke(app, ["run", str(path), "--output", str(out), "--quiet", "--resume"])
    assert result.exit_code == 0, result.output
    again = tmp_path / "again"
    key = (out / "identity.key").read_text()
    (again).mkdir()
    (again / "identity.key").write_text(key)
    result = runner.invoke(app, ["run", str(path), "--output", str(again), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "identities.csv").read_bytes() == (again / "identities.csv").read_bytes()


def test_demo_runs_end_to_end(tmp_path):
    result = runner.invoke(app, ["demo", "--output", str(tmp_path), "--persons", "300"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "identities.csv").exists() and (tmp_path / "data" / "truth.csv").exists()
    assert "accuracy against the generator's ground truth" in result.output


def test_store_export_and_encode_commands(data, tmp_path, monkeypatch):
    store = tmp_path / "ids.duckdb"
    config = str(data / "data" / "run.yaml")
    result = runner.invoke(
        app, ["run", config, "--output", str(tmp_path / "o"), "--store", str(store), "-q"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "health.csv"
    result = runner.invoke(
        app, ["export", "--store", str(store), "--department", "health", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    view = pd.read_csv(out, dtype=str)
    # the shipped policy: health sees the ID cut to its region code and its own record ids only
    assert len(view) > 0
    assert view["id_number"].dropna().str.fullmatch(r"\d{6}\*{12}").all()
    assert view["source_records"].dropna().str.split("|").explode().str.startswith("health:").all()
    result = runner.invoke(
        app, ["export", "--store", str(store), "--department", "nobody", "--output", str(out)]
    )
    assert result.exit_code == 2 and "nobody" in result.output
    ctx = ["--context", "test-round-1"]
    result = runner.invoke(app, ["encode", config, "--output", str(tmp_path / "clk.parquet"), *ctx])
    assert result.exit_code == 2 and "LINKAGE_PPRL_KEY" in result.output
    monkeypatch.setenv("LINKAGE_PPRL_KEY", "9b2e41d07c5a8f36e1d24b9c0a7f53e8")
    for source in ("health", "police"):
        result = runner.invoke(
            app,
            ["encode", config, "--output", str(tmp_path / f"{source}.parquet"), "--source", source,
             *ctx],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    clk = pd.read_parquet(tmp_path / "health.parquet")
    assert list(clk.columns) == ["source", "record_id", "clk", "key_check"]
    assert set(clk["source"]) == {"health"} and clk["record_id"].str.startswith("R").all()
    # the linkage unit links without any key
    monkeypatch.delenv("LINKAGE_PPRL_KEY")
    pairs = tmp_path / "pairs.csv"
    args = ["link-encodings", str(tmp_path / "police.parquet"), str(tmp_path / "health.parquet")]
    result = runner.invoke(app, [*args, "--output", str(pairs)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(pairs)) > 0
    # a custodian with a mistyped key: refused with both key check values, exit 2
    key_file = tmp_path / "typo.key"
    key_file.write_text("9b2e41d07c5a8f36e1d24b9c0a7f53e9\n", encoding="utf-8")
    result = runner.invoke(
        app,
        ["encode", config, "--output", str(tmp_path / "police.parquet"), "--source", "police",
         "--key-file", str(key_file), *ctx],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--output", str(pairs)])
    assert result.exit_code == 2 and "key check values differ" in result.output
    result = runner.invoke(
        app, ["search", "--store", str(store), "--name", view.iloc[0].get("name", "张伟") or "张伟"]
    )
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- usage, help


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "--store", "ids.duckdb"], "give at least one of --name"),
        (["synth", "--persons", "0", "--output", "x"], "--persons"),
        (["synth", "--new-batch", "1.5", "--output", "x"], "--new-batch"),
        (["search", "--store", "ids.duckdb", "--name", "张伟", "--top", "0"], "--top"),
        (["run", "run.yaml"], "--output"),
        (["run", "run.yaml", "--output", "o", "--no-such-option"], "--no-such-option"),
        (["nosuchcommand"], "nosuchcommand"),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert not (tmp_path / "x").exists()  # refused before any work
    if args[0] != "nosuchcommand":  # the command's usage line, as the docs promise
        usage = result.output.split("Usage: ", 1)[-1].splitlines()[0]
        assert "Usage: " in result.output and f" {args[0]} " in usage, result.output


def test_version_prints_the_package_version():
    from linkage._version import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"linkage {__version__}"


def test_help_shows_flags_as_flags_and_points_at_the_config_reference():
    for args in (["--help"], ["run", "--help"], ["synth", "--help"], ["ingest", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output
    text = runner.invoke(app, ["run", "--help"]).output
    assert "-q, --quiet" in text and "--json" in text
    assert "'Configuration'" in text and "docs/engineer.md" in text
    assert "docs/engineer.md" in runner.invoke(app, ["--help"]).output
    # a flag takes no value: "--quiet true" is a usage error, not a silent true
    result = runner.invoke(app, ["run", "r.yaml", "-o", "o", "--quiet", "true"])
    assert result.exit_code == 2


# ----------------------------------------------------------------------------- --json, -q


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout holds the document and nothing else


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A run into a store, with a later batch held out for ingest."""
    out = tmp_path_factory.mktemp("cli_json")
    result = runner.invoke(
        app,
        ["synth", "--persons", "300", "--seed", "4", "--new-batch", "0.1", "-o", str(out / "d")],
    )
    assert result.exit_code == 0, result.output
    # the counts on the first line are of the files written, without the held-out batch
    police = len(pd.read_csv(out / "d" / "police.csv", dtype=str))
    held = len(pd.read_csv(out / "d" / "police_new.csv", dtype=str))
    assert f"wrote {police:,} police" in result.output and f"police {held:,}" in result.output
    result = runner.invoke(
        app,
        [
            "run",
            str(out / "d" / "run.yaml"),
            "-o",
            str(out / "run"),
            "--store",
            str(out / "ids.duckdb"),
            "--json",
        ],
    )
    return out, result


def test_run_json_is_the_summary_with_numbers_and_output_paths(batch):
    out, result = batch
    doc = _json(result)
    saved = json.loads((out / "run" / "summary.json").read_text(encoding="utf-8"))
    assert set(doc) == {*saved, "outputs"}
    assert {k: v for k, v in doc.items() if isinstance(v, int)} == {
        k: v for k, v in saved.items() if isinstance(v, int)
    }
    share = saved["cluster_stats"]["singleton_share"]
    assert doc["cluster_stats"]["singleton_share"] == pytest.approx(share, rel=1e-5)
    assert isinstance(doc["records"], int) and isinstance(doc["candidate_pairs"], int)
    assert all(isinstance(v, int) for v in doc["records_per_source"].values())
    assert all(isinstance(v, float) for v in doc["seconds"].values())
    assert doc["outputs"]["identities"] == str(out / "run" / "identities.csv")
    assert "[" not in result.stdout.split("{", 1)[0]  # no progress line before the document


def test_ingest_json_and_text_line(batch, tmp_path):
    import shutil

    out, _ = batch
    new = out / "d" / "new.yaml"
    store = shutil.copy(out / "ids.duckdb", tmp_path / "ids.duckdb")
    result = runner.invoke(app, ["ingest", str(new), "--store", str(store), "--json", "-q"])
    doc = _json(result)
    assert isinstance(doc["run_id"], int) and doc["new_records"] > 0
    assert all(isinstance(v, int) for v in doc["events"].values())
    assert all(isinstance(v, float) for v in doc["seconds"].values())
    # the same batch again: every record is an update; the text has no Python dict reprs
    result = runner.invoke(app, ["ingest", str(new), "--store", str(store)])
    assert result.exit_code == 0, result.output
    n = doc["new_records"]
    assert doc["inserted_records"] + doc["updated_records"] == n
    # was "5 records (5 updates ...)": new_records counts records read, updates included
    assert f"{n:,} records read (0 new, {n:,} updates, {n:,} of them unchanged)" in (
        result.stdout
    ), result.stdout
    # delivered again unchanged: counted, but no record_updated events
    assert "{" not in result.stdout and "events:  none" in result.stdout


def test_run_json_names_the_new_identity_key_and_no_refused_run_announces_one(
    data, tmp_path, monkeypatch, caplog
):
    """Without a key the ids depend on OUTPUT/identity.key: --json lists it among the
    outputs. A refused run leaves no key and never logs that it created one."""
    import logging

    monkeypatch.delenv("LINKAGE_ID_KEY", raising=False)
    monkeypatch.delenv("LINKAGE_ID_KEY_FILE", raising=False)
    config = str(data / "data" / "run.yaml")
    caplog.set_level(logging.INFO, logger="linkage")
    doc = _json(runner.invoke(app, ["run", config, "-o", str(tmp_path / "o"), "--json"]))
    assert doc["outputs"]["identity_key"] == str(tmp_path / "o" / "identity.key")
    assert (tmp_path / "o" / "identity.key").is_file()
    caplog.clear()
    bad = data / "data" / "bad_source.yaml"  # beside run.yaml: its includes resolve
    text = (data / "data" / "run.yaml").read_text(encoding="utf-8")
    bad.write_text(text.replace("police.csv", "nowhere.csv"), encoding="utf-8")
    try:
        result = runner.invoke(app, ["run", str(bad), "-o", str(tmp_path / "b")])
    finally:
        bad.unlink()
    assert result.exit_code == 2 and "nowhere.csv: file not found" in result.output
    assert not (tmp_path / "b").exists()
    assert "created identity key" not in caplog.text + result.output


def test_a_batch_run_that_would_remove_stored_records_needs_remove_missing(batch, tmp_path):
    """After an ingest the store holds records the batch config does not name: running the
    batch again into the store would remove them (and retire or split identities), so it
    exits 2 before linking, naming the count; --remove-missing does it, and says so."""
    import shutil

    out, _ = batch
    store = shutil.copy(out / "ids.duckdb", tmp_path / "ids.duckdb")
    result = runner.invoke(
        app, ["ingest", str(out / "d" / "new.yaml"), "--store", str(store), "-q"]
    )
    assert result.exit_code == 0, result.output
    with Store.open(store, create=False, read_only=True) as opened:
        before = opened.counts()
        added = len(opened.links()) - len(pd.read_csv(out / "run" / "identities.csv"))
    assert added > 0
    again = ["run", str(out / "d" / "run.yaml"), "--store", str(store)]
    result = runner.invoke(app, [*again, "-o", str(tmp_path / "o1")])
    assert result.exit_code == 2
    assert f"the store holds {added:,} records this batch lacks" in result.output
    assert "--remove-missing" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o1").exists()
    with Store.open(store, create=False, read_only=True) as opened:
        assert opened.counts() == before  # nothing written
    result = runner.invoke(app, [*again, "-o", str(tmp_path / "o2"), "--remove-missing"])
    assert result.exit_code == 0, result.output
    assert f"record_removed {added:,}" in result.stdout  # the summary says what changed
    with Store.open(store, create=False, read_only=True) as opened:
        assert len(opened.links()) == len(pd.read_csv(out / "run" / "identities.csv"))
    result = runner.invoke(app, ["run", str(out / "d" / "run.yaml"), "-o", str(tmp_path / "o3"),
                                 "--remove-missing"])  # fmt: skip
    assert result.exit_code == 2 and "--store" in result.output


def test_evaluate_blocking_profile_json(batch, data):
    out, _ = batch
    config = str(out / "d" / "run.yaml")
    result = runner.invoke(
        app, ["run", str(data / "data" / "run.yaml"), "-o", str(data / "e"), "-q"]
    )
    assert result.exit_code == 0, result.output
    doc = _json(
        runner.invoke(
            app,
            [
                "evaluate",
                "--truth",
                str(data / "data" / "truth.csv"),
                "--pred",
                str(data / "e" / "identities.csv"),
                "--json",
            ],
        )
    )
    assert 0.9 < doc["pairwise"]["f1"] <= 1 and isinstance(doc["records"], int)
    assert len(repr(doc["pairwise"]["recall"])) <= len("0.123456")  # rounded, not 0.98798798..
    assert isinstance(doc["pairwise"]["true_pairs"], int)
    assert doc["recall_by_tag"] and all(isinstance(row, dict) for row in doc["recall_by_tag"])
    assert all(isinstance(v, int | float | str) for v in doc["recall_by_tag"][0].values())
    doc = _json(runner.invoke(app, ["blocking", config, "--json"]))
    assert doc["total_pairs"] == sum(rule["pairs"] for rule in doc["rules"])
    assert {"rule", "keys", "pairs", "largest_block"} <= set(doc["rules"][0])
    assert isinstance(doc["rules"][0]["pairs"], int) and isinstance(doc["warnings"], list)
    doc = _json(runner.invoke(app, ["profile", config, "--json"]))
    assert doc["records"] == sum(s["records"] for s in doc["sources"])
    assert {"source", "field", "records", "missing_pct", "invalid_pct"} == set(doc["fields"][0])
    assert all(isinstance(f["records"], int) and f["records"] > 0 for f in doc["quality_flags"])


def test_search_json_numbers_are_numbers(batch):
    out, _ = batch
    health = pd.read_csv(out / "d" / "health.csv", dtype=str).iloc[0]
    record = pd.read_csv(out / "run" / "golden_records.csv", dtype=str)
    name = record["name"].dropna().iloc[0]
    hits = _json(
        runner.invoke(
            app,
            [
                "search",
                "--store",
                str(out / "ids.duckdb"),
                "--name",
                name,
                "--phone",
                "13912873456",
                "--json",
            ],
        )
    )
    assert isinstance(hits, list) and health is not None
    for hit in hits:
        assert isinstance(hit["matched_records"], int)
        assert isinstance(hit["golden"].get("records", 0), int)
        assert isinstance(hit["match_probability"], float)


def test_search_says_which_given_value_it_left_out(batch):
    out, _ = batch
    name = pd.read_csv(out / "run" / "golden_records.csv", dtype=str)["name"].dropna().iloc[0]
    store = str(out / "ids.duckdb")
    # 13800138000 is a filler number registries type for "unknown": it is not searched
    result = runner.invoke(
        app, ["search", "--store", store, "--name", name, "--phone", "13800138000", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), list)  # stdout stays the JSON hits
    assert "not searched: phone (" in result.stderr
    plain = runner.invoke(app, ["search", "--store", store, "--name", name])
    assert "not searched" not in plain.output


def test_quiet_is_honoured_by_every_command(batch, data):
    out, _ = batch
    config = str(data / "data" / "run.yaml")
    store = str(out / "ids.duckdb")
    truth, pred = str(data / "data" / "truth.csv"), str(out / "quiet" / "identities.csv")
    for args in (
        ["run", config, "-o", str(out / "quiet")],
        ["profile", config],
        ["blocking", config],
        ["evaluate", "--truth", truth, "--pred", pred],
        ["search", "--store", store, "--phone", "13912873456"],
        ["standardize", config, "-o", str(out / "std.parquet")],
        ["synth", "--persons", "50", "-o", str(out / "quiet_synth")],
    ):
        result = runner.invoke(app, [*args, "-q"])
        assert result.exit_code == 0, (args, result.output)
        assert result.output == "", args  # neither stdout nor stderr


# ----------------------------------------------------------------------------- progress


def test_job_log_gets_one_timed_line_per_stage_including_writing(data):
    from linkage.pipeline import STAGES

    result = runner.invoke(
        app, ["run", str(data / "data" / "run.yaml"), "--output", str(data / "log")]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    stages = [line.split("] ", 1)[1].split(" (")[0] for line in lines]
    assert stages == [*STAGES, "done"]
    assert any(line.endswith(" pairs)") and "comparing" in line for line in lines)
    assert any(line.endswith("(6 files)") and "writing outputs" in line for line in lines)
    seconds = [float(line[1:].split("s]")[0]) for line in lines]
    assert seconds == sorted(seconds)
    # no Python dict or list reprs in log or summary lines
    assert "{'" not in result.output and "['" not in result.output


class _Recorder:
    """A Progress hook that records what the library reports."""

    def __init__(self):
        self.events: list[tuple] = []

    def stage(self, name, total=None, unit=""):
        self.events.append(("stage", name, total, unit))

    def advance(self, n=1):
        self.events.append(("advance", n))


def test_the_library_reports_counted_stages_through_the_hook(data, tmp_path, capsys):
    from linkage.linker import Linker
    from linkage.pipeline import STAGES

    recorder = _Recorder()
    linker = Linker.from_yaml(data / "data" / "run.yaml")
    result = linker.run(progress=recorder)
    linker.write(tmp_path / "o", progress=recorder)
    assert capsys.readouterr().err == ""  # the library draws nothing itself
    started = [e for e in recorder.events if e[0] == "stage"]
    assert [e[1] for e in started] == list(STAGES)
    counted = {}
    current = None
    for event in recorder.events:
        if event[0] == "stage":
            current = event[1]
            counted[current] = [event[2], event[3], 0]
        else:
            counted[current][2] += event[1]
    n = len(result.records)
    assert counted["reading"] == [3, "files", 3]
    assert counted["standardizing"][1:] == ["values", counted["standardizing"][0]]
    assert counted["standardizing"][0] % n == 0
    n_pairs = result.summary["candidate_pairs"]
    assert counted["comparing"] == [n_pairs, "pairs", n_pairs]
    assert counted["scoring"] == [n_pairs, "pairs", n_pairs]
    assert counted["writing outputs"] == [6, "files", 6]
    # a plain callable still gets each stage's name once
    names: list[str] = []
    Linker.from_yaml(data / "data" / "run.yaml").run(progress=names.append)
    assert names == list(STAGES[:-1])


def test_terminal_bar_per_stage_and_log_lines_never_inside_a_bar(data, tmp_path):
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("script") is None:
        pytest.skip("needs util-linux script for a pseudo-terminal")
    linkage = Path(sys.executable).with_name("linkage")
    typescript = tmp_path / "tty.log"
    command = (
        f"stty cols 120 rows 40; {linkage} run {data / 'data' / 'run.yaml'} "
        f"--output {tmp_path / 'o'} > {tmp_path / 'stdout.txt'}"
    )
    subprocess.run(
        ["script", "-qec", command, str(typescript)], check=True, capture_output=True, timeout=300
    )
    raw = typescript.read_text(encoding="utf-8", errors="replace")
    # every redraw of a bar starts with a carriage return; a log line must start a fresh
    # segment, never follow bar text on the same one
    segments = re.split(r"[\r\n]+", raw)
    log = [s for s in segments if " INFO linkage." in s]
    assert log, "expected INFO log lines on the terminal"
    assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ", s) for s in log), [
        s for s in log if not re.match(r"^\d{4}-", s)
    ][:3]
    assert not any("%|" in s and " INFO " in s for s in segments)
    # one bar per stage, each counted stage with done/total, rate and ETA
    assert re.search(r"comparing: 100%\|[^|]*\| [\d.,kM]+/[\d.,kM]+ pairs \[", raw)
    assert re.search(r"standardizing: 100%\|[^|]*\| [\d.,kM]+/[\d.,kM]+ values", raw)
    assert re.search(r"writing outputs: 100%\|[^|]*\| 6/6 files", raw)
    for stage in ("blocking", "training model", "clustering", "building golden records"):
        assert re.search(re.escape(stage) + r" \[\d\d:\d\d\]", raw), stage
    assert "identities:" in (tmp_path / "stdout.txt").read_text(encoding="utf-8")


def test_output_paths_are_checked_before_any_stage_starts(data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    config = str(data / "data" / "run.yaml")
    for args in (
        ["run", config, "--output", str(blocker / "out")],
        ["run", config, "--output", str(blocker)],
        ["run", config, "--output", str(tmp_path / "o"), "--store", str(blocker)],
        ["standardize", config, "--output", str(tmp_path)],
        ["synth", "--persons", "50", "--output", str(blocker)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert str(blocker) in result.output or str(tmp_path) in result.output, result.output
        assert "] reading" not in result.stderr  # refused before the first stage
        assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_search_after_a_second_ingest_of_the_same_batch(batch, tmp_path):
    import shutil

    out, _ = batch
    store = str(shutil.copy(out / "ids.duckdb", tmp_path / "ids.duckdb"))
    new = str(out / "d" / "new.yaml")
    for _ in range(2):
        result = runner.invoke(app, ["ingest", new, "--store", store, "-q"])
        assert result.exit_code == 0, result.output
    # DuckDB cuts free blocks off the file's end at checkpoint while its header still counts
    # them: the file is shorter than declared, yet whole
    result = runner.invoke(app, ["search", "--store", store, "--phone", "13912873456"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["store", "check", store])
    assert result.exit_code == 0, result.output
    assert "truncated" not in result.output


def test_run_refused_for_bad_input_writes_nothing(tmp_path):
    """A duplicate record id stops the run with exit 2 and no output folder, key file included."""
    police = tmp_path / "police.csv"
    police.write_text("编号,姓名\n1,张伟\n2,李娜\n2 ,王芳\n", encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text(
        "sources:\n  police: {path: police.csv, record_id: 编号, columns: {姓名: name}}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert "编号" in result.output and "2" in result.output
    assert not out.exists()


def test_export_for_own_sources_the_store_lacks_exits_2_listing_the_store_sources(batch, tmp_path):
    out, _ = batch
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    policy["departments"]["health"]["own_sources"] = ["weijian"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    target = tmp_path / "health.csv"
    args = ["export", "--store", str(out / "ids.duckdb"), "--department", "health"]
    result = runner.invoke(app, [*args, "--policy", str(path), "--output", str(target)])
    assert result.exit_code == 2, result.output
    assert "own_sources [weijian] names no source" in result.output
    assert "it holds civil_affairs, health, police" in result.output
    assert not target.exists()


def test_export_that_k_anonymity_empties_warns_naming_the_columns(batch, tmp_path, caplog):
    out, _ = batch
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    # masked name and ID with a month of birth and own record ids: each identity its own cell
    policy["departments"]["health"]["fields"] = {
        "name": "surname_only",
        "id_number": "first6",
        "birth_date": "year_month",
        "phone": "first3_last4",
        "hukou_address": "district",
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    target = tmp_path / "health.csv"
    args = ["export", "--store", str(out / "ids.duckdb"), "--department", "health"]
    result = runner.invoke(app, [*args, "--policy", str(path), "--output", str(target)])
    assert result.exit_code == 0, result.output
    rows = len(pd.read_csv(target, dtype=str))
    assert f"wrote {rows:,} rows" in result.output
    assert f"({rows:,} rows suppressed for k-anonymity)" in result.output
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "name 100%" in m and "id_number 100%" in m and "docs/privacy.md" in m for m in warned
    )


@contextlib.contextmanager
def _store_held_open(store):
    """Another process holding ``store`` open read-only (as ``linkage serve`` does)."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print('ready', flush=True); time.sleep(120)",
            str(store),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_search_and_export_run_beside_a_reader_holding_the_store(batch, tmp_path):
    """`linkage serve` holds the store open read-only: search and export still work, a
    writer is refused with a message saying why (not DuckDB's lock text)."""
    import shutil

    out, _ = batch
    store = tmp_path / "ids.duckdb"
    shutil.copy(out / "ids.duckdb", store)
    with _store_held_open(store):
        found = runner.invoke(app, ["search", "--store", str(store), "--phone", "13912873456"])
        assert found.exit_code == 0, found.output
        exported = runner.invoke(
            app,
            [
                "export",
                "--store",
                str(store),
                "--department",
                "police",
                "-o",
                str(tmp_path / "p.csv"),
            ],
        )
        assert exported.exit_code == 0, exported.output
        assert (tmp_path / "p.csv").stat().st_size > 0
        refused = runner.invoke(
            app, ["ingest", str(out / "d" / "new.yaml"), "--store", str(store), "-q"]
        )
        assert refused.exit_code == 2
        assert "in use by another process" in refused.output
        assert "-readonly" not in refused.output


def test_run_into_a_store_another_process_holds_is_refused_before_reading(
    batch, tmp_path, monkeypatch
):
    """`linkage serve` holds the store: a run is refused before it reads its inputs (it
    used to read and standardize every source first, minutes at scale)."""
    import shutil

    from linkage.errors import StoreError
    from linkage.linker import Linker

    out, _ = batch
    store = tmp_path / "ids.duckdb"
    shutil.copy(out / "ids.duckdb", store)
    with _store_held_open(store):
        target = tmp_path / "o"
        config = str(out / "d" / "run.yaml")
        refused = runner.invoke(app, ["run", config, "--store", str(store), "-o", str(target)])
        assert refused.exit_code == 2
        assert "in use by another process" in refused.stderr
        assert "reading" not in refused.stderr and not target.exists()

        # the Python API too: no source is read
        def no_reading(*args, **kwargs):
            raise AssertionError("the inputs were read")

        monkeypatch.setattr(Linker, "standardize", no_reading)
        with pytest.raises(StoreError, match="in use by another process"):
            Linker.from_yaml(config, store=store).run()


@pytest.mark.parametrize(
    "field, value", [("--birth-date", "1990-13-45"), ("--id-number", "4.40106199001011e+17")]
)
def test_search_whose_every_value_is_unreadable_exits_2(batch, field, value):
    out, _ = batch
    result = runner.invoke(app, ["search", "--store", str(out / "ids.duckdb"), field, value])
    assert result.exit_code == 2, result.output
    assert "could be read" in result.output or "not a recognizable" in result.output


def _old_id_levels(doc: dict) -> dict:
    """A model document as saved before the ID comparison had its prefix_tail_lost level."""
    k = doc["levels"]["id"].index("prefix_tail_lost")
    for part in ("levels", "m", "u"):
        del doc[part]["id"][k]
    return doc


def test_a_model_saved_with_other_levels_is_refused_with_a_retrain_message(data, tmp_path):
    out = tmp_path / "first"
    result = runner.invoke(app, ["run", str(data / "data" / "run.yaml"), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    old = tmp_path / "old_model.json"
    doc = _old_id_levels(json.loads((out / "model.json").read_text(encoding="utf-8")))
    old.write_text(json.dumps(doc), encoding="utf-8")
    import shutil

    folder = shutil.copytree(data / "data", tmp_path / "data")
    config = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    config.setdefault("model", {})["load"] = str(old)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["run", str(path), "-o", str(tmp_path / "second"), "-q"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert str(old) in message
    assert "comparison 'id' has levels ['else', 'birth_region', 'near_miss'" in message
    assert "expects ['else', 'birth_region', 'prefix_tail_lost', 'near_miss'" in message
    assert "Retrain" in message and "levels must lie" not in message
    assert not (tmp_path / "second" / "identities.csv").exists()
    # the same model file saved with today's levels is read and scores
    config["model"]["load"] = str(out / "model.json")
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["run", str(path), "-o", str(tmp_path / "third"), "-q"])
    assert result.exit_code == 0, result.output


def test_an_identity_store_with_an_old_model_is_refused_on_ingest(batch, tmp_path):
    import shutil

    import duckdb

    out, _ = batch
    store = shutil.copy(out / "ids.duckdb", tmp_path / "ids.duckdb")
    con = duckdb.connect(str(store))
    (text,) = con.execute("SELECT model FROM model ORDER BY run_id DESC LIMIT 1").fetchone()
    con.execute("UPDATE model SET model = ?", [json.dumps(_old_id_levels(json.loads(text)))])
    con.close()
    result = runner.invoke(app, ["ingest", str(out / "d" / "new.yaml"), "--store", str(store)])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert str(store) in message and "comparison 'id' has levels" in message
    assert "Retrain" in message


def test_export_with_bom_opens_as_utf8_in_excel(batch, tmp_path):
    """`--bom` starts the CSV with a UTF-8 byte-order mark (Excel on Chinese Windows reads a
    CSV without one as GBK); the rows are the same as without it."""
    out, _ = batch
    args = ["export", "--store", str(out / "ids.duckdb"), "--department", "police"]
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    assert runner.invoke(app, [*args, "--output", str(plain)]).exit_code == 0
    result = runner.invoke(app, [*args, "--bom", "--output", str(marked)])
    assert result.exit_code == 0, result.output
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert not plain.read_bytes().startswith(b"\xef\xbb\xbf")
    assert marked.read_bytes()[3:] == plain.read_bytes()
