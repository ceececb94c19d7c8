"""The three registries as their clerks would have typed them, with a truth code per damage.

Each `render_*` takes one chunk of persons (see population.build_chunk) and returns the
registry's rows: its own Chinese headers plus `_person_id` and `_corruptions`
(`|`-joined codes), which the writer turns into truth.csv and drops from the file.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from . import names as N
from . import tables as T
from .population import REF, Profile, _s

# Headers of each registry (source column -> canonical field); the configs are written
# from these, so a header change cannot leave the configs behind.
POLICE = {"登记流水号": "record_id", "姓名": "name", "曾用名": "former_name", "性别": "gender",
          "民族": "ethnicity", "出生日期": "birth_date", "身份证号码": "id_number",
          "手机号码": "phone", "户籍地址": "hukou_address", "现住地址": "current_address",
          "登记时间": "registered_at"}
CIVIL = {"业务流水号": "record_id", "当事人姓名": "name", "性别代码": "gender",
         "出生年月日": "birth_date", "民族名称": "ethnicity", "身份证件号码": "id_number",
         "联系方式": "phone", "户口所在地": "hukou_address", "居住地址": "current_address",
         "办理日期": "registered_at"}
HEALTH = {"档案编号": "record_id", "姓名": "name", "性别": "gender", "出生日期": "birth_date",
          "身份证号": "id_number", "联系电话": "phone", "现住址": "current_address",
          "建档日期": "registered_at"}
EXTRA = {"police": ["登记单位"], "civil_affairs": ["业务类别"], "health": ["档案类型", "监护人姓名"]}

ID_FILLERS = ["不详", "无", "111111111111111111", "000000000000000000", "/"]
PHONE_FILLERS = ["无", "00000000000", "不详", "11111111111"]
DATE_FILLERS = ["不详", "", "0000-00-00"]
SEPARATORS = ["•", ".", "・", "-", " ", ""]
CN_DIGITS = "零一二三四五六七八九"
FULLWIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


class Damage:
    """Collects corruption codes per row; `apply` picks rows at a rate scaled by --corruption."""

    def __init__(self, n: int, rng: np.random.Generator, factor: float):
        self.codes = np.full(n, "", dtype=object)
        self.rng = rng
        self.factor = factor
        self.n = n

    def pick(self, rate: float, eligible: np.ndarray | None = None, scale: bool = True) -> np.ndarray:
        p = min(rate * (self.factor if scale else 1.0), 0.95)
        mask = self.rng.random(self.n) < p
        return mask if eligible is None else mask & eligible

    def tag(self, mask: np.ndarray, code: str) -> None:
        self.codes[mask] = self.codes[mask] + "|" + code

    def result(self) -> np.ndarray:
        return np.array([c[1:] for c in self.codes], dtype=object)


# --------------------------------------------------------------------------- membership
def memberships(rng: np.random.Generator, P: pd.DataFrame) -> dict[str, np.ndarray]:
    """Which persons each registry holds (every person in at least one)."""
    age, minor, male = P.age.to_numpy(), P.minor.to_numpy(), P.male.to_numpy()
    couple = P.role.isin(["head", "spouse"]).to_numpy() & (age > 22)
    p_police = np.where(minor, 0.35, np.where(age >= 65, 0.55, 0.72))
    p_civil = np.where(minor, 0.02, np.where(couple, 0.5, 0.25))
    p_health = np.where(minor, 0.85, np.where(~male & (age < 45), 0.7, np.where(age >= 65, 0.65, 0.45)))
    inp, inc, inh = (rng.random(len(P)) < p for p in (p_police, p_civil, p_health))
    none = ~(inp | inc | inh)
    inh |= none & minor
    inp |= none & ~minor
    return {"police": inp, "civil_affairs": inc, "health": inh}


def _rows(rng, member: np.ndarray, dup_rate: float) -> tuple[np.ndarray, np.ndarray]:
    base = np.flatnonzero(member)
    dup = base[rng.random(len(base)) < dup_rate]
    rows = np.r_[base, dup]
    return rows, np.r_[np.zeros(len(base), bool), np.ones(len(dup), bool)]


def _dates_between(rng, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo = lo.astype("datetime64[D]")
    hi = np.maximum(hi.astype("datetime64[D]"), lo + np.timedelta64(1, "D"))
    span = (hi - lo).astype(np.int64)
    return lo + (rng.random(len(lo)) * span).astype(np.int64).astype("timedelta64[D]")


def _ymd_parts(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    idx = pd.DatetimeIndex(d)
    return idx.year.to_numpy(), idx.month.to_numpy(), idx.day.to_numpy()


_TWO = np.array([f"{i:02d}" for i in range(100)], dtype=object)


def _fmt(y, m, d, style: str) -> np.ndarray:
    ys, ms, ds = _s(y), _s(m), _s(d)
    m2, d2 = _TWO[np.asarray(m) % 100], _TWO[np.asarray(d) % 100]
    if style == "iso":
        return ys + "-" + m2 + "-" + d2
    if style == "compact":
        return ys + m2 + d2
    if style == "slash2":
        return ys + "/" + m2 + "/" + d2
    if style == "slash":
        return ys + "/" + ms + "/" + ds
    if style == "dot":
        return ys + "." + ms + "." + ds
    if style == "cn":
        return ys + "年" + ms + "月" + ds + "日"
    if style == "yy_dot":
        return _TWO[np.asarray(y) % 100] + "." + ms + "." + ds
    if style == "cn_numeral":  # 一九八五年三月七日
        return np.array([_cn_year(a) + "年" + _cn_small(b) + "月" + _cn_small(c) + "日"
                         for a, b, c in zip(y, m, d)], dtype=object)
    if style == "excel":  # the day count Excel shows for a date cell read as a number
        serial = (pd.to_datetime(pd.DataFrame({"year": y, "month": m, "day": d}))
                  - pd.Timestamp("1899-12-30")).dt.days.to_numpy()
        return _s(serial)
    if style == "yy_cn":
        return _TWO[np.asarray(y) % 100] + "年" + ms + "月" + ds + "日"
    raise ValueError(style)


def _cn_year(y: int) -> str:
    return "".join("〇一二三四五六七八九"[int(c)] for c in str(y))


def _cn_small(n: int) -> str:
    tens, ones = divmod(int(n), 10)
    return ((CN_DIGITS[tens] if tens > 1 else "") + ("十" if tens else "")
            + (CN_DIGITS[ones] if ones or not tens else ""))


def _mixed_dates(rng, y, m, d, styles: list[str], weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    choice = rng.choice(len(styles), len(y), p=np.array(weights) / sum(weights))
    out = np.empty(len(y), dtype=object)
    for k, st in enumerate(styles):
        sel = choice == k
        if sel.any():
            out[sel] = _fmt(y[sel], m[sel], d[sel], st)
    return out, np.array(styles, dtype=object)[choice]


@lru_cache(maxsize=200_000)
def _lunar(y: int, m: int, d: int) -> tuple[int, int, int] | None:
    import lunardate

    try:
        ld = lunardate.LunarDate.from_solar_date(y, m, d)
    except (ValueError, AttributeError):
        try:
            ld = lunardate.LunarDate.fromSolarDate(y, m, d)
        except ValueError:
            return None
    day = min(ld.day, 28) if ld.month == 2 else ld.day
    return ld.year, ld.month, day


def _birth_errors(dm: Damage, y, m, d, rates: dict, eligible_lunar: np.ndarray):
    """Apply birth-date errors in place; returns (y, m, d, missing mask)."""
    y, m, d = y.copy(), m.copy(), d.copy()
    lunar = dm.pick(rates["lunar"], eligible_lunar)
    for i in np.flatnonzero(lunar):
        got = _lunar(int(y[i]), int(m[i]), int(d[i]))
        if got is None:
            lunar[i] = False
        else:
            y[i], m[i], d[i] = got
    dm.tag(lunar, "birth_lunar")
    swap = dm.pick(rates["dm_swap"], (d <= 12) & (d != m) & ~lunar)
    m[swap], d[swap] = d[swap], m[swap].copy()
    dm.tag(swap, "birth_dm_swap")
    typo = dm.pick(rates["year"], ~lunar & ~swap)
    y[typo] += np.where(dm.rng.random(int(typo.sum())) < 0.5, -1, 1)
    feb29 = typo & (m == 2) & (d == 29)
    d[feb29] = 28
    dm.tag(typo, "birth_year_typo")
    missing = dm.pick(rates["missing"])
    dm.tag(missing, "birth_missing")
    return y, m, d, missing


# --------------------------------------------------------------------------- IDs
def _id_errors(dm: Damage, ids: np.ndarray, rates: dict, born_before_85: np.ndarray) -> np.ndarray:
    out = ids.copy()
    legacy = dm.pick(rates["id15"], born_before_85)
    for i in np.flatnonzero(legacy):
        s = out[i]
        out[i] = s[:6] + s[8:17]
    dm.tag(legacy, "id_15")
    typo = dm.pick(rates["typo"], ~legacy)
    for i in np.flatnonzero(typo):
        s = out[i]
        p = int(dm.rng.integers(0, 17))
        digit = str((int(s[p]) + int(dm.rng.integers(1, 10))) % 10)
        out[i] = s[:p] + digit + s[p + 1:]
    dm.tag(typo, "id_typo")
    swap = dm.pick(rates["swap"], ~legacy & ~typo)
    for i in np.flatnonzero(swap):
        s = out[i]
        cand = [p for p in range(17) if s[p] != s[p + 1]]
        if not cand:
            swap[i] = False
            continue
        p = cand[int(dm.rng.integers(len(cand)))]
        out[i] = s[:p] + s[p + 1] + s[p] + s[p + 2:]
    dm.tag(swap, "id_swap")
    lower = dm.pick(rates.get("lower_x", 0.0), ~legacy, scale=False) & \
        np.array([s.endswith("X") for s in out])
    out[lower] = np.array([s[:-1] + "x" for s in out[lower]], dtype=object)
    dm.tag(lower, "id_lower_x")
    return out


def _excel(rng, s: str) -> str:
    """What Excel shows of an all-digit 18-digit ID: 15 significant digits, or scientific form.

    An ID ending in X is text to Excel and survives, so only all-digit IDs are eligible.
    """
    if rng.random() < 0.6:
        return s[:15] + "000"
    return f"{int(s[:17]) / 1e16:.5f}".rstrip("0") + "E+17"


# --------------------------------------------------------------------------- names
def _sep_variants(dm: Damage, names_: np.ndarray, rate: float) -> np.ndarray:
    out = names_.copy()
    has_dot = np.array(["·" in s for s in out])
    sel = dm.pick(rate, has_dot, scale=False)
    for i in np.flatnonzero(sel):
        out[i] = out[i].replace("·", SEPARATORS[int(dm.rng.integers(len(SEPARATORS)))])
    dm.tag(sel, "name_separator")
    return out


def _typed_name(rng, surname: str, given: str, kind: str) -> str | None:
    """One name with one typing error of `kind`, or None when the name offers none."""
    full = surname + given
    if kind in ("homophone", "dialect", "lookalike"):
        positions = list(range(len(full)))
        rng.shuffle(positions)
        for p in positions:
            c = full[p]
            is_sur = p < len(surname)
            if kind == "homophone":
                new = N.homophone_char(rng, c, is_sur)
            elif kind == "dialect":
                new = N.dialect_char(rng, c, is_sur)
            else:
                new = T.LOOKALIKE.get(c)
            if new:
                return full[:p] + new + full[p + 1:]
        return None
    if kind == "traditional":
        t = N.traditional(full)
        return t if t != full else None
    if kind == "drop":
        if len(given) < 2:
            return None
        p = int(rng.integers(len(given)))
        return surname + given[:p] + given[p + 1:]
    if kind == "swap":
        if len(given) < 2 or given[0] == given[1]:
            return None
        return surname + given[::-1]
    if kind == "space":
        return surname + ("　" if rng.random() < 0.5 else " ") + given
    if kind == "romanized":
        return N.romanized(surname, given, rng)
    raise ValueError(kind)


def _name_errors(dm: Damage, P: pd.DataFrame, rows: np.ndarray, names_: np.ndarray,
                 rates: dict[str, float]) -> np.ndarray:
    out = names_.copy()
    han = (P["style"].to_numpy()[rows] == "han")
    surname = P["surname"].to_numpy()[rows]
    given = P["given"].to_numpy()[rows]
    taken = np.zeros(dm.n, bool)
    for kind, rate in rates.items():
        sel = dm.pick(rate, han & ~taken)
        for i in np.flatnonzero(sel):
            if out[i] != surname[i] + given[i]:  # already the former name: leave it
                sel[i] = False
                continue
            new = _typed_name(dm.rng, surname[i], given[i], kind)
            if new is None or new == out[i]:
                sel[i] = False
            else:
                out[i] = new
        taken |= sel
        dm.tag(sel, f"name_{kind}")
    return out


def _former(dm: Damage, P, rows, names_: np.ndarray, rate: float) -> np.ndarray:
    former = P["former_name"].to_numpy()[rows]
    sel = dm.pick(rate, former != "", scale=False)
    out = names_.copy()
    out[sel] = former[sel]
    dm.tag(sel, "name_former")
    return out


def _truncate(dm: Damage, names_: np.ndarray) -> np.ndarray:
    out = names_.copy()
    long = np.array([s.count("·") >= 2 for s in out])
    sel = dm.pick(0.6, long, scale=False)
    out[sel] = np.array(["·".join(s.split("·")[:2]) for s in out[sel]], dtype=object)
    dm.tag(sel, "name_truncated")
    return out


# --------------------------------------------------------------------------- contact
def _timeline(dm: Damage, P, rows, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phone and current address as they were on the record date."""
    phone = P["phone"].to_numpy()[rows].copy()
    change = P["phone_change"].to_numpy()[rows]
    old = P["old_phone"].to_numpy()[rows]
    before = ~pd.isna(change) & (reg < change)
    phone[before] = old[before]
    dm.tag(before, "phone_changed")
    addr = P["current_address"].to_numpy()[rows].copy()
    move = P["move_date"].to_numpy()[rows]
    prev = P["previous_address"].to_numpy()[rows]
    earlier = ~pd.isna(move) & (reg < move) & (prev != "")
    addr[earlier] = prev[earlier]
    dm.tag(earlier, "address_previous")
    return phone, addr


