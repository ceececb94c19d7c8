"""Charts and dashboards an analyst who knows Splink will recognise, drawn with Altair
(Vega-Lite), and the ipywidgets labelling UI over a ``review.ReviewSession``.

Every chart function returns an ``altair`` chart: it shows itself in a notebook, and
:func:`save_chart` writes it as standalone HTML (the Vega libraries inlined, so the page works
offline; the browser draws Chinese text with the system's fonts) or as PNG/SVG through
``vl-convert`` (which needs a CJK font installed, e.g. Debian's ``fonts-noto-cjk`` or
``fonts-wqy-zenhei``, else Chinese text shows as boxes). The two dashboards,
:func:`comparison_viewer` and :func:`cluster_viewer`, are single HTML files.

Altair, vl-convert and ipywidgets load lazily: install the ``notebooks`` extra
(``pip install 'linkage[notebooks]'``). Weights are in bits (log2 Bayes factors),
probabilities 0-1. Altair was chosen over hand-made plotting because it is what Splink uses,
and Vega-Lite gives tooltips, selections and one-file HTML export for free.
"""

from __future__ import annotations

import functools
import html
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from linkage import schema
from linkage.compare import Comparison
from linkage.errors import InputError
from linkage.model import FellegiSunterModel
from linkage.review.labels import MATCH, NON_MATCH, UNSURE
from linkage.review.queue import identity_of_rows, side_by_side, threshold_weight
from linkage.review.session import ReviewSession

logger = logging.getLogger(__name__)

# Tried in order by the browser and by vl-convert; the first installed CJK font draws Chinese.
FONT = (
    "Noto Sans CJK SC, Source Han Sans SC, WenQuanYi Zen Hei, Microsoft YaHei, PingFang SC, "
    "SimHei, sans-serif"
)
_CJK_FONT_FILES = re.compile(r"(notosanscjk|notoserifcjk|sourcehan|wqy|simhei|msyh|pingfang)", re.I)
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
              "/System/Library/Fonts", "/Library/Fonts", "C:/Windows/Fonts")  # fmt: skip
_POSITIVE, _NEGATIVE, _TOTAL = "#55a868", "#c44e52", "#4c72b0"


def _need_extra(module: str) -> ImportError:
    return ImportError(
        f"{module} is needed for this; install the notebooks extra: pip install 'linkage[notebooks]'"
    )


def require_chart_packages() -> None:
    """Raise ImportError naming the notebooks extra when a package the chart files need is
    missing: altair draws them and vl-convert-python writes standalone HTML and PNG. Looked
    up without importing them, so a command can refuse before any work."""
    import importlib.util

    for module, package in (("altair", "altair"), ("vl_convert", "vl-convert-python")):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a half-installed package
            found = False
        if not found:
            raise _need_extra(package)


def _alt() -> Any:
    try:
        import altair as alt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _need_extra("altair") from exc
    return alt


def _finish(chart: Any) -> Any:
    return chart.configure(font=FONT).configure_view(strokeWidth=0)


@functools.cache
def cjk_font_files() -> tuple[Path, ...]:
    """Installed font files that draw Chinese (searched in the usual font folders by name)."""
    found: list[Path] = []
    for folder in _FONT_DIRS:
        root = Path(os.path.expanduser(folder))
        if root.is_dir():
            found += [p for p in root.rglob("*") if p.is_file() and _CJK_FONT_FILES.search(p.name)]
    return tuple(sorted(found))


def chart_label(text: Any) -> str:
    """Chinese text for a static chart: as is where a CJK font is installed, else its pinyin
    (so a PNG shows readable labels instead of boxes). HTML charts need no such fallback."""
    if cjk_font_files():
        return str(text)
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(str(text))).capitalize()


# ---------------------------------------------------------------------- saving


_HAN = re.compile("[\u3400-\u9fff]")


def _save_html(chart: Any, path: Path, name: str) -> None:
    """Altair's standalone HTML with a ``<title>`` (the chart's title, else the file's name),
    so a browser tab says which chart it holds."""
    chart.save(str(path), format="html", inline=True)
    title = chart.to_dict().get("title")
    if isinstance(title, dict):
        title = title.get("text")
    if isinstance(title, list):
        title = " ".join(map(str, title))
    text = path.read_text(encoding="utf-8")
    if "<title>" not in text:
        head = f"<head>\n  <title>{html.escape(str(title or name))}</title>"
        path.write_text(text.replace("<head>", head, 1), encoding="utf-8")


def save_chart(chart: Any, path: str | Path, *, scale: float = 2.0) -> Path:
    """Write ``chart`` by the suffix of ``path``: ``.html`` (standalone, offline), ``.png``,
    ``.svg`` or ``.json`` (the Vega-Lite spec). Written atomically; returns the path.

    Raises:
        InputError: an unknown suffix, or the folder of ``path`` does not exist.
    """
    from linkage.io import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".png", ".svg", ".json"):
        raise InputError("chart files end in .html, .png, .svg or .json", path=str(path))
    if not path.parent.is_dir():
        raise InputError("the folder does not exist", path=str(path.parent))
    if suffix == ".html":
        return atomic_write(path, lambda p: _save_html(chart, Path(p), path.stem))
    if suffix == ".json":
        return atomic_write(path, lambda p: chart.save(str(p), format="json"))
    try:
        import vl_convert as vlc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise _need_extra("vl-convert-python") from exc
    spec = chart.to_dict()
    if not cjk_font_files() and _HAN.search(json.dumps(spec, ensure_ascii=False)):
        logger.warning(
            "no CJK font found: Chinese text in %s will show as boxes; install one "
            "(Debian: apt-get install fonts-noto-cjk)",
            path.name,
        )
    if suffix == ".png":
        data = vlc.vegalite_to_png(spec, scale=scale)
        return atomic_write(path, lambda p: Path(p).write_bytes(data))
    svg = vlc.vegalite_to_svg(spec)
    return atomic_write(path, lambda p: Path(p).write_text(svg, encoding="utf-8"))


