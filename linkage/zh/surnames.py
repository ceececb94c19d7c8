"""Compound and common surnames, and the surname / given-name split of a Han name.

Imports nothing outside the standard library.
"""

from __future__ import annotations

import re

__all__ = [
    "COMMON_SURNAMES", "COMPOUND_SURNAMES", "married_own_name", "split_han", "split_surname"
]  # fmt: skip

# Compound surnames from the Hundred Family Surnames and modern registers. Left out on purpose:
# pairs whose second character is a common given-name character after a common single surname
# (宗政, 乐正, 谷梁, 岳帅, 年爱, 言福, 晋楚, 闫法, 涂钦): 宗政明 is far more often 宗 + 政明.
COMPOUND_SURNAMES: frozenset[str] = frozenset(
    """欧阳 司马 诸葛 上官 东方 皇甫 尉迟 令狐 长孙 万俟 夏侯 慕容 司徒 公孙 宇文 轩辕 端木 西门
    南宫 独孤 呼延 申屠 闻人 赫连 公羊 澹台 公冶 濮阳 淳于 单于 太叔 仲孙 钟离 鲜于 闾丘 司空
    亓官 司寇 仉督 子车 颛孙 巫马 公西 漆雕 壤驷 公良 拓跋 夹谷 宰父 段干 百里 东郭 南门 羊舌
    微生 梁丘 左丘 东门 第五 归海 公户 公玉 公仪 公乘 司空 第一 即墨 尉缭 呼衍 完颜 耶律
    """.split()
)
# Commonest single surnames (about 90% of the population): used only to decide the order of
# romanized names, so a short list beats the full one (nearly every syllable is some surname).
COMMON_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
    "龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞"
    "左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕"
    "屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧"
    "闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝"
)

_HAN_NAME_RE = re.compile(
    "[\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U000323af"
    "\ue000-\uf8ff\U000f0000-\U0010ffff?*]+"
)


def split_han(clean: str) -> tuple[str, str]:
    """(surname, given) of a cleaned Han name: a compound surname when one starts a 3+ name."""
    if len(clean) >= 3 and clean[:2] in COMPOUND_SURNAMES:
        return clean[:2], clean[2:]
    return clean[:1], clean[1:]


def split_surname(clean: str) -> tuple[str, str]:
    """Split a cleaned Han name into (surname, given); ("", clean) for minority or Latin names."""
    if not clean:
        return "", ""
    if "·" in clean or not _HAN_NAME_RE.fullmatch(clean):
        return "", clean
    return split_han(clean)


_COMMON_SET = frozenset(COMMON_SURNAMES)


def married_own_name(clean: str) -> str | None:
    """A married woman's own name in the form Hong Kong, Macao and Taiwan registers keep, her
    husband's surname in front of her own: 杨淑仪 from 李杨淑仪, 李美华 from 陈李美华. Only a
    name of four Han characters whose first two are both common single surnames
    (``COMMON_SURNAMES``) and not a compound surname; None otherwise (三 characters, 陈李华,
    read as surname and given name)."""
    if (
        len(clean) == 4
        and clean[0] in _COMMON_SET
        and clean[1] in _COMMON_SET
        and clean[:2] not in COMPOUND_SURNAMES
        and _HAN_NAME_RE.fullmatch(clean)
    ):
        return clean[1:]
    return None
