"""Coverage indicators on hand-built identities and records with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import indicators as ind
from linkage import schema
from linkage.errors import InputError

REF = "2024-06-30"
POLICE_DISTRICT = schema.raw_col("现居住地所属区")
HEALTH_DISTRICT = schema.raw_col("所属区")


def _rec(source, rid, person, reg, birth=None, gender=None, kind=None, district=None, **extra):
    row = {
        schema.SOURCE: source,
        schema.RECORD_ID: rid,
        schema.IDENTITY_ID: person,
        schema.REGISTERED_AT_STD: reg,
        schema.BIRTH_DATE_STD: birth,
        schema.GENDER_STD: gender,
        ind.KIND_COLUMN: kind,
        POLICE_DISTRICT: district if source == "police" else None,
        HEALTH_DISTRICT: district if source == "health" else None,
        schema.ID_VALID: False,
        schema.ID_BIRTH_DATE: None,
        schema.ID_GENDER: None,
    }
    row.update(extra)
    return row


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        # A: woman 34, police 18 months, health file -> covered.
        _rec("police", "p1", "A", "2023-01-01", "1990-05-01", "F", district="福田区"),
        _rec("health", "h1", "A", "2023-02-01", "1990-05-01", "F", ind.HEALTH_FILE, "福田区"),
        # B: man, police only -> not covered; one registry.
        _rec("police", "p2", "B", "2023-01-01", "1985-01-01", "M", district="福田区"),
        # C: police for under six months -> outside the population.
        _rec("police", "p3", "C", "2024-05-01", "1980-01-01", "M", district="南山区"),
        _rec("health", "h3", "C", "2024-05-02", "1980-01-01", "M", ind.HEALTH_FILE, "南山区"),
        # D: child aged 4, vaccinated; the typed birth date is wrong, the valid ID's wins.
        _rec(
            "police",
            "p4",
            "D",
            "2022-01-01",
            "2001-01-01",
            "M",
            district="南山区",
            **{schema.ID_VALID: True, schema.ID_BIRTH_DATE: "2020-01-01", schema.ID_GENDER: "M"},
        ),
        _rec("health", "h4", "D", "2022-03-01", "2020-01-01", "M", ind.VACCINATION, "南山区"),
        # E: seven on the reference date -> not a 0-6 child.
        _rec("police", "p5", "E", "2022-01-01", "2017-06-30", "F", district="南山区"),
        # G: aged six (seven tomorrow), no vaccination.
        _rec("police", "p6", "G", "2022-01-01", "2017-07-01", "M", district="南山区"),
        # F: woman 44 with maternal care.
        _rec("police", "p7", "F", "2022-01-01", "1980-01-01", "F", district="福田区"),
        _rec("health", "h7", "F", "2022-05-01", "1980-01-01", "F", ind.MATERNAL_CARE, "福田区"),
        # H: woman 51: too old for maternal care.
        _rec("police", "p8", "H", "2022-01-01", "1973-01-01", "F", district="福田区"),
        # K: health only: outside the police population, still resident for multi-registry.
        _rec("health", "h9", "K", "2022-01-01", "1995-01-01", "F", ind.HEALTH_FILE, "宝安区"),
        # L: registered after the reference date: ignored.
        _rec("police", "p10", "L", "2024-08-01", "1990-01-01", "M", district="宝安区"),
    ]
    frame = pd.DataFrame(rows)
    identities = frame[[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]]
    records = frame.drop(columns=[schema.IDENTITY_ID])
    return identities, records


def _row(table: pd.DataFrame, district: str) -> pd.Series:
    return table.set_index("district").loc[district]


def test_person_table_attributes(tables):
    identities, records = tables
    persons = ind.person_table(identities, records, REF).set_index(schema.IDENTITY_ID)
    assert persons.loc["D", "age"] == 4  # from the valid ID, not the typed 2001
    assert persons.loc["E", "age"] == 7 and persons.loc["G", "age"] == 6
    assert persons.loc["A", "sources"] == "health|police" and persons.loc["A", "n_sources"] == 2
    assert persons.loc["A", "kinds"] == ind.HEALTH_FILE
    assert not persons.loc["C", "in_population"]  # under six months
    assert not persons.loc["K", "in_population"] and persons.loc["K", "resident"]
    assert persons.loc["K", "district"] == "宝安区"  # from the health registry's column
    assert persons.loc["L", "n_sources"] == 0 and not persons.loc["L", "resident"]
    assert len(persons) == identities[schema.IDENTITY_ID].nunique()


def test_health_file_coverage(tables):
    identities, records = tables
    table = ind.health_file_coverage(identities, records, REF)
    overall = _row(table, ind.OVERALL)
    # population: A B D E G F H (C too recent, K not police, L later) -> only A has a file
    assert (overall["eligible"], overall["covered"]) == (7, 1)
    assert overall["coverage"] == pytest.approx(1 / 7)
    assert overall["target"] == 0.8 and overall["gap"] == pytest.approx(1 / 7 - 0.8)
    futian = _row(table, "福田区")
    assert (futian["eligible"], futian["covered"]) == (4, 1)
    assert list(table.columns) == ind.INDICATOR_COLUMNS
    assert table["eligible"].iloc[1:].sum() == overall["eligible"]


def test_child_vaccination_coverage(tables):
    identities, records = tables
    table = ind.child_vaccination_coverage(identities, records, REF)
    overall = _row(table, ind.OVERALL)
    assert (overall["eligible"], overall["covered"]) == (2, 1)  # D vaccinated, G not; E is 7
    assert set(table["district"]) == {ind.OVERALL, "南山区"}


def test_maternal_care_coverage(tables):
    identities, records = tables
    table = ind.maternal_care_coverage(identities, records, REF)
    overall = _row(table, ind.OVERALL)
    # women 15-49 in the population: A (34) and F (44); H is 51
    assert (overall["eligible"], overall["covered"]) == (2, 1)
    assert np.isnan(overall["target"])


def test_multi_registry_coverage(tables):
    identities, records = tables
    table = ind.multi_registry_coverage(identities, records, REF)
    overall = _row(table, ind.OVERALL)
    # resident 6+ months in any registry: A B D E G F H K; two registries: A D F
    assert (overall["eligible"], overall["covered"]) == (8, 3)


def test_custom_kind_column_and_values(tables):
    identities, records = tables
    renamed = records.rename(columns={ind.KIND_COLUMN: "service"})
    renamed["service"] = renamed["service"].replace({ind.HEALTH_FILE: "EHR"})
    table = ind.health_file_coverage(
        identities, renamed, REF, kind_column="service", kinds=("EHR",)
    )
    assert _row(table, ind.OVERALL)["covered"] == 1


def test_unknown_age_counted_not_dropped(tables):
    identities, records = tables
    records = records.copy()
    records.loc[records[schema.RECORD_ID] == "p6", schema.BIRTH_DATE_STD] = None
    table = ind.child_vaccination_coverage(identities, records, REF)
    overall = _row(table, ind.OVERALL)
    assert overall["eligible"] == 1 and overall["unknown"] == 1


def test_coverage_indicators_and_below_target(tables):
    identities, records = tables
    table = ind.coverage_indicators(identities, records, REF)
    assert set(table["indicator"]) == {
        "health_file",
        "child_vaccination",
        "maternal_care",
        "multi_registry",
    }
    worst = ind.below_target(table)
    assert (worst["gap"] < 0).all() and worst["gap"].is_monotonic_increasing
    assert ind.OVERALL not in set(worst["district"])
    assert worst["target"].notna().all()
    # 南山区 has no health file among D E G (0/3): the worst gap
    first = worst.iloc[0]
    assert (first["indicator"], first["district"], first["coverage"]) == (
        "health_file",
        "南山区",
        0,
    )


def test_default_reference_date_is_latest_registration(tables):
    identities, records = tables
    persons = ind.person_table(identities, records)
    assert persons.attrs["reference_date"] == pd.Timestamp("2024-08-01")


def test_missing_kind_column_raises_naming_the_columns_found(tables):
    identities, records = tables
    renamed = records.rename(columns={ind.KIND_COLUMN: schema.raw_col("服务类型")})
    for call in (ind.coverage_indicators, ind.health_file_coverage):
        with pytest.raises(InputError) as err:
            call(identities, renamed, REF)
        text = str(err.value)
        assert ind.KIND_COLUMN in text and schema.raw_col("服务类型") in text, text
        assert "kind_column=" in text


def test_kind_codes_not_among_the_values_raise_naming_the_values(tables):
    identities, records = tables
    coded = records.copy()
    coded[ind.KIND_COLUMN] = coded[ind.KIND_COLUMN].map(
        {ind.HEALTH_FILE: "01", ind.VACCINATION: "02", ind.MATERNAL_CARE: "03"}
    )
    with pytest.raises(InputError) as err:
        ind.coverage_indicators(identities, coded, REF)
    text = str(err.value)
    assert "01, 02, 03" in text and ind.HEALTH_FILE in text and "health_file_kinds=" in text
    with pytest.raises(InputError, match="its values: 01, 02, 03"):
        ind.child_vaccination_coverage(identities, coded, REF)
    # the registry's own codes, passed, are counted
    table = ind.coverage_indicators(
        identities,
        coded,
        REF,
        health_file_kinds=("01",),
        vaccination_kinds=("02",),
        maternal_kinds=("03",),
    )
    assert table.equals(ind.coverage_indicators(identities, records, REF))
    assert table.attrs["warnings"] == []


def test_kinds_given_to_all_four_names_the_per_indicator_parameters(tables):
    identities, records = tables
    with pytest.raises(TypeError, match="health_file_kinds=, vaccination_kinds="):
        ind.coverage_indicators(identities, records, REF, kinds=(ind.HEALTH_FILE,))


def test_one_indicators_kinds_absent_is_a_warning_in_the_log_and_the_table(tables, caplog):
    # the other kinds prove the column and its coding right: no maternal care may be real
    identities, records = tables
    without = records.copy()
    without.loc[without[ind.KIND_COLUMN] == ind.MATERNAL_CARE, ind.KIND_COLUMN] = None
    with caplog.at_level("WARNING", logger="linkage.indicators"):
        table = ind.coverage_indicators(identities, without, REF)
    (warning,) = table.attrs["warnings"]
    assert warning.startswith("maternal_care:") and ind.MATERNAL_CARE in warning
    assert ind.HEALTH_FILE in warning  # the values found
    assert warning in caplog.text
    maternal = table[(table["indicator"] == "maternal_care") & (table["district"] == ind.OVERALL)]
    assert maternal["covered"].iloc[0] == 0


def test_population_sources_absent_raise_naming_the_sources_found(tables, caplog):
    identities, records = tables
    with pytest.raises(InputError) as err:
        ind.coverage_indicators(identities, records, REF, population_sources=("Police",))
    assert "Police" in str(err.value) and "health, police" in str(err.value)
    with pytest.raises(InputError, match="list of source names"):
        ind.person_table(identities, records, REF, population_sources="police")
    # one of two sources absent: a warning, the other still counts
    with caplog.at_level("WARNING", logger="linkage.indicators"):
        table = ind.health_file_coverage(
            identities, records, REF, population_sources=("police", "civil")
        )
    assert table.attrs["warnings"] == [
        "population source 'civil' has no record (sources in the records: health, police)"
    ]
    assert "'civil' has no record" in caplog.text
    assert _row(table, ind.OVERALL)["eligible"] == 7


def test_no_identity_resident_long_enough_is_a_warning(tables, caplog):
    identities, records = tables
    with caplog.at_level("WARNING", logger="linkage.indicators"):
        table = ind.health_file_coverage(identities, records, "2022-03-01")
    assert _row(table, ind.OVERALL)["eligible"] == 0
    assert any(
        "no identity has a record in population_sources" in w for w in table.attrs["warnings"]
    )
    assert "no eligible person" in caplog.text


@pytest.mark.parametrize(
    "written",
    [
        "2024年6月30日",
        "2024/6/30",
        "20240630",
        "二〇二四年六月三十日",
        pd.Timestamp("2024-06-30 15:00"),
        np.datetime64("2024-06-30"),
    ],
)
def test_reference_date_is_read_as_the_date_standardizer_reads_dates(tables, written):
    identities, records = tables
    persons = ind.person_table(identities, records, written)
    assert persons.attrs["reference_date"] == pd.Timestamp(REF)
    assert ind.coverage_indicators(identities, records, written).equals(
        ind.coverage_indicators(identities, records, REF)
    )


@pytest.mark.parametrize("bad", ["2024年13月1日", "yesterday", "", 20240630])
def test_a_reference_date_that_is_not_a_date_raises(tables, bad):
    identities, records = tables
    with pytest.raises(InputError, match="reference_date"):
        ind.person_table(identities, records, bad)


def test_missing_identity_raises(tables):
    identities, records = tables
    with pytest.raises(InputError, match="no identity"):
        ind.health_file_coverage(identities.iloc[1:], records, REF)
    with pytest.raises(InputError, match="reference_date"):
        ind.health_file_coverage(identities, records, "not a date")


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),  # person
            st.sampled_from(["police", "health", "civil_affairs"]),
            st.integers(0, 1200),  # registration day offset
            st.integers(0, 80),  # age in years
            st.sampled_from([None, ind.HEALTH_FILE, ind.VACCINATION, ind.MATERNAL_CARE]),
            st.sampled_from(["福田区", "南山区", None]),
        ),
        min_size=1,
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_invariants(rows, rnd):
    start = pd.Timestamp("2021-07-01")
    recs = [
        _rec(
            src,
            f"r{i}",
            f"P{p}",
            (start + pd.Timedelta(days=day)).strftime("%Y-%m-%d"),
            f"{2024 - age}-03-01",
            "F" if p % 2 else "M",
            kind if src == "health" else None,
            district,
        )
        for i, (p, src, day, age, kind, district) in enumerate(rows)
    ]
    # a police record and a health file: without them the indicators refuse the tables
    recs.append(_rec("police", "rp", "P9", "2022-01-01", "1990-01-01", "F", None, "福田区"))
    recs.append(_rec("health", "rh", "P9", "2022-01-01", "1990-01-01", "F", ind.HEALTH_FILE))
    frame = pd.DataFrame(recs)
    identities = frame[[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]]
    records = frame.drop(columns=[schema.IDENTITY_ID])
    table = ind.coverage_indicators(identities, records, REF)
    assert (table["covered"] <= table["eligible"]).all()
    assert table["coverage"].dropna().between(0, 1).all()
    for _, group in table.groupby("indicator"):
        overall = group[group["district"] == ind.OVERALL].iloc[0]
        rest = group[group["district"] != ind.OVERALL]
        assert rest["eligible"].sum() == overall["eligible"]
        assert rest["covered"].sum() == overall["covered"]
    # Row order of either table does not change any figure.
    order = list(range(len(frame)))
    rnd.shuffle(order)
    shuffled = ind.coverage_indicators(identities.iloc[order[::-1]], records.iloc[order], REF)
    pd.testing.assert_frame_equal(table, shuffled)


def test_district_tie_does_not_depend_on_row_order():
    # Two police records of one person registered the same day in different districts.
    frame = pd.DataFrame(
        [
            _rec("police", "p1", "A", "2023-01-01", "1990-05-01", "F", district="南山区"),
            _rec("police", "p2", "A", "2023-01-01", "1990-05-01", "F", district="福田区"),
        ]
    )
    identities = frame[[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]]
    records = frame.drop(columns=[schema.IDENTITY_ID])
    forward = ind.person_table(identities, records, REF)
    backward = ind.person_table(identities.iloc[::-1], records.iloc[::-1], REF)
    assert forward["district"].tolist() == backward["district"].tolist() == ["南山区"]
