from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import schema
from linkage.merge import GoldenSettings, WorkerShare, merge_records, worker_fields
from linkage.standardize._distinct import _Worker

NAME_CLEAN = schema.name_col(schema.NAME, "clean")


def _records():
    return pd.DataFrame(
        {
            schema.SOURCE: [
                "police",
                "health",
                "civil_affairs",
                "health",
                "police",
                "civil_affairs",
            ],
            schema.RECORD_ID: ["p1", "h1", "c1", "h2", "p2", "c2"],
            NAME_CLEAN: ["张伟", "章伟", "张伟", "李娜", "李娜", "李娜"],
            schema.ID_STD: [
                "11010519491231002X",
                None,
                "110105194912310021",
                None,
                "110105198001010012",
                "110105198001010039",
            ],
            schema.ID_VALID: [True, None, False, None, True, True],
            schema.PHONE_STD: [
                "13800000001",
                "13800000002",
                None,
                "13900000000",
                None,
                "13911111111",
            ],
            schema.REGISTERED_AT_STD: [
                "2023-01-01",
                "2024-06-01",
                "2022-01-01",
                "2021-01-01",
                "2020-01-01",
                "2025-01-01",
            ],
            schema.HUKOU_ADDRESS: [
                None,
                "湖南省长沙市",
                "湖南省长沙市岳麓区",
                "四川省成都市",
                "四川省成都市武侯区",
                None,
            ],
            schema.BIRTH_DATE_STD: [
                "1949-12-31",
                "1949-12-31",
                "1949-12-30",
                None,
                "1980-01-01",
                "1980-01-01",
            ],
        }
    )


def test_survivorship_and_provenance():
    records = _records()
    identities = pd.Series(["A", "A", "A", "B", "B", "B"])
    golden = merge_records(
        records, identities, GoldenSettings(source_priority=["police", "civil_affairs", "health"])
    )
    a = golden.set_index(schema.IDENTITY_ID).loc["A"]
    assert a["records"] == 3 and a["sources"] == "civil_affairs|health|police"
    # valid ID beats the checksum failure
    assert a[schema.ID_NUMBER] == "11010519491231002X" and a["id_number_source"] == "police"
    # most frequent name; most recent phone with its record
    assert a[schema.NAME] == "张伟"
    assert a[schema.PHONE] == "13800000002" and a["phone_record_id"] == "h1"
    # hukou by source priority: police has none, so civil affairs
    assert (
        a[schema.HUKOU_ADDRESS] == "湖南省长沙市岳麓区"
        and a["hukou_address_source"] == "civil_affairs"
    )
    assert "birth_date=1949-12-30|1949-12-31" in a["conflicts"]
    b = golden.set_index(schema.IDENTITY_ID).loc["B"]
    # two different valid IDs in one identity are listed as a conflict
    assert "id_number=110105198001010012|110105198001010039" in b["conflicts"]
    assert b[schema.PHONE] == "13911111111"


def test_conflicts_of_several_fields_are_joined_in_the_fields_order():
    """The conflicts column: each conflicting field's text, "; " between two, in the order
    of the golden fields; the empty text for an identity without any."""
    records = _records()
    records.loc[3, schema.BIRTH_DATE_STD] = "1980-01-02"  # B: two IDs and two birth dates
    identities = pd.Series(["A", "A", "A", "B", "B", "B"])
    settings = GoldenSettings(source_priority=["police", "civil_affairs", "health"])
    golden = merge_records(records, identities, settings).set_index(schema.IDENTITY_ID)
    texts = {
        schema.ID_NUMBER: "id_number=110105198001010012|110105198001010039",
        schema.BIRTH_DATE: "birth_date=1980-01-01|1980-01-02",
    }
    order = [f for f in settings.fields if f in texts]
    assert golden.loc["B", "conflicts"] == "; ".join(texts[f] for f in order)
    assert golden.loc["A", "conflicts"] == "birth_date=1949-12-30|1949-12-31"
    one = merge_records(records.iloc[:1], identities.iloc[:1], settings)
    assert one["conflicts"].tolist() == [""]


