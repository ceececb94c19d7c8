"""Clerical review: review queue, side-by-side view, waterfall chart, labels I/O, retraining
from labels, threshold trade-off, suspect clusters, an ipywidgets labelling UI. Never imports
the Linker, CLI or store; matplotlib and ipywidgets load lazily (extra ``notebooks``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare import Comparison, compare
from linkage.errors import InputError
from linkage.io import write_csv
from linkage.model import FellegiSunterModel, match_probability
from linkage.pipeline import attach_keys

logger = logging.getLogger(__name__)

MATCH = "match"
NON_MATCH = "non-match"
UNSURE = "unsure"
LABEL_VALUES = (MATCH, NON_MATCH, UNSURE)
KEY_COLUMNS = ["source_l", "record_id_l", "source_r", "record_id_r"]
LABEL_COLUMNS = [*KEY_COLUMNS, "label"]
_ALIASES = {
    "1": MATCH,
    "true": MATCH,
    "yes": MATCH,
    "match": MATCH,
    "0": NON_MATCH,
    "false": NON_MATCH,
    "no": NON_MATCH,
    "non-match": NON_MATCH,
    "nonmatch": NON_MATCH,
    "non_match": NON_MATCH,
    "unsure": UNSURE,
    "?": UNSURE,
}
# Raw field shown beside a standardized column that has no raw twin of the same stem.
_RAW_FOR = {schema.ID_STD: schema.ID_NUMBER, schema.PHONE_STD: schema.PHONE}


def _need_extra(module: str) -> ImportError:
    return ImportError(
        f"{module} is needed for this; install the notebooks extra: pip install 'linkage[notebooks]'"
    )


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _need_extra("matplotlib") from exc
    return plt


def _threshold_weight(threshold: float) -> float:
    if not 0 < threshold < 1:
        raise InputError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    return float(np.log2(threshold) - np.log2(1 - threshold))


def _identity_of_rows(records: pd.DataFrame, identities: pd.DataFrame) -> np.ndarray:
    """identity_id per record row (position), joined on (source, record_id)."""
    keys = [schema.SOURCE, schema.RECORD_ID]
    # Fast path: a run's identities come in the order of its records.
    if len(identities) == len(records) and all(
        np.array_equal(identities[c].to_numpy(), records[c].to_numpy()) for c in keys
    ):
        return identities[schema.IDENTITY_ID].to_numpy()
    index = pd.MultiIndex.from_arrays([identities[c].astype(str) for c in keys])
    pos = index.get_indexer(pd.MultiIndex.from_arrays([records[c].astype(str) for c in keys]))
    if (pos < 0).any():
        raise InputError(f"{int((pos < 0).sum())} records have no identity")
    return identities[schema.IDENTITY_ID].to_numpy()[pos]


def review_queue(
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    identities: pd.DataFrame | None = None,
    *,
    threshold: float = 0.9,
    band: float = 4.0,
    large_cluster: int = 5,
    limit: int | None = 100,
    random_pairs: int = 0,
    seed: int = 0,
) -> pd.DataFrame:
    """Pairs worth a reviewer's time, closest to the threshold first.

    Near the threshold: match weight within ``band`` bits of the threshold's weight. In a
    large cluster: both records in one identity of more than ``large_cluster`` records.
    ``random_pairs`` more, drawn uniformly from the other scored pairs (reason ``random``),
    go last: labels on them keep precision/recall estimates honest away from the threshold.
    """
    w0 = _threshold_weight(threshold)
    weight = pairs[schema.MATCH_WEIGHT].to_numpy()
    distance = np.abs(weight - w0)
    near = distance <= band
    size = np.zeros(len(pairs), dtype=np.int64)
    large = np.zeros(len(pairs), dtype=bool)
    if identities is not None and len(pairs):
        ident = _identity_of_rows(records, identities)
        sizes = pd.Series(ident).value_counts()
        left = ident[pairs[schema.ROW_L].to_numpy()]
        right = ident[pairs[schema.ROW_R].to_numpy()]
        same = left == right
        size = np.where(same, sizes.reindex(left).to_numpy(), 0)
        large = same & (size > large_cluster)
    keep = near | large
    out = attach_keys(pairs[keep], records)
    reason = pd.Series(np.where(near[keep], "near_threshold", ""), index=out.index)
    both = near[keep] & large[keep]
    reason = reason + np.where(both, "|", "") + np.where(large[keep], "large_cluster", "")
    out.insert(0, "reason", reason)
    out["cluster_size"] = size[keep]
    out["distance"] = distance[keep]
    out = out.sort_values(["distance", schema.ROW_L, schema.ROW_R], kind="stable")
    if limit is not None:
        out = out.head(limit)
    if random_pairs > 0:
        rest = np.flatnonzero(~keep)
        pick = np.random.default_rng(seed).permutation(rest)[:random_pairs]
        pick.sort()
        extra = attach_keys(pairs.iloc[pick], records)
        extra.insert(0, "reason", "random")
        extra["cluster_size"] = size[pick]
        extra["distance"] = distance[pick]
        out = pd.concat([out, extra])
    logger.info("review queue: %d pairs (%d near or in large clusters)", len(out), int(keep.sum()))
    return out.reset_index(drop=True)


def _raw_columns(comparison: Comparison, records: pd.DataFrame) -> list[str]:
    """Columns to show for a comparison: its raw canonical fields, else its first column."""
    cols: list[str] = []
    for column in comparison.columns:
        stem = column.removesuffix("_std")
        raw = _RAW_FOR.get(column, stem)
        if raw in schema.CANONICAL_FIELDS and raw in records and raw not in cols:
            cols.append(raw)
    return cols or [c for c in comparison.columns[:1] if c in records]


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, str | list | tuple | np.ndarray) and pd.isna(value)):
        return ""
    return str(value)


def side_by_side(
    pair: pd.Series,
    records: pd.DataFrame,
    model: FellegiSunterModel,
    comparisons: Sequence[Comparison],
) -> pd.DataFrame:
    """One row per comparison: raw values of both records, comparison level and weight."""
    rows = records[schema.ROW].to_numpy()
    left = records.iloc[int(np.flatnonzero(rows == int(pair[schema.ROW_L]))[0])]
    right = records.iloc[int(np.flatnonzero(rows == int(pair[schema.ROW_R]))[0])]
    explained = model.explain(pair).set_index("comparison")
    out = [
        ("record", f"{left[schema.SOURCE]}:{left[schema.RECORD_ID]}",
         f"{right[schema.SOURCE]}:{right[schema.RECORD_ID]}", np.nan, "", np.nan)
    ]  # fmt: skip
    for comparison in comparisons:
        cols = _raw_columns(comparison, records)
        ex = explained.loc[comparison.name]
        out.append(
            (
                comparison.name,
                " / ".join(t for t in (_text(left[c]) for c in cols) if t),
                " / ".join(t for t in (_text(right[c]) for c in cols) if t),
                int(ex["level"]),
                ex["level_name"],
                float(ex["weight"]),
            )
        )
    prior = float(explained.loc["prior", "weight"])
    total = float(explained["weight"].sum())
    out.append(("prior", "", "", np.nan, "", prior))
    out.append(("total", "", "", np.nan, f"p = {float(match_probability(total)):.3f}", total))
    return pd.DataFrame(
        out, columns=["comparison", "left", "right", "level", "level_name", "weight"]
    )


def plot_waterfall(
    model: FellegiSunterModel, pair: pd.Series, ax: Any = None, title: str | None = None
) -> Any:
    """Draw the match-weight waterfall of one pair (from ``model.waterfall_data``); return the Axes."""
    plt = _pyplot()
    data = model.waterfall_data(pair)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.35 * len(data) + 1.2))
    y = np.arange(len(data))[::-1]
    is_total = data["step"].eq("total").to_numpy()
    colour = np.where(is_total, "#4c72b0", np.where(data["weight"] >= 0, "#55a868", "#c44e52"))
    ax.barh(y, data["end"] - data["start"], left=data["start"], color=colour)
    ax.set_yticks(y, data["step"])
    ax.axvline(0, color="grey", lw=0.8)
    for yi, end, p in zip(y, data["end"], data["probability"], strict=True):
        ax.annotate(f"{p:.2f}", (end, yi), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=7)  # fmt: skip
    ax.set_xlabel("match weight (log2 Bayes factor); labels: cumulative probability")
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------- labels


def empty_labels() -> pd.DataFrame:
    """An empty labels table with the columns ``model.labels`` expects."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LABEL_COLUMNS})


