"""CLI behaviour a data engineer's job relies on: one ``error:`` prefix, choices and metavars
in --help, search by hukou address, export suffixes, serve-token -q, singular counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from linkage.cli import app

runner = CliRunner()
LINKAGE = Path(sys.executable).with_name("linkage")

HEADER = "编号,姓名,性别,出生日期,公民身份号码,户籍地址"
ROWS = [
    "P1,赵建国,男,1971-02-03,,北京市朝阳区建国路1号",
    "P2,钱秀英,女,1983-07-19,,广东省广州市天河区体育西路2号",
    "P3,赵建国,男,1971-02-03,,北京市朝阳区建国路1号",
]


def _write_config(folder: Path, more_columns: dict[str, str]) -> None:
    """police.csv of ROWS and run.yaml reading it (name, gender, birth date and more)."""
    (folder / "police.csv").write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    columns = {"姓名": "name", "性别": "gender", "出生日期": "birth_date", **more_columns}
    doc = {
        "sources": {"police": {"path": "police.csv", "record_id": "编号", "columns": columns}},
        "model": {"u_sample_pairs": 1000},
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    _write_config(tmp, {"公民身份号码": "id_number", "户籍地址": "hukou_address"})
    path = tmp / "ids.duckdb"
    result = runner.invoke(
        app, ["run", str(tmp / "run.yaml"), "--output", str(tmp / "out"), "--store", str(path)]
    )
    assert result.exit_code == 0, result.output
    # a job log (stderr not a terminal) names one file in the singular
    assert "reading (1 file)" in result.stderr
    return path


def _linkage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINKAGE), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_usage_errors_of_click_and_of_commands_share_one_error_prefix(tmp_path: Path) -> None:
    parse = _linkage("run", "--no-such-option")
    command = _linkage("search", "--store", str(tmp_path / "x.duckdb"))
    for result in (parse, command):
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: "), result.stderr
        assert "Error:" not in result.stderr and "Traceback" not in result.stderr
    assert "No such option: --no-such-option" in parse.stderr
    assert "Try 'linkage run --help'" in parse.stderr


def test_help_shows_choices_and_plain_metavars() -> None:
    text = runner.invoke(app, ["run", "--help"]).output
    assert "--engine <local|spark>" in text or "[local|spark]" in text
    assert "--output DIR" in text and "--store STORE" in text and "<str>" not in text
    assert "{CONFIG}" not in text
    # arguments in usage lines as the README writes them, without typer's braces (the
    # test runner calls the program 'root')
    assert " run [OPTIONS] CONFIG\n" in text
    missing = runner.invoke(app, ["run"])
    assert " run [OPTIONS] CONFIG\n" in missing.stderr
    assert "Missing argument 'CONFIG'" in missing.stderr
    usage = {
        "link-encodings": "[OPTIONS] LEFT RIGHT",
        "dashboard": "[OPTIONS] [CONFIG]",
        "ingest": "[OPTIONS] CONFIG",
    }
    for command, pieces in usage.items():
        assert f" {command} {pieces}\n" in runner.invoke(app, [command, "--help"]).output
    assert (
        " store check [OPTIONS] STORE\n" in runner.invoke(app, ["store", "check", "--help"]).output
    )
    encode = runner.invoke(app, ["encode", "--help"]).output
    assert "--source NAME" in encode and "list[str]" not in encode
    bad = runner.invoke(app, ["run", "c.yaml", "--output", "o", "--engine", "flink"])
    assert bad.exit_code == 2 and "flink" in bad.output


def test_search_by_hukou_address(store: Path) -> None:
    base = ["search", "--store", str(store), "--name", "赵建国"]
    result = runner.invoke(app, [*base, "--hukou-address", "北京市朝阳区建国路1号", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert hits and hits[0]["golden"]["name"] == "赵建国"
    levels = {e["comparison"]: e["level"] for e in hits[0]["explanation"]}
    assert levels["hukou_address"] == "same_detail"
    alone = runner.invoke(app, ["search", "--store", str(store), "--hukou-address", "北京"])
    assert "hukou_address alone cannot find a person" in alone.output


@pytest.mark.parametrize("name", ["view.txt", "view.xlsx", "view"])
def test_export_refuses_a_suffix_other_than_csv_or_parquet(store: Path, tmp_path: Path, name):
    target = tmp_path / name
    result = runner.invoke(
        app,
        ["export", "--store", str(store), "--department", "statistics", "--output", str(target)],
    )
    assert result.exit_code == 2 and ".csv or .parquet" in result.output
    assert not target.exists()


def test_serve_token_quiet_prints_the_token_alone(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    quiet = runner.invoke(
        app, ["serve-token", "--tokens", str(tokens), "--department", "health", "-q"]
    )
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and len(quiet.stdout.strip().splitlines()) == 1
    loud = runner.invoke(app, ["serve-token", "--tokens", str(tokens), "--department", "police"])
    assert loud.exit_code == 0 and "shown only now" in loud.stderr
    assert len(loud.stdout.strip().splitlines()) == 1


def test_a_reader_that_goes_away_is_no_internal_error(tmp_path):
    """`linkage synth ... | head -1`: the closed pipe ends the command quietly, exit 0, with
    no `internal error` traceback (every command runs inside the same error handler)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from linkage.cli import _handle_errors\n"
        "@_handle_errors\n"
        "def talk():\n"
        "    for i in range(200000):\n"
        "        print('line', i)\n"
        "try:\n"
        "    talk()\n"
        "except SystemExit as exc:\n"
        "    sys.exit(exc.code)\n"
        "except BaseException as exc:\n"
        "    code = getattr(exc, 'exit_code', None)\n"
        "    sys.exit(code if code is not None else 99)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().startswith(b"line 0")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.parametrize("module", ["altair", "vl_convert"])
def test_dashboard_without_the_notebooks_extra_names_it_before_any_work(
    tmp_path: Path, monkeypatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    target = tmp_path / "dash"
    result = runner.invoke(
        app, ["dashboard", "--from", str(tmp_path / "no-run"), "--output", str(target)]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: linkage dashboard:"), result.stderr
    assert "pip install 'linkage[notebooks]'" in lines[0]
    # refused before the --from folder is read (it does not exist) and before any output
    assert "internal error" not in result.output and not target.exists()


def test_serve_without_the_serve_extra_is_one_error_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    monkeypatch.delitem(sys.modules, "linkage.serve", raising=False)
    result = runner.invoke(
        app, ["serve", "--store", str(tmp_path / "s.duckdb"), "--tokens", str(tmp_path / "t")]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: the lookup service needs FastAPI and uvicorn: pip install 'linkage[serve]'"
    ]


@pytest.mark.parametrize("closed", ["2>&-", ">&-", ">&- 2>&-"])
def test_a_run_started_without_stderr_or_stdout_finishes(tmp_path: Path, closed: str) -> None:
    """A job started with a standard stream closed (`2>&-`, a daemon) runs to the end with
    its progress display and log lines: Python leaves ``sys.stderr`` None there, which the
    display cannot ask whether it is a terminal (the run exited 1 with nothing said)."""
    _write_config(tmp_path, {})
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", "-c", f'exec "$0" run "$1" --output "$2" {closed}', str(LINKAGE),
         str(tmp_path / "run.yaml"), str(out)],
        capture_output=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc
    ids = (out / "identities.csv").read_text(encoding="utf-8").splitlines()
    assert len(ids) == 1 + len(ROWS)
    assert (out / "summary.json").exists()
