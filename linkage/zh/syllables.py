"""Pinyin syllables: the syllable inventory, splitting romanized names, fuzzy (dialect) keys.

Imports pypinyin and this package's readings and surnames only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache

from pypinyin.contrib.tone_convert import to_normal
from pypinyin.pinyin_dict import pinyin_dict

from linkage.zh.readings import surname_reading
from linkage.zh.surnames import COMMON_SURNAMES, COMPOUND_SURNAMES

__all__ = [
    "COMPOUND_PINYIN",
    "SURNAME_PINYIN",
    "SYLLABLES",
    "fuzzy_pinyin",
    "split_syllables",
    "syllable_log_prob",
]


def _syllable_counts() -> Counter:
    """Toneless syllable -> number of GB2312 characters read that way (any heteronym).

    GB2312's 6,763 characters are the ones names are written with, so the count is a proxy for
    how likely a romanized syllable is in a name: "yu" (余鱼雨宇...) is read by dozens, "nv" by
    two. Vowel-less interjections (m, ng, hm) and ê are left out.
    """
    counts: Counter = Counter()
    # ~42,000 characters share ~1,500 toned readings: each reading is made toneless once
    # (to_normal per character cost ~1.2 s of every process's import)
    toneless: dict[str, str] = {}
    for cp, readings in pinyin_dict.items():
        ch = chr(cp)
        try:
            ch.encode("gb2312")
            weight = 1
        except UnicodeEncodeError:
            weight = 0
        syllables = set()
        for r in readings.split(","):
            s = toneless.get(r)
            if s is None:
                s = toneless[r] = to_normal(r)
            syllables.add(s)
        for s in syllables:
            if s.isascii() and any(c in "aeiouv" for c in s):
                counts[s] += weight
    return counts


_COUNTS = _syllable_counts()
SYLLABLES: frozenset[str] = frozenset(_COUNTS)
_TOTAL = sum(_COUNTS.values()) + len(_COUNTS)
_LOG_P = {s: math.log((c + 1) / _TOTAL) for s, c in _COUNTS.items()}

# Passport and ad-hoc spellings of ü (LYU since 2012 passports, lue) -> canonical v forms.
_SYLLABLE_ALIASES = {"lyu": "lv", "nyu": "nv", "lue": "lve", "nue": "nve", "lu:": "lv"}
_MAX_SYL = 6
# Pinyin orthography writes an apostrophe before a/o/e starting a later syllable (xi'an), so
# without one such a split is unlikely; the cost is about a factor of 20 in likelihood.
_VOWEL_START_COST = 3.0


def syllable_log_prob(syllable: str) -> float:
    """Log-likelihood of a toneless syllable in a name (see _syllable_counts); -inf if invalid."""
    return _LOG_P.get(syllable, -math.inf)


SURNAME_PINYIN: frozenset[str] = frozenset(
    {(surname_reading(c) or "").replace(" ", "") for c in COMMON_SURNAMES}
    | {(surname_reading(c) or "").replace(" ", "") for c in COMPOUND_SURNAMES}
) - {""}
COMPOUND_PINYIN: frozenset[str] = frozenset(
    (surname_reading(c) or "") for c in COMPOUND_SURNAMES
) - {""}


@lru_cache(maxsize=65536)
def _split_piece(piece: str) -> tuple[str, ...] | None:
    # pypinyin has no syllable splitter. Among all ways to cut the letters into valid syllables,
    # take the most likely one (sum of syllable log-likelihoods, a unigram model): "xinyu" is
    # xin + yu (both common in names), not xi + nyu (nü, read by two characters); fewer, more
    # common syllables win, so "xian" stays one syllable.
    n = len(piece)
    best: list[tuple[float, tuple[str, ...]] | None] = [None] * (n + 1)
    best[0] = (0.0, ())
    for i in range(n):
        cur = best[i]
        if cur is None:
            continue
        for j in range(i + 1, min(n, i + _MAX_SYL) + 1):
            syl = piece[i:j]
            syl = _SYLLABLE_ALIASES.get(syl, syl)
            logp = _LOG_P.get(syl)
            if logp is None:
                continue
            score = cur[0] + logp - (_VOWEL_START_COST if i > 0 and syl[0] in "aeo" else 0.0)
            if best[j] is None or score > best[j][0]:
                best[j] = (score, cur[1] + (syl,))
    return best[n][1] if best[n] is not None else None


def split_syllables(token: str) -> list[str] | None:
    """Split a romanized token ("Xiaoming", "xi'an") into pinyin syllables; None if not pinyin."""
    out: list[str] = []
    for piece in re.split(r"[-'\s]+", token.lower()):
        if not piece:
            continue
        syls = _split_piece(piece)
        if syls is None:
            return None
        out.extend(syls)
    return out or None


_HU_TO_F = {"hu": "fu", "hui": "fei", "hun": "fen"}


@lru_cache(maxsize=65536)
def _fuzzy_syllable(s: str) -> str:
    # Initials: zh/ch/sh -> z/c/s, l -> n, and hu- -> f- (黄 huang ~ 方 fang, 灰 hui ~ 飞 fei:
    # southern speakers swap f and hu-, not f and every h-, so 韩 han stays apart from 范 fan).
    if len(s) > 1 and s[0] in "zcs" and s[1] == "h":
        s = s[0] + s[1:].lstrip("h")
    elif s[0] == "l":
        s = "n" + s[1:]
    elif s.startswith("hu"):
        s = _HU_TO_F.get(s) or "f" + s[2:]
    # Finals: ang/eng/ing -> an/en/in (also iang, uang).
    if len(s) > 2 and s.endswith("ng") and s[-3] in "aei":
        s = s[:-1]
    return s


def fuzzy_pinyin(pinyin: str) -> str:
    """Fold dialect confusions (n/l, zh/z, ch/c, sh/s, -ang/-an, -eng/-en, -ing/-in, hu-/f-)."""
    return " ".join(_fuzzy_syllable(s) for s in pinyin.split())
