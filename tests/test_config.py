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


HEALTH_SCHEMA = {
    "record_id": "档案编号",
    "columns": {"居民姓名": "name", "证件号码": "id_number", "出生日期": "birth_date"},
}


def test_run_config_columns_add_to_the_included_mapping(write_yaml):
    # one new header in the run config must not unmap the schema's name, ID and birth date
    write_yaml(HEALTH_SCHEMA, "sources/health.yaml")
    entry = {"include": "sources/health.yaml", "path": "h.csv", "columns": {"性别": "gender"}}
    src = load_config(write_yaml({"sources": {"health": entry}})).sources["health"]
    assert src.columns == {
        "居民姓名": "name",
        "证件号码": "id_number",
        "出生日期": "birth_date",
        "性别": "gender",
    }


def test_run_config_columns_override_by_header_or_field_and_null_unmaps(write_yaml):
    write_yaml(HEALTH_SCHEMA, "sources/health.yaml")
    columns = {"证件号码": "former_name", "姓名": "name", "出生日期": None}
    entry = {"include": "sources/health.yaml", "path": "h.csv", "columns": columns}
    src = load_config(write_yaml({"sources": {"health": entry}})).sources["health"]
    # 证件号码 remapped; 姓名 takes name over 居民姓名 (a renamed header); 出生日期 unmapped
    assert src.columns == {"证件号码": "former_name", "姓名": "name"}


