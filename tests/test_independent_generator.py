"""The independent benchmark generator: valid IDs, realistic frequencies, complete truth.

The checks here use their own MOD 11-2 and date logic (not the package's), so a defect
shared by generator and linker cannot hide.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.independent import tables as T
from benchmarks.independent.__main__ import main
from benchmarks.independent.generate import SOURCES, generate
from benchmarks.independent.population import Counters, Profile, build_chunk

WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def check_char(first17: str) -> str:
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, WEIGHTS)) % 11]


def read(out: Path, source: str) -> pd.DataFrame:
    file, encoding = SOURCES[source][0], SOURCES[source][2]
    return pd.read_csv(out / file, dtype=str, keep_default_na=False, encoding=encoding)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("independent")
    generate(3000, 11, out, chunk_persons=1200)  # three chunks: IDs must stay unique across them
    return out


@pytest.fixture(scope="module")
def truth(small: Path) -> pd.DataFrame:
    return pd.read_csv(small / "truth.csv", dtype=str, keep_default_na=False)


def test_files_decode_strictly_as_declared(small: Path):
    for file, _, declared, _, _ in SOURCES.values():
        (small / file).read_bytes().decode(declared)  # strict: raises on any bad byte
    # the civil-affairs GBK file holds the middle dot of minority names as GBK's A1A4
    assert "·".encode("gbk") == b"\xa1\xa4"


def test_truth_covers_every_record_exactly_once(small: Path, truth: pd.DataFrame):
    assert list(truth.columns) == ["source", "record_id", "person_id", "corruptions"]
    keys = []
    for source in SOURCES:
        table = read(small, source)
        id_col = SOURCES[source][3] and next(h for h, f in SOURCES[source][3].items()
                                              if f == "record_id")
        assert table[id_col].is_unique
        keys += [(source, r) for r in table[id_col]]
    truth_keys = list(zip(truth.source, truth.record_id))
    assert len(truth_keys) == len(set(truth_keys)) == len(keys)
    assert set(truth_keys) == set(keys)
    per_person = truth.groupby("person_id").source.nunique()
    assert per_person.between(1, 3).all() and per_person.gt(1).mean() > 0.3
    assert truth.person_id.nunique() == 3000


def test_clean_ids_are_valid_and_agree_with_the_record(small: Path, truth: pd.DataFrame):
    police = read(small, "police").merge(
        truth[truth.source == "police"], left_on="登记流水号", right_on="record_id")
    clean = police[~police.corruptions.str.contains("id_")]
    assert len(clean) > 1000
    for _, row in clean.iterrows():
        pid = row["身份证号码"]
        assert len(pid) == 18 and pid[:17].isdigit(), pid
        assert pid[17] == check_char(pid[:17]), pid
        birth = dt.date(int(pid[6:10]), int(pid[10:12]), int(pid[12:14]))
        assert birth.isoformat() == row["出生日期"]
        assert (int(pid[16]) % 2 == 1) == (row["性别"] == "男")
    # one person, one ID; distinct persons, distinct IDs
    ids = clean.groupby("person_id")["身份证号码"].nunique()
    assert (ids == 1).all()
    assert clean.drop_duplicates("person_id")["身份证号码"].is_unique


def test_damaged_ids_are_what_their_code_says(small: Path, truth: pd.DataFrame):
    police = read(small, "police").merge(
        truth[truth.source == "police"], left_on="登记流水号", right_on="record_id")
    true_id = (police[~police.corruptions.str.contains("id_")]
               .drop_duplicates("person_id").set_index("person_id")["身份证号码"])
    legacy = police[police.corruptions.str.contains("id_15")]
    assert len(legacy) > 0
    for _, row in legacy.iterrows():
        old = row["身份证号码"]
        assert len(old) == 15 and old.isdigit()
        upgraded = old[:6] + "19" + old[6:]
        upgraded += check_char(upgraded)
        if row.person_id in true_id:
            assert upgraded == true_id[row.person_id]
    typo = police[police.corruptions.str.contains("id_typo|id_swap")]
    assert len(typo) > 0
    for _, row in typo.iterrows():
        pid = row["身份证号码"]
        assert pid[17] != check_char(pid[:17])  # one digit or one adjacent swap: checksum fails


def test_population_frequency_shape():
    people = build_chunk(np.random.default_rng(3), 60_000, Profile(), Counters())
    names, _ = T.surname_table()
    top100 = people.surname.isin(set(names[:100])).mean()
    assert 0.80 < top100 < 0.90
    share = people.surname.value_counts(normalize=True)
    for s in "王李张":
        assert 0.06 < share[s] < 0.08
    assert people.surname.isin(T.COMPOUND).sum() > 50
    # very common full names are very frequent; 张伟 among the commonest
    counts = people.name.value_counts()
    assert counts["张伟"] >= 10 and counts.index.get_loc("张伟") < 40
    # one- and two-character given names; era fashion
    han = people[people["style"] == "han"]
    one = han.given.str.len().eq(1).groupby(han.era).mean()
    assert 0.1 < one.mean() < 0.5 and one[2] > one[4]
    assert han[han.era == 4].given.value_counts().index[:10].isin(
        ["一诺", "梓轩", "浩然", "欣怡", "子轩", "梓涵", "子涵", "宇轩", "沐宸", "浩宇"]).sum() >= 5
    assert han[han.era == 0].given.isin(["秀英", "桂兰", "建国", "国华"]).sum() > 100
    minority = people[people["style"].isin(["uyghur", "kazakh", "yi"])]
    assert len(minority) > 300 and minority.name.str.contains("·").all()
    assert set(people.ethnicity) >= {"汉族", "维吾尔族", "藏族", "壮族", "回族"}


def test_twins_share_birth_date_and_household_and_differ_by_one_character():
    people = build_chunk(np.random.default_rng(5), 20_000, Profile.named("household-hard"),
                         Counters())
    twins = people[people.twin & (people["style"] == "han")]
    assert len(twins) > 300
    pairs = 0
    for _, group in twins.groupby(["household_id", "birth"]):
        if len(group) != 2:
            continue
        a, b = group.name.tolist()
        a_id, b_id = group.id18.tolist()
        assert a != b and len(a) == len(b)
        assert sum(x != y for x, y in zip(a, b)) == 1
        assert a_id[:14] == b_id[:14] and a_id != b_id
        assert group.phone.nunique() <= 2 and group.current_address.nunique() == 1
        pairs += 1
    assert pairs > 100


def test_no_district_cities_are_addressed_by_town(small: Path):
    police = read(small, "police")
    dongguan = police[police["现住地址"].str.contains("东莞市")]
    assert len(dongguan) > 10
    assert not dongguan["现住地址"].str.contains("东莞市[^镇街]{1,4}区").any()


def test_config_loads_and_the_linker_reads_every_record(small: Path, truth: pd.DataFrame):
    from linkage import load_config
    from linkage.io import read_source

    cfg = load_config(small / "run.yaml")
    assert list(cfg.sources) == ["police", "civil_affairs", "health"]
    assert cfg.sources["health"].encoding == "gb18030"
    for name, source in cfg.sources.items():
        records = read_source(source)
        assert len(records) == (truth.source == name).sum()
        expected = set(truth.record_id[truth.source == name])
        assert set(records["record_id"]) == expected  # leading zeros of health ids kept
        assert records["name"].str.len().gt(0).all()


def test_corruption_factor_scales_rates(tmp_path: Path):
    counts = {}
    for factor in (1.0, 2.0):
        out = tmp_path / str(factor)
        generate(4000, 5, out, corruption=factor)
        codes = pd.read_csv(out / "truth.csv", dtype=str, keep_default_na=False).corruptions
        tags = codes.str.split("|").explode()
        counts[factor] = tags.value_counts()
    scaled = ["name_homophone", "id_typo", "birth_year_typo", "id_filler", "birth_missing"]
    ratio = counts[2.0][scaled].sum() / counts[1.0][scaled].sum()
    assert 1.6 < ratio < 2.4


def test_household_hard_raises_twins_and_guardian_ids(tmp_path: Path):
    def tags(profile: str) -> pd.Series:
        generate(4000, 9, tmp_path / profile, profile=profile)
        t = pd.read_csv(tmp_path / profile / "truth.csv", dtype=str, keep_default_na=False)
        return t.corruptions.str.split("|").explode().value_counts()

    std, hard = tags("standard"), tags("household-hard")
    assert hard["id_guardian"] > 2.5 * std["id_guardian"]


def test_same_arguments_same_files(tmp_path: Path):
    generate(500, 2, tmp_path / "a")
    generate(500, 2, tmp_path / "b")
    for file in ["police.csv", "civil_affairs.csv", "health.csv", "truth.csv", "run.yaml"]:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_cli_rejects_bad_arguments_with_exit_2(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--persons", "0", "--output", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--persons" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["--persons", "200", "--output", str(tmp_path / "ok"), "--quiet"]) == 0
    assert (tmp_path / "ok" / "truth.csv").exists()


def test_explain_classifies_household_false_merges(small: Path, truth: pd.DataFrame, tmp_path: Path,
                                                   capsys):
    from benchmarks.independent.explain import main as explain_main

    persons = pd.read_csv(small / "persons.csv", dtype=str, keep_default_na=False)
    assert set(persons.person_id) == set(truth.person_id)
    # a prediction that puts each household into one identity: every false merge is in-house
    household = persons.set_index("person_id").household_id
    pred = truth[["source", "record_id"]].assign(identity_id=truth.person_id.map(household).to_numpy())
    pred.to_csv(tmp_path / "identities.csv", index=False)
    assert explain_main(["--data", str(small), "--pred", str(tmp_path / "identities.csv")]) == 0
    out = capsys.readouterr().out
    assert "parent and child" in out and "spouses" in out and "strangers" not in out