def normalize_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Check columns, map label spellings to match / non-match / unsure, order each pair's sides."""
    missing = [c for c in LABEL_COLUMNS if c not in labels]
    if missing:
        raise InputError(f"labels lack columns {missing}")
    out = labels[LABEL_COLUMNS].astype(str).copy()
    text = out["label"].str.strip().str.lower()
    out["label"] = text.map(_ALIASES)
    bad = out["label"].isna()
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} labels are not one of {LABEL_VALUES} "
            f"(first: {labels['label'][bad].iloc[0]!r})",
            column="label",
        )
    # One spelling per pair: the smaller (source, record_id) on the left.
    swap = (out["source_l"] > out["source_r"]) | (
        (out["source_l"] == out["source_r"]) & (out["record_id_l"] > out["record_id_r"])
    )
    left = out.loc[swap, ["source_l", "record_id_l"]].to_numpy()
    out.loc[swap, ["source_l", "record_id_l"]] = out.loc[
        swap, ["source_r", "record_id_r"]
    ].to_numpy()
    out.loc[swap, ["source_r", "record_id_r"]] = left
    # The latest label of a pair wins.
    return out.drop_duplicates(KEY_COLUMNS, keep="last").reset_index(drop=True)


def add_label(labels: pd.DataFrame, pair: pd.Series | dict, label: str) -> pd.DataFrame:
    """Return ``labels`` with ``pair`` (keys as in a review queue row) labelled; replaces a prior one."""
    row = pd.DataFrame([{**{k: pair[k] for k in KEY_COLUMNS}, "label": label}])
    return normalize_labels(pd.concat([labels, row], ignore_index=True))


