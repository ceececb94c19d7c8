"""Clustering stage: scored record pairs -> one cluster label per record.

Connected components first, then constrained reclustering of suspect components.
Imports only ``linkage.schema``, ``linkage.errors``, ``linkage.tables`` and ``linkage.zh``
from the package.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from linkage import schema
from linkage.errors import InputError
from linkage.tables import factorize_text, sorted_unique, text_at
from linkage.zh.surnames import split_han

logger = logging.getLogger(__name__)

# Columns of the cannot-link table besides schema.ROW (local to this stage's input).
CANNOT_LINK_KEY = "key"
CANNOT_LINK_GROUP = "group"


EXCEL_TAIL = "000"
# Cannot-link group suffix of a source's records without a recorded birth date.
UNDATED_GROUP = "\x1fundated"
# Cannot-link group of IDs their records' own birth dates witness, across every source.
DATED_GROUP = "\x1fdated"


def cannot_link_table(
    records: pd.DataFrame, *, same_source: bool = True, dated: bool = True
) -> pd.DataFrame | None:
    """The cannot-link table: two records of one source with different valid ID numbers are
    two people (a registry issues one ID per person; ``same_source``), and so, across
    sources, are two records whose different valid IDs each carry the record's own recorded
    birth date (``dated``, group ``DATED_GROUP``: twins with their own IDs in two
    registries, whose IDs share the region and date and may differ in one digit). Measured
    on the independent generator at 1 M records: of the candidate pairs whose two valid IDs
    both carry their records' birth dates and differ (ID levels ``else``, ``birth_region``
    and ``near_miss``), 1,439 are two people and one is one person (a typo that kept the
    check character and the date). An ID a float64 holds exactly (``_float_exact``: what a
    number column makes of an ID) forms no such constraint.

    An ID flagged ``id_not_own`` (a guardian's on a child's record) says nothing about who
    the record is, so it never forbids a link; nor does an ID ending in ``000``, the shape
    Excel leaves when it keeps 15 significant digits (DOMAIN.md): one in eleven such IDs
    passes the checksum by chance, and a real ID with that tail is about 1 in 11,000.

    A record without a recorded birth date may carry a guardian's ID that nothing flags (a
    child's clinic file under a parent's number, beside the child's own-ID file in the same
    registry): its ID forbids links only to other undated records of its source (group
    ``source`` + ``UNDATED_GROUP``); against dated records the ID comparison still weighs.

    Takes standardized records (``rid``, ``source``, ``id_std``, ``id_valid``,
    ``quality_flags``, optionally ``birth_date_std`` and ``id_birth_date``); returns ``rid``,
    ``key`` (the valid ID) and ``group`` (the source, or ``DATED_GROUP``), or None without
    IDs or rules.
    """
    if schema.ID_STD not in records or not (same_source or dated):
        return None
    valid = records[schema.ID_VALID].eq(True) if schema.ID_VALID in records else True
    if schema.QUALITY_FLAGS in records:
        valid = valid & ~records[schema.QUALITY_FLAGS].astype(str).str.contains("id_not_own")
    ids = records[schema.ID_STD].astype("string")
    valid = valid & ~ids.str.endswith(EXCEL_TAIL).fillna(False).to_numpy(dtype=bool)
    keyed = records[schema.ID_STD].where(valid)
    group = records[schema.SOURCE].astype(object).to_numpy()
    if schema.BIRTH_DATE_STD in records:
        undated = records[schema.BIRTH_DATE_STD].isna().to_numpy()
        group = np.where(undated, pd.Series(group, dtype=object) + UNDATED_GROUP, group)
    rows = records[schema.ROW].to_numpy()
    parts = []
    if same_source:
        parts.append(
            pd.DataFrame(
                {schema.ROW: rows, CANNOT_LINK_KEY: keyed.to_numpy(), CANNOT_LINK_GROUP: group}
            )
        )
    if dated and schema.BIRTH_DATE_STD in records and schema.ID_BIRTH_DATE in records:
        birth = records[schema.BIRTH_DATE_STD].astype("string")
        own = (birth == records[schema.ID_BIRTH_DATE].astype("string")).fillna(False)
        witnessed = keyed.where(own.to_numpy(dtype=bool) & ~_float_exact(keyed))
        parts.append(
            pd.DataFrame(
                {
                    schema.ROW: rows,
                    CANNOT_LINK_KEY: witnessed.to_numpy(),
                    CANNOT_LINK_GROUP: DATED_GROUP,
                }
            )
        )
    if not parts:
        return None
    return pd.concat(parts, ignore_index=True).dropna(subset=[CANNOT_LINK_KEY])


def cannot_link_codes(
    records: pd.DataFrame, *, same_source: bool = True, dated: bool = True
) -> pd.DataFrame | None:
    """:func:`cannot_link_table`'s constraints as integer codes, as ``cluster_pairs`` uses
    them (``row``, ``group``, ``key``: the same rows, and two constraints share a code
    exactly where they share the group or key text), without the text table: each rule is
    decided once per distinct ID, flag set, source and birth date, not per record. At twenty
    million records the text table (two rows per record, the IDs as Arrow text twice, a
    group string made per record) was gigabytes of the clustering stage. Takes the columns
    :func:`cannot_link_table` takes; None where it gives None. Raises InputError for a
    ``rid`` outside 0..len(records)-1.
    """
    if schema.ID_STD not in records or not (same_source or dated):
        return None
    n = len(records)
    arrow_ids = _arrow_text(records[schema.ID_STD])
    if arrow_ids is None:
        key_codes, key_values = pd.factorize(records[schema.ID_STD])
        key_codes = np.asarray(key_codes)
        values = pd.Series(np.asarray(key_values, dtype=object), dtype=object)
        text = values.astype("string")
        # per distinct ID: an Excel-rounded tail or empty text forms no constraint
        usable = ~(text.str.endswith(EXCEL_TAIL).fillna(False) | text.eq("").fillna(False))
        valid = key_codes >= 0
        valid &= np.append(usable.to_numpy(dtype=bool), False)[key_codes]
    else:
        # Arrow text (a spilling run's IDs, nearly one distinct value per record): checked
        # per row in pyarrow and coded by sorting, without a Python string per ID
        import pyarrow.compute as pc

        key_codes = _sorted_codes(arrow_ids)
        unusable = pc.or_(pc.ends_with(arrow_ids, EXCEL_TAIL), pc.equal(arrow_ids, ""))
        valid = (key_codes >= 0) & ~unusable.fill_null(False).to_numpy(zero_copy_only=False)
    if schema.ID_VALID in records:
        valid &= records[schema.ID_VALID].eq(True).to_numpy(dtype=bool, na_value=False)
    if schema.QUALITY_FLAGS in records:
        flags = records[schema.QUALITY_FLAGS]
        try:
            flag_codes, distinct = pd.factorize(flags)
        except TypeError:  # unhashable flag values (lists): their text, row by row
            text = flags.astype(str)
            valid &= ~text.str.contains("id_not_own").to_numpy(dtype=bool)
        else:
            not_own = pd.Series(np.asarray(distinct, dtype=object), dtype=object).astype(str)
            not_own = not_own.str.contains("id_not_own").to_numpy(dtype=bool)
            valid &= ~np.append(not_own, False)[np.asarray(flag_codes)]
    rows_all = records[schema.ROW].to_numpy()
    sources = records[schema.SOURCE]
    # Arrow text factorizes as it is; ``astype(object)`` would make a str per record
    src_codes, src_names = pd.factorize(
        sources if _is_arrow_text(sources.dtype) else sources.astype(object)
    )
    src_codes = np.asarray(src_codes, dtype=np.int64)
    undated = (
        records[schema.BIRTH_DATE_STD].isna().to_numpy()
        if schema.BIRTH_DATE_STD in records
        else np.zeros(n, dtype=bool)
    )
    # group texts as cannot_link_table writes them: source, source + UNDATED_GROUP, and
    # DATED_GROUP last; one code per distinct text
    names = [str(s) for s in src_names]
    texts = names + [s + UNDATED_GROUP for s in names] + [DATED_GROUP]
    group_of, group_texts = pd.factorize(pd.Series(texts, dtype=object))
    group_of = np.asarray(group_of, dtype=np.int64)
    collided = len(group_texts) < len(texts)
    parts = []
    if same_source:
        at = np.flatnonzero(valid)
        group = group_of[src_codes[at] + len(names) * undated[at]]
        group[src_codes[at] < 0] = -1  # a null source: a null group, as factorize codes it
        parts.append((at, group))
    if dated and schema.BIRTH_DATE_STD in records and schema.ID_BIRTH_DATE in records:
        own = _same_text(records[schema.BIRTH_DATE_STD], records[schema.ID_BIRTH_DATE])
        if arrow_ids is None:
            exact = np.append(_float_exact(values), False)[key_codes]
        else:
            exact = _float_exact_arrow(arrow_ids)
        at = np.flatnonzero(valid & own & ~exact)
        parts.append((at, np.full(len(at), group_of[-1], dtype=np.int64)))
    if not parts:
        return None
    at = np.concatenate([a for a, _ in parts])
    rows = _row_numbers(pd.Series(rows_all[at]), n, schema.ROW)
    group = np.concatenate([g for _, g in parts])
    del parts
    # int32 where the values fit (up to two constraints a record: ~0.4 GB fewer at twenty
    # million records), each column its own array (``copy=False``: not copied into a block)
    narrow = np.int32 if n < 2**31 else np.int64
    codes = pd.DataFrame(
        {
            "row": rows.astype(narrow),
            "group": group.astype(np.int32),
            "key": key_codes[at].astype(narrow),
        },
        copy=False,
    )
    del rows, group, at
    # two group texts alike (a source named as another's undated group): the table's rows
    # then repeat, as _cannot_link_codes sees them
    return _unique_codes(codes) if collided else codes


def _is_arrow_text(dtype: object) -> bool:
    """Whether pandas holds a column of ``dtype`` as Arrow (pandas 3's ``str``, a
    ``string[pyarrow]``, or an ``ArrowDtype``; text or not)."""
    return isinstance(dtype, pd.ArrowDtype) or (
        isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    )


def _arrow_text(column: pd.Series) -> object | None:
    """The column's values as one pyarrow ``large_string`` array when pandas holds it as
    Arrow-backed text (pandas 3's ``str``, or ``ArrowDtype`` of a string type); else None."""
    if not _is_arrow_text(column.dtype):
        return None
    import pyarrow as pa

    values = pa.array(column.array)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    return values.cast(pa.large_string())


# Rows compared at a time when coding sorted text (``_sorted_codes``)
_CODED_AT_ONCE = 1 << 20


def _sorted_codes(values: object) -> np.ndarray:
    """An int64 code per row of pyarrow text ``values``, -1 for null; two rows share a code
    exactly where their texts are equal (codes in sorted order, not order of appearance).

    Sorting rather than hashing: a hash table of twenty million distinct IDs (pandas'
    ``factorize``, pyarrow's ``dictionary_encode``) held ~3 GB for 10 s. Texts in the form
    of a resident ID (17 ASCII digits and a check digit or ``X``, GB 11643-1999) are read
    from the Arrow buffers a block at a time as one int64 each (the 17 digits x 11 + the
    check's value) and sorted as numbers; any others by pyarrow's ``sort_indices`` of their
    text (~19 s for 20 M IDs in random order) and coded after them."""
    import pyarrow as pa

    n = len(values)
    codes = np.full(n, -1, dtype=np.int64)
    if n == values.null_count:
        return codes
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    null = _nulls(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset :][: n + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] else None
    candidates = np.flatnonzero((np.diff(offsets) == _ID_WIDTH) & ~null)
    shaped = np.zeros(n, dtype=bool)
    numbers = np.empty(len(candidates), dtype=np.int64)
    kept = np.zeros(len(candidates), dtype=bool)
    weights = 10 ** np.arange(_ID_WIDTH - 2, -1, -1, dtype=np.int64)  # of the 17 digits
    for start in range(0, len(candidates), _CODED_AT_ONCE):
        rows = candidates[start : start + _CODED_AT_ONCE]
        chars = data[offsets[rows][:, None] + np.arange(_ID_WIDTH)]
        digits = chars[:, :-1] - ord("0")  # uint8: a character below "0" wraps past 9
        last = chars[:, -1]
        ok = (digits <= 9).all(axis=1) & (((last - ord("0")) <= 9) | (last == ord("X")))
        check = np.where(last == ord("X"), 10, last.astype(np.int64) - ord("0"))
        numbers[start : start + len(rows)] = (digits.astype(np.int64) @ weights) * 11 + check
        kept[start : start + len(rows)] = ok
        del chars, digits
    as_id = candidates[kept]
    numbers = numbers[kept]
    shaped[as_id] = True
    n_codes = 0
    if len(as_id):
        order = np.argsort(numbers)  # any order among equal numbers: they share a code
        ranked = numbers[order]
        new = np.empty(len(ranked), dtype=bool)
        new[0] = True
        np.not_equal(ranked[1:], ranked[:-1], out=new[1:])
        del ranked, numbers
        n_codes = _code_runs(codes, as_id[order], new)
        del order, new
    rest = np.flatnonzero(~shaped & ~null)
    if len(rest):
        codes[rest] = n_codes + _text_sort_codes(values.take(pa.array(rest)))
    return codes


# A resident ID's characters (GB 11643-1999)
_ID_WIDTH = 18


def _nulls(values: object) -> np.ndarray:
    """Per row of a pyarrow array: whether it is null (numpy bool)."""
    import pyarrow.compute as pc

    return pc.is_null(values).to_numpy(zero_copy_only=False)


def _text_sort_codes(values: object) -> np.ndarray:
    """:func:`_sorted_codes` of pyarrow text without nulls, by sorting the texts
    (``sort_indices``), each against the one before it a block of rows at a time."""
    import pyarrow.compute as pc

    n = len(values)
    codes = np.empty(n, dtype=np.int64)
    if n == 0:
        return codes
    order = pc.sort_indices(values).to_numpy()
    new = np.empty(n, dtype=bool)
    new[0] = True
    for start in range(1, n, _CODED_AT_ONCE):
        stop = min(start + _CODED_AT_ONCE, n)
        block = values.take(order[start - 1 : stop])
        differs = pc.not_equal(block.slice(1), block.slice(0, len(block) - 1))
        new[start:stop] = differs.to_numpy(zero_copy_only=False)
    _code_runs(codes, order, new)
    return codes


def _code_runs(codes: np.ndarray, order: np.ndarray, new: np.ndarray) -> int:
    """Give ``codes[order[i]]`` the number of its run of equal values in sorted order
    (``new[i]``: row ``order[i]`` starts a run); return how many runs there are."""
    runs = np.cumsum(new)
    codes[order] = runs - 1
    return int(runs[-1]) if len(runs) else 0


def _float_exact_arrow(ids: object) -> np.ndarray:
    """:func:`_float_exact` of pyarrow text, per row: the 18-digit IDs checked in pyarrow,
    the rare ones written in other Unicode digits (which Python's digit class also matches) as
    :func:`_float_exact` checks them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = np.zeros(len(ids), dtype=bool)
    ascii_digits = pc.match_substring_regex(ids, r"^[0-9]{18}$").fill_null(False)
    at = np.flatnonzero(ascii_digits.to_numpy(zero_copy_only=False))
    if len(at):
        values = pc.cast(ids.take(pa.array(at)), pa.int64()).to_numpy()
        out[at] = values.astype(np.float64).astype(np.int64) == values
    # only rows that are not ASCII can hold other digits: the Unicode test on those alone
    others = np.flatnonzero(
        pc.invert(pc.string_is_ascii(ids)).fill_null(False).to_numpy(zero_copy_only=False)
    )
    rare = others
    if len(others):
        digits = pc.match_substring_regex(ids.take(pa.array(others)), r"^\p{Nd}{18}$")
        rare = others[digits.fill_null(False).to_numpy(zero_copy_only=False)]
    if len(rare):
        out[rare] = _float_exact(pd.Series(ids.take(pa.array(rare)).to_pylist(), dtype=object))
    return out


def _same_text(left: pd.Series, right: pd.Series) -> np.ndarray:
    """``(left.astype("string") == right.astype("string")).fillna(False)`` as a numpy bool
    array, the text made once per distinct value rather than per row."""
    left_codes, left_values = pd.factorize(left)
    left_text = pd.Series(np.asarray(left_values, dtype=object), dtype=object).astype("string")
    text_codes, texts = pd.factorize(left_text)
    per_left = np.append(np.asarray(text_codes), -1)[np.asarray(left_codes)]
    right_codes, right_values = pd.factorize(right)
    right_text = pd.Series(np.asarray(right_values, dtype=object), dtype=object).astype("string")
    found = pd.Index(texts).get_indexer(right_text)
    per_right = np.append(found, -1)[np.asarray(right_codes)]
    return (per_left >= 0) & (per_left == per_right)


def _float_exact(ids: pd.Series) -> np.ndarray:
    """IDs a float64 holds exactly (digits only): what a number column makes of any ID, its
    last digits rounded to a multiple of 16-128 (430921199108189709 -> ...696), passing
    the check by chance one time in eleven. About 1 real ID in 32 has that form too; it
    simply forms no cross-source constraint."""
    text = ids.astype("string")
    numeric = text.str.fullmatch(r"\d{18}").fillna(False).to_numpy(dtype=bool)
    out = np.zeros(len(ids), dtype=bool)
    if numeric.any():
        values = text[numeric].astype("int64").to_numpy()
        out[numeric] = values.astype(np.float64).astype(np.int64) == values
    return out


# Two groups of >= 2 records merge only if at least this share of their observed cross
# pairs is above threshold: one household phone match must not join two people.
DEFAULT_BRIDGE_RATIO = 0.5
# Infinite weights (probability exactly 0 or 1) would turn sums into NaN.
_MAX_ABS_WEIGHT = 1000.0
_EXAMPLES = 5


def cluster_pairs(
    n_records: int,
    pairs: pd.DataFrame,
    threshold: float = 0.9,
    *,
    cannot_link: pd.DataFrame | None = None,
    max_cluster_size: int = 20,
    bridge_ratio: float = DEFAULT_BRIDGE_RATIO,
    recluster_contradicted: bool = True,
    cannot_link_coded: pd.DataFrame | None = None,
) -> pd.Series:
    """Return a cluster label per row 0..n_records-1: the smallest row number in its cluster.

    Pairs with ``MATCH_PROBABILITY >= threshold`` are linked into connected components.
    A component with more than ``max_cluster_size`` records, holding two different
    ``cannot_link`` keys within one group, or (``recluster_contradicted``) containing an
    observed pair below threshold, is reclustered by greedy agglomeration over its links
    in descending ``MATCH_WEIGHT``: two groups merge only if the result stays within
    ``max_cluster_size`` (a hard cap), no cannot-link pair ends up together, the mean weight
    of all observed pairs between them (below-threshold ones included) is at least the
    threshold's weight, and, when both groups hold >= 2 records, at least ``bridge_ratio`` of
    those observed pairs are above threshold. Unobserved pairs count for nothing, so a chain
    a-b-c-d whose non-neighbours were never compared still merges. A component none of
    these flag is kept whole: with all its observed pairs above threshold, nothing splits it.
    ``cannot_link_coded``: the rule already as :func:`cannot_link_codes` gives it, in place
    of ``cannot_link``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold}")
    if max_cluster_size < 1:
        raise ValueError(f"max_cluster_size must be >= 1, got {max_cluster_size}")
    if not 0.0 <= bridge_ratio <= 1.0:
        raise ValueError(f"bridge_ratio must be between 0 and 1, got {bridge_ratio}")
    n_records = int(n_records)
    left, right, prob = _pair_arrays(pairs, n_records)
    strong = prob >= threshold

    n_comp, comp = connected_components(
        csr_matrix(
            # int32: repeated pairs are summed, and int8 could wrap to zero
            (np.ones(int(strong.sum()), dtype=np.int32), (left[strong], right[strong])),
            shape=(n_records, n_records),
        ),
        directed=False,
    )
    comp = comp.astype(np.int64)
    sizes = np.bincount(comp, minlength=n_comp)
    flagged = sizes > max_cluster_size
    n_big = int(flagged.sum())
    cl = cannot_link_coded
    if cl is None and cannot_link is not None:
        cl = _cannot_link_codes(cannot_link, n_records)
    if cl is not None:
        flagged[_conflicting_components(comp, cl)] = True
    if recluster_contradicted:
        # Households chain through one shared phone while their other pairs score low.
        weak_inside = (prob < threshold) & (comp[left] == comp[right])
        flagged[comp[left[weak_inside]]] = True
    logger.info(
        "%d records, %d links >= %.3f, %d components; reclustering %d (%d over size %d)",
        n_records,
        int(strong.sum()),
        threshold,
        n_comp,
        int(flagged.sum()),
        n_big,
        max_cluster_size,
    )

    group = comp
    if flagged.any():
        weight = _pair_weights(pairs, prob)
        group = comp.copy()
        nodes = np.flatnonzero(flagged[comp])
        inside = (comp[left] == comp[right]) & flagged[comp[left]]
        unweighted = inside & np.isnan(weight)
        if unweighted.any():
            logger.warning("%d pairs without a match weight are left out", int(unweighted.sum()))
            inside &= ~unweighted
        local = np.full(n_records, -1, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        keys = _local_keys(cl, local) if cl is not None else {}
        roots = _agglomerate(
            len(nodes),
            local[left[inside]],
            local[right[inside]],
            weight[inside],
            strong[inside],
            keys,
            max_cluster_size=max_cluster_size,
            # Slack: a float sum of weights all at the threshold may round just below it.
            min_weight=float(np.log2(threshold / (1.0 - threshold))) - 1e-9,
            bridge_ratio=bridge_ratio,
        )
        # Recluster results get ids past the component ids so both can share one array.
        group[nodes] = n_comp + roots
    return _min_row_labels(group, n_records)


def cluster_size_distribution(labels: pd.Series) -> pd.DataFrame:
    """Return one row per cluster size: ``size``, ``clusters`` of that size, ``records`` in them.

    ``labels``: one cluster label per record (nulls left out). Counted over the labels'
    integer codes (``value_counts().value_counts()``'s table): value_counts of a few million
    text labels made a Python string per cluster for its index (~0.2 GB at three million
    records, at the run's golden-records and writing stages).
    """
    codes, _ = pd.factorize(pd.Series(labels), use_na_sentinel=True)
    per_cluster = np.bincount(codes[codes >= 0])
    sizes, clusters = np.unique(per_cluster[per_cluster > 0], return_counts=True)
    return size_distribution(sizes.astype(np.int64), clusters.astype(np.int64))


def size_distribution(sizes: np.ndarray, clusters: np.ndarray) -> pd.DataFrame:
    """The table of :func:`cluster_size_distribution` from cluster sizes and the number of
    clusters of each size (the Spark engine counts those in Spark), sorted by size."""
    order = np.argsort(sizes, kind="stable")
    sizes = np.asarray(sizes, dtype=np.int64)[order]
    clusters = np.asarray(clusters, dtype=np.int64)[order]
    return pd.DataFrame({"size": sizes, "clusters": clusters, "records": sizes * clusters})


def cluster_stats(labels: pd.Series) -> dict:
    """Return records, clusters, max_size, clusters_over_10 and singleton_share (of records)."""
    return stats_of_sizes(cluster_size_distribution(labels))


def stats_of_sizes(distribution: pd.DataFrame) -> dict:
    """:func:`cluster_stats` from a size distribution (:func:`size_distribution`)."""
    sizes = distribution["size"].to_numpy(np.int64)
    clusters = distribution["clusters"].to_numpy(np.int64)
    n = int((sizes * clusters).sum())
    return {
        "records": n,
        "clusters": int(clusters.sum()),
        "max_size": int(sizes.max()) if n else 0,
        "clusters_over_10": int(clusters[sizes > 10].sum()),
        "singleton_share": float(clusters[sizes == 1].sum() / n) if n else 0.0,
    }


def _pair_arrays(pairs: pd.DataFrame, n_records: int) -> tuple[np.ndarray, ...]:
    """Validate the pair table; return (left, right, probability) with left < right."""
    for column in (schema.ROW_L, schema.ROW_R, schema.MATCH_PROBABILITY):
        if column not in pairs.columns:
            raise InputError("scored pairs table lacks a required column", column=column)
    ends = [_row_numbers(pairs[c], n_records, c) for c in (schema.ROW_L, schema.ROW_R)]
    # Accept either orientation; duplicates and self-pairs are harmless to the union.
    left = np.minimum(ends[0], ends[1])
    right = np.maximum(ends[0], ends[1])
    prob = pd.to_numeric(pairs[schema.MATCH_PROBABILITY], errors="coerce").to_numpy(np.float64)
    n_null = int(np.isnan(prob).sum())
    if n_null:
        logger.warning("%d pairs without a match probability are treated as non-links", n_null)
    return left, right, prob


def _pair_weights(pairs: pd.DataFrame, prob: np.ndarray) -> np.ndarray:
    """Return match weights (log2 Bayes factor), derived from the probability when absent."""
    if schema.MATCH_WEIGHT in pairs.columns:
        weight = pd.to_numeric(pairs[schema.MATCH_WEIGHT], errors="coerce").to_numpy(np.float64)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.log2(prob) - np.log2(1.0 - prob)
    return np.clip(weight, -_MAX_ABS_WEIGHT, _MAX_ABS_WEIGHT)


def _row_numbers(values: pd.Series, n_records: int, column: str) -> np.ndarray:
    """Return row numbers as int64; raise InputError unless all are in 0..n_records-1."""
    try:
        rows = values.to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"row numbers must be integers ({exc})", column=column) from exc
    bad = (rows < 0) | (rows >= n_records)
    if bad.any():
        examples = ", ".join(str(v) for v in rows[bad][:_EXAMPLES])
        raise InputError(
            f"{int(bad.sum())} row numbers outside 0..{n_records - 1}, e.g. {examples}",
            column=column,
        )
    return rows


