"""The Spark engine: one test body over both engines, readers, stable ids, lazy pyspark import.

Spark starts a JVM: every test here shares the session-scoped ``spark`` fixture (local[2],
2 shuffle partitions, no UI, small-data JVM and query settings: tests/conftest.py) and small
generated registries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from linkage import schema
from linkage.cli import app
from linkage.config import DEFAULT_RULES, load_config
from linkage.errors import InputError
from linkage.identity import CLUSTER, assign_stable_ids
from linkage.io import read_sources
from linkage.synth import generate

ENGINES = ("local", "spark")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_importing_linkage_and_the_local_engine_never_import_pyspark(tmp_path):
    generate(30, seed=2, output=tmp_path)
    done = _python(
        f"""
        import sys
        import linkage, linkage.cli, linkage.linker, linkage.pipeline, linkage.spark
        from typer.testing import CliRunner
        from linkage.cli import app
        out = CliRunner().invoke(app, ["run", {str(tmp_path / "run.yaml")!r}, "-o",
                                       {str(tmp_path / "out")!r}, "-q"])
        assert out.exit_code == 0, out.output
        assert "pyspark" not in sys.modules, "pyspark was imported"
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "identities.csv").exists()


def test_local_workers_default_to_the_driver_python(monkeypatch):
    """A driver started from a venv without activating it still gets workers with pandas:
    a local master's workers run the driver's interpreter unless PYSPARK_PYTHON is set."""
    pytest.importorskip("pyspark")
    from linkage.spark.session import use_driver_python

    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    use_driver_python("yarn")
    assert "PYSPARK_PYTHON" not in os.environ
    use_driver_python("local[2]")
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/python3")
    use_driver_python("local[*]")
    assert os.environ["PYSPARK_PYTHON"] == "/opt/python3"


def _java_env() -> tuple[str, ...]:
    """The variables a driver JVM's options come from, and SPARK_HOME (its conf folder)."""
    from linkage.spark.session import _JAVA_ENV

    return (*_JAVA_ENV, "SPARK_HOME")


def test_a_local_master_gets_the_throughput_collector_unless_one_is_named(tmp_path, monkeypatch):
    """A local master's driver JVM runs ParallelGC, unless a collector is named where the
    JVM or spark-submit reads options: two stop the JVM at its start."""
    pytest.importorskip("pyspark")
    from linkage.spark.session import LOCAL_COLLECTOR, driver_java_options, names_collector

    for name in _java_env():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))

    def added(master: str = "local[2]", conf: dict | None = None) -> bool:
        return LOCAL_COLLECTOR in driver_java_options(master, conf).split()

    assert driver_java_options("local[2]").split()[0] == LOCAL_COLLECTOR
    assert "log4j2.properties" in driver_java_options("local[2]")
    assert added("local") and added("local[*]") and added("local[4,2]")
    # executors in JVMs of their own: their collector is the cluster's to set
    for master in ("yarn", "spark://host:7077", "k8s://https://host", "local-cluster[2,1,1024]"):
        assert not added(master), master
    named = {"spark.driver.defaultJavaOptions": "-Xss4m -XX:+UseSerialGC"}
    assert names_collector(named) and not added(conf=named)
    assert not names_collector({"spark.driver.defaultJavaOptions": "-XX:+UseStringDeduplication"})
    assert not added(conf={"spark.driver.defaultJavaOptions": "-XX:VMOptionsFile=/etc/jvm.opts"})
    for name, value in [
        ("JAVA_TOOL_OPTIONS", "-XX:+UseG1GC"),
        ("JDK_JAVA_OPTIONS", "-XX:+UseShenandoahGC"),
        ("_JAVA_OPTIONS", "-XX:+UseZGC"),
        ("SPARK_SUBMIT_OPTS", "-Dx=1 -XX:+UseSerialGC"),
        ("PYSPARK_SUBMIT_ARGS", "--driver-java-options -XX:+UseG1GC pyspark-shell"),
    ]:
        monkeypatch.setenv(name, value)
        assert not added(), name
        monkeypatch.delenv(name)
    assert added()
    # a properties file PYSPARK_SUBMIT_ARGS names, and spark-submit's files in the conf folder
    props = tmp_path / "job.properties"
    props.write_text("spark.driver.extraJavaOptions -XX:+UseG1GC\n", encoding="utf-8")
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", f"--properties-file {props} pyspark-shell")
    assert not added()
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    for file, text in [
        ("spark-defaults.conf", "spark.driver.defaultJavaOptions  -XX:+UseZGC\n"),
        ("java-opts", "-XX:+UseG1GC\n"),
        ("spark-env.sh", "export SPARK_SUBMIT_OPTS='-XX:+UseSerialGC'\n"),
    ]:
        (tmp_path / file).write_text(text, encoding="utf-8")
        assert not added(), file
        (tmp_path / file).unlink()
    assert added()


