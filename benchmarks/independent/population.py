"""The population: households, persons, resident IDs, phones and addresses.

One call builds one chunk of households; identifiers stay unique across chunks through
`Counters` (person/household numbers, the ID sequence numbers already handed out per
region, birth date and sex).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import names as N
from . import tables as T

REF = np.datetime64("2025-06-30")  # the registries' extraction date
DAY0 = np.datetime64("1920-01-01")
N_DAYS = int((np.datetime64("2026-01-01") - DAY0).astype(int))
ID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
CHECK_CHARS = np.array(list("10X98765432"), dtype=object)
# Region codes abolished in a given year: people born later get the successor's code.
ABOLISHED = {"110103": ("110101", 2010), "110104": ("110102", 2010),
             "310103": ("310101", 2011), "310108": ("310106", 2015)}


@dataclass
class Profile:
    """Household settings of a generated set (rates are per eligible household or child)."""

    name: str = "standard"
    family_share: float = 0.44
    twin_rate: float = 0.02  # families with children: one birth is twins
    guardian_id_rate: float = 0.10  # children's health records carrying a parent's ID
    cloned_name_rate: float = 0.0  # siblings given names one character apart
    shared_phone_rate: float = 0.10  # a spouse registered with the partner's phone

    @classmethod
    def named(cls, name: str) -> Profile:
        if name == "standard":
            return cls()
        if name == "household-hard":
            return cls(name=name, family_share=0.55, twin_rate=0.15, guardian_id_rate=0.45,
                       cloned_name_rate=0.30, shared_phone_rate=0.35)
        raise ValueError(f"unknown profile '{name}', expected standard or household-hard")


@dataclass
class Counters:
    """State carried across chunks so identifiers never repeat."""

    next_person: int = 0
    next_household: int = 0
    codes: list[str] = field(default_factory=list)
    seq_used: np.ndarray | None = None

    def __post_init__(self) -> None:
        seen = dict.fromkeys([r[0] for r in T.REGIONS] + [d[0] for d in T.DESTINATIONS]
                             + [new for new, _ in ABOLISHED.values()])
        self.codes = list(seen)
        self.seq_used = np.zeros(len(self.codes) * N_DAYS * 2, dtype=np.int16)


def _regions() -> pd.DataFrame:
    df = pd.DataFrame(T.REGIONS, columns=["code", "province", "city", "county", "kind", "w"])
    return df


def _dests() -> pd.DataFrame:
    return pd.DataFrame(T.DESTINATIONS, columns=["code", "province", "city", "district", "w", "towns"])


_SMALL = np.array([str(i) for i in range(100_000)], dtype=object)


def _s(a: np.ndarray) -> np.ndarray:
    """Integers as an object array of decimal strings (object + object concatenates)."""
    a = np.asarray(a)
    if a.size and a.min() >= 0 and a.max() < len(_SMALL):
        return _SMALL[a.astype(np.int64)]
    return a.astype(str).astype(object)


def _pick(rng: np.random.Generator, options, n: int) -> np.ndarray:
    arr = np.asarray(options, dtype=object)
    return arr[rng.integers(0, len(arr), n)]


def _place(province: np.ndarray, city: np.ndarray) -> np.ndarray:
    """Province + city, without repeating the name of a direct-controlled municipality."""
    return np.where(province == city, province, province + city)


def _town(rng: np.random.Generator, dests: pd.DataFrame, dest: np.ndarray) -> np.ndarray:
    """A street or town of each household's destination district."""
    lists = [t.split() for t in dests.towns]
    flat = np.array([t for ts in lists for t in ts], dtype=object)
    count = np.array([len(ts) for ts in lists])
    offset = np.cumsum(count) - count
    return flat[offset[dest] + (rng.random(len(dest)) * count[dest]).astype(int)]


