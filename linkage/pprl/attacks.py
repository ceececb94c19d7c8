"""Attacks on encodings that the tests and benchmarks run, so the threat model's claims are measured.

Pure numpy over encodings tables and plaintext a linkage unit could know; imports schema and
the other pprl modules only. These are evaluation tools, not part of any linkage protocol.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from linkage.pprl.bloom import decode_clks


def frequency_alignment(encodings: pd.Series, plain: pd.Series, top: int = 50) -> float:
    """Share of rows whose plaintext a frequency-alignment attack names correctly.

    The attacker (the linkage unit, no key) ranks distinct encodings by count and aligns them
    with the ranked distinct values of a population it knows (Kuzu et al. 2011), for the
    ``top`` most frequent encodings that occur at least twice.
    """
    enc_counts, val_counts = encodings.value_counts(), plain.value_counts()
    right = 0
    for rank in range(min(top, len(enc_counts), len(val_counts))):
        if enc_counts.iloc[rank] < 2:
            break
        chosen = (encodings == enc_counts.index[rank]).to_numpy()
        right += int((plain.to_numpy()[chosen] == val_counts.index[rank]).sum())
    return right / max(len(plain), 1)


def bit_signatures(
    encodings: pd.Series,
    *,
    top: int = 8,
    min_lift: float = 1.5,
    min_size: int = 4,
    max_fill: float = 0.5,
) -> list[np.ndarray]:
    """Rows of ``encodings`` that carry each of the ``top`` largest co-set bit groups.

    The first step of the pattern-mining attack of Christen et al. (2018), simplified: bits
    that one frequent token sets are set together more often than chance, so groups of mutually
    correlated bits are token signatures; a name character comes with the pinyin bigrams of its
    syllable, so its signature is among the largest. Columns set in more than ``max_fill`` of
    the rows are dropped first, which also drops the complement half of balanced filters.
    """
    present = np.array([isinstance(v, str) for v in encodings])
    rows = np.flatnonzero(present)
    if not len(rows):
        return []
    bits = np.unpackbits(decode_clks(encodings[present]), axis=1).astype(np.float32)
    n = len(bits)
    p = bits.mean(axis=0)
    keep = (p > 0.02) & (p < max_fill)
    both = (bits.T @ bits) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.nan_to_num(both / np.outer(p, p))
    lift[~keep] = 0
    lift[:, ~keep] = 0
    np.fill_diagonal(lift, 0)
    used = np.zeros(len(p), dtype=bool)
    groups = []
    for seed in np.argsort(-lift.max(axis=1)):
        if used[seed] or lift[seed].max() < min_lift:
            continue
        group = [seed]
        candidates = np.flatnonzero((lift[seed] >= min_lift) & ~used)
        for c in candidates[np.argsort(-lift[seed, candidates])]:
            if all(lift[c, g] >= min_lift for g in group):
                group.append(c)
        if len(group) >= min_size:
            used[group] = True
            groups.append(group)
    largest = sorted(groups, key=len, reverse=True)[:top]
    return [rows[np.flatnonzero(bits[:, g].min(axis=1) > 0)] for g in largest]


def exposed_characters(
    signatures: list[np.ndarray], names: pd.Series, *, top: int = 20, min_jaccard: float = 0.9
) -> dict[str, float]:
    """Which of the ``top`` most frequent name characters a signature singles out (evaluation).

    Uses the true ``names`` of the encoded rows: a character is exposed when the rows of one
    signature and the rows whose name holds it have Jaccard similarity ``>= min_jaccard``; the
    attacker then only has to label the signature, e.g. by its frequency rank. Returns
    {character: Jaccard}.
    """
    names = names.reset_index(drop=True).astype(str)
    chars = pd.Series([c for text in names for c in set(text)]).value_counts().index[:top]
    holders = {c: set(np.flatnonzero(names.str.contains(c, regex=False).to_numpy())) for c in chars}
    out: dict[str, float] = {}
    for rows in signatures:
        found = set(rows.tolist())
        for c, truth in holders.items():
            jaccard = len(found & truth) / max(len(found | truth), 1)
            if jaccard >= min_jaccard and jaccard > out.get(c, 0):
                out[c] = round(jaccard, 3)
    return out