def test_golden_records_do_not_depend_on_row_order():
    records = _records()
    identities = pd.Series(["A", "A", "A", "B", "B", "B"])
    settings = GoldenSettings(source_priority=["police"])
    first = merge_records(records, identities, settings).set_index(schema.IDENTITY_ID).sort_index()
    order = [5, 3, 1, 0, 4, 2]
    shuffled = (
        merge_records(
            records.iloc[order].reset_index(drop=True),
            identities.iloc[order].reset_index(drop=True),
            settings,
        )
        .set_index(schema.IDENTITY_ID)
        .sort_index()
    )
    pd.testing.assert_frame_equal(first, shuffled[first.columns])


def test_singletons_and_missing_columns():
    records = _records()[[schema.SOURCE, schema.RECORD_ID, NAME_CLEAN]]
    golden = merge_records(records, pd.Series(list("ABCDEF")))
    assert len(golden) == 6 and (golden["records"] == 1).all()
    assert list(golden[schema.NAME]) == list(records[NAME_CLEAN])
    assert (golden["conflicts"] == "").all()


_FILLER_ALPHABET = (
    "无暂没有不详细地址未知明空待定填写补查缺失此同上略"  # the fillers' Han characters
    "北京市朝阳区路号王伟豈詳"  # other Han, a compatibility ideograph, a traditional form
    "nulNoNeAx019/-—_.。?？*、·，; \u3000\u00a0\t"  # Latin letters, digits, punctuation, spaces
    "\uf900\uff2e\u2460\uff10"  # characters NFKC turns into others (豈, Ｎ, ①, ０)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=_FILLER_ALPHABET, max_size=8), min_size=1, max_size=30))
def test_filler_mask_equals_the_scalar_rule(values):
    from linkage.merge import _filler_mask
    from linkage.standardize._fillers import is_filler_text

    array = np.array(values + [None], dtype=object)
    assert _filler_mask(array).tolist() == [is_filler_text(v) for v in array]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="ab1\x1f张王\U00020000é~", max_size=5), min_size=0, max_size=20),
    st.booleans(),
)
def test_key_rank_equals_the_sorted_rank(keys, sort):
    """Keys already increasing (a batch's sorted records) take ``arange``; the rank must be
    the one sorting gives, in Python's code point order, whatever the characters."""
    from linkage.merge import _dense_rank, _key_rank

    if sort:
        keys = sorted(set(keys))
    column = pd.Series(keys, dtype=object)
    np.testing.assert_array_equal(_key_rank(column), _dense_rank(column))
    np.testing.assert_array_equal(_key_rank(column.astype("str")), _dense_rank(column))


def _assigned(values: np.ndarray, rows: np.ndarray, owners: np.ndarray, n: int) -> pd.Series:
    """The golden column as merge_records built it before: an object array assigned."""
    out = np.full(n, None, dtype=object)
    out[owners] = values[rows]
    frame = pd.DataFrame({"x": np.zeros(n, dtype=np.int64)})
    frame["v"] = out
    return frame["v"]


_PICK_VALUES = st.one_of(st.none(), st.text(alphabet="ab 张王\U00020000é\x00", max_size=4))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_PICK_VALUES, min_size=0, max_size=25),
    st.data(),
    st.booleans(),
)
def test_picked_column_equals_the_assigned_object_array(values, data, whole):
    """Golden columns taken in Arrow equal the object array pandas converted before, dtype
    included: all-null picks (object), nulls among values, no owners, owners left empty."""
    from linkage.merge import _arrow_text, _picked

    array = np.array(values, dtype=object)
    rows = np.array(
        data.draw(st.lists(st.integers(0, max(len(values) - 1, 0)), max_size=len(values)))
        if len(values)
        else [],
        dtype=np.int64,
    )
    n = len(rows) + data.draw(st.integers(0, 3))
    owners = np.array(data.draw(st.permutations(range(n)))[: len(rows)], dtype=np.int64)
    frame = pd.DataFrame({"x": np.zeros(n, dtype=np.int64)})
    frame["v"] = _picked(array, _arrow_text(array) if whole else None, rows, owners, n)
    pd.testing.assert_series_equal(frame["v"], _assigned(array, rows, owners, n))


