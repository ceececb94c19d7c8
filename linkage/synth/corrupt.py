"""Corruptions of synthetic registry records, each recorded as a code in the ground truth.

Works on a `Records` table of numpy columns; imports the synth population helpers and
third-party text libraries only, never a stage module (the engine must not grade itself).
"""

from __future__ import annotations

import calendar
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache

import cn2an
import numpy as np
import pandas as pd
from lunardate import LunarDate
from pypinyin import lazy_pinyin

from linkage.synth import _tables as T
from linkage.synth.population import cat, current_addresses, random_mobiles

logger = logging.getLogger(__name__)

SOURCES = ("police", "civil_affairs", "health")

# Every corruption code, in the order they are applied and listed in truth.csv.
CORRUPTION_CODES: tuple[str, ...] = (
    "former_name",
    "homophone",
    "dialect",
    "lookalike",
    "traditional",
    "pinyin_written",
    "minority_truncated",
    "minority_separator",
    "name_space",
    "fullwidth",
    "rare_char_substituted",
    "id_missing",
    "id_15digit",
    "id_typo",
    "id_transposition",
    "id_float_damage",
    "id_lowercase_x",
    "id_fullwidth",
    "lunar_birthday",
    "date_swap",
    "year_typo",
    "gender_missing",
    "phone_changed",
    "phone_missing",
    "phone_format",
    "address_moved",
    "address_short",
    "address_chinese_numerals",
    "address_traditional",
)
CODE_BIT: dict[str, int] = {c: 1 << i for i, c in enumerate(CORRUPTION_CODES)}

# Default probability per eligible record as (police, civil_affairs, health), before the
# `corruption` scale. Eligibility is code-specific (a former name to use, an ID ending in X,
# a day <= 12 to swap ...). Health files are typed by busy clinic staff: noisier.
DEFAULT_RATES: dict[str, tuple[float, float, float]] = {
    "former_name": (0.12, 0.2, 0.2),
    "homophone": (0.015, 0.015, 0.04),
    "dialect": (0.008, 0.008, 0.025),
    "lookalike": (0.02, 0.02, 0.05),
    "traditional": (0.01, 0.02, 0.02),
    "pinyin_written": (0.003, 0.002, 0.012),
    "minority_truncated": (0.25, 0.25, 0.35),
    "minority_separator": (0.3, 0.3, 0.45),
    "name_space": (0.01, 0.01, 0.02),
    "fullwidth": (0.005, 0.005, 0.015),
    "id_missing": (0.01, 0.01, 0.04),
    "id_15digit": (0.08, 0.05, 0.03),
    "id_typo": (0.005, 0.005, 0.02),
    "id_transposition": (0.003, 0.003, 0.01),
    "id_float_damage": (0.0, 0.0, 0.04),
    "id_lowercase_x": (0.2, 0.2, 0.3),
    "id_fullwidth": (0.003, 0.003, 0.01),
    "lunar_birthday": (0.02, 0.02, 0.03),
    "date_swap": (0.01, 0.01, 0.02),
    "year_typo": (0.005, 0.005, 0.015),
    "gender_missing": (0.005, 0.005, 0.03),
    "phone_changed": (0.05, 0.06, 0.08),
    "phone_missing": (0.02, 0.03, 0.05),
    "phone_format": (0.03, 0.03, 0.08),
    "address_moved": (0.03, 0.0, 0.05),
    "address_short": (0.03, 0.03, 0.06),
    "address_chinese_numerals": (0.02, 0.03, 0.03),
    "address_traditional": (0.005, 0.01, 0.015),
}
# A registrant who re-registers has usually moved: the older of two copies gets the old
# address this often (times the scale).
MOVED_DUPLICATE_RATE = 0.7

HAN, TRANSLIT, LATIN = 0, 1, 2


