"""Filler values: what a clerk types into a required field when the value is unknown.

Shared by the name, phone and address standardizers, so 不详, 无 or "-" is missing everywhere
(zinggAI/zingg#892: "don't treat null values as same"). Imports the standard library only.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FILLER_TEXTS", "is_filler_text"]

FILLER_TEXTS: frozenset[str] = frozenset(
    "无 暂无 没有 不详 详细不详 地址不详 未知 不明 空 待定 未填 未填写 待补 待查 缺 缺失 无此 "
    "同上 略 null none nan na n/a nil unknown xxx x 0".split()
)
# Punctuation-only values (-, --, —, /, ?, ., 。, ***) are fillers too.
_PUNCT_RE = re.compile(r"[\s\-‐‑‒–—―_/\\.。?？*＊、·,，;；:：'\"()（）\[\]【】]+")


# Text of ASCII letters and digits and CJK Unified Ideographs only: NFKC, strip and the
# punctuation removal leave it as it is (none of these characters has a decomposition or is
# space or punctuation), so only lower-casing remains. Most names, IDs, phones and addresses
# take this path; the full normalization cost ~0.7 CPU s per 300,000 records.
_PLAIN_RE = re.compile(r"[0-9A-Za-z\u4e00-\u9fff]+")


def is_filler_text(value: object) -> bool:
    """True for a non-blank value that only says "unknown" (不详, 无, N/A, -, ?)."""
    if not isinstance(value, str):
        return False
    if _PLAIN_RE.fullmatch(value):
        return value.lower() in FILLER_TEXTS
    if not value.strip():
        return False
    text = unicodedata.normalize("NFKC", value).strip().lower()
    bare = _PUNCT_RE.sub("", text)
    return not bare or bare in FILLER_TEXTS
