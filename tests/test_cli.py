"""The command line: each command on generated data, exit codes and error messages."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from linkage.cli import app

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


def test_internal_error_exits_1(tmp_path, monkeypatch):
    import linkage.linker

    def boom(self, progress=None):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(linkage.linker.Linker, "run", boom)
    (tmp_path / "a.csv").write_text("id,姓名\n1,张伟\n", encoding="utf-8")
    path = tmp_path / "run.yaml"
    path.write_text(
        "sources:\n  a: {path: a.csv, record_id: id, columns: {姓名: name}}\n", encoding="utf-8"
    )
    result = runner.invoke(app, ["run", str(path), "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "internal error: RuntimeError: simulated failure" in result.output


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
    result = runner.invoke(app, ["encode", config, "--output", str(tmp_path / "clk.parquet")])
    assert result.exit_code == 2 and "LINKAGE_PPRL_KEY" in result.output
    monkeypatch.setenv("LINKAGE_PPRL_KEY", "shared-secret-of-the-custodians")
    for source in ("health", "police"):
        result = runner.invoke(
            app, ["encode", config, "--output", str(tmp_path / f"{source}.parquet"), "--source", source]
        )
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
    key_file.write_text("shared-secret-of-the-custodianz\n", encoding="utf-8")
    result = runner.invoke(
        app,
        ["encode", config, "--output", str(tmp_path / "police.parquet"), "--source", "police",
         "--key-file", str(key_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--output", str(pairs)])
    assert result.exit_code == 2 and "key check values differ" in result.output
    result = runner.invoke(
        app, ["search", "--store", str(store), "--name", view.iloc[0].get("name", "张伟") or "张伟"]
    )
    assert result.exit_code == 0, result.output