def test_picked_column_of_values_that_are_not_text_keeps_the_object_path():
    from linkage.merge import _arrow_text, _picked

    values = np.array([1, "a", None, 2.5], dtype=object)
    assert _arrow_text(values) is None
    rows, owners = np.array([0, 1, 3]), np.array([2, 0, 1])
    frame = pd.DataFrame({"x": np.zeros(4, dtype=np.int64)})
    frame["v"] = _picked(values, None, rows, owners, 4)
    pd.testing.assert_series_equal(frame["v"], _assigned(values, rows, owners, 4))


def test_golden_records_taken_in_arrow_equal_the_object_path(monkeypatch):
    """merge_records with every column built from objects (no Arrow form) is the same."""
    import linkage.merge as merge

    records = _records()
    identities = pd.Series(["A", "B", "A", "B", "A", "B"])
    fast = merge_records(records, identities)
    monkeypatch.setattr(merge, "_arrow_text", lambda values: None)
    pd.testing.assert_frame_equal(fast, merge_records(records, identities))


@pytest.mark.parametrize("arrow_keys", [True, False])
def test_provenance_sources_as_codes_equal_the_text(arrow_keys):
    """``source_codes``: the ``<field>_source`` columns are categoricals of the same values,
    ``identity_id`` the same text; record keys held as Arrow text or as objects give the
    same table."""
    records = _records()
    if arrow_keys:
        for key in (schema.SOURCE, schema.RECORD_ID):
            records[key] = records[key].astype(pd.StringDtype("pyarrow"))
    else:
        records[schema.RECORD_ID] = records[schema.RECORD_ID].astype(object)
    identities = pd.Series(["C", "B", "A", "B", "A", "B"], dtype="str" if arrow_keys else object)
    text = merge_records(records, identities)
    coded = merge_records(records, identities, source_codes=True)
    sources = [c for c in coded.columns if c.endswith("_source")]
    keys: list[str] = []  # the record ids stay text
    assert sources and all(isinstance(coded[c].dtype, pd.CategoricalDtype) for c in sources)
    assert all(set(coded[c].cat.categories) == {"civil_affairs", "health", "police"}
               for c in sources)  # fmt: skip
    # a field no record of an identity has: null there, as in the text column
    assert coded["hukou_address_source"].isna().any()
    for column in sources + keys + [schema.IDENTITY_ID]:
        assert coded[column].astype(object).where(coded[column].notna(), None).tolist() == (
            text[column].astype(object).where(text[column].notna(), None).tolist()
        )
    assert coded[schema.IDENTITY_ID].dtype == text[schema.IDENTITY_ID].dtype
    pd.testing.assert_frame_equal(
        coded.drop(columns=sources + keys + [schema.IDENTITY_ID]),
        text.drop(columns=sources + keys + [schema.IDENTITY_ID]),
    )
    # the text form is the one merge_records always gave (the records' own objects)
    pd.testing.assert_frame_equal(text, merge_records(_records(), identities))


def test_golden_records_of_sorted_records_equal_the_sorting_path(monkeypatch):
    """The sorted-keys shortcut gives the golden records the string sort gives."""
    import linkage.merge as merge

    records = _records().sort_values([schema.SOURCE, schema.RECORD_ID]).reset_index(drop=True)
    identities = pd.Series(["A", "B", "A", "B", "A", "B"])
    fast = merge_records(records, identities)
    monkeypatch.setattr(merge, "_key_rank", merge._dense_rank)
    pd.testing.assert_frame_equal(fast, merge_records(records, identities))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.just(float("nan")),
            st.integers(-3, 3),
            st.text(alphabet=" \t\n\u3000\u00a0\u2003\x1c\u180e\u200b王伟a 北京", max_size=6),
        ),
        min_size=0,
        max_size=30,
    )
)
def test_stripped_text_per_distinct_value_equals_the_per_row_strip(values):
    """Shown names and addresses are stripped once per distinct value: the same values as
    pandas' per-row ``astype("string").str.strip()`` (Unicode whitespace, nulls to None),
    one object per distinct result."""
    from linkage.merge import _stripped_text
    from linkage.tables import shared_text

    column = pd.Series(values, dtype=object)
    got = _stripped_text(column)
    want = shared_text(column.astype("string").str.strip())
    assert got.dtype == object and want.dtype == object
    assert got.tolist() == want.tolist()
    text = [v for v in got if v is not None]
    assert len({id(v) for v in text}) == len(set(text))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["police", "health", "civil", "户籍", "a\x1fb"]), max_size=25))