def test_run_and_ingest_read_the_same_merged_columns(write_yaml):
    from linkage.linker import Linker

    write_yaml(HEALTH_SCHEMA, "sources/health.yaml")
    entry = {"include": "sources/health.yaml", "path": "h.csv", "columns": {"性别": "gender"}}
    path = write_yaml({"sources": {"health": entry}})
    # `linkage run` and `linkage ingest` both build their Linker from the YAML file
    assert (
        Linker.from_yaml(path).config.sources["health"].columns
        == load_config(path).sources["health"].columns
    )


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
        (
            lambda d: d["sources"]["police"]["columns"].update({"x": "id_number"}),
            "columns '公民身份号码' and 'x' both map to 'id_number' (only name, former_name,",
        ),
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
    with pytest.raises(ConfigError, match="missing.yaml: file not found") as err:
        load_config(path)
    # one problem: one line, naming the config and then the missing include
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: ")
    path = write_yaml({"sources": {"a": {"include": "missing.yaml", "path": "a.csv"},
                                   "b": {"include": "gone.yaml", "path": "b.csv"}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"2 problems:\n  .*missing.yaml.*\n  .*gone.yaml"):
        load_config(path)


def test_duplicate_keys_anywhere_are_an_error_naming_key_file_and_lines(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "sources:\n"
        "  police: {path: a.csv, record_id: rid, columns: {姓名: name, 姓名: former_name}}\n"
        "  police: {path: b.csv, record_id: rid}\n"
        "blocking:\n"
        "  rules:\n"
        "    - {name: a, on: x, on: y}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "duplicate key 'sources.police.columns.姓名' on lines 2, 2" in msg
    assert "duplicate key 'sources.police' on lines 2, 3" in msg
    assert "duplicate key 'blocking.rules[0].on' on lines 6, 6" in msg


def test_merge_keys_and_anchors_are_not_duplicates(tmp_path, write_yaml):
    (tmp_path / "run.yaml").write_text(
        "common: &common {record_id: rid, columns: {姓名: name}}\n"
        "sources:\n"
        "  a: {<<: *common, path: a.csv, record_id: rid2}\n"
        "  b: {<<: *common, path: b.csv}\n",
        encoding="utf-8",
    )
    from linkage.config import read_yaml

    data = read_yaml(tmp_path / "run.yaml")
    assert data["sources"]["a"]["record_id"] == "rid2"  # the explicit key overrides the merge
    assert data["sources"]["b"]["columns"] == {"姓名": "name"}


def test_keys_equal_as_text_but_not_as_yaml_values_are_distinct(tmp_path):
    from linkage.config import read_yaml

    path = tmp_path / "x.yaml"
    path.write_text("1: int\n'1': text\n", encoding="utf-8")
    assert read_yaml(path) == {1: "int", "1": "text"}
    path.write_text("a: 1\na: 1\n", encoding="utf-8")  # same value twice is still a slip
    with pytest.raises(ConfigError, match=r"x.yaml: duplicate key 'a' on lines 1, 2"):
        read_yaml(path)


def test_duplicate_key_in_included_schema_names_that_file(tmp_path, write_yaml):
    (tmp_path / "schema.yaml").write_text(
        "record_id: rid\nrecord_id: 编号\ncolumns: {姓名: name}\n", encoding="utf-8"
    )
    path = write_yaml({"sources": {"a": {"include": "schema.yaml", "path": "a.csv"}}})
    with pytest.raises(ConfigError, match=r"schema.yaml: duplicate key 'record_id' on lines 1, 2"):
        load_config(path)


def test_duplicate_key_in_sharing_policy(tmp_path):
    from linkage.share import load_policy

    path = tmp_path / "policy.yaml"
    path.write_text(
        "departments:\n  health:\n    fields: {name: full}\n    fields: {name: surname}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError, match=r"duplicate key 'departments.health.fields' on lines 3, 4"
    ):
        load_policy(path)


# ----------------------------------------------------------------------------- fail fast


def _with(**sections):
    import copy

    data = copy.deepcopy(BASE)
    data.update(sections)
    return data


@pytest.mark.parametrize(
    "sections, expected",
    [
        # a typo in a comparison entry fails at load, naming the entry and key
        (
            {"comparisons": [{"type": "name"}, {"type": "exact", "name": "g", "colum": "x"}]},
            "comparisons.1.colum': unknown key",
        ),
        ({"comparisons": [{"type": "soundex", "name": "x"}]}, "comparisons.0"),
        ({"comparisons": [{"type": "phone"}, {"type": "phone"}]}, "'phone' already used"),
        # written sessions, prior rules and tf entries must name existing comparisons/levels
        (
            {"model": {"training_sessions": [{"idd": "exact"}]}},
            "model.training_sessions[0]': no comparison named 'idd'",
        ),
        (
            {"model": {"training_sessions": [{"id": "exact"}, {"id": "exactly"}]}},
            "model.training_sessions[1].id': comparison 'id' has no level 'exactly'",
        ),
        (
            {"model": {"prior_rules": [{"name": "clean_exact", "birth_date": "same_day"}]}},
            "model.prior_rules[0].birth_date'",
        ),
        (
            {"model": {"household": {"agree": {"birth_date": "same_day"}}}},
            "model.household.agree.birth_date'",
        ),
        (
            {"model": {"household": {"differ": "nam"}}},
            "model.household.differ': no comparison named 'nam'",
        ),
        (
            {"model": {"household": {"witness": {"id": "exact", "gender": "exact"}}}},
            "model.household.witness': name one comparison",
        ),
        (
            {"model": {"term_frequency": {"surname": "name_surname"}}},
            "model.term_frequency.surname': no comparison named 'surname'",
        ),
        (
            {
                "comparisons": [{"type": "string", "name": "nm", "thresholds": [0.9]}],
                "model": {"training_sessions": [{"nm": "jaro_winkler_0.8"}]},
            },
            "has no level 'jaro_winkler_0.8'; its levels are else, jaro_winkler_0.9, exact",
        ),
    ],
)
def test_bad_references_fail_at_load(write_yaml, sections, expected):
    path = write_yaml(_with(**sections))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_default_rules_skip_comparisons_the_run_lacks(write_yaml):
    # the default sessions name 'contact', 'birth_date' ...: absent here, not an error
    cfg = load_config(write_yaml(_with(comparisons=[{"type": "id"}])))
    assert [c.type for c in cfg.comparisons] == ["id"]
    from linkage.compare import build_comparisons
    from linkage.training import level_rules

    comparisons = build_comparisons(cfg.comparison_specs())
    exact = comparisons[0].levels.index("exact")
    assert level_rules(cfg.model.training_sessions, comparisons) == [{"id": exact}]


def test_comparisons_are_typed_specs_with_resolved_defaults(write_yaml):
    cfg = load_config(write_yaml(_with(comparisons=[{"type": "address"}, {"type": "name"}])))
    address, name = cfg.comparisons
    assert address.name == "hukou_address" and address.detail_threshold == 0.8
    assert name.levels()[-1] == "exact" and name.fields == ["name", "former_name"]
    assert load_config(write_yaml(BASE)).comparisons is None  # null: the defaults


@pytest.mark.parametrize(
    "given, stored",
    [
        ("link_and_dedupe", "link_and_dedupe"),
        ("dedupe_only", "dedupe_only"),
        ("link_only", "link_only"),
        ("dedupe_and_link", "link_and_dedupe"),
    ],
)
def test_link_type_uses_splinks_names(write_yaml, given, stored):
    cfg = load_config(write_yaml(_with(blocking={"link_type": given})))
    assert cfg.blocking.link_type == stored


def test_unknown_link_type_is_refused(write_yaml):
    with pytest.raises(ConfigError, match="blocking.link_type"):
        load_config(write_yaml(_with(blocking={"link_type": "dedupe"})))


@pytest.mark.parametrize("name", ["police.csv", "health.xlsx", "records.parquet"])
def test_a_data_file_given_as_config_is_named_as_such(tmp_path, name):
    path = tmp_path / name
    path.write_bytes("编号,姓名\n1,张伟\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"data file, expected a YAML config") as info:
        load_config(path)
    assert name in str(info.value)


def test_source_keys_without_effect_warn(caplog):
    """`department` and `priority` on a source change nothing: accepted, with a warning
    naming what does the job."""
    import logging

    from linkage.config import SourceConfig

    with caplog.at_level(logging.WARNING, logger="linkage.config"):
        SourceConfig(path="a.csv", record_id="编号")
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="linkage.config"):
        SourceConfig(path="a.csv", record_id="编号", department="卫生-once", priority=7)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "'department' (卫生-once) has no effect" in said and "own_sources" in said
    assert "'priority' (7) has no effect" in said and "golden.source_priority" in said
    # a run parses its sources more than once: the same key and value warn once
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="linkage.config"):
        SourceConfig(path="b.csv", record_id="编号", department="卫生-once", priority=7)
    assert not caplog.records


def test_name_and_address_fields_may_be_joined_from_several_columns(write_yaml):
    import copy

    data = copy.deepcopy(BASE)
    data["sources"]["police"]["columns"] = {
        "姓": "name", "名": "name", "省": "current_address", "详细地址": "current_address",
        "公民身份号码": "id_number",
    }  # fmt: skip
    src = load_config(write_yaml(data)).sources["police"]
    assert src.field_columns() == {
        "name": ["姓", "名"], "current_address": ["省", "详细地址"], "id_number": ["公民身份号码"],
    }  # fmt: skip