def _in_a_new_driver(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python process (its own driver JVM) with ``env``; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_local_master_gets_a_quarter_of_the_memory_unless_its_heap_is_set(
    tmp_path, monkeypatch
):
    """Spark's default driver heap is 1g, and a local master's one JVM holds every executor:
    a quarter of the machine's memory instead (the JVM's own default), unless the heap is
    set where spark-submit or the JVM reads it; a cluster's memory is its own to set."""
    pytest.importorskip("pyspark")
    from linkage.spark import session
    from linkage.spark.session import local_driver_memory, machine_memory

    for name in (*_java_env(), "SPARK_DRIVER_MEMORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    total = machine_memory()
    assert total is not None and total > 2**30
    assert local_driver_memory("local[2]") == f"{max(1024, total // 4 // 2**20)}m"
    monkeypatch.setattr(session, "machine_memory", lambda: 24 * 2**30)
    assert local_driver_memory("local[*]") == "6144m"
    monkeypatch.setattr(session, "machine_memory", lambda: 2 * 2**30)
    assert local_driver_memory("local") == "1024m"  # never below Spark's own default
    monkeypatch.setattr(session, "machine_memory", lambda: None)
    assert local_driver_memory("local[2]") is None
    monkeypatch.setattr(session, "machine_memory", lambda: 24 * 2**30)
    for master in ("yarn", "spark://host:7077", "local-cluster[2,1,1024]"):
        assert local_driver_memory(master) is None, master
    assert local_driver_memory("local[2]", {"spark.driver.memory": "2g"}) is None
    for name, value in [
        ("SPARK_DRIVER_MEMORY", "3g"),
        ("PYSPARK_SUBMIT_ARGS", "--driver-memory 3g pyspark-shell"),
        ("PYSPARK_SUBMIT_ARGS", "--conf spark.driver.memory=3g pyspark-shell"),
        ("JAVA_TOOL_OPTIONS", "-Xmx3g"),
    ]:
        monkeypatch.setenv(name, value)
        assert local_driver_memory("local[2]") is None, name
        monkeypatch.delenv(name)
    for file, text in [
        ("spark-defaults.conf", "spark.driver.memory  3g\n"),
        ("spark-env.sh", "export SPARK_DRIVER_MEMORY=3g\n"),
    ]:
        (tmp_path / file).write_text(text, encoding="utf-8")
        assert local_driver_memory("local[2]") is None, file
        (tmp_path / file).unlink()
    assert local_driver_memory("local[2]") == "6144m"


def test_the_local_driver_jvm_starts_with_the_heap_chosen(tmp_path):
    """A real session: the JVM's maximum heap is the one local_driver_memory chose, not 1g."""
    pytest.importorskip("pyspark")
    from linkage.spark.session import local_driver_memory

    env = {k: v for k, v in os.environ.items() if k not in (*_java_env(), "SPARK_DRIVER_MEMORY")}
    env["SPARK_CONF_DIR"] = str(tmp_path)
    code = """
        from linkage.spark.session import get_session
        spark = get_session("local[1]")
        print("HEAP:", spark._jvm.java.lang.Runtime.getRuntime().maxMemory(),
              spark.sparkContext.getConf().get("spark.driver.memory"))
        spark.stop()
        """
    done = _in_a_new_driver(code, env)
    line = next(line for line in done.stdout.splitlines() if line.startswith("HEAP:"))
    heap, setting = int(line.split()[1]), line.split()[2]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPARK_CONF_DIR", str(tmp_path))
        for name in (*_java_env(), "SPARK_DRIVER_MEMORY"):
            patch.delenv(name, raising=False)
        chosen = local_driver_memory("local[1]")
    assert chosen is not None and setting == chosen
    # the JVM reports a little less than -Xmx (one survivor space is not counted)
    assert 0.8 * int(chosen[:-1]) * 2**20 <= heap <= int(chosen[:-1]) * 2**20


@pytest.mark.parametrize(
    ("tool_options", "blind", "collector"),
    [
        (None, False, "PS MarkSweep"),
        ("-XX:+UseG1GC", False, "G1 Old Generation"),
        # a collector the check cannot see: the JVM refuses two and starts again without ours
        ("-XX:+UseG1GC", True, "G1 Old Generation"),
    ],
)
def test_the_driver_jvm_starts_with_the_collector_chosen(tmp_path, tool_options, blind, collector):
    """A real session: ParallelGC by default; a collector named outside the run's conf
    (JAVA_TOOL_OPTIONS here) starts the JVM with that one, not a conflict."""
    pytest.importorskip("pyspark")
    env = {k: v for k, v in os.environ.items() if k not in _java_env()}
    env["SPARK_CONF_DIR"] = str(tmp_path)
    if tool_options:
        env["JAVA_TOOL_OPTIONS"] = tool_options
    code = f"""
        import linkage.spark.session as session
        if {blind}:
            session.names_collector = lambda conf: False
        spark = session.get_session("local[1]", conf={{"spark.driver.memory": "512m"}})
        beans = spark._jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
        print("GC:" + ";".join(bean.getName() for bean in beans))
        spark.stop()
        """
    done = _in_a_new_driver(code, env)
    names = next(line for line in done.stdout.splitlines() if line.startswith("GC:"))
    assert collector in names.split(":", 1)[1].split(";"), names
    assert ("starting it again without -XX:+UseParallelGC" in done.stderr) == blind, done.stderr


def test_missing_pyspark_is_an_error_naming_the_extra(tmp_path):
    generate(20, seed=2, output=tmp_path)
    done = _python(
        f"""
        import sys
        sys.modules["pyspark"] = None  # as if it were not installed
        from linkage.spark import require_pyspark
        try:
            require_pyspark()
        except ImportError as exc:
            print("import error:", exc)
        from linkage.cli import main
        sys.argv = ["linkage", "run", {str(tmp_path / "run.yaml")!r}, "-o",
                    {str(tmp_path / "out")!r}, "--engine", "spark"]
        main()
        """
    )
    assert "import error:" in done.stdout and "linkage[spark]" in done.stdout
    assert done.returncode == 2
    assert "linkage[spark]" in done.stderr


# ----------------------------------------------------------------------------- both engines


# Run configs both engines must agree on. "refined": refine_block_size 5 with a coarse extra
# rule (the fuzzy surname alone), gender and birth year to refine by and a low max_block_size,
# so blocks are refined; link_only and dedupe_only restrict the pairs
# by source.
VARIANTS = {
    "refined": {
        "refine_block_size": 5,
        "max_block_size": 12,
        "refine_keys": ["gender", "birth_year"],
        "surname_rule": True,
    },
    "link_only": {"link_type": "link_only", "refine_block_size": 5},
    "dedupe_only": {"link_type": "dedupe_only"},
}


@pytest.fixture(scope="module")
def registries(tmp_path_factory) -> Path:
    """`linkage synth` registries (GBK, UTF-8-BOM and UTF-8 CSV) with one quick-to-train
    config per variant (``run_<variant>.yaml``)."""
    folder = tmp_path_factory.mktemp("registries")
    out = CliRunner().invoke(app, ["synth", "-o", str(folder), "--persons", "250", "--seed", "5"])
    assert out.exit_code == 0, out.output
    base = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    for variant, settings in VARIANTS.items():
        config = dict(base)
        # few random pairs keep training quick; a small cap makes clustering recluster components
        config["model"] = {"u_sample_pairs": 20_000}
        config["clustering"] = {"max_cluster_size": 3}
        config["spark"] = {"shuffle_partitions": 2}  # one per core of local[2]
        blocking = {k: v for k, v in settings.items() if k != "surname_rule"}
        if settings.get("surname_rule"):
            rules = [r.model_dump() for r in DEFAULT_RULES]
            rules.append(
                {"name": "surname", "keys": [schema.name_col(schema.NAME, "surname_fuzzy")]}
            )
            blocking["rules"] = rules
        config["blocking"] = blocking
        text = yaml.safe_dump(config, allow_unicode=True)
        (folder / f"run_{variant}.yaml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module", params=list(VARIANTS))
def runs(request, registries, spark, tmp_path_factory) -> dict[str, Any]:
    """Output folders of ``linkage run --engine E`` for each engine on one config variant,
    both under one identity key so that their ids can be compared."""
    variant = request.param
    outputs = {"variant": variant}
    patch = pytest.MonkeyPatch()
    patch.setenv("LINKAGE_ID_KEY", "one key for both engines' runs")
    for engine in ENGINES:
        out = tmp_path_factory.mktemp(f"out_{variant}_{engine}")
        config = registries / f"run_{variant}.yaml"
        args = ["run", str(config), "-o", str(out), "--engine", engine, "-q"]
        if engine == "spark":
            args += ["--spark-master", "local[2]"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        outputs[engine] = out
    patch.undo()
    return outputs


def _pairs_of(identities: pd.DataFrame) -> set[tuple[str, str]]:
    key = identities[schema.SOURCE] + "/" + identities[schema.RECORD_ID]
    pairs = set()
    for _, group in key.groupby(identities[schema.IDENTITY_ID].to_numpy()):
        pairs.update(combinations(sorted(group), 2))
    return pairs


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_output_contract(engine, registries, runs):
    out = runs[engine]
    identities = pd.read_csv(out / "identities.csv", dtype=str, keep_default_na=False)
    records = read_sources(load_config(registries / "run.yaml"))
    # exactly one row per input record
    assert list(identities.columns[:3]) == [schema.SOURCE, schema.RECORD_ID, schema.IDENTITY_ID]
    assert len(identities) == len(records)
    assert not identities.duplicated([schema.SOURCE, schema.RECORD_ID]).any()
    assert set(zip(identities.source, identities.record_id)) == set(
        zip(records.source, records.record_id)
    )
    golden_path = out / ("golden_records.parquet" if engine == "spark" else "golden_records.csv")
    golden = (
        pd.read_parquet(golden_path) if engine == "spark" else pd.read_csv(golden_path, dtype=str)
    )
    assert sorted(golden[schema.IDENTITY_ID]) == sorted(identities[schema.IDENTITY_ID].unique())
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert {"source_l", "record_id_l", schema.MATCH_PROBABILITY}.issubset(pairs.columns)
    # the linking is good: pairwise precision and recall against the generator's truth,
    # recall over the true pairs the link type can find (across or within sources)
    truth = pd.read_csv(registries / "truth.csv", dtype=str)
    person = "person_id"
    true_pairs = all_true = _pairs_of(truth.rename(columns={person: schema.IDENTITY_ID}))
    link_type = VARIANTS[runs["variant"]].get("link_type", "link_and_dedupe")
    if link_type != "link_and_dedupe":
        within = link_type == "dedupe_only"
        true_pairs = {p for p in true_pairs if (_source(p[0]) == _source(p[1])) == within}
    found = _pairs_of(identities)
    # precision against every true pair: a cluster may join two records of one source
    # through a third one of another source
    precision = len(found & all_true) / len(found)
    recall = len(found & true_pairs) / len(true_pairs)
    assert precision > 0.9 and recall > 0.7, (precision, recall)


def _source(key: str) -> str:
    return key.split("/", 1)[0]


def test_engines_give_the_same_identities(runs):
    frames = {
        e: pd.read_csv(runs[e] / "identities.csv", dtype=str).sort_values(
            [schema.SOURCE, schema.RECORD_ID], ignore_index=True
        )
        for e in ENGINES
    }
    local, spark = frames["local"], frames["spark"]
    assert local[[schema.SOURCE, schema.RECORD_ID]].equals(spark[[schema.SOURCE, schema.RECORD_ID]])
    # the same partition, and the same ids: both name a cluster after its smallest record key
    assert _pairs_of(local) == _pairs_of(spark)
    assert local[schema.IDENTITY_ID].equals(spark[schema.IDENTITY_ID])
    # the same candidate pairs with the same levels and scores
    key = ["source_l", "record_id_l", "source_r", "record_id_r"]
    lp = pd.read_parquet(runs["local"] / "pairs.parquet").sort_values(key, ignore_index=True)
    sp = pd.read_parquet(runs["spark"] / "pairs.parquet").sort_values(key, ignore_index=True)
    assert lp[key].equals(sp[key])
    gammas = [c for c in lp.columns if c.startswith(schema.GAMMA_PREFIX)]
    assert (lp[gammas].to_numpy() == sp[gammas].to_numpy()).all()
    assert np.allclose(lp[schema.MATCH_WEIGHT], sp[schema.MATCH_WEIGHT], atol=1e-9)
    assert (lp[schema.RULE].astype(str).to_numpy() == sp[schema.RULE].astype(str).to_numpy()).all()
    # the same blocking plan: predicted pairs, refined and skipped blocks per rule
    summaries = [
        json.loads((runs[e] / "summary.json").read_text(encoding="utf-8")) for e in ENGINES
    ]
    local_plan, spark_plan = (s["blocking"] for s in summaries)
    assert local_plan == spark_plan
    assert summaries[0]["pairs_per_rule"] == summaries[1]["pairs_per_rule"]
    if runs["variant"] == "refined":
        assert spark_plan["surname"]["blocks_refined"] > 0
    # the prediction is exact for a rule's own pairs: the first rule finds all of its pairs
    first = next(iter(spark_plan))
    assert summaries[1]["pairs_per_rule"].get(first, 0) == spark_plan[first]["pairs"]


def test_engines_give_the_same_golden_records(runs):
    """The Spark engine shuffles only the columns ``merge_records`` reads: the golden records,
    values and provenance, equal the local engine's cell for cell."""
    local = pd.read_csv(runs["local"] / "golden_records.csv", dtype=str, keep_default_na=False)
    spark = pd.read_parquet(runs["spark"] / "golden_records.parquet")
    spark = spark.astype(object).where(spark.notna(), "").astype(str)
    assert list(spark.columns) == list(local.columns)
    local = local.sort_values(schema.IDENTITY_ID, ignore_index=True)
    spark = spark.sort_values(schema.IDENTITY_ID, ignore_index=True)
    assert len(local) > 100
    pd.testing.assert_frame_equal(local, spark)


def test_spark_summary_has_the_local_format(runs, capsys):
    """summary.json: the local keys in the local order (Spark's own after them), sources by
    name, every rule in rule order with its zeros, the same cluster statistics; and the
    printed summary the same lines with the same labels."""
    from linkage.cli import _print_summary

    local, spark = (
        json.loads((runs[e] / "summary.json").read_text(encoding="utf-8")) for e in ENGINES
    )
    # the peak resident memory and CPU per stage come last in both; on a local master the
    # JVM and its Python workers are this process's descendants, so Spark's are whole too
    memory_keys = [
        "peak_rss_mb", "peak_total_mb", "peak_rss_stage", "peak_total_stage", "cpu_seconds",
        "cores_busy",
    ]  # fmt: skip
    assert list(local)[-len(memory_keys) :] == memory_keys
    local_all, local = local, {k: v for k, v in local.items() if k not in memory_keys}
    assert list(spark)[: len(local)] == list(local)
    assert list(spark)[len(local) :] == ["engine", "connected_component_rounds", *memory_keys]
    stages = [*spark["seconds"], "write"]
    for key in ("peak_rss_mb", "peak_total_mb", "cpu_seconds", "cores_busy"):
        assert list(spark[key]) == stages, key
    # the JVM's resident memory is in the total, not in the driver's own figure
    assert all(spark["peak_total_mb"][k] >= spark["peak_rss_mb"][k] + 100 for k in stages)
    assert spark["peak_total_stage"] in stages
    assert sum(spark["cpu_seconds"].values()) > 0.5 * sum(spark["seconds"].values())
    for key in ("records_per_source", "pairs_per_rule", "seconds", "blocking"):
        assert list(spark[key]) == list(local[key]), key
    assert spark["records_per_source"] == local["records_per_source"]
    assert spark["pairs_per_rule"] == local["pairs_per_rule"]
    assert spark["cluster_stats"] == local["cluster_stats"]
    assert spark["identities"] == local["identities"] == local["cluster_stats"]["clusters"]
    # both runs also write the cluster-size distribution
    sizes = [pd.read_csv(runs[e] / "cluster_sizes.csv") for e in ENGINES]
    assert sizes[0].equals(sizes[1])

    def labels(summary: dict) -> list[str]:
        _print_summary(summary, quiet=False)
        lines = capsys.readouterr().out.splitlines()
        return [line.split(":")[0] if ":" in line else line.split()[0] for line in lines]

    assert labels(spark) == labels(local_all)


def test_spark_refuses_a_model_saved_with_other_levels(runs, registries, tmp_path):
    """A saved model whose ID comparison lacks a level this release computes: exit 2 with the
    retrain message, as on the local engine, and nothing written."""
    doc = json.loads((runs["local"] / "model.json").read_text(encoding="utf-8"))
    k = doc["levels"]["id"].index("prefix_tail_lost")
    for part in ("levels", "m", "u"):
        del doc[part]["id"][k]
    old = tmp_path / "old_model.json"
    old.write_text(json.dumps(doc), encoding="utf-8")
    config = yaml.safe_load((registries / f"run_{runs['variant']}.yaml").read_text("utf-8"))
    config["model"] = {"load": str(old)}
    path = registries / f"run_{runs['variant']}_old_model.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    args = ["run", str(path), "-o", str(out), "--engine", "spark", "--spark-master", "local[2]"]
    done = CliRunner().invoke(app, [*args, "-q"])
    assert done.exit_code == 2, done.output
    message = " ".join(done.output.split())
    assert str(old) in message and "comparison 'id'" in message and "Retrain" in message
    assert not (out / "identities.csv").exists()


def _jobs_of(spark, group: str, action):
    """``action()``'s result and the number of Spark jobs it ran (its own job group)."""
    context = spark.sparkContext
    context.setJobGroup(group, group)
    try:
        result = action()
        return result, len(context.statusTracker().getJobIdsForGroup(group))
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description"):
            context.setLocalProperty(key, None)


# ----------------------------------------------------------------------------- readers


def test_spark_reader_matches_the_local_reader(spark, tmp_path, write_yaml):
    from linkage.spark.engine import read_sources_spark

    frame = pd.DataFrame(
        {
            "编号": ["a1", "a2", "a3"],
            "姓名": ["张伟", " 欧阳婧璇 ", None],
            "电话": ["13800138000", "", "010-12345678"],
            "备注": ["甲", "乙", "丙"],
            # a registry exporting the name and the address in parts (joined, io.join_field_parts)
            "姓": ["张", "欧阳", None],
            "名": ["伟", "欧阳婧璇", None],
            "市": ["深圳市", "广州市", None],
            "详细地址": ["深圳市南山区粤海街道1号", "天河区体育西路2号", "  "],
        }
    )
    frame.to_csv(tmp_path / "gbk.csv", index=False, encoding="gb18030")
    frame.to_parquet(tmp_path / "p.parquet", index=False)
    frame.to_excel(tmp_path / "x.xlsx", index=False)
    columns = {"姓名": "name", "电话": "phone"}
    path = write_yaml(
        {
            "sources": {
                "auto": {"path": "gbk.csv", "record_id": "编号", "columns": columns},
                "gbk": {
                    "path": "gbk.csv",
                    "record_id": "编号",
                    "columns": columns,
                    "encoding": "gbk",
                },
                "pq": {"path": "p.parquet", "record_id": "编号", "columns": columns},
                "xl": {"path": "x.xlsx", "record_id": "编号", "columns": columns},
                "split": {
                    "path": "gbk.csv",
                    "record_id": "编号",
                    "columns": {"姓": "name", "名": "name", "市": "current_address",
                                "详细地址": "current_address", "电话": "phone"},
                },
            }
        }
    )
    config = load_config(path)
    local = read_sources(config).sort_values([schema.SOURCE, schema.RECORD_ID], ignore_index=True)
    remote = (
        read_sources_spark(spark, config)
        .toPandas()
        .sort_values([schema.SOURCE, schema.RECORD_ID], ignore_index=True)
    )
    assert list(remote.columns) == list(local.columns)
    split = local[local[schema.SOURCE] == "split"]
    assert split[schema.NAME].tolist() == ["张伟", "欧阳婧璇", None]
    assert split[schema.CURRENT_ADDRESS].tolist() == [
        "深圳市南山区粤海街道1号", "广州市天河区体育西路2号", None
    ]  # fmt: skip
    assert (
        remote.astype(object)
        .where(remote.notna(), None)
        .equals(local.astype(object).where(local.notna(), None))
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "编号,姓名\nx,张三\nx,李四\n",
            r"1 duplicate record id value\(s\), e.g. 'x' \(lines 2, 3\)",
        ),
        (
            "编号,姓名\nx,张三\ny,李四,多余\n",
            r"1 line\(s\) with the wrong number of fields, expected 2: line 3 has 3 ",
        ),
        ("编号,姓名\nx,张三\n,李四\n", r"column '编号': 1 row\(s\) have no record id \(line 3\)"),
    ],
)
def test_spark_reader_rejects_bad_files_naming_them(spark, tmp_path, write_yaml, text, message):
    from linkage.spark.engine import read_sources_spark

    (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
    config = load_config(
        write_yaml({"sources": {"s": {"path": "bad.csv", "record_id": "编号", "columns": {}}}})
    )
    with pytest.raises(InputError, match=message) as raised:
        read_sources_spark(spark, config)
    assert "bad.csv" in str(raised.value)


def test_spark_reader_puts_no_row_text_in_its_error_when_the_scans_disagree(
    spark, tmp_path, write_yaml, monkeypatch
):
    """When the driver's scan of the file finds other bad rows than Spark counted, the error
    quoted the first bad row's text (a name, an ID number) into the job log; it gives
    counts only now, and how to name the rows."""
    import linkage.spark.engine as engine
    from linkage.spark.badrows import BadRows

    (tmp_path / "bad.csv").write_text(
        "编号,姓名,证件\nx,张三,110105197101010011\ny,李四,110105197101010022,多余\n",
        encoding="utf-8",
    )
    config = load_config(
        write_yaml({"sources": {"s": {"path": "bad.csv", "record_id": "编号", "columns": {}}}})
    )
    # the driver's scan disagrees with Spark (as an unusual file can make it)
    monkeypatch.setattr(engine, "scan_csv", lambda *a, **k: BadRows())
    with pytest.raises(InputError, match="1 row\\(s\\) with the wrong number of fields") as raised:
        engine.read_sources_spark(spark, config)
    text = str(raised.value)
    assert "李四" not in text and "110105197101010022" not in text
    assert "--bad-rows" in text


def test_spark_reader_names_every_bad_line_of_a_file_at_once(spark, tmp_path, write_yaml):
    """Every kind of bad row in one message, with the file's own line numbers: a quoted line
    break makes a record two lines long, and a blank line is no record."""
    from linkage.spark.engine import read_sources_spark

    lines = [
        "编号,姓名,地址",  # line 1
        'P1,张三,"北京市\n朝阳区"',  # lines 2-3
        "P2,李四,上海,多余",  # line 4: 4 fields
        "",  # line 5: blank
        " ,王五,广州",  # line 6: no record id
        "P3,赵六",  # line 7: 2 fields
        "P1,钱七,深圳",  # line 8: P1 again
        "P4,孙八,杭州",
        "P4,周九,南京",  # line 10: P4 again
    ]
    (tmp_path / "messy.csv").write_bytes(("\n".join(lines) + "\n").encode("gb18030"))
    config = load_config(
        write_yaml({"sources": {"s": {"path": "messy.csv", "record_id": "编号", "columns": {}}}})
    )
    with pytest.raises(InputError) as raised:
        read_sources_spark(spark, config)
    text = str(raised.value)
    assert "messy.csv" in text
    assert (
        "2 line(s) with the wrong number of fields, expected 3: line 4 has 4, line 7 has 2" in text
    )
    assert "3 kinds of bad rows" in text
    assert "column '编号': 1 row(s) have no record id (line 6)" in text
    assert (
        "column '编号': 2 duplicate record id value(s), e.g. 'P1', 'P4' (lines 2, 8, 9, 10)" in text
    )


def test_spark_reader_checks_every_file_in_one_query_and_in_file_order(spark, tmp_path, write_yaml):
    """The bad-row check runs once over all files: two more clean files cost only their
    header reads, not a count and a duplicate search each. A bad file is still named with
    its lines; a missing file is refused first, as the local reader refuses it."""
    from linkage.spark.engine import read_sources_spark

    for name in ("a", "b", "c"):
        rows = [f"{name}{i},姓名{i}" for i in range(40)]
        (tmp_path / f"{name}.csv").write_text("编号,姓名\n" + "\n".join(rows) + "\n", "utf-8")
    (tmp_path / "dup.csv").write_text("编号,姓名\nx,张三\nx,李四\n", encoding="utf-8")

    def source(name: str) -> dict:
        return {"path": f"{name}.csv", "record_id": "编号", "columns": {"姓名": "name"}}

    def jobs(names: list[str], group: str) -> tuple[pd.DataFrame, int]:
        config = load_config(
            write_yaml({"sources": {n: source(n) for n in names}}, name=f"{group}.yaml")
        )
        return _jobs_of(spark, group, lambda: read_sources_spark(spark, config).toPandas())

    one, jobs_one = jobs(["a"], "read_one")
    three, jobs_three = jobs(["a", "b", "c"], "read_three")
    assert len(one) == 40 and len(three) == 120
    # one header read per further CSV file (Spark infers the columns); the checks were
    # about five more jobs per file
    assert jobs_three - jobs_one <= 2, (jobs_one, jobs_three)
    config = load_config(
        write_yaml({"sources": {n: source(n) for n in ("a", "dup")}}, name="bad.yaml")
    )
    with pytest.raises(InputError, match="duplicate record id") as raised:
        read_sources_spark(spark, config)
    assert "dup.csv" in str(raised.value)
    # paths first, as the local reader: a missing file is refused before any file is read
    config = load_config(
        write_yaml({"sources": {n: source(n) for n in ("a", "dup", "gone")}}, name="gone.yaml")
    )
    with pytest.raises(InputError, match="file not found") as raised:
        read_sources_spark(spark, config)
    assert "gone.csv" in str(raised.value) and "dup.csv" not in str(raised.value)
    with pytest.raises(InputError) as local:
        read_sources(config)
    assert str(local.value) == str(raised.value)


def test_spark_reader_names_bad_parquet_rows(spark, tmp_path, write_yaml):
    from linkage.spark.engine import read_sources_spark

    pd.DataFrame({"编号": ["a", None, "b", "a"], "姓名": ["甲", "乙", "丙", "丁"]}).to_parquet(
        tmp_path / "bad.parquet", index=False
    )
    config = load_config(
        write_yaml({"sources": {"s": {"path": "bad.parquet", "record_id": "编号", "columns": {}}}})
    )
    with pytest.raises(InputError) as raised:
        read_sources_spark(spark, config)
    assert "1 row(s) have no record id (row 2)" in str(raised.value)
    assert "1 duplicate record id value(s), e.g. 'a' (rows 1, 4)" in str(raised.value)



@pytest.mark.parametrize(
    "content, cause",
    [(b"PAR1garbage", "is not a Parquet file"), (b"PAR1" + b"\0" * 64 + b"PAR1", "corrupted file")],
    ids=["too-short", "bad-footer"],
)
def test_spark_reader_says_why_a_damaged_parquet_file_cannot_be_read(
    spark, tmp_path, write_yaml, content, cause
):
    """The Java error's own cause, not Py4J's "An error occurred while calling o100.parquet"."""
    from linkage.spark.engine import read_sources_spark

    (tmp_path / "b.parquet").write_bytes(content)
    config = load_config(
        write_yaml({"sources": {"s": {"path": "b.parquet", "record_id": "rid", "columns": {}}}})
    )
    with pytest.raises(InputError) as raised:
        read_sources_spark(spark, config)
    text = str(raised.value)
    assert "b.parquet" in text and cause in text, text
    assert "An error occurred while calling" not in text
    assert "\tat " not in text and len(text.splitlines()) == 1, text

def test_spark_cli_on_bad_input_prints_no_java_stack_trace(tmp_path, write_yaml):
    """The run as a user starts it: exit 2, the file and its bad lines named, and nothing of
    Spark's Java logging (the JVM writes to the process's own stderr, so a subprocess)."""
    header = "登记编号,姓名,身份证号,性别,出生日期,电话,户籍地址,现住址"
    rows = [
        "P001,张三,110101199003071234,男,1990-03-07,13800138000,北京市东城区,北京市朝阳区",
        "P002,李四,,女,1985-01-02,13900139000,上海市,上海市,多余",
        ",王五,,男,1970-05-06,,广州市,广州市",
    ]
    (tmp_path / "police.csv").write_bytes(("\n".join([header, *rows]) + "\n").encode("gbk"))
    config = write_yaml(
        {
            "sources": {
                "police": {
                    "path": "police.csv",
                    "record_id": "登记编号",
                    "columns": {"姓名": "name", "身份证号": "id_number"},
                }
            },
            # the test session's small-data settings (tests/conftest.py) for this JVM too;
            # the log4j settings are still the ones get_session sets (extraJavaOptions)
            "spark": {
                "conf": {
                    "spark.driver.defaultJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
                    "spark.sql.codegen.wholeStage": "false",
                }
            },
        }
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "linkage.cli",
            "run",
            str(config),
            "-o",
            str(tmp_path / "out"),
            "--engine",
            "spark",
            "--spark-master",
            "local[1]",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr
    assert "police.csv" in done.stderr
    assert "line 3 has 9" in done.stderr and "no record id (line 4)" in done.stderr
    # nor Spark's start-up warnings (the driver JVM logs errors only: linkage/spark/log4j2.properties)
    # nor the shell's "Setting default log level" banner (the repl logger's level there)
    for java in ("org.apache", "Exception", "\tat ", "SparkException", " WARN ", "log level"):
        assert java not in done.stderr + done.stdout, done.stderr


# Bad rows of every kind, police.csv (GB18030, header = line 1); line 9 is one record over
# two lines (a quoted line break) with too few fields.
BAD_HEADER = "登记编号,姓名,性别,出生日期,公民身份号码"
BAD_COLUMNS = {"姓名": "name", "性别": "gender", "出生日期": "birth_date", "公民身份号码": "id_number"}
BAD_LINES = [
    "R01,赵建国,男,1971-02-03,11010519710203001X",
    "R02,钱秀英,女,1983-07-19,320102198307190023,多出的一列",
    "R03,孙志强,男,1990-11-30,440106199011300019",
    ",吴晓燕,女,1988-08-08,",
    "R07,郑海,男,1992-12-12,",
    "R07,王海,男,1992-12-13,",
    "1.10105E+17,陈刚,男,1980-01-01,",
    'R09,"冯\n丽",女',
    "R04,李红梅,女,1966-04-08,510104196604080046",
]
BAD_EXPECTED = {
    3: "wrong number of fields: 6, expected 5",
    5: "no record id",
    6: "duplicate record id 'R07' (lines 6, 7)",
    7: "duplicate record id 'R07' (lines 6, 7)",
    8: "record id in scientific notation (digits lost)",
    9: "wrong number of fields: 3, expected 5",
}


def _both_engines_setting_rows_aside(
    config: Path, tmp_path: Path
) -> dict[str, tuple[dict, pd.DataFrame, pd.DataFrame]]:
    """``linkage run CONFIG --bad-rows`` on each engine: (summary, bad-rows file, identities)."""
    found = {}
    for engine in ENGINES:
        out, aside = tmp_path / f"out_{engine}", tmp_path / f"bad_{engine}.csv"
        args = ["run", str(config), "-o", str(out), "--engine", engine, "--bad-rows", str(aside)]
        done = CliRunner().invoke(app, [*args, "--json", "-q"])
        assert done.exit_code == 0, (engine, done.output)
        found[engine] = (
            json.loads(done.stdout),
            pd.read_csv(aside, dtype=str, keep_default_na=False),
            pd.read_csv(out / "identities.csv", dtype=str),
        )
    return found


def test_engines_set_the_same_bad_rows_aside(tmp_path, write_yaml):
    """``--bad-rows`` on Spark: the same rows, lines, reasons and raw text as the local
    engine, the same summary counts, and no row lost."""
    text = "\n".join([BAD_HEADER, *BAD_LINES]) + "\n"
    (tmp_path / "police.csv").write_bytes(text.encode("gb18030"))
    good = ["H01,赵建国,男,1971-02-03,11010519710203001X", "H02,李红梅,女,1966-04-08,"]
    (tmp_path / "health.csv").write_text("\n".join([BAD_HEADER, *good]) + "\n", encoding="utf-8")
    columns = BAD_COLUMNS
    config = write_yaml(
        {
            "sources": {
                "police": {
                    "path": "police.csv",
                    "record_id": "登记编号",
                    "encoding": "gb18030",
                    "columns": columns,
                },
                "health": {"path": "health.csv", "record_id": "登记编号", "columns": columns},
            },
            "model": {"u_sample_pairs": 1000},
            "spark": {"shuffle_partitions": 2},
        }
    )
    found = _both_engines_setting_rows_aside(config, tmp_path)
    (local, local_bad, local_ids), (spark, spark_bad, spark_ids) = found["local"], found["spark"]
    assert list(spark_bad.columns) == list(schema.REJECT_COLUMNS)
    lines = spark_bad[schema.REJECT_LINE].astype(int)
    assert dict(zip(lines, spark_bad[schema.REJECT_REASON], strict=True)) == BAD_EXPECTED
    raw = dict(zip(lines, spark_bad[schema.REJECT_RAW], strict=True))
    assert raw[3] == BAD_LINES[1] and raw[5] == BAD_LINES[3] and raw[9] == BAD_LINES[7]
    pd.testing.assert_frame_equal(spark_bad, local_bad)
    for key in ("bad_rows", "bad_rows_per_source", "bad_rows_file", "records"):
        assert key in spark
    assert spark["bad_rows"] == local["bad_rows"] == len(BAD_EXPECTED)
    assert spark["bad_rows_per_source"] == local["bad_rows_per_source"] == {"police": 6}
    assert spark["records"] == local["records"] == len(BAD_LINES) - 6 + len(good)
    # nothing lost: each data record of police.csv is in identities.csv or the bad-rows file
    police = spark_ids[spark_ids[schema.SOURCE] == "police"]
    assert sorted(police[schema.RECORD_ID]) == ["R01", "R03", "R04"]
    assert len(police) + len(spark_bad) == len(BAD_LINES)
    key = [schema.SOURCE, schema.RECORD_ID]
    assert spark_ids.sort_values(key)[key].equals(local_ids.sort_values(key)[key])


def test_spark_sets_bad_parquet_rows_aside_as_the_local_reader(spark, tmp_path, write_yaml):
    from linkage.io import RejectedRows
    from linkage.spark.engine import read_sources_spark

    pd.DataFrame(
        {
            "编号": ["a", None, "b", "a", "2.5E+17", "c"],
            "姓名": ["甲", "乙", "丙", "丁", "戊", "己"],
        }
    ).to_parquet(tmp_path / "bad.parquet", index=False)
    config = load_config(
        write_yaml({"sources": {"s": {"path": "bad.parquet", "record_id": "编号", "columns": {}}}})
    )
    aside_spark, aside_local = RejectedRows(), RejectedRows()
    kept = read_sources_spark(spark, config, aside_spark).toPandas()
    read_sources(config, rejected=aside_local)
    assert sorted(kept[schema.RECORD_ID]) == ["b", "c"]
    pd.testing.assert_frame_equal(aside_spark.frame(), aside_local.frame())
    assert list(aside_spark.frame()[schema.REJECT_LINE]) == [1, 2, 4, 5]


# ----------------------------------------------------------------------------- stable ids


def test_stable_ids_follow_the_local_assignment_rules(spark, caplog):
    from linkage.spark.engine import _LABEL, stable_ids_spark

    # current clusters: {a1,a2,a3} {b1} {c1,c2} {d1}
    current = pd.DataFrame(
        {
            schema.ROW: range(7),
            schema.SOURCE: ["s"] * 7,
            schema.RECORD_ID: ["a1", "a2", "a3", "b1", "c1", "c2", "d1"],
            _LABEL: [0, 0, 0, 3, 4, 4, 6],
            schema.IDENTITY_ID: ["IDA", "IDA", "IDA", "IDB", "IDC", "IDC", "IDD"],
        }
    )
    # previous: P1 held a1,a2 and b1 (split: the larger part {a..} keeps P1);
    # c1 and c2 were P3 and P2 (merge: one of them survives, by the local rule's order)
    previous = pd.DataFrame(
        {
            schema.SOURCE: ["s"] * 5,
            schema.RECORD_ID: ["a1", "a2", "b1", "c1", "c2"],
            schema.IDENTITY_ID: ["P1", "P1", "P1", "P3", "P2"],
        }
    )
    with caplog.at_level(logging.INFO, logger="linkage.identity"):
        got = (
            stable_ids_spark(spark, spark.createDataFrame(current), previous)
            .toPandas()
            .sort_values(schema.ROW)
        )
    # the log line counts the 3 clusters sharing records with P1-P3 and says so: the run
    # has 4
    line = next(r.getMessage() for r in caplog.records if "stable ids" in r.getMessage())
    assert line.startswith("stable ids: 3 clusters sharing a record with a previous identity")
    known = pd.DataFrame({schema.IDENTITY_ID: ["P1", "P2", "P3"], "status": "active"})
    known["created_run"] = 0
    expected = assign_stable_ids(
        current.rename(columns={_LABEL: CLUSTER})[[schema.SOURCE, schema.RECORD_ID, CLUSTER]],
        previous,
        known,
        run_id=1,
    ).identity_ids
    ids = got[schema.IDENTITY_ID].tolist()
    assert ids[:3] == ["P1"] * 3  # the larger part keeps the id
    assert ids[3] != "P1"  # b1 left P1: it gets a fresh id
    assert ids[4] == ids[5] and ids[4] in {"P2", "P3"}
    assert ids[6] == "IDD"  # untouched clusters keep their fresh id
    assert ids[:6] == list(expected[:6])


# ----------------------------------------------------------------------------- stable ids across runs


def _write_config(folder: Path, **changes: Any) -> Path:
    config = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    config.update(changes)
    path = folder / "run_stable.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _clusters(identities: pd.DataFrame) -> dict[str, frozenset[str]]:
    key = identities[schema.SOURCE] + "/" + identities[schema.RECORD_ID]
    return {str(i): frozenset(g) for i, g in key.groupby(identities[schema.IDENTITY_ID])}


# Spark jobs of a small run's cluster stage: 13 on a 600-record run (62 while adaptive
# execution made every shuffle of components, suspect components and naming a job)
CLUSTER_JOBS = 20


@pytest.fixture(scope="module")
def chain(spark, tmp_path_factory) -> dict[str, Any]:
    """Run 1 on the registries less their last 15% of rows; run 2 on all of them with run 1's
    identities as ``previous`` (and run 1's model, so only the extra records change it)."""
    from linkage.io import read_raw
    from linkage.spark.engine import run_spark

    full = tmp_path_factory.mktemp("full")
    generate(120, seed=7, output=full)
    part = tmp_path_factory.mktemp("part")
    shutil.copytree(full, part, dirs_exist_ok=True)
    for cfg in load_config(part / "run.yaml").sources.values():
        frame = read_raw(cfg)
        frame.iloc[: int(len(frame) * 0.85)].to_csv(cfg.path, index=False, encoding=cfg.encoding)
    key = b"one key for the chain of runs"
    out1, out2 = tmp_path_factory.mktemp("run1"), tmp_path_factory.mktemp("run2")
    # the Spark jobs of run 1's cluster stage (its job group), by id: older runs' jobs
    # that Spark's status store lets go cannot change the difference
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup("cluster"))
    run_spark(
        load_config(_write_config(part, model={"u_sample_pairs": 20_000})),
        out1,
        spark=spark,
        id_key=key,
    )
    cluster_jobs = len(set(tracker.getJobIdsForGroup("cluster")) - before)
    model = {"load": str(out1 / "model.json")}
    run_spark(
        load_config(_write_config(full, model=model)),
        out2,
        spark=spark,
        id_key=key,
        previous=out1 / "identities.csv",
    )
    read = lambda out: pd.read_csv(out / "identities.csv", dtype=str)  # noqa: E731
    return {
        "full": full,
        "model": model,
        "key": key,
        "runs": [read(out1), read(out2)],
        "cluster_jobs": cluster_jobs,
    }


def test_spark_clustering_is_a_few_jobs_not_one_per_shuffle(chain):
    """The cluster stage (hold-out of siblings, components, suspect components, reclustering,
    naming) runs without adaptive execution, which made each shuffle a Spark job of its own:
    on a small run each job's fixed cost, not the records, is the stage's time."""
    assert 0 < chain["cluster_jobs"] <= CLUSTER_JOBS, chain["cluster_jobs"]


def test_large_runs_cluster_with_adaptive_execution_into_the_same_identities(
    spark, chain, tmp_path, monkeypatch
):
    """From ``ADAPTIVE_CLUSTER_MIN`` records the cluster stage keeps adaptive execution on
    (cheaper at 48,906 and 299,428 records); the partition of the records is the same."""
    from linkage.spark import engine

    monkeypatch.setattr(engine, "ADAPTIVE_CLUSTER_MIN", 0)
    out = tmp_path / "adaptive"
    engine.run_spark(
        load_config(_write_config(chain["full"], model=chain["model"])),
        out,
        spark=spark,
        id_key=chain["key"],
    )

    def partition(ids: pd.DataFrame) -> set[frozenset]:
        keys = ids[schema.SOURCE] + ":" + ids[schema.RECORD_ID]
        return {frozenset(g) for _, g in keys.groupby(ids[schema.IDENTITY_ID])}

    adaptive = pd.read_csv(out / "identities.csv", dtype=str)
    assert partition(adaptive) == partition(chain["runs"][1])


def test_a_second_spark_run_with_extra_records_keeps_the_ids(chain):
    first, second = chain["runs"]
    assert len(second) > len(first)
    assert set(first[schema.CREATED_RUN]) == {"1"}
    before, after = _clusters(first), _clusters(second)
    id_of = dict(
        zip(second[schema.SOURCE] + "/" + second[schema.RECORD_ID], second[schema.IDENTITY_ID])
    )
    old_keys = set().union(*before.values())
    unchanged = grown = 0
    for old_id, members in before.items():
        new_ids = {id_of[k] for k in members}
        if len(new_ids) != 1:
            continue  # split by run 2
        new_id = new_ids.pop()
        if after[new_id] & old_keys != members:
            continue  # merged with other run-1 records
        unchanged += 1
        assert new_id == old_id  # the same run-1 records: the same id
        grown += len(after[new_id]) > len(members)
    # the model is run 1's, so nearly every run-1 cluster keeps its shape; some gain records
    assert unchanged >= 0.95 * len(before)
    assert grown > 0
    created = second.groupby(schema.IDENTITY_ID)[schema.CREATED_RUN].first()
    assert set(created[created.index.isin(before)]) == {"1"}
    assert set(created[~created.index.isin(before)]) == {"2"}


def test_spark_runs_keep_the_oldest_id_on_a_merge_and_the_larger_part_on_a_split(
    chain, spark, tmp_path
):
    from linkage.spark.engine import run_spark

    second = chain["runs"][1].copy()
    clusters = _clusters(second)
    by_size = sorted(clusters, key=lambda i: (-len(clusters[i]), i))
    merged, big, small = by_size[0], by_size[1], by_size[-1]
    assert len(clusters[merged]) >= 3 and len(clusters[big]) > len(clusters[small])
    # previous ids as if run 2 had split `merged` (one record kept the older id) and joined
    # `big` and `small` into one identity
    rows = second[schema.IDENTITY_ID]
    first_of_merged = second.index[rows == merged][0]
    second.loc[rows == merged, [schema.IDENTITY_ID, schema.CREATED_RUN]] = ["IDNEWER", "2"]
    second.loc[first_of_merged, [schema.IDENTITY_ID, schema.CREATED_RUN]] = ["IDOLDER", "1"]
    second.loc[rows.isin([big, small]), [schema.IDENTITY_ID, schema.CREATED_RUN]] = ["IDSPLIT", "1"]
    previous = tmp_path / "previous.csv"
    second.to_csv(previous, index=False)
    out = tmp_path / "run3"
    run_spark(
        load_config(_write_config(chain["full"], model=chain["model"])),
        out,
        spark=spark,
        id_key=chain["key"],
        previous=previous,
    )
    third = pd.read_csv(out / "identities.csv", dtype=str)
    now = _clusters(third)
    assert set(now.values()) == set(clusters.values())  # the same records and model
    # merge: the oldest id wins, though the newer one held more of the records
    assert now["IDOLDER"] == clusters[merged] and "IDNEWER" not in now
    # split: the larger part keeps the id, the smaller one gets a fresh id from this run
    assert now["IDSPLIT"] == clusters[big]
    fresh = next(i for i, members in now.items() if members == clusters[small])
    assert fresh not in set(second[schema.IDENTITY_ID])
    created = third.groupby(schema.IDENTITY_ID)[schema.CREATED_RUN].first()
    assert created["IDOLDER"] == "1" and created["IDSPLIT"] == "1" and created[fresh] == "3"
    # every other identity keeps its id and age
    for old_id in set(clusters) - {merged, big, small}:
        assert now[old_id] == clusters[old_id]
        assert (
            created[old_id]
            == second.loc[second[schema.IDENTITY_ID] == old_id, schema.CREATED_RUN].iloc[0]
        )


def test_checkpoint_counts_are_exact_and_take_no_jobs_of_their_own(spark):
    from pyspark.sql import functions as F

    from linkage.spark.engine import checkpoint_counting

    frame = spark.range(1000).select((F.col("id") % 7).alias("k"), F.col("id"))
    grouped = frame.groupBy("k").agg(F.count("*").alias("n"))
    (kept, counted), jobs = _jobs_of(
        spark,
        "counted",
        lambda: checkpoint_counting(grouped, rows=F.lit(True), big=F.col("n") > 142),
    )
    _, plain = _jobs_of(spark, "plain", lambda: grouped.localCheckpoint())
    assert counted == {"rows": 7, "big": 6}  # k = 0..5 hold 143 ids, k = 6 holds 142
    assert jobs == plain
    assert sorted(kept.toPandas()["n"]) == [142] + [143] * 6
    # nothing to count: zeros, not a wait for metrics that never come
    empty = spark.createDataFrame([], "x long")
    assert checkpoint_counting(empty, rows=F.lit(True))[1] == {"rows": 0}
    none = frame.where(F.col("id") < 0).groupBy("k").count()
    assert checkpoint_counting(none, rows=F.lit(True))[1] == {"rows": 0}


# ----------------------------------------------------------------------------- compare


def test_compare_shuffles_the_records_not_again_once_laid_out_by_row(spark):
    from pyspark.sql import functions as F

    from linkage.spark.engine import compare_spark, partition_by_row

    records = spark.range(2000).select(
        F.col("id").alias(schema.ROW), (F.col("id") % 7).cast("string").alias("name")
    )
    pairs = spark.range(5000).select(
        (F.col("id") % 2000).alias(schema.ROW_L), ((F.col("id") * 7 + 1) % 2000).alias(schema.ROW_R)
    )
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    key = "spark.sql.autoBroadcastJoinThreshold"
    threshold = spark.conf.get(key)
    spark.conf.set(key, "-1")  # frames this small would be broadcast, shuffling nothing
    try:
        results, exchanges = [], []
        for prepared in (records.localCheckpoint(), partition_by_row(records, partitions)):
            out = compare_spark(pairs, prepared, [], ["name"], {}, [])
            plan = out._jdf.queryExecution().executedPlan().toString()
            exchanges.append(plan.count("Exchange hashpartitioning"))
            results.append(out.toPandas().sort_values([schema.ROW_L, schema.ROW_R]))
    finally:
        spark.conf.set(key, threshold)
    # two joins: the pairs are shuffled for each, the records once each as well unless laid out
    assert exchanges == [4, 2]
    assert len(results[1]) == 5000
    pd.testing.assert_frame_equal(
        results[0].reset_index(drop=True), results[1].reset_index(drop=True)
    )


# ----------------------------------------------------------------------------- blocking


def _key_frame(seed: int, n: int = 150) -> pd.DataFrame:
    """A key table of ``n`` records in two sources: a skewed key k1, a key k2 with nulls, k3."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            schema.ROW: np.arange(n, dtype=np.int64),
            schema.SOURCE: rng.choice(["a", "b"], n),
            "k1": rng.choice(["x", "y", "z"], n, p=[0.6, 0.3, 0.1]),
            "k2": rng.choice(np.array(["m", "n", None], dtype=object), n),
            "k3": rng.choice(["1", "2", "3", "4"], n),
        }
    )


def _blocked_by_both(spark, frame: pd.DataFrame, settings) -> dict[str, Any]:
    """``frame``'s key table blocked by the local engine and by ``block_spark`` (3 buckets):
    the local pairs and report, Spark's report, sorted pairs, rule names and key table."""
    from types import SimpleNamespace

    from linkage.blocking import block, key_table
    from linkage.spark.engine import block_spark

    local_report: list[dict] = []
    local = block(frame, settings, report=local_report)
    keys = spark.createDataFrame(key_table(frame, settings.rules, settings.refine_keys))
    spark_report: list[dict] = []
    pairs, names = block_spark(
        keys, SimpleNamespace(blocking=settings), buckets=3, report=spark_report
    )
    got = pairs.toPandas().sort_values([schema.ROW_L, schema.ROW_R], ignore_index=True)
    return {
        "local": local,
        "local_report": local_report,
        "spark_report": spark_report,
        "got": got,
        "names": names,
        "keys": keys,
    }


def _assert_same_pairs(got: pd.DataFrame, names: list[str], local: pd.DataFrame) -> None:
    """Spark's sorted pairs and their first rules equal the local engine's."""
    from linkage.spark.engine import _RULE_INDEX

    assert got[schema.ROW_L].tolist() == local[schema.ROW_L].tolist()
    assert got[schema.ROW_R].tolist() == local[schema.ROW_R].tolist()
    assert [names[i] for i in got[_RULE_INDEX]] == local[schema.RULE].astype(str).tolist()


def test_spark_blocking_refines_skips_and_refuses_like_the_local_engine(spark):
    from types import SimpleNamespace

    from linkage.blocking import BlockingRule, BlockingSettings
    from linkage.errors import ConfigError
    from linkage.spark.engine import block_spark

    rules = [BlockingRule(name="a", keys=["k1"]), BlockingRule(name="b", keys=["k2", "k3"])]
    settings = BlockingSettings(
        rules=rules, refine_block_size=8, max_block_size=12, refine_keys=["k2", "k3"]
    )
    both = _blocked_by_both(spark, _key_frame(seed=3), settings)
    local_report = both["local_report"]
    assert both["spark_report"] == local_report
    assert local_report[0]["blocks_refined"] > 0 and local_report[0]["blocks_skipped"] > 0
    _assert_same_pairs(both["got"], both["names"], both["local"])
    # over the pair budget with over_budget: refuse, nothing is joined
    tight = settings.model_copy(update={"pair_budget": 10, "over_budget": "refuse"})
    with pytest.raises(ConfigError, match="pair_budget"):
        block_spark(both["keys"], SimpleNamespace(blocking=tight), buckets=3)


@pytest.mark.parametrize("link_type", ["link_and_dedupe", "link_only", "dedupe_only"])
def test_spark_blocking_report_equals_the_local_one_for_every_link_type(spark, link_type):
    """The planner's report rows, added up over buckets of blocks, equal the local engine's
    for every link type: with small blocks over ``warn_block_size``, a rule whose blocks
    are all refined, one with none refined and one no record has keys for."""
    from linkage.blocking import BlockingRule, BlockingSettings

    frame = _key_frame(seed=11, n=200)
    frame["none"] = None
    rules = [
        BlockingRule(name="all_big", keys=["k1"]),
        BlockingRule(name="mixed", keys=["k2", "k3"], refine_block_size=20),
        BlockingRule(name="small", keys=["k1", "k2", "k3"], refine_block_size=40),
        BlockingRule(name="empty", keys=["none"]),
    ]
    settings = BlockingSettings(
        rules=rules,
        link_type=link_type,
        refine_block_size=8,
        warn_block_size=6,
        max_block_size=50,
        refine_keys=["k2", "k3"],
    )
    both = _blocked_by_both(spark, frame, settings)
    assert both["spark_report"] == both["local_report"]
    by_name = {r["rule"]: r for r in both["local_report"]}
    assert by_name["mixed"]["blocks_refined"] > 0 and by_name["small"]["blocks_refined"] == 0
    assert by_name["small"]["blocks_over_warning"] > 0 and by_name["empty"]["records_with_key"] == 0
    _assert_same_pairs(both["got"], both["names"], both["local"])


def test_spark_blocking_sorts_its_self_join_by_the_block_hash_first(spark):
    """The self-join's sort compares an 8-byte prefix of its first key before whole rows:
    the block's hash leads, and the rule index and text keys follow, so the pairs are the
    local engine's whatever the hash (a collision is settled by the text keys)."""
    from types import SimpleNamespace

    from linkage.blocking import BlockingRule, BlockingSettings, block, key_table
    from linkage.spark.engine import _BLOCK_HASH, _RULE_INDEX, block_spark

    frame = _key_frame(seed=7)
    rules = [BlockingRule(name="a", keys=["k1", "k3"]), BlockingRule(name="b", keys=["k2"])]
    settings = BlockingSettings(rules=rules)
    keys = spark.createDataFrame(key_table(frame, rules, settings.refine_keys))
    before = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")  # a sort-merge join
    try:
        pairs, _ = block_spark(keys, SimpleNamespace(blocking=settings), buckets=3)
        plan = pairs._jdf.queryExecution().executedPlan().toString()
        got = pairs.toPandas().sort_values([schema.ROW_L, schema.ROW_R], ignore_index=True)
    finally:
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", before)
    join = next(line for line in plan.splitlines() if "SortMergeJoin" in line)
    left_keys = join.split("[", 1)[1].split("]", 1)[0].split(", ")
    assert left_keys[0].startswith(_BLOCK_HASH), join
    assert any(k.startswith(_RULE_INDEX) for k in left_keys), join
    assert any(k.startswith("__k0") for k in left_keys), join
    local = block(frame, settings)
    assert got[schema.ROW_L].tolist() == local[schema.ROW_L].tolist()
    assert got[schema.ROW_R].tolist() == local[schema.ROW_R].tolist()


def test_spark_blocking_jobs_do_not_grow_with_the_rules(spark):
    """Every rule's records are counted by one group-by and joined by one self-join, so
    four more rules (none refined) run no more Spark jobs; a join per rule cost about three
    jobs each. The pairs and their first rules still equal the local engine's."""
    from types import SimpleNamespace

    from linkage.blocking import BlockingRule, BlockingSettings, block, key_table
    from linkage.spark.engine import block_spark

    frame = _key_frame(seed=5)
    few = [BlockingRule(name="a", keys=["k1"]), BlockingRule(name="b", keys=["k2", "k3"])]
    # only rule a's blocks are over refine_block_size; the permuted copies find only pairs
    # an earlier rule found, so the de-duplication keeps the first rule
    more = [["k1", "k2", "k3"], ["k3", "k2", "k1"], ["k2", "k1", "k3"], ["k3", "k1", "k2"]]
    many = few + [BlockingRule(name=f"all{j}", keys=keys) for j, keys in enumerate(more)]
    jobs = {}
    for rules in (few, many):
        settings = BlockingSettings(
            rules=rules, refine_block_size=30, max_block_size=60, refine_keys=["k2", "k3"]
        )
        local = block(frame, settings)
        keys = spark.createDataFrame(key_table(frame, rules, settings.refine_keys))
        keys = keys.localCheckpoint()

        def pairs_of(keys=keys, settings=settings):
            pairs, names = block_spark(keys, SimpleNamespace(blocking=settings), buckets=3)
            return pairs.localCheckpoint(), names

        (pairs, names), jobs[len(rules)] = _jobs_of(spark, f"block_{len(rules)}", pairs_of)
        got = pairs.toPandas().sort_values([schema.ROW_L, schema.ROW_R], ignore_index=True)
        _assert_same_pairs(got, names, local)
        report = []
        block(frame, settings, report=report)
        assert [r["blocks_refined"] > 0 for r in report] == [True] + [False] * (len(rules) - 1)
    assert jobs[len(many)] <= jobs[len(few)], jobs


def test_spark_blocking_keys_read_only_the_columns_they_need(spark):
    """The key table equals the local ``key_table``, and only rid, source and the columns
    the rules and refinement keys read go to the Python workers (a standardized record's
    other columns crossing through Arrow were most of that step's cost)."""
    from linkage.blocking import BlockingSettings, key_table
    from linkage.spark.engine import blocking_keys_spark
    from linkage.standardize.combine import standardize

    records = standardize(
        pd.DataFrame(
            {
                schema.SOURCE: ["a", "a", "b"],
                schema.RECORD_ID: ["1", "2", "3"],
                schema.NAME: ["张三", "李四", "张三"],
                schema.BIRTH_DATE: ["1990-03-07", "1985-01-02", "1990-03-07"],
                schema.ID_NUMBER: ["110101199003071234", None, None],
                schema.PHONE: ["13800138000", None, "13800138000"],
                schema.CURRENT_ADDRESS: ["北京市朝阳区", "上海市", "北京市朝阳区"],
            }
        )
    )
    records[schema.ROW] = np.arange(len(records), dtype=np.int64)
    settings = BlockingSettings(refine_keys=["gender", "birth_year"])
    local = key_table(records, settings.rules, settings.all_refine_keys())
    frame = spark.createDataFrame(records.astype(object).where(records.notna(), None))
    keys = blocking_keys_spark(frame, settings)
    got = keys.toPandas().sort_values(schema.ROW, ignore_index=True)[list(local.columns)]
    assert got.astype(object).where(got.notna(), None).to_dict("list") == local.astype(
        object
    ).where(local.notna(), None).to_dict("list")
    # the Python function's arguments: the columns sent to the workers
    plan = keys._jdf.queryExecution().optimizedPlan().toString()
    call = next(line for line in plan.splitlines() if "MapInPandas" in line)
    sent = call.split("(", 1)[1].split(")", 1)[0].count("#")
    assert 2 <= sent < len(records.columns) - 3, (sent, len(records.columns))


# ----------------------------------------------------------------------------- households


@pytest.fixture(scope="module")
def households(tmp_path_factory) -> Path:
    """Registries of the independent generator's household-hard profile: twins, siblings
    named one character apart and guardians' IDs on children's health records."""
    from benchmarks.independent.generate import generate as generate_independent

    folder = tmp_path_factory.mktemp("households")
    generate_independent(1500, 3, folder, profile="household-hard")
    config = yaml.safe_load((folder / "run.yaml").read_text(encoding="utf-8"))
    config["model"] = {**config.get("model", {}), "u_sample_pairs": 50_000}
    (folder / "run.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return folder


def test_spark_holds_out_the_pairs_the_local_engine_holds_out(spark, households):
    """``hold_out_siblings_spark`` drops exactly the pairs ``cluster.sibling_pairs`` masks:
    twins and siblings, and a guardian and a child sharing the guardian's ID."""
    from linkage.cluster import guardian_pairs, sibling_pairs
    from linkage.linker import Linker
    from linkage.spark.engine import hold_out_siblings_spark

    result = Linker.from_yaml(households / "run.yaml").run()
    records, pairs = result.records, result.pairs.reset_index(drop=True)
    guardians = guardian_pairs(records, pairs)
    held = sibling_pairs(records, pairs)
    # the data has both kinds, and guardian pairs the twin rule alone would keep
    assert guardians.sum() >= 2 and (held & ~guardians).sum() >= 20
    columns = [
        schema.ROW,
        schema.name_col(schema.NAME, "clean"),
        schema.name_col(schema.NAME, "given"),
        schema.BIRTH_DATE_STD,
    ]
    spark_records = spark.createDataFrame(
        records[columns[1:]]
        .astype(object)
        .where(records[columns[1:]].notna(), None)
        .assign(**{schema.ROW: np.arange(len(records), dtype=np.int64)})[columns]
    )
    kept_cols = [schema.ROW_L, schema.ROW_R, "gamma_name", "gamma_birth_date", "gamma_id"]
    kept_cols += ["gamma_gender"]  # a dropped given-name character between a boy and a girl
    spark_pairs = spark.createDataFrame(pairs[kept_cols].astype(np.int64))
    kept = hold_out_siblings_spark(spark_records, spark_pairs).toPandas()
    spark_kept = set(zip(kept[schema.ROW_L], kept[schema.ROW_R]))
    local_kept = set(zip(pairs[schema.ROW_L][~held], pairs[schema.ROW_R][~held]))
    assert spark_kept == local_kept


def test_engines_give_the_same_identities_on_households(households, tmp_path):
    """Both engines through the CLI on household data (twins, siblings, guardians' IDs):
    the same partition and the same identity ids."""
    outputs = {}
    patch = pytest.MonkeyPatch()
    patch.setenv("LINKAGE_ID_KEY", "one key for both engines' runs")
    for engine in ENGINES:
        out = tmp_path / engine
        args = ["run", str(households / "run.yaml"), "-o", str(out), "--engine", engine, "-q"]
        if engine == "spark":
            args += ["--spark-master", "local[2]"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, done.output
        outputs[engine] = pd.read_csv(out / "identities.csv", dtype=str).sort_values(
            [schema.SOURCE, schema.RECORD_ID], ignore_index=True
        )
    patch.undo()
    local, spark = outputs["local"], outputs["spark"]
    assert _pairs_of(local) == _pairs_of(spark)
    assert local[schema.IDENTITY_ID].equals(spark[schema.IDENTITY_ID])


# ------------------------------------------------------------- the reader's refusals
def _one_source(write_yaml, path: str, **extra: Any) -> Path:
    source = {"path": path, "record_id": "编号", "columns": {"姓名": "name"}, **extra}
    return write_yaml({"sources": {"s": source}, "spark": {"shuffle_partitions": 2}})


def _refusals(config: Path) -> dict[str, str]:
    """Each engine's error for a config both must refuse before linking."""
    from linkage.spark.engine import read_sources_spark
    from linkage.spark.session import get_session

    got = {}
    with pytest.raises(InputError) as local:
        read_sources(load_config(config))
    got["local"] = str(local.value)
    with pytest.raises(InputError) as remote:
        read_sources_spark(get_session("local[2]"), load_config(config))
    got["spark"] = str(remote.value)
    return got


def test_spark_refuses_bytes_its_encoding_cannot_decode_as_the_local_reader(
    spark, tmp_path, write_yaml, monkeypatch
):
    """Spark's CSV reader puts U+FFFD for bytes it cannot decode and goes on: a name from
    another encoding would be linked as garbage. The run stops with the local error."""
    head = "编号,姓名\nA1,张伟\n".encode()
    (tmp_path / "mixed.csv").write_bytes(head + b"A2," + "李娜".encode("gbk") + b"\nA3,x\n")
    got = _refusals(_one_source(write_yaml, "mixed.csv", encoding="utf-8"))
    assert "mixed.csv, line 3: cannot be decoded as utf-8 (byte 27)" in got["spark"], got
    assert got["spark"] == got["local"]
    # auto: the head Spark's charset is chosen from holds the line (UTF-8 fails at byte 27)
    got = _refusals(_one_source(write_yaml, "mixed.csv", encoding="auto"))
    assert "line 3, byte 27" in got["spark"] and got["spark"] == got["local"]
    # auto, the line past that head (16 bytes here, 4 MB in a run): Spark reads UTF-8, and
    # the U+FFFD it puts sends the driver to the file
    from linkage.spark import engine

    monkeypatch.setattr(engine, "_SNIFF_BYTES", 16)
    got = _refusals(_one_source(write_yaml, "mixed.csv", encoding="auto"))
    assert "mixed.csv, line 3: cannot be decoded as utf-8 (byte 27)" in got["spark"], got
    # a whole file in GBK read as UTF-8: the header cannot be decoded, said so (not "mapped
    # columns not in the file")
    (tmp_path / "gbk.csv").write_bytes("编号,姓名\nA1,张伟\n".encode("gbk"))
    got = _refusals(_one_source(write_yaml, "gbk.csv", encoding="utf-8"))
    assert "gbk.csv, line 1: cannot be decoded as utf-8 (byte 0)" in got["spark"], got
    assert got["spark"] == got["local"]


def test_spark_keeps_a_u_fffd_the_file_really_holds(spark, tmp_path, write_yaml):
    """A U+FFFD written in a valid UTF-8 file is a character, not a decoding failure."""
    from linkage.spark.engine import read_sources_spark

    (tmp_path / "ok.csv").write_text("编号,姓名\nA1,张\ufffd\nA2,李娜\n", encoding="utf-8")
    config = load_config(_one_source(write_yaml, "ok.csv", encoding="utf-8"))
    got = read_sources_spark(spark, config).toPandas().sort_values(schema.RECORD_ID)
    assert got[schema.NAME].tolist() == ["张\ufffd", "李娜"]


def test_spark_refuses_empty_files_and_folders_as_the_local_reader(spark, tmp_path, write_yaml):
    (tmp_path / "empty.csv").write_bytes(b"")
    got = _refusals(_one_source(write_yaml, "empty.csv"))
    assert got["spark"] == got["local"] and "file is empty (no header row)" in got["spark"]
    # Spark would read a folder's part files as one source; each source is one file
    (tmp_path / "parts.csv").mkdir()
    (tmp_path / "parts.csv" / "a.csv").write_text("编号,姓名\nA1,张伟\n", encoding="utf-8")
    got = _refusals(_one_source(write_yaml, "parts.csv"))
    assert got["spark"] == got["local"] and "is a folder, expected a file" in got["spark"]


def test_spark_names_the_bad_rows_of_every_source_in_one_error(spark, tmp_path, write_yaml):
    (tmp_path / "a.csv").write_text("编号,姓名\nA1,张伟\nA1,李娜\n", encoding="utf-8")
    (tmp_path / "b.csv").write_bytes("编号,姓名\nB1,王芳\nB2,赵,多\n".encode("gb18030"))
    one = {"record_id": "编号", "columns": {"姓名": "name"}}
    config = write_yaml(
        {
            "sources": {
                "a": {"path": "a.csv", **one},
                "b": {"path": "b.csv", "encoding": "gb18030", **one},
            }
        }
    )
    got = _refusals(config)
    text = got["spark"]
    assert text.startswith("2 sources cannot be used as given"), text
    assert text.index("a.csv") < text.index("b.csv")
    assert "'A1' (lines 2, 3)" in text and "line 3 has 3" in text
    assert text == got["local"]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_spark_refuses_a_source_with_no_records_as_the_local_engine(tmp_path, write_yaml, kind):
    """A header and no data rows is almost always an upstream failure: both engines stop
    with exit 2 naming the source, rather than link without it."""
    generate(40, seed=3, output=tmp_path)
    run = yaml.safe_load((tmp_path / "run.yaml").read_text(encoding="utf-8"))
    name = next(iter(run["sources"]))
    source = run["sources"][name]
    path = tmp_path / source["path"]
    header = pd.read_csv(path, dtype=str, nrows=0, encoding=source.get("encoding", "utf-8"))
    if kind == "csv":
        header.to_csv(tmp_path / "empty.csv", index=False)
    else:
        header.to_parquet(tmp_path / "empty.parquet", index=False)
    source["path"] = f"empty.{kind}"
    source.pop("encoding", None)
    config = write_yaml(run, name="empty.yaml")
    for engine in ENGINES:
        done = CliRunner().invoke(
            app, ["run", str(config), "-o", str(tmp_path / engine), "--engine", engine, "-q"]
        )
        assert done.exit_code == 2, (engine, done.output)
        assert f"source '{name}' has 0 records (it has a header and no data rows)" in done.output
        assert not (tmp_path / engine / "identities.csv").exists()


def test_spark_sets_bad_excel_rows_aside_as_the_local_engine(tmp_path, write_yaml):
    """``--bad-rows`` covers Excel sources on Spark too: the same rows set aside, none lost."""
    rows = [["A1", "张伟"], ["A2", "李娜"], ["A2", "王芳"], [None, "赵敏"], ["A5", "孙丽"]]
    pd.DataFrame(rows, columns=["编号", "姓名"]).to_excel(tmp_path / "s.xlsx", index=False)
    config = write_yaml(
        {
            "sources": {"s": {"path": "s.xlsx", "record_id": "编号", "columns": {"姓名": "name"}}},
            "model": {"u_sample_pairs": 1000},
            "spark": {"shuffle_partitions": 2},
        }
    )
    found = _both_engines_setting_rows_aside(config, tmp_path)
    (_, local_bad, local_ids), (_, spark_bad, spark_ids) = found["local"], found["spark"]
    pd.testing.assert_frame_equal(spark_bad, local_bad)
    assert len(spark_bad) == 3  # both A2 rows and the row without an id
    kept = [sorted(ids[schema.RECORD_ID]) for ids in (spark_ids, local_ids)]
    assert kept[0] == kept[1] == ["A1", "A5"]


def test_spark_run_checks_its_paths_and_options_before_spark_starts(
    tmp_path, write_yaml, monkeypatch
):
    """A missing file, --resume (a Spark run keeps no checkpoints) and --spark-master without
    the Spark engine: exit 2 in a moment, before any JVM would start."""
    import linkage.spark.engine as engine

    def no_spark(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Spark started")

    monkeypatch.setattr(engine, "get_session", no_spark)
    generate(20, seed=4, output=tmp_path)
    config = str(tmp_path / "run.yaml")
    missing = _one_source(write_yaml, "nowhere.csv")
    cases = [
        (["run", str(missing), "--engine", "spark"], "nowhere.csv: file not found"),
        (["run", config, "--engine", "spark", "--resume"], "--resume is for the local engine"),
        (["run", config, "--spark-master", "local[2]"], "--spark-master is for --engine spark"),
    ]
    for args, message in cases:
        done = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out"), "-q"])
        assert done.exit_code == 2, (args, done.output)
        assert message in " ".join(done.output.split()), (args, done.output)


@pytest.mark.parametrize(
    ("left", "with_csv", "message"),
    [
        ("golden_records.csv", True, "golden_records.csv is an output of another run"),
        (".work/", True, ".work is an output of another run"),
        ("identities.csv", False, "identities.csv is an output of another run"),
        ("summary.json/", True, "summary.json is a folder where this command writes a file"),
    ],
)
def test_a_spark_run_refuses_a_folder_with_outputs_it_would_not_replace(
    tmp_path, write_yaml, monkeypatch, left, with_csv, message
):
    """A local run's golden_records.csv (Spark writes golden_records.parquet) or checkpoints,
    or an identities.csv a run with ``identities_csv: false`` would leave looking like its
    own: exit 2 before Spark starts, nothing written."""
    import linkage.spark.engine as engine

    def no_spark(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Spark started")

    monkeypatch.setattr(engine, "get_session", no_spark)
    generate(20, seed=4, output=tmp_path / "d")
    run = yaml.safe_load((tmp_path / "d" / "run.yaml").read_text(encoding="utf-8"))
    run["spark"] = {"identities_csv": with_csv}
    config = write_yaml(run, name="d/spark.yaml")  # beside the registries it names
    out = tmp_path / "out"
    if left.endswith("/"):
        (out / left.rstrip("/")).mkdir(parents=True)
    else:
        out.mkdir()
        (out / left).write_text("old", encoding="utf-8")
    before = sorted(p.name for p in out.iterdir())
    done = CliRunner().invoke(app, ["run", str(config), "-o", str(out), "--engine", "spark"])
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split()), done.output
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_run_finding_no_pairs_leaves_no_earlier_model_json(spark, tmp_path, write_yaml):
    """A run that finds no candidate pairs fits no model and writes no model.json: an earlier
    run's model.json in its folder is removed (beside this run's outputs it would pass for
    this run's model), on both engines (``paths.remove_stale_output``, whose test covers the
    model a run loads, which stays). Spark's sibling rule used to fail on such input: a
    batch of names without given-name character counts made untyped columns."""
    header = "登记编号,姓名,性别,出生日期,公民身份号码,现住址"
    # no two share a name, date, id region or district: no blocking rule pairs them; and
    # minority names only, which the sibling rule's given-name character counts skip
    rows = [
        "A1,热依拉·阿不都,女,1990-03-07,110101199003071224,北京市东城区",
        "A2,阿依古丽·吐尔逊,女,1961-11-22,440106196111224428,广州市天河区",
        "A3,买买提·艾力,男,1978-06-30,650102197806301115,乌鲁木齐市天山区",
    ]
    (tmp_path / "police.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    columns = {**BAD_COLUMNS, "现住址": "current_address"}
    source = {"path": "police.csv", "record_id": "登记编号", "columns": columns}
    config = write_yaml({"sources": {"police": source}})
    for engine in ENGINES:
        out = tmp_path / f"out_{engine}"
        out.mkdir()
        (out / "model.json").write_text('{"an": "earlier run\'s model"}', encoding="utf-8")
        args = ["run", str(config), "-o", str(out), "--engine", engine, "--json", "-q"]
        done = CliRunner().invoke(app, args)
        assert done.exit_code == 0, (engine, done.output)
        assert json.loads(done.stdout)["candidate_pairs"] == 0, engine
        assert len(pd.read_csv(out / "identities.csv")) == 3, engine
        assert not (out / "model.json").exists(), engine


# Small inputs a registry export can be, each once through both engines: (header, rows, the
# columns mapped, what both must do: the identities' partition or the error's words)
EDGE_INPUTS = {
    # one record: no random pairs for u (Spark could not make a table of none)
    "one record": (
        "rid,姓名,性别,出生日期,身份证号",
        ["A1,张伟,男,1990-03-07,110101199003070019"],
        {"姓名": "name", "性别": "gender", "出生日期": "birth_date", "身份证号": "id_number"},
        [["A1"]],
    ),
    # a backtick in a header, mapped or passed through as raw.<header> (Spark read it as
    # the start of a quoted name)
    "backtick in headers": (
        "rid,姓`名,出生日期,备注`1",
        ["A1,张伟,1990-03-07,x", "A2,张伟,1990-03-07,y", "A3,李娜,1985-03-07,z"],
        {"姓`名": "name", "出生日期": "birth_date"},
        None,  # whatever the local engine gives (a model of three records links nothing)
    ),
    # a pilot too small to train: exact duplicates, a dot typed two ways, a birth date in two
    # formats; both engines take the reference model's m and u (training.settle_weak_fit)
    "pilot with duplicates": (
        "rid,姓名,性别,出生日期",
        [
            "A1,阿依古丽·吐尔逊,女,1990-01-02",
            "A2,阿依古丽·吐尔逊,女,1990-01-02",
            "A3,买买提•艾力,男,1985-06-01",
            "A4,买买提.艾力,男,1985-06-01",
            "A5,张伟,男,1990年3月7日",
            "A6,张伟,男,19900307",
            "A7,张伟,男,1978-11-11",
        ],
        {"姓名": "name", "性别": "gender", "出生日期": "birth_date"},
        [["A1", "A2"], ["A3", "A4"], ["A5", "A6"], ["A7"]],
    ),
    # a header repeated: the local reader refuses it, Spark renamed the copies and went on
    "repeated header": (
        "rid,姓名,出生日期,备注, 备注",
        ["A1,张伟,1990-03-07,x,y", "A2,李娜,1985-03-07,y,z"],
        {"姓名": "name", "出生日期": "birth_date"},
        "header names a column more than once (after trimming spaces): '备注' in columns 4, 5",
    ),
}


@pytest.mark.parametrize("case", list(EDGE_INPUTS))
def test_engines_do_the_same_with_small_odd_inputs(spark, tmp_path, write_yaml, case):
    """The same partition (every record once) or the same error from both engines."""
    header, rows, columns, expected = EDGE_INPUTS[case]
    partitions, fits = [], []
    (tmp_path / "a.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    source = {"path": "a.csv", "record_id": "rid", "columns": columns}
    config = write_yaml({"sources": {"a": source}, "model": {"u_sample_pairs": 1000}})
    for engine in ENGINES:
        out = tmp_path / f"out_{engine}"
        done = CliRunner().invoke(app, ["run", str(config), "-o", str(out), "--engine", engine])
        if isinstance(expected, str):
            assert done.exit_code == 2, (engine, done.output)
            assert expected in done.output, (engine, done.output)
            assert not (out / "identities.csv").exists(), engine
            continue
        assert done.exit_code == 0, (engine, done.output)
        ids = pd.read_csv(out / "identities.csv", dtype=str)
        assert sorted(ids[schema.RECORD_ID]) == sorted(r.split(",")[0] for r in rows), engine
        groups = ids.groupby(schema.IDENTITY_ID)[schema.RECORD_ID].apply(sorted)
        partitions.append(sorted(groups.tolist()))
        saved = out / "model.json"
        if saved.exists():  # none when no pair was found
            model = json.loads(saved.read_text(encoding="utf-8"))
            fits.append((model["fit"]["weak"], model["fit"]["reference"], model["tf_columns"]))
        else:
            fits.append(None)
    if not isinstance(expected, str):
        assert partitions[0] == partitions[1]
        assert fits[0] == fits[1]  # the same weak fit, reference comparisons and tf
        assert expected is None or partitions[0] == expected


def test_spark_previous_identities_sharing_no_record_or_none(spark, tmp_path):
    """``--previous`` with identities of other records only, or a file of none: every
    identity gets a fresh id of run 1 (Spark could not make a table of no kept ids)."""
    from linkage.spark.engine import run_spark

    generate(40, seed=3, output=tmp_path / "d")
    config = load_config(tmp_path / "d" / "run.yaml")
    others = pd.DataFrame(
        {schema.SOURCE: ["elsewhere"] * 2, schema.RECORD_ID: ["x1", "x2"], "identity_id": "IDX"}
    )
    others.to_csv(tmp_path / "others.csv", index=False)
    others.iloc[:0].to_csv(tmp_path / "none.csv", index=False)
    for previous in ("others.csv", "none.csv"):
        result = run_spark(config, spark=spark, previous=tmp_path / previous)
        ids = result.identities.toPandas()
        assert len(ids) == sum(result.summary["records_per_source"].values()), previous
        assert "IDX" not in set(ids[schema.IDENTITY_ID]), previous
        # no previous id: run 0 for the file's ids, so this run's are run 1
        assert set(ids[schema.CREATED_RUN]) == {1}, previous


def test_ctrl_c_during_a_spark_run_prints_one_line_and_ends_the_jvm(tmp_path):
    """Ctrl-C in the middle of a Spark stage: exit 130 and ``interrupted``, without py4j's
    tracebacks (pyspark's own handler calls the JVM from inside the signal) and without the
    JVM logging the tasks cut off."""
    import signal as signals

    generate(1500, seed=5, output=tmp_path / "d")
    env = {k: v for k, v in os.environ.items() if k not in _java_env()}
    env["SPARK_CONF_DIR"] = str(tmp_path)
    args = [sys.executable, "-m", "linkage.cli", "run", str(tmp_path / "d" / "run.yaml")]
    args += ["-o", str(tmp_path / "out"), "--engine", "spark", "--spark-master", "local[2]"]
    with subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    ) as proc:
        seen = []
        for line in proc.stderr:  # one timed line per stage: Spark is at work by the second
            seen.append(line)
            if "standardizing" in line:
                proc.send_signal(signals.SIGINT)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert any("standardizing" in line for line in seen), seen
    assert code == 130, rest
    assert rest.strip().splitlines()[-1:] == ["interrupted"], rest
    assert "Traceback" not in rest and "ERROR" not in rest, rest