def test_mapped_per_distinct_value_equals_the_per_row_map(values):
    from linkage.merge import _mapped

    for column in (pd.Series(values, dtype=object), pd.Series(values, dtype="str")):
        mapping = {v: i * 7 for i, v in enumerate(sorted(set(values)))}
        want = column.map(mapping).to_numpy(np.int64)
        assert _mapped(column, mapping).tolist() == want.tolist()


def test_golden_records_of_arrow_identity_ids_equal_the_object_path():
    """Identity ids as pandas' Arrow text are factorized as they are: the same golden
    records as the object ids give."""
    records = pd.DataFrame(
        {
            schema.SOURCE: ["police", "health", "police", "health"],
            schema.RECORD_ID: ["1", "2", "3", "4"],
            schema.NAME + "_clean": ["王伟", "王伟", None, "李娜"],
            schema.NAME: [" 王伟", "王伟 ", None, "李娜"],
            schema.BIRTH_DATE_STD: ["1990-01-01", "1990-01-02", None, "1985-05-05"],
        }
    )
    ids = np.array(["B", "B", "A", "C"], dtype=object)
    want = merge_records(records, pd.Series(ids, dtype=object))
    got = merge_records(records, pd.Series(ids, dtype="str"))
    pd.testing.assert_frame_equal(got, want)
    assert list(want["identity_id"]) == ["B", "A", "C"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, 7]), max_size=60))
def test_group_counts_by_hashing_equal_the_sorted_counts(keys):
    from linkage.merge import _group_counts

    keys = np.array(keys, dtype=np.int64)
    if not len(keys):
        return
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    assert (_group_counts(keys) == counts[inverse]).all()


@pytest.mark.parametrize("worker_dies", [False, True])
def test_golden_fields_built_by_a_worker_equal_one_process(worker_dies, tmp_path):
    records = _records()
    identities = pd.Series(["A", "A", "A", "B", "B", "B"])
    settings = GoldenSettings(source_priority=["police", "civil_affairs", "health"])
    expected = merge_records(records, identities, settings)
    path = tmp_path / "records.parquet"
    records.to_parquet(path, index=False)
    text = {c for c in records.columns if records[c].dtype == object}
    away = {schema.NAME, schema.ID_NUMBER, schema.BIRTH_DATE}
    worker = _Worker()
    if worker_dies:
        worker.start()
        worker.proc.kill()  # its fields are built here from the file
        worker.proc.wait()
    here = records.drop(columns=[NAME_CLEAN, schema.ID_STD, schema.BIRTH_DATE_STD])
    got = merge_records(
        here, identities, settings, share=WorkerShare(worker, str(path), text, away)
    )
    assert worker.proc is None  # closed
    pd.testing.assert_frame_equal(got, expected)


def test_worker_fields_split_the_cost():
    settings = GoldenSettings()
    columns = [rule.column for rule in settings.fields.values()] + [schema.NAME]
    away = worker_fields(settings, columns)
    assert away and away < set(settings.fields)
    assert worker_fields(settings, [schema.NAME]) == set()  # no field column: nothing


