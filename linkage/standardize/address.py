"""Chinese addresses: province, city, district and adcode via cpca, plus a normalized detail.

Imports only the schema and the distinct-value helper; never the linking stages.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

import ahocorasick
import cn2an
import cpca
import numpy as np
import opencc
import pandas as pd

from linkage import schema
from linkage.standardize._distinct import (
    DistinctResults,
    held_values,
    map_distinct,
    map_one,
    object_columns,
)
from linkage.standardize._fillers import is_filler_text
from linkage.standardize.demographics import ETHNICITIES
from linkage.tables import text_columns

logger = logging.getLogger(__name__)

# Keys carry the prefix "address_"; standardize_addresses substitutes the field name
# (hukou_address_unparsed, current_address_ambiguous_district, ...).
FLAGS: dict[str, str] = {
    "address_unparsed": "no province, city or district recognized; detail keeps the whole text",
    "address_no_district": "province or city recognized but no district or county",
    "address_ambiguous_district": (
        "district name exists under several cities and neither the text nor the ID region "
        "code decides; district left null"
    ),
    "address_district_from_region": "ambiguous district name resolved by the ID's region code",
    "address_district_from_batch": "ambiguous district name of a current address (南山区, 龙华区 "
    "without their city) resolved as the city where the batch's other current addresses lie",
    "address_placeholder": "a filler such as 不详, 无 or '-' instead of an address; set to null",
    "address_district_short": "district written without its suffix (北京朝阳, 广州天河): read "
    "as that city's district of the name (informational)",
    "address_district_abolished": "a district or county since abolished (北京崇文区, 上海闸北区, "
    "番禺市): read as the district that took it over where one did, else left null",
}

_T2S = opencc.OpenCC("t2s")
_SPACES = re.compile(r"\s+")
_DASHES = re.compile(r"(?<=\d)[‐‑‒–—―−~～](?=\d)")
_HAN_DIGITS = "〇零一二三四五六七八九"
_DIGIT_BY_HAN = str.maketrans(_HAN_DIGITS, "00123456789")
_NUMERAL = f"[{_HAN_DIGITS}十百千]"
# Chinese numerals directly before an address unit only: cn2an.transform on the whole text
# would turn the place names 十堰, 三里屯, 五道口 into digits. A numeral must start with a digit
# or 十 (一百, 十九), so 千户 / 百步 stay untouched. Written here: no library does this scoping.
_UNITS = "村民小组|小组|单元|栋|幢|座|室|号|楼|层|组|弄|巷|排|户|队|期"
_NUMERAL_BEFORE_UNIT = re.compile(rf"(?<!{_NUMERAL})([{_HAN_DIGITS}十]{_NUMERAL}*)(?={_UNITS})")
_ARABIC = re.compile(r"\d+")

# cpca's table: 12-digit adcode -> AddrInfo (name, 6-digit adcode, rank 0/1/2).
_NAME_BY_CODE: dict[str, str] = {info.adcode: info.name for info in cpca.ad_2_addr_dict.values()}
# Suffixes a district's name drops in everyday writing: 朝阳区 -> 朝阳, 浦东新区 -> 浦东.
_DISTRICT_SUFFIX = re.compile(r"(?:新区|区|县|市|旗)$")
# Placeholder city names in the national table: municipalities list 市辖区 / 县 as their city,
# provinces list 省直辖县级行政区划 above directly administered county-level cities (仙桃市).
# Comparing those placeholders would make Beijing and Shanghai agree on "city".
_MUNICIPALITY_CITY = frozenset({"市辖区", "县"})
_MUNICIPALITIES = frozenset({"11", "12", "31", "50"})  # 北京 天津 上海 重庆: province = city
_DIRECT_COUNTY_CITY = frozenset({"省直辖县级行政区划", "自治区直辖县级行政区划"})
_PLACEHOLDER_NAMES = _MUNICIPALITY_CITY | _DIRECT_COUNTY_CITY


def _stdnum_counties() -> list[tuple[str, list[str]]]:
    """(six-digit code, its name segments such as ``[1983-2016]宝安县``) of every county-level
    line of python-stdnum's region table (``stdnum/cn/loc.dat``)."""
    text = (importlib.resources.files("stdnum.cn") / "loc.dat").read_text(encoding="utf-8")
    out = []
    province = ""
    for line in text.splitlines():
        if match := re.match(r'^(\d\d) province="', line):
            province = match.group(1)
            continue
        match = re.match(r'^\s+(\d{4}) county="(.*)"', line)
        if match is not None and not match.group(1).endswith("00"):
            out.append((province + match.group(1), match.group(2).split(",")))
    return out


def _city_key(adcode: str) -> str:
    """The prefix a city's districts share: 4 digits, 2 for 北京 天津 上海 重庆."""
    return adcode[:2] if adcode[:2] in _MUNICIPALITIES else adcode[:4]


def _new_districts() -> dict[str, str]:
    """Adcode -> name of current county-level divisions that cpca's table (2015) lacks and
    python-stdnum's region table lists, created since under a new name: 深圳 龙华区 and 坪山区
    (2016), 光明区 (2018). A county renamed a district of the same everyday name (临安市 ->
    临安区) is left out: cpca reads it by that name under its old code, as it reads every
    record written before the change."""
    shorts: dict[str, set[str]] = {}
    in_province: dict[str, set[str]] = {}
    for info in cpca.ad_2_addr_dict.values():
        if info.rank == 2:
            # 重庆's districts (5001) and counties (5002) are one city: 梁平县 -> 梁平区
            shorts.setdefault(_city_key(info.adcode), set()).add(
                _DISTRICT_SUFFIX.sub("", info.name)
            )
            in_province.setdefault(info.adcode[:2], set()).add(info.name)
    found: dict[str, str] = {}
    for code, segments in _stdnum_counties():
        if code in _NAME_BY_CODE:
            continue
        current = re.fullmatch(r"\[\d{4}-\](.+)", segments[-1])
        if current is None:
            continue
        name = _T2S.convert(current.group(1))
        if (
            name in _PLACEHOLDER_NAMES
            # a place given a new code under a new parent (申扎县 when 那曲 became a city)
            or name in in_province.get(code[:2], set())
            or _DISTRICT_SUFFIX.sub("", name) in shorts.get(_city_key(code), set())
            # 三沙's island districts (a few thousand residents) would make Guangzhou's 南沙区
            # ambiguous
            or code[:4] == "4603"
        ):
            continue
        found[code] = name
    for code, name in _LATER_THAN_STDNUM.items():
        found.setdefault(code, name)
    return found


# County-level divisions python-stdnum 2.2's table lacks: it ends 下城区 and 江干区 in 2021
# but has not their successors. Hangzhou's 2021 redivision (the State Council's approval of
# March 2021; codes from the Ministry of Civil Affairs' division code list): 临平区 out of
# 余杭区, 钱塘区 out of 江干区 and 萧山区.
_LATER_THAN_STDNUM = {"330113": "临平区", "330114": "钱塘区"}

_NEW_DISTRICTS = _new_districts()
_NAME_BY_CODE.update(_NEW_DISTRICTS)
_NEW_DISTRICT_CODES: dict[str, list[str]] = {}
for _code, _name in _NEW_DISTRICTS.items():
    _NEW_DISTRICT_CODES.setdefault(_name, []).append(_code)
_NEW_DISTRICT_RE = re.compile(
    "|".join(map(re.escape, sorted(set(_NEW_DISTRICTS.values()), key=len, reverse=True)))
)


