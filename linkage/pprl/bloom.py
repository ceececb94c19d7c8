"""Bloom-filter machinery: keyed random hashing, bit packing, hardening, base64 and Dice.

Pure numpy; imports only errors. Written here rather than taken from clkhash: clkhash 0.18
(the last release, 2023) pins cryptography<41 and bitarray<3 and its project is archived, and
anonlink's candidate generation adds nothing the vectorized Dice below does not do at our sizes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

import numpy as np
import pandas as pd

from linkage.errors import InputError


class RandomHasher:
    """Bit positions of tokens under a secret key, each distinct token hashed once.

    Random hashing: the k positions of a token are k independent 16-bit words of
    HMAC-SHA256(key, token) (more words from a counter when k > 16), not the arithmetic
    progression of double hashing, whose structure the attacks of Niedermeyer et al. (2014)
    and Kroll & Steinmetzer (2015) exploit; both recommend independent positions instead.
    """

    def __init__(self, key: bytes, bits: int):
        if bits > 65536 or 65536 % bits:
            raise InputError(f"bits must divide 65536, got {bits}")
        self.key, self.bits = key, bits
        self.cache: dict[str, np.ndarray] = {}

    def positions(self, token: str, k: int) -> np.ndarray:
        """The k bit positions of one token (cached)."""
        cached = self.cache.get(token)
        if cached is None:
            words = bytearray()
            block = 0
            while len(words) < 2 * k:
                msg = token.encode("utf-8") if block == 0 else f"{token}\x1f{block}".encode()
                words += hmac.digest(self.key, msg, "sha256")
                block += 1
            # 65536 is a multiple of bits: the modulo keeps the positions uniform
            cached = np.frombuffer(bytes(words[: 2 * k]), dtype=">u2").astype(np.int64) % self.bits
            self.cache[token] = cached
        return cached


def bloom_matrix(
    token_lists: Sequence[Sequence[tuple[str, int]]], hasher: RandomHasher
) -> np.ndarray:
    """Boolean (n, bits) matrix: row i has the positions of its (token, k) pairs set."""
    n = len(token_lists)
    out = np.zeros((n, hasher.bits), dtype=bool)
    flat = [t for tokens in token_lists for t in tokens]
    if not flat:
        return out
    owners = np.repeat(np.arange(n), [len(t) for t in token_lists])
    codes, uniques = pd.factorize(pd.Series([f"{k}\x1f{t}" for t, k in flat], dtype=object))
    positions = []
    for u in uniques:
        k, token = u.split("\x1f", 1)
        positions.append(hasher.positions(token, int(k)))
    lengths = np.array([len(p) for p in positions], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    all_pos = np.concatenate(positions)
    counts = lengths[codes]
    rows = np.repeat(owners, counts)
    # position j of token occurrence t: all_pos[offsets[code_t] + j]
    starts = np.repeat(offsets[codes], counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, all_pos[starts + within]] = True
    return out


def balance(bits: np.ndarray, key: bytes) -> np.ndarray:
    """Balanced Bloom filter (Schnell & Borgs 2016): append the complement, permute by the key.

    Every filter then has exactly half its bits set, so bit counts no longer tell how many
    tokens a record has; the permutation only hides which column pairs are complements from
    a reader who has not yet looked for anti-correlated columns.
    """
    seed = int.from_bytes(hmac.digest(key, b"balance-permutation", "sha256")[:8], "big")
    order = np.random.default_rng(seed).permutation(2 * bits.shape[1])
    return np.concatenate([bits, ~bits], axis=1)[:, order]


def xor_fold(bits: np.ndarray) -> np.ndarray:
    """XOR-folding (Schnell, Borgs & Encarnação 2016): each bit is the XOR of two halves' bits."""
    half = bits.shape[1] // 2
    return bits[:, :half] ^ bits[:, half : 2 * half]


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


def clk_present(values: pd.Series | Sequence[str | None]) -> np.ndarray:
    """Mask of rows that carry an encoding."""
    return np.array([isinstance(v, str) for v in values], dtype=bool)


def decode_clks(values: pd.Series | Sequence[str | None], bits: int | None = None) -> np.ndarray:
    """Base64 encodings to a packed uint8 matrix; null rows become all-zero (see ``clk_present``)."""
    values = np.asarray(list(values), dtype=object)
    present = clk_present(values)
    if not present.any():
        return np.zeros((len(values), (bits or 0) // 8), dtype=np.uint8)
    text = values[present].astype(str)
    lengths = np.char.str_len(text)
    if (lengths != lengths[0]).any():
        raise InputError("encodings of different lengths in one column: encode them alike")
    try:
        width = len(base64.b64decode(text[0], validate=True))
        # all rows have the same length, so padding "=" becomes zero bits of whole 3-byte groups
        raw = base64.b64decode("".join(np.char.replace(text, "=", "A")), validate=True)
    except ValueError as exc:
        raise InputError(f"encodings are not base64: {exc}") from None
    if bits and width * 8 != bits:
        raise InputError(f"encodings have {width * 8} bits, expected {bits}")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(len(text), -1)[:, :width]
    out = np.zeros((len(values), width), dtype=np.uint8)
    out[present] = rows
    return out


def dice_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice coefficient row by row of two packed uint8 matrices of equal shape (NaN if both empty)."""
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.shape != b.shape:
        raise InputError(f"encoding matrices differ in shape: {a.shape} vs {b.shape}")
    common = np.bitwise_count(a & b).sum(axis=1, dtype=np.int64)
    total = np.bitwise_count(a).sum(axis=1, dtype=np.int64) + np.bitwise_count(b).sum(
        axis=1, dtype=np.int64
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2.0 * common / np.maximum(total, 1), np.nan)


def derive(master: bytes, label: str) -> bytes:
    """A sub-key of ``master`` for one purpose (HMAC-SHA256 as a PRF, RFC 2104)."""
    return hmac.new(master, f"linkage-pprl/{label}".encode(), hashlib.sha256).digest()
