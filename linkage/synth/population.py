"""Synthetic migrant population: households, names, birth dates, resident IDs, addresses, phones.

Columns are numpy arrays built per household and expanded per person; imports only the
package's schema and the synth tables, never a stage module.
"""

from __future__ import annotations

import csv
import importlib.resources
import importlib.util
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from linkage import schema
from linkage.synth import _tables as T

logger = logging.getLogger(__name__)

# Fixed "today" of the synthetic world, so the same seed gives the same files on any day.
REFERENCE_DATE = np.datetime64("2024-06-30", "D")

# Person-table columns beyond the canonical ones.
HOUSEHOLD_ID = "household_id"
ROLE = "role"  # head | spouse | child
SURNAME = "surname"
GIVEN = "given"
FORMER_SURNAME = "former_surname"
FORMER_GIVEN = "former_given"
TRANSLITERATED = "transliterated"  # name of parts joined by U+00B7, no surname/given split
REGION_CODE = "region_code"
REGION_HISTORICAL = "region_historical"
TWIN_OF = "twin_of"  # row index of the older twin, -1 when none
HK_PROVINCE, HK_CITY, HK_COUNTY, HK_DETAIL = "hk_province", "hk_city", "hk_county", "hk_detail"
CUR_DISTRICT, CUR_DETAIL = "cur_district", "cur_detail"

ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
ID_CHECK_CHARS = np.array(list("10X98765432"))
MUNICIPALITIES = ("11", "12", "31", "50")
_NOT_A_CITY = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}


@dataclass(frozen=True)
class Counties:
    """Current county-level divisions (cpca's table) plus abolished codes (stdnum's table)."""

    code: np.ndarray  # six-digit codes as str
    province: np.ndarray
    city: np.ndarray
    county: np.ndarray
    historical: dict[str, tuple[str, ...]]  # city prefix (4 digits) -> abolished county codes


def _cpca_adcodes() -> Path:
    # Read cpca's table directly: importing cpca builds its matcher (~0.1 s) for nothing.
    spec = importlib.util.find_spec("cpca")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("cpca is required for the synthetic county table")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "adcodes.csv"


@cache
def load_counties() -> Counties:
    """Return the county table used for hukou addresses and ID region codes."""
    with _cpca_adcodes().open(encoding="utf-8") as fh:
        names = {row["adcode"][:6]: row["name"] for row in csv.DictReader(fh)}
    rows = []
    for code, name in sorted(names.items()):
        prov_code = code[:2]
        if code.endswith("00") or name in _NOT_A_CITY or prov_code in ("71", "81", "82"):
            continue
        if "群岛" in name or "海域" in name:  # 三沙's island groups: no one's hukou
            continue
        province = names.get(prov_code + "0000")
        city = province if prov_code in MUNICIPALITIES else names.get(code[:4] + "00")
        if province is None or city is None or city in _NOT_A_CITY:
            continue
        rows.append((code, province, city, name))
    code, province, city, county = (np.array(col, dtype=object) for col in zip(*rows, strict=True))
    return Counties(code, province, city, county, _historical_codes(set(names)))


def _historical_codes(current: set[str]) -> dict[str, tuple[str, ...]]:
    """County codes abolished since 2000 (stdnum's loc.dat), grouped by city prefix."""
    text = (importlib.resources.files("stdnum.cn") / "loc.dat").read_text(encoding="utf-8")
    province = ""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if m := re.match(r'^(\d\d) province="', line):
            province = m.group(1)
        elif m := re.match(r'^\s+(\d{4}) county="\[(\d{4})?-(\d{4})\](.*)"', line):
            code = province + m.group(1)
            if int(m.group(3)) >= 2000 and not code.endswith("00") and code not in current:
                if m.group(4) not in _NOT_A_CITY:
                    found.setdefault(code[:4], []).append(code)
    return {k: tuple(sorted(set(v))) for k, v in found.items()}


def zipf_weights(k: int, shift: float = 3.0) -> np.ndarray:
    """Return normalized weights decaying as 1/(rank+shift): a few items dominate."""
    w = 1.0 / (np.arange(k) + shift)
    return w / w.sum()


def choose(
    rng: np.random.Generator, items: Sequence, weights: Sequence[float] | np.ndarray, size: int
) -> np.ndarray:
    """Draw ``size`` items by weight; returns an array of the items."""
    arr = np.asarray(items)
    if arr.dtype.kind == "U":
        arr = arr.astype(object)  # object strings concatenate and index fast
    p = np.asarray(weights, dtype=float)
    return arr[rng.choice(len(arr), size=size, p=p / p.sum())]