def _ambiguous_districts() -> dict[str, tuple[str, ...]]:
    """District names that occur under more than one city in cpca's table (and the divisions
    it lacks, ``_new_districts``) -> their adcodes."""
    by_name: dict[str, list[str]] = {}
    for info in cpca.ad_2_addr_dict.values():
        if info.rank == 2 and info.name not in _MUNICIPALITY_CITY:
            by_name.setdefault(info.name, []).append(info.adcode)
    for code, name in _NEW_DISTRICTS.items():
        by_name.setdefault(name, []).append(code)
    return {name: tuple(sorted(codes)) for name, codes in by_name.items() if len(codes) > 1}


AMBIGUOUS_DISTRICTS: dict[str, tuple[str, ...]] = _ambiguous_districts()


def _names(adcode: str) -> tuple[str | None, str | None, str | None]:
    """Province, city and district names of a 6-digit adcode, placeholders replaced."""
    province = _NAME_BY_CODE.get(adcode[:2] + "0000")
    city = _NAME_BY_CODE.get(adcode[:4] + "00") if adcode[2:4] != "00" else None
    district = _NAME_BY_CODE.get(adcode) if adcode[4:] != "00" else None
    if city in _MUNICIPALITY_CITY or (city is None and adcode[:2] in _MUNICIPALITIES):
        city = province
    elif city in _DIRECT_COUNTY_CITY:
        city = district  # the county-level city stands in for its own prefecture
    return province, city, district


def _common_code(codes: Sequence[str]) -> str | None:
    """Adcode of the most precise level all candidates share (city or province), else None."""
    for level in (4, 2):
        if len({c[:level] for c in codes}) == 1:
            return codes[0][:level].ljust(6, "0")
    return None


def _numeral_to_digits(match: re.Match[str]) -> str:
    return _numeral_value(match.group(1))


@lru_cache(maxsize=4096)
def _numeral_value(numeral: str) -> str:
    if all(ch in _HAN_DIGITS for ch in numeral):
        # read digit by digit: 九零二 -> 902 (cn2an would drop a leading 零)
        return numeral.translate(_DIGIT_BY_HAN)
    try:
        return str(cn2an.cn2an(numeral, "normal"))
    except (ValueError, KeyError):
        return numeral  # malformed (十十): leave it, never guess


def _prenormalize(value: object) -> str:
    text = _SPACES.sub("", unicodedata.normalize("NFKC", str(value)))
    # NFKC turns ´ into space + combining accent; once the space is gone it composes anew
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def _convert_units(text: str) -> str:
    text = _DASHES.sub("-", text)
    return _NUMERAL_BEFORE_UNIT.sub(_numeral_to_digits, text)


def _damaged_names() -> dict[str, str]:
    """Place names OpenCC t2s corrupts (乾县 -> 干县), keyed by the corrupted form."""
    names = {info.name for info in cpca.ad_2_addr_dict.values()}
    return {_T2S.convert(n): n for n in names if _T2S.convert(n) != n}


_DAMAGED = _damaged_names()
_DAMAGED_RE = re.compile("|".join(map(re.escape, sorted(_DAMAGED, key=len, reverse=True))))


def _t2s(text: str) -> str:
    # t2s is not idempotent for a few characters (薴 -> 苧 -> 苎): convert to a fixed point
    for _ in range(3):
        converted = _T2S.convert(text)
        if converted == text:
            break
        text = converted
    return _DAMAGED_RE.sub(lambda m: _DAMAGED[m.group(0)], text) if _DAMAGED else text


def normalize_detail(text: str) -> str:
    """NFKC, traditional to simplified, no spaces, Chinese numerals before address units as digits."""
    return _convert_units(_t2s(_prenormalize(text)))


def address_numbers(detail: str | None) -> tuple[str, ...]:
    """Ordered house/building/room numbers of a detail (``19栋5单元902室`` -> 19, 5, 902)."""
    if not detail:
        return ()
    return tuple(n.lstrip("0") or "0" for n in _ARABIC.findall(normalize_detail(detail)))


def _to_simplified(texts: list[str]) -> list[str]:
    """t2s over many strings in one call (faster than one call each); texts hold no newline."""
    if not texts:
        return []
    converted = _T2S.convert("\n".join(texts)).split("\n")
    if len(converted) != len(texts):  # a conversion touched a separator: fall back
        return [_t2s(t) for t in texts]
    # the few changed texts go again: same fixed point and name repair as normalize_detail
    return [c if c == t else _t2s(c) for c, t in zip(converted, texts, strict=True)]


@lru_cache(maxsize=1)
def _traps() -> tuple[dict[str, tuple[str, str]], re.Pattern[str] | None]:
    """Names cpca misreads standing alone, with their adcode and parent name.

    cpca reports the first match that ends first: a bare 五大连池市 yields 大连 (大连市), a bare
    梅县区 yields 县 (重庆's placeholder). Found by parsing every unique name once; the fix
    inserts the parent (黑河市五大连池市), with which cpca reads the name right.
    """
    infos = list(cpca.ad_2_addr_dict.values())
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.name] = counts.get(info.name, 0) + 1
    candidates: list[tuple[str, object]] = []
    for info in infos:
        if info.rank == 0 or counts[info.name] > 1 or info.name in _PLACEHOLDER_NAMES:
            continue
        candidates.append((info.name, info))
        short = re.sub("[市]$", "", info.name)  # cpca also matches 五大连池 without 市
        if short != info.name and len(short) >= 2:
            candidates.append((short, info))
    parsed = cpca.transform([name for name, _ in candidates], pos_sensitive=True)
    # a misread starts inside the name; a bare 吉林 read as the province starts at 0 and is
    # a genuine ambiguity, not a trap
    inner = parsed[["省_pos", "市_pos", "区_pos"]].max(axis=1) > 0
    traps: dict[str, tuple[str, str]] = {}
    for (name, info), code, misread in zip(candidates, parsed["adcode"], inner, strict=True):
        if code == info.adcode or not misread:
            continue
        level = 4 if info.rank == 2 else 2
        parent = _NAME_BY_CODE.get(info.adcode[:level].ljust(6, "0"), "")
        if parent in _PLACEHOLDER_NAMES:
            parent = _NAME_BY_CODE.get(info.adcode[:2] + "0000", "")
        traps[name] = (info.adcode, parent)
    if not traps:
        return traps, None
    pattern = re.compile("|".join(map(re.escape, sorted(traps, key=len, reverse=True))))
    return traps, pattern


# Ethnic groups in the names of autonomous prefectures (凉山彝族自治州, 伊犁哈萨克自治州: the
# 族 is sometimes left out), from GB 3304's names.
_ETHNIC_TAIL = re.compile(
    "(?:"
    + "|".join(
        sorted(
            {
                re.escape(n[:-1]) + ("族?" if len(n) > 2 else "族")
                for _, n in ETHNICITIES
                if n.endswith("族")
            },
            key=len,
            reverse=True,
        )
    )
    + ")+$"
)


def _prefecture_short(name: str) -> str | None:
    """Everyday name of a prefecture whose official name has a suffix (凉山彝族自治州 -> 凉山,
    喀什地区 -> 喀什, 锡林郭勒盟 -> 锡林郭勒); None for cities and placeholders."""
    short = re.sub("(?:自治州|地区|盟)$", "", name)
    if short == name:
        return None
    short = _ETHNIC_TAIL.sub("", short)
    return short if len(short) >= 2 else None