@dataclass
class Records:
    """One registry's records as parallel numpy columns plus a corruption bitmask."""

    source: str
    cols: dict[str, np.ndarray]
    codes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.codes = np.zeros(len(self), dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.cols["p"])

    def mark(self, code: str, rows: np.ndarray) -> None:
        """Record that ``code`` changed the given rows (indices or boolean mask)."""
        self.codes[rows] |= np.uint64(CODE_BIT[code])

    def has(self, code: str) -> np.ndarray:
        """Boolean mask of rows carrying ``code``."""
        return (self.codes & np.uint64(CODE_BIT[code])) != 0


def code_strings(codes: np.ndarray) -> np.ndarray:
    """Turn bitmasks into ``|``-joined code lists, computing each distinct mask once."""
    uniq, inverse = np.unique(codes, return_inverse=True)
    text = np.array(
        ["|".join(c for c in CORRUPTION_CODES if int(u) & CODE_BIT[c]) for u in uniq],
        dtype=object,
    )
    return text[inverse.reshape(-1)]


# --- character tables -----------------------------------------------------------------


@cache
def _ime_chars() -> tuple[str, ...]:
    """GB2312 level-1 characters: the first page of candidates a pinyin IME offers."""
    chars = []
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return tuple(chars)


@cache
def _by_reading() -> dict[str, tuple[str, ...]]:
    chars = _ime_chars()
    groups: dict[str, list[str]] = defaultdict(list)
    for ch, reading in zip(chars, lazy_pinyin(list(chars)), strict=True):
        groups[reading].append(ch)
    return {k: tuple(v) for k, v in groups.items()}


@cache
def _reading(ch: str, surname: bool) -> str:
    if surname and ch in T.SURNAME_READINGS:
        return T.SURNAME_READINGS[ch][0]
    return lazy_pinyin(ch)[0]


def surname_syllables(surname: str) -> list[str]:
    """Toneless pinyin of a surname with surname readings (曾 -> zeng)."""
    if surname in T.SURNAME_READINGS:
        return list(T.SURNAME_READINGS[surname])
    return [_reading(ch, True) for ch in surname]


def _dialect_variants(reading: str) -> set[str]:
    out = set()
    for a, b in T.DIALECT_INITIALS:
        for x, y in ((a, b), (b, a)):
            if reading.startswith(x) and not (x == "z" and reading.startswith("zh")):
                if not (x in ("c", "s") and reading.startswith(x + "h")):
                    if not (x == "n" and reading == "ng"):
                        out.add(y + reading[len(x) :])
    if reading.startswith("hu") and len(reading) > 2:  # hui/fei, huang/fang
        out.add("f" + reading[2:])
    for a, b in T.DIALECT_FINALS:
        for x, y in ((a, b), (b, a)):
            if reading.endswith(x) and not (x == "an" and reading.endswith("ian")):
                out.add(reading[: -len(x)] + y)
    out.discard(reading)
    return out


@cache
def _homophones(ch: str, surname: bool) -> tuple[str, ...]:
    return tuple(c for c in _by_reading().get(_reading(ch, surname), ()) if c != ch)


@cache
def _dialect_chars(ch: str, surname: bool) -> tuple[str, ...]:
    groups = _by_reading()
    found: list[str] = []
    for variant in sorted(_dialect_variants(_reading(ch, surname))):
        found.extend(c for c in groups.get(variant, ()) if c != ch)
    return tuple(found)


@cache
def _lookalike_map() -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = defaultdict(list)
    for group in T.LOOKALIKE_GROUPS:
        for ch in group:
            found[ch].extend(c for c in group if c != ch and c not in found[ch])
    return {k: tuple(v) for k, v in found.items()}


def _lookalikes(ch: str, surname: bool) -> tuple[str, ...]:
    return _lookalike_map().get(ch, ())


@cache
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


@cache
def to_traditional(text: str) -> str:
    """OpenCC s2t of a short string, cached (names and addresses repeat)."""
    return _converter("s2t").convert(text)


_FULLWIDTH = {i: i + 0xFEE0 for i in range(0x21, 0x7F)} | {0x20: 0x3000}


