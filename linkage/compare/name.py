"""Chinese-aware name comparison: exact, traditional/clean, truncated minority, homophone, dialect,
look-alike and near spellings, over current and former names.

Imports the schema, the names standardizer's scalar helpers and ``compare.base`` only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rapidfuzz.distance import JaroWinkler

from linkage import schema
from linkage.compare.base import (
    NULL_CODE,
    Comparison,
    Prepared,
    both,
    column,
    factorize,
    factorize_joint,
    map_uniques,
    pair_scores,
    recode,
    same,
)
from linkage.config import NameSpec
from linkage.zh.lookalike import lookalike_equal
from linkage.zh.romanization import spells_in_cantonese, spells_in_vietnamese
from linkage.zh.script import in_gbk
from linkage.zh.surnames import married_own_name
from linkage.zh.syllables import fuzzy_pinyin

logger = logging.getLogger(__name__)

_DOT = "\u00b7"  # names.clean_name unifies every minority separator to U+00B7
# Characters standing in for an unknown character: a substituted rare character (?, U+FFFD,
# PUA) or a privacy mask (*). Two such names may be different people, so never exact.
_WILD_RE = re.compile("[?*\ufffd\ue000-\uf8ff\U000f0000-\U0010ffff]")
_WILD_LOW, _WILD_HIGH = 0xE000, 0xF8FF
# Name flags (standardize.names.FLAGS codes without the field prefix) that bar exact levels:
# stand-in characters, masks, and placeholders such as 男婴 or 王先生 shared by many people.
NEVER_EXACT_FLAGS: tuple[str, ...] = ("pua", "question_mark", "masked", "newborn", "title")
# Name flags that make the name no evidence at all: a newborn's clinic file names the baby by
# a parent (李娜之女, 高子楠(婴)) or not at all (男婴), so it neither agrees nor disagrees with
# the child's name elsewhere; compared as missing.
VOID_FLAGS: tuple[str, ...] = ("newborn", "clan_form")
_CHAR_WIDTH = 4  # names up to 4 characters get a code-point matrix (look-alike and wildcards)
_LATIN_RE = re.compile("[A-Za-z]")

KIND_HAN, KIND_MINORITY, KIND_OTHER = 1, 2, 3


class NameComparison(Comparison):
    """Name agreement, best over current and former names of both records.

    Levels, closest last: ``exact`` raw text identical; ``clean_exact`` identical after cleaning
    (traditional, full-width, spaces, minority separators — also a missing separator);
    ``truncated`` a minority name cut to its first two parts, or a married woman's name with
    her husband's surname in front (李杨淑仪 / 杨淑仪, Hong Kong, Macao and Taiwan registers);
    ``pinyin`` homophones, and a
    romanized name equal to the Han name's pinyin in either order, or spelling its Cantonese
    sound as Hong Kong / Macao identity cards do (CHAN Tai Man / 陈大文, the Hong Kong
    government romanization of package cantonese-romanisation); ``fuzzy_pinyin`` dialect
    confusions (n/l, zh/z, an/ang, ...); ``lookalike`` same length, differing only in look-alike
    characters; ``similar`` a near spelling (see ``_similar``); ``transposed`` the last two
    characters (a two-character given name) swapped, 王小明 / 王明小, or a minority name's
    parts in another order (努尔古丽·阿卜杜拉 / 阿卜杜拉·努尔古丽); ``char_dropped`` one
    character of a two-character given name missing, 王小明 / 王明 (see ``_given_edits``);
    ``else``. Names with a stand-in or masked character never reach an exact level; a newborn
    placeholder (男婴, 李娜之女) is compared as missing, so a pair with it is null.
    """

    # the costliest comparison to prepare (pinyin tables, code-point matrices): prepared first
    prepare_cost = 1000

    type_name = "name"
    levels = list(NameSpec.LEVELS)
    EXACT, CLEAN, TRUNC, PINYIN, FUZZY, LOOKALIKE, SIMILAR = 9, 8, 7, 6, 5, 4, 3
    TRANSPOSED, DROPPED = 2, 1

    def __init__(
        self,
        name: str = "name",
        fields: Sequence[str] = (schema.NAME, schema.FORMER_NAME),
        similar_threshold: float = 0.92,
    ):
        if isinstance(fields, str):
            fields = [fields]
        if not fields:
            raise ValueError("fields must name at least one name field")
        if not 0.0 < float(similar_threshold) <= 1.0:
            raise ValueError(f"similar_threshold must be in (0, 1], got {similar_threshold!r}")
        self.name = name
        self.fields = list(fields)
        self.similar_threshold = float(similar_threshold)

    def params(self) -> dict[str, Any]:
        """Constructor settings."""
        return {"fields": list(self.fields), "similar_threshold": self.similar_threshold}

    @property
    def columns(self) -> list[str]:
        """Raw, clean, pinyin, alternative-order pinyin and fuzzy key of each field, plus flags."""
        cols = []
        for f in self.fields:
            cols += [f] + [
                schema.name_col(f, s) for s in ("clean", "pinyin", "pinyin_alt", "fuzzy")
            ]
        return cols + [schema.QUALITY_FLAGS]

    # ------------------------------------------------------------------------- prepare

    def prepare(self, values: Mapping[str, np.ndarray]) -> Prepared:
        """Codes per record for every key, in one code space across the name fields."""
        fields = self.fields
        n = len(column(values, schema.QUALITY_FLAGS))
        raw, _ = factorize_joint([column(values, f, n) for f in fields])
        clean, clean_u = factorize_joint(
            [column(values, schema.name_col(f, "clean"), n) for f in fields]
        )
        tables, strip_of, trunc_of, parts_of, kind_of, wild_of = _clean_tables(clean_u)

        def pinyin_space(suffix: str) -> list[np.ndarray]:
            return [column(values, schema.name_col(f, suffix), n) for f in fields]

        py_alt, py_table = _nospace_codes(pinyin_space("pinyin") + pinyin_space("pinyin_alt"))
        alt_raw = pinyin_space("pinyin_alt")
        fuzzy_alt = []
        for arr in alt_raw:  # the standardizer keys only the main order; fold the other here
            codes, uniques = factorize(arr)
            fuzzy_alt.append(map_uniques(codes, uniques, fuzzy_pinyin))
        fz, _ = _nospace_codes(pinyin_space("fuzzy") + fuzzy_alt)
        flags = column(values, schema.QUALITY_FLAGS, n)
        flagged_by_flags, void_by_flags = _flagged_fields(
            flags, fields, (NEVER_EXACT_FLAGS, VOID_FLAGS)
        )

        rows: dict[str, Any] = {}
        k = len(fields)
        for i, f in enumerate(fields):
            c = clean[i]
            rows[f] = Prepared(
                {
                    "raw": raw[i],
                    "strip": np.where(void_by_flags[i], NULL_CODE, recode(c, strip_of)),
                    "trunc": recode(c, trunc_of),
                    "parts": recode(c, parts_of),
                    "kind": np.append(kind_of, 0).astype(np.int8)[c],
                    "flag": np.append(wild_of, False)[c] | flagged_by_flags[i],
                    "py": py_alt[i],
                    "alt": py_alt[k + i],
                    "fz": fz[i],
                    "fzalt": fz[k + i],
                }
            )
        tables["pinyin"] = py_table
        return Prepared(rows, tables)

    # ------------------------------------------------------------------------- levels

    def _levels(self, left: Prepared, right: Prepared) -> np.ndarray:
        n = len(left.rows[self.fields[0]].rows["strip"])
        best = np.full(n, -1, dtype=np.int8)
        for fa in self.fields:
            for fb in self.fields:
                a, b = left.rows[fa], right.rows[fb]
                idx = np.flatnonzero(both(a.rows["strip"], b.rows["strip"]))
                if len(idx) == 0:
                    continue
                if len(idx) == n:
                    lv = self._pair_levels(a.rows, b.rows, left.tables)
                else:
                    lv = self._pair_levels(a.take(idx).rows, b.take(idx).rows, left.tables)
                best[idx] = np.maximum(best[idx], lv)
        return best

    def _pair_levels(self, a: dict, b: dict, t: dict) -> np.ndarray:
        k = len(a["strip"])
        lvl = np.zeros(k, dtype=np.int8)
        flagged = a["flag"] | b["flag"]
        open_ = ~flagged

        def assign(mask: np.ndarray, level: int) -> None:
            hit = open_ & mask
            lvl[hit] = level
            open_[hit] = False

        assign(same(a["raw"], b["raw"]), self.EXACT)
        assign(same(a["strip"], b["strip"]), self.CLEAN)
        assign(same(a["trunc"], b["strip"]) | same(b["trunc"], a["strip"]), self.TRUNC)
        assign(
            same(a["py"], b["py"]) | same(a["py"], b["alt"]) | same(a["alt"], b["py"]),
            self.PINYIN,
        )
        assign(_spelled_readings(a, b, t, open_), self.PINYIN)
        assign(
            same(a["fz"], b["fz"]) | same(a["fz"], b["fzalt"]) | same(a["fzalt"], b["fz"]),
            self.FUZZY,
        )
        length = t["length"]
        la, lb = length[a["strip"]], length[b["strip"]]
        han = (a["kind"] == KIND_HAN) & (b["kind"] == KIND_HAN)
        cand = np.flatnonzero(open_ & han & (la == lb) & (la <= _CHAR_WIDTH))
        if len(cand):
            hit = _lookalike(t["chars"][a["strip"][cand]], t["chars"][b["strip"][cand]])
            lvl[cand[hit]] = self.LOOKALIKE
            open_[cand[hit]] = False
        # a minority name's parts in the other order: the transposition of such names
        assign(same(a["parts"], b["parts"]), self.TRANSPOSED)
        self._similar(a, b, t, lvl, open_, flagged, han, la, lb)
        self._given_edits(a, b, t, lvl, open_, han, la, lb)
        return lvl

    def _given_edits(self, a, b, t, lvl, open_, han, la, lb) -> None:
        """Given-name characters swapped or one of them dropped, the two commonest slips in
        typing a name from speech or a handwritten form after a homophone (the independent
        registries tag them ``name_swap`` / ``name_drop``).

        Only a two-character given name qualifies: the shorter (or swapped) name keeps the
        first character (the surname, or the first of a compound one) and differs only in
        the last two positions. Twins differ in a character, not by a swap or a drop, so
        they stay ``else``; a parent and child sharing one given-name character is rare in
        Chinese naming (the child avoids the parent's characters) and the birth date tells
        them apart. Each edit has its own level, so EM weighs it on its own m and u.
        """
        chars, length = t["chars"], t["length"]
        # Swap: same length 3-4, equal up to the last two, which are exchanged.
        si = np.flatnonzero(open_ & han & (la == lb) & (la >= 3) & (la <= _CHAR_WIDTH))
        if len(si):
            ca, cb = chars[a["strip"][si]], chars[b["strip"][si]]
            n = la[si].astype(np.int64)
            rows = np.arange(len(si))
            x1, x2 = ca[rows, n - 2], ca[rows, n - 1]
            y1, y2 = cb[rows, n - 2], cb[rows, n - 1]
            head = np.ones(len(si), dtype=bool)
            for j in range(_CHAR_WIDTH - 2):
                head &= (j >= n - 2) | (ca[:, j] == cb[:, j])
            hit = si[head & (x1 == y2) & (x2 == y1) & (x1 != x2)]
            lvl[hit] = self.TRANSPOSED
            open_[hit] = False
        # Drop: the longer (3-4 characters) loses one of its last two characters.
        di = np.flatnonzero(open_ & han & (np.abs(la - lb) == 1) & (np.maximum(la, lb) >= 3))
        di = di[np.maximum(la, lb)[di] <= _CHAR_WIDTH]
        if len(di):
            swap = la[di] < lb[di]
            long_ = np.where(swap, b["strip"][di], a["strip"][di])
            short = np.where(swap, a["strip"][di], b["strip"][di])
            cl, cs = chars[long_], chars[short]
            n = length[long_].astype(np.int64)
            rows = np.arange(len(di))
            head = np.ones(len(di), dtype=bool)
            for j in range(_CHAR_WIDTH - 2):
                head &= (j >= n - 2) | (cl[:, j] == cs[:, j])
            last = cs[rows, n - 2]  # the short name's last character
            hit = head & ((last == cl[rows, n - 2]) | (last == cl[rows, n - 1]))
            lvl[di[hit]] = self.DROPPED
            open_[di[hit]] = False

    def _similar(self, a, b, t, lvl, open_, flagged, han, la, lb) -> None:
        """Near spellings, the weakest agreement.

        Two Han names of one length differing in one given-name character are how twins and
        siblings differ (王小明 / 王小亮), so they stay ``else`` unless pinyin or shape explains
        the difference; so do Han names one character longer or shorter, which in the synthetic
        households are mostly parent and child (刘国 / 刘国超). ``similar`` is kept for: names
        with a stand-in character that match elsewhere (张? / 张䶮); a rare character dropped
        (杨建䶮 / 杨建); romanized or minority names whose pinyin strings are Jaro-Winkler-close.
        """
        level = self.SIMILAR
        # Stand-in characters as wildcards: 张? vs 张䶮, 王先生 vs 王先生.
        fi = np.flatnonzero(flagged & (la == lb))
        if len(fi):
            sa, sb = a["strip"][fi], b["strip"][fi]
            ok = sa == sb
            short = np.flatnonzero(~ok & (la[fi] <= _CHAR_WIDTH))
            if len(short):
                ca, cb = t["chars"][sa[short]], t["chars"][sb[short]]
                wa, wb = _wild(ca), _wild(cb)
                used = ca != 0
                agree = (ca == cb) | wa | wb | ~used
                anchor = ((ca == cb) & ~wa & used).any(axis=1)
                ok[short] = agree.all(axis=1) & anchor
            lvl[fi[ok]] = level
        # A rare character dropped by a system that could not store it (杨建䶮 / 杨建).
        hi = np.flatnonzero(open_ & han & (np.abs(la - lb) == 1))
        if len(hi):
            sa, sb = a["strip"][hi], b["strip"][hi]
            dropped = same(t["derare"][sa], sb) | same(t["derare"][sb], sa)
            lvl[hi[dropped]] = level
            open_[hi[dropped]] = False
        # Romanized or minority names: spelling variants of the same sounds.
        other = (a["kind"] != KIND_HAN) | (b["kind"] != KIND_HAN)
        ji = np.flatnonzero(open_ & other & both(a["py"], b["py"]))
        if len(ji):
            strings = t["pinyin"]
            pa, pb = a["py"][ji], b["py"][ji]
            score = pair_scores(pa, pb, strings, JaroWinkler.normalized_similarity)
            for x, y in ((a["alt"][ji], pb), (pa, b["alt"][ji])):
                has = np.flatnonzero((x >= 0) & (y >= 0))
                if len(has):
                    alt = pair_scores(x[has], y[has], strings, JaroWinkler.normalized_similarity)
                    score[has] = np.maximum(score[has], alt)
            hit = ji[score >= self.similar_threshold - 1e-6]
            lvl[hit] = level
            open_[hit] = False


# ----------------------------------------------------------------------------- helpers


def _spelled_readings(a: dict, b: dict, t: dict, open_: np.ndarray) -> np.ndarray:
    """Pairs of a romanized and a Han name where the romanization spells the Han name's
    Cantonese sound, as Hong Kong and Macao identity cards write names (CHAN Tai Man /
    陈大文), or its Sino-Vietnamese readings, as a Vietnamese passport does (NGUYEN THI HOA /
    阮氏花): pinyin cannot show either (tai man / da wen, ruan shi hua). Checked once per
    distinct pair of names; romanized names are few."""
    out = np.zeros(len(open_), dtype=bool)
    a_latin = (a["kind"] == KIND_OTHER) & (b["kind"] == KIND_HAN)
    b_latin = (a["kind"] == KIND_HAN) & (b["kind"] == KIND_OTHER)
    idx = np.flatnonzero(open_ & (a_latin | b_latin))
    if len(idx) == 0:
        return out
    latin = np.where(a_latin[idx], a["strip"][idx], b["strip"][idx]).astype(np.int64)
    han = np.where(a_latin[idx], b["strip"][idx], a["strip"][idx]).astype(np.int64)
    keys, inverse = np.unique(latin * len(t["strip"]) + han, return_inverse=True)
    strings = t["strip"]
    found = np.array(
        [
            _spells_either(str(strings[k // len(strings)]), str(strings[k % len(strings)]))
            for k in keys.tolist()
        ],
        dtype=bool,
    )
    out[idx] = found[inverse.ravel()]
    return out


def _spells_either(latin: str, han: str) -> bool:
    return spells_in_cantonese(latin, han) or spells_in_vietnamese(latin, han)


def shortened(clean: str) -> str | None:
    """The shorter form of a clean name that level ``truncated`` matches against the other
    name: a long minority name cut to its first two parts, as registries cut them; a married
    woman's own name without her husband's surname in front (``married_own_name``: 杨淑仪 of
    李杨淑仪); None for other names."""
    if clean.count(_DOT) >= 2:
        return "".join(clean.split(_DOT)[:2])
    return married_own_name(clean)


def _clean_tables(
    clean_u: np.ndarray,
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct clean name: stripped/truncated codes, kind, wildcard flag; per stripped form:
    length, code-point matrix and the code of the form without rare characters."""
    strip = [u.replace(_DOT, "") for u in clean_u]
    trunc = [shortened(u) for u in clean_u]
    derare = [_without_rare(u) for u in strip]
    parts = [minority_parts_key(u) for u in clean_u]
    (strip_of, trunc_of, derare_of, parts_of), s_u = factorize_joint(
        [np.array(x, dtype=object) for x in (strip, trunc, derare, parts)]
    )
    kind = np.array(
        [
            KIND_MINORITY if _DOT in u else KIND_OTHER if _LATIN_RE.search(u) else KIND_HAN
            for u in clean_u
        ],
        dtype=np.int8,
    )
    wild = np.array([bool(_WILD_RE.search(u)) for u in clean_u], dtype=bool)
    s_list = [str(s) for s in s_u]
    fixed = np.array([s if len(s) <= _CHAR_WIDTH else "" for s in s_list], dtype=f"<U{_CHAR_WIDTH}")
    # derare per stripped form (strip codes index s_u; forms that are only trunc/derare get -1)
    by_strip = np.full(len(s_u), NULL_CODE, dtype=np.int32)
    by_strip[strip_of[strip_of >= 0]] = derare_of[strip_of >= 0]
    tables = {
        "strip": s_u,
        "length": np.array([len(s) for s in s_list], dtype=np.int16),
        "chars": fixed.view(np.uint32).reshape(len(s_list), _CHAR_WIDTH),
        "derare": by_strip,
    }
    return tables, strip_of, trunc_of, parts_of, kind, wild


def minority_parts_key(clean: str) -> str | None:
    """A minority name's parts in sorted order (努尔古丽·阿卜杜拉 and 阿卜杜拉·努尔古丽 share
    it: registries write a person's own name and the father's in either order), None for a
    name of one part."""
    if _DOT not in clean:
        return None
    parts = [p for p in clean.split(_DOT) if p]
    return "\u0000".join(sorted(parts)) if len(parts) >= 2 else None


def _without_rare(name: str) -> str | None:
    """The name without characters GBK cannot store, or None when it has none."""
    kept = "".join(ch for ch in name if in_gbk(ch))
    return kept if kept != name and kept else None


def _nospace_codes(arrays: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Joint codes of pinyin-like keys compared without spaces (``xi an`` = ``xian``, as typed)."""
    codes, uniques = factorize_joint(arrays)
    squeezed = np.array([str(u).replace(" ", "") for u in uniques], dtype=object)
    table, out_u = factorize(squeezed)
    return [recode(c, table) for c in codes], out_u


def _flagged_fields(
    flags: np.ndarray, fields: Sequence[str], code_sets: Sequence[Sequence[str]]
) -> list[list[np.ndarray]]:
    """Per set of flag codes, per field: True where the record's quality flags hold one of
    the set's codes for that name (``NEVER_EXACT_FLAGS``: exact agreement barred;
    ``VOID_FLAGS``: compared as missing). The flags are factorized once for all sets."""
    codes, uniques = factorize(flags)
    parts = [set(str(u).split(schema.QUALITY_SEP)) for u in uniques]
    out = []
    for codes_of in code_sets:
        per_field = []
        for f in fields:
            barred = {f"{f}_{code}" for code in codes_of}
            per = np.array([bool(barred & p) for p in parts] + [False])
            per_field.append(per[codes])
        out.append(per_field)
    return out


def _wild(chars: np.ndarray) -> np.ndarray:
    """True at code points that stand in for an unknown character."""
    return (
        (chars == ord("?"))
        | (chars == ord("*"))
        | (chars == 0xFFFD)
        | ((chars >= _WILD_LOW) & (chars <= _WILD_HIGH))
        | (chars >= 0xF0000)
    )


_PAIR_SHIFT = 21  # code points fit in 21 bits


def _lookalike(ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Rows whose code points differ in one position (two for 3+ characters), all look-alikes."""
    diff = ca != cb
    nd = diff.sum(axis=1)
    length = (ca != 0).sum(axis=1)
    sel = (nd == 1) | ((nd == 2) & (length >= 3))
    r, c = np.nonzero(diff & sel[:, None])
    if len(r) == 0:
        return np.zeros(len(ca), dtype=bool)
    key = (ca[r, c].astype(np.int64) << _PAIR_SHIFT) | cb[r, c].astype(np.int64)
    distinct, inverse = np.unique(key, return_inverse=True)
    mask = (1 << _PAIR_SHIFT) - 1
    good_u = np.array(
        [lookalike_equal(chr(int(x) >> _PAIR_SHIFT), chr(int(x) & mask)) for x in distinct],
        dtype=bool,
    )
    bad = np.bincount(r[~good_u[inverse.ravel()]], minlength=len(ca))
    return sel & (bad == 0)
