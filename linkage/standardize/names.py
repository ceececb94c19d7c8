"""Chinese name standardization: clean form, script, surname split, pinyin keys, quality flags.

Owns person-name cleaning only; imports schema and _distinct, never later stages or the store.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from linkage import schema
from linkage.standardize._distinct import map_distinct, map_one, typed_frame
from linkage.zh.readings import READING as _READING
from linkage.zh.readings import surname_reading as _surname_reading
from linkage.zh.romanization import (
    is_cantonese_syllable,
    surname_from_spelling,
    wade_giles_to_pinyin,
)
from linkage.zh.script import in_gbk, t2s_batch
from linkage.zh.surnames import COMPOUND_SURNAMES, split_surname
from linkage.zh.surnames import split_han as _split_han
from linkage.zh.syllables import COMPOUND_PINYIN as _COMPOUND_PINYIN
from linkage.zh.syllables import SURNAME_PINYIN as _SURNAME_PINYIN
from linkage.zh.syllables import fuzzy_pinyin, split_syllables

logger = logging.getLogger(__name__)

__all__ = ["FLAGS", "clean_name", "split_surname", "standardize_names", "to_pinyin"]

# Flag codes use the "name_" placeholder; standardize_names swaps in the real field prefix.
FLAGS: dict[str, str] = {
    "name_traditional": "traditional or variant characters were folded to simplified (informational)",
    "name_fullwidth": "full-width letters, digits, punctuation or U+3000 space were folded",
    "name_pua": "a Private Use Area code point stands in for a rare character; never link exactly",
    "name_question_mark": "?, U+FFFD, □ or 〓 stands in for a character; never link exactly",
    "name_masked": "masked for privacy (*, ×, 张某); never link exactly",
    "name_digits": "digits were removed from the name",
    "name_bracket": "a bracketed annotation was removed, e.g. 王芳(已婚)",
    "name_latin": "written in Latin letters (romanized); pinyin_alt holds the other order",
    "name_mixed_script": "mixes Han characters and Latin letters",
    "name_unparsed": "contains letters of another script (kana, hangul, Cyrillic); no pinyin",
    "name_non_pinyin": "a Latin token is neither pinyin nor a known Cantonese / Wade-Giles spelling",
    "name_other_romanization": "a Cantonese or Wade-Giles spelling was read into pinyin (CHAN -> chen)",
    "name_no_pinyin": "a Han character has no known reading; pinyin keys are null",
    "name_rare_char": "contains a Han character outside GBK (informational; may be substituted)",
    "name_title": "a title such as 先生 or 女士 stands in for the given name",
    "name_multiple": "several Han names in one field (张三,李四 or 张三/李四); the first was kept",
    "name_newborn": "a newborn placeholder such as 李娜之子 or 男婴",
    "name_clan_form": "a married woman written by surnames, 陈林氏 (husband's 陈, own 林) or "
    "黄氏: no given name; the own surname is kept, the name compared as missing",
    "name_placeholder": "a missing-value marker (不详, 无, NULL, 测试); set to null",
    "name_empty": "nothing left after cleaning; set to null",
}
_FLAG_CODES: tuple[str, ...] = tuple(k.removeprefix("name_") for k in FLAGS)
_FLAG_ORDER = {c: i for i, c in enumerate(_FLAG_CODES)}

# ---------------------------------------------------------------------------------------------
# Character classes (after NFKC)

_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U000323af"
_PUA = "\ue000-\uf8ff\U000f0000-\U0010ffff"
# Minority-name separators, including what clerks type when the keyboard has no middle dot:
# bullets and black dots (• ● ⚫ ⦁ ▪), the ideographic full stop, =, _ and dashes (中国新闻网
# 2016-01-27 on 分隔点 typed as ∙ • ・ ●). NFKC already maps － to -, ． and ﹒ to ., ･ to ・,
# ＝ to = and U+0387 to ·. A black square ■ is a separator only between two runs of two or more
# Han characters (below); elsewhere it stands in for a character a system could not store.
_SEP_CHARS = "·•.・‧-‐‑‒–—―∙⋅ᐧ⸱ꞏ_●⚫⦁▪◆◇。=∘⋄"
_SEPS = _SEP_CHARS.replace("-", "\\-")  # for use inside a regex character class
_LATIN_SEPS = _SEP_CHARS.replace("-", "")  # hyphen and apostrophe stay inside Latin tokens
_SLOT = _HAN + _PUA + "?*"  # one character position of a Han name

_HAN_RE = re.compile(f"[{_HAN}]")
_SLOT_RE = re.compile(f"[{_SLOT}]")
_ANY_SEP_RE = re.compile(f"[{_SEPS}]+")
_SPACE_OR_SEP_RE = re.compile(f"[\\s{_SEPS}]")
_LATIN_SPACE_RE = re.compile(f"[{_LATIN_SEPS}\\s]+")
_DASH_RUN_RE = re.compile(r"[-']{2,}")
_PUA_RE = re.compile(f"[{_PUA}]")
_LATIN_RE = re.compile("[A-Za-z]")
_REAL_RE = re.compile(f"[{_HAN}{_PUA}]")
_STAND_INS = (("?", "question_mark"), ("*", "masked"))
_OTHER_LETTER_RE = re.compile(f"[^\\W\\d_A-Za-z{_HAN}]")
_DIGIT_RE = re.compile(r"\d")
_BRACKET_RE = re.compile(r"[(\[{【〔〖<《「『][^)\]}】〕〗>》」』]*[)\]}】〕〗>》」』]")
# a bracketed newborn marker (高子楠(婴), 李娜（男婴）): clinics register a baby under its mother's
# name so; removed as a plain note it left the mother's name, and the baby linked to her
_BRACKET_NEWBORN_RE = re.compile(
    r"[(\[{【〔〖<《「『]\s*(?:之[子女婴儿孩宝]|[男女]?婴儿?|新生儿)\s*[)\]}】〕〗>》」』]"
)
# Everything that is not a letter, digit, space, separator, placeholder, PUA or apostrophe.
_NOISE_RE = re.compile(f"[^\\w\\s{_SEPS}{_PUA}?*']")
_NEWLINE_RE = re.compile(r"[\r\n]")
_FULLWIDTH_RE = re.compile("[\u3000\uff01-\uff5e\uff61-\uffef]")
_SEP_RUN_RE = re.compile(f"\\s*[{_SEPS}][{_SEPS}\\s]*")
_SLOT_SPACE_RE = re.compile(f"(?<=[{_SLOT}])\\s+(?=[{_SLOT}])")
_MIXED_TOKEN_RE = re.compile(f"[{_SLOT}]|[A-Za-z'\\-]+")
_FAST_RE = re.compile("[\u4e00-\u9fa5]{1,5}")  # plain GBK Han: the common case, no cleaning

# Stand-ins for characters a system could not store.
_PLACEHOLDER_MAP = str.maketrans({"\ufffd": "?", "□": "?", "■": "?", "〓": "?", "×": "*"})
_BOX_SEP_RE = re.compile(f"(?<=[{_HAN}]{{2}})\\s*[■□]\\s*(?=[{_HAN}]{{2}})")


def _latin_fold_table() -> dict[int, str]:
    """Map accented Latin letters to ASCII; ü (with any tone) becomes v as in pinyin input."""
    table: dict[int, str] = {}
    for cp in list(range(0xC0, 0x250)) + list(range(0x1E00, 0x1F00)):
        ch = chr(cp)
        base = "".join(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
        if base in ("u", "U") and "\u0308" in unicodedata.normalize("NFD", ch):
            table[cp] = "v" if base == "u" else "V"
        elif base.isascii() and base.isalpha() and len(base) == 1:
            table[cp] = base
    return table


_LATIN_FOLD = _latin_fold_table()

# Placeholders a registry types when the name is unknown; linking on them joins strangers.
_MISSING_MARKERS = frozenset(
    "无 不详 未知 暂无 空 待定 未填 不明 无名 无名氏 某 某某 测试 test null none nan na nil "
    "unknown xxx x".split()
)
_TITLES = ("先生", "女士", "小姐", "太太", "老师", "师傅", "阿姨")
# 宝宝 ("baby") as a given name is what a clinic types before the child is named (彭宝宝)
_NEWBORN_RE = re.compile("(之[子女婴儿孩宝]|男婴|女婴|婴儿?|新生儿|^.{0,2}宝宝)$")

# ---------------------------------------------------------------------------------------------
# Cleaning and parsing of one distinct value

# Result layout, in this order: clean, script, surname, given, is_minority, pinyin, pinyin_alt,
# initials, fuzzy, surname_pinyin, surname_fuzzy, flags (tuple of codes).
_SUFFIXES = (
    "clean",
    "script",
    "surname",
    "given",
    "is_minority",
    "pinyin",
    "pinyin_alt",
    "initials",
    "fuzzy",
    "surname_pinyin",
    "surname_fuzzy",
)
_FLAGS_AT = len(_SUFFIXES)
_NULL = (None, "empty", None, None, False, None, None, None, None, None, None, ())


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# separators of a list of names; each part a plain Han name of two to four characters (a
# romanized "ZHANG, Wei" keeps its comma as the surname's separator)
_LIST_SEP_RE = re.compile(r"[,;/、|]")
_HAN_NAME_RE = re.compile(r"[\u4e00-\u9fff]{2,4}")


def _precleaned(raw: str) -> tuple[str, str, bool, set[str]]:
    """NFKC and structural cleaning before t2s: (text, kind, is_minority, flags)."""
    flags: set[str] = set()
    if _FAST_RE.fullmatch(raw):
        return raw, "han", False, flags
    if _FULLWIDTH_RE.search(raw):
        flags.add("fullwidth")
    s = unicodedata.normalize("NFKC", raw)
    if "■" in s or "□" in s:
        s = _BOX_SEP_RE.sub("·", s)
    s = s.translate(_PLACEHOLDER_MAP).translate(_LATIN_FOLD)
    # control characters (from broken exports) act as spaces, so stripping sees what follows
    s = _CONTROL_RE.sub(" ", s.replace("\u2019", "'"))
    if _BRACKET_RE.search(s):
        flags.add("bracket")
        if _BRACKET_NEWBORN_RE.search(s):
            flags.add("newborn")
        s = _BRACKET_RE.sub(" ", s)
    if _LIST_SEP_RE.search(s):
        parts = [p.strip() for p in _LIST_SEP_RE.split(s)]
        if len(parts) > 1 and all(_HAN_NAME_RE.fullmatch(p) for p in parts):
            # two people typed into one field: the first is the record's (never 张三李四)
            flags.add("multiple")
            s = parts[0]
    if _DIGIT_RE.search(s):
        flags.add("digits")
        s = _DIGIT_RE.sub("", s)
    s = _NOISE_RE.sub("", s)
    s = s.strip(_SEP_CHARS + "' \t\r\n\f\v")
    if not s:
        return "", "empty", False, flags
    has_slot = bool(_SLOT_RE.search(s))
    has_latin = bool(_LATIN_RE.search(s))
    if _OTHER_LETTER_RE.search(s):
        flags.add("unparsed")
        return " ".join(s.split()), "other", False, flags
    if has_latin and not has_slot:
        s = _DASH_RUN_RE.sub("-", _LATIN_SPACE_RE.sub(" ", s))
        tokens = [t.strip("-'") for t in s.split()]
        return " ".join(t for t in tokens if t), "latin", False, flags
    if has_latin:
        s = " ".join(_ANY_SEP_RE.sub(" ", s).split())
        return _SLOT_SPACE_RE.sub("", s), "mixed", False, flags
    # Han characters (and stand-ins) only: explicit separators make a minority name; spaces do
    # only between long parts (买买提 艾力), since clerks also type 张 伟 and 欧阳 修.
    t = _SEP_RUN_RE.sub("·", s.replace("'", ""))
    if "·" in t:
        parts = ["".join(p.split()) for p in t.split("·")]
        return "·".join(parts), "han", True, flags
    parts = t.split()
    if len(parts) >= 2 and min(map(len, parts)) >= 2 and sum(map(len, parts)) >= 5:
        return "·".join(parts), "han", True, flags
    return "".join(parts), "han", False, flags


def _flag_key(text: str) -> str:
    return _SPACE_OR_SEP_RE.sub("", text).lower()


def _keys(pinyin: str | None, surname_pinyin: str | None) -> tuple:
    if pinyin is None:
        initials = fuzzy = None
    else:
        initials = "".join(s[0] for s in pinyin.split())
        fuzzy = fuzzy_pinyin(pinyin)
    surname_fuzzy = None if surname_pinyin is None else fuzzy_pinyin(surname_pinyin)
    return initials, fuzzy, surname_fuzzy


_Keys = tuple[str, str, str]  # pinyin, initials, fuzzy
_CACHE_MAX = 1_000_000  # bound on the per-text key caches below


class _TextKeys(dict):
    """Han text -> keys from ordinary readings ("·" skipped), or None if a character has none."""

    def __missing__(self, text: str) -> _Keys | None:
        syls = [_READING[c] for c in text if c != "·"]
        keys = None
        if None not in syls:
            pinyin = " ".join(syls)
            keys = (pinyin, "".join(s[0] for s in syls), fuzzy_pinyin(pinyin))
        if len(self) < _CACHE_MAX:
            self[text] = keys
        return keys


class _SurnameKeys(dict):
    """Surname -> keys from its surname reading, or None."""

    def __missing__(self, surname: str) -> _Keys | None:
        pinyin = _surname_reading(surname)
        keys = None
        if pinyin is not None:
            keys = (pinyin, "".join(s[0] for s in pinyin.split()), fuzzy_pinyin(pinyin))
        self[surname] = keys
        return keys


_TEXT_KEYS = _TextKeys()
_SURNAME_KEYS = _SurnameKeys()


def _finish_han(clean: str, is_minority: bool, flags: set[str]) -> tuple:
    if "某" in clean[1:]:
        flags.add("masked")
    if not _FAST_RE.fullmatch(clean):  # plain GBK Han needs none of these checks
        if _PUA_RE.search(clean):
            flags.add("pua")
        if "?" in clean:
            flags.add("question_mark")
        if "*" in clean:
            flags.add("masked")
        if any(not in_gbk(c) and _HAN_RE.match(c) for c in clean):
            flags.add("rare_char")
        if any(_READING[c] is None and _HAN_RE.match(c) for c in clean):
            flags.add("no_pinyin")
    if is_minority:
        mk = _TEXT_KEYS[clean]
        pinyin, initials, fuzzy = mk if mk is not None else (None, None, None)
        return (clean, "han", None, None, True, pinyin, None, initials, fuzzy, None, None, flags)
    if _NEWBORN_RE.search(clean):
        flags.add("newborn")
    surname, given = _split_han(clean)
    if given in _TITLES:
        flags.add("title")
    elif given.endswith("氏") and (len(given) <= 2 or given[:-1] in COMPOUND_SURNAMES):
        # 陈林氏, 黄氏: a married woman written by husband's and own surname, no given name;
        # the own surname is the one that stays the person's (blocking reads it)
        flags.add("clan_form")
        surname, given = (surname if given == "氏" else given[:-1]), ""
    sk = _SURNAME_KEYS[surname]
    gk = _TEXT_KEYS[given] if given else ("", "", "")
    if sk is None or gk is None:
        pinyin = initials = fuzzy = None
    elif given:
        pinyin, initials, fuzzy = sk[0] + " " + gk[0], sk[1] + gk[1], sk[2] + " " + gk[2]
    else:
        pinyin, initials, fuzzy = sk
    return (
        clean,
        "han",
        surname,
        given or None,
        False,
        pinyin,
        None,
        initials,
        fuzzy,
        None if sk is None else sk[0],
        None if sk is None else sk[2],
        flags,
    )


def _is_surname_token(token: str) -> bool:
    key = re.sub(r"[-']", "", token).lower()
    return key in _SURNAME_PINYIN or surname_from_spelling(key) is not None


def _latin_surname_index(tokens: list[str]) -> int:
    caps = [i for i, t in enumerate(tokens) if t.isupper() and len(t) > 1]
    if len(caps) == 1 and len(tokens) > 1:
        return caps[0]  # ZHANG Wei / Wei ZHANG: the all-caps token is the surname
    if not _is_surname_token(tokens[0]) and _is_surname_token(tokens[-1]):
        return len(tokens) - 1
    return 0


def _given_syllables(token: str, other: bool, flags: set[str]) -> list[str]:
    """Syllables of a given-name token: each hyphen piece as pinyin when it is pinyin, else as
    Wade-Giles (Chih-ming -> zhi ming); Cantonese given names cannot be read back (one spelling
    stands for many Mandarin syllables) and stay as spelled, flagged non_pinyin."""
    out: list[str] = []
    if other and ("'" in token or "\u2019" in token):
        # an apostrophe marks Wade-Giles aspiration (Ch'en chen, T'ing ting), not a break
        wg = wade_giles_to_pinyin(token)
        if wg is not None:
            flags.add("other_romanization")
            return wg
    pieces = [p for p in re.split(r"[-']+", token) if p]
    if other and len(pieces) > 1:
        # a hyphenated Taiwan given name with a piece only Wade-Giles reads (Po-chün, chün):
        # every piece is Wade-Giles then (Po is bo there, not pinyin po)
        wg_pieces = [wade_giles_to_pinyin(p) for p in pieces]
        if all(wg_pieces) and any(split_syllables(p) is None for p in pieces):
            flags.add("other_romanization")
            return [syl for w in wg_pieces for syl in w]
    for piece in pieces:
        # KUEN is one Cantonese syllable, not pinyin ku+en (pinyin would write ku'en)
        split = None if is_cantonese_syllable(piece) else split_syllables(piece)
        if split is None and other:
            split = wade_giles_to_pinyin(piece)
            if split is not None:
                flags.add("other_romanization")
        if split is None:
            flags.add("non_pinyin")
            split = [piece.lower()]
        out.extend(split)
    return out


def _surname_syllables(token: str, other: bool, flags: set[str]) -> list[str]:
    """Syllables of the surname token, reading a Cantonese / Wade-Giles spelling (CHAN, HSU,
    CHEUNG) as its surname's pinyin when the token is no pinyin, its pinyin is no common
    surname's (chan, chou), or the name is written in another romanization anyway."""
    if "'" in token or "\u2019" in token:  # T'ang: aspirated, 唐 tang, not Tang 邓 deng
        wg = wade_giles_to_pinyin(token)
        if wg is not None:
            flags.add("other_romanization")
            return wg
    split = split_syllables(token)
    mapped = surname_from_spelling(token)
    if mapped is not None and (split is None or other or "".join(split) not in _SURNAME_PINYIN):
        flags.add("other_romanization")
        return mapped.split()
    return _given_syllables(token, True, flags)