def to_fullwidth(text: str) -> str:
    """Map ASCII letters, digits and space to their full-width forms."""
    return text.translate(_FULLWIDTH)


# --- helpers ----------------------------------------------------------------------------


def _rng(seed: int, source: str, code: str) -> np.random.Generator:
    # One stream per (source, code): changing one rate never shifts another's draws.
    return np.random.default_rng([seed, SOURCES.index(source), CORRUPTION_CODES.index(code), 17])


def _rate(code: str, source: str, scale: float) -> float:
    return min(1.0, DEFAULT_RATES[code][SOURCES.index(source)] * scale)


def _select(rec: Records, code: str, rng: np.random.Generator, scale: float, eligible):
    """Rows that get ``code``: one uniform draw per record, so streams stay aligned.

    ``eligible`` is a boolean mask, or a function of candidate row indices returning one
    (costly tests then run on the few drawn rows only)."""
    u = rng.random(len(rec))
    rows = np.flatnonzero(u < _rate(code, rec.source, scale))
    if callable(eligible):
        return rows[np.asarray(eligible(rows), dtype=bool)] if len(rows) else rows
    return rows[eligible[rows]]


def _present(values: np.ndarray) -> np.ndarray:
    return ~pd.isna(values)


# --- names --------------------------------------------------------------------------------


def _substitute_char(rec: Records, code: str, rows: np.ndarray, rng, finder) -> None:
    sur, giv = rec.cols["sur"], rec.cols["giv"]
    draws = rng.random((len(rows), 3))
    changed = []
    for i, (u_part, u_pos, u_cand) in zip(rows, draws, strict=True):
        options = [("giv", j, finder(c, False)) for j, c in enumerate(giv[i])]
        options = [o for o in options if o[2]]
        sur_opts = [("sur", j, finder(c, True)) for j, c in enumerate(sur[i])]
        sur_opts = [o for o in sur_opts if o[2]]
        if sur_opts and (not options or u_part < 0.2):
            options = sur_opts
        if not options:
            continue
        part, j, cands = options[int(u_pos * len(options))]
        text = sur[i] if part == "sur" else giv[i]
        text = text[:j] + cands[int(u_cand * len(cands))] + text[j + 1 :]
        if part == "sur":
            sur[i] = text
        else:
            giv[i] = text
        changed.append(i)
    rec.mark(code, np.array(changed, dtype=np.int64))


def _pinyin_written(sur: str, giv: str, u: float) -> str | None:
    s = "".join(surname_syllables(sur))
    g = "".join(lazy_pinyin(giv))
    if not (s + g).isascii() or not (s + g).isalpha():
        return None
    forms = (
        f"{s.upper()} {g.capitalize()}",
        f"{g.capitalize()} {s.capitalize()}",
        f"{s} {g}",
        f"{s.capitalize()} {g.capitalize()}",
        f"{s.upper()} {g.upper()}",
    )
    return forms[int(u * len(forms))]


