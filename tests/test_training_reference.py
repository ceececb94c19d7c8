"""A pilot too small to train: m and u from the shipped reference model, no term frequencies."""

from __future__ import annotations

import json
import logging

import pandas as pd
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app
from linkage.compare import build_comparisons
from linkage.config import default_comparison_specs
from linkage.model import FellegiSunterModel
from linkage.training import reference_model

COLUMNS = {"姓名": "name", "性别": "gender", "出生日期": "birth_date", "身份证号": "id_number"}

# A registry's pilot export: exact duplicates, a minority name with its dot typed two ways,
# one person's birth date in three formats, and a namesake born on another day
PILOT = [
    "rid,姓名,性别,出生日期,身份证号",
    "P1,古丽娜尔·艾买提,女,1993-04-18,",
    "P2,古丽娜尔·艾买提,女,1993-04-18,",
    "P3,吐尔洪•买买提,男,1981-09-02,",
    "P4,吐尔洪.买买提,男,1981-09-02,",
    "P5,王建国,男,1979年11月3日,",
    "P6,王建国,男,19791103,",
    "P7,王建国,男,1979/11/3,",
    "P8,王建国,男,1986-05-21,",
    "P9,陈晓梅,女,2001-07-30,",
]
PILOT_IDENTITIES = [["P1", "P2"], ["P3", "P4"], ["P5", "P6", "P7"], ["P8"], ["P9"]]


def _partition(ids: pd.DataFrame) -> list[list[str]]:
    groups = ids.groupby(schema.IDENTITY_ID)[schema.RECORD_ID].apply(sorted)
    return sorted(groups.tolist())


def test_the_shipped_reference_model_has_the_default_comparisons():
    """Rerun ``python -m benchmarks.reference_model`` when a default comparison changes."""
    reference = reference_model()
    specs = {c["name"]: c for c in reference.settings["comparisons"]}
    for comparison in build_comparisons(default_comparison_specs()):
        assert specs.get(comparison.name) == comparison.to_config(), comparison.name
        assert reference.levels[comparison.name] == list(comparison.levels), comparison.name
    assert not reference.weak_fit_


def test_a_pilot_links_its_duplicates_with_the_reference_model(tmp_path, write_yaml, caplog):
    (tmp_path / "a.csv").write_text("\n".join(PILOT) + "\n", encoding="utf-8")
    source = {"path": "a.csv", "record_id": "rid", "columns": COLUMNS}
    config = write_yaml({"sources": {"a": source}})
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="linkage.training"):
        done = CliRunner().invoke(app, ["run", str(config), "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert _partition(pd.read_csv(out / "identities.csv", dtype=str)) == PILOT_IDENTITIES
    said = [r.getMessage() for r in caplog.records if "too few pairs" in r.getMessage()]
    assert said and "shipped reference model" in said[0], said
    saved = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert saved["fit"]["weak"] is True
    assert saved["fit"]["reference"] == ["name", "id", "birth_date", "gender"]
    assert saved["tf_columns"] == {}
    reference = reference_model()
    for name in saved["fit"]["reference"]:
        assert saved["m"][name] == reference.m_[name].tolist(), name
        assert saved["u"][name] == reference.u_[name].tolist(), name
    # the prior is the reference registry's (about 1 in 66,000 record pairs), not the
    # pilot's rule hits among its 36 pairs (its duplicates' share)
    assert saved["lambda"] == reference.lambda_ < 1e-4
    # the saved weak model scores the same pilot the same way when loaded
    again = FellegiSunterModel.from_dict(saved)
    assert again.reference_ == saved["fit"]["reference"] and again.tf_columns == {}
    loaded = write_yaml(
        {"sources": {"a": source}, "model": {"load": str(out / "model.json")}}, "load.yaml"
    )
    out2 = tmp_path / "out2"
    done = CliRunner().invoke(app, ["run", str(loaded), "-o", str(out2)])
    assert done.exit_code == 0, done.output
    assert _partition(pd.read_csv(out2 / "identities.csv", dtype=str)) == PILOT_IDENTITIES


def test_the_pilot_without_the_reference_model_left_its_duplicates_apart(
    tmp_path, write_yaml, monkeypatch
):
    """What the reference model fixes: with the pilot's own u (an exact name in 1 of 36
    random pairs) and its term frequencies (王建国 held by 4 of 9 records), identical
    records stayed apart."""
    import linkage.training as training

    monkeypatch.setattr(training, "settle_weak_fit", lambda *args: None)
    (tmp_path / "a.csv").write_text("\n".join(PILOT) + "\n", encoding="utf-8")
    source = {"path": "a.csv", "record_id": "rid", "columns": COLUMNS}
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app, ["run", str(write_yaml({"sources": {"a": source}})), "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert _partition(pd.read_csv(out / "identities.csv", dtype=str)) != PILOT_IDENTITIES


def test_a_batch_that_trains_takes_nothing_from_the_reference_model(tmp_path):
    from linkage import Linker
    from linkage.synth import generate

    generate(600, seed=5, output=tmp_path / "d")
    model = Linker.from_yaml(tmp_path / "d" / "run.yaml").run().model
    fit = model.to_dict()["fit"]
    assert fit["weak"] is False and fit["reference"] == []
    assert model.tf_columns  # the term-frequency adjustment stays
