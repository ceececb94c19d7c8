"""The scale benchmark's own arithmetic: blocking recall from truth + pairs, GNU time's report."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import bench_scale


def test_candidate_recall_counts_true_pairs_among_candidates(tmp_path):
    truth = pd.DataFrame(
        {
            "source": ["police", "health", "health", "police", "police"],
            "record_id": ["1", "007", "8", "2", "3"],
            "person_id": ["a", "a", "a", "b", "b"],
            "corruptions": ["", "", "", "", ""],
        }
    )
    truth.to_csv(tmp_path / "truth.csv", index=False)
    # person a: 3 true pairs, person b: 1; candidates hold two of a's and one false pair
    pairs = pd.DataFrame(
        {
            "source_l": ["police", "health", "police"],
            "record_id_l": ["1", "007", "2"],
            "source_r": ["health", "health", "health"],
            "record_id_r": ["007", "8", "8"],
        }
    )
    pairs.to_parquet(tmp_path / "pairs.parquet")
    found, total, recall = bench_scale.candidate_recall(
        tmp_path / "truth.csv", tmp_path / "pairs.parquet"
    )
    assert (found, total) == (2, 4) and recall == 0.5


def test_time_report_parsed():
    stderr = (
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.50\n"
        "\tMaximum resident set size (kbytes): 2097152\n"
    )
    got = bench_scale._time_v(stderr)
    assert got["peak_rss_gb"] == 2.0 and got["wall_s"] == pytest.approx(3723.5)


@pytest.mark.slow
def test_benchmark_runs_one_small_size(tmp_path):
    row = bench_scale.run_size(0.002, tmp_path, seed=3, floor=0.0, extra=None, keep=False)
    assert row["records"] > 1000 and row["candidate_pairs"] > 0
    assert 0.9 < row["candidate_recall"] <= 1.0 and row["f1"] > 0.9
    assert set(row["seconds"]) >= {"block", "compare"} and row["peak_rss_gb"] > 0
    table = bench_scale.format_rows([row])
    assert f"{row['records']:,}" in table and "fuzzy_surname_birth_date" in table
    # the peak with the worker processes, overall and per stage, never below the process's
    total = max(row["peak_total_mb"].values()) / 1024
    assert total >= max(row["peak_rss_mb"].values()) / 1024
    assert f"| {total:.1f} |" in table and f"{row['records']:,} (with workers)" in table
    assert "CPU s per stage (cores busy)" in table and set(row["cpu_seconds"]) >= {"block"}
    assert set(row["cores_busy"]) == set(row["cpu_seconds"])


def test_the_table_gives_each_stage_s_cpu_and_the_cores_it_kept_busy():
    """CPU seconds per stage and the cores it kept busy; a stage without that figure shows
    its CPU alone."""
    row = {
        "records": 1_000, "candidate_pairs": 2_000, "pairs_per_rule": {"r": 2_000},
        "seconds": {"read": 2.0, "block": 4.0}, "peak_total_mb": {"read": 100, "block": 120},
        "peak_rss_mb": {"read": 90, "block": 110},
        "cpu_seconds": {"read": 2.2, "block": 7.6, "write": 1.0},
        "cores_busy": {"read": 1.1, "block": 1.9, "write": None},
    }  # fmt: skip
    table = bench_scale.format_rows([row])
    line = next(x for x in table.splitlines() if x.startswith("| 1,000 | 2 (1.1)"))
    assert line == "| 1,000 | 2 (1.1) / 8 (1.9) / 1 |"


def test_blocking_only_counts_recall_and_pairs_only_one_rule_finds(tmp_path):
    # 0.001 M records (about 570 persons): standardize one source at a time, block, and
    # check the figures against truth.csv counted here independently
    row = bench_scale.blocking_size(0.001, tmp_path, seed=5, extra=None, reuse=False,
                                    unique=True)
    truth = pd.read_csv(tmp_path / "ind-0.001M" / "truth.csv", dtype=str)
    sizes = truth.groupby("person_id").size()
    assert row["records"] == len(truth)
    assert row["true_pairs"] == int((sizes * (sizes - 1) // 2).sum())
    assert 0.9 < row["candidate_recall"] <= 1.0
    assert row["pairs_per_record"] == pytest.approx(row["candidate_pairs"] / row["records"])
    rules = row["rules"]
    assert sum(r["credited"] for r in rules.values()) == row["candidate_pairs"]
    for r in rules.values():
        # a rule alone finds at most the pairs it predicts; its own pairs are among them
        assert r["true_only_this_rule"] <= r["true_alone"] <= r["predicted"]
        assert r["credited"] <= r["predicted"]
    # the standardized columns are saved and read back for the next variant
    again = bench_scale.blocking_size(0.001, tmp_path, seed=5, extra=None, reuse=True,
                                      unique=False)
    assert again["candidate_pairs"] == row["candidate_pairs"]
    assert again["true_pairs_in_candidates"] == row["true_pairs_in_candidates"]
    assert "id_number" in bench_scale.format_blocking([row, again])


def test_registries_folder_is_only_read(tmp_path):
    # registries generated once in R; runs of any kind write only under the workdir
    registries, work = tmp_path / "R", tmp_path / "W"
    first = bench_scale.blocking_size(0.001, work, seed=5, extra=None, reuse=False,
                                      unique=False, registries=registries)
    before = {p: p.stat().st_mtime_ns for p in registries.rglob("*")}
    again = bench_scale.blocking_size(0.001, work, seed=5, extra=None, reuse=True,
                                      unique=False, registries=registries)
    assert {p: p.stat().st_mtime_ns for p in registries.rglob("*")} == before
    assert (work / "run-0.001M" / "bench_run.yaml").is_file()
    assert (work / "run-0.001M" / "blocking_records.parquet").is_file()
    assert not (work / "ind-0.001M").exists()
    assert again["candidate_pairs"] == first["candidate_pairs"]


def test_blocking_against_other_rules_counts_the_true_pairs_only_one_side_finds(tmp_path):
    # against the ID rule alone: every true pair it finds the default rules find too, and
    # the pairs only the defaults find are written, two records a pair
    rules = tmp_path / "id-only.yaml"
    rules.write_text("blocking:\n  rules:\n    - {name: id_number, keys: [id_std]}\n",
                     encoding="utf-8")
    row = bench_scale.blocking_size(0.001, tmp_path, seed=5, extra=None, reuse=False,
                                    unique=False, against=rules)
    got = row["against"]
    assert got["only_against"] == 0
    assert got["only_this"] == row["true_pairs_in_candidates"] - got["true_pairs_in_candidates"]
    assert 0 < got["true_pairs_in_candidates"] < row["true_pairs_in_candidates"]
    written = pd.read_csv(got["pairs_file"], dtype=str)
    assert len(written) == 2 * got["only_this"] and set(written["found_by"]) == {"this"}
    assert (written.groupby("pair").size() == 2).all()
    assert "only it finds 0" in bench_scale.format_blocking([row])
    # against a config with the same rules (the run's own copy): nothing on either side
    same = bench_scale.blocking_size(0.001, tmp_path, seed=5, extra=None, reuse=True,
                                     unique=False,
                                     against=tmp_path / "run-0.001M" / "bench_run.yaml")
    assert same["against"]["only_against"] == same["against"]["only_this"] == 0
    assert same["against"]["candidate_pairs"] == same["candidate_pairs"]
    with pytest.raises(SystemExit):
        bench_scale.main(["--against", str(rules), "--sizes", "0.001"])  # needs --blocking-only