def corrupt_names(rec: Records, seed: int, scale: float) -> None:
    """Apply the name corruptions in order; strings stay split as surname / given."""
    c = rec.cols
    han = c["kind"] == HAN
    # former_name: the registry still holds the name used before the change.
    rng = _rng(seed, rec.source, "former_name")
    has_former = _present(c["former_sur"])
    rows = _select(rec, "former_name", rng, scale, has_former & han)
    c["sur"][rows] = c["former_sur"][rows]
    c["giv"][rows] = c["former_giv"][rows]
    rec.mark("former_name", rows)

    finders = {"homophone": _homophones, "dialect": _dialect_chars, "lookalike": _lookalikes}
    for code, finder in finders.items():
        rng = _rng(seed, rec.source, code)
        if code == "lookalike":  # eligible only where the table knows a character
            table = _lookalike_map()

            def eligible(rows, table=table):
                names = zip(c["sur"][rows], c["giv"][rows], strict=True)
                known = [any(ch in table for ch in s + g) for s, g in names]
                return han[rows] & np.array(known, dtype=bool)

        else:
            eligible = han
        _substitute_char(rec, code, _select(rec, code, rng, scale, eligible), rng, finder)

    rng = _rng(seed, rec.source, "traditional")
    rows = _select(rec, "traditional", rng, scale, han)
    changed = []
    for i in rows:
        s, g = to_traditional(c["sur"][i]), to_traditional(c["giv"][i])
        if (s, g) != (c["sur"][i], c["giv"][i]):
            c["sur"][i], c["giv"][i] = s, g
            changed.append(i)
    rec.mark("traditional", np.array(changed, dtype=np.int64))

    # Romanized only where no character-level error was made (it would hide it).
    rng = _rng(seed, rec.source, "pinyin_written")
    touched = rec.codes & np.uint64(
        CODE_BIT["homophone"]
        | CODE_BIT["dialect"]
        | CODE_BIT["lookalike"]
        | CODE_BIT["traditional"]
    )
    rows = _select(rec, "pinyin_written", rng, scale, han & (touched == 0))
    forms = rng.random(len(rows))
    changed = []
    for i, u in zip(rows, forms, strict=True):
        latin = _pinyin_written(c["sur"][i], c["giv"][i], u)
        if latin is not None:
            c["latin"][i] = latin
            c["kind"][i] = LATIN
            changed.append(i)
    rec.mark("pinyin_written", np.array(changed, dtype=np.int64))

    translit = c["kind"] == TRANSLIT
    rng = _rng(seed, rec.source, "minority_truncated")

    def long_name(rows):
        return translit[rows] & np.array(
            [isinstance(t, str) and t.count("·") >= 2 for t in c["tl"][rows]]
        )

    rows = _select(rec, "minority_truncated", rng, scale, long_name)
    c["tl"][rows] = ["·".join(t.split("·")[:2]) for t in c["tl"][rows]]
    rec.mark("minority_truncated", rows)

    rng = _rng(seed, rec.source, "minority_separator")
    rows = _select(rec, "minority_separator", rng, scale, translit)
    # A GBK system cannot store • or ・; its clerks type what the keyboard offers.
    seps = (".", "-", " ", "") if rec.source == "civil_affairs" else ("•", ".", "・", "-", " ", "")
    pick = rng.integers(0, len(seps), len(rows))
    c["tl"][rows] = [t.replace("·", seps[k]) for t, k in zip(c["tl"][rows], pick, strict=True)]
    rec.mark("minority_separator", rows)

    rng = _rng(seed, rec.source, "name_space")
    rows = _select(rec, "name_space", rng, scale, c["kind"] == HAN)
    c["name_sep"][rows] = " "
    c["name_spread"][rows] = rng.random(len(rows)) < 0.15  # 张 小 明
    rec.mark("name_space", rows)

    rng = _rng(seed, rec.source, "fullwidth")
    eligible = ((c["kind"] == HAN) & ~rec.has("name_space")) | (c["kind"] == LATIN)
    rows = _select(rec, "fullwidth", rng, scale, eligible)
    latin_rows = rows[c["kind"][rows] == LATIN]
    c["latin"][latin_rows] = [to_fullwidth(t) for t in c["latin"][latin_rows]]
    c["name_sep"][rows[c["kind"][rows] == HAN]] = "\u3000"
    rec.mark("fullwidth", rows)


_NAME_BITS = np.uint64(
    sum(CODE_BIT[c] for c in CORRUPTION_CODES[: CORRUPTION_CODES.index("fullwidth") + 1])
)


def render_names(rec: Records, true_names: np.ndarray) -> np.ndarray:
    """The name string each record shows; rows without a name corruption keep ``true_names``."""
    c = rec.cols
    name = true_names.copy()
    dirty = np.flatnonzero((rec.codes & _NAME_BITS) != 0)
    name[dirty] = cat(c["sur"][dirty], c["name_sep"][dirty], c["giv"][dirty])
    spread = np.flatnonzero(c["name_spread"])
    name[spread] = [" ".join(c["sur"][i] + c["giv"][i]) for i in spread]
    tl = dirty[c["kind"][dirty] == TRANSLIT]
    name[tl] = c["tl"][tl]
    lat = dirty[c["kind"][dirty] == LATIN]
    name[lat] = c["latin"][lat]
    return name


