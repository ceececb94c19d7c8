"""Readings of Han characters and of surnames, toneless, ü written v.

Imports pypinyin and the surname data of this package only.
"""

from __future__ import annotations

from pypinyin import Style, lazy_pinyin

from linkage.zh._surname_data import OVERTRUE, PINYIN_PRO

__all__ = ["GIVEN_READINGS", "READING", "SURNAME_READINGS", "surname_reading"]

# pypinyin has no surname mode: per character it gives the commonest reading (曾 ceng, 单 dan,
# 贠 yuan, 六 liu), but a clerk typing a surname types its surname reading (zeng, shan, yun,
# lu), so homophone typos and passport romanizations follow it. The table is two published
# surname tables merged (see _surname_data) plus the project's own entries below, each a
# pypinyin heteronym, for surnames those tables miss; 蔚 follows 《现代汉语词典》 (蔚 Yù, 姓).
_PROJECT_SURNAMES: dict[str, str] = {
    "长": "chang",
    "洗": "xian",
    "祭": "zhai",
    "奇": "ji",
    "蕃": "pi",
    "便": "pian",
    "适": "kuo",
    "炅": "gui",
    "么": "yao",
    "蔚": "yu",
}
SURNAME_READINGS: dict[str, str] = {**OVERTRUE, **PINYIN_PRO, **_PROJECT_SURNAMES}

# Given-name characters whose pypinyin single-character default is not the reading used in
# names (长 defaults to zhang, 晟 to cheng); also heteronyms, checked in tests.
GIVEN_READINGS: dict[str, str] = {"长": "chang", "晟": "sheng", "卜": "bu"}
# Readings of name characters pypinyin 0.55 lacks (𠮷 is the 土-top variant of 吉).
_EXTRA_READINGS: dict[str, str] = {"𠮷": "ji"}


class _Readings(dict):
    """Character -> toneless reading (ü as v), or None; filled on first use."""

    def __missing__(self, ch: str) -> str | None:
        reading: str | None
        if ch in GIVEN_READINGS:
            reading = GIVEN_READINGS[ch]
        elif ch in _EXTRA_READINGS:
            reading = _EXTRA_READINGS[ch]
        else:
            reading = lazy_pinyin(ch, style=Style.NORMAL, errors=lambda _: [""])[0]
            if not (reading.isascii() and reading.isalpha()):
                reading = None
        self[ch] = reading
        return reading


READING = _Readings()


def surname_reading(surname: str) -> str | None:
    """Surname reading, syllables space-joined: the table first, else each character's reading."""
    if surname in SURNAME_READINGS:
        return SURNAME_READINGS[surname]
    parts = [READING[c] for c in surname]
    return None if None in parts else " ".join(parts)
