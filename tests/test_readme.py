"""The README's configuration examples stay valid: each YAML block validates."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from linkage.compare import comparisons_from_config
from linkage.config import config_from_dict

README = Path(__file__).resolve().parents[1] / "README.md"


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_yaml_blocks_validate(tmp_path):
    blocks = _yaml_blocks()
    assert len(blocks) >= 3
    source = {"path": "a.csv", "record_id": "id", "columns": {"姓名": "name"}}
    for text in blocks:
        data = yaml.safe_load(text)
        if "sources" not in data and "record_id" in data:
            continue  # a source schema file, checked through the run config that includes it
        data.setdefault("sources", {"a": source})
        for entry in data["sources"].values():
            entry.pop("include", None)
            entry.setdefault("record_id", "id")
        config = config_from_dict(data, path=tmp_path / "run.yaml")
        if config.comparisons is not None:
            assert comparisons_from_config(config.comparisons)


def _doc_files() -> list[Path]:
    root = README.parent
    return [README, *sorted((root / "docs").glob("*.md"))]


def test_docs_link_only_inside_the_repository():
    """Every relative link in the README and docs/ names a file of the repository."""
    root = README.parent.resolve()
    problems = []
    for doc in _doc_files():
        text = doc.read_text(encoding="utf-8")
        if "../shared" in text:
            problems.append(f"{doc.name}: mentions ../shared")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(root) or not path.exists():
                problems.append(f"{doc.name}: link to {target}")
    assert not problems, problems