def _cannot_link_codes(cannot_link: pd.DataFrame, n_records: int) -> pd.DataFrame:
    """Return the non-null constraints as integer columns row, group, key."""
    for column in (schema.ROW, CANNOT_LINK_KEY):
        if column not in cannot_link.columns:
            raise InputError("cannot-link table lacks a required column", column=column)
    key = cannot_link[CANNOT_LINK_KEY]
    keep = key.notna().to_numpy() & (key.astype(str) != "").to_numpy()
    rows = _row_numbers(cannot_link[schema.ROW][keep], n_records, schema.ROW)
    if CANNOT_LINK_GROUP in cannot_link.columns:
        groups = pd.factorize(cannot_link[CANNOT_LINK_GROUP][keep])[0]
    else:
        groups = np.zeros(len(rows), dtype=np.int64)
    codes = pd.DataFrame({"row": rows, "group": groups, "key": pd.factorize(key[keep])[0]})
    return _unique_codes(codes)


def _unique_codes(codes: pd.DataFrame) -> pd.DataFrame:
    """The cannot-link codes less repeated rows; InputError where a row has two different
    keys in one group."""
    codes = codes.drop_duplicates()
    clash = codes.duplicated(["row", "group"], keep=False)
    if clash.any():
        examples = ", ".join(str(r) for r in codes["row"][clash].unique()[:_EXAMPLES])
        raise InputError(
            f"rows with two different keys in one group, e.g. rows {examples}",
            column=CANNOT_LINK_KEY,
        )
    return codes