def id_check_chars(n17: np.ndarray) -> np.ndarray:
    """ISO 7064 MOD 11-2 check characters of 17-digit numbers given as int64."""
    digits = (n17[:, None] // (10 ** np.arange(16, -1, -1, dtype=np.int64))) % 10
    return CHECK_CHARS[(digits @ ID_WEIGHTS) % 11]


def _ymd(dates: np.ndarray) -> np.ndarray:
    d = pd.DatetimeIndex(dates)
    return (d.year * 10000 + d.month * 100 + d.day).to_numpy(np.int64)


def _random_dates(rng, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    span = np.maximum((end - start).astype(np.int64), 1)
    return start + (rng.random(len(span)) * span).astype(np.int64).astype("timedelta64[D]")


def _mobile(rng, n: int) -> np.ndarray:
    prefix = np.array(T.MOBILE_PREFIXES, dtype=np.int64)[rng.integers(0, len(T.MOBILE_PREFIXES), n)]
    return _s(prefix * 10**8 + rng.integers(0, 10**8, n))


def build_chunk(rng: np.random.Generator, n_persons: int, profile: Profile,
                counters: Counters) -> pd.DataFrame:
    """Return n_persons persons (whole households, the last one possibly cut) as a table.

    Columns: person_id, household_id, role (head/spouse/child/elder), male, birth,
    ethnicity, style, surname, given, name, former_name, id18, hukou_address,
    hukou_address_old, hukou_address_short, hukou_before_marriage, current_address, previous_address,
    move_date, phone, old_phone, phone_change, landline, guardian (row index of the
    parent whose ID/phone a child's record may carry), twin, cloned, minor.
    """
    regions, dests = _regions(), _dests()
    n_h = int(n_persons / 2.4) + 16
    # household type: 0 single, 1 couple, 2 family, 3 family + elder, 4 elderly couple
    fam = profile.family_share
    probs = np.array([0.22, 0.16, fam, 0.08, 0.10])
    probs /= probs.sum()
    htype = rng.choice(5, n_h, p=probs)
    n_kids = np.where(np.isin(htype, [2, 3]), rng.choice([1, 2, 3], n_h, p=[0.45, 0.45, 0.10]), 0)
    twins = (n_kids > 0) & (rng.random(n_h) < profile.twin_rate)
    n_kids = n_kids + twins  # the twin is an extra child born the same day
    # head's birth year by household type (ages at the 2025 extraction date)
    lo = np.select([htype == 0, htype == 1, htype == 4], [1986, 1955, 1938], 1966)
    hi = np.select([htype == 0, htype == 1, htype == 4], [2007, 2000, 1965], 1997)
    head_year = lo + (rng.random(n_h) * (hi - lo + 1)).astype(int)
    head_birth = (head_year - 1970).astype("datetime64[Y]").astype("datetime64[D]") + \
        rng.integers(0, 365, n_h).astype("timedelta64[D]")
    head_male = np.where(htype == 0, rng.random(n_h) < 0.55, True)

    eth_names = [e[0] for e in T.ETHNIC]
    eth_p = np.array([e[1] for e in T.ETHNIC])
    eth = rng.choice(len(T.ETHNIC), n_h, p=eth_p / eth_p.sum())
    migrant = rng.random(n_h) < 0.65
    # hukou region: minorities mostly from their home provinces, others by out-migration
    r_w = regions.w.to_numpy(float)
    hukou_r = rng.choice(len(regions), n_h, p=r_w / r_w.sum())
    prov_of = regions.code.str[:2].to_numpy()
    for k, (_, _, _, homes) in enumerate(T.ETHNIC):
        if homes is None:
            continue
        sel = np.flatnonzero((eth == k) & (rng.random(n_h) < 0.85))
        cand = np.flatnonzero(np.isin(prov_of, homes))
        hukou_r[sel] = cand[rng.integers(0, len(cand), len(sel))]
    d_w = dests.w.to_numpy(float)
    dest = rng.choice(len(dests), n_h, p=d_w / d_w.sum())

    # ---- expand households to persons: slots head, spouse, child x k, elder
    n_slots = 1 + (htype > 0) + n_kids + (htype == 3)
    hh = np.repeat(np.arange(n_h), n_slots)
    pos = np.arange(len(hh)) - np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
    has_sp = np.repeat(htype > 0, n_slots)
    kids = np.repeat(n_kids, n_slots)
    role = np.select(
        [pos == 0, has_sp & (pos == 1), pos < 1 + has_sp + kids],
        ["head", "spouse", "child"], "elder").astype(object)
    n = len(hh)
    male = np.empty(n, bool)
    male[role == "head"] = head_male[hh[role == "head"]]
    male[role == "spouse"] = False
    male[role == "child"] = rng.random(int((role == "child").sum())) < 0.53
    male[role == "elder"] = rng.random(int((role == "elder").sum())) < 0.4
    birth = np.empty(n, "datetime64[D]")
    birth[role == "head"] = head_birth[hh[role == "head"]]
    sp = role == "spouse"
    gap = np.clip(rng.normal(2.3, 2.5, int(sp.sum())), -3, 10)
    birth[sp] = head_birth[hh[sp]] + (gap * 365.25).astype(int).astype("timedelta64[D]")
    mother_birth = head_birth + np.timedelta64(840, "D")  # wives are ~2.3 years younger
    ch = np.flatnonzero(role == "child")
    birth[ch] = mother_birth[hh[ch]] + (rng.uniform(21, 39, len(ch)) * 365.25).astype(int).astype(
        "timedelta64[D]")
    child_rank = pos[ch] - 1 - has_sp[ch]
    twin_child = twins[hh[ch]] & (child_rank == kids[ch] - 1)
    birth[ch[twin_child]] = birth[ch[twin_child] - 1]
    el = role == "elder"
    birth[el] = head_birth[hh[el]] - (rng.uniform(22, 34, int(el.sum())) * 365.25).astype(int).astype(
        "timedelta64[D]")
    keep = birth <= REF - np.timedelta64(30, "D")
    # a child born in the future is not born yet; its twin goes with it
    idx = np.flatnonzero(keep)[:n_persons]
    hh, pos, role, male, birth = hh[idx], pos[idx], role[idx], male[idx], birth[idx]
    twin = np.zeros(n, bool)
    twin[ch[twin_child]] = True
    twin[ch[twin_child] - 1] = True
    twin = twin[idx]
    n = len(idx)
    year = pd.DatetimeIndex(birth).year.to_numpy()
    age = (REF - birth).astype(int) / 365.25
    minor = age < 16
    era = N.era_of(year)

    # ---- row of each household's head and spouse within this chunk
    first_row = np.full(n_h, -1)
    first_row[hh[::-1]] = np.arange(n)[::-1]
    head_row = first_row[hh]
    spouse_row = np.where(has_sp[idx] & (first_row[hh] + 1 < n), first_row[hh] + 1, -1)
    spouse_row = np.where((spouse_row >= 0) & (spouse_row < n), spouse_row, -1)
    spouse_ok = spouse_row >= 0
    spouse_ok[spouse_ok] = hh[spouse_row[spouse_ok]] == hh[spouse_ok]
    spouse_row = np.where(spouse_ok, spouse_row, -1)

    # ---- names
    surnames, s_p = T.surname_table()
    own_surname = surnames[rng.choice(len(surnames), n, p=s_p)]
    surname = own_surname.copy()
    is_child = role == "child"
    father = head_row  # the head of a family household is the father
    surname[is_child] = own_surname[father[is_child]]
    mum = is_child & (rng.random(n) < 0.05) & (spouse_row >= 0)
    surname[mum] = own_surname[spouse_row[mum]]
    el_m = (role == "elder") & male
    surname[el_m] = own_surname[head_row[el_m]]
    given = N.given_names(rng, era, male)
    # twins and cloned siblings: one character apart from the sibling before them
    clone = is_child & (rng.random(n) < profile.cloned_name_rate) & ~twin
    prev_sib = np.flatnonzero((twin | clone) & np.r_[False, is_child[:-1]])
    prev_sib = prev_sib[(hh[prev_sib - 1] == hh[prev_sib]) & (role[prev_sib - 1] == "child")]
    twin_second = np.zeros(n, bool)
    for i in prev_sib:
        if twin[i] and not (twin[i - 1] and birth[i - 1] == birth[i]):
            continue
        if twin[i] and twin_second[i - 1]:
            continue
        given[i] = N.variant_given(rng, given[i - 1], int(era[i]), bool(male[i]))
        surname[i] = surname[i - 1]
        twin_second[i] = twin[i]
    clone = clone & np.isin(np.arange(n), prev_sib)
    name = surname + given
    style = np.array([T.ETHNIC[k][2] for k in range(len(T.ETHNIC))], dtype=object)[eth[hh]]
    ethnicity = np.array(eth_names, dtype=object)[eth[hh]]
    # a Han spouse in a minority household is common in mixed marriages
    han_spouse = (role == "spouse") & (style != "han") & (rng.random(n) < 0.3)
    style = np.where(han_spouse, "han", style)
    ethnicity = np.where(han_spouse, "汉族", ethnicity)
    for i in np.flatnonzero(style != "han"):
        h = head_row[i]
        father_first = None
        clan = None
        if role[i] == "child" and style[h] in ("uyghur", "kazakh", "yi"):
            father_first = name[h].split("·")[0] if style[h] != "yi" else None
            clan = name[h].split("·")[0] if style[h] == "yi" else None
        if role[i] == "elder" and male[i] and style[h] in ("uyghur", "kazakh"):
            pass
        name[i] = N.minority_name(rng, style[i], bool(male[i]), father_first, clan)
        surname[i] = ""
        given[i] = name[i]
    if len(prev_sib):  # minority twins also get near-identical names
        for i in prev_sib:
            if style[i] != "han" and twin_second[i] and "·" in name[i - 1]:
                parts = name[i - 1].split("·")
                alt = N.minority_name(rng, style[i], bool(male[i]), None, None).split("·")[0]
                name[i] = "·".join([alt] + parts[1:])
    # former names (曾用名): renamed as a child or adult, same surname
    has_former = (style == "han") & (age > 8) & (rng.random(n) < 0.05)
    former = np.full(n, "", dtype=object)
    fidx = np.flatnonzero(has_former)
    former[fidx] = surname[fidx] + N.given_names(rng, np.maximum(era[fidx] - 1, 0), male[fidx])
    former[former == name] = ""

    # ---- resident IDs: region of registration at issue, birth date, sequence, check
    code_index = {c: i for i, c in enumerate(counters.codes)}
    h_code = np.where(migrant, regions.code.to_numpy()[hukou_r], dests.code.to_numpy()[dest])
    id_code = h_code[hh].astype(object)
    # a wife from another county keeps the ID of where she was first registered
    other = (role == "spouse") & (rng.random(n) < 0.35)
    other_r = rng.choice(len(regions), int(other.sum()), p=r_w / r_w.sum())
    id_code[other] = regions.code.to_numpy()[other_r]
    for old, (new, yr) in ABOLISHED.items():
        late = (id_code == old) & (year >= yr)
        id_code[late] = new
    uniq, inv = np.unique(id_code.astype(str), return_inverse=True)
    code_i = np.array([code_index[c] for c in uniq])[inv]
    code_int = uniq.astype(np.int64)[inv]
    day_i = (birth - DAY0).astype(int)
    key = (code_i * N_DAYS + day_i) * 2 + male
    order = np.argsort(key, kind="stable")
    sk = key[order]
    start = np.r_[0, np.flatnonzero(np.diff(sk)) + 1]
    rank_sorted = np.arange(n) - np.repeat(start, np.diff(np.r_[start, n]))
    rank = np.empty(n, np.int64)
    rank[order] = rank_sorted
    rank += counters.seq_used[key]
    np.add.at(counters.seq_used, key, 1)
    if rank.max(initial=0) >= 499:
        raise RuntimeError("sequence numbers exhausted for a region and birth date")
    offset = ((key // 2) * 2654435761 % 400) * 2
    seq = (offset + 2 * rank) % 998 + np.where(male, 1, 2)
    n17 = code_int * 10**11 + _ymd(birth) * 1000 + seq
    id18 = _s(n17) + id_check_chars(n17)

    # ---- addresses
    towns = _pick(rng, T.TOWNS, n_h)
    village = np.array([p.format(s=s) for p in T.VILLAGE_PATTERNS for s, _ in T.TOP20],
                       dtype=object)[rng.integers(0, len(T.VILLAGE_PATTERNS) * 20, n_h)]
    group = rng.integers(1, 13, n_h)
    road = _pick(rng, T.ROADS, n_h)
    no = rng.integers(1, 300, n_h)
    bldg = rng.integers(1, 40, n_h)
    unit = rng.integers(1, 7, n_h)
    room = rng.integers(1, 33, n_h) * 100 + rng.integers(1, 9, n_h)
    r_prov = regions.province.to_numpy(object)[hukou_r]
    r_city = regions.city.to_numpy(object)[hukou_r]
    r_county = regions.county.to_numpy(object)[hukou_r]
    rural = regions.kind.to_numpy()[hukou_r] == "r"
    d_prov = dests.province.to_numpy(object)[dest]
    d_city = dests.city.to_numpy(object)[dest]
    d_dist = dests.district.to_numpy(object)[dest]
    d_town = _town(rng, dests, dest)
    urban_tail = road + _s(no) + "号" + _s(bldg) + "栋" + _s(unit) + "单元" + _s(room) + "室"
    rural_tail = towns + village + _s(group) + "组"
    local_tail = d_town + road + _s(no) + "号" + _s(bldg) + "栋" + _s(room) + "室"
    hk_place = np.where(migrant, _place(r_prov, r_city) + r_county, _place(d_prov, d_city) + d_dist)
    hk_tail = np.where(migrant, np.where(rural, rural_tail, urban_tail), local_tail)
    hukou = hk_place + hk_tail
    old_county = np.array([T.OLD_NAMES.get(c, c) for c in np.where(migrant, r_county, d_dist)],
                          dtype=object)
    hukou_old = np.where(migrant, _place(r_prov, r_city), _place(d_prov, d_city)) + old_county + hk_tail
    short_prov = np.array([T.PROVINCE_SHORT.get(p, p.rstrip("省市")) for p in np.where(
        migrant, r_prov, d_prov)], dtype=object)
    short_city = np.array([c.rstrip("市") for c in np.where(migrant, r_city, d_city)], dtype=object)
    hukou_short = short_prov + np.where(short_prov == short_city, "", short_city) + \
        np.where(migrant, r_county, d_dist) + hk_tail
    # a wife from another county: her hukou before marriage; 30% never moved it
    maiden = np.full(n, "", dtype=object)
    oi = np.flatnonzero(other)
    maiden[oi] = (_place(regions.province.to_numpy(object)[other_r],
                         regions.city.to_numpy(object)[other_r])
                  + regions.county.to_numpy(object)[other_r]
                  + _pick(rng, T.TOWNS, len(oi)) + _pick(rng, village, len(oi))
                  + _s(rng.integers(1, 13, len(oi))) + "组")
    p_hukou, p_hukou_old, p_hukou_short = hukou[hh].copy(), hukou_old[hh].copy(), hukou_short[hh].copy()
    kept = other & (rng.random(n) < 0.3)
    for arr in (p_hukou, p_hukou_old, p_hukou_short):
        arr[kept] = maiden[kept]
    maiden[kept] = ""
    community = _pick(rng, T.COMMUNITIES, n_h)
    c_bldg = rng.integers(1, 30, n_h)
    c_room = rng.integers(1, 28, n_h) * 100 + rng.integers(1, 7, n_h)
    cur_place = _place(d_prov, d_city) + d_dist + d_town
    current = cur_place + community + _s(c_bldg) + "栋" + _s(c_room) + "室"
    # households that moved inside the period: earlier records carry the previous address
    moved = rng.random(n_h) < 0.20
    p_dest = np.where(rng.random(n_h) < 0.6, dest, rng.choice(len(dests), n_h, p=d_w / d_w.sum()))
    p_town = _town(rng, dests, p_dest)
    previous = (_place(dests.province.to_numpy(object)[p_dest], dests.city.to_numpy(object)[p_dest])
                + dests.district.to_numpy(object)[p_dest] + p_town + _pick(rng, T.COMMUNITIES, n_h)
                + _s(rng.integers(1, 30, n_h)) + "栋" + _s(rng.integers(1, 28, n_h) * 100 + 1) + "室")
    previous = np.where(moved, previous, "")
    move_date = np.where(moved, _random_dates(rng, np.full(n_h, np.datetime64("2016-01-01")),
                                              np.full(n_h, np.datetime64("2025-01-01"))),
                         np.datetime64("NaT"))

    # ---- phones: adults own a mobile; children use a parent's; some elders too
    own_phone = _mobile(rng, n)
    changed = ~minor & (rng.random(n) < 0.12)
    old_phone = np.where(changed, _mobile(rng, n), "")
    change_date = np.where(changed, _random_dates(rng, np.full(n, np.datetime64("2015-06-01")),
                                                  np.full(n, np.datetime64("2025-03-01"))),
                           np.datetime64("NaT"))
    phone = own_phone.copy()
    guardian = np.where(is_child, np.where((spouse_row >= 0) & (rng.random(n) < 0.6),
                                           spouse_row, head_row), -1)
    phone[is_child] = own_phone[guardian[is_child]]
    share = (role == "spouse") & (rng.random(n) < profile.shared_phone_rate)
    phone[share] = own_phone[head_row[share]]
    old_el = (role == "elder") & ((age > 72) | (rng.random(n) < 0.4))
    phone[old_el] = own_phone[head_row[old_el]]
    old_phone = np.where(is_child | share | old_el, "", old_phone)
    change_date = np.where(old_phone == "", np.datetime64("NaT"), change_date)
    area = np.array([T.AREA_CODES[c][0] for c in d_city], dtype=object)
    digits = np.array([T.AREA_CODES[c][1] for c in d_city])
    local = rng.integers(2 * 10**6, 9 * 10**6, n_h) * np.where(digits == 8, 10, 1) + \
        rng.integers(0, 10, n_h) * (digits == 8)
    landline = np.where(rng.random(n_h) < 0.12, area + "-" + _s(local), "")

    first_person = counters.next_person
    first_hh = counters.next_household
    counters.next_person += n
    counters.next_household += int(hh.max()) + 1 if n else 0
    return pd.DataFrame({
        "person_id": np.arange(first_person, first_person + n),
        "household_id": first_hh + hh,
        "role": role, "male": male, "birth": birth, "age": age, "minor": minor,
        "era": era, "ethnicity": ethnicity, "style": style, "surname": surname,
        "given": given, "name": name, "former_name": former, "id18": id18,
        "migrant": migrant[hh], "rural": rural[hh] & migrant[hh],
        "hukou_address": p_hukou, "hukou_address_old": p_hukou_old,
        "hukou_address_short": p_hukou_short, "hukou_before_marriage": maiden,
        "current_address": current[hh], "previous_address": previous[hh],
        "move_date": move_date[hh], "phone": phone, "old_phone": old_phone,
        "phone_change": change_date, "landline": landline[hh], "guardian": guardian,
        "twin": twin, "cloned": clone, "city": d_city[hh],
        "district": np.where(d_dist == "", d_town, d_dist)[hh],
    })