@lru_cache(maxsize=1)
def _prefectures() -> tuple[dict[str, str], dict[str, tuple[str, str]], re.Pattern[str] | None]:
    """(4-digit prefix -> everyday name of every suffixed prefecture, everyday name ->
    (adcode, official name) for those cpca cannot read, a pattern finding those at a text's
    start or after their own province's name).

    cpca knows 喀什 and 大理 (as the county-level cities 喀什市, 大理市) but not 凉山, 甘孜 or
    湘西: 凉山西昌市 reads as 山西, 甘孜泸定 as nothing. Names shared with a province (海南)
    or by two prefectures are left out.
    """
    shorts: dict[str, str] = {}
    unknown: dict[str, tuple[str, str]] = {}
    seen: dict[str, int] = {}
    for info in cpca.ad_2_addr_dict.values():
        if info.rank == 1 and (short := _prefecture_short(info.name)) is not None:
            shorts[info.adcode[:4]] = short
            seen[short] = seen.get(short, 0) + 1
    for prefix, short in shorts.items():
        if seen[short] == 1 and not cpca.matcher.ac.exists(short):
            unknown[short] = (prefix + "00", _NAME_BY_CODE[prefix + "00"])
    if not unknown:
        return shorts, unknown, None
    provinces = {code[:2]: _NAME_BY_CODE[code[:2] + "0000"] for code, _ in unknown.values()}
    by_province: dict[str, list[str]] = {}
    for short, (code, _) in unknown.items():
        by_province.setdefault(code[:2], []).append(short)
    alternatives = []
    for prov, names in by_province.items():
        full = provinces[prov]
        everyday = re.sub("(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区)$", "", full)
        words = "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
        alternatives.append(
            f"(?:{re.escape(full)}|{re.escape(everyday)})(?P<p{prov}>{words})"
        )
    every = "|".join(map(re.escape, sorted(unknown, key=len, reverse=True)))
    # not when a suffix follows (凉山州 and 甘孜县 cpca reads itself), nor a street (红河路)
    pattern = re.compile(
        f"^(?:{'|'.join(alternatives)}|(?P<bare>{every}))"
        r"(?![州县市区旗盟]|地区|[门桥村镇乡]|[一二三四五六七八九十\d]*(?:大道|大街|[东南西北中]?[路街道巷]))"
    )
    return shorts, unknown, pattern


def _expand_prefecture(text: str) -> tuple[str, str] | None:
    """(``text`` with a leading everyday prefecture name cpca cannot read written in full,
    the prefecture's adcode): 凉山西昌市 -> 凉山彝族自治州西昌市; None when it starts with none."""
    _, unknown, pattern = _prefectures()
    match = pattern.match(text) if pattern is not None and text else None
    if match is None:
        return None
    group = next(name for name, value in match.groupdict().items() if value is not None)
    start, end = match.span(group)
    code, full = unknown[match.group(group)]
    return text[:start] + full + text[end:], code


_CPCA_COLUMNS = ("省", "市", "区", "地址", "adcode", "省_pos", "市_pos", "区_pos")
_CPCA_CHUNK = 8192


@functools.cache
def _reach(word: str) -> int:
    """Length of the longest word of cpca's matcher that starts with ``word`` (itself included)."""
    return max(map(len, cpca.matcher.ac.keys(word)), default=len(word))


