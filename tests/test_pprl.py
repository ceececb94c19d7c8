"""Privacy-preserving linkage: encodings, key checks, pseudonymous record ids, the attacks of
docs/privacy.md (enumeration without the key, by a key holder, frequency alignment), accuracy."""

from __future__ import annotations

import base64
import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import linkage.pprl as pprl
from linkage import Linker, schema
from linkage.config import config_from_dict
from linkage.errors import InputError
from linkage.io import read_sources
from linkage.pprl import (
    CLK,
    KEY_CHECK,
    EncodingSettings,
    decode_clks,
    dice_similarity,
    encode_records,
    link_encodings,
    master_key,
)
from linkage.pprl.bloom import RandomHasher, encode_base64
from linkage.pprl.link import lsh_candidates
from linkage.pprl.tokens import name_tokens
from linkage.standardize.combine import standardize
from linkage.synth import generate

SECRET = b"custodians-shared-secret-0123456789"


def test_public_surface_is_pinned():
    assert pprl.__all__ == [
        "CLK",
        "KEY_CHECK",
        "SCORE",
        "EncodingSettings",
        "decode_clks",
        "dice_similarity",
        "encode_records",
        "key_check_value",
        "link_encodings",
        "master_key",
        "record_pseudonyms",
    ]


def _records(names, births=None, ids=None, record_ids=None) -> pd.DataFrame:
    n = len(names)
    raw = pd.DataFrame(
        {
            schema.SOURCE: "health",
            schema.RECORD_ID: record_ids or [f"H{i}" for i in range(n)],
            schema.NAME: names,
            schema.BIRTH_DATE: births or [None] * n,
            schema.ID_NUMBER: ids or [None] * n,
        }
    )
    return standardize(raw)


NAME_ONLY = EncodingSettings(fields=(schema.NAME,), hardening="none", salt="none")


def _dice(
    a: str, b: str, settings: EncodingSettings = NAME_ONLY, secret_b: bytes = SECRET
) -> float:
    left = encode_records(_records([a]), SECRET, settings)
    right = encode_records(_records([b]), secret_b, settings)
    return float(dice_similarity(decode_clks(left[CLK]), decode_clks(right[CLK]))[0])


def test_name_tokens_keep_repeats_homophones_and_romanized_order():
    assert name_tokens("欧阳娜娜", "ou yang na na") != name_tokens("欧阳娜", "ou yang na")
    assert _dice("张伟", "张伟") == 1.0
    assert 0.6 < _dice("张伟", "章伟") < 1.0
    assert _dice("张伟", "李娜") < 0.35
    assert _dice("Zhang Wei", "Wei Zhang") == 1.0


def test_different_secrets_give_unlinkable_encodings():
    assert _dice("欧阳娜娜", "欧阳娜娜", secret_b=b"another-custodian-secret-000") < 0.5


def test_balanced_encodings_have_half_their_bits_set():
    recs = _records(["王芳", "买买提·艾力"], ["1990-01-02", None], ["110105194912310021", None])
    out = encode_records(recs, SECRET)
    bits = np.unpackbits(decode_clks(out[CLK]), axis=1)
    assert bits.shape == (2, 2048) and (bits.sum(axis=1) == 1024).all()
    assert encode_records(recs, SECRET).equals(out)  # deterministic


def test_record_with_nothing_to_encode_gets_a_null_clk():
    out = encode_records(_records([None, "王芳"]), SECRET)
    assert out[CLK].isna().tolist() == [True, False]


def test_record_ids_are_pseudonyms_and_plain_ids_that_are_identifiers_are_refused():
    ids = ["110105194912310021", "44030619900101002X"]
    recs = _records(["张伟", "李娜"], ["1949-12-31", "1990-01-01"], ids, record_ids=ids)
    out = encode_records(recs, SECRET)
    text = out.to_csv()
    assert not any(i in text for i in ids)
    assert out[schema.RECORD_ID].str.fullmatch(r"R[0-9a-f]{24}").all()
    assert out[schema.RECORD_ID].tolist() == encode_records(recs, SECRET)[schema.RECORD_ID].tolist()
    with pytest.raises(InputError, match="look like resident IDs"):
        encode_records(recs, SECRET, record_ids="plain")
    plain = encode_records(_records(["张伟"], record_ids=["H-000123"]), SECRET, record_ids="plain")
    assert plain[schema.RECORD_ID].tolist() == ["H-000123"]


