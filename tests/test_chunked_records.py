"""Records standardized a chunk at a time (``io.read_records_chunks``) and written to one
Parquet file a chunk at a time (``io.write_parquet_chunks``): the same table, the same run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from linkage import Linker, schema
from linkage.config import RunSettings, load_config
from linkage.io import read_records, read_records_chunks, write_parquet, write_parquet_chunks
from linkage.pipeline import run_columns
from linkage.synth import generate
from linkage.tables import read_text_columns

KEY = b"chunked-records-test-key-0123"


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(900, seed=23, output=out)
    return out


@pytest.fixture(scope="module")
def config(registries):
    return load_config(registries / "run.yaml")


@pytest.fixture(scope="module")
def records(config):
    return read_records(config)


def _with_run(config, **update):
    return config.model_copy(update={"run": config.run.model_copy(update=update)})


@pytest.mark.parametrize("size", [97, 500])
def test_chunks_joined_are_the_records_table(config, records, size):
    timings: dict[str, float] = {}
    chunks = list(read_records_chunks(config, size, timings=timings))
    n = len(records)
    assert [len(c) for c in chunks] == [min(size, n - s) for s in range(0, n, size)]
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, records)
    # rid continues from chunk to chunk: 0..n-1 over the joined table
    assert joined[schema.ROW].tolist() == list(range(n))
    # each standardizer group's seconds summed over the chunks, with the reading's
    assert "read" in timings and len(timings) > 1 and all(v >= 0 for v in timings.values())


def test_no_chunk_size_or_a_larger_one_gives_one_chunk(config, records):
    for size in (None, len(records), 10 * len(records)):
        chunks = list(read_records_chunks(config, size))
        assert len(chunks) == 1
        pd.testing.assert_frame_equal(chunks[0], records)


def test_chunks_keep_only_the_columns_asked_for(config, records, monkeypatch):
    import linkage.io

    keep = run_columns(config)
    stacked: list[list[str]] = []
    real = linkage.io._stacked_arrow
    monkeypatch.setattr(
        linkage.io, "_stacked_arrow",
        lambda parts, stack=None: stacked.extend(p.column_names for p in parts)
        or real(parts, stack),
    )  # fmt: skip
    chunks = list(read_records_chunks(config, 250, keep=keep))
    joined = pd.concat(chunks, ignore_index=True)
    expected = records[[c for c in records.columns if c in keep]]
    pd.testing.assert_frame_equal(joined, expected)
    # unmapped pass-through columns no stage reads are dropped as each source is read,
    # not held as raw rows until their chunk is standardized
    passed = [c for c in records.columns if c.startswith(schema.RAW_PREFIX)]
    assert passed and not set(passed) & keep
    assert stacked and not {c for names in stacked for c in names} & set(passed)


def test_progress_counts_every_value_once_over_the_chunks(config, records):
    seen: dict[str, int] = {}
    totals: dict[str, int | None] = {}
    current = []

    class Hook:
        def stage(self, name, total=None, unit=""):
            current[:] = [name]
            totals[name] = total
            seen.setdefault(name, 0)

        def advance(self, n=1):
            seen[current[0]] += n

    list(read_records_chunks(config, 128, progress=Hook()))
    assert totals["standardizing"] == seen["standardizing"] > len(records)


def test_written_chunks_read_back_as_the_table(records, tmp_path):
    path = tmp_path / "records.parquet"
    parts = [records.iloc[s : s + 300] for s in range(0, len(records), 300)]
    got, rows = write_parquet_chunks(iter(parts), path)
    assert got == path and rows == len(records)
    assert pq.ParquetFile(path).metadata.num_row_groups >= len(parts)
    # the table write_parquet writes in one go, in the same types but for a column all
    # null in the first chunk (text here, null there), read back as the run reads it
    whole = write_parquet(records, tmp_path / "whole.parquet")
    mine, theirs = pq.read_schema(path), pq.read_schema(whole)
    assert mine.names == theirs.names
    for a, b in zip(mine, theirs, strict=True):
        assert a.type == b.type or (a.type == pa.string() and b.type == pa.null())
    text = {f.name for f in theirs if f.type in (pa.string(), pa.null())}
    pd.testing.assert_frame_equal(
        read_text_columns(path, mine.names, text), read_text_columns(whole, mine.names, text)
    )
    pd.testing.assert_frame_equal(read_text_columns(path, mine.names, text), records)


def test_a_text_column_empty_in_the_first_chunk_is_text(tmp_path):
    first = pd.DataFrame({"rid": [0, 1], "t": [None, None], "b": pd.array([True, None], "boolean")})
    second = pd.DataFrame({"rid": [2], "t": ["王伟"], "b": pd.array([False], "boolean")})
    path = tmp_path / "x.parquet"
    write_parquet_chunks([first, second], path)
    assert pq.read_schema(path).field("t").type == pa.string()
    back = read_text_columns(path, ["rid", "t", "b"], {"t"})
    assert back["t"].tolist() == [None, None, "王伟"] and back["rid"].tolist() == [0, 1, 2]
    assert back["b"].dtype == "boolean" and back["b"].isna().tolist() == [False, True, False]


def test_chunks_of_other_columns_or_none_write_no_file(tmp_path):
    path = tmp_path / "x.parquet"
    one = pd.DataFrame({"a": ["x"]})
    with pytest.raises(ValueError, match="columns"):
        write_parquet_chunks([one, pd.DataFrame({"b": ["y"]})], path)
    with pytest.raises(ValueError, match="no chunk"):
        write_parquet_chunks([], path)
    assert list(tmp_path.iterdir()) == []  # no file and no temporary left


def test_chunk_size_setting(config):
    assert RunSettings().records_per_chunk() is None  # all at once
    assert RunSettings(chunk_records=5000).records_per_chunk() == 5000
    assert RunSettings(memory_limit="8GB").records_per_chunk() == 2_000_000  # 8e9 / 4 / 1,000
    assert RunSettings(memory_limit="64MB").records_per_chunk() == 100_000
    assert RunSettings(memory_limit="1TB").records_per_chunk() == 250_000_000
    assert RunSettings(memory_limit="8GB", chunk_records=5000).records_per_chunk() == 5000
    with pytest.raises(ValueError):
        RunSettings(chunk_records=10)


def test_a_run_standardized_in_chunks_writes_the_same_files(config, records, tmp_path):
    # linkage run's records checkpoint made 1,000 records at a time, against one chunk
    assert len(records) > 1000
    Linker(config, id_key=KEY).write(tmp_path / "whole")
    Linker(_with_run(config, chunk_records=1000), id_key=KEY).write(tmp_path / "chunked")
    for name in ("identities.csv", "golden_records.csv", "cluster_sizes.csv"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "chunked" / name).read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "whole" / "pairs.parquet"),
        pd.read_parquet(tmp_path / "chunked" / "pairs.parquet"),
    )


def test_an_ambiguous_district_is_read_by_the_whole_batch_not_its_chunk(write_yaml, tmp_path):
    # 南山区 without its city is a district of 深圳 and of 鹤岗: a registry whose other
    # current addresses lie in 深圳 reads it there. The record is alone in its chunk (the
    # last of three), whose own addresses would leave it ambiguous.
    rows = [f"P{i:04d},张{i},广东省深圳市福田区华强北路{i}号" for i in range(2400)]
    rows.append("Q001,李四,南山区科技园南区2栋")  # sorted last
    (tmp_path / "police.csv").write_text(
        "编号,姓名,现住址\n" + "\n".join(rows) + "\n", encoding="utf-8"
    )
    columns = {"姓名": "name", "现住址": "current_address"}
    path = write_yaml(
        {"sources": {"police": {"path": "police.csv", "record_id": "编号", "columns": columns}}}
    )
    config = load_config(path)
    whole = read_records(config)
    chunks = list(read_records_chunks(config, 1200))
    assert [len(c) for c in chunks] == [1200, 1200, 1]
    last = chunks[-1].iloc[0]
    assert last[schema.RECORD_ID] == "Q001"
    assert last["current_address_city"] == "深圳市" and last["current_address_adcode"] == "440305"
    assert "current_address_district_from_batch" in last[schema.QUALITY_FLAGS]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_sources_wait_as_arrow_and_a_source_arrow_cannot_hold_stays_python(
    config, records, monkeypatch
):
    import linkage.io as io

    frame = pd.DataFrame({"a": ["张伟", None], "b": ["x", "y"]}, dtype=object)
    table = io._arrow_source(frame)
    assert isinstance(table, pa.Table) and table.column("a").to_pylist() == ["张伟", None]
    pd.testing.assert_frame_equal(io._as_frame(table), frame)
    # a lone surrogate has no UTF-8 form: the frame is kept, and the stack falls back
    odd = pd.DataFrame({"a": ["\ud800"], "b": ["z"]}, dtype=object)
    assert io._arrow_source(odd) is odd
    assert io._stacked_arrow([table, odd]) is None
    # a run whose first source stays Python objects gives the same chunks all the same
    seen = []
    to_arrow = io._read_source_arrow

    def first_kept(cfg, rejected):
        seen.append(cfg)
        return io.read_source(cfg, rejected=rejected) if len(seen) == 1 else to_arrow(cfg, rejected)

    monkeypatch.setattr(io, "_read_source_arrow", first_kept)
    joined = pd.concat(list(read_records_chunks(config, 400)), ignore_index=True)
    assert len(seen) == len(config.sources) > 1
    pd.testing.assert_frame_equal(joined, records)


def test_a_killed_run_s_partial_records_file_is_removed_when_run_again(config, tmp_path):
    # a run killed while its child wrote the records checkpoint leaves atomic_write's
    # temporary file; the next run (resumed or not) removes it before writing its own
    from linkage.checkpoint import Checkpoints
    from linkage.linker import _standardize_and_save

    checkpoints = Checkpoints.open(tmp_path / "out", config, resume=False)
    stale = checkpoints.path("records") / ".records.parquet.abc123.tmp"
    stale.write_bytes(b"PAR1 half a file")
    small = _with_run(config, chunk_records=1000)
    _standardize_and_save(small, checkpoints, run_columns(small))
    assert not stale.exists()
    assert checkpoints.done("records")
    assert [p.name for p in checkpoints.path("records").iterdir()] == ["records.parquet"]


def _ids_ending_000(count: int, start: int) -> list[str]:
    """Valid 18-digit IDs whose last three characters are 000 (check digit 0)."""
    import datetime

    from linkage.standardize.idnumber import id_check_char

    out, serial = [], start
    while len(out) < count:
        day = datetime.date(1980, 1, 1) + datetime.timedelta(days=serial // 10)
        body = f"440305{day:%Y%m%d}{serial % 10}00"
        serial += 1
        if id_check_char(body) == "0":
            out.append(body + "0")
    return out


def _valid_ids(count: int) -> list[str]:
    from linkage.standardize.idnumber import id_check_char

    out = []
    for i in range(count):
        body = f"110105{19700101 + i % 28:08d}{i // 28 % 999 + 1:03d}"  # no 00 tail
        check = id_check_char(body)
        out.append(body + check)
    return out


def test_an_excel_damaged_id_column_is_judged_by_the_whole_batch_not_its_chunk(
    write_yaml, tmp_path
):
    # source a: 1,000 records, 300 IDs ending in 000 (30%: alone, an Excel-damaged
    # column); source b: 2,400 ordinary IDs. Over the batch, 300 of 3,400 (9%) end in 000:
    # the column is not damaged, and those 300 IDs are kept, in one go as in chunks.
    tail = _ids_ending_000(300, 0)
    plain = _valid_ids(3100)
    a = [f"A{i:04d},张{i},{tail[i] if i < 300 else plain[i]}" for i in range(1000)]
    b = [f"B{i:04d},李{i},{plain[1000 + i % 2100]}" for i in range(2400)]
    for name, rows in (("a", a), ("b", b)):
        (tmp_path / f"{name}.csv").write_text(
            "编号,姓名,身份证号\n" + "\n".join(rows) + "\n", encoding="utf-8"
        )
    columns = {"姓名": "name", "身份证号": "id_number"}
    path = write_yaml(
        {
            "sources": {
                s: {"path": f"{s}.csv", "record_id": "编号", "columns": columns} for s in "ab"
            }
        }
    )
    config = load_config(path)
    whole = read_records(config)
    flags = whole[schema.QUALITY_FLAGS].str.contains("id_float_damaged")
    assert not flags.any() and whole[schema.ID_STD].notna().all()
    chunks = list(read_records_chunks(config, 1000))
    assert len(chunks[0]) == 1000 and (chunks[0][schema.SOURCE] == "a").all()
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)


def test_an_id_column_split_between_processes_is_judged_as_a_whole():
    # what the worker process's half and this process's half each get: the column's verdict
    from linkage.standardize.idnumber import column_verdict, standardize_id_numbers

    values = pd.Series(_ids_ending_000(300, 0) + _valid_ids(1500), dtype=object)
    verdict = column_verdict(list(values))
    assert verdict == (False, False)
    whole = standardize_id_numbers(values)
    first = standardize_id_numbers(values.iloc[:400])  # judged alone: 300 of 400 end in 000
    assert first[schema.ID_STD].isna().sum() == 300
    halves = pd.concat(
        [standardize_id_numbers(values.iloc[:400], verdict),
         standardize_id_numbers(values.iloc[400:], verdict)]
    )  # fmt: skip
    pd.testing.assert_frame_equal(halves, whole)
    assert whole[schema.ID_STD].notna().all()


def test_chunks_keeping_no_rid_get_none(config, records):
    chunks = list(read_records_chunks(config, 300, keep={"source", "record_id"}))
    assert all(list(c.columns) == ["source", "record_id"] for c in chunks)
    joined = pd.concat(chunks, ignore_index=True)
    pd.testing.assert_frame_equal(joined, records[["source", "record_id"]])


def test_a_same_as_hukou_current_address_keeps_object_columns():
    from linkage.standardize.combine import standardize

    raw = pd.DataFrame(
        {
            "source": ["s", "s"],
            "record_id": ["1", "2"],
            "hukou_address": ["广东省深圳市福田区华强北路1号", None],
            "current_address": ["同户籍地址", "广东省深圳市南山区科技园2栋"],
        },
        dtype=object,
    )
    out = standardize(raw)
    for column in [c for c in out.columns if c.startswith("current_address_")]:
        assert out[column].dtype == object, column
    assert out["current_address_city"].tolist() == ["深圳市", "深圳市"]


@pytest.mark.parametrize("size", [None, 400])
def test_compact_chunks_hold_codes_and_write_the_same_file(
    config, records, size, tmp_path, monkeypatch
):
    # ``compact`` holds few-valued text columns as Categoricals of the same values; written
    # with ``text_codes`` they give the file the object columns give, byte for byte
    import linkage.io
    import linkage.standardize.combine as combine

    monkeypatch.setattr(combine, "_COMPACT_MIN_ROWS", 80)
    monkeypatch.setattr(combine, "_COMPACT_PREFIX", 40)
    monkeypatch.setattr(combine, "COMPACT_MAX", 30)
    keep = run_columns(config)
    if size is None:
        # a batch in one go below COMPACT_MIN_RECORDS is not coded (its peak is not the run's)
        (whole,) = read_records_chunks(config, None, keep=keep, compact=True)
        assert not any(isinstance(t, pd.CategoricalDtype) for t in whole.dtypes)
        # but its raw columns stay as they were read, Arrow strings, and write the same file
        arrow = [c for c in whole if isinstance(whole[c].dtype, pd.ArrowDtype)]
        assert schema.RECORD_ID in arrow and schema.NAME in arrow and schema.SOURCE in arrow
        (held,) = read_records_chunks(config, None, keep=keep)
        assert not any(isinstance(t, pd.ArrowDtype) for t in held.dtypes)
        path_a, _ = write_parquet_chunks(iter([held]), tmp_path / "objects.parquet")
        path_b, _ = write_parquet_chunks(iter([whole]), tmp_path / "arrow.parquet", text_codes=True)
        assert path_a.read_bytes() == path_b.read_bytes()
        monkeypatch.setattr(linkage.io, "COMPACT_MIN_RECORDS", 100)
    plain = list(read_records_chunks(config, size, keep=keep))
    compact = list(read_records_chunks(config, size, keep=keep, compact=True))
    coded = [c for c in compact[0] if isinstance(compact[0][c].dtype, pd.CategoricalDtype)]
    # the sources, the genders (read by the ID checks, coded after them) and the flags
    for col in (schema.SOURCE, schema.GENDER_STD, schema.QUALITY_FLAGS):
        assert col in coded
    assert schema.RECORD_ID not in coded  # every value distinct: left as it is
    # the raw columns kept as they were read stay Arrow strings (the sources' few values
    # coded instead); their fields read them as objects
    arrow = [c for c in compact[0] if isinstance(compact[0][c].dtype, pd.ArrowDtype)]
    assert schema.RECORD_ID in arrow and schema.NAME in arrow
    assert all(c in (schema.RECORD_ID, *schema.CANONICAL_FIELDS) for c in arrow)
    for a, b in zip(plain, compact, strict=True):
        assert list(a.columns) == list(b.columns)
        # a chunk's own: a column may be coded in one chunk and not another
        coded = [c for c in b if isinstance(b[c].dtype, (pd.CategoricalDtype, pd.ArrowDtype))]
        for col in coded:
            values = pd.Series(np.asarray(b[col], dtype=object), dtype=object)
            pd.testing.assert_series_equal(
                values.where(values.notna(), None), a[col], check_names=False
            )
        assert all(a[c].equals(b[c]) for c in a.columns if c not in coded)
    path_a, rows = write_parquet_chunks(iter(plain), tmp_path / "plain.parquet")
    path_b, _ = write_parquet_chunks(iter(compact), tmp_path / "codes.parquet", text_codes=True)
    assert rows == len(records)
    assert path_a.read_bytes() == path_b.read_bytes()
    # without text_codes a Categorical is Arrow's dictionary, as write_parquet writes it
    path_c, _ = write_parquet_chunks(iter(compact[:1]), tmp_path / "dict.parquet")
    assert pa.types.is_dictionary(pq.read_schema(path_c).field(schema.SOURCE).type)


def test_a_column_of_codes_all_null_in_the_first_chunk_is_text(tmp_path):
    frames = [
        pd.DataFrame({"a": pd.Categorical([None, None], categories=pd.Index([], dtype=object)),
                      "b": ["x", "y"]}),
        pd.DataFrame({"a": pd.Categorical(["甲", None]), "b": ["z", None]}),
    ]  # fmt: skip
    path, _ = write_parquet_chunks(iter(frames), tmp_path / "t.parquet", text_codes=True)
    assert pq.read_schema(path).field("a").type == pa.string()
    assert pd.read_parquet(path)["a"].tolist()[2] == "甲"


def test_codes_beside_a_column_of_other_values_or_alone_write_the_same_file(tmp_path):
    # an object column holding numbers types the file from whole columns; every column
    # coded leaves none to type from: both give the file of the object columns
    text = pd.Series(["甲", None, "乙", "甲"] * 10, dtype=object)
    plain = pd.DataFrame({"n": pd.Series([1, 2, None, 3] * 10, dtype=object), "t": text})
    coded = plain.assign(t=pd.Categorical(text))
    a, _ = write_parquet_chunks(iter([plain, plain]), tmp_path / "a.parquet")
    b, _ = write_parquet_chunks(iter([coded, coded]), tmp_path / "b.parquet", text_codes=True)
    assert a.read_bytes() == b.read_bytes()
    alone = pd.DataFrame({"t": pd.Categorical(text)})
    c, _ = write_parquet_chunks(iter([plain[["t"]]]), tmp_path / "c.parquet")
    d, _ = write_parquet_chunks(iter([alone]), tmp_path / "d.parquet", text_codes=True)
    assert c.read_bytes() == d.read_bytes()


@pytest.mark.parametrize("batch", [7, 500_000])
def test_a_chunked_batch_parses_each_distinct_name_and_address_once(
    config, records, monkeypatch, batch
):
    import linkage.standardize._distinct as distinct
    from linkage.standardize import address, names

    monkeypatch.setattr(distinct, "_PARSE_BATCH", batch)
    parsed: list[str] = []
    parse_address = address._parse_distinct
    parse_names = names._names_columns

    def counted_address(values, field):
        parsed.extend(f"{field}:{v}" for v in values)
        return parse_address(values, field)

    def counted_names(values, field):
        parsed.extend(f"{field}:{v}" for v in values)
        return parse_names(values, field)

    monkeypatch.setattr(address, "_parse_distinct", counted_address)
    monkeypatch.setattr(names, "_names_columns", counted_names)
    joined = pd.concat(list(read_records_chunks(config, 97)), ignore_index=True)
    pd.testing.assert_frame_equal(joined, records)
    # every distinct name and address of the batch once, though most recur in several
    # chunks; former names (few) a chunk at a time
    once = (schema.NAME, schema.HUKOU_ADDRESS, schema.CURRENT_ADDRESS)
    got = [p for p in parsed if p.split(":")[0] in once]
    expected = {f"{field}:{v}" for field in once for v in records[field].dropna()}
    assert sorted(got) == sorted(expected)


def test_distinct_results_give_map_distinct_s_rows(monkeypatch):
    import linkage.standardize._distinct as distinct
    from linkage.standardize import names

    monkeypatch.setattr(distinct, "_PARSE_BATCH", 3)
    values = ["张伟", "欧阳娜娜", "阿依古丽·买买提", "李 娜", "王伟", "张伟", "Zhang Wei", "李娜"]
    dictionary = pa.array(sorted(set(values)), type=pa.string())
    func = names.distinct_parser(schema.NAME)
    results = distinct.DistinctResults.parse(dictionary, func)
    position = {v: i for i, v in enumerate(dictionary.to_pylist())}
    # two chunks, with nulls and values of both, in another order than the dictionary's
    for chunk in ([values[3], None, values[0], values[6], values[0]], [None, None], values):
        rows = np.array([-1 if v is None else position[v] for v in chunk], dtype=np.int32)
        index = pd.RangeIndex(10, 10 + len(chunk))
        given = results.use(rows, index)
        plain = pd.Series(chunk, index=index, dtype=object)
        assert given.tolist() == plain.tolist() and given.index.equals(index)
        pd.testing.assert_frame_equal(
            distinct.map_distinct(given, func), distinct.map_distinct(plain, func)
        )
    assert not distinct._given  # each taken by its call
    # held as Arrow text and int32 codes, the bool column as it came
    codes, uniques = results.text["name_pinyin"]
    assert codes.dtype == np.int32 and isinstance(uniques, pa.Array)
    assert results.other["name_is_minority"].dtype == bool


def test_values_given_results_are_not_sent_ahead_and_an_error_forgets_them():
    import linkage.standardize._distinct as distinct
    from linkage.standardize import phone

    func = phone.distinct_parser()
    dictionary = pa.array(["13800138000", "010-12345678"], type=pa.string())
    results = distinct.DistinctResults.parse(dictionary, func)
    given = results.use(np.array([1, 0, 1]), pd.RangeIndex(3))
    with distinct.worker_process():
        distinct.send_ahead(given, func)
        assert not distinct._ahead  # its results are here already: nothing for the worker
    distinct.drop_ahead()
    assert not distinct._given


def test_cities_of_a_batch_parsed_whole_are_those_counted_by_row(config, records):
    import linkage.standardize._distinct as distinct
    from linkage.standardize import address

    values = records[schema.CURRENT_ADDRESS]
    # an ambiguous district among them, and a province's own code (left out of the counts)
    values = pd.concat(
        [
            values,
            pd.Series(
                ["南山区科技园", "广东省", None, "北京市朝阳区建国路1号", "上海市浦东新区世纪大道2号"]
                + ["上海市浦东新区世纪大道3号", "南山区科技园"],
                dtype=object,
            ),
        ],
        ignore_index=True,
    )
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    dictionary = pa.array(list(uniques), type=pa.string())
    results = distinct.DistinctResults.parse(
        dictionary, address.distinct_parser(schema.CURRENT_ADDRESS)
    )
    got = address.parsed_address_cities(results, codes)
    want = address.current_address_cities(values)
    assert len(want) == 3
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)


def test_distinct_rows_of_another_length_are_refused(config, records):
    import linkage.standardize._distinct as distinct
    from linkage.standardize import address
    from linkage.standardize.combine import BatchFacts, standardize

    raw = records[[schema.CURRENT_ADDRESS]].head(5)
    dictionary = pa.array(raw[schema.CURRENT_ADDRESS].dropna().unique().tolist(), pa.string())
    results = distinct.DistinctResults.parse(
        dictionary, address.distinct_parser(schema.CURRENT_ADDRESS)
    )
    batch = BatchFacts(distinct={schema.CURRENT_ADDRESS: results})
    with pytest.raises(ValueError, match="current_address: 4 distinct rows given for 5 records"):
        standardize(raw, batch=batch, distinct_rows={schema.CURRENT_ADDRESS: np.zeros(4, int)})


def _odd_values(values):
    """A parser (one row per value, from that value alone) whose text is not all ``str``,
    and whose second column is bool in one batch and objects in another."""
    kinds = [np.str_, lambda v: v.encode(), lambda v: v + "\ud800", str]
    first = [kinds[int(v[1]) % 4](v) for v in values]
    # True, or None: a bool column for a batch of only "b" words, else objects
    second = [True if v.startswith("b") else None for v in values]
    return pd.DataFrame({"a": pd.Series(first, dtype=object), "b": second})


def test_distinct_results_hold_other_values_as_map_distinct_does(monkeypatch):
    import linkage.standardize._distinct as distinct

    monkeypatch.setattr(distinct, "_PARSE_BATCH", 2)
    words = ["b1", "b2", "c1", "b3", "c2", "c3", "b4"]
    results = distinct.DistinctResults.parse(pa.array(words, type=pa.string()), _odd_values)
    rows = np.array([6, -1, 0, 2, 5, 0, 3, 1, 4], dtype=np.int32)
    given = results.use(rows, pd.RangeIndex(len(rows)))
    plain = pd.Series(given.tolist(), dtype=object)
    got = distinct.map_distinct(given, _odd_values)
    want = distinct.map_distinct(plain, _odd_values)
    # the parser's own values back: bytes as bytes, np.str_ as np.str_, surrogates kept
    assert [type(v) for v in got["a"]] == [type(v) for v in want["a"]]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)


def test_results_of_another_function_are_not_taken(monkeypatch):
    import linkage.standardize._distinct as distinct
    from linkage.standardize import phone

    results = distinct.DistinctResults.parse(pa.array(["b1", "c1"], pa.string()), _odd_values)
    given = results.use(np.array([0, 1]), pd.RangeIndex(2))
    # the Series asked for with another parser: that parser's rows, and nothing left held
    got = distinct.map_distinct(given, phone.distinct_parser())
    pd.testing.assert_frame_equal(
        got, distinct.map_distinct(pd.Series(["b1", "c1"], dtype=object), phone.distinct_parser())
    )
    assert not distinct._given


def test_arrow_text_in_several_pieces_writes_the_file_of_its_objects(tmp_path):
    # a raw column as a source was read: Arrow strings in several pieces. Its dictionary
    # outgrows Parquet's page limit (1 MB), where pieces written one by one paged the
    # column otherwise: the same values in other bytes
    values = [f"广东省深圳市南山区科技园{i:07d}号" for i in range(80_000)]
    values[5] = None
    pieces = pa.chunked_array([pa.array(values[i : i + 7_000]) for i in range(0, 80_000, 7_000)])
    arrow = pd.DataFrame({"a": pd.Series(pd.arrays.ArrowExtensionArray(pieces))})
    objects = pd.DataFrame({"a": pd.Series(values, dtype=object)})
    assert arrow["a"].array._pa_array.num_chunks > 1
    path_a, _ = write_parquet_chunks(iter([objects]), tmp_path / "objects.parquet")
    path_b, _ = write_parquet_chunks(iter([arrow]), tmp_path / "arrow.parquet", text_codes=True)
    assert path_a.read_bytes() == path_b.read_bytes()