@pytest.mark.parametrize("source_codes", [False, True])
@pytest.mark.parametrize("with_worker", [False, True])
def test_spilled_golden_table_equals_the_held_one(
    source_codes, with_worker, tmp_path, monkeypatch
):
    """``merge_records(spill=)``: the golden table written a field at a time as Parquet
    parts reads back (whole, or a range of rows at a time) as the table held in memory:
    same columns in the same order, dtypes (categorical sources with every category) and
    values, the worker's fields included."""
    import linkage.merge as merge
    from linkage.merge import GoldenParts

    records = pd.concat([_records()] * 3, ignore_index=True)
    records[schema.RECORD_ID] = [f"r{i}" for i in range(len(records))]
    records[schema.SOURCE] = records[schema.SOURCE].astype("str")
    records[schema.RECORD_ID] = records[schema.RECORD_ID].astype("str")
    identities = pd.Series(list("ABCDEFGHI") * 2, dtype="str")
    # the second row group of four identities below holds no hukou address
    records.loc[identities.isin(list("EFGH")).to_numpy(), schema.HUKOU_ADDRESS] = None
    settings = GoldenSettings(source_priority=["police", "civil_affairs", "health"])
    held = merge_records(records, identities, settings, source_codes=source_codes)
    share = None
    if with_worker:
        path = tmp_path / "records.parquet"
        records.to_parquet(path, index=False)
        text = {c for c in records.columns if records[c].dtype != bool}
        share = WorkerShare(_Worker(), str(path), text, {schema.NAME, schema.BIRTH_DATE})
    reads = []
    real_read = merge._SpilledField.read
    monkeypatch.setattr(
        merge._SpilledField, "read", lambda self: reads.append(self) or real_read(self)
    )
    parts = merge_records(
        records, identities, settings, source_codes=source_codes, share=share,
        spill=tmp_path / "golden",
    )  # fmt: skip
    assert isinstance(parts, GoldenParts)
    # the worker's fields came as files, read back and removed when put in the table
    arrow_text = getattr(merge._TEXT_DTYPE, "storage", None) == "pyarrow"
    assert len(reads) == (2 if with_worker and arrow_text else 0)
    assert not list((tmp_path / "golden").glob("worker-*"))
    assert len(parts) == len(held) == 9 and parts.columns == list(held.columns)
    pd.testing.assert_frame_equal(parts.to_pandas(), held)
    # row groups of 4 identities: the last holds 1, and one holds no hukou address (all
    # null there); joined they are the table
    monkeypatch.setattr(merge, "GOLDEN_ROWS_AT_ONCE", 4)
    small = merge_records(
        records, identities, settings, source_codes=source_codes, spill=tmp_path / "small"
    )
    frames = list(small.frames())
    assert [len(f) for f in frames] == [4, 4, 1]
    assert frames[1]["hukou_address"].isna().all()
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), held)


def test_golden_parts_refuse_parts_of_other_lengths(tmp_path):
    from linkage.merge import GoldenParts

    parts = GoldenParts(tmp_path)
    parts.add(pd.DataFrame({"a": [1, 2]}), "a")
    with pytest.raises(ValueError, match="3 rows, expected 2"):
        parts.add(pd.DataFrame({"b": [1, 2, 3]}), "b")
    with pytest.raises(ValueError, match="not the parts'"):
        parts.order(["a", "b"])


def test_golden_csv_reads_back_as_the_table_written(tmp_path):
    """``read_golden_csv`` (a written run's ``LinkResult.golden``) gives back the table
    ``write_csv`` wrote: a lone carriage return, a comma, a quote, a line end and a formula
    inside values, categorical sources, counts; and an empty table keeps its dtypes."""
    from linkage.io import write_csv
    from linkage.linker import read_golden_csv

    records = _records()
    records[schema.HUKOU_ADDRESS] = ["北京\r朝阳", "湖南,长沙", '四川"成都', "=1+1", "a\nb", None]
    identities = pd.Series(["A", "B", "C", "D", "E", "E"])  # each value shown
    for table in (
        merge_records(records, identities, source_codes=True),
        merge_records(records.iloc[:0], identities.iloc[:0], source_codes=True),
    ):
        path = write_csv(table, tmp_path / "golden_records.csv")
        back = read_golden_csv(path, table.dtypes.to_dict())
        pd.testing.assert_frame_equal(back, table)
        assert not len(table) or "北京\r朝阳" in set(back[schema.HUKOU_ADDRESS])


