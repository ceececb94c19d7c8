"""Chunked scoring, stage checkpoints and ``--resume``: a killed run continues to the same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import linkage.checkpoint
import linkage.linker
import linkage.pipeline
from linkage import schema, synth
from linkage.checkpoint import KEY_FILE, WORK_DIR, Checkpoints, fingerprint, part_order
from linkage.cli import app
from linkage.cluster import sibling_pairs
from linkage.compare.name import NameComparison
from linkage.config import RunSettings, load_config
from linkage.errors import ConfigError
from linkage.linker import Linker
from linkage.standardize._distinct import _Worker

KEY = b"checkpoint-test-identity-key-0123456789"


class Killed(RuntimeError):
    """Stands for a kill: raised by the progress hook when a chosen stage starts."""


class KillAt:
    def __init__(self, stage: str):
        self.at = stage
        self.seen: list[str] = []

    def stage(self, name, total=None, unit=""):
        self.seen.append(name)
        if name == self.at:
            raise Killed(name)

    def advance(self, n=1):
        pass


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    data = synth.generate(400, seed=5, output=out / "demo")
    return data.paths["config"], out


def _config(path, **run):
    config = load_config(path)
    model = config.model.model_copy(update={"u_sample_pairs": 20_000})
    return config.model_copy(update={"model": model, "run": RunSettings(**run)})


def _outputs(folder):
    return {
        name: (folder / name).read_bytes()
        for name in ("identities.csv", "golden_records.csv", "cluster_sizes.csv")
    }


@pytest.fixture(scope="module")
def reference(demo):
    config_path, out = demo
    folder = out / "reference"
    Linker(_config(config_path), id_key=KEY).write(folder)
    return folder


def _spy_stages(monkeypatch) -> list[str]:
    """Record which of the stage functions a resumed run calls again."""
    calls: list[str] = []
    for name in ("block", "compare_pairs", "cluster_records"):
        original = getattr(linkage.pipeline, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(linkage.pipeline, name, spy)
    return calls


@pytest.mark.parametrize("stage", ["standardizing", "comparing", "scoring", "clustering",
                                   "writing outputs"])  # fmt: skip
def test_killed_run_resumes_to_the_same_bytes(demo, reference, stage, tmp_path, monkeypatch):
    config_path, _ = demo
    out = tmp_path / "out"
    with pytest.raises(Killed):
        Linker(_config(config_path), id_key=KEY).write(out, progress=KillAt(stage))
    assert not (out / "identities.csv").exists() or stage == "writing outputs"
    work = out / WORK_DIR
    finished = {p.stem for p in work.glob("*.done")}
    expected = {
        "standardizing": set(),
        "comparing": {"records", "blocking"},
        "scoring": {"records", "blocking", "training"},
        "clustering": {"records", "blocking", "training", "scoring"},
        "writing outputs": {"records", "blocking", "training", "scoring", "clustering"},
    }[stage]
    assert finished == expected
    calls = _spy_stages(monkeypatch)
    Linker(_config(config_path), id_key=KEY).write(out, resume=True)
    assert _outputs(out) == _outputs(reference)
    assert not work.exists()  # removed once the outputs are written
    # finished stages were read back, not run again
    assert ("block" in calls) == ("blocking" not in finished)
    assert ("cluster_records" in calls) == ("clustering" not in finished)
    assert ("compare_pairs" in calls) == ("scoring" not in finished)


def test_changed_config_or_input_starts_over(demo, tmp_path, monkeypatch):
    config_path, _ = demo
    out = tmp_path / "out"
    with pytest.raises(Killed):
        Linker(_config(config_path), id_key=KEY).write(out, progress=KillAt("clustering"))
    before = fingerprint(_config(config_path))
    changed = _config(config_path)
    changed = changed.model_copy(
        update={"clustering": changed.clustering.model_copy(update={"threshold": 0.95})}
    )
    assert fingerprint(changed) != before
    blocked = []
    original = linkage.pipeline.block
    monkeypatch.setattr(
        linkage.pipeline, "block", lambda *a, **k: blocked.append(1) or original(*a, **k)
    )
    result = Linker(changed, id_key=KEY).write(out, resume=True)
    assert blocked == [1]  # the checkpoints of the old config were not used
    assert (out / "identities.csv").exists() and result["identities"].exists()
    # an input file changed since the checkpoints: fingerprint differs too
    police = changed.sources["police"].path
    stamp = fingerprint(changed)
    police.write_bytes(police.read_bytes() + b"\n")
    try:
        assert fingerprint(changed) != stamp
    finally:
        police.write_bytes(police.read_bytes()[:-1])


def test_resume_without_checkpoints_runs_from_the_start(demo, reference, tmp_path, caplog):
    config_path, _ = demo
    out = tmp_path / "fresh"
    Linker(_config(config_path), id_key=KEY).write(out, resume=True)
    assert _outputs(out) == _outputs(reference)
    assert "no checkpoints" in caplog.text


def test_small_chunks_give_the_same_result(demo, reference, tmp_path, monkeypatch):
    config_path, _ = demo
    out = tmp_path / "chunked"
    linker = Linker(_config(config_path, chunk_pairs=1000), id_key=KEY)
    read_back, scored = [], []
    saved_kept, score = linkage.pipeline._saved_kept, linkage.pipeline._score
    monkeypatch.setattr(
        linkage.pipeline, "_saved_kept", lambda c: read_back.append(1) or saved_kept(c)
    )
    monkeypatch.setattr(
        linkage.pipeline, "_score", lambda *a, **k: scored.append(score(*a, **k)) or scored[-1]
    )
    linker.write(out)
    assert read_back == [1]  # the kept pairs were dropped after scoring and read back
    # scoring held none of them: each chunk's were written to the checkpoint, not kept (nor
    # joined) in memory, and only their number came back
    assert isinstance(scored[0][0], int) and scored[0][0] == len(linker.result_.pairs)
    assert linker.result_.summary["candidate_pairs"] > 1500  # two chunks or more
    assert _outputs(out) == _outputs(reference)
    # a run with checkpoints reads its kept pairs back from them after golden records (not
    # held through clustering): the same table a run without checkpoints holds throughout
    held = Linker(_config(config_path, chunk_pairs=1000), id_key=KEY).run()
    pd.testing.assert_frame_equal(linker.result_.pairs, held.pairs)
    a = pd.read_parquet(out / "pairs.parquet")
    b = pd.read_parquet(reference / "pairs.parquet")
    pd.testing.assert_frame_equal(a, b)
    # every scored pair stays in memory while run.below_floor_pairs covers them all
    n_pairs = linker.result_.summary["candidate_pairs"]
    assert len(linker.result_.pairs) == n_pairs
    floor = linker.config.output.pairs_min_probability
    n_below = int((linker.result_.pairs[schema.MATCH_PROBABILITY] < floor).sum())
    assert n_below > 1000
    # beyond it: every pair at or above the floor, and a sample of about 400 below it
    kept = []
    for chunk in (1000, 1700):
        run = _config(config_path, chunk_pairs=chunk, memory_limit="1GB", below_floor_pairs=400)
        bounded = Linker(run, id_key=KEY)
        bounded.write(tmp_path / f"bounded{chunk}")
        assert _outputs(tmp_path / f"bounded{chunk}") == _outputs(reference)
        pairs = bounded.result_.pairs
        assert int((pairs[schema.MATCH_PROBABILITY] >= floor).sum()) == len(a)
        sample = int((pairs[schema.MATCH_PROBABILITY] < floor).sum())
        assert 0.5 * 400 * n_below / n_pairs < sample < 1.5 * 400 * n_below / n_pairs
        kept.append(pairs[[schema.ROW_L, schema.ROW_R]].sort_values([schema.ROW_L, schema.ROW_R]))
    # the sample is chosen by pair, not by chunk
    pd.testing.assert_frame_equal(kept[0].reset_index(drop=True), kept[1].reset_index(drop=True))


def test_twins_held_out_whatever_chunk_holds_the_partner(tmp_path):
    """A twin pair is held out of clustering when either twin has an exact partner elsewhere
    (``cluster.sibling_pairs``), also when that partner pair is scored in a later chunk."""
    records = pd.DataFrame(
        {schema.name_col(schema.NAME, "clean"): ["王子涵", "王子轩", "李明", "王子涵"]}
    )
    exact = NameComparison.levels.index("exact")
    pairs = pd.DataFrame(
        {
            schema.ROW_L: [0, 1, 0],
            schema.ROW_R: [1, 2, 3],
            "gamma_name": [0, 0, exact],  # twins, an unrelated pair, record 0's partner
            "gamma_birth_date": [5, 0, 5],
            schema.MATCH_WEIGHT: [12.0, -8.0, 20.0],
            schema.MATCH_PROBABILITY: [0.999, 0.01, 0.9999],
        }
    )
    for folder in (None, tmp_path):  # kept in memory, spilled to Parquet
        gathered = linkage.pipeline._ClusterInput(len(records), 0.9, folder)
        for i in range(len(pairs)):  # one pair a chunk: the partner comes last
            gathered.add(records, pairs.iloc[i : i + 1], i)
        out = gathered.finish()
        whole = pairs[~sibling_pairs(records, pairs)]
        assert sorted(zip(out[schema.ROW_L], out[schema.ROW_R], strict=True)) == [(0, 3)]
        assert sorted(zip(whole[schema.ROW_L], whole[schema.ROW_R], strict=True)) == [
            (0, 3),
            (1, 2),
        ]  # (1, 2) is below threshold in another component: clustering never needs it


def test_training_sample_scales_the_prior(demo):
    config_path, _ = demo
    full = Linker(_config(config_path), id_key=KEY).run()
    n_pairs = full.summary["candidate_pairs"]
    sampled = Linker(_config(config_path, train_sample_pairs=1000), id_key=KEY).run()
    assert n_pairs > 1500
    p_full = full.model.probability_two_random_records_match_
    p_sampled = sampled.model.probability_two_random_records_match_
    # about half of the pairs, yet the prior counts hits among all of them
    assert 0.6 < p_sampled / p_full < 1.6
    assert sampled.summary["candidate_pairs"] == n_pairs


def test_memory_limit_setting(tmp_path):
    assert RunSettings().pairs_per_chunk() == 1_000_000
    assert RunSettings(memory_limit="2GB").memory_bytes() == 2 * 10**9
    assert RunSettings(memory_limit="1GiB").memory_bytes() == 2**30
    assert RunSettings(memory_limit="4GB").pairs_per_chunk() == 4 * 10**9 // 8 // 400
    assert RunSettings(memory_limit="4GB", chunk_pairs=5000).pairs_per_chunk() == 5000
    config = tmp_path / "run.yaml"
    (tmp_path / "a.csv").write_text("id,name\n1,张伟\n", encoding="utf-8")
    config.write_text(
        "sources:\n  a: {path: a.csv, record_id: id}\nrun:\n  memory_limit: lots\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="memory_limit"):
        load_config(config)


def test_memory_limit_reaches_duckdb(demo, reference, tmp_path, monkeypatch):
    config_path, _ = demo
    seen = []
    original = linkage.pipeline._connection

    def spy(config, spill):
        con = original(config, spill)
        seen.append(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])
        seen.append(con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0])
        return con

    monkeypatch.setattr(linkage.pipeline, "_connection", spy)
    out = tmp_path / "limited"
    # a quarter of the run's limit for the joins (the records are held beside them), at
    # least 256 MiB; spilling under the output's work folder
    Linker(_config(config_path, memory_limit="4GB"), id_key=KEY).write(out)
    assert seen[0].replace(" ", "") in ("953.6MiB", "953MiB", "1000.0MB")
    assert seen[1].endswith(f"{WORK_DIR}/duckdb_tmp")
    assert _outputs(out) == _outputs(reference)
    seen.clear()
    Linker(_config(config_path, memory_limit="300MB"), id_key=KEY).write(tmp_path / "small")
    assert seen[0].replace(" ", "") in ("256.0MiB", "256MiB", "268.4MB")
    # without run.memory_limit: DUCKDB_MEMORY, not DuckDB's 80% of the machine; a run
    # without checkpoints spills into a folder of its own, removed after blocking (not
    # DuckDB's default .tmp in the working directory)
    seen.clear()
    monkeypatch.chdir(tmp_path)
    result = Linker(_config(config_path), id_key=KEY).run()
    assert len(result.identities)
    assert seen[0].replace(" ", "") in ("1.0GiB", "1024.0MiB", "1GiB")
    assert "linkage-duckdb-" in seen[1] and not Path(seen[1]).exists()
    assert not (tmp_path / ".tmp").exists()


def test_cli_resume_keeps_the_new_identity_key(demo, tmp_path, monkeypatch):
    """Killed before any key file: --resume names identities with the same (pending) key."""
    config_path, _ = demo
    monkeypatch.delenv("LINKAGE_ID_KEY", raising=False)
    monkeypatch.delenv("LINKAGE_ID_KEY_FILE", raising=False)
    out = tmp_path / "cli"
    original = linkage.pipeline.cluster_records

    def crash(*args, **kwargs):
        raise RuntimeError("simulated kill")

    monkeypatch.setattr(linkage.pipeline, "cluster_records", crash)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(config_path), "--output", str(out), "-q"])
    assert result.exit_code == 1
    assert (out / WORK_DIR / "scoring.done").exists() and not (out / "identity.key").exists()
    monkeypatch.setattr(linkage.pipeline, "cluster_records", original)
    result = runner.invoke(app, ["run", str(config_path), "--output", str(out), "-q", "--resume"])
    assert result.exit_code == 0, result.output
    assert (out / "identity.key").exists() and not (out / ".identity.key.pending").exists()
    # the same key in a clean run gives the same identities
    monkeypatch.setenv("LINKAGE_ID_KEY_FILE", str(out / "identity.key"))
    clean = tmp_path / "clean"
    result = runner.invoke(app, ["run", str(config_path), "--output", str(clean), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "identities.csv").read_bytes() == (clean / "identities.csv").read_bytes()


def test_checkpoints_open_clears_without_resume(demo, tmp_path):
    config_path, _ = demo
    config = _config(config_path)
    first = Checkpoints.open(tmp_path, config, resume=False)
    first.save("records", {"records": pd.DataFrame({"a": [1]})})
    assert Checkpoints.open(tmp_path, config, resume=True).done("records")
    assert not Checkpoints.open(tmp_path, config, resume=False).done("records")


def test_refused_input_leaves_no_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(linkage.linker, "read_records", _refuse)
    monkeypatch.setattr(linkage.linker, "read_records_chunks", _refuse)  # linkage run's child
    config = tmp_path / "run.yaml"
    (tmp_path / "a.csv").write_text("id,name\n1,张伟\n", encoding="utf-8")
    config.write_text("sources:\n  a: {path: a.csv, record_id: id}\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        Linker(load_config(config), id_key=KEY).write(out)
    assert not (out / WORK_DIR).exists()


def _refuse(*args, **kwargs):
    raise ConfigError("refused", key="sources")


@pytest.mark.parametrize(
    ("stage", "rerun"),
    [("clustering", {"cluster_records"}), ("blocking", {"block", "compare_pairs", "cluster_records"})],
)  # fmt: skip
def test_tampered_checkpoint_is_run_again(demo, reference, stage, rerun, tmp_path, monkeypatch,
                                          caplog):  # fmt: skip
    """A checkpoint file changed after the kill does not verify against its marker's HMAC:
    that stage and the later ones run again, giving the identities of an untampered run."""
    config_path, _ = demo
    out = tmp_path / "out"
    with pytest.raises(Killed):
        Linker(_config(config_path), id_key=KEY).write(out, progress=KillAt("writing outputs"))
    work = out / WORK_DIR
    assert oct((out / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert oct(work.stat().st_mode & 0o777) == "0o700"
    assert oct((work / "clustering").stat().st_mode & 0o777) == "0o700"
    if stage == "clustering":
        # merge 50 records into the first one's cluster: 50 persons' records under one id
        path = work / "clustering" / "labels.parquet"
        labels = pd.read_parquet(path)
        labels.loc[1:50, "label"] = labels["label"].iloc[0]
    else:
        path = work / "blocking" / "pairs.parquet"
        labels = pd.read_parquet(path).iloc[::2]  # half the candidate pairs gone
    labels.to_parquet(path)
    calls = _spy_stages(monkeypatch)
    Linker(_config(config_path), id_key=KEY).write(out, resume=True)
    assert f"checkpoint of stage '{stage}'" in caplog.text and "HMAC" in caplog.text
    assert set(calls) == rerun
    assert _outputs(out) == _outputs(reference)
    assert not work.exists() and not (out / KEY_FILE).exists()


def test_checkpoint_without_its_key_starts_over(demo, tmp_path, caplog):
    config_path, _ = demo
    config = _config(config_path)
    Checkpoints.open(tmp_path, config, resume=False).save(
        "records", {"r": pd.DataFrame({"a": [1]})}
    )
    (tmp_path / KEY_FILE).unlink()
    assert not Checkpoints.open(tmp_path, config, resume=True).done("records")
    assert "no key file" in caplog.text
    # a marker rewritten by someone without the key (document and files changed) is dropped
    first = Checkpoints.open(tmp_path, config, resume=False)
    first.save("records", {"r": pd.DataFrame({"a": [1]})}, {"bad_rows": {}})
    marker = tmp_path / WORK_DIR / "records.done"
    marker.write_text(marker.read_text().replace("{}", '{\\"x\\": 1}'), encoding="utf-8")
    assert not Checkpoints.open(tmp_path, config, resume=True).done("records")
    assert "does not match its HMAC" in caplog.text


@pytest.mark.parametrize("kill_at", [None, "comparing"])
def test_worker_processes_reading_the_records_checkpoint_give_the_same_bytes(
    demo, reference, kill_at, tmp_path, monkeypatch
):
    # the demo is below the size from which a run shares preparing and golden records with
    # worker processes reading the records checkpoint: lowered, both paths run on it
    monkeypatch.setattr(linkage.pipeline, "PARALLEL_MIN_RECORDS", 1)
    sent: list[str] = []
    original = _Worker.send

    def send(self, func, arg):
        sent.append(func.__name__)
        return original(self, func, arg)

    monkeypatch.setattr(_Worker, "send", send)
    shares: list[set[str]] = []
    held: list[set[str]] = []  # the columns golden records started from
    merge = linkage.pipeline.merge_records

    def spy_merge(records, identities, settings, **kwargs):
        shares.append(set(kwargs["share"].fields))
        held.append(set(records.columns))
        return merge(records, identities, settings, **kwargs)

    monkeypatch.setattr(linkage.pipeline, "merge_records", spy_merge)
    config_path, _ = demo
    out = tmp_path / "out"
    if kill_at is not None:
        with pytest.raises(Killed):
            Linker(_config(config_path), id_key=KEY).write(out, progress=KillAt(kill_at))
    linker = Linker(_config(config_path), id_key=KEY)
    linker.write(out, resume=kill_at is not None)
    assert _outputs(out) == _outputs(reference)
    for name in ("pairs.parquet", "model.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes()
    # a worker prepared comparisons from the file, and built golden fields from it
    assert "prepare_kept" in sent and "_golden_fields_from_file" in sent
    # golden records began from the keys and recency alone: every field's columns, the
    # worker's and this process's, are read from the records file as codes
    fields = _config(config_path).golden_settings().fields
    away = shares[-1]
    mine = {c for f, r in fields.items() if f not in away for c in (r.column, r.raw)} - {None}
    theirs = {c for f in away for c in (fields[f].column, fields[f].raw)} - mine - {None}
    assert away and theirs and mine
    assert held[-1] == {"source", "record_id", "registered_at_std"}
    # the golden table was spilled: the result keeps the record keys only
    assert set(linker.result_.records.columns) == {"rid", "source", "record_id"}


@pytest.mark.parametrize("workers", [True, False])
def test_run_workers_false_starts_no_worker_and_gives_the_same_bytes(
    demo, reference, workers, tmp_path, monkeypatch
):
    """``run.workers: false`` keeps standardizing, preparing and golden records in the run's
    processes, with every threshold lowered so that each would start its worker: no worker
    process starts (counted in a file, since standardizing runs in a forked child), and the
    outputs are byte-identical to the reference; with ``true`` the same spy sees them."""
    import linkage.compare
    import linkage.io
    from linkage.standardize import _distinct

    monkeypatch.setattr(linkage.pipeline, "PARALLEL_MIN_RECORDS", 1)
    monkeypatch.setattr(linkage.compare, "PARALLEL_MIN_RECORDS", 1)
    monkeypatch.setattr(_distinct, "PARALLEL_MIN_DISTINCT", 1)
    monkeypatch.setattr("linkage.standardize.combine.PARALLEL_MIN_DISTINCT", 1)
    monkeypatch.setattr(linkage.io, "_WORKER_EARLY_BYTES", 0)
    started = tmp_path / "started.txt"
    original = _Worker.start

    def start(self):
        if self.proc is None:
            with open(started, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
        return original(self)

    monkeypatch.setattr(_Worker, "start", start)
    out = tmp_path / "out"
    Linker(_config(config_path := demo[0], workers=workers), id_key=KEY).write(out)
    assert _outputs(out) == _outputs(reference)
    assert (out / "pairs.parquet").read_bytes() == (reference / "pairs.parquet").read_bytes()
    # model.json records the run settings it was trained under, this one among them
    model = (out / "model.json").read_text(encoding="utf-8")
    assert model.replace('"workers": false', '"workers": true') == (
        reference / "model.json"
    ).read_text(encoding="utf-8")
    pids = started.read_text(encoding="utf-8").split() if started.exists() else []
    if workers:
        # the standardizing child's worker and this process's (comparing, golden records)
        assert len(pids) >= 3 and len(set(pids)) == 2, pids
    else:
        assert pids == [], config_path


def _frame():
    return pd.DataFrame({"a": ["x", None, "y"], "b": [1, 2, 3]})


def test_background_save_error_is_raised_by_wait_and_leaves_no_marker(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path / WORK_DIR, "stamp", b"k" * 32)
    error = OSError(28, "No space left on device", str(tmp_path / "records.parquet"))

    def full(frame, path):
        raise error

    monkeypatch.setattr(linkage.checkpoint, "write_parquet", full)
    called = []
    checkpoints.save("records", {"records": _frame()}, {}, background=True)
    checkpoints.after_save("records", lambda: called.append(1))
    with pytest.raises(OSError) as raised:
        checkpoints.save("blocking", {"pairs": _frame()}, {})  # waits for the first
    assert raised.value is error  # the same exception, naming the file
    assert not (tmp_path / WORK_DIR / "records.done").exists()
    assert not (tmp_path / WORK_DIR / "blocking.done").exists()
    assert called == []


def test_background_save_reads_back_and_calls_back_once(tmp_path):
    checkpoints = Checkpoints(tmp_path / WORK_DIR, "stamp", b"k" * 32)
    called = []
    checkpoints.save("records", {"records": _frame()}, {"n": 3}, background=True)
    checkpoints.after_save("records", lambda: called.append("early"))
    assert checkpoints.document("records") == {"n": 3}  # waits for the save
    pd.testing.assert_frame_equal(checkpoints.frame("records", "records"), _frame())
    checkpoints.after_save("records", lambda: called.append("late"))  # done: at once
    checkpoints.after_save("blocking", lambda: called.append("never"))  # neither saved
    assert called == ["early", "late"]
    assert checkpoints._verified("records")


def test_parts_are_read_in_the_order_of_their_numbers(tmp_path):
    # zero-padded to five digits: from part-100000 on, names alone misorder them
    names = ["part-100000.kept.parquet", "part-99999.kept.parquet", "part-00002.links.parquet",
             "part-00002.below.parquet", "part-00010.kept.parquet"]
    ordered = sorted((tmp_path / n for n in names), key=part_order)
    assert [p.name for p in ordered] == [
        "part-00002.below.parquet", "part-00002.links.parquet", "part-00010.kept.parquet",
        "part-99999.kept.parquet", "part-100000.kept.parquet",
    ]