def save_labels(labels: pd.DataFrame, path: str | Path) -> Path:
    """Write labels as UTF-8 CSV atomically (readable by ``load_labels`` and ``model.labels``)."""
    return write_csv(normalize_labels(labels), path)


def load_labels(path: str | Path) -> pd.DataFrame:
    """Read a labels CSV; a missing file gives an empty table."""
    path = Path(path)
    if not path.exists():
        return empty_labels()
    return normalize_labels(pd.read_csv(path, dtype=str, keep_default_na=False))


def training_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Labels without ``unsure`` (the pipeline would read them as non-matches)."""
    labels = normalize_labels(labels)
    return labels[labels["label"] != UNSURE].reset_index(drop=True)


def labels_from_truth(pairs: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Stand-in reviewer for demos and tests: label pairs from a truth table's person_id."""
    person = pd.Series(
        truth[schema.PERSON_ID].to_numpy(),
        index=pd.MultiIndex.from_arrays(
            [truth[schema.SOURCE].astype(str), truth[schema.RECORD_ID].astype(str)]
        ),
    )

    def side(s: str) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays(
            [pairs[f"source_{s}"].astype(str), pairs[f"record_id_{s}"].astype(str)]
        )
        return person.reindex(keys).to_numpy()

    left, right = side("l"), side("r")
    label = np.where(
        pd.isna(left) | pd.isna(right), UNSURE, np.where(left == right, MATCH, NON_MATCH)
    )
    return normalize_labels(pairs[KEY_COLUMNS].assign(label=label))