def _phone_format(rng, phones: np.ndarray) -> np.ndarray:
    out = phones.copy()
    mob = np.array([len(p) == 11 and p.startswith("1") for p in out])
    style = rng.random(len(out))
    for i in np.flatnonzero(mob & (style < 0.12)):
        p = out[i]
        out[i] = (f"+86 {p[:3]} {p[3:7]} {p[7:]}" if style[i] < 0.04 else
                  f"{p[:3]}-{p[3:7]}-{p[7:]}" if style[i] < 0.08 else f"0086{p}")
    return out


def _cn_units(addr: str) -> str:
    """Numbers before address units in Chinese numerals: 19栋502室 -> 十九栋五零二室."""
    import re

    def cn(num: str) -> str:
        n = int(num)
        if n < 100:
            tens, ones = divmod(n, 10)
            return ((CN_DIGITS[tens] if tens > 1 else "") + ("十" if tens else "")
                    + (CN_DIGITS[ones] if ones or not tens else ""))
        return "".join(CN_DIGITS[int(c)] for c in num)

    return re.sub(r"(\d+)(?=[栋单元室号组])", lambda m: cn(m.group(1)), addr)


def _address_format(dm: Damage, addr: np.ndarray) -> np.ndarray:
    out = addr.copy()
    cnum = dm.pick(0.08)
    out[cnum] = np.array([_cn_units(a) for a in out[cnum]], dtype=object)
    noprov = dm.pick(0.25, ~cnum, scale=False)
    for i in np.flatnonzero(noprov):
        a = out[i]
        for p in ("省", "自治区"):
            k = a.find(p)
            if 0 < k < 9:
                out[i] = a[k + len(p):]
                break
    dm.tag(cnum, "address_format")
    return out


