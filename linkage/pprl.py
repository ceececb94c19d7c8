"""Privacy-preserving record linkage: keyed Bloom-filter encodings (CLKs) and their matching.

Pure functions over standardized records; imports schema, errors and (for encode_command only)
config, io and standardize; never the store, the Linker or the CLI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.config import load_config
from linkage.errors import InputError
from linkage.io import read_sources, write_csv, write_parquet
from linkage.standardize.combine import standardize

logger = logging.getLogger(__name__)

# Fields that can be encoded, with the standardized columns they read (first non-null wins).
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    schema.NAME: (schema.name_col(schema.NAME, "clean"),),
    schema.BIRTH_DATE: (schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE),
    schema.ID_NUMBER: (schema.ID_STD,),
}
DEFAULT_FIELDS: tuple[str, ...] = (schema.NAME, schema.BIRTH_DATE, schema.ID_NUMBER)
# Weights of each field's Dice coefficient in the pair score (names carry most of the signal
# on health records, which often lack an ID).
DEFAULT_WEIGHTS: dict[str, float] = {
    schema.NAME: 1.0,
    schema.BIRTH_DATE: 1.0,
    schema.ID_NUMBER: 1.5,
}
BLOCK_KEYS: tuple[str, ...] = (
    "birth_date",
    "surname_month",
    "name_year",
    "name_monthday",
    "id_number",
)

CLK_PREFIX = "clk_"
BLOCK_PREFIX = "blk_"
COMBINED = "clk"
SCORE = "score"
DICE_PREFIX = "dice_"

_PINYIN_COLUMN = schema.name_col(schema.NAME, "pinyin")
_SURNAME_COLUMN = schema.name_col(schema.NAME, "surname_pinyin")
_SURNAME_FUZZY = schema.name_col(schema.NAME, "surname_fuzzy")
_FUZZY_COLUMN = schema.name_col(schema.NAME, "fuzzy")


def _is_han(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\U00020000" <= ch <= "\U0003134f"


def _numbered(tokens: Iterable[str]) -> list[str]:
    """Tag each token with its occurrence count, so repeats count (欧阳娜娜 is not 欧阳娜)."""
    seen: dict[str, int] = {}
    out = []
    for t in tokens:
        seen[t] = seen.get(t, 0) + 1
        out.append(f"{t}#{seen[t]}")
    return out


def name_tokens(name: str | None, pinyin: str | None) -> list[str]:
    """Single Han characters plus padded pinyin bigrams per syllable (either alone does poorly)."""
    chars = [f"c:{ch}" for ch in (name or "") if _is_han(ch)]
    grams = []
    # per syllable, so given-name-first romanizations (Wei Zhang) give the same bigrams
    for syllable in (pinyin or "").lower().split():
        padded = f"_{syllable}_"
        grams.extend(f"p:{padded[i : i + 2]}" for i in range(len(padded) - 1))
    if not chars and not grams and name:
        padded = f"_{name.lower()}_"
        grams = [f"s:{padded[i : i + 2]}" for i in range(len(padded) - 1)]
    return _numbered(chars) + _numbered(grams)


def date_tokens(value: str | None) -> list[str]:
    """Year, month, day and digit bigrams of an ISO date (a one-digit typo keeps most of them)."""
    if not value or len(value) < 10:
        return []
    y, m, d = value[:4], value[5:7], value[8:10]
    digits = y + m + d
    grams = [f"g:{digits[i : i + 2]}" for i in range(len(digits) - 1)]
    return [f"y:{y}", f"m:{m}", f"d:{d}", f"md:{m}{d}", *_numbered(grams)]


def id_tokens(value: str | None) -> list[str]:
    """Positional digit bigrams of an 18-character ID (a swap or one wrong digit keeps most)."""
    if not value:
        return []
    return [f"{i}:{value[i : i + 2]}" for i in range(len(value) - 1)]


def _field_key(key: bytes, field: str) -> bytes:
    # one derived key per field, so equal tokens in different fields set unrelated bits
    return hmac.new(key, f"linkage-pprl/{field}".encode(), hashlib.sha256).digest()


class _Hasher:
    """Bit positions of tokens, each distinct token hashed once and cached.

    Written here because no maintained library does keyed CLKs (clkhash is unmaintained): the
    two halves of one HMAC-SHA256 digest act as the two hashes of double hashing,
    position_i = h1 + i * h2 mod bits (Kirsch-Mitzenmacher).
    """

    def __init__(self, key: bytes, bits: int, k: int):
        self.key, self.bits, self.k = key, bits, k
        self.cache: dict[str, np.ndarray] = {}
        self.steps = np.arange(k, dtype=np.uint64)

    def positions(self, tokens: Sequence[str]) -> np.ndarray:
        """Positions of each token, shape (len(tokens), k)."""
        out = np.empty((len(tokens), self.k), dtype=np.int64)
        bits = np.uint64(self.bits)
        for j, token in enumerate(tokens):
            cached = self.cache.get(token)
            if cached is None:
                digest = hmac.digest(self.key, token.encode("utf-8"), "sha256")
                h1 = np.uint64(int.from_bytes(digest[:8], "big") % self.bits)
                h2 = np.uint64(int.from_bytes(digest[8:16], "big") % self.bits or 1)
                cached = ((h1 + self.steps * h2) % bits).astype(np.int64)
                self.cache[token] = cached
            out[j] = cached
        return out


def _pack(rows: np.ndarray, cols: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Packed rows of an (n, bits) bit matrix with bits (rows[i], cols[i]) set."""
    flat = np.zeros(n * bits, dtype=bool)
    flat[rows * bits + cols] = True
    return np.packbits(flat.reshape(n, bits), axis=1)


