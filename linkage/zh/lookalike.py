"""Han characters of similar shape, confused when a record is copied by eye or by OCR.

Imports nothing outside the standard library.
"""

from __future__ import annotations

__all__ = ["LOOKALIKE", "lookalike_equal"]

# Hand-written: no dependency-light library ships a shape-confusion table (pycorrector's pulls
# in transformers; char-similar-z's licence is unchecked). One group per line; any two
# characters of a group are look-alikes. Homophones are left to the pinyin keys.
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
LOOKALIKE: dict[str, frozenset[str]] = {}
for _group in _LOOKALIKE_GROUPS.split():
    for _ch in _group:
        LOOKALIKE[_ch] = LOOKALIKE.get(_ch, frozenset()) | (frozenset(_group) - {_ch})
del _group, _ch


def lookalike_equal(a: str | None, b: str | None) -> bool:
    """True when a and b have the same length and differ only in look-alike characters."""
    if a is None or b is None or len(a) != len(b):
        return False
    return all(x == y or y in LOOKALIKE.get(x, ()) for x, y in zip(a, b, strict=True))
