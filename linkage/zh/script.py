"""Traditional -> simplified conversion that keeps standard characters, and the GBK check.

Imports opencc only; no other stage.
"""

from __future__ import annotations

import opencc

__all__ = ["KEEP", "in_gbk", "t2s", "t2s_batch"]

_T2S = opencc.OpenCC("t2s")

# Characters of the 《通用规范汉字表》(2013, 8,105 characters; list as published in
# kitty-panics/cn-tables, 通用规范汉字表.txt) that OpenCC 1.4 t2s would change: the table keeps
# them as standard characters (乾 qian, 於 surname yu, 昇 and 陞 in names), so a name written
# with one is a different spelling, never a traditional form. Computed by converting every
# character of the table; tests check each one still survives t2s unchanged.
KEEP: frozenset[str] = frozenset("乾剋袷麽徵薹氾扞吒苧昇於祕陞脩蒐夥劄薳谿釐爇")

# Variants OpenCC t2s leaves alone (checked with opencc 1.4.2); folded so both spellings
# compare. Characters the 通用规范汉字表 keeps (锺, 甯) are not folded: they compare by pinyin.
_FOLD = {
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
_FOLD_MAP = str.maketrans(_FOLD)
# Kept characters are shielded with Unicode noncharacters (U+FDD0..), which the name cleaner
# has already removed from every input, so OpenCC's phrase rules cannot touch them.
_KEEP_ORDER = sorted(KEEP)
_PROTECT = str.maketrans({c: chr(0xFDD0 + i) for i, c in enumerate(_KEEP_ORDER)})
_UNPROTECT = str.maketrans({chr(0xFDD0 + i): c for i, c in enumerate(_KEEP_ORDER)})


def t2s(text: str) -> str:
    """Simplified form of one text; characters in ``KEEP`` and ASCII are left as they are."""
    return _T2S.convert(text.translate(_PROTECT)).translate(_UNPROTECT).translate(_FOLD_MAP)


def t2s_batch(texts: list[str]) -> list[str]:
    """Simplify newline-free texts in one OpenCC call (3x faster than one call per text)."""
    if not texts:
        return []
    joined = "\n".join(texts)
    converted = _T2S.convert(joined.translate(_PROTECT)).translate(_UNPROTECT)
    converted = converted.translate(_FOLD_MAP)
    if converted == joined:
        return texts
    out = converted.split("\n")
    if len(out) != len(texts):  # cannot happen for newline-free input; stay safe anyway
        out = [t2s(t) for t in texts]
    # t2s is not idempotent for a few characters (薴 -> 苧 -> 苎): iterate the changed ones
    for i, (text, after) in enumerate(zip(texts, out, strict=True)):
        if after == text:
            continue  # unchanged: t2s leaves it so, and _keep_bmp(text, text) is text
        before = text
        for _ in range(4):
            if after == before:
                break
            before, after = after, t2s(after)
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


_IN_GBK = _InGbk()


def in_gbk(ch: str) -> bool:
    """True when GBK (the encoding of many registry exports) can store the character."""
    return _IN_GBK[ch]
