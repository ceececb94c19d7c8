"""The parts of a Chinese address detail (the text after the county-level district).

A detail reads township or street office, road and door number, estate or village, then the
building, unit and room: ``五常街道丰潭路405号西竹府13幢6单元701室``. Clerks write or drop
the first two at will (``西竹府13-6-701`` is the same flat), so comparing whole details, or
their numbers with the door number among them, tells one flat apart from itself. These rules
are written for this project (no library parses the part below the district); they only read
the text, already normalized (NFKC, simplified, numerals before units as digits).
"""

from __future__ import annotations

import re

# 2-8 characters ending in 街道 / 镇 / 乡, followed by more text (镇海路5号 is a road)
_SUBDISTRICT_RE = re.compile(r"^[\u4e00-\u9fff]{2,8}?(?:街道|镇|乡)(?=[\u4e00-\u9fff])")
# a road and its door number: 丰潭路405号, 人民南路4段1号, 五常大道157号, 固戍村2巷5号
_ROAD_NUMBER_RE = re.compile(
    r"^[\u4e00-\u9fff\d]{1,12}?(?:路|街|大道|道|巷|弄|胡同)(?:\d+段)?\d+(?:-\d+)?号"
)
_ESTATE_RE = re.compile(r"^[\u4e00-\u9fff]{2,16}")
# the word 社区 / 村 between a village's name and the road through it, which clerks write or
# drop (霄边社区龙洞路41号, 鹤洞村环城路222号 / 霄边龙洞路41号): not before a number (固戍村2巷)
_VILLAGE_WORD_RE = re.compile(
    r"(?:社区|村)(?=[\u4e00-\u9fff]{1,8}?(?:路|街|大道|道|巷|弄|胡同)(?:\d+段)?\d)"
)
_BUILDING_RE = re.compile(r"\d+")


def _parts(detail: str) -> tuple[str | None, str]:
    """(road and door number or None, what follows them), the street office dropped."""
    text = _SUBDISTRICT_RE.sub("", detail, count=1)
    road = _ROAD_NUMBER_RE.match(text)
    if road is None:
        return None, text
    return road.group(0), text[road.end() :]


def core_detail(detail: str) -> str:
    """The detail from its estate on, when a named estate follows the road and door number
    (``丰潭路405号西竹府13-6-701`` -> ``西竹府13-6-701``); otherwise the detail without its
    street office. A number after the door number (``固戍村2巷5号302``) is a room of that
    door, so the door stays."""
    road, rest = _parts(detail)
    if road is not None and _ESTATE_RE.match(rest):
        return rest
    return road + rest if road is not None else rest


def estate(detail: str | None) -> str | None:
    """The estate or village of a detail with the number after it, its building or group
    (``西竹府13`` from ``丰潭路405号西竹府13幢6单元701室`` and ``西竹府13-6-70``; ``吴湾村10``),
    or the road and door number where no name follows them (``文三路100号``; a village's
    name before the road kept, the word 社区 / 村 after it dropped: ``霄边社区龙洞路41号`` and
    ``霄边龙洞路41号`` both give ``霄边龙洞路41号``); None for a detail opening with a number
    (``12-3-401``) or empty. Estate names repeat across cities (和谐家园, 幸福小区): the
    building keeps the key to one block of flats."""
    return _estate_and_rest(detail)[0]


def _estate_and_rest(detail: str | None) -> tuple[str | None, str]:
    """(``estate(detail)``, the text after it: the unit and room of the flat)."""
    if not detail:
        return None, ""
    road, rest = _parts(detail)
    named = _ESTATE_RE.match(rest)
    if named:
        building = _BUILDING_RE.match(rest, named.end())
        end = building.end() if building else named.end()
        return rest[: end], rest[end:]
    if road is None:
        return None, rest
    return _VILLAGE_WORD_RE.sub("", road, count=1), rest


def flat(detail: str | None) -> str | None:
    """The numbers of a detail after its estate and building (``estate``), leading zeros
    dropped: the unit and room (``6-701`` from ``西竹府13幢6单元701室`` and from
    ``西竹府13-6-701``; ``302`` from ``固戍村2巷5号302``); None without an estate or without
    numbers after it. Two records of one person at one address agree on it however the
    clerk wrote the units, while people of one name in one estate seldom share a flat."""
    named, rest = _estate_and_rest(detail)
    if named is None:
        return None
    numbers = [n.lstrip("0") or "0" for n in _BUILDING_RE.findall(rest)]
    return "-".join(numbers) or None


def estate_and_flat(detail: str | None) -> tuple[str | None, str | None]:
    """``(estate(detail), flat(detail))`` parsing the detail once (blocking makes both keys
    of every distinct current address)."""
    named, rest = _estate_and_rest(detail)
    if named is None:
        return None, None
    numbers = [n.lstrip("0") or "0" for n in _BUILDING_RE.findall(rest)]
    return named, "-".join(numbers) or None


# a number with the unit it counts (13幢, 6单元, 701室, 100号, 312号楼, 12组, 13-)
_NUMBERED_RE = re.compile(r"\d+(?:号楼|单元|幢|栋|室|号|楼|层|组|-|#)?")


def named_part(detail: str) -> str | None:
    """A detail without its numbers and their units: the names in it (``西竹府13幢6单元701室``
    and ``西竹府13-6-701`` both give ``西竹府``), None when only numbers remain. Numbers are
    compared on their own, exactly; this is what is left to spell alike."""
    return _NUMBERED_RE.sub("", detail) or None