@pytest.mark.parametrize(
    "record_id",
    [
        "P110105194912310021",  # the ID behind a registry's prefix
        "44030619900101002X-01",  # ... or before a suffix
        "110105 19491231 0021",  # written in groups
        "110105-194912-310021",
        "+8613912345678",  # a mobile number in international form
        "0086-139-1234-5678",
        "M13912345678",
        "R110105491231002",  # a 15-digit ID inside
        # separators other than spaces and dashes passed the check, the id went out in clear
        "110105.19491231.0021",
        "110105/19491231/0021",
        "110105_19491231_0021",
        "110105、19491231、0021",
        "110105\u200b19491231\u200b0021",  # zero-width spaces
        "110105\u201319491231\u20130021",  # en dashes
        "(139)1234-5678",
        "139.1234.5678",
        # an ID inside a longer digit run (an ID and a visit number, a leading zero)
        "11010519491231002X01",
        "044030619900101002201",
        "44030619900101002201",
    ],
)
def test_plain_record_ids_holding_an_identifier_anywhere_are_refused(record_id):
    """`--record-ids plain` refused only record ids that were an ID or mobile number as a
    whole: one with a prefix, a suffix, separators or +86 went to the linkage unit in clear."""
    recs = _records(["张伟"], record_ids=[record_id])
    with pytest.raises(InputError, match="look like resident IDs"):
        encode_records(recs, SECRET, record_ids="plain")


def test_plain_record_ids_without_an_identifier_stay_plain():
    ids = [
        "44030500300015221",
        "JZ2024000123",
        "2024-03-15-0001",
        "H-000123",
        "R1",
        "2024.03.15/0001_77",
        # a 20-digit number whose 18-digit windows are no valid ID (checksum, date, province)
        "11010519491231002101",
    ]
    plain = encode_records(
        _records(["张伟"] * len(ids), record_ids=ids), SECRET, record_ids="plain"
    )
    assert plain[schema.RECORD_ID].tolist() == ids


def test_a_mistyped_key_is_detected_by_the_key_check_value():
    recs = _records(["张伟", "李娜"], ["1949-12-31", "1990-01-01"])
    good = encode_records(recs, b"shared-key-of-the-custodians")
    typo = encode_records(recs, b"shared-kee-of-the-custodians")
    assert len(link_encodings(good, encode_records(recs, b"shared-key-of-the-custodians"))) == 2
    with pytest.raises(InputError, match="key check values differ"):
        link_encodings(good, typo)
    other = encode_records(
        recs, b"shared-key-of-the-custodians", EncodingSettings(hardening="none")
    )
    with pytest.raises(InputError, match="key check values differ"):
        link_encodings(good, other)  # settings are bound into the check value too
    with pytest.raises(InputError, match="lack columns"):
        link_encodings(good.drop(columns=KEY_CHECK), good)


# --- attacks (docs/privacy.md) ---

ID_ALPHABET = "0123456789X"


