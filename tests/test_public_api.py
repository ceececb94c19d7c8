import importlib
import subprocess
import sys

import pytest

import linkage


def test_public_surface_is_pinned():
    assert linkage.__all__ == [
        "BlockingRule",
        "BlockingSettings",
        "ConfigError",
        "FellegiSunterModel",
        "InputError",
        "LinkResult",
        "LinkageError",
        "Linker",
        "NotFittedError",
        "RunConfig",
        "STAGES",
        "SourceConfig",
        "StoreError",
        "block",
        "cluster_pairs",
        "compare",
        "config_from_dict",
        "default_comparisons",
        "evaluate",
        "link_records",
        "load_config",
        "merge_records",
        "read_records",
        "read_sources",
        "standardize",
        "train_model",
    ]
    for name in linkage.__all__:
        assert getattr(linkage, name) is not None


# Public sub-modules: their __all__ is their promise; each name must exist.
PUBLIC_MODULES = {
    "linkage.store": ["SCHEMA_VERSION", "TABLES", "Store", "StoreChanges"],
    "linkage.indicators": [
        "FAMILY_PLANNING",
        "HEALTH_FILE",
        "HEALTH_FILE_TARGET",
        "INDICATOR_COLUMNS",
        "MATERNAL_CARE",
        "OVERALL",
        "PERSON_COLUMNS",
        "UNKNOWN_DISTRICT",
        "VACCINATION",
        "VACCINATION_TARGET",
        "below_target",
        "child_vaccination_coverage",
        "coverage_indicators",
        "health_file_coverage",
        "maternal_care_coverage",
        "multi_registry_coverage",
        "person_table",
        "reference_date_of",
    ],
    "linkage.synth": [
        "CORRUPTION_CODES",
        "DEFAULT_RATES",
        "REFERENCE_DATE",
        "SynthResult",
        "generate",
        "write_configs",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_MODULES))
def test_public_module_surface_is_pinned(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC_MODULES[module])
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_error_tree():
    assert issubclass(linkage.ConfigError, linkage.LinkageError)
    assert issubclass(linkage.InputError, linkage.LinkageError)
    assert issubclass(linkage.NotFittedError, linkage.LinkageError)
    assert issubclass(linkage.StoreError, linkage.InputError)
    # as scikit-learn's NotFittedError: code written for its estimators catches ours
    assert issubclass(linkage.NotFittedError, ValueError)
    assert issubclass(linkage.NotFittedError, AttributeError)


def test_not_a_store_raises_store_error(tmp_path):
    import duckdb

    from linkage.store import Store

    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(linkage.StoreError, match="not an identity store"):
        Store.open(path)


def test_import_and_help_stay_light():
    # `import linkage` and `linkage --help` must not load the stages (or pandas)
    code = (
        "import sys, linkage, linkage.cli; "
        "heavy = [m for m in ('pandas', 'duckdb', 'linkage.pipeline') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