def _finish_latin(clean: str, flags: set[str]) -> tuple:
    flags.add("latin")
    tokens = clean.split()
    # Pinyin passports never hyphenate a given name and use only pinyin syllables: a hyphen or
    # a token that is no pinyin marks a Hong Kong / Taiwan style name.
    other = any("-" in t for t in tokens[1:]) or any(
        split_syllables(t) is None or is_cantonese_syllable(t) for t in tokens
    )
    if len(tokens) > 1:
        idx = _latin_surname_index(tokens)
        sur = _surname_syllables(tokens[idx], other, flags)
        given = [
            s for i, t in enumerate(tokens) if i != idx for s in _given_syllables(t, other, flags)
        ]
    else:
        # one joined token (zhangwei): surname by syllables, compound first, else the end
        one = _given_syllables(tokens[0], other, flags)
        if len(one) >= 3 and " ".join(one[:2]) in _COMPOUND_PINYIN:
            sur, given = one[:2], one[2:]
        elif len(one) >= 2 and one[0] not in _SURNAME_PINYIN and one[-1] in _SURNAME_PINYIN:
            sur, given = one[-1:], one[:-1]
        else:
            sur, given = one[:1], one[1:]
    pinyin = " ".join(sur + given)
    alt = " ".join(given + sur) if given else None
    surname_pinyin = " ".join(sur)
    initials, fuzzy, surname_fuzzy = _keys(pinyin, surname_pinyin)
    return (
        clean,
        "latin",
        None,
        None,
        False,
        pinyin,
        alt,
        initials,
        fuzzy,
        surname_pinyin,
        surname_fuzzy,
        flags,
    )