def id_check_chars(body17: np.ndarray) -> np.ndarray:
    """ISO 7064 MOD 11-2 check characters of 17-digit bodies (vectorized).

    Hand-written because stdnum computes it one call at a time."""
    if len(body17) == 0:
        return np.array([], dtype="<U1")
    raw = np.frombuffer("".join(body17).encode("ascii"), dtype=np.uint8)
    digits = raw.reshape(-1, 17).astype(np.int64) - 48
    return ID_CHECK_CHARS[(digits @ ID_WEIGHTS) % 11]


def random_mobiles(rng: np.random.Generator, size: int) -> np.ndarray:
    """Return ``size`` 11-digit mobile numbers with realistic prefixes."""
    prefix = choose(rng, list(T.MOBILE_PREFIXES), list(T.MOBILE_PREFIXES.values()), size)
    rest = _padded(rng.integers(0, 10_000, size), 4), _padded(rng.integers(0, 10_000, size), 4)
    return cat(prefix, *rest)


def ymd_strings(dates: np.ndarray) -> np.ndarray:
    """Return dates as ``YYYYMMDD`` strings, formatting each distinct date once."""
    uniq, inverse = np.unique(dates, return_inverse=True)
    text = np.array([d.replace("-", "") for d in np.datetime_as_string(uniq, unit="D")], object)
    return text[inverse.reshape(-1)]


def cat(*parts: np.ndarray | str) -> np.ndarray:
    """Concatenate string arrays and scalars elementwise into an object array."""
    n = max((len(p) for p in parts if not isinstance(p, str)), default=1)
    cols = [itertools.repeat(p, n) if isinstance(p, str) else p for p in parts]
    return np.fromiter(map("".join, zip(*cols)), dtype=object, count=n)


@cache
def _padded_strings(width: int) -> np.ndarray:
    return np.array([str(i).zfill(width) for i in range(10**width)], dtype=object)


def _padded(values: np.ndarray, width: int) -> np.ndarray:
    return _padded_strings(width)[values]


@cache
def _number_strings(high: int) -> np.ndarray:
    return np.array([str(i) for i in range(high + 1)], dtype=object)


def _numbers(rng: np.random.Generator, low: int, high: int, size: int) -> np.ndarray:
    return _number_strings(high)[rng.integers(low, high + 1, size)]


def sample_given(rng: np.random.Generator, male: np.ndarray, modern: np.ndarray) -> np.ndarray:
    """Given names: popular whole names for a share, else 1-2 characters from gendered pools."""
    n = len(male)
    out = np.empty(n, dtype=object)
    popular = rng.random(n) < 0.15
    single = rng.random(n) < np.where(modern, 0.08, 0.22)
    for is_male in (True, False):
        firsts = tuple(dict.fromkeys(T.FIRST_CHARS_MALE if is_male else T.FIRST_CHARS_FEMALE))
        seconds = tuple(dict.fromkeys(T.SECOND_CHARS_MALE if is_male else T.SECOND_CHARS_FEMALE))
        for is_modern in (True, False):
            sel = (male == is_male) & (modern == is_modern)
            if is_modern:
                pool = T.POPULAR_MODERN_MALE if is_male else T.POPULAR_MODERN_FEMALE
            else:
                pool = T.POPULAR_MALE if is_male else T.POPULAR_FEMALE
            pick = sel & popular
            out[pick] = choose(rng, pool, zipf_weights(len(pool), 2.0), int(pick.sum()))
            pick = sel & ~popular
            k = int(pick.sum())
            first = choose(rng, firsts, zipf_weights(len(firsts), 5.0), k)
            second = choose(rng, seconds, zipf_weights(len(seconds), 5.0), k)
            out[pick] = np.where(single[pick], second, cat(first, second))
    return out


