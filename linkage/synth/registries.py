"""The three synthetic registries: who appears where, each registry's own columns and formats,
the files they are exported to and the source configs that read them back.

Imports the synth population and corruption modules and the schema; never a stage module.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from linkage import schema
from linkage.synth import _tables as T
from linkage.synth import corrupt as C
from linkage.synth import population as P

logger = logging.getLogger(__name__)

WINDOW_START = P.REFERENCE_DATE - np.timedelta64(3 * 365, "D")
EXCEL_EPOCH = np.datetime64("1899-12-30", "D")

# Registry column headers (Chinese, as exported) -> canonical field, per registry.
POLICE_COLUMNS: dict[str, str | None] = {
    "登记编号": schema.RECORD_ID,
    "姓名": schema.NAME,
    "曾用名": schema.FORMER_NAME,
    "性别": schema.GENDER,
    "出生日期": schema.BIRTH_DATE,
    "民族": schema.ETHNICITY,
    "公民身份号码": schema.ID_NUMBER,
    "联系电话": schema.PHONE,
    "户籍地址": schema.HUKOU_ADDRESS,
    "现住址": schema.CURRENT_ADDRESS,
    "登记日期": schema.REGISTERED_AT,
    "居住证状态": None,
    "现居住地所属区": None,
}
CIVIL_COLUMNS: dict[str, str | None] = {
    "业务编号": schema.RECORD_ID,
    "姓名": schema.NAME,
    "性别": schema.GENDER,
    "出生日期": schema.BIRTH_DATE,
    "民族": schema.ETHNICITY,
    "身份证号": schema.ID_NUMBER,
    "手机": schema.PHONE,
    "户籍所在地": schema.HUKOU_ADDRESS,
    "办理日期": schema.REGISTERED_AT,
    "业务类型": None,
}
HEALTH_COLUMNS: dict[str, str | None] = {
    "健康档案编号": schema.RECORD_ID,
    "居民姓名": schema.NAME,
    "性别": schema.GENDER,
    "出生日期": schema.BIRTH_DATE,
    "证件号码": schema.ID_NUMBER,
    "联系电话": schema.PHONE,
    "现居住地址": schema.CURRENT_ADDRESS,
    "建档日期": schema.REGISTERED_AT,
    "档案类型": None,
    "所属区": None,
}
REGISTRY_COLUMNS = {
    "police": POLICE_COLUMNS,
    "civil_affairs": CIVIL_COLUMNS,
    "health": HEALTH_COLUMNS,
}
FILE_ENCODINGS = {"police": "utf-8", "civil_affairs": "gb18030", "health": "utf-8-sig"}
# What the configs declare: the civil-affairs export is a GBK file (its bytes are GB18030's
# for every GBK character; the reader decodes "gbk" as GB18030 so user-defined codes survive).
CONFIG_ENCODINGS = {"police": "utf-8", "civil_affairs": "gbk", "health": "utf-8-sig"}


def _rng(seed: int, stage: int, source: str) -> np.random.Generator:
    return np.random.default_rng([seed, stage, C.SOURCES.index(source), 29])


def _ages(persons: pd.DataFrame, at: np.datetime64 = P.REFERENCE_DATE) -> np.ndarray:
    birth = persons[schema.BIRTH_DATE].to_numpy().astype("datetime64[D]")
    return (at - birth).astype(np.int64) / 365.25


def _reg_dates(rng, birth: np.ndarray, n: int) -> np.ndarray:
    """Registration dates in the last three years, never before birth."""
    lo = np.maximum(WINDOW_START, birth + np.timedelta64(1, "D"))
    span = (P.REFERENCE_DATE - lo).astype(np.int64)
    return lo + (rng.random(n) * (span + 1)).astype(np.int64).astype("timedelta64[D]")


def _with_duplicates(rng, rows: np.ndarray, birth: np.ndarray, rate: float):
    """Add a second record for ``rate`` of ``rows``; the older copy is flagged."""
    dup = rows[rng.random(len(rows)) < rate]
    all_rows = np.concatenate([rows, dup])
    dates = _reg_dates(rng, birth[all_rows], len(all_rows))
    # The first of two copies is the older registration.
    k = len(rows)
    pos = np.searchsorted(rows, dup)
    first, second = dates[pos].copy(), dates[k:].copy()
    dates[pos], dates[k:] = np.minimum(first, second), np.maximum(first, second)
    older = np.zeros(len(all_rows), dtype=bool)
    older[pos] = True
    return all_rows, dates, older


_Selection = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # rows, dates, older, type


def _select_police(persons: pd.DataFrame, rng: np.random.Generator) -> _Selection:
    age = _ages(persons)
    birth = persons[schema.BIRTH_DATE].to_numpy().astype("datetime64[D]")
    p = np.where(age >= 16, 0.92, 0.75)
    rows = np.flatnonzero(rng.random(len(persons)) < p)
    rows, dates, older = _with_duplicates(rng, rows, birth, 0.12)
    return rows, dates, older, np.full(len(rows), "", dtype=object)


def _select_civil(persons: pd.DataFrame, rng: np.random.Generator) -> _Selection:
    age = _ages(persons)
    birth = persons[schema.BIRTH_DATE].to_numpy().astype("datetime64[D]")
    role = persons[P.ROLE].to_numpy()
    # Marriage registration: both spouses on the same day.
    spouses = np.flatnonzero((role == "spouse") & (age >= 20) & (age < 60))
    spouses = spouses[rng.random(len(spouses)) < 0.3]
    couple = np.concatenate([spouses - 1, spouses])  # the head is the row before the spouse
    couple_dates = np.tile(_reg_dates(rng, birth[spouses], len(spouses)), 2)
    # Social assistance of several kinds, adults mostly.
    p = np.where(age >= 18, 0.22, 0.03)
    help_rows = np.flatnonzero(rng.random(len(persons)) < p)
    help_rows, help_dates, help_older = _with_duplicates(rng, help_rows, birth, 0.03)
    kinds = np.array(T.CIVIL_ASSISTANCE_TYPES, dtype=object)
    help_kind = kinds[rng.integers(0, len(kinds), len(help_rows))]
    rows = np.concatenate([couple, help_rows])
    dates = np.concatenate([couple_dates, help_dates])
    older = np.concatenate([np.zeros(len(couple), bool), help_older])
    rtype = np.concatenate([np.full(len(couple), "婚姻登记", dtype=object), help_kind])
    return rows, dates, older, rtype


def _select_health(persons: pd.DataFrame, rng: np.random.Generator) -> _Selection:
    age = _ages(persons)
    birth = persons[schema.BIRTH_DATE].to_numpy().astype("datetime64[D]")
    female = persons[schema.GENDER].to_numpy() == "F"
    role = persons[P.ROLE].to_numpy()
    n = len(persons)
    parts = []
    rows = np.flatnonzero(rng.random(n) < 0.8)
    rows, dates, older = _with_duplicates(rng, rows, birth, 0.05)
    parts.append((rows, dates, older, "健康档案"))
    # Vaccination files exist only for children 0-6.
    rows = np.flatnonzero((age < 7) & (rng.random(n) < 0.92))
    parts.append(
        (rows, _reg_dates(rng, birth[rows], len(rows)), np.zeros(len(rows), bool), "预防接种")
    )
    # Maternal care: women 15-49, about one in eight pregnant within the window.
    fertile = female & (age >= 15) & (age < 50)
    p_preg = np.where((age >= 20) & (age < 40), 0.16, 0.03)
    rows = np.flatnonzero(fertile & (rng.random(n) < p_preg))
    parts.append(
        (rows, _reg_dates(rng, birth[rows], len(rows)), np.zeros(len(rows), bool), "孕产妇保健")
    )
    married = fertile & np.isin(role, ("head", "spouse")) & (age >= 20)
    rows = np.flatnonzero(married & (rng.random(n) < 0.35))
    parts.append(
        (rows, _reg_dates(rng, birth[rows], len(rows)), np.zeros(len(rows), bool), "计划生育服务")
    )
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([np.full(len(p[0]), p[3], dtype=object) for p in parts]),
    )


_SELECT = {"police": _select_police, "civil_affairs": _select_civil, "health": _select_health}


def build_records(persons: pd.DataFrame, source: str, seed: int) -> C.Records:
    """Choose who appears in ``source`` (some twice) and copy their true values."""
    rng = _rng(seed, 1, source)
    rows, dates, older, rtype = _SELECT[source](persons, rng)
    # File order: by registration date, ties in random order.
    order = np.lexsort((rng.random(len(rows)), dates))
    rows, dates, older, rtype = rows[order], dates[order], older[order], rtype[order]
    n = len(rows)

    def col(name: str) -> np.ndarray:
        return persons[name].to_numpy()[rows].copy()

    birth = persons[schema.BIRTH_DATE].to_numpy().astype("datetime64[D]")[rows]
    by = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    translit = persons[P.TRANSLITERATED].to_numpy()[rows]
    cols: dict[str, np.ndarray] = {
        "p": rows,
        "reg": dates,
        "rtype": rtype,
        "dup_older": older,
        "kind": np.where(translit, C.TRANSLIT, C.HAN),
        "sur": col(P.SURNAME),
        "giv": col(P.GIVEN),
        "tl": np.where(translit, col(schema.NAME), None),
        "latin": np.full(n, None, dtype=object),
        "name_sep": np.full(n, "", dtype=object),
        "name_spread": np.zeros(n, dtype=bool),
        "former_sur": col(P.FORMER_SURNAME),
        "former_giv": col(P.FORMER_GIVEN),
        "gender": col(schema.GENDER).astype(object),
        "by": by,
        "bm": (birth.astype("datetime64[M]") - birth.astype("datetime64[Y]")).astype(np.int64) + 1,
        "bd": (birth - birth.astype("datetime64[M]")).astype(np.int64) + 1,
        "id": col(schema.ID_NUMBER),
        "phone": col(schema.PHONE),
    }
    if source in ("police", "civil_affairs"):
        for key, name in (
            ("hk_prov", P.HK_PROVINCE),
            ("hk_city", P.HK_CITY),
            ("hk_county", P.HK_COUNTY),
            ("hk_detail", P.HK_DETAIL),
        ):
            cols[key] = col(name)
        cols["hk_short"] = np.zeros(n, dtype=np.int64)
    if source in ("police", "health"):
        cols["cur_district"] = col(P.CUR_DISTRICT)
        cols["cur_detail"] = col(P.CUR_DETAIL)
        cols["cur_short"] = np.zeros(n, dtype=np.int64)
    rec = C.Records(source, cols)
    if source == "health":
        # Health files rarely hold an ID: children almost never, adults often not.
        age = (dates - birth).astype(np.int64) / 365.25
        missing = rng.random(n) < np.where(age < 16, 0.97, 0.3)
        rec.cols["id"][missing] = None
        rec.mark("id_missing", missing)
    return rec


def corrupt_records(rec: C.Records, seed: int, scale: float) -> None:
    """Apply the field corruptions (address text and GBK storage follow in formatting)."""
    C.corrupt_names(rec, seed, scale)
    C.corrupt_ids(rec, seed, scale)
    C.corrupt_dates(rec, seed, scale)
    C.corrupt_contact(rec, seed, scale)
    C.corrupt_address_parts(rec, seed, scale)


def _short_province(names: np.ndarray) -> np.ndarray:
    pattern = re.compile("(" + "|".join(T.PROVINCE_SUFFIXES) + ")$")
    uniq, inverse = np.unique(names.astype(str), return_inverse=True)
    short = np.array([pattern.sub("", u) for u in uniq], dtype=object)
    return short[inverse.reshape(-1)]


def _hukou_text(c: dict, short_names: bool, full: np.ndarray) -> np.ndarray:
    # Only rows whose parts changed (or that use short names) are joined again.
    rows = np.arange(len(full)) if short_names else np.flatnonzero(c["hk_short"] > 0)
    prov = c["hk_prov"][rows]
    prov = _short_province(prov) if short_names else prov
    short = c["hk_short"][rows]
    out = full.copy()
    out[rows] = P.cat(
        np.where(short >= 1, "", prov),
        np.where(short >= 2, "", c["hk_city"][rows]),
        c["hk_county"][rows],
        c["hk_detail"][rows],
    )
    return out


def _current_text(rec: C.Records, full: np.ndarray) -> np.ndarray:
    c = rec.cols
    rows = np.flatnonzero((c["cur_short"] > 0) | rec.has("address_moved"))
    short = c["cur_short"][rows]
    out = full.copy()
    out[rows] = P.cat(
        np.where(short >= 1, "", T.DEST_PROVINCE).astype(object),
        np.where(short >= 2, "", T.DEST_CITY).astype(object),
        c["cur_district"][rows],
        c["cur_detail"][rows],
    )
    return out


def _dates(values: np.ndarray, style: str) -> np.ndarray:
    """Format datetime64[D] values in one of the registries' styles, per distinct date."""
    uniq, inverse = np.unique(values, return_inverse=True)
    ymd = P.ymd_strings(uniq)
    y, m, d = ([int(s[a:b]) for s in ymd] for a, b in ((0, 4), (4, 6), (6, 8)))
    if style == "iso":
        text = [f"{a:04d}-{b:02d}-{c:02d}" for a, b, c in zip(y, m, d, strict=True)]
    elif style == "slash":
        text = [f"{a}/{b}/{c}" for a, b, c in zip(y, m, d, strict=True)]
    else:
        raise ValueError(style)
    return np.array(text, dtype=object)[inverse.reshape(-1)]