# --------------------------------------------------------------------------- registries
def render_police(rng, P: pd.DataFrame, member: np.ndarray, factor: float) -> pd.DataFrame:
    """Residence registration: valid IDs mostly, duplicates when people move."""
    rows, dup = _rows(rng, member, 0.03)
    n = len(rows)
    dm = Damage(n, rng, factor)
    dm.tag(dup, "duplicate")
    birth = P["birth"].to_numpy()[rows].astype("datetime64[D]")
    lo = np.maximum(birth + np.timedelta64(30, "D"), np.datetime64("2012-01-01"))
    reg = _dates_between(rng, lo, np.full(n, REF))
    y, m, d = _ymd_parts(birth)
    name = P["name"].to_numpy()[rows].copy()
    name = _sep_variants(dm, name, 0.15)
    name = _name_errors(dm, P, rows, name, {"traditional": 0.003, "space": 0.005})
    ids = _id_errors(dm, P["id18"].to_numpy()[rows], {"id15": 0.02, "typo": 0.004, "swap": 0.002,
                                                        "lower_x": 0.3}, y < 1985)
    miss_id = dm.pick(0.004)
    ids[miss_id] = ""
    dm.tag(miss_id, "id_missing")
    bdate = _fmt(y, m, d, "iso")
    phone, addr = _timeline(dm, P, rows, reg)
    phone = _phone_format(rng, phone)
    no_phone = rng.random(n) < 0.04
    phone[no_phone] = ""
    male = P["male"].to_numpy()[rows]
    ry, rm, rd = _ymd_parts(reg)
    unit = P["city"].to_numpy()[rows] + "公安局" + P["district"].to_numpy()[rows] + "分局"
    out = pd.DataFrame({
        "姓名": name, "曾用名": P["former_name"].to_numpy()[rows], "性别": np.where(male, "男", "女"),
        "民族": P["ethnicity"].to_numpy()[rows], "出生日期": bdate, "身份证号码": ids, "手机号码": phone,
        "户籍地址": P["hukou_address"].to_numpy()[rows], "现住地址": addr,
        "登记时间": _fmt(ry, rm, rd, "iso") + " " + _s(rng.integers(8, 18, n)) + ":" +
        _TWO[rng.integers(0, 60, n)] + ":00",
        "登记单位": unit,
    })
    return _finish(out, P, rows, dm)