# ---------------------------------------------------------------------- model charts


def _pair_title(pair: pd.Series) -> str:
    keys = [schema.SOURCE_L, schema.RECORD_ID_L, schema.SOURCE_R, schema.RECORD_ID_R]
    if all(k in pair.index for k in keys):
        return (f"{pair[schema.SOURCE_L]}:{pair[schema.RECORD_ID_L]} vs "
                f"{pair[schema.SOURCE_R]}:{pair[schema.RECORD_ID_R]}")  # fmt: skip
    return f"rows {int(pair[schema.ROW_L])} vs {int(pair[schema.ROW_R])}"


def waterfall_data(
    model: FellegiSunterModel,
    pair: pd.Series,
    records: pd.DataFrame | None = None,
    comparisons: Sequence[Comparison] | None = None,
) -> pd.DataFrame:
    """The waterfall's rows: ``model.waterfall_data`` plus order, m, u, level and, given
    ``records`` and ``comparisons``, both records' raw values per comparison."""
    data = model.waterfall_data(pair).reset_index(drop=True)
    explained = model.explain(pair)
    explained = pd.concat([explained.iloc[[-1]], explained.iloc[:-1]], ignore_index=True)
    data["order"] = np.arange(len(data))
    data["comparison"] = [*explained["comparison"], "total"]
    data["level_name"] = [*explained["level_name"].astype(str), ""]
    data["m"] = [*explained["m"], np.nan]
    data["u"] = [*explained["u"], np.nan]
    data["left"] = ""
    data["right"] = ""
    if records is not None and comparisons is not None:
        sbs = side_by_side(pair, records, model, comparisons)
        # whole columns at once: a .loc write per cell cost ~1 ms each (80 pairs a dashboard)
        left = dict(zip(sbs["comparison"], sbs["left"], strict=True))
        right = dict(zip(sbs["comparison"], sbs["right"], strict=True))
        shown = [c not in ("prior", "total") and c in left for c in data["comparison"]]
        data["left"] = [left[c] if ok else "" for c, ok in zip(data["comparison"], shown)]
        data["right"] = [right[c] if ok else "" for c, ok in zip(data["comparison"], shown)]
    data["low"] = np.minimum(data["start"], data["end"])
    data["high"] = np.maximum(data["start"], data["end"])
    data["sign"] = np.where(
        data["step"].eq("total"), "total", np.where(data["weight"] >= 0, "for", "against")
    )
    data["label"] = [_step_label(w, p, last) for w, p, last in zip(
        data["weight"], data["probability"], data["step"].eq("total"), strict=True)]  # fmt: skip
    return data


def _step_label(weight: float, probability: float, total: bool) -> str:
    """A bar's label: its own match weight (bits); the total bar adds the probability.

    A cumulative probability reads 0.000 on every bar of a low-probability pair; the partial
    weight says what each comparison did. Probabilities below 0.001 or above 0.999 are
    written in three significant figures of the probability or its complement.
    """
    text = f"{weight:+.2f}"
    if not total:
        return text
    if 0.001 <= probability <= 0.999:
        p = f"{probability:.3f}"
    elif probability < 0.001:
        p = f"{probability:.3g}"
    else:
        p = f"1 - {1 - probability:.3g}" if probability < 1 else "1"
    return f"{text} bits, p = {p}"


def _waterfall_layers(alt: Any, base: Any, height: int | None = None) -> Any:
    """Bars from cumulative start to end, a zero rule, labels of each bar's match weight."""
    y = alt.Y("step:N", sort=alt.SortField("order"), title=None)
    colour = alt.Color(
        "sign:N",
        scale=alt.Scale(domain=["for", "against", "total"], range=[_POSITIVE, _NEGATIVE, _TOTAL]),
        legend=alt.Legend(title="weight", orient="bottom"),
    )
    tooltip = [
        alt.Tooltip("step:N"),
        alt.Tooltip("weight:Q", format="+.2f", title="partial weight (bits)"),
        alt.Tooltip("end:Q", format="+.2f", title="cumulative weight"),
        alt.Tooltip("probability:Q", format=".4f", title="cumulative probability"),
        alt.Tooltip("m:Q", format=".4g"),
        alt.Tooltip("u:Q", format=".4g"),
        alt.Tooltip("left:N", title="left record"),
        alt.Tooltip("right:N", title="right record"),
    ]
    bars = base.mark_bar().encode(
        y=y,
        x=alt.X("low:Q", title="match weight (bits, log2 Bayes factor)"),
        x2="high:Q",
        color=colour,
        tooltip=tooltip,
    )
    labels = base.mark_text(align="left", dx=4, fontSize=10).encode(
        y=y, x="high:Q", text=alt.Text("label:N")
    )
    zero = base.mark_rule(color="grey").encode(x=alt.datum(0))
    layered = alt.layer(bars, labels, zero)
    return layered.properties(height=height) if height else layered


