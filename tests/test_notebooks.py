"""Every analyst notebook runs top to bottom headless on small generated data."""

from __future__ import annotations

import asyncio
from functools import partial
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


def _client(book, folder: Path):
    return nbclient.NotebookClient(
        book, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, tuple[Path, object, BaseException | None]]:
    """Every notebook run of this module (each notebook on its demo data, and the coverage
    notebook on an identity store), two kernels at a time: name -> (folder, executed
    notebook, the error it raised or None).

    A notebook's time is its kernel's: start-up, imports, the run and chart rendering, in a
    process of its own. One at a time, the test process only waited and one of the two
    cores CI has stood idle. Each test reads its own run's result and raises its error."""

    def notebook(path: Path, **parameters):
        book = nbformat.read(path, as_version=4)
        _set_parameters(book, **parameters)
        return book

    def store_notebook(folder: Path):
        """The coverage notebook pointed at a real identity store by one path (STORE)."""
        from linkage import Linker
        from linkage.incremental import write_batch
        from linkage.store import Store
        from linkage.synth import generate

        generate(400, seed=3, output=folder / "data")
        linker = Linker.from_yaml(folder / "data" / "run.yaml")
        result = linker.run()
        with Store.open(folder / "ids.duckdb") as store:
            write_batch(store, result, linker.config)
        coverage = next(p for p in NOTEBOOKS if p.stem.startswith("04"))
        return notebook(coverage, STORE=str(folder / "ids.duckdb"))

    jobs = [
        (path.stem, tmp_path_factory.mktemp(path.stem), partial(notebook, path, PERSONS=600))
        for path in NOTEBOOKS
    ]
    folder = tmp_path_factory.mktemp("store")
    jobs.append(("store", folder, partial(store_notebook, folder)))
    # the longest notebook first, so that the two kernels finish at about the same time
    jobs.sort(key=lambda job: job[0] != "02_review_matches")
    books: dict[str, object] = {}

    async def run(gate: asyncio.Semaphore, name: str, folder: Path, prepare) -> None:
        # the store is built in this process while the first kernels run
        books[name] = await asyncio.to_thread(prepare)
        async with gate:
            await _client(books[name], folder).async_execute()

    async def run_all() -> list:
        gate = asyncio.Semaphore(2)
        runs = (run(gate, *job) for job in jobs)
        return await asyncio.gather(*runs, return_exceptions=True)

    errors = asyncio.run(run_all())
    return {
        name: (folder, books.get(name), error)
        for (name, folder, _), error in zip(jobs, errors, strict=True)
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_headless(path: Path, executed):
    stored = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in stored.cells if c.cell_type == "code"), (
        f"{path.name} is stored with outputs: clear them before committing"
    )
    tmp_path, book, error = executed[path.stem]
    if error is not None:
        raise error  # a CellExecutionError names the failing cell
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


def test_coverage_notebook_reads_an_identity_store(executed):
    """Changing one path (STORE) points the coverage notebook at a real identity store."""
    tmp_path, _, error = executed["store"]
    if error is not None:
        raise error
    path = next(p for p in NOTEBOOKS if p.stem.startswith("04"))
    coverage = tmp_path / "outputs" / path.stem / "coverage.csv"
    table = __import__("pandas").read_csv(coverage)
    assert {"health_file", "child_vaccination"} <= set(table["indicator"])
    assert not (tmp_path / "outputs" / path.stem / "demo").exists()  # nothing was generated