def render_civil(rng, P: pd.DataFrame, member: np.ndarray, factor: float) -> pd.DataFrame:
    """Civil affairs: numeric gender codes, Chinese dates, older addresses, GBK."""
    rows, dup = _rows(rng, member, 0.01)
    n = len(rows)
    dm = Damage(n, rng, factor)
    dm.tag(dup, "duplicate")
    birth = P["birth"].to_numpy()[rows].astype("datetime64[D]")
    lo = np.maximum(birth + np.timedelta64(18 * 365, "D"), np.datetime64("2005-01-01"))
    reg = _dates_between(rng, np.minimum(lo, REF - np.timedelta64(2, "D")), np.full(n, REF))
    y, m, d = _ymd_parts(birth)
    name = P["name"].to_numpy()[rows].copy()
    name = _former(dm, P, rows, name, 0.35)
    name = _truncate(dm, name)
    name = _sep_variants(dm, name, 0.3)
    name = _name_errors(dm, P, rows, name, {"homophone": 0.008, "traditional": 0.004})
    rare_lost = np.array([any(c in T.NON_GBK for c in s) for s in name])
    dm.tag(rare_lost, "name_rare_lost")
    y2, m2, d2, missing = _birth_errors(dm, y, m, d, {"lunar": 0.0, "dm_swap": 0.004, "year": 0.004,
                                                       "missing": 0.005}, np.zeros(n, bool))
    bdate, _ = _mixed_dates(rng, y2, m2, d2, ["cn", "compact", "slash2", "cn_numeral"],
                            [0.53, 0.3, 0.14, 0.03])
    bdate[missing] = ""
    ids = _id_errors(dm, P["id18"].to_numpy()[rows], {"id15": 0.06, "typo": 0.004, "swap": 0.002},
                     y < 1985)
    spaced = dm.pick(0.01, np.array([len(s) == 18 for s in ids]))
    ids[spaced] = np.array([f"{s[:6]} {s[6:14]} {s[14:]}" for s in ids[spaced]], dtype=object)
    dm.tag(spaced, "id_spaces")
    miss_id = dm.pick(0.01)
    ids[miss_id] = ""
    dm.tag(miss_id, "id_missing")
    phone, addr = _timeline(dm, P, rows, reg)
    land = P["landline"].to_numpy()[rows]
    use_land = (land != "") & (rng.random(n) < 0.5)
    phone[use_land] = land[use_land]
    phone = _phone_format(rng, phone)
    phone[rng.random(n) < 0.2] = ""
    male = P["male"].to_numpy()[rows]
    code = rng.random(n) < 0.8
    gender = np.where(code, np.where(male, "1", "2"), np.where(male, "男", "女")).astype(object)
    wrong = dm.pick(0.002)
    gender[wrong] = np.where(code[wrong], np.where(male[wrong], "2", "1"), np.where(male[wrong], "女", "男"))
    dm.tag(wrong, "gender_wrong")
    eth = P["ethnicity"].to_numpy()[rows].copy()
    short_eth = rng.random(n) < 0.5
    eth[short_eth] = np.array([e[:-1] for e in eth[short_eth]], dtype=object)
    hukou = P["hukou_address"].to_numpy()[rows].copy()
    # a marriage registration records the bride's hukou before she moved it
    maiden = P["hukou_before_marriage"].to_numpy()[rows]
    before = (maiden != "") & (rng.random(n) < 0.6)
    hukou[before] = maiden[before]
    dm.tag(before, "address_hukou_before_marriage")
    old = P["hukou_address_old"].to_numpy()[rows]
    use_old = ~before & (old != hukou) & (rng.random(n) < 0.5)
    hukou[use_old] = old[use_old]
    dm.tag(use_old, "address_old_name")
    short = ~before & ~use_old & (rng.random(n) < 0.3)
    hukou[short] = P["hukou_address_short"].to_numpy()[rows][short]
    ry, rm, rd = _ymd_parts(reg)
    kinds = np.array(["结婚登记", "离婚登记", "最低生活保障", "临时救助", "殡葬服务", "婚姻状况证明"],
                     dtype=object)
    out = pd.DataFrame({
        "当事人姓名": name, "性别代码": gender, "出生年月日": bdate, "民族名称": eth,
        "身份证件号码": ids, "联系方式": phone, "户口所在地": hukou, "居住地址": addr,
        "办理日期": _fmt(ry, rm, rd, "compact"),
        "业务类别": kinds[rng.choice(len(kinds), n, p=[0.45, 0.1, 0.2, 0.1, 0.05, 0.1])],
    })
    return _finish(out, P, rows, dm)