def _translit_names(
    rng: np.random.Generator, male: np.ndarray, kazakh: np.ndarray, father_parts: list
) -> np.ndarray:
    """Transliterated names own·father[·grandfather]; ``father_parts`` holds parent names."""
    out = np.empty(len(male), dtype=object)
    draws = rng.random((len(male), 4))
    for i in range(len(male)):  # minority persons are ~1% of the population
        if kazakh[i]:
            pool = T.KAZAKH_MALE if male[i] else T.KAZAKH_FEMALE
            fathers = T.KAZAKH_MALE
        else:
            pool = T.UYGHUR_MALE if male[i] else T.UYGHUR_FEMALE
            fathers = T.UYGHUR_MALE
        own = pool[int(draws[i, 0] * len(pool))]
        parent = father_parts[i]
        if parent and own == parent[0]:  # a son is rarely named after his father
            own = pool[(int(draws[i, 0] * len(pool)) + 1) % len(pool)]
        if parent:
            parts = [own, parent[0]]
            if len(parent) > 1 and draws[i, 2] < 0.35:
                parts.append(parent[1])
        else:
            parts = [own, fathers[int(draws[i, 1] * len(fathers))]]
            if draws[i, 2] < 0.3:
                parts.append(fathers[int(draws[i, 3] * len(fathers))])
        out[i] = "·".join(parts)
    return out


def _hukou_details(rng: np.random.Generator, size: int) -> np.ndarray:
    """Village/town or street part of a hukou address (after the county)."""
    rural = rng.random(size) < 0.7
    town = cat(
        choose(rng, T.PLACE_PARTS, np.ones(len(T.PLACE_PARTS)), size),
        choose(rng, ["镇", "乡", "街道"], [60, 25, 15], size),
    )
    village = cat(choose(rng, T.PLACE_PARTS, np.ones(len(T.PLACE_PARTS)), size), "村")
    rural_detail = cat(
        town,
        village,
        _numbers(rng, 1, 12, size),
        "组",
        _numbers(rng, 1, 80, size),
        "号",
    )
    road = cat(
        choose(rng, T.ROAD_PARTS, np.ones(len(T.ROAD_PARTS)), size),
        choose(rng, T.ROAD_SUFFIXES, zipf_weights(len(T.ROAD_SUFFIXES), 1.0), size),
    )
    flat = np.where(
        rng.random(size) < 0.5,
        cat(
            _numbers(rng, 1, 20, size),
            "栋",
            _numbers(rng, 1, 4, size),
            "单元",
            _flat_no(rng, size, 18),
            "室",
        ),
        "",
    )
    urban_detail = cat(road, _numbers(rng, 1, 300, size), "号", flat)
    return np.where(rural, rural_detail, urban_detail)


def _flat_no(rng: np.random.Generator, size: int, floors: int) -> np.ndarray:
    floor = rng.integers(1, floors + 1, size)
    return _number_strings(floors * 100 + 6)[floor * 100 + rng.integers(1, 7, size)]