def _finish_mixed(clean: str, flags: set[str]) -> tuple:
    flags.add("mixed_script")
    if _PUA_RE.search(clean):
        flags.add("pua")
    if "?" in clean:
        flags.add("question_mark")
    if "*" in clean:
        flags.add("masked")
    syls: list[str | None] = []
    for tok in _MIXED_TOKEN_RE.findall(clean):
        if _LATIN_RE.search(tok):
            split = split_syllables(tok)
            if split is None:
                flags.add("non_pinyin")
                split = [re.sub(r"[-']", "", tok).lower()]
            syls.extend(split)
        elif tok.strip("-'"):
            syls.append(_READING[tok])
    pinyin = None if None in syls or not syls else " ".join(syls)
    initials, fuzzy, _ = _keys(pinyin, None)
    return (clean, "mixed", None, None, False, pinyin, None, initials, fuzzy, None, None, flags)


def _finish(text: str, kind: str, is_minority: bool, flags: set[str], raw: str) -> tuple:
    """Parse a cleaned, simplified value into the result layout."""
    if not text:
        if not raw.strip():
            return _NULL  # blank: simply missing
        flags.add("empty")
        return (*_NULL[:_FLAGS_AT], flags)
    if (text if kind == "han" and not is_minority else _flag_key(text)) in _MISSING_MARKERS:
        flags.add("placeholder")
        return (*_NULL[:_FLAGS_AT], flags)
    if kind == "han":
        if not _REAL_RE.search(text):  # only stand-ins (??, **): nothing left to compare
            flags.update(("empty", *(f for m, f in _STAND_INS if m in text)))
            return (*_NULL[:_FLAGS_AT], flags)
        return _finish_han(text, is_minority, flags)
    if kind == "latin":
        return _finish_latin(text, flags)
    if kind == "mixed":
        return _finish_mixed(text, flags)
    return (text, "mixed", None, None, False, None, None, None, None, None, None, flags)