def _id_dictionary_attack(encodings: pd.DataFrame, secret: bytes, settings: EncodingSettings):
    """Case-01 style enumeration: walk ID bigrams whose bits are all set, left to right.

    The attacker knows the published construction and uses ``secret`` as its key guess; it
    undoes the balancing permutation with that key. Returns {row: recovered ID} for rows where
    exactly one ID survives.
    """
    from linkage.pprl.bloom import derive

    master = master_key(secret)
    hasher = RandomHasher(derive(master, "clk"), settings.bits)
    k = settings.bits_per_token[schema.ID_NUMBER]
    table = {
        (i, a + b): hasher.positions(f"{schema.ID_NUMBER}/{i}:{a}{b}", k)
        for i in range(17)
        for a in ID_ALPHABET
        for b in ID_ALPHABET
    }
    bits = np.unpackbits(decode_clks(encodings[CLK]), axis=1).astype(bool)
    if settings.hardening == "balance":
        # the key holder recomputes the permutation and reads the original half back
        seed = int.from_bytes(
            hmac.digest(derive(master, "balance"), b"balance-permutation", "sha256")[:8], "big"
        )
        order = np.random.default_rng(seed).permutation(2 * settings.bits)
        where = np.argsort(order)[: settings.bits]  # column holding original bit p
        bits = bits[:, where]
    out = {}
    for row, b in enumerate(bits):
        cands = [""]
        for i in range(17):
            nxt = []
            for c in cands:
                for a in ID_ALPHABET if i == 0 else c[-1]:
                    for d in ID_ALPHABET:
                        if b[table[(i, a + d)]].all():
                            nxt.append((c if i else a) + d)
            cands = list(dict.fromkeys(nxt))[:50]
        if len(cands) == 1:
            out[row] = cands[0]
    return out


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    path = tmp_path_factory.mktemp("pprl")
    generate(600, seed=11, output=path)
    data = yaml.safe_load((path / "run.yaml").read_text(encoding="utf-8"))
    config = config_from_dict(data, path=path / "run.yaml")
    return standardize(read_sources(config)), config, path


def test_enumeration_without_the_key_recovers_nothing_and_with_it_is_measured(population):
    records = population[0]
    police = records[records[schema.SOURCE] == "police"].head(80).reset_index(drop=True)
    # ID tokens salted with the birth year only multiply a key holder's walk by the ~100
    # plausible years; the walk below skips that step by encoding without the ID salt
    settings = EncodingSettings(salt="birth_year")
    enc = encode_records(police, SECRET, settings)
    truth = police[schema.ID_STD].to_numpy()
    has_id = int(pd.notna(truth).sum())
    # the linkage unit or an outsider: guesses of the key, the old public default included
    for guess in (b"", b"S3cret-shared-key-XYZ", b"custodians-shared-secret-0123456788"):
        if not guess:
            with pytest.raises(InputError):
                master_key(guess)
            continue
        found = _id_dictionary_attack(enc, guess, settings)
        assert sum(truth[r] == v for r, v in found.items()) == 0
    # a key holder (another custodian) is not stopped by Bloom filters: measured, documented
    found = _id_dictionary_attack(enc, SECRET, settings)
    right = sum(truth[r] == v for r, v in found.items())
    print(f"key-holder ID enumeration: {right} of {has_id} IDs recovered")
    # documented finding: hardening does not stop a key holder, so encodings go to the
    # linkage unit only, never to another custodian (docs/privacy.md)
    assert right >= 0.9 * has_id


def _frequency_alignment(encodings: pd.Series, plain: pd.Series) -> float:
    """Share of rows whose plaintext the linkage unit names by aligning frequency ranks."""
    enc_counts, val_counts = encodings.value_counts(), plain.value_counts()
    right = 0
    for rank in range(min(50, len(enc_counts), len(val_counts))):
        if enc_counts.iloc[rank] < 2:
            break
        right += int((plain[encodings == enc_counts.index[rank]] == val_counts.index[rank]).sum())
    return right / len(plain)


def test_frequency_alignment_by_the_linkage_unit():
    rng = np.random.default_rng(5)
    names = ["王伟", "李娜", "张敏", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴芳"]
    weights = 1 / np.arange(1, len(names) + 1)  # Zipf-like, as surnames and names are
    chosen = rng.choice(names, size=400, p=weights / weights.sum())
    births = [
        f"19{rng.integers(50, 99)}-0{rng.integers(1, 9)}-1{rng.integers(0, 9)}" for _ in chosen
    ]
    recs = _records(list(chosen), births)
    plain = pd.Series(chosen)
    name_only = encode_records(recs, SECRET, NAME_ONLY)[CLK]
    record_level = encode_records(recs, SECRET)[CLK]
    field_rate = _frequency_alignment(name_only, plain)
    record_rate = _frequency_alignment(record_level, plain)
    print(
        f"frequency alignment: name-only filters {field_rate:.1%}, record-level {record_rate:.1%}"
    )
    assert field_rate > 0.9  # why name-only filters are not offered
    assert record_rate < 0.02


# --- linking ---


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


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.sampled_from([8, 16, 64, 128, 129, 130]), st.integers(0, 2**32 - 1))
def test_base64_rows_round_trip(rows, width, seed):
    packed = np.random.default_rng(seed).integers(0, 256, (rows, width), dtype=np.uint8)
    text = encode_base64(packed)
    assert list(text) == [base64.b64encode(row.tobytes()).decode() for row in packed]
    decoded = decode_clks(np.append(text, None))
    assert np.array_equal(decoded[:-1], packed) and not decoded[-1].any()