def current_addresses(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (district, detail) of addresses in the destination city."""
    names = list(T.DEST_DISTRICTS)
    weights = [T.DEST_DISTRICTS[d][0] for d in names]
    district = choose(rng, names, weights, size)
    street = np.empty(size, dtype=object)
    pick = rng.random(size)
    for name in names:
        sel = district == name
        streets = T.DEST_DISTRICTS[name][1]
        street[sel] = [streets[int(u * len(streets))] + "街道" for u in pick[sel]]
    estate = cat(
        choose(rng, T.ROAD_PARTS, np.ones(len(T.ROAD_PARTS)), size),
        choose(rng, T.ROAD_SUFFIXES, zipf_weights(len(T.ROAD_SUFFIXES), 1.0), size),
        _numbers(rng, 1, 400, size),
        "号",
        choose(rng, T.ESTATE_PARTS, np.ones(len(T.ESTATE_PARTS)), size),
        choose(rng, T.ESTATE_SUFFIXES, np.ones(len(T.ESTATE_SUFFIXES)), size),
        _numbers(rng, 1, 30, size),
        "栋",
        _numbers(rng, 1, 6, size),
        "单元",
        _flat_no(rng, size, 33),
        "室",
    )
    # Urban villages (城中村) house many migrants: lanes numbered in Chinese, rooms as 房.
    lane = choose(rng, ["一", "二", "三", "四", "五", "六", "七", "八"], np.ones(8), size)
    village = cat(
        choose(rng, T.PLACE_PARTS, np.ones(len(T.PLACE_PARTS)), size),
        "社区",
        lane,
        "巷",
        _numbers(rng, 1, 60, size),
        "号",
        _flat_no(rng, size, 8),
        "房",
    )
    detail = cat(street, np.where(rng.random(size) < 0.6, estate, village))
    return district, detail


def _unique_sequences(
    rng: np.random.Generator, body: np.ndarray, male: np.ndarray, seq: np.ndarray, twin_of
) -> np.ndarray:
    """Redraw the sequence numbers of ID bodies that collide (region + birth date + seq).

    Twins keep consecutive numbers: others yield to them, and a twin pair that collides
    with another twin pair is redrawn as a pair."""
    younger = np.flatnonzero(twin_of >= 0)
    older = twin_of[younger]
    twin = np.zeros(len(seq), dtype=bool)
    twin[younger] = twin[older] = True
    order = np.argsort(~twin, kind="stable")  # twins first: duplicates fall on the others
    for _ in range(100):
        full = cat(body, _padded(seq, 3))[order]
        dup = np.zeros(len(seq), dtype=bool)
        dup[order] = pd.Series(full).duplicated(keep="first").to_numpy()
        if not dup.any():
            return seq
        other = dup & ~twin
        seq[other] = 2 * rng.integers(1, 495, int(other.sum())) + male[other].astype(int)
        pairs = dup[younger] | dup[older]
        o, y = older[pairs], younger[pairs]
        seq[o] = 2 * rng.integers(1, 495, len(o)) + male[o].astype(int)
        seq[y] = seq[o] + np.where(male[y] == male[o], 2, 1)
    raise RuntimeError("could not draw unique ID sequence numbers")


def generate_population(persons: int, rng: np.random.Generator) -> pd.DataFrame:
    """Return one row per synthetic person (households of 1-5, twins, minorities)."""
    counties = load_counties()
    # Households: sizes until the requested number of persons is reached.
    est = int(persons / 2.3) + 16
    sizes = rng.choice([1, 2, 3, 4, 5], size=est, p=[0.38, 0.25, 0.2, 0.12, 0.05])
    while sizes.sum() < persons:
        sizes = np.concatenate([sizes, rng.choice([1, 2, 3], size=est // 4 + 8)])
    total = np.cumsum(sizes)
    n_hh = int(np.searchsorted(total, persons) + 1)
    sizes = sizes[:n_hh].copy()
    sizes[-1] -= int(total[n_hh - 1] - persons)
    has_spouse = (sizes >= 3) | ((sizes == 2) & (rng.random(n_hh) < 0.75))
    n_children = sizes - 1 - has_spouse
    head_male = rng.random(n_hh) < np.where(has_spouse, 0.75, 0.55)

    # Head age: parents 24-50; others mostly young working migrants, some elderly.
    young = rng.triangular(18, 27, 46, n_hh)
    old = rng.uniform(46, 81, n_hh)
    head_age = np.where(rng.random(n_hh) < 0.85, young, old)
    head_age = np.where(n_children > 0, rng.triangular(24, 33, 50, n_hh), head_age)
    spouse_age = np.clip(head_age + np.where(head_male, -2, 2) + rng.normal(0, 3, n_hh), 18, 80)

    # Ethnicity of the household and its origin county.
    eth_names = ["汉族", *T.ETHNICITIES]
    eth_share = [100 - sum(v[0] for v in T.ETHNICITIES.values())] + [
        v[0] for v in T.ETHNICITIES.values()
    ]
    hh_eth = choose(rng, eth_names, eth_share, n_hh)
    prov_of_county = np.array([c[:2] for c in counties.code])
    county_idx = np.empty(n_hh, dtype=np.int64)
    not_dest = np.array([not c.startswith(T.DEST_CITY_CODE) for c in counties.code])
    prov_w = np.array([T.ORIGIN_PROVINCES.get(p, 0.0) for p in prov_of_county])
    prov_counts = pd.Series(prov_of_county).map(pd.Series(prov_of_county).value_counts())
    base_w = np.where(not_dest, prov_w / prov_counts.to_numpy(), 0.0)
    han = hh_eth == "汉族"
    county_idx[han] = rng.choice(len(base_w), int(han.sum()), p=base_w / base_w.sum())
    for eth, (_, provs) in T.ETHNICITIES.items():
        sel = hh_eth == eth
        w = np.isin(prov_of_county, provs).astype(float)
        county_idx[sel] = rng.choice(len(w), int(sel.sum()), p=w / w.sum())

    # Expand households to persons.
    hh = np.repeat(np.arange(n_hh), sizes)
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    member = np.arange(persons) - start
    spouse_here = has_spouse[hh]
    is_head = member == 0
    is_spouse = (member == 1) & spouse_here
    is_child = ~is_head & ~is_spouse
    child_no = member - 1 - spouse_here.astype(int)
    role = np.where(is_head, "head", np.where(is_spouse, "spouse", "child")).astype(object)

    male = np.where(is_head, head_male[hh], ~head_male[hh])
    male = np.where(is_child, rng.random(persons) < 0.515, male)
    age = np.where(is_head, head_age[hh], spouse_age[hh])
    parent_age = np.where(has_spouse, np.minimum(head_age, spouse_age), head_age)
    child_cap = np.clip(np.minimum(17, parent_age[hh] - 20), 0, 17)
    age = np.where(is_child, rng.random(persons) * (child_cap + 1), age)
    birth = REFERENCE_DATE - (age * 365.25).astype(np.int64).astype("timedelta64[D]")

    # Twins: the second child of a household with two or more children, ~2% of children.
    twin_of = np.full(persons, -1, dtype=np.int64)
    twin_hh = (n_children >= 2) & (rng.random(n_hh) < 0.045)
    twin_rows = np.flatnonzero(is_child & (child_no == 1) & twin_hh[hh])
    twin_of[twin_rows] = twin_rows - 1
    birth[twin_rows] = birth[twin_rows - 1]
    same_sex = rng.random(len(twin_rows)) < 0.5
    male[twin_rows] = np.where(same_sex, male[twin_rows - 1], ~male[twin_rows - 1])

    # Ethnicity: the household's; a quarter of spouses of minority heads are Han.
    ethnicity = hh_eth[hh].copy()
    ethnicity[is_spouse & (ethnicity != "汉族") & (rng.random(persons) < 0.25)] = "汉族"
    translit = np.isin(ethnicity, T.TRANSLITERATED)

    # Names. Children take the father's surname (the mother's when no father lives here).
    sur_names = list(T.SURNAME_SHARES)
    surname = choose(rng, sur_names, list(T.SURNAME_SHARES.values()), persons)
    for eth, pool in T.MINORITY_HAN_SURNAMES.items():
        sel = (ethnicity == eth) & (rng.random(persons) < 0.8)
        surname[sel] = choose(rng, pool, zipf_weights(len(pool), 1.0), int(sel.sum()))
    father_row = np.where(head_male[hh], start, np.where(spouse_here, start + 1, -1))
    parent_row = np.where(father_row >= 0, father_row, start)
    surname[is_child] = surname[parent_row[is_child]]
    birth_year = birth.astype("datetime64[Y]").astype(int) + 1970
    given = sample_given(rng, male, birth_year >= 2005)
    # Twin names differ by one character from the older twin's: 子涵/子轩, 伟/强.
    older = twin_of[twin_rows]
    new_char = sample_given(rng, male[twin_rows], np.zeros(len(twin_rows), bool))
    for row, old_row, ch in zip(twin_rows, older, new_char, strict=True):
        base = given[old_row]
        given[row] = base[:-1] + ch[-1] if ch[-1] != base[-1] else base[:-1] + ch[0]
        if given[row] == base:
            given[row] = base[:-1] + ("俊" if male[row] else "婷")
    # A few rare characters; half of them exist only in GB18030.
    is_twin = twin_of >= 0
    is_twin[twin_rows - 1] = True
    rare = (rng.random(persons) < 0.006) & ~translit & ~is_twin
    rare_pool = T.RARE_CHARS_GBK + T.RARE_CHARS_NON_GBK
    rare_w = [1.0] * len(T.RARE_CHARS_GBK) + [2.0] * len(T.RARE_CHARS_NON_GBK)
    rare_char = choose(rng, rare_pool, rare_w, int(rare.sum()))
    given[rare] = [g[:-1] + c for g, c in zip(given[rare], rare_char, strict=True)]

    # Parents first so that a child's name can carry the father's (patronymic).
    tl = np.empty(persons, dtype=object)
    adults = np.flatnonzero(translit & ~is_child)
    kazakh = ethnicity == "哈萨克族"
    tl[adults] = _translit_names(rng, male[adults], kazakh[adults], [None] * len(adults))
    kids = np.flatnonzero(translit & is_child)
    fathers = [
        tl[f].split("·") if f >= 0 and isinstance(tl[f], str) else None for f in father_row[kids]
    ]
    tl[kids] = _translit_names(rng, male[kids], kazakh[kids], fathers)
    surname[translit] = ""
    given[translit] = ""

    name = cat(surname, given)
    name[translit] = tl[translit]

    # Former names (曾用名): some adults, mostly women, changed their given name.
    former = (age >= 18) & ~translit & (rng.random(persons) < np.where(male, 0.015, 0.05))
    former |= is_child & ~translit & (rng.random(persons) < 0.01)
    former_given = np.full(persons, None, dtype=object)
    fg = sample_given(rng, male[former], np.zeros(int(former.sum()), bool))
    same = fg == given[former]
    fg[same] = [
        g + ("华" if m else "英") for g, m in zip(fg[same], male[former][same], strict=True)
    ]
    former_given[former] = fg
    former_surname = np.where(former, surname, None)
    former_name = np.where(former, cat(surname, np.where(former, former_given, "")), None)

    # Resident IDs: hukou county (sometimes the spouse's own), birth date, sequence, check.
    region = counties.code[county_idx][hh]
    moved_spouse = is_spouse & (rng.random(persons) < 0.3)
    if moved_spouse.any():
        hh_prov = prov_of_county[county_idx][hh]
        for p in np.unique(hh_prov[moved_spouse]):
            sel = moved_spouse & (hh_prov == p)
            options = counties.code[prov_of_county == p]
            region[sel] = options[rng.integers(0, len(options), int(sel.sum()))]
    # IDs issued before 1999 may carry a county code abolished since (GB/T 2260 history).
    region_hist = np.zeros(persons, dtype=bool)
    legacy = (birth_year < 1983) & (rng.random(persons) < 0.25)
    draws = rng.random(persons)
    for i in np.flatnonzero(legacy):
        options = counties.historical.get(region[i][:4])
        if options:
            region[i] = options[int(draws[i] * len(options))]
            region_hist[i] = True
    seq = 2 * rng.integers(1, 495, persons) + male.astype(int)
    # Twins get consecutive numbers of their own parity: 031/032 or 031/033.
    seq[twin_rows] = seq[twin_rows - 1] + np.where(male[twin_rows] == male[twin_rows - 1], 2, 1)
    body = cat(region, ymd_strings(birth))
    seq = _unique_sequences(rng, body, male, seq, twin_of)
    body17 = cat(body, _padded(seq, 3))
    id_number = cat(body17, id_check_chars(body17).astype(object))

    # Addresses: hukou in the origin county, current address in the destination city.
    hk_detail = _hukou_details(rng, n_hh)[hh]
    cur_district, cur_detail = current_addresses(rng, n_hh)
    hk_province = counties.province[county_idx][hh]
    hk_city = counties.city[county_idx][hh]
    hk_county = counties.county[county_idx][hh]
    municipal = np.array([r[:2] in MUNICIPALITIES for r in counties.code[county_idx][hh]])
    hk_city_part = np.where(municipal, "", hk_city)
    hukou_address = cat(hk_province, hk_city_part, hk_county, hk_detail)
    current_address = cat(T.DEST_PROVINCE, T.DEST_CITY, cur_district[hh], cur_detail[hh])

    # Phones: adults own one, many households share one, children carry a parent's.
    phone = random_mobiles(rng, persons)
    shared = (sizes > 1) & (rng.random(n_hh) < 0.4)
    mother_row = np.where(head_male[hh], np.where(spouse_here, start + 1, start), start)
    use_head = shared[hh] & ~is_head
    phone[use_head] = phone[start[use_head]]
    kid = is_child & ~shared[hh]
    guardian = np.where(rng.random(persons) < 0.7, mother_row, start)
    phone[kid] = phone[guardian[kid]]

    frame = pd.DataFrame(
        {
            schema.PERSON_ID: np.array([f"P{i:08d}" for i in range(1, persons + 1)], dtype=object),
            HOUSEHOLD_ID: hh,
            ROLE: role,
            schema.NAME: name,
            SURNAME: surname,
            GIVEN: given,
            TRANSLITERATED: translit,
            schema.FORMER_NAME: former_name,
            FORMER_SURNAME: former_surname,
            FORMER_GIVEN: former_given,
            schema.GENDER: np.where(male, "M", "F"),
            schema.BIRTH_DATE: birth,
            schema.ETHNICITY: ethnicity,
            schema.ID_NUMBER: id_number,
            REGION_CODE: region,
            REGION_HISTORICAL: region_hist,
            schema.PHONE: phone,
            HK_PROVINCE: hk_province,
            HK_CITY: hk_city_part,
            HK_COUNTY: hk_county,
            HK_DETAIL: hk_detail,
            schema.HUKOU_ADDRESS: hukou_address,
            CUR_DISTRICT: cur_district[hh],
            CUR_DETAIL: cur_detail[hh],
            schema.CURRENT_ADDRESS: current_address,
            TWIN_OF: twin_of,
        }
    )
    logger.debug("generated %d persons in %d households", persons, n_hh)
    return frame