@contextmanager
def _gc_paused() -> Iterator[None]:
    # The per-distinct loops allocate millions of small acyclic tuples; with the caller's large
    # tables alive, the cyclic collector's full passes cost 2-4x the work itself.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _standardize_distinct(values: Sequence[object]) -> list[tuple]:
    """Full result tuples for distinct raw values (non-null)."""
    with _gc_paused():
        raws = [v if isinstance(v, str) else str(v) for v in values]
        pre = [
            _precleaned(r if "\n" not in r and "\r" not in r else _NEWLINE_RE.sub(" ", r))
            for r in raws
        ]
        simplified = t2s_batch([p[0] for p in pre])
        out = []
        for raw, (text, kind, minority, flags), simp in zip(raws, pre, simplified, strict=True):
            if simp != text:
                flags.add("traditional")
            out.append(_finish(simp, kind, minority, flags, raw))
    return out


# ---------------------------------------------------------------------------------------------
# Public API


def _is_missing(s: object) -> bool:
    return s is None or s is pd.NA or (isinstance(s, float) and s != s)


def clean_name(s: object) -> str | None:
    """Cleaned, simplified form of one name; None when missing or nothing usable is left."""
    if _is_missing(s):
        return None
    return _standardize_distinct([s])[0][0]


def to_pinyin(s: object) -> str:
    """Toneless pinyin of one name, syllables space-joined, surname reading applied; "" if none."""
    if _is_missing(s):
        return ""
    return _standardize_distinct([s])[0][5] or ""


