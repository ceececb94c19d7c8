"""Gender (GB/T 2261.1) and ethnicity (GB 3304-1991) normalization with quality flags.

Imports only the schema and the distinct-value helper; never the linking stages.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence

import opencc
import pandas as pd

from linkage import schema
from linkage.standardize._distinct import map_distinct, map_one
from linkage.standardize._fillers import is_filler_text

logger = logging.getLogger(__name__)

FLAGS: dict[str, str] = {
    "gender_unparsed": "gender value not recognized as male, female or an explicit unknown",
    "gender_placeholder": "an unknown gender (不详, 未知, code 0 or 9) or a filler (无, '-'); "
    "set to null",
    "ethnicity_unparsed": "ethnicity not recognized as a GB 3304 name, variant or code",
    "ethnicity_placeholder": "an unknown ethnicity (不详, 未说明民族, 99) or a filler (无, '-'); "
    "set to null",
}

# GB/T 2261.1: 0 unknown, 1 male, 2 female, 9 not stated. Explicit unknowns (null in this
# table) and the shared fillers (无, '-', N/A) become null flagged gender_placeholder, as a
# filler in every other field: the value says "unknown", so it counts as missing, not invalid.
_GENDER_TABLE: dict[str, str | None] = {
    "男": "M",
    "男性": "M",
    "男士": "M",
    "先生": "M",
    "m": "M",
    "male": "M",
    "1": "M",
    "女": "F",
    "女性": "F",
    "女士": "F",
    "f": "F",
    "female": "F",
    "2": "F",
    "0": None,
    "9": None,
    "未知": None,
    "未知的性别": None,
    "未说明": None,
    "未说明的性别": None,
    "不详": None,
    "u": None,
    "unknown": None,
}

# GB 3304-1991 numeric codes, in the standard's order (hand-written: no package ships them;
# cross-checked against several published code tables). 36 and 46 use the names adopted in
# 1986 / 1985 (毛南族, 德昂族); the old names are accepted as variants below.
ETHNICITIES: tuple[tuple[str, str], ...] = (
    ("01", "汉族"),
    ("02", "蒙古族"),
    ("03", "回族"),
    ("04", "藏族"),
    ("05", "维吾尔族"),
    ("06", "苗族"),
    ("07", "彝族"),
    ("08", "壮族"),
    ("09", "布依族"),
    ("10", "朝鲜族"),
    ("11", "满族"),
    ("12", "侗族"),
    ("13", "瑶族"),
    ("14", "白族"),
    ("15", "土家族"),
    ("16", "哈尼族"),
    ("17", "哈萨克族"),
    ("18", "傣族"),
    ("19", "黎族"),
    ("20", "傈僳族"),
    ("21", "佤族"),
    ("22", "畲族"),
    ("23", "高山族"),
    ("24", "拉祜族"),
    ("25", "水族"),
    ("26", "东乡族"),
    ("27", "纳西族"),
    ("28", "景颇族"),
    ("29", "柯尔克孜族"),
    ("30", "土族"),
    ("31", "达斡尔族"),
    ("32", "仫佬族"),
    ("33", "羌族"),
    ("34", "布朗族"),
    ("35", "撒拉族"),
    ("36", "毛南族"),
    ("37", "仡佬族"),
    ("38", "锡伯族"),
    ("39", "阿昌族"),
    ("40", "普米族"),
    ("41", "塔吉克族"),
    ("42", "怒族"),
    ("43", "乌孜别克族"),
    ("44", "俄罗斯族"),
    ("45", "鄂温克族"),
    ("46", "德昂族"),
    ("47", "保安族"),
    ("48", "裕固族"),
    ("49", "京族"),
    ("50", "塔塔尔族"),
    ("51", "独龙族"),
    ("52", "鄂伦春族"),
    ("53", "赫哲族"),
    ("54", "门巴族"),
    ("55", "珞巴族"),
    ("56", "基诺族"),
    ("97", "其他"),
    ("98", "外国血统中国籍人士"),
)
ETHNICITY_NAME_BY_CODE: dict[str, str] = dict(ETHNICITIES)
ETHNICITY_CODE_BY_NAME: dict[str, str] = {name: code for code, name in ETHNICITIES}

# Variants seen in registries, each unambiguous: colloquial short forms (维族, 蒙族), pre-1986
# names, a common homophone typo (布衣族). 哈族 is left out on purpose: 哈萨克 or 哈尼.
# 穿青人 and 未识别民族 are groups without an official ethnicity, coded 97 其他 in GB 3304.
_ETHNICITY_VARIANTS: dict[str, str] = {
    "维族": "05",
    "蒙族": "02",
    "毛难族": "36",
    "毛难": "36",
    "崩龙族": "46",
    "崩龙": "46",
    "布衣族": "09",
    "其它": "97",
    "穿青人": "97",
    "未识别民族": "97",
    "未识别": "97",
    "外国血统": "98",
}
_ETHNICITY_UNKNOWN = frozenset({"未知", "不详", "未说明", "未说明民族", "99"})

_T2S = opencc.OpenCC("t2s")
_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"\d{1,3}(?:\.0+)?")


def _ethnicity_lookup() -> dict[str, str]:
    """Every accepted spelling (after normalization) -> two-digit code."""
    table: dict[str, str] = {}
    for code, name in ETHNICITIES:
        table[name] = code
        if name.endswith("族"):
            table[name.removesuffix("族")] = code  # 汉, 维吾尔: registries drop the 族
    table.update(_ETHNICITY_VARIANTS)
    return table


_ETHNICITY_TABLE = _ethnicity_lookup()


def _clean(value: object) -> str:
    """Text form of a raw value: NFKC (full-width folded), no whitespace, ``1.0`` -> ``1``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = unicodedata.normalize("NFKC", str(value))
    return _SPACES.sub("", text)