def _label_rows(labels: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Labels with the records' row keys (rid_l < rid_r); pairs naming unknown records dropped."""
    index = pd.Series(
        records[schema.ROW].to_numpy(),
        index=pd.MultiIndex.from_arrays(
            [records[schema.SOURCE].astype(str), records[schema.RECORD_ID].astype(str)]
        ),
    )

    def side(s: str) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([labels[f"source_{s}"], labels[f"record_id_{s}"]])
        return index.reindex(keys).to_numpy()

    left, right = side("l"), side("r")
    ok = ~(pd.isna(left) | pd.isna(right))
    if not ok.all():
        logger.warning("%d labelled pairs name records not in this run", int((~ok).sum()))
    out = labels[ok].copy()
    out[schema.ROW_L] = np.minimum(left[ok], right[ok]).astype(np.int64)
    out[schema.ROW_R] = np.maximum(left[ok], right[ok]).astype(np.int64)
    return out.reset_index(drop=True)


def _stratum_weights(rows: pd.DataFrame, pairs: pd.DataFrame, bin_bits: float) -> np.ndarray:
    """Inverse sampling weight of each labelled pair: scored pairs over labelled pairs per
    match-weight bin (post-stratification); pairs the run never scored weigh 1."""
    weight = pd.Series(
        pairs[schema.MATCH_WEIGHT].to_numpy(),
        index=pd.MultiIndex.from_arrays([pairs[schema.ROW_L], pairs[schema.ROW_R]]),
    )
    weight = weight[~weight.index.duplicated()]
    labelled = weight.reindex(pd.MultiIndex.from_arrays([rows[schema.ROW_L], rows[schema.ROW_R]]))
    labelled = labelled.to_numpy(dtype=np.float64)
    all_bins = np.floor(pairs[schema.MATCH_WEIGHT].to_numpy() / bin_bits)
    population = pd.Series(all_bins).value_counts()
    bins = np.floor(labelled / bin_bits)
    sampled = pd.Series(bins[~np.isnan(bins)]).value_counts()
    ratio = (population / sampled).reindex(bins).to_numpy()
    return np.where(np.isnan(bins) | np.isnan(ratio), 1.0, ratio)


def fit_from_labels(
    model: FellegiSunterModel,
    records: pd.DataFrame,
    comparisons: Sequence[Comparison],
    labels: pd.DataFrame,
    *,
    pairs: pd.DataFrame | None = None,
    keep_u: bool = True,
    prior_strength: float = 200.0,
    bin_bits: float = 2.0,
) -> FellegiSunterModel:
    """A new model with m (and u unless ``keep_u``) from reviewed pairs; lambda kept.

    A review queue is not a random sample: its matches are the hard ones (a field disagrees)
    and its non-matches near-misses. So u is kept from the random-pair estimate by default,
    the prior from the original model, and, given the run's scored ``pairs``, each labelled
    match is weighted by how many scored pairs its match-weight bin holds per labelled pair
    (post-stratification). The labelled m is blended with the old one as if the old m came
    from ``prior_strength`` matches (a Dirichlet prior); 0 takes the labels alone.
    """
    rows = _label_rows(training_labels(labels), records)
    vectors = compare(records, rows[[schema.ROW_L, schema.ROW_R]], list(comparisons))
    y = (rows["label"] == MATCH).to_numpy().astype(np.int8)
    new = FellegiSunterModel.from_dict(model.to_dict())
    new.fit_supervised(vectors, y)  # checks the labels; gives u when keep_u is False
    new.lambda_ = model.lambda_
    pos = y.astype(bool)
    w = np.ones(len(rows)) if pairs is None else _stratum_weights(rows, pairs, bin_bits)
    for name in new.comparisons:
        g = vectors[schema.GAMMA_PREFIX + name].to_numpy()
        use = pos & (g >= 0)
        if not use.any():
            continue
        counts = np.bincount(g[use], weights=w[use], minlength=len(new.levels[name]))
        labelled_m = counts / counts.sum()
        # Kish effective sample size: unequal weights carry less information.
        n_eff = w[use].sum() ** 2 / (w[use] ** 2).sum()
        share = n_eff / (n_eff + prior_strength)
        new.m_[name] = share * labelled_m + (1 - share) * model.m_[name]
        new.m_[name] = np.maximum(new.m_[name], 1e-12)
        new.m_[name] /= new.m_[name].sum()
    if keep_u:
        new.u_ = {k: v.copy() for k, v in model.u_.items()}
    logger.info("refitted from %d labelled pairs (%d matches)", len(y), int(y.sum()))
    return new


# ---------------------------------------------------------------------- threshold trade-off

_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)


