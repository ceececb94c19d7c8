"""Tokens of each encodable field: what a Bloom filter of a person record is built from.

Pure functions over strings; imports only the schema.
"""

from __future__ import annotations

from collections.abc import Iterable

from linkage import schema

# Fields that can be encoded, with the standardized columns they read (first non-null wins).
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    schema.NAME: (schema.name_col(schema.NAME, "clean"),),
    schema.BIRTH_DATE: (schema.BIRTH_DATE_STD, schema.ID_BIRTH_DATE),
    schema.GENDER: (schema.GENDER_STD, schema.ID_GENDER),
    schema.ID_NUMBER: (schema.ID_STD,),
}
PINYIN_COLUMN = schema.name_col(schema.NAME, "pinyin")


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


def gender_tokens(value: str | None) -> list[str]:
    """One token for a standardized gender (M / F)."""
    return [f"s:{value}"] if value else []