def waterfall_chart(
    model: FellegiSunterModel,
    pair: pd.Series,
    records: pd.DataFrame | None = None,
    comparisons: Sequence[Comparison] | None = None,
    *,
    title: str | None = None,
) -> Any:
    """Match-weight waterfall of one scored pair (Splink's waterfall chart).

    The prior first, then each comparison's partial weight (green for, red against) from the
    running total, then the total; labels give each bar's match weight in bits (the total's
    also the match probability, in significant figures when near 0 or 1), tooltips
    the level, m, u and (given ``records``/``comparisons``) both records' values. The title
    names the two records (``source:record_id``) when the pair carries ``PAIR_KEYS``.
    """
    alt = _alt()
    data = waterfall_data(model, pair, records, comparisons)
    chart = _waterfall_layers(alt, alt.Chart(data), height=22 * len(data))
    heading = title or f"{_pair_title(pair)}: p = {float(data['probability'].iloc[-1]):.4f}"
    return _finish(chart.properties(title=heading, width=460))


def match_weights_chart(model: FellegiSunterModel) -> Any:
    """Partial match weight log2(m/u) of every comparison level (Splink's match weights chart)."""
    alt = _alt()
    table = model.parameters_table()
    table["sign"] = np.where(table["weight"] >= 0, "for", "against")
    bars = (
        alt.Chart(table)
        .mark_bar()
        .encode(
            y=alt.Y("level_name:N", sort=alt.SortField("level", order="descending"), title=None),
            x=alt.X("weight:Q", title="partial match weight (bits)"),
            color=alt.Color(
                "sign:N",
                scale=alt.Scale(domain=["for", "against"], range=[_POSITIVE, _NEGATIVE]),
                legend=None,
            ),
            tooltip=[
                "comparison",
                "level_name",
                alt.Tooltip("weight:Q", format="+.2f"),
                alt.Tooltip("m:Q", format=".4g"),
                alt.Tooltip("u:Q", format=".4g"),
            ],
        )  # fmt: skip
        .properties(width=360)
    )
    row = alt.Row(
        "comparison:N",
        title=None,
        sort=list(model.comparisons),
        header=alt.Header(labelAngle=0, labelAlign="left"),
    )
    chart = bars.facet(row=row, spacing=4).resolve_scale(y="independent")  # fmt: skip
    return _finish(chart.properties(title="Match weights per comparison level"))


def m_u_chart(model: FellegiSunterModel) -> Any:
    """m and u probability of every comparison level side by side (Splink's m/u parameters chart)."""
    alt = _alt()
    table = model.parameters_table()
    long = table.melt(
        id_vars=["comparison", "level", "level_name"], value_vars=["m", "u"],
        var_name="parameter", value_name="probability",
    )  # fmt: skip
    bars = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("level_name:N", sort=alt.SortField("level", order="descending"), title=None),
            x=alt.X("probability:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("parameter:N", scale=alt.Scale(range=[_POSITIVE, _NEGATIVE])),
            tooltip=[
                "comparison",
                "level_name",
                "parameter",
                alt.Tooltip("probability:Q", format=".4g"),
            ],
        )  # fmt: skip
        .properties(width=200)
    )
    # m and u as two row facets side by side: one facet with a column too sized every row
    # for the comparison with the most levels (Vega-Lite sizes a grid's cells alike),
    # leaving half the chart blank; a row-only facet sizes each row by its own levels
    halves = []
    for parameter in ("m", "u"):
        row = alt.Row(
            "comparison:N",
            title=None,
            sort=list(model.comparisons),
            header=alt.Header(labelAngle=0, labelAlign="left", labels=parameter == "m"),
        )
        half = bars.transform_filter(alt.datum.parameter == parameter).facet(row=row, spacing=4)
        halves.append(
            half.resolve_scale(y="independent").properties(
                title=alt.TitleParams(parameter, anchor="middle", fontWeight="normal")
            )
        )
    chart = alt.hconcat(*halves, spacing=8)
    return _finish(chart.properties(title="m (among matches) and u (among non-matches) per level"))