# --- IDs ------------------------------------------------------------------------------------


def _to_15(id18: str) -> str:
    return id18[:6] + id18[8:17]


def _typo(text: str, u1: float, u2: float) -> str:
    j = int(u1 * len(text))
    digits = [d for d in "0123456789" if d != text[j]]
    return text[:j] + digits[int(u2 * len(digits))] + text[j + 1 :]


def _transpose(text: str, u: float) -> str | None:
    start = int(u * (len(text) - 1))
    for k in range(len(text) - 1):
        j = (start + k) % (len(text) - 1)
        a, b = text[j], text[j + 1]
        if a != b and a.isdigit() and b.isdigit():
            return text[:j] + b + a + text[j + 2 :]
    return None


def _float_damage(id18: str, u: float) -> str:
    if u < 0.4:  # Excel's General format in a CSV export: 15 significant digits
        return f"{float(id18):.14E}"
    if u < 0.8:  # the number kept 15 significant digits, shown in full
        return id18[:15] + "000"
    return str(int(float(id18)))  # float64 round trip: last digits drift


def corrupt_ids(rec: Records, seed: int, scale: float) -> None:
    """Apply the resident-ID corruptions in order."""
    ids = rec.cols["id"]
    present = _present(ids)
    rng = _rng(seed, rec.source, "id_missing")
    rows = _select(rec, "id_missing", rng, scale, present)
    ids[rows] = None
    rec.mark("id_missing", rows)
    present[rows] = False

    # Legacy 15-digit cards were replaced from 1999 on; older people kept them longest.
    rng = _rng(seed, rec.source, "id_15digit")
    rows = _select(rec, "id_15digit", rng, scale, present & (rec.cols["by"] < 1985))
    ids[rows] = [_to_15(x) for x in ids[rows]]
    rec.mark("id_15digit", rows)

    rng = _rng(seed, rec.source, "id_typo")
    rows = _select(rec, "id_typo", rng, scale, present)
    u = rng.random((len(rows), 2))
    ids[rows] = [_typo(x, a, b) for x, (a, b) in zip(ids[rows], u, strict=True)]
    rec.mark("id_typo", rows)

    rng = _rng(seed, rec.source, "id_transposition")
    rows = _select(rec, "id_transposition", rng, scale, present)
    u = rng.random(len(rows))
    swapped = [_transpose(x, a) for x, a in zip(ids[rows], u, strict=True)]
    ok = np.array([s is not None for s in swapped], dtype=bool)
    ids[rows[ok]] = [s for s in swapped if s is not None]
    rec.mark("id_transposition", rows[ok])

    rng = _rng(seed, rec.source, "id_float_damage")

    def numeric18(rows):
        return [isinstance(x, str) and len(x) == 18 and x.isdigit() for x in ids[rows]]

    rows = _select(rec, "id_float_damage", rng, scale, numeric18)
    u = rng.random(len(rows))
    ids[rows] = [_float_damage(x, a) for x, a in zip(ids[rows], u, strict=True)]
    rec.mark("id_float_damage", rows)

    rng = _rng(seed, rec.source, "id_lowercase_x")

    def ends_x(rows):
        return [isinstance(x, str) and x.endswith("X") for x in ids[rows]]

    rows = _select(rec, "id_lowercase_x", rng, scale, ends_x)
    ids[rows] = [x[:-1] + "x" for x in ids[rows]]
    rec.mark("id_lowercase_x", rows)

    rng = _rng(seed, rec.source, "id_fullwidth")
    rows = _select(rec, "id_fullwidth", rng, scale, present & ~rec.has("id_float_damage"))
    ids[rows] = [to_fullwidth(x) for x in ids[rows]]
    rec.mark("id_fullwidth", rows)


