"""Sphinx configuration: the API reference is generated from the package's docstrings."""

from __future__ import annotations

import linkage

project = "linkage"
author = "linkage developers"
release = linkage.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# pydantic models render their fields through autodoc; their validators are internal
autodoc_pydantic_model_show_validator_members = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False

html_theme = "alabaster"
html_title = f"linkage {release}"