def match_weight_histogram(
    pairs: pd.DataFrame, threshold: float | None = None, *, bin_bits: float = 1.0
) -> Any:
    """Count of scored pairs per match-weight bin, log scale, with the threshold's weight.

    ``pairs``: scored pairs (``match_weight``). Two humps, well apart, mean a clean model.

    Raises:
        InputError: ``threshold`` is not strictly between 0 and 1.
    """
    alt = _alt()
    weight = pairs[schema.MATCH_WEIGHT].to_numpy(dtype=np.float64)
    lo = math.floor(weight.min() / bin_bits) * bin_bits if len(weight) else 0.0
    bins = np.floor((weight - lo) / bin_bits).astype(np.int64)
    counts = pd.Series(bins).value_counts().sort_index()
    table = pd.DataFrame(
        {"start": lo + counts.index.to_numpy() * bin_bits, "pairs": counts.to_numpy()}
    )
    table["end"] = table["start"] + bin_bits
    table["probability"] = 1 / (1 + 2.0 ** -table["start"])
    bars = (
        alt.Chart(table)
        .mark_bar(color=_TOTAL)
        .encode(
            x=alt.X("start:Q", title="match weight (bits)", bin="binned"),
            x2="end:Q",
            y=alt.Y(
                "pairs:Q",
                scale=alt.Scale(type="symlog"),
                # Vega-Lite puts few ticks on a symlog axis: one per power of ten instead
                axis=alt.Axis(
                    values=_decades(int(table["pairs"].to_numpy().max(initial=1))), format=",.0f"
                ),
                title="candidate pairs",
            ),
            tooltip=[
                alt.Tooltip("start:Q", title="from weight"),
                "pairs:Q",
                alt.Tooltip("probability:Q", format=".4f", title="probability at start"),
            ],
        )  # fmt: skip
    )
    layers = [bars]
    if threshold is not None:
        w0 = threshold_weight(threshold)
        rule = alt.Chart(pd.DataFrame({"w": [w0], "label": [f"threshold p = {threshold}"]}))
        layers.append(rule.mark_rule(strokeDash=[4, 3], color="black").encode(x="w:Q"))
        layers.append(
            rule.mark_text(align="left", dx=4, dy=-6, baseline="top").encode(
                x="w:Q", y=alt.value(0), text="label:N"
            )
        )
    chart = alt.layer(*layers).properties(width=520, height=240, title="Match-weight distribution")
    return _finish(chart)


def _decades(top: int) -> list[int]:
    """0 and the powers of ten up to the first one at or above ``top`` (axis tick values)."""
    values, power = [0, 1], 1
    while power < top:
        power *= 10
        values.append(power)
    return values


def cumulative_blocking_chart(
    pairs_per_rule: Mapping[str, int], rules: Sequence[str] | None = None
) -> Any:
    """Candidate pairs each blocking rule adds, stacked up in rule order (Splink's cumulative
    comparisons chart). ``pairs_per_rule`` counts each pair once, under the first rule that
    produced it (``LinkResult.summary["pairs_per_rule"]``); ``rules`` gives the order (default:
    the mapping's)."""
    alt = _alt()
    order = list(rules) if rules is not None else list(pairs_per_rule)
    added = np.array([int(pairs_per_rule.get(r, 0)) for r in order], dtype=np.int64)
    table = pd.DataFrame(
        {"rule": order, "order": np.arange(len(order)), "added": added,
         "start": np.concatenate(([0], np.cumsum(added)[:-1])), "end": np.cumsum(added)}
    )  # fmt: skip
    base = alt.Chart(table)
    y = alt.Y("rule:N", sort=alt.SortField("order"), title="blocking rule (in order)")
    bars = base.mark_bar(color=_TOTAL).encode(
        y=y,
        x=alt.X("start:Q", title="cumulative candidate pairs"),
        x2="end:Q",
        tooltip=["rule", alt.Tooltip("added:Q", format=",", title="pairs added"),
                 alt.Tooltip("end:Q", format=",", title="cumulative")],
    )  # fmt: skip
    text = base.mark_text(align="left", dx=4).encode(
        y=y, x="end:Q", text=alt.Text("added:Q", format=",")
    )
    chart = alt.layer(bars, text).properties(
        width=460, height=26 * len(table), title="Cumulative candidate pairs by blocking rule"
    )
    return _finish(chart)


def threshold_chart(table: pd.DataFrame, threshold: float | None = None, *, title: str = "") -> Any:
    """Precision and recall (and F1 where present) against the match-probability threshold,
    from ``review.labelled_tradeoff`` or ``review.expected_tradeoff``."""
    alt = _alt()
    metrics = [m for m in ("precision", "recall", "f1") if m in table]
    long = table.melt(id_vars=["threshold"], value_vars=metrics, var_name="metric")
    lines = (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "threshold:Q", title="match-probability threshold", scale=alt.Scale(zero=False)
            ),
            y=alt.Y(
                "value:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title=None
            ),
            color=alt.Color("metric:N", sort=metrics),
            tooltip=["threshold:Q", "metric:N", alt.Tooltip("value:Q", format=".4f")],
        )  # fmt: skip
    )
    layers = [lines]
    if threshold is not None:
        layers.append(
            alt.Chart(pd.DataFrame({"t": [threshold]}))
            .mark_rule(strokeDash=[4, 3], color="grey")
            .encode(x="t:Q")
        )
    heading = title or "Precision and recall against the threshold"
    return _finish(alt.layer(*layers).properties(width=380, height=220, title=heading))


