"""Each faster path of the standardize stage equals the path it replaced, on generated values.

The stage's output must not change with its speed: every shortcut here (cpca's parse reused
per administrative prefix, frames of distinct values without pandas' text inference, the
filler check's plain-text path, the ID birth-year test per distinct date, t2s of unchanged
names, the syllable table) is compared with the computation it replaced, kept in this file.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import cpca
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.standardize import _fillers, address, idnumber
from linkage.standardize._distinct import object_columns, typed_frame
from linkage.tables import text_columns
from linkage.zh import script, syllables

# administrative names as written (全称) and as clerks shorten them, a few shared by several
# cities (朝阳区, 鼓楼区), with the pieces a detail is made of
_NAMES = sorted({info.name for info in cpca.ad_2_addr_dict.values()})
_PLACES = st.sampled_from(
    [
        *_NAMES[::37],
        "朝阳区",
        "鼓楼区",
        "朝阳",
        "北京",
        "北京市",
        "吉林",
        "吉林市",
        "中山",
        "五大连池市",
    ]
)
_PIECES = st.one_of(
    _PLACES,
    st.sampled_from(["路", "街道", "镇", "村", "号", "栋", "室", "三单元", "朝阳路", "中山大道"]),
    st.text(alphabet="0123456789一二三十号-‐ 　臺灣區縣鎮乾", min_size=1, max_size=4),
    st.sampled_from(["不详", "无", "-", "", "𠮷", "䶮"]),
)
# at least one text: cpca.transform itself fails on an empty list (_run_cpca never passes one)
_ADDRESSES = st.lists(st.lists(_PIECES, max_size=6).map("".join), min_size=1, max_size=40)


def _old_is_filler(value: object) -> bool:
    """is_filler_text before its plain-text path."""
    if not isinstance(value, str) or not value.strip():
        return False
    text = unicodedata.normalize("NFKC", value).strip().lower()
    bare = _fillers._PUNCT_RE.sub("", text)
    return not bare or bare in _fillers.FILLER_TEXTS


@settings(max_examples=150)
@given(_ADDRESSES, st.sampled_from([1, 3, 8192]))
def test_cpca_prefix_reuse_equals_cpca(texts, chunk):
    # chunks of 1 and 3 make later texts find the prefixes earlier ones settled
    old = address._CPCA_CHUNK
    address._CPCA_CHUNK = chunk
    try:
        # repeated prefixes with other tails: the reused parse must keep each text's own tail
        texts = texts + [t + "路8号" for t in texts] + [t[:-1] for t in texts if t]
        got = address._cpca_transform(texts)
    finally:
        address._CPCA_CHUNK = old
    expected = cpca.transform(texts, pos_sensitive=True)
    pd.testing.assert_frame_equal(got, expected)


def test_cpca_prefix_reuse_equals_cpca_on_shortened_names():
    # 朝阳 then 朝阳区 / 朝阳路: the county word cpca accepts depends on the next match
    texts = [
        "北京朝阳区建国路1号",
        "北京朝阳建国路1号",
        "北京朝阳路1号",
        "北京朝阳区",
        "北京朝阳",
        "吉林省吉林市船营区",
        "吉林市船营区",
        "朝阳区",
        "朝阳区建国路",
        "黑河市五大连池市",
        "五大连池市青山",
        "广东省中山市中山三路",
        "中山三路",
        "",
        "不详",
    ] * 3
    old = address._CPCA_CHUNK
    address._CPCA_CHUNK = 2
    try:
        got = address._cpca_transform(texts)
    finally:
        address._CPCA_CHUNK = old
    pd.testing.assert_frame_equal(got, cpca.transform(texts, pos_sensitive=True))


def test_reach_is_the_longest_word_with_that_start():
    words = list(cpca.matcher.ac.keys())
    for word in ("朝阳", "朝阳区", "北京", "吉林", words[0], words[-1]):
        assert address._reach(word) == max(len(w) for w in words if w.startswith(word))


_TEXT = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.text(alphabet="张王李伟芳·•臺灣乾隆aBz09 -（）？?*不详无", max_size=8),
    st.sampled_from(sorted(_fillers.FILLER_TEXTS)),
)


@settings(max_examples=200)
@given(st.lists(_TEXT, max_size=30), st.lists(st.booleans(), max_size=30))
def test_typed_frame_equals_inferred_frame_after_text_columns(values, flags):
    # map_distinct reads every frame through text_columns: with and without pandas' str
    # inference the result is the same object column of str / None
    column = np.empty(len(values), dtype=object)
    column[:] = values
    columns = {
        "a": column,
        "b": np.array(flags[: len(values)] + [False] * (len(values) - len(flags)), dtype=bool),
    }
    got = text_columns(typed_frame(columns))
    expected = text_columns(pd.DataFrame(columns))
    pd.testing.assert_frame_equal(got, expected)
    assert got["a"].dtype == object
    # rows as _parse_rows gives them: None, never NaN, for a missing value
    rows = [(None if v != v else v, b) for v, b in zip(column, columns["b"], strict=True)]
    pd.testing.assert_frame_equal(
        text_columns(object_columns(rows, ["a", "b"])),
        text_columns(pd.DataFrame(rows, columns=["a", "b"]).astype({"b": object})),
    )


@settings(max_examples=400)
@given(
    st.one_of(
        _TEXT,
        st.text(max_size=10),
        st.text(alphabet="ＡＢ１２ﬁ⑴⒩⒜ Nn/Aa.-_0一丁鿿𠀀〇", max_size=8),
        st.integers(),
    )
)
def test_filler_fast_path_equals_full_normalization(value):
    assert _fillers.is_filler_text(value) == _old_is_filler(value)


def test_plain_characters_have_no_decomposition_space_or_punctuation():
    # the fast path's premise, over every character it admits
    for ch in [*map(chr, range(0x4E00, 0xA000)), *"0123456789", *map(chr, range(65, 91))]:
        assert unicodedata.normalize("NFKC", ch) == ch
        assert not ch.isspace() and not _fillers._PUNCT_RE.fullmatch(ch)


_DATES = st.one_of(
    st.none(),
    st.dates().map(lambda d: d.isoformat()),
    st.sampled_from(["", "19x5-01-01", "abcd", "1e3-01-01", "0001-01-01", " 198-01-01"]),
)


@settings(max_examples=150)
@given(st.lists(st.tuples(_DATES, _DATES), max_size=40))
def test_not_own_ids_per_distinct_equals_per_row(pairs):
    birth = pd.Series([a for a, _ in pairs], dtype=object)
    ids = pd.Series([b for _, b in pairs], dtype=object)

    def year(values: pd.Series) -> np.ndarray:
        y = pd.to_numeric(values.astype("string").str.slice(0, 4), errors="coerce")
        return y.fillna(-1).to_numpy(np.int64)

    def month_day(values: pd.Series) -> np.ndarray:
        return np.array(
            [
                int(v[5:7] + v[8:10])
                if isinstance(v, str) and len(v) >= 10 and (v[5:7] + v[8:10]).isdigit()
                else -1
                for v in values
            ],
            dtype=np.int64,
        )

    expected = idnumber.years_apart(year(birth), year(ids), month_day(birth), month_day(ids))
    np.testing.assert_array_equal(idnumber.not_own_ids(birth, ids), expected)


def _old_t2s_batch(texts: list[str]) -> list[str]:
    """t2s_batch before it skipped unchanged texts."""
    if not texts:
        return []
    joined = "\n".join(texts)
    converted = script._T2S.convert(joined.translate(script._PROTECT)).translate(script._UNPROTECT)
    converted = converted.translate(script._FOLD_MAP)
    if converted == joined:
        return texts
    out = converted.split("\n")
    for i, (text, after) in enumerate(zip(texts, out, strict=True)):
        before = text
        for _ in range(4):
            if after == before:
                break
            before, after = after, script.t2s(after)
        out[i] = script._keep_bmp(text, after)
    return out


@settings(max_examples=200)
@given(st.lists(st.text(alphabet="張王李偉芳薴霣乾隆后後髮发𠮷abc ·", max_size=6), max_size=20))
def test_t2s_batch_equals_the_per_text_loop(texts):
    assert script.t2s_batch(texts) == _old_t2s_batch(texts)


def test_syllable_counts_equal_one_conversion_per_character():
    from pypinyin.contrib.tone_convert import to_normal
    from pypinyin.pinyin_dict import pinyin_dict

    expected: Counter = Counter()
    for cp, readings in pinyin_dict.items():
        try:
            chr(cp).encode("gb2312")
            weight = 1
        except UnicodeEncodeError:
            weight = 0
        for s in {to_normal(r) for r in readings.split(",")}:
            if s.isascii() and any(c in "aeiouv" for c in s):
                expected[s] += weight
    assert syllables._syllable_counts() == expected


@pytest.mark.parametrize("field", ["hukou_address", "current_address"])
def test_standardize_addresses_unchanged_by_prefix_reuse(field, monkeypatch):
    texts = [
        "北京市朝阳区建国路1号",
        "北京市朝阳区建国路2号",
        "北京朝阳建国路1号",
        "朝阳区八里庄",
        "广东省中山市中山三路8号",
        "臺灣省台北市",
        "不详",
        None,
        "北京市朝阳区建国路1号",
    ]
    values = pd.Series(texts * 3, dtype=object)
    got = address.standardize_addresses(values, field)
    monkeypatch.setattr(address, "_cpca_transform", lambda t: cpca.transform(t, pos_sensitive=True))
    pd.testing.assert_frame_equal(got, address.standardize_addresses(values, field))
