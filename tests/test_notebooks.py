"""Every analyst notebook runs top to bottom headless on small generated data."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebooks extra not installed")
nbclient = pytest.importorskip("nbclient", reason="notebooks extra not installed")
pytest.importorskip("ipykernel", reason="notebooks extra not installed")
pytest.importorskip("altair", reason="notebooks extra not installed")
pytest.importorskip("vl_convert", reason="notebooks extra not installed")
pytest.importorskip("ipywidgets", reason="notebooks extra not installed")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_all_four_notebooks_present():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


def _set_parameters(book, **values) -> None:
    """Override assignments in the cell tagged ``parameters`` (papermill's convention)."""
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    lines = cell.source.splitlines()
    for name, value in values.items():
        lines = [f"{name} = {value!r}" if ln.startswith(f"{name} = ") else ln for ln in lines]
    cell.source = "\n".join(lines)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(path: Path, tmp_path: Path):
    book = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in book.cells if c.cell_type == "code"), (
        f"{path.name} is stored with outputs: clear them before committing"
    )
    _set_parameters(book, PERSONS=600)
    client = nbclient.NotebookClient(
        book,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        o
        for c in book.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    out = tmp_path / "outputs" / path.stem
    assert (out / "demo" / "truth.csv").exists()
    charts = list(out.glob("*.png"))
    assert charts, f"{path.name} saved no chart"
    assert all(p.stat().st_size > 1000 for p in charts)
    assert {p.stem for p in charts} <= {p.stem for p in out.glob("*.html")}  # PNG and HTML
    if path.stem.startswith("02"):
        labels = (out / "labels.csv").read_text(encoding="utf-8").splitlines()
        assert labels[0] == "source_l,record_id_l,source_r,record_id_r,label"
        assert len(labels) > 10  # the stand-in reviewer's key presses were saved
    if path.stem.startswith("03"):
        assert (out / "comparison_viewer.html").stat().st_size > 100_000
        assert (out / "cluster_viewer.html").stat().st_size > 100_000
    if path.stem.startswith("04"):
        coverage = (out / "coverage.csv").read_text(encoding="utf-8")
        assert "health_file,overall" in coverage and "child_vaccination" in coverage


def test_coverage_notebook_reads_an_identity_store(tmp_path: Path):
    """Changing one path (STORE) points the coverage notebook at a real identity store."""
    from linkage import Linker
    from linkage.incremental import write_batch
    from linkage.store import Store
    from linkage.synth import generate

    generate(400, seed=3, output=tmp_path / "data")
    linker = Linker.from_yaml(tmp_path / "data" / "run.yaml")
    result = linker.run()
    with Store.open(tmp_path / "ids.duckdb") as store:
        write_batch(store, result, linker.config)
    path = next(p for p in NOTEBOOKS if p.stem.startswith("04"))
    book = nbformat.read(path, as_version=4)
    _set_parameters(book, STORE=str(tmp_path / "ids.duckdb"))
    client = nbclient.NotebookClient(
        book, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    coverage = tmp_path / "outputs" / path.stem / "coverage.csv"
    table = __import__("pandas").read_csv(coverage)
    assert {"health_file", "child_vaccination"} <= set(table["indicator"])
    assert not (tmp_path / "outputs" / path.stem / "demo").exists()  # nothing was generated
