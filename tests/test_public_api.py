import linkage


def test_public_surface_is_pinned():
    assert linkage.__all__ == [
        "BlockingRule",
        "ConfigError",
        "FellegiSunterModel",
        "InputError",
        "LinkResult",
        "LinkageError",
        "Linker",
        "NotFittedError",
        "RunConfig",
        "SourceConfig",
        "block",
        "cluster_pairs",
        "compare",
        "config_from_dict",
        "default_comparisons",
        "evaluate",
        "link_records",
        "load_config",
        "merge_records",
        "read_sources",
        "standardize",
    ]
    for name in linkage.__all__:
        assert getattr(linkage, name) is not None


def test_error_tree():
    assert issubclass(linkage.ConfigError, linkage.LinkageError)
    assert issubclass(linkage.InputError, linkage.LinkageError)
    assert issubclass(linkage.NotFittedError, linkage.LinkageError)