def precision_recall_chart(table: pd.DataFrame, *, title: str = "") -> Any:
    """Precision against recall, one point per threshold (tooltip), from
    ``review.labelled_tradeoff(..., thresholds=None)``: the precision–recall curve."""
    alt = _alt()
    data = table.dropna(subset=["precision", "recall"]).sort_values("threshold")
    chart = (
        alt.Chart(data)
        .mark_line(point=True, interpolate="step-after")
        .encode(
            x=alt.X("recall:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("precision:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            order="threshold:Q",
            tooltip=[
                alt.Tooltip("threshold:Q", format=".4f"),
                alt.Tooltip("precision:Q", format=".3f"),
                alt.Tooltip("recall:Q", format=".3f"),
                "tp:Q",
                "fp:Q",
                "fn:Q",
            ]
            if "tp" in data
            else ["threshold:Q", "precision:Q", "recall:Q"],
        )  # fmt: skip
        .properties(width=300, height=300, title=title or "Precision–recall from labels")
    )
    return _finish(chart)


def coverage_chart(table: pd.DataFrame, *, title: str = "") -> Any:
    """Coverage per district, one panel per indicator, from ``indicators.coverage_indicators``
    (columns ``indicator``, ``district``, ``eligible``, ``covered``, ``coverage``, ``target``;
    coverage a share 0-1, the target a dashed rule where the indicator has one).

    A panel lists only the districts with an eligible person of its indicator: a district
    without one (the ``unknown`` district of persons with no known district, often present
    for one indicator only) has no coverage to draw, and a shared district axis would show
    it as an empty slot in every panel. The ``overall`` row is the table's headline, not a
    district, so it is left out.
    """
    from linkage.indicators import OVERALL

    alt = _alt()
    data = table[(table["district"] != OVERALL) & (table["eligible"] > 0)].assign(
        label=lambda t: t["district"].map(chart_label),
        below=lambda t: t["coverage"] < t["target"].fillna(0),
    )
    bars = (
        alt.Chart()
        .mark_bar()
        .encode(
            x=alt.X("label:N", title=None, axis=alt.Axis(labelAngle=-45)),
            y=alt.Y(
                "coverage:Q",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
                title="coverage",
            ),
            color=alt.Color(
                "below:N",
                scale=alt.Scale(domain=[False, True], range=[_TOTAL, _NEGATIVE]),
                legend=alt.Legend(title="below target"),
            ),
            tooltip=["district", "eligible", "covered", alt.Tooltip("coverage:Q", format=".1%")],
        )  # fmt: skip
    )
    target = alt.Chart().mark_rule(strokeDash=[4, 3], color="black").encode(y="target:Q")
    chart = (
        alt.layer(bars, target, data=data)
        .properties(width=260, height=180)
        .facet(facet=alt.Facet("indicator:N", title=None), columns=2)
        # each panel its own districts (see above)
        .resolve_scale(x="independent")
        .properties(title=title or "Coverage by district (dashed: target)")
    )
    return _finish(chart)


# ---------------------------------------------------------------------- dashboards


def _pattern(pairs: pd.DataFrame, model: FellegiSunterModel) -> pd.Series:
    """Each pair's comparison-vector pattern as text, e.g. ``name=exact, id=null, ...``."""
    parts = []
    for name in model.comparisons:
        names = np.array(["null", *model.levels[name]], dtype=object)
        g = pairs[schema.GAMMA_PREFIX + name].to_numpy().astype(np.int64)
        parts.append(name + "=" + names[g + 1])
    text = parts[0]
    for part in parts[1:]:
        text = text + ", " + part
    return pd.Series(text, index=pairs.index)


def comparison_viewer(
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    model: FellegiSunterModel,
    comparisons: Sequence[Comparison],
    path: str | Path | None = None,
    *,
    patterns: int = 40,
    examples: int = 2,
    seed: int = 0,
) -> Any:
    """Comparison viewer dashboard (after Splink's): the commonest comparison-vector patterns
    with their pair counts and match weight; pick an example pair with the slider to see its
    waterfall and both records' values per comparison.

    ``pairs``: the run's scored pairs; up to ``examples`` random pairs for each of the
    ``patterns`` commonest patterns. Writes a standalone HTML file when ``path`` is given;
    returns the chart.
    """
    alt = _alt()
    if not len(pairs):
        raise InputError("no scored pairs to view")
    pattern = _pattern(pairs, model)
    counts = pattern.value_counts()
    top = counts.head(patterns)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for value in top.index:
        where = np.flatnonzero(pattern.to_numpy() == value)
        picked += sorted(rng.choice(where, size=min(examples, len(where)), replace=False).tolist())
    steps, summary = [], []
    for i, position in enumerate(picked):
        pair = pairs.iloc[position]
        data = waterfall_data(model, pair, records, comparisons)
        data["example"] = i
        steps.append(data)
        left = records.iloc[int(pair[schema.ROW_L])]
        right = records.iloc[int(pair[schema.ROW_R])]
        summary.append(
            {
                "example": i,
                "pattern": pattern.iloc[position],
                "pairs_with_pattern": int(counts[pattern.iloc[position]]),
                "match_weight": float(pair[schema.MATCH_WEIGHT]),
                "match_probability": float(pair[schema.MATCH_PROBABILITY]),
                "records": f"{left[schema.SOURCE]}:{left[schema.RECORD_ID]} vs "
                f"{right[schema.SOURCE]}:{right[schema.RECORD_ID]}",
            }
        )
    steps_df = pd.concat(steps, ignore_index=True)
    summary_df = pd.DataFrame(summary)
    pick = alt.param(
        name="example", value=0,
        bind=alt.binding_range(min=0, max=len(picked) - 1, step=1, name="example pair "),
    )  # fmt: skip
    selected = alt.datum.example == pick
    overview = (
        alt.Chart(summary_df)
        .mark_circle(size=90)
        .encode(
            x=alt.X("match_weight:Q", title="match weight (bits)"),
            y=alt.Y(
                "pairs_with_pattern:Q",
                scale=alt.Scale(type="log"),
                title="pairs with this comparison pattern",
            ),
            color=alt.condition(selected, alt.value(_NEGATIVE), alt.value(_TOTAL)),
            size=alt.condition(selected, alt.value(260), alt.value(70)),
            tooltip=[
                "example:Q",
                "records:N",
                "pattern:N",
                "pairs_with_pattern:Q",
                alt.Tooltip("match_probability:Q", format=".4f"),
            ],
        )  # fmt: skip
        .add_params(pick)
        .properties(width=460, height=200, title="Comparison patterns (one dot per example pair)")
    )
    waterfall = _waterfall_layers(
        alt,
        alt.Chart(steps_df).transform_filter(selected),
        height=22 * (len(model.comparisons) + 2),
    ).properties(width=460, title="Waterfall of the chosen pair")
    table = steps_df[~steps_df["comparison"].isin(["prior", "total"])]
    rows = (
        alt.Chart(table)
        .transform_filter(selected)
        .encode(y=alt.Y("comparison:N", sort=alt.SortField("order"), title=None))
    )
    hidden = alt.Y("comparison:N", sort=alt.SortField("order"), axis=None)
    values = alt.hconcat(
        rows.mark_text(align="left").encode(text="left:N", x=alt.value(4)).properties(
            width=250, title="left record"),
        rows.mark_text(align="left").encode(text="right:N", x=alt.value(4), y=hidden).properties(
            width=250, title="right record"),
        rows.mark_text(align="left").encode(text="level_name:N", x=alt.value(4), y=hidden)
        .properties(width=110, title="level"),
        spacing=2,
    )  # fmt: skip
    heading = (
        alt.Chart(summary_df)
        .transform_filter(selected)
        .mark_text(align="left", fontSize=14, fontWeight="bold")
        .encode(text="records:N", x=alt.value(0), y=alt.value(10))
        .properties(width=460, height=20)
    )
    dashboard = alt.vconcat(
        overview, heading, waterfall, values,
        title=f"Comparison viewer: {len(picked)} example pairs of {len(top)} patterns "
        f"({int(top.sum()):,} of {len(pairs):,} scored pairs)",
    )  # fmt: skip
    dashboard = _finish(dashboard)
    if path is not None:
        save_chart(dashboard, path)
    return dashboard


def _circle_layout(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    angle = 2 * np.pi * np.arange(len(members)) / max(len(members), 1)
    return np.cos(angle), np.sin(angle)


def cluster_viewer(
    pairs: pd.DataFrame,
    records: pd.DataFrame,
    identities: pd.DataFrame,
    path: str | Path | None = None,
    *,
    clusters: Sequence[str] | None = None,
    limit: int = 50,
    fields: Sequence[str] = (
        schema.NAME,
        schema.ID_NUMBER,
        schema.BIRTH_DATE,
        schema.GENDER,
        schema.PHONE,
        schema.CURRENT_ADDRESS,
    ),
    threshold: float | None = None,
    notes: Mapping[str, str] | None = None,
) -> Any:
    """Cluster viewer dashboard (after Splink's cluster studio): choose an identity from the
    drop-down to see its records as a graph (nodes = records, edges = scored pairs coloured by
    match probability, dashed below ``threshold``) and as a table of their values.

    ``clusters``: identity ids to include, in menu order (e.g. ``suspect_clusters`` first);
    default the ``limit`` largest identities. ``notes``: a line shown above an identity's
    graph (e.g. why it is suspect). Writes a standalone HTML file when ``path`` is given;
    returns the chart.

    Raises:
        InputError: none of ``clusters`` has more than one record.
    """
    alt = _alt()
    ident = identity_of_rows(records, identities)
    sizes = pd.Series(ident).value_counts()
    if clusters is None:
        chosen = list(sizes[sizes > 1].index[:limit])
    else:
        chosen = [c for c in clusters if sizes.get(c, 0) > 1][:limit]
    if not chosen:
        raise InputError("no identity with more than one record to show")
    nodes, edges = [], []
    rid_l = pairs[schema.ROW_L].to_numpy()
    rid_r = pairs[schema.ROW_R].to_numpy()
    for cid in chosen:
        members = np.flatnonzero(ident == cid)
        x, y = _circle_layout(members)
        where = dict(zip(members.tolist(), range(len(members)), strict=True))
        for j, row in enumerate(members):
            rec = records.iloc[row]
            # the label just outside the circle, away from the edges that meet inside it
            node = {"cluster": cid, "x": x[j], "y": y[j], "order": j,
                    "label_x": x[j] * 1.2, "label_y": y[j] * 1.2,
                    "record": f"{rec[schema.SOURCE]}:{rec[schema.RECORD_ID]}",
                    "source": rec[schema.SOURCE]}  # fmt: skip
            for f in fields:
                value = rec.get(f)
                node[f] = "" if value is None or (isinstance(value, float) and np.isnan(value)) \
                    else str(value)  # fmt: skip
            node["label"] = node.get(schema.NAME) or node["record"]
            nodes.append(node)
        inside = np.isin(rid_l, members) & np.isin(rid_r, members)
        for k in np.flatnonzero(inside):
            a, b = where[int(rid_l[k])], where[int(rid_r[k])]
            p = float(pairs[schema.MATCH_PROBABILITY].iloc[k])
            below = threshold is not None and p < threshold
            edges.append({"cluster": cid, "x": x[a], "y": y[a], "x2": x[b], "y2": y[b],
                          "probability": p, "below": below,
                          "match_weight": float(pairs[schema.MATCH_WEIGHT].iloc[k]),
                          "pair": f"{nodes[-len(members) + a]['record']} – "
                                  f"{nodes[-len(members) + b]['record']}"})  # fmt: skip
    node_df, edge_df = pd.DataFrame(nodes), pd.DataFrame(edges)
    menu = alt.param(
        name="cluster", value=chosen[0],
        bind=alt.binding_select(options=chosen, name="identity "),
    )  # fmt: skip
    chosen_only = alt.datum.cluster == menu
    axis_off = alt.Axis(labels=False, ticks=False, grid=False, domain=False, title=None)
    scale = alt.Scale(domain=[-1.7, 1.7])
    edge_layer = (
        alt.Chart(
            edge_df
            if len(edge_df)
            else pd.DataFrame(
                columns=[
                    "cluster",
                    "x",
                    "y",
                    "x2",
                    "y2",
                    "probability",
                    "below",
                    "match_weight",
                    "pair",
                ]
            )
        )  # fmt: skip
        .transform_filter(chosen_only)
        .mark_rule(strokeWidth=3)
        .encode(
            x=alt.X("x:Q", axis=axis_off, scale=scale),
            y=alt.Y("y:Q", axis=axis_off, scale=scale),
            x2="x2:Q",
            y2="y2:Q",
            color=alt.Color(
                "probability:Q",
                scale=alt.Scale(scheme="redyellowgreen", domain=[0, 1]),
                title="match probability",
            ),
            strokeDash=alt.condition(alt.datum.below, alt.value([4, 3]), alt.value([1, 0])),
            tooltip=[
                "pair:N",
                alt.Tooltip("probability:Q", format=".4f"),
                alt.Tooltip("match_weight:Q", format="+.2f"),
            ],
        )  # fmt: skip
    )
    base_nodes = alt.Chart(node_df).transform_filter(chosen_only)
    node_layer = base_nodes.mark_circle(size=500, opacity=1).encode(
        x=alt.X("x:Q", axis=axis_off, scale=scale),
        y=alt.Y("y:Q", axis=axis_off, scale=scale),
        color=alt.Color("source:N", title="source"),
        tooltip=["record:N", *[f"{f}:N" for f in fields]],
    )
    label_layer = base_nodes.mark_text(
        fontSize=12,
        align=alt.expr("datum.x > 0.3 ? 'left' : datum.x < -0.3 ? 'right' : 'center'"),
        baseline=alt.expr("datum.y > 0.3 ? 'bottom' : datum.y < -0.3 ? 'top' : 'middle'"),
    ).encode(
        x=alt.X("label_x:Q", axis=axis_off, scale=scale),
        y=alt.Y("label_y:Q", axis=axis_off, scale=scale),
        text="label:N",
    )
    graph = (
        alt.layer(edge_layer, node_layer, label_layer)
        .add_params(menu)
        .properties(width=420, height=420, title="Records and scored pairs")
        .resolve_scale(color="independent")
    )
    rows = base_nodes.encode(y=alt.Y("order:O", axis=None))
    columns = [
        rows.mark_text(align="left")
        .encode(text=f"{f}:N", x=alt.value(0))
        .properties(width=w, title=f)
        for f, w in zip(["record", *fields], [130, 70, 150, 80, 40, 100, 260], strict=False)
    ]
    heading = pd.DataFrame(
        {"cluster": chosen,
         "text": [f"{c}: {int(sizes[c])} records"
                  + (f"; {notes[c]}" if notes and notes.get(c) else "") for c in chosen]}
    )  # fmt: skip
    head = (
        alt.Chart(heading)
        .transform_filter(chosen_only)
        .mark_text(align="left", fontSize=14, fontWeight="bold")
        .encode(text="text:N", x=alt.value(0), y=alt.value(10))
        .properties(width=420, height=20)
    )
    title = f"Cluster viewer: {len(chosen)} identities"
    if not any(node.get(f) for node in nodes for f in fields):
        # read back from a run's output folder without its config: no record values
        title += " (record values not loaded: give the run config to show them)"
    dashboard = alt.vconcat(head, graph, alt.hconcat(*columns, spacing=4), title=title)
    dashboard = _finish(dashboard)
    if path is not None:
        save_chart(dashboard, path)
    return dashboard


def write_dashboards(
    result: Any,
    output: str | Path,
    *,
    threshold: float,
    rules: Sequence[str] | None = None,
    labels: pd.DataFrame | None = None,
    fmt: str = "html",
) -> dict[str, Path]:
    """Write every chart of a run and the two dashboards into the folder ``output``.

    ``result`` is a ``LinkResult`` (records, pairs, identities, golden, model, comparisons,
    summary). Writes ``comparison_viewer.html`` and ``cluster_viewer.html`` (suspect
    identities first, then the largest), and ``match_weights``, ``m_u_parameters``,
    ``match_weight_histogram``, ``cumulative_blocking`` as ``.html`` or ``.png`` (``fmt``);
    given reviewed ``labels``, also ``threshold_tradeoff`` and ``precision_recall``. Returns
    name -> path.

    Raises:
        InputError: ``fmt`` is not html or png; the run has no scored pairs.
    """
    from linkage.review.clusters import suspect_clusters
    from linkage.review.labels import training_labels
    from linkage.review.tradeoff import labelled_tradeoff

    if fmt not in ("html", "png"):
        raise InputError(f"chart format must be html or png, got {fmt!r}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    charts = {
        "match_weights": match_weights_chart(result.model),
        "m_u_parameters": m_u_chart(result.model),
        "match_weight_histogram": match_weight_histogram(result.pairs, threshold),
        "cumulative_blocking": cumulative_blocking_chart(result.summary["pairs_per_rule"], rules),
    }
    if labels is not None and len(training_labels(labels)):
        charts["threshold_tradeoff"] = threshold_chart(
            labelled_tradeoff(labels, result.pairs, result.records), threshold,
            title="Precision and recall among reviewed pairs",
        )  # fmt: skip
        charts["precision_recall"] = precision_recall_chart(
            labelled_tradeoff(labels, result.pairs, result.records, thresholds=None)
        )
    paths = {name: save_chart(chart, out / f"{name}.{fmt}") for name, chart in charts.items()}
    paths["comparison_viewer"] = out / "comparison_viewer.html"
    comparison_viewer(
        result.pairs, result.records, result.model, result.comparisons, paths["comparison_viewer"]
    )
    suspects = suspect_clusters(
        result.pairs, result.records, result.identities, result.golden,
        comparisons=result.comparisons,
    )  # fmt: skip
    sizes = pd.Series(identity_of_rows(result.records, result.identities)).value_counts()
    order = [*suspects[schema.IDENTITY_ID], *sizes[sizes > 1].index]
    if order:
        paths["cluster_viewer"] = out / "cluster_viewer.html"
        cluster_viewer(
            result.pairs, result.records, result.identities, paths["cluster_viewer"],
            clusters=list(dict.fromkeys(order)), threshold=threshold,
            notes=dict(zip(suspects[schema.IDENTITY_ID], "suspect: " + suspects["reasons"],
                           strict=True)),
        )  # fmt: skip
    return paths


# ---------------------------------------------------------------------- labelling widget

# Keys of the shortcut box: one key = one action.
SHORTCUTS = {"m": MATCH, "n": NON_MATCH, "u": UNSURE, "s": "skip", "z": "undo"}


class ReviewWidget:
    """ipywidgets UI over a ``review.ReviewSession``: progress, side-by-side table, waterfall
    chart, buttons (match / non-match / unsure / skip / undo) and a shortcut box.

    Click into the shortcut box and type ``m``, ``n``, ``u``, ``s`` or ``z`` (undo): each key
    acts at once (ipywidgets has no page-wide key events, so the keys go to a text box).
    Every label is saved to the session's labels file as it is given.
    """

    def __init__(self, session: ReviewSession):
        try:
            import ipywidgets as widgets
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise _need_extra("ipywidgets") from exc
        self.session = session
        self.status = widgets.HTML()
        self.output = widgets.Output()
        self.buttons: dict[str, Any] = {}
        styles = {MATCH: "success", NON_MATCH: "danger", UNSURE: "warning", "skip": "",
                  "undo": "info"}  # fmt: skip
        keys = {v: k for k, v in SHORTCUTS.items()}
        for action, style in styles.items():
            button = widgets.Button(description=f"{action} [{keys[action]}]", button_style=style)
            button.on_click(lambda _b, a=action: self.act(a))
            self.buttons[action] = button
        self.keys = widgets.Text(
            placeholder="shortcuts: m n u s z", continuous_update=True, layout={"width": "170px"}
        )
        self.keys.observe(self._on_key, names="value")
        self.box = widgets.VBox(
            [self.status, widgets.HBox([*self.buttons.values(), self.keys]), self.output]
        )
        session.on_change(self.render)
        self.render()

    def act(self, action: str) -> None:
        """Do what a button or shortcut does: label, ``skip`` or ``undo``."""
        if action == "skip":
            self.session.skip()
        elif action == "undo":
            self.session.undo()
        elif self.session.current is not None:
            self.session.label(action)

    def _on_key(self, change: dict) -> None:
        typed = str(change["new"])
        if not typed:
            return
        action = SHORTCUTS.get(typed[-1].lower())
        self.keys.value = ""
        if action is not None:
            self.act(action)

    def render(self) -> None:
        """Redraw progress, the current pair's table and its waterfall."""
        from IPython.display import display

        s = self.session
        pair = s.current
        self.status.value = (
            f"<b>{s.reviewed} / {len(s.queue)}</b> labelled; position {s.position + 1}; "
            f"{len(s.labels)} labels in {s.labels_path.name}"
        )
        self.output.clear_output(wait=True)
        with self.output:
            if pair is None:
                display("queue finished")
                return
            display(side_by_side(pair, s.records, s.model, s.comparisons))
            reason = str(pair.get("reason", ""))
            title = f"{_pair_title(pair)} ({reason})" if reason else None
            display(waterfall_chart(s.model, pair, s.records, s.comparisons, title=title))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)


def review_widget(session: ReviewSession) -> ReviewWidget:
    """The labelling UI over ``session`` (display it as a notebook cell's last value)."""
    return ReviewWidget(session)
