"""Tests of the synthetic registry generator: determinism, ground truth, corruptions, files."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from linkage import schema
from linkage.errors import InputError
from linkage.synth import CORRUPTION_CODES, generate, write_configs
from linkage.synth import corrupt as C
from linkage.synth.population import id_check_chars
from linkage.synth.registries import REGISTRY_COLUMNS

RECORD_ID_COLUMN = {
    s: next(h for h, f in c.items() if f == schema.RECORD_ID) for s, c in REGISTRY_COLUMNS.items()
}
NAME_COLUMN = {
    s: next(h for h, f in c.items() if f == schema.NAME) for s, c in REGISTRY_COLUMNS.items()
}
ID_COLUMN = {
    s: next(h for h, f in c.items() if f == schema.ID_NUMBER) for s, c in REGISTRY_COLUMNS.items()
}
PUA = re.compile("[\ue000-\uf8ff]")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A few thousand persons at default corruption, written to disk."""
    out = tmp_path_factory.mktemp("synth_default")
    return generate(5000, seed=11, output=out)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The same kind of run with corruption switched off."""
    out = tmp_path_factory.mktemp("synth_clean")
    return generate(2000, seed=11, corruption=0.0, output=out)


def _codes(truth: pd.DataFrame) -> pd.Series:
    return truth[schema.CORRUPTIONS].str.split("|")


def _with_truth(result, source: str) -> pd.DataFrame:
    frame = result.registry(source)
    truth = result.truth[result.truth[schema.SOURCE] == source].set_index(schema.RECORD_ID)
    persons = result.persons.set_index(schema.PERSON_ID)
    joined = frame.join(truth, on=RECORD_ID_COLUMN[source])
    # rsuffix is deprecated in pandas 3 and its replacement absent from pandas 2: rename instead
    persons = persons.rename(columns={c: f"{c}_true" for c in persons.columns if c in joined})
    return joined.join(persons, on=schema.PERSON_ID)


def test_same_seed_gives_identical_files(tmp_path: Path):
    a = generate(300, seed=5, output=tmp_path / "a", excel=True)
    b = generate(300, seed=5, output=tmp_path / "b", excel=True)
    c = generate(300, seed=6, output=tmp_path / "c", excel=True)
    for key, path in a.paths.items():
        assert path.read_bytes() == b.paths[key].read_bytes(), key
    assert a.paths["police"].read_bytes() != c.paths["police"].read_bytes()


def test_corruption_scale_keeps_the_same_records():
    noisy, clean = generate(400, seed=3), generate(400, seed=3, corruption=0.0)
    columns = [schema.SOURCE, schema.PERSON_ID]
    pd.testing.assert_frame_equal(noisy.truth[columns], clean.truth[columns])
    pd.testing.assert_frame_equal(noisy.persons, clean.persons)


def test_every_record_in_truth_exactly_once(default_run):
    truth = default_run.truth
    assert list(truth.columns) == [
        schema.SOURCE,
        schema.RECORD_ID,
        schema.PERSON_ID,
        schema.CORRUPTIONS,
    ]
    assert not truth.duplicated([schema.SOURCE, schema.RECORD_ID]).any()
    for source, column in RECORD_ID_COLUMN.items():
        frame = default_run.registry(source)
        assert frame[column].is_unique
        ids = truth.loc[truth[schema.SOURCE] == source, schema.RECORD_ID]
        assert sorted(ids) == sorted(frame[column])
    assert set(truth[schema.PERSON_ID]) <= set(default_run.persons[schema.PERSON_ID])


def test_every_corruption_code_occurs_at_default_rates(default_run):
    seen = {code for codes in _codes(default_run.truth) for code in codes if code}
    assert seen == set(CORRUPTION_CODES)


def test_no_corruption_gives_clean_values(clean_run):
    structural = {"id_missing", "rare_char_substituted", ""}  # registry design, GBK storage
    assert {c for codes in _codes(clean_run.truth) for c in codes} <= structural
    for source in REGISTRY_COLUMNS:
        rows = _with_truth(clean_run, source)
        substituted = rows[schema.CORRUPTIONS].str.contains("rare_char_substituted")
        names = rows[NAME_COLUMN[source]]
        assert (names[~substituted] == rows.loc[~substituted, schema.NAME]).all()
        ids = rows[ID_COLUMN[source]]
        present = ids.notna()
        assert (ids[present] == rows.loc[present, schema.ID_NUMBER]).all()
        assert all(ric.calc_check_digit(x) == x[-1] for x in ids[present])
        assert (present | rows[schema.CORRUPTIONS].str.contains("id_missing")).all()
    police = _with_truth(clean_run, "police")
    assert (police["出生日期"] == police[schema.BIRTH_DATE].dt.strftime("%Y-%m-%d")).all()
    assert (police["联系电话"] == police[schema.PHONE]).all()
    assert (police["现住址"] == police[schema.CURRENT_ADDRESS]).all()


def test_gbk_file_substitutes_only_where_truth_says(default_run):
    path = default_run.paths["civil_affairs"]
    text = path.read_bytes().decode("gb18030")
    frame = pd.read_csv(path, dtype=str, encoding="gb18030")
    assert len(frame) == len(default_run.civil_affairs)
    # Every character other than the site's PUA codes is one GBK can hold.
    PUA.sub("", text).encode("gbk")
    marked = _with_truth(default_run, "civil_affairs")[schema.CORRUPTIONS].str.contains(
        "rare_char_substituted"
    )
    joined = frame.fillna("").astype(str).agg("".join, axis=1)
    hit = joined.str.contains("?", regex=False) | joined.str.contains(PUA)
    assert hit.any()
    assert (hit.to_numpy() == marked.to_numpy()).all()


def test_files_read_back_with_same_counts(default_run):
    paths = default_run.paths
    assert paths["health"].read_bytes()[:3] == b"\xef\xbb\xbf"
    encodings = {"police": "utf-8", "civil_affairs": "gb18030", "health": "utf-8-sig"}
    for source, encoding in encodings.items():
        frame = pd.read_csv(paths[source], dtype=str, encoding=encoding)
        assert list(frame.columns) == list(REGISTRY_COLUMNS[source])
        assert len(frame) == len(default_run.registry(source))
        assert (frame[RECORD_ID_COLUMN[source]] == default_run.registry(source).iloc[:, 0]).all()
    truth = pd.read_csv(paths["truth"], dtype=str, keep_default_na=False)
    assert len(truth) == len(default_run.truth)


def test_excel_health_file_reads_back(tmp_path: Path):
    result = generate(300, seed=2, output=tmp_path, excel=True)
    frame = pd.read_excel(result.paths["health"], dtype=str)
    assert len(frame) == len(result.health)
    assert (frame.fillna("").to_numpy() == result.health.fillna("").to_numpy()).all()
    spec = yaml.safe_load((tmp_path / "run.yaml").read_text(encoding="utf-8"))
    assert spec["sources"]["health"]["path"] == "health.xlsx"


def test_twins_share_birth_and_differ_in_id_sequence_only(default_run):
    persons = default_run.persons
    twins = persons[persons["twin_of"] >= 0]
    assert len(twins) >= 5
    older = persons.iloc[twins["twin_of"].to_numpy()]
    for young, old in zip(twins.itertuples(), older.itertuples(), strict=True):
        assert young.id_number[:14] == old.id_number[:14]
        assert young.id_number[14:] != old.id_number[14:]
        assert young.surname == old.surname and young.household_id == old.household_id
        if young.transliterated:  # own name differs, the father's part is shared
            assert young.name.split("·")[1] == old.name.split("·")[1] and young.name != old.name
            continue
        diff = sum(a != b for a, b in zip(young.given, old.given, strict=False))
        assert len(young.given) == len(old.given) and diff == 1


def test_children_in_health_lack_ids(default_run):
    rows = _with_truth(default_run, "health")
    age = (pd.to_datetime(rows["建档日期"]) - rows[schema.BIRTH_DATE]).dt.days / 365.25
    children = rows[age < 16]
    assert len(children) > 100
    assert children["证件号码"].isna().mean() > 0.9
    assert rows.loc[age >= 16, "证件号码"].notna().mean() > 0.5


def test_registry_formats(default_run):
    police, civil, health = default_run.police, default_run.civil_affairs, default_run.health
    assert set(police["性别"].dropna()) == {"男", "女", "未知"}
    assert set(civil["性别"].dropna()) == {"1", "2", "0", "9"}  # GB/T 2261 codes
    assert set(health["性别"].dropna()) == {"男", "女", "M", "F", "未知"}
    assert civil["民族"].str.endswith("族").sum() == 0
    assert (
        civil["出生日期"].str.contains("年").any()
        and civil["出生日期"].str.fullmatch(r"\d{8}").any()
    )
    vaccinated = health[health["档案类型"] == "预防接种"]
    born = pd.to_datetime(vaccinated["出生日期"], format="%Y/%m/%d", errors="coerce")
    assert (pd.to_datetime(vaccinated["建档日期"]) - born).dt.days.max() < 7 * 366 + 60


def test_minority_names_and_compound_surnames(default_run):
    persons = default_run.persons
    minority = persons[persons["transliterated"]]
    assert len(minority) > 10 and minority[schema.NAME].str.contains("·").all()
    assert set(minority[schema.ETHNICITY]) <= {"维吾尔族", "哈萨克族"}
    assert (persons[schema.ETHNICITY] == "汉族").mean() > 0.95
    assert persons[schema.NAME].value_counts().iloc[0] >= 5  # common names are shared


def test_configs_match_files(tmp_path: Path):
    run_yaml = write_configs(tmp_path)
    spec = yaml.safe_load(run_yaml.read_text(encoding="utf-8"))
    assert list(spec["sources"]) == ["police", "civil_affairs", "health"]
    for source, entry in spec["sources"].items():
        schema_file = yaml.safe_load((tmp_path / entry["include"]).read_text(encoding="utf-8"))
        assert schema_file["record_id"] == RECORD_ID_COLUMN[source]
        assert set(schema_file["columns"].values()) <= set(schema.MAPPABLE_FIELDS)
        assert set(schema_file["columns"]) <= set(REGISTRY_COLUMNS[source])


def test_configs_load_with_the_project_reader(tmp_path: Path):
    config = pytest.importorskip("linkage.config")
    io = pytest.importorskip("linkage.io")
    result = generate(200, seed=4, output=tmp_path)
    records = io.read_sources(config.load_config(result.paths["config"]))
    assert len(records) == len(result.truth)
    assert (
        records.groupby(schema.SOURCE).size().to_dict()
        == result.truth.groupby(schema.SOURCE).size().to_dict()
    )


# --- building blocks -------------------------------------------------------------------------


@given(st.lists(st.integers(0, 9), min_size=17, max_size=17))
def test_check_chars_match_stdnum(digits):
    body = "".join(map(str, digits))
    assert id_check_chars(np.array([body], dtype=object))[0] == ric.calc_check_digit(body + "0")


@given(st.text("0123456789", min_size=18, max_size=18), st.floats(0, 0.999), st.floats(0, 0.999))
def test_typo_and_transposition_change_what_they_claim(text, u1, u2):
    typo = C._typo(text, u1, u2)
    assert sum(a != b for a, b in zip(typo, text, strict=True)) == 1
    swapped = C._transpose(text, u1)
    if swapped is not None:
        diff = [i for i, (a, b) in enumerate(zip(swapped, text, strict=True)) if a != b]
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and sorted(swapped) == sorted(text)


@settings(max_examples=60)
@given(
    st.dates(
        min_value=pd.Timestamp("1940-03-01").date(), max_value=pd.Timestamp("2019-12-31").date()
    )
)
def test_lunar_birthday_falls_before_the_solar_date(day):
    y, m, d = C._lunar(day.year, day.month, day.day)
    gap = (pd.Timestamp(day) - pd.Timestamp(year=y, month=m, day=d)).days
    assert 17 <= gap <= 57  # 19-55 days, plus two for 30th days clamped to short months


def test_character_confusions_respect_readings():
    assert "增" in C._homophones("曾", True) and "层" not in C._homophones("曾", True)
    assert "章" in C._homophones("张", True)
    assert "牛" in C._dialect_chars("刘", True)
    assert "程" in C._dialect_chars("陈", True)
    assert "玉" in C._lookalikes("王", True)
    assert C.surname_syllables("单") == ["shan"]


def test_pinyin_written_forms():
    forms = {C._pinyin_written("张", "伟", u) for u in (0.0, 0.3, 0.5, 0.7, 0.9)}
    assert forms == {"ZHANG Wei", "Wei Zhang", "zhang wei", "Zhang Wei", "ZHANG WEI"}
    assert C._pinyin_written("曾", "国藩", 0.0) == "ZENG Guofan"


@pytest.mark.slow
def test_million_records_generate_fast(tmp_path: Path):
    started = time.perf_counter()
    result = generate(400_000, seed=0, output=tmp_path)
    elapsed = time.perf_counter() - started
    assert len(result.truth) > 900_000
    assert elapsed < 120


def test_repository_configs_match_the_generator(tmp_path):
    """configs/sources/*.yaml are the generator's own schema files, kept identical."""
    from pathlib import Path

    from linkage.config import load_config
    from linkage.synth import write_configs

    write_configs(tmp_path)
    repo = Path(__file__).resolve().parents[1] / "configs"
    for name in ("police", "civil_affairs", "health"):
        expected = (tmp_path / "sources" / f"{name}.yaml").read_text(encoding="utf-8")
        assert (repo / "sources" / f"{name}.yaml").read_text(encoding="utf-8") == expected
    cfg = load_config(repo / "run.yaml")
    assert list(cfg.sources) == ["police", "civil_affairs", "health"]
    assert cfg.sources["civil_affairs"].encoding == "gbk"
    assert cfg.sources["police"].path == (repo.parent / "data" / "police.csv").resolve()


def test_new_batch_holds_records_out_with_its_own_config(tmp_path):
    from linkage.config import load_config
    from linkage.io import read_sources

    result = generate(300, seed=5, output=tmp_path, new_batch=0.2)
    old = read_sources(load_config(tmp_path / "run.yaml"))
    new = read_sources(load_config(tmp_path / "new.yaml"))
    assert len(new) > 0 and len(old) > 0
    keys = lambda t: set(zip(t[schema.SOURCE], t[schema.RECORD_ID], strict=True))  # noqa: E731
    # the two batches partition the registries, and the truth covers both
    assert not keys(old) & keys(new)
    assert keys(old) | keys(new) == keys(result.truth)
    assert len(old) + len(new) == len(result.truth)
    assert sum(result.held_out.values()) == len(new)
    assert result.held_out == new[schema.SOURCE].value_counts().to_dict()
    with pytest.raises(InputError, match="new_batch"):
        generate(10, output=tmp_path / "x", new_batch=1.0)