def _cpca_transform(texts: list[str]) -> pd.DataFrame:
    """``cpca.transform(texts, pos_sensitive=True)``, reading each administrative prefix once.

    cpca (0.5) scans a text's dictionary matches in order of their end and stops at the first
    county-level match it accepts; to accept one it looks at the next match, which changes the
    result only when that match starts where the county's does (朝阳 then 朝阳区). So a text
    whose county starts at ``s`` has its province, city, district, adcode and positions
    decided by its first ``s + _reach(county word)`` characters, and its 地址 is what follows
    the county word. A text sharing those characters with one already parsed gets that
    parse with its own remainder; others (no county, shorter texts) go to cpca. Registries
    repeat a few thousand prefixes over ~100,000 distinct addresses; cpca's per-text Python
    cost was ~2 CPU s per address column at 300,000 records. Equality with cpca is tested.
    """
    if not texts:
        return cpca.transform(texts, pos_sensitive=True)
    # prefix length -> prefix -> (columns before 地址, characters up to the county's end,
    # columns after 地址)
    settled: dict[int, dict[str, tuple[tuple, int, tuple]]] = {}
    rows: list[tuple | None] = [None] * len(texts)
    rest_at, county_pos_at = _CPCA_COLUMNS.index("地址"), _CPCA_COLUMNS.index("区_pos")
    start, chunk = 0, max(1, _CPCA_CHUNK // 8)
    while start < len(texts):
        stop = min(start + chunk, len(texts))
        # the prefix lengths most texts had first: most texts find theirs at the first try
        tables = sorted(settled.items(), key=lambda item: -len(item[1]))
        misses = []
        for i in range(start, stop):
            text = texts[i]
            for length, table in tables:
                if len(text) >= length and (hit := table.get(text[:length])) is not None:
                    rows[i] = (*hit[0], text[hit[1] :], *hit[2])
                    break
            else:
                misses.append(i)
        start, chunk = stop, min(chunk * 2, _CPCA_CHUNK)
        if not misses:
            continue
        parsed = cpca.transform([texts[i] for i in misses], pos_sensitive=True)
        for i, values in zip(
            misses, parsed[list(_CPCA_COLUMNS)].itertuples(index=False, name=None), strict=True
        ):
            rows[i] = values = tuple(None if v is None or v != v else v for v in values)
            text, county_at, rest = texts[i], values[county_pos_at], values[rest_at]
            if county_at < 0 or rest is None:
                continue  # no county: cpca read the whole text
            end = len(text) - len(rest)
            length = county_at + _reach(text[county_at:end])
            if len(text) >= length:
                entry = (values[:rest_at], end, values[rest_at + 1 :])
                settled.setdefault(length, {}).setdefault(text[:length], entry)
    # cpca builds its frame from one dict per text; columns of the same values give the same
    return pd.DataFrame(
        {
            name: list(values)
            for name, values in zip(_CPCA_COLUMNS, zip(*rows, strict=True), strict=True)
        }
    )


def _run_cpca(texts: list[str]) -> pd.DataFrame:
    """cpca.transform with positions, re-reading names it misreads when they stand alone and
    texts that start with a prefecture's everyday name it cannot read (凉山西昌市)."""
    parsed = _cpca_transform(texts)
    traps, pattern = _traps()
    retry: dict[int, str] = {}
    for i, (text, adcode) in enumerate(zip(texts, parsed["adcode"], strict=True)):
        if not text:
            continue
        match = pattern.search(text) if pattern is not None else None
        if match is not None:
            code, parent = traps[match.group(0)]
            if adcode is None or not code.startswith(adcode.rstrip("0")):
                text = retry[i] = text[: match.start()] + parent + text[match.start() :]
        expanded = _expand_prefecture(text)
        if expanded is not None and not (adcode or "").startswith(expanded[1][:4]):
            retry[i] = expanded[0]
    if retry:
        fixed = cpca.transform(list(retry.values()), pos_sensitive=True)
        fixed.index = list(retry)
        parsed.loc[fixed.index, fixed.columns] = fixed
    return parsed


_CANDIDATES = "__candidates"


def _cities_without_districts() -> frozenset[str]:
    """6-digit adcodes of prefecture-level cities with no county-level division below them
    (东莞, 中山, 儋州, 嘉峪关: towns and streets sit directly under the city)."""
    cities = {i.adcode[:4] for i in cpca.ad_2_addr_dict.values() if i.rank == 1}
    with_districts = {
        i.adcode[:4]
        for i in cpca.ad_2_addr_dict.values()
        if i.rank == 2 and i.name not in _PLACEHOLDER_NAMES and i.name != "市辖区"
    }
    return frozenset(c + "00" for c in cities - with_districts)


CITIES_WITHOUT_DISTRICTS = _cities_without_districts()

# Towns (镇) and street offices (街道) directly under 东莞, 中山, 儋州 and 嘉峪关, the
# county-level units of cities without districts, from the National Bureau of Statistics'
# 统计用区划代码 (2023: 东莞 4 街道 and 28 镇, 441900003-441900129; 中山 8 街道 and 16 镇 under 442000, names as
# records write them).
# The district column of such a city holds the town, so rules keyed on the district (name +
# current district) work there as in any other city; comparisons still see one city.
TOWNS: dict[str, tuple[str, ...]] = {
    "441900": (
        "东城街道", "南城街道", "万江街道", "莞城街道", "石碣镇", "石龙镇", "茶山镇", "石排镇",
        "企石镇", "横沥镇", "桥头镇", "谢岗镇", "东坑镇", "常平镇", "寮步镇", "樟木头镇",
        "大朗镇", "黄江镇", "清溪镇", "塘厦镇", "凤岗镇", "大岭山镇", "长安镇", "虎门镇",
        "厚街镇", "沙田镇", "道滘镇", "洪梅镇", "麻涌镇", "望牛墩镇", "中堂镇", "高埗镇",
    ),  # fmt: skip
    "442000": (
        "石岐街道", "东区街道", "西区街道", "南区街道", "五桂山街道", "中山港街道",
        "南朗街道", "民众街道", "黄圃镇", "南头镇", "东凤镇", "阜沙镇", "小榄镇", "东升镇",
        "古镇镇", "横栏镇", "三角镇", "港口镇", "大涌镇", "沙溪镇", "三乡镇", "板芙镇",
        "神湾镇", "坦洲镇",
    ),  # fmt: skip
    # 儋州 (460400): its 16 towns (the 洋浦 development zone and farms under it are no towns)
    "460400": (
        "那大镇", "和庆镇", "南丰镇", "大成镇", "雅星镇", "兰洋镇", "光村镇", "木棠镇",
        "海头镇", "峨蔓镇", "王五镇", "白马井镇", "中和镇", "排浦镇", "东成镇", "新州镇",
    ),  # fmt: skip
    # 嘉峪关 (620200): its 3 towns; the city's 雄关 / 长城 / 镜铁 areas are no county-level units
    "620200": ("新城镇", "峪泉镇", "文殊镇"),
}


# Cities whose towns, written without the city (常平镇锦厦路), are read in it: those of 东莞
# and 中山; 儋州's and 嘉峪关's (新城镇, 中和镇, 大成镇) share their names with towns elsewhere.
_TOWN_FIRST = ("441900", "442000")


@lru_cache(maxsize=1)
def _towns() -> tuple[dict[str, list[tuple[str, str, bool]]], re.Pattern[str], dict[str, str]]:
    """(city adcode -> (name written, town, is short) longest first, a pattern finding a full
    town name of a ``_TOWN_FIRST`` city at a text's start, full town name -> its city adcode);
    short names (清溪 for
    清溪镇) are read only after the city's own name."""
    by_city: dict[str, list[tuple[str, str, bool]]] = {}
    city_of: dict[str, str] = {}
    for city, towns in TOWNS.items():
        entries = by_city.setdefault(city, [])
        for town in towns:
            entries.append((town, town, False))
            short = re.sub("(?:街道|镇)$", "", town)
            if len(short) >= 2:
                entries.append((short, town, True))
            if city in _TOWN_FIRST:
                city_of[town] = city
        entries.sort(key=lambda item: -len(item[0]))
    names = sorted(city_of, key=len, reverse=True)
    return by_city, re.compile("^(?:" + "|".join(map(re.escape, names)) + ")"), city_of


def _town(adcode: str, remainder: str) -> tuple[str, int] | None:
    """(town, characters it takes) when ``remainder`` (the text after a city without
    districts) starts with one of that city's towns or street offices (东莞 + 清溪镇, 东莞 +
    清溪: a short name only when no place inside it or street named after it follows)."""
    for written, town, is_short in _towns()[0].get(adcode, ()):
        if _starts_with_place(remainder, written, is_short):
            return town, len(written)
    return None
# A place name directly followed by one of these is a street named after the place (中山路,
# 东莞大道, 嘉峪关路), not the place itself.
_ROAD_AFTER = re.compile(r"[一二三四五六七八九十\d]*(?:大道|大街|[东南西北中]?[路街道巷]|广场)")


def _city_repeat(
    text: str, city: str | None, city_pos: int, prov_pos: int, district: str | None
) -> tuple[bool, str | None]:
    """(is the city only a street name, corrected detail) for cities cpca read from a street.

    Prefecture-level cities without districts (东莞, 中山, 儋州, 嘉峪关) name their main streets
    after themselves; cpca takes the last occurrence of the city's name, so 东莞市东城街道东莞大道
    loses 东城街道 from the detail, and a bare 中山三路 reads as 中山市. The detail is taken from
    after the first occurrence; a city seen only as a street name, with no province, is dropped.
    """
    if district is not None or not city or city_pos < 0:
        return False, None
    short = city[:-1] if len(city) > 2 and city.endswith("市") else city
    first = text.find(short)
    if first < 0:
        return False, None
    end = first + (len(city) if text.startswith(city, first) else len(short))
    if first < city_pos:
        return False, text[end:]
    if prov_pos == -1 and not text.startswith(city, first) and _ROAD_AFTER.match(text, end):
        return True, None
    return False, None


# After a short district name, these start a place inside it or a street named after it
# (朝阳门 is in 东城, 朝阳路 runs through several districts): not the district itself.
_NOT_DISTRICT_AFTER = re.compile(
    r"[门桥村镇乡]|[一二三四五六七八九十\d]*(?:大道|大街|[东南西北中]?[路街道巷])"
)


@lru_cache(maxsize=1)
def _short_districts() -> dict[str, list[tuple[str, str]]]:
    """City adcode prefix (4 digits; 2 for 北京 天津 上海 重庆) -> (short name, adcode) of its
    districts, longest first; short names two or more districts of one city share are left
    out. From cpca's national table, so a district is only read under its own city."""
    by_parent: dict[str, dict[str, list[str]]] = {}
    districts = [(i.adcode, i.name) for i in cpca.ad_2_addr_dict.values() if i.rank == 2]
    for code, name in districts:
        if name in _PLACEHOLDER_NAMES:
            continue
        short = _DISTRICT_SUFFIX.sub("", name)
        if len(short) < 2 or short == name:
            continue
        parent = code[:2] if code[:2] in _MUNICIPALITIES else code[:4]
        by_parent.setdefault(parent, {}).setdefault(short, []).append(code)
    # and the divisions cpca lacks (四川宜宾叙州, 成都郫都), unless cpca reads the name under
    # the old code (重庆梁平: 梁平县, renamed 梁平区 in 2016)
    for code, name in _NEW_DISTRICTS.items():
        short = _DISTRICT_SUFFIX.sub("", name)
        parent = code[:2] if code[:2] in _MUNICIPALITIES else code[:4]
        if len(short) >= 2 and short != name and short not in by_parent.get(parent, {}):
            by_parent.setdefault(parent, {})[short] = [code]
    return {
        parent: sorted(
            ((short, codes[0]) for short, codes in names.items() if len(set(codes)) == 1),
            key=lambda item: -len(item[0]),
        )
        for parent, names in by_parent.items()
    }


def _new_district(adcode: str, remainder: str) -> tuple[str, int] | None:
    """(adcode, characters it takes) when ``remainder`` (the text after the city) starts
    with a division of that city that cpca's table lacks (深圳市 + 坪山区, ``_new_districts``)."""
    lead = _NEW_DISTRICT_RE.match(remainder) if _NEW_DISTRICTS else None
    if lead is None or adcode[4:] != "00":
        return None
    for code in _NEW_DISTRICT_CODES[lead.group(0)]:
        if _city_key(code) == _city_key(adcode):
            return code, lead.end()
    return None


def _short_district(adcode: str, remainder: str) -> tuple[str, int, bool] | None:
    """(district adcode, characters it takes, whether a suffix followed) when ``remainder``
    (the text after the city) starts with a district of that city written without its suffix
    (北京 + 朝阳) or with another than cpca's table has (重庆 + 梁平区: the table's 梁平县,
    renamed in 2016, read under its old code as records written before)."""
    if adcode[4:] != "00":
        return None
    if adcode[:2] in _MUNICIPALITIES:
        parent = adcode[:2]
    elif adcode[2:4] != "00":
        parent = adcode[:4]
    else:
        return None
    for short, code in _short_districts().get(parent, ()):
        if _starts_with_place(remainder, short, True):
            if remainder[len(short) : len(short) + 1] in ("区", "县", "市"):
                return code, len(short) + 1, True
            return code, len(short), False
    return None


def _starts_with_place(text: str, name: str, is_short: bool) -> bool:
    """Whether ``text`` starts with the place ``name``; a short name (no suffix) only when no
    place inside it or street named after it follows (朝阳门, 朝阳路)."""
    return text.startswith(name) and not (is_short and _NOT_DISTRICT_AFTER.match(text, len(name)))


@lru_cache(maxsize=1)
def _counties_by_prefix() -> dict[str, list[tuple[str, str, bool]]]:
    """4-digit prefix -> (name, adcode, is everyday short form) of its counties, longest
    first: full names, and the short forms ``_short_districts`` keeps."""
    found: dict[str, list[tuple[str, str, bool]]] = {}
    for info in cpca.ad_2_addr_dict.values():
        if info.rank == 2 and info.name not in _PLACEHOLDER_NAMES:
            found.setdefault(info.adcode[:4], []).append((info.name, info.adcode, False))
    for parent, shorts in _short_districts().items():
        if len(parent) == 4:
            found.setdefault(parent, []).extend((n, c, True) for n, c in shorts)
    return {k: sorted(v, key=lambda item: -len(item[0])) for k, v in found.items()}


_PREFECTURE_REST = re.compile("自治州|州|地区|盟")


def _prefecture_for_city(
    adcode: str, district: str, remainder: str | None
) -> tuple[str, str, bool] | None:
    """(adcode, remainder, short form used) when the county-level city cpca found is its
    prefecture's namesake and the text meant the prefecture: 大理州宾川县 or 喀什英吉沙县 read as
    大理市 / 喀什市 (cpca takes 大理 / 喀什 for the city) -> the county written after it, or the
    prefecture itself (no district) when 州 / 地区 / 盟 follows and no county does."""
    short = _prefectures()[0].get(adcode[:4])
    if short is None or _DISTRICT_SUFFIX.sub("", district) != short:
        return None
    rest = remainder or ""
    named = _PREFECTURE_REST.match(rest)
    if named is not None:
        rest = rest[named.end() :]
    for name, code, is_short in _counties_by_prefix().get(adcode[:4], ()):
        if _starts_with_place(rest, name, is_short):
            return code, rest[len(name) :], is_short
    if named is not None:
        return adcode[:4] + "00", rest, False
    return None


# Districts merged into another since 2000, from the State Council's approvals of each
# change: stdnum's table marks them abolished but does not name what took them over.
# Renames (番禺市 -> 番禺区, 密云县 -> 密云区) need no entry: the everyday name finds them.
_MERGED_INTO = {
    "110103": "110101",  # 崇文区 -> 东城区 (2010)
    "110104": "110102",  # 宣武区 -> 西城区 (2010)
    "120107": "120116",  # 塘沽区 -> 滨海新区 (2009)
    "120108": "120116",  # 汉沽区 -> 滨海新区 (2009)
    "120109": "120116",  # 大港区 -> 滨海新区 (2009)
    "230105": "230104",  # 太平区 -> 道外区 (2004)
    "230107": "230110",  # 动力区 -> 香坊区 (2006)
    "310102": "310101",  # 南市区 -> 黄浦区 (2000)
    "310103": "310101",  # 卢湾区 -> 黄浦区 (2011)
    "310108": "310106",  # 闸北区 -> 静安区 (2015)
    "310119": "310115",  # 南汇区 -> 浦东新区 (2009)
    "320103": "320104",  # 白下区 -> 秦淮区 (2013)
    "320107": "320106",  # 下关区 -> 鼓楼区 (2013)
    "320202": "320213",  # 崇安区 -> 梁溪区 (2015)
    "320203": "320213",  # 南长区 -> 梁溪区 (2015)
    "320204": "320213",  # 北塘区 -> 梁溪区 (2015)
    "320502": "320508",  # 沧浪区 -> 姑苏区 (2012)
    "320503": "320508",  # 平江区 -> 姑苏区 (2012)
    "320504": "320508",  # 金阊区 -> 姑苏区 (2012)
    "330103": "330105",  # 下城区 -> 拱墅区 (2021)
    "330104": "330102",  # 江干区 -> 上城区 (2021)
    "440102": "440104",  # 东山区 -> 越秀区 (2005)
    "440107": "440103",  # 芳村区 -> 荔湾区 (2005)
    "440116": "440112",  # 萝岗区 -> 黄埔区 (2014)
    "340721": "340706",  # 铜陵县 -> 义安区 (2015; the rename rule would pick 铜官区)
}


@lru_cache(maxsize=1)
def _old_counties() -> list[tuple[str, str, str | None]]:
    """(old code, old name, successor adcode or None) of every county-level name python-stdnum's
    region table marks as ended since 1980 (``[1997-2016]开县``), in simplified characters.

    The successor is the district that took the old one over (``_MERGED_INTO``), else the
    city's current district of the same everyday name (番禺市 -> 番禺区, 荣昌县 -> 荣昌区),
    else a rename the table implies: the one current division of the same city created the
    year the old name ended whose name starts with the same character (开县 -> 开州区 2016,
    达县 -> 达川区 2013, 蓟县 -> 蓟州区 2016). A current division two old names would claim by
    that rule (铜官山区 and 铜陵县 -> 铜官区) is claimed by neither."""
    current = {c: n for c, n in _NAME_BY_CODE.items() if c[4:] != "00"}
    shorts: dict[str, dict[str, list[str]]] = {}
    for code, name in current.items():
        if name not in _PLACEHOLDER_NAMES and name != "市辖区":
            shorts.setdefault(_city_key(code), {}).setdefault(
                _DISTRICT_SUFFIX.sub("", name), []
            ).append(code)
    created: dict[str, str] = {}
    for code, segments in _stdnum_counties():
        if (begun := re.fullmatch(r"\[(\d{4})-\].+", segments[-1])) is not None:
            created[code] = begun.group(1)
    ended = []
    for code, segments in _stdnum_counties():
        for segment in segments:
            span = re.match(r"\[(\d{4})?-(\d{4})\](.+)", segment)
            if span is None or span.group(2) < "1980":
                continue  # still current, or gone before today's registries began
            name = _T2S.convert(span.group(3))
            if name in _PLACEHOLDER_NAMES or name in ("郊区", "市区", "矿区", "市辖区"):
                continue
            ended.append((code, name, span.group(2)))
    renamed: dict[tuple[str, str], list[str]] = {}
    for code, name, year in ended:
        renamed[code, name] = [
            c
            for codes in shorts.get(_city_key(code), {}).values()
            for c in codes
            if created.get(c) == year and current[c][0] == name[0] and current[c] != name
        ]
    claims: dict[str, int] = {}
    for codes in renamed.values():
        if len(codes) == 1:
            claims[codes[0]] = claims.get(codes[0], 0) + 1
    out = []
    for code, name, _ in ended:
        same = shorts.get(_city_key(code), {}).get(_DISTRICT_SUFFIX.sub("", name), [])
        rename = renamed[code, name]
        successor = _MERGED_INTO.get(code) or (
            same[0]
            if len(same) == 1
            else rename[0]
            if len(rename) == 1 and claims[rename[0]] == 1
            else None
        )
        out.append((code, name, successor if successor in _NAME_BY_CODE else None))
    return out


@lru_cache(maxsize=1)
def _abolished_districts() -> dict[str, list[tuple[str, bool, str | None]]]:
    """City key -> (name, is everyday short form, successor adcode or None) of its districts
    and counties abolished since 1980 (python-stdnum's region table), longest first.

    A successor is the district that took the old one over (``_MERGED_INTO``), else the city's
    current district of the same everyday name (番禺市 -> 番禺区). Names a current district of
    the same city still has are left to cpca."""
    current_names: dict[str, set[str]] = {}
    current_shorts: dict[str, dict[str, list[str]]] = {}
    for info in cpca.ad_2_addr_dict.values():
        if info.rank == 2 and info.name not in _PLACEHOLDER_NAMES:
            key = _city_key(info.adcode)
            current_names.setdefault(key, set()).add(info.name)
            short = _DISTRICT_SUFFIX.sub("", info.name)
            current_shorts.setdefault(key, {}).setdefault(short, []).append(info.adcode)
    found: dict[str, dict[str, tuple[bool, str | None]]] = {}
    for code, name, successor in _old_counties():
        key = _city_key(code)
        if name in current_names.get(key, ()):
            continue
        entries = found.setdefault(key, {})
        entries.setdefault(name, (False, successor))
        short = _DISTRICT_SUFFIX.sub("", name)
        if short != name and len(short) >= 2 and short not in current_shorts.get(key, {}):
            entries.setdefault(short, (True, successor))
    return {
        key: sorted(
            ((n, is_short, succ) for n, (is_short, succ) in names.items()),
            key=lambda item: -len(item[0]),
        )
        for key, names in found.items()
    }


def _everyday(name: str) -> str:
    """A province's or city's name without its suffix (重庆市 -> 重庆, 广西壮族自治区 -> 广西,
    凉山彝族自治州 -> 凉山)."""
    short = _prefecture_short(name)
    if short is not None:
        return short
    return re.sub("(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)$", "", name) or name


def _place_prefixes(adcode: str) -> frozenset[str]:
    """How a text may name the province and city above a district before the district's
    name: nothing, the province, the city, or both, each in full or everyday form."""
    province, city, _ = _names(adcode)
    provinces = {"", province, _everyday(province)} if province else {""}
    cities = {""}
    if city and city != province and city != _NAME_BY_CODE.get(adcode):
        cities |= {city, _everyday(city)}
    return frozenset(p + c for p in provinces for c in cities)


@lru_cache(maxsize=1)
def _old_names() -> tuple[dict[str, list[tuple[str, frozenset[str]]]], re.Pattern[str] | None]:
    """(old full name -> (successor adcode, place prefixes allowed before it), a pattern
    finding those names) for county-level names no longer in use anywhere (开县, 达县, 江津市,
    潼南县: ``_old_counties``); names still in use somewhere are left to cpca."""
    in_use = set(_NAME_BY_CODE.values())
    found: dict[str, dict[str, frozenset[str]]] = {}
    for _, name, successor in _old_counties():
        if successor is None or name in in_use or len(name) < 2:
            continue
        found.setdefault(name, {})[successor] = _place_prefixes(successor)
    table = {name: list(by_code.items()) for name, by_code in found.items()}
    if not table:
        return table, None
    return table, re.compile("|".join(map(re.escape, sorted(table, key=len, reverse=True))))


@lru_cache(maxsize=1)
def _longer_current_names() -> dict[str, tuple[str, ...]]:
    """Old name -> the names in use that start with it (梅县 -> 梅县区)."""
    in_use = set(_NAME_BY_CODE.values())
    return {
        old: longer
        for old in _old_names()[0]
        if (longer := tuple(n for n in in_use if n != old and n.startswith(old)))
    }


def _current_name_at(text: str, start: int, old: str) -> bool:
    return any(text.startswith(n, start) for n in _longer_current_names().get(old, ()))


@lru_cache(maxsize=1)
def _old_name_automaton() -> ahocorasick.Automaton | None:
    """An Aho-Corasick automaton of the old names (``_old_names``): whether a text holds one
    at all in one pass, where the regex alternation of ~400 names cost ~4 µs a text (2% of a
    run's CPU at a million records, nearly every text without one). pyahocorasick is cpca's
    own matcher."""
    table, _ = _old_names()
    if not table:
        return None
    automaton = ahocorasick.Automaton()
    for name in table:
        automaton.add_word(name, len(name))
    automaton.make_automaton()
    return automaton


def _old_county(text: str) -> tuple[str, int] | None:
    """(successor adcode, characters up to the old name's end) when ``text`` names a renamed
    or merged county by its old name (开县临江镇, 重庆市开县, 四川达州达县), either first or after
    its own province and city. The province or city written before it decides between
    namesakes and keeps a name from being read in another province; cpca would read 江津市 as
    湖南's 津市市 and 潼南县 as 南县."""
    table, pattern = _old_names()
    if pattern is None:
        return None
    # the regex finds only names inside the first 16 characters: none there, none found
    if next(_old_name_automaton().iter(text[:16]), None) is None:
        return None
    for match in pattern.finditer(text, 0, 16):
        if _current_name_at(text, match.start(), match.group(0)):
            continue  # 梅县 of 梅县区, today's name
        prefix = text[: match.start()]
        codes = [code for code, prefixes in table[match.group(0)] if prefix in prefixes]
        if len(codes) == 1:
            return codes[0], match.end()
    return None


def _abolished_district(adcode: str, remainder: str) -> tuple[str | None, int] | None:
    """(successor adcode or None, characters taken) when ``remainder`` (the text after a
    city) starts with one of that city's abolished districts (上海市 + 闸北区)."""
    if adcode[4:] != "00" or (adcode[2:4] == "00" and adcode[:2] not in _MUNICIPALITIES):
        return None
    for name, is_short, successor in _abolished_districts().get(_city_key(adcode), ()):
        if _starts_with_place(remainder, name, is_short):
            return successor, len(name)
    return None


def _parse_distinct(values: Sequence[object], field: str) -> pd.DataFrame:
    """Parse distinct raw addresses; ambiguous rows keep their candidate adcodes for later."""
    columns = [schema.address_col(field, s) for s in schema.ADDRESS_DERIVED_SUFFIXES]
    columns = [*columns, schema.QUALITY_FLAGS, _CANDIDATES]
    if not values:
        return pd.DataFrame(columns=columns, dtype=object)
    texts = _to_simplified([_prenormalize(v) for v in values])
    codes, uniques = pd.factorize(pd.Series(texts, dtype=object))
    table = object_columns(_parse_rows(list(uniques), field), columns)
    return table.iloc[codes].reset_index(drop=True)


def parse_address_levels(values: Sequence[object], field: str) -> list[tuple]:
    """(province, city, district) of each raw address, as ``standardize_addresses`` reads them
    without region codes (an ambiguous district keeps only the levels its candidates share).

    The same parse as the batch, without frames around it: the lookup service masks a few
    golden addresses per request, where building frames cost ~4 ms of ~6 (measured).
    """
    texts = _to_simplified([_prenormalize(v) for v in values])
    distinct = list(dict.fromkeys(texts))
    parsed = dict(zip(distinct, _parse_rows(distinct, field), strict=True))
    return [parsed[t][:3] for t in texts]


def _none(value: object) -> object:
    # pandas 3 reads missing strings as NaN (truthy): None before the row loop
    return None if value is None or value != value else value  # value != value: NaN


# a street office (街道), town (镇) or township (乡) at the start of an address, its name
# holding no division's suffix (大理州金牛镇 starts with a prefecture)
_STREET_FIRST = re.compile("^(?:(?![省市州区县盟旗])[\u4e00-\u9fff]){2,6}?(?:街道|镇|乡)")


def _parse_rows(uniques: list, field: str) -> list[tuple]:
    """One row per distinct prenormalized text: the derived address columns, flags, candidates."""
    flag = {code: field + code.removeprefix("address") for code in FLAGS}
    if not uniques:
        return []
    parsed = _run_cpca(uniques)
    rows = []
    for text, remainder, adcode, city_name, district, prov_pos, city_pos, county_pos in zip(
        uniques,
        *(
            [_none(v) for v in parsed[c].tolist()]
            for c in ("地址", "adcode", "市", "区", "省_pos", "市_pos", "区_pos")
        ),
        strict=True,
    ):
        if not text:
            rows.append((None, None, None, None, None, "", None))
            continue
        if is_filler_text(text):
            rows.append((None, None, None, None, None, flag["address_placeholder"], None))
            continue
        if district is None and city_name in _PLACEHOLDER_NAMES and prov_pos == -1:
            adcode = None  # a bare 县 / 市辖区 (县前街) matched a municipality's placeholder
        street_only, repeat_detail = _city_repeat(text, city_name, city_pos, prov_pos, district)
        if street_only:
            adcode = None
        if county_pos not in (None, -1) and prov_pos == -1 and city_pos == -1:
            if _STREET_FIRST.match(text):
                # a street office or town written first, without its city (九堡街道新民村,
                # 五常街道建设村): the county cpca found is that street's own name or a
                # village or estate after it (新民市 in 辽宁, 五常市 in 黑龙江), not where
                # the address lies
                adcode = None
        lead = _NEW_DISTRICT_RE.match(text) if _NEW_DISTRICTS else None
        if lead and lead.group(0) not in AMBIGUOUS_DISTRICTS:
            # a division cpca lacks, written first (光明区光明街道沙河西路: cpca reads 沙河市
            # from the road)
            adcode = _NEW_DISTRICT_CODES[lead.group(0)][0]
            remainder, district, city_pos, prov_pos = text[lead.end() :], lead.group(0), 0, 0
        if repeat_detail is not None:
            remainder = repeat_detail
        old = _old_county(text)
        if old is not None:
            adcode, taken = old
            remainder, district, city_pos, prov_pos = text[taken:], _NAME_BY_CODE[adcode], 0, 0
        elif field == schema.CURRENT_ADDRESS and (lead := _towns()[1].match(text)) is not None:
            # a town of 东莞 or 中山 written first, without its city (常平镇锦厦沿江路): an
            # address names the larger place first, so what cpca found after it is a street
            # or village (清溪镇江边 read as 镇江, 大朗镇东区 as 攀枝花's 东区, 大岭山东纵路 as 山东)
            adcode, remainder, district = _towns()[2][lead.group(0)], text, None
        if adcode is None:
            detail = _convert_units(text)
            rows.append((None, None, None, None, detail, flag["address_unparsed"], None))
            continue
        candidates = None
        flags = ""
        if district in AMBIGUOUS_DISTRICTS and city_pos == -1:
            found = AMBIGUOUS_DISTRICTS[district]
            if prov_pos != -1:
                found = tuple(c for c in found if c[:2] == adcode[:2])
            if len(found) > 1:
                # cpca silently takes the first table entry (朝阳区 -> 长春): undo that
                candidates = ",".join(found)
                adcode = _common_code(found)
                flags = flag["address_ambiguous_district"]
        province, city, district = _names(adcode) if adcode else (None, None, None)
        if old is not None:
            flags = flag["address_district_abolished"]
        if adcode in _MERGED_INTO and not flags:
            # a district cpca's table still lists, merged since (杭州下城区 into 拱墅区, 2021)
            adcode = _MERGED_INTO[adcode]
            province, city, district = _names(adcode)
            flags = flag["address_district_abolished"]
        if district is not None and not flags:
            prefecture = _prefecture_for_city(adcode, district, remainder)
            if prefecture is not None:
                adcode, remainder, is_short = prefecture
                province, city, district = _names(adcode)
                flags = flag["address_district_short"] if is_short else ""
        if district is None and not flags and remainder:
            abolished = _abolished_district(adcode, remainder)
            if abolished is not None:
                successor, taken = abolished
                if successor is not None:
                    adcode = successor
                    province, city, district = _names(adcode)
                remainder = remainder[taken:]
                flags = flag["address_district_abolished"]
        if district is None and not flags and remainder:
            new = _new_district(adcode, remainder)
            if new is not None:
                adcode, taken = new
                province, city, district = _names(adcode)
                remainder = remainder[taken:]
        if district is None and not flags and remainder:
            short = _short_district(adcode, remainder)
            if short is not None:
                adcode, taken, suffixed = short
                province, city, district = _names(adcode)
                remainder = remainder[taken:]
                flags = "" if suffixed else flag["address_district_short"]
                if adcode in _MERGED_INTO:
                    # merged since, written short (杭州江干, 杭州下城): as the full name reads
                    adcode = _MERGED_INTO[adcode]
                    province, city, district = _names(adcode)
                    flags = flag["address_district_abolished"]
        if district is None and adcode in TOWNS and remainder:
            town = _town(adcode, remainder)
            if town is not None:
                district, remainder = town[0], remainder[town[1] :]
        if district is None and not flags and adcode not in CITIES_WITHOUT_DISTRICTS:
            flags = flag["address_no_district"]
        if (
            district
            and remainder
            and remainder[0] in "区县"
            and district[-1] in "区县市"
            and remainder[0] != district[-1]
            and district[:-1] + remainder[0] in text
        ):
            # renamed since cpca's table (临安市 -> 临安区): it read 临安 and left the 区
            remainder = remainder[1:]
        detail = _convert_units(remainder) if remainder else None
        rows.append((province, city, district, adcode, detail, flags, candidates))
    return rows


def _shared_levels(code: str, region: str) -> int:
    shared = 0
    for level in (2, 4, 6):
        if code[:level] != region[:level]:
            break
        shared = level
    return shared


def _resolve(candidates: str, region: str, field: str) -> tuple:
    """Pick the candidate sharing the longest adcode prefix with the ID's region code."""
    codes = candidates.split(",")
    shared = [_shared_levels(c, region) for c in codes]
    best = max(shared)
    if best == 0:
        top = codes
    else:
        top = [c for c, s in zip(codes, shared, strict=True) if s == best]
    if len(top) == 1:
        return (*_names(top[0]), top[0], field + "_district_from_region")
    adcode = _common_code(top)
    names = _names(adcode) if adcode else (None, None, None)
    return (*names, adcode, field + "_ambiguous_district")


def standardize_address(value: str, field: str, region_code: object = None) -> dict:
    """:func:`standardize_addresses` of one non-null value, as a dict of column -> value:
    the same parse, and the same choice by the ID's region code of an ambiguous district."""
    out = map_one(value, functools.partial(_parse_distinct, field=field))
    pending = out.pop(_CANDIDATES)
    if pending is None or region_code is None or region_code != region_code:
        return out
    region = re.match(r"^\s*(\d{6})", str(region_code))
    if region is None:
        return out
    targets = [schema.address_col(field, s) for s in ("province", "city", "district", "adcode")]
    resolved = _resolve(str(pending), region.group(1), field)
    for column, v in zip([*targets, schema.QUALITY_FLAGS], resolved, strict=True):
        out[column] = None if v is None or v != v else v
    return out


# An ambiguous district is read as the candidate in the city holding at least this share of the
# batch's current addresses in any candidate city: a registry of one city's residents names that
# city (深圳's 南山区 against 鹤岗's, where 98% of the batch's addresses in 深圳 or 鹤岗 are in 深圳).
BATCH_CITY_SHARE = 0.9


def _city_counts(out: pd.DataFrame, pending: pd.Series, field: str) -> pd.Series:
    """Rows per city (4-digit adcode prefix, a province's own ``..00`` left out) of the
    parsed addresses ``out`` whose district is not ambiguous (``pending`` null)."""
    adcodes = out[schema.address_col(field, "adcode")]
    cities = adcodes[pending.isna() & adcodes.notna()].astype(str).str.slice(0, 4)
    return cities[~cities.str.endswith("00")].value_counts()


def current_address_cities(values: pd.Series) -> pd.Series:
    """Rows per city (index: 4-digit adcode prefix; int counts) of the current addresses
    ``values`` that name an unambiguous district: what :func:`standardize_addresses` with
    ``by_batch`` decides an ambiguous district by. Counts add up over the chunks of a
    batch (``Series.add(..., fill_value=0)``), for a batch standardized a chunk at a time
    (``io.read_records_chunks``): each chunk is then decided by the whole batch's counts
    (``batch_cities``), as when standardized at once."""
    field = schema.CURRENT_ADDRESS
    # parsed once per distinct value and weighed by its rows: no frame of a row per record
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    rows = np.bincount(codes[codes >= 0], minlength=len(uniques))
    out = map_distinct(pd.Series(uniques, dtype=object), distinct_parser(field))
    adcodes = out[schema.address_col(field, "adcode")]
    known = (out[_CANDIDATES].isna() & adcodes.notna()).to_numpy()
    return _rows_per_city(adcodes[known], rows[known])


def _rows_per_city(adcodes: Sequence[object], rows: np.ndarray) -> pd.Series:
    """Rows per city (index: 4-digit adcode prefix; int64 counts) of ``adcodes`` weighed by
    ``rows`` (one count each), a province's own ``..00`` left out."""
    cities = pd.Series([str(a)[:4] for a in adcodes], dtype=object)
    weights = pd.Series(np.asarray(rows, dtype=np.int64))
    counts = weights.groupby(cities.to_numpy(), sort=False).sum()
    counts = counts[[not c.endswith("00") for c in counts.index]]
    return counts.astype(np.int64)


def parsed_address_cities(results: DistinctResults, rows: np.ndarray) -> pd.Series:
    """:func:`current_address_cities` of a batch whose current addresses were parsed once
    per distinct value (``DistinctResults`` of ``distinct_parser(CURRENT_ADDRESS)``):
    ``rows`` gives each record's position in ``results.dictionary`` (-1: null; int array).
    The same counts, summed per distinct adcode instead of per row."""
    adcode = schema.address_col(schema.CURRENT_ADDRESS, "adcode")
    if adcode not in results.text:
        raise ValueError(f"{adcode} is not held as text codes in the parsed results")
    weights = np.bincount(rows[rows >= 0], minlength=len(results.dictionary))
    codes, uniques = results.text[adcode]
    known = codes >= 0
    if _CANDIDATES in results.text:
        known &= results.text[_CANDIDATES][0] < 0
    else:
        known &= results.other[_CANDIDATES].isna().to_numpy(dtype=bool)
    per_adcode = np.bincount(codes[known], weights=weights[known], minlength=len(uniques))
    held = np.flatnonzero(per_adcode > 0)
    return _rows_per_city(held_values(uniques, held), per_adcode[held])


def _by_batch_city(
    out: pd.DataFrame, pending: pd.Series, field: str, counts: pd.Series | None = None
) -> None:
    """Resolve ``pending`` candidates (rows of ``out``) by the city of the batch's other rows
    (``counts``, ``current_address_cities`` of the whole batch; None: of ``out``'s rows)."""
    if counts is None:
        counts = _city_counts(out, pending, field)
    if counts.empty:
        return
    chosen: dict[str, tuple] = {}
    for candidates in pending.dropna().unique():
        codes = str(candidates).split(",")
        held = {c: int(counts.get(c[:4], 0)) for c in codes}
        total = sum(held.values())
        best = max(codes, key=held.__getitem__)
        if total and held[best] >= BATCH_CITY_SHARE * total:
            chosen[candidates] = (*_names(best), best, field + "_district_from_batch")
    if not chosen:
        return
    codes, uniques = pd.factorize(pending)
    table = np.empty(len(uniques) + 1, dtype=object)  # one tuple per cell, None: unresolved
    for i, candidates in enumerate(uniques):  # item by item: numpy would unpack the tuples
        table[i] = chosen.get(candidates)
    picked = table[codes]
    rows = np.flatnonzero([p is not None for p in picked])
    targets = [schema.address_col(field, s) for s in ("province", "city", "district", "adcode")]
    for j, column in enumerate([*targets, schema.QUALITY_FLAGS]):
        column_values = out[column].to_numpy(dtype=object).copy()
        column_values[rows] = [picked[i][j] for i in rows]
        out[column] = pd.Series(column_values, index=out.index, dtype=object)


def distinct_parser(field: str) -> Callable[[Sequence[object]], pd.DataFrame]:
    """The function :func:`standardize_addresses` maps over a column's distinct values:
    the derived columns, flags and the candidate adcodes an ambiguous district leaves for
    the region codes or the batch to decide."""
    return functools.partial(_parse_distinct, field=field)


def standardize_addresses(
    values: pd.Series,
    field: str,
    region_codes: pd.Series | None = None,
    by_batch: bool = False,
    batch_cities: pd.Series | None = None,
) -> pd.DataFrame:
    """Split addresses into province, city, district, adcode and a normalized detail, with flags.

    ``region_codes`` (the ID's 6-digit region code per row, same index, may be null) decides
    district names that exist under several cities when the address names no city. With
    ``by_batch`` (current addresses, which the ID's hukou region does not tell), such a name is
    read in the city where the batch's other addresses lie (``BATCH_CITY_SHARE``), flagged
    ``*_district_from_batch``; rows then depend on the batch they arrive in, which is one city's
    registry in practice. ``batch_cities`` (``current_address_cities`` of the whole batch)
    stands for the batch when ``values`` is one chunk of it.
    """
    out = map_distinct(values, distinct_parser(field))
    pending = out[_CANDIDATES]
    out = out.drop(columns=_CANDIDATES)
    if by_batch and pending.notna().any():
        _by_batch_city(out, pending, field, batch_cities)
    if region_codes is None or not pending.notna().any():
        return out
    if not region_codes.index.equals(values.index):
        region_codes = region_codes.reindex(values.index)
    regions = region_codes.astype("string").str.extract(r"^\s*(\d{6})")[0]
    mask = (pending.notna() & regions.notna()).to_numpy()
    if not mask.any():
        return out
    pairs = pd.DataFrame({"c": pending[mask].astype(str), "r": regions[mask].astype(str)})
    keys = pairs.drop_duplicates()
    targets = [schema.address_col(field, s) for s in ("province", "city", "district", "adcode")]
    resolved = pd.DataFrame(
        [_resolve(c, r, field) for c, r in zip(keys["c"], keys["r"], strict=True)],
        columns=[*targets, schema.QUALITY_FLAGS],
        index=pd.MultiIndex.from_frame(keys),
    )
    looked_up = text_columns(resolved.reindex(pd.MultiIndex.from_frame(pairs)))
    for column in looked_up.columns:
        column_values = out[column].to_numpy(dtype=object).copy()
        column_values[mask] = looked_up[column].to_numpy(dtype=object)
        out[column] = pd.Series(column_values, index=out.index, dtype=object)
    logger.debug(
        "%s: %d rows with an ambiguous district checked against region codes", field, mask.sum()
    )
    return out