def _conflicting_components(comp: np.ndarray, codes: pd.DataFrame) -> np.ndarray:
    """Return ids of components holding >= 2 distinct keys within one group (sorted).

    Each constraint's (component, group, key) is packed into one int64 (mixed radix) and
    sorted once (``tables.sorted_unique``): pandas' ``drop_duplicates`` over the three
    columns took ~3 GB above the run's tables and 27 s for twenty million records'
    constraints, the packed values 2 s."""
    rows = codes["row"].to_numpy()
    if len(rows) == 0:
        return np.empty(0, dtype=np.int64)
    comps = comp[rows].astype(np.int64)
    group = codes["group"].to_numpy(dtype=np.int64) + 1  # a null group's -1 becomes 0
    key = codes["key"].to_numpy(dtype=np.int64)
    n_groups, n_keys = int(group.max()) + 1, int(key.max()) + 1
    if (
        int(comps.min()) >= 0
        and int(group.min()) >= 0
        and int(key.min()) >= 0
        and (int(comps.max()) + 1) * n_groups * n_keys < 2**63
    ):
        distinct = sorted_unique((comps * n_groups + group) * n_keys + key)
        comp_group = distinct // n_keys
        second = comp_group[1:][comp_group[1:] == comp_group[:-1]]
        return sorted_unique(second // n_groups)
    per_comp = pd.DataFrame(
        {"comp": comp[codes["row"].to_numpy()], "group": codes["group"], "key": codes["key"]}
    ).drop_duplicates()
    # codes too wide to pack: the same question through pandas
    return np.sort(per_comp["comp"][per_comp.duplicated(["comp", "group"])].unique())


def _local_keys(codes: pd.DataFrame, local: np.ndarray) -> dict[int, dict[int, int]]:
    """Return {local node: {group: key}} for constrained nodes of reclustered components."""
    node = local[codes["row"].to_numpy()]
    sub = codes.assign(node=node)[node >= 0]
    keys: dict[int, dict[int, int]] = {}
    for n, g, k in zip(
        sub["node"].tolist(), sub["group"].tolist(), sub["key"].tolist(), strict=True
    ):
        keys.setdefault(n, {})[g] = k
    return keys


def _agglomerate(
    n_nodes: int,
    left: np.ndarray,
    right: np.ndarray,
    weight: np.ndarray,
    strong: np.ndarray,
    keys: dict[int, dict[int, int]],
    *,
    max_cluster_size: int,
    min_weight: float,
    bridge_ratio: float,
) -> np.ndarray:
    """Greedy constrained agglomeration; return the root node of each node's group.

    Hand-written: scipy/networkx offer no linkage over a sparse set of observed pairs with
    cannot-link constraints. Merges are sequential by nature, so this is a Python loop over
    the edges of reclustered components only; components are disjoint, so one pass over all
    of them equals one pass per component.
    """
    # Canonical order (weight desc, then rows) makes labels independent of input pair order.
    order = np.lexsort((right, left, -weight))
    left, right, weight, strong = left[order], right[order], weight[order], strong[order]
    # Keep the first (heaviest) copy of a pair listed twice.
    pair_key = left * np.int64(max(n_nodes, 1)) + right
    first = ~pd.Series(pair_key).duplicated().to_numpy() & (left != right)
    left, right, weight, strong = left[first], right[first], weight[first], strong[first]

    # adj[g][h] = id of the running totals (weight sum, pair count, strong count) over the
    # observed pairs between groups g and h; both directions hold the same id.
    w_sum = weight.tolist()
    count = [1] * len(w_sum)
    n_strong = strong.astype(np.int64).tolist()
    adj = _neighbour_dicts(n_nodes, left, right)

    parent = list(range(n_nodes))
    size = [1] * n_nodes
    for u, v in zip(left[strong].tolist(), right[strong].tolist(), strict=True):
        while parent[u] != u:  # find with path halving
            parent[u] = parent[parent[u]]
            u = parent[u]
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        if u == v or size[u] + size[v] > max_cluster_size:
            continue
        adj_u, adj_v = adj[u], adj[v]
        e = adj_u[v]
        if w_sum[e] < min_weight * count[e]:
            continue
        if size[u] >= 2 and size[v] >= 2 and n_strong[e] < bridge_ratio * count[e]:
            continue
        keys_u, keys_v = keys.get(u), keys.get(v)
        if keys_u and keys_v and any(keys_u.get(g, k) != k for g, k in keys_v.items()):
            continue
        if len(adj_u) < len(adj_v):  # fold the smaller neighbourhood into the larger
            u, v, adj_u, adj_v, keys_u, keys_v = v, u, adj_v, adj_u, keys_v, keys_u
        del adj_u[v], adj_v[u]
        merged = size[u] + size[v]
        room = max_cluster_size - merged
        for h, e in adj_v.items():
            adj_h = adj[h]
            del adj_h[v]
            into = adj_u.get(h)
            # Groups too big to ever merge with the result need no totals: drop the link.
            if size[h] > room:
                if into is not None:
                    del adj_u[h], adj_h[u]
            elif into is None:
                adj_u[h] = e
                adj_h[u] = e
            else:
                w_sum[into] += w_sum[e]
                count[into] += count[e]
                n_strong[into] += n_strong[e]
        if room == 0:  # a full group merges no more: unlink it from every neighbour
            for h in adj_u:
                del adj[h][u]
            adj_u.clear()
        adj[v] = None
        parent[v] = u
        size[u] = merged
        if keys_v:
            if keys_u:
                keys_u.update(keys_v)
            else:
                keys[u] = keys_v
            del keys[v]

    roots = np.asarray(parent, dtype=np.int64)
    # Full path compression, vectorized: at most log2(n) rounds after path halving.
    while True:
        up = roots[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up


def _neighbour_dicts(n_nodes: int, left: np.ndarray, right: np.ndarray) -> list[dict | None]:
    """Return per node a dict neighbour -> pair index, built per node rather than per pair."""
    pair = np.arange(len(left), dtype=np.int64)
    src = np.concatenate([left, right])
    order = np.argsort(src, kind="stable")
    dst = np.concatenate([right, left])[order].tolist()
    ids = np.concatenate([pair, pair])[order].tolist()
    ends = np.cumsum(np.bincount(src, minlength=n_nodes)).tolist()
    starts = [0, *ends[:-1]]
    return [dict(zip(dst[a:b], ids[a:b], strict=True)) for a, b in zip(starts, ends, strict=True)]


def _min_row_labels(group: np.ndarray, n_records: int) -> pd.Series:
    """Relabel each group by its smallest row number."""
    rows = np.arange(n_records, dtype=np.int64)
    smallest = np.full(int(group.max()) + 1 if n_records else 0, n_records, dtype=np.int64)
    np.minimum.at(smallest, group, rows)
    return pd.Series(
        smallest[group],
        index=pd.RangeIndex(n_records, name=schema.ROW),
        name=schema.CLUSTER_ID,
        dtype=np.int64,
    )


def sibling_pairs(records: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Mask of scored pairs that look like twins or siblings, never one person.

    Fellegi-Sunter takes u from random pairs, where a shared birth date, phone and address are
    rare; inside a household they are not, and twins agree on all three. So a pair is held out
    of clustering when both names are Han names of one length with the same surname, the given
    names differ in a way no comparison level explains (name level ``else``: not a homophone,
    look-alike, traditional form or former name) and are not the same characters reordered,
    while the birth dates agree exactly: 王子涵 / 王子轩 born the same day. An identical ID
    (``gamma_id`` at its top level) outweighs the rule: twins do not share one, while a
    look-alike character outside the table or an unrecorded former name does change a name.
    And one of the two records must have a partner of its own elsewhere, a pair with an exact
    (or clean-exact) name and the same birth date: that twin is then explained by another
    record, while two lone records of one person whose name was mistyped or changed have no
    such partner and stay linked. Without a partner the pair is still held out when the
    given names keep one character in place and change another (a shared generation
    character, 姚一浩 / 姚一鸣), or are one character each (谷英 / 谷环), and no ID ties the
    two (null on a side, or two IDs that differ beyond a typo): siblings are named so, and one person's sound- or shape-mistyped name
    reaches a name level instead.
    So are pairs whose names agree only by a dropped or transposed given-name character
    where the genders differ or known birth dates disagree and no identical ID ties them
    (``edit_siblings``), and pairs with no name on a side, one birth date and two genders
    (``unnamed_twins``).
    Parent and child are held out too (``guardian_pairs``): an identical ID on two records
    whose names differ (level ``else``) where one record has no recorded birth date.
    Takes ``rid_l``, ``rid_r``, ``gamma_name``, ``gamma_birth_date`` (and ``gamma_id``) from
    ``pairs`` and ``name_clean`` (and ``birth_date_std``) from ``records``; without those
    columns nothing is held out.
    """
    held_out, if_partnered, partners = sibling_parts(records, pairs)
    if not len(pairs):
        return held_out
    left, right = pairs[schema.ROW_L].to_numpy(), pairs[schema.ROW_R].to_numpy()
    partnered = np.zeros(max(len(records), int(max(left.max(), right.max())) + 1), dtype=bool)
    partnered[left[partners]] = True
    partnered[right[partners]] = True
    return held_out | (if_partnered & (partnered[left] | partnered[right]))


def sibling_parts(
    records: pd.DataFrame, pairs: pd.DataFrame, given_counts: Mapping[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sibling_pairs` in three masks over ``pairs``, so that pairs scored a chunk at a
    time can be judged before every pair is seen: held out whatever the partners are,
    held out when either record has a partner, and the :func:`partner_pairs` (whose records
    have a partner). ``sibling_pairs`` = first | (second & either record partnered, over
    the partner pairs of all chunks). Takes the columns :func:`sibling_pairs` takes;
    ``given_counts`` (:func:`given_char_counts` of the records, computed when None) lets
    a caller that judges many chunks count once."""
    none = np.zeros(len(pairs), dtype=bool)
    clean_col = schema.name_col(schema.NAME, "clean")
    if not _SIBLING_LEVELS <= set(pairs.columns) or clean_col not in records:
        return none, none, none
    left, right = pairs[schema.ROW_L].to_numpy(), pairs[schema.ROW_R].to_numpy()
    # lone siblings sharing a generation character need no partner (sibling_mask)
    counts = given_char_counts(records[clean_col]) if given_counts is None else given_counts
    # sibling_mask without partners and with every record partnered, the names of the
    # sibling-like pairs read once for both (half of this function's Python work); taken
    # at those rows alone (a column held as an Arrow dictionary makes a str per row taken)
    sibling_like, ids_apart, edited = _sibling_rule(pairs)
    cand = np.flatnonzero(sibling_like)
    left_names = text_at(records[clean_col], left[cand])
    right_names = text_at(records[clean_col], right[cand])
    shaped = _sibling_names(left_names, right_names)
    lone = np.zeros(len(pairs), dtype=bool)  # held out without a partner
    for i, a, b in zip(cand[shaped], left_names[shaped], right_names[shaped], strict=True):
        if ids_apart[i] and _generation_shared(a, b, counts):
            lone[i] = True
    held_out = guardian_pairs(records, pairs) | edited | lone | unnamed_twins(pairs)
    # the pairs a partner would hold out
    partnered = edited.copy()
    partnered[cand[shaped]] = True
    if_partnered = partnered & ~held_out
    return held_out, if_partnered, partner_pairs(pairs)


_SIBLING_LEVELS = {"gamma_name", "gamma_birth_date"}


def partner_pairs(pairs: pd.DataFrame) -> np.ndarray:
    """Mask of pairs with an exact (or clean-exact) name and the same birth date: each of
    their records has a partner of its own (see :func:`sibling_pairs`). Takes
    ``gamma_name`` and ``gamma_birth_date``; all False without them."""
    if not _SIBLING_LEVELS <= set(pairs.columns):
        return np.zeros(len(pairs), dtype=bool)
    from linkage.compare.fields import BirthDateComparison
    from linkage.compare.name import NameComparison

    birth_exact = pairs["gamma_birth_date"].to_numpy() == BirthDateComparison.levels.index("exact")
    return birth_exact & (
        pairs["gamma_name"].to_numpy() >= NameComparison.levels.index("clean_exact")
    )


def sibling_mask(
    pairs: pd.DataFrame,
    clean_l: np.ndarray,
    clean_r: np.ndarray,
    partnered_l: np.ndarray,
    partnered_r: np.ndarray,
    given_counts: Mapping[str, int] | None = None,
) -> np.ndarray:
    """The rule of :func:`sibling_pairs` on pairs given both records' clean names and
    whether each record has a partner (:func:`partner_pairs` over all pairs): the Spark
    engine finds the partners over all pairs first and applies this per pair partition.
    ``given_counts`` (:func:`given_char_counts` over all records) tells a name character from
    a typo for the rule without a partner; None: every character counts as a name character.
    Takes ``gamma_name``, ``gamma_birth_date`` (and ``gamma_id``) from ``pairs``."""
    if not _SIBLING_LEVELS <= set(pairs.columns):
        return np.zeros(len(pairs), dtype=bool)
    sibling_like, ids_apart, out = _sibling_rule(pairs)
    partnered = np.asarray(partnered_l, dtype=bool) | np.asarray(partnered_r, dtype=bool)
    cand = np.flatnonzero(sibling_like & (partnered | ids_apart))
    left = np.asarray(clean_l, dtype=object)[cand]
    right = np.asarray(clean_r, dtype=object)[cand]
    shaped = _sibling_names(left, right)
    for i, a, b in zip(cand[shaped], left[shaped], right[shaped], strict=True):
        if partnered[i] or (ids_apart[i] and _generation_shared(a, b, given_counts)):
            out[i] = True
    return out


def _sibling_rule(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The level tests of :func:`sibling_mask` (``pairs`` holds ``gamma_name`` and
    ``gamma_birth_date``): the sibling-like pairs (no name level, the same birth date, not
    the same ID), those whose IDs are apart, and :func:`edit_siblings` (a new array)."""
    from linkage.compare.fields import BirthDateComparison, IdComparison

    birth_exact = pairs["gamma_birth_date"].to_numpy() == BirthDateComparison.levels.index("exact")
    sibling_like = (pairs["gamma_name"].to_numpy() == 0) & birth_exact
    if "gamma_id" in pairs.columns:
        gamma_id = pairs["gamma_id"].to_numpy()
        sibling_like &= gamma_id != IdComparison.levels.index("exact")
        # no ID on a side, or two IDs that differ beyond a typo: nothing ties the pair as
        # one person but the shared household
        ids_apart = gamma_id < IdComparison.levels.index("prefix_tail_lost")
    else:
        ids_apart = np.ones(len(pairs), dtype=bool)
    return sibling_like, ids_apart, edit_siblings(pairs)


def _sibling_names(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per pair of clean names, whether they can be two siblings' names in :func:`sibling_mask`:
    two Han names of one length (two or more) and first character that differ in more than
    their order."""
    out = np.zeros(len(left), dtype=bool)
    for k, (a, b) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
        if (
            isinstance(a, str)
            and isinstance(b, str)
            and len(a) == len(b) >= 2
            and a[0] == b[0]
            and a != b
            and sorted(a) != sorted(b)
            and "·" not in a + b
            and not (a + b).isascii()
            and _han_only(a + b)
        ):
            out[k] = True
    return out


def _generation_shared(a: str, b: str, given_counts: Mapping[str, int] | None) -> bool:
    """Whether two Han names of one surname share a given-name character at one position
    while the characters that differ are both name characters: 姚一浩 / 姚一鸣. Siblings,
    twins above all, are named with a shared generation character (字辈); one person's name
    mistyped by sound or shape mostly reaches a name level, and where it does not the typed
    character is seldom one parents choose: 王婧涵 / 王婧番, where 番 is held by under
    ``_TYPO_SHARE`` as many of the run's names as 涵 (frequency-based evidence, as in
    Winkler's term-frequency weights: a rare value agreeing or differing says more).
    Given names of one character have no position to share: two name characters (谷英 /
    谷环, twins named as a pair) are siblings by the same frequency test."""
    sa, ga = split_han(a)
    sb, gb = split_han(b)
    if sa != sb or len(ga) != len(gb) or not ga:
        return False
    if len(ga) >= 2 and not any(x == y for x, y in zip(ga, gb, strict=True)):
        return False
    if given_counts is None:
        return True
    for x, y in zip(ga, gb, strict=True):
        if x != y:
            cx, cy = given_counts.get(x, 0), given_counts.get(y, 0)
            if min(cx, cy) <= _TYPO_SHARE * max(cx, cy):
                return False
    return True


# A given-name character held by at most this share of the names holding the character it
# stands against is read as a typo (a look-alike or dialect error outside the name levels),
# not a sibling's name: at 1% typing errors per record a typo's character is held by ~1-3%.
_TYPO_SHARE = 0.05


def given_char_counts(names: Iterable[object] | pd.Series) -> dict[str, int]:
    """Per character, the number of distinct Han names (clean, ``name_clean``) whose given
    name holds it; minority (``·``), Latin and masked names are skipped. Input of
    :func:`sibling_mask`. ``names``: the names, or the records' column of them (a column
    held as an Arrow dictionary is read per distinct value)."""
    if isinstance(names, pd.Series):
        # a column's distinct values (one held as an Arrow dictionary: no object per row)
        names = factorize_text(names)[1]
    distinct = pd.unique(pd.Series(np.asarray(names, dtype=object)).dropna())
    # one string of each name's distinct given-name characters, counted in one pass; a
    # given name of one character, or of two that differ, is its own such string
    parts = []
    han_name = _HAN_NAME.fullmatch  # Han only, not empty: no · and no Latin letter
    for name in distinct.tolist():
        if isinstance(name, str) and han_name(name):
            given = split_han(name)[1]
            n = len(given)
            parts.append(
                given if n < 2 or (n == 2 and given[0] != given[1]) else "".join(set(given))
            )
    return dict(Counter("".join(parts)))


def unnamed_twins(pairs: pd.DataFrame) -> np.ndarray:
    """Mask of pairs with no name to compare on a side (a newborn's placeholder such as 女婴,
    a filler such as 无), the same birth date, the genders disagreeing and no identical ID:
    a boy and a girl born together in one household share the date, the phone and the
    address, and only the gender tells them apart. A gender mis-entered on one person's file
    is rarer than an opposite-sex twin (about 1.5% of births), so such a pair is held out.
    Takes ``gamma_name``, ``gamma_birth_date``, ``gamma_gender`` and (if present)
    ``gamma_id``; all False without the first three."""
    if not {"gamma_name", "gamma_birth_date", "gamma_gender"} <= set(pairs.columns):
        return np.zeros(len(pairs), dtype=bool)
    from linkage.compare.fields import BirthDateComparison, IdComparison

    out = (
        (pairs["gamma_name"].to_numpy() < 0)
        & (pairs["gamma_gender"].to_numpy() == 0)
        & (pairs["gamma_birth_date"].to_numpy() == BirthDateComparison.levels.index("exact"))
    )
    if "gamma_id" in pairs.columns:
        out &= pairs["gamma_id"].to_numpy() != IdComparison.levels.index("exact")
    return out


def edit_siblings(pairs: pd.DataFrame) -> np.ndarray:
    """Mask of pairs whose names agree only by a dropped or transposed given-name
    character (``char_dropped``, ``transposed``) and that nothing else ties as one person:
    the genders differ (``gamma_gender`` ``else``), or both birth dates are known and do not
    agree at ``year_typo`` or closer (else, or the same year only).

    Twins and a parent and child in one household share a surname, an address and a phone,
    and sometimes a given-name character (孙梓 / 孙梓瑶, 成锦 / 成扬锦); the random pairs
    that give u do not. One person's mistyped name keeps the gender and the birth date. An
    identical ID (``gamma_id`` exact) ties the pair as one person whatever the gender says.
    Takes ``gamma_name``, ``gamma_birth_date`` and (if present) ``gamma_gender``,
    ``gamma_id``.
    """
    if not _SIBLING_LEVELS <= set(pairs.columns):
        return np.zeros(len(pairs), dtype=bool)
    from linkage.compare.fields import BirthDateComparison
    from linkage.compare.name import NameComparison

    name = pairs["gamma_name"].to_numpy()
    edited = (name == NameComparison.DROPPED) | (name == NameComparison.TRANSPOSED)
    birth = pairs["gamma_birth_date"].to_numpy()
    # a missing birth date (-1) says nothing either way: a child's clinic file often lacks one
    loose = (birth >= 0) & (birth < BirthDateComparison.levels.index("year_typo"))
    if "gamma_gender" in pairs.columns:
        loose |= pairs["gamma_gender"].to_numpy() == 0
    if "gamma_id" in pairs.columns:
        # an identical ID outweighs it, as in sibling_pairs: twins do not share one (a gender
        # mis-entered on one record of 罗壮晨 / 罗晨壮 with one ID split one person)
        from linkage.compare.fields import IdComparison

        loose &= pairs["gamma_id"].to_numpy() != IdComparison.levels.index("exact")
    return edited & loose


def guardian_pairs(records: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Mask of scored pairs that share an ID but look like a guardian and a child.

    A child's health record carries a guardian's ID (DOMAIN.md); where the record has its own
    birth date the standardizer sees the ID is not its own (``id_not_own``), but without one
    the identical ID would tie the child to the guardian's records, outweighing two different
    names. So a pair is held out of clustering when ``gamma_id`` is ``exact``, the names share
    no comparison level (``else``: not a homophone, look-alike or former name), the given
    names share no character (a parent's and a child's seldom do; one person's mistyped,
    reordered or partly changed name keeps some: 曹晓妍 / 曹妍晓) and one of the two records
    has no recorded birth date. The child's own records still link to it by name and contact
    (``compare.fields.guardian_id_pairs`` drops the guardian's ID there).
    Takes ``rid_l``, ``rid_r``, ``gamma_id``, ``gamma_name`` from ``pairs`` and
    ``birth_date_std``, ``name_given`` from ``records``.
    """
    given_col = schema.name_col(schema.NAME, "given")
    if schema.BIRTH_DATE_STD not in records or given_col not in records:
        return np.zeros(len(pairs), dtype=bool)
    no_birth = records[schema.BIRTH_DATE_STD].isna().to_numpy()
    rows_l, rows_r = pairs[schema.ROW_L].to_numpy(), pairs[schema.ROW_R].to_numpy()
    # the given names read at the candidates alone (an exact ID, no name level, a birth
    # date missing): a column held as an Arrow dictionary makes a str per row taken, and a
    # chunk holds millions of pairs
    cand = np.flatnonzero(_guardian_candidates(pairs, no_birth[rows_l], no_birth[rows_r]))
    given = records[given_col]
    return _guardian_names(
        len(pairs), cand, text_at(given, rows_l[cand]), text_at(given, rows_r[cand])
    )


def _guardian_candidates(
    pairs: pd.DataFrame, no_birth_l: np.ndarray, no_birth_r: np.ndarray
) -> np.ndarray:
    """Mask of the pairs :func:`guardian_mask` tests the given names of: ``gamma_id``
    ``exact``, ``gamma_name`` 0 and a birth date missing on either side (all False
    without both levels)."""
    if not {"gamma_id", "gamma_name"} <= set(pairs.columns):
        return np.zeros(len(pairs), dtype=bool)
    from linkage.compare.fields import IdComparison

    return (
        (pairs["gamma_id"].to_numpy() == IdComparison.levels.index("exact"))
        & (pairs["gamma_name"].to_numpy() == 0)
        & (np.asarray(no_birth_l, dtype=bool) | np.asarray(no_birth_r, dtype=bool))
    )


def guardian_mask(
    pairs: pd.DataFrame,
    no_birth_l: np.ndarray,
    no_birth_r: np.ndarray,
    given_l: np.ndarray,
    given_r: np.ndarray,
) -> np.ndarray:
    """The rule of :func:`guardian_pairs` on pairs given, for both records, whether the
    birth date is missing and the given name: the Spark engine joins those to each pair and
    applies this per pair partition. Takes ``gamma_id`` and ``gamma_name`` from ``pairs``."""
    cand = np.flatnonzero(_guardian_candidates(pairs, no_birth_l, no_birth_r))
    return _guardian_names(
        len(pairs),
        cand,
        np.asarray(given_l, dtype=object)[cand],
        np.asarray(given_r, dtype=object)[cand],
    )


def _guardian_names(n: int, cand: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Mask over ``n`` pairs: True at the candidates ``cand`` whose given names (``left``,
    ``right``, one per candidate) are both there and share no character."""
    out = np.zeros(n, dtype=bool)
    for i, a, b in zip(cand, left, right, strict=True):
        out[i] = isinstance(a, str) and isinstance(b, str) and a != "" and not set(a) & set(b)
    return out


# Han characters as _han_only reads them: U+3400-U+9FFF and everything from U+20000 on
_HAN_ONLY = re.compile("[\u3400-\u9fff\U00020000-\U0010ffff]*")
_HAN_NAME = re.compile("[\u3400-\u9fff\U00020000-\U0010ffff]+")


def _han_only(text: str) -> bool:
    """Whether every character of ``text`` is Han (True for ""): one regular-expression
    match, ~5 times faster than a test per character (~1 million names a run)."""
    return _HAN_ONLY.fullmatch(text) is not None
