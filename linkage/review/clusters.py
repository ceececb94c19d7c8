"""Clusters (identities) most likely to be wrong, for review.

The strong signals look for two people inside one identity, the way twins and relatives
sharing a phone, an address and (for twins) a birth date get merged:

- ``split_by_name``: the identity's records fall into two or more *name groups* (records
  joined by a name comparison at ``name_level`` or closer) of at least two records each, and
  no pair across groups agrees on the ID number. One person's typo'd or renamed record forms
  a group of one; a name change is usually bridged by the same ID number.
- ``ids_differ_across_names``: a pair across name groups has two different ID numbers
  (ID comparison at ``id_differ_levels``) and no pair across groups agrees on the ID.

On generated registries (``benchmarks/bench_suspects.py``) these flag few identities, most of
them truly mixing two persons; the weak signals of earlier versions (golden-record conflicts,
size, the lowest internal pair probability) flag many more identities that are nearly all
right, so they are only added on request (``include_weak``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from linkage import schema
from linkage.compare import Comparison
from linkage.review.queue import identity_of_rows

SPLIT_BY_NAME = "split_by_name"
IDS_DIFFER = "ids_differ_across_names"
LOW_PROBABILITY = "low_internal_probability"
CONFLICTS = "conflicts"


def _level_index(comparisons: Sequence[Comparison], name: str, levels: Sequence[str]) -> list[int]:
    for comparison in comparisons:
        if comparison.name == name:
            known = list(comparison.levels)
            return [known.index(level) for level in levels if level in known]
    return []


def _name_groups(
    n: int, pairs: pd.DataFrame, gamma: str, closest: int, min_level: int
) -> np.ndarray:
    """Group of each record: components of the pairs whose name level is ``min_level``+."""
    g = pairs[gamma].to_numpy()
    agree = (g >= min_level) & (g <= closest)
    left = pairs[schema.ROW_L].to_numpy()[agree]
    right = pairs[schema.ROW_R].to_numpy()[agree]
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def suspect_clusters(
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    identities: pd.DataFrame,
    golden: pd.DataFrame | None = None,
    *,
    comparisons: Sequence[Comparison] | None = None,
    name_comparison: str = "name",
    name_level: str = "lookalike",
    id_comparison: str = "id",
    id_same_levels: Sequence[str] = ("same_person_15_18", "exact"),
    id_differ_levels: Sequence[str] = ("else", "birth_region"),
    include_weak: bool = False,
    large: int = 4,
    low_probability: float = 0.5,
) -> pd.DataFrame:
    """Identities most likely to hold records of two or more persons, most suspect first.

    Takes the run's scored pairs (``rid_l, rid_r, match_probability, gamma_*``), records
    (``rid`` 0..n-1 in row order, source, record_id), identities (source, record_id,
    identity_id) and, for the weak signals, golden records (identity_id, conflicts).
    ``comparisons`` (the run's) resolve the level names; without them, or when the run has
    no comparison called ``name_comparison``, only weak signals can be given.

    Returns one row per flagged identity with more than one record: identity_id, size,
    name_groups (how many name groups hold two or more records), min_probability (lowest
    internal pair probability), internal_pairs, sources, conflicts, reasons
    (``|``-joined), suspicion (strong reasons count 2, weak ones 1).
    """
    codes, names = pd.factorize(identity_of_rows(records, identities))
    k, n = len(names), len(records)
    size = np.bincount(codes, minlength=k)
    left = codes[pairs[schema.ROW_L].to_numpy()]
    inside_mask = left == codes[pairs[schema.ROW_R].to_numpy()]
    inside = pairs[inside_mask]
    owner = left[inside_mask]
    prob = inside[schema.MATCH_PROBABILITY].to_numpy()
    min_prob = np.full(k, np.nan)
    if len(inside):
        lowest = pd.Series(prob).groupby(owner).min()
        min_prob[lowest.index.to_numpy()] = lowest.to_numpy()
    src_code = pd.factorize(records[schema.SOURCE])[0]
    per_source = pd.DataFrame({"c": codes, "s": src_code}).drop_duplicates()
    out = pd.DataFrame(
        {
            "size": size,
            "name_groups": 0,
            "min_probability": min_prob,
            "internal_pairs": np.bincount(owner, minlength=k),
            "sources": np.bincount(per_source["c"].to_numpy(), minlength=k),
        },
        index=pd.Index(names),
    )
    split = np.zeros(k, dtype=bool)
    differ = np.zeros(k, dtype=bool)
    name_gamma = schema.GAMMA_PREFIX + name_comparison
    name_min = _level_index(comparisons or [], name_comparison, [name_level])
    if name_min and name_gamma in inside:
        levels = next(c for c in comparisons if c.name == name_comparison).levels
        groups = _name_groups(n, inside, name_gamma, len(levels) - 1, name_min[0])
        sizes = pd.DataFrame({"c": codes, "g": groups}).value_counts()
        big_groups = sizes[sizes >= 2].reset_index()["c"].value_counts()
        out["name_groups"] = big_groups.reindex(np.arange(k)).fillna(0).astype(int).to_numpy()
        gl = groups[inside[schema.ROW_L].to_numpy()]
        gr = groups[inside[schema.ROW_R].to_numpy()]
        cross = gl != gr
        id_gamma = schema.GAMMA_PREFIX + id_comparison
        same_id = np.zeros(k, dtype=bool)
        differ_id = np.zeros(k, dtype=bool)
        if id_gamma in inside:
            g_id = inside[id_gamma].to_numpy()
            same = cross & np.isin(g_id, _level_index(comparisons, id_comparison, id_same_levels))
            diff = cross & np.isin(g_id, _level_index(comparisons, id_comparison, id_differ_levels))
            same_id[np.unique(owner[same])] = True
            differ_id[np.unique(owner[diff])] = True
        split = (out["name_groups"].to_numpy() >= 2) & ~same_id
        differ = differ_id & ~same_id
    conflicts = pd.Series("", index=out.index)
    if golden is not None and "conflicts" in golden:
        g = golden.set_index(schema.IDENTITY_ID)["conflicts"].fillna("").astype(str)
        conflicts = g.reindex(out.index).fillna("")
    out["conflicts"] = conflicts
    strong = {SPLIT_BY_NAME: split, IDS_DIFFER: differ}
    weak = {}
    if include_weak:
        weak = {
            LOW_PROBABILITY: out["min_probability"].to_numpy() < low_probability,
            f"size_over_{large}": size > large,
            CONFLICTS: out["conflicts"].to_numpy() != "",
        }
    reasons = np.full(k, "", dtype=object)
    suspicion = np.zeros(k, dtype=np.int64)
    for reason, hit in {**strong, **weak}.items():
        reasons = np.where(hit, reasons + reason + "|", reasons)
        suspicion += hit.astype(np.int64) * (2 if reason in strong else 1)
    out["reasons"] = pd.Series(reasons, index=out.index).str.rstrip("|")
    out["suspicion"] = suspicion
    out = out[(out["size"] > 1) & (out["suspicion"] > 0)]
    out = out.rename_axis(schema.IDENTITY_ID).reset_index()
    return out.sort_values(
        ["suspicion", "min_probability", "size"], ascending=[False, True, False], kind="stable"
    ).reset_index(drop=True)
