from __future__ import annotations

import pytest

from linkage.config import load_config
from linkage.errors import ConfigError

BASE = {
    "sources": {
        "police": {
            "path": "data/police.csv",
            "record_id": "登记编号",
            "columns": {"姓名": "name", "公民身份号码": "id_number"},
        }
    }
}


def test_valid_config_resolves_paths_relative_to_file(write_yaml, tmp_path):
    cfg = load_config(write_yaml(BASE, "conf/run.yaml"))
    src = cfg.sources["police"]
    assert src.name == "police"
    assert src.path == (tmp_path / "conf" / "data" / "police.csv").resolve()
    assert src.columns == {"姓名": "name", "公民身份号码": "id_number"}
    assert src.encoding == "auto"


def test_include_merges_schema_and_run_entry_overrides(write_yaml, tmp_path):
    write_yaml(
        {"record_id": "编号", "encoding": "gbk", "columns": {"姓名": "name"}}, "sources/p.yaml"
    )
    path = write_yaml(
        {"sources": {"p": {"include": "sources/p.yaml", "path": "p.csv", "encoding": "utf-8"}}}
    )
    src = load_config(path).sources["p"]
    assert src.record_id == "编号"
    assert src.encoding == "utf-8"
    assert src.path == (tmp_path / "p.csv").resolve()


def test_include_path_is_relative_to_included_file(write_yaml, tmp_path):
    write_yaml({"record_id": "编号", "path": "../data/p.csv"}, "sources/p.yaml")
    src = load_config(write_yaml({"sources": {"p": {"include": "sources/p.yaml"}}})).sources["p"]
    assert src.path == (tmp_path / "data" / "p.csv").resolve()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["sources"]["police"].update(bogus=1), "sources.police.bogus': unknown key"),
        (lambda d: d["sources"]["police"].pop("record_id"), "sources.police.record_id': required"),
        (
            lambda d: d["sources"]["police"]["columns"].update({"x": "nam"}),
            "maps to 'nam', expected one of",
        ),
        (lambda d: d["sources"]["police"]["columns"].update({"x": "name"}), "both map to 'name'"),
        (lambda d: d["sources"]["police"].update(encoding="latin-9"), "sources.police.encoding"),
        (lambda d: d.update(extra_top=1), "extra_top': unknown key"),
        (lambda d: d.update(sources={}), "sources'"),
        (lambda d: d["sources"].update(bad="just a string"), "sources.bad"),
    ],
)
def test_config_errors_name_the_key(write_yaml, mutate, expected):
    import copy

    data = copy.deepcopy(BASE)
    mutate(data)
    path = write_yaml(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_all_problems_reported_at_once(write_yaml):
    data = {"sources": {"a": {"path": "a.csv", "columns": {"x": "nope"}}, "b": {"record_id": "k"}}}
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(data))
    msg = str(info.value)
    assert "sources.a.record_id" in msg and "sources.b.path" in msg and "nope" in msg


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sources:\n  a: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(path)


def test_missing_files(tmp_path, write_yaml):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    path = write_yaml({"sources": {"a": {"include": "missing.yaml", "path": "a.csv"}}})
    with pytest.raises(ConfigError, match="missing.yaml: file not found"):
        load_config(path)
