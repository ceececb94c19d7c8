"""Default comparisons over fields no source maps are left out: said once at INFO level, so a
quiet run on a registry without ethnicity or hukou address writes no WARNING."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml
from typer.testing import CliRunner

from linkage.cli import app
from linkage.config import config_from_dict, load_config

runner = CliRunner()

ROWS = [
    "登记编号,姓名,出生日期,联系电话",
    "A1,赵建国,1971-02-03,13901010101",
    "A2,钱秀英,1983-07-19,13802020202",
    "A3,孙志强,1990-11-30,13703030303",
    "A4,赵建国,1971-02-03,13901010101",
]


def _config(tmp: Path) -> Path:
    (tmp / "a.csv").write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    columns = {"姓名": "name", "出生日期": "birth_date", "联系电话": "phone"}
    doc = {
        "sources": {"a": {"path": "a.csv", "record_id": "登记编号", "columns": columns}},
        "model": {"u_sample_pairs": 1000},
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_default_comparisons_need_a_mapped_field(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="linkage.config"):
        config = load_config(_config(tmp_path))
        names = [s.name for s in config.comparison_specs()]
        again = [s.name for s in config.comparison_specs()]
    assert names == again == ["name", "birth_date", "contact"]
    told = [r for r in caplog.records if "left out" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
    assert "ethnicity" in told[0].getMessage() and "hukou_address" in told[0].getMessage()


def test_the_id_keeps_gender_and_birth_date_comparisons() -> None:
    source = {"path": "x.csv", "record_id": "k", "columns": {"n": "name", "i": "id_number"}}
    config = config_from_dict({"sources": {"a": source}})
    assert [s.name for s in config.comparison_specs()] == ["name", "id", "birth_date", "gender"]


def test_written_comparisons_are_kept_as_written() -> None:
    source = {"path": "x.csv", "record_id": "k", "columns": {"n": "name"}}
    entries = [{"type": "name"}, {"type": "exact", "name": "ethnicity", "column": "ethnicity_std"}]
    config = config_from_dict({"sources": {"a": source}, "comparisons": entries})
    assert [s.name for s in config.comparison_specs()] == ["name", "ethnicity"]


def test_quiet_run_without_unmapped_fields_writes_no_warning(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", str(_config(tmp_path)), "--output", str(tmp_path / "out"), "-q", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.stderr, result.stderr
    model = json.loads((tmp_path / "out" / "model.json").read_text(encoding="utf-8"))
    assert list(model["levels"]) == ["name", "birth_date", "contact"]