# --- dates, gender, phones --------------------------------------------------------------------


def _lunar(y: int, m: int, d: int) -> tuple[int, int, int]:
    lunar = LunarDate.from_solar_date(y, m, d)
    # Lunar day 30 of a month read as a solar date may not exist (2月30日): clamp it.
    day = min(lunar.day, calendar.monthrange(lunar.year, lunar.month)[1])
    return lunar.year, lunar.month, day


def corrupt_dates(rec: Records, seed: int, scale: float) -> None:
    """Apply the birth-date corruptions: lunar date read as solar, day/month swap, year ±1."""
    y, m, d = rec.cols["by"], rec.cols["bm"], rec.cols["bd"]
    rng = _rng(seed, rec.source, "lunar_birthday")
    rows = _select(rec, "lunar_birthday", rng, scale, (y >= 1901) & (y <= 2099))
    for i in rows:
        y[i], m[i], d[i] = _lunar(int(y[i]), int(m[i]), int(d[i]))
    rec.mark("lunar_birthday", rows)

    rng = _rng(seed, rec.source, "date_swap")
    rows = _select(rec, "date_swap", rng, scale, (d <= 12) & (d != m))
    m[rows], d[rows] = d[rows].copy(), m[rows].copy()
    rec.mark("date_swap", rows)

    rng = _rng(seed, rec.source, "year_typo")
    rows = _select(rec, "year_typo", rng, scale, np.ones(len(rec), dtype=bool))
    y[rows] += np.where(rng.random(len(rows)) < 0.5, -1, 1)
    leap_fix = rows[(m[rows] == 2) & (d[rows] == 29)]
    d[leap_fix] = [29 if calendar.isleap(int(yy)) else 28 for yy in y[leap_fix]]
    rec.mark("year_typo", rows)


_PHONE_FORMS = (
    lambda p: f"+86 {p}",
    lambda p: f"+86-{p[:3]}-{p[3:7]}-{p[7:]}",
    lambda p: f"{p[:3]}-{p[3:7]}-{p[7:]}",
    lambda p: f"{p[:3]} {p[3:7]} {p[7:]}",
    lambda p: f"0086{p}",
    lambda p: f"(+86){p}",
)


def corrupt_contact(rec: Records, seed: int, scale: float) -> None:
    """Apply gender and phone corruptions."""
    c = rec.cols
    rng = _rng(seed, rec.source, "gender_missing")
    rows = _select(rec, "gender_missing", rng, scale, _present(c["gender"]))
    c["gender"][rows] = None
    rec.mark("gender_missing", rows)

    phones = c["phone"]
    rng = _rng(seed, rec.source, "phone_changed")
    rows = _select(rec, "phone_changed", rng, scale, _present(phones))
    phones[rows] = random_mobiles(rng, len(rows))
    rec.mark("phone_changed", rows)

    rng = _rng(seed, rec.source, "phone_missing")
    rows = _select(rec, "phone_missing", rng, scale, _present(phones))
    phones[rows] = None
    rec.mark("phone_missing", rows)

    rng = _rng(seed, rec.source, "phone_format")
    rows = _select(rec, "phone_format", rng, scale, _present(phones))
    pick = rng.integers(0, len(_PHONE_FORMS), len(rows))
    phones[rows] = [_PHONE_FORMS[k](p) for p, k in zip(phones[rows], pick, strict=True)]
    rec.mark("phone_format", rows)


# --- addresses ----------------------------------------------------------------------------------

_NUMBER_BEFORE_UNIT = re.compile(r"(\d+)(?=(栋|单元|室|号|组|楼|房|层|巷))")


@cache
def _chinese_digits(digits: str, room: bool) -> str:
    if room and len(digits) >= 3:  # rooms are read digit by digit: 九零二
        return "".join("零一二三四五六七八九"[int(ch)] for ch in digits)
    return cn2an.an2cn(digits)


def _chinese_number(match: re.Match) -> str:
    return _chinese_digits(match.group(1), match.group(2) in ("室", "房"))


