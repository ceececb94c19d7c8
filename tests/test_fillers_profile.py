"""Filler values (不详, 无, '-') in any field: null plus a ``*_placeholder`` flag, and counted as
missing, not invalid, by the profile; a float-damaged ID never conflicts with a birth date."""

from __future__ import annotations

import pandas as pd
import pytest

from linkage import schema
from linkage.profile import profile_fields
from linkage.standardize.combine import standardize


def _records(**columns: list) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    frame = pd.DataFrame(
        {schema.SOURCE: ["civil"] * n, schema.RECORD_ID: [f"C{i}" for i in range(n)]}
    )
    for field, values in columns.items():
        frame[field] = values
    return frame


@pytest.mark.parametrize("filler", ["不详", "无", "未知", "空", "-", "—", "N/A", " 不详 "])
def test_filler_id_and_date_are_null_and_flagged_placeholder(filler: str) -> None:
    out = standardize(_records(id_number=[filler], birth_date=[filler], name=["周敏"]))
    flags = out[schema.QUALITY_FLAGS].iloc[0].split(schema.QUALITY_SEP)
    assert "id_placeholder" in flags and "birth_date_placeholder" in flags
    assert "id_malformed" not in flags and "birth_date_unparsed" not in flags
    assert out[schema.ID_STD].iloc[0] is None and pd.isna(out[schema.ID_VALID].iloc[0])
    assert out[schema.BIRTH_DATE_STD].iloc[0] is None


def test_profile_counts_fillers_as_missing_not_invalid() -> None:
    records = standardize(
        _records(
            name=["周敏", "不详", "陈静", "吴磊"],
            id_number=["110105198503070027", "不详", "12345", None],
            birth_date=["1985-03-07", "无", "1985-13-40", None],
            phone=["13917263548", "无", "13800000000", None],
            current_address=["北京市朝阳区建国路8号", "地址不详", "-", None],
        )
    )
    table = profile_fields(records).set_index("field")
    # one real value, one filler, one unusable value (or a filler number), one empty cell
    assert table.loc["name", "missing_pct"] == 25.0 and table.loc["name", "invalid_pct"] == 0.0
    assert table.loc["id_number", "missing_pct"] == 50.0
    assert table.loc["id_number", "invalid_pct"] == 25.0  # 12345: present but malformed
    assert table.loc["birth_date", "missing_pct"] == 50.0
    assert table.loc["birth_date", "invalid_pct"] == 25.0  # 1985-13-40
    assert table.loc["phone", "missing_pct"] == 75.0  # 13800000000 is a filler number
    assert table.loc["phone", "invalid_pct"] == 0.0
    assert table.loc["current_address", "missing_pct"] == 75.0
    assert table.loc["current_address", "invalid_pct"] == 0.0


def test_profile_counts_gender_and_ethnicity_fillers_as_missing_not_invalid() -> None:
    # 无 was gender_unparsed and 不详 unflagged: both counted invalid, none missing
    records = standardize(
        _records(
            gender=["男", "无", "不详", "3", None],
            ethnicity=["汉族", "无", "不详", "火星族", None],
        )
    )
    flags = records[schema.QUALITY_FLAGS].str.split(schema.QUALITY_SEP)
    assert ["gender_placeholder" in f for f in flags] == [False, True, True, False, False]
    assert ["ethnicity_placeholder" in f for f in flags] == [False, True, True, False, False]
    table = profile_fields(records).set_index("field")
    for field in ("gender", "ethnicity"):
        # one value, two fillers, one unrecognized value, one empty cell
        assert table.loc[field, "missing_pct"] == 60.0, field
        assert table.loc[field, "invalid_pct"] == 20.0, field


def test_float_damaged_id_never_conflicts_with_the_birth_date() -> None:
    # digits 7-14 of the float read 1990-01-01, the record says 1990-03-05: the float's digits
    # are not evidence, so no id_birth_conflict; an intact ID with the same digits conflicts
    out = standardize(
        _records(
            id_number=["4.40106199001011e+17", "440106199001011234"],
            birth_date=["90-3-5", "1990-03-05"],
        )
    )
    damaged, intact = (set(f.split(schema.QUALITY_SEP)) for f in out[schema.QUALITY_FLAGS])
    assert "id_float_damaged" in damaged and "id_birth_conflict" not in damaged
    assert "id_birth_conflict" in intact