def _names_frame(distinct: Sequence[str], field: str) -> pd.DataFrame:
    """The derived columns of ``field`` for distinct raw names, one row each, in order
    (module level so that a worker process can run it)."""
    return typed_frame(_names_columns(distinct, field))


def _names_columns(distinct: Sequence[str], field: str) -> dict[str, np.ndarray]:
    """:func:`_names_frame`'s columns as numpy arrays (no frame: one query name)."""
    prefix = f"{field}_"
    flag_text: dict[frozenset[str], str] = {}
    rows = _standardize_distinct(distinct)
    columns = list(zip(*rows, strict=True)) if rows else [()] * (_FLAGS_AT + 1)
    data = {}
    for suffix in schema.NAME_DERIVED_SUFFIXES:
        # typed arrays up front: pandas' inference over 200,000 objects costs seconds
        dtype = bool if suffix == "is_minority" else object
        data[schema.name_col(field, suffix)] = np.array(
            columns[_SUFFIXES.index(suffix)], dtype=dtype
        )
    texts = []
    for flags in columns[_FLAGS_AT]:
        if not flags:
            texts.append("")
            continue
        key = frozenset(flags)
        if key not in flag_text:
            ordered = sorted(key, key=_FLAG_ORDER.__getitem__)
            flag_text[key] = schema.QUALITY_SEP.join(prefix + c for c in ordered)
        texts.append(flag_text[key])
    data[schema.QUALITY_FLAGS] = np.array(texts, dtype=object)
    return data


def distinct_parser(field: str = "name") -> Callable[[Sequence[str]], pd.DataFrame]:
    """The function :func:`standardize_names` maps over a column's distinct values (what
    ``_distinct.send_ahead`` is given to start a worker on them early)."""
    return functools.partial(_names_frame, field=field)


def standardize_names(values: pd.Series, field: str = "name") -> pd.DataFrame:
    """Derived name columns plus quality flags, one row per input row, same index."""
    null_row = {
        schema.name_col(field, "script"): "empty",
        schema.name_col(field, "is_minority"): False,
    }
    out = map_distinct(values, distinct_parser(field), null_row=null_row)
    logger.debug("standardized %d %s values", len(values), field)
    return out


def standardize_name(value: str, field: str = "name") -> dict:
    """:func:`standardize_names` of one non-null value, as a dict of column -> value."""
    return map_one(value, functools.partial(_names_columns, field=field))