def _join(flags: list[str]) -> str:
    return schema.QUALITY_SEP.join(flags)


def _gender_distinct(values: Sequence[object]) -> pd.DataFrame:
    out_std: list[str | None] = []
    out_flags: list[str] = []
    for value in values:
        text = _clean(value).lower()
        if text.endswith(".0") and text[:-2].isdigit():
            text = text[:-2]
        if text == "":
            out_std.append(None)
            out_flags.append("")
        elif text in _GENDER_TABLE:
            std = _GENDER_TABLE[text]
            out_std.append(std)
            out_flags.append("" if std else "gender_placeholder")
        elif is_filler_text(text):
            out_std.append(None)
            out_flags.append("gender_placeholder")
        else:
            out_std.append(None)
            out_flags.append("gender_unparsed")
    return pd.DataFrame({schema.GENDER_STD: out_std, schema.QUALITY_FLAGS: out_flags})


def standardize_gender(values: pd.Series) -> pd.DataFrame:
    """Normalize gender to ``M`` / ``F`` / null: ``gender_placeholder`` where the value says
    unknown (不详, 未知, GB/T 2261.1 code 0 or 9, a filler such as 无 or '-'),
    ``gender_unparsed`` where it is not recognized."""
    return map_distinct(values, gender_parser())


def gender_parser() -> Callable[[Sequence[object]], pd.DataFrame]:
    """The function :func:`standardize_gender` maps over a column's distinct values."""
    return _gender_distinct


def ethnicity_code(value: object) -> str | None:
    """Return the two-digit GB 3304 code of one raw ethnicity value, or None."""
    text = _T2S.convert(_clean(value))
    if _NUMBER.fullmatch(text):
        code = f"{int(float(text)):02d}"
        return code if code in ETHNICITY_NAME_BY_CODE else None
    code = _ETHNICITY_TABLE.get(text)
    if code is None and text.endswith("人"):
        # 汉族人 / 回人: the 人 suffix adds nothing
        code = _ETHNICITY_TABLE.get(text.removesuffix("人"))
    return code


def _ethnicity_distinct(values: Sequence[object]) -> pd.DataFrame:
    names: list[str | None] = []
    codes: list[str | None] = []
    flags: list[str] = []
    for value in values:
        text = _clean(value)
        code = ethnicity_code(value) if text else None
        names.append(ETHNICITY_NAME_BY_CODE.get(code) if code else None)
        codes.append(code)
        if code or text == "":
            flags.append("")
        elif _T2S.convert(text) in _ETHNICITY_UNKNOWN or is_filler_text(text):
            # says "unknown": missing, as a filler in every other field
            flags.append("ethnicity_placeholder")
        else:
            flags.append("ethnicity_unparsed")
    return pd.DataFrame(
        {schema.ETHNICITY_STD: names, schema.ETHNICITY_CODE: codes, schema.QUALITY_FLAGS: flags}
    )


def standardize_ethnicity(values: pd.Series) -> pd.DataFrame:
    """Normalize ethnicity to the GB 3304 name and two-digit code: ``ethnicity_placeholder``
    where the value says unknown (不详, 未说明民族, 99, a filler such as 无 or '-'),
    ``ethnicity_unparsed`` where it is not recognized."""
    return map_distinct(values, ethnicity_parser())


def ethnicity_parser() -> Callable[[Sequence[object]], pd.DataFrame]:
    """The function :func:`standardize_ethnicity` maps over a column's distinct values."""
    return _ethnicity_distinct


def standardize_gender_value(value: str) -> dict:
    """:func:`standardize_gender` of one non-null value, as a dict of column -> value."""
    return map_one(value, _gender_distinct)


def standardize_ethnicity_value(value: str) -> dict:
    """:func:`standardize_ethnicity` of one non-null value, as a dict of column -> value."""
    return map_one(value, _ethnicity_distinct)
