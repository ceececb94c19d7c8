"""Chinese name standardization: clean form, script, surname split, pinyin keys, quality flags.

Owns person-name cleaning only; imports schema and _distinct, never later stages or the store.
"""

from __future__ import annotations

import gc
import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import opencc
import pandas as pd
from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_normal
from pypinyin.pinyin_dict import pinyin_dict

from linkage import schema
from linkage.standardize._distinct import map_distinct

logger = logging.getLogger(__name__)

__all__ = [
    "COMPOUND_SURNAMES",
    "FLAGS",
    "LOOKALIKE",
    "SURNAME_READINGS",
    "clean_name",
    "fuzzy_pinyin",
    "lookalike_equal",
    "split_surname",
    "split_syllables",
    "standardize_names",
    "to_pinyin",
]

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
    "name_non_pinyin": "a Latin token is not pinyin (Wade-Giles, Cantonese, foreign)",
    "name_no_pinyin": "a Han character has no known reading; pinyin keys are null",
    "name_rare_char": "contains a Han character outside GBK (informational; may be substituted)",
    "name_title": "a title such as 先生 or 女士 stands in for the given name",
    "name_newborn": "a newborn placeholder such as 李娜之子 or 男婴",
    "name_placeholder": "a missing-value marker (不详, 无, NULL, 测试); set to null",
    "name_empty": "nothing left after cleaning; set to null",
}
_FLAG_CODES: tuple[str, ...] = tuple(k.removeprefix("name_") for k in FLAGS)
_FLAG_ORDER = {c: i for i, c in enumerate(_FLAG_CODES)}

# ---------------------------------------------------------------------------------------------
# Character classes (after NFKC)

_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U000323af"
_PUA = "\ue000-\uf8ff\U000f0000-\U0010ffff"
# Minority-name separators; NFKC already maps － to -, ． to ., ･ to ・ and U+0387 to ·.
_SEP_CHARS = "·•.・‧-‐‑‒–—―∙⋅ᐧ⸱ꞏ_"
_SEPS = _SEP_CHARS.replace("-", "\\-")  # for use inside a regex character class
_LATIN_SEPS = _SEP_CHARS.replace("-", "")  # hyphen and apostrophe stay inside Latin tokens
_SLOT = _HAN + _PUA + "?*"  # one character position of a Han name

_HAN_RE = re.compile(f"[{_HAN}]")
_SLOT_RE = re.compile(f"[{_SLOT}]")
_ALL_SLOTS_RE = re.compile(f"[{_SLOT}]+")
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

# ---------------------------------------------------------------------------------------------
# Traditional -> simplified

_T2S = opencc.OpenCC("t2s")
# Variants OpenCC t2s leaves alone (checked with opencc 1.4.2); folded so both spellings compare.
_FOLD_MAP = str.maketrans(
    {
        "锺": "钟",
        "甯": "宁",
        "衞": "卫",
        "靑": "青",
        "兪": "俞",
        "姫": "姬",
        "呉": "吴",
        "裵": "裴",
        "凃": "涂",
        "煕": "熙",
        "熈": "熙",
        "冨": "富",
        "淸": "清",
        "緖": "绪",
        "吿": "告",
        "朶": "朵",
        "壻": "婿",
        "鬰": "郁",
        "秊": "年",
        "毉": "医",
        "厐": "庞",
        "蔴": "麻",
    }
)
# t2s turns 乾 (qian, common in names) into 干 (gan); shield it with a Unicode noncharacter,
# which the noise filter has already removed from every input.
_PROTECT = str.maketrans({"乾": "\ufdd0"})
_UNPROTECT = str.maketrans({"\ufdd0": "乾"})


def _t2s_one(text: str) -> str:
    return _T2S.convert(text.translate(_PROTECT)).translate(_UNPROTECT).translate(_FOLD_MAP)


def _t2s_batch(texts: list[str]) -> list[str]:
    """Simplify newline-free texts in one OpenCC call (3x faster than one call per name)."""
    if not texts:
        return []
    joined = "\n".join(texts)
    protect = "乾" in joined
    converted = _T2S.convert(joined.translate(_PROTECT) if protect else joined)
    if protect:
        converted = converted.translate(_UNPROTECT)
    converted = converted.translate(_FOLD_MAP)
    if converted == joined:
        return texts
    out = converted.split("\n")
    if len(out) != len(texts):  # cannot happen for newline-free input; stay safe anyway
        out = [_t2s_one(t) for t in texts]
    # t2s is not idempotent for a few characters (薴 -> 苧 -> 苎): iterate the changed ones
    for i, (text, after) in enumerate(zip(texts, out, strict=True)):
        before = text
        for _ in range(4):
            if after == before:
                break
            before, after = after, _t2s_one(after)
        out[i] = _keep_bmp(text, after)
    return out