def _pack_rect(cols: np.ndarray, bits: int) -> np.ndarray:
    """Packed rows of a bit matrix given the same number of set positions per row (n, j)."""
    n = len(cols)
    flat = np.zeros(n * bits, dtype=bool)
    flat[(cols + np.arange(n)[:, None] * bits).ravel()] = True
    return np.packbits(flat.reshape(n, bits), axis=1)


def encode_base64(packed: np.ndarray) -> np.ndarray:
    """Standard base64 text of each row of a uint8 matrix, in one call for all rows."""
    n, width = packed.shape
    padded_width = -(-width // 3) * 3
    padded = np.zeros((n, padded_width), dtype=np.uint8)
    padded[:, :width] = packed
    chars = padded_width // 3 * 4
    text = np.frombuffer(base64.b64encode(padded.tobytes()), dtype=f"S{chars}").astype(str)
    pad = padded_width - width
    if pad == 0:
        return text.astype(object)
    # zero bytes added to reach whole 3-byte groups encode as trailing "A": standard "=" instead
    return np.char.add(text.astype(f"U{chars - pad}"), "=" * pad).astype(object)


def decode_clks(values: pd.Series | Sequence[str | None], bits: int | None = None) -> np.ndarray:
    """Base64 CLKs to a packed uint8 matrix; null rows become all-zero (see ``clk_present``)."""
    values = np.asarray(list(values), dtype=object)
    present = clk_present(values)
    if not present.any():
        return np.zeros((len(values), (bits or 0) // 8), dtype=np.uint8)
    text = values[present].astype(str)
    lengths = np.char.str_len(text)
    if (lengths != lengths[0]).any():
        raise InputError("CLKs of different lengths in one column: encode them alike")
    width = len(base64.b64decode(text[0]))
    if bits and width * 8 != bits:
        raise InputError(f"CLKs have {width * 8} bits, expected {bits}")
    # all rows have the same length, so padding "=" becomes zero bits of whole 3-byte groups
    raw = base64.b64decode("".join(np.char.replace(text, "=", "A")))
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(len(text), -1)[:, :width]
    out = np.zeros((len(values), width), dtype=np.uint8)
    out[present] = rows
    return out


def _bloom_base64(
    values: Sequence[Any], tokenize, hasher: _Hasher, chunk: int = 8192
) -> np.ndarray:
    """Base64 Bloom filter of each value's tokens (None where it has none), built in chunks.

    Chunks bound memory (a (chunk, bits) bool matrix at a time) and keep it in cache.
    """
    out = np.empty(len(values), dtype=object)
    for s in range(0, len(values), chunk):
        lists = [tokenize(v) for v in values[s : s + chunk]]
        flat = [t for tokens in lists for t in tokens]
        if not flat:
            continue
        owners = np.repeat(np.arange(len(lists)), [len(t) for t in lists])
        codes, uniques = pd.factorize(pd.Series(flat, dtype=object))
        positions = hasher.positions(list(uniques))
        rows, cols = np.repeat(owners, hasher.k), positions[codes].reshape(-1)
        text = encode_base64(_pack(rows, cols, len(lists), hasher.bits))
        has = np.array([bool(t) for t in lists])
        out[s : s + len(lists)] = np.where(has, text, None)
    return out


_ID_ALPHABET = "0123456789X"


def _id_base64(values: Sequence[Any], hasher: _Hasher, chunk: int = 8192) -> np.ndarray:
    """Bloom filters of 18-character IDs without a Python loop per ID; same bits as id_tokens.

    All 17 x 121 positional bigram tokens are hashed once, then looked up by digit codes.
    """
    values = np.asarray(values, dtype=object)
    text = pd.Series(values, dtype="string")
    ok = text.str.fullmatch(r"\d{17}[\dX]").fillna(False).to_numpy(dtype=bool)
    out = np.empty(len(values), dtype=object)
    if (~ok).any():
        out[~ok] = _bloom_base64(list(values[~ok]), id_tokens, hasher)
    if not ok.any():
        return out
    tokens = [f"{i}:{a}{b}" for i in range(17) for a in _ID_ALPHABET for b in _ID_ALPHABET]
    table = hasher.positions(tokens).reshape(17, 121, hasher.k)
    lookup = np.full(128, 0, dtype=np.int64)
    for code, ch in enumerate(_ID_ALPHABET):
        lookup[ord(ch)] = code
    ids = np.asarray(values[ok], dtype="S18")
    digits = lookup[np.frombuffer(ids.tobytes(), dtype=np.uint8).reshape(-1, 18)]
    bigram = digits[:, :-1] * 11 + digits[:, 1:]
    where = np.flatnonzero(ok)
    for s in range(0, len(ids), chunk):
        part = bigram[s : s + chunk]
        cols = table[np.arange(17), part].reshape(len(part), -1)  # (n, 17 * k)
        out[where[s : s + chunk]] = encode_base64(_pack_rect(cols, hasher.bits))
    return out


def _column(records: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    present = [c for c in columns if c in records.columns]
    if not present:
        return pd.Series([None] * len(records), index=records.index, dtype=object)
    out = records[present[0]].astype(object)
    for c in present[1:]:
        out = out.where(out.notna(), records[c].astype(object))
    return out.where(out.notna(), None)


def _keyed_text(key: bytes, label: str, values: pd.Series) -> pd.Series:
    """Keyed 64-bit hash (hex) of each distinct value; null stays null.

    Keyed BLAKE2b is a MAC like HMAC (RFC 7693) at about half the cost per call, which counts
    here: composite blocking values are nearly distinct per record.
    """
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    prefix = label.encode("utf-8") + b":"
    blake = hashlib.blake2b
    digests = [
        blake(prefix + u.encode("utf-8"), key=key, digest_size=8).hexdigest()
        for u in np.asarray(uniques, dtype=object).tolist()
    ]
    table = np.array([*digests, None], dtype=object)
    return pd.Series(table[np.where(codes < 0, len(digests), codes)], index=values.index)


def encode_records(
    records: pd.DataFrame,
    key: bytes,
    fields: Sequence[str] = DEFAULT_FIELDS,
    *,
    bits: int = 1024,
    k: int = 20,
    combined: bool = False,
) -> pd.DataFrame:
    """Encode standardized records as keyed CLKs: ``source``, ``record_id``, ``clk_<field>``, ``blk_*``.

    With ``combined`` one ``clk`` column holds all fields in one filter instead. A field with no
    value gets a null CLK (never an empty filter, which would read as a real disagreement).
    """
    if not key:
        raise InputError("an encoding key is required (shared secret of the departments)")
    if bits % 8 or bits < 64:
        raise InputError(f"bits must be a multiple of 8 and at least 64, got {bits}")
    unknown = [f for f in fields if f not in FIELD_COLUMNS]
    if unknown:
        raise InputError(f"cannot encode {unknown}; encodable fields: {list(FIELD_COLUMNS)}")
    out = pd.DataFrame(
        {
            schema.SOURCE: records.get(schema.SOURCE, pd.Series([None] * len(records))).to_numpy(),
            schema.RECORD_ID: records[schema.RECORD_ID].to_numpy(),
        }
    )
    sources: dict[str, tuple[pd.Series, Any]] = {}
    for field in fields:
        if field == schema.NAME:
            name = _column(records, FIELD_COLUMNS[field])
            pinyin = _column(records, (_PINYIN_COLUMN,))
            pairs = pd.Series(list(zip(name, pinyin, strict=True)), index=records.index)
            sources[field] = (pairs.where(name.notna() | pinyin.notna(), None), _name_tokens)
        else:
            tokenize = date_tokens if field == schema.BIRTH_DATE else id_tokens
            sources[field] = (_column(records, FIELD_COLUMNS[field]), tokenize)
    if combined:
        # one filter for all fields; field-tagged tokens keep equal q-grams of fields apart
        values = pd.Series(
            list(zip(*(v.to_numpy() for v, _ in sources.values()), strict=True)),
            index=records.index,
        )
        tokenizers = {f: t for f, (_, t) in sources.items()}

        def tokenize_all(row: tuple) -> list[str]:
            return [
                f"{field}/{t}"
                for field, value in zip(tokenizers, row, strict=True)
                if value is not None
                for t in tokenizers[field](value)
            ]

        sources = {COMBINED: (values, tokenize_all)}
    for field, (values, tokenize) in sources.items():
        # distinct values only: names and dates repeat heavily
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        hasher = _Hasher(_field_key(key, field), bits, k)
        if field == schema.ID_NUMBER:
            text = np.append(_id_base64(list(uniques), hasher), None)
        else:
            text = np.append(_bloom_base64(list(uniques), tokenize, hasher), None)
        column = COMBINED if field == COMBINED else CLK_PREFIX + field
        out[column] = text[np.where(codes < 0, len(text) - 1, codes)]
    for name, values in _block_values(records).items():
        out[BLOCK_PREFIX + name] = _keyed_text(_field_key(key, "block"), name, values).to_numpy()
    return out


def _name_tokens(pair: tuple[str | None, str | None]) -> list[str]:
    return name_tokens(*pair)


def _block_values(records: pd.DataFrame) -> dict[str, pd.Series]:
    """Plain blocking values; each key catches pairs another misses (wrong date, wrong surname)."""
    birth = _column(records, FIELD_COLUMNS[schema.BIRTH_DATE]).astype("string")
    surname = _column(records, (_SURNAME_FUZZY, _SURNAME_COLUMN)).astype("string")
    fuzzy = _column(records, (_FUZZY_COLUMN, _PINYIN_COLUMN)).astype("string")
    return {
        "birth_date": birth,
        "surname_month": surname + "|" + birth.str[:7],
        "name_year": fuzzy + "|" + birth.str[:4],
        "name_monthday": fuzzy + "|" + birth.str[5:10],  # year typos (1992 -> 1993)
        "id_number": _column(records, FIELD_COLUMNS[schema.ID_NUMBER]).astype("string"),
    }


def clk_present(values: pd.Series | Sequence[str | None]) -> np.ndarray:
    """Mask of rows that carry a CLK."""
    return np.array([isinstance(v, str) for v in values], dtype=bool)


def dice_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice coefficient row by row of two packed uint8 matrices of equal shape (NaN if both empty)."""
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.shape != b.shape:
        raise InputError(f"CLK matrices differ in shape: {a.shape} vs {b.shape}")
    common = np.bitwise_count(a & b).sum(axis=1, dtype=np.int64)
    total = np.bitwise_count(a).sum(axis=1, dtype=np.int64) + np.bitwise_count(b).sum(
        axis=1, dtype=np.int64
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * common / np.maximum(total, 1), np.nan)


def _candidates(a: pd.DataFrame, b: pd.DataFrame, block_keys: Sequence[str]) -> pd.DataFrame:
    frames = []
    for name in block_keys:
        col = BLOCK_PREFIX + name
        if col not in a.columns or col not in b.columns:
            continue
        left = pd.DataFrame({"i": np.arange(len(a)), "k": a[col].to_numpy()}).dropna()
        right = pd.DataFrame({"j": np.arange(len(b)), "k": b[col].to_numpy()}).dropna()
        frames.append(left.merge(right, on="k")[["i", "j"]])
    if not frames:
        raise InputError(f"no shared blocking key among {[BLOCK_PREFIX + k for k in block_keys]}")
    return pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)


def score_pairs(
    a: pd.DataFrame,
    b: pd.DataFrame,
    left: np.ndarray,
    right: np.ndarray,
    weights: dict[str, float] | None = None,
    chunk: int = 500_000,
) -> pd.DataFrame:
    """Per-field Dice and the weighted mean over fields both rows carry, for row-index pairs."""
    weights = weights or DEFAULT_WEIGHTS
    fields = [f for f in weights if CLK_PREFIX + f in a.columns and CLK_PREFIX + f in b.columns]
    if not fields and COMBINED in a.columns and COMBINED in b.columns:
        fields, weights = [COMBINED], {COMBINED: 1.0}
    out = pd.DataFrame({"i": left, "j": right})
    num = np.zeros(len(left))
    den = np.zeros(len(left))
    for field in fields:
        col = field if field == COMBINED else CLK_PREFIX + field
        ma, mb = decode_clks(a[col]), decode_clks(b[col])
        if ma.shape[1] != mb.shape[1]:
            raise InputError(f"'{col}' has different lengths on the two sides: encode alike")
        dice = np.empty(len(left))
        # chunks bound memory: two (chunk, bits/8) byte matrices at a time
        for s in range(0, len(left), chunk):
            dice[s : s + chunk] = dice_similarity(ma[left[s : s + chunk]], mb[right[s : s + chunk]])
        both = clk_present(a[col])[left] & clk_present(b[col])[right]
        dice = np.where(both, dice, np.nan)
        out[DICE_PREFIX + field] = dice
        w = weights[field]
        num += np.where(both, w * np.nan_to_num(dice), 0.0)
        den += np.where(both, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[SCORE] = np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)
    return out


def link_encodings(
    a: pd.DataFrame,
    b: pd.DataFrame,
    threshold: float = 0.75,
    *,
    one_to_one: bool = False,
    block_keys: Sequence[str] = BLOCK_KEYS,
    weights: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Link two encoded tables: candidate pairs by equal blocking keys, kept at ``score >= threshold``.

    Returns ``source_l, record_id_l, source_r, record_id_r, score`` and ``dice_<field>`` sorted
    by score; ``one_to_one`` keeps each record in at most one pair, best score first (greedy).
    """
    cand = _candidates(a, b, block_keys)
    scored = score_pairs(a, b, cand["i"].to_numpy(), cand["j"].to_numpy(), weights)
    scored = scored[scored[SCORE] >= threshold]
    scored = scored.sort_values([SCORE, "i", "j"], ascending=[False, True, True], kind="mergesort")
    if one_to_one:
        # greedy: a pair survives when neither side was taken by a better pair; one pass over
        # the sorted pairs is the textbook method and touches only pairs above the threshold
        taken_i: set[int] = set()
        taken_j: set[int] = set()
        keep = np.zeros(len(scored), dtype=bool)
        for n, (i, j) in enumerate(
            zip(scored["i"].to_numpy(), scored["j"].to_numpy(), strict=True)
        ):
            if i not in taken_i and j not in taken_j:
                keep[n] = True
                taken_i.add(i)
                taken_j.add(j)
        scored = scored[keep]
    i, j = scored["i"].to_numpy(), scored["j"].to_numpy()
    out = pd.DataFrame(
        {
            schema.SOURCE + "_l": a[schema.SOURCE].to_numpy()[i],
            schema.RECORD_ID + "_l": a[schema.RECORD_ID].to_numpy()[i],
            schema.SOURCE + "_r": b[schema.SOURCE].to_numpy()[j],
            schema.RECORD_ID + "_r": b[schema.RECORD_ID].to_numpy()[j],
            SCORE: scored[SCORE].to_numpy(),
        }
    )
    for col in scored.columns:
        if col.startswith(DICE_PREFIX):
            out[col] = scored[col].to_numpy()
    logger.info("PPRL: %d candidate pairs, %d linked", len(cand), len(out))
    return out


def encode_command(
    config_path: str | Path,
    output: str | Path,
    key: bytes,
    *,
    sources: Sequence[str] | None = None,
    fields: Sequence[str] = DEFAULT_FIELDS,
) -> tuple[Path, int]:
    """Body of ``linkage encode``: read, standardize and encode a run config's sources to a file.

    The output holds record keys, CLKs and keyed blocking values only (Parquet or CSV by suffix).
    """
    config = load_config(config_path)
    unknown = sorted(set(sources or ()) - set(config.sources))
    if unknown:
        raise InputError(f"unknown sources {unknown}; the config has {list(config.sources)}")
    records = standardize(read_sources(config), config.standardize)
    if sources:
        records = records[records[schema.SOURCE].isin(sources)]
    encoded = encode_records(records, key, fields)
    path = Path(output)
    if path.suffix.lower() == ".parquet":
        write_parquet(encoded, path)
    else:
        write_csv(encoded, path)
    return path, len(encoded)