def test_spilled_golden_parts_are_readable_by_their_owner_only(tmp_path):
    """The parts hold names, IDs and addresses: a folder of mode 0700 and files of 0600
    whatever the umask, as the checkpoint folder and the outputs are."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        parts = merge_records(_records(), pd.Series(list("AABBCC")), spill=tmp_path / "g")
    finally:
        os.umask(old)
    assert stat.S_IMODE(parts.folder.stat().st_mode) == 0o700
    assert parts.files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p, _ in parts.files)


_CODED_TEXT = st.one_of(
    st.none(),
    st.sampled_from(["张伟", " 张伟 ", "张伟\u3000", "章伟", "不详", "无", "", " ", "李娜", "\t李娜"]),
    st.text(alphabet="张李王 \u3000\t伟娜-0", max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_CODED_TEXT, _CODED_TEXT, st.sampled_from([True, False, None])),
             min_size=1, max_size=30),
    st.data(),
    st.sampled_from(["most_frequent", "valid_id", "most_recent", "source_priority"]),
)  # fmt: skip
def test_golden_field_from_coded_columns_equals_the_object_path(rows, data, rule_name):
    """A field built from its columns read as Parquet dictionaries (codes into Arrow text,
    the shown values stripped in pyarrow) equals the field built from object columns:
    column, chosen records, identities and conflicts; fillers, blank and padded shown
    values, nulls on either side and the ID-validity mask included."""
    import tempfile
    from pathlib import Path

    from linkage.config import FieldRule
    from linkage.merge import (
        _coded_inputs,
        _field_inputs,
        _golden_field,
        _golden_field_coded,
        _Ranks,
    )
    from linkage.tables import TEXT_DTYPE, read_text_columns

    n = len(rows)
    value = "id_std" if rule_name == "valid_id" else NAME_CLEAN
    records = pd.DataFrame(
        {
            value: pd.Series([v.strip() if v else v for v, _, _ in rows], dtype=object),
            schema.NAME: pd.Series([r for _, r, _ in rows], dtype=object),
            schema.ID_VALID: pd.Series([f for _, _, f in rows], dtype=object),
        }
    )
    rule = FieldRule(column=value, rule=rule_name, raw=schema.NAME)
    n_ident = data.draw(st.integers(1, n))
    ranks = _Ranks(
        np.array(data.draw(st.lists(st.integers(0, n_ident - 1), min_size=n, max_size=n)),
                 dtype=np.int32),
        n_ident,
        np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int32),
        np.array(data.draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)), dtype=np.int32),
        np.arange(n, dtype=np.int32),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "records.parquet"
        records.to_parquet(path, index=False)
        text = {value, schema.NAME}
        coded = _coded_inputs(path, text, rule)
        if getattr(TEXT_DTYPE, "storage", None) != "pyarrow":
            assert coded is None  # pandas 2 holds text as objects: the object path
            return
        if coded is None:  # a column of nulls only is not text in the file: objects then
            assert records[value].isna().all() or records[schema.NAME].isna().all()
            return
        got = _golden_field_coded("id_number", rule, *coded, ranks)
        found: dict = {}
        frame = read_text_columns(path, [value, schema.NAME, schema.ID_VALID], text, found)
    want = _golden_field("id_number", rule, *_field_inputs(frame, rule), ranks, found.get(value))
    table = pd.DataFrame({"x": np.zeros(n_ident)})
    table["got"], table["want"] = got[0], want[0]
    pd.testing.assert_series_equal(table["got"], table["want"], check_names=False)
    for a, b in zip(got[1:3], want[1:3], strict=True):
        assert np.array_equal(a, b)
    assert (got[3] is None) == (want[3] is None)
    if want[3] is not None:
        assert list(got[3]) == list(want[3])


def test_golden_records_read_as_codes_equal_the_held_table(tmp_path):
    """merge_records reading each field's columns from the records' Parquet file (a
    reader with ``file``, as a batch run's checkpoint) builds them from codes into Arrow
    text, and the table equals the one built from the records held."""
    from linkage.tables import TEXT_DTYPE, read_text_columns

    records = pd.concat([_records()] * 4, ignore_index=True)
    records[schema.RECORD_ID] = [f"r{i}" for i in range(len(records))]
    records[schema.NAME] = [" 张伟", "章伟 ", None, "李娜", "不详", "\u3000李娜"] * 4
    identities = pd.Series(list("ABCDEFGH") * 3)
    settings = GoldenSettings(source_priority=["police", "civil_affairs", "health"])
    held = merge_records(records, identities, settings)
    path = tmp_path / "records.parquet"
    records.to_parquet(path, index=False)
    text = {c for c in records.columns if c != schema.ID_VALID}
    calls = []

    class Reader:
        fills_factorized = True

        def file(self):
            calls.append("file")
            return path, text

        def __call__(self, columns, factorized=None):
            return read_text_columns(path, columns, text, factorized=factorized)

    keys = records[[schema.SOURCE, schema.RECORD_ID, schema.REGISTERED_AT_STD]]
    got = merge_records(keys, identities, settings, read=Reader())
    if getattr(TEXT_DTYPE, "storage", None) == "pyarrow":
        assert len(calls) == len(settings.fields)  # every field read as codes
    pd.testing.assert_frame_equal(got, held)