def corrupt_address_parts(rec: Records, seed: int, scale: float) -> None:
    """Apply the address corruptions that act on parts: moved, province/city omitted."""
    c = rec.cols
    has_cur = "cur_detail" in c
    if has_cur:
        rng = _rng(seed, rec.source, "address_moved")
        u = rng.random(len(rec))
        rate = _rate("address_moved", rec.source, scale)
        dup_rate = min(1.0, MOVED_DUPLICATE_RATE * scale)
        rows = np.flatnonzero((u < rate) | (c["dup_older"] & (u < dup_rate)))
        district, detail = current_addresses(rng, len(rows))
        same = (district == c["cur_district"][rows]) & (detail == c["cur_detail"][rows])
        rows, district, detail = rows[~same], district[~same], detail[~same]
        c["cur_district"][rows] = district
        c["cur_detail"][rows] = detail
        rec.mark("address_moved", rows)

    rng = _rng(seed, rec.source, "address_short")
    rows = _select(rec, "address_short", rng, scale, np.ones(len(rec), dtype=bool))
    level = np.where(rng.random(len(rows)) < 0.5, 1, 2)
    on_cur = (rng.random(len(rows)) < 0.5) if has_cur else np.zeros(len(rows), bool)
    if "hk_detail" not in c:
        on_cur[:] = True
    if has_cur:
        c["cur_short"][rows[on_cur]] = level[on_cur]
    if "hk_detail" in c:
        c["hk_short"][rows[~on_cur]] = level[~on_cur]
    rec.mark("address_short", rows)


def corrupt_address_text(rec: Records, fields: list[np.ndarray], seed: int, scale: float) -> None:
    """Apply the address corruptions that act on the rendered strings of ``fields``."""
    for code, func in (
        ("address_chinese_numerals", lambda s: _NUMBER_BEFORE_UNIT.sub(_chinese_number, s)),
        ("address_traditional", to_traditional),
    ):
        rng = _rng(seed, rec.source, code)
        rows = _select(rec, code, rng, scale, np.ones(len(rec), dtype=bool))
        which = rng.integers(0, len(fields), len(rows))
        changed = []
        for i, k in zip(rows, which, strict=True):
            old = fields[k][i]
            if old is None:
                continue
            new = func(old)
            if new != old:
                fields[k][i] = new
                changed.append(i)
        rec.mark(code, np.array(changed, dtype=np.int64))


# --- GBK storage ----------------------------------------------------------------------------------

# Systems that could not store a character used a site-defined code in GBK's user-defined
# area (decoded as U+E000...) or typed "?"; the code table below is this site's.
_PUA_BASE = 0xE000


@cache
def _pua_char(ch: str) -> str:
    rare = T.RARE_CHARS_NON_GBK
    k = rare.index(ch) if ch in rare else len(rare) + (ord(ch) % 400)
    return chr(_PUA_BASE + k)


@cache
def _gbk_ok(ch: str) -> bool:
    try:
        ch.encode("gbk")
    except UnicodeEncodeError:
        return False
    return True


def substitute_gbk(values: np.ndarray, use_pua: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace characters GBK cannot encode by ``?`` or a PUA code; return (values, changed)."""
    uniq = [v for v in pd.unique(values) if isinstance(v, str)]
    try:  # the whole column at once: the codec runs in C, and most columns pass
        "".join(uniq).encode("gbk")
        return values, np.zeros(len(values), dtype=bool)
    except UnicodeEncodeError:
        pass
    bad = set()
    for v in uniq:
        try:
            v.encode("gbk")
        except UnicodeEncodeError:
            bad.add(v)
    out = values.copy()
    changed = np.fromiter((v in bad for v in values), dtype=bool, count=len(values))
    for i in np.flatnonzero(changed):
        out[i] = "".join(
            ch if _gbk_ok(ch) else (_pua_char(ch) if use_pua[i] else "?") for ch in values[i]
        )
    return out, changed