def labelled_tradeoff(
    labels: pd.DataFrame,
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    thresholds: Sequence[float] = _THRESHOLDS,
) -> pd.DataFrame:
    """Precision and recall among reviewed pairs at each threshold (unsure labels left out).

    A labelled pair the blocking never produced has probability 0. Estimates hold for pairs
    like the reviewed ones (near the threshold), not for all pairs.
    """
    rows = _label_rows(training_labels(labels), records)
    prob = pd.Series(
        pairs[schema.MATCH_PROBABILITY].to_numpy(),
        index=pd.MultiIndex.from_arrays([pairs[schema.ROW_L], pairs[schema.ROW_R]]),
    )
    prob = prob[~prob.index.duplicated()]
    p = prob.reindex(pd.MultiIndex.from_arrays([rows[schema.ROW_L], rows[schema.ROW_R]]))
    p = np.nan_to_num(p.to_numpy(dtype=np.float64), nan=0.0)
    truth = (rows["label"] == MATCH).to_numpy()
    out = []
    for t in thresholds:
        pred = p >= t
        tp, fp, fn = (
            int((pred & truth).sum()),
            int((pred & ~truth).sum()),
            int((~pred & truth).sum()),
        )
        out.append(
            {
                "threshold": t,
                "labelled": len(rows),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else np.nan,
                "recall": tp / (tp + fn) if tp + fn else np.nan,
            }
        )
    return pd.DataFrame(out)


def expected_tradeoff(
    pairs: pd.DataFrame, thresholds: Sequence[float] = _THRESHOLDS
) -> pd.DataFrame:
    """Model-expected precision and recall over all scored pairs (if the model is calibrated)."""
    p = np.sort(pairs[schema.MATCH_PROBABILITY].to_numpy(dtype=np.float64))
    tail = np.concatenate((np.cumsum(p[::-1])[::-1], [0.0]))  # sum of p from index i on
    total = tail[0]
    out = []
    for t in thresholds:
        i = int(np.searchsorted(p, t, side="left"))
        above = len(p) - i
        out.append(
            {
                "threshold": t,
                "pairs_above": above,
                "expected_matches_above": tail[i],
                "precision": tail[i] / above if above else np.nan,
                "recall": tail[i] / total if total else np.nan,
            }
        )
    return pd.DataFrame(out)


