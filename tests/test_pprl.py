"""Keyed Bloom-filter encodings: token design, Dice similarity, key separation, linkage accuracy."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import Linker, schema
from linkage.config import config_from_dict
from linkage.errors import InputError
from linkage.io import read_sources
from linkage.pprl import (
    CLK_PREFIX,
    SCORE,
    _bloom_base64,
    _Hasher,
    _id_base64,
    decode_clks,
    dice_similarity,
    encode_base64,
    encode_command,
    encode_records,
    id_tokens,
    link_encodings,
    name_tokens,
)
from linkage.standardize.combine import standardize
from linkage.synth import generate

KEY = b"shared-secret-of-police-and-health"
NAME_CLK = CLK_PREFIX + schema.NAME


def _records(names: list[str | None], births: list[str | None] | None = None) -> pd.DataFrame:
    raw = pd.DataFrame(
        {
            schema.SOURCE: "health",
            schema.RECORD_ID: [f"H{i}" for i in range(len(names))],
            schema.NAME: names,
            schema.BIRTH_DATE: births or [None] * len(names),
        }
    )
    return standardize(raw)


def _name_dice(a: str, b: str, key: bytes = KEY, key_b: bytes | None = None) -> float:
    left = encode_records(_records([a]), key, fields=[schema.NAME])
    right = encode_records(_records([b]), key_b or key, fields=[schema.NAME])
    return float(dice_similarity(decode_clks(left[NAME_CLK]), decode_clks(right[NAME_CLK]))[0])


def test_repeated_characters_are_not_collapsed():
    assert name_tokens("欧阳娜娜", "ou yang na na") != name_tokens("欧阳娜", "ou yang na")
    dice = _name_dice("欧阳娜娜", "欧阳娜")
    assert 0.5 < dice < 0.95


def test_homophones_score_high_and_different_names_low():
    assert _name_dice("张伟", "张伟") == 1.0
    homophone = _name_dice("张伟", "章伟")
    assert 0.6 < homophone < 1.0
    assert _name_dice("张伟", "李娜") < 0.3
    # the same sound in other characters stays apart from an exact match
    assert homophone < _name_dice("张伟", "張偉")  # traditional folds to the same name


def test_romanized_name_shares_pinyin_bigrams_in_either_order():
    assert _name_dice("张伟", "Wei Zhang") > 0.5
    assert _name_dice("Zhang Wei", "Wei Zhang") == 1.0


def test_different_keys_give_unlinkable_encodings():
    assert _name_dice("欧阳娜娜", "欧阳娜娜", KEY, b"another department key") < 0.5
    recs = _records(["王芳", "刘洋", "陈晨"], ["1990-01-02", "1985-03-07", "2001-12-31"])
    a = encode_records(recs, KEY)
    b = encode_records(recs, b"another department key")
    assert not set(a["blk_birth_date"]) & set(b["blk_birth_date"])
    assert link_encodings(a, b, 0.75).empty  # blocking keys differ too
    # force every pair as a candidate: share the blocking key column, keep the foreign CLKs
    b["blk_birth_date"] = a["blk_birth_date"]
    assert link_encodings(a, b, 0.75, block_keys=["birth_date"]).empty
    assert len(link_encodings(a, a, 0.75, block_keys=["birth_date"])) == 3


def test_missing_values_get_null_encodings_and_are_skipped():
    recs = _records(["王芳", None], [None, "1990-01-02"])
    out = encode_records(recs, KEY, fields=[schema.NAME, schema.BIRTH_DATE])
    assert out[NAME_CLK].isna().tolist() == [False, True]
    assert out[CLK_PREFIX + schema.BIRTH_DATE].isna().tolist() == [True, False]
    assert out["blk_birth_date"].isna().tolist() == [True, False]


def test_encoding_is_deterministic_and_combined_mode_has_one_clk():
    recs = _records(["买买提·艾力", "张伟"], ["1980-05-06", "1990-01-02"])
    assert encode_records(recs, KEY).equals(encode_records(recs, KEY))
    combined = encode_records(recs, KEY, combined=True, bits=512)
    assert "clk" in combined.columns and NAME_CLK not in combined.columns
    assert decode_clks(combined["clk"]).shape == (2, 64)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=20),
    st.lists(st.binary(min_size=16, max_size=16), min_size=20, max_size=20),
)
def test_dice_matches_brute_force_on_bits(left, right):
    a = np.frombuffer(b"".join(left), dtype=np.uint8).reshape(-1, 16)
    b = np.frombuffer(b"".join(right[: len(left)]), dtype=np.uint8).reshape(-1, 16)
    got = dice_similarity(a, b)
    for row, value in enumerate(got):
        x = set(np.flatnonzero(np.unpackbits(a[row])))
        y = set(np.flatnonzero(np.unpackbits(b[row])))
        if not x and not y:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(2 * len(x & y) / (len(x) + len(y)))
    assert np.allclose(got, dice_similarity(b, a), equal_nan=True)


def test_one_to_one_keeps_each_record_once():
    recs = _records(["张伟", "张伟", "章伟"], ["1990-01-02"] * 3)
    enc = encode_records(recs, KEY)
    pairs = link_encodings(enc, enc, 0.5, one_to_one=True)
    assert not pairs[schema.RECORD_ID + "_l"].duplicated().any()
    assert not pairs[schema.RECORD_ID + "_r"].duplicated().any()
    assert pairs[SCORE].is_monotonic_decreasing


def _cross_pairs(frame: pd.DataFrame, key: str) -> set[tuple[str, str]]:
    police = frame[frame[schema.SOURCE] == "police"][[schema.RECORD_ID, key]]
    health = frame[frame[schema.SOURCE] == "health"][[schema.RECORD_ID, key]]
    both = police.merge(health, on=key, suffixes=("_p", "_h"))
    return set(zip(both[schema.RECORD_ID + "_p"], both[schema.RECORD_ID + "_h"], strict=True))


def _f1(predicted: set, truth: set) -> float:
    hits = len(predicted & truth)
    precision, recall = hits / max(len(predicted), 1), hits / max(len(truth), 1)
    return 2 * precision * recall / max(precision + recall, 1e-12)


def test_encoded_linkage_close_to_plaintext(tmp_path):
    generate(1500, seed=7, output=tmp_path)
    data = yaml.safe_load((tmp_path / "run.yaml").read_text(encoding="utf-8"))
    del data["sources"]["civil_affairs"]
    config = config_from_dict(data, path=tmp_path / "run.yaml")
    truth = pd.read_csv(tmp_path / "truth.csv", dtype=str, keep_default_na=False)
    true_pairs = _cross_pairs(truth, schema.PERSON_ID)

    plain = Linker(config).run()
    plain_f1 = _f1(_cross_pairs(plain.identities, schema.IDENTITY_ID), true_pairs)

    records = standardize(read_sources(config))
    police = encode_records(records[records[schema.SOURCE] == "police"], KEY)
    health = encode_records(records[records[schema.SOURCE] == "health"], KEY)
    linked = link_encodings(police, health, 0.75)
    pprl = set(zip(linked[schema.RECORD_ID + "_l"], linked[schema.RECORD_ID + "_r"], strict=True))
    pprl_f1 = _f1(pprl, true_pairs)
    print(f"police x health pairwise F1: plaintext {plain_f1:.4f}, encoded {pprl_f1:.4f}")
    assert pprl_f1 >= 0.9 * plain_f1
    assert pprl_f1 >= 0.95
    # the encodings carry no plaintext: no name, ID or date string appears in them
    text = police.to_csv()
    assert not any(v in text for v in records[schema.ID_STD].dropna().head(50))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.sampled_from([8, 16, 64, 128, 129, 130]), st.integers(0, 2**32 - 1))
def test_base64_rows_round_trip(rows, width, seed):
    packed = np.random.default_rng(seed).integers(0, 256, (rows, width), dtype=np.uint8)
    text = encode_base64(packed)
    assert list(text) == [base64.b64encode(row.tobytes()).decode() for row in packed]
    with_null = np.append(text, None)
    decoded = decode_clks(with_null)
    assert np.array_equal(decoded[:-1], packed) and not decoded[-1].any()


def test_vectorized_id_path_sets_the_same_bits_as_the_token_path():
    ids = ["110105194912310021", "44030419851107123X", "4403041985110", None]
    hasher = _Hasher(b"k", 1024, 20)
    fast = _id_base64(ids[:3], hasher)
    slow = _bloom_base64(ids[:3], id_tokens, hasher)
    assert list(fast) == list(slow)
    out = encode_records(
        pd.DataFrame({schema.RECORD_ID: ["a", "b", "c", "d"], schema.ID_STD: ids}), KEY
    )
    assert out[CLK_PREFIX + schema.ID_NUMBER].isna().tolist() == [False, False, False, True]


def test_encode_command_writes_only_keys_and_encodings(tmp_path):
    generated = generate(120, seed=3, output=tmp_path)
    path, rows = encode_command(
        tmp_path / "run.yaml", tmp_path / "h.parquet", KEY, sources=["health"]
    )
    encoded = pd.read_parquet(path)
    assert rows == len(generated.health) == len(encoded)
    assert set(encoded[schema.SOURCE]) == {"health"}
    assert all(
        c in (schema.SOURCE, schema.RECORD_ID) or c.startswith(("clk_", "blk_")) for c in encoded
    )
    with pytest.raises(InputError, match="unknown sources"):
        encode_command(tmp_path / "run.yaml", tmp_path / "x.csv", KEY, sources=["tax"])