_BIRTH_STYLES = ("iso", "compact", "chinese", "slash", "excel")


def _format_ymd(a: int, b: int, d: int, style: str) -> str:
    if style == "iso":
        return f"{a:04d}-{b:02d}-{d:02d}"
    if style == "compact":
        return f"{a:04d}{b:02d}{d:02d}"
    if style == "chinese":
        return f"{a}年{b}月{d}日"
    if style == "slash":
        return f"{a}/{b}/{d}"
    # Excel serial number: days since 1899-12-30
    date = np.datetime64(f"{a:04d}-{b:02d}-{d:02d}", "D")
    return str(int((date - EXCEL_EPOCH).astype(np.int64)))


def _birth_text(c: dict, style: np.ndarray) -> np.ndarray:
    """Birth dates as recorded (after corruption) in each record's style, per distinct value."""
    style_no = np.searchsorted(_BIRTH_STYLES, style, sorter=np.argsort(_BIRTH_STYLES))
    style_no = np.argsort(_BIRTH_STYLES)[style_no]
    key = ((c["by"] * 100 + c["bm"]) * 100 + c["bd"]) * 10 + style_no
    uniq, inverse = np.unique(key, return_inverse=True)
    text = np.array(
        [
            _format_ymd(
                int(k // 100000), int(k // 1000 % 100), int(k // 10 % 100), _BIRTH_STYLES[k % 10]
            )
            for k in uniq
        ],
        dtype=object,
    )
    return text[inverse.reshape(-1)]


def format_registry(rec: C.Records, persons: pd.DataFrame, seed: int, scale: float) -> pd.DataFrame:
    """Render the records in the registry's own columns and formats (source-specific)."""
    c = rec.cols
    rng = _rng(seed, 2, rec.source)
    n = len(rec)
    name = C.render_names(rec, persons[schema.NAME].to_numpy()[c["p"]])
    hukou_full = persons[schema.HUKOU_ADDRESS].to_numpy()[c["p"]]
    current_full = persons[schema.CURRENT_ADDRESS].to_numpy()[c["p"]]
    district = c.get("cur_district")
    serial = np.arange(1, n + 1)
    years = c["reg"].astype("datetime64[Y]").astype(np.int64) + 1970
    if rec.source == "police":
        hukou, current = _hukou_text(c, False, hukou_full), _current_text(rec, current_full)
        C.corrupt_address_text(rec, [hukou, current], seed, scale)
        former = np.where(
            (rng.random(n) < 0.7) & ~rec.has("former_name"),
            P.cat(*(np.where(pd.isna(c[k]), "", c[k]) for k in ("former_sur", "former_giv"))),
            "",
        )
        codes = np.array([T.DEST_DISTRICT_CODES[d] for d in district], dtype=object)
        rid = P.cat("JZ", codes, years.astype(str).astype(object), _zpad(serial, 7))
        settled = c["reg"] <= P.REFERENCE_DATE - np.timedelta64(182, "D")
        u = rng.random(n)
        permit = np.where(
            settled,
            np.where(u < 0.7, "已签发", np.where(u < 0.9, "未申领", "已过期")),
            np.where(u < 0.6, "受理中", "未申领"),
        )
        ethnicity = persons[schema.ETHNICITY].to_numpy()[c["p"]]
        values = [
            rid,
            name,
            np.where(former == "", None, former),
            _gender(c["gender"], {"M": "男", "F": "女"}, _unknown(rng, n, (None, "未知"))),
            _birth_text(c, np.full(n, "iso")),
            ethnicity,
            c["id"],
            c["phone"],
            hukou,
            current,
            _dates(c["reg"], "iso"),
            permit,
            district,
        ]
    elif rec.source == "civil_affairs":
        hukou = _hukou_text(c, True, hukou_full)
        C.corrupt_address_text(rec, [hukou], seed, scale)
        rid = P.cat("MZ", years.astype(str).astype(object), _zpad(serial, 8))
        # The marriage system writes 1985年3月7日, the assistance system 19850307.
        style = np.where(c["rtype"] == "婚姻登记", "chinese", "compact")
        ethnicity = persons[schema.ETHNICITY].to_numpy()[c["p"]]
        values = [
            rid,
            name,
            # GB/T 2261: 0 = not known, 9 = not stated; a blank cell is as common.
            _gender(c["gender"], {"M": "1", "F": "2"}, _unknown(rng, n, (None, "0", "9"))),
            _birth_text(c, style),
            np.array([e.removesuffix("族") for e in ethnicity], dtype=object),
            c["id"],
            c["phone"],
            hukou,
            _dates(c["reg"], "iso"),
            c["rtype"],
        ]
    else:
        current = _current_text(rec, current_full)
        C.corrupt_address_text(rec, [current], seed, scale)
        codes = np.array([T.DEST_DISTRICT_CODES[d] for d in district], dtype=object)
        station = rng.integers(1, 40, n)
        rid = P.cat(codes, "0", _zpad(station, 2), _zpad(serial, 8))
        # The vaccination and maternal-care systems write M/F, the health-file system 男/女.
        mf = np.isin(c["rtype"], ("预防接种", "孕产妇保健")) ^ (rng.random(n) < 0.1)
        unknown = _unknown(rng, n, (None, "未知"))
        gender = np.where(
            mf,
            _gender(c["gender"], {"M": "M", "F": "F"}, unknown),
            _gender(c["gender"], {"M": "男", "F": "女"}, unknown),
        )
        style = np.where(rng.random(n) < 0.02, "excel", "slash")
        values = [
            np.array(rid, dtype=object),
            name,
            gender,
            _birth_text(c, style),
            c["id"],
            c["phone"],
            current,
            _dates(c["reg"], "slash"),
            c["rtype"],
            district,
        ]
    headers = list(REGISTRY_COLUMNS[rec.source])
    frame = pd.DataFrame(
        {h: np.asarray(v, dtype=object) for h, v in zip(headers, values, strict=True)}
    )
    if rec.source == "civil_affairs":
        use_pua = _rng(seed, 3, rec.source).random(n) < 0.5
        hit = np.zeros(n, dtype=bool)
        for h in headers:
            frame[h], changed = C.substitute_gbk(frame[h].to_numpy(), use_pua)
            hit |= changed
        rec.mark("rare_char_substituted", hit)
    return frame


def _zpad(values: np.ndarray, width: int) -> np.ndarray:
    if len(values) == 0:
        return np.array([], dtype=object)
    return np.char.zfill(values.astype(str), width).astype(object)


def _unknown(rng: np.random.Generator, n: int, choices: tuple) -> np.ndarray:
    return np.array(choices, dtype=object)[rng.integers(0, len(choices), n)]


def _gender(values: np.ndarray, mapping: dict[str, str], unknown: np.ndarray) -> np.ndarray:
    """Map M/F to the registry's codes; a missing gender shows as that row's ``unknown``."""
    known = np.array([mapping.get(v) if v is not None else None for v in values], dtype=object)
    return np.where(pd.isna(values), unknown, known)


def truth_table(rec: C.Records, frame: pd.DataFrame, persons: pd.DataFrame) -> pd.DataFrame:
    """Ground truth rows for one registry: source, record_id, person_id, corruptions."""
    return pd.DataFrame(
        {
            schema.SOURCE: rec.source,
            schema.RECORD_ID: frame.iloc[:, 0].to_numpy(),
            schema.PERSON_ID: persons[schema.PERSON_ID].to_numpy()[rec.cols["p"]],
            schema.CORRUPTIONS: C.code_strings(rec.codes),
        }
    )


# --- files ------------------------------------------------------------------------------------


_NEEDS_QUOTES = re.compile(r'[",\r\n]')


def csv_text(frame: pd.DataFrame, lineterminator: str = "\n") -> str:
    """CSV text of a table of strings/None, as pandas writes it with minimal quoting."""
    cols = []
    for c in frame.columns:
        values = frame[c].to_numpy()
        cols.append(np.where(pd.isna(values), "", values).tolist())
    header = list(frame.columns)
    if any(_NEEDS_QUOTES.search("".join(col)) for col in [header, *cols]):
        return frame.to_csv(index=False, lineterminator=lineterminator)
    # Fast path (5x pandas): nothing needs quoting, so rows are plain joins.
    lines = map(",".join, zip(*cols, strict=True))
    return lineterminator.join([",".join(header), *lines]) + lineterminator


def write_csv(frame: pd.DataFrame, path: Path, source: str) -> None:
    """Write a registry CSV in its system's encoding (GBK bytes for civil affairs)."""
    if source == "civil_affairs":
        # Written as GB18030 bytes: identical to GBK for every character left after
        # substitution, and the PUA codes land in GBK's user-defined area.
        path.write_bytes(csv_text(frame, "\r\n").encode("gb18030"))
    else:
        path.write_bytes(csv_text(frame).encode(FILE_ENCODINGS[source]))


_FIXED_ZIP_TIME = (2024, 6, 30, 0, 0, 0)


def write_xlsx(frame: pd.DataFrame, path: Path) -> None:
    """Write an .xlsx with every cell as text, byte-identical for identical input."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("健康档案")
    ws.append(list(frame.columns))
    for row in frame.itertuples(index=False, name=None):
        ws.append(["" if v is None else v for v in row])
    buf = io.BytesIO()
    wb.save(buf)
    # openpyxl stamps the save time into docProps/core.xml and the zip entries: fix both.
    stamp = re.compile(rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:)")
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = stamp.sub(rb"\g<1>2024-06-30T00:00:00Z\g<3>", data)
            dst.writestr(
                zipfile.ZipInfo(info.filename, _FIXED_ZIP_TIME), data, zipfile.ZIP_DEFLATED
            )


def write_configs(
    output_dir: str | Path,
    excel: bool = False,
    *,
    name: str = "run.yaml",
    files: dict[str, str] | None = None,
) -> Path:
    """Write ``name`` (a run config) and ``sources/*.yaml`` describing the registry files.

    ``files`` maps source -> CSV file name for a run config over some sources only (the
    source schemas are left as written for ``run.yaml``); by default every registry's
    ``<source>.csv`` (``health.xlsx`` with ``excel``). Returns the run config's path.
    """
    out = Path(output_dir)
    (out / "sources").mkdir(parents=True, exist_ok=True)
    run: dict[str, dict] = {"sources": {}}
    for source, columns in REGISTRY_COLUMNS.items():
        if files is not None:
            if source in files:
                run["sources"][source] = {
                    "include": f"sources/{source}.yaml",
                    "path": files[source],
                    "encoding": CONFIG_ENCODINGS[source],
                }
            continue
        record_id = next(h for h, f in columns.items() if f == schema.RECORD_ID)
        spec: dict = {"record_id": record_id}
        filename = f"{source}.csv"
        if source == "health" and excel:
            filename = "health.xlsx"
        else:
            spec["encoding"] = CONFIG_ENCODINGS[source]
        spec["columns"] = {h: f for h, f in columns.items() if f not in (None, schema.RECORD_ID)}
        with (out / "sources" / f"{source}.yaml").open("w", encoding="utf-8") as fh:
            yaml.safe_dump(spec, fh, allow_unicode=True, sort_keys=False)
        run["sources"][source] = {"include": f"sources/{source}.yaml", "path": filename}
    path = out / name
    with path.open("w", encoding="utf-8") as fh:
        yaml.safe_dump(run, fh, allow_unicode=True, sort_keys=False)
    return path