def test_random_hashing_is_hmac_words_not_double_hashing():
    hasher = RandomHasher(b"k" * 32, 1024)
    digest = hmac.new(b"k" * 32, "name/c:王#1".encode(), hashlib.sha256).digest()
    expected = np.frombuffer(digest[:20], dtype=">u2").astype(int) % 1024
    assert hasher.positions("name/c:王#1", 10).tolist() == expected.tolist()
    assert len(hasher.positions("x", 40)) == 40


def test_lsh_candidates_find_the_pairs_all_pairs_dice_finds(population):
    records = population[0]
    police = encode_records(records[records[schema.SOURCE] == "police"], SECRET)
    health = encode_records(records[records[schema.SOURCE] == "health"], SECRET)
    ma, mb = decode_clks(police[CLK]), decode_clks(health[CLK])
    i, j = np.meshgrid(np.arange(len(ma)), np.arange(len(mb)), indexing="ij")
    dice = dice_similarity(ma[i.ravel()], mb[j.ravel()])
    above = set(zip(i.ravel()[dice >= 0.85], j.ravel()[dice >= 0.85], strict=True))
    cand = lsh_candidates(ma, mb)
    found = set(zip(cand["i"], cand["j"], strict=True))
    assert above and len(above & found) >= 0.99 * len(above)
    assert len(cand) < 0.05 * len(ma) * len(mb)


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
    plain_f1 = _f1(_cross_pairs(Linker(config).run().identities, schema.IDENTITY_ID), true_pairs)
    records = standardize(read_sources(config))
    police = encode_records(records[records[schema.SOURCE] == "police"], SECRET, record_ids="plain")
    health = encode_records(records[records[schema.SOURCE] == "health"], SECRET, record_ids="plain")
    linked = link_encodings(police, health)
    pairs = set(zip(linked[schema.RECORD_ID + "_l"], linked[schema.RECORD_ID + "_r"], strict=True))
    pprl_f1 = _f1(pairs, true_pairs)
    print(f"police x health pairwise F1: plaintext {plain_f1:.4f}, encoded {pprl_f1:.4f}")
    assert pprl_f1 >= 0.965  # measured 0.974 here, every field salted (docs/privacy.md)
    one = link_encodings(police, health, one_to_one=True)
    assert not one[schema.RECORD_ID + "_l"].duplicated().any()
    assert not one[schema.RECORD_ID + "_r"].duplicated().any()


def test_pattern_mining_by_the_linkage_unit_is_stopped_by_salting(tmp_path):
    """Co-set bits single out frequent name characters in unsalted encodings, not in salted."""
    from linkage.pprl.attacks import bit_signatures, exposed_characters

    generate(3000, seed=3, output=tmp_path)
    data = yaml.safe_load((tmp_path / "run.yaml").read_text(encoding="utf-8"))
    records = standardize(read_sources(config_from_dict(data, path=tmp_path / "run.yaml")))
    records = records.reset_index(drop=True)
    names = records[schema.name_col(schema.NAME, "clean")].astype(str)
    unsalted = encode_records(records, SECRET, EncodingSettings(salt="none"))[CLK]
    salted = encode_records(records, SECRET)[CLK]
    exposed = exposed_characters(bit_signatures(unsalted), names)
    print(
        f"pattern mining: unsalted exposes {exposed}, salted {exposed_characters(bit_signatures(salted), names)}"
    )
    assert exposed  # the measured weakness that made salting the default (docs/privacy.md)
    assert not exposed_characters(bit_signatures(salted), names)