def render_health(rng, P: pd.DataFrame, member: np.ndarray, factor: float,
                  profile: Profile) -> pd.DataFrame:
    """Health files: typed names, children without IDs, lunar birthdays, fillers, GB18030."""
    rows, dup = _rows(rng, member, 0.04)
    n = len(rows)
    dm = Damage(n, rng, factor)
    dm.tag(dup, "duplicate")
    birth = P["birth"].to_numpy()[rows].astype("datetime64[D]")
    lo = np.maximum(birth, np.datetime64("2010-01-01"))
    reg = _dates_between(rng, np.minimum(lo, REF - np.timedelta64(2, "D")), np.full(n, REF))
    minor_at_reg = (reg - birth).astype(int) < 16 * 365
    y, m, d = _ymd_parts(birth)
    name = P["name"].to_numpy()[rows].copy()
    name = _former(dm, P, rows, name, 0.3)
    name = _truncate(dm, name)
    name = _sep_variants(dm, name, 0.5)
    name = _name_errors(dm, P, rows, name, {
        "homophone": 0.04, "dialect": 0.015, "lookalike": 0.01, "traditional": 0.01,
        "drop": 0.006, "swap": 0.005, "space": 0.008, "romanized": 0.004})
    rural_old = P["rural"].to_numpy()[rows] & (y < 1985)
    y2, m2, d2, missing = _birth_errors(dm, y, m, d, {"lunar": 0.06, "dm_swap": 0.008,
                                                       "year": 0.012, "missing": 0.02}, rural_old)
    bdate, style = _mixed_dates(rng, y2, m2, d2,
                                ["iso", "slash", "compact", "dot", "yy_dot", "yy_cn", "excel"],
                                [0.44, 0.25, 0.1, 0.1, 0.05, 0.05, 0.01])
    dm.tag(np.isin(style, ["yy_dot", "yy_cn"]) & ~missing, "birth_two_digit")
    dm.tag((style == "excel") & ~missing, "birth_excel_serial")
    bdate[missing] = np.array(DATE_FILLERS, dtype=object)[rng.integers(0, len(DATE_FILLERS),
                                                                        int(missing.sum()))]
    ids = _id_errors(dm, P["id18"].to_numpy()[rows], {"id15": 0.01, "typo": 0.006, "swap": 0.003},
                     y < 1985)
    guardian = P["guardian"].to_numpy()[rows]
    child = minor_at_reg & (guardian >= 0)
    u = rng.random(n)
    g_rate = profile.guardian_id_rate
    no_id = child & (u < 0.7 * (1 - g_rate) / 0.9)
    g_id = child & ~no_id & (u < 0.7 * (1 - g_rate) / 0.9 + g_rate)
    ids[g_id] = P["id18"].to_numpy()[guardian[g_id]]
    dm.tag(g_id, "id_guardian")
    adult_missing = dm.pick(0.05, ~child)
    ids[no_id | adult_missing] = ""
    dm.tag(no_id | adult_missing, "id_missing")
    filler = dm.pick(0.02, ~child & ~adult_missing)
    ids[filler] = np.array(ID_FILLERS, dtype=object)[rng.integers(0, len(ID_FILLERS), int(filler.sum()))]
    dm.tag(filler, "id_filler")
    excel = dm.pick(0.01, ~child & ~adult_missing & ~filler & np.array([len(s) == 18 and s.isdigit() for s in ids]))
    ids[excel] = np.array([_excel(rng, s) for s in ids[excel]], dtype=object)
    dm.tag(excel, "id_excel")
    wide = dm.pick(0.004, np.array([len(x) == 18 for x in ids]))
    ids[wide] = np.array([x.translate(FULLWIDTH) for x in ids[wide]], dtype=object)
    dm.tag(wide, "id_fullwidth")
    phone, addr = _timeline(dm, P, rows, reg)
    dm.tag(child, "phone_guardian")
    pf = dm.pick(0.01)
    phone[pf] = np.array(PHONE_FILLERS, dtype=object)[rng.integers(0, len(PHONE_FILLERS), int(pf.sum()))]
    dm.tag(pf, "phone_filler")
    phone = _phone_format(rng, phone)
    addr = _address_format(dm, addr)
    male = P["male"].to_numpy()[rows]
    gender = np.where(male, "男", "女").astype(object)
    gm = dm.pick(0.01)
    gender[gm] = np.where(rng.random(int(gm.sum())) < 0.5, "未知", "")
    dm.tag(gm, "gender_missing")
    age_reg = (reg - birth).astype(int) / 365.25
    mother = (~male) & (age_reg >= 18) & (age_reg < 45) & (rng.random(n) < 0.5)
    kind = np.select([age_reg < 7, age_reg < 16, mother, age_reg >= 65],
                     ["0-6岁儿童", "儿童青少年", "孕产妇", "老年人"], "一般人群").astype(object)
    g_name = np.where(child, P["name"].to_numpy()[np.maximum(guardian, 0)], "")
    ry, rm, rd = _ymd_parts(reg)
    out = pd.DataFrame({
        "姓名": name, "性别": gender, "出生日期": bdate, "身份证号": ids, "联系电话": phone,
        "现住址": addr, "建档日期": _fmt(ry, rm, rd, "iso"), "档案类型": kind, "监护人姓名": g_name,
    })
    return _finish(out, P, rows, dm)


def _finish(out: pd.DataFrame, P: pd.DataFrame, rows: np.ndarray, dm: Damage) -> pd.DataFrame:
    out["_person_id"] = P["person_id"].to_numpy()[rows]
    out["_corruptions"] = dm.result()
    return out