def _keep_bmp(text: str, simplified: str) -> str:
    # OpenCC simplifies some rare traditional characters to Extension B-G forms (霣 -> U+2B565)
    # that pypinyin cannot read and GBK systems cannot store: keep the original there.
    if len(text) != len(simplified) or simplified.isascii():
        return simplified
    return "".join(
        t if ord(s) > 0xFFFF and ord(t) <= 0xFFFF else s
        for t, s in zip(text, simplified, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# Surnames and readings

# pypinyin has no surname mode: per character it gives the commonest reading (曾 ceng, 单 dan),
# but a clerk typing a surname types its surname reading (zeng, shan), so homophone typos and
# romanized records follow it. Every entry is one of pypinyin's heteronyms (checked in tests).
# 黑 is left out: pypinyin lists only "hei", which is also the standard surname reading.
SURNAME_READINGS: dict[str, str] = {
    "曾": "zeng",
    "单": "shan",
    "解": "xie",
    "仇": "qiu",
    "区": "ou",
    "查": "zha",
    "朴": "piao",
    "盖": "ge",
    "翟": "zhai",
    "覃": "qin",
    "乐": "yue",
    "缪": "miao",
    "繁": "po",
    "员": "yun",
    "秘": "bi",
    "重": "chong",
    "召": "shao",
    "隗": "wei",
    "种": "chong",
    "折": "she",
    "阚": "kan",
    "能": "nai",
    "句": "gou",
    "藏": "zang",
    "薄": "bo",
    "洗": "xian",
    "祭": "zhai",
    "奇": "ji",
    "蕃": "pi",
    "便": "pian",
    "都": "du",
    "卜": "bu",
    "乜": "nie",
    "蔚": "yu",
    "适": "kuo",
    "佴": "nai",
    "粘": "nian",
    "长": "chang",
    "炅": "gui",
    "么": "yao",
    "尉迟": "yu chi",
    "万俟": "mo qi",
    "长孙": "zhang sun",
    "单于": "chan yu",
    "澹台": "tan tai",
}
# Given-name characters whose pypinyin single-character default is not the reading used in
# names (长 defaults to zhang, 晟 to cheng); also heteronyms, checked in tests.
_GIVEN_READINGS: dict[str, str] = {"长": "chang", "晟": "sheng", "卜": "bu"}
# Readings of name characters pypinyin 0.55 lacks (𠮷 is the 土-top variant of 吉).
_EXTRA_READINGS: dict[str, str] = {"𠮷": "ji"}

# Compound surnames from the Hundred Family Surnames and modern registers. Left out on purpose:
# pairs whose second character is a common given-name character after a common single surname
# (宗政, 乐正, 谷梁, 岳帅, 年爱, 言福, 晋楚, 闫法, 涂钦): 宗政明 is far more often 宗 + 政明.
COMPOUND_SURNAMES: frozenset[str] = frozenset(
    """欧阳 司马 诸葛 上官 东方 皇甫 尉迟 令狐 长孙 万俟 夏侯 慕容 司徒 公孙 宇文 轩辕 端木 西门
    南宫 独孤 呼延 申屠 闻人 赫连 公羊 澹台 公冶 濮阳 淳于 单于 太叔 仲孙 钟离 鲜于 闾丘 司空
    亓官 司寇 仉督 子车 颛孙 巫马 公西 漆雕 壤驷 公良 拓跋 夹谷 宰父 段干 百里 东郭 南门 羊舌
    微生 梁丘 左丘 东门 第五 归海 公户 公玉 公仪 公乘 司空 第一 即墨 尉缭 呼衍 完颜 耶律
    """.split()
)
# Commonest single surnames (about 90% of the population): used only to decide the order of
# romanized names, so a short list beats the full one (nearly every syllable is some surname).
_COMMON_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞"
    "左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕"
    "屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧"
    "闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)

# Placeholders a registry types when the name is unknown; linking on them joins strangers.
_MISSING_MARKERS = frozenset(
    "无 不详 未知 暂无 空 待定 未填 不明 无名 无名氏 某 某某 测试 test null none nan na nil "
    "unknown xxx x".split()
)
_TITLES = ("先生", "女士", "小姐", "太太", "老师", "师傅", "阿姨")
_NEWBORN_RE = re.compile("(之[子女婴儿孩宝]|男婴|女婴|婴儿?|新生儿)$")

# ---------------------------------------------------------------------------------------------
# Per-character caches (pure memoization, deterministic)


class _Readings(dict):
    """Character -> toneless reading (ü as v), or None; filled on first use."""

    def __missing__(self, ch: str) -> str | None:
        reading: str | None
        if ch in _GIVEN_READINGS:
            reading = _GIVEN_READINGS[ch]
        elif ch in _EXTRA_READINGS:
            reading = _EXTRA_READINGS[ch]
        else:
            reading = lazy_pinyin(ch, style=Style.NORMAL, errors=lambda _: [""])[0]
            if not (reading.isascii() and reading.isalpha()):
                reading = None
        self[ch] = reading
        return reading


class _InGbk(dict):
    """Character -> whether GBK can store it."""

    def __missing__(self, ch: str) -> bool:
        try:
            ch.encode("gbk")
            ok = True
        except UnicodeEncodeError:
            ok = False
        self[ch] = ok
        return ok


_READING = _Readings()
_IN_GBK = _InGbk()


def in_gbk(ch: str) -> bool:
    """True when GBK (the encoding of many registry exports) can store the character."""
    return _IN_GBK[ch]


def _surname_reading(surname: str) -> str | None:
    """Surname reading: the table first, else the characters' ordinary readings."""
    if surname in SURNAME_READINGS:
        return SURNAME_READINGS[surname]
    parts = [_READING[c] for c in surname]
    return None if None in parts else " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Pinyin syllables of romanized names

# All toneless syllables pypinyin knows, minus vowel-less interjections (m, ng, hm) and ê.
_SYLLABLES: frozenset[str] = frozenset(
    s
    for v in pinyin_dict.values()
    for s in (to_normal(r) for r in v.split(","))
    if s.isascii() and any(c in "aeiouv" for c in s)
)
# Passport and ad-hoc spellings of ü (LYU since 2012 passports, lue) -> canonical v forms.
_SYLLABLE_ALIASES = {"lyu": "lv", "nyu": "nv", "lue": "lve", "nue": "nve", "lu:": "lv"}
_MAX_SYL = 6
_SURNAME_PINYIN: frozenset[str] = frozenset(
    {(_surname_reading(c) or "").replace(" ", "") for c in _COMMON_SURNAMES}
    | {(_surname_reading(c) or "").replace(" ", "") for c in COMPOUND_SURNAMES}
) - {""}
_COMPOUND_PINYIN: frozenset[str] = frozenset(
    (_surname_reading(c) or "") for c in COMPOUND_SURNAMES
) - {""}


@lru_cache(maxsize=65536)
def _split_piece(piece: str) -> tuple[str, ...] | None:
    # pypinyin has no syllable splitter, so a small dynamic programme: fewest syllables, then
    # fewest later syllables starting with a vowel (pinyin writes xi'an, so "xian" is one).
    n = len(piece)
    best: list[tuple[int, int, tuple[str, ...]] | None] = [None] * (n + 1)
    best[0] = (0, 0, ())
    for i in range(n):
        cur = best[i]
        if cur is None:
            continue
        for j in range(i + 1, min(n, i + _MAX_SYL) + 1):
            syl = piece[i:j]
            syl = _SYLLABLE_ALIASES.get(syl, syl)
            if syl not in _SYLLABLES:
                continue
            cand = (cur[0] + 1, cur[1] + (i > 0 and syl[0] in "aeo"), cur[2] + (syl,))
            if best[j] is None or cand[:2] < best[j][:2]:
                best[j] = cand
    return best[n][2] if best[n] is not None else None


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


# ---------------------------------------------------------------------------------------------
# Fuzzy pinyin

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


# ---------------------------------------------------------------------------------------------
# Look-alike characters

# Hand-written: no dependency-light library ships a shape-confusion table (pycorrector's pulls
# in transformers; char-similar-z's licence is unchecked). One group per line; any two
# characters of a group are look-alikes. Homophones are left to the pinyin keys.
_LOOKALIKE_GROUPS = """
王玉壬主 未末 己已巳 侯候 戊戌戍 土士 日曰 人入八 大太犬 刀力 千干于 田由甲申 天夫 免兔
折拆 析折 汩汨 茶荼 杨扬汤 晴睛情请清 娟绢鹃 玲怜伶铃 红虹江 丽俪 明朋 兵乒乓 斌彬 李季
梁粱 栗粟 冶治 汪江 凤风 乌鸟 今令 牛午 宋宗 昊吴 颖颍 赢嬴 辨辩辫 刺剌 母毋 贝见 白自
目且 厂广 斤斥 亳毫 孑子 拔拨 宇字 仑仓 历厉 陈阵 徐涂 吕昌 钱线 卫刀 华毕 冯马 尤龙 丹舟
祗祇 姗珊栅 媛嫒 钊钏 峰锋 俊骏峻竣 琪祺淇棋 婷亭停 凯恺铠 辉晖 伟纬玮炜 健建键 萍苹
娇骄桥 秀季 洁浩 沽洁 佳住 崔雀 郁都 暑署 候堠 准淮 兰当 免晚 夭天 幻幼 眉媚 妹姝 佩珮
波泼 平半 海梅 晶磊 亮高 雪雷 勇男 伟讳 军车 敏敢 琳淋 英荚 芳劳 刚冈 慧彗 娜挪 丽两
"""
LOOKALIKE: dict[str, frozenset[str]] = {}
for _group in _LOOKALIKE_GROUPS.split():
    for _ch in _group:
        LOOKALIKE[_ch] = LOOKALIKE.get(_ch, frozenset()) | (frozenset(_group) - {_ch})
del _group, _ch


def lookalike_equal(a: str | None, b: str | None) -> bool:
    """True when a and b have the same length and differ only in look-alike characters."""
    if a is None or b is None or len(a) != len(b):
        return False
    return all(x == y or y in LOOKALIKE.get(x, ()) for x, y in zip(a, b, strict=True))


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


def _precleaned(raw: str) -> tuple[str, str, bool, set[str]]:
    """NFKC and structural cleaning before t2s: (text, kind, is_minority, flags)."""
    flags: set[str] = set()
    if _FAST_RE.fullmatch(raw):
        return raw, "han", False, flags
    if _FULLWIDTH_RE.search(raw):
        flags.add("fullwidth")
    s = unicodedata.normalize("NFKC", raw).translate(_PLACEHOLDER_MAP).translate(_LATIN_FOLD)
    # control characters (from broken exports) act as spaces, so stripping sees what follows
    s = _CONTROL_RE.sub(" ", s.replace("\u2019", "'"))
    if _BRACKET_RE.search(s):
        flags.add("bracket")
        s = _BRACKET_RE.sub(" ", s)
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


def _split_han(clean: str) -> tuple[str, str]:
    if len(clean) >= 3 and clean[:2] in COMPOUND_SURNAMES:
        return clean[:2], clean[2:]
    return clean[:1], clean[1:]


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
        if any(not _IN_GBK[c] and _HAN_RE.match(c) for c in clean):
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


def _latin_surname_index(tokens: list[str]) -> int:
    caps = [i for i, t in enumerate(tokens) if t.isupper() and len(t) > 1]
    if len(caps) == 1 and len(tokens) > 1:
        return caps[0]  # ZHANG Wei / Wei ZHANG: the all-caps token is the surname
    first = re.sub(r"[-']", "", tokens[0]).lower()
    last = re.sub(r"[-']", "", tokens[-1]).lower()
    if first not in _SURNAME_PINYIN and last in _SURNAME_PINYIN:
        return len(tokens) - 1
    return 0


def _finish_latin(clean: str, flags: set[str]) -> tuple:
    flags.add("latin")
    tokens = clean.split()
    syls: list[list[str]] = []
    for tok in tokens:
        split = split_syllables(tok)
        if split is None:
            flags.add("non_pinyin")
            split = [re.sub(r"[-']", "", tok).lower()]
        syls.append(split)
    if len(tokens) > 1:
        idx = _latin_surname_index(tokens)
        sur = syls[idx]
        given = [s for i, t in enumerate(syls) if i != idx for s in t]
    else:
        # one joined token (zhangwei): surname by syllables, compound first, else the end
        one = syls[0]
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
        simplified = _t2s_batch([p[0] for p in pre])
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


def split_surname(clean: str) -> tuple[str, str]:
    """Split a cleaned Han name into (surname, given); ("", clean) for minority or Latin names."""
    if not clean:
        return "", ""
    if "·" in clean or not _ALL_SLOTS_RE.fullmatch(clean):
        return "", clean
    return _split_han(clean)


def standardize_names(values: pd.Series, field: str = "name") -> pd.DataFrame:
    """Derived name columns plus quality flags, one row per input row, same index."""
    prefix = f"{field}_"
    flag_text: dict[frozenset[str], str] = {}

    def run(distinct: Sequence[str]) -> pd.DataFrame:
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
        return pd.DataFrame(data)

    null_row = {
        schema.name_col(field, "script"): "empty",
        schema.name_col(field, "is_minority"): False,
    }
    out = map_distinct(values, run, null_row=null_row)
    logger.debug("standardized %d %s values", len(values), field)
    return out
