"""Charts and dashboards: their data is right, PNGs draw Chinese glyphs, and every HTML page
renders in a real headless browser (Debian's chromium, installed by .ci/run)."""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linkage import Linker, indicators, review, schema, synth
from linkage.errors import InputError

alt = pytest.importorskip("altair", reason="notebooks extra not installed")
pytest.importorskip("vl_convert", reason="notebooks extra not installed")
from linkage import viz  # noqa: E402  (after the extra's check)

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run does)"
)
needs_cjk_font = pytest.mark.skipif(
    not viz.cjk_font_files(), reason="no CJK font (apt-get install fonts-wqy-zenhei; .ci/run does)"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("viz")
    demo = synth.generate(250, seed=11, output=out / "demo")
    linker = Linker.from_yaml(demo.paths["config"])
    model = linker.config.model.model_copy(update={"u_sample_pairs": 20_000})
    linker = Linker(linker.config.model_copy(update={"model": model}))
    result = linker.run()
    queue = review.review_queue(result.pairs, result.records, limit=60, random_pairs=40)
    labels = review.labels_from_truth(queue, demo.truth)
    return linker, result, labels


def _values(chart) -> list[dict]:
    """Every data row of a chart's spec (all named datasets together)."""
    spec = chart.to_dict()
    return [row for rows in spec.get("datasets", {}).values() for row in rows]


def _middle_pair(result) -> pd.Series:
    pairs = result.pairs_with_keys().sort_values(schema.MATCH_WEIGHT)
    return pairs.iloc[len(pairs) // 2]


# ---------------------------------------------------------------------- chart data


def test_waterfall_steps_add_up_to_the_pairs_weight(run):
    _, result, _ = run
    pair = _middle_pair(result)
    data = viz.waterfall_data(result.model, pair, result.records, result.comparisons)
    assert list(data["comparison"]) == ["prior", *result.model.comparisons, "total"]
    steps = data[data["comparison"] != "total"]
    assert steps["weight"].sum() == pytest.approx(pair[schema.MATCH_WEIGHT])
    assert data["end"].iloc[-1] == pytest.approx(pair[schema.MATCH_WEIGHT])
    assert data["probability"].iloc[-1] == pytest.approx(pair[schema.MATCH_PROBABILITY])
    left = result.records.iloc[int(pair[schema.ROW_L])]
    assert data.set_index("comparison").loc["name", "left"] == (left[schema.NAME] or "")
    chart = viz.waterfall_chart(result.model, pair, result.records, result.comparisons)
    title = chart.to_dict()["title"]
    assert f"{pair['source_l']}:{pair['record_id_l']}" in title
    assert f"{pair['source_r']}:{pair['record_id_r']}" in title


def _low_pair(result) -> pd.Series:
    """The lowest-weight pair with both for and against weights: labels that once read 0.000."""
    pairs = result.pairs_with_keys().sort_values(schema.MATCH_WEIGHT)
    weights = pairs[[c for c in pairs.columns if c.startswith("mw_")]]
    both = pairs[(weights > 0.5).any(axis=1) & (weights < -0.5).any(axis=1)]
    return both.iloc[0]


def test_waterfall_labels_give_each_steps_weight(run):
    _, result, _ = run
    pair = _low_pair(result)
    assert pair[schema.MATCH_PROBABILITY] < 0.0005  # reads 0.000 at three decimals
    data = viz.waterfall_data(result.model, pair, result.records, result.comparisons)
    steps = data[data["comparison"] != "total"]
    assert list(steps["label"]) == [f"{w:+.2f}" for w in steps["weight"]]
    assert len(set(steps["label"])) > 2  # the bars say different things
    total = data["label"].iloc[-1]
    p = float(pair[schema.MATCH_PROBABILITY])
    assert total == f"{pair[schema.MATCH_WEIGHT]:+.2f} bits, p = {p:.3g}"
    assert "0.000" not in total
    # near 1 the complement is shown, never a rounded 1.000
    assert viz._step_label(30.0, 1 - 2**-30, True) == "+30.00 bits, p = 1 - 9.31e-10"
    assert viz._step_label(1.0, 0.6667, True) == "+1.00 bits, p = 0.667"


def test_side_by_side_names_a_missing_id(run):
    _, result, _ = run
    records = result.records.copy()
    # a pair whose right record has an ID: the left one's is removed below
    with_id = set(records.loc[records[schema.ID_STD].notna(), schema.ROW])
    pairs = result.pairs_with_keys().sort_values(schema.MATCH_WEIGHT)
    pairs = pairs[pairs[schema.ROW_R].isin(with_id)]
    pair = pairs.iloc[len(pairs) // 2]
    left = int(pair[schema.ROW_L])
    at = int(np.flatnonzero(records[schema.ROW].to_numpy() == left)[0])
    records[schema.ID_NUMBER] = records[schema.ID_NUMBER].astype(object)
    records.iloc[at, records.columns.get_loc(schema.ID_NUMBER)] = None
    records.iloc[at, records.columns.get_loc(schema.BIRTH_DATE)] = "1990-03-05"
    sbs = review.side_by_side(pair, records, result.model, result.comparisons)
    text = sbs.set_index("comparison").loc["id", "left"]
    assert text.startswith("no id_number / 1990-03-05")
    assert not text.startswith(" /") and "/  /" not in text
    right = sbs.set_index("comparison").loc["id", "right"]
    assert not right.startswith("no ")  # the other record keeps its ID


def test_cumulative_blocking_and_histogram_counts(run):
    linker, result, _ = run
    rules = [r.name for r in linker.config.blocking.rules]
    chart = viz.cumulative_blocking_chart(result.summary["pairs_per_rule"], rules)
    rows = pd.DataFrame(_values(chart))
    assert list(rows["rule"]) == rules
    assert rows["end"].iloc[-1] == linker.result_.summary["candidate_pairs"]
    assert (rows["end"] - rows["start"] == rows["added"]).all()
    hist = pd.DataFrame(_values(viz.match_weight_histogram(result.pairs, 0.9)))
    assert hist["pairs"].sum() == len(result.pairs)
    spec = viz.match_weight_histogram(result.pairs, 0.9).to_dict()
    ticks = next(layer["encoding"]["y"]["axis"]["values"] for layer in spec["layer"]
                 if "y" in layer["encoding"] and "axis" in layer["encoding"]["y"])  # fmt: skip
    assert ticks[:3] == [0, 1, 10] and ticks[-1] >= hist["pairs"].max() > ticks[-2]
    with pytest.raises(InputError):
        viz.match_weight_histogram(result.pairs, 1.5)


def test_model_and_label_charts_carry_the_numbers(run):
    _, result, labels = run
    params = result.model.parameters_table()
    mw = pd.DataFrame(_values(viz.match_weights_chart(result.model)))
    np.testing.assert_allclose(np.sort(mw["weight"]), np.sort(params["weight"]))
    mu = pd.DataFrame(_values(viz.m_u_chart(result.model)))
    assert len(mu) == 2 * len(params)
    curve = review.labelled_tradeoff(labels, result.pairs, result.records, thresholds=None)
    assert curve["threshold"].is_monotonic_increasing and len(curve) > 3
    assert curve["recall"].dropna().is_monotonic_decreasing
    assert len(_values(viz.precision_recall_chart(curve))) == len(curve.dropna(
        subset=["precision", "recall"]))  # fmt: skip
    table = review.labelled_tradeoff(labels, result.pairs, result.records)
    assert {r["metric"] for r in _values(viz.threshold_chart(table, 0.9)) if "metric" in r} == {
        "precision", "recall", "f1"}  # fmt: skip


def test_coverage_chart_shows_each_panel_only_its_districts():
    # as coverage_indicators gives it: persons of no known district ("unknown") counted for
    # one indicator only, and a district with no eligible person for another
    rows = [
        ("health_file", "overall", 10, 8), ("health_file", "南山区", 6, 5),
        ("health_file", "福田区", 4, 3), ("multi_registry", "overall", 14, 9),
        ("multi_registry", indicators.UNKNOWN_DISTRICT, 4, 0),
        ("multi_registry", "南山区", 6, 5), ("multi_registry", "福田区", 0, 0),
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=["indicator", "district", "eligible", "covered"])
    table["coverage"] = table["covered"] / table["eligible"].where(table["eligible"] > 0)
    table["target"] = np.where(table["indicator"] == "health_file", 0.8, np.nan)
    spec = viz.coverage_chart(table).to_dict()
    # a shared district axis drew an empty "unknown" slot in the health_file panel
    assert spec["resolve"]["scale"]["x"] == "independent"
    drawn = {(r["indicator"], r["district"]) for r in _values(viz.coverage_chart(table))}
    assert drawn == {
        ("health_file", "南山区"), ("health_file", "福田区"),
        ("multi_registry", indicators.UNKNOWN_DISTRICT), ("multi_registry", "南山区"),
    }  # fmt: skip
    below = {r["district"]: r["below"] for r in _values(viz.coverage_chart(table))
             if r["indicator"] == "health_file"}  # fmt: skip
    assert below == {"南山区": False, "福田区": True}  # 83 % and 75 % against 80 %


def test_save_chart_checks_the_path(run, tmp_path):
    _, result, _ = run
    chart = viz.match_weights_chart(result.model)
    with pytest.raises(InputError, match="end in"):
        viz.save_chart(chart, tmp_path / "chart.gif")
    with pytest.raises(InputError, match="folder"):
        viz.save_chart(chart, tmp_path / "missing" / "chart.png")


def test_html_charts_carry_a_title(tmp_path):
    # a browser tab names the chart: its title, else the file's name
    frame = pd.DataFrame({"x": [1, 2]})
    titled = alt.Chart(frame).mark_bar().encode(x="x:Q").properties(title="匹配权重 <m/u>")
    viz.save_chart(titled, tmp_path / "weights.html")
    assert "<title>匹配权重 &lt;m/u&gt;</title>" in (tmp_path / "weights.html").read_text("utf-8")
    viz.save_chart(alt.Chart(frame).mark_bar().encode(x="x:Q"), tmp_path / "sizes.html")
    assert "<title>sizes</title>" in (tmp_path / "sizes.html").read_text("utf-8")


def test_no_cjk_font_warning_for_a_chart_without_chinese(tmp_path, monkeypatch, caplog):
    pytest.importorskip("vl_convert")
    monkeypatch.setattr(viz, "cjk_font_files", lambda: [])
    frame = pd.DataFrame({"x": [1, 2]})
    with caplog.at_level("WARNING", logger="linkage.viz"):
        viz.save_chart(alt.Chart(frame).mark_bar().encode(x="x:Q"), tmp_path / "a.svg")
        assert "no CJK font" not in caplog.text
        chinese = pd.DataFrame({"x": [1], "t": ["南山区"]})
        viz.save_chart(alt.Chart(chinese).mark_text().encode(text="t:N"), tmp_path / "b.svg")
    assert "no CJK font" in caplog.text and "b.svg" in caplog.text


# ---------------------------------------------------------------------- static images


def _png(chart, path: Path) -> np.ndarray:
    from PIL import Image

    viz.save_chart(chart, path, scale=1)
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("L"))


@needs_cjk_font
def test_png_draws_chinese_glyphs_not_boxes(tmp_path):
    """Two different Chinese strings must give different pixels: a missing font draws the
    same .notdef box for every character, so the images would be identical."""

    def text_chart(text: str):
        frame = pd.DataFrame({"x": [0], "t": [text]})
        return alt.Chart(frame).mark_text(fontSize=40).encode(text="t:N").properties(
            width=260, height=80)  # fmt: skip

    a = _png(viz._finish(text_chart("南山区")), tmp_path / "a.png")
    b = _png(viz._finish(text_chart("福田区")), tmp_path / "b.png")
    assert a.shape == b.shape
    assert (a < 128).sum() > 200  # the text is drawn
    assert (np.abs(a.astype(int) - b.astype(int)) > 64).sum() > 100
    box = _png(viz._finish(text_chart("\U000f0000\U000f0001\U000f0002")), tmp_path / "box.png")
    assert (np.abs(a.astype(int) - box.astype(int)) > 64).sum() > 100


def test_png_of_a_chart_is_not_blank(run, tmp_path):
    _, result, _ = run
    pixels = _png(viz.match_weight_histogram(result.pairs, 0.9), tmp_path / "hist.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert (pixels < 200).mean() > 0.02


def test_m_u_chart_gives_each_comparison_rows_for_its_own_levels(run, tmp_path):
    """A row-by-column facet sized every comparison's row for the comparison with the most
    levels (name: 10), leaving bands of blank image between rows (163 px high, 46% of the
    chart's scanlines blank at 500 persons). m and u are now two row facets side by side."""
    _, result, _ = run
    spec = viz.m_u_chart(result.model).to_dict()
    assert [half["title"]["text"] for half in spec["hconcat"]] == ["m", "u"]
    assert all("column" not in half["facet"] for half in spec["hconcat"])
    pixels = _png(viz.m_u_chart(result.model), tmp_path / "mu.png")
    blank = (pixels > 245).all(axis=1)
    longest = run_length = 0
    for is_blank in blank:
        run_length = run_length + 1 if is_blank else 0
        longest = max(longest, run_length)
    assert longest < 40 and blank.mean() < 0.2
    assert (pixels < 200).mean() > 0.05  # bars and labels drawn, not an empty frame


# ---------------------------------------------------------------------- in a browser


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
             *args],
            capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _read_texts(page: Path) -> list[str]:
    dom = _chromium("--dump-dom", page.resolve().as_uri()).stdout.decode("utf-8")
    assert 'class="marks"' in dom, f"{page.name}: no Vega SVG in the page"
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", dom)]


def _take_screenshot(page: Path, shot: Path) -> np.ndarray:
    from PIL import Image

    _chromium("--window-size=1100,1300", f"--screenshot={shot}", page.resolve().as_uri())
    return np.asarray(Image.open(shot).convert("RGB"))


# pages rendered ahead by _render_ahead: (kind, page) -> the running or finished render
_AHEAD: dict[tuple[str, Path], Future] = {}


def _render_ahead(texts: list[Path], shots: list[Path]) -> None:
    """Start rendering pages in chromium, two at a time: the DOM texts of ``texts`` and a
    screenshot of each of ``shots``, for _rendered_texts and _screenshot to take.

    A launch is mostly chromium starting and the page's scripts running, in processes of its
    own: one launch at a time left one of CI's two cores idle. A render that failed raises
    in the test that takes it."""
    pool = ThreadPoolExecutor(max_workers=2)
    for page in texts:
        _AHEAD[("texts", page.resolve())] = pool.submit(_read_texts, page)
    for page in shots:
        shot = page.with_name(page.stem + "_screenshot.png")
        _AHEAD[("shot", page.resolve())] = pool.submit(_take_screenshot, page, shot)
    pool.shutdown(wait=False)


def _rendered_texts(page: Path) -> list[str]:
    """The text of every SVG <text> element Vega drew, read from the DOM after scripts ran."""
    ahead = _AHEAD.pop(("texts", page.resolve()), None)
    return ahead.result() if ahead is not None else _read_texts(page)


def _screenshot(page: Path, shot: Path) -> np.ndarray:
    ahead = _AHEAD.pop(("shot", page.resolve()), None)
    return ahead.result() if ahead is not None else _take_screenshot(page, shot)


@pytest.fixture(scope="module")
def pages(run, tmp_path_factory):
    linker, result, labels = run
    out = tmp_path_factory.mktemp("dashboards")
    paths = viz.write_dashboards(
        result, out, threshold=linker.config.clustering.threshold,
        rules=[r.name for r in linker.config.blocking.rules], labels=labels,
    )  # fmt: skip
    pair = _middle_pair(result)
    paths["waterfall"] = viz.save_chart(
        viz.waterfall_chart(result.model, pair, result.records, result.comparisons),
        out / "waterfall.html",
    )
    for path in paths.values():
        os.chmod(path, 0o644)
    if CHROMIUM is not None:  # the pages the browser tests below render
        viewers = [paths["comparison_viewer"], paths["cluster_viewer"]]
        _render_ahead([*paths.values()], viewers)
    return paths, pair


@needs_browser
@pytest.mark.parametrize(
    "name, expected",
    [
        ("match_weights", ["Match weights per comparison level", "birth_date", "exact"]),
        ("m_u_parameters", ["same_person_15_18", "100%"]),
        ("match_weight_histogram", ["Match-weight distribution", "threshold p = 0.9"]),
        ("cumulative_blocking", ["Cumulative candidate pairs by blocking rule", "id_number"]),
        ("threshold_tradeoff", ["precision", "recall", "f1"]),
        ("precision_recall", ["Precision–recall from labels"]),
    ],
)
def test_each_chart_renders_in_a_browser(pages, name, expected):
    texts = _rendered_texts(pages[0][name])
    for text in expected:
        assert text in texts, f"{name}: {text!r} not drawn"


@needs_browser
def test_waterfall_and_comparison_viewer_in_a_browser(run, pages, tmp_path):
    _, result, _ = run
    paths, pair = pages
    texts = _rendered_texts(paths["waterfall"])
    assert any(f"{pair['source_l']}:{pair['record_id_l']}" in t for t in texts)
    assert "total" in texts and "prior" in texts
    texts = _rendered_texts(paths["comparison_viewer"])
    # the first example pair is drawn: its heading and its records' values, Chinese included
    heading = next(t for t in texts if " vs " in t and ":" in t)
    left_key = heading.split(" vs ")[0]
    source, record_id = left_key.split(":", 1)
    left = result.records[
        (result.records[schema.SOURCE] == source) & (result.records[schema.RECORD_ID] == record_id)
    ].iloc[0]
    if left[schema.NAME]:
        assert left[schema.NAME] in texts
    assert "Waterfall of the chosen pair" in texts
    pixels = _screenshot(paths["comparison_viewer"], tmp_path / "comparison_viewer.png")
    assert (pixels.min(axis=2) < 200).mean() > 0.02  # something is drawn
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 110) & (pixels[..., 2] < 110)
    green = (pixels[..., 1] > 140) & (pixels[..., 0] < 120) & (pixels[..., 2] < 130)
    assert red.sum() > 200 or green.sum() > 200  # waterfall bars in colour


@needs_browser
def test_cluster_viewer_in_a_browser(run, pages, tmp_path):
    _, result, _ = run
    texts = _rendered_texts(pages[0]["cluster_viewer"])
    ident = viz.identity_of_rows(result.records, result.identities)
    records = [t for t in texts if re.fullmatch(r"[a-z_]+:\S+", t)]
    assert len(records) >= 2, "no record rows drawn"
    # all drawn records belong to one identity: the one the menu shows first
    keys = result.records[schema.SOURCE] + ":" + result.records[schema.RECORD_ID].astype(str)
    owners = {ident[int(np.flatnonzero(keys.to_numpy() == r)[0])] for r in records}
    assert len(owners) == 1
    members_id = owners.pop()
    members = result.records[ident == members_id]
    names = [n for n in members[schema.NAME] if n]
    assert names and set(names) <= set(texts)  # Chinese names drawn as text
    heading = next(t for t in texts if t.startswith("ID") and " records" in t)
    assert heading.startswith(f"{members_id}: {len(members)} records")
    pixels = _screenshot(pages[0]["cluster_viewer"], tmp_path / "cluster_viewer.png")
    assert (pixels.min(axis=2) < 200).mean() > 0.01


def test_cluster_viewer_puts_each_name_outside_the_ring_of_records(run):
    """Names drawn 18 px above each node sat on the edges of the nodes in the lower half;
    each label now lies on its node's ray outside the ring, aligned away from the centre."""
    _, result, _ = run
    spec = viz.cluster_viewer(result.pairs, result.records, result.identities).to_dict()
    text = next(layer for layer in _layers(spec) if _mark(layer) == "text" and
                layer["encoding"]["text"]["field"] == "label")  # fmt: skip
    assert text["encoding"]["x"]["field"] == "label_x"
    assert "datum.x > 0.3 ? 'left'" in text["mark"]["align"]["expr"]
    nodes = pd.DataFrame(_values(viz.cluster_viewer(result.pairs, result.records,
                                                    result.identities)))  # fmt: skip
    nodes = nodes.dropna(subset=["label_x"])
    radius = np.hypot(nodes["x"], nodes["y"])
    np.testing.assert_allclose(np.hypot(nodes["label_x"], nodes["label_y"]), 1.2 * radius)
    np.testing.assert_allclose(np.arctan2(nodes["label_y"], nodes["label_x"]),
                               np.arctan2(nodes["y"], nodes["x"]))  # fmt: skip


def _layers(spec: dict) -> list[dict]:
    found = list(spec.get("layer", []))
    for key in ("vconcat", "hconcat", "concat"):
        for part in spec.get(key, []):
            found += _layers(part)
    return found


def _mark(layer: dict) -> str:
    mark = layer.get("mark")
    return mark["type"] if isinstance(mark, dict) else mark


# ---------------------------------------------------------------------- labelling widget


def test_review_widget_buttons_and_keyboard_shortcuts(run, tmp_path):
    pytest.importorskip("ipywidgets", reason="notebooks extra not installed")
    _, result, _ = run
    queue = review.review_queue(result.pairs, result.records, limit=6, band=50)
    path = tmp_path / "labels.csv"
    session = review.ReviewSession(queue, result.records, result.model, result.comparisons, path)
    ui = viz.review_widget(session)
    ui.buttons[review.MATCH].click()
    ui.keys.value = "n"  # typing a shortcut key acts at once and clears the box
    assert ui.keys.value == ""
    assert list(review.load_labels(path)["label"]) == [review.MATCH, review.NON_MATCH]
    ui.keys.value = "s"
    assert session.position == 3
    ui.keys.value = "z"  # undo the skip, then the non-match label
    ui.buttons["undo"].click()
    assert session.position == 1
    assert list(review.load_labels(path)["label"]) == [review.MATCH]
    ui.keys.value = "x"  # not a shortcut: nothing happens
    assert session.position == 1 and ui.keys.value == ""
    assert "1 / 6" in ui.status.value  # progress shows what is labelled
    for key in "uuuuu":
        ui.keys.value = key
    assert session.current is None and session.reviewed == 6


# ---------------------------------------------------------------------- CLI and docs


def test_dashboard_command_writes_charts_and_viewers(run, tmp_path):
    from typer.testing import CliRunner

    from linkage.cli import app

    linker, result, labels = run
    demo = synth.generate(150, seed=2, output=tmp_path / "data")
    review.save_labels(labels.head(0), tmp_path / "empty.csv")
    out = tmp_path / "charts"
    done = CliRunner().invoke(app, ["dashboard", str(demo.paths["config"]), "-o", str(out), "-q"])
    assert done.exit_code == 0, done.output
    written = {p.name for p in out.iterdir()}
    assert {"comparison_viewer.html", "cluster_viewer.html", "match_weights.html",
            "m_u_parameters.html", "match_weight_histogram.html",
            "cumulative_blocking.html"} <= written  # fmt: skip
    blocked = tmp_path / "a_file"
    blocked.write_text("x", encoding="utf-8")
    bad = CliRunner().invoke(app, ["dashboard", str(demo.paths["config"]), "-o", str(blocked)])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(
        app, ["dashboard", str(demo.paths["config"]), "-o", str(out), "--labels",
              str(tmp_path / "nope.csv")],
    )  # fmt: skip
    assert missing.exit_code == 2 and "nope.csv" in missing.output


@pytest.fixture(scope="module")
def run_output(tmp_path_factory):
    """A run output folder written by `linkage run CONFIG -o OUT`, and its config."""
    from typer.testing import CliRunner

    from linkage.cli import app

    base = tmp_path_factory.mktemp("run_output")
    demo = synth.generate(150, seed=5, output=base / "demo")
    out = base / "out"
    done = CliRunner().invoke(app, ["run", str(demo.paths["config"]), "-o", str(out), "-q"])
    assert done.exit_code == 0, done.output
    return demo.paths["config"], out


def _no_merge(*args, **kwargs):
    raise AssertionError("the merge ran")


@pytest.fixture(scope="module")
def charts_with_values(run_output, tmp_path_factory) -> Path:
    """`linkage dashboard CONFIG --from OUT`: a run output's charts with the record values
    the config's sources give, made without a merge (Linker.run raises). Two tests read it."""
    from typer.testing import CliRunner

    from linkage import linker as linker_module
    from linkage.cli import app

    config, folder = run_output
    out = tmp_path_factory.mktemp("charts_with_values")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(linker_module.Linker, "run", _no_merge)
        done = CliRunner().invoke(
            app, ["dashboard", str(config), "--from", str(folder), "-o", str(out), "-q"]
        )
    assert done.exit_code == 0, done.output
    return out


def test_dashboard_from_a_run_output_without_a_merge(
    run_output, charts_with_values, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from linkage import linker as linker_module
    from linkage.cli import app

    config, folder = run_output
    monkeypatch.setattr(linker_module.Linker, "run", _no_merge)
    out = tmp_path / "charts"
    done = CliRunner().invoke(app, ["dashboard", "--from", str(folder), "-o", str(out), "-q"])
    assert done.exit_code == 0, done.output
    assert {"comparison_viewer.html", "cluster_viewer.html", "match_weights.html",
            "m_u_parameters.html", "match_weight_histogram.html",
            "cumulative_blocking.html"} <= {p.name for p in out.iterdir()}  # fmt: skip
    # the read-back run holds the written tables; with the config, the standardized records
    result = linker_module.read_outputs(folder)
    assert len(result.pairs) == len(pd.read_parquet(folder / "pairs.parquet"))
    identities = pd.read_csv(folder / "identities.csv", dtype=str)
    assert list(result.records[schema.RECORD_ID]) == list(identities[schema.RECORD_ID])
    assert list(result.records.columns) == [schema.ROW, schema.SOURCE, schema.RECORD_ID]
    records = Linker.from_yaml(config).standardize()
    full = linker_module.read_outputs(folder, records)
    assert schema.NAME in full.records.columns
    with pytest.raises(InputError, match="not the records"):
        linker_module.read_outputs(folder, records.iloc[1:])
    with_values = charts_with_values
    # without the config the viewers say why they show no record values
    note = "record values not loaded"
    assert note in (out / "cluster_viewer.html").read_text(encoding="utf-8")
    assert note not in (with_values / "cluster_viewer.html").read_text(encoding="utf-8")
    told = CliRunner().invoke(app, ["dashboard", "--from", str(folder), "-o", str(out)])
    assert "give the run config too" in told.output
    # bad folders: exit 2 naming the folder or the missing file
    bad = CliRunner().invoke(app, ["dashboard", "--from", str(tmp_path / "nope"), "-o", str(out)])
    assert bad.exit_code == 2 and "nope" in bad.output
    half = tmp_path / "half"
    half.mkdir()
    (half / "summary.json").write_text("{}", encoding="utf-8")
    bad = CliRunner().invoke(app, ["dashboard", "--from", str(half), "-o", str(out)])
    assert bad.exit_code == 2 and "identities.csv is missing" in bad.output
    neither = CliRunner().invoke(app, ["dashboard", "-o", str(out)])
    assert neither.exit_code == 2


@needs_browser
def test_dashboard_from_a_run_output_renders(run_output, charts_with_values, tmp_path):
    _, folder = run_output
    out = charts_with_values
    for page in out.glob("*.html"):
        os.chmod(page, 0o644)
    viewer, blocking = out / "comparison_viewer.html", out / "cumulative_blocking.html"
    _render_ahead([viewer, blocking], [viewer])
    identities = pd.read_csv(folder / "identities.csv", dtype=str)
    keys = set(identities[schema.SOURCE] + ":" + identities[schema.RECORD_ID])
    texts = _rendered_texts(out / "comparison_viewer.html")
    assert "Waterfall of the chosen pair" in texts
    heading = next(t for t in texts if " vs " in t and ":" in t)
    assert heading.split(" vs ")[0] in keys
    # bar labels are signed weights (bits), not a column of cumulative 0.000
    assert sum(bool(re.fullmatch(r"[+-]\d+\.\d\d", t)) for t in texts) >= 3
    assert "0.000" not in texts
    # record values come from the config's sources: Chinese names drawn
    assert any(re.search(r"[\u4e00-\u9fff]{2,}", t) for t in texts)
    texts = _rendered_texts(out / "cumulative_blocking.html")
    assert "Cumulative candidate pairs by blocking rule" in texts
    pixels = _screenshot(out / "comparison_viewer.html", tmp_path / "from_output.png")
    assert (pixels.min(axis=2) < 200).mean() > 0.02


def test_analyst_page_examples_run(tmp_path, monkeypatch):
    """docs/analyst.md's Python blocks run as written (after `linkage demo` made its data)."""
    page = Path(__file__).resolve().parents[1] / "docs" / "analyst.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    synth.generate(200, seed=4, output=tmp_path / "demo-output" / "data")
    namespace: dict = {}
    for block in blocks:
        block = block.replace("viz.review_widget(session)", "ui = viz.review_widget(session)")
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - the page's own code
    assert (tmp_path / "match_weights.png").stat().st_size > 1000
    assert (tmp_path / "charts" / "cluster_viewer.html").exists()
    assert namespace["session"].position == 0
