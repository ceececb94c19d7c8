"""Names: era-dependent given names, minority names, and the typing errors clerks make."""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np

from . import tables as T

POP_SHARE = 0.12  # share of given names taken whole from the era's popular list
RARE_CHAR_RATE = 0.002


def era_of(birth_year: np.ndarray) -> np.ndarray:
    """Return the era index (0..4) of each birth year."""
    starts = np.array([s for s, _ in T.ERAS[1:]])
    return np.searchsorted(starts, birth_year, side="right")


@cache
def _era_lists(era: int, gender: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    popular = np.array(T.POPULAR[(era, gender)].split(), dtype=object)
    weights = 1.0 / np.arange(1, len(popular) + 1) ** 0.8
    pool = np.array(list(dict.fromkeys(T.POOLS[(era, gender)])), dtype=object)
    return popular, weights / weights.sum(), pool


def given_names(rng: np.random.Generator, era: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Return one Han given name per person (object array), drawn by era and gender."""
    out = np.empty(len(era), dtype=object)
    for e in range(len(T.ERAS)):
        for gender, flag in (("M", True), ("F", False)):
            idx = np.flatnonzero((era == e) & (male == flag))
            if not len(idx):
                continue
            popular, weights, pool = _era_lists(e, gender)
            n = len(idx)
            names = pool[rng.integers(0, len(pool), n)] + pool[rng.integers(0, len(pool), n)]
            single = rng.random(n) < T.ERAS[e][1]
            names[single] = pool[rng.integers(0, len(pool), int(single.sum()))]
            pop = rng.random(n) < POP_SHARE
            names[pop] = popular[rng.choice(len(popular), int(pop.sum()), p=weights)]
            rare = np.flatnonzero(rng.random(n) < RARE_CHAR_RATE)
            for i in rare:
                names[i] = names[i][:1] + T.RARE_GIVEN_CHARS[rng.integers(len(T.RARE_GIVEN_CHARS))]
            out[idx] = names
    return out


def variant_given(rng: np.random.Generator, given: str, era: int, male: bool) -> str:
    """A near-identical given name (twins, cloned sibling names): one character replaced."""
    pool = _era_lists(era, "M" if male else "F")[2]
    for _ in range(10):
        c = pool[rng.integers(len(pool))]
        new = given[:-1] + c
        if new != given:
            return new
    return given + pool[0]


def minority_name(rng: np.random.Generator, style: str, male: bool, father: str | None,
                  clan: str | None) -> str:
    """A transliterated minority name; father is the father's first part (patronymic styles)."""
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    if style == "uyghur":
        own = pick(T.UYGHUR_M if male else T.UYGHUR_F)
        name = own + "·" + (father or pick(T.UYGHUR_M))
        if rng.random() < 0.1:  # three-part name: grandfather's name too
            name += "·" + pick(T.UYGHUR_M)
        return name
    if style == "kazakh":
        own = pick(T.KAZAKH_M if male else T.KAZAKH_F)
        return own + "·" + (father or pick(T.KAZAKH_M))
    if style == "tibetan":
        first = pick(T.TIBETAN)
        second = [p for p in T.TIBETAN if (p in T.TIBETAN_F_PART) != male and p != first]
        return first + pick(second)
    if style == "mongol":
        return pick(T.MONGOL_M if male else T.MONGOL_F)
    if style == "yi":
        return (clan or pick(T.YI_CLAN)) + "·" + pick(T.YI_M if male else T.YI_F)
    raise ValueError(style)


# --------------------------------------------------------------------------- typing errors
def _gb2312_level1() -> list[str]:
    chars = []
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


@lru_cache(maxsize=1)
def _sound_tables() -> tuple[dict[str, list[str]], dict[str, str]]:
    """Return (pinyin -> characters an input method offers, character -> pinyin)."""
    from pypinyin import Style, lazy_pinyin

    chars = _gb2312_level1()
    by_sound: dict[str, list[str]] = {}
    sound: dict[str, str] = {}
    for c in chars:
        py = lazy_pinyin(c, style=Style.NORMAL)[0]
        if not py.isalpha():
            continue
        sound[c] = py
        by_sound.setdefault(py, []).append(c)
    for c in dict.fromkeys("".join(T.POOLS.values()) + "".join(T.POPULAR.values()).replace(" ", "")):
        if c not in sound:
            sound[c] = lazy_pinyin(c, style=Style.NORMAL)[0]
    return by_sound, sound


def _reading(c: str, is_surname: bool) -> str | None:
    if is_surname and c in T.SURNAME_READING:
        return T.SURNAME_READING[c]
    return _sound_tables()[1].get(c)


@lru_cache(maxsize=1)
def _name_chars() -> frozenset[str]:
    text = "".join(T.POOLS.values()) + "".join(T.POPULAR.values()) + T.RANK21_100 + T.RARE
    return frozenset(text + "".join(s for s, _ in T.TOP20))


def _choose(rng: np.random.Generator, options: list[str]) -> str | None:
    """An input method lists common characters first: name characters are picked more often."""
    if not options:
        return None
    common = [x for x in options if x in _name_chars()]
    if common and rng.random() < 0.7:
        return common[rng.integers(len(common))]
    return options[rng.integers(len(options))]


def homophone_char(rng: np.random.Generator, c: str, is_surname: bool) -> str | None:
    """Another character with the same toneless pinyin, as an input method offers it."""
    py = _reading(c, is_surname)
    return _choose(rng, [x for x in _sound_tables()[0].get(py or "", []) if x != c])


def dialect_char(rng: np.random.Generator, c: str, is_surname: bool) -> str | None:
    """A character whose pinyin differs by one dialect confusion (n/l, zh/z, an/ang, h/f ...)."""
    py = _reading(c, is_surname)
    if not py:
        return None
    by_sound = _sound_tables()[0]
    candidates = []
    for a, b in T.DIALECT_INITIALS:
        if py.startswith(a) and not (a in "csz" and py[1:2] == "h" and len(a) == 1):
            candidates.append(b + py[len(a):])
    for a, b in T.DIALECT_FINALS:
        if py.endswith(a) and not (a in ("an", "en", "in") and py.endswith(a + "g")):
            candidates.append(py[: -len(a)] + b)
    return _choose(rng, [x for s in candidates for x in by_sound.get(s, []) if x != c])


@lru_cache(maxsize=1)
def _s2t():
    import opencc

    return opencc.OpenCC("s2t")


def traditional(name: str) -> str:
    """The name written in traditional characters (OpenCC s2t)."""
    return _s2t().convert(name)


def romanized(surname: str, given: str, rng: np.random.Generator) -> str:
    """The name in pinyin as some systems store it: 'Zhang Wei', 'ZHANG WEI', 'Wei Zhang'."""
    from pypinyin import Style, lazy_pinyin

    sur = T.SURNAME_READING.get(surname) or "".join(lazy_pinyin(surname, style=Style.NORMAL))
    giv = "".join(lazy_pinyin(given, style=Style.NORMAL))
    form = rng.integers(4)
    if form == 0:
        return f"{sur.title()} {giv.title()}"
    if form == 1:
        return f"{sur.upper()} {giv.upper()}"
    if form == 2:
        return f"{giv.title()} {sur.title()}"
    return f"{sur.upper()} {giv.title()}"