def plot_tradeoff(table: pd.DataFrame, ax: Any = None, title: str | None = None) -> Any:
    """Plot precision and recall against threshold from a trade-off table; return the Axes."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(table["threshold"], table["precision"], marker="o", label="precision")
    ax.plot(table["threshold"], table["recall"], marker="s", label="recall")
    ax.set_xlabel("match-probability threshold")
    ax.set_ylim(0, 1.02)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------------- clusters


def suspect_clusters(
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    identities: pd.DataFrame,
    golden: pd.DataFrame | None = None,
    *,
    large: int = 4,
    low_probability: float = 0.5,
) -> pd.DataFrame:
    """Identities most likely wrong: low minimum internal pair probability, conflicts, size > ``large``."""
    # Integer identity codes: bincount and int groupbys instead of hashing id strings.
    codes, names = pd.factorize(_identity_of_rows(records, identities))
    k = len(names)
    size = np.bincount(codes, minlength=k)
    left = codes[pairs[schema.ROW_L].to_numpy()]
    inside = left == codes[pairs[schema.ROW_R].to_numpy()]
    prob = pairs[schema.MATCH_PROBABILITY].to_numpy()[inside]
    min_prob = np.full(k, np.nan)
    if inside.any():
        lowest = pd.Series(prob).groupby(left[inside]).min()
        min_prob[lowest.index.to_numpy()] = lowest.to_numpy()
    src_code = pd.factorize(records[schema.SOURCE])[0]
    per_source = pd.DataFrame({"c": codes, "s": src_code}).drop_duplicates()
    out = pd.DataFrame(
        {
            "size": size,
            "min_probability": min_prob,
            "internal_pairs": np.bincount(left[inside], minlength=k),
            "sources": np.bincount(per_source["c"].to_numpy(), minlength=k),
        },
        index=pd.Index(names),
    )
    conflicts = pd.Series("", index=out.index)
    if golden is not None and "conflicts" in golden:
        g = golden.set_index(schema.IDENTITY_ID)["conflicts"].fillna("").astype(str)
        conflicts = g.reindex(out.index).fillna("")
    out["conflicts"] = conflicts
    out = out[out["size"] > 1]
    low = out["min_probability"] < low_probability
    big = out["size"] > large
    has_conflict = out["conflicts"] != ""
    out["reasons"] = (
        np.where(low, "low_internal_probability|", "")
        + np.where(big, f"size_over_{large}|", "")
        + np.where(has_conflict, "conflicts|", "")
    )
    out["reasons"] = out["reasons"].str.rstrip("|")
    out["suspicion"] = low.astype(int) + big.astype(int) + has_conflict.astype(int)
    out = out[out["suspicion"] > 0].rename_axis(schema.IDENTITY_ID).reset_index()
    return out.sort_values(
        ["suspicion", "min_probability", "size"], ascending=[False, True, False], kind="stable"
    ).reset_index(drop=True)


# ---------------------------------------------------------------------- labelling UI


class ReviewSession:
    """Walk a review queue, label each pair (match / non-match / unsure), save after each label.

    ``label()`` works without widgets (scripts, tests); ``widget()`` wraps it in ipywidgets
    buttons whose handlers call ``label()``.
    """

    def __init__(
        self,
        queue: pd.DataFrame,
        records: pd.DataFrame,
        model: FellegiSunterModel,
        comparisons: Sequence[Comparison],
        labels_path: str | Path,
    ):
        self.queue = queue.reset_index(drop=True)
        self.records = records
        self.model = model
        self.comparisons = list(comparisons)
        self.labels_path = Path(labels_path)
        self.labels = load_labels(self.labels_path)
        self.position = 0
        self.buttons: dict[str, Any] = {}
        self._output: Any = None
        self._on_change: list[Callable[[], None]] = []

    @property
    def current(self) -> pd.Series | None:
        """The pair under review, or None when the queue is done."""
        return self.queue.iloc[self.position] if self.position < len(self.queue) else None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Suspend redrawing (e.g. while labelling many pairs in code); redraw once at the end."""
        callbacks, self._on_change = self._on_change, []
        try:
            yield
        finally:
            self._on_change = callbacks
            self._changed()

    def _changed(self) -> None:
        for callback in self._on_change:
            callback()

    def label(self, value: str) -> None:
        """Label the current pair, save the labels file and move on."""
        pair = self.current
        if pair is None:
            raise InputError("the review queue is finished")
        self.labels = add_label(self.labels, pair, value)
        save_labels(self.labels, self.labels_path)
        self.position += 1
        self._changed()

    def skip(self) -> None:
        """Move to the next pair without labelling."""
        self.position = min(self.position + 1, len(self.queue))
        self._changed()

    def widget(self) -> Any:
        """An ipywidgets box: progress, side-by-side table, waterfall and the three buttons."""
        try:
            import ipywidgets as widgets
            from IPython.display import display
        except ImportError as exc:
            raise _need_extra("ipywidgets") from exc
        plt = _pyplot()
        status = widgets.HTML()
        output = widgets.Output()
        for value, style in ((MATCH, "success"), (NON_MATCH, "danger"), (UNSURE, "warning")):
            button = widgets.Button(description=value, button_style=style)
            button.on_click(lambda _b, v=value: self.label(v))
            self.buttons[value] = button
        skip = widgets.Button(description="skip")
        skip.on_click(lambda _b: self.skip())
        self.buttons["skip"] = skip

        def render() -> None:
            pair = self.current
            status.value = f"<b>{self.position} / {len(self.queue)}</b> reviewed; " + (
                f"{len(self.labels)} labels in {self.labels_path.name}"
            )
            output.clear_output(wait=True)
            with output:
                if pair is None:
                    print("queue finished")
                    return
                display(side_by_side(pair, self.records, self.model, self.comparisons))
                fig, ax = plt.subplots(figsize=(7, 3.5))
                plot_waterfall(self.model, pair, ax=ax, title=str(pair.get("reason", "")))
                plt.show()
                plt.close(fig)

        self._on_change.append(render)
        self._output = output
        render()
        return widgets.VBox([status, widgets.HBox(list(self.buttons.values())), output])
